//! Checks too long for `cargo xtask test`: fuzzing core's model parser and
//! engine, and the full-size MNIST quantization check.

use crate::{cargo, command_in, output, root, run, run_in, Result};
use std::ffi::OsString;

/// Run a command in the workspace root, echoing it and its output; return
/// its standard output.
fn run_capture(program: &str, args: &[&str]) -> Result<String> {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let out = command_in(&root(), program, &args, &[])
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    print!("{text}");
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("`{program}` failed ({})", out.status))
    }
}

/// `cargo fuzz run parse_and_run` for a while, from `core/` (the fuzz
/// project is `core/fuzz/`, outside the workspace). cargo-fuzz passes
/// nightly flags (`-Zsanitizer=address`); `RUSTC_BOOTSTRAP=1` lets the
/// stable compiler accept them. New corpus entries and crash artifacts stay
/// under `core/fuzz/` (git-ignored, except the `.ncm` seeds).
pub fn fuzz(args: &[String]) -> Result {
    let seconds: u64 = match args {
        [] => 600,
        [s] => s
            .parse()
            .map_err(|_| format!("`{s}` seconds: give a whole number"))?,
        _ => return Err("usage: cargo xtask fuzz [SECONDS]".to_owned()),
    };
    let cargo = cargo();
    if output(&cargo, &["fuzz", "--version"]).is_none() {
        run(&cargo, ["install", "cargo-fuzz", "--locked"], &[])?;
    }
    let seeds = root().join("core/fuzz/corpus/parse_and_run");
    let has_seeds = std::fs::read_dir(&seeds).is_ok_and(|d| {
        d.flatten()
            .any(|e| e.path().extension().is_some_and(|x| x == "ncm"))
    });
    if !has_seeds {
        // Small valid files of every op, f32 and int8, written by the exporter.
        run(
            &cargo,
            [
                "test",
                "--release",
                "-p",
                "normcore-trainer",
                "--lib",
                "--",
                "--ignored",
                "--exact",
                "export::tests::export_write_fuzz_seeds",
            ],
            &[],
        )?;
    }
    let time = format!("-max_total_time={seconds}");
    run_in(
        &root().join("core"),
        &cargo,
        [
            "fuzz",
            "run",
            "parse_and_run",
            "--",
            &time,
            // A slow input is a finding too: the target skips engine runs
            // whose stated cost is out of reach, so nothing valid takes this long.
            "-timeout=10",
            "-print_final_stats=1",
        ],
        &[("RUSTC_BOOTSTRAP", "1")],
    )
}

/// One network's row of the quantization table, from `normcore export
/// --summary`.
#[derive(Debug)]
struct Summary {
    network: String,
    float: f64,
    f32: f64,
    int8: f64,
    f32_bytes: String,
    f32_arena: String,
    int8_bytes: String,
    int8_arena: String,
}

fn parse_summary(stdout: &str) -> Result<Summary> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .ok_or("`normcore export --summary` printed no summary line")?;
    let field = |k: &str| -> Result<String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .map(str::to_owned)
            .ok_or(format!("no `{k}` in the summary line `{line}`"))
    };
    let pct = |k: &str| -> Result<f64> {
        field(k)?
            .parse()
            .map_err(|_| format!("`{k}` is not a number in `{line}`"))
    };
    Ok(Summary {
        network: field("network")?,
        float: pct("float")?,
        f32: pct("f32")?,
        int8: pct("int8")?,
        f32_bytes: field("f32_bytes")?,
        f32_arena: field("f32_arena")?,
        int8_bytes: field("int8_bytes")?,
        int8_arena: field("int8_arena")?,
    })
}

/// The largest drop from f32 to int8 accepted, in percentage points.
const MAX_DROP: f64 = 0.5;

/// Full-size MNIST quantization check (int8 within 0.5 points of f32 for
/// `paper-mlp` with BN and for `cnn`): train both, export f32 and int8,
/// print the table. MNIST is found as the trainer finds it.
pub fn quant_check(args: &[String]) -> Result {
    let reuse = match args {
        [] => false,
        [a] if a == "--reuse" => true,
        _ => return Err("usage: cargo xtask quant-check [--reuse]".to_owned()),
    };
    let cargo = cargo();
    let dir = "out/quant-check";
    std::fs::create_dir_all(root().join(dir)).map_err(|e| format!("{dir}: {e}"))?;
    let normcore = |args: &[&str]| -> Result<String> {
        let mut all = vec!["run", "--release", "--quiet", "-p", "normcore-cli", "--"];
        all.extend_from_slice(args);
        run_capture(&cargo, &all)
    };
    // The paper's MLP setting (Sec. 4.1) and two epochs of the CNN.
    let nets: [(&str, &[&str]); 2] = [
        (
            "paper-mlp",
            &[
                "--steps",
                "50000",
                "--lr",
                "0.5",
                "--momentum",
                "0",
                "--init",
                "gaussian:0.05",
            ],
        ),
        (
            "cnn",
            &[
                "--steps",
                "1900",
                "--batch",
                "64",
                "--lr",
                "0.05",
                "--momentum",
                "0.9",
                "--threads",
                "2",
            ],
        ),
    ];
    let mut rows = Vec::new();
    for (name, train) in nets {
        let ckpt = format!("{dir}/{name}.ckpt");
        if !(reuse && root().join(&ckpt).is_file()) {
            let mut a = vec![
                "train",
                "--data",
                "mnist",
                "--preset",
                name,
                "--eval-every",
                "0",
                "-o",
                &ckpt,
            ];
            a.extend_from_slice(train);
            normcore(&a)?;
        }
        // Both files are written; each export measures both forms.
        let mut summary = None;
        for q in ["f32", "int8"] {
            let out = format!("{dir}/{name}-{q}.ncm");
            let stdout = normcore(&[
                "export",
                "--data",
                "mnist",
                "--model",
                &ckpt,
                "-o",
                &out,
                "--quantize",
                q,
                "--calibration",
                "1000",
                "--threads",
                "2",
                "--summary",
            ])?;
            summary = Some(parse_summary(&stdout)?);
        }
        rows.extend(summary);
    }
    // The engine on the int8 files against the independent integer
    // reference, on the whole test set (it lives in the trainer's tests).
    let dir_abs = root().join(dir);
    run(
        &cargo,
        [
            "test",
            "--release",
            "-p",
            "normcore-trainer",
            "--lib",
            "--",
            "--ignored",
            "--exact",
            "--nocapture",
            "export::tests::export_mnist_engine_matches_reference",
        ],
        &[("NORMCORE_QUANT_CHECK_DIR", &dir_abs.to_string_lossy())],
    )?;
    println!();
    println!(
        "MNIST, 10,000 test samples; folded f32 and int8 are the written files run by core's engine"
    );
    println!();
    println!("| network   | float, BN | folded f32 |   int8 | int8 - f32 | f32 file B | f32 arena B | int8 file B | int8 arena B |");
    println!("|-----------|-----------|------------|--------|------------|------------|-------------|-------------|--------------|");
    let mut drop = f64::NEG_INFINITY;
    for r in &rows {
        let gap = r.int8 - r.f32;
        drop = drop.max(-gap);
        println!(
            "| {:<9} | {:>8.2}% | {:>9.2}% | {:>5.2}% | {:>+7.2} pp | {:>10} | {:>11} | {:>11} | {:>12} |",
            r.network,
            r.float,
            r.f32,
            r.int8,
            gap,
            r.f32_bytes,
            r.f32_arena,
            r.int8_bytes,
            r.int8_arena
        );
    }
    println!();
    if drop > MAX_DROP {
        return Err(format!(
            "int8 is {drop:.2} points below f32 (more than {MAX_DROP})"
        ));
    }
    println!("quant-check: int8 is within {MAX_DROP} points of f32 for every network");
    Ok(())
}
