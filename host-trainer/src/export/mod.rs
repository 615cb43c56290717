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
//! - [`int8`]: the int8 model run by core's integer kernels (the device's
//!   code), and a plain integer-only reading of FORMAT.md that they must
//!   match bit for bit.
//! - [`ncm`]: the file writer, and a reader for `inspect` and the tests;
//!   every written file is also checked by core's `Model::parse`.
//!
//! `normcore export` prints the test accuracy of every stage (unfolded float,
//! folded f32, int8) so that each transformation's cost is visible.

pub mod eval;
pub mod fold;
pub mod int8;
pub mod ncm;
pub mod quant;

#[cfg(test)]
mod tests;

use crate::checkpoint;
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};

pub use fold::fold;
pub use ncm::{write_f32, write_int8, Decoded, NcmFile};
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
    #[error("folded layer {layer}: {source}")]
    Kernel {
        /// 1-based index in the folded model.
        layer: usize,
        /// The kernel's error.
        source: normcore::Error,
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

/// `normcore export`.
#[derive(Args, Debug)]
pub struct ExportArgs {
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
    #[command(flatten)]
    data: crate::cli::DataArgs,
    /// Worker threads for the float evaluation.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Run `normcore export`: fold, calibrate, quantize, report every stage's
/// test accuracy, write the file atomically.
pub fn run(a: ExportArgs) -> Result<()> {
    let mut t = checkpoint::load(&a.model, a.threads)?;
    let data = a.data.load()?;
    crate::train::check_data(&t.net, &data.train)?;
    crate::train::check_data(&t.net, &data.test)?;
    let float = t.evaluate(&data.test, None)?;
    let folded = fold(&t.net)?;
    let folded_acc = folded.accuracy(&data.test)?;
    let cal = calibrate(&folded, &data.train, a.calibration)?;
    let (input_q, choice) = input_params(&data.train)?;
    let (qm, notes) = quantize(&folded, &cal, input_q, data.train.pixel_scale)?;
    // int8 accuracy from core's kernels, checked bit for bit against the
    // plain host reference.
    let xq = qm.quantize_input(&data.test.images);
    let out = qm.forward(&xq, data.test.len(), a.block_rows)?;
    let int8_acc = qm.accuracy_of(&out, &data.test.labels);
    let mismatches = out
        .chunks_exact(qm.classes)
        .zip(
            qm.forward_plain(&xq, data.test.len())?
                .chunks_exact(qm.classes),
        )
        .filter(|(a, b)| a != b)
        .count();

    let bytes = match a.quantize {
        Quantize::F32 => write_f32(&folded, a.block_rows, data.train.pixel_scale)?,
        Quantize::Int8 => write_int8(&qm, a.block_rows)?,
    };
    // Read the file back before writing it: what is written must decode to
    // exactly the model whose accuracy is reported.
    let file = NcmFile::parse(&bytes).context("self-check of the written file")?;
    let same = match file.decode().context("self-check of the written file")? {
        Decoded::F32(mut m) => {
            m.name.clone_from(&folded.name);
            m == folded
        }
        Decoded::Int8(mut m) => {
            m.name.clone_from(&qm.name);
            m == qm
        }
    };
    anyhow::ensure!(
        same,
        "self-check failed: the file does not decode to the exported model"
    );
    ncm::core_check(&bytes).context("self-check of the written file")?;
    checkpoint::write_atomic(&a.out, &bytes)?;

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
    println!("| model                          | test accuracy |");
    println!("|--------------------------------|---------------|");
    let row = |name: &str, acc: f64, written: bool| {
        println!(
            "| {:<30} | {:>12.2}% |{}",
            name,
            100.0 * acc,
            if written { "  <- written" } else { "" }
        );
    };
    row("float, BN (unfolded, eval)", float.accuracy, false);
    row("folded f32", folded_acc, a.quantize == Quantize::F32);
    row(
        &format!("int8 (calibrated on {})", cal.samples),
        int8_acc,
        a.quantize == Quantize::Int8,
    );
    println!();
    match choice {
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
    if a.quantize == Quantize::F32 {
        // The f32 file as a device computes it: core's batch-1 kernels.
        let dev = folded.forward_device(&data.test.images, data.test.len(), a.block_rows)?;
        let host = folded.forward(&data.test.images, data.test.len())?;
        let worst = dev
            .iter()
            .zip(&host)
            .map(|(d, h)| (d - h).abs() / h.abs().max(1.0))
            .fold(0.0f32, f32::max);
        println!(
            "f32 check: core's f32 kernels on the file's weights match the folded evaluator to {worst:.1e} (relative) on {} test samples",
            data.test.len()
        );
    }
    if mismatches == 0 {
        println!(
            "int8 check: core's kernels and the plain host reference agree bit for bit on all {} test samples",
            data.test.len()
        );
    } else {
        println!(
            "WARNING: core's int8 kernels and the plain host reference differ on {mismatches} of {} test samples",
            data.test.len()
        );
    }
    for n in &notes {
        println!("note: {n}");
    }
    let weights: usize = (0..file.layers.len()).map(|i| file.layer_bytes(i)).sum();
    println!(
        "wrote {}: {}, {} bytes (weights {} bytes, BN statistics {} bytes), {} layers, arena {} bytes",
        a.out.display(),
        if file.header.int8 { "int8" } else { "f32" },
        bytes.len(),
        weights,
        file.bn_bytes(),
        file.layers.len(),
        file.header.arena_bytes
    );
    Ok(())
}

/// Whether `bytes` look like a model file (they start with `"NCMF"`).
pub fn is_model_file(bytes: &[u8]) -> bool {
    bytes.starts_with(&ncm::MAGIC)
}

/// `normcore inspect FILE.ncm`: per-layer costs and the totals a device needs.
pub fn inspect(path: &Path, bytes: &[u8]) -> Result<()> {
    let file = NcmFile::parse(bytes).with_context(|| path.display().to_string())?;
    let model = file.decode().with_context(|| path.display().to_string())?;
    let h = &file.header;
    let quant = if h.int8 {
        format!(
            "int8 (input scale {}, zero point {})",
            h.input_q.scale, h.input_q.zero_point
        )
    } else {
        "f32".to_owned()
    };
    println!(
        "model file {}: {quant}, format v{}, input {}, {} classes, pixel scale {}",
        path.display(),
        ncm::VERSION,
        h.input,
        h.classes,
        h.pixel_scale
    );
    // (op, activation, input, output, params) per layer.
    let rows: Vec<(fold::LayerOp, Option<normcore::layers::Activation>, usize)> = match &model {
        Decoded::F32(m) => m
            .layers
            .iter()
            .map(|l| (l.op, l.act, l.weights.len() + l.bias.len()))
            .collect(),
        Decoded::Int8(m) => m
            .layers
            .iter()
            .map(|l| (l.op, l.act, l.weights.len() + l.bias.len()))
            .collect(),
    };
    println!(
        "{:>3}  {:<15} {:<8} {:>22} {:>9} {:>10} {:>10} {:>17}",
        "#", "op", "act", "input -> output", "params", "MACs", "weight B", "act B in -> out"
    );
    let (mut params, mut macs) = (0usize, 0usize);
    for (i, (l, (op, act, p))) in file.layers.iter().zip(rows).enumerate() {
        let m = op.macs(l.output);
        params += p;
        macs += m;
        let act = match act {
            None => "-",
            Some(a) => match a {
                normcore::layers::Activation::Relu => "relu",
                normcore::layers::Activation::Relu6 => "relu6",
                normcore::layers::Activation::Sigmoid => "sigmoid",
                normcore::layers::Activation::Tanh => "tanh",
            },
        };
        let flag = if l.flags & ncm::LAYER_ZP_FOLDED != 0 {
            "*"
        } else {
            ""
        };
        println!(
            "{:>3}  {:<15} {:<8} {:>22} {:>9} {:>10} {:>10} {:>17}",
            i + 1,
            format!("{}{flag}", op.name()),
            act,
            format!("{} -> {}", l.input, l.output),
            p,
            m,
            file.layer_bytes(i),
            format!(
                "{} -> {}",
                ncm::activation_bytes(h.int8, l.input),
                ncm::activation_bytes(h.int8, l.output)
            ),
        );
    }
    let weights: usize = (0..file.layers.len()).map(|i| file.layer_bytes(i)).sum();
    println!("total: {params} parameters, {macs} MACs per sample");
    println!(
        "flash: {} bytes (the whole file; weights {} bytes, BN statistics {} bytes, tables and padding {} bytes)",
        bytes.len(),
        weights,
        file.bn_bytes(),
        bytes.len() - weights - file.bn_bytes()
    );
    println!(
        "RAM:   arena {} bytes (two activation buffers at the widest layer)",
        h.arena_bytes
    );
    if h.int8
        && file
            .layers
            .iter()
            .any(|l| l.flags & ncm::LAYER_ZP_FOLDED != 0)
    {
        println!("*: input zero point folded into the bias (ZP_FOLDED)");
    }
    Ok(())
}
