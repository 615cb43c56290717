//! QEMU's `mps2-an386`: ARM's MPS2 FPGA board with the AN386 image, a
//! Cortex-M4 with FPU, as QEMU 7.2 models it.
//!
//! | what            | where                      | notes                              |
//! |-----------------|----------------------------|------------------------------------|
//! | code SRAM       | `0x0000_0000`, 4 MiB       | `FLASH` in `memory.x`              |
//! | SRAM            | `0x2000_0000`, 4 MiB       | `RAM`: data, bss, stack            |
//! | CMSDK timer0    | `0x4000_0000`              | PCLK = 25 MHz                      |
//! | CMSDK UART0     | `0x4000_4000`              | QEMU's `-serial` (the console)     |
//!
//! DWT CYCCNT reads 0 in QEMU; [`crate::cost::Stopwatch::new`] falls back to
//! timer0 here.

use core::sync::atomic::{AtomicBool, Ordering};

use crate::cmsdk::timer::Timer;
use crate::cmsdk::uart::Uart;

/// For the logs.
pub const NAME: &str = "mps2-an386 (QEMU)";
/// The APB clock of the timers and UARTs.
pub const PCLK_HZ: u32 = 25_000_000;
/// The console's rate (QEMU ignores it; real MPS2 boards use it).
pub const CONSOLE_BAUD: u32 = 115_200;

const TIMER0_BASE: usize = 0x4000_0000;
const UART0_BASE: usize = 0x4000_4000;

/// The parts of the board the binaries use.
#[derive(Debug)]
pub struct Board {
    /// timer0, running free at [`PCLK_HZ`].
    pub timer: Timer,
    /// UART0 at [`CONSOLE_BAUD`], transmitter and receiver enabled.
    pub uart: Uart,
}

static TAKEN: AtomicBool = AtomicBool::new(false);

impl Board {
    /// The board's parts, initialised; `None` after the first call.
    pub fn take() -> Option<Self> {
        // Load and store, not swap: also correct on cores without
        // compare-and-swap (Cortex-M0), inside the critical section.
        let first = cortex_m::interrupt::free(|_| {
            let taken = TAKEN.load(Ordering::Relaxed);
            TAKEN.store(true, Ordering::Relaxed);
            !taken
        });
        if !first {
            return None;
        }
        // SAFETY: these are the AN386 addresses of timer0 and UART0, and the
        // `TAKEN` flag makes this the only owner of either.
        let (timer, uart) = unsafe {
            (
                Timer::new(TIMER0_BASE, PCLK_HZ),
                Uart::new(UART0_BASE, PCLK_HZ, CONSOLE_BAUD),
            )
        };
        Some(Board {
            timer,
            // 25 MHz / 115200 = 217, inside 16..=0xF_FFFF.
            uart: uart.ok()?,
        })
    }
}
