//! The computation `hello` runs on the device, in one place so that the
//! host test repeats exactly it: the `tests` crate compiles this file too
//! (`#[path]`), so it may use only `core` and `normcore`.
//!
//! One layer of the paper's BN network (Sec. 3.2, Alg. 2), inference form:
//! ```text
//! z = x·Wᵀ                      dense, no bias (BN's β replaces it)
//! y = sigmoid(s·(z - E[z]) + β)  s = γ / sqrt(Var[z] + ε)
//! ```
//! over a batch of [`BATCH`] samples, [`INPUTS`] → [`OUTPUTS`] features,
//! with the portable f32 kernels. Every input is a multiple of 2^-8 in
//! `[-2, 2)` (exact in f32), made by a fixed integer hash, so the host and
//! the device start from identical bits; IEEE-754 arithmetic in the same
//! order then gives identical results, which the QEMU test checks.

use normcore::layers::{Activation, Dense};
use normcore::{BatchNorm, BatchNormConfig, BnState, Error, Portable, Shape, View, ViewMut};

/// Samples in the batch.
pub const BATCH: usize = 4;
/// Input features per sample.
pub const INPUTS: usize = 16;
/// Output features per sample.
pub const OUTPUTS: usize = 8;
/// Elements of the output, `[BATCH, OUTPUTS]`.
pub const OUTPUT_LEN: usize = BATCH * OUTPUTS;

/// The layer's input and parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Input `[BATCH, INPUTS]`.
    pub x: [f32; BATCH * INPUTS],
    /// Dense weights `[OUTPUTS, INPUTS]`.
    pub w: [f32; OUTPUTS * INPUTS],
    /// BN γ.
    pub gamma: [f32; OUTPUTS],
    /// BN β.
    pub beta: [f32; OUTPUTS],
    /// BN population mean `E[z]`.
    pub mean: [f32; OUTPUTS],
    /// BN population variance `Var[z]` (unbiased, > 0).
    pub var: [f32; OUTPUTS],
}

/// A multiple of 2^-6 in `[-2, 2)` from an index and a per-array salt
/// (Knuth's multiplicative hash; the top byte is the value).
fn value(i: usize, salt: u32) -> f32 {
    let h = (i as u32 ^ salt.wrapping_mul(0x9E37_79B9)).wrapping_mul(2_654_435_761);
    ((h >> 24) as i32 - 128) as f32 / 64.0
}

fn filled<const N: usize>(salt: u32) -> [f32; N] {
    core::array::from_fn(|i| value(i, salt))
}

impl Workload {
    /// The fixed instance `hello` runs.
    pub fn new() -> Self {
        Workload {
            x: filled(1),
            // Scaled so that z's spread matches the variances below and
            // the sigmoid is not saturated.
            w: filled::<{ OUTPUTS * INPUTS }>(2).map(|w| w / 4.0),
            gamma: filled::<OUTPUTS>(3).map(|g| 1.0 + g / 4.0),
            beta: filled(4),
            mean: filled::<OUTPUTS>(5).map(|m| m * 2.0),
            var: filled::<OUTPUTS>(6).map(|v| 4.0 + v),
        }
    }

    /// Compute `y = sigmoid(BN(x·Wᵀ))` into `y` (`[BATCH, OUTPUTS]`).
    pub fn run(&self, y: &mut [f32; OUTPUT_LEN]) -> Result<(), Error> {
        let dense = Dense::new(INPUTS, OUTPUTS)?;
        let bn = BatchNorm::new(OUTPUTS, BatchNormConfig::default())?;
        let state = BnState {
            gamma: &self.gamma,
            beta: &self.beta,
            mean: &self.mean,
            var: &self.var,
            eps: bn.config().eps,
        };
        let out = Shape::features(BATCH, OUTPUTS);
        let mut z = [0.0f32; OUTPUT_LEN];
        dense.forward(
            &Portable,
            View::new(Shape::features(BATCH, INPUTS), &self.x)?,
            &self.w,
            None,
            ViewMut::new(out, &mut z)?,
        )?;
        bn.forward_eval(View::new(out, &z)?, &state, ViewMut::new(out, y)?)?;
        Activation::Sigmoid.forward_in_place(y);
        Ok(())
    }
}

impl Default for Workload {
    fn default() -> Self {
        Self::new()
    }
}
