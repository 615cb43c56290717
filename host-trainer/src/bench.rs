//! `normcore bench`: training speed, printed as a table (never asserted).
//!
//! - seconds per 1,000 training steps of `paper-mlp` (with and without BN),
//!   batch 60, at 1 and 2 threads;
//! - seconds per MNIST epoch (60,000 samples) of the `cnn` preset, batch 64,
//!   at 1 and 2 threads.
//!
//! Times are wall-clock medians of `--repeats` runs, after a warm-up.
//! `--layers` also prints, for the last run of each workload, every
//! layer's forward and backward time per step (`Workspace::time_layers`).

use crate::data::Dataset;
use crate::network::Init;
use crate::spec::preset;
use crate::train::{Schedule, TrainConfig, Trainer};
use anyhow::Result;
use clap::Args;
use normcore::Rng;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `normcore bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// MNIST directory (default search as for --data idx); random data of
    /// MNIST's shape when it is not found.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Steps timed per MLP measurement.
    #[arg(long, default_value_t = 1000)]
    mlp_steps: u64,
    /// Steps timed per CNN measurement (default: one epoch, 937 steps).
    #[arg(long, default_value_t = 937)]
    cnn_steps: u64,
    /// Thread counts to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    threads: Vec<usize>,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    /// Skip the CNN measurements.
    #[arg(long)]
    no_cnn: bool,
    /// Also print each layer's forward and backward milliseconds per step
    /// (of the last run of each workload).
    #[arg(long)]
    layers: bool,
}

/// One timed run: seconds in all, and per layer (kind, forward ms per
/// step, backward ms per step) when timed.
struct Run {
    seconds: f64,
    layers: Vec<(&'static str, f64, f64)>,
}

fn load(dir: Option<&std::path::Path>) -> (Dataset, &'static str) {
    if let Ok(d) = crate::cli::mnist_dir(dir) {
        if let Ok((train, _)) = crate::data::load_mnist(&d) {
            return (train, "MNIST");
        }
    }
    let n = 6000;
    let mut rng = Rng::new(7);
    let images: Vec<f32> = (0..n * 784).map(|_| rng.next_f32()).collect();
    let labels: Vec<u16> = (0..n).map(|_| rng.below(10) as u16).collect();
    match Dataset::new("random", images, labels, [28, 28, 1], 10, 1.0 / 255.0) {
        Ok(d) => (d, "random data (MNIST not found)"),
        Err(_) => unreachable!("the synthetic set satisfies every invariant"),
    }
}

fn time_steps(
    preset_name: &str,
    batch: usize,
    threads: usize,
    steps: u64,
    data: &Dataset,
    layers: bool,
) -> Result<Run> {
    let cfg = TrainConfig {
        batch,
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
        schedule: Schedule::Constant,
        seed: 1,
    };
    let mut t = Trainer::new(preset(preset_name)?, Init::He, cfg, threads)?;
    for _ in 0..20 {
        t.train_step(data)?;
    }
    if let Some(ws) = t.workspace_mut().filter(|_| layers) {
        ws.time_layers(true);
    }
    let start = Instant::now();
    for _ in 0..steps {
        t.train_step(data)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    let per_step = |d: std::time::Duration| d.as_secs_f64() * 1e3 / steps.max(1) as f64;
    let times = t
        .workspace_mut()
        .map(|ws| ws.layer_times().to_vec())
        .unwrap_or_default();
    let kinds = t.net.spec.layers.iter().map(|l| l.kind());
    let layers = kinds
        .zip(times)
        .map(|(kind, [f, b])| (kind, per_step(f), per_step(b)))
        .collect();
    Ok(Run { seconds, layers })
}

/// The per-layer table of one workload (nothing when not timed).
fn print_layers(name: &str, threads: usize, run: &Run) {
    if run.layers.is_empty() {
        return;
    }
    println!();
    println!("{name}, {threads} thread(s), ms per step (last run):");
    println!();
    println!("| layer | kind | forward | backward |");
    println!("|---|---|---|---|");
    for (i, (kind, f, b)) in run.layers.iter().enumerate() {
        println!("| {} | {kind} | {f:.3} | {b:.3} |", i + 1);
    }
}

/// The median run's seconds and the last run (for its layer table).
fn summarise(runs: Vec<Run>) -> (f64, Run) {
    let median = median(runs.iter().map(|r| r.seconds).collect());
    let last = runs.into_iter().last().unwrap_or(Run {
        seconds: 0.0,
        layers: Vec::new(),
    });
    (median, last)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Run the benchmark and print the table.
pub fn run(a: BenchArgs) -> Result<()> {
    let (data, source) = load(a.data_dir.as_deref());
    let repeats = a.repeats.max(1);
    println!("training speed on {source}; median of {repeats} runs; lower is better");
    println!();
    println!("| workload | threads | measured | result |");
    println!("|---|---|---|---|");
    let mut tables = Vec::new();
    for name in ["paper-mlp", "paper-mlp-nobn"] {
        for &th in &a.threads {
            let runs = (0..repeats)
                .map(|_| time_steps(name, 60, th, a.mlp_steps, &data, a.layers))
                .collect::<Result<Vec<_>>>()?;
            let (median, last) = summarise(runs);
            let per_1000 = median * 1000.0 / a.mlp_steps as f64;
            println!(
                "| {name}, batch 60 | {th} | {} steps | {per_1000:.3} s per 1,000 steps |",
                a.mlp_steps
            );
            tables.push((name, th, last));
        }
    }
    if !a.no_cnn {
        let steps_per_epoch = 60_000.0 / 64.0;
        for &th in &a.threads {
            let runs = (0..repeats)
                .map(|_| time_steps("cnn", 64, th, a.cnn_steps, &data, a.layers))
                .collect::<Result<Vec<_>>>()?;
            let (median, last) = summarise(runs);
            let per_epoch = median * steps_per_epoch / a.cnn_steps as f64;
            println!(
                "| cnn, batch 64 | {th} | {} steps | {per_epoch:.2} s per 60,000-sample epoch |",
                a.cnn_steps
            );
            tables.push(("cnn", th, last));
        }
    }
    for (name, th, run) in &tables {
        print_layers(name, *th, run);
    }
    Ok(())
}
