//! nRF51 TIMER as a free-running 32-bit counter.
//!
//! # Registers used (offsets from the base address)
//!
//! | offset | name        | what                                              |
//! |--------|-------------|---------------------------------------------------|
//! | 0x000  | TASKS_START | start counting                                    |
//! | 0x004  | TASKS_STOP  | stop                                              |
//! | 0x00C  | TASKS_CLEAR | counter := 0                                      |
//! | 0x040  | TASKS_CAPTURE\[0\] | CC\[0\] := counter                         |
//! | 0x504  | MODE        | 0 timer, 1 counter                                |
//! | 0x508  | BITMODE     | 0 16-bit, 1 8-bit, 2 24-bit, 3 32-bit             |
//! | 0x510  | PRESCALER   | f = 16 MHz / 2^PRESCALER                          |
//! | 0x540  | CC\[0\]     | capture/compare register 0                        |
//!
//! The counter cannot be read directly: [`Timer::now`] triggers CAPTURE\[0\]
//! and reads CC\[0\] (two bus accesses per reading). BITMODE and PRESCALER
//! may only change while the timer is stopped (QEMU logs a guest error
//! otherwise). With PRESCALER 0 the timer counts at 16 MHz from HFCLK (in
//! QEMU: 16 MHz of virtual time, so 1.024 ticks per instruction under
//! `-icount shift=6`); it wraps after 2^32 ticks (268 s). On hardware,
//! HFCLK runs from the RC oscillator (±1.5 % or worse) unless the board
//! started the crystal (CLOCK TASKS_HFCLKSTART).

use embedded_hal::delay::DelayNs;

use super::Block;
use crate::cost::TickCounter;

const TASKS_START: usize = 0x000;
const TASKS_STOP: usize = 0x004;
const TASKS_CLEAR: usize = 0x00C;
const TASKS_CAPTURE0: usize = 0x040;
const MODE: usize = 0x504;
const BITMODE: usize = 0x508;
const PRESCALER: usize = 0x510;
const CC0: usize = 0x540;

const MODE_TIMER: u32 = 0;
const BITMODE_32: u32 = 3;

/// The timer's base clock (PRESCALER 0).
pub const BASE_HZ: u32 = 16_000_000;

/// An nRF51 TIMER counting free at 16 MHz.
#[derive(Debug)]
pub struct Timer {
    regs: Block,
}

impl Timer {
    /// Take the TIMER at `base` and start it counting free from 0 at
    /// [`BASE_HZ`] (32-bit, no interrupt).
    ///
    /// # Safety
    /// `base` is the address of an nRF51 TIMER with a 32-bit mode (TIMER0
    /// on the nRF51; TIMER1 and TIMER2 are 16-bit), and nothing else uses
    /// that timer while the returned value lives.
    pub unsafe fn new(base: usize) -> Self {
        // SAFETY: the caller guarantees a TIMER block at `base`.
        let regs = unsafe { Block::new(base) };
        regs.trigger(TASKS_STOP);
        regs.reg(MODE).write(MODE_TIMER);
        regs.reg(BITMODE).write(BITMODE_32);
        regs.reg(PRESCALER).write(0);
        regs.trigger(TASKS_CLEAR);
        regs.trigger(TASKS_START);
        Timer { regs }
    }
}

impl TickCounter for Timer {
    #[inline(always)]
    fn now(&self) -> u32 {
        self.regs.trigger(TASKS_CAPTURE0);
        self.regs.reg(CC0).read()
    }

    fn hz(&self) -> u32 {
        BASE_HZ
    }
}

impl DelayNs for Timer {
    /// Busy-waits at least `ns` nanoseconds (rounded up to whole ticks).
    fn delay_ns(&mut self, ns: u32) {
        let mut ticks = (u64::from(ns) * u64::from(BASE_HZ)).div_ceil(1_000_000_000);
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
