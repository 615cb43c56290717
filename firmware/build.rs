//! Puts `memory.x` where cortex-m-rt's `link.x` finds it and passes the
//! linker scripts to the binaries only (the library is never linked, and a
//! `-C link-arg` in `.cargo/config.toml` would be lost whenever `RUSTFLAGS`
//! is set in the environment).

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");

    // cortex-m-rt's script (it INCLUDEs memory.x), then defmt's.
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    // Sections need not be page-aligned in the file: keeps the ELF small.
    println!("cargo:rustc-link-arg-bins=--nmagic");
}
