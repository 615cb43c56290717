//! Depthwise 2-d convolution (NHWC, channel multiplier 1): each channel is
//! convolved with its own `KH × KW` kernel, channels never mix.
//!
//! # Math
//! Input `x` is `[N, H, W, C]`, taps `w` are `[KH, KW, C]` (channel last, so
//! one tap's weights for all channels are contiguous, like one input pixel),
//! bias `b` is `[C]`, stride `(sh, sw)`, zero padding `(pt, pb, pl, pr)`. The
//! output `y` is `[N, OH, OW, C]` with
//! ```text
//! OH = ⌊(H + pt + pb - KH) / sh⌋ + 1        OW = ⌊(W + pl + pr - KW) / sw⌋ + 1
//! y[n,oh,ow,c] = b[c] + Σ_{kh,kw} w[kh,kw,c] · x[n, oh·sh + kh - pt, ow·sw + kw - pl, c]
//! ```
//! where `x` reads as zero outside `[0, H) × [0, W)` (zero padding).
//!
//! Backward, with `dy = ∂L/∂y` of shape `[N, OH, OW, C]`:
//! ```text
//! ∂L/∂w[kh,kw,c]   = Σ_{n,oh,ow} dy[n,oh,ow,c] · x[n, oh·sh + kh - pt, ow·sw + kw - pl, c]
//! ∂L/∂b[c]         = Σ_{n,oh,ow} dy[n,oh,ow,c]
//! ∂L/∂x[n,ih,iw,c] = Σ_{oh,ow,kh,kw : oh·sh+kh-pt = ih, ow·sw+kw-pl = iw} dy[n,oh,ow,c] · w[kh,kw,c]
//! ```
//! (taps in the padding contribute nothing).
//!
//! The kernels are direct loops (no lowering, no scratch): per output pixel
//! and in-bounds tap, one multiply-add over `C` contiguous channels. A
//! depthwise conv has `KH·KW` multiply-adds per output, too few for an
//! im2col product to pay for its copy.

use super::conv::{mul, Window};
use crate::error::{check_len, Error, Operand, Param};
use crate::tensor::{Shape, View, ViewMut};

/// Geometry of a depthwise convolution: input `[N, in_h, in_w, C]`, taps
/// `[kernel_h, kernel_w, C]`, bias `[C]`, output `[N, out_h, out_w, C]`.
///
/// The fields are public plain data; every method re-validates them, so a
/// value built by hand with bad fields yields an `Err`, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DepthwiseConv2d {
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Channels (in = out).
    pub channels: usize,
    /// Kernel, stride and padding.
    pub window: Window,
}

/// Sizes derived from a validated [`DepthwiseConv2d`], all overflow-checked.
#[derive(Debug, Clone, Copy)]
struct Geom {
    out_h: usize,
    out_w: usize,
    /// `H·W·C`.
    in_sample: usize,
    /// `OH·OW·C`.
    out_sample: usize,
    /// `KH·KW·C`.
    weight: usize,
}

impl DepthwiseConv2d {
    /// A depthwise convolution over `in_h × in_w × channels` inputs.
    ///
    /// Errors: a zero dimension (`Param::Dimension`), a zero stride
    /// (`Param::Stride`), a zero kernel or one larger than the padded input
    /// (`Param::Kernel`), sizes that overflow `usize` (`Error::Overflow`).
    pub fn new(in_h: usize, in_w: usize, channels: usize, window: Window) -> Result<Self, Error> {
        let dw = DepthwiseConv2d {
            in_h,
            in_w,
            channels,
            window,
        };
        dw.geom()?;
        Ok(dw)
    }

    fn geom(&self) -> Result<Geom, Error> {
        if self.in_h == 0 || self.in_w == 0 || self.channels == 0 {
            return Err(Error::InvalidParam(Param::Dimension));
        }
        let (out_h, out_w) = self.window.output_hw(self.in_h, self.in_w)?;
        let c = self.channels;
        Ok(Geom {
            out_h,
            out_w,
            in_sample: mul(mul(self.in_h, self.in_w)?, c)?,
            out_sample: mul(mul(out_h, out_w)?, c)?,
            weight: mul(mul(self.window.kernel_h, self.window.kernel_w)?, c)?,
        })
    }

    /// The input shape for a batch of `n` samples, `[n, in_h, in_w, C]`.
    pub fn input_shape(&self, n: usize) -> Shape {
        Shape::nhwc(n, self.in_h, self.in_w, self.channels)
    }

    /// `[n, out_h, out_w, C]`.
    pub fn output_shape(&self, n: usize) -> Result<Shape, Error> {
        let g = self.geom()?;
        Ok(Shape::nhwc(n, g.out_h, g.out_w, self.channels))
    }

    /// `kernel_h · kernel_w · C`.
    pub fn weight_len(&self) -> Result<usize, Error> {
        Ok(self.geom()?.weight)
    }

    fn check_input(&self, x: Shape) -> Result<(), Error> {
        if x != self.input_shape(x.n) {
            return Err(Error::ShapeMismatch {
                operand: Operand::Input,
            });
        }
        Ok(())
    }

    /// Call `f(output pixel index within the sample, input pixel index
    /// within the sample, tap index)` for every in-bounds tap of every output
    /// pixel of one sample, output pixels in NHWC order.
    fn for_each_tap(&self, g: &Geom, mut f: impl FnMut(usize, usize, usize)) {
        let kw = self.window.kernel_w;
        for oh in 0..g.out_h {
            let th = self.window.taps_h(oh, self.in_h);
            for ow in 0..g.out_w {
                let tw = self.window.taps_w(ow, self.in_w);
                let out = oh * g.out_w + ow;
                for (kh, ih) in th.iter() {
                    for (kw_i, iw) in tw.iter() {
                        f(out, ih * self.in_w + iw, kh * kw + kw_i);
                    }
                }
            }
        }
    }

    /// Forward: `y = depthwise_conv(x, w) + b`.
    ///
    /// Shapes: `x` `[N, in_h, in_w, C]`, `w` `[kernel_h, kernel_w, C]`, `b`
    /// `[C]` or `None`, `y` `[N, out_h, out_w, C]` (overwritten). Everything
    /// is validated first: an `Err` leaves `y` untouched.
    pub fn forward(
        &self,
        x: View<'_>,
        w: &[f32],
        b: Option<&[f32]>,
        mut y: ViewMut<'_>,
    ) -> Result<(), Error> {
        let g = self.geom()?;
        let xs = x.shape();
        self.check_input(xs)?;
        check_len(Operand::Weight, g.weight, w.len())?;
        if let Some(b) = b {
            check_len(Operand::Bias, self.channels, b.len())?;
        }
        if y.shape() != self.output_shape(xs.n)? {
            return Err(Error::ShapeMismatch {
                operand: Operand::Output,
            });
        }
        let c = self.channels;
        let samples = x.data().chunks_exact(g.in_sample);
        for (image, out) in samples.zip(y.data_mut().chunks_exact_mut(g.out_sample)) {
            match b {
                Some(b) => out.chunks_exact_mut(c).for_each(|p| p.copy_from_slice(b)),
                None => out.fill(0.0),
            }
            // Indices come from the validated geometry: pixels and taps are
            // in range, so every slice below is in bounds.
            self.for_each_tap(&g, |o, i, t| {
                let yp = &mut out[o * c..][..c];
                let xp = &image[i * c..][..c];
                let wp = &w[t * c..][..c];
                for ((v, &xv), &wv) in yp.iter_mut().zip(xp).zip(wp) {
                    *v += xv * wv;
                }
            });
        }
        Ok(())
    }

    /// Backward: writes `dw = ∂L/∂w`, `db = ∂L/∂b` (if given) and
    /// `dx = ∂L/∂x` (if given). Gradients are overwritten, not accumulated.
    ///
    /// Shapes: `x` `[N, in_h, in_w, C]` (the forward input), `w` and `dw`
    /// `[kernel_h, kernel_w, C]`, `dy` `[N, out_h, out_w, C]`, `dx` like
    /// `x`, `db` `[C]`. Everything is validated first: an `Err` leaves every
    /// output untouched.
    pub fn backward(
        &self,
        x: View<'_>,
        w: &[f32],
        dy: View<'_>,
        dx: Option<ViewMut<'_>>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        let g = self.geom()?;
        let xs = x.shape();
        self.check_input(xs)?;
        check_len(Operand::Weight, g.weight, w.len())?;
        check_len(Operand::WeightGrad, g.weight, dw.len())?;
        if let Some(db) = &db {
            check_len(Operand::BiasGrad, self.channels, db.len())?;
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
        let c = self.channels;
        if let Some(db) = db {
            db.fill(0.0);
            for pixel in dy.data().chunks_exact(c) {
                for (acc, &d) in db.iter_mut().zip(pixel) {
                    *acc += d;
                }
            }
        }
        dw.fill(0.0);
        let mut dx = dx.map(ViewMut::into_data);
        if let Some(dx) = dx.as_deref_mut() {
            dx.fill(0.0);
        }
        let samples = x.data().chunks_exact(g.in_sample);
        for (s, (image, grad)) in samples
            .zip(dy.data().chunks_exact(g.out_sample))
            .enumerate()
        {
            let mut dx_image = dx
                .as_deref_mut()
                .map(|dx| &mut dx[s * g.in_sample..][..g.in_sample]);
            self.for_each_tap(&g, |o, i, t| {
                let dyp = &grad[o * c..][..c];
                let xp = &image[i * c..][..c];
                for ((acc, &d), &xv) in dw[t * c..][..c].iter_mut().zip(dyp).zip(xp) {
                    *acc += d * xv;
                }
                if let Some(dx_image) = dx_image.as_deref_mut() {
                    let wp = &w[t * c..][..c];
                    for ((acc, &d), &wv) in dx_image[i * c..][..c].iter_mut().zip(dyp).zip(wp) {
                        *acc += d * wv;
                    }
                }
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::conv::Padding;
    use crate::testutil::{fd_check, random_vec};
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    /// `|got - ref| <= 1e-5·(1 + Σ|terms|)`: f32 sums of up to ~400 products
    /// against the f64 reference, scaled by the terms (see conv's tests).
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

    #[derive(Debug, Clone, Copy)]
    struct Case {
        n: usize,
        h: usize,
        w: usize,
        c: usize,
        kh: usize,
        kw: usize,
        sh: usize,
        sw: usize,
        /// top, bottom, left, right
        pad: [usize; 4],
    }

    impl Case {
        fn layer(&self) -> DepthwiseConv2d {
            let window = Window {
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
            };
            DepthwiseConv2d::new(self.h, self.w, self.c, window).unwrap()
        }
        fn out(&self) -> (usize, usize) {
            (
                (self.h + self.pad[0] + self.pad[1] - self.kh) / self.sh + 1,
                (self.w + self.pad[2] + self.pad[3] - self.kw) / self.sw + 1,
            )
        }
        fn x_shape(&self) -> Shape {
            Shape::nhwc(self.n, self.h, self.w, self.c)
        }
        fn y_shape(&self) -> Shape {
            let (oh, ow) = self.out();
            Shape::nhwc(self.n, oh, ow, self.c)
        }
        /// `(x index, w index, y index)` of every real multiply, channel 0.
        fn taps(&self) -> Vec<(usize, usize, usize)> {
            let (oh, ow) = self.out();
            let mut t = Vec::new();
            for n in 0..self.n {
                for y in 0..oh {
                    for x in 0..ow {
                        for ky in 0..self.kh {
                            for kx in 0..self.kw {
                                let iy = (y * self.sh + ky) as isize - self.pad[0] as isize;
                                let ix = (x * self.sw + kx) as isize - self.pad[2] as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= self.h as isize
                                    || ix >= self.w as isize
                                {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                t.push((
                                    ((n * self.h + iy) * self.w + ix) * self.c,
                                    (ky * self.kw + kx) * self.c,
                                    ((n * oh + y) * ow + x) * self.c,
                                ));
                            }
                        }
                    }
                }
            }
            t
        }
    }

    fn case() -> impl Strategy<Value = Case> {
        let dims = (1usize..=3, 1usize..=7, 1usize..=7, 1usize..=4);
        let win = (
            1usize..=4,
            1usize..=4,
            1usize..=3,
            1usize..=3,
            [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        );
        (dims, win).prop_map(|((n, h, w, c), (kh, kw, sh, sw, pad))| Case {
            n,
            h,
            w,
            c,
            kh: kh.min(h + pad[0] + pad[1]),
            kw: kw.min(w + pad[2] + pad[3]),
            sh,
            sw,
            pad,
        })
    }

    fn naive_forward(c: &Case, x: &[f32], w: &[f32], b: Option<&[f32]>) -> (Vec<f64>, Vec<f64>) {
        let len = c.y_shape().len().unwrap();
        let (mut y, mut mag) = (vec![0.0f64; len], vec![0.0f64; len]);
        if let Some(b) = b {
            for i in 0..len {
                y[i] = b[i % c.c] as f64;
                mag[i] = y[i].abs();
            }
        }
        for (xi, wi, yi) in c.taps() {
            for ch in 0..c.c {
                let t = x[xi + ch] as f64 * w[wi + ch] as f64;
                y[yi + ch] += t;
                mag[yi + ch] += t.abs();
            }
        }
        (y, mag)
    }

    /// `[dx, dw, db]`, each `(value, Σ|terms|)`.
    fn naive_backward(c: &Case, x: &[f32], w: &[f32], dy: &[f32]) -> [(Vec<f64>, Vec<f64>); 3] {
        let zeros = |n: usize| (vec![0.0f64; n], vec![0.0f64; n]);
        let (mut dx, mut dw, mut db) = (zeros(x.len()), zeros(w.len()), zeros(c.c));
        for (i, &d) in dy.iter().enumerate() {
            db.0[i % c.c] += d as f64;
            db.1[i % c.c] += (d as f64).abs();
        }
        for (xi, wi, yi) in c.taps() {
            for ch in 0..c.c {
                let d = dy[yi + ch] as f64;
                let tw = d * x[xi + ch] as f64;
                dw.0[wi + ch] += tw;
                dw.1[wi + ch] += tw.abs();
                let tx = d * w[wi + ch] as f64;
                dx.0[xi + ch] += tx;
                dx.1[xi + ch] += tx.abs();
            }
        }
        [dx, dw, db]
    }

    proptest! {
        /// Forward and backward against the f64 reference over random
        /// geometries, asymmetric padding included.
        #[test]
        fn forward_and_backward_match_naive(c in case(), bias in any::<bool>(), seed in any::<u64>()) {
            let layer = c.layer();
            prop_assert_eq!(layer.output_shape(c.n).unwrap(), c.y_shape());
            let x = random_vec(seed, c.x_shape().len().unwrap());
            let w = random_vec(seed ^ 1, layer.weight_len().unwrap());
            let b = random_vec(seed ^ 2, c.c);
            let b = bias.then_some(&b[..]);
            let dy = random_vec(seed ^ 3, c.y_shape().len().unwrap());

            let mut y = vec![f32::NAN; dy.len()];
            layer.forward(View::new(c.x_shape(), &x).unwrap(), &w, b,
                          ViewMut::new(c.y_shape(), &mut y).unwrap()).unwrap();
            let (y_ref, y_mag) = naive_forward(&c, &x, &w, b);
            assert_near(&y, &y_ref, &y_mag);

            let (mut dx, mut dw, mut db) =
                (vec![f32::NAN; x.len()], vec![f32::NAN; w.len()], vec![f32::NAN; c.c]);
            layer.backward(View::new(c.x_shape(), &x).unwrap(), &w,
                           View::new(c.y_shape(), &dy).unwrap(),
                           Some(ViewMut::new(c.x_shape(), &mut dx).unwrap()),
                           &mut dw, Some(&mut db)).unwrap();
            let [dx_ref, dw_ref, db_ref] = naive_backward(&c, &x, &w, &dy);
            assert_near(&dx, &dx_ref.0, &dx_ref.1);
            assert_near(&dw, &dw_ref.0, &dw_ref.1);
            assert_near(&db, &db_ref.0, &db_ref.1);

            let mut dw2 = vec![f32::NAN; w.len()];
            layer.backward(View::new(c.x_shape(), &x).unwrap(), &w,
                           View::new(c.y_shape(), &dy).unwrap(), None, &mut dw2, None).unwrap();
            prop_assert_eq!(dw, dw2);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let c = Case {
            n: 2,
            h: 5,
            w: 6,
            c: 3,
            kh: 3,
            kw: 2,
            sh: 2,
            sw: 1,
            pad: [1, 2, 0, 1],
        };
        let layer = c.layer();
        let x = random_vec(21, c.x_shape().len().unwrap());
        let w = random_vec(22, layer.weight_len().unwrap());
        let b = random_vec(23, c.c);
        let r = random_vec(24, c.y_shape().len().unwrap()); // L = Σ r·y, so dy = r.
        let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            let mut y = vec![0.0; r.len()];
            layer
                .forward(
                    View::new(c.x_shape(), x).unwrap(),
                    w,
                    Some(b),
                    ViewMut::new(c.y_shape(), &mut y).unwrap(),
                )
                .unwrap();
            y.iter().zip(&r).map(|(&a, &c)| a as f64 * c as f64).sum()
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; w.len()], vec![0.0; c.c]);
        layer
            .backward(
                View::new(c.x_shape(), &x).unwrap(),
                &w,
                View::new(c.y_shape(), &r).unwrap(),
                Some(ViewMut::new(c.x_shape(), &mut dx).unwrap()),
                &mut dw,
                Some(&mut db),
            )
            .unwrap();
        fd_check(&x, &dx, |x| loss(x, &w, &b));
        fd_check(&w, &dw, |w| loss(&x, w, &b));
        fd_check(&b, &db, |b| loss(&x, &w, b));
    }

    #[test]
    fn invalid_geometry_is_an_error() {
        let win = Window::square(3, 1, 0);
        let dim = Error::InvalidParam(Param::Dimension);
        assert_eq!(DepthwiseConv2d::new(0, 3, 1, win), Err(dim));
        assert_eq!(DepthwiseConv2d::new(3, 0, 1, win), Err(dim));
        assert_eq!(DepthwiseConv2d::new(3, 3, 0, win), Err(dim));
        assert_eq!(
            DepthwiseConv2d::new(3, 3, 1, Window::square(3, 0, 0)),
            Err(Error::InvalidParam(Param::Stride))
        );
        assert_eq!(
            DepthwiseConv2d::new(3, 2, 1, win),
            Err(Error::InvalidParam(Param::Kernel))
        );
        assert_eq!(
            DepthwiseConv2d::new(1, 1, usize::MAX, Window::square(2, 1, 1)),
            Err(Error::Overflow)
        );
        let bad = DepthwiseConv2d {
            in_h: 3,
            in_w: 3,
            channels: 1,
            window: Window::square(3, 0, 0),
        };
        assert_eq!(bad.weight_len(), Err(Error::InvalidParam(Param::Stride)));
        let mut y = [9.0f32];
        assert!(bad
            .forward(
                View::new(Shape::nhwc(1, 3, 3, 1), &[0.0; 9]).unwrap(),
                &[0.0; 9],
                None,
                ViewMut::new(Shape::nhwc(1, 1, 1, 1), &mut y).unwrap(),
            )
            .is_err());
        assert_eq!(y, [9.0]);
    }

    #[test]
    fn bad_arguments_are_errors_and_write_nothing() {
        // [2,4,4,2], 3×3 stride 2 padding 1 -> [2,2,2,2]; 18 taps.
        let layer = DepthwiseConv2d::new(4, 4, 2, Window::square(3, 2, 1)).unwrap();
        let xs = Shape::nhwc(2, 4, 4, 2);
        let ys = Shape::nhwc(2, 2, 2, 2);
        let x = vec![1.0f32; 64];
        let w = [1.0f32; 19];
        let fwd = |xs: Shape, w_len: usize, b_len: usize, ys: Shape| {
            let mut y = vec![9.0f32; ys.len().unwrap()];
            let r = layer.forward(
                View::new(xs, &x[..xs.len().unwrap()]).unwrap(),
                &w[..w_len],
                Some(&w[..b_len]),
                ViewMut::new(ys, &mut y).unwrap(),
            );
            if r.is_err() {
                assert!(y.iter().all(|&v| v == 9.0));
            }
            r
        };
        assert_eq!(fwd(xs, 18, 2, ys), Ok(()));
        assert_eq!(
            fwd(xs, 19, 2, ys),
            Err(Error::LengthMismatch {
                operand: Operand::Weight,
                expected: 18,
                actual: 19
            })
        );
        assert_eq!(
            fwd(xs, 18, 3, ys),
            Err(Error::LengthMismatch {
                operand: Operand::Bias,
                expected: 2,
                actual: 3
            })
        );
        assert_eq!(
            fwd(Shape::nhwc(2, 4, 2, 4), 18, 2, ys),
            Err(Error::ShapeMismatch {
                operand: Operand::Input
            })
        );
        assert_eq!(
            fwd(xs, 18, 2, Shape::nhwc(2, 2, 1, 2)),
            Err(Error::ShapeMismatch {
                operand: Operand::Output
            })
        );

        let dy = [1.0f32; 16];
        let bwd = |dy_shape: Shape, dx_shape: Shape, dw_len: usize, db_len: usize| {
            let mut dx = vec![9.0f32; dx_shape.len().unwrap()];
            let mut dw = vec![9.0f32; dw_len];
            let mut db = vec![9.0f32; db_len];
            let r = layer.backward(
                View::new(xs, &x).unwrap(),
                &w[..18],
                View::new(dy_shape, &dy[..dy_shape.len().unwrap()]).unwrap(),
                Some(ViewMut::new(dx_shape, &mut dx).unwrap()),
                &mut dw,
                Some(&mut db),
            );
            if r.is_err() {
                assert!(dx.iter().chain(&dw).chain(&db).all(|&v| v == 9.0));
            }
            r
        };
        assert_eq!(bwd(ys, xs, 18, 2), Ok(()));
        assert_eq!(
            bwd(ys, xs, 17, 2),
            Err(Error::LengthMismatch {
                operand: Operand::WeightGrad,
                expected: 18,
                actual: 17
            })
        );
        assert_eq!(
            bwd(ys, xs, 18, 1),
            Err(Error::LengthMismatch {
                operand: Operand::BiasGrad,
                expected: 2,
                actual: 1
            })
        );
        assert_eq!(
            bwd(Shape::nhwc(1, 2, 2, 2), xs, 18, 2),
            Err(Error::ShapeMismatch {
                operand: Operand::OutputGrad
            })
        );
        assert_eq!(
            bwd(ys, Shape::nhwc(2, 4, 4, 1), 18, 2),
            Err(Error::ShapeMismatch {
                operand: Operand::InputGrad
            })
        );
    }
}
