//! The device equals the host, on every QEMU board: the `infer` firmware,
//! run under QEMU (`-icount`), produces for every embedded test sample
//! exactly what core's engine produces on the host from the same model
//! bytes: int8 logits bit for bit, f32 logits within the parity tolerance
//! (`normcore::engine::f32_parity`) with the same class, the same accuracy
//! and the same digests.
//!
//! Self-contained: the assets are (re)generated here with the trainer's
//! library (digits-mlp on the built-in digits, seeded, 64 samples), each
//! board's firmware is built, and `infer` runs once per board for all the
//! tests below. Needs `qemu-system-arm`, `defmt-print` and the boards'
//! thumb targets (`cargo xtask setup`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use normcore::engine::f32_parity;
use normcore_device_tools::boards::{Board, BOARDS};
use normcore_device_tools::infer_log::{
    assets_dir, generate_assets, parse_infer, InferReport, Logits, ModelRun,
};
use normcore_device_tools::qemu::{firmware_elf, run_qemu, RunOptions};
use normcore_trainer::assets::{self, Samples};

/// What the host computed and what one board's device printed.
struct Run {
    board: &'static Board,
    samples: Samples,
    host_f32: Vec<f32>,
    host_i8: Vec<i8>,
    report: InferReport,
    text: String,
    model_layers: Vec<(&'static str, u64)>,
}

/// The host's side, once per process: the assets generated, read back from
/// disk (the test checks the files, not the generator's memory), and core's
/// outputs for them.
struct Host {
    samples: Samples,
    host_f32: Vec<f32>,
    host_i8: Vec<i8>,
    model_layers: Vec<(&'static str, u64)>,
}

fn host() -> &'static Host {
    static HOST: OnceLock<Result<Host, String>> = OnceLock::new();
    HOST.get_or_init(|| {
        let generated = generate_assets()?;
        let (model_f32, model_int8, samples) =
            assets::load(&assets_dir()).map_err(|e| format!("{e:#}"))?;
        assert_eq!(model_f32, generated.model_f32);
        assert_eq!(model_int8, generated.model_int8);
        let (model_f32, model_int8) = (model_f32.unwrap(), model_int8.unwrap());
        let (f, q) = (
            samples.f32.as_ref().unwrap(),
            samples.int8.as_ref().unwrap(),
        );
        let host_f32 = assets::engine_f32(&model_f32, &f.inputs).map_err(|e| format!("{e:#}"))?;
        let host_i8 = assets::engine_i8(&model_int8, &q.inputs).map_err(|e| format!("{e:#}"))?;
        let aligned = normcore_trainer::export::ModelBytes::new(&model_f32);
        let model = aligned.parse().map_err(|e| format!("{e:#}"))?;
        let model_layers = model
            .layers()
            .map(|l| l.map(|l| (l.op.name(), l.op.macs(l.output) as u64)))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{e}"))?;
        Ok(Host {
            samples,
            host_f32,
            host_i8,
            model_layers,
        })
    })
    .as_ref()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `infer` on `board`, once per process and board.
fn run_on(board: &'static Board) -> &'static Run {
    static RUNS: OnceLock<Mutex<HashMap<&'static str, &'static Run>>> = OnceLock::new();
    let h = host();
    let mut runs = RUNS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    runs.entry(board.name).or_insert_with(|| {
        let elf = firmware_elf(board, "infer").unwrap_or_else(|e| panic!("{e}"));
        let opts = RunOptions {
            timeout: Duration::from_secs(120),
            ..RunOptions::default()
        };
        let out = run_qemu(board, &elf, &opts).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.success(),
            "infer failed on {}:\n{}",
            board.name,
            out.describe()
        );
        let text = out.stdout_text();
        let report = parse_infer(&text).unwrap_or_else(|e| panic!("{}: {e}", board.name));
        Box::leak(Box::new(Run {
            board,
            samples: h.samples.clone(),
            host_f32: h.host_f32.clone(),
            host_i8: h.host_i8.clone(),
            report,
            text,
            model_layers: h.model_layers.clone(),
        }))
    })
}

/// `infer`'s run on every board QEMU models.
fn runs() -> Vec<&'static Run> {
    BOARDS
        .iter()
        .filter(|b| b.qemu.is_some())
        .map(run_on)
        .collect()
}

fn check_complete(name: &str, m: &ModelRun, r: &Run) {
    let n = r.samples.len();
    let name = format!("{}: {name}", r.board.name);
    assert_eq!(
        m.samples.len(),
        n,
        "{name}: {} sample lines for {n} samples in:\n{}",
        m.samples.len(),
        r.text
    );
    for (i, s) in m.samples.iter().enumerate() {
        assert_eq!(s.index, i, "{name}: sample lines out of order");
        assert_eq!(s.label, r.samples.labels[i], "{name}: label of sample {i}");
    }
}

#[test]
fn host_expectations_in_the_samples_file_are_the_host_engine_outputs() {
    let h = host();
    assert_eq!(h.host_i8, h.samples.int8.as_ref().unwrap().expected);
    let same_bits = h
        .host_f32
        .iter()
        .zip(&h.samples.f32.as_ref().unwrap().expected)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same_bits, "samples.bin's f32 expectations are stale");
}

#[test]
fn int8_outputs_are_bit_identical_to_the_host_engine_on_every_board() {
    for r in runs() {
        int8_identical(r);
    }
}

fn int8_identical(r: &Run) {
    let m = &r.report.int8;
    check_complete("int8", m, r);
    let c = r.samples.classes;
    for (i, s) in m.samples.iter().enumerate() {
        let host = &r.host_i8[i * c..(i + 1) * c];
        assert_eq!(
            s.logits,
            Logits::I8(host.to_vec()),
            "{}: int8 sample {i}: device vs host engine",
            r.board.name
        );
        assert_eq!(s.class, assets::argmax(host), "int8 sample {i}: class");
    }
    assert_eq!(
        m.identical,
        r.samples.len(),
        "the device's own parity count"
    );
}

#[test]
fn f32_outputs_match_the_host_engine_within_tolerance_with_the_same_class_on_every_board() {
    for r in runs() {
        f32_within(r);
    }
}

fn f32_within(r: &Run) {
    let m = &r.report.f32;
    check_complete("f32", m, r);
    let c = r.samples.classes;
    let mut bit_identical = 0;
    for (i, s) in m.samples.iter().enumerate() {
        let host = &r.host_f32[i * c..(i + 1) * c];
        let Logits::F32(dev) = &s.logits else {
            panic!("f32 sample {i} printed int8 logits");
        };
        assert_eq!(dev.len(), c, "f32 sample {i}: logits");
        for (k, (&d, &h)) in dev.iter().zip(host).enumerate() {
            assert!(
                f32_parity(d, h),
                "{}: f32 sample {i} logit {k}: device {d} ({:#010x}), host {h} ({:#010x})",
                r.board.name,
                d.to_bits(),
                h.to_bits()
            );
        }
        assert_eq!(s.class, assets::argmax(host), "f32 sample {i}: class");
        assert_eq!(
            s.class,
            assets::argmax(dev),
            "f32 sample {i}: printed class"
        );
        bit_identical += usize::from(
            dev.iter()
                .zip(host)
                .all(|(d, h)| d.to_bits() == h.to_bits()),
        );
    }
    // Same kernels, same operation order, IEEE-754 on both sides: in
    // practice the f32 outputs are bit-identical too; the device counts it.
    assert_eq!(m.identical, bit_identical, "the device's own parity count");
}

#[test]
fn device_accuracy_equals_host_accuracy_on_the_same_samples() {
    for r in runs() {
        accuracy(r);
    }
}

fn accuracy(r: &Run) {
    let n = r.samples.len();
    let (labels, c) = (&r.samples.labels, r.samples.classes);
    for (name, m, host_correct) in [
        (
            "f32",
            &r.report.f32,
            assets::correct(labels, c, &r.host_f32),
        ),
        (
            "int8",
            &r.report.int8,
            assets::correct(labels, c, &r.host_i8),
        ),
    ] {
        assert_eq!(m.total, n, "{name}: samples run");
        assert_eq!(
            m.correct, host_correct,
            "{name}: device accuracy {}/{n}, host {host_correct}/{n}",
            m.correct
        );
        let recount = m
            .samples
            .iter()
            .filter(|s| s.class == usize::from(s.label))
            .count();
        assert_eq!(m.correct, recount, "{name}: the printed classes");
    }
}

#[test]
fn digests_equal_the_host_digests() {
    for r in runs() {
        digests(r);
    }
}

fn digests(r: &Run) {
    assert_eq!(
        r.report.f32.digest,
        assets::digest_f32(&r.host_f32),
        "f32 digest: device {:#010x}",
        r.report.f32.digest
    );
    assert_eq!(
        r.report.int8.digest,
        assets::digest_i8(&r.host_i8),
        "int8 digest: device {:#010x}",
        r.report.int8.digest
    );
}

#[test]
fn per_layer_costs_cover_every_layer() {
    for r in runs() {
        layer_costs(r);
    }
}

fn layer_costs(r: &Run) {
    for (name, m) in [("f32", &r.report.f32), ("int8", &r.report.int8)] {
        let layers: Vec<(&str, u64)> = m.layers.iter().map(|l| (l.op.as_str(), l.macs)).collect();
        assert_eq!(
            layers, r.model_layers,
            "{name}: layer table in:\n{}",
            r.text
        );
        let macs: u64 = r.model_layers.iter().map(|l| l.1).sum();
        assert_eq!(m.macs, macs, "{name}: MACs per inference");
        assert!(
            m.layers.iter().all(|l| l.instructions > 0),
            "{name}: every layer costs something: {:?}",
            m.layers
        );
        assert_eq!(
            m.layer_instructions,
            m.layers.iter().map(|l| l.instructions).sum::<u64>(),
            "{name}: the layers' sum"
        );
        // The whole inference includes the layers, plus the engine's work
        // between them.
        assert!(
            m.layer_instructions <= m.instructions && m.instructions < 2 * m.layer_instructions,
            "{name}: layers {} of {} per inference",
            m.layer_instructions,
            m.instructions
        );
    }
    assert!(r.report.stack_high_water > 0, "stack high-water mark");
}

#[test]
fn costs_are_repeatable_under_icount() {
    let r = run_on(normcore_device_tools::boards::default_board());
    let elf = firmware_elf(r.board, "infer").unwrap_or_else(|e| panic!("{e}"));
    let out = run_qemu(r.board, &elf, &RunOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert!(out.success(), "{}", out.describe());
    let again = parse_infer(&out.stdout_text()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, r.report, "a second run reported something else");
}
