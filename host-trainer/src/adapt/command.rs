//! `normcore adapt`: adapt an exported model file to a data set on the
//! host, with the code a device runs (core's re-estimation and refold
//! through [`super::restat`], tail training through [`super::tail_step`]),
//! and write the adapted model as a new file ([`super::bake`]).
//!
//! The training split supplies the adaptation samples (picked with the
//! seed: the same seed, the same samples), the test split measures the
//! result. `--shift` applies a simulated drift ([`Shift`]) to both splits,
//! so that adaptation can be tried on a drift of one's choosing; the table
//! then shows the clean test set, the shifted one as exported, and the
//! shifted one adapted.
//!
//! Nothing is written unless everything succeeded: the output path is
//! checked first ([`check_output`]: not the model file, not a directory,
//! writable), and the file is written atomically at the very end, after
//! the baked file was checked to give the outputs of the model with its
//! overlay on the whole test set.

use anyhow::{ensure, Context, Result};
use clap::Args;
use normcore::adapt::overlay::Overlay;
use std::path::{Path, PathBuf};

use super::{accuracy, adapt_with, bake, new_overlay, pick_seeded, run_all, Feed, Method, Shift};
use crate::assets::check_model_data;
use crate::cli::{check_output, DataArgs};
use crate::data::Dataset;
use crate::export::device::ModelBytes;

/// Unlabeled samples for re-estimation unless told otherwise.
pub const DEFAULT_UNLABELED: usize = 64;
/// Labeled samples for tail training unless told otherwise.
pub const DEFAULT_LABELED: usize = 200;

/// `normcore adapt`.
#[derive(Args, Debug)]
pub struct AdaptArgs {
    /// The model file to adapt (.ncm, f32 or int8, as `normcore export`
    /// writes it). It is only read.
    #[arg(long)]
    pub model: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// restat: re-estimate the BN statistics on unlabeled training samples
    /// (forward only); tail: train the last dense layer on labeled ones;
    /// both: re-estimation, then tail training.
    #[arg(long, value_enum)]
    pub method: Method,
    /// Unlabeled training samples for re-estimation (at least 2).
    #[arg(long, default_value_t = DEFAULT_UNLABELED)]
    pub unlabeled: usize,
    /// How re-estimation's passes (one per BN layer) use the unlabeled
    /// samples: every (each pass sees all of them; a sample costs a few
    /// inferences) or split (each pass its own part; a sample costs at most
    /// one inference, as on a device adapting on a stream).
    #[arg(long, value_enum, default_value_t = Feed::Every)]
    pub feed: Feed,
    /// Labeled training samples for tail training.
    #[arg(long, default_value_t = DEFAULT_LABELED)]
    pub labeled: usize,
    /// A simulated drift applied to both splits before adapting:
    /// gainG+O (x -> G·x + O), contrastF, blur3x3 or invert; e.g.
    /// gain0.6+0.3. For inputs stored in [0, 1] (digits, MNIST).
    #[arg(long)]
    pub shift: Option<Shift>,
    /// Seed of the pick of adaptation samples.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The adapted model file to write (not the input model).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
}

/// What `normcore adapt` measured and wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptReport {
    /// The model as exported on the (clean) test set.
    pub before: f64,
    /// The model as exported on the shifted test set (with `--shift`).
    pub shifted: Option<f64>,
    /// The adapted model on the test set (shifted, with `--shift`).
    pub after: f64,
    /// Unlabeled samples re-estimated on (0 for tail alone).
    pub unlabeled: usize,
    /// Labeled samples trained on (0 for restat alone).
    pub labeled: usize,
    /// Bytes of the overlay (what a device keeps for this adaptation).
    pub overlay_bytes: usize,
    /// The adapted model file.
    pub file: Vec<u8>,
}

/// Values of `d` outside `[0, 1]`, which the shifts are defined on.
fn check_unit_range(d: &Dataset, shift: Shift) -> Result<()> {
    let (lo, hi) = d
        .images()
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    ensure!(
        d.images().is_empty() || (lo >= 0.0 && hi <= 1.0),
        "--shift {} is defined for inputs stored in [0, 1] (digits, MNIST); the data set `{}` \
         has values in [{lo}, {hi}]",
        shift.name(),
        d.name
    );
    Ok(())
}

/// Adapt the model file `bytes` (named `name` in messages) on `data` as
/// `a` says, without writing anything: the measurements and the adapted
/// file.
pub fn adapt_file(
    bytes: &[u8],
    name: &str,
    data: &crate::cli::Data,
    a: &AdaptArgs,
) -> Result<AdaptReport> {
    let buf = ModelBytes::new(bytes);
    let model = buf.parse_file(name)?;
    let scope = a.method.scope();
    let mut words = new_overlay(&model, scope)
        .with_context(|| format!("{name}: cannot adapt by {}", a.method.name()))?;
    let (train, test) = (&data.train, &data.test);
    check_model_data(&model, train, &train.labels, name)?;
    check_model_data(&model, test, &test.labels, name)?;
    let unlabeled = if a.method == Method::Tail {
        0
    } else {
        a.unlabeled
    };
    let labeled = if a.method == Method::Restat {
        0
    } else {
        a.labeled
    };
    if a.method != Method::Tail {
        ensure!(
            unlabeled >= 2,
            "--unlabeled {unlabeled}: re-estimation needs at least 2 samples"
        );
    }
    if a.method != Method::Restat {
        ensure!(labeled >= 1, "--labeled 0: tail training needs samples");
    }
    let most = unlabeled.max(labeled);
    ensure!(
        most <= train.len(),
        "{most} adaptation samples asked for; the training split of `{}` has {}",
        train.name,
        train.len()
    );
    // The adaptation samples, then the drift (per sample: picking first
    // spares shifting a whole training set).
    let picked = train.select(&pick_seeded(train.len(), most, a.seed), "adaptation")?;
    let (picked, shifted_test) = match a.shift {
        Some(s) => {
            check_unit_range(train, s)?;
            check_unit_range(test, s)?;
            (s.apply(&picked)?, Some(s.apply(test)?))
        }
        None => (picked, None),
    };
    let eval = shifted_test.as_ref().unwrap_or(test);
    let per = picked.sample_len();
    let before = accuracy(&model, None, test)?;
    let shifted = shifted_test
        .as_ref()
        .map(|t| accuracy(&model, None, t))
        .transpose()?;

    let mut o = Overlay::new(&model, scope, &mut words).map_err(|e| anyhow::anyhow!("{e}"))?;
    adapt_with(
        &model,
        &mut o,
        a.method,
        &picked.images()[..unlabeled * per],
        a.feed,
        (&picked.images()[..labeled * per], &picked.labels[..labeled]),
    )
    .with_context(|| format!("{name}: adaptation by {} failed", a.method.name()))?;
    let adapted = run_all(&model, Some(&o), eval.images())?;
    let after = crate::export::device::accuracy(&adapted, &eval.labels);

    let file = bake(bytes, &o).context("writing the adaptation into the model file")?;
    let check = ModelBytes::new(&file);
    let baked = check.parse().context("the adapted model file")?;
    ensure!(
        run_all(&baked, None, eval.images())? == adapted,
        "the adapted model file does not run as the model with its adaptation (a bug)"
    );
    Ok(AdaptReport {
        before,
        shifted,
        after,
        unlabeled,
        labeled,
        overlay_bytes: o.len_bytes(),
        file,
    })
}

/// Run `normcore adapt`.
pub fn run(a: AdaptArgs) -> Result<()> {
    check_output(&a.out, &[&a.model])?;
    let path = a.model.display().to_string();
    let bytes = std::fs::read(&a.model).with_context(|| format!("cannot read {path}"))?;
    // The model before the data: a bad file is reported without loading.
    let kind = ModelBytes::new(&bytes).parse_file(&path)?.kind();
    let data = a.data.load()?;
    let r = adapt_file(&bytes, &path, &data, &a)?;
    crate::checkpoint::write_atomic(&a.out, &r.file)?;
    print_report(&a, &r, kind, &data, &a.out);
    Ok(())
}

fn print_report(
    a: &AdaptArgs,
    r: &AdaptReport,
    kind: normcore::model::Kind,
    data: &crate::cli::Data,
    out: &Path,
) {
    println!(
        "model {} ({kind:?}); data `{}`: {} train / {} test samples; method {}{}",
        a.model.display(),
        a.data.data,
        data.train.len(),
        data.test.len(),
        a.method.name(),
        a.shift
            .map(|s| format!("; shift {}", s.name()))
            .unwrap_or_default()
    );
    println!();
    let head = format!("test set ({} samples)", data.test.len());
    println!("| {head:<35} | accuracy |");
    println!("|-------------------------------------|----------|");
    let row = |what: &str, acc: f64| println!("| {what:<35} | {:>7.2}% |", 100.0 * acc);
    let adapted = format!("adapted ({})", a.method.name());
    match (a.shift, r.shifted) {
        (Some(s), Some(shifted)) => {
            row("clean, before adaptation", r.before);
            row(&format!("shifted ({}), before", s.name()), shifted);
            row(&format!("shifted, {adapted}"), r.after);
        }
        _ => {
            row("before adaptation", r.before);
            row(&adapted, r.after);
        }
    }
    println!();
    let mut used = Vec::new();
    if r.unlabeled > 0 {
        used.push(format!("{} unlabeled", r.unlabeled));
    }
    if r.labeled > 0 {
        used.push(format!("{} labeled", r.labeled));
    }
    println!(
        "samples used: {} training samples (seed {})",
        used.join(" + "),
        a.seed
    );
    if r.unlabeled > 0 {
        println!(
            "re-estimation: {}",
            match a.feed {
                Feed::Every => "every pass (one per BN layer) over all the unlabeled samples",
                Feed::Split => {
                    "the unlabeled samples split among the passes (one per BN layer), \
                     each sample seen once"
                }
            }
        );
    }
    println!(
        "overlay: {} bytes (what a device keeps for this adaptation, normcore::adapt::overlay)",
        r.overlay_bytes
    );
    println!(
        "wrote {}: {} bytes; it gives the outputs of the model with the overlay on every test sample",
        out.display(),
        r.file.len()
    );
}
