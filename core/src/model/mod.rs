//! The `.ncm` model file (specified in `docs/FORMAT.md`): zero-copy parsing
//! and validation.
//!
//! [`Model::parse`] checks everything before anything is used: magic,
//! version, flags, size, CRC-32, every table's bounds, every tensor's dtype,
//! layout, dims, alignment and extent, every layer's shape chain, geometry,
//! tensors and quantization parameters, the BN records and the arena size.
//! It never panics and never reads out of bounds (all reads are checked
//! slice accesses). The result borrows the buffer: weights stay in flash.
//!
//! The memory plan (FORMAT.md, "Memory plan") is recomputed here and stored
//! per layer as the byte offsets of its input and output in the arena.

mod error;
mod parse;

pub use error::{HeaderFault, LayerFault, ModelError, Role, Table, TensorFault};

use crate::kernels::requant::OutputStage;
use crate::layers::{
    Activation, Conv2d, Dense, DepthwiseConv2d, Padding, Pool2d, PoolKind, Window,
};
use crate::tensor::Shape;

/// Maximum layers in a model (the size of the parsed layer list).
pub const MAX_LAYERS: usize = 64;
/// Maximum tensors in a model.
pub const MAX_TENSORS: usize = 1024;
/// Bytes of the header.
pub const HEADER_LEN: usize = 64;
/// Bytes of a layer record.
pub const LAYER_LEN: usize = 64;
/// Bytes of a tensor record.
pub const TENSOR_LEN: usize = 32;
/// Bytes of a BN record.
pub const BN_LEN: usize = 16;
/// `"NCMF"`.
pub const MAGIC: [u8; 4] = *b"NCMF";
/// The format version this reader implements.
pub const VERSION: u16 = 1;
/// Header flag: int8 model (else f32).
pub const FLAG_INT8: u16 = 1;
/// Header flag: BN table present.
pub const FLAG_HAS_BN: u16 = 2;
/// Layer flag: the input zero point is folded into the bias.
pub const LAYER_ZP_FOLDED: u16 = 1;
/// "No tensor" in a layer record.
pub const NO_TENSOR: u16 = 0xFFFF;
/// Alignment of tensor data and arena regions.
pub const ALIGN: usize = 16;

/// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), table-driven.
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32_update(0xFFFF_FFFF, bytes) ^ 0xFFFF_FFFF
}

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

#[inline(never)]
fn crc32_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crate::kernels::unroll_barrier(); // one compact loop (code size)
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// The CRC the header must hold: the file's CRC-32 with bytes 12..16 as zero.
pub fn file_crc(bytes: &[u8]) -> u32 {
    let head = bytes.get(..12).unwrap_or(bytes);
    let tail = bytes.get(16..).unwrap_or(&[]);
    let crc = crc32_update(0xFFFF_FFFF, head);
    let crc = crc32_update(crc, &[0; 4][..bytes.len().saturating_sub(12).min(4)]);
    crc32_update(crc, tail) ^ 0xFFFF_FFFF
}

/// Little-endian field reader over one fixed-size record: with constant
/// offsets every read compiles to plain loads (no bounds checks), which
/// keeps the parser small.
#[derive(Clone, Copy)]
struct Rec<'a, const N: usize>(&'a [u8; N]);

impl<'a, const N: usize> Rec<'a, N> {
    /// The `N`-byte record at `at` in `bytes`, if it is all there.
    fn at(bytes: &'a [u8], at: usize) -> Option<Self> {
        bytes.get(at..)?.first_chunk::<N>().map(Rec)
    }
    fn u8(&self, at: usize) -> u8 {
        self.0.get(at).copied().unwrap_or(0)
    }
    fn u16(&self, at: usize) -> u16 {
        match self.0.get(at..at + 2) {
            Some(&[a, b]) => u16::from_le_bytes([a, b]),
            _ => 0,
        }
    }
    fn u32(&self, at: usize) -> u32 {
        match self.0.get(at..at + 4) {
            Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
            _ => 0,
        }
    }
    fn i32(&self, at: usize) -> i32 {
        self.u32(at) as i32
    }
    fn f32(&self, at: usize) -> f32 {
        f32::from_bits(self.u32(at))
    }
}

/// Numeric kind of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kind {
    /// f32 weights and activations.
    F32,
    /// int8 weights and activations, i32 accumulators.
    Int8,
}

/// Element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DType {
    /// IEEE binary32.
    F32,
    /// Signed byte.
    I8,
    /// Signed 32-bit integer.
    I32,
    /// Two int8 weights in one little-endian 32-bit word, `lo + 2^24·hi`
    /// (both in `[-127, 127]`): the pair form of row-blocked int8 dense
    /// and conv weights (FORMAT.md). Two bytes per element.
    I8Pair,
}

impl DType {
    fn from_code(c: u8) -> Option<Self> {
        match c {
            1 => Some(DType::F32),
            2 => Some(DType::I8),
            3 => Some(DType::I32),
            4 => Some(DType::I8Pair),
            _ => None,
        }
    }
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I8Pair => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// A validated tensor record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct TensorDesc {
    /// Element type.
    pub dtype: DType,
    /// Row-blocked (FORMAT.md) with this many rows per block, or plain (0).
    pub block_rows: u8,
    /// Logical dims.
    pub dims: [u32; 4],
    /// Byte offset of the data in the file.
    pub offset: u32,
    /// Byte length of the data.
    pub len: u32,
}

impl TensorDesc {
    /// Logical element count (product of dims).
    pub fn logical_len(&self) -> usize {
        self.dims.iter().map(|&d| d as usize).product()
    }
}

/// Typed, borrowed tensor data.
#[derive(Debug, Clone, Copy)]
pub enum Data<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// i8 elements.
    I8(&'a [i8]),
    /// i32 elements.
    I32(&'a [i32]),
    /// int8 weights in pair words ([`DType::I8Pair`]): each word holds two
    /// elements, `lo + 2^24·hi`.
    I8Pairs(&'a [i32]),
}

/// What a layer computes (geometry from `normcore::layers`). The host's
/// exporter describes its folded networks with the same type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Op {
    /// Fully connected.
    Dense(Dense),
    /// 2-d convolution.
    Conv(Conv2d),
    /// Depthwise convolution.
    Depthwise(DepthwiseConv2d),
    /// Max or average pooling.
    Pool(Pool2d),
    /// Global average pooling.
    GlobalAvgPool,
    /// A standalone activation (the layer's `activation`).
    Activation,
}

impl Op {
    /// Dense, conv or depthwise: the ops with weights.
    pub fn is_weighted(&self) -> bool {
        matches!(self, Op::Dense(_) | Op::Conv(_) | Op::Depthwise(_))
    }

    /// Output channels of a weighted op (rows of its weight matrix); 0 otherwise.
    pub fn out_channels(&self) -> usize {
        match self {
            Op::Dense(d) => d.outputs,
            Op::Conv(c) => c.out_c,
            Op::Depthwise(d) => d.channels,
            _ => 0,
        }
    }

    /// The op code in the file.
    pub fn code(&self) -> u8 {
        match self {
            Op::Dense(_) => 1,
            Op::Conv(_) => 2,
            Op::Depthwise(_) => 3,
            Op::Pool(p) if p.kind == PoolKind::Max => 4,
            Op::Pool(_) => 5,
            Op::GlobalAvgPool => 6,
            Op::Activation => 7,
        }
    }

    /// Short name.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Dense(_) => "dense",
            Op::Conv(_) => "conv2d",
            Op::Depthwise(_) => "depthwise",
            Op::Pool(p) if p.kind == PoolKind::Max => "maxpool",
            Op::Pool(_) => "avgpool",
            Op::GlobalAvgPool => "global_avgpool",
            Op::Activation => "activation",
        }
    }

    /// Multiply-accumulates of one sample, saturated at `usize::MAX` (a
    /// valid model can exceed 2^32 on a 32-bit target).
    pub fn macs(&self, output: Shape) -> usize {
        let product = |v: &[usize]| v.iter().fold(1usize, |a, &b| a.saturating_mul(b));
        match self {
            Op::Dense(d) => product(&[d.inputs, d.outputs]),
            Op::Conv(c) => product(&[
                output.h,
                output.w,
                c.out_c,
                c.window.kernel_h,
                c.window.kernel_w,
                c.in_c,
            ]),
            Op::Depthwise(d) => product(&[
                output.h,
                output.w,
                d.channels,
                d.window.kernel_h,
                d.window.kernel_w,
            ]),
            _ => 0,
        }
    }
}

/// Activation code in the file.
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

/// int8 quantization of a layer's output.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct QuantOut {
    /// Output scale.
    pub scale: f32,
    /// Output zero point.
    pub zero_point: i32,
    /// Zero point added after requantization.
    pub requant_zero_point: i32,
    /// Lower clamp.
    pub clamp_min: i32,
    /// Upper clamp.
    pub clamp_max: i32,
}

/// A validated layer with its tensors borrowed from the file.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// The operation.
    pub op: Op,
    /// Fused (or standalone) activation.
    pub activation: Option<Activation>,
    /// int8: the input zero point is folded into the bias.
    pub zp_folded: bool,
    /// Input shape (batch 1).
    pub input: Shape,
    /// Output shape (batch 1).
    pub output: Shape,
    /// Weights (blocked for dense/conv), if the op has any.
    pub weights: Option<Data<'a>>,
    /// Rows per weight block (dense/conv), else 0.
    pub block_rows: usize,
    /// Bias (padded to whole blocks for dense/conv).
    pub bias: Option<Data<'a>>,
    /// int8 requantization multipliers (Q31 bits) and shifts.
    pub requant: Option<(&'a [i32], &'a [i32])>,
    /// int8 sigmoid/tanh table.
    pub table: Option<&'a [i8; 256]>,
    /// int8 output quantization (zeros in f32 models).
    pub quant: QuantOut,
    /// Arena byte offset of the input.
    pub in_offset: usize,
    /// Arena byte offset of the output.
    pub out_offset: usize,
    /// Indices of the tensors (weight, bias, multiplier, shift, table) as
    /// stored, `NO_TENSOR` when absent: for tools that rewrite the file.
    pub tensor_ids: [u16; 5],
}

impl Layer<'_> {
    /// The int8 output stage (requantization, clamps, table).
    pub fn output_stage(&self) -> Option<OutputStage<'_>> {
        let (multipliers, shifts) = self.requant?;
        Some(OutputStage {
            multipliers,
            shifts,
            zero_point: self.quant.requant_zero_point,
            clamp_min: self.quant.clamp_min,
            clamp_max: self.quant.clamp_max,
            lut: self.table,
        })
    }
}

/// A validated BN record: the statistics a folded layer was folded with.
#[derive(Debug, Clone, Copy)]
pub struct BnRecord<'a> {
    /// The layer the BN was folded into.
    pub layer: usize,
    /// γ.
    pub gamma: &'a [f32],
    /// β.
    pub beta: &'a [f32],
    /// E\[x\].
    pub mean: &'a [f32],
    /// Var\[x\] (unbiased).
    pub var: &'a [f32],
    /// ε.
    pub eps: f32,
    /// Tensor indices (γ, β, E\[x\], Var\[x\]) as stored.
    pub tensor_ids: [u16; 4],
}

impl BnRecord<'_> {
    /// The record as core's BN inference state.
    pub fn state(&self) -> crate::batchnorm::BnState<'_> {
        crate::batchnorm::BnState {
            gamma: self.gamma,
            beta: self.beta,
            mean: self.mean,
            var: self.var,
            eps: self.eps,
        }
    }
}

/// Model-wide facts from the header.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Header {
    /// f32 or int8.
    pub kind: Kind,
    /// Arena bytes the engine needs.
    pub arena_bytes: usize,
    /// Input shape (batch 1).
    pub input: Shape,
    /// Output classes.
    pub classes: usize,
    /// int8 input scale (0 for f32).
    pub input_scale: f32,
    /// int8 input zero point (0 for f32).
    pub input_zero_point: i32,
    /// Stored value per raw input unit of the training data.
    pub pixel_scale: f32,
}

/// A parsed, validated model borrowing its file.
///
/// It holds only the header's facts and where the tables are (a few dozen
/// bytes, so that a device keeps it on a small stack): [`Model::parse`]
/// validated every record once, and [`Model::layer`] decodes a record again
/// when it is needed, without the checks: about 460 instructions for an
/// int8 layer with five tensors and 350 for an f32 one on a Cortex-M4
/// (`cargo xtask bench firmware`, `model_layer`), and no RAM.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    bytes: &'a [u8],
    header: Header,
    layer_count: usize,
    tensor_count: usize,
    bn_count: usize,
    layer_table: usize,
    tensor_table: usize,
    bn_table: usize,
}

fn round16(v: usize) -> Option<usize> {
    v.checked_add(ALIGN - 1).map(|x| x & !(ALIGN - 1))
}

/// Bytes of an activation tensor of `shape` for a model of `kind`.
pub fn activation_bytes(kind: Kind, shape: Shape) -> Option<usize> {
    let n = shape.len().ok()?;
    n.checked_mul(match kind {
        Kind::F32 => 4,
        Kind::Int8 => 1,
    })
}

/// The arena size for a chain of layer `(input, output)` shapes (FORMAT.md,
/// "Memory plan"): `max_i round16(in_i) + round16(out_i)` bytes.
pub fn arena_size(kind: Kind, shapes: impl Iterator<Item = (Shape, Shape)>) -> Option<usize> {
    let mut arena = 0usize;
    for (i, o) in shapes {
        let need = round16(activation_bytes(kind, i)?)?
            .checked_add(round16(activation_bytes(kind, o)?)?)?;
        arena = arena.max(need);
    }
    Some(arena)
}

/// Arena offsets `(input, output)` of layer `index` in an arena of `arena`
/// bytes: even layers read at 0 and write at the end, odd layers the reverse.
pub fn region_offsets(
    kind: Kind,
    arena: usize,
    index: usize,
    input: Shape,
    output: Shape,
) -> Option<(usize, usize)> {
    let end =
        |s: Shape| -> Option<usize> { arena.checked_sub(round16(activation_bytes(kind, s)?)?) };
    if index % 2 == 0 {
        Some((0, end(output)?))
    } else {
        Some((end(input)?, 0))
    }
}

#[cfg(test)]
mod tests;
