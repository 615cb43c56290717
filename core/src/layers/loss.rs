//! Softmax and softmax cross-entropy, numerically stable.
//!
//! For logits `z` of one sample over `K` classes:
//! - `softmax(z)_k = e^(z_k - M) / Σ_j e^(z_j - M)` with `M = max_j z_j`, so the
//!   largest exponent is `e^0 = 1` and nothing overflows;
//! - `log softmax(z)_k = z_k - M - ln Σ_j e^(z_j - M)` (log-sum-exp);
//! - loss `L = (1/N) Σ_n -log softmax(z_n)_{label_n}`, the batch mean;
//! - `∂L/∂z_n = (softmax(z_n) - onehot(label_n)) / N`.
//!
//! Logits are `[N, K]` row-major, labels are `[N]` class indices below `K`.

use crate::error::{check_len, Error, Operand, Param};

fn check_logits(n_classes: usize, logits: usize, out: usize) -> Result<usize, Error> {
    if n_classes == 0 {
        return Err(Error::InvalidParam(Param::Dimension));
    }
    if logits % n_classes != 0 {
        return Err(Error::ShapeMismatch {
            operand: Operand::Input,
        });
    }
    check_len(Operand::Probabilities, logits, out)?;
    Ok(logits / n_classes)
}

/// Softmax of one row; returns `ln Σ_j e^(z_j - M)` and `M`.
fn softmax_row(z: &[f32], p: &mut [f32]) -> (f32, f32) {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for (pk, &zk) in p.iter_mut().zip(z) {
        *pk = libm::expf(zk - m);
        sum += *pk;
    }
    let inv = 1.0 / sum;
    for pk in p.iter_mut() {
        *pk *= inv;
    }
    (libm::logf(sum), m)
}

/// Row-wise softmax of `[N, K]` logits into `probs` (same length).
pub fn softmax(logits: &[f32], n_classes: usize, probs: &mut [f32]) -> Result<(), Error> {
    check_logits(n_classes, logits.len(), probs.len())?;
    for (z, p) in logits
        .chunks_exact(n_classes)
        .zip(probs.chunks_exact_mut(n_classes))
    {
        softmax_row(z, p);
    }
    Ok(())
}

/// Softmax cross-entropy forward: writes `probs = softmax(logits)` and
/// returns the mean loss over the batch. Every label is checked first.
pub fn softmax_cross_entropy(
    logits: &[f32],
    labels: &[u16],
    n_classes: usize,
    probs: &mut [f32],
) -> Result<f32, Error> {
    let n = check_logits(n_classes, logits.len(), probs.len())?;
    check_len(Operand::Labels, n, labels.len())?;
    check_labels(labels, n_classes)?;
    if n == 0 {
        return Ok(0.0);
    }
    let mut total = 0.0f64;
    for ((z, p), &label) in logits
        .chunks_exact(n_classes)
        .zip(probs.chunks_exact_mut(n_classes))
        .zip(labels)
    {
        let (lse, m) = softmax_row(z, p);
        // -log softmax = M + lse - z_label, from the logits, not from a
        // rounded probability, so a confident wrong answer costs its full loss.
        total += f64::from(m + lse - z[usize::from(label)]);
    }
    Ok((total / n as f64) as f32)
}

/// Softmax cross-entropy backward: `dlogits = (probs - onehot(labels)) / N`.
pub fn softmax_cross_entropy_backward(
    probs: &[f32],
    labels: &[u16],
    n_classes: usize,
    dlogits: &mut [f32],
) -> Result<(), Error> {
    let n = check_logits(n_classes, probs.len(), dlogits.len())?;
    check_len(Operand::Labels, n, labels.len())?;
    check_labels(labels, n_classes)?;
    if n == 0 {
        return Ok(());
    }
    let inv_n = 1.0 / n as f32;
    for ((p, d), &label) in probs
        .chunks_exact(n_classes)
        .zip(dlogits.chunks_exact_mut(n_classes))
        .zip(labels)
    {
        for (k, (dk, &pk)) in d.iter_mut().zip(p).enumerate() {
            let target = if k == usize::from(label) { 1.0 } else { 0.0 };
            *dk = (pk - target) * inv_n;
        }
    }
    Ok(())
}

fn check_labels(labels: &[u16], n_classes: usize) -> Result<(), Error> {
    match labels.iter().position(|&l| usize::from(l) >= n_classes) {
        Some(index) => Err(Error::LabelOutOfRange {
            index,
            label: labels[index],
        }),
        None => Ok(()),
    }
}

/// Index of the largest logit in each row (first on ties), the predicted class.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = k;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, fd_check, random_vec};

    #[test]
    fn softmax_rows_sum_to_one_and_survive_huge_logits() {
        let z = [1000.0f32, 1001.0, 999.0, -1000.0, 0.0, 1000.0];
        let mut p = [0.0f32; 6];
        softmax(&z, 3, &mut p).unwrap();
        for row in p.chunks(3) {
            let s: f32 = row.iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
            assert!(row.iter().all(|v| v.is_finite()));
        }
        // Reference computed with f64 and the shift: e^-1/(e^-1+1+e^-2).
        let e = |v: f64| v.exp();
        let want = e(-1.0) / (e(-1.0) + 1.0 + e(-2.0));
        assert!((p[0] as f64 - want).abs() < 1e-7);
        assert_eq!(p[3], 0.0);
        assert_eq!(p[5], 1.0);
    }

    #[test]
    fn loss_matches_f64_reference_and_is_finite_when_confidently_wrong() {
        let z = [3.0f32, -2.0, 0.5, 50.0, -50.0, 0.0];
        let labels = [2u16, 1];
        let mut p = [0.0f32; 6];
        let loss = softmax_cross_entropy(&z, &labels, 3, &mut p).unwrap();
        let lse = |r: &[f32]| r.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
        let want = ((lse(&z[..3]) - 0.5) + (lse(&z[3..]) + 50.0)) / 2.0;
        assert!((loss as f64 - want).abs() < 1e-5, "{loss} vs {want}");
        assert!(loss > 49.0);
    }

    #[test]
    fn gradient_matches_finite_differences() {
        let (n, k) = (4, 5);
        let z = random_vec(21, n * k)
            .iter()
            .map(|v| v * 3.0)
            .collect::<Vec<_>>();
        let labels = [0u16, 4, 2, 2];
        let mut p = vec![0.0; n * k];
        softmax_cross_entropy(&z, &labels, k, &mut p).unwrap();
        let mut dz = vec![0.0; n * k];
        softmax_cross_entropy_backward(&p, &labels, k, &mut dz).unwrap();
        fd_check(&z, &dz, |z| {
            let mut p = vec![0.0; n * k];
            softmax_cross_entropy(z, &labels, k, &mut p).unwrap() as f64
        });
        // Each row of the gradient sums to zero.
        for row in dz.chunks(k) {
            assert!(row.iter().sum::<f32>().abs() < 1e-6);
        }
        let mut p2 = vec![0.0; n * k];
        softmax(&z, k, &mut p2).unwrap();
        assert_close(&p2, &p, 0.0, 0.0);
    }

    #[test]
    fn bad_labels_and_shapes_are_errors() {
        let z = [0.0f32; 6];
        let mut p = [7.0f32; 6];
        assert_eq!(
            softmax_cross_entropy(&z, &[0, 3], 3, &mut p),
            Err(Error::LabelOutOfRange { index: 1, label: 3 })
        );
        assert_eq!(p, [7.0; 6], "nothing written on error");
        assert!(softmax_cross_entropy(&z, &[0], 3, &mut p).is_err());
        assert!(softmax(&z, 4, &mut p).is_err());
        assert!(softmax(&z, 0, &mut p).is_err());
        assert_eq!(argmax(&[0.1, 0.7, 0.7, 0.2]), 1);
    }
}
