//! # normcore-firmware-build
//!
//! The firmware's assets, defined once, on the host side:
//! - [`samples`]: the `samples.bin` format (the trainer writes it, the
//!   board builds read it);
//! - [`board`]: what every board crate's `build.rs` does: put `memory.x`
//!   where cortex-m-rt's `link.x` finds it, pass the linker scripts, and
//!   turn an assets directory (one or both model files and `samples.bin`)
//!   into `$OUT_DIR/assets.rs`, after checking that each model parses with
//!   core's own parser, matches the samples, and fits the board's flash and
//!   RAM. Anything wrong is a build error naming the file, the board and
//!   the numbers.

pub mod board;
pub mod samples;
