//! The scenario the `finetune` program runs, in one place so that the host
//! test repeats exactly it: the `tests` crate compiles this file too
//! (`#[path]`), so it may use only `core` and `normcore` (with `adapt`).
//!
//! # The split
//! The `N` embedded samples are split by index parity: the **adaptation
//! half** is the even-indexed samples (0, 2, 4, ...; at most
//! [`MAX_ADAPT`] of them, the first ones), the **evaluation half** the
//! odd-indexed ones (1, 3, 5, ...). The embedded samples are spread evenly
//! over the test set (`normcore_trainer::assets::pick`), so both halves
//! sample the whole of it. Re-estimation sees the adaptation half without
//! its labels; accuracy is counted on the evaluation half only.
//!
//! # The drift
//! Both halves are shifted with [`normcore::adapt::drift::gain_offset`]:
//! gain [`GAIN_Q8`]/256 ≈ 0.60 about the input's real zero (the model's
//! input zero point) and an offset of [`OFFSET`] in real input units,
//! `round(OFFSET / s)` levels for the model's input scale `s` (5 levels for
//! the demo's digits at `s` = 1/16). On values in `[0, 1]` this is the
//! host's drift scenario `x → 0.6·x + 0.3` (`normcore reproduce drift`),
//! in integers: the device and the host shift to identical levels.
//!
//! # Tail training
//! After re-estimation, tail training (`normcore::adapt::tail`) runs on the
//! same shifted adaptation half, now with its labels: [`TAIL_EPOCHS`]
//! epochs, each the adaptation samples in index order, one SGD step per
//! sample with [`TAIL`]; then `Tail::commit` into the overlay, whose scope
//! is [`SCOPE`] (re-estimation and the tail). A board whose RAM cannot
//! hold the tail's workspace for its model would run re-estimation alone,
//! in [`SCOPE_RESTAT`] (the `finetune` program's `Method::Restat`).

use core::iter::{StepBy, Take};
use core::ops::Range;

use normcore::adapt::overlay::Scope;
use normcore::adapt::tail::TailConfig;

/// The gain in Q8 (154/256 = 0.6015625, the nearest to 0.6).
pub const GAIN_Q8: i32 = 154;
/// The offset in real input units.
pub const OFFSET: f32 = 0.3;
/// Most adaptation samples re-estimation uses.
pub const MAX_ADAPT: usize = 64;

/// Tail training's settings: SGD with momentum 0.9 at learning rate 0.01,
/// γ and β of the BN layer feeding the dense one trained too. Not core's
/// default (plain SGD at 0.1, the same step `lr/(1 − momentum)` in less
/// RAM): the device scenario exercises the velocity buffers, the costlier
/// path, so its RAM and cost figures are the upper bound
/// (docs/ADAPT.md, "On the device").
pub const TAIL: TailConfig = TailConfig {
    lr: 0.01,
    momentum: 0.9,
    train_bn: true,
};

/// Epochs of tail training over the adaptation half.
pub const TAIL_EPOCHS: usize = 10;

/// The overlay's scope with tail training: every BN layer re-estimated,
/// the tail (and the BN layer feeding it) trained.
pub const SCOPE: Scope = Scope {
    restat: true,
    tail: true,
};

/// The overlay's scope of re-estimation alone.
pub const SCOPE_RESTAT: Scope = Scope {
    restat: true,
    tail: false,
};

/// The offset in levels for an input scale `s`: `OFFSET / s` rounded to
/// nearest (ties away from zero), saturated to the `i32` range (0 for a
/// scale that is not a positive finite number; the parser refuses those).
pub fn offset_levels(input_scale: f32) -> i32 {
    if !(input_scale > 0.0 && input_scale.is_finite()) {
        return 0;
    }
    // Positive: adding one half and truncating rounds half away from zero;
    // `as` saturates.
    (OFFSET / input_scale + 0.5) as i32
}

/// The indices of the adaptation half of `n` samples.
pub fn adaptation(n: usize) -> Take<StepBy<Range<usize>>> {
    (0..n).step_by(2).take(MAX_ADAPT)
}

/// The indices of the evaluation half of `n` samples.
pub fn evaluation(n: usize) -> StepBy<Range<usize>> {
    (1.min(n)..n).step_by(2)
}

/// Shift one sample's levels in place (see the [module docs](self)) for a
/// model with input zero point `zero_point` and scale `input_scale`.
pub fn shift(levels: &mut [i8], zero_point: i32, input_scale: f32) {
    normcore::adapt::drift::gain_offset(levels, zero_point, GAIN_Q8, offset_levels(input_scale));
}
