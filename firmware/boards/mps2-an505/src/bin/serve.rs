//! `serve` on this board's UART0, with the assets its build embeds: see
//! `normcore_firmware::programs::serve`.
#![no_std]
#![no_main]

use normcore_firmware::programs::serve;
use normcore_firmware::{include_assets, take_arena};
use normcore_mps2_an505::Mps2An505;

include_assets!();

#[cortex_m_rt::entry]
fn main() -> ! {
    use assets::{ARENA_BYTES, CLASSES, FEATURES};
    let buffer = take_arena!(serve::buffer_bytes(ARENA_BYTES, FEATURES, CLASSES));
    serve::main::<Mps2An505>(&assets::ASSETS, buffer)
}
