//! On-device adaptation of a folded model (paper Alg. 2 after deployment).
//!
//! - [`stats`]: statistics re-estimation, forward only: streaming per-channel
//!   mean and variance of each folded layer's pre-normalization value, and the
//!   population estimate `E[x]`, `Var[x]` (unbiased) a refold needs.

pub mod stats;
