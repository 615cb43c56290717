//! Host-only fast paths for layers whose core kernels trade speed for
//! memory (core runs on microcontrollers and keeps no per-element state).
//!
//! - **Max pooling with a recorded argmax.** Core's
//!   [`Pool2d::backward`](normcore::layers::Pool2d::backward) recomputes
//!   every window's argmax from the forward input, which costs as much as the
//!   forward pass again. The host has memory to spare, so
//!   [`maxpool_forward`] records, for every output element, the index of the
//!   input element it was taken from, and [`maxpool_backward`] is a scatter
//!   of `dy` through those indices.
//!
//!   Bit for bit what core computes: the same window scan (`kh` then
//!   `kw`), the same comparison (`>`, so the first maximum wins a tie and a
//!   NaN never replaces the first tap) and the same order of additions in
//!   the backward scatter (output pixels in NHWC order, channels ascending).
//! - **Convolution lowered one part at a time.** Core's
//!   [`Conv2d`](normcore::layers::Conv2d) lowers a chunk of samples to the
//!   im2col matrix in a scratch buffer and multiplies it. [`conv_forward`]
//!   and [`conv_backward`] lower a few samples at a time (about 512 KiB,
//!   `lowering_samples`) into per-thread scratch and multiply each part
//!   while it is in cache; the backward pass lowers its part again rather
//!   than keeping the whole batch's lowering (the `cnn` preset's was 10 MB
//!   per step, and grows as batch × pixels × patch: a 3×3×64 conv on
//!   32×32 inputs would keep 300 MB at batch 128). Measured on the `cnn`
//!   preset, the step time did not change (3.5–3.8 s per epoch either way
//!   on 1 thread, `normcore bench`, alternating runs); the workspace is
//!   what shrank. The lowering copies kernel rows with short fixed-size
//!   moves (a `memcpy` call per run of 80 values cost more than the copy).
//!   Forward and input gradient: the same products on the same rows as
//!   core, the same bits. The weight gradient sums the parts' products in
//!   order, and one whose `Cout` is a multiple of 16 and whose patch is
//!   not is computed as `(colsᵀ·dy)ᵀ`, the shape the product vectorises
//!   without padding (`dw_transposed`): close to core's, not always equal
//!   (tested), and the same on every run.
//! - **Narrow convolutions without a lowering.** A convolution whose patch
//!   has at most 32 values (a first layer: 5×5×1, 3×3×3) is computed from
//!   its input directly ([`conv_is_narrow`]): 8 output pixels × 16 output
//!   channels per block of accumulators, forward and for the weight
//!   gradient; its input gradient still goes through the product and
//!   col2im (from `dy`, so no lowering is kept). Each output sums its taps
//!   in order; the weight gradient sums 8 pixels as a tree and then adds
//!   them to the running sum. That is another order than the product's, so
//!   the results are close to core's, not equal (tested), and still the
//!   same on every run with the same thread count. The `cnn` preset's
//!   first conv went from 0.89 + 0.32 ms per 1-thread step (forward +
//!   backward) to 0.38 + 0.37 ms, and the lowering's 3.7 MB per step are
//!   gone.
//!
//! - **Batch Normalization over several threads.** Core's BN sees the whole
//!   batch on one thread. With more threads, [`bn_forward_train`] and
//!   [`bn_backward`] split the rows by samples: each thread sums its own
//!   rows (per-channel partial sums in its own buffer), the partials are
//!   added in thread order on the calling thread (the two-phase statistics:
//!   mean, then variance about it), and the elementwise passes run on every
//!   thread again. The sums are reassociated (one partial per thread), so
//!   results differ from one thread's in the last bits but are the same on
//!   every run with the same thread count. One thread uses core's kernels.
//!
//! - **BN fused with the ReLU after it.** In training, a BN layer followed
//!   by a ReLU writes the ReLU's output directly ([`bn_forward_train`] with
//!   `relu`), and its backward pass forms `dy·[y > 0]` where it reads the
//!   gradient ([`bn_backward`] with `relu_y`): two passes over the
//!   activations fewer each way (the `cnn` preset: 2.6 ms of BN and ReLU
//!   per 1-thread step became 1.65 ms). Each value is computed by the same
//!   operations as BN then core's ReLU, so the bits are the same.
//! - **Sigmoid, the SGD update and the finiteness check** (the paper MLP's
//!   per-step passes besides the products): core's loops compiled for the
//!   CPU's vectors here, the same bits. [`sgd_update`] runs core's
//!   `Sgd::step` block by block and checks each block's new weights while
//!   they are in L1, which saves the trainer a pass over every weight per
//!   step (core's baseline build of the update ran 4 floats per
//!   instruction; the paper MLP's step went from 0.222 to 0.205 ms with
//!   this and the AVX-512 builds below, `normcore bench --no-cnn`).
//! - **Batch rows from bytes** ([`decode_bytes`], [`prefetch`]): see the
//!   data module's "Byte form".
//! - **AVX-512 and AVX2 builds of the elementwise loops.** The workspace
//!   compiles for baseline x86-64 (SSE2). The loops here (pooling, BN's
//!   passes, ReLU, sigmoid, the update) are compiled twice more, with
//!   AVX-512F and with AVX2 enabled (`multiversion!`), and the widest the
//!   CPU has is picked at run time ([`simd`]; `NORMCORE_SIMD=avx2` or
//!   `baseline` caps it, to measure the other builds: the `cnn` preset at
//!   1 thread here, 3.1 / 3.5 / 5.2 s per epoch with AVX-512 / AVX2 /
//!   baseline loops, the `gemm` crate's products unchanged). The
//!   arithmetic is the same (Rust never fuses a multiply and an add on its
//!   own, and the per-channel sums run over rows in the same order
//!   whatever the vector width), so every build gives the same bits. (AVX-512 target features need Rust 1.89,
//!   this crate's minimum; core and the firmware keep 1.87.)
//!
//! The tests below compare every function here against core.

use crate::fastgemm::FastGemm;
use normcore::layers::Activation;
use normcore::layers::{Conv2d, Pool2d, PoolKind};
use normcore::{Error, Gemm, MatMut, MatRef, Operand};
use std::ops::Range;

/// The vector instructions the `multiversion!` loops use: the widest the
/// CPU has, capped by the environment variable `NORMCORE_SIMD`
/// (`avx512`, `avx2` or `baseline`), read once. The cap exists to measure
/// the builds a machine would not pick on its own (all give the same bits);
/// an unknown value is reported on stderr and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    /// Baseline x86-64 (SSE2), or another architecture.
    Baseline,
    /// AVX2.
    Avx2,
    /// AVX-512F with AVX-512VL.
    Avx512,
}

/// See [`Simd`].
pub fn simd() -> Simd {
    static LEVEL: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        let detected = if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            Simd::Avx512
        } else if std::arch::is_x86_feature_detected!("avx2") {
            Simd::Avx2
        } else {
            Simd::Baseline
        };
        #[cfg(not(target_arch = "x86_64"))]
        let detected = Simd::Baseline;
        let cap = simd_cap(std::env::var("NORMCORE_SIMD").ok().as_deref()).unwrap_or_else(|e| {
            eprintln!("warning: {e}; ignored");
            Simd::Avx512
        });
        detected.min(cap)
    })
}

/// The cap `NORMCORE_SIMD` sets (none when unset).
fn simd_cap(value: Option<&str>) -> Result<Simd, String> {
    match value {
        None | Some("avx512") => Ok(Simd::Avx512),
        Some("avx2") => Ok(Simd::Avx2),
        Some("baseline") => Ok(Simd::Baseline),
        Some(other) => Err(format!(
            "NORMCORE_SIMD={other:?} is not avx512, avx2 or baseline"
        )),
    }
}

/// Define `fn $name(args) [-> T]` whose body is compiled three times, for
/// baseline x86-64, with AVX2 and with AVX-512F/VL enabled, the build
/// [`simd`] names being taken (a cached load per call). Elsewhere: the one
/// build.
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn inner($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl")]
                fn avx512($($a: $t),*) $(-> $r)? {
                    inner($($a),*)
                }
                #[target_feature(enable = "avx2")]
                fn avx2($($a: $t),*) $(-> $r)? {
                    inner($($a),*)
                }
                match $crate::hostops::simd() {
                    // SAFETY: `simd` names a level only when the CPU has
                    // its features (detected at run time).
                    #[allow(unsafe_code)]
                    $crate::hostops::Simd::Avx512 => return unsafe { avx512($($a),*) },
                    // SAFETY: as above, AVX2.
                    #[allow(unsafe_code)]
                    $crate::hostops::Simd::Avx2 => return unsafe { avx2($($a),*) },
                    $crate::hostops::Simd::Baseline => {}
                }
            }
            inner($($a),*)
        }
    };
}

/// For rows of `c` ≤ 64 channels: runs `pass::<W>(lo)` over the channels
/// in blocks of `W` = 64, 32 or 16 (the largest that fits what is left),
/// then `rest(lo)` for the last `c mod 16` channels from `lo`. The
/// per-channel sums below keep a block's `W` running sums in vector
/// registers while they walk the rows, where a loop over a runtime number
/// of channels kept them in memory (a load, an add and a store per row and
/// channel, each row waiting on the last: the `cnn` preset's first BN spent
/// 0.24 ms of a step in its two sums that way). Wider rows are one pass of
/// `rest(0)`: their many independent vectors per row hide that wait, and
/// blocks would walk the rows once per block. Each channel's sum still adds
/// the rows in order: the same bits as core's loops.
macro_rules! channel_blocks {
    ($c:expr, |$lo:ident, $w:ident| $pass:expr, |$rlo:ident| $rest:expr) => {{
        let c: usize = $c;
        if c > 64 {
            let $rlo = 0;
            $rest;
        } else {
            // 64, 32 and 16 each at most once: c ≤ 64.
            let mut lo = 0;
            if c - lo >= 64 {
                let $lo = lo;
                const $w: usize = 64;
                $pass;
                lo += 64;
            }
            if c - lo >= 32 {
                let $lo = lo;
                const $w: usize = 32;
                $pass;
                lo += 32;
            }
            if c - lo >= 16 {
                let $lo = lo;
                const $w: usize = 16;
                $pass;
                lo += 16;
            }
            if lo < c {
                let $rlo = lo;
                $rest;
            }
        }
    }};
}

/// `W` values of `v` from `lo` as an array (a block of [`channel_blocks`]).
#[inline(always)]
fn block<const W: usize>(v: &[f32], lo: usize) -> [f32; W] {
    let mut a = [0.0; W];
    a.copy_from_slice(&v[lo..lo + W]);
    a
}

/// Argmax marker of an output whose window lies entirely in the padding:
/// it is 0 and passes no gradient.
pub const NO_ARG: u32 = u32::MAX;

/// In-bounds kernel offsets along one axis for output position `out`:
/// `(lo, hi, start)`, offset `lo` reading input `start` (as core's `Taps`;
/// also the export module's integer reference's, which checks core, not
/// this module).
pub(crate) fn taps(
    out: usize,
    stride: usize,
    pad: usize,
    len: usize,
    kernel: usize,
) -> (usize, usize, usize) {
    let base = out * stride;
    let lo = pad.saturating_sub(base).min(kernel);
    let hi = (len + pad).saturating_sub(base).min(kernel).max(lo);
    let start = if lo == hi { 0 } else { base + lo - pad };
    (lo, hi, start)
}

/// Whether [`maxpool_forward`] handles `p`: max pooling whose per-sample
/// input indices fit in a `u32` below [`NO_ARG`].
pub fn maxpool_supported(p: &Pool2d) -> bool {
    p.kind == PoolKind::Max
        && p.in_h
            .checked_mul(p.in_w)
            .and_then(|v| v.checked_mul(p.channels))
            .is_some_and(|v| v < NO_ARG as usize)
}

/// Output `(height, width)` of `p` (its geometry is validated at build).
fn out_hw(p: &Pool2d) -> (usize, usize) {
    p.window
        .output_hw(p.in_h, p.in_w)
        .expect("pool geometry validated when the network was built")
}

multiversion! {
/// Max-pool forward of whole samples: `x` `[m, H, W, C]`, `y`
/// `[m, OH, OW, C]`, `arg` like `y`: the index within its sample of the
/// input element each output took.
pub fn maxpool_forward(p: &Pool2d, x: &[f32], y: &mut [f32], arg: &mut [u32]) {
    let (oh_n, ow_n) = out_hw(p);
    let c = p.channels;
    let (h, w) = (p.in_h, p.in_w);
    let win = p.window;
    let in_sample = h * w * c;
    let out_sample = oh_n * ow_n * c;
    let samples = x
        .chunks_exact(in_sample)
        .zip(y.chunks_exact_mut(out_sample))
        .zip(arg.chunks_exact_mut(out_sample));
    for ((image, out), args) in samples {
        for oh in 0..oh_n {
            let (hlo, hhi, hs) = taps(oh, win.stride_h, win.padding.top, h, win.kernel_h);
            for ow in 0..ow_n {
                let (wlo, whi, ws) = taps(ow, win.stride_w, win.padding.left, w, win.kernel_w);
                let o = (oh * ow_n + ow) * c;
                let yp = &mut out[o..o + c];
                let ap = &mut args[o..o + c];
                if hlo == hhi || wlo == whi {
                    yp.fill(0.0);
                    ap.fill(NO_ARG);
                    continue;
                }
                // The window's inputs in scan order (kh, then kw).
                let taps = (hs..hs + (hhi - hlo))
                    .flat_map(|ih| (ws..ws + (whi - wlo)).map(move |iw| (ih * w + iw) * c));
                // Selects, not branches: they vectorise, and random data
                // would mispredict a branch often. Channels in blocks of
                // 16-64 held in registers (as BN's sums).
                channel_blocks!(
                    c,
                    |lo, W| {
                        let mut first = true;
                        let (mut v, mut a) = ([0.0f32; W], [0u32; W]);
                        for base in taps.clone() {
                            let xv = block::<W>(image, base + lo);
                            let at = (base + lo) as u32;
                            if first {
                                v = xv;
                                a = core::array::from_fn(|l| at + l as u32);
                                first = false;
                            } else {
                                for l in 0..W {
                                    let take = xv[l] > v[l];
                                    v[l] = if take { xv[l] } else { v[l] };
                                    a[l] = if take { at + l as u32 } else { a[l] };
                                }
                            }
                        }
                        yp[lo..lo + W].copy_from_slice(&v);
                        ap[lo..lo + W].copy_from_slice(&a);
                    },
                    |lo| {
                        let (yp, ap) = (&mut yp[lo..], &mut ap[lo..]);
                        let mut first = true;
                        for base in taps.clone() {
                            let base = base + lo;
                            let xp = &image[base..base + yp.len()];
                            if first {
                                yp.copy_from_slice(xp);
                                for (k, a) in ap.iter_mut().enumerate() {
                                    *a = (base + k) as u32;
                                }
                                first = false;
                            } else {
                                for (k, ((v, a), &xv)) in
                                    yp.iter_mut().zip(ap.iter_mut()).zip(xp).enumerate()
                                {
                                    let take = xv > *v;
                                    *v = if take { xv } else { *v };
                                    *a = if take { (base + k) as u32 } else { *a };
                                }
                            }
                        }
                    }
                );
            }
        }
    }
}
}

multiversion! {
/// Max-pool backward of whole samples: `dx` `[m, H, W, C]` (overwritten)
/// receives every `dy` `[m, OH, OW, C]` at the input its output was taken
/// from (`arg` of [`maxpool_forward`]).
pub fn maxpool_backward(p: &Pool2d, dy: &[f32], arg: &[u32], dx: &mut [f32]) {
    let in_sample = p.in_h * p.in_w * p.channels;
    let (oh_n, ow_n) = out_hw(p);
    let out_sample = oh_n * ow_n * p.channels;
    dx.fill(0.0);
    let samples = dx
        .chunks_exact_mut(in_sample)
        .zip(dy.chunks_exact(out_sample))
        .zip(arg.chunks_exact(out_sample));
    for ((dimage, grad), args) in samples {
        for (&a, &d) in args.iter().zip(grad) {
            if let Some(g) = dimage.get_mut(a as usize) {
                *g += d;
            }
        }
    }
}
}

multiversion! {
/// ReLU forward, core's `Activation::Relu.forward`: `y = max(x, 0)`.
pub fn relu_forward(x: &[f32], y: &mut [f32]) {
    for (o, &i) in y.iter_mut().zip(x) {
        *o = Activation::Relu.apply(i);
    }
}
}

multiversion! {
/// ReLU backward, core's `Activation::Relu.backward`: `dx = dy · [y > 0]`.
pub fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((g, &o), &d) in dx.iter_mut().zip(y).zip(dy) {
        *g = d * Activation::Relu.derivative_from_output(o);
    }
}
}

multiversion! {
/// Sigmoid forward, core's `Activation::Sigmoid.forward`: `y = σ(x)` by
/// core's branch-free [`normcore::math::sigmoid`].
pub fn sigmoid_forward(x: &[f32], y: &mut [f32]) {
    for (o, &i) in y.iter_mut().zip(x) {
        *o = normcore::math::sigmoid(i);
    }
}
}

multiversion! {
/// Sigmoid backward, core's `Activation::Sigmoid.backward`:
/// `dx = dy · y(1 - y)`.
pub fn sigmoid_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((g, &o), &d) in dx.iter_mut().zip(y).zip(dy) {
        *g = d * (o * (1.0 - o));
    }
}
}

multiversion! {
/// Whether every value is finite. Runs after every step over all the
/// parameters, so it is written to vectorise: per block, the largest
/// magnitude bit pattern (an integer max, no early exit inside a block)
/// against that of infinity; NaNs and infinities have the largest
/// patterns. (Baseline x86-64 has no unsigned 32-bit vector max; AVX2
/// does.)
pub fn all_finite(v: &[f32]) -> bool {
    all_finite_inline(v)
}
}

/// [`all_finite`]'s loop, inlined into its callers' vector builds.
#[inline(always)]
fn all_finite_inline(v: &[f32]) -> bool {
    const INF_BITS: u32 = 0x7f80_0000;
    v.chunks(1024).all(|block| {
        block
            .iter()
            .fold(0u32, |m, x| m.max(x.to_bits() & 0x7fff_ffff))
            < INF_BITS
    })
}

multiversion! {
/// Bytes to values, `out[k] = f32::from(bytes[k]) / divisor`: the one
/// definition of a data set's byte form (see `Dataset::from_bytes`).
/// A division, not a multiplication by `1/divisor`: `b / 255` correctly
/// rounded, as MNIST's readers have always stored it.
pub fn decode_bytes(bytes: &[u8], divisor: f32, out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(bytes) {
        *o = f32::from(b) / divisor;
    }
}
}

/// Asks the CPU to start loading the cache lines of `data` (into every
/// level, towards L1) without waiting for them: a hint with no effect on
/// results. The trainer calls it for the next mini-batch's samples while
/// the current one trains, so that gathering them later finds them in
/// cache instead of waiting on DRAM for each row.
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let bytes = std::mem::size_of_val(data);
        let base = data.as_ptr().cast::<i8>();
        for offset in (0..bytes).step_by(64) {
            // SAFETY: `prefetch` only needs SSE, part of every x86-64 CPU;
            // the address lies inside `data` (`offset < bytes`), and a
            // prefetch reads nothing into the program and never faults.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(base.add(offset));
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Elements per block of [`sgd_update`]: the parameters, gradients and
/// velocities of one block (3 × 16 KiB) stay in L1 between the update and
/// the check.
const SGD_BLOCK: usize = 4096;

multiversion! {
/// Core's [`Sgd::step`](normcore::Sgd::step) on `params` (same arguments,
/// same errors, same bits: it is core's loop, compiled here for the
/// widest vectors the CPU has), block by block, each block's updated
/// parameters checked with [`all_finite`] while they are in L1. Returns
/// whether every updated parameter is finite; on `Err` nothing was written.
/// The trainer checks its weights after every step; checking them here
/// saves a pass over all of them.
pub fn sgd_update(
    opt: &normcore::Sgd,
    params: &mut [f32],
    grads: &[f32],
    velocity: &mut [f32],
    weight_decay: Option<f32>,
) -> Result<bool, Error> {
    // The lengths and hyper-parameters are checked on the whole tensors
    // first, so that an error leaves every block untouched.
    // (Core's own checks, run on empty tensors, then the lengths.)
    opt.step(&mut [], &[], &mut [], weight_decay)?;
    let momentum = opt.momentum != 0.0;
    same_len(Operand::WeightGrad, params.len(), grads.len())?;
    if momentum {
        same_len(Operand::Velocity, params.len(), velocity.len())?;
    }
    let mut finite = true;
    for (k, (p, g)) in params
        .chunks_mut(SGD_BLOCK)
        .zip(grads.chunks(SGD_BLOCK))
        .enumerate()
    {
        let v = if momentum {
            &mut velocity[k * SGD_BLOCK..k * SGD_BLOCK + p.len()]
        } else {
            &mut []
        };
        opt.step(p, g, v, weight_decay)?;
        finite &= all_finite_inline(p);
    }
    Ok(finite)
}
}

/// Sizes of a convolution's lowering.
#[derive(Debug, Clone, Copy)]
struct ConvGeom {
    out_h: usize,
    out_w: usize,
    /// `KH·KW·Cin`.
    patch: usize,
    /// `OH·OW`.
    pixels: usize,
    /// `H·W·Cin`.
    in_sample: usize,
}

fn conv_geom(op: &Conv2d) -> ConvGeom {
    let (out_h, out_w) = op
        .window
        .output_hw(op.in_h, op.in_w)
        .expect("conv geometry validated when the network was built");
    ConvGeom {
        out_h,
        out_w,
        patch: op.window.kernel_h * op.window.kernel_w * op.in_c,
        pixels: out_h * out_w,
        in_sample: op.in_h * op.in_w * op.in_c,
    }
}

/// Floats of one part's lowering for batches of up to `samples`:
/// `min(samples, lowering_samples) · OH·OW·KH·KW·Cin`. [`conv_forward`]
/// and [`conv_backward`] need this much `cols` scratch, except for a
/// narrow convolution (none: see [`conv_lowering_len`]), and this much
/// `dcols` when an input gradient is wanted.
pub fn conv_scratch_len(op: &Conv2d, samples: usize) -> usize {
    let g = conv_geom(op);
    samples.min(lowering_samples(&g)) * g.pixels * g.patch
}

/// The `cols` scratch [`conv_forward`] and [`conv_backward`] need: 0 for
/// a [narrow](conv_is_narrow) convolution, else [`conv_scratch_len`].
pub fn conv_lowering_len(op: &Conv2d, samples: usize) -> usize {
    if conv_is_narrow(op) {
        0
    } else {
        conv_scratch_len(op, samples)
    }
}

/// Largest patch (`KH·KW·Cin`) of a [narrow](conv_is_narrow) convolution.
const NARROW_PATCH: usize = 32;

/// Whether [`conv_forward`] and [`conv_backward`] compute `op` directly
/// from its input rather than through the lowering: when its patch has at
/// most [`NARROW_PATCH`] values (a first layer: 5×5×1, 3×3×3). There the
/// lowering is 25 times the input, written and read back through memory,
/// and the products it feeds are too thin for the `gemm` crate's kernels
/// (16 rows): the `cnn` preset's first conv took 0.89 ms forward and 0.32
/// ms for its weight gradient per 1-thread step that way (`normcore bench`,
/// instrumented per layer), against the 14.7M multiply-adds' 0.15 ms at
/// this machine's AVX-512 peak.
pub fn conv_is_narrow(op: &Conv2d) -> bool {
    op.window.kernel_h * op.window.kernel_w * op.in_c <= NARROW_PATCH
}

/// Output lanes per accumulator of the narrow kernels (one AVX-512 vector).
const LANES: usize = 16;

/// Output pixels per block of the narrow kernels: 8 accumulators of
/// [`LANES`] lanes, 8 independent additions in flight.
const BLOCK: usize = 8;

/// `[KH·KW·Cin, Cpad]` from weights `[Cout, KH·KW·Cin]`: tap-major, output
/// channels padded with zeros to `Cpad`, a multiple of [`LANES`].
fn narrow_weights(w: &[f32], out_c: usize, patch: usize) -> (Vec<f32>, usize) {
    let cpad = out_c.div_ceil(LANES) * LANES;
    let mut wt = vec![0.0; patch * cpad];
    for (o, row) in w.chunks_exact(patch).enumerate() {
        for (p, &v) in row.iter().enumerate() {
            wt[p * cpad + o] = v;
        }
    }
    (wt, cpad)
}

/// The input pixels of output row `oh` and the output columns `ow0..` of a
/// block whose every tap is inside the input (no padding): `None` when
/// some tap of the first or last pixel is padding.
fn interior_block(op: &Conv2d, oh: usize, ow0: usize, len: usize) -> Option<(usize, usize)> {
    let win = op.window;
    let ih = (oh * win.stride_h).checked_sub(win.padding.top)?;
    let iw = (ow0 * win.stride_w).checked_sub(win.padding.left)?;
    let last = iw + (len - 1) * win.stride_w + win.kernel_w;
    (ih + win.kernel_h <= op.in_h && last <= op.in_w).then_some((ih, iw))
}

/// `acc + x·w`, lane by lane (straight-line code the compiler turns into
/// vector instructions).
#[inline(always)]
fn madd(acc: [f32; LANES], x: f32, w: &[f32; LANES]) -> [f32; LANES] {
    core::array::from_fn(|l| acc[l] + x * w[l])
}

/// `acc[j] += xs[j] · w` for a block of pixels, written out pixel by pixel
/// (a loop over the pixels is vectorised across them, with gathers).
#[inline(always)]
fn madd_block(acc: &mut [[f32; LANES]; BLOCK], xs: &[f32; BLOCK], w: &[f32; LANES]) {
    let [a0, a1, a2, a3, a4, a5, a6, a7] = acc;
    *a0 = madd(*a0, xs[0], w);
    *a1 = madd(*a1, xs[1], w);
    *a2 = madd(*a2, xs[2], w);
    *a3 = madd(*a3, xs[3], w);
    *a4 = madd(*a4, xs[4], w);
    *a5 = madd(*a5, xs[5], w);
    *a6 = madd(*a6, xs[6], w);
    *a7 = madd(*a7, xs[7], w);
}

/// `acc + Σ_j xs[j]·d[j]` lane by lane, the 8 products summed as a
/// balanced tree.
#[inline(always)]
fn dot_block(acc: [f32; LANES], xs: &[f32; BLOCK], d: &[[f32; LANES]; BLOCK]) -> [f32; LANES] {
    let t = |j: usize| -> [f32; LANES] { core::array::from_fn(|l| xs[j] * d[j][l]) };
    let add = |a: [f32; LANES], b: [f32; LANES]| -> [f32; LANES] {
        core::array::from_fn(|l| a[l] + b[l])
    };
    let sum = add(
        add(add(t(0), t(1)), add(t(2), t(3))),
        add(add(t(4), t(5)), add(t(6), t(7))),
    );
    add(acc, sum)
}

/// Input offset of every tap `(kh, kw, ci)` from a window's first input
/// value (no padding), in the weights' order.
fn tap_offsets(op: &Conv2d) -> Vec<usize> {
    let (c, win) = (op.in_c, op.window);
    let mut v = Vec::with_capacity(win.kernel_h * win.kernel_w * c);
    for kh in 0..win.kernel_h {
        for kw in 0..win.kernel_w {
            for ci in 0..c {
                v.push((kh * op.in_w + kw) * c + ci);
            }
        }
    }
    v
}

multiversion! {
/// Narrow convolution forward without a lowering: `y` `[m, OH, OW, Cout]`
/// (overwritten) from `x` `[m, H, W, Cin]` and `wt` from
/// [`narrow_weights`]. Each output is its taps' products summed in
/// `(kh, kw, ci)` order (the product's order, skipping padded taps, whose
/// lowered values are zeros), 8 pixels × 16 channels at a time.
fn narrow_forward(op: &Conv2d, g: &ConvGeom, x: &[f32], wt: &[f32], cpad: usize, y: &mut [f32]) {
    let (c, win, cout) = (op.in_c, op.window, op.out_c);
    let in_row = op.in_w * c;
    let step = win.stride_w * c;
    let offsets = tap_offsets(op);
    for (image, out) in x.chunks_exact(g.in_sample).zip(y.chunks_exact_mut(g.pixels * cout)) {
        for oh in 0..g.out_h {
            let mut ow = 0;
            while ow < g.out_w {
                let len = BLOCK.min(g.out_w - ow);
                if let Some((ih, iw)) = interior_block(op, oh, ow, BLOCK).filter(|_| len == BLOCK) {
                    let origin = ih * in_row + iw * c;
                    for grp in (0..cout).step_by(LANES) {
                        let mut acc = [[0.0f32; LANES]; BLOCK];
                        for (p, &off) in offsets.iter().enumerate() {
                            let wv: &[f32; LANES] = wt[p * cpad + grp..][..LANES]
                                .try_into()
                                .expect("cpad is a multiple of LANES");
                            let row = &image[origin + off..=origin + off + (BLOCK - 1) * step];
                            let xs: [f32; BLOCK] = core::array::from_fn(|j| row[j * step]);
                            madd_block(&mut acc, &xs, wv);
                        }
                        let n = LANES.min(cout - grp);
                        for (j, a) in acc.iter().enumerate() {
                            let o = (oh * g.out_w + ow + j) * cout + grp;
                            out[o..o + n].copy_from_slice(&a[..n]);
                        }
                    }
                    ow += BLOCK;
                    continue;
                }
                // One pixel, padded taps skipped.
                let (hlo, hhi, hs) = taps(oh, win.stride_h, win.padding.top, op.in_h, win.kernel_h);
                let (wlo, whi, ws) = taps(ow, win.stride_w, win.padding.left, op.in_w, win.kernel_w);
                for grp in (0..cout).step_by(LANES) {
                    let mut acc = [0.0f32; LANES];
                    for kh in hlo..hhi {
                        for kw in wlo..whi {
                            for ci in 0..c {
                                let p = (kh * win.kernel_w + kw) * c + ci;
                                let xv = image[(hs + kh - hlo) * in_row + (ws + kw - wlo) * c + ci];
                                for (s, &wl) in acc.iter_mut().zip(&wt[p * cpad + grp..][..LANES]) {
                                    *s += xv * wl;
                                }
                            }
                        }
                    }
                    let n = LANES.min(cout - grp);
                    let o = (oh * g.out_w + ow) * cout + grp;
                    out[o..o + n].copy_from_slice(&acc[..n]);
                }
                ow += 1;
            }
        }
    }
}
}

multiversion! {
/// Narrow convolution weight gradient without a lowering: `dwt`
/// `[KH·KW·Cin, Cpad]` (tap-major, overwritten) `= Σ x_tap · dy` over
/// every output pixel of `x` `[m, H, W, Cin]` and `dy` `[m, OH, OW, Cout]`.
/// Pixels are taken 8 at a time (their 8 products summed as a balanced
/// tree, then added to the running sum), single pixels at padded borders.
fn narrow_weight_grad(op: &Conv2d, g: &ConvGeom, x: &[f32], dy: &[f32], cpad: usize, dwt: &mut [f32]) {
    dwt.fill(0.0);
    let (c, win, cout) = (op.in_c, op.window, op.out_c);
    let in_row = op.in_w * c;
    let step = win.stride_w * c;
    let offsets = tap_offsets(op);
    let lanes = |d: &[f32], grp: usize| -> [f32; LANES] {
        let mut v = [0.0f32; LANES];
        let n = LANES.min(cout - grp);
        v[..n].copy_from_slice(&d[grp..grp + n]);
        v
    };
    for (image, grad) in x.chunks_exact(g.in_sample).zip(dy.chunks_exact(g.pixels * cout)) {
        for oh in 0..g.out_h {
            let mut ow = 0;
            while ow < g.out_w {
                let len = BLOCK.min(g.out_w - ow);
                if let Some((ih, iw)) = interior_block(op, oh, ow, BLOCK).filter(|_| len == BLOCK) {
                    for grp in (0..cout).step_by(LANES) {
                        let d: [[f32; LANES]; BLOCK] = core::array::from_fn(|j| {
                            lanes(&grad[(oh * g.out_w + ow + j) * cout..], grp)
                        });
                        let origin = ih * in_row + iw * c;
                        for (p, &off) in offsets.iter().enumerate() {
                            let row = &image[origin + off..=origin + off + (BLOCK - 1) * step];
                            let xs: [f32; BLOCK] = core::array::from_fn(|j| row[j * step]);
                            let acc: &mut [f32; LANES] = (&mut dwt[p * cpad + grp..][..LANES])
                                .try_into()
                                .expect("cpad is a multiple of LANES");
                            *acc = dot_block(*acc, &xs, &d);
                        }
                    }
                    ow += BLOCK;
                    continue;
                }
                let (hlo, hhi, hs) = taps(oh, win.stride_h, win.padding.top, op.in_h, win.kernel_h);
                let (wlo, whi, ws) = taps(ow, win.stride_w, win.padding.left, op.in_w, win.kernel_w);
                for grp in (0..cout).step_by(LANES) {
                    let d = lanes(&grad[(oh * g.out_w + ow) * cout..], grp);
                    for kh in hlo..hhi {
                        for kw in wlo..whi {
                            for ci in 0..c {
                                let p = (kh * win.kernel_w + kw) * c + ci;
                                let xv = image[(hs + kh - hlo) * in_row + (ws + kw - wlo) * c + ci];
                                for (a, &dl) in dwt[p * cpad + grp..][..LANES].iter_mut().zip(&d) {
                                    *a += xv * dl;
                                }
                            }
                        }
                    }
                }
                ow += 1;
            }
        }
    }
}
}

/// `dst = src` for short runs: 8- and 4-wide fixed-size moves and a scalar
/// tail (no `memcpy` call). Up to 256 values: the `cnn` preset's second
/// conv copies runs of 80 (5 × 16 channels), 20,480 per batch, where a
/// `memcpy` call each cost 0.96 ms per step against 0.73 ms inline
/// (1 thread, `perf`).
#[inline(always)]
fn copy_run(dst: &mut [f32], src: &[f32]) {
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    if n > 256 {
        dst.copy_from_slice(src);
        return;
    }
    let mut i = 0;
    while i + 8 <= n {
        let s: [f32; 8] = src[i..i + 8].try_into().expect("8 values");
        dst[i..i + 8].copy_from_slice(&s);
        i += 8;
    }
    if i + 4 <= n {
        let s: [f32; 4] = src[i..i + 4].try_into().expect("4 values");
        dst[i..i + 4].copy_from_slice(&s);
        i += 4;
    }
    while i < n {
        dst[i] = src[i];
        i += 1;
    }
}

multiversion! {
/// Core's im2col: row `(n·OH + oh)·OW + ow` of `cols` is the receptive
/// field of that output pixel in `(kh, kw, ci)` order, zeros at padded taps.
fn im2col(op: &Conv2d, g: &ConvGeom, x: &[f32], cols: &mut [f32]) {
    let c = op.in_c;
    let win = op.window;
    let run = win.kernel_w * c;
    let in_row = op.in_w * c;
    let mut rows = cols.chunks_exact_mut(g.patch);
    for image in x.chunks_exact(g.in_sample) {
        for oh in 0..g.out_h {
            let (hlo, hhi, hs) = taps(oh, win.stride_h, win.padding.top, op.in_h, win.kernel_h);
            for ow in 0..g.out_w {
                let (wlo, whi, ws) =
                    taps(ow, win.stride_w, win.padding.left, op.in_w, win.kernel_w);
                let Some(row) = rows.next() else { return };
                let (above, rest) = row.split_at_mut(hlo * run);
                let (inside, below) = rest.split_at_mut((hhi - hlo) * run);
                above.fill(0.0);
                below.fill(0.0);
                let src = hs * in_row + ws * c;
                for (seg, ih) in inside.chunks_exact_mut(run).zip(0..) {
                    let (left, rest) = seg.split_at_mut(wlo * c);
                    let (mid, right) = rest.split_at_mut((whi - wlo) * c);
                    left.fill(0.0);
                    right.fill(0.0);
                    let at = src + ih * in_row;
                    copy_run(mid, &image[at..at + mid.len()]);
                }
            }
        }
    }
}
}

multiversion! {
/// Core's col2im: `dx` (overwritten) is every row of `cols` scatter-added
/// back onto the inputs it was gathered from.
fn col2im(op: &Conv2d, g: &ConvGeom, cols: &[f32], dx: &mut [f32]) {
    dx.fill(0.0);
    let c = op.in_c;
    let win = op.window;
    let run = win.kernel_w * c;
    let in_row = op.in_w * c;
    let mut rows = cols.chunks_exact(g.patch);
    for image in dx.chunks_exact_mut(g.in_sample) {
        for oh in 0..g.out_h {
            let (hlo, hhi, hs) = taps(oh, win.stride_h, win.padding.top, op.in_h, win.kernel_h);
            for ow in 0..g.out_w {
                let (wlo, whi, ws) =
                    taps(ow, win.stride_w, win.padding.left, op.in_w, win.kernel_w);
                let Some(row) = rows.next() else { return };
                let inside = &row[hlo * run..hhi * run];
                let src = hs * in_row + ws * c;
                for (seg, ih) in inside.chunks_exact(run).zip(0..) {
                    let mid = &seg[wlo * c..whi * c];
                    let at = src + ih * in_row;
                    for (d, &v) in image[at..at + mid.len()].iter_mut().zip(mid) {
                        *d += v;
                    }
                }
            }
        }
    }
}
}

/// Convolution forward of `m` whole samples: `x` `[m, H, W, Cin]`, `w`
/// `[Cout, KH, KW, Cin]`, `y` `[m, OH, OW, Cout]` (overwritten). `cols`
/// (at least [`conv_lowering_len`]`(op, m)`) is scratch for the lowering,
/// built and multiplied one part of the batch at a time, so that it is
/// still in cache when the product reads it (a narrow convolution computes
/// from `x` directly). Callers check the shapes (the network builds the
/// views first); a mismatch, or scratch too short, is an `Err`.
pub fn conv_forward(
    op: &Conv2d,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    y: &mut [f32],
    cols: &mut [f32],
) -> Result<(), Error> {
    let g = conv_geom(op);
    let m = x.len() / g.in_sample;
    let rows = m * g.pixels;
    same_len(Operand::Input, m * g.in_sample, x.len())?;
    same_len(Operand::Output, rows * op.out_c, y.len())?;
    same_len(Operand::Weight, op.out_c * g.patch, w.len())?;
    if let Some(b) = b {
        same_len(Operand::Bias, op.out_c, b.len())?;
    }
    scratch_fits(conv_lowering_len(op, m), cols.len())?;
    if conv_is_narrow(op) {
        let (wt, cpad) = narrow_weights(w, op.out_c, g.patch);
        narrow_forward(op, &g, x, &wt, cpad, y);
    } else {
        let wt = MatRef::row_major(w, op.out_c, g.patch)?.t();
        let s = lowering_samples(&g);
        let parts = x
            .chunks(s * g.in_sample)
            .zip(y.chunks_mut(s * g.pixels * op.out_c));
        for (xs, ys) in parts {
            let rows = xs.len() / g.in_sample * g.pixels;
            let cols = &mut cols[..rows * g.patch];
            im2col(op, &g, xs, cols);
            FastGemm.gemm(
                MatRef::row_major(cols, rows, g.patch)?,
                wt,
                MatMut::row_major(ys, rows, op.out_c)?,
                false,
            )?;
        }
    }
    if let Some(b) = b {
        for pixel in y.chunks_exact_mut(op.out_c) {
            for (v, &bias) in pixel.iter_mut().zip(b) {
                *v += bias;
            }
        }
    }
    Ok(())
}

/// Whether [`conv_backward`] computes the weight gradient as `(colsᵀ·dy)ᵀ`
/// rather than `dyᵀ·cols`: when `Cout` is a multiple of 16 and the patch
/// is not. The product's output rows are vectorised 16 wide; the first
/// conv of the `cnn` preset (16 × 25) wastes 7 of every 32 lanes one way
/// and none the other: 1.09 ms against 0.75 ms per batch of 64 (the
/// `gemm` crate, this machine's 1 thread).
fn dw_transposed(out_c: usize, patch: usize) -> bool {
    out_c % 16 == 0 && patch % 16 != 0
}

/// Convolution backward of the `m` samples `x`: `dw` (and `db`, `dx` when
/// given) overwritten. `cols` (at least [`conv_lowering_len`]`(op, m)`)
/// and, when `dx` is wanted, `dcols` (at least [`conv_scratch_len`]`(op,
/// m)`) are scratch: the lowering is built again
/// here, one part at a time as in [`conv_forward`] (copying it again from
/// cache costs less than keeping the whole batch's and reading it back
/// from memory), and the weight gradient sums the parts' products in order.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward(
    op: &Conv2d,
    x: &[f32],
    cols: &mut [f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
    db: Option<&mut [f32]>,
    dcols: &mut [f32],
) -> Result<(), Error> {
    let g = conv_geom(op);
    let m = x.len() / g.in_sample;
    let rows = m * g.pixels;
    same_len(Operand::Input, m * g.in_sample, x.len())?;
    same_len(Operand::OutputGrad, rows * op.out_c, dy.len())?;
    same_len(Operand::Weight, op.out_c * g.patch, w.len())?;
    same_len(Operand::WeightGrad, op.out_c * g.patch, dw.len())?;
    if let Some(db) = &db {
        same_len(Operand::BiasGrad, op.out_c, db.len())?;
    }
    if let Some(dx) = &dx {
        same_len(Operand::InputGrad, x.len(), dx.len())?;
    }
    scratch_fits(conv_lowering_len(op, m), cols.len())?;
    if dx.is_some() {
        scratch_fits(conv_scratch_len(op, m), dcols.len())?;
    }
    if let Some(db) = db {
        db.fill(0.0);
        for pixel in dy.chunks_exact(op.out_c) {
            for (acc, &d) in db.iter_mut().zip(pixel) {
                *acc += d;
            }
        }
    }
    if rows == 0 {
        dw.fill(0.0);
        if let Some(dx) = dx {
            dx.fill(0.0);
        }
        return Ok(());
    }
    if conv_is_narrow(op) {
        let cpad = op.out_c.div_ceil(LANES) * LANES;
        let mut dwt = vec![0.0; g.patch * cpad];
        narrow_weight_grad(op, &g, x, dy, cpad, &mut dwt);
        from_tap_major(&dwt, cpad, dw, g.patch);
        if let Some(dx) = dx {
            let s = lowering_samples(&g);
            let parts = dy
                .chunks(s * g.pixels * op.out_c)
                .zip(dx.chunks_mut(s * g.in_sample));
            for (dys, dxs) in parts {
                conv_input_grad(op, &g, w, dys, dxs, dcols)?;
            }
        }
        return Ok(());
    }
    // Part by part, as in the forward pass: the lowering of each part is
    // made again here, where the products read it from cache.
    let transposed = dw_transposed(op.out_c, g.patch);
    let mut dwt = if transposed {
        vec![0.0; g.patch * op.out_c]
    } else {
        Vec::new()
    };
    let s = lowering_samples(&g);
    let mut dx = dx;
    let parts = x
        .chunks(s * g.in_sample)
        .zip(dy.chunks(s * g.pixels * op.out_c))
        .enumerate();
    for (k, (xs, dys)) in parts {
        let rows = xs.len() / g.in_sample * g.pixels;
        let cols = &mut cols[..rows * g.patch];
        im2col(op, &g, xs, cols);
        let colsm = MatRef::row_major(cols, rows, g.patch)?;
        let dym = MatRef::row_major(dys, rows, op.out_c)?;
        if transposed {
            // dwᵀ = colsᵀ·dy, then transposed into place.
            FastGemm.gemm(
                colsm.t(),
                dym,
                MatMut::row_major(&mut dwt, g.patch, op.out_c)?,
                k > 0,
            )?;
        } else {
            FastGemm.gemm(
                dym.t(),
                colsm,
                MatMut::row_major(dw, op.out_c, g.patch)?,
                k > 0,
            )?;
        }
        if let Some(dx) = dx.as_deref_mut() {
            let at = k * s * g.in_sample;
            conv_input_grad(op, &g, w, dys, &mut dx[at..at + xs.len()], dcols)?;
        }
    }
    if transposed {
        from_tap_major(&dwt, op.out_c, dw, g.patch);
    }
    Ok(())
}

/// `dw` `[Cout, patch]` (overwritten) from `dwt` `[patch, stride]`, its
/// tap-major transpose with rows of `stride ≥ Cout` values.
fn from_tap_major(dwt: &[f32], stride: usize, dw: &mut [f32], patch: usize) {
    for (o, row) in dw.chunks_exact_mut(patch).enumerate() {
        for (p, v) in row.iter_mut().enumerate() {
            *v = dwt[p * stride + o];
        }
    }
}

/// `dx` (overwritten) of the samples whose output gradient is `dy`:
/// `dcols = dy·w`, scattered back by col2im. `dcols` is scratch of at
/// least `rows · KH·KW·Cin`.
fn conv_input_grad(
    op: &Conv2d,
    g: &ConvGeom,
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dcols: &mut [f32],
) -> Result<(), Error> {
    let rows = dy.len() / op.out_c;
    let dcols = &mut dcols[..rows * g.patch];
    FastGemm.gemm(
        MatRef::row_major(dy, rows, op.out_c)?,
        MatRef::row_major(w, op.out_c, g.patch)?,
        MatMut::row_major(dcols, rows, g.patch)?,
        false,
    )?;
    col2im(op, g, dcols, dx);
    Ok(())
}

/// `Err` unless `actual == expected` (the length of `operand`).
pub(crate) fn same_len(operand: Operand, expected: usize, actual: usize) -> Result<(), Error> {
    if expected != actual {
        return Err(Error::LengthMismatch {
            operand,
            expected,
            actual,
        });
    }
    Ok(())
}

/// `Err` unless `len` floats of scratch are at least the `need`ed.
fn scratch_fits(need: usize, len: usize) -> Result<(), Error> {
    if len < need {
        return Err(Error::LengthMismatch {
            operand: Operand::Scratch,
            expected: need,
            actual: len,
        });
    }
    Ok(())
}

/// Bytes of lowering per part of a batch ([`lowering_samples`]): half of
/// a Zen 5 core's 1 MiB L2 (and of most others' 1–2 MiB), so that the
/// lowering and the product's packed blocks stay in cache between the
/// copy and the product.
const LOWERING_BYTES: usize = 512 << 10;

/// Samples per part of a batch whose lowering [`conv_forward`] and
/// [`conv_backward`] build and use one part at a time (at least 1).
fn lowering_samples(g: &ConvGeom) -> usize {
    (LOWERING_BYTES / 4 / (g.pixels * g.patch).max(1)).max(1)
}

multiversion! {
/// `p[ch] += x[row, ch]` over the rows of `x` in order.
fn bn_sum(x: &[f32], p: &mut [f32]) {
    let c = p.len();
    channel_blocks!(
        c,
        |lo, W| {
            let mut acc = block::<W>(p, lo);
            for row in x.chunks_exact(c) {
                let r = block::<W>(row, lo);
                for l in 0..W {
                    acc[l] += r[l];
                }
            }
            p[lo..lo + W].copy_from_slice(&acc);
        },
        |lo| {
            for row in x.chunks_exact(c) {
                for (s, &v) in p[lo..].iter_mut().zip(&row[lo..]) {
                    *s += v;
                }
            }
        }
    );
}
}

multiversion! {
/// `p[ch] += (x[row, ch] - mean[ch])²` over the rows of `x` in order.
fn bn_sq(x: &[f32], mean: &[f32], p: &mut [f32]) {
    let c = p.len();
    channel_blocks!(
        c,
        |lo, W| {
            let mut acc = block::<W>(p, lo);
            let mu = block::<W>(mean, lo);
            for row in x.chunks_exact(c) {
                let r = block::<W>(row, lo);
                for l in 0..W {
                    let d = r[l] - mu[l];
                    acc[l] += d * d;
                }
            }
            p[lo..lo + W].copy_from_slice(&acc);
        },
        |lo| {
            for row in x.chunks_exact(c) {
                for ((s, &v), &mu) in p[lo..].iter_mut().zip(&row[lo..]).zip(&mean[lo..]) {
                    let d = v - mu;
                    *s += d * d;
                }
            }
        }
    );
}
}

multiversion! {
/// `y = γ·(x - mean)·inv_std + β`, row by row.
fn bn_apply(x: &[f32], mean: &[f32], inv_std: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    // Zipped iterators, not indexing: no bounds checks, so the channel
    // loop vectorises.
    let c = mean.len();
    let stats = mean.iter().zip(inv_std).zip(gamma.iter().zip(beta));
    for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for ((o, &v), ((&mu, &is), (&g, &b))) in yr.iter_mut().zip(xr).zip(stats.clone()) {
            let xhat = (v - mu) * is;
            *o = g * xhat + b;
        }
    }
}
}

multiversion! {
/// [`bn_apply`] then core's ReLU, in one pass: `y = max(γ·x̂ + β, 0)`.
fn bn_apply_relu(x: &[f32], mean: &[f32], inv_std: &[f32], gamma: &[f32], beta: &[f32], y: &mut [f32]) {
    let c = mean.len();
    let stats = mean.iter().zip(inv_std).zip(gamma.iter().zip(beta));
    for (yr, xr) in y.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        for ((o, &v), ((&mu, &is), (&g, &b))) in yr.iter_mut().zip(xr).zip(stats.clone()) {
            let xhat = (v - mu) * is;
            *o = Activation::Relu.apply(g * xhat + b);
        }
    }
}
}

multiversion! {
/// [`bn_grad_sums`] of the gradient behind a ReLU: `dy` is the ReLU's
/// output gradient and `y` its output, BN's gradient `dy·[y > 0]` (core's
/// ReLU backward, the same value) formed on the fly.
fn bn_grad_sums_relu(x: &[f32], y: &[f32], dy: &[f32], mean: &[f32], inv_std: &[f32], db: &mut [f32], dg: &mut [f32]) {
    let c = mean.len();
    let rows = || x.chunks_exact(c).zip(y.chunks_exact(c)).zip(dy.chunks_exact(c));
    channel_blocks!(
        c,
        |lo, W| {
            let (mut sb, mut sg) = (block::<W>(db, lo), block::<W>(dg, lo));
            let (mu, is) = (block::<W>(mean, lo), block::<W>(inv_std, lo));
            for ((xr, yr), dr) in rows() {
                let (v, o, d) = (block::<W>(xr, lo), block::<W>(yr, lo), block::<W>(dr, lo));
                for l in 0..W {
                    let d = d[l] * Activation::Relu.derivative_from_output(o[l]);
                    let xhat = (v[l] - mu[l]) * is[l];
                    sb[l] += d;
                    sg[l] += d * xhat;
                }
            }
            db[lo..lo + W].copy_from_slice(&sb);
            dg[lo..lo + W].copy_from_slice(&sg);
        },
        |lo| {
            for ((xr, yr), dr) in rows() {
                let acc = db[lo..].iter_mut().zip(dg[lo..].iter_mut());
                let vals = xr[lo..].iter().zip(yr[lo..].iter().zip(&dr[lo..]));
                let stats = mean[lo..].iter().zip(&inv_std[lo..]);
                for (((b, g), (&v, (&o, &d))), (&mu, &is)) in acc.zip(vals).zip(stats) {
                    let d = d * Activation::Relu.derivative_from_output(o);
                    let xhat = (v - mu) * is;
                    *b += d;
                    *g += d * xhat;
                }
            }
        }
    );
}
}

multiversion! {
/// [`bn_grad_input`] of the gradient behind a ReLU (as [`bn_grad_sums_relu`]).
fn bn_grad_input_relu(x: &[f32], y: &[f32], dy: &[f32], stats: [&[f32]; 5], inv_m: f32, dx: &mut [f32]) {
    let [mean, inv_std, gamma, dgamma, dbeta] = stats;
    let c = mean.len();
    let rows = dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(y.chunks_exact(c).zip(dy.chunks_exact(c)));
    let stats = mean.iter().zip(inv_std).zip(gamma).zip(dgamma.iter().zip(dbeta));
    for ((gr, xr), (yr, dr)) in rows {
        let vals = xr.iter().zip(yr.iter().zip(dr));
        for ((o, (&v, (&out, &d))), (((&mu, &is), &ga), (&dga, &dbe))) in
            gr.iter_mut().zip(vals).zip(stats.clone())
        {
            let d = d * Activation::Relu.derivative_from_output(out);
            let xhat = (v - mu) * is;
            *o = ga * is * (d - dbe * inv_m - xhat * dga * inv_m);
        }
    }
}
}

multiversion! {
/// `db += dy`, `dg += dy·x̂` over the rows in order.
fn bn_grad_sums(x: &[f32], dy: &[f32], mean: &[f32], inv_std: &[f32], db: &mut [f32], dg: &mut [f32]) {
    let c = mean.len();
    let rows = || x.chunks_exact(c).zip(dy.chunks_exact(c));
    channel_blocks!(
        c,
        |lo, W| {
            let (mut sb, mut sg) = (block::<W>(db, lo), block::<W>(dg, lo));
            let (mu, is) = (block::<W>(mean, lo), block::<W>(inv_std, lo));
            for (xr, dr) in rows() {
                let (v, d) = (block::<W>(xr, lo), block::<W>(dr, lo));
                for l in 0..W {
                    let xhat = (v[l] - mu[l]) * is[l];
                    sb[l] += d[l];
                    sg[l] += d[l] * xhat;
                }
            }
            db[lo..lo + W].copy_from_slice(&sb);
            dg[lo..lo + W].copy_from_slice(&sg);
        },
        |lo| {
            for (xr, dr) in rows() {
                let acc = db[lo..].iter_mut().zip(dg[lo..].iter_mut());
                let vals = xr[lo..].iter().zip(&dr[lo..]);
                let stats = mean[lo..].iter().zip(&inv_std[lo..]);
                for (((b, g), (&v, &d)), (&mu, &is)) in acc.zip(vals).zip(stats) {
                    let xhat = (v - mu) * is;
                    *b += d;
                    *g += d * xhat;
                }
            }
        }
    );
}
}

multiversion! {
/// BN's input gradient given the summed `dgamma`, `dbeta` (`stats`: mean,
/// inv_std, γ, dγ, dβ; `inv_m = 1/m`).
fn bn_grad_input(x: &[f32], dy: &[f32], stats: [&[f32]; 5], inv_m: f32, dx: &mut [f32]) {
    let [mean, inv_std, gamma, dgamma, dbeta] = stats;
    let c = mean.len();
    let rows = dx.chunks_exact_mut(c).zip(x.chunks_exact(c)).zip(dy.chunks_exact(c));
    let stats = mean.iter().zip(inv_std).zip(gamma).zip(dgamma.iter().zip(dbeta));
    for ((gr, xr), dr) in rows {
        for ((o, (&v, &d)), (((&mu, &is), &ga), (&dga, &dbe))) in
            gr.iter_mut().zip(xr.iter().zip(dr)).zip(stats.clone())
        {
            let xhat = (v - mu) * is;
            *o = ga * is * (d - dbe * inv_m - xhat * dga * inv_m);
        }
    }
}
}

/// The rows (samples) each of `t` threads takes of `n` samples: contiguous
/// ranges, as `network::chunks_mut` splits the activations.
pub fn split(n: usize, t: usize) -> Vec<Range<usize>> {
    (0..t)
        .map(|i| i * n / t..(i + 1) * n / t)
        .filter(|r| !r.is_empty())
        .collect()
}

/// Per-thread state for [`bn_forward_train`] and [`bn_backward`]: a buffer
/// of at least `2·C` values for the partial sums.
pub trait Partial: Send {
    /// The partial-sum buffer.
    fn partial(&mut self) -> &mut [f32];
}

/// Run `f(range, out)` for every sample range, on the pool when there is
/// one (one range per thread), each `out` a distinct slice of `data` of
/// `per` values per sample.
fn for_ranges(
    pool: Option<&rayon::ThreadPool>,
    ranges: &[Range<usize>],
    data: &mut [f32],
    per: usize,
    f: impl Fn(Range<usize>, &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    let mut outs = Vec::with_capacity(ranges.len());
    let mut rest = &mut data[ranges.first().map_or(0, |r| r.start) * per..];
    for r in ranges {
        let (head, tail) = rest.split_at_mut(r.len() * per);
        outs.push((r.clone(), head));
        rest = tail;
    }
    match pool {
        Some(pool) => {
            pool.install(|| outs.into_par_iter().for_each(|(r, o)| f(r, o)));
        }
        None => outs.into_iter().for_each(|(r, o)| f(r, o)),
    }
}

/// Run `f(range, partial)` for every sample range (on the pool when there
/// is one), each into its thread's zeroed partial-sum buffer of `len`
/// values, then `out` = the partials added in range order (the first one
/// copied: with a single range, `out` is exactly that range's sum).
fn reduce<B: Partial>(
    pool: Option<&rayon::ThreadPool>,
    ranges: &[Range<usize>],
    bufs: &mut [B],
    len: usize,
    out: &mut [f32],
    f: impl Fn(Range<usize>, &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    let run = |(r, b): (&Range<usize>, &mut B)| {
        let p = &mut b.partial()[..len];
        p.fill(0.0);
        f(r.clone(), p);
    };
    match pool {
        Some(pool) => pool.install(|| ranges.par_iter().zip(bufs.par_iter_mut()).for_each(run)),
        None => ranges.iter().zip(bufs.iter_mut()).for_each(run),
    }
    let out = &mut out[..len];
    for (k, b) in bufs.iter_mut().take(ranges.len()).enumerate() {
        let p = &b.partial()[..len];
        if k == 0 {
            out.copy_from_slice(p);
        } else {
            for (o, &v) in out.iter_mut().zip(p) {
                *o += v;
            }
        }
    }
}

/// BN training forward over `per` values per sample (`H·W·C`), `c`
/// channels, the samples split in `ranges` (one per thread, on `pool`).
/// Core's `BatchNorm::forward_train` with the sums reassociated (a partial
/// per range, added in range order; with one range, exactly core's sums
/// and results). Writes `y`, the saved `mean` and `inv_std`, and updates
/// `running` `(mean, var, momentum)`. Needs `N·H·W >= 2`. With `relu`,
/// `y` is the output of the ReLU that follows instead (core's ReLU of
/// BN's output, the same bits, without writing and reading BN's output).
pub fn bn_forward_train<B: Partial>(
    pool: Option<&rayon::ThreadPool>,
    ranges: &[Range<usize>],
    bufs: &mut [B],
    (per, c): (usize, usize),
    x: &[f32],
    (gamma, beta): (&[f32], &[f32]),
    y: &mut [f32],
    (mean, inv_std): (&mut [f32], &mut [f32]),
    running: Option<(&mut [f32], &mut [f32], f32)>,
    eps: f32,
    relu: bool,
) {
    let n = ranges.last().map_or(0, |r| r.end);
    let m = (n * per / c) as f32;
    reduce(pool, ranges, bufs, c, mean, |r, p| {
        bn_sum(&x[r.start * per..r.end * per], p)
    });
    for s in mean.iter_mut() {
        *s /= m;
    }
    let mu: &[f32] = mean;
    reduce(pool, ranges, bufs, c, inv_std, |r, p| {
        bn_sq(&x[r.start * per..r.end * per], mu, p)
    });
    for s in inv_std.iter_mut() {
        *s /= m;
    }
    if let Some((rm, rv, a)) = running {
        let unbias = m / (m - 1.0);
        for ch in 0..c {
            rm[ch] = (1.0 - a) * rm[ch] + a * mean[ch];
            rv[ch] = (1.0 - a) * rv[ch] + a * unbias * inv_std[ch];
        }
    }
    for s in inv_std.iter_mut() {
        // Correctly rounded, as core's `libm::sqrtf`.
        *s = 1.0 / (*s + eps).sqrt();
    }
    let (mean, inv_std): (&[f32], &[f32]) = (mean, inv_std);
    for_ranges(pool, ranges, y, per, |r, yc| {
        let xc = &x[r.start * per..r.end * per];
        if relu {
            bn_apply_relu(xc, mean, inv_std, gamma, beta, yc)
        } else {
            bn_apply(xc, mean, inv_std, gamma, beta, yc)
        }
    });
}

/// BN backward, the samples split as in [`bn_forward_train`]: core's
/// `BatchNorm::backward` with the sums reassociated the same way. Writes
/// `dx`, `dgamma` and `dbeta`. With `relu_y` (the output of a ReLU that
/// follows, fused by [`bn_forward_train`]), `dy` is that ReLU's output
/// gradient and BN's is `dy·[y > 0]`, formed where it is read (core's ReLU
/// backward, the same bits, without a pass of its own).
pub fn bn_backward<B: Partial>(
    pool: Option<&rayon::ThreadPool>,
    ranges: &[Range<usize>],
    bufs: &mut [B],
    (per, c): (usize, usize),
    x: &[f32],
    gamma: &[f32],
    (mean, inv_std): (&[f32], &[f32]),
    dy: &[f32],
    relu_y: Option<&[f32]>,
    dx: &mut [f32],
    (dgamma, dbeta): (&mut [f32], &mut [f32]),
) {
    let n = ranges.last().map_or(0, |r| r.end);
    let mut sums = [0.0f32; 2 * MAX_STACK_CHANNELS];
    let mut heap = Vec::new();
    let sums: &mut [f32] = if 2 * c <= sums.len() {
        &mut sums[..2 * c]
    } else {
        heap.resize(2 * c, 0.0);
        &mut heap
    };
    reduce(pool, ranges, bufs, 2 * c, sums, |r, p| {
        let (db, dg) = p.split_at_mut(c);
        let span = r.start * per..r.end * per;
        match relu_y {
            Some(y) => bn_grad_sums_relu(
                &x[span.clone()],
                &y[span.clone()],
                &dy[span],
                mean,
                inv_std,
                db,
                dg,
            ),
            None => bn_grad_sums(&x[span.clone()], &dy[span], mean, inv_std, db, dg),
        }
    });
    dbeta.copy_from_slice(&sums[..c]);
    dgamma.copy_from_slice(&sums[c..]);
    let stats = [mean, inv_std, gamma, &*dgamma, &*dbeta];
    let inv_m = 1.0 / (n * per / c) as f32;
    for_ranges(pool, ranges, dx, per, |r, dxc| {
        let span = r.start * per..r.end * per;
        match relu_y {
            Some(y) => bn_grad_input_relu(
                &x[span.clone()],
                &y[span.clone()],
                &dy[span],
                stats,
                inv_m,
                dxc,
            ),
            None => bn_grad_input(&x[span.clone()], &dy[span], stats, inv_m, dxc),
        }
    });
}

/// Channels whose BN gradient sums fit on the stack.
const MAX_STACK_CHANNELS: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;
    use normcore::layers::{Padding, Window};
    use normcore::{Rng, Shape, View, ViewMut};

    /// Bit-for-bit agreement with core's max pooling, forward and backward,
    /// over overlapping, strided and padded windows, ties and NaNs.
    #[test]
    fn maxpool_matches_core_bit_for_bit() {
        let mut rng = Rng::new(3);
        let windows = [
            Window::square(2, 2, 0),
            Window::square(3, 1, 1),
            Window::square(3, 2, 0),
            Window {
                kernel_h: 2,
                kernel_w: 3,
                stride_h: 1,
                stride_w: 2,
                padding: Padding {
                    top: 1,
                    bottom: 0,
                    left: 2,
                    right: 1,
                },
            },
            // A window can lie entirely in the padding.
            Window {
                kernel_h: 1,
                kernel_w: 1,
                stride_h: 1,
                stride_w: 1,
                padding: Padding::symmetric(1, 0),
            },
        ];
        for (wi, win) in windows.into_iter().enumerate() {
            for &(h, w, c, n) in &[
                (6, 7, 3, 2),
                (5, 5, 1, 3),
                (4, 6, 33, 1),
                (4, 5, 16, 2),
                (3, 4, 116, 1),
            ] {
                let p = Pool2d::new(PoolKind::Max, h, w, c, win).unwrap();
                assert!(maxpool_supported(&p));
                let ys = p.output_shape(n).unwrap();
                let xs = Shape::nhwc(n, h, w, c);
                // Few distinct values: many ties. Some NaNs and infinities.
                let x: Vec<f32> = (0..xs.len().unwrap())
                    .map(|i| match i % 17 {
                        5 if wi % 2 == 0 => f32::NAN,
                        9 => f32::NEG_INFINITY,
                        _ => (rng.below(5) as f32) - 2.0,
                    })
                    .collect();
                let dy: Vec<f32> = (0..ys.len().unwrap())
                    .map(|_| rng.uniform(-1.0, 1.0))
                    .collect();
                let mut y_core = vec![7.0; ys.len().unwrap()];
                p.forward(
                    View::new(xs, &x).unwrap(),
                    ViewMut::new(ys, &mut y_core).unwrap(),
                )
                .unwrap();
                let (mut y, mut arg) =
                    (vec![7.0; ys.len().unwrap()], vec![0u32; ys.len().unwrap()]);
                maxpool_forward(&p, &x, &mut y, &mut arg);
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y), bits(&y_core), "forward, window {wi}");
                let mut dx_core = vec![7.0; xs.len().unwrap()];
                p.backward(
                    View::new(xs, &x).unwrap(),
                    View::new(ys, &dy).unwrap(),
                    ViewMut::new(xs, &mut dx_core).unwrap(),
                )
                .unwrap();
                let mut dx = vec![7.0; xs.len().unwrap()];
                maxpool_backward(&p, &dy, &arg, &mut dx);
                assert_eq!(bits(&dx), bits(&dx_core), "backward, window {wi}");
            }
        }
    }

    /// A narrow convolution `(H, W, Cin, Cout, window, samples)` with
    /// 8-pixel blocks between padded borders, a stride and a partial
    /// channel group.
    const NARROW_PADDED: (usize, usize, usize, usize, Window, usize) = (
        10,
        19,
        2,
        20,
        Window {
            kernel_h: 3,
            kernel_w: 3,
            stride_h: 1,
            stride_w: 2,
            padding: Padding {
                top: 1,
                bottom: 1,
                left: 1,
                right: 1,
            },
        },
        2,
    );

    /// Bit-for-bit agreement with core's convolution (given scratch for the
    /// whole batch, so that core also runs one product), forward and
    /// backward, over padded, strided and pointwise geometries.
    #[test]
    fn conv_matches_core() {
        let mut rng = Rng::new(5);
        let cases = [
            (28, 28, 1, 16, Window::square(5, 1, 0), 3),
            (12, 12, 16, 32, Window::square(5, 1, 0), 2),
            // One sample's lowering fills a part: three parts.
            (40, 40, 16, 8, Window::square(3, 1, 0), 3),
            (7, 6, 3, 5, Window::square(3, 2, 1), 2),
            (5, 5, 4, 6, Window::square(1, 1, 0), 3),
            NARROW_PADDED,
            (
                6,
                5,
                2,
                3,
                Window {
                    kernel_h: 2,
                    kernel_w: 3,
                    stride_h: 1,
                    stride_w: 2,
                    padding: Padding {
                        top: 1,
                        bottom: 0,
                        left: 2,
                        right: 1,
                    },
                },
                2,
            ),
        ];
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (ci, &(h, w, cin, cout, win, n)) in cases.iter().enumerate() {
            let op = Conv2d::new(h, w, cin, cout, win).unwrap();
            let xs = op.input_shape(n);
            let ys = op.output_shape(n).unwrap();
            let mut vec =
                |len: usize| -> Vec<f32> { (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect() };
            let x = vec(xs.len().unwrap());
            let wt = vec(op.weight_len().unwrap());
            let b = vec(cout);
            let dy = vec(ys.len().unwrap());
            let mut scratch = vec![0.0; op.forward_scratch_len(n).unwrap().max(1)];
            let mut y_core = vec![0.0; ys.len().unwrap()];
            op.forward(
                &FastGemm,
                View::new(xs, &x).unwrap(),
                &wt,
                Some(&b),
                ViewMut::new(ys, &mut y_core).unwrap(),
                &mut scratch,
            )
            .unwrap();
            let mut cols = vec![0.0; conv_lowering_len(&op, n)];
            // Scratch too short, or any operand of the wrong length: an
            // error, nothing written.
            let mut y = vec![7.0; ys.len().unwrap()];
            if !cols.is_empty() {
                let short = conv_forward(&op, &x, &wt, None, &mut y, &mut cols[1..]);
                assert!(short.is_err() && y.iter().all(|&v| v == 7.0));
            }
            let bad_forward = [
                conv_forward(&op, &x[1..], &wt, None, &mut y, &mut cols),
                conv_forward(&op, &x, &wt[1..], None, &mut y, &mut cols),
                conv_forward(&op, &x, &wt, Some(&b[1..]), &mut y, &mut cols),
                conv_forward(&op, &x, &wt, None, &mut y[1..], &mut cols),
            ];
            for e in bad_forward {
                assert!(matches!(e, Err(Error::LengthMismatch { .. })), "{e:?}");
            }
            assert!(y.iter().all(|&v| v == 7.0));
            {
                let (mut dx, mut dw, mut db) =
                    (vec![7.0; x.len()], vec![7.0; wt.len()], vec![7.0; cout]);
                let mut dcols = vec![0.0; conv_scratch_len(&op, n)];
                let mut bwd = |dy: &[f32], dx_len: usize, dw_len: usize, db_len: usize| {
                    conv_backward(
                        &op,
                        &x,
                        &mut cols,
                        &wt,
                        dy,
                        Some(&mut dx[..dx_len]),
                        &mut dw[..dw_len],
                        Some(&mut db[..db_len]),
                        &mut dcols,
                    )
                };
                let (xl, wl) = (x.len(), wt.len());
                for e in [
                    bwd(&dy[1..], xl, wl, cout),
                    bwd(&dy, xl - 1, wl, cout),
                    bwd(&dy, xl, wl - 1, cout),
                    bwd(&dy, xl, wl, cout - 1),
                ] {
                    assert!(matches!(e, Err(Error::LengthMismatch { .. })), "{e:?}");
                }
                assert!(dx.iter().chain(&dw).chain(&db).all(|&v| v == 7.0));
            }
            let mut y = vec![0.0; ys.len().unwrap()];
            conv_forward(&op, &x, &wt, Some(&b), &mut y, &mut cols).unwrap();
            let narrow = conv_is_narrow(&op);
            // Sums in another order (the narrow kernels): close, not equal.
            let close = |a: &[f32], b: &[f32], what: &str| {
                for (x, y) in a.iter().zip(b) {
                    assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{what}, case {ci}");
                }
            };
            if narrow {
                close(&y, &y_core, "forward");
            } else {
                assert_eq!(bits(&y), bits(&y_core), "forward, case {ci}");
            }
            let (mut dx_core, mut dw_core, mut db_core) =
                (vec![0.0; x.len()], vec![0.0; wt.len()], vec![0.0; cout]);
            op.backward(
                &FastGemm,
                View::new(xs, &x).unwrap(),
                &wt,
                View::new(ys, &dy).unwrap(),
                Some(ViewMut::new(xs, &mut dx_core).unwrap()),
                &mut dw_core,
                Some(&mut db_core),
                &mut scratch,
            )
            .unwrap();
            let (mut dx, mut dw, mut db) =
                (vec![9.0; x.len()], vec![9.0; wt.len()], vec![9.0; cout]);
            let mut dcols = vec![0.0; conv_scratch_len(&op, n)];
            conv_backward(
                &op,
                &x,
                &mut cols,
                &wt,
                &dy,
                Some(&mut dx),
                &mut dw,
                Some(&mut db),
                &mut dcols,
            )
            .unwrap();
            assert_eq!(bits(&dx), bits(&dx_core), "dx, case {ci}");
            let parts = n.div_ceil(lowering_samples(&conv_geom(&op)));
            if narrow
                || parts > 1
                || dw_transposed(cout, op.window.kernel_h * op.window.kernel_w * cin)
            {
                // The other product (summed in another order): close, not equal.
                close(&dw, &dw_core, "dw");
            } else {
                assert_eq!(bits(&dw), bits(&dw_core), "dw, case {ci}");
            }
            assert_eq!(bits(&db), bits(&db_core), "db, case {ci}");
        }
    }

    /// The narrow kernels against scalar references that sum in their
    /// documented order: an output, its in-bounds taps in `(kh, kw, ci)`
    /// order from 0; a weight gradient, 8-pixel blocks between the padded
    /// borders as a balanced tree added to the running sum, other pixels
    /// one by one. Bit for bit, in the build `simd` picked (`cargo xtask
    /// test` runs this under every build, so the builds agree).
    #[test]
    fn narrow_kernels_sum_in_their_documented_order() {
        let mut rng = Rng::new(17);
        let cases = [
            (28, 28, 1, 16, Window::square(5, 1, 0), 2),
            (7, 6, 3, 5, Window::square(3, 2, 1), 2),
            NARROW_PADDED,
        ];
        for (h, w, cin, cout, win, n) in cases {
            let op = Conv2d::new(h, w, cin, cout, win).unwrap();
            assert!(conv_is_narrow(&op));
            let g = conv_geom(&op);
            let x: Vec<f32> = (0..n * g.in_sample)
                .map(|_| rng.uniform(-1.0, 1.0))
                .collect();
            let wt: Vec<f32> = (0..cout * g.patch)
                .map(|_| rng.uniform(-1.0, 1.0))
                .collect();
            let dy: Vec<f32> = (0..n * g.pixels * cout)
                .map(|_| rng.uniform(-1.0, 1.0))
                .collect();
            // The in-bounds taps of one output pixel: (tap index, input offset).
            let taps_of = |oh: usize, ow: usize| -> Vec<(usize, usize)> {
                let mut v = Vec::new();
                for kh in 0..win.kernel_h {
                    for kw in 0..win.kernel_w {
                        let ih = (oh * win.stride_h + kh).checked_sub(win.padding.top);
                        let iw = (ow * win.stride_w + kw).checked_sub(win.padding.left);
                        if let (Some(ih), Some(iw)) = (ih, iw) {
                            if ih < h && iw < w {
                                for ci in 0..cin {
                                    v.push((
                                        (kh * win.kernel_w + kw) * cin + ci,
                                        (ih * w + iw) * cin + ci,
                                    ));
                                }
                            }
                        }
                    }
                }
                v
            };
            let mut y_ref = vec![0.0f32; dy.len()];
            let mut dw_ref = vec![0.0f32; wt.len()];
            for s in 0..n {
                let (xs, base) = (&x[s * g.in_sample..], s * g.pixels);
                for oh in 0..g.out_h {
                    for ow in 0..g.out_w {
                        for o in 0..cout {
                            let mut acc = 0.0f32;
                            for (p, at) in taps_of(oh, ow) {
                                acc += xs[at] * wt[o * g.patch + p];
                            }
                            y_ref[(base + oh * g.out_w + ow) * cout + o] = acc;
                        }
                    }
                    let mut ow = 0;
                    while ow < g.out_w {
                        let block =
                            ow + BLOCK <= g.out_w && interior_block(&op, oh, ow, BLOCK).is_some();
                        if block {
                            let taps: Vec<Vec<(usize, usize)>> =
                                (0..BLOCK).map(|j| taps_of(oh, ow + j)).collect();
                            for (k, &(p, _)) in taps[0].iter().enumerate() {
                                for o in 0..cout {
                                    let t = |j: usize| {
                                        xs[taps[j][k].1]
                                            * dy[(base + oh * g.out_w + ow + j) * cout + o]
                                    };
                                    let sum = ((t(0) + t(1)) + (t(2) + t(3)))
                                        + ((t(4) + t(5)) + (t(6) + t(7)));
                                    dw_ref[o * g.patch + p] += sum;
                                }
                            }
                            ow += BLOCK;
                        } else {
                            for (p, at) in taps_of(oh, ow) {
                                for o in 0..cout {
                                    dw_ref[o * g.patch + p] +=
                                        xs[at] * dy[(base + oh * g.out_w + ow) * cout + o];
                                }
                            }
                            ow += 1;
                        }
                    }
                }
            }
            let mut y = vec![7.0; dy.len()];
            conv_forward(&op, &x, &wt, None, &mut y, &mut []).unwrap();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&y), bits(&y_ref), "forward {h}x{w}x{cin}->{cout}");
            let mut dw = vec![7.0; wt.len()];
            conv_backward(&op, &x, &mut [], &wt, &dy, None, &mut dw, None, &mut []).unwrap();
            assert_eq!(bits(&dw), bits(&dw_ref), "dw {h}x{w}x{cin}->{cout}");
        }
    }

    struct Buf(Vec<f32>);
    impl Partial for Buf {
        fn partial(&mut self) -> &mut [f32] {
            &mut self.0
        }
    }

    /// On one range, the host's BN is core's, bit for bit, forward and
    /// backward, for channel counts that take every block width of
    /// `channel_blocks` and its scalar rest.
    #[test]
    fn bn_on_one_thread_matches_core_bit_for_bit() {
        use normcore::batchnorm::{BatchNorm, BatchNormConfig, RunningStats, SavedStats};
        let mut rng = Rng::new(21);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for &c in &[1usize, 3, 16, 37, 80, 116] {
            let (n, per) = (6, 5 * c);
            let len = n * per;
            let mut vec =
                |k: usize| -> Vec<f32> { (0..k).map(|_| rng.uniform(-2.0, 3.0)).collect() };
            let (x, gamma, beta, dy) = (vec(len), vec(c), vec(c), vec(len));
            let cfg = BatchNormConfig::default();
            let bn = BatchNorm::new(c, cfg).unwrap();
            let shape = Shape::nhwc(n, 1, 5, c);
            let (mut y_core, mut mean_core, mut is_core) =
                (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            let (mut rm_core, mut rv_core) = (vec![0.0; c], vec![1.0; c]);
            bn.forward_train(
                View::new(shape, &x).unwrap(),
                &gamma,
                &beta,
                ViewMut::new(shape, &mut y_core).unwrap(),
                SavedStats {
                    mean: &mut mean_core,
                    inv_std: &mut is_core,
                },
                Some(RunningStats {
                    mean: &mut rm_core,
                    var: &mut rv_core,
                }),
            )
            .unwrap();
            let mut bufs = vec![Buf(vec![0.0; 2 * c])];
            let (mut y, mut mean, mut inv_std) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
            bn_forward_train(
                None,
                &split(n, 1),
                &mut bufs,
                (per, c),
                &x,
                (&gamma, &beta),
                &mut y,
                (&mut mean, &mut inv_std),
                Some((&mut rm, &mut rv, cfg.momentum)),
                cfg.eps,
                false,
            );
            assert_eq!(bits(&y), bits(&y_core), "y, {c} channels");
            assert_eq!(bits(&mean), bits(&mean_core), "mean, {c} channels");
            assert_eq!(bits(&inv_std), bits(&is_core), "inv_std, {c} channels");
            assert_eq!(bits(&rv), bits(&rv_core), "running var, {c} channels");
            let (mut dx_core, mut dg_core, mut db_core) =
                (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            bn.backward(
                View::new(shape, &x).unwrap(),
                &gamma,
                &mean_core,
                &is_core,
                View::new(shape, &dy).unwrap(),
                ViewMut::new(shape, &mut dx_core).unwrap(),
                &mut dg_core,
                &mut db_core,
            )
            .unwrap();
            let (mut dx, mut dg, mut db) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
            bn_backward(
                None,
                &split(n, 1),
                &mut bufs,
                (per, c),
                &x,
                &gamma,
                (&mean, &inv_std),
                &dy,
                None,
                &mut dx,
                (&mut dg, &mut db),
            );
            assert_eq!(bits(&dx), bits(&dx_core), "dx, {c} channels");
            assert_eq!(bits(&dg), bits(&dg_core), "dgamma, {c} channels");
            assert_eq!(bits(&db), bits(&db_core), "dbeta, {c} channels");
        }
    }

    /// BN fused with the ReLU after it gives the bits of BN then core's
    /// ReLU, forward and backward, on one and on two ranges.
    #[test]
    fn bn_fused_with_relu_matches_bn_then_relu_bit_for_bit() {
        let mut rng = Rng::new(9);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for &(n, per, c, t) in &[(5, 6, 3, 1), (7, 12, 4, 2), (2, 1, 1, 1)] {
            let len = n * per;
            let mut vec =
                |k: usize| -> Vec<f32> { (0..k).map(|_| rng.uniform(-1.0, 1.0)).collect() };
            let (x, gamma, beta, dy) = (vec(len), vec(c), vec(c), vec(len));
            let ranges = split(n, t);
            let mut bufs: Vec<Buf> = (0..t).map(|_| Buf(vec![0.0; 2 * c])).collect();
            let run_fwd = |relu: bool, bufs: &mut [Buf]| {
                let (mut y, mut mean, mut inv_std) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
                bn_forward_train(
                    None,
                    &ranges,
                    bufs,
                    (per, c),
                    &x,
                    (&gamma, &beta),
                    &mut y,
                    (&mut mean, &mut inv_std),
                    None,
                    1e-5,
                    relu,
                );
                (y, mean, inv_std)
            };
            let (y_bn, mean, inv_std) = run_fwd(false, &mut bufs);
            let mut y_relu = vec![0.0; len];
            Activation::Relu.forward(&y_bn, &mut y_relu).unwrap();
            let (y_fused, _, _) = run_fwd(true, &mut bufs);
            assert_eq!(bits(&y_fused), bits(&y_relu), "forward {n}x{per}x{c}");
            let mut d_relu = vec![0.0; len];
            Activation::Relu
                .backward(&y_relu, &dy, &mut d_relu)
                .unwrap();
            let run_bwd = |dy: &[f32], relu_y: Option<&[f32]>, bufs: &mut [Buf]| {
                let (mut dx, mut dg, mut db) = (vec![0.0; len], vec![0.0; c], vec![0.0; c]);
                bn_backward(
                    None,
                    &ranges,
                    bufs,
                    (per, c),
                    &x,
                    &gamma,
                    (&mean, &inv_std),
                    dy,
                    relu_y,
                    &mut dx,
                    (&mut dg, &mut db),
                );
                (dx, dg, db)
            };
            let want = run_bwd(&d_relu, None, &mut bufs);
            let got = run_bwd(&dy, Some(&y_relu), &mut bufs);
            assert_eq!(bits(&got.0), bits(&want.0), "dx {n}x{per}x{c}");
            assert_eq!(bits(&got.1), bits(&want.1), "dgamma {n}x{per}x{c}");
            assert_eq!(bits(&got.2), bits(&want.2), "dbeta {n}x{per}x{c}");
        }
    }

    #[test]
    fn simd_cap_parses_the_three_levels_and_refuses_others() {
        assert_eq!(simd_cap(None), Ok(Simd::Avx512));
        assert_eq!(simd_cap(Some("avx512")), Ok(Simd::Avx512));
        assert_eq!(simd_cap(Some("avx2")), Ok(Simd::Avx2));
        assert_eq!(simd_cap(Some("baseline")), Ok(Simd::Baseline));
        let e = simd_cap(Some("sse9")).unwrap_err();
        assert!(e.contains("\"sse9\"") && e.contains("avx2"), "{e}");
        assert!(Simd::Baseline < Simd::Avx2 && Simd::Avx2 < Simd::Avx512);
        // The level in use honours this process's cap (`cargo xtask test`
        // runs these tests under NORMCORE_SIMD=avx2 and baseline too).
        let cap = simd_cap(std::env::var("NORMCORE_SIMD").ok().as_deref());
        assert!(simd() <= cap.unwrap_or(Simd::Avx512));
    }

    /// The fused update gives core's `Sgd::step` bits (core's own build,
    /// baseline x86-64, is the reference) for every form of the update, on
    /// tensors shorter and longer than a block, and reports non-finite
    /// results; errors write nothing.
    #[test]
    fn sgd_update_matches_core_and_reports_non_finite_weights() {
        let mut rng = Rng::new(13);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for n in [0, 1, 17, SGD_BLOCK, 2 * SGD_BLOCK + 5] {
            for (momentum, nesterov, wd) in [
                (0.0, false, None),
                (0.0, false, Some(0.01)),
                (0.9, false, None),
                (0.9, false, Some(0.001)),
                (0.9, true, Some(0.0)),
            ] {
                let opt = normcore::Sgd {
                    lr: 0.05,
                    momentum,
                    weight_decay: 0.0005,
                    nesterov,
                };
                let mut p: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
                let mut v: Vec<f32> = (0..n).map(|_| rng.normal() * 0.1).collect();
                let (mut p_core, mut v_core) = (p.clone(), v.clone());
                for _ in 0..3 {
                    let g: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
                    assert!(sgd_update(&opt, &mut p, &g, &mut v, wd).unwrap());
                    opt.step(&mut p_core, &g, &mut v_core, wd).unwrap();
                    assert_eq!(bits(&p), bits(&p_core), "n {n} mu {momentum} {nesterov}");
                    assert_eq!(bits(&v), bits(&v_core));
                }
            }
        }
        let opt = normcore::Sgd {
            lr: 0.1,
            momentum: 0.9,
            ..Default::default()
        };
        let n = SGD_BLOCK + 3;
        let mut p = vec![1.0f32; n];
        let mut v = vec![0.0f32; n];
        let mut g = vec![0.0f32; n];
        g[SGD_BLOCK + 1] = f32::INFINITY;
        assert!(!sgd_update(&opt, &mut p, &g, &mut v, None).unwrap());
        assert!(p[SGD_BLOCK + 1].is_infinite() && p[..SGD_BLOCK].iter().all(|&x| x == 1.0));
        // Errors: nothing written.
        let (mut p, mut v) = (vec![1.0f32; n], vec![0.5f32; n]);
        let g = vec![1.0f32; n];
        assert!(sgd_update(&opt, &mut p, &g[..n - 1], &mut v, None).is_err());
        assert!(sgd_update(&opt, &mut p, &g, &mut v[..n - 1], None).is_err());
        assert!(sgd_update(&opt, &mut p, &g, &mut v, Some(-1.0)).is_err());
        let bad = normcore::Sgd { lr: -1.0, ..opt };
        assert!(sgd_update(&bad, &mut p, &g, &mut v, None).is_err());
        assert!(p.iter().all(|&x| x == 1.0) && v.iter().all(|&x| x == 0.5));
        // Without momentum the velocity is not needed.
        let plain = normcore::Sgd {
            momentum: 0.0,
            ..opt
        };
        assert!(sgd_update(&plain, &mut p, &g, &mut [], None).unwrap());
        assert!(p.iter().all(|&x| x == 0.9));
    }

    /// Decoding bytes gives the division's bits for every byte and divisor
    /// in use; prefetching any slice (empty, unaligned) is harmless.
    #[test]
    fn decode_bytes_is_the_division_and_prefetch_is_a_hint() {
        let bytes: Vec<u8> = (0..=255u8).chain(0..=255).collect();
        for divisor in [255.0f32, 16.0, 1.0, 3.0] {
            let mut out = vec![0.0; bytes.len()];
            decode_bytes(&bytes, divisor, &mut out);
            for (&b, &o) in bytes.iter().zip(&out) {
                assert_eq!(o.to_bits(), (f32::from(b) / divisor).to_bits());
            }
        }
        prefetch::<f32>(&[]);
        prefetch(&bytes[3..200]);
        prefetch(&[1.0f32; 33][1..]);
    }

    /// The vector build of sigmoid gives core's bits.
    #[test]
    fn sigmoid_matches_core_bit_for_bit() {
        let mut rng = Rng::new(11);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        let mut x: Vec<f32> = (0..1003).map(|_| rng.uniform(-30.0, 30.0)).collect();
        x.extend([
            0.0,
            -0.0,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            200.0,
            -200.0,
        ]);
        let (mut y, mut y_core) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        sigmoid_forward(&x, &mut y);
        Activation::Sigmoid.forward(&x, &mut y_core).unwrap();
        assert_eq!(bits(&y), bits(&y_core));
        let dy: Vec<f32> = (0..x.len()).map(|_| rng.uniform(-1.0, 1.0)).collect();
        let (mut dx, mut dx_core) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        sigmoid_backward(&y, &dy, &mut dx);
        Activation::Sigmoid.backward(&y, &dy, &mut dx_core).unwrap();
        assert_eq!(bits(&dx), bits(&dx_core));
    }
}
