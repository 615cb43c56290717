//! Running firmware under QEMU from the host: the one runner of xtask, the
//! tests and the device tools.
//!
//! - [`build_firmware`] builds a board's binaries (release) once per
//!   process and board, however many callers ask and from however many
//!   threads; first it generates the default assets if there are none
//!   ([`crate::infer_log::ensure_assets`]).
//! - [`run_qemu`] boots one ELF of a board through `firmware/qemu-run` (so
//!   the script people use is the one run) and returns its exit status and
//!   output. It never hangs: the script stops QEMU at the timeout, and a
//!   watchdog here kills the whole process group if even that fails.
//!
//! When QEMU, a thumb target or `defmt-print` is missing, these return an
//! error that says `cargo xtask setup` installs them: a QEMU test then
//! fails, it does not skip.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// Errors are messages for a test failure.
pub type Result<T> = std::result::Result<T, String>;

use crate::boards::Board;

/// What every "missing tool" error ends with.
const SETUP_HINT: &str = "run `cargo xtask setup` (as root) to install it";

/// The `--log-format` for decoded defmt output in tests: level and message,
/// no file/line locations (they change with every edit).
pub const LOG_FORMAT: &str = "{L} {s}";

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

/// Check that QEMU, `defmt-print` and `board`'s thumb target's standard
/// library are installed; the error names what is missing and how to get
/// it.
pub fn check_tools(board: &Board) -> Result<()> {
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
    if !thumb_target_installed(board) {
        missing.push(format!(
            "the Rust target {t} (rustup target add {t})",
            t = board.target
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

/// The toolchain that builds the firmware has `core` for the board's
/// target.
fn thumb_target_installed(board: &Board) -> bool {
    // Ask from the board's directory, so that rust-toolchain.toml picks
    // the rustc.
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", board.target])
        .current_dir(board.dir())
        .output();
    let Ok(out) = out else { return false };
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    out.status.success()
        && std::fs::read_dir(dir).is_ok_and(|mut entries| {
            entries
                .any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        })
}

/// Build every binary of `board` (release, default assets), once per
/// process and board; then check that each of `bins` exists. Returns the
/// directory holding the ELFs.
pub fn build_firmware(board: &'static Board, bins: &[&str]) -> Result<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<&'static str, Result<PathBuf>>>> = OnceLock::new();
    let built = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    // One build at a time: two boards building at once would only compete
    // for the same cores.
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let dir = built
        .entry(board.name)
        .or_insert_with(|| build_once(board))
        .clone()?;
    for bin in bins {
        if !dir.join(bin).is_file() {
            return Err(format!(
                "firmware binary `{bin}` of {} not found in {} after the build",
                board.name,
                dir.display()
            ));
        }
    }
    Ok(dir)
}

/// The ELF of one of `board`'s binaries, built if need be.
pub fn firmware_elf(board: &'static Board, bin: &str) -> Result<PathBuf> {
    Ok(build_firmware(board, &[bin])?.join(bin))
}

fn build_once(board: &Board) -> Result<PathBuf> {
    check_tools(board)?;
    // The firmware's build embeds the assets and fails without them.
    crate::infer_log::ensure_assets()?;
    crate::build::build(
        board,
        &crate::build::Build {
            quiet: true,
            ..Default::default()
        },
    )
    .map_err(|e| format!("{e:#}"))
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

/// The `qemu-run` arguments that select `board`'s machine and CPU.
pub fn machine_args(board: &Board) -> Result<Vec<&'static str>> {
    let q = board
        .qemu
        .ok_or_else(|| format!("{} is real hardware: QEMU cannot run it", board.name))?;
    let mut args = vec!["--machine", q.machine];
    if let Some(cpu) = q.cpu {
        args.extend(["--cpu", cpu]);
    }
    Ok(args)
}

/// Run `elf`, a firmware of `board`, under QEMU through
/// `firmware/qemu-run`. Returns once QEMU has exited or been stopped;
/// never hangs.
pub fn run_qemu(board: &Board, elf: &Path, opts: &RunOptions) -> Result<Output> {
    check_tools(board)?;
    let secs = opts.timeout.as_secs() + u64::from(opts.timeout.subsec_nanos() > 0);
    let mut cmd = Command::new(crate::root().join("firmware").join("qemu-run"));
    cmd.args(machine_args(board)?)
        .arg(elf)
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
            kill_group(child);
            let status = child.wait().map_err(|e| e.to_string())?;
            return Ok((status, true));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Kill `child`, started as the leader of its own process group
/// (`process_group(0)`), and everything in that group: `qemu-run` runs QEMU
/// under `timeout`, and killing the script alone would leave QEMU running
/// with the pipes open.
pub(crate) fn kill_group(child: &mut Child) {
    // The group id is the child's pid.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
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
}
