//! `finetune` on this board: statistics re-estimation of the embedded int8 model on a drift of the samples, its costs, the overlay saved and reloaded (`normcore_firmware::programs::finetune`).
//!
//! Re-estimation alone, without the tail training the other boards add:
//! the micro:bit's 16 KiB of RAM cannot hold it. With the demo's model the
//! re-estimation run takes 8,384 B of statics (arena 384, overlay 1,936,
//! scratch 1,936, the RAM-backed 1 KiB-page flash region 4,096) and a
//! 3,060 B stack. The tail adds its f32 workspace (4,344 B: the dense
//! layer's weights and their momentum, 2·10·32 floats, γ and β with theirs),
//! a larger overlay with the dense layer's entry (2,392 B instead of
//! 1,936 B: the flash region then takes two 3 KiB slots, 6,144 B) and
//! `Tail::commit`'s stack (two 512-channel f32 copies of `E[x]`, `Var[x]`,
//! 4 KiB, and the softmax's 1 KiB): about 13.3 KB of statics and 8 KB of
//! stack, more than 16 KiB (figures: docs/ADAPT.md, "On the device").
#![no_std]
#![no_main]

normcore_firmware::bin!(finetune, normcore_microbit::Microbit, Restat);
