//! CRC-32 digests of results, so that a host can compare a whole run's
//! outputs with its own in one number.
//!
//! The CRC is zlib's (IEEE 802.3, reflected polynomial `0xEDB88320`, init
//! and final XOR `0xFFFF_FFFF`), the one `normcore::model::crc32` computes
//! over a whole buffer; [`Crc32`] computes it over bytes fed in pieces.
//! Bit by bit: it runs outside any measured region, and a table would cost
//! 1 KiB of flash.

/// A running CRC-32.
#[derive(Debug, Clone, Copy)]
pub struct Crc32(u32);

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// The CRC of nothing yet.
    pub const fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }

    /// Feed `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u32::from(b);
            for _ in 0..8 {
                let mask = (self.0 & 1).wrapping_neg();
                self.0 = (self.0 >> 1) ^ (0xEDB8_8320 & mask);
            }
        }
    }

    /// The CRC of everything fed so far.
    pub fn value(&self) -> u32 {
        self.0 ^ 0xFFFF_FFFF
    }
}
