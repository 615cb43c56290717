//! Adaptation on the host with the device's code: core's
//! [`normcore::adapt`] (re-estimation, refold, overlay) driven over a data
//! set, so that a user can try adaptation before flashing, and the drift
//! scenario (`normcore reproduce drift`) measures it. Nothing here computes
//! an adapted parameter itself: every number comes from core, the code a
//! device runs, so an int8 result here is the device's bit for bit.

use anyhow::{bail, ensure, Context, Result};
use normcore::adapt::overlay::{Overlay, Scope};
use normcore::adapt::restat::{PassReport, Restat};
use normcore::adapt::tail::{Tail, TailConfig};
use normcore::engine::Engine;
use normcore::kernels::NoTap;
use normcore::model::{Kind, Model};
use rayon::prelude::*;

use crate::data::Dataset;
use crate::export::device::{input_levels, sample_len, Logits};

/// A sensor drift applied to stored inputs (values in `[0, 1]` for the
/// built-in data sets), clamped back to `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shift {
    /// `x → gain·x + offset`.
    GainOffset {
        /// Gain.
        gain: f32,
        /// Offset.
        offset: f32,
    },
    /// `x → 0.5 + factor·(x − 0.5)`: contrast about mid-grey.
    Contrast(f32),
    /// A fixed 3×3 box blur (per channel, edges clamped).
    Blur,
    /// `x → 1 − x`.
    Invert,
}

impl Shift {
    /// The shifts of the drift scenario.
    pub const SCENARIO: [Shift; 4] = [
        Shift::GainOffset {
            gain: 0.6,
            offset: 0.3,
        },
        Shift::Contrast(0.4),
        Shift::Blur,
        Shift::Invert,
    ];

    /// A short name for tables (`gain0.6+0.3`, `contrast0.4`, `blur3x3`, `invert`).
    pub fn name(&self) -> String {
        match self {
            Shift::GainOffset { gain, offset } => format!("gain{gain}+{offset}"),
            Shift::Contrast(f) => format!("contrast{f}"),
            Shift::Blur => "blur3x3".into(),
            Shift::Invert => "invert".into(),
        }
    }

    /// The data set with every sample shifted.
    pub fn apply(&self, d: &Dataset) -> Result<Dataset> {
        let mut out = d.clone();
        out.name = format!("{}-{}", d.name, self.name());
        let per = d.sample_len();
        match *self {
            Shift::GainOffset { gain, offset } => {
                for v in out.images_mut() {
                    *v = (gain * *v + offset).clamp(0.0, 1.0);
                }
            }
            Shift::Contrast(f) => {
                for v in out.images_mut() {
                    *v = (0.5 + f * (*v - 0.5)).clamp(0.0, 1.0);
                }
            }
            Shift::Invert => {
                for v in out.images_mut() {
                    *v = 1.0 - v.clamp(0.0, 1.0);
                }
            }
            Shift::Blur => {
                let (h, w, c) = (d.h, d.w, d.c);
                for (src, dst) in d
                    .images()
                    .chunks_exact(per)
                    .zip(out.images_mut().chunks_exact_mut(per))
                {
                    for y in 0..h {
                        for x in 0..w {
                            for ch in 0..c {
                                let (mut s, mut n) = (0.0f32, 0.0f32);
                                for yy in y.saturating_sub(1)..(y + 2).min(h) {
                                    for xx in x.saturating_sub(1)..(x + 2).min(w) {
                                        s += src[(yy * w + xx) * c + ch];
                                        n += 1.0;
                                    }
                                }
                                dst[(y * w + x) * c + ch] = s / n;
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// The forms `--shift` accepts, for messages.
pub const SHIFT_FORMS: &str =
    "gainG+O (e.g. gain0.6+0.3, gain1.2-0.1), contrastF (e.g. contrast0.4), blur3x3, invert";

/// A shift by the name [`Shift::name`] gives it, with its parameters:
/// `gain0.6+0.3` (an offset's sign is its own: `gain1.2-0.1` and
/// `gain1.2+-0.1` are the same), `contrast0.4`, `blur3x3` (or `blur`),
/// `invert`. Parameters must be finite numbers.
impl std::str::FromStr for Shift {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("unknown shift `{s}`: use {SHIFT_FORMS}");
        let num = |t: &str| t.parse::<f32>().ok().filter(|v| v.is_finite());
        match s {
            "invert" => return Ok(Shift::Invert),
            "blur3x3" | "blur" => return Ok(Shift::Blur),
            _ => {}
        }
        if let Some(rest) = s.strip_prefix("gain") {
            // The offset starts at the first sign after the gain's first
            // character (which may be the gain's own sign).
            let at = rest
                .char_indices()
                .skip(1)
                .find(|&(i, c)| {
                    (c == '+' || c == '-') && !matches!(rest.as_bytes()[i - 1], b'e' | b'E')
                })
                .map(|(i, _)| i)
                .ok_or_else(bad)?;
            let (g, o) = rest.split_at(at);
            let o = o.strip_prefix('+').unwrap_or(o);
            return match (num(g), num(o)) {
                (Some(gain), Some(offset)) => Ok(Shift::GainOffset { gain, offset }),
                _ => Err(bad()),
            };
        }
        if let Some(f) = s.strip_prefix("contrast") {
            return num(f).map(Shift::Contrast).ok_or_else(bad);
        }
        Err(bad())
    }
}

/// How `normcore adapt` and the drift scenario adapt a model.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Statistics re-estimation on unlabeled samples (forward only).
    Restat,
    /// Tail training: the last dense layer on labeled samples.
    Tail,
    /// Re-estimation, then tail training.
    Both,
}

impl Method {
    /// The name on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Method::Restat => "restat",
            Method::Tail => "tail",
            Method::Both => "both",
        }
    }

    /// The overlay's scope this method writes into.
    pub fn scope(self) -> Scope {
        Scope {
            restat: self != Method::Tail,
            tail: self != Method::Restat,
        }
    }
}

/// `n` distinct indices of `0..len` picked with `seed` (the first `n` of
/// a seeded Fisher–Yates permutation, so that a smaller `n` with the same
/// seed picks a prefix of a larger one); all of them when `n >= len`.
pub fn pick_seeded(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..len).collect();
    normcore::Rng::new(seed).shuffle(&mut idx);
    idx.truncate(n);
    idx
}

/// Tail training (the last dense layer, on labeled samples `x`, `labels`)
/// into `overlay`, which must have the tail in its scope: the one place
/// `normcore adapt` and `normcore reproduce drift` call it.
pub(crate) fn tail_step(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    x: &[f32],
    labels: &[u16],
) -> Result<()> {
    // γ, β of the BN layer before the dense one too, when the network has
    // one there and the overlay has room to refold it.
    let with_bn = TailConfig::default();
    let train_bn = Tail::words_needed(model, &with_bn).is_ok()
        && overlay
            .entry_of(model.layer_count().saturating_sub(2))
            .is_some();
    let cfg = if overlay.scope().restat {
        TailConfig {
            train_bn,
            ..with_bn
        }
    } else {
        TAIL_ALONE
    };
    tail(model, overlay, x, labels, cfg, TAIL_EPOCHS)?;
    Ok(())
}

/// Tail training's settings without re-estimation (`--method tail`): the
/// dense layer only, SGD with momentum 0.9 at learning rate 0.01. On the
/// raw shifted features momentum is measurably better than plain SGD (MNIST
/// `paper-mlp`, 10 epochs: contrast 0.4 on 200 samples 79.6 % against
/// 75.9 %, invert 61.1 % against 52.8 %; docs/ADAPT.md), and its velocities
/// fit: without re-estimation the overlay is the tail's alone (`paper-mlp`
/// int8: 1,408 + 8,920 bytes). After re-estimation ([`TailConfig::default`],
/// plain SGD at 0.1, γ, β too) both are within 0.6 points of each other,
/// and only plain SGD fits `paper-mlp` in 16 KiB.
pub const TAIL_ALONE: TailConfig = TailConfig {
    lr: 0.01,
    momentum: 0.9,
    train_bn: false,
};

/// Epochs of tail training over the labeled samples (`normcore adapt`,
/// `reproduce drift`): with 100–200 samples, enough for the loss to settle
/// (docs/ADAPT.md).
pub const TAIL_EPOCHS: usize = 10;

/// Adapt `overlay` (planned with `method.scope()`) by `method`:
/// re-estimation on the unlabeled samples `unlabeled` (fed as `feed` says), tail training on
/// `labeled` (samples and labels), or both in this order.
pub fn adapt_with(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    method: Method,
    unlabeled: &[f32],
    feed: Feed,
    labeled: (&[f32], &[u16]),
) -> Result<()> {
    if method != Method::Tail {
        restat_fed(model, overlay, unlabeled, feed)?;
    }
    if method != Method::Restat {
        tail_step(model, overlay, labeled.0, labeled.1)?;
    }
    Ok(())
}

/// The model file `file` with the adaptation of `overlay` (made for this
/// file) written into it: every active entry's bias, int8 multipliers and
/// shifts, weights (when written), BN record (when written) and output
/// quantization (when written), with core's in-place updates
/// ([`update_tensor`](normcore::model::write::update_tensor),
/// [`update_bn`](normcore::model::write::update_bn),
/// [`update_quant`](normcore::model::write::update_quant)), each of which
/// re-validates the file. The values are those the engine reads through
/// the overlay ([`Overlay::patch`]), so the new file runs as the model with
/// the overlay does: bit for bit (int8) and identically (f32). Its BN
/// records are the statistics it is folded with, so it can be adapted
/// again.
pub fn bake(file: &[u8], overlay: &Overlay<'_>) -> Result<Vec<u8>> {
    use normcore::adapt::overlay::{bn_index, ACTIVE, HAS_BN, HAS_QUANT, HAS_WEIGHTS};
    use normcore::model::write::{update_bn, update_quant, update_tensor};
    use normcore::model::{Data, Slot};
    let src = crate::export::device::ModelBytes::new(file);
    let model = src.parse().context("not a valid model file")?;
    let crc = overlay
        .as_bytes()
        .get(8..12)
        .map(|b| [b[0], b[1], b[2], b[3]]);
    ensure!(
        crc.map(u32::from_le_bytes) == Some(model.header_crc()),
        "the overlay was made for another model file"
    );
    let mut out = vec![0u128; file.len().div_ceil(16)];
    let buf = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut out)[..file.len()];
    buf.copy_from_slice(file);
    for e in 0..overlay.entries() {
        let flags = overlay.flags(e);
        if flags & ACTIVE == 0 {
            continue;
        }
        let i = overlay.entry_layer(e);
        let mut l = model.layer(i)?;
        let ids = l.tensor_ids;
        overlay
            .patch(i, &mut l)
            .map_err(|e| anyhow::anyhow!("layer {i}: {e}"))?;
        let mut put = |slot: Slot, data: Option<Data<'_>>| -> Result<()> {
            let data = data.with_context(|| format!("layer {i} has no {slot:?} tensor"))?;
            update_tensor(buf, usize::from(ids[slot as usize]), data)
                .with_context(|| format!("layer {i}: writing its {slot:?}"))
        };
        put(Slot::Bias, l.bias)?;
        if let Some((m, s)) = l.requant {
            put(Slot::Multiplier, Some(Data::I32(m)))?;
            put(Slot::Shift, Some(Data::I32(s)))?;
        }
        if flags & HAS_WEIGHTS != 0 {
            // The overlay holds int8 weights as bytes; a file storing pair
            // words gets them packed back.
            match (model.layer(i)?.weights, l.weights) {
                (Some(Data::I8Pairs(_)), Some(Data::I8(bytes))) => {
                    let mut words = vec![0i32; bytes.len() / 2];
                    normcore::kernels::pack::pack_pairs(bytes, &mut words)
                        .map_err(|e| anyhow::anyhow!("layer {i}: packing its weights: {e}"))?;
                    put(Slot::Weight, Some(Data::I8Pairs(&words)))?;
                }
                _ => put(Slot::Weight, l.weights)?,
            }
        }
        if flags & HAS_BN != 0 {
            let j = bn_index(&model, i).with_context(|| format!("layer {i} has no BN record"))?;
            let bn = overlay
                .current_bn(&model, i)
                .with_context(|| format!("layer {i}: no BN state"))?;
            update_bn(buf, j, bn).with_context(|| format!("layer {i}: writing its BN record"))?;
        }
        if flags & HAS_QUANT != 0 {
            update_quant(buf, i, l.quant)
                .with_context(|| format!("layer {i}: writing its output quantization"))?;
        }
    }
    Ok(buf.to_vec())
}

/// An overlay's words for `model` and `scope`, empty (the original model).
pub fn new_overlay(model: &Model<'_>, scope: Scope) -> Result<Vec<u32>> {
    let n = Overlay::words_needed(model, scope).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut words = vec![0u32; n];
    Overlay::new(model, scope, &mut words).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(words)
}

/// An aligned arena for `model`.
fn arena(model: &Model<'_>) -> Vec<u128> {
    vec![0u128; model.arena_bytes().div_ceil(16)]
}

/// Samples as the engine takes them: stored values (`[n, h·w·c]`,
/// quantized with the header's parameters for an int8 model), or an int8
/// model's input levels as a device holds them (the firmware's embedded
/// samples, a drift of them: `normcore::adapt::drift`).
#[derive(Debug, Clone, Copy)]
enum Inputs<'a> {
    Stored(&'a [f32]),
    Levels(&'a [i8]),
}

impl Inputs<'_> {
    /// Samples of `per` values each; an error if the values do not split
    /// into whole samples, or are levels for an f32 model.
    fn count(&self, model: &Model<'_>, per: usize) -> Result<usize> {
        let len = match *self {
            Inputs::Stored(x) => x.len(),
            Inputs::Levels(q) => {
                ensure!(
                    model.kind() == Kind::Int8,
                    "input levels are for int8 models"
                );
                q.len()
            }
        };
        if per == 0 || len % per != 0 {
            bail!("samples of {len} values do not match the model's input of {per}");
        }
        Ok(len / per)
    }

    /// Write sample `s` into `engine`'s input.
    fn write(&self, engine: &mut Engine<'_, '_, '_>, model: &Model<'_>, s: usize) -> Result<()> {
        let per = sample_len(model);
        match (*self, model.kind()) {
            (Inputs::Stored(x), Kind::Int8) => engine
                .input_i8()?
                .copy_from_slice(&input_levels(model, &x[s * per..(s + 1) * per])),
            (Inputs::Stored(x), Kind::F32) => engine
                .input_f32()?
                .copy_from_slice(&x[s * per..(s + 1) * per]),
            (Inputs::Levels(q), _) => engine
                .input_i8()?
                .copy_from_slice(&q[s * per..(s + 1) * per]),
        }
        Ok(())
    }
}

/// How re-estimation's passes (one per BN layer, core's [`Restat`]) are fed
/// the `n` unlabeled samples.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Feed {
    /// Every pass sees all `n` samples: each layer's statistics from `n`
    /// samples; a sample costs `Σ_k cost(layers 0..=L_k)`, a few
    /// inferences.
    #[default]
    Every,
    /// The samples split into consecutive parts, one per pass (pass `k`
    /// gets samples `k·n/P .. (k+1)·n/P`): each sample is observed once, at
    /// the cost of at most one inference, as a device adapting on a stream
    /// of sensor data would; each layer's statistics from `n/P` samples.
    Split,
}

impl Feed {
    /// The samples of pass `k` of `passes`, of `n`.
    pub fn part(self, n: usize, k: usize, passes: usize) -> std::ops::Range<usize> {
        match self {
            Feed::Every => 0..n,
            Feed::Split => k * n / passes.max(1)..(k + 1) * n / passes.max(1),
        }
    }
}

/// Statistics re-estimation (core's [`Restat`]) on the unlabeled samples
/// `x` (`[n, h·w·c]` stored values), every pass over the same samples,
/// refolding into `overlay`. Returns one report per BN layer.
pub fn restat(model: &Model<'_>, overlay: &mut Overlay<'_>, x: &[f32]) -> Result<Vec<PassReport>> {
    restat_inputs(model, overlay, Inputs::Stored(x), usize::MAX, Feed::Every)
}

/// [`restat`] with the samples fed to the passes as `feed` says.
pub fn restat_fed(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    x: &[f32],
    feed: Feed,
) -> Result<Vec<PassReport>> {
    restat_inputs(model, overlay, Inputs::Stored(x), usize::MAX, feed)
}

/// [`restat`] of the first `layers` BN layers only ([`Restat::first_layers`]).
pub fn restat_layers(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    x: &[f32],
    layers: usize,
) -> Result<Vec<PassReport>> {
    restat_inputs(model, overlay, Inputs::Stored(x), layers, Feed::Every)
}

/// [`restat`] on an int8 model's input levels (`[n, h·w·c]`), as a device
/// holds its samples: what the `finetune` firmware runs, step for step.
pub fn restat_levels(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    levels: &[i8],
) -> Result<Vec<PassReport>> {
    restat_inputs(
        model,
        overlay,
        Inputs::Levels(levels),
        usize::MAX,
        Feed::Every,
    )
}

fn restat_inputs(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    x: Inputs<'_>,
    layers: usize,
    feed: Feed,
) -> Result<Vec<PassReport>> {
    let n = x.count(model, sample_len(model))?;
    ensure!(n >= 2, "re-estimation needs at least 2 samples");
    let need = Restat::words_needed(model).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut work = vec![0f32; need];
    let mut r =
        Restat::first_layers(model, &mut work, layers).map_err(|e| anyhow::anyhow!("{e}"))?;
    let passes = r.pass().1;
    ensure!(
        feed.part(n, 0, passes).len() >= 2,
        "re-estimation fed by splitting {n} samples among {passes} passes (one per BN layer) \
         needs at least {} samples (2 per pass)",
        2 * passes
    );
    let mut mem = arena(model);
    let bytes = model.arena_bytes();
    let mut reports = Vec::new();
    while !r.done() {
        for s in feed.part(n, r.pass().0, passes) {
            let buf = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut mem)[..bytes];
            let mut e = Engine::new(model, buf)?;
            x.write(&mut e, model, s)?;
            r.observe(&mut e, Some(overlay))
                .map_err(|e| anyhow::anyhow!("re-estimation: {e}"))?;
        }
        let rep = r
            .finish_pass(model, overlay)
            .map_err(|e| anyhow::anyhow!("re-estimation: {e}"))?;
        reports.push(rep);
    }
    Ok(reports)
}

/// What [`tail`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TailReport {
    /// SGD steps (samples × epochs).
    pub steps: u32,
    /// Mean loss over the first epoch.
    pub first_loss: f32,
    /// Mean loss over the last epoch.
    pub last_loss: f32,
}

/// Tail training (core's [`Tail`]) on the labeled samples `x`, `labels`
/// for `epochs` passes in the given order, then a commit into `overlay`
/// (which must have the tail in its scope, and re-estimation too when
/// `cfg.train_bn`).
pub fn tail(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    x: &[f32],
    labels: &[u16],
    cfg: TailConfig,
    epochs: usize,
) -> Result<TailReport> {
    tail_inputs(model, overlay, Inputs::Stored(x), labels, cfg, epochs)
}

/// [`tail`] on an int8 model's input levels (`[n, h·w·c]`), as the
/// `finetune` firmware feeds them.
pub fn tail_levels(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    levels: &[i8],
    labels: &[u16],
    cfg: TailConfig,
    epochs: usize,
) -> Result<TailReport> {
    tail_inputs(model, overlay, Inputs::Levels(levels), labels, cfg, epochs)
}

fn tail_inputs(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    x: Inputs<'_>,
    labels: &[u16],
    cfg: TailConfig,
    epochs: usize,
) -> Result<TailReport> {
    let per = sample_len(model);
    ensure!(
        per > 0 && x.count(model, per)? == labels.len(),
        "one label per sample"
    );
    ensure!(
        !labels.is_empty() && epochs > 0,
        "tail training needs samples and epochs"
    );
    let need =
        Tail::words_needed(model, &cfg).map_err(|e| anyhow::anyhow!("tail training: {e}"))?;
    let mut work = vec![0f32; need];
    let mut t = Tail::new(model, Some(overlay), cfg, &mut work)
        .map_err(|e| anyhow::anyhow!("tail training: {e}"))?;
    let mut mem = arena(model);
    let n = model.arena_bytes();
    let (mut first, mut last) = (0.0f32, 0.0f32);
    for epoch in 0..epochs {
        let mut sum = 0.0f32;
        for (s, &y) in labels.iter().enumerate() {
            let buf = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut mem)[..n];
            let mut e = Engine::new(model, buf)?;
            x.write(&mut e, model, s)?;
            sum += t
                .step(&mut e, Some(overlay), usize::from(y))
                .map_err(|e| anyhow::anyhow!("tail training: {e}"))?;
        }
        let mean = sum / labels.len() as f32;
        if epoch == 0 {
            first = mean;
        }
        last = mean;
    }
    t.commit(model, overlay)
        .map_err(|e| anyhow::anyhow!("tail training: {e}"))?;
    Ok(TailReport {
        steps: t.steps(),
        first_loss: first,
        last_loss: last,
    })
}

/// Logits of every sample of `x` through the engine with `overlay` (or the
/// original model), samples spread over rayon's threads.
pub fn run_all(model: &Model<'_>, overlay: Option<&Overlay<'_>>, x: &[f32]) -> Result<Vec<Logits>> {
    run_all_inputs(model, overlay, Inputs::Stored(x))
}

/// [`run_all`] on an int8 model's input levels (`[n, h·w·c]`).
pub fn run_all_levels(
    model: &Model<'_>,
    overlay: Option<&Overlay<'_>>,
    levels: &[i8],
) -> Result<Vec<Logits>> {
    run_all_inputs(model, overlay, Inputs::Levels(levels))
}

fn run_all_inputs(
    model: &Model<'_>,
    overlay: Option<&Overlay<'_>>,
    x: Inputs<'_>,
) -> Result<Vec<Logits>> {
    let n = x.count(model, sample_len(model))?;
    (0..n)
        .into_par_iter()
        .map_init(
            || arena(model),
            |mem, s| -> Result<Logits> {
                let bytes = model.arena_bytes();
                let buf = &mut bytemuck::cast_slice_mut::<u128, u8>(mem)[..bytes];
                let mut e = Engine::new(model, buf)?;
                x.write(&mut e, model, s)?;
                let out = e
                    .run_adapted(overlay, usize::MAX, &mut NoTap)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Ok(Logits::of(&out))
            },
        )
        .collect()
}

/// Top-1 accuracy of the engine with `overlay` on `data`.
pub fn accuracy(model: &Model<'_>, overlay: Option<&Overlay<'_>>, data: &Dataset) -> Result<f64> {
    let out = run_all(model, overlay, data.images()).context("running the test set")?;
    Ok(crate::export::device::accuracy(&out, &data.labels))
}

pub mod command;

#[cfg(test)]
mod tests;
