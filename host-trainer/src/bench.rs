//! `normcore bench`: training speed, printed as a table (never asserted).
//!
//! - seconds per 1,000 training steps of `paper-mlp` (with and without BN),
//!   batch 60, at 1 and 2 threads;
//! - seconds per MNIST epoch (60,000 samples) of the `cnn` preset, batch 64,
//!   at 1 and 2 threads.
//!
//! Times are wall-clock medians of `--repeats` runs, after a warm-up.

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
) -> Result<f64> {
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
    let start = Instant::now();
    for _ in 0..steps {
        t.train_step(data)?;
    }
    Ok(start.elapsed().as_secs_f64())
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
    for name in ["paper-mlp", "paper-mlp-nobn"] {
        for &th in &a.threads {
            let runs = (0..repeats)
                .map(|_| time_steps(name, 60, th, a.mlp_steps, &data))
                .collect::<Result<Vec<_>>>()?;
            let per_1000 = median(runs) * 1000.0 / a.mlp_steps as f64;
            println!(
                "| {name}, batch 60 | {th} | {} steps | {per_1000:.3} s per 1,000 steps |",
                a.mlp_steps
            );
        }
    }
    if !a.no_cnn {
        let steps_per_epoch = 60_000.0 / 64.0;
        for &th in &a.threads {
            let runs = (0..repeats)
                .map(|_| time_steps("cnn", 64, th, a.cnn_steps, &data))
                .collect::<Result<Vec<_>>>()?;
            let per_epoch = median(runs) * steps_per_epoch / a.cnn_steps as f64;
            println!(
                "| cnn, batch 64 | {th} | {} steps | {per_epoch:.2} s per 60,000-sample epoch |",
                a.cnn_steps
            );
        }
    }
    Ok(())
}
