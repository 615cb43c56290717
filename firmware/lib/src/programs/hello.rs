//! Boots, runs one BN layer ([`crate::workload`]) on a fixed
//! input, prints the result (values and their bit patterns, which the host
//! test compares with its own computation), what it cost and how much
//! stack the program used, then exits with success.
use core::hint::black_box;

use crate::board::Board;
use crate::cost::{Stopwatch, Unit};
use crate::stack;
use crate::workload::{Workload, BATCH, INPUTS, OUTPUTS, OUTPUT_LEN};

/// The `hello` program; ends through `B::exit`.
pub fn main<B: Board>() -> ! {
    // SAFETY: no heap, and nothing else lives below the stack pointer.
    let painted = unsafe { stack::paint() };
    defmt::info!("normcore-firmware hello on {=str}", B::NAME);

    let Some(mut parts) = B::take() else {
        defmt::error!("peripherals already taken");
        B::exit(false)
    };
    let stopwatch = Stopwatch::new(&mut parts.core.DCB, parts.core.DWT, parts.timer);

    let workload = Workload::new();
    let mut y = [0.0f32; OUTPUT_LEN];
    defmt::info!(
        "workload: y = sigmoid(BN(x W^T)), batch {=usize}, {=usize} -> {=usize}",
        BATCH,
        INPUTS,
        OUTPUTS
    );
    // black_box: the input is a compile-time constant, and the compiler
    // must neither fold the computation nor start it before the clock does.
    let (result, cost) = stopwatch.measure(|| black_box(&workload).run(&mut y));
    if let Err(e) = result {
        defmt::error!("workload failed: {}", e);
        B::exit(false)
    }
    for (n, row) in y.chunks_exact(OUTPUTS).enumerate() {
        defmt::info!("y[{=usize}] = {=[?]}", n, row);
    }
    for (n, row) in y.chunks_exact(OUTPUTS).enumerate() {
        let bits: [u32; OUTPUTS] = core::array::from_fn(|i| row[i].to_bits());
        defmt::info!("bits[{=usize}] = {=[?]:#010x}", n, bits);
    }

    // Measurements as `key=value` fields: the golden-file test masks their
    // values, which depend on the compiler (not on the run, under -icount).
    match cost.unit {
        Unit::Cycles => defmt::info!("cost: cycles={=u32}", cost.count),
        Unit::Ticks { hz } => defmt::info!(
            "cost: ticks={=u32} hz={=u32} instructions={=u32} (instructions: under -icount shift=6)",
            cost.count,
            hz,
            cost.icount_instructions().unwrap_or(0)
        ),
    }
    defmt::info!(
        "stack: high_water={=usize} size={=usize} (bytes)",
        painted.high_water(),
        painted.size()
    );
    B::exit(true)
}
