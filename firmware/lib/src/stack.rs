//! Stack high-water mark by painting.
//!
//! cortex-m-rt gives the stack the RAM between `_stack_end` (the end of
//! `.bss`/`.uninit`, where a heap would start) and `_stack_start` (the
//! initial SP, the top of RAM); it grows down. [`paint`] fills everything
//! below the current SP with [`PAINT`]; later, [`Painted::high_water`]
//! scans up from `_stack_end` for the first word that is no longer
//! [`PAINT`]: everything above it has been used at some point. Exceptions
//! stack onto the same (main) stack, so their frames are counted too.
//!
//! The measure can only err low, by a word, if the deepest frame happened to
//! store [`PAINT`] itself.

/// The fill pattern (recognisable in a memory dump, unlikely as data).
pub const PAINT: u32 = 0xCCCC_CCCC;

extern "C" {
    /// Top of the stack (highest address, exclusive), from cortex-m-rt's `link.x`.
    static _stack_start: u32;
    /// Bottom of the stack (lowest address), from cortex-m-rt's `link.x`.
    static _stack_end: u32;
}

/// The painted stack, to be measured later.
#[derive(Debug, Clone, Copy)]
pub struct Painted {
    bottom: usize,
    top: usize,
}

/// Bounds of the stack region, `(bottom, top)`.
fn bounds() -> (usize, usize) {
    // Only the symbols' addresses mean something, never their contents.
    (
        &raw const _stack_end as usize,
        &raw const _stack_start as usize,
    )
}

/// Paint the unused part of the stack, `[_stack_end, SP)`, with [`PAINT`].
///
/// # Safety
/// Nothing may live between `_stack_end` and the current SP: no heap placed
/// at `__sheap` (which cortex-m-rt puts at `_stack_end`) and no other
/// stack. Call it early in `main`.
pub unsafe fn paint() -> Painted {
    let (bottom, top) = bounds();
    // One asm block reads SP and fills up to it, so no compiler-generated
    // spill can land in the region while it is being painted.
    // SAFETY: the words in [bottom, SP) belong to no Rust object (the
    // caller guarantees no heap there); SP is 8-aligned and `bottom` is
    // 4-aligned (link.x asserts it), so the loop ends exactly at SP.
    #[cfg(not(armv6m))]
    unsafe {
        core::arch::asm!(
            "mov {end}, sp",
            "0:",
            "cmp {p}, {end}",
            "bhs 1f",
            "str {pat}, [{p}], #4",
            "b 0b",
            "1:",
            p = inout(reg) bottom => _,
            end = out(reg) _,
            pat = in(reg) PAINT,
            options(nostack),
        );
    }
    // ARMv6-M (Thumb-1) has no post-indexed STR: a one-register STM with
    // write-back stores and advances by a word (`reg` is r0-r7 there, as
    // STM needs).
    // SAFETY: as above.
    #[cfg(armv6m)]
    unsafe {
        core::arch::asm!(
            "mov {end}, sp",
            "0:",
            "cmp {p}, {end}",
            "bhs 1f",
            "stm {p}!, {{{pat}}}",
            "b 0b",
            "1:",
            p = inout(reg) bottom => _,
            end = out(reg) _,
            pat = in(reg) PAINT,
            options(nostack),
        );
    }
    Painted { bottom, top }
}

impl Painted {
    /// Bytes of stack in the region: `_stack_start - _stack_end`.
    pub fn size(&self) -> usize {
        self.top - self.bottom
    }

    /// The most stack used since reset, in bytes from `_stack_start`
    /// (including what was in use when [`paint`] ran).
    pub fn high_water(&self) -> usize {
        let mut p = self.bottom;
        while p < self.top {
            // SAFETY: `p` is a 4-aligned address inside the stack region,
            // which is RAM; reading it races with nothing (single core, and
            // a volatile read of a word below SP observes, not owns).
            if unsafe { (p as *const u32).read_volatile() } != PAINT {
                break;
            }
            p += 4;
        }
        self.top - p
    }
}
