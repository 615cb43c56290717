//! Inference as a service over the console UART: reads requests (input
//! samples), runs the embedded int8 or f32 model on them and writes back
//! the predicted class and the logits. The binary protocol (framing,
//! commands, status codes, recovery) is specified in `docs/SERIAL.md` and
//! defined once in `normcore::serial`; its host side is `normcore
//! device-eval`.
//!
//! In short: a request is `0xA5, command, seq, len (u16), payload, CRC-32`;
//! the response `0x5A, status, seq, len, payload, CRC-32`. Commands: `INFO`
//! (sizes, which models are embedded, their CRCs, the int8 input
//! quantization), `INFER_I8`
//! (`F` input levels), `INFER_F32` (`F` f32 values), `SHUTDOWN` (answers,
//! then exits QEMU with success). A corrupted, truncated or unknown frame
//! gets an error status, never a panic or a hang: framing errors discard
//! input until the line is idle, then answer.
//!
//! Run it with QEMU's `-serial stdio` (not `-nographic`, which swallows
//! 0x01) and without `-icount` (the timeouts are in virtual time). QEMU
//! writes semihosting output (defmt) to the same stdout, so this binary logs
//! nothing while it serves; it logs only right before it exits with
//! failure. The models are the assets the board's build script embeds,
//! parsed and checked at start-up. A request for a kind of model the build
//! does not embed, or whose engine does not run (firmware features `f32`,
//! `int8`), is answered with `ENGINE_ERROR`.
//!
//! This module is inference alone: it answers the adaptation commands
//! (`ADAPT_BEGIN` … `RESET`) with `UNKNOWN_COMMAND` and says
//! `has_adapt: false`. With the firmware's `adapt` feature a board's
//! `serve` bin is `serve_adapt` (`bin!(serve_adapt, ..)`), which
//! builds on this module's framing and inference and answers them too.

use embedded_io::{Read, ReadReady, Write};
use normcore::engine::{Engine, Output};
use normcore::model::{file_crc, Kind, Model};
use normcore::serial::{
    self, frame_crc, Command, Info, Status, GAP_MS, IDLE_MS, INFO_LEN, REQUEST_MAGIC,
    RESPONSE_MAGIC,
};

use crate::assets::Assets;
use crate::board::Serial;
use crate::cost::TickCounter;

/// The static buffer `serve` needs (`take_arena!`): the engine's arena,
/// then the largest request payload and the largest response payload, for
/// models with `features` inputs and `classes` outputs (f32 being the
/// larger form; an adaptation request is never larger than an f32 sample
/// of 3 values or more).
pub const fn buffer_bytes(arena_bytes: usize, features: usize, classes: usize) -> usize {
    let response = 2 + 4 * classes;
    // The largest request: an f32 sample, or (adaptation) `LABELED`, two
    // bytes more than an int8 sample, or `ADAPT_BEGIN`.
    let request = 4 * features;
    arena_bytes
        + if request > serial::AdaptBegin::LEN {
            request
        } else {
            serial::AdaptBegin::LEN
        }
        + if response > INFO_LEN {
            response
        } else {
            INFO_LEN
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
pub(crate) struct Request {
    pub(crate) command: u8,
    pub(crate) seq: u8,
    pub(crate) len: usize,
}

/// The console UART with timeouts measured on the board's counter.
pub(crate) struct Link<U, T> {
    uart: U,
    timer: T,
}

impl<U: Read + Write + ReadReady, T: TickCounter> Link<U, T> {
    fn ticks(&self, ms: u32) -> u32 {
        (self.timer.hz() / 1000).saturating_mul(ms)
    }

    /// The next byte, waiting as long as it takes.
    fn byte(&mut self) -> Result<u8, U::Error> {
        let mut b = [0u8; 1];
        loop {
            if self.uart.read(&mut b)? == 1 {
                return Ok(b[0]);
            }
        }
    }

    /// The next byte if one arrives within `ticks` timer ticks.
    fn byte_within(&mut self, ticks: u32) -> Result<Option<u8>, U::Error> {
        let start = self.timer.now();
        loop {
            if self.uart.read_ready()? {
                return self.byte().map(Some);
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
    fn receive(&mut self, payload: &mut [u8]) -> Result<Request, Refused> {
        let first = self.byte().map_err(|_| Refused {
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
        let Some(payload) = payload.get_mut(..len) else {
            return Err(Refused {
                status: Status::BadLength,
                seq,
            });
        };
        for slot in payload.iter_mut() {
            *slot = self.frame_byte(seq)?;
        }
        let mut sent = [0u8; 4];
        for slot in &mut sent {
            *slot = self.frame_byte(seq)?;
        }
        if frame_crc(command, seq, payload) != u32::from_le_bytes(sent) {
            return Err(Refused {
                status: Status::BadCrc,
                seq,
            });
        }
        Ok(Request { command, seq, len })
    }

    /// Send one response frame and wait until it has left.
    fn respond(&mut self, status: Status, seq: u8, payload: &[u8]) -> Result<(), U::Error> {
        let len = (payload.len() as u16).to_le_bytes();
        let header = [status as u8, seq, len[0], len[1]];
        let crc = frame_crc(status as u8, seq, payload);
        self.uart.write_all(&[RESPONSE_MAGIC])?;
        self.uart.write_all(&header)?;
        self.uart.write_all(payload)?;
        self.uart.write_all(&crc.to_le_bytes())?;
        self.uart.flush()
    }
}

/// How an int8 inference runs: the plain engine, or (feature `adapt`)
/// with the adapted overlay.
pub(crate) trait Runner {
    /// Run the sample in `engine`'s input.
    fn run<'e>(&self, engine: &'e mut Engine<'_, '_, '_>) -> Result<Output<'e>, Status>;
}

/// The plain engine (`Engine::run`).
pub(crate) struct Plain;

impl Runner for Plain {
    fn run<'e>(&self, engine: &'e mut Engine<'_, '_, '_>) -> Result<Output<'e>, Status> {
        engine.run().map_err(|_| Status::EngineError)
    }
}

/// The buffers a request and its response go through.
pub(crate) struct Io<'b> {
    /// The request's payload.
    pub(crate) payload: &'b mut [u8],
    /// The response's payload.
    pub(crate) out: &'b mut [u8],
}

/// What serves the requests.
pub(crate) struct Server<'m> {
    f32_model: Option<&'m Model<'static>>,
    pub(crate) int8_model: Option<&'m Model<'static>>,
    pub(crate) arena: &'m mut [u8],
    pub(crate) features: usize,
    pub(crate) classes: usize,
    /// `INFO`'s `has_adapt`.
    pub(crate) has_adapt: bool,
    /// Largest request payload accepted.
    max_payload: usize,
    /// Responses sent.
    answered: u32,
    /// Of them, errors.
    errors: u32,
}

impl Server<'_> {
    /// `INFO`'s answer.
    fn info(&self) -> Info {
        let crc = |m: Option<&Model<'_>>| m.map_or(0, |m| file_crc(m.bytes()));
        let h = self.int8_model.map(|m| m.header());
        Info {
            version: serial::VERSION,
            has_f32: self.f32_model.is_some(),
            has_int8: self.int8_model.is_some(),
            has_adapt: self.has_adapt,
            features: self.features as u16,
            classes: self.classes as u16,
            max_payload: self.max_payload as u16,
            f32_model_crc: crc(self.f32_model),
            int8_model_crc: crc(self.int8_model),
            input_scale: h.map_or(0.0, |h| h.input_scale),
            input_zero_point: h.map_or(0, |h| h.input_zero_point),
        }
    }

    /// Run one sample; the response payload (class, then logits) goes to
    /// `out`, its length is returned.
    fn infer(
        &mut self,
        kind: Kind,
        input: &[u8],
        out: &mut [u8],
        runner: &impl Runner,
    ) -> Result<usize, Status> {
        let model = match kind {
            Kind::Int8 => self.int8_model,
            Kind::F32 => self.f32_model,
        };
        let model = model.ok_or(Status::EngineError)?;
        if input.len() != serial::input_len(kind, self.features) {
            return Err(Status::BadLength);
        }
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
        let output = match kind {
            Kind::Int8 => runner.run(&mut engine)?,
            Kind::F32 => engine.run().map_err(engine_error)?,
        };
        let len = serial::prediction_len(kind, self.classes);
        let out = out.get_mut(..len).ok_or(Status::EngineError)?;
        let class = output.argmax() as u16;
        out[..2].copy_from_slice(&class.to_le_bytes());
        match output {
            Output::I8 { values, .. } if values.len() == self.classes => {
                for (o, &v) in out[2..].iter_mut().zip(values) {
                    *o = v as u8;
                }
            }
            Output::F32(values) if values.len() == self.classes => {
                for (o, v) in out[2..].chunks_exact_mut(4).zip(values) {
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
            _ => return Err(Status::EngineError),
        }
        Ok(len)
    }

    /// Answer one well-formed request other than an adaptation command
    /// (which a server without adaptation does not know): the status and
    /// the payload's length in `out`. `runner` runs int8 inferences.
    pub(crate) fn handle(
        &mut self,
        req: Request,
        payload: &[u8],
        out: &mut [u8],
        runner: &impl Runner,
    ) -> (Status, usize) {
        let result = match (Command::from_byte(req.command), req.len) {
            (Some(Command::Info), 0) => {
                out[..INFO_LEN].copy_from_slice(&self.info().encode());
                Ok(INFO_LEN)
            }
            (Some(Command::InferI8), _) => self.infer(Kind::Int8, payload, out, runner),
            (Some(Command::InferF32), _) => self.infer(Kind::F32, payload, out, &Plain),
            (Some(Command::Shutdown), 0) => {
                // This response counts itself.
                out[..4].copy_from_slice(&(self.answered + 1).to_le_bytes());
                out[4..8].copy_from_slice(&self.errors.to_le_bytes());
                Ok(8)
            }
            (Some(Command::Info | Command::Shutdown), _) => Err(Status::BadLength),
            (Some(_), _) | (None, _) => Err(Status::UnknownCommand),
        };
        match result {
            Ok(n) => (Status::Ok, n),
            Err(status) => (status, 0),
        }
    }

    /// The next well-formed request, its payload in `payload`; `None` once
    /// a refused frame has been answered (after discarding input until
    /// the line is idle, for framing errors). `Err` only if the UART cannot
    /// send.
    pub(crate) fn next<U: Read + Write + ReadReady, T: TickCounter>(
        &mut self,
        link: &mut Link<U, T>,
        payload: &mut [u8],
    ) -> Result<Option<Request>, U::Error> {
        match link.receive(payload) {
            Ok(req) => Ok(Some(req)),
            Err(refused) => {
                if refused.status.resync() {
                    link.drain();
                }
                self.answer(link, refused.status, refused.seq, &[])?;
                Ok(None)
            }
        }
    }

    /// Send a response and count it.
    pub(crate) fn answer<U: Read + Write + ReadReady, T: TickCounter>(
        &mut self,
        link: &mut Link<U, T>,
        status: Status,
        seq: u8,
        payload: &[u8],
    ) -> Result<(), U::Error> {
        link.respond(status, seq, payload)?;
        self.answered = self.answered.wrapping_add(1);
        if status != Status::Ok {
            self.errors = self.errors.wrapping_add(1);
        }
        Ok(())
    }

    /// Answer `req` with [`handle`](Self::handle); whether it was a
    /// successful `SHUTDOWN` (the end of the program).
    pub(crate) fn answer_common<U: Read + Write + ReadReady, T: TickCounter>(
        &mut self,
        link: &mut Link<U, T>,
        req: Request,
        io: &mut Io<'_>,
        runner: &impl Runner,
    ) -> Result<bool, U::Error> {
        let (status, n) = self.handle(req, &io.payload[..req.len], io.out, runner);
        self.answer(link, status, req.seq, &io.out[..n])?;
        Ok(req.command == Command::Shutdown as u8 && status == Status::Ok)
    }

    /// Serve until `SHUTDOWN`; `Err` only if the UART cannot send.
    fn serve<U: Read + Write + ReadReady, T: TickCounter>(
        &mut self,
        link: &mut Link<U, T>,
        io: &mut Io<'_>,
    ) -> Result<(), U::Error> {
        loop {
            if let Some(req) = self.next(link, io.payload)? {
                if self.answer_common(link, req, io, &Plain)? {
                    return Ok(());
                }
            }
        }
    }
}

/// Parse an embedded model file (if there is one) and check it against
/// the samples' shapes and the arena; `Err` (logged) if it does not parse
/// or fit.
fn parse(
    name: &str,
    kind: Kind,
    bytes: Option<&'static [u8]>,
    assets: &Assets,
) -> Result<Option<Model<'static>>, ()> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let m = Model::parse(bytes).map_err(|e| {
        defmt::error!("serve: {=str} model: Model::parse failed: {}", name, e);
    })?;
    let h = m.header();
    let fits = m.kind() == kind
        && h.input.sample_len().ok() == Some(assets.samples.features)
        && h.classes == assets.samples.classes
        && m.arena_bytes() <= assets.arena_bytes;
    if !fits {
        defmt::error!(
            "serve: the {=str} model does not fit the build's sizes",
            name
        );
        return Err(());
    }
    Ok(Some(m))
}

/// The `serve` program on the board's console; `buffer` is a static buffer
/// of [`buffer_bytes`] for the assets' sizes. Ends through `B::exit`: with
/// success after `SHUTDOWN`.
pub fn main<B: Serial>(assets: &Assets, buffer: Option<&'static mut [u8]>) -> !
where
    <B::Uart as embedded_io::ErrorType>::Error: defmt::Format,
{
    run::<B>(assets, buffer, false, |server, link, io| {
        server.serve(link, io)
    })
}

/// Set up the server on the board's console and run `serve_with` until it
/// returns; then exit (success if it returned `Ok`). `adapt`: the server
/// answers the adaptation commands (`INFO` says so, and the largest
/// request payload makes room for `LABELED` and `ADAPT_BEGIN`).
pub(crate) fn run<B: Serial>(
    assets: &Assets,
    buffer: Option<&'static mut [u8]>,
    adapt: bool,
    serve_with: impl FnOnce(
        &mut Server<'_>,
        &mut Link<B::Uart, B::Timer>,
        &mut Io<'_>,
    ) -> Result<(), <B::Uart as embedded_io::ErrorType>::Error>,
) -> !
where
    <B::Uart as embedded_io::ErrorType>::Error: defmt::Format,
{
    let Some((timer, uart)) = B::take_serial() else {
        defmt::error!("serve: board already taken");
        B::exit(false)
    };
    let Some(buffer) = buffer else {
        defmt::error!("serve: buffer already taken");
        B::exit(false)
    };
    let (features, classes) = (assets.samples.features, assets.samples.classes);
    let (Ok(f32_model), Ok(int8_model)) = (
        parse("f32", Kind::F32, assets.f32_model, assets),
        parse("int8", Kind::Int8, assets.int8_model, assets),
    ) else {
        B::exit(false)
    };
    let mut max_payload = match f32_model {
        Some(_) => serial::input_len(Kind::F32, features),
        None => serial::input_len(Kind::Int8, features),
    };
    if adapt {
        // `LABELED` (class, then the levels) and `ADAPT_BEGIN`.
        max_payload = max_payload.max(2 + features).max(serial::AdaptBegin::LEN);
    }
    if buffer.len() < buffer_bytes(assets.arena_bytes, features, classes) {
        defmt::error!("serve: the static buffer is smaller than buffer_bytes()");
        B::exit(false)
    }
    let (arena, rest) = buffer.split_at_mut(assets.arena_bytes);
    let (payload, out) = rest.split_at_mut(max_payload);
    let mut link = Link { uart, timer };
    let mut server = Server {
        f32_model: f32_model.as_ref(),
        int8_model: int8_model.as_ref(),
        arena,
        features,
        classes,
        has_adapt: adapt,
        max_payload,
        answered: 0,
        errors: 0,
    };
    let mut io = Io { payload, out };
    match serve_with(&mut server, &mut link, &mut io) {
        Ok(()) => B::exit(true),
        Err(e) => {
            defmt::error!("serve: uart error: {}", e);
            B::exit(false)
        }
    }
}
