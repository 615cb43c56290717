//! Adaptation through core, on trained and exported digits networks: the
//! overlay, the refold identities, re-estimation against the stored
//! statistics, recovery from a drift, and the error cases.

use super::*;
use crate::data::builtin_digits_split;
use crate::export::device::ModelBytes;
use crate::export::ncm::{write_int8_form, WeightForm};
use crate::export::{calibrate, fold, input_params, quantize, write_f32};
use crate::network::Init;
use crate::spec::preset;
use crate::train::{Schedule, TrainConfig, Trainer};
use normcore::adapt::overlay::{self, Part};
use normcore::adapt::tail::TailConfig;
use normcore::adapt::AdaptError;
use normcore::model::Data;
use std::sync::OnceLock;

/// A digits network trained briefly, exported as (f32, int8) files.
struct Fixture {
    f32: ModelBytes,
    int8: ModelBytes,
    train: Dataset,
    test: Dataset,
}

fn build(name: &str, block_rows: usize, weights: WeightForm) -> Fixture {
    let (train, test) = builtin_digits_split().unwrap();
    let cfg = TrainConfig {
        batch: 32,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
        schedule: Schedule::Step {
            gamma: 0.3,
            every: 500,
        },
        seed: 1,
    };
    let mut t = Trainer::new(preset(name).unwrap(), Init::He, cfg, 1).unwrap();
    for _ in 0..1500 {
        t.train_step(&train).unwrap();
    }
    let folded = fold(&t.net).unwrap();
    let cal = calibrate(&folded, &train, 256).unwrap();
    let (iq, _) = input_params(&train).unwrap();
    let (qm, _) = quantize(&folded, &cal, iq, train.pixel_scale).unwrap();
    Fixture {
        f32: ModelBytes::new(&write_f32(&folded, block_rows, train.pixel_scale).unwrap()),
        int8: ModelBytes::new(&write_int8_form(&qm, block_rows, weights).unwrap()),
        train,
        test,
    }
}

fn mlp() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| build("digits-mlp", 4, WeightForm::Auto))
}

fn cnn() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| build("digits-cnn", 8, WeightForm::I8))
}

fn models(f: &Fixture) -> [(&'static str, &ModelBytes); 2] {
    [("f32", &f.f32), ("int8", &f.int8)]
}

fn first(d: &Dataset, n: usize) -> Vec<f32> {
    d.images()[..n * d.sample_len()].to_vec()
}

#[test]
fn adapt_empty_overlay_runs_the_file_bit_for_bit() {
    for f in [mlp(), cnn()] {
        for (kind, bytes) in models(f) {
            let model = bytes.parse().unwrap();
            let words = new_overlay(
                &model,
                Scope {
                    restat: true,
                    tail: true,
                },
            )
            .unwrap();
            let mut w = words.clone();
            let o = Overlay::load(&model, bytemuck::cast_slice(&words), &mut w).unwrap();
            assert!(!o.is_active());
            let plain = crate::export::device::run_all(&model, f.test.images()).unwrap();
            assert_eq!(
                run_all(&model, Some(&o), f.test.images()).unwrap(),
                plain,
                "{kind}"
            );
            assert_eq!(
                run_all(&model, None, f.test.images()).unwrap(),
                plain,
                "{kind}"
            );
        }
    }
}

#[test]
fn adapt_refold_with_the_files_statistics_gives_the_file_back() {
    for f in [mlp(), cnn()] {
        for (kind, bytes) in models(f) {
            let model = bytes.parse().unwrap();
            let mut words = new_overlay(
                &model,
                Scope {
                    restat: true,
                    tail: false,
                },
            )
            .unwrap();
            let mut o =
                Overlay::load(&model, bytemuck::cast_slice(&words.clone()), &mut words).unwrap();
            for rec in model.bn_records() {
                let rec = rec.unwrap();
                normcore::adapt::refold::refold(&model, rec.layer, &rec.state(), &mut o).unwrap();
                let e = o.entry_of(rec.layer).unwrap();
                let l = model.layer(rec.layer).unwrap();
                let bias = o.part(e, Part::Bias).unwrap();
                match (l.bias, l.requant) {
                    (Some(Data::I32(b)), Some((m, s))) => {
                        assert_eq!(bytemuck::cast_slice::<u32, i32>(bias), b, "{kind} bias");
                        let om = o.part(e, Part::Multiplier).unwrap();
                        let os = o.part(e, Part::Shift).unwrap();
                        assert_eq!(
                            bytemuck::cast_slice::<u32, i32>(om),
                            m,
                            "{kind} multipliers"
                        );
                        assert_eq!(bytemuck::cast_slice::<u32, i32>(os), s, "{kind} shifts");
                    }
                    (Some(Data::F32(b)), _) => {
                        assert_eq!(bytemuck::cast_slice::<u32, f32>(bias), b, "{kind} bias");
                        let Some(Data::F32(w)) = l.weights else {
                            panic!()
                        };
                        let ow = o.part(e, Part::Weights).unwrap();
                        assert_eq!(bytemuck::cast_slice::<u32, f32>(ow), w, "{kind} weights");
                    }
                    _ => panic!("{kind}: unexpected tensors"),
                }
            }
            assert!(o.is_active());
            let plain = crate::export::device::run_all(&model, f.test.images()).unwrap();
            assert_eq!(
                run_all(&model, Some(&o), f.test.images()).unwrap(),
                plain,
                "{kind}"
            );
        }
    }
}

/// Re-estimated on the training distribution, the statistics land near
/// the stored ones (which the trainer's running averages estimated from
/// the same distribution), and accuracy stays.
#[test]
fn adapt_restat_on_training_data_lands_near_the_stored_statistics() {
    for f in [mlp(), cnn()] {
        for (kind, bytes) in models(f) {
            let model = bytes.parse().unwrap();
            let mut words = new_overlay(
                &model,
                Scope {
                    restat: true,
                    tail: false,
                },
            )
            .unwrap();
            let mut o =
                Overlay::load(&model, bytemuck::cast_slice(&words.clone()), &mut words).unwrap();
            let reports = restat(&model, &mut o, &first(&f.train, 256)).unwrap();
            assert_eq!(reports.len(), model.bn_records().count());
            for (rec, rep) in model.bn_records().zip(&reports) {
                let rec = rec.unwrap();
                assert_eq!(rep.layer, rec.layer);
                assert_eq!(rep.samples, 256);
                let new = o.current_bn(&model, rec.layer).unwrap();
                for c in 0..rec.mean.len() {
                    let sd = rec.var[c].sqrt().max(1e-3);
                    assert!(
                        (new.mean[c] - rec.mean[c]).abs() <= 0.35 * sd,
                        "{kind} layer {} channel {c}: mean {} vs stored {} (sd {sd})",
                        rec.layer,
                        new.mean[c],
                        rec.mean[c]
                    );
                    let ratio = (new.var[c] + rec.eps) / (rec.var[c] + rec.eps);
                    assert!(
                        (0.5..=2.0).contains(&ratio),
                        "{kind} layer {} channel {c}: var {} vs stored {}",
                        rec.layer,
                        new.var[c],
                        rec.var[c]
                    );
                }
            }
            let before = accuracy(&model, None, &f.test).unwrap();
            let after = accuracy(&model, Some(&o), &f.test).unwrap();
            assert!(
                (after - before).abs() <= 0.02,
                "{kind}: {before} -> {after}"
            );
        }
    }
}

/// The target of the drift scenario on the digits: re-estimation with 64
/// unlabeled samples recovers at least 90 % of what a gain/offset shift
/// cost.
#[test]
fn adapt_restat_recovers_a_gain_offset_shift() {
    let shift = Shift::GainOffset {
        gain: 0.6,
        offset: 0.3,
    };
    for f in [mlp(), cnn()] {
        let train = shift.apply(&f.train).unwrap();
        let test = shift.apply(&f.test).unwrap();
        for (kind, bytes) in models(f) {
            let model = bytes.parse().unwrap();
            let clean = accuracy(&model, None, &f.test).unwrap();
            let shifted = accuracy(&model, None, &test).unwrap();
            let mut words = new_overlay(
                &model,
                Scope {
                    restat: true,
                    tail: false,
                },
            )
            .unwrap();
            let mut o =
                Overlay::load(&model, bytemuck::cast_slice(&words.clone()), &mut words).unwrap();
            restat(&model, &mut o, &first(&train, 64)).unwrap();
            let adapted = accuracy(&model, Some(&o), &test).unwrap();
            let recovered = (adapted - shifted) / (clean - shifted);
            // Only the first BN layer (one pass).
            o.reset();
            restat_layers(&model, &mut o, &first(&train, 64), 1).unwrap();
            let one = accuracy(&model, Some(&o), &test).unwrap();
            // The 64 samples split among the passes: each observed once.
            o.reset();
            let reports = restat_fed(&model, &mut o, &first(&train, 64), Feed::Split).unwrap();
            let split = accuracy(&model, Some(&o), &test).unwrap();
            let parts: Vec<u32> = reports.iter().map(|r| r.samples).collect();
            assert_eq!(parts.iter().sum::<u32>(), 64, "{kind}: {parts:?}");
            assert!(parts.len() >= 2, "{kind}: {parts:?}");
            eprintln!(
                "{kind}: clean {:.2} %, shifted {:.2} %, restat(64) {:.2} %: {:.0} % recovered; first BN layer only {:.2} %; split {parts:?} {:.2} %",
                100.0 * clean,
                100.0 * shifted,
                100.0 * adapted,
                100.0 * recovered,
                100.0 * one,
                100.0 * split
            );
            assert!(
                (split - shifted) / (clean - shifted) >= 0.9,
                "{kind}: split feed {split}"
            );
            assert!(
                clean - shifted >= 0.05,
                "{kind}: the shift must cost accuracy"
            );
            assert!(recovered >= 0.9, "{kind}: recovered {recovered}");
            assert!(
                (one - shifted) / (clean - shifted) >= 0.85,
                "{kind}: first layer only {one}"
            );
        }
    }
}

#[test]
fn adapt_overlay_round_trips_and_refuses_foreign_or_damaged_bytes() {
    let f = mlp();
    let model = f.int8.parse().unwrap();
    let mut words = new_overlay(
        &model,
        Scope {
            restat: true,
            tail: false,
        },
    )
    .unwrap();
    let mut o = Overlay::load(&model, bytemuck::cast_slice(&words.clone()), &mut words).unwrap();
    let shifted = Shift::Contrast(0.4).apply(&f.train).unwrap();
    restat(&model, &mut o, &first(&shifted, 32)).unwrap();
    let saved = o.as_bytes().to_vec();
    let want = run_all(&model, Some(&o), f.test.images()).unwrap();
    // Through the power-cut-safe store and back.
    let mut flash = normcore::adapt::store::RamFlash::<{ 4 * 4096 }>::new();
    let mut store = normcore::adapt::store::Store::new(&mut flash, 0, 4 * 4096).unwrap();
    store.save(&saved).unwrap();
    let mut buf = vec![0u8; store.capacity()];
    let got = store.load(&mut buf).unwrap().unwrap();
    let mut w2 = vec![0u32; saved.len() / 4];
    let o2 = Overlay::load(&model, &buf[..got.len], &mut w2).unwrap();
    assert_eq!(run_all(&model, Some(&o2), f.test.images()).unwrap(), want);
    // Another model's overlay.
    let other = f.f32.parse().unwrap();
    let mut w3 = vec![0u32; saved.len()];
    assert_eq!(
        Overlay::load(&other, &saved, &mut w3).unwrap_err(),
        AdaptError::WrongModel
    );
    // Damaged: a layer index, a length, a multiplier out of range.
    let mut bad = saved.clone();
    bad[4 * overlay::HEADER_WORDS] ^= 1;
    assert_eq!(
        Overlay::load(&model, &bad, &mut w3).unwrap_err(),
        AdaptError::BadOverlay
    );
    assert_eq!(
        Overlay::load(&model, &saved[..saved.len() - 4], &mut w3).unwrap_err(),
        AdaptError::BadOverlay
    );
    let e = o.entry_of(model.bn_record(0).unwrap().layer).unwrap();
    let off =
        o.part(e, Part::Multiplier).unwrap().as_ptr() as usize - o.as_bytes().as_ptr() as usize;
    let mut bad = saved.clone();
    bad[off..off + 4].copy_from_slice(&5i32.to_le_bytes());
    assert_eq!(
        Overlay::load(&model, &bad, &mut w3).unwrap_err(),
        AdaptError::BadOverlay
    );
    // Another entry table (the BN record's length word of entry 0).
    let mut bad = saved.clone();
    let at = 4 * (overlay::HEADER_WORDS + 15);
    bad[at] ^= 2;
    assert_eq!(
        Overlay::load(&model, &bad, &mut w3).unwrap_err(),
        AdaptError::BadOverlay
    );
    // An overlay of the version-1 layout: refused as such.
    let mut old = saved.clone();
    old[4..6].copy_from_slice(&1u16.to_le_bytes());
    let e = Overlay::load(&model, &old, &mut w3).unwrap_err();
    assert_eq!(e, AdaptError::OverlayVersion { found: 1 });
    assert!(e.to_string().contains("version 1"), "{e}");
    // Too small a buffer.
    let mut tiny = vec![0u32; 8];
    assert!(matches!(
        Overlay::load(&model, &saved, &mut tiny).unwrap_err(),
        AdaptError::BufferTooSmall { .. }
    ));
    // Dropping the overlay restores the file.
    o.reset();
    assert_eq!(
        run_all(&model, Some(&o), f.test.images()).unwrap(),
        crate::export::device::run_all(&model, f.test.images()).unwrap()
    );
}

#[test]
fn adapt_refuses_what_it_cannot_do() {
    let f = mlp();
    let model = f.int8.parse().unwrap();
    // Too few samples for a pass: nothing changes.
    let mut words = new_overlay(
        &model,
        Scope {
            restat: true,
            tail: false,
        },
    )
    .unwrap();
    let mut o = Overlay::load(&model, bytemuck::cast_slice(&words.clone()), &mut words).unwrap();
    let need = Restat::words_needed(&model).unwrap();
    let mut work = vec![0f32; need];
    let mut r = Restat::new(&model, &mut work).unwrap();
    assert!(r.finish_pass(&model, &mut o).is_err());
    assert!(!o.is_active());
    // A workspace too small.
    let mut small = vec![0f32; need - 1];
    assert!(matches!(
        Restat::new(&model, &mut small).unwrap_err(),
        AdaptError::BufferTooSmall { .. }
    ));
    // Another γ where the overlay holds only statistics (every BN layer
    // but the one a tail trains) is refused, the overlay unchanged.
    let flip = |rec: &normcore::model::BnRecord<'_>| -> Vec<f32> {
        rec.gamma
            .iter()
            .enumerate()
            .map(|(c, &g)| if c == 3 { -g } else { g })
            .collect()
    };
    let rec = model.bn_record(0).unwrap();
    let gamma = flip(&rec);
    let flipped = normcore::BnState {
        gamma: &gamma,
        ..rec.state()
    };
    assert!(!o.holds_affine(o.entry_of(rec.layer).unwrap()));
    assert_eq!(
        normcore::adapt::refold::refold(&model, rec.layer, &flipped, &mut o).unwrap_err(),
        AdaptError::NotInOverlay
    );
    assert!(!o.is_active());
    // A sign change of the BN scale is refused, the overlay unchanged (the
    // layer a tail trains, whose γ the overlay holds).
    let mut tw = new_overlay(
        &model,
        Scope {
            restat: true,
            tail: true,
        },
    )
    .unwrap();
    let mut to = Overlay::new(
        &model,
        Scope {
            restat: true,
            tail: true,
        },
        &mut tw,
    )
    .unwrap();
    let last_bn = model.bn_records().last().unwrap().unwrap();
    assert_eq!(last_bn.layer + 2, model.layer_count());
    assert!(to.holds_affine(to.entry_of(last_bn.layer).unwrap()));
    let gamma = flip(&last_bn);
    let flipped = normcore::BnState {
        gamma: &gamma,
        ..last_bn.state()
    };
    assert_eq!(
        normcore::adapt::refold::refold(&model, last_bn.layer, &flipped, &mut to).unwrap_err(),
        AdaptError::SignChange {
            layer: last_bn.layer,
            channel: 3
        }
    );
    assert!(!to.is_active());
    // No BN layer right before the dense one (digits-cnn: a pooling).
    let cnn_model = cnn().int8.parse().unwrap();
    assert_eq!(
        normcore::adapt::tail::Tail::words_needed(&cnn_model, &TailConfig::default()).unwrap_err(),
        AdaptError::NoTail
    );
    assert!(normcore::adapt::tail::Tail::words_needed(
        &cnn_model,
        &TailConfig {
            train_bn: false,
            ..TailConfig::default()
        }
    )
    .is_ok());
    // Velocities only with momentum: K·D + K + 2·C words more, refused
    // without them.
    {
        use normcore::adapt::tail::Tail;
        let plain = TailConfig::default();
        let with = TailConfig {
            momentum: 0.9,
            ..plain
        };
        let (a, b) = (
            Tail::words_needed(&model, &plain).unwrap(),
            Tail::words_needed(&model, &with).unwrap(),
        );
        let last = model.layer(model.layer_count() - 1).unwrap();
        let normcore::model::Op::Dense(d) = last.op else {
            panic!()
        };
        let c = model.bn_records().last().unwrap().unwrap().gamma.len();
        assert_eq!(b - a, d.outputs * d.inputs + d.outputs + 2 * c);
        let mut work = vec![0f32; a];
        assert!(matches!(
            Tail::new(&model, Some(&o), with, &mut work).unwrap_err(),
            AdaptError::BufferTooSmall { .. }
        ));
    }
    // A tail needs an overlay with room for it.
    let mut work = vec![
        0f32;
        normcore::adapt::tail::Tail::words_needed(&model, &TailConfig::default())
            .unwrap()
    ];
    let mut t =
        normcore::adapt::tail::Tail::new(&model, Some(&o), TailConfig::default(), &mut work)
            .unwrap();
    assert_eq!(t.commit(&model, &mut o).unwrap_err(), AdaptError::Phase);
    {
        let mut mem = vec![0u128; model.arena_bytes().div_ceil(16)];
        let buf = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut mem)[..model.arena_bytes()];
        let mut e = Engine::new(&model, buf).unwrap();
        e.input_i8().unwrap().fill(0);
        assert_eq!(
            t.step(&mut e, Some(&o), 10).unwrap_err(),
            AdaptError::BadSample
        );
        t.step(&mut e, Some(&o), 3).unwrap();
    }
    assert_eq!(
        t.commit(&model, &mut o).unwrap_err(),
        AdaptError::NotInOverlay
    );
    assert!(!o.is_active());
    // A layer without BN has nothing to refold.
    let last = model.layer_count() - 1;
    assert!(normcore::adapt::refold::refold(&model, last, &rec.state(), &mut o).is_err());
}

/// Tail training after re-estimation recovers what re-estimation leaves of
/// a shift it cannot fix (printed for every shift; asserted on the
/// inversion), with plain SGD (the default: no velocity buffers) and with
/// momentum 0.9 at a tenth of the learning rate.
#[test]
fn adapt_tail_recovers_what_restat_leaves() {
    let momentum = TailConfig {
        lr: 0.01,
        momentum: 0.9,
        train_bn: true,
    };
    for (name, f) in [("mlp", mlp()), ("cnn", cnn())] {
        for (shift, base) in Shift::SCENARIO
            .into_iter()
            .flat_map(|s| [(s, TailConfig::default()), (s, momentum)])
        {
            let train = shift.apply(&f.train).unwrap();
            let test = shift.apply(&f.test).unwrap();
            for (kind, bytes) in models(f) {
                let model = bytes.parse().unwrap();
                let clean = accuracy(&model, None, &f.test).unwrap();
                let shifted = accuracy(&model, None, &test).unwrap();
                let train_bn = normcore::adapt::tail::Tail::words_needed(
                    &model,
                    &TailConfig {
                        train_bn: true,
                        ..TailConfig::default()
                    },
                )
                .is_ok();
                let cfg = TailConfig { train_bn, ..base };
                let mut words = new_overlay(
                    &model,
                    Scope {
                        restat: true,
                        tail: true,
                    },
                )
                .unwrap();
                let mut o = Overlay::load(&model, bytemuck::cast_slice(&words.clone()), &mut words)
                    .unwrap();
                restat(&model, &mut o, &first(&train, 64)).unwrap();
                let restat_acc = accuracy(&model, Some(&o), &test).unwrap();
                let n = 200;
                let rep = tail(
                    &model,
                    &mut o,
                    &first(&train, n),
                    &train.labels[..n],
                    cfg,
                    10,
                )
                .unwrap();
                let both = accuracy(&model, Some(&o), &test).unwrap();
                let frac = (both - restat_acc) / (clean - restat_acc);
                eprintln!(
                    "{name} {kind} {} (momentum {}, lr {}): clean {:.2} shifted {:.2} restat {:.2} both {:.2} ({:.0} % of what restat left; loss {:.3} -> {:.3}, bn {train_bn})",
                    shift.name(),
                    cfg.momentum,
                    cfg.lr,
                    100.0 * clean,
                    100.0 * shifted,
                    100.0 * restat_acc,
                    100.0 * both,
                    100.0 * frac,
                    rep.first_loss,
                    rep.last_loss
                );
                assert!(
                    rep.last_loss < rep.first_loss,
                    "{name} {kind} {}: training must lower the loss",
                    shift.name()
                );
                if shift == Shift::Invert {
                    // Re-estimation cannot fix an inversion (it makes it
                    // worse or no better); the tail recovers most of it.
                    assert!(restat_acc < shifted + 0.05);
                    assert!(frac >= 0.6, "{name} {kind}: tail recovered {frac}");
                }
            }
        }
    }
}

/// The tail's gradients against central finite differences of its loss
/// (f32 digits MLP: dense weights and bias, γ and β of the last hidden BN
/// layer through its sigmoid). With momentum 0 and learning rate 1 a step
/// moves each parameter by exactly −gradient.
#[test]
fn adapt_tail_gradients_match_finite_differences() {
    use normcore::adapt::tail::Tail;
    let f = mlp();
    let model = f.f32.parse().unwrap();
    let cfg = TailConfig {
        lr: 1.0,
        momentum: 0.0,
        train_bn: true,
    };
    let shift = Shift::Contrast(0.4).apply(&f.test).unwrap();
    let per = shift.sample_len();
    let mut mem = vec![0u128; model.arena_bytes().div_ceil(16)];
    let n = model.arena_bytes();
    for s in [0usize, 5, 11] {
        let x = &shift.images()[s * per..(s + 1) * per];
        let label = usize::from(shift.labels[s]);
        let mut work = vec![0f32; Tail::words_needed(&model, &cfg).unwrap()];
        let mut t = Tail::new(&model, None, cfg, &mut work).unwrap();
        let mut loss_at = |t: &mut Tail<'_>| {
            let buf = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut mem)[..n];
            let mut e = Engine::new(&model, buf).unwrap();
            e.input_f32().unwrap().copy_from_slice(x);
            t.loss(&mut e, None, label).unwrap()
        };
        let before: Vec<Vec<f32>> = {
            let p = t.params_mut();
            vec![
                p.w.to_vec(),
                p.b.to_vec(),
                p.gamma.to_vec(),
                p.beta.to_vec(),
            ]
        };
        {
            let mut mem2 = vec![0u128; model.arena_bytes().div_ceil(16)];
            let buf = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut mem2)[..n];
            let mut e = Engine::new(&model, buf).unwrap();
            e.input_f32().unwrap().copy_from_slice(x);
            t.step(&mut e, None, label).unwrap();
        }
        let grads: Vec<Vec<f32>> = {
            let p = t.params_mut();
            let after = [&p.w[..], &p.b[..], &p.gamma[..], &p.beta[..]];
            before
                .iter()
                .zip(after)
                .map(|(b, a)| b.iter().zip(a).map(|(b, a)| b - a).collect())
                .collect()
        };
        // Restore, then check the largest gradients of each tensor.
        {
            let p = t.params_mut();
            p.w.copy_from_slice(&before[0]);
            p.b.copy_from_slice(&before[1]);
            p.gamma.copy_from_slice(&before[2]);
            p.beta.copy_from_slice(&before[3]);
        }
        for (tensor, g) in grads.iter().enumerate() {
            let mut idx: Vec<usize> = (0..g.len()).collect();
            idx.sort_by(|&a, &b| g[b].abs().total_cmp(&g[a].abs()));
            for &i in idx.iter().take(4) {
                let h = 1e-2f32;
                let at = |v: f32, t: &mut Tail<'_>| {
                    let p = t.params_mut();
                    let slot = match tensor {
                        0 => &mut p.w[i],
                        1 => &mut p.b[i],
                        2 => &mut p.gamma[i],
                        _ => &mut p.beta[i],
                    };
                    *slot = v;
                };
                let v0 = before[tensor][i];
                at(v0 + h, &mut t);
                let up = loss_at(&mut t);
                at(v0 - h, &mut t);
                let down = loss_at(&mut t);
                at(v0, &mut t);
                let fd = (up - down) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() <= 2e-3 + 0.03 * g[i].abs(),
                    "sample {s} tensor {tensor} index {i}: gradient {} vs finite difference {fd}",
                    g[i]
                );
            }
        }
    }
}

/// The RAM plan of adaptation for MNIST's `paper-mlp` and `cnn` as int8
/// files (untrained weights: the plan depends only on the shapes). Printed
/// for the docs; `paper-mlp`'s figures are stated, and the 16 KiB budget
/// beyond the arena asserted for re-estimation, and for re-estimation and
/// tail training (γ, β too, or dense only) without momentum, the default,
/// and for tail training alone with momentum ([`TAIL_ALONE`]). With
/// re-estimation and momentum (0.9) the velocities (`K·D + K + 2·C` floats,
/// 4,840 bytes) put it over.
#[test]
fn adapt_ram_plan_of_the_mnist_networks() {
    use crate::network::Network;
    use normcore::adapt::{plan, tail::TailConfig};
    for name in ["paper-mlp", "cnn"] {
        let spec = preset(name).unwrap();
        let mut rng = normcore::Rng::new(3);
        let net = Network::new(spec.clone(), Init::He, &mut rng).unwrap();
        let folded = fold(&net).unwrap();
        let [h, w, c] = spec.input;
        let n = 16;
        let images: Vec<f32> = (0..n * h * w * c)
            .map(|_| rng.below(256) as f32 / 255.0)
            .collect();
        let data = Dataset::new(
            "r",
            images,
            vec![0; n],
            [h, w, c],
            spec.classes,
            1.0 / 255.0,
        )
        .unwrap();
        let cal = calibrate(&folded, &data, n).unwrap();
        let (iq, _) = input_params(&data).unwrap();
        let (qm, _) = quantize(&folded, &cal, iq, data.pixel_scale).unwrap();
        let bytes = ModelBytes::new(&write_int8_form(&qm, 4, WeightForm::Auto).unwrap());
        let model = bytes.parse().unwrap();
        let bn = TailConfig::default();
        let dense_only = TailConfig {
            train_bn: false,
            ..bn
        };
        let restat_only = plan(
            &model,
            Scope {
                restat: true,
                tail: false,
            },
            &bn,
        )
        .unwrap();
        let tail_cfg = if normcore::adapt::tail::Tail::words_needed(&model, &bn).is_ok() {
            bn
        } else {
            dense_only
        };
        let both = plan(
            &model,
            Scope {
                restat: true,
                tail: true,
            },
            &tail_cfg,
        )
        .unwrap();
        let tail_dense = plan(
            &model,
            Scope {
                restat: true,
                tail: true,
            },
            &dense_only,
        )
        .unwrap();
        eprintln!(
            "{name} int8 (arena {} B): restat {restat_only:?} = {} B; both (train_bn {}) {both:?} = {} B; both, dense only {} B",
            model.arena_bytes(),
            restat_only.total(),
            tail_cfg.train_bn,
            both.total(),
            tail_dense.total()
        );
        if name == "paper-mlp" {
            let both_at = |cfg: &TailConfig| {
                plan(
                    &model,
                    Scope {
                        restat: true,
                        tail: true,
                    },
                    cfg,
                )
                .unwrap()
            };
            let plain = TailConfig {
                momentum: 0.0,
                lr: 0.1,
                train_bn: true,
            };
            let dense_plain = TailConfig {
                train_bn: false,
                ..plain
            };
            let momentum = TailConfig {
                momentum: 0.9,
                lr: 0.01,
                train_bn: true,
            };
            let dense_momentum = TailConfig {
                train_bn: false,
                ..momentum
            };
            let rows = [
                ("restat", restat_only),
                ("both, γ β, momentum 0", both_at(&plain)),
                ("both, dense only, momentum 0", both_at(&dense_plain)),
                ("both, γ β, momentum 0.9", both_at(&momentum)),
                ("both, dense only, momentum 0.9", both_at(&dense_momentum)),
                (
                    "tail alone (dense only), momentum 0.9",
                    plan(
                        &model,
                        Scope {
                            restat: false,
                            tail: true,
                        },
                        &TAIL_ALONE,
                    )
                    .unwrap(),
                ),
            ];
            for (what, p) in rows {
                eprintln!(
                    "paper-mlp int8 {what}: overlay {} + max(restat {}, tail {}) = {} B ({})",
                    p.overlay,
                    p.restat,
                    p.tail,
                    p.total(),
                    if p.total() <= 16 * 1024 {
                        "<= 16 KiB"
                    } else {
                        "over 16 KiB"
                    }
                );
            }
            let figures: Vec<(usize, usize, usize, usize)> = rows
                .iter()
                .map(|(_, p)| (p.overlay, p.restat, p.tail, p.total()))
                .collect();
            assert_eq!(
                figures,
                [
                    (6208, 3200, 0, 9408),
                    (8400, 3200, 6480, 14880),
                    (8400, 3200, 4880, 13280),
                    (8400, 3200, 11320, 19720),
                    (8400, 3200, 8920, 17320),
                    (1408, 0, 8920, 10328),
                ]
            );
            assert_eq!(TailConfig::default(), plain, "the default fits");
            assert_eq!(TAIL_ALONE, dense_momentum);
            for (what, p) in rows[..3].iter().chain(&rows[5..]) {
                assert!(p.total() <= 16 * 1024, "{what}: {p:?}");
            }
        }
    }
}

/// Re-estimation and inference on an int8 model's input levels (as a
/// device holds its samples) are the stored-value path after the input
/// quantization, bit for bit; levels for an f32 model, or a partial
/// sample, are refused.
#[test]
fn adapt_on_input_levels_equals_adapt_on_stored_values() {
    let f = cnn();
    let model = f.int8.parse().unwrap();
    let scope = Scope {
        restat: true,
        tail: false,
    };
    let shifted = Shift::Contrast(0.4).apply(&f.train).unwrap();
    let x = first(&shifted, 24);
    let levels = input_levels(&model, &x);
    let mut a = new_overlay(&model, scope).unwrap();
    let mut b = a.clone();
    let (ra, rb);
    {
        let mut oa = Overlay::load(&model, bytemuck::cast_slice(&a.clone()), &mut a).unwrap();
        ra = restat(&model, &mut oa, &x).unwrap();
    }
    {
        let mut ob = Overlay::load(&model, bytemuck::cast_slice(&b.clone()), &mut b).unwrap();
        rb = restat_levels(&model, &mut ob, &levels).unwrap();
    }
    assert_eq!(ra, rb);
    assert_eq!(a, b, "the overlays");
    let o = Overlay::load(&model, bytemuck::cast_slice(&a.clone()), &mut a).unwrap();
    assert!(o.is_active());
    let test = first(&f.test, 40);
    assert_eq!(
        run_all_levels(&model, Some(&o), &input_levels(&model, &test)).unwrap(),
        run_all(&model, Some(&o), &test).unwrap()
    );
    let mut w = new_overlay(&model, scope).unwrap();
    let mut o = Overlay::load(&model, bytemuck::cast_slice(&w.clone()), &mut w).unwrap();
    assert!(restat_levels(&model, &mut o, &levels[..levels.len() - 1]).is_err());
    assert!(restat_levels(&model, &mut o, &levels[..sample_len(&model)]).is_err());
    let f32_model = f.f32.parse().unwrap();
    assert!(run_all_levels(&f32_model, None, &levels).is_err());
}

#[test]
fn adapt_shift_names_parse_back() {
    for s in Shift::SCENARIO {
        assert_eq!(s.name().parse::<Shift>(), Ok(s), "{}", s.name());
    }
    let g = |gain, offset| Shift::GainOffset { gain, offset };
    assert_eq!("gain1.2-0.1".parse::<Shift>(), Ok(g(1.2, -0.1)));
    assert_eq!("gain1.2+-0.1".parse::<Shift>(), Ok(g(1.2, -0.1)));
    assert_eq!("gain-1+1".parse::<Shift>(), Ok(g(-1.0, 1.0)));
    assert_eq!("gain2e-1+0".parse::<Shift>(), Ok(g(0.2, 0.0)));
    assert_eq!(g(1.2, -0.1).name().parse::<Shift>(), Ok(g(1.2, -0.1)));
    assert_eq!("blur".parse::<Shift>(), Ok(Shift::Blur));
    for bad in [
        "",
        "gain",
        "gain0.6",
        "gain0.6+",
        "gain+0.3",
        "gainx+1",
        "gain1+inf",
        "contrast",
        "contrastNaN",
        "blur5x5",
        "inverted",
        "noise0.1",
    ] {
        let e = bad.parse::<Shift>().unwrap_err();
        assert!(
            e.contains(&format!("`{bad}`")) && e.contains(SHIFT_FORMS),
            "{e}"
        );
    }
}

#[test]
fn adapt_pick_seeded_is_deterministic_distinct_and_nested() {
    let a = pick_seeded(100, 10, 7);
    assert_eq!(a, pick_seeded(100, 10, 7));
    assert_ne!(a, pick_seeded(100, 10, 8));
    assert_eq!(&pick_seeded(100, 20, 7)[..10], &a[..]);
    let mut s = a.clone();
    s.sort_unstable();
    s.dedup();
    assert_eq!(s.len(), 10);
    assert!(a.iter().all(|&i| i < 100));
    assert_eq!(pick_seeded(5, 64, 1).len(), 5);
    assert_eq!(
        Method::Both.scope(),
        Scope {
            restat: true,
            tail: true
        }
    );
    assert_eq!(
        Method::Tail.scope(),
        Scope {
            restat: false,
            tail: true
        }
    );
    assert_eq!(
        Method::Restat.scope(),
        Scope {
            restat: true,
            tail: false
        }
    );
}

/// Written by hand into the tail entry (the last, dense layer): the file's
/// bias, multipliers and shifts with changes, its weights changed where
/// the stored form allows, and (int8) another output zero point: what tail
/// training writes, without the training.
fn fake_tail(model: &Model<'_>, o: &mut Overlay<'_>) {
    use bytemuck::cast_slice_mut;
    let last = model.layer_count() - 1;
    let e = o.entry_of(last).unwrap();
    let l = model.layer(last).unwrap();
    match l.bias.unwrap() {
        Data::I32(b) => {
            let ob: &mut [i32] = cast_slice_mut(o.part_mut(e, Part::Bias).unwrap());
            ob.copy_from_slice(b);
            ob[0] += 300;
        }
        Data::F32(b) => {
            let ob: &mut [f32] = cast_slice_mut(o.part_mut(e, Part::Bias).unwrap());
            ob.copy_from_slice(b);
            ob[0] += 0.5;
        }
        _ => panic!(),
    }
    if let Some((m, s)) = l.requant {
        cast_slice_mut::<u32, i32>(o.part_mut(e, Part::Multiplier).unwrap()).copy_from_slice(m);
        let os: &mut [i32] = cast_slice_mut(o.part_mut(e, Part::Shift).unwrap());
        os.copy_from_slice(s);
        os[1] += 1;
        let q = l.quant;
        o.set_quant(
            e,
            normcore::model::QuantOut {
                zero_point: (q.zero_point + 3).min(127),
                requant_zero_point: (q.requant_zero_point + 3).min(127),
                ..q
            },
        );
    }
    match l.weights.unwrap() {
        Data::I8(w) => {
            let ow: &mut [i8] = cast_slice_mut(o.part_mut(e, Part::Weights).unwrap());
            ow[..w.len()].copy_from_slice(w);
            for v in ow.iter_mut().step_by(5) {
                *v = v.saturating_neg().max(-127);
            }
        }
        Data::I8Pairs(w) => {
            // The overlay holds them as bytes.
            let ow: &mut [i8] = cast_slice_mut(o.part_mut(e, Part::Weights).unwrap());
            normcore::kernels::pack::unpack_pairs(w, &mut ow[..2 * w.len()]).unwrap();
            for v in ow.iter_mut().step_by(5) {
                *v = v.saturating_neg().max(-127);
            }
        }
        Data::F32(w) => {
            let ow: &mut [f32] = cast_slice_mut(o.part_mut(e, Part::Weights).unwrap());
            ow.copy_from_slice(w);
            for v in ow.iter_mut().step_by(3) {
                *v *= -1.5;
            }
        }
        Data::I32(_) => panic!(),
    }
    o.set_flags(e, overlay::ACTIVE | overlay::HAS_WEIGHTS, true);
}

/// The baked file runs as the model with the overlay: bit for bit (int8),
/// identically (f32), on the whole test set; for re-estimation, for a
/// written tail (weights, output quantization) and for both; and it
/// carries the adapted statistics as its BN records.
#[test]
fn adapt_bake_runs_as_the_model_with_the_overlay() {
    let shift = Shift::GainOffset {
        gain: 0.6,
        offset: 0.3,
    };
    for f in [mlp(), cnn()] {
        let train = shift.apply(&f.train).unwrap();
        let test = shift.apply(&f.test).unwrap();
        for (kind, bytes) in models(f) {
            let model = bytes.parse().unwrap();
            let plain = run_all(&model, None, test.images()).unwrap();
            for method in [Method::Restat, Method::Tail, Method::Both] {
                let what = format!("{kind} {}", method.name());
                let mut words = new_overlay(&model, method.scope()).unwrap();
                let mut o = Overlay::new(&model, method.scope(), &mut words).unwrap();
                if method != Method::Tail {
                    restat(&model, &mut o, &first(&train, 64)).unwrap();
                }
                if method != Method::Restat {
                    fake_tail(&model, &mut o);
                }
                let want = run_all(&model, Some(&o), test.images()).unwrap();
                assert_ne!(want, plain, "{what}: the overlay changes nothing");
                let baked = bake(bytes.bytes(), &o).unwrap();
                assert_eq!(baked.len(), bytes.bytes().len(), "{what}");
                let baked = ModelBytes::new(&baked);
                let bm = baked.parse().unwrap();
                assert_eq!(run_all(&bm, None, test.images()).unwrap(), want, "{what}");
                assert_eq!(
                    crate::export::device::run_all(&bm, test.images()).unwrap(),
                    want,
                    "{what}"
                );
                for (j, rec) in bm.bn_records().enumerate() {
                    let rec = rec.unwrap();
                    let now = o.current_bn(&model, rec.layer).unwrap();
                    assert_eq!((rec.mean, rec.var), (now.mean, now.var), "{what} BN {j}");
                }
                // Through the file's own reader: a round trip of the writer.
                assert_eq!(
                    crate::export::rewrite(&bm).unwrap(),
                    baked.bytes(),
                    "{what}"
                );
            }
            // An empty overlay bakes the file itself.
            let mut words = new_overlay(&model, Method::Both.scope()).unwrap();
            let o = Overlay::new(&model, Method::Both.scope(), &mut words).unwrap();
            assert_eq!(bake(bytes.bytes(), &o).unwrap(), bytes.bytes(), "{kind}");
        }
    }
    // Another model's overlay, a damaged file: refused.
    let f = mlp();
    let a = f.int8.parse().unwrap();
    let mut words = new_overlay(&a, Method::Restat.scope()).unwrap();
    let o = Overlay::new(&a, Method::Restat.scope(), &mut words).unwrap();
    let e = bake(f.f32.bytes(), &o).unwrap_err();
    assert!(format!("{e:#}").contains("another model"), "{e:#}");
    let mut damaged = f.int8.bytes().to_vec();
    damaged[200] ^= 1;
    let e = bake(&damaged, &o).unwrap_err();
    assert!(format!("{e:#}").contains("not a valid model file"), "{e:#}");
}
