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
//! Boards with a vendor HAL live outside this crate, in `firmware/boards/`
//! (the nRF52840-DK: `boards/nrf52840dk/`, with its own `memory.x`, RTT
//! logger and `probe-rs` runner), because this crate's semihosting logger
//! and QEMU memory map would come along with it. A board built from ARM's
//! kit (another MPS2/MPS3 image) would be a module here.

pub mod mps2;

/// The board the binaries are built for.
pub use mps2 as active;
