//! Data sets: reading, normalising, splitting and batching.
//!
//! # Layout
//!
//! A [`Dataset`] holds every sample as `f32` in the core crate's NHWC order
//! (see `normcore::tensor`): sample `i`, pixel `(y, x)`, channel `k` is
//! `images[((i·h + y)·w + x)·c + k]`, so one sample is a contiguous run of
//! `h·w·c` values and a mini-batch is a contiguous `[m, h, w, c]` slab, exactly
//! what the layers take. Feature vectors (CSV files) are `h = w = 1`.
//!
//! # Normalisation
//!
//! Readers scale raw pixel values into `[0, 1]` by dividing by the format's
//! full-scale value: MNIST's `u8` by 255, the built-in digits' counts `0..=16`
//! by 16 (CSV: by a given maximum or the largest magnitude observed; see
//! [`Scale`]). The factor is kept as [`Dataset::pixel_scale`] = `1 / divisor`,
//! so `raw = round(x / pixel_scale)` recovers each raw integer exactly; the
//! exporter uses it to quantize inputs the same way on the device.
//!
//! # Sources
//!
//! - [`load_mnist`]: the four IDX files of MNIST (`.gz` or raw).
//! - [`read_csv`]: features then an integer label per row (`.gz` or plain).
//! - [`builtin_digits`]: a small data set compiled into the binary, so the
//!   first run needs no download.
//!
//! Compressed input is recognised by the gzip magic bytes `1f 8b`, not by the
//! file name. Bad files are [`DataError`]s naming the file, never panics.
//!
//! # Byte form
//!
//! A data set read from bytes (MNIST) also keeps them ([`Dataset::from_bytes`]):
//! value `k` is `f32::from(bytes[k]) / divisor`, computed by one function
//! (`hostops::decode_bytes`) when the set is built and again when
//! [`Dataset::gather`] forms a mini-batch, so both give the same bits.
//! Gathering random samples is a walk through memory far larger than any
//! cache (MNIST's training images are 188 MB as `f32`); from the bytes it
//! reads a quarter as much (47 MB in all), and [`Dataset::prefetch`] lets
//! the trainer start loading the next batch's rows while it works on the
//! current one. `images` is private so that the two forms cannot disagree:
//! [`Dataset::images_mut`] drops the byte form.

mod builtin;
mod csv;
mod error;
mod idx;

pub use builtin::{
    builtin_digits, builtin_digits_split, DIGITS_CSV_GZ, DIGITS_SPLIT_SEED, DIGITS_TRAIN_FRACTION,
};
pub use csv::{parse_csv, read_csv, CsvOptions, Scale};
pub use error::{DataError, Result};
pub use idx::{
    load_idx, load_mnist, parse_idx, IDX_CLASSES, IMAGES_MAGIC, LABELS_MAGIC, MNIST_PIXEL_SCALE,
};

use std::borrow::Cow;
use std::fmt;
use std::io::Read;
use std::ops::{Bound, RangeBounds};
use std::path::Path;

use normcore::{Rng, Shape};

/// A labelled data set held in memory, samples as `f32` in NHWC order.
///
/// Invariants (checked by [`Dataset::new`] and [`Dataset::check`], kept by
/// every reader and method here): `images.len() == n·h·w·c`,
/// `labels.len() == n`, `h, w, c ≥ 1`, every label `< n_classes`, and
/// `pixel_scale` finite and positive. The fields are public for the trainer's
/// convenience; code that edits them must keep the invariants. The samples
/// are read with [`Dataset::images`] and edited with [`Dataset::images_mut`].
#[derive(Clone)]
pub struct Dataset {
    /// A short name for logs and reports (`"mnist-train"`, `"digits"`).
    pub name: String,
    /// All samples, `[n, h, w, c]` row-major (NHWC).
    images: Vec<f32>,
    /// The bytes `images` were decoded from, if the set has a byte form.
    bytes: Option<ByteForm>,
    /// One class label per sample, each `< n_classes`.
    pub labels: Vec<u16>,
    /// Number of samples.
    pub n: usize,
    /// Sample height.
    pub h: usize,
    /// Sample width.
    pub w: usize,
    /// Sample channels (features, for `h = w = 1`).
    pub c: usize,
    /// Number of classes; labels are `0..n_classes`.
    pub n_classes: usize,
    /// Stored value per raw unit: `x = raw / divisor`, `pixel_scale = 1 / divisor`
    /// (MNIST `1/255`, digits `1/16`, unscaled CSV `1`).
    pub pixel_scale: f32,
}

/// A data set's samples as bytes: `images[k] = f32::from(bytes[k]) / divisor`
/// (see the module docs).
#[derive(Clone)]
struct ByteForm {
    bytes: Vec<u8>,
    divisor: f32,
}

/// Equal when every public field and every sample value is equal; whether a
/// set also has a byte form does not matter (it holds the same values).
impl PartialEq for Dataset {
    fn eq(&self, other: &Self) -> bool {
        let Dataset {
            name,
            images,
            bytes: _,
            labels,
            n,
            h,
            w,
            c,
            n_classes,
            pixel_scale,
        } = self;
        (name, images, labels, n, h, w, c, n_classes, pixel_scale)
            == (
                &other.name,
                &other.images,
                &other.labels,
                &other.n,
                &other.h,
                &other.w,
                &other.c,
                &other.n_classes,
                &other.pixel_scale,
            )
    }
}

/// Printing 47 million floats helps nobody: show the shape instead.
impl fmt::Debug for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dataset")
            .field("name", &self.name)
            .field("n", &self.n)
            .field("h", &self.h)
            .field("w", &self.w)
            .field("c", &self.c)
            .field("n_classes", &self.n_classes)
            .field("pixel_scale", &self.pixel_scale)
            .field("byte_form", &self.bytes.is_some())
            .finish_non_exhaustive()
    }
}

/// How much of a data set the first part of [`Dataset::split`] takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Split {
    /// A fraction in `[0, 1]` of the samples, rounded to the nearest count.
    Fraction(f64),
    /// Exactly this many samples.
    Count(usize),
}

impl Dataset {
    /// A data set from its parts, `shape = [h, w, c]`; checks the invariants.
    pub fn new(
        name: impl Into<String>,
        images: Vec<f32>,
        labels: Vec<u16>,
        shape: [usize; 3],
        n_classes: usize,
        pixel_scale: f32,
    ) -> Result<Self> {
        let [h, w, c] = shape;
        let ds = Dataset {
            name: name.into(),
            n: labels.len(),
            images,
            bytes: None,
            labels,
            h,
            w,
            c,
            n_classes,
            pixel_scale,
        };
        ds.check()?;
        Ok(ds)
    }

    /// A data set read from bytes, `shape = [h, w, c]`: sample values
    /// `f32::from(b) / divisor` (MNIST: `divisor = 255`), `pixel_scale =
    /// 1 / divisor`. Keeps the bytes for [`Dataset::gather`] (see the module
    /// docs). Checks the invariants and that `divisor` is finite and positive.
    pub fn from_bytes(
        name: impl Into<String>,
        bytes: Vec<u8>,
        divisor: f32,
        labels: Vec<u16>,
        shape: [usize; 3],
        n_classes: usize,
    ) -> Result<Self> {
        let name = name.into();
        if !(divisor.is_finite() && divisor > 0.0) {
            return Err(DataError::Inconsistent {
                name,
                reason: format!("byte divisor {divisor} is not a positive number"),
            });
        }
        let mut images = vec![0.0; bytes.len()];
        crate::hostops::decode_bytes(&bytes, divisor, &mut images);
        let mut ds = Dataset::new(name, images, labels, shape, n_classes, 1.0 / divisor)?;
        ds.bytes = Some(ByteForm { bytes, divisor });
        Ok(ds)
    }

    /// All samples, `[n, h, w, c]` row-major (NHWC).
    pub fn images(&self) -> &[f32] {
        &self.images
    }

    /// All samples, for editing in place. The set loses its byte form (the
    /// edited values need not be bytes any more); gathering then copies the
    /// values.
    pub fn images_mut(&mut self) -> &mut [f32] {
        self.bytes = None;
        &mut self.images
    }

    /// Whether the set keeps the bytes its values were decoded from.
    pub fn has_byte_form(&self) -> bool {
        self.bytes.is_some()
    }

    /// Checks the invariants listed on [`Dataset`] (not the pixel values).
    pub fn check(&self) -> Result<()> {
        let bad = |reason: String| {
            Err(DataError::Inconsistent {
                name: self.name.clone(),
                reason,
            })
        };
        if self.h == 0 || self.w == 0 || self.c == 0 {
            return bad(format!(
                "sample shape {}x{}x{} has a zero dimension",
                self.h, self.w, self.c
            ));
        }
        let total = self
            .h
            .checked_mul(self.w)
            .and_then(|v| v.checked_mul(self.c))
            .and_then(|v| v.checked_mul(self.n));
        if total != Some(self.images.len()) {
            return bad(format!(
                "{} image values for {} samples of {}x{}x{}",
                self.images.len(),
                self.n,
                self.h,
                self.w,
                self.c
            ));
        }
        if let Some(b) = &self.bytes {
            if b.bytes.len() != self.images.len() {
                return bad(format!(
                    "{} bytes for {} image values",
                    b.bytes.len(),
                    self.images.len()
                ));
            }
        }
        if self.labels.len() != self.n {
            return bad(format!(
                "{} labels for {} samples",
                self.labels.len(),
                self.n
            ));
        }
        if let Some((i, &l)) = self
            .labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| usize::from(l) >= self.n_classes)
        {
            return bad(format!(
                "label {l} of sample {i} is not below n_classes = {}",
                self.n_classes
            ));
        }
        if !(self.pixel_scale.is_finite() && self.pixel_scale > 0.0) {
            return bad(format!(
                "pixel_scale {} is not a positive number",
                self.pixel_scale
            ));
        }
        Ok(())
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when there are no samples.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Values per sample, `h·w·c`.
    pub fn sample_len(&self) -> usize {
        self.h * self.w * self.c
    }

    /// The whole data set as an NHWC shape.
    pub fn shape(&self) -> Shape {
        Shape::nhwc(self.n, self.h, self.w, self.c)
    }

    /// Sample `i`, `h·w·c` values in HWC order.
    ///
    /// # Panics
    /// If `i >= len()`, like slice indexing; [`Dataset::gather`] checks instead.
    pub fn sample(&self, i: usize) -> &[f32] {
        let s = self.sample_len();
        &self.images[i * s..(i + 1) * s]
    }

    /// Label of sample `i`.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn label(&self, i: usize) -> u16 {
        self.labels[i]
    }

    /// Samples per class, indexed by label (`n_classes` entries).
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.n_classes];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// Copies samples `indices[j]` into row `j` of a mini-batch: `out_x` must
    /// hold `indices.len()·sample_len()` values (NHWC), `out_y` one label per
    /// index. Everything is checked before anything is written, so an `Err`
    /// leaves both buffers untouched.
    pub fn gather(&self, indices: &[usize], out_x: &mut [f32], out_y: &mut [u16]) -> Result<()> {
        let s = self.sample_len();
        let m = indices.len();
        let want_x = m.checked_mul(s);
        if want_x != Some(out_x.len()) {
            return Err(DataError::BatchBuffer {
                name: self.name.clone(),
                buffer: "image",
                samples: m,
                expected: want_x.unwrap_or(usize::MAX),
                found: out_x.len(),
            });
        }
        if out_y.len() != m {
            return Err(DataError::BatchBuffer {
                name: self.name.clone(),
                buffer: "label",
                samples: m,
                expected: m,
                found: out_y.len(),
            });
        }
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.n) {
            return Err(self.out_of_range(format!("sample index {bad}")));
        }
        for ((&i, x), y) in indices.iter().zip(out_x.chunks_exact_mut(s)).zip(out_y) {
            match &self.bytes {
                Some(b) => crate::hostops::decode_bytes(&b.bytes[i * s..(i + 1) * s], b.divisor, x),
                None => x.copy_from_slice(self.sample(i)),
            }
            *y = self.labels[i];
        }
        Ok(())
    }

    /// Starts loading what [`Dataset::gather`] will read for the samples at
    /// `indices` (their bytes if the set has a byte form, else their values)
    /// into the CPU's caches, without waiting: a hint that changes no result.
    /// Indices out of range are ignored.
    pub fn prefetch(&self, indices: &[usize]) {
        let s = self.sample_len();
        for &i in indices.iter().filter(|&&i| i < self.n) {
            match &self.bytes {
                Some(b) => crate::hostops::prefetch(&b.bytes[i * s..(i + 1) * s]),
                None => crate::hostops::prefetch(self.sample(i)),
            }
        }
    }

    /// A copy of samples `range` (e.g. `0..50_000`, `50_000..`), named
    /// `"{name}[start..end]"`.
    pub fn subset(&self, range: impl RangeBounds<usize>) -> Result<Dataset> {
        let start = match range.start_bound() {
            Bound::Included(&s) => Some(s),
            Bound::Excluded(&s) => s.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e.checked_add(1),
            Bound::Excluded(&e) => Some(e),
            Bound::Unbounded => Some(self.n),
        };
        let (start, end) = match (start, end) {
            (Some(s), Some(e)) if s <= e && e <= self.n => (s, e),
            _ => {
                return Err(self.out_of_range(format!(
                    "range {:?}..{:?}",
                    range.start_bound(),
                    range.end_bound()
                )))
            }
        };
        let s = self.sample_len();
        Ok(Dataset {
            name: format!("{}[{start}..{end}]", self.name),
            images: self.images[start * s..end * s].to_vec(),
            bytes: self.bytes.as_ref().map(|b| ByteForm {
                bytes: b.bytes[start * s..end * s].to_vec(),
                divisor: b.divisor,
            }),
            labels: self.labels[start..end].to_vec(),
            n: end - start,
            ..self.header_only()
        })
    }

    /// A copy of the samples at `indices`, in that order (repeats allowed).
    pub fn select(&self, indices: &[usize], name: impl Into<String>) -> Result<Dataset> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.n) {
            return Err(self.out_of_range(format!("sample index {bad}")));
        }
        let s = self.sample_len();
        let mut images = Vec::with_capacity(indices.len() * s);
        for &i in indices {
            images.extend_from_slice(self.sample(i));
        }
        let bytes = self.bytes.as_ref().map(|b| ByteForm {
            bytes: indices
                .iter()
                .flat_map(|&i| &b.bytes[i * s..(i + 1) * s])
                .copied()
                .collect(),
            divisor: b.divisor,
        });
        Ok(Dataset {
            name: name.into(),
            images,
            bytes,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            n: indices.len(),
            ..self.header_only()
        })
    }

    /// Splits in order, without shuffling: the first part holds the first
    /// `Count(k)` samples or `round(f·n)` for `Fraction(f)`, the second the
    /// rest. MNIST's usual 50,000/10,000 validation split is
    /// `split(Split::Count(50_000))`.
    pub fn split(&self, first: Split) -> Result<(Dataset, Dataset)> {
        let k = match first {
            Split::Count(k) if k <= self.n => k,
            Split::Count(k) => {
                return Err(self.bad_split(format!(
                    "first part of {k} samples, but there are only {}",
                    self.n
                )))
            }
            Split::Fraction(f) if (0.0..=1.0).contains(&f) => (f * self.n as f64).round() as usize,
            Split::Fraction(f) => {
                return Err(self.bad_split(format!("fraction {f} is not in [0, 1]")));
            }
        };
        Ok((self.subset(..k)?, self.subset(k..)?))
    }

    /// A class-balanced random split, reproducible on every platform: each
    /// class's samples are shuffled with [`normcore::Rng`] seeded by `seed`
    /// (classes in label order, one generator) and `round(train_fraction·count)`
    /// of them go to the first part, the rest to the second. Both parts keep
    /// the original sample order; they are named `"{name}-train"` and
    /// `"{name}-test"`.
    pub fn stratified_split(&self, train_fraction: f64, seed: u64) -> Result<(Dataset, Dataset)> {
        if !(0.0..=1.0).contains(&train_fraction) {
            return Err(self.bad_split(format!("fraction {train_fraction} is not in [0, 1]")));
        }
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); self.n_classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[usize::from(l)].push(i);
        }
        let mut rng = Rng::new(seed);
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for mut members in by_class {
            rng.shuffle(&mut members);
            let k = (train_fraction * members.len() as f64).round() as usize;
            train.extend_from_slice(&members[..k]);
            test.extend_from_slice(&members[k..]);
        }
        train.sort_unstable();
        test.sort_unstable();
        Ok((
            self.select(&train, format!("{}-train", self.name))?,
            self.select(&test, format!("{}-test", self.name))?,
        ))
    }

    /// Every field but the samples, for building parts of `self`.
    fn header_only(&self) -> Dataset {
        Dataset {
            name: String::new(),
            images: Vec::new(),
            bytes: None,
            labels: Vec::new(),
            n: 0,
            ..*self
        }
    }

    fn out_of_range(&self, what: String) -> DataError {
        DataError::OutOfRange {
            name: self.name.clone(),
            what,
            len: self.n,
        }
    }

    fn bad_split(&self, reason: String) -> DataError {
        DataError::InvalidSplit {
            name: self.name.clone(),
            reason,
        }
    }
}

/// The display name of a file in error messages: the path as given.
fn file_label(path: &Path) -> String {
    path.display().to_string()
}

/// Reads a whole file, naming it in the error.
fn read_all(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| DataError::Io {
        file: file_label(path),
        source,
    })
}

/// True when `bytes` start with the gzip magic `1f 8b` (RFC 1952).
fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// `bytes` decompressed when they are gzip data, else as they are.
fn plain<'a>(bytes: &'a [u8], file: &str) -> Result<Cow<'a, [u8]>> {
    if !is_gzip(bytes) {
        return Ok(Cow::Borrowed(bytes));
    }
    // The trailer's ISIZE is the last member's length mod 2^32: a good
    // capacity hint that saves the decoder's repeated reallocations. Deflate
    // cannot expand more than ~1032:1, which bounds a corrupt hint.
    let hint = bytes
        .len()
        .checked_sub(4)
        .map(|at| u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]))
        .map_or(0, |isize| {
            usize::try_from(isize)
                .unwrap_or(0)
                .min(bytes.len().saturating_mul(1032))
        });
    let mut out = Vec::with_capacity(hint);
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|source| DataError::Gzip {
            file: file.to_owned(),
            source,
        })?;
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 samples of 2x1x1, sample i = [i, -i], label i % 3.
    fn toy() -> Dataset {
        let images = (0..10).flat_map(|i| [i as f32, -(i as f32)]).collect();
        let labels = (0..10).map(|i| (i % 3) as u16).collect();
        Dataset::new("toy", images, labels, [2, 1, 1], 3, 1.0).unwrap()
    }

    #[test]
    fn new_checks_invariants() {
        let ok = toy();
        assert_eq!(ok.len(), 10);
        assert_eq!(ok.sample_len(), 2);
        assert_eq!(ok.shape(), Shape::nhwc(10, 2, 1, 1));
        assert_eq!(ok.sample(3), &[3.0, -3.0]);
        assert_eq!(ok.class_counts(), vec![4, 3, 3]);

        let short = Dataset::new("s", vec![0.0; 3], vec![0, 0], [2, 1, 1], 1, 1.0);
        assert!(matches!(short, Err(DataError::Inconsistent { .. })));
        let label = Dataset::new("l", vec![0.0; 2], vec![0, 5], [1, 1, 1], 5, 1.0);
        let msg = label.unwrap_err().to_string();
        assert!(msg.contains("label 5 of sample 1"), "{msg}");
        let zero = Dataset::new("z", vec![], vec![], [0, 1, 1], 1, 1.0);
        assert!(matches!(zero, Err(DataError::Inconsistent { .. })));
        let scale = Dataset::new("p", vec![0.0], vec![0], [1, 1, 1], 1, 0.0);
        assert!(matches!(scale, Err(DataError::Inconsistent { .. })));
    }

    #[test]
    fn debug_is_a_summary() {
        let s = format!("{:?}", toy());
        assert!(s.contains("\"toy\"") && s.contains("n: 10") && !s.contains("images"));
    }

    #[test]
    fn subset_copies_the_range() {
        let d = toy();
        let s = d.subset(2..5).unwrap();
        assert_eq!((s.n, s.name.as_str()), (3, "toy[2..5]"));
        assert_eq!(s.images, vec![2.0, -2.0, 3.0, -3.0, 4.0, -4.0]);
        assert_eq!(s.labels, vec![2, 0, 1]);
        s.check().unwrap();
        assert_eq!(d.subset(..).unwrap().images, d.images);
        assert_eq!(d.subset(8..=9).unwrap().labels, vec![2, 0]);
        assert_eq!(d.subset(10..).unwrap().len(), 0);
        for bad in [d.subset(5..11), d.subset(11..), d.subset(..=10)] {
            assert!(matches!(bad, Err(DataError::OutOfRange { .. })), "{bad:?}");
        }
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = d.subset(6..4);
        assert!(matches!(reversed, Err(DataError::OutOfRange { .. })));
    }

    #[test]
    fn split_by_count_and_fraction_is_in_order() {
        let d = toy();
        let (a, b) = d.split(Split::Count(7)).unwrap();
        assert_eq!((a.len(), b.len()), (7, 3));
        assert_eq!(b.sample(0), &[7.0, -7.0]);
        let (a, b) = d.split(Split::Fraction(0.25)).unwrap(); // 2.5 rounds to 3
        assert_eq!((a.len(), b.len()), (3, 7));
        let (a, b) = d.split(Split::Fraction(1.0)).unwrap();
        assert_eq!((a.len(), b.len()), (10, 0));
        assert_eq!(
            d.split(Split::Count(4)).unwrap(),
            d.split(Split::Count(4)).unwrap()
        );
        for bad in [
            Split::Count(11),
            Split::Fraction(-0.1),
            Split::Fraction(1.5),
            Split::Fraction(f64::NAN),
        ] {
            let e = d.split(bad).unwrap_err();
            assert!(matches!(e, DataError::InvalidSplit { .. }), "{e}");
        }
    }

    #[test]
    fn stratified_split_is_balanced_and_reproducible() {
        // 100 samples, classes 0..4 with 40/30/20/10 members.
        let labels: Vec<u16> = (0..100)
            .map(|i| match i % 10 {
                0..=3 => 0,
                4..=6 => 1,
                7 | 8 => 2,
                _ => 3,
            })
            .collect();
        let images = (0..100).map(|i| i as f32).collect();
        let d = Dataset::new("strat", images, labels, [1, 1, 1], 4, 1.0).unwrap();
        let (tr, te) = d.stratified_split(0.8, 42).unwrap();
        assert_eq!(tr.class_counts(), vec![32, 24, 16, 8]);
        assert_eq!(te.class_counts(), vec![8, 6, 4, 2]);
        assert_eq!(
            (tr.name.as_str(), te.name.as_str()),
            ("strat-train", "strat-test")
        );
        // A partition of the samples, each part in original order.
        let mut all: Vec<f32> = tr.images.iter().chain(&te.images).copied().collect();
        assert!(tr.images.windows(2).all(|p| p[0] < p[1]));
        all.sort_by(f32::total_cmp);
        assert_eq!(all, d.images);
        // Same seed, same split; another seed, another one.
        assert_eq!(d.stratified_split(0.8, 42).unwrap(), (tr.clone(), te));
        assert_ne!(d.stratified_split(0.8, 43).unwrap().0, tr);
        assert!(d.stratified_split(1.2, 42).is_err());
    }

    #[test]
    fn gather_fills_a_batch() {
        let d = toy();
        let mut x = [0.0f32; 6];
        let mut y = [0u16; 3];
        d.gather(&[9, 0, 9], &mut x, &mut y).unwrap();
        assert_eq!(x, [9.0, -9.0, 0.0, -0.0, 9.0, -9.0]);
        assert_eq!(y, [0, 0, 0]);
        d.gather(&[4, 5, 1], &mut x, &mut y).unwrap();
        assert_eq!(y, [1, 2, 1]);
    }

    #[test]
    fn gather_rejects_bad_requests_without_writing() {
        let d = toy();
        let mut x = [7.0f32; 6];
        let mut y = [7u16; 3];
        let e = d.gather(&[0, 10, 1], &mut x, &mut y).unwrap_err();
        assert!(matches!(e, DataError::OutOfRange { .. }), "{e}");
        assert!(e.to_string().contains("sample index 10"));
        let e = d.gather(&[0, 1], &mut x, &mut y).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::BatchBuffer {
                    buffer: "image",
                    ..
                }
            ),
            "{e}"
        );
        let e = d.gather(&[0, 1, 2], &mut x, &mut y[..2]).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::BatchBuffer {
                    buffer: "label",
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!((x, y), ([7.0; 6], [7; 3]));
    }

    /// 7 samples of 3x1x1 bytes `7·i + k`, divisor 255, labels i % 2.
    fn bytes_toy() -> Dataset {
        let bytes = (0..21u8).map(|v| v.wrapping_mul(37)).collect();
        let labels = (0..7).map(|i| i % 2).collect();
        Dataset::from_bytes("bytes", bytes, 255.0, labels, [3, 1, 1], 2).unwrap()
    }

    #[test]
    fn the_byte_form_gathers_the_same_bits_as_the_values() {
        let d = bytes_toy();
        assert!(d.has_byte_form());
        assert_eq!(d.pixel_scale, 1.0 / 255.0);
        for (k, &x) in d.images().iter().enumerate() {
            assert_eq!(x, f32::from((k as u8).wrapping_mul(37)) / 255.0);
        }
        // The same values without bytes: an independent gather (a copy).
        let plain = Dataset::new(
            "bytes",
            d.images().to_vec(),
            d.labels.clone(),
            [3, 1, 1],
            2,
            1.0 / 255.0,
        )
        .unwrap();
        assert!(!plain.has_byte_form());
        assert_eq!(plain, d, "equality ignores the form");
        let idx = [6, 0, 3, 3];
        let (mut x, mut y) = ([0.0f32; 12], [0u16; 4]);
        let (mut xp, mut yp) = ([1.0f32; 12], [9u16; 4]);
        d.prefetch(&[5, 99, 0]);
        d.gather(&idx, &mut x, &mut y).unwrap();
        plain.gather(&idx, &mut xp, &mut yp).unwrap();
        assert_eq!(x.map(f32::to_bits), xp.map(f32::to_bits));
        assert_eq!(y, yp);
        // Parts keep the form, and agree with their values.
        for part in [
            d.subset(2..6).unwrap(),
            d.select(&[4, 4, 1], "pick").unwrap(),
            d.split(Split::Count(3)).unwrap().1,
        ] {
            assert!(part.has_byte_form());
            part.check().unwrap();
            let (mut a, mut l) = (vec![0.0f32; part.images().len()], vec![0u16; part.len()]);
            let all: Vec<usize> = (0..part.len()).collect();
            part.gather(&all, &mut a, &mut l).unwrap();
            assert_eq!(a, part.images());
        }
        // Editing the values drops the bytes: gathering then reads the edit.
        let mut e = d.clone();
        e.images_mut()[3] = 5.0;
        assert!(!e.has_byte_form());
        e.gather(&[1], &mut x[..3], &mut y[..1]).unwrap();
        assert_eq!(x[0], 5.0);
    }

    #[test]
    fn bad_byte_sets_are_errors() {
        for divisor in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let e = Dataset::from_bytes("b", vec![1; 2], divisor, vec![0, 0], [1, 1, 1], 1);
            assert!(
                matches!(e, Err(DataError::Inconsistent { .. })),
                "{divisor}"
            );
        }
        let e = Dataset::from_bytes("b", vec![1; 3], 255.0, vec![0, 0], [1, 1, 1], 1);
        assert!(matches!(e, Err(DataError::Inconsistent { .. })));
    }

    #[test]
    fn select_reorders_and_repeats() {
        let d = toy();
        let s = d.select(&[3, 3, 0], "pick").unwrap();
        assert_eq!(s.images, vec![3.0, -3.0, 3.0, -3.0, 0.0, -0.0]);
        assert_eq!(s.labels, vec![0, 0, 0]);
        assert!(d.select(&[10], "x").is_err());
    }

    #[test]
    fn plain_passes_raw_data_and_inflates_gzip() {
        use std::io::Write;
        let raw = b"hello, world".to_vec();
        assert!(matches!(plain(&raw, "f").unwrap(), Cow::Borrowed(_)));
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(&*plain(&gz, "f").unwrap(), &raw[..]);
        let e = plain(&gz[..gz.len() - 6], "cut.gz").unwrap_err();
        assert!(matches!(e, DataError::Gzip { .. }), "{e}");
        assert!(e
            .to_string()
            .starts_with("cut.gz: gzip data is corrupt or truncated"));
    }
}
