//! A board built from the kit: a CMSDK timer and the console CMSDK UART at
//! addresses its board crate gives ([`KitMap`]), as a [`Board`] and a
//! [`Serial`] board ([`Kit`]). QEMU's MPS2 images (`mps2-an385`, `an386`,
//! `an500`, `an505`) are such boards; each crate is then a memory map and a
//! way to exit.

use core::marker::PhantomData;
use core::sync::atomic::AtomicBool;

use super::timer::Timer;
use super::uart::Uart;
use crate::board::{Board, Parts, Serial};

/// Where a kit board's parts are and how the board ends a program.
pub trait KitMap {
    /// For the logs.
    const NAME: &'static str;
    /// Base address of the CMSDK timer the board counts with.
    const TIMER: usize;
    /// Base address of the console's CMSDK UART.
    const UART: usize;
    /// The APB clock of both, in Hz.
    const PCLK_HZ: u32;
    /// The console's rate (QEMU ignores it; a real board uses it).
    const BAUD: u32 = 115_200;

    /// End the program (`Board::exit`).
    fn exit(success: bool) -> !;
}

/// The board a [`KitMap`] describes.
#[derive(Debug)]
pub struct Kit<M>(PhantomData<M>);

/// Set once the parts are taken (one board per program).
static TAKEN: AtomicBool = AtomicBool::new(false);

impl<M: KitMap> Kit<M> {
    /// The timer and the UART, once.
    fn parts() -> Option<(Timer, Uart)> {
        if !crate::take_once(&TAKEN) {
            return None;
        }
        // SAFETY: the board crate's `KitMap` gives the addresses of its
        // CMSDK timer and UART, and `TAKEN` makes this their only owner.
        let (timer, uart) = unsafe {
            (
                Timer::new(M::TIMER, M::PCLK_HZ),
                Uart::new(M::UART, M::PCLK_HZ, M::BAUD),
            )
        };
        Some((timer, uart.ok()?))
    }
}

impl<M: KitMap> Board for Kit<M> {
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

impl<M: KitMap> Serial for Kit<M> {
    type Uart = Uart;

    fn take_serial() -> Option<(Timer, Uart)> {
        Self::parts()
    }
}
