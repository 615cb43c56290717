//! On-device adaptation: fine-tuning a deployed model on the device.
//!
//! What exists so far is its persistence: [`store`] keeps a byte blob of
//! adapted parameters (an "overlay") in a NOR flash region, as two A/B
//! slots with sequence numbers and CRCs, so that a power cut at any moment
//! of a save leaves the previous valid parameters. It is generic over the
//! `embedded-storage` 0.3 [`NorFlash`](embedded_storage::nor_flash::NorFlash)
//! traits, and [`store::RamFlash`] is a RAM-backed flash with real NOR
//! semantics for tests and QEMU. Computing the overlay comes later.

pub mod store;
