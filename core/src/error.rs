//! The one error type of the f32 layer kernels.
//!
//! Every kernel validates its inputs before it writes anything, so an `Err`
//! leaves the caller's output buffers untouched. Variants name the offending
//! operand so that a log line (or a `defmt` frame) says what to fix.

use core::fmt;

/// Which buffer or tensor an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Operand {
    /// The layer's input activation `x`.
    Input,
    /// The layer's output activation `y`.
    Output,
    /// The gradient of the loss with respect to the output, `dL/dy`.
    OutputGrad,
    /// The gradient of the loss with respect to the input, `dL/dx`.
    InputGrad,
    /// Weights `W` (dense rows, conv filters, depthwise taps).
    Weight,
    /// The gradient of the loss with respect to the weights.
    WeightGrad,
    /// Bias `b` (or BN's `beta` once folded).
    Bias,
    /// The gradient of the loss with respect to the bias.
    BiasGrad,
    /// BN scale `gamma`.
    Gamma,
    /// BN shift `beta`.
    Beta,
    /// A per-channel mean (batch or running).
    Mean,
    /// A per-channel variance (running) or inverse standard deviation (batch).
    Variance,
    /// Caller-provided scratch memory.
    Scratch,
    /// A dropout mask.
    Mask,
    /// Class labels.
    Labels,
    /// Probabilities (softmax output).
    Probabilities,
    /// Optimiser state (momentum buffer).
    Velocity,
    /// Parameters updated by an optimiser.
    Params,
    /// Left-hand matrix of a product.
    MatrixA,
    /// Right-hand matrix of a product.
    MatrixB,
    /// Result matrix of a product.
    MatrixC,
    /// Per-channel requantization multipliers of an int8 output stage.
    Multiplier,
    /// Per-channel requantization shifts of an int8 output stage.
    Shift,
}

/// A hyper-parameter or geometry field that can be out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Param {
    /// BN `eps`: must be finite and > 0.
    Eps,
    /// BN running-average momentum: must lie in [0, 1].
    BnMomentum,
    /// Optimiser momentum: must lie in [0, 1).
    Momentum,
    /// Learning rate: must be finite and >= 0.
    LearningRate,
    /// Weight decay: must be finite and >= 0.
    WeightDecay,
    /// Dropout rate: must lie in [0, 1).
    DropoutRate,
    /// Convolution or pooling stride: must be >= 1.
    Stride,
    /// Kernel or window extent: must be >= 1 and fit the padded input.
    Kernel,
    /// A count of features, channels, rows or columns that must be >= 1.
    Dimension,
    /// A row or column stride of a matrix view.
    MatrixStride,
    /// A population variance: must be >= 0 and not NaN.
    Variance,
    /// Rows per block of a row-blocked weight layout: must be 4 or 8.
    BlockRows,
    /// A requantization multiplier (Q31 bits): must be 0 or in [2^30, 2^31).
    Multiplier,
    /// A requantization shift: must lie in [-31, 30].
    Shift,
    /// An int8 output clamp: must satisfy -128 <= min <= max <= 127.
    Clamp,
    /// An int8 zero point: must lie in [-128, 127].
    ZeroPoint,
    /// An int8 weight of the pair form: must lie in [-127, 127].
    WeightRange,
    /// A quantization scale: must be finite and > 0.
    Scale,
    /// Padding an int8 kernel cannot honour: a zero-point-folded convolution
    /// with padding, or a pooling window lying entirely in the padding.
    Padding,
    /// An integer softmax exponential table: entry 0 must be 2^15 and the
    /// entries non-increasing (as `softmax_exp_table` makes them).
    ExpTable,
}

/// Errors of the f32 kernels. Small and `Copy` so that it costs nothing to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum Error {
    /// A slice's length is not the one its shape requires.
    LengthMismatch {
        /// Which buffer.
        operand: Operand,
        /// Elements the shape requires.
        expected: usize,
        /// Elements the slice has.
        actual: usize,
    },
    /// Two tensors whose shapes must agree do not (for example a layer's
    /// input feature count and the width of its weight matrix).
    ShapeMismatch {
        /// The operand whose shape disagrees with the layer.
        operand: Operand,
    },
    /// A buffer is smaller than the minimum the operation needs.
    BufferTooSmall {
        /// Which buffer.
        operand: Operand,
        /// Minimum elements needed.
        needed: usize,
        /// Elements provided.
        actual: usize,
    },
    /// An element count overflows `usize`.
    Overflow,
    /// A hyper-parameter or geometry field is out of its documented range.
    InvalidParam(Param),
    /// Batch statistics need at least `needed` values per channel; the batch
    /// provides `actual` (BN training over one value has no variance and the
    /// unbiased population estimate m/(m-1) is undefined).
    BatchTooSmall {
        /// Minimum values per channel.
        needed: usize,
        /// Values per channel in this batch (N·H·W).
        actual: usize,
    },
    /// A class label is not below the number of classes.
    LabelOutOfRange {
        /// Position of the label in the batch.
        index: usize,
        /// The label.
        label: u16,
    },
    /// A BN channel has a zero scale (gamma = 0), so a folded layer cannot be
    /// unfolded to be refolded with new statistics.
    NotInvertible {
        /// The channel.
        channel: usize,
    },
    /// A value that must be finite is NaN or infinite (a sample fed to the
    /// statistics re-estimation, or an estimate that overflowed f32).
    NonFinite {
        /// Which buffer.
        operand: Operand,
    },
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Operand::Input => "input",
            Operand::Output => "output",
            Operand::OutputGrad => "output gradient",
            Operand::InputGrad => "input gradient",
            Operand::Weight => "weight",
            Operand::WeightGrad => "weight gradient",
            Operand::Bias => "bias",
            Operand::BiasGrad => "bias gradient",
            Operand::Gamma => "gamma",
            Operand::Beta => "beta",
            Operand::Mean => "mean",
            Operand::Variance => "variance",
            Operand::Scratch => "scratch",
            Operand::Mask => "dropout mask",
            Operand::Labels => "labels",
            Operand::Probabilities => "probabilities",
            Operand::Velocity => "velocity",
            Operand::Params => "parameters",
            Operand::MatrixA => "matrix A",
            Operand::MatrixB => "matrix B",
            Operand::MatrixC => "matrix C",
            Operand::Multiplier => "requantization multipliers",
            Operand::Shift => "requantization shifts",
        };
        f.write_str(name)
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Param::Eps => "BN eps must be finite and > 0",
            Param::BnMomentum => "BN momentum must lie in [0, 1]",
            Param::Momentum => "momentum must lie in [0, 1)",
            Param::LearningRate => "learning rate must be finite and >= 0",
            Param::WeightDecay => "weight decay must be finite and >= 0",
            Param::DropoutRate => "dropout rate must lie in [0, 1)",
            Param::Stride => "stride must be >= 1",
            Param::Kernel => "kernel must be >= 1 and fit the padded input",
            Param::Dimension => "dimension must be >= 1",
            Param::MatrixStride => "matrix strides must keep every element in bounds",
            Param::Variance => "variance must be >= 0 and not NaN",
            Param::BlockRows => "block rows must be 4 or 8",
            Param::Multiplier => "requantization multiplier must be 0 or in [2^30, 2^31)",
            Param::Shift => "requantization shift must lie in [-31, 30]",
            Param::Clamp => "clamps must satisfy -128 <= min <= max <= 127",
            Param::ZeroPoint => "zero point must lie in [-128, 127]",
            Param::WeightRange => "pair-form int8 weights must lie in [-127, 127]",
            Param::Scale => "scale must be finite and > 0",
            Param::Padding => {
                "padding not supported here (folded zero point, or a window entirely in the padding)"
            }
            Param::ExpTable => "softmax exp table must start at 2^15 and not increase",
        };
        f.write_str(text)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::LengthMismatch {
                operand,
                expected,
                actual,
            } => write!(
                f,
                "{operand} has {actual} elements, its shape requires {expected}"
            ),
            Error::ShapeMismatch { operand } => {
                write!(f, "{operand} shape does not match the layer")
            }
            Error::BufferTooSmall {
                operand,
                needed,
                actual,
            } => write!(
                f,
                "{operand} buffer holds {actual} elements, at least {needed} needed"
            ),
            Error::Overflow => f.write_str("element count overflows usize"),
            Error::InvalidParam(p) => write!(f, "invalid parameter: {p}"),
            Error::BatchTooSmall { needed, actual } => write!(
                f,
                "batch statistics need at least {needed} values per channel, got {actual}"
            ),
            Error::LabelOutOfRange { index, label } => {
                write!(f, "label {label} at position {index} is not a valid class")
            }
            Error::NotInvertible { channel } => write!(
                f,
                "BN channel {channel} has zero scale and cannot be unfolded"
            ),
            Error::NonFinite { operand } => {
                write!(f, "{operand} holds a NaN or infinite value")
            }
        }
    }
}

impl core::error::Error for Error {}

/// Check that `slice_len` equals `expected`, naming `operand` otherwise.
#[inline]
pub(crate) fn check_len(operand: Operand, expected: usize, actual: usize) -> Result<(), Error> {
    if expected == actual {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            operand,
            expected,
            actual,
        })
    }
}
