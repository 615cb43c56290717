//! The firmware's build inputs ("assets"): a trained model in both file
//! forms and a set of test samples with the outputs the host expects the
//! device to produce.
//!
//! [`generate`] trains a network (seeded, so a rerun gives the same bytes),
//! folds and exports it as `model-f32.ncm` and `model-int8.ncm`, picks test
//! samples, runs them through **core's engine on the host, on the very bytes
//! the firmware embeds** ([`Device`], the exporter's runner of a file as a
//! device runs it), and writes:
//!
//! | file             | what                                                        |
//! |------------------|-------------------------------------------------------------|
//! | `model-f32.ncm`  | the folded network, f32 (docs/FORMAT.md)                     |
//! | `model-int8.ncm` | the same, quantized to int8                                 |
//! | `samples.bin`    | the samples, both input forms, labels, expected outputs (below) |
//! | `summary.txt`    | host accuracies and sizes, `key=value` lines (for `cargo xtask demo`) |
//! | `model.ckpt`     | the trained checkpoint (for `normcore inspect` / `export`)  |
//!
//! Files are rewritten only when their content changes, so regenerating
//! identical assets does not make cargo rebuild the firmware.
//!
//! The directory is `firmware/assets/` unless `NORMCORE_ASSETS` names
//! another one ([`ASSETS_ENV`]); the firmware's `build.rs` reads the same.
//!
//! # `samples.bin`
//!
//! Its layout is defined once, in `normcore-firmware-build`
//! (`firmware/build-support/src/samples.rs`, [`Samples`]), which the
//! firmware's build reads it with. A file holds the samples' inputs and the
//! host engine's outputs for one or both model files.
//!
//! # A model trained elsewhere (or earlier)
//!
//! [`embed`] does the same for model files given by the user (`normcore
//! samples --model PATH.ncm`, which `cargo xtask firmware infer --model`
//! runs): it loads the data set, checks that the model's input shape and
//! pixel scale are the data's, runs the test set through the host engine
//! and writes the model file(s), `samples.bin` and `summary.txt`.
//!
//! Samples are evenly spaced over the test set (`k·len/N`), or all of it
//! when it has at most `N` samples.

use crate::checkpoint;
use crate::cli::DataArgs;
use crate::export::device::{self, Device, Logits, ModelBytes};
use crate::export::ncm::{write_int8_form, WeightForm};
use crate::export::{calibrate, fold, input_params, quantize, write_f32, ExportError};
use crate::network::Init;
use crate::spec;
use crate::train::{Schedule, TrainConfig, Trainer};
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use normcore::model::{crc32, file_crc, Kind, Model};
pub use normcore_firmware_build::samples::{Part, Samples};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The f32 model file's name in the assets directory.
pub const MODEL_F32: &str = "model-f32.ncm";
/// The int8 model file's name.
pub const MODEL_INT8: &str = "model-int8.ncm";
/// The samples file's name.
pub const SAMPLES: &str = "samples.bin";
/// The summary's name.
pub const SUMMARY: &str = "summary.txt";
/// The checkpoint's name.
pub const CHECKPOINT: &str = "model.ckpt";
/// Environment variable naming the assets directory (default `firmware/assets`).
pub const ASSETS_ENV: &str = "NORMCORE_ASSETS";
/// Samples embedded unless told otherwise.
pub const DEFAULT_SAMPLES: usize = 64;
/// Training steps unless told otherwise (the digits MLP converges by then).
pub const DEFAULT_STEPS: u64 = 1500;

/// What [`generate`] builds.
#[derive(Debug, Clone)]
pub struct AssetConfig {
    /// A built-in network (`digits-mlp`, `digits-cnn`, `paper-mlp`, ...).
    pub preset: String,
    /// Where the data comes from (`digits`, `mnist`, a CSV path).
    pub data: DataArgs,
    /// Training steps.
    pub steps: u64,
    /// Test samples to embed (all of the test set when it is smaller;
    /// `usize::MAX` for all).
    pub samples: usize,
    /// Seed of initialisation and shuffling.
    pub seed: u64,
    /// Worker threads for training.
    pub threads: usize,
    /// Output rows per weight block (4 or 8).
    pub block_rows: usize,
    /// How the int8 dense/conv weights are stored (default: per layer,
    /// pair words where they are faster).
    pub weights: WeightForm,
    /// Training samples the int8 ranges are calibrated on.
    pub calibration: usize,
    /// The assets directory.
    pub out_dir: PathBuf,
}

impl Default for AssetConfig {
    /// digits-mlp on the built-in digits, [`DEFAULT_STEPS`] steps, seed 1,
    /// [`DEFAULT_SAMPLES`] samples, into [`default_dir`] relative to the
    /// current directory.
    fn default() -> Self {
        AssetConfig {
            preset: "digits-mlp".into(),
            data: DataArgs {
                data: "digits".into(),
                data_dir: None,
                test_csv: None,
                input_shape: None,
            },
            steps: DEFAULT_STEPS,
            samples: DEFAULT_SAMPLES,
            seed: 1,
            threads: 1,
            block_rows: 4,
            weights: WeightForm::Auto,
            calibration: 1000,
            out_dir: default_dir(Path::new(".")),
        }
    }
}

/// The assets directory for a workspace at `root`: `$NORMCORE_ASSETS` if
/// set (relative paths taken from `root`), else `root/firmware/assets`.
pub fn default_dir(root: &Path) -> PathBuf {
    match std::env::var_os(ASSETS_ENV) {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("firmware").join("assets"),
    }
}

/// `normcore assets`.
#[derive(Args, Debug)]
pub struct AssetArgs {
    /// Built-in network: digits-mlp, digits-cnn, paper-mlp, cnn, ...
    #[arg(long, default_value = "digits-mlp")]
    pub preset: String,
    #[command(flatten)]
    pub data: DataArgs,
    /// Training steps (mini-batches of 32).
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    pub steps: u64,
    /// Test samples to embed in the firmware, evenly spaced over the test
    /// set: a number, or `all` (all of them also when the set is smaller).
    #[arg(long, default_value = "64", value_parser = parse_samples)]
    pub samples: usize,
    /// Seed of initialisation and shuffling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads for training.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Output directory (default: $NORMCORE_ASSETS, else firmware/assets).
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
    /// int8 dense/conv weight storage: auto (pair words per layer where
    /// they are faster), i8 or pairs; as `normcore export --weights`.
    #[arg(long, value_enum, default_value_t = crate::cli::WeightsArg::Auto)]
    pub weights: crate::cli::WeightsArg,
}

/// `--samples`: a positive count, or `all` (`usize::MAX`).
pub fn parse_samples(s: &str) -> Result<usize, String> {
    match s {
        "all" => Ok(usize::MAX),
        _ => match s.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("`{s}` samples: give a positive number or `all`")),
        },
    }
}

impl AssetArgs {
    /// The configuration these arguments describe.
    pub fn config(&self) -> AssetConfig {
        AssetConfig {
            preset: self.preset.clone(),
            data: self.data.clone(),
            steps: self.steps,
            samples: self.samples,
            seed: self.seed,
            threads: self.threads,
            weights: self.weights.into(),
            out_dir: self
                .out_dir
                .clone()
                .unwrap_or_else(|| default_dir(Path::new("."))),
            ..AssetConfig::default()
        }
    }
}

/// Correctly classified samples by `outputs` (`[N, C]`, first maximum
/// wins) against `labels`.
pub fn correct<T: PartialOrd>(labels: &[u16], classes: usize, outputs: &[T]) -> usize {
    outputs
        .chunks_exact(classes.max(1))
        .zip(labels)
        .filter(|(row, &label)| argmax(row) == usize::from(label))
        .count()
}

/// Index of the first largest value (the engine's rule for ties).
pub fn argmax<T: PartialOrd>(row: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

/// The digest the firmware prints for int8 outputs: CRC-32 of all samples'
/// logits, in order, as bytes.
pub fn digest_i8(outputs: &[i8]) -> u32 {
    let bytes: Vec<u8> = outputs.iter().map(|&v| v as u8).collect();
    crc32(&bytes)
}

/// The digest the firmware prints for f32 outputs: CRC-32 of all samples'
/// logits, in order, as little-endian IEEE-754 bytes.
pub fn digest_f32(outputs: &[f32]) -> u32 {
    let bytes: Vec<u8> = outputs
        .iter()
        .flat_map(|v| v.to_bits().to_le_bytes())
        .collect();
    crc32(&bytes)
}

/// Parse `bytes` (from a 16-aligned copy) and run every sample of `inputs`
/// through [`Device`], core's engine as the firmware runs it.
fn run_device<T: Copy>(
    bytes: &[u8],
    kind: Kind,
    inputs: &[T],
    run: impl Fn(&mut Device<'_, '_>, &[T]) -> Result<Logits, ExportError>,
) -> Result<Vec<Logits>> {
    let buf = ModelBytes::new(bytes);
    let model = buf.parse()?;
    ensure!(
        model.kind() == kind,
        "expected a {kind:?} model, the file holds {:?}",
        model.kind()
    );
    let per = device::sample_len(&model).max(1);
    ensure!(
        inputs.len() % per == 0,
        "{} input values for samples of {per}",
        inputs.len()
    );
    let mut dev = Device::new(&model);
    Ok(inputs
        .chunks_exact(per)
        .map(|x| run(&mut dev, x))
        .collect::<Result<_, _>>()?)
}

/// Logits `[n, classes]` of core's [`Engine`](normcore::engine::Engine) on
/// the f32 model file `bytes` for `n` samples `inputs` (`[n, h·w·c]`).
pub fn engine_f32(bytes: &[u8], inputs: &[f32]) -> Result<Vec<f32>> {
    let out = run_device(bytes, Kind::F32, inputs, |d, x| d.run(x))?;
    out.into_iter()
        .map(|l| match l {
            Logits::F32(v) => Ok(v),
            Logits::I8 { .. } => bail!("an f32 model gave int8 outputs"),
        })
        .collect::<Result<Vec<_>>>()
        .map(|v| v.concat())
}

/// Logits `[n, classes]` of core's [`Engine`](normcore::engine::Engine) on
/// the int8 model file `bytes` for `n` samples given as input levels
/// (`[n, h·w·c]`).
pub fn engine_i8(bytes: &[u8], inputs: &[i8]) -> Result<Vec<i8>> {
    let out = run_device(bytes, Kind::Int8, inputs, |d, x| d.run_levels(x))?;
    out.into_iter()
        .map(|l| match l {
            Logits::I8 { values, .. } => Ok(values),
            Logits::F32(_) => bail!("an int8 model gave f32 outputs"),
        })
        .collect::<Result<Vec<_>>>()
        .map(|v| v.concat())
}

/// The int8 model's input quantization applied to f32 inputs (any number
/// of samples): what the firmware embeds.
pub fn quantize_inputs(int8_model: &[u8], inputs: &[f32]) -> Result<Vec<i8>> {
    let buf = ModelBytes::new(int8_model);
    let model = buf.parse()?;
    Ok(device::input_levels(&model, inputs))
}

/// How the network was trained, when [`generate`] trained it.
#[derive(Debug, Clone, PartialEq)]
pub struct Training {
    /// Network name.
    pub network: String,
    /// Training steps.
    pub steps: u64,
    /// Training set size.
    pub train_samples: usize,
    /// Float network (BN in eval mode, unfolded), on the whole test set.
    pub float_test_accuracy: f64,
    /// Float network on the embedded samples: correct count.
    pub float_correct: usize,
    /// Seconds spent training.
    pub train_seconds: f64,
}

/// What the host engine did with one model file.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSummary {
    /// The file through the host engine, whole test set.
    pub test_accuracy: f64,
    /// On the embedded samples: correct count.
    pub correct: usize,
    /// CRC-32 of the host engine's logits on the embedded samples (what
    /// the firmware's `infer` prints as `digest`).
    pub digest: u32,
    /// Bytes of the file.
    pub model_bytes: usize,
    /// Its arena bytes.
    pub arena_bytes: usize,
}

/// Host accuracies and sizes, as `summary.txt` records them.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Present when the assets were trained here ([`generate`]).
    pub training: Option<Training>,
    /// Data set, as selected (`digits`, `mnist`, a CSV path).
    pub data: String,
    /// Test set size.
    pub test_samples: usize,
    /// Samples embedded in the firmware.
    pub embedded: usize,
    /// Multiply-accumulates per sample.
    pub macs: usize,
    /// The f32 model file, if there is one.
    pub f32: Option<ModelSummary>,
    /// The int8 model file, if there is one.
    pub int8: Option<ModelSummary>,
}

impl Summary {
    /// `key=value` lines (what `cargo xtask demo` and `cargo xtask
    /// firmware infer` read): the training keys only when trained here, a
    /// model's keys (`f32_*`, `int8_*`) only for the files present.
    pub fn to_text(&self) -> String {
        let mut s = String::from("# written by `normcore assets` or `normcore samples`\n");
        let mut kv = |k: &str, v: String| {
            let _ = writeln!(s, "{k}={v}");
        };
        if let Some(t) = &self.training {
            kv("network", t.network.clone());
            kv("steps", t.steps.to_string());
            kv("train_samples", t.train_samples.to_string());
            kv("float_test_accuracy", t.float_test_accuracy.to_string());
            kv("float_correct", t.float_correct.to_string());
        }
        kv("data", self.data.clone());
        kv("test_samples", self.test_samples.to_string());
        kv("embedded_samples", self.embedded.to_string());
        kv("macs", self.macs.to_string());
        for (name, m) in [("f32", &self.f32), ("int8", &self.int8)] {
            if let Some(m) = m {
                kv(
                    &format!("{name}_test_accuracy"),
                    m.test_accuracy.to_string(),
                );
                kv(&format!("{name}_correct"), m.correct.to_string());
                kv(&format!("{name}_digest"), format!("{:#010x}", m.digest));
                kv(&format!("{name}_model_bytes"), m.model_bytes.to_string());
                kv(&format!("{name}_arena_bytes"), m.arena_bytes.to_string());
            }
        }
        s
    }
}

/// Write `bytes` to `path` unless it already holds exactly them (so that
/// cargo, which watches modification times, does not rebuild for nothing).
/// Returns whether the file was written.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    checkpoint::write_atomic(path, bytes)?;
    Ok(true)
}

/// Everything [`generate`] or [`embed`] produced.
#[derive(Debug)]
pub struct Assets {
    /// The f32 model file, if any.
    pub model_f32: Option<Vec<u8>>,
    /// The int8 model file, if any.
    pub model_int8: Option<Vec<u8>>,
    /// The embedded samples and the host engine's outputs.
    pub samples: Samples,
    /// Accuracies and sizes.
    pub summary: Summary,
    /// Files rewritten (their content changed).
    pub written: Vec<PathBuf>,
}

/// Indices of `n` samples evenly spaced over `len` (all when `n >= len`).
pub fn pick(len: usize, n: usize) -> Vec<usize> {
    let n = n.min(len);
    (0..n).map(|k| k * len / n).collect()
}

/// The rows `idx` of a `[len, width]` array.
fn rows<T: Copy>(values: &[T], width: usize, idx: &[usize]) -> Vec<T> {
    idx.iter()
        .flat_map(|&i| values[i * width..(i + 1) * width].iter().copied())
        .collect()
}

/// The test set's labels and the embedded rows, for [`Picked::embed`].
struct Picked<'a> {
    idx: &'a [usize],
    labels: &'a [u16],
    all_labels: &'a [u16],
    features: usize,
    classes: usize,
}

impl Picked<'_> {
    /// One model file's part of `samples.bin` and its figures: the whole
    /// test set (`inputs_all`, in the model's input form) through the host
    /// engine (`run`), the embedded rows picked from it and run again one
    /// by one, which must give the same outputs.
    fn embed<T: Copy + PartialEq + PartialOrd>(
        &self,
        bytes: &[u8],
        arena: usize,
        inputs_all: &[T],
        run: fn(&[u8], &[T]) -> Result<Vec<T>>,
        digest: fn(&[T]) -> u32,
    ) -> Result<(Part<T>, ModelSummary)> {
        let all = run(bytes, inputs_all)?;
        let expected = rows(&all, self.classes, self.idx);
        let inputs = rows(inputs_all, self.features, self.idx);
        ensure!(
            run(bytes, &inputs)? == expected,
            "the host engine is not repeatable"
        );
        let figures = ModelSummary {
            test_accuracy: correct(self.all_labels, self.classes, &all) as f64
                / self.all_labels.len().max(1) as f64,
            correct: correct(self.labels, self.classes, &expected),
            digest: digest(&expected),
            model_bytes: bytes.len(),
            arena_bytes: arena,
        };
        let part = Part {
            inputs,
            expected,
            model_crc: file_crc(bytes),
        };
        Ok((part, figures))
    }
}

/// Whether the model file `name` takes the samples of `data`: the same
/// input shape, for an f32 file the same pixel scale (an int8 file
/// quantizes with its own input parameters), and every one of `labels`
/// below its classes. Clear errors naming both sides otherwise.
pub fn check_model_data(
    model: &Model<'_>,
    data: &crate::data::Dataset,
    labels: &[u16],
    name: &str,
) -> Result<()> {
    let h = model.header();
    let (shape, d) = (h.input, data.shape());
    ensure!(
        (shape.h, shape.w, shape.c) == (d.h, d.w, d.c),
        "{name} takes {}x{}x{} inputs; the data set `{}` has {}x{}x{} samples",
        shape.h,
        shape.w,
        shape.c,
        data.name,
        d.h,
        d.w,
        d.c
    );
    if model.kind() == Kind::F32 {
        ensure!(
            h.pixel_scale == data.pixel_scale,
            "{name} was exported for inputs scaled by {} per raw unit; the data set `{}` \
             is scaled by {}: use the data it was trained on",
            h.pixel_scale,
            data.name,
            data.pixel_scale
        );
    }
    let max_label = labels.iter().copied().max().unwrap_or(0);
    ensure!(
        usize::from(max_label) < h.classes,
        "{name} has {} classes; the data set has label {max_label}",
        h.classes
    );
    Ok(())
}

/// Run the whole test set through the host engine for each model file,
/// pick `n` samples evenly spaced over it, and put together what the
/// firmware embeds: the samples with both input forms and the engine's
/// outputs, and the host's figures. Each file must take the test set's
/// sample shape, and (f32) its pixel scale.
pub fn samples_for(
    model_f32: Option<&[u8]>,
    model_int8: Option<&[u8]>,
    test: &crate::data::Dataset,
    n: usize,
) -> Result<(Samples, Summary)> {
    ensure!(n >= 1, "embed at least one sample (--samples)");
    ensure!(
        model_f32.is_some() || model_int8.is_some(),
        "no model file to embed"
    );
    ensure!(!test.is_empty(), "the test set is empty");
    let features = test.sample_len();
    let idx = pick(test.len(), n);
    let labels: Vec<u16> = idx.iter().map(|&i| test.labels[i]).collect();
    let mut classes = None;
    let mut macs = 0;
    let mut check = |bytes: &[u8], name: &str| -> Result<usize> {
        let buf = ModelBytes::new(bytes);
        let m = buf.parse_file(name)?;
        check_model_data(&m, test, &labels, name)?;
        let h = m.header();
        if let Some(c) = classes {
            ensure!(
                c == h.classes,
                "the model files have different class counts"
            );
        }
        classes = Some(h.classes);
        macs = m
            .layers()
            .map(|l| l.map(|l| l.op.macs(l.output)))
            .sum::<Result<usize, _>>()?;
        Ok(m.arena_bytes())
    };
    let f32_arena = model_f32.map(|b| check(b, MODEL_F32)).transpose()?;
    let int8_arena = model_int8.map(|b| check(b, MODEL_INT8)).transpose()?;
    let classes = classes.unwrap_or(0);
    let all_labels = &test.labels;
    let mut summary = Summary {
        training: None,
        data: test.name.clone(),
        test_samples: test.len(),
        embedded: idx.len(),
        macs,
        f32: None,
        int8: None,
    };
    let picked = Picked {
        idx: &idx,
        labels: &labels,
        all_labels,
        features,
        classes,
    };
    let mut f32_part = None;
    if let (Some(bytes), Some(arena)) = (model_f32, f32_arena) {
        let (part, figures) = picked.embed(bytes, arena, test.images(), engine_f32, digest_f32)?;
        (f32_part, summary.f32) = (Some(part), Some(figures));
    }
    let mut int8_part = None;
    if let (Some(bytes), Some(arena)) = (model_int8, int8_arena) {
        let levels = quantize_inputs(bytes, test.images())?;
        let (part, figures) = picked.embed(bytes, arena, &levels, engine_i8, digest_i8)?;
        (int8_part, summary.int8) = (Some(part), Some(figures));
    }
    let samples = Samples {
        features,
        classes,
        labels,
        f32: f32_part,
        int8: int8_part,
    };
    samples
        .check()
        .map_err(|e| anyhow::anyhow!("samples: {e}"))?;
    Ok((samples, summary))
}

/// Write an assets directory: the model files present, `samples.bin`,
/// `summary.txt` and any `extra` files; a model file of a kind not given
/// is removed (a stale one would be embedded). The paths rewritten.
fn write_dir(
    dir: &Path,
    model_f32: Option<&[u8]>,
    model_int8: Option<&[u8]>,
    samples: &Samples,
    summary: &Summary,
    extra: &[(&str, Vec<u8>)],
) -> Result<Vec<PathBuf>> {
    let samples_bytes = samples
        .to_bytes()
        .map_err(|e| anyhow::anyhow!("samples: {e}"))?;
    let mut written = Vec::new();
    for (name, bytes) in [(MODEL_F32, model_f32), (MODEL_INT8, model_int8)] {
        let path = dir.join(name);
        match bytes {
            Some(b) => {
                if write_if_changed(&path, b)? {
                    written.push(path);
                }
            }
            None => {
                if path.exists() {
                    std::fs::remove_file(&path).with_context(|| path.display().to_string())?;
                }
            }
        }
    }
    let mut files = vec![
        (SAMPLES, samples_bytes),
        (SUMMARY, summary.to_text().into_bytes()),
    ];
    files.extend(extra.iter().cloned());
    for (name, bytes) in files {
        let path = dir.join(name);
        if write_if_changed(&path, &bytes)? {
            written.push(path);
        }
    }
    Ok(written)
}

/// The files [`write_dir`] writes (or removes: a model file of a kind not
/// given) in an assets directory.
const DIR_FILES: [&str; 4] = [MODEL_F32, MODEL_INT8, SAMPLES, SUMMARY];

/// The assets directory of `cfg` checked before any work
/// ([`crate::cli::check_output_dir`]).
fn check_out_dir(cfg: &AssetConfig) -> Result<()> {
    let mut names = DIR_FILES.to_vec();
    names.push(CHECKPOINT);
    crate::cli::check_output_dir(&cfg.out_dir, &names, &cfg.data.input_files())
}

/// Train, fold, export, run the host engine and write the assets (module
/// documentation). Deterministic for a given configuration and machine.
pub fn generate(cfg: &AssetConfig) -> Result<Assets> {
    ensure!(cfg.samples >= 1, "embed at least one sample (--samples)");
    check_out_dir(cfg)?;
    let data = cfg.data.load()?;
    let spec = spec::preset(&cfg.preset)?;
    let Exported {
        trainer: mut t,
        float,
        train_seconds,
        model_f32,
        model_int8,
    } = train_export(cfg, spec, &data)?;

    let test = &data.test;
    let (samples, mut summary) =
        samples_for(Some(&model_f32), Some(&model_int8), test, cfg.samples)?;
    let idx = pick(test.len(), cfg.samples);
    let chosen = test.select(&idx, format!("{}-embedded", test.name))?;
    let float_correct =
        (t.evaluate(&chosen, None)?.accuracy * chosen.len() as f64).round() as usize;
    summary.data = cfg.data.data.clone();
    summary.training = Some(Training {
        network: t.net.spec.name.clone(),
        steps: t.step,
        train_samples: data.train.len(),
        float_test_accuracy: float.accuracy,
        float_correct,
        train_seconds,
    });
    let written = write_dir(
        &cfg.out_dir,
        Some(&model_f32),
        Some(&model_int8),
        &samples,
        &summary,
        &[(CHECKPOINT, checkpoint::to_bytes(&mut t))],
    )?;
    Ok(Assets {
        model_f32: Some(model_f32),
        model_int8: Some(model_int8),
        samples,
        summary,
        written,
    })
}

/// A network trained and exported by [`train_export`].
#[derive(Debug)]
pub struct Exported {
    /// The trainer after the last step.
    pub trainer: Trainer,
    /// The float network (BN in eval mode, unfolded) on the test set.
    pub float: crate::train::Evaluation,
    /// Seconds spent training.
    pub train_seconds: f64,
    /// The folded f32 model file.
    pub model_f32: Vec<u8>,
    /// The int8 model file.
    pub model_int8: Vec<u8>,
}

/// Train `spec` on `data` as [`generate`] does (`cfg`'s steps, seed and
/// threads; batch 32, SGD with momentum 0.9 and weight decay 1e-4, learning
/// rate 0.1 decayed ×0.3 at each third, He initialisation), then fold,
/// calibrate on `cfg.calibration` training samples and write both model
/// files (`cfg.block_rows`, `cfg.weights`). Deterministic for a given
/// configuration and machine.
pub fn train_export(
    cfg: &AssetConfig,
    spec: crate::spec::NetworkSpec,
    data: &crate::cli::Data,
) -> Result<Exported> {
    let train_cfg = TrainConfig {
        batch: 32,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
        // Two decays of x0.3 over the run.
        schedule: Schedule::Step {
            gamma: 0.3,
            every: (cfg.steps / 3).max(1),
        },
        seed: cfg.seed,
    };
    let mut t = Trainer::new(spec, Init::He, train_cfg, cfg.threads)?;
    crate::train::check_data(&t.net, &data.train)?;
    crate::train::check_data(&t.net, &data.test)?;
    let started = Instant::now();
    while t.step < cfg.steps {
        t.train_step(&data.train)?;
    }
    let train_seconds = started.elapsed().as_secs_f64();
    let float = t.evaluate(&data.test, None)?;
    ensure!(
        float.loss.is_finite(),
        "training diverged: test loss {}",
        float.loss
    );

    let folded = fold(&t.net)?;
    let cal = calibrate(&folded, &data.train, cfg.calibration)?;
    let (input_q, _) = input_params(&data.train)?;
    let (qm, _notes) = quantize(&folded, &cal, input_q, data.train.pixel_scale)?;
    let model_f32 = write_f32(&folded, cfg.block_rows, data.train.pixel_scale)?;
    let model_int8 = write_int8_form(&qm, cfg.block_rows, cfg.weights)?;
    Ok(Exported {
        trainer: t,
        float,
        train_seconds,
        model_f32,
        model_int8,
    })
}

/// Embed the user's model file(s) (`normcore samples`): load the data,
/// put together the samples for `models` ([`samples_for`]) and write the
/// assets directory `out_dir` (module documentation). At most one file of
/// each kind.
pub fn embed(models: &[PathBuf], data: &DataArgs, n: usize, out_dir: &Path) -> Result<Assets> {
    let mut model_f32 = None;
    let mut model_int8 = None;
    // Inputs the directory's files must not replace: the data files, and
    // each model file unless it already is the file it would be written to
    // (it is then left as it is: the bytes are the same).
    let mut inputs = data.input_files();
    for path in models {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let kind = ModelBytes::new(&bytes)
            .parse_file(&path.display().to_string())?
            .kind();
        let slot = match kind {
            Kind::F32 => &mut model_f32,
            Kind::Int8 => &mut model_int8,
        };
        ensure!(
            slot.is_none(),
            "two {kind:?} model files: give at most one of each kind"
        );
        *slot = Some(bytes);
        let own = out_dir.join(match kind {
            Kind::F32 => MODEL_F32,
            Kind::Int8 => MODEL_INT8,
        });
        if path.canonicalize().ok() != own.canonicalize().ok() || !own.exists() {
            inputs.push(path);
        }
    }
    crate::cli::check_output_dir(out_dir, &DIR_FILES, &inputs)?;
    let loaded = data.load()?;
    let (samples, summary) =
        samples_for(model_f32.as_deref(), model_int8.as_deref(), &loaded.test, n).with_context(
            || {
                models
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        )?;
    let summary = Summary {
        data: data.data.clone(),
        ..summary
    };
    let written = write_dir(
        out_dir,
        model_f32.as_deref(),
        model_int8.as_deref(),
        &samples,
        &summary,
        &[],
    )?;
    Ok(Assets {
        model_f32,
        model_int8,
        samples,
        summary,
        written,
    })
}

/// An assets directory's contents: the f32 model file, the int8 model
/// file (each if present), and the samples.
pub type Loaded = (Option<Vec<u8>>, Option<Vec<u8>>, Samples);

/// The assets in `dir` as the firmware's build reads them: the model files
/// present and the samples, checked against each other.
pub fn load(dir: &Path) -> Result<Loaded> {
    let hint = "run `cargo xtask assets` to generate the firmware assets";
    let read = |name: &str| -> Result<Option<Vec<u8>>> {
        let p = dir.join(name);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| p.display().to_string()),
        }
    };
    let (f, q) = (read(MODEL_F32)?, read(MODEL_INT8)?);
    let raw = read(SAMPLES)?.with_context(|| format!("{}: no {SAMPLES}: {hint}", dir.display()))?;
    let s = Samples::from_bytes(&raw)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join(SAMPLES).display()))?;
    ensure!(
        f.is_some() || q.is_some(),
        "{}: no model file: {hint}",
        dir.display()
    );
    let same = |file: &Option<Vec<u8>>, crc: Option<u32>| match (file, crc) {
        (Some(b), Some(c)) => file_crc(b) == c,
        (None, None) => true,
        _ => false,
    };
    ensure!(
        same(&f, s.f32.as_ref().map(|p| p.model_crc))
            && same(&q, s.int8.as_ref().map(|p| p.model_crc)),
        "{SAMPLES} was generated for other model files: {hint}"
    );
    Ok((f, q, s))
}

/// Print the host's table for an assets directory.
fn print_summary(s: &Summary, out_dir: &Path, written: &[PathBuf]) {
    if let Some(t) = &s.training {
        println!(
            "network `{}` trained {} steps in {:.1} s on `{}` ({} train / {} test samples)",
            t.network, t.steps, t.train_seconds, s.data, t.train_samples, s.test_samples
        );
    } else {
        println!("`{}`: {} test samples", s.data, s.test_samples);
    }
    println!();
    println!(
        "| model                      | test accuracy ({:>5}) | embedded ({:>4}) |",
        s.test_samples, s.embedded
    );
    println!("|----------------------------|-----------------------|-----------------|");
    let pct = |c: usize| 100.0 * c as f64 / s.embedded.max(1) as f64;
    let mut rows = Vec::new();
    if let Some(t) = &s.training {
        rows.push((
            "float, BN (unfolded)",
            t.float_test_accuracy,
            t.float_correct,
        ));
    }
    for (name, m) in [
        ("folded f32 (host engine)", &s.f32),
        ("int8 (host engine)", &s.int8),
    ] {
        if let Some(m) = m {
            rows.push((name, m.test_accuracy, m.correct));
        }
    }
    for (name, all, correct) in rows {
        println!(
            "| {name:<26} | {:>20.2}% | {:>14.2}% |",
            100.0 * all,
            pct(correct)
        );
    }
    println!();
    for (name, m) in [(MODEL_F32, &s.f32), (MODEL_INT8, &s.int8)] {
        if let Some(m) = m {
            println!(
                "{name}: {} bytes (arena {} B), digest {:#010x}",
                m.model_bytes, m.arena_bytes, m.digest
            );
        }
    }
    println!("{} samples", s.embedded);
    if written.is_empty() {
        println!("{}: unchanged", out_dir.display());
    } else {
        for p in written {
            println!("wrote {}", p.display());
        }
    }
}

/// Run `normcore assets`: generate, then print what was made.
pub fn run(a: AssetArgs) -> Result<()> {
    let cfg = a.config();
    check_out_dir(&cfg)?;
    eprintln!(
        "assets: training {} on {} for {} steps (seed {})",
        cfg.preset, cfg.data.data, cfg.steps, cfg.seed
    );
    let out = generate(&cfg)?;
    print_summary(&out.summary, &cfg.out_dir, &out.written);
    Ok(())
}

/// `normcore samples`.
#[derive(Args, Debug)]
pub struct SamplesArgs {
    /// The model file(s) to embed (.ncm, f32 or int8; at most one of each).
    #[arg(long = "model", required = true)]
    pub models: Vec<PathBuf>,
    #[command(flatten)]
    pub data: DataArgs,
    /// Test samples to embed, evenly spaced over the test set: a number,
    /// or `all`.
    #[arg(long, default_value = "64", value_parser = parse_samples)]
    pub samples: usize,
    /// Output directory (the firmware build reads it through
    /// $NORMCORE_ASSETS).
    #[arg(long)]
    pub out_dir: PathBuf,
}

/// Run `normcore samples`: the assets for the user's model file(s).
pub fn run_samples(a: SamplesArgs) -> Result<()> {
    let out = embed(&a.models, &a.data, a.samples, &a.out_dir)?;
    print_summary(&out.summary, &a.out_dir, &out.written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correct_counts_first_maximum() {
        // Sample 0 (label 1): [1.5, -2.0] -> 0, wrong; sample 1 (label 0):
        // [0.25, 0.125] -> 0, right.
        assert_eq!(correct(&[1, 0], 2, &[1.5, -2.0, 0.25, 0.125]), 1);
        // Ties go to the first.
        assert_eq!(argmax(&[3, 7, 7, 1]), 1);
    }

    #[test]
    fn digests_are_zlib_crc32_of_the_bytes() {
        // CRC-32 of "123456789" is 0xCBF43926.
        let q: Vec<i8> = b"123456789".iter().map(|&b| b as i8).collect();
        assert_eq!(digest_i8(&q), 0xCBF4_3926);
        let f = [1.0f32, -2.5];
        let bytes: Vec<u8> = f.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(digest_f32(&f), crc32(&bytes));
    }

    #[test]
    fn pick_spreads_evenly_and_takes_all_of_a_small_set() {
        assert_eq!(pick(10, 4), vec![0, 2, 5, 7]);
        assert_eq!(pick(3, 64), vec![0, 1, 2]);
        assert_eq!(pick(5, usize::MAX), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn samples_argument_takes_a_count_or_all() {
        assert_eq!(parse_samples("all"), Ok(usize::MAX));
        assert_eq!(parse_samples("12"), Ok(12));
        assert!(parse_samples("0").is_err());
        assert!(parse_samples("many").is_err());
    }

    #[test]
    fn unchanged_files_are_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("f.bin");
        assert!(write_if_changed(&path, b"abc").unwrap());
        assert!(!write_if_changed(&path, b"abc").unwrap());
        assert!(write_if_changed(&path, b"abd").unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"abd");
    }

    /// The whole pipeline on a few steps: files written, consistent with
    /// each other, and the samples' expectations are the engine's outputs.
    #[test]
    fn generate_writes_consistent_assets() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = AssetConfig {
            steps: 50,
            samples: 10,
            out_dir: dir.path().to_path_buf(),
            ..AssetConfig::default()
        };
        let a = generate(&cfg).unwrap();
        assert_eq!(a.written.len(), 5);
        let (f, q, s) = load(dir.path()).unwrap();
        assert_eq!((&f, &q), (&a.model_f32, &a.model_int8));
        assert_eq!(s, a.samples);
        assert_eq!((s.len(), s.features, s.classes), (10, 64, 10));
        let (q, sq, sf) = (q.unwrap(), s.int8.clone().unwrap(), s.f32.clone().unwrap());
        assert_eq!(engine_i8(&q, &sq.inputs).unwrap(), sq.expected);
        assert_eq!(sq.inputs, quantize_inputs(&q, &sf.inputs).unwrap());
        assert_eq!(a.summary.int8.unwrap().digest, digest_i8(&sq.expected));
        // Deterministic: a second run rewrites nothing.
        assert!(generate(&cfg).unwrap().written.is_empty());

        // The user's path: the int8 file alone, embedded from the data set.
        let own = tempfile::tempdir().unwrap();
        let model = dir.path().join(MODEL_INT8);
        let data = AssetConfig::default().data;
        let e = embed(std::slice::from_ref(&model), &data, 10, own.path()).unwrap();
        assert_eq!(e.samples.int8, s.int8, "same samples, same outputs");
        assert!(e.samples.f32.is_none() && e.summary.training.is_none());
        let (f, q, _) = load(own.path()).unwrap();
        assert!(f.is_none() && q.is_some());
        // Two files of one kind, a file that is not a model, a data set of
        // another shape: clear errors, nothing written.
        let bad = tempfile::tempdir().unwrap();
        let two = embed(&[model.clone(), model.clone()], &data, 10, bad.path());
        assert!(format!("{:#}", two.unwrap_err()).contains("at most one"));
        let junk = bad.path().join("junk.ncm");
        std::fs::write(&junk, b"not a model").unwrap();
        let e = embed(&[junk], &data, 10, bad.path()).unwrap_err();
        assert!(format!("{e:#}").contains("not a valid model file"), "{e:#}");
        let csv = bad.path().join("wide.csv");
        std::fs::write(&csv, "0,1,2,0\n1,2,3,1\n2,3,4,0\n3,4,5,1\n4,5,6,0\n").unwrap();
        let wide = DataArgs {
            data: csv.display().to_string(),
            ..data
        };
        let e = embed(&[model], &wide, 10, bad.path()).unwrap_err();
        assert!(format!("{e:#}").contains("8x8x1 inputs"), "{e:#}");
        assert!(!bad.path().join(SAMPLES).exists());
    }
}
