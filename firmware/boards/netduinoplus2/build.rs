//! The firmware build step (`normcore-firmware-build`): memory.x and the
//! linker scripts (cortex-m-rt's `link.x` also takes the PAC's `device.x`),
//! and the assets checked against this board.
use normcore_firmware_build::board::{build, Board, Budget};

fn main() {
    build(&Board {
        name: "netduinoplus2",
        // Measured on the release build with the demo assets (rustc 1.95):
        // - code: flash bytes of each bin (`llvm-size -A`:
        //   .vector_table + .text + .rodata + .data) less its embedded
        //   assets (the `NORMCORE_*` symbols, `nm -S`). The largest is
        //   infer, 37,968 B (87,440 B less 49,472 B of assets); serve
        //   34,196 B; hello 20,332 B. 64 KiB: about 70 % over (the HAL's
        //   code grows with what a program uses of it).
        // - ram: `NORMCORE_ICOUNT=1 cargo run --release --bin infer` logs
        //   `stack: high_water=2604`; infer's .data + .bss is 408 bytes,
        //   the 384 B arena included. 16 KiB: over 5x that, for larger
        //   models' deeper frames (RAM is 128 KiB).
        budget: Budget {
            code: 64 * 1024,
            ram: 16 * 1024,
        },
    });
}
