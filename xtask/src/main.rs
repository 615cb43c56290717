//! `cargo xtask`: normcore's task runner.
//!
//! Every task installs what it needs first (idempotently), so each of the
//! README's two commands works on a fresh Debian machine that has only
//! rustup and runs as root.
//!
//! ```text
//! cargo xtask setup           install the thumb targets, QEMU and defmt-print
//! cargo xtask test            formatting, clippy, every test, the no_std and firmware builds
//! cargo xtask demo            the main job, end to end, on the built-in data set
//! cargo xtask firmware [BIN]  build the firmware and run one binary in QEMU (default hello)
//! ```

use std::env;
use std::ffi::{OsStr, OsString};
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
        Some("firmware") => firmware(&args[1..]),
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
  setup           install, idempotently, the Rust targets (rustup target add),
                  QEMU (Debian's qemu-system-arm) and defmt-print (cargo install)
  test            cargo fmt --check, clippy -D warnings, the firmware build (no
                  warnings), all tests (release, QEMU runs included), no_std builds
  demo            the main job end to end on the built-in data set
  firmware [BIN]  build the firmware and run BIN (default: hello) in QEMU,
                  printing its decoded log; -icount on unless NORMCORE_ICOUNT
                  is set. BIN: hello, panic, fault, uart_echo (reads stdin)"
    );
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `firmware/`: its own Cargo world (target, runner, linker scripts).
fn firmware_dir() -> PathBuf {
    root().join("firmware")
}

/// Run a command in the workspace root, echoing it; fail with its exit status.
fn run<I, S>(program: &str, args: I, envs: &[(&str, &str)]) -> Result
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run_in(&root(), program, args, envs)
}

/// A command for `dir`. Cargo reads `.cargo/config.toml` from the working
/// directory, so firmware commands run in `firmware/`; there, host-only
/// settings from the environment must not override its config (an env
/// target or rustflags would replace the thumb target's).
fn command_in(dir: &Path, program: &str, args: &[OsString], envs: &[(&str, &str)]) -> Command {
    let shown: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
    let prefix: String = envs.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    let place = dir
        .strip_prefix(root())
        .unwrap_or(dir)
        .display()
        .to_string();
    let place = if place.is_empty() {
        String::new()
    } else {
        format!("(in {place}) ")
    };
    eprintln!("+ {place}{prefix}{program} {}", shown.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args).envs(envs.iter().copied()).current_dir(dir);
    if dir == firmware_dir() {
        for var in [
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTFLAGS",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_BUILD_RUSTFLAGS",
        ] {
            cmd.env_remove(var);
        }
    }
    cmd
}

/// Run a command in `dir`, echoing it; fail with its exit status.
fn run_in<I, S>(dir: &Path, program: &str, args: I, envs: &[(&str, &str)]) -> Result
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let status = command_in(dir, program, &args, envs)
        .status()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{program}` failed ({status})"))
    }
}

/// As [`run_in`], and also fail if the command printed a warning (its
/// output is passed through).
fn run_in_no_warnings(dir: &Path, program: &str, args: &[&str]) -> Result {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let out = command_in(dir, program, &args, &[])
        .output()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprint!("{text}");
    if !out.status.success() {
        return Err(format!("`{program}` failed ({})", out.status));
    }
    if text.lines().any(|l| l.trim_start().starts_with("warning")) {
        return Err(format!(
            "`{program}` printed warnings; the firmware must build clean"
        ));
    }
    Ok(())
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

/// The thumb targets (rustup does not install the `targets` of
/// rust-toolchain.toml on demand), QEMU and defmt-print: each only if it is
/// missing, so a second run does nothing.
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
    setup_debian_packages()?;
    setup_defmt_print()
}

/// `program --version` works.
fn works(program: &str) -> bool {
    output(program, &["--version"]).is_some()
}

/// QEMU for the firmware tests, and `nm` for `firmware/qemu-run`, from
/// Debian's packages.
fn setup_debian_packages() -> Result {
    let mut packages = Vec::new();
    if !works("qemu-system-arm") {
        packages.push("qemu-system-arm");
    }
    if !works("nm") {
        packages.push("binutils");
    }
    if packages.is_empty() {
        eprintln!("setup: qemu-system-arm and nm present");
        return Ok(());
    }
    let install = format!("apt-get install -y {}", packages.join(" "));
    let is_root = output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0");
    if !is_root {
        return Err(format!(
            "{} missing; as root run:\n    apt-get update && {install}\nthen run this again",
            packages.join(" and ")
        ));
    }
    let noninteractive = [("DEBIAN_FRONTEND", "noninteractive")];
    run("apt-get", ["update"], &noninteractive)?;
    run(
        "apt-get",
        ["install", "-y"].iter().chain(&packages),
        &noninteractive,
    )
}

/// defmt-print decodes the firmware's logs. Building it takes minutes, so
/// only when it is absent; `^1` matches the defmt 1 wire format.
fn setup_defmt_print() -> Result {
    if works("defmt-print") {
        eprintln!("setup: defmt-print present");
        return Ok(());
    }
    run(
        &cargo(),
        ["install", "defmt-print", "--locked", "--version", "^1"],
        &[],
    )
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
    // The firmware, its own Cargo world: formatted, clippy-clean and
    // warning-free (link arguments live in its build.rs, so nothing here
    // needs RUSTFLAGS, which would replace its config's). Building it now
    // also lets the QEMU tests below reuse the ELFs.
    let fw = firmware_dir();
    run_in(&fw, &cargo, ["fmt", "--", "--check"], &[])?;
    run_in(
        &fw,
        &cargo,
        ["clippy", "--release", "--", "-D", "warnings"],
        &[],
    )?;
    run_in_no_warnings(&fw, &cargo, &["build", "--release", "--bins"])?;
    // The numerics are heavy: tests run optimised. This includes the QEMU
    // runs of the firmware (tests/tests/qemu.rs).
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

/// Build the firmware and run one binary in QEMU through cargo's runner
/// (`firmware/qemu-run`), which decodes its defmt log.
fn firmware(args: &[String]) -> Result {
    setup()?;
    let bin = match args {
        [] => "hello",
        [bin] => bin.as_str(),
        _ => return Err("usage: cargo xtask firmware [BIN]".to_owned()),
    };
    let mut envs = Vec::new();
    // Instruction counts are only meaningful under -icount.
    if env::var_os("NORMCORE_ICOUNT").is_none() {
        envs.push(("NORMCORE_ICOUNT", "1"));
    }
    // uart_echo talks over UART0 on stdin/stdout, byte-exact.
    if bin == "uart_echo" && env::var_os("NORMCORE_SERIAL").is_none() {
        envs.push(("NORMCORE_SERIAL", "stdio"));
    }
    run_in(
        &firmware_dir(),
        &cargo(),
        ["run", "--release", "--quiet", "--bin", bin],
        &envs,
    )
}
