//! Faults on purpose, by reading an address nothing is mapped at: the
//! HardFault handler must log the fault and exit QEMU with failure.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use normcore_mps2_an386 as _;

/// In the vendor-specific system region; nothing answers there on the
/// MPS2, so the load is a precise bus fault (escalated to HardFault).
const UNMAPPED: usize = 0xF000_0000;

#[entry]
fn main() -> ! {
    defmt::info!("reading {=usize:#010x}, which is not mapped", UNMAPPED);
    // SAFETY: not sound by design: the read is meant to fault, and the
    // HardFault handler never returns here.
    let value = unsafe { (UNMAPPED as *const u32).read_volatile() };
    defmt::error!("the read did not fault (read {=u32:#010x})", value);
    // Fall back to an undefined instruction: a HardFault all the same.
    cortex_m::asm::udf()
}
