//! Board support: where a board's peripherals are and how fast they run.
//! Drivers live elsewhere ([`crate::cmsdk`] for ARM's kit, a HAL crate for
//! a vendor's chip); a board module wires them up.
//!
//! Every board module offers the same surface, so the binaries are written
//! once against [`active`]:
//! - `NAME`: a human-readable name for the logs;
//! - `Board::take() -> Option<Board>`: the board's parts, once;
//! - `Board::timer`: a free-running [`TickCounter`](crate::cost::TickCounter)
//!   that also implements `embedded_hal::delay::DelayNs`;
//! - `Board::uart`: the console UART, `embedded_io::{Read, Write}`.
//!
//! Adding a board (e.g. a Nucleo-F411 or an nRF52840-DK) means a module
//! here, a cargo feature that makes it [`active`], its `memory.x` (chosen in
//! `build.rs`) and a runner for its probe; `exit` then follows the probe's
//! convention instead of QEMU's semihosting.

pub mod mps2;

/// The board the binaries are built for.
pub use mps2 as active;
