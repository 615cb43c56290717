//! The firmware build step (`normcore-firmware-build`): memory.x and the
//! linker scripts, and the assets checked against this board (256 KiB of
//! flash, 16 KiB of RAM: a model that does not fit stops the build here,
//! with the numbers, rather than crashing on the device).
use normcore_firmware_build::board::{build, Board, Budget};

fn main() {
    build(&Board {
        name: "microbit",
        // Measured on the release build with the demo assets (rustc 1.95):
        // - code: flash bytes of each bin (`llvm-size -A`:
        //   .vector_table + .text + .rodata + .data) less its embedded
        //   assets (the `NORMCORE_*` symbols, `nm -S`). The largest is
        //   infer, 37,384 B (86,856 B less 49,472 B of assets); serve
        //   33,864 B; hello 18,420 B. 48 KiB: about 30 % over.
        // - ram: `NORMCORE_ICOUNT=1 cargo run --release --bin infer` logs
        //   `stack: high_water=2920`; infer's .data + .bss is 412 bytes,
        //   the 384 B arena included (28 without). 6 KiB: twice that.
        // The demo's assets then take 98,656 of FLASH's 253,952 bytes
        // (both models, 25,664 B, and samples.bin, 23,840 B, + 48 KiB)
        // and 6,528 of 16,384 bytes of RAM (arena 384 B + 6 KiB).
        // - `finetune` (feature `adapt`) is larger and not in these
        //   budgets, which are for deploying a model through `infer`:
        //   102,376 B of code and constants without the assets (151,848 B
        //   of flash in all with the demo's assets), below memory.x's
        //   FLASH of 248 KiB; the 8 KiB STORE after it holds the two
        //   slots of the adapted overlay (`normcore_microbit::store_flash`).
        //   RAM: 6,380 B of statics (arena 384 B, overlay 2,256 B, scratch
        //   3,712 B: sized from the int8 model) + a 7,332 B stack
        //   high-water mark (`Tail::commit`'s copies) = 13,712 of 16,384
        //   bytes. A model too large for it fails `finetune`'s link (the
        //   linker names the region).
        // - `serve` stays inference-only here (`bin!(serve, ..)`): with the
        //   adaptation commands (`serve_adapt`, whose store is RAM-backed)
        //   its statics would take the serve buffer, overlay 2,256 B,
        //   workspace 3,704 B and a 6,144 B flash region, and the stack
        //   that `Tail::commit` needs does not fit beside them.
        budget: Budget {
            code: 48 * 1024,
            ram: 6 * 1024,
        },
    });
}
