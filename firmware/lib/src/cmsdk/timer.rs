//! CMSDK APB timer: a 32-bit down-counter clocked by the APB clock (PCLK).
//!
//! # Register map (offsets from the base address)
//!
//! | offset | name      | bits                                                       |
//! |--------|-----------|------------------------------------------------------------|
//! | 0x00   | CTRL      | 0 enable, 1 external input enables, 2 external clock, 3 IRQ enable |
//! | 0x04   | VALUE     | current count; counts down by one per PCLK cycle          |
//! | 0x08   | RELOAD    | loaded into VALUE when it reaches 0                        |
//! | 0x0C   | INTSTATUS | read: bit 0 = reached 0; write 1 to clear (INTCLEAR)       |
//!
//! This driver runs the timer free: `RELOAD = VALUE = 0xFFFF_FFFF` and
//! [`Timer::now`] returns `0xFFFF_FFFF - VALUE`, an up-count that wraps
//! after 2^32 ticks (172 s at 25 MHz). Differences taken with
//! `wrapping_sub` are right across one wrap.

use embedded_hal::delay::DelayNs;

use crate::cost::TickCounter;
use crate::mmio::Reg;

/// The timer's registers, in address order.
#[repr(C)]
#[derive(Debug)]
struct Regs {
    ctrl: Reg,
    value: Reg,
    reload: Reg,
    intstatus: Reg,
}

const CTRL_ENABLE: u32 = 1 << 0;

/// A CMSDK timer running free at its PCLK rate.
#[derive(Debug)]
pub struct Timer {
    regs: &'static Regs,
    hz: u32,
}

impl Timer {
    /// Take the timer at `base`, clocked at `hz`, and start it counting
    /// free (no interrupt).
    ///
    /// # Safety
    /// `base` is the address of a CMSDK APB timer, and nothing else uses
    /// that timer while the returned value lives.
    pub unsafe fn new(base: usize, hz: u32) -> Self {
        // SAFETY: the caller guarantees a timer block lives at `base`; its
        // registers are 4-byte aligned 32-bit cells, as `Regs` lays out.
        let regs = unsafe { &*(base as *const Regs) };
        regs.ctrl.write(0);
        regs.reload.write(u32::MAX);
        regs.value.write(u32::MAX);
        regs.intstatus.write(1);
        regs.ctrl.write(CTRL_ENABLE);
        Timer { regs, hz }
    }
}

impl TickCounter for Timer {
    #[inline(always)]
    fn now(&self) -> u32 {
        u32::MAX - self.regs.value.read()
    }

    fn hz(&self) -> u32 {
        self.hz
    }
}

impl DelayNs for Timer {
    /// Busy-waits at least `ns` nanoseconds (rounded up to whole ticks).
    fn delay_ns(&mut self, ns: u32) {
        let mut ticks = (u64::from(ns) * u64::from(self.hz)).div_ceil(1_000_000_000);
        // Wait in chunks well below the wrap period so that one
        // `wrapping_sub` always measures the elapsed time.
        const CHUNK: u64 = 1 << 30;
        while ticks > 0 {
            let step = ticks.min(CHUNK) as u32;
            let start = self.now();
            while self.now().wrapping_sub(start) < step {}
            ticks -= u64::from(step);
        }
    }
}
