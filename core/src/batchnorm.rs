//! Batch Normalization (Ioffe & Szegedy, ICML 2015): training, backward,
//! population statistics, inference and folding.
//!
//! # One kernel for dense and conv
//! BN normalises each channel `c` over a set of `m` values. For dense
//! features that set is the mini-batch (`m = N`); for convolutions it is the
//! batch and every spatial position, `m = N·H·W` (paper Sec. 3.2), so that
//! one feature map is normalised the same way at every location. In NHWC
//! both are the columns of a `[rows, C]` matrix with `rows = N·H·W`
//! ([`Shape::rows`]), and this module never needs to know which it has.
//!
//! # Training forward (Alg. 1)
//! ```text
//! μ_B  = (1/m) Σ_i x_i                      mini-batch mean
//! σ²_B = (1/m) Σ_i (x_i - μ_B)²             mini-batch variance (biased)
//! x̂_i  = (x_i - μ_B) / sqrt(σ²_B + ε)       normalise
//! y_i  = γ·x̂_i + β                          scale and shift
//! ```
//! The variance is computed in a second pass over `x - μ_B`, which avoids the
//! cancellation of `E[x²] - E[x]²`. Sums are f32; their relative error is at
//! most about `m·2^-24` and in practice `sqrt(m)·2^-24`, far below the noise of
//! the batch estimate itself.
//!
//! # Backward (Sec. 3, the chain rule under Alg. 1)
//! With `ℓ` the loss and `dy_i = ∂ℓ/∂y_i`, the paper's six lines reduce to
//! ```text
//! ∂ℓ/∂β = Σ_i dy_i
//! ∂ℓ/∂γ = Σ_i dy_i·x̂_i
//! ∂ℓ/∂x_i = γ/sqrt(σ²_B + ε) · (dy_i - (1/m)·∂ℓ/∂β - x̂_i·(1/m)·∂ℓ/∂γ)
//! ```
//! (the `∂ℓ/∂μ_B` and `∂ℓ/∂σ²_B` terms substituted; `Σ_i (x_i - μ_B) = 0`). The
//! forward pass saves `μ_B` and `1/sqrt(σ²_B + ε)` per channel, and the
//! backward pass recomputes `x̂` from `x`, so no `[rows, C]` buffer is kept.
//!
//! # Population statistics and inference (Alg. 2)
//! Inference uses `E[x]` and `Var[x] = m/(m-1)·E_B[σ²_B]`, the unbiased
//! estimate. As in PyTorch they are kept as exponential moving averages,
//! updated by every training step with momentum `α` (0.1 by default):
//! ```text
//! running_mean ← (1-α)·running_mean + α·μ_B
//! running_var  ← (1-α)·running_var  + α·m/(m-1)·σ²_B
//! ```
//! and the inference transform is the affine map (Alg. 2, line 11)
//! `y = s·x + (β - s·E[x])` with `s = γ / sqrt(Var[x] + ε)`.
//!
//! # Folding (Alg. 2 applied to `x = W·u + b`)
//! Substituting the preceding layer into the affine map gives a layer of the
//! same kind with `W' = s·W` (each output row, filter or depthwise channel
//! scaled by its `s`) and `b' = s·(b - E[x]) + β`. [`BnState`] keeps
//! `γ, β, E[x], Var[x], ε` so that a device can re-estimate the statistics
//! and refold ([`BnState::refold_rows`]) without the unfolded weights.
//!
//! Names: PyTorch calls `γ` `weight`, `β` `bias`, and the population
//! statistics `running_mean` and `running_var`; its defaults (`ε = 1e-5`,
//! momentum 0.1, unbiased running variance) are the defaults here.

use crate::error::{check_len, Error, Operand, Param};
use crate::tensor::{Shape, View, ViewMut};

/// Hyper-parameters of a BN layer.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BatchNormConfig {
    /// Added to the variance inside the square root; finite and > 0.
    pub eps: f32,
    /// Weight of the newest batch in the running averages, in `[0, 1]`
    /// (0 freezes the statistics, 1 keeps only the last batch).
    pub momentum: f32,
}

impl Default for BatchNormConfig {
    fn default() -> Self {
        BatchNormConfig {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

impl BatchNormConfig {
    /// Check the ranges documented on the fields.
    pub fn validate(&self) -> Result<(), Error> {
        check_eps(self.eps)?;
        if !(0.0..=1.0).contains(&self.momentum) {
            return Err(Error::InvalidParam(Param::BnMomentum));
        }
        Ok(())
    }
}

fn check_eps(eps: f32) -> Result<(), Error> {
    if eps.is_finite() && eps > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidParam(Param::Eps))
    }
}

/// Running (population) statistics, updated in place by a training step.
#[derive(Debug)]
pub struct RunningStats<'a> {
    /// `E[x]` per channel (PyTorch `running_mean`, starts at 0).
    pub mean: &'a mut [f32],
    /// Unbiased `Var[x]` per channel (PyTorch `running_var`, starts at 1).
    pub var: &'a mut [f32],
}

/// What the training forward saves for the backward pass, per channel.
#[derive(Debug)]
pub struct SavedStats<'a> {
    /// `μ_B`.
    pub mean: &'a mut [f32],
    /// `1 / sqrt(σ²_B + ε)`.
    pub inv_std: &'a mut [f32],
}

/// A BN layer over `channels` features (dense) or feature maps (conv).
///
/// Stateless: γ, β, the running statistics and the saved batch statistics
/// are the caller's slices, each of length `channels`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BatchNorm {
    channels: usize,
    config: BatchNormConfig,
}

impl BatchNorm {
    /// A validated BN layer.
    pub fn new(channels: usize, config: BatchNormConfig) -> Result<Self, Error> {
        if channels == 0 {
            return Err(Error::InvalidParam(Param::Dimension));
        }
        config.validate()?;
        Ok(BatchNorm { channels, config })
    }

    /// Channels.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Hyper-parameters.
    pub fn config(&self) -> BatchNormConfig {
        self.config
    }

    /// Check `x`'s channel count and every per-channel slice; return `rows`.
    fn check(&self, x: Shape, per_channel: &[(Operand, usize)]) -> Result<usize, Error> {
        if x.c != self.channels {
            return Err(Error::ShapeMismatch {
                operand: Operand::Input,
            });
        }
        for &(operand, len) in per_channel {
            check_len(operand, self.channels, len)?;
        }
        x.rows()
    }

    /// Training forward (Alg. 1) over a `[N, H, W, C]` batch: normalises with
    /// the batch statistics, writes `y`, saves `μ_B` and `1/sqrt(σ²_B + ε)` in
    /// `saved`, and, when `running` is given, updates the population
    /// estimates (Alg. 2, unbiased variance). Needs `N·H·W >= 2`.
    pub fn forward_train(
        &self,
        x: View<'_>,
        gamma: &[f32],
        beta: &[f32],
        mut y: ViewMut<'_>,
        saved: SavedStats<'_>,
        running: Option<RunningStats<'_>>,
    ) -> Result<(), Error> {
        let mut lens = [
            (Operand::Gamma, gamma.len()),
            (Operand::Beta, beta.len()),
            (Operand::Mean, saved.mean.len()),
            (Operand::Variance, saved.inv_std.len()),
            (Operand::Mean, 0),
            (Operand::Variance, 0),
        ];
        let n_checks = match &running {
            Some(r) => {
                lens[4].1 = r.mean.len();
                lens[5].1 = r.var.len();
                6
            }
            None => 4,
        };
        let rows = self.check(x.shape(), &lens[..n_checks])?;
        if y.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                operand: Operand::Output,
            });
        }
        if rows < 2 {
            return Err(Error::BatchTooSmall {
                needed: 2,
                actual: rows,
            });
        }
        let c = self.channels;
        let m = rows as f32;
        let (mean, inv_std) = (saved.mean, saved.inv_std);

        // Pass 1: μ_B.
        mean.fill(0.0);
        for row in x.data().chunks_exact(c) {
            for (s, &v) in mean.iter_mut().zip(row) {
                *s += v;
            }
        }
        for s in mean.iter_mut() {
            *s /= m;
        }
        // Pass 2: σ²_B about the mean (accumulated in `inv_std`).
        inv_std.fill(0.0);
        for row in x.data().chunks_exact(c) {
            for ((s, &v), &mu) in inv_std.iter_mut().zip(row).zip(mean.iter()) {
                let d = v - mu;
                *s += d * d;
            }
        }
        for s in inv_std.iter_mut() {
            *s /= m;
        }
        if let Some(r) = running {
            let a = self.config.momentum;
            let unbias = m / (m - 1.0);
            for ch in 0..c {
                r.mean[ch] = (1.0 - a) * r.mean[ch] + a * mean[ch];
                r.var[ch] = (1.0 - a) * r.var[ch] + a * unbias * inv_std[ch];
            }
        }
        for s in inv_std.iter_mut() {
            *s = 1.0 / libm::sqrtf(*s + self.config.eps);
        }
        // Pass 3: y = γ·x̂ + β.
        for (yr, xr) in y
            .data_mut()
            .chunks_exact_mut(c)
            .zip(x.data().chunks_exact(c))
        {
            for ch in 0..c {
                let xhat = (xr[ch] - mean[ch]) * inv_std[ch];
                yr[ch] = gamma[ch] * xhat + beta[ch];
            }
        }
        Ok(())
    }

    /// Backward of the training forward: from `x`, γ, the saved statistics
    /// and `dy`, writes `dx`, `dgamma = Σ dy·x̂` and `dbeta = Σ dy`.
    pub fn backward(
        &self,
        x: View<'_>,
        gamma: &[f32],
        saved_mean: &[f32],
        saved_inv_std: &[f32],
        dy: View<'_>,
        mut dx: ViewMut<'_>,
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) -> Result<(), Error> {
        let rows = self.check(
            x.shape(),
            &[
                (Operand::Gamma, gamma.len()),
                (Operand::Mean, saved_mean.len()),
                (Operand::Variance, saved_inv_std.len()),
                (Operand::WeightGrad, dgamma.len()),
                (Operand::BiasGrad, dbeta.len()),
            ],
        )?;
        if dy.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                operand: Operand::OutputGrad,
            });
        }
        if dx.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                operand: Operand::InputGrad,
            });
        }
        let c = self.channels;
        dgamma.fill(0.0);
        dbeta.fill(0.0);
        for (xr, dr) in x.data().chunks_exact(c).zip(dy.data().chunks_exact(c)) {
            for ch in 0..c {
                let xhat = (xr[ch] - saved_mean[ch]) * saved_inv_std[ch];
                dbeta[ch] += dr[ch];
                dgamma[ch] += dr[ch] * xhat;
            }
        }
        let inv_m = 1.0 / rows as f32;
        for ((gr, xr), dr) in dx
            .data_mut()
            .chunks_exact_mut(c)
            .zip(x.data().chunks_exact(c))
            .zip(dy.data().chunks_exact(c))
        {
            for ch in 0..c {
                let xhat = (xr[ch] - saved_mean[ch]) * saved_inv_std[ch];
                gr[ch] = gamma[ch]
                    * saved_inv_std[ch]
                    * (dr[ch] - dbeta[ch] * inv_m - xhat * dgamma[ch] * inv_m);
            }
        }
        Ok(())
    }

    /// Inference forward (Alg. 2): `y = s·(x - E[x]) + β`,
    /// `s = γ / sqrt(Var[x] + ε)`, with the population statistics. Any batch
    /// size, one sample included; updates nothing.
    pub fn forward_eval(
        &self,
        x: View<'_>,
        state: &BnState<'_>,
        mut y: ViewMut<'_>,
    ) -> Result<(), Error> {
        let rows = self.check(x.shape(), &[])?;
        state.check(self.channels)?;
        if y.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                operand: Operand::Output,
            });
        }
        if rows == 0 {
            return Ok(());
        }
        let c = self.channels;
        // The last output row holds the per-channel scale while the other rows
        // are written, so no scratch is needed and every pass is contiguous.
        let (body, last) = y.data_mut().split_at_mut((rows - 1) * c);
        for (ch, s) in last.iter_mut().enumerate() {
            *s = state.scale(ch);
        }
        for (yr, xr) in body.chunks_exact_mut(c).zip(x.data().chunks_exact(c)) {
            for ch in 0..c {
                yr[ch] = last[ch] * (xr[ch] - state.mean[ch]) + state.beta[ch];
            }
        }
        let xl = &x.data()[(rows - 1) * c..];
        for ch in 0..c {
            last[ch] = last[ch] * (xl[ch] - state.mean[ch]) + state.beta[ch];
        }
        Ok(())
    }
}

/// Everything BN inference and a later refold need, per channel: γ, β,
/// `E[x]`, `Var[x]` (unbiased) and ε.
#[derive(Debug, Clone, Copy)]
pub struct BnState<'a> {
    /// Scale γ (PyTorch `weight`).
    pub gamma: &'a [f32],
    /// Shift β (PyTorch `bias`).
    pub beta: &'a [f32],
    /// Population mean `E[x]` (`running_mean`).
    pub mean: &'a [f32],
    /// Population variance `Var[x]`, unbiased (`running_var`).
    pub var: &'a [f32],
    /// ε inside the square root.
    pub eps: f32,
}

impl BnState<'_> {
    /// Channels (the length of every slice once [`check`](Self::check) passed).
    pub fn channels(&self) -> usize {
        self.gamma.len()
    }

    /// Check that every slice has `channels` elements, ε is valid and every
    /// variance is `>= 0` (a negative `Var[x] + ε` has no square root).
    pub fn check(&self, channels: usize) -> Result<(), Error> {
        check_len(Operand::Gamma, channels, self.gamma.len())?;
        check_len(Operand::Beta, channels, self.beta.len())?;
        check_len(Operand::Mean, channels, self.mean.len())?;
        check_len(Operand::Variance, channels, self.var.len())?;
        check_eps(self.eps)?;
        if self.var.iter().any(|v| v.is_nan() || *v < 0.0) {
            return Err(Error::InvalidParam(Param::Variance));
        }
        Ok(())
    }

    /// `s_c = γ_c / sqrt(Var[x]_c + ε)`; the caller keeps `c < channels`.
    #[inline]
    pub fn scale(&self, c: usize) -> f32 {
        self.gamma[c] / libm::sqrtf(self.var[c] + self.eps)
    }

    /// Fold into a layer whose weights are `[C, k]` row-major, one row per
    /// output channel (dense `[out, in]`, conv `[Cout, KH, KW, Cin]`):
    /// `W'[c, :] = s_c·W[c, :]`, `b'_c = s_c·(b_c - E[x]_c) + β_c`.
    ///
    /// `bias` holds the layer's bias on entry (zeros when it has none, as when
    /// BN follows it) and the folded bias on return.
    pub fn fold_rows(&self, w: &mut [f32], bias: &mut [f32]) -> Result<(), Error> {
        let c = self.channels();
        self.check(c)?;
        let k = self.row_len(w.len(), bias.len())?;
        for ch in 0..c {
            let s = self.scale(ch);
            for v in &mut w[ch * k..(ch + 1) * k] {
                *v *= s;
            }
            bias[ch] = s * (bias[ch] - self.mean[ch]) + self.beta[ch];
        }
        Ok(())
    }

    /// Fold into a layer whose weights are `[k, C]` with the channel last
    /// (depthwise `[KH, KW, C]`): `W'[:, c] = s_c·W[:, c]`, bias as in
    /// [`fold_rows`](Self::fold_rows).
    pub fn fold_channels_last(&self, w: &mut [f32], bias: &mut [f32]) -> Result<(), Error> {
        let c = self.channels();
        self.check(c)?;
        self.row_len(w.len(), bias.len())?;
        for row in w.chunks_exact_mut(c) {
            for ch in 0..c {
                row[ch] *= self.scale(ch);
            }
        }
        for ch in 0..c {
            bias[ch] = self.scale(ch) * (bias[ch] - self.mean[ch]) + self.beta[ch];
        }
        Ok(())
    }

    /// Refold a layer folded with `self` so that it is folded with `new`
    /// instead (new statistics estimated on device, or new γ, β after
    /// fine-tuning), without the unfolded weights:
    /// `W'' = (s_new/s_old)·W'`,
    /// `b'' = s_new·((b' - β_old)/s_old + E_old[x] - E_new[x]) + β_new`.
    /// Rows as in [`fold_rows`](Self::fold_rows). A channel with
    /// `s_old = 0` lost its weights in the first fold: `Error::NotInvertible`,
    /// and nothing is written.
    pub fn refold_rows(
        &self,
        new: &BnState<'_>,
        w: &mut [f32],
        bias: &mut [f32],
    ) -> Result<(), Error> {
        let c = self.channels();
        self.check(c)?;
        new.check(c)?;
        let k = self.row_len(w.len(), bias.len())?;
        if let Some(channel) = (0..c).find(|&ch| self.scale(ch) == 0.0) {
            return Err(Error::NotInvertible { channel });
        }
        for ch in 0..c {
            let (s_old, s_new) = (self.scale(ch), new.scale(ch));
            let ratio = s_new / s_old;
            for v in &mut w[ch * k..(ch + 1) * k] {
                *v *= ratio;
            }
            let unfolded_bias = (bias[ch] - self.beta[ch]) / s_old + self.mean[ch];
            bias[ch] = s_new * (unfolded_bias - new.mean[ch]) + new.beta[ch];
        }
        Ok(())
    }

    /// `k = w.len() / C` after checking `bias.len() == C` and `C | w.len()`.
    fn row_len(&self, w: usize, bias: usize) -> Result<usize, Error> {
        let c = self.channels();
        check_len(Operand::Bias, c, bias)?;
        if c == 0 || w % c != 0 {
            return Err(Error::ShapeMismatch {
                operand: Operand::Weight,
            });
        }
        Ok(w / c)
    }
}

#[cfg(test)]
mod tests;
