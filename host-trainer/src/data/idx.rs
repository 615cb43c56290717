//! IDX files, the MNIST layout (LeCun et al., "THE MNIST DATABASE").
//!
//! An IDX file is a big-endian `u32` magic number `0x0000TTDD` (two zero
//! bytes, element type `TT`, dimension count `DD`), then `DD` big-endian `u32`
//! dimension sizes, then the elements, row-major. MNIST uses unsigned bytes
//! (`TT = 0x08`): images are `0x00000803` (count, rows, columns) and labels
//! `0x00000801` (count), each file gzip-compressed or raw.
//!
//! A file is read whole, inflated if it starts with the gzip magic, checked
//! (magic, dimension count, declared against actual length in both directions,
//! labels below 10, images and labels counts agreeing) and then converted to
//! `f32` in one pass: `x = byte / 255`.

use std::path::{Path, PathBuf};

use super::{file_label, plain, read_all, DataError, Dataset, Result};

/// Magic number of an unsigned-byte IDX file with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an unsigned-byte IDX file with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Classes of an IDX labels file: digits (MNIST) or 10 categories
/// (Fashion-MNIST, Kuzushiji-MNIST); a label must be below this.
pub const IDX_CLASSES: usize = 10;
/// [`Dataset::pixel_scale`] of IDX images: bytes are divided by 255.
pub const MNIST_PIXEL_SCALE: f32 = 1.0 / 255.0;

/// The two kinds of IDX file the loader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Images,
    Labels,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Images => "images",
            Kind::Labels => "labels",
        }
    }
    fn magic(self) -> u32 {
        match self {
            Kind::Images => IMAGES_MAGIC,
            Kind::Labels => LABELS_MAGIC,
        }
    }
    fn dims(self) -> u8 {
        match self {
            Kind::Images => 3,
            Kind::Labels => 1,
        }
    }
    fn layout(self) -> &'static str {
        match self {
            Kind::Images => "count, rows, columns",
            Kind::Labels => "count",
        }
    }
}

/// A checked IDX file: its dimension sizes and exactly the declared data.
#[derive(Debug)]
struct Idx<'a> {
    dims: Vec<usize>,
    data: &'a [u8],
}

/// Checks the header of `bytes` (already inflated) against `kind` and the
/// data length against the header.
fn parse_header<'a>(bytes: &'a [u8], file: &str, kind: Kind) -> Result<Idx<'a>> {
    let header_len = 4 + 4 * usize::from(kind.dims());
    let too_short = |needed| DataError::TooShort {
        file: file.to_owned(),
        kind: kind.name(),
        found: bytes.len(),
        needed,
    };
    let be_u32 =
        |at: usize| u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]]);
    if bytes.len() < 4 {
        return Err(too_short(header_len));
    }
    let magic = be_u32(0);
    if magic != kind.magic() {
        return Err(magic_error(bytes, magic, file, kind));
    }
    if bytes.len() < header_len {
        return Err(too_short(header_len));
    }
    let dims: Vec<usize> = (0..usize::from(kind.dims()))
        // u32 always fits usize on the 32- and 64-bit hosts the trainer runs on.
        .map(|d| be_u32(4 + 4 * d) as usize)
        .collect();
    let declared = describe(kind, &dims);
    let bad_header = |reason: String| DataError::BadHeader {
        file: file.to_owned(),
        reason,
    };
    if kind == Kind::Images && (dims[1] == 0 || dims[2] == 0) {
        return Err(bad_header(format!(
            "declares {declared}: an image needs at least one row and one column; \
             the header is corrupt: fetch the file again"
        )));
    }
    let need = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            bad_header(format!(
                "declares {declared}, more bytes than this machine can address; \
                 the header is corrupt: fetch the file again"
            ))
        })?;
    let data = &bytes[header_len..];
    if data.len() < need {
        return Err(DataError::Truncated {
            file: file.to_owned(),
            declared,
            found: data.len(),
        });
    }
    if data.len() > need {
        return Err(DataError::TrailingBytes {
            file: file.to_owned(),
            declared,
            extra: data.len() - need,
        });
    }
    Ok(Idx { dims, data })
}

/// What the header declares, in words: "10000 labels" or
/// "10000 images of 28x28 pixels (7840000 bytes)".
fn describe(kind: Kind, dims: &[usize]) -> String {
    match kind {
        Kind::Labels => format!("{} labels", dims[0]),
        Kind::Images => {
            let bytes = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .map_or_else(|| "too many".to_owned(), |b| b.to_string());
            format!(
                "{} images of {}x{} pixels ({bytes} bytes)",
                dims[0], dims[1], dims[2]
            )
        }
    }
}

/// The most helpful error for a magic number that is not `kind`'s.
fn magic_error(bytes: &[u8], found: u32, file: &str, kind: Kind) -> DataError {
    let expected = kind.magic();
    if bytes[..3] == [0, 0, 0x08] {
        return DataError::WrongDims {
            file: file.to_owned(),
            kind: kind.name(),
            found: bytes[3],
            expected: kind.dims(),
            layout: kind.layout(),
        };
    }
    let hint = if bytes[..2] == [0, 0] {
        let ty = match bytes[2] {
            0x09 => "signed byte",
            0x0B => "i16",
            0x0C => "i32",
            0x0D => "f32",
            0x0E => "f64",
            _ => "unknown",
        };
        format!(
            "an IDX file of element type 0x{:02X} ({ty}); only unsigned-byte (0x08) IDX \
             files, as MNIST ships them, are supported",
            bytes[2]
        )
    } else if bytes.starts_with(b"PK") {
        "a zip archive, not an IDX file: unpack it first".to_owned()
    } else {
        format!(
            "not an IDX {} file; pass MNIST-style IDX files, gzipped or raw",
            kind.name()
        )
    };
    DataError::BadMagic {
        file: file.to_owned(),
        found,
        expected,
        hint,
    }
}

/// Labels of an IDX labels file (inflated or not), each checked `< 10`.
fn decode_labels(bytes: &[u8], file: &str) -> Result<Vec<u16>> {
    let bytes = plain(bytes, file)?;
    let idx = parse_header(&bytes, file, Kind::Labels)?;
    if let Some((index, &value)) = idx
        .data
        .iter()
        .enumerate()
        .find(|&(_, &l)| usize::from(l) >= IDX_CLASSES)
    {
        return Err(DataError::LabelOutOfRange {
            file: file.to_owned(),
            index,
            value: u64::from(value),
            n_classes: IDX_CLASSES,
        });
    }
    Ok(idx.data.iter().map(|&l| u16::from(l)).collect())
}

/// A data set from the bytes of an IDX images file and an IDX labels file
/// (each gzipped or raw); `images_file` and `labels_file` name them in errors.
pub fn parse_idx(
    images: &[u8],
    images_file: &str,
    labels: &[u8],
    labels_file: &str,
    name: &str,
) -> Result<Dataset> {
    // Labels first: they are small, and a count mismatch is then caught
    // before the expensive pixel conversion.
    let labels = decode_labels(labels, labels_file)?;
    let images = plain(images, images_file)?;
    let idx = parse_header(&images, images_file, Kind::Images)?;
    let (n, h, w) = (idx.dims[0], idx.dims[1], idx.dims[2]);
    if n != labels.len() {
        return Err(DataError::CountMismatch {
            images_file: images_file.to_owned(),
            labels_file: labels_file.to_owned(),
            images: n,
            labels: labels.len(),
        });
    }
    // Values byte / 255 (a division, correctly rounded), bytes kept for
    // gathering batches; pixel_scale = 1 / 255 = MNIST_PIXEL_SCALE.
    Dataset::from_bytes(
        name,
        idx.data.to_vec(),
        255.0,
        labels,
        [h, w, 1],
        IDX_CLASSES,
    )
}

/// A data set from an IDX images file and an IDX labels file on disk.
pub fn load_idx(images: &Path, labels: &Path, name: &str) -> Result<Dataset> {
    let labels_bytes = read_all(labels)?;
    let images_bytes = read_all(images)?;
    parse_idx(
        &images_bytes,
        &file_label(images),
        &labels_bytes,
        &file_label(labels),
        name,
    )
}

/// The four MNIST files: what each holds, and its usual base name.
const MNIST_FILES: [(&str, &str); 4] = [
    ("MNIST training images", "train-images-idx3-ubyte"),
    ("MNIST training labels", "train-labels-idx1-ubyte"),
    ("MNIST test images", "t10k-images-idx3-ubyte"),
    ("MNIST test labels", "t10k-labels-idx1-ubyte"),
];

/// The path of one MNIST file in `dir`: the usual name gzipped or not, also
/// with the `.idx3` dot some mirrors use (`train-images.idx3-ubyte`).
fn find_mnist_file(dir: &Path, what: &'static str, base: &str) -> Result<PathBuf> {
    let dotted = base.replacen("-idx", ".idx", 1);
    let candidates = [
        format!("{base}.gz"),
        base.to_owned(),
        format!("{dotted}.gz"),
        dotted,
    ];
    candidates
        .iter()
        .map(|c| dir.join(c))
        .find(|p| p.is_file())
        .ok_or_else(|| DataError::MissingFile {
            what,
            dir: dir.to_owned(),
            looked_for: candidates.to_vec(),
        })
}

/// MNIST from `dir`: `(train, test)`, 60,000 and 10,000 samples of 28×28×1,
/// pixels in `[0, 1]`, named `"mnist-train"` and `"mnist-test"`. All four
/// files are located before any is read, so a missing one fails at once; the
/// test set is decoded on a second thread while the training set is.
pub fn load_mnist(dir: &Path) -> Result<(Dataset, Dataset)> {
    let [train_x, train_y, test_x, test_y] =
        MNIST_FILES.map(|(what, base)| find_mnist_file(dir, what, base));
    let (train_x, train_y, test_x, test_y) = (train_x?, train_y?, test_x?, test_y?);
    std::thread::scope(|s| {
        let test = s.spawn(|| load_idx(&test_x, &test_y, "mnist-test"));
        let train = load_idx(&train_x, &train_y, "mnist-train");
        // A panic inside the loader would be a bug; keep it a panic.
        let test = test.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        Ok((train?, test?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn idx_bytes(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = magic.to_be_bytes().to_vec();
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    /// `n` images of `h`x`w`, pixel `(i, k)` = `(i*7 + k) % 256`.
    fn images(n: u32, h: u32, w: u32) -> Vec<u8> {
        let len = (n * h * w) as usize;
        let px: Vec<u8> = (0..len)
            .map(|k| ((k / (h * w) as usize * 7 + k % (h * w) as usize) % 256) as u8)
            .collect();
        idx_bytes(IMAGES_MAGIC, &[n, h, w], &px)
    }

    fn labels(values: &[u8]) -> Vec<u8> {
        idx_bytes(LABELS_MAGIC, &[values.len() as u32], values)
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// Parses images and labels bytes, returning the error message.
    fn parse_err(img: &[u8], lab: &[u8]) -> (DataError, String) {
        let e = parse_idx(img, "img-idx3-ubyte", lab, "lab-idx1-ubyte", "t").unwrap_err();
        let msg = e.to_string();
        (e, msg)
    }

    fn check_toy(d: &Dataset) {
        assert_eq!((d.n, d.h, d.w, d.c, d.n_classes), (3, 4, 5, 1, 10));
        assert_eq!(d.labels, vec![7, 0, 9]);
        assert_eq!(d.pixel_scale, MNIST_PIXEL_SCALE);
        // Sample 1, pixel (row 2, col 3) = byte 1*7 + 13 = 20.
        assert_eq!(d.sample(1)[2 * 5 + 3], 20.0 / 255.0);
        assert!(d.images().iter().all(|&x| (0.0..=1.0).contains(&x)));
        for (k, &x) in d.images().iter().enumerate() {
            assert_eq!(
                (x / d.pixel_scale).round() as usize,
                (k / 20 * 7 + k % 20) % 256
            );
        }
    }

    #[test]
    fn raw_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let img = write(dir.path(), "x-idx3-ubyte", &images(3, 4, 5));
        let lab = write(dir.path(), "y-idx1-ubyte", &labels(&[7, 0, 9]));
        let d = load_idx(&img, &lab, "toy").unwrap();
        assert_eq!(d.name, "toy");
        check_toy(&d);
    }

    #[test]
    fn gzip_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let img = write(dir.path(), "x-idx3-ubyte.gz", &gzip(&images(3, 4, 5)));
        let lab = write(dir.path(), "y-idx1-ubyte.gz", &gzip(&labels(&[7, 0, 9])));
        check_toy(&load_idx(&img, &lab, "toy").unwrap());
    }

    #[test]
    fn gzip_is_detected_by_magic_not_by_name() {
        let dir = tempfile::tempdir().unwrap();
        // Compressed without the suffix, raw with it: both load.
        let img = write(dir.path(), "x-idx3-ubyte", &gzip(&images(3, 4, 5)));
        let lab = write(dir.path(), "y-idx1-ubyte.gz", &labels(&[7, 0, 9]));
        check_toy(&load_idx(&img, &lab, "toy").unwrap());
    }

    #[test]
    fn bad_magic() {
        let img = idx_bytes(0x1234_5678, &[1, 1, 1], &[0]);
        let (e, msg) = parse_err(&img, &labels(&[1]));
        assert!(matches!(
            e,
            DataError::BadMagic {
                found: 0x1234_5678,
                expected: IMAGES_MAGIC,
                ..
            }
        ));
        assert!(
            msg.starts_with("img-idx3-ubyte: bad magic number 0x12345678, expected 0x00000803"),
            "{msg}"
        );
        // Right layout, wrong element type.
        let lab = idx_bytes(0x0000_0D01, &[1], &[0, 0, 0, 0]);
        let (e, msg) = parse_err(&images(1, 1, 1), &lab);
        assert!(matches!(e, DataError::BadMagic { .. }));
        assert!(
            msg.starts_with("lab-idx1-ubyte: ") && msg.contains("(f32)"),
            "{msg}"
        );
        let (_, msg) = parse_err(&images(1, 1, 1), b"PK\x03\x04rest");
        assert!(msg.contains("zip archive"), "{msg}");
    }

    #[test]
    fn wrong_dimension_count() {
        let img = idx_bytes(0x0000_0802, &[1, 4], &[0; 4]);
        let (e, msg) = parse_err(&img, &labels(&[1]));
        assert!(
            matches!(
                e,
                DataError::WrongDims {
                    found: 2,
                    expected: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            msg.starts_with("img-idx3-ubyte: declares 2 dimension(s)"),
            "{msg}"
        );
        // Swapped files: the labels file is checked first.
        let (e, msg) = parse_err(&labels(&[1]), &images(1, 1, 1));
        assert!(
            matches!(
                e,
                DataError::WrongDims {
                    found: 3,
                    expected: 1,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(msg.contains("not swapped"), "{msg}");
    }

    #[test]
    fn truncated_data() {
        let full = labels(&[1; 10000]);
        let e = parse_idx(
            &images(1, 1, 1),
            "i",
            &full[..full.len() - 10],
            "t10k-labels-idx1-ubyte.gz",
            "t",
        )
        .unwrap_err();
        assert!(matches!(e, DataError::Truncated { found: 9990, .. }));
        assert!(
            e.to_string().starts_with(
                "t10k-labels-idx1-ubyte.gz: truncated: header declares 10000 labels \
                 but file holds 9990 bytes of data"
            ),
            "{e}"
        );
        let img = images(2, 3, 3);
        let (e, msg) = parse_err(&img[..img.len() - 1], &labels(&[1, 2]));
        assert!(matches!(e, DataError::Truncated { found: 17, .. }));
        assert!(
            msg.contains(
                "img-idx3-ubyte: truncated: header declares 2 images of 3x3 pixels (18 bytes)"
            ),
            "{msg}"
        );
    }

    #[test]
    fn truncated_header() {
        let img = images(2, 3, 3);
        for cut in [0, 3, 4, 15] {
            let (e, msg) = parse_err(&img[..cut], &labels(&[1, 2]));
            assert!(
                matches!(e, DataError::TooShort { needed: 16, .. }),
                "{cut}: {e:?}"
            );
            assert!(msg.starts_with("img-idx3-ubyte: too short"), "{msg}");
        }
    }

    #[test]
    fn trailing_bytes() {
        let mut lab = labels(&[1, 2]);
        lab.extend_from_slice(&[0; 5]);
        let (e, msg) = parse_err(&images(2, 1, 1), &lab);
        assert!(
            matches!(e, DataError::TrailingBytes { extra: 5, .. }),
            "{e:?}"
        );
        assert!(
            msg.starts_with("lab-idx1-ubyte: 5 unexpected trailing bytes after the 2 labels"),
            "{msg}"
        );
        let mut img = images(2, 1, 1);
        img.push(0);
        let (e, _) = parse_err(&img, &labels(&[1, 2]));
        assert!(
            matches!(e, DataError::TrailingBytes { extra: 1, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn label_out_of_range() {
        let (e, msg) = parse_err(&images(3, 1, 1), &labels(&[1, 2, 10]));
        assert!(
            matches!(
                e,
                DataError::LabelOutOfRange {
                    index: 2,
                    value: 10,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            msg.starts_with("lab-idx1-ubyte: label 10 of sample 2 is out of range"),
            "{msg}"
        );
    }

    #[test]
    fn count_mismatch() {
        let (e, msg) = parse_err(&images(3, 2, 2), &labels(&[1, 2]));
        assert!(
            matches!(
                e,
                DataError::CountMismatch {
                    images: 3,
                    labels: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            msg.starts_with("img-idx3-ubyte holds 3 images but lab-idx1-ubyte holds 2 labels"),
            "{msg}"
        );
    }

    #[test]
    fn zero_sized_images_and_huge_headers() {
        let (e, msg) = parse_err(&idx_bytes(IMAGES_MAGIC, &[1, 0, 28], &[]), &labels(&[1]));
        assert!(matches!(e, DataError::BadHeader { .. }), "{e:?}");
        assert!(
            msg.contains("img-idx3-ubyte: bad header: declares 1 images of 0x28"),
            "{msg}"
        );
        // Declares 2^32-1 images of 2^32-1 x 2^32-1: overflows usize.
        let huge = idx_bytes(IMAGES_MAGIC, &[u32::MAX; 3], &[0; 8]);
        let (e, _) = parse_err(&huge, &labels(&[1]));
        assert!(matches!(e, DataError::BadHeader { .. }), "{e:?}");
        // Declares far more than present: truncated, and nothing huge allocated.
        let big = idx_bytes(IMAGES_MAGIC, &[60000, 28, 28], &[0; 8]);
        let (e, _) = parse_err(&big, &labels(&[1]));
        assert!(matches!(e, DataError::Truncated { found: 8, .. }), "{e:?}");
    }

    #[test]
    fn corrupt_gzip_names_the_file() {
        let gz = gzip(&labels(&[1, 2, 3]));
        let (e, msg) = parse_err(&images(3, 1, 1), &gz[..gz.len() / 2]);
        assert!(matches!(e, DataError::Gzip { .. }), "{e:?}");
        assert!(
            msg.starts_with("lab-idx1-ubyte: gzip data is corrupt"),
            "{msg}"
        );
    }

    #[test]
    fn unreadable_file_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let lab = write(dir.path(), "y-idx1-ubyte", &labels(&[1]));
        let gone = dir.path().join("nope-idx3-ubyte");
        let e = load_idx(&gone, &lab, "t").unwrap_err();
        assert!(matches!(e, DataError::Io { .. }), "{e:?}");
        assert!(
            e.to_string().contains("nope-idx3-ubyte: cannot read"),
            "{e}"
        );
    }

    /// A tiny MNIST directory: 4 training and 2 test images of 2x3.
    fn fake_mnist(dir: &Path, gz_train: bool) {
        let enc = |b: Vec<u8>, gz: bool| if gz { gzip(&b) } else { b };
        let ext = if gz_train { ".gz" } else { "" };
        write(
            dir,
            &format!("train-images-idx3-ubyte{ext}"),
            &enc(images(4, 2, 3), gz_train),
        );
        write(
            dir,
            &format!("train-labels-idx1-ubyte{ext}"),
            &enc(labels(&[5, 0, 4, 1]), gz_train),
        );
        write(dir, "t10k-images.idx3-ubyte", &images(2, 2, 3));
        write(dir, "t10k-labels-idx1-ubyte.gz", &gzip(&labels(&[7, 2])));
    }

    #[test]
    fn load_mnist_finds_gzipped_raw_and_dotted_names() {
        for gz_train in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            fake_mnist(dir.path(), gz_train);
            let (train, test) = load_mnist(dir.path()).unwrap();
            assert_eq!(
                (train.name.as_str(), test.name.as_str()),
                ("mnist-train", "mnist-test")
            );
            assert_eq!((train.len(), train.h, train.w, train.c), (4, 2, 3, 1));
            assert_eq!(train.labels, vec![5, 0, 4, 1]);
            assert_eq!(test.labels, vec![7, 2]);
            assert_eq!(test.sample(1)[5], 12.0 / 255.0);
        }
    }

    #[test]
    fn load_mnist_missing_file_lists_names_and_suggests_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        fake_mnist(dir.path(), true);
        std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
        let e = load_mnist(dir.path()).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::MissingFile {
                    what: "MNIST test labels",
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        for name in [
            "t10k-labels-idx1-ubyte.gz",
            "t10k-labels-idx1-ubyte,",
            "t10k-labels.idx1-ubyte.gz",
            "t10k-labels.idx1-ubyte;",
            "--data-dir",
        ] {
            assert!(msg.contains(name), "{name} not in: {msg}");
        }
        assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    }

    #[test]
    fn load_mnist_reports_the_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        fake_mnist(dir.path(), false);
        write(dir.path(), "train-labels-idx1-ubyte", &labels(&[5, 0, 4]));
        let e = load_mnist(dir.path()).unwrap_err();
        assert!(
            matches!(
                e,
                DataError::CountMismatch {
                    images: 4,
                    labels: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains("train-images-idx3-ubyte holds 4 images"),
            "{e}"
        );
    }

    /// The real MNIST, when `$NORMCORE_MNIST_DIR` or the project's shared
    /// data directory (`../shared/data/mnist` beside the repository) exists.
    #[test]
    fn real_mnist_if_present() {
        let dir = std::env::var_os("NORMCORE_MNIST_DIR").map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/mnist"),
            PathBuf::from,
        );
        if !dir.is_dir() {
            println!(
                "note: {} not found; skipping the real-MNIST test",
                dir.display()
            );
            return;
        }
        let (train, test) = load_mnist(&dir).unwrap();
        assert_eq!((train.len(), test.len()), (60_000, 10_000));
        for d in [&train, &test] {
            assert_eq!((d.h, d.w, d.c, d.n_classes), (28, 28, 1, 10));
            assert!(d.class_counts().iter().all(|&k| k > 0));
        }
        assert_eq!(train.labels[0], 5);
        assert_eq!(test.labels[0], 7);
        assert!(train.images().iter().all(|&x| (0.0..=1.0).contains(&x)));
        assert_eq!(train.images().iter().fold(0.0f32, |m, &x| m.max(x)), 1.0);
    }
}
