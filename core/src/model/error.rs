//! Why a model file was rejected.

use core::fmt;

/// Which table an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Table {
    /// The 64-byte header.
    Header,
    /// The layer table.
    Layers,
    /// The tensor table.
    Tensors,
    /// The BN table.
    Bn,
}

/// The role a tensor plays for its layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// Weights.
    Weight,
    /// Bias.
    Bias,
    /// Requantization multipliers.
    Multiplier,
    /// Requantization shifts.
    Shift,
    /// Activation lookup table.
    Table,
    /// A BN parameter or statistic.
    BnParam,
}

/// What is wrong with one layer record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum LayerFault {
    /// The op code is not one this version defines.
    UnknownOp(u8),
    /// The activation code is not one this version defines.
    UnknownActivation(u8),
    /// The activation is not allowed on this op (e.g. a standalone
    /// activation record without a function).
    ActivationNotAllowed,
    /// Unknown flag bits, or a flag that does not apply to the op.
    BadFlags(u16),
    /// The input shape is not the previous layer's output (or the header's input).
    InputShape,
    /// The output shape is not what the op computes from its input.
    OutputShape,
    /// Kernel, stride or padding invalid for the input.
    Geometry,
    /// A required tensor is absent.
    MissingTensor(Role),
    /// A tensor is given where the op takes none.
    UnexpectedTensor(Role),
    /// A tensor index is past the tensor table.
    TensorIndex(Role),
    /// A tensor has the wrong dtype, layout, dims or length for its role.
    TensorKind(Role),
    /// Quantization parameters out of range (zero point, clamps, shift,
    /// multiplier, scale).
    Quantization,
    /// An int8 accumulator could overflow i32 (too many terms per output).
    AccumulatorRange,
    /// A reserved field is not zero.
    Reserved,
    /// The last layer does not produce `1×1×classes`.
    FinalShape,
}

/// What is wrong with one tensor record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TensorFault {
    /// Unknown dtype code.
    UnknownDtype(u8),
    /// Unknown layout code, or a block size that does not match the layout.
    Layout,
    /// Dims multiply to zero or overflow.
    Dims,
    /// The data offset is not 16-aligned.
    Misaligned,
    /// The data lies outside the data region.
    OutOfBounds,
    /// The length is not the dims' element count times the dtype size.
    Length,
    /// The data overlaps the previous tensor's or is out of table order.
    Overlap,
    /// A reserved field is not zero.
    Reserved,
    /// An element outside its dtype's range (an `i8pair` word whose
    /// halves are not both in `[-127, 127]`).
    Values,
}

/// Errors of [`Model::parse`](super::Model::parse) and the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum ModelError {
    /// The buffer is shorter than the structure that must be there.
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes present.
        actual: usize,
    },
    /// The first four bytes are not `"NCMF"`.
    BadMagic,
    /// A format version this reader does not implement.
    UnsupportedVersion(u16),
    /// Header flag bits this version does not define.
    UnknownFlags(u16),
    /// The header's `file_size` is not the buffer's length.
    SizeMismatch {
        /// Size the header states.
        header: u32,
        /// Length of the buffer.
        actual: usize,
    },
    /// The CRC-32 does not match: the file is damaged.
    CrcMismatch {
        /// CRC stored in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// The buffer does not start at a 4-byte aligned address, so its f32
    /// and i32 tensors cannot be borrowed in place.
    Misaligned,
    /// Little-endian data on a big-endian target is not supported.
    BigEndian,
    /// A header field is out of range.
    Header(HeaderFault),
    /// A table lies outside the file, overlaps another, or is misaligned.
    TableBounds(Table),
    /// A tensor record is invalid.
    Tensor {
        /// Index in the tensor table.
        index: u16,
        /// What is wrong.
        fault: TensorFault,
    },
    /// A layer record is invalid.
    Layer {
        /// Index in the layer table.
        index: u16,
        /// What is wrong.
        fault: LayerFault,
    },
    /// A BN record is invalid.
    Bn {
        /// Index in the BN table.
        index: u16,
        /// What is wrong.
        fault: LayerFault,
    },
    /// The header's arena size is not the memory plan's peak.
    ArenaMismatch {
        /// Bytes the header states.
        header: u32,
        /// Bytes the plan needs.
        computed: u32,
    },
    /// The caller's arena is smaller than the model needs, or misaligned.
    ArenaTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The caller's arena does not start at a 4-byte aligned address.
    ArenaMisaligned,
    /// The operation needs the other kind of model (f32 vs int8).
    WrongKind,
    /// This build's engine does not run models of this kind: normcore was
    /// built without its `engine-f32` or `engine-int8` feature. The model
    /// itself is valid (`Model::parse` checks both kinds in every build).
    Unsupported(super::Kind),
    /// A kernel rejected its inputs (a validated model never does this).
    Kernel(crate::error::Error),
}

/// A header field that is out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum HeaderFault {
    /// `layer_count` is 0 or above the maximum.
    LayerCount,
    /// `tensor_count` above the maximum.
    TensorCount,
    /// An input dimension is 0.
    InputShape,
    /// `classes` is 0.
    Classes,
    /// Input quantization invalid for the file's kind.
    InputQuantization,
    /// `pixel_scale` not finite and positive.
    PixelScale,
    /// BN flag and BN table fields disagree.
    BnTable,
    /// A reserved field is not zero.
    Reserved,
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ModelError::Truncated { needed, actual } => {
                write!(f, "file truncated: {needed} bytes needed, {actual} present")
            }
            ModelError::BadMagic => f.write_str("not a normcore model (magic is not \"NCMF\")"),
            ModelError::UnsupportedVersion(v) => {
                write!(
                    f,
                    "format version {v} is not supported (this reader implements {})",
                    super::layout::VERSION
                )
            }
            ModelError::UnknownFlags(b) => write!(f, "unknown header flags {b:#06x}"),
            ModelError::SizeMismatch { header, actual } => write!(
                f,
                "header says {header} bytes but the file has {actual} (truncated or padded?)"
            ),
            ModelError::CrcMismatch { stored, computed } => write!(
                f,
                "CRC mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is damaged"
            ),
            ModelError::Misaligned => {
                f.write_str("model buffer is not 4-byte aligned; load it into an aligned buffer")
            }
            ModelError::BigEndian => f.write_str("big-endian targets are not supported"),
            ModelError::Header(h) => write!(f, "invalid header: {h:?}"),
            ModelError::TableBounds(t) => {
                write!(f, "{t:?} table lies outside the file, overlaps another or is misaligned")
            }
            ModelError::Tensor { index, fault } => write!(f, "tensor {index}: {fault:?}"),
            ModelError::Layer { index, fault } => write!(f, "layer {index}: {fault:?}"),
            ModelError::Bn { index, fault } => write!(f, "BN record {index}: {fault:?}"),
            ModelError::ArenaMismatch { header, computed } => write!(
                f,
                "header arena size {header} differs from the memory plan's {computed}"
            ),
            ModelError::ArenaTooSmall { needed, actual } => {
                write!(f, "arena of {actual} bytes is smaller than the {needed} the model needs")
            }
            ModelError::ArenaMisaligned => f.write_str("arena is not 4-byte aligned"),
            ModelError::WrongKind => f.write_str("operation does not match the model's kind (f32/int8)"),
            ModelError::Unsupported(kind) => {
                let (name, feature) = match kind {
                    super::Kind::F32 => ("f32", "engine-f32"),
                    super::Kind::Int8 => ("int8", "engine-int8"),
                };
                write!(
                    f,
                    "this build's engine does not run {name} models (normcore feature `{feature}` is off)"
                )
            }
            ModelError::Kernel(e) => write!(f, "kernel error: {e}"),
        }
    }
}

impl core::error::Error for ModelError {}

impl From<crate::error::Error> for ModelError {
    fn from(e: crate::error::Error) -> Self {
        ModelError::Kernel(e)
    }
}

/// A value that does not fit its field of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Field {
    /// A height, width or channel count above 65,535.
    Shape,
    /// A kernel, stride or padding above 255.
    Window,
    /// More than 65,535 classes.
    Classes,
    /// A BN record's layer index above 65,535.
    BnLayer,
    /// Rows per weight block above 255.
    BlockRows,
}

/// Errors of the writer ([`write`](super::write::write)) and of the
/// in-place updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum WriteError {
    /// The output buffer is smaller than the file.
    BufferTooSmall {
        /// Bytes the file takes.
        needed: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The output buffer does not start at a 4-byte aligned address.
    BufferMisaligned,
    /// Not 1 ..= 64 layers.
    LayerCount(usize),
    /// More than 64 BN records.
    BnCount(usize),
    /// The file, an offset or the arena would exceed 4 GiB (`u32`).
    FileTooLarge,
    /// A value does not fit its field (`layer`: which layer, if any).
    Field {
        /// The layer whose record it is, if it is one.
        layer: Option<u16>,
        /// Which field.
        field: Field,
    },
    /// The file breaks a rule of FORMAT.md: the parser's verdict (for
    /// example shapes that do not chain, `Layer { index, fault:
    /// InputShape }`, or tensors of the wrong kind for their role); for
    /// the in-place updates, the file given was not valid.
    Invalid(ModelError),
    /// No tensor with this index.
    NoTensor(usize),
    /// No BN record with this index.
    NoBn(usize),
    /// New values of tensor `index` differ from its dtype or length.
    WrongData(usize),
    /// New values of tensor `index` break a value rule of its role.
    BadValues(usize),
    /// No layer with this index.
    NoLayer(usize),
    /// A new output quantization of layer `index` breaks the format's
    /// rules for the layer.
    BadQuant(usize),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WriteError::BufferTooSmall { needed, actual } => write!(
                f,
                "output buffer of {actual} bytes is smaller than the {needed}-byte file"
            ),
            WriteError::BufferMisaligned => f.write_str("output buffer is not 4-byte aligned"),
            WriteError::LayerCount(n) => {
                write!(f, "{n} layers; the format holds 1 to {}", super::MAX_LAYERS)
            }
            WriteError::BnCount(n) => write!(
                f,
                "{n} BN records; the format holds at most {}",
                super::layout::MAX_BN
            ),
            WriteError::FileTooLarge => {
                f.write_str("the model needs more than 4 GiB (a u32 offset or arena size)")
            }
            WriteError::Field { layer, field } => {
                let what = match field {
                    Field::Shape => "a shape dimension above 65535",
                    Field::Window => "a kernel, stride or padding above 255",
                    Field::Classes => "more than 65535 classes",
                    Field::BnLayer => "a BN layer index above 65535",
                    Field::BlockRows => "more than 255 rows per weight block",
                };
                match layer {
                    Some(i) => write!(f, "layer {i}: {what} does not fit the format"),
                    None => write!(f, "{what} does not fit the format"),
                }
            }
            WriteError::Invalid(e) => write!(f, "invalid model: {e}"),
            WriteError::NoTensor(i) => write!(f, "no tensor {i} in the model"),
            WriteError::NoBn(j) => write!(f, "no BN record {j} in the model"),
            WriteError::WrongData(i) => {
                write!(f, "tensor {i}: new values differ in dtype or length")
            }
            WriteError::BadValues(i) => write!(
                f,
                "tensor {i}: new values break the format's rules for its role"
            ),
            WriteError::NoLayer(i) => write!(f, "no layer {i} in the model"),
            WriteError::BadQuant(i) => write!(
                f,
                "layer {i}: the new output quantization breaks the format's rules"
            ),
        }
    }
}

impl core::error::Error for WriteError {}

impl From<ModelError> for WriteError {
    fn from(e: ModelError) -> Self {
        WriteError::Invalid(e)
    }
}
