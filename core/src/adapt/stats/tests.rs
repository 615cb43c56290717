//! Tests of `adapt::stats`: the streaming estimate against an f64 two-pass
//! reference (hard data included), batch splitting, the unbiased factor,
//! interruption and resumption, the folded-layer path, every error path, and
//! agreement with BN training's batch statistics (Alg. 2).

use super::*;
use crate::batchnorm::{BatchNorm, BatchNormConfig, RunningStats, SavedStats};
use crate::rng::Rng;
use crate::tensor::{Shape, View, ViewMut};
use proptest::prelude::*;

/// f32 unit roundoff, 2^-24.
const U: f64 = f32::EPSILON as f64 / 2.0;
/// Fills output buffers in the error tests; an `Err` must leave it in place.
const SENTINEL: f32 = -1234.5;

/// Per-channel f64 two-pass reference: (mean, M2, max |x - mean|).
fn reference(x: &[f32], c: usize) -> Vec<(f64, f64, f64)> {
    (0..c)
        .map(|ch| {
            let col: Vec<f64> = x.iter().skip(ch).step_by(c).map(|&v| v as f64).collect();
            let n = col.len() as f64;
            let mean = col.iter().sum::<f64>() / n;
            let m2 = col.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>();
            let range = col.iter().map(|v| (v - mean).abs()).fold(0.0, f64::max);
            (mean, m2, range)
        })
        .collect()
}

/// `rows` values per channel, `x = mu[c] + sigma[c]·z`, z standard normal.
fn normal_data(seed: u64, rows: usize, mu: &[f32], sigma: &[f32]) -> Vec<f32> {
    let mut r = Rng::new(seed);
    let c = mu.len();
    (0..rows * c)
        .map(|i| mu[i % c] + sigma[i % c] * r.normal())
        .collect()
}

/// Feed `x` (`[rows, C]`) in consecutive batches of the given row counts
/// (cycled until `x` is used up); return (count, mean, M2, batches fed).
fn feed(x: &[f32], c: usize, sizes: &[usize]) -> (u64, Vec<f32>, Vec<f32>, usize) {
    let (mut mean, mut m2) = (vec![f32::NAN; c], vec![f32::NAN; c]);
    let mut st = ChannelStats::new(&mut mean, &mut m2).unwrap();
    let mut at = 0;
    let mut k = 0;
    while at < x.len() {
        let rows = sizes[k % sizes.len()].min((x.len() - at) / c);
        st.update(&x[at..at + rows * c]).unwrap();
        at += rows * c;
        k += 1;
    }
    let count = st.count();
    (count, mean, m2, k)
}

/// The tolerances the module doc derives, for `k` merges of at most `n_max`
/// values each:
/// - mean: each merge rounds the stored mean once (`u·|μ|`, not undone by
///   later merges) and a batch sum of `n_b` shifted terms errs by at most
///   `n_b·u·R` (`R = max |x - μ|`), weighted by `n_b/N ≤ 1`:
///   `|Δ mean| ≤ u·((k + 2)·|μ| + (n_max + 2)·R)`.
/// - M2: a batch's two-pass sum of squares errs by at most `(n_max + 2)·u`
///   relatively and the `k` merges add non-negative terms (`k·u`); on top,
///   the `δ²` term of each merge is measured from a rounded mean, which
///   costs the `O(κ·u)` (`κ = |μ|/σ`, the condition number of the variance)
///   that Chan, Golub & LeVeque (1983) give for updating algorithms. Measured
///   worst over 20 seeds at κ = 1e5 and 1e6: `2.2·κ·u` with batches of 1,
///   `0.5·κ·u` with 32, `0.15·κ·u` with 256; the test allows `4·κ·u`.
fn check_against_reference(x: &[f32], c: usize, sizes: &[usize]) {
    let (count, mean, m2, k) = feed(x, c, sizes);
    let n = x.len() / c;
    assert_eq!(count, n as u64);
    let n_max = *sizes.iter().max().unwrap();
    for (ch, &(rm, rm2, range)) in reference(x, c).iter().enumerate() {
        let tol_mean = U * ((k as f64 + 2.0) * rm.abs() + (n_max as f64 + 2.0) * range);
        assert!(
            (mean[ch] as f64 - rm).abs() <= tol_mean,
            "channel {ch}: mean {} vs {rm} (tol {tol_mean})",
            mean[ch]
        );
        let sigma = (rm2 / n as f64).sqrt();
        let kappa = if sigma > 0.0 { rm.abs() / sigma } else { 0.0 };
        let rel = (n_max as f64 + k as f64 + 4.0) * U + 4.0 * kappa * U;
        let tol_m2 = rel * rm2;
        assert!(
            (m2[ch] as f64 - rm2).abs() <= tol_m2,
            "channel {ch}: M2 {} vs {rm2} (tol {tol_m2}, kappa {kappa})",
            m2[ch]
        );
    }
}

/// (μ, σ) per channel, easy and hard.
fn channel_dist() -> impl Strategy<Value = (f32, f32)> {
    prop_oneof![
        (-1e3f32..1e3, 1e-2f32..1e2),
        Just((1e4, 1e-2)),
        Just((-3e3, 1e3)),
        (-1e2f32..1e2).prop_map(|m| (m, 0.0)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn streaming_matches_two_pass_reference(
        dists in prop::collection::vec(channel_dist(), 1..5),
        sizes in prop::collection::vec(1usize..40, 1..6),
        rows in 2usize..400,
        seed in any::<u64>(),
    ) {
        let (mu, sigma): (Vec<f32>, Vec<f32>) = dists.into_iter().unzip();
        let x = normal_data(seed, rows, &mu, &sigma);
        check_against_reference(&x, mu.len(), &sizes);
    }

    #[test]
    fn many_small_batches_equal_one_big_batch(
        dists in prop::collection::vec(channel_dist(), 1..4),
        small in 1usize..8,
        rows in 2usize..300,
        seed in any::<u64>(),
    ) {
        let (mu, sigma): (Vec<f32>, Vec<f32>) = dists.into_iter().unzip();
        let c = mu.len();
        let x = normal_data(seed, rows, &mu, &sigma);
        let (_, mean_a, m2_a, k) = feed(&x, c, &[small]);
        let (_, mean_b, m2_b, _) = feed(&x, c, &[rows]);
        // Each is within its reference tolerance; so they are within the sum.
        for (ch, &(rm, rm2, range)) in reference(&x, c).iter().enumerate() {
            let tol = U * ((k as f64 + 4.0) * rm.abs() + (rows as f64 + small as f64 + 4.0) * range);
            prop_assert!((mean_a[ch] as f64 - mean_b[ch] as f64).abs() <= tol);
            let sigma = (rm2 / rows as f64).sqrt();
            let kappa = if sigma > 0.0 { rm.abs() / sigma } else { 0.0 };
            let rel = (rows as f64 + k as f64 + 8.0) * 2.0 * U + 8.0 * kappa * U;
            prop_assert!((m2_a[ch] as f64 - m2_b[ch] as f64).abs() <= rel * rm2,
                "channel {}: {} vs {}", ch, m2_a[ch], m2_b[ch]);
        }
    }
}

#[test]
fn hard_data_large_mean_tiny_variance() {
    // κ = 1e6: f32 resolves x only to ulp(1e4) ≈ 1e-3 = 0.1σ, and the naive
    // E[x²] - E[x]² in f32 returns noise (or a negative number).
    let (mu, sigma) = ([1e4f32, -3e3], [1e-2f32, 1e3]);
    for seed in 0..20 {
        let x = normal_data(seed, 2000, &mu, &sigma);
        check_against_reference(&x, 2, &[1]);
        check_against_reference(&x, 2, &[7]);
        check_against_reference(&x, 2, &[64]);
        check_against_reference(&x, 2, &[2000]);
    }
    // Larger batches do better (one rounding of the mean per batch): at
    // κ = 1e6 (κ·u = 0.06) batches of 256 keep M2 within 2 %.
    let x = normal_data(99, 5000, &mu, &sigma);
    let (_, _, m2, _) = feed(&x, 2, &[256]);
    let r = reference(&x, 2);
    for ch in 0..2 {
        let rel = (m2[ch] as f64 - r[ch].1).abs() / r[ch].1;
        assert!(rel < 2e-2, "channel {ch}: relative error {rel}");
    }
}

#[test]
fn constant_channels_have_zero_variance_exactly() {
    let x: Vec<f32> = (0..300).flat_map(|_| [1e4f32, -7.25, 0.0]).collect();
    for size in [1, 3, 300] {
        let (_, mean, m2, _) = feed(&x, 3, &[size]);
        assert_eq!(mean, [1e4, -7.25, 0.0]);
        assert_eq!(m2, [0.0, 0.0, 0.0]);
    }
}

#[test]
fn unbiased_factor_n_over_n_minus_1() {
    let (mut mean, mut m2) = ([0.0f32; 2], [0.0f32; 2]);
    let mut st = ChannelStats::new(&mut mean, &mut m2).unwrap();
    // Channel 0: 0, 2 (biased variance 1, unbiased 2); channel 1: 1, 2, 3, 4
    // over two batches (mean 2.5, M2 = 5, unbiased 5/3).
    st.update(&[0.0, 1.0, 2.0, 2.0]).unwrap();
    let (mut m, mut v) = ([0.0f32; 2], [0.0f32; 2]);
    st.estimate(&mut m, &mut v).unwrap();
    assert_eq!((m, v), ([1.0, 1.5], [2.0, 0.5]));
    let (mut mean1, mut m21) = ([0.0f32; 1], [0.0f32; 1]);
    let mut one = ChannelStats::new(&mut mean1, &mut m21).unwrap();
    one.update(&[1.0, 2.0]).unwrap();
    one.update(&[3.0, 4.0]).unwrap();
    assert_eq!(one.count(), 4);
    let (mut m, mut v) = ([0.0f32; 1], [0.0f32; 1]);
    one.estimate(&mut m, &mut v).unwrap();
    assert_eq!(m, [2.5]);
    assert_eq!(one.m2(), [5.0]);
    assert_eq!(v, [5.0 / 3.0]);
}

#[test]
fn interruption_and_resume_give_the_same_bits() {
    let x = normal_data(5, 120, &[3.0, -1e3], &[0.5, 20.0]);
    let (count, mean, m2, _) = feed(&x, 2, &[10]);
    // Stop after 60 rows, read an estimate, save, resume in new buffers.
    let (mut mean1, mut m21) = ([0.0f32; 2], [0.0f32; 2]);
    let mut st = ChannelStats::new(&mut mean1, &mut m21).unwrap();
    for b in x[..120].chunks(20) {
        st.update(b).unwrap();
    }
    let (mut em, mut ev) = ([0.0f32; 2], [0.0f32; 2]);
    st.estimate(&mut em, &mut ev).unwrap();
    let saved = st.count();
    let (mut mean2, mut m22) = (mean1, m21);
    let mut st = ChannelStats::resume(saved, &mut mean2, &mut m22).unwrap();
    for b in x[120..].chunks(20) {
        st.update(b).unwrap();
    }
    assert_eq!(st.count(), count);
    assert_eq!((st.mean(), st.m2()), (&mean[..], &m2[..]));
    st.reset();
    assert_eq!(
        (st.count(), st.mean(), st.m2()),
        (0, &[0.0f32; 2][..], &[0.0f32; 2][..])
    );
}

#[test]
fn folded_layer_outputs_give_the_pre_normalization_statistics() {
    let c = 3;
    let x = normal_data(11, 500, &[2.0, -50.0, 0.3], &[1.0, 10.0, 0.01]);
    let (gamma, beta) = ([1.5f32, -0.7, 0.2], [0.1f32, 2.0, -1.0]);
    let (old_mean, old_var) = ([1.0f32, -40.0, 0.31], [2.0f32, 50.0, 2e-4]);
    let old = BnState {
        gamma: &gamma,
        beta: &beta,
        mean: &old_mean,
        var: &old_var,
        eps: 1e-5,
    };
    let y: Vec<f32> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| old.scale(i % c) * (v - old_mean[i % c]) + beta[i % c])
        .collect();
    let (mut mean, mut m2) = ([0.0f32; 3], [0.0f32; 3]);
    let mut st = ChannelStats::new(&mut mean, &mut m2).unwrap();
    for b in y.chunks(16 * c) {
        st.update_folded(b, &old).unwrap();
    }
    // y is x mapped through an affine f32 step (relative error ~2u of y),
    // recovered by the inverse map: a few ulps of x's spread and mean.
    for (ch, &(rm, rm2, _)) in reference(&x, c).iter().enumerate() {
        let sd = (rm2 / 500.0).sqrt();
        assert!(
            (st.mean()[ch] as f64 - rm).abs() <= 1e-5 * (rm.abs() + sd),
            "mean {ch}"
        );
        assert!((st.m2()[ch] as f64 - rm2).abs() <= 1e-4 * rm2, "M2 {ch}");
    }
    // The refold that follows: keeps γ, β, ε; writes the estimate.
    let (mut nm, mut nv) = ([SENTINEL; 3], [SENTINEL; 3]);
    let new = st.into_bn(&old, &mut nm, &mut nv).unwrap();
    assert_eq!(
        (new.gamma, new.beta, new.eps),
        (&gamma[..], &beta[..], 1e-5)
    );
    for ch in 0..c {
        assert_eq!(new.mean[ch], st.mean()[ch]);
        assert_eq!(new.var[ch], st.m2()[ch] / 499.0);
    }
}

#[test]
fn estimate_lands_within_standard_errors_of_the_distribution() {
    let (mu, sigma) = ([0.5f32, -20.0, 300.0, 0.0], [1.0f32, 4.0, 0.1, 2e-3]);
    let c = mu.len();
    let x = normal_data(2024, 50 * 64, &mu, &sigma);
    let (mut mean, mut m2) = ([0.0f32; 4], [0.0f32; 4]);
    let mut st = ChannelStats::new(&mut mean, &mut m2).unwrap();
    for b in x.chunks(64 * c) {
        st.update(b).unwrap();
    }
    let (mut em, mut ev) = ([0.0f32; 4], [0.0f32; 4]);
    st.estimate(&mut em, &mut ev).unwrap();
    let n = st.count() as f64;
    assert_eq!(n, 3200.0);
    for ch in 0..c {
        let (m, s2) = (mu[ch] as f64, (sigma[ch] as f64).powi(2));
        // Standard errors for normal data: σ/sqrt(N) and σ²·sqrt(2/(N-1)).
        let se_mean = s2.sqrt() / n.sqrt();
        let se_var = s2 * (2.0 / (n - 1.0)).sqrt();
        assert!(
            (em[ch] as f64 - m).abs() <= 4.0 * se_mean,
            "mean {ch}: {}",
            em[ch]
        );
        assert!(
            (ev[ch] as f64 - s2).abs() <= 4.0 * se_var,
            "var {ch}: {}",
            ev[ch]
        );
    }
}

#[test]
fn agrees_with_bn_training_batch_statistics() {
    // B equal batches of m = N·H·W = 2·3·3 = 18 values per channel (conv).
    let (b, shape) = (40, Shape::nhwc(2, 3, 3, 3));
    let c = shape.c;
    let m = 18;
    let bn = BatchNorm::new(
        c,
        BatchNormConfig {
            eps: 1e-5,
            momentum: 1.0,
        },
    )
    .unwrap();
    let x = normal_data(77, b * m, &[1.0, -5.0, 100.0], &[0.5, 3.0, 1.0]);
    let (gamma, beta) = ([1.0f32; 3], [0.0f32; 3]);
    let (mut mean, mut m2) = ([0.0f32; 3], [0.0f32; 3]);
    let mut st = ChannelStats::new(&mut mean, &mut m2).unwrap();
    // Alg. 2's accumulators, in f64: Σ μ_B, Σ m/(m-1)·σ²_B, and the μ_B.
    let mut sum_mu = [0.0f64; 3];
    let mut sum_var = [0.0f64; 3];
    let mut mus = vec![[0.0f64; 3]; b];
    for (k, batch) in x.chunks(m * c).enumerate() {
        let mut y = vec![0.0f32; batch.len()];
        let (mut sm, mut si) = ([0.0f32; 3], [0.0f32; 3]);
        // Momentum 1: the running statistics are exactly this batch's μ_B
        // and unbiased m/(m-1)·σ²_B.
        let (mut rm, mut rv) = ([0.0f32; 3], [1.0f32; 3]);
        bn.forward_train(
            View::new(shape, batch).unwrap(),
            &gamma,
            &beta,
            ViewMut::new(shape, &mut y).unwrap(),
            SavedStats {
                mean: &mut sm,
                inv_std: &mut si,
            },
            Some(RunningStats {
                mean: &mut rm,
                var: &mut rv,
            }),
        )
        .unwrap();
        for ch in 0..c {
            sum_mu[ch] += rm[ch] as f64;
            sum_var[ch] += rv[ch] as f64;
            mus[k][ch] = rm[ch] as f64;
        }
        st.update(batch).unwrap();
    }
    let (mut em, mut ev) = ([0.0f32; 3], [0.0f32; 3]);
    st.estimate(&mut em, &mut ev).unwrap();
    let (bf, mf) = (b as f64, m as f64);
    let nf = bf * mf;
    for ch in 0..c {
        // E[x] = E_B[μ_B] exactly in exact arithmetic (equal batches).
        let e = sum_mu[ch] / bf;
        assert!(
            (em[ch] as f64 - e).abs() <= 1e-6 * (e.abs() + 1.0),
            "mean {ch}"
        );
        // Var: the pooled estimate is Alg. 2's plus the between-batch term,
        // Var = Var_Alg2·B(m-1)/(Bm-1) + m/(Bm-1)·Σ_b (μ_b - E[x])².
        let var_alg2 = sum_var[ch] / bf;
        let between: f64 = mus.iter().map(|mu| (mu[ch] - e).powi(2)).sum();
        let pooled = var_alg2 * bf * (mf - 1.0) / (nf - 1.0) + mf / (nf - 1.0) * between;
        assert!(
            (ev[ch] as f64 - pooled).abs() <= 1e-5 * pooled,
            "var {ch}: {} vs {pooled}",
            ev[ch]
        );
        // Alg. 2's estimate alone differs from it only by sampling noise
        // (both estimate σ²): within a few standard errors here.
        let se = pooled * (2.0 / (nf - 1.0)).sqrt();
        assert!(
            (ev[ch] as f64 - var_alg2).abs() <= 4.0 * se,
            "Alg. 2 var {ch}"
        );
    }
}

/// Snapshot of an accumulator: (count, mean, M2).
fn snap(st: &ChannelStats<'_>) -> (u64, Vec<f32>, Vec<f32>) {
    (st.count(), st.mean().to_vec(), st.m2().to_vec())
}

#[test]
fn every_error_is_specific_and_changes_nothing() {
    // Construction.
    let (mut a, mut b) = ([1.0f32; 2], [1.0f32; 3]);
    assert_eq!(
        ChannelStats::new(&mut a, &mut b).unwrap_err(),
        Error::LengthMismatch {
            operand: Operand::Variance,
            expected: 2,
            actual: 3
        }
    );
    assert_eq!((a, b), ([1.0; 2], [1.0; 3]));
    assert_eq!(
        ChannelStats::new(&mut [], &mut []).unwrap_err(),
        Error::InvalidParam(Param::Dimension)
    );
    let (mut a, mut b) = ([1.0f32; 2], [-1.0f32; 2]);
    assert_eq!(
        ChannelStats::resume(3, &mut a, &mut b).unwrap_err(),
        Error::InvalidParam(Param::Variance)
    );
    let (mut a, mut b) = ([1.0f32; 2], [0.0f32; 2]);
    assert_eq!(
        ChannelStats::resume(0, &mut a, &mut b).unwrap_err(),
        Error::InvalidParam(Param::Variance)
    );
    let (mut a, mut b) = ([f32::NAN; 2], [0.0f32; 2]);
    assert_eq!(
        ChannelStats::resume(3, &mut a, &mut b).unwrap_err(),
        Error::NonFinite {
            operand: Operand::Mean
        }
    );

    let (mut mean, mut m2) = ([0.0f32; 2], [0.0f32; 2]);
    let mut st = ChannelStats::new(&mut mean, &mut m2).unwrap();
    // Count 0 and 1: no unbiased variance.
    let (mut om, mut ov) = ([SENTINEL; 2], [SENTINEL; 2]);
    for n in [0usize, 1] {
        assert_eq!(
            st.estimate(&mut om, &mut ov).unwrap_err(),
            Error::BatchTooSmall {
                needed: 2,
                actual: n
            }
        );
        assert_eq!((om, ov), ([SENTINEL; 2], [SENTINEL; 2]));
        st.update(&[1.0, 2.0]).unwrap();
    }
    st.update(&[5.0, -1.0, 3.0, 0.5]).unwrap();
    let before = snap(&st);
    // Update: not a multiple of C, NaN, infinity.
    let bad: [&[f32]; 4] = [
        &[1.0, 2.0, 3.0],
        &[1.0],
        &[1.0, f32::NAN],
        &[f32::INFINITY, 1.0, 2.0, 3.0],
    ];
    let want = [
        Error::ShapeMismatch {
            operand: Operand::Input,
        },
        Error::ShapeMismatch {
            operand: Operand::Input,
        },
        Error::NonFinite {
            operand: Operand::Input,
        },
        Error::NonFinite {
            operand: Operand::Input,
        },
    ];
    for (x, e) in bad.iter().zip(want) {
        assert_eq!(st.update(x).unwrap_err(), e);
        assert_eq!(snap(&st), before);
    }
    // An empty batch is a no-op.
    st.update(&[]).unwrap();
    assert_eq!(snap(&st), before);
    // Estimate: output lengths.
    let (mut short, mut ov) = ([SENTINEL; 1], [SENTINEL; 2]);
    assert_eq!(
        st.estimate(&mut short, &mut ov).unwrap_err(),
        Error::LengthMismatch {
            operand: Operand::Mean,
            expected: 2,
            actual: 1
        }
    );
    let (mut om, mut long) = ([SENTINEL; 2], [SENTINEL; 3]);
    assert_eq!(
        st.estimate(&mut om, &mut long).unwrap_err(),
        Error::LengthMismatch {
            operand: Operand::Variance,
            expected: 2,
            actual: 3
        }
    );
    assert_eq!(
        (short, ov, om, long),
        ([SENTINEL; 1], [SENTINEL; 2], [SENTINEL; 2], [SENTINEL; 3])
    );
    // into_bn / update_folded: a bad old state, a channel that cannot be unfolded.
    let (g, be, mu, var) = ([1.0f32, 0.0], [0.0f32; 2], [0.0f32; 2], [1.0f32; 2]);
    let zero_gamma = BnState {
        gamma: &g,
        beta: &be,
        mean: &mu,
        var: &var,
        eps: 1e-5,
    };
    assert_eq!(
        st.update_folded(&[1.0, 2.0], &zero_gamma).unwrap_err(),
        Error::NotInvertible { channel: 1 }
    );
    let bad_eps = BnState {
        eps: 0.0,
        ..zero_gamma
    };
    assert_eq!(
        st.update_folded(&[1.0, 2.0], &bad_eps).unwrap_err(),
        Error::InvalidParam(Param::Eps)
    );
    let (mut om, mut ov) = ([SENTINEL; 2], [SENTINEL; 2]);
    assert_eq!(
        st.into_bn(&bad_eps, &mut om, &mut ov).unwrap_err(),
        Error::InvalidParam(Param::Eps)
    );
    let one_channel = BnState {
        gamma: &g[..1],
        ..zero_gamma
    };
    assert_eq!(
        st.into_bn(&one_channel, &mut om, &mut ov).unwrap_err(),
        Error::LengthMismatch {
            operand: Operand::Gamma,
            expected: 2,
            actual: 1
        }
    );
    assert_eq!((om, ov), ([SENTINEL; 2], [SENTINEL; 2]));
    assert_eq!(snap(&st), before);

    // Count overflow.
    let (mut a, mut b) = ([1.0f32; 1], [0.5f32; 1]);
    let mut full = ChannelStats::resume(u64::MAX - 1, &mut a, &mut b).unwrap();
    assert_eq!(full.update(&[1.0, 2.0]).unwrap_err(), Error::Overflow);
    assert_eq!(snap(&full), (u64::MAX - 1, vec![1.0], vec![0.5]));
    // M2 overflow is reported by the estimate, not returned as a variance.
    let (mut a, mut b) = ([0.0f32; 1], [0.0f32; 1]);
    let mut huge = ChannelStats::new(&mut a, &mut b).unwrap();
    huge.update(&[-3e38, 3e38]).unwrap();
    let (mut om, mut ov) = ([SENTINEL; 1], [SENTINEL; 1]);
    assert_eq!(
        huge.estimate(&mut om, &mut ov).unwrap_err(),
        Error::NonFinite {
            operand: Operand::Variance
        }
    );
    assert_eq!((om, ov), ([SENTINEL; 1], [SENTINEL; 1]));
}

/// `merge_sums`, the streaming form `restat` uses (one batch per sample,
/// sums shifted by the running mean, the first batch by a guess that is
/// several σ off), against the f64 two-pass reference, on data with large
/// mean-to-spread ratios (κ up to 1e3) and batch sizes 1 (dense layers) to
/// 64 (a convolution's pixels).
#[test]
fn merge_sums_matches_the_two_pass_reference() {
    let (mu, sigma) = ([1e3f32, -5.0, 0.3], [1.0f32, 0.01, 2.0]);
    for seed in 0..10 {
        for n_b in [1usize, 9, 64] {
            let x = normal_data(seed, 64 * n_b, &mu, &sigma);
            let c = 3;
            let (mut mean, mut m2) = (vec![0f32; c], vec![0f32; c]);
            let mut st = ChannelStats::new(&mut mean, &mut m2).unwrap();
            for batch in x.chunks_exact(n_b * c) {
                let shift: Vec<f32> = if st.count() == 0 {
                    (0..c).map(|ch| mu[ch] + 5.0 * sigma[ch]).collect()
                } else {
                    st.mean().to_vec()
                };
                let (mut sum, mut sq) = (vec![0f32; c], vec![0f32; c]);
                for row in batch.chunks_exact(c) {
                    for ch in 0..c {
                        let d = row[ch] - shift[ch];
                        sum[ch] += d;
                        sq[ch] += d * d;
                    }
                }
                st.merge_sums(n_b as u64, &shift, &sum, &sq).unwrap();
            }
            assert_eq!(st.count(), (64 * n_b) as u64);
            for (ch, &(rm, rm2, _)) in reference(&x, c).iter().enumerate() {
                let sd = (rm2 / (64 * n_b) as f64).sqrt();
                let kappa = rm.abs() / sd;
                assert!(
                    (st.mean()[ch] as f64 - rm).abs() <= 1e-6 * rm.abs() + 1e-4 * sd,
                    "seed {seed} n_b {n_b} channel {ch}: mean {} vs {rm}",
                    st.mean()[ch]
                );
                let tol = (4.0 * kappa + 200.0) * U * rm2;
                assert!(
                    (st.m2()[ch] as f64 - rm2).abs() <= tol,
                    "seed {seed} n_b {n_b} channel {ch}: M2 {} vs {rm2} (kappa {kappa})",
                    st.m2()[ch]
                );
            }
        }
    }
    // Errors: lengths, non-finite sums; nothing changes.
    let (mut mean, mut m2) = (vec![0f32; 2], vec![0f32; 2]);
    let mut st = ChannelStats::new(&mut mean, &mut m2).unwrap();
    assert!(st.merge_sums(3, &[0.0], &[1.0, 1.0], &[1.0, 1.0]).is_err());
    assert!(st
        .merge_sums(3, &[0.0; 2], &[f32::NAN, 1.0], &[1.0, 1.0])
        .is_err());
    assert_eq!(st.count(), 0);
    st.merge_sums(0, &[0.0; 2], &[0.0; 2], &[0.0; 2]).unwrap();
    assert_eq!(st.count(), 0);
}
