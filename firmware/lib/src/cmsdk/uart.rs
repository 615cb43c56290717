//! CMSDK APB UART: a byte-wide UART with one-byte transmit and receive
//! buffers, driven here by polling (blocking), through the `embedded-io`
//! traits.
//!
//! # Register map (offsets from the base address)
//!
//! | offset | name      | bits                                                          |
//! |--------|-----------|---------------------------------------------------------------|
//! | 0x00   | DATA      | 7:0 read: received byte; write: byte to send                  |
//! | 0x04   | STATE     | 0 TX buffer full, 1 RX buffer full, 2 TX overrun, 3 RX overrun (write 1 to clear the overruns) |
//! | 0x08   | CTRL      | 0 TX enable, 1 RX enable, 2 TX IRQ, 3 RX IRQ, 4 TX overrun IRQ, 5 RX overrun IRQ, 6 high-speed test mode |
//! | 0x0C   | INTSTATUS | read: pending IRQs; write 1 to clear (INTCLEAR)               |
//! | 0x10   | BAUDDIV   | 19:0 PCLK cycles per bit; at least 16                         |
//!
//! A byte that arrives while the receive buffer is still full is lost and
//! sets the RX overrun flag; [`Read::read`] reports it once as
//! [`UartError::Overrun`] (before any byte of that call) and clears it. QEMU's model never overruns: it
//! holds input back until the buffer is empty.

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};

use crate::mmio::Reg;

/// The UART's registers, in address order.
#[repr(C)]
#[derive(Debug)]
struct Regs {
    data: Reg,
    state: Reg,
    ctrl: Reg,
    intstatus: Reg,
    bauddiv: Reg,
}

const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const STATE_RX_OVERRUN: u32 = 1 << 3;
const CTRL_TX_ENABLE: u32 = 1 << 0;
const CTRL_RX_ENABLE: u32 = 1 << 1;
/// The smallest divider the hardware accepts (and QEMU checks).
const MIN_BAUDDIV: u32 = 16;
/// BAUDDIV is a 20-bit field.
const MAX_BAUDDIV: u32 = (1 << 20) - 1;

/// What can go wrong with the UART.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum UartError {
    /// `pclk_hz / baud` is outside `16..=0xF_FFFF`: the requested rate cannot
    /// be generated from this clock.
    BaudRate,
    /// A received byte was lost because the previous one had not been read.
    Overrun,
}

impl core::fmt::Display for UartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            UartError::BaudRate => "baud rate not reachable from the UART clock",
            UartError::Overrun => "receive overrun: a byte was lost",
        })
    }
}

impl core::error::Error for UartError {}

impl embedded_io::Error for UartError {
    fn kind(&self) -> ErrorKind {
        match self {
            UartError::BaudRate => ErrorKind::InvalidInput,
            UartError::Overrun => ErrorKind::Other,
        }
    }
}

/// A CMSDK UART with transmitter and receiver enabled, polled.
#[derive(Debug)]
pub struct Uart {
    regs: &'static Regs,
}

impl Uart {
    /// Take the UART at `base`, clocked at `pclk_hz`, and enable it at
    /// `baud` bits per second (8N1; the divider is rounded down).
    ///
    /// # Safety
    /// `base` is the address of a CMSDK APB UART, and nothing else uses that
    /// UART while the returned value lives.
    pub unsafe fn new(base: usize, pclk_hz: u32, baud: u32) -> Result<Self, UartError> {
        let div = pclk_hz.checked_div(baud).ok_or(UartError::BaudRate)?;
        if !(MIN_BAUDDIV..=MAX_BAUDDIV).contains(&div) {
            return Err(UartError::BaudRate);
        }
        // SAFETY: the caller guarantees a UART block lives at `base`; its
        // registers are 4-byte aligned 32-bit cells, as `Regs` lays out.
        let regs = unsafe { &*(base as *const Regs) };
        regs.ctrl.write(0);
        regs.bauddiv.write(div);
        // Start from a clean slate: clear stale overrun flags and IRQs.
        regs.state.write(STATE_RX_OVERRUN | (1 << 2));
        regs.intstatus.write(0xF);
        regs.ctrl.write(CTRL_TX_ENABLE | CTRL_RX_ENABLE);
        Ok(Uart { regs })
    }

    fn state(&self) -> u32 {
        self.regs.state.read()
    }

    /// Send one byte, waiting for room in the transmit buffer.
    pub fn write_byte(&mut self, byte: u8) {
        while self.state() & STATE_TX_FULL != 0 {}
        self.regs.data.write(u32::from(byte));
    }

    /// Receive one byte, waiting until one arrives.
    pub fn read_byte(&mut self) -> Result<u8, UartError> {
        while self.state() & STATE_RX_FULL == 0 {}
        self.take_byte()
    }

    /// Read DATA (the receive buffer is known to be full), unless an
    /// overrun came first: that is reported (and cleared) on its own, and
    /// the byte stays in the buffer for the next read.
    fn take_byte(&mut self) -> Result<u8, UartError> {
        if self.state() & STATE_RX_OVERRUN != 0 {
            self.regs.state.write(STATE_RX_OVERRUN);
            return Err(UartError::Overrun);
        }
        Ok(self.regs.data.read() as u8)
    }
}

impl ErrorType for Uart {
    type Error = UartError;
}

impl Read for Uart {
    /// Waits for the first byte, then returns it together with any that are
    /// already waiting (at most one more, with a one-byte buffer).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, UartError> {
        let Some((first, rest)) = buf.split_first_mut() else {
            return Ok(0);
        };
        *first = self.read_byte()?;
        let mut n = 1;
        for slot in rest {
            // An overrun behind the first byte is left for the next call, so
            // that an `Err` never discards bytes already placed in `buf`.
            if self.state() & (STATE_RX_FULL | STATE_RX_OVERRUN) != STATE_RX_FULL {
                break;
            }
            *slot = self.regs.data.read() as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, UartError> {
        Ok(self.state() & STATE_RX_FULL != 0)
    }
}

impl Write for Uart {
    /// Waits for room for the first byte, then sends as many as fit
    /// without waiting.
    fn write(&mut self, buf: &[u8]) -> Result<usize, UartError> {
        let Some((&first, rest)) = buf.split_first() else {
            return Ok(0);
        };
        self.write_byte(first);
        let mut n = 1;
        for &byte in rest {
            if self.state() & STATE_TX_FULL != 0 {
                break;
            }
            self.regs.data.write(u32::from(byte));
            n += 1;
        }
        Ok(n)
    }

    /// Waits until the transmit buffer has been handed to the shift
    /// register (the CMSDK UART has no "line idle" flag to wait for).
    fn flush(&mut self) -> Result<(), UartError> {
        while self.state() & STATE_TX_FULL != 0 {}
        Ok(())
    }
}

impl WriteReady for Uart {
    fn write_ready(&mut self) -> Result<bool, UartError> {
        Ok(self.state() & STATE_TX_FULL == 0)
    }
}
