//! The firmware's logs from the host's side: `key=value` fields
//! ([`log_field`], [`log_num`]), the `infer` program's report
//! ([`parse_infer`]), the `finetune` program's ([`parse_finetune`]), and
//! the default assets they embed (generated here with the trainer's
//! library, as `cargo xtask assets` does).
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

/// One run of `finetune` over the evaluation half.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinetuneEval {
    /// Correct predictions.
    pub correct: usize,
    /// Samples run.
    pub total: usize,
    /// CRC-32 of all outputs.
    pub digest: u32,
    /// Instructions (or cycles) per inference.
    pub cost: u64,
}

/// One re-estimation pass of `finetune` (one BN layer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinetunePass {
    /// The layer refolded.
    pub layer: usize,
    /// Samples observed.
    pub samples: usize,
    /// Values per channel the statistics came from.
    pub values: u64,
    /// Instructions (or cycles) of the pass's `observe` calls, summed.
    pub cost: u64,
    /// The same per sample.
    pub per_sample: u64,
    /// Instructions (or cycles) of the refold (`finish_pass`).
    pub refold: u64,
}

/// Tail training in `finetune` (its `finetune tail:` line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinetuneTail {
    /// Epochs over the adaptation half.
    pub epochs: usize,
    /// Labeled samples per epoch.
    pub samples: usize,
    /// SGD steps taken.
    pub steps: u32,
    /// Learning rate and momentum.
    pub lr: f32,
    /// Momentum.
    pub momentum: f32,
    /// γ, β of the BN layer feeding the dense one trained too.
    pub train_bn: bool,
    /// Mean loss of the first and of the last epoch.
    pub loss_first: f32,
    /// Mean loss of the last epoch.
    pub loss_last: f32,
    /// Instructions (or cycles) of every step, summed.
    pub cost: u64,
    /// The same per step.
    pub per_step: u64,
    /// Instructions (or cycles) of `Tail::commit`.
    pub commit: u64,
    /// CRC-32 of the overlay after the commit.
    pub crc: u32,
}

/// `finetune`'s whole report (see `normcore_firmware::programs::finetune`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FinetuneReport {
    /// What the costs count: `instructions` (QEMU) or `cycles`.
    pub unit: String,
    /// What was adapted: `restat` or `restat+tail`.
    pub method: String,
    /// A saved overlay was found at boot (`finetune saved:`).
    pub saved_found: bool,
    /// Adaptation samples.
    pub adapt: usize,
    /// Evaluation samples.
    pub eval: usize,
    /// The drift's gain (Q8), offset (levels) and the input zero point.
    pub gain_q8: i32,
    /// Offset in levels.
    pub offset: i32,
    /// The model's input zero point.
    pub zero_point: i32,
    /// Clean inputs, plain engine.
    pub clean: FinetuneEval,
    /// Shifted inputs, plain engine.
    pub shifted: FinetuneEval,
    /// Shifted inputs, after re-estimation.
    pub adapted: FinetuneEval,
    /// Shifted inputs, after tail training (`restat+tail` only).
    pub tuned: Option<FinetuneEval>,
    /// Tail training (`restat+tail` only).
    pub tail: Option<FinetuneTail>,
    /// Shifted inputs, with the overlay reloaded from the store.
    pub reload: FinetuneEval,
    /// The passes, in order.
    pub passes: Vec<FinetunePass>,
    /// Instructions of the whole re-estimation (observe and refolds).
    pub restat_cost: u64,
    /// Instructions of one adaptation sample over every pass.
    pub per_sample: u64,
    /// Instructions of every refold.
    pub refold: u64,
    /// Instructions of one plain inference.
    pub inference: u64,
    /// CRC-32 of the overlay after re-estimation.
    pub restat_crc: u32,
    /// Overlay bytes.
    pub overlay_bytes: usize,
    /// CRC-32 of the overlay saved (after every step).
    pub overlay_crc: u32,
    /// CRC-32 of the overlay reloaded from the store.
    pub reload_crc: u32,
    /// The re-estimation workspace, bytes.
    pub restat_bytes: usize,
    /// The tail's workspace, bytes (0 without it).
    pub tail_bytes: usize,
    /// RAM adaptation needs beyond the arena (core's `adapt::plan`).
    pub adaptation_bytes: usize,
    /// The shared scratch buffer, bytes.
    pub scratch_bytes: usize,
    /// The flash region, bytes.
    pub store_bytes: usize,
    /// The static arena, bytes.
    pub arena_bytes: usize,
    /// The save's sequence number.
    pub seq: u32,
    /// Instructions of the save.
    pub save_cost: u64,
    /// The device found the reloaded overlay and outputs identical.
    pub identical: bool,
    /// Stack high-water mark, bytes.
    pub stack_high_water: usize,
}

/// Parse `finetune`'s decoded log (level and message per line). Every
/// line must be there: a missing one is an error naming it.
pub fn parse_finetune(text: &str) -> Result<FinetuneReport> {
    let mut r = FinetuneReport::default();
    let mut seen: Vec<&str> = Vec::new();
    for line in text.lines() {
        let msg = line.split_once(' ').map_or(line, |(_, m)| m.trim_start());
        let Some(rest) = msg.strip_prefix("finetune ") else {
            if msg.starts_with("stack:") {
                r.stack_high_water = num(msg, "high_water")?;
                seen.push("stack");
            }
            continue;
        };
        let Some((what, _)) = rest.split_once(':') else {
            continue;
        };
        // The cost field: `instructions=` under QEMU, `cycles=` with DWT.
        let cost = |msg: &str| -> Result<u64> {
            for key in ["instructions", "cycles"] {
                if field(msg, key).is_some() {
                    return num(msg, key);
                }
            }
            Err(format!("no `instructions=` or `cycles=` in: {line}"))
        };
        let eval = |msg: &str| -> Result<FinetuneEval> {
            Ok(FinetuneEval {
                correct: num(msg, "correct")?,
                total: num(msg, "total")?,
                digest: hex(field(msg, "digest").ok_or(format!("no digest in: {line}"))?)?,
                cost: cost(msg).unwrap_or(0),
            })
        };
        let crc = |msg: &str| hex(field(msg, "crc").ok_or(format!("no crc in: {line}"))?);
        match what {
            "scenario" => {
                r.adapt = num(msg, "adapt")?;
                r.eval = num(msg, "eval")?;
                r.gain_q8 = num(msg, "gain_q8")?;
                r.offset = num(msg, "offset")?;
                r.zero_point = num(msg, "zero_point")?;
                r.method = field(msg, "method")
                    .ok_or(format!("no method in: {line}"))?
                    .to_owned();
            }
            "saved" => r.saved_found = num::<u8>(msg, "found")? == 1,
            "clean" => r.clean = eval(msg)?,
            "shifted" => r.shifted = eval(msg)?,
            "adapted" => r.adapted = eval(msg)?,
            "tuned" => r.tuned = Some(eval(msg)?),
            "tail" => {
                r.tail = Some(FinetuneTail {
                    epochs: num(msg, "epochs")?,
                    samples: num(msg, "samples")?,
                    steps: num(msg, "steps")?,
                    lr: num(msg, "lr")?,
                    momentum: num(msg, "momentum")?,
                    train_bn: num::<u8>(msg, "train_bn")? == 1,
                    loss_first: num(msg, "loss_first")?,
                    loss_last: num(msg, "loss_last")?,
                    cost: cost(msg)?,
                    per_step: num(msg, "per_step")?,
                    commit: num(msg, "commit")?,
                    crc: crc(msg)?,
                })
            }
            "reload" => {
                r.reload = eval(msg)?;
                r.reload_crc = crc(msg)?;
                r.identical = num::<u8>(msg, "identical")? == 1;
            }
            "restat" => {
                r.unit = ["instructions", "cycles"]
                    .into_iter()
                    .find(|k| field(msg, k).is_some())
                    .unwrap_or("?")
                    .to_owned();
                r.restat_cost = cost(msg)?;
                r.per_sample = num(msg, "per_sample")?;
                r.refold = num(msg, "refold")?;
                r.inference = num(msg, "inference")?;
                r.restat_crc = crc(msg)?;
                let passes: usize = num(msg, "passes")?;
                if passes != r.passes.len() {
                    return Err(format!(
                        "{passes} passes announced, {} pass lines before: {line}",
                        r.passes.len()
                    ));
                }
            }
            "overlay" => {
                r.overlay_bytes = num(msg, "bytes")?;
                r.overlay_crc = crc(msg)?;
            }
            "ram" => {
                r.restat_bytes = num(msg, "restat")?;
                r.tail_bytes = num(msg, "tail")?;
                r.adaptation_bytes = num(msg, "adaptation")?;
                r.scratch_bytes = num(msg, "scratch")?;
                r.store_bytes = num(msg, "store")?;
                r.arena_bytes = num(msg, "arena")?;
            }
            "store" => {
                r.seq = num(msg, "seq")?;
                r.save_cost = cost(msg)?;
            }
            pass if pass.starts_with("pass ") => {
                let index: usize = pass[5..]
                    .parse()
                    .map_err(|_| format!("bad pass number in: {line}"))?;
                if index != r.passes.len() {
                    return Err(format!("pass lines out of order at: {line}"));
                }
                r.passes.push(FinetunePass {
                    layer: num(msg, "layer")?,
                    samples: num(msg, "samples")?,
                    values: num(msg, "values")?,
                    cost: cost(msg)?,
                    per_sample: num(msg, "per_sample")?,
                    refold: num(msg, "refold")?,
                });
                continue;
            }
            _ => continue,
        }
        seen.push(what);
    }
    let tail: &[&str] = match r.method.as_str() {
        "restat+tail" => &["tail", "tuned"],
        "restat" => &[],
        m => return Err(format!("unknown method `{m}` in:\n{text}")),
    };
    for &want in [
        "scenario", "saved", "clean", "shifted", "restat", "adapted", "overlay", "ram", "store",
        "reload", "stack",
    ]
    .iter()
    .chain(tail)
    {
        if !seen.contains(&want) {
            return Err(format!("no `finetune {want}:` line in the log:\n{text}"));
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

    #[test]
    fn parses_finetunes_report() {
        let text = "\
INFO  normcore-firmware finetune on microbit (QEMU, nRF51822, Cortex-M0)
INFO  model int8: bytes=9776 layers=3 bn_layers=2 input=8x8x1 classes=10 arena=96
INFO  finetune scenario: samples=64 adapt=32 eval=32 gain_q8=154 offset=5 zero_point=-128 method=restat
INFO  finetune saved: found=0
INFO  finetune clean: correct=31 total=32 digest=0x0357ba37 instructions=112997
INFO  finetune shifted: correct=23 total=32 digest=0x560c6ee9 instructions=112997
INFO  finetune pass 0: layer=0 samples=32 values=32 instructions=4205339 per_sample=131417 refold=516258
INFO  finetune pass 1: layer=1 samples=32 values=32 instructions=5348724 per_sample=167148 refold=516188
INFO  finetune restat: passes=2 samples=32 instructions=10586508 per_sample=298564 refold=1032445 inference=112997 crc=0x4b17e4e3
INFO  finetune adapted: correct=29 total=32 digest=0x3f0ba66f instructions=113535
INFO  finetune overlay: bytes=1936 entries=2 crc=0x4b17e4e3
INFO  finetune ram: overlay=1936 restat=1024 tail=0 adaptation=2960 scratch=1936 store=4096 arena=384 (bytes)
INFO  finetune store: seq=1 region=4096 slot=2048 capacity=2024 saved=1936 instructions=55999
INFO  finetune reload: seq=1 bytes=1936 crc=0x4b17e4e3 correct=29 total=32 digest=0x3f0ba66f identical=1
INFO  stack: high_water=3012 size=8000 (bytes)
";
        let r = parse_finetune(text).unwrap();
        assert_eq!(
            (r.adapt, r.eval, r.gain_q8, r.offset, r.zero_point),
            (32, 32, 154, 5, -128)
        );
        assert_eq!(
            r.clean,
            FinetuneEval {
                correct: 31,
                total: 32,
                digest: 0x0357_ba37,
                cost: 112_997
            }
        );
        assert_eq!(
            (r.shifted.correct, r.adapted.correct, r.reload.correct),
            (23, 29, 29)
        );
        assert_eq!(r.passes.len(), 2);
        assert_eq!(r.passes[1].layer, 1);
        assert_eq!(r.passes[1].per_sample, 167_148);
        assert_eq!(r.unit, "instructions");
        assert_eq!(
            (r.restat_cost, r.per_sample, r.refold, r.inference),
            (10_586_508, 298_564, 1_032_445, 112_997)
        );
        assert_eq!(
            (r.overlay_bytes, r.overlay_crc, r.reload_crc),
            (1936, 0x4b17_e4e3, 0x4b17_e4e3)
        );
        assert_eq!(
            (
                r.restat_bytes,
                r.scratch_bytes,
                r.store_bytes,
                r.arena_bytes
            ),
            (1024, 1936, 4096, 384)
        );
        assert_eq!((r.seq, r.save_cost), (1, 55_999));
        assert!(r.identical);
        assert_eq!(r.stack_high_water, 3012);
        // A missing line is an error naming it; passes must be complete.
        let cut: String = text
            .lines()
            .filter(|l| !l.contains("finetune reload:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse_finetune(&cut)
            .unwrap_err()
            .contains("finetune reload:"));
        let no_pass: String = text
            .lines()
            .filter(|l| !l.contains("finetune pass 1:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse_finetune(&no_pass)
            .unwrap_err()
            .contains("2 passes announced"));
        assert_eq!((r.method.as_str(), r.saved_found), ("restat", false));
        assert_eq!((r.tail.as_ref(), r.tuned.as_ref()), (None, None));
        assert_eq!((r.tail_bytes, r.adaptation_bytes), (0, 2960));
        assert_eq!(r.restat_crc, 0x4b17_e4e3);
    }

    #[test]
    fn parses_finetunes_tail_lines() {
        let text = "\
INFO  finetune scenario: samples=64 adapt=32 eval=32 gain_q8=154 offset=5 zero_point=-128 method=restat+tail
INFO  finetune saved: found=1 seq=3 bytes=2896 crc=0x6afbd4fe correct=30 total=32 digest=0x0a142f0f
INFO  finetune clean: correct=31 total=32 digest=0x0357ba37 instructions=15055
INFO  finetune shifted: correct=23 total=32 digest=0x560c6ee9 instructions=15055
INFO  finetune pass 0: layer=0 samples=32 values=32 instructions=423521 per_sample=13235 refold=97287
INFO  finetune pass 1: layer=1 samples=32 values=32 instructions=602647 per_sample=18833 refold=96194
INFO  finetune restat: passes=2 samples=32 instructions=1219649 per_sample=32068 refold=193481 inference=15055 crc=0x70754b54
INFO  finetune adapted: correct=29 total=32 digest=0x3f0ba66f instructions=15460
INFO  finetune tail: epochs=10 samples=32 steps=320 lr=0.01 momentum=0.9 train_bn=1 loss_first=0.018913656 loss_last=0.0010990442 instructions=10284874 per_step=32140 commit=693234 inference=15055 crc=0x6afbd4fe
INFO  finetune tuned: correct=30 total=32 digest=0x0a142f0f instructions=15532
INFO  finetune overlay: bytes=2896 entries=3 crc=0x6afbd4fe
INFO  finetune ram: overlay=2896 restat=1024 tail=4344 adaptation=7240 scratch=4344 store=6144 arena=384 (bytes)
INFO  finetune store: seq=4 region=6144 slot=3072 capacity=3048 saved=2896 instructions=64963
INFO  finetune reload: seq=4 bytes=2896 crc=0x6afbd4fe correct=30 total=32 digest=0x0a142f0f identical=1
INFO  stack: high_water=7440 size=4180496 (bytes)
";
        let r = parse_finetune(text).unwrap();
        assert_eq!((r.method.as_str(), r.saved_found), ("restat+tail", true));
        let t = r.tail.as_ref().unwrap();
        assert_eq!((t.epochs, t.samples, t.steps), (10, 32, 320));
        assert_eq!((t.lr, t.momentum, t.train_bn), (0.01, 0.9, true));
        assert_eq!(t.loss_first.to_bits(), 0.018_913_656f32.to_bits());
        assert_eq!(
            (t.cost, t.per_step, t.commit),
            (10_284_874, 32_140, 693_234)
        );
        assert_eq!((t.crc, r.restat_crc), (0x6afb_d4fe, 0x7075_4b54));
        assert_eq!(r.tuned.as_ref().map(|e| e.correct), Some(30));
        assert_eq!((r.tail_bytes, r.adaptation_bytes), (4344, 7240));
        // With the tail announced, its lines must be there.
        let cut: String = text
            .lines()
            .filter(|l| !l.contains("finetune tuned:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse_finetune(&cut)
            .unwrap_err()
            .contains("finetune tuned:"));
    }
}
