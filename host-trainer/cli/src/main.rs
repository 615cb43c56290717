//! `normcore`: train Batch-Normalized networks on a workstation, reproduce
//! the paper's experiments, and prepare models for microcontrollers.

use normcore_trainer::cli::{progress, Data, DataArgs};
use normcore_trainer::{adapt, assets, bench, checkpoint, export, reproduce, spec, train};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use normcore_trainer::network::Init;
use spec::NetworkSpec;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;
use train::{Schedule, TrainConfig, Trainer};

#[derive(Parser, Debug)]
#[command(
    name = "normcore",
    version,
    about = "Train Batch-Normalized networks and prepare them for microcontrollers",
    long_about = "Train Batch-Normalized networks (Ioffe & Szegedy, 2015) on a workstation, \
reproduce the paper's MNIST experiments, and prepare models for Cortex-M devices.\n\n\
With no data arguments, commands use the built-in UCI digits set (8x8), so a first run needs no download."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a network and save its checkpoint.
    #[command(after_help = train::DIVERGENCE_RULE)]
    Train(TrainArgs),
    /// Evaluate a saved network on a data set.
    Eval(EvalArgs),
    /// Fold BN into the layers and write a model file (.ncm) for a device,
    /// f32 or int8; prints the test accuracy of each form.
    Export(export::ExportArgs),
    /// Show a checkpoint's network, or a model file's layers, costs, flash
    /// and RAM needs: layers, shapes, parameters, MACs.
    Inspect {
        /// A checkpoint written by `normcore train`, or a model file written
        /// by `normcore export`.
        file: PathBuf,
        /// Also print the network as a TOML description (for --network;
        /// checkpoints only).
        #[arg(long)]
        toml: bool,
    },
    /// Adapt a model file to a data set (optionally under a simulated
    /// drift) with the device's code, print the accuracy before and after,
    /// and write the adapted model file: BN statistics re-estimation on
    /// unlabeled samples (restat), tail training on labeled ones (tail), or
    /// both.
    Adapt(adapt::command::AdaptArgs),
    /// Convert an ONNX model of a sequential network trained elsewhere
    /// (PyTorch, ...) into a checkpoint: BN unfolded with its running
    /// statistics; then eval, export, inspect and adapt work as for a
    /// network trained here.
    Import(normcore_trainer::onnx::command::ImportArgs),
    /// Reproduce the paper's experiments.
    #[command(subcommand)]
    Reproduce(reproduce::Experiment),
    /// Train, fold and export a model and pick test samples with the host
    /// engine's expected outputs: the firmware's build inputs
    /// (`firmware/assets/`, used by `cargo xtask demo` and the QEMU tests).
    Assets(assets::AssetArgs),
    /// The firmware's build inputs for your own model file(s): test samples
    /// from a data set with the host engine's expected outputs, written
    /// with the model(s) to an assets directory (what `cargo xtask firmware
    /// infer --model PATH.ncm` builds the firmware with).
    Samples(assets::SamplesArgs),
    /// Measure training speed and print a table.
    Bench(bench::BenchArgs),
    /// Stream a test set through the `serve` firmware in QEMU (mps2-an386,
    /// UART0 on stdio; docs/SERIAL.md) and compare every prediction with
    /// the host engine's; prints device and host accuracy.
    DeviceEval(normcore_device_tools::device_eval::DeviceEvalArgs),
    /// Adapt the int8 model on the device: the `serve` firmware in QEMU
    /// (feature `adapt`) re-estimates and/or trains its tail on shifted
    /// samples streamed over the serial adaptation commands, commits; the
    /// host computes the same with core and checks the overlay and every
    /// logit bit for bit; prints accuracy before and after, and the costs.
    DeviceAdapt(normcore_device_tools::device_adapt::DeviceAdaptArgs),
}

#[derive(Args, Debug)]
struct TrainArgs {
    /// Built-in network: paper-mlp, paper-mlp-nobn, cnn, digits-mlp, digits-cnn.
    #[arg(long, conflicts_with_all = ["network", "resume"])]
    preset: Option<String>,
    /// A TOML file describing a custom sequential network.
    #[arg(long, conflicts_with = "resume")]
    network: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Training steps (mini-batches), at least 1; with --resume the new
    /// total, beyond the checkpoint's.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    /// Mini-batch size [default: 60]. With --resume: applied from the next
    /// step on.
    #[arg(long)]
    batch: Option<usize>,
    /// Base learning rate, > 0 [default: 0.1]. With --resume: applied from
    /// the next step on.
    #[arg(long)]
    lr: Option<f32>,
    /// SGD momentum [default: 0.9]. With --resume: applied.
    #[arg(long)]
    momentum: Option<f32>,
    /// L2 weight decay on dense/conv weights [default: 0]. With --resume:
    /// applied.
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Use Nesterov momentum (not with --resume).
    #[arg(long, conflicts_with = "resume")]
    nesterov: bool,
    /// Learning-rate schedule: constant, step:GAMMA:EVERY or exp:GAMMA:EVERY
    /// (0 < GAMMA <= 1) [default: constant]. With --resume: applied.
    #[arg(long)]
    schedule: Option<Schedule>,
    /// Weight initialisation: he, xavier, or gaussian:STD (the paper's small
    /// Gaussian; 0 < STD <= 10). Not with --resume.
    #[arg(long, default_value = "he", conflicts_with = "resume")]
    init: Init,
    /// Evaluate on the test set every N steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    eval_every: u64,
    /// Write a checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
    /// Seed of initialisation, shuffling and dropout (not with --resume:
    /// the checkpoint carries its generators).
    #[arg(long, default_value_t = 1, conflicts_with = "resume")]
    seed: u64,
    /// Worker threads (at least 1).
    #[arg(long, default_value_t = 1, value_parser = threads)]
    threads: usize,
    /// Where to write the checkpoint.
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Continue a run from its checkpoint (network, weights, momenta,
    /// statistics, RNG and position); --steps is the new total. The
    /// network options (--preset, --network, --init, --seed, --nesterov)
    /// are refused; --lr, --batch, --momentum, --weight-decay and
    /// --schedule replace the checkpoint's, and the change is printed.
    #[arg(long)]
    resume: Option<PathBuf>,
}

/// `--threads`: a positive number.
fn threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a thread count: use 1 or more")),
    }
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// A checkpoint written by `normcore train`.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Worker threads (at least 1).
    #[arg(long, default_value_t = 1, value_parser = threads)]
    threads: usize,
}

fn default_out(name: &str) -> PathBuf {
    PathBuf::from("out").join(format!("{name}.ckpt"))
}

/// Run `steps` total steps of `t`, evaluating every `eval_every` steps and
/// checkpointing every `checkpoint_every` steps to `out`.
fn run_training(
    t: &mut Trainer,
    data: &Data,
    steps: u64,
    eval_every: u64,
    checkpoint_every: u64,
    out: &Path,
) -> Result<train::Evaluation> {
    train::check_data(&t.net, &data.train)?;
    let classes = train::check_labels(&t.net, &data.train)?;
    if classes < t.net.classes() {
        eprintln!(
            "warning: the training set has {classes} of the network's {} classes",
            t.net.classes()
        );
    }
    let pb = progress(steps, "train");
    pb.set_position(t.step);
    let started = Instant::now();
    let mut loss_avg = None::<f32>;
    let mut last_acc = String::new();
    let mut saved = None::<u64>;
    // A periodic checkpoint is written one step late, once the next step
    // has passed the divergence rule: a step can leave finite but ruined
    // weights that only the next one reveals (lr 1e30), and those must not
    // replace a good file.
    let mut pending = None::<(u64, Vec<u8>)>;
    stop_on_interrupt();
    while t.step < steps {
        if INTERRUPTED.load(Ordering::Relaxed) {
            pb.finish_and_clear();
            // Interrupted, not diverged: the last snapshot is kept.
            if let Some((step, bytes)) = pending.take() {
                checkpoint::write_atomic(out, &bytes)?;
                saved = Some(step);
            }
            match saved {
                Some(s) => bail!(
                    "interrupted at step {}: {} holds the checkpoint of step {s}",
                    t.step,
                    out.display()
                ),
                None => bail!(
                    "interrupted at step {}: nothing written (use --checkpoint-every N to keep partial runs)",
                    t.step
                ),
            }
        }
        let loss = t.train_step(&data.train)?;
        if let Some((step, bytes)) = pending.take() {
            if t.is_calm() {
                checkpoint::write_atomic(out, &bytes)?;
                saved = Some(step);
            }
        }
        loss_avg = Some(loss_avg.map_or(loss, |a| 0.98 * a + 0.02 * loss));
        if eval_every > 0 && t.step % eval_every == 0 && t.step < steps {
            let e = t.evaluate(&data.test, None)?;
            last_acc = format!(" test acc {:.2}%", 100.0 * e.accuracy);
            let line = format!(
                "step {:>6}  loss {:.4}  test accuracy {:.2}%",
                t.step,
                loss_avg.unwrap_or(loss),
                100.0 * e.accuracy
            );
            if pb.is_hidden() {
                eprintln!("{line}");
            } else {
                pb.println(line);
            }
        }
        if t.step % 20 == 0 {
            pb.set_message(format!("loss {:.4}{last_acc}", loss_avg.unwrap_or(loss)));
            pb.set_position(t.step);
        }
        if checkpoint_every > 0 && t.step % checkpoint_every == 0 && t.is_calm() {
            pending = Some((t.step, checkpoint::checked_bytes(t, out)?));
        }
    }
    pb.finish_and_clear();
    let e = t.evaluate(&data.test, None)?;
    // The last update can blow the weights up after a finite training loss:
    // a NaN test loss is divergence too, and such weights are not saved.
    if !e.loss.is_finite() {
        return Err(train::TrainError::Diverged {
            step: t.step,
            loss: e.loss as f32,
            lr: t.cfg.sgd(t.step.saturating_sub(1)).lr,
            reason: format!("the test loss is {}", e.loss),
        }
        .into());
    }
    eprintln!(
        "trained {} steps in {:.1} s; test accuracy {:.2}% (loss {:.4}) on {} samples",
        t.step,
        started.elapsed().as_secs_f64(),
        100.0 * e.accuracy,
        e.loss,
        e.samples
    );
    checkpoint::save(t, out)?;
    eprintln!("checkpoint: {}", out.display());
    Ok(e)
}

/// Set by SIGINT/SIGTERM during training: the loop stops between steps,
/// so no write is cut short and no temporary file is left behind.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

#[cfg(unix)]
extern "C" fn on_interrupt(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// From now on, Ctrl-C (SIGINT) and SIGTERM set [`INTERRUPTED`] instead of
/// killing the process mid-write.
#[cfg(unix)]
#[allow(unsafe_code)]
fn stop_on_interrupt() {
    let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

#[cfg(not(unix))]
fn stop_on_interrupt() {}

fn cmd_train(a: TrainArgs) -> Result<()> {
    // The output first: not an input, not a directory, writable; checked
    // before any work. On --resume the checkpoint itself is the default
    // output (the run continues in place); the data, test and network
    // files are never replaced.
    let out = match (&a.out, &a.resume) {
        (Some(o), _) => o.clone(),
        (None, Some(r)) => r.clone(),
        (None, None) => default_out(&spec_name(&a)?),
    };
    let mut inputs = a.data.input_files();
    if let Some(n) = &a.network {
        inputs.push(n);
    }
    normcore_trainer::cli::check_output(&out, &inputs)?;
    let data = a.data.load()?;
    let mut t = match &a.resume {
        Some(path) => {
            let mut t = checkpoint::load(path, a.threads)?;
            eprintln!(
                "resuming `{}` at step {} (epoch {})",
                t.net.spec.name, t.step, t.epoch
            );
            if a.steps <= t.step {
                bail!(
                    "--steps {} is not beyond the checkpoint's step {}: --steps is the new total",
                    a.steps,
                    t.step
                );
            }
            let old = t.cfg;
            let c = &mut t.cfg;
            let mut changed = Vec::new();
            macro_rules! apply {
                ($field:ident, $flag:literal) => {
                    if let Some(v) = a.$field {
                        if v != c.$field {
                            changed.push(format!("{} {} -> {}", $flag, old.$field, v));
                        }
                        c.$field = v;
                    }
                };
            }
            apply!(lr, "--lr");
            apply!(batch, "--batch");
            apply!(momentum, "--momentum");
            apply!(weight_decay, "--weight-decay");
            apply!(schedule, "--schedule");
            t.cfg.validate()?;
            if !changed.is_empty() {
                eprintln!(
                    "resume: applied from step {} on: {}",
                    t.step + 1,
                    changed.join(", ")
                );
            }
            t
        }
        None => {
            let spec = train_spec(&a)?;
            let cfg = TrainConfig {
                batch: a.batch.unwrap_or(60),
                lr: a.lr.unwrap_or(0.1),
                momentum: a.momentum.unwrap_or(0.9),
                weight_decay: a.weight_decay.unwrap_or(0.0),
                nesterov: a.nesterov,
                schedule: a.schedule.unwrap_or(Schedule::Constant),
                seed: a.seed,
            };
            Trainer::new(spec, a.init, cfg, a.threads)?
        }
    };
    eprintln!(
        "network `{}`: {} parameters, {} MACs per sample; data `{}` ({} train / {} test)",
        t.net.spec.name,
        t.net.param_count(),
        t.net.macs(),
        data.train.name,
        data.train.len(),
        data.test.len()
    );
    run_training(
        &mut t,
        &data,
        a.steps,
        a.eval_every,
        a.checkpoint_every,
        &out,
    )?;
    Ok(())
}

/// The network a fresh run trains: --network, --preset, or the data set's
/// default preset.
fn train_spec(a: &TrainArgs) -> Result<NetworkSpec> {
    Ok(match (&a.preset, &a.network) {
        (_, Some(path)) => NetworkSpec::load(path)?,
        (Some(p), None) => spec::preset(p)?,
        (None, None) => spec::preset(if a.data.kind() == normcore_trainer::cli::DataKind::Idx {
            "paper-mlp"
        } else {
            "digits-mlp"
        })?,
    })
}

/// The network's name (for the default output path) without reading data.
fn spec_name(a: &TrainArgs) -> Result<String> {
    Ok(train_spec(a)?.name)
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    let mut data = a.data.load()?;
    let mut t = checkpoint::load(&a.model, a.threads)?;
    data.use_pixel_scale(t.pixel_scale);
    for (name, set) in [("train", &data.train), ("test", &data.test)] {
        let e = t.evaluate(set, None)?;
        println!(
            "{name:<5} {:>6} samples  accuracy {:6.2}%  loss {:.4}",
            e.samples,
            100.0 * e.accuracy,
            e.loss
        );
    }
    Ok(())
}

/// The first four bytes of `file`, if it has them.
fn magic(file: &Path) -> Option<[u8; 4]> {
    use std::io::Read;
    let mut m = [0u8; 4];
    std::fs::File::open(file).ok()?.read_exact(&mut m).ok()?;
    Some(m)
}

fn cmd_inspect(file: &Path, toml: bool) -> Result<()> {
    if magic(file).is_some_and(|m| export::is_model_file(&m)) {
        if toml {
            bail!(
                "--toml applies to checkpoints; {} is a model file",
                file.display()
            );
        }
        let bytes = std::fs::read(file).with_context(|| file.display().to_string())?;
        return export::inspect(file, &bytes);
    }
    let t = checkpoint::load(file, 1)?;
    let net = &t.net;
    println!(
        "network `{}`: input {}, {} classes; trained {} steps (batch {}, lr {}, {})",
        net.spec.name,
        net.input(),
        net.classes(),
        t.step,
        t.cfg.batch,
        t.cfg.lr,
        t.cfg.schedule
    );
    println!(
        "{:>3}  {:<18} {:>10} {:>10} {:>9} {:>11}",
        "#", "layer", "input", "output", "params", "MACs"
    );
    for (i, l) in net.layers.iter().enumerate() {
        println!(
            "{:>3}  {:<18} {:>10} {:>10} {:>9} {:>11}",
            i + 1,
            net.spec.layers[i].kind(),
            l.r.input.to_string(),
            l.r.output.to_string(),
            l.params.len(),
            l.r.op.macs(l.r.output)
        );
    }
    println!(
        "total: {} parameters ({} bytes as f32), {} MACs per sample",
        net.param_count(),
        4 * net.param_count(),
        net.macs()
    );
    if toml {
        println!("\n{}", net.spec.to_toml());
    }
    Ok(())
}

/// Let a write to a closed pipe end the process quietly, as Unix tools do
/// (`normcore eval ... | head -1`): Rust ignores SIGPIPE, so a closed stdout
/// would otherwise make `println!` panic.
#[cfg(unix)]
#[allow(unsafe_code)]
fn quiet_on_closed_pipe() {
    // SAFETY: restoring a signal's default disposition has no
    // preconditions; no handler of ours runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn quiet_on_closed_pipe() {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Not for device-eval, which talks to QEMU through pipes and reports
    // their failures itself.
    if !matches!(cli.command, Command::DeviceEval(_)) {
        quiet_on_closed_pipe();
    }
    let result = match cli.command {
        Command::Train(a) => cmd_train(a),
        Command::Eval(a) => cmd_eval(a),
        Command::Export(a) => export::run(a),
        Command::Inspect { file, toml } => cmd_inspect(&file, toml),
        Command::Adapt(a) => adapt::command::run(a),
        Command::Import(a) => normcore_trainer::onnx::command::run(a),
        Command::Reproduce(e) => reproduce::run(e),
        Command::Assets(a) => assets::run(a),
        Command::Samples(a) => assets::run_samples(a),
        Command::Bench(a) => bench::run(a),
        Command::DeviceEval(a) => normcore_device_tools::device_eval::run(a),
        Command::DeviceAdapt(a) => normcore_device_tools::device_adapt::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", message(&e));
            ExitCode::FAILURE
        }
    }
}

/// `e` and its causes joined by ": ", each cause left out when the message
/// before it already says it (many errors put their cause in their own
/// message, and `{:#}` would print it twice).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}
