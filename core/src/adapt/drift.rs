//! A sensor drift applied to int8 input levels, in integer arithmetic, so
//! that a device and a host that start from the same levels end with the
//! same levels, bit for bit, whatever their floating point: the scenario a
//! re-estimation ([`super::restat`]) is measured on, run on both sides.
//!
//! [`gain_offset`] is the integer form of `x → gain·x + offset` on the real
//! values `x = s·(q − zp)` an int8 model's input levels `q` stand for
//! (scale `s`, zero point `zp`): a gain about the real zero (the level
//! `zp`) and an offset in levels (`offset = round(real offset / s)`), with
//! the result clamped to the int8 range as a sensor's ADC would.

/// Apply `q' = clamp(round(gain_q8·(q − zero_point) / 256) + zero_point +
/// offset, −128, 127)` to every level `q` of `levels`, in place.
///
/// `gain_q8` is the gain in Q8 fixed point (256 = 1.0, 154 ≈ 0.6016;
/// negative gains mirror about `zero_point`); `offset` is in levels.
///
/// # Rounding
/// `round` is to the nearest integer, **ties away from zero**
/// (`round(2.5) = 3`, `round(−2.5) = −3`, as `f64::round`): with `p =
/// gain_q8·(q − zero_point)`, `⌊(|p| + 128) / 256⌋` carrying `p`'s sign.
///
/// # Range
/// Any arguments are accepted and nothing panics or overflows: the
/// arithmetic is in `i64`, where `|p| ≤ 2^31·(2^31 + 127) < 2^62 + 2^38`,
/// `|p| + 128` and the rounded quotient plus two `i32`s stay far below
/// `2^63`; the clamp then brings the level back to int8.
pub fn gain_offset(levels: &mut [i8], zero_point: i32, gain_q8: i32, offset: i32) {
    let (zp, gain, offset) = (i64::from(zero_point), i64::from(gain_q8), i64::from(offset));
    for q in levels {
        let p = gain * (i64::from(*q) - zp);
        let magnitude = (p.unsigned_abs() + 128) >> 8;
        // `magnitude < 2^55`: back to i64 without loss.
        let rounded = if p < 0 {
            -(magnitude as i64)
        } else {
            magnitude as i64
        };
        *q = (rounded + zp + offset).clamp(-128, 127) as i8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The documented formula in f64: exact while `|gain·(q − zp)| < 2^53`.
    fn reference(q: i8, zp: i32, gain_q8: i32, offset: i32) -> i8 {
        let p = f64::from(gain_q8) * (f64::from(q) - f64::from(zp));
        let v = (p / 256.0).round() + f64::from(zp) + f64::from(offset);
        v.clamp(-128.0, 127.0) as i8
    }

    fn every_level() -> [i8; 256] {
        core::array::from_fn(|i| (i as i32 - 128) as i8)
    }

    #[test]
    fn the_identity_changes_nothing() {
        for zp in [-128, -3, 0, 5, 127] {
            let mut v = every_level();
            gain_offset(&mut v, zp, 256, 0);
            assert_eq!(v, every_level(), "zero point {zp}");
        }
    }

    #[test]
    fn ties_round_away_from_zero() {
        // gain 0.5: odd differences from the zero point land on .5.
        let mut v = [1i8, 3, -1, -3, 2];
        gain_offset(&mut v, 0, 128, 0);
        assert_eq!(v, [1, 2, -1, -2, 1]);
        // The same about a zero point of -128 (q − zp ≥ 0).
        let mut v = [-127i8, -125, -128];
        gain_offset(&mut v, -128, 128, 0);
        assert_eq!(v, [-127, -126, -128]);
    }

    #[test]
    fn the_result_is_clamped_to_int8() {
        let mut v = every_level();
        gain_offset(&mut v, 0, 4 * 256, 0);
        assert_eq!((v[0], v[255]), (-128, 127));
        let mut v = every_level();
        gain_offset(&mut v, -128, 256, 1000);
        assert!(v.iter().all(|&q| q == 127));
        let mut v = every_level();
        gain_offset(&mut v, -128, 256, -1000);
        assert!(v.iter().all(|&q| q == -128));
    }

    #[test]
    fn the_scenarios_gain_and_offset() {
        // The firmware's finetune scenario: gain 154/256, +77 levels about
        // a zero point of -128 (pixels in [0, 1] at scale 1/255).
        let mut v = [-128i8, 0, 127];
        gain_offset(&mut v, -128, 154, 77);
        // -128 → 0 + -128 + 77; 0 → round(154·128/256 = 77) - 51 = 26;
        // 127 → round(154·255/256 = 153.398...) = 153 - 51 = 102.
        assert_eq!(v, [-51, 26, 102]);
    }

    #[test]
    fn extreme_arguments_do_not_panic() {
        for zp in [i32::MIN, -1, 0, i32::MAX] {
            for gain in [i32::MIN, -1, 0, 1, i32::MAX] {
                for offset in [i32::MIN, 0, i32::MAX] {
                    let mut v = every_level();
                    // Overflow checks are on in tests: a wrap would panic.
                    gain_offset(&mut v, zp, gain, offset);
                    if gain == 0 {
                        let want = (i64::from(zp) + i64::from(offset)).clamp(-128, 127) as i8;
                        assert!(v.iter().all(|&q| q == want), "{zp} {offset}");
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every level against the f64 reference, for arguments where f64
        /// is exact (`|p| < 2^53`).
        #[test]
        fn matches_the_f64_reference(
            zp in -100_000i32..100_000,
            gain_q8 in -(1i32 << 20)..(1 << 20),
            offset in -400i32..400,
        ) {
            let mut v = every_level();
            gain_offset(&mut v, zp, gain_q8, offset);
            for (q, got) in every_level().into_iter().zip(v) {
                prop_assert_eq!(got, reference(q, zp, gain_q8, offset), "q {}", q);
            }
        }

        /// Int8 zero points and gains in [-4, 4): the usual range.
        #[test]
        fn matches_the_f64_reference_on_int8_zero_points(
            zp in -128i32..128,
            gain_q8 in -1024i32..1024,
            offset in -300i32..300,
        ) {
            let mut v = every_level();
            gain_offset(&mut v, zp, gain_q8, offset);
            for (q, got) in every_level().into_iter().zip(v) {
                prop_assert_eq!(got, reference(q, zp, gain_q8, offset), "q {}", q);
            }
        }
    }
}
