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
pub const VERSION: u8 = 2;
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
}

impl Command {
    /// The command of code `b`, if there is one.
    pub fn from_byte(b: u8) -> Option<Command> {
        match b {
            0x01 => Some(Command::Info),
            0x02 => Some(Command::InferI8),
            0x03 => Some(Command::InferF32),
            0x04 => Some(Command::Shutdown),
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

/// `INFO`'s byte 1: bit 0 an f32 model is embedded, bit 1 an int8 model.
const HAS_F32: u8 = 1;
const HAS_INT8: u8 = 2;

impl Info {
    /// The payload (docs/SERIAL.md, "INFO payload").
    pub fn encode(&self) -> [u8; INFO_LEN] {
        let mut p = [0u8; INFO_LEN];
        p[0] = self.version;
        p[1] = if self.has_f32 { HAS_F32 } else { 0 } | if self.has_int8 { HAS_INT8 } else { 0 };
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
        assert_eq!(Status::from_byte(0x08), None);
        assert_eq!(Command::from_byte(0x05), None);
    }

    #[test]
    fn frame_crc_is_zlib_crc_of_the_bytes_after_the_magic() {
        let payload = [1u8, 2, 3];
        let frame = [0x02, 7, 3, 0, 1, 2, 3];
        assert_eq!(frame_crc(0x02, 7, &payload), crate::model::crc32(&frame));
    }
}
