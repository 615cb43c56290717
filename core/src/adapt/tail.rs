//! Tail training on labeled samples: SGD (plain by default, momentum on
//! request) on the last dense layer and, optionally, on γ and β of the BN layer that feeds it, through
//! the frozen backbone; then a commit into the overlay.
//!
//! ```text
//! let words = Tail::words_needed(&model, &cfg)?;        // the plan, f32 words
//! let mut tail = Tail::new(&model, Some(&overlay), cfg, &mut work[..words])?;
//! for (sample, label) in labeled {                       // epochs as the caller likes
//!     engine.input_i8()?.copy_from_slice(sample);
//!     let loss = tail.step(&mut engine, Some(&overlay), label)?;
//! }
//! tail.commit(&model, &mut overlay)?;                    // refold + requantize
//! ```
//!
//! # What is trained, and the math
//! The **tail** is the last layer (dense, no activation: the logits) with
//! weights `W [K, D]` and bias `b [K]`, and with `cfg.train_bn` also γ, β of
//! the BN folded into the layer before it, which must feed the dense layer
//! directly (its output, `[H, W, C]` flattened, is the dense input; its BN
//! channel of element `j` is `j mod C`). The backbone (every layer before)
//! is frozen and runs as the device runs it (int8 or f32, overlay applied).
//! One step on a sample with label `t`:
//! ```text
//! x_j  = pre-normalization value of the BN layer (from its int8
//!        accumulators or f32 pre-activations, as in `restat`)      train_bn
//! z_j  = γ_c·(x_j − E[x]_c)/sqrt(Var[x]_c + ε) + β_c,  h_j = f(z_j)   train_bn
//! h_j  = the dense layer's input, dequantized                      otherwise
//! o    = W·h + b,   p = softmax(o),   L = −ln p_t                  (paper: softmax cross-entropy)
//! ∂L/∂o = p − e_t,  ∂L/∂W = (p − e_t)·hᵀ,  ∂L/∂b = p − e_t,  ∂L/∂h = Wᵀ(p − e_t)
//! ∂L/∂z_j = ∂L/∂h_j · f'(z_j),  ∂L/∂γ_c = Σ_{j∈c} ∂L/∂z_j·x̂_j,  ∂L/∂β_c = Σ_{j∈c} ∂L/∂z_j
//! ```
//! (paper Sec. 3, the BN backward for γ, β with the population statistics
//! fixed, as in inference). Each parameter is updated by core's
//! [`Sgd`] (no weight decay; momentum `cfg.momentum`, 0 by default), one
//! sample at a time: a batch of 1, so that only one sample's activations
//! are kept.
//!
//! The BN layer's per-channel numbers (`E[x]`, `1/sqrt(Var[x] + ε)`, the
//! coefficients of `x`, `γ₀`) are not kept: each step computes them from
//! the model and the overlay as the backbone runs (a few operations per
//! channel against the `K·D` of the dense layer), so a step after a commit
//! uses the refolded layer's.
//!
//! # γ keeps its sign
//! A γ that crossed zero would need the int8 row negated ([`super::refold`]
//! forbids it). After each step every trained γ is projected onto
//! `sign(γ₀)·max(|γ|, γ_MIN_FRACTION·|γ₀|)` (`γ₀` the file's γ, whose sign
//! every refold keeps): it keeps its sign and at least 1 % of the file's
//! magnitude.
//!
//! # Commit
//! [`Tail::commit`] writes the trained parameters into the overlay: with
//! `train_bn`, the BN layer is refolded with the new γ, β (and its current
//! `E[x]`, `Var[x]`); the dense layer's f32 weights and bias are written as
//! they are (f32 models) or quantized as the exporter quantizes
//! ([`quantize_row`]: symmetric per-row weights, multiplier, bias with the
//! input zero point folded in), with the logits' quantization re-chosen from
//! the range of the logits seen during training ([`range_params`]), since
//! trained logits may outgrow the calibrated range.
//!
//! # RAM
//! [`Tail::words_needed`] f32 words, with `m` = 1 with momentum and 0
//! without (`cfg.momentum == 0`: plain SGD keeps no velocities):
//! `(1 + m)·(K·D + K)` (the f32 master weights and bias, and their
//! velocities), `2·D + K` (the input, a gradient row, the logits), and with
//! `train_bn` `2·D + (2 + 2·m)·C` (the normalized pre-normalization values
//! `x̂`, the input's gradient; γ, β and their velocities). MNIST
//! `paper-mlp` (`K` = 10, `D` = `C` = 100) with γ, β: 6,480 bytes without
//! momentum, 11,320 with.

use bytemuck::cast_slice_mut;
use fixed::types::I1F31;

use super::overlay::{bn_index, Overlay, Part, ACTIVE, HAS_WEIGHTS};
use super::restat::pre_norm;
use super::{AdaptError, LayerTap};
use crate::batchnorm::BnState;
use crate::engine::{Engine, Output};
use crate::kernels::pack::split_pair_word;
use crate::kernels::requant::{multiplier_value, quantize_row, range_params};
use crate::kernels::Tap;
use crate::layers::Activation;
use crate::model::layout::bias_limit;
use crate::model::{Data, Kind, Layer, Model, Op, QuantOut};
use crate::optim::Sgd;

/// Smallest fraction of its starting magnitude a trained γ keeps.
pub const GAMMA_MIN_FRACTION: f32 = 0.01;

/// Tail training settings.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TailConfig {
    /// Learning rate, finite and > 0.
    pub lr: f32,
    /// Momentum in `[0, 1)`. 0 (the default): plain SGD, and no velocity
    /// buffers in the workspace (module docs, "RAM").
    pub momentum: f32,
    /// Also train γ, β of the BN layer feeding the dense layer.
    pub train_bn: bool,
}

impl Default for TailConfig {
    /// Plain SGD (no velocity buffers) with learning rate 0.1: the step of
    /// momentum 0.9 at 0.01 (`lr/(1 − momentum)`), which it matches on the
    /// drift scenario (docs/ADAPT.md), in less RAM; γ, β trained too.
    fn default() -> Self {
        TailConfig {
            lr: 0.1,
            momentum: 0.0,
            train_bn: true,
        }
    }
}

/// The tail's geometry for a model: the dense layer, its inputs and
/// outputs, and the BN layer feeding it (when trained).
#[derive(Debug, Clone, Copy)]
struct Shape {
    dense: usize,
    inputs: usize,
    outputs: usize,
    /// The BN layer and its channels.
    bn: Option<(usize, usize)>,
    /// Velocities kept (momentum ≠ 0).
    momentum: bool,
}

fn shape(model: &Model<'_>, cfg: &TailConfig) -> Result<Shape, AdaptError> {
    let dense = model
        .layer_count()
        .checked_sub(1)
        .ok_or(AdaptError::NoTail)?;
    let l = model.layer(dense)?;
    let Op::Dense(d) = l.op else {
        return Err(AdaptError::NoTail);
    };
    if l.activation.is_some() || dense == 0 {
        return Err(AdaptError::NoTail);
    }
    let bn = if cfg.train_bn {
        let f = dense - 1;
        let fl = model.layer(f)?;
        if bn_index(model, f).is_none() || !fl.op.is_weighted() {
            return Err(AdaptError::NoTail);
        }
        Some((f, fl.op.out_channels()))
    } else {
        None
    };
    Ok(Shape {
        dense,
        inputs: d.inputs,
        outputs: d.outputs,
        bn,
        momentum: cfg.momentum != 0.0,
    })
}

/// The first `n` of `v` (all of it if shorter: never with a workspace
/// sized by `words`) and the rest.
fn split(v: &mut [f32], n: usize) -> (&mut [f32], &mut [f32]) {
    let n = n.min(v.len());
    v.split_at_mut(n)
}

/// Tail training in progress (see the [module docs](self)).
#[derive(Debug)]
pub struct Tail<'w> {
    shape: Shape,
    kind: Kind,
    sgd: Sgd,
    /// The BN layer's activation (train_bn).
    act: Option<Activation>,
    steps: u32,
    lo: f32,
    hi: f32,
    /// The pixel the tap is at (train_bn, int8).
    pixel: usize,
    work: &'w mut [f32],
}

/// The workspace's parts, in order (the velocities empty without
/// momentum, the BN parts empty without `train_bn`).
struct Parts<'a> {
    w: &'a mut [f32],
    b: &'a mut [f32],
    vw: &'a mut [f32],
    vb: &'a mut [f32],
    h: &'a mut [f32],
    g: &'a mut [f32],
    o: &'a mut [f32],
    /// ∂L/∂h, then ∂L/∂z.
    dh: &'a mut [f32],
    /// The BN layer's pre-normalization values as the tap writes them
    /// (accumulators or f32 pre-activations), then `x̂`.
    x: &'a mut [f32],
    gamma: &'a mut [f32],
    beta: &'a mut [f32],
    vg: &'a mut [f32],
    vbeta: &'a mut [f32],
}

/// The module docs' "RAM" formula.
fn words(s: &Shape) -> Option<usize> {
    let (k, d) = (s.outputs, s.inputs);
    let m = usize::from(s.momentum);
    let dense = k.checked_mul(d)?.checked_add(k)?.checked_mul(1 + m)?;
    let main = dense.checked_add(d.checked_mul(2)?.checked_add(k)?)?;
    let bn = match s.bn {
        Some((_, c)) => d.checked_mul(2)?.checked_add(c.checked_mul(2 + 2 * m)?)?,
        None => 0,
    };
    main.checked_add(bn)
}

/// Layer `f` as the engine runs it (overlay applied).
fn bn_layer<'s>(
    model: &'s Model<'_>,
    overlay: Option<&'s Overlay<'_>>,
    f: usize,
) -> Result<Layer<'s>, AdaptError> {
    let mut fl = model.layer(f)?;
    if let Some(o) = overlay {
        o.patch(f, &mut fl)?;
    }
    Ok(fl)
}

/// Layer `f`'s BN state as it is folded now (the overlay's, else the
/// file's).
fn current_bn<'s>(
    model: &'s Model<'_>,
    overlay: Option<&'s Overlay<'_>>,
    f: usize,
) -> Result<BnState<'s>, AdaptError> {
    match overlay.and_then(|o| o.current_bn(model, f)) {
        Some(s) => Ok(s),
        None => {
            let r = model.bn_record(bn_index(model, f).ok_or(AdaptError::NoBn)?)?;
            Ok(BnState {
                gamma: r.gamma,
                beta: r.beta,
                mean: r.mean,
                var: r.var,
                eps: r.eps,
            })
        }
    }
}

impl<'w> Tail<'w> {
    /// f32 words of workspace tail training needs (module docs, "RAM").
    /// [`AdaptError::NoTail`] when the model has no dense last layer
    /// without activation, or (`train_bn`) no BN-folded weighted layer
    /// right before it.
    pub fn words_needed(model: &Model<'_>, cfg: &TailConfig) -> Result<usize, AdaptError> {
        words(&shape(model, cfg)?).ok_or(AdaptError::TooLarge)
    }

    fn parts(&mut self) -> Parts<'_> {
        let s = self.shape;
        let (k, d) = (s.outputs, s.inputs);
        let c = s.bn.map_or(0, |(_, c)| c);
        let xd = if s.bn.is_some() { d } else { 0 };
        let (vk, vc) = if s.momentum { (k, c) } else { (0, 0) };
        // `words` sized the workspace for exactly these parts.
        let rest = &mut *self.work;
        let (w, rest) = split(rest, k * d);
        let (b, rest) = split(rest, k);
        let (vw, rest) = split(rest, vk * d);
        let (vb, rest) = split(rest, vk);
        let (h, rest) = split(rest, d);
        let (g, rest) = split(rest, d);
        let (o, rest) = split(rest, k);
        let (dh, rest) = split(rest, xd);
        let (x, rest) = split(rest, xd);
        let (gamma, rest) = split(rest, c);
        let (beta, rest) = split(rest, c);
        let (vg, rest) = split(rest, vc);
        let (vbeta, _) = split(rest, vc);
        Parts {
            w,
            b,
            vw,
            vb,
            h,
            g,
            o,
            dh,
            x,
            gamma,
            beta,
            vg,
            vbeta,
        }
    }

    /// Start from the model as it runs now (`overlay` applied): the dense
    /// layer's weights and bias as f32 (dequantized for int8), γ, β of the
    /// BN layer; velocities zero. Errors: no tail (see
    /// [`words_needed`](Self::words_needed)), `work` too small, an invalid
    /// configuration.
    pub fn new(
        model: &Model<'_>,
        overlay: Option<&Overlay<'_>>,
        cfg: TailConfig,
        work: &'w mut [f32],
    ) -> Result<Self, AdaptError> {
        let shape = shape(model, &cfg)?;
        let need = words(&shape).ok_or(AdaptError::TooLarge)?;
        if work.len() < need {
            return Err(AdaptError::BufferTooSmall {
                needed: need * 4,
                actual: work.len() * 4,
            });
        }
        let sgd = Sgd {
            lr: cfg.lr,
            momentum: cfg.momentum,
            weight_decay: 0.0,
            nesterov: false,
        };
        sgd.validate()?;
        if cfg.lr <= 0.0 {
            return Err(crate::Error::InvalidParam(crate::Param::LearningRate).into());
        }
        let mut dense = model.layer(shape.dense)?;
        if let Some(o) = overlay {
            o.patch(shape.dense, &mut dense)?;
        }
        let feature = model.layer(shape.dense - 1)?;
        let mut t = Tail {
            shape,
            kind: model.kind(),
            sgd,
            act: None,
            steps: 0,
            lo: f32::INFINITY,
            hi: f32::NEG_INFINITY,
            pixel: 0,
            work: &mut work[..need],
        };
        t.work.fill(0.0);
        let s_in = feature.quant.scale;
        let zp_in = feature.quant.zero_point;
        let p = t.parts();
        load_dense(&dense, shape, (s_in, zp_in), p.w, p.b)?;
        if let Some((f, c)) = shape.bn {
            let fl = bn_layer(model, overlay, f)?;
            let cur = current_bn(model, overlay, f)?;
            cur.check(c)?;
            // Every channel invertible now, not at the first step.
            for ch in 0..c {
                pre_norm(t.kind, &fl, f, &cur, ch)?;
            }
            t.act = fl.activation;
            let p = t.parts();
            p.gamma.copy_from_slice(cur.gamma);
            p.beta.copy_from_slice(cur.beta);
        }
        Ok(t)
    }

    /// Steps taken.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The trained parameters as they are now: `W [K, D]` row-major, `b
    /// [K]`, and with `train_bn` γ, β `[C]` (empty otherwise). Mutable, for
    /// tests (finite differences) and tools; [`step`](Self::step) and
    /// [`commit`](Self::commit) use whatever they hold.
    pub fn params_mut(&mut self) -> TailParams<'_> {
        let p = self.parts();
        TailParams {
            w: p.w,
            b: p.b,
            gamma: p.gamma,
            beta: p.beta,
        }
    }

    /// The loss of the sample in `engine`'s input with class `label` at
    /// the current parameters, without changing them.
    pub fn loss(
        &mut self,
        engine: &mut Engine<'_, '_, '_>,
        overlay: Option<&Overlay<'_>>,
        label: usize,
    ) -> Result<f32, AdaptError> {
        self.forward(engine, overlay, label).map(|(loss, _)| loss)
    }

    /// Forward through the backbone and the tail: the loss, and `o` left
    /// holding `∂L/∂o = p − e_t`; returns the logits' range too.
    fn forward(
        &mut self,
        engine: &mut Engine<'_, '_, '_>,
        overlay: Option<&Overlay<'_>>,
        label: usize,
    ) -> Result<(f32, (f32, f32)), AdaptError> {
        let s = self.shape;
        if label >= s.outputs {
            return Err(AdaptError::BadSample);
        }
        // Backbone: layers 0..dense (the BN layer tapped when trained).
        let model = engine.model();
        self.pixel = 0;
        let out = engine.run_adapted(overlay, s.dense, self)?;
        match (s.bn.is_some(), out) {
            (
                false,
                Output::I8 {
                    values,
                    scale,
                    zero_point,
                },
            ) => {
                let h = self.parts().h;
                for (h, &q) in h.iter_mut().zip(values) {
                    *h = scale * (i32::from(q) - zero_point) as f32;
                }
            }
            (false, Output::F32(v)) => {
                let h = self.parts().h;
                if h.len() != v.len() {
                    return Err(AdaptError::BadLayer { layer: s.dense });
                }
                h.copy_from_slice(v);
            }
            (true, _) => {}
        }
        let act = self.act;
        let kind = self.kind;
        let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
        let p = self.parts();
        // The BN layer in f32 from its pre-normalization values x = v·coef
        // + base (v as the tap wrote it), with the layer's current
        // parameters; x̂ kept for the backward pass.
        if let Some((f, c)) = s.bn {
            let fl = bn_layer(model, overlay, f)?;
            let cur = current_bn(model, overlay, f)?;
            cur.check(c)?;
            for ch in 0..c {
                let (coef, base) = pre_norm(kind, &fl, f, &cur, ch)?;
                let mean = cur.mean[ch];
                let istd = 1.0 / libm::sqrtf(cur.var[ch] + cur.eps);
                let (gamma, beta) = (p.gamma[ch], p.beta[ch]);
                let xs = p.x.iter_mut().skip(ch).step_by(c);
                let hs = p.h.iter_mut().skip(ch).step_by(c);
                for (x, h) in xs.zip(hs) {
                    let xh = (*x * coef + base - mean) * istd;
                    *x = xh;
                    let z = gamma * xh + beta;
                    *h = act.map_or(z, |a| a.apply(z));
                }
            }
        }
        // Logits, softmax cross-entropy.
        for (k, o) in p.o.iter_mut().enumerate() {
            let row = &p.w[k * s.inputs..(k + 1) * s.inputs];
            *o = p.b[k] + row.iter().zip(p.h.iter()).map(|(a, b)| a * b).sum::<f32>();
        }
        for &o in p.o.iter() {
            lo = lo.min(o);
            hi = hi.max(o);
        }
        let mut probs = [0f32; MAX_CLASSES];
        let probs = probs.get_mut(..s.outputs).ok_or(AdaptError::TooLarge)?;
        crate::layers::loss::softmax(p.o, s.outputs, probs)?;
        let loss = -libm::logf(probs[label].max(f32::MIN_POSITIVE));
        if !loss.is_finite() {
            return Err(crate::Error::NonFinite {
                operand: crate::Operand::Input,
            }
            .into());
        }
        for (k, o) in p.o.iter_mut().enumerate() {
            *o = probs[k] - if k == label { 1.0 } else { 0.0 };
        }
        Ok((loss, (lo, hi)))
    }

    /// One SGD step on the sample the caller wrote into `engine`'s input,
    /// with class `label`; returns the sample's loss before the step.
    /// `overlay` must be the one the tail was started with (the backbone
    /// runs with it). Errors: a label beyond the classes, a non-finite loss
    /// (nothing is updated).
    pub fn step(
        &mut self,
        engine: &mut Engine<'_, '_, '_>,
        overlay: Option<&Overlay<'_>>,
        label: usize,
    ) -> Result<f32, AdaptError> {
        let model = engine.model();
        let (loss, (lo, hi)) = self.forward(engine, overlay, label)?;
        let s = self.shape;
        let act = self.act;
        let sgd = self.sgd;
        let (lo, hi) = (self.lo.min(lo), self.hi.max(hi));
        // γ₀: the file's γ.
        let g0: &[f32] = match s.bn {
            Some((f, _)) => {
                model
                    .bn_record(bn_index(model, f).ok_or(AdaptError::NoBn)?)?
                    .gamma
            }
            None => &[],
        };
        let p = self.parts();
        // ∂L/∂h = Wᵀ·∂L/∂o (before W changes; only γ, β need it).
        if s.bn.is_some() {
            p.dh.fill(0.0);
            for k in 0..s.outputs {
                let row = &p.w[k * s.inputs..(k + 1) * s.inputs];
                for (d, &w) in p.dh.iter_mut().zip(row) {
                    *d += w * p.o[k];
                }
            }
        }
        // W, b (no velocities without momentum: `Sgd` then ignores them).
        for k in 0..s.outputs {
            for (g, &h) in p.g.iter_mut().zip(p.h.iter()) {
                *g = p.o[k] * h;
            }
            let r = k * s.inputs..(k + 1) * s.inputs;
            let v = p.vw.get_mut(r.clone()).unwrap_or_default();
            sgd.step(&mut p.w[r], p.g, v, None)?;
        }
        sgd.step(p.b, p.o, p.vb, None)?;
        // γ, β: ∂L/∂z in place of ∂L/∂h, then the sums per channel (γ's
        // into `g`, β's into `h`, free once W is updated).
        if let Some((_, c)) = s.bn {
            for (d, &h) in p.dh.iter_mut().zip(p.h.iter()) {
                *d *= act.map_or(1.0, |a| a.derivative_from_output(h));
            }
            let dg = p.g.get_mut(..c).ok_or(AdaptError::TooLarge)?;
            let db = p.h.get_mut(..c).ok_or(AdaptError::TooLarge)?;
            dg.fill(0.0);
            db.fill(0.0);
            for (j, (&dz, &xh)) in p.dh.iter().zip(p.x.iter()).enumerate() {
                let ch = j % c;
                if let (Some(g), Some(b)) = (dg.get_mut(ch), db.get_mut(ch)) {
                    *g += dz * xh;
                    *b += dz;
                }
            }
            sgd.step(p.gamma, dg, p.vg, None)?;
            sgd.step(p.beta, db, p.vbeta, None)?;
            if g0.len() != p.gamma.len() {
                return Err(AdaptError::BadLayer { layer: s.dense - 1 });
            }
            for (g, &g0) in p.gamma.iter_mut().zip(g0.iter()) {
                let floor = GAMMA_MIN_FRACTION * libm::fabsf(g0);
                if *g * g0 <= 0.0 || libm::fabsf(*g) < floor {
                    *g = libm::copysignf(floor, g0);
                }
            }
        }
        self.lo = lo;
        self.hi = hi;
        self.steps = self.steps.saturating_add(1);
        Ok(loss)
    }
}

impl Tail<'_> {
    /// Write the trained parameters into `overlay` (which must have the
    /// tail in its scope, and with `train_bn` re-estimation too): refold
    /// the BN layer with the trained γ, β; the dense layer's weights and
    /// bias (int8: quantized, the logits' quantization re-chosen from the
    /// logits seen). Errors (the overlay unchanged): no step taken yet
    /// ([`AdaptError::Phase`]), no room in the overlay, a refold or
    /// quantization error. Training can go on after a commit.
    pub fn commit(
        &mut self,
        model: &Model<'_>,
        overlay: &mut Overlay<'_>,
    ) -> Result<(), AdaptError> {
        if self.steps == 0 {
            return Err(AdaptError::Phase);
        }
        let s = self.shape;
        let e = overlay.entry_of(s.dense).ok_or(AdaptError::NotInOverlay)?;
        let file = model.layer(s.dense)?;
        let feature = model.layer(s.dense - 1)?;
        let (lo, hi) = (self.lo, self.hi);
        let kind = self.kind;
        let has = |o: &Overlay<'_>, part| o.part(e, part).is_some();
        let needs_q = kind == Kind::Int8;
        if !has(overlay, Part::Weights)
            || !has(overlay, Part::Bias)
            || (needs_q && !(has(overlay, Part::Multiplier) && has(overlay, Part::Shift)))
        {
            return Err(AdaptError::NotInOverlay);
        }
        if let Some((f, c)) = s.bn {
            if overlay.entry_of(f).is_none() {
                return Err(AdaptError::NotInOverlay);
            }
            let p = self.parts();
            let mut var = [0f32; MAX_BN_CHANNELS];
            let var = var.get_mut(..c).ok_or(AdaptError::TooLarge)?;
            let cur = overlay.current_bn(model, f).ok_or(AdaptError::NoBn)?;
            var.copy_from_slice(cur.var);
            let mut mean = [0f32; MAX_BN_CHANNELS];
            let mean = &mut mean[..c];
            mean.copy_from_slice(cur.mean);
            let eps = cur.eps;
            let new = BnState {
                gamma: p.gamma,
                beta: p.beta,
                mean,
                var,
                eps,
            };
            // Check the dense layer's quantization before changing
            // anything (the refold below is itself all or nothing).
            if needs_q {
                quantize_dense(&file, &feature, s, p.w, p.b, (lo, hi), None)?;
            }
            super::refold::refold(model, f, &new, overlay)?;
        }
        let p = self.parts();
        match kind {
            Kind::F32 => {
                let r = file.block_rows.max(1);
                let d_n = s.inputs;
                let ow: &mut [f32] = cast_slice_mut(
                    overlay
                        .part_mut(e, Part::Weights)
                        .ok_or(AdaptError::NotInOverlay)?,
                );
                ow.fill(0.0);
                for k in 0..s.outputs {
                    for q in 0..d_n {
                        if let Some(v) = ow.get_mut(((k / r) * d_n + q) * r + k % r) {
                            *v = p.w[k * d_n + q];
                        }
                    }
                }
                let ob: &mut [f32] = cast_slice_mut(
                    overlay
                        .part_mut(e, Part::Bias)
                        .ok_or(AdaptError::NotInOverlay)?,
                );
                ob.fill(0.0);
                ob[..s.outputs].copy_from_slice(p.b);
            }
            Kind::Int8 => {
                let q = quantize_dense(&file, &feature, s, p.w, p.b, (lo, hi), None)?;
                quantize_dense(&file, &feature, s, p.w, p.b, (lo, hi), Some((overlay, e)))?;
                overlay.set_quant(e, q);
            }
        }
        overlay.set_flags(e, ACTIVE | HAS_WEIGHTS, true);
        Ok(())
    }
}

/// Most channels of the BN layer a tail trains (its statistics are copied
/// on the stack at commit).
pub const MAX_BN_CHANNELS: usize = 512;

/// Quantize the dense layer's f32 `w`, `b` as the exporter does, with the
/// input quantization of the layer before and the logits' range `(lo,
/// hi)`; into entry `e` of the overlay when given (else only checked).
/// Returns the new output quantization.
fn quantize_dense(
    file: &Layer<'_>,
    feature: &Layer<'_>,
    s: Shape,
    w: &[f32],
    b: &[f32],
    (lo, hi): (f32, f32),
    mut into: Option<(&mut Overlay<'_>, usize)>,
) -> Result<QuantOut, AdaptError> {
    let bad = AdaptError::Unrepresentable {
        layer: s.dense,
        channel: 0,
    };
    if !(lo.is_finite() && hi.is_finite()) {
        return Err(bad);
    }
    let (s_out, zp_out) = range_params(lo, hi);
    let (s_in, zp_in) = (feature.quant.scale, feature.quant.zero_point);
    let limit = bias_limit(s.inputs).ok_or(bad)?;
    let r = file.block_rows.max(1);
    let d_n = s.inputs;
    if let Some((o, e)) = into.as_mut() {
        if let Some(words) = o.part_mut(*e, Part::Weights) {
            words.fill(0);
        }
        if let Some(bias) = o.part_mut(*e, Part::Bias) {
            bias.fill(0);
        }
    }
    for k in 0..s.outputs {
        let row = &w[k * d_n..(k + 1) * d_n];
        let put = |o: &mut Option<(&mut Overlay<'_>, usize)>, q: usize, v: i8| {
            let Some((o, e)) = o.as_mut() else {
                return;
            };
            let Some(words) = o.part_mut(*e, Part::Weights) else {
                return;
            };
            // Bytes in the file's blocked order, whatever its form
            // (overlay module docs).
            let i = ((k / r) * d_n + q) * r + k % r;
            let bytes: &mut [i8] = cast_slice_mut(words);
            if let Some(x) = bytes.get_mut(i) {
                *x = v;
            }
        };
        let rq = quantize_row(
            d_n,
            |q| row[q],
            b[k],
            (f64::from(s_in), zp_in),
            f64::from(s_out),
            file.zp_folded,
            limit,
            |q, v| put(&mut into, q, v),
        )
        .map_err(|_| AdaptError::Unrepresentable {
            layer: s.dense,
            channel: k,
        })?;
        if let Some((o, e)) = into.as_mut() {
            let set = |o: &mut Overlay<'_>, part, v: i32| {
                if let Some(x) = o.part_mut(*e, part).and_then(|p| p.get_mut(k)) {
                    *x = v as u32;
                }
            };
            set(o, Part::Bias, rq.bias);
            set(o, Part::Multiplier, rq.multiplier);
            set(o, Part::Shift, rq.shift);
        }
    }
    Ok(QuantOut {
        scale: s_out,
        zero_point: zp_out,
        requant_zero_point: zp_out,
        clamp_min: -128,
        clamp_max: 127,
        requant_scale: s_out,
    })
}

/// The tail's trained parameters ([`Tail::params_mut`]).
#[derive(Debug)]
pub struct TailParams<'a> {
    /// Dense weights `[K, D]`, row-major.
    pub w: &'a mut [f32],
    /// Dense bias `[K]`.
    pub b: &'a mut [f32],
    /// γ of the trained BN layer (empty without `train_bn`).
    pub gamma: &'a mut [f32],
    /// β of the trained BN layer (empty without `train_bn`).
    pub beta: &'a mut [f32],
}

/// Most classes of a tail (the softmax runs on the stack).
pub const MAX_CLASSES: usize = 256;

/// The dense layer as f32 `W [K, D]` row-major and `b [K]`, from its
/// stored (blocked) form: f32 as stored, int8 dequantized with
/// `s_w[k] = M[k]·t/s_in` and the folded zero point undone.
fn load_dense(
    l: &Layer<'_>,
    s: Shape,
    (s_in, zp_in): (f32, i32),
    w: &mut [f32],
    b: &mut [f32],
) -> Result<(), AdaptError> {
    let bad = AdaptError::BadLayer { layer: s.dense };
    let (k_n, d_n) = (s.outputs, s.inputs);
    let r = l.block_rows.max(1);
    let at = |k: usize, p: usize| ((k / r) * d_n + p) * r + k % r;
    match (l.weights, l.bias) {
        (Some(Data::F32(sw)), Some(Data::F32(sb))) => {
            for k in 0..k_n {
                for p in 0..d_n {
                    w[k * d_n + p] = *sw.get(at(k, p)).ok_or(bad)?;
                }
                b[k] = *sb.get(k).ok_or(bad)?;
            }
        }
        (Some(wq), Some(Data::I32(bq))) => {
            let (m, sh) = l.requant.ok_or(bad)?;
            let q = |i: usize| -> Option<i8> {
                match wq {
                    Data::I8(v) => v.get(i).copied(),
                    Data::I8Pairs(v) => {
                        let (lo, hi) = split_pair_word(*v.get(i / 2)?)?;
                        Some(if i % 2 == 0 { lo } else { hi })
                    }
                    _ => None,
                }
            };
            for k in 0..k_n {
                let mv = multiplier_value(
                    I1F31::from_bits(*m.get(k).ok_or(bad)?),
                    *sh.get(k).ok_or(bad)?,
                );
                let s_w = mv * f64::from(l.quant.requant_scale) / f64::from(s_in);
                let mut sum = 0i64;
                for p in 0..d_n {
                    let v = q(at(k, p)).ok_or(bad)?;
                    sum += i64::from(v);
                    w[k * d_n + p] = (f64::from(v) * s_w) as f32;
                }
                let unfolded = i64::from(*bq.get(k).ok_or(bad)?)
                    + if l.zp_folded {
                        i64::from(zp_in) * sum
                    } else {
                        0
                    };
                b[k] = (unfolded as f64 * f64::from(s_in) * s_w) as f32;
            }
        }
        _ => return Err(bad),
    }
    Ok(())
}

impl Tap for Tail<'_> {
    fn acc(&mut self, first: usize, acc: &[i32]) {
        let Some((_, c)) = self.shape.bn else {
            return;
        };
        let pixel = self.pixel;
        let p = self.parts();
        for (k, &a) in acc.iter().enumerate() {
            let ch = first + k;
            if ch >= c {
                break;
            }
            // Scaled into x in `forward`.
            if let Some(x) = p.x.get_mut(pixel * c + ch) {
                *x = a as f32;
            }
        }
        if first + acc.len() >= c {
            self.pixel += 1;
        }
    }
}

impl LayerTap for Tail<'_> {
    fn wants(&self, i: usize) -> bool {
        self.shape.bn.is_some_and(|(f, _)| f == i)
    }

    fn pre_f32(&mut self, y: &[f32]) {
        if self.shape.bn.is_none() {
            return;
        }
        // Scaled into x in `forward`.
        for (x, &v) in self.parts().x.iter_mut().zip(y) {
            *x = v;
        }
    }
}
