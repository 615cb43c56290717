//! The firmware build step (`normcore-firmware-build`): memory.x and the
//! linker scripts, and the assets checked against this board.
use normcore_firmware_build::board::{build, Board, Budget};

fn main() {
    build(&Board {
        name: "mps2-an505",
        // Measured on the release build with the demo assets (rustc 1.95):
        // - code: flash bytes of each bin (`llvm-size -A`:
        //   .vector_table + .text + .rodata + .data) less its embedded
        //   assets (the `NORMCORE_*` symbols, `nm -S`). The largest is
        //   bench, 75,916 B; infer 36,536 B (86,008 B less 49,472 B of
        //   assets); serve 32,680 B. 96 KiB: about 20 % over the
        //   largest.
        // - ram: `NORMCORE_ICOUNT=1 cargo run --release --bin infer`
        //   logs `stack: high_water=2708`; infer's .data + .bss is 412
        //   B, the 384 B arena included. 16 KiB: over 5x that, for
        //   larger models' deeper frames (RAM is 4 MiB).
        budget: Budget {
            code: 96 * 1024,
            ram: 16 * 1024,
        },
    });
}
