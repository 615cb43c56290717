//! # normcore-nrf52840dk
//!
//! normcore on a real board: Nordic's nRF52840-DK (PCA10056), an nRF52840
//! with a Cortex-M4F at 64 MHz, 1 MiB of flash and 256 KiB of RAM. Built on
//! `nrf52840-hal`; logging is `defmt` over RTT (`defmt-rtt`), and
//! `probe-rs run` flashes the board and prints the log
//! (`.cargo/config.toml`).
//!
//! [`Nrf52840Dk`] is the [`Board`] the programs of `normcore-firmware` run
//! on, and a [`Serial`] board (UARTE0 on the DK's virtual COM port, P0.06
//! TXD and P0.08 RXD, through the on-board J-Link's USB).
//!
//! | what      | where / how                                                  |
//! |-----------|--------------------------------------------------------------|
//! | costs     | DWT CYCCNT: CPU cycles at 64 MHz (real hardware counts them) |
//! | console   | UARTE0, 115200 8N1, P0.06 TXD / P0.08 RXD (the J-Link VCOM)  |
//! | LEDs      | LED1 (P0.13) lit at exit on success, LED2 (P0.14) on failure |
//! | exit      | defmt flush, LED, `BKPT`: `probe-rs run` stops there          |
//! | store     | the last 32 KiB of flash (`memory.x`'s STORE) through the NVMC: [`store_flash`] |
#![no_std]

use core::sync::atomic::AtomicBool;

use cortex_m::peripheral::DWT;
use defmt_rtt as _;
use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};
use normcore_firmware::board::{Board, Parts, Serial};
use normcore_firmware::cost::TickCounter;
use nrf52840_hal::clocks::Clocks;
use nrf52840_hal::gpio::{p0, Level};
use nrf52840_hal::nvmc::Nvmc;
use nrf52840_hal::pac::{self, UARTE0};
use nrf52840_hal::uarte::{self, Baudrate, Parity, Uarte, UarteRx, UarteTx};
use panic_probe as _;

/// The CPU clock: the nRF52840 runs its core at 64 MHz.
pub const CPU_HZ: u32 = 64_000_000;

/// LED1 and LED2 of the DK: P0.13 and P0.14, lit when driven low.
const LED1: u32 = 13;
const LED2: u32 = 14;

/// The core's cycle counter, DWT CYCCNT, as the board's free-running
/// counter: CPU clock cycles at [`CPU_HZ`]. 32 bits: it wraps after 67 s,
/// and differences taken with `wrapping_sub` are right across one wrap.
/// The board enables it in `take`; `Stopwatch::new` finds it counting and
/// uses it directly.
#[derive(Debug)]
pub struct Cycles(());

impl TickCounter for Cycles {
    #[inline(always)]
    fn now(&self) -> u32 {
        DWT::cycle_count()
    }

    fn hz(&self) -> u32 {
        CPU_HZ
    }
}

/// The flash region `memory.x` reserves as STORE (the last 32 KiB of the
/// chip's flash, whole 4 KiB pages), as `nrf52840-hal`'s NVMC driver: an
/// `embedded_storage` `NorFlash` (4-byte writes, 4 KiB erases) of the
/// region's bytes, offsets from its start. What the `finetune` program
/// saves its overlay into. `None` after the first call.
pub fn store_flash() -> Option<Nvmc<pac::NVMC>> {
    extern "C" {
        // memory.x: the first byte of STORE, and one past its last.
        static mut _normcore_store_start: u8;
        static mut _normcore_store_end: u8;
    }
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if !normcore_firmware::take_once(&TAKEN) {
        return None;
    }
    let start = &raw mut _normcore_store_start;
    let len = (&raw mut _normcore_store_end as usize).checked_sub(start as usize)?;
    // SAFETY: `start..start + len` is memory.x's STORE region, flash that no
    // section is linked into (FLASH ends where it starts): nothing else
    // refers to it, and `TAKEN` makes this the only slice of it ever made.
    // Flash reads like memory; the NVMC driver writes it only through its
    // registers' protocol.
    let storage = unsafe { core::slice::from_raw_parts_mut(start, len) };
    // SAFETY: the board's `setup` takes the other peripherals and never
    // uses NVMC; `TAKEN` makes this the only NVMC handle.
    let nvmc = unsafe { pac::Peripherals::steal() }.NVMC;
    // memory.x asserts page alignment, which `Nvmc::new` checks again.
    Some(Nvmc::new(nvmc, storage))
}

/// The nRF52840-DK, for the programs.
#[derive(Debug)]
pub enum Nrf52840Dk {}

/// Set once the parts are taken (one board per program).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Start the external 32 MHz crystal (an accurate HFCLK), set up the LEDs
/// (off) and, if asked, the console; once.
fn setup(core: &mut cortex_m::Peripherals, console: bool) -> Option<Option<Console>> {
    if !normcore_firmware::take_once(&TAKEN) {
        return None;
    }
    let p = pac::Peripherals::take()?;
    // The core runs at 64 MHz either way; the crystal makes that clock (and
    // so cycles-to-time conversions) accurate.
    let _clocks = Clocks::new(p.CLOCK).enable_ext_hfosc();
    let port0 = p0::Parts::new(p.P0);
    // Active low: High is off. The pins stay configured as outputs;
    // `exit` lights one through the port's OUTCLR.
    let _led1 = port0.p0_13.into_push_pull_output(Level::High);
    let _led2 = port0.p0_14.into_push_pull_output(Level::High);
    core.DCB.enable_trace();
    core.DWT.enable_cycle_counter();
    if !console {
        return Some(None);
    }
    let pins = uarte::Pins {
        txd: port0.p0_06.into_push_pull_output(Level::High).degrade(),
        rxd: port0.p0_08.into_floating_input().degrade(),
        cts: None,
        rts: None,
    };
    let uarte = Uarte::new(p.UARTE0, pins, Parity::EXCLUDED, Baudrate::BAUD115200);
    let tx_buf = normcore_firmware::take_arena!(64)?;
    let rx_buf = {
        static mut RX: [u8; 1] = [0];
        static RX_TAKEN: AtomicBool = AtomicBool::new(false);
        if !normcore_firmware::take_once(&RX_TAKEN) {
            return None;
        }
        // SAFETY: `RX_TAKEN` makes this the only reference to `RX` ever
        // made; the pointer is to a static, so never null.
        unsafe { (&raw mut RX).as_mut() }?
    };
    let (tx, rx) = uarte.split(tx_buf, rx_buf).ok()?;
    Some(Some(Console { tx, rx }))
}

impl Board for Nrf52840Dk {
    const NAME: &'static str = "nRF52840-DK (nRF52840, Cortex-M4F, 64 MHz)";
    type Timer = Cycles;

    fn take() -> Option<Parts<Cycles>> {
        let mut core = cortex_m::Peripherals::take()?;
        setup(&mut core, false)?;
        Some(Parts {
            core,
            timer: Cycles(()),
        })
    }

    /// Flush the log, light LED1 (success) or LED2 (failure), and stop at a
    /// breakpoint: `probe-rs run` ends there (with status 0 either way: the
    /// log says which). Without a debugger `BKPT` escalates to HardFault,
    /// which panic-probe's handler turns into a lock-up; the LED stays lit.
    fn exit(success: bool) -> ! {
        defmt::flush();
        // SAFETY: P0's register block is at this fixed address; the only
        // access is a write to its write-1-to-clear output register, for an
        // LED pin that `setup` configured as an output: no other pin
        // changes.
        let p0 = unsafe { &*pac::P0::ptr() };
        let led = if success { LED1 } else { LED2 };
        // SAFETY: every bit pattern is valid for OUTCLR.
        p0.outclr.write(|w| unsafe { w.bits(1 << led) });
        loop {
            cortex_m::asm::bkpt();
        }
    }
}

/// UARTE0 on the DK's virtual COM port, through `nrf52840-hal`'s
/// `embedded-io` halves (EasyDMA from static buffers: 64 bytes per
/// transmit chunk, one byte per receive).
pub struct Console {
    tx: UarteTx<UARTE0>,
    rx: UarteRx<UARTE0>,
}

impl core::fmt::Debug for Console {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Console(UARTE0)")
    }
}

/// A UARTE error (the HAL's, which has no `defmt::Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum ConsoleError {
    /// A transmit failed.
    Transmit,
    /// A receive failed (or gave no byte).
    Receive,
    /// The HAL refused a buffer (size, or not in RAM).
    Buffer,
    /// A timed operation timed out.
    Timeout,
}

impl From<uarte::Error> for ConsoleError {
    fn from(e: uarte::Error) -> Self {
        match e {
            uarte::Error::Transmit => ConsoleError::Transmit,
            uarte::Error::Receive => ConsoleError::Receive,
            uarte::Error::Timeout(_) => ConsoleError::Timeout,
            _ => ConsoleError::Buffer,
        }
    }
}

impl core::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConsoleError::Transmit => "UARTE transmit error",
            ConsoleError::Receive => "UARTE receive error",
            ConsoleError::Buffer => "UARTE buffer refused",
            ConsoleError::Timeout => "UARTE timeout",
        })
    }
}

impl core::error::Error for ConsoleError {}

impl embedded_io::Error for ConsoleError {
    fn kind(&self) -> ErrorKind {
        match self {
            ConsoleError::Buffer => ErrorKind::InvalidInput,
            ConsoleError::Timeout => ErrorKind::TimedOut,
            ConsoleError::Transmit | ConsoleError::Receive => ErrorKind::Other,
        }
    }
}

impl ErrorType for Console {
    type Error = ConsoleError;
}

impl Read for Console {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConsoleError> {
        Ok(self.rx.read(buf)?)
    }
}

impl ReadReady for Console {
    fn read_ready(&mut self) -> Result<bool, ConsoleError> {
        Ok(self.rx.read_ready()?)
    }
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ConsoleError> {
        Ok(self.tx.write(buf)?)
    }

    fn flush(&mut self) -> Result<(), ConsoleError> {
        Ok(self.tx.flush()?)
    }
}

impl WriteReady for Console {
    fn write_ready(&mut self) -> Result<bool, ConsoleError> {
        Ok(self.tx.write_ready()?)
    }
}

impl Serial for Nrf52840Dk {
    type Uart = Console;

    fn take_serial() -> Option<(Cycles, Console)> {
        let mut core = cortex_m::Peripherals::take()?;
        let console = setup(&mut core, true)??;
        Some((Cycles(()), console))
    }
}
