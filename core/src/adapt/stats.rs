//! Statistics re-estimation, forward only: the population statistics of a
//! BN layer (paper Alg. 2, steps 8–11) recomputed on the device from new
//! data, so that a folded layer can be refolded
//! ([`BnState::refold_rows`](crate::batchnorm::BnState::refold_rows)).
//!
//! # What is estimated
//! For each channel `c` of a BN-folded layer, the pre-normalization value
//! `x` (the output of `W·u + b` before BN; for a convolution every one of the
//! `N·H·W` positions is a sample of its channel, paper Sec. 3.2) is streamed
//! through [`ChannelStats`], which keeps the count `N`, the mean and
//! `M2 = Σ (x_i - mean)²`. The population estimate is
//! ```text
//! E[x]   = (1/N) Σ_i x_i
//! Var[x] = M2 / (N - 1) = N/(N-1) · (1/N) Σ_i (x_i - E[x])²   (unbiased)
//! ```
//! Alg. 2 (step 10) forms the same quantities from `B` equal-sized
//! mini-batches of `m` values: `E[x] = E_B[μ_B]` and
//! `Var[x] = m/(m-1)·E_B[σ²_B]`. With equal batches the means agree exactly
//! (in exact arithmetic); the variances differ by the spread of the batch
//! means: `M2 = Σ_b m·σ²_b + m·Σ_b (μ_b - E[x])²`, so the pooled estimate
//! here is `Var_Alg2·(B(m-1))/(Bm-1) + m/(Bm-1)·Σ_b (μ_b - E[x])²`. The pooled
//! one is the unbiased estimate of the variance of *one* value, which is what
//! inference normalises; Alg. 2's drops the between-batch term.
//!
//! A folded layer computes `y = s·(x - E_old[x]) + β` with
//! `s = γ / sqrt(Var_old[x] + ε)`, so [`ChannelStats::update_folded`] recovers
//! `x = (y - β)/s + E_old[x]` per element (needs `s ≠ 0`).
//!
//! # Algorithm: batch two-pass, merged by Chan et al.'s pairwise formula
//! Each call to [`ChannelStats::update`] takes one batch of `n_b` values per
//! channel, computes its mean and `M2_b` in two passes over the batch, and
//! merges them into the running `(n_a, mean_a, M2_a)` with the pairwise
//! update of Chan, Golub & LeVeque ("Updating formulae and a pairwise
//! algorithm for computing sample variances", Stanford CS report
//! STAN-CS-79-773, 1979; eq. 1.5b of their 1983 *American Statistician*
//! paper "Algorithms for computing the sample variance"):
//! ```text
//! δ      = mean_b - mean_a
//! n      = n_a + n_b
//! mean   = mean_a + δ·n_b/n
//! M2     = M2_a + M2_b + δ²·n_a·n_b/n
//! ```
//! The batch is summed *shifted* by the running mean (`d_i = x_i - mean_a`;
//! the first batch is shifted by its first value), so `δ` is the batch mean
//! of `d` itself and is never formed as a difference of two large numbers.
//! For data whose mean is large against its spread, `x_i` and `mean_a` are
//! within a factor of two of each other and `x_i - mean_a` is exact
//! (Sterbenz), so nothing of the spread is lost before the sums.
//!
//! Why this rather than Welford's per-element update (Welford 1962, the
//! `n_b = 1` case of the same formula):
//! - **Fewer divisions.** Welford divides by the running count at every
//!   element; here there are three divisions per batch and channel, and the
//!   inner loops are an add and a multiply-add. On a Cortex-M4F `vdiv.f32`
//!   takes 14 cycles against 1 for `vmla`; on a Cortex-M0 every float
//!   operation is soft-float and a division costs several times a multiply.
//! - **Each batch's statistics are two-pass.** The second pass sums squares
//!   about the batch's own mean, with no cancellation; its relative error is
//!   at most about `n_b·u` (`u = 2^-24`), in practice `sqrt(n_b)·u`.
//! - **The merge is stable when counts are large.** All three terms of `M2`
//!   are non-negative, so there is no cancellation; `n_b/n` and
//!   `n_a·n_b/n` are computed as ratios in f32, not as products of counts.
//!   Welford's per-element mean update `mean += d/n` adds an increment
//!   `1/n` times smaller than the spread, and loses it to rounding once `n`
//!   is large; a batch's increment is `n_b` times larger.
//! - **Batch size 1 still works:** it reduces to Welford.
//!
//! Storage and arithmetic are f32 only (no f64, which Cortex-M4F and M0 do
//! in software, tens of cycles per operation). Error: the stored mean is
//! rounded at each merge (by up to `u·|mean|`), and the next merge measures
//! `δ` from the rounded mean, so the `δ²` term carries that rounding. With
//! `κ = |mean|/σ` (the condition number of the variance) the relative error
//! of `M2` is `O(κ·u)`, the order Chan, Golub & LeVeque give for updating
//! algorithms, and smaller the larger the batches (fewer roundings of the
//! mean). Measured against an f64 two-pass reference at `κ = 1e5, 1e6`:
//! at most `2.2·κ·u` with batches of 1 (Welford), `0.5·κ·u` with 32,
//! `0.15·κ·u` with 256. For BN pre-activations `κ` is rarely above `1e3`
//! (relative error `< 1e-4`); at `κ = 1e6` f32 resolves `x` itself only to
//! `0.06σ`. A third per-channel buffer compensating the mean's rounding
//! (Kahan) would remove the `κ` term; it is not kept.
//!
//! # Interruption and errors
//! The state `(count, mean, M2)` is consistent after every call, so
//! estimation can stop after any batch, be read with
//! [`ChannelStats::estimate`], persisted with [`ChannelStats::count`] and the
//! caller's two buffers, resumed with [`ChannelStats::resume`], and continued.
//! Every call validates its inputs (lengths, finiteness, count overflow)
//! before writing anything: an `Err` leaves the state and outputs unchanged.
//! Finite values so large that their squared deviations overflow f32
//! (`|x - mean| ≳ 1e19`) make `M2` infinite; [`ChannelStats::estimate`] then
//! reports `NonFinite` rather than returning an infinite variance.
//!
//! # Compared with [`RunningStats`](crate::batchnorm::RunningStats)
//! `RunningStats` is what BN training updates: an exponential moving average
//! (momentum) of batch means and unbiased batch variances, which forgets old
//! batches and has no count. `ChannelStats` is an exact, equally weighted
//! estimate over every value seen since the last reset, with its count.

use crate::batchnorm::BnState;
use crate::error::{check_len, Error, Operand, Param};

/// Streaming per-channel count, mean and sum of squared deviations `M2`
/// over caller buffers (length `C` each, `C >= 1`).
///
/// The count is shared by all channels: every batch has the same number of
/// values in each channel.
#[derive(Debug)]
pub struct ChannelStats<'a> {
    count: u64,
    mean: &'a mut [f32],
    m2: &'a mut [f32],
}

impl<'a> ChannelStats<'a> {
    /// An empty accumulator over `C = mean.len()` channels; zeroes both
    /// buffers. `mean` and `m2` must have the same length `C >= 1`.
    ///
    /// Errors: `InvalidParam(Dimension)` for `C = 0`, `LengthMismatch`
    /// (operand `Variance`) when `m2.len() != C`.
    pub fn new(mean: &'a mut [f32], m2: &'a mut [f32]) -> Result<Self, Error> {
        check_channels(mean.len(), m2.len())?;
        mean.fill(0.0);
        m2.fill(0.0);
        Ok(ChannelStats { count: 0, mean, m2 })
    }

    /// Continue an estimate saved as `count` and the contents of `mean` and
    /// `m2` (for example after a reset of the device). Checks the lengths as
    /// [`new`](Self::new) does, that every value is finite and `m2 >= 0`
    /// (`NonFinite`, `InvalidParam(Variance)`), and that `count = 0` comes
    /// with zeroed buffers (`InvalidParam(Variance)` otherwise).
    pub fn resume(count: u64, mean: &'a mut [f32], m2: &'a mut [f32]) -> Result<Self, Error> {
        check_channels(mean.len(), m2.len())?;
        if mean.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                operand: Operand::Mean,
            });
        }
        if m2.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                operand: Operand::Variance,
            });
        }
        if m2.iter().any(|&v| v < 0.0)
            || (count == 0 && mean.iter().chain(m2.iter()).any(|&v| v != 0.0))
        {
            return Err(Error::InvalidParam(Param::Variance));
        }
        Ok(ChannelStats { count, mean, m2 })
    }

    /// Channels `C`.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// Values seen per channel since the last reset (`N`).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The running mean per channel (all 0 while the count is 0).
    pub fn mean(&self) -> &[f32] {
        self.mean
    }

    /// The running `M2 = Σ (x_i - mean)²` per channel.
    pub fn m2(&self) -> &[f32] {
        self.m2
    }

    /// Forget everything: count 0, buffers zeroed.
    pub fn reset(&mut self) {
        self.count = 0;
        self.mean.fill(0.0);
        self.m2.fill(0.0);
    }

    /// Add one batch of pre-normalization values, channels-last `[n, C]`
    /// (`x.len() = n·C`; for a conv layer `n = N·H·W` positions). `n = 0` is
    /// a no-op.
    ///
    /// Errors (nothing written): `ShapeMismatch { Input }` when `x.len()` is
    /// not a multiple of `C`; `NonFinite { Input }` for a NaN or infinite
    /// value; `Overflow` when the count would overflow `u64`.
    pub fn update(&mut self, x: &[f32]) -> Result<(), Error> {
        self.merge(x, |_| (1.0, 0.0, 0.0))
    }

    /// Add one batch of outputs `y` of a layer folded with `folded_with`
    /// (channels-last `[n, C]`, the value before the activation), recovering
    /// the statistics of the pre-normalization value `x = (y - β)/s + E_old[x]`,
    /// `s = γ/sqrt(Var_old[x] + ε)`.
    ///
    /// Errors: those of
    /// [`BnState::check`](crate::batchnorm::BnState::check) against `C`,
    /// `NotInvertible` for a channel with `s = 0` (or `1/s` overflowing),
    /// then those of [`update`](Self::update). Nothing is written on `Err`.
    pub fn update_folded(&mut self, y: &[f32], folded_with: &BnState<'_>) -> Result<(), Error> {
        let c = self.channels();
        folded_with.check(c)?;
        if let Some(channel) = (0..c).find(|&ch| !(1.0 / folded_with.scale(ch)).is_finite()) {
            return Err(Error::NotInvertible { channel });
        }
        let s = folded_with;
        self.merge(y, |ch| (s.scale(ch), s.mean[ch], s.beta[ch]))
    }

    /// The batch two-pass plus pairwise merge of the module doc. The batch
    /// `y` is in the coordinates of an affine map `y = s·(x - e) + β` given per
    /// channel by `map(channel) = (s, e, β)` (the identity `(1, 0, 0)` for raw
    /// `x`): its shifted mean and `M2` are taken in `y` and carried back to
    /// `x` exactly as `δ_x = δ_y/s`, `M2_x = M2_y/s²`, so a folded layer's
    /// output needs one square root and division per channel, not per value.
    fn merge(&mut self, y: &[f32], map: impl Fn(usize) -> (f32, f32, f32)) -> Result<(), Error> {
        let c = self.channels();
        if y.len() % c != 0 {
            return Err(Error::ShapeMismatch {
                operand: Operand::Input,
            });
        }
        let rows = y.len() / c;
        if rows == 0 {
            return Ok(());
        }
        let n_a = self.count;
        let n = n_a.checked_add(rows as u64).ok_or(Error::Overflow)?;
        if y.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                operand: Operand::Input,
            });
        }
        let n_b = rows as f32;
        let inv_nb = 1.0 / n_b;
        // n_b/n and n_a·n_b/n as ratios, so that no product of counts is formed.
        let frac_b = n_b / n as f32;
        let cross = n_a as f32 * frac_b;
        for ch in 0..c {
            let (s, e, beta) = map(ch);
            // Strided over the rows of one channel: no scratch, and on a
            // cache-less microcontroller no slower than a contiguous walk.
            let column = || y.iter().skip(ch).step_by(c);
            // The running mean in y coordinates (exact for the identity), or
            // the batch's first value when nothing has been seen yet.
            let shift = if n_a == 0 {
                y[ch]
            } else {
                s * (self.mean[ch] - e) + beta
            };
            // Pass 1: mean of d = y - shift.
            let delta_y = column().map(|&v| v - shift).sum::<f32>() * inv_nb;
            // Pass 2: M2_b about the batch mean.
            let m2_y: f32 = column()
                .map(|&v| {
                    let d = (v - shift) - delta_y;
                    d * d
                })
                .sum();
            let delta = delta_y / s;
            let m2_b = m2_y / (s * s);
            if n_a == 0 {
                // frac_b = 1, cross = 0, M2_a = 0.
                self.mean[ch] = ((shift - beta) / s + e) + delta;
                self.m2[ch] = m2_b;
            } else {
                // δ = mean_b - mean_a, since the shift is mean_a.
                self.mean[ch] += delta * frac_b;
                self.m2[ch] += m2_b + delta * delta * cross;
            }
        }
        self.count = n;
        Ok(())
    }

    /// Merge a batch given by its shifted sums (the streaming form, when
    /// the values themselves are never stored: [`super::restat`] sees a
    /// layer's accumulators one output pixel at a time): per channel `ch`,
    /// `n_b` values `x_i` with `Σ d_i = sum[ch]`, `Σ d_i² = sum_sq[ch]`,
    /// `d_i = x_i - shift[ch]`. The batch's mean is `shift + Σd/n_b` and its
    /// `M2 = Σd² - (Σd)²/n_b` (one pass about the shift: exact when the
    /// shift is the batch's mean, with a relative error of about
    /// `((mean - shift)/σ)²·u` otherwise, which is why `restat` shifts by
    /// the running mean), merged with Chan et al.'s formula as in
    /// [`update`](Self::update). For `n_b = 1`, `M2` is exactly 0.
    ///
    /// Errors (nothing changed): lengths not the channel count, a
    /// non-finite sum or shift, a count overflow.
    pub fn merge_sums(
        &mut self,
        n_b: u64,
        shift: &[f32],
        sum: &[f32],
        sum_sq: &[f32],
    ) -> Result<(), Error> {
        let c = self.channels();
        check_len(Operand::Mean, c, shift.len())?;
        check_len(Operand::Input, c, sum.len())?;
        check_len(Operand::Variance, c, sum_sq.len())?;
        if n_b == 0 {
            return Ok(());
        }
        let all = shift.iter().chain(sum).chain(sum_sq);
        if all.clone().any(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                operand: Operand::Input,
            });
        }
        let n_a = self.count;
        let n = n_a.checked_add(n_b).ok_or(Error::Overflow)?;
        let nb = n_b as f32;
        let frac_b = nb / n as f32;
        let cross = n_a as f32 * frac_b;
        for ch in 0..c {
            let d_mean = sum[ch] / nb;
            let m2_b = (sum_sq[ch] - sum[ch] * d_mean).max(0.0);
            if n_a == 0 {
                self.mean[ch] = shift[ch] + d_mean;
                self.m2[ch] = m2_b;
            } else {
                let delta = (shift[ch] - self.mean[ch]) + d_mean;
                self.mean[ch] += delta * frac_b;
                self.m2[ch] += m2_b + delta * delta * cross;
            }
        }
        self.count = n;
        Ok(())
    }
    /// The population estimate (Alg. 2 with pooled samples):
    /// `mean_out = E[x]`, `var_out = M2/(N-1)` (unbiased), per channel.
    ///
    /// Errors (nothing written): `LengthMismatch` when an output is not `C`
    /// long; `BatchTooSmall { needed: 2, actual: N }` for `N <= 1` (one value
    /// has no unbiased variance); `NonFinite { Variance }` when `M2/(N-1)`
    /// overflowed f32.
    pub fn estimate(&self, mean_out: &mut [f32], var_out: &mut [f32]) -> Result<(), Error> {
        let c = self.channels();
        check_len(Operand::Mean, c, mean_out.len())?;
        check_len(Operand::Variance, c, var_out.len())?;
        if self.count < 2 {
            return Err(Error::BatchTooSmall {
                needed: 2,
                actual: usize::try_from(self.count).unwrap_or(usize::MAX),
            });
        }
        // Divided, not multiplied by a reciprocal: C divisions per estimate,
        // and `Var[x]` is M2/(N-1) correctly rounded.
        let dof = (self.count - 1) as f32;
        if self.m2.iter().any(|&m2| !(m2 / dof).is_finite()) {
            return Err(Error::NonFinite {
                operand: Operand::Variance,
            });
        }
        mean_out.copy_from_slice(self.mean);
        for (v, &m2) in var_out.iter_mut().zip(self.m2.iter()) {
            *v = m2 / dof;
        }
        Ok(())
    }

    /// A new BN state with `old`'s γ, β and ε and the re-estimated `E[x]`,
    /// `Var[x]` written into `mean_out` and `var_out` (as
    /// [`estimate`](Self::estimate)); pass it with `old` to
    /// [`BnState::refold_rows`](crate::batchnorm::BnState::refold_rows).
    ///
    /// Errors (nothing written): those of `old.check(C)`, then those of
    /// [`estimate`](Self::estimate).
    pub fn into_bn<'s>(
        &self,
        old: &BnState<'s>,
        mean_out: &'s mut [f32],
        var_out: &'s mut [f32],
    ) -> Result<BnState<'s>, Error> {
        old.check(self.channels())?;
        self.estimate(mean_out, var_out)?;
        Ok(BnState {
            gamma: old.gamma,
            beta: old.beta,
            mean: mean_out,
            var: var_out,
            eps: old.eps,
        })
    }
}

fn check_channels(mean: usize, m2: usize) -> Result<(), Error> {
    if mean == 0 {
        return Err(Error::InvalidParam(Param::Dimension));
    }
    check_len(Operand::Variance, mean, m2)
}

#[cfg(test)]
mod tests;
