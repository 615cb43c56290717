//! Network descriptions: built-in presets and the TOML format for custom
//! sequential networks, with shape inference that rejects networks that do
//! not chain.
//!
//! ```toml
//! name = "tiny-cnn"
//! input = [8, 8, 1]          # height, width, channels (NHWC)
//! classes = 10
//!
//! [[layers]]
//! type = "conv2d"
//! filters = 8
//! kernel = 3                 # or [kh, kw]
//! stride = 1                 # or [sh, sw]
//! padding = "same"           # "valid", "same", a number, or [top, bottom, left, right]
//! bias = false               # BN follows: its beta replaces the bias
//!
//! [[layers]]
//! type = "batchnorm"         # eps = 1e-5, momentum = 0.1 by default
//!
//! [[layers]]
//! type = "relu"              # relu, relu6, sigmoid, tanh
//!
//! [[layers]]
//! type = "maxpool"           # maxpool / avgpool: kernel, stride (= kernel), padding
//! kernel = 2
//!
//! [[layers]]
//! type = "dense"             # flattens its input (free in NHWC)
//! units = 10
//! ```
//!
//! Other layers: `depthwise_conv2d` (kernel, stride, padding, bias),
//! `global_avgpool`, `flatten`, `dropout` (rate). The last layer must
//! produce `classes` features; softmax cross-entropy is the loss and is not
//! written as a layer.

use normcore::layers::{Activation, Conv2d, DepthwiseConv2d, Padding, Pool2d, PoolKind, Window};
use normcore::{BatchNormConfig, Error as CoreError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

/// A spatial size given as one number (square) or `[h, w]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Pair {
    /// Same value in both dimensions.
    Square(usize),
    /// `[height, width]`.
    Hw([usize; 2]),
}

impl Pair {
    fn hw(self) -> (usize, usize) {
        match self {
            Pair::Square(v) => (v, v),
            Pair::Hw([h, w]) => (h, w),
        }
    }
}

/// Zero padding: `"valid"` (none), `"same"` (output = ceil(input/stride), the
/// extra pixel at the bottom/right as TensorFlow does), a number (every side),
/// or `[top, bottom, left, right]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum PaddingSpec {
    /// `"valid"` or `"same"`.
    Named(NamedPadding),
    /// The same amount on every side.
    Uniform(usize),
    /// `[top, bottom, left, right]`.
    Explicit([usize; 4]),
}

/// Named padding modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NamedPadding {
    /// No padding.
    Valid,
    /// Keep `ceil(in / stride)` outputs.
    Same,
}

/// What a [`Pair`] is written as, for messages.
const PAIR_FORMS: &str = "a whole number >= 1 (e.g. 3) or [height, width] (e.g. [3, 3])";
/// What a [`PaddingSpec`] is written as, for messages.
const PADDING_FORMS: &str = "\"valid\", \"same\", a number of zeros on every side (e.g. 1) \
     or [top, bottom, left, right] (e.g. [1, 1, 0, 0])";

/// A whole number `>= 0` from a TOML integer, or the message that says
/// what was found instead.
fn size<E: serde::de::Error>(v: i64, forms: &str) -> Result<usize, E> {
    usize::try_from(v).map_err(|_| E::custom(format_args!("{v} is negative: give {forms}")))
}

/// The elements of an array of whole numbers `>= 0`, exactly `N` of them.
fn sizes<'de, A: serde::de::SeqAccess<'de>, const N: usize>(
    mut seq: A,
    forms: &str,
) -> Result<[usize; N], A::Error> {
    use serde::de::Error;
    let mut out = [0usize; N];
    for (i, slot) in out.iter_mut().enumerate() {
        let v: i64 = seq
            .next_element()?
            .ok_or_else(|| A::Error::custom(format_args!("{i} numbers, not {N}: give {forms}")))?;
        *slot = size(v, forms)?;
    }
    if seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
        return Err(A::Error::custom(format_args!(
            "more than {N} numbers: give {forms}"
        )));
    }
    Ok(out)
}

/// `Pair`'s reader: one visitor, so that a wrong value is named with what
/// is accepted (serde's untagged enums only say "did not match any
/// variant").
impl<'de> Deserialize<'de> for Pair {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Pair;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PAIR_FORMS)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Pair, E> {
                Ok(Pair::Square(size(v, PAIR_FORMS)?))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Pair, E> {
                usize::try_from(v)
                    .map(Pair::Square)
                    .map_err(|_| E::custom(format_args!("{v} is too large: give {PAIR_FORMS}")))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Pair, A::Error> {
                Ok(Pair::Hw(sizes(seq, PAIR_FORMS)?))
            }
        }
        d.deserialize_any(V)
    }
}

/// `PaddingSpec`'s reader (as [`Pair`]'s).
impl<'de> Deserialize<'de> for PaddingSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PaddingSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(PADDING_FORMS)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PaddingSpec, E> {
                match v {
                    "valid" => Ok(PaddingSpec::Named(NamedPadding::Valid)),
                    "same" => Ok(PaddingSpec::Named(NamedPadding::Same)),
                    _ => Err(E::custom(format_args!(
                        "\"{v}\" is not a padding: give {PADDING_FORMS}"
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PaddingSpec, E> {
                Ok(PaddingSpec::Uniform(size(v, PADDING_FORMS)?))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PaddingSpec, E> {
                usize::try_from(v)
                    .map(PaddingSpec::Uniform)
                    .map_err(|_| E::custom(format_args!("{v} is too large: give {PADDING_FORMS}")))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                seq: A,
            ) -> Result<PaddingSpec, A::Error> {
                Ok(PaddingSpec::Explicit(sizes(seq, PADDING_FORMS)?))
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for PaddingSpec {
    fn default() -> Self {
        PaddingSpec::Named(NamedPadding::Valid)
    }
}

impl PaddingSpec {
    fn resolve(self, in_hw: (usize, usize), k: (usize, usize), s: (usize, usize)) -> Padding {
        match self {
            PaddingSpec::Named(NamedPadding::Valid) => Padding::NONE,
            PaddingSpec::Uniform(p) => Padding::symmetric(p, p),
            PaddingSpec::Explicit([top, bottom, left, right]) => Padding {
                top,
                bottom,
                left,
                right,
            },
            PaddingSpec::Named(NamedPadding::Same) => {
                let total = |i: usize, k: usize, s: usize| {
                    let s = s.max(1);
                    let out = i.div_ceil(s);
                    ((out.saturating_sub(1)) * s + k).saturating_sub(i)
                };
                let (th, tw) = (total(in_hw.0, k.0, s.0), total(in_hw.1, k.1, s.1));
                Padding {
                    top: th / 2,
                    bottom: th - th / 2,
                    left: tw / 2,
                    right: tw - tw / 2,
                }
            }
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_eps() -> f32 {
    BatchNormConfig::default().eps
}
fn default_bn_momentum() -> f32 {
    BatchNormConfig::default().momentum
}
fn one() -> Pair {
    Pair::Square(1)
}

/// One layer as written in a network file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerSpec {
    /// Fully connected, `units` outputs; flattens its input.
    Dense {
        /// Output features.
        units: usize,
        /// Learn a bias (omit when BN follows).
        #[serde(default = "default_true")]
        bias: bool,
    },
    /// 2-d convolution.
    Conv2d {
        /// Output channels.
        filters: usize,
        /// Kernel size.
        kernel: Pair,
        /// Stride (1).
        #[serde(default = "one")]
        stride: Pair,
        /// Zero padding ("valid").
        #[serde(default)]
        padding: PaddingSpec,
        /// Learn a bias.
        #[serde(default = "default_true")]
        bias: bool,
    },
    /// Depthwise 2-d convolution (one filter per channel).
    DepthwiseConv2d {
        /// Kernel size.
        kernel: Pair,
        /// Stride (1).
        #[serde(default = "one")]
        stride: Pair,
        /// Zero padding ("valid").
        #[serde(default)]
        padding: PaddingSpec,
        /// Learn a bias.
        #[serde(default = "default_true")]
        bias: bool,
    },
    /// Batch Normalization of the preceding dense/conv/depthwise layer.
    Batchnorm {
        /// ε inside the square root.
        #[serde(default = "default_eps")]
        eps: f32,
        /// Running-average momentum.
        #[serde(default = "default_bn_momentum")]
        momentum: f32,
    },
    /// `max(0, x)`.
    Relu,
    /// `min(max(0, x), 6)`.
    Relu6,
    /// Logistic sigmoid.
    Sigmoid,
    /// Hyperbolic tangent.
    Tanh,
    /// Max pooling.
    Maxpool {
        /// Window size.
        kernel: Pair,
        /// Stride (defaults to the kernel).
        stride: Option<Pair>,
        /// Padding ("valid").
        #[serde(default)]
        padding: PaddingSpec,
    },
    /// Average pooling.
    Avgpool {
        /// Window size.
        kernel: Pair,
        /// Stride (defaults to the kernel).
        stride: Option<Pair>,
        /// Padding ("valid").
        #[serde(default)]
        padding: PaddingSpec,
    },
    /// Mean over height and width.
    GlobalAvgpool,
    /// `[H, W, C] -> [1, 1, H·W·C]` (no data moves in NHWC).
    Flatten,
    /// Inverted dropout.
    Dropout {
        /// Drop probability in [0, 1).
        rate: f32,
    },
}

impl LayerSpec {
    /// Short name as written in files.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerSpec::Dense { .. } => "dense",
            LayerSpec::Conv2d { .. } => "conv2d",
            LayerSpec::DepthwiseConv2d { .. } => "depthwise_conv2d",
            LayerSpec::Batchnorm { .. } => "batchnorm",
            LayerSpec::Relu => "relu",
            LayerSpec::Relu6 => "relu6",
            LayerSpec::Sigmoid => "sigmoid",
            LayerSpec::Tanh => "tanh",
            LayerSpec::Maxpool { .. } => "maxpool",
            LayerSpec::Avgpool { .. } => "avgpool",
            LayerSpec::GlobalAvgpool => "global_avgpool",
            LayerSpec::Flatten => "flatten",
            LayerSpec::Dropout { .. } => "dropout",
        }
    }
}

/// A sequential network: input shape, classes, layers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// A name for reports and file metadata.
    #[serde(default)]
    pub name: String,
    /// Input `[height, width, channels]`.
    pub input: [usize; 3],
    /// Number of classes (the last layer's width).
    pub classes: usize,
    /// The layers, in order.
    pub layers: Vec<LayerSpec>,
}

/// Height, width and channels of one sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hwc {
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
}

impl Hwc {
    /// Elements per sample.
    pub fn len(&self) -> usize {
        self.h * self.w * self.c
    }
    /// Elements per sample, or `None` when the count overflows `usize`.
    pub fn checked_len(&self) -> Option<usize> {
        self.h.checked_mul(self.w)?.checked_mul(self.c)
    }
    /// True when some dimension is zero.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The NHWC shape of a batch of `n`.
    pub fn batch(&self, n: usize) -> normcore::Shape {
        normcore::Shape::nhwc(n, self.h, self.w, self.c)
    }
}

impl fmt::Display for Hwc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}x{}", self.h, self.w, self.c)
    }
}

/// A layer with its geometry resolved and checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// Dense layer.
    Dense {
        /// Geometry.
        op: normcore::layers::Dense,
        /// Has a bias.
        bias: bool,
    },
    /// Convolution.
    Conv {
        /// Geometry.
        op: Conv2d,
        /// Has a bias.
        bias: bool,
    },
    /// Depthwise convolution.
    Depthwise {
        /// Geometry.
        op: DepthwiseConv2d,
        /// Has a bias.
        bias: bool,
    },
    /// Batch Normalization.
    BatchNorm(normcore::BatchNorm),
    /// Nonlinearity.
    Act(Activation),
    /// Max or average pooling.
    Pool(Pool2d),
    /// Global average pooling.
    GlobalAvgPool,
    /// Flatten (no-op on data).
    Flatten,
    /// Dropout.
    Dropout(normcore::layers::Dropout),
}

impl Op {
    /// Parameter count (weights + bias, or gamma + beta).
    pub fn param_len(&self) -> usize {
        match self {
            Op::Dense { op, bias } => op.inputs * op.outputs + if *bias { op.outputs } else { 0 },
            Op::Conv { op, bias } => {
                op.out_c * op.window.kernel_h * op.window.kernel_w * op.in_c
                    + if *bias { op.out_c } else { 0 }
            }
            Op::Depthwise { op, bias } => {
                op.window.kernel_h * op.window.kernel_w * op.channels
                    + if *bias { op.channels } else { 0 }
            }
            Op::BatchNorm(bn) => 2 * bn.channels(),
            _ => 0,
        }
    }

    /// [`Op::param_len`], or `None` when the count overflows `usize`.
    pub fn checked_param_len(&self) -> Option<usize> {
        let bias = |b: bool, n: usize| if b { n } else { 0 };
        match *self {
            Op::Dense { op, bias: b } => op
                .inputs
                .checked_mul(op.outputs)?
                .checked_add(bias(b, op.outputs)),
            Op::Conv { op, bias: b } => op
                .out_c
                .checked_mul(op.window.kernel_h)?
                .checked_mul(op.window.kernel_w)?
                .checked_mul(op.in_c)?
                .checked_add(bias(b, op.out_c)),
            Op::Depthwise { op, bias: b } => op
                .window
                .kernel_h
                .checked_mul(op.window.kernel_w)?
                .checked_mul(op.channels)?
                .checked_add(bias(b, op.channels)),
            Op::BatchNorm(bn) => bn.channels().checked_mul(2),
            _ => Some(0),
        }
    }

    /// Number of weight elements (the part before the bias).
    pub fn weight_len(&self) -> usize {
        match self {
            Op::Dense { op, .. } => op.inputs * op.outputs,
            Op::Conv { op, .. } => op.out_c * op.window.kernel_h * op.window.kernel_w * op.in_c,
            Op::Depthwise { op, .. } => op.window.kernel_h * op.window.kernel_w * op.channels,
            Op::BatchNorm(bn) => bn.channels(),
            _ => 0,
        }
    }

    /// Multiply-accumulates per sample in the forward pass.
    pub fn macs(&self, output: Hwc) -> usize {
        match self {
            Op::Dense { op, .. } => op.inputs * op.outputs,
            Op::Conv { op, .. } => {
                output.h * output.w * op.out_c * op.window.kernel_h * op.window.kernel_w * op.in_c
            }
            Op::Depthwise { op, .. } => {
                output.h * output.w * op.channels * op.window.kernel_h * op.window.kernel_w
            }
            _ => 0,
        }
    }
}

/// A resolved layer: what it computes and its per-sample input and output shapes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Resolved {
    /// The operation.
    pub op: Op,
    /// Input shape of one sample.
    pub input: Hwc,
    /// Output shape of one sample.
    pub output: Hwc,
}

/// Why a network description is not usable.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// TOML syntax or an unknown field/type.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// The file cannot be read.
    #[error("{path}: cannot read network file: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A layer does not fit its input or its parameters are invalid.
    #[error("layer {index} ({kind}): {message}")]
    Layer {
        /// 1-based position in the file.
        index: usize,
        /// Layer type.
        kind: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A network-level problem.
    #[error("network: {0}")]
    Network(String),
    /// An unknown preset name.
    #[error("unknown preset `{0}`; presets: {names}", names = PRESETS.join(", "))]
    UnknownPreset(String),
}

/// Names accepted by [`preset`].
pub const PRESETS: [&str; 5] = [
    "paper-mlp",
    "paper-mlp-nobn",
    "cnn",
    "digits-mlp",
    "digits-cnn",
];

fn core_msg(e: CoreError) -> String {
    e.to_string()
}

/// The layer field that makes `text` fail to parse, with its line and what
/// is accepted: `line 7: layer 2 (conv2d), kernel = -3: -3 is negative:
/// give ...`. Layers are read through serde's internally tagged enum,
/// which buffers a layer's fields and so reports their errors at the
/// layer's table, not at the field; this reads the size and padding fields
/// one by one where they are written. `None` when they are all valid (the
/// parser's own message then says what is wrong).
fn field_error(text: &str) -> Option<String> {
    use serde::de::IntoDeserializer;
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let layers = doc.get_ref().get("layers")?;
    let DeValue::Array(layers) = layers.get_ref() else {
        return None;
    };
    let line = |at: usize| text[..at.min(text.len())].matches('\n').count() + 1;
    for (i, layer) in layers.iter().enumerate() {
        let DeValue::Table(fields) = layer.get_ref() else {
            continue;
        };
        let kind = fields
            .get("type")
            .and_then(|t| t.get_ref().as_str().map(str::to_owned))
            .unwrap_or_else(|| "?".into());
        for (key, value) in fields.iter() {
            let span = value.span();
            let err = match &**key.get_ref() {
                "kernel" | "stride" => Pair::deserialize(value.clone().into_deserializer())
                    .err()
                    .map(|e| e.message().to_owned()),
                "padding" => PaddingSpec::deserialize(value.clone().into_deserializer())
                    .err()
                    .map(|e| e.message().to_owned()),
                _ => None,
            };
            if let Some(err) = err {
                return Some(format!(
                    "line {}: layer {} ({kind}), {} = {}: {err}",
                    line(span.start),
                    i + 1,
                    key.get_ref(),
                    text.get(span).unwrap_or("?").trim()
                ));
            }
        }
    }
    None
}

impl NetworkSpec {
    /// Parse a TOML network description.
    pub fn from_toml(text: &str, path: &str) -> Result<Self, SpecError> {
        toml::from_str(text).map_err(|e| SpecError::Parse {
            path: path.to_owned(),
            message: field_error(text).unwrap_or_else(|| e.to_string()),
        })
    }

    /// Read and parse a TOML file, and check that its layers chain (a
    /// layer's error then names the file too).
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: shown.clone(),
            source,
        })?;
        let spec = Self::from_toml(&text, &shown)?;
        spec.resolve().map_err(|e| SpecError::Parse {
            path: shown,
            message: e.to_string(),
        })?;
        Ok(spec)
    }

    /// Serialise as TOML.
    pub fn to_toml(&self) -> String {
        // A NetworkSpec always serialises: every field is a plain value.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Infer and check every layer's shapes. Errors name the layer and the fix.
    pub fn resolve(&self) -> Result<Vec<Resolved>, SpecError> {
        let [h, w, c] = self.input;
        if h == 0 || w == 0 || c == 0 {
            return Err(SpecError::Network(format!(
                "input shape {h}x{w}x{c} has a zero dimension"
            )));
        }
        if self.classes < 2 {
            return Err(SpecError::Network(format!(
                "classes = {} but a classifier needs at least 2",
                self.classes
            )));
        }
        if self.layers.is_empty() {
            return Err(SpecError::Network("no layers".into()));
        }
        let mut shape = Hwc { h, w, c };
        if shape.checked_len().is_none() {
            return Err(SpecError::Network(format!(
                "input shape {shape} has more values per sample than this machine can address"
            )));
        }
        let mut out = Vec::with_capacity(self.layers.len());
        for (i, spec) in self.layers.iter().enumerate() {
            let err = |message: String| SpecError::Layer {
                index: i + 1,
                kind: spec.kind(),
                message,
            };
            let window = |kernel: Pair, stride: Pair, padding: PaddingSpec| {
                let (kh, kw) = kernel.hw();
                let (sh, sw) = stride.hw();
                Window {
                    kernel_h: kh,
                    kernel_w: kw,
                    stride_h: sh,
                    stride_w: sw,
                    padding: padding.resolve((shape.h, shape.w), (kh, kw), (sh, sw)),
                }
            };
            let prev = out.last().map(|r: &Resolved| r.op);
            let op = match *spec {
                LayerSpec::Dense { units, bias } => Op::Dense {
                    op: normcore::layers::Dense::new(shape.len(), units)
                        .map_err(|e| err(format!("units must be >= 1 ({})", core_msg(e))))?,
                    bias,
                },
                LayerSpec::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                    bias,
                } => Op::Conv {
                    op: Conv2d::new(
                        shape.h,
                        shape.w,
                        shape.c,
                        filters,
                        window(kernel, stride, padding),
                    )
                    .map_err(|e| {
                        err(format!(
                            "does not fit its {shape} input: {}; make the kernel smaller or add padding",
                            core_msg(e)
                        ))
                    })?,
                    bias,
                },
                LayerSpec::DepthwiseConv2d {
                    kernel,
                    stride,
                    padding,
                    bias,
                } => Op::Depthwise {
                    op: DepthwiseConv2d::new(shape.h, shape.w, shape.c, window(kernel, stride, padding))
                        .map_err(|e| {
                            err(format!(
                                "does not fit its {shape} input: {}; make the kernel smaller or add padding",
                                core_msg(e)
                            ))
                        })?,
                    bias,
                },
                LayerSpec::Batchnorm { eps, momentum } => {
                    if !matches!(
                        prev,
                        Some(Op::Dense { .. } | Op::Conv { .. } | Op::Depthwise { .. })
                    ) {
                        return Err(err(format!(
                            "BN must directly follow a dense, conv2d or depthwise_conv2d layer so that it can be folded into it; it follows {}",
                            i.checked_sub(1).map_or("the input", |p| self.layers[p].kind())
                        )));
                    }
                    Op::BatchNorm(
                        normcore::BatchNorm::new(shape.c, BatchNormConfig { eps, momentum })
                            .map_err(|e| err(core_msg(e)))?,
                    )
                }
                LayerSpec::Relu => Op::Act(Activation::Relu),
                LayerSpec::Relu6 => Op::Act(Activation::Relu6),
                LayerSpec::Sigmoid => Op::Act(Activation::Sigmoid),
                LayerSpec::Tanh => Op::Act(Activation::Tanh),
                LayerSpec::Maxpool {
                    kernel,
                    stride,
                    padding,
                }
                | LayerSpec::Avgpool {
                    kernel,
                    stride,
                    padding,
                } => {
                    let kind = if matches!(spec, LayerSpec::Maxpool { .. }) {
                        PoolKind::Max
                    } else {
                        PoolKind::Average
                    };
                    Op::Pool(
                        Pool2d::new(
                            kind,
                            shape.h,
                            shape.w,
                            shape.c,
                            window(kernel, stride.unwrap_or(kernel), padding),
                        )
                        .map_err(|e| {
                            err(format!("does not fit its {shape} input: {}", core_msg(e)))
                        })?,
                    )
                }
                LayerSpec::GlobalAvgpool => Op::GlobalAvgPool,
                LayerSpec::Flatten => Op::Flatten,
                LayerSpec::Dropout { rate } => Op::Dropout(
                    normcore::layers::Dropout::new(rate).map_err(|e| err(core_msg(e)))?,
                ),
            };
            let output = match op {
                Op::Dense { op, .. } => Hwc {
                    h: 1,
                    w: 1,
                    c: op.outputs,
                },
                Op::Conv { op, .. } => {
                    let s = op.output_shape(1).map_err(|e| err(core_msg(e)))?;
                    Hwc {
                        h: s.h,
                        w: s.w,
                        c: s.c,
                    }
                }
                Op::Depthwise { op, .. } => {
                    let s = op.output_shape(1).map_err(|e| err(core_msg(e)))?;
                    Hwc {
                        h: s.h,
                        w: s.w,
                        c: s.c,
                    }
                }
                Op::Pool(p) => {
                    let s = p.output_shape(1).map_err(|e| err(core_msg(e)))?;
                    Hwc {
                        h: s.h,
                        w: s.w,
                        c: s.c,
                    }
                }
                Op::GlobalAvgPool => Hwc {
                    h: 1,
                    w: 1,
                    c: shape.c,
                },
                Op::Flatten => Hwc {
                    h: 1,
                    w: 1,
                    c: shape.len(),
                },
                Op::BatchNorm(_) | Op::Act(_) | Op::Dropout(_) => shape,
            };
            if output.checked_len().is_none() {
                return Err(err(format!(
                    "its output {output} has more values per sample than this machine can address"
                )));
            }
            if op.checked_param_len().is_none() {
                return Err(err(
                    "its parameters need more than 2^64 bytes, more than this machine can \
                     address; make it smaller"
                        .into(),
                ));
            }
            out.push(Resolved {
                op,
                input: shape,
                output,
            });
            shape = output;
        }
        if shape.len() != self.classes {
            return Err(SpecError::Network(format!(
                "the last layer produces {} values per sample ({shape}) but classes = {}; end with a dense layer of {} units",
                shape.len(),
                self.classes,
                self.classes
            )));
        }
        Ok(out)
    }
}

/// A built-in network by name (see [`PRESETS`]).
pub fn preset(name: &str) -> Result<NetworkSpec, SpecError> {
    use LayerSpec::*;
    let bn = || Batchnorm {
        eps: default_eps(),
        momentum: default_bn_momentum(),
    };
    let dense = |units, bias| Dense { units, bias };
    let conv = |filters, kernel, padding| Conv2d {
        filters,
        kernel: Pair::Square(kernel),
        stride: Pair::Square(1),
        padding,
        bias: false,
    };
    let pool2 = || Maxpool {
        kernel: Pair::Square(2),
        stride: None,
        padding: PaddingSpec::default(),
    };
    let spec = |name: &str, input, layers| NetworkSpec {
        name: name.to_owned(),
        input,
        classes: 10,
        layers,
    };
    Ok(match name {
        // Sec. 4.1: 784-100-100-100-10, sigmoid, BN before each hidden
        // nonlinearity (x = BN(Wu): no bias, beta replaces it).
        "paper-mlp" => spec(
            name,
            [28, 28, 1],
            vec![
                dense(100, false),
                bn(),
                Sigmoid,
                dense(100, false),
                bn(),
                Sigmoid,
                dense(100, false),
                bn(),
                Sigmoid,
                dense(10, true),
            ],
        ),
        "paper-mlp-nobn" => spec(
            name,
            [28, 28, 1],
            vec![
                dense(100, true),
                Sigmoid,
                dense(100, true),
                Sigmoid,
                dense(100, true),
                Sigmoid,
                dense(10, true),
            ],
        ),
        // conv5x5x16-BN-ReLU-maxpool-conv5x5x32-BN-ReLU-maxpool-dense10 (valid
        // padding, PyTorch's default): 28 -> 24 -> 12 -> 8 -> 4.
        "cnn" => spec(
            name,
            [28, 28, 1],
            vec![
                conv(16, 5, PaddingSpec::default()),
                bn(),
                Relu,
                pool2(),
                conv(32, 5, PaddingSpec::default()),
                bn(),
                Relu,
                pool2(),
                dense(10, true),
            ],
        ),
        // Sized for the 8x8 UCI digits and a Cortex-M0: 64-32-32-10.
        "digits-mlp" => spec(
            name,
            [8, 8, 1],
            vec![
                dense(32, false),
                bn(),
                Relu,
                dense(32, false),
                bn(),
                Relu,
                dense(10, true),
            ],
        ),
        "digits-cnn" => spec(
            name,
            [8, 8, 1],
            vec![
                conv(8, 3, PaddingSpec::Named(NamedPadding::Same)),
                bn(),
                Relu,
                pool2(),
                conv(16, 3, PaddingSpec::Named(NamedPadding::Same)),
                bn(),
                Relu,
                pool2(),
                dense(10, true),
            ],
        ),
        other => return Err(SpecError::UnknownPreset(other.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_resolve_with_expected_shapes() {
        for name in PRESETS {
            let spec = preset(name).unwrap();
            let layers = spec.resolve().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(layers.last().unwrap().output.len(), 10);
        }
        let cnn = preset("cnn").unwrap().resolve().unwrap();
        assert_eq!(
            cnn[3].output,
            Hwc {
                h: 12,
                w: 12,
                c: 16
            }
        );
        assert_eq!(cnn[7].output, Hwc { h: 4, w: 4, c: 32 });
        let mlp = preset("paper-mlp").unwrap().resolve().unwrap();
        let params: usize = mlp.iter().map(|r| r.op.param_len()).sum();
        // 784·100 + 2·100·100 + 100·10 + 10 weights/bias, 3·200 BN params.
        assert_eq!(params, 78_400 + 20_000 + 1_010 + 600);
        assert!(matches!(preset("nope"), Err(SpecError::UnknownPreset(_))));
    }

    #[test]
    fn toml_round_trip_and_same_padding() {
        let text = r#"
            name = "t"
            input = [8, 8, 1]
            classes = 10
            [[layers]]
            type = "conv2d"
            filters = 4
            kernel = 3
            stride = 2
            padding = "same"
            bias = false
            [[layers]]
            type = "batchnorm"
            [[layers]]
            type = "relu6"
            [[layers]]
            type = "dense"
            units = 10
        "#;
        let spec = NetworkSpec::from_toml(text, "t.toml").unwrap();
        let r = spec.resolve().unwrap();
        // SAME with stride 2 on 8: out 4, total padding (4-1)*2+3-8 = 1, at the bottom/right.
        assert_eq!(r[0].output, Hwc { h: 4, w: 4, c: 4 });
        let Op::Conv { op, .. } = r[0].op else {
            panic!()
        };
        assert_eq!(
            op.window.padding,
            Padding {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1
            }
        );
        let again = NetworkSpec::from_toml(&spec.to_toml(), "again").unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn networks_that_do_not_chain_are_rejected_with_the_layer_named() {
        let bad = |layers: &str| {
            let text = format!("input = [8, 8, 1]\nclasses = 10\n{layers}");
            match NetworkSpec::from_toml(&text, "x.toml") {
                Ok(s) => s.resolve().unwrap_err().to_string(),
                Err(e) => e.to_string(),
            }
        };
        let e = bad("[[layers]]\ntype = \"batchnorm\"\n[[layers]]\ntype = \"dense\"\nunits = 10");
        assert!(
            e.contains("layer 1 (batchnorm)") && e.contains("follows the input"),
            "{e}"
        );
        let e = bad("[[layers]]\ntype = \"relu\"\n[[layers]]\ntype = \"batchnorm\"\n[[layers]]\ntype = \"dense\"\nunits = 10");
        assert!(
            e.contains("layer 2 (batchnorm)") && e.contains("follows relu"),
            "{e}"
        );
        let e = bad("[[layers]]\ntype = \"conv2d\"\nfilters = 2\nkernel = 9\n[[layers]]\ntype = \"dense\"\nunits = 10");
        assert!(e.contains("layer 1 (conv2d)") && e.contains("8x8x1"), "{e}");
        let e = bad("[[layers]]\ntype = \"dense\"\nunits = 7");
        assert!(e.contains("classes = 10"), "{e}");
        let e = bad("[[layers]]\ntype = \"densely\"\nunits = 7");
        assert!(e.contains("x.toml") && e.contains("densely"), "{e}");
        let e = bad("[[layers]]\ntype = \"dense\"\nunits = 10\nbais = true");
        assert!(e.contains("bais"), "{e}");
        let e = bad(
            "[[layers]]\ntype = \"dropout\"\nrate = 1.5\n[[layers]]\ntype = \"dense\"\nunits = 10",
        );
        assert!(
            e.contains("layer 1 (dropout)") && e.contains("dropout rate"),
            "{e}"
        );
    }

    /// Issue 12: a bad size or padding names the file, the line, the layer,
    /// the field and what is accepted.
    #[test]
    fn bad_sizes_name_the_line_the_field_and_the_forms() {
        let text = "name = \"n\"\ninput = [8, 8, 1]\nclasses = 10\n[[layers]]\ntype = \"dense\"\n\
                    units = 4\n[[layers]]\ntype = \"conv2d\"\nfilters = 2\n\
                    kernel = KERNEL\nstride = STRIDE\npadding = PADDING\n";
        let bad = |kernel: &str, stride: &str, padding: &str| {
            let t = text
                .replace("KERNEL", kernel)
                .replace("STRIDE", stride)
                .replace("PADDING", padding);
            NetworkSpec::from_toml(&t, "net.toml")
                .unwrap_err()
                .to_string()
        };
        let e = bad("-3", "1", "0");
        assert_eq!(
            e,
            "net.toml: line 10: layer 2 (conv2d), kernel = -3: -3 is negative: give a whole \
             number >= 1 (e.g. 3) or [height, width] (e.g. [3, 3])"
        );
        let e = bad("3", "[1, -2]", "0");
        assert!(
            e.contains("line 11: layer 2 (conv2d), stride = [1, -2]: -2 is negative"),
            "{e}"
        );
        let e = bad("[3, 3, 3]", "1", "0");
        assert!(e.contains("kernel = [3, 3, 3]: more than 2 numbers"), "{e}");
        let e = bad("3", "1", "\"full\"");
        assert!(
            e.contains("line 12: layer 2 (conv2d), padding = \"full\": \"full\" is not a padding: give \"valid\", \"same\""),
            "{e}"
        );
        let e = bad("3", "1", "[1, 1]");
        assert!(e.contains("padding = [1, 1]: 2 numbers, not 4"), "{e}");
        // Valid forms still read, and write back the same.
        let t = text
            .replace("KERNEL", "[3, 2]")
            .replace("STRIDE", "2")
            .replace("PADDING", "[1, 1, 0, 0]");
        let spec = NetworkSpec::from_toml(&t, "net.toml").unwrap();
        assert_eq!(
            NetworkSpec::from_toml(&spec.to_toml(), "again").unwrap(),
            spec
        );
    }
}
