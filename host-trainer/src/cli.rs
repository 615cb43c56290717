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
    /// Data set: `digits` (built in, 8x8), `mnist` (IDX files in --data-dir),
    /// or a CSV file path (features then label per row).
    #[arg(long, default_value = "digits")]
    pub data: String,
    /// Directory holding MNIST's four IDX files (.gz or raw). Default: the
    /// first of $NORMCORE_MNIST_DIR, ./data/mnist, ../shared/data/mnist that exists.
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

impl DataArgs {
    /// Load the selected data set (train and test parts).
    pub fn load(&self) -> Result<Data> {
        match self.data.as_str() {
            "digits" => {
                let (train, test) = data::builtin_digits_split()?;
                Ok(Data { train, test })
            }
            "mnist" => {
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
                "unknown data set `{other}`: use digits, mnist, or the path of an existing CSV file"
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
