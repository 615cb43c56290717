//! `bench` on this board: see `normcore_firmware::programs::bench`.
#![no_std]
#![no_main]

use normcore_mps2_an385::Mps2An385;

#[cortex_m_rt::entry]
fn main() -> ! {
    normcore_firmware::programs::bench::main::<Mps2An385>()
}
