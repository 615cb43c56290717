//! 2-d convolution (NHWC), lowered to one matrix product per chunk of samples.
//!
//! # Math
//! Input `x` is `[N, H, W, Cin]`, filters `w` are `[Cout, KH, KW, Cin]`
//! (row-major, output channel first), bias `b` is `[Cout]`, the stride is
//! `(sh, sw)` and the zero padding `(pt, pb, pl, pr)` (top, bottom, left,
//! right). The output `y` is `[N, OH, OW, Cout]` with
//! ```text
//! OH = ⌊(H + pt + pb - KH) / sh⌋ + 1        OW = ⌊(W + pl + pr - KW) / sw⌋ + 1
//! y[n,oh,ow,co] = b[co] + Σ_{kh,kw,ci} w[co,kh,kw,ci] · x[n, oh·sh + kh - pt, ow·sw + kw - pl, ci]
//! ```
//! where `x` reads as zero outside `[0, H) × [0, W)` (zero padding), and input
//! rows or columns past the last full window are not used (the floor).
//!
//! Backward, with `dy = ∂L/∂y` of shape `[N, OH, OW, Cout]`:
//! ```text
//! ∂L/∂w[co,kh,kw,ci] = Σ_{n,oh,ow} dy[n,oh,ow,co] · x[n, oh·sh + kh - pt, ow·sw + kw - pl, ci]
//! ∂L/∂b[co]          = Σ_{n,oh,ow} dy[n,oh,ow,co]
//! ∂L/∂x[n,ih,iw,ci]  = Σ_{oh,ow,kh,kw : oh·sh+kh-pt = ih, ow·sw+kw-pl = iw} Σ_co dy[n,oh,ow,co] · w[co,kh,kw,ci]
//! ```
//! (taps that fall in the padding contribute nothing to either gradient).
//!
//! # Lowering (im2col)
//! With `P = KH·KW·Cin`, row `r = (n·OH + oh)·OW + ow` of the matrix
//! `cols [N·OH·OW, P]` holds the receptive field of output pixel
//! `(n, oh, ow)` in `(kh, kw, ci)` order, the filters' own layout, with zeros
//! at padded taps; in NHWC it is `KH` copies of runs of up to `KW·Cin`
//! contiguous inputs. Seeing `w` as `W [Cout, P]`:
//! ```text
//! y     = cols · Wᵀ (+ b)     rows of y are NHWC output pixels: written in place
//! ∂L/∂W = dyᵀ · cols          dy seen as [N·OH·OW, Cout]
//! dcols = dy · W              then col2im: each row scatter-added back to the
//!                             inputs it was gathered from, ∂L/∂x = col2im(dcols)
//! ```
//! `cols` lives in the caller's scratch. Each product covers as many samples
//! as the scratch holds (at least one), so the scratch size trades memory for
//! fewer, larger products; `∂L/∂W` is accumulated over those chunks with the
//! [`Gemm`] `accumulate` flag (the first chunk overwrites). Backward needs no
//! more scratch than forward: the `dyᵀ·cols` product consumes `cols` before
//! `dcols` overwrites the same buffer.
//!
//! A 1×1 convolution with stride 1 and no padding needs no lowering: `x` seen
//! as `[N·H·W, Cin]` already is `cols`, so it runs as one product with no
//! scratch at all (`forward_scratch_len` is 0), like a dense layer per pixel.
//!
//! As in [`Dense`](super::Dense), a conv followed by BN needs no bias (paper
//! Sec. 3.2): pass `None`.

use crate::error::{check_len, Error, Operand, Param};
use crate::gemm::{Gemm, MatMut, MatRef};
use crate::tensor::{Shape, View, ViewMut};

/// Zero padding added around the input, in pixels. TensorFlow's "SAME"
/// padding can be asymmetric (the extra pixel goes bottom/right), so each
/// side is its own field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Padding {
    /// Rows added above.
    pub top: usize,
    /// Rows added below.
    pub bottom: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Columns added on the right.
    pub right: usize,
}

impl Padding {
    /// No padding ("VALID").
    pub const NONE: Padding = Padding {
        top: 0,
        bottom: 0,
        left: 0,
        right: 0,
    };

    /// `ph` rows above and below, `pw` columns left and right.
    pub const fn symmetric(ph: usize, pw: usize) -> Self {
        Padding {
            top: ph,
            bottom: ph,
            left: pw,
            right: pw,
        }
    }
}

/// The sliding window shared by convolutions and pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Window {
    /// Kernel height.
    pub kernel_h: usize,
    /// Kernel width.
    pub kernel_w: usize,
    /// Vertical stride.
    pub stride_h: usize,
    /// Horizontal stride.
    pub stride_w: usize,
    /// Zero padding.
    pub padding: Padding,
}

impl Window {
    /// A square `k×k` window with stride `s` and symmetric padding `p`.
    pub const fn square(k: usize, s: usize, p: usize) -> Self {
        Window {
            kernel_h: k,
            kernel_w: k,
            stride_h: s,
            stride_w: s,
            padding: Padding::symmetric(p, p),
        }
    }

    /// Output height and width for an `in_h × in_w` input:
    /// `out = (in + pad_before + pad_after - kernel) / stride + 1`.
    /// Errors: zero stride (`Param::Stride`), zero kernel or a kernel larger
    /// than the padded input (`Param::Kernel`), zero input (`Param::Dimension`).
    pub fn output_hw(&self, in_h: usize, in_w: usize) -> Result<(usize, usize), Error> {
        if self.stride_h == 0 || self.stride_w == 0 {
            return Err(Error::InvalidParam(Param::Stride));
        }
        if in_h == 0 || in_w == 0 {
            return Err(Error::InvalidParam(Param::Dimension));
        }
        let ph = in_h
            .checked_add(self.padding.top)
            .and_then(|v| v.checked_add(self.padding.bottom))
            .ok_or(Error::Overflow)?;
        let pw = in_w
            .checked_add(self.padding.left)
            .and_then(|v| v.checked_add(self.padding.right))
            .ok_or(Error::Overflow)?;
        if self.kernel_h == 0 || self.kernel_w == 0 || self.kernel_h > ph || self.kernel_w > pw {
            return Err(Error::InvalidParam(Param::Kernel));
        }
        Ok((
            (ph - self.kernel_h) / self.stride_h + 1,
            (pw - self.kernel_w) / self.stride_w + 1,
        ))
    }
}

/// The kernel offsets along one axis that read real (unpadded) input for one
/// output position: offsets `lo..hi`, offset `lo` reading input index `start`
/// and each further offset the next input index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Taps {
    /// First in-bounds kernel offset.
    pub(crate) lo: usize,
    /// One past the last in-bounds kernel offset (`hi >= lo`).
    pub(crate) hi: usize,
    /// Input index read by offset `lo` (0 when `lo == hi`), so that
    /// `start + hi - lo <= len` always.
    pub(crate) start: usize,
}

impl Taps {
    /// Along one axis: output position `out`, stride, leading padding, input
    /// extent and kernel extent. Offset `t` reads input `out·stride + t - pad`,
    /// which is in bounds for `pad - out·stride <= t < len + pad - out·stride`.
    /// Saturating arithmetic keeps this total; for an `out` below the
    /// validated output size nothing saturates (`out·stride + kernel` is at
    /// most the padded extent).
    fn along(out: usize, stride: usize, pad: usize, len: usize, kernel: usize) -> Taps {
        let base = out.saturating_mul(stride);
        let lo = pad.saturating_sub(base).min(kernel);
        let hi = len
            .saturating_add(pad)
            .saturating_sub(base)
            .min(kernel)
            .max(lo);
        // An empty range reads nothing; start 0 keeps `start + len` in bounds.
        let start = if lo == hi {
            0
        } else {
            base.saturating_add(lo).saturating_sub(pad)
        };
        Taps { lo, hi, start }
    }

    /// Number of in-bounds offsets.
    pub(crate) fn len(&self) -> usize {
        self.hi - self.lo
    }

    /// `(kernel offset, input index)` of every in-bounds tap.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (usize, usize)> {
        (self.lo..self.hi).zip(self.start..)
    }
}

impl Window {
    /// In-bounds rows of the window of output row `oh` over `in_h` input rows.
    pub(crate) fn taps_h(&self, oh: usize, in_h: usize) -> Taps {
        Taps::along(oh, self.stride_h, self.padding.top, in_h, self.kernel_h)
    }

    /// In-bounds columns of the window of output column `ow` over `in_w` input columns.
    pub(crate) fn taps_w(&self, ow: usize, in_w: usize) -> Taps {
        Taps::along(ow, self.stride_w, self.padding.left, in_w, self.kernel_w)
    }

    /// 1×1, stride 1, no padding: every output pixel is its input pixel.
    fn is_pointwise(&self) -> bool {
        self.kernel_h == 1
            && self.kernel_w == 1
            && self.stride_h == 1
            && self.stride_w == 1
            && self.padding == Padding::NONE
    }
}

/// `a·b`, or `Error::Overflow`.
pub(crate) fn mul(a: usize, b: usize) -> Result<usize, Error> {
    a.checked_mul(b).ok_or(Error::Overflow)
}

/// Geometry of a 2-d convolution: input `[N, in_h, in_w, in_c]`, filters
/// `[out_c, kernel_h, kernel_w, in_c]`, bias `[out_c]`, output
/// `[N, out_h, out_w, out_c]`.
///
/// The fields are public plain data; every method re-validates them, so a
/// value built by hand with bad fields yields an `Err`, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Conv2d {
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Input channels.
    pub in_c: usize,
    /// Output channels (filters).
    pub out_c: usize,
    /// Kernel, stride and padding.
    pub window: Window,
}

/// Sizes derived from a validated [`Conv2d`], all overflow-checked.
#[derive(Debug, Clone, Copy)]
struct Geom {
    out_h: usize,
    out_w: usize,
    /// `KH·KW·Cin`: one row of `cols`, one filter.
    patch: usize,
    /// `OH·OW`: rows of `cols` per sample.
    pixels: usize,
    /// `H·W·Cin`.
    in_sample: usize,
    /// `OH·OW·Cout`.
    out_sample: usize,
    /// `OH·OW·KH·KW·Cin`: elements of `cols` per sample.
    cols_sample: usize,
    /// `Cout·KH·KW·Cin`.
    weight: usize,
}

impl Conv2d {
    /// A convolution over `in_h × in_w × in_c` inputs producing `out_c`
    /// channels.
    ///
    /// Errors: a zero dimension (`Param::Dimension`), a zero stride
    /// (`Param::Stride`), a zero kernel or one larger than the padded input
    /// (`Param::Kernel`), sizes that overflow `usize` (`Error::Overflow`).
    pub fn new(
        in_h: usize,
        in_w: usize,
        in_c: usize,
        out_c: usize,
        window: Window,
    ) -> Result<Self, Error> {
        let conv = Conv2d {
            in_h,
            in_w,
            in_c,
            out_c,
            window,
        };
        conv.geom()?;
        Ok(conv)
    }

    fn geom(&self) -> Result<Geom, Error> {
        if self.in_h == 0 || self.in_w == 0 || self.in_c == 0 || self.out_c == 0 {
            return Err(Error::InvalidParam(Param::Dimension));
        }
        let (out_h, out_w) = self.window.output_hw(self.in_h, self.in_w)?;
        let patch = mul(mul(self.window.kernel_h, self.window.kernel_w)?, self.in_c)?;
        let pixels = mul(out_h, out_w)?;
        Ok(Geom {
            out_h,
            out_w,
            patch,
            pixels,
            in_sample: mul(mul(self.in_h, self.in_w)?, self.in_c)?,
            out_sample: mul(pixels, self.out_c)?,
            cols_sample: mul(pixels, patch)?,
            weight: mul(self.out_c, patch)?,
        })
    }

    /// The input shape for a batch of `n` samples, `[n, in_h, in_w, in_c]`.
    pub fn input_shape(&self, n: usize) -> Shape {
        Shape::nhwc(n, self.in_h, self.in_w, self.in_c)
    }

    /// `[n, out_h, out_w, out_c]`.
    pub fn output_shape(&self, n: usize) -> Result<Shape, Error> {
        let g = self.geom()?;
        Ok(Shape::nhwc(n, g.out_h, g.out_w, self.out_c))
    }

    /// `out_c · kernel_h · kernel_w · in_c`.
    pub fn weight_len(&self) -> Result<usize, Error> {
        Ok(self.geom()?.weight)
    }

    /// Minimum scratch for `forward` to process `samples` samples per
    /// product: `samples · out_h · out_w · kernel_h · kernel_w · in_c`, or 0
    /// for a 1×1, stride 1, unpadded convolution (which needs no lowering).
    pub fn forward_scratch_len(&self, samples: usize) -> Result<usize, Error> {
        let g = self.geom()?;
        if self.window.is_pointwise() {
            Ok(0)
        } else {
            mul(samples, g.cols_sample)
        }
    }

    /// Minimum scratch for `backward` to process `samples` samples per
    /// product: the same as [`Conv2d::forward_scratch_len`] (`cols` and then
    /// `dcols` share one buffer).
    pub fn backward_scratch_len(&self, samples: usize) -> Result<usize, Error> {
        self.forward_scratch_len(samples)
    }

    /// Samples per product that `scratch_len` elements of scratch allow
    /// (at least 1), or `BufferTooSmall` below one sample's worth.
    fn chunk_samples(&self, g: &Geom, n: usize, scratch_len: usize) -> Result<usize, Error> {
        if self.window.is_pointwise() {
            return Ok(n.max(1));
        }
        if scratch_len < g.cols_sample {
            return Err(Error::BufferTooSmall {
                operand: Operand::Scratch,
                needed: g.cols_sample,
                actual: scratch_len,
            });
        }
        // cols_sample >= 1: every dimension of a valid geometry is >= 1.
        Ok((scratch_len / g.cols_sample).clamp(1, n.max(1)))
    }

    fn check_input(&self, x: Shape) -> Result<(), Error> {
        if x != self.input_shape(x.n) {
            return Err(Error::ShapeMismatch {
                operand: Operand::Input,
            });
        }
        Ok(())
    }

    /// Gather the receptive fields of every output pixel of the samples in
    /// `x` (whole samples, NHWC) into `cols` (`[samples·OH·OW, P]`, row-major).
    fn im2col(&self, g: &Geom, x: &[f32], cols: &mut [f32]) {
        let c = self.in_c;
        let run = self.window.kernel_w * c; // one kernel row of a patch
        let in_row = self.in_w * c; // one input row of an image
        let mut rows = cols.chunks_exact_mut(g.patch);
        for image in x.chunks_exact(g.in_sample) {
            for oh in 0..g.out_h {
                let th = self.window.taps_h(oh, self.in_h);
                for ow in 0..g.out_w {
                    let tw = self.window.taps_w(ow, self.in_w);
                    let Some(row) = rows.next() else { return };
                    // Kernel rows entirely in the padding are zero.
                    let (above, rest) = row.split_at_mut(th.lo * run);
                    let (inside, below) = rest.split_at_mut(th.len() * run);
                    above.fill(0.0);
                    below.fill(0.0);
                    let src = th.start * in_row + tw.start * c;
                    for (seg, ih) in inside.chunks_exact_mut(run).zip(0..) {
                        let (left, rest) = seg.split_at_mut(tw.lo * c);
                        let (mid, right) = rest.split_at_mut(tw.len() * c);
                        left.fill(0.0);
                        right.fill(0.0);
                        let at = src + ih * in_row;
                        mid.copy_from_slice(&image[at..at + mid.len()]);
                    }
                }
            }
        }
    }

    /// Scatter-add every row of `cols` back onto the inputs it was gathered
    /// from: `dx = col2im(dcols)`. Overwrites `dx` (whole samples, NHWC).
    fn col2im(&self, g: &Geom, cols: &[f32], dx: &mut [f32]) {
        dx.fill(0.0);
        let c = self.in_c;
        let run = self.window.kernel_w * c;
        let in_row = self.in_w * c;
        let mut rows = cols.chunks_exact(g.patch);
        for image in dx.chunks_exact_mut(g.in_sample) {
            for oh in 0..g.out_h {
                let th = self.window.taps_h(oh, self.in_h);
                for ow in 0..g.out_w {
                    let tw = self.window.taps_w(ow, self.in_w);
                    let Some(row) = rows.next() else { return };
                    let inside = &row[th.lo * run..th.hi * run];
                    let src = th.start * in_row + tw.start * c;
                    for (seg, ih) in inside.chunks_exact(run).zip(0..) {
                        let mid = &seg[tw.lo * c..tw.hi * c];
                        let at = src + ih * in_row;
                        for (d, &v) in image[at..at + mid.len()].iter_mut().zip(mid) {
                            *d += v;
                        }
                    }
                }
            }
        }
    }

    /// Forward: `y = conv(x, w) + b`.
    ///
    /// Shapes: `x` `[N, in_h, in_w, in_c]`, `w` `[out_c, kernel_h, kernel_w,
    /// in_c]` (`weight_len` elements), `b` `[out_c]` or `None`, `y`
    /// `[N, out_h, out_w, out_c]` (overwritten). `scratch` holds at least
    /// `forward_scratch_len(1)` elements; each matrix product covers
    /// `scratch.len() / forward_scratch_len(1)` samples. Its contents on
    /// entry do not matter and on return are unspecified.
    ///
    /// Everything is validated before anything is written: a bad geometry,
    /// shape, length or scratch size is an `Err` that leaves `y` untouched.
    /// (Only an error raised by `gemm` itself, which [`Portable`](crate::Portable)
    /// never raises for validated shapes, can come after writes.)
    pub fn forward<G: Gemm + ?Sized>(
        &self,
        gemm: &G,
        x: View<'_>,
        w: &[f32],
        b: Option<&[f32]>,
        mut y: ViewMut<'_>,
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        let g = self.geom()?;
        let xs = x.shape();
        self.check_input(xs)?;
        check_len(Operand::Weight, g.weight, w.len())?;
        if let Some(b) = b {
            check_len(Operand::Bias, self.out_c, b.len())?;
        }
        if y.shape() != self.output_shape(xs.n)? {
            return Err(Error::ShapeMismatch {
                operand: Operand::Output,
            });
        }
        let chunk = self.chunk_samples(&g, xs.n, scratch.len())?;

        // Shapes are validated: x holds n·in_sample and y n·out_sample
        // elements (both computed without overflow by the views), and
        // chunk <= max(n, 1), so no size below overflows or exceeds a slice.
        let wt = MatRef::row_major(w, self.out_c, g.patch)?.t();
        let x_chunks = x.data().chunks(chunk * g.in_sample);
        let y_chunks = y.data_mut().chunks_mut(chunk * g.out_sample);
        for (xc, yc) in x_chunks.zip(y_chunks) {
            let rows = xc.len() / g.in_sample * g.pixels;
            let ym = MatMut::row_major(yc, rows, self.out_c)?;
            if self.window.is_pointwise() {
                gemm.gemm(MatRef::row_major(xc, rows, self.in_c)?, wt, ym, false)?;
            } else {
                let cols = &mut scratch[..rows * g.patch];
                self.im2col(&g, xc, cols);
                gemm.gemm(MatRef::row_major(cols, rows, g.patch)?, wt, ym, false)?;
            }
            if let Some(b) = b {
                for pixel in yc.chunks_exact_mut(self.out_c) {
                    for (v, &bias) in pixel.iter_mut().zip(b) {
                        *v += bias;
                    }
                }
            }
        }
        Ok(())
    }

    /// Backward: writes `dw = ∂L/∂w`, `db = ∂L/∂b` (if given) and
    /// `dx = ∂L/∂x` (if given; the first layer of a network skips it).
    /// Gradients are overwritten, not accumulated.
    ///
    /// Shapes: `x` `[N, in_h, in_w, in_c]` (the forward input), `w` and `dw`
    /// `[out_c, kernel_h, kernel_w, in_c]`, `dy` `[N, out_h, out_w, out_c]`,
    /// `dx` like `x`, `db` `[out_c]`. `scratch` holds at least
    /// `backward_scratch_len(1)` elements; each product covers
    /// `scratch.len() / backward_scratch_len(1)` samples.
    ///
    /// Everything is validated before anything is written, as in `forward`.
    pub fn backward<G: Gemm + ?Sized>(
        &self,
        gemm: &G,
        x: View<'_>,
        w: &[f32],
        dy: View<'_>,
        dx: Option<ViewMut<'_>>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
        scratch: &mut [f32],
    ) -> Result<(), Error> {
        let g = self.geom()?;
        let xs = x.shape();
        self.check_input(xs)?;
        check_len(Operand::Weight, g.weight, w.len())?;
        check_len(Operand::WeightGrad, g.weight, dw.len())?;
        if let Some(db) = &db {
            check_len(Operand::BiasGrad, self.out_c, db.len())?;
        }
        if dy.shape() != self.output_shape(xs.n)? {
            return Err(Error::ShapeMismatch {
                operand: Operand::OutputGrad,
            });
        }
        if let Some(dx) = &dx {
            if dx.shape() != xs {
                return Err(Error::ShapeMismatch {
                    operand: Operand::InputGrad,
                });
            }
        }
        let chunk = self.chunk_samples(&g, xs.n, scratch.len())?;

        if let Some(db) = db {
            db.fill(0.0);
            for pixel in dy.data().chunks_exact(self.out_c) {
                for (acc, &d) in db.iter_mut().zip(pixel) {
                    *acc += d;
                }
            }
        }
        if xs.n == 0 {
            // No chunk runs below: an empty batch has zero weight gradient.
            dw.fill(0.0);
        }
        let wm = MatRef::row_major(w, self.out_c, g.patch)?;
        let mut dx = dx.map(ViewMut::into_data);
        let x_chunks = x.data().chunks(chunk * g.in_sample);
        let dy_chunks = dy.data().chunks(chunk * g.out_sample);
        for (i, (xc, dyc)) in x_chunks.zip(dy_chunks).enumerate() {
            let rows = xc.len() / g.in_sample * g.pixels;
            let dym = MatRef::row_major(dyc, rows, self.out_c)?;
            let dwm = MatMut::row_major(dw, self.out_c, g.patch)?;
            let dxc = match dx.as_deref_mut() {
                Some(dx) => {
                    let at = i * chunk * g.in_sample;
                    Some(&mut dx[at..at + xc.len()])
                }
                None => None,
            };
            if self.window.is_pointwise() {
                // x is cols, and col2im is the identity.
                gemm.gemm(dym.t(), MatRef::row_major(xc, rows, self.in_c)?, dwm, i > 0)?;
                if let Some(dxc) = dxc {
                    gemm.gemm(dym, wm, MatMut::row_major(dxc, rows, self.in_c)?, false)?;
                }
            } else {
                let cols = &mut scratch[..rows * g.patch];
                self.im2col(&g, xc, cols);
                gemm.gemm(dym.t(), MatRef::row_major(cols, rows, g.patch)?, dwm, i > 0)?;
                if let Some(dxc) = dxc {
                    // cols is consumed: reuse it for dcols = dy·W.
                    gemm.gemm(dym, wm, MatMut::row_major(cols, rows, g.patch)?, false)?;
                    self.col2im(&g, cols, dxc);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::Portable;
    use crate::testutil::{fd_check, random_vec};
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// Tolerance of the kernels against the f64 reference: a sum of `K`
    /// f32 products carries a rounding error of a few `2^-24·Σ|terms|`
    /// (at most `K·2^-24·Σ|terms|`, with `K <= 400` here), so the check is
    /// `|got - ref| <= 1e-5·(1 + Σ|terms|)`, scaled by the terms rather than by
    /// `|ref|`, which cancellation can make arbitrarily small.
    const TOL: f64 = 1e-5;

    #[track_caller]
    fn assert_near(got: &[f32], want: &[f64], mag: &[f64]) {
        assert_eq!(got.len(), want.len());
        for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mag).enumerate() {
            assert!(
                (g as f64 - w).abs() <= TOL * (1.0 + m),
                "element {i}: {g} vs reference {w} (Σ|terms| {m})"
            );
        }
    }

    /// One random test geometry.
    #[derive(Debug, Clone, Copy)]
    struct Case {
        n: usize,
        h: usize,
        w: usize,
        cin: usize,
        cout: usize,
        kh: usize,
        kw: usize,
        sh: usize,
        sw: usize,
        /// top, bottom, left, right
        pad: [usize; 4],
    }

    impl Case {
        fn window(&self) -> Window {
            Window {
                kernel_h: self.kh,
                kernel_w: self.kw,
                stride_h: self.sh,
                stride_w: self.sw,
                padding: Padding {
                    top: self.pad[0],
                    bottom: self.pad[1],
                    left: self.pad[2],
                    right: self.pad[3],
                },
            }
        }
        fn conv(&self) -> Conv2d {
            Conv2d::new(self.h, self.w, self.cin, self.cout, self.window()).unwrap()
        }
        /// Output size, computed independently of `Window::output_hw`.
        fn out(&self) -> (usize, usize) {
            (
                (self.h + self.pad[0] + self.pad[1] - self.kh) / self.sh + 1,
                (self.w + self.pad[2] + self.pad[3] - self.kw) / self.sw + 1,
            )
        }
        fn x_shape(&self) -> Shape {
            Shape::nhwc(self.n, self.h, self.w, self.cin)
        }
        fn y_shape(&self) -> Shape {
            let (oh, ow) = self.out();
            Shape::nhwc(self.n, oh, ow, self.cout)
        }
        /// Input index along one axis, or `None` in the padding.
        fn src(o: usize, k: usize, stride: usize, pad: usize, len: usize) -> Option<usize> {
            let i = (o * stride + k) as isize - pad as isize;
            (0..len as isize).contains(&i).then_some(i as usize)
        }
        /// Every `(x index, w index without co, y index without co)` of a
        /// real (unpadded) multiply: the definition, loop by loop.
        fn taps(&self) -> Vec<(usize, usize, usize)> {
            let (oh, ow) = self.out();
            let mut t = Vec::new();
            for n in 0..self.n {
                for y in 0..oh {
                    for x in 0..ow {
                        for ky in 0..self.kh {
                            for kx in 0..self.kw {
                                let (Some(iy), Some(ix)) = (
                                    Self::src(y, ky, self.sh, self.pad[0], self.h),
                                    Self::src(x, kx, self.sw, self.pad[2], self.w),
                                ) else {
                                    continue;
                                };
                                let xi = ((n * self.h + iy) * self.w + ix) * self.cin;
                                let wi = (ky * self.kw + kx) * self.cin;
                                let yi = ((n * oh + y) * ow + x) * self.cout;
                                t.push((xi, wi, yi));
                            }
                        }
                    }
                }
            }
            t
        }
    }

    fn case(pointwise: bool) -> impl Strategy<Value = Case> {
        let dims = (1usize..=3, 1usize..=7, 1usize..=7, 1usize..=4, 1usize..=4);
        let win = (
            1usize..=4,
            1usize..=4,
            1usize..=3,
            1usize..=3,
            [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        );
        (dims, win).prop_map(move |((n, h, w, cin, cout), (kh, kw, sh, sw, pad))| {
            if pointwise {
                return Case {
                    n,
                    h,
                    w,
                    cin,
                    cout,
                    kh: 1,
                    kw: 1,
                    sh: 1,
                    sw: 1,
                    pad: [0; 4],
                };
            }
            // Clamp the kernel to the padded input so that every case is valid.
            let kh = kh.min(h + pad[0] + pad[1]);
            let kw = kw.min(w + pad[2] + pad[3]);
            Case {
                n,
                h,
                w,
                cin,
                cout,
                kh,
                kw,
                sh,
                sw,
                pad,
            }
        })
    }

    /// f64 reference forward: `(y, Σ|terms| per element)`.
    fn naive_forward(c: &Case, x: &[f32], w: &[f32], b: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
        let len = c.y_shape().len().unwrap();
        let (mut y, mut mag) = (vec![0.0f64; len], vec![0.0f64; len]);
        let patch = c.kh * c.kw * c.cin;
        if let Some(b) = b {
            for i in 0..len {
                y[i] = b[i % c.cout] as f64;
                mag[i] = y[i].abs();
            }
        }
        for (xi, wi, yi) in c.taps() {
            for co in 0..c.cout {
                for ci in 0..c.cin {
                    let t = x[xi + ci] as f64 * w[co * patch + wi + ci] as f64;
                    y[yi + co] += t;
                    mag[yi + co] += t.abs();
                }
            }
        }
        (y, mag)
    }

    /// f64 reference backward: `(dx, dw, db)`, each with its Σ|terms|.
    fn naive_backward(c: &Case, x: &[f32], w: &[f32], dy: &[f32]) -> [(Vec<f64>, Vec<f64>); 3] {
        let patch = c.kh * c.kw * c.cin;
        let zeros = |n: usize| (vec![0.0f64; n], vec![0.0f64; n]);
        let (mut dx, mut dw, mut db) = (zeros(x.len()), zeros(w.len()), zeros(c.cout));
        for (i, &d) in dy.iter().enumerate() {
            db.0[i % c.cout] += d as f64;
            db.1[i % c.cout] += (d as f64).abs();
        }
        for (xi, wi, yi) in c.taps() {
            for co in 0..c.cout {
                let d = dy[yi + co] as f64;
                for ci in 0..c.cin {
                    let tw = d * x[xi + ci] as f64;
                    dw.0[co * patch + wi + ci] += tw;
                    dw.1[co * patch + wi + ci] += tw.abs();
                    let tx = d * w[co * patch + wi + ci] as f64;
                    dx.0[xi + ci] += tx;
                    dx.1[xi + ci] += tx.abs();
                }
            }
        }
        [dx, dw, db]
    }

    /// Scratch for `chunk` samples per product plus `extra` (a fraction of a
    /// sample that must not be used), filled with NaN so that a read of
    /// stale scratch would show.
    fn scratch(conv: &Conv2d, chunk: usize, extra: usize) -> Vec<f32> {
        let one = conv.forward_scratch_len(1).unwrap();
        let extra = [0, one.saturating_sub(1), one / 2][extra];
        vec![f32::NAN; chunk * one + extra]
    }

    fn run_case(c: Case, chunk: usize, extra: usize, bias: bool, seed: u64) {
        let conv = c.conv();
        assert_eq!(conv.output_shape(c.n).unwrap(), c.y_shape());
        let x = random_vec(seed, c.x_shape().len().unwrap());
        let w = random_vec(seed ^ 1, conv.weight_len().unwrap());
        let b = random_vec(seed ^ 2, c.cout);
        let b = bias.then_some(&b[..]);
        let dy = random_vec(seed ^ 3, c.y_shape().len().unwrap());
        let mut s = scratch(&conv, chunk, extra);

        let mut y = vec![f32::NAN; dy.len()];
        conv.forward(
            &Portable,
            View::new(c.x_shape(), &x).unwrap(),
            &w,
            b,
            ViewMut::new(c.y_shape(), &mut y).unwrap(),
            &mut s,
        )
        .unwrap();
        let (y_ref, y_mag) = naive_forward(&c, &x, &w, b);
        assert_near(&y, &y_ref, &y_mag);

        // Outputs start as NaN: they must be overwritten, not accumulated.
        let (mut dx, mut dw, mut db) = (
            vec![f32::NAN; x.len()],
            vec![f32::NAN; w.len()],
            vec![f32::NAN; c.cout],
        );
        s.fill(f32::NAN);
        conv.backward(
            &Portable,
            View::new(c.x_shape(), &x).unwrap(),
            &w,
            View::new(c.y_shape(), &dy).unwrap(),
            Some(ViewMut::new(c.x_shape(), &mut dx).unwrap()),
            &mut dw,
            Some(&mut db),
            &mut s,
        )
        .unwrap();
        let [dx_ref, dw_ref, db_ref] = naive_backward(&c, &x, &w, &dy);
        assert_near(&dx, &dx_ref.0, &dx_ref.1);
        assert_near(&dw, &dw_ref.0, &dw_ref.1);
        assert_near(&db, &db_ref.0, &db_ref.1);

        // Without dx and db, dw is the same.
        let mut dw2 = vec![f32::NAN; w.len()];
        conv.backward(
            &Portable,
            View::new(c.x_shape(), &x).unwrap(),
            &w,
            View::new(c.y_shape(), &dy).unwrap(),
            None,
            &mut dw2,
            None,
            &mut s,
        )
        .unwrap();
        assert_eq!(dw, dw2);
    }

    proptest! {
        /// Forward and backward against the f64 reference over random
        /// geometries (asymmetric padding, strides, kernels up to the padded
        /// input) and random chunkings: 1 to 4 samples per product, with or
        /// without a spare partial sample of scratch.
        #[test]
        fn forward_and_backward_match_naive(
            c in case(false), chunk in 1usize..=4, extra in 0usize..3,
            bias in any::<bool>(), seed in any::<u64>(),
        ) {
            run_case(c, chunk, extra, bias, seed);
        }

        /// The 1×1 / stride 1 / unpadded case skips im2col and needs no scratch.
        #[test]
        fn pointwise_matches_naive(c in case(true), bias in any::<bool>(), seed in any::<u64>()) {
            prop_assert_eq!(c.conv().forward_scratch_len(5).unwrap(), 0);
            prop_assert_eq!(c.conv().backward_scratch_len(5).unwrap(), 0);
            run_case(c, 0, 0, bias, seed);
        }
    }

    #[test]
    fn exactly_one_sample_of_scratch() {
        let c = Case {
            n: 3,
            h: 5,
            w: 4,
            cin: 3,
            cout: 2,
            kh: 3,
            kw: 2,
            sh: 1,
            sw: 2,
            pad: [1, 2, 0, 1],
        };
        let conv = c.conv();
        let (oh, ow) = c.out();
        assert_eq!(conv.forward_scratch_len(1).unwrap(), oh * ow * 3 * 2 * 3);
        assert_eq!(
            conv.forward_scratch_len(2).unwrap(),
            2 * oh * ow * 3 * 2 * 3
        );
        assert_eq!(conv.backward_scratch_len(1), conv.forward_scratch_len(1));
        run_case(c, 1, 0, true, 7);
    }

    #[test]
    fn gradients_match_finite_differences() {
        // Stride 2 and asymmetric padding; backward runs one sample per product.
        let c = Case {
            n: 2,
            h: 5,
            w: 6,
            cin: 2,
            cout: 3,
            kh: 3,
            kw: 2,
            sh: 2,
            sw: 2,
            pad: [1, 0, 1, 2],
        };
        let conv = c.conv();
        let x = random_vec(11, c.x_shape().len().unwrap());
        let w = random_vec(12, conv.weight_len().unwrap());
        let b = random_vec(13, c.cout);
        let r = random_vec(14, c.y_shape().len().unwrap()); // L = Σ r·y, so dy = r.
        let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            let mut y = vec![0.0; r.len()];
            let mut s = vec![0.0; conv.forward_scratch_len(c.n).unwrap()];
            conv.forward(
                &Portable,
                View::new(c.x_shape(), x).unwrap(),
                w,
                Some(b),
                ViewMut::new(c.y_shape(), &mut y).unwrap(),
                &mut s,
            )
            .unwrap();
            y.iter().zip(&r).map(|(&a, &c)| a as f64 * c as f64).sum()
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; c.cout]);
        let mut s = vec![0.0; conv.backward_scratch_len(1).unwrap()];
        conv.backward(
            &Portable,
            View::new(c.x_shape(), &x).unwrap(),
            &w,
            View::new(c.y_shape(), &r).unwrap(),
            Some(ViewMut::new(c.x_shape(), &mut dx).unwrap()),
            &mut dw,
            Some(&mut db),
            &mut s,
        )
        .unwrap();
        fd_check(&x, &dx, |x| loss(x, &w, &b));
        fd_check(&w, &dw, |w| loss(&x, w, &b));
        fd_check(&b, &db, |b| loss(&x, &w, b));
    }

    #[test]
    fn output_size_and_taps() {
        // (5 + 1 + 0 - 3) / 2 + 1 = 2, (4 + 2 + 2 - 2) / 3 + 1 = 3
        let win = Window {
            kernel_h: 3,
            kernel_w: 2,
            stride_h: 2,
            stride_w: 3,
            padding: Padding {
                top: 1,
                bottom: 0,
                left: 2,
                right: 2,
            },
        };
        assert_eq!(win.output_hw(5, 4), Ok((2, 3)));
        // Output column 0 covers padded columns 0..2: both in the padding.
        assert_eq!(
            win.taps_w(0, 4),
            Taps {
                lo: 2,
                hi: 2,
                start: 0
            }
        );
        // Output column 1 covers padded 3..5 = input 1..3.
        assert_eq!(
            win.taps_w(1, 4),
            Taps {
                lo: 0,
                hi: 2,
                start: 1
            }
        );
        // Output column 2 covers padded 6..8 = input 4..6: past the input.
        assert_eq!(
            win.taps_w(2, 4),
            Taps {
                lo: 0,
                hi: 0,
                start: 0
            }
        );
        // Output row 0 covers padded rows 0..3 = input -1..2.
        assert_eq!(
            win.taps_h(0, 5),
            Taps {
                lo: 1,
                hi: 3,
                start: 0
            }
        );
    }

    #[test]
    fn window_entirely_in_padding_gives_bias() {
        // 1×1 input, padding 2 everywhere, 1×1 kernel: only the centre reads x.
        let conv = Conv2d::new(1, 1, 1, 1, Window::square(1, 1, 2)).unwrap();
        let mut y = [f32::NAN; 25];
        let mut s = [0.0; 25];
        conv.forward(
            &Portable,
            View::new(Shape::nhwc(1, 1, 1, 1), &[3.0]).unwrap(),
            &[2.0],
            Some(&[0.5]),
            ViewMut::new(Shape::nhwc(1, 5, 5, 1), &mut y).unwrap(),
            &mut s,
        )
        .unwrap();
        for (i, &v) in y.iter().enumerate() {
            assert_eq!(v, if i == 12 { 6.5 } else { 0.5 });
        }
    }

    #[test]
    fn empty_batch_zeroes_gradients() {
        let conv = Conv2d::new(3, 3, 2, 2, Window::square(2, 1, 0)).unwrap();
        let (mut dw, mut db) = ([f32::NAN; 16], [f32::NAN; 2]);
        let mut s = vec![0.0; conv.backward_scratch_len(1).unwrap()];
        conv.backward(
            &Portable,
            View::new(Shape::nhwc(0, 3, 3, 2), &[]).unwrap(),
            &[1.0; 16],
            View::new(Shape::nhwc(0, 2, 2, 2), &[]).unwrap(),
            Some(ViewMut::new(Shape::nhwc(0, 3, 3, 2), &mut []).unwrap()),
            &mut dw,
            Some(&mut db),
            &mut s,
        )
        .unwrap();
        assert_eq!(dw, [0.0; 16]);
        assert_eq!(db, [0.0; 2]);
    }

    #[test]
    fn invalid_geometry_is_an_error() {
        let win = Window::square(3, 1, 0);
        let dim = Error::InvalidParam(Param::Dimension);
        assert_eq!(Conv2d::new(0, 3, 1, 1, win), Err(dim));
        assert_eq!(Conv2d::new(3, 0, 1, 1, win), Err(dim));
        assert_eq!(Conv2d::new(3, 3, 0, 1, win), Err(dim));
        assert_eq!(Conv2d::new(3, 3, 1, 0, win), Err(dim));
        assert_eq!(
            Conv2d::new(3, 3, 1, 1, Window::square(3, 0, 0)),
            Err(Error::InvalidParam(Param::Stride))
        );
        assert_eq!(
            Conv2d::new(2, 3, 1, 1, win),
            Err(Error::InvalidParam(Param::Kernel))
        );
        assert_eq!(
            Conv2d::new(3, 3, 1, 1, Window::square(0, 1, 0)),
            Err(Error::InvalidParam(Param::Kernel))
        );
        assert!(Conv2d::new(2, 3, 1, 1, Window::square(3, 1, 1)).is_ok());
        assert_eq!(
            Conv2d::new(1, 1, usize::MAX, 2, Window::square(1, 1, 0)),
            Err(Error::Overflow)
        );
        assert_eq!(
            Conv2d::new(1, 1, 1, 1, Window::square(1, 1, usize::MAX)),
            Err(Error::Overflow)
        );
        // A hand-built value with a bad field is an error in every method, not a panic.
        let bad = Conv2d {
            in_h: 3,
            in_w: 3,
            in_c: 0,
            out_c: 1,
            window: win,
        };
        assert_eq!(bad.weight_len(), Err(dim));
        assert_eq!(bad.output_shape(1), Err(dim));
        assert_eq!(bad.forward_scratch_len(1), Err(dim));
        let mut y = [9.0f32; 1];
        assert_eq!(
            bad.forward(
                &Portable,
                View::new(Shape::nhwc(1, 3, 3, 0), &[]).unwrap(),
                &[],
                None,
                ViewMut::new(Shape::nhwc(1, 1, 1, 1), &mut y).unwrap(),
                &mut [],
            ),
            Err(dim)
        );
        assert_eq!(y, [9.0]);
    }

    /// Everything a forward call takes, owned, so each test case can break one thing.
    struct Fwd {
        x_shape: Shape,
        x: Vec<f32>,
        w: Vec<f32>,
        b: Vec<f32>,
        y_shape: Shape,
        scratch: usize,
    }

    /// Breaks one argument of an otherwise valid forward call.
    type Breaker = fn(&mut Fwd);

    #[test]
    fn bad_forward_arguments_are_errors_and_write_nothing() {
        // [2,4,4,2] -> 3×3, stride 1, padding 1 -> [2,4,4,3]; patch 18.
        let conv = Conv2d::new(4, 4, 2, 3, Window::square(3, 1, 1)).unwrap();
        let one = conv.forward_scratch_len(1).unwrap();
        assert_eq!(one, 16 * 18);
        let ok = || Fwd {
            x_shape: Shape::nhwc(2, 4, 4, 2),
            x: vec![1.0; 64],
            w: vec![1.0; 54],
            b: vec![1.0; 3],
            y_shape: Shape::nhwc(2, 4, 4, 3),
            scratch: one,
        };
        let cases: [(Breaker, Error); 6] = [
            (
                |f| {
                    f.w.pop();
                },
                Error::LengthMismatch {
                    operand: Operand::Weight,
                    expected: 54,
                    actual: 53,
                },
            ),
            (
                |f| f.b.push(0.0),
                Error::LengthMismatch {
                    operand: Operand::Bias,
                    expected: 3,
                    actual: 4,
                },
            ),
            (
                |f| {
                    f.x_shape = Shape::nhwc(2, 4, 2, 4);
                },
                Error::ShapeMismatch {
                    operand: Operand::Input,
                },
            ),
            (
                |f| f.y_shape = Shape::nhwc(2, 4, 4, 2),
                Error::ShapeMismatch {
                    operand: Operand::Output,
                },
            ),
            (
                |f| f.y_shape = Shape::nhwc(1, 4, 4, 3),
                Error::ShapeMismatch {
                    operand: Operand::Output,
                },
            ),
            (
                |f| f.scratch -= 1,
                Error::BufferTooSmall {
                    operand: Operand::Scratch,
                    needed: 288,
                    actual: 287,
                },
            ),
        ];
        for (break_it, expected) in cases {
            let mut f = ok();
            break_it(&mut f);
            let mut y = vec![9.0f32; f.y_shape.len().unwrap()];
            let mut s = vec![9.0f32; f.scratch];
            let err = conv
                .forward(
                    &Portable,
                    View::new(f.x_shape, &f.x).unwrap(),
                    &f.w,
                    Some(&f.b),
                    ViewMut::new(f.y_shape, &mut y).unwrap(),
                    &mut s,
                )
                .unwrap_err();
            assert_eq!(err, expected);
            assert!(y.iter().chain(&s).all(|&v| v == 9.0));
        }
        // The unbroken call succeeds.
        let f = ok();
        let mut y = vec![9.0f32; 96];
        let mut s = vec![0.0; one];
        conv.forward(
            &Portable,
            View::new(f.x_shape, &f.x).unwrap(),
            &f.w,
            Some(&f.b),
            ViewMut::new(f.y_shape, &mut y).unwrap(),
            &mut s,
        )
        .unwrap();
        // Interior pixels see all 18 taps: 18 + bias 1.
        assert_eq!(y[(4 + 1) * 3], 19.0);
    }

    #[test]
    fn bad_backward_arguments_are_errors_and_write_nothing() {
        let conv = Conv2d::new(4, 4, 2, 3, Window::square(3, 2, 1)).unwrap();
        // [2,4,4,2] -> [2,2,2,3]
        let one = conv.backward_scratch_len(1).unwrap();
        let xs = Shape::nhwc(2, 4, 4, 2);
        let ys = Shape::nhwc(2, 2, 2, 3);
        let x = vec![1.0f32; 64];
        let w = vec![1.0f32; 54];
        let dy = [1.0f32; 24];
        let run = |w_len: usize,
                   dy_shape: Shape,
                   dx_shape: Shape,
                   dw_len: usize,
                   db_len: usize,
                   s_len: usize| {
            let mut dx = vec![9.0f32; dx_shape.len().unwrap()];
            let mut dw = vec![9.0f32; dw_len];
            let mut db = vec![9.0f32; db_len];
            let mut s = vec![9.0f32; s_len];
            let r = conv.backward(
                &Portable,
                View::new(xs, &x).unwrap(),
                &w[..w_len],
                View::new(dy_shape, &dy[..dy_shape.len().unwrap()]).unwrap(),
                Some(ViewMut::new(dx_shape, &mut dx).unwrap()),
                &mut dw,
                Some(&mut db),
                &mut s,
            );
            if r.is_err() {
                assert!(dx.iter().chain(&dw).chain(&db).chain(&s).all(|&v| v == 9.0));
            }
            r
        };
        assert_eq!(run(54, ys, xs, 54, 3, one), Ok(()));
        assert_eq!(
            run(53, ys, xs, 54, 3, one),
            Err(Error::LengthMismatch {
                operand: Operand::Weight,
                expected: 54,
                actual: 53
            })
        );
        assert_eq!(
            run(54, ys, xs, 55, 3, one),
            Err(Error::LengthMismatch {
                operand: Operand::WeightGrad,
                expected: 54,
                actual: 55
            })
        );
        assert_eq!(
            run(54, ys, xs, 54, 2, one),
            Err(Error::LengthMismatch {
                operand: Operand::BiasGrad,
                expected: 3,
                actual: 2
            })
        );
        assert_eq!(
            run(54, Shape::nhwc(2, 2, 3, 2), xs, 54, 3, one),
            Err(Error::ShapeMismatch {
                operand: Operand::OutputGrad
            })
        );
        assert_eq!(
            run(54, ys, Shape::nhwc(1, 4, 4, 2), 54, 3, one),
            Err(Error::ShapeMismatch {
                operand: Operand::InputGrad
            })
        );
        assert_eq!(
            run(54, ys, xs, 54, 3, one - 1),
            Err(Error::BufferTooSmall {
                operand: Operand::Scratch,
                needed: one,
                actual: one - 1
            })
        );
    }
}
