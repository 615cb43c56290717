//! # normcore-firmware
//!
//! The Cortex-M side of normcore: what every firmware binary links, and the
//! board support behind it. The binaries (`src/bin/`) run under QEMU's
//! `mps2-an386` (Cortex-M4F) through `./qemu-run`, and the host-side tests
//! in the root workspace's `tests/` crate check what they print.
//!
//! - [`exit`]: end the program with a status (semihosting).
//! - `fault` (private): HardFault and default exception handlers that log
//!   and exit with failure, so that no failure is a hang.
//! - [`cost`]: cycles (DWT CYCCNT) on hardware, timer ticks and
//!   instruction counts (`-icount`) under QEMU.
//! - [`stack`]: stack painting and the high-water mark.
//! - [`digest`]: CRC-32 of results, for comparing a run with the host's.
//! - [`board`]: where the peripherals are; [`cmsdk`]: drivers for ARM's
//!   CMSDK timer and UART (`embedded-hal` delay, `embedded-io` serial).
//! - [`workload`]: the computation `hello` runs, shared with the host test
//!   that checks its result.
//!
//! Logging is `defmt` over semihosting (decoded on the host by
//! `defmt-print`); a panic prints its message through `panic-probe`.
#![no_std]

pub mod board;
pub mod cmsdk;
pub mod cost;
pub mod digest;
mod fault;
pub mod mmio;
pub mod stack;
pub mod workload;

// The defmt transport and the panic handler, linked into every binary that
// uses this crate.
use defmt_semihosting as _;
use panic_probe as _;

use cortex_m_semihosting::debug;

/// A 16-aligned static buffer of `$bytes` bytes (an engine arena), handed
/// out once: the first evaluation yields `Some(&'static mut [u8])`, every
/// later one `None`. A macro because a static cannot depend on a generic
/// parameter; each expansion has its own buffer.
#[macro_export]
macro_rules! take_arena {
    ($bytes:expr) => {{
        #[repr(C, align(16))]
        struct Arena([u8; $bytes]);
        static mut ARENA: Arena = Arena([0; $bytes]);
        static TAKEN: ::core::sync::atomic::AtomicBool =
            ::core::sync::atomic::AtomicBool::new(false);
        if TAKEN.swap(true, ::core::sync::atomic::Ordering::AcqRel) {
            None
        } else {
            // SAFETY: `TAKEN` makes this the only reference to `ARENA` ever
            // made; the pointer is to a static, so never null.
            unsafe { (&raw mut ARENA.0).as_mut() }.map(|a| a.as_mut_slice())
        }
    }};
}

/// End the program: QEMU exits with status 0 for `true` and 1 for `false`
/// (semihosting `SYS_EXIT`).
///
/// Semihosting needs a host: on a board without a debugger attached the
/// `BKPT` it executes faults instead; a board port replaces this with its
/// probe's convention.
pub fn exit(success: bool) -> ! {
    // No `defmt::flush()`: semihosting output is synchronous, and a flush
    // would write an empty frame (bytes on a stdout the UART may share).
    debug::exit(if success {
        debug::EXIT_SUCCESS
    } else {
        debug::EXIT_FAILURE
    });
    // Only reached without a semihosting host.
    loop {
        cortex_m::asm::wfi();
    }
}
