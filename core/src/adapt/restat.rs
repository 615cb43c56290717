//! Statistics re-estimation, forward only (paper Alg. 2, steps 8–11, run on
//! the device's own unlabeled data; known as AdaBN): new `E[x]` and
//! `Var[x]` for every BN-folded layer, then a refold.
//!
//! ```text
//! let words = Restat::words_needed(&model)?;        // the plan, in f32 words
//! let mut restat = Restat::new(&model, &mut work[..words])?;
//! while !restat.done() {
//!     for sample in unlabeled {                      // the same samples each pass
//!         engine.input_i8()?.copy_from_slice(sample);
//!         restat.observe(&mut engine, &overlay)?;
//!     }
//!     restat.finish_pass(&model, &mut overlay)?;     // refold this layer
//! }
//! ```
//!
//! # Layer after layer
//! One **pass** per BN-folded layer, in execution order. Pass `k` runs every
//! sample through layers `0..=L_k` only (the overlay applied: the layers
//! before `L_k` already refolded), streams `L_k`'s pre-normalization values
//! into [`ChannelStats`], and at [`finish_pass`](Restat::finish_pass)
//! refolds `L_k` ([`super::refold`]). Why not all layers in one pass: the
//! statistics a layer must be folded with are those of its input *as the
//! adapted network computes it*. After a gain or offset shift the first BN
//! layer absorbs the shift; a later layer's input then has (nearly) its
//! training distribution again, and its old statistics are (nearly) right.
//! Estimated in the same pass, that layer would see the shifted,
//! unnormalized input of the unadapted first layer and be refolded with
//! statistics of a distribution that no longer exists after the first
//! refold. (Alg. 2 avoids this by computing every layer's statistics with
//! the earlier layers normalized, batch-wise, by the training-mode
//! network.) The cost is `Σ_k cost(0..=L_k)` per sample instead of one
//! inference; for networks whose first layer dominates, a few inferences.
//!
//! # Feeding the passes
//! Nothing here requires a pass to see the samples an earlier pass saw: a
//! pass estimates its layer from whatever samples it observes. Two ways to
//! feed it, with the same code:
//! - **every pass the same `n` samples** (the example above): each layer
//!   from `n` samples; a sample costs `Σ_k cost(0..=L_k)`;
//! - **a stream split among the passes** (pass `k` gets its own `n/P`
//!   samples, as a device adapting on its sensor's data receives them):
//!   each sample is observed once, at the cost of one run through layers
//!   `0..=L_k` plus the tap, at most about one inference; each layer from
//!   `n/P` samples. For a gain/offset shift, 64 samples split this way
//!   recover as much as 64 samples per pass (docs/ADAPT.md has the
//!   figures).
//!
//! # The pre-normalization value
//! A folded layer's output before its activation is `y_c = s_c·(x_c −
//! E[x]_c) + β_c`, so `x_c = y_c/s_c + (E[x]_c − β_c/s_c)`, with the layer's
//! *current* parameters (the overlay's, if an earlier adaptation refolded
//! it). int8: `y_c = a_c·acc_c` with `a_c = M_c·t` the value of one
//! accumulator step ([`super::refold`]), so `x_c = acc_c·(a_c/s_c) + (E[x]_c
//! − β_c/s_c)`: the tap ([`crate::kernels::Tap`]) sees `acc_c` before
//! requantization, nothing is lost to rounding or clamps. f32: the engine
//! runs the layer without its activation, shows `y` to the tap, then
//! applies the activation.
//!
//! # Streaming mean and variance
//! For each sample and channel the values (one for a dense layer, `H·W`
//! for a convolution) are summed as `d = x − K_c`, shifted by the running
//! mean `K_c` (for the first sample, the layer's current `E[x]_c`), and
//! merged into [`ChannelStats`] with Chan et al.'s pairwise formula
//! ([`ChannelStats::merge_sums`]; [`super::stats`] says why this rather
//! than Welford's per-value update). The population estimate uses the
//! unbiased `N/(N−1)` variance; a pass needs at least 2 values per channel.
//!
//! # RAM
//! `8·C_max` f32 words ([`Restat::words_needed`], `C_max` the widest BN
//! layer): per channel the running mean and `M2`, the sample's two sums,
//! the two coefficients of `x`, the sums' shift, and a word that with the
//! shift holds the layer's γ and β while [`Restat::finish_pass`] refolds
//! (they are read from the overlay, which the refold writes). Nothing
//! else, and nothing proportional to the width on the stack: the engine's
//! arena and the overlay ([`super::overlay::Overlay::words_needed`]) are
//! the caller's.
//!
//! Between samples and between passes nothing is half-done: a pass
//! interrupted (power, a new command) is simply restarted with
//! [`Restat::new`]; the overlay changes only at [`finish_pass`](Restat::finish_pass),
//! all of a layer's channels at once.

use super::overlay::{bn_index, Overlay};
use super::stats::ChannelStats;
use super::{AdaptError, LayerTap};
use crate::batchnorm::BnState;
use crate::engine::Engine;
use crate::kernels::Tap;
use crate::model::{Kind, Layer, Model};

/// Per-channel f32 words of the workspace.
const PER_CHANNEL: usize = 8;

/// What [`Restat::finish_pass`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PassReport {
    /// The layer refolded.
    pub layer: usize,
    /// Values per channel its statistics were estimated from (samples ×
    /// output pixels).
    pub values: u64,
    /// Samples observed in the pass.
    pub samples: u32,
}

/// Re-estimation in progress (see the [module docs](self)).
#[derive(Debug)]
pub struct Restat<'w> {
    /// BN record index of the current pass.
    pass: usize,
    /// BN records.
    passes: usize,
    /// The current pass's layer and channels.
    layer: usize,
    channels: usize,
    kind: Kind,
    samples: u32,
    /// Values seen of the current sample, per channel (all channels see
    /// the same number).
    seen: u64,
    /// Whether the coefficients are set for this pass.
    ready: bool,
    stats_count: u64,
    work: &'w mut [f32],
}

impl<'w> Restat<'w> {
    /// f32 words of workspace re-estimation needs for `model`: `8·C_max`.
    /// [`AdaptError::NoBn`] for a model without BN records.
    pub fn words_needed(model: &Model<'_>) -> Result<usize, AdaptError> {
        let mut widest = 0;
        for r in model.bn_records() {
            widest = widest.max(r?.gamma.len());
        }
        if widest == 0 {
            return Err(AdaptError::NoBn);
        }
        Ok(widest * PER_CHANNEL)
    }

    /// Start at the first BN-folded layer, with `work` (at least
    /// [`words_needed`](Self::words_needed) f32 words); every BN layer gets
    /// a pass.
    pub fn new(model: &Model<'_>, work: &'w mut [f32]) -> Result<Self, AdaptError> {
        Self::first_layers(model, work, usize::MAX)
    }

    /// As [`new`](Self::new), re-estimating only the first `layers` BN
    /// layers (at least 1) and leaving the later ones as they are: a drift
    /// of the input (gain, offset, contrast) is absorbed by the first BN
    /// layer, and one pass costs less than one inference per sample.
    pub fn first_layers(
        model: &Model<'_>,
        work: &'w mut [f32],
        layers: usize,
    ) -> Result<Self, AdaptError> {
        let need = Self::words_needed(model)?;
        if work.len() < need {
            return Err(AdaptError::BufferTooSmall {
                needed: need * 4,
                actual: work.len() * 4,
            });
        }
        let mut r = Restat {
            pass: 0,
            passes: model.bn_records().count().min(layers.max(1)),
            layer: 0,
            channels: 0,
            kind: model.kind(),
            samples: 0,
            seen: 0,
            ready: false,
            stats_count: 0,
            work,
        };
        r.start_pass(model)?;
        Ok(r)
    }

    /// Pass `k` is the `k`-th BN-folded layer in execution order.
    fn start_pass(&mut self, model: &Model<'_>) -> Result<(), AdaptError> {
        if self.pass < self.passes {
            let layer = (0..model.layer_count())
                .filter(|&i| bn_index(model, i).is_some())
                .nth(self.pass)
                .ok_or(AdaptError::NoBn)?;
            let rec = model.bn_record(bn_index(model, layer).ok_or(AdaptError::NoBn)?)?;
            self.layer = layer;
            self.channels = rec.gamma.len();
        }
        self.samples = 0;
        self.ready = false;
        self.stats_count = 0;
        Ok(())
    }

    /// Whether every BN layer has been re-estimated and refolded.
    pub fn done(&self) -> bool {
        self.pass >= self.passes
    }

    /// The layer of the current pass (`None` when done).
    pub fn layer(&self) -> Option<usize> {
        (!self.done()).then_some(self.layer)
    }

    /// The current pass (0-based) and the number of passes.
    pub fn pass(&self) -> (usize, usize) {
        (self.pass, self.passes)
    }

    /// Samples observed in the current pass.
    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// The workspace split, `C` words each: the running mean and `M2`, the
    /// sample's sums, the coefficient and base of `x`, the sums' shift, and
    /// a spare (β while a pass finishes; the shift then holds γ).
    fn split(&mut self) -> [&mut [f32]; PER_CHANNEL] {
        let c = self.channels;
        let (mean, rest) = self.work.split_at_mut(c);
        let (m2, rest) = rest.split_at_mut(c);
        let (sum, rest) = rest.split_at_mut(c);
        let (sq, rest) = rest.split_at_mut(c);
        let (coef, rest) = rest.split_at_mut(c);
        let (base, rest) = rest.split_at_mut(c);
        let (shift, rest) = rest.split_at_mut(c);
        let (spare, _) = rest.split_at_mut(c);
        [mean, m2, sum, sq, coef, base, shift, spare]
    }

    /// The coefficients of `x_c = v·coef_c + (E_c − β_c/s_c)` from the
    /// layer's current parameters (overlay applied).
    fn prepare(
        &mut self,
        model: &Model<'_>,
        overlay: Option<&Overlay<'_>>,
    ) -> Result<(), AdaptError> {
        let i = self.layer;
        let file = model.bn_record(bn_index(model, i).ok_or(AdaptError::NoBn)?)?;
        let bn: BnState<'_> = match overlay.and_then(|o| o.current_bn(model, i)) {
            Some(s) => s,
            None => file.state(),
        };
        let mut layer = model.layer(i)?;
        if let Some(o) = overlay {
            o.patch(i, &mut layer)?;
        }
        let c = self.channels;
        bn.check(c)?;
        let kind = self.kind;
        let [mean, m2, _, _, coef, base, shift, ..] = self.split();
        for ch in 0..c {
            (coef[ch], base[ch]) = pre_norm(kind, &layer, i, &bn, ch)?;
            shift[ch] = bn.mean[ch];
            mean[ch] = 0.0;
            m2[ch] = 0.0;
        }
        self.ready = true;
        Ok(())
    }

    /// Run the sample the caller wrote into `engine`'s input through the
    /// layers up to the current pass's, with `overlay` applied, and add its
    /// pre-normalization values to the statistics. The engine's output is
    /// then that layer's (not the logits). Errors: [`AdaptError::Phase`]
    /// when every pass is done; a non-finite value (the sample is not
    /// counted).
    pub fn observe(
        &mut self,
        engine: &mut Engine<'_, '_, '_>,
        overlay: Option<&Overlay<'_>>,
    ) -> Result<(), AdaptError> {
        if self.done() {
            return Err(AdaptError::Phase);
        }
        if !self.ready {
            self.prepare(engine.model(), overlay)?;
        }
        let count = self.stats_count;
        {
            // Sums about K: the running mean, or before the first sample
            // the layer's current E[x] (`prepare`).
            let [mean, _, sum, sq, _, _, shift, _] = self.split();
            if count > 0 {
                shift.copy_from_slice(mean);
            }
            sum.fill(0.0);
            sq.fill(0.0);
        }
        self.seen = 0;
        engine.run_adapted(overlay, self.layer + 1, self)?;
        let values = self.seen / self.channels.max(1) as u64;
        let [mean, m2, sum, sq, _, _, shift, _] = self.split();
        let mut stats = ChannelStats::resume(count, mean, m2)?;
        stats.merge_sums(values, shift, sum, sq)?;
        self.stats_count = stats.count();
        self.samples = self.samples.saturating_add(1);
        Ok(())
    }

    /// Estimate the current layer's `E[x]`, `Var[x]` from the pass's
    /// samples, refold it into `overlay` (its γ, β kept) and move to the
    /// next BN layer. Errors (nothing changed, the pass can go on): fewer
    /// than 2 values per channel, a non-finite estimate, a refold error.
    pub fn finish_pass(
        &mut self,
        model: &Model<'_>,
        overlay: &mut Overlay<'_>,
    ) -> Result<PassReport, AdaptError> {
        if self.done() {
            return Err(AdaptError::Phase);
        }
        let i = self.layer;
        let c = self.channels;
        let count = self.stats_count;
        let samples = self.samples;
        let [mean, m2, sum, sq, _, _, gamma, beta] = self.split();
        let stats = ChannelStats::resume(count, mean, m2)?;
        // The estimate into the (free) sample sums.
        stats.estimate(&mut sum[..c], &mut sq[..c])?;
        // γ, β of the layer as it is now, copied into the free shift and
        // spare words: the refold writes the overlay they are read from.
        let cur = overlay.current_bn(model, i).ok_or(AdaptError::NoBn)?;
        if cur.gamma.len() != c || cur.beta.len() != c {
            return Err(AdaptError::BadLayer { layer: i });
        }
        gamma[..c].copy_from_slice(cur.gamma);
        beta[..c].copy_from_slice(cur.beta);
        let new = BnState {
            gamma: &gamma[..c],
            beta: &beta[..c],
            mean: &sum[..c],
            var: &sq[..c],
            eps: cur.eps,
        };
        super::refold::refold(model, i, &new, overlay)?;
        let report = PassReport {
            layer: i,
            values: count,
            samples,
        };
        self.pass += 1;
        self.start_pass(model)?;
        Ok(report)
    }
}

/// The coefficients `(coef, base)` of channel `ch`'s pre-normalization
/// value `x = v·coef + base` of layer `i` (`layer` as the engine runs it,
/// folded with `bn`): `v` the int8 accumulator or the f32 pre-activation,
/// `coef = a/s`, `base = E[x] − β/s` (module docs, "The pre-normalization
/// value"). Shared by re-estimation and tail training.
pub(crate) fn pre_norm(
    kind: Kind,
    layer: &Layer<'_>,
    i: usize,
    bn: &BnState<'_>,
    ch: usize,
) -> Result<(f32, f32), AdaptError> {
    let s = bn.scale(ch);
    if !(s != 0.0 && (1.0 / s).is_finite()) {
        return Err(crate::Error::NotInvertible { channel: ch }.into());
    }
    let step = match kind {
        Kind::F32 => 1.0,
        Kind::Int8 => step_of(layer, ch).ok_or(AdaptError::BadLayer { layer: i })?,
    };
    Ok((step / s, bn.mean[ch] - bn.beta[ch] / s))
}

/// The real value of one accumulator step of channel `ch` of an int8
/// layer: `M_ch·t` (FORMAT.md "requant scale").
pub(crate) fn step_of(l: &Layer<'_>, ch: usize) -> Option<f32> {
    let (m, s) = l.requant?;
    let mv = crate::kernels::requant::multiplier_value(
        fixed::types::I1F31::from_bits(*m.get(ch)?),
        *s.get(ch)?,
    );
    let step = (mv * f64::from(l.quant.requant_scale)) as f32;
    (step > 0.0 && step.is_finite()).then_some(step)
}

impl Tap for Restat<'_> {
    fn acc(&mut self, first: usize, acc: &[i32]) {
        let c = self.channels;
        let [_, _, sum, sq, coef, base, shift, _] = self.split();
        for (k, &a) in acc.iter().enumerate() {
            let ch = first + k;
            if ch >= c {
                break;
            }
            let d = (a as f32 * coef[ch] + base[ch]) - shift[ch];
            sum[ch] += d;
            sq[ch] += d * d;
        }
        self.seen += acc.len().min(c.saturating_sub(first)) as u64;
    }
}

impl LayerTap for Restat<'_> {
    fn wants(&self, i: usize) -> bool {
        i == self.layer
    }

    fn pre_f32(&mut self, y: &[f32]) {
        let c = self.channels.max(1);
        let [_, _, sum, sq, coef, base, shift, _] = self.split();
        for px in y.chunks_exact(c) {
            for (ch, &v) in px.iter().enumerate() {
                let d = (v * coef[ch] + base[ch]) - shift[ch];
                sum[ch] += d;
                sq[ch] += d * d;
            }
        }
        self.seen += (y.len() / c * c) as u64;
    }
}
