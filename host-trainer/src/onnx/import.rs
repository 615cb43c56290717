//! ONNX graph → normcore network (see the module above for the layouts).
//!
//! The graph must be one chain: a single float input `[N, C, H, W]` or
//! `[N, F]` (`N` free, the rest fixed), every operator reading the previous
//! one's output (its other inputs constant: initializers or `Constant`
//! nodes), a single output. Everything else is refused with the node(s)
//! named: an operator outside [`SUPPORTED`], a branch or skip connection, a
//! shape that cannot be resolved for one sample, a training-mode BN.

use super::proto::{
    attribute_type, data_type, AttributeProto, DimensionValue, ModelProto, NodeProto, TensorProto,
};
use super::PIXEL_SCALE_KEY;
use crate::network::{Init, Network};
use crate::spec::{LayerSpec, NetworkSpec, PaddingSpec, Pair, SpecError};
use normcore::BatchNormConfig;
use std::collections::{HashMap, HashSet};
use std::path::Path;

/// The operators the importer reads (standard domain), as shown in errors.
pub const SUPPORTED: &str = "Conv (group 1, or depthwise: group = channels), \
BatchNormalization (inference), Relu, Clip (as ReLU: min 0; as ReLU6: min 0, max 6), \
Sigmoid, Tanh, MaxPool, AveragePool, GlobalAveragePool, Flatten, Reshape to [N, -1], \
Gemm, MatMul (+ Add as its bias), Dropout and Identity (removed), Constant";

/// The standard-domain opset versions read.
pub const OPSETS: std::ops::RangeInclusive<i64> = 13..=21;

const KNOWN_OPS: [&str; 17] = [
    "Conv",
    "BatchNormalization",
    "Relu",
    "Clip",
    "Sigmoid",
    "Tanh",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Gemm",
    "MatMul",
    "Add",
    "Dropout",
    "Identity",
    "Constant",
];

/// Why an ONNX file cannot be imported; the message names the file and,
/// where there is one, the node.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ImportError {
    /// The file (or `"ONNX bytes"`).
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// An imported network.
#[derive(Debug)]
pub struct Imported {
    /// The network, BN unfolded with the file's running statistics.
    pub net: Network,
    /// The pixel scale the file carries (`normcore.pixel_scale` metadata,
    /// written by `normcore export --format onnx`), if any.
    pub pixel_scale: Option<f32>,
    /// The producer named in the file (`pytorch 2.x`), for the report.
    pub producer: String,
    /// The standard opset version.
    pub opset: i64,
}

/// Import the ONNX file at `path`.
pub fn import_file(path: &Path) -> Result<Imported, ImportError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| ImportError {
        path: shown.clone(),
        message: format!("cannot read: {e}"),
    })?;
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    import_bytes(&bytes, &name).map_err(|message| ImportError {
        path: shown,
        message,
    })
}

/// Constant values by name: initializers and `Constant` outputs.
#[derive(Debug, Clone)]
struct Const {
    dims: Vec<usize>,
    /// Every element as f64 (float and integer tensors alike).
    values: Vec<f64>,
}

/// The shape of one sample between two operators.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// A feature map, ONNX `[C, H, W]`.
    Map { c: usize, h: usize, w: usize },
    /// Features; `from` is the map a flatten made them from, while no
    /// dense layer has consumed them yet (its columns need permuting).
    Flat {
        f: usize,
        from: Option<(usize, usize, usize)>,
    },
}

impl Shape {
    fn len(self) -> usize {
        match self {
            Shape::Map { c, h, w } => c * h * w,
            Shape::Flat { f, .. } => f,
        }
    }
    fn show(self) -> String {
        match self {
            Shape::Map { c, h, w } => format!("[N, {c}, {h}, {w}]"),
            Shape::Flat { f, .. } => format!("[N, {f}]"),
        }
    }
}

/// A layer being built, with its values and the node it came from.
#[derive(Debug)]
struct Built {
    spec: LayerSpec,
    params: Vec<f32>,
    mean: Vec<f32>,
    var: Vec<f32>,
    node: String,
}

fn label(node: &NodeProto, index: usize) -> String {
    if node.name.is_empty() {
        format!(
            "node #{index} ({}, output `{}`)",
            node.op_type,
            node.output.first().map_or("", |s| s.as_str())
        )
    } else {
        format!("node `{}` ({})", node.name, node.op_type)
    }
}

fn tensor_values(t: &TensorProto) -> Result<Const, String> {
    let name = &t.name;
    if t.data_location == 1 || !t.external_data.is_empty() {
        return Err(format!(
            "tensor `{name}` keeps its values in an external file; save the model as one \
             file (onnx.save(model, path, save_as_external_data=False))"
        ));
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor `{name}` has dimension {d}")))
        .collect::<Result<Vec<_>, _>>()?;
    let n = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format!("tensor `{name}` is too large"))?;
    let raw = &t.raw_data;
    let from_raw = |size: usize| -> Result<Option<Vec<[u8; 8]>>, String> {
        if raw.is_empty() {
            return Ok(None);
        }
        if raw.len() != n.saturating_mul(size) {
            return Err(format!(
                "tensor `{name}` has {} bytes of data for {n} values of {size} bytes",
                raw.len()
            ));
        }
        Ok(Some(
            raw.chunks_exact(size)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b[..size].copy_from_slice(c);
                    b
                })
                .collect(),
        ))
    };
    let values: Vec<f64> = match t.data_type {
        data_type::FLOAT => match from_raw(4)? {
            Some(v) => v
                .iter()
                .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            None => t.float_data.iter().map(|&x| f64::from(x)).collect(),
        },
        data_type::DOUBLE => match from_raw(8)? {
            Some(v) => v.iter().map(|b| f64::from_le_bytes(*b)).collect(),
            None => t.double_data.clone(),
        },
        data_type::INT64 => match from_raw(8)? {
            Some(v) => v.iter().map(|b| i64::from_le_bytes(*b) as f64).collect(),
            None => t.int64_data.iter().map(|&x| x as f64).collect(),
        },
        data_type::INT32 => match from_raw(4)? {
            Some(v) => v
                .iter()
                .map(|b| f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])))
                .collect(),
            None => t.int32_data.iter().map(|&x| f64::from(x)).collect(),
        },
        other => {
            return Err(format!(
                "tensor `{name}` has element type {other}; float (1), double (11), int32 (6) \
                 and int64 (7) are supported"
            ))
        }
    };
    if values.len() != n {
        return Err(format!(
            "tensor `{name}` has {} values for its shape {dims:?} ({n})",
            values.len()
        ));
    }
    Ok(Const { dims, values })
}

/// A node's attributes by name.
struct Attrs<'a> {
    list: &'a [AttributeProto],
    who: &'a str,
}

impl Attrs<'_> {
    fn get(&self, name: &str) -> Option<&AttributeProto> {
        self.list.iter().find(|a| a.name == name)
    }
    fn int(&self, name: &str, default: i64) -> Result<i64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(a) if a.r#type == attribute_type::INT => Ok(a.i),
            Some(_) => Err(format!("{}: attribute {name} is not an integer", self.who)),
        }
    }
    fn float(&self, name: &str, default: f32) -> Result<f32, String> {
        match self.get(name) {
            None => Ok(default),
            Some(a) if a.r#type == attribute_type::FLOAT => Ok(a.f),
            Some(_) => Err(format!("{}: attribute {name} is not a float", self.who)),
        }
    }
    fn ints(&self, name: &str) -> Result<Option<Vec<i64>>, String> {
        match self.get(name) {
            None => Ok(None),
            Some(a) if a.r#type == attribute_type::INTS => Ok(Some(a.ints.clone())),
            Some(_) => Err(format!(
                "{}: attribute {name} is not a list of integers",
                self.who
            )),
        }
    }
    fn string(&self, name: &str, default: &str) -> Result<String, String> {
        match self.get(name) {
            None => Ok(default.to_owned()),
            Some(a) if a.r#type == attribute_type::STRING => {
                Ok(String::from_utf8_lossy(&a.s).into_owned())
            }
            Some(_) => Err(format!("{}: attribute {name} is not a string", self.who)),
        }
    }
    /// Two positive sizes (`kernel_shape`, `strides`), `default` when absent.
    fn pair(&self, name: &str, default: Option<[usize; 2]>) -> Result<[usize; 2], String> {
        match self.ints(name)? {
            None => default.ok_or_else(|| format!("{}: attribute {name} is missing", self.who)),
            Some(v) => match v[..] {
                [a, b] if a > 0 && b > 0 => Ok([a as usize, b as usize]),
                _ => Err(format!(
                    "{}: {name} = {v:?}; two positive values (2-d) are supported",
                    self.who
                )),
            },
        }
    }
}

/// Padding `[top, bottom, left, right]` of a 2-d window from `auto_pad`
/// and `pads` (`[top, left, bottom, right]` in ONNX).
fn padding(
    a: &Attrs<'_>,
    in_hw: [usize; 2],
    k: [usize; 2],
    s: [usize; 2],
) -> Result<[usize; 4], String> {
    let auto = a.string("auto_pad", "NOTSET")?;
    let same = |lower: bool| {
        let mut out = [0usize; 4];
        for d in 0..2 {
            let o = in_hw[d].div_ceil(s[d]);
            let total = ((o.saturating_sub(1)) * s[d] + k[d]).saturating_sub(in_hw[d]);
            let (small, big) = (total / 2, total - total / 2);
            let (begin, end) = if lower { (big, small) } else { (small, big) };
            out[2 * d] = begin;
            out[2 * d + 1] = end;
        }
        out
    };
    match auto.as_str() {
        "NOTSET" | "" => match a.ints("pads")? {
            None => Ok([0; 4]),
            Some(p) => match p[..] {
                [t, l, b, r] if p.iter().all(|&v| v >= 0) => {
                    Ok([t as usize, b as usize, l as usize, r as usize])
                }
                _ => Err(format!(
                    "{}: pads = {p:?}; four non-negative values (2-d) are supported",
                    a.who
                )),
            },
        },
        "VALID" => Ok([0; 4]),
        "SAME_UPPER" => Ok(same(false)),
        "SAME_LOWER" => Ok(same(true)),
        other => Err(format!(
            "{}: auto_pad = {other}; NOTSET, VALID, SAME_UPPER and SAME_LOWER are supported",
            a.who
        )),
    }
}

fn no_dilation(a: &Attrs<'_>) -> Result<(), String> {
    if let Some(d) = a.ints("dilations")? {
        if d.iter().any(|&v| v != 1) {
            return Err(format!(
                "{}: dilations = {d:?}; only dilation 1 is supported",
                a.who
            ));
        }
    }
    Ok(())
}

/// Output size of a window along one dimension, or an error when it does
/// not fit.
fn out_size(who: &str, i: usize, p: usize, k: usize, s: usize) -> Result<usize, String> {
    (i + p).checked_sub(k).map(|v| v / s + 1).ok_or_else(|| {
        format!("{who}: a {k}-wide window does not fit an input of {i} padded by {p}")
    })
}

/// Import an ONNX model from its bytes; `name` names the network when the
/// graph has no name. Errors are messages (the caller adds the file).
pub fn import_bytes(bytes: &[u8], name: &str) -> Result<Imported, String> {
    use prost::Message;
    let model = ModelProto::decode(bytes).map_err(|e| {
        format!("not an ONNX model (the protobuf does not decode: {e}); give a .onnx file")
    })?;
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .ok_or("the model imports no standard (ai.onnx) operator set")?;
    if !OPSETS.contains(&opset) {
        return Err(format!(
            "opset {opset} is not supported: opsets {} to {} are; convert it with \
             onnx.version_converter.convert_version(model, 17)",
            OPSETS.start(),
            OPSETS.end()
        ));
    }
    let graph = model.graph.as_ref().ok_or("the model has no graph")?;
    if let Some(s) = graph.sparse_initializer.first() {
        return Err(format!(
            "sparse initializer `{}` is not supported; store weights densely",
            s.values.as_ref().map_or("", |v| v.name.as_str())
        ));
    }

    // Every unsupported node, listed at once.
    let unsupported: Vec<String> = graph
        .node
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            !(n.domain.is_empty() || n.domain == "ai.onnx")
                || !KNOWN_OPS.contains(&n.op_type.as_str())
        })
        .map(|(i, n)| {
            if n.domain.is_empty() || n.domain == "ai.onnx" {
                label(n, i)
            } else {
                format!("{} in domain {}", label(n, i), n.domain)
            }
        })
        .collect();
    if !unsupported.is_empty() {
        return Err(format!(
            "{} unsupported node(s): {}. Supported: {SUPPORTED}",
            unsupported.len(),
            unsupported.join(", ")
        ));
    }

    let mut consts: HashMap<String, Const> = HashMap::new();
    for t in &graph.initializer {
        consts.insert(t.name.clone(), tensor_values(t)?);
    }
    for (i, n) in graph.node.iter().enumerate() {
        if n.op_type != "Constant" {
            continue;
        }
        let who = label(n, i);
        let a = n
            .attribute
            .first()
            .ok_or_else(|| format!("{who}: a Constant without a value"))?;
        let c = match a.name.as_str() {
            "value" => tensor_values(
                a.t.as_ref()
                    .ok_or_else(|| format!("{who}: value is not a tensor"))?,
            )?,
            "value_float" => Const {
                dims: vec![],
                values: vec![f64::from(a.f)],
            },
            "value_floats" => Const {
                dims: vec![a.floats.len()],
                values: a.floats.iter().map(|&x| f64::from(x)).collect(),
            },
            "value_int" => Const {
                dims: vec![],
                values: vec![a.i as f64],
            },
            "value_ints" => Const {
                dims: vec![a.ints.len()],
                values: a.ints.iter().map(|&x| x as f64).collect(),
            },
            other => {
                return Err(format!(
                    "{who}: a Constant given as {other} is not supported"
                ))
            }
        };
        if let Some(out) = n.output.first() {
            consts.insert(out.clone(), c);
        }
    }

    // The one real input and its shape.
    let inputs: Vec<_> = graph
        .input
        .iter()
        .filter(|v| !consts.contains_key(&v.name))
        .collect();
    let input = match inputs[..] {
        [one] => one,
        _ => {
            return Err(format!(
                "the graph has {} inputs ({}); a sequential network has exactly one",
                inputs.len(),
                inputs
                    .iter()
                    .map(|v| format!("`{}`", v.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    };
    let tt = input
        .r#type
        .as_ref()
        .and_then(|t| t.tensor_type.as_ref())
        .ok_or_else(|| format!("input `{}` is not a tensor", input.name))?;
    if tt.elem_type != data_type::FLOAT {
        return Err(format!(
            "input `{}` has element type {}; a float (1) input is supported",
            input.name, tt.elem_type
        ));
    }
    let dims: Vec<Option<usize>> = tt
        .shape
        .as_ref()
        .map(|s| {
            s.dim
                .iter()
                .map(|d| match d.value {
                    Some(DimensionValue::DimValue(v)) if v > 0 => Some(v as usize),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let show_dims = || {
        let v: Vec<String> = dims
            .iter()
            .map(|d| d.map_or("?".to_owned(), |v| v.to_string()))
            .collect();
        format!("[{}]", v.join(", "))
    };
    let mut shape = match dims[..] {
        [_, Some(c), Some(h), Some(w)] => Shape::Map { c, h, w },
        [_, Some(f)] => Shape::Flat { f, from: None },
        _ => {
            return Err(format!(
                "input `{}` has shape {}: the shape of one sample cannot be resolved; \
                 [N, C, H, W] or [N, F] with fixed C, H, W (or F) is supported (export with a \
                 fixed-size example input; only N may be dynamic)",
                input.name,
                show_dims()
            ))
        }
    };
    let input_shape = match shape {
        Shape::Map { c, h, w } => [h, w, c],
        Shape::Flat { f, .. } => [1, 1, f],
    };

    // Who reads each value: a value read twice is a branch.
    let mut readers: HashMap<&str, Vec<String>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for x in n.input.iter().filter(|x| !x.is_empty()) {
            if !consts.contains_key(x) {
                readers.entry(x.as_str()).or_default().push(label(n, i));
            }
        }
    }
    for o in &graph.output {
        readers
            .entry(o.name.as_str())
            .or_default()
            .push(format!("graph output `{}`", o.name));
    }
    if let Some((v, who)) = readers.iter().find(|(_, r)| r.len() > 1) {
        return Err(format!(
            "value `{v}` is read by {}: a branch (skip connection) is not supported; \
             normcore imports sequential networks, each operator reading the previous one's output",
            who.join(" and ")
        ));
    }

    let mut cur = input.name.clone();
    let mut layers: Vec<Built> = Vec::new();
    let mut matmul_open: Option<usize> = None; // a MatMul layer whose bias an Add may give
    let mut seen_outputs: HashSet<String> = HashSet::new();
    for (i, n) in graph.node.iter().enumerate() {
        if n.op_type == "Constant" {
            continue;
        }
        let who = label(n, i);
        let a = Attrs {
            list: &n.attribute,
            who: &who,
        };
        if let Some(r) = n.attribute.iter().find(|a| !a.ref_attr_name.is_empty()) {
            return Err(format!(
                "{who}: attribute {} refers to a function attribute; not supported",
                r.name
            ));
        }
        // The data input: the first non-constant one, which must be `cur`.
        let data: Vec<&String> = n
            .input
            .iter()
            .filter(|x| !x.is_empty() && !consts.contains_key(*x))
            .collect();
        match data[..] {
            [x] if *x == cur => {}
            [] => {
                return Err(format!(
                    "{who} reads only constants; a sequential network's operators read the \
                     previous operator's output"
                ))
            }
            _ => {
                let other: Vec<String> = data
                    .iter()
                    .filter(|x| ***x != cur)
                    .map(|x| format!("`{x}`"))
                    .collect();
                return Err(format!(
                    "{who} reads {} besides or instead of `{cur}` (the previous operator's \
                     output): a branch (skip connection) is not supported",
                    other.join(", ")
                ));
            }
        }
        if n.input.first() != Some(&cur) && n.op_type != "Add" {
            return Err(format!(
                "{who}: the data input `{cur}` must be its first input"
            ));
        }
        let constant = |k: usize, what: &str| -> Result<Option<&Const>, String> {
            match n.input.get(k).filter(|x| !x.is_empty()) {
                None => Ok(None),
                Some(x) => consts.get(x).map(Some).ok_or_else(|| {
                    format!("{who}: {what} `{x}` must be a constant (initializer or Constant)")
                }),
            }
        };
        let need = |k: usize, what: &str| -> Result<&Const, String> {
            constant(k, what)?.ok_or_else(|| format!("{who}: {what} is missing"))
        };
        let f32s = |c: &Const| c.values.iter().map(|&v| v as f32).collect::<Vec<f32>>();
        let map = |shape: Shape| -> Result<(usize, usize, usize), String> {
            match shape {
                Shape::Map { c, h, w } => Ok((c, h, w)),
                Shape::Flat { .. } => Err(format!(
                    "{who} needs a [N, C, H, W] input but gets {}",
                    shape.show()
                )),
            }
        };
        let extra_outputs = n.output.iter().skip(1).any(|o| !o.is_empty());
        let mut push = |spec: LayerSpec, params: Vec<f32>| {
            layers.push(Built {
                spec,
                params,
                mean: Vec::new(),
                var: Vec::new(),
                node: who.clone(),
            })
        };
        let op = n.op_type.as_str();
        if op != "Add" {
            matmul_open = None;
        }
        match op {
            "Conv" => {
                let (c, h, w) = map(shape)?;
                no_dilation(&a)?;
                let wt = need(1, "weight")?;
                let [m, cg, kh, kw] = wt.dims[..] else {
                    return Err(format!(
                        "{who}: weight has shape {:?}; a 2-d convolution's [M, C/group, KH, KW] is supported",
                        wt.dims
                    ));
                };
                if let Some(ks) = a.ints("kernel_shape")? {
                    if ks != [kh as i64, kw as i64] {
                        return Err(format!(
                            "{who}: kernel_shape {ks:?} differs from the weight's {kh}x{kw}"
                        ));
                    }
                }
                let group = a.int("group", 1)?;
                let s = a.pair("strides", Some([1, 1]))?;
                let p = padding(&a, [h, w], [kh, kw], s)?;
                let bias = constant(2, "bias")?;
                if let Some(b) = bias {
                    if b.values.len() != m {
                        return Err(format!(
                            "{who}: bias has {} values for {m} filters",
                            b.values.len()
                        ));
                    }
                }
                let wv = &wt.values;
                let mut params;
                let spec;
                if group == 1 && cg == c {
                    params = vec![0f32; m * kh * kw * c];
                    for o in 0..m {
                        for ci in 0..c {
                            for y in 0..kh {
                                for x in 0..kw {
                                    params[((o * kh + y) * kw + x) * c + ci] =
                                        wv[((o * c + ci) * kh + y) * kw + x] as f32;
                                }
                            }
                        }
                    }
                    spec = LayerSpec::Conv2d {
                        filters: m,
                        kernel: Pair::Hw([kh, kw]),
                        stride: Pair::Hw(s),
                        padding: PaddingSpec::Explicit(p),
                        bias: bias.is_some(),
                    };
                } else if group as usize == c && cg == 1 && m == c {
                    params = vec![0f32; kh * kw * c];
                    for ch in 0..c {
                        for y in 0..kh {
                            for x in 0..kw {
                                params[(y * kw + x) * c + ch] = wv[(ch * kh + y) * kw + x] as f32;
                            }
                        }
                    }
                    spec = LayerSpec::DepthwiseConv2d {
                        kernel: Pair::Hw([kh, kw]),
                        stride: Pair::Hw(s),
                        padding: PaddingSpec::Explicit(p),
                        bias: bias.is_some(),
                    };
                } else {
                    return Err(format!(
                        "{who}: group = {group} with weight {:?} on {c} input channels; \
                         supported: group 1, or depthwise (group = channels = filters, one filter \
                         per channel)",
                        wt.dims
                    ));
                }
                if let Some(b) = bias {
                    params.extend(f32s(b));
                }
                shape = Shape::Map {
                    c: m,
                    h: out_size(&who, h, p[0] + p[1], kh, s[0])?,
                    w: out_size(&who, w, p[2] + p[3], kw, s[1])?,
                };
                push(spec, params);
            }
            "BatchNormalization" => {
                if a.int("training_mode", 0)? != 0 || extra_outputs {
                    return Err(format!(
                        "{who} is in training mode (training_mode = 1 or running-statistics \
                         outputs); export the model in inference mode (model.eval(), \
                         training=torch.onnx.TrainingMode.PRESERVE or EVAL)"
                    ));
                }
                let ch = match shape {
                    Shape::Map { c, .. } => c,
                    Shape::Flat { f, .. } => f,
                };
                let parts: Vec<Vec<f32>> = ["scale", "bias", "mean", "var"]
                    .iter()
                    .enumerate()
                    .map(|(k, what)| {
                        let c = need(k + 1, what)?;
                        if c.values.len() != ch {
                            return Err(format!(
                                "{who}: {what} has {} values for {ch} channels",
                                c.values.len()
                            ));
                        }
                        Ok(f32s(c))
                    })
                    .collect::<Result<_, String>>()?;
                if parts[3].iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
                    return Err(format!(
                        "{who}: the running variance has a negative or non-finite value"
                    ));
                }
                let eps = a.float("epsilon", 1e-5)?;
                if !(eps.is_finite() && eps > 0.0) {
                    return Err(format!("{who}: epsilon = {eps}; it must be positive"));
                }
                let mut params = parts[0].clone();
                params.extend_from_slice(&parts[1]);
                layers.push(Built {
                    spec: LayerSpec::Batchnorm {
                        eps,
                        momentum: BatchNormConfig::default().momentum,
                    },
                    params,
                    mean: parts[2].clone(),
                    var: parts[3].clone(),
                    node: who.clone(),
                });
            }
            "Relu" => push(LayerSpec::Relu, vec![]),
            "Sigmoid" => push(LayerSpec::Sigmoid, vec![]),
            "Tanh" => push(LayerSpec::Tanh, vec![]),
            "Clip" => {
                let bound = |k: usize, attr: &str| -> Result<Option<f64>, String> {
                    if let Some(c) = constant(k, attr)? {
                        return match c.values[..] {
                            [v] => Ok(Some(v)),
                            _ => Err(format!("{who}: {attr} must be a scalar")),
                        };
                    }
                    Ok(a.get(attr)
                        .map(|_| f64::from(a.float(attr, 0.0).unwrap_or(f32::NAN))))
                };
                let (lo, hi) = (bound(1, "min")?, bound(2, "max")?);
                let spec = match (lo, hi) {
                    (Some(l), h) if l == 0.0 && h.is_none_or(|h| h == f64::INFINITY) => {
                        LayerSpec::Relu
                    }
                    (Some(l), Some(h)) if l == 0.0 && h == 6.0 => LayerSpec::Relu6,
                    _ => {
                        let show = |v: Option<f64>| v.map_or("none".to_owned(), |v| v.to_string());
                        return Err(format!(
                            "{who}: Clip(min {}, max {}) is supported only as ReLU (min 0, no max) \
                             or ReLU6 (min 0, max 6)",
                            show(lo),
                            show(hi)
                        ));
                    }
                };
                push(spec, vec![]);
            }
            "MaxPool" | "AveragePool" => {
                let (c, h, w) = map(shape)?;
                if extra_outputs {
                    return Err(format!("{who}: the Indices output is not supported"));
                }
                no_dilation(&a)?;
                let k = a.pair("kernel_shape", None)?;
                let s = a.pair("strides", Some([1, 1]))?;
                let p = padding(&a, [h, w], k, s)?;
                if op == "AveragePool"
                    && a.int("count_include_pad", 0)? != 0
                    && p.iter().any(|&v| v > 0)
                {
                    return Err(format!(
                        "{who}: count_include_pad = 1 with padding is not supported (normcore's \
                         average excludes the padding, as count_include_pad = 0 does)"
                    ));
                }
                if a.int("ceil_mode", 0)? != 0
                    && ((h + p[0] + p[1]).saturating_sub(k[0]) % s[0] != 0
                        || (w + p[2] + p[3]).saturating_sub(k[1]) % s[1] != 0)
                {
                    return Err(format!(
                        "{who}: ceil_mode = 1 adds a partial window here; only floor mode is \
                         supported (ceil_mode = 0, or sizes where both agree)"
                    ));
                }
                let oh = out_size(&who, h, p[0] + p[1], k[0], s[0])?;
                let ow = out_size(&who, w, p[2] + p[3], k[1], s[1])?;
                let (kernel, stride, padding) =
                    (Pair::Hw(k), Some(Pair::Hw(s)), PaddingSpec::Explicit(p));
                push(
                    if op == "MaxPool" {
                        LayerSpec::Maxpool {
                            kernel,
                            stride,
                            padding,
                        }
                    } else {
                        LayerSpec::Avgpool {
                            kernel,
                            stride,
                            padding,
                        }
                    },
                    vec![],
                );
                shape = Shape::Map { c, h: oh, w: ow };
            }
            "GlobalAveragePool" => {
                let (c, _, _) = map(shape)?;
                push(LayerSpec::GlobalAvgpool, vec![]);
                shape = Shape::Map { c, h: 1, w: 1 };
            }
            "Flatten" | "Reshape" => {
                let f = shape.len();
                if op == "Flatten" {
                    let axis = a.int("axis", 1)?;
                    if axis != 1 {
                        return Err(format!(
                            "{who}: axis = {axis}; only Flatten(axis = 1), to [N, features], is supported"
                        ));
                    }
                } else {
                    let to = need(1, "shape")?;
                    let ok = match to.values[..] {
                        [b, x] => {
                            let batch_ok = b == 0.0 && a.int("allowzero", 0)? == 0
                                || b == 1.0
                                || (b == -1.0 && x == f as f64);
                            batch_ok && (x == -1.0 || x == f as f64)
                        }
                        _ => false,
                    };
                    if !ok {
                        return Err(format!(
                            "{who}: reshape to {:?} is not supported; only to [N, -1] (or \
                             [N, {f}]), a flatten, is",
                            to.values
                        ));
                    }
                }
                if let Shape::Map { c, h, w } = shape {
                    push(LayerSpec::Flatten, vec![]);
                    shape = Shape::Flat {
                        f,
                        from: (c > 1 && h * w > 1).then_some((c, h, w)),
                    };
                }
            }
            "Gemm" | "MatMul" => {
                let Shape::Flat { f, from } = shape else {
                    return Err(format!(
                        "{who} needs a [N, features] input but gets {}; add a Flatten before it",
                        shape.show()
                    ));
                };
                let wt = need(1, "weight")?;
                let [r, cdim] = wt.dims[..] else {
                    return Err(format!(
                        "{who}: weight has shape {:?}; a matrix is supported",
                        wt.dims
                    ));
                };
                let (trans_b, alpha, beta) = if op == "Gemm" {
                    if a.int("transA", 0)? != 0 {
                        return Err(format!("{who}: transA = 1 is not supported"));
                    }
                    (
                        a.int("transB", 0)? != 0,
                        a.float("alpha", 1.0)?,
                        a.float("beta", 1.0)?,
                    )
                } else {
                    (false, 1.0, 1.0)
                };
                let (out, inp) = if trans_b { (r, cdim) } else { (cdim, r) };
                if inp != f {
                    return Err(format!(
                        "{who}: weight {:?} takes {inp} inputs but gets {f}",
                        wt.dims
                    ));
                }
                // ONNX column index of normcore column `j`.
                let col = |j: usize| match from {
                    Some((c, h, w)) => {
                        let (p, ch) = (j / c, j % c);
                        ch * h * w + p
                    }
                    None => j,
                };
                let mut params = vec![0f32; out * inp];
                for o in 0..out {
                    for j in 0..inp {
                        let oc = col(j);
                        let v = if trans_b {
                            wt.values[o * inp + oc]
                        } else {
                            wt.values[oc * out + o]
                        };
                        params[o * inp + j] = (f64::from(alpha) * v) as f32;
                    }
                }
                let bias = if op == "Gemm" {
                    constant(2, "C")?
                } else {
                    None
                };
                if let Some(b) = bias {
                    let n = b.values.len();
                    if n != out && n != 1 {
                        return Err(format!("{who}: C has {n} values for {out} outputs"));
                    }
                    params.extend((0..out).map(|o| (f64::from(beta) * b.values[o % n]) as f32));
                }
                push(
                    LayerSpec::Dense {
                        units: out,
                        bias: bias.is_some(),
                    },
                    params,
                );
                if op == "MatMul" {
                    matmul_open = Some(layers.len() - 1);
                }
                shape = Shape::Flat { f: out, from: None };
            }
            "Add" => {
                // The bias may come first or second (Add commutes).
                let k = usize::from(n.input.first() == Some(&cur));
                let b = constant(k, "addend")?;
                let (Some(li), Some(b)) = (matmul_open.take(), b) else {
                    return Err(format!(
                        "{who}: Add is supported only as the bias of the MatMul just before it"
                    ));
                };
                let out = shape.len();
                let n = b.values.len();
                if n != out && n != 1 {
                    return Err(format!("{who}: the bias has {n} values for {out} outputs"));
                }
                let l = &mut layers[li];
                if let LayerSpec::Dense { bias, .. } = &mut l.spec {
                    *bias = true;
                }
                l.params.extend((0..out).map(|o| b.values[o % n] as f32));
                l.node = format!("{} + {who}", l.node);
            }
            "Dropout" | "Identity" => {}
            _ => return Err(format!("{who}: not supported. Supported: {SUPPORTED}")),
        }
        let out = n
            .output
            .first()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| format!("{who} has no output"))?;
        if !seen_outputs.insert(out.clone()) {
            return Err(format!("{who}: value `{out}` is written twice"));
        }
        cur = out.clone();
    }
    match &graph.output[..] {
        [o] if o.name == cur => {}
        [o] => {
            return Err(format!(
                "the graph output `{}` is not the last operator's output `{cur}`",
                o.name
            ))
        }
        outs => {
            return Err(format!(
                "the graph has {} outputs; a classifier with one output (the logits) is supported",
                outs.len()
            ))
        }
    }
    let classes = match shape {
        Shape::Flat { f, .. } => f,
        Shape::Map { c, h: 1, w: 1 } => c,
        Shape::Map { .. } => {
            return Err(format!(
                "the output has shape {}; end with a dense layer or a global pool to [N, classes]",
                shape.show()
            ))
        }
    };
    if layers.is_empty() {
        return Err("the graph has no operators normcore can run".into());
    }
    let spec = NetworkSpec {
        name: if graph.name.is_empty() || graph.name == "main_graph" || graph.name == "torch_jit" {
            name.to_owned()
        } else {
            graph.name.clone()
        },
        input: input_shape,
        classes,
        layers: layers.iter().map(|l| l.spec.clone()).collect(),
    };
    let node_of = |index: usize| {
        layers
            .get(index.wrapping_sub(1))
            .map_or("?", |l| l.node.as_str())
    };
    spec.resolve().map_err(|e| match &e {
        SpecError::Layer { index, message, .. } => format!("{}: {message}", node_of(*index)),
        _ => e.to_string(),
    })?;
    let mut net =
        Network::new(spec, Init::Xavier, &mut normcore::Rng::new(0)).map_err(|e| e.to_string())?;
    for (l, b) in net.layers.iter_mut().zip(layers) {
        if l.params.len() != b.params.len() {
            return Err(format!(
                "{}: {} parameters read, the layer needs {} (an importer bug)",
                b.node,
                b.params.len(),
                l.params.len()
            ));
        }
        if b.params.iter().any(|v| !v.is_finite()) {
            return Err(format!("{}: a weight is NaN or infinite", b.node));
        }
        l.params = b.params;
        if !b.mean.is_empty() {
            l.running_mean = b.mean;
            l.running_var = b.var;
        }
    }
    let pixel_scale = match model
        .metadata_props
        .iter()
        .find(|p| p.key == PIXEL_SCALE_KEY)
    {
        Some(p) => Some(
            p.value
                .parse::<f32>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    format!(
                        "metadata {PIXEL_SCALE_KEY} = `{}` is not a positive number",
                        p.value
                    )
                })?,
        ),
        None => None,
    };
    let producer = format!("{} {}", model.producer_name, model.producer_version)
        .trim()
        .to_owned();
    Ok(Imported {
        net,
        pixel_scale,
        producer,
        opset,
    })
}
