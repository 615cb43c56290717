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
//! cargo xtask assets [ARGS]   train + export the model and samples the firmware embeds
//! cargo xtask firmware [BIN]  build the firmware and run one binary in QEMU (default hello)
//! cargo xtask device-eval [ARGS]  stream the test set through `serve` in QEMU over UART0
//! cargo xtask fuzz [SECONDS]  fuzz core's model parser and engine (default 600 s)
//! cargo xtask quant-check     MNIST: train, export f32 and int8, print the accuracy table
//! cargo xtask size            flash and RAM of `infer`, by section and content; engine code per model kind
//! cargo xtask bench firmware  per-kernel cost table of the Cortex-M kernels (QEMU, -icount)
//! cargo xtask bench trainer   the host trainer's benchmark (`normcore bench`)
//! ```

mod bench;
mod elf;
mod quality;

use std::collections::BTreeMap;
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
        Some("assets") => assets(&args[1..]),
        Some("firmware") => firmware(&args[1..]),
        Some("device-eval") => device_eval(&args[1..]),
        Some("size") => size(),
        Some("bench") => bench::run(&args[1..]),
        Some("fuzz") => quality::fuzz(&args[1..]),
        Some("quant-check") => quality::quant_check(&args[1..]),
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
                  warnings), the nRF52840-DK board build (firmware/boards/, not
                  run: no hardware), all tests (release, QEMU runs included),
                  no_std builds
  demo [ARGS]     the main job end to end on the built-in data set: train a BN
                  network, fold, export f32 and int8, build the firmware, run
                  it in QEMU and print host vs device accuracy, instructions
                  per inference, flash and RAM. ARGS go to `normcore assets`
                  (e.g. --steps 3000, --preset digits-cnn)
  assets [ARGS]   `normcore assets`: train (seeded), export model-f32.ncm and
                  model-int8.ncm, pick test samples and the host engine's
                  outputs for them, into firmware/assets (or $NORMCORE_ASSETS).
                  ARGS: --preset digits-mlp, --data digits|mnist, --samples N|all,
                  --steps N, --seed N (see `normcore assets --help`)
  firmware [BIN]  build the firmware and run BIN (default: hello) in QEMU,
                  printing its decoded log; -icount on unless NORMCORE_ICOUNT
                  is set. BIN: hello, infer, panic, fault, uart_echo (reads
                  stdin). Generates the assets first if there are none
  device-eval [ARGS]
                  build the firmware's `serve` binary and run `normcore
                  device-eval` on it: QEMU with UART0 on stdio, the test set
                  streamed through it (docs/SERIAL.md), device vs host engine
                  accuracy and agreement. ARGS: --model int8|f32|both,
                  --samples N|all, --data digits|mnist, --timeout S
  bench firmware  build the firmware's `bench` binary and run it in QEMU with
                  -icount: a table of every inference kernel's instructions
                  (and instructions per MAC) on fixed shapes, and the whole
                  paper MLP (784-100-100-100-10), int8 in both weight forms
  bench trainer [ARGS]
                  the host trainer's benchmark (`normcore bench`, release)
  size            build `infer` and report its sections (.text, .rodata, .data,
                  .bss), split into code, model data and sample data, and the
                  stack high-water mark of a QEMU run; then build it for int8
                  models only and for f32 only (firmware features), run each,
                  and print the engine code (normcore's parser, engine,
                  kernels, defmt impls) of the three builds against the
                  12 KiB budget for one kind
  fuzz [SECONDS]  cargo-fuzz target parse_and_run (core's Model::parse, then
                  one engine run) for SECONDS (default 600) on one core;
                  installs cargo-fuzz, runs on stable with RUSTC_BOOTSTRAP=1,
                  writes the seed corpus if it is missing. Not part of `test`
  quant-check [--reuse]
                  full-size MNIST quantization check (minutes, not CI): train
                  paper-mlp with BN (50,000 steps) and cnn (2 epochs), export
                  f32 and int8 (1000 calibration samples), print unfolded /
                  folded f32 / int8 test accuracy, file and arena sizes; fails
                  if int8 is more than 0.5 points below f32. --reuse keeps
                  checkpoints already in out/quant-check/"
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
    // The firmware and the boards below it are their own Cargo worlds.
    if dir.starts_with(firmware_dir()) {
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

/// QEMU for the firmware tests, `nm` for `firmware/qemu-run`, and
/// fontconfig with a font for the trainer's plots (plotters finds fonts
/// through fontconfig at build and run time), from Debian's packages.
fn setup_debian_packages() -> Result {
    let mut packages = Vec::new();
    if !works("qemu-system-arm") {
        packages.push("qemu-system-arm");
    }
    if !works("nm") {
        packages.push("binutils");
    }
    if !works("pkg-config") {
        packages.push("pkg-config");
    }
    let fontconfig = Command::new("pkg-config")
        .args(["--exists", "fontconfig"])
        .status()
        .is_ok_and(|s| s.success());
    if !fontconfig {
        packages.push("libfontconfig1-dev");
    }
    if !Path::new("/usr/share/fonts/truetype/dejavu").is_dir() {
        packages.push("fonts-dejavu-core");
    }
    if packages.is_empty() {
        eprintln!("setup: qemu-system-arm, nm, fontconfig and fonts present");
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
    // The firmware embeds the assets: its build fails without them. (The
    // device parity tests regenerate the default ones themselves.)
    ensure_assets()?;
    run_in(
        &fw,
        &cargo,
        ["clippy", "--release", "--", "-D", "warnings"],
        &[],
    )?;
    // The build for one kind of model (int8, the usual device choice):
    // clippy-clean and warning-free too, `infer` linked. Before the default
    // build below, so that the ELFs left in firmware/target are the default
    // ones the QEMU tests run.
    let int8_only = ["--no-default-features", "--features", "int8"];
    run_in(
        &fw,
        &cargo,
        ["clippy", "--release"]
            .iter()
            .chain(&int8_only)
            .chain(&["--", "-D", "warnings"]),
        &[],
    )?;
    let mut args = vec!["build", "--release", "--bin", "infer"];
    args.extend(int8_only);
    run_in_no_warnings(&fw, &cargo, &args)?;
    run_in_no_warnings(&fw, &cargo, &["build", "--release", "--bins"])?;
    // The real boards: built, never run here (there is no hardware).
    build_boards(&cargo)?;
    // The numerics are heavy: tests run optimised. This includes the QEMU
    // runs of the firmware (tests/tests/qemu.rs) and the device = host
    // parity of `infer` (tests/tests/device_parity.rs).
    run(&cargo, ["test", "--workspace", "--release"], &[])?;
    // Core's engine with one kind of model (`engine-int8` without
    // `engine-f32`) rejects the other kind (core/tests/engine_features.rs;
    // it runs in the default build above too, with other expectations).
    run(
        &cargo,
        [
            "test",
            "-p",
            "normcore",
            "--release",
            "--no-default-features",
            "--features",
            "engine-int8",
            "--test",
            "engine_features",
        ],
        &[],
    )?;
    // The core crate must build for both Cortex-M targets with no warnings,
    // with both kinds of model, one or none (clippy: a check, quick).
    for target in THUMB_TARGETS {
        for features in [
            &["--features", "defmt"][..],
            &["--no-default-features", "--features", "engine-int8,defmt"],
            &["--no-default-features", "--features", "engine-f32"],
            &["--no-default-features"],
        ] {
            let mut args = vec!["clippy", "-p", "normcore", "--release", "--target", target];
            args.extend(features);
            args.extend(["--", "-D", "warnings"]);
            run(&cargo, args, &[])?;
        }
        run(
            &cargo,
            ["build", "-p", "normcore", "--release", "--target", target],
            &[("RUSTFLAGS", "-D warnings")],
        )?;
    }
    eprintln!("xtask test: all checks passed");
    Ok(())
}

/// The assets directory: `$NORMCORE_ASSETS` (relative to the workspace
/// root) or `firmware/assets`, as the trainer and `firmware/build.rs` take it.
fn assets_dir() -> PathBuf {
    match env::var_os("NORMCORE_ASSETS") {
        Some(d) if !d.is_empty() => root().join(d),
        _ => firmware_dir().join("assets"),
    }
}

/// The files the firmware's build embeds.
const ASSET_FILES: [&str; 3] = ["model-f32.ncm", "model-int8.ncm", "samples.bin"];

/// `normcore assets ARGS`, the trainer built in release (training in a debug
/// build would take minutes).
fn assets(args: &[String]) -> Result {
    let mut all = vec![
        "run".to_owned(),
        "--release".into(),
        "--quiet".into(),
        "-p".into(),
        "normcore-trainer".into(),
        "--".into(),
        "assets".into(),
    ];
    all.extend(args.iter().cloned());
    run(&cargo(), all, &[])
}

/// Generate the default assets if any file the firmware embeds is missing.
fn ensure_assets() -> Result {
    let dir = assets_dir();
    if ASSET_FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(());
    }
    eprintln!(
        "xtask: no firmware assets in {}: generating them",
        dir.display()
    );
    assets(&[])
}

/// The `infer` ELF, built (release) with the current assets.
fn build_infer() -> Result<PathBuf> {
    build_infer_with(&[])
}

/// The `infer` ELF built with the firmware's feature arguments `features`
/// (none: the default build, both kinds of model).
fn build_infer_with(features: &[&str]) -> Result<PathBuf> {
    let mut args = vec!["build", "--release", "--quiet", "--bin", "infer"];
    args.extend(features);
    run_in(&firmware_dir(), &cargo(), args, &[])?;
    Ok(firmware_dir()
        .join("target")
        .join(THUMB_TARGETS[0])
        .join("release")
        .join("infer"))
}

/// The builds of `infer` that `cargo xtask size` compares: a label, the
/// firmware's feature arguments, and where the ELF is kept (in
/// `firmware/target/`; the default build's stays where cargo puts it).
/// The default one last, so that `release/infer` is the default build
/// when the task ends.
const INFER_BUILDS: [(&str, &[&str], Option<&str>); 3] = [
    (
        "int8 only",
        &["--no-default-features", "--features", "int8"],
        Some("size/infer-int8"),
    ),
    (
        "f32 only",
        &["--no-default-features", "--features", "f32"],
        Some("size/infer-f32"),
    ),
    ("both (default)", &[], None),
];

/// The issue's budget for the engine code of a firmware that runs one kind
/// of model: 12 KiB.
const ENGINE_CODE_BUDGET: u64 = 12 * 1024;

/// Run `infer` in QEMU under `-icount` and return its decoded log (level
/// and message per line); fail, with the log, if it fails.
fn run_infer(elf: &Path) -> Result<String> {
    let args = [elf.as_os_str().to_owned()];
    let out = command_in(
        &firmware_dir(),
        "./qemu-run",
        &args,
        &[
            ("NORMCORE_ICOUNT", "1"),
            ("NORMCORE_QEMU_TIMEOUT", "120"),
            ("DEFMT_PRINT_FORMAT", "{L} {s}"),
        ],
    )
    .env_remove("NORMCORE_SERIAL")
    .env_remove("NORMCORE_RAW")
    .output()
    .map_err(|e| format!("cannot start firmware/qemu-run: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "infer failed in QEMU ({}):\n{text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(text)
}

/// The value of `key=` on the first line of `text` whose message starts
/// with `prefix`.
fn log_field<'a>(text: &'a str, prefix: &str, key: &str) -> Option<&'a str> {
    text.lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, m)| m.trim_start()))
        .filter(|m| m.starts_with(prefix))
        .find_map(|m| {
            m.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        })
}

/// A number from `infer`'s log (see [`log_field`]).
fn log_num(text: &str, prefix: &str, key: &str) -> Result<u64> {
    log_field(text, prefix, key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no `{key}=` on the `{prefix}` line of infer's log:\n{text}"))
}

/// `key=value` lines of a file, comments skipped.
fn read_kv(path: &Path) -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect())
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Sizes of the `infer` image, from its ELF.
#[derive(Debug)]
struct Sizes {
    vector_table: u64,
    text: u64,
    rodata: u64,
    data: u64,
    bss: u64,
    uninit: u64,
    /// normcore's code: parser, engine, kernels, defmt impls.
    engine: EngineCode,
    model_f32: u64,
    model_int8: u64,
    samples: u64,
}

impl Sizes {
    fn of(elf: &Path) -> Result<Sizes> {
        let bytes = std::fs::read(elf).map_err(|e| format!("{}: {e}", elf.display()))?;
        let e = elf::Elf::parse(&bytes).map_err(|m| format!("{}: {m}", elf.display()))?;
        let named = |n: &str| e.symbols_sized(|s| s.name == n);
        Ok(Sizes {
            vector_table: e.section(".vector_table"),
            text: e.section(".text"),
            rodata: e.section(".rodata"),
            data: e.section(".data"),
            bss: e.section(".bss"),
            uninit: e.section(".uninit"),
            engine: EngineCode::of(&e),
            model_f32: named("NORMCORE_MODEL_F32"),
            model_int8: named("NORMCORE_MODEL_INT8"),
            samples: e.symbols_sized(|s| s.name.starts_with("NORMCORE_SAMPLES_")),
        })
    }

    /// Code: the vector table and `.text`.
    fn code(&self) -> u64 {
        self.vector_table + self.text
    }

    /// Everything loaded into flash.
    fn flash(&self) -> u64 {
        self.vector_table + self.text + self.rodata + self.data
    }

    /// Static RAM (without the stack).
    fn ram_static(&self) -> u64 {
        self.data + self.bss + self.uninit
    }
}

/// normcore's functions in an image, by part ([`elf::Part`]): the engine
/// code of a firmware (no model or sample data).
#[derive(Debug, Clone, Copy)]
struct EngineCode {
    parser: u64,
    engine: u64,
    kernels: u64,
    defmt: u64,
}

impl EngineCode {
    fn of(e: &elf::Elf) -> EngineCode {
        let part =
            |p: elf::Part| e.symbols_sized(|s| s.func && elf::normcore_part(&s.name) == Some(p));
        EngineCode {
            parser: part(elf::Part::Parser),
            engine: part(elf::Part::Engine),
            kernels: part(elf::Part::Kernels),
            defmt: part(elf::Part::Defmt),
        }
    }

    fn total(&self) -> u64 {
        self.parser + self.engine + self.kernels + self.defmt
    }
}

/// `cargo xtask size`: sections of `infer`, split by content, and the stack
/// high-water mark of a QEMU run; then the engine code of `infer` built for
/// int8 models only, f32 only and both (each build also run in QEMU).
fn size() -> Result {
    setup()?;
    ensure_assets()?;
    let target = firmware_dir().join("target");
    // (label, features, ELF, sizes, stack high-water)
    let mut builds = Vec::new();
    for (label, features, keep) in INFER_BUILDS {
        let mut elf = build_infer_with(features)?;
        if let Some(keep) = keep {
            let kept = target.join(keep);
            if let Some(dir) = kept.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::copy(&elf, &kept).map_err(|e| format!("{}: {e}", kept.display()))?;
            elf = kept;
        }
        let sizes = Sizes::of(&elf)?;
        let log = run_infer(&elf)?;
        let stack = log_num(&log, "stack:", "high_water")?;
        let arena = log_num(&log, "samples:", "arena").unwrap_or(0);
        builds.push((label, features, elf, sizes, stack, arena));
    }
    let Some((_, _, elf, s, stack, arena)) = builds.last() else {
        return Err("no build of `infer`".into());
    };
    let (stack, arena) = (*stack, *arena);
    let shown = |elf: &Path| {
        elf.strip_prefix(root())
            .unwrap_or(elf)
            .display()
            .to_string()
    };
    println!(
        "`infer` ({}), {}, release, default features (f32 and int8)\n",
        shown(elf),
        THUMB_TARGETS[0]
    );
    println!("| section        |     bytes | memory      | holds");
    println!(
        "|----------------|-----------|-------------|------------------------------------------"
    );
    let row = |name: &str, v: u64, mem: &str, what: &str| {
        println!("| {name:<14} | {:>9} | {mem:<11} | {what}", thousands(v));
    };
    row(
        ".vector_table",
        s.vector_table,
        "flash",
        "exception vectors",
    );
    row(
        ".text",
        s.text,
        "flash",
        "code: engine, kernels, parser, start-up, logging",
    );
    row(
        ".rodata",
        s.rodata,
        "flash",
        "constants: the models, the samples, tables",
    );
    row(".data", s.data, "flash + RAM", "initialised statics");
    row(".bss", s.bss, "RAM", "zeroed statics: the arena");
    row(".uninit", s.uninit, "RAM", "uninitialised statics");
    println!();
    println!("| split                                   |     bytes |");
    println!("|-----------------------------------------|-----------|");
    let row = |name: &str, v: u64| println!("| {name:<39} | {:>9} |", thousands(v));
    row("code (.vector_table + .text)", s.code());
    row("  of which normcore's (engine code)", s.engine.total());
    row("model data: model-f32.ncm", s.model_f32);
    row("model data: model-int8.ncm", s.model_int8);
    row("sample data (NORMCORE_SAMPLES_*)", s.samples);
    row(
        "other read-only data",
        s.rodata
            .saturating_sub(s.model_f32 + s.model_int8 + s.samples),
    );
    row("flash total", s.flash());
    row("RAM: statics (.data + .bss + .uninit)", s.ram_static());
    row("  of which the arena (both models)", arena);
    row("RAM: stack high-water (QEMU run)", stack);
    row("RAM total (statics + stack)", s.ram_static() + stack);
    println!(
        "\nSizes from the ELF's section headers and symbol table; the stack by painting \
         (firmware/src/stack.rs) during a run of both models on every sample."
    );

    println!(
        "\nEngine code by the kinds of model the build runs (firmware features `int8`, `f32`; \
         normcore's `engine-int8`, `engine-f32`): normcore's functions in `infer`, bytes. \
         Model and sample data excluded.\n"
    );
    println!(
        "| build          | parser | engine | kernels | defmt |  total |   KiB |  .text | stack | features"
    );
    println!(
        "|----------------|--------|--------|---------|-------|--------|-------|--------|-------|---------"
    );
    for (label, features, _, s, stack, _) in &builds {
        let c = s.engine;
        let features = if features.is_empty() {
            "(default)".to_owned()
        } else {
            features.join(" ")
        };
        println!(
            "| {label:<14} | {:>6} | {:>6} | {:>7} | {:>5} | {:>6} | {:>5.2} | {:>6} | {:>5} | {features}",
            thousands(c.parser),
            thousands(c.engine),
            thousands(c.kernels),
            thousands(c.defmt),
            thousands(c.total()),
            c.total() as f64 / 1024.0,
            thousands(s.text),
            thousands(*stack),
        );
    }
    println!(
        "\nparser: normcore::model (Model::parse, the layer decoder, CRC-32); engine: \
         normcore::engine (dispatch, arena plan); kernels: the other modules (int8/f32 \
         kernels, output stages, window iteration); defmt: the defmt::Format impls of \
         normcore's errors (ModelError, LayerFault, ...), reached from infer's error logs. \
         Every build parses and checks both model files; it runs the kinds it has code for \
         (QEMU, every embedded sample, outputs checked against the host's). Budget for one \
         kind: {} B (12 KiB).",
        thousands(ENGINE_CODE_BUDGET)
    );
    for (label, features, elf, s, _, _) in &builds {
        if !features.is_empty() {
            let total = s.engine.total();
            let verdict = if total <= ENGINE_CODE_BUDGET {
                format!("within by {} B", thousands(ENGINE_CODE_BUDGET - total))
            } else {
                format!("OVER by {} B", thousands(total - ENGINE_CODE_BUDGET))
            };
            println!(
                "  {label}: {} B, {verdict} ({})",
                thousands(total),
                shown(elf)
            );
        }
    }
    Ok(())
}

/// `cargo xtask demo`: the issue's end-to-end run; see `print_help`.
fn demo(extra: &[String]) -> Result {
    let started = std::time::Instant::now();
    setup()?;
    // Embed the whole test set (unless told otherwise), so the device's
    // accuracy is the test accuracy.
    let mut args: Vec<String> = Vec::new();
    if !extra.iter().any(|a| a.starts_with("--samples")) {
        args.extend(["--samples".to_owned(), "all".to_owned()]);
    }
    args.extend(extra.iter().cloned());
    eprintln!("\n== 1/3 train, fold, export f32 + int8, host engine outputs");
    assets(&args)?;
    eprintln!("\n== 2/3 build the firmware (embeds the models and samples)");
    let elf = build_infer()?;
    eprintln!("\n== 3/3 run it in QEMU mps2-an386 (Cortex-M4F, -icount shift=6)");
    let log = run_infer(&elf)?;
    let sizes = Sizes::of(&elf)?;
    let summary = read_kv(&assets_dir().join("summary.txt"))?;
    let get = |k: &str| -> Result<String> {
        summary
            .get(k)
            .cloned()
            .ok_or_else(|| format!("summary.txt has no `{k}`"))
    };
    let getn = |k: &str| -> Result<u64> {
        get(k)?
            .parse()
            .map_err(|_| format!("summary.txt: `{k}` is not a number"))
    };
    let n = getn("embedded_samples")?;
    let pct = |c: u64| format!("{:.2}%", 100.0 * c as f64 / n.max(1) as f64);
    let stack = log_num(&log, "stack:", "high_water")?;

    println!();
    println!(
        "normcore demo: `{}` (with BN) trained {} steps on {} ({} train samples); {} test samples \
         run on the host and on QEMU mps2-an386 (Cortex-M4F)",
        get("network")?,
        get("steps")?,
        match get("data")?.as_str() {
            "digits" => "the built-in UCI digits".to_owned(),
            other => format!("`{other}`"),
        },
        get("train_samples")?,
        n
    );
    println!();
    println!(
        "| model                | host acc. | device acc. | device = host engine  | instructions / inference* | flash: model + code | RAM: arena + stack |"
    );
    println!(
        "|----------------------|-----------|-------------|-----------------------|---------------------------|---------------------|--------------------|"
    );
    println!(
        "| float, BN (unfolded) | {:>9} | {:>11} | {:<21} | {:>25} | {:>19} | {:>18} |",
        pct(getn("float_correct")?),
        "host only",
        "",
        "",
        "",
        ""
    );
    let mut all_equal = true;
    for (label, name) in [("folded f32", "f32"), ("int8", "int8")] {
        let host = getn(&format!("{name}_correct"))?;
        let device = log_num(&log, &format!("{name} result:"), "correct")?;
        let identical = log_num(&log, &format!("{name} host parity:"), "identical")?;
        let within = log_num(&log, &format!("{name} host parity:"), "within_tolerance")?;
        let digest_dev = log_field(&log, &format!("{name} result:"), "digest").unwrap_or("?");
        let digest_host = get(&format!("{name}_digest"))?;
        let same = if identical == n && digest_dev == digest_host {
            format!("{identical}/{n} bit-identical")
        } else if within == n {
            format!("{within}/{n} within 1e-5")
        } else {
            all_equal = false;
            format!("MISMATCH {identical}/{n}")
        };
        all_equal &= host == device;
        let instructions = log_num(&log, &format!("{name} inference:"), "instructions")?;
        let model = getn(&format!("{name}_model_bytes"))?;
        let arena = getn(&format!("{name}_arena_bytes"))?;
        println!(
            "| {label:<20} | {:>9} | {:>11} | {same:<21} | {:>25} | {:>19} | {:>18} |",
            pct(host),
            pct(device),
            thousands(instructions),
            format!("{} + {} B", thousands(model), thousands(sizes.code())),
            format!("{} + {} B", thousands(arena), thousands(stack)),
        );
    }
    println!();
    println!(
        "* instructions executed under QEMU -icount shift=6 (timer ticks / 1.6), not Cortex-M4 cycles; \
         code = the firmware's whole .text ({} B of it normcore's parser, engine, kernels and defmt impls), \
         stack = high-water mark of the run; `cargo xtask firmware infer` prints per-layer costs, \
         `cargo xtask size` the memory map. {:.0} s in all.",
        thousands(sizes.engine.total()),
        started.elapsed().as_secs_f64()
    );
    if all_equal {
        Ok(())
    } else {
        Err("the device does not agree with the host".into())
    }
}

/// Build the firmware and run one binary in QEMU through cargo's runner
/// (`firmware/qemu-run`), which decodes its defmt log.
fn firmware(args: &[String]) -> Result {
    setup()?;
    ensure_assets()?;
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

/// The real boards' crates, `firmware/boards/NAME` (each its own Cargo
/// world, with its HAL, memory.x and probe-rs runner).
const BOARDS: [&str; 1] = ["nrf52840dk"];

/// Each board crate formatted, clippy-clean and built without warnings
/// (release). Nothing runs them here: that needs the board and a probe.
fn build_boards(cargo: &str) -> Result {
    for board in BOARDS {
        let dir = firmware_dir().join("boards").join(board);
        let started = std::time::Instant::now();
        run_in(&dir, cargo, ["fmt", "--", "--check"], &[])?;
        run_in(
            &dir,
            cargo,
            ["clippy", "--release", "--", "-D", "warnings"],
            &[],
        )?;
        run_in_no_warnings(&dir, cargo, &["build", "--release"])?;
        eprintln!(
            "xtask: board {board} checked and built in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `cargo xtask device-eval [ARGS]`: build `serve`, then run `normcore
/// device-eval --elf <serve> ARGS` (release).
fn device_eval(args: &[String]) -> Result {
    setup()?;
    ensure_assets()?;
    run_in(
        &firmware_dir(),
        &cargo(),
        ["build", "--release", "--quiet", "--bin", "serve"],
        &[],
    )?;
    let elf = firmware_dir()
        .join("target")
        .join(THUMB_TARGETS[0])
        .join("release")
        .join("serve");
    let mut all: Vec<OsString> = [
        "run",
        "--release",
        "--quiet",
        "-p",
        "normcore-trainer",
        "--",
        "device-eval",
        "--elf",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    all.push(elf.into_os_string());
    all.extend(args.iter().map(OsString::from));
    run(&cargo(), all, &[])
}
