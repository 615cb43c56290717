//! The importer against onnxruntime's outputs on the fixtures of
//! `host-trainer/tests/onnx/` (made by its `generate.py`), the error
//! cases, and the export → import round trip.

use super::*;
use crate::data::builtin_digits_split;
use crate::export::{calibrate, fold, input_params, quantize, run_file, write_f32, write_int8};
use crate::network::{Mode, Network};
use crate::spec::{LayerSpec, Op};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/onnx")
        .join(name)
}

fn f32s(name: &str) -> Vec<f32> {
    std::fs::read(fixture(name))
        .unwrap()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// NCHW samples to NHWC.
fn nhwc(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
    let per = c * h * w;
    let mut out = vec![0.0; x.len()];
    for (n, s) in x.chunks_exact(per).enumerate() {
        for ch in 0..c {
            for p in 0..h * w {
                out[n * per + p * c + ch] = s[ch * h * w + p];
            }
        }
    }
    out
}

fn logits(net: &mut Network, x: &[f32]) -> Vec<f32> {
    let n = x.len() / net.input().len();
    let mut ws = net.workspace(n, 1).unwrap();
    net.forward(&mut ws, x, Mode::Eval).unwrap().to_vec()
}

/// Largest `|a - b| / max(|b|, 1)`.
fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, r)| (x - r).abs() / r.abs().max(1.0))
        .fold(0.0, f32::max)
}

/// Import `name.onnx`, run its 4 stored inputs, compare with onnxruntime's.
fn matches_onnxruntime(name: &str) -> Network {
    let mut net = import_file(&fixture(&format!("{name}.onnx")))
        .unwrap_or_else(|e| panic!("{e}"))
        .net;
    let io = f32s(&format!("{name}.io.bin"));
    let i = net.input();
    let (x, y) = io.split_at(4 * i.len());
    let x = nhwc(x, i.c, i.h, i.w);
    let got = logits(&mut net, &x);
    let err = worst(&got, y);
    assert!(err <= 1e-4, "{name}: relative error {err}\n{got:?}\n{y:?}");
    net
}

#[test]
fn operator_fixtures_match_onnxruntime() {
    let a = matches_onnxruntime("ops_a");
    let kinds: Vec<&str> = a.spec.layers.iter().map(|l| l.kind()).collect();
    assert_eq!(
        kinds,
        [
            "conv2d",
            "relu6",
            "depthwise_conv2d",
            "batchnorm",
            "relu",
            "avgpool",
            "flatten",
            "dense",
            "batchnorm",
            "tanh",
            "dense"
        ]
    );
    // MatMul + Add became one dense layer with a bias.
    assert_eq!(
        a.spec.layers[7],
        LayerSpec::Dense {
            units: 12,
            bias: true
        }
    );
    let b = matches_onnxruntime("ops_b");
    let kinds: Vec<&str> = b.spec.layers.iter().map(|l| l.kind()).collect();
    assert_eq!(
        kinds,
        [
            "conv2d",
            "relu",
            "maxpool",
            "sigmoid",
            "conv2d",
            "global_avgpool",
            "flatten",
            "dense",
            "relu",
            "dense"
        ]
    );
}

#[test]
fn flatten_permutes_the_dense_columns_from_chw_to_hwc() {
    let net = matches_onnxruntime("flat_perm");
    // 3 channels of 2x3: normcore column (y·3 + x)·3 + c is ONNX column
    // c·6 + y·3 + x. Read the ONNX weight back and check the mapping.
    let bytes = std::fs::read(fixture("flat_perm.onnx")).unwrap();
    use prost::Message;
    let m = proto::ModelProto::decode(&bytes[..]).unwrap();
    let g = m.graph.unwrap();
    let t = g.initializer.iter().find(|t| t.name == "g.w").unwrap();
    let onnx_w: Vec<f32> = t
        .raw_data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let dense = &net.layers[2];
    assert!(matches!(dense.r.op, Op::Dense { .. }));
    for o in 0..4 {
        for p in 0..6 {
            for c in 0..3 {
                assert_eq!(
                    dense.weights()[o * 18 + p * 3 + c],
                    onnx_w[o * 18 + c * 6 + p]
                );
            }
        }
    }
    // And the permutation is not the identity.
    assert_ne!(&dense.weights()[..18], &onnx_w[..18]);
}

#[test]
fn pytorch_digits_convnet_imports_with_the_frameworks_accuracy_and_quantizes() {
    let imported = import_file(&fixture("digits_cnn.onnx")).unwrap();
    assert!(
        imported.producer.starts_with("pytorch"),
        "{}",
        imported.producer
    );
    let mut net = imported.net;
    let kinds: Vec<&str> = net.spec.layers.iter().map(|l| l.kind()).collect();
    assert_eq!(
        kinds,
        [
            "conv2d",
            "batchnorm",
            "relu",
            "depthwise_conv2d",
            "batchnorm",
            "relu6",
            "maxpool",
            "flatten",
            "dense",
            "batchnorm",
            "sigmoid",
            "dense"
        ]
    );
    let (train, test) = builtin_digits_split().unwrap();
    let reference = f32s("digits_cnn.logits.bin");
    // C = 1: NCHW and NHWC samples are the same bytes.
    let got = logits(&mut net, test.images());
    let err = worst(&got, &reference);
    assert!(err <= 1e-4, "relative error {err}");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("digits_cnn.json")).unwrap())
            .unwrap();
    let argmax = |v: &[f32]| -> Vec<usize> {
        v.chunks_exact(10)
            .map(|r| (0..10).fold(0, |b, k| if r[k] > r[b] { k } else { b }))
            .collect()
    };
    let acc = |pred: Vec<usize>| {
        pred.iter()
            .zip(&test.labels)
            .filter(|(p, l)| **p == usize::from(**l))
            .count() as f64
            / test.len() as f64
    };
    let ours = acc(argmax(&got));
    let ort = meta["onnxruntime_test_accuracy"].as_f64().unwrap();
    let torch = meta["torch_test_accuracy"].as_f64().unwrap();
    assert_eq!(meta["test_samples"].as_u64().unwrap() as usize, test.len());
    assert!(
        (100.0 * (ours - torch)).abs() <= 0.01,
        "{ours} vs PyTorch {torch}"
    );
    assert!(
        (100.0 * (ours - ort)).abs() <= 0.01,
        "{ours} vs onnxruntime {ort}"
    );
    // Folded f32 and int8 files, run by the engine.
    let folded = fold(&net).unwrap();
    let f32_run = run_file(&write_f32(&folded, 4, train.pixel_scale).unwrap(), &test).unwrap();
    let cal = calibrate(&folded, &train, 1000).unwrap();
    let (iq, _) = input_params(&train).unwrap();
    let (qm, _) = quantize(&folded, &cal, iq, train.pixel_scale).unwrap();
    let int8_run = run_file(&write_int8(&qm, 4).unwrap(), &test).unwrap();
    eprintln!(
        "digits_cnn: PyTorch {:.2}%  imported {:.2}%  folded f32 {:.2}%  int8 {:.2}%  (logits rel. err {err:e})",
        100.0 * torch,
        100.0 * ours,
        100.0 * f32_run.accuracy,
        100.0 * int8_run.accuracy
    );
    assert!((100.0 * (f32_run.accuracy - ours)).abs() <= 0.01);
    assert!(100.0 * (ours - int8_run.accuracy) <= 0.5);
}

#[test]
fn export_then_import_gives_the_same_network_and_logits() {
    for name in ["digits_cnn", "ops_a", "ops_b", "flat_perm"] {
        let mut net = import_file(&fixture(&format!("{name}.onnx"))).unwrap().net;
        let bytes = to_onnx(&net, Some(1.0 / 16.0));
        let back = import_bytes(&bytes, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(back.pixel_scale, Some(1.0 / 16.0));
        let mut again = back.net;
        assert_eq!(again.spec.input, net.spec.input, "{name}");
        let x: Vec<f32> = (0..3 * net.input().len())
            .map(|k| ((k * 37 % 17) as f32) / 16.0)
            .collect();
        assert_eq!(logits(&mut again, &x), logits(&mut net, &x), "{name}");
        for (a, b) in again.layers.iter().zip(&net.layers) {
            assert_eq!(a.params, b.params, "{name}");
            assert_eq!(a.running_var, b.running_var, "{name}");
        }
    }
}

#[test]
fn unsupported_graphs_are_refused_naming_the_nodes() {
    let cases = [
        (
            "err_unsupported",
            &[
                "2 unsupported node(s)",
                "`leaky` (LeakyRelu)",
                "`softmax` (Softmax)",
                "Supported: Conv",
            ][..],
        ),
        (
            "err_branch",
            &["branch (skip connection)", "`c`", "`skip` (Add)"][..],
        ),
        (
            "err_training_bn",
            &["`bn` (BatchNormalization)", "training mode"][..],
        ),
        ("err_dynamic", &["[?, 1, ?, ?]", "cannot be resolved"][..]),
    ];
    for (name, wants) in cases {
        let e = import_file(&fixture(&format!("{name}.onnx")))
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{name}.onnx")), "{e}");
        for want in wants {
            assert!(e.contains(want), "{name}: `{want}` not in: {e}");
        }
    }
    // Not a protobuf at all; an opset outside 13..=21.
    let e = import_bytes(b"\xff\xff\xff", "junk").unwrap_err();
    assert!(e.contains("not an ONNX model"), "{e}");
    use prost::Message;
    let mut m =
        proto::ModelProto::decode(&std::fs::read(fixture("flat_perm.onnx")).unwrap()[..]).unwrap();
    m.opset_import[0].version = 9;
    let e = import_bytes(&m.encode_to_vec(), "old").unwrap_err();
    assert!(e.contains("opset 9") && e.contains("13 to 21"), "{e}");
    // Clip that is neither ReLU nor ReLU6; a grouped conv that is not depthwise.
    let mut m =
        proto::ModelProto::decode(&std::fs::read(fixture("ops_a.onnx")).unwrap()[..]).unwrap();
    let g = m.graph.as_mut().unwrap();
    g.node
        .iter_mut()
        .find(|n| n.name == "hi")
        .unwrap()
        .attribute[0]
        .f = 5.0;
    let e = import_bytes(&m.encode_to_vec(), "clip").unwrap_err();
    assert!(e.contains("`relu6` (Clip)") && e.contains("max 5"), "{e}");
    let mut m =
        proto::ModelProto::decode(&std::fs::read(fixture("ops_a.onnx")).unwrap()[..]).unwrap();
    let g = m.graph.as_mut().unwrap();
    let dw = g.node.iter_mut().find(|n| n.name == "depthwise").unwrap();
    dw.attribute
        .iter_mut()
        .find(|a| a.name == "group")
        .unwrap()
        .i = 2;
    let e = import_bytes(&m.encode_to_vec(), "group").unwrap_err();
    assert!(
        e.contains("`depthwise` (Conv)") && e.contains("group = 2"),
        "{e}"
    );
}

#[test]
fn add_takes_the_matmul_bias_on_either_side() {
    use prost::Message;
    let mut m =
        proto::ModelProto::decode(&std::fs::read(fixture("ops_a.onnx")).unwrap()[..]).unwrap();
    let g = m.graph.as_mut().unwrap();
    g.node
        .iter_mut()
        .find(|n| n.name == "add")
        .unwrap()
        .input
        .reverse();
    let mut net = import_bytes(&m.encode_to_vec(), "swapped").unwrap().net;
    let io = f32s("ops_a.io.bin");
    let i = net.input();
    let (x, y) = io.split_at(4 * i.len());
    let got = logits(&mut net, &nhwc(x, i.c, i.h, i.w));
    assert!(worst(&got, y) <= 1e-4);
}
