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
use normcore::model::{file_crc, Kind, Model, ModelError, HEADER_LEN, LAYER_LEN};

/// Channels of the test model's input and output (its classes).
const C: usize = 10;
/// Bytes of the test model: the header and one layer record, no tensors.
const FILE_LEN: usize = HEADER_LEN + LAYER_LEN;

/// A model file, 16-aligned as `Model::parse` wants it.
#[repr(C, align(16))]
struct File([u8; FILE_LEN]);

/// An arena, 16-aligned.
#[repr(C, align(16))]
struct Arena([u8; 128]);

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// The smallest valid model of `kind` (docs/FORMAT.md): one standalone
/// ReLU layer on a `1×1×C` input, so no tensors.
fn relu_model(kind: Kind) -> File {
    let int8 = kind == Kind::Int8;
    let mut f = File([0; FILE_LEN]);
    let b = &mut f.0;
    // The memory plan: round16(in) + round16(out).
    let arena: u32 = if int8 { 16 + 16 } else { 48 + 48 };
    put(b, 0, b"NCMF");
    put(b, 4, &1u16.to_le_bytes()); // version
    put(b, 6, &u16::from(int8).to_le_bytes()); // flags: INT8
    put(b, 8, &(FILE_LEN as u32).to_le_bytes());
    put(b, 16, &arena.to_le_bytes());
    put(b, 20, &1u16.to_le_bytes()); // layers
    put(b, 22, &0u16.to_le_bytes()); // tensors
    put(b, 24, &(HEADER_LEN as u32).to_le_bytes()); // layer table
    put(b, 28, &(FILE_LEN as u32).to_le_bytes()); // tensor table (empty)
    put(b, 38, &(C as u16).to_le_bytes()); // classes
    for at in [40, 42] {
        put(b, at, &1u16.to_le_bytes()); // input h, w
    }
    put(b, 44, &(C as u16).to_le_bytes()); // input c
    if int8 {
        put(b, 48, &0.5f32.to_le_bytes()); // input scale
        put(b, 52, &(-3i32).to_le_bytes()); // input zero point
    }
    put(b, 56, &1.0f32.to_le_bytes()); // pixel scale
    let l = HEADER_LEN;
    b[l] = 7; // op: activation
    b[l + 1] = 1; // ReLU
    for at in [4, 6, 10, 12] {
        put(b, l + at, &1u16.to_le_bytes()); // input and output h, w
    }
    for at in [8, 14] {
        put(b, l + at, &(C as u16).to_le_bytes()); // input and output c
    }
    for k in 0..5 {
        put(b, l + 24 + 2 * k, &0xFFFFu16.to_le_bytes()); // no tensors
    }
    if int8 {
        put(b, l + 36, &0.5f32.to_le_bytes()); // output scale
        put(b, l + 40, &(-3i32).to_le_bytes()); // output zero point
        put(b, l + 44, &(-3i32).to_le_bytes()); // requantization zero point
        put(b, l + 48, &(-3i32).to_le_bytes()); // clamp: ReLU at the zero point
        put(b, l + 52, &127i32.to_le_bytes());
    }
    let crc = file_crc(b);
    put(b, 12, &crc.to_le_bytes());
    f
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
        let file = relu_model(kind);
        let model = Model::parse(&file.0).unwrap_or_else(|e| panic!("{kind:?}: {e}"));
        assert_eq!(model.kind(), kind);
        assert_eq!(model.layer_count(), 1);
        assert!(model.layer(0).is_ok());
    }
}

#[test]
fn engine_runs_enabled_kinds_and_rejects_the_others() {
    for kind in [Kind::F32, Kind::Int8] {
        let file = relu_model(kind);
        let model = Model::parse(&file.0).unwrap();
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
    let file = relu_model(Kind::F32);
    let model = Model::parse(&file.0).unwrap();
    let mut arena = Arena([0; 128]);
    let err = Engine::new(&model, &mut arena.0).unwrap_err();
    assert_eq!(err, ModelError::Unsupported(Kind::F32));
    assert_eq!(
        err.to_string(),
        "this build's engine does not run f32 models (normcore feature `engine-f32` is off)"
    );
}
