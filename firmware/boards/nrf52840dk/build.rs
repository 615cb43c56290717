//! The firmware build step (`normcore-firmware-build`): memory.x and the
//! linker scripts (cortex-m-rt's `link.x` also takes the PAC's `device.x`),
//! and the assets checked against this board.
use normcore_firmware_build::board::{build, Board, Budget};

fn main() {
    build(&Board {
        name: "nrf52840dk",
        // Measured on the release build with the demo assets (rustc 1.95):
        // - code: flash bytes of each bin (`llvm-size -A`:
        //   .vector_table + .text + .rodata + .data) less its embedded
        //   assets (the `NORMCORE_*` symbols, `nm -S`). The largest is
        //   infer, 34,184 B (83,656 B less 49,472 B of assets); serve
        //   32,432 B; hello 16,452 B. 48 KiB: about 40 % over.
        // - ram: infer's .data + .bss + .uninit is 16,840 B: the 16 KiB
        //   RTT buffer (`DEFMT_RTT_BUFFER_SIZE`), 72 B of statics and the
        //   384 B arena. The stack could not be measured here (no board);
        //   the same code on QEMU's Cortex-M4F/M7 (`mps2-an386`,
        //   `mps2-an500`, same target) reaches `stack: high_water=2708`.
        //   16,456 + 2,708 = 19,164 B; 32 KiB leaves room for both to
        //   grow (RAM is 256 KiB).
        budget: Budget {
            code: 48 * 1024,
            ram: 32 * 1024,
        },
    });
}
