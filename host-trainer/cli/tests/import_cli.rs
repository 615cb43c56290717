//! `normcore import` and `normcore export --format onnx` from the command
//! line, on the committed fixtures (`host-trainer/tests/onnx/`).

mod common;

use common::{listing, normcore, text};
use std::path::PathBuf;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/onnx")
        .join(name)
        .display()
        .to_string()
}

fn ok(args: &[&str], dir: &std::path::Path) -> String {
    let out = normcore(args, dir);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn pytorch_convnet_imports_evaluates_exports_and_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let onnx = fixture("digits_cnn.onnx");
    let s = ok(
        &["import", &onnx, "-o", "m.ckpt", "--pixel-scale", "1/16"],
        d,
    );
    for want in [
        "opset 17",
        "depthwise_conv2d",
        "relu6",
        "pixel scale: 0.0625",
    ] {
        assert!(s.contains(want), "`{want}` not in {s}");
    }
    let s = ok(&["eval", "--model", "m.ckpt"], d);
    assert!(s.contains("accuracy  99.72%"), "{s}");
    let s = ok(
        &[
            "export",
            "--model",
            "m.ckpt",
            "-o",
            "m8.ncm",
            "--quantize",
            "int8",
        ],
        d,
    );
    assert!(s.contains("<- written"), "{s}");
    // ONNX out, then in again: the same network and accuracy.
    ok(
        &[
            "export",
            "--model",
            "m.ckpt",
            "-o",
            "back.onnx",
            "--format",
            "onnx",
        ],
        d,
    );
    let s = ok(&["import", "back.onnx", "-o", "back.ckpt"], d);
    assert!(s.contains("pixel scale: 0.0625"), "{s}");
    let s = ok(&["eval", "--model", "back.ckpt"], d);
    assert!(s.contains("accuracy  99.72%"), "{s}");
}

#[test]
fn bad_imports_fail_with_the_file_and_node_named_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (file, want) in [
        ("err_unsupported.onnx", "`leaky` (LeakyRelu)"),
        ("err_branch.onnx", "branch"),
        ("err_training_bn.onnx", "training mode"),
        ("err_dynamic.onnx", "cannot be resolved"),
    ] {
        let out = normcore(&["import", &fixture(file), "-o", "m.ckpt"], d);
        let e = text(&out.stderr);
        assert!(!out.status.success());
        assert!(
            e.starts_with("error: ") && e.contains(file) && e.contains(want),
            "{e}"
        );
    }
    std::fs::write(d.join("junk.onnx"), b"\xff\xffnot protobuf").unwrap();
    let out = normcore(&["import", "junk.onnx", "-o", "m.ckpt"], d);
    assert!(text(&out.stderr).contains("not an ONNX model"));
    let out = normcore(&["import", "junk.onnx", "-o", "junk.onnx"], d);
    assert!(text(&out.stderr).contains("is the input file"));
    let out = normcore(
        &["import", "junk.onnx", "-o", "m.ckpt", "--pixel-scale=-1"],
        d,
    );
    assert!(text(&out.stderr).contains("not a pixel scale"));
    assert_eq!(listing(d), ["junk.onnx"]);
}
