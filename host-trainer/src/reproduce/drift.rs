//! `reproduce drift`: how much of a sensor drift's cost on-device
//! adaptation wins back, and from how few samples.
//!
//! A network is trained and exported (the pipeline of `normcore assets`,
//! [`crate::assets::train_export`]), or an exported file is given. For each
//! shift of [`Shift::SCENARIO`] (applied to both splits), the file is run
//! by the host engine (core's, the device's code):
//!
//! - `before`: on the clean test set, as exported (samples 0);
//! - `shifted`: on the shifted test set, as exported (samples 0);
//! - `restat`: re-estimation ([`crate::adapt::restat`]) on the first N of
//!   a seeded pick of shifted, unlabeled training samples, for N in
//!   [`RESTAT_SAMPLES`] (capped at the training set's size);
//! - `tail`, `both`: tail training (and re-estimation first, on the same N
//!   samples) on N labeled samples, N in [`TAIL_SAMPLES`], through
//!   [`crate::adapt::tail_step`] (10 epochs; after re-estimation plain
//!   SGD with γ, β of the last BN layer too where it feeds the dense layer,
//!   alone SGD with momentum on the dense layer,
//!   [`crate::adapt::TAIL_ALONE`]).
//!
//! An adaptation that core refuses (a refolded value outside the format,
//! for example from 2 samples of nearly constant values) is a result, not a
//! failure of the scenario: its row is left out with a note.
//!
//! Writes `drift.csv` (`shift,method,samples,accuracy`, accuracy in
//! percent), `drift.md` (per shift: before, shifted, restat@64, the best
//! adaptation, the fraction re-estimation recovers, `(restat@64 − shifted) /
//! (before − shifted)`, and the fraction of what it leaves that tail
//! training after it recovers, `(both@200 − restat@64) / (before −
//! restat@64)`, the two targets) and `drift.png` (a panel per shift: accuracy against
//! adaptation samples on a log2 axis, before and shifted as horizontal
//! lines).

use anyhow::{ensure, Context, Result};
use clap::Args;
use normcore::adapt::overlay::Overlay;
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::adapt::{accuracy, adapt_with, new_overlay, pick_seeded, Feed, Method, Shift};
use crate::assets::{check_model_data, train_export, AssetConfig};
use crate::cli::{Data, DataArgs};
use crate::data::Dataset;
use crate::export::device::ModelBytes;
use crate::export::Quantize;

/// Unlabeled samples re-estimation is measured with.
pub const RESTAT_SAMPLES: [usize; 8] = [2, 4, 8, 16, 32, 64, 128, 256];
/// Labeled samples tail training is measured with.
pub const TAIL_SAMPLES: [usize; 4] = [25, 50, 100, 200];
/// The re-estimation the summary table reports.
pub const HEADLINE: usize = 64;

/// Options of `reproduce drift`.
#[derive(Args, Debug, Clone)]
pub struct DriftArgs {
    /// Data set (digits, or idx (MNIST) for the full-scale run).
    #[command(flatten)]
    pub data: DataArgs,
    /// Where drift.csv, drift.md and drift.png go.
    #[arg(long, default_value = "out/drift")]
    pub out_dir: PathBuf,
    /// The network to train: a preset (digits-mlp, digits-cnn, paper-mlp,
    /// cnn, ...) or a TOML file. Default: digits-mlp on digits, paper-mlp
    /// otherwise.
    #[arg(long, conflicts_with = "model")]
    pub network: Option<String>,
    /// Which exported file to adapt: int8 (default) or f32. With --model,
    /// must be the file's kind.
    #[arg(long, value_enum)]
    pub kind: Option<Quantize>,
    /// Training steps (mini-batches of 32). Default: 1,500 for the digits
    /// presets (under a second), 10,000 for paper-mlp (about 3 s on one
    /// core, 97.7 % on MNIST), 5,000 for cnn (about 35 s, 98.5 %), 3,000
    /// for other networks.
    #[arg(long, conflicts_with = "model")]
    pub steps: Option<u64>,
    /// Adapt this exported model file instead of training one.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Seed of training and of the pick of adaptation samples.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads (training and evaluation).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// One measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct DriftRow {
    /// The shift's name ([`Shift::name`]).
    pub shift: String,
    /// `before`, `shifted`, `restat`, `tail` or `both`.
    pub method: String,
    /// Adaptation samples (0 for `before` and `shifted`).
    pub samples: usize,
    /// Test accuracy, a fraction.
    pub accuracy: f64,
}

/// The scenario's measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct Drift {
    /// Every row, shift by shift: before, shifted, restat, tail, both.
    pub rows: Vec<DriftRow>,
    /// Rows left out, and why.
    pub notes: Vec<String>,
}

/// Training steps unless told otherwise (see [`DriftArgs::steps`]).
pub fn default_steps(network: &str) -> u64 {
    match network {
        n if n.starts_with("digits-") => crate::assets::DEFAULT_STEPS,
        "paper-mlp" | "paper-mlp-nobn" => 10_000,
        "cnn" => 5_000,
        _ => 3_000,
    }
}

/// `[0, 1]`: where the shifts are defined.
fn check_unit_range(d: &Dataset) -> Result<()> {
    let bad = d.images().iter().find(|v| !(0.0..=1.0).contains(*v));
    ensure!(
        bad.is_none(),
        "the drift scenario's shifts are defined for inputs stored in [0, 1] (digits, MNIST); \
         the data set `{}` has the value {}",
        d.name,
        bad.copied().unwrap_or(0.0)
    );
    Ok(())
}

/// `[2, 4, ..., 256]` (or `list`) capped at `len`, without repeats.
fn capped(list: &[usize], len: usize) -> Vec<usize> {
    let mut v: Vec<usize> = list.iter().map(|&n| n.min(len)).collect();
    v.dedup();
    v
}

/// Run the scenario on the model file `bytes` with `data`: the rows and
/// notes of the [module docs](self).
pub fn drift(bytes: &[u8], data: &Data, seed: u64) -> Result<Drift> {
    let buf = ModelBytes::new(bytes);
    let model = buf.parse().context("not a valid model file")?;
    let (train, test) = (&data.train, &data.test);
    check_model_data(&model, train, &train.labels, "the model")?;
    check_model_data(&model, test, &test.labels, "the model")?;
    check_unit_range(train)?;
    check_unit_range(test)?;
    let restat_ns = capped(&RESTAT_SAMPLES, train.len());
    let tail_ns = capped(&TAIL_SAMPLES, train.len());
    let most = restat_ns.iter().chain(&tail_ns).copied().max().unwrap_or(0);
    // One seeded pick: every N takes a prefix of it, so that a larger N
    // sees the samples of a smaller one and more.
    let pool = train.select(&pick_seeded(train.len(), most, seed), "adaptation")?;
    let per = pool.sample_len();
    let before = accuracy(&model, None, test)?;
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    for shift in Shift::SCENARIO {
        let name = shift.name();
        let row = |method: &str, samples: usize, accuracy: f64| DriftRow {
            shift: name.clone(),
            method: method.into(),
            samples,
            accuracy,
        };
        let test_s = shift.apply(test)?;
        let pool_s = shift.apply(&pool)?;
        rows.push(row("before", 0, before));
        rows.push(row("shifted", 0, accuracy(&model, None, &test_s)?));
        let mut runs: Vec<(Method, usize)> =
            restat_ns.iter().map(|&n| (Method::Restat, n)).collect();
        for method in [Method::Tail, Method::Both] {
            runs.extend(tail_ns.iter().map(|&n| (method, n)));
        }
        for (method, n) in runs {
            let mut words = new_overlay(&model, method.scope())
                .with_context(|| format!("cannot adapt by {}", method.name()))?;
            let mut o = Overlay::new(&model, method.scope(), &mut words)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let x = &pool_s.images()[..n * per];
            match adapt_with(
                &model,
                &mut o,
                method,
                x,
                Feed::Every,
                (x, &pool_s.labels[..n]),
            ) {
                Ok(()) => rows.push(row(method.name(), n, accuracy(&model, Some(&o), &test_s)?)),
                Err(e) => notes.push(format!("{name}, {}@{n} left out: {e:#}", method.name())),
            }
        }
    }
    Ok(Drift { rows, notes })
}

impl Drift {
    /// `drift.csv`: `shift,method,samples,accuracy` (percent, 2 decimals).
    pub fn csv(&self) -> String {
        let mut s = String::from("shift,method,samples,accuracy\n");
        for r in &self.rows {
            let _ = writeln!(
                s,
                "{},{},{},{:.2}",
                r.shift,
                r.method,
                r.samples,
                100.0 * r.accuracy
            );
        }
        s
    }

    /// The shifts in order of appearance.
    pub fn shifts(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        for r in &self.rows {
            if !v.contains(&r.shift.as_str()) {
                v.push(&r.shift);
            }
        }
        v
    }

    /// The accuracy of `method` with `samples` under `shift`.
    pub fn get(&self, shift: &str, method: &str, samples: usize) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.shift == shift && r.method == method && r.samples == samples)
            .map(|r| r.accuracy)
    }

    /// The re-estimation the table reports: [`HEADLINE`] samples, or the
    /// most below it when the training set is smaller.
    fn headline(&self, shift: &str) -> Option<(usize, f64)> {
        self.rows
            .iter()
            .filter(|r| r.shift == shift && r.method == "restat" && r.samples <= HEADLINE)
            .max_by_key(|r| r.samples)
            .map(|r| (r.samples, r.accuracy))
    }

    /// `(restat@64 − shifted) / (before − shifted)` for `shift`; `None`
    /// when the shift costs nothing or a row is missing.
    pub fn recovered(&self, shift: &str) -> Option<f64> {
        let before = self.get(shift, "before", 0)?;
        let shifted = self.get(shift, "shifted", 0)?;
        let (_, restat) = self.headline(shift)?;
        (before > shifted).then(|| (restat - shifted) / (before - shifted))
    }

    /// `(both@N − restat@64) / (before − restat@64)` for `shift`, `N` the
    /// most labeled samples measured (200): the fraction of what
    /// re-estimation leaves that tail training after it wins back. `None`
    /// when re-estimation leaves nothing or a row is missing.
    pub fn tail_recovered(&self, shift: &str) -> Option<f64> {
        let before = self.get(shift, "before", 0)?;
        let (_, restat) = self.headline(shift)?;
        let both = self
            .rows
            .iter()
            .filter(|r| r.shift == shift && r.method == "both")
            .max_by_key(|r| r.samples)?;
        (before > restat).then(|| (both.accuracy - restat) / (before - restat))
    }

    /// `drift.md`: a line on the model, the summary table, the notes.
    pub fn markdown(&self, about: &str) -> String {
        let mut s = format!("{about}\n\n");
        s.push_str(
            "| shift | before | shifted | restat@64 | best adaptation | recovered by restat@64 \
             | of what restat@64 leaves, recovered by both@200 |\n\
             |---|---|---|---|---|---|---|\n",
        );
        let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.2}%", 100.0 * v));
        for shift in self.shifts() {
            let best = self
                .rows
                .iter()
                .filter(|r| r.shift == shift && r.samples > 0)
                .max_by(|a, b| {
                    a.accuracy
                        .total_cmp(&b.accuracy)
                        .then(b.samples.cmp(&a.samples))
                });
            let headline = self.headline(shift);
            let restat = match headline {
                Some((n, acc)) if n == HEADLINE => format!("{:.2}%", 100.0 * acc),
                Some((n, acc)) => format!("{:.2}% (@{n})", 100.0 * acc),
                None => "-".into(),
            };
            let frac = |f: Option<f64>| f.map_or("n/a".into(), |f| format!("{:.0}%", 100.0 * f));
            let _ = writeln!(
                s,
                "| {shift} | {} | {} | {restat} | {} | {} | {} |",
                pct(self.get(shift, "before", 0)),
                pct(self.get(shift, "shifted", 0)),
                best.map_or("-".into(), |r| format!(
                    "{:.2}% ({}@{})",
                    100.0 * r.accuracy,
                    r.method,
                    r.samples
                )),
                frac(self.recovered(shift)),
                frac(self.tail_recovered(shift)),
            );
        }
        if !self.notes.is_empty() {
            s.push('\n');
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}

/// `drift.png`: a panel per shift, accuracy (percent) against adaptation
/// samples on a log2 axis, one line per method, before and shifted as
/// horizontal lines.
pub fn drift_plot(d: &Drift, path: &Path, title: &str) -> Result<()> {
    let shifts = d.shifts();
    let cols = 2usize;
    let rows = shifts.len().div_ceil(cols).max(1);
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (1000, 40 + 380 * rows as u32)).into_drawing_area();
        root.fill(&WHITE)?;
        let root = root.titled(title, ("sans-serif", 22))?;
        let panels = root.split_evenly((rows, cols));
        let xs: Vec<f64> = d
            .rows
            .iter()
            .filter(|r| r.samples > 0)
            .map(|r| (r.samples as f64).log2())
            .collect();
        let x0 = xs.iter().copied().fold(f64::MAX, f64::min).min(1.0);
        let x1 = xs.iter().copied().fold(f64::MIN, f64::max).max(x0 + 1.0);
        for (shift, area) in shifts.iter().zip(panels.iter()) {
            let rows: Vec<&DriftRow> = d.rows.iter().filter(|r| r.shift == *shift).collect();
            let y0 = rows
                .iter()
                .map(|r| 100.0 * r.accuracy)
                .fold(100.0f64, f64::min);
            let y0 = (y0 - 5.0).max(0.0).floor();
            let mut chart = ChartBuilder::on(area)
                .caption(*shift, ("sans-serif", 18))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(50)
                .build_cartesian_2d(x0..x1, y0..100.0)?;
            chart
                .configure_mesh()
                .x_labels((x1 - x0) as usize + 1)
                .x_label_formatter(&|v| format!("{}", 2f64.powf(*v).round()))
                .y_label_formatter(&|v| format!("{v:.0}"))
                .x_desc("adaptation samples (log2 axis)")
                .y_desc("test accuracy, %")
                .draw()?;
            for (label, method, color) in [
                ("before (clean)", "before", BLACK.to_rgba()),
                ("shifted", "shifted", RED.to_rgba()),
            ] {
                if let Some(r) = rows.iter().find(|r| r.method == method) {
                    let y = 100.0 * r.accuracy;
                    chart
                        .draw_series(DashedLineSeries::new(
                            [(x0, y), (x1, y)],
                            8,
                            6,
                            color.stroke_width(2),
                        ))?
                        .label(label)
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                        });
                }
            }
            for (method, color) in [
                ("restat", BLUE.to_rgba()),
                ("tail", GREEN.to_rgba()),
                ("both", MAGENTA.to_rgba()),
            ] {
                let pts: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.method == method)
                    .map(|r| ((r.samples as f64).log2(), 100.0 * r.accuracy))
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?
                    .label(method)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::LowerRight)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

/// The model file the scenario adapts, and a line about it: `--model`'s
/// file, or a network trained and exported here.
fn model_for(a: &DriftArgs, data: &Data) -> Result<(Vec<u8>, String)> {
    if let Some(path) = &a.model {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let kind = ModelBytes::new(&bytes)
            .parse_file(&path.display().to_string())?
            .kind();
        let want = match a.kind {
            Some(Quantize::F32) => Some(normcore::model::Kind::F32),
            Some(Quantize::Int8) => Some(normcore::model::Kind::Int8),
            None => None,
        };
        ensure!(
            want.is_none_or(|k| k == kind),
            "{} is a {kind:?} model; --kind asks for {:?}",
            path.display(),
            want.unwrap_or(kind)
        );
        return Ok((bytes, format!("{} ({kind:?})", path.display())));
    }
    let network = a.network.clone().unwrap_or_else(|| {
        if a.data.data == "digits" {
            "digits-mlp".into()
        } else {
            "paper-mlp".into()
        }
    });
    let spec = if network.ends_with(".toml") || Path::new(&network).is_file() {
        crate::spec::NetworkSpec::load(Path::new(&network))?
    } else {
        crate::spec::preset(&network)?
    };
    let steps = a.steps.unwrap_or_else(|| default_steps(&spec.name));
    let cfg = AssetConfig {
        steps,
        seed: a.seed,
        threads: a.threads,
        ..AssetConfig::default()
    };
    eprintln!(
        "drift: training {} for {steps} steps (seed {})",
        spec.name, a.seed
    );
    let name = spec.name.clone();
    let e = train_export(&cfg, spec, data)?;
    let kind = a.kind.unwrap_or(Quantize::Int8);
    let (bytes, kind) = match kind {
        Quantize::Int8 => (e.model_int8, "int8"),
        Quantize::F32 => (e.model_f32, "f32"),
    };
    Ok((
        bytes,
        format!(
            "`{name}` trained {steps} steps in {:.1} s (seed {}; float test accuracy {:.2}%), exported {kind}",
            e.train_seconds,
            a.seed,
            100.0 * e.float.accuracy
        ),
    ))
}

/// Run `reproduce drift`: train (or read) the model, run the scenario,
/// write the CSV, markdown and PNG, print the table.
pub fn run(a: DriftArgs) -> Result<()> {
    ensure!(a.threads >= 1, "--threads must be at least 1");
    let mut inputs = a.data.input_files();
    inputs.extend(a.model.as_deref());
    inputs.extend(a.network.as_deref().map(Path::new));
    crate::cli::check_output_dir(&a.out_dir, &["drift.csv", "drift.md", "drift.png"], &inputs)?;
    let data = a.data.load()?;
    let (bytes, model) = model_for(&a, &data)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads)
        .build()
        .context("worker threads")?;
    let d = pool.install(|| drift(&bytes, &data, a.seed))?;
    let about = format!(
        "Drift scenario: {model}; data `{}` ({} train / {} test samples); adaptation samples picked with seed {}.",
        a.data.data,
        data.train.len(),
        data.test.len(),
        a.seed
    );
    write_drift(&d, &a.out_dir, &about)?;
    print!("{}", d.markdown(&about));
    println!(
        "wrote {}/drift.csv, drift.md, drift.png",
        a.out_dir.display()
    );
    Ok(())
}

/// Write `drift.csv`, `drift.md` and `drift.png` into `dir`.
pub fn write_drift(d: &Drift, dir: &Path, about: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    crate::checkpoint::write_atomic(&dir.join("drift.csv"), d.csv().as_bytes())?;
    crate::checkpoint::write_atomic(&dir.join("drift.md"), d.markdown(about).as_bytes())?;
    drift_plot(
        d,
        &dir.join("drift.png"),
        "Test accuracy under drift: as exported, and adapted",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tail training without momentum (the default, no velocity buffers:
    /// the 16 KiB plan of `paper-mlp`) against momentum 0.9 with a tenth
    /// of the learning rate (the same effective step), on MNIST
    /// `paper-mlp` int8 as `reproduce drift` trains it, for every shift:
    /// restat + tail (`both`) and `tail` alone on N labeled samples, N in
    /// 100, 200. Printed; the model is kept in `$NORMCORE_DRIFT_MODEL`
    /// (default `/tmp/paper-mlp-int8.ncm`) and reused when it exists.
    /// `cargo test -p normcore-trainer --release --lib drift_tail_momentum
    /// -- --ignored --nocapture`
    #[test]
    #[ignore = "MNIST, minutes"]
    fn drift_tail_momentum_on_mnist() {
        use crate::adapt::{restat, tail, TAIL_EPOCHS};
        use normcore::adapt::tail::TailConfig;
        let data = DataArgs {
            data: "mnist".into(),
            data_dir: None,
            test_csv: None,
            input_shape: None,
        }
        .load()
        .unwrap();
        let path = std::env::var("NORMCORE_DRIFT_MODEL")
            .unwrap_or_else(|_| "/tmp/paper-mlp-int8.ncm".into());
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(_) => {
                let cfg = AssetConfig {
                    steps: default_steps("paper-mlp"),
                    seed: 1,
                    threads: 2,
                    ..AssetConfig::default()
                };
                let e =
                    train_export(&cfg, crate::spec::preset("paper-mlp").unwrap(), &data).unwrap();
                std::fs::write(&path, &e.model_int8).unwrap();
                e.model_int8
            }
        };
        let buf = ModelBytes::new(&bytes);
        let model = buf.parse().unwrap();
        let pool = data
            .train
            .select(&pick_seeded(data.train.len(), 256, 1), "adaptation")
            .unwrap();
        let per = pool.sample_len();
        let lrs: Vec<f32> = std::env::var("NORMCORE_TAIL_LRS")
            .ok()
            .map(|v| v.split(',').map(|x| x.parse().unwrap()).collect())
            .unwrap_or_default();
        let mut configs = vec![
            TailConfig::default(),
            TailConfig {
                lr: 0.01,
                momentum: 0.9,
                train_bn: true,
            },
        ];
        configs.extend(lrs.iter().map(|&lr| TailConfig {
            lr,
            ..TailConfig::default()
        }));
        eprintln!(
            "clean {:.2}",
            100.0 * accuracy(&model, None, &data.test).unwrap()
        );
        for shift in Shift::SCENARIO {
            let test = shift.apply(&data.test).unwrap();
            let pool_s = shift.apply(&pool).unwrap();
            let shifted = accuracy(&model, None, &test).unwrap();
            for method in [Method::Both, Method::Tail] {
                for n in [100, 200] {
                    let x = &pool_s.images()[..n * per];
                    let mut line = format!(
                        "{} shifted {:.2} {}@{n}:",
                        shift.name(),
                        100.0 * shifted,
                        method.name()
                    );
                    for &cfg in &configs {
                        let mut words = new_overlay(&model, method.scope()).unwrap();
                        let mut o = Overlay::new(&model, method.scope(), &mut words).unwrap();
                        if method == Method::Both {
                            restat(&model, &mut o, x).unwrap();
                        }
                        let cfg = TailConfig {
                            train_bn: method == Method::Both,
                            ..cfg
                        };
                        let r = tail(&model, &mut o, x, &pool_s.labels[..n], cfg, TAIL_EPOCHS);
                        match r {
                            Ok(r) => {
                                let acc = accuracy(&model, Some(&o), &test).unwrap();
                                let _ = write!(
                                    line,
                                    " momentum {} lr {}: {:.2} (loss {:.3} -> {:.3});",
                                    cfg.momentum,
                                    cfg.lr,
                                    100.0 * acc,
                                    r.first_loss,
                                    r.last_loss
                                );
                            }
                            Err(e) => {
                                let _ = write!(line, " momentum {}: {e:#};", cfg.momentum);
                            }
                        }
                    }
                    eprintln!("{line}");
                }
            }
        }
    }

    fn digits() -> DataArgs {
        DataArgs {
            data: "digits".into(),
            data_dir: None,
            test_csv: None,
            input_shape: None,
        }
    }

    /// The whole scenario on digits into a temporary directory: the CSV's
    /// header and rows, the table, the plot, and the target: restat@64
    /// recovers at least 90 % of what the gain/offset shift cost.
    #[test]
    fn drift_on_digits_writes_the_files_and_restat_recovers_gain_offset() {
        let dir = tempfile::tempdir().unwrap();
        let a = DriftArgs {
            data: digits(),
            out_dir: dir.path().to_path_buf(),
            network: None,
            kind: None,
            steps: None,
            model: None,
            seed: 1,
            threads: 1,
        };
        let data = a.data.load().unwrap();
        let (bytes, about) = model_for(&a, &data).unwrap();
        assert!(about.contains("`digits-mlp` trained 1500 steps"), "{about}");
        let d = drift(&bytes, &data, a.seed).unwrap();
        write_drift(&d, dir.path(), &about).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("drift.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "shift,method,samples,accuracy");
        // Per shift: before, shifted, restat at 2..256, tail and both at
        // 25..200.
        let per = 2 + RESTAT_SAMPLES.len() + 2 * TAIL_SAMPLES.len();
        assert_eq!(lines.len(), 1 + 4 * per, "{csv}");
        for (k, shift) in Shift::SCENARIO.iter().enumerate() {
            let block = &lines[1 + k * per..1 + (k + 1) * per];
            let fields: Vec<Vec<&str>> = block.iter().map(|l| l.split(',').collect()).collect();
            assert!(fields.iter().all(|f| f.len() == 4 && f[0] == shift.name()));
            let methods: Vec<(&str, &str)> = fields.iter().map(|f| (f[1], f[2])).collect();
            let mut want = vec![("before", "0"), ("shifted", "0")];
            let ns: Vec<String> = RESTAT_SAMPLES.iter().map(|n| n.to_string()).collect();
            want.extend(ns.iter().map(|n| ("restat", n.as_str())));
            let ts: Vec<String> = TAIL_SAMPLES.iter().map(|n| n.to_string()).collect();
            want.extend(ts.iter().map(|n| ("tail", n.as_str())));
            want.extend(ts.iter().map(|n| ("both", n.as_str())));
            assert_eq!(methods, want);
            for f in &fields {
                let acc: f64 = f[3].parse().unwrap();
                assert!((0.0..=100.0).contains(&acc), "{f:?}");
                assert_eq!(f[3].split('.').nth(1).map(str::len), Some(2), "{f:?}");
            }
        }
        assert!(d.notes.is_empty(), "{:?}", d.notes);
        let g = Shift::SCENARIO[0].name();
        let (before, shifted) = (
            d.get(&g, "before", 0).unwrap(),
            d.get(&g, "shifted", 0).unwrap(),
        );
        let restat = d.get(&g, "restat", 64).unwrap();
        eprintln!("{}", d.markdown(&about));
        assert!(
            before - shifted >= 0.05,
            "the shift must cost accuracy: {before} -> {shifted}"
        );
        let recovered = d.recovered(&g).unwrap();
        assert!(
            (recovered - (restat - shifted) / (before - shifted)).abs() < 1e-12 && recovered >= 0.9,
            "recovered {recovered}"
        );
        // The second target: inversion, which re-estimation cannot fix (it
        // makes it no better), and tail training after it on 200 labeled
        // samples wins back at least 75 % of what it leaves.
        let inv = Shift::Invert.name();
        let (inv_restat, inv_both) = (
            d.get(&inv, "restat", 64).unwrap(),
            d.get(&inv, "both", 200).unwrap(),
        );
        assert!(inv_restat < d.get(&inv, "shifted", 0).unwrap() + 0.05);
        let tail = d.tail_recovered(&inv).unwrap();
        assert!(
            (tail - (inv_both - inv_restat) / (before - inv_restat)).abs() < 1e-12 && tail >= 0.75,
            "tail recovered {tail} of what restat left ({inv_restat} -> {inv_both}, before {before})"
        );
        let md = std::fs::read_to_string(dir.path().join("drift.md")).unwrap();
        assert_eq!(md, d.markdown(&about));
        assert!(
            md.contains("| shift | before | shifted | restat@64 |"),
            "{md}"
        );
        assert!(
            md.contains(&format!(
                "| {g} | {:.2}% | {:.2}% | {:.2}% |",
                100.0 * before,
                100.0 * shifted,
                100.0 * restat
            )),
            "{md}"
        );
        let png = std::fs::read(dir.path().join("drift.png")).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000);

        // The same file given as --model: the same rows; another kind is refused.
        let file = dir.path().join("m.ncm");
        std::fs::write(&file, &bytes).unwrap();
        let b = DriftArgs {
            model: Some(file),
            ..a.clone()
        };
        let (again, about) = model_for(&b, &data).unwrap();
        assert_eq!(again, bytes);
        assert!(about.contains("m.ncm (Int8)"), "{about}");
        assert_eq!(drift(&again, &data, a.seed).unwrap(), d);
        let c = DriftArgs {
            kind: Some(Quantize::F32),
            ..b
        };
        let e = model_for(&c, &data).unwrap_err().to_string();
        assert!(e.contains("is a Int8 model; --kind asks for F32"), "{e}");
    }

    #[test]
    fn drift_caps_sample_counts_and_refuses_data_outside_the_unit_range() {
        assert_eq!(capped(&RESTAT_SAMPLES, 1000), RESTAT_SAMPLES);
        assert_eq!(capped(&RESTAT_SAMPLES, 20), [2, 4, 8, 16, 20]);
        assert_eq!(capped(&TAIL_SAMPLES, 60), [25, 50, 60]);
        assert_eq!(default_steps("digits-cnn"), 1500);
        assert_eq!(default_steps("cnn"), 5000);
        let d = Dataset::new("wide", vec![0.5, 2.0], vec![0, 1], [1, 1, 1], 2, 1.0).unwrap();
        let e = check_unit_range(&d).unwrap_err().to_string();
        assert!(
            e.contains("[0, 1]") && e.contains("`wide`") && e.contains('2'),
            "{e}"
        );
    }
}
