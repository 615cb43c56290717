//! CSV data sets: one sample per line, its features then an integer label.
//!
//! Format: comma-separated, fields trimmed of spaces (so `\r\n` line ends
//! work), blank lines skipped, gzip-compressed or plain (recognised by the
//! magic bytes). An optional header is recognised when the first non-blank
//! line has a field that is not a number; the header must have as many
//! columns as the rows. No quoting: features are numbers.
//!
//! Checks: every row has the first row's column count (the error gives the
//! line), features are finite numbers, labels are integers in `0..=65535`
//! (`3` and `3.0` both read as 3), below the class count when one is given.
//! The sample shape is the caller's (`8×8×1` for the digits), or `1×1×F` for
//! `F` features.

use std::path::Path;

use super::{file_label, plain, read_all, DataError, Dataset, Result};

/// How features are scaled into the stored values: `x = raw / divisor`, and
/// [`Dataset::pixel_scale`] `= 1 / divisor`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Scale {
    /// Stored as read (divisor 1).
    #[default]
    None,
    /// Divided by this full-scale value (finite, positive), e.g. 16 for the
    /// digits or 255 for bytes; values above it end up above 1.
    DivideBy(f32),
    /// Divided by the largest magnitude in the file, so that values land in
    /// `[-1, 1]` (`[0, 1]` for non-negative data). All zeros are left as is.
    ObservedMax,
}

/// Options of [`read_csv`] and [`parse_csv`]; `Default` reads feature vectors
/// unscaled, with the class count taken from the labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CsvOptions {
    /// Sample shape `[h, w, c]` with `h·w·c` = features per row; `None` is
    /// `[1, 1, features]`.
    pub shape: Option<[usize; 3]>,
    /// Class count; `None` is the largest label + 1.
    pub n_classes: Option<usize>,
    /// Feature scaling.
    pub scale: Scale,
    /// The data set's name; `None` is the file name without `.csv`/`.gz`.
    pub name: Option<String>,
}

/// Reads a CSV data set from `path` (gzipped or plain).
pub fn read_csv(path: &Path, opts: &CsvOptions) -> Result<Dataset> {
    parse_csv(&read_all(path)?, &file_label(path), opts)
}

/// Parses the bytes of a CSV data set (gzipped or plain); `file` names it in
/// errors and, when `opts.name` is `None`, gives the data set its name.
pub fn parse_csv(bytes: &[u8], file: &str, opts: &CsvOptions) -> Result<Dataset> {
    let invalid = |reason: String| DataError::InvalidOption {
        file: file.to_owned(),
        reason,
    };
    if let Some([h, w, c]) = opts.shape {
        if h == 0 || w == 0 || c == 0 {
            return Err(invalid(format!("shape {h}x{w}x{c} has a zero dimension")));
        }
    }
    if opts.n_classes == Some(0) {
        return Err(invalid("a class count of 0".to_owned()));
    }
    let divisor = match opts.scale {
        Scale::DivideBy(m) if !(m.is_finite() && m > 0.0) => {
            return Err(invalid(format!(
                "scale divisor {m} is not a positive number"
            )))
        }
        Scale::DivideBy(m) => Some(m),
        Scale::None => Some(1.0),
        Scale::ObservedMax => None,
    };

    let bytes = plain(bytes, file)?;
    let text = utf8(&bytes, file)?;
    let mut rows = Rows::new(file, opts);
    for (i, line) in text.split('\n').enumerate() {
        rows.push(i + 1, line)?;
    }
    let Rows {
        mut features,
        labels,
        columns,
        ..
    } = rows;
    let Some((columns, _)) = columns.filter(|_| !labels.is_empty()) else {
        return Err(DataError::CsvEmpty {
            file: file.to_owned(),
        });
    };
    let shape = opts.shape.unwrap_or([1, 1, columns - 1]);

    let divisor = divisor.unwrap_or_else(|| {
        let max = features.iter().fold(0.0f32, |m, &x| m.max(x.abs()));
        if max > 0.0 {
            max
        } else {
            1.0
        }
    });
    if divisor != 1.0 {
        for x in &mut features {
            *x /= divisor;
        }
    }
    let n_classes = opts
        .n_classes
        .unwrap_or_else(|| labels.iter().max().map_or(0, |&m| usize::from(m) + 1));
    let name = opts.name.clone().unwrap_or_else(|| default_name(file));
    Dataset::new(name, features, labels, shape, n_classes, 1.0 / divisor)
}

/// The text of `bytes`, or an error giving the line of the first bad byte.
fn utf8<'a>(bytes: &'a [u8], file: &str) -> Result<&'a str> {
    std::str::from_utf8(bytes).map_err(|e| DataError::CsvEncoding {
        file: file.to_owned(),
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })
}

/// `"dir/digits.csv.gz"` -> `"digits"`.
fn default_name(file: &str) -> String {
    let base = Path::new(file)
        .file_name()
        .map_or_else(|| file.to_owned(), |n| n.to_string_lossy().into_owned());
    let base = base.strip_suffix(".gz").unwrap_or(&base);
    base.strip_suffix(".csv").unwrap_or(base).to_owned()
}

/// The row-by-row parser state.
struct Rows<'o> {
    file: &'o str,
    opts: &'o CsvOptions,
    /// Column count and the line that set it (the header or first row).
    columns: Option<(usize, usize)>,
    features: Vec<f32>,
    labels: Vec<u16>,
}

impl<'o> Rows<'o> {
    fn new(file: &'o str, opts: &'o CsvOptions) -> Self {
        Rows {
            file,
            opts,
            columns: None,
            features: Vec::new(),
            labels: Vec::new(),
        }
    }

    fn push(&mut self, line_no: usize, line: &str) -> Result<()> {
        let file = self.file;
        let mut line = line.trim();
        if self.columns.is_none() {
            line = line.trim_start_matches('\u{feff}'); // a byte-order mark
        }
        if line.is_empty() {
            return Ok(());
        }
        let found = line.bytes().filter(|&b| b == b',').count() + 1;
        let Some((expected, first_line)) = self.columns else {
            return self.first_row(line_no, line, found);
        };
        if found != expected {
            return Err(DataError::CsvRagged {
                file: file.to_owned(),
                line: line_no,
                found,
                expected,
                first_line,
            });
        }
        self.data_row(line_no, line)
    }

    /// The first non-blank line: a header or the first data row.
    fn first_row(&mut self, line_no: usize, line: &str, found: usize) -> Result<()> {
        if found < 2 {
            return Err(DataError::CsvTooFewColumns {
                file: self.file.to_owned(),
                line: line_no,
                found,
            });
        }
        if let Some([h, w, c]) = self.opts.shape {
            let needed = h.saturating_mul(w).saturating_mul(c);
            if needed != found - 1 {
                return Err(DataError::ShapeMismatch {
                    file: self.file.to_owned(),
                    features: found - 1,
                    h,
                    w,
                    c,
                    needed,
                });
            }
        }
        self.columns = Some((found, line_no));
        let is_header = line.split(',').any(|f| f.trim().parse::<f32>().is_err());
        if is_header {
            Ok(())
        } else {
            self.data_row(line_no, line)
        }
    }

    /// A row with the right column count: parse its features and label.
    fn data_row(&mut self, line: usize, text: &str) -> Result<()> {
        let file = self.file;
        // The column count was checked, so there is a last comma.
        let (feats, label) = text.rsplit_once(',').unwrap_or(("", text));
        for (j, field) in feats.split(',').enumerate() {
            let field = field.trim();
            let x: f32 = field.parse().map_err(|_| DataError::CsvParse {
                file: file.to_owned(),
                line,
                column: j + 1,
                text: field.to_owned(),
            })?;
            if !x.is_finite() {
                return Err(DataError::CsvNonFinite {
                    file: file.to_owned(),
                    line,
                    column: j + 1,
                    text: field.to_owned(),
                });
            }
            self.features.push(x);
        }
        let label = label.trim();
        let value = parse_label(label).ok_or_else(|| DataError::CsvLabel {
            file: file.to_owned(),
            line,
            text: label.to_owned(),
        })?;
        if let Some(n) = self.opts.n_classes {
            if usize::from(value) >= n {
                return Err(DataError::CsvLabelRange {
                    file: file.to_owned(),
                    line,
                    value,
                    n_classes: n,
                });
            }
        }
        self.labels.push(value);
        Ok(())
    }
}

/// A label: an integer in `0..=65535`, written as one (`3`) or as a whole
/// float (`3.0`, as pandas writes integer columns that had missing values).
fn parse_label(text: &str) -> Option<u16> {
    if let Ok(v) = text.parse::<u16>() {
        return Some(v);
    }
    let v: f64 = text.parse().ok()?;
    (v.fract() == 0.0 && (0.0..=f64::from(u16::MAX)).contains(&v)).then_some(v as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn parse(text: &str, opts: &CsvOptions) -> Result<Dataset> {
        parse_csv(text.as_bytes(), "dir/set.csv", opts)
    }

    fn err(text: &str, opts: &CsvOptions) -> (DataError, String) {
        let e = parse(text, opts).unwrap_err();
        let msg = e.to_string();
        (e, msg)
    }

    #[test]
    fn without_header() {
        let d = parse("1,2,3,0\n4,5,6,2\n", &CsvOptions::default()).unwrap();
        assert_eq!(d.name, "set");
        assert_eq!((d.n, d.h, d.w, d.c, d.n_classes), (2, 1, 1, 3, 3));
        assert_eq!(d.images(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(d.labels, vec![0, 2]);
        assert_eq!(d.pixel_scale, 1.0);
    }

    #[test]
    fn with_header_crlf_blank_lines_and_float_labels() {
        let text = "\u{feff}a, b ,label\r\n\r\n 0.5, -1e-3 , 1.0\r\n2,3,4\r\n\r\n";
        let d = parse(text, &CsvOptions::default()).unwrap();
        assert_eq!(d.images(), vec![0.5, -1e-3, 2.0, 3.0]);
        assert_eq!(d.labels, vec![1, 4]);
        assert_eq!(d.n_classes, 5);
        // A header with numeric column names but a word for the label.
        let d = parse("0,1,label\n7,8,1\n", &CsvOptions::default()).unwrap();
        assert_eq!(d.images(), vec![7.0, 8.0]);
    }

    #[test]
    fn gzipped_with_shape_scale_and_name() {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"0,4,8,16,3\n16,16,0,2,1\n").unwrap();
        let gz = enc.finish().unwrap();
        let opts = CsvOptions {
            shape: Some([2, 2, 1]),
            n_classes: Some(10),
            scale: Scale::DivideBy(16.0),
            name: None,
        };
        let d = parse_csv(&gz, "data/tiny.csv.gz", &opts).unwrap();
        assert_eq!(d.name, "tiny");
        assert_eq!((d.n, d.h, d.w, d.c, d.n_classes), (2, 2, 2, 1, 10));
        assert_eq!(d.images(), vec![0.0, 0.25, 0.5, 1.0, 1.0, 1.0, 0.0, 0.125]);
        assert_eq!(d.pixel_scale, 1.0 / 16.0);
        let named = CsvOptions {
            name: Some("other".into()),
            ..opts
        };
        assert_eq!(parse_csv(&gz, "x", &named).unwrap().name, "other");
    }

    #[test]
    fn observed_max_scaling() {
        let opts = CsvOptions {
            scale: Scale::ObservedMax,
            ..CsvOptions::default()
        };
        let d = parse("2,-8,0\n4,1,1\n", &opts).unwrap();
        assert_eq!(d.images(), vec![0.25, -1.0, 0.5, 0.125]);
        assert_eq!(d.pixel_scale, 0.125);
        let zeros = parse("0,0,0\n", &opts).unwrap();
        assert_eq!((zeros.images()[0], zeros.pixel_scale), (0.0, 1.0));
    }

    #[test]
    fn ragged_row_reports_its_line() {
        let (e, msg) = err("1,2,0\n3,4,1\n\n5,1\n", &CsvOptions::default());
        assert!(
            matches!(
                e,
                DataError::CsvRagged {
                    line: 4,
                    found: 2,
                    expected: 3,
                    first_line: 1,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            msg.starts_with("dir/set.csv: line 4: 2 columns, but line 1 has 3"),
            "{msg}"
        );
        // A header sets the count too.
        let (e, _) = err("x,y,label\n1,2,3,0\n", &CsvOptions::default());
        assert!(
            matches!(
                e,
                DataError::CsvRagged {
                    line: 2,
                    first_line: 1,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn non_numeric_reports_line_and_column() {
        let (e, msg) = err("1,2,0\n3,x4,1\n", &CsvOptions::default());
        assert!(
            matches!(
                e,
                DataError::CsvParse {
                    line: 2,
                    column: 2,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            msg,
            "dir/set.csv: line 2, column 2: cannot parse \"x4\" as a number"
        );
        // After a header, the first data row is checked like any other.
        let (e, _) = err("a,b,c\n1,,0\n", &CsvOptions::default());
        assert!(
            matches!(
                e,
                DataError::CsvParse {
                    line: 2,
                    column: 2,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn non_finite_values_are_rejected() {
        for bad in ["nan", "inf", "-Infinity", "1e39"] {
            let (e, msg) = err(&format!("1,2,0\n3,{bad},1\n"), &CsvOptions::default());
            assert!(
                matches!(
                    e,
                    DataError::CsvNonFinite {
                        line: 2,
                        column: 2,
                        ..
                    }
                ),
                "{bad}: {e:?}"
            );
            assert!(msg.starts_with("dir/set.csv: line 2, column 2:"), "{msg}");
        }
    }

    #[test]
    fn labels_must_be_non_negative_integers() {
        for bad in ["-1", "2.5", "x", "65536", "", "nan"] {
            let (e, msg) = err(&format!("1,0\n2,{bad}\n"), &CsvOptions::default());
            assert!(
                matches!(e, DataError::CsvLabel { line: 2, .. }),
                "{bad:?}: {e:?}"
            );
            assert!(msg.starts_with("dir/set.csv: line 2: label"), "{msg}");
        }
        let opts = CsvOptions {
            n_classes: Some(3),
            ..CsvOptions::default()
        };
        let (e, msg) = err("1,2\n2,3\n", &opts);
        assert!(
            matches!(
                e,
                DataError::CsvLabelRange {
                    line: 2,
                    value: 3,
                    n_classes: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            msg.contains("line 2: label 3 is out of range for 3 classes"),
            "{msg}"
        );
    }

    #[test]
    fn shape_must_match_the_features() {
        let opts = CsvOptions {
            shape: Some([8, 8, 1]),
            ..CsvOptions::default()
        };
        let (e, msg) = err("1,2,3,0\n", &opts);
        assert!(
            matches!(
                e,
                DataError::ShapeMismatch {
                    features: 3,
                    needed: 64,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(
            msg.starts_with("dir/set.csv: rows have 3 features, but the requested shape 8x8x1"),
            "{msg}"
        );
    }

    #[test]
    fn empty_and_degenerate_files() {
        for text in ["", "\n\n", "a,b,label\n"] {
            let (e, msg) = err(text, &CsvOptions::default());
            assert!(matches!(e, DataError::CsvEmpty { .. }), "{text:?}: {e:?}");
            assert!(msg.starts_with("dir/set.csv: no data rows"), "{msg}");
        }
        let (e, _) = err("3\n4\n", &CsvOptions::default());
        assert!(
            matches!(
                e,
                DataError::CsvTooFewColumns {
                    line: 1,
                    found: 1,
                    ..
                }
            ),
            "{e:?}"
        );
        let e = parse_csv(b"1,0\n1,\xff,0", "bin.csv", &CsvOptions::default()).unwrap_err();
        assert!(matches!(e, DataError::CsvEncoding { line: 2, .. }), "{e:?}");
        assert!(
            e.to_string().starts_with("bin.csv: line 2: not UTF-8"),
            "{e}"
        );
    }

    #[test]
    fn invalid_options() {
        for opts in [
            CsvOptions {
                scale: Scale::DivideBy(0.0),
                ..CsvOptions::default()
            },
            CsvOptions {
                scale: Scale::DivideBy(f32::NAN),
                ..CsvOptions::default()
            },
            CsvOptions {
                shape: Some([0, 1, 1]),
                ..CsvOptions::default()
            },
            CsvOptions {
                n_classes: Some(0),
                ..CsvOptions::default()
            },
        ] {
            let (e, _) = err("1,0\n", &opts);
            assert!(
                matches!(e, DataError::InvalidOption { .. }),
                "{opts:?}: {e:?}"
            );
        }
    }

    #[test]
    fn read_csv_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("feat.csv");
        std::fs::write(&path, "1,2,1\n3,4,0\n").unwrap();
        let d = read_csv(&path, &CsvOptions::default()).unwrap();
        assert_eq!((d.name.as_str(), d.len(), d.n_classes), ("feat", 2, 2));
        let e = read_csv(&dir.path().join("none.csv"), &CsvOptions::default()).unwrap_err();
        assert!(
            matches!(e, DataError::Io { .. }) && e.to_string().contains("none.csv"),
            "{e}"
        );
    }
}
