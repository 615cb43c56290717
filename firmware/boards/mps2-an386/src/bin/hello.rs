//! `hello` on this board: one BN layer, checked bit for bit by the host (`normcore_firmware::programs::hello`).
#![no_std]
#![no_main]

normcore_firmware::bin!(hello, normcore_mps2_an386::Mps2An386);
