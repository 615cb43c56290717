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
//! Dense is the convolution loop on a 1×1 input (one pixel, one run), so
//! both share their code; depthwise keeps its accumulators in the output
//! pixel (channels innermost, contiguous in NHWC and in the taps), pooling
//! likewise. Code size matters as much as speed here: every kernel is one
//! non-generic function around at most two small generic inner loops.

use super::pack::{check_block_rows, packed_len, padded_rows};
use super::{for_each_window, unroll_barrier};
use crate::error::{check_len, Error, Operand, Param};
use crate::layers::conv::mul;
use crate::layers::{Activation, Conv2d, DepthwiseConv2d, Pool2d, PoolKind, Window};

/// `acc += Σ_p x[p]·w[p·R .. p·R + R]` for one block of `R` rows over one
/// run, in input order (`w` from the run's first weight; the zip stops at
/// the end of `x`).
///
/// One input per source iteration, each meeting `R` consecutive weights;
/// LLVM unrolls it 4× and, with 32 single-precision registers, keeps the
/// `R` accumulators, the weights and the inputs in registers (no spills, no
/// bounds checks: the by-value `zip` of two exact-size iterators runs on one
/// counter). The unrolling matters here: `VLDR` has no post-increment, so
/// a loop of one input pays two address updates and a compare per input
/// (23 instructions per 8 MACs instead of 73 per 32). `a + x·w` stays two IEEE operations (Rust never contracts it
/// into a fused multiply-add); LLVM may emit `VMLA.F32`, which is the
/// chained (not fused) multiply-accumulate, rounding after the multiply and
/// after the add, so the result is the same as `VMUL` + `VADD`.
#[inline(never)]
fn dot_f32<const R: usize>(acc: &mut [f32; R], x: &[f32], w: &[f32]) {
    let mut a = *acc;
    for (wr, &xv) in w.chunks_exact(R).zip(x) {
        for r in 0..R {
            a[r] += xv * wr[r];
        }
    }
    *acc = a;
}

/// `y ← act(y)` element-wise ([`Activation::apply`]), nothing for `None`.
#[inline(never)]
pub(crate) fn activate(act: Option<Activation>, y: &mut [f32]) {
    /// Not inlined into the loop: one copy of the polynomial.
    #[inline(never)]
    fn sigmoid(v: f32) -> f32 {
        crate::math::sigmoid(v)
    }
    let f: fn(f32) -> f32 = match act {
        None => return,
        Some(Activation::Relu) => |v| v.max(0.0),
        Some(Activation::Relu6) => |v| v.clamp(0.0, 6.0),
        Some(Activation::Sigmoid) => sigmoid,
        Some(Activation::Tanh) => libm::tanhf,
    };
    for v in y {
        unroll_barrier();
        *v = f(*v);
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
        return Err(Error::InvalidParam(Param::Dimension));
    }
    // A 1×1 convolution of a 1×1 input with `inputs` channels.
    let geom = Conv2d {
        in_h: 1,
        in_w: 1,
        in_c: inputs,
        out_c: outputs,
        window: Window::square(1, 1, 0),
    };
    conv2d_f32(&geom, x, w, r, bias, act, y)
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
#[inline(never)]
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
    conv_blocks(geom, out.h, out.w, patch, x, w, r, bias, act, y);
    Ok(())
}

/// The dense and convolution loop (arguments validated): pixels, blocks of
/// `r` filters, then one `dot_f32` per in-bounds kernel row (a
/// contiguous run of `KW'·in_c` inputs, and of as many weights times `r`).
#[inline(never)]
pub(crate) fn conv_blocks(
    c: &Conv2d,
    out_h: usize,
    out_w: usize,
    patch: usize,
    x: &[f32],
    w: &[f32],
    r: usize,
    bias: &[f32],
    act: Option<Activation>,
    y: &mut [f32],
) {
    let (cin, kw, cout) = (c.in_c, c.window.kernel_w, c.out_c);
    let (x_step, w_step, per_block) = (c.in_w * cin, kw * cin * r, patch * r);
    for_each_window(&c.window, c.in_h, c.in_w, out_h, out_w, |o, th, tw| {
        let Some(pixel) = y.get_mut(o * cout..(o + 1) * cout) else {
            return;
        };
        let len = tw.len() * cin;
        let x0 = (th.start * c.in_w + tw.start) * cin;
        let w0 = (th.lo * kw + tw.lo) * cin * r;
        // `r` is 4 or 8; `max(1)`: no chunk size of 0 (which would panic).
        let rr = r.max(1);
        for (b, (yb, bb)) in pixel.chunks_mut(rr).zip(bias.chunks_exact(rr)).enumerate() {
            let mut acc = [0.0f32; 8];
            for (a, &v) in acc.iter_mut().zip(bb) {
                unroll_barrier();
                *a = v;
            }
            for row in 0..th.len() {
                let start = x0 + row * x_step;
                let (Some(xs), Some(ws)) = (
                    x.get(start..start + len),
                    w.get(b * per_block + w0 + row * w_step..),
                ) else {
                    break;
                };
                match acc.first_chunk_mut::<4>() {
                    Some(a4) if r == 4 => dot_f32::<4>(a4, xs, ws),
                    _ => dot_f32::<8>(&mut acc, xs, ws),
                }
            }
            for (o, &a) in yb.iter_mut().zip(&acc) {
                unroll_barrier();
                *o = a;
            }
            activate(act, yb);
        }
    });
}

/// Depthwise convolution (channel multiplier 1) on one sample:
/// `y = act(depthwise_conv(x, w) + b)`.
///
/// - `x`: `[in_h, in_w, C]`; `w`: taps `[KH, KW, C]` (plain); `bias`: `[C]`;
///   `y`: `[out_h, out_w, C]`.
///
/// Errors (nothing written): an invalid geometry, a length mismatch of
/// `x`, `w`, `bias` or `y`.
#[inline(never)]
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
    let op = ChannelOp::Taps {
        w,
        kw: geom.window.kernel_w,
        bias,
        act,
    };
    let dims = (geom.in_h, geom.in_w, geom.channels);
    channel_windows(op, &geom.window, dims, (out.h, out.w), x, y);
    Ok(())
}

/// What `channel_windows` computes per channel of each window.
#[derive(Clone, Copy)]
pub(crate) enum ChannelOp<'a> {
    /// The largest input (the first, then any larger one).
    Max,
    /// The sum times `1/count` (average and global average pooling).
    Mean,
    /// `act(bias + Σ x·w[tap])` (depthwise convolution; `w` is `[KH, KW, C]`,
    /// `kw` its KW).
    Taps {
        w: &'a [f32],
        kw: usize,
        bias: &'a [f32],
        act: Option<Activation>,
    },
}

/// One tap of `channel_windows`: `xp` the input pixel, `at` the tap's
/// first weight (depthwise), `first` whether it is the window's first tap
/// (max). Not inlined: one copy of each loop (code size).
#[inline(never)]
fn tap_f32(op: ChannelOp<'_>, pixel: &mut [f32], xp: &[f32], at: usize, first: bool) {
    match op {
        ChannelOp::Max => {
            for (v, &xv) in pixel.iter_mut().zip(xp) {
                unroll_barrier();
                if first || xv > *v {
                    *v = xv;
                }
            }
        }
        ChannelOp::Mean => {
            for (v, &xv) in pixel.iter_mut().zip(xp) {
                unroll_barrier();
                *v += xv;
            }
        }
        ChannelOp::Taps { w, .. } => {
            let wp = w.get(at..).unwrap_or(&[]);
            for ((v, &xv), &wv) in pixel.iter_mut().zip(xp).zip(wp) {
                unroll_barrier();
                *v += xv * wv;
            }
        }
    }
}

/// Every per-channel window kernel (depthwise convolution, max and average
/// pooling, global average pooling: one function, for code size), arguments
/// validated. The output pixel is the accumulator: it starts at the bias
/// or 0, takes every in-bounds tap in window order (channels innermost:
/// contiguous in NHWC and in the taps), then the activation or the scale.
/// Depthwise: 7 instructions per MAC (`VLDR` ×3, `VMLA`, `VSTR`, the loop).
#[inline(never)]
pub(crate) fn channel_windows(
    op: ChannelOp<'_>,
    win: &Window,
    (in_h, in_w, c): (usize, usize, usize),
    (out_h, out_w): (usize, usize),
    x: &[f32],
    y: &mut [f32],
) {
    for_each_window(win, in_h, in_w, out_h, out_w, |o, th, tw| {
        let Some(pixel) = y.get_mut(o * c..(o + 1) * c) else {
            return;
        };
        match op {
            ChannelOp::Taps { bias, .. } => {
                for (v, &b) in pixel.iter_mut().zip(bias) {
                    unroll_barrier();
                    *v = b;
                }
            }
            _ => {
                for v in pixel.iter_mut() {
                    unroll_barrier();
                    *v = 0.0;
                }
            }
        }
        let mut first = true;
        for (kh, ih) in th.iter() {
            for (k, iw) in tw.iter() {
                let xp = x.get((ih * in_w + iw) * c..).unwrap_or(&[]);
                let kw = match op {
                    ChannelOp::Taps { kw, .. } => kw,
                    _ => 0,
                };
                tap_f32(op, pixel, xp, (kh * kw + k) * c, first);
                first = false;
            }
        }
        let count = th.len() * tw.len();
        match op {
            ChannelOp::Taps { act, .. } => activate(act, pixel),
            ChannelOp::Mean if count > 0 => {
                let scale = 1.0 / count as f32;
                for v in pixel.iter_mut() {
                    unroll_barrier();
                    *v *= scale;
                }
            }
            _ => {}
        }
    });
}

/// Max or average pooling (by `geom.kind`) on one sample, as
/// [`Pool2d::forward`] on a batch of one: max takes the in-bounds taps'
/// largest value (the first, then any larger one), average sums them in
/// window order and multiplies by `1/count`; a window entirely in the
/// padding gives 0. `x`: `[in_h, in_w, C]`, `y`: `[out_h, out_w, C]`.
///
/// Errors (nothing written): an invalid geometry, a length mismatch of `x`
/// (`Operand::Input`) or `y` (`Operand::Output`).
pub fn pool_f32(geom: &Pool2d, x: &[f32], y: &mut [f32]) -> Result<(), Error> {
    let out = geom.output_shape(1)?;
    check_len(Operand::Input, geom.input_shape(1).len()?, x.len())?;
    check_len(Operand::Output, out.len()?, y.len())?;
    let op = match geom.kind {
        PoolKind::Max => ChannelOp::Max,
        PoolKind::Average => ChannelOp::Mean,
    };
    let dims = (geom.in_h, geom.in_w, geom.channels);
    channel_windows(op, &geom.window, dims, (out.h, out.w), x, y);
    Ok(())
}

/// Global average pooling on one sample, `[h, w, c] -> [c]`: the average
/// pooling of [`pool_f32`] with one `h × w` window (pixels summed in order,
/// times `1/(h·w)`, as [`global_avg_pool_forward`](crate::layers::global_avg_pool_forward)).
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
    if h == 0 || w == 0 || c == 0 {
        return Err(Error::InvalidParam(Param::Dimension));
    }
    check_len(Operand::Input, mul(mul(h, w)?, c)?, x.len())?;
    check_len(Operand::Output, c, y.len())?;
    let win = Window {
        kernel_h: h,
        kernel_w: w,
        stride_h: 1,
        stride_w: 1,
        padding: crate::layers::Padding::NONE,
    };
    channel_windows(ChannelOp::Mean, &win, (h, w, c), (1, 1), x, y);
    Ok(())
}

/// A standalone activation layer: `y = act(x)` element-wise
/// ([`Activation::apply`]). Errors: `y` not as long as `x`.
pub fn activation_f32(act: Activation, x: &[f32], y: &mut [f32]) -> Result<(), Error> {
    check_len(Operand::Output, x.len(), y.len())?;
    y.copy_from_slice(x);
    activate(Some(act), y);
    Ok(())
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
    use crate::layers::{Dense, Padding};
    use crate::tensor::{Shape, View, ViewMut};
    use crate::testutil::random_vec;
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
