//! Tests of the exporter: fold equivalence, quantization accuracy on the
//! built-in digits, the engine running the written files against the
//! independent integer reference (bit for bit), the reference's arithmetic,
//! the writer's bytes against FORMAT.md, and the golden round trip
//! `rewrite(parse(export(net))) == export(net)`.

use super::device::{self, Device, Logits, ModelBytes};
use super::fold::{fold, BnParams, FoldedLayer, FoldedModel, LayerOp};
use super::ncm::{self, pack_rows, unpack_rows};
use super::quant::{
    activation_table, calibrate, input_params, quantize, InputChoice, QParams, QuantModel,
    SIGMOID_OUT, TANH_OUT,
};
use super::reference::{requantize, round_div};
use super::ExportError;
use crate::data::{builtin_digits_split, Dataset};
use crate::network::{Init, Mode, Network};
use crate::spec::{preset, Hwc, NetworkSpec, Op};
use crate::train::{Schedule, TrainConfig, Trainer};
use normcore::kernels::quantize_multiplier;
use normcore::layers::{Activation, Dense};
use normcore::model::{Data, ModelError};
use normcore::Rng;

/// Every sample of `x` through core's parser and engine on the file `bytes`.
fn engine_run(bytes: &[u8], x: &[f32]) -> Vec<Logits> {
    let buf = ModelBytes::new(bytes);
    let model = buf.parse().unwrap();
    device::run_all(&model, x).unwrap()
}

/// The int8 levels the engine computes from an int8 file, `[n, classes]`.
fn engine_levels(bytes: &[u8], x: &[f32]) -> Vec<i8> {
    engine_run(bytes, x)
        .iter()
        .flat_map(|o| o.levels().expect("an int8 file").to_vec())
        .collect()
}

/// The f32 logits the engine computes from an f32 file, `[n, classes]`.
fn engine_f32(bytes: &[u8], x: &[f32]) -> Vec<f32> {
    engine_run(bytes, x)
        .iter()
        .flat_map(|o| match o {
            Logits::F32(v) => v.clone(),
            Logits::I8 { .. } => panic!("an f32 file"),
        })
        .collect()
}

/// A network with random weights, biases and non-trivial BN parameters
/// and population statistics.
fn randomized(spec: NetworkSpec, seed: u64) -> Network {
    let mut rng = Rng::new(seed);
    let mut net = Network::new(spec, Init::He, &mut rng).unwrap();
    for l in &mut net.layers {
        let wl = l.r.op.weight_len();
        match l.r.op {
            Op::BatchNorm(bn) => {
                let c = bn.channels();
                for g in &mut l.params[..c] {
                    *g = rng.uniform(0.5, 1.5);
                }
                for b in &mut l.params[c..] {
                    *b = rng.uniform(-0.5, 0.5);
                }
                for m in &mut l.running_mean {
                    *m = rng.uniform(-0.5, 0.5);
                }
                for v in &mut l.running_var {
                    *v = rng.uniform(0.2, 2.0);
                }
            }
            Op::Dense { .. } | Op::Conv { .. } | Op::Depthwise { .. } => {
                for b in &mut l.params[wl..] {
                    *b = rng.uniform(-0.2, 0.2);
                }
            }
            _ => {}
        }
    }
    net
}

fn random_inputs(net: &Network, n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n * net.input().len())
        .map(|_| rng.uniform(0.0, 1.0))
        .collect()
}

/// The unfolded network in eval mode.
fn unfolded(net: &mut Network, x: &[f32], n: usize) -> Vec<f32> {
    let mut ws = net.workspace(n, 1).unwrap();
    net.forward(&mut ws, x, Mode::Eval).unwrap().to_vec()
}

/// `|a - b| <= 1e-5·max(1, |b|)` everywhere; returns the worst ratio.
fn assert_close(folded: &[f32], reference: &[f32], what: &str) -> f32 {
    assert_eq!(folded.len(), reference.len());
    let mut worst = 0.0f32;
    for (i, (&a, &b)) in folded.iter().zip(reference).enumerate() {
        let tol = 1e-5 * b.abs().max(1.0);
        worst = worst.max((a - b).abs() / tol);
        assert!(
            (a - b).abs() <= tol,
            "{what}: output {i}: folded {a} vs unfolded {b}"
        );
    }
    worst
}

const DEPTHWISE_NET: &str = r#"
name = "dw-test"
input = [10, 10, 2]
classes = 10
[[layers]]
type = "conv2d"
filters = 6
kernel = 3
padding = "same"
bias = false
[[layers]]
type = "batchnorm"
[[layers]]
type = "relu6"
[[layers]]
type = "depthwise_conv2d"
kernel = 3
stride = 2
padding = 1
bias = false
[[layers]]
type = "batchnorm"
eps = 1e-3
[[layers]]
type = "tanh"
[[layers]]
type = "avgpool"
kernel = 2
padding = [0, 1, 0, 1]
[[layers]]
type = "sigmoid"
[[layers]]
type = "dropout"
rate = 0.2
[[layers]]
type = "conv2d"
filters = 12
kernel = 1
[[layers]]
type = "batchnorm"
[[layers]]
type = "relu"
[[layers]]
type = "maxpool"
kernel = 2
stride = 1
[[layers]]
type = "global_avgpool"
[[layers]]
type = "flatten"
[[layers]]
type = "dense"
units = 10
"#;

fn depthwise_spec() -> NetworkSpec {
    NetworkSpec::from_toml(DEPTHWISE_NET, "dw-test.toml").unwrap()
}

fn check_fold(spec: NetworkSpec, seed: u64) -> FoldedModel {
    let name = spec.name.clone();
    let mut net = randomized(spec, seed);
    let folded = fold(&net).unwrap();
    let n = 16;
    let x = random_inputs(&net, n, seed + 1);
    let a = folded.forward(&x, n).unwrap();
    let b = unfolded(&mut net, &x, n);
    let worst = assert_close(&a, &b, &name);
    eprintln!("fold equivalence {name}: worst error {worst:.3} of the tolerance");
    // What a device computes from the f32 file (core's engine and batch-1
    // kernels on blocked weights) is the same function.
    for r in [4, 8] {
        let bytes = ncm::write_f32(&folded, r, 1.0 / 255.0).unwrap();
        let d = engine_f32(&bytes, &x);
        assert_close(
            &d,
            &b,
            &format!("{name}, the f32 file on core's engine, R = {r}"),
        );
    }
    folded
}

#[test]
fn export_fold_equivalence_paper_mlp() {
    let f = check_fold(preset("paper-mlp").unwrap(), 11);
    // Three dense+BN+sigmoid layers and the output layer; BN kept for the table.
    assert_eq!(f.layers.len(), 4);
    assert!(f.layers[..3]
        .iter()
        .all(|l| l.act == Some(Activation::Sigmoid) && l.bn.is_some()));
    assert!(f.layers[3].act.is_none() && f.layers[3].bn.is_none());
}

#[test]
fn export_fold_equivalence_cnn() {
    let f = check_fold(preset("cnn").unwrap(), 12);
    let ops: Vec<&str> = f.layers.iter().map(|l| l.op.name()).collect();
    assert_eq!(ops, ["conv2d", "maxpool", "conv2d", "maxpool", "dense"]);
    assert_eq!(f.layers[4].input, Hwc { h: 4, w: 4, c: 32 });
}

#[test]
fn export_fold_equivalence_depthwise_toml() {
    let f = check_fold(depthwise_spec(), 13);
    let ops: Vec<(&str, Option<Activation>)> =
        f.layers.iter().map(|l| (l.op.name(), l.act)).collect();
    assert_eq!(
        ops,
        [
            ("conv2d", Some(Activation::Relu6)),
            ("depthwise", Some(Activation::Tanh)),
            ("avgpool", None),
            ("activation", Some(Activation::Sigmoid)),
            ("conv2d", Some(Activation::Relu)),
            ("maxpool", None),
            ("global_avgpool", None),
            ("dense", None),
        ]
    );
    assert_eq!(f.layers[1].bn.as_ref().unwrap().eps, 1e-3);
}

#[test]
fn export_fold_equivalence_after_training() {
    // Statistics from real training rather than random ones.
    let (train, _) = builtin_digits_split().unwrap();
    let mut t = train_digits("digits-cnn", &train, 50);
    let folded = fold(&t.net).unwrap();
    let n = 64;
    let idx: Vec<usize> = (0..n).collect();
    let mut x = vec![0.0; n * 64];
    let mut y = vec![0; n];
    train.gather(&idx, &mut x, &mut y).unwrap();
    let a = folded.forward(&x, n).unwrap();
    let b = unfolded(&mut t.net, &x, n);
    assert_close(&a, &b, "digits-cnn after 50 steps");
}

#[test]
fn export_fold_drops_dropout_and_fuses_across_it() {
    let spec = NetworkSpec::from_toml(
        r#"
        input = [4, 4, 1]
        classes = 3
        [[layers]]
        type = "dense"
        units = 5
        [[layers]]
        type = "dropout"
        rate = 0.5
        [[layers]]
        type = "relu"
        [[layers]]
        type = "tanh"
        [[layers]]
        type = "dense"
        units = 3
        "#,
        "t",
    )
    .unwrap();
    let f = check_fold(spec, 3);
    assert_eq!(f.layers.len(), 3);
    assert_eq!(f.layers[0].act, Some(Activation::Relu));
    assert_eq!(f.layers[1].op, LayerOp::Activation);
    assert_eq!(f.layers[1].act, Some(Activation::Tanh));
    // A layer without BN keeps its own bias.
    assert!(f.layers[0].bias.iter().any(|&b| b != 0.0));
}

#[test]
fn export_fold_rejects_what_the_format_cannot_express() {
    // A convolution after a flatten would need a reshape.
    let spec = NetworkSpec::from_toml(
        r#"
        input = [4, 4, 2]
        classes = 3
        [[layers]]
        type = "flatten"
        [[layers]]
        type = "conv2d"
        filters = 3
        kernel = 1
        "#,
        "t",
    )
    .unwrap();
    let net = randomized(spec, 1);
    let e = fold(&net).unwrap_err().to_string();
    assert!(
        e.contains("layer 2 (conv2d)") && e.contains("no reshape"),
        "{e}"
    );
    // BN that does not follow a weighted layer (the resolver forbids it in
    // descriptions; a network edited by hand must still be refused).
    let mut net = randomized(preset("digits-mlp").unwrap(), 2);
    net.layers.remove(0);
    net.spec.layers.remove(0);
    let e = fold(&net).unwrap_err().to_string();
    assert!(
        e.contains("layer 1 (batchnorm)") && e.contains("directly follow"),
        "{e}"
    );
}

fn train_digits(name: &str, train: &Dataset, steps: u64) -> Trainer {
    let cfg = TrainConfig {
        batch: 32,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 1e-4,
        nesterov: false,
        schedule: Schedule::Step {
            gamma: 0.3,
            every: 1000,
        },
        seed: 1,
    };
    let mut t = Trainer::new(preset(name).unwrap(), Init::He, cfg, 1).unwrap();
    for _ in 0..steps {
        t.train_step(train).unwrap();
    }
    t
}

/// Train, fold, quantize and write; run both files through core's parser
/// and engine; check the accuracies, the engine against the independent
/// integer reference, and the files.
fn digits_quantization(name: &str) {
    let (train, test) = builtin_digits_split().unwrap();
    let mut t = train_digits(name, &train, 1500);
    let float = t.evaluate(&test, None).unwrap().accuracy;
    let folded = fold(&t.net).unwrap();
    let host_folded = folded.accuracy(&test).unwrap();
    let cal = calibrate(&folded, &train, 1000).unwrap();
    assert_eq!(cal.samples, 1000);
    let (input_q, choice) = input_params(&train).unwrap();
    assert_eq!(
        choice,
        InputChoice::RawLevels {
            raw_min: 0,
            raw_max: 16
        }
    );
    let (qm, notes) = quantize(&folded, &cal, input_q, train.pixel_scale).unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    let f32_bytes = ncm::write_f32(&folded, 4, train.pixel_scale).unwrap();
    check_layout(&f32_bytes);
    let f32_run = super::run_file(&f32_bytes, &test).unwrap();
    let int8_bytes = ncm::write_int8(&qm, 4).unwrap();
    check_layout(&int8_bytes);
    let int8_run = super::run_file(&int8_bytes, &test).unwrap();
    let (folded_acc, int8) = (f32_run.accuracy, int8_run.accuracy);
    let gap = 100.0 * (folded_acc - int8);
    eprintln!(
        "{name}: float {:.2}%  folded f32 (engine) {:.2}%  int8 (engine) {:.2}%  (f32 - int8 gap {gap:.2} points, {} test samples)",
        100.0 * float,
        100.0 * folded_acc,
        100.0 * int8,
        test.len()
    );
    assert!(float > 0.9, "{name} trained to only {float}");
    for (what, acc) in [("host", host_folded), ("engine", folded_acc)] {
        assert!(
            (float - acc).abs() <= 1.0 / test.len() as f64 + 1e-12,
            "folding changed the accuracy ({what}): {float} vs {acc}"
        );
    }
    // Within one test sample of f32 on the 360 digits (0.28 points).
    assert!(gap.abs() <= 0.5, "int8 is {gap:.2} points from f32");

    // The engine on the int8 file equals the independent integer reference
    // on the quantized model bit for bit, for either block size.
    let out: Vec<i8> = int8_run
        .outputs
        .iter()
        .flat_map(|o| o.levels().unwrap().to_vec())
        .collect();
    let xq = qm.quantize_input(test.images());
    assert_eq!(qm.forward_plain(&xq, test.len()).unwrap(), out);
    let int8_r8 = ncm::write_int8(&qm, 8).unwrap();
    check_layout(&int8_r8);
    assert_eq!(engine_levels(&int8_r8, test.images()), out);
    // The pair form of the weights: the same outputs, bit for bit, and a
    // file that re-writes to itself; it is blocked by 4 rows only.
    let pairs = ncm::write_int8_form(&qm, 4, ncm::WeightForm::Pairs).unwrap();
    check_layout(&pairs);
    assert_eq!(
        super::run_file(&pairs, &test).unwrap().accuracy,
        int8_run.accuracy
    );
    assert_eq!(engine_levels(&pairs, test.images()), out);
    assert!(ncm::write_int8_form(&qm, 8, ncm::WeightForm::Pairs).is_err());
    // The default, per-layer form (`--weights auto`): pair words where the
    // runs are long enough, bytes elsewhere; the same outputs bit for bit,
    // and `run_file` checks that the file re-writes to itself.
    let auto = ncm::write_int8_form(&qm, 4, ncm::WeightForm::Auto).unwrap();
    check_layout(&auto);
    assert_eq!(
        super::run_file(&auto, &test).unwrap().accuracy,
        int8_run.accuracy
    );
    assert_eq!(engine_levels(&auto, test.images()), out);
    let store = ModelBytes::new(&auto);
    let parsed = store.parse().unwrap();
    assert_eq!(ncm::rewrite(&parsed).unwrap(), auto);
    let mut any_pairs = false;
    for (l, ql) in parsed.layers().zip(&qm.layers) {
        let l = l.unwrap();
        let Some(w) = l.weights else { continue };
        let pairs = matches!(w, Data::I8Pairs(_));
        assert_eq!(
            pairs,
            ncm::pairs_pay(&ql.op, ql.input, 4),
            "{name}: layer {} input {}",
            l.op.name(),
            ql.input
        );
        any_pairs |= pairs;
    }
    // Both presets end in a dense layer of 64 inputs: pairs there.
    assert!(any_pairs);
    // Blocks of 8 rows: no pairs, the plain i8 file.
    assert_eq!(
        ncm::write_int8_form(&qm, 8, ncm::WeightForm::Auto).unwrap(),
        int8_r8
    );

    // The int8 logits follow the float ones: same class on nearly every
    // test sample, and dequantized within a few output steps.
    let logits = folded.forward(test.images(), test.len()).unwrap();
    let k = qm.classes;
    let last = qm.layers.last().unwrap().output_q;
    let (mut agree, mut err) = (0, 0.0f32);
    for (q, f) in out.chunks_exact(k).zip(logits.chunks_exact(k)) {
        agree += usize::from(
            normcore::engine::Output::I8 {
                values: q,
                scale: 1.0,
                zero_point: 0,
            }
            .argmax()
                == normcore::layers::loss::argmax(f),
        );
        for (&a, &b) in q.iter().zip(f) {
            err = err.max((last.dequantize(a) - b).abs());
        }
    }
    let range = 255.0 * last.scale;
    eprintln!(
        "{name}: int8 and f32 agree on {agree}/{} test samples; worst logit error {err:.3} ({:.1}% of the output range)",
        test.len(),
        100.0 * err / range
    );
    assert!(agree as f64 >= 0.97 * test.len() as f64);
    assert!(err <= 0.1 * range, "worst logit error {err} of {range}");
    eprintln!(
        "{name}: f32 file {} bytes, arena {} bytes; int8 file {} bytes, arena {} bytes",
        f32_run.file_bytes, f32_run.arena_bytes, int8_run.file_bytes, int8_run.arena_bytes
    );
    // `device_run`, the helper the firmware tests use, predicts the same.
    let per = test.sample_len();
    for i in [0, 17, test.len() - 1] {
        let x = &test.images()[i * per..(i + 1) * per];
        assert_eq!(
            super::device_run(&int8_bytes, x).unwrap(),
            int8_run.outputs[i]
        );
        assert_eq!(
            super::device_run(&f32_bytes, x).unwrap(),
            f32_run.outputs[i]
        );
    }
}

#[test]
fn export_int8_digits_mlp_within_half_a_point() {
    digits_quantization("digits-mlp");
}

#[test]
fn export_int8_digits_cnn_within_half_a_point() {
    digits_quantization("digits-cnn");
}

#[test]
fn export_int8_follows_f32_on_every_op() {
    // An untrained network exercising depthwise, padding, average pooling,
    // a standalone sigmoid, ReLU6/tanh tables and global pooling: the int8
    // reference dequantized stays close to the folded f32 model.
    let net = randomized(depthwise_spec(), 21);
    let folded = fold(&net).unwrap();
    let mut rng = Rng::new(5);
    let n = 200;
    let images: Vec<f32> = (0..n * 200)
        .map(|_| rng.below(256) as f32 / 255.0)
        .collect();
    let labels = vec![0u16; n];
    let data = Dataset::new("rand", images, labels, [10, 10, 2], 10, 1.0 / 255.0).unwrap();
    let cal = calibrate(&folded, &data, n).unwrap();
    let (input_q, _) = input_params(&data).unwrap();
    assert_eq!(
        input_q,
        QParams {
            scale: 1.0 / 255.0,
            zero_point: -128
        }
    );
    let (qm, _) = quantize(&folded, &cal, input_q, data.pixel_scale).unwrap();
    assert!(qm.layers[1].table.len() == 256 && qm.layers[3].table.len() == 256);
    assert_eq!(qm.layers[1].output_q, TANH_OUT);
    assert_eq!(qm.layers[3].output_q, SIGMOID_OUT);
    // Padded convolutions keep the zero point out of the bias.
    assert!(!qm.layers[0].zp_folded && !qm.layers[1].zp_folded);
    assert!(qm.layers[4].zp_folded && qm.layers[7].zp_folded);
    // ReLU6 clamps at 0 and 6.
    let l0 = &qm.layers[0];
    assert_eq!(l0.clamp_min, l0.output_q.zero_point);
    assert!(l0.clamp_max <= 127);
    let xq = qm.quantize_input(data.images());
    let out = engine_levels(&ncm::write_int8(&qm, 4).unwrap(), data.images());
    assert_eq!(qm.forward_plain(&xq, n).unwrap(), out);
    assert_eq!(
        engine_levels(&ncm::write_int8(&qm, 8).unwrap(), data.images()),
        out
    );
    // Pair-form weights (padded convolutions: the zero point per load).
    let pairs = ncm::write_int8_form(&qm, 4, ncm::WeightForm::Pairs).unwrap();
    assert_eq!(engine_levels(&pairs, data.images()), out);
    let logits = folded.forward(data.images(), n).unwrap();
    let last = qm.layers.last().unwrap().output_q;
    let range = 255.0 * last.scale;
    let worst = out
        .iter()
        .zip(&logits)
        .map(|(&q, &f)| (last.dequantize(q) - f).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 0.05 * range,
        "worst error {worst} of an output range {range}"
    );
}

#[test]
fn export_requantize_rounds_half_up_and_saturates() {
    // M = 0.5: m = 2^30, shift 0, t = 31.
    let half = 1 << 30;
    assert_eq!(requantize(3, half, 0, 0, -128, 127), 2); // 1.5 -> 2
    assert_eq!(requantize(-3, half, 0, 0, -128, 127), -1); // -1.5 -> -1
    assert_eq!(requantize(-5, half, 0, 0, -128, 127), -2); // -2.5 -> -2
    assert_eq!(requantize(1000, half, 0, 0, -128, 127), 127);
    assert_eq!(requantize(-1000, half, 0, 0, -128, 127), -128);
    assert_eq!(requantize(10, half, 0, -7, -128, 127), -2);
    assert_eq!(requantize(-100, half, 0, -128, -128, 127), -128); // ReLU clamp
                                                                  // Extreme shifts stay in i64: M = 2^30·(1 - 2^-31) and M = 2^-32.
    assert_eq!(requantize(i32::MAX, i32::MAX, 30, 0, -128, 127), 127);
    assert_eq!(requantize(i32::MIN, half, -31, 0, -128, 127), 0); // -0.5 -> 0
}

#[test]
fn export_core_multiplier_is_q31_with_shift() {
    // The contract the exporter relies on (core's `quantize_multiplier`).
    for &m in &[
        1.0,
        0.5,
        0.75,
        1e-3,
        3.7,
        123.456,
        2.0f64.powi(-31),
        0.999_999_999_9,
    ] {
        let (q, s) = quantize_multiplier(m).unwrap();
        let bits = i64::from(q.to_bits());
        assert!((1i64 << 30..1i64 << 31).contains(&bits), "{m}: {bits}");
        assert!((-31..=30).contains(&s));
        let back = bits as f64 * 2f64.powi(s - 31);
        assert!((back - m).abs() <= m * 2f64.powi(-31), "{m} -> {back}");
    }
    assert_eq!(quantize_multiplier(1.0).unwrap().1, 1);
    assert_eq!(
        quantize_multiplier(0.5).unwrap(),
        (fixed::types::I1F31::from_num(0.5), 0)
    );
    for bad in [-1.0, f64::NAN, f64::INFINITY, 2f64.powi(-40), 2f64.powi(31)] {
        assert!(quantize_multiplier(bad).is_none(), "{bad}");
    }
}

#[test]
fn export_average_rounds_half_up() {
    assert_eq!(round_div(3, 2), 2);
    assert_eq!(round_div(-3, 2), -1);
    assert_eq!(round_div(-5, 2), -2);
    assert_eq!(round_div(-512, 4), -128);
    assert_eq!(round_div(7, 3), 2);
    assert_eq!(round_div(-7, 3), -2);
}

#[test]
fn export_activation_tables_meet_their_error_bound() {
    let pre = QParams {
        scale: 0.05,
        zero_point: 10,
    };
    for (a, out, f) in [
        (
            Activation::Sigmoid,
            SIGMOID_OUT,
            (|x: f64| 1.0 / (1.0 + (-x).exp())) as fn(f64) -> f64,
        ),
        (Activation::Tanh, TANH_OUT, f64::tanh),
    ] {
        let t = activation_table(a, pre).unwrap();
        assert_eq!(t.len(), 256);
        // Monotonic, and f(0) at index zp + 128.
        assert!(t.windows(2).all(|w| w[0] <= w[1]));
        let zero = f64::from(out.dequantize(t[(pre.zero_point + 128) as usize]));
        assert!((zero - f(0.0)).abs() <= f64::from(out.scale) / 2.0);
        for q in -128i32..=127 {
            let x = f64::from(pre.scale) * f64::from(q - pre.zero_point);
            let got = f64::from(out.dequantize(t[(q + 128) as usize]));
            let top = f64::from(out.dequantize(127));
            let bound = f64::from(out.scale) * if f(x) > top { 1.0 } else { 0.5 };
            assert!(
                (got - f(x)).abs() <= bound + 1e-12,
                "{a:?} at {q}: {got} vs {}",
                f(x)
            );
        }
    }
    assert!(activation_table(Activation::Relu, pre).is_none());
}

#[test]
fn export_qparams_cover_the_range_and_zero() {
    let q = QParams::from_range(0.0, 2.55);
    assert_eq!(q.zero_point, -128);
    assert!((q.scale - 0.01).abs() < 1e-9);
    for (lo, hi) in [
        (-1.0f32, 1.0f32),
        (-3.0, 0.5),
        (0.2, 7.0),
        (-2.0, -1.0),
        (0.0, 0.0),
    ] {
        let q = QParams::from_range(lo, hi);
        assert!((-128..=127).contains(&q.zero_point));
        assert_eq!(q.dequantize(q.zero_point as i8), 0.0);
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        if hi > lo {
            assert!(
                q.dequantize(-128) <= lo + q.scale / 2.0 + 1e-6,
                "{lo} {hi} {q:?}"
            );
            assert!(
                q.dequantize(127) >= hi - q.scale / 2.0 - 1e-6,
                "{lo} {hi} {q:?}"
            );
        }
    }
}

#[test]
fn export_input_quantization_maps_raw_integers_exactly() {
    let ds = |raw: &[f32], ps: f32| {
        let images: Vec<f32> = raw.iter().map(|r| r * ps).collect();
        let n = images.len();
        Dataset::new("t", images, vec![0; n], [1, 1, 1], 1, ps).unwrap()
    };
    // Digits: 0..=16 with pixel scale 1/16.
    let (q, c) = input_params(&ds(&[0.0, 5.0, 16.0, 3.0], 1.0 / 16.0)).unwrap();
    assert_eq!((q.scale, q.zero_point), (1.0 / 16.0, -128));
    assert_eq!(
        c,
        InputChoice::RawLevels {
            raw_min: 0,
            raw_max: 16
        }
    );
    // MNIST: 0..=255 with pixel scale 1/255: every raw value is its level.
    let d = ds(
        &(0..=255).map(|v| v as f32).collect::<Vec<_>>(),
        1.0 / 255.0,
    );
    let (q, _) = input_params(&d).unwrap();
    assert_eq!((q.scale, q.zero_point), (1.0 / 255.0, -128));
    for (i, &x) in d.images().iter().enumerate() {
        assert_eq!(i32::from(q.quantize(x)), i as i32 - 128);
    }
    // Signed raw values: -3..=5 keep their integer levels.
    let (q, c) = input_params(&ds(&[-3.0, 5.0, 0.0], 0.5)).unwrap();
    assert_eq!((q.scale, q.zero_point), (0.5, -125));
    assert_eq!(
        c,
        InputChoice::RawLevels {
            raw_min: -3,
            raw_max: 5
        }
    );
    // Too many levels or not integers: the value range.
    let (q, c) = input_params(&ds(&[0.0, 300.0], 1.0)).unwrap();
    assert!(matches!(c, InputChoice::Range(_)));
    assert_eq!(q, QParams::from_range(0.0, 300.0));
    let (_, c) = input_params(&ds(&[0.0, 0.37], 1.0)).unwrap();
    assert!(matches!(c, InputChoice::Range(_)));
}

#[test]
fn export_zero_point_folding_does_not_change_results() {
    // The same dense layer with the zero point subtracted per input and
    // folded into the bias gives identical outputs.
    let mut rng = Rng::new(9);
    let (inputs, outputs) = (37, 6);
    let in_q = QParams {
        scale: 0.02,
        zero_point: -37,
    };
    let weights: Vec<i8> = (0..inputs * outputs)
        .map(|_| (rng.below(255) as i32 - 127) as i8)
        .collect();
    let bias: Vec<i32> = (0..outputs)
        .map(|_| rng.below(20_000) as i32 - 10_000)
        .collect();
    let mut layer = super::quant::QLayer {
        op: LayerOp::Dense(Dense::new(inputs, outputs).unwrap()),
        act: None,
        input: Hwc {
            h: 1,
            w: 1,
            c: inputs,
        },
        output: Hwc {
            h: 1,
            w: 1,
            c: outputs,
        },
        input_q: in_q,
        output_q: QParams {
            scale: 0.1,
            zero_point: 3,
        },
        requant_zp: 3,
        requant_scale: 0.1,
        clamp_min: -128,
        clamp_max: 127,
        zp_folded: false,
        weights: weights.clone(),
        bias: bias.clone(),
        multiplier: vec![1_500_000_000; outputs],
        shift: vec![-9; outputs],
        table: Vec::new(),
        bn: None,
    };
    let x: Vec<i8> = (0..inputs)
        .map(|_| rng.below(256) as i32 as u8 as i8)
        .collect();
    let mut plain = vec![0i8; outputs];
    layer.forward_plain(&x, &mut plain);
    layer.zp_folded = true;
    for c in 0..outputs {
        let sum: i32 = weights[c * inputs..(c + 1) * inputs]
            .iter()
            .map(|&w| i32::from(w))
            .sum();
        layer.bias[c] = bias[c] - in_q.zero_point * sum;
    }
    let mut folded = vec![0i8; outputs];
    layer.forward_plain(&x, &mut folded);
    assert_eq!(plain, folded);
    // Core's engine on the written file agrees in both forms.
    let folded_layer = layer.clone();
    let mut plain_layer = layer.clone();
    plain_layer.zp_folded = false;
    plain_layer.bias.clone_from(&bias);
    for layer in [plain_layer, folded_layer] {
        let model = QuantModel {
            name: String::new(),
            input: layer.input,
            classes: outputs,
            input_q: in_q,
            pixel_scale: 1.0,
            layers: vec![layer],
        };
        for r in [4, 8] {
            let buf = ModelBytes::new(&ncm::write_int8(&model, r).unwrap());
            let parsed = buf.parse().unwrap();
            let got = Device::new(&parsed).run_levels(&x).unwrap();
            assert_eq!(got.levels().unwrap(), plain);
        }
    }
    assert!(plain.iter().any(|&v| v != plain[0]), "{plain:?}");
}

#[test]
fn export_pack_rows_matches_the_format() {
    // W[5, 3] = row·10 + col, R = 4: two blocks, the last padded with zeros.
    let w: Vec<f32> = (0..5)
        .flat_map(|r| (0..3).map(move |c| (r * 10 + c) as f32))
        .collect();
    let p = pack_rows(&w, 5, 3, 4).unwrap();
    #[rustfmt::skip]
    let want = [
        0.0, 10.0, 20.0, 30.0,   1.0, 11.0, 21.0, 31.0,   2.0, 12.0, 22.0, 32.0,
        40.0, 0.0, 0.0, 0.0,     41.0, 0.0, 0.0, 0.0,     42.0, 0.0, 0.0, 0.0,
    ];
    assert_eq!(p, want);
    assert_eq!(unpack_rows(&p, 5, 3, 4).unwrap(), w);
    let p8 = pack_rows(&w, 5, 3, 8).unwrap();
    assert_eq!(p8.len(), 24);
    assert_eq!(unpack_rows(&p8, 5, 3, 8).unwrap(), w);
}

/// A hand-made f32 model: dense 3 -> 5 with a BN record, ReLU.
fn tiny_model() -> FoldedModel {
    let weights: Vec<f32> = (0..15).map(|v| v as f32 * 0.5 - 3.0).collect();
    FoldedModel {
        name: "tiny".into(),
        input: Hwc { h: 1, w: 1, c: 3 },
        classes: 5,
        layers: vec![FoldedLayer {
            op: LayerOp::Dense(Dense::new(3, 5).unwrap()),
            act: Some(Activation::Relu),
            input: Hwc { h: 1, w: 1, c: 3 },
            output: Hwc { h: 1, w: 1, c: 5 },
            weights,
            bias: vec![0.1, 0.2, 0.3, 0.4, 0.5],
            bn: Some(BnParams {
                gamma: vec![1.0; 5],
                beta: vec![0.5; 5],
                mean: vec![0.25; 5],
                var: vec![2.0; 5],
                eps: 1e-5,
            }),
        }],
    }
}

/// What the exporter promises of every file it writes, checked through
/// core's parser (whose byte-level rules `core/src/model/tests.rs` holds to
/// FORMAT.md with an independent writer): it parses; its CRC is the zlib
/// CRC-32 (an independent implementation, `crc32fast`) of the file with the
/// CRC field as zero; tensors are in canonical order with zeros between
/// them and nothing after the last; the arena is the memory plan's; and
/// re-writing its parse gives the same bytes.
fn check_layout(b: &[u8]) {
    use normcore::model::{layout::CRC_FIELD, plan};
    let mut z = b.to_vec();
    z[CRC_FIELD].fill(0);
    assert_eq!(b[CRC_FIELD], crc32fast::hash(&z).to_le_bytes());
    let buf = ModelBytes::new(b);
    let m = buf.parse().unwrap();
    // Canonical order: each layer's tensors in slot order, then the BN
    // statistics; so table order is data order.
    let mut order: Vec<u16> = Vec::new();
    for l in m.layers() {
        order.extend(
            l.unwrap()
                .tensor_ids
                .iter()
                .filter(|&&t| t != normcore::model::NO_TENSOR),
        );
    }
    for bn in m.bn_records() {
        order.extend(bn.unwrap().tensor_ids);
    }
    assert_eq!(order, (0..m.tensor_count() as u16).collect::<Vec<_>>());
    let mut prev = None;
    for i in 0..m.tensor_count() {
        let (t, _) = m.tensor(i).unwrap();
        let (off, len) = (t.offset as usize, t.len as usize);
        if let Some(prev) = prev {
            assert!(
                off - prev < 16,
                "tensor {i}: more padding than alignment needs"
            );
            assert!(b[prev..off].iter().all(|&v| v == 0), "tensor {i}: padding");
        }
        prev = Some(off + len);
    }
    if let Some(end) = prev {
        assert_eq!(end, b.len(), "bytes after the last tensor");
    }
    let shapes = m.layers().map(|l| l.map(|l| (l.input, l.output)).unwrap());
    assert_eq!(Some(m.arena_bytes()), plan::arena_bytes(m.kind(), shapes));
    assert_eq!(ncm::rewrite(&m).unwrap(), b);
}

#[test]
fn export_f32_file_bytes_follow_the_format() {
    let m = tiny_model();
    let b = ncm::write_f32(&m, 4, 1.0 / 255.0).unwrap();
    check_layout(&b);
    // One layer, tensors: weight, bias, then γ, β, E[x], Var[x].
    let buf = ModelBytes::new(&b);
    let parsed = buf.parse().unwrap();
    let h = parsed.header();
    assert_eq!(h.kind, normcore::model::Kind::F32);
    assert_eq!((h.classes, h.input), (5, normcore::Shape::nhwc(1, 1, 1, 3)));
    assert_eq!((h.input_scale, h.input_zero_point), (0.0, 0));
    assert_eq!(h.pixel_scale, 1.0 / 255.0);
    assert_eq!(parsed.tensor_count(), 6);
    let (w, Data::F32(stored)) = parsed.tensor(0).unwrap() else {
        panic!("f32 weights")
    };
    assert_eq!((w.dims, w.block_rows), ([5, 3, 1, 1], 4));
    // stored[(blk·3 + p)·4 + r] = W[blk·4 + r, p], rows past 5 zero.
    for blk in 0..2 {
        for p in 0..3 {
            for r in 0..4 {
                let row = blk * 4 + r;
                let want = if row < 5 {
                    m.layers[0].weights[row * 3 + p]
                } else {
                    0.0
                };
                assert_eq!(stored[(blk * 3 + p) * 4 + r], want);
            }
        }
    }
    // Bias padded to whole blocks (8).
    let (bias, Data::F32(bv)) = parsed.tensor(1).unwrap() else {
        panic!("f32 bias")
    };
    assert_eq!((bias.dims, bias.block_rows), ([8, 1, 1, 1], 0));
    assert_eq!((bv[4], bv[5]), (0.5, 0.0));
    // Layer record: dense, ReLU, tensors 0 and 1; f32 quant fields 0.
    let l0 = parsed.layer(0).unwrap();
    assert_eq!(
        l0.tensor_ids,
        [
            0,
            1,
            normcore::model::NO_TENSOR,
            normcore::model::NO_TENSOR,
            normcore::model::NO_TENSOR
        ]
    );
    assert_eq!(l0.quant.scale, 0.0);
    // BN record: layer 0, tensors 2..=5, ε.
    let bn0 = parsed.bn_record(0).unwrap();
    assert_eq!(
        (bn0.layer, bn0.tensor_ids, bn0.eps),
        (0, [2, 3, 4, 5], 1e-5)
    );
    // Arena: round16(12) + round16(20) = 48.
    assert_eq!(parsed.arena_bytes(), 48);
    // Core's parser reads back exactly the model.
    let l0 = &parsed.layer(0).unwrap();
    assert_eq!(parsed.layer_count(), 1);
    assert_eq!(l0.activation, Some(Activation::Relu));
    assert_eq!(l0.block_rows, 4);
    let Some(Data::F32(w)) = l0.weights else {
        panic!("f32 weights")
    };
    assert_eq!(unpack_rows(w, 5, 3, 4).unwrap(), m.layers[0].weights);
    let Some(Data::F32(bias)) = l0.bias else {
        panic!("f32 bias")
    };
    assert_eq!(&bias[..5], &m.layers[0].bias[..]);
    let bn = &parsed.bn_record(0).unwrap();
    let want = m.layers[0].bn.as_ref().unwrap();
    assert_eq!(
        (bn.layer, bn.gamma, bn.beta, bn.mean, bn.var, bn.eps),
        (
            0,
            &want.gamma[..],
            &want.beta[..],
            &want.mean[..],
            &want.var[..],
            want.eps
        )
    );
}

/// A randomized network of `spec`, folded, and quantized with ranges
/// calibrated on random pixels.
fn folded_and_quantized(spec: &NetworkSpec, seed: u64) -> (FoldedModel, QuantModel) {
    let net = randomized(spec.clone(), seed);
    let folded = fold(&net).unwrap();
    let mut rng = Rng::new(4);
    let n = 64;
    let images: Vec<f32> = (0..n * net.input().len())
        .map(|_| rng.below(256) as f32 / 255.0)
        .collect();
    let [h, w, c] = spec.input;
    let data = Dataset::new(
        "r",
        images,
        vec![0; n],
        [h, w, c],
        spec.classes,
        1.0 / 255.0,
    )
    .unwrap();
    let cal = calibrate(&folded, &data, 32).unwrap();
    let (iq, _) = input_params(&data).unwrap();
    let (qm, _) = quantize(&folded, &cal, iq, data.pixel_scale).unwrap();
    (folded, qm)
}

#[test]
fn export_golden_round_trip_is_byte_identical() {
    // export -> core's parse -> re-export gives the same bytes, for f32 and
    // int8 files of MLPs, CNNs and a net with every op (depthwise, padding,
    // average pooling, tables, global pooling); and exporting twice gives
    // the same bytes.
    let specs = [
        preset("digits-mlp").unwrap(),
        preset("digits-cnn").unwrap(),
        preset("cnn").unwrap(),
        depthwise_spec(),
    ];
    for spec in specs {
        let (f1, q1) = folded_and_quantized(&spec, 33);
        let (f2, q2) = folded_and_quantized(&spec, 33);
        for r in [4, 8] {
            for (kind, a, b) in [
                (
                    "f32",
                    ncm::write_f32(&f1, r, 1.0 / 255.0).unwrap(),
                    ncm::write_f32(&f2, r, 1.0 / 255.0).unwrap(),
                ),
                (
                    "int8",
                    ncm::write_int8(&q1, r).unwrap(),
                    ncm::write_int8(&q2, r).unwrap(),
                ),
            ] {
                assert_eq!(a, b, "{} {kind} R = {r}: not deterministic", spec.name);
                check_layout(&a);
                let buf = ModelBytes::new(&a);
                let parsed = buf.parse().unwrap();
                let again = ncm::rewrite(&parsed).unwrap();
                assert!(
                    again == a,
                    "{} {kind} R = {r}: the re-export differs from the export",
                    spec.name
                );
            }
        }
    }
}

#[test]
fn export_core_parser_rejects_damaged_files() {
    let b = ncm::write_f32(&tiny_model(), 4, 1.0).unwrap();
    let parse = |bytes: &[u8]| ModelBytes::new(bytes).parse().map(|_| ()).unwrap_err();
    let mut flipped = b.clone();
    flipped[200] ^= 1;
    assert!(matches!(
        parse(&flipped),
        ExportError::Model(ModelError::CrcMismatch { .. })
    ));
    assert!(matches!(
        parse(&b[..b.len() - 1]),
        ExportError::Model(ModelError::SizeMismatch { .. })
    ));
    assert!(matches!(
        parse(b"NCCKPT\0\x01"),
        ExportError::Model(ModelError::Truncated { .. })
    ));
    let mut magic = b.clone();
    magic[0] = b'X';
    assert!(matches!(
        parse(&magic),
        ExportError::Model(ModelError::BadMagic)
    ));
}

#[test]
fn export_writer_rejects_what_the_format_cannot_hold() {
    let m = tiny_model();
    assert!(matches!(
        ncm::write_f32(&m, 5, 1.0),
        Err(ExportError::Format(_))
    ));
    // A pixel scale the format forbids: core's writer refuses with the
    // parser's words.
    assert!(matches!(
        ncm::write_f32(&m, 4, 0.0),
        Err(ExportError::Write(normcore::model::WriteError::Invalid(
            ModelError::Header(normcore::model::HeaderFault::PixelScale)
        )))
    ));
    let mut wide = m.clone();
    wide.layers[0].input.c = 70_000;
    wide.input.c = 70_000;
    let e = ncm::write_f32(&wide, 4, 1.0).unwrap_err().to_string();
    assert!(e.contains("65535"), "{e}");
    let q = QuantModel {
        name: String::new(),
        input: m.input,
        classes: 5,
        input_q: QParams {
            scale: 1.0,
            zero_point: 0,
        },
        pixel_scale: 1.0,
        layers: Vec::new(),
    };
    assert!(matches!(
        ncm::write_int8(&q, 4),
        Err(ExportError::Write(normcore::model::WriteError::LayerCount(
            0
        )))
    ));
}

/// The fuzzer's seed corpus (`core/fuzz/corpus/parse_and_run/`): small valid
/// files of every op, f32 and int8, both block sizes, with BN tables. Run
/// by `cargo xtask fuzz` when the seeds are missing; `NORMCORE_FUZZ_SEEDS`
/// names another directory.
#[test]
#[ignore = "writes the fuzz seed corpus; run by `cargo xtask fuzz`"]
fn export_write_fuzz_seeds() {
    let dir = std::env::var_os("NORMCORE_FUZZ_SEEDS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../core/fuzz/corpus/parse_and_run")
        });
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = vec![(
        "tiny-f32-r4".to_owned(),
        ncm::write_f32(&tiny_model(), 4, 1.0).unwrap(),
    )];
    for (spec, kinds) in [
        (preset("digits-mlp").unwrap(), &["int8-r4"][..]),
        (
            preset("digits-cnn").unwrap(),
            &["f32-r8", "int8-r4", "int8-r8"][..],
        ),
        (depthwise_spec(), &["f32-r4", "int8-r4", "int8-r8"][..]),
    ] {
        let (f, q) = folded_and_quantized(&spec, 7);
        for kind in kinds {
            let bytes = match *kind {
                "f32-r4" => ncm::write_f32(&f, 4, 1.0 / 255.0),
                "f32-r8" => ncm::write_f32(&f, 8, 1.0 / 255.0),
                "int8-r4" => ncm::write_int8(&q, 4),
                _ => ncm::write_int8(&q, 8),
            }
            .unwrap();
            files.push((format!("{}-{kind}", spec.name), bytes));
        }
    }
    for (name, bytes) in files {
        check_layout(&bytes);
        let path = dir.join(format!("{name}.ncm"));
        std::fs::write(&path, &bytes).unwrap();
        eprintln!("wrote {} ({} bytes)", path.display(), bytes.len());
    }
}

/// The full-size cross-check, run by `cargo xtask quant-check` after its
/// exports (it needs MNIST and that task's checkpoints): for each network,
/// quantizing the checkpoint again gives exactly the int8 file written, and
/// core's engine running that file equals the independent integer
/// reference bit for bit on all 10,000 MNIST test samples.
/// `NORMCORE_QUANT_CHECK_DIR` overrides `out/quant-check`, and
/// `NORMCORE_MNIST_DIR` the MNIST location.
#[test]
#[ignore = "needs MNIST and the checkpoints of `cargo xtask quant-check`, which runs it"]
fn export_mnist_engine_matches_reference() {
    use std::path::{Path, PathBuf};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os("NORMCORE_QUANT_CHECK_DIR")
        .map_or_else(|| root.join("out/quant-check"), PathBuf::from);
    let mnist = std::env::var_os("NORMCORE_MNIST_DIR")
        .map(PathBuf::from)
        .into_iter()
        .chain([root.join("data/mnist"), root.join("../shared/data/mnist")])
        .find(|p| p.is_dir())
        .expect("MNIST: set NORMCORE_MNIST_DIR");
    let (train, test) = crate::data::load_mnist(&mnist).unwrap();
    for name in ["paper-mlp", "cnn"] {
        let t = crate::checkpoint::load(&dir.join(format!("{name}.ckpt")), 2).unwrap();
        let folded = fold(&t.net).unwrap();
        let cal = calibrate(&folded, &train, 1000).unwrap();
        let (iq, _) = input_params(&train).unwrap();
        let (qm, _) = quantize(&folded, &cal, iq, train.pixel_scale).unwrap();
        let bytes = ncm::write_int8(&qm, 4).unwrap();
        let written = std::fs::read(dir.join(format!("{name}-int8.ncm"))).unwrap();
        assert!(bytes == written, "{name}: the int8 file is not the export");
        let engine = engine_levels(&bytes, test.images());
        let plain = qm
            .forward_plain(&qm.quantize_input(test.images()), test.len())
            .unwrap();
        let differ = engine
            .chunks_exact(qm.classes)
            .zip(plain.chunks_exact(qm.classes))
            .filter(|(a, b)| a != b)
            .count();
        assert_eq!(differ, 0, "{name}: {differ} test samples differ");
        println!(
            "{name}: core's engine on the int8 file equals the integer reference bit for bit on all {} MNIST test samples",
            test.len()
        );
    }
}

#[test]
fn auto_weight_form_takes_pairs_from_runs_of_16() {
    use normcore::layers::{Conv2d, DepthwiseConv2d, Padding, Window};
    let hwc = |[h, w, c]: [usize; 3]| Hwc { h, w, c };
    let window = |k: usize| Window {
        kernel_h: 3,
        kernel_w: k,
        stride_h: 1,
        stride_w: 1,
        padding: Padding::NONE,
    };
    let layer = |op: u8, input: [usize; 3], kw: usize| -> (LayerOp, Hwc) {
        let [h, w, c] = input;
        let op = match op {
            1 => LayerOp::Dense(Dense::new(h * w * c, 8).unwrap()),
            2 => LayerOp::Conv(Conv2d {
                in_h: h,
                in_w: w,
                in_c: c,
                out_c: 8,
                window: window(kw),
            }),
            _ => LayerOp::Depthwise(DepthwiseConv2d {
                in_h: h,
                in_w: w,
                channels: c,
                window: window(kw),
            }),
        };
        (op, hwc(input))
    };
    let pays = |(op, input): (LayerOp, Hwc), r| ncm::pairs_pay(&op, input, r);
    assert_eq!(ncm::PAIR_MIN_RUN, 16);
    // Dense: the run is every input (flattened).
    assert!(!pays(layer(1, [1, 1, 15], 0), 4));
    assert!(pays(layer(1, [1, 1, 16], 0), 4));
    assert!(pays(layer(1, [2, 2, 4], 0), 4));
    // Conv with a kernel of 3 rows: the gathered patch 3·KW·Cin while it
    // fits 512 inputs (a 3×1 kernel on 5 channels: 15; on 6: 18), else one
    // kernel row KW·Cin (3×3 on 64 channels: 576 > 512, rows of 192).
    assert!(!pays(layer(2, [12, 12, 5], 1), 4));
    assert!(pays(layer(2, [12, 12, 6], 1), 4));
    assert!(pays(layer(2, [28, 28, 2], 5), 4));
    assert!(pays(layer(2, [12, 12, 64], 3), 4));
    // Only blocks of 4 rows, only dense and conv.
    assert!(!pays(layer(1, [1, 1, 784], 0), 8));
    assert!(!pays(layer(3, [12, 12, 64], 3), 4));
}

/// The fuzzer's committed seeds were written by earlier exporters (before
/// the writer moved into core): core's writer re-writes each of them byte
/// for byte, so the format's bytes did not change.
#[test]
fn committed_seed_files_rewrite_byte_for_byte() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/fuzz/corpus/parse_and_run");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ncm") {
            let bytes = std::fs::read(&path).unwrap();
            check_layout(&bytes);
            seen += 1;
        }
    }
    assert!(seen >= 8, "{seen} seed files in {}", dir.display());
}
