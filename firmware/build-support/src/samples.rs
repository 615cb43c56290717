//! `samples.bin`: test samples for the firmware, with the outputs the host
//! engine computed for them from the very model files the firmware embeds.
//! Written by the trainer (`normcore assets`, `normcore samples`), read by
//! the board crates' build step ([`crate::board`]) and the host's tests.
//!
//! # Layout, version 2
//!
//! Little-endian throughout; `N` samples of `F = h·w·c` input values, `C`
//! classes. A file holds the part of one or both kinds of model (flags):
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | `[u8; 4]` | magic `"NCSP"` |
//! | 4 | u16 | version, `2` |
//! | 6 | u16 | flags: bit 0 the f32 part is present, bit 1 the int8 part; at least one |
//! | 8 | u32 | `N` (≥ 1) |
//! | 12 | u32 | `F` |
//! | 16 | u32 | `C` |
//! | 20 | u32 | the `crc32` header field of the f32 model file these outputs belong to (0 without the f32 part) |
//! | 24 | u32 | the `crc32` header field of the int8 model file (0 without the int8 part) |
//! | 28 | u32 | CRC-32 (zlib's) of everything from offset 32 to the end |
//! | 32 | f32 × N·F | f32 part: inputs for the f32 model, NHWC per sample |
//! | | f32 × N·C | f32 part: the host engine's f32 logits |
//! | | i8 × N·F | int8 part: inputs for the int8 model: `clamp(round(x / s) + z, -128, 127)` with the int8 file's input scale `s` and zero point `z` |
//! | | i8 × N·C | int8 part: the host engine's int8 logits |
//! | | u16 × N | labels (each below `C`) |
//!
//! Version 1 was the same with both parts always present and the flags
//! field reserved (0); it is refused with a hint to regenerate.

use std::fmt;

use normcore::model::crc32;

/// The file's magic.
pub const MAGIC: [u8; 4] = *b"NCSP";
/// The version this crate reads and writes.
pub const VERSION: u16 = 2;
/// Header bytes.
pub const HEADER: usize = 32;
/// Flags: the f32 part is present.
const HAS_F32: u16 = 1;
/// Flags: the int8 part is present.
const HAS_INT8: u16 = 2;

/// The samples of one kind of model: inputs, the host engine's outputs,
/// and which model file they belong to.
#[derive(Debug, Clone, PartialEq)]
pub struct Part<T> {
    /// Inputs, `[N, F]`.
    pub inputs: Vec<T>,
    /// The host engine's logits, `[N, C]`.
    pub expected: Vec<T>,
    /// The `crc32` header field of the model file.
    pub model_crc: u32,
}

/// The contents of a `samples.bin`.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Input values per sample (`F = h·w·c`).
    pub features: usize,
    /// Classes (logits per sample).
    pub classes: usize,
    /// Labels, `[N]`.
    pub labels: Vec<u16>,
    /// The f32 model's part, if the file has one.
    pub f32: Option<Part<f32>>,
    /// The int8 model's part, if the file has one.
    pub int8: Option<Part<i8>>,
}

/// Why a `samples.bin` was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplesError(pub String);

impl fmt::Display for SamplesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SamplesError {}

fn err<T>(msg: impl Into<String>) -> Result<T, SamplesError> {
    Err(SamplesError(msg.into()))
}

/// A reader of little-endian fields that never reads past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SamplesError> {
        let Some(s) = self.bytes.get(self.at..self.at + N) else {
            return err("samples file is truncated");
        };
        self.at += N;
        Ok(s.try_into().unwrap_or([0; N]))
    }

    fn u16(&mut self) -> Result<u16, SamplesError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, SamplesError> {
        Ok(u32::from_le_bytes(self.take()?))
    }
}

impl Samples {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The file's length for `n` samples with the given parts.
    fn file_len(n: usize, f: usize, c: usize, f32: bool, int8: bool) -> Option<usize> {
        let per_sample =
            (if f32 { 4 } else { 0 } + if int8 { 1 } else { 0 }) * f.checked_add(c)? + 2;
        n.checked_mul(per_sample)?.checked_add(HEADER)
    }

    /// Check the shapes: at least one sample and one part, every array as
    /// long as `N`, `F` and `C` say, every label below `C`.
    pub fn check(&self) -> Result<(), SamplesError> {
        let (n, f, c) = (self.len(), self.features, self.classes);
        if n == 0 {
            return err("no samples");
        }
        if self.f32.is_none() && self.int8.is_none() {
            return err("neither an f32 nor an int8 part");
        }
        if f == 0 || c == 0 {
            return err(format!("{f} input values and {c} classes per sample"));
        }
        let lens = |inputs: usize, expected: usize, kind: &str| {
            if inputs != n * f || expected != n * c {
                err(format!(
                    "the {kind} part has {inputs} inputs and {expected} outputs; \
                     {n} samples of {f} values and {c} classes need {} and {}",
                    n * f,
                    n * c
                ))
            } else {
                Ok(())
            }
        };
        if let Some(p) = &self.f32 {
            lens(p.inputs.len(), p.expected.len(), "f32")?;
        }
        if let Some(p) = &self.int8 {
            lens(p.inputs.len(), p.expected.len(), "int8")?;
        }
        if let Some(l) = self.labels.iter().find(|&&l| usize::from(l) >= c) {
            return err(format!("label {l} is not below the class count {c}"));
        }
        Ok(())
    }

    /// The file's bytes (module documentation); `Err` if [`check`](Self::check) fails.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SamplesError> {
        self.check()?;
        let flags = if self.f32.is_some() { HAS_F32 } else { 0 }
            | if self.int8.is_some() { HAS_INT8 } else { 0 };
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&flags.to_le_bytes());
        for v in [self.len(), self.features, self.classes] {
            let Ok(v) = u32::try_from(v) else {
                return err(format!("{v} does not fit the file's u32 fields"));
            };
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.f32.as_ref().map_or(0, |p| p.model_crc).to_le_bytes());
        out.extend_from_slice(&self.int8.as_ref().map_or(0, |p| p.model_crc).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        if let Some(p) = &self.f32 {
            for v in p.inputs.iter().chain(&p.expected) {
                out.extend_from_slice(&v.to_bits().to_le_bytes());
            }
        }
        if let Some(p) = &self.int8 {
            out.extend(p.inputs.iter().chain(&p.expected).map(|&v| v as u8));
        }
        for l in &self.labels {
            out.extend_from_slice(&l.to_le_bytes());
        }
        let crc = crc32(&out[HEADER..]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Read a file, checking magic, version, flags, sizes, CRC and labels.
    pub fn from_bytes(b: &[u8]) -> Result<Samples, SamplesError> {
        let r = &mut Reader { bytes: b, at: 0 };
        if r.take::<4>()? != MAGIC {
            return err("not a samples file (magic)");
        }
        let version = r.u16()?;
        if version != VERSION {
            return err(format!(
                "samples file version {version}, this build reads version {VERSION}: \
                 regenerate it (`cargo xtask assets`, or `normcore samples`)"
            ));
        }
        let flags = r.u16()?;
        if flags & !(HAS_F32 | HAS_INT8) != 0 || flags == 0 {
            return err(format!(
                "samples file flags {flags:#06x}: unknown bits, or no part"
            ));
        }
        let (f32_part, int8_part) = (flags & HAS_F32 != 0, flags & HAS_INT8 != 0);
        let (n, f, c) = (r.u32()? as usize, r.u32()? as usize, r.u32()? as usize);
        let (f32_crc, int8_crc, crc) = (r.u32()?, r.u32()?, r.u32()?);
        let Some(expected_len) = Self::file_len(n, f, c, f32_part, int8_part) else {
            return err(format!(
                "{n} samples of {f} values and {c} classes overflow"
            ));
        };
        if b.len() != expected_len {
            return err(format!(
                "samples file has {} bytes; {n} samples of {f} values and {c} classes need {expected_len}",
                b.len()
            ));
        }
        if crc32(&b[HEADER..]) != crc {
            return err("samples file CRC mismatch (corrupt file)");
        }
        let f32s = |r: &mut Reader<'_>, len: usize| -> Result<Vec<f32>, SamplesError> {
            (0..len).map(|_| Ok(f32::from_bits(r.u32()?))).collect()
        };
        let f32 = if f32_part {
            Some(Part {
                inputs: f32s(r, n * f)?,
                expected: f32s(r, n * c)?,
                model_crc: f32_crc,
            })
        } else {
            None
        };
        let i8s = |r: &mut Reader<'_>, len: usize| -> Result<Vec<i8>, SamplesError> {
            (0..len).map(|_| Ok(r.take::<1>()?[0] as i8)).collect()
        };
        let int8 = if int8_part {
            Some(Part {
                inputs: i8s(r, n * f)?,
                expected: i8s(r, n * c)?,
                model_crc: int8_crc,
            })
        } else {
            None
        };
        let labels = (0..n).map(|_| r.u16()).collect::<Result<Vec<_>, _>>()?;
        let s = Samples {
            features: f,
            classes: c,
            labels,
            f32,
            int8,
        };
        s.check()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> Samples {
        Samples {
            features: 3,
            classes: 2,
            labels: vec![1, 0],
            f32: Some(Part {
                inputs: vec![0.5, -1.0, 2.0, 0.0, 1.5, -0.25],
                expected: vec![1.0, 2.0, -3.0, 4.0],
                model_crc: 0x1234_5678,
            }),
            int8: Some(Part {
                inputs: vec![1, -2, 3, 4, -128, 127],
                expected: vec![5, -6, 7, -8],
                model_crc: 0x9abc_def0,
            }),
        }
    }

    #[test]
    fn round_trips_with_one_or_both_parts() {
        let b = both();
        for s in [
            b.clone(),
            Samples {
                f32: None,
                ..b.clone()
            },
            Samples { int8: None, ..b },
        ] {
            let bytes = s.to_bytes().unwrap();
            assert_eq!(Samples::from_bytes(&bytes).unwrap(), s);
        }
    }

    #[test]
    fn every_damage_is_refused() {
        let bytes = both().to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(Samples::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // The model CRC fields (20..28) are not the file's to check: a
        // damaged one is caught against the model file (`board`).
        for at in (0..bytes.len()).filter(|at| !(20..28).contains(at)) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(Samples::from_bytes(&bad).is_err(), "byte {at} flipped");
        }
        let mut v1 = bytes.clone();
        v1[4] = 1;
        let e = Samples::from_bytes(&v1).unwrap_err();
        assert!(e.0.contains("regenerate"), "{e}");
    }

    #[test]
    fn bad_shapes_are_refused_when_writing() {
        let mut s = both();
        s.labels[0] = 2;
        assert!(s.to_bytes().unwrap_err().0.contains("label 2"));
        let mut s = both();
        s.f32.as_mut().unwrap().inputs.pop();
        assert!(s.to_bytes().is_err());
        let s = Samples {
            f32: None,
            int8: None,
            ..both()
        };
        assert!(s.to_bytes().is_err());
    }
}
