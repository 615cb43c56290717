//! # normcore-nrf52840dk
//!
//! normcore on a real board: Nordic's nRF52840-DK (PCA10056), an nRF52840
//! with a Cortex-M4F at 64 MHz, 1 MiB of flash and 256 KiB of RAM. Built
//! on `nrf52840-hal`; what the binaries touch goes through `embedded-hal`
//! 1.0 traits (`digital::OutputPin` for the LEDs, `delay::DelayNs` for
//! waiting), logging is `defmt` over RTT (`defmt-rtt`), and `probe-rs run`
//! flashes the board and prints the log (`.cargo/config.toml`).
//!
//! - [`Board`]: the parts the binaries use, once.
//! - [`Cycles`]: the core's cycle counter (DWT CYCCNT), which real hardware
//!   has and QEMU does not model.
//! - [`blink`]: an LED pattern on any `OutputPin` with any `DelayNs`.
//! - [`digest`]: CRC-32 of results, the mps2 firmware's own module.
//!
//! This crate is its own Cargo world (see `Cargo.toml`); it shares source
//! with `firmware/` through `#[path]` modules rather than depending on that
//! crate, whose defmt transport (semihosting) and memory layout are QEMU's.
#![no_std]

use cortex_m::peripheral::{DCB, DWT};
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{OutputPin, PinState};
use nrf52840_hal::clocks::Clocks;
use nrf52840_hal::gpio::{p0, Level, Output, Pin, PushPull};
use nrf52840_hal::{pac, Delay};

/// CRC-32 of results (`firmware/src/digest.rs`).
#[path = "../../../src/digest.rs"]
pub mod digest;

/// For the logs.
pub const NAME: &str = "nRF52840-DK (nRF52840, Cortex-M4F)";
/// The CPU clock: the nRF52840 runs its core at 64 MHz.
pub const CPU_HZ: u32 = 64_000_000;

/// The core's cycle counter: DWT CYCCNT, counting CPU clock cycles at
/// [`CPU_HZ`]. 32 bits: it wraps after 67 s, and differences taken with
/// `wrapping_sub` are right across one wrap.
pub struct Cycles {
    _dwt: DWT,
}

impl Cycles {
    /// Enable the trace block and the counter.
    pub fn new(dcb: &mut DCB, mut dwt: DWT) -> Self {
        dcb.enable_trace();
        dwt.enable_cycle_counter();
        Cycles { _dwt: dwt }
    }

    /// The counter now.
    #[inline(always)]
    pub fn now(&self) -> u32 {
        DWT::cycle_count()
    }

    /// Run `f`; its result and the cycles it took (the two counter reads
    /// included, a few cycles).
    #[inline(never)]
    pub fn measure<R>(&self, f: impl FnOnce() -> R) -> (R, u32) {
        let start = self.now();
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        let r = core::hint::black_box(f());
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
        (r, self.now().wrapping_sub(start))
    }
}

/// The board's parts the binaries use.
pub struct Board {
    /// LED1 (P0.13, lit when driven low).
    pub led1: Pin<Output<PushPull>>,
    /// LED2 (P0.14, lit when driven low).
    pub led2: Pin<Output<PushPull>>,
    /// SysTick as an `embedded_hal::delay::DelayNs`.
    pub delay: Delay,
    /// DWT CYCCNT.
    pub cycles: Cycles,
}

impl Board {
    /// Start the external 32 MHz crystal (an accurate HFCLK), configure the
    /// LEDs (off) and the counters; `None` after the first call.
    pub fn take() -> Option<Board> {
        let mut core = pac::CorePeripherals::take()?;
        let p = pac::Peripherals::take()?;
        // The core runs at 64 MHz either way; the crystal makes that clock
        // (and so SysTick delays and cycles-to-time conversions) accurate.
        let _clocks = Clocks::new(p.CLOCK).enable_ext_hfosc();
        let port0 = p0::Parts::new(p.P0);
        // The DK's LEDs are active low: High is off.
        let led1 = port0.p0_13.into_push_pull_output(Level::High).degrade();
        let led2 = port0.p0_14.into_push_pull_output(Level::High).degrade();
        let cycles = Cycles::new(&mut core.DCB, core.DWT);
        let delay = Delay::new(core.SYST);
        Some(Board {
            led1,
            led2,
            delay,
            cycles,
        })
    }
}

impl core::fmt::Debug for Cycles {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Cycles(DWT CYCCNT)")
    }
}

impl core::fmt::Debug for Board {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(NAME)
    }
}

/// Light an active-low LED for `on_ms`, then leave it dark for `off_ms`.
/// Generic over the `embedded-hal` traits: any board's pin and delay do.
pub fn blink<L: OutputPin, D: DelayNs>(
    led: &mut L,
    delay: &mut D,
    on_ms: u32,
    off_ms: u32,
) -> Result<(), L::Error> {
    led.set_state(PinState::Low)?;
    delay.delay_ms(on_ms);
    led.set_state(PinState::High)?;
    delay.delay_ms(off_ms);
    Ok(())
}
