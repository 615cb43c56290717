//! What a fault handler logs: the stacked registers and, on ARMv7-M and
//! ARMv8-M, the fault status registers (ARMv6-M has none). Board-agnostic;
//! a board's HardFault handler (`normcore-qemu`'s, which then exits with
//! failure) calls [`log`].

use cortex_m_rt::ExceptionFrame;

#[cfg(not(armv6m))]
use cortex_m::peripheral::SCB;

/// HFSR.FORCED: a configurable fault escalated to HardFault.
#[cfg(not(armv6m))]
const HFSR_FORCED: u32 = 1 << 30;
/// CFSR.UFSR.UNDEFINSTR: an undefined instruction (`UDF`, as panic-probe uses).
#[cfg(not(armv6m))]
const CFSR_UNDEFINSTR: u32 = 1 << 16;
/// CFSR.BFSR.BFARVALID: BFAR holds the faulting data address.
#[cfg(not(armv6m))]
const CFSR_BFARVALID: u32 = 1 << 15;
/// CFSR.MMFSR.MMARVALID: MMFAR holds the faulting data address.
#[cfg(not(armv6m))]
const CFSR_MMARVALID: u32 = 1 << 7;

/// Log a HardFault: the registers the exception stacked, then the fault
/// status (and the faulting address where one is valid).
pub fn log(frame: &ExceptionFrame) {
    defmt::error!(
        "HardFault: pc={=u32:#010x} lr={=u32:#010x} xpsr={=u32:#010x} \
         r0={=u32:#010x} r1={=u32:#010x} r2={=u32:#010x} r3={=u32:#010x} r12={=u32:#010x}",
        frame.pc(),
        frame.lr(),
        frame.xpsr(),
        frame.r0(),
        frame.r1(),
        frame.r2(),
        frame.r3(),
        frame.r12(),
    );
    #[cfg(not(armv6m))]
    fault_status();
}

/// Log the fault status registers (ARMv7-M and ARMv8-M; ARMv6-M has none).
#[cfg(not(armv6m))]
fn fault_status() {
    // SAFETY: reading the fault status registers has no side effects, and
    // nothing else runs while the HardFault handler does.
    let scb = unsafe { &*SCB::PTR };
    let (hfsr, cfsr) = (scb.hfsr.read(), scb.cfsr.read());
    defmt::error!("hfsr={=u32:#010x} cfsr={=u32:#010x}", hfsr, cfsr);
    if cfsr & CFSR_BFARVALID != 0 {
        defmt::error!("bus fault at address {=u32:#010x}", scb.bfar.read());
    }
    if cfsr & CFSR_MMARVALID != 0 {
        defmt::error!(
            "memory-management fault at address {=u32:#010x}",
            scb.mmfar.read()
        );
    }
    if hfsr & HFSR_FORCED != 0 && cfsr & CFSR_UNDEFINSTR != 0 {
        defmt::error!("undefined instruction (UDF): a panic ends this way");
    }
}
