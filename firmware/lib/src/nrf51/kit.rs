//! An nRF51 board: TIMER0 and the UART at addresses its board crate gives
//! ([`Nrf51Map`]), as a [`Board`] and a [`Serial`] board ([`Nrf51`]), the
//! way [`cmsdk::kit`](crate::cmsdk::kit) does for the CMSDK boards.

use core::marker::PhantomData;
use core::sync::atomic::AtomicBool;

use super::timer::Timer;
use super::uart::{Pins, Uart};
use crate::board::{Board, Parts, Serial};

/// Where an nRF51 board's parts are and how the board ends a program.
pub trait Nrf51Map {
    /// For the logs.
    const NAME: &'static str;
    /// Base address of the TIMER the board counts with (a 32-bit one:
    /// TIMER0).
    const TIMER: usize;
    /// Base address of the console UART.
    const UART: usize;
    /// The console's pins.
    const UART_PINS: Pins;
    /// The console's rate (QEMU ignores it; a real board uses it).
    const BAUD: u32 = 115_200;

    /// End the program (`Board::exit`).
    fn exit(success: bool) -> !;
}

/// The board an [`Nrf51Map`] describes.
#[derive(Debug)]
pub struct Nrf51<M>(PhantomData<M>);

/// Set once the parts are taken (one board per program).
static TAKEN: AtomicBool = AtomicBool::new(false);

impl<M: Nrf51Map> Nrf51<M> {
    /// The timer and the UART, once.
    fn parts() -> Option<(Timer, Uart)> {
        if !crate::take_once(&TAKEN) {
            return None;
        }
        // SAFETY: the board crate's `Nrf51Map` gives the addresses of its
        // TIMER and UART, and `TAKEN` makes this their only owner.
        let (timer, uart) = unsafe {
            (
                Timer::new(M::TIMER),
                Uart::new(M::UART, M::UART_PINS, M::BAUD),
            )
        };
        Some((timer, uart.ok()?))
    }
}

impl<M: Nrf51Map> Board for Nrf51<M> {
    const NAME: &'static str = M::NAME;
    type Timer = Timer;

    fn take() -> Option<Parts<Timer>> {
        let core = cortex_m::Peripherals::take()?;
        let (timer, _) = Self::parts()?;
        Some(Parts { core, timer })
    }

    fn exit(success: bool) -> ! {
        M::exit(success)
    }
}

impl<M: Nrf51Map> Serial for Nrf51<M> {
    type Uart = Uart;

    fn take_serial() -> Option<(Timer, Uart)> {
        Self::parts()
    }
}
