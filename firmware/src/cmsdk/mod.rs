//! Drivers for ARM's Cortex-M System Design Kit (CMSDK) APB peripherals.
//!
//! These blocks are the same on every board built from the kit (QEMU's
//! `mps2-an385`/`an386`/`an500`, MPS3 images, several ASICs); a board module
//! only says where they are and how fast their clock runs.

pub mod timer;
pub mod uart;
