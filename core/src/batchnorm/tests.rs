//! Unit tests of `batchnorm`, compiled only under `#[cfg(test)]` (see the
//! `mod tests;` declaration in batchnorm.rs).
//!
//! Tests of the BN kernels: gradients against finite differences, training
//! output and running statistics against f64 references, inference against
//! the folded layer, refolding, a golden vector computed independently
//! (`reference_vector.py`), and every error path.

use super::*;
use crate::error::{Error, Operand, Param};
use crate::gemm::Portable;
use crate::layers::{Conv2d, Dense, DepthwiseConv2d, Padding, Window};
use crate::testutil::{fd_check, random_vec};
use proptest::prelude::*;

/// PyTorch's default ε, used wherever a test does not need another.
const EPS: f32 = 1e-5;
/// f32 unit roundoff, 2^-24: the relative error of one rounded operation.
const U: f64 = f32::EPSILON as f64 / 2.0;
/// Fills output buffers in the error tests; an `Err` must leave it in place.
const SENTINEL: f32 = -1234.5;

fn layer(c: usize) -> BatchNorm {
    BatchNorm::new(c, BatchNormConfig::default()).unwrap()
}

/// `len` values with `|v|` in [0.3, 1.3) and both signs: a γ that is far
/// from 0 (so a fold can be undone) and not 1.
fn signed(seed: u64, len: usize) -> Vec<f32> {
    random_vec(seed, len)
        .into_iter()
        .map(|v| if v < 0.0 { v - 0.3 } else { v + 0.3 })
        .collect()
}

/// The outputs of one training forward.
struct Train {
    y: Vec<f32>,
    mean: Vec<f32>,
    inv_std: Vec<f32>,
}

fn train(
    bn: &BatchNorm,
    shape: Shape,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running: Option<RunningStats<'_>>,
) -> Train {
    let c = shape.c;
    let mut t = Train {
        y: vec![f32::NAN; x.len()],
        mean: vec![f32::NAN; c],
        inv_std: vec![f32::NAN; c],
    };
    bn.forward_train(
        View::new(shape, x).unwrap(),
        gamma,
        beta,
        ViewMut::new(shape, &mut t.y).unwrap(),
        SavedStats {
            mean: &mut t.mean,
            inv_std: &mut t.inv_std,
        },
        running,
    )
    .unwrap();
    t
}

fn eval(bn: &BatchNorm, state: &BnState<'_>, shape: Shape, x: &[f32]) -> Vec<f32> {
    let mut y = vec![f32::NAN; x.len()];
    bn.forward_eval(
        View::new(shape, x).unwrap(),
        state,
        ViewMut::new(shape, &mut y).unwrap(),
    )
    .unwrap();
    y
}

/// One channel of a `[rows, C]` matrix, in f64: mean, biased variance and
/// the largest magnitude.
#[derive(Debug, Clone, Copy)]
struct Chan {
    mean: f64,
    var: f64,
    max_abs: f64,
}

fn channels64(x: &[f32], c: usize) -> Vec<Chan> {
    let m = (x.len() / c) as f64;
    (0..c)
        .map(|ch| {
            let col = || x.iter().skip(ch).step_by(c).map(|&v| v as f64);
            let mean = col().sum::<f64>() / m;
            let var = col().map(|v| (v - mean) * (v - mean)).sum::<f64>() / m;
            let max_abs = col().fold(0.0, |a: f64, v| a.max(v.abs()));
            Chan { mean, var, max_abs }
        })
        .collect()
}

/// Bound on `|μ_f32 - μ|` for the kernel's sequential f32 sum of `m` values
/// of magnitude `<= max_abs` divided by `m`: the standard
/// `|fl(Σ) - Σ| <= (m-1)·u·Σ|x|` plus `u·|μ|` for the division, i.e.
/// `(m+1)·u·max_abs` (one more `u·max_abs` of margin).
fn mean_bound(m: usize, max_abs: f64) -> f64 {
    (m as f64 + 2.0) * U * max_abs
}

/// Relative bound on the saved `1/sqrt(σ² + ε)` when the f32 mean is off by
/// `dmu`: the second pass sums `(x - μ_f32)²`, whose exact mean is
/// `σ² + dmu²`, with relative error `<= (m+3)·u`; `+ε`, the square root and
/// the reciprocal add `~3u` and halve the rest. Doubled for margin. The
/// `dmu²` term is what a one-pass `E[x²] - E[x]²` would replace by
/// `~m·u·E[x²]`, hopeless for an offset of 1000 and a spread of 1.
fn inv_std_bound(m: usize, dmu: f64, var_eps: f64) -> f64 {
    dmu * dmu / var_eps + 2.0 * (m as f64 + 8.0) * U
}

/// `|got - want| <= tol·max(1, |want|)`, element-wise (`want` is the reference).
#[track_caller]
fn assert_rel<T: Copy + Into<f64>>(got: &[f32], want: &[T], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let w: f64 = w.into();
        assert!(
            (g as f64 - w).abs() <= tol * w.abs().max(1.0),
            "{what}[{i}]: {g} vs reference {w} (tolerance {tol} relative)"
        );
    }
}

// ---------------------------------------------------------------------------
// 1. Backward against finite differences.

/// `backward` on `shape` against central differences of `L = Σ r·y`
/// (`dy = r`) through `forward_train`, for x, γ and β; tolerance
/// `FD_ATOL + FD_RTOL·|g|` (testutil). Also two exact identities of BN's
/// input gradient, per channel, to 1e-5: `Σ dx = 0` (y does not change when
/// x is shifted) and `Σ dx·x̂ = γ·ε·dγ/(σ²+ε)^{3/2}` (y would not change when
/// x is scaled but for ε: `Σ x̂² = m·σ²/(σ²+ε)`, not m).
fn check_gradients(shape: Shape, seed: u64) {
    let (c, len) = (shape.c, shape.len().unwrap());
    let bn = layer(c);
    let x = random_vec(seed, len);
    let gamma: Vec<f32> = random_vec(seed + 1, c).iter().map(|v| 2.0 * v).collect();
    let beta = random_vec(seed + 2, c);
    let r = random_vec(seed + 3, len);
    let loss = |x: &[f32], g: &[f32], b: &[f32]| -> f64 {
        let t = train(&bn, shape, x, g, b, None);
        t.y.iter().zip(&r).map(|(&y, &r)| y as f64 * r as f64).sum()
    };
    let t = train(&bn, shape, &x, &gamma, &beta, None);
    let (mut dx, mut dgamma, mut dbeta) = (vec![f32::NAN; len], vec![f32::NAN; c], vec![0.0; c]);
    bn.backward(
        View::new(shape, &x).unwrap(),
        &gamma,
        &t.mean,
        &t.inv_std,
        View::new(shape, &r).unwrap(),
        ViewMut::new(shape, &mut dx).unwrap(),
        &mut dgamma,
        &mut dbeta,
    )
    .unwrap();
    fd_check(&x, &dx, |x| loss(x, &gamma, &beta));
    fd_check(&gamma, &dgamma, |g| loss(&x, g, &beta));
    fd_check(&beta, &dbeta, |b| loss(&x, &gamma, b));

    for ch in 0..c {
        let (mut sum, mut dot) = (0.0f64, 0.0f64);
        for (xr, dr) in x.chunks_exact(c).zip(dx.chunks_exact(c)) {
            let xhat = (xr[ch] - t.mean[ch]) as f64 * t.inv_std[ch] as f64;
            sum += dr[ch] as f64;
            dot += dr[ch] as f64 * xhat;
        }
        let inv = t.inv_std[ch] as f64;
        let want = gamma[ch] as f64 * EPS as f64 * inv * inv * inv * dgamma[ch] as f64;
        assert!(sum.abs() <= 1e-5, "channel {ch}: Σ dx = {sum}");
        assert!(
            (dot - want).abs() <= 1e-5,
            "channel {ch}: Σ dx·x̂ = {dot}, want {want}"
        );
    }
}

/// Dense BN, `[6, 3]`: statistics over the 6 samples.
#[test]
fn backward_matches_finite_differences_dense() {
    check_gradients(Shape::features(6, 3), 10);
}

/// Conv BN, `[2, 3, 3, 2]`: statistics over N·H·W = 18 values per channel.
#[test]
fn backward_matches_finite_differences_conv() {
    check_gradients(Shape::nhwc(2, 3, 3, 2), 20);
}

// ---------------------------------------------------------------------------
// 2. Training output.

/// With γ = 1, β = 0 each channel of y has mean 0 and biased variance
/// `σ²/(σ² + ε)` (ε shrinks it; channels of spread 0.01 and 0.003 make that
/// visible: 0.77 and 0.23). Tolerances from the f32 error bounds above:
/// `|ȳ| <= |μ_f32 - μ|/sqrt(σ²+ε) + 4u·max|x̂|` (with `|μ_f32 - μ|` itself
/// checked against `mean_bound`), and the variance of y relative to its
/// reference within `2·inv_std_bound + 8u` (y² carries inv_std² and a few
/// roundings).
fn check_normalised(shape: Shape, seed: u64) {
    let (c, m) = (shape.c, shape.rows().unwrap());
    assert_eq!(c, 3);
    let (scale, offset) = ([1.0f32, 0.01, 0.003], [0.5f32, 0.02, -0.004]);
    let x: Vec<f32> = random_vec(seed, shape.len().unwrap())
        .iter()
        .enumerate()
        .map(|(i, v)| offset[i % c] + scale[i % c] * v)
        .collect();
    let t = train(&layer(c), shape, &x, &[1.0; 3], &[0.0; 3], None);
    let ys = channels64(&t.y, c);
    for (ch, r) in channels64(&x, c).iter().enumerate() {
        let var_eps = r.var + EPS as f64;
        let dmu = (t.mean[ch] as f64 - r.mean).abs();
        assert!(
            dmu <= mean_bound(m, r.max_abs),
            "channel {ch}: mean off by {dmu}"
        );
        let max_xhat = (r.max_abs + r.mean.abs()) / var_eps.sqrt();
        let mean_tol = dmu / var_eps.sqrt() + 4.0 * U * max_xhat;
        assert!(
            ys[ch].mean.abs() <= mean_tol,
            "channel {ch}: mean of y {} (tolerance {mean_tol})",
            ys[ch].mean
        );
        let want = r.var / var_eps;
        let var_tol = 2.0 * inv_std_bound(m, dmu, var_eps) + 8.0 * U;
        assert!(
            (ys[ch].var - want).abs() <= var_tol * want,
            "channel {ch}: variance of y {} vs {want} (tolerance {var_tol} relative)",
            ys[ch].var
        );
    }
    // ε matters in the small channels: the variance is far from 1 there.
    assert!(ys[2].var < 0.5, "{}", ys[2].var);
}

#[test]
fn train_output_is_normalised_dense() {
    check_normalised(Shape::features(8, 3), 30);
}

#[test]
fn train_output_is_normalised_conv() {
    check_normalised(Shape::nhwc(2, 3, 3, 3), 31);
}

/// Values `1000 + 0.05·U(-1, 1)`: the two-pass variance (σ ≈ 0.03) still
/// matches f64 within `inv_std_bound`, while on the same data the one-pass
/// f32 `E[x²] - E[x]²` is off by more than half, so this would catch a
/// switch to the one-pass formula.
#[test]
fn two_pass_variance_survives_large_offset() {
    let m = 32;
    let x: Vec<f32> = random_vec(40, m)
        .iter()
        .map(|v| 1000.0 + 0.05 * v)
        .collect();
    let t = train(&layer(1), Shape::features(m, 1), &x, &[1.0], &[0.0], None);
    let r = channels64(&x, 1)[0];
    let dmu = (t.mean[0] as f64 - r.mean).abs();
    assert!(dmu <= mean_bound(m, r.max_abs));
    let var_eps = r.var + EPS as f64;
    let inv = 1.0 / var_eps.sqrt();
    let tol = inv_std_bound(m, dmu, var_eps);
    assert!(
        (t.inv_std[0] as f64 - inv).abs() <= tol * inv,
        "inv_std {} vs {inv} (tolerance {tol} relative)",
        t.inv_std[0]
    );

    let mf = m as f32;
    let sum: f32 = x.iter().sum();
    let sum_sq: f32 = x.iter().map(|v| v * v).sum();
    let one_pass = sum_sq / mf - (sum / mf) * (sum / mf);
    assert!(
        (one_pass as f64 - r.var).abs() > 0.5 * r.var,
        "one-pass {one_pass} vs {}: the data no longer shows the cancellation",
        r.var
    );
}

proptest! {
    /// y = γ·x̂ + β against a naive f64 reference over random NHWC shapes,
    /// with offsets of 0, ±1000 or up to ±20 and spreads of 0.05 to 4. Checks
    /// the saved mean within `mean_bound`, the saved 1/sqrt(σ²+ε) within
    /// `inv_std_bound` (relative) and every y within
    /// `|γ|·(dmu/σ_ε + |x̂|·(tol_inv + 4u)) + 4u·(|γ·x̂| + |β|)`: the f32 mean
    /// error `dmu` shifts x̂, the rest are the few roundings per element.
    #[test]
    fn train_output_matches_f64(
        n in 1usize..4, h in 1usize..4, w in 1usize..4, c in 1usize..5,
        offset in prop_oneof![Just(0.0f32), Just(1000.0f32), Just(-1000.0f32), -20.0f32..20.0],
        spread in 0.05f32..4.0,
        seed in any::<u64>(),
    ) {
        let shape = Shape::nhwc(n, h, w, c);
        let m = n * h * w;
        prop_assume!(m >= 2);
        let x: Vec<f32> = random_vec(seed, m * c).iter().map(|v| offset + spread * v).collect();
        let gamma = signed(seed ^ 1, c);
        let beta: Vec<f32> = random_vec(seed ^ 2, c).iter().map(|v| 3.0 * v).collect();
        let t = train(&layer(c), shape, &x, &gamma, &beta, None);
        for (ch, r) in channels64(&x, c).iter().enumerate() {
            let dmu = (t.mean[ch] as f64 - r.mean).abs();
            prop_assert!(dmu <= mean_bound(m, r.max_abs), "channel {}: mean off by {}", ch, dmu);
            let var_eps = r.var + EPS as f64;
            let inv = 1.0 / var_eps.sqrt();
            let tol_inv = inv_std_bound(m, dmu, var_eps);
            prop_assert!((t.inv_std[ch] as f64 - inv).abs() <= tol_inv * inv,
                "channel {}: inv_std {} vs {}", ch, t.inv_std[ch], inv);
            let (g, b) = (gamma[ch] as f64, beta[ch] as f64);
            for row in 0..m {
                let xhat = (x[row * c + ch] as f64 - r.mean) * inv;
                let want = g * xhat + b;
                let tol = g.abs() * (dmu * inv + xhat.abs() * (tol_inv + 4.0 * U))
                    + 4.0 * U * ((g * xhat).abs() + b.abs());
                let got = t.y[row * c + ch] as f64;
                prop_assert!((got - want).abs() <= tol,
                    "row {} channel {}: {} vs {} (tolerance {})", row, ch, got, want, tol);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 3. Running statistics.

/// Three known batches (offset and spread change from batch to batch and per
/// channel) from running mean 0 / variance 1 with `momentum`, against
/// `running = (1-α)·running + α·batch` in f64 with the UNBIASED batch variance
/// `m/(m-1)·σ²_B`, m = N·H·W. Tolerance 1e-5 relative (`max(1, |ref|)`): the
/// f32 batch statistics are good to `~(m+3)·u ≈ 1e-6` and each update adds
/// a few roundings.
fn check_running(shape: Shape, momentum: f32) {
    let (c, m, len) = (shape.c, shape.rows().unwrap(), shape.len().unwrap());
    let bn = BatchNorm::new(c, BatchNormConfig { eps: EPS, momentum }).unwrap();
    let (gamma, beta) = (signed(50, c), random_vec(51, c));
    let (mut mean, mut var) = (vec![0.0f32; c], vec![1.0f32; c]);
    let (mut want_mean, mut want_var) = (vec![0.0f64; c], vec![1.0f64; c]);
    let a = momentum as f64;
    for batch in 0..3u64 {
        let x: Vec<f32> = random_vec(60 + batch, len)
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let ch = (i % c) as f32;
                let b = batch as f32;
                (b - 1.0) * (ch + 0.5) + (0.5 + b) * (1.0 + 0.5 * ch) * v
            })
            .collect();
        let running = RunningStats {
            mean: &mut mean,
            var: &mut var,
        };
        train(&bn, shape, &x, &gamma, &beta, Some(running));
        for (ch, r) in channels64(&x, c).iter().enumerate() {
            want_mean[ch] = (1.0 - a) * want_mean[ch] + a * r.mean;
            let unbiased = r.var * m as f64 / (m as f64 - 1.0);
            want_var[ch] = (1.0 - a) * want_var[ch] + a * unbiased;
        }
        assert_rel(&mean, &want_mean, 1e-5, "running mean");
        assert_rel(&var, &want_var, 1e-5, "running variance");
    }
}

#[test]
fn running_stats_follow_known_batches_dense() {
    check_running(Shape::features(5, 3), 0.1);
    check_running(Shape::features(5, 3), 0.3);
}

#[test]
fn running_stats_follow_known_batches_conv() {
    check_running(Shape::nhwc(2, 2, 3, 2), 0.1);
    check_running(Shape::nhwc(2, 2, 3, 2), 0.3);
}

/// Momentum 0 leaves the running statistics exactly as they were
/// (`1·r + 0·b = r` in f32); `running: None` gives the same y and saved
/// statistics bit for bit as a step that updates them (the update never
/// feeds back into the output); momentum 1 keeps only the last batch
/// (1e-5 relative, as above).
#[test]
fn running_stats_frozen_or_absent() {
    let shape = Shape::nhwc(2, 2, 2, 3);
    let (c, m) = (3, 8);
    let x = random_vec(70, shape.len().unwrap());
    let (gamma, beta) = (signed(71, c), random_vec(72, c));
    let start_mean = [0.5f32, -2.0, 0.0];
    let start_var = [0.25f32, 3.0, 1.0];

    let frozen = BatchNorm::new(
        c,
        BatchNormConfig {
            eps: EPS,
            momentum: 0.0,
        },
    )
    .unwrap();
    let (mut mean, mut var) = (start_mean, start_var);
    for _ in 0..3 {
        let running = RunningStats {
            mean: &mut mean,
            var: &mut var,
        };
        train(&frozen, shape, &x, &gamma, &beta, Some(running));
    }
    assert_eq!((mean, var), (start_mean, start_var));

    let bn = layer(c);
    let (mut mean, mut var) = (start_mean, start_var);
    let running = RunningStats {
        mean: &mut mean,
        var: &mut var,
    };
    let with = train(&bn, shape, &x, &gamma, &beta, Some(running));
    let without = train(&bn, shape, &x, &gamma, &beta, None);
    assert_eq!(with.y, without.y);
    assert_eq!(with.mean, without.mean);
    assert_eq!(with.inv_std, without.inv_std);

    let last = BatchNorm::new(
        c,
        BatchNormConfig {
            eps: EPS,
            momentum: 1.0,
        },
    )
    .unwrap();
    let (mut mean, mut var) = (start_mean, start_var);
    let running = RunningStats {
        mean: &mut mean,
        var: &mut var,
    };
    train(&last, shape, &x, &gamma, &beta, Some(running));
    let refs = channels64(&x, c);
    let want_mean: Vec<f64> = refs.iter().map(|r| r.mean).collect();
    let want_var: Vec<f64> = refs
        .iter()
        .map(|r| r.var * m as f64 / (m as f64 - 1.0))
        .collect();
    assert_rel(&mean, &want_mean, 1e-5, "running mean");
    assert_rel(&var, &want_var, 1e-5, "running variance");
}

// ---------------------------------------------------------------------------
// 4. Inference equals the folded layer.

/// Owned per-channel BN parameters for the fold tests: γ with both signs and
/// `|γ|` in [0.3, 1.3), β in [-1, 1), `E[x]` in [-2, 2), `Var[x]` in [0.5, 3)
/// (not 1, so that the statistics really enter the result).
struct Params {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
}

impl Params {
    fn random(seed: u64, c: usize) -> Self {
        Params {
            gamma: signed(seed, c),
            beta: random_vec(seed ^ 0x11, c),
            mean: random_vec(seed ^ 0x22, c).iter().map(|v| 2.0 * v).collect(),
            var: random_vec(seed ^ 0x33, c)
                .iter()
                .map(|v| 1.75 + 1.25 * v)
                .collect(),
        }
    }

    fn state(&self) -> BnState<'_> {
        BnState {
            gamma: &self.gamma,
            beta: &self.beta,
            mean: &self.mean,
            var: &self.var,
            eps: EPS,
        }
    }
}

/// The unfolded layer's bias, or zeros when it has none (what `fold_rows`
/// and `fold_channels_last` expect then).
fn bias_or_zeros(b: Option<&[f32]>, c: usize) -> Vec<f32> {
    b.map_or_else(|| vec![0.0; c], <[f32]>::to_vec)
}

// The fold tolerance is the one the folded model is held to: 1e-5 relative
// to max(1, |BN(layer(x))|). Both sides are f32 sums of at most 27 products
// with |w|, |x| <= 1, scaled by |s| <= 1.3/sqrt(0.5); they differ only in
// rounding (s·W rounded once per weight, s·z once per output), a few u of
// s·Σ|w·x| <= 40, well inside 1e-5.
const FOLD_TOL: f64 = 1e-5;

proptest! {
    /// (a) Dense (with and without bias) followed by `forward_eval` equals the
    /// dense layer with W, b folded by `fold_rows`.
    #[test]
    fn dense_bn_equals_folded_dense(
        n in 1usize..5, inputs in 1usize..7, outputs in 1usize..5,
        with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let d = Dense::new(inputs, outputs).unwrap();
        let (xs, ys) = (Shape::features(n, inputs), d.output_shape(n));
        let x = random_vec(seed, n * inputs);
        let w = random_vec(seed ^ 1, outputs * inputs);
        let b = random_vec(seed ^ 2, outputs);
        let bias = with_bias.then_some(&b[..]);
        let p = Params::random(seed ^ 3, outputs);

        let mut z = vec![0.0; n * outputs];
        d.forward(&Portable, View::new(xs, &x).unwrap(), &w, bias,
                  ViewMut::new(ys, &mut z).unwrap()).unwrap();
        let want = eval(&layer(outputs), &p.state(), ys, &z);

        let (mut wf, mut bf) = (w.clone(), bias_or_zeros(bias, outputs));
        p.state().fold_rows(&mut wf, &mut bf).unwrap();
        let mut got = vec![0.0; n * outputs];
        d.forward(&Portable, View::new(xs, &x).unwrap(), &wf, Some(&bf),
                  ViewMut::new(ys, &mut got).unwrap()).unwrap();
        assert_rel(&got, &want, FOLD_TOL, "folded dense");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// (b) Conv2d (filters `[Cout, KH, KW, Cin]`, with and without bias,
    /// strides and padding) followed by `forward_eval` over N·OH·OW rows
    /// equals the conv with filters and bias folded by `fold_rows`.
    #[test]
    fn conv_bn_equals_folded_conv(
        n in 1usize..3, extra_h in 0usize..3, extra_w in 0usize..3,
        cin in 1usize..4, cout in 1usize..4, k in 1usize..4,
        stride in 1usize..3, pad in 0usize..2,
        with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let kw = k % 3 + 1; // not always square
        let window = Window {
            kernel_h: k, kernel_w: kw, stride_h: stride, stride_w: 1,
            padding: Padding::symmetric(pad, pad),
        };
        let conv = Conv2d::new(k + extra_h, kw + extra_w, cin, cout, window).unwrap();
        let (xs, ys) = (conv.input_shape(n), conv.output_shape(n).unwrap());
        let x = random_vec(seed, xs.len().unwrap());
        let w = random_vec(seed ^ 1, conv.weight_len().unwrap());
        let b = random_vec(seed ^ 2, cout);
        let bias = with_bias.then_some(&b[..]);
        let p = Params::random(seed ^ 3, cout);
        let mut scratch = vec![0.0; conv.forward_scratch_len(n).unwrap()];

        let mut z = vec![0.0; ys.len().unwrap()];
        conv.forward(&Portable, View::new(xs, &x).unwrap(), &w, bias,
                     ViewMut::new(ys, &mut z).unwrap(), &mut scratch).unwrap();
        let want = eval(&layer(cout), &p.state(), ys, &z);

        let (mut wf, mut bf) = (w.clone(), bias_or_zeros(bias, cout));
        p.state().fold_rows(&mut wf, &mut bf).unwrap();
        let mut got = vec![0.0; ys.len().unwrap()];
        conv.forward(&Portable, View::new(xs, &x).unwrap(), &wf, Some(&bf),
                     ViewMut::new(ys, &mut got).unwrap(), &mut scratch).unwrap();
        assert_rel(&got, &want, FOLD_TOL, "folded conv");
    }

    /// (c) Depthwise conv (taps `[KH, KW, C]`, channel last) followed by
    /// `forward_eval` equals the depthwise conv folded by
    /// `fold_channels_last`.
    #[test]
    fn depthwise_bn_equals_folded_depthwise(
        n in 1usize..3, extra_h in 0usize..3, extra_w in 0usize..3,
        c in 1usize..5, k in 1usize..4, stride in 1usize..3, pad in 0usize..2,
        with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let kw = k % 3 + 1;
        let window = Window {
            kernel_h: k, kernel_w: kw, stride_h: 1, stride_w: stride,
            padding: Padding::symmetric(pad, pad),
        };
        let dw = DepthwiseConv2d::new(k + extra_h, kw + extra_w, c, window).unwrap();
        let (xs, ys) = (dw.input_shape(n), dw.output_shape(n).unwrap());
        let x = random_vec(seed, xs.len().unwrap());
        let w = random_vec(seed ^ 1, dw.weight_len().unwrap());
        let b = random_vec(seed ^ 2, c);
        let bias = with_bias.then_some(&b[..]);
        let p = Params::random(seed ^ 3, c);

        let mut z = vec![0.0; ys.len().unwrap()];
        dw.forward(View::new(xs, &x).unwrap(), &w, bias, ViewMut::new(ys, &mut z).unwrap())
            .unwrap();
        let want = eval(&layer(c), &p.state(), ys, &z);

        let (mut wf, mut bf) = (w.clone(), bias_or_zeros(bias, c));
        p.state().fold_channels_last(&mut wf, &mut bf).unwrap();
        let mut got = vec![0.0; ys.len().unwrap()];
        dw.forward(View::new(xs, &x).unwrap(), &wf, Some(&bf), ViewMut::new(ys, &mut got).unwrap())
            .unwrap();
        assert_rel(&got, &want, FOLD_TOL, "folded depthwise");
    }
}

// ---------------------------------------------------------------------------
// 5. Refolding.

proptest! {
    /// Folding with A and then `refold_rows(A -> B)` equals folding the
    /// original weights with B, weights and bias within 1e-5 relative
    /// (`max(1, |ref|)`): the weights see ~3 roundings (s_A·w, s_B/s_A, the
    /// product); the bias recovers `b - E_A` as `(b' - β_A)/s_A`, whose
    /// rounding is amplified by at most `1/|s_A| <= sqrt(3)/0.3`.
    #[test]
    fn refold_equals_direct_fold(
        c in 1usize..5, k in 1usize..20, with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let w = random_vec(seed, c * k);
        let b = if with_bias { random_vec(seed ^ 1, c) } else { vec![0.0; c] };
        let (pa, pb) = (Params::random(seed ^ 2, c), Params::random(seed ^ 3, c));

        let (mut w_ab, mut b_ab) = (w.clone(), b.clone());
        pa.state().fold_rows(&mut w_ab, &mut b_ab).unwrap();
        pa.state().refold_rows(&pb.state(), &mut w_ab, &mut b_ab).unwrap();

        let (mut w_b, mut b_b) = (w.clone(), b.clone());
        pb.state().fold_rows(&mut w_b, &mut b_b).unwrap();
        assert_rel(&w_ab, &w_b, 1e-5, "refolded weights");
        assert_rel(&b_ab, &b_b, 1e-5, "refolded bias");
    }
}

/// γ = 0 in a channel of the OLD state: its weights were zeroed by the first
/// fold and cannot be recovered, so `refold_rows` is
/// `Err(NotInvertible { channel })` naming the first such channel, and
/// writes nothing. A zero γ in the NEW state is fine (it zeroes the channel).
#[test]
fn refold_from_zero_gamma_is_not_invertible() {
    let c = 4;
    let mut old = Params::random(80, c);
    old.gamma[1] = 0.0;
    old.gamma[3] = 0.0;
    let new = Params::random(81, c);
    let mut w = random_vec(82, c * 5);
    let mut b = random_vec(83, c);
    let (w0, b0) = (w.clone(), b.clone());
    assert_eq!(
        old.state().refold_rows(&new.state(), &mut w, &mut b),
        Err(Error::NotInvertible { channel: 1 })
    );
    assert_eq!((w, b), (w0.clone(), b0.clone()));

    let (mut w, mut b) = (w0, b0);
    let mut zeroing = Params::random(84, c);
    zeroing.gamma[2] = 0.0;
    new.state()
        .refold_rows(&zeroing.state(), &mut w, &mut b)
        .unwrap();
    assert!(w[2 * 5..3 * 5].iter().all(|&v| v == 0.0));
    assert_eq!(b[2], zeroing.beta[2]);
}

// ---------------------------------------------------------------------------
// 6. The fixed test vector.

/// One training step, its backward pass, the running-statistics update and
/// inference on a fixed `[4, 3]` batch, against values computed exactly
/// (Fractions, 50-digit square roots) by `core/src/batchnorm/reference_vector.py`
/// with the paper's term-by-term chain rule. To regenerate:
/// `python3 core/src/batchnorm/reference_vector.py`, paste its output over the
/// constants below, `cargo fmt`. The inputs are pasted too, so the test runs
/// on exactly the script's values (x and dy are multiples of 1/16: exact in f32).
///
/// Tolerance 1e-6 relative to `max(1, |ref|)`, and why f32 meets it: x, dy,
/// the batch sums, means, deviations and squares are all exact in f32
/// (dyadic values of few bits), so the only errors are the roundings of γ,
/// β, ε and α to f32 (`<= u = 6e-8` relative each, amplified by nothing) and
/// the handful of roundings per output after the statistics (`+ε`, `sqrt`,
/// the reciprocal, the x̂ product, `γ·x̂ + β`, the three-term dx bracket),
/// each `<= u` of a term of magnitude `<= 3` (the largest, the dx bracket
/// of channel 2, is scaled by `γ·inv_std ≈ 1.8`): `~10u·3 ≈ 2e-6` in the
/// worst case, and in fact below 2e-7 for every value here.
#[test]
fn golden_vector() {
    // Generated by core/src/batchnorm/reference_vector.py (m = 4, C = 3).
    const X: [f32; 12] = [
        0.5, -1.25, 3.0, 1.5, 0.375, 2.875, -0.75, 2.25, 3.0625, 2.125, -0.5, 3.25,
    ];
    const GAMMA: [f32; 3] = [1.5, -0.8, 0.25];
    const BETA: [f32; 3] = [0.1, -0.3, 2.0];
    const DY: [f32; 12] = [
        0.25, -0.5, 1.0, -1.0, 0.75, 0.125, 0.5, 0.25, -0.625, 0.0625, -1.5, 0.375,
    ];
    const RUNNING_MEAN0: [f32; 3] = [0.0, 0.0, 0.0];
    const RUNNING_VAR0: [f32; 3] = [1.0, 1.0, 1.0];
    const EPS: f32 = 1e-5;
    const MOMENTUM: f32 = 0.1;
    const Y: [f64; 12] = [
        -3.74143756855633e-1,
        5.99580679944446e-1,
        1.91342109820666e0,
        1.00518353581530e0,
        -3.95700072334516e-1,
        1.68254402675775e0,
        -2.09830287269430e0,
        -1.54410094034870e0,
        2.02885963393111e0,
        1.86726309373463e0,
        1.40220332738771e-1,
        2.37517524110448e0,
    ];
    const SAVED_MEAN: [f64; 3] = [8.43750000000000e-1, 2.18750000000000e-1, 3.04687500000000e0];
    const SAVED_INV_STD: [f64; 3] = [9.19551528447289e-1, 7.65600578676124e-1, 7.38806628636517e0];
    const RUNNING_MEAN: [f64; 3] = [
        8.43750000000000e-2,
        2.18750000000000e-2,
        3.04687500000000e-1,
    ];
    const RUNNING_VAR: [f64; 3] = [1.05768229166667e0, 1.12747395833333e0, 9.02441406250000e-1];
    const DX: [f64; 12] = [
        2.63252285689623e-1,
        -1.68193595789061e-1,
        1.44067418604961e0,
        -1.03549445393941e0,
        -5.78298153204273e-1,
        -1.81618675442328e-1,
        7.63186385953198e-2,
        1.38129795105691e-1,
        -1.55765106211146e0,
        6.95923529654471e-1,
        6.08361953887643e-1,
        2.98595551504173e-1,
    ];
    const DGAMMA: [f64; 3] = [
        -1.34161131201196e0,
        1.86615141052305e0,
        -1.44298169655570e-2,
    ];
    const DBETA: [f64; 3] = [
        -1.87500000000000e-1,
        -1.00000000000000e0,
        8.75000000000000e-1,
    ];
    const Y_EVAL: [f64; 12] = [
        7.06196259239129e-1,
        6.58250891872900e-1,
        2.70931185932806e0,
        2.16471357470170e0,
        -5.66050001920486e-1,
        2.67641623686647e0,
        -1.11695038508908e0,
        -1.97870487937439e0,
        2.72575967055886e0,
        3.07628689686580e0,
        9.31889408913373e-2,
        2.77510310425124e0,
    ];
    const TOL: f64 = 1e-6;

    let shape = Shape::features(4, 3);
    let config = BatchNormConfig {
        eps: EPS,
        momentum: MOMENTUM,
    };
    let bn = BatchNorm::new(3, config).unwrap();
    let (mut mean, mut var) = (RUNNING_MEAN0, RUNNING_VAR0);
    let running = RunningStats {
        mean: &mut mean,
        var: &mut var,
    };
    let t = train(&bn, shape, &X, &GAMMA, &BETA, Some(running));
    assert_rel(&t.y, &Y, TOL, "y");
    assert_rel(&t.mean, &SAVED_MEAN, TOL, "saved mean");
    assert_rel(&t.inv_std, &SAVED_INV_STD, TOL, "saved inv_std");
    assert_rel(&mean, &RUNNING_MEAN, TOL, "running mean");
    assert_rel(&var, &RUNNING_VAR, TOL, "running variance");

    let (mut dx, mut dgamma, mut dbeta) = ([f32::NAN; 12], [f32::NAN; 3], [f32::NAN; 3]);
    bn.backward(
        View::new(shape, &X).unwrap(),
        &GAMMA,
        &t.mean,
        &t.inv_std,
        View::new(shape, &DY).unwrap(),
        ViewMut::new(shape, &mut dx).unwrap(),
        &mut dgamma,
        &mut dbeta,
    )
    .unwrap();
    assert_rel(&dx, &DX, TOL, "dx");
    assert_rel(&dgamma, &DGAMMA, TOL, "dgamma");
    assert_rel(&dbeta, &DBETA, TOL, "dbeta");

    let state = BnState {
        gamma: &GAMMA,
        beta: &BETA,
        mean: &mean,
        var: &var,
        eps: EPS,
    };
    assert_rel(&eval(&bn, &state, shape, &X), &Y_EVAL, TOL, "eval y");
}

// ---------------------------------------------------------------------------
// 7. Errors: the specific variant, and nothing written.

/// The lengths and shapes of everything `forward_train` takes, so that each
/// case changes one of them.
#[derive(Debug, Clone, Copy)]
struct TrainCase {
    x: Shape,
    y: Shape,
    gamma: usize,
    beta: usize,
    saved_mean: usize,
    saved_inv_std: usize,
    running: Option<(usize, usize)>,
}

/// Run `forward_train` on sentinel-filled outputs; on `Err`, assert that y,
/// the saved and the running statistics are all untouched.
fn run_train_case(bn: &BatchNorm, case: TrainCase) -> Result<(), Error> {
    let x = random_vec(90, case.x.len().unwrap());
    let (gamma, beta) = (vec![1.0; case.gamma], vec![0.0; case.beta]);
    let mut y = vec![SENTINEL; case.y.len().unwrap()];
    let mut saved_mean = vec![SENTINEL; case.saved_mean];
    let mut saved_inv_std = vec![SENTINEL; case.saved_inv_std];
    let (rm, rv) = case.running.unwrap_or((0, 0));
    let (mut run_mean, mut run_var) = (vec![SENTINEL; rm], vec![SENTINEL; rv]);
    let running = case.running.map(|_| RunningStats {
        mean: &mut run_mean,
        var: &mut run_var,
    });
    let result = bn.forward_train(
        View::new(case.x, &x).unwrap(),
        &gamma,
        &beta,
        ViewMut::new(case.y, &mut y).unwrap(),
        SavedStats {
            mean: &mut saved_mean,
            inv_std: &mut saved_inv_std,
        },
        running,
    );
    if result.is_err() {
        for buf in [&y, &saved_mean, &saved_inv_std, &run_mean, &run_var] {
            assert!(buf.iter().all(|&v| v == SENTINEL), "{case:?} wrote output");
        }
    }
    result
}

fn len_err(operand: Operand, expected: usize, actual: usize) -> Result<(), Error> {
    Err(Error::LengthMismatch {
        operand,
        expected,
        actual,
    })
}

fn shape_err(operand: Operand) -> Result<(), Error> {
    Err(Error::ShapeMismatch { operand })
}

/// Every `forward_train` error: channel count, each per-channel length, the
/// output shape, and fewer than two values per channel (dense, conv and an
/// empty batch).
#[test]
fn forward_train_errors_write_nothing() {
    let bn = layer(3);
    let ok = TrainCase {
        x: Shape::features(4, 3),
        y: Shape::features(4, 3),
        gamma: 3,
        beta: 3,
        saved_mean: 3,
        saved_inv_std: 3,
        running: Some((3, 3)),
    };
    let run = |case| run_train_case(&bn, case);
    assert_eq!(run(ok), Ok(()));
    assert_eq!(
        run(TrainCase {
            running: None,
            ..ok
        }),
        Ok(())
    );
    let two = Shape::features(6, 2);
    assert_eq!(
        run(TrainCase {
            x: two,
            y: two,
            ..ok
        }),
        shape_err(Operand::Input)
    );
    assert_eq!(
        run(TrainCase { gamma: 2, ..ok }),
        len_err(Operand::Gamma, 3, 2)
    );
    assert_eq!(
        run(TrainCase { beta: 4, ..ok }),
        len_err(Operand::Beta, 3, 4)
    );
    assert_eq!(
        run(TrainCase {
            saved_mean: 2,
            ..ok
        }),
        len_err(Operand::Mean, 3, 2)
    );
    assert_eq!(
        run(TrainCase {
            saved_inv_std: 0,
            ..ok
        }),
        len_err(Operand::Variance, 3, 0)
    );
    assert_eq!(
        run(TrainCase {
            running: Some((2, 3)),
            ..ok
        }),
        len_err(Operand::Mean, 3, 2)
    );
    assert_eq!(
        run(TrainCase {
            running: Some((3, 4)),
            ..ok
        }),
        len_err(Operand::Variance, 3, 4)
    );
    // Same element count, different shape.
    assert_eq!(
        run(TrainCase {
            y: Shape::nhwc(2, 2, 1, 3),
            ..ok
        }),
        shape_err(Operand::Output)
    );
    for x in [
        Shape::features(1, 3),
        Shape::nhwc(1, 1, 1, 3),
        Shape::features(0, 3),
    ] {
        assert_eq!(
            run(TrainCase { x, y: x, ..ok }),
            Err(Error::BatchTooSmall {
                needed: 2,
                actual: x.n
            })
        );
    }
}

/// The lengths and shapes of everything `backward` takes.
#[derive(Debug, Clone, Copy)]
struct BackwardCase {
    x: Shape,
    dy: Shape,
    dx: Shape,
    gamma: usize,
    saved_mean: usize,
    saved_inv_std: usize,
    dgamma: usize,
    dbeta: usize,
}

fn run_backward_case(bn: &BatchNorm, case: BackwardCase) -> Result<(), Error> {
    let x = random_vec(91, case.x.len().unwrap());
    let dy = random_vec(92, case.dy.len().unwrap());
    let gamma = vec![1.0; case.gamma];
    let saved_mean = vec![0.0; case.saved_mean];
    let saved_inv_std = vec![1.0; case.saved_inv_std];
    let mut dx = vec![SENTINEL; case.dx.len().unwrap()];
    let (mut dgamma, mut dbeta) = (vec![SENTINEL; case.dgamma], vec![SENTINEL; case.dbeta]);
    let result = bn.backward(
        View::new(case.x, &x).unwrap(),
        &gamma,
        &saved_mean,
        &saved_inv_std,
        View::new(case.dy, &dy).unwrap(),
        ViewMut::new(case.dx, &mut dx).unwrap(),
        &mut dgamma,
        &mut dbeta,
    );
    if result.is_err() {
        for buf in [&dx, &dgamma, &dbeta] {
            assert!(buf.iter().all(|&v| v == SENTINEL), "{case:?} wrote output");
        }
    }
    result
}

/// Every `backward` error: channel count, each per-channel length, the
/// shapes of dy and dx.
#[test]
fn backward_errors_write_nothing() {
    let bn = layer(3);
    let s = Shape::nhwc(2, 2, 1, 3);
    let ok = BackwardCase {
        x: s,
        dy: s,
        dx: s,
        gamma: 3,
        saved_mean: 3,
        saved_inv_std: 3,
        dgamma: 3,
        dbeta: 3,
    };
    let run = |case| run_backward_case(&bn, case);
    assert_eq!(run(ok), Ok(()));
    let four = Shape::features(3, 4);
    let c4 = BackwardCase {
        x: four,
        dy: four,
        dx: four,
        ..ok
    };
    assert_eq!(run(c4), shape_err(Operand::Input));
    assert_eq!(
        run(BackwardCase { gamma: 1, ..ok }),
        len_err(Operand::Gamma, 3, 1)
    );
    assert_eq!(
        run(BackwardCase {
            saved_mean: 4,
            ..ok
        }),
        len_err(Operand::Mean, 3, 4)
    );
    assert_eq!(
        run(BackwardCase {
            saved_inv_std: 2,
            ..ok
        }),
        len_err(Operand::Variance, 3, 2)
    );
    assert_eq!(
        run(BackwardCase { dgamma: 2, ..ok }),
        len_err(Operand::WeightGrad, 3, 2)
    );
    assert_eq!(
        run(BackwardCase { dbeta: 0, ..ok }),
        len_err(Operand::BiasGrad, 3, 0)
    );
    let other = Shape::features(4, 3);
    assert_eq!(
        run(BackwardCase { dy: other, ..ok }),
        shape_err(Operand::OutputGrad)
    );
    assert_eq!(
        run(BackwardCase { dx: other, ..ok }),
        shape_err(Operand::InputGrad)
    );
}

/// `forward_eval` on sentinel-filled `y`; on `Err`, `y` is untouched.
fn run_eval_case(bn: &BatchNorm, x: Shape, y: Shape, state: &BnState<'_>) -> Result<(), Error> {
    let xv = random_vec(93, x.len().unwrap());
    let mut yv = vec![SENTINEL; y.len().unwrap()];
    let result = bn.forward_eval(
        View::new(x, &xv).unwrap(),
        state,
        ViewMut::new(y, &mut yv).unwrap(),
    );
    if result.is_err() {
        assert!(
            yv.iter().all(|&v| v == SENTINEL),
            "forward_eval wrote output"
        );
    }
    result
}

/// Every `forward_eval` error: channel count, output shape, and each
/// `BnState::check` failure (lengths, ε, a negative or NaN variance).
#[test]
fn forward_eval_errors_write_nothing() {
    let bn = layer(3);
    let p = Params::random(94, 3);
    let s = Shape::features(2, 3);
    let run = |x, y, state: &BnState<'_>| run_eval_case(&bn, x, y, state);
    assert_eq!(run(s, s, &p.state()), Ok(()));
    let four = Shape::features(3, 4);
    assert_eq!(run(four, four, &p.state()), shape_err(Operand::Input));
    assert_eq!(
        run(s, Shape::nhwc(1, 2, 1, 3), &p.state()),
        shape_err(Operand::Output)
    );
    let short = [1.0f32; 2];
    let cases = [
        (
            BnState {
                gamma: &short,
                ..p.state()
            },
            len_err(Operand::Gamma, 3, 2),
        ),
        (
            BnState {
                beta: &short,
                ..p.state()
            },
            len_err(Operand::Beta, 3, 2),
        ),
        (
            BnState {
                mean: &short,
                ..p.state()
            },
            len_err(Operand::Mean, 3, 2),
        ),
        (
            BnState {
                var: &short,
                ..p.state()
            },
            len_err(Operand::Variance, 3, 2),
        ),
        (
            BnState {
                eps: 0.0,
                ..p.state()
            },
            Err(Error::InvalidParam(Param::Eps)),
        ),
        (
            BnState {
                var: &[1.0, -0.5, 1.0],
                ..p.state()
            },
            Err(Error::InvalidParam(Param::Variance)),
        ),
        (
            BnState {
                var: &[1.0, 1.0, f32::NAN],
                ..p.state()
            },
            Err(Error::InvalidParam(Param::Variance)),
        ),
    ];
    for (state, want) in cases {
        assert_eq!(run(s, s, &state), want);
        assert_eq!(state.check(3), want);
    }
}

/// `BnState::check` directly: a negative variance (even one smaller in
/// magnitude than ε, which would still have a square root) is
/// `InvalidParam(Variance)`; zero variance is valid; ε must be finite and
/// > 0; the channel count is checked against every slice.
#[test]
fn bn_state_check() {
    let p = Params::random(95, 3);
    assert_eq!(p.state().check(3), Ok(()));
    assert_eq!(p.state().check(4), len_err(Operand::Gamma, 4, 3));
    let bad = [1.0, 2.0, -1e-7];
    assert_eq!(
        BnState {
            var: &bad,
            ..p.state()
        }
        .check(3),
        Err(Error::InvalidParam(Param::Variance))
    );
    assert_eq!(
        BnState {
            var: &[0.0; 3],
            ..p.state()
        }
        .check(3),
        Ok(())
    );
    for eps in [0.0, -1e-5, f32::NAN, f32::INFINITY] {
        assert_eq!(
            BnState { eps, ..p.state() }.check(3),
            Err(Error::InvalidParam(Param::Eps))
        );
    }
}

/// Folding and refolding with a bad state or mismatched buffers: the specific
/// error, and neither weights nor bias written.
#[test]
fn fold_errors_write_nothing() {
    let c = 3;
    let p = Params::random(96, c);
    let negative = [1.0, -2.0, 1.0];
    let bad = BnState {
        var: &negative,
        ..p.state()
    };
    type Fold = fn(&BnState<'_>, &mut [f32], &mut [f32]) -> Result<(), Error>;
    let folds: [(&str, Fold); 3] = [
        ("fold_rows", |s, w, b| s.fold_rows(w, b)),
        ("fold_channels_last", |s, w, b| s.fold_channels_last(w, b)),
        ("refold_rows", |s, w, b| s.refold_rows(s, w, b)),
    ];
    for (name, fold) in folds {
        let cases = [
            (bad, 6, 3, Err(Error::InvalidParam(Param::Variance))),
            (p.state(), 6, 2, len_err(Operand::Bias, 3, 2)),
            (p.state(), 7, 3, shape_err(Operand::Weight)),
        ];
        for (state, wl, bl, want) in cases {
            let (mut w, mut b) = (vec![SENTINEL; wl], vec![SENTINEL; bl]);
            assert_eq!(fold(&state, &mut w, &mut b), want, "{name}");
            assert!(w.iter().chain(&b).all(|&v| v == SENTINEL), "{name} wrote");
        }
    }
    // refold_rows also checks the new state.
    let (mut w, mut b) = (vec![SENTINEL; 6], vec![SENTINEL; 3]);
    assert_eq!(
        p.state().refold_rows(&bad, &mut w, &mut b),
        Err(Error::InvalidParam(Param::Variance))
    );
    let q = Params::random(97, 2);
    assert_eq!(
        p.state().refold_rows(&q.state(), &mut w, &mut b),
        len_err(Operand::Gamma, 3, 2)
    );
    assert!(w.iter().chain(&b).all(|&v| v == SENTINEL));
}

/// Configuration: ε must be finite and > 0, momentum in [0, 1] (both ends
/// allowed), at least one channel; `new` and `validate` agree.
#[test]
fn invalid_config_is_rejected() {
    let cfg = |eps, momentum| BatchNormConfig { eps, momentum };
    for eps in [0.0, -1e-5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let want = Err(Error::InvalidParam(Param::Eps));
        assert_eq!(cfg(eps, 0.1).validate(), want);
        assert_eq!(BatchNorm::new(3, cfg(eps, 0.1)).map(|_| ()), want);
    }
    for momentum in [-0.01, 1.01, f32::NAN, f32::INFINITY] {
        let want = Err(Error::InvalidParam(Param::BnMomentum));
        assert_eq!(cfg(1e-5, momentum).validate(), want);
        assert_eq!(BatchNorm::new(3, cfg(1e-5, momentum)).map(|_| ()), want);
    }
    for momentum in [0.0, 0.5, 1.0] {
        assert!(BatchNorm::new(3, cfg(1e-3, momentum)).is_ok());
    }
    assert_eq!(
        BatchNorm::new(0, BatchNormConfig::default()),
        Err(Error::InvalidParam(Param::Dimension))
    );
    let d = BatchNormConfig::default();
    assert_eq!((d.eps, d.momentum), (1e-5, 0.1));
    let bn = layer(5);
    assert_eq!((bn.channels(), bn.config()), (5, d));
}

// ---------------------------------------------------------------------------
// 8. Inference on tiny batches.

/// `forward_eval` uses its last output row as scratch: on one sample (dense
/// `[1, C]`, one pixel `[1, 1, 1, C]`, one image `[1, 2, 3, C]`) and on a conv
/// batch, with y pre-filled with NaN, it equals
/// `γ·(x - E[x])/sqrt(Var[x] + ε) + β` in f64 within
/// `1e-6·(1 + |s·(x - E[x])| + |β|)` (a handful of roundings of those terms);
/// a sample's output does not depend on the batch around it (bit for bit);
/// an empty batch is `Ok` and writes nothing.
#[test]
fn eval_single_sample_matches_formula() {
    let c = 4;
    let bn = layer(c);
    let p = Params::random(100, c);
    let state = p.state();
    let batch_shape = Shape::nhwc(3, 2, 2, c);
    let batch_x: Vec<f32> = random_vec(101, batch_shape.len().unwrap())
        .iter()
        .map(|v| 3.0 * v)
        .collect();
    let batch_y = eval(&bn, &state, batch_shape, &batch_x);
    let last_pixel = batch_shape.len().unwrap() - c;
    // (shape, offset of its first element in the batch)
    for (shape, at) in [
        (Shape::features(1, c), 0),
        (Shape::nhwc(1, 1, 1, c), last_pixel),
        (Shape::nhwc(1, 2, 3, c), 0),
        (batch_shape, 0),
    ] {
        let x = &batch_x[at..at + shape.len().unwrap()];
        let y = eval(&bn, &state, shape, x);
        for (i, (&got, &xv)) in y.iter().zip(x).enumerate() {
            let ch = i % c;
            let s = p.gamma[ch] as f64 / (p.var[ch] as f64 + EPS as f64).sqrt();
            let centred = s * (xv as f64 - p.mean[ch] as f64);
            let want = centred + p.beta[ch] as f64;
            let tol = 1e-6 * (1.0 + centred.abs() + (p.beta[ch] as f64).abs());
            assert!(
                (got as f64 - want).abs() <= tol,
                "{shape:?} element {i}: {got} vs {want}"
            );
        }
        // The same inputs inside the larger batch give the same outputs.
        assert_eq!(y, batch_y[at..at + x.len()], "{shape:?}");
    }
    let empty = Shape::features(0, c);
    let mut y: [f32; 0] = [];
    assert_eq!(
        bn.forward_eval(
            View::new(empty, &[]).unwrap(),
            &state,
            ViewMut::new(empty, &mut y).unwrap()
        ),
        Ok(())
    );
}
