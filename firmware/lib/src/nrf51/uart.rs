//! nRF51 UART (the one without DMA), driven by polling (blocking), through
//! the `embedded-io` traits.
//!
//! # Registers used (offsets from the base address)
//!
//! | offset | name           | what                                                  |
//! |--------|----------------|-------------------------------------------------------|
//! | 0x000  | TASKS_STARTRX  | start the receiver                                    |
//! | 0x008  | TASKS_STARTTX  | start the transmitter                                 |
//! | 0x108  | EVENTS_RXDRDY  | a byte is in RXD                                      |
//! | 0x11C  | EVENTS_TXDRDY  | the byte written to TXD has been sent                 |
//! | 0x124  | EVENTS_ERROR   | a receive error; the cause is in ERRORSRC             |
//! | 0x480  | ERRORSRC       | 0 overrun, 1 parity, 2 framing, 3 break (write 1 to clear) |
//! | 0x500  | ENABLE         | 4 enabled, 0 disabled                                 |
//! | 0x50C  | PSELTXD        | TXD pin (0xFFFF_FFFF: none)                           |
//! | 0x514  | PSELRXD        | RXD pin                                               |
//! | 0x518  | RXD            | the received byte (reading pops the 6-byte FIFO)      |
//! | 0x51C  | TXD            | the byte to send                                      |
//! | 0x524  | BAUDRATE       | rate code (not bits per second: [`baudrate_code`])    |
//!
//! Receiving: wait for RXDRDY, clear it, then read RXD (Nordic's order: an
//! RXDRDY for the next byte may arrive as soon as RXD is read, and clearing
//! it after the read would lose that event). Sending: clear TXDRDY, write
//! TXD, wait for TXDRDY.
//!
//! # QEMU's model (`hw/char/nrf51_uart.c`, 7.2)
//! Every register reads 0 and ignores writes until ENABLE = 4. A TXD write
//! is dropped unless STARTTX was triggered, and while a byte is still
//! pending; TXDRDY is set once the character backend took the byte. Input
//! is accepted only after STARTRX, into a 6-byte FIFO: RXDRDY is set when
//! bytes arrive, and reading RXD pops one and sets RXDRDY again if more
//! are waiting. QEMU never reports a receive error (no ERROR event);
//! the pins and the baud rate are ignored.

use embedded_io::{ErrorKind, ErrorType, Read, ReadReady, Write, WriteReady};

use super::Block;

const TASKS_STARTRX: usize = 0x000;
const TASKS_STARTTX: usize = 0x008;
const EVENTS_RXDRDY: usize = 0x108;
const EVENTS_TXDRDY: usize = 0x11C;
const EVENTS_ERROR: usize = 0x124;
const ERRORSRC: usize = 0x480;
const ENABLE: usize = 0x500;
const PSELTXD: usize = 0x50C;
const PSELRXD: usize = 0x514;
const RXD: usize = 0x518;
const TXD: usize = 0x51C;
const BAUDRATE: usize = 0x524;

const ENABLE_UART: u32 = 4;
const ERRORSRC_OVERRUN: u32 = 1 << 0;
const ERRORSRC_PARITY: u32 = 1 << 1;
const ERRORSRC_FRAMING: u32 = 1 << 2;
const ERRORSRC_BREAK: u32 = 1 << 3;

/// The BAUDRATE register's code for `baud` bits per second (the nRF51
/// Reference Manual's table), if the UART has that rate.
pub const fn baudrate_code(baud: u32) -> Option<u32> {
    Some(match baud {
        1_200 => 0x0004_F000,
        2_400 => 0x0009_D000,
        4_800 => 0x0013_B000,
        9_600 => 0x0027_5000,
        14_400 => 0x003B_0000,
        19_200 => 0x004E_A000,
        28_800 => 0x0075_F000,
        38_400 => 0x009D_5000,
        57_600 => 0x00EB_F000,
        76_800 => 0x013A_9000,
        115_200 => 0x01D7_E000,
        230_400 => 0x03AF_B000,
        250_000 => 0x0400_0000,
        460_800 => 0x075F_7000,
        921_600 => 0x0EBE_DC00,
        1_000_000 => 0x1000_0000,
        _ => return None,
    })
}

/// What can go wrong with the UART.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum UartError {
    /// The UART has no such baud rate ([`baudrate_code`]).
    BaudRate,
    /// A received byte was lost: the FIFO was full.
    Overrun,
    /// A received byte had the wrong parity bit.
    Parity,
    /// A received byte had no valid stop bit.
    Framing,
    /// The line was held low for longer than a byte.
    Break,
}

impl core::fmt::Display for UartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            UartError::BaudRate => "baud rate not available on the nRF51 UART",
            UartError::Overrun => "receive overrun: a byte was lost",
            UartError::Parity => "parity error on a received byte",
            UartError::Framing => "framing error on a received byte",
            UartError::Break => "break condition on the receive line",
        })
    }
}

impl core::error::Error for UartError {}

impl embedded_io::Error for UartError {
    fn kind(&self) -> ErrorKind {
        match self {
            UartError::BaudRate => ErrorKind::InvalidInput,
            UartError::Parity | UartError::Framing => ErrorKind::InvalidData,
            UartError::Overrun | UartError::Break => ErrorKind::Other,
        }
    }
}

/// Where the UART's signals go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pins {
    /// The GPIO pin of TXD (the micro:bit v1's USB serial: 24).
    pub txd: u32,
    /// The GPIO pin of RXD (the micro:bit v1's USB serial: 25).
    pub rxd: u32,
}

/// An nRF51 UART with transmitter and receiver started, polled.
#[derive(Debug)]
pub struct Uart {
    regs: Block,
}

impl Uart {
    /// Take the UART at `base`, route it to `pins` and start it at `baud`
    /// bits per second (8N1, no flow control).
    ///
    /// # Safety
    /// `base` is the address of an nRF51 UART, and nothing else uses that
    /// UART (or its pins) while the returned value lives.
    pub unsafe fn new(base: usize, pins: Pins, baud: u32) -> Result<Self, UartError> {
        let code = baudrate_code(baud).ok_or(UartError::BaudRate)?;
        // SAFETY: the caller guarantees a UART block at `base`.
        let regs = unsafe { Block::new(base) };
        // Pins are only taken while the UART is disabled.
        regs.reg(ENABLE).write(0);
        regs.reg(PSELTXD).write(pins.txd);
        regs.reg(PSELRXD).write(pins.rxd);
        regs.reg(ENABLE).write(ENABLE_UART);
        regs.reg(BAUDRATE).write(code);
        // A clean slate: no stale events or error flags.
        regs.reg(ERRORSRC)
            .write(ERRORSRC_OVERRUN | ERRORSRC_PARITY | ERRORSRC_FRAMING | ERRORSRC_BREAK);
        regs.reg(EVENTS_ERROR).write(0);
        regs.reg(EVENTS_RXDRDY).write(0);
        regs.reg(EVENTS_TXDRDY).write(0);
        regs.trigger(TASKS_STARTTX);
        regs.trigger(TASKS_STARTRX);
        Ok(Uart { regs })
    }

    /// Send one byte and wait until it has gone (TXDRDY).
    pub fn write_byte(&mut self, byte: u8) {
        self.regs.reg(EVENTS_TXDRDY).write(0);
        self.regs.reg(TXD).write(u32::from(byte));
        while self.regs.reg(EVENTS_TXDRDY).read() == 0 {}
    }

    /// A pending receive error, reported once (and cleared).
    fn error(&mut self) -> Result<(), UartError> {
        if self.regs.reg(EVENTS_ERROR).read() == 0 {
            return Ok(());
        }
        self.regs.reg(EVENTS_ERROR).write(0);
        let src = self.regs.reg(ERRORSRC).read();
        // Write-1-to-clear.
        self.regs.reg(ERRORSRC).write(src);
        Err(if src & ERRORSRC_OVERRUN != 0 {
            UartError::Overrun
        } else if src & ERRORSRC_PARITY != 0 {
            UartError::Parity
        } else if src & ERRORSRC_FRAMING != 0 {
            UartError::Framing
        } else {
            UartError::Break
        })
    }

    fn rx_ready(&self) -> bool {
        self.regs.reg(EVENTS_RXDRDY).read() != 0
    }

    /// Take the byte in RXD (RXDRDY is known to be set).
    fn take_byte(&mut self) -> u8 {
        self.regs.reg(EVENTS_RXDRDY).write(0);
        self.regs.reg(RXD).read() as u8
    }

    /// Receive one byte, waiting until one arrives (or an error).
    pub fn read_byte(&mut self) -> Result<u8, UartError> {
        loop {
            self.error()?;
            if self.rx_ready() {
                return Ok(self.take_byte());
            }
        }
    }
}

impl ErrorType for Uart {
    type Error = UartError;
}

impl Read for Uart {
    /// Waits for the first byte, then returns it together with any that are
    /// already waiting in the receive FIFO.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, UartError> {
        let Some((first, rest)) = buf.split_first_mut() else {
            return Ok(0);
        };
        *first = self.read_byte()?;
        let mut n = 1;
        for slot in rest {
            // An error behind the first byte is left for the next call, so
            // that an `Err` never discards bytes already placed in `buf`.
            if self.regs.reg(EVENTS_ERROR).read() != 0 || !self.rx_ready() {
                break;
            }
            *slot = self.take_byte();
            n += 1;
        }
        Ok(n)
    }
}

impl ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, UartError> {
        Ok(self.rx_ready())
    }
}

impl Write for Uart {
    /// Sends every byte, each waited for (the UART holds one at a time).
    fn write(&mut self, buf: &[u8]) -> Result<usize, UartError> {
        for &byte in buf {
            self.write_byte(byte);
        }
        Ok(buf.len())
    }

    /// Nothing to wait for: every write waits for its bytes to go.
    fn flush(&mut self) -> Result<(), UartError> {
        Ok(())
    }
}

impl WriteReady for Uart {
    fn write_ready(&mut self) -> Result<bool, UartError> {
        Ok(true)
    }
}
