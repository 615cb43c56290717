//! `uart_echo` on this board: a serial round trip on the console UART (`normcore_firmware::programs::uart_echo`).
#![no_std]
#![no_main]

normcore_firmware::bin!(uart_echo, normcore_mps2_an386::Mps2An386);
