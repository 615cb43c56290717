//! Refolding: a folded layer made to use new BN parameters (new statistics
//! from [`super::restat`], or new γ, β from tail training), always from the
//! file's tensors and the file's BN record, so that refolding is idempotent
//! and refolding with the file's own parameters gives the file's layer
//! back bit for bit.
//!
//! A folded layer computes `y_c = s_c·(W_c·u + b_c − E[x]_c) + β_c` with
//! `s_c = γ_c / sqrt(Var[x]_c + ε)` (DESIGN.md, "Folding"; paper Alg. 2
//! step 11 with the BN's affine map merged into the layer). With the new
//! parameters (primed) and `r_c = s'_c / s_c`:
//! ```text
//! W''_c = r_c·W'_c
//! b''_c = b'_c + (r_c − 1)·(b'_c − β_c) + s'_c·(E[x]_c − E'[x]_c) + (β'_c − β_c)
//! ```
//! (the same as [`BnState::refold_rows`], arranged so that unchanged
//! parameters give `b''_c = b'_c` exactly: every term is then an exact 0).
//!
//! # f32
//! The new `W''` and `b''` are written into the overlay: the weights in
//! the file's stored layout (row-blocked for dense and conv, `[KH, KW, C]`
//! for depthwise), so the engine runs them unchanged.
//!
//! # int8: why the weights do not change, and why that is exact
//! The exporter quantizes `W'_c` symmetrically per output channel:
//! `q_c = round(W'_c / σ_c)` with `σ_c = max|W'_c| / 127`. Scaling the row
//! by `r_c > 0` scales `σ_c` by the same `r_c`, so `round(r_c·W'_c / (r_c·σ_c))`
//! is the same `q_c`: the int8 weights in flash are exactly those a fresh
//! export of the refolded layer would have. What changes is the value of one
//! accumulator step, `a_c = s_in·σ_c = M_c·t` (`M_c` the requantization
//! multiplier, `t` the layer's requantization target scale, FORMAT.md
//! "requant scale"): `M''_c = r_c·M_c`, requantized to a Q31 mantissa and a
//! shift with [`quantize_multiplier`], and the bias, in accumulator steps,
//! moves by
//! ```text
//! Δ_c = round( ((β'_c / r_c − β_c) + s_c·(E[x]_c − E'[x]_c)) / a_c )
//! ```
//! (the real-valued `b''_c / (r_c·a_c) − b'_c / a_c`; the input zero point's
//! folded term `−zp_in·Σ q_c` is untouched because `q_c` is). With the
//! file's parameters `r_c = 1`, `Δ_c = 0`, and `M''_c` is `M_c`'s exact value
//! requantized to itself: the layer is the file's, bit for bit. The output
//! scale, zero point and clamps stay: re-estimation restores the
//! distribution BN normalizes to (γ, β unchanged), which is what the
//! calibrated output range was measured on.
//!
//! # A sign change is forbidden
//! If `r_c ≤ 0` (a γ crossing zero in tail training, or vanishing), the
//! int8 row would have to be negated (a negative multiplier is not in the
//! format) or dropped: the refold returns [`AdaptError::SignChange`] and
//! changes nothing. Tail training keeps each trained γ on its sign
//! ([`super::tail`]), so this only guards the API. f32 models refuse the
//! same, so that both kinds adapt alike.
//!
//! A refolded multiplier outside `[2^-32, 2^30)` or a bias beyond the
//! accumulator-safe range ([`bias_limit`]) is
//! [`AdaptError::Unrepresentable`]; again nothing changes.

use bytemuck::cast_slice_mut;
use fixed::types::I1F31;

use super::overlay::{bn_index, Overlay, Part, ACTIVE, HAS_WEIGHTS};
use super::AdaptError;
use crate::batchnorm::BnState;
use crate::kernels::requant::{multiplier_value, quantize_multiplier};
use crate::model::layout::bias_limit;
use crate::model::{Data, Kind, Layer, Model, Op};

/// Products per output of a weighted op (dense: inputs; conv: `KH·KW·Cin`;
/// depthwise: `KH·KW`).
fn taps(op: &Op) -> usize {
    match op {
        Op::Dense(d) => d.inputs,
        Op::Conv(c) => c.window.kernel_h * c.window.kernel_w * c.in_c,
        Op::Depthwise(d) => d.window.kernel_h * d.window.kernel_w,
        _ => 0,
    }
}

/// The largest bias magnitude the kernels take safely for this layer: with
/// the zero point folded the products sum to at most `128·127·P`, without
/// to `255·127·P` ([`bias_limit`] is the bound for both).
pub(crate) fn safe_bias(l: &Layer<'_>) -> Option<i64> {
    let p = taps(&l.op);
    if l.zp_folded {
        let worst = 128 * 127 * i64::try_from(p).ok()?;
        let limit = i64::from(i32::MAX) - worst;
        (limit > 0).then_some(limit)
    } else {
        bias_limit(p)
    }
}

/// `r_c = s'_c / s_c`, positive and finite, else [`AdaptError::SignChange`].
fn ratio(
    old: &BnState<'_>,
    new: &BnState<'_>,
    layer: usize,
    channel: usize,
) -> Result<f32, AdaptError> {
    let r = new.scale(channel) / old.scale(channel);
    if r > 0.0 && r.is_finite() {
        Ok(r)
    } else {
        Err(AdaptError::SignChange { layer, channel })
    }
}

/// One int8 channel's refold: the new multiplier bits, shift and bias.
fn int8_channel(
    l: &Layer<'_>,
    old: &BnState<'_>,
    new: &BnState<'_>,
    (layer, c): (usize, usize),
    (bias, mult, shift): (i32, i32, i32),
    limit: i64,
) -> Result<(i32, i32, i32), AdaptError> {
    let r = ratio(old, new, layer, c)?;
    let bad = AdaptError::Unrepresentable { layer, channel: c };
    let m_old = multiplier_value(I1F31::from_bits(mult), shift);
    let (m_new, s_new) = quantize_multiplier(m_old * f64::from(r)).ok_or(bad)?;
    // Real value of one accumulator step.
    let step = (m_old * f64::from(l.quant.requant_scale)) as f32;
    let moved = (new.beta[c] / r - old.beta[c]) + old.scale(c) * (old.mean[c] - new.mean[c]);
    let delta = if moved == 0.0 {
        0.0
    } else {
        libm::roundf(moved / step)
    };
    if !delta.is_finite() {
        return Err(bad);
    }
    let b = i64::from(bias) + delta as i64;
    if b.abs() > limit {
        return Err(bad);
    }
    Ok((b as i32, m_new.to_bits(), s_new))
}

/// Refold layer `i` of `model` with BN parameters `new` (γ, β, `E[x]`,
/// `Var[x]` per output channel; ε is the file's) into `overlay`: writes the
/// entry's bias and multipliers/shifts (int8) or weights and bias (f32),
/// records `new` as the layer's BN, and activates the entry. Errors (the
/// overlay unchanged): the layer has no BN record or no overlay entry
/// ([`AdaptError::NotInOverlay`]), γ, β other than the file's for an entry
/// without room for them ([`AdaptError::NotInOverlay`]: only the layer a
/// tail trains has it, [`Overlay::holds_affine`]), `new` is invalid, a
/// scale would change sign, a value is unrepresentable.
pub fn refold(
    model: &Model<'_>,
    i: usize,
    new: &BnState<'_>,
    overlay: &mut Overlay<'_>,
) -> Result<(), AdaptError> {
    let record = model.bn_record(bn_index(model, i).ok_or(AdaptError::NoBn)?)?;
    let old = record.state();
    let e = overlay.entry_of(i).ok_or(AdaptError::NotInOverlay)?;
    let l = model.layer(i)?;
    let channels = l.op.out_channels();
    let new = BnState {
        eps: old.eps,
        ..*new
    };
    new.check(channels)?;
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    let file_affine = same(new.gamma, old.gamma) && same(new.beta, old.beta);
    if !(overlay.holds_affine(e) || file_affine) {
        return Err(AdaptError::NotInOverlay);
    }
    match model.kind() {
        Kind::Int8 => refold_int8(&l, i, e, &old, &new, overlay)?,
        Kind::F32 => refold_f32(&l, i, e, &old, &new, overlay)?,
    }
    overlay.set_bn(e, &new)?;
    overlay.set_flags(e, ACTIVE, true);
    Ok(())
}

fn refold_int8(
    l: &Layer<'_>,
    i: usize,
    e: usize,
    old: &BnState<'_>,
    new: &BnState<'_>,
    overlay: &mut Overlay<'_>,
) -> Result<(), AdaptError> {
    let bad = AdaptError::BadLayer { layer: i };
    let (Some(Data::I32(bias)), Some((mult, shift))) = (l.bias, l.requant) else {
        return Err(bad);
    };
    let limit = safe_bias(l).ok_or(bad)?;
    let c = l.op.out_channels();
    // Check every channel before writing anything.
    for ch in 0..c {
        int8_channel(l, old, new, (i, ch), (bias[ch], mult[ch], shift[ch]), limit)?;
    }
    let has = |o: &Overlay<'_>, p| o.part(e, p).is_some();
    if !(has(overlay, Part::Bias) && has(overlay, Part::Multiplier) && has(overlay, Part::Shift)) {
        return Err(AdaptError::NotInOverlay);
    }
    let ob: &mut [i32] = cast_slice_mut(overlay.part_mut(e, Part::Bias).ok_or(bad)?);
    ob.copy_from_slice(bias.get(..ob.len()).ok_or(bad)?);
    for ch in 0..c {
        let (b, m, s) = int8_channel(l, old, new, (i, ch), (bias[ch], mult[ch], shift[ch]), limit)?;
        cast_slice_mut::<u32, i32>(overlay.part_mut(e, Part::Bias).ok_or(bad)?)[ch] = b;
        cast_slice_mut::<u32, i32>(overlay.part_mut(e, Part::Multiplier).ok_or(bad)?)[ch] = m;
        cast_slice_mut::<u32, i32>(overlay.part_mut(e, Part::Shift).ok_or(bad)?)[ch] = s;
    }
    Ok(())
}

/// The output channel of stored weight `k` of layer `l` (`None` for the
/// zero padding rows of a row-blocked layout).
pub(crate) fn channel_of(l: &Layer<'_>, k: usize) -> Option<usize> {
    let c = l.op.out_channels();
    match l.op {
        Op::Depthwise(_) => Some(k % c.max(1)),
        _ => {
            let r = l.block_rows.max(1);
            let cols = taps(&l.op).max(1);
            let row = k / (cols * r) * r + k % r;
            (row < c).then_some(row)
        }
    }
}

fn refold_f32(
    l: &Layer<'_>,
    i: usize,
    e: usize,
    old: &BnState<'_>,
    new: &BnState<'_>,
    overlay: &mut Overlay<'_>,
) -> Result<(), AdaptError> {
    let bad = AdaptError::BadLayer { layer: i };
    let (Some(Data::F32(w)), Some(Data::F32(bias))) = (l.weights, l.bias) else {
        return Err(bad);
    };
    let c = l.op.out_channels();
    for ch in 0..c {
        ratio(old, new, i, ch)?;
    }
    if overlay.part(e, Part::Weights).map(<[u32]>::len) != Some(w.len())
        || overlay.part(e, Part::Bias).map(<[u32]>::len) != Some(bias.len())
    {
        return Err(AdaptError::NotInOverlay);
    }
    let ow: &mut [f32] = cast_slice_mut(overlay.part_mut(e, Part::Weights).ok_or(bad)?);
    for (k, (o, &v)) in ow.iter_mut().zip(w).enumerate() {
        *o = match channel_of(l, k) {
            Some(ch) => v * (new.scale(ch) / old.scale(ch)),
            None => v,
        };
    }
    let ob: &mut [f32] = cast_slice_mut(overlay.part_mut(e, Part::Bias).ok_or(bad)?);
    ob.copy_from_slice(bias);
    for ch in 0..c {
        let r = new.scale(ch) / old.scale(ch);
        let b = bias[ch];
        ob[ch] = b
            + ((r - 1.0) * (b - old.beta[ch])
                + new.scale(ch) * (old.mean[ch] - new.mean[ch])
                + (new.beta[ch] - old.beta[ch]));
    }
    overlay.set_flags(e, HAS_WEIGHTS, true);
    Ok(())
}
