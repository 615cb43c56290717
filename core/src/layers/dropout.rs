//! Inverted dropout (Srivastava et al., 2014), the form PyTorch uses.
//!
//! Training: each element is kept with probability `1 - p` and scaled by
//! `1 / (1 - p)`, so the expected activation is unchanged and inference is
//! the identity. `mask[i]` records 1 (kept) or 0 (dropped) for the backward
//! pass: `dx = dy · mask / (1 - p)`.
//!
//! The random state is the caller's [`Rng`], so a seed reproduces the masks
//! on any target. The paper (Sec. 3.4) notes that BN reduces the need for
//! dropout; it is here for the networks that still want it.

use crate::error::{check_len, Error, Operand, Param};
use crate::rng::Rng;

/// Dropout with drop probability `rate` in `[0, 1)`.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Dropout {
    rate: f32,
}

impl Dropout {
    /// Dropout dropping each element with probability `rate`, `0 <= rate < 1`.
    pub fn new(rate: f32) -> Result<Self, Error> {
        if !(0.0..1.0).contains(&rate) {
            return Err(Error::InvalidParam(Param::DropoutRate));
        }
        Ok(Dropout { rate })
    }

    /// The drop probability.
    pub fn rate(&self) -> f32 {
        self.rate
    }

    /// Training forward: `y = x · mask / (1 - p)`, drawing `mask` from `rng`.
    /// `x`, `y` and `mask` have equal lengths (any shape).
    pub fn forward_train(
        &self,
        x: &[f32],
        y: &mut [f32],
        mask: &mut [u8],
        rng: &mut Rng,
    ) -> Result<(), Error> {
        check_len(Operand::Output, x.len(), y.len())?;
        check_len(Operand::Mask, x.len(), mask.len())?;
        let scale = 1.0 / (1.0 - self.rate);
        for ((o, m), &i) in y.iter_mut().zip(mask.iter_mut()).zip(x) {
            let keep = rng.next_f32() >= self.rate;
            *m = u8::from(keep);
            *o = if keep { i * scale } else { 0.0 };
        }
        Ok(())
    }

    /// Backward: `dx = dy · mask / (1 - p)`.
    pub fn backward(&self, dy: &[f32], mask: &[u8], dx: &mut [f32]) -> Result<(), Error> {
        check_len(Operand::Mask, dy.len(), mask.len())?;
        check_len(Operand::InputGrad, dy.len(), dx.len())?;
        let scale = 1.0 / (1.0 - self.rate);
        for ((g, &d), &m) in dx.iter_mut().zip(dy).zip(mask) {
            *g = if m != 0 { d * scale } else { 0.0 };
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_expected_fraction_and_scales() {
        let d = Dropout::new(0.3).unwrap();
        let n = 100_000;
        let x = vec![1.0f32; n];
        let mut y = vec![0.0f32; n];
        let mut mask = vec![0u8; n];
        let mut rng = Rng::new(5);
        d.forward_train(&x, &mut y, &mut mask, &mut rng).unwrap();
        let kept = mask.iter().filter(|&&m| m == 1).count() as f64 / n as f64;
        assert!((kept - 0.7).abs() < 0.01, "kept fraction {kept}");
        let mean = y.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.015, "mean {mean}");
        for (&v, &m) in y.iter().zip(&mask) {
            assert_eq!(v, if m == 1 { 1.0 / 0.7 } else { 0.0 });
        }
        // Backward is exactly the same linear map (dropout is linear in x).
        let mut dx = vec![0.0f32; n];
        d.backward(&x, &mask, &mut dx).unwrap();
        assert_eq!(dx, y);
    }

    #[test]
    fn seeded_masks_repeat_and_rate_is_validated() {
        let d = Dropout::new(0.5).unwrap();
        let x = [1.0f32; 64];
        let (mut y1, mut y2) = ([0.0f32; 64], [0.0f32; 64]);
        let (mut m1, mut m2) = ([0u8; 64], [0u8; 64]);
        d.forward_train(&x, &mut y1, &mut m1, &mut Rng::new(9))
            .unwrap();
        d.forward_train(&x, &mut y2, &mut m2, &mut Rng::new(9))
            .unwrap();
        assert_eq!(m1, m2);
        assert_eq!(
            Dropout::new(1.0),
            Err(Error::InvalidParam(Param::DropoutRate))
        );
        assert_eq!(
            Dropout::new(-0.1),
            Err(Error::InvalidParam(Param::DropoutRate))
        );
        assert_eq!(
            Dropout::new(f32::NAN),
            Err(Error::InvalidParam(Param::DropoutRate))
        );
        assert!(Dropout::new(0.0).is_ok());
        let mut short = [0u8; 3];
        assert!(d
            .forward_train(&x, &mut y1, &mut short, &mut Rng::new(1))
            .is_err());
    }
}
