//! `finetune` on this board: statistics re-estimation of the embedded int8 model on a drift of the samples, then tail training on them with their labels, their costs, the overlay saved into the chip's own flash through the NVMC and reloaded (`normcore_firmware::programs::finetune`; the region: `memory.x`'s STORE, `normcore_nrf52840dk::store_flash`).
#![no_std]
#![no_main]

normcore_firmware::bin!(
    finetune,
    normcore_nrf52840dk::Nrf52840Dk,
    RestatTail,
    normcore_nrf52840dk::store_flash()
);
