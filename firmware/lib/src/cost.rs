//! Measuring what a piece of code costs: CPU cycles where the core counts
//! them, timer ticks (convertible to instructions) under QEMU.
//!
//! # Two sources, picked at run time
//! - **DWT CYCCNT** (Cortex-M3 and up, real hardware): the core's cycle
//!   counter. This is the number to quote for a board. ARMv6-M cores
//!   (Cortex-M0/M0+, `cfg(armv6m)`) have none: there [`Stopwatch::new`]
//!   always uses the timer.
//! - **A free-running timer** ([`TickCounter`], e.g. the CMSDK timer on
//!   `mps2-an386`): QEMU does not model CYCCNT (it reads 0), so
//!   [`Stopwatch::new`] enables CYCCNT, checks that it advances, and falls
//!   back to the timer when it does not.
//!
//! # Ticks to instructions under QEMU
//! Run QEMU with `-icount shift=6,align=off,sleep=off` (`NORMCORE_ICOUNT=1`
//! for `qemu-run`): virtual time then advances exactly 2^6 = 64 ns per
//! instruction, and a timer at `hz` ticks every 10^9 / `hz` ns, so
//! ```text
//! instructions = ticks · 10^9 / (hz · 64)
//! ```
//! repeatable run to run ([`Cost::icount_instructions`]): ticks / 1.6 for
//! the MPS2 boards' 25 MHz CMSDK timer, / 1.28 at 20 MHz (`mps2-an505`),
//! / 1.024 at 16 MHz (the micro:bit's TIMER0), / 64 for a timer QEMU clocks
//! at 1 GHz (the STM32 timers of `netduinoplus2`). These are
//! instructions, not Cortex-M4 cycles: a `VDIV` (14 cycles) counts like an
//! `ADD` (1). Without `-icount` the timer follows host time and the readings
//! include QEMU's translation work: use them for nothing.

use core::hint::black_box;
use core::sync::atomic::{compiler_fence, Ordering};

use cortex_m::peripheral::{DCB, DWT};

/// QEMU's `-icount shift=N` that [`Cost::icount_instructions`] assumes
/// (`qemu-run` passes it when `NORMCORE_ICOUNT=1`).
pub const ICOUNT_SHIFT: u32 = 6;

/// A free-running 32-bit up-counter (it wraps at 2^32).
pub trait TickCounter {
    /// The current count.
    fn now(&self) -> u32;
    /// Counts per second.
    fn hz(&self) -> u32;
}

/// What a [`Cost`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum Unit {
    /// Core clock cycles (DWT CYCCNT).
    Cycles,
    /// Ticks of a timer running at `hz`.
    Ticks {
        /// Timer rate.
        hz: u32,
    },
}

impl Unit {
    /// The log field name of what [`report`](Self::report) gives:
    /// `cycles`, or `instructions` for timer ticks.
    pub fn key(self) -> &'static str {
        match self {
            Unit::Cycles => "cycles",
            Unit::Ticks { .. } => "instructions",
        }
    }

    /// `units` (a sum of [`Cost::count`]s) as the figure to report: cycles
    /// as they are, timer ticks as instructions ([`icount_instructions`]).
    pub fn report(self, units: u64) -> u64 {
        match self {
            Unit::Cycles => units,
            Unit::Ticks { hz } => icount_instructions(units, hz),
        }
    }
}

/// A measured cost, with the stopwatch's own overhead removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub struct Cost {
    /// What `count` counts.
    pub unit: Unit,
    /// Cycles or ticks.
    pub count: u32,
}

impl Cost {
    /// Instructions executed, if this cost is in timer ticks and QEMU ran
    /// with `-icount shift=`[`ICOUNT_SHIFT`]: `ticks · 10^9 / (hz · 2^shift)`,
    /// rounded to nearest (the tick grid makes it exact to ±1 instruction).
    /// `None` for cycle counts, which need no conversion.
    pub fn icount_instructions(&self) -> Option<u32> {
        match self.unit {
            Unit::Cycles => None,
            Unit::Ticks { hz } => Some(icount_instructions(u64::from(self.count), hz) as u32),
        }
    }
}

/// Instructions executed in `ticks` of a timer at `hz` under QEMU's
/// `-icount shift=`[`ICOUNT_SHIFT`]: `ticks · 10^9 / (hz · 2^shift)`, rounded
/// to nearest. For sums of many measurements (a per-layer total over many
/// samples), where a `u32` [`Cost`] could overflow.
pub fn icount_instructions(ticks: u64, hz: u32) -> u64 {
    let den = u128::from(hz) << ICOUNT_SHIFT;
    let num = u128::from(ticks) * 1_000_000_000;
    ((num + den / 2) / den.max(1)) as u64
}

/// Timer ticks per instruction under QEMU's `-icount
/// shift=`[`ICOUNT_SHIFT`], `hz · 2^shift / 10^9`, as `(integer part,
/// ten-thousandths)` rounded to nearest: `(1, 6000)` at 25 MHz, `(1, 2800)`
/// at 20 MHz, `(1, 240)` at 16 MHz, `(64, 0)` at 1 GHz. What the log line
/// of [`Stopwatch::log_unit`] divides by.
pub fn ticks_per_instruction(hz: u32) -> (u32, u32) {
    let scaled = ((u64::from(hz) << ICOUNT_SHIFT) * 10_000 + 500_000_000) / 1_000_000_000;
    ((scaled / 10_000) as u32, (scaled % 10_000) as u32)
}

/// A raw reading of a [`Stopwatch`]'s counter, for spans that are not one
/// closure: e.g. from an engine's "layer starts" callback to its "layer
/// ended" callback ([`Stopwatch::stamp`], [`Stopwatch::between`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp(u32);

enum Source<T> {
    /// DWT CYCCNT (none on ARMv6-M).
    #[cfg(not(armv6m))]
    Cycles,
    Timer(T),
}

/// Measures closures with the best counter the machine has.
pub struct Stopwatch<T> {
    source: Source<T>,
    /// What two back-to-back readings differ by: subtracted from every cost.
    overhead: u32,
    /// Keeps CYCCNT's owner alive: nobody else may reconfigure it.
    _dwt: Option<DWT>,
}

impl<T> core::fmt::Debug for Stopwatch<T> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let source = match self.source {
            #[cfg(not(armv6m))]
            Source::Cycles => "dwt-cyccnt",
            Source::Timer(_) => "timer",
        };
        f.debug_struct("Stopwatch")
            .field("source", &source)
            .field("overhead", &self.overhead)
            .finish()
    }
}

impl<T: TickCounter> Stopwatch<T> {
    /// Use DWT CYCCNT if it counts on this machine (enabling it through
    /// `dcb` and `dwt`), `timer` otherwise.
    #[cfg(not(armv6m))]
    pub fn new(dcb: &mut DCB, mut dwt: DWT, timer: T) -> Self {
        dcb.enable_trace();
        // Cortex-M7 locks the DWT behind a software lock; a no-op elsewhere.
        DWT::unlock();
        dwt.enable_cycle_counter();
        let before = DWT::cycle_count();
        cortex_m::asm::delay(64);
        if DWT::cycle_count() != before {
            Self::calibrated(Source::Cycles, Some(dwt))
        } else {
            Self::calibrated(Source::Timer(timer), None)
        }
    }

    /// `timer`: ARMv6-M (Cortex-M0/M0+) has no DWT cycle counter. The
    /// same signature as on the other cores, so that the programs need no
    /// `cfg` of their own; `dcb` and `dwt` are left alone.
    #[cfg(armv6m)]
    pub fn new(_dcb: &mut DCB, _dwt: DWT, timer: T) -> Self {
        Self::calibrated(Source::Timer(timer), None)
    }

    /// Always use `timer` (e.g. to compare with QEMU runs on a board).
    pub fn with_timer(timer: T) -> Self {
        Self::calibrated(Source::Timer(timer), None)
    }

    fn calibrated(source: Source<T>, dwt: Option<DWT>) -> Self {
        let mut sw = Stopwatch {
            source,
            overhead: 0,
            _dwt: dwt,
        };
        // The minimum of a few empty measurements: the first may include
        // cache or translation effects.
        sw.overhead = (0..4).map(|_| sw.measure(|| ()).1.count).min().unwrap_or(0);
        sw
    }

    /// What the costs count.
    pub fn unit(&self) -> Unit {
        match &self.source {
            #[cfg(not(armv6m))]
            Source::Cycles => Unit::Cycles,
            Source::Timer(t) => Unit::Ticks { hz: t.hz() },
        }
    }

    /// Log which unit the costs are in (the line every report starts with,
    /// so that no figure is read in the wrong unit).
    pub fn log_unit(&self) {
        match self.unit() {
            Unit::Cycles => defmt::info!("cost unit: cycles (DWT CYCCNT)"),
            Unit::Ticks { hz } => {
                let (whole, frac) = ticks_per_instruction(hz);
                defmt::info!(
                    "cost unit: instructions = timer ticks at {=u32} Hz / {=u32}.{=u32:04} (ticks·10^9/(hz·64); valid under QEMU -icount shift=6)",
                    hz,
                    whole,
                    frac
                )
            }
        }
    }

    #[inline(always)]
    fn now(&self) -> u32 {
        match &self.source {
            #[cfg(not(armv6m))]
            Source::Cycles => DWT::cycle_count(),
            Source::Timer(t) => t.now(),
        }
    }

    /// Read the counter now. Memory accesses are not moved across the
    /// reading (compiler fences on both sides), so work written to memory
    /// before or after it stays on its side.
    #[inline(always)]
    pub fn stamp(&self) -> Stamp {
        compiler_fence(Ordering::SeqCst);
        let now = self.now();
        compiler_fence(Ordering::SeqCst);
        Stamp(now)
    }

    /// The cost from `start` to `end` (two [`stamp`](Self::stamp)s), less
    /// the cost of reading the counter, as [`measure`](Self::measure)
    /// reports it.
    pub fn between(&self, start: Stamp, end: Stamp) -> Cost {
        Cost {
            unit: self.unit(),
            count: end.0.wrapping_sub(start.0).saturating_sub(self.overhead),
        }
    }

    /// Run `f` and return its result and cost.
    ///
    /// The compiler may move code that does not depend on the readings
    /// across them: pass `f`'s inputs through [`core::hint::black_box`] so
    /// that its work cannot start early (or be folded at compile time).
    #[inline(never)]
    pub fn measure<R>(&self, f: impl FnOnce() -> R) -> (R, Cost) {
        let start = self.now();
        compiler_fence(Ordering::SeqCst);
        let result = black_box(f());
        compiler_fence(Ordering::SeqCst);
        let end = self.now();
        let cost = Cost {
            unit: self.unit(),
            count: end.wrapping_sub(start).saturating_sub(self.overhead),
        };
        (result, cost)
    }
}
