//! QEMU's `mps2-an505`: ARM's MPS2 FPGA board with the AN505 image (the
//! IoT kit: an SSE-200 subsystem), a Cortex-M33 with FPU and TrustZone
//! (`thumbv8m.main-none-eabihf`), as QEMU 7.2 models it. The CPU boots in
//! Secure state, and everything here uses the Secure aliases (Non-secure
//! address + 0x1000_0000). No SAU, PPC or MPC set-up is needed: at reset
//! the SAU is off (all Secure), the PPCs leave every port Secure and the
//! MPCs every block.
//!
//! | what            | where (Secure alias)       | notes                              |
//! |-----------------|----------------------------|------------------------------------|
//! | ssram-0         | `0x1000_0000`, 4 MiB       | `FLASH` in `memory.x`; VTOR_S      |
//! | ssram-1 + 2     | `0x3800_0000`, 4 MiB       | `RAM`: data, bss, stack            |
//! | CMSDK timer0    | `0x5000_0000`              | SSE-200 APB; MAINCLK = 20 MHz      |
//! | CMSDK UART0     | `0x5020_0000`              | QEMU's first `-serial` (the console) |
//!
//! DWT CYCCNT reads 0 in QEMU; `Stopwatch::new` falls back to timer0 here
//! (under `-icount shift=6`, instructions = ticks / 1.28: a 20 MHz timer,
//! not the other MPS2 images' 25 MHz).
//! Logging, panics, faults and exit: `normcore-qemu` (semihosting).
#![no_std]

use normcore_firmware::cmsdk::kit::{Kit, KitMap};
// Semihosting exit, the defmt transport, the panic and fault handlers.
use normcore_qemu as _;

/// The board's memory map (Secure aliases).
#[derive(Debug)]
pub enum Map {}

impl KitMap for Map {
    const NAME: &'static str = "mps2-an505 (QEMU, Cortex-M33, Secure)";
    const TIMER: usize = 0x5000_0000;
    const UART: usize = 0x5020_0000;
    const PCLK_HZ: u32 = 20_000_000;

    fn exit(success: bool) -> ! {
        normcore_qemu::exit(success)
    }
}

/// The board, for the programs.
pub type Mps2An505 = Kit<Map>;
