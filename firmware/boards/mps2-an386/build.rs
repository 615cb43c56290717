//! The firmware build step (`normcore-firmware-build`): memory.x and the
//! linker scripts, and the assets checked against this board.
use normcore_firmware_build::board::{build, Board, Budget};

fn main() {
    build(&Board {
        name: "mps2-an386",
        // Measured (`cargo xtask size --board mps2-an386`): `infer` with
        // both kinds of model, 54 KiB of code and constants without the
        // assets; a 3 KiB stack high-water mark. `finetune` (feature
        // `adapt`): 74,620 B of code and constants without the assets (its
        // 4 KiB flash region's erased image in .data included), 8,000 B of
        // statics besides the arena (overlay, scratch, flash region) and a
        // 2,808 B stack with the demo's model. `serve` with `adapt`
        // (`serve_adapt`): 85,712 B of .text, 14,104 B of statics (overlay
        // 2,896 B, workspace 4,344 B, flash region 6,144 B in .data, the
        // serve buffer and arena). Budgets with margin.
        budget: Budget {
            code: 96 * 1024,
            ram: 16 * 1024,
        },
    });
}
