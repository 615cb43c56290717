//! QEMU's `microbit`: the BBC micro:bit v1, an nRF51822 with a Cortex-M0
//! (`thumbv6m-none-eabi`: no FPU, so f32 runs in soft float; no DWT cycle
//! counter), 256 KiB of flash and 16 KiB of RAM, as QEMU 7.2 models it.
//!
//! | what            | where                      | notes                              |
//! |-----------------|----------------------------|------------------------------------|
//! | flash           | `0x0000_0000`, 256 KiB     | `FLASH` in `memory.x`              |
//! | RAM             | `0x2000_0000`, 16 KiB      | `RAM`: data, bss, stack            |
//! | TIMER0          | `0x4000_8000`              | 32-bit, 16 MHz (PRESCALER 0)       |
//! | UART            | `0x4000_2000`              | QEMU's `-serial`; pins 24 (TX), 25 (RX) on the board |
//!
//! Costs come from TIMER0 (ARMv6-M has no cycle counter): under
//! `-icount shift=6`, instructions = ticks / 1.024.
//! Logging, panics, faults and exit: `normcore-qemu` (semihosting).
#![no_std]

use normcore_firmware::nrf51::kit::{Nrf51, Nrf51Map};
use normcore_firmware::nrf51::uart::Pins;
// Semihosting exit, the defmt transport, the panic and fault handlers.
use normcore_qemu as _;

/// The board's memory map.
#[derive(Debug)]
pub enum Map {}

impl Nrf51Map for Map {
    const NAME: &'static str = "microbit (QEMU, nRF51822, Cortex-M0)";
    const TIMER: usize = 0x4000_8000;
    const UART: usize = 0x4000_2000;
    const UART_PINS: Pins = Pins { txd: 24, rxd: 25 };

    fn exit(success: bool) -> ! {
        normcore_qemu::exit(success)
    }
}

/// The board, for the programs.
pub type Microbit = Nrf51<Map>;
