//! Inference kernels for folded models (docs/FORMAT.md), one sample at a
//! time (the device runs batch 1), NHWC, writing into the caller's slices.
//!
//! - [`requant`]: the int8 fixed-point formats, requantization
//!   (`i32` accumulator → `i8` with a Q1.31 multiplier and a shift) and the
//!   per-layer [`OutputStage`].
//! - [`pack`]: the row-blocked weight layout of dense and conv layers.
//! - [`int8`]: integer-only dense, conv2d, depthwise, pooling, ReLU clamps,
//!   lookup tables and softmax, bit-exact on every target.
//! - [`f32`](mod@f32): the same layers for f32 models.
//!
//! # Why row blocks
//! A dense layer or a convolution is, per output pixel, a set of dot products
//! over the same input. Walking `R` output rows at once (R = 4 or 8) keeps
//! `R` accumulators in registers, loads each input once for `R`
//! multiply-adds, and reads the weights strictly sequentially, because the
//! exporter stored them in exactly that order (`stored[(b·P + p)·R + r] =
//! W[b·R + r, p]`). There is no im2col: a convolution's in-bounds kernel row
//! is `KW'·Cin` contiguous inputs in NHWC and `KW'·Cin·R` contiguous
//! weights, the same inner loop as a dense layer.
//!
//! Every kernel validates all its arguments before it writes anything: an
//! `Err` (a specific [`Error`](crate::Error) variant) leaves the outputs
//! untouched, and no input makes a kernel panic.

pub mod f32;
pub mod int8;
pub mod pack;
pub mod requant;

pub use pack::{pack_rows, packed_len, padded_rows, unpack_rows};
pub use requant::{quantize_multiplier, requantize, OutputStage};
