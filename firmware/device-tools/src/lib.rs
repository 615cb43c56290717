//! # normcore-device-tools
//!
//! The host side of normcore's devices, in one place, used by `xtask`, the
//! integration tests and the `normcore device-eval` command:
//!
//! - [`boards`]: the board list (crate, target, QEMU machine);
//! - [`build`]: building a board's firmware with a given assets directory;
//! - [`qemu`]: running a firmware ELF under QEMU through `firmware/qemu-run`
//!   (never hanging), and checking the tools it needs;
//! - [`infer_log`]: `key=value` fields of the firmware's logs, and the
//!   `infer` program's report, parsed;
//! - [`device_eval`]: the serial protocol's host side ([`device_eval::Session`])
//!   and `normcore device-eval`;
//! - [`device_adapt`]: the adaptation commands' host side and `normcore
//!   device-adapt` (the device adapts, the host checks it bit for bit).
//!
//! Layering: core ← the trainer's library ← this crate ← the binaries
//! (`normcore`, xtask, tests).

use std::path::{Path, PathBuf};

pub mod boards;
pub mod build;
pub mod device_adapt;
pub mod device_eval;
pub mod infer_log;
pub mod qemu;

/// The repository root: the current directory if it holds `firmware/`
/// and `core/` (the tools run from it), else the one this crate was built
/// from.
pub fn root() -> PathBuf {
    let is_root = |d: &Path| d.join("firmware").is_dir() && d.join("core").is_dir();
    if let Ok(cwd) = std::env::current_dir() {
        if is_root(&cwd) {
            return cwd;
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from("."))
}

/// `1234567` as `1,234,567`: how the tools print counts and bytes.
pub fn thousands(n: u64) -> String {
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

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_groups_by_three() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1_234_567), "1,234,567");
    }
}
