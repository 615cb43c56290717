//! The byte layout of the `.ncm` file: the one definition.
//!
//! Every record of `docs/FORMAT.md` is a `#[repr(C)]` plain-old-data struct
//! here ([`RawHeader`], [`RawLayer`], [`RawTensor`], [`RawBn`]) whose field
//! order *is* the byte layout: the fields are naturally aligned, so
//! `#[repr(C)]` inserts no padding (the `Pod` derive refuses a struct with
//! padding, and the `const` assertions below pin every record's size), and
//! `core::mem::offset_of!` gives each field's offset. Every code (op,
//! activation, dtype, tensor layout) is a `#[repr(u8)]` enum with one
//! conversion from the byte, and every alignment and limit is a named
//! constant. The parser ([`super::Model::parse`]) reads records through
//! these structs and the writer ([`super::write`]) writes them; nothing
//! else in the repository spells an offset or a code. `core/tests/format_spec.rs`
//! reads FORMAT.md's tables and checks them against this module.
//!
//! Fields are stored little-endian; the structs hold them in native order,
//! which is the same on every target the reader and writer accept (both
//! refuse big-endian targets: [`super::ModelError::BigEndian`]).
//!
//! Records are read in place: the buffer is [`BUFFER_ALIGN`]-aligned and the
//! tables [`TABLE_ALIGN`]-aligned in it, so a record is a reference into the
//! file, no copy.

use core::mem::{offset_of, size_of};

use bytemuck::{Pod, Zeroable};

use crate::layers::{Activation, Padding, Window};

/// The file's first four bytes.
pub const MAGIC: [u8; 4] = *b"NCMF";
/// The format version this crate reads and writes.
pub const VERSION: u16 = 2;

/// Header flag: int8 model (else f32).
pub const FLAG_INT8: u16 = 1 << 0;
/// Header flag: BN table present.
pub const FLAG_HAS_BN: u16 = 1 << 1;
/// Layer flag: the input zero point is folded into the bias (int8 dense,
/// or int8 conv without padding).
pub const LAYER_ZP_FOLDED: u16 = 1 << 0;
/// "No tensor" in a tensor-index field.
pub const NO_TENSOR: u16 = 0xFFFF;

/// Most layers in a model.
pub const MAX_LAYERS: usize = 64;
/// Most tensors in a model.
pub const MAX_TENSORS: usize = 1024;
/// Most BN records in a model (at most one per layer).
pub const MAX_BN: usize = MAX_LAYERS;

/// Alignment of the buffer a file is parsed from: the widest element (f32,
/// i32) is 4 bytes, and tensors are borrowed in place as typed slices.
pub const BUFFER_ALIGN: usize = 4;
/// Alignment of the three tables' offsets in the file.
pub const TABLE_ALIGN: usize = 4;
/// Alignment of every tensor's data offset in the file (and of the data
/// region's start). A buffer placed at a 16-byte boundary, as the firmware
/// places it, therefore has every tensor 16-aligned in memory.
pub const DATA_ALIGN: usize = 16;

/// Bytes of the header.
pub const HEADER_LEN: usize = size_of::<RawHeader>();
/// Bytes of a layer record.
pub const LAYER_LEN: usize = size_of::<RawLayer>();
/// Bytes of a tensor record.
pub const TENSOR_LEN: usize = size_of::<RawTensor>();
/// Bytes of a BN record.
pub const BN_LEN: usize = size_of::<RawBn>();

const _: () = assert!(HEADER_LEN == 64);
const _: () = assert!(LAYER_LEN == 64);
const _: () = assert!(TENSOR_LEN == 32);
const _: () = assert!(BN_LEN == 16);
const _: () = assert!(core::mem::align_of::<RawHeader>() <= BUFFER_ALIGN);
const _: () = assert!(core::mem::align_of::<RawLayer>() <= TABLE_ALIGN);
const _: () = assert!(core::mem::align_of::<RawTensor>() <= TABLE_ALIGN);
const _: () = assert!(core::mem::align_of::<RawBn>() <= TABLE_ALIGN);

/// Byte range of the header's CRC field: the CRC covers the file with
/// these bytes taken as zero.
pub const CRC_FIELD: core::ops::Range<usize> =
    offset_of!(RawHeader, crc32)..offset_of!(RawHeader, crc32) + 4;

/// Most multiply-accumulates per output of an int8 dense, conv or
/// depthwise layer (`P`: inputs, or `KH·KW·Cin`, or `KH·KW`). The products'
/// sum is then at most `P·255·127 ≤ 1,943,100,000` in magnitude, which
/// leaves about `2·10^8` of the i32 range for the bias.
pub const MAX_ACC_TAPS: usize = 60_000;
/// The largest int8 bias magnitude for `taps` products per output such
/// that no partial sum of `bias + Σ (x - zp)·w` (|x - zp| ≤ 255, |w| ≤ 127,
/// with or without the zero point folded in) leaves i32, whichever order a
/// kernel adds in: `2^31 - 1 - 2·128·127·taps`. `None` when even a zero
/// bias cannot guarantee it. The exporter saturates biases to it, and an
/// on-device refold refuses a bias beyond it.
pub fn bias_limit(taps: usize) -> Option<i64> {
    let worst = 2 * 128 * 127 * i64::try_from(taps).ok()?;
    let limit = i64::from(i32::MAX) - worst;
    (limit > 0).then_some(limit)
}

/// Entries of an int8 sigmoid/tanh lookup table (one per int8 level).
pub const LUT_LEN: usize = 256;
/// Rows per block of the pair form ([`DType::I8Pair`]).
pub const PAIR_BLOCK_ROWS: u8 = 4;

/// The header (FORMAT.md, "Header").
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct RawHeader {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// [`VERSION`].
    pub version: u16,
    /// [`FLAG_INT8`], [`FLAG_HAS_BN`].
    pub flags: u16,
    /// Total bytes, equal to the buffer's length.
    pub file_size: u32,
    /// CRC-32 of the file with this field taken as zero ([`CRC_FIELD`]).
    pub crc32: u32,
    /// RAM the engine needs for activations: the memory plan's peak.
    pub arena_bytes: u32,
    /// Layers, 1 ..= [`MAX_LAYERS`].
    pub layer_count: u16,
    /// Tensors, 0 ..= [`MAX_TENSORS`].
    pub tensor_count: u16,
    /// Offset of the layer table.
    pub layer_table_offset: u32,
    /// Offset of the tensor table.
    pub tensor_table_offset: u32,
    /// Offset of the BN table (0 without [`FLAG_HAS_BN`]).
    pub bn_table_offset: u32,
    /// BN records (0 without [`FLAG_HAS_BN`]).
    pub bn_count: u16,
    /// Output features of the last layer.
    pub classes: u16,
    /// Input height, width, channels of one sample.
    pub input: [u16; 3],
    /// 0.
    pub reserved0: u16,
    /// int8: real = scale · (q − zero point); f32 files: 0.
    pub input_scale: f32,
    /// int8 input zero point in -128 ..= 127; f32 files: 0.
    pub input_zero_point: i32,
    /// The data set's stored value per raw input unit.
    pub pixel_scale: f32,
    /// 0.
    pub reserved1: u32,
}

/// Which tensor of a layer record: the index into [`RawLayer::tensors`].
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Weights.
    Weight = 0,
    /// Bias.
    Bias = 1,
    /// int8 requantization multipliers.
    Multiplier = 2,
    /// int8 requantization shifts.
    Shift = 3,
    /// int8 sigmoid/tanh lookup table.
    Table = 4,
}

/// Tensor slots of a layer record.
pub const SLOTS: usize = 5;

impl Slot {
    /// Every slot, in record order.
    pub const ALL: [Slot; SLOTS] = [
        Slot::Weight,
        Slot::Bias,
        Slot::Multiplier,
        Slot::Shift,
        Slot::Table,
    ];

    /// The role of the tensor in this slot (for errors).
    pub fn role(self) -> super::Role {
        use super::Role;
        match self {
            Slot::Weight => Role::Weight,
            Slot::Bias => Role::Bias,
            Slot::Multiplier => Role::Multiplier,
            Slot::Shift => Role::Shift,
            Slot::Table => Role::Table,
        }
    }
}

/// A layer record (FORMAT.md, "Layer table").
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct RawLayer {
    /// [`OpCode`].
    pub op: u8,
    /// [`ActCode`]: fused into the op's output, or for
    /// [`OpCode::Activation`] the function itself.
    pub activation: u8,
    /// [`LAYER_ZP_FOLDED`].
    pub flags: u16,
    /// Input height, width, channels.
    pub input: [u16; 3],
    /// Output height, width, channels.
    pub output: [u16; 3],
    /// Kernel h, kernel w, stride h, stride w, pad top, bottom, left,
    /// right ([`window_bytes`]; zeros for ops without a window).
    pub window: [u8; 8],
    /// Tensor indices by [`Slot`]; [`NO_TENSOR`] when absent.
    pub tensors: [u16; SLOTS],
    /// 0.
    pub reserved0: u16,
    /// int8 output scale.
    pub output_scale: f32,
    /// int8 output zero point.
    pub output_zero_point: i32,
    /// int8: added after requantization (the output zero point, or for
    /// sigmoid/tanh the zero point of the pre-activation).
    pub requant_zero_point: i32,
    /// int8 lower clamp, ≥ -128.
    pub clamp_min: i32,
    /// int8 upper clamp, ≤ 127.
    pub clamp_max: i32,
    /// int8 weighted layers: the scale the accumulator is requantized to
    /// (the output scale, or for sigmoid/tanh the pre-activation's); 0
    /// otherwise.
    pub requant_scale: f32,
    /// 0.
    pub reserved1: u32,
}

/// A tensor record (FORMAT.md, "Tensor table").
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct RawTensor {
    /// [`DType`].
    pub dtype: u8,
    /// [`LayoutCode`].
    pub layout: u8,
    /// Rows per block: 4 or 8 row-blocked, 0 plain.
    pub block_rows: u8,
    /// 0.
    pub reserved0: u8,
    /// Logical dims, unused trailing dims 1.
    pub dims: [u32; 4],
    /// Offset of the data in the file, [`DATA_ALIGN`]-aligned.
    pub offset: u32,
    /// Bytes of data: stored elements × dtype size.
    pub len: u32,
    /// 0.
    pub reserved1: u32,
}

/// A BN record (FORMAT.md, "BN table").
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Pod, Zeroable)]
pub struct RawBn {
    /// The layer the BN was folded into.
    pub layer: u16,
    /// γ, β, E\[x\], Var\[x\] tensor indices (f32 `[C]`).
    pub tensors: [u16; 4],
    /// 0.
    pub reserved0: u16,
    /// ε.
    pub eps: f32,
}

/// Op codes of the layer table.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OpCode {
    /// Fully connected.
    Dense = 1,
    /// 2-d convolution.
    Conv2d = 2,
    /// Depthwise convolution.
    Depthwise = 3,
    /// Max pooling.
    MaxPool = 4,
    /// Average pooling.
    AvgPool = 5,
    /// Global average pooling.
    GlobalAvgPool = 6,
    /// A standalone activation.
    Activation = 7,
}

impl OpCode {
    /// Every op, in code order.
    pub const ALL: [OpCode; 7] = [
        OpCode::Dense,
        OpCode::Conv2d,
        OpCode::Depthwise,
        OpCode::MaxPool,
        OpCode::AvgPool,
        OpCode::GlobalAvgPool,
        OpCode::Activation,
    ];

    /// The op with code `c`.
    pub fn from_u8(c: u8) -> Option<Self> {
        Some(match c {
            1 => OpCode::Dense,
            2 => OpCode::Conv2d,
            3 => OpCode::Depthwise,
            4 => OpCode::MaxPool,
            5 => OpCode::AvgPool,
            6 => OpCode::GlobalAvgPool,
            7 => OpCode::Activation,
            _ => return None,
        })
    }
}

/// Activation codes of the layer table.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ActCode {
    /// No activation.
    None = 0,
    /// ReLU.
    Relu = 1,
    /// ReLU6.
    Relu6 = 2,
    /// Logistic sigmoid.
    Sigmoid = 3,
    /// tanh.
    Tanh = 4,
}

impl ActCode {
    /// Every activation code, in code order.
    pub const ALL: [ActCode; 5] = [
        ActCode::None,
        ActCode::Relu,
        ActCode::Relu6,
        ActCode::Sigmoid,
        ActCode::Tanh,
    ];

    /// The code `c`.
    pub fn from_u8(c: u8) -> Option<Self> {
        Some(match c {
            0 => ActCode::None,
            1 => ActCode::Relu,
            2 => ActCode::Relu6,
            3 => ActCode::Sigmoid,
            4 => ActCode::Tanh,
            _ => return None,
        })
    }

    /// The code of `a`.
    pub fn of(a: Option<Activation>) -> Self {
        match a {
            None => ActCode::None,
            Some(Activation::Relu) => ActCode::Relu,
            Some(Activation::Relu6) => ActCode::Relu6,
            Some(Activation::Sigmoid) => ActCode::Sigmoid,
            Some(Activation::Tanh) => ActCode::Tanh,
        }
    }

    /// The activation this code stands for.
    pub fn activation(self) -> Option<Activation> {
        match self {
            ActCode::None => None,
            ActCode::Relu => Some(Activation::Relu),
            ActCode::Relu6 => Some(Activation::Relu6),
            ActCode::Sigmoid => Some(Activation::Sigmoid),
            ActCode::Tanh => Some(Activation::Tanh),
        }
    }
}

/// Element type of a tensor (the tensor table's dtype codes).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DType {
    /// IEEE binary32.
    F32 = 1,
    /// Signed byte.
    I8 = 2,
    /// Signed 32-bit integer.
    I32 = 3,
    /// Two int8 weights in one little-endian 32-bit word, `lo + 2^24·hi`
    /// (both in `[-127, 127]`): the pair form of row-blocked int8 dense
    /// and conv weights (FORMAT.md). Two bytes per element.
    I8Pair = 4,
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 4] = [DType::F32, DType::I8, DType::I32, DType::I8Pair];

    /// The dtype with code `c`.
    pub fn from_u8(c: u8) -> Option<Self> {
        Some(match c {
            1 => DType::F32,
            2 => DType::I8,
            3 => DType::I32,
            4 => DType::I8Pair,
            _ => return None,
        })
    }

    /// Bytes per stored element.
    pub fn size(self) -> usize {
        match self {
            DType::I8 => 1,
            DType::I8Pair => 2,
            DType::F32 | DType::I32 => 4,
        }
    }
}

/// Tensor layout codes of the tensor table.
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LayoutCode {
    /// Row-major.
    Plain = 0,
    /// Row-blocked by 4 or 8 rows (FORMAT.md, "Row-blocked weights").
    RowBlocked = 1,
}

impl LayoutCode {
    /// The layout of a tensor with `block_rows` rows per block (0: plain).
    pub fn of(block_rows: u8) -> Self {
        if block_rows == 0 {
            LayoutCode::Plain
        } else {
            LayoutCode::RowBlocked
        }
    }

    /// Whether `(layout code, block rows)` is a valid pair for `dtype`:
    /// plain with 0 rows, row-blocked with 4 or 8; the pair form only
    /// row-blocked by [`PAIR_BLOCK_ROWS`].
    pub fn valid(layout: u8, block_rows: u8, dtype: DType) -> bool {
        match (layout, block_rows) {
            (0, 0) | (1, 8) => dtype != DType::I8Pair,
            (1, PAIR_BLOCK_ROWS) => true,
            _ => false,
        }
    }
}

/// Elements a tensor stores for logical `dims` with `block_rows` rows per
/// block (0: plain): the rows (`dims[0]`) padded to whole blocks, times the
/// other dims (FORMAT.md, "Row-blocked weights"). `None` on overflow.
// Inlined: in the parser it stays one tight loop (code size, `cargo xtask size`).
#[inline(always)]
pub fn stored_elements(dims: [u32; 4], block_rows: u8) -> Option<usize> {
    let b = usize::from(block_rows.max(1));
    let mut n = (dims[0] as usize).div_ceil(b).checked_mul(b);
    for &d in dims.iter().skip(1) {
        n = n.and_then(|n| n.checked_mul(d as usize));
    }
    n
}

/// A layer's window as its record stores it: kernel h, kernel w, stride h,
/// stride w, padding top, bottom, left, right, one byte each; `None` if a
/// field exceeds 255.
pub fn window_bytes(w: &Window) -> Option<[u8; 8]> {
    let p = w.padding;
    let v = [
        w.kernel_h, w.kernel_w, w.stride_h, w.stride_w, p.top, p.bottom, p.left, p.right,
    ];
    let mut out = [0u8; 8];
    for (o, &v) in out.iter_mut().zip(&v) {
        *o = u8::try_from(v).ok()?;
    }
    Some(out)
}

/// The window a record's eight window bytes stand for ([`window_bytes`]'s inverse).
pub fn window_of(b: [u8; 8]) -> Window {
    let g = |i: usize| usize::from(b[i]);
    Window {
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
    }
}

/// `v` rounded up to a multiple of `align` (a power of two); `None` on overflow.
pub fn round_up(v: usize, align: usize) -> Option<usize> {
    Some(v.checked_add(align - 1)? & !(align - 1))
}
