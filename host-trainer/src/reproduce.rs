//! The paper's experiments at MNIST scale.
//!
//! - `figure1` (Sec. 4.1, Figure 1): the 784-100-100-100-10 sigmoid MLP
//!   trained by SGD with batch 60, with and without BN, from the same initial
//!   weights and in the same data order. Records test accuracy (Fig. 1a) and
//!   the 15th, 50th and 85th percentiles over the test set of the input to
//!   one fixed sigmoid of the last hidden layer (Fig. 1b without BN, 1c with).
//! - `lr-sweep` (the analogue of Sec. 4.2.1): steps to reach a target test
//!   accuracy for base learning rate ×1, ×5 and ×30, without BN, with BN, and
//!   with BN and sigmoid instead of ReLU.
//! - `drift` ([`drift`]): on-device adaptation under simulated sensor
//!   drifts: accuracy as exported, shifted, and adapted with 2 to 256
//!   samples.

pub mod drift;

use crate::cli::{progress, Data, DataArgs};
use crate::network::Init;
use crate::spec::{LayerSpec, NetworkSpec, Op};
use crate::train::{Schedule, TrainConfig, TrainError, Trainer};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Which experiment.
#[derive(Subcommand, Debug)]
pub enum Experiment {
    /// Figure 1: MNIST MLP with and without BN (accuracy, sigmoid-input percentiles).
    Figure1(Figure1Args),
    /// Sec. 4.2.1 analogue: steps to a target accuracy at learning rate x1, x5, x30.
    LrSweep(LrSweepArgs),
    /// Adaptation under drift: accuracy before, under each simulated shift,
    /// and after BN statistics re-estimation (and tail training) with 2 to
    /// 256 samples; writes drift.csv, drift.md and drift.png.
    Drift(drift::DriftArgs),
}

/// Options of `reproduce figure1`.
#[derive(Args, Debug, Clone)]
pub struct Figure1Args {
    /// Data set (the paper: mnist).
    #[command(flatten)]
    pub data: DataArgs,
    /// Training steps of each network (the paper: 50,000).
    #[arg(long, default_value_t = 50_000)]
    pub steps: u64,
    /// Mini-batch size (the paper: 60).
    #[arg(long, default_value_t = 60)]
    pub batch: usize,
    /// Learning rate of plain SGD, the same for both networks.
    #[arg(long, default_value_t = 0.5)]
    pub lr: f32,
    /// Initial weights: the paper's "small random Gaussian values".
    #[arg(long, default_value = "gaussian:0.05")]
    pub init: Init,
    /// Record accuracy and percentiles every N steps (default: steps/100, at least 10).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Which unit of the last hidden layer to follow.
    #[arg(long, default_value_t = 42)]
    pub unit: usize,
    /// Seed shared by both networks (same initial weights and data order).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Where the CSV and PNG files go.
    #[arg(long, default_value = "out/figure1")]
    pub out_dir: PathBuf,
}

/// Options of `reproduce lr-sweep`.
#[derive(Args, Debug, Clone)]
pub struct LrSweepArgs {
    /// Data set (default digits; use idx (MNIST) for the full-scale run).
    #[command(flatten)]
    pub data: DataArgs,
    /// Base learning rate (multiplied by 1, 5 and 30).
    #[arg(long, default_value_t = 0.02)]
    pub base_lr: f32,
    /// Target test accuracy, percent.
    #[arg(long, default_value_t = 97.0)]
    pub target: f64,
    /// Step budget per run.
    #[arg(long, default_value_t = 10_000)]
    pub max_steps: u64,
    /// Evaluate every N steps.
    #[arg(long, default_value_t = 100)]
    pub eval_every: u64,
    /// Mini-batch size.
    #[arg(long, default_value_t = 60)]
    pub batch: usize,
    /// Seed shared by every run.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Where the table and plot go.
    #[arg(long, default_value = "out/lr-sweep")]
    pub out_dir: PathBuf,
}

/// The paper's MLP for an input shape: three hidden layers of 100, BN before
/// each hidden nonlinearity when `bn` (and then no bias: β replaces it).
pub fn paper_mlp(input: [usize; 3], bn: bool, act: LayerSpec, name: &str) -> NetworkSpec {
    let mut layers = Vec::new();
    for _ in 0..3 {
        layers.push(LayerSpec::Dense {
            units: 100,
            bias: !bn,
        });
        if bn {
            layers.push(LayerSpec::Batchnorm {
                eps: 1e-5,
                momentum: 0.1,
            });
        }
        layers.push(act.clone());
    }
    layers.push(LayerSpec::Dense {
        units: 10,
        bias: true,
    });
    NetworkSpec {
        name: name.to_owned(),
        input,
        classes: 10,
        layers,
    }
}

/// One row of Figure 1's record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Figure1Point {
    /// Training steps taken.
    pub step: u64,
    /// Test accuracy without BN.
    pub acc_plain: f64,
    /// Test accuracy with BN.
    pub acc_bn: f64,
    /// 15th, 50th, 85th percentiles of the followed sigmoid's input, no BN.
    pub pct_plain: [f32; 3],
    /// The same with BN.
    pub pct_bn: [f32; 3],
}

/// `p`-th percentile (0..100) of sorted values, linear interpolation
/// between closest ranks.
pub fn percentile(sorted: &[f32], p: f64) -> f32 {
    if sorted.is_empty() {
        return f32::NAN;
    }
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = (rank - lo as f64) as f32;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Index of the layer whose output feeds the last sigmoid.
fn probe_layer(t: &Trainer) -> Result<usize> {
    let last_sigmoid = t
        .net
        .layers
        .iter()
        .rposition(|l| matches!(l.r.op, Op::Act(normcore::layers::Activation::Sigmoid)))
        .context("network has no sigmoid to follow")?;
    last_sigmoid
        .checked_sub(1)
        .context("the sigmoid has no input layer")
}

/// Evaluate and collect the followed unit's inputs over the test set.
fn eval_with_percentiles(t: &mut Trainer, data: &Data, unit: usize) -> Result<(f64, [f32; 3])> {
    let layer = probe_layer(t)?;
    let width = t.net.layers[layer].r.output.len();
    anyhow::ensure!(
        unit < width,
        "--unit {unit} is not below the layer width {width}"
    );
    let mut values = Vec::with_capacity(data.test.len());
    let mut probe = |ws: &crate::network::Workspace| {
        values.extend(
            ws.activation(layer, width)
                .chunks_exact(width)
                .map(|row| row[unit]),
        );
    };
    let e = t.evaluate(&data.test, Some(&mut probe))?;
    values.sort_by(f32::total_cmp);
    Ok((
        e.accuracy,
        [15.0, 50.0, 85.0].map(|p| percentile(&values, p)),
    ))
}

/// Run Figure 1 and return its record (also used by the tests).
pub fn figure1(a: &Figure1Args, data: &Data) -> Result<Vec<Figure1Point>> {
    let input = [data.train.h, data.train.w, data.train.c];
    let cfg = TrainConfig {
        batch: a.batch,
        lr: a.lr,
        momentum: 0.0,
        weight_decay: 0.0,
        nesterov: false,
        schedule: Schedule::Constant,
        seed: a.seed,
    };
    let act = LayerSpec::Sigmoid;
    let mut plain = Trainer::new(
        paper_mlp(input, false, act.clone(), "paper-mlp-nobn"),
        a.init,
        cfg,
        a.threads,
    )?;
    let mut bn = Trainer::new(
        paper_mlp(input, true, act, "paper-mlp"),
        a.init,
        cfg,
        a.threads,
    )?;
    crate::train::check_data(&bn.net, &data.train)?;
    let every = a.eval_every.unwrap_or((a.steps / 100).max(10)).max(1);
    let mut record = Vec::new();
    let pb = progress(a.steps, "figure1");
    let push =
        |plain: &mut Trainer, bn: &mut Trainer, record: &mut Vec<Figure1Point>| -> Result<()> {
            let (acc_plain, pct_plain) = eval_with_percentiles(plain, data, a.unit)?;
            let (acc_bn, pct_bn) = eval_with_percentiles(bn, data, a.unit)?;
            record.push(Figure1Point {
                step: bn.step,
                acc_plain,
                acc_bn,
                pct_plain,
                pct_bn,
            });
            Ok(())
        };
    push(&mut plain, &mut bn, &mut record)?;
    while bn.step < a.steps {
        plain.train_step(&data.train)?;
        bn.train_step(&data.train)?;
        if bn.step % every == 0 || bn.step == a.steps {
            push(&mut plain, &mut bn, &mut record)?;
            if let Some(p) = record.last() {
                pb.set_message(format!(
                    "test acc: BN {:.2}%  no BN {:.2}%",
                    100.0 * p.acc_bn,
                    100.0 * p.acc_plain
                ));
            }
        }
        if bn.step % 50 == 0 {
            pb.set_position(bn.step);
        }
    }
    pb.finish_and_clear();
    Ok(record)
}

fn write_figure1(record: &[Figure1Point], dir: &Path, unit: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut csv = String::from(
        "step,test_acc_nobn,test_acc_bn,nobn_p15,nobn_p50,nobn_p85,bn_p15,bn_p50,bn_p85\n",
    );
    for p in record {
        let _ = writeln!(
            csv,
            "{},{:.6},{:.6},{},{},{},{},{},{}",
            p.step,
            p.acc_plain,
            p.acc_bn,
            p.pct_plain[0],
            p.pct_plain[1],
            p.pct_plain[2],
            p.pct_bn[0],
            p.pct_bn[1],
            p.pct_bn[2]
        );
    }
    crate::checkpoint::write_atomic(&dir.join("figure1.csv"), csv.as_bytes())?;
    let steps: Vec<f64> = record.iter().map(|p| p.step as f64).collect();
    let series = |f: &dyn Fn(&Figure1Point) -> f64| -> Vec<(f64, f64)> {
        steps.iter().copied().zip(record.iter().map(f)).collect()
    };
    line_plot(
        &dir.join("figure1a.png"),
        "(a) Test accuracy",
        "training steps",
        "test accuracy",
        &[
            ("Without BN", BLACK.to_rgba(), series(&|p| p.acc_plain)),
            ("With BN", BLUE.to_rgba(), series(&|p| p.acc_bn)),
        ],
    )?;
    for (file, title, pick) in [
        (
            "figure1b.png",
            format!("(b) Without BN: input to sigmoid {unit}, 15/50/85th percentiles"),
            0usize,
        ),
        (
            "figure1c.png",
            format!("(c) With BN: input to sigmoid {unit}, 15/50/85th percentiles"),
            1,
        ),
    ] {
        let pcts = |i: usize| -> Vec<(f64, f64)> {
            series(&|p: &Figure1Point| {
                f64::from(if pick == 0 {
                    p.pct_plain[i]
                } else {
                    p.pct_bn[i]
                })
            })
        };
        line_plot(
            &dir.join(file),
            &title,
            "training steps",
            "sigmoid input",
            &[
                ("15th", RED.to_rgba(), pcts(0)),
                ("50th", BLACK.to_rgba(), pcts(1)),
                ("85th", BLUE.to_rgba(), pcts(2)),
            ],
        )?;
    }
    Ok(())
}

/// A named, coloured line: (label, colour, points).
pub type Series<'a> = (&'a str, RGBAColor, Vec<(f64, f64)>);

/// Draw labelled line series into a PNG.
pub fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<'_>],
) -> Result<()> {
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(path, (800, 520)).into_drawing_area();
        root.fill(&WHITE)?;
        let pts = series.iter().flat_map(|s| s.2.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            if x.is_finite() && y.is_finite() {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let pad = ((y1 - y0) * 0.05).max(1e-6);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))?;
        chart
            .configure_mesh()
            .x_label_formatter(&|v| format!("{v:.0}"))
            .x_desc(x_label)
            .y_desc(y_label)
            .draw()?;
        for (name, color, data) in series {
            let color = *color;
            chart
                .draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

/// One configuration of the learning-rate sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepRow {
    /// Name, e.g. "BN-x5".
    pub name: String,
    /// Learning-rate multiplier.
    pub multiplier: f32,
    /// Steps to reach the target, if reached.
    pub steps_to_target: Option<u64>,
    /// Best test accuracy seen.
    pub best: f64,
    /// Step at which training diverged, if it did.
    pub diverged_at: Option<u64>,
    /// (step, accuracy) curve.
    pub curve: Vec<(u64, f64)>,
}

/// Run the sweep and return its rows (also used by the tests).
pub fn lr_sweep(a: &LrSweepArgs, data: &Data) -> Result<Vec<SweepRow>> {
    // Steps to the target are only seen at evaluations (and `% 0` panics).
    anyhow::ensure!(a.eval_every > 0, "--eval-every must be at least 1");
    let input = [data.train.h, data.train.w, data.train.c];
    let variants: [(&str, bool, LayerSpec); 3] = [
        ("Baseline", false, LayerSpec::Relu),
        ("BN", true, LayerSpec::Relu),
        ("BN-Sigmoid", true, LayerSpec::Sigmoid),
    ];
    let mut rows = Vec::new();
    for (vname, bn, act) in variants {
        for mult in [1.0f32, 5.0, 30.0] {
            let name = format!("{vname}-x{mult}");
            let cfg = TrainConfig {
                batch: a.batch,
                lr: a.base_lr * mult,
                momentum: 0.9,
                weight_decay: 0.0,
                nesterov: false,
                schedule: Schedule::Constant,
                seed: a.seed,
            };
            let init = if matches!(act, LayerSpec::Sigmoid) {
                Init::Xavier
            } else {
                Init::He
            };
            let mut t = Trainer::new(
                paper_mlp(input, bn, act.clone(), &name),
                init,
                cfg,
                a.threads,
            )?;
            crate::train::check_data(&t.net, &data.train)?;
            let mut row = SweepRow {
                name: name.clone(),
                multiplier: mult,
                steps_to_target: None,
                best: 0.0,
                diverged_at: None,
                curve: Vec::new(),
            };
            let pb = progress(a.max_steps, &name);
            while t.step < a.max_steps {
                match t.train_step(&data.train) {
                    Ok(_) => {}
                    Err(TrainError::Diverged { step, .. }) => {
                        row.diverged_at = Some(step);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
                if t.step % a.eval_every == 0 {
                    let e = t.evaluate(&data.test, None)?;
                    row.best = row.best.max(e.accuracy);
                    row.curve.push((t.step, e.accuracy));
                    if e.accuracy * 100.0 >= a.target {
                        row.steps_to_target = Some(t.step);
                        break;
                    }
                    pb.set_position(t.step);
                }
            }
            pb.finish_and_clear();
            eprintln!(
                "{name}: {}",
                match (row.steps_to_target, row.diverged_at) {
                    (Some(s), _) => format!("reached {}% at step {s}", a.target),
                    (None, Some(d)) => format!("diverged at step {d}"),
                    (None, None) =>
                        format!("best {:.2}% within {} steps", 100.0 * row.best, a.max_steps),
                }
            );
            rows.push(row);
        }
    }
    Ok(rows)
}

/// A learning rate as written: `0.02 * 5` in f32 is 0.099999994; show 0.1.
fn show_lr(lr: f32) -> String {
    format!("{lr:.5e}").parse::<f32>().unwrap_or(lr).to_string()
}

/// The sweep as a markdown table.
pub fn sweep_table(rows: &[SweepRow], a: &LrSweepArgs) -> String {
    let mut s = format!(
        "| model | learning rate | steps to {}% | best accuracy |\n|---|---|---|---|\n",
        a.target
    );
    for r in rows {
        let steps = match (r.steps_to_target, r.diverged_at) {
            (Some(n), _) => n.to_string(),
            (None, Some(d)) => format!("diverged (step {d})"),
            (None, None) => format!("not within {}", a.max_steps),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2}% |",
            r.name,
            show_lr(a.base_lr * r.multiplier),
            steps,
            100.0 * r.best
        );
    }
    s
}

/// Entry point of `normcore reproduce`.
pub fn run(e: Experiment) -> Result<()> {
    match e {
        Experiment::Figure1(a) => {
            crate::cli::check_output_dir(
                &a.out_dir,
                &[
                    "figure1.csv",
                    "figure1a.png",
                    "figure1b.png",
                    "figure1c.png",
                ],
                &a.data.input_files(),
            )?;
            let data = a.data.load()?;
            let record = figure1(&a, &data)?;
            write_figure1(&record, &a.out_dir, a.unit)?;
            println!(
                "| steps | test acc, no BN | test acc, BN | no BN p15/p50/p85 | BN p15/p50/p85 |"
            );
            println!("|---|---|---|---|---|");
            let n = record.len();
            for (i, p) in record.iter().enumerate() {
                // A readable summary: about ten rows, always the last.
                if i % (n / 10).max(1) == 0 || i + 1 == n {
                    println!(
                        "| {} | {:.2}% | {:.2}% | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} |",
                        p.step,
                        100.0 * p.acc_plain,
                        100.0 * p.acc_bn,
                        p.pct_plain[0],
                        p.pct_plain[1],
                        p.pct_plain[2],
                        p.pct_bn[0],
                        p.pct_bn[1],
                        p.pct_bn[2]
                    );
                }
            }
            println!(
                "wrote {}/figure1.csv, figure1a.png, figure1b.png, figure1c.png",
                a.out_dir.display()
            );
            Ok(())
        }
        Experiment::Drift(a) => drift::run(a),
        Experiment::LrSweep(a) => {
            crate::cli::check_output_dir(
                &a.out_dir,
                &["lr-sweep.md", "lr-sweep.csv", "lr-sweep.png"],
                &a.data.input_files(),
            )?;
            let data = a.data.load()?;
            let rows = lr_sweep(&a, &data)?;
            let table = sweep_table(&rows, &a);
            std::fs::create_dir_all(&a.out_dir)?;
            crate::checkpoint::write_atomic(&a.out_dir.join("lr-sweep.md"), table.as_bytes())?;
            let mut csv = String::from("model,lr,step,test_accuracy\n");
            for r in &rows {
                for (s, acc) in &r.curve {
                    let lr = show_lr(a.base_lr * r.multiplier);
                    let _ = writeln!(csv, "{},{lr},{s},{acc:.6}", r.name);
                }
            }
            crate::checkpoint::write_atomic(&a.out_dir.join("lr-sweep.csv"), csv.as_bytes())?;
            let palette = [BLACK, BLUE, RED, GREEN, MAGENTA, CYAN];
            let series: Vec<Series<'_>> = rows
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        r.name.as_str(),
                        palette[i % palette.len()].mix(if i < 6 { 1.0 } else { 0.5 }),
                        r.curve.iter().map(|&(s, a)| (s as f64, a)).collect(),
                    )
                })
                .collect();
            line_plot(
                &a.out_dir.join("lr-sweep.png"),
                "Test accuracy vs steps, learning rate x1/x5/x30",
                "training steps",
                "test accuracy",
                &series,
            )?;
            print!("{table}");
            println!(
                "wrote {}/lr-sweep.md, lr-sweep.csv, lr-sweep.png",
                a.out_dir.display()
            );
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits_args() -> DataArgs {
        DataArgs {
            data: "digits".into(),
            data_dir: None,
            test_csv: None,
            input_shape: None,
        }
    }

    fn digits() -> Data {
        digits_args().load().unwrap()
    }

    #[test]
    fn percentiles_interpolate_between_closest_ranks() {
        let v = [1.0f32, 2.0, 3.0, 4.0, 5.0];
        for (p, want) in [
            (0.0, 1.0),
            (15.0, 1.6),
            (25.0, 2.0),
            (50.0, 3.0),
            (85.0, 4.4),
            (100.0, 5.0),
        ] {
            assert!(
                (percentile(&v, p) - want).abs() < 1e-6,
                "p{p}: {}",
                percentile(&v, p)
            );
        }
        // Even length: the median is halfway between the middle two.
        let v = [10.0f32, 20.0, 30.0, 40.0];
        assert_eq!(percentile(&v, 50.0), 25.0);
        // rank 0.15 * 3 = 0.45: 10 + 0.45 * 10.
        assert!((percentile(&v, 15.0) - 14.5).abs() < 1e-5);
        assert_eq!(percentile(&[7.0], 85.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
        // Negative values and repeated values.
        let v = [-3.0f32, -1.0, -1.0, 2.0];
        assert_eq!(percentile(&v, 50.0), -1.0);
        assert!((percentile(&v, 85.0) - 0.65).abs() < 1e-6);
    }

    #[test]
    fn paper_mlp_has_bn_before_each_hidden_sigmoid_and_no_bias_there() {
        let bn = paper_mlp([28, 28, 1], true, LayerSpec::Sigmoid, "m");
        let kinds: Vec<&str> = bn.layers.iter().map(|l| l.kind()).collect();
        assert_eq!(
            kinds,
            [
                "dense",
                "batchnorm",
                "sigmoid",
                "dense",
                "batchnorm",
                "sigmoid",
                "dense",
                "batchnorm",
                "sigmoid",
                "dense"
            ]
        );
        let mut preset = crate::spec::preset("paper-mlp").unwrap();
        preset.name = "m".into();
        assert_eq!(bn, preset);
        let plain = paper_mlp([28, 28, 1], false, LayerSpec::Sigmoid, "paper-mlp-nobn");
        assert_eq!(plain, crate::spec::preset("paper-mlp-nobn").unwrap());
    }

    #[test]
    fn figure1_on_digits_shows_bn_ahead_at_200_steps() {
        let data = digits();
        let dir = tempfile::tempdir().unwrap();
        let a = Figure1Args {
            data: digits_args(),
            steps: 200,
            batch: 60,
            lr: 0.5,
            init: Init::Gaussian { std: 0.05 },
            eval_every: Some(100),
            unit: 7,
            seed: 1,
            threads: 1,
            out_dir: dir.path().to_path_buf(),
        };
        let record = figure1(&a, &data).unwrap();
        let steps: Vec<u64> = record.iter().map(|p| p.step).collect();
        assert_eq!(steps, [0, 100, 200]);
        let last = record.last().unwrap();
        eprintln!(
            "figure1 at 200 steps: BN {:.4}, no BN {:.4}",
            last.acc_bn, last.acc_plain
        );
        assert!(last.acc_bn >= 0.90, "BN test accuracy {}", last.acc_bn);
        assert!(
            last.acc_bn - last.acc_plain >= 0.20,
            "BN {} vs no BN {}",
            last.acc_bn,
            last.acc_plain
        );
        for p in &record {
            for pct in [p.pct_plain, p.pct_bn] {
                assert!(pct.iter().all(|v| v.is_finite()), "{p:?}");
                assert!(pct[0] <= pct[1] && pct[1] <= pct[2], "{p:?}");
            }
        }
        // Both networks start from the same weights, and BN with its initial
        // population statistics (0, 1) and γ = 1, β = 0 is the identity (up
        // to ε): the first point is the same for both.
        let first = record[0];
        assert_eq!(first.acc_bn, first.acc_plain);
        for (b, p) in first.pct_bn.iter().zip(first.pct_plain) {
            assert!((b - p).abs() <= 1e-4 * p.abs(), "{first:?}");
        }
        // Trained with BN, the sigmoid's input is spread around 0, not
        // pinned where the initial weights put it.
        assert!(last.pct_bn[0] < 0.0 && last.pct_bn[2] > 0.0, "{last:?}");
        // The files: a CSV row per record point, and three PNGs.
        write_figure1(&record, dir.path(), a.unit).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("figure1.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + record.len());
        assert!(lines[0].starts_with("step,test_acc_nobn,test_acc_bn"));
        assert!(lines[3].starts_with("200,"));
        for png in ["figure1a.png", "figure1b.png", "figure1c.png"] {
            let bytes = std::fs::read(dir.path().join(png)).unwrap();
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{png}");
        }
    }

    fn sweep_args(dir: &Path) -> LrSweepArgs {
        LrSweepArgs {
            data: digits_args(),
            base_lr: 0.02,
            target: 90.0,
            max_steps: 200,
            eval_every: 50,
            batch: 60,
            seed: 1,
            threads: 1,
            out_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn lr_sweep_runs_nine_configurations_with_sensible_records() {
        let data = digits();
        let dir = tempfile::tempdir().unwrap();
        let a = sweep_args(dir.path());
        let rows = lr_sweep(&a, &data).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Baseline-x1",
                "Baseline-x5",
                "Baseline-x30",
                "BN-x1",
                "BN-x5",
                "BN-x30",
                "BN-Sigmoid-x1",
                "BN-Sigmoid-x5",
                "BN-Sigmoid-x30"
            ]
        );
        for r in &rows {
            eprintln!(
                "{}: to target {:?}, best {:.3}, diverged {:?}",
                r.name, r.steps_to_target, r.best, r.diverged_at
            );
            assert!([1.0, 5.0, 30.0].contains(&r.multiplier));
            assert!((0.0..=1.0).contains(&r.best), "{r:?}");
            let best = r.curve.iter().map(|c| c.1).fold(0.0, f64::max);
            assert_eq!(best, r.best, "{}", r.name);
            for (i, &(s, _)) in r.curve.iter().enumerate() {
                assert_eq!(s, 50 * (i as u64 + 1), "{}", r.name);
            }
            match (r.steps_to_target, r.diverged_at) {
                (Some(s), None) => {
                    assert_eq!(r.curve.last().map(|c| c.0), Some(s));
                    assert!(r.best >= 0.90 && s <= a.max_steps);
                }
                (None, Some(d)) => assert!(d < a.max_steps),
                (None, None) => {
                    assert!(r.best < 0.90);
                    assert_eq!(r.curve.len(), 4, "{}", r.name);
                }
                (Some(_), Some(_)) => panic!("{r:?}"),
            }
        }
        // BN at the base rate reaches 90% on digits within 200 steps.
        assert!(rows[3].steps_to_target.is_some(), "{:?}", rows[3]);
        let table = sweep_table(&rows, &a);
        assert_eq!(table.lines().count(), 2 + 9);
        assert!(
            table.contains("| BN-x5 | 0.1 |") && table.contains("| BN-x30 | 0.6 |"),
            "{table}"
        );
        assert_eq!(show_lr(0.02 * 30.0), "0.6");
        assert_eq!(show_lr(1e-8), "0.00000001");
    }

    #[test]
    fn lr_sweep_rejects_evaluating_every_zero_steps() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = sweep_args(dir.path());
        a.eval_every = 0;
        let e = lr_sweep(&a, &digits()).unwrap_err().to_string();
        assert!(e.contains("--eval-every"), "{e}");
    }
}
