//! The exporter: from a trained Batch-Normalized network to a `.ncm` model
//! file for a microcontroller (`docs/FORMAT.md`), in f32 or int8.
//!
//! ```text
//! Network (eval mode) --fold--> FoldedModel --write_f32--> .ncm (f32)
//!                                   |
//!                      calibrate on N training samples
//!                                   v
//!                              QuantModel ----write_int8--> .ncm (int8)
//! ```
//!
//! - [`fold`]: BN folded into the layer before it (Alg. 2), activations
//!   fused, dropout and flatten dropped.
//! - [`eval`]: the folded model evaluated on core's f32 layers (the fold's
//!   check, and the calibration's source of ranges).
//! - [`quant`]: calibration and int8 quantization (scales, zero points,
//!   Q31 multipliers, activation tables; the input choice is documented there).
//! - [`ncm`]: the models in the file's stored form ([`ncm::StoredModel`]),
//!   written by core's writer (`normcore::model::write`), also re-writing
//!   a file parsed by core ([`ncm::rewrite`]).
//! - [`device`]: the only reader: core's `Model::parse` on an aligned copy
//!   and core's `Engine`, one sample at a time, as a device runs the file.
//! - `reference` (tests only): an independent, naive integer reading of
//!   FORMAT.md on the quantized model, which the engine running the written
//!   bytes must match bit for bit.
//!
//! `normcore export` writes both forms in memory and prints the test accuracy
//! of every stage (unfolded float on the trainer, then the folded f32 and the
//! int8 files each parsed and run by the engine) so that each
//! transformation's cost is visible and measured on what the device runs.

pub mod device;
pub mod eval;
pub mod fold;
pub mod ncm;
pub mod quant;

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

use crate::checkpoint;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

pub use device::{device_run, Device, Logits, ModelBytes};
pub use fold::fold;
pub use ncm::{rewrite, write_f32, write_int8};
pub use quant::{calibrate, input_params, quantize};

/// Why a network cannot be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A layer the format cannot express.
    #[error("layer {layer} ({kind}) cannot be exported: {reason}")]
    Unsupported {
        /// 1-based index in the network description.
        layer: usize,
        /// Layer type.
        kind: &'static str,
        /// What is wrong and what to do instead.
        reason: String,
    },
    /// A core kernel rejected the folded model (a bug if it happens).
    #[error("folded layer {layer}: {error}")]
    Kernel {
        /// 1-based index in the folded model.
        layer: usize,
        /// The kernel's error (in the message, not a `source`: an error
        /// chain would print it twice).
        error: normcore::Error,
    },
    /// A batch of the wrong size.
    #[error("{len} input values for {n} samples of {expected}")]
    Batch {
        /// Samples.
        n: usize,
        /// Values given.
        len: usize,
        /// Values per sample expected.
        expected: usize,
    },
    /// The model does not fit the file format's fields, or a file is invalid.
    #[error("{0}")]
    Format(String),
    /// Quantization is impossible (non-finite ranges, multipliers out of range).
    #[error("int8 quantization: {0}")]
    Quant(String),
    /// Reading samples failed.
    #[error("data: {0}")]
    Data(String),
    /// Core's parser or engine rejected a model file. (The core error is
    /// in the message, not a `source`, here and in `Write`: an error chain
    /// would print it twice.)
    #[error("model file: {0}")]
    Model(normcore::model::ModelError),
    /// Core's writer refused the model (a field too wide for the format,
    /// too many layers, or a rule of FORMAT.md the model would break).
    #[error("model file: {0}")]
    Write(normcore::model::WriteError),
}

impl From<normcore::model::ModelError> for ExportError {
    fn from(e: normcore::model::ModelError) -> Self {
        ExportError::Model(e)
    }
}

impl From<normcore::model::WriteError> for ExportError {
    fn from(e: normcore::model::WriteError) -> Self {
        ExportError::Write(e)
    }
}

/// Number format of the exported file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Quantize {
    /// f32 weights and activations: exactly the folded network.
    F32,
    /// int8 weights and activations, i32 accumulators.
    Int8,
}

fn parse_calibration(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!(
            "`{s}` calibration samples: give a whole number of at least 1"
        )),
    }
}

fn parse_block_rows(s: &str) -> Result<usize, String> {
    match s {
        "4" => Ok(4),
        "8" => Ok(8),
        _ => Err(format!(
            "`{s}` rows per weight block: the format allows 4 or 8"
        )),
    }
}

/// The kind of file `normcore export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// A `.ncm` model file for the device (BN folded).
    Ncm,
    /// An ONNX graph (BN unfolded), for Netron, other runtimes, or
    /// fine-tuning elsewhere; `normcore import` reads it back.
    Onnx,
}

/// `normcore export --format onnx`: write the network as ONNX, after
/// checking that importing the bytes gives back the same parameters.
fn write_onnx(a: &ExportArgs, t: &crate::train::Trainer) -> Result<()> {
    let pixel_scale = t.pixel_scale;
    let bytes = crate::onnx::to_onnx(&t.net, pixel_scale);
    let back = crate::onnx::import_bytes(&bytes, &t.net.spec.name).map_err(|e| {
        ExportError::Format(format!("self-check: the ONNX written does not import: {e}"))
    })?;
    let same = back.net.layers.len() == t.net.layers.len()
        && back.net.layers.iter().zip(&t.net.layers).all(|(b, l)| {
            b.params == l.params
                && b.running_mean == l.running_mean
                && b.running_var == l.running_var
        });
    if !same || back.net.spec.input != t.net.spec.input {
        return Err(ExportError::Format(
            "self-check: the ONNX written imports with different parameters".into(),
        )
        .into());
    }
    checkpoint::write_atomic(&a.out, &bytes)?;
    println!(
        "network `{}` from {}: {} layers, {} parameters -> {} ({} bytes, ONNX opset 17, BN unfolded)",
        t.net.spec.name,
        a.model.display(),
        t.net.layers.len(),
        t.net.param_count(),
        a.out.display(),
        bytes.len()
    );
    Ok(())
}

/// `normcore export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// File kind: ncm (a model file for the device) or onnx (the network,
    /// BN unfolded, as an ONNX graph; --quantize and the data options do
    /// not apply).
    #[arg(long, value_enum, default_value_t = Format::Ncm)]
    format: Format,
    /// A checkpoint written by `normcore train`.
    #[arg(long)]
    model: PathBuf,
    /// The model file to write (`.ncm`).
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Number format: f32 (the folded network) or int8 (quantized).
    #[arg(long, value_enum, default_value_t = Quantize::F32)]
    quantize: Quantize,
    /// Training samples the int8 ranges are calibrated on (evenly spaced).
    #[arg(long, default_value = "1000", value_parser = parse_calibration)]
    calibration: usize,
    /// Output rows per weight block of dense/conv layers: 4 or 8.
    #[arg(long, default_value = "4", value_parser = parse_block_rows)]
    block_rows: usize,
    /// int8 dense/conv weight storage: auto (per layer, pairs where they
    /// are faster: blocks of 4 rows and runs of at least 16 inputs, a run
    /// being all inputs of a dense layer, the window KH·KW·Cin of a conv
    /// with several kernel rows while it is at most 512, else KW·Cin), i8
    /// (one byte per weight) or pairs (two weights per 32-bit word, with
    /// --block-rows 4: twice the flash, about half the instructions per MAC
    /// on Cortex-M4 on long runs). All give the same outputs bit for bit.
    #[arg(long, value_enum, default_value_t = crate::cli::WeightsArg::Auto)]
    weights: crate::cli::WeightsArg,
    #[command(flatten)]
    data: crate::cli::DataArgs,
    /// Worker threads for the float evaluation.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also print one machine-readable `summary:` line (accuracies in
    /// percent, file and arena bytes of both forms), for scripts such as
    /// `cargo xtask quant-check`.
    #[arg(long)]
    summary: bool,
}

/// A written file as the device runs it on the test set.
#[derive(Debug)]
pub struct FileRun {
    /// Test accuracy of the engine's outputs.
    pub accuracy: f64,
    /// The engine's logits, one per test sample.
    pub outputs: Vec<Logits>,
    /// File size (flash).
    pub file_bytes: usize,
    /// The arena the file states (RAM).
    pub arena_bytes: usize,
    /// Bytes of the layers' tensors (weights, biases, requantization, tables).
    pub weight_bytes: usize,
    /// Bytes of the BN statistics.
    pub bn_bytes: usize,
}

/// Parse `bytes` with core, check the golden round trip (re-writing the
/// parse gives the same bytes), and run every test sample through the engine.
pub fn run_file(bytes: &[u8], test: &crate::data::Dataset) -> Result<FileRun, ExportError> {
    let buf = ModelBytes::new(bytes);
    let model = buf.parse()?;
    if rewrite(&model)? != bytes {
        return Err(ExportError::Format(
            "the file re-written from core's parse differs from the written bytes".into(),
        ));
    }
    let outputs = device::run_all(&model, test.images())?;
    let layers: Vec<_> = model.layers().collect::<Result<_, _>>()?;
    let bns: Vec<_> = model.bn_records().collect::<Result<_, _>>()?;
    let weight_bytes = layers
        .iter()
        .map(|l| device::tensor_bytes(&model, &l.tensor_ids))
        .sum();
    let bn_bytes = bns
        .iter()
        .map(|b| device::tensor_bytes(&model, &b.tensor_ids))
        .sum();
    Ok(FileRun {
        accuracy: device::accuracy(&outputs, &test.labels),
        outputs,
        file_bytes: bytes.len(),
        arena_bytes: model.arena_bytes(),
        weight_bytes,
        bn_bytes,
    })
}

/// Run `normcore export`: fold, calibrate, quantize, write both forms in
/// memory, run each through core's parser and engine on the test set,
/// report every stage's accuracy, write the chosen file atomically.
pub fn run(a: ExportArgs) -> Result<()> {
    let mut inputs = a.data.input_files();
    inputs.push(&a.model);
    crate::cli::check_output(&a.out, &inputs)?;
    let mut t = checkpoint::load(&a.model, a.threads)?;
    if a.format == Format::Onnx {
        return write_onnx(&a, &t);
    }
    let mut data = a.data.load()?;
    data.use_pixel_scale(t.pixel_scale);
    crate::train::check_data(&t.net, &data.train)?;
    crate::train::check_data(&t.net, &data.test)?;
    let float = t.evaluate(&data.test, None)?;
    let folded = fold(&t.net)?;
    let f32_bytes = write_f32(&folded, a.block_rows, data.train.pixel_scale)?;
    let check = "self-check of the written file";
    let f32_run = run_file(&f32_bytes, &data.test).context(check)?;
    // The int8 form is always computed for the comparison table, but its
    // limits (the i32 accumulator's) only refuse an int8 export: an f32
    // export reports the int8 form as not possible and goes on.
    let int8 = (|| -> Result<_> {
        let cal = calibrate(&folded, &data.train, a.calibration)?;
        let (input_q, choice) = input_params(&data.train)?;
        let (qm, notes) = quantize(&folded, &cal, input_q, data.train.pixel_scale)?;
        let bytes = ncm::write_int8_form(&qm, a.block_rows, a.weights.into())?;
        let run = run_file(&bytes, &data.test).context(check)?;
        Ok(Int8Form {
            samples: cal.samples,
            input_q,
            choice,
            notes,
            bytes,
            run,
        })
    })();
    let int8 = match (int8, a.quantize) {
        (Ok(q), _) => Ok(q),
        (Err(e), Quantize::Int8) => {
            return Err(e.context(format!(
                "{}: no int8 form (export it as f32: leave out --quantize int8)",
                a.model.display()
            )))
        }
        (Err(e), Quantize::F32) => Err(e),
    };
    // The f32 file on the device's kernels against the host's batch
    // evaluator of the folded model: equal up to summation order.
    let host = folded.forward(data.test.images(), data.test.len())?;
    let worst = f32_run
        .outputs
        .iter()
        .flat_map(|o| o.real())
        .zip(&host)
        .map(|(d, h)| (d - h).abs() / h.abs().max(1.0))
        .fold(0.0f32, f32::max);
    let (bytes, written) = match (a.quantize, &int8) {
        (Quantize::Int8, Ok(q)) => (&q.bytes, &q.run),
        _ => (&f32_bytes, &f32_run),
    };
    checkpoint::write_atomic(&a.out, bytes)?;

    println!(
        "network `{}` from {} ({} steps); data `{}`: {} train / {} test samples",
        t.net.spec.name,
        a.model.display(),
        t.step,
        data.train.name,
        data.train.len(),
        data.test.len()
    );
    println!();
    println!("| model                          | test accuracy | file bytes | arena bytes |");
    println!("|--------------------------------|---------------|------------|-------------|");
    let row = |name: &str, acc: f64, file: Option<&FileRun>, written: bool| {
        let (fb, ab) = file.map_or(("-".to_owned(), "-".to_owned()), |f| {
            (f.file_bytes.to_string(), f.arena_bytes.to_string())
        });
        println!(
            "| {:<30} | {:>12.2}% | {fb:>10} | {ab:>11} |{}",
            name,
            100.0 * acc,
            if written { "  <- written" } else { "" }
        );
    };
    row("float, BN (unfolded, eval)", float.accuracy, None, false);
    row(
        "folded f32",
        f32_run.accuracy,
        Some(&f32_run),
        a.quantize == Quantize::F32,
    );
    match &int8 {
        Ok(q) => row(
            &format!("int8 (calibrated on {})", q.samples),
            q.run.accuracy,
            Some(&q.run),
            a.quantize == Quantize::Int8,
        ),
        Err(_) => println!(
            "| {:<30} | {:>13} | {:>10} | {:>11} |",
            "int8", "not possible", "-", "-"
        ),
    }
    println!();
    println!(
        "folded f32{}: the file{} parsed and run by core's engine, one sample at a time; \
         the f32 file matches the host's folded evaluator to {worst:.1e} (relative)",
        if int8.is_ok() { " and int8" } else { "" },
        if int8.is_ok() { "s" } else { "" },
    );
    match &int8 {
        Ok(q) => {
            let input_q = q.input_q;
            match q.choice {
                quant::InputChoice::RawLevels { raw_min, raw_max } => println!(
                    "int8 input: scale {} (the pixel scale), zero point {}: raw values {raw_min}..={raw_max} are levels {}..={} exactly",
                    input_q.scale,
                    input_q.zero_point,
                    raw_min + i64::from(input_q.zero_point),
                    raw_max + i64::from(input_q.zero_point),
                ),
                quant::InputChoice::Range(r) => println!(
                    "int8 input: scale {}, zero point {} (from the training range [{}, {}])",
                    input_q.scale, input_q.zero_point, r.min, r.max
                ),
            }
            for n in &q.notes {
                println!("note: {n}");
            }
        }
        Err(e) => println!("note: no int8 form of this network (f32 is unaffected): {e:#}"),
    }
    println!(
        "wrote {}: {}, {} bytes (weights {} bytes, BN statistics {} bytes), {} layers, arena {} bytes",
        a.out.display(),
        match a.quantize {
            Quantize::F32 => "f32",
            Quantize::Int8 => "int8",
        },
        bytes.len(),
        written.weight_bytes,
        written.bn_bytes,
        folded.layers.len(),
        written.arena_bytes
    );
    if a.summary {
        println!(
            "summary: network={} float={:.4} f32={:.4} int8={} f32_bytes={} f32_arena={} int8_bytes={} int8_arena={}",
            t.net.spec.name,
            100.0 * float.accuracy,
            100.0 * f32_run.accuracy,
            int8.as_ref()
                .map_or("-".into(), |q| format!("{:.4}", 100.0 * q.run.accuracy)),
            f32_run.file_bytes,
            f32_run.arena_bytes,
            int8.as_ref()
                .map_or("-".into(), |q| q.run.file_bytes.to_string()),
            int8.as_ref()
                .map_or("-".into(), |q| q.run.arena_bytes.to_string()),
        );
    }
    Ok(())
}

/// The int8 form `normcore export` computes next to the f32 one.
struct Int8Form {
    /// Training samples calibrated on.
    samples: usize,
    /// The input's quantization.
    input_q: quant::QParams,
    /// How it was chosen.
    choice: quant::InputChoice,
    /// Notes of the quantization.
    notes: Vec<String>,
    /// The file.
    bytes: Vec<u8>,
    /// The file as the device runs it.
    run: FileRun,
}

/// Whether `bytes` look like a model file (they start with `"NCMF"`).
pub fn is_model_file(bytes: &[u8]) -> bool {
    bytes.starts_with(&ncm::MAGIC)
}

fn activation_name(a: Option<normcore::layers::Activation>) -> &'static str {
    use normcore::layers::Activation;
    match a {
        None => "-",
        Some(Activation::Relu) => "relu",
        Some(Activation::Relu6) => "relu6",
        Some(Activation::Sigmoid) => "sigmoid",
        Some(Activation::Tanh) => "tanh",
    }
}

fn shape_str(s: normcore::Shape) -> String {
    format!("{}x{}x{}", s.h, s.w, s.c)
}

/// `normcore inspect FILE.ncm`: per-layer costs and the totals a device
/// needs, read with core's parser (the device's own validation).
pub fn inspect(path: &Path, bytes: &[u8]) -> Result<()> {
    use normcore::model::{plan, Kind, Op, Slot};
    let buf = ModelBytes::new(bytes);
    let model = buf
        .parse()
        .with_context(|| format!("{}: not a valid .ncm file", path.display()))?;
    let h = model.header();
    let quant = match h.kind {
        Kind::Int8 => format!(
            "int8 (input scale {}, zero point {})",
            h.input_scale, h.input_zero_point
        ),
        Kind::F32 => "f32".to_owned(),
    };
    println!(
        "model file {}: {quant}, format v{}, input {}, {} classes, pixel scale {}",
        path.display(),
        ncm::VERSION,
        shape_str(h.input),
        h.classes,
        h.pixel_scale
    );
    println!(
        "{:>3}  {:<15} {:<8} {:>22} {:>9} {:>10} {:>10} {:>17}",
        "#", "op", "act", "input -> output", "params", "MACs", "weight B", "act B in -> out"
    );
    let (mut params, mut macs, mut weights) = (0usize, 0usize, 0usize);
    let layers: Vec<_> = model.layers().collect::<Result<_, _>>()?;
    for (i, l) in layers.iter().enumerate() {
        let m = l.op.macs(l.output);
        // Logical weights plus one bias per output channel (not the padding).
        let p = match l.op {
            Op::Dense(_) | Op::Conv(_) | Op::Depthwise(_) => {
                let (w, _) = model.tensor(usize::from(l.tensor_ids[Slot::Weight as usize]))?;
                w.logical_len() + l.output.c
            }
            _ => 0,
        };
        let wb = device::tensor_bytes(&model, &l.tensor_ids);
        params += p;
        macs += m;
        weights += wb;
        let act_b = |s| plan::sample_bytes(h.kind, s).unwrap_or(0);
        println!(
            "{:>3}  {:<15} {:<8} {:>22} {:>9} {:>10} {:>10} {:>17}",
            i + 1,
            format!("{}{}", l.op.name(), if l.zp_folded { "*" } else { "" }),
            activation_name(l.activation),
            format!("{} -> {}", shape_str(l.input), shape_str(l.output)),
            p,
            m,
            wb,
            format!("{} -> {}", act_b(l.input), act_b(l.output)),
        );
    }
    let bn: usize = model
        .bn_records()
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .map(|b| device::tensor_bytes(&model, &b.tensor_ids))
        .sum();
    println!("total: {params} parameters, {macs} MACs per sample");
    println!(
        "flash: {} bytes (the whole file; weights {weights} bytes, BN statistics {bn} bytes, tables and padding {} bytes)",
        bytes.len(),
        bytes.len() - weights - bn
    );
    println!(
        "RAM:   arena {} bytes (two activation buffers at the widest layer)",
        model.arena_bytes()
    );
    if layers.iter().any(|l| l.zp_folded) {
        println!("*: input zero point folded into the bias (ZP_FOLDED)");
    }
    Ok(())
}
