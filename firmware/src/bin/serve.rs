//! Inference as a service over UART0: reads requests (input samples),
//! runs the embedded int8 or f32 model on them and writes back the
//! predicted class and the logits. The binary protocol (framing, commands,
//! status codes, recovery) is specified in `docs/SERIAL.md`; its host side
//! is `normcore device-eval` (`host-trainer/src/device_eval.rs`).
//!
//! In short: a request is `0xA5, command, seq, len (u16), payload, CRC-32`;
//! the response `0x5A, status, seq, len, payload, CRC-32`. Commands: `INFO`
//! (sizes, the models' CRCs, the int8 input quantization), `INFER_I8`
//! (`F` input levels), `INFER_F32` (`F` f32 values), `SHUTDOWN` (answers,
//! then exits QEMU with success). A corrupted, truncated or unknown frame
//! gets an error status, never a panic or a hang: framing errors discard
//! input until the line is idle, then answer.
//!
//! Run it with QEMU's `-serial stdio` (not `-nographic`, which swallows
//! 0x01) and without `-icount` (the timeouts are in virtual time). QEMU
//! writes semihosting output (defmt) to the same stdout, so this binary logs
//! nothing while it serves; it logs only right before it exits with
//! failure. The models are the assets `build.rs` embeds (`cargo xtask
//! assets`), parsed and checked at start-up. A build whose engine runs one
//! kind of model (firmware features `f32`, `int8`) answers requests for
//! the other kind with `ENGINE_ERROR`.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use embedded_io::{ReadReady, Write};
use normcore::engine::{Engine, Output};
use normcore::model::{Kind, Model};
use normcore_firmware::board::active::Board;
use normcore_firmware::cmsdk::timer::Timer;
use normcore_firmware::cmsdk::uart::{Uart, UartError};
use normcore_firmware::cost::TickCounter;
use normcore_firmware::digest::Crc32;
use normcore_firmware::exit;

/// The generated assets (see `build.rs`); the samples are not used here.
#[allow(dead_code, clippy::unreadable_literal, clippy::large_const_arrays)]
mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}
use assets::{ARENA_BYTES, CLASSES, FEATURES, NORMCORE_MODEL_F32, NORMCORE_MODEL_INT8};

/// First byte of a request.
const REQUEST_MAGIC: u8 = 0xA5;
/// First byte of a response.
const RESPONSE_MAGIC: u8 = 0x5A;
/// `INFO`'s version field.
const PROTOCOL_VERSION: u8 = 1;

/// Commands (docs/SERIAL.md).
const CMD_INFO: u8 = 0x01;
const CMD_INFER_I8: u8 = 0x02;
const CMD_INFER_F32: u8 = 0x03;
const CMD_SHUTDOWN: u8 = 0x04;

/// A frame that stops arriving for this long is answered `TIMEOUT`.
const GAP_MS: u32 = 500;
/// After a framing error, input is discarded until the line has been idle
/// this long.
const IDLE_MS: u32 = 250;

/// The largest request payload: one f32 sample.
const MAX_PAYLOAD: usize = 4 * FEATURES;
/// `INFO`'s payload size.
const INFO_LEN: usize = 24;
/// The largest response payload: a class and f32 logits, or `INFO`.
const MAX_RESPONSE: usize = if 2 + 4 * CLASSES > INFO_LEN {
    2 + 4 * CLASSES
} else {
    INFO_LEN
};
// Lengths travel as u16.
const _: () = assert!(MAX_PAYLOAD <= u16::MAX as usize);
const _: () = assert!(MAX_RESPONSE <= u16::MAX as usize);

/// Response status codes (docs/SERIAL.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Status {
    Ok = 0x00,
    BadMagic = 0x01,
    BadCrc = 0x02,
    BadLength = 0x03,
    UnknownCommand = 0x04,
    Timeout = 0x05,
    UartError = 0x06,
    EngineError = 0x07,
}

impl Status {
    /// Errors after which the frame's end is unknown: input is discarded
    /// until the line is idle before answering.
    fn resync(self) -> bool {
        matches!(
            self,
            Status::BadMagic | Status::BadCrc | Status::Timeout | Status::UartError
        )
    }
}

/// A request that was refused while it arrived.
#[derive(Debug, Clone, Copy)]
struct Refused {
    status: Status,
    /// Its sequence number, if that byte arrived (else 0).
    seq: u8,
}

/// A well-formed request; its payload is in the caller's buffer.
#[derive(Debug, Clone, Copy)]
struct Request {
    command: u8,
    seq: u8,
    len: usize,
}

/// UART0 with timeouts measured on timer0.
struct Link {
    uart: Uart,
    timer: Timer,
}

impl Link {
    fn ticks(&self, ms: u32) -> u32 {
        (self.timer.hz() / 1000).saturating_mul(ms)
    }

    /// The next byte if one arrives within `ticks` timer ticks.
    fn byte_within(&mut self, ticks: u32) -> Result<Option<u8>, UartError> {
        let start = self.timer.now();
        loop {
            if self.uart.read_ready()? {
                return self.uart.read_byte().map(Some);
            }
            if self.timer.now().wrapping_sub(start) >= ticks {
                return Ok(None);
            }
        }
    }

    /// The next byte of a frame that has started.
    fn frame_byte(&mut self, seq: u8) -> Result<u8, Refused> {
        match self.byte_within(self.ticks(GAP_MS)) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(Refused {
                status: Status::Timeout,
                seq,
            }),
            Err(_) => Err(Refused {
                status: Status::UartError,
                seq,
            }),
        }
    }

    /// Discard input until the line has been idle for [`IDLE_MS`].
    fn drain(&mut self) {
        let idle = self.ticks(IDLE_MS);
        // An overrun while discarding is one more discarded byte.
        while !matches!(self.byte_within(idle), Ok(None)) {}
    }

    /// Receive one request: waits as long as it takes for its first byte,
    /// then at most [`GAP_MS`] for each next one. The payload lands in
    /// `payload`.
    fn receive(&mut self, payload: &mut [u8; MAX_PAYLOAD]) -> Result<Request, Refused> {
        let first = self.uart.read_byte().map_err(|_| Refused {
            status: Status::UartError,
            seq: 0,
        })?;
        if first != REQUEST_MAGIC {
            return Err(Refused {
                status: Status::BadMagic,
                seq: 0,
            });
        }
        let command = self.frame_byte(0)?;
        let seq = self.frame_byte(0)?;
        let len = u16::from_le_bytes([self.frame_byte(seq)?, self.frame_byte(seq)?]);
        let len = usize::from(len);
        if len > MAX_PAYLOAD {
            return Err(Refused {
                status: Status::BadLength,
                seq,
            });
        }
        for slot in &mut payload[..len] {
            *slot = self.frame_byte(seq)?;
        }
        let mut sent = [0u8; 4];
        for slot in &mut sent {
            *slot = self.frame_byte(seq)?;
        }
        let mut crc = Crc32::new();
        crc.update(&[command, seq]);
        crc.update(&(len as u16).to_le_bytes());
        crc.update(&payload[..len]);
        if crc.value() != u32::from_le_bytes(sent) {
            return Err(Refused {
                status: Status::BadCrc,
                seq,
            });
        }
        Ok(Request { command, seq, len })
    }

    /// Send one response frame and wait until it has left.
    fn respond(&mut self, status: Status, seq: u8, payload: &[u8]) -> Result<(), UartError> {
        let len = (payload.len() as u16).to_le_bytes();
        let header = [status as u8, seq, len[0], len[1]];
        let mut crc = Crc32::new();
        crc.update(&header);
        crc.update(payload);
        self.uart.write_all(&[RESPONSE_MAGIC])?;
        self.uart.write_all(&header)?;
        self.uart.write_all(payload)?;
        self.uart.write_all(&crc.value().to_le_bytes())?;
        self.uart.flush()
    }
}

/// The `crc32` header field of a model file (`layout::CRC_FIELD`).
fn file_crc(bytes: &[u8]) -> u32 {
    match bytes.get(normcore::model::layout::CRC_FIELD) {
        Some(&[a, b, c, d]) => u32::from_le_bytes([a, b, c, d]),
        _ => 0,
    }
}

/// What serves the requests.
struct Server<'m> {
    f32_model: &'m Model<'static>,
    int8_model: &'m Model<'static>,
    arena: &'static mut [u8],
    /// Responses sent.
    answered: u32,
    /// Of them, errors.
    errors: u32,
}

impl Server<'_> {
    /// `INFO`'s payload.
    fn info(&self, out: &mut [u8; MAX_RESPONSE]) -> usize {
        let h = self.int8_model.header();
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            out[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(&[PROTOCOL_VERSION, 0]);
        put(&(FEATURES as u16).to_le_bytes());
        put(&(CLASSES as u16).to_le_bytes());
        put(&(MAX_PAYLOAD as u16).to_le_bytes());
        put(&file_crc(self.f32_model.bytes()).to_le_bytes());
        put(&file_crc(self.int8_model.bytes()).to_le_bytes());
        put(&h.input_scale.to_bits().to_le_bytes());
        put(&h.input_zero_point.to_le_bytes());
        at
    }

    /// Run one sample; the response payload (class, then logits) goes to
    /// `out`, its length is returned.
    fn infer(
        &mut self,
        kind: Kind,
        input: &[u8],
        out: &mut [u8; MAX_RESPONSE],
    ) -> Result<usize, Status> {
        let model = match kind {
            Kind::Int8 => self.int8_model,
            Kind::F32 => self.f32_model,
        };
        let engine_error = |_| Status::EngineError;
        let mut engine = Engine::new(model, &mut *self.arena).map_err(engine_error)?;
        match kind {
            Kind::Int8 => {
                let x = engine.input_i8().map_err(engine_error)?;
                for (x, &b) in x.iter_mut().zip(input) {
                    *x = b as i8;
                }
            }
            Kind::F32 => {
                let x = engine.input_f32().map_err(engine_error)?;
                for (x, b) in x.iter_mut().zip(input.chunks_exact(4)) {
                    *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
        }
        let output = engine.run().map_err(engine_error)?;
        let class = output.argmax() as u16;
        out[..2].copy_from_slice(&class.to_le_bytes());
        let mut at = 2;
        match output {
            Output::I8 { values, .. } if values.len() == CLASSES => {
                for (o, &v) in out[at..].iter_mut().zip(values) {
                    *o = v as u8;
                }
                at += values.len();
            }
            Output::F32(values) if values.len() == CLASSES => {
                for (o, v) in out[at..].chunks_exact_mut(4).zip(values) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
                at += 4 * values.len();
            }
            _ => return Err(Status::EngineError),
        }
        Ok(at)
    }

    /// Answer one well-formed request: the status and the payload's length
    /// in `out`.
    fn handle(
        &mut self,
        req: Request,
        payload: &[u8],
        out: &mut [u8; MAX_RESPONSE],
    ) -> (Status, usize) {
        let result = match (req.command, req.len) {
            (CMD_INFO, 0) => Ok(self.info(out)),
            (CMD_INFER_I8, FEATURES) => self.infer(Kind::Int8, payload, out),
            (CMD_INFER_F32, MAX_PAYLOAD) => self.infer(Kind::F32, payload, out),
            (CMD_SHUTDOWN, 0) => {
                // This response counts itself.
                out[..4].copy_from_slice(&(self.answered + 1).to_le_bytes());
                out[4..8].copy_from_slice(&self.errors.to_le_bytes());
                Ok(8)
            }
            (CMD_INFO | CMD_INFER_I8 | CMD_INFER_F32 | CMD_SHUTDOWN, _) => Err(Status::BadLength),
            _ => Err(Status::UnknownCommand),
        };
        match result {
            Ok(n) => (Status::Ok, n),
            Err(status) => (status, 0),
        }
    }

    /// Serve until `SHUTDOWN`; `Err` only if the UART cannot send.
    fn serve(&mut self, link: &mut Link) -> Result<(), UartError> {
        let mut payload = [0u8; MAX_PAYLOAD];
        let mut out = [0u8; MAX_RESPONSE];
        loop {
            let (status, seq, n, shutdown) = match link.receive(&mut payload) {
                Ok(req) => {
                    let (status, n) = self.handle(req, &payload[..req.len], &mut out);
                    let shutdown = req.command == CMD_SHUTDOWN && status == Status::Ok;
                    (status, req.seq, n, shutdown)
                }
                Err(refused) => {
                    // A request longer than the maximum is a framing error
                    // too: its remaining bytes are still arriving.
                    if refused.status.resync() || refused.status == Status::BadLength {
                        link.drain();
                    }
                    (refused.status, refused.seq, 0, false)
                }
            };
            link.respond(status, seq, &out[..n])?;
            self.answered = self.answered.wrapping_add(1);
            if status != Status::Ok {
                self.errors = self.errors.wrapping_add(1);
            }
            if shutdown {
                return Ok(());
            }
        }
    }
}

/// Parse a model file; a parse error ends the program (logged).
fn parse(name: &str, bytes: &'static [u8]) -> Model<'static> {
    match Model::parse(bytes) {
        Ok(m) => m,
        Err(e) => {
            defmt::error!("serve: {=str} model: Model::parse failed: {}", name, e);
            exit(false)
        }
    }
}

/// The model has the kind, shapes and arena the build sized for.
fn fits(m: &Model<'_>, kind: Kind) -> bool {
    let h = m.header();
    m.kind() == kind
        && h.input.sample_len().ok() == Some(FEATURES)
        && h.classes == CLASSES
        && m.arena_bytes() <= ARENA_BYTES
}

#[entry]
fn main() -> ! {
    let Some(board) = Board::take() else {
        defmt::error!("serve: board already taken");
        exit(false)
    };
    let Some(arena) = normcore_firmware::take_arena!(ARENA_BYTES) else {
        defmt::error!("serve: arena already taken");
        exit(false)
    };
    let f32_model = parse("f32", &NORMCORE_MODEL_F32.0);
    let int8_model = parse("int8", &NORMCORE_MODEL_INT8.0);
    if !fits(&f32_model, Kind::F32) || !fits(&int8_model, Kind::Int8) {
        defmt::error!("serve: the embedded models do not fit the build's sizes");
        exit(false)
    }
    let mut link = Link {
        uart: board.uart,
        timer: board.timer,
    };
    let mut server = Server {
        f32_model: &f32_model,
        int8_model: &int8_model,
        arena,
        answered: 0,
        errors: 0,
    };
    match server.serve(&mut link) {
        Ok(()) => exit(true),
        Err(e) => {
            defmt::error!("serve: uart error: {}", e);
            exit(false)
        }
    }
}
