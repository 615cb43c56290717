//! The elementary-function rows of [`bench`](super::bench) alone, for boards
//! whose RAM cannot hold `bench`'s buffers (the micro:bit's 16 KiB): core's,
//! libm's and micromath's `exp`, sigmoid, `tanh`, `sqrt`, `1/sqrt` and `ln`
//! on 1,024 values each, timed by the board's counter, one `bench
//! kernel=...` line per row (the same format, so `cargo xtask bench firmware
//! --board NAME` prints the table). On a Cortex-M0 every float operation is
//! soft float: this is where micromath's approximations could pay for their
//! error (issue: measure before use; `core/src/math.rs`, "Why no
//! micromath").

use core::sync::atomic::AtomicBool;

use super::bench::{elementary, Bench};
use crate::board::Board;
use crate::cost::Stopwatch;
use crate::stack;

/// Points per function.
const N: usize = 1024;

/// Inputs and outputs, 8 KiB.
static mut VALUES: [f32; 2 * N] = [0.0; 2 * N];

/// The buffer, once.
fn take_values() -> Option<&'static mut [f32; 2 * N]> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if !crate::take_once(&TAKEN) {
        return None;
    }
    // SAFETY: `TAKEN` makes this the only reference to `VALUES` ever made,
    // and the pointer to a static is non-null and aligned.
    unsafe { (&raw mut VALUES).as_mut() }
}

/// The `mathbench` program; ends through `B::exit`.
pub fn main<B: Board>() -> ! {
    // SAFETY: no heap, and nothing else lives below the stack pointer.
    let painted = unsafe { stack::paint() };
    defmt::info!("normcore-firmware mathbench on {=str}", B::NAME);
    let (Some(mut parts), Some(values)) = (B::take(), take_values()) else {
        defmt::error!("peripherals or buffers already taken");
        B::exit(false)
    };
    let sw = Stopwatch::new(&mut parts.core.DCB, parts.core.DWT, parts.timer);
    sw.log_unit();
    let mut bench = Bench {
        sw: &sw,
        failed: false,
    };
    let (x, y) = values.split_at_mut(N);
    elementary(&mut bench, x, y);
    defmt::info!(
        "stack: high_water={=usize} size={=usize} (bytes)",
        painted.high_water(),
        painted.size()
    );
    B::exit(!bench.failed)
}
