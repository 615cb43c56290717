//! Dense (fully connected) layer: `y = x·Wᵀ + b`.
//!
//! Shapes: `x` is `[N, in]` (any NHWC tensor whose sample has `in` elements:
//! flattening is free in NHWC), `W` is `[out, in]` row-major (one row per
//! output feature, the layout BN folding scales row-wise), `b` is `[out]`,
//! `y` is `[N, 1, 1, out]`.
//!
//! Backward, with `dy = ∂L/∂y` of shape `[N, out]`:
//! - `∂L/∂W = dyᵀ·x`     `[out, in]`
//! - `∂L/∂b = Σ_n dy[n]` `[out]`
//! - `∂L/∂x = dy·W`      `[N, in]`
//!
//! When BN follows (paper Sec. 3.2, "x = BN(Wu)"), the layer has no bias: BN's
//! beta takes its place. Pass `None` for the bias then.

use crate::error::{check_len, Error, Operand, Param};
use crate::gemm::{Gemm, MatMut, MatRef};
use crate::tensor::{Shape, View, ViewMut};

/// Geometry of a dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Dense {
    /// Input features per sample.
    pub inputs: usize,
    /// Output features per sample.
    pub outputs: usize,
}

impl Dense {
    /// A dense layer `inputs → outputs`; both must be at least 1.
    pub fn new(inputs: usize, outputs: usize) -> Result<Self, Error> {
        if inputs == 0 || outputs == 0 {
            return Err(Error::InvalidParam(Param::Dimension));
        }
        Ok(Dense { inputs, outputs })
    }

    /// Elements of `W`: `outputs·inputs`.
    pub fn weight_len(&self) -> Result<usize, Error> {
        self.outputs.checked_mul(self.inputs).ok_or(Error::Overflow)
    }

    /// Output shape for an input batch of `n` samples.
    pub fn output_shape(&self, n: usize) -> Shape {
        Shape::features(n, self.outputs)
    }

    fn check_input(&self, x: &Shape) -> Result<(), Error> {
        if x.sample_len()? != self.inputs {
            return Err(Error::ShapeMismatch {
                operand: Operand::Input,
            });
        }
        Ok(())
    }

    fn check_params(
        &self,
        w: usize,
        b: Option<usize>,
        wop: Operand,
        bop: Operand,
    ) -> Result<(), Error> {
        check_len(wop, self.weight_len()?, w)?;
        if let Some(b) = b {
            check_len(bop, self.outputs, b)?;
        }
        Ok(())
    }

    /// Forward: `y = x·Wᵀ + b` for every sample of the batch.
    pub fn forward<G: Gemm + ?Sized>(
        &self,
        gemm: &G,
        x: View<'_>,
        w: &[f32],
        b: Option<&[f32]>,
        mut y: ViewMut<'_>,
    ) -> Result<(), Error> {
        let xs = x.shape();
        self.check_input(&xs)?;
        self.check_params(w.len(), b.map(<[f32]>::len), Operand::Weight, Operand::Bias)?;
        if y.shape() != self.output_shape(xs.n) {
            return Err(Error::ShapeMismatch {
                operand: Operand::Output,
            });
        }
        let n = xs.n;
        let xm = MatRef::row_major(x.data(), n, self.inputs)?;
        let wt = MatRef::row_major(w, self.outputs, self.inputs)?.t();
        let ym = MatMut::row_major(y.data_mut(), n, self.outputs)?;
        gemm.gemm(xm, wt, ym, false)?;
        if let Some(b) = b {
            for row in y.data_mut().chunks_exact_mut(self.outputs) {
                for (v, &bias) in row.iter_mut().zip(b) {
                    *v += bias;
                }
            }
        }
        Ok(())
    }

    /// Backward: writes `dw = dyᵀ·x`, `db = Σ_n dy` (if given) and
    /// `dx = dy·W` (if given; the first layer of a network skips it).
    /// Gradients are overwritten, not accumulated.
    pub fn backward<G: Gemm + ?Sized>(
        &self,
        gemm: &G,
        x: View<'_>,
        w: &[f32],
        dy: View<'_>,
        dx: Option<ViewMut<'_>>,
        dw: &mut [f32],
        db: Option<&mut [f32]>,
    ) -> Result<(), Error> {
        let xs = x.shape();
        self.check_input(&xs)?;
        self.check_params(w.len(), None, Operand::Weight, Operand::Bias)?;
        self.check_params(
            dw.len(),
            db.as_ref().map(|d| d.len()),
            Operand::WeightGrad,
            Operand::BiasGrad,
        )?;
        if dy.shape() != self.output_shape(xs.n) {
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
        let n = xs.n;
        let dym = MatRef::row_major(dy.data(), n, self.outputs)?;
        let xm = MatRef::row_major(x.data(), n, self.inputs)?;
        gemm.gemm(
            dym.t(),
            xm,
            MatMut::row_major(dw, self.outputs, self.inputs)?,
            false,
        )?;
        if let Some(db) = db {
            db.fill(0.0);
            for row in dy.data().chunks_exact(self.outputs) {
                for (g, &d) in db.iter_mut().zip(row) {
                    *g += d;
                }
            }
        }
        if let Some(mut dx) = dx {
            let wm = MatRef::row_major(w, self.outputs, self.inputs)?;
            gemm.gemm(
                dym,
                wm,
                MatMut::row_major(dx.data_mut(), n, self.inputs)?,
                false,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::Portable;
    use crate::testutil::{assert_close, fd_check, random_vec};
    use proptest::prelude::*;

    fn naive_forward(d: &Dense, n: usize, x: &[f32], w: &[f32], b: Option<&[f32]>) -> Vec<f32> {
        let mut y = vec![0.0; n * d.outputs];
        for s in 0..n {
            for o in 0..d.outputs {
                let mut acc = b.map_or(0.0, |b| b[o] as f64);
                for i in 0..d.inputs {
                    acc += x[s * d.inputs + i] as f64 * w[o * d.inputs + i] as f64;
                }
                y[s * d.outputs + o] = acc as f32;
            }
        }
        y
    }

    proptest! {
        #[test]
        fn forward_matches_naive(n in 1usize..5, i in 1usize..9, o in 1usize..9,
                                 bias in any::<bool>(), seed in any::<u64>()) {
            let d = Dense::new(i, o).unwrap();
            let x = random_vec(seed, n * i);
            let w = random_vec(seed ^ 1, o * i);
            let b = random_vec(seed ^ 2, o);
            let b = bias.then_some(&b[..]);
            let mut y = vec![0.0; n * o];
            d.forward(&Portable, View::new(Shape::features(n, i), &x).unwrap(), &w, b,
                      ViewMut::new(Shape::features(n, o), &mut y).unwrap()).unwrap();
            assert_close(&y, &naive_forward(&d, n, &x, &w, b), 1e-5, 1e-5);
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (n, i, o) = (3, 5, 4);
        let d = Dense::new(i, o).unwrap();
        let x = random_vec(1, n * i);
        let w = random_vec(2, o * i);
        let b = random_vec(3, o);
        let r = random_vec(4, n * o); // L = Σ r·y, so dy = r.
        let loss = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
            let y = naive_forward(&d, n, x, w, Some(b));
            y.iter().zip(&r).map(|(&a, &c)| a as f64 * c as f64).sum()
        };
        let (mut dx, mut dw, mut db) = (vec![0.0; n * i], vec![0.0; o * i], vec![0.0; o]);
        d.backward(
            &Portable,
            View::new(Shape::features(n, i), &x).unwrap(),
            &w,
            View::new(Shape::features(n, o), &r).unwrap(),
            Some(ViewMut::new(Shape::features(n, i), &mut dx).unwrap()),
            &mut dw,
            Some(&mut db),
        )
        .unwrap();
        fd_check(&x, &dx, |x| loss(x, &w, &b));
        fd_check(&w, &dw, |w| loss(&x, w, &b));
        fd_check(&b, &db, |b| loss(&x, &w, b));
    }

    #[test]
    fn bad_shapes_are_errors_and_write_nothing() {
        let d = Dense::new(3, 2).unwrap();
        let x = [1.0f32; 6];
        let w = [1.0f32; 5]; // should be 6
        let mut y = [9.0f32; 4];
        let err = d
            .forward(
                &Portable,
                View::new(Shape::features(2, 3), &x).unwrap(),
                &w,
                None,
                ViewMut::new(Shape::features(2, 2), &mut y).unwrap(),
            )
            .unwrap_err();
        assert_eq!(
            err,
            Error::LengthMismatch {
                operand: Operand::Weight,
                expected: 6,
                actual: 5
            }
        );
        assert_eq!(y, [9.0; 4]);
        let w = [1.0f32; 6];
        let err = d
            .forward(
                &Portable,
                View::new(Shape::features(3, 2), &x).unwrap(),
                &w,
                None,
                ViewMut::new(Shape::features(2, 2), &mut y).unwrap(),
            )
            .unwrap_err();
        assert_eq!(
            err,
            Error::ShapeMismatch {
                operand: Operand::Input
            }
        );
        assert_eq!(Dense::new(0, 1), Err(Error::InvalidParam(Param::Dimension)));
    }
}
