//! `hello` on this board: see `normcore_firmware::programs::hello`.
#![no_std]
#![no_main]

use normcore_mps2_an505::Mps2An505;

#[cortex_m_rt::entry]
fn main() -> ! {
    normcore_firmware::programs::hello::main::<Mps2An505>()
}
