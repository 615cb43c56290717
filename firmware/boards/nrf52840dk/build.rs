//! Puts this board's `memory.x` where cortex-m-rt's `link.x` finds it,
//! passes the linker scripts to the binaries, and writes the assets (the
//! models and samples `cargo xtask assets` generated, from
//! `firmware/assets/` or `$NORMCORE_ASSETS`) into `$OUT_DIR/assets.rs` with
//! the mps2 firmware's own generator, so both embed the same thing.

use std::env;
use std::fs;
use std::path::PathBuf;

/// `firmware/build.rs`: its `assets` function, checks included. Its `main`
/// is the mps2 build's, unused here.
#[allow(dead_code)]
#[path = "../../build.rs"]
mod firmware_build;

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::copy("memory.x", out.join("memory.x")).expect("copy memory.x to OUT_DIR");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=../../build.rs");

    // cortex-m-rt's script (it INCLUDEs memory.x and the PAC's device.x),
    // then defmt's.
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    println!("cargo:rustc-link-arg-bins=--nmagic");

    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest.join("../../..");
    println!("cargo:rerun-if-env-changed=NORMCORE_ASSETS");
    let dir = match env::var_os("NORMCORE_ASSETS") {
        // Relative to the repository root, as the host tools take it.
        Some(d) if !d.is_empty() => root.join(d),
        _ => root.join("firmware").join("assets"),
    };
    if let Err(e) = firmware_build::assets(&dir, &out) {
        println!("cargo::error=firmware assets in {}: {e}", dir.display());
        println!(
            "cargo::error=run `cargo xtask assets` (from the repository root) to train the \
             model and write model-f32.ncm, model-int8.ncm and samples.bin"
        );
    }
}
