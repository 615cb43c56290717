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
//! # `samples.bin`, version 1
//!
//! Little-endian throughout; `N` samples of `F = h·w·c` input values, `C`
//! classes:
//!
//! | offset | type | field |
//! |---|---|---|
//! | 0 | `[u8; 4]` | magic `"NCSP"` |
//! | 4 | u16 | version, `1` |
//! | 6 | u16 | reserved, 0 |
//! | 8 | u32 | `N` |
//! | 12 | u32 | `F` |
//! | 16 | u32 | `C` |
//! | 20 | u32 | the `crc32` header field of `model-f32.ncm` these outputs belong to |
//! | 24 | u32 | the `crc32` header field of `model-int8.ncm` |
//! | 28 | u32 | CRC-32 (zlib's) of everything from offset 32 to the end |
//! | 32 | f32 × N·F | inputs for the f32 model, NHWC per sample |
//! | | f32 × N·C | the host engine's f32 logits |
//! | | i8 × N·F | inputs for the int8 model: `clamp(round(x / s) + z, -128, 127)` with the int8 file's input scale `s` and zero point `z` |
//! | | i8 × N·C | the host engine's int8 logits |
//! | | u16 × N | labels |
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
use normcore::model::{crc32, Kind};
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
/// Magic of `samples.bin`.
pub const SAMPLES_MAGIC: [u8; 4] = *b"NCSP";
/// Version of `samples.bin`.
pub const SAMPLES_VERSION: u16 = 1;
/// Bytes of the `samples.bin` header.
pub const SAMPLES_HEADER: usize = 32;

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
fn parse_samples(s: &str) -> Result<usize, String> {
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

/// The embedded samples and what the host engine computes for them.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Input values per sample (`h·w·c`).
    pub features: usize,
    /// Classes (logits per sample).
    pub classes: usize,
    /// Labels, `[N]`.
    pub labels: Vec<u16>,
    /// f32 inputs, `[N, F]`.
    pub input_f32: Vec<f32>,
    /// int8 inputs, `[N, F]`, quantized with the int8 file's input parameters.
    pub input_i8: Vec<i8>,
    /// The host engine's f32 logits, `[N, C]`.
    pub expected_f32: Vec<f32>,
    /// The host engine's int8 logits, `[N, C]`.
    pub expected_i8: Vec<i8>,
    /// The `crc32` header field of the f32 model file.
    pub f32_model_crc: u32,
    /// The `crc32` header field of the int8 model file.
    pub int8_model_crc: u32,
}

fn take<const N: usize>(b: &[u8], at: &mut usize) -> Result<[u8; N]> {
    let s = b
        .get(*at..*at + N)
        .context("samples file is truncated")?
        .try_into()?;
    *at += N;
    Ok(s)
}

impl Samples {
    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `samples.bin` bytes (module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&SAMPLES_MAGIC);
        out.extend_from_slice(&SAMPLES_VERSION.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        for v in [self.len(), self.features, self.classes] {
            out.extend_from_slice(&(v as u32).to_le_bytes());
        }
        out.extend_from_slice(&self.f32_model_crc.to_le_bytes());
        out.extend_from_slice(&self.int8_model_crc.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        for v in self.input_f32.iter().chain(&self.expected_f32) {
            out.extend_from_slice(&v.to_bits().to_le_bytes());
        }
        out.extend(
            self.input_i8
                .iter()
                .chain(&self.expected_i8)
                .map(|&v| v as u8),
        );
        for l in &self.labels {
            out.extend_from_slice(&l.to_le_bytes());
        }
        let crc = crc32(&out[SAMPLES_HEADER..]);
        out[28..32].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Read `samples.bin`, checking magic, version, sizes and CRC.
    pub fn from_bytes(b: &[u8]) -> Result<Samples> {
        let at = &mut 0;
        ensure!(
            take::<4>(b, at)? == SAMPLES_MAGIC,
            "not a samples file (magic)"
        );
        let version = u16::from_le_bytes(take(b, at)?);
        ensure!(
            version == SAMPLES_VERSION,
            "samples file version {version}, expected {SAMPLES_VERSION}"
        );
        let _reserved = take::<2>(b, at)?;
        let u32_at = |at: &mut usize| -> Result<u32> { Ok(u32::from_le_bytes(take(b, at)?)) };
        let (n, f, c) = (
            u32_at(at)? as usize,
            u32_at(at)? as usize,
            u32_at(at)? as usize,
        );
        let (f32_model_crc, int8_model_crc, crc) = (u32_at(at)?, u32_at(at)?, u32_at(at)?);
        let expected_len = SAMPLES_HEADER + n * (5 * f + 5 * c + 2);
        ensure!(
            b.len() == expected_len,
            "samples file has {} bytes; {n} samples of {f} values and {c} classes need {expected_len}",
            b.len()
        );
        ensure!(
            crc32(&b[SAMPLES_HEADER..]) == crc,
            "samples file CRC mismatch"
        );
        let mut f32s = |len: usize| -> Result<Vec<f32>> {
            (0..len)
                .map(|_| Ok(f32::from_bits(u32::from_le_bytes(take(b, at)?))))
                .collect()
        };
        let input_f32 = f32s(n * f)?;
        let expected_f32 = f32s(n * c)?;
        let mut i8s = |len: usize| -> Result<Vec<i8>> {
            (0..len).map(|_| Ok(take::<1>(b, at)?[0] as i8)).collect()
        };
        let input_i8 = i8s(n * f)?;
        let expected_i8 = i8s(n * c)?;
        let labels = (0..n)
            .map(|_| Ok(u16::from_le_bytes(take(b, at)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Samples {
            features: f,
            classes: c,
            labels,
            input_f32,
            input_i8,
            expected_f32,
            expected_i8,
            f32_model_crc,
            int8_model_crc,
        })
    }

    /// Correctly classified samples by `outputs` (`[N, C]`, first maximum wins).
    pub fn correct<T: PartialOrd>(&self, outputs: &[T]) -> usize {
        outputs
            .chunks_exact(self.classes)
            .zip(&self.labels)
            .filter(|(row, &label)| argmax(row) == usize::from(label))
            .count()
    }
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

/// Host accuracies and sizes, as `summary.txt` records them.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Network name.
    pub network: String,
    /// Data set, as selected (`digits`, `mnist`, a CSV path).
    pub data: String,
    /// Training steps.
    pub steps: u64,
    /// Training set size.
    pub train_samples: usize,
    /// Test set size.
    pub test_samples: usize,
    /// Samples embedded in the firmware.
    pub embedded: usize,
    /// Float network (BN in eval mode, unfolded), on the whole test set.
    pub float_test_accuracy: f64,
    /// The f32 file through the host engine, whole test set.
    pub f32_test_accuracy: f64,
    /// The int8 file through the host engine, whole test set.
    pub int8_test_accuracy: f64,
    /// Float network on the embedded samples: correct count.
    pub float_correct: usize,
    /// f32 file on the embedded samples (host engine): correct count.
    pub f32_correct: usize,
    /// int8 file on the embedded samples (host engine): correct count.
    pub int8_correct: usize,
    /// CRC-32 of the host engine's f32 logits on the embedded samples.
    pub f32_digest: u32,
    /// CRC-32 of the host engine's int8 logits on the embedded samples.
    pub int8_digest: u32,
    /// Bytes of the f32 file.
    pub f32_model_bytes: usize,
    /// Bytes of the int8 file.
    pub int8_model_bytes: usize,
    /// Arena bytes of the f32 model.
    pub f32_arena_bytes: usize,
    /// Arena bytes of the int8 model.
    pub int8_arena_bytes: usize,
    /// Multiply-accumulates per sample.
    pub macs: usize,
    /// Seconds spent training.
    pub train_seconds: f64,
}

impl Summary {
    /// `key=value` lines (what `cargo xtask demo` reads).
    pub fn to_text(&self) -> String {
        let mut s = String::from("# written by `normcore assets`; read by `cargo xtask demo`\n");
        let mut kv = |k: &str, v: String| {
            let _ = writeln!(s, "{k}={v}");
        };
        kv("network", self.network.clone());
        kv("data", self.data.clone());
        kv("steps", self.steps.to_string());
        kv("train_samples", self.train_samples.to_string());
        kv("test_samples", self.test_samples.to_string());
        kv("embedded_samples", self.embedded.to_string());
        kv("float_test_accuracy", self.float_test_accuracy.to_string());
        kv("f32_test_accuracy", self.f32_test_accuracy.to_string());
        kv("int8_test_accuracy", self.int8_test_accuracy.to_string());
        kv("float_correct", self.float_correct.to_string());
        kv("f32_correct", self.f32_correct.to_string());
        kv("int8_correct", self.int8_correct.to_string());
        kv("f32_digest", format!("{:#010x}", self.f32_digest));
        kv("int8_digest", format!("{:#010x}", self.int8_digest));
        kv("f32_model_bytes", self.f32_model_bytes.to_string());
        kv("int8_model_bytes", self.int8_model_bytes.to_string());
        kv("f32_arena_bytes", self.f32_arena_bytes.to_string());
        kv("int8_arena_bytes", self.int8_arena_bytes.to_string());
        kv("macs", self.macs.to_string());
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

/// Everything [`generate`] produced.
#[derive(Debug)]
pub struct Assets {
    /// The f32 model file.
    pub model_f32: Vec<u8>,
    /// The int8 model file.
    pub model_int8: Vec<u8>,
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

/// Train, fold, export, run the host engine and write the assets (module
/// documentation). Deterministic for a given configuration and machine.
pub fn generate(cfg: &AssetConfig) -> Result<Assets> {
    ensure!(cfg.samples >= 1, "embed at least one sample (--samples)");
    let data = cfg.data.load()?;
    let spec = spec::preset(&cfg.preset)?;
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

    // Whole test set through the host engine, from the files' bytes.
    let test = &data.test;
    let test_q = quantize_inputs(&model_int8, &test.images)?;
    let labels_all = Samples {
        features: test.sample_len(),
        classes: folded.classes,
        labels: test.labels.clone(),
        input_f32: Vec::new(),
        input_i8: Vec::new(),
        expected_f32: Vec::new(),
        expected_i8: Vec::new(),
        f32_model_crc: 0,
        int8_model_crc: 0,
    };
    let all_f32 = engine_f32(&model_f32, &test.images)?;
    let all_i8 = engine_i8(&model_int8, &test_q)?;
    let n_test = test.len().max(1) as f64;
    let f32_test_accuracy = labels_all.correct(&all_f32) as f64 / n_test;
    let int8_test_accuracy = labels_all.correct(&all_i8) as f64 / n_test;

    // The embedded samples.
    let idx = pick(test.len(), cfg.samples);
    let chosen = test.select(&idx, format!("{}-embedded", test.name))?;
    let per = test.sample_len();
    let c = folded.classes;
    let header_crc = |b: &[u8]| u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    let samples = Samples {
        features: per,
        classes: c,
        labels: chosen.labels.clone(),
        input_f32: chosen.images.clone(),
        input_i8: idx
            .iter()
            .flat_map(|&i| test_q[i * per..(i + 1) * per].iter().copied())
            .collect(),
        expected_f32: idx
            .iter()
            .flat_map(|&i| all_f32[i * c..(i + 1) * c].iter().copied())
            .collect(),
        expected_i8: idx
            .iter()
            .flat_map(|&i| all_i8[i * c..(i + 1) * c].iter().copied())
            .collect(),
        f32_model_crc: header_crc(&model_f32),
        int8_model_crc: header_crc(&model_int8),
    };
    // Per-sample runs must give what the batch over the test set gave.
    ensure!(
        engine_f32(&model_f32, &samples.input_f32)? == samples.expected_f32
            && engine_i8(&model_int8, &samples.input_i8)? == samples.expected_i8,
        "the host engine is not repeatable"
    );
    let float_correct =
        (t.evaluate(&chosen, None)?.accuracy * chosen.len() as f64).round() as usize;

    let (fm, qm8) = (ModelBytes::new(&model_f32), ModelBytes::new(&model_int8));
    let (fm, qm8) = (fm.parse()?, qm8.parse()?);
    let summary = Summary {
        network: t.net.spec.name.clone(),
        data: cfg.data.data.clone(),
        steps: t.step,
        train_samples: data.train.len(),
        test_samples: test.len(),
        embedded: samples.len(),
        float_test_accuracy: float.accuracy,
        f32_test_accuracy,
        int8_test_accuracy,
        float_correct,
        f32_correct: samples.correct(&samples.expected_f32),
        int8_correct: samples.correct(&samples.expected_i8),
        f32_digest: digest_f32(&samples.expected_f32),
        int8_digest: digest_i8(&samples.expected_i8),
        f32_model_bytes: model_f32.len(),
        int8_model_bytes: model_int8.len(),
        f32_arena_bytes: fm.arena_bytes(),
        int8_arena_bytes: qm8.arena_bytes(),
        macs: fm
            .layers()
            .map(|l| l.map(|l| l.op.macs(l.output)))
            .sum::<Result<usize, _>>()?,
        train_seconds,
    };

    let dir = &cfg.out_dir;
    let mut written = Vec::new();
    for (name, bytes) in [
        (MODEL_F32, model_f32.clone()),
        (MODEL_INT8, model_int8.clone()),
        (SAMPLES, samples.to_bytes()),
        (SUMMARY, summary.to_text().into_bytes()),
        (CHECKPOINT, checkpoint::to_bytes(&mut t)),
    ] {
        let path = dir.join(name);
        if write_if_changed(&path, &bytes)? {
            written.push(path);
        }
    }
    Ok(Assets {
        model_f32,
        model_int8,
        samples,
        summary,
        written,
    })
}

/// The assets in `dir` as the firmware's build reads them: both model files
/// and the samples, checked against each other.
pub fn load(dir: &Path) -> Result<(Vec<u8>, Vec<u8>, Samples)> {
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read(&p).with_context(|| {
            format!(
                "{}: run `cargo xtask assets` to generate the firmware assets",
                p.display()
            )
        })
    };
    let (f, q) = (read(MODEL_F32)?, read(MODEL_INT8)?);
    let s = Samples::from_bytes(&read(SAMPLES)?).context(SAMPLES)?;
    let header_crc = |b: &[u8]| {
        b.get(12..16)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
    };
    ensure!(
        header_crc(&f) == Some(s.f32_model_crc) && header_crc(&q) == Some(s.int8_model_crc),
        "{SAMPLES} was generated for other model files: run `cargo xtask assets` again"
    );
    Ok((f, q, s))
}

/// Run `normcore assets`: generate, then print what was made.
pub fn run(a: AssetArgs) -> Result<()> {
    let cfg = a.config();
    eprintln!(
        "assets: training {} on {} for {} steps (seed {})",
        cfg.preset, cfg.data.data, cfg.steps, cfg.seed
    );
    let out = generate(&cfg)?;
    let s = &out.summary;
    println!(
        "network `{}` trained {} steps in {:.1} s on `{}` ({} train / {} test samples)",
        s.network, s.steps, s.train_seconds, s.data, s.train_samples, s.test_samples
    );
    println!();
    println!(
        "| model                      | test accuracy ({:>5}) | embedded ({:>4}) |",
        s.test_samples, s.embedded
    );
    println!("|----------------------------|-----------------------|-----------------|");
    let pct = |c: usize| 100.0 * c as f64 / s.embedded.max(1) as f64;
    for (name, all, correct) in [
        (
            "float, BN (unfolded)",
            s.float_test_accuracy,
            s.float_correct,
        ),
        (
            "folded f32 (host engine)",
            s.f32_test_accuracy,
            s.f32_correct,
        ),
        ("int8 (host engine)", s.int8_test_accuracy, s.int8_correct),
    ] {
        println!(
            "| {name:<26} | {:>20.2}% | {:>14.2}% |",
            100.0 * all,
            pct(correct)
        );
    }
    println!();
    println!(
        "{}: {} bytes (arena {} B); {}: {} bytes (arena {} B); {} samples; digests f32 {:#010x}, int8 {:#010x}",
        MODEL_F32,
        s.f32_model_bytes,
        s.f32_arena_bytes,
        MODEL_INT8,
        s.int8_model_bytes,
        s.int8_arena_bytes,
        s.embedded,
        s.f32_digest,
        s.int8_digest
    );
    if out.written.is_empty() {
        println!("{}: unchanged", cfg.out_dir.display());
    } else {
        for p in &out.written {
            println!("wrote {}", p.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Samples {
        Samples {
            features: 3,
            classes: 2,
            labels: vec![1, 0],
            input_f32: vec![0.0, 0.5, -1.25, 3.0, f32::MIN_POSITIVE, -0.0],
            input_i8: vec![-128, 0, 127, 5, -5, 1],
            expected_f32: vec![1.5, -2.0, 0.25, 0.125],
            expected_i8: vec![-3, 4, 7, -8],
            f32_model_crc: 0xDEAD_BEEF,
            int8_model_crc: 0x0123_4567,
        }
    }

    #[test]
    fn samples_file_round_trips_bit_for_bit() {
        let s = samples();
        let bytes = s.to_bytes();
        assert_eq!(bytes.len(), SAMPLES_HEADER + 2 * (5 * 3 + 5 * 2 + 2));
        assert_eq!(&bytes[..4], b"NCSP");
        let back = Samples::from_bytes(&bytes).unwrap();
        assert_eq!(back, s);
        // -0.0 == 0.0 for PartialEq: check the bits too.
        assert_eq!(back.input_f32[5].to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn samples_file_rejects_damage() {
        let bytes = samples().to_bytes();
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(format!("{:#}", Samples::from_bytes(&flipped).unwrap_err()).contains("CRC"));
        assert!(Samples::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(Samples::from_bytes(&magic).is_err());
        let mut version = bytes;
        version[4] = 2;
        assert!(Samples::from_bytes(&version).is_err());
    }

    #[test]
    fn correct_counts_first_maximum() {
        let s = samples();
        // Sample 0 (label 1): [1.5, -2.0] -> 0, wrong; sample 1 (label 0):
        // [0.25, 0.125] -> 0, right.
        assert_eq!(s.correct(&s.expected_f32), 1);
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
        assert_eq!((f, q), (a.model_f32.clone(), a.model_int8.clone()));
        assert_eq!(s, a.samples);
        assert_eq!((s.len(), s.features, s.classes), (10, 64, 10));
        assert_eq!(
            engine_i8(&a.model_int8, &s.input_i8).unwrap(),
            s.expected_i8
        );
        assert_eq!(
            s.input_i8,
            quantize_inputs(&a.model_int8, &s.input_f32).unwrap()
        );
        assert_eq!(a.summary.int8_digest, digest_i8(&s.expected_i8));
        // Deterministic: a second run rewrites nothing.
        assert!(generate(&cfg).unwrap().written.is_empty());
    }
}
