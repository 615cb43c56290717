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
//! Both produce exactly (bit for bit) what core's kernels produce: the same
//! window scan (`kh` then `kw`), the same comparison (`>`, so the first
//! maximum wins a tie and a NaN never replaces the first tap) and the same
//! order of additions in the backward scatter (output pixels in NHWC order,
//! channels ascending). The network's tests compare them against core.

use normcore::layers::{Pool2d, PoolKind};

/// Argmax marker of an output whose window lies entirely in the padding:
/// it is 0 and passes no gradient.
pub const NO_ARG: u32 = u32::MAX;

/// In-bounds kernel offsets along one axis for output position `out`:
/// `(lo, hi, start)`, offset `lo` reading input `start` (as core's `Taps`).
fn taps(out: usize, stride: usize, pad: usize, len: usize, kernel: usize) -> (usize, usize, usize) {
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
                let mut first = true;
                for ih in hs..hs + (hhi - hlo) {
                    for iw in ws..ws + (whi - wlo) {
                        let base = (ih * w + iw) * c;
                        let xp = &image[base..base + c];
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
                                if xv > *v {
                                    *v = xv;
                                    *a = (base + k) as u32;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

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
            for &(h, w, c, n) in &[(6, 7, 3, 2), (5, 5, 1, 3), (4, 6, 33, 1)] {
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
}
