//! `finetune` on this board: statistics re-estimation of the embedded int8 model on a drift of the samples, then tail training on them with their labels, their costs, the overlay saved and reloaded (`normcore_firmware::programs::finetune`).
#![no_std]
#![no_main]

normcore_firmware::bin!(finetune, normcore_mps2_an386::Mps2An386);
