//! On-device adaptation of a folded model (paper Alg. 2 after deployment).
//!
//! - [`stats`]: streaming per-channel mean and variance of each folded
//!   layer's pre-normalization value, and the population estimate
//!   `E[x]`, `Var[x]` (unbiased) a refold needs.
//! - [`overlay`]: the adapted parameters in RAM, read by the engine
//!   ([`Engine::run_adapted`](crate::engine::Engine::run_adapted)) in place
//!   of the file's tensors; the file never changes.
//! - [`refold`]: new BN parameters into a folded layer, f32 and int8 (the
//!   int8 weights stay in flash).
//! - [`restat`]: statistics re-estimation, forward only, on unlabeled
//!   samples, layer after layer.
//! - [`store`]: persistence of the overlay in NOR flash as two A/B slots,
//!   safe against a power cut at any moment of a save.
//! - [`drift`]: a gain/offset drift of int8 input levels in integer
//!   arithmetic, the scenario host and device measure re-estimation on.

pub mod drift;
pub mod overlay;
pub mod refold;
pub mod restat;
pub mod stats;
pub mod store;
pub mod tail;

use crate::kernels::Tap;
use crate::model::{Layer, ModelError};

/// What [`Engine::run_adapted`](crate::engine::Engine::run_adapted) shows a
/// tap: the i32 accumulators of the int8 layers it [`wants`](Self::wants)
/// (through [`Tap`]), or the f32 pre-activation output of the f32 ones.
pub trait LayerTap: Tap {
    /// Whether to show layer `i`.
    fn wants(&self, i: usize) -> bool;
    /// Layer `i` (as the engine runs it, overlay applied) is about to run.
    fn begin(&mut self, _i: usize, _layer: &Layer<'_>) {}
    /// An f32 layer's output before its activation, `[h, w, C]` (NHWC).
    fn pre_f32(&mut self, _y: &[f32]) {}
}

/// The RAM adaptation of a model needs, stated before anything starts
/// ([`plan`]), in bytes. Re-estimation and tail training run one after the
/// other, so one workspace of `max(restat, tail)` serves both. The parts'
/// formulas: [`overlay`] ("RAM"), [`restat`] (`8·C_max` words), [`tail`]
/// ("RAM"; with momentum 0 no velocities). MNIST `paper-mlp` int8:
/// re-estimation 9,408 bytes, re-estimation and tail training (γ, β too)
/// 14,880 bytes with momentum 0 (the default) and 19,720 bytes with
/// momentum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Plan {
    /// The overlay ([`overlay::Overlay::words_needed`]); kept while the
    /// adapted model runs, and saved to flash.
    pub overlay: usize,
    /// Re-estimation's workspace ([`restat::Restat::words_needed`]), 0
    /// without it.
    pub restat: usize,
    /// Tail training's workspace ([`tail::Tail::words_needed`]), 0 without
    /// it.
    pub tail: usize,
}

impl Plan {
    /// Bytes beyond the inference arena: `overlay + max(restat, tail)`.
    pub fn total(&self) -> usize {
        self.overlay + self.restat.max(self.tail)
    }
}

/// The RAM adaptation of `model` needs for `scope` (with tail training
/// configured by `tail` when `scope.tail`). Errors as the parts' plan
/// functions: no BN table, no tail.
pub fn plan(
    model: &crate::model::Model<'_>,
    scope: overlay::Scope,
    tail: &tail::TailConfig,
) -> Result<Plan, AdaptError> {
    Ok(Plan {
        overlay: 4 * overlay::Overlay::words_needed(model, scope)?,
        restat: if scope.restat {
            4 * restat::Restat::words_needed(model)?
        } else {
            0
        },
        tail: if scope.tail {
            4 * tail::Tail::words_needed(model, tail)?
        } else {
            0
        },
    })
}

/// Why adaptation cannot go on. Nothing was changed when one is returned
/// (the overlay keeps its previous, consistent content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum AdaptError {
    /// The model or the engine refused (see [`ModelError`]).
    Model(ModelError),
    /// A numeric precondition failed (see [`crate::Error`]).
    Math(crate::Error),
    /// A caller's buffer is smaller than the plan says.
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        actual: usize,
    },
    /// Re-estimation asked of a model without a BN table.
    NoBn,
    /// Tail training asked of a model whose last layer is not dense.
    NoTail,
    /// A layer has no bias or no weights where adaptation needs them.
    BadLayer {
        /// The layer.
        layer: usize,
    },
    /// More adapted layers than an overlay holds.
    TooManyEntries,
    /// A size beyond `u32`.
    TooLarge,
    /// Saved overlay bytes were made for another model (its file CRC).
    WrongModel,
    /// Saved overlay bytes are not a valid overlay for this model.
    BadOverlay,
    /// The overlay has no room for this layer's part (its scope lacks it).
    NotInOverlay,
    /// A BN scale `γ/sqrt(Var + ε)` would change sign or become zero
    /// (the int8 weights keep their sign in flash): forbidden.
    SignChange {
        /// The layer.
        layer: usize,
        /// The channel.
        channel: usize,
    },
    /// A refolded requantization multiplier is outside what the format
    /// represents (`[2^-32, 2^30)`), or a bias beyond the accumulator-safe
    /// range.
    Unrepresentable {
        /// The layer.
        layer: usize,
        /// The channel.
        channel: usize,
    },
    /// The call does not fit the current phase (for example a sample after
    /// every pass is done, or finishing a pass with fewer than 2 samples).
    Phase,
    /// A sample or label of the wrong size, or a label beyond the classes.
    BadSample,
    /// Saved overlay bytes of another overlay layout version (written by an
    /// older or newer build; [`overlay::VERSION`]): adapt again.
    OverlayVersion {
        /// The version the bytes carry.
        found: u16,
    },
}

impl AdaptError {
    /// A one-byte code for the serial protocol's `ADAPT_ERROR` status
    /// (docs/SERIAL.md, "Adaptation error codes").
    pub fn code(&self) -> u8 {
        match self {
            AdaptError::Model(_) => 1,
            AdaptError::Math(_) => 2,
            AdaptError::BufferTooSmall { .. } => 3,
            AdaptError::NoBn => 4,
            AdaptError::NoTail => 5,
            AdaptError::BadLayer { .. } => 6,
            AdaptError::TooManyEntries => 7,
            AdaptError::TooLarge => 8,
            AdaptError::WrongModel => 9,
            AdaptError::BadOverlay => 10,
            AdaptError::NotInOverlay => 11,
            AdaptError::SignChange { .. } => 12,
            AdaptError::Unrepresentable { .. } => 13,
            AdaptError::Phase => 14,
            AdaptError::BadSample => 15,
            AdaptError::OverlayVersion { .. } => 16,
        }
    }
}

impl From<ModelError> for AdaptError {
    fn from(e: ModelError) -> Self {
        AdaptError::Model(e)
    }
}

impl From<crate::Error> for AdaptError {
    fn from(e: crate::Error) -> Self {
        AdaptError::Math(e)
    }
}

impl core::fmt::Display for AdaptError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            AdaptError::Model(e) => write!(f, "model: {e}"),
            AdaptError::Math(e) => write!(f, "{e}"),
            AdaptError::BufferTooSmall { needed, actual } => {
                write!(f, "buffer of {actual} bytes, adaptation needs {needed}")
            }
            AdaptError::NoBn => f.write_str("the model has no BN table: nothing to re-estimate"),
            AdaptError::NoTail => f.write_str("the last layer is not dense: no tail to train"),
            AdaptError::BadLayer { layer } => {
                write!(f, "layer {layer} lacks the weights or bias adaptation needs")
            }
            AdaptError::TooManyEntries => f.write_str("more adapted layers than an overlay holds"),
            AdaptError::TooLarge => f.write_str("the overlay would exceed 2^32 words"),
            AdaptError::WrongModel => f.write_str("the saved overlay belongs to another model"),
            AdaptError::BadOverlay => f.write_str("the saved overlay is not valid for this model"),
            AdaptError::NotInOverlay => f.write_str("the overlay's scope has no room for this"),
            AdaptError::SignChange { layer, channel } => write!(
                f,
                "layer {layer} channel {channel}: the BN scale would change sign or vanish"
            ),
            AdaptError::Unrepresentable { layer, channel } => write!(
                f,
                "layer {layer} channel {channel}: the refolded multiplier or bias is outside the format's range"
            ),
            AdaptError::Phase => f.write_str("not possible in the current adaptation phase"),
            AdaptError::BadSample => f.write_str("sample or label of the wrong size or range"),
            AdaptError::OverlayVersion { found } => write!(
                f,
                "the saved overlay has layout version {found}, this build reads version {}: adapt again",
                overlay::VERSION
            ),
        }
    }
}

/// The tap of a plain adapted run: shows nothing.
impl LayerTap for crate::kernels::NoTap {
    fn wants(&self, _i: usize) -> bool {
        false
    }
}
