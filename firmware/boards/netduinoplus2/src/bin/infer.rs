//! `infer` on this board, with the assets its build embeds: see
//! `normcore_firmware::programs::infer`.
#![no_std]
#![no_main]

use normcore_firmware::{include_assets, programs, take_arena};
use normcore_netduinoplus2::NetduinoPlus2;

include_assets!();

#[cortex_m_rt::entry]
fn main() -> ! {
    let arena = take_arena!(assets::ARENA_BYTES);
    programs::infer::main::<NetduinoPlus2>(&assets::ASSETS, arena)
}
