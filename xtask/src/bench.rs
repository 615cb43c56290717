//! `cargo xtask bench firmware|trainer`.
//!
//! - `firmware`: build the firmware's `bench` binary, run it in QEMU
//!   (the default board, `mps2-an386`, Cortex-M4F) with `-icount shift=6`, and print its
//!   per-kernel costs as a table. The binary makes its own deterministic
//!   weights and inputs (no assets), times each of core's inference kernels
//!   once on fixed shapes (the paper MLP's dense layers, a small CNN's
//!   convolutions, depthwise, pooling, element-wise) and whole networks
//!   (the `cnn` preset and DS-CNN through the engine, per inference and
//!   per layer), checks that the two int8 weight forms agree, and logs one
//!   `bench kernel=... per_mac=...` line per run (see
//!   `normcore_firmware::programs::bench`).
//! - `firmware --check`: the instruction-count gate. Under `-icount` the
//!   counts are deterministic for a given compiler (the toolchain is
//!   pinned, `rust-toolchain.toml`), so every `bench` row and the demo
//!   model's `infer` rows (per layer and per inference, both kinds) are
//!   compared with the committed baseline, [`BASELINE`]: a row whose
//!   instructions rose by more than [`TOLERANCE_PERCENT`] %, or a baseline
//!   row that is no longer produced, fails the check, and the rows that
//!   moved are printed; improvements and new rows are reported, with the
//!   command that records them. `cargo xtask test` runs it.
//! - `firmware --update-baseline`: run the same and rewrite [`BASELINE`]
//!   (an explicit step, reviewed in the diff like code).
//! - `trainer`: the host trainer's benchmark, `normcore bench` (release).
//!
//! # The baseline file
//! `firmware/bench-baseline.tsv`: `#` comment lines (the board, how to
//! update), then one row per line, `NAME<TAB>INSTRUCTIONS`, sorted by
//! name. `NAME` is `bench KERNEL | SHAPE | FORM | ACT` for a `bench` row
//! and `infer KIND layer I OP ACT` / `infer KIND inference` for `infer`
//! on the demo's assets (`firmware/assets`, as `cargo xtask assets` makes
//! them). A line that is not of that form, an instruction count that is
//! not a number, a repeated name or another board than the one checked is
//! an error naming the line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use normcore_device_tools::boards;
use normcore_device_tools::build::{build, Build};
use normcore_device_tools::infer_log;
use normcore_device_tools::qemu::{run_qemu, RunOptions};

use super::{cargo, ensure_assets, root, run_in, setup, Result};

/// The committed baseline, relative to the repository root.
pub const BASELINE: &str = "firmware/bench-baseline.tsv";

/// A row fails the check when its instructions rise by more than this.
pub const TOLERANCE_PERCENT: u64 = 1;

/// What `cargo xtask bench firmware` does after running the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Print the table.
    Table,
    /// Compare with the baseline; fail on a regression.
    Check,
    /// Rewrite the baseline.
    Update,
}

const USAGE: &str =
    "usage: cargo xtask bench firmware [--board NAME] [--check | --update-baseline] \
     | cargo xtask bench trainer [ARGS]";

/// Run `cargo xtask bench ARGS`.
pub fn run(args: &[String]) -> Result {
    match args.split_first() {
        Some((what, rest)) if what == "firmware" => {
            let mut board = boards::default_board();
            let mut mode = Mode::Table;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--board" => {
                        let name = it.next().ok_or(USAGE)?;
                        board = boards::board(name).map_err(|e| e.to_string())?;
                    }
                    "--check" if mode == Mode::Table => mode = Mode::Check,
                    "--update-baseline" if mode == Mode::Table => mode = Mode::Update,
                    _ => return Err(USAGE.to_owned()),
                }
            }
            firmware(board, mode)
        }
        Some((what, rest)) if what == "trainer" => trainer(rest),
        _ => Err(USAGE.to_owned()),
    }
}

/// `cargo xtask bench firmware --check` on the default board (what
/// `cargo xtask test` runs).
pub fn check() -> Result {
    firmware(boards::default_board(), Mode::Check)
}

/// `normcore bench` in release, with `extra` arguments.
fn trainer(extra: &[String]) -> Result {
    let mut args = vec![
        "run".to_owned(),
        "--release".to_owned(),
        "--quiet".to_owned(),
        "-p".to_owned(),
        "normcore-cli".to_owned(),
        "--".to_owned(),
        "bench".to_owned(),
    ];
    args.extend(extra.iter().cloned());
    run_in(&root(), &cargo(), args, &[])
}

/// Build and run `board`'s `bench` (or, where its RAM cannot hold that,
/// `mathbench`: the elementary-function rows) under `-icount`; print the
/// table, or check / update the baseline (with `infer`'s rows).
fn firmware(board: &boards::Board, mode: Mode) -> Result {
    setup()?;
    // The firmware's build step embeds the assets into every binary's
    // crate, so they must exist even though `bench` does not use them.
    ensure_assets()?;
    let bin = if board.has("bench") {
        "bench"
    } else if board.has("mathbench") {
        "mathbench"
    } else {
        return Err(format!(
            "{} has neither `bench` nor `mathbench`",
            board.name
        ));
    };
    if mode != Mode::Table && board.name != boards::default_board().name {
        return Err(format!(
            "the baseline ({BASELINE}) is for {}, not {}",
            boards::default_board().name,
            board.name
        ));
    }
    let log = run_bin(board, bin)?;
    let rows: Vec<Row> = log.lines().filter_map(Row::parse).collect();
    if rows.is_empty() {
        return Err(format!("no `bench` lines in the firmware's log:\n{log}"));
    }
    let networks: Vec<Network> = log.lines().filter_map(Network::parse).collect();
    print_table(board, &rows, &networks);
    if mode == Mode::Table {
        return Ok(());
    }
    if rows.iter().any(|r| r.counter != "instructions") {
        return Err("the baseline holds instructions (QEMU -icount), not cycles".to_owned());
    }
    if std::env::var_os("NORMCORE_ASSETS").is_some_and(|v| !v.is_empty()) {
        return Err(
            "the baseline's `infer` rows are the demo's assets (firmware/assets): \
             unset NORMCORE_ASSETS"
                .to_owned(),
        );
    }
    let mut current = unique(rows.iter().map(|r| (r.name(), r.count)));
    current.extend(infer_rows(board)?);
    let path = root().join(BASELINE);
    match mode {
        Mode::Update => {
            let text = Baseline::render(board.name, &current);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            println!(
                "\nwrote {} rows to {BASELINE} (review the diff and commit it)",
                current.len()
            );
            Ok(())
        }
        _ => {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "{}: {e} (record one: cargo xtask bench firmware --update-baseline)",
                    path.display()
                )
            })?;
            let base = Baseline::parse(&text).map_err(|e| format!("{BASELINE}: {e}"))?;
            if base.board != board.name {
                return Err(format!(
                    "{BASELINE} is for board {}, the check ran on {}",
                    base.board, board.name
                ));
            }
            let cmp = compare(&base, &current);
            println!("\n{}", cmp.report());
            if cmp.failed() {
                Err(format!(
                    "instruction-count check failed against {BASELINE}: {} row(s) rose by more \
                     than {TOLERANCE_PERCENT} %, {} row(s) missing",
                    cmp.regressed.len(),
                    cmp.missing.len()
                ))
            } else {
                Ok(())
            }
        }
    }
}

/// Rows with repeated names told apart by their order: the second
/// `NAME` becomes `NAME #2` (`model_parse` of the int8 and the f32 file
/// share their columns).
fn unique(rows: impl IntoIterator<Item = (String, u64)>) -> Vec<(String, u64)> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    rows.into_iter()
        .map(|(name, v)| {
            let n = seen.entry(name.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                (name, v)
            } else {
                (format!("{name} #{n}"), v)
            }
        })
        .collect()
}

/// Build `bin` for `board` and run it in QEMU under `-icount`; its log.
fn run_bin(board: &boards::Board, bin: &str) -> Result<String> {
    let dir = build(
        board,
        &Build {
            bins: &[bin],
            quiet: true,
            ..Build::default()
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    run_elf(board, &dir.join(bin), bin)
}

fn run_elf(board: &boards::Board, elf: &std::path::Path, bin: &str) -> Result<String> {
    let opts = RunOptions {
        timeout: Duration::from_secs(300),
        ..RunOptions::default()
    };
    let out = run_qemu(board, elf, &opts)?;
    if !out.success() {
        return Err(format!("{bin} failed in QEMU:\n{}", out.describe()));
    }
    Ok(out.stdout_text())
}

/// `infer` on the demo's assets: per-layer and per-inference instructions
/// of both models, as baseline rows.
fn infer_rows(board: &boards::Board) -> Result<Vec<(String, u64)>> {
    let elf: PathBuf = super::build_infer_with(board, &[], None)?;
    let log = run_elf(board, &elf, "infer")?;
    let report = infer_log::parse_infer(&log).map_err(|e| format!("infer's log: {e}"))?;
    let mut rows = Vec::new();
    for (kind, run) in [("f32", &report.f32), ("int8", &report.int8)] {
        if run.total == 0 {
            continue;
        }
        for l in &run.layers {
            rows.push((
                format!("infer {kind} layer {} {} {}", l.index, l.op, l.act),
                l.instructions,
            ));
        }
        rows.push((format!("infer {kind} inference"), run.instructions));
    }
    if rows.is_empty() {
        return Err("infer reported no costs".to_owned());
    }
    Ok(rows)
}

/// A parsed baseline file.
#[derive(Debug, Clone, PartialEq)]
struct Baseline {
    /// The board it was measured on.
    board: String,
    /// Row name -> instructions.
    rows: BTreeMap<String, u64>,
}

impl Baseline {
    /// Parse the file's text (see the module docs); errors name the line.
    fn parse(text: &str) -> std::result::Result<Baseline, String> {
        let mut board = None;
        let mut rows = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            if let Some(comment) = line.strip_prefix('#') {
                if let Some(b) = comment.trim().strip_prefix("board:") {
                    board = Some(b.trim().to_owned());
                }
                continue;
            }
            if line.trim().is_empty() {
                continue;
            }
            let (name, count) = line
                .split_once('\t')
                .ok_or_else(|| format!("line {n}: expected NAME<TAB>INSTRUCTIONS: {line:?}"))?;
            let count: u64 = count.trim().parse().map_err(|_| {
                format!(
                    "line {n}: instructions {:?} are not a whole number",
                    count.trim()
                )
            })?;
            if name.trim().is_empty() {
                return Err(format!("line {n}: empty row name"));
            }
            if rows.insert(name.to_owned(), count).is_some() {
                return Err(format!("line {n}: row {name:?} appears twice"));
            }
        }
        let board = board.ok_or("no `# board: NAME` line")?;
        if rows.is_empty() {
            return Err("no rows".to_owned());
        }
        Ok(Baseline { board, rows })
    }

    /// The file's text for `rows` measured on `board`.
    fn render(board: &str, rows: &[(String, u64)]) -> String {
        let mut out = format!(
            "# Instruction counts (QEMU -icount shift=6) of every `bench` row and of `infer` on the\n\
             # demo's assets, rustc of rust-toolchain.toml. `cargo xtask bench firmware --check`\n\
             # fails when a row rises by more than {TOLERANCE_PERCENT} %; rewrite with\n\
             # `cargo xtask bench firmware --update-baseline`. NAME<TAB>INSTRUCTIONS.\n\
             # board: {board}\n"
        );
        let sorted: BTreeMap<&str, u64> = rows.iter().map(|(n, c)| (n.as_str(), *c)).collect();
        for (name, count) in sorted {
            out.push_str(&format!("{name}\t{count}\n"));
        }
        out
    }
}

/// One row that moved: name, baseline and current instructions.
#[derive(Debug, Clone, PartialEq)]
struct Moved {
    name: String,
    base: u64,
    now: u64,
}

impl Moved {
    fn percent(&self) -> f64 {
        if self.base == 0 {
            return 0.0;
        }
        (self.now as f64 - self.base as f64) * 100.0 / self.base as f64
    }
}

/// The comparison of a run with the baseline.
#[derive(Debug, Default, PartialEq)]
struct Comparison {
    /// Rose by more than the tolerance: fails.
    regressed: Vec<Moved>,
    /// Fell by more than the tolerance: reported.
    improved: Vec<Moved>,
    /// In the baseline, not produced by the run: fails.
    missing: Vec<String>,
    /// Produced by the run, not in the baseline: reported.
    new: Vec<(String, u64)>,
    /// Rows within the tolerance.
    unchanged: usize,
}

/// Compare `current` rows with `base`: a row fails when `now > base · (1 +
/// TOLERANCE_PERCENT / 100)` (integer arithmetic: exactly +1 % passes).
fn compare(base: &Baseline, current: &[(String, u64)]) -> Comparison {
    let mut c = Comparison::default();
    let now: BTreeMap<&str, u64> = current.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    for (name, &b) in &base.rows {
        match now.get(name.as_str()) {
            None => c.missing.push(name.clone()),
            Some(&v) => {
                let moved = Moved {
                    name: name.clone(),
                    base: b,
                    now: v,
                };
                let (v, b) = (u128::from(v), u128::from(b));
                let pct = u128::from(TOLERANCE_PERCENT);
                if v * 100 > b * (100 + pct) {
                    c.regressed.push(moved);
                } else if v * 100 < b * (100 - pct) {
                    c.improved.push(moved);
                } else {
                    c.unchanged += 1;
                }
            }
        }
    }
    for (name, v) in &now {
        if !base.rows.contains_key(*name) {
            c.new.push(((*name).to_owned(), *v));
        }
    }
    c
}

impl Comparison {
    fn failed(&self) -> bool {
        !self.regressed.is_empty() || !self.missing.is_empty()
    }

    fn report(&self) -> String {
        let mut out = String::new();
        let moved = |out: &mut String, title: &str, rows: &[Moved]| {
            if rows.is_empty() {
                return;
            }
            out.push_str(&format!("{title}:\n"));
            for m in rows {
                out.push_str(&format!(
                    "  {:<60} {:>10} -> {:>10} ({:+.2} %)\n",
                    m.name,
                    m.base,
                    m.now,
                    m.percent()
                ));
            }
        };
        moved(
            &mut out,
            &format!("REGRESSED (more than +{TOLERANCE_PERCENT} %)"),
            &self.regressed,
        );
        if !self.missing.is_empty() {
            out.push_str("MISSING (in the baseline, not produced by this run):\n");
            for n in &self.missing {
                out.push_str(&format!("  {n}\n"));
            }
        }
        moved(
            &mut out,
            &format!("improved (more than -{TOLERANCE_PERCENT} %)"),
            &self.improved,
        );
        if !self.new.is_empty() {
            out.push_str("new (not in the baseline):\n");
            for (n, v) in &self.new {
                out.push_str(&format!("  {n:<60} {v:>10}\n"));
            }
        }
        out.push_str(&format!(
            "instruction-count check: {} within {TOLERANCE_PERCENT} %, {} regressed, {} missing, \
             {} improved, {} new",
            self.unchanged,
            self.regressed.len(),
            self.missing.len(),
            self.improved.len(),
            self.new.len()
        ));
        if self.failed() {
            out.push_str(" -> FAILED");
        } else {
            out.push_str(" -> ok");
        }
        if !self.improved.is_empty() || !self.new.is_empty() || !self.missing.is_empty() {
            out.push_str(
                "\n(if the change is intended: cargo xtask bench firmware --update-baseline, \
                 and commit firmware/bench-baseline.tsv)",
            );
        }
        out
    }
}

/// A `bench network=NAME file=BYTES arena=BYTES` line: a whole network's
/// model file and arena.
#[derive(Debug, Clone, PartialEq)]
struct Network {
    name: String,
    file: u64,
    arena: u64,
}

impl Network {
    fn parse(line: &str) -> Option<Network> {
        let msg = line.split_once(" bench network=")?.1;
        let mut words = msg.split_whitespace();
        let name = words.next()?.to_owned();
        let mut field =
            |key: &str| -> Option<u64> { words.next()?.strip_prefix(key)?.parse().ok() };
        Some(Network {
            name,
            file: field("file=")?,
            arena: field("arena=")?,
        })
    }
}

/// Flash for code besides a model (the `infer` of one model kind is about
/// 35 KB of code and constants, `cargo xtask size`), and RAM besides the
/// arena (stack and statics: `infer` reaches about 3 KB of stack).
const APP_FLASH: u64 = 64 * 1024;
const APP_RAM: u64 = 8 * 1024;

/// `FLASH` and `RAM` lengths of a board's `memory.x`.
fn memory(board: &boards::Board) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(board.dir().join("memory.x")).ok()?;
    let length = |region: &str| -> Option<u64> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(region) && l.contains("LENGTH"))?;
        let v = line
            .split("LENGTH")
            .nth(1)?
            .trim_start_matches([' ', '='])
            .trim();
        let v = v.trim_end_matches([',', ';']).trim();
        let (num, mul) = match v.chars().last()? {
            'K' => (&v[..v.len() - 1], 1024),
            'M' => (&v[..v.len() - 1], 1024 * 1024),
            _ => (v, 1),
        };
        let n = match num.strip_prefix("0x") {
            Some(h) => u64::from_str_radix(h, 16).ok()?,
            None => num.parse().ok()?,
        };
        Some(n * mul)
    };
    Some((length("FLASH")?, length("RAM")?))
}

/// One `bench` line: `kernel=K shape=S form=F act=A macs|elements=N
/// instructions|cycles=C per_mac|per_element=R`.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    kernel: String,
    shape: String,
    form: String,
    act: String,
    /// `MACs` or `elements`.
    unit: &'static str,
    work: u64,
    /// `instructions` or `cycles`.
    counter: String,
    count: u64,
    per: String,
}

impl Row {
    /// The row's name in the baseline.
    fn name(&self) -> String {
        format!(
            "bench {} | {} | {} | {}",
            self.kernel, self.shape, self.form, self.act
        )
    }

    fn parse(line: &str) -> Option<Row> {
        let msg = line.split_once(" bench ")?.1;
        let field = |key: &str| -> Option<String> {
            let start = msg.find(&format!("{key}="))? + key.len() + 1;
            // `form` may hold a space ("r8 pairs"): a value runs to the next ` key=`.
            let rest = &msg[start..];
            let end = rest
                .match_indices(' ')
                .find(|&(i, _)| {
                    rest[i + 1..]
                        .split(' ')
                        .next()
                        .is_some_and(|w| w.contains('='))
                })
                .map_or(rest.len(), |(i, _)| i);
            Some(rest[..end].to_owned())
        };
        let (unit, work) = match field("macs") {
            Some(v) => ("MACs", v.parse().ok()?),
            None => ("elements", field("elements")?.parse().ok()?),
        };
        let (counter, count) = match field("instructions") {
            Some(v) => ("instructions".to_owned(), v.parse().ok()?),
            None => ("cycles".to_owned(), field("cycles")?.parse().ok()?),
        };
        Some(Row {
            kernel: field("kernel")?,
            shape: field("shape")?,
            form: field("form")?,
            act: field("act")?,
            unit,
            work,
            counter,
            count,
            per: field("per_mac").or_else(|| field("per_element"))?,
        })
    }
}

fn print_table(board: &boards::Board, rows: &[Row], networks: &[Network]) {
    let counter = rows.first().map_or("instructions", |r| r.counter.as_str());
    println!(
        "\nnormcore kernels on QEMU {} ({}), {counter} counted with -icount shift=6\n",
        board.name, board.core
    );
    let w = |f: fn(&Row) -> &str, title: &str| {
        rows.iter()
            .map(|r| f(r).len())
            .max()
            .unwrap_or(0)
            .max(title.len())
    };
    let (wk, ws, wf, wa) = (
        w(|r| &r.kernel, "kernel"),
        w(|r| &r.shape, "shape"),
        w(|r| &r.form, "form"),
        w(|r| &r.act, "act"),
    );
    println!(
        "| {:<wk$} | {:<ws$} | {:<wf$} | {:<wa$} | {:>9} | {:>8} | {:>12} | {:>8} |",
        "kernel", "shape", "form", "act", "MACs/elts", "unit", counter, "per unit"
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|{}|{}|",
        "-".repeat(wk + 2),
        "-".repeat(ws + 2),
        "-".repeat(wf + 2),
        "-".repeat(wa + 2),
        "-".repeat(11),
        "-".repeat(10),
        "-".repeat(14),
        "-".repeat(10)
    );
    for r in rows {
        println!(
            "| {:<wk$} | {:<ws$} | {:<wf$} | {:<wa$} | {:>9} | {:>8} | {:>12} | {:>8} |",
            r.kernel, r.shape, r.form, r.act, r.work, r.unit, r.count, r.per
        );
    }
    println!(
        "\nform: r4/r8 = row blocks of 4/8 (FORMAT.md), pairs = the i8pair weight form \
         (blocks of 4). paper_mlp_* = the 784-100-100-100-10 network (sigmoid hidden \
         layers) as a chain of kernel calls, output stages included; engine_paper_mlp_* = \
         the same network from a model file through Model::parse and Engine::run (the \
         whole inference as an application runs it); model_parse = the parse of that \
         file, per byte; net_* = whole networks through the engine (cnn: the trainer's `cnn` \
         preset; ds_cnn: MLPerf Tiny's DS-CNN shape; random weights, int8 in the exporter's \
         `auto` weight form), net_*.L<i> = their layers (pooling: per input element)."
    );
    if networks.is_empty() {
        return;
    }
    println!(
        "\nWhole networks: model file (flash) and arena (RAM); fits a board if file + {} KiB of \
         code <= FLASH and arena + {} KiB of stack and statics <= RAM (memory.x):\n",
        APP_FLASH / 1024,
        APP_RAM / 1024
    );
    for n in networks {
        let (mut fit, mut no) = (Vec::new(), Vec::new());
        for b in boards::BOARDS {
            match memory(b) {
                Some((flash, ram)) if n.file + APP_FLASH <= flash && n.arena + APP_RAM <= ram => {
                    fit.push(b.name.to_owned())
                }
                Some((flash, ram)) => no.push(format!(
                    "{} ({})",
                    b.name,
                    if n.file + APP_FLASH > flash {
                        format!("flash {} + {} > {flash} B", n.file, APP_FLASH)
                    } else {
                        format!("RAM {} + {} > {ram} B", n.arena, APP_RAM)
                    }
                )),
                None => no.push(format!("{} (memory.x unreadable)", b.name)),
            }
        }
        println!(
            "  {:<16} file {:>7} B, arena {:>6} B; fits: {}; DOES NOT FIT: {}",
            n.name,
            n.file,
            n.arena,
            if fit.is_empty() {
                "-".to_owned()
            } else {
                fit.join(", ")
            },
            if no.is_empty() {
                "-".to_owned()
            } else {
                no.join(", ")
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bench_lines() {
        let r = Row::parse(
            "INFO bench kernel=dense_i8 shape=784x100 form=r8 pairs act=sigmoid macs=78400 \
             instructions=121994 per_mac=1.56",
        )
        .unwrap();
        assert_eq!(r.kernel, "dense_i8");
        assert_eq!(r.form, "r8 pairs");
        assert_eq!((r.unit, r.work, r.count), ("MACs", 78_400, 121_994));
        assert_eq!(r.per, "1.56");
        let e = Row::parse(
            "INFO bench kernel=lut_i8 shape=1024 form=- act=sigmoid elements=1024 \
             instructions=4376 per_element=4.27",
        )
        .unwrap();
        assert_eq!((e.unit, e.per.as_str()), ("elements", "4.27"));
        assert!(Row::parse("INFO stack: high_water=1768").is_none());
        let l = Row::parse(
            "INFO  bench kernel=net_cnn_i8.L2 shape=conv2d form=r4 pairs act=relu macs=819200 \
             instructions=1699453 per_mac=2.07",
        )
        .unwrap();
        assert_eq!(l.name(), "bench net_cnn_i8.L2 | conv2d | r4 pairs | relu");
        let n = Network::parse("INFO  bench network=net_cnn_i8 file=39768 arena=11520").unwrap();
        assert_eq!(
            (n.name.as_str(), n.file, n.arena),
            ("net_cnn_i8", 39_768, 11_520)
        );
        assert!(Network::parse("INFO  bench network=x file=1").is_none());
    }

    fn base(rows: &[(&str, u64)]) -> Baseline {
        let rows: Vec<(String, u64)> = rows.iter().map(|&(n, v)| (n.to_owned(), v)).collect();
        Baseline::parse(&Baseline::render("mps2-an386", &rows)).unwrap()
    }

    fn run(rows: &[(&str, u64)]) -> Vec<(String, u64)> {
        rows.iter().map(|&(n, v)| (n.to_owned(), v)).collect()
    }

    #[test]
    fn gate_fails_above_one_percent_only() {
        let b = base(&[
            ("bench a | s | r4 | none", 100_000),
            ("infer int8 inference", 1_000),
        ]);
        // +1.1 %: fails, and names the row.
        let c = compare(
            &b,
            &run(&[
                ("bench a | s | r4 | none", 101_100),
                ("infer int8 inference", 1_000),
            ]),
        );
        assert!(c.failed());
        assert_eq!(c.regressed.len(), 1);
        assert_eq!(c.regressed[0].name, "bench a | s | r4 | none");
        assert!(c.report().contains("REGRESSED"));
        assert!(c.report().contains("bench a | s | r4 | none"));
        assert!(c.report().contains("+1.10 %"));
        // +0.9 % passes; exactly +1 % passes (the gate is "more than 1 %").
        for now in [100_900, 101_000, 100_000, 99_100] {
            let c = compare(
                &b,
                &run(&[
                    ("bench a | s | r4 | none", now),
                    ("infer int8 inference", 1_000),
                ]),
            );
            assert!(!c.failed(), "{now}");
            assert_eq!(c.unchanged, 2);
        }
        // A 1.1 % improvement passes and is reported with the update command.
        let c = compare(
            &b,
            &run(&[
                ("bench a | s | r4 | none", 98_900),
                ("infer int8 inference", 1_000),
            ]),
        );
        assert!(!c.failed());
        assert_eq!(c.improved.len(), 1);
        assert!(c.report().contains("--update-baseline"));
        // +1 instruction on a small row: 1_011 > 1_010 fails.
        let c = compare(
            &b,
            &run(&[
                ("bench a | s | r4 | none", 100_000),
                ("infer int8 inference", 1_011),
            ]),
        );
        assert!(c.failed());
    }

    #[test]
    fn repeated_names_are_numbered() {
        let rows = unique(run(&[("a", 1), ("b", 2), ("a", 3), ("a", 4)]));
        assert_eq!(rows, run(&[("a", 1), ("b", 2), ("a #2", 3), ("a #3", 4)]));
    }

    #[test]
    fn gate_reports_missing_and_new_rows() {
        let b = base(&[
            ("bench a | s | r4 | none", 100),
            ("bench b | s | r4 | none", 100),
        ]);
        let c = compare(
            &b,
            &run(&[("bench a | s | r4 | none", 100), ("bench c | s | - | -", 7)]),
        );
        // A row that disappeared fails (it could hide a regression) ...
        assert!(c.failed());
        assert_eq!(c.missing, vec!["bench b | s | r4 | none".to_owned()]);
        assert!(c.report().contains("MISSING"));
        // ... a new one is reported and does not.
        assert_eq!(c.new, vec![("bench c | s | - | -".to_owned(), 7)]);
        assert!(c.report().contains("new (not in the baseline)"));
        let c = compare(
            &b,
            &run(&[
                ("bench a | s | r4 | none", 100),
                ("bench b | s | r4 | none", 100),
                ("x", 1),
            ]),
        );
        assert!(!c.failed());
        assert_eq!(c.new.len(), 1);
    }

    #[test]
    fn baseline_round_trips_and_corrupt_files_are_clear_errors() {
        let rows = run(&[
            ("bench z | 1 | r4 pairs | relu", 5),
            ("infer f32 layer 0 dense relu", 9),
        ]);
        let text = Baseline::render("mps2-an386", &rows);
        let b = Baseline::parse(&text).unwrap();
        assert_eq!(b.board, "mps2-an386");
        assert_eq!(b.rows.len(), 2);
        assert_eq!(b.rows["bench z | 1 | r4 pairs | relu"], 5);
        let err = |t: &str| Baseline::parse(t).unwrap_err();
        let head = "# board: mps2-an386\n";
        assert!(
            err(&format!("{head}bench a 12\n")).contains("line 2: expected NAME<TAB>INSTRUCTIONS")
        );
        assert!(err(&format!("{head}bench a\t12x\n")).contains("line 2: instructions \"12x\""));
        assert!(err(&format!("{head}a\t1\na\t2\n")).contains("line 3: row \"a\" appears twice"));
        assert!(err("a\t1\n").contains("board"));
        assert!(err(head).contains("no rows"));
        assert!(err(&format!("{head}\t5\n")).contains("empty row name"));
    }
}
