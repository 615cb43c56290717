//! `normcore export` and `normcore inspect FILE.ncm` from the command line.

mod common;

use common::{normcore, text};
use std::path::Path;

/// A digits-mlp checkpoint trained briefly in `dir`.
fn trained(dir: &Path) -> &'static str {
    let out = normcore(
        &[
            "train",
            "--preset",
            "digits-mlp",
            "--steps",
            "300",
            "--batch",
            "32",
            "--eval-every",
            "0",
            "--out",
            "m.ckpt",
        ],
        dir,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    "m.ckpt"
}

#[test]
fn export_writes_int8_and_f32_files_and_inspect_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = trained(dir.path());
    for (quant, file, rows) in [("int8", "m8.ncm", "4"), ("f32", "mf.ncm", "8")] {
        let out = normcore(
            &[
                "export",
                "--model",
                ckpt,
                "-o",
                file,
                "--quantize",
                quant,
                "--calibration",
                "200",
                "--block-rows",
                rows,
            ],
            dir.path(),
        );
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        for want in [
            "float, BN (unfolded, eval)",
            "folded f32",
            "int8 (calibrated on 200)",
            "<- written",
            "arena",
        ] {
            assert!(stdout.contains(want), "missing `{want}` in:\n{stdout}");
        }
        let bytes = std::fs::read(dir.path().join(file)).unwrap();
        assert_eq!(&bytes[..4], b"NCMF");
        assert_eq!(bytes[6] & 1 == 1, quant == "int8");
        assert!(
            stdout.contains(&format!("{} bytes", bytes.len())),
            "{stdout}"
        );

        let out = normcore(&["inspect", file], dir.path());
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        for want in ["dense", "relu", "8x8x1 -> 1x1x32", "flash:", "arena", quant] {
            assert!(stdout.contains(want), "missing `{want}` in:\n{stdout}");
        }
    }
    // Exporting again gives the same bytes.
    let out = normcore(
        &[
            "export",
            "--model",
            ckpt,
            "-o",
            "again.ncm",
            "--quantize",
            "int8",
            "--calibration",
            "200",
        ],
        dir.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(dir.path().join("again.ncm")).unwrap(),
        std::fs::read(dir.path().join("m8.ncm")).unwrap()
    );
    // Checkpoints are still inspected as before.
    let out = normcore(&["inspect", ckpt], dir.path());
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("network `digits-mlp`"));
}

#[test]
fn export_rejects_bad_inputs_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = trained(dir.path());
    let cases: [(&[&str], &str); 5] = [
        (&["--model", "missing.ckpt"], "missing.ckpt"),
        (&["--model", ckpt, "--quantize", "int4"], "int4"),
        (&["--model", ckpt, "--block-rows", "5"], "4 or 8"),
        (&["--model", ckpt, "--calibration", "0"], "calibration"),
        (&["--model", ckpt, "--data", "nope"], "unknown data set"),
    ];
    for (args, want) in cases {
        let mut all = vec!["export", "-o", "out.ncm"];
        all.extend_from_slice(args);
        let out = normcore(&all, dir.path());
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{all:?} succeeded");
        assert!(stderr.contains(want), "{all:?}: `{want}` not in:\n{stderr}");
        assert!(!dir.path().join("out.ncm").exists(), "{all:?} wrote a file");
    }
    // A file that is neither a checkpoint nor a model file.
    std::fs::write(dir.path().join("junk.ncm"), b"NCMF garbage").unwrap();
    let out = normcore(&["inspect", "junk.ncm"], dir.path());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not a valid .ncm file"));
}
