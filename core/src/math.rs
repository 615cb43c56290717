//! Elementary functions for the hot loops.
//!
//! `libm` is the reference for accuracy and is used wherever a result feeds a
//! loss or a statistic (softmax, cross-entropy, BN's square root). Sigmoid
//! is evaluated millions of times per training step and sits inside every
//! forward pass of the paper's network, so it gets [`exp`] below: branch-free
//! straight-line code that compilers vectorise on the host and that needs no
//! tables on a microcontroller, within a few ulp of the exact result.
//!
//! # `exp(x)`, Cody–Waite reduction and a degree-7 polynomial
//! ```text
//! n = round(x · log2 e)                      (via the 1.5·2^23 shifter)
//! r = x - n·C1 - n·C2,  C1 + C2 ≈ ln 2       (C1 has 9 significant bits, so n·C1 is exact)
//! e^r ≈ Σ_{k=0..7} r^k / k!                  (|r| ≤ ln2/2: truncation < 6e-9 relative)
//! e^x = e^r · 2^⌊n/2⌋ · 2^(n-⌊n/2⌋)          (two factors keep each power of two normal)
//! ```
//! Range: results for `x < -87.336` (below the smallest normal f32,
//! 2^-126) are flushed to 0; `x > 88.722` gives `+∞`; NaN propagates.
//! Error (enforced by the tests against f64 on a dense sweep of the whole
//! range): relative error ≤ 2·2^-24 ≈ 1.2e-7 over the normal range (1.71·2^-24
//! measured), about one unit in the last place.
//!
//! # Why no `micromath`
//! DESIGN.md allows `micromath` "only where a measured speed-up is worth its
//! measured error". Measured on the device (QEMU `mps2-an386`, `-icount`,
//! instructions per value through a function pointer as the engine's
//! activation loop calls them, `cargo xtask bench firmware`) and on the host
//! (maximum error against f64, dense sweeps), rustc 1.95:
//!
//! | function | this crate / libm | `micromath::F32Ext` | micromath's error |
//! |---|---|---|---|
//! | `exp` on [-20, 20] | [`exp`] 73, `libm::expf` 66 | 97 | 2.4e-3 relative (ours ≤ 1.2e-7) |
//! | sigmoid | [`sigmoid`] 79 | 101 (`1/(1+e^-x)` with its `exp`) | 5.3e-4 absolute |
//! | tanh on [-10, 10] | `libm::tanhf` 113 | 104 (`(e^2x-1)/(e^2x+1)` with its `exp`) | 1.1e-3 absolute (libm 8e-8) |
//! | `sqrt` on [1e-3, 1e3] | `libm::sqrtf` 66 (software on M4) | 23 | 6.1e-2 relative |
//! | `1/sqrt` | `1/libm::sqrtf` 68 | 19 (`invsqrt`) | 3.4e-2 relative |
//! | `ln` on [1e-3, 1e3] | `libm::logf` 65 | 51 | 0.12 absolute below 1 (its `inv` is a bit trick) |
//!
//! Where the engine evaluates elementary functions per element (sigmoid,
//! tanh, the softmax's `exp`), micromath is slower than what it would
//! replace, and less accurate: a fast-math mode built on it would cost
//! accuracy and time. It is faster only for `sqrt`, `1/sqrt` and `ln`, whose
//! users here are per channel or per sample, not per element (BN's
//! `1/sqrt(var + eps)` when training or refolding, the loss, Box–Muller
//! initialisation), and there a 3–6 % error is not acceptable (a refolded
//! layer must match the host's to rounding). So core does not depend on
//! `micromath`; the firmware's `bench` links it only to keep these figures
//! reproducible (`cargo xtask bench firmware`, rows `exp`, `sigmoid`, `tanh`,
//! `sqrt`, `invsqrt`, `ln`), and a new user of a hot `sqrt` that tolerates percent errors
//! would be its place (remeasure with the bench's `exp`/`sigmoid`/`tanh`
//! rows as the baseline).
//!
//! On the Cortex-M0 (micro:bit, no FPU: soft float; `cargo xtask bench
//! firmware --board microbit`, the `mathbench` program) the balance moves
//! but not enough: instructions per value `exp` 2,727 here / 2,264 libm /
//! 2,011 micromath, sigmoid 3,175 / 2,292, `tanh` 4,123 libm / 2,507,
//! `sqrt` 531 / 159, `1/sqrt` 706 / 118, `ln` 2,725 / 1,706. micromath's
//! `exp` saves 11 % against libm's at 2.4e-3 relative error, and a tail's
//! softmax or sigmoid on the M0 is dominated by its dense layer's MACs
//! (the demo's f32 model runs at about 172 instructions per MAC there, so
//! an `exp` costs about 13 MACs, and a 10-class tail has 10 `exp`s against
//! hundreds of MACs); the exact forms stay. Where an M0 application spends its time
//! in `1/sqrt` and accepts 3.4e-2 error, micromath is 6× cheaper.

/// Largest argument with a finite result (`ln(f32::MAX)`).
const X_MAX: f32 = 88.722_83;
/// Smallest argument with a normal result (`ln(2^-126)`).
const X_MIN: f32 = -87.336_55;

/// `e^x` with relative error ≤ 2·2^-24; see the [module docs](self).
#[inline]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = core::f32::consts::LOG2_E;
    // Cody–Waite split of ln 2 (Cephes): C1 = 355/512 is exact in 9 bits.
    const C1: f32 = 355.0 / 512.0;
    const C2: f32 = -2.121_944_4e-4;
    // Adding 1.5·2^23 rounds a float of magnitude < 2^22 to an integer,
    // which then sits in the low mantissa bits of the sum.
    const SHIFTER: f32 = 12_582_912.0;
    let xc = x.clamp(X_MIN, X_MAX);
    let t = xc * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let r = xc - n * C1 - n * C2;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n as an integer, read from the shifter's mantissa: t = 0x4B40_0000 + n.
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let n1 = ni >> 1;
    let n2 = ni - n1;
    let pow2 = |k: i32| f32::from_bits(((k + 127) as u32) << 23);
    let y = p * pow2(n1) * pow2(n2);
    // Selects, not branches: the loop around this stays vectorisable.
    let y = if x > X_MAX { f32::INFINITY } else { y };
    let y = if x < X_MIN { 0.0 } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

/// The logistic function `1 / (1 + e^-x)`, evaluated as `1/(1 + e^-|x|)` for
/// `x >= 0` and `e^-|x| / (1 + e^-|x|)` for `x < 0`, so that nothing
/// overflows. Relative error ≤ 4·2^-24 (3.14·2^-24 measured; enforced by
/// the tests); `σ(0) = 0.5` exactly.
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    let e = exp(-x.abs());
    let s = 1.0 / (1.0 + e);
    if x >= 0.0 {
        s
    } else {
        e * s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative error against an f64 reference, in units of 2^-24.
    fn ulps(got: f32, want: f64) -> f64 {
        ((got as f64 - want) / want).abs() / f64::from(f32::EPSILON / 2.0)
    }

    #[test]
    fn exp_relative_error_within_2_units_of_2_pow_minus_24() {
        let mut worst = 0.0f64;
        let n = 2_000_000;
        for i in 0..=n {
            let x = (X_MIN + (X_MAX - X_MIN) * (i as f32 / n as f32)).min(X_MAX);
            let e = ulps(exp(x), (x as f64).exp());
            worst = worst.max(e);
        }
        // Also every float in [-1, 1] at a stride (the reduction's edges).
        let mut bits = (-1.0f32).to_bits();
        while f32::from_bits(bits) < 0.0 {
            let x = f32::from_bits(bits);
            worst = worst.max(ulps(exp(x), (x as f64).exp()));
            bits -= 997;
        }
        assert!(worst <= 2.0, "worst error {worst}·2^-24");
    }

    #[test]
    fn exp_edges() {
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(89.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(X_MAX).is_finite());
        assert!(exp(X_MIN) > 0.0);
    }

    #[test]
    fn sigmoid_relative_error_within_4_units_of_2_pow_minus_24() {
        let mut worst = 0.0f64;
        let n = 1_000_000;
        for i in 0..=n {
            let x = -80.0 + 160.0 * (i as f32 / n as f32);
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            worst = worst.max(ulps(sigmoid(x), want));
        }
        assert!(worst <= 4.0, "worst error {worst}·2^-24");
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(200.0), 1.0);
        assert_eq!(sigmoid(-200.0), 0.0);
        assert!(sigmoid(f32::NAN).is_nan());
    }
}
