//! The host's integer-only runs of an int8 model.
//!
//! [`QuantModel::forward`] runs core's int8 kernels (`normcore::kernels::int8`,
//! the device's code) on the model's tensors in the file's layout: that is
//! what the exporter reports as int8 accuracy. [`QuantModel::forward_plain`]
//! is an independent, deliberately naive reading of FORMAT.md ("int8
//! files"), kept as the oracle the kernels are tested against (they must
//! agree bit for bit):
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
//!
//! TODO(lead): once `normcore::engine` is exported, `forward` can run the
//! written file itself through `Engine` (today it runs the same kernels on
//! the model's tensors, packed as the file stores them).

use super::fold::LayerOp;
use super::quant::{QLayer, QuantModel};
use super::ExportError;
use normcore::kernels::{int8 as k8, OutputStage};
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

/// In-bounds taps of one window along one axis: kernel offsets `lo..hi`,
/// offset `lo` reading input index `start` (as core's `Taps`).
fn taps(out: usize, stride: usize, pad: usize, len: usize, kernel: usize) -> (usize, usize, usize) {
    let base = out * stride;
    let lo = pad.saturating_sub(base).min(kernel);
    let hi = (len + pad).saturating_sub(base).min(kernel).max(lo);
    let start = if lo == hi { 0 } else { base + lo - pad };
    (lo, hi, start)
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

/// A layer's weights and bias as the file stores them (dense/conv blocked).
#[derive(Debug)]
struct Stored {
    weights: Vec<i8>,
    bias: Vec<i32>,
}

impl QLayer {
    /// The file's layout of this layer's weights and bias for `r`-row blocks.
    fn stored(&self, r: usize) -> Result<Stored, ExportError> {
        let channels = self.op.out_channels();
        Ok(match self.op {
            LayerOp::Dense(_) | LayerOp::Conv(_) => {
                let cols = self.weights.len() / channels.max(1);
                let mut bias = self.bias.clone();
                bias.resize(channels.div_ceil(r) * r, 0);
                Stored {
                    weights: super::ncm::pack_rows(&self.weights, channels, cols, r)?,
                    bias,
                }
            }
            _ => Stored {
                weights: self.weights.clone(),
                bias: self.bias.clone(),
            },
        })
    }

    /// The output stage (requantization, clamps, table) for core's kernels.
    fn output_stage(&self) -> OutputStage<'_> {
        OutputStage {
            multipliers: &self.multiplier,
            shifts: &self.shift,
            zero_point: self.requant_zp,
            clamp_min: self.clamp_min,
            clamp_max: self.clamp_max,
            lut: self.table.as_slice().try_into().ok(),
        }
    }

    /// This layer on one sample with core's int8 kernels.
    fn forward_core(
        &self,
        stored: &Stored,
        r: usize,
        x: &[i8],
        y: &mut [i8],
    ) -> Result<(), normcore::Error> {
        let stage = self.output_stage();
        let zp = self.input_q.zero_point;
        let (w, b) = (&stored.weights[..], &stored.bias[..]);
        match self.op {
            LayerOp::Dense(d) => {
                let zp = if self.zp_folded { 0 } else { zp };
                k8::dense_i8(x, w, r, b, d.inputs, d.outputs, zp, &stage, y)
            }
            LayerOp::Conv(c) => k8::conv2d_i8(&c, x, w, r, b, zp, self.zp_folded, &stage, y),
            LayerOp::Depthwise(d) => k8::depthwise_i8(&d, x, w, b, zp, &stage, y),
            LayerOp::Pool(p) => k8::pool_i8(&p, x, y),
            LayerOp::GlobalAvgPool => {
                k8::global_avg_pool_i8(self.input.h, self.input.w, self.input.c, x, y)
            }
            LayerOp::Activation => match stage.lut {
                Some(t) => k8::lut_i8(t, x, y),
                None => k8::relu_i8(x, y, self.clamp_min, self.clamp_max),
            },
        }
    }
}

impl QuantModel {
    /// Quantize `[n, ...]` f32 inputs with the model's input parameters.
    pub fn quantize_input(&self, x: &[f32]) -> Vec<i8> {
        x.iter().map(|&v| self.input_q.quantize(v)).collect()
    }

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

    /// The int8 outputs `[n, classes]` of `n` quantized samples, computed by
    /// core's int8 kernels (the device's code) on weights blocked in `r`
    /// rows (the result does not depend on `r`), samples in parallel.
    pub fn forward(&self, x: &[i8], n: usize, r: usize) -> Result<Vec<i8>, ExportError> {
        let per = self.check_batch(x, n)?;
        let stored = self
            .layers
            .iter()
            .map(|l| l.stored(r))
            .collect::<Result<Vec<_>, _>>()?;
        let outs: Vec<Vec<i8>> = x
            .par_chunks(per)
            .map(|s| {
                let mut cur = s.to_vec();
                for (i, (l, st)) in self.layers.iter().zip(&stored).enumerate() {
                    let mut y = vec![0i8; l.output.len()];
                    l.forward_core(st, r, &cur, &mut y)
                        .map_err(|source| ExportError::Kernel {
                            layer: i + 1,
                            source,
                        })?;
                    cur = y;
                }
                Ok(cur)
            })
            .collect::<Result<_, ExportError>>()?;
        Ok(outs.concat())
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

    /// Top-1 accuracy of int8 outputs `[n, classes]` against `labels`
    /// (the first largest level wins ties).
    pub fn accuracy_of(&self, outputs: &[i8], labels: &[u16]) -> f64 {
        let correct = outputs
            .chunks_exact(self.classes)
            .zip(labels)
            .filter(|(row, &label)| argmax_i8(row) == usize::from(label))
            .count();
        correct as f64 / labels.len().max(1) as f64
    }
}

/// Index of the first largest value.
pub fn argmax_i8(row: &[i8]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}
