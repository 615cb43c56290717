//! `bench` on this board: the cost of each kernel on fixed shapes (`normcore_firmware::programs::bench`).
#![no_std]
#![no_main]

normcore_firmware::bin!(bench, normcore_mps2_an385::Mps2An385);
