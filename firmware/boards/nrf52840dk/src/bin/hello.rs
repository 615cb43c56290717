//! `hello` on this board: one BN layer, checked bit for bit by the host (`normcore_firmware::programs::hello`).
#![no_std]
#![no_main]

normcore_firmware::bin!(hello, normcore_nrf52840dk::Nrf52840Dk);
