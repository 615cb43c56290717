//! QEMU's `microbit`: the BBC micro:bit v1, an nRF51822 with a Cortex-M0
//! (`thumbv6m-none-eabi`: no FPU, so f32 runs in soft float; no DWT cycle
//! counter), 256 KiB of flash and 16 KiB of RAM, as QEMU 7.2 models it.
//!
//! | what            | where                      | notes                              |
//! |-----------------|----------------------------|------------------------------------|
//! | flash           | `0x0000_0000`, 248 KiB     | `FLASH` in `memory.x` (of the chip's 256 KiB) |
//! | RAM             | `0x2000_0000`, 16 KiB      | `RAM`: data, bss, stack            |
//! | TIMER0          | `0x4000_8000`              | 32-bit, 16 MHz (PRESCALER 0)       |
//! | UART            | `0x4000_2000`              | QEMU's `-serial`; pins 24 (TX), 25 (RX) on the board |
//! | store           | `0x0003_E000`, 8 KiB       | `STORE` in `memory.x`: the NVMC writes it ([`store_flash`]) |
//!
//! Costs come from TIMER0 (ARMv6-M has no cycle counter): under
//! `-icount shift=6`, instructions = ticks / 1.024.
//! Logging, panics, faults and exit: `normcore-qemu` (semihosting).
#![no_std]

use normcore_firmware::nrf51::kit::{Nrf51, Nrf51Map};
use normcore_firmware::nrf51::uart::Pins;
// Semihosting exit, the defmt transport, the panic and fault handlers.
use normcore_qemu as _;

/// The flash region `memory.x` reserves as STORE (the last 8 KiB of the
/// chip's flash, whole 1 KiB pages), written through the nRF51's NVMC: an
/// `embedded_storage` `NorFlash` (4-byte writes, 1 KiB erases) of the
/// region's bytes, offsets from its start. What the `finetune` program
/// saves its overlay into. `None` after the first call.
#[cfg(feature = "adapt")]
pub fn store_flash() -> Option<normcore_firmware::nrf51::nvmc::Nvmc> {
    use core::sync::atomic::AtomicBool;
    extern "C" {
        // memory.x: the first byte of STORE, and one past its last.
        static _normcore_store_start: u8;
        static _normcore_store_end: u8;
    }
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if !normcore_firmware::take_once(&TAKEN) {
        return None;
    }
    let start = &raw const _normcore_store_start as usize;
    let len = (&raw const _normcore_store_end as usize).checked_sub(start)?;
    // SAFETY: `start..start + len` is memory.x's STORE region, flash that no
    // section is linked into (FLASH ends where it starts): nothing else
    // refers to it, and `TAKEN` makes this the only handle to it and to the
    // NVMC, which the board's other drivers never use. memory.x asserts
    // page alignment, which `Nvmc::new` checks again.
    unsafe { normcore_firmware::nrf51::nvmc::Nvmc::new(start, len) }
}

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
