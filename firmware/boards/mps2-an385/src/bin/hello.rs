//! `hello` on this board: see `normcore_firmware::programs::hello`.
#![no_std]
#![no_main]

use normcore_mps2_an385::Mps2An385;

#[cortex_m_rt::entry]
fn main() -> ! {
    normcore_firmware::programs::hello::main::<Mps2An385>()
}
