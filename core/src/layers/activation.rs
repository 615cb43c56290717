//! Element-wise nonlinearities.
//!
//! | kind    | `y = f(x)`                 | `f'(x)` written from `y`   |
//! |---------|----------------------------|----------------------------|
//! | ReLU    | `max(0, x)`                | `1 if y > 0 else 0`        |
//! | ReLU6   | `min(max(0, x), 6)`        | `1 if 0 < y < 6 else 0`    |
//! | sigmoid | `1 / (1 + e^-x)`           | `y·(1 - y)`                |
//! | tanh    | `tanh(x)`                  | `1 - y²`                   |
//!
//! Every derivative is a function of the output, so the backward pass needs
//! only `y` and the forward pass may run in place (`x` overwritten by `y`),
//! which halves activation memory on a device that fine-tunes. At the kinks
//! (x = 0, x = 6) the subgradient 0 is used, as PyTorch does.
//!
//! Sigmoid is [`crate::math::sigmoid`] (relative error ≤ 4·2^-24, branch-free and
//! vectorisable: it dominates the paper network's elementwise cost); `tanh`
//! is `libm::tanhf`. Both are plain IEEE f32 arithmetic with no fused
//! operations, so host and device compute identical values.

use crate::error::{check_len, Error, Operand};

/// A pointwise nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// `min(max(0, x), 6)`.
    Relu6,
    /// The logistic function `1 / (1 + e^-x)` (the paper's Sec. 4.1 MLP).
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
}

pub use crate::math::sigmoid;

impl Activation {
    /// `f(x)` for one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => libm::tanhf(x),
        }
    }

    /// `f'(x)` expressed through `y = f(x)`.
    #[inline]
    pub fn derivative_from_output(self, y: f32) -> f32 {
        match self {
            Activation::Relu => {
                if y > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Relu6 => {
                if y > 0.0 && y < 6.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::Sigmoid => y * (1.0 - y),
            Activation::Tanh => 1.0 - y * y,
        }
    }

    /// `y = f(x)` element-wise; any shape, equal lengths.
    pub fn forward(self, x: &[f32], y: &mut [f32]) -> Result<(), Error> {
        check_len(Operand::Output, x.len(), y.len())?;
        // One loop per kind (the match hoisted) so that each vectorises.
        fn map(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32) {
            for (o, &i) in y.iter_mut().zip(x) {
                *o = f(i);
            }
        }
        match self {
            Activation::Relu => map(x, y, |v| Activation::Relu.apply(v)),
            Activation::Relu6 => map(x, y, |v| Activation::Relu6.apply(v)),
            Activation::Sigmoid => map(x, y, sigmoid),
            Activation::Tanh => map(x, y, libm::tanhf),
        }
        Ok(())
    }

    /// `x ← f(x)` element-wise.
    pub fn forward_in_place(self, x: &mut [f32]) {
        fn map(x: &mut [f32], f: impl Fn(f32) -> f32) {
            for v in x {
                *v = f(*v);
            }
        }
        match self {
            Activation::Relu => map(x, |v| Activation::Relu.apply(v)),
            Activation::Relu6 => map(x, |v| Activation::Relu6.apply(v)),
            Activation::Sigmoid => map(x, sigmoid),
            Activation::Tanh => map(x, libm::tanhf),
        }
    }

    /// `dx = dy · f'(x)`, computed from the forward output `y`.
    pub fn backward(self, y: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<(), Error> {
        check_len(Operand::OutputGrad, y.len(), dy.len())?;
        check_len(Operand::InputGrad, y.len(), dx.len())?;
        fn map(y: &[f32], dy: &[f32], dx: &mut [f32], f: impl Fn(f32) -> f32) {
            for ((g, &o), &d) in dx.iter_mut().zip(y).zip(dy) {
                *g = d * f(o);
            }
        }
        match self {
            Activation::Relu => map(y, dy, dx, |o| Activation::Relu.derivative_from_output(o)),
            Activation::Relu6 => map(y, dy, dx, |o| Activation::Relu6.derivative_from_output(o)),
            Activation::Sigmoid => map(y, dy, dx, |o| o * (1.0 - o)),
            Activation::Tanh => map(y, dy, dx, |o| 1.0 - o * o),
        }
        Ok(())
    }

    /// `dy ← dy · f'(x)` in place, from the forward output `y`.
    pub fn backward_in_place(self, y: &[f32], dy: &mut [f32]) -> Result<(), Error> {
        check_len(Operand::OutputGrad, y.len(), dy.len())?;
        for (d, &o) in dy.iter_mut().zip(y) {
            *d *= self.derivative_from_output(o);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fd_check, random_vec};
    use proptest::prelude::*;

    const ALL: [Activation; 4] = [
        Activation::Relu,
        Activation::Relu6,
        Activation::Sigmoid,
        Activation::Tanh,
    ];

    fn reference(a: Activation, x: f64) -> f64 {
        match a {
            Activation::Relu => x.max(0.0),
            Activation::Relu6 => x.clamp(0.0, 6.0),
            Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Activation::Tanh => x.tanh(),
        }
    }

    proptest! {
        #[test]
        fn forward_matches_f64_reference(x in -100.0f32..100.0) {
            for a in ALL {
                let r = reference(a, x as f64);
                let y = a.apply(x) as f64;
                // math::sigmoid's bound (4·2^-24) with margin, plus an absolute floor for the
                // outputs that underflow to 0.
                prop_assert!((y - r).abs() <= 1e-30 + 3e-7 * r.abs(), "{a:?}({x}) = {y}, want {r}");
            }
        }
    }

    #[test]
    fn sigmoid_is_finite_at_extremes() {
        assert_eq!(sigmoid(-1000.0), 0.0);
        assert_eq!(sigmoid(1000.0), 1.0);
        assert_eq!(sigmoid(0.0), 0.5);
    }

    #[test]
    fn gradients_match_finite_differences() {
        // Scaled inputs span the interesting range of every function; points
        // within FD_STEP of a kink (0 or 6) are moved away so that the
        // central difference does not straddle it.
        let mut x: Vec<f32> = random_vec(11, 40).iter().map(|v| v * 8.0).collect();
        for v in &mut x {
            for kink in [0.0f32, 6.0] {
                if (*v - kink).abs() < 0.05 {
                    *v = kink + 0.1;
                }
            }
        }
        let r = random_vec(12, 40);
        for a in ALL {
            let mut y = vec![0.0; x.len()];
            a.forward(&x, &mut y).unwrap();
            let mut dx = vec![0.0; x.len()];
            a.backward(&y, &r, &mut dx).unwrap();
            fd_check(&x, &dx, |x| {
                x.iter()
                    .zip(&r)
                    .map(|(&v, &c)| a.apply(v) as f64 * c as f64)
                    .sum()
            });
            // The in-place forms agree with the out-of-place ones.
            let mut yi = x.clone();
            a.forward_in_place(&mut yi);
            assert_eq!(yi, y);
            let mut di = r.clone();
            a.backward_in_place(&y, &mut di).unwrap();
            assert_eq!(di, dx);
        }
    }

    #[test]
    fn length_mismatch_is_an_error() {
        let mut y = [0.0f32; 2];
        assert!(Activation::Relu.forward(&[1.0; 3], &mut y).is_err());
        let mut dx = [0.0f32; 3];
        assert!(Activation::Relu
            .backward(&[1.0; 3], &[1.0; 2], &mut dx)
            .is_err());
    }
}
