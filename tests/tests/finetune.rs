//! Statistics re-estimation and tail training on the device equal the
//! host's, on the Cortex-M4F (`mps2-an386`) and the Cortex-M0 with 16 KiB
//! of RAM (`microbit`): the `finetune` firmware, run under QEMU
//! (`-icount`), re-estimates the embedded int8 model's BN statistics on a
//! drift of the embedded samples, then trains the tail on the same samples
//! with their labels, and the host computes the same
//! scenario through core (the split, drift and tail settings of
//! `normcore_tests::scenario`, compiled from the firmware's own source; the
//! re-estimation, tail training and inference through the trainer's
//! `adapt` module, core's code): the adapted parameters after each step are
//! bit for bit the host's (the overlay's CRC-32), the accuracies, digests
//! and losses are the host's, the overlay reloaded from the store after a
//! simulated reset gives the same outputs, and adaptation recovers
//! accuracy.
//!
//! Both boards run re-estimation and the tail. The `mps2-an386` saves the
//! overlay into a RAM-backed `NorFlash` (QEMU has no flash controller for
//! it); the micro:bit into its own flash through the nRF51's NVMC, which
//! QEMU models (erase to 0xFF, writes that only clear bits), in the
//! `STORE` region of its `memory.x` — the RAM a RAM-backed region would
//! take does not fit beside the tail in its 16 KiB.
//!
//! Self-contained as `device_parity.rs`: the default assets are
//! (re)generated, each board's firmware built, `finetune` run once per
//! board for all the tests below. Needs `qemu-system-arm`, `defmt-print`
//! and the boards' thumb targets (`cargo xtask setup`).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use normcore::adapt::overlay::Overlay;
use normcore::adapt::plan;
use normcore::adapt::restat::Restat;
use normcore::adapt::tail::Tail;
use normcore::model::crc32;
use normcore_device_tools::boards::{self, Board};
use normcore_device_tools::infer_log::{
    assets_dir, generate_assets, parse_finetune, FinetuneEval, FinetuneReport,
};
use normcore_device_tools::qemu::{firmware_elf, run_qemu, RunOptions};
use normcore_tests::scenario;
use normcore_trainer::adapt::{restat_levels, run_all_levels, tail_levels, TailReport};
use normcore_trainer::assets::{self, digest_i8};
use normcore_trainer::export::device::Logits;
use normcore_trainer::export::ModelBytes;

/// The boards `finetune` is tested on.
const BOARDS: [&str; 2] = ["mps2-an386", "microbit"];

/// Bytes of the flash region `finetune` saves into on `board`, for an
/// overlay of `overlay` bytes: the `STORE` region of the micro:bit's
/// `memory.x` (its own flash; read from the linker script, the definition),
/// else a RAM-backed region of two slots, each of whole 1 KiB pages
/// holding the store's 24-byte header and the overlay.
fn store_bytes(board: &str, overlay: usize) -> usize {
    if board == "microbit" {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../firmware/boards/microbit/memory.x"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("STORE"))
            .unwrap_or_else(|| panic!("{path}: no STORE region"));
        let len = line.split("LENGTH").nth(1).expect("STORE's LENGTH");
        let len = len.trim_start_matches([' ', '=']).trim();
        let kib: usize = len
            .strip_suffix('K')
            .and_then(|k| k.trim().parse().ok())
            .unwrap_or_else(|| panic!("{path}: STORE's LENGTH `{len}` in K"));
        kib * 1024
    } else {
        2 * (24 + overlay).div_ceil(1024) * 1024
    }
}

/// What the host computed for one method: re-estimation in the overlay of
/// its scope, then (`tail`) tail training.
#[derive(Debug)]
struct Adapted {
    /// The shifted evaluation half after re-estimation.
    adapted: FinetuneEval,
    /// The overlay after re-estimation: CRC-32.
    restat_crc: u32,
    /// After tail training: the evaluation, the losses, the overlay's CRC.
    tail: Option<(FinetuneEval, TailReport, u32)>,
    /// The overlay as saved: its bytes' CRC-32 and length.
    overlay_crc: u32,
    overlay_bytes: usize,
    /// Core's plan for the method: the tail's workspace and the total.
    tail_bytes: usize,
    adaptation_bytes: usize,
}

/// What the host computed for the scenario.
#[derive(Debug)]
struct Host {
    /// Adaptation and evaluation samples.
    adapt: usize,
    eval: usize,
    /// The drift's offset in levels and the input zero point.
    offset: i32,
    zero_point: i32,
    clean: FinetuneEval,
    shifted: FinetuneEval,
    /// Re-estimation alone (the overlay of `scenario::SCOPE_RESTAT`).
    restat: Adapted,
    /// Re-estimation then tail training: what `finetune` runs.
    tail: Adapted,
    /// The layer of each pass, and the samples each observed.
    pass_layers: Vec<usize>,
    pass_samples: Vec<u32>,
    /// Core's plans, in bytes.
    restat_bytes: usize,
}

/// Correct predictions and digest of `out` (int8 logits) against `labels`.
fn eval_of(out: &[Logits], labels: &[u16]) -> FinetuneEval {
    let mut values = Vec::new();
    let mut correct = 0;
    for (l, &label) in out.iter().zip(labels) {
        let Logits::I8 { values: v, .. } = l else {
            panic!("an int8 model gave f32 logits")
        };
        correct += usize::from(assets::argmax(v) == usize::from(label));
        values.extend_from_slice(v);
    }
    FinetuneEval {
        correct,
        total: out.len(),
        digest: digest_i8(&values),
        cost: 0,
    }
}

fn host() -> &'static Host {
    static HOST: OnceLock<Host> = OnceLock::new();
    HOST.get_or_init(|| {
        let generated = generate_assets().unwrap_or_else(|e| panic!("{e}"));
        let (_, model_int8, samples) =
            assets::load(&assets_dir()).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(model_int8, generated.model_int8);
        let bytes = ModelBytes::new(&model_int8.expect("the demo has an int8 model"));
        let model = bytes.parse().unwrap();
        let part = samples.int8.as_ref().unwrap();
        let (n, f) = (samples.len(), samples.features);
        let h = *model.header();
        // The scenario's samples, as the device builds them.
        let rows = |idx: &[usize], shift: bool| -> Vec<i8> {
            let mut out = Vec::new();
            for &s in idx {
                let mut x = part.inputs[s * f..(s + 1) * f].to_vec();
                if shift {
                    scenario::shift(&mut x, h.input_zero_point, h.input_scale);
                }
                out.extend(x);
            }
            out
        };
        let adapt: Vec<usize> = scenario::adaptation(n).collect();
        let eval: Vec<usize> = scenario::evaluation(n).collect();
        let labels: Vec<u16> = eval.iter().map(|&s| samples.labels[s]).collect();
        let run = |o: Option<&Overlay<'_>>, x: &[i8]| {
            eval_of(&run_all_levels(&model, o, x).unwrap(), &labels)
        };
        let shifted_eval = rows(&eval, true);
        let clean = run(None, &rows(&eval, false));
        let shifted = run(None, &shifted_eval);
        let adapt_rows = rows(&adapt, true);
        let adapt_labels: Vec<u16> = adapt.iter().map(|&s| samples.labels[s]).collect();
        let mut reports = Vec::new();
        let mut method = |with_tail: bool| -> Adapted {
            let scope = if with_tail {
                scenario::SCOPE
            } else {
                scenario::SCOPE_RESTAT
            };
            let mut words = vec![0u32; Overlay::words_needed(&model, scope).unwrap()];
            let mut o = Overlay::new(&model, scope, &mut words).unwrap();
            reports = restat_levels(&model, &mut o, &adapt_rows).unwrap();
            let adapted = run(Some(&o), &shifted_eval);
            let restat_crc = crc32(o.as_bytes());
            let tail = with_tail.then(|| {
                let report = tail_levels(
                    &model,
                    &mut o,
                    &adapt_rows,
                    &adapt_labels,
                    scenario::TAIL,
                    scenario::TAIL_EPOCHS,
                )
                .unwrap();
                (run(Some(&o), &shifted_eval), report, crc32(o.as_bytes()))
            });
            let p = plan(&model, scope, &scenario::TAIL).unwrap();
            Adapted {
                adapted,
                restat_crc,
                tail,
                overlay_crc: crc32(o.as_bytes()),
                overlay_bytes: o.len_bytes(),
                tail_bytes: p.tail,
                adaptation_bytes: p.total(),
            }
        };
        let restat = method(false);
        let tail = method(true);
        assert_eq!(
            tail.tail_bytes,
            4 * Tail::words_needed(&model, &scenario::TAIL).unwrap()
        );
        Host {
            adapt: adapt.len(),
            eval: eval.len(),
            offset: scenario::offset_levels(h.input_scale),
            zero_point: h.input_zero_point,
            clean,
            shifted,
            restat,
            tail,
            pass_layers: reports.iter().map(|r| r.layer).collect(),
            pass_samples: reports.iter().map(|r| r.samples).collect(),
            restat_bytes: 4 * Restat::words_needed(&model).unwrap(),
        }
    })
}

/// `finetune` on `board`, once per process and board: its parsed report
/// and log.
fn run_on(name: &str) -> &'static (FinetuneReport, String) {
    static RUNS: OnceLock<Mutex<HashMap<String, &'static (FinetuneReport, String)>>> =
        OnceLock::new();
    host();
    let board: &'static Board = boards::board(name).unwrap();
    let mut runs = RUNS
        .get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    runs.entry(name.to_owned()).or_insert_with(|| {
        let elf = firmware_elf(board, "finetune").unwrap_or_else(|e| panic!("{e}"));
        let opts = RunOptions {
            timeout: Duration::from_secs(120),
            ..RunOptions::default()
        };
        let out = run_qemu(board, &elf, &opts).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            out.success(),
            "finetune failed on {name}:\n{}",
            out.describe()
        );
        let text = out.stdout_text();
        let report = parse_finetune(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        Box::leak(Box::new((report, text)))
    })
}

#[test]
fn finetune_adapted_parameters_are_bit_identical_to_the_hosts() {
    let h = host();
    for name in BOARDS {
        let (r, text) = run_on(name);
        let a = &h.tail;
        assert_eq!(
            r.restat_crc, a.restat_crc,
            "{name}: overlay after re-estimation, device vs host in:\n{text}"
        );
        match (&r.tail, &a.tail) {
            (Some(t), Some((_, _, crc))) => assert_eq!(
                t.crc, *crc,
                "{name}: overlay after tail training, device vs host in:\n{text}"
            ),
            (None, None) => {}
            (dev, host) => panic!("{name}: tail on the device {dev:?}, on the host {host:?}"),
        }
        assert_eq!(
            (r.overlay_bytes, r.overlay_crc),
            (a.overlay_bytes, a.overlay_crc),
            "{name}: overlay saved (bytes, CRC-32) device vs host in:\n{text}"
        );
        let layers: Vec<usize> = r.passes.iter().map(|p| p.layer).collect();
        assert_eq!(layers, h.pass_layers, "{name}: one pass per BN layer");
        for (p, &samples) in r.passes.iter().zip(&h.pass_samples) {
            assert_eq!(p.samples as u32, samples, "{name}: samples per pass");
        }
    }
}

#[test]
fn finetune_runs_the_hosts_scenario_with_the_hosts_accuracies() {
    let h = host();
    for name in BOARDS {
        let (r, text) = run_on(name);
        let a = &h.tail;
        assert_eq!(
            (r.adapt, r.eval, r.gain_q8, r.offset, r.zero_point),
            (h.adapt, h.eval, scenario::GAIN_Q8, h.offset, h.zero_point),
            "{name}: scenario"
        );
        assert_eq!(r.method, "restat+tail", "{name}: method");
        // A RAM-backed flash region is blank at boot, and so is QEMU's
        // nRF51 flash outside the image.
        assert!(!r.saved_found, "{name}: nothing saved before in:\n{text}");
        for (what, dev, host) in [
            ("clean", &r.clean, &h.clean),
            ("shifted", &r.shifted, &h.shifted),
            ("adapted", &r.adapted, &a.adapted),
        ] {
            assert_eq!(
                (dev.correct, dev.total, dev.digest),
                (host.correct, host.total, host.digest),
                "{name}: {what} (correct, total, digest) device vs host in:\n{text}"
            );
        }
        if let Some((tuned, report, _)) = &a.tail {
            let dev = r.tuned.as_ref().expect("a tuned line");
            assert_eq!(
                (dev.correct, dev.total, dev.digest),
                (tuned.correct, tuned.total, tuned.digest),
                "{name}: after tail training (correct, total, digest) device vs host in:\n{text}"
            );
            let t = r.tail.as_ref().expect("a tail line");
            assert_eq!(
                (t.epochs, t.samples, t.steps),
                (scenario::TAIL_EPOCHS, h.adapt, report.steps),
                "{name}: tail steps"
            );
            assert_eq!(
                (t.lr, t.momentum, t.train_bn),
                (
                    scenario::TAIL.lr,
                    scenario::TAIL.momentum,
                    scenario::TAIL.train_bn
                ),
                "{name}: tail settings"
            );
            // Printed in the shortest form that reads back to the same
            // f32: the losses are the host's bit for bit.
            assert_eq!(
                (t.loss_first.to_bits(), t.loss_last.to_bits()),
                (report.first_loss.to_bits(), report.last_loss.to_bits()),
                "{name}: mean loss of the first and last epoch, device {t:?} vs host {report:?}"
            );
        } else {
            assert_eq!((&r.tail, &r.tuned), (&None, &None), "{name}: no tail");
        }
    }
}

#[test]
fn finetune_reloaded_overlay_gives_the_adapted_outputs() {
    let h = host();
    for name in BOARDS {
        let (r, text) = run_on(name);
        let a = &h.tail;
        let last = a.tail.as_ref().map_or(&a.adapted, |(t, _, _)| t);
        assert!(r.identical, "{name}: the device's own check in:\n{text}");
        assert_eq!(r.reload_crc, a.overlay_crc, "{name}: reloaded overlay");
        assert_eq!(
            (r.reload.correct, r.reload.total, r.reload.digest),
            (last.correct, last.total, last.digest),
            "{name}: outputs after the reload"
        );
        assert_eq!(r.seq, 1, "{name}: the first save to a blank region");
    }
}

#[test]
fn finetune_reestimation_recovers_accuracy() {
    let h = host();
    assert!(
        h.shifted.correct < h.clean.correct,
        "the drift must cost accuracy: {h:?}"
    );
    for a in [&h.restat, &h.tail] {
        assert!(
            a.adapted.correct > h.shifted.correct,
            "re-estimation must recover some: {h:?}"
        );
    }
    for name in BOARDS {
        let (r, _) = run_on(name);
        assert!(
            r.adapted.correct > r.shifted.correct,
            "{name}: adapted {} vs shifted {}",
            r.adapted.correct,
            r.shifted.correct
        );
    }
}

#[test]
fn finetune_tail_training_helps_after_reestimation() {
    let h = host();
    let (tuned, report, _) = h.tail.tail.as_ref().unwrap();
    // The scenario's settings (scenario::TAIL, TAIL_EPOCHS) are chosen so
    // that the tail lowers the loss and loses nothing re-estimation gained.
    assert!(
        report.last_loss < report.first_loss,
        "the loss must fall: {report:?}"
    );
    assert!(
        tuned.correct >= h.tail.adapted.correct,
        "tail training must not lose accuracy: {h:?}"
    );
    assert_ne!(
        tuned.digest, h.tail.adapted.digest,
        "tail training must change the outputs: {h:?}"
    );
    for name in BOARDS {
        let (r, _) = run_on(name);
        let dev = r.tuned.as_ref().unwrap();
        assert!(dev.correct >= r.adapted.correct, "{name}: {r:?}");
    }
}

#[test]
fn finetune_reports_costs_and_memory() {
    let h = host();
    for name in BOARDS {
        let (r, text) = run_on(name);
        assert_eq!(r.unit, "instructions", "{name}: QEMU runs under -icount");
        assert!(r.inference > 0 && r.clean.cost == r.inference, "{name}");
        let mut observe = 0;
        for p in &r.passes {
            assert!(p.cost > 0 && p.refold > 0, "{name}: {p:?}");
            assert!(
                p.values > 0 && p.values % p.samples as u64 == 0,
                "{name}: values per channel, a whole number per sample: {p:?}"
            );
            // Rounded per pass: the sum within one per pass.
            assert!(
                p.per_sample.abs_diff(p.cost / p.samples as u64) <= 1,
                "{name}: {p:?}"
            );
            observe += p.cost;
        }
        // Each figure is converted from timer ticks and rounded on its
        // own: the sum within one instruction per conversion.
        let conversions = 2 * r.passes.len() as u64 + 1;
        assert!(
            r.restat_cost.abs_diff(observe + r.refold) <= conversions,
            "{name}: the total {} is the passes' observe {observe} plus the refolds {}",
            r.restat_cost,
            r.refold
        );
        let summed: u64 = r.passes.iter().map(|p| p.per_sample).sum();
        assert!(
            r.per_sample.abs_diff(summed) <= r.passes.len() as u64,
            "{name}: per sample over every pass {} vs the passes' {summed}",
            r.per_sample
        );
        // The last pass runs every BN layer, so costs more than the first.
        assert!(
            r.passes.last().unwrap().per_sample > r.passes[0].per_sample,
            "{name}: {:?}",
            r.passes
        );
        let a = &h.tail;
        assert_eq!(r.overlay_bytes, a.overlay_bytes, "{name}: overlay");
        assert_eq!(r.restat_bytes, h.restat_bytes, "{name}: workspace");
        assert_eq!(
            (r.tail_bytes, r.adaptation_bytes),
            (a.tail_bytes, a.adaptation_bytes),
            "{name}: the tail's workspace and core's plan"
        );
        assert_eq!(
            r.scratch_bytes,
            a.overlay_bytes.max(h.restat_bytes).max(a.tail_bytes),
            "{name}: scratch = workspace, then the reload buffer"
        );
        assert_eq!(
            r.store_bytes,
            store_bytes(name, a.overlay_bytes),
            "{name}: flash region"
        );
        assert!(
            r.store_bytes >= store_bytes("", a.overlay_bytes),
            "{name}: the region holds two slots"
        );
        if let Some(t) = &r.tail {
            assert!(t.cost > 0 && t.commit > 0, "{name}: {t:?}");
            assert!(
                t.per_step.abs_diff(t.cost / u64::from(t.steps)) <= 1,
                "{name}: {t:?}"
            );
            // A step runs the backbone (one inference less the dense
            // layer) and the tail forward and backward in f32: more than
            // the backbone alone.
            assert!(t.per_step > r.inference / 2, "{name}: {t:?}");
        }
        assert!(r.stack_high_water > 0, "{name}: stack in:\n{text}");
    }
}
