//! Fault handling: every way a program can go wrong ends QEMU with a failure
//! status and a log line, never a hang. What is logged is
//! `normcore_firmware::fault::log` (on ARMv6-M, without fault status
//! registers, the stacked registers only).
//!
//! - A panic (panic-probe, `print-defmt`) logs the message, then executes
//!   `UDF`, which escalates to HardFault.
//! - A HardFault (also bus, memory-management and usage faults, which
//!   escalate to it while they are disabled, as after reset) logs the
//!   stacked registers and the fault status registers, then exits with
//!   failure. cortex-m-rt's default handler would loop forever instead.
//! - Any other exception or interrupt nobody handles does the same.

use cortex_m_rt::{exception, ExceptionFrame};

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    normcore_firmware::fault::log(frame);
    crate::exit(false)
}

#[exception]
unsafe fn DefaultHandler(irqn: i16) -> ! {
    defmt::error!("unexpected exception or interrupt {=i16}", irqn);
    crate::exit(false)
}
