//! `finetune` on this board: statistics re-estimation of the embedded int8 model on a drift of the samples, its costs, the overlay saved and reloaded (`normcore_firmware::programs::finetune`).
//!
//! Re-estimation alone, without the tail training the other boards add:
//! the micro:bit's 16 KiB of RAM cannot hold it. With the demo's model the
//! re-estimation run takes 8,384 B of statics (arena 384, overlay 1,936,
//! scratch 1,936, the RAM-backed 1 KiB-page flash region 4,096) and a
//! 3,108 B stack. With the tail (measured on `mps2-an386`, the same
//! program) the overlay is 2,896 B (the dense layer's entry added), the
//! workspace 4,344 B (the dense layer's f32 weights and their momentum,
//! 2·10·32 floats, γ and β with theirs), the flash region two 3 KiB slots,
//! 6,144 B: 13,768 B of statics, and the stack reaches 7,440 B
//! (`Tail::commit` copies `E[x]` and `Var[x]` of up to 512 channels on
//! it): over 16 KiB (docs/ADAPT.md, "On the device").
#![no_std]
#![no_main]

normcore_firmware::bin!(finetune, normcore_microbit::Microbit, Restat);
