//! `serve` on this board: inference over the serial protocol (docs/SERIAL.md) on the console UART (`normcore_firmware::programs::serve`).
#![no_std]
#![no_main]

normcore_firmware::bin!(serve, normcore_nrf52840dk::Nrf52840Dk);
