//! Drivers for ARM's Cortex-M System Design Kit (CMSDK) APB peripherals.
//!
//! These blocks are the same on every board built from the kit (QEMU's
//! `mps2-an385`/`an386`/`an500`/`an505`, MPS3 images, several ASICs); a
//! board crate only says where they are and how fast their clock runs
//! ([`kit::KitMap`]).

pub mod kit;
pub mod timer;
pub mod uart;
