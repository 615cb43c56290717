//! Writing `.ncm` files, byte for byte as `docs/FORMAT.md` specifies them,
//! from the exporter's models ([`write_f32`], [`write_int8`]) or from a file
//! parsed by core ([`rewrite`]).
//!
//! Both go through one serialiser of a table description ([`FileDesc`]: the
//! header's fields, the layer, tensor and BN records, the tensor data), so
//! a file written here and re-written from its parse is the same bytes (the
//! golden round trip `rewrite(parse(export(net))) == export(net)`). There is
//! no reader here: the host reads files only with core's
//! `normcore::model::Model::parse`, the device's own (see [`super::device`]).
//!
//! File order: header (64 bytes), layer table (64 bytes per layer), tensor
//! table (32 bytes per tensor), BN table (16 bytes per folded BN), then the
//! tensor data from the next 16-aligned offset, each tensor 16-aligned, in
//! table order, zeros between. The exporter emits each layer's tensors in the
//! order weight, bias, multiplier, shift, table, and the BN statistics after
//! every layer tensor, so the weights the device reads are contiguous. Dense
//! and conv weights are row-blocked ([`pack_rows`]), their bias padded to
//! whole blocks. The CRC-32 (the zlib one, `crc32fast`) covers the whole
//! file with its own four bytes as zero. Everything is a pure function of the
//! description: the same model gives the same bytes.

use super::fold::{BnParams, FoldedModel, LayerOp};
use super::quant::{QParams, QuantModel};
use super::ExportError;
use crate::spec::Hwc;
use normcore::layers::{Activation, Window};
use normcore::model::{DType, Kind, Model, Op};

pub use normcore::model::{
    activation_code, ALIGN, BN_LEN, FLAG_HAS_BN, FLAG_INT8, HEADER_LEN, LAYER_LEN, LAYER_ZP_FOLDED,
    MAGIC, MAX_LAYERS, MAX_TENSORS, NO_TENSOR, TENSOR_LEN, VERSION,
};

/// Tensor dtype codes.
pub const DTYPE_F32: u8 = 1;
/// i8.
pub const DTYPE_I8: u8 = 2;
/// i32.
pub const DTYPE_I32: u8 = 3;
/// int8 pairs in i32 words (core's `DType::I8Pair`; re-written as read).
pub const DTYPE_I8_PAIR: u8 = 4;

/// `v` rounded up to a multiple of 16.
pub fn round16(v: usize) -> usize {
    v.div_ceil(ALIGN) * ALIGN
}

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

/// Activation bytes of `shape` for an f32 (4) or int8 (1) model.
pub fn activation_bytes(int8: bool, shape: Hwc) -> usize {
    shape.len() * if int8 { 1 } else { 4 }
}

/// The arena of FORMAT.md's memory plan:
/// `max_i round16(in_bytes(i)) + round16(out_bytes(i))`.
pub fn arena_bytes(int8: bool, shapes: impl Iterator<Item = (Hwc, Hwc)>) -> usize {
    shapes
        .map(|(i, o)| round16(activation_bytes(int8, i)) + round16(activation_bytes(int8, o)))
        .max()
        .unwrap_or(0)
}

fn fmt_err(msg: String) -> ExportError {
    ExportError::Format(msg)
}

fn window_of(op: &LayerOp) -> Option<Window> {
    match op {
        LayerOp::Conv(c) => Some(c.window),
        LayerOp::Depthwise(d) => Some(d.window),
        LayerOp::Pool(p) => Some(p.window),
        _ => None,
    }
}

/// Code of an op in the layer table.
pub fn op_code(op: &LayerOp) -> u8 {
    match op {
        LayerOp::Dense(_) => 1,
        LayerOp::Conv(_) => 2,
        LayerOp::Depthwise(_) => 3,
        LayerOp::Pool(p) if p.kind == normcore::layers::PoolKind::Max => 4,
        LayerOp::Pool(_) => 5,
        LayerOp::GlobalAvgPool => 6,
        LayerOp::Activation => 7,
    }
}

// ------------------------------------------------------ table description

/// Everything a file holds, as the tables FORMAT.md lays out: the input of
/// [`serialize`]. Offsets, sizes, counts, the arena and the CRC are derived.
#[derive(Debug, Clone, PartialEq)]
pub struct FileDesc {
    /// int8 (else f32).
    pub int8: bool,
    /// Input shape of one sample.
    pub input: Hwc,
    /// Output classes.
    pub classes: usize,
    /// int8 input quantization (scale 0 and zero point 0 in f32 files).
    pub input_q: QParams,
    /// The data set's stored value per raw unit.
    pub pixel_scale: f32,
    /// Layer records, in execution order.
    pub layers: Vec<LayerRec>,
    /// Tensor records with their data, in table (and data) order.
    pub tensors: Vec<TensorRec>,
    /// BN records.
    pub bn: Vec<BnRec>,
}

/// A layer record (FORMAT.md, "Layer table").
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerRec {
    /// Op code.
    pub op: u8,
    /// Activation code.
    pub act: u8,
    /// Flags (`LAYER_ZP_FOLDED`).
    pub flags: u16,
    /// Input shape.
    pub input: Hwc,
    /// Output shape.
    pub output: Hwc,
    /// Kernel h/w, stride h/w, padding top/bottom/left/right.
    pub window: [u8; 8],
    /// Weight, bias, multiplier, shift and table tensor indices.
    pub ids: [u16; 5],
    /// Output scale, output zero point, requant zero point, clamps (all 0 in f32 files).
    pub quant: QuantFields,
}

/// The quantization fields of a layer record (all zero in f32 files).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct QuantFields {
    /// Output scale.
    pub scale: f32,
    /// Output zero point.
    pub zp: i32,
    /// Zero point added after requantization.
    pub requant_zp: i32,
    /// Lower clamp.
    pub clamp_min: i32,
    /// Upper clamp.
    pub clamp_max: i32,
}

/// A tensor record and its data (little-endian bytes, as stored).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorRec {
    /// Dtype code.
    pub dtype: u8,
    /// Block rows (0: plain layout).
    pub block: u8,
    /// Logical dims.
    pub dims: [u32; 4],
    /// The stored bytes.
    pub data: Vec<u8>,
}

/// A BN record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BnRec {
    /// The layer the BN was folded into.
    pub layer: usize,
    /// γ, β, E[x], Var[x] tensor indices.
    pub ids: [u16; 4],
    /// ε.
    pub eps: f32,
}

impl TensorRec {
    fn f32(dims: [usize; 4], v: &[f32], block: u8) -> Self {
        Self::new(DTYPE_F32, dims, le_bytes(v, f32::to_le_bytes), block)
    }
    fn i8(dims: [usize; 4], v: &[i8], block: u8) -> Self {
        Self::new(DTYPE_I8, dims, le_bytes(v, i8::to_le_bytes), block)
    }
    fn i32(dims: [usize; 4], v: &[i32]) -> Self {
        Self::new(DTYPE_I32, dims, le_bytes(v, i32::to_le_bytes), 0)
    }
    fn new(dtype: u8, dims: [usize; 4], data: Vec<u8>, block: u8) -> Self {
        TensorRec {
            dtype,
            block,
            // Bounded by the data length, which `serialize` checks against u32.
            dims: dims.map(|d| d as u32),
            data,
        }
    }
}

fn le_bytes<T: Copy, const N: usize>(v: &[T], f: fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

// ---------------------------------------------------------------- writing

impl FileDesc {
    fn new(int8: bool, input: Hwc, classes: usize, input_q: QParams, pixel_scale: f32) -> Self {
        FileDesc {
            int8,
            input,
            classes,
            input_q,
            pixel_scale,
            layers: Vec::new(),
            tensors: Vec::new(),
            bn: Vec::new(),
        }
    }

    fn add(&mut self, t: TensorRec) -> Result<u16, ExportError> {
        if self.tensors.len() >= MAX_TENSORS {
            return Err(fmt_err(format!(
                "more than {MAX_TENSORS} tensors: the format cannot hold this model"
            )));
        }
        self.tensors.push(t);
        Ok((self.tensors.len() - 1) as u16)
    }

    /// The geometry part of a layer record; returns its index.
    fn layer(
        &mut self,
        index: usize,
        op: &LayerOp,
        act: Option<Activation>,
        input: Hwc,
        output: Hwc,
    ) -> Result<usize, ExportError> {
        let mut window = [0u8; 8];
        if let Some(w) = window_of(op) {
            let v = [
                w.kernel_h,
                w.kernel_w,
                w.stride_h,
                w.stride_w,
                w.padding.top,
                w.padding.bottom,
                w.padding.left,
                w.padding.right,
            ];
            for (dst, src) in window.iter_mut().zip(v) {
                *dst = u8::try_from(src).map_err(|_| {
                    fmt_err(format!(
                        "layer {}: kernel, stride and padding must be at most 255 for the format",
                        index + 1
                    ))
                })?;
            }
        }
        self.layers.push(LayerRec {
            op: op_code(op),
            act: activation_code(act),
            flags: 0,
            input,
            output,
            window,
            ids: [NO_TENSOR; 5],
            quant: QuantFields::default(),
        });
        Ok(self.layers.len() - 1)
    }

    /// Weight (blocked for dense/conv) and bias (padded to whole blocks)
    /// tensors of a weighted layer; returns their indices.
    fn weights_and_bias<W: Copy + Default, B: Copy + Default>(
        &mut self,
        op: &LayerOp,
        r: u8,
        (w, b): (&[W], &[B]),
        wt: fn([usize; 4], &[W], u8) -> TensorRec,
        bt: fn([usize; 4], &[B]) -> TensorRec,
    ) -> Result<(u16, u16), ExportError> {
        let channels = op.out_channels();
        let (dims, blocked) = match op {
            LayerOp::Dense(d) => ([d.outputs, d.inputs, 1, 1], true),
            LayerOp::Conv(c) => (
                [c.out_c, c.window.kernel_h, c.window.kernel_w, c.in_c],
                true,
            ),
            LayerOp::Depthwise(d) => ([d.window.kernel_h, d.window.kernel_w, d.channels, 1], false),
            _ => return Err(fmt_err("weights for an unweighted layer".into())),
        };
        if !blocked {
            let wi = self.add(wt(dims, w, 0))?;
            return Ok((wi, self.add(bt([channels, 1, 1, 1], b))?));
        }
        let ru = usize::from(r);
        let packed = pack_rows(w, channels, w.len() / channels.max(1), ru)?;
        let wi = self.add(wt(dims, &packed, r))?;
        let mut bias = b.to_vec();
        bias.resize(channels.div_ceil(ru) * ru, B::default());
        Ok((wi, self.add(bt([bias.len(), 1, 1, 1], &bias))?))
    }

    fn bn_tensors<'a>(
        &mut self,
        layers: impl Iterator<Item = (usize, Option<&'a BnParams>)>,
    ) -> Result<(), ExportError> {
        for (layer, bn) in layers {
            let Some(bn) = bn else { continue };
            let c = bn.gamma.len();
            let mut ids = [0u16; 4];
            for (id, v) in ids.iter_mut().zip([&bn.gamma, &bn.beta, &bn.mean, &bn.var]) {
                *id = self.add(TensorRec::f32([c, 1, 1, 1], v, 0))?;
            }
            self.bn.push(BnRec {
                layer,
                ids,
                eps: bn.eps,
            });
        }
        Ok(())
    }
}

fn check_block_rows(r: usize) -> Result<u8, ExportError> {
    match r {
        4 | 8 => Ok(r as u8),
        _ => Err(fmt_err(format!("block rows must be 4 or 8, not {r}"))),
    }
}

/// The description of the f32 file of a folded model, `R`-row weight blocks.
pub fn describe_f32(
    m: &FoldedModel,
    block_rows: usize,
    pixel_scale: f32,
) -> Result<FileDesc, ExportError> {
    let r = check_block_rows(block_rows)?;
    let none = QParams {
        scale: 0.0,
        zero_point: 0,
    };
    let mut d = FileDesc::new(false, m.input, m.classes, none, pixel_scale);
    for (i, l) in m.layers.iter().enumerate() {
        let li = d.layer(i, &l.op, l.act, l.input, l.output)?;
        if l.op.is_weighted() {
            let (w, b) = d.weights_and_bias(
                &l.op,
                r,
                (&l.weights, &l.bias),
                TensorRec::f32,
                |dims, v| TensorRec::f32(dims, v, 0),
            )?;
            d.layers[li].ids[..2].copy_from_slice(&[w, b]);
        }
    }
    d.bn_tensors(m.layers.iter().map(|l| l.bn.as_ref()).enumerate())?;
    Ok(d)
}

/// The description of the int8 file of a quantized model, `R`-row weight blocks.
pub fn describe_int8(m: &QuantModel, block_rows: usize) -> Result<FileDesc, ExportError> {
    let r = check_block_rows(block_rows)?;
    let mut d = FileDesc::new(true, m.input, m.classes, m.input_q, m.pixel_scale);
    for (i, l) in m.layers.iter().enumerate() {
        let li = d.layer(i, &l.op, l.act, l.input, l.output)?;
        let mut ids = [NO_TENSOR; 5];
        if l.op.is_weighted() {
            let channels = l.op.out_channels();
            (ids[0], ids[1]) = d.weights_and_bias(
                &l.op,
                r,
                (&l.weights, &l.bias),
                TensorRec::i8,
                TensorRec::i32,
            )?;
            ids[2] = d.add(TensorRec::i32([channels, 1, 1, 1], &l.multiplier))?;
            ids[3] = d.add(TensorRec::i32([channels, 1, 1, 1], &l.shift))?;
        }
        if !l.table.is_empty() {
            ids[4] = d.add(TensorRec::i8([256, 1, 1, 1], &l.table, 0))?;
        }
        let rec = &mut d.layers[li];
        rec.ids = ids;
        rec.flags = if l.zp_folded { LAYER_ZP_FOLDED } else { 0 };
        rec.quant = QuantFields {
            scale: l.output_q.scale,
            zp: l.output_q.zero_point,
            requant_zp: l.requant_zp,
            clamp_min: l.clamp_min,
            clamp_max: l.clamp_max,
        };
    }
    d.bn_tensors(m.layers.iter().map(|l| l.bn.as_ref()).enumerate())?;
    Ok(d)
}

/// Write an f32 file: the folded model with `R`-row weight blocks.
pub fn write_f32(
    m: &FoldedModel,
    block_rows: usize,
    pixel_scale: f32,
) -> Result<Vec<u8>, ExportError> {
    serialize(&describe_f32(m, block_rows, pixel_scale)?)
}

/// Write an int8 file: the quantized model with `R`-row weight blocks.
pub fn write_int8(m: &QuantModel, block_rows: usize) -> Result<Vec<u8>, ExportError> {
    serialize(&describe_int8(m, block_rows)?)
}

/// How the int8 weights of dense and conv layers are stored (FORMAT.md,
/// "Row-blocked weights"); depthwise taps are always bytes. All forms give
/// bit-identical outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
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
/// layer's weights as pair words. A run is what the kernels' inner loop
/// walks in one call: all inputs of a dense layer, one kernel row
/// (`KW·Cin` inputs) of a convolution. The pair loop does two MACs per
/// `SMLAL` but pays more per run (two 64-bit accumulators to set up and
/// split), so it wins only on long runs. Measured under QEMU (`cargo xtask
/// bench firmware`, the `run=` rows, instructions per MAC, bytes / pairs):
///
/// | run | dense `N×32` | conv 3×3 on 12×12×Cin, 16 filters |
/// |----:|-------------|------------------------------------|
/// | 6   |             | 7.84 / 12.12 |
/// | 8   | 14.05 / 16.91 |            |
/// | 12  |             | 5.29 / 6.75  |
/// | 16  | 8.40 / 9.14 |              |
/// | 24  | 6.52 / 6.55 | 4.02 / 4.06  |
/// | 32  | 5.57 / 5.26 |              |
/// | 48  | 4.63 / 3.96 | 3.39 / 2.72  |
/// | 64  | 4.16 / 3.32 |              |
///
/// The forms break even at a run of about 24; from 32 on the pairs are
/// clearly faster, which is worth their doubled flash.
pub const PAIR_MIN_RUN: usize = 32;

/// Whether [`WeightForm::Auto`] stores layer `l`'s weights as pair words
/// (`block_rows` rows per block; pairs need 4).
pub fn pairs_pay(l: &LayerRec, block_rows: usize) -> bool {
    let run = match l.op {
        1 => l.input.len(),                        // dense: every input
        2 => usize::from(l.window[1]) * l.input.c, // conv: KW·Cin
        _ => return false,
    };
    block_rows == 4 && run >= PAIR_MIN_RUN
}

/// [`describe_int8`] with the dense and conv weights in `form`.
pub fn describe_int8_form(
    m: &QuantModel,
    block_rows: usize,
    form: WeightForm,
) -> Result<FileDesc, ExportError> {
    let mut d = describe_int8(m, block_rows)?;
    if form == WeightForm::Pairs && block_rows != 4 {
        return Err(fmt_err(format!(
            "the pair form of the weights is blocked by 4 rows, not {block_rows} (use --block-rows 4)"
        )));
    }
    for (i, l) in d.layers.clone().iter().enumerate() {
        let pairs = match form {
            WeightForm::I8 => false,
            WeightForm::Pairs => true,
            WeightForm::Auto => pairs_pay(l, block_rows),
        };
        let blocked = l.op == 1 || l.op == 2; // dense, conv
        let Some(t) = d.tensors.get_mut(usize::from(l.ids[0])) else {
            continue;
        };
        if !pairs || !blocked || l.ids[0] == NO_TENSOR || t.dtype != DTYPE_I8 {
            continue;
        }
        let bytes: Vec<i8> = t.data.iter().map(|&b| b as i8).collect();
        let mut words = vec![0i32; bytes.len() / 2];
        normcore::kernels::pack_pairs(&bytes, &mut words)
            .map_err(|e| fmt_err(format!("layer {}: pair form: {e}", i + 1)))?;
        t.dtype = DTYPE_I8_PAIR;
        t.data = le_bytes(&words, i32::to_le_bytes);
    }
    Ok(d)
}

/// [`write_int8`] with the dense and conv weights in `form`.
pub fn write_int8_form(
    m: &QuantModel,
    block_rows: usize,
    form: WeightForm,
) -> Result<Vec<u8>, ExportError> {
    serialize(&describe_int8_form(m, block_rows, form)?)
}

// -------------------------------------------------------------- rewriting

fn hwc(s: normcore::Shape) -> Hwc {
    Hwc {
        h: s.h,
        w: s.w,
        c: s.c,
    }
}

/// The description of a file parsed by core, rebuilt from the parsed views:
/// the header, each validated layer, every tensor's validated record and
/// data range through [`Model::tensor`], the BN records.
pub fn describe_parsed(m: &Model<'_>) -> Result<FileDesc, ExportError> {
    let h = m.header();
    let mut d = FileDesc::new(
        h.kind == Kind::Int8,
        hwc(h.input),
        h.classes,
        QParams {
            scale: h.input_scale,
            zero_point: h.input_zero_point,
        },
        h.pixel_scale,
    );
    for l in m.layers() {
        let l = l?;
        let mut window = [0u8; 8];
        let w = match l.op {
            Op::Conv(c) => Some(c.window),
            Op::Depthwise(dw) => Some(dw.window),
            Op::Pool(p) => Some(p.window),
            _ => None,
        };
        if let Some(w) = w {
            let v = [
                w.kernel_h,
                w.kernel_w,
                w.stride_h,
                w.stride_w,
                w.padding.top,
                w.padding.bottom,
                w.padding.left,
                w.padding.right,
            ];
            for (dst, src) in window.iter_mut().zip(v) {
                // The parser read each of them from one byte.
                *dst = u8::try_from(src).map_err(|_| fmt_err(format!("window field {src}")))?;
            }
        }
        d.layers.push(LayerRec {
            op: l.op.code(),
            act: activation_code(l.activation),
            flags: if l.zp_folded { LAYER_ZP_FOLDED } else { 0 },
            input: hwc(l.input),
            output: hwc(l.output),
            window,
            ids: l.tensor_ids,
            quant: QuantFields {
                scale: l.quant.scale,
                zp: l.quant.zero_point,
                requant_zp: l.quant.requant_zero_point,
                clamp_min: l.quant.clamp_min,
                clamp_max: l.quant.clamp_max,
            },
        });
    }
    for i in 0..m.tensor_count() {
        // The record as validated, and its data: the exact bytes of the
        // validated range (whatever typed view the parser gives of them).
        let (t, _) = m.tensor(i)?;
        let data = m
            .bytes()
            .get(t.offset as usize..t.offset as usize + t.len as usize)
            .ok_or_else(|| fmt_err(format!("tensor {i}: data outside the file")))?;
        d.tensors.push(TensorRec {
            dtype: match t.dtype {
                DType::F32 => DTYPE_F32,
                DType::I8 => DTYPE_I8,
                DType::I32 => DTYPE_I32,
                DType::I8Pair => DTYPE_I8_PAIR,
            },
            block: t.block_rows,
            dims: t.dims,
            data: data.to_vec(),
        });
    }
    d.bn = m
        .bn_records()
        .map(|b| {
            b.map(|b| BnRec {
                layer: b.layer,
                ids: b.tensor_ids,
                eps: b.eps,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(d)
}

/// Re-export a file parsed by core: [`serialize`] of [`describe_parsed`].
/// A file this module wrote comes back byte for byte.
pub fn rewrite(m: &Model<'_>) -> Result<Vec<u8>, ExportError> {
    serialize(&describe_parsed(m)?)
}

// ------------------------------------------------------------ serialising

fn put_u16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_i32(out: &mut [u8], at: usize, v: i32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_f32(out: &mut [u8], at: usize, v: f32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn u16_of(v: usize, what: &str) -> Result<u16, ExportError> {
    u16::try_from(v).map_err(|_| fmt_err(format!("{what} {v} does not fit the format's u16")))
}

/// Lay out the tables and the data of `d`, fill in the header and the CRC.
pub fn serialize(d: &FileDesc) -> Result<Vec<u8>, ExportError> {
    if d.layers.is_empty() || d.layers.len() > MAX_LAYERS {
        return Err(fmt_err(format!(
            "{} layers after folding; the format holds 1 to {MAX_LAYERS}",
            d.layers.len()
        )));
    }
    if d.tensors.len() > MAX_TENSORS || d.bn.len() > MAX_LAYERS {
        return Err(fmt_err(format!(
            "{} tensors and {} BN records; the format holds {MAX_TENSORS} and {MAX_LAYERS}",
            d.tensors.len(),
            d.bn.len()
        )));
    }
    if !(d.pixel_scale.is_finite() && d.pixel_scale > 0.0) {
        return Err(fmt_err(format!(
            "pixel scale {} must be finite and positive",
            d.pixel_scale
        )));
    }
    for (i, l) in d.layers.iter().enumerate() {
        for s in [l.input, l.output] {
            if [s.h, s.w, s.c].iter().any(|&v| v > usize::from(u16::MAX)) {
                return Err(fmt_err(format!(
                    "layer {}: shape {s} has a dimension above 65535",
                    i + 1
                )));
            }
        }
    }
    let layer_off = HEADER_LEN;
    let tensor_off = layer_off + d.layers.len() * LAYER_LEN;
    let bn_off = tensor_off + d.tensors.len() * TENSOR_LEN;
    let tables_end = bn_off + d.bn.len() * BN_LEN;
    let mut offsets = Vec::with_capacity(d.tensors.len());
    let mut cursor = round16(tables_end);
    for t in &d.tensors {
        let at = round16(cursor);
        offsets.push(at);
        cursor = at + t.data.len();
    }
    let file_size = cursor.max(tables_end);
    let file_u32 = u32::try_from(file_size).map_err(|_| {
        fmt_err(format!(
            "the model needs {file_size} bytes, more than a u32 offset reaches"
        ))
    })?;
    let mut out = vec![0u8; file_size];

    // Header.
    out[0..4].copy_from_slice(&MAGIC);
    put_u16(&mut out, 4, VERSION);
    let has_bn = !d.bn.is_empty();
    let flags = if d.int8 { FLAG_INT8 } else { 0 } | if has_bn { FLAG_HAS_BN } else { 0 };
    put_u16(&mut out, 6, flags);
    put_u32(&mut out, 8, file_u32);
    let arena = arena_bytes(d.int8, d.layers.iter().map(|l| (l.input, l.output)));
    put_u32(
        &mut out,
        16,
        u32::try_from(arena).map_err(|_| fmt_err(format!("arena of {arena} bytes")))?,
    );
    put_u16(&mut out, 20, d.layers.len() as u16);
    put_u16(&mut out, 22, d.tensors.len() as u16);
    put_u32(&mut out, 24, layer_off as u32);
    put_u32(&mut out, 28, tensor_off as u32);
    put_u32(&mut out, 32, if has_bn { bn_off as u32 } else { 0 });
    put_u16(&mut out, 36, d.bn.len() as u16);
    put_u16(&mut out, 38, u16_of(d.classes, "classes")?);
    put_u16(&mut out, 40, u16_of(d.input.h, "input height")?);
    put_u16(&mut out, 42, u16_of(d.input.w, "input width")?);
    put_u16(&mut out, 44, u16_of(d.input.c, "input channels")?);
    put_f32(&mut out, 48, d.input_q.scale);
    put_i32(&mut out, 52, d.input_q.zero_point);
    put_f32(&mut out, 56, d.pixel_scale);

    for (i, l) in d.layers.iter().enumerate() {
        let at = layer_off + i * LAYER_LEN;
        out[at] = l.op;
        out[at + 1] = l.act;
        put_u16(&mut out, at + 2, l.flags);
        for (k, v) in [
            l.input.h, l.input.w, l.input.c, l.output.h, l.output.w, l.output.c,
        ]
        .into_iter()
        .enumerate()
        {
            // Checked above.
            put_u16(&mut out, at + 4 + 2 * k, v as u16);
        }
        out[at + 16..at + 24].copy_from_slice(&l.window);
        for (k, &id) in l.ids.iter().enumerate() {
            put_u16(&mut out, at + 24 + 2 * k, id);
        }
        put_f32(&mut out, at + 36, l.quant.scale);
        put_i32(&mut out, at + 40, l.quant.zp);
        put_i32(&mut out, at + 44, l.quant.requant_zp);
        put_i32(&mut out, at + 48, l.quant.clamp_min);
        put_i32(&mut out, at + 52, l.quant.clamp_max);
    }
    for (i, (t, &data_at)) in d.tensors.iter().zip(&offsets).enumerate() {
        let at = tensor_off + i * TENSOR_LEN;
        out[at] = t.dtype;
        out[at + 1] = u8::from(t.block != 0);
        out[at + 2] = t.block;
        for (k, &dim) in t.dims.iter().enumerate() {
            put_u32(&mut out, at + 4 + 4 * k, dim);
        }
        put_u32(&mut out, at + 20, data_at as u32);
        put_u32(&mut out, at + 24, t.data.len() as u32);
        out[data_at..data_at + t.data.len()].copy_from_slice(&t.data);
    }
    for (j, b) in d.bn.iter().enumerate() {
        let at = bn_off + j * BN_LEN;
        put_u16(&mut out, at, u16_of(b.layer, "BN layer index")?);
        for (k, &id) in b.ids.iter().enumerate() {
            put_u16(&mut out, at + 2 + 2 * k, id);
        }
        put_f32(&mut out, at + 12, b.eps);
    }
    // Bytes 12..16 are still zero: the CRC covers them as zero.
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, 12, crc);
    Ok(out)
}
