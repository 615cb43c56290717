//! Max, average and global average pooling (NHWC).
//!
//! # Math
//! Input `x` is `[N, H, W, C]`, output `y` is `[N, OH, OW, C]`, each channel
//! pooled on its own over the window of output pixel `(oh, ow)`,
//! ```text
//! OH = ⌊(H + pt + pb - KH) / sh⌋ + 1        OW = ⌊(W + pl + pr - KW) / sw⌋ + 1
//! R(oh,ow) = { (ih, iw) : ih = oh·sh + kh - pt, iw = ow·sw + kw - pl,
//!              0 <= kh < KH, 0 <= kw < KW, 0 <= ih < H, 0 <= iw < W }
//! max:      y[n,oh,ow,c] = max_{(ih,iw) ∈ R} x[n,ih,iw,c]
//! average:  y[n,oh,ow,c] = (1/|R|) Σ_{(ih,iw) ∈ R} x[n,ih,iw,c]
//! ```
//! **Padding is ignored, not zero**: the window only ranges over in-bounds
//! elements `R`, so max never sees a padded 0 and the average divides by the
//! count of in-bounds elements `|R|`, not by `KH·KW` (PyTorch's
//! `count_include_pad=False`, TensorFlow's "SAME" pooling). A window lying
//! entirely in the padding (possible only when a padding is at least the
//! kernel) has `R = ∅`: its output is 0 and it passes no gradient.
//!
//! Backward, with `dy = ∂L/∂y` and windows that may overlap (stride < kernel),
//! so contributions are scatter-added:
//! ```text
//! max:      ∂L/∂x[n,ih,iw,c] = Σ_{(oh,ow) : (ih,iw) = argmax_R x[n,·,·,c]} dy[n,oh,ow,c]
//! average:  ∂L/∂x[n,ih,iw,c] = Σ_{(oh,ow) : (ih,iw) ∈ R(oh,ow)} dy[n,oh,ow,c] / |R(oh,ow)|
//! ```
//! The max backward recomputes the argmax from `x` (no index buffer is kept)
//! scanning the window row by row, `kh` then `kw`; on ties the first maximum
//! in that order wins and takes the whole gradient. The forward pass uses the
//! same scan and comparison (`>`), so `y` is exactly `x` at that argmax.
//!
//! Global average pooling is `y[n,0,0,c] = (1/(H·W)) Σ_{h,w} x[n,h,w,c]`,
//! `[N, H, W, C] -> [N, 1, 1, C]`, with `∂L/∂x[n,h,w,c] = dy[n,0,0,c] / (H·W)`.

use super::conv::{mul, Taps, Window};
use crate::error::{Error, Operand, Param};
use crate::tensor::{Shape, View, ViewMut};

/// Channels handled together by the max-pool backward pass (stack arrays).
const MAX_BLOCK: usize = 32;

/// Which reduction a [`Pool2d`] applies over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PoolKind {
    /// Maximum over the in-bounds window elements.
    Max,
    /// Mean over the in-bounds window elements.
    Average,
}

/// Geometry of a 2-d pooling layer: `[N, in_h, in_w, C] -> [N, out_h, out_w, C]`.
///
/// The fields are public plain data; every method re-validates them, so a
/// value built by hand with bad fields yields an `Err`, never a panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Pool2d {
    /// Max or average.
    pub kind: PoolKind,
    /// Input height.
    pub in_h: usize,
    /// Input width.
    pub in_w: usize,
    /// Channels.
    pub channels: usize,
    /// Kernel, stride and padding.
    pub window: Window,
}

/// Sizes derived from a validated [`Pool2d`], all overflow-checked.
#[derive(Debug, Clone, Copy)]
struct Geom {
    out_h: usize,
    out_w: usize,
    /// `H·W·C`.
    in_sample: usize,
    /// `OH·OW·C`.
    out_sample: usize,
}

impl Pool2d {
    /// A pooling layer over `in_h × in_w × channels` inputs.
    ///
    /// Errors: a zero dimension (`Param::Dimension`), a zero stride
    /// (`Param::Stride`), a zero kernel or one larger than the padded input
    /// (`Param::Kernel`), sizes that overflow `usize` (`Error::Overflow`).
    pub fn new(
        kind: PoolKind,
        in_h: usize,
        in_w: usize,
        channels: usize,
        window: Window,
    ) -> Result<Self, Error> {
        let pool = Pool2d {
            kind,
            in_h,
            in_w,
            channels,
            window,
        };
        pool.geom()?;
        Ok(pool)
    }

    fn geom(&self) -> Result<Geom, Error> {
        if self.in_h == 0 || self.in_w == 0 || self.channels == 0 {
            return Err(Error::InvalidParam(Param::Dimension));
        }
        let (out_h, out_w) = self.window.output_hw(self.in_h, self.in_w)?;
        Ok(Geom {
            out_h,
            out_w,
            in_sample: mul(mul(self.in_h, self.in_w)?, self.channels)?,
            out_sample: mul(mul(out_h, out_w)?, self.channels)?,
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

    /// Validate `x` and the other tensor (`y` or `dy`, shape `[N, OH, OW, C]`,
    /// named `other`) and, if given, `dx` (shape of `x`).
    fn check(&self, x: Shape, other: Shape, op: Operand, dx: Option<Shape>) -> Result<Geom, Error> {
        let g = self.geom()?;
        if x != self.input_shape(x.n) {
            return Err(Error::ShapeMismatch {
                operand: Operand::Input,
            });
        }
        if other != self.output_shape(x.n)? {
            return Err(Error::ShapeMismatch { operand: op });
        }
        if dx.is_some_and(|dx| dx != x) {
            return Err(Error::ShapeMismatch {
                operand: Operand::InputGrad,
            });
        }
        Ok(g)
    }

    /// Call `f(output pixel, rows, columns)` for every output pixel of one
    /// sample in NHWC order, with the in-bounds taps of its window.
    fn for_each_window(&self, g: &Geom, mut f: impl FnMut(usize, Taps, Taps)) {
        for oh in 0..g.out_h {
            let th = self.window.taps_h(oh, self.in_h);
            for ow in 0..g.out_w {
                f(oh * g.out_w + ow, th, self.window.taps_w(ow, self.in_w));
            }
        }
    }

    /// Forward: `y = pool(x)`.
    ///
    /// Shapes: `x` `[N, in_h, in_w, C]`, `y` `[N, out_h, out_w, C]`
    /// (overwritten). Everything is validated first: an `Err` leaves `y`
    /// untouched.
    pub fn forward(&self, x: View<'_>, mut y: ViewMut<'_>) -> Result<(), Error> {
        let g = self.check(x.shape(), y.shape(), Operand::Output, None)?;
        let c = self.channels;
        let w = self.in_w;
        let samples = x.data().chunks_exact(g.in_sample);
        for (image, out) in samples.zip(y.data_mut().chunks_exact_mut(g.out_sample)) {
            // Indices come from the validated geometry: every slice is in bounds.
            self.for_each_window(&g, |o, th, tw| {
                let yp = &mut out[o * c..][..c];
                yp.fill(0.0);
                let count = th.len() * tw.len();
                if count == 0 {
                    return;
                }
                let mut first = true;
                for (_, ih) in th.iter() {
                    for (_, iw) in tw.iter() {
                        let xp = &image[(ih * w + iw) * c..][..c];
                        match self.kind {
                            PoolKind::Max if first => yp.copy_from_slice(xp),
                            PoolKind::Max => {
                                for (v, &xv) in yp.iter_mut().zip(xp) {
                                    if xv > *v {
                                        *v = xv;
                                    }
                                }
                            }
                            PoolKind::Average => {
                                for (v, &xv) in yp.iter_mut().zip(xp) {
                                    *v += xv;
                                }
                            }
                        }
                        first = false;
                    }
                }
                if self.kind == PoolKind::Average {
                    let scale = 1.0 / count as f32;
                    yp.iter_mut().for_each(|v| *v *= scale);
                }
            });
        }
        Ok(())
    }

    /// Backward: writes `dx = ∂L/∂x` (overwritten).
    ///
    /// Shapes: `x` `[N, in_h, in_w, C]` (the forward input; max pooling
    /// recomputes its argmax from it, average pooling only checks its
    /// shape), `dy` `[N, out_h, out_w, C]`, `dx` like `x`. Everything is
    /// validated first: an `Err` leaves `dx` untouched.
    pub fn backward(&self, x: View<'_>, dy: View<'_>, mut dx: ViewMut<'_>) -> Result<(), Error> {
        let g = self.check(x.shape(), dy.shape(), Operand::OutputGrad, Some(dx.shape()))?;
        let c = self.channels;
        let w = self.in_w;
        dx.data_mut().fill(0.0);
        let samples = x.data().chunks_exact(g.in_sample);
        let grads = dy.data().chunks_exact(g.out_sample);
        for ((image, grad), dimage) in samples
            .zip(grads)
            .zip(dx.data_mut().chunks_exact_mut(g.in_sample))
        {
            self.for_each_window(&g, |o, th, tw| {
                let dyp = &grad[o * c..][..c];
                let count = th.len() * tw.len();
                if count == 0 {
                    return;
                }
                match self.kind {
                    PoolKind::Max => {
                        // Channels in blocks on the stack, so that every pass
                        // over a tap walks memory contiguously: the running
                        // maximum and the flat index of the first tap that
                        // reached it (ties keep the earlier tap, as in forward).
                        let mut c0 = 0;
                        while c0 < c {
                            let cb = (c - c0).min(MAX_BLOCK);
                            let mut best = [f32::NEG_INFINITY; MAX_BLOCK];
                            let mut arg = [usize::MAX; MAX_BLOCK];
                            for (_, ih) in th.iter() {
                                for (_, iw) in tw.iter() {
                                    let base = (ih * w + iw) * c + c0;
                                    let xp = &image[base..base + cb];
                                    for (k, (&v, (b, a))) in xp
                                        .iter()
                                        .zip(best.iter_mut().zip(arg.iter_mut()))
                                        .enumerate()
                                    {
                                        // `usize::MAX` marks "no tap yet": the first
                                        // tap always wins, even a NaN or -inf.
                                        if *a == usize::MAX || v > *b {
                                            *b = v;
                                            *a = base + k;
                                        }
                                    }
                                }
                            }
                            for (&a, &d) in arg[..cb].iter().zip(&dyp[c0..c0 + cb]) {
                                if let Some(g) = dimage.get_mut(a) {
                                    *g += d;
                                }
                            }
                            c0 += cb;
                        }
                    }
                    PoolKind::Average => {
                        let scale = 1.0 / count as f32;
                        for (_, ih) in th.iter() {
                            for (_, iw) in tw.iter() {
                                let dxp = &mut dimage[(ih * w + iw) * c..][..c];
                                for (acc, &d) in dxp.iter_mut().zip(dyp) {
                                    *acc += d * scale;
                                }
                            }
                        }
                    }
                }
            });
        }
        Ok(())
    }
}

/// Validate a global pooling pair: `big` `[N, H, W, C]` with `H, W, C >= 1`
/// and `small` `[N, 1, 1, C]`; returns `(H·W, C)`.
fn check_global(big: Shape, small: Shape, small_op: Operand) -> Result<(usize, usize), Error> {
    if big.h == 0 || big.w == 0 || big.c == 0 {
        return Err(Error::InvalidParam(Param::Dimension));
    }
    if small != Shape::nhwc(big.n, 1, 1, big.c) {
        return Err(Error::ShapeMismatch { operand: small_op });
    }
    Ok((mul(big.h, big.w)?, big.c))
}

/// Global average pooling: `[N, H, W, C] -> [N, 1, 1, C]`, the mean over H·W.
///
/// Shapes: `x` `[N, H, W, C]` with `H, W, C >= 1` (else
/// `Param::Dimension`), `y` `[N, 1, 1, C]` (overwritten). An `Err` leaves
/// `y` untouched.
pub fn global_avg_pool_forward(x: View<'_>, mut y: ViewMut<'_>) -> Result<(), Error> {
    let (hw, c) = check_global(x.shape(), y.shape(), Operand::Output)?;
    let scale = 1.0 / hw as f32;
    // hw·c is the validated sample length of x, so it neither overflows nor is 0.
    for (image, out) in x
        .data()
        .chunks_exact(hw * c)
        .zip(y.data_mut().chunks_exact_mut(c))
    {
        out.fill(0.0);
        for pixel in image.chunks_exact(c) {
            for (acc, &v) in out.iter_mut().zip(pixel) {
                *acc += v;
            }
        }
        out.iter_mut().for_each(|v| *v *= scale);
    }
    Ok(())
}

/// Backward of global average pooling: `dx[n,h,w,c] = dy[n,c] / (H·W)`.
///
/// Shapes: `dy` `[N, 1, 1, C]`, `dx` `[N, H, W, C]` with `H, W, C >= 1`
/// (overwritten; its shape gives `H` and `W`). An `Err` leaves `dx`
/// untouched.
pub fn global_avg_pool_backward(dy: View<'_>, mut dx: ViewMut<'_>) -> Result<(), Error> {
    let (hw, c) = check_global(dx.shape(), dy.shape(), Operand::OutputGrad)?;
    let scale = 1.0 / hw as f32;
    for (grad, image) in dy
        .data()
        .chunks_exact(c)
        .zip(dx.data_mut().chunks_exact_mut(hw * c))
    {
        for pixel in image.chunks_exact_mut(c) {
            for (v, &d) in pixel.iter_mut().zip(grad) {
                *v = d * scale;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::conv::Padding;
    use crate::rng::Rng;
    use crate::testutil::{assert_close, fd_check, random_vec};
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

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
        fn layer(&self, kind: PoolKind) -> Pool2d {
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
            Pool2d::new(kind, self.h, self.w, self.c, window).unwrap()
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
        /// For every output element (NHWC order), the x indices of its
        /// in-bounds window elements in (kh, kw) order.
        fn windows(&self) -> Vec<Vec<usize>> {
            let (oh, ow) = self.out();
            let mut all = Vec::new();
            for n in 0..self.n {
                for y in 0..oh {
                    for x in 0..ow {
                        for ch in 0..self.c {
                            let mut win = Vec::new();
                            for ky in 0..self.kh {
                                for kx in 0..self.kw {
                                    let iy = (y * self.sh + ky) as isize - self.pad[0] as isize;
                                    let ix = (x * self.sw + kx) as isize - self.pad[2] as isize;
                                    if (0..self.h as isize).contains(&iy)
                                        && (0..self.w as isize).contains(&ix)
                                    {
                                        let (iy, ix) = (iy as usize, ix as usize);
                                        win.push(((n * self.h + iy) * self.w + ix) * self.c + ch);
                                    }
                                }
                            }
                            all.push(win);
                        }
                    }
                }
            }
            all
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

    /// f64 reference: `(y, dx)` for `kind`, straight from the definitions
    /// (empty window: 0 and no gradient; max: first maximum wins).
    fn naive(c: &Case, kind: PoolKind, x: &[f32], dy: &[f32]) -> (Vec<f64>, Vec<f64>) {
        let mut y = Vec::new();
        let mut dx = vec![0.0f64; x.len()];
        for (win, &d) in c.windows().iter().zip(dy) {
            if win.is_empty() {
                y.push(0.0);
                continue;
            }
            match kind {
                PoolKind::Max => {
                    let mut best = win[0];
                    for &i in win {
                        if x[i] > x[best] {
                            best = i;
                        }
                    }
                    y.push(x[best] as f64);
                    dx[best] += d as f64;
                }
                PoolKind::Average => {
                    let k = win.len() as f64;
                    y.push(win.iter().map(|&i| x[i] as f64).sum::<f64>() / k);
                    for &i in win {
                        dx[i] += d as f64 / k;
                    }
                }
            }
        }
        (y, dx)
    }

    fn to_f32(v: &[f64]) -> Vec<f32> {
        v.iter().map(|&v| v as f32).collect()
    }

    fn run(c: &Case, kind: PoolKind, x: &[f32], dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let layer = c.layer(kind);
        let mut y = vec![f32::NAN; dy.len()];
        layer
            .forward(
                View::new(c.x_shape(), x).unwrap(),
                ViewMut::new(c.y_shape(), &mut y).unwrap(),
            )
            .unwrap();
        let mut dx = vec![f32::NAN; x.len()];
        layer
            .backward(
                View::new(c.x_shape(), x).unwrap(),
                View::new(c.y_shape(), dy).unwrap(),
                ViewMut::new(c.x_shape(), &mut dx).unwrap(),
            )
            .unwrap();
        (y, dx)
    }

    proptest! {
        /// Max and average pooling, forward and backward, against the f64
        /// reference over random geometries (overlapping windows, asymmetric
        /// padding, windows entirely in the padding). Max forward is exact;
        /// sums of inputs and gradients: `|a - b| <= 1e-5 + 1e-5·|ref|`
        /// (values in [-1, 1], at most 16 window elements and 16 overlapping
        /// windows per input).
        #[test]
        fn pooling_matches_naive(c in case(), seed in any::<u64>()) {
            prop_assert_eq!(c.layer(PoolKind::Max).output_shape(c.n).unwrap(), c.y_shape());
            let x = random_vec(seed, c.x_shape().len().unwrap());
            let dy = random_vec(seed ^ 1, c.y_shape().len().unwrap());
            for kind in [PoolKind::Max, PoolKind::Average] {
                let (y, dx) = run(&c, kind, &x, &dy);
                let (y_ref, dx_ref) = naive(&c, kind, &x, &dy);
                if kind == PoolKind::Max {
                    prop_assert_eq!(&y, &to_f32(&y_ref));
                } else {
                    assert_close(&y, &to_f32(&y_ref), 1e-5, 1e-5);
                }
                assert_close(&dx, &to_f32(&dx_ref), 1e-5, 1e-5);
            }
        }

        /// Global average pooling against the f64 mean; `|a - b| <= 1e-5 +
        /// 1e-5·|ref|` (at most 49 values in [-1, 1] per mean).
        #[test]
        fn global_avg_pool_matches_naive(
            n in 0usize..=3, h in 1usize..=7, w in 1usize..=7, c in 1usize..=4, seed in any::<u64>(),
        ) {
            let xs = Shape::nhwc(n, h, w, c);
            let ys = Shape::nhwc(n, 1, 1, c);
            let x = random_vec(seed, xs.len().unwrap());
            let dy = random_vec(seed ^ 1, ys.len().unwrap());
            let mut y = vec![f32::NAN; dy.len()];
            global_avg_pool_forward(View::new(xs, &x).unwrap(), ViewMut::new(ys, &mut y).unwrap()).unwrap();
            let mut dx = vec![f32::NAN; x.len()];
            global_avg_pool_backward(View::new(ys, &dy).unwrap(), ViewMut::new(xs, &mut dx).unwrap()).unwrap();
            let hw = (h * w) as f64;
            let mut y_ref = vec![0.0f64; dy.len()];
            let mut dx_ref = vec![0.0f64; x.len()];
            for i in 0..x.len() {
                let (s, ch) = (i / (h * w * c), i % c);
                y_ref[s * c + ch] += x[i] as f64 / hw;
                dx_ref[i] = dy[s * c + ch] as f64 / hw;
            }
            assert_close(&y, &to_f32(&y_ref), 1e-5, 1e-5);
            assert_close(&dx, &to_f32(&dx_ref), 1e-5, 1e-5);
        }
    }

    /// L = Σ r·pool(x), the loss of the finite-difference checks.
    fn pool_loss(c: &Case, kind: PoolKind, x: &[f32], r: &[f32]) -> f64 {
        let mut y = vec![0.0; r.len()];
        c.layer(kind)
            .forward(
                View::new(c.x_shape(), x).unwrap(),
                ViewMut::new(c.y_shape(), &mut y).unwrap(),
            )
            .unwrap();
        y.iter().zip(r).map(|(&a, &b)| a as f64 * b as f64).sum()
    }

    #[test]
    fn average_pool_gradient_matches_finite_differences() {
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
        let x = random_vec(31, c.x_shape().len().unwrap());
        let r = random_vec(32, c.y_shape().len().unwrap());
        let (_, dx) = run(&c, PoolKind::Average, &x, &r);
        fd_check(&x, &dx, |x| pool_loss(&c, PoolKind::Average, x, &r));
    }

    #[test]
    fn max_pool_gradient_matches_finite_differences() {
        // Overlapping windows (stride 1 < kernel 3) with padding. The inputs
        // are distinct multiples of 0.05 in random order, so no two differ by
        // less than the 2·FD_STEP = 0.02 a central difference can move them:
        // every argmax is stable under the perturbation.
        let c = Case {
            n: 2,
            h: 4,
            w: 5,
            c: 2,
            kh: 3,
            kw: 3,
            sh: 1,
            sw: 2,
            pad: [1, 1, 0, 2],
        };
        let len = c.x_shape().len().unwrap();
        let mut x: Vec<f32> = (0..len).map(|i| i as f32 * 0.05 - 2.0).collect();
        Rng::new(41).shuffle(&mut x);
        let r = random_vec(42, c.y_shape().len().unwrap());
        let (_, dx) = run(&c, PoolKind::Max, &x, &r);
        fd_check(&x, &dx, |x| pool_loss(&c, PoolKind::Max, x, &r));
    }

    #[test]
    fn global_avg_pool_gradient_matches_finite_differences() {
        let (xs, ys) = (Shape::nhwc(2, 3, 4, 3), Shape::nhwc(2, 1, 1, 3));
        let x = random_vec(51, xs.len().unwrap());
        let r = random_vec(52, ys.len().unwrap());
        let mut dx = vec![0.0; x.len()];
        global_avg_pool_backward(
            View::new(ys, &r).unwrap(),
            ViewMut::new(xs, &mut dx).unwrap(),
        )
        .unwrap();
        fd_check(&x, &dx, |x| {
            let mut y = vec![0.0; r.len()];
            global_avg_pool_forward(View::new(xs, x).unwrap(), ViewMut::new(ys, &mut y).unwrap())
                .unwrap();
            y.iter().zip(&r).map(|(&a, &b)| a as f64 * b as f64).sum()
        });
    }

    #[test]
    fn padding_is_ignored_and_ties_go_to_the_first() {
        // 2×2 input, 2×2 window, stride 1, padding 1: a 3×3 output whose
        // corner windows hold a single element.
        let c = Case {
            n: 1,
            h: 2,
            w: 2,
            c: 1,
            kh: 2,
            kw: 2,
            sh: 1,
            sw: 1,
            pad: [1, 1, 1, 1],
        };
        let x = [-1.0, -2.0, -3.0, -4.0];
        let dy = [1.0; 9];
        let (y, _) = run(&c, PoolKind::Max, &x, &dy);
        // A padded zero would win every max here; it must not.
        assert_eq!(y, [-1.0, -1.0, -2.0, -1.0, -1.0, -2.0, -3.0, -3.0, -4.0]);
        let (y, dx) = run(&c, PoolKind::Average, &x, &dy);
        assert_eq!(y, [-1.0, -1.5, -2.0, -2.0, -2.5, -3.0, -3.0, -3.5, -4.0]);
        // Each input lies in four windows of 1, 2, 2 and 4 elements.
        assert_eq!(dx, [2.25; 4]);
        // Ties: all equal, so the first element of each window takes the gradient.
        let (y, dx) = run(&c, PoolKind::Max, &[5.0; 4], &dy);
        assert_eq!(y, [5.0; 9]);
        // Windows start at input 0 (rows 0-1, cols 0-1 of the output),
        // input 1 (col 2), input 2 (row 2) and input 3 (the last).
        assert_eq!(dx, [4.0, 2.0, 2.0, 1.0]);
    }

    #[test]
    fn windows_entirely_in_padding_give_zero() {
        // 1×1 input, 1×1 window, padding 1: only the centre output sees x.
        let c = Case {
            n: 1,
            h: 1,
            w: 1,
            c: 2,
            kh: 1,
            kw: 1,
            sh: 1,
            sw: 1,
            pad: [1, 1, 1, 1],
        };
        for kind in [PoolKind::Max, PoolKind::Average] {
            let (y, dx) = run(&c, kind, &[-3.0, 4.0], &[1.0; 18]);
            let mut expect = [0.0; 18];
            expect[8] = -3.0;
            expect[9] = 4.0;
            assert_eq!(y, expect);
            assert_eq!(dx, [1.0, 1.0]);
        }
    }

    #[test]
    fn invalid_geometry_is_an_error() {
        let win = Window::square(2, 2, 0);
        let dim = Error::InvalidParam(Param::Dimension);
        assert_eq!(Pool2d::new(PoolKind::Max, 0, 2, 1, win), Err(dim));
        assert_eq!(Pool2d::new(PoolKind::Max, 2, 0, 1, win), Err(dim));
        assert_eq!(Pool2d::new(PoolKind::Max, 2, 2, 0, win), Err(dim));
        assert_eq!(
            Pool2d::new(PoolKind::Average, 2, 2, 1, Window::square(2, 0, 0)),
            Err(Error::InvalidParam(Param::Stride))
        );
        assert_eq!(
            Pool2d::new(PoolKind::Average, 1, 2, 1, win),
            Err(Error::InvalidParam(Param::Kernel))
        );
        let bad = Pool2d {
            kind: PoolKind::Max,
            in_h: 0,
            in_w: 2,
            channels: 1,
            window: win,
        };
        assert_eq!(bad.output_shape(1), Err(dim));
        let mut y = [9.0f32];
        assert_eq!(
            bad.forward(
                View::new(Shape::nhwc(1, 0, 2, 1), &[]).unwrap(),
                ViewMut::new(Shape::nhwc(1, 1, 1, 1), &mut y).unwrap()
            ),
            Err(dim)
        );
        assert_eq!(y, [9.0]);
    }

    #[test]
    fn bad_shapes_are_errors_and_write_nothing() {
        let pool = Pool2d::new(PoolKind::Max, 4, 4, 2, Window::square(2, 2, 0)).unwrap();
        let xs = Shape::nhwc(2, 4, 4, 2);
        let ys = Shape::nhwc(2, 2, 2, 2);
        let x = vec![1.0f32; 64];
        let fwd = |xs: Shape, ys: Shape| {
            let mut y = vec![9.0f32; ys.len().unwrap()];
            let r = pool.forward(
                View::new(xs, &x[..xs.len().unwrap()]).unwrap(),
                ViewMut::new(ys, &mut y).unwrap(),
            );
            if r.is_err() {
                assert!(y.iter().all(|&v| v == 9.0));
            }
            r
        };
        assert_eq!(fwd(xs, ys), Ok(()));
        let input = Err(Error::ShapeMismatch {
            operand: Operand::Input,
        });
        assert_eq!(fwd(Shape::nhwc(2, 4, 2, 4), ys), input);
        assert_eq!(
            fwd(xs, Shape::nhwc(2, 2, 2, 1)),
            Err(Error::ShapeMismatch {
                operand: Operand::Output
            })
        );
        let bwd = |xs: Shape, dys: Shape, dxs: Shape| {
            let dy = vec![1.0f32; dys.len().unwrap()];
            let mut dx = vec![9.0f32; dxs.len().unwrap()];
            let r = pool.backward(
                View::new(xs, &x[..xs.len().unwrap()]).unwrap(),
                View::new(dys, &dy).unwrap(),
                ViewMut::new(dxs, &mut dx).unwrap(),
            );
            if r.is_err() {
                assert!(dx.iter().all(|&v| v == 9.0));
            }
            r
        };
        assert_eq!(bwd(xs, ys, xs), Ok(()));
        assert_eq!(bwd(Shape::nhwc(2, 4, 2, 4), ys, xs), input);
        assert_eq!(
            bwd(xs, Shape::nhwc(1, 2, 2, 2), xs),
            Err(Error::ShapeMismatch {
                operand: Operand::OutputGrad
            })
        );
        assert_eq!(
            bwd(xs, ys, Shape::nhwc(2, 4, 4, 1)),
            Err(Error::ShapeMismatch {
                operand: Operand::InputGrad
            })
        );

        // Global pooling.
        let mut y = [9.0f32; 4];
        assert_eq!(
            global_avg_pool_forward(
                View::new(xs, &x).unwrap(),
                ViewMut::new(Shape::nhwc(1, 1, 2, 2), &mut y).unwrap()
            ),
            Err(Error::ShapeMismatch {
                operand: Operand::Output
            })
        );
        assert_eq!(
            global_avg_pool_forward(
                View::new(Shape::nhwc(2, 0, 4, 2), &[]).unwrap(),
                ViewMut::new(Shape::nhwc(2, 1, 1, 2), &mut y).unwrap()
            ),
            Err(Error::InvalidParam(Param::Dimension))
        );
        assert_eq!(y, [9.0; 4]);
        let mut dx = vec![9.0f32; 64];
        assert_eq!(
            global_avg_pool_backward(
                View::new(Shape::nhwc(2, 1, 1, 1), &[1.0; 2]).unwrap(),
                ViewMut::new(xs, &mut dx).unwrap()
            ),
            Err(Error::ShapeMismatch {
                operand: Operand::OutputGrad
            })
        );
        assert!(dx.iter().all(|&v| v == 9.0));
    }
}
