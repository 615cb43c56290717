//! The models and test samples a firmware embeds, as the board crate's
//! build script generates them (`normcore-firmware-build`, from the files
//! `samples.bin` and `model-{f32,int8}.ncm` of an assets directory; their
//! layout: `host-trainer/src/assets.rs`) and [`crate::include_assets`]
//! brings them into a bin.
//!
//! A build embeds one or both kinds of model: the user's own model is one
//! file, the demo has both. The build script has already checked that
//! every model parses, that its input and output shapes are the samples'
//! and that the expected outputs were computed for these very files (their
//! CRCs); the programs check it again at start-up, cheaply, so a mismatch is
//! a clear error on the device too.

use normcore::model::Kind;

/// A model file placed where `Model::parse` reads it in place (16-aligned,
/// docs/FORMAT.md).
#[repr(C, align(16))]
#[derive(Debug)]
pub struct Aligned<const N: usize>(pub [u8; N]);

/// Test samples with the host engine's expected outputs, row-major.
#[derive(Debug, Clone, Copy)]
pub struct Samples {
    /// Samples (`N`).
    pub count: usize,
    /// Input values per sample (`F = h·w·c`).
    pub features: usize,
    /// Logits per sample (`C`).
    pub classes: usize,
    /// Inputs of the f32 model, `[N, F]` NHWC (empty without an f32 model).
    pub input_f32: &'static [f32],
    /// The host engine's f32 logits as bit patterns, `[N, C]`.
    pub expected_f32: &'static [u32],
    /// Inputs of the int8 model (quantized with its input scale and zero
    /// point), `[N, F]` (empty without an int8 model).
    pub input_i8: &'static [i8],
    /// The host engine's int8 logits, `[N, C]`.
    pub expected_i8: &'static [i8],
    /// Labels, `[N]`.
    pub labels: &'static [u16],
}

/// Everything a build embeds.
#[derive(Debug, Clone, Copy)]
pub struct Assets {
    /// The f32 model file, if the build embeds one.
    pub f32_model: Option<&'static [u8]>,
    /// The int8 model file, if the build embeds one.
    pub int8_model: Option<&'static [u8]>,
    /// The samples, for every embedded model.
    pub samples: Samples,
    /// Bytes of the static arena: the largest `arena_bytes` of the models.
    pub arena_bytes: usize,
}

impl Assets {
    /// The embedded models as `(name, kind, file)`, f32 first.
    pub fn models(&self) -> impl Iterator<Item = (&'static str, Kind, &'static [u8])> {
        let f = self.f32_model.map(|b| ("f32", Kind::F32, b));
        let q = self.int8_model.map(|b| ("int8", Kind::Int8, b));
        f.into_iter().chain(q)
    }

    /// The embedded model of `kind`.
    pub fn model(&self, kind: Kind) -> Option<&'static [u8]> {
        match kind {
            Kind::F32 => self.f32_model,
            Kind::Int8 => self.int8_model,
        }
    }
}

impl Samples {
    /// Row `s` of a `[N, width]` array (empty if out of range).
    fn row<T>(values: &'static [T], s: usize, width: usize) -> &'static [T] {
        values.get(s * width..(s + 1) * width).unwrap_or(&[])
    }

    /// Sample `s`'s f32 input.
    pub fn f32_input(&self, s: usize) -> &'static [f32] {
        Self::row(self.input_f32, s, self.features)
    }

    /// Sample `s`'s int8 input.
    pub fn i8_input(&self, s: usize) -> &'static [i8] {
        Self::row(self.input_i8, s, self.features)
    }

    /// The host's f32 logits (bit patterns) for sample `s`.
    pub fn f32_expected(&self, s: usize) -> &'static [u32] {
        Self::row(self.expected_f32, s, self.classes)
    }

    /// The host's int8 logits for sample `s`.
    pub fn i8_expected(&self, s: usize) -> &'static [i8] {
        Self::row(self.expected_i8, s, self.classes)
    }
}
