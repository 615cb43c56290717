//! # normcore
//!
//! Batch-Normalized neural networks for microcontrollers: the layer and
//! Batch Normalization math (Ioffe & Szegedy, ICML 2015) shared by the host
//! trainer and the device, in `no_std` Rust with no allocation and no SIMD
//! intrinsics.
//!
//! - [`tensor`]: NHWC shapes and checked borrowed views (the layout, and why).
//! - [`gemm`]: the matrix-multiply seam a host can replace with a fast kernel.
//! - [`layers`]: f32 dense, conv2d, depthwise conv2d, pooling, activations,
//!   dropout and softmax cross-entropy, forward and backward.
//! - [`batchnorm`]: BN training (Alg. 1), backward, population statistics and
//!   inference (Alg. 2), folding into the preceding layer and refolding.
//! - `adapt` (feature `adapt`, on by default): on-device adaptation of a
//!   folded model: the overlay of adapted parameters the engine reads,
//!   refolding, statistics re-estimation (`adapt::restat`), streaming BN
//!   statistics (`adapt::stats`), the power-cut-safe A/B store of adapted
//!   parameters in NOR flash (`adapt::store`) and an integer input drift
//!   to measure it on (`adapt::drift`).
//! - [`optim`]: SGD with momentum and weight decay.
//! - [`math`]: a fast, vectorisable `exp` and sigmoid with stated error bounds.
//! - [`rng`]: a seedable generator for dropout, initialisation and shuffling.
//!
//! Memory is always the caller's: every function writes into slices it is
//! given. Bad input is an [`Error`], never a panic, and an `Err` leaves the
//! outputs untouched.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(feature = "adapt")]
pub mod adapt;
pub mod batchnorm;
pub mod engine;
pub mod error;
pub mod gemm;
pub mod kernels;
pub mod layers;
pub mod math;
pub mod model;
pub mod optim;
pub mod rng;
pub mod serial;
pub mod tensor;

#[cfg(test)]
mod testutil;

pub use batchnorm::{BatchNorm, BatchNormConfig, BnState, RunningStats, SavedStats};
pub use error::{Error, Operand, Param};
pub use gemm::{Gemm, MatMut, MatRef, Portable};
pub use optim::Sgd;
pub use rng::Rng;
pub use tensor::{Shape, View, ViewMut};
