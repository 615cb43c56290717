//! On-device adaptation of a folded model (paper Alg. 2 after deployment):
//! fine-tuning a deployed model on the device. What exists so far:
//!
//! - [`stats`]: statistics re-estimation, forward only: streaming
//!   per-channel mean and variance of each folded layer's pre-normalization
//!   value, and the population estimate `E[x]`, `Var[x]` (unbiased) a
//!   refold needs.
//! - [`store`]: persistence. A byte blob of adapted parameters (an
//!   "overlay") in a NOR flash region, as two A/B slots with sequence
//!   numbers and CRCs, so that a power cut at any moment of a save leaves
//!   the previous valid parameters. Generic over the `embedded-storage` 0.3
//!   [`NorFlash`](embedded_storage::nor_flash::NorFlash) traits;
//!   [`store::RamFlash`] is a RAM-backed flash with real NOR semantics for
//!   tests and QEMU.
//!
//! Feeding the engine's layer outputs to [`stats`], the int8 refold, tail
//! training and the overlay the engine reads come later.

pub mod stats;
pub mod store;
