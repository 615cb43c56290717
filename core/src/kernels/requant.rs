//! Requantization: from an i32 accumulator to an int8 activation.
//!
//! # Fixed-point formats (docs/FORMAT.md, "int8 files")
//!
//! A real value `r` is stored as an integer `q` with `r = scale · (q - zero_point)`.
//!
//! | quantity | storage | format |
//! |---|---|---|
//! | activation | `i8` | asymmetric per tensor, `q ∈ [-128, 127]`, zero point in `[-128, 127]` |
//! | weight | `i8` | symmetric per output channel, `q ∈ [-127, 127]`, zero point 0, `scale_w[c] = max\|W'[c,:]\| / 127` |
//! | bias | `i32` | scale `scale_in · scale_w[c]`, zero point 0 |
//! | accumulator | `i32` | `acc = bias + Σ (x - zp_in)·w`, scale `scale_in · scale_w[c]`; exact while `P·255·127 < 2^31` (`P < 66,000` terms, the model reader checks), wrapping modulo 2^32 beyond |
//! | multiplier `m` | `i32` bits of an [`I1F31`] | Q1.31, `m ∈ [2^30, 2^31)` as bits, i.e. `[0.5, 1)`; `0` encodes `M = 0` |
//! | shift `s` | `i32` | `s ∈ [-31, 30]` |
//!
//! Q1.31 ([`I1F31`]: one sign bit, 31 fraction bits) is `[-1, 1)` in steps of
//! `2^-31`: bits `0x4000_0000` are `0.5`, bits `0x7FFF_FFFF` are `1 - 2^-31`,
//! bits `0x8000_0000` are `-1`. A multiplier uses only `[0.5, 1)`, so that it
//! keeps all 31 fraction bits of precision: the real multiplier
//! `M = scale_in · scale_w[c] / scale_out` is `M = m · 2^-31 · 2^s`, with a
//! relative representation error of at most `2^-31` (half a step of `m`
//! relative to `m ≥ 2^30`). For example `M = 0.0037` is `m = 0x793D_D97F`
//! (`0.9472`) and `s = -8`.
//!
//! # Requantization
//! With the total right shift `t = 31 - s` (`1 ..= 62`):
//! ```text
//! q = clamp(((acc · m + 2^(t-1)) >> t) + zero_point, clamp_min, clamp_max)
//! ```
//! The product is taken in i64 (`|acc·m| ≤ 2^62`, so adding the rounding
//! term `2^(t-1) ≤ 2^61` cannot overflow) and `>>` is arithmetic, so the
//! division by `2^t` rounds half up (towards +∞ on ties, also for negative
//! values); the clamp saturates. This equals `⌊acc·M + 1/2⌋` exactly, with
//! `M` the represented multiplier. For sigmoid/tanh layers the clamped `q`
//! then indexes a 256-entry table, `y = table[q + 128]`.
//!
//! # The 32-bit form (what the kernels execute)
//! For `t ≥ 33` (`s ≤ -2`, `M < 2^-2`: every layer whose scales shrink,
//! the usual case) the same number is computed in 32-bit arithmetic after
//! one high multiply, as gemmlowp does:
//! ```text
//! h = ⌊acc·m / 2^32⌋                     (mul_high: SMMUL / the high word of SMULL)
//! q = ⌊(h + 2^(n-1)) / 2^n⌋,  n = t - 32  (rounding_shift, round half up)
//! ```
//! Proof that `q = ⌊(acc·m + 2^(t-1)) / 2^t⌋` exactly: for an integer `P`
//! and `a, b ≥ 1`, `⌊⌊P/a⌋/b⌋ = ⌊P/(a·b)⌋`, and `⌊P/a⌋ + k = ⌊(P + k·a)/a⌋`
//! for an integer `k`. So `h + 2^(n-1) = ⌊(acc·m + 2^(n-1)·2^32)/2^32⌋ =
//! ⌊(acc·m + 2^(t-1))/2^32⌋`, and dividing by `2^n` with a floor gives
//! `⌊(acc·m + 2^(t-1))/2^(32+n)⌋ = ⌊(acc·m + 2^(t-1))/2^t⌋`. No rounding
//! happens before the last step (the high word is a floor, not gemmlowp's
//! rounded doubling product), which is why the result is bit-identical to
//! the i64 formula, not merely close; `|h| < 2^30` and `2^(n-1) ≤ 2^29`,
//! so nothing overflows. `rounding_shift` evaluates `⌊(h + 2^(n-1))/2^n⌋`
//! as `⌊(⌊h/2^(n-1)⌋ + 1)/2⌋` (the same identities with `a = 2^(n-1)`,
//! `b = 2`). The tests check both forms against an exact i128 reference
//! exhaustively on a structured domain (every shift, multipliers at the
//! range's edges and odd multiples of powers of two, accumulators around
//! every exact tie and every power of two) and on random inputs.
//! For `t ≤ 32` (`M ≥ 2^-2`, rare) the kernels keep the i64 formula.

use crate::error::{check_len, Error, Operand, Param};
use fixed::types::I1F31;

/// Smallest non-zero multiplier: `0.5` in Q1.31.
pub const MULTIPLIER_MIN: i32 = 1 << 30;
/// Smallest valid shift.
pub const SHIFT_MIN: i32 = -31;
/// Largest valid shift.
pub const SHIFT_MAX: i32 = 30;

/// A valid multiplier: `0` or in `[2^30, 2^31)` (FORMAT.md).
pub(crate) const fn multiplier_ok(m: i32) -> bool {
    m == 0 || m >= MULTIPLIER_MIN
}

/// A valid shift: in `[-31, 30]` (FORMAT.md).
pub(crate) const fn shift_ok(s: i32) -> bool {
    SHIFT_MIN <= s && s <= SHIFT_MAX
}

/// Requantize one accumulator: `(acc·m + 2^(t-1)) >> t` with `t = 31 - shift`
/// (round half up), saturated to the i32 range.
///
/// Valid ranges (FORMAT.md): `multiplier ∈ [2^30, 2^31)` (the bits of an
/// [`I1F31`] in `[0.5, 1)`), or `0` for a real multiplier `M = 0`;
/// `shift ∈ [-31, 30]`. The function is total: a shift outside the range is
/// clamped into it, any multiplier (even negative) gives the exact rounded
/// product, and only a result beyond i32 (possible for shifts near 30)
/// saturates. [`OutputStage::validate`] rejects out-of-range parameters.
///
/// Evaluated as `⌊(⌊acc·m / 2^(t-1)⌋ + 1) / 2⌋`, the same number: with
/// `acc·m = q·2^(t-1) + r`, `0 ≤ r < 2^(t-1)`, both equal `⌊(q + 1)/2⌋`
/// because `r/2^t < 1/2`. For `t ≥ 33` (`M < 2^-2`, the usual case) the
/// inner floor is the high word of the 64-bit product shifted right, so
/// everything after the multiply is 32-bit: a multiply-high, two shifts, an
/// `and` and an add on a Cortex-M4.
#[inline]
pub fn requantize(acc: i32, multiplier: i32, shift: i32) -> i32 {
    requantize_unchecked(acc, multiplier, shift.clamp(SHIFT_MIN, SHIFT_MAX))
}

/// [`requantize`] for a shift already known to be in `[-31, 30]` (a
/// validated stage): exact there, and still total (wrapping shifts, no
/// panic) for any other shift.
#[inline(always)]
pub(crate) fn requantize_unchecked(acc: i32, multiplier: i32, shift: i32) -> i32 {
    let t = 31i32.wrapping_sub(shift); // 1 ..= 62 when valid
    if t >= 33 {
        // The 32-bit form (module docs): |acc·m| ≤ 2^62, so the high word
        // is below 2^30 in magnitude and the rounding shift cannot overflow.
        rounding_shift(mul_high(acc, multiplier), (t - 32) as u32)
    } else {
        requantize_wide(acc, multiplier, t)
    }
}

/// The `t ≤ 32` case of [`requantize_unchecked`] (`M ≥ 2^-2`, rare): the
/// i64 formula, saturated to i32. Not inlined: one copy for every output
/// loop (code size), off the hot path.
#[inline(never)]
fn requantize_wide(acc: i32, multiplier: i32, t: i32) -> i32 {
    let prod = i64::from(acc) * i64::from(multiplier);
    let q = prod.wrapping_shr(t.wrapping_sub(1) as u32);
    ((q >> 1) + (q & 1)).clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32
}

/// `⌊a·b / 2^32⌋`: the high word of the 64-bit product (one `SMMUL` on a
/// Cortex-M4, `SMULL` keeping the high register elsewhere).
#[inline(always)]
pub(crate) fn mul_high(a: i32, b: i32) -> i32 {
    ((i64::from(a) * i64::from(b)) >> 32) as i32
}

/// `⌊(h + 2^(n-1)) / 2^n⌋` for `n ≥ 1`: `h / 2^n` rounded half up (towards
/// +∞ on ties, negative values too), evaluated as `⌊(⌊h / 2^(n-1)⌋ + 1) / 2⌋`
/// (the same number, see the module docs) so that it never overflows:
/// two shifts, an `and` and an add. Total for any `n` (shifts wrap).
#[inline(always)]
pub(crate) fn rounding_shift(h: i32, n: u32) -> i32 {
    let q = h.wrapping_shr(n.wrapping_sub(1));
    (q >> 1) + (q & 1)
}

/// Split a real multiplier `M` into a Q1.31 mantissa and a shift,
/// `M ≈ m · 2^s` with `m ∈ [0.5, 1)` (host-side, for the exporter).
///
/// `m` is `M / 2^s` rounded to the nearest step of `2^-31` (ties away from
/// zero); when rounding reaches `1.0` the result is renormalised to
/// `m = 0.5`, `s + 1`. So `|m·2^s - M| ≤ 2^-32 · 2^s`.
///
/// `M = 0` gives `(0, 0)`. Returns `None` for a negative or non-finite `M`
/// and when `s` falls outside `[-31, 30]` (`M < 2^-32` or `M ≥ 2^30`, minus
/// rounding at the edges).
pub fn quantize_multiplier(real: f64) -> Option<(I1F31, i32)> {
    if real == 0.0 {
        return Some((I1F31::ZERO, 0));
    }
    if !(real > 0.0 && real.is_finite()) {
        return None;
    }
    // real = frac · 2^exp with frac ∈ [0.5, 1); frac·2^31 is exact in f64.
    let (frac, exp) = libm::frexp(real);
    let mut bits = libm::round(frac * 2_147_483_648.0) as i64; // in [2^30, 2^31]
    let mut shift = exp;
    if bits == 1 << 31 {
        bits = 1 << 30;
        shift += 1;
    }
    if !(SHIFT_MIN..=SHIFT_MAX).contains(&shift) {
        return None;
    }
    Some((I1F31::from_bits(bits as i32), shift))
}

/// The real multiplier a `(multiplier bits, shift)` pair represents,
/// `m · 2^-31 · 2^s`, exact in f64 (31 bits of mantissa scaled by a power
/// of two: `ldexp`, which on a device also needs no `exp2` table).
pub fn multiplier_value(multiplier: I1F31, shift: i32) -> f64 {
    libm::ldexp(f64::from(multiplier.to_bits()), shift.saturating_sub(31))
}

/// Asymmetric int8 parameters `(scale, zero_point)` of a value range
/// (FORMAT.md, "int8 files"): `[lo, hi]` extended to contain 0 maps onto
/// the 256 levels, `scale = (hi − lo)/255`, `zero_point = round(−128 −
/// lo/scale)` clamped to `[−128, 127]`; a range of width 0 is taken as
/// `[lo, lo + 1]`. The exporter's calibration and on-device tail training
/// both choose activation quantization with it.
pub fn range_params(lo: f32, hi: f32) -> (f32, i32) {
    let lo = f64::from(lo.min(0.0));
    let mut hi = f64::from(hi.max(0.0));
    if hi - lo <= 0.0 {
        hi = lo + 1.0;
    }
    let scale = ((hi - lo) / 255.0) as f32;
    let zero_point = libm::round(-128.0 - lo / f64::from(scale)).clamp(-128.0, 127.0) as i32;
    (scale, zero_point)
}

/// One output channel quantized by [`quantize_row`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowQuant {
    /// The i32 bias as stored (the input zero point folded in when asked).
    pub bias: i32,
    /// Q1.31 multiplier bits.
    pub multiplier: i32,
    /// Shift.
    pub shift: i32,
    /// The row was below the output resolution and is stored as zeros.
    pub zeroed: bool,
    /// The bias was saturated to the accumulator-safe range.
    pub saturated: bool,
}

/// Why a channel cannot be quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum RowFault {
    /// A weight or the bias is not finite.
    NonFinite,
    /// `s_in·s_w/s_out` is too large for the format's multiplier.
    MultiplierTooLarge,
    /// The bias does not fit i32 after folding the zero point.
    BiasOverflow,
}

/// Quantize one output channel of a weighted layer (FORMAT.md "int8
/// files"; the exporter's definition, also used by on-device tail
/// training): `taps` real weights `w(p)` and the real bias `bias`, input
/// scale `s_in` and zero point `zp_in`, the requantization target scale
/// `s_out`, `limit` the bias bound ([`crate::model::layout::bias_limit`]).
///
/// - weights symmetric: `s_w = max|w|/127`, `q(p) = round(w(p)/s_w)` in
///   `[−127, 127]`, handed to `put(p, q)`;
/// - multiplier `M = s_in·s_w/s_out` ([`quantize_multiplier`]);
/// - bias `round(bias/(s_in·s_w))` saturated to `±limit`, then, with
///   `zp_folded`, `− zp_in·Σ_p q(p)`.
///
/// A row whose multiplier would be below `2^-32` (all zero, or worth less
/// than half an output step in total) is stored as zeros with
/// `s_w = s_out/s_in` (`M = 1`, the bias still counts): `zeroed`.
#[allow(clippy::too_many_arguments)]
pub fn quantize_row(
    taps: usize,
    w: impl Fn(usize) -> f32,
    bias: f32,
    (s_in, zp_in): (f64, i32),
    s_out: f64,
    zp_folded: bool,
    limit: i64,
    mut put: impl FnMut(usize, i8),
) -> Result<RowQuant, RowFault> {
    let max_abs = (0..taps).fold(0.0f32, |m, p| m.max(libm::fabsf(w(p))));
    if !max_abs.is_finite() || !bias.is_finite() || (0..taps).any(|p| !w(p).is_finite()) {
        return Err(RowFault::NonFinite);
    }
    let mut s_w = f64::from(max_abs) / 127.0;
    let mut mult = if s_w > 0.0 {
        quantize_multiplier(s_in * s_w / s_out)
    } else {
        None
    };
    if s_w > 0.0 && mult.is_none() && s_in * s_w / s_out > 1.0 {
        return Err(RowFault::MultiplierTooLarge);
    }
    let zeroed = mult.is_none();
    if zeroed {
        s_w = s_out / s_in;
        mult = quantize_multiplier(1.0);
    }
    let (m, shift) = mult.ok_or(RowFault::MultiplierTooLarge)?;
    let mut row_sum = 0i64;
    for p in 0..taps {
        let v = if zeroed {
            0
        } else {
            libm::round(f64::from(w(p)) / s_w).clamp(-127.0, 127.0) as i8
        };
        put(p, v);
        row_sum += i64::from(v);
    }
    let real = libm::round(f64::from(bias) / (s_in * s_w));
    let mut b = real.clamp(-(limit as f64), limit as f64) as i64;
    let saturated = (b as f64) != real;
    if zp_folded {
        b -= i64::from(zp_in) * row_sum;
    }
    Ok(RowQuant {
        bias: i32::try_from(b).map_err(|_| RowFault::BiasOverflow)?,
        multiplier: m.to_bits(),
        shift,
        zeroed: zeroed && max_abs > 0.0,
        saturated,
    })
}

/// The per-layer output stage of an int8 kernel: per-channel requantization,
/// zero point, clamp and optional lookup table (see the [module docs](self)).
///
/// Build it from a model's layer record (FORMAT.md offsets 28–52) and check
/// it with [`OutputStage::validate`]; every int8 kernel validates it before
/// writing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OutputStage<'a> {
    /// Q1.31 multiplier bits per output channel (`I1F31::to_bits`): `0` or
    /// in `[2^30, 2^31)`.
    pub multipliers: &'a [i32],
    /// Shift per output channel, in `[-31, 30]`.
    pub shifts: &'a [i32],
    /// Added after requantization (the output zero point, or for
    /// sigmoid/tanh the zero point of the pre-activation), in `[-128, 127]`.
    pub zero_point: i32,
    /// Lower clamp, `≥ -128` (the output zero point for ReLU).
    pub clamp_min: i32,
    /// Upper clamp, `≤ 127`, `≥ clamp_min` (the level of 6.0 for ReLU6).
    pub clamp_max: i32,
    /// Sigmoid/tanh table indexed by `q + 128` after the clamp.
    pub lut: Option<&'a [i8; 256]>,
}

impl OutputStage<'_> {
    /// Check the stage for `channels` output channels: both per-channel
    /// slices have `channels` entries (`LengthMismatch` naming
    /// `Operand::Multiplier` / `Operand::Shift`), the zero point lies in
    /// `[-128, 127]` (`Param::ZeroPoint`), `-128 ≤ clamp_min ≤ clamp_max ≤ 127`
    /// (`Param::Clamp`), every multiplier is `0` or in `[2^30, 2^31)`
    /// (`Param::Multiplier`) and every shift in `[-31, 30]` (`Param::Shift`).
    pub fn validate(&self, channels: usize) -> Result<(), Error> {
        check_len(Operand::Multiplier, channels, self.multipliers.len())?;
        check_len(Operand::Shift, channels, self.shifts.len())?;
        if !(-128..=127).contains(&self.zero_point) {
            return Err(Error::InvalidParam(Param::ZeroPoint));
        }
        if !(-128 <= self.clamp_min && self.clamp_min <= self.clamp_max && self.clamp_max <= 127) {
            return Err(Error::InvalidParam(Param::Clamp));
        }
        if !self.multipliers.iter().all(|&m| multiplier_ok(m)) {
            return Err(Error::InvalidParam(Param::Multiplier));
        }
        if !self.shifts.iter().all(|&s| shift_ok(s)) {
            return Err(Error::InvalidParam(Param::Shift));
        }
        Ok(())
    }

    /// The int8 output of `channel` for accumulator `acc`: requantize, add
    /// the zero point, clamp, then look up the table if there is one.
    ///
    /// Never panics: on an unvalidated stage a channel without parameters
    /// uses `M = 0`, out-of-range shifts are clamped, and the result is
    /// additionally saturated to `[-128, 127]`.
    #[inline]
    pub fn apply(&self, channel: usize, acc: i32) -> i8 {
        let m = self.multipliers.get(channel).copied().unwrap_or(0);
        let s = self.shifts.get(channel).copied().unwrap_or(0);
        let q = requantize(acc, m, s).saturating_add(self.zero_point);
        // max/min (not clamp): they never panic, even for min > max.
        let q = q.max(self.clamp_min).min(self.clamp_max).clamp(-128, 127) as i8;
        match self.lut {
            Some(table) => table[usize::from(q as u8 ^ 0x80)],
            None => q,
        }
    }

    /// Requantize, add the zero point and clamp, for a validated stage and
    /// shift (the kernels' path: no range clamps of the shift or the result,
    /// which validation makes redundant; any input still gives some value,
    /// never a panic). The result is in `[clamp_min, clamp_max]`.
    #[inline(always)]
    pub(crate) fn clamped(&self, acc: i32, multiplier: i32, shift: i32) -> i32 {
        requantize_unchecked(acc, multiplier, shift)
            .saturating_add(self.zero_point)
            .max(self.clamp_min)
            .min(self.clamp_max)
    }

    /// Write the outputs of a group of channels of a validated stage:
    /// `y[k] = stage(acc[k])` with the channels' multipliers `m` and shifts
    /// `s`, as many as `y` holds. Two loops: the usual stage (no table,
    /// clamps the whole int8 range), where the clamp is one `SSAT`, and
    /// every other stage, testing for the table per output. Not inlined:
    /// one copy serves every kernel (code size).
    #[inline(never)]
    pub(crate) fn write(&self, acc: &[i32], m: &[i32], s: &[i32], y: &mut [i8]) {
        let outs = y.iter_mut().zip(acc).zip(m.iter().zip(s));
        if self.lut.is_none() && (self.clamp_min, self.clamp_max) == (-128, 127) {
            // The whole int8 range (no activation, or ReLU at zero point
            // -128, the usual calibration): the clamp is one `SSAT`.
            for ((o, &a), (&m, &s)) in outs {
                super::unroll_barrier();
                let q = requantize_unchecked(a, m, s).saturating_add(self.zero_point);
                *o = q.clamp(-128, 127) as i8;
            }
        } else {
            for ((o, &a), (&m, &s)) in outs {
                super::unroll_barrier();
                let q = self.clamped(a, m, s) as i8;
                // The table read per output (`black_box`): one loop for
                // both cases instead of one per case (code size: the int8
                // engine's 12 KiB; about 6 instructions per output of a
                // sigmoid/tanh layer).
                *o = match *core::hint::black_box(&self.lut) {
                    // q + 128 as a byte: always a valid index, no bounds check.
                    Some(table) => table[usize::from(q as u8 ^ 0x80)],
                    None => q,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Exact reference: `⌊acc·m / 2^t + 1/2⌋` in i128, saturated to i32.
    fn reference(acc: i32, m: i32, shift: i32) -> i32 {
        let t = 31 - shift;
        let num = i128::from(acc) * i128::from(m);
        let den = 1i128 << t;
        // floor((2·num + den) / (2·den)) = floor(num/den + 1/2)
        let q = (2 * num + den).div_euclid(2 * den);
        q.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i32
    }

    fn multiplier() -> impl Strategy<Value = i32> {
        prop_oneof![
            1 => Just(0),
            1 => Just(MULTIPLIER_MIN),
            1 => Just(i32::MAX),
            8 => MULTIPLIER_MIN..=i32::MAX,
        ]
    }

    fn accumulator() -> impl Strategy<Value = i32> {
        prop_oneof![
            1 => Just(i32::MIN),
            1 => Just(i32::MAX),
            1 => Just(0),
            1 => -1i32..=1,
            4 => any::<i32>(),
            4 => -100_000i32..100_000,
        ]
    }

    fn shift() -> impl Strategy<Value = i32> {
        prop_oneof![1 => Just(SHIFT_MIN), 1 => Just(SHIFT_MAX), 6 => SHIFT_MIN..=SHIFT_MAX]
    }

    proptest! {
        #[test]
        fn requantize_matches_exact_reference(acc in accumulator(), m in multiplier(), s in shift()) {
            prop_assert_eq!(requantize(acc, m, s), reference(acc, m, s));
            // The kernels' path (no shift clamp) agrees for valid shifts.
            prop_assert_eq!(requantize_unchecked(acc, m, s), reference(acc, m, s));
            // The 32-bit form where the kernels use it (t ≥ 33).
            let t = 31 - s;
            if t >= 33 {
                let q32 = rounding_shift(mul_high(acc, m), (t - 32) as u32);
                let q64 = (i64::from(acc) * i64::from(m) + (1i64 << (t - 1))) >> t;
                prop_assert_eq!(i64::from(q32), q64);
            }
        }

        /// The represented multiplier is within half a step of `m` (2^-31
        /// scaled by 2^s) of the requested one, and `m` is normalised.
        #[test]
        fn quantize_multiplier_round_trip(log10 in -9.0f64..3.0) {
            let real = 10f64.powf(log10);
            let (m, s) = quantize_multiplier(real).unwrap();
            let bits = m.to_bits();
            prop_assert!(bits >= MULTIPLIER_MIN, "not normalised: {bits:#x}");
            prop_assert!((SHIFT_MIN..=SHIFT_MAX).contains(&s));
            let back = multiplier_value(m, s);
            let half_step = libm::exp2(f64::from(s) - 32.0);
            prop_assert!((back - real).abs() <= half_step, "{real} -> {back} (m {bits:#x}, s {s})");
            // Relative error at most 2^-31.
            prop_assert!((back - real).abs() <= real * libm::exp2(-31.0));
        }

        /// Requantizing with the quantized multiplier is within half a level
        /// of the real product, plus what the representation error of M
        /// (≤ 2^-31 relative) moves it: `|acc|·real·2^-31`, at most 2^-7
        /// for accumulators below 2^24. (The bound was `0.5 + 1e-3` until a
        /// case with `|acc|·real ≈ 1.2e7` showed the representation term
        /// reaching 5.6e-3: `core/proptest-regressions/kernels/requant.txt`.)
        #[test]
        fn requantize_approximates_real_product(log10 in -6.0f64..0.0, acc in -(1i32 << 24)..(1 << 24)) {
            let real = 10f64.powf(log10);
            let (m, s) = quantize_multiplier(real).unwrap();
            let q = requantize(acc, m.to_bits(), s);
            let exact = f64::from(acc) * real;
            let bound = 0.5 + exact.abs() * libm::exp2(-31.0) + 1e-9;
            prop_assert!((f64::from(q) - exact).abs() <= bound, "{acc}·{real}: {q} vs {exact}");
        }
    }

    /// Multipliers of the structured domain: the range's edges, odd
    /// multiples of powers of two (whose products hit exact ties) and a
    /// few irregular values.
    fn structured_multipliers() -> Vec<i32> {
        let mut m = vec![
            MULTIPLIER_MIN,
            MULTIPLIER_MIN + 1,
            0x5555_5555,
            0x793D_D97F,
            i32::MAX - 1,
            i32::MAX,
        ];
        for (odd, e) in [(3, 29), (5, 28), (7, 28), (9, 27), (15, 27), (255, 23)] {
            m.push(odd << e);
        }
        m
    }

    /// Accumulators of the structured domain for shift `s` and multiplier
    /// `m`: every value in `[-2^12, 2^12]`, each power of two and its
    /// neighbours (both signs), the i32 edges, and for every exact tie
    /// `acc·m = odd·2^(t-1)` that an i32 accumulator reaches, the tie and
    /// its two neighbours.
    fn structured_accumulators(s: i32, m: i32) -> Vec<i32> {
        let mut a: Vec<i32> = (-4096..=4096).collect();
        for k in 0..31 {
            for d in [-2i64, -1, 0, 1, 2] {
                for sign in [-1i64, 1] {
                    let v = sign * ((1i64 << k) + d);
                    if let Ok(v) = i32::try_from(v) {
                        a.push(v);
                    }
                }
            }
        }
        a.extend([i32::MIN, i32::MIN + 1, i32::MAX - 1, i32::MAX]);
        // m = o·2^e with o odd: acc = j·2^(t-1-e) with j odd gives
        // acc·m = (j·o)·2^(t-1), an odd multiple of half a step: a tie.
        let t = 31 - s;
        let e = m.trailing_zeros() as i32;
        if t - 1 - e >= 0 && t - 1 - e < 31 {
            let step = 1i64 << (t - 1 - e);
            for j in [1i64, 3, 5, 7, 11, 101, 1001] {
                for sign in [-1i64, 1] {
                    for d in [-1i64, 0, 1] {
                        if let Ok(v) = i32::try_from(sign * j * step + d) {
                            a.push(v);
                        }
                    }
                }
            }
        }
        a
    }

    /// The 32-bit form equals the exact `(acc·m + 2^(t-1)) >> t` (and the
    /// i128 reference) on the whole structured domain: every valid shift,
    /// the structured multipliers, the structured accumulators (ties
    /// included, which is where a different rounding would show).
    #[test]
    fn high_multiply_form_is_exact_on_structured_domain() {
        let mut checked = 0u64;
        let mut ties = 0u64;
        for s in SHIFT_MIN..=SHIFT_MAX {
            let t = 31 - s;
            for m in structured_multipliers() {
                for acc in structured_accumulators(s, m) {
                    let prod = i64::from(acc) * i64::from(m);
                    let want = reference(acc, m, s);
                    assert_eq!(requantize_unchecked(acc, m, s), want, "{acc} {m} {s}");
                    if t >= 33 {
                        // The 32-bit form, term by term, and today's i64
                        // formula (no overflow: |prod| ≤ 2^62).
                        let h = mul_high(acc, m);
                        assert_eq!(i64::from(h), prod >> 32);
                        let q32 = rounding_shift(h, (t - 32) as u32);
                        let q64 = (prod + (1i64 << (t - 1))) >> t;
                        assert_eq!(i64::from(q32), q64, "{acc} {m} {s}");
                        assert_eq!(q32, want, "{acc} {m} {s}");
                        ties += u64::from(prod.rem_euclid(1i64 << t) == 1i64 << (t - 1));
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 6_000_000, "{checked}");
        // The domain does reach exact ties of the 32-bit form.
        assert!(ties > 1_000, "{ties}");
    }

    /// `rounding_shift` is `h / 2^n` rounded half up, for every `h` in a
    /// window around each multiple of `2^n` and every `n` it is used with.
    #[test]
    fn rounding_shift_rounds_half_up() {
        for n in 1..=30u32 {
            for base in [
                -(1i64 << 30),
                -(1i64 << n),
                0,
                1i64 << n,
                (1i64 << 30) - (1i64 << n),
            ] {
                for d in -3i64..=3 {
                    for half in [0i64, 1i64 << (n - 1)] {
                        let h = base + half + d;
                        let Ok(h32) = i32::try_from(h) else { continue };
                        let want = (2 * h + (1i64 << n)).div_euclid(1i64 << (n + 1));
                        assert_eq!(i64::from(rounding_shift(h32, n)), want, "{h} {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn requantize_extremes() {
        for &acc in &[i32::MIN, i32::MIN + 1, -1, 0, 1, i32::MAX] {
            for &m in &[
                0,
                MULTIPLIER_MIN,
                MULTIPLIER_MIN + 1,
                i32::MAX - 1,
                i32::MAX,
            ] {
                for s in SHIFT_MIN..=SHIFT_MAX {
                    assert_eq!(requantize(acc, m, s), reference(acc, m, s), "{acc} {m} {s}");
                }
            }
        }
        // Round half up: 3·0.5 = 1.5 -> 2, -3·0.5 = -1.5 -> -1.
        assert_eq!(requantize(3, MULTIPLIER_MIN, 0), 2);
        assert_eq!(requantize(-3, MULTIPLIER_MIN, 0), -1);
        // Shift 30: M close to 2^30, saturates.
        assert_eq!(requantize(i32::MAX, i32::MAX, 30), i32::MAX);
        assert_eq!(requantize(i32::MIN, i32::MAX, 30), i32::MIN);
        // Out-of-range shifts and negative multipliers do not panic.
        assert_eq!(
            requantize(5, MULTIPLIER_MIN, 100),
            requantize(5, MULTIPLIER_MIN, 30)
        );
        assert_eq!(
            requantize(5, MULTIPLIER_MIN, -100),
            requantize(5, MULTIPLIER_MIN, -31)
        );
        assert_eq!(
            requantize(i32::MIN, i32::MIN, -31),
            reference(i32::MIN, i32::MIN, -31)
        );
        assert_eq!(requantize(4, -MULTIPLIER_MIN, 0), -2);
    }

    #[test]
    fn quantize_multiplier_edges() {
        assert_eq!(quantize_multiplier(0.0), Some((I1F31::ZERO, 0)));
        assert_eq!(quantize_multiplier(-0.0), Some((I1F31::ZERO, 0)));
        for bad in [
            -1e-3,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-12,
            2e9,
        ] {
            assert_eq!(quantize_multiplier(bad), None, "{bad}");
        }
        // Powers of two are exact: 0.5 · 2^s.
        assert_eq!(quantize_multiplier(1.0), Some((I1F31::from_num(0.5), 1)));
        assert_eq!(quantize_multiplier(0.25), Some((I1F31::from_num(0.5), -1)));
        // The documented example.
        let (m, s) = quantize_multiplier(0.0037).unwrap();
        assert_eq!((m.to_bits(), s), (0x793D_D97F, -8));
        // Just below 1.0 in the mantissa: rounds up to 1.0 and renormalises.
        let (m, s) = quantize_multiplier(1.0 - 1e-12).unwrap();
        assert_eq!((m.to_bits(), s), (MULTIPLIER_MIN, 1));
        // The range edges: 2^-32 is 0.5·2^-31; 2^30 would need shift 31.
        assert_eq!(
            quantize_multiplier(libm::exp2(-32.0)),
            Some((I1F31::from_num(0.5), -31))
        );
        assert!(quantize_multiplier(libm::exp2(30.0) * 0.99).is_some());
        assert_eq!(quantize_multiplier(libm::exp2(30.0)), None);
    }

    /// `m·2^(s-31)` exactly, for every shift and the mantissa's edges: the
    /// value the previous `exp2` form gave (exact powers of two), bit for
    /// bit.
    #[test]
    fn multiplier_value_is_exact() {
        for s in SHIFT_MIN..=SHIFT_MAX {
            for bits in [MULTIPLIER_MIN, MULTIPLIER_MIN + 1, 0x793D_D97F, i32::MAX, 0] {
                let v = multiplier_value(I1F31::from_bits(bits), s);
                let pow = libm::exp2(f64::from(s - 31));
                assert_eq!(v.to_bits(), (f64::from(bits) * pow).to_bits(), "{bits} {s}");
                // Exact: scaling back recovers the integer mantissa.
                assert_eq!(v / pow, f64::from(bits), "{bits} {s}");
            }
        }
    }

    #[test]
    fn output_stage_applies_zero_point_clamp_and_table() {
        let m = [MULTIPLIER_MIN, 0];
        let s = [1, 0]; // channel 0: M = 1
        let mut stage = OutputStage {
            multipliers: &m,
            shifts: &s,
            zero_point: -10,
            clamp_min: -128,
            clamp_max: 127,
            lut: None,
        };
        stage.validate(2).unwrap();
        assert_eq!(stage.apply(0, 50), 40);
        assert_eq!(stage.apply(0, 1000), 127);
        assert_eq!(stage.apply(0, -1000), -128);
        assert_eq!(stage.apply(1, 1000), -10); // M = 0: the zero point
        stage.clamp_min = -10; // ReLU at zero point -10
        stage.clamp_max = 20;
        assert_eq!(stage.apply(0, 5), -5);
        assert_eq!(stage.apply(0, -5), -10);
        assert_eq!(stage.apply(0, 100), 20);
        let mut table = [0i8; 256];
        for (i, t) in table.iter_mut().enumerate() {
            *t = (255 - i) as u8 as i8; // reversed
        }
        stage.lut = Some(&table);
        assert_eq!(stage.apply(0, 5), table[(-5 + 128) as usize]);
        // Unvalidated nonsense never panics.
        let bad = OutputStage {
            multipliers: &m,
            shifts: &[99, -99],
            zero_point: i32::MAX,
            clamp_min: 50,
            clamp_max: -50,
            lut: Some(&table),
        };
        let _ = bad.apply(7, i32::MIN);
        let _ = bad.apply(0, i32::MAX);
    }

    #[test]
    fn output_stage_validation_errors() {
        let m = [MULTIPLIER_MIN; 3];
        let s = [0; 3];
        let ok = OutputStage {
            multipliers: &m,
            shifts: &s,
            zero_point: 0,
            clamp_min: -128,
            clamp_max: 127,
            lut: None,
        };
        assert_eq!(ok.validate(3), Ok(()));
        assert_eq!(
            ok.validate(4),
            Err(Error::LengthMismatch {
                operand: Operand::Multiplier,
                expected: 4,
                actual: 3
            })
        );
        let st = OutputStage {
            shifts: &s[..2],
            ..ok
        };
        assert_eq!(
            st.validate(3),
            Err(Error::LengthMismatch {
                operand: Operand::Shift,
                expected: 3,
                actual: 2
            })
        );
        let param = |p| Err(Error::InvalidParam(p));
        for zp in [-129, 128] {
            let st = OutputStage {
                zero_point: zp,
                ..ok
            };
            assert_eq!(st.validate(3), param(Param::ZeroPoint));
        }
        for (lo, hi) in [(-129, 0), (0, 128), (5, 4)] {
            let st = OutputStage {
                clamp_min: lo,
                clamp_max: hi,
                ..ok
            };
            assert_eq!(st.validate(3), param(Param::Clamp));
        }
        for bad in [-1, 1, MULTIPLIER_MIN - 1, i32::MIN] {
            let mm = [MULTIPLIER_MIN, bad, 0];
            let st = OutputStage {
                multipliers: &mm,
                ..ok
            };
            assert_eq!(st.validate(3), param(Param::Multiplier));
        }
        for bad in [-32, 31] {
            let ss = [0, 0, bad];
            let st = OutputStage { shifts: &ss, ..ok };
            assert_eq!(st.validate(3), param(Param::Shift));
        }
        let edge = OutputStage {
            shifts: &[-31, 30, 0],
            multipliers: &[0, i32::MAX, MULTIPLIER_MIN],
            clamp_min: 127,
            clamp_max: 127,
            zero_point: -128,
            lut: None,
        };
        assert_eq!(edge.validate(3), Ok(()));
    }
}
