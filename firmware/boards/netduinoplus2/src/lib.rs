//! QEMU's `netduinoplus2`: the Netduino Plus 2, an STM32F405 (Cortex-M4F,
//! `thumbv7em-none-eabihf`), through `stm32f4xx-hal` where QEMU 7.2 models
//! the hardware.
//!
//! | what     | where                  | notes                                         |
//! |----------|------------------------|-----------------------------------------------|
//! | flash    | `0x0800_0000`, 1 MiB   | `FLASH` in `memory.x` (aliased at 0x0)        |
//! | SRAM     | `0x2000_0000`, 128 KiB | `RAM` (the real chip's SRAM1 + SRAM2)         |
//! | TIM2     | `0x4000_0000`          | 32-bit, PSC = 0: the board's counter          |
//! | USART1   | `0x4001_1000`          | QEMU's first `-serial` (the console), PA9/PA10 |
//!
//! # Clocks under QEMU
//! QEMU models no RCC (its registers read 0): the HAL's clock set-up would
//! wait forever for PLLRDY or HSERDY. The board keeps the 16 MHz HSI
//! (`Config::hsi()`, which needs no ready bit). QEMU clocks the STM32
//! timers at 1 GHz whatever RCC says, so TIM2 with PSC = 0 ticks once per
//! nanosecond of virtual time: [`TIM2_HZ`] = 10^9, and under `-icount
//! shift=6` (64 ns per instruction) instructions = ticks / 64. (On the real
//! chip TIM2 would count at its bus clock, 16 MHz with the HSI; this crate
//! is for QEMU, as its semihosting exit is.)
//!
//! DWT CYCCNT reads 0 in QEMU; `Stopwatch::new` falls back to TIM2.
//! Logging, panics, faults and exit: `normcore-qemu` (semihosting).
#![no_std]

use core::sync::atomic::AtomicBool;

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};
use normcore_firmware::board::{Board, Parts, Serial};
use normcore_firmware::cost::TickCounter;
// Semihosting exit, the defmt transport, the panic and fault handlers.
use normcore_qemu as _;
use stm32f4xx_hal::pac::{self, TIM2, USART1};
use stm32f4xx_hal::prelude::*;
use stm32f4xx_hal::rcc::Config;
use stm32f4xx_hal::serial::{self, RxISR, TxISR};
use stm32f4xx_hal::timer::Counter;

/// TIM2's rate under QEMU: 1 GHz, whatever the RCC configuration.
pub const TIM2_HZ: u32 = 1_000_000_000;

/// The rate the HAL believes TIM2 counts at with PSC = 0: its bus clock,
/// the 16 MHz HSI (what it computes the prescaler from).
const HAL_TIM2_HZ: u32 = 16_000_000;

/// TIM2, counting free from 0 to 2^32 - 1 with PSC = 0.
pub struct Timer(Counter<TIM2, HAL_TIM2_HZ>);

impl core::fmt::Debug for Timer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Timer(TIM2)")
    }
}

impl TickCounter for Timer {
    #[inline(always)]
    fn now(&self) -> u32 {
        self.0.now().ticks()
    }

    fn hz(&self) -> u32 {
        TIM2_HZ
    }
}

/// USART1 through the HAL, as `embedded-io` 0.7.
pub struct Console(serial::Serial<USART1, u8>);

impl core::fmt::Debug for Console {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Console(USART1)")
    }
}

/// A USART error (the HAL's, which has no `defmt::Format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum ConsoleError {
    /// A received byte was lost: the previous one had not been read.
    Overrun,
    /// A received byte had no valid stop bit.
    FrameFormat,
    /// A received byte had the wrong parity bit.
    Parity,
    /// Noise on the line.
    Noise,
    /// Any other error.
    Other,
}

impl From<serial::Error> for ConsoleError {
    fn from(e: serial::Error) -> Self {
        match e {
            serial::Error::Overrun => ConsoleError::Overrun,
            serial::Error::FrameFormat => ConsoleError::FrameFormat,
            serial::Error::Parity => ConsoleError::Parity,
            serial::Error::Noise => ConsoleError::Noise,
            _ => ConsoleError::Other,
        }
    }
}

impl core::fmt::Display for ConsoleError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConsoleError::Overrun => "receive overrun: a byte was lost",
            ConsoleError::FrameFormat => "framing error on a received byte",
            ConsoleError::Parity => "parity error on a received byte",
            ConsoleError::Noise => "noise on the receive line",
            ConsoleError::Other => "USART error",
        })
    }
}

impl core::error::Error for ConsoleError {}

impl embedded_io::Error for ConsoleError {
    fn kind(&self) -> ErrorKind {
        match self {
            ConsoleError::FrameFormat | ConsoleError::Parity | ConsoleError::Noise => {
                ErrorKind::InvalidData
            }
            ConsoleError::Overrun | ConsoleError::Other => ErrorKind::Other,
        }
    }
}

impl ErrorType for Console {
    type Error = ConsoleError;
}

impl Read for Console {
    /// Waits for the first byte, then returns it with any already waiting
    /// (the USART holds one).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ConsoleError> {
        let Some((first, rest)) = buf.split_first_mut() else {
            return Ok(0);
        };
        *first = nb::block!(embedded_hal_nb::serial::Read::read(&mut self.0))?;
        let mut n = 1;
        for slot in rest {
            if !self.0.is_rx_not_empty() {
                break;
            }
            match embedded_hal_nb::serial::Read::read(&mut self.0) {
                Ok(b) => *slot = b,
                // An error behind the first byte is left for the next call.
                Err(_) => break,
            }
            n += 1;
        }
        Ok(n)
    }
}

impl ReadReady for Console {
    fn read_ready(&mut self) -> Result<bool, ConsoleError> {
        Ok(self.0.is_rx_not_empty())
    }
}

impl Write for Console {
    fn write(&mut self, buf: &[u8]) -> Result<usize, ConsoleError> {
        for &b in buf {
            nb::block!(embedded_hal_nb::serial::Write::write(&mut self.0, b))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), ConsoleError> {
        Ok(nb::block!(embedded_hal_nb::serial::Write::flush(
            &mut self.0
        ))?)
    }
}

impl WriteReady for Console {
    fn write_ready(&mut self) -> Result<bool, ConsoleError> {
        Ok(self.0.is_tx_empty())
    }
}

/// The Netduino Plus 2 under QEMU, for the programs.
#[derive(Debug)]
pub enum NetduinoPlus2 {}

/// Set once the parts are taken (one board per program).
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The clocks (HSI), TIM2 and USART1, once.
fn parts() -> Option<(Timer, Console)> {
    if !normcore_firmware::take_once(&TAKEN) {
        return None;
    }
    let dp = pac::Peripherals::take()?;
    // HSI, no PLL: the only configuration whose set-up does not poll a
    // ready bit QEMU never sets.
    let mut rcc = dp.RCC.freeze(Config::hsi());
    let gpioa = dp.GPIOA.split(&mut rcc);
    let usart =
        serial::Serial::new(dp.USART1, (gpioa.pa9, gpioa.pa10), 115_200.bps(), &mut rcc).ok()?;
    // PSC = 0: HAL_TIM2_HZ is the bus clock the HAL sees.
    let mut counter = dp.TIM2.counter::<HAL_TIM2_HZ>(&mut rcc);
    counter
        .start(fugit::TimerDurationU32::<HAL_TIM2_HZ>::from_ticks(u32::MAX))
        .ok()?;
    // The HAL sets ARR = ticks - 1 = 2^32 - 2; a free-running counter
    // wraps at 2^32 (so that `wrapping_sub` is right across a wrap): ARR =
    // 2^32 - 1, loaded by an update event (which also restarts from 0).
    // SAFETY: TIM2's register block is at this fixed address; `counter`
    // owns TIM2 and is not in use yet; every value is valid for ARR.
    let tim2 = unsafe { &*TIM2::ptr() };
    // SAFETY: every bit pattern is a valid auto-reload value.
    tim2.arr().write(|w| unsafe { w.bits(u32::MAX) });
    tim2.egr().write(|w| w.ug().set_bit());
    Some((Timer(counter), Console(usart)))
}

impl Board for NetduinoPlus2 {
    const NAME: &'static str = "netduinoplus2 (QEMU, STM32F405, Cortex-M4F)";
    type Timer = Timer;

    fn take() -> Option<Parts<Timer>> {
        let core = cortex_m::Peripherals::take()?;
        let (timer, _) = parts()?;
        Some(Parts { core, timer })
    }

    fn exit(success: bool) -> ! {
        normcore_qemu::exit(success)
    }
}

impl Serial for NetduinoPlus2 {
    type Uart = Console;

    fn take_serial() -> Option<(Timer, Console)> {
        parts()
    }
}
