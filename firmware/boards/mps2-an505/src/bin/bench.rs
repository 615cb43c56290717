//! `bench` on this board: see `normcore_firmware::programs::bench`.
#![no_std]
#![no_main]

use normcore_mps2_an505::Mps2An505;

#[cortex_m_rt::entry]
fn main() -> ! {
    normcore_firmware::programs::bench::main::<Mps2An505>()
}
