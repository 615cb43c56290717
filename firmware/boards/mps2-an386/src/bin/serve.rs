//! `serve` on this board: inference over the serial protocol (docs/SERIAL.md) on the console UART (`normcore_firmware::programs::serve`); with the `adapt` feature (a default) also the protocol's adaptation commands (`normcore_firmware::programs::serve_adapt`).
#![no_std]
#![no_main]

#[cfg(feature = "adapt")]
normcore_firmware::bin!(serve_adapt, normcore_mps2_an386::Mps2An386);
#[cfg(not(feature = "adapt"))]
normcore_firmware::bin!(serve, normcore_mps2_an386::Mps2An386);
