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
                for v in &mut out.images {
                    *v = (gain * *v + offset).clamp(0.0, 1.0);
                }
            }
            Shift::Contrast(f) => {
                for v in &mut out.images {
                    *v = (0.5 + f * (*v - 0.5)).clamp(0.0, 1.0);
                }
            }
            Shift::Invert => {
                for v in &mut out.images {
                    *v = 1.0 - v.clamp(0.0, 1.0);
                }
            }
            Shift::Blur => {
                let (h, w, c) = (d.h, d.w, d.c);
                for (src, dst) in d
                    .images
                    .chunks_exact(per)
                    .zip(out.images.chunks_exact_mut(per))
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

/// Statistics re-estimation (core's [`Restat`]) on the unlabeled samples
/// `x` (`[n, h·w·c]` stored values), every pass over the same samples,
/// refolding into `overlay`. Returns one report per BN layer.
pub fn restat(model: &Model<'_>, overlay: &mut Overlay<'_>, x: &[f32]) -> Result<Vec<PassReport>> {
    restat_inputs(model, overlay, Inputs::Stored(x), usize::MAX)
}

/// [`restat`] of the first `layers` BN layers only ([`Restat::first_layers`]).
pub fn restat_layers(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    x: &[f32],
    layers: usize,
) -> Result<Vec<PassReport>> {
    restat_inputs(model, overlay, Inputs::Stored(x), layers)
}

/// [`restat`] on an int8 model's input levels (`[n, h·w·c]`), as a device
/// holds its samples: what the `finetune` firmware runs, step for step.
pub fn restat_levels(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    levels: &[i8],
) -> Result<Vec<PassReport>> {
    restat_inputs(model, overlay, Inputs::Levels(levels), usize::MAX)
}

fn restat_inputs(
    model: &Model<'_>,
    overlay: &mut Overlay<'_>,
    x: Inputs<'_>,
    layers: usize,
) -> Result<Vec<PassReport>> {
    let n = x.count(model, sample_len(model))?;
    ensure!(n >= 2, "re-estimation needs at least 2 samples");
    let need = Restat::words_needed(model).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut work = vec![0f32; need];
    let mut r =
        Restat::first_layers(model, &mut work, layers).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut mem = arena(model);
    let bytes = model.arena_bytes();
    let mut reports = Vec::new();
    while !r.done() {
        for s in 0..n {
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
    let per = sample_len(model);
    ensure!(
        per > 0 && x.len() % per == 0,
        "samples do not match the model's input"
    );
    ensure!(x.len() / per == labels.len(), "one label per sample");
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
            Inputs::Stored(x).write(&mut e, model, s)?;
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
    let out = run_all(model, overlay, &data.images).context("running the test set")?;
    Ok(crate::export::device::accuracy(&out, &data.labels))
}

#[cfg(test)]
mod tests;
