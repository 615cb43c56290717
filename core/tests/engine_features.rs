//! The engine runs exactly the kinds of model its features enable
//! (`engine-f32`, `engine-int8`) and rejects the others with
//! `ModelError::Unsupported`, while `Model::parse` accepts both kinds in
//! every build. `cargo test` runs this with the default features (both);
//! `cargo xtask test` also runs it int8-only:
//!
//! ```text
//! cargo test -p normcore --release --no-default-features --features engine-int8 --test engine_features
//! ```

use normcore::engine::{self, Engine, Output};
use normcore::layers::Activation;
use normcore::model::write::{self, LayerDesc, ModelDesc};
use normcore::model::{Kind, Model, ModelError, Op, QuantOut};
use normcore::Shape;

/// Channels of the test model's input and output (its classes).
const C: usize = 10;

/// A model file, 16-aligned as the firmware embeds one.
#[repr(C, align(16))]
struct File([u8; 256]);

/// An arena, 16-aligned.
#[repr(C, align(16))]
struct Arena([u8; 128]);

/// The smallest valid model of `kind`, written by core's writer: one
/// standalone ReLU layer on a `1×1×C` input, so no tensors. Returns the
/// buffer and the file's length.
fn relu_model(kind: Kind) -> (File, usize) {
    let int8 = kind == Kind::Int8;
    let shape = Shape::nhwc(1, 1, 1, C);
    // int8: scale 0.5, zero point -3 in and out; ReLU clamps at the zero point.
    let quant = if int8 {
        QuantOut {
            scale: 0.5,
            zero_point: -3,
            requant_zero_point: -3,
            clamp_min: -3,
            clamp_max: 127,
            // Only weighted layers requantize an accumulator (FORMAT v2).
            requant_scale: 0.0,
        }
    } else {
        QuantOut::NONE
    };
    let layers = [LayerDesc {
        op: Op::Activation,
        activation: Some(Activation::Relu),
        zp_folded: false,
        input: shape,
        output: shape,
        weights: None,
        block_rows: 0,
        bias: None,
        requant: None,
        table: None,
        quant,
    }];
    let desc = ModelDesc {
        kind,
        input: shape,
        classes: C,
        input_scale: if int8 { 0.5 } else { 0.0 },
        input_zero_point: if int8 { -3 } else { 0 },
        pixel_scale: 1.0,
        layers: &layers,
        bn: &[],
    };
    let mut f = File([0; 256]);
    let len = write::write(&desc, &mut f.0).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
    (f, len)
}

/// Whether the features this test was built with enable `kind`.
fn enabled(kind: Kind) -> bool {
    match kind {
        Kind::F32 => cfg!(feature = "engine-f32"),
        Kind::Int8 => cfg!(feature = "engine-int8"),
    }
}

#[test]
fn supports_follows_the_features() {
    for kind in [Kind::F32, Kind::Int8] {
        assert_eq!(engine::supports(kind), enabled(kind), "{kind:?}");
    }
}

#[test]
fn every_build_parses_both_kinds() {
    for kind in [Kind::F32, Kind::Int8] {
        let (file, len) = relu_model(kind);
        let model = Model::parse(&file.0[..len]).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(model.kind(), kind);
        assert_eq!(model.layer_count(), 1);
        assert!(model.layer(0).is_ok());
    }
}

#[test]
fn engine_runs_enabled_kinds_and_rejects_the_others() {
    for kind in [Kind::F32, Kind::Int8] {
        let (file, len) = relu_model(kind);
        let model = Model::parse(&file.0[..len]).unwrap();
        let mut arena = Arena([0xAA; 128]);
        match Engine::new(&model, &mut arena.0) {
            Err(e) => {
                assert!(
                    !enabled(kind),
                    "{kind:?} is enabled but the engine says {e}"
                );
                assert_eq!(e, ModelError::Unsupported(kind));
                let feature = match kind {
                    Kind::F32 => "`engine-f32`",
                    Kind::Int8 => "`engine-int8`",
                };
                let text = e.to_string();
                assert!(text.contains(feature), "{text}");
                // Nothing was written.
                assert!(arena.0.iter().all(|&v| v == 0xAA));
            }
            Ok(mut engine) => {
                assert!(enabled(kind), "{kind:?} is disabled but the engine took it");
                let expected: Vec<f32> = (0..C).map(|i| i as f32 - 4.0).collect();
                match kind {
                    Kind::F32 => engine.input_f32().unwrap().copy_from_slice(&expected),
                    Kind::Int8 => {
                        let levels: Vec<i8> = expected.iter().map(|&v| v as i8 - 3).collect();
                        engine.input_i8().unwrap().copy_from_slice(&levels);
                    }
                }
                let relu: Vec<f32> = expected.iter().map(|&v| v.max(0.0)).collect();
                match engine.run().unwrap() {
                    Output::F32(y) => assert_eq!(y, &relu[..]),
                    Output::I8 {
                        values,
                        scale,
                        zero_point,
                    } => {
                        assert_eq!((scale, zero_point), (0.5, -3));
                        let real: Vec<f32> = values
                            .iter()
                            .map(|&q| (i32::from(q) - zero_point) as f32)
                            .collect();
                        assert_eq!(real, relu);
                    }
                }
            }
        }
    }
}

/// The build `cargo xtask test` runs on top of the default one: int8 only,
/// so an f32 model is valid but refused.
#[cfg(all(feature = "engine-int8", not(feature = "engine-f32")))]
#[test]
fn int8_only_build_rejects_an_f32_model() {
    let (file, len) = relu_model(Kind::F32);
    let model = Model::parse(&file.0[..len]).unwrap();
    let mut arena = Arena([0; 128]);
    let err = Engine::new(&model, &mut arena.0).unwrap_err();
    assert_eq!(err, ModelError::Unsupported(Kind::F32));
    assert_eq!(
        err.to_string(),
        "this build's engine does not run f32 models (normcore feature `engine-f32` is off)"
    );
}
