//! [`RamFlash`]: a NOR flash in RAM with real NOR semantics, for tests and
//! for firmware under QEMU (whose boards have no writable flash model).

use core::fmt;

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, MultiwriteNorFlash, NorFlash,
    NorFlashErrorKind, ReadNorFlash,
};

/// `N` bytes of RAM behaving as NOR flash: erase sets whole pages of `E`
/// bytes to `0xFF`; a write of `W`-byte words ANDs the bytes into the array
/// (it can only clear bits, never set them); reads are in `R`-byte units.
/// Offsets and lengths must be multiples of the unit (`NotAligned`) and lie
/// within the `N` bytes (`OutOfBounds`); a refused operation changes
/// nothing. A new one is erased (all `0xFF`).
///
/// Defaults: 4-byte words, 4 KiB pages, byte reads, as many MCUs' internal
/// flash and most SPI NOR parts. `N` must be a multiple of `E`, and `E` of
/// `W` and `R` (checked at compile time, when [`RamFlash::new`] is used).
/// [`RamFlash::new`] is `const`: a large flash can live in a `static`
/// instead of on the stack.
///
/// Because writes AND, writing a word twice is allowed
/// ([`MultiwriteNorFlash`]).
#[derive(Clone, PartialEq, Eq)]
pub struct RamFlash<const N: usize, const W: usize = 4, const E: usize = 4096, const R: usize = 1> {
    bytes: [u8; N],
}

impl<const N: usize, const W: usize, const E: usize, const R: usize> RamFlash<N, W, E, R> {
    const GEOMETRY: () = assert!(
        W > 0 && E > 0 && R > 0 && E % W == 0 && E % R == 0 && N % E == 0 && N <= u32::MAX as usize,
        "RamFlash: N must be a multiple of E, E of W and R, all nonzero, N < 4 GiB"
    );

    /// An erased flash (every byte `0xFF`).
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::GEOMETRY;
        RamFlash { bytes: [0xFF; N] }
    }

    /// The contents.
    pub fn as_bytes(&self) -> &[u8; N] {
        &self.bytes
    }

    /// The contents, writable without flash semantics: to preload an image
    /// or to inject corruption in a test.
    pub fn as_bytes_mut(&mut self) -> &mut [u8; N] {
        &mut self.bytes
    }
}

impl<const N: usize, const W: usize, const E: usize, const R: usize> Default
    for RamFlash<N, W, E, R>
{
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize, const W: usize, const E: usize, const R: usize> fmt::Debug
    for RamFlash<N, W, E, R>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RamFlash")
            .field("capacity", &N)
            .field("write_size", &W)
            .field("erase_size", &E)
            .field("read_size", &R)
            .finish_non_exhaustive()
    }
}

impl<const N: usize, const W: usize, const E: usize, const R: usize> ErrorType
    for RamFlash<N, W, E, R>
{
    type Error = NorFlashErrorKind;
}

impl<const N: usize, const W: usize, const E: usize, const R: usize> ReadNorFlash
    for RamFlash<N, W, E, R>
{
    const READ_SIZE: usize = R;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, bytes.len())?;
        let at = offset as usize;
        let src = self
            .bytes
            .get(at..at + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        N
    }
}

impl<const N: usize, const W: usize, const E: usize, const R: usize> NorFlash
    for RamFlash<N, W, E, R>
{
    const WRITE_SIZE: usize = W;
    const ERASE_SIZE: usize = E;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to)?;
        self.bytes
            .get_mut(from as usize..to as usize)
            .ok_or(NorFlashErrorKind::OutOfBounds)?
            .fill(0xFF);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len())?;
        let at = offset as usize;
        let dst = self
            .bytes
            .get_mut(at..at + bytes.len())
            .ok_or(NorFlashErrorKind::OutOfBounds)?;
        for (d, s) in dst.iter_mut().zip(bytes) {
            *d &= *s;
        }
        Ok(())
    }
}

impl<const N: usize, const W: usize, const E: usize, const R: usize> MultiwriteNorFlash
    for RamFlash<N, W, E, R>
{
}
