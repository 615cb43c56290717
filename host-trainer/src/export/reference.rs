//! The independent integer reference of int8 files, for the tests only: a
//! deliberately naive reading of FORMAT.md ("int8 files") on the
//! [`QuantModel`] the exporter wrote, which core's `Engine` running the
//! written bytes must match bit for bit (the cross-check of the kernels, the
//! engine, the writer and the parser at once).
//!
//! Per weighted layer and output channel `c`:
//! ```text
//! acc = bias[c] + Σ_p (x[p] - zp_in)·w[c, p]      (padded taps contribute 0)
//! acc = bias[c] + Σ_p x[p]·w[c, p]                (ZP_FOLDED: zp_in is in the bias)
//! t   = 31 - shift[c]
//! q   = clamp(((acc·m[c] + 2^(t-1)) >> t) + requant_zp, clamp_min, clamp_max)   (i64, arithmetic shift)
//! out = q, or table[q + 128] for sigmoid/tanh
//! ```
//! Max pooling compares levels; average pooling sums the in-bounds levels
//! and divides rounding half up, `floor((2·sum + n)/(2·n))`; both keep the
//! input's quantization. A standalone ReLU/ReLU6 clamps, a standalone
//! sigmoid/tanh looks its input up in the table.

use super::fold::LayerOp;
use super::quant::{QLayer, QuantModel};
use super::ExportError;
use crate::hostops::taps;
use normcore::layers::{PoolKind, Window};
use rayon::prelude::*;

/// Requantize an i32 accumulator: `clamp(((acc·m + 2^(t-1)) >> t) + zp, lo, hi)`
/// with `t = 31 - shift` (`shift ∈ [-31, 30]`, so `t ∈ 1..=62`), the product
/// in i64 and the shift arithmetic: round half up, then saturate. (The
/// oracle's own; core's is `normcore::kernels::requantize`.)
pub fn requantize(acc: i32, multiplier: i32, shift: i32, zp: i32, lo: i32, hi: i32) -> i32 {
    let t = (31 - shift).clamp(1, 62);
    let prod = i64::from(acc) * i64::from(multiplier);
    let r = (prod + (1i64 << (t - 1))) >> t;
    (r + i64::from(zp)).clamp(i64::from(lo), i64::from(hi)) as i32
}

/// `(kernel offset, input index)` pairs of the window of output `(oh, ow)`.
fn window_taps(
    w: &Window,
    in_h: usize,
    in_w: usize,
    oh: usize,
    ow: usize,
) -> (
    impl Iterator<Item = (usize, usize)> + Clone,
    impl Iterator<Item = (usize, usize)> + Clone,
) {
    let (hl, hh, hs) = taps(oh, w.stride_h, w.padding.top, in_h, w.kernel_h);
    let (wl, wh, ws) = taps(ow, w.stride_w, w.padding.left, in_w, w.kernel_w);
    ((hl..hh).zip(hs..), (wl..wh).zip(ws..))
}

impl QLayer {
    /// The output stage of channel `c`: requantize, clamp, look up.
    fn stage(&self, acc: i32, c: usize) -> i8 {
        let q = requantize(
            acc,
            self.multiplier[c],
            self.shift[c],
            self.requant_zp,
            self.clamp_min,
            self.clamp_max,
        );
        self.lookup(q)
    }

    /// `table[q + 128]` for sigmoid/tanh, else `q`.
    fn lookup(&self, q: i32) -> i8 {
        if self.table.is_empty() {
            q as i8
        } else {
            self.table[(q.clamp(-128, 127) + 128) as usize]
        }
    }

    /// The zero point the kernel subtracts from each input (0 when folded).
    fn zp_sub(&self) -> i32 {
        if self.zp_folded {
            0
        } else {
            self.input_q.zero_point
        }
    }

    /// This layer on one sample, by the plain reading of FORMAT.md.
    pub fn forward_plain(&self, x: &[i8], y: &mut [i8]) {
        let zp = self.zp_sub();
        match self.op {
            LayerOp::Dense(d) => {
                for (c, out) in y.iter_mut().enumerate().take(d.outputs) {
                    let row = &self.weights[c * d.inputs..(c + 1) * d.inputs];
                    let mut acc = self.bias[c];
                    for (&xv, &wv) in x.iter().zip(row) {
                        acc = acc.wrapping_add((i32::from(xv) - zp) * i32::from(wv));
                    }
                    *out = self.stage(acc, c);
                }
            }
            LayerOp::Conv(cv) => {
                let (kh, kw, cin, cout) =
                    (cv.window.kernel_h, cv.window.kernel_w, cv.in_c, cv.out_c);
                let (oh_n, ow_n) = (self.output.h, self.output.w);
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let (th, tw) = window_taps(&cv.window, cv.in_h, cv.in_w, oh, ow);
                        let out = &mut y[(oh * ow_n + ow) * cout..][..cout];
                        for (c, o) in out.iter_mut().enumerate() {
                            let mut acc = self.bias[c];
                            for (ki, ih) in th.clone() {
                                for (kj, iw) in tw.clone() {
                                    let xp = &x[(ih * cv.in_w + iw) * cin..][..cin];
                                    let wp =
                                        &self.weights[((c * kh + ki) * kw + kj) * cin..][..cin];
                                    for (&xv, &wv) in xp.iter().zip(wp) {
                                        acc =
                                            acc.wrapping_add((i32::from(xv) - zp) * i32::from(wv));
                                    }
                                }
                            }
                            *o = self.stage(acc, c);
                        }
                    }
                }
            }
            LayerOp::Depthwise(dw) => {
                let (kw, ch) = (dw.window.kernel_w, dw.channels);
                let (oh_n, ow_n) = (self.output.h, self.output.w);
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let (th, tw) = window_taps(&dw.window, dw.in_h, dw.in_w, oh, ow);
                        let out = &mut y[(oh * ow_n + ow) * ch..][..ch];
                        for (c, o) in out.iter_mut().enumerate() {
                            let mut acc = self.bias[c];
                            for (ki, ih) in th.clone() {
                                for (kj, iw) in tw.clone() {
                                    let xv = i32::from(x[(ih * dw.in_w + iw) * ch + c]);
                                    let wv = i32::from(self.weights[(ki * kw + kj) * ch + c]);
                                    acc = acc.wrapping_add((xv - zp) * wv);
                                }
                            }
                            *o = self.stage(acc, c);
                        }
                    }
                }
            }
            LayerOp::Pool(p) => {
                let ch = p.channels;
                let (oh_n, ow_n) = (self.output.h, self.output.w);
                for oh in 0..oh_n {
                    for ow in 0..ow_n {
                        let (th, tw) = window_taps(&p.window, p.in_h, p.in_w, oh, ow);
                        let out = &mut y[(oh * ow_n + ow) * ch..][..ch];
                        for (c, o) in out.iter_mut().enumerate() {
                            let mut n = 0i32;
                            let (mut max, mut sum) = (i32::MIN, 0i32);
                            for (_, ih) in th.clone() {
                                for (_, iw) in tw.clone() {
                                    let v = i32::from(x[(ih * p.in_w + iw) * ch + c]);
                                    max = max.max(v);
                                    sum += v;
                                    n += 1;
                                }
                            }
                            *o = if n == 0 {
                                // A window entirely in the padding averages nothing: real 0.
                                self.output_q.zero_point as i8
                            } else {
                                match p.kind {
                                    PoolKind::Max => max as i8,
                                    PoolKind::Average => round_div(sum, n) as i8,
                                }
                            };
                        }
                    }
                }
            }
            LayerOp::GlobalAvgPool => {
                let ch = self.input.c;
                let n = (self.input.h * self.input.w) as i32;
                for (c, o) in y.iter_mut().enumerate().take(ch) {
                    let sum: i32 = x.iter().skip(c).step_by(ch).map(|&v| i32::from(v)).sum();
                    *o = round_div(sum, n) as i8;
                }
            }
            LayerOp::Activation => {
                for (o, &v) in y.iter_mut().zip(x) {
                    let q = i32::from(v).clamp(self.clamp_min, self.clamp_max);
                    *o = self.lookup(q);
                }
            }
        }
    }
}

/// `sum / n` rounded half up: `floor((2·sum + n) / (2·n))`.
pub fn round_div(sum: i32, n: i32) -> i32 {
    (2 * i64::from(sum) + i64::from(n)).div_euclid(2 * i64::from(n)) as i32
}

impl QuantModel {
    fn check_batch(&self, x: &[i8], n: usize) -> Result<usize, ExportError> {
        let per = self.input.len();
        if x.len() != n * per || per == 0 {
            return Err(ExportError::Batch {
                n,
                len: x.len(),
                expected: per,
            });
        }
        Ok(per)
    }

    /// The int8 outputs by the plain oracle ([`QLayer::forward_plain`]).
    pub fn forward_plain(&self, x: &[i8], n: usize) -> Result<Vec<i8>, ExportError> {
        let per = self.check_batch(x, n)?;
        let outs: Vec<Vec<i8>> = x
            .par_chunks(per)
            .map(|s| {
                let mut cur = s.to_vec();
                for l in &self.layers {
                    let mut y = vec![0i8; l.output.len()];
                    l.forward_plain(&cur, &mut y);
                    cur = y;
                }
                cur
            })
            .collect();
        Ok(outs.concat())
    }
}
