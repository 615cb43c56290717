//! Building a board's firmware: `cargo build --release` in the board
//! crate's directory (so that cargo reads its `.cargo/config.toml`), with
//! the host build's settings removed and the assets directory given.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

use crate::boards::Board;

/// The host build's settings that must not reach a firmware build: they
/// would replace a board's target, target directory or rustflags.
pub const HOST_BUILD_VARS: [&str; 5] = [
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
];

/// `cargo <args>` set up to build the board crate in `dir` (absolute):
/// run from `dir` so that Cargo reads its `.cargo/config.toml` (target,
/// runner, target directory, DEFMT_LOG), and without the host build's
/// settings, which would override that config.
pub fn firmware_cargo(dir: &Path, args: &[&str]) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(dir).stdin(Stdio::null());
    for var in HOST_BUILD_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct Build<'a> {
    /// Binaries (`--bin` each); empty: all of the board's.
    pub bins: &'a [&'a str],
    /// Feature arguments (`--no-default-features --features int8`).
    pub features: &'a [&'a str],
    /// The assets directory (`$NORMCORE_ASSETS`); `None`: the default,
    /// `firmware/assets`.
    pub assets: Option<&'a Path>,
    /// `--quiet`.
    pub quiet: bool,
}

/// Build `board`'s firmware (release) as `what` says; the directory of
/// its ELFs. A failed build's error carries cargo's messages (the build
/// step's "does not fit" or "not a valid model file" among them).
pub fn build(board: &Board, what: &Build<'_>) -> Result<PathBuf> {
    let mut args = vec!["build", "--release"];
    if what.quiet {
        args.push("--quiet");
    }
    if what.bins.is_empty() {
        args.push("--bins");
    }
    for bin in what.bins {
        args.extend(["--bin", bin]);
    }
    args.extend(what.features);
    let mut cmd = firmware_cargo(&board.dir(), &args);
    match what.assets {
        Some(dir) => {
            let dir = std::path::absolute(dir)?;
            cmd.env(normcore_trainer::assets::ASSETS_ENV, dir);
        }
        None => {
            cmd.env_remove(normcore_trainer::assets::ASSETS_ENV);
        }
    }
    let out = cmd
        .stdout(Stdio::inherit())
        .output()
        .context("cannot run cargo to build the firmware")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "building the firmware for {} failed ({}):\n{}",
        board.name,
        out.status,
        stderr
    );
    if !what.quiet {
        eprint!("{stderr}");
    }
    Ok(board.elf_dir())
}
