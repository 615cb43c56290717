//! The build step every board crate runs (`build.rs`: one call to
//! [`build`]).
//!
//! # Where the assets come from
//! `$NORMCORE_ASSETS` names the directory (relative paths are taken from
//! the repository root, as the host tools take them), else
//! `firmware/assets/` (what `cargo xtask assets` writes for the demo). It
//! holds `samples.bin` and one or both of `model-f32.ncm` and
//! `model-int8.ncm` (`cargo xtask firmware infer --model PATH` writes such
//! a directory for a user's own model).
//!
//! # What is checked, before any Rust is generated
//! - every model parses with `Model::parse` (the device's own validation);
//! - it is the kind its name says, and its input size and class count are
//!   the samples';
//! - the samples' outputs were computed for these very files (the CRCs in
//!   `samples.bin`);
//! - it fits the board: model files + samples + the board's code budget ≤
//!   the `FLASH` length in its `memory.x`, and the arena + the board's
//!   stack budget ≤ the `RAM` length. The budgets are the board crate's
//!   measured figures ([`Budget`]).
//!
//! A failure is a `cargo::error` line naming the file, the board and the
//! numbers: the build stops there, nothing is truncated.
//!
//! # What is generated
//! `$OUT_DIR/assets.rs` ([`Assets::rust`]): the files as 16-aligned
//! statics, the samples' arrays, `ASSETS`, and the sizes the programs'
//! static buffers take: `ARENA_BYTES` (the largest `arena_bytes`), and for
//! the int8 model's adaptation (`finetune`) `OVERLAY_WORDS` and
//! `RESTAT_WORDS` (re-estimation), `TAIL_OVERLAY_WORDS` and `TAIL_WORDS`
//! (re-estimation then tail training), planned by core's own functions
//! with the scenario's settings ([`Adaptation`]).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use normcore::adapt::overlay::Overlay;
use normcore::adapt::restat::Restat;
use normcore::adapt::tail::Tail;
use normcore::model::{file_crc, Kind, Model};

use crate::samples::Samples;

/// The `finetune` scenario's settings (tail training's configuration, the
/// overlay's scopes), from the firmware's own source: one definition for
/// the build, the device and the host test.
#[path = "../../lib/src/scenario.rs"]
#[allow(dead_code)]
mod scenario;

/// The environment variable naming the assets directory.
pub const ASSETS_ENV: &str = "NORMCORE_ASSETS";

/// The model files an assets directory may hold, by kind.
pub const MODEL_FILES: [(Kind, &str); 2] =
    [(Kind::F32, "model-f32.ncm"), (Kind::Int8, "model-int8.ncm")];

/// The samples file of an assets directory.
pub const SAMPLES_FILE: &str = "samples.bin";

/// What a board crate's firmware needs besides the assets, measured on the
/// board (the figures and the commands that produced them are in the board
/// crate's `build.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Flash bytes of the largest program's code and constant data, the
    /// assets excluded (`cargo xtask size`).
    pub code: u64,
    /// RAM bytes besides the arena: the deepest stack a program reached
    /// (`infer`'s high-water mark) with a margin, and static data.
    pub ram: u64,
}

/// A board, as its build script describes it.
#[derive(Debug, Clone, Copy)]
pub struct Board {
    /// The board's name, for messages (its crate directory's name).
    pub name: &'static str,
    /// Its measured budgets.
    pub budget: Budget,
}

/// What the build step found wrong, as messages for `cargo::error`.
type Result<T> = std::result::Result<T, String>;

/// Run the build step for `board` (see the module docs). Called from the
/// board crate's `build.rs`, with the crate directory as the working
/// directory (cargo's rule).
pub fn build(board: &Board) {
    if let Err(e) = try_build(board) {
        for line in e.lines() {
            println!("cargo::error={line}");
        }
    }
}

fn try_build(board: &Board) -> Result<()> {
    let out = PathBuf::from(env::var_os("OUT_DIR").ok_or("cargo did not set OUT_DIR")?);
    let manifest = PathBuf::from(
        env::var_os("CARGO_MANIFEST_DIR").ok_or("cargo did not set CARGO_MANIFEST_DIR")?,
    );
    let memory = link(&manifest, &out, board)?;

    // The repository root: the board crate is firmware/boards/NAME.
    let root = manifest.join("../../..");
    println!("cargo:rerun-if-env-changed={ASSETS_ENV}");
    let dir = match env::var_os(ASSETS_ENV) {
        Some(d) if !d.is_empty() => root.join(d),
        _ => root.join("firmware").join("assets"),
    };
    let assets = Assets::read(&dir).map_err(|e| {
        format!(
            "firmware assets in {}: {e}\nrun `cargo xtask assets` (the demo's model) or \
             `cargo xtask firmware infer --model PATH.ncm` (your own), from the repository root",
            dir.display()
        )
    })?;
    assets.fits(board, &memory)?;
    let src = assets.rust(&dir);
    for (name, bytes) in &assets.files {
        fs::write(out.join(name), bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    fs::write(out.join("assets.rs"), src).map_err(|e| format!("{}: {e}", out.display()))
}

/// The `FLASH` and `RAM` lengths of a `memory.x`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Bytes of the `FLASH` region.
    pub flash: u64,
    /// Bytes of the `RAM` region.
    pub ram: u64,
}

impl Memory {
    /// Read the lengths from a `memory.x`'s `MEMORY` block: lines like
    /// `FLASH : ORIGIN = 0x00000000, LENGTH = 256K` (`K` and `M` suffixes,
    /// decimal or hex).
    pub fn parse(text: &str) -> Result<Memory> {
        let length = |region: &str| -> Result<u64> {
            let line = text
                .lines()
                .map(str::trim)
                .find(|l| l.split([' ', ':']).next() == Some(region))
                .ok_or_else(|| format!("memory.x has no `{region}` region"))?;
            let value = line
                .split("LENGTH")
                .nth(1)
                .and_then(|v| v.trim_start().strip_prefix('='))
                .map(|v| v.trim().trim_end_matches(',').trim())
                .ok_or_else(|| format!("memory.x: no LENGTH in `{line}`"))?;
            let (digits, unit) = match value.as_bytes().last() {
                Some(b'K') => (&value[..value.len() - 1], 1024),
                Some(b'M') => (&value[..value.len() - 1], 1024 * 1024),
                _ => (value, 1),
            };
            let n = match digits.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => digits.parse(),
            }
            .map_err(|_| format!("memory.x: cannot read the length `{value}`"))?;
            Ok(n * unit)
        };
        Ok(Memory {
            flash: length("FLASH")?,
            ram: length("RAM")?,
        })
    }
}

/// Copy `memory.x` where cortex-m-rt's `link.x` finds it and pass the
/// linker scripts to the binaries only (the library is never linked, and a
/// `-C link-arg` in `.cargo/config.toml` would be lost whenever `RUSTFLAGS`
/// is set). The board's memory regions.
fn link(manifest: &Path, out: &Path, board: &Board) -> Result<Memory> {
    let src = manifest.join("memory.x");
    println!("cargo:rerun-if-changed={}", src.display());
    let text =
        fs::read_to_string(&src).map_err(|e| format!("board {}: memory.x: {e}", board.name))?;
    fs::write(out.join("memory.x"), &text).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("cargo:rustc-link-search={}", out.display());
    // cortex-m-rt's script (it INCLUDEs memory.x), then defmt's.
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    // Sections need not be page-aligned in the file: keeps the ELF small.
    println!("cargo:rustc-link-arg-bins=--nmagic");
    Memory::parse(&text).map_err(|e| format!("board {}: {e}", board.name))
}

/// A model file of the assets directory, checked.
#[derive(Debug)]
struct ModelFile {
    name: &'static str,
    bytes: Vec<u8>,
    arena: u64,
    crc: u32,
    adapt: Adaptation,
}

/// What adaptation of a model needs, in words (4 bytes), as core plans it
/// for the `finetune` scenario (`normcore_firmware::scenario`, compiled
/// here too): zeros for a model it cannot adapt (no BN records), and tail
/// figures of 0 for a model without a tail to train.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Adaptation {
    /// The overlay for re-estimation alone: `Overlay::words_needed` for
    /// every BN layer (`scenario::SCOPE_RESTAT`).
    pub overlay_words: usize,
    /// Re-estimation's workspace: `Restat::words_needed` (f32 words).
    pub restat_words: usize,
    /// The overlay for re-estimation and tail training (`scenario::SCOPE`).
    pub tail_overlay_words: usize,
    /// Tail training's workspace: `Tail::words_needed` with
    /// `scenario::TAIL` (f32 words).
    pub tail_words: usize,
    /// `serve`'s overlay (feature `adapt`): core's
    /// `serial::adapt::words`, every part the model allows.
    pub serve_overlay_words: usize,
    /// `serve`'s workspace (f32 words): core's `serial::adapt::words`.
    pub serve_work_words: usize,
}

impl Adaptation {
    /// Core's plan for `model` (zeros if it cannot be adapted: the
    /// `finetune` program then says why, with core's own error).
    pub fn of(model: &Model<'_>) -> Adaptation {
        let (serve_overlay_words, serve_work_words) = normcore::serial::adapt::words(model);
        let (Ok(overlay_words), Ok(restat_words)) = (
            Overlay::words_needed(model, scenario::SCOPE_RESTAT),
            Restat::words_needed(model),
        ) else {
            return Adaptation {
                serve_overlay_words,
                serve_work_words,
                ..Adaptation::default()
            };
        };
        let (tail_overlay_words, tail_words) = match (
            Overlay::words_needed(model, scenario::SCOPE),
            Tail::words_needed(model, &scenario::TAIL),
        ) {
            (Ok(o), Ok(t)) => (o, t),
            _ => (0, 0),
        };
        Adaptation {
            overlay_words,
            restat_words,
            tail_overlay_words,
            tail_words,
            serve_overlay_words,
            serve_work_words,
        }
    }
}

/// An assets directory, read and checked.
#[derive(Debug)]
pub struct Assets {
    f32: Option<ModelFile>,
    int8: Option<ModelFile>,
    samples: Samples,
    samples_bytes: u64,
    /// Files to place in `$OUT_DIR` for `include_bytes!`.
    files: Vec<(&'static str, Vec<u8>)>,
}

/// Parse a model file with core's parser (an aligned copy: it reads in
/// place), checking its kind.
fn check_model(name: &'static str, kind: Kind, bytes: Vec<u8>) -> Result<ModelFile> {
    let mut words = vec![0u32; bytes.len().div_ceil(4)];
    let aligned = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()];
    aligned.copy_from_slice(&bytes);
    let m = Model::parse(aligned).map_err(|e| format!("{name}: not a valid model file: {e}"))?;
    if m.kind() != kind {
        return Err(format!(
            "{name} is a {:?} model; the name says {kind:?}",
            m.kind()
        ));
    }
    Ok(ModelFile {
        name,
        arena: m.arena_bytes() as u64,
        crc: file_crc(aligned),
        adapt: Adaptation::of(&m),
        bytes,
    })
}

impl Assets {
    /// Read and check the directory `dir` (module docs).
    pub fn read(dir: &Path) -> Result<Assets> {
        if !dir.is_dir() {
            return Err("the directory does not exist".into());
        }
        let read = |name: &str| -> Result<Option<Vec<u8>>> {
            let path = dir.join(name);
            println!("cargo:rerun-if-changed={}", path.display());
            match fs::read(&path) {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(format!("cannot read {name}: {e}")),
            }
        };
        let mut models = Vec::new();
        for (kind, name) in MODEL_FILES {
            models.push(match read(name)? {
                Some(b) => Some(check_model(name, kind, b)?),
                None => None,
            });
        }
        let int8 = models.pop().flatten();
        let f32 = models.pop().flatten();
        if f32.is_none() && int8.is_none() {
            return Err("no model file (model-f32.ncm or model-int8.ncm)".into());
        }
        let raw = read(SAMPLES_FILE)?.ok_or("no samples.bin")?;
        let samples = Samples::from_bytes(&raw).map_err(|e| format!("samples.bin: {e}"))?;
        let assets = Assets {
            f32,
            int8,
            samples,
            samples_bytes: raw.len() as u64,
            files: Vec::new(),
        };
        assets.match_samples()?;
        let files = [&assets.f32, &assets.int8]
            .into_iter()
            .flatten()
            .map(|m| (m.name, m.bytes.clone()))
            .collect();
        Ok(Assets { files, ..assets })
    }

    /// Each model has the samples' shapes, and the samples have exactly
    /// one part per model, computed for that very file.
    fn match_samples(&self) -> Result<()> {
        let s = &self.samples;
        for (m, part_crc) in [
            (&self.f32, s.f32.as_ref().map(|p| p.model_crc)),
            (&self.int8, s.int8.as_ref().map(|p| p.model_crc)),
        ] {
            match (m, part_crc) {
                (Some(m), Some(crc)) if crc == m.crc => {}
                (Some(m), Some(_)) => {
                    return Err(format!(
                        "samples.bin was generated for another {} (stale assets: regenerate them)",
                        m.name
                    ))
                }
                (Some(m), None) => {
                    return Err(format!("samples.bin has no outputs for {}", m.name))
                }
                (None, Some(_)) => {
                    return Err(
                        "samples.bin has outputs for a model file the directory lacks".into(),
                    )
                }
                (None, None) => {}
            }
        }
        for m in [&self.f32, &self.int8].into_iter().flatten() {
            let mut words = vec![0u32; m.bytes.len().div_ceil(4)];
            let aligned = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..m.bytes.len()];
            aligned.copy_from_slice(&m.bytes);
            let h = *Model::parse(aligned)
                .map_err(|e| format!("{}: {e}", m.name))?
                .header();
            let features = h
                .input
                .sample_len()
                .map_err(|e| format!("{}: {e}", m.name))?;
            if (features, h.classes) != (s.features, s.classes) {
                return Err(format!(
                    "{} takes {features} input values ({}x{}x{}) and gives {} classes; \
                     samples.bin has {} values and {} classes per sample",
                    m.name, h.input.h, h.input.w, h.input.c, h.classes, s.features, s.classes
                ));
            }
        }
        Ok(())
    }

    /// The arena the models need: the largest `arena_bytes`.
    pub fn arena_bytes(&self) -> u64 {
        [&self.f32, &self.int8]
            .into_iter()
            .flatten()
            .map(|m| m.arena)
            .max()
            .unwrap_or(0)
    }

    /// What re-estimating the int8 model needs (zeros without an int8
    /// model): the `finetune` program's buffers.
    pub fn adaptation(&self) -> Adaptation {
        self.int8.as_ref().map(|m| m.adapt).unwrap_or_default()
    }

    /// Flash bytes of what the firmware embeds: the model files and the
    /// samples (their arrays are `samples.bin` less its header).
    pub fn flash_bytes(&self) -> u64 {
        let models: u64 = [&self.f32, &self.int8]
            .into_iter()
            .flatten()
            .map(|m| m.bytes.len() as u64)
            .sum();
        models + self.samples_bytes
    }

    /// Whether the assets fit `board` with its `memory` (module docs).
    pub fn fits(&self, board: &Board, memory: &Memory) -> Result<()> {
        let models: Vec<String> = [&self.f32, &self.int8]
            .into_iter()
            .flatten()
            .map(|m| format!("{} ({} B, arena {} B)", m.name, m.bytes.len(), m.arena))
            .collect();
        let flash = self.flash_bytes() + board.budget.code;
        let ram = self.arena_bytes() + board.budget.ram;
        let mut problems = Vec::new();
        if flash > memory.flash {
            problems.push(format!(
                "flash: models and samples {} B + code {} B = {flash} B > {} B of FLASH",
                self.flash_bytes(),
                board.budget.code,
                memory.flash
            ));
        }
        if ram > memory.ram {
            problems.push(format!(
                "RAM: arena {} B + stack and static data {} B = {ram} B > {} B of RAM",
                self.arena_bytes(),
                board.budget.ram,
                memory.ram
            ));
        }
        if problems.is_empty() {
            return Ok(());
        }
        let hint = if models.len() > 1 {
            "fewer samples: `--samples N`; one kind of model; or a board with more memory"
        } else {
            "fewer samples: `--samples N`; or a board with more memory"
        };
        Err(format!(
            "{} does not fit board {}:\n{}\n({hint})",
            models.join(" and "),
            board.name,
            problems.join("\n")
        ))
    }

    /// The Rust source of `$OUT_DIR/assets.rs` (see
    /// `normcore_firmware::include_assets!`).
    pub fn rust(&self, dir: &Path) -> String {
        let s = &self.samples;
        let n = s.len();
        let mut src = String::new();
        let _ = writeln!(
            src,
            "// Generated by normcore-firmware-build from {}; do not edit.\n",
            dir.display()
        );
        let _ = writeln!(
            src,
            "use normcore_firmware::assets::{{Aligned, Assets, Samples}};\n"
        );
        for (name, v, doc) in [
            ("SAMPLES", n, "Embedded test samples."),
            ("FEATURES", s.features, "Input values per sample (`h·w·c`)."),
            ("CLASSES", s.classes, "Logits per sample."),
            (
                "ARENA_BYTES",
                self.arena_bytes() as usize,
                "Arena bytes: the largest of the models' `arena_bytes`.",
            ),
            (
                "OVERLAY_WORDS",
                self.adaptation().overlay_words,
                "Words of the int8 model's overlay for statistics re-estimation \
                 (core's `Overlay::words_needed`); 0 without an int8 model with BN.",
            ),
            (
                "SERVE_OVERLAY_WORDS",
                self.adaptation().serve_overlay_words,
                "Words of the overlay `serve` adapts the int8 model into (core's \
                 `serial::adapt::words`); 0 without an int8 model it can adapt.",
            ),
            (
                "SERVE_WORK_WORDS",
                self.adaptation().serve_work_words,
                "f32 words of `serve`'s adaptation workspace (core's \
                 `serial::adapt::words`); 0 without an int8 model it can adapt.",
            ),
            (
                "RESTAT_WORDS",
                self.adaptation().restat_words,
                "f32 words of the int8 model's re-estimation workspace (core's \
                 `Restat::words_needed`); 0 without an int8 model with BN.",
            ),
            (
                "TAIL_OVERLAY_WORDS",
                self.adaptation().tail_overlay_words,
                "Words of the int8 model's overlay for re-estimation and tail \
                 training (core's `Overlay::words_needed`, the scenario's `SCOPE`); \
                 0 without an int8 model with BN and a tail.",
            ),
            (
                "TAIL_WORDS",
                self.adaptation().tail_words,
                "f32 words of the int8 model's tail training workspace (core's \
                 `Tail::words_needed` with the scenario's `TAIL`); 0 without an int8 \
                 model with BN and a tail.",
            ),
        ] {
            let _ = writeln!(src, "/// {doc}\npub const {name}: usize = {v};");
        }
        let mut model = |m: &Option<ModelFile>, stat: &str| -> String {
            match m {
                Some(m) => {
                    let _ = writeln!(
                        src,
                        "/// {}, embedded 16-aligned.\n#[no_mangle]\npub static {stat}: Aligned<{}> = \
                         Aligned(*include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{}\")));",
                        m.name,
                        m.bytes.len(),
                        m.name
                    );
                    format!("Some(&{stat}.0)")
                }
                None => "None".into(),
            }
        };
        let f32_model = model(&self.f32, "NORMCORE_MODEL_F32");
        let int8_model = model(&self.int8, "NORMCORE_MODEL_INT8");
        let f32_bits = |v: &[f32]| v.iter().map(|x| format!("{:#010x}", x.to_bits())).collect();
        let show = |v: &[i8]| v.iter().map(i8::to_string).collect();
        let (fi, fe): (Vec<String>, Vec<String>) = match &s.f32 {
            Some(p) => (
                p.inputs
                    .iter()
                    .map(|x| format!("f32::from_bits({:#010x})", x.to_bits()))
                    .collect(),
                f32_bits(&p.expected),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let (qi, qe): (Vec<String>, Vec<String>) = match &s.int8 {
            Some(p) => (show(&p.inputs), show(&p.expected)),
            None => (Vec::new(), Vec::new()),
        };
        let labels: Vec<String> = s.labels.iter().map(u16::to_string).collect();
        for (name, ty, values, doc) in [
            (
                "NORMCORE_SAMPLES_F32",
                "f32",
                &fi,
                "Inputs of the f32 model, `[N, F]` NHWC.",
            ),
            (
                "NORMCORE_EXPECTED_F32",
                "u32",
                &fe,
                "The host engine's f32 logits (bit patterns), `[N, C]`.",
            ),
            (
                "NORMCORE_SAMPLES_I8",
                "i8",
                &qi,
                "Inputs of the int8 model, `[N, F]`.",
            ),
            (
                "NORMCORE_EXPECTED_I8",
                "i8",
                &qe,
                "The host engine's int8 logits, `[N, C]`.",
            ),
            ("NORMCORE_LABELS", "u16", &labels, "The samples' labels."),
        ] {
            let _ = writeln!(
                src,
                "/// {doc}\n#[no_mangle]\npub static {name}: [{ty}; {}] = [{}];",
                values.len(),
                values.join(", ")
            );
        }
        let _ = writeln!(
            src,
            "/// Everything this build embeds.\npub static ASSETS: Assets = Assets {{\n    \
             f32_model: {f32_model},\n    int8_model: {int8_model},\n    samples: Samples {{\n        \
             count: SAMPLES,\n        features: FEATURES,\n        classes: CLASSES,\n        \
             input_f32: &NORMCORE_SAMPLES_F32,\n        expected_f32: &NORMCORE_EXPECTED_F32,\n        \
             input_i8: &NORMCORE_SAMPLES_I8,\n        expected_i8: &NORMCORE_EXPECTED_I8,\n        \
             labels: &NORMCORE_LABELS,\n    }},\n    arena_bytes: ARENA_BYTES,\n}};"
        );
        src
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_lengths_are_read_from_memory_x() {
        let text = "MEMORY\n{\n  FLASH : ORIGIN = 0x00000000, LENGTH = 256K\n  RAM   : ORIGIN = 0x20000000, LENGTH = 16K\n}\n";
        assert_eq!(
            Memory::parse(text).unwrap(),
            Memory {
                flash: 256 * 1024,
                ram: 16 * 1024
            }
        );
        let mib = "FLASH : ORIGIN = 0x10000000, LENGTH = 4M\nRAM : ORIGIN = 0x38000000, LENGTH = 0x1000\n";
        assert_eq!(
            Memory::parse(mib).unwrap(),
            Memory {
                flash: 4 << 20,
                ram: 4096
            }
        );
        assert!(Memory::parse("FLASH : ORIGIN = 0, LENGTH = 4M\n").is_err());
        assert!(Memory::parse("FLASH : ORIGIN = 0, LENGTH = lots\nRAM : LENGTH = 1K").is_err());
    }
}
