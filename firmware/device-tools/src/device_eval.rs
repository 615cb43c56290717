//! `normcore device-eval`: a test set streamed through the firmware's
//! `serve` binary running in QEMU, every answer compared with core's engine
//! on the host.
//!
//! The firmware (`serve`, `normcore_firmware::programs::serve` on the
//! `mps2-an386` board) embeds the model file(s) of the assets directory and answers requests over UART0; QEMU connects that
//! UART to its standard input and output (`-serial stdio`). The protocol is
//! specified in `docs/SERIAL.md`; [`Session`] is its host side, [`run`]
//! the command:
//!
//! 1. build `serve` (`cargo build --release --bin serve` in `firmware/`)
//!    unless `--elf` names an ELF;
//! 2. start it in QEMU and ask `INFO`: the device's model CRCs must be
//!    those of the model files loaded here (`firmware/assets/`), and its
//!    input size the data set's;
//! 3. for each selected test sample, run the host engine ([`Device`], the
//!    same `Model::parse` and `Engine` the firmware runs) and the device
//!    (int8: the input quantized with the model header's parameters by
//!    [`input_levels`], as the assets are; f32: the values as stored), and
//!    compare: the same predicted class always, int8 logits bit for bit, f32
//!    logits within 1e-5 (relative above 1);
//! 4. print accuracy (device and host) and agreement; fail on any mismatch.
//!
//! Every read has a deadline (`--timeout`), and a firmware that dies (a
//! panic, a fault, QEMU refusing the ELF) is reported with QEMU's status and
//! messages: nothing here can hang.

use crate::boards::{self, Board};
use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::{Args, ValueEnum};
use normcore::engine::f32_parity;
use normcore::model::{file_crc, Kind};
use normcore_trainer::assets;
use normcore_trainer::cli::DataArgs;
use normcore_trainer::data::Dataset;
use normcore_trainer::export::device::{input_levels, Device, Logits, ModelBytes};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// The protocol's one definition (framing, codes, `INFO`'s layout), shared
// with the firmware's `serve`.
use normcore::serial::{frame_crc, HEADER, REQUEST_MAGIC, RESPONSE_MAGIC, TRAILER};
pub use normcore::serial::{Command, Info, Status};

/// One request frame: magic, command, sequence number, length, payload,
/// CRC-32 of everything after the magic (docs/SERIAL.md).
pub fn encode_request(command: u8, seq: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let mut frame = Vec::with_capacity(HEADER + payload.len() + TRAILER);
    frame.push(REQUEST_MAGIC);
    frame.extend_from_slice(&[command, seq]);
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(payload);
    frame.extend_from_slice(&frame_crc(command, seq, payload).to_le_bytes());
    frame
}

/// A response frame, CRC checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: Status,
    /// The sequence number it answers.
    pub seq: u8,
    /// The payload (empty unless the status is `Ok`).
    pub payload: Vec<u8>,
}

/// Read one response frame from `next` (a byte source that fails on
/// timeout or end of stream).
pub fn decode_response(mut next: impl FnMut() -> Result<u8>) -> Result<Response> {
    let magic = next()?;
    ensure!(
        magic == RESPONSE_MAGIC,
        "byte {magic:#04x} where a response frame starts (expected {RESPONSE_MAGIC:#04x}; \
         a failing firmware's log output?)"
    );
    let mut body = Vec::with_capacity(HEADER + 8);
    for _ in 1..HEADER {
        body.push(next()?);
    }
    let len = usize::from(u16::from_le_bytes([body[2], body[3]]));
    for _ in 0..len {
        body.push(next()?);
    }
    let mut sent = [0u8; 4];
    for b in &mut sent {
        *b = next()?;
    }
    let (sent, computed) = (
        u32::from_le_bytes(sent),
        frame_crc(body[0], body[1], &body[HEADER - 1..]),
    );
    ensure!(
        sent == computed,
        "response CRC mismatch (frame says {sent:#010x}, bytes give {computed:#010x})"
    );
    let status = Status::from_byte(body[0])
        .with_context(|| format!("unknown status code {:#04x} in a response", body[0]))?;
    Ok(Response {
        status,
        seq: body[1],
        payload: body.split_off(HEADER - 1),
    })
}

/// The device's logits for one sample.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceLogits {
    /// int8 levels.
    I8(Vec<i8>),
    /// f32 values.
    F32(Vec<f32>),
}

/// The device's answer to one inference request.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The predicted class.
    pub class: usize,
    /// The logits.
    pub logits: DeviceLogits,
}

impl Prediction {
    /// Parse an `INFER_*` payload of a model of `kind` with `classes` classes.
    pub fn parse(kind: Kind, classes: usize, p: &[u8]) -> Result<Prediction> {
        let width = match kind {
            Kind::Int8 => 1,
            Kind::F32 => 4,
        };
        ensure!(
            p.len() == 2 + width * classes,
            "inference payload of {} bytes, expected {} ({classes} classes)",
            p.len(),
            2 + width * classes
        );
        let class = usize::from(u16::from_le_bytes([p[0], p[1]]));
        let logits = match kind {
            Kind::Int8 => DeviceLogits::I8(p[2..].iter().map(|&b| b as i8).collect()),
            Kind::F32 => DeviceLogits::F32(
                p[2..]
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
        };
        Ok(Prediction { class, logits })
    }
}

/// `SHUTDOWN`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Responses the device sent, this one included.
    pub answered: u32,
    /// Of them, errors.
    pub errors: u32,
}

/// How to read `qemu-system-arm`'s absence.
const QEMU_HINT: &str = "install QEMU: `cargo xtask setup`, or `apt-get install qemu-system-arm` \
                         on Debian";

/// The `serve` firmware running in QEMU, UART0 on QEMU's stdin/stdout.
/// Dropping it stops QEMU.
#[derive(Debug)]
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Receiver<Vec<u8>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// Bytes received and not yet consumed.
    pending: VecDeque<u8>,
    /// The last request's sequence number.
    seq: u8,
    /// Deadline for each response.
    pub timeout: Duration,
    /// Classes, once `INFO` told them.
    classes: Option<usize>,
    /// The firmware, for decoding its log.
    elf: PathBuf,
}

impl Session {
    /// Start `elf`, a `serve` firmware of `board`, in QEMU through
    /// `firmware/qemu-run` (`-serial stdio`, semihosting on, no `-icount`:
    /// the firmware's timeouts are in virtual time). Each response must
    /// arrive within `timeout`.
    pub fn start(board: &Board, elf: &Path, timeout: Duration) -> Result<Session> {
        ensure!(
            elf.is_file(),
            "firmware ELF {} not found (build it: `cargo xtask device-eval`, or `cargo build \
             --release --bin serve` in firmware/boards/{})",
            elf.display(),
            board.name
        );
        crate::qemu::check_tools(board).map_err(|e| anyhow!("{e}"))?;
        let machine = crate::qemu::machine_args(board).map_err(|e| anyhow!("{e}"))?;
        let mut child = std::process::Command::new(crate::root().join("firmware/qemu-run"))
            .args(machine)
            .arg(elf)
            // The session's own deadlines stop it; the script's is a backstop.
            .env("NORMCORE_QEMU_TIMEOUT", "86400")
            .env("NORMCORE_SERIAL", "stdio")
            .env("NORMCORE_ICOUNT", "0")
            .env_remove("NORMCORE_RAW")
            // Its own process group, so that QEMU goes when it goes.
            .process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    anyhow!("firmware/qemu-run not found: {QEMU_HINT}")
                } else {
                    anyhow!("cannot start firmware/qemu-run: {e}")
                }
            })?;
        let stdin = child.stdin.take();
        let mut out = child.stdout.take().context("no stdout pipe")?;
        let mut err = child.stderr.take().context("no stderr pipe")?;
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match out.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut text = Vec::new();
            let _ = err.read_to_end(&mut text);
            text
        });
        Ok(Session {
            child,
            stdin,
            stdout: rx,
            stderr: Some(stderr),
            pending: VecDeque::new(),
            seq: 0,
            timeout,
            classes: None,
            elf: elf.to_path_buf(),
        })
    }

    /// Send raw bytes to UART0 (a request frame, or anything else).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("QEMU's stdin is closed")?;
        if let Err(e) = stdin.write_all(bytes).and_then(|()| stdin.flush()) {
            return Err(self.failure(&format!("cannot write to the firmware: {e}")));
        }
        Ok(())
    }

    /// The next byte from UART0, waiting until `deadline`.
    fn next_byte(&mut self, deadline: Instant) -> Result<u8> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Ok(b);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(chunk) => self.pending.extend(chunk),
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "no response from the firmware within {:.1} s (QEMU is still running; \
                         it is stopped now)",
                        self.timeout.as_secs_f64()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => bail!("the firmware's output ended"),
            }
        }
    }

    /// Read one response frame (deadline: [`timeout`](Self::timeout) from now).
    pub fn read_response(&mut self) -> Result<Response> {
        let deadline = Instant::now() + self.timeout;
        let mut error = None;
        let response = decode_response(|| match self.next_byte(deadline) {
            Ok(b) => Ok(b),
            Err(e) => {
                let msg = format!("{e:#}");
                error = Some(msg.clone());
                Err(anyhow!(msg))
            }
        });
        match response {
            Ok(r) => Ok(r),
            Err(e) => Err(self.failure(&error.unwrap_or_else(|| format!("{e:#}")))),
        }
    }

    /// Send a request and read its response, which must echo the sequence
    /// number. Any status is returned (see [`ok`](Self::ok)).
    pub fn request(&mut self, command: u8, payload: &[u8]) -> Result<Response> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        self.send_raw(&encode_request(command, seq, payload))?;
        let r = self.read_response()?;
        ensure!(
            r.seq == seq,
            "response to request {} arrived for request {seq} (out of step)",
            r.seq
        );
        Ok(r)
    }

    /// As [`request`](Self::request), which must succeed: its payload.
    pub fn ok(&mut self, command: u8, payload: &[u8]) -> Result<Vec<u8>> {
        let r = self.request(command, payload)?;
        ensure!(
            r.status == Status::Ok,
            "the firmware answered {:?} to command {command:#04x}",
            r.status
        );
        Ok(r.payload)
    }

    /// `INFO`.
    pub fn info(&mut self) -> Result<Info> {
        let payload = self.ok(Command::Info as u8, &[])?;
        let info = Info::decode(&payload)
            .with_context(|| format!("INFO payload of {} bytes", payload.len()))?;
        ensure!(
            info.version == normcore::serial::VERSION,
            "the firmware speaks protocol version {}, this host {}: rebuild one of them",
            info.version,
            normcore::serial::VERSION
        );
        self.classes = Some(usize::from(info.classes));
        Ok(info)
    }

    fn classes(&mut self) -> Result<usize> {
        match self.classes {
            Some(c) => Ok(c),
            None => Ok(usize::from(self.info()?.classes)),
        }
    }

    /// Run the int8 model on input `levels`.
    pub fn infer_i8(&mut self, levels: &[i8]) -> Result<Prediction> {
        let classes = self.classes()?;
        let payload: Vec<u8> = levels.iter().map(|&q| q as u8).collect();
        Prediction::parse(
            Kind::Int8,
            classes,
            &self.ok(Command::InferI8 as u8, &payload)?,
        )
    }

    /// Run the f32 model on `values`.
    pub fn infer_f32(&mut self, values: &[f32]) -> Result<Prediction> {
        let classes = self.classes()?;
        let payload: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        Prediction::parse(
            Kind::F32,
            classes,
            &self.ok(Command::InferF32 as u8, &payload)?,
        )
    }

    /// `SHUTDOWN`, then wait for QEMU to exit; it must exit with success.
    pub fn shutdown(mut self) -> Result<Served> {
        let p = self.ok(Command::Shutdown as u8, &[])?;
        ensure!(p.len() == 8, "SHUTDOWN payload of {} bytes", p.len());
        let served = Served {
            answered: u32::from_le_bytes([p[0], p[1], p[2], p[3]]),
            errors: u32::from_le_bytes([p[4], p[5], p[6], p[7]]),
        };
        self.stdin = None;
        match self.wait_exit(Duration::from_secs(5)) {
            Some(status) if status.success() => Ok(served),
            Some(status) => Err(self.failure(&format!("QEMU exited with {status} after SHUTDOWN"))),
            None => Err(self.failure("QEMU did not exit within 5 s of SHUTDOWN")),
        }
    }

    /// QEMU's exit status if it exits within `wait`.
    fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => return None,
            }
        }
    }

    /// An error saying what went wrong, with QEMU's fate and messages: it
    /// waits a moment for QEMU to exit, stops it if it does not, and adds
    /// its exit status, its stderr and whatever UART bytes were left unread.
    fn failure(&mut self, what: &str) -> anyhow::Error {
        let exited = self.wait_exit(Duration::from_millis(500));
        if exited.is_none() {
            crate::qemu::kill_group(&mut self.child);
            let _ = self.child.wait();
        }
        while let Ok(chunk) = self.stdout.recv_timeout(Duration::from_millis(100)) {
            self.pending.extend(chunk);
        }
        let stderr = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .unwrap_or_default();
        let mut msg = match exited {
            Some(status) => format!("{what}: the firmware died (QEMU exited with {status})"),
            None => what.to_owned(),
        };
        if !stderr.is_empty() {
            msg.push_str(&format!("; QEMU said: {stderr}"));
        }
        if !self.pending.is_empty() {
            let bytes: Vec<u8> = self.pending.drain(..).collect();
            match decode_defmt(&self.elf, &bytes) {
                Some(log) => msg.push_str(&format!("; the firmware's log:\n{log}")),
                None => {
                    let shown: Vec<String> =
                        bytes.iter().take(64).map(|b| format!("{b:02x}")).collect();
                    msg.push_str(&format!(
                        "; {} unread bytes from UART0 and semihosting: {}{} (`firmware/qemu-run \
                         ELF` decodes a defmt log)",
                        bytes.len(),
                        shown.join(" "),
                        if bytes.len() > 64 { " ..." } else { "" }
                    ));
                }
            }
        }
        anyhow!(msg)
    }
}

/// `bytes` decoded as `elf`'s defmt log by `defmt-print`, if it is
/// installed and makes something of them (best effort, 5 s at most).
fn decode_defmt(elf: &Path, bytes: &[u8]) -> Option<String> {
    let mut child = std::process::Command::new("defmt-print")
        .args(["--log-format", "{L} {s}", "-e"])
        .arg(elf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let _ = stdin.write_all(bytes);
    drop(stdin);
    let mut stdout = child.stdout.take()?;
    let reader = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while matches!(child.try_wait(), Ok(None)) {
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = child.wait();
    let text = String::from_utf8_lossy(&reader.join().ok()?)
        .trim()
        .to_owned();
    (!text.is_empty()).then_some(text)
}

impl Drop for Session {
    fn drop(&mut self) {
        // The whole group: QEMU runs under the script's `timeout` (which
        // exits only once QEMU has).
        if matches!(self.child.try_wait(), Ok(None)) {
            crate::qemu::kill_group(&mut self.child);
        }
        let _ = self.child.wait();
    }
}

/// Which embedded model(s) to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModelChoice {
    /// Each model the firmware embeds, int8 first.
    Embedded,
    /// The int8 model (`model-int8.ncm`).
    Int8,
    /// The f32 model (`model-f32.ncm`).
    F32,
    /// Both, int8 first.
    Both,
}

impl ModelChoice {
    /// The model kinds, in order, of those `has` says are embedded.
    pub fn kinds(self, has: impl Fn(Kind) -> bool) -> Vec<Kind> {
        match self {
            ModelChoice::Embedded => [Kind::Int8, Kind::F32]
                .into_iter()
                .filter(|&k| has(k))
                .collect(),
            ModelChoice::Int8 => vec![Kind::Int8],
            ModelChoice::F32 => vec![Kind::F32],
            ModelChoice::Both => vec![Kind::Int8, Kind::F32],
        }
    }
}

/// `normcore device-eval`.
#[derive(Args, Debug)]
pub struct DeviceEvalArgs {
    /// The embedded model(s) to run: each one embedded, int8, f32, or both.
    #[arg(long, value_enum, default_value = "embedded")]
    pub kind: ModelChoice,
    /// Test samples to stream, evenly spaced over the test set: a number or
    /// `all`. QEMU's UART moves about 16 KB/s: some 250 int8 or 75 f32
    /// samples per second for the 8x8 digits, 24 or 6 for MNIST.
    #[arg(long, default_value = "all", value_parser = assets::parse_samples)]
    pub samples: usize,
    #[command(flatten)]
    pub data: DataArgs,
    /// The QEMU board to run `serve` on (see `cargo xtask boards`).
    #[arg(long, default_value = "mps2-an386")]
    pub board: String,
    /// The `serve` ELF. Default: build it for the board with the assets
    /// (`cargo build --release --bin serve` in firmware/boards/BOARD).
    #[arg(long)]
    pub elf: Option<PathBuf>,
    /// Seconds to wait for each response before giving up.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// The assets directory holding the model files the firmware embeds
    /// (default: $NORMCORE_ASSETS, else firmware/assets).
    #[arg(long)]
    pub assets: Option<PathBuf>,
}

/// One model's comparison over the streamed samples.
#[derive(Debug, Clone, PartialEq)]
pub struct KindReport {
    /// Which model.
    pub kind: Kind,
    /// Samples streamed.
    pub samples: usize,
    /// Device predictions equal to the label.
    pub device_correct: usize,
    /// Host engine predictions equal to the label.
    pub host_correct: usize,
    /// Device class equal to the host engine's.
    pub same_class: usize,
    /// Device logits bit-identical to the host engine's.
    pub identical: usize,
    /// Device logits within the parity tolerance (`normcore::engine::f32_parity`; int8: identical).
    pub within_tolerance: usize,
    /// Largest absolute logit difference (f32; 0 for int8).
    pub max_abs_diff: f32,
    /// The first disagreement, described.
    pub first_mismatch: Option<String>,
    /// Wall-clock seconds of the device part (send, run, answer).
    pub seconds: f64,
}

impl KindReport {
    /// The device agreed with the host engine on every sample: same class,
    /// and int8 logits identical, f32 within tolerance.
    pub fn agrees(&self) -> bool {
        self.same_class == self.samples && self.within_tolerance == self.samples
    }
}

/// Whether device `d` and host `h` logits are bit-identical, and within
/// tolerance, and their largest absolute difference.
fn compare(d: &DeviceLogits, h: &Logits) -> (bool, bool, f32) {
    match (d, h) {
        (DeviceLogits::I8(d), Logits::I8 { values, .. }) => {
            let same = d == values;
            (same, same, 0.0)
        }
        (DeviceLogits::F32(d), Logits::F32(h)) if d.len() == h.len() => {
            let identical = d.iter().zip(h).all(|(a, b)| a.to_bits() == b.to_bits());
            let within = d.iter().zip(h).all(|(&a, &b)| f32_parity(a, b));
            let diff = d
                .iter()
                .zip(h)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            (identical, within, diff)
        }
        _ => (false, false, f32::INFINITY),
    }
}

/// Stream the samples `indices` of `test` through the device's model of
/// `kind` (whose file is `model_bytes`, the one the firmware embeds) and
/// compare each answer with the host engine's.
pub fn evaluate(
    session: &mut Session,
    kind: Kind,
    model_bytes: &[u8],
    test: &Dataset,
    indices: &[usize],
) -> Result<KindReport> {
    let buf = ModelBytes::new(model_bytes);
    let model = buf.parse()?;
    ensure!(
        model.kind() == kind,
        "the model file is not a {kind:?} model"
    );
    let mut host = Device::new(&model);
    let mut r = KindReport {
        kind,
        samples: 0,
        device_correct: 0,
        host_correct: 0,
        same_class: 0,
        identical: 0,
        within_tolerance: 0,
        max_abs_diff: 0.0,
        first_mismatch: None,
        seconds: 0.0,
    };
    let mut device_time = Duration::ZERO;
    for &i in indices {
        let sample = test.sample(i);
        let label = usize::from(test.label(i));
        let (expected, answer) = match kind {
            Kind::Int8 => {
                let levels = input_levels(&model, sample);
                let expected = host.run_levels(&levels)?;
                let started = Instant::now();
                let answer = session.infer_i8(&levels);
                device_time += started.elapsed();
                (expected, answer)
            }
            Kind::F32 => {
                let expected = host.run(sample)?;
                let started = Instant::now();
                let answer = session.infer_f32(sample);
                device_time += started.elapsed();
                (expected, answer)
            }
        };
        let answer = answer.with_context(|| format!("{kind:?} model, test sample {i}"))?;
        let host_class = expected.argmax();
        let (identical, within, diff) = compare(&answer.logits, &expected);
        r.samples += 1;
        r.device_correct += usize::from(answer.class == label);
        r.host_correct += usize::from(host_class == label);
        r.same_class += usize::from(answer.class == host_class);
        r.identical += usize::from(identical);
        r.within_tolerance += usize::from(within);
        r.max_abs_diff = r.max_abs_diff.max(diff);
        if (answer.class != host_class || !within) && r.first_mismatch.is_none() {
            r.first_mismatch = Some(format!(
                "test sample {i}: device class {} logits {:?}, host engine class {host_class} \
                 logits {:?}",
                answer.class, answer.logits, expected
            ));
        }
    }
    r.seconds = device_time.as_secs_f64();
    Ok(r)
}

/// Build `serve` for `board` (release) with the assets in `assets_dir`
/// and return its ELF.
pub fn build_serve(board: &Board, assets_dir: &Path) -> Result<PathBuf> {
    eprintln!(
        "device-eval: building serve for {} (firmware/boards/{})",
        board.name, board.name
    );
    let dir = crate::build::build(
        board,
        &crate::build::Build {
            bins: &["serve"],
            assets: Some(assets_dir),
            quiet: true,
            ..Default::default()
        },
    )?;
    Ok(dir.join("serve"))
}

/// Run `normcore device-eval` (module documentation).
pub fn run(a: DeviceEvalArgs) -> Result<()> {
    ensure!(
        a.timeout.is_finite() && a.timeout > 0.0,
        "--timeout must be a positive number of seconds"
    );
    let root = crate::root();
    let board = boards::board(&a.board)?;
    let assets_dir = a
        .assets
        .clone()
        .unwrap_or_else(|| assets::default_dir(&root));
    let (model_f32, model_int8, _) = assets::load(&assets_dir)
        .with_context(|| format!("the firmware's model files in {}", assets_dir.display()))?;
    let data = a.data.load()?;
    let test = &data.test;
    let elf = match &a.elf {
        Some(p) => p.clone(),
        None => build_serve(board, &assets_dir)?,
    };

    let mut session = Session::start(board, &elf, Duration::from_secs_f64(a.timeout))?;
    let info = session.info().context("asking the firmware for INFO")?;
    let crc = |m: &Option<Vec<u8>>| m.as_deref().map_or(0, file_crc);
    ensure!(
        (info.f32_model_crc, info.int8_model_crc) == (crc(&model_f32), crc(&model_int8))
            && (info.has_f32, info.has_int8) == (model_f32.is_some(), model_int8.is_some()),
        "{} embeds other models than {} (device CRCs {:#010x}/{:#010x}, files {:#010x}/{:#010x}; \
         0 = none): rebuild it, or pass --assets",
        elf.display(),
        assets_dir.display(),
        info.f32_model_crc,
        info.int8_model_crc,
        crc(&model_f32),
        crc(&model_int8)
    );
    ensure!(
        usize::from(info.features) == test.sample_len(),
        "the firmware's models take {} input values, the `{}` test set has {} per sample: \
         generate assets for it (e.g. `cargo xtask assets --data mnist --preset paper-mlp`)",
        info.features,
        a.data.data,
        test.sample_len()
    );
    let kinds = a.kind.kinds(|k| info.has(k));
    for &k in &kinds {
        ensure!(
            info.has(k),
            "the firmware embeds no {k:?} model (`--kind embedded` runs what it has)"
        );
    }
    let indices = assets::pick(test.len(), a.samples);
    println!(
        "device-eval: {} in QEMU {} ({}), the console UART on -serial stdio; models {} \
         (f32 crc {:#010x}, int8 crc {:#010x}; 0 = none); {} of {} samples of the `{}` test set",
        elf.display(),
        board.name,
        board.core,
        assets_dir.display(),
        info.f32_model_crc,
        info.int8_model_crc,
        crate::thousands(indices.len() as u64),
        crate::thousands(test.len() as u64),
        a.data.data
    );
    println!();
    println!(
        "| model | samples | device accuracy | host engine accuracy | same prediction | identical logits | max abs diff | device s |"
    );
    println!(
        "|-------|---------|-----------------|----------------------|-----------------|------------------|--------------|----------|"
    );
    let mut all_agree = true;
    let mut mismatches = Vec::new();
    for kind in kinds {
        let bytes = match kind {
            Kind::Int8 => &model_int8,
            Kind::F32 => &model_f32,
        };
        let bytes = bytes.as_deref().context("no such model file")?;
        let r = evaluate(&mut session, kind, bytes, test, &indices)?;
        let pct = |c: usize| format!("{:.2}%", 100.0 * c as f64 / r.samples.max(1) as f64);
        let name = match kind {
            Kind::Int8 => "int8",
            Kind::F32 => "f32",
        };
        println!(
            "| {name:<5} | {:>7} | {:>15} | {:>20} | {:>15} | {:>16} | {:>12} | {:>8.1} |",
            crate::thousands(r.samples as u64),
            pct(r.device_correct),
            pct(r.host_correct),
            format!("{}/{}", r.same_class, r.samples),
            format!("{}/{}", r.identical, r.samples),
            if r.max_abs_diff == 0.0 {
                "0".to_owned()
            } else {
                format!("{:.2e}", r.max_abs_diff)
            },
            r.seconds
        );
        all_agree &= r.agrees();
        if let Some(m) = r.first_mismatch {
            mismatches.push(format!("{name}: {m}"));
        }
    }
    let served = session.shutdown()?;
    println!();
    println!(
        "the firmware answered {} requests ({} errors) and exited with success; \
         device = host engine: {}",
        served.answered,
        served.errors,
        if all_agree { "yes" } else { "NO" }
    );
    if !all_agree {
        bail!(
            "the device disagrees with the host engine:\n{}",
            mismatches.join("\n")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(bytes: &[u8]) -> impl FnMut() -> Result<u8> + '_ {
        let mut it = bytes.iter();
        move || it.next().copied().context("end of stream")
    }

    /// A response frame as the firmware builds it.
    fn response(status: u8, seq: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = encode_request(status, seq, payload);
        f[0] = RESPONSE_MAGIC;
        f
    }

    #[test]
    fn request_frames_follow_the_spec() {
        let f = encode_request(Command::Info as u8, 7, &[]);
        assert_eq!(&f[..5], &[0xA5, 0x01, 0x07, 0x00, 0x00]);
        assert_eq!(
            &f[5..],
            &normcore::model::crc32(&[0x01, 0x07, 0x00, 0x00]).to_le_bytes()
        );
        let f = encode_request(Command::InferI8 as u8, 1, &[1, 2, 3]);
        assert_eq!(f.len(), 5 + 3 + 4);
        assert_eq!(&f[3..5], &[3, 0]);
    }

    #[test]
    fn responses_decode_and_damage_is_caught() {
        let f = response(0x00, 9, &[5, 0, 0xFF, 0x01]);
        let r = decode_response(from(&f)).unwrap();
        assert_eq!(
            (r.status, r.seq, r.payload.clone()),
            (Status::Ok, 9, vec![5, 0, 0xFF, 1])
        );
        let p = Prediction::parse(Kind::Int8, 2, &r.payload).unwrap();
        assert_eq!(p.class, 5);
        assert_eq!(p.logits, DeviceLogits::I8(vec![-1, 1]));

        let mut bad = f.clone();
        bad[6] ^= 0x10;
        let e = decode_response(from(&bad)).unwrap_err();
        assert!(format!("{e:#}").contains("CRC"), "{e:#}");
        let e = decode_response(from(&f[..f.len() - 1])).unwrap_err();
        assert!(format!("{e:#}").contains("end of stream"), "{e:#}");
        let e = decode_response(from(b"\x00junk")).unwrap_err();
        assert!(format!("{e:#}").contains("0x00"), "{e:#}");

        let r = decode_response(from(&response(0x02, 3, &[]))).unwrap();
        assert_eq!((r.status, r.seq), (Status::BadCrc, 3));
        let e = decode_response(from(&response(0x42, 3, &[]))).unwrap_err();
        assert!(format!("{e:#}").contains("unknown status"), "{e:#}");
    }

    #[test]
    fn f32_predictions_parse() {
        let mut q = vec![1, 0];
        q.extend_from_slice(&1.5f32.to_le_bytes());
        q.extend_from_slice(&(-2.0f32).to_le_bytes());
        let pred = Prediction::parse(Kind::F32, 2, &q).unwrap();
        assert_eq!(pred.class, 1);
        assert_eq!(pred.logits, DeviceLogits::F32(vec![1.5, -2.0]));
        assert!(Prediction::parse(Kind::F32, 3, &q).is_err());
    }

    #[test]
    fn comparison_is_exact_for_int8_and_tolerant_for_f32() {
        let host = Logits::I8 {
            values: vec![1, -2],
            scale: 0.5,
            zero_point: 0,
        };
        assert_eq!(
            compare(&DeviceLogits::I8(vec![1, -2]), &host),
            (true, true, 0.0)
        );
        assert!(!compare(&DeviceLogits::I8(vec![1, -1]), &host).1);
        let host = Logits::F32(vec![1000.0, 0.5]);
        let (identical, within, diff) = compare(&DeviceLogits::F32(vec![1000.001, 0.5]), &host);
        assert!(!identical && within && diff > 0.0);
        assert!(!compare(&DeviceLogits::F32(vec![1000.1, 0.5]), &host).1);
        assert!(!compare(&DeviceLogits::F32(vec![1.0]), &host).1);
    }

    #[test]
    fn missing_elf_is_a_clear_error() {
        let board = boards::default_board();
        let e = Session::start(
            board,
            Path::new("/nonexistent/serve"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("not found"), "{e:#}");
    }
}
