//! The folded f32 model on the host: a plain, batch-capable evaluator of
//! the IR on core's layer kernels (`normcore::layers`, with the trainer's
//! [`FastGemm`] under dense and conv), computing exactly what an f32 `.ncm`
//! file specifies: `y = act(W'·x + b')` per layer, pooling and activations
//! as in `normcore::layers`.
//!
//! It is the reference the fold is checked against (the unfolded network in
//! eval mode) and the source of the calibration ranges for int8.

use super::fold::{FoldedModel, LayerOp};
use super::ExportError;
use crate::data::Dataset;
use crate::fastgemm::FastGemm;
use normcore::layers::{self, loss::argmax};
use normcore::{View, ViewMut};

/// Samples per batch when a whole data set is evaluated.
pub const EVAL_BATCH: usize = 256;

/// What a layer produced, for calibration: `pre` is the value before the
/// activation (the op's output, `None` when the layer has no activation),
/// `post` the layer's output.
#[derive(Debug, Clone, Copy)]
pub struct Observed<'a> {
    /// 0-based layer index.
    pub layer: usize,
    /// Pre-activation values `[n, ...]` (layers with an activation only).
    pub pre: Option<&'a [f32]>,
    /// Output values `[n, ...]`.
    pub post: &'a [f32],
}

impl FoldedModel {
    /// Logits `[n, classes]` of `n` samples `x` (`[n, h, w, c]`).
    pub fn forward(&self, x: &[f32], n: usize) -> Result<Vec<f32>, ExportError> {
        self.forward_observed(x, n, &mut |_| {})
    }

    /// [`forward`](Self::forward), calling `observe` with every layer's
    /// pre-activation and output values.
    pub fn forward_observed(
        &self,
        x: &[f32],
        n: usize,
        observe: &mut dyn FnMut(Observed<'_>),
    ) -> Result<Vec<f32>, ExportError> {
        if x.len() != n * self.input.len() {
            return Err(ExportError::Batch {
                n,
                len: x.len(),
                expected: self.input.len(),
            });
        }
        let mut cur = x.to_vec();
        let mut pre = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            let kernel = |error| ExportError::Kernel {
                layer: i + 1,
                error,
            };
            let xs = l.input.batch(n);
            let ys = l.output.batch(n);
            let mut y = vec![0.0f32; n * l.output.len()];
            let xv = View::new(xs, &cur).map_err(kernel)?;
            match l.op {
                LayerOp::Dense(op) => op
                    .forward(
                        &FastGemm,
                        xv,
                        &l.weights,
                        Some(&l.bias),
                        ViewMut::new(ys, &mut y).map_err(kernel)?,
                    )
                    .map_err(kernel)?,
                LayerOp::Conv(op) => {
                    let mut scratch = vec![0.0f32; op.forward_scratch_len(n).map_err(kernel)?];
                    op.forward(
                        &FastGemm,
                        xv,
                        &l.weights,
                        Some(&l.bias),
                        ViewMut::new(ys, &mut y).map_err(kernel)?,
                        &mut scratch,
                    )
                    .map_err(kernel)?
                }
                LayerOp::Depthwise(op) => op
                    .forward(
                        xv,
                        &l.weights,
                        Some(&l.bias),
                        ViewMut::new(ys, &mut y).map_err(kernel)?,
                    )
                    .map_err(kernel)?,
                LayerOp::Pool(p) => p
                    .forward(xv, ViewMut::new(ys, &mut y).map_err(kernel)?)
                    .map_err(kernel)?,
                LayerOp::GlobalAvgPool => {
                    layers::global_avg_pool_forward(xv, ViewMut::new(ys, &mut y).map_err(kernel)?)
                        .map_err(kernel)?
                }
                LayerOp::Activation => y.copy_from_slice(&cur),
            }
            match l.act {
                Some(a) => {
                    pre.clear();
                    pre.extend_from_slice(&y);
                    a.forward_in_place(&mut y);
                    observe(Observed {
                        layer: i,
                        pre: Some(&pre),
                        post: &y,
                    });
                }
                None => observe(Observed {
                    layer: i,
                    pre: None,
                    post: &y,
                }),
            }
            cur = y;
        }
        Ok(cur)
    }

    /// Top-1 accuracy on `data`, in batches of [`EVAL_BATCH`].
    pub fn accuracy(&self, data: &Dataset) -> Result<f64, ExportError> {
        let per = data.sample_len();
        let k = self.classes;
        let mut correct = 0usize;
        let mut x = Vec::new();
        let mut y = Vec::new();
        for start in (0..data.len()).step_by(EVAL_BATCH) {
            let m = EVAL_BATCH.min(data.len() - start);
            x.resize(m * per, 0.0);
            y.resize(m, 0);
            let idx: Vec<usize> = (start..start + m).collect();
            data.gather(&idx, &mut x, &mut y)
                .map_err(|e| ExportError::Data(e.to_string()))?;
            let logits = self.forward(&x, m)?;
            correct += logits
                .chunks_exact(k)
                .zip(&y)
                .filter(|(row, &label)| argmax(row) == usize::from(label))
                .count();
        }
        Ok(correct as f64 / data.len().max(1) as f64)
    }
}
