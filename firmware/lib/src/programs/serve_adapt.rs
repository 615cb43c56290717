//! `serve` with on-device adaptation (feature `adapt`): the inference
//! service of [`super::serve`], and the serial adaptation commands of
//! protocol version 3 (`ADAPT_BEGIN`, `UNLABELED`, `FINISH_PASS`,
//! `LABELED`, `COMMIT`, `RESET`; `docs/SERIAL.md`, "Adaptation") for the
//! embedded int8 model: statistics re-estimation (core's
//! `adapt::restat::Restat`) and tail training (`adapt::tail::Tail`) into
//! an overlay in RAM that `INFER_I8` then runs with, saved through core's
//! A/B `adapt::store::Store` into a flash region (on QEMU a `RamFlash`) and
//! loaded from it at start.
//!
//! # States
//! - **idle**: no session. `INFER_I8` runs the overlay if one is active
//!   (after a `COMMIT`, or a saved overlay loaded at start), else the
//!   file's model.
//! - **re-estimation** (`ADAPT_BEGIN` with bit 0): `UNLABELED` samples,
//!   `FINISH_PASS` per pass; the last pass leads to the tail (bit 1) or to
//!   **done**.
//! - **tail** (bit 1): `LABELED` samples, each one SGD step.
//! - **done**: only `COMMIT` is left.
//!
//! `COMMIT` is accepted in every phase of a session and ends it; `RESET`
//! and `ADAPT_BEGIN` end a session at any time; `INFO`, `INFER_*` and
//! `SHUTDOWN` are answered in every state. Anything else is
//! `ADAPT_ERROR 14` (out of phase), a wrong length `BAD_LENGTH`.
//!
//! # Memory
//! All static, sized by the board's build script from the int8 model
//! (core's `serial::adapt::words`): the overlay (`SERVE_OVERLAY_WORDS`),
//! one workspace shared by re-estimation, tail training and the loading of
//! a saved overlay (`SERVE_WORK_WORDS`), and the flash region
//! ([`store_bytes`]). The session objects live on the stack of the loop
//! serving the session and borrow the workspace; nothing is allocated.

use embedded_io::{Read, ReadReady, Write};
use embedded_storage::nor_flash::NorFlash;
use normcore::adapt::overlay::{Overlay, Scope};
use normcore::adapt::restat::Restat;
use normcore::adapt::store::{self, RamFlash, Store};
use normcore::adapt::tail::{Tail, TailConfig};
use normcore::adapt::AdaptError;
use normcore::engine::{Engine, Output};
use normcore::kernels::NoTap;
use normcore::model::{crc32, Model};
use normcore::optim::Sgd;
use normcore::serial::{
    self, AdaptBegin, AdaptPlan, Command, Committed, PassDone, PassState, Status, BAD_CONFIG,
    FLASH_ERROR, OUT_OF_PHASE,
};

use super::serve::{Io, Link, Request, Runner, Server};
use crate::assets::Assets;
use crate::board::Serial;
use crate::cost::TickCounter;

/// Erase page of the flash region (the nRF51's 1 KiB, as `finetune`'s).
pub const PAGE: usize = 1024;
/// Write unit of the flash region: a word.
pub const WRITE: usize = 4;

/// The RAM-backed flash region of `N` bytes the overlay is saved into.
pub type Flash<const N: usize> = RamFlash<N, WRITE, PAGE>;

/// Bytes of a flash region with two slots for an overlay of
/// `overlay_words` words: each slot the store's header and the overlay, in
/// whole [`PAGE`]s. 0 without an overlay.
pub const fn store_bytes(overlay_words: usize) -> usize {
    if overlay_words == 0 {
        return 0;
    }
    let span = store::HEADER_LEN.div_ceil(WRITE) * WRITE;
    2 * (span + 4 * overlay_words).div_ceil(PAGE) * PAGE
}

/// The static buffers, each `None` if already taken.
#[derive(Debug)]
pub struct Buffers {
    /// `serve`'s buffer ([`super::serve::buffer_bytes`]).
    pub serve: Option<&'static mut [u8]>,
    /// The overlay (`4·SERVE_OVERLAY_WORDS` bytes, 16-aligned).
    pub overlay: Option<&'static mut [u8]>,
    /// The workspace (`4·SERVE_WORK_WORDS` bytes, 16-aligned).
    pub work: Option<&'static mut [u8]>,
}

/// `INFER_I8` with the overlay, when one is active.
impl Runner for Overlay<'_> {
    fn run<'e>(&self, engine: &'e mut Engine<'_, '_, '_>) -> Result<Output<'e>, Status> {
        if self.is_active() {
            engine
                .run_adapted(Some(self), usize::MAX, &mut NoTap)
                .map_err(|_| Status::EngineError)
        } else {
            engine.run().map_err(|_| Status::EngineError)
        }
    }
}

/// Why a loop over requests ended.
#[derive(Debug, Clone, Copy)]
enum Exit {
    /// `SHUTDOWN` was answered.
    Shutdown,
    /// `RESET` arrived (not answered yet).
    Reset(u8),
    /// `ADAPT_BEGIN` arrived (not answered yet; its payload is in the
    /// request buffer).
    Begin(Request),
    /// The session is over: back to idle.
    Ended,
    /// This phase is over: the session's next one.
    Next,
}

/// What a phase did with a request.
enum Step {
    /// Answer: `Ok(n)` with `out[..n]`, or `ADAPT_ERROR` with the code.
    Answer(Result<usize, u8>),
    /// Answer, then leave the phase with this exit.
    Leave(Result<usize, u8>, Exit),
    /// Not this phase's command: the common rules.
    Common,
}

/// The request payload's length an adaptation command takes, for `F`
/// input values; `None` for other commands.
fn adapt_len(cmd: Command, features: usize) -> Option<usize> {
    Some(match cmd {
        Command::AdaptBegin => AdaptBegin::LEN,
        Command::Unlabeled => features,
        Command::Labeled => 2 + features,
        Command::FinishPass | Command::Commit | Command::Reset => 0,
        _ => return None,
    })
}

fn code(e: AdaptError) -> u8 {
    e.code()
}

/// The adaptation side of the server.
struct Adapter<'a, F> {
    model: &'a Model<'static>,
    scope: Scope,
    store: Store<F>,
}

/// Copy the int8 levels `p` into a new engine's input (`Engine::new` on
/// the server's arena); the engine.
fn engine_with<'e>(
    model: &'e Model<'static>,
    arena: &'e mut [u8],
    p: &[u8],
) -> Result<Engine<'e, 'static, 'e>, u8> {
    let mut e = Engine::new(model, arena).map_err(|e| code(e.into()))?;
    let x = e.input_i8().map_err(|e| code(e.into()))?;
    if x.len() != p.len() {
        return Err(code(AdaptError::BadSample));
    }
    for (x, &b) in x.iter_mut().zip(p) {
        *x = b as i8;
    }
    Ok(e)
}

impl<'a, F: NorFlash> Adapter<'a, F> {
    /// Serve with adaptation until `SHUTDOWN`: the overlay starts as the
    /// saved one (if the store has a valid one for this model), else empty;
    /// a `RESET` starts a fresh one.
    fn serve<U: Read + Write + ReadReady, T: TickCounter>(
        &mut self,
        srv: &mut Server<'_>,
        link: &mut Link<U, T>,
        io: &mut Io<'_>,
        words: &mut [u32],
        work: &mut [f32],
    ) -> Result<(), U::Error> {
        let mut reset: Option<u8> = None;
        let mut first = true;
        loop {
            let saved = if first { self.saved(work) } else { None };
            first = false;
            let bytes: &[u8] = bytemuck::cast_slice(&*work);
            // The saved overlay if there is a valid one for this model,
            // else an empty one: either way the layout is the model's.
            let loaded = saved.map(|len| Overlay::load(self.model, &bytes[..len], &mut *words));
            let mut overlay = match loaded {
                Some(Ok(o)) => o,
                _ => match Overlay::new(self.model, self.scope, &mut *words) {
                    Ok(o) => o,
                    Err(_) => return self.unusable(srv, link, io),
                },
            };
            if let Some(seq) = reset.take() {
                let r = self.store.erase_all().map(|()| 0).map_err(|_| FLASH_ERROR);
                answer(srv, link, io, seq, r)?;
            }
            let mut exit = self.idle(srv, link, io, &mut overlay)?;
            loop {
                exit = match exit {
                    Exit::Shutdown => return Ok(()),
                    Exit::Reset(seq) => {
                        reset = Some(seq);
                        break;
                    }
                    Exit::Begin(req) => self.session(srv, link, io, &mut overlay, work, req)?,
                    Exit::Ended | Exit::Next => self.idle(srv, link, io, &mut overlay)?,
                };
            }
        }
    }

    /// Without an overlay (cannot happen with the build's sizes): serve
    /// inference alone, refusing adaptation.
    fn unusable<U: Read + Write + ReadReady, T: TickCounter>(
        &mut self,
        srv: &mut Server<'_>,
        link: &mut Link<U, T>,
        io: &mut Io<'_>,
    ) -> Result<(), U::Error> {
        srv.has_adapt = false;
        loop {
            if let Some(req) = srv.next(link, io.payload)? {
                if srv.answer_common(link, req, io, &super::serve::Plain)? {
                    return Ok(());
                }
            }
        }
    }

    /// The saved overlay's length, copied into `work`, if the store holds a
    /// valid one.
    fn saved(&mut self, work: &mut [f32]) -> Option<usize> {
        let buf: &mut [u8] = bytemuck::cast_slice_mut(work);
        match self.store.load(buf) {
            Ok(Some(l)) => Some(l.len),
            _ => None,
        }
    }

    /// Requests until one of them ends the phase: `on` answers the phase's
    /// own commands (their lengths checked), the common rules the rest.
    fn phase<U: Read + Write + ReadReady, T: TickCounter>(
        &mut self,
        srv: &mut Server<'_>,
        link: &mut Link<U, T>,
        io: &mut Io<'_>,
        overlay: &mut Overlay<'_>,
        mut on: impl FnMut(
            &mut Self,
            &mut Server<'_>,
            &mut Overlay<'_>,
            Command,
            &[u8],
            &mut [u8],
        ) -> Step,
    ) -> Result<Exit, U::Error> {
        loop {
            let Some(req) = srv.next(link, io.payload)? else {
                continue;
            };
            let cmd = Command::from_byte(req.command);
            let len = cmd.and_then(|c| adapt_len(c, srv.features));
            let (Some(cmd), Some(len)) = (cmd, len) else {
                // Not an adaptation command.
                if srv.answer_common(link, req, io, &*overlay)? {
                    return Ok(Exit::Shutdown);
                }
                continue;
            };
            if req.len != len {
                srv.answer(link, Status::BadLength, req.seq, &[])?;
                continue;
            }
            match cmd {
                Command::AdaptBegin => return Ok(Exit::Begin(req)),
                Command::Reset => return Ok(Exit::Reset(req.seq)),
                _ => {}
            }
            let step = on(self, srv, overlay, cmd, &io.payload[..len], io.out);
            let (result, leave) = match step {
                Step::Answer(r) => (r, None),
                Step::Leave(r, exit) => (r, Some(exit)),
                Step::Common => (Err(OUT_OF_PHASE), None),
            };
            answer(srv, link, io, req.seq, result)?;
            if let Some(exit) = leave {
                return Ok(exit);
            }
        }
    }

    /// No session.
    fn idle<U: Read + Write + ReadReady, T: TickCounter>(
        &mut self,
        srv: &mut Server<'_>,
        link: &mut Link<U, T>,
        io: &mut Io<'_>,
        overlay: &mut Overlay<'_>,
    ) -> Result<Exit, U::Error> {
        self.phase(srv, link, io, overlay, |_, _, _, _, _, _| Step::Common)
    }

    /// Check `ADAPT_BEGIN`'s payload against the model and the workspace:
    /// the session's settings and the tail's configuration, or the
    /// `ADAPT_ERROR` code.
    fn begin(&self, p: &[u8], work: usize) -> Result<(AdaptBegin, TailConfig, usize), u8> {
        let b = AdaptBegin::decode(p).ok_or(BAD_CONFIG)?;
        if !b.tail && (b.train_bn || !b.restat) {
            return Err(BAD_CONFIG);
        }
        let cfg = TailConfig {
            lr: b.lr,
            momentum: b.momentum,
            train_bn: b.train_bn,
        };
        let mut need = 0;
        if b.restat {
            need = Restat::words_needed(self.model).map_err(code)?;
        }
        if b.tail {
            let sgd = Sgd {
                lr: b.lr,
                momentum: b.momentum,
                weight_decay: 0.0,
                nesterov: false,
            };
            if sgd.validate().is_err() || b.lr <= 0.0 {
                return Err(BAD_CONFIG);
            }
            need = need.max(Tail::words_needed(self.model, &cfg).map_err(code)?);
            if !self.scope.tail {
                return Err(code(AdaptError::NotInOverlay));
            }
        }
        if need > work {
            return Err(code(AdaptError::BufferTooSmall {
                needed: 4 * need,
                actual: 4 * work,
            }));
        }
        Ok((b, cfg, need))
    }

    /// A session, from its `ADAPT_BEGIN` (answered here) to its end.
    fn session<U: Read + Write + ReadReady, T: TickCounter>(
        &mut self,
        srv: &mut Server<'_>,
        link: &mut Link<U, T>,
        io: &mut Io<'_>,
        overlay: &mut Overlay<'_>,
        work: &mut [f32],
        req: Request,
    ) -> Result<Exit, U::Error> {
        let (b, cfg, need) = match self.begin(&io.payload[..req.len], work.len()) {
            Ok(v) => v,
            Err(c) => {
                answer(srv, link, io, req.seq, Err(c))?;
                return Ok(Exit::Ended);
            }
        };
        let mut plan = AdaptPlan {
            overlay: overlay.len_bytes() as u32,
            workspace: 4 * need as u32,
            passes: 0,
            classes: srv.classes as u16,
        };
        let mut begin = Some((req.seq, plan));
        if b.restat {
            let layers = match b.restat_layers {
                0 => usize::MAX,
                n => usize::from(n),
            };
            let mut r = match Restat::first_layers(self.model, &mut *work, layers) {
                Ok(r) => r,
                Err(e) => {
                    answer(srv, link, io, req.seq, Err(code(e)))?;
                    return Ok(Exit::Ended);
                }
            };
            plan.passes = r.pass().1 as u16;
            let n = write(io.out, &plan.encode());
            answer(srv, link, io, req.seq, Ok(n))?;
            begin = None;
            let exit = self.phase(srv, link, io, overlay, |a, srv, overlay, cmd, p, out| {
                let model = a.model;
                match cmd {
                    Command::Unlabeled => Step::Answer((|| {
                        let mut e = engine_with(model, srv.arena, p)?;
                        r.observe(&mut e, Some(&*overlay)).map_err(code)?;
                        let (pass, passes) = r.pass();
                        let st = PassState {
                            pass: pass as u8,
                            passes: passes as u8,
                            samples: r.samples().min(u32::from(u16::MAX)) as u16,
                        };
                        Ok(write(out, &st.encode()))
                    })()),
                    Command::FinishPass => match r.finish_pass(model, overlay) {
                        Ok(rep) => {
                            let (pass, passes) = r.pass();
                            let done = PassDone {
                                layer: rep.layer as u16,
                                remaining: passes.saturating_sub(pass) as u16,
                                values: rep.values.min(u64::from(u32::MAX)) as u32,
                                samples: rep.samples,
                            };
                            let n = write(out, &done.encode());
                            if r.done() {
                                Step::Leave(Ok(n), Exit::Next)
                            } else {
                                Step::Answer(Ok(n))
                            }
                        }
                        Err(e) => Step::Answer(Err(code(e))),
                    },
                    Command::Commit => match a.commit(overlay, None, out) {
                        Ok(n) => Step::Leave(Ok(n), Exit::Ended),
                        Err(c) => Step::Answer(Err(c)),
                    },
                    _ => Step::Common,
                }
            })?;
            if !matches!(exit, Exit::Next) {
                return Ok(exit);
            }
        }
        if b.tail {
            let mut tail = Tail::new(self.model, Some(&*overlay), cfg, &mut *work).map_err(code);
            if let Some((seq, plan)) = begin {
                let r = tail.as_ref().map(|_| ()).map_err(|&c| c);
                let r = r.map(|()| write(io.out, &plan.encode()));
                let failed = r.is_err();
                answer(srv, link, io, seq, r)?;
                if failed {
                    return Ok(Exit::Ended);
                }
            }
            let classes = srv.classes;
            return self.phase(srv, link, io, overlay, |a, srv, overlay, cmd, p, out| {
                let model = a.model;
                match cmd {
                    Command::Labeled => Step::Answer((|| {
                        let t = tail.as_mut().map_err(|&mut c| c)?;
                        let class = usize::from(u16::from_le_bytes([p[0], p[1]]));
                        if class >= classes {
                            return Err(code(AdaptError::BadSample));
                        }
                        let mut e = engine_with(model, srv.arena, &p[2..])?;
                        let loss = t.step(&mut e, Some(&*overlay), class).map_err(code)?;
                        out[..4].copy_from_slice(&loss.to_le_bytes());
                        out[4..8].copy_from_slice(&t.steps().to_le_bytes());
                        Ok(8)
                    })()),
                    Command::Commit => match a.commit(overlay, tail.as_mut().ok(), out) {
                        Ok(n) => Step::Leave(Ok(n), Exit::Ended),
                        Err(c) => Step::Answer(Err(c)),
                    },
                    _ => Step::Common,
                }
            });
        }
        // Re-estimation done, no tail: only `COMMIT` is left.
        self.phase(
            srv,
            link,
            io,
            overlay,
            |a, _, overlay, cmd, _, out| match cmd {
                Command::Commit => match a.commit(overlay, None, out) {
                    Ok(n) => Step::Leave(Ok(n), Exit::Ended),
                    Err(c) => Step::Answer(Err(c)),
                },
                _ => Step::Common,
            },
        )
    }

    /// `COMMIT`: the tail's parameters into the overlay (if it stepped),
    /// then the overlay into the store; `Committed` into `out`.
    fn commit(
        &mut self,
        overlay: &mut Overlay<'_>,
        tail: Option<&mut Tail<'_>>,
        out: &mut [u8],
    ) -> Result<usize, u8> {
        if let Some(t) = tail {
            if t.steps() > 0 {
                t.commit(self.model, overlay).map_err(code)?;
            }
        }
        let seq = self
            .store
            .save(overlay.as_bytes())
            .map_err(|_| FLASH_ERROR)?;
        let c = Committed {
            seq,
            bytes: overlay.len_bytes() as u32,
            crc: crc32(overlay.as_bytes()),
        };
        Ok(write(out, &c.encode()))
    }
}

/// Copy `bytes` to the start of `out`; their length.
fn write(out: &mut [u8], bytes: &[u8]) -> usize {
    out[..bytes.len()].copy_from_slice(bytes);
    bytes.len()
}

/// Answer `Ok(n)` with `out[..n]`, or `ADAPT_ERROR` with the code.
fn answer<U: Read + Write + ReadReady, T: TickCounter>(
    srv: &mut Server<'_>,
    link: &mut Link<U, T>,
    io: &mut Io<'_>,
    seq: u8,
    result: Result<usize, u8>,
) -> Result<(), U::Error> {
    match result {
        Ok(n) => srv.answer(link, Status::Ok, seq, &io.out[..n]),
        Err(c) => srv.answer(link, Status::AdaptError, seq, &[c]),
    }
}

/// The `serve` program with adaptation: see the module docs. `buffers`
/// are the static buffers the `bin!` macro sizes from the build's
/// constants; `flash` the region the overlay is saved into (its whole
/// capacity is the store's). A build whose int8 model cannot be adapted
/// serves inference alone (`INFO` says `has_adapt: false`).
pub fn main<B: Serial, F: NorFlash>(assets: &Assets, buffers: Buffers, flash: Option<F>) -> !
where
    <B::Uart as embedded_io::ErrorType>::Error: defmt::Format,
{
    let parsed = assets.int8_model.and_then(|b| Model::parse(b).ok());
    let Some(flash) = flash else {
        defmt::error!("serve: flash region already taken");
        B::exit(false)
    };
    let region = flash.capacity() as u32;
    let store = Store::new(flash, 0, region);
    let (Some(words), Some(work)) = (buffers.overlay, buffers.work) else {
        defmt::error!("serve: adaptation buffers already taken");
        B::exit(false)
    };
    let cast = |b: &'static mut [u8]| bytemuck::try_cast_slice_mut::<u8, u32>(b).ok();
    let (Some(words), Some(work)) = (cast(words), cast(work)) else {
        defmt::error!("serve: adaptation buffers misaligned");
        B::exit(false)
    };
    let work: &mut [f32] = bytemuck::cast_slice_mut(work);
    let adapter = match (parsed.as_ref(), store) {
        (Some(model), Ok(store)) => {
            let scope = serial::adapt::overlay_scope(model);
            let fits = (scope.restat || scope.tail)
                && Overlay::words_needed(model, scope).is_ok_and(|n| n <= words.len());
            fits.then_some(Adapter {
                model,
                scope,
                store,
            })
        }
        _ => None,
    };
    let adapt = adapter.is_some();
    super::serve::run::<B>(
        assets,
        buffers.serve,
        adapt,
        |srv, link, io| match adapter {
            Some(mut a) => a.serve(srv, link, io, words, work),
            None => loop {
                if let Some(req) = srv.next(link, io.payload)? {
                    if srv.answer_common(link, req, io, &super::serve::Plain)? {
                        return Ok(());
                    }
                }
            },
        },
    )
}
