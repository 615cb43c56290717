//! `infer` on this board, with the assets its build embeds: see
//! `normcore_firmware::programs::infer`.
#![no_std]
#![no_main]

use normcore_firmware::{include_assets, programs, take_arena};
use normcore_nrf52840dk::Nrf52840Dk;

include_assets!();

#[cortex_m_rt::entry]
fn main() -> ! {
    let arena = take_arena!(assets::ARENA_BYTES);
    programs::infer::main::<Nrf52840Dk>(&assets::ASSETS, arena)
}
