//! `normcore device-adapt`: the embedded int8 model adapted on the device
//! over the serial protocol's adaptation commands (docs/SERIAL.md,
//! "Adaptation"), and the same adaptation computed on the host with core,
//! which the device must match bit for bit.
//!
//! The firmware is `serve` built with the `adapt` feature (the default on
//! `mps2-an386`), run in QEMU through [`Session`]. In order:
//!
//! 1. `INFO`: protocol version 3, the adaptation commands present, the int8
//!    model's CRC that of the assets' `model-int8.ncm`, the data set's input
//!    size;
//! 2. the adaptation samples: `max(--unlabeled, --labeled)` training
//!    samples picked with `--seed` (as `normcore adapt` picks them), the
//!    first `--unlabeled` of them for re-estimation, the first `--labeled`
//!    for the tail; they and the test set shifted by `--shift`, then
//!    quantized to the model's input levels;
//! 3. **before**: `--samples` shifted test samples through `INFER_I8`,
//!    compared with the host engine (identical logits);
//! 4. **adaptation**: `ADAPT_BEGIN` (`--method`), for each re-estimation
//!    pass every unlabeled sample as `UNLABELED` then `FINISH_PASS`; the
//!    labeled samples as `LABELED`, `--epochs` times; `COMMIT`. The host
//!    runs the same steps with core (`Restat`, `Tail` on the same levels in
//!    the same order, an overlay of the same layout,
//!    `normcore::serial::adapt::overlay_scope`): every pass report, every
//!    loss and the committed overlay's bytes and CRC must be equal;
//! 5. **after**: the shifted test samples again, the device with its
//!    overlay against the host engine with the host's overlay;
//! 6. `RESET`, and the test samples once more: the device's logits must be
//!    those of step 3 (the original model).
//!
//! Any difference fails the command. Every read has a deadline
//! (`--timeout`): nothing here can hang.

use crate::boards;
use crate::device_eval::{build_serve, Session};
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Args;
use normcore::adapt::overlay::Overlay;
use normcore::adapt::restat::Restat;
use normcore::adapt::tail::{Tail, TailConfig};
use normcore::adapt::AdaptError;
use normcore::engine::{Engine, Output};
use normcore::kernels::NoTap;
use normcore::model::{crc32, file_crc, Model};
use normcore::serial::{AdaptBegin, AdaptPlan, Command, Committed, PassDone, PassState, Status};
use normcore_trainer::adapt::{pick_seeded, Method, Shift, TAIL_EPOCHS};
use normcore_trainer::assets;
use normcore_trainer::cli::DataArgs;
use normcore_trainer::export::device::{input_levels, ModelBytes};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `normcore device-adapt`.
#[derive(Args, Debug)]
pub struct DeviceAdaptArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// A simulated drift of the inputs (training and test samples):
    /// gainG+O, contrastF, blur3x3 or invert; e.g. gain0.6+0.3.
    #[arg(long, default_value = "gain0.6+0.3")]
    pub shift: Shift,
    /// restat: re-estimate the BN statistics on unlabeled samples; tail:
    /// train the last dense layer on labeled ones; both: the two in turn.
    #[arg(long, value_enum, default_value = "restat")]
    pub method: Method,
    /// Unlabeled training samples streamed for re-estimation (each pass).
    #[arg(long, default_value_t = 64)]
    pub unlabeled: usize,
    /// Labeled training samples streamed for tail training (each epoch).
    #[arg(long, default_value_t = 100)]
    pub labeled: usize,
    /// Epochs of tail training (the labeled samples streamed this often).
    #[arg(long, default_value_t = TAIL_EPOCHS)]
    pub epochs: usize,
    /// Re-estimate only the first this many BN layers (0: all).
    #[arg(long, default_value_t = 0)]
    pub restat_layers: u8,
    /// Tail training without γ, β of the BN layer feeding the dense layer
    /// (by default they are trained when the model has one).
    #[arg(long)]
    pub no_train_bn: bool,
    /// Shifted test samples evaluated before, after and after `RESET`,
    /// evenly spaced: a number or `all`.
    #[arg(long, default_value = "all", value_parser = assets::parse_samples)]
    pub samples: usize,
    /// Seed of the pick of adaptation samples.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The QEMU board to run `serve` on (its build must have the `adapt`
    /// feature).
    #[arg(long, default_value = "mps2-an386")]
    pub board: String,
    /// The `serve` ELF. Default: build it for the board with the assets.
    #[arg(long)]
    pub elf: Option<PathBuf>,
    /// Seconds to wait for each response before giving up.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// The assets directory holding the model files the firmware embeds
    /// (default: $NORMCORE_ASSETS, else firmware/assets).
    #[arg(long)]
    pub assets: Option<PathBuf>,
}

/// A refusal of an adaptation command: the status, and for
/// `ADAPT_ERROR` the code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The status.
    pub status: Status,
    /// `ADAPT_ERROR`'s code (0 for other statuses).
    pub code: u8,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.status)?;
        if self.status == Status::AdaptError {
            write!(f, " code {}", self.code)?;
        }
        Ok(())
    }
}

/// The adaptation commands on a [`Session`]: each returns the device's
/// answer, or its refusal (`Ok(Err(..))`); `Err` for a broken session.
impl Session {
    /// Send `command` with `payload`: the answer's payload or the refusal.
    pub fn adapt_request(
        &mut self,
        command: Command,
        payload: &[u8],
    ) -> Result<std::result::Result<Vec<u8>, Refusal>> {
        let r = self.request(command as u8, payload)?;
        Ok(match r.status {
            Status::Ok => Ok(r.payload),
            status => Err(Refusal {
                status,
                code: r.payload.first().copied().unwrap_or(0),
            }),
        })
    }

    /// `ADAPT_BEGIN`.
    pub fn adapt_begin(
        &mut self,
        b: &AdaptBegin,
    ) -> Result<std::result::Result<AdaptPlan, Refusal>> {
        self.adapt_request(Command::AdaptBegin, &b.encode())?
            .map(|p| AdaptPlan::decode(&p).context("ADAPT_BEGIN answer"))
            .transpose_ok()
    }

    /// `UNLABELED`.
    pub fn unlabeled(&mut self, levels: &[i8]) -> Result<std::result::Result<PassState, Refusal>> {
        let p: Vec<u8> = levels.iter().map(|&q| q as u8).collect();
        self.adapt_request(Command::Unlabeled, &p)?
            .map(|p| PassState::decode(&p).context("UNLABELED answer"))
            .transpose_ok()
    }

    /// `FINISH_PASS`.
    pub fn finish_pass(&mut self) -> Result<std::result::Result<PassDone, Refusal>> {
        self.adapt_request(Command::FinishPass, &[])?
            .map(|p| PassDone::decode(&p).context("FINISH_PASS answer"))
            .transpose_ok()
    }

    /// `LABELED`: the loss before the step and the steps so far.
    pub fn labeled(
        &mut self,
        class: u16,
        levels: &[i8],
    ) -> Result<std::result::Result<(f32, u32), Refusal>> {
        let mut p = class.to_le_bytes().to_vec();
        p.extend(levels.iter().map(|&q| q as u8));
        self.adapt_request(Command::Labeled, &p)?
            .map(|p| {
                ensure!(p.len() == 8, "LABELED answer of {} bytes", p.len());
                Ok((
                    f32::from_le_bytes([p[0], p[1], p[2], p[3]]),
                    u32::from_le_bytes([p[4], p[5], p[6], p[7]]),
                ))
            })
            .transpose_ok()
    }

    /// `COMMIT`.
    pub fn commit(&mut self) -> Result<std::result::Result<Committed, Refusal>> {
        self.adapt_request(Command::Commit, &[])?
            .map(|p| Committed::decode(&p).context("COMMIT answer"))
            .transpose_ok()
    }

    /// `RESET`.
    pub fn reset(&mut self) -> Result<std::result::Result<(), Refusal>> {
        self.adapt_request(Command::Reset, &[])?
            .map(|p| {
                ensure!(p.is_empty(), "RESET answer of {} bytes", p.len());
                Ok(())
            })
            .transpose_ok()
    }
}

/// `Result<Result<T>, Refusal>` as `Result<Result<T, Refusal>>`.
trait TransposeOk<T> {
    fn transpose_ok(self) -> Result<std::result::Result<T, Refusal>>;
}

impl<T> TransposeOk<T> for std::result::Result<Result<T>, Refusal> {
    fn transpose_ok(self) -> Result<std::result::Result<T, Refusal>> {
        match self {
            Ok(Ok(v)) => Ok(Ok(v)),
            Ok(Err(e)) => Err(e),
            Err(r) => Ok(Err(r)),
        }
    }
}

/// An answer that must not be a refusal.
pub fn accepted<T>(what: &str, r: Result<std::result::Result<T, Refusal>>) -> Result<T> {
    r?.map_err(|e| anyhow!("the device refused {what}: {e}"))
}

fn adapt_err(what: &str) -> impl Fn(AdaptError) -> anyhow::Error + '_ {
    move |e| anyhow!("host {what}: {e}")
}

/// The host engine: int8 logits (and the class) of `levels`, with
/// `overlay` if given.
pub fn host_logits(
    model: &Model<'_>,
    overlay: Option<&Overlay<'_>>,
    levels: &[i8],
) -> Result<(usize, Vec<i8>)> {
    let mut arena = vec![0u128; model.arena_bytes().div_ceil(16)];
    let buf = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut arena)[..model.arena_bytes()];
    let mut e = Engine::new(model, buf)?;
    e.input_i8()?.copy_from_slice(levels);
    let out = e
        .run_adapted(overlay, usize::MAX, &mut NoTap)
        .map_err(adapt_err("inference"))?;
    let class = out.argmax();
    match out {
        Output::I8 { values, .. } => Ok((class, values.to_vec())),
        Output::F32(_) => bail!("not an int8 model"),
    }
}

/// The same adaptation on the host, as the device runs it.
#[derive(Debug)]
pub struct HostAdaptation {
    /// The overlay's words.
    pub words: Vec<u32>,
    /// One report per re-estimation pass.
    pub passes: Vec<PassDone>,
    /// Each `LABELED` step's loss, in order.
    pub losses: Vec<f32>,
}

/// What a session asks for, and with which samples.
#[derive(Debug, Clone)]
pub struct Plan<'s> {
    /// `ADAPT_BEGIN`'s payload.
    pub begin: AdaptBegin,
    /// Unlabeled input levels, one sample each.
    pub unlabeled: &'s [Vec<i8>],
    /// Labeled input levels and classes.
    pub labeled: &'s [(Vec<i8>, u16)],
    /// Epochs over `labeled`.
    pub epochs: usize,
}

/// `ADAPT_BEGIN`'s payload for `method` on `model` (tail: SGD as `normcore
/// adapt` trains, γ, β too when the model has a BN layer before the
/// dense one, unless `no_train_bn`).
pub fn begin_for(
    model: &Model<'_>,
    method: Method,
    restat_layers: u8,
    no_train_bn: bool,
) -> AdaptBegin {
    let cfg = TailConfig::default();
    let tail = method != Method::Restat;
    let train_bn = tail && !no_train_bn && normcore::serial::adapt::tail_words(model, true).is_ok();
    AdaptBegin {
        restat: method != Method::Tail,
        tail,
        train_bn,
        restat_layers,
        lr: cfg.lr,
        momentum: cfg.momentum,
    }
}

/// Run `plan` on the host with core, into an overlay laid out as the
/// device's.
pub fn host_adapt(model: &Model<'_>, plan: &Plan<'_>) -> Result<HostAdaptation> {
    let scope = normcore::serial::adapt::overlay_scope(model);
    let n = Overlay::words_needed(model, scope).map_err(adapt_err("overlay"))?;
    let mut words = vec![0u32; n];
    let mut passes = Vec::new();
    let mut losses = Vec::new();
    let mut arena = vec![0u128; model.arena_bytes().div_ceil(16)];
    let bytes = model.arena_bytes();
    {
        let mut ov = Overlay::new(model, scope, &mut words).map_err(adapt_err("overlay"))?;
        let b = plan.begin;
        if b.restat {
            let need = Restat::words_needed(model).map_err(adapt_err("re-estimation"))?;
            let mut work = vec![0f32; need];
            let layers = match b.restat_layers {
                0 => usize::MAX,
                n => usize::from(n),
            };
            let mut r = Restat::first_layers(model, &mut work, layers)
                .map_err(adapt_err("re-estimation"))?;
            while !r.done() {
                for levels in plan.unlabeled {
                    let buf = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut arena)[..bytes];
                    let mut e = Engine::new(model, buf)?;
                    e.input_i8()?.copy_from_slice(levels);
                    r.observe(&mut e, Some(&ov))
                        .map_err(adapt_err("re-estimation"))?;
                }
                let rep = r
                    .finish_pass(model, &mut ov)
                    .map_err(adapt_err("re-estimation"))?;
                let (pass, total) = r.pass();
                passes.push(PassDone {
                    layer: rep.layer as u16,
                    remaining: total.saturating_sub(pass) as u16,
                    values: rep.values.min(u64::from(u32::MAX)) as u32,
                    samples: rep.samples,
                });
            }
        }
        if b.tail && !plan.labeled.is_empty() && plan.epochs > 0 {
            let cfg = TailConfig {
                lr: b.lr,
                momentum: b.momentum,
                train_bn: b.train_bn,
            };
            let need = Tail::words_needed(model, &cfg).map_err(adapt_err("tail"))?;
            let mut work = vec![0f32; need];
            let mut t = Tail::new(model, Some(&ov), cfg, &mut work).map_err(adapt_err("tail"))?;
            for _ in 0..plan.epochs {
                for (levels, class) in plan.labeled {
                    let buf = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut arena)[..bytes];
                    let mut e = Engine::new(model, buf)?;
                    e.input_i8()?.copy_from_slice(levels);
                    losses.push(
                        t.step(&mut e, Some(&ov), usize::from(*class))
                            .map_err(adapt_err("tail"))?,
                    );
                }
            }
            t.commit(model, &mut ov).map_err(adapt_err("tail commit"))?;
        }
    }
    Ok(HostAdaptation {
        words,
        passes,
        losses,
    })
}

/// What the device did in a session.
#[derive(Debug, Clone)]
pub struct DeviceAdaptation {
    /// `ADAPT_BEGIN`'s answer.
    pub plan: AdaptPlan,
    /// `FINISH_PASS`'s answers.
    pub passes: Vec<PassDone>,
    /// `LABELED`'s losses.
    pub losses: Vec<f32>,
    /// `COMMIT`'s answer.
    pub committed: Committed,
    /// Wall-clock seconds of re-estimation and of tail training.
    pub seconds: (f64, f64),
}

/// Run `plan` on the device, from `ADAPT_BEGIN` to `COMMIT`.
pub fn device_adapt(session: &mut Session, plan: &Plan<'_>) -> Result<DeviceAdaptation> {
    let ap = accepted("ADAPT_BEGIN", session.adapt_begin(&plan.begin))?;
    let mut passes = Vec::new();
    let started = Instant::now();
    for pass in 0..ap.passes {
        for (i, levels) in plan.unlabeled.iter().enumerate() {
            let st = accepted("UNLABELED", session.unlabeled(levels))?;
            ensure!(
                (st.pass, st.passes, usize::from(st.samples))
                    == (pass as u8, ap.passes as u8, i + 1),
                "UNLABELED answer {st:?} in pass {pass} after {} samples",
                i + 1
            );
        }
        passes.push(accepted("FINISH_PASS", session.finish_pass())?);
    }
    let restat_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let mut losses = Vec::new();
    if plan.begin.tail {
        for _ in 0..plan.epochs {
            for (levels, class) in plan.labeled {
                let (loss, steps) = accepted("LABELED", session.labeled(*class, levels))?;
                losses.push(loss);
                ensure!(
                    steps as usize == losses.len(),
                    "LABELED says {steps} steps after {}",
                    losses.len()
                );
            }
        }
    }
    let tail_s = started.elapsed().as_secs_f64();
    let committed = accepted("COMMIT", session.commit())?;
    Ok(DeviceAdaptation {
        plan: ap,
        passes,
        losses,
        committed,
        seconds: (restat_s, tail_s),
    })
}

/// One evaluation of the test samples on the device and the host.
#[derive(Debug, Clone, PartialEq)]
pub struct Eval {
    /// Samples.
    pub samples: usize,
    /// Device predictions equal to the label.
    pub device_correct: usize,
    /// Host predictions equal to the label.
    pub host_correct: usize,
    /// Device logits identical to the host's.
    pub identical: usize,
    /// The device's logits, per sample.
    pub logits: Vec<Vec<i8>>,
    /// The first difference, described.
    pub first_mismatch: Option<String>,
}

/// `INFER_I8` on every test sample, compared with the host engine (with
/// `overlay` if given).
pub fn evaluate(
    session: &mut Session,
    model: &Model<'_>,
    overlay: Option<&Overlay<'_>>,
    test: &[(Vec<i8>, u16)],
) -> Result<Eval> {
    let mut ev = Eval {
        samples: 0,
        device_correct: 0,
        host_correct: 0,
        identical: 0,
        logits: Vec::new(),
        first_mismatch: None,
    };
    for (i, (levels, label)) in test.iter().enumerate() {
        let (hc, hl) = host_logits(model, overlay, levels)?;
        let d = session.infer_i8(levels)?;
        let dl = match d.logits {
            crate::device_eval::DeviceLogits::I8(v) => v,
            crate::device_eval::DeviceLogits::F32(_) => bail!("f32 logits from INFER_I8"),
        };
        ev.samples += 1;
        ev.device_correct += usize::from(d.class == usize::from(*label));
        ev.host_correct += usize::from(hc == usize::from(*label));
        let same = dl == hl && d.class == hc;
        ev.identical += usize::from(same);
        if !same && ev.first_mismatch.is_none() {
            ev.first_mismatch = Some(format!(
                "test sample {i}: device class {} logits {dl:?}, host class {hc} logits {hl:?}",
                d.class
            ));
        }
        ev.logits.push(dl);
    }
    Ok(ev)
}

/// Run `normcore device-adapt` (module documentation).
pub fn run(a: DeviceAdaptArgs) -> Result<()> {
    ensure!(
        a.timeout.is_finite() && a.timeout > 0.0,
        "--timeout must be a positive number of seconds"
    );
    let root = crate::root();
    let board = boards::board(&a.board)?;
    let assets_dir = a
        .assets
        .clone()
        .unwrap_or_else(|| assets::default_dir(&root));
    let (_, model_int8, _) = assets::load(&assets_dir)
        .with_context(|| format!("the firmware's model files in {}", assets_dir.display()))?;
    let bytes = model_int8.with_context(|| {
        format!(
            "{} has no int8 model (model-int8.ncm)",
            assets_dir.display()
        )
    })?;
    let buf = ModelBytes::new(&bytes);
    let model = buf.parse().context("model-int8.ncm")?;
    let data = a.data.load()?;
    let (train, test) = (&data.train, &data.test);
    ensure!(
        test.sample_len() == normcore_trainer::export::device::sample_len(&model),
        "the int8 model takes {} input values, the `{}` data set has {} per sample",
        normcore_trainer::export::device::sample_len(&model),
        a.data.data,
        test.sample_len()
    );
    let begin = begin_for(&model, a.method, a.restat_layers, a.no_train_bn);
    let unlabeled_n = if begin.restat { a.unlabeled } else { 0 };
    let labeled_n = if begin.tail { a.labeled } else { 0 };
    if begin.restat {
        ensure!(
            unlabeled_n >= 2,
            "--unlabeled {unlabeled_n}: re-estimation needs at least 2 samples"
        );
    }
    if begin.tail {
        ensure!(
            labeled_n >= 1 && a.epochs >= 1,
            "tail training needs --labeled and --epochs of at least 1"
        );
    }
    let most = unlabeled_n.max(labeled_n);
    ensure!(
        most <= train.len(),
        "{most} adaptation samples asked for; the training split has {}",
        train.len()
    );
    let picked = a
        .shift
        .apply(&train.select(&pick_seeded(train.len(), most, a.seed), "adaptation")?)?;
    let levels = |d: &normcore_trainer::data::Dataset, i: usize| input_levels(&model, d.sample(i));
    let unlabeled: Vec<Vec<i8>> = (0..unlabeled_n).map(|i| levels(&picked, i)).collect();
    let labeled: Vec<(Vec<i8>, u16)> = (0..labeled_n)
        .map(|i| (levels(&picked, i), picked.label(i)))
        .collect();
    let shifted = a.shift.apply(test)?;
    let eval: Vec<(Vec<i8>, u16)> = assets::pick(shifted.len(), a.samples)
        .into_iter()
        .map(|i| (levels(&shifted, i), shifted.label(i)))
        .collect();
    let plan = Plan {
        begin,
        unlabeled: &unlabeled,
        labeled: &labeled,
        epochs: a.epochs,
    };

    let elf = match &a.elf {
        Some(p) => p.clone(),
        None => build_serve(board, &assets_dir)?,
    };
    let mut session = Session::start(board, &elf, Duration::from_secs_f64(a.timeout))?;
    let info = session.info().context("asking the firmware for INFO")?;
    ensure!(
        info.int8_model_crc == file_crc(&bytes),
        "{} embeds another int8 model than {} (device CRC {:#010x}, file {:#010x}): rebuild it, \
         or pass --assets",
        elf.display(),
        assets_dir.display(),
        info.int8_model_crc,
        file_crc(&bytes)
    );
    ensure!(
        info.has_adapt,
        "{} does not answer the adaptation commands (a build without the `adapt` feature, or a \
         board where it does not fit)",
        elf.display()
    );
    println!(
        "device-adapt: {} in QEMU {} ({}); int8 model crc {:#010x} ({}); `{}` data shifted by {}; \
         method {}: {} unlabeled, {} labeled x {} epochs (seed {}); {} test samples",
        elf.display(),
        board.name,
        board.core,
        info.int8_model_crc,
        assets_dir.display(),
        a.data.data,
        a.shift.name(),
        a.method.name(),
        unlabeled_n,
        labeled_n,
        if begin.tail { a.epochs } else { 0 },
        a.seed,
        crate::thousands(eval.len() as u64)
    );

    let before = evaluate(&mut session, &model, None, &eval)?;
    let host = host_adapt(&model, &plan)?;
    let dev = device_adapt(&mut session, &plan)?;
    let mut host_words = host.words.clone();
    let host_overlay = Overlay::load(&model, bytemuck::cast_slice(&host.words), &mut host_words)
        .map_err(adapt_err("overlay"))?;
    let host_bytes = host_overlay.as_bytes();
    let host_crc = crc32(host_bytes);
    let after = evaluate(&mut session, &model, Some(&host_overlay), &eval)?;
    accepted("RESET", session.reset())?;
    let reset = evaluate(&mut session, &model, None, &eval)?;
    let served = session.shutdown()?;

    let pct = |c: usize, n: usize| format!("{:.2}%", 100.0 * c as f64 / n.max(1) as f64);
    println!();
    println!("| int8 model on the shifted test samples | device accuracy | host accuracy | identical logits |");
    println!("|----------------------------------------|-----------------|---------------|------------------|");
    for (name, e) in [
        ("as exported (before)", &before),
        (
            &*format!("adapted on the device ({})", a.method.name()),
            &after,
        ),
        ("after RESET", &reset),
    ] {
        println!(
            "| {name:<38} | {:>15} | {:>13} | {:>16} |",
            pct(e.device_correct, e.samples),
            pct(e.host_correct, e.samples),
            format!("{}/{}", e.identical, e.samples)
        );
    }
    let same_passes = dev.passes == host.passes;
    let same_losses = dev.losses.len() == host.losses.len()
        && dev
            .losses
            .iter()
            .zip(&host.losses)
            .all(|(d, h)| d.to_bits() == h.to_bits());
    let same_overlay =
        dev.committed.crc == host_crc && dev.committed.bytes as usize == host_bytes.len();
    let reset_back = reset.logits == before.logits;
    let mean = |l: &[f32]| l.iter().sum::<f32>() / l.len().max(1) as f32;
    let per_epoch = labeled.len().max(1);
    println!();
    println!(
        "overlay: device {} B crc {:#010x} (store seq {}), host {} B crc {:#010x}: {}",
        crate::thousands(u64::from(dev.committed.bytes)),
        dev.committed.crc,
        dev.committed.seq,
        crate::thousands(host_bytes.len() as u64),
        host_crc,
        if same_overlay {
            "bit-identical"
        } else {
            "DIFFERENT"
        }
    );
    let tail_part = if dev.losses.is_empty() {
        "no tail steps".to_owned()
    } else {
        format!(
            "{} tail steps ({} LABELED frames, {:.2} s; mean loss first epoch {:.4}, last {:.4})",
            dev.losses.len(),
            dev.losses.len(),
            dev.seconds.1,
            mean(&dev.losses[..per_epoch.min(dev.losses.len())]),
            mean(&dev.losses[dev.losses.len().saturating_sub(per_epoch)..])
        )
    };
    println!(
        "device RAM plan: overlay {} B + workspace {} B; {} re-estimation passes ({} UNLABELED \
         frames, {:.2} s), {tail_part}; pass reports and losses equal to the host's: {}",
        crate::thousands(u64::from(dev.plan.overlay)),
        crate::thousands(u64::from(dev.plan.workspace)),
        dev.passes.len(),
        dev.passes.len() * unlabeled.len(),
        dev.seconds.0,
        if same_passes && same_losses {
            "yes"
        } else {
            "NO"
        }
    );
    println!(
        "the firmware answered {} requests ({} errors) and exited with success; RESET gave the \
         original logits back: {}",
        served.answered,
        served.errors,
        if reset_back { "yes" } else { "NO" }
    );
    let mut problems = Vec::new();
    if !same_overlay {
        problems.push("the committed overlay differs from the host's".to_owned());
    }
    if !same_passes {
        problems.push(format!(
            "pass reports: device {:?}, host {:?}",
            dev.passes, host.passes
        ));
    }
    if !same_losses {
        problems.push("the tail losses differ from the host's".to_owned());
    }
    for (name, e) in [
        ("before", &before),
        ("after", &after),
        ("after RESET", &reset),
    ] {
        if let Some(m) = &e.first_mismatch {
            problems.push(format!("{name}: {m}"));
        }
    }
    if !reset_back {
        problems.push("RESET did not give the original logits back".to_owned());
    }
    if served.errors != 0 {
        problems.push(format!("{} error responses", served.errors));
    }
    if !problems.is_empty() {
        bail!(
            "the device disagrees with the host:\n{}",
            problems.join("\n")
        );
    }
    Ok(())
}
