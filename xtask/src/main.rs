//! `cargo xtask`: normcore's task runner.
//!
//! Every task installs what it needs first (idempotently), so each of the
//! README's two commands works on a fresh Debian machine that has only
//! rustup and runs as root.
//!
//! ```text
//! cargo xtask setup    install the thumb targets (and QEMU once firmware needs it)
//! cargo xtask test     formatting, clippy, every test, the no_std builds
//! cargo xtask demo     the main job, end to end, on the built-in data set
//! ```

use std::env;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The Cortex-M targets the core crate must build for: M4F/M7 and M0 (no
/// FPU, no atomics).
const THUMB_TARGETS: [&str; 2] = ["thumbv7em-none-eabihf", "thumbv6m-none-eabi"];

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("test") => test(),
        Some("demo") => demo(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            print_help();
            Ok(())
        }
        Some(other) => Err(format!(
            "unknown task `{other}`; run `cargo xtask help` for the list"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_help() {
    println!(
        "cargo xtask <task>

tasks:
  setup   install the Rust targets (rustup target add), idempotently
  test    cargo fmt --check, clippy -D warnings, all tests (release), no_std builds
  demo    the main job end to end on the built-in data set"
    );
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Run a command in the workspace root, echoing it; fail with its exit status.
fn run<I, S>(program: &str, args: I, envs: &[(&str, &str)]) -> Result
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    let prefix: String = envs.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("+ {prefix}{program} {}", shown.join(" "));
    let status = Command::new(program)
        .args(&args)
        .envs(envs.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program} {}` failed ({status})", shown.join(" ")))
    }
}

/// Output of a command, or None if it cannot run.
fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Install the thumb targets if rustup lacks them. rustup does not install
/// the `targets` of rust-toolchain.toml on demand, so this is explicit.
fn setup() -> Result {
    let installed = output("rustup", &["target", "list", "--installed"])
        .ok_or("rustup is needed to add the Cortex-M targets; install it from https://rustup.rs")?;
    let missing: Vec<&str> = THUMB_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: Rust targets present: {}", THUMB_TARGETS.join(", "));
    } else {
        run("rustup", ["target", "add"].iter().chain(&missing), &[])?;
    }
    Ok(())
}

fn test() -> Result {
    setup()?;
    let cargo = cargo();
    run(&cargo, ["fmt", "--all", "--", "--check"], &[])?;
    run(
        &cargo,
        [
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // The numerics are heavy: tests run optimised.
    run(&cargo, ["test", "--workspace", "--release"], &[])?;
    // The core crate must build for both Cortex-M targets with no warnings.
    for target in THUMB_TARGETS {
        run(
            &cargo,
            [
                "clippy",
                "-p",
                "normcore",
                "--release",
                "--target",
                target,
                "--features",
                "defmt",
                "--",
                "-D",
                "warnings",
            ],
            &[],
        )?;
        run(
            &cargo,
            ["build", "-p", "normcore", "--release", "--target", target],
            &[("RUSTFLAGS", "-D warnings")],
        )?;
    }
    eprintln!("xtask test: all checks passed");
    Ok(())
}

fn demo(extra: &[String]) -> Result {
    setup()?;
    let cargo = cargo();
    let mut args = vec![
        "run",
        "--release",
        "--quiet",
        "-p",
        "normcore-trainer",
        "--",
        "demo",
    ];
    args.extend(extra.iter().map(String::as_str));
    run(&cargo, args, &[])
}
