//! `uart_echo` on this board: see `normcore_firmware::programs::uart_echo`.
#![no_std]
#![no_main]

use normcore_mps2_an386::Mps2An386;

#[cortex_m_rt::entry]
fn main() -> ! {
    normcore_firmware::programs::uart_echo::main::<Mps2An386>()
}
