//! A written file run as the device runs it: core's `Model::parse` on the
//! bytes and core's `Engine`, one sample at a time, in an arena of exactly
//! the size the file states. This is the host's only reader of `.ncm` files
//! (`normcore export` measures accuracy with it, `normcore inspect` prints
//! from it, the tests and the firmware's host-side checks predict device
//! outputs with it): what it computes is what a device computes, bit for bit
//! for int8 files, since the engine and its kernels are the same code.
//!
//! ```no_run
//! # fn main() -> Result<(), normcore_trainer::export::ExportError> {
//! let bytes = std::fs::read("out/digits-mlp-int8.ncm").unwrap();
//! let sample = vec![0.0f32; 64];
//! let logits = normcore_trainer::export::device_run(&bytes, &sample)?;
//! println!("class {}", logits.argmax());
//! # Ok(()) }
//! ```
//!
//! Inputs are given as the data set stores them (f32); for int8 files they
//! are quantized with the header's input scale and zero point,
//! `q = clamp(round(x / scale) + zero_point, -128, 127)` (rounding half away
//! from zero), exactly as [`input_levels`] returns them for a device to embed.

use super::quant::QParams;
use super::ExportError;
use normcore::engine::{Engine, Output};
use normcore::model::{Kind, Model};
use rayon::prelude::*;

/// A model file copied to a 16-byte aligned buffer (FORMAT.md: files are
/// used in place from a 16-aligned address; core rejects misaligned ones).
#[derive(Debug, Clone)]
pub struct ModelBytes {
    words: Vec<u128>,
    len: usize,
}

impl ModelBytes {
    /// An aligned copy of `bytes`.
    pub fn new(bytes: &[u8]) -> Self {
        let mut words = vec![0u128; bytes.len().div_ceil(16)];
        bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        ModelBytes {
            words,
            len: bytes.len(),
        }
    }

    /// The file's bytes (16-aligned).
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u128, u8>(&self.words)[..self.len]
    }

    /// Parse and validate with core's `Model::parse`.
    pub fn parse(&self) -> Result<Model<'_>, ExportError> {
        Ok(Model::parse(self.bytes())?)
    }

    /// [`Self::parse`] for the file `name`, which the user gave as a
    /// model file: a checkpoint is named as such, with the command that
    /// makes a model file of it; anything else is "not a valid model file"
    /// and core's reason.
    pub fn parse_file(&self, name: &str) -> anyhow::Result<Model<'_>> {
        use anyhow::Context;
        if crate::checkpoint::is_checkpoint(self.bytes()) {
            anyhow::bail!(
                "{name}: this is a training checkpoint, not a model file (.ncm): export it \
                 first with `normcore export --model {name} -o FILE.ncm`"
            );
        }
        self.parse()
            .with_context(|| format!("{name}: not a valid model file"))
    }
}

/// A model's output for one sample, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Logits {
    /// int8 logits: real = scale · (q - zero_point).
    I8 {
        /// Levels, `[classes]`.
        values: Vec<i8>,
        /// Scale.
        scale: f32,
        /// Zero point.
        zero_point: i32,
    },
    /// f32 logits, `[classes]`.
    F32(Vec<f32>),
}

impl Logits {
    pub fn of(out: &Output<'_>) -> Self {
        match *out {
            Output::I8 {
                values,
                scale,
                zero_point,
            } => Logits::I8 {
                values: values.to_vec(),
                scale,
                zero_point,
            },
            Output::F32(v) => Logits::F32(v.to_vec()),
        }
    }

    /// The predicted class: index of the first largest logit.
    pub fn argmax(&self) -> usize {
        match self {
            Logits::I8 { values, .. } => Output::I8 {
                values,
                scale: 1.0,
                zero_point: 0,
            }
            .argmax(),
            Logits::F32(v) => Output::F32(v).argmax(),
        }
    }

    /// Real values (int8 levels dequantized).
    pub fn real(&self) -> Vec<f32> {
        match self {
            Logits::I8 {
                values,
                scale,
                zero_point,
            } => values
                .iter()
                .map(|&q| scale * (i32::from(q) - zero_point) as f32)
                .collect(),
            Logits::F32(v) => v.clone(),
        }
    }

    /// The int8 levels (`None` for f32 logits).
    pub fn levels(&self) -> Option<&[i8]> {
        match self {
            Logits::I8 { values, .. } => Some(values),
            Logits::F32(_) => None,
        }
    }
}

/// The int8 input levels of `sample` for an int8 model (what a device
/// embeds or computes from its sensor): the header's input quantization.
pub fn input_levels(model: &Model<'_>, sample: &[f32]) -> Vec<i8> {
    let h = model.header();
    let q = QParams {
        scale: h.input_scale,
        zero_point: h.input_zero_point,
    };
    sample.iter().map(|&x| q.quantize(x)).collect()
}

/// Values per input sample, `h·w·c` (each at most 65535: no overflow).
pub fn sample_len(model: &Model<'_>) -> usize {
    let s = model.header().input;
    s.h * s.w * s.c
}

/// A parsed model with its own arena (exactly `arena_bytes`, 16-aligned).
#[derive(Debug)]
pub struct Device<'m, 'b> {
    model: &'m Model<'b>,
    arena: Vec<u128>,
}

impl<'m, 'b> Device<'m, 'b> {
    /// A device running `model`.
    pub fn new(model: &'m Model<'b>) -> Self {
        Device {
            model,
            arena: vec![0u128; model.arena_bytes().div_ceil(16)],
        }
    }

    fn engine(&mut self) -> Result<Engine<'m, 'b, '_>, ExportError> {
        let n = self.model.arena_bytes();
        let arena = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut self.arena)[..n];
        Ok(Engine::new(self.model, arena)?)
    }

    fn check_len(&self, len: usize) -> Result<(), ExportError> {
        let expected = sample_len(self.model);
        if len != expected {
            return Err(ExportError::Batch {
                n: 1,
                len,
                expected,
            });
        }
        Ok(())
    }

    /// Run one sample given as stored values (quantized first for int8 files).
    pub fn run(&mut self, sample: &[f32]) -> Result<Logits, ExportError> {
        self.check_len(sample.len())?;
        match self.model.kind() {
            Kind::Int8 => {
                let q = input_levels(self.model, sample);
                self.run_levels(&q)
            }
            Kind::F32 => {
                let mut e = self.engine()?;
                e.input_f32()?.copy_from_slice(sample);
                Ok(Logits::of(&e.run()?))
            }
        }
    }

    /// Run one int8 sample given as input levels.
    pub fn run_levels(&mut self, levels: &[i8]) -> Result<Logits, ExportError> {
        self.check_len(levels.len())?;
        let mut e = self.engine()?;
        e.input_i8()?.copy_from_slice(levels);
        Ok(Logits::of(&e.run()?))
    }
}

/// The logits a device computes from the file `bytes` for one `sample`
/// (stored values, `h·w·c` NHWC; quantized with the header's parameters
/// for an int8 file).
pub fn device_run(bytes: &[u8], sample: &[f32]) -> Result<Logits, ExportError> {
    let buf = ModelBytes::new(bytes);
    let model = buf.parse()?;
    Device::new(&model).run(sample)
}

/// Every sample of `x` (`[n, h, w, c]`, stored values) through the engine,
/// one at a time, samples spread over rayon's threads (each with its arena).
pub fn run_all(model: &Model<'_>, x: &[f32]) -> Result<Vec<Logits>, ExportError> {
    let per = sample_len(model);
    if per == 0 || x.len() % per != 0 {
        return Err(ExportError::Batch {
            n: x.len() / per.max(1),
            len: x.len(),
            expected: per,
        });
    }
    x.par_chunks(per)
        .map_init(|| Device::new(model), |d, s| d.run(s))
        .collect()
}

/// Stored bytes of the tensors `ids` refer to (`NO_TENSOR` entries skipped).
pub fn tensor_bytes(model: &Model<'_>, ids: &[u16]) -> usize {
    ids.iter()
        .filter_map(|&id| model.tensor(usize::from(id)).ok())
        .map(|(t, _)| t.len as usize)
        .sum()
}

/// Top-1 accuracy of `outputs` against `labels`.
pub fn accuracy(outputs: &[Logits], labels: &[u16]) -> f64 {
    let correct = outputs
        .iter()
        .zip(labels)
        .filter(|(o, &l)| o.argmax() == usize::from(l))
        .count();
    correct as f64 / labels.len().max(1) as f64
}
