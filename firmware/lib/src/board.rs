//! What a board crate gives the programs: its name, a free-running
//! counter, the console UART, and how a program ends.
//!
//! A board crate (`firmware/boards/NAME`) implements [`Board`] (and
//! [`Serial`] if it has a console UART the programs may use); its bins hand
//! the type to a program, e.g. `programs::infer::main::<Mps2An386>(..)`.
//! The programs never see an address or a logging transport.

use crate::cost::TickCounter;

/// The parts of a board that the measuring programs use, taken once.
pub struct Parts<T> {
    /// The core's peripherals (DWT and DCB for the cycle counter).
    pub core: cortex_m::Peripherals,
    /// A free-running counter: the fallback where DWT CYCCNT does not count
    /// (QEMU), and the clock of timeouts.
    pub timer: T,
}

impl<T> core::fmt::Debug for Parts<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Parts")
    }
}

/// A board the programs run on.
pub trait Board {
    /// For the logs, e.g. `"mps2-an386 (QEMU, Cortex-M4F)"`.
    const NAME: &'static str;
    /// The board's free-running counter.
    type Timer: TickCounter;

    /// The parts, initialised; `None` after the first call.
    fn take() -> Option<Parts<Self::Timer>>;

    /// End the program with a status: under QEMU its exit status
    /// (semihosting), on hardware the probe's convention.
    fn exit(success: bool) -> !;
}

/// A board whose console UART the programs may use (`serve`, `uart_echo`).
pub trait Serial: Board {
    /// The console UART.
    type Uart: embedded_io::Read + embedded_io::Write + embedded_io::ReadReady;

    /// The counter and the console, initialised; `None` after the first
    /// call or after [`Board::take`] (they share the board's parts).
    fn take_serial() -> Option<(Self::Timer, Self::Uart)>;
}
