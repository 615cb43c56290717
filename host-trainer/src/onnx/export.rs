//! normcore network → ONNX graph (opset 17), BN unfolded with its running
//! statistics, weights back in NCHW order. Importing the result gives the
//! same parameters bit for bit.

use super::proto::{
    attribute_type, data_type, AttributeProto, Dimension, DimensionValue, GraphProto, ModelProto,
    NodeProto, OperatorSetIdProto, StringStringEntryProto, TensorProto, TensorShapeProto,
    TypeProto, TypeProtoTensor, ValueInfoProto,
};
use super::PIXEL_SCALE_KEY;
use crate::network::Network;
use crate::spec::Op;
use normcore::layers::{Activation, PoolKind, Window};

/// The opset written.
const OPSET: i64 = 17;
/// The IR version of opset 17.
const IR_VERSION: i64 = 8;

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INT,
        i,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[usize]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::INTS,
        ints: v.iter().map(|&x| x as i64).collect(),
        ..Default::default()
    }
}

fn float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        r#type: attribute_type::FLOAT,
        f,
        ..Default::default()
    }
}

fn tensor(name: String, dims: &[usize], values: &[f32]) -> TensorProto {
    TensorProto {
        name,
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: data_type::FLOAT,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn value(name: &str, dims: &[Option<usize>]) -> ValueInfoProto {
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TypeProtoTensor {
                elem_type: data_type::FLOAT,
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Some(v) => DimensionValue::DimValue(*v as i64),
                                None => DimensionValue::DimParam("N".into()),
                            }),
                        })
                        .collect(),
                }),
            }),
        }),
        doc_string: String::new(),
    }
}

fn window(w: Window) -> Vec<AttributeProto> {
    let p = w.padding;
    vec![
        ints("kernel_shape", &[w.kernel_h, w.kernel_w]),
        ints("strides", &[w.stride_h, w.stride_w]),
        ints("pads", &[p.top, p.left, p.bottom, p.right]),
    ]
}

/// The network as an ONNX model (bytes of a `.onnx` file): one float input
/// `input` `[N, C, H, W]`, one output `logits` `[N, classes]`, opset 17.
/// `pixel_scale`, when given, is stored as metadata for `normcore import`.
pub fn to_onnx(net: &Network, pixel_scale: Option<f32>) -> Vec<u8> {
    use prost::Message;
    let mut nodes: Vec<NodeProto> = Vec::new();
    let mut inits: Vec<TensorProto> = Vec::new();
    let mut cur = "input".to_owned();
    // The map a value still has (ONNX keeps [N, C, H, W] until a flatten).
    let i = net.input();
    let mut map = Some((i.c, i.h, i.w));
    // The map an explicit flatten layer flattened, until a dense reads it.
    let mut flat_from = None;
    let node = |nodes: &mut Vec<NodeProto>,
                cur: &mut String,
                op: &str,
                name: String,
                extra: Vec<String>,
                attribute: Vec<AttributeProto>| {
        let out = format!("{name}_out");
        let mut input = vec![cur.clone()];
        input.extend(extra);
        nodes.push(NodeProto {
            input,
            output: vec![out.clone()],
            name,
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        *cur = out;
    };
    let flatten = |nodes: &mut Vec<NodeProto>, cur: &mut String, k: usize| {
        let out = format!("flatten{k}_out");
        nodes.push(NodeProto {
            input: vec![cur.clone()],
            output: vec![out.clone()],
            name: format!("flatten{k}"),
            op_type: "Flatten".into(),
            attribute: vec![int("axis", 1)],
            ..Default::default()
        });
        *cur = out;
    };
    for (k, l) in net.layers.iter().enumerate() {
        let k = k + 1;
        let w = l.weights();
        let b = l.bias();
        match l.r.op {
            Op::Dense { op, bias } => {
                // normcore flattens H·W·C; ONNX flattens C·H·W.
                let from = match map.take() {
                    Some(m) => {
                        flatten(&mut nodes, &mut cur, k);
                        Some(m)
                    }
                    None => flat_from.take(),
                };
                let (n_in, n_out) = (op.inputs, op.outputs);
                let mut wt = vec![0f32; n_in * n_out];
                for o in 0..n_out {
                    for j in 0..n_in {
                        let oc = match from {
                            Some((c, h, w)) => (j % c) * h * w + j / c,
                            None => j,
                        };
                        wt[o * n_in + oc] = w[o * n_in + j];
                    }
                }
                let name = format!("dense{k}");
                inits.push(tensor(format!("{name}.weight"), &[n_out, n_in], &wt));
                let mut extra = vec![format!("{name}.weight")];
                if bias {
                    inits.push(tensor(format!("{name}.bias"), &[n_out], b));
                    extra.push(format!("{name}.bias"));
                }
                node(
                    &mut nodes,
                    &mut cur,
                    "Gemm",
                    name,
                    extra,
                    vec![int("transB", 1)],
                );
            }
            Op::Conv { op, bias } => {
                let (m, c) = (op.out_c, op.in_c);
                let (kh, kw) = (op.window.kernel_h, op.window.kernel_w);
                let mut wt = vec![0f32; m * c * kh * kw];
                for o in 0..m {
                    for ci in 0..c {
                        for y in 0..kh {
                            for x in 0..kw {
                                wt[((o * c + ci) * kh + y) * kw + x] =
                                    w[((o * kh + y) * kw + x) * c + ci];
                            }
                        }
                    }
                }
                let name = format!("conv{k}");
                inits.push(tensor(format!("{name}.weight"), &[m, c, kh, kw], &wt));
                let mut extra = vec![format!("{name}.weight")];
                if bias {
                    inits.push(tensor(format!("{name}.bias"), &[m], b));
                    extra.push(format!("{name}.bias"));
                }
                node(&mut nodes, &mut cur, "Conv", name, extra, window(op.window));
                map = Some((m, l.r.output.h, l.r.output.w));
            }
            Op::Depthwise { op, bias } => {
                let c = op.channels;
                let (kh, kw) = (op.window.kernel_h, op.window.kernel_w);
                let mut wt = vec![0f32; c * kh * kw];
                for ch in 0..c {
                    for y in 0..kh {
                        for x in 0..kw {
                            wt[(ch * kh + y) * kw + x] = w[(y * kw + x) * c + ch];
                        }
                    }
                }
                let name = format!("depthwise{k}");
                inits.push(tensor(format!("{name}.weight"), &[c, 1, kh, kw], &wt));
                let mut extra = vec![format!("{name}.weight")];
                if bias {
                    inits.push(tensor(format!("{name}.bias"), &[c], b));
                    extra.push(format!("{name}.bias"));
                }
                let mut attrs = window(op.window);
                attrs.push(int("group", c as i64));
                node(&mut nodes, &mut cur, "Conv", name, extra, attrs);
                map = Some((c, l.r.output.h, l.r.output.w));
            }
            Op::BatchNorm(bn) => {
                let c = bn.channels();
                let name = format!("bn{k}");
                let mut extra = Vec::new();
                for (part, v) in [
                    ("scale", w),
                    ("bias", b),
                    ("mean", &l.running_mean[..]),
                    ("var", &l.running_var[..]),
                ] {
                    inits.push(tensor(format!("{name}.{part}"), &[c], v));
                    extra.push(format!("{name}.{part}"));
                }
                node(
                    &mut nodes,
                    &mut cur,
                    "BatchNormalization",
                    name,
                    extra,
                    vec![float("epsilon", bn.config().eps)],
                );
            }
            Op::Act(a) => {
                let (op, extra) = match a {
                    Activation::Relu => ("Relu", vec![]),
                    Activation::Sigmoid => ("Sigmoid", vec![]),
                    Activation::Tanh => ("Tanh", vec![]),
                    Activation::Relu6 => {
                        inits.push(tensor(format!("relu6_{k}.min"), &[], &[0.0]));
                        inits.push(tensor(format!("relu6_{k}.max"), &[], &[6.0]));
                        (
                            "Clip",
                            vec![format!("relu6_{k}.min"), format!("relu6_{k}.max")],
                        )
                    }
                };
                let name = format!("{}{k}", op.to_lowercase());
                node(&mut nodes, &mut cur, op, name, extra, vec![]);
            }
            Op::Pool(p) => {
                let (op, name) = match p.kind {
                    PoolKind::Max => ("MaxPool", format!("maxpool{k}")),
                    PoolKind::Average => ("AveragePool", format!("avgpool{k}")),
                };
                node(&mut nodes, &mut cur, op, name, vec![], window(p.window));
                map = Some((p.channels, l.r.output.h, l.r.output.w));
            }
            Op::GlobalAvgPool => {
                node(
                    &mut nodes,
                    &mut cur,
                    "GlobalAveragePool",
                    format!("gap{k}"),
                    vec![],
                    vec![],
                );
                map = Some((l.r.output.c, 1, 1));
            }
            Op::Flatten => {
                if let Some(m) = map.take() {
                    flatten(&mut nodes, &mut cur, k);
                    flat_from = Some(m);
                }
            }
            Op::Dropout(_) => {}
        }
    }
    if map.is_some() {
        flatten(&mut nodes, &mut cur, net.layers.len() + 1);
    }
    if nodes.is_empty() {
        node(
            &mut nodes,
            &mut cur,
            "Identity",
            "identity".into(),
            vec![],
            vec![],
        );
    }
    // The last value is the graph's output, `logits`.
    if let Some(last) = nodes.last_mut() {
        last.output = vec!["logits".into()];
    }
    let graph = GraphProto {
        node: nodes,
        name: net.spec.name.clone(),
        initializer: inits,
        input: vec![value("input", &[None, Some(i.c), Some(i.h), Some(i.w)])],
        output: vec![value("logits", &[None, Some(net.classes())])],
        ..Default::default()
    };
    ModelProto {
        ir_version: IR_VERSION,
        opset_import: vec![OperatorSetIdProto {
            domain: String::new(),
            version: OPSET,
        }],
        producer_name: "normcore".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Some(graph),
        metadata_props: pixel_scale
            .map(|p| StringStringEntryProto {
                key: PIXEL_SCALE_KEY.into(),
                value: p.to_string(),
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
    .encode_to_vec()
}
