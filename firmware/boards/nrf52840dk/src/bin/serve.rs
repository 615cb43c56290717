//! `serve` on the DK's virtual COM port (UARTE0), with the assets its build embeds: see
//! `normcore_firmware::programs::serve`.
#![no_std]
#![no_main]

use normcore_firmware::programs::serve;
use normcore_firmware::{include_assets, take_arena};
use normcore_nrf52840dk::Nrf52840Dk;

include_assets!();

#[cortex_m_rt::entry]
fn main() -> ! {
    use assets::{ARENA_BYTES, CLASSES, FEATURES};
    let buffer = take_arena!(serve::buffer_bytes(ARENA_BYTES, FEATURES, CLASSES));
    serve::main::<Nrf52840Dk>(&assets::ASSETS, buffer)
}
