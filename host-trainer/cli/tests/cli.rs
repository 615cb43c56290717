//! The `normcore` command line: training, evaluation, inspection, the
//! paper's Figure 1, and what a user sees when the input is wrong (a clear
//! message, a non-zero exit, and no half-written output).

mod common;

use common::{listing, normcore, text};
use std::path::Path;

/// Runs `args` in `dir`, expects success, returns stdout and stderr together.
fn ok(args: &[&str], dir: &Path) -> String {
    let out = normcore(args, dir);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "normcore {args:?} failed:\n{all}");
    all
}

/// Runs `args` in `dir`, expects failure, returns stderr.
fn fails(args: &[&str], dir: &Path) -> String {
    let out = normcore(args, dir);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "normcore {args:?} succeeded:\n{}{err}",
        text(&out.stdout)
    );
    assert!(
        !err.contains("panicked"),
        "normcore {args:?} panicked:\n{err}"
    );
    err
}

/// A percentage after `label` in `s`, e.g. "test accuracy 93.10%".
fn percent_after(s: &str, label: &str) -> f64 {
    let at = s
        .find(label)
        .unwrap_or_else(|| panic!("no `{label}` in:\n{s}"))
        + label.len();
    let num: String = s[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    num.parse()
        .unwrap_or_else(|_| panic!("no number after `{label}` in:\n{s}"))
}

#[test]
fn train_then_eval_and_inspect_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(
        &["train", "--steps", "50", "--batch", "32", "--out", "m.ckpt"],
        d,
    );
    assert!(out.contains("network `digits-mlp`"), "{out}");
    let acc = percent_after(&out, "test accuracy");
    assert!((0.0..=100.0).contains(&acc) && acc > 30.0, "{out}");
    assert_eq!(listing(d), ["m.ckpt"], "a temporary file was left behind");
    let bytes = std::fs::read(d.join("m.ckpt")).unwrap();
    assert!(bytes.starts_with(b"NCCKPT"));

    let out = ok(&["eval", "--model", "m.ckpt"], d);
    let test = out.lines().find(|l| l.starts_with("test")).expect(&out);
    // The same network on the same test set: the accuracy train printed.
    assert!(
        (percent_after(test, "accuracy") - acc).abs() < 0.01,
        "{out} vs {acc}"
    );
    assert!(out.lines().any(|l| l.starts_with("train")), "{out}");

    let out = ok(&["inspect", "m.ckpt", "--toml"], d);
    assert!(
        out.contains("network `digits-mlp`: input 8x8x1, 10 classes; trained 50 steps"),
        "{out}"
    );
    assert!(
        out.contains("batchnorm") && out.contains("total: "),
        "{out}"
    );
    // The printed TOML is a network file train accepts.
    let toml = &out[out.find("name = ").expect(&out)..];
    std::fs::write(d.join("again.toml"), toml).unwrap();
    ok(
        &[
            "train",
            "--network",
            "again.toml",
            "--steps",
            "2",
            "--batch",
            "8",
            "--out",
            "again.ckpt",
        ],
        d,
    );

    // Resuming continues from step 50 to the new total.
    let out = ok(&["train", "--resume", "m.ckpt", "--steps", "60"], d);
    assert!(out.contains("resuming `digits-mlp` at step 50"), "{out}");
    let out = ok(&["inspect", "m.ckpt"], d);
    assert!(out.contains("trained 60 steps"), "{out}");
}

#[test]
fn unknown_presets_and_flags_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(
        &["train", "--preset", "resnet50", "--steps", "1"],
        dir.path(),
    );
    assert!(err.contains("unknown preset `resnet50`"), "{err}");
    for p in [
        "paper-mlp",
        "paper-mlp-nobn",
        "cnn",
        "digits-mlp",
        "digits-cnn",
    ] {
        assert!(err.contains(p), "preset {p} not listed: {err}");
    }
    let err = fails(&["train", "--stepz", "1"], dir.path());
    assert!(err.contains("--stepz"), "{err}");
    let err = fails(&["train", "--schedule", "cosine"], dir.path());
    assert!(err.contains("step:GAMMA:EVERY"), "{err}");
    let err = fails(&["train", "--init", "zeros"], dir.path());
    assert!(err.contains("gaussian:STD"), "{err}");
    let err = fails(&["train", "--batch", "1", "--steps", "1"], dir.path());
    assert!(err.contains("batch must be at least 2"), "{err}");
    let err = fails(&["frobnicate"], dir.path());
    assert!(err.contains("frobnicate"), "{err}");
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));
}

#[test]
fn missing_mnist_names_the_file_and_suggests_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(
        &[
            "train",
            "--data",
            "mnist",
            "--data-dir",
            "/nonexistent",
            "--steps",
            "1",
        ],
        dir.path(),
    );
    assert!(
        err.contains("/nonexistent") && err.contains("train-images-idx3-ubyte"),
        "{err}"
    );
    assert!(err.contains("--data-dir"), "{err}");
    let err = fails(
        &["train", "--data", "nosuch.csv", "--steps", "1"],
        dir.path(),
    );
    assert!(err.contains("nosuch.csv"), "{err}");
    assert!(listing(dir.path()).is_empty());
}

/// An error whose message already contains its cause prints the cause
/// once, not again as the next link of the chain.
#[test]
fn errors_say_their_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["eval", "--model", "/nonexistent.ckpt"][..],
        &["inspect", "/nonexistent.ncm"][..],
    ] {
        let err = fails(args, dir.path());
        let cause = "No such file or directory";
        assert_eq!(err.matches(cause).count(), 1, "{args:?}: {err}");
    }
    // A model file of another format version: the reason once.
    let old = dir.path().join("old.ncm");
    let mut bytes = vec![0u8; 64];
    bytes[..4].copy_from_slice(b"NCMF");
    bytes[4..6].copy_from_slice(&1u16.to_le_bytes());
    std::fs::write(&old, &bytes).unwrap();
    let err = fails(&["inspect", old.to_str().unwrap()], dir.path());
    assert_eq!(err.matches("format version 1").count(), 1, "{err}");
    assert!(err.contains("this reader implements 2"), "{err}");
}

/// A network file in `dir` with `layers` (TOML `[[layers]]` tables).
fn network(dir: &Path, name: &str, layers: &str) -> String {
    let file = format!("{name}.toml");
    let text = format!("name = \"{name}\"\ninput = [8, 8, 1]\nclasses = 10\n{layers}");
    std::fs::write(dir.join(&file), text).unwrap();
    file
}

#[test]
fn networks_that_do_not_chain_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bn_first = network(
        d,
        "bn-first",
        "[[layers]]\ntype = \"batchnorm\"\n[[layers]]\ntype = \"dense\"\nunits = 10\n",
    );
    let err = fails(&["train", "--network", &bn_first, "--steps", "1"], d);
    assert!(err.contains("layer 1 (batchnorm)"), "{err}");
    assert!(
        err.contains("BN must directly follow a dense, conv2d or depthwise_conv2d layer"),
        "{err}"
    );
    let narrow = network(
        d,
        "narrow",
        "[[layers]]\ntype = \"dense\"\nunits = 16\n[[layers]]\ntype = \"relu\"\n\
         [[layers]]\ntype = \"dense\"\nunits = 7\n",
    );
    let err = fails(&["train", "--network", &narrow, "--steps", "1"], d);
    assert!(
        err.contains("classes = 10") && err.contains("end with a dense layer of 10 units"),
        "{err}"
    );
    let err = fails(&["train", "--network", "missing.toml", "--steps", "1"], d);
    assert!(err.contains("missing.toml"), "{err}");
    // Only the two network files: no checkpoint, no out/ directory.
    assert_eq!(listing(d), ["bn-first.toml", "narrow.toml"]);
}

#[test]
fn a_corrupt_checkpoint_is_refused_by_eval_inspect_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ok(
        &["train", "--steps", "5", "--batch", "16", "--out", "m.ckpt"],
        d,
    );
    let mut bytes = std::fs::read(d.join("m.ckpt")).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(d.join("bad.ckpt"), &bytes).unwrap();
    for args in [
        &["eval", "--model", "bad.ckpt"][..],
        &["inspect", "bad.ckpt"],
        &["train", "--resume", "bad.ckpt", "--steps", "10"],
    ] {
        let err = fails(args, d);
        assert!(
            err.contains("bad.ckpt") && err.contains("CRC mismatch") && err.contains("damaged"),
            "{args:?}: {err}"
        );
    }
    // The damaged file was not overwritten by the failed resume.
    assert_eq!(std::fs::read(d.join("bad.ckpt")).unwrap(), bytes);
    std::fs::write(d.join("short.ckpt"), &bytes[..10]).unwrap();
    let err = fails(&["eval", "--model", "short.ckpt"], d);
    assert!(err.contains("truncated"), "{err}");
    let err = fails(&["eval", "--model", "m.toml"], d);
    assert!(err.contains("m.toml"), "{err}");
}

#[test]
fn divergence_fails_without_writing_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // No BN: two ReLU layers, whose activations overflow at this rate.
    let net = network(
        d,
        "nobn",
        "[[layers]]\ntype = \"dense\"\nunits = 32\n[[layers]]\ntype = \"relu\"\n\
         [[layers]]\ntype = \"dense\"\nunits = 32\n[[layers]]\ntype = \"relu\"\n\
         [[layers]]\ntype = \"dense\"\nunits = 10\n",
    );
    // Also with --steps 2, where the last update breaks the weights after a
    // finite training loss and only the final evaluation sees the NaN.
    for steps in ["200", "2"] {
        let err = fails(
            &[
                "train",
                "--network",
                &net,
                "--lr",
                "1e9",
                "--momentum",
                "0",
                "--steps",
                steps,
                "--checkpoint-every",
                "0",
                "--out",
                "nobn.ckpt",
            ],
            d,
        );
        assert!(err.contains("diverged at step"), "{err}");
        assert!(err.contains("lower the learning rate"), "{err}");
        assert_eq!(listing(d), ["nobn.toml"], "steps {steps}: output written");
    }
}

#[test]
fn reproduce_figure1_writes_the_csv_and_three_pngs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(
        &[
            "reproduce",
            "figure1",
            "--steps",
            "100",
            "--eval-every",
            "50",
            "--out-dir",
            "fig",
        ],
        d,
    );
    assert!(out.contains("| 100 |"), "{out}");
    let fig = d.join("fig");
    assert_eq!(
        listing(&fig),
        [
            "figure1.csv",
            "figure1a.png",
            "figure1b.png",
            "figure1c.png"
        ]
    );
    let csv = std::fs::read_to_string(fig.join("figure1.csv")).unwrap();
    let steps: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["0", "50", "100"], "{csv}");
    for row in csv.lines().skip(1) {
        let fields: Vec<f64> = row.split(',').map(|f| f.parse().unwrap()).collect();
        assert_eq!(fields.len(), 9, "{row}");
        assert!(fields.iter().all(|f| f.is_finite()), "{row}");
    }
    for png in ["figure1a.png", "figure1b.png", "figure1c.png"] {
        let bytes = std::fs::read(fig.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{png}");
        assert!(bytes.len() > 1000, "{png}: {} bytes", bytes.len());
    }
}

#[test]
fn reproduce_drift_writes_the_csv_table_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = ok(
        &[
            "reproduce",
            "drift",
            "--steps",
            "300",
            "--kind",
            "f32",
            "--out-dir",
            "drift",
        ],
        d,
    );
    for want in [
        "| shift | before | shifted | restat@64 |",
        "| gain0.6+0.3 |",
        "| contrast0.4 |",
        "| blur3x3 |",
        "| invert |",
        "exported f32",
    ] {
        assert!(out.contains(want), "`{want}` not in:\n{out}");
    }
    let drift = d.join("drift");
    assert_eq!(listing(&drift), ["drift.csv", "drift.md", "drift.png"]);
    let csv = std::fs::read_to_string(drift.join("drift.csv")).unwrap();
    assert_eq!(csv.lines().next(), Some("shift,method,samples,accuracy"));
    // Per shift: before, shifted, restat at 8 sample counts, tail and
    // both at 4 each.
    assert_eq!(csv.lines().count(), 1 + 4 * 18, "{csv}");
    assert!(
        csv.contains(",tail,200,") && csv.contains(",both,200,"),
        "{csv}"
    );
    // An exported model given with a network to train: refused.
    let err = fails(
        &[
            "reproduce",
            "drift",
            "--model",
            "m.ncm",
            "--network",
            "digits-cnn",
        ],
        d,
    );
    assert!(
        err.contains("--network") && err.contains("--model"),
        "{err}"
    );
    let err = fails(
        &[
            "reproduce",
            "drift",
            "--model",
            "missing.ncm",
            "--out-dir",
            "x",
        ],
        d,
    );
    assert!(err.contains("cannot read missing.ncm"), "{err}");
    assert_eq!(listing(d), ["drift"]);
}
