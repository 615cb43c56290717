//! Panics on purpose: the harness must see a failure exit with the message,
//! not a hang (panic-probe prints it, `UDF` escalates to HardFault, and the
//! HardFault handler exits QEMU with failure).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use normcore_mps2_an386 as _;

#[entry]
fn main() -> ! {
    defmt::info!("about to panic");
    let answer = core::hint::black_box(42);
    panic!("deliberate panic, answer = {}", answer)
}
