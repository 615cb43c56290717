//! Serial round trip over UART0: reads bytes and writes each back plus one
//! (wrapping), until the terminator byte, which it does not echo; then exits
//! with success.
//!
//! On the console UART (the board's [`Serial`]). Run it with QEMU's `-serial stdio` (not `-nographic`, whose console
//! multiplexer swallows 0x01, Ctrl-A): `NORMCORE_SERIAL=stdio ./qemu-run`.
//! QEMU writes semihosting output (defmt) to the same stdout, so this binary
//! logs only when it fails: on success its stdout is exactly the echo.
use embedded_io::{Read, Write};

use crate::board::Serial;

/// Ends the session (not echoed).
const TERMINATOR: u8 = 0x00;

/// Echo until the terminator; the number of bytes echoed.
fn echo<U: Read + Write>(uart: &mut U) -> Result<usize, U::Error> {
    let mut buf = [0u8; 16];
    let mut count = 0;
    loop {
        let n = uart.read(&mut buf)?;
        let chunk = &mut buf[..n];
        let end = chunk.iter().position(|&b| b == TERMINATOR);
        let data = &mut chunk[..end.unwrap_or(n)];
        for b in data.iter_mut() {
            *b = b.wrapping_add(1);
        }
        uart.write_all(data)?;
        count += data.len();
        if end.is_some() {
            uart.flush()?;
            return Ok(count);
        }
    }
}

/// The `uart_echo` program on the console UART; ends through `B::exit`.
pub fn main<B: Serial>() -> ! {
    let Some((_, mut uart)) = B::take_serial() else {
        defmt::error!("board already taken");
        B::exit(false)
    };
    match echo(&mut uart) {
        Ok(_) => B::exit(true),
        Err(e) => {
            defmt::error!("uart error: {}", defmt::Debug2Format(&e));
            B::exit(false)
        }
    }
}
