//! Folding a trained network into the exporter's IR, [`FoldedModel`].
//!
//! Every BN layer is folded into the dense, conv or depthwise layer before it
//! (paper Alg. 2): `W' = s·W`, `b' = s·(b - E[x]) + β`, `s = γ / sqrt(Var[x] + ε)`,
//! by core's [`BnState::fold_rows`](normcore::BnState::fold_rows) (one row per
//! output channel: dense `[out, in]`, conv `[Cout, KH, KW, Cin]`) or
//! [`BnState::fold_channels_last`](normcore::BnState::fold_channels_last)
//! (depthwise `[KH, KW, C]`). A layer without a bias folds from `b = 0`.
//!
//! An activation that directly follows a weighted layer (after its BN, if
//! any) is fused into it; dropout (the identity at inference) and flatten
//! (free in NHWC: dense layers flatten their input themselves) disappear.
//! What the `.ncm` format cannot express is an [`ExportError::Unsupported`]
//! naming the layer.

use super::ExportError;
use crate::network::Network;
use crate::spec::{Hwc, Op};
use normcore::layers::Activation;

/// What a layer of the IR computes: core's own description of a model
/// layer, so that the IR and a parsed file speak the same type.
pub use normcore::model::Op as LayerOp;

/// The BN a layer was folded with, kept for the file's BN table (a device
/// can re-estimate the statistics and refold without the unfolded weights).
#[derive(Debug, Clone, PartialEq)]
pub struct BnParams {
    /// γ.
    pub gamma: Vec<f32>,
    /// β.
    pub beta: Vec<f32>,
    /// `E[x]` (running mean).
    pub mean: Vec<f32>,
    /// `Var[x]`, unbiased (running variance).
    pub var: Vec<f32>,
    /// ε.
    pub eps: f32,
}

/// One layer of the folded network.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedLayer {
    /// The operation.
    pub op: LayerOp,
    /// The activation applied to the op's output (fused), or for
    /// [`LayerOp::Activation`] the function itself.
    pub act: Option<Activation>,
    /// Input shape of one sample (the previous layer's output).
    pub input: Hwc,
    /// Output shape of one sample.
    pub output: Hwc,
    /// Folded weights `W'` in core's layout (empty for unweighted ops).
    pub weights: Vec<f32>,
    /// Folded bias `b'`, one per output channel (zeros folded in when the
    /// layer had none; empty for unweighted ops).
    pub bias: Vec<f32>,
    /// The BN folded into this layer, if any.
    pub bn: Option<BnParams>,
}

/// A trained network with every BN folded away: the exporter's IR, from
/// which both the f32 and the int8 files are written.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedModel {
    /// The network's name (not stored in the file).
    pub name: String,
    /// Input shape of one sample.
    pub input: Hwc,
    /// Classes (the last layer's output features).
    pub classes: usize,
    /// Layers in execution order.
    pub layers: Vec<FoldedLayer>,
}

/// Index of the first layer at or after `i` that is not a no-op at
/// inference (dropout, flatten).
fn skip_noops(net: &Network, mut i: usize) -> usize {
    while i < net.layers.len() && matches!(net.layers[i].r.op, Op::Dropout(_) | Op::Flatten) {
        i += 1;
    }
    i
}

/// Fold a trained network (its BN population statistics, i.e. eval mode)
/// into the IR. See the module documentation for what is fused and dropped.
pub fn fold(net: &Network) -> Result<FoldedModel, ExportError> {
    let mut layers: Vec<FoldedLayer> = Vec::new();
    let mut shape = net.input();
    let mut i = 0;
    while i < net.layers.len() {
        let r = net.layers[i].r;
        // Flatten leaves NHWC data as it is, so the current shape can differ
        // from the resolver's 1x1xN after a flatten: only dense layers and
        // activations accept that, since the format has no reshape.
        let spatial_ok = r.input == shape;
        let (layer, next) = match r.op {
            Op::Dropout(_) | Op::Flatten => {
                i += 1;
                continue;
            }
            Op::Dense { op, bias } if op.inputs == shape.len() => {
                weighted(net, i, LayerOp::Dense(op), bias, shape)?
            }
            Op::Conv { op, bias } if spatial_ok => {
                weighted(net, i, LayerOp::Conv(op), bias, shape)?
            }
            Op::Depthwise { op, bias } if spatial_ok => {
                weighted(net, i, LayerOp::Depthwise(op), bias, shape)?
            }
            Op::Pool(p) if spatial_ok => (unweighted(LayerOp::Pool(p), None, shape, r.output), i + 1),
            Op::GlobalAvgPool if spatial_ok => (
                unweighted(LayerOp::GlobalAvgPool, None, shape, r.output),
                i + 1,
            ),
            Op::Act(a) => (unweighted(LayerOp::Activation, Some(a), shape, shape), i + 1),
            Op::BatchNorm(_) => {
                return Err(unsupported(
                    net,
                    i,
                    "BN must directly follow a dense, conv2d or depthwise_conv2d layer to be folded into it".to_owned(),
                ))
            }
            Op::Dense { .. } | Op::Conv { .. } | Op::Depthwise { .. } | Op::Pool(_) | Op::GlobalAvgPool => {
                return Err(unsupported(
                    net,
                    i,
                    format!(
                        "follows a flatten of {shape} data; the .ncm format has no reshape (dense layers flatten their input themselves: drop the flatten)"
                    ),
                ))
            }
        };
        shape = layer.output;
        layers.push(layer);
        i = next;
    }
    let want = Hwc {
        h: 1,
        w: 1,
        c: net.classes(),
    };
    if layers.is_empty() || shape != want {
        return Err(unsupported(
            net,
            net.layers.len() - 1,
            format!(
                "the folded network ends with {shape} values per sample, but the format needs {want}: end with a dense layer"
            ),
        ));
    }
    Ok(FoldedModel {
        name: net.spec.name.clone(),
        input: net.input(),
        classes: net.classes(),
        layers,
    })
}

fn unsupported(net: &Network, i: usize, reason: String) -> ExportError {
    ExportError::Unsupported {
        layer: i + 1,
        kind: net.spec.layers.get(i).map_or("?", |l| l.kind()),
        reason,
    }
}

/// Fold the weighted layer `i` with the BN and the activation that follow
/// it (dropout in between is the identity at inference). Returns the layer
/// and the index of the first network layer after what it absorbed.
fn weighted(
    net: &Network,
    i: usize,
    op: LayerOp,
    has_bias: bool,
    input: Hwc,
) -> Result<(FoldedLayer, usize), ExportError> {
    let l = &net.layers[i];
    let channels = op.out_channels();
    let mut weights = l.weights().to_vec();
    let mut bias = if has_bias {
        l.bias().to_vec()
    } else {
        vec![0.0; channels]
    };
    let mut bn = None;
    let mut j = skip_noops(net, i + 1);
    if let Some(Op::BatchNorm(norm)) = net.layers.get(j).map(|n| n.r.op) {
        let state = net.layers[j]
            .bn_state()
            .ok_or_else(|| unsupported(net, j, "BN layer without statistics".to_owned()))?;
        if norm.channels() != channels {
            return Err(unsupported(
                net,
                j,
                format!(
                    "normalises {} channels but the layer before it has {channels}",
                    norm.channels()
                ),
            ));
        }
        match op {
            LayerOp::Depthwise(_) => state.fold_channels_last(&mut weights, &mut bias),
            _ => state.fold_rows(&mut weights, &mut bias),
        }
        .map_err(|e| unsupported(net, j, format!("cannot fold into the layer before it: {e}")))?;
        bn = Some(BnParams {
            gamma: state.gamma.to_vec(),
            beta: state.beta.to_vec(),
            mean: state.mean.to_vec(),
            var: state.var.to_vec(),
            eps: state.eps,
        });
        j = skip_noops(net, j + 1);
    }
    let mut act = None;
    if let Some(Op::Act(a)) = net.layers.get(j).map(|n| n.r.op) {
        act = Some(a);
        j += 1;
    }
    let layer = FoldedLayer {
        op,
        act,
        input,
        output: l.r.output,
        weights,
        bias,
        bn,
    };
    Ok((layer, j))
}

fn unweighted(op: LayerOp, act: Option<Activation>, input: Hwc, output: Hwc) -> FoldedLayer {
    FoldedLayer {
        op,
        act,
        input,
        output,
        weights: Vec::new(),
        bias: Vec::new(),
        bn: None,
    }
}
