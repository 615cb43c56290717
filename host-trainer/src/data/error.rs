//! The one error type of the data module.
//!
//! Every variant that comes from a file carries that file's name (`file`: the
//! path as the caller gave it, or `built-in digits.csv.gz`), and every message
//! says what is wrong and what to do about it, because these messages are what
//! a user sees when `normcore train --data-dir ...` fails.

use std::path::PathBuf;

/// Why a data set could not be read, or a request on one could not be met.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The file could not be opened or read at all.
    #[error("{file}: cannot read: {source}; check the path and its permissions")]
    Io {
        /// The file.
        file: String,
        /// What the operating system said.
        #[source]
        source: std::io::Error,
    },

    /// The file starts with the gzip magic bytes but does not decompress.
    #[error(
        "{file}: gzip data is corrupt or truncated ({source}); fetch the file again \
         (`gzip -t` checks a download)"
    )]
    Gzip {
        /// The file.
        file: String,
        /// What the decoder said.
        #[source]
        source: std::io::Error,
    },

    /// Too few bytes for even the IDX header.
    #[error(
        "{file}: too short for an IDX {kind} file: {found} bytes, but its header alone \
         is {needed} bytes; the file is empty or cut short: fetch it again"
    )]
    TooShort {
        /// The file.
        file: String,
        /// `"images"` or `"labels"`.
        kind: &'static str,
        /// Bytes present (after decompression).
        found: usize,
        /// Bytes the header needs.
        needed: usize,
    },

    /// The first four bytes are not the IDX magic number expected.
    #[error("{file}: bad magic number 0x{found:08X}, expected 0x{expected:08X} ({hint})")]
    BadMagic {
        /// The file.
        file: String,
        /// The big-endian u32 found.
        found: u32,
        /// The magic number an unsigned-byte IDX file of this kind has.
        expected: u32,
        /// What the found value suggests, and what to do.
        hint: String,
    },

    /// An unsigned-byte IDX file with the wrong number of dimensions.
    #[error(
        "{file}: declares {found} dimension(s), but an IDX {kind} file has {expected} \
         ({layout}); check that the images and labels files are not swapped"
    )]
    WrongDims {
        /// The file.
        file: String,
        /// `"images"` or `"labels"`.
        kind: &'static str,
        /// Dimension count in the header.
        found: u8,
        /// Dimension count this kind has.
        expected: u8,
        /// The dimensions' meaning, e.g. `"count, rows, columns"`.
        layout: &'static str,
    },

    /// A header whose sizes cannot describe a usable data set.
    #[error("{file}: bad header: {reason}")]
    BadHeader {
        /// The file.
        file: String,
        /// What is wrong, and what to do.
        reason: String,
    },

    /// Fewer data bytes than the header declares.
    #[error(
        "{file}: truncated: header declares {declared} but file holds {found} bytes of \
         data; the download was probably cut short: fetch the file again"
    )]
    Truncated {
        /// The file.
        file: String,
        /// What the header declares, e.g. `"10000 labels"`.
        declared: String,
        /// Data bytes present after the header.
        found: usize,
    },

    /// More data bytes than the header declares.
    #[error(
        "{file}: {extra} unexpected trailing bytes after the {declared} the header \
         declares; the file is corrupt or two files were joined: fetch it again"
    )]
    TrailingBytes {
        /// The file.
        file: String,
        /// What the header declares, e.g. `"10000 labels"`.
        declared: String,
        /// Bytes beyond the declared data.
        extra: usize,
    },

    /// A class label that the data set's class count does not allow.
    #[error(
        "{file}: label {value} of sample {index} is out of range: labels must be below \
         {n_classes}; the file is corrupt or not a {n_classes}-class data set"
    )]
    LabelOutOfRange {
        /// The file.
        file: String,
        /// Zero-based sample index.
        index: usize,
        /// The label found.
        value: u64,
        /// The number of classes allowed.
        n_classes: usize,
    },

    /// An images file and a labels file that disagree on the sample count.
    #[error(
        "{images_file} holds {images} images but {labels_file} holds {labels} labels; \
         the two files must come from the same set (train with train, t10k with t10k)"
    )]
    CountMismatch {
        /// The images file.
        images_file: String,
        /// The labels file.
        labels_file: String,
        /// Images in the images file.
        images: usize,
        /// Labels in the labels file.
        labels: usize,
    },

    /// One of the data set's files is not in the directory.
    #[error(
        "{what} not found in {dir}: looked for {looked_for}; download it there, or \
         pass --data-dir DIR naming the directory that holds the MNIST files",
        dir = dir.display(),
        looked_for = looked_for.join(", ")
    )]
    MissingFile {
        /// What was wanted, e.g. `"MNIST training images"`.
        what: &'static str,
        /// The directory searched.
        dir: PathBuf,
        /// The file names tried, in order.
        looked_for: Vec<String>,
    },

    /// A CSV file that is not valid UTF-8 text.
    #[error("{file}: line {line}: not UTF-8 text; is this really a CSV file?")]
    CsvEncoding {
        /// The file.
        file: String,
        /// One-based line number.
        line: usize,
    },

    /// A CSV file without data rows.
    #[error("{file}: no data rows; a CSV data set needs one sample per line")]
    CsvEmpty {
        /// The file.
        file: String,
    },

    /// A CSV row with too few columns for a feature and a label.
    #[error(
        "{file}: line {line}: {found} column(s); each row needs at least one feature \
         and a final integer label, separated by commas"
    )]
    CsvTooFewColumns {
        /// The file.
        file: String,
        /// One-based line number.
        line: usize,
        /// Columns found.
        found: usize,
    },

    /// A CSV row whose column count differs from the first row's.
    #[error(
        "{file}: line {line}: {found} columns, but line {first_line} has {expected}; \
         every row must have the same number of comma-separated values"
    )]
    CsvRagged {
        /// The file.
        file: String,
        /// One-based line number of the bad row.
        line: usize,
        /// Columns in the bad row.
        found: usize,
        /// Columns in the first row.
        expected: usize,
        /// One-based line number of the first row.
        first_line: usize,
    },

    /// A CSV field that is not a number.
    #[error("{file}: line {line}, column {column}: cannot parse {text:?} as a number")]
    CsvParse {
        /// The file.
        file: String,
        /// One-based line number.
        line: usize,
        /// One-based column number.
        column: usize,
        /// The field's text.
        text: String,
    },

    /// A CSV feature that parses to NaN or an infinity.
    #[error(
        "{file}: line {line}, column {column}: {text:?} is not a finite number; \
         remove or impute missing values before training"
    )]
    CsvNonFinite {
        /// The file.
        file: String,
        /// One-based line number.
        line: usize,
        /// One-based column number.
        column: usize,
        /// The field's text.
        text: String,
    },

    /// A CSV label that is not a non-negative integer that fits a `u16`.
    #[error(
        "{file}: line {line}: label {text:?} is not an integer in 0..=65535; the last \
         column of each row must be the class number"
    )]
    CsvLabel {
        /// The file.
        file: String,
        /// One-based line number.
        line: usize,
        /// The label field's text.
        text: String,
    },

    /// A CSV label at or above the class count the caller gave.
    #[error(
        "{file}: line {line}: label {value} is out of range for {n_classes} classes; \
         pass a larger class count or fix the label"
    )]
    CsvLabelRange {
        /// The file.
        file: String,
        /// One-based line number.
        line: usize,
        /// The label.
        value: u16,
        /// The class count the caller gave.
        n_classes: usize,
    },

    /// The features per row do not fill the requested sample shape.
    #[error(
        "{file}: rows have {features} features, but the requested shape \
         {h}x{w}x{c} needs {needed}; fix the shape or the file"
    )]
    ShapeMismatch {
        /// The file.
        file: String,
        /// Features per row.
        features: usize,
        /// Requested height.
        h: usize,
        /// Requested width.
        w: usize,
        /// Requested channels.
        c: usize,
        /// `h·w·c`.
        needed: usize,
    },

    /// A reader option that cannot work (e.g. a non-positive scale).
    #[error("{file}: invalid option: {reason}")]
    InvalidOption {
        /// The file the option was meant for.
        file: String,
        /// What is wrong.
        reason: String,
    },

    /// A split that the data set cannot satisfy.
    #[error("data set {name}: cannot split: {reason}")]
    InvalidSplit {
        /// The data set's name.
        name: String,
        /// What is wrong.
        reason: String,
    },

    /// A sample index or range beyond the data set.
    #[error("data set {name}: {what} is out of range for {len} samples")]
    OutOfRange {
        /// The data set's name.
        name: String,
        /// The index or range asked for.
        what: String,
        /// Samples in the data set.
        len: usize,
    },

    /// A mini-batch buffer of the wrong length for `gather`.
    #[error(
        "data set {name}: {buffer} buffer holds {found} values, but {samples} samples \
         need {expected}"
    )]
    BatchBuffer {
        /// The data set's name.
        name: String,
        /// `"image"` or `"label"`.
        buffer: &'static str,
        /// Samples requested.
        samples: usize,
        /// Values the buffer must hold.
        expected: usize,
        /// Values it holds.
        found: usize,
    },

    /// Fields that contradict each other (lengths, shape, labels).
    #[error("data set {name}: inconsistent: {reason}")]
    Inconsistent {
        /// The data set's name.
        name: String,
        /// What disagrees.
        reason: String,
    },
}

/// Result alias of the data module.
pub type Result<T, E = DataError> = std::result::Result<T, E>;
