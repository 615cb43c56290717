//! A user's own model onto a device, and the build step's refusals.
//!
//! - An int8 model file alone (the default assets' one, as a user's
//!   `normcore export` would write it), embedded with `normcore samples`'
//!   library function and built for `mps2-an385` (Cortex-M3): `infer` runs
//!   it, bit-identical to the host engine, and reports no f32 model.
//! - A model too large for the micro:bit's 256 KiB of flash, a file that is
//!   not a model, and a model whose input shape is not the samples': each a
//!   build error naming the file, the board and the numbers.

use std::path::Path;

use normcore::model::file_crc;
use normcore::Rng;
use normcore_device_tools::boards;
use normcore_device_tools::build::{build, Build};
use normcore_device_tools::infer_log::{assets_dir, ensure_assets, parse_infer};
use normcore_device_tools::qemu::{run_qemu, RunOptions};
use normcore_trainer::assets::{self, samples_for, Part, Samples, MODEL_F32, MODEL_INT8, SAMPLES};
use normcore_trainer::cli::DataArgs;
use normcore_trainer::data::Dataset;
use normcore_trainer::export::{fold, write_f32};
use normcore_trainer::network::{Init, Network};
use normcore_trainer::spec;

/// Build `bin` of `board` with the assets in `dir`; cargo's error text if
/// the build fails.
fn build_with(board: &str, dir: &Path) -> Result<std::path::PathBuf, String> {
    let board = boards::board(board).unwrap();
    build(
        board,
        &Build {
            bins: &["infer"],
            assets: Some(dir),
            quiet: true,
            ..Build::default()
        },
    )
    .map(|d| d.join("infer"))
    .map_err(|e| format!("{e:#}"))
}

#[test]
fn a_users_int8_model_alone_runs_bit_identical_on_another_board() {
    ensure_assets().unwrap();
    let model = assets_dir().join(MODEL_INT8);
    let dir = tempfile::tempdir().unwrap();
    let data = DataArgs {
        data: "digits".into(),
        data_dir: None,
        test_csv: None,
        input_shape: None,
    };
    let a = assets::embed(std::slice::from_ref(&model), &data, 32, dir.path()).unwrap();
    assert!(a.model_f32.is_none() && !dir.path().join(MODEL_F32).exists());
    let elf = build_with("mps2-an385", dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let board = boards::board("mps2-an385").unwrap();
    let out = run_qemu(board, &elf, &RunOptions::default()).unwrap();
    assert!(out.success(), "{}", out.describe());
    let text = out.stdout_text();
    let r = parse_infer(&text).unwrap();
    assert!(r.f32.samples.is_empty(), "no f32 model embedded:\n{text}");
    assert!(!text.contains("model f32:"), "{text}");
    let part = a.samples.int8.as_ref().unwrap();
    assert_eq!(r.int8.total, 32);
    assert_eq!(r.int8.identical, 32, "{text}");
    let c = a.samples.classes;
    for (i, s) in r.int8.samples.iter().enumerate() {
        assert_eq!(
            s.logits,
            normcore_device_tools::infer_log::Logits::I8(
                part.expected[i * c..(i + 1) * c].to_vec()
            ),
            "sample {i}"
        );
    }
    assert_eq!(r.int8.correct, a.summary.int8.unwrap().correct);
}

/// An MNIST-sized MLP (paper-mlp, 784-100-100-100-10) with random weights,
/// folded and written as f32: about 320 KB.
fn big_f32_model(pixel_scale: f32) -> Vec<u8> {
    let spec = spec::preset("paper-mlp").unwrap();
    let net = Network::new(spec, Init::He, &mut Rng::new(7)).unwrap();
    write_f32(&fold(&net).unwrap(), 4, pixel_scale).unwrap()
}

/// A few random 28x28 samples.
fn mnist_like(n: usize) -> Dataset {
    let mut rng = Rng::new(3);
    let images = (0..n * 784).map(|_| rng.uniform(0.0, 1.0)).collect();
    let labels = (0..n).map(|i| (i % 10) as u16).collect();
    Dataset::new("random-28x28", images, labels, [28, 28, 1], 10, 1.0 / 255.0).unwrap()
}

#[test]
fn a_model_too_big_for_the_board_is_a_build_error_with_the_numbers() {
    let test = mnist_like(4);
    let model = big_f32_model(test.pixel_scale);
    assert!(model.len() > 256 * 1024, "{} bytes", model.len());
    let (samples, _) = samples_for(Some(&model), None, &test, 4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(MODEL_F32), &model).unwrap();
    std::fs::write(dir.path().join(SAMPLES), samples.to_bytes().unwrap()).unwrap();
    let e = build_with("microbit", dir.path()).unwrap_err();
    assert!(e.contains("does not fit board microbit"), "{e}");
    assert!(e.contains("model-f32.ncm"), "{e}");
    assert!(e.contains(&format!("{} B", model.len())), "{e}");
    // memory.x's FLASH: 248 KiB, the chip's last 8 KiB being `finetune`'s
    // STORE.
    assert!(e.contains("> 253952 B of FLASH"), "{e}");
    // The same files fit a board with 4 MiB (the check is the board's).
    build_with("mps2-an500", dir.path()).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_file_that_is_not_a_model_or_has_another_input_shape_is_a_build_error() {
    ensure_assets().unwrap();
    let default = assets_dir();
    let samples = std::fs::read(default.join(SAMPLES)).unwrap();

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(MODEL_INT8), b"NCM1 but not really a model").unwrap();
    std::fs::write(dir.path().join(SAMPLES), &samples).unwrap();
    let e = build_with("microbit", dir.path()).unwrap_err();
    assert!(e.contains("model-int8.ncm: not a valid model file"), "{e}");

    // A 28x28 model with the digits' samples: made for another file (stale).
    let dir = tempfile::tempdir().unwrap();
    let model = big_f32_model(1.0 / 16.0);
    std::fs::write(dir.path().join(MODEL_F32), &model).unwrap();
    std::fs::write(dir.path().join(SAMPLES), &samples).unwrap();
    let e = build_with("mps2-an505", dir.path()).unwrap_err();
    assert!(
        e.contains("samples.bin was generated for another model-f32.ncm"),
        "{e}"
    );
    // ... and 8x8 samples that claim to be this file's: the shapes differ.
    let n = 2;
    let wrong = Samples {
        features: 64,
        classes: 10,
        labels: vec![0, 1],
        f32: Some(Part {
            inputs: vec![0.0; n * 64],
            expected: vec![0.0; n * 10],
            model_crc: file_crc(&model),
        }),
        int8: None,
    };
    std::fs::write(dir.path().join(SAMPLES), wrong.to_bytes().unwrap()).unwrap();
    let e = build_with("mps2-an505", dir.path()).unwrap_err();
    assert!(
        e.contains("model-f32.ncm takes 784 input values (28x28x1)"),
        "{e}"
    );
    assert!(e.contains("samples.bin has 64 values"), "{e}");
}

/// The PyTorch convnet of `host-trainer/tests/onnx/digits_cnn.onnx`
/// (conv, depthwise conv, BN, ReLU, ReLU6, max pool, dense, sigmoid),
/// imported, folded and quantized as `normcore import` and `export` do,
/// runs in `infer` on `mps2-an385` bit-identical to the host engine.
#[test]
fn an_imported_pytorch_convnet_runs_bit_identical_on_the_device() {
    use normcore_trainer::export::{calibrate, input_params, quantize, write_int8};
    let onnx =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../host-trainer/tests/onnx/digits_cnn.onnx");
    let net = normcore_trainer::onnx::import_file(&onnx).unwrap().net;
    let (train, _) = normcore_trainer::data::builtin_digits_split().unwrap();
    let folded = fold(&net).unwrap();
    let cal = calibrate(&folded, &train, 1000).unwrap();
    let (iq, _) = input_params(&train).unwrap();
    let (qm, _) = quantize(&folded, &cal, iq, train.pixel_scale).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("imported-int8.ncm");
    std::fs::write(&model, write_int8(&qm, 4).unwrap()).unwrap();
    let assets_out = dir.path().join("assets");
    let data = DataArgs {
        data: "digits".into(),
        data_dir: None,
        test_csv: None,
        input_shape: None,
    };
    let a = assets::embed(std::slice::from_ref(&model), &data, 32, &assets_out).unwrap();
    let elf = build_with("mps2-an385", &assets_out).unwrap_or_else(|e| panic!("{e}"));
    let board = boards::board("mps2-an385").unwrap();
    let out = run_qemu(board, &elf, &RunOptions::default()).unwrap();
    assert!(out.success(), "{}", out.describe());
    let text = out.stdout_text();
    let r = parse_infer(&text).unwrap();
    assert_eq!(r.int8.total, 32, "{text}");
    assert_eq!(r.int8.identical, 32, "{text}");
    assert_eq!(r.int8.correct, a.summary.int8.unwrap().correct);
}
