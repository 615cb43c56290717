//! A power-cut-safe A/B store of one byte blob (the adapted parameters, the
//! "overlay") in a NOR flash region.
//!
//! ```
//! use normcore::adapt::store::{Loaded, RamFlash, Store};
//!
//! // Two 4 KiB pages of RAM behaving as NOR flash; any `NorFlash` will do.
//! let mut flash = RamFlash::<8192>::new();
//! let mut store = Store::new(&mut flash, 0, 8192)?;
//! let seq = store.save(b"adapted parameters")?;
//! let mut buf = [0u8; 64];
//! assert_eq!(store.load(&mut buf)?, Some(Loaded { seq, len: 18 }));
//! assert_eq!(&buf[..18], b"adapted parameters");
//! # Ok::<(), normcore::adapt::store::StoreError>(())
//! ```
//!
//! # Design
//!
//! A [`Store`] owns a region `[base, base + len)` of any `embedded-storage`
//! 0.3 [`NorFlash`]. The region is cut into two equal **slots**, A (lower
//! addresses) then B, each a whole number of erase pages (`ERASE_SIZE`); an
//! odd last page of the region is left unused. A slot holds a header and the
//! payload:
//!
//! | slot offset          | bytes | field                                                     |
//! |----------------------|-------|-----------------------------------------------------------|
//! | 0                    | 4     | magic `"NCAS"` ([`MAGIC`])                                 |
//! | 4                    | 2     | format version, `u16` LE ([`VERSION`] = 1)                 |
//! | 6                    | 2     | reserved, 0                                               |
//! | 8                    | 4     | sequence number, `u32` LE                                 |
//! | 12                   | 4     | payload length in bytes, `u32` LE                         |
//! | 16                   | 4     | CRC-32 of the payload, `u32` LE                           |
//! | 20                   | 4     | CRC-32 of bytes 0..20 (the header CRC), `u32` LE          |
//! | 24                   | ..    | `0xFF` up to `header_span`                                |
//! | `header_span`        | len   | the payload                                               |
//! | `header_span` + len  | ..    | `0xFF` (erased) to the end of the slot                    |
//!
//! `header_span` is [`HEADER_LEN`] (24) rounded up to `max(READ_SIZE,
//! WRITE_SIZE)` of the flash, so that the header and the payload each start
//! on a read and a write unit. The CRC is the crate's CRC-32 (IEEE,
//! [`crate::model::crc32`]). [`RawHeader`] is the one definition of the
//! 24 bytes.
//!
//! A slot is **valid** when its header has the magic, a good header CRC,
//! version 1, reserved 0, a length that fits the slot, and the payload has
//! its CRC. An erased slot (all `0xFF`) is never valid: its magic is wrong.
//!
//! # Saving, and why a power cut cannot lose the previous parameters
//!
//! [`Store::save`] finds the newest valid slot and writes the *other* one:
//!
//! 1. erase the slot's pages (one `erase` call over the slot, lowest page,
//!    the one holding the header, first);
//! 2. write the payload, padded with `0xFF` to `WRITE_SIZE`;
//! 3. write the header **last**;
//! 4. read the slot back and check it ([`StoreError::VerifyFailed`]).
//!
//! The newest valid slot is never written, erased or relied on to change,
//! so whatever a cut leaves in the slot being written — a half-erased page,
//! a partial payload, a partial header — the newest valid slot still loads.
//! The new payload becomes the newest only when its header is complete and
//! its CRC matches, which happens with the header's last word. Each word is
//! written once per erase, as the `NorFlash` contract requires.
//!
//! [`Store::erase_all`] erases the older slot first, then the newest: a cut
//! leaves either nothing valid or the newest parameters, never the older
//! ones back.
//!
//! # Sequence numbers
//!
//! The first save writes sequence number [`FIRST_SEQ`] (1); each save writes
//! the newest valid one plus 1, wrapping from `u32::MAX` to 0. `a` is newer
//! than `b` when `a.wrapping_sub(b)`, read as an `i32`, is positive
//! ([`is_newer`]): serial-number arithmetic (RFC 1982). Two valid slots
//! always differ by exactly 1 (a save writes newest + 1 over the older
//! slot), so the comparison is never ambiguous; if both slots held equal
//! numbers (only hand-made flash can) slot A counts as the newer.
//!
//! # Corruption
//!
//! A slot that fails a check is skipped by [`Store::load`] and overwritten
//! by the next [`Store::save`]: after a cut mid-save the slot being written
//! fails its checks by design, so that cannot be an error. If neither slot
//! is valid, `load` returns `Ok(None)`, the same as a blank region. To know
//! why a slot is not valid, [`Store::verify`] returns the specific
//! [`SlotFault`] (bad magic, header CRC, payload CRC, ...) as
//! [`StoreError::Slot`].
//!
//! # Cost
//!
//! `load` and `save` read both slots' headers and payloads once to check
//! them (the CRCs), then `load` reads the chosen payload again into the
//! caller's buffer, and `save` reads back what it wrote. Stack: two
//! buffers of [`MAX_UNIT`] bytes at most. No allocation.

use core::fmt;
use core::mem::{offset_of, size_of};

use bytemuck::{Pod, Zeroable};
use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind};

use crate::model::{crc32, Crc32};

mod ram;
#[cfg(test)]
mod tests;

pub use ram::RamFlash;

/// A slot header's first four bytes.
pub const MAGIC: [u8; 4] = *b"NCAS";
/// The layout version this crate reads and writes.
pub const VERSION: u16 = 1;
/// Bytes of the header record ([`RawHeader`]).
pub const HEADER_LEN: usize = size_of::<RawHeader>();
/// The sequence number of the first save to a store with no valid slot.
pub const FIRST_SEQ: u32 = 1;
/// The largest `READ_SIZE` and `WRITE_SIZE` a store accepts (both must be
/// powers of two): the size of its stack buffer.
pub const MAX_UNIT: usize = 256;

/// The header at the start of a slot, the one definition of its layout:
/// `#[repr(C)]` with naturally aligned fields, so no padding, and the field
/// order is the byte order of the table in the module doc. Multi-byte fields
/// are little-endian on flash ([`RawHeader::to_bytes`], [`RawHeader::from_bytes`]
/// convert); the struct holds native values.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Pod, Zeroable)]
pub struct RawHeader {
    /// [`MAGIC`].
    pub magic: [u8; 4],
    /// [`VERSION`].
    pub version: u16,
    /// 0.
    pub reserved: u16,
    /// Sequence number of the save ([`is_newer`]).
    pub seq: u32,
    /// Payload length in bytes.
    pub len: u32,
    /// CRC-32 of the payload.
    pub payload_crc: u32,
    /// CRC-32 of the header's bytes before this field ([`HEADER_CRC_AT`]).
    pub header_crc: u32,
}

/// Offset of the header CRC: it covers bytes `0..HEADER_CRC_AT`.
pub const HEADER_CRC_AT: usize = offset_of!(RawHeader, header_crc);

const _: () = assert!(HEADER_LEN == 24);
const _: () = assert!(HEADER_CRC_AT == HEADER_LEN - 4);
const _: () = assert!(offset_of!(RawHeader, version) == 4);
const _: () = assert!(offset_of!(RawHeader, seq) == 8);
const _: () = assert!(offset_of!(RawHeader, len) == 12);
const _: () = assert!(offset_of!(RawHeader, payload_crc) == 16);

impl RawHeader {
    /// The header of a save: magic, version, `seq`, `payload`'s length
    /// (which the caller has checked fits a `u32`) and CRC, and the header
    /// CRC.
    fn new(seq: u32, len: u32, payload_crc: u32) -> RawHeader {
        let mut h = RawHeader {
            magic: MAGIC,
            version: VERSION,
            reserved: 0,
            seq,
            len,
            payload_crc,
            header_crc: 0,
        };
        h.header_crc = crc32(&h.to_bytes()[..HEADER_CRC_AT]);
        h
    }

    /// The 24 bytes on flash (little-endian fields).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let le = RawHeader {
            magic: self.magic,
            version: self.version.to_le(),
            reserved: self.reserved.to_le(),
            seq: self.seq.to_le(),
            len: self.len.to_le(),
            payload_crc: self.payload_crc.to_le(),
            header_crc: self.header_crc.to_le(),
        };
        let mut out = [0; HEADER_LEN];
        out.copy_from_slice(bytemuck::bytes_of(&le));
        out
    }

    /// The header in 24 bytes from flash (no checks).
    pub fn from_bytes(bytes: &[u8; HEADER_LEN]) -> RawHeader {
        let le: RawHeader = bytemuck::pod_read_unaligned(bytes);
        RawHeader {
            magic: le.magic,
            version: u16::from_le(le.version),
            reserved: u16::from_le(le.reserved),
            seq: u32::from_le(le.seq),
            len: u32::from_le(le.len),
            payload_crc: u32::from_le(le.payload_crc),
            header_crc: u32::from_le(le.header_crc),
        }
    }
}

/// Whether sequence number `a` is newer than `b`: `a.wrapping_sub(b)` read
/// as an `i32` is positive (serial-number arithmetic; `1` is newer than
/// `u32::MAX`). Numbers exactly 2³¹ apart are neither newer than the other.
pub fn is_newer(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// One of the two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Slot {
    /// The lower half of the region.
    A,
    /// The upper half of the region.
    B,
}

impl Slot {
    /// The other slot.
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

/// What [`Store::load`] (or [`Store::verify`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Loaded {
    /// The save's sequence number.
    pub seq: u32,
    /// Payload length in bytes (`load` wrote it to `buf[..len]`).
    pub len: usize,
}

/// Why a region cannot hold a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum GeometryFault {
    /// `base` or `len` is not a multiple of the flash's `ERASE_SIZE`.
    NotAligned,
    /// The region ends past the flash's capacity (or past 4 GiB).
    OutOfBounds,
    /// Fewer than two erase pages, or a slot too small for the header.
    TooSmall,
    /// `READ_SIZE` or `WRITE_SIZE` is 0, not a power of two, above
    /// [`MAX_UNIT`], or does not divide `ERASE_SIZE`.
    Unit,
}

/// Why a slot is not valid (in [`StoreError::Slot`] and
/// [`StoreError::VerifyFailed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SlotFault {
    /// The header is all `0xFF`: never written, erased, or cut before its
    /// header was written.
    Erased,
    /// The first four bytes are not [`MAGIC`].
    BadMagic,
    /// The header CRC does not match its bytes (a cut while the header was
    /// written, or corruption).
    HeaderCrc {
        /// CRC stored in the header.
        stored: u32,
        /// CRC of the header's bytes.
        computed: u32,
    },
    /// A layout version this reader does not implement.
    UnsupportedVersion(u16),
    /// The reserved field is not 0.
    Reserved,
    /// The payload length does not fit the slot (a header written by a
    /// store of another geometry).
    Length {
        /// Length the header states.
        len: u32,
        /// The most this slot holds.
        max: usize,
    },
    /// The payload's CRC does not match the header's (a cut while the
    /// payload was written, or corruption).
    PayloadCrc {
        /// CRC stored in the header.
        stored: u32,
        /// CRC of the payload's bytes.
        computed: u32,
    },
    /// Valid, but not the header just written ([`StoreError::VerifyFailed`]
    /// only).
    Differs,
}

/// Errors of the [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[non_exhaustive]
pub enum StoreError {
    /// The flash refused an operation (a read, write or erase), or the
    /// power failed during it.
    Flash(NorFlashErrorKind),
    /// The region given to [`Store::new`] cannot hold a store.
    Geometry(GeometryFault),
    /// The payload does not fit a slot.
    PayloadTooLarge {
        /// Payload bytes.
        len: usize,
        /// The most a slot holds ([`Store::capacity`]).
        max: usize,
    },
    /// The newest valid payload is longer than the caller's buffer.
    BufferTooSmall {
        /// Payload bytes.
        needed: usize,
        /// Buffer bytes.
        actual: usize,
    },
    /// A slot is not valid ([`Store::verify`]), or its payload changed
    /// between the check and the copy into the caller's buffer
    /// ([`Store::load`]).
    Slot {
        /// Which slot.
        slot: Slot,
        /// What is wrong.
        fault: SlotFault,
    },
    /// [`Store::save`] read back the slot it wrote and it is not valid, or
    /// not what was written (`fault`). The previous save is still the
    /// newest valid one.
    VerifyFailed {
        /// The slot written.
        slot: Slot,
        /// What is wrong.
        fault: SlotFault,
    },
}

impl fmt::Display for SlotFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SlotFault::Erased => f.write_str("erased (no header)"),
            SlotFault::BadMagic => f.write_str("bad magic (not \"NCAS\")"),
            SlotFault::HeaderCrc { stored, computed } => write!(
                f,
                "header CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            SlotFault::UnsupportedVersion(v) => {
                write!(
                    f,
                    "layout version {v} is not supported (this reader implements {VERSION})"
                )
            }
            SlotFault::Reserved => f.write_str("reserved header field is not 0"),
            SlotFault::Length { len, max } => {
                write!(f, "payload length {len} exceeds the slot's {max} bytes")
            }
            SlotFault::PayloadCrc { stored, computed } => write!(
                f,
                "payload CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            SlotFault::Differs => f.write_str("valid, but not the header just written"),
        }
    }
}

impl fmt::Display for GeometryFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GeometryFault::NotAligned => "region base or length is not a multiple of the erase size",
            GeometryFault::OutOfBounds => "region ends past the flash's capacity",
            GeometryFault::TooSmall => "region too small for two slots of a header each",
            GeometryFault::Unit => {
                "flash read or write size is not a power of two of at most 256 dividing the erase size"
            }
        })
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            StoreError::Flash(kind) => write!(f, "flash error: {kind}"),
            StoreError::Geometry(g) => write!(f, "bad store region: {g}"),
            StoreError::PayloadTooLarge { len, max } => {
                write!(f, "payload of {len} bytes exceeds a slot's {max}")
            }
            StoreError::BufferTooSmall { needed, actual } => write!(
                f,
                "buffer of {actual} bytes is smaller than the stored {needed}-byte payload"
            ),
            StoreError::Slot { slot, fault } => write!(f, "slot {slot:?}: {fault}"),
            StoreError::VerifyFailed { slot, fault } => {
                write!(f, "slot {slot:?} read back wrong after saving: {fault}")
            }
        }
    }
}

impl core::error::Error for StoreError {}

fn flash_err<E: NorFlashError>(e: E) -> StoreError {
    StoreError::Flash(e.kind())
}

/// A scratch buffer of [`MAX_UNIT`] bytes, aligned for flash drivers that
/// copy words from it.
#[repr(C, align(8))]
struct Scratch([u8; MAX_UNIT]);

/// An A/B store of one payload in the region `[base, base + len)` of a
/// [`NorFlash`] (the module doc: layout and guarantees).
///
/// `F` may be `&mut` a flash (`embedded-storage` implements the traits for
/// it) to keep the flash when the store is dropped or refused.
#[derive(Debug)]
pub struct Store<F> {
    flash: F,
    base: u32,
    slot_len: u32,
    header_span: u32,
}

impl<F: NorFlash> Store<F> {
    /// A store over `[base, base + len)` of `flash` (byte offsets from the
    /// flash's start, as `NorFlash` takes them). Reads and writes nothing.
    ///
    /// Errors: [`StoreError::Geometry`] — `base` or `len` not a multiple of
    /// `F::ERASE_SIZE` (`NotAligned`), the region past `flash.capacity()`
    /// (`OutOfBounds`), fewer than two pages or a slot too small for the
    /// header (`TooSmall`), or an unsupported `READ_SIZE`/`WRITE_SIZE`
    /// (`Unit`).
    pub fn new(flash: F, base: u32, len: u32) -> Result<Self, StoreError> {
        let (r, w, e) = (F::READ_SIZE, F::WRITE_SIZE, F::ERASE_SIZE);
        let unit_ok = |u: usize| u != 0 && u.is_power_of_two() && u <= MAX_UNIT;
        if !unit_ok(r) || !unit_ok(w) || e == 0 || e % r != 0 || e % w != 0 {
            return Err(StoreError::Geometry(GeometryFault::Unit));
        }
        if base as usize % e != 0 || len as usize % e != 0 {
            return Err(StoreError::Geometry(GeometryFault::NotAligned));
        }
        let end = base
            .checked_add(len)
            .ok_or(StoreError::Geometry(GeometryFault::OutOfBounds))?;
        if end as usize > flash.capacity() {
            return Err(StoreError::Geometry(GeometryFault::OutOfBounds));
        }
        let pages = len as usize / e;
        // `e` divides `len`, a `u32`, so the slot length fits too.
        let slot_len = (pages / 2 * e) as u32;
        let unit = r.max(w);
        let header_span = HEADER_LEN.div_ceil(unit) * unit;
        if pages < 2 || (slot_len as usize) < header_span {
            return Err(StoreError::Geometry(GeometryFault::TooSmall));
        }
        Ok(Store {
            flash,
            base,
            slot_len,
            header_span: header_span as u32,
        })
    }

    /// The flash, back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    /// The most payload bytes a slot holds: the slot (whole pages, half the
    /// region's) less the header's span.
    pub fn capacity(&self) -> usize {
        (self.slot_len - self.header_span) as usize
    }

    /// Bytes of one slot (a whole number of erase pages).
    pub fn slot_len(&self) -> usize {
        self.slot_len as usize
    }

    /// The offset of `slot`'s first byte in the flash.
    pub fn slot_offset(&self, slot: Slot) -> u32 {
        match slot {
            Slot::A => self.base,
            Slot::B => self.base + self.slot_len,
        }
    }

    /// Offset of the payload in a slot: [`HEADER_LEN`] rounded up to
    /// `max(READ_SIZE, WRITE_SIZE)`.
    pub fn header_span(&self) -> usize {
        self.header_span as usize
    }

    /// Read `len` bytes at `at` (both within a slot; `at` a multiple of
    /// `READ_SIZE`) in chunks of at most [`MAX_UNIT`], giving each to `f`.
    /// Reads whole `READ_SIZE` units (the slot's length is a multiple of
    /// them, so never past it); `f` sees only the `len` bytes.
    fn read_chunks(
        &mut self,
        mut at: u32,
        len: usize,
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        let mut scratch = Scratch([0; MAX_UNIT]);
        let mut left = len;
        while left > 0 {
            let take = left.min(MAX_UNIT);
            let padded = take.div_ceil(F::READ_SIZE) * F::READ_SIZE;
            let chunk = &mut scratch.0[..padded];
            self.flash.read(at, chunk).map_err(flash_err)?;
            f(&chunk[..take]);
            at += padded as u32;
            left -= take;
        }
        Ok(())
    }

    /// The header of `slot`, checked, with the payload's CRC checked too.
    fn check(&mut self, slot: Slot) -> Result<Result<RawHeader, SlotFault>, StoreError> {
        let at = self.slot_offset(slot);
        let mut bytes = [0u8; HEADER_LEN];
        self.read_chunks(at, HEADER_LEN, |c| bytes.copy_from_slice(c))?;
        if bytes.iter().all(|&b| b == 0xFF) {
            return Ok(Err(SlotFault::Erased));
        }
        let h = RawHeader::from_bytes(&bytes);
        if h.magic != MAGIC {
            return Ok(Err(SlotFault::BadMagic));
        }
        let computed = crc32(&bytes[..HEADER_CRC_AT]);
        if computed != h.header_crc {
            return Ok(Err(SlotFault::HeaderCrc {
                stored: h.header_crc,
                computed,
            }));
        }
        if h.version != VERSION {
            return Ok(Err(SlotFault::UnsupportedVersion(h.version)));
        }
        if h.reserved != 0 {
            return Ok(Err(SlotFault::Reserved));
        }
        let max = self.capacity();
        if h.len as usize > max {
            return Ok(Err(SlotFault::Length { len: h.len, max }));
        }
        let mut crc = Crc32::new();
        self.read_chunks(at + self.header_span, h.len as usize, |c| crc.update(c))?;
        let computed = crc.value();
        if computed != h.payload_crc {
            return Ok(Err(SlotFault::PayloadCrc {
                stored: h.payload_crc,
                computed,
            }));
        }
        Ok(Ok(h))
    }

    /// Check `slot` (header and payload CRC) without copying its payload.
    ///
    /// Errors: [`StoreError::Slot`] with the reason the slot is not valid
    /// ([`SlotFault::Erased`] for a blank slot); [`StoreError::Flash`].
    pub fn verify(&mut self, slot: Slot) -> Result<Loaded, StoreError> {
        match self.check(slot)? {
            Ok(h) => Ok(Loaded {
                seq: h.seq,
                len: h.len as usize,
            }),
            Err(fault) => Err(StoreError::Slot { slot, fault }),
        }
    }

    /// The newest valid slot and its header, if any.
    fn newest(&mut self) -> Result<Option<(Slot, RawHeader)>, StoreError> {
        let a = self.check(Slot::A)?.ok();
        let b = self.check(Slot::B)?.ok();
        Ok(match (a, b) {
            (Some(a), Some(b)) if is_newer(b.seq, a.seq) => Some((Slot::B, b)),
            (Some(a), _) => Some((Slot::A, a)),
            (None, Some(b)) => Some((Slot::B, b)),
            (None, None) => None,
        })
    }

    /// Copy the newest valid payload into `buf[..len]`.
    ///
    /// `Ok(None)` when neither slot is valid (a blank region, or only a
    /// slot a cut or corruption broke; [`Store::verify`] says why); `buf` is
    /// then untouched. Otherwise `Ok(Some(Loaded { seq, len }))` with the
    /// payload in `buf[..len]`; the rest of `buf` is untouched.
    ///
    /// Errors: [`StoreError::BufferTooSmall`] when the newest valid payload
    /// is longer than `buf` (`buf` untouched; there is no fallback to the
    /// older slot); [`StoreError::Flash`]; [`StoreError::Slot`] with
    /// [`SlotFault::PayloadCrc`] if the payload read differently the second
    /// time (`buf[..len]` then holds those bytes).
    pub fn load(&mut self, buf: &mut [u8]) -> Result<Option<Loaded>, StoreError> {
        let Some((slot, h)) = self.newest()? else {
            return Ok(None);
        };
        let len = h.len as usize;
        let Some(dst) = buf.get_mut(..len) else {
            return Err(StoreError::BufferTooSmall {
                needed: len,
                actual: buf.len(),
            });
        };
        let mut filled = 0;
        let at = self.slot_offset(slot) + self.header_span;
        self.read_chunks(at, len, |c| {
            dst[filled..filled + c.len()].copy_from_slice(c);
            filled += c.len();
        })?;
        let computed = crc32(dst);
        if computed != h.payload_crc {
            return Err(StoreError::Slot {
                slot,
                fault: SlotFault::PayloadCrc {
                    stored: h.payload_crc,
                    computed,
                },
            });
        }
        Ok(Some(Loaded { seq: h.seq, len }))
    }

    /// Save `payload` as the newest; returns its sequence number (the
    /// newest valid one plus 1, wrapping; [`FIRST_SEQ`] on a store with
    /// no valid slot).
    ///
    /// Writes the slot that is not the newest valid one (A if neither is):
    /// erase, payload, header last, read back. A power cut (or any error)
    /// at any point leaves the previous newest payload loadable; the new
    /// one loads once its header is complete.
    ///
    /// Errors: [`StoreError::PayloadTooLarge`] (nothing written);
    /// [`StoreError::Flash`]; [`StoreError::VerifyFailed`].
    pub fn save(&mut self, payload: &[u8]) -> Result<u32, StoreError> {
        let newest = self.newest()?;
        let (slot, seq) = match newest {
            Some((slot, h)) => (slot.other(), h.seq.wrapping_add(1)),
            None => (Slot::A, FIRST_SEQ),
        };
        self.write_slot(slot, seq, payload)?;
        Ok(seq)
    }

    /// Erase `slot`, write `payload` then its header with `seq`, and read
    /// the slot back.
    fn write_slot(&mut self, slot: Slot, seq: u32, payload: &[u8]) -> Result<(), StoreError> {
        let max = self.capacity();
        if payload.len() > max {
            return Err(StoreError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        // `max` is below the slot's length, a `u32`.
        let len = payload.len() as u32;
        let at = self.slot_offset(slot);
        self.flash
            .erase(at, at + self.slot_len)
            .map_err(flash_err)?;

        let w = F::WRITE_SIZE;
        let mut scratch = Scratch([0xFF; MAX_UNIT]);
        let mut to = at + self.header_span;
        for chunk in payload.chunks(MAX_UNIT) {
            let padded = chunk.len().div_ceil(w) * w;
            scratch.0[..chunk.len()].copy_from_slice(chunk);
            scratch.0[chunk.len()..padded].fill(0xFF);
            self.flash
                .write(to, &scratch.0[..padded])
                .map_err(flash_err)?;
            to += padded as u32;
        }

        let header = RawHeader::new(seq, len, crc32(payload));
        let span = self.header_span as usize;
        scratch.0[..HEADER_LEN].copy_from_slice(&header.to_bytes());
        scratch.0[HEADER_LEN..span].fill(0xFF);
        self.flash
            .write(at, &scratch.0[..span])
            .map_err(flash_err)?;

        match self.check(slot)? {
            Ok(h) if h == header => Ok(()),
            Ok(_) => Err(StoreError::VerifyFailed {
                slot,
                fault: SlotFault::Differs,
            }),
            Err(fault) => Err(StoreError::VerifyFailed { slot, fault }),
        }
    }

    /// Erase both slots: the older (or invalid) one first, then the newest,
    /// so a cut leaves the newest payload or nothing valid, never the
    /// older one. Afterwards [`Store::load`] returns `Ok(None)`.
    ///
    /// Errors: [`StoreError::Flash`].
    pub fn erase_all(&mut self) -> Result<(), StoreError> {
        let first = match self.newest()? {
            Some((slot, _)) => slot.other(),
            None => Slot::A,
        };
        for slot in [first, first.other()] {
            let at = self.slot_offset(slot);
            self.flash
                .erase(at, at + self.slot_len)
                .map_err(flash_err)?;
        }
        Ok(())
    }
}
