//! QEMU's `mps2-an385`: ARM's MPS2 FPGA board with the AN385 image, a
//! Cortex-M3 without FPU (`thumbv7m-none-eabi`: f32 runs in soft float), as
//! QEMU 7.2 models it. The same memory map as `mps2-an386`.
//!
//! | what            | where                      | notes                              |
//! |-----------------|----------------------------|------------------------------------|
//! | code SRAM       | `0x0000_0000`, 4 MiB       | `FLASH` in `memory.x`              |
//! | SRAM            | `0x2000_0000`, 4 MiB       | `RAM`: data, bss, stack            |
//! | CMSDK timer0    | `0x4000_0000`              | PCLK = 25 MHz                      |
//! | CMSDK UART0     | `0x4000_4000`              | QEMU's `-serial` (the console)     |
//!
//! DWT CYCCNT reads 0 in QEMU; `Stopwatch::new` falls back to timer0 here
//! (under `-icount shift=6`, instructions = ticks / 1.6).
//! Logging, panics, faults and exit: `normcore-qemu` (semihosting).
#![no_std]

use normcore_firmware::cmsdk::kit::{Kit, KitMap};
// Semihosting exit, the defmt transport, the panic and fault handlers.
use normcore_qemu as _;

/// The board's memory map.
#[derive(Debug)]
pub enum Map {}

impl KitMap for Map {
    const NAME: &'static str = "mps2-an385 (QEMU, Cortex-M3)";
    const TIMER: usize = 0x4000_0000;
    const UART: usize = 0x4000_4000;
    const PCLK_HZ: u32 = 25_000_000;

    fn exit(success: bool) -> ! {
        normcore_qemu::exit(success)
    }
}

/// The board, for the programs.
pub type Mps2An385 = Kit<Map>;
