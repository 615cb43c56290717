//! `normcore adapt` from the command line: a model exported in the test
//! adapted to a simulated drift and written as a new file, and the cases
//! where nothing may be written (the output is the model, a bad method or
//! shift, a model without BN, a damaged or missing model, a data set of
//! another shape).

mod common;

use common::{listing, normcore, text};
use std::path::Path;

fn ok(args: &[&str], dir: &Path) -> String {
    let out = normcore(args, dir);
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "normcore {args:?} failed:\n{all}");
    text(&out.stdout)
}

fn fails(args: &[&str], dir: &Path) -> String {
    let out = normcore(args, dir);
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "normcore {args:?} succeeded:\n{}{err}",
        text(&out.stdout)
    );
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    err
}

/// The percentage on the table row starting with `row`.
fn percent(out: &str, row: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(&format!("| {row}")))
        .unwrap_or_else(|| panic!("no row `{row}` in:\n{out}"));
    let cell = line
        .rsplit('|')
        .nth(1)
        .unwrap()
        .trim()
        .trim_end_matches('%');
    cell.parse()
        .unwrap_or_else(|_| panic!("no accuracy in `{line}`"))
}

/// digits-mlp trained and exported in `dir/a` (model-f32.ncm, model-int8.ncm).
fn exported(dir: &Path) {
    ok(
        &[
            "assets",
            "--steps",
            "600",
            "--samples",
            "4",
            "--out-dir",
            "a",
        ],
        dir,
    );
}

#[test]
fn adapt_restat_recovers_a_drift_and_writes_a_model_that_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    exported(d);
    for (model, kind) in [("a/model-int8.ncm", "Int8"), ("a/model-f32.ncm", "F32")] {
        let out = ok(
            &[
                "adapt",
                "--model",
                model,
                "--data",
                "digits",
                "--method",
                "restat",
                "--shift",
                "gain0.6+0.3",
                "-o",
                "adapted.ncm",
            ],
            d,
        );
        assert!(out.contains(&format!("({kind})")), "{out}");
        let clean = percent(&out, "clean, before adaptation");
        let shifted = percent(&out, "shifted (gain0.6+0.3), before");
        let adapted = percent(&out, "shifted, adapted (restat)");
        assert!(clean - shifted >= 5.0, "{out}");
        assert!(adapted - shifted >= 0.8 * (clean - shifted), "{out}");
        assert!(
            out.contains("64 unlabeled training samples (seed 1)")
                && out.contains("re-estimation: every pass"),
            "{out}"
        );
        assert!(out.contains("overlay: ") && out.contains(" bytes"), "{out}");
        let bytes = std::fs::read(d.join("adapted.ncm")).unwrap();
        assert!(bytes.starts_with(b"NCMF"));
        assert!(out.contains(&format!("wrote adapted.ncm: {} bytes", bytes.len())));
        assert_eq!(
            listing(d),
            ["a", "adapted.ncm"],
            "a temporary file was left"
        );
        // The new file is a model the other commands read, with BN
        // records: it can be adapted again.
        let info = ok(&["inspect", "adapted.ncm"], d);
        assert!(info.contains("flash:"), "{info}");
        let again = ok(
            &[
                "adapt",
                "--model",
                "adapted.ncm",
                "--method",
                "restat",
                "-o",
                "again.ncm",
            ],
            d,
        );
        assert!(again.contains("| before adaptation"), "{again}");
        // The same seed picks the same samples: the same bytes.
        ok(
            &[
                "adapt",
                "--model",
                model,
                "--method",
                "restat",
                "--shift",
                "gain0.6+0.3",
                "-o",
                "same.ncm",
            ],
            d,
        );
        assert_eq!(std::fs::read(d.join("same.ncm")).unwrap(), bytes);
        ok(
            &[
                "adapt",
                "--model",
                model,
                "--method",
                "restat",
                "--shift",
                "gain0.6+0.3",
                "--seed",
                "2",
                "--unlabeled",
                "32",
                "-o",
                "other.ncm",
            ],
            d,
        );
        assert_ne!(std::fs::read(d.join("other.ncm")).unwrap(), bytes);
        for f in ["adapted.ncm", "again.ncm", "same.ncm", "other.ncm"] {
            std::fs::remove_file(d.join(f)).unwrap();
        }
    }
}

#[test]
fn adapt_refuses_bad_requests_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    exported(d);
    let model = "a/model-int8.ncm";
    let original = std::fs::read(d.join(model)).unwrap();
    // A network without BN, exported.
    std::fs::write(
        d.join("nobn.toml"),
        "name = \"nobn\"\ninput = [8, 8, 1]\nclasses = 10\n\
         [[layers]]\ntype = \"dense\"\nunits = 16\n[[layers]]\ntype = \"relu\"\n\
         [[layers]]\ntype = \"dense\"\nunits = 10\n",
    )
    .unwrap();
    ok(
        &[
            "train",
            "--network",
            "nobn.toml",
            "--steps",
            "20",
            "--batch",
            "16",
            "--eval-every",
            "0",
            "--out",
            "nobn.ckpt",
        ],
        d,
    );
    ok(
        &[
            "export",
            "--model",
            "nobn.ckpt",
            "--quantize",
            "int8",
            "-o",
            "nobn.ncm",
        ],
        d,
    );
    // Damaged and foreign files.
    let mut bad = original.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(d.join("bad.ncm"), &bad).unwrap();
    std::fs::write(d.join("junk.ncm"), b"not a model at all").unwrap();
    std::fs::write(
        d.join("wide.csv"),
        "0,1,2,0\n1,2,3,1\n2,3,4,0\n3,4,5,1\n4,5,6,0\n",
    )
    .unwrap();
    std::fs::create_dir(d.join("outdir")).unwrap();
    let before = listing(d);

    let cases: &[(&[&str], &[&str])] = &[
        // The output is the model, however it is spelled.
        (
            &["--model", model, "--method", "restat", "-o", model],
            &["is the input file"],
        ),
        (
            &[
                "--model",
                model,
                "--method",
                "restat",
                "-o",
                "./a/../a/model-int8.ncm",
            ],
            &["is the input file"],
        ),
        (
            &["--model", model, "--method", "restat", "-o", "outdir"],
            &["is a directory"],
        ),
        (
            &["--model", model, "--method", "sgd", "-o", "x.ncm"],
            &["'sgd'", "restat", "tail", "both"],
        ),
        (&["--model", model, "-o", "x.ncm"], &["--method"]),
        (
            &[
                "--model", model, "--method", "restat", "--shift", "fog", "-o", "x.ncm",
            ],
            &[
                "unknown shift `fog`",
                "gainG+O",
                "contrastF",
                "blur3x3",
                "invert",
            ],
        ),
        (
            &["--model", "nobn.ncm", "--method", "restat", "-o", "x.ncm"],
            &["nobn.ncm: cannot adapt by restat", "no BN table"],
        ),
        (
            &["--model", "bad.ncm", "--method", "restat", "-o", "x.ncm"],
            &["bad.ncm: not a valid model file", "CRC"],
        ),
        (
            &["--model", "junk.ncm", "--method", "restat", "-o", "x.ncm"],
            &["junk.ncm: not a valid model file"],
        ),
        (
            &[
                "--model",
                "missing.ncm",
                "--method",
                "restat",
                "-o",
                "x.ncm",
            ],
            &["cannot read missing.ncm"],
        ),
        (
            &[
                "--model", model, "--method", "restat", "--data", "wide.csv", "-o", "x.ncm",
            ],
            &["takes 8x8x1 inputs", "1x1x3"],
        ),
        (
            &[
                "--model",
                model,
                "--method",
                "restat",
                "--unlabeled",
                "1",
                "-o",
                "x.ncm",
            ],
            &["at least 2 samples"],
        ),
        (
            &[
                "--model",
                model,
                "--method",
                "restat",
                "--feed",
                "split",
                "--unlabeled",
                "3",
                "-o",
                "x.ncm",
            ],
            &["splitting 3 samples among 2 passes", "at least 4 samples"],
        ),
        (
            &[
                "--model", model, "--method", "restat", "--feed", "half", "-o", "x.ncm",
            ],
            &["'half'", "every", "split"],
        ),
        (
            &[
                "--model",
                model,
                "--method",
                "restat",
                "--unlabeled",
                "100000",
                "-o",
                "x.ncm",
            ],
            &["100000 adaptation samples", "has 1438"],
        ),
    ];
    for (args, wants) in cases {
        let mut all = vec!["adapt"];
        all.extend_from_slice(args);
        let err = fails(&all, d);
        for want in *wants {
            assert!(err.contains(want), "{all:?}: `{want}` not in:\n{err}");
        }
        assert_eq!(listing(d), before, "{all:?} wrote something");
        assert_eq!(std::fs::read(d.join(model)).unwrap(), original, "{all:?}");
    }
}

/// Tail training and both: an inversion (which re-estimation cannot fix)
/// is mostly recovered from 200 labeled samples; the file is written.
#[test]
fn adapt_tail_and_both_recover_an_inversion() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    exported(d);
    for method in ["tail", "both"] {
        let out = ok(
            &[
                "adapt",
                "--model",
                "a/model-int8.ncm",
                "--data",
                "digits",
                "--method",
                method,
                "--shift",
                "invert",
                "-o",
                "adapted.ncm",
            ],
            d,
        );
        let shifted = percent(&out, "shifted (invert), before");
        let adapted = percent(&out, &format!("shifted, adapted ({method})"));
        assert!(adapted >= shifted + 30.0, "{out}");
        assert!(std::fs::read(d.join("adapted.ncm"))
            .unwrap()
            .starts_with(b"NCMF"));
    }
}
