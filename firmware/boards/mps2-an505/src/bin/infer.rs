//! `infer` on this board: every embedded model on every embedded sample, parity with the host engine, costs (`normcore_firmware::programs::infer`).
#![no_std]
#![no_main]

normcore_firmware::bin!(infer, normcore_mps2_an505::Mps2An505);
