//! The `.ncm` model file (specified in `docs/FORMAT.md`): its one
//! definition, its reader and its writer.
//!
//! - [`layout`]: the records (header, layer, tensor, BN) as `#[repr(C)]`
//!   plain-old-data structs, the codes as `#[repr(u8)]` enums, every
//!   alignment and limit a named constant. Nothing else spells an offset.
//! - [`plan`]: the memory plan (activation bytes, arena regions, the arena
//!   size), computed once for the writer, the parser and the engine.
//! - [`Model::parse`]: zero-copy validation. It checks everything before
//!   anything is used: magic, version, flags, size, CRC-32, every table's
//!   bounds, every tensor's dtype, layout, dims, alignment and extent,
//!   every layer's shape chain, geometry, tensors and quantization
//!   parameters, the BN records and the arena size. It never panics and
//!   never reads out of bounds (all reads are checked slice accesses). The
//!   result borrows the buffer: weights stay in flash.
//! - [`mod@write`]: the writer, into the caller's buffer without allocation,
//!   and in-place updates of one tensor or one BN record (CRC refreshed).
//!
//! `core/tests/format_spec.rs` holds FORMAT.md's tables to [`layout`];
//! `model/tests.rs` holds the parser and the writer to an independent
//! writer of the document.

mod error;
pub mod layout;
mod parse;
pub mod plan;
pub mod write;

pub use error::{Field, HeaderFault, LayerFault, ModelError, Role, Table, TensorFault, WriteError};
pub use layout::{
    ActCode, DType, LayoutCode, OpCode, Slot, BN_LEN, BUFFER_ALIGN, DATA_ALIGN, FLAG_HAS_BN,
    FLAG_INT8, HEADER_LEN, LAYER_LEN, LAYER_ZP_FOLDED, MAGIC, MAX_LAYERS, MAX_TENSORS, NO_TENSOR,
    TENSOR_LEN, VERSION,
};
pub use write::{BnDesc, LayerDesc, ModelDesc};

use crate::kernels::requant::OutputStage;
use crate::layers::{Activation, Conv2d, Dense, DepthwiseConv2d, Pool2d, PoolKind};
use crate::tensor::Shape;

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

/// A running CRC-32: [`crc32`] over bytes fed in pieces (the firmware's
/// output digests, the serial protocol's frames).
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// The CRC of nothing yet.
    pub const fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }

    /// Feed `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = crc32_update(self.0, bytes);
    }

    /// The CRC of everything fed so far.
    pub fn value(&self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}

/// The CRC the header must hold: the file's CRC-32 with the header's CRC
/// field ([`layout::CRC_FIELD`]) taken as zero.
pub fn file_crc(bytes: &[u8]) -> u32 {
    let at = layout::CRC_FIELD;
    let head = bytes.get(..at.start).unwrap_or(bytes);
    let tail = bytes.get(at.end..).unwrap_or(&[]);
    let crc = crc32_update(0xFFFF_FFFF, head);
    let zeros = bytes.len().saturating_sub(at.start).min(at.len());
    let crc = crc32_update(crc, &[0; 4][..zeros]);
    crc32_update(crc, tail) ^ 0xFFFF_FFFF
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
    pub fn code(&self) -> OpCode {
        match self {
            Op::Dense(_) => OpCode::Dense,
            Op::Conv(_) => OpCode::Conv2d,
            Op::Depthwise(_) => OpCode::Depthwise,
            Op::Pool(p) if p.kind == PoolKind::Max => OpCode::MaxPool,
            Op::Pool(_) => OpCode::AvgPool,
            Op::GlobalAvgPool => OpCode::GlobalAvgPool,
            Op::Activation => OpCode::Activation,
        }
    }

    /// The window of a conv, depthwise or pooling op.
    pub fn window(&self) -> Option<crate::layers::Window> {
        match self {
            Op::Conv(c) => Some(c.window),
            Op::Depthwise(d) => Some(d.window),
            Op::Pool(p) => Some(p.window),
            _ => None,
        }
    }

    /// Dense and conv: the ops whose weights are row-blocked (and may be
    /// in the pair form), their bias padded to whole blocks.
    pub fn is_blocked(&self) -> bool {
        matches!(self, Op::Dense(_) | Op::Conv(_))
    }

    /// Logical dims of the tensor in `slot` of a layer with this op
    /// (FORMAT.md, "Per-layer tensors"): weights `[out, in, 1, 1]` (dense),
    /// `[Cout, KH, KW, Cin]` (conv), `[KH, KW, C, 1]` (depthwise); the
    /// bias padded to whole blocks of `block_rows` (weights' rows per
    /// block, 0 for plain); multipliers and shifts `[C]`; the table
    /// `[256]`. `None` for a weight slot of an op without weights, or a dim
    /// beyond `u32`.
    pub fn tensor_dims(&self, slot: Slot, block_rows: usize) -> Option<[u32; 4]> {
        let c = self.out_channels();
        let dims = match (slot, *self) {
            (Slot::Weight, Op::Dense(d)) => [d.outputs, d.inputs, 1, 1],
            (Slot::Weight, Op::Conv(cv)) => {
                let w = cv.window;
                [cv.out_c, w.kernel_h, w.kernel_w, cv.in_c]
            }
            (Slot::Weight, Op::Depthwise(d)) => [d.window.kernel_h, d.window.kernel_w, c, 1],
            (Slot::Weight, _) => return None,
            (Slot::Bias, _) => {
                let r = block_rows.max(1);
                [c.div_ceil(r).checked_mul(r)?, 1, 1, 1]
            }
            (Slot::Multiplier | Slot::Shift, _) => [c, 1, 1, 1],
            (Slot::Table, _) => [layout::LUT_LEN, 1, 1, 1],
        };
        let mut out = [0u32; 4];
        for (o, d) in out.iter_mut().zip(dims) {
            *o = u32::try_from(d).ok()?;
        }
        Some(out)
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
    /// Weighted layers: the scale the i32 accumulator is requantized to,
    /// the output scale or, for sigmoid/tanh, the pre-activation's (the
    /// table's input); an accumulator step of output channel `c` is worth
    /// `M[c]·requant_scale` in real units (on-device adaptation needs it).
    /// 0 for other layers.
    pub requant_scale: f32,
}

impl QuantOut {
    /// The fields of an f32 file's layer: all zero.
    pub const NONE: QuantOut = QuantOut {
        scale: 0.0,
        zero_point: 0,
        requant_zero_point: 0,
        clamp_min: 0,
        clamp_max: 0,
        requant_scale: 0.0,
    };
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
/// when it is needed, without the checks: about 440 instructions for an
/// int8 layer with five tensors and 340 for an f32 one on a Cortex-M4
/// (`cargo xtask bench firmware`, `model_layer`), and no RAM.
#[derive(Clone, Copy)]
pub struct Model<'a> {
    bytes: &'a [u8],
    header: Header,
    /// The three tables, borrowed in place as records (`parse` checked
    /// their bounds and alignment once, so a record is one indexed load).
    layers: &'a [layout::RawLayer],
    tensors: &'a [layout::RawTensor],
    bn: &'a [layout::RawBn],
}

impl core::fmt::Debug for Model<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Model")
            .field("bytes", &self.bytes.len())
            .field("header", &self.header)
            .field("layers", &self.layers.len())
            .field("tensors", &self.tensors.len())
            .field("bn", &self.bn.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
