//! int8 quantization of the folded model, as FORMAT.md ("int8 files")
//! specifies it. Real values are `r = scale·(q - zero_point)`.
//!
//! - **Calibration** ([`calibrate`]): the folded f32 model runs on `N`
//!   training samples (spread evenly over the set) and records every layer's
//!   output range and, for sigmoid/tanh layers, the pre-activation range.
//! - **Activations**: asymmetric per tensor ([`QParams::from_range`]): the
//!   range, extended to contain 0, maps onto the 256 levels,
//!   `scale = (max - min)/255`, `zero_point = round(-128 - min/scale)`.
//! - **Input** ([`input_params`]): when every training value is an integer
//!   multiple of the data set's `pixel_scale` (raw sensor counts: MNIST's
//!   `0..=255` with `pixel_scale = 1/255`, the built-in digits' `0..=16` with
//!   `1/16`) and the raw range including 0 spans at most 256 levels, the input
//!   scale **is** `pixel_scale` and `zero_point = -128 - raw_min`, so each raw
//!   integer is its own int8 level, `q = raw - 128` for non-negative data:
//!   quantizing the input loses nothing, and a device feeds raw counts with a
//!   subtraction. (For the digits this uses 17 of the 256 levels; spreading
//!   `[0, 1]` over all 256 with scale `1/255` would instead round `raw·255/16`
//!   and add error without adding information.) Otherwise the input is
//!   quantized like any activation, from the training set's range.
//! - **Weights**: symmetric per output channel, `q ∈ [-127, 127]`,
//!   `scale_w[c] = max|W'[c, :]| / 127`.
//! - **Bias**: i32 with scale `scale_in·scale_w[c]`; for dense layers and
//!   convolutions without padding the input zero point is folded in
//!   (`ZP_FOLDED`): `bias[c] - zp_in·Σ_p w_q[c, p]`. The bias is saturated to
//!   `±(2^31 - 1 - 2·128·127·P)` so that no partial sum of the accumulator can
//!   overflow i32 whichever order a kernel adds in.
//! - **Requantization**: `M[c] = scale_in·scale_w[c] / scale_out` as a Q31
//!   multiplier in `[0.5, 1)` and a shift (core's [`quantize_multiplier`]).
//!   ReLU and ReLU6 are clamps (`clamp_min` = the output zero point, ReLU6's
//!   `clamp_max` = the level of 6.0); sigmoid and tanh layers requantize to
//!   the calibrated pre-activation range and index a 256-entry table
//!   ([`activation_table`]) with fixed output quantization (sigmoid 1/256
//!   and -128, tanh 1/128 and 0).
//! - **Pooling** and standalone ReLU/ReLU6 keep their input's scale and zero
//!   point (a standalone ReLU clamps at the zero point).
//!
//! Two degenerate cases are handled rather than rejected: a weight row whose
//! multiplier would be below `2^-32` (all zero, or so small that the whole
//! accumulator is worth less than half an output step) is stored as zeros
//! with `scale_w = scale_out/scale_in` (so `M = 1` and the bias still counts);
//! a calibrated range of width 0 is widened to 1.

use super::fold::{BnParams, FoldedModel, LayerOp};
use super::ExportError;
use crate::data::Dataset;
use crate::spec::Hwc;
use normcore::kernels::requant::{quantize_row, range_params, RowFault};
use normcore::layers::{Activation, Padding};

/// Asymmetric int8 quantization of a tensor: `r = scale·(q - zero_point)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QParams {
    /// Real value of one step, finite and > 0.
    pub scale: f32,
    /// The level of real 0, in `-128..=127`.
    pub zero_point: i32,
}

/// Fixed output quantization of a sigmoid table: `[0, 1)` in steps of 1/256.
pub const SIGMOID_OUT: QParams = QParams {
    scale: 1.0 / 256.0,
    zero_point: -128,
};
/// Fixed output quantization of a tanh table: `[-1, 1)` in steps of 1/128.
pub const TANH_OUT: QParams = QParams {
    scale: 1.0 / 128.0,
    zero_point: 0,
};

impl QParams {
    /// Parameters mapping `[lo, hi]`, extended to contain 0, onto the 256
    /// levels. A range of width 0 is taken as `[0, 1]`.
    pub fn from_range(lo: f32, hi: f32) -> QParams {
        let (scale, zero_point) = range_params(lo, hi);
        QParams { scale, zero_point }
    }

    /// The nearest level of `x`, saturated.
    pub fn quantize(&self, x: f32) -> i8 {
        let q = (f64::from(x) / f64::from(self.scale)).round() + f64::from(self.zero_point);
        q.clamp(-128.0, 127.0) as i8
    }

    /// The real value of level `q`.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn dequantize(&self, q: i8) -> f32 {
        self.scale * (i32::from(q) - self.zero_point) as f32
    }

    /// The level of real `x`, saturated to `-128..=127`, as i32.
    fn level(&self, x: f64) -> i32 {
        ((x / f64::from(self.scale)).round() + f64::from(self.zero_point)).clamp(-128.0, 127.0)
            as i32
    }
}

/// The 256-entry table of a sigmoid or tanh layer: entry `q + 128` holds
/// `round(f(pre.scale·(q - pre.zero_point)) / out.scale) + out.zero_point`,
/// saturated, with `out` the fixed [`SIGMOID_OUT`] or [`TANH_OUT`].
/// `None` for ReLU and ReLU6 (clamps, no table).
pub fn activation_table(a: Activation, pre: QParams) -> Option<Vec<i8>> {
    let (f, out): (fn(f64) -> f64, QParams) = match a {
        Activation::Sigmoid => (|x| 1.0 / (1.0 + (-x).exp()), SIGMOID_OUT),
        Activation::Tanh => (f64::tanh, TANH_OUT),
        Activation::Relu | Activation::Relu6 => return None,
    };
    Some(
        (-128i32..=127)
            .map(|q| {
                let x = f64::from(pre.scale) * f64::from(q - pre.zero_point);
                out.level(f(x)) as i8
            })
            .collect(),
    )
}

/// A value range seen during calibration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Smallest value seen (`+∞` when nothing was seen).
    pub min: f32,
    /// Largest value seen (`-∞` when nothing was seen).
    pub max: f32,
}

impl Range {
    /// Nothing seen yet.
    pub const EMPTY: Range = Range {
        min: f32::INFINITY,
        max: f32::NEG_INFINITY,
    };

    fn add(&mut self, values: &[f32]) {
        for &v in values {
            self.min = self.min.min(v);
            self.max = self.max.max(v);
        }
    }

    fn params(&self) -> Result<QParams, String> {
        if !(self.min.is_finite() && self.max.is_finite()) {
            return Err(format!("range [{}, {}] is not finite", self.min, self.max));
        }
        Ok(QParams::from_range(self.min, self.max))
    }
}

/// Per-layer ranges of the folded model on calibration samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// Samples run.
    pub samples: usize,
    /// Pre-activation range per layer (`EMPTY` for layers without an activation).
    pub pre: Vec<Range>,
    /// Output range per layer.
    pub post: Vec<Range>,
}

/// Run the folded model on `samples` training samples, evenly spaced over
/// `data` (all of it when it is smaller), and record the ranges.
pub fn calibrate(
    model: &FoldedModel,
    data: &Dataset,
    samples: usize,
) -> Result<Calibration, ExportError> {
    let n = samples.min(data.len());
    if n == 0 {
        return Err(ExportError::Quant(
            "calibration needs at least one sample (--calibration N with N >= 1, and a non-empty training set)".into(),
        ));
    }
    let idx: Vec<usize> = (0..n).map(|k| k * data.len() / n).collect();
    let mut cal = Calibration {
        samples: n,
        pre: vec![Range::EMPTY; model.layers.len()],
        post: vec![Range::EMPTY; model.layers.len()],
    };
    let per = data.sample_len();
    for chunk in idx.chunks(super::eval::EVAL_BATCH) {
        let mut x = vec![0.0f32; chunk.len() * per];
        let mut y = vec![0u16; chunk.len()];
        data.gather(chunk, &mut x, &mut y)
            .map_err(|e| ExportError::Data(e.to_string()))?;
        model.forward_observed(&x, chunk.len(), &mut |o| {
            if let Some(pre) = o.pre {
                cal.pre[o.layer].add(pre);
            }
            cal.post[o.layer].add(o.post);
        })?;
    }
    Ok(cal)
}

/// How the input quantization was chosen (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum InputChoice {
    /// Raw integers `raw_min..=raw_max` (0 included) map one to one onto
    /// levels: `scale = pixel_scale`, `q = raw - 128 - raw_min`.
    RawLevels {
        /// Smallest raw value (≤ 0).
        raw_min: i64,
        /// Largest raw value (≥ 0).
        raw_max: i64,
    },
    /// Not raw integers in 256 levels: the training set's value range.
    Range(Range),
}

/// Input quantization for a data set (see the module documentation):
/// raw integer pixels map exactly onto int8 levels when they can.
pub fn input_params(data: &Dataset) -> Result<(QParams, InputChoice), ExportError> {
    let ps = f64::from(data.pixel_scale);
    let mut range = Range::EMPTY;
    range.add(data.images());
    let (mut raw_min, mut raw_max, mut integer) = (0i64, 0i64, true);
    for &x in data.images() {
        let r = f64::from(x) / ps;
        let k = r.round();
        if (r - k).abs() > 1e-3 || k.abs() > 1e6 {
            integer = false;
            break;
        }
        raw_min = raw_min.min(k as i64);
        raw_max = raw_max.max(k as i64);
    }
    if integer && raw_max - raw_min <= 255 && data.pixel_scale > 0.0 {
        let q = QParams {
            scale: data.pixel_scale,
            zero_point: (-128 - raw_min) as i32,
        };
        return Ok((q, InputChoice::RawLevels { raw_min, raw_max }));
    }
    let q = range
        .params()
        .map_err(|e| ExportError::Quant(format!("input: {e}")))?;
    Ok((q, InputChoice::Range(range)))
}

/// One layer of an int8 model, with everything FORMAT.md stores for it.
#[derive(Debug, Clone, PartialEq)]
pub struct QLayer {
    /// The operation (geometry).
    pub op: LayerOp,
    /// Fused activation, or the function of a standalone one.
    pub act: Option<Activation>,
    /// Input shape of one sample.
    pub input: Hwc,
    /// Output shape of one sample.
    pub output: Hwc,
    /// Quantization of the input (the previous layer's output).
    pub input_q: QParams,
    /// Quantization of the output.
    pub output_q: QParams,
    /// Added after requantization: the output zero point, or for
    /// sigmoid/tanh the pre-activation zero point that indexes the table.
    pub requant_zp: i32,
    /// Weighted layers: the scale the accumulator is requantized to (the
    /// output's, or for sigmoid/tanh the pre-activation's); 0 otherwise.
    pub requant_scale: f32,
    /// Lower clamp, ≥ -128.
    pub clamp_min: i32,
    /// Upper clamp, ≤ 127.
    pub clamp_max: i32,
    /// The input zero point is folded into the bias (`ZP_FOLDED`).
    pub zp_folded: bool,
    /// int8 weights in core's layout (not blocked); empty for unweighted ops.
    pub weights: Vec<i8>,
    /// i32 bias per output channel, as stored (zero point folded in when
    /// `zp_folded`).
    pub bias: Vec<i32>,
    /// Q31 multipliers (bits of a `fixed::types::I1F31`) per output channel.
    pub multiplier: Vec<i32>,
    /// Shifts per output channel, `M = m·2^-31·2^shift`.
    pub shift: Vec<i32>,
    /// Sigmoid/tanh table (256 entries), else empty.
    pub table: Vec<i8>,
    /// The BN folded into the layer (kept for the file's BN table).
    pub bn: Option<BnParams>,
}

/// A quantized model: the int8 file's content.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantModel {
    /// The network's name (not stored in the file).
    pub name: String,
    /// Input shape of one sample.
    pub input: Hwc,
    /// Classes.
    pub classes: usize,
    /// Input quantization.
    pub input_q: QParams,
    /// The data set's stored value per raw unit.
    pub pixel_scale: f32,
    /// Layers in execution order.
    pub layers: Vec<QLayer>,
}

impl QuantModel {
    /// Quantize `[n, ...]` f32 inputs with the model's input parameters.
    pub fn quantize_input(&self, x: &[f32]) -> Vec<i8> {
        x.iter().map(|&v| self.input_q.quantize(v)).collect()
    }
}

/// Quantize the folded model with calibrated ranges. Returns the model and
/// notes on degenerate channels (zeroed rows, saturated biases), if any.
pub fn quantize(
    model: &FoldedModel,
    cal: &Calibration,
    input_q: QParams,
    pixel_scale: f32,
) -> Result<(QuantModel, Vec<String>), ExportError> {
    if cal.post.len() != model.layers.len() || cal.pre.len() != model.layers.len() {
        return Err(ExportError::Quant(
            "calibration does not match the model".into(),
        ));
    }
    let mut notes = Vec::new();
    let mut layers = Vec::with_capacity(model.layers.len());
    let mut in_q = input_q;
    for (i, l) in model.layers.iter().enumerate() {
        let bad = |e: String| ExportError::Quant(format!("layer {} ({}): {e}", i + 1, l.op.name()));
        let mut q = QLayer {
            op: l.op,
            act: l.act,
            input: l.input,
            output: l.output,
            input_q: in_q,
            output_q: in_q,
            requant_zp: in_q.zero_point,
            requant_scale: 0.0,
            clamp_min: -128,
            clamp_max: 127,
            zp_folded: false,
            weights: Vec::new(),
            bias: Vec::new(),
            multiplier: Vec::new(),
            shift: Vec::new(),
            table: Vec::new(),
            bn: l.bn.clone(),
        };
        match l.op {
            LayerOp::Dense(_) | LayerOp::Conv(_) | LayerOp::Depthwise(_) => {
                // The scale the accumulator is requantized to.
                let target = match l.act {
                    Some(a @ (Activation::Sigmoid | Activation::Tanh)) => {
                        let pre = cal.pre[i].params().map_err(bad)?;
                        q.output_q = if a == Activation::Sigmoid {
                            SIGMOID_OUT
                        } else {
                            TANH_OUT
                        };
                        q.requant_zp = pre.zero_point;
                        q.table = activation_table(a, pre).unwrap_or_default();
                        pre
                    }
                    act => {
                        let out = cal.post[i].params().map_err(bad)?;
                        q.output_q = out;
                        q.requant_zp = out.zero_point;
                        relu_clamps(&mut q, act, out);
                        out
                    }
                };
                q.requant_scale = target.scale;
                quantize_weights(&mut q, &l.weights, &l.bias, target, i, &mut notes)
                    .map_err(bad)?;
            }
            LayerOp::Pool(_) | LayerOp::GlobalAvgPool => {}
            LayerOp::Activation => match l.act {
                Some(a @ (Activation::Sigmoid | Activation::Tanh)) => {
                    q.output_q = if a == Activation::Sigmoid {
                        SIGMOID_OUT
                    } else {
                        TANH_OUT
                    };
                    q.table = activation_table(a, in_q).unwrap_or_default();
                }
                act => relu_clamps(&mut q, act, in_q),
            },
        }
        in_q = q.output_q;
        layers.push(q);
    }
    Ok((
        QuantModel {
            name: model.name.clone(),
            input: model.input,
            classes: model.classes,
            input_q,
            pixel_scale,
            layers,
        },
        notes,
    ))
}

/// ReLU clamps at the output zero point; ReLU6 also at the level of 6.0.
fn relu_clamps(q: &mut QLayer, act: Option<Activation>, out: QParams) {
    match act {
        Some(Activation::Relu) => q.clamp_min = out.zero_point,
        Some(Activation::Relu6) => {
            q.clamp_min = out.zero_point;
            q.clamp_max = out.level(6.0).max(out.zero_point);
        }
        _ => {}
    }
}

/// Weights, bias and requantization of a weighted layer whose accumulator is
/// requantized to scale `target` (its output, or its pre-activation).
fn quantize_weights(
    q: &mut QLayer,
    w: &[f32],
    b: &[f32],
    target: QParams,
    index: usize,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let channels = q.op.out_channels();
    if channels == 0 || w.len() % channels != 0 || b.len() != channels {
        return Err("weights and bias do not match the layer".into());
    }
    let terms = w.len() / channels;
    // Where W'[c, p] lives: rows for dense/conv, channel-last for depthwise.
    let depthwise = matches!(q.op, LayerOp::Depthwise(_));
    let at = |c: usize, p: usize| {
        if depthwise {
            p * channels + c
        } else {
            c * terms + p
        }
    };
    let limit = normcore::model::layout::bias_limit(terms)
        .ok_or_else(|| format!("{terms} products per output can overflow the i32 accumulator"))?;
    q.zp_folded = match q.op {
        LayerOp::Dense(_) => true,
        LayerOp::Conv(c) => c.window.padding == Padding::NONE,
        _ => false,
    };
    let s_in = f64::from(q.input_q.scale);
    let s_out = f64::from(target.scale);
    q.weights = vec![0i8; w.len()];
    q.bias = vec![0i32; channels];
    q.multiplier = vec![0i32; channels];
    q.shift = vec![0i32; channels];
    for c in 0..channels {
        let weights = &mut q.weights;
        let row = quantize_row(
            terms,
            |p| w[at(c, p)],
            b[c],
            (s_in, q.input_q.zero_point),
            s_out,
            q.zp_folded,
            limit,
            |p, v| weights[at(c, p)] = v,
        )
        .map_err(|f| match f {
            RowFault::NonFinite => format!("channel {c} has non-finite weights or bias"),
            RowFault::MultiplierTooLarge => format!(
                "channel {c}: requantization multiplier {} is too large for the format",
                s_in * f64::from((0..terms).fold(0.0f32, |m, p| m.max(w[at(c, p)].abs())))
                    / 127.0
                    / s_out
            ),
            RowFault::BiasOverflow => format!("channel {c}: bias overflows i32"),
        })?;
        if row.zeroed {
            notes.push(format!(
                "layer {} channel {c}: weights below the output resolution stored as zeros",
                index + 1
            ));
        }
        if row.saturated {
            notes.push(format!(
                "layer {} channel {c}: bias {} saturated to the accumulator-safe range",
                index + 1,
                b[c]
            ));
        }
        q.multiplier[c] = row.multiplier;
        q.shift[c] = row.shift;
        q.bias[c] = row.bias;
    }
    Ok(())
}
