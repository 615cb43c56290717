//! nRF51 NVMC: a region of the chip's own flash as an `embedded-storage`
//! [`NorFlash`], what `adapt::store::Store` saves an overlay into.
//!
//! # Registers used (offsets from the base address, 0x4001_E000)
//!
//! | offset | name      | what                                                 |
//! |--------|-----------|------------------------------------------------------|
//! | 0x400  | READY     | 1 when no write or erase is in progress              |
//! | 0x504  | CONFIG    | 0 read only, 1 write enabled (WEN), 2 erase enabled (EEN) |
//! | 0x508  | ERASEPAGE | write a page's address: erase that page to 0xFF      |
//!
//! (nRF51 Series Reference Manual v3.0, "Non-Volatile Memory Controller".)
//! Flash is read like memory. With CONFIG = WEN, a 32-bit store to a
//! word-aligned flash address programs that word: NOR flash can only
//! clear bits, so the word becomes `old & new`, and a word must not be
//! written more than twice between erases (the manual's `n_WRITE`);
//! `Store` writes each word of a slot once after erasing it. With
//! CONFIG = EEN, writing a page's address to ERASEPAGE sets its 1 KiB
//! (the nRF51's `CODEPAGESIZE`) to 0xFF. The CPU stalls while the NVMC
//! works if it fetches code from flash (it does: no code runs from RAM),
//! and READY is polled after every operation all the same, as the manual
//! asks. QEMU's `microbit` models these semantics (a write ANDs into the
//! word, an erase fills the page with 0xFF; READY is always 1).

use embedded_storage::nor_flash::{
    check_erase, check_read, check_write, ErrorType, NorFlash, NorFlashErrorKind, ReadNorFlash,
};

use super::Block;

/// The NVMC's base address on every nRF51.
pub const BASE: usize = 0x4001_E000;
/// The nRF51's flash page (`FICR.CODEPAGESIZE`): the erase unit.
pub const PAGE: usize = 1024;
/// The write unit: one aligned 32-bit word.
pub const WORD: usize = 4;

const READY: usize = 0x400;
const CONFIG: usize = 0x504;
const ERASEPAGE: usize = 0x508;

const CONFIG_REN: u32 = 0;
const CONFIG_WEN: u32 = 1;
const CONFIG_EEN: u32 = 2;

/// A page-aligned region of the nRF51's flash, written and erased through
/// its NVMC; offsets are from the region's start.
#[derive(Debug)]
pub struct Nvmc {
    regs: Block,
    /// The region's first byte's address, and its length in bytes.
    start: usize,
    len: usize,
}

impl Nvmc {
    /// The region `start..start + len` of flash, through the NVMC at
    /// [`BASE`]. `None` unless `start` and `len` are whole pages
    /// ([`PAGE`]) and `len > 0`.
    ///
    /// # Safety
    /// `start..start + len` is flash of this chip that no code or data is
    /// linked into and that nothing else reads or writes while the
    /// returned value lives, and nothing else uses the NVMC.
    pub unsafe fn new(start: usize, len: usize) -> Option<Self> {
        if len == 0 || start % PAGE != 0 || len % PAGE != 0 {
            return None;
        }
        start.checked_add(len)?;
        Some(Nvmc {
            // SAFETY: BASE is the nRF51's NVMC register block.
            regs: unsafe { Block::new(BASE) },
            start,
            len,
        })
    }

    /// Wait until the NVMC is ready.
    fn wait(&self) {
        while self.regs.reg(READY).read() & 1 == 0 {}
    }

    /// Set CONFIG to `mode` once the NVMC is ready.
    fn config(&self, mode: u32) {
        self.wait();
        self.regs.reg(CONFIG).write(mode);
        self.wait();
    }
}

impl ErrorType for Nvmc {
    type Error = NorFlashErrorKind;
}

impl ReadNorFlash for Nvmc {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        check_read(self, offset, bytes.len())?;
        let at = self.start + offset as usize;
        for (i, b) in bytes.iter_mut().enumerate() {
            // SAFETY: `check_read` keeps `at + i` inside the region, which
            // `new`'s caller guarantees is readable flash. Volatile: the
            // NVMC changes these bytes behind the compiler's back.
            *b = unsafe { ((at + i) as *const u8).read_volatile() };
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.len
    }
}

impl NorFlash for Nvmc {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        check_erase(self, from, to)?;
        self.config(CONFIG_EEN);
        for page in (from as usize..to as usize).step_by(PAGE) {
            self.regs.reg(ERASEPAGE).write((self.start + page) as u32);
            self.wait();
        }
        self.config(CONFIG_REN);
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        check_write(self, offset, bytes.len())?;
        self.config(CONFIG_WEN);
        let at = self.start + offset as usize;
        for (i, w) in bytes.chunks_exact(WORD).enumerate() {
            let word = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
            // SAFETY: `check_write` keeps the word inside the region and
            // word-aligned (`start` is page-aligned); with CONFIG = WEN a
            // 32-bit store to flash programs it (module docs).
            unsafe { ((at + WORD * i) as *mut u32).write_volatile(word) };
            self.wait();
        }
        self.config(CONFIG_REN);
        Ok(())
    }
}
