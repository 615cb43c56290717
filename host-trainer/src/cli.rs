//! Command-line pieces shared by the subcommands: data-set selection and
//! progress bars.

use crate::data::{self, Dataset};
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Where samples come from.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Data set: `digits` (built in, 8x8), `idx` (the four IDX files of
    /// MNIST, Fashion-MNIST or any set in that format, in --data-dir;
    /// `mnist` is the same), or a CSV file path (features then label per
    /// row).
    #[arg(long, default_value = "digits")]
    pub data: String,
    /// For --data idx: the directory holding the four IDX files
    /// (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-..., .gz or
    /// raw). Default: the first of $NORMCORE_MNIST_DIR, ./data/mnist,
    /// ../shared/data/mnist that exists.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// For CSV data: a separate test file (default: a stratified 80/20 split).
    #[arg(long)]
    pub test_csv: Option<PathBuf>,
    /// For CSV data: sample shape HxWxC (default 1x1xFEATURES).
    #[arg(long)]
    pub input_shape: Option<String>,
}

/// Train and test sets.
#[derive(Debug)]
pub struct Data {
    /// Training samples.
    pub train: Dataset,
    /// Test samples.
    pub test: Dataset,
}

impl Data {
    /// Feed a network that states its own pixel scale (`x = raw · scale`,
    /// an imported network): when it differs from the data set's, every
    /// sample is rescaled from the data set's raw values to it (a note on
    /// stderr says so). `None` leaves the data as it is.
    pub fn use_pixel_scale(&mut self, scale: Option<f32>) {
        let Some(scale) = scale else { return };
        let from = self.train.pixel_scale;
        if from == scale {
            return;
        }
        eprintln!(
            "note: the network's pixel scale is {scale}, data `{}`'s {from}: inputs rescaled \
             (raw values x {scale})",
            self.train.name
        );
        for set in [&mut self.train, &mut self.test] {
            let k = f64::from(scale) / f64::from(set.pixel_scale);
            for x in set.images_mut() {
                *x = (f64::from(*x) * k) as f32;
            }
            set.pixel_scale = scale;
        }
    }
}

/// A pixel scale: a positive number or a fraction, `1/255`.
pub fn parse_pixel_scale(s: &str) -> Result<f32, String> {
    let v = match s.split_once('/') {
        Some((a, b)) => a
            .trim()
            .parse::<f64>()
            .ok()
            .zip(b.trim().parse::<f64>().ok())
            .map(|(a, b)| a / b),
        None => s.trim().parse::<f64>().ok(),
    };
    match v {
        Some(v) if v.is_finite() && v > 0.0 && (v as f32) > 0.0 => Ok(v as f32),
        _ => Err(format!(
            "`{s}` is not a pixel scale: give a positive number or fraction, e.g. 1/255 or 0.0625"
        )),
    }
}

fn parse_shape(s: &str) -> Result<[usize; 3]> {
    let parts: Vec<usize> = s
        .split('x')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad --input-shape `{s}`: use HxWxC, e.g. 8x8x1"))?;
    match parts[..] {
        [h, w, c] if h > 0 && w > 0 && c > 0 => Ok([h, w, c]),
        _ => bail!("bad --input-shape `{s}`: use HxWxC with three positive numbers, e.g. 8x8x1"),
    }
}

/// The MNIST directory: explicit, or the first default location that exists.
pub fn mnist_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = explicit {
        return Ok(d.to_path_buf());
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(env) = std::env::var_os("NORMCORE_MNIST_DIR") {
        candidates.push(env.into());
    }
    candidates.push("data/mnist".into());
    candidates.push("../shared/data/mnist".into());
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .ok_or_else(|| {
            anyhow::anyhow!(
                "MNIST not found in $NORMCORE_MNIST_DIR, ./data/mnist or ../shared/data/mnist; \
                 pass --data-dir DIR holding train-images-idx3-ubyte(.gz) and the three other IDX files"
            )
        })
}

/// Which kind of data set a `--data` value selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// `digits`: the built-in UCI digits.
    Digits,
    /// `idx` (or its synonym `mnist`): four IDX files in a directory.
    Idx,
    /// Anything else: a CSV file's path.
    Csv,
}

impl DataArgs {
    /// What `--data` selects (`mnist` is a synonym of `idx`).
    pub fn kind(&self) -> DataKind {
        match self.data.as_str() {
            "digits" => DataKind::Digits,
            "idx" | "mnist" => DataKind::Idx,
            _ => DataKind::Csv,
        }
    }

    /// The files this selection reads that an output must not replace: the
    /// CSV file(s) (the built-in digits and MNIST's directory have none a
    /// model or checkpoint would be written over).
    pub fn input_files(&self) -> Vec<&Path> {
        let mut v = Vec::new();
        if self.kind() == DataKind::Csv {
            v.push(Path::new(self.data.as_str()));
        }
        if let Some(t) = &self.test_csv {
            v.push(t.as_path());
        }
        v
    }

    /// Load the selected data set (train and test parts).
    pub fn load(&self) -> Result<Data> {
        let csv = self.kind() == DataKind::Csv;
        let unused = |flag: &str| {
            anyhow::anyhow!(
                "{flag} does not apply to --data {}: it is for {} (remove it, or choose that data set)",
                self.data,
                if flag == "--data-dir" {
                    "--data idx"
                } else {
                    "CSV data"
                }
            )
        };
        if !csv && self.test_csv.is_some() {
            return Err(unused("--test-csv"));
        }
        if !csv && self.input_shape.is_some() {
            return Err(unused("--input-shape"));
        }
        if self.kind() != DataKind::Idx && self.data_dir.is_some() {
            return Err(unused("--data-dir"));
        }
        match self.data.as_str() {
            "digits" => {
                let (train, test) = data::builtin_digits_split()?;
                Ok(Data { train, test })
            }
            "idx" | "mnist" => {
                let dir = mnist_dir(self.data_dir.as_deref())?;
                let (train, test) = data::load_mnist(&dir)?;
                Ok(Data { train, test })
            }
            path if path.ends_with(".csv")
                || path.ends_with(".csv.gz")
                || Path::new(path).is_file() =>
            {
                let mut opts = data::CsvOptions::default();
                if let Some(s) = &self.input_shape {
                    opts.shape = Some(parse_shape(s)?);
                }
                let all = data::read_csv(Path::new(path), &opts)?;
                match &self.test_csv {
                    Some(t) => {
                        let test = data::read_csv(t, &opts)?;
                        Ok(Data { train: all, test })
                    }
                    None => {
                        let (train, test) = all.stratified_split(0.8, 1)?;
                        Ok(Data { train, test })
                    }
                }
            }
            other => bail!(
                "unknown data set `{other}`: use digits, idx (IDX files such as MNIST's; also \
                 `mnist`), or the path of an existing CSV file"
            ),
        }
    }
}

/// A progress bar on stderr for `len` units (hidden when stderr is not a terminal).
pub fn progress(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} [{{elapsed_precise}}<{{eta_precise}}] {{msg}}"
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    pb
}

/// `--weights`: how an int8 file stores its dense and conv weights (the
/// command line's names for [`crate::export::ncm::WeightForm`]).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightsArg {
    /// Per layer, pair words where they are faster, else bytes.
    #[default]
    Auto,
    /// One byte per weight.
    I8,
    /// Two weights per 32-bit word (blocks of 4 rows).
    Pairs,
}

impl From<WeightsArg> for crate::export::ncm::WeightForm {
    fn from(w: WeightsArg) -> Self {
        use crate::export::ncm::WeightForm;
        match w {
            WeightsArg::Auto => WeightForm::Auto,
            WeightsArg::I8 => WeightForm::I8,
            WeightsArg::Pairs => WeightForm::Pairs,
        }
    }
}

/// `path` made absolute when it does not exist yet: its nearest existing
/// ancestor canonicalized, then the rest applied by name, `..` removing the
/// last part (as the directories `write_atomic` creates will resolve it:
/// `new/../m.ncm` is `m.ncm`).
fn resolved(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut base = path;
    let mut rest = Vec::new();
    let mut real = loop {
        match base.canonicalize() {
            Ok(p) => break p,
            Err(_) => {
                rest.push(base.components().next_back()?);
                base = base
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                if rest.len() > 4096 {
                    return None;
                }
            }
        }
    };
    for c in rest.into_iter().rev() {
        match c {
            Component::ParentDir => {
                real.pop();
            }
            Component::CurDir => {}
            other => real.push(other),
        }
    }
    Some(real)
}

/// Check, before any work is done, that the output file `out` can be
/// written and would not replace one of `inputs`: it is not a directory,
/// not the same file as an input (compared by canonical paths, so that
/// `./m.ncm`, `dir/../m.ncm` and a symbolic link are recognised), not a
/// read-only file, and its directory (or, when that does not exist yet,
/// the nearest existing ancestor, under which the atomic write creates it)
/// is a directory this process can create files in. The write itself is
/// [`crate::checkpoint::write_atomic`] (a temporary file, then a rename).
pub fn check_output(out: &Path, inputs: &[&Path]) -> Result<()> {
    use std::fs;
    let shown = out.display();
    if out.as_os_str().is_empty() {
        bail!("the output path is empty");
    }
    if out.is_dir() {
        bail!("{shown} is a directory: give the output file's name, e.g. {shown}/adapted.ncm");
    }
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .with_context(|| format!("{shown} does not name a file"))?;
    // The file `out` would be: itself if it exists (links resolved), else
    // the name in its canonical directory.
    let target = out.canonicalize().ok().or_else(|| resolved(out));
    for input in inputs {
        if let (Some(t), Ok(i)) = (&target, input.canonicalize()) {
            if *t == i {
                bail!(
                    "the output {shown} is the input file {}: write to another file \
                     (the input is left as it is)",
                    input.display()
                );
            }
        }
    }
    if let Ok(meta) = fs::metadata(out) {
        if meta.permissions().readonly() {
            bail!("{shown} is read-only: it cannot be replaced");
        }
    }
    let mut dir = parent;
    while !dir.exists() {
        dir = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
    }
    if !dir.is_dir() {
        bail!("cannot write {shown}: {} is not a directory", dir.display());
    }
    let probe = dir.join(format!(
        ".{}.probe-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => bail!("cannot write {shown}: {}: {e}", dir.display()),
    }
}

/// [`check_output`] for a command that writes the files `names` into the
/// directory `dir` (`--out-dir`), before any work is done: `dir` is a
/// directory or can be created (it is not a file), and every file it would
/// get passes [`check_output`] against `inputs` (none of them is an input,
/// a directory or read-only, and the place is writable).
pub fn check_output_dir(dir: &Path, names: &[&str], inputs: &[&Path]) -> Result<()> {
    let shown = dir.display();
    if dir.as_os_str().is_empty() {
        bail!("the output directory is empty: give --out-dir DIR");
    }
    if dir.exists() && !dir.is_dir() {
        let input = inputs
            .iter()
            .any(|i| i.canonicalize().ok() == dir.canonicalize().ok());
        bail!(
            "{shown} is {}, not a directory: --out-dir takes a directory \
             (created if missing); give another path",
            if input { "an input file" } else { "a file" },
        );
    }
    for name in names {
        check_output(&dir.join(name), inputs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_output_refuses_inputs_directories_and_unwritable_places() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = d.join("m.ncm");
        std::fs::write(&input, b"model").unwrap();
        let inputs = [input.as_path()];
        // New files, also in a directory that does not exist yet.
        check_output(&d.join("out.ncm"), &inputs).unwrap();
        check_output(&d.join("new/sub/out.ncm"), &inputs).unwrap();
        // The input itself, by another spelling, through a link.
        for same in [
            input.clone(),
            d.join(".").join("m.ncm"),
            d.join("new/../m.ncm"),
        ] {
            std::fs::create_dir_all(d.join("new")).unwrap();
            let e = check_output(&same, &inputs).unwrap_err().to_string();
            assert!(e.contains("is the input file"), "{same:?}: {e}");
        }
        #[cfg(unix)]
        {
            let link = d.join("link.ncm");
            std::os::unix::fs::symlink(&input, &link).unwrap();
            let e = check_output(&link, &inputs).unwrap_err().to_string();
            assert!(e.contains("is the input file"), "{e}");
        }
        // A directory; a path under a file.
        let e = check_output(d, &inputs).unwrap_err().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = check_output(&input.join("x.ncm"), &inputs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        // A read-only file.
        let ro = d.join("ro.ncm");
        std::fs::write(&ro, b"keep").unwrap();
        let mut p = std::fs::metadata(&ro).unwrap().permissions();
        p.set_readonly(true);
        std::fs::set_permissions(&ro, p).unwrap();
        let e = check_output(&ro, &inputs).unwrap_err().to_string();
        assert!(e.contains("read-only"), "{e}");
        // Nothing left behind by the probes.
        let mut names: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert!(names.iter().all(|n| !n.contains("probe")), "{names:?}");
    }

    #[test]
    fn check_output_dir_refuses_files_and_inputs_inside() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let input = d.join("d.csv");
        std::fs::write(&input, b"1,0\n").unwrap();
        let inputs = [input.as_path()];
        check_output_dir(&d.join("new/out"), &["a.csv", "b.png"], &inputs).unwrap();
        check_output_dir(d, &["a.csv"], &inputs).unwrap();
        let e = check_output_dir(&input, &["a.csv"], &inputs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is an input file, not a directory"), "{e}");
        let e = check_output_dir(d, &["a.csv", "d.csv"], &inputs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is the input file"), "{e}");
        std::fs::create_dir(d.join("a.csv.d")).unwrap();
        let e = check_output_dir(d, &["a.csv.d"], &inputs)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory"), "{e}");
    }
}
