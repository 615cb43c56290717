//! `cfg(armv6m)` on ARMv6-M targets (Cortex-M0/M0+), which have no fault
//! status registers (HFSR, CFSR, BFAR, MMFAR).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(armv6m)");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv6m") {
        println!("cargo::rustc-cfg=armv6m");
    }
}
