//! # normcore-qemu
//!
//! What every QEMU board crate of normcore's firmware shares, and a board
//! on real hardware must not have: how a program ends and how it logs.
//!
//! - [`exit`]: end the program with a status: QEMU exits with 0 or 1
//!   (semihosting `SYS_EXIT`), which is what the host's tests read.
//! - defmt over semihosting (`defmt-semihosting`, decoded on the host by
//!   `defmt-print`) and panic-probe (a panic logs its message, then
//!   `UDF`), linked into every binary of a board that depends on this.
//! - `fault` (private): HardFault and default exception handlers that log
//!   and exit with failure, so that no failure is a hang.
//!
//! A board crate depends on this and calls [`exit`] from its
//! `Board::exit`.
#![no_std]

mod fault;

// The defmt transport and the panic handler, linked into every binary that
// uses this crate.
use defmt_semihosting as _;
use panic_probe as _;

use cortex_m_semihosting::debug;

/// End the program: QEMU exits with status 0 for `true` and 1 for `false`
/// (semihosting `SYS_EXIT`).
///
/// Semihosting needs a host: on a board without a debugger attached the
/// `BKPT` it executes faults instead, which is why only QEMU boards use
/// this crate.
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
