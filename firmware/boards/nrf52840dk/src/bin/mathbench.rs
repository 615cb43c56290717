//! `mathbench` on this board: the elementary functions' costs, core vs libm vs micromath (`normcore_firmware::programs::mathbench`).
#![no_std]
#![no_main]

normcore_firmware::bin!(mathbench, normcore_nrf52840dk::Nrf52840Dk);
