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
//! cargo xtask boards          the boards: crate, core, target, QEMU machine
//! cargo xtask firmware [BIN] [--board B] [--model PATH.ncm ...]
//!                             build a board's firmware (your model, or the demo's) and run BIN in QEMU
//! cargo xtask device-eval [--model PATH.ncm ...] [ARGS]
//!                             stream the test set through `serve` in QEMU over the UART
//! cargo xtask device-adapt [ARGS]
//!                             adapt the int8 model on `serve` in QEMU, checked against the host
//! cargo xtask fuzz [SECONDS]  fuzz core's model parser and engine (default 600 s)
//! cargo xtask quant-check     MNIST: train, export f32 and int8, print the accuracy table
//! cargo xtask size            flash and RAM of `infer`, by section and content; engine code per model kind
//! cargo xtask bench firmware [--check | --update-baseline]
//!                             per-kernel cost table of the Cortex-M kernels (QEMU, -icount);
//!                             check against / rewrite firmware/bench-baseline.tsv
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

use normcore_device_tools::boards::{self, Board, BOARDS};
use normcore_device_tools::build::{self as fw_build, Build};
use normcore_device_tools::infer_log::{log_field, log_num, parse_finetune, FinetuneEval};
use normcore_device_tools::qemu::{run_qemu, RunOptions};
use normcore_device_tools::thousands;

/// The Cortex-M targets the core crate must build for warning-free: M4F
/// and M0 (no FPU, no atomics). The boards add theirs (`boards::targets`).
const CORE_TARGETS: [&str; 2] = ["thumbv7em-none-eabihf", "thumbv6m-none-eabi"];

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("test") => test(),
        Some("demo") => demo(&args[1..]),
        Some("assets") => assets(&args[1..]),
        Some("boards") => {
            print_boards();
            Ok(())
        }
        Some("firmware") => firmware(&args[1..]),
        Some("device-eval") => device_eval(&args[1..]),
        Some("device-adapt") => device_adapt(&args[1..]),
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
  setup           install, idempotently, the Rust targets of every board
                  (rustup target add), QEMU (Debian's qemu-system-arm, without
                  recommends) and defmt-print (cargo install)
  test            cargo fmt --check, clippy -D warnings, every board crate
                  built without warnings (firmware/boards/; the nRF52840-DK
                  only built: no hardware), all tests (release; QEMU runs and
                  device = host parity on every QEMU board), no_std builds
  boards          the boards: crate, core, target, QEMU machine, binaries
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
  firmware [BIN] [--board NAME] [--model PATH.ncm]... [--data digits|mnist|FILE.csv]
           [--data-dir DIR] [--samples N|all]
                  build a board's firmware (default mps2-an386) and run BIN
                  (default: hello) in QEMU, printing its decoded log; -icount
                  on unless NORMCORE_ICOUNT is set. With --model: your model
                  file(s) (f32 and/or int8), test samples from the data set
                  with the host engine's outputs (`normcore samples`, into
                  target/deploy/BOARD), and for `infer` the table of host vs
                  device accuracy, bit-identical outputs, instructions per
                  inference, flash and RAM. Without: the demo's assets
                  (generated if missing). `finetune` (mps2-an386, microbit):
                  statistics re-estimation of the int8 model on a drift of
                  the samples, then tail training, and a table of accuracy
                  clean / shifted / adapted / tuned / reloaded, instructions
                  per adapted sample (per pass and in all) and per tail step
                  against one inference, and RAM. On a
                  board QEMU does not model: builds and prints the flash
                  command
  device-eval [--board NAME] [--model PATH.ncm]... [ARGS]
                  build `serve` (with your model or the demo's) and run
                  `normcore device-eval` on it: QEMU with the console UART on
                  stdio, the test set streamed through it (docs/SERIAL.md),
                  device vs host engine accuracy and agreement. ARGS:
                  --kind embedded|int8|f32|both, --samples N|all,
                  --data digits|mnist, --timeout S
  device-adapt [ARGS]
                  run `normcore device-adapt` (release) with the demo's
                  assets (generated if missing): `serve` with the `adapt`
                  feature adapts its int8 model over the serial line, the
                  host repeats it with core and checks it bit for bit.
                  ARGS: --method restat|tail|both, --shift, --unlabeled N,
                  --labeled N, --epochs N, --samples N|all, --seed, --board,
                  --elf, --timeout
  bench firmware [--board NAME] [--check | --update-baseline]
                  build a board's `bench` (the MPS2 boards; elsewhere
                  `mathbench`, the elementary functions) and run it in QEMU
                  with -icount: a table of every inference kernel's
                  instructions (and per MAC) on fixed shapes, the whole
                  paper MLP (784-100-100-100-10), int8 in both weight forms,
                  and whole networks (the `cnn` preset, DS-CNN; int8, f32)
                  per inference and per layer, with the boards they fit.
                  --check: compare every row, and `infer`'s per-layer rows
                  on the demo's assets, with firmware/bench-baseline.tsv;
                  fail if any rose by more than 1 % (part of `test`).
                  --update-baseline: rewrite that file from this run.
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

/// The workspace root.
fn root() -> PathBuf {
    normcore_device_tools::root()
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
        for var in fw_build::HOST_BUILD_VARS {
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
    let mut targets = boards::targets();
    targets.extend(CORE_TARGETS);
    targets.sort_unstable();
    targets.dedup();
    // Asked of rustc itself (the pinned toolchain may be a link to an
    // installed one, which `rustup target list` cannot describe).
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !target_installed(t))
        .collect();
    if missing.is_empty() {
        eprintln!("setup: Rust targets present: {}", targets.join(", "));
    } else {
        run("rustup", ["target", "add"].iter().chain(&missing), &[]).map_err(|e| {
            format!("{e}; for a linked toolchain, add them to the one it links (`.ci/toolchain`)")
        })?;
    }
    setup_debian_packages()?;
    setup_defmt_print()
}

/// The toolchain has `core` for `target`.
fn target_installed(target: &str) -> bool {
    let Some(dir) = output("rustc", &["--print", "target-libdir", "--target", target]) else {
        return false;
    };
    std::fs::read_dir(dir.trim()).is_ok_and(|mut entries| {
        entries.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
    })
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
    let install = format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    let is_root = output("id", &["-u"]).is_some_and(|uid| uid.trim() == "0");
    if !is_root {
        return Err(format!(
            "{} missing; as root run:\n    apt-get update && {install}\nthen run this again",
            packages.join(" and ")
        ));
    }
    let noninteractive = [("DEBIAN_FRONTEND", "noninteractive")];
    run("apt-get", ["update"], &noninteractive)?;
    // Without recommends: qemu-system-arm alone, not the ~160 packages its
    // recommendations pull (which also replaced a newer qemu-utils).
    run(
        "apt-get",
        ["install", "-y", "--no-install-recommends"]
            .iter()
            .chain(&packages),
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
    // The firmware, its own Cargo world: formatted, and every board crate
    // clippy-clean and warning-free (link arguments live in the build
    // step, so nothing here needs RUSTFLAGS, which would replace a board's
    // config). The QEMU tests below reuse the ELFs built here.
    let fw = firmware_dir();
    run_in(&fw, &cargo, ["fmt", "--all", "--", "--check"], &[])?;
    // The firmware embeds the assets: its build fails without them. (The
    // device parity tests regenerate the default ones themselves.)
    ensure_assets()?;
    for board in BOARDS {
        let started = std::time::Instant::now();
        let dir = board.dir();
        run_in(
            &dir,
            &cargo,
            ["clippy", "--release", "--", "-D", "warnings"],
            &[],
        )?;
        if board == boards::default_board() {
            // The build for one kind of model (int8, the usual device
            // choice): clippy-clean and warning-free too, `infer` linked.
            // Before the default build below, so that the ELFs left in the
            // target directory are the default ones the QEMU tests run.
            let int8_only = ["--no-default-features", "--features", "int8"];
            run_in(
                &dir,
                &cargo,
                ["clippy", "--release"]
                    .iter()
                    .chain(&int8_only)
                    .chain(&["--", "-D", "warnings"]),
                &[],
            )?;
            let mut args = vec!["build", "--release", "--bin", "infer"];
            args.extend(int8_only);
            run_in_no_warnings(&dir, &cargo, &args)?;
        }
        run_in_no_warnings(&dir, &cargo, &["build", "--release", "--bins"])?;
        eprintln!(
            "xtask: board {} checked and built in {:.0} s{}",
            board.name,
            started.elapsed().as_secs_f64(),
            if board.qemu.is_none() {
                " (real hardware: built, not run)"
            } else {
                ""
            }
        );
    }
    // The instruction-count gate: every `bench` row and the demo's `infer`
    // rows against the committed baseline (QEMU -icount; fails on a row
    // more than 1 % above it). Reuses the ELFs built above.
    bench::check()?;
    // The numerics are heavy: tests run optimised. This includes the QEMU
    // runs of the firmware (tests/tests/qemu.rs), the device = host
    // parity of `infer` on every QEMU board (tests/tests/device_parity.rs)
    // and `finetune`'s re-estimation against the host's on mps2-an386 and
    // the micro:bit (tests/tests/finetune.rs; the boards' default builds
    // above include it, feature `adapt`).
    run(&cargo, ["test", "--workspace", "--release"], &[])?;
    // The trainer's loops (host-trainer/src/hostops.rs) are built for
    // AVX-512, AVX2 and baseline x86-64, and the run above took the widest
    // this machine has; their tests against core run on the others too.
    for level in ["avx2", "baseline"] {
        run(
            &cargo,
            [
                "test",
                "-p",
                "normcore-trainer",
                "--release",
                "--lib",
                "hostops::",
            ],
            &[("NORMCORE_SIMD", level)],
        )?;
    }
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
    for target in CORE_TARGETS {
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
/// root) or `firmware/assets`, as the trainer and the boards' build step take it.
fn assets_dir() -> PathBuf {
    match env::var_os("NORMCORE_ASSETS") {
        Some(d) if !d.is_empty() => root().join(d),
        _ => firmware_dir().join("assets"),
    }
}

/// `normcore assets ARGS`, the trainer built in release (training in a debug
/// build would take minutes).
fn assets(args: &[String]) -> Result {
    let mut all = vec![
        "run".to_owned(),
        "--release".into(),
        "--quiet".into(),
        "-p".into(),
        "normcore-cli".into(),
        "--".into(),
        "assets".into(),
    ];
    all.extend(args.iter().cloned());
    run(&cargo(), all, &[])
}

/// Generate the default assets unless valid ones are there (the model
/// files present and `samples.bin` made for them).
fn ensure_assets() -> Result {
    let dir = assets_dir();
    if normcore_device_tools::infer_log::load_assets(&dir).is_ok() {
        return Ok(());
    }
    eprintln!(
        "xtask: no valid firmware assets in {}: generating them",
        dir.display()
    );
    assets(&[])
}

/// `board`'s `infer` ELF, built (release) with the feature arguments
/// `features` (none: the default build, both kinds of model) and the
/// assets in `assets` (`None`: the default directory).
fn build_infer_with(board: &Board, features: &[&str], assets: Option<&Path>) -> Result<PathBuf> {
    let dir = fw_build::build(
        board,
        &Build {
            bins: &["infer"],
            features,
            assets,
            quiet: true,
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    Ok(dir.join("infer"))
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

/// Run `infer` on `board` in QEMU under `-icount` and return its decoded
/// log (level and message per line); fail, with the log, if it fails.
fn run_infer(board: &Board, elf: &Path) -> Result<String> {
    let opts = RunOptions {
        timeout: std::time::Duration::from_secs(300),
        ..RunOptions::default()
    };
    let out = run_qemu(board, elf, &opts)?;
    if !out.success() {
        return Err(format!(
            "infer failed in QEMU on {}:\n{}",
            board.name,
            out.describe()
        ));
    }
    Ok(out.stdout_text())
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
    /// `normcore::adapt` (only `finetune` has it): not in [`total`](Self::total).
    adapt: u64,
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
            adapt: part(elf::Part::Adapt),
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
    let board = boards::default_board();
    let target = board.dir().join("target");
    // (label, features, ELF, sizes, stack high-water)
    let mut builds = Vec::new();
    for (label, features, keep) in INFER_BUILDS {
        let mut elf = build_infer_with(board, features, None)?;
        if let Some(keep) = keep {
            let kept = target.join(keep);
            if let Some(dir) = kept.parent() {
                std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            }
            std::fs::copy(&elf, &kept).map_err(|e| format!("{}: {e}", kept.display()))?;
            elf = kept;
        }
        let sizes = Sizes::of(&elf)?;
        let log = run_infer(board, &elf)?;
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
        "`infer` ({}), {}, {}, release, default features (f32 and int8)\n",
        shown(elf),
        board.name,
        board.target
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
         (firmware/lib/src/stack.rs) during a run of both models on every sample."
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

/// `cargo xtask demo`: the issue's end-to-end run; see `print_help`. Its
/// built-in model goes through the same path as a user's
/// (`cargo xtask firmware infer --model`): assets directory, board build,
/// QEMU run, [`deploy_table`].
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
    let board = boards::default_board();
    eprintln!("\n== 1/3 train, fold, export f32 + int8, host engine outputs");
    assets(&args)?;
    eprintln!("\n== 2/3 build the firmware (embeds the models and samples)");
    let elf = build_infer_with(board, &[], None)?;
    eprintln!(
        "\n== 3/3 run it in QEMU {} ({}, -icount shift=6)",
        board.name, board.core
    );
    let log = run_infer(board, &elf)?;
    let agree = deploy_table(board, &assets_dir(), &elf, &log)?;
    println!("{:.0} s in all.", started.elapsed().as_secs_f64());
    if agree {
        Ok(())
    } else {
        Err("the device does not agree with the host".into())
    }
}

/// Print the deployment table of an `infer` run on `board`: per model the
/// host's and the device's accuracy on the embedded samples, how many
/// outputs are bit-identical, instructions per inference, flash (model +
/// code) and RAM (arena + stack); the host figures from the assets
/// directory's `summary.txt`. Whether the device agreed with the host on
/// every model.
fn deploy_table(board: &Board, dir: &Path, elf: &Path, log: &str) -> Result<bool> {
    let sizes = Sizes::of(elf)?;
    let summary = read_kv(&dir.join("summary.txt"))?;
    let get = |k: &str| -> Result<String> {
        summary
            .get(k)
            .cloned()
            .ok_or_else(|| format!("{}: summary.txt has no `{k}`", dir.display()))
    };
    let getn = |k: &str| -> Result<u64> {
        get(k)?
            .parse()
            .map_err(|_| format!("summary.txt: `{k}` is not a number"))
    };
    let n = getn("embedded_samples")?;
    let pct = |c: u64| format!("{:.2}%", 100.0 * c as f64 / n.max(1) as f64);
    let stack = log_num(log, "stack:", "high_water")?;
    let data = match get("data")?.as_str() {
        "digits" => "the built-in UCI digits".to_owned(),
        other => format!("`{other}`"),
    };
    println!();
    match summary.get("network") {
        Some(network) => println!(
            "normcore: `{network}` (with BN) trained {} steps on {data} ({} train samples); {n} test \
             samples run on the host and on QEMU {} ({})",
            get("steps")?,
            get("train_samples")?,
            board.name,
            board.core
        ),
        None => println!(
            "normcore: {} on {data}: {n} of {} test samples run on the host and on QEMU {} ({})",
            dir.display(),
            get("test_samples")?,
            board.name,
            board.core
        ),
    }
    println!();
    println!(
        "| model                | host acc. | device acc. | device = host engine  | instructions / inference* | flash: model + code | RAM: arena + stack |"
    );
    println!(
        "|----------------------|-----------|-------------|-----------------------|---------------------------|---------------------|--------------------|"
    );
    if summary.contains_key("float_correct") {
        println!(
            "| float, BN (unfolded) | {:>9} | {:>11} | {:<21} | {:>25} | {:>19} | {:>18} |",
            pct(getn("float_correct")?),
            "host only",
            "",
            "",
            "",
            ""
        );
    }
    let mut all_equal = true;
    let mut rows = 0;
    for (label, name) in [("folded f32", "f32"), ("int8", "int8")] {
        if !summary.contains_key(&format!("{name}_correct")) {
            continue;
        }
        rows += 1;
        let host = getn(&format!("{name}_correct"))?;
        let model = getn(&format!("{name}_model_bytes"))?;
        let arena = getn(&format!("{name}_arena_bytes"))?;
        if log_field(log, &format!("{name}: skipped"), "x").is_some()
            || log.contains(&format!("{name}: skipped"))
        {
            println!(
                "| {label:<20} | {:>9} | {:>11} | {:<21} | {:>25} | {:>19} | {:>18} |",
                pct(host),
                "not run",
                "(engine without it)",
                "",
                format!("{} + {} B", thousands(model), thousands(sizes.code())),
                ""
            );
            continue;
        }
        let device = log_num(log, &format!("{name} result:"), "correct")?;
        let identical = log_num(log, &format!("{name} host parity:"), "identical")?;
        let within = log_num(log, &format!("{name} host parity:"), "within_tolerance")?;
        let digest_dev = log_field(log, &format!("{name} result:"), "digest").unwrap_or("?");
        let digest_host = get(&format!("{name}_digest"))?;
        let same = if identical == n && digest_dev == digest_host {
            format!("{identical}/{n} bit-identical")
        } else if within == n {
            format!("{within}/{n} within tolerance")
        } else {
            all_equal = false;
            format!("MISMATCH {identical}/{n}")
        };
        all_equal &= host == device;
        let instructions = log_num(log, &format!("{name} inference:"), "instructions")?;
        println!(
            "| {label:<20} | {:>9} | {:>11} | {same:<21} | {:>25} | {:>19} | {:>18} |",
            pct(host),
            pct(device),
            thousands(instructions),
            format!("{} + {} B", thousands(model), thousands(sizes.code())),
            format!("{} + {} B", thousands(arena), thousands(stack)),
        );
    }
    if rows == 0 {
        return Err(format!("{}: summary.txt lists no model", dir.display()));
    }
    println!();
    println!(
        "* instructions executed under QEMU -icount shift=6 (timer ticks converted), not cycles \
         of a real core; code = the firmware's whole .text ({} B of it normcore's parser, engine, \
         kernels and defmt impls), stack = high-water mark of the run; `cargo xtask firmware \
         infer` prints per-layer costs, `cargo xtask size` the memory map.",
        thousands(sizes.engine.total()),
    );
    Ok(all_equal)
}

/// `cargo xtask boards`.
fn print_boards() {
    println!("| board | core | target | QEMU machine | bins |");
    println!("|---|---|---|---|---|");
    for b in BOARDS {
        let machine = b.qemu.map_or("(real hardware)".to_owned(), |q| {
            format!(
                "{}{}",
                q.machine,
                q.cpu.map_or(String::new(), |c| format!(" -cpu {c}"))
            )
        });
        println!(
            "| {} | {} | {} | {machine} | {} |",
            b.name,
            b.core,
            b.target,
            b.bins.join(", ")
        );
    }
}

/// The options `cargo xtask firmware` and `device-eval` share: which board,
/// and the user's model file(s) with the data set their samples come from.
#[derive(Debug, Default)]
struct Deploy {
    board: Option<String>,
    models: Vec<String>,
    /// `normcore samples` options: `--data`, `--data-dir`, `--test-csv`,
    /// `--input-shape`, `--samples`.
    samples_args: Vec<String>,
    /// Everything else, in order.
    rest: Vec<String>,
}

impl Deploy {
    fn parse(args: &[String]) -> Result<Deploy> {
        let mut d = Deploy::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
                _ => (a.as_str(), None),
            };
            let mut value = || -> Result<String> {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            match flag {
                "--board" => d.board = Some(value()?),
                "--model" => d.models.push(value()?),
                "--data" | "--data-dir" | "--test-csv" | "--input-shape" | "--samples" => {
                    let v = value()?;
                    d.samples_args.extend([flag.to_owned(), v]);
                }
                _ => d.rest.push(a.clone()),
            }
        }
        Ok(d)
    }

    fn board(&self) -> Result<&'static Board> {
        match &self.board {
            Some(name) => boards::board(name).map_err(|e| e.to_string()),
            None => Ok(boards::default_board()),
        }
    }

    /// The assets directory to build with: for `--model`, one written by
    /// `normcore samples` (release) under `target/deploy/BOARD`; else the
    /// default assets (generated if missing). Data options without a model
    /// are refused: they would be silently ignored.
    fn assets(&self, board: &Board) -> Result<Option<PathBuf>> {
        if self.models.is_empty() {
            if !self.samples_args.is_empty() {
                return Err(format!(
                    "{} apply to --model PATH.ncm (your own model); the demo's assets come from \
                     `cargo xtask assets` (which takes them)",
                    self.samples_args
                        .iter()
                        .filter(|a| a.starts_with("--"))
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            ensure_assets()?;
            return Ok(None);
        }
        let dir = root().join("target").join("deploy").join(board.name);
        let mut args: Vec<String> = [
            "run",
            "--release",
            "--quiet",
            "-p",
            "normcore-cli",
            "--",
            "samples",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for m in &self.models {
            args.extend(["--model".to_owned(), m.clone()]);
        }
        args.extend(self.samples_args.iter().cloned());
        args.extend(["--out-dir".to_owned(), dir.display().to_string()]);
        run(&cargo(), args, &[])?;
        Ok(Some(dir))
    }
}

/// `cargo xtask firmware [BIN] [--board B] [--model PATH.ncm ...] [--data
/// ...] [--samples N|all]`: build a board's firmware (with the user's
/// model, or the demo's assets) and run BIN in QEMU, printing its decoded
/// log; for `infer`, also the deployment table.
fn firmware(args: &[String]) -> Result {
    setup()?;
    let d = Deploy::parse(args)?;
    let bin = match &d.rest[..] {
        [] => "hello",
        [bin] if !bin.starts_with('-') => bin.as_str(),
        other => {
            return Err(format!(
                "usage: cargo xtask firmware [BIN] [--board NAME] [--model PATH.ncm]... \
                 [--data digits|mnist|FILE.csv] [--data-dir DIR] [--samples N|all] \
                 (not understood: {})",
                other.join(" ")
            ))
        }
    };
    let board = d.board()?;
    if !board.has(bin) {
        return Err(format!(
            "{} has no binary `{bin}`; it has {}",
            board.name,
            board.bins.join(", ")
        ));
    }
    let assets = d.assets(board)?;
    let dir = fw_build::build(
        board,
        &Build {
            bins: &[bin],
            assets: assets.as_deref(),
            ..Build::default()
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    let elf = dir.join(bin);
    if board.qemu.is_none() {
        println!(
            "built {} for {} (real hardware). Flash and run it with the board connected:\n    \
             cd firmware/boards/{} && {}cargo run --release --bin {bin}",
            elf.display(),
            board.name,
            board.name,
            assets.as_ref().map_or(String::new(), |a| format!(
                "NORMCORE_ASSETS={} ",
                a.display()
            ))
        );
        return Ok(());
    }
    let serial = bin == "uart_echo";
    let opts = RunOptions {
        timeout: std::time::Duration::from_secs(300),
        // Instruction counts are only meaningful under -icount.
        icount: env::var_os("NORMCORE_ICOUNT").is_none_or(|v| v == "1"),
        // uart_echo talks over the UART: this process's stdin, to its end.
        console: if serial {
            let mut input = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut input)
                .map_err(|e| format!("stdin: {e}"))?;
            normcore_device_tools::qemu::Console::Serial(input)
        } else {
            normcore_device_tools::qemu::Console::Defmt
        },
    };
    let out = run_qemu(board, &elf, &opts)?;
    let text = out.stdout_text();
    if serial {
        std::io::Write::write_all(&mut std::io::stdout(), &out.stdout)
            .map_err(|e| format!("stdout: {e}"))?;
    } else {
        print!("{text}");
    }
    eprint!("{}", out.stderr);
    if !out.success() {
        return Err(format!("{bin} failed on {} ({})", board.name, out.status));
    }
    if bin == "infer" {
        let dir = assets.unwrap_or_else(assets_dir);
        if !deploy_table(board, &dir, &elf, &text)? {
            return Err("the device does not agree with the host".into());
        }
    }
    if bin == "finetune" {
        finetune_table(board, &elf, &text)?;
    }
    Ok(())
}

/// Print the table of a `finetune` run on `board` (its log `log`, its ELF
/// `elf`): accuracy on the evaluation half clean, shifted, adapted and
/// after the reload; the cost of re-estimation per pass and per sample
/// against one plain inference; the memory adaptation takes.
fn finetune_table(board: &Board, elf: &Path, log: &str) -> Result {
    let r = parse_finetune(log)?;
    let s = Sizes::of(elf)?;
    let unit = &r.unit;
    let pct =
        |e: &FinetuneEval| format!("{:.2}%", 100.0 * e.correct as f64 / e.total.max(1) as f64);
    let times = |v: u64| format!("{:.2}x", v as f64 / r.inference.max(1) as f64);
    println!();
    println!(
        "finetune on QEMU {} ({}): statistics re-estimation of the int8 model on {} unlabeled \
         samples drifted by gain {}/256 and {:+} levels about the zero point {}{}; accuracy on the \
         other {} (the split, the drift and the tail's settings: firmware/lib/src/scenario.rs)",
        board.name,
        board.core,
        r.adapt,
        r.gain_q8,
        r.offset,
        r.zero_point,
        if r.tail.is_some() {
            ", then tail training on the same samples with their labels"
        } else {
            ""
        },
        r.eval
    );
    println!();
    println!(
        "| evaluation half             | accuracy | correct | digest     | {unit} / inference |"
    );
    println!(
        "|-----------------------------|----------|---------|------------|{}|",
        "-".repeat(unit.len() + 14)
    );
    let tuned = r
        .tuned
        .as_ref()
        .map(|e| ("after tail training", e, Some(e.cost)));
    for (label, e, cost) in [
        Some(("clean", &r.clean, Some(r.clean.cost))),
        Some(("shifted (drift)", &r.shifted, Some(r.shifted.cost))),
        Some(("after re-estimation", &r.adapted, Some(r.adapted.cost))),
        tuned,
        Some(("after save, reset, reload", &r.reload, None)),
    ]
    .into_iter()
    .flatten()
    {
        println!(
            "| {label:<27} | {:>8} | {:>7} | {:#010x} | {:>w$} |",
            pct(e),
            format!("{}/{}", e.correct, e.total),
            e.digest,
            cost.map_or("".into(), thousands),
            w = unit.len() + 12
        );
    }
    println!();
    println!("| re-estimation           | {unit:>12} | per sample | per sample / one inference |");
    println!(
        "|-------------------------|--------------|------------|----------------------------|"
    );
    for (k, p) in r.passes.iter().enumerate() {
        println!(
            "| {:<23} | {:>12} | {:>10} | {:>26} |",
            format!("pass {k} (layer {})", p.layer),
            thousands(p.cost),
            thousands(p.per_sample),
            times(p.per_sample)
        );
    }
    println!(
        "| refolds (finish_pass)   | {:>12} | {:>10} | {:>26} |",
        thousands(r.refold),
        "",
        ""
    );
    println!(
        "| {:<23} | {:>12} | {:>10} | {:>26} |",
        format!("all {} passes", r.passes.len()),
        thousands(r.restat_cost),
        thousands(r.per_sample),
        times(r.per_sample)
    );
    if let Some(t) = &r.tail {
        println!();
        println!(
            "| tail training           | {unit:>12} | per step   | per step / one inference   |"
        );
        println!(
            "|-------------------------|--------------|------------|----------------------------|"
        );
        println!(
            "| {:<23} | {:>12} | {:>10} | {:>26} |",
            format!("{} steps ({} epochs)", t.steps, t.epochs),
            thousands(t.cost),
            thousands(t.per_step),
            times(t.per_step)
        );
        println!(
            "| commit                  | {:>12} | {:>10} | {:>26} |",
            thousands(t.commit),
            "",
            ""
        );
        println!();
        println!(
            "Tail: lr {}, momentum {}, γ/β trained: {}; mean loss {} in the first epoch, {} in the \
             last (scenario::TAIL, TAIL_EPOCHS).",
            t.lr,
            t.momentum,
            if t.train_bn { "yes" } else { "no" },
            t.loss_first,
            t.loss_last
        );
    }
    println!();
    println!(
        "RAM for adaptation (core's adapt::plan): overlay {} B + max(re-estimation workspace {} B, \
         tail workspace {} B) = {} B (the workspace's buffer, {} B, then takes the saved overlay \
         back); flash region {} B (two slots: RAM-backed on the MPS2 boards, the chip's own flash \
         through its NVMC on the micro:bit and the nRF52840-DK); arena {} B; stack high-water {} B.",
        thousands(r.overlay_bytes as u64),
        thousands(r.restat_bytes as u64),
        thousands(r.tail_bytes as u64),
        thousands(r.adaptation_bytes as u64),
        thousands(r.scratch_bytes as u64),
        thousands(r.store_bytes as u64),
        thousands(r.arena_bytes as u64),
        thousands(r.stack_high_water as u64),
    );
    println!(
        "Code: .text {} B, of which normcore's inference {} B and its adaptation (normcore::adapt) \
         {} B. Overlay CRC-32 {:#010x}, saved (seq {}) and reloaded {}.",
        thousands(s.text),
        thousands(s.engine.total()),
        thousands(s.engine.adapt),
        r.overlay_crc,
        r.seq,
        if r.identical {
            "identical"
        } else {
            "DIFFERENT"
        }
    );
    println!(
        "{unit} under QEMU -icount shift=6; the host's figures for the same scenario: \
         `cargo test --release -p normcore-tests --test finetune`."
    );
    Ok(())
}

/// `cargo xtask device-adapt [ARGS]`: `normcore device-adapt` (release)
/// with the demo's assets, which it builds `serve` with.
fn device_adapt(args: &[String]) -> Result {
    setup()?;
    ensure_assets()?;
    let mut all: Vec<OsString> = [
        "run",
        "--release",
        "--quiet",
        "-p",
        "normcore-cli",
        "--",
        "device-adapt",
        "--assets",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    all.push(assets_dir().into_os_string());
    all.extend(args.iter().map(OsString::from));
    run(&cargo(), all, &[])
}

/// `cargo xtask device-eval [--board B] [--model PATH.ncm ...] [--data ...]
/// [--samples N|all] [ARGS]`: build `serve` with the user's model (or the
/// demo's assets), then run `normcore device-eval` on it (release).
fn device_eval(args: &[String]) -> Result {
    setup()?;
    let d = Deploy::parse(args)?;
    let board = d.board()?;
    // device-eval streams its own choice of samples: --samples and the data
    // options are its as well as `normcore samples`'.
    let assets = if d.models.is_empty() {
        ensure_assets()?;
        assets_dir()
    } else {
        let only_models = Deploy {
            board: d.board.clone(),
            models: d.models.clone(),
            samples_args: d
                .samples_args
                .chunks(2)
                .filter(|kv| kv[0] != "--samples")
                .flatten()
                .cloned()
                .collect(),
            rest: Vec::new(),
        };
        only_models
            .assets(board)?
            .ok_or("no assets directory for --model")?
    };
    let mut all: Vec<OsString> = [
        "run",
        "--release",
        "--quiet",
        "-p",
        "normcore-cli",
        "--",
        "device-eval",
        "--board",
        board.name,
        "--assets",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    all.push(assets.into_os_string());
    all.extend(d.samples_args.iter().map(OsString::from));
    all.extend(d.rest.iter().map(OsString::from));
    run(&cargo(), all, &[])
}
