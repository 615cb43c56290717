//! `cargo xtask bench firmware|trainer`.
//!
//! - `firmware`: build the firmware's `bench` binary, run it in QEMU
//!   (the default board, `mps2-an386`, Cortex-M4F) with `-icount shift=6`, and print its
//!   per-kernel costs as a table. The binary makes its own deterministic
//!   weights and inputs (no assets), times each of core's inference kernels
//!   once on fixed shapes (the paper MLP's dense layers, a small CNN's
//!   convolutions, depthwise, pooling, element-wise), checks that the two
//!   int8 weight forms agree, and logs one `bench kernel=... per_mac=...`
//!   line per run (see `normcore_firmware::programs::bench`).
//! - `trainer`: the host trainer's benchmark, `normcore bench` (release).

use std::time::Duration;

use normcore_device_tools::boards;
use normcore_device_tools::build::{build, Build};
use normcore_device_tools::qemu::{run_qemu, RunOptions};

use super::{cargo, ensure_assets, root, run_in, setup, Result};

/// Run `cargo xtask bench ARGS`.
pub fn run(args: &[String]) -> Result {
    match args.split_first() {
        Some((what, rest)) if what == "firmware" => match rest {
            [] => firmware(boards::default_board()),
            [flag, name] if flag == "--board" => {
                firmware(boards::board(name).map_err(|e| e.to_string())?)
            }
            _ => Err("usage: cargo xtask bench firmware [--board NAME]".to_owned()),
        },
        Some((what, rest)) if what == "trainer" => trainer(rest),
        _ => Err(
            "usage: cargo xtask bench firmware [--board NAME] | cargo xtask bench trainer [ARGS]"
                .to_owned(),
        ),
    }
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
/// table.
fn firmware(board: &boards::Board) -> Result {
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
    let dir = build(
        board,
        &Build {
            bins: &[bin],
            quiet: true,
            ..Build::default()
        },
    )
    .map_err(|e| format!("{e:#}"))?;
    let opts = RunOptions {
        timeout: Duration::from_secs(300),
        ..RunOptions::default()
    };
    let out = run_qemu(board, &dir.join(bin), &opts)?;
    if !out.success() {
        return Err(format!("{bin} failed in QEMU:\n{}", out.describe()));
    }
    let log = out.stdout_text();
    let rows: Vec<Row> = log.lines().filter_map(Row::parse).collect();
    if rows.is_empty() {
        return Err(format!("no `bench` lines in the firmware's log:\n{log}"));
    }
    print_table(board, &rows);
    Ok(())
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

fn print_table(board: &boards::Board, rows: &[Row]) {
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
         file, per byte."
    );
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
    }
}
