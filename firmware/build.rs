//! Puts `memory.x` where cortex-m-rt's `link.x` finds it and passes the
//! linker scripts to the binaries only (the library is never linked, and a
//! `-C link-arg` in `.cargo/config.toml` would be lost whenever `RUSTFLAGS`
//! is set in the environment).
//!
//! Also turns the assets the host generated (`cargo xtask assets`: two model
//! files and `samples.bin`, in `assets/` or `$NORMCORE_ASSETS`) into
//! `$OUT_DIR/assets.rs`, which the `infer` binary includes: the model files
//! embedded 16-aligned, the samples as typed arrays, and the arena size
//! from the model headers. The layout of `samples.bin` is documented in
//! `host-trainer/src/assets.rs`; it is checked here so that a stale or
//! mismatched file fails the build, not the device.

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// What to tell a user whose assets are missing or stale.
const HINT: &str = "run `cargo xtask assets` (from the repository root) to train the model and \
                    write model-f32.ncm, model-int8.ncm and samples.bin";

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

    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-env-changed=NORMCORE_ASSETS");
    let dir = match env::var_os("NORMCORE_ASSETS") {
        // Relative to the repository root, as the host tools take it.
        Some(d) if !d.is_empty() => manifest.join("..").join(d),
        _ => manifest.join("assets"),
    };
    if let Err(e) = assets(&dir, &out) {
        // Fails the build with these lines as its error messages.
        println!("cargo::error=firmware assets in {}: {e}", dir.display());
        println!("cargo::error={HINT}");
    }
}

/// Header fields of a model file the firmware's build needs.
struct ModelHeader {
    int8: bool,
    arena: u32,
    classes: u32,
    features: u32,
    crc: u32,
}

/// A `u16` field of `samples.bin` (its layout: `host-trainer/src/assets.rs`).
fn u16_at(b: &[u8], at: usize) -> u32 {
    u32::from(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// A `u32` field of `samples.bin`.
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The header fields the firmware's build needs, from core's own parser
/// (`Model::parse`, the device's validation, run on the host here), so a
/// file the device would reject fails the build instead.
fn model_header(b: &[u8]) -> Result<ModelHeader, String> {
    use normcore::model::{file_crc, Kind, Model};
    // The parser reads in place: an aligned copy.
    let mut words = vec![0u32; b.len().div_ceil(4)];
    let aligned = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..b.len()];
    aligned.copy_from_slice(b);
    let m = Model::parse(aligned).map_err(|e| format!("not a valid model file: {e}"))?;
    let h = m.header();
    let u = |v: usize| u32::try_from(v).map_err(|_| format!("{v} does not fit u32"));
    Ok(ModelHeader {
        int8: h.kind == Kind::Int8,
        arena: u(h.arena_bytes)?,
        classes: u(h.classes)?,
        features: u(h.input.sample_len().map_err(|e| e.to_string())?)?,
        crc: file_crc(aligned),
    })
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, String> {
    let path = dir.join(name);
    println!("cargo:rerun-if-changed={}", path.display());
    fs::read(&path).map_err(|e| format!("cannot read {name}: {e}"))
}

/// Rust source for a `[[T; inner]; outer]` static from `values`.
fn array<T: Copy>(
    src: &mut String,
    doc: &str,
    name: &str,
    ty: &str,
    (outer, inner): (usize, usize),
    values: &[T],
    show: impl Fn(T) -> String,
) {
    let _ = writeln!(src, "/// {doc}");
    let _ = writeln!(src, "#[no_mangle]");
    let _ = writeln!(src, "pub static {name}: [[{ty}; {inner}]; {outer}] = [");
    for row in values.chunks_exact(inner.max(1)).take(outer) {
        let items: Vec<String> = row.iter().map(|&v| show(v)).collect();
        let _ = writeln!(src, "    [{}],", items.join(", "));
    }
    let _ = writeln!(src, "];");
}

/// Also called by the boards' build scripts (`boards/*/build.rs` include
/// this file as a module): one definition of the assets' Rust form.
pub(crate) fn assets(dir: &Path, out: &Path) -> Result<(), String> {
    if !dir.is_dir() {
        return Err("the directory does not exist".into());
    }
    let f32_bytes = read(dir, "model-f32.ncm")?;
    let i8_bytes = read(dir, "model-int8.ncm")?;
    let samples = read(dir, "samples.bin")?;
    let fh = model_header(&f32_bytes).map_err(|e| format!("model-f32.ncm: {e}"))?;
    let qh = model_header(&i8_bytes).map_err(|e| format!("model-int8.ncm: {e}"))?;
    if fh.int8 || !qh.int8 {
        return Err("model-f32.ncm must be an f32 file and model-int8.ncm an int8 file".into());
    }
    if (fh.features, fh.classes) != (qh.features, qh.classes) {
        return Err("the two model files have different input or output shapes".into());
    }

    // samples.bin (host-trainer/src/assets.rs).
    if samples.len() < 32 || &samples[..4] != b"NCSP" || u16_at(&samples, 4) != 1 {
        return Err("samples.bin: not a version-1 samples file".into());
    }
    let (n, f, c) = (
        u32_at(&samples, 8) as usize,
        u32_at(&samples, 12) as usize,
        u32_at(&samples, 16) as usize,
    );
    if n == 0 || samples.len() != 32 + n * (5 * f + 5 * c + 2) {
        return Err(format!(
            "samples.bin: {} bytes do not hold {n} samples of {f} values and {c} classes",
            samples.len()
        ));
    }
    if normcore::model::crc32(&samples[32..]) != u32_at(&samples, 28) {
        return Err("samples.bin: CRC mismatch (corrupt file)".into());
    }
    if (f as u32, c as u32) != (fh.features, fh.classes) {
        return Err(format!(
            "samples.bin has {f} values and {c} classes per sample, the models {} and {}",
            fh.features, fh.classes
        ));
    }
    if (u32_at(&samples, 20), u32_at(&samples, 24)) != (fh.crc, qh.crc) {
        return Err("samples.bin was generated for other model files (stale assets)".into());
    }
    let mut at = 32;
    let mut words = |len: usize| -> Vec<u32> {
        let v = (0..len).map(|i| u32_at(&samples, at + 4 * i)).collect();
        at += 4 * len;
        v
    };
    let input_f32 = words(n * f);
    let expected_f32 = words(n * c);
    let input_i8: Vec<i8> = samples[at..at + n * f].iter().map(|&b| b as i8).collect();
    at += n * f;
    let expected_i8: Vec<i8> = samples[at..at + n * c].iter().map(|&b| b as i8).collect();
    at += n * c;
    let labels: Vec<u16> = (0..n)
        .map(|i| u16_at(&samples, at + 2 * i) as u16)
        .collect();
    if labels.iter().any(|&l| usize::from(l) >= c) {
        return Err("samples.bin: a label is not below the class count".into());
    }

    fs::write(out.join("model-f32.ncm"), &f32_bytes).map_err(|e| e.to_string())?;
    fs::write(out.join("model-int8.ncm"), &i8_bytes).map_err(|e| e.to_string())?;

    let mut src = String::new();
    let _ = writeln!(
        src,
        "// Generated by firmware/build.rs from {}; do not edit.\n",
        dir.display()
    );
    let consts = [
        ("SAMPLES", n, "Embedded test samples."),
        ("FEATURES", f, "Input values per sample (`h·w·c`)."),
        ("CLASSES", c, "Logits per sample."),
        (
            "ARENA_BYTES",
            fh.arena.max(qh.arena) as usize,
            "Arena bytes: the larger of the two models' `arena_bytes`.",
        ),
    ];
    for (name, v, doc) in consts {
        let _ = writeln!(src, "/// {doc}\npub const {name}: usize = {v};");
    }
    let _ = writeln!(
        src,
        "/// A model file, aligned as `Model::parse` requires (docs/FORMAT.md).\n\
         #[repr(C, align(16))]\n\
         pub struct AlignedModel<const N: usize>(pub [u8; N]);"
    );
    for (name, file, len, doc) in [
        (
            "NORMCORE_MODEL_F32",
            "model-f32.ncm",
            f32_bytes.len(),
            "The f32 model file.",
        ),
        (
            "NORMCORE_MODEL_INT8",
            "model-int8.ncm",
            i8_bytes.len(),
            "The int8 model file.",
        ),
    ] {
        let _ = writeln!(
            src,
            "/// {doc}\n#[no_mangle]\npub static {name}: AlignedModel<{len}> = \
             AlignedModel(*include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{file}\")));"
        );
    }
    array(
        &mut src,
        "Inputs of the f32 model, NHWC per sample.",
        "NORMCORE_SAMPLES_F32",
        "f32",
        (n, f),
        &input_f32,
        |v| format!("f32::from_bits({v:#010x})"),
    );
    array(
        &mut src,
        "Inputs of the int8 model, quantized with its input scale and zero point.",
        "NORMCORE_SAMPLES_I8",
        "i8",
        (n, f),
        &input_i8,
        |v| v.to_string(),
    );
    array(
        &mut src,
        "The host engine's f32 logits (bit patterns) for each sample.",
        "NORMCORE_SAMPLES_EXPECTED_F32",
        "u32",
        (n, c),
        &expected_f32,
        |v| format!("{v:#010x}"),
    );
    array(
        &mut src,
        "The host engine's int8 logits for each sample.",
        "NORMCORE_SAMPLES_EXPECTED_I8",
        "i8",
        (n, c),
        &expected_i8,
        |v| v.to_string(),
    );
    let shown: Vec<String> = labels.iter().map(u16::to_string).collect();
    let _ = writeln!(
        src,
        "/// The samples' labels.\n#[no_mangle]\npub static NORMCORE_SAMPLES_LABELS: [u16; {n}] = [{}];",
        shown.join(", ")
    );
    fs::write(out.join("assets.rs"), src).map_err(|e| e.to_string())
}
