//! The firmware's logs from the host's side: `key=value` fields
//! ([`log_field`], [`log_num`]), the `infer` program's report
//! ([`parse_infer`]), and the default assets it embeds (generated here with
//! the trainer's library, as `cargo xtask assets` does).
//!
//! `infer` prints one line per sample and model, then per model a result,
//! a parity and a cost summary (see `normcore_firmware::programs::infer`):
//!
//! ```text
//! INFO  sample 3 label=7 f32 class=7 bits=[0x4123abcd, ...]
//! INFO  sample 3 label=7 int8 class=7 q=[-12, 5, ...]
//! INFO  f32 result: correct=63 total=64 digest=0x1f099dd9
//! INFO  f32 host parity: identical=64 within_tolerance=64 argmax_equal=64 total=64
//! INFO  f32 layer 0 op=dense act=relu macs=2048 instructions=6876 per_mac=3.36
//! INFO  f32 inference: macs=3392 instructions=12768 layers=12549 per_mac=3.76 samples=64
//! INFO  stack: high_water=30808 size=4193892 (bytes)
//! ```

use std::path::PathBuf;

use normcore_trainer::assets::{self, AssetConfig, Assets};

/// An assets directory, read and checked as the firmware's build reads it
/// (`normcore_trainer::assets::load`).
pub use normcore_trainer::assets::load as load_assets;

use crate::qemu::Result;

/// The assets directory the firmware build reads (`firmware/assets`, or
/// `$NORMCORE_ASSETS` taken from the repository root).
pub fn assets_dir() -> PathBuf {
    assets::default_dir(&crate::root())
}

/// The default assets (digits-mlp on the built-in digits, 64 samples), as
/// `cargo xtask assets` makes them. Deterministic: files whose bytes do not
/// change are not rewritten, so the firmware is not rebuilt for nothing.
pub fn generate_assets() -> Result<Assets> {
    let cfg = AssetConfig {
        out_dir: assets_dir(),
        ..AssetConfig::default()
    };
    assets::generate(&cfg).map_err(|e| format!("generating the firmware assets: {e:#}"))
}

/// Generate the default assets unless the directory holds valid ones
/// (any valid assets let the firmware build; the parity tests regenerate).
pub fn ensure_assets() -> Result<()> {
    if assets::load(&assets_dir()).is_ok() {
        Ok(())
    } else {
        generate_assets().map(|_| ())
    }
}

/// One sample's logits as the device printed them.
#[derive(Debug, Clone, PartialEq)]
pub enum Logits {
    /// int8 levels.
    I8(Vec<i8>),
    /// f32 values (from their printed bit patterns: exact).
    F32(Vec<f32>),
}

/// One sample's line.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleOut {
    /// Index among the embedded samples.
    pub index: usize,
    /// Its label.
    pub label: u16,
    /// The predicted class.
    pub class: usize,
    /// The logits.
    pub logits: Logits,
}

/// One layer's cost line.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCost {
    /// Layer index.
    pub index: usize,
    /// Op name (`dense`, `conv2d`, ...).
    pub op: String,
    /// Activation name (`relu`, `none`, ...).
    pub act: String,
    /// Multiply-accumulates per inference.
    pub macs: u64,
    /// Instructions per inference (under `-icount`), averaged over samples.
    pub instructions: u64,
}

/// What `infer` reported for one model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelRun {
    /// Per-sample outputs, in order.
    pub samples: Vec<SampleOut>,
    /// Correct predictions.
    pub correct: usize,
    /// Samples run.
    pub total: usize,
    /// CRC-32 of all outputs.
    pub digest: u32,
    /// Outputs identical to the embedded host expectation (the device's own check).
    pub identical: usize,
    /// Per-layer costs.
    pub layers: Vec<LayerCost>,
    /// MACs per inference.
    pub macs: u64,
    /// Instructions per whole inference.
    pub instructions: u64,
    /// Sum of the per-layer instructions.
    pub layer_instructions: u64,
}

/// `infer`'s whole report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InferReport {
    /// The f32 model's.
    pub f32: ModelRun,
    /// The int8 model's.
    pub int8: ModelRun,
    /// Stack high-water mark, bytes.
    pub stack_high_water: usize,
}

/// The value of `key=` on the first line of `text` whose message (after
/// the level) starts with `prefix`.
pub fn log_field<'a>(text: &'a str, prefix: &str, key: &str) -> Option<&'a str> {
    text.lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, m)| m.trim_start()))
        .filter(|m| m.starts_with(prefix))
        .find_map(|m| field(m, key))
}

/// A number from a firmware log (see [`log_field`]).
pub fn log_num(text: &str, prefix: &str, key: &str) -> Result<u64> {
    log_field(text, prefix, key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no `{key}=` on the `{prefix}` line of the log:\n{text}"))
}

/// The value of `key=` among the words of `line`.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

fn num<T: std::str::FromStr>(line: &str, key: &str) -> Result<T> {
    let v = field(line, key).ok_or_else(|| format!("no `{key}=` in: {line}"))?;
    v.parse()
        .map_err(|_| format!("`{key}={v}` is not a number in: {line}"))
}

fn hex(v: &str) -> Result<u32> {
    u32::from_str_radix(v.trim().trim_start_matches("0x"), 16)
        .map_err(|e| format!("`{v}` is not a hex number: {e}"))
}

/// The list after `key=[`, up to `]`.
fn list<'a>(line: &'a str, key: &str) -> Result<Vec<&'a str>> {
    let start = line
        .find(&format!("{key}=["))
        .ok_or_else(|| format!("no `{key}=[...]` in: {line}"))?
        + key.len()
        + 2;
    let body = line[start..]
        .split(']')
        .next()
        .ok_or_else(|| format!("unterminated list in: {line}"))?;
    Ok(body
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect())
}

/// Parse `infer`'s decoded log (level and message per line).
pub fn parse_infer(text: &str) -> Result<InferReport> {
    let mut r = InferReport::default();
    for line in text.lines() {
        // Drop the level ("INFO  ").
        let msg = line.split_once(' ').map_or(line, |(_, m)| m.trim_start());
        let mut words = msg.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("sample"), Some(index), _) => {
                let index: usize = index
                    .parse()
                    .map_err(|_| format!("bad sample index in: {line}"))?;
                let label = num(msg, "label")?;
                let class = num(msg, "class")?;
                if msg.contains(" int8 ") {
                    let q = list(msg, "q")?
                        .iter()
                        .map(|v| v.parse::<i8>().map_err(|e| format!("{v}: {e} in: {line}")))
                        .collect::<Result<Vec<_>>>()?;
                    r.int8.samples.push(SampleOut {
                        index,
                        label,
                        class,
                        logits: Logits::I8(q),
                    });
                } else if msg.contains(" f32 ") {
                    let v = list(msg, "bits")?
                        .iter()
                        .map(|b| hex(b).map(f32::from_bits))
                        .collect::<Result<Vec<_>>>()?;
                    r.f32.samples.push(SampleOut {
                        index,
                        label,
                        class,
                        logits: Logits::F32(v),
                    });
                } else {
                    return Err(format!("sample line of no known model: {line}"));
                }
            }
            (Some(model @ ("f32" | "int8")), Some(what), rest) => {
                let run = if model == "f32" {
                    &mut r.f32
                } else {
                    &mut r.int8
                };
                match (what, rest) {
                    ("result:", _) => {
                        run.correct = num(msg, "correct")?;
                        run.total = num(msg, "total")?;
                        run.digest =
                            hex(field(msg, "digest").ok_or(format!("no digest in: {line}"))?)?;
                    }
                    ("host", Some("parity:")) => run.identical = num(msg, "identical")?,
                    ("layer", Some(i)) => run.layers.push(LayerCost {
                        index: i.parse().map_err(|_| format!("bad layer in: {line}"))?,
                        op: field(msg, "op").unwrap_or("?").to_owned(),
                        act: field(msg, "act").unwrap_or("?").to_owned(),
                        macs: num(msg, "macs")?,
                        instructions: num(msg, "instructions")?,
                    }),
                    ("inference:", _) => {
                        run.macs = num(msg, "macs")?;
                        run.instructions = num(msg, "instructions")?;
                        run.layer_instructions = num(msg, "layers")?;
                    }
                    _ => {}
                }
            }
            (Some("stack:"), _, _) => r.stack_high_water = num(msg, "high_water")?,
            _ => {}
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_from_the_first_line_with_the_prefix() {
        let text = "INFO  f32 result: correct=63 total=64\nINFO  int8 result: correct=62\n";
        assert_eq!(log_field(text, "int8 result:", "correct"), Some("62"));
        assert_eq!(log_num(text, "f32 result:", "total"), Ok(64));
        assert!(log_num(text, "f32 result:", "digest").is_err());
    }

    #[test]
    fn parses_every_kind_of_line() {
        let text = "\
INFO  normcore-firmware infer on mps2-an386 (QEMU)
INFO  sample 0 label=3 f32 class=3 bits=[0x3f800000, 0xc0000000]
INFO  sample 0 label=3 int8 class=0 q=[-12, 5]
INFO  f32 result: correct=1 total=1 digest=0x1f099dd9
INFO  f32 host parity: identical=1 within_tolerance=1 argmax_equal=1 total=1
INFO  int8 layer 0 op=dense act=relu macs=2048 instructions=6876 per_mac=3.36
INFO  int8 inference: macs=2048 instructions=7000 layers=6876 per_mac=3.42 samples=1
INFO  stack: high_water=30808 size=4193892 (bytes)
";
        let r = parse_infer(text).unwrap();
        assert_eq!(r.f32.samples[0].logits, Logits::F32(vec![1.0, -2.0]));
        assert_eq!(r.int8.samples[0].logits, Logits::I8(vec![-12, 5]));
        assert_eq!(r.int8.samples[0].class, 0);
        assert_eq!(
            (r.f32.correct, r.f32.total, r.f32.digest),
            (1, 1, 0x1f09_9dd9)
        );
        assert_eq!(r.f32.identical, 1);
        assert_eq!(r.int8.layers[0].op, "dense");
        assert_eq!(r.int8.layers[0].instructions, 6876);
        assert_eq!(
            (r.int8.macs, r.int8.instructions, r.int8.layer_instructions),
            (2048, 7000, 6876)
        );
        assert_eq!(r.stack_high_water, 30808);
    }
}
