//! Drivers for Nordic's nRF51 series peripherals (the micro:bit v1's
//! nRF51822): TIMER as a free-running counter ([`timer`]) and the UART,
//! polled ([`uart`]), and (with the `adapt` feature) the NVMC writing a
//! flash region as a `NorFlash` ([`nvmc`]); [`kit::Nrf51`] makes them a [`Board`](crate::board::Board)
//! and a [`Serial`](crate::board::Serial) board from the addresses a board
//! crate gives ([`kit::Nrf51Map`]).
//!
//! nRF51 peripherals are driven by tasks and events: writing 1 to a task
//! register starts an action; the peripheral sets an event register to 1
//! when something happened, and software clears it by writing 0. Their
//! registers are sparse (tasks at 0x000, events at 0x100, configuration
//! from 0x500), so the drivers address them by offset ([`Block`]) rather
//! than through a `#[repr(C)]` struct with kilobytes of padding.

pub mod kit;
#[cfg(feature = "adapt")]
pub mod nvmc;
pub mod timer;
pub mod uart;

use crate::mmio::Reg;

/// A peripheral's 4 KiB register block at a base address.
#[derive(Debug, Clone, Copy)]
struct Block {
    base: usize,
}

impl Block {
    /// The block at `base`.
    ///
    /// # Safety
    /// `base` is the address of the peripheral's register block (4 KiB of
    /// 32-bit registers), valid for the life of the program.
    const unsafe fn new(base: usize) -> Self {
        Block { base }
    }

    /// The register at `offset` (a multiple of 4, below 0x1000).
    #[inline(always)]
    fn reg(&self, offset: usize) -> &'static Reg {
        debug_assert!(offset % 4 == 0 && offset < 0x1000);
        // SAFETY: `Block::new`'s caller guarantees a register block at
        // `base`; `offset` is within it and 4-aligned, and `Reg` is a
        // transparent 32-bit cell accessed only with volatile operations.
        unsafe { &*((self.base + offset) as *const Reg) }
    }

    /// Trigger the task at `offset`.
    #[inline(always)]
    fn trigger(&self, offset: usize) {
        self.reg(offset).write(1);
    }
}
