//! Writing (and, for `inspect` and the tests, reading back) `.ncm` files,
//! byte for byte as `docs/FORMAT.md` specifies them.
//!
//! File order: header (64 bytes), layer table (64 bytes per layer), tensor
//! table (32 bytes per tensor), BN table (16 bytes per folded BN), then the
//! tensor data from the next 16-aligned offset, each tensor 16-aligned, in
//! table order, zeros between. Each layer's tensors come in the order weight,
//! bias, multiplier, shift, table; the BN statistics follow every layer
//! tensor, so the weights the device reads are contiguous. Dense and conv
//! weights are row-blocked ([`pack_rows`]), their bias padded to whole blocks.
//! The CRC-32 (the zlib one, `crc32fast`) covers the whole file with its own
//! four bytes as zero. Everything is a pure function of the model: the same
//! model gives the same bytes.

use super::fold::{BnParams, FoldedLayer, FoldedModel, LayerOp};
use super::quant::{QLayer, QParams, QuantModel};
use super::ExportError;
use crate::spec::Hwc;
use normcore::layers::{
    Activation, Conv2d, Dense, DepthwiseConv2d, Padding, Pool2d, PoolKind, Window,
};

/// `"NCMF"`.
pub const MAGIC: [u8; 4] = *b"NCMF";
/// The format version written and read here.
pub const VERSION: u16 = 1;
/// Header flag: int8 model.
pub const FLAG_INT8: u16 = 1;
/// Header flag: BN table present.
pub const FLAG_HAS_BN: u16 = 2;
/// Layer flag: the input zero point is folded into the bias.
pub const LAYER_ZP_FOLDED: u16 = 1;
/// "No tensor" in a layer record.
pub const NO_TENSOR: u16 = 0xFFFF;
/// Header bytes.
pub const HEADER_LEN: usize = 64;
/// Bytes per layer record.
pub const LAYER_LEN: usize = 64;
/// Bytes per tensor record.
pub const TENSOR_LEN: usize = 32;
/// Bytes per BN record.
pub const BN_LEN: usize = 16;
/// Alignment of tensor data and arena regions.
pub const ALIGN: usize = 16;
/// Most layers a file may hold.
pub const MAX_LAYERS: usize = 64;
/// Most tensors a file may hold.
pub const MAX_TENSORS: usize = 1024;

/// Tensor dtype codes.
pub const DTYPE_F32: u8 = 1;
/// i8.
pub const DTYPE_I8: u8 = 2;
/// i32.
pub const DTYPE_I32: u8 = 3;

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

/// Code of an activation in the layer table.
pub fn activation_code(a: Option<Activation>) -> u8 {
    match a {
        None => 0,
        Some(Activation::Relu) => 1,
        Some(Activation::Relu6) => 2,
        Some(Activation::Sigmoid) => 3,
        Some(Activation::Tanh) => 4,
    }
}

fn activation_from_code(c: u8) -> Option<Option<Activation>> {
    Some(match c {
        0 => None,
        1 => Some(Activation::Relu),
        2 => Some(Activation::Relu6),
        3 => Some(Activation::Sigmoid),
        4 => Some(Activation::Tanh),
        _ => return None,
    })
}

/// Code of an op in the layer table.
pub fn op_code(op: &LayerOp) -> u8 {
    match op {
        LayerOp::Dense(_) => 1,
        LayerOp::Conv(_) => 2,
        LayerOp::Depthwise(_) => 3,
        LayerOp::Pool(p) if p.kind == PoolKind::Max => 4,
        LayerOp::Pool(_) => 5,
        LayerOp::GlobalAvgPool => 6,
        LayerOp::Activation => 7,
    }
}

fn window_of(op: &LayerOp) -> Option<Window> {
    match op {
        LayerOp::Conv(c) => Some(c.window),
        LayerOp::Depthwise(d) => Some(d.window),
        LayerOp::Pool(p) => Some(p.window),
        _ => None,
    }
}

/// A tensor to be written.
#[derive(Debug, Clone)]
struct TensorOut {
    dtype: u8,
    block: u8,
    dims: [u32; 4],
    data: Vec<u8>,
}

impl TensorOut {
    fn f32(dims: [usize; 4], v: &[f32], block: u8) -> Self {
        Self::new(
            DTYPE_F32,
            dims,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            block,
        )
    }
    fn i8(dims: [usize; 4], v: &[i8], block: u8) -> Self {
        Self::new(DTYPE_I8, dims, v.iter().map(|&x| x as u8).collect(), block)
    }
    fn i32(dims: [usize; 4], v: &[i32]) -> Self {
        Self::new(
            DTYPE_I32,
            dims,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            0,
        )
    }
    fn new(dtype: u8, dims: [usize; 4], data: Vec<u8>, block: u8) -> Self {
        TensorOut {
            dtype,
            block,
            // Checked against u32 in `assemble` through the data length bound.
            dims: dims.map(|d| d as u32),
            data,
        }
    }
}

/// The quantization fields of a layer record (all zero in f32 files).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct QuantFields {
    scale: f32,
    zp: i32,
    requant_zp: i32,
    clamp_min: i32,
    clamp_max: i32,
}

#[derive(Debug, Clone)]
struct LayerOut {
    op: u8,
    act: u8,
    flags: u16,
    input: Hwc,
    output: Hwc,
    window: [u8; 8],
    ids: [u16; 5],
    quant: QuantFields,
}

#[derive(Debug, Default)]
struct Builder {
    layers: Vec<LayerOut>,
    tensors: Vec<TensorOut>,
    bn: Vec<(usize, [u16; 4], f32)>,
}

impl Builder {
    fn add(&mut self, t: TensorOut) -> Result<u16, ExportError> {
        if self.tensors.len() >= MAX_TENSORS {
            return Err(fmt_err(format!(
                "more than {MAX_TENSORS} tensors: the format cannot hold this model"
            )));
        }
        self.tensors.push(t);
        Ok((self.tensors.len() - 1) as u16)
    }

    /// The geometry part of a layer record.
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
        for s in [input, output] {
            if [s.h, s.w, s.c].iter().any(|&d| d > usize::from(u16::MAX)) {
                return Err(fmt_err(format!(
                    "layer {}: shape {s} has a dimension above 65535",
                    index + 1
                )));
            }
        }
        self.layers.push(LayerOut {
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

    /// Weight dims and whether the weights are blocked.
    fn weight_dims(op: &LayerOp) -> ([usize; 4], bool) {
        match op {
            LayerOp::Dense(d) => ([d.outputs, d.inputs, 1, 1], true),
            LayerOp::Conv(c) => (
                [c.out_c, c.window.kernel_h, c.window.kernel_w, c.in_c],
                true,
            ),
            LayerOp::Depthwise(d) => ([d.window.kernel_h, d.window.kernel_w, d.channels, 1], false),
            _ => ([0; 4], false),
        }
    }

    fn bn_tensors(&mut self, layers: &[(usize, &BnParams)]) -> Result<(), ExportError> {
        for &(li, bn) in layers {
            let c = bn.gamma.len();
            let mut ids = [0u16; 4];
            for (id, v) in ids.iter_mut().zip([&bn.gamma, &bn.beta, &bn.mean, &bn.var]) {
                *id = self.add(TensorOut::f32([c, 1, 1, 1], v, 0))?;
            }
            self.bn.push((li, ids, bn.eps));
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

/// Write an f32 file: the folded model with `R`-row weight blocks.
pub fn write_f32(
    m: &FoldedModel,
    block_rows: usize,
    pixel_scale: f32,
) -> Result<Vec<u8>, ExportError> {
    let r = check_block_rows(block_rows)?;
    let mut b = Builder::default();
    for (i, l) in m.layers.iter().enumerate() {
        let li = b.layer(i, &l.op, l.act, l.input, l.output)?;
        if l.op.is_weighted() {
            let (dims, blocked) = Builder::weight_dims(&l.op);
            let channels = l.op.out_channels();
            let ids = &mut [NO_TENSOR; 5];
            if blocked {
                let cols = l.weights.len() / channels;
                let packed = pack_rows(&l.weights, channels, cols, usize::from(r))?;
                ids[0] = b.add(TensorOut::f32(dims, &packed, r))?;
                let mut bias = l.bias.clone();
                bias.resize(channels.div_ceil(usize::from(r)) * usize::from(r), 0.0);
                ids[1] = b.add(TensorOut::f32([bias.len(), 1, 1, 1], &bias, 0))?;
            } else {
                ids[0] = b.add(TensorOut::f32(dims, &l.weights, 0))?;
                ids[1] = b.add(TensorOut::f32([channels, 1, 1, 1], &l.bias, 0))?;
            }
            b.layers[li].ids = *ids;
        }
    }
    let bns: Vec<(usize, &BnParams)> = m
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.bn.as_ref().map(|bn| (i, bn)))
        .collect();
    b.bn_tensors(&bns)?;
    assemble(
        b,
        false,
        m.input,
        m.classes,
        QParams {
            scale: 0.0,
            zero_point: 0,
        },
        pixel_scale,
    )
}

/// Write an int8 file: the quantized model with `R`-row weight blocks.
pub fn write_int8(m: &QuantModel, block_rows: usize) -> Result<Vec<u8>, ExportError> {
    let r = check_block_rows(block_rows)?;
    let ru = usize::from(r);
    let mut b = Builder::default();
    for (i, l) in m.layers.iter().enumerate() {
        let li = b.layer(i, &l.op, l.act, l.input, l.output)?;
        let mut ids = [NO_TENSOR; 5];
        if l.op.is_weighted() {
            let (dims, blocked) = Builder::weight_dims(&l.op);
            let channels = l.op.out_channels();
            if blocked {
                let cols = l.weights.len() / channels;
                let packed = pack_rows(&l.weights, channels, cols, ru)?;
                ids[0] = b.add(TensorOut::i8(dims, &packed, r))?;
                let mut bias = l.bias.clone();
                bias.resize(channels.div_ceil(ru) * ru, 0);
                ids[1] = b.add(TensorOut::i32([bias.len(), 1, 1, 1], &bias))?;
            } else {
                ids[0] = b.add(TensorOut::i8(dims, &l.weights, 0))?;
                ids[1] = b.add(TensorOut::i32([channels, 1, 1, 1], &l.bias))?;
            }
            ids[2] = b.add(TensorOut::i32([channels, 1, 1, 1], &l.multiplier))?;
            ids[3] = b.add(TensorOut::i32([channels, 1, 1, 1], &l.shift))?;
        }
        if !l.table.is_empty() {
            ids[4] = b.add(TensorOut::i8([256, 1, 1, 1], &l.table, 0))?;
        }
        let rec = &mut b.layers[li];
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
    let bns: Vec<(usize, &BnParams)> = m
        .layers
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.bn.as_ref().map(|bn| (i, bn)))
        .collect();
    b.bn_tensors(&bns)?;
    assemble(b, true, m.input, m.classes, m.input_q, m.pixel_scale)
}

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

/// Lay out tables and data, fill in the header and the CRC.
fn assemble(
    b: Builder,
    int8: bool,
    input: Hwc,
    classes: usize,
    input_q: QParams,
    pixel_scale: f32,
) -> Result<Vec<u8>, ExportError> {
    if b.layers.is_empty() || b.layers.len() > MAX_LAYERS {
        return Err(fmt_err(format!(
            "{} layers after folding; the format holds 1 to {MAX_LAYERS}",
            b.layers.len()
        )));
    }
    if !(pixel_scale.is_finite() && pixel_scale > 0.0) {
        return Err(fmt_err(format!(
            "pixel scale {pixel_scale} must be finite and positive"
        )));
    }
    let layer_off = HEADER_LEN;
    let tensor_off = layer_off + b.layers.len() * LAYER_LEN;
    let bn_off = tensor_off + b.tensors.len() * TENSOR_LEN;
    let tables_end = bn_off + b.bn.len() * BN_LEN;
    let mut offsets = Vec::with_capacity(b.tensors.len());
    let mut cursor = round16(tables_end);
    for t in &b.tensors {
        let at = round16(cursor);
        offsets.push(at);
        cursor = at + t.data.len();
    }
    let file_size = cursor.max(tables_end);
    if u32::try_from(file_size).is_err() {
        return Err(fmt_err(format!(
            "the model needs {file_size} bytes, more than a u32 offset reaches"
        )));
    }
    let mut out = vec![0u8; file_size];

    // Header.
    out[0..4].copy_from_slice(&MAGIC);
    put_u16(&mut out, 4, VERSION);
    let has_bn = !b.bn.is_empty();
    let flags = if int8 { FLAG_INT8 } else { 0 } | if has_bn { FLAG_HAS_BN } else { 0 };
    put_u16(&mut out, 6, flags);
    put_u32(&mut out, 8, file_size as u32);
    let arena = arena_bytes(int8, b.layers.iter().map(|l| (l.input, l.output)));
    put_u32(
        &mut out,
        16,
        u32::try_from(arena).map_err(|_| fmt_err(format!("arena of {arena} bytes")))?,
    );
    put_u16(&mut out, 20, b.layers.len() as u16);
    put_u16(&mut out, 22, b.tensors.len() as u16);
    put_u32(&mut out, 24, layer_off as u32);
    put_u32(&mut out, 28, tensor_off as u32);
    put_u32(&mut out, 32, if has_bn { bn_off as u32 } else { 0 });
    put_u16(&mut out, 36, u16_of(b.bn.len(), "BN count")?);
    put_u16(&mut out, 38, u16_of(classes, "classes")?);
    put_u16(&mut out, 40, u16_of(input.h, "input height")?);
    put_u16(&mut out, 42, u16_of(input.w, "input width")?);
    put_u16(&mut out, 44, u16_of(input.c, "input channels")?);
    put_f32(&mut out, 48, input_q.scale);
    put_i32(&mut out, 52, input_q.zero_point);
    put_f32(&mut out, 56, pixel_scale);

    for (i, l) in b.layers.iter().enumerate() {
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
            // Checked by `Builder::layer`.
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
    for (i, (t, &data_at)) in b.tensors.iter().zip(&offsets).enumerate() {
        let at = tensor_off + i * TENSOR_LEN;
        out[at] = t.dtype;
        out[at + 1] = u8::from(t.block != 0);
        out[at + 2] = t.block;
        for (k, &d) in t.dims.iter().enumerate() {
            put_u32(&mut out, at + 4 + 4 * k, d);
        }
        put_u32(&mut out, at + 20, data_at as u32);
        put_u32(&mut out, at + 24, t.data.len() as u32);
        out[data_at..data_at + t.data.len()].copy_from_slice(&t.data);
    }
    for (j, &(layer, ids, eps)) in b.bn.iter().enumerate() {
        let at = bn_off + j * BN_LEN;
        put_u16(&mut out, at, layer as u16);
        for (k, &id) in ids.iter().enumerate() {
            put_u16(&mut out, at + 2 + 2 * k, id);
        }
        put_f32(&mut out, at + 12, eps);
    }
    // Bytes 12..16 are still zero: the CRC covers them as zero.
    let crc = crc32fast::hash(&out);
    put_u32(&mut out, 12, crc);
    Ok(out)
}

// ---------------------------------------------------------------- reading

/// Validate `bytes` with core's parser, the device's own
/// (`normcore::model::Model::parse`), from a 16-aligned copy.
pub fn core_check(bytes: &[u8]) -> Result<(), ExportError> {
    let mut words = vec![0u128; bytes.len().div_ceil(16)];
    let buf: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    buf[..bytes.len()].copy_from_slice(bytes);
    normcore::model::Model::parse(&buf[..bytes.len()])
        .map(|_| ())
        .map_err(|e| fmt_err(format!("core's model parser rejects the file: {e}")))
}

/// The header fields of a file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FileHeader {
    /// int8 (else f32).
    pub int8: bool,
    /// Total bytes.
    pub file_size: u32,
    /// Stored CRC-32.
    pub crc32: u32,
    /// Arena bytes.
    pub arena_bytes: u32,
    /// Offset of the layer table.
    pub layer_table_offset: u32,
    /// Offset of the tensor table.
    pub tensor_table_offset: u32,
    /// Offset of the BN table (0: none).
    pub bn_table_offset: u32,
    /// Classes.
    pub classes: usize,
    /// Input shape.
    pub input: Hwc,
    /// int8 input quantization (zeros in f32 files).
    pub input_q: QParams,
    /// Stored value per raw input unit.
    pub pixel_scale: f32,
}

/// A tensor record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorInfo {
    /// Dtype code.
    pub dtype: u8,
    /// Block rows (0: plain).
    pub block: u8,
    /// Logical dims.
    pub dims: [u32; 4],
    /// Data offset in the file.
    pub offset: u32,
    /// Data length in bytes.
    pub len: u32,
}

/// A layer record, raw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerInfo {
    /// Op code.
    pub op: u8,
    /// Activation code.
    pub act: u8,
    /// Flags.
    pub flags: u16,
    /// Input shape.
    pub input: Hwc,
    /// Output shape.
    pub output: Hwc,
    /// Kernel h/w, stride h/w, padding top/bottom/left/right.
    pub window: [u8; 8],
    /// Weight, bias, multiplier, shift, table tensor indices.
    pub ids: [u16; 5],
    /// Output scale, output zero point, requant zero point, clamps.
    pub quant: (f32, i32, i32, i32, i32),
}

/// A parsed `.ncm` file (this module's own reader: structure, CRC, bounds
/// and sizes; `normcore::model::Model::parse` is the device's validator).
#[derive(Debug, Clone)]
pub struct NcmFile {
    /// Header.
    pub header: FileHeader,
    /// Layer records.
    pub layers: Vec<LayerInfo>,
    /// Tensor records.
    pub tensors: Vec<TensorInfo>,
    /// BN records: layer, γ/β/mean/var tensor ids, ε.
    pub bn: Vec<(usize, [u16; 4], f32)>,
    bytes: Vec<u8>,
}

/// The model a file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// An f32 file.
    F32(FoldedModel),
    /// An int8 file.
    Int8(QuantModel),
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    u32_at(b, at) as i32
}
fn f32_at(b: &[u8], at: usize) -> f32 {
    f32::from_bits(u32_at(b, at))
}
fn hwc_at(b: &[u8], at: usize) -> Hwc {
    Hwc {
        h: usize::from(u16_at(b, at)),
        w: usize::from(u16_at(b, at + 2)),
        c: usize::from(u16_at(b, at + 4)),
    }
}

/// The CRC the header must hold: CRC-32 of the file with bytes 12..16 zero.
pub fn file_crc(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..12.min(bytes.len())]);
    if bytes.len() > 12 {
        h.update(&[0u8; 4][..(bytes.len() - 12).min(4)]);
    }
    if bytes.len() > 16 {
        h.update(&bytes[16..]);
    }
    h.finalize()
}

impl NcmFile {
    /// Parse and check a file: magic, version, flags, size, CRC, reserved
    /// header fields, table bounds, and every tensor's alignment, bounds,
    /// order and length.
    pub fn parse(bytes: &[u8]) -> Result<NcmFile, ExportError> {
        let bad = |m: &str| fmt_err(format!("not a valid .ncm file: {m}"));
        if bytes.len() < HEADER_LEN || bytes[..4] != MAGIC {
            return Err(bad("no NCMF header"));
        }
        let version = u16_at(bytes, 4);
        if version != VERSION {
            return Err(bad(&format!(
                "format version {version}; this build reads version {VERSION}"
            )));
        }
        let flags = u16_at(bytes, 6);
        if flags & !(FLAG_INT8 | FLAG_HAS_BN) != 0 {
            return Err(bad(&format!("unknown header flags {flags:#06x}")));
        }
        let file_size = u32_at(bytes, 8);
        if file_size as usize != bytes.len() {
            return Err(bad(&format!(
                "header says {file_size} bytes, the file has {}",
                bytes.len()
            )));
        }
        let crc = u32_at(bytes, 12);
        if file_crc(bytes) != crc {
            return Err(bad("CRC mismatch: the file is damaged"));
        }
        if u16_at(bytes, 46) != 0 || u32_at(bytes, 60) != 0 {
            return Err(bad("reserved header fields are not zero"));
        }
        let int8 = flags & FLAG_INT8 != 0;
        let header = FileHeader {
            int8,
            file_size,
            crc32: crc,
            arena_bytes: u32_at(bytes, 16),
            layer_table_offset: u32_at(bytes, 24),
            tensor_table_offset: u32_at(bytes, 28),
            bn_table_offset: u32_at(bytes, 32),
            classes: usize::from(u16_at(bytes, 38)),
            input: hwc_at(bytes, 40),
            input_q: QParams {
                scale: f32_at(bytes, 48),
                zero_point: i32_at(bytes, 52),
            },
            pixel_scale: f32_at(bytes, 56),
        };
        let (nl, nt, nb) = (
            usize::from(u16_at(bytes, 20)),
            usize::from(u16_at(bytes, 22)),
            usize::from(u16_at(bytes, 36)),
        );
        if nl == 0 || nl > MAX_LAYERS || nt > MAX_TENSORS {
            return Err(bad("layer or tensor count out of range"));
        }
        if (flags & FLAG_HAS_BN != 0) != (nb > 0) || (nb == 0 && header.bn_table_offset != 0) {
            return Err(bad("BN flag, count and offset disagree"));
        }
        let table = |off: u32, n: usize, size: usize| -> Result<(usize, usize), ExportError> {
            let start = off as usize;
            let end = start + n * size;
            if start % 4 != 0 || start < HEADER_LEN || end > bytes.len() {
                return Err(bad("a table lies outside the file or is misaligned"));
            }
            Ok((start, end))
        };
        let lt = table(header.layer_table_offset, nl, LAYER_LEN)?;
        let tt = table(header.tensor_table_offset, nt, TENSOR_LEN)?;
        let bt = if nb > 0 {
            table(header.bn_table_offset, nb, BN_LEN)?
        } else {
            (0, 0)
        };
        let overlap = |a: (usize, usize), b: (usize, usize)| a.0 < b.1 && b.0 < a.1;
        if overlap(lt, tt) || (nb > 0 && (overlap(lt, bt) || overlap(tt, bt))) {
            return Err(bad("tables overlap"));
        }
        let data_start = lt.1.max(tt.1).max(bt.1);

        let mut tensors = Vec::with_capacity(nt);
        let mut prev_end = data_start;
        for i in 0..nt {
            let at = tt.0 + i * TENSOR_LEN;
            let r = &bytes[at..at + TENSOR_LEN];
            let t = TensorInfo {
                dtype: r[0],
                block: r[2],
                dims: [u32_at(r, 4), u32_at(r, 8), u32_at(r, 12), u32_at(r, 16)],
                offset: u32_at(r, 20),
                len: u32_at(r, 24),
            };
            let tbad = |m: &str| bad(&format!("tensor {i}: {m}"));
            let size = match t.dtype {
                DTYPE_F32 | DTYPE_I32 => 4,
                DTYPE_I8 => 1,
                d => return Err(tbad(&format!("unknown dtype {d}"))),
            };
            match (r[1], r[2]) {
                (0, 0) | (1, 4 | 8) => {}
                _ => return Err(tbad("unknown layout or block size")),
            }
            if r[3] != 0 || u32_at(r, 28) != 0 {
                return Err(tbad("reserved fields are not zero"));
            }
            let logical: usize = t.dims.iter().map(|&d| d as usize).product();
            if logical == 0 {
                return Err(tbad("a dimension is 0"));
            }
            let stored = if t.block > 0 {
                let rows = t.dims[0] as usize;
                rows.div_ceil(usize::from(t.block)) * usize::from(t.block) * (logical / rows)
            } else {
                logical
            };
            if stored * size != t.len as usize {
                return Err(tbad("length is not stored elements × dtype size"));
            }
            let (start, end) = (t.offset as usize, t.offset as usize + t.len as usize);
            if start % ALIGN != 0 {
                return Err(tbad("data offset is not 16-aligned"));
            }
            if start < prev_end || end > bytes.len() {
                return Err(tbad("data overlaps, is out of order or outside the file"));
            }
            prev_end = end;
            tensors.push(t);
        }
        let layers = (0..nl)
            .map(|i| {
                let r = &bytes[lt.0 + i * LAYER_LEN..lt.0 + (i + 1) * LAYER_LEN];
                let mut window = [0u8; 8];
                window.copy_from_slice(&r[16..24]);
                let mut ids = [0u16; 5];
                for (k, id) in ids.iter_mut().enumerate() {
                    *id = u16_at(r, 24 + 2 * k);
                }
                LayerInfo {
                    op: r[0],
                    act: r[1],
                    flags: u16_at(r, 2),
                    input: hwc_at(r, 4),
                    output: hwc_at(r, 10),
                    window,
                    ids,
                    quant: (
                        f32_at(r, 36),
                        i32_at(r, 40),
                        i32_at(r, 44),
                        i32_at(r, 48),
                        i32_at(r, 52),
                    ),
                }
            })
            .collect::<Vec<_>>();
        for (i, l) in layers.iter().enumerate() {
            let r = &bytes[lt.0 + i * LAYER_LEN..];
            if u16_at(r, 34) != 0 || u32_at(r, 56) != 0 || u32_at(r, 60) != 0 {
                return Err(bad(&format!("layer {i}: reserved fields are not zero")));
            }
            if l.ids
                .iter()
                .any(|&id| id != NO_TENSOR && usize::from(id) >= nt)
            {
                return Err(bad(&format!("layer {i}: tensor index past the table")));
            }
        }
        let bn = (0..nb)
            .map(|j| {
                let r = &bytes[bt.0 + j * BN_LEN..bt.0 + (j + 1) * BN_LEN];
                let ids = [u16_at(r, 2), u16_at(r, 4), u16_at(r, 6), u16_at(r, 8)];
                (usize::from(u16_at(r, 0)), ids, f32_at(r, 12))
            })
            .collect::<Vec<_>>();
        for (j, (layer, ids, _)) in bn.iter().enumerate() {
            if *layer >= nl || ids.iter().any(|&id| usize::from(id) >= nt) {
                return Err(bad(&format!("BN record {j}: index out of range")));
            }
        }
        Ok(NcmFile {
            header,
            layers,
            tensors,
            bn,
            bytes: bytes.to_vec(),
        })
    }

    /// The raw bytes of tensor `id` (`None` for [`NO_TENSOR`]).
    pub fn tensor_data(&self, id: u16) -> Option<&[u8]> {
        let t = self.tensors.get(usize::from(id))?;
        self.bytes
            .get(t.offset as usize..t.offset as usize + t.len as usize)
    }

    /// Stored bytes of layer `i`'s tensors (weights, bias, requantization, table).
    pub fn layer_bytes(&self, i: usize) -> usize {
        self.layers[i]
            .ids
            .iter()
            .filter_map(|&id| self.tensors.get(usize::from(id)))
            .map(|t| t.len as usize)
            .sum()
    }

    /// Stored bytes of the BN statistics.
    pub fn bn_bytes(&self) -> usize {
        self.bn
            .iter()
            .flat_map(|(_, ids, _)| ids.iter())
            .filter_map(|&id| self.tensors.get(usize::from(id)))
            .map(|t| t.len as usize)
            .sum()
    }

    fn f32s(&self, id: u16) -> Result<Vec<f32>, ExportError> {
        self.typed(
            id,
            DTYPE_F32,
            |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            4,
        )
    }
    fn i32s(&self, id: u16) -> Result<Vec<i32>, ExportError> {
        self.typed(
            id,
            DTYPE_I32,
            |c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            4,
        )
    }
    fn i8s(&self, id: u16) -> Result<Vec<i8>, ExportError> {
        self.typed(id, DTYPE_I8, |c| c[0] as i8, 1)
    }
    fn typed<T>(
        &self,
        id: u16,
        dtype: u8,
        f: impl Fn(&[u8]) -> T,
        size: usize,
    ) -> Result<Vec<T>, ExportError> {
        let t = self
            .tensors
            .get(usize::from(id))
            .ok_or_else(|| fmt_err(format!("missing tensor {id}")))?;
        if t.dtype != dtype {
            return Err(fmt_err(format!("tensor {id} has dtype {}", t.dtype)));
        }
        let data = self.tensor_data(id).unwrap_or(&[]);
        Ok(data.chunks_exact(size).map(f).collect())
    }

    /// The op of layer `i`, rebuilt from its record and checked against its shapes.
    fn layer_op(&self, i: usize) -> Result<LayerOp, ExportError> {
        let l = &self.layers[i];
        let g = |k: usize| usize::from(l.window[k]);
        let window = Window {
            kernel_h: g(0),
            kernel_w: g(1),
            stride_h: g(2),
            stride_w: g(3),
            padding: Padding {
                top: g(4),
                bottom: g(5),
                left: g(6),
                right: g(7),
            },
        };
        let (x, y) = (l.input, l.output);
        let geo = |e: normcore::Error| fmt_err(format!("layer {i}: bad geometry: {e}"));
        let op = match l.op {
            1 => LayerOp::Dense(Dense::new(x.len(), y.c).map_err(geo)?),
            2 => LayerOp::Conv(Conv2d::new(x.h, x.w, x.c, y.c, window).map_err(geo)?),
            3 => LayerOp::Depthwise(DepthwiseConv2d::new(x.h, x.w, x.c, window).map_err(geo)?),
            4 | 5 => {
                let kind = if l.op == 4 {
                    PoolKind::Max
                } else {
                    PoolKind::Average
                };
                LayerOp::Pool(Pool2d::new(kind, x.h, x.w, x.c, window).map_err(geo)?)
            }
            6 => LayerOp::GlobalAvgPool,
            7 => LayerOp::Activation,
            other => return Err(fmt_err(format!("layer {i}: unknown op {other}"))),
        };
        let expect = match op {
            LayerOp::Dense(d) => Hwc {
                h: 1,
                w: 1,
                c: d.outputs,
            },
            LayerOp::Conv(c) => hwc(c.output_shape(1).map_err(geo)?),
            LayerOp::Depthwise(d) => hwc(d.output_shape(1).map_err(geo)?),
            LayerOp::Pool(p) => hwc(p.output_shape(1).map_err(geo)?),
            LayerOp::GlobalAvgPool => Hwc { h: 1, w: 1, c: x.c },
            LayerOp::Activation => x,
        };
        if expect != y {
            return Err(fmt_err(format!(
                "layer {i}: output {y} but the op computes {expect}"
            )));
        }
        Ok(op)
    }

    /// Rebuild the model the file holds (weights unblocked, bias unpadded),
    /// checking the shape chain and the arena size.
    pub fn decode(&self) -> Result<Decoded, ExportError> {
        let h = &self.header;
        let mut shape = h.input;
        let mut bn_of: Vec<Option<BnParams>> = vec![None; self.layers.len()];
        for &(layer, ids, eps) in &self.bn {
            bn_of[layer] = Some(BnParams {
                gamma: self.f32s(ids[0])?,
                beta: self.f32s(ids[1])?,
                mean: self.f32s(ids[2])?,
                var: self.f32s(ids[3])?,
                eps,
            });
        }
        let mut folded = Vec::new();
        let mut quant = Vec::new();
        let mut in_q = h.input_q;
        for (i, l) in self.layers.iter().enumerate() {
            if l.input != shape {
                return Err(fmt_err(format!(
                    "layer {i}: input {} is not the previous output {shape}",
                    l.input
                )));
            }
            let op = self.layer_op(i)?;
            let act = activation_from_code(l.act)
                .ok_or_else(|| fmt_err(format!("layer {i}: unknown activation {}", l.act)))?;
            let (mut weights_f, mut bias_f, mut weights_q, mut bias_q) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            if op.is_weighted() {
                let channels = op.out_channels();
                let wt = self.tensors[usize::from(l.ids[0])];
                let r = usize::from(wt.block);
                let cols = wt.dims.iter().map(|&d| d as usize).product::<usize>() / channels;
                if h.int8 {
                    let w = self.i8s(l.ids[0])?;
                    weights_q = if r > 0 {
                        unpack_rows(&w, channels, cols, r)?
                    } else {
                        w
                    };
                    bias_q = self.i32s(l.ids[1])?;
                    bias_q.truncate(channels);
                } else {
                    let w = self.f32s(l.ids[0])?;
                    weights_f = if r > 0 {
                        unpack_rows(&w, channels, cols, r)?
                    } else {
                        w
                    };
                    bias_f = self.f32s(l.ids[1])?;
                    bias_f.truncate(channels);
                }
            }
            if h.int8 {
                let (scale, zp, requant_zp, clamp_min, clamp_max) = l.quant;
                let out_q = QParams {
                    scale,
                    zero_point: zp,
                };
                let opt_i32 = |id: u16| {
                    if id == NO_TENSOR {
                        Ok(Vec::new())
                    } else {
                        self.i32s(id)
                    }
                };
                quant.push(QLayer {
                    op,
                    act,
                    input: l.input,
                    output: l.output,
                    input_q: in_q,
                    output_q: out_q,
                    requant_zp,
                    clamp_min,
                    clamp_max,
                    zp_folded: l.flags & LAYER_ZP_FOLDED != 0,
                    weights: weights_q,
                    bias: bias_q,
                    multiplier: opt_i32(l.ids[2])?,
                    shift: opt_i32(l.ids[3])?,
                    table: if l.ids[4] == NO_TENSOR {
                        Vec::new()
                    } else {
                        self.i8s(l.ids[4])?
                    },
                    bn: bn_of[i].take(),
                });
                in_q = out_q;
            } else {
                folded.push(FoldedLayer {
                    op,
                    act,
                    input: l.input,
                    output: l.output,
                    weights: weights_f,
                    bias: bias_f,
                    bn: bn_of[i].take(),
                });
            }
            shape = l.output;
        }
        if shape
            != (Hwc {
                h: 1,
                w: 1,
                c: h.classes,
            })
        {
            return Err(fmt_err(format!(
                "the last layer produces {shape}, not 1x1x{}",
                h.classes
            )));
        }
        let arena = arena_bytes(h.int8, self.layers.iter().map(|l| (l.input, l.output)));
        if arena != h.arena_bytes as usize {
            return Err(fmt_err(format!(
                "arena_bytes is {} but the memory plan needs {arena}",
                h.arena_bytes
            )));
        }
        Ok(if h.int8 {
            Decoded::Int8(QuantModel {
                name: String::new(),
                input: h.input,
                classes: h.classes,
                input_q: h.input_q,
                pixel_scale: h.pixel_scale,
                layers: quant,
            })
        } else {
            Decoded::F32(FoldedModel {
                name: String::new(),
                input: h.input,
                classes: h.classes,
                layers: folded,
            })
        })
    }
}

fn hwc(s: normcore::Shape) -> Hwc {
    Hwc {
        h: s.h,
        w: s.w,
        c: s.c,
    }
}
