//! `finetune` on this board: statistics re-estimation of the embedded int8 model on a drift of the samples, then tail training on them with their labels, their costs, the overlay saved into the chip's own flash through the NVMC and reloaded (`normcore_firmware::programs::finetune`; the region: `memory.x`'s STORE, `normcore_microbit::store_flash`).
//!
//! The store in flash is what makes the tail fit the micro:bit's 16 KiB of
//! RAM: a RAM-backed region of two slots would take another 6 KiB beside
//! the overlay, the tail's workspace and `Tail::commit`'s stack
//! (docs/ADAPT.md, "On the device").
#![no_std]
#![no_main]

normcore_firmware::bin!(
    finetune,
    normcore_microbit::Microbit,
    RestatTail,
    normcore_microbit::store_flash()
);
