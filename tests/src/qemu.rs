//! Building the firmware and running its binaries under QEMU, from host
//! tests.
//!
//! - [`build_firmware`] runs `cargo build --release` in `firmware/` once
//!   per test process (all binaries, into `firmware/target`), however many
//!   tests ask for it and from however many threads; first it generates
//!   the firmware's assets if there are none ([`crate::device::ensure_assets`]).
//! - [`run_qemu`] boots one ELF through `firmware/qemu-run` (so the script
//!   people use is the one tested) and returns its exit status and output.
//!   It never hangs: the script stops QEMU at the timeout, and a watchdog
//!   here kills the whole process group if even that fails.
//! - [`check_golden`] diffs output against `tests/golden/*.out`, or rewrites
//!   the file when `NORMCORE_BLESS=1`.
//!
//! When QEMU, the thumb target or `defmt-print` is missing, these return an
//! error that says `cargo xtask setup` installs them: a QEMU test then
//! fails, it does not skip.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Errors are messages for a test failure.
pub type Result<T> = std::result::Result<T, String>;

/// The target the firmware builds for (`firmware/.cargo/config.toml`).
pub const THUMB_TARGET: &str = "thumbv7em-none-eabihf";

/// What every "missing tool" error ends with.
const SETUP_HINT: &str = "run `cargo xtask setup` (as root) to install it";

/// The `--log-format` for decoded defmt output in tests: level and message,
/// no file/line locations (they change with every edit).
pub const LOG_FORMAT: &str = "{L} {s}";

/// The root of the workspace (the `tests` crate lives one level below).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `firmware/`, its own Cargo world.
pub fn firmware_dir() -> PathBuf {
    workspace_root().join("firmware")
}

/// Where the release ELFs land.
pub fn elf_dir() -> PathBuf {
    firmware_dir()
        .join("target")
        .join(THUMB_TARGET)
        .join("release")
}

/// `program args...` succeeds (the program exists and works).
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Check that QEMU, `defmt-print` and the thumb target's standard library
/// are installed; the error names what is missing and how to get it.
pub fn check_tools() -> Result<()> {
    let mut missing = Vec::new();
    if !runs("qemu-system-arm", &["--version"]) {
        missing.push("`qemu-system-arm` (Debian package qemu-system-arm)".to_owned());
    }
    if !runs("defmt-print", &["--version"]) {
        missing.push("`defmt-print` (cargo install defmt-print --locked)".to_owned());
    }
    if !runs("nm", &["--version"]) {
        missing.push("`nm` (Debian package binutils)".to_owned());
    }
    if !thumb_target_installed() {
        missing.push(format!(
            "the Rust target {THUMB_TARGET} (rustup target add {THUMB_TARGET})"
        ));
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the QEMU tests need {}; {SETUP_HINT}",
            missing.join(", ")
        ))
    }
}

/// The toolchain that builds the firmware has `core` for the thumb target.
fn thumb_target_installed() -> bool {
    // Ask from firmware/, so that its rust-toolchain.toml picks the rustc.
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", THUMB_TARGET])
        .current_dir(firmware_dir())
        .output();
    let Ok(out) = out else { return false };
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    out.status.success()
        && std::fs::read_dir(dir).is_ok_and(|mut entries| {
            entries
                .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        })
}

/// Build every firmware binary (`cargo build --release --bins` in
/// `firmware/`), once per process; then check that each of `bins` exists.
/// Returns the directory holding the ELFs.
pub fn build_firmware(bins: &[&str]) -> Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf>> = OnceLock::new();
    let dir = BUILT.get_or_init(build_once).clone()?;
    for bin in bins {
        if !dir.join(bin).is_file() {
            return Err(format!(
                "firmware binary `{bin}` not found in {} after the build",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

/// The ELF of one firmware binary, built if need be.
pub fn firmware_elf(bin: &str) -> Result<PathBuf> {
    Ok(build_firmware(&[bin])?.join(bin))
}

fn build_once() -> Result<PathBuf> {
    check_tools()?;
    // The firmware's build embeds the assets and fails without them.
    crate::device::ensure_assets()?;
    let fw = firmware_dir();
    let manifest = fw.join("Cargo.toml");
    let manifest = manifest.to_string_lossy();
    let mut cmd = normcore_trainer::device_eval::firmware_cargo(
        &fw,
        &["build", "--release", "--bins", "--manifest-path", &manifest],
    );
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run cargo to build the firmware: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the firmware failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(elf_dir())
}

/// Where UART0 goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Console {
    /// `-nographic`; stdout is the semihosting (defmt) stream, decoded by
    /// `defmt-print` with [`LOG_FORMAT`].
    Defmt,
    /// `-serial stdio`: UART0 reads these bytes from stdin and its output
    /// is stdout, byte-exact (semihosting output, if any, lands there too).
    Serial(Vec<u8>),
}

/// How to run a binary.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// QEMU is stopped after this long (rounded up to whole seconds).
    pub timeout: Duration,
    /// `-icount shift=6,align=off,sleep=off`: deterministic timing.
    pub icount: bool,
    /// Where UART0 goes.
    pub console: Console,
}

impl Default for RunOptions {
    /// 30 s, with `-icount`, defmt decoded.
    fn default() -> Self {
        RunOptions {
            timeout: Duration::from_secs(30),
            icount: true,
            console: Console::Defmt,
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// The runner's exit status (QEMU's: 0 for `exit(true)`, 1 for a failure).
    pub status: ExitStatus,
    /// The timeout struck (the runner exited 124, or the watchdog killed it).
    pub timed_out: bool,
    /// Decoded log lines ([`Console::Defmt`]) or raw UART bytes.
    pub stdout: Vec<u8>,
    /// QEMU's and the runner's diagnostics.
    pub stderr: String,
}

impl Output {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Everything, for an assertion message.
    pub fn describe(&self) -> String {
        format!(
            "status: {}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            if self.timed_out { " (timed out)" } else { "" },
            self.stdout_text(),
            self.stderr
        )
    }
}

/// Run `elf` under QEMU through `firmware/qemu-run`. Returns once QEMU has
/// exited or been stopped; never hangs.
pub fn run_qemu(elf: &Path, opts: &RunOptions) -> Result<Output> {
    check_tools()?;
    let secs = opts.timeout.as_secs() + u64::from(opts.timeout.subsec_nanos() > 0);
    let mut cmd = Command::new(firmware_dir().join("qemu-run"));
    cmd.arg(elf)
        .env("NORMCORE_QEMU_TIMEOUT", secs.max(1).to_string())
        .env("NORMCORE_ICOUNT", if opts.icount { "1" } else { "0" })
        .env("DEFMT_PRINT_FORMAT", LOG_FORMAT)
        .env_remove("NORMCORE_RAW")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Own process group: the watchdog can kill QEMU and defmt-print
        // along with the script.
        .process_group(0);
    let input = match &opts.console {
        Console::Defmt => {
            cmd.env_remove("NORMCORE_SERIAL");
            Vec::new()
        }
        Console::Serial(bytes) => {
            cmd.env("NORMCORE_SERIAL", "stdio");
            bytes.clone()
        }
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start firmware/qemu-run: {e}"))?;

    let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
    let writer = thread::spawn(move || {
        // QEMU may exit before reading everything: a broken pipe is fine.
        let _ = stdin.write_all(&input);
    });
    let stdout = reader(child.stdout.take().ok_or("no stdout pipe")?);
    let stderr = reader(child.stderr.take().ok_or("no stderr pipe")?);

    // The script's own timeout stops QEMU first (SIGTERM, SIGKILL 5 s
    // later); this deadline is the backstop.
    let deadline = Instant::now() + Duration::from_secs(secs + 15);
    let (status, killed) = wait_or_kill(&mut child, deadline)?;
    let _ = writer.join();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).into_owned();
    Ok(Output {
        timed_out: killed || status.code() == Some(124),
        status,
        stdout,
        stderr,
    })
}

fn reader(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Wait for `child`; past `deadline`, kill its process group.
fn wait_or_kill(child: &mut Child, deadline: Instant) -> Result<(ExitStatus, bool)> {
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok((status, false));
        }
        if Instant::now() >= deadline {
            // The group id is the child's pid (process_group(0)).
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let status = child.wait().map_err(|e| e.to_string())?;
            return Ok((status, true));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Mask the values of measurement fields (`ticks=123` → `ticks=*`): under
/// `-icount` they repeat run to run, but they change with the compiler and
/// the code, which the golden files should not pin.
pub fn mask_measurements(text: &str, keys: &[&str]) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let masked: Vec<String> = line
            .split(' ')
            .map(|word| match word.split_once('=') {
                Some((key, value))
                    if keys.contains(&key)
                        && !value.is_empty()
                        && value.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    format!("{key}=*")
                }
                _ => word.to_owned(),
            })
            .collect();
        let _ = writeln!(out, "{}", masked.join(" "));
    }
    out
}

/// Compare `actual` with `tests/golden/<name>`; with `NORMCORE_BLESS=1`,
/// write it there instead. The error shows a line diff.
pub fn check_golden(name: &str, actual: &str) -> Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("golden")
        .join(name);
    if std::env::var_os("NORMCORE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "{}: {e} (NORMCORE_BLESS=1 cargo test -p normcore-tests writes it)",
            path.display()
        )
    })?;
    if expected == actual {
        return Ok(());
    }
    Err(format!(
        "output differs from {} (- expected, + actual; \
         NORMCORE_BLESS=1 accepts the new output):\n{}",
        path.display(),
        line_diff(&expected, actual)
    ))
}

/// A minimal line diff (longest common subsequence), enough for log files.
fn line_diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // lcs[i][j]: LCS length of a[i..] and b[j..].
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            let _ = writeln!(out, "  {}", a[i]);
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            let _ = writeln!(out, "- {}", a[i]);
            i += 1;
        } else {
            let _ = writeln!(out, "+ {}", b[j]);
            j += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_only_listed_numeric_fields() {
        let text = "INFO  cost: ticks=17 hz=25000000 mode=fast\nINFO  x ticks=abc\n";
        assert_eq!(
            mask_measurements(text, &["ticks", "mode"]),
            "INFO  cost: ticks=* hz=25000000 mode=fast\nINFO  x ticks=abc\n"
        );
    }

    #[test]
    fn diff_marks_changed_lines() {
        let d = line_diff("a\nb\nc\n", "a\nx\nc\n");
        assert_eq!(d, "  a\n- b\n+ x\n  c\n");
    }
}
