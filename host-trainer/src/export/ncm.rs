//! Writing `.ncm` files from the exporter's models ([`write_f32`],
//! [`write_int8_form`]) or from a file parsed by core ([`rewrite`]), through
//! core's writer, `normcore::model::write`: the file's layout, codes,
//! alignment, arena and CRC are defined there (and in
//! `normcore::model::layout`), not here.
//!
//! What this module adds is the host's side of the pipeline: the folded or
//! quantized layers put into the stored form of FORMAT.md ([`StoredModel`]:
//! dense and conv weights row-blocked by core's `pack_rows` and, for int8,
//! optionally in pair words by `pack_pairs`; biases padded to whole
//! blocks), the choice of weight form per layer ([`WeightForm`],
//! [`pairs_pay`]), and owned buffers. Core lays the tensors out in its
//! canonical order (each layer's weight, bias, multiplier, shift, table,
//! then the BN statistics), so that the weights a device reads are
//! contiguous; the same model always gives the same bytes, and a file
//! written here re-writes to itself (`rewrite(parse(export(net))) ==
//! export(net)`). There is no reader here: the host reads files only with
//! core's `Model::parse`, the device's own (see [`super::device`]).

use super::fold::{BnParams, FoldedModel, LayerOp};
use super::quant::{QParams, QuantModel};
use super::ExportError;
use crate::spec::Hwc;
use normcore::batchnorm::BnState;
use normcore::kernels::int8::pairs_faster;
use normcore::layers::Activation;
use normcore::model::write::{self, BnDesc, LayerDesc, ModelDesc};
use normcore::model::{Data, Kind, Model, QuantOut};
use normcore::Shape;

pub use normcore::model::{MAGIC, VERSION};

/// Row-blocked layout of a `[rows, cols]` row-major matrix (core's
/// [`normcore::kernels::pack_rows`]): `stored[(b·cols + p)·r + i] =
/// w[(b·r + i)·cols + p]`, rows past `rows` in the last block zero;
/// `ceil(rows/r)·r·cols` elements.
pub fn pack_rows<T: Copy + Default>(
    w: &[T],
    rows: usize,
    cols: usize,
    r: usize,
) -> Result<Vec<T>, ExportError> {
    let len = normcore::kernels::packed_len(rows, cols, r).map_err(|e| fmt_err(e.to_string()))?;
    let mut out = vec![T::default(); len];
    normcore::kernels::pack_rows(w, rows, cols, r, &mut out).map_err(|e| fmt_err(e.to_string()))?;
    Ok(out)
}

/// The inverse of [`pack_rows`]: `[rows, cols]` row-major.
pub fn unpack_rows<T: Copy + Default>(
    stored: &[T],
    rows: usize,
    cols: usize,
    r: usize,
) -> Result<Vec<T>, ExportError> {
    let mut w = vec![T::default(); rows * cols];
    normcore::kernels::unpack_rows(stored, rows, cols, r, &mut w)
        .map_err(|e| fmt_err(e.to_string()))?;
    Ok(w)
}

fn fmt_err(msg: String) -> ExportError {
    ExportError::Format(msg)
}

fn shape(s: Hwc) -> Shape {
    s.batch(1)
}

// ------------------------------------------------------------ stored form

/// A tensor as the file stores it, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    /// f32 values.
    F32(Vec<f32>),
    /// i8 values.
    I8(Vec<i8>),
    /// i32 values.
    I32(Vec<i32>),
    /// int8 weights in pair words (`lo + 2^24·hi`).
    Pairs(Vec<i32>),
}

impl Stored {
    /// Core's borrowed view.
    pub fn data(&self) -> Data<'_> {
        match self {
            Stored::F32(v) => Data::F32(v),
            Stored::I8(v) => Data::I8(v),
            Stored::I32(v) => Data::I32(v),
            Stored::Pairs(v) => Data::I8Pairs(v),
        }
    }
}

/// One layer in stored form: what core's [`LayerDesc`] borrows.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredLayer {
    /// The operation.
    pub op: LayerOp,
    /// Fused activation, or the function of a standalone one.
    pub activation: Option<Activation>,
    /// int8: the input zero point is folded into the bias.
    pub zp_folded: bool,
    /// Input shape of one sample.
    pub input: Hwc,
    /// Output shape of one sample.
    pub output: Hwc,
    /// Rows per weight block (dense and conv), else 0.
    pub block_rows: usize,
    /// Weights, row-blocked for dense and conv.
    pub weights: Option<Stored>,
    /// Bias, padded to whole blocks for dense and conv.
    pub bias: Option<Stored>,
    /// int8 requantization multipliers and shifts.
    pub requant: Option<(Vec<i32>, Vec<i32>)>,
    /// int8 sigmoid/tanh table.
    pub table: Option<[i8; 256]>,
    /// int8 output quantization (zeros in f32 files).
    pub quant: QuantOut,
    /// The BN folded into the layer, for the file's BN table.
    pub bn: Option<BnParams>,
}

impl StoredLayer {
    fn desc(&self) -> LayerDesc<'_> {
        LayerDesc {
            op: self.op,
            activation: self.activation,
            zp_folded: self.zp_folded,
            input: shape(self.input),
            output: shape(self.output),
            weights: self.weights.as_ref().map(Stored::data),
            block_rows: self.block_rows,
            bias: self.bias.as_ref().map(Stored::data),
            requant: self.requant.as_ref().map(|(m, s)| (&m[..], &s[..])),
            table: self.table.as_ref(),
            quant: self.quant,
        }
    }
}

/// A whole model in stored form: the content of one file.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredModel {
    /// f32 or int8.
    pub kind: Kind,
    /// Input shape of one sample.
    pub input: Hwc,
    /// Classes.
    pub classes: usize,
    /// int8 input quantization (zeros in f32 files).
    pub input_q: QParams,
    /// The data set's stored value per raw unit.
    pub pixel_scale: f32,
    /// Layers in execution order.
    pub layers: Vec<StoredLayer>,
}

impl StoredModel {
    /// The file, written by core.
    pub fn write(&self) -> Result<Vec<u8>, ExportError> {
        let layers: Vec<LayerDesc<'_>> = self.layers.iter().map(StoredLayer::desc).collect();
        let bn: Vec<BnDesc<'_>> = self
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                l.bn.as_ref().map(|b| BnDesc {
                    layer: i,
                    state: BnState {
                        gamma: &b.gamma,
                        beta: &b.beta,
                        mean: &b.mean,
                        var: &b.var,
                        eps: b.eps,
                    },
                })
            })
            .collect();
        write_desc(&ModelDesc {
            kind: self.kind,
            input: shape(self.input),
            classes: self.classes,
            input_scale: self.input_q.scale,
            input_zero_point: self.input_q.zero_point,
            pixel_scale: self.pixel_scale,
            layers: &layers,
            bn: &bn,
        })
    }
}

/// Core's writer into an aligned buffer of the size it asks for.
fn write_desc(d: &ModelDesc<'_>) -> Result<Vec<u8>, ExportError> {
    let len = write::required_len(d)?;
    let mut words = vec![0u128; len.div_ceil(16)];
    let n = write::write(d, bytemuck::cast_slice_mut(&mut words))?;
    Ok(bytemuck::cast_slice::<u128, u8>(&words)[..n].to_vec())
}

fn check_block_rows(r: usize) -> Result<usize, ExportError> {
    match r {
        4 | 8 => Ok(r),
        _ => Err(fmt_err(format!("block rows must be 4 or 8, not {r}"))),
    }
}

/// Weights in stored form (row-blocked for dense and conv, by `r` rows)
/// and the bias padded to whole blocks; `wrap` makes the owned tensor.
fn weights_and_bias<W: Copy + Default, B: Copy + Default>(
    op: &LayerOp,
    r: usize,
    w: &[W],
    b: &[B],
) -> Result<(Vec<W>, Vec<B>), ExportError> {
    if !op.is_blocked() {
        return Ok((w.to_vec(), b.to_vec()));
    }
    let rows = op.out_channels();
    let packed = pack_rows(w, rows, w.len() / rows.max(1), r)?;
    let mut bias = b.to_vec();
    bias.resize(rows.div_ceil(r) * r, B::default());
    Ok((packed, bias))
}

/// The f32 file's content of a folded model, `R`-row weight blocks.
pub fn stored_f32(
    m: &FoldedModel,
    block_rows: usize,
    pixel_scale: f32,
) -> Result<StoredModel, ExportError> {
    let r = check_block_rows(block_rows)?;
    let mut layers = Vec::with_capacity(m.layers.len());
    for l in &m.layers {
        let (weights, bias) = if l.op.is_weighted() {
            let (w, b) = weights_and_bias(&l.op, r, &l.weights, &l.bias)?;
            (Some(Stored::F32(w)), Some(Stored::F32(b)))
        } else {
            (None, None)
        };
        layers.push(StoredLayer {
            op: l.op,
            activation: l.act,
            zp_folded: false,
            input: l.input,
            output: l.output,
            block_rows: if l.op.is_blocked() { r } else { 0 },
            weights,
            bias,
            requant: None,
            table: None,
            quant: QuantOut::NONE,
            bn: l.bn.clone(),
        });
    }
    Ok(StoredModel {
        kind: Kind::F32,
        input: m.input,
        classes: m.classes,
        input_q: QParams {
            scale: 0.0,
            zero_point: 0,
        },
        pixel_scale,
        layers,
    })
}

/// The int8 file's content of a quantized model, `R`-row weight blocks,
/// dense and conv weights in `form`.
pub fn stored_int8(
    m: &QuantModel,
    block_rows: usize,
    form: WeightForm,
) -> Result<StoredModel, ExportError> {
    let r = check_block_rows(block_rows)?;
    if form == WeightForm::Pairs && r != 4 {
        return Err(fmt_err(format!(
            "the pair form of the weights is blocked by 4 rows, not {r} (use --block-rows 4)"
        )));
    }
    let mut layers = Vec::with_capacity(m.layers.len());
    for (i, l) in m.layers.iter().enumerate() {
        let (mut weights, mut bias, mut requant) = (None, None, None);
        if l.op.is_weighted() {
            let (w, b) = weights_and_bias(&l.op, r, &l.weights, &l.bias)?;
            let pairs = l.op.is_blocked()
                && match form {
                    WeightForm::I8 => false,
                    WeightForm::Pairs => true,
                    WeightForm::Auto => pairs_pay(&l.op, l.input, r),
                };
            weights = Some(if pairs {
                let mut words = vec![0i32; w.len() / 2];
                normcore::kernels::pack_pairs(&w, &mut words)
                    .map_err(|e| fmt_err(format!("layer {}: pair form: {e}", i + 1)))?;
                Stored::Pairs(words)
            } else {
                Stored::I8(w)
            });
            bias = Some(Stored::I32(b));
            requant = Some((l.multiplier.clone(), l.shift.clone()));
        }
        let table = if l.table.is_empty() {
            None
        } else {
            Some(l.table.as_slice().try_into().map_err(|_| {
                fmt_err(format!(
                    "layer {}: a lookup table of {} entries, not 256",
                    i + 1,
                    l.table.len()
                ))
            })?)
        };
        layers.push(StoredLayer {
            op: l.op,
            activation: l.act,
            zp_folded: l.zp_folded,
            input: l.input,
            output: l.output,
            block_rows: if l.op.is_blocked() { r } else { 0 },
            weights,
            bias,
            requant,
            table,
            quant: QuantOut {
                scale: l.output_q.scale,
                zero_point: l.output_q.zero_point,
                requant_zero_point: l.requant_zp,
                clamp_min: l.clamp_min,
                clamp_max: l.clamp_max,
                requant_scale: l.requant_scale,
            },
            bn: l.bn.clone(),
        });
    }
    Ok(StoredModel {
        kind: Kind::Int8,
        input: m.input,
        classes: m.classes,
        input_q: m.input_q,
        pixel_scale: m.pixel_scale,
        layers,
    })
}

/// Write an f32 file: the folded model with `R`-row weight blocks.
pub fn write_f32(
    m: &FoldedModel,
    block_rows: usize,
    pixel_scale: f32,
) -> Result<Vec<u8>, ExportError> {
    stored_f32(m, block_rows, pixel_scale)?.write()
}

/// Write an int8 file: the quantized model with `R`-row weight blocks, the
/// weights as bytes.
pub fn write_int8(m: &QuantModel, block_rows: usize) -> Result<Vec<u8>, ExportError> {
    write_int8_form(m, block_rows, WeightForm::I8)
}

/// [`write_int8`] with the dense and conv weights in `form`.
pub fn write_int8_form(
    m: &QuantModel,
    block_rows: usize,
    form: WeightForm,
) -> Result<Vec<u8>, ExportError> {
    stored_int8(m, block_rows, form)?.write()
}

/// How the int8 weights of dense and conv layers are stored (FORMAT.md,
/// "Row-blocked weights"); depthwise taps are always bytes. All forms give
/// bit-identical outputs. (The command line's `--weights` is
/// [`crate::cli::WeightsArg`].)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightForm {
    /// Per layer, pair words where they are faster on a Cortex-M4 (blocks
    /// of 4 rows and runs of at least [`PAIR_MIN_RUN`] inputs), else bytes.
    #[default]
    Auto,
    /// dtype `i8`: one byte per weight (the smallest file).
    I8,
    /// dtype `i8pair`: two weights of adjacent rows per 32-bit word,
    /// `lo + 2^24·hi`, in blocks of 4 rows: twice the weight bytes, about
    /// half the instructions per MAC on a Cortex-M4 (one `SMLAL` per two
    /// MACs) once the runs are long.
    Pairs,
}

/// The shortest run of inputs for which [`WeightForm::Auto`] stores a
/// layer's weights as pair words: core's, with the measurements behind it
/// (a run is what the kernels' inner loop walks in one call,
/// [`normcore::kernels::int8::dot_run_len`]).
pub use normcore::kernels::int8::PAIR_MIN_RUN;

/// Whether [`WeightForm::Auto`] stores the weights of a layer with `op` on
/// `input` as pair words (`block_rows` rows per block; pairs need 4):
/// core's rule, [`normcore::kernels::int8::pairs_faster`].
pub fn pairs_pay(op: &LayerOp, input: Hwc, block_rows: usize) -> bool {
    let faster = match op {
        LayerOp::Dense(_) => pairs_faster(1, 1, input.len()), // every input
        LayerOp::Conv(c) => pairs_faster(c.window.kernel_h, c.window.kernel_w, input.c),
        _ => return false,
    };
    block_rows == 4 && faster
}

// -------------------------------------------------------------- rewriting

/// Re-write a file parsed by core through core's writer, from the parsed
/// layers and BN records. A file written here comes back byte for byte.
pub fn rewrite(m: &Model<'_>) -> Result<Vec<u8>, ExportError> {
    let layers = m
        .layers()
        .map(|l| l.map(|l| LayerDesc::from(&l)))
        .collect::<Result<Vec<_>, _>>()?;
    let bn = m
        .bn_records()
        .map(|b| b.map(|b| BnDesc::from(&b)))
        .collect::<Result<Vec<_>, _>>()?;
    write_desc(&ModelDesc::of(m, &layers, &bn))
}
