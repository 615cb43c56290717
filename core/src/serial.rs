//! The serial protocol between a host and a device running the `serve`
//! firmware: framing, codes and payload layouts, defined once for both
//! sides (the firmware's `programs::serve`, the host's `device-eval`).
//! The specification with examples and the recovery rules is
//! `docs/SERIAL.md`; this module is its executable form.
//!
//! A request is `REQUEST_MAGIC, command, seq, len (u16 LE), payload,
//! CRC-32 (LE)`; a response `RESPONSE_MAGIC, status, seq, len, payload,
//! CRC-32`. The CRC ([`frame_crc`]) covers everything after the magic.
//! No allocation: the device streams frames byte by byte.

use crate::model::{Crc32, Kind};

/// First byte of a request.
pub const REQUEST_MAGIC: u8 = 0xA5;
/// First byte of a response.
pub const RESPONSE_MAGIC: u8 = 0x5A;
/// The protocol version `INFO` reports. Version 2: `INFO`'s byte 1 says
/// which kinds of model the device embeds (a build may embed one).
/// Version 3: the adaptation commands (`ADAPT_BEGIN` … `RESET`), and
/// `INFO`'s byte 1 bit 2 saying the device has them.
pub const VERSION: u8 = 3;
/// Frame header bytes: magic, command or status, sequence number, length.
pub const HEADER: usize = 5;
/// Frame trailer bytes: the CRC-32.
pub const TRAILER: usize = 4;
/// Once a frame has started, the device waits at most this long for each
/// next byte before answering `Timeout`.
pub const GAP_MS: u32 = 500;
/// After a framing error the device discards input until the line has been
/// idle this long, then answers.
pub const IDLE_MS: u32 = 250;
/// Bytes of `INFO`'s payload.
pub const INFO_LEN: usize = 24;

/// Request commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Command {
    /// Sizes, which models are embedded, their CRCs, the int8 input
    /// quantization ([`Info`]).
    Info = 0x01,
    /// Run the int8 model on `F` input levels (i8).
    InferI8 = 0x02,
    /// Run the f32 model on `F` values (f32 LE).
    InferF32 = 0x03,
    /// Answer `(answered, errors)` (two u32), then end the program.
    Shutdown = 0x04,
    /// Start (or restart) an adaptation session ([`AdaptBegin`]); answers
    /// the RAM plan ([`AdaptPlan`]).
    AdaptBegin = 0x05,
    /// An unlabeled int8 sample (`F` levels) for the current
    /// re-estimation pass; answers [`PassState`].
    Unlabeled = 0x06,
    /// End the current re-estimation pass: refold its layer into the
    /// overlay; answers [`PassDone`].
    FinishPass = 0x07,
    /// A labeled int8 sample (class u16 LE, then `F` levels): one tail
    /// training step; answers the loss (f32) and the steps so far (u32).
    Labeled = 0x08,
    /// Commit: the tail's parameters into the overlay (if it stepped),
    /// then the overlay into flash; answers [`Committed`].
    Commit = 0x09,
    /// Drop the overlay in RAM and in flash: the original model again.
    Reset = 0x0A,
}

impl Command {
    /// The command of code `b`, if there is one.
    pub fn from_byte(b: u8) -> Option<Command> {
        match b {
            0x01 => Some(Command::Info),
            0x02 => Some(Command::InferI8),
            0x03 => Some(Command::InferF32),
            0x04 => Some(Command::Shutdown),
            0x05 => Some(Command::AdaptBegin),
            0x06 => Some(Command::Unlabeled),
            0x07 => Some(Command::FinishPass),
            0x08 => Some(Command::Labeled),
            0x09 => Some(Command::Commit),
            0x0A => Some(Command::Reset),
            _ => None,
        }
    }

    /// The inference command for a model of `kind`.
    pub fn infer(kind: Kind) -> Command {
        match kind {
            Kind::Int8 => Command::InferI8,
            Kind::F32 => Command::InferF32,
        }
    }
}

/// Response status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Status {
    /// Done; the payload is the command's answer.
    Ok = 0x00,
    /// A frame did not start with [`REQUEST_MAGIC`].
    BadMagic = 0x01,
    /// The frame's CRC did not match.
    BadCrc = 0x02,
    /// A length above the maximum, or not what the command takes.
    BadLength = 0x03,
    /// No such command.
    UnknownCommand = 0x04,
    /// The frame stopped arriving ([`GAP_MS`]).
    Timeout = 0x05,
    /// The UART lost a byte (overrun).
    UartError = 0x06,
    /// The engine refused to run (no such model in this build, or an
    /// engine without that kind).
    EngineError = 0x07,
    /// Adaptation refused the command; the payload is one byte, the
    /// error's code (`normcore::adapt::AdaptError::code`). Nothing changed.
    AdaptError = 0x08,
}

impl Status {
    /// The status of code `b`, if there is one.
    pub fn from_byte(b: u8) -> Option<Status> {
        Some(match b {
            0x00 => Status::Ok,
            0x01 => Status::BadMagic,
            0x02 => Status::BadCrc,
            0x03 => Status::BadLength,
            0x04 => Status::UnknownCommand,
            0x05 => Status::Timeout,
            0x06 => Status::UartError,
            0x07 => Status::EngineError,
            0x08 => Status::AdaptError,
            _ => return None,
        })
    }

    /// Refusals of a request while it arrives after which the frame's end
    /// is unknown (a length above the maximum included: its bytes are still
    /// coming): the device discards input until the line is idle
    /// ([`IDLE_MS`]) before answering.
    pub fn resync(self) -> bool {
        matches!(
            self,
            Status::BadMagic
                | Status::BadCrc
                | Status::Timeout
                | Status::UartError
                | Status::BadLength
        )
    }
}

/// The CRC-32 of a frame: of its header after the magic (`code`, `seq`,
/// the payload's length) and its payload.
pub fn frame_crc(code: u8, seq: u8, payload: &[u8]) -> u32 {
    let mut crc = Crc32::new();
    crc.update(&[code, seq]);
    crc.update(&(payload.len() as u16).to_le_bytes());
    crc.update(payload);
    crc.value()
}

/// Bytes of an input sample of `features` values for a model of `kind`.
pub fn input_len(kind: Kind, features: usize) -> usize {
    match kind {
        Kind::Int8 => features,
        Kind::F32 => 4 * features,
    }
}

/// Bytes of an `INFER_*` answer for a model of `kind`: the class (u16),
/// then the logits.
pub fn prediction_len(kind: Kind, classes: usize) -> usize {
    2 + input_len(kind, classes)
}

/// `INFO`'s answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Info {
    /// Protocol version ([`VERSION`]).
    pub version: u8,
    /// The device embeds an f32 model.
    pub has_f32: bool,
    /// The device embeds an int8 model.
    pub has_int8: bool,
    /// The device answers the adaptation commands (int8 model).
    pub has_adapt: bool,
    /// Input values per sample (`F`).
    pub features: u16,
    /// Classes (`C`).
    pub classes: u16,
    /// Largest request payload the device accepts.
    pub max_payload: u16,
    /// The `crc32` header field of the embedded f32 model file (0 if none).
    pub f32_model_crc: u32,
    /// The `crc32` header field of the embedded int8 model file (0 if none).
    pub int8_model_crc: u32,
    /// The int8 model's input scale (0 if none).
    pub input_scale: f32,
    /// The int8 model's input zero point (0 if none).
    pub input_zero_point: i32,
}

/// `INFO`'s byte 1: bit 0 an f32 model is embedded, bit 1 an int8 model,
/// bit 2 the adaptation commands are there.
const HAS_F32: u8 = 1;
const HAS_INT8: u8 = 2;
const HAS_ADAPT: u8 = 4;

impl Info {
    /// The payload (docs/SERIAL.md, "INFO payload").
    pub fn encode(&self) -> [u8; INFO_LEN] {
        let mut p = [0u8; INFO_LEN];
        p[0] = self.version;
        p[1] = if self.has_f32 { HAS_F32 } else { 0 }
            | if self.has_int8 { HAS_INT8 } else { 0 }
            | if self.has_adapt { HAS_ADAPT } else { 0 };
        p[2..4].copy_from_slice(&self.features.to_le_bytes());
        p[4..6].copy_from_slice(&self.classes.to_le_bytes());
        p[6..8].copy_from_slice(&self.max_payload.to_le_bytes());
        p[8..12].copy_from_slice(&self.f32_model_crc.to_le_bytes());
        p[12..16].copy_from_slice(&self.int8_model_crc.to_le_bytes());
        p[16..20].copy_from_slice(&self.input_scale.to_bits().to_le_bytes());
        p[20..24].copy_from_slice(&self.input_zero_point.to_le_bytes());
        p
    }

    /// Parse a payload; `None` unless it is [`INFO_LEN`] bytes.
    pub fn decode(p: &[u8]) -> Option<Info> {
        let p: &[u8; INFO_LEN] = p.try_into().ok()?;
        let u16_at = |at: usize| u16::from_le_bytes([p[at], p[at + 1]]);
        let u32_at = |at: usize| u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
        Some(Info {
            version: p[0],
            has_f32: p[1] & HAS_F32 != 0,
            has_int8: p[1] & HAS_INT8 != 0,
            has_adapt: p[1] & HAS_ADAPT != 0,
            features: u16_at(2),
            classes: u16_at(4),
            max_payload: u16_at(6),
            f32_model_crc: u32_at(8),
            int8_model_crc: u32_at(12),
            input_scale: f32::from_bits(u32_at(16)),
            input_zero_point: u32_at(20) as i32,
        })
    }

    /// Whether the device embeds a model of `kind`.
    pub fn has(&self, kind: Kind) -> bool {
        match kind {
            Kind::F32 => self.has_f32,
            Kind::Int8 => self.has_int8,
        }
    }
}

/// Little-endian fields of a fixed payload.
fn u32_at(p: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(s) = p.get(at..at + 4) {
        b.copy_from_slice(s);
    }
    u32::from_le_bytes(b)
}

fn u16_at(p: &[u8], at: usize) -> u16 {
    let mut b = [0u8; 2];
    if let Some(s) = p.get(at..at + 2) {
        b.copy_from_slice(s);
    }
    u16::from_le_bytes(b)
}

/// `ADAPT_BEGIN`'s payload (12 bytes): what the session does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptBegin {
    /// Re-estimate BN statistics (then send `UNLABELED` samples and
    /// `FINISH_PASS` per pass).
    pub restat: bool,
    /// Train the tail (then send `LABELED` samples).
    pub tail: bool,
    /// Also train γ, β of the BN layer feeding the dense layer.
    pub train_bn: bool,
    /// Re-estimate only the first this many BN layers (0: all).
    pub restat_layers: u8,
    /// Tail learning rate.
    pub lr: f32,
    /// Tail momentum.
    pub momentum: f32,
}

impl AdaptBegin {
    /// Bytes of the payload.
    pub const LEN: usize = 12;

    /// The payload.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut p = [0u8; Self::LEN];
        p[0] = u8::from(self.restat) | u8::from(self.tail) << 1 | u8::from(self.train_bn) << 2;
        p[1] = self.restat_layers;
        p[4..8].copy_from_slice(&self.lr.to_bits().to_le_bytes());
        p[8..12].copy_from_slice(&self.momentum.to_bits().to_le_bytes());
        p
    }

    /// Parse; `None` unless [`Self::LEN`] bytes with reserved bits 0.
    pub fn decode(p: &[u8]) -> Option<Self> {
        if p.len() != Self::LEN || p[0] & !7 != 0 || p[2] != 0 || p[3] != 0 {
            return None;
        }
        Some(AdaptBegin {
            restat: p[0] & 1 != 0,
            tail: p[0] & 2 != 0,
            train_bn: p[0] & 4 != 0,
            restat_layers: p[1],
            lr: f32::from_bits(u32_at(p, 4)),
            momentum: f32::from_bits(u32_at(p, 8)),
        })
    }
}

/// `ADAPT_BEGIN`'s answer (12 bytes): the RAM the session uses and the
/// re-estimation passes to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptPlan {
    /// Bytes of the overlay.
    pub overlay: u32,
    /// Bytes of the workspace (re-estimation and tail share it).
    pub workspace: u32,
    /// Re-estimation passes (one per BN layer re-estimated; 0 without).
    pub passes: u16,
    /// Classes a `LABELED` class must be below.
    pub classes: u16,
}

impl AdaptPlan {
    /// Bytes of the payload.
    pub const LEN: usize = 12;

    /// The payload.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut p = [0u8; Self::LEN];
        p[0..4].copy_from_slice(&self.overlay.to_le_bytes());
        p[4..8].copy_from_slice(&self.workspace.to_le_bytes());
        p[8..10].copy_from_slice(&self.passes.to_le_bytes());
        p[10..12].copy_from_slice(&self.classes.to_le_bytes());
        p
    }

    /// Parse; `None` unless [`Self::LEN`] bytes.
    pub fn decode(p: &[u8]) -> Option<Self> {
        (p.len() == Self::LEN).then(|| AdaptPlan {
            overlay: u32_at(p, 0),
            workspace: u32_at(p, 4),
            passes: u16_at(p, 8),
            classes: u16_at(p, 10),
        })
    }
}

/// `UNLABELED`'s answer (4 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassState {
    /// The current pass (0-based).
    pub pass: u8,
    /// Passes in all.
    pub passes: u8,
    /// Samples observed in this pass.
    pub samples: u16,
}

impl PassState {
    /// Bytes of the payload.
    pub const LEN: usize = 4;

    /// The payload.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let s = self.samples.to_le_bytes();
        [self.pass, self.passes, s[0], s[1]]
    }

    /// Parse; `None` unless [`Self::LEN`] bytes.
    pub fn decode(p: &[u8]) -> Option<Self> {
        (p.len() == Self::LEN).then(|| PassState {
            pass: p[0],
            passes: p[1],
            samples: u16_at(p, 2),
        })
    }
}

/// `FINISH_PASS`'s answer (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassDone {
    /// The layer refolded.
    pub layer: u16,
    /// Passes still to run (0: re-estimation is complete).
    pub remaining: u16,
    /// Values per channel the statistics came from.
    pub values: u32,
    /// Samples of the pass.
    pub samples: u32,
}

impl PassDone {
    /// Bytes of the payload.
    pub const LEN: usize = 12;

    /// The payload.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut p = [0u8; Self::LEN];
        p[0..2].copy_from_slice(&self.layer.to_le_bytes());
        p[2..4].copy_from_slice(&self.remaining.to_le_bytes());
        p[4..8].copy_from_slice(&self.values.to_le_bytes());
        p[8..12].copy_from_slice(&self.samples.to_le_bytes());
        p
    }

    /// Parse; `None` unless [`Self::LEN`] bytes.
    pub fn decode(p: &[u8]) -> Option<Self> {
        (p.len() == Self::LEN).then(|| PassDone {
            layer: u16_at(p, 0),
            remaining: u16_at(p, 2),
            values: u32_at(p, 4),
            samples: u32_at(p, 8),
        })
    }
}

/// `COMMIT`'s answer (12 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The store's sequence number of the saved overlay.
    pub seq: u32,
    /// Bytes of the overlay saved.
    pub bytes: u32,
    /// CRC-32 of the overlay's bytes (equal to the host's for the same
    /// adaptation: the parameters are bit-identical).
    pub crc: u32,
}

impl Committed {
    /// Bytes of the payload.
    pub const LEN: usize = 12;

    /// The payload.
    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut p = [0u8; Self::LEN];
        p[0..4].copy_from_slice(&self.seq.to_le_bytes());
        p[4..8].copy_from_slice(&self.bytes.to_le_bytes());
        p[8..12].copy_from_slice(&self.crc.to_le_bytes());
        p
    }

    /// Parse; `None` unless [`Self::LEN`] bytes.
    pub fn decode(p: &[u8]) -> Option<Self> {
        (p.len() == Self::LEN).then(|| Committed {
            seq: u32_at(p, 0),
            bytes: u32_at(p, 4),
            crc: u32_at(p, 8),
        })
    }
}

/// `ADAPT_ERROR` code of a flash failure while `COMMIT` saves the overlay
/// or `RESET` erases it (`adapt::store::StoreError`); the codes below it
/// are `AdaptError::code`'s.
pub const FLASH_ERROR: u8 = 0x80;

/// `ADAPT_ERROR` code of an `ADAPT_BEGIN` whose configuration is invalid
/// (reserved bits set, neither re-estimation nor the tail asked for, γ/β
/// training without the tail, a learning rate or momentum out of range):
/// the code of `AdaptError::Math`, a precondition.
pub const BAD_CONFIG: u8 = 2;

/// `ADAPT_ERROR` code of an adaptation command out of phase
/// (`AdaptError::Phase`'s).
pub const OUT_OF_PHASE: u8 = 14;

/// The layout of the overlay a `serve` device adapts into, and the buffers
/// it needs, fixed for a model so that a host computing the same
/// adaptation lays its overlay out alike (the overlay's bytes, and so its
/// CRC, then match the device's bit for bit).
#[cfg(feature = "adapt")]
pub mod adapt {
    use crate::adapt::overlay::{Overlay, Scope};
    use crate::adapt::restat::Restat;
    use crate::adapt::tail::{Tail, TailConfig};
    use crate::adapt::AdaptError;
    use crate::model::Model;

    /// The overlay's scope: every part the model allows, re-estimation if it
    /// has BN records, the tail if its last layer is a dense layer tail
    /// training takes. Whatever a session does, the overlay has this
    /// layout.
    pub fn overlay_scope(model: &Model<'_>) -> Scope {
        Scope {
            restat: Restat::words_needed(model).is_ok(),
            tail: tail_words(model, false).is_ok(),
        }
    }

    /// Tail training's workspace (f32 words), with or without γ, β.
    pub fn tail_words(model: &Model<'_>, train_bn: bool) -> Result<usize, AdaptError> {
        let cfg = TailConfig {
            train_bn,
            ..TailConfig::default()
        };
        Tail::words_needed(model, &cfg)
    }

    /// `(overlay words, workspace f32 words)` a `serve` device needs for
    /// `model`: the overlay of [`overlay_scope`]; a workspace for the
    /// largest of re-estimation, tail training (with γ, β when the model
    /// allows it) and the overlay's bytes (the buffer a saved overlay is
    /// loaded through at start). `(0, 0)` for a model nothing can adapt.
    pub fn words(model: &Model<'_>) -> (usize, usize) {
        let scope = overlay_scope(model);
        if !scope.restat && !scope.tail {
            return (0, 0);
        }
        let overlay = Overlay::words_needed(model, scope).unwrap_or(0);
        let restat = Restat::words_needed(model).unwrap_or(0);
        let tail = tail_words(model, true)
            .or_else(|_| tail_words(model, false))
            .unwrap_or(0);
        (overlay, overlay.max(restat).max(tail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_round_trips_and_rejects_wrong_lengths() {
        let info = Info {
            version: VERSION,
            has_f32: false,
            has_int8: true,
            features: 64,
            classes: 10,
            max_payload: 64,
            f32_model_crc: 0,
            int8_model_crc: 0xDEAD_BEEF,
            input_scale: 0.0625,
            input_zero_point: -128,
            has_adapt: true,
        };
        assert_eq!(Info::decode(&info.encode()), Some(info));
        assert_eq!(Info::decode(&info.encode()[..23]), None);
    }

    #[test]
    fn codes_round_trip() {
        for b in 0..=255u8 {
            if let Some(c) = Command::from_byte(b) {
                assert_eq!(c as u8, b);
            }
            if let Some(s) = Status::from_byte(b) {
                assert_eq!(s as u8, b);
            }
        }
        assert_eq!(Status::from_byte(0x09), None);
        assert_eq!(Command::from_byte(0x0B), None);
    }

    #[test]
    fn adaptation_payloads_round_trip_and_reject_wrong_lengths() {
        let b = AdaptBegin {
            restat: true,
            tail: true,
            train_bn: false,
            restat_layers: 2,
            lr: 0.01,
            momentum: 0.9,
        };
        assert_eq!(AdaptBegin::decode(&b.encode()), Some(b));
        assert_eq!(AdaptBegin::decode(&b.encode()[..11]), None);
        let mut bad = b.encode();
        bad[0] |= 8;
        assert_eq!(AdaptBegin::decode(&bad), None);
        let plan = AdaptPlan {
            overlay: 8608,
            workspace: 2800,
            passes: 3,
            classes: 10,
        };
        assert_eq!(AdaptPlan::decode(&plan.encode()), Some(plan));
        let st = PassState {
            pass: 1,
            passes: 3,
            samples: 64,
        };
        assert_eq!(PassState::decode(&st.encode()), Some(st));
        let done = PassDone {
            layer: 2,
            remaining: 1,
            values: 64,
            samples: 64,
        };
        assert_eq!(PassDone::decode(&done.encode()), Some(done));
        let c = Committed {
            seq: 7,
            bytes: 8608,
            crc: 0x1234_5678,
        };
        assert_eq!(Committed::decode(&c.encode()), Some(c));
        assert_eq!(Committed::decode(&[0; 11]), None);
    }

    #[cfg(feature = "adapt")]
    #[test]
    fn adaptation_error_codes_are_core_s_and_the_flash_code_is_apart() {
        use crate::adapt::AdaptError;
        assert_eq!(AdaptError::Phase.code(), OUT_OF_PHASE);
        let math = AdaptError::Math(crate::Error::InvalidParam(crate::Param::LearningRate));
        assert_eq!(math.code(), BAD_CONFIG);
        let highest = [
            AdaptError::OverlayVersion { found: 1 },
            AdaptError::BadSample,
            AdaptError::Phase,
            AdaptError::NoBn,
            AdaptError::BufferTooSmall {
                needed: 1,
                actual: 0,
            },
        ]
        .iter()
        .map(AdaptError::code)
        .max()
        .unwrap();
        assert!(FLASH_ERROR > highest);
    }

    #[test]
    fn frame_crc_is_zlib_crc_of_the_bytes_after_the_magic() {
        let payload = [1u8, 2, 3];
        let frame = [0x02, 7, 3, 0, 1, 2, 3];
        assert_eq!(frame_crc(0x02, 7, &payload), crate::model::crc32(&frame));
    }
}
