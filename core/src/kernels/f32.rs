//! f32 inference kernels for folded models (FORMAT.md, "f32 files"),
//! batch 1, NHWC.
//!
//! Exactly the folded network, `y = act(W'·x + b')` per layer: dense and
//! conv2d read row-blocked weights (see [`pack`](super::pack)), depthwise
//! reads plain `[KH, KW, C]` taps, pooling and activations are the
//! [`layers`](crate::layers) functions on a batch-1 view. Activations are
//! [`Activation::apply`] (sigmoid is [`crate::math::sigmoid`]).
//!
//! Each output is `bias + Σ_p x[p]·w[p]` summed in input order with
//! separate IEEE multiplies and adds (Rust never contracts `a*b + c` into a
//! fused multiply-add), so host and device compute bit-identical results;
//! against the unfolded network or another summation order they agree to
//! rounding, `|Δ| ≲ P·2^-24·Σ|terms|`.
//!
//! # Cost (Cortex-M4F, `thumbv7em-none-eabihf`, counted in the generated code)
//! The dense and conv inner loop loads each input once for `R`
//! multiply-adds, reads the `R` weights of an input with consecutive loads
//! and keeps the `R` accumulators in FPU registers; LLVM unrolls it 4× with
//! nothing spilled: 73 instructions per 32 MACs for `R = 8` (2.28 per
//! MAC), 41 per 16 for `R = 4` (2.56), each MAC one `VLDR` of a weight and
//! one `VMLA.F32` (the chained multiply-accumulate: rounded product, then
//! rounded sum, the same value as `VMUL` + `VADD`; never the fused `VFMA`).

use super::pack::{check_block_rows, packed_len, padded_rows};
use crate::error::{check_len, Error, Operand};
use crate::layers::conv::{mul, Taps};
use crate::layers::{global_avg_pool_forward, Activation, Conv2d, DepthwiseConv2d, Pool2d};
use crate::tensor::{Shape, View, ViewMut};

/// Channels handled together (in registers) by the depthwise kernel.
const DW_GROUP: usize = 4;

/// `acc += Σ_p x[p]·w[p·R .. p·R + R]` for one block of `R` rows, in input
/// order (`w`: `x.len()·R` weights in the blocked order).
///
/// One input per source iteration, each meeting `R` consecutive weights;
/// LLVM unrolls it 4× and, with 32 single-precision registers, keeps the
/// `R` accumulators, the weights and the inputs in registers (no spills, no
/// bounds checks: the by-value `zip` of two exact-size iterators runs on one
/// counter). `a + x·w` stays two IEEE operations (Rust never contracts it
/// into a fused multiply-add); LLVM may emit `VMLA.F32`, which is the
/// chained (not fused) multiply-accumulate, rounding after the multiply and
/// after the add, so the result is the same as `VMUL` + `VADD`.
#[inline(always)]
fn dot_f32<const R: usize>(acc: &mut [f32; R], x: &[f32], w: &[f32]) {
    let mut a = *acc;
    for (wr, &xv) in w.chunks_exact(R).zip(x) {
        for r in 0..R {
            a[r] += xv * wr[r];
        }
    }
    *acc = a;
}

#[inline(always)]
fn init<const R: usize>(bias: &[f32]) -> [f32; R] {
    let mut acc = [0.0f32; R];
    for (a, &b) in acc.iter_mut().zip(bias) {
        *a = b;
    }
    acc
}

/// Write a block's outputs (as many as `y` holds) and apply the activation.
#[inline(always)]
fn write_block(act: Option<Activation>, acc: &[f32], y: &mut [f32]) {
    for (o, &a) in y.iter_mut().zip(acc) {
        *o = a;
    }
    if let Some(f) = act {
        f.forward_in_place(y);
    }
}

/// Dense layer on one sample: `y = act(W·x + b)`.
///
/// - `x`: `[inputs]`; `w`: `[outputs, inputs]` row-blocked with `r` rows
///   ([`packed_len`]`(outputs, inputs, r)` elements); `bias`:
///   `[⌈outputs/r⌉·r]` (padding entries ignored); `y`: `[outputs]`.
///
/// Errors (nothing written): `r` not 4 or 8 (`Param::BlockRows`), a zero
/// size (`Param::Dimension`), a length mismatch of `x`, `w`, `bias` or `y`.
pub fn dense_f32(
    x: &[f32],
    w: &[f32],
    r: usize,
    bias: &[f32],
    inputs: usize,
    outputs: usize,
    act: Option<Activation>,
    y: &mut [f32],
) -> Result<(), Error> {
    check_block_rows(r)?;
    if inputs == 0 || outputs == 0 {
        return Err(Error::InvalidParam(crate::Param::Dimension));
    }
    check_len(Operand::Input, inputs, x.len())?;
    check_len(Operand::Weight, packed_len(outputs, inputs, r)?, w.len())?;
    check_len(Operand::Bias, padded_rows(outputs, r)?, bias.len())?;
    check_len(Operand::Output, outputs, y.len())?;
    if r == 4 {
        dense_blocks::<4>(x, w, bias, act, y);
    } else {
        dense_blocks::<8>(x, w, bias, act, y);
    }
    Ok(())
}

/// The dense loop over blocks of `R` rows (arguments validated).
#[inline(never)]
fn dense_blocks<const R: usize>(
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Option<Activation>,
    y: &mut [f32],
) {
    let blocks = w
        .chunks_exact((x.len() * R).max(1))
        .zip(bias.chunks_exact(R))
        .zip(y.chunks_mut(R));
    for ((wb, bb), yb) in blocks {
        let mut acc = init::<R>(bb);
        dot_f32::<R>(&mut acc, x, wb);
        write_block(act, &acc, yb);
    }
}

/// 2-d convolution on one sample, computed directly (no im2col):
/// `y = act(conv(x, w) + b)`.
///
/// - `x`: `[in_h, in_w, in_c]`; `w`: filters `[out_c, KH, KW, in_c]`
///   row-blocked with `r` rows (`[⌈out_c/r⌉][KH][KW][in_c][r]`); `bias`:
///   `[⌈out_c/r⌉·r]`; `y`: `[out_h, out_w, out_c]`. Padded taps read 0 and
///   are skipped.
///
/// Errors (nothing written): `r` not 4 or 8, an invalid geometry (as
/// [`Conv2d::new`]), a length mismatch of `x`, `w`, `bias` or `y`.
pub fn conv2d_f32(
    geom: &Conv2d,
    x: &[f32],
    w: &[f32],
    r: usize,
    bias: &[f32],
    act: Option<Activation>,
    y: &mut [f32],
) -> Result<(), Error> {
    check_block_rows(r)?;
    let out = geom.output_shape(1)?;
    let win = geom.window;
    let patch = mul(mul(win.kernel_h, win.kernel_w)?, geom.in_c)?;
    check_len(Operand::Input, geom.input_shape(1).len()?, x.len())?;
    check_len(Operand::Weight, packed_len(geom.out_c, patch, r)?, w.len())?;
    check_len(Operand::Bias, padded_rows(geom.out_c, r)?, bias.len())?;
    check_len(Operand::Output, out.len()?, y.len())?;
    if r == 4 {
        conv_blocks::<4>(geom, out.h, out.w, patch, x, w, bias, act, y);
    } else {
        conv_blocks::<8>(geom, out.h, out.w, patch, x, w, bias, act, y);
    }
    Ok(())
}

/// The convolution loop (arguments validated).
#[inline(never)]
fn conv_blocks<const R: usize>(
    c: &Conv2d,
    out_h: usize,
    out_w: usize,
    patch: usize,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Option<Activation>,
    y: &mut [f32],
) {
    let (cin, kw, cout) = (c.in_c, c.window.kernel_w, c.out_c);
    let mut pixels = y.chunks_exact_mut(cout);
    for oh in 0..out_h {
        let th = c.window.taps_h(oh, c.in_h);
        for ow in 0..out_w {
            let tw = c.window.taps_w(ow, c.in_w);
            let Some(pixel) = pixels.next() else { return };
            let run = tw.len() * cin;
            let blocks = w
                .chunks_exact((patch * R).max(1))
                .zip(bias.chunks_exact(R))
                .zip(pixel.chunks_mut(R));
            for ((wb, bb), yb) in blocks {
                let mut acc = init::<R>(bb);
                // Validated geometry: both runs are in bounds.
                for (kh, ih) in th.iter() {
                    let xs = &x[(ih * c.in_w + tw.start) * cin..][..run];
                    let ws = &wb[(kh * kw + tw.lo) * cin * R..][..run * R];
                    dot_f32::<R>(&mut acc, xs, ws);
                }
                write_block(act, &acc, yb);
            }
        }
    }
}

/// Depthwise convolution (channel multiplier 1) on one sample:
/// `y = act(depthwise_conv(x, w) + b)`.
///
/// - `x`: `[in_h, in_w, C]`; `w`: taps `[KH, KW, C]` (plain); `bias`: `[C]`;
///   `y`: `[out_h, out_w, C]`.
///
/// Errors (nothing written): an invalid geometry, a length mismatch of
/// `x`, `w`, `bias` or `y`.
pub fn depthwise_f32(
    geom: &DepthwiseConv2d,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Option<Activation>,
    y: &mut [f32],
) -> Result<(), Error> {
    let out = geom.output_shape(1)?;
    check_len(Operand::Input, geom.input_shape(1).len()?, x.len())?;
    check_len(Operand::Weight, geom.weight_len()?, w.len())?;
    check_len(Operand::Bias, geom.channels, bias.len())?;
    check_len(Operand::Output, out.len()?, y.len())?;
    depthwise_run(geom, out.h, out.w, x, w, bias, act, y);
    Ok(())
}

/// `acc[k] += Σ_taps x[tap, c0 + k]·w[tap, c0 + k]` over the in-bounds taps.
#[inline(never)]
fn dw_group<const G: usize>(
    g: &DepthwiseConv2d,
    th: Taps,
    tw: Taps,
    c0: usize,
    x: &[f32],
    w: &[f32],
    acc: &mut [f32; G],
) {
    let c = g.channels;
    if c == 0 || c0 + G > c {
        return;
    }
    let (kw, n) = (g.window.kernel_w, tw.len());
    let mut a = *acc;
    // Per in-bounds kernel row: n whole input pixels and n whole taps of c
    // values each, the group being c0 .. c0 + G of every one. Validated
    // geometry keeps them in bounds (a row that were not would be skipped).
    for (kh, ih) in th.iter() {
        let xs = (ih * g.in_w + tw.start) * c;
        let ws = (kh * kw + tw.lo) * c;
        let (Some(xrow), Some(wrow)) = (x.get(xs..xs + n * c), w.get(ws..ws + n * c)) else {
            continue;
        };
        for (xp, wp) in xrow.chunks_exact(c).zip(wrow.chunks_exact(c)) {
            let xt = xp.get(c0..).and_then(<[f32]>::first_chunk::<G>);
            let wt = wp.get(c0..).and_then(<[f32]>::first_chunk::<G>);
            let (Some(xt), Some(wt)) = (xt, wt) else {
                break;
            };
            for k in 0..G {
                a[k] += xt[k] * wt[k];
            }
        }
    }
    *acc = a;
}

/// The depthwise loop (arguments validated).
#[inline(never)]
fn depthwise_run(
    g: &DepthwiseConv2d,
    out_h: usize,
    out_w: usize,
    x: &[f32],
    w: &[f32],
    bias: &[f32],
    act: Option<Activation>,
    y: &mut [f32],
) {
    let c = g.channels;
    let grouped = c - c % DW_GROUP;
    let mut pixels = y.chunks_exact_mut(c);
    for oh in 0..out_h {
        let th = g.window.taps_h(oh, g.in_h);
        for ow in 0..out_w {
            let tw = g.window.taps_w(ow, g.in_w);
            let Some(pixel) = pixels.next() else { return };
            for c0 in (0..grouped).step_by(DW_GROUP) {
                let mut acc = init::<DW_GROUP>(&bias[c0..]);
                dw_group::<DW_GROUP>(g, th, tw, c0, x, w, &mut acc);
                write_block(act, &acc, &mut pixel[c0..c0 + DW_GROUP]);
            }
            for c0 in grouped..c {
                let mut acc = [bias[c0]];
                dw_group::<1>(g, th, tw, c0, x, w, &mut acc);
                write_block(act, &acc, &mut pixel[c0..=c0]);
            }
        }
    }
}

/// Max or average pooling (by `geom.kind`) on one sample:
/// [`Pool2d::forward`] on batch-1 views. `x`: `[in_h, in_w, C]`, `y`:
/// `[out_h, out_w, C]`.
///
/// Errors (nothing written): an invalid geometry, a length mismatch of `x`
/// (`Operand::Input`) or `y` (`Operand::Output`).
pub fn pool_f32(geom: &Pool2d, x: &[f32], y: &mut [f32]) -> Result<(), Error> {
    let ys = geom.output_shape(1)?;
    let xv = View::new(geom.input_shape(1), x)?;
    geom.forward(xv, ViewMut::new(ys, y)?)
}

/// Global average pooling on one sample, `[h, w, c] -> [c]`:
/// [`global_avg_pool_forward`] on batch-1 views.
///
/// Errors (nothing written): a zero dimension (`Param::Dimension`), a
/// length mismatch of `x` (`h·w·c`) or `y` (`c`), overflow.
pub fn global_avg_pool_f32(
    h: usize,
    w: usize,
    c: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<(), Error> {
    let xv = View::new(Shape::nhwc(1, h, w, c), x)?;
    global_avg_pool_forward(xv, ViewMut::new(Shape::nhwc(1, 1, 1, c), y)?)
}

/// A standalone activation layer: `y = act(x)` element-wise
/// ([`Activation::forward`]). Errors: `y` not as long as `x`.
pub fn activation_f32(act: Activation, x: &[f32], y: &mut [f32]) -> Result<(), Error> {
    act.forward(x, y)
}

#[cfg(test)]
mod tests {
    //! The f32 kernels against the batch layers ([`crate::layers`] with the
    //! [`Portable`](crate::gemm::Portable) product) on the unblocked weights,
    //! followed by the same activation.
    //!
    //! Tolerance: `|kernel - layer| ≤ 1e-5·(1 + Σ|terms|)` per output, with
    //! `Σ|terms| = |b| + Σ|x·w|`: both are f32 sums of the same products in
    //! different orders, each within `P·2^-24·Σ|terms|` of the exact value
    //! (P ≤ 180 here), and every activation is 1-Lipschitz.

    use super::*;
    use crate::gemm::Portable;
    use crate::kernels::pack::pack_rows;
    use crate::layers::{Dense, Padding, PoolKind, Window};
    use crate::testutil::random_vec;
    use crate::Param;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// A kernel call with everything but the output bound.
    type Call<'a> = &'a dyn Fn(&mut [f32]) -> Result<(), Error>;

    const TOL: f64 = 1e-5;

    fn act(code: u8) -> Option<Activation> {
        match code {
            1 => Some(Activation::Relu),
            2 => Some(Activation::Relu6),
            3 => Some(Activation::Sigmoid),
            4 => Some(Activation::Tanh),
            _ => None,
        }
    }

    fn apply(a: Option<Activation>, y: &mut [f32]) {
        if let Some(a) = a {
            a.forward_in_place(y);
        }
    }

    #[track_caller]
    fn assert_near(got: &[f32], want: &[f32], mag: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
            let d = (f64::from(g) - f64::from(w)).abs();
            assert!(
                d <= TOL * (1.0 + m),
                "output {i}: {g} vs layer {w} (Σ|terms| {m})"
            );
        }
    }

    fn pack(w: &[f32], rows: usize, cols: usize, r: usize) -> Vec<f32> {
        let mut p = vec![0.0; packed_len(rows, cols, r).unwrap()];
        pack_rows(w, rows, cols, r, &mut p).unwrap();
        p
    }

    /// The bias padded to whole blocks with noise the kernels must ignore.
    fn pad_bias(b: &[f32], r: usize) -> Vec<f32> {
        let mut p = b.to_vec();
        p.resize(padded_rows(b.len(), r).unwrap(), 1e30);
        p
    }

    fn r_of(eight: bool) -> usize {
        if eight {
            8
        } else {
            4
        }
    }

    proptest! {
        #[test]
        fn dense_f32_matches_layer(inputs in 1usize..=40, outputs in 1usize..=21, eight in any::<bool>(),
                                   code in 0u8..5, seed in any::<u64>()) {
            let r = r_of(eight);
            let a = act(code);
            let x = random_vec(seed, inputs);
            let w: Vec<f32> = random_vec(seed ^ 1, outputs * inputs).iter().map(|v| 3.0 * v).collect();
            let b = random_vec(seed ^ 2, outputs);
            let mut want = vec![0.0; outputs];
            Dense::new(inputs, outputs).unwrap().forward(
                &Portable,
                View::new(Shape::features(1, inputs), &x).unwrap(),
                &w,
                Some(&b),
                ViewMut::new(Shape::features(1, outputs), &mut want).unwrap(),
            ).unwrap();
            apply(a, &mut want);
            let mag: Vec<f64> = (0..outputs)
                .map(|o| f64::from(b[o].abs()) + (0..inputs).map(|i| f64::from((x[i] * w[o * inputs + i]).abs())).sum::<f64>())
                .collect();
            let mut y = vec![f32::NAN; outputs];
            dense_f32(&x, &pack(&w, outputs, inputs, r), r, &pad_bias(&b, r), inputs, outputs, a, &mut y).unwrap();
            assert_near(&y, &want, &mag);
        }

        #[test]
        fn conv2d_f32_matches_layer(
            (h, wd, cin) in (1usize..=6, 1usize..=6, 1usize..=5), cout in 1usize..=11,
            (kh, kw, sh, sw) in (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
            pad in [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
            eight in any::<bool>(), code in 0u8..5, seed in any::<u64>(),
        ) {
            let r = r_of(eight);
            let a = act(code);
            let window = Window {
                kernel_h: kh.min(h + pad[0] + pad[1]),
                kernel_w: kw.min(wd + pad[2] + pad[3]),
                stride_h: sh,
                stride_w: sw,
                padding: Padding { top: pad[0], bottom: pad[1], left: pad[2], right: pad[3] },
            };
            let conv = Conv2d::new(h, wd, cin, cout, window).unwrap();
            let patch = window.kernel_h * window.kernel_w * cin;
            let x = random_vec(seed, h * wd * cin);
            let w = random_vec(seed ^ 1, cout * patch);
            let b = random_vec(seed ^ 2, cout);
            let ys = conv.output_shape(1).unwrap();
            let mut want = vec![0.0; ys.len().unwrap()];
            let mut scratch = vec![0.0; conv.forward_scratch_len(1).unwrap()];
            conv.forward(
                &Portable,
                View::new(conv.input_shape(1), &x).unwrap(),
                &w,
                Some(&b),
                ViewMut::new(ys, &mut want).unwrap(),
                &mut scratch,
            ).unwrap();
            apply(a, &mut want);
            // Σ|terms| bounded by |b| + Σ_all |x|·max|w| (a valid upper bound).
            let wmax = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let xsum: f64 = x.iter().map(|v| f64::from(v.abs())).sum();
            let mag: Vec<f64> = (0..want.len()).map(|i| f64::from(b[i % cout].abs()) + xsum * f64::from(wmax)).collect();
            let mut y = vec![f32::NAN; want.len()];
            conv2d_f32(&conv, &x, &pack(&w, cout, patch, r), r, &pad_bias(&b, r), a, &mut y).unwrap();
            assert_near(&y, &want, &mag);
        }

        #[test]
        fn depthwise_f32_matches_layer(
            (h, wd, c) in (1usize..=6, 1usize..=6, 1usize..=11),
            (kh, kw, sh, sw) in (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
            pad in [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
            code in 0u8..5, seed in any::<u64>(),
        ) {
            let a = act(code);
            let window = Window {
                kernel_h: kh.min(h + pad[0] + pad[1]),
                kernel_w: kw.min(wd + pad[2] + pad[3]),
                stride_h: sh,
                stride_w: sw,
                padding: Padding { top: pad[0], bottom: pad[1], left: pad[2], right: pad[3] },
            };
            let dw = DepthwiseConv2d::new(h, wd, c, window).unwrap();
            let x = random_vec(seed, h * wd * c);
            let w = random_vec(seed ^ 1, dw.weight_len().unwrap());
            let b = random_vec(seed ^ 2, c);
            let ys = dw.output_shape(1).unwrap();
            let mut want = vec![0.0; ys.len().unwrap()];
            dw.forward(View::new(dw.input_shape(1), &x).unwrap(), &w, Some(&b), ViewMut::new(ys, &mut want).unwrap()).unwrap();
            apply(a, &mut want);
            let taps = (window.kernel_h * window.kernel_w) as f64;
            let mag: Vec<f64> = (0..want.len()).map(|i| f64::from(b[i % c].abs()) + taps).collect();
            let mut y = vec![f32::NAN; want.len()];
            depthwise_f32(&dw, &x, &w, &b, a, &mut y).unwrap();
            assert_near(&y, &want, &mag);
        }
    }

    #[test]
    fn pooling_and_activation_wrappers_match_layers() {
        let pool = Pool2d::new(PoolKind::Average, 5, 4, 3, Window::square(2, 2, 1)).unwrap();
        let x = random_vec(3, 60);
        let ys = pool.output_shape(1).unwrap();
        let mut want = vec![0.0; ys.len().unwrap()];
        pool.forward(
            View::new(pool.input_shape(1), &x).unwrap(),
            ViewMut::new(ys, &mut want).unwrap(),
        )
        .unwrap();
        let mut y = vec![f32::NAN; want.len()];
        pool_f32(&pool, &x, &mut y).unwrap();
        assert_eq!(y, want);
        let mut g = [f32::NAN; 3];
        global_avg_pool_f32(5, 4, 3, &x, &mut g).unwrap();
        for (ch, &v) in g.iter().enumerate() {
            let mean: f32 = (0..20).map(|p| x[p * 3 + ch]).sum::<f32>() / 20.0;
            assert!((v - mean).abs() <= 1e-6, "{v} vs {mean}");
        }
        let mut s = vec![0.0; 60];
        activation_f32(Activation::Sigmoid, &x, &mut s).unwrap();
        for (&a, &b) in x.iter().zip(&s) {
            assert_eq!(b, crate::math::sigmoid(a));
        }
    }

    #[test]
    fn bad_arguments_are_specific_errors() {
        let len_err = |operand, expected, actual| Error::LengthMismatch {
            operand,
            expected,
            actual,
        };
        // Dense 5 -> 6, R = 8: w 40, bias 8.
        let (x, w, b) = (vec![1.0f32; 5], vec![1.0f32; 40], vec![0.0f32; 8]);
        let cases: [(Call<'_>, Error); 7] = [
            (
                &|y| dense_f32(&x, &w, 7, &b, 5, 6, None, y),
                Error::InvalidParam(Param::BlockRows),
            ),
            (
                &|y| dense_f32(&x, &w, 8, &b, 5, 0, None, y),
                Error::InvalidParam(Param::Dimension),
            ),
            (
                &|y| dense_f32(&x[1..], &w, 8, &b, 5, 6, None, y),
                len_err(Operand::Input, 5, 4),
            ),
            (
                &|y| dense_f32(&x, &w[1..], 8, &b, 5, 6, None, y),
                len_err(Operand::Weight, 40, 39),
            ),
            (
                &|y| dense_f32(&x, &w, 8, &b[..6], 5, 6, None, y),
                len_err(Operand::Bias, 8, 6),
            ),
            (
                &|y| dense_f32(&x, &w, 8, &b, 5, 6, None, &mut y[..5]),
                len_err(Operand::Output, 6, 5),
            ),
            (
                &|y| dense_f32(&x, &w[..20], 4, &b, 5, 6, None, y),
                len_err(Operand::Weight, 40, 20),
            ),
        ];
        for (call, err) in cases {
            let mut y = vec![9.0f32; 6];
            assert_eq!(call(&mut y), Err(err));
            assert!(y.iter().all(|&v| v == 9.0));
        }
        let mut y = vec![9.0f32; 6];
        dense_f32(&x, &w, 8, &b, 5, 6, Some(Activation::Relu), &mut y).unwrap();
        assert_eq!(y, [5.0; 6]);

        // Conv 4×4×2 -> 3×3 pad 1 -> 4×4×3, R = 4: patch 18, w 72, bias 4.
        let conv = Conv2d::new(4, 4, 2, 3, Window::square(3, 1, 1)).unwrap();
        let (x, w, b) = (vec![1.0f32; 32], vec![1.0f32; 72], vec![0.0f32; 4]);
        let cases: [(Call<'_>, Error); 6] = [
            (
                &|y| conv2d_f32(&conv, &x, &w, 2, &b, None, y),
                Error::InvalidParam(Param::BlockRows),
            ),
            (
                &|y| conv2d_f32(&Conv2d { out_c: 0, ..conv }, &x, &w, 4, &b, None, y),
                Error::InvalidParam(Param::Dimension),
            ),
            (
                &|y| conv2d_f32(&conv, &x[1..], &w, 4, &b, None, y),
                len_err(Operand::Input, 32, 31),
            ),
            (
                &|y| conv2d_f32(&conv, &x, &w[1..], 4, &b, None, y),
                len_err(Operand::Weight, 72, 71),
            ),
            (
                &|y| conv2d_f32(&conv, &x, &w, 4, &b[1..], None, y),
                len_err(Operand::Bias, 4, 3),
            ),
            (
                &|y| conv2d_f32(&conv, &x, &w, 4, &b, None, &mut y[1..]),
                len_err(Operand::Output, 48, 47),
            ),
        ];
        for (call, err) in cases {
            let mut y = vec![9.0f32; 48];
            assert_eq!(call(&mut y), Err(err));
            assert!(y.iter().all(|&v| v == 9.0));
        }

        let dw = DepthwiseConv2d::new(4, 4, 2, Window::square(3, 1, 1)).unwrap();
        let (w, b) = (vec![1.0f32; 18], vec![0.0f32; 2]);
        let cases: [(Call<'_>, Error); 4] = [
            (
                &|y| depthwise_f32(&dw, &x[1..], &w, &b, None, y),
                len_err(Operand::Input, 32, 31),
            ),
            (
                &|y| depthwise_f32(&dw, &x, &w[1..], &b, None, y),
                len_err(Operand::Weight, 18, 17),
            ),
            (
                &|y| depthwise_f32(&dw, &x, &w, &b[1..], None, y),
                len_err(Operand::Bias, 2, 1),
            ),
            (
                &|y| depthwise_f32(&dw, &x, &w, &b, None, &mut y[1..]),
                len_err(Operand::Output, 32, 31),
            ),
        ];
        for (call, err) in cases {
            let mut y = vec![9.0f32; 32];
            assert_eq!(call(&mut y), Err(err));
            assert!(y.iter().all(|&v| v == 9.0));
        }

        let pool = Pool2d::new(PoolKind::Max, 4, 4, 2, Window::square(2, 2, 0)).unwrap();
        let mut y = vec![9.0f32; 8];
        assert_eq!(
            pool_f32(&pool, &x[1..], &mut y),
            Err(len_err(Operand::Input, 32, 31))
        );
        assert_eq!(
            pool_f32(&pool, &x, &mut y[1..]),
            Err(len_err(Operand::Output, 8, 7))
        );
        assert_eq!(
            global_avg_pool_f32(4, 4, 2, &x, &mut y[..3]),
            Err(len_err(Operand::Output, 2, 3))
        );
        assert_eq!(
            activation_f32(Activation::Relu, &x, &mut y),
            Err(len_err(Operand::Output, 32, 8))
        );
        assert!(y.iter().all(|&v| v == 9.0));
    }
}
