//! Helpers shared by the unit tests: deterministic random data, tolerant
//! comparison and central finite differences.

use crate::rng::Rng;
use std::vec::Vec;

/// `len` values uniform in [-1, 1) from `seed`.
pub fn random_vec(seed: u64, len: usize) -> Vec<f32> {
    let mut r = Rng::new(seed);
    (0..len).map(|_| r.uniform(-1.0, 1.0)).collect()
}

/// Assert `|a - b| <= atol + rtol·|b|` element-wise (b is the reference).
#[track_caller]
pub fn assert_close(a: &[f32], b: &[f32], atol: f32, rtol: f32) {
    assert_eq!(a.len(), b.len(), "lengths differ");
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= atol + rtol * y.abs(),
            "element {i}: {x} vs reference {y} (atol {atol}, rtol {rtol})"
        );
    }
}

/// Step for central differences. The loss is evaluated in f64 from f32
/// forward passes, so the round-off part of the error is about
/// `ε_f32·|L| / h`; with `h = 1e-2` and the second-order truncation error
/// `h²·|L'''|/6`, both stay near 1e-5 for the smooth, O(1)-scaled test losses.
pub const FD_STEP: f32 = 1e-2;
/// Absolute tolerance of a finite-difference check.
pub const FD_ATOL: f64 = 1e-3;
/// Relative tolerance of a finite-difference check.
pub const FD_RTOL: f64 = 1e-2;

/// Compare the analytic gradient `grad` of `loss` at `params` against
/// central differences, element by element, within `FD_ATOL + FD_RTOL·|g|`.
#[track_caller]
pub fn fd_check(params: &[f32], grad: &[f32], mut loss: impl FnMut(&[f32]) -> f64) {
    assert_eq!(params.len(), grad.len());
    let mut p = params.to_vec();
    for j in 0..p.len() {
        let orig = p[j];
        p[j] = orig + FD_STEP;
        let hi = p[j];
        let lp = loss(&p);
        p[j] = orig - FD_STEP;
        let lo = p[j];
        let lm = loss(&p);
        p[j] = orig;
        // Divide by the step actually taken after f32 rounding.
        let fd = (lp - lm) / (hi as f64 - lo as f64);
        let an = grad[j] as f64;
        assert!(
            (fd - an).abs() <= FD_ATOL + FD_RTOL * an.abs(),
            "gradient element {j}: analytic {an}, finite difference {fd}"
        );
    }
}
