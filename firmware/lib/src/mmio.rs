//! Memory-mapped registers: one 32-bit cell per register, accessed only with
//! volatile loads and stores so the compiler neither elides nor merges them.

use core::cell::UnsafeCell;

/// A 32-bit device register. Register blocks are `#[repr(C)]` structs of
/// these, laid over the peripheral's base address.
#[repr(transparent)]
pub struct Reg(UnsafeCell<u32>);

impl Reg {
    /// Volatile read.
    #[inline(always)]
    pub fn read(&self) -> u32 {
        // SAFETY: `Reg`s only exist inside register blocks that a driver
        // obtained from a valid, aligned peripheral address (see the
        // `unsafe fn new` of each driver).
        unsafe { self.0.get().read_volatile() }
    }

    /// Volatile write.
    #[inline(always)]
    pub fn write(&self, value: u32) {
        // SAFETY: as in `read`; device registers are interior-mutable by
        // nature, which is what the `UnsafeCell` says.
        unsafe { self.0.get().write_volatile(value) }
    }
}

impl core::fmt::Debug for Reg {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Reading a register can have side effects (e.g. popping a FIFO), so
        // Debug shows the address, never the value.
        write!(f, "Reg@{:p}", self.0.get())
    }
}
