//! `hello` on this board: see `normcore_firmware::programs::hello`.
#![no_std]
#![no_main]

use normcore_microbit::Microbit;

#[cortex_m_rt::entry]
fn main() -> ! {
    normcore_firmware::programs::hello::main::<Microbit>()
}
