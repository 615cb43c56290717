//! Compiled only under `#[cfg(test)]` (see `mod tests;` in model/mod.rs).
//!
//! Parser and writer tests. [`Builder`] is a deliberately independent
//! oracle: a second, minimal writer of FORMAT.md that spells every offset
//! and code by hand from the spec's tables and shares nothing with
//! `layout.rs` or `write.rs`, so that the parser and the writer are held to
//! the document rather than to each other. It builds valid files; each
//! rule is then broken on purpose; the writer must reproduce its files byte
//! for byte. Robustness: truncation, bit flips
//! (with and without a refreshed CRC, so that validation past the CRC is
//! exercised) and splices must give an `Err` or a model that runs.

use super::*;
use proptest::prelude::*;
use std::vec;
use std::vec::Vec;

/// One tensor to write: dtype code, block rows, dims, raw little-endian data.
#[derive(Clone)]
struct T {
    dtype: u8,
    block: u8,
    dims: [u32; 4],
    data: Vec<u8>,
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn i32s(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn i8s(v: &[i8]) -> Vec<u8> {
    v.iter().map(|&x| x as u8).collect()
}

/// One layer record's fields.
#[derive(Clone)]
struct L {
    op: u8,
    act: u8,
    flags: u16,
    input: [u16; 3],
    output: [u16; 3],
    window: [u8; 8],
    tensors: [u16; 5],
    quant: (f32, i32, i32, i32, i32),
}

#[derive(Clone)]
struct Builder {
    int8: bool,
    input: [u16; 3],
    classes: u16,
    input_q: (f32, i32),
    layers: Vec<L>,
    tensors: Vec<T>,
    bn: Vec<(u16, [u16; 4], f32)>,
}

fn round16(v: usize) -> usize {
    v.div_ceil(16) * 16
}

impl Builder {
    fn build(&self) -> Vec<u8> {
        let lt = 64;
        let tt = lt + 64 * self.layers.len();
        let bt = tt + 32 * self.tensors.len();
        // Data from the next 16-aligned offset, each tensor 16-aligned; the
        // file ends where the last tensor does.
        let mut end = bt + 16 * self.bn.len();
        let mut offsets = Vec::new();
        for t in &self.tensors {
            offsets.push(round16(end));
            end = round16(end) + t.data.len();
        }
        let size = end;
        let mut b = vec![0u8; size];
        let put = |b: &mut Vec<u8>, at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        let el = if self.int8 { 1 } else { 4 };
        let arena = self
            .layers
            .iter()
            .map(|l| {
                let n = |s: [u16; 3]| s.iter().map(|&d| d as usize).product::<usize>() * el;
                round16(n(l.input)) + round16(n(l.output))
            })
            .max()
            .unwrap_or(0);
        put(&mut b, 0, b"NCMF");
        put(&mut b, 4, &2u16.to_le_bytes());
        let flags = u16::from(self.int8) | if self.bn.is_empty() { 0 } else { 2 };
        put(&mut b, 6, &flags.to_le_bytes());
        put(&mut b, 8, &(size as u32).to_le_bytes());
        put(&mut b, 16, &(arena as u32).to_le_bytes());
        put(&mut b, 20, &(self.layers.len() as u16).to_le_bytes());
        put(&mut b, 22, &(self.tensors.len() as u16).to_le_bytes());
        put(&mut b, 24, &(lt as u32).to_le_bytes());
        put(&mut b, 28, &(tt as u32).to_le_bytes());
        if !self.bn.is_empty() {
            put(&mut b, 32, &(bt as u32).to_le_bytes());
            put(&mut b, 36, &(self.bn.len() as u16).to_le_bytes());
        }
        put(&mut b, 38, &self.classes.to_le_bytes());
        for (k, d) in self.input.iter().enumerate() {
            put(&mut b, 40 + 2 * k, &d.to_le_bytes());
        }
        put(&mut b, 48, &self.input_q.0.to_le_bytes());
        put(&mut b, 52, &self.input_q.1.to_le_bytes());
        put(&mut b, 56, &(1.0f32 / 255.0).to_le_bytes());
        for (i, l) in self.layers.iter().enumerate() {
            let at = lt + 64 * i;
            b[at] = l.op;
            b[at + 1] = l.act;
            put(&mut b, at + 2, &l.flags.to_le_bytes());
            for k in 0..3 {
                put(&mut b, at + 4 + 2 * k, &l.input[k].to_le_bytes());
                put(&mut b, at + 10 + 2 * k, &l.output[k].to_le_bytes());
            }
            put(&mut b, at + 16, &l.window);
            for (k, t) in l.tensors.iter().enumerate() {
                put(&mut b, at + 24 + 2 * k, &t.to_le_bytes());
            }
            put(&mut b, at + 36, &l.quant.0.to_le_bytes());
            put(&mut b, at + 40, &l.quant.1.to_le_bytes());
            put(&mut b, at + 44, &l.quant.2.to_le_bytes());
            put(&mut b, at + 48, &l.quant.3.to_le_bytes());
            put(&mut b, at + 52, &l.quant.4.to_le_bytes());
            // Requant scale (version 2): int8 dense, conv, depthwise; the
            // output scale, or for sigmoid/tanh some pre-activation scale.
            let weighted = matches!(l.op, 1..=3);
            let rs = match (self.int8 && weighted, l.act) {
                (false, _) => 0.0f32,
                (true, 3 | 4) => 0.05,
                (true, _) => l.quant.0,
            };
            put(&mut b, at + 56, &rs.to_le_bytes());
        }
        for (i, t) in self.tensors.iter().enumerate() {
            let at = tt + 32 * i;
            b[at] = t.dtype;
            b[at + 1] = u8::from(t.block != 0);
            b[at + 2] = t.block;
            for (k, d) in t.dims.iter().enumerate() {
                put(&mut b, at + 4 + 4 * k, &d.to_le_bytes());
            }
            put(&mut b, at + 20, &(offsets[i] as u32).to_le_bytes());
            put(&mut b, at + 24, &(t.data.len() as u32).to_le_bytes());
            put(&mut b, offsets[i], &t.data);
        }
        for (i, (layer, ids, eps)) in self.bn.iter().enumerate() {
            let at = bt + 16 * i;
            put(&mut b, at, &layer.to_le_bytes());
            for (k, id) in ids.iter().enumerate() {
                put(&mut b, at + 2 + 2 * k, &id.to_le_bytes());
            }
            put(&mut b, at + 12, &eps.to_le_bytes());
        }
        refresh_crc(&mut b);
        b
    }
}

fn refresh_crc(b: &mut [u8]) {
    if b.len() >= 16 {
        let crc = file_crc(b);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Copy into a 4-byte aligned buffer (the parser requires alignment).
fn aligned(bytes: &[u8]) -> Vec<u32> {
    let mut v = vec![0u32; bytes.len().div_ceil(4)];
    bytemuck::cast_slice_mut::<u32, u8>(&mut v)[..bytes.len()].copy_from_slice(bytes);
    v
}

fn parse_bytes(bytes: &[u8]) -> Result<usize, ModelError> {
    let store = aligned(bytes);
    let view = &bytemuck::cast_slice::<u32, u8>(&store)[..bytes.len()];
    Model::parse(view).map(|m| m.layer_count())
}

const NONE: [u16; 5] = [NO_TENSOR; 5];
const NO_Q: (f32, i32, i32, i32, i32) = (0.0, 0, 0, 0, 0);

/// f32 MLP 2x2x1 -> dense 5 (relu) -> dense 3, R = 4, with a BN record.
fn f32_mlp() -> Builder {
    let w1: Vec<f32> = (0..8 * 4).map(|i| (i as f32 * 0.37).sin()).collect(); // 5 rows padded to 8
    let w2: Vec<f32> = (0..4 * 5).map(|i| (i as f32 * 0.11).cos()).collect(); // 3 rows padded to 4
    Builder {
        int8: false,
        input: [2, 2, 1],
        classes: 3,
        input_q: (0.0, 0),
        layers: vec![
            L {
                op: 1,
                act: 1,
                flags: 0,
                input: [2, 2, 1],
                output: [1, 1, 5],
                window: [0; 8],
                tensors: [0, 1, NO_TENSOR, NO_TENSOR, NO_TENSOR],
                quant: NO_Q,
            },
            L {
                op: 1,
                act: 0,
                flags: 0,
                input: [1, 1, 5],
                output: [1, 1, 3],
                window: [0; 8],
                tensors: [2, 3, NO_TENSOR, NO_TENSOR, NO_TENSOR],
                quant: NO_Q,
            },
        ],
        tensors: vec![
            T {
                dtype: 1,
                block: 4,
                dims: [5, 4, 1, 1],
                data: f32s(&w1),
            },
            T {
                dtype: 1,
                block: 0,
                dims: [8, 1, 1, 1],
                data: f32s(&[0.1; 8]),
            },
            T {
                dtype: 1,
                block: 4,
                dims: [3, 5, 1, 1],
                data: f32s(&w2),
            },
            T {
                dtype: 1,
                block: 0,
                dims: [4, 1, 1, 1],
                data: f32s(&[-0.2; 4]),
            },
            T {
                dtype: 1,
                block: 0,
                dims: [5, 1, 1, 1],
                data: f32s(&[1.0; 5]),
            },
            T {
                dtype: 1,
                block: 0,
                dims: [5, 1, 1, 1],
                data: f32s(&[0.0; 5]),
            },
            T {
                dtype: 1,
                block: 0,
                dims: [5, 1, 1, 1],
                data: f32s(&[0.5; 5]),
            },
            T {
                dtype: 1,
                block: 0,
                dims: [5, 1, 1, 1],
                data: f32s(&[2.0; 5]),
            },
        ],
        bn: vec![(0, [4, 5, 6, 7], 1e-5)],
    }
}

/// int8: 4x4x2 -> conv 3x3 pad 1 -> 4x4x3 (relu) -> maxpool 2 -> 2x2x3 ->
/// dense 4 (sigmoid table) -> dense 3.
fn int8_cnn() -> Builder {
    let q = |scale: f32, zp: i32, lo: i32, hi: i32| (scale, zp, zp, lo, hi);
    let mut tensors = Vec::new();
    let mut push = |t: T| {
        tensors.push(t);
        (tensors.len() - 1) as u16
    };
    let conv_w = push(T {
        dtype: 2,
        block: 4,
        dims: [3, 3, 3, 2],
        data: i8s(&(0..4 * 18).map(|i| (i % 7) as i8 - 3).collect::<Vec<_>>()),
    });
    let conv_b = push(T {
        dtype: 3,
        block: 0,
        dims: [4, 1, 1, 1],
        data: i32s(&[5, -5, 10, 0]),
    });
    let conv_m = push(T {
        dtype: 3,
        block: 0,
        dims: [3, 1, 1, 1],
        data: i32s(&[1 << 30; 3]),
    });
    let conv_s = push(T {
        dtype: 3,
        block: 0,
        dims: [3, 1, 1, 1],
        data: i32s(&[-4; 3]),
    });
    let d1_w = push(T {
        dtype: 2,
        block: 8,
        dims: [4, 12, 1, 1],
        data: i8s(&(0..8 * 12).map(|i| (i % 5) as i8 - 2).collect::<Vec<_>>()),
    });
    let d1_b = push(T {
        dtype: 3,
        block: 0,
        dims: [8, 1, 1, 1],
        data: i32s(&[0; 8]),
    });
    let d1_m = push(T {
        dtype: 3,
        block: 0,
        dims: [4, 1, 1, 1],
        data: i32s(&[1_500_000_000; 4]),
    });
    let d1_s = push(T {
        dtype: 3,
        block: 0,
        dims: [4, 1, 1, 1],
        data: i32s(&[-3; 4]),
    });
    let lut = push(T {
        dtype: 2,
        block: 0,
        dims: [256, 1, 1, 1],
        data: i8s(&(0..256).map(|i| (i - 128) as i8).collect::<Vec<_>>()),
    });
    let d2_w = push(T {
        dtype: 2,
        block: 4,
        dims: [3, 4, 1, 1],
        data: i8s(&[1, -1, 2, 0, 3, 1, -2, 0, 1, 1, 1, 0, 2, 0, -1, 0]),
    });
    let d2_b = push(T {
        dtype: 3,
        block: 0,
        dims: [4, 1, 1, 1],
        data: i32s(&[1, 2, 3, 0]),
    });
    let d2_m = push(T {
        dtype: 3,
        block: 0,
        dims: [3, 1, 1, 1],
        data: i32s(&[1 << 30; 3]),
    });
    let d2_s = push(T {
        dtype: 3,
        block: 0,
        dims: [3, 1, 1, 1],
        data: i32s(&[0; 3]),
    });
    Builder {
        int8: true,
        input: [4, 4, 2],
        classes: 3,
        input_q: (1.0 / 255.0, -128),
        layers: vec![
            L {
                op: 2,
                act: 1,
                flags: 0,
                input: [4, 4, 2],
                output: [4, 4, 3],
                window: [3, 3, 1, 1, 1, 1, 1, 1],
                tensors: [conv_w, conv_b, conv_m, conv_s, NO_TENSOR],
                quant: q(0.05, -128, -128, 127),
            },
            L {
                op: 4,
                act: 0,
                flags: 0,
                input: [4, 4, 3],
                output: [2, 2, 3],
                window: [2, 2, 2, 2, 0, 0, 0, 0],
                tensors: NONE,
                quant: q(0.05, -128, -128, 127),
            },
            L {
                op: 1,
                act: 3,
                flags: 1,
                input: [2, 2, 3],
                output: [1, 1, 4],
                window: [0; 8],
                tensors: [d1_w, d1_b, d1_m, d1_s, lut],
                quant: (1.0 / 256.0, -128, 3, -128, 127),
            },
            L {
                op: 1,
                act: 0,
                flags: 1,
                input: [1, 1, 4],
                output: [1, 1, 3],
                window: [0; 8],
                tensors: [d2_w, d2_b, d2_m, d2_s, NO_TENSOR],
                quant: q(0.1, 0, -128, 127),
            },
        ],
        tensors,
        bn: vec![],
    }
}

#[test]
fn valid_models_parse_with_the_planned_arena() {
    let f = f32_mlp().build();
    let store = aligned(&f);
    let m = Model::parse(&bytemuck::cast_slice::<u32, u8>(&store)[..f.len()]).unwrap();
    assert_eq!(m.kind(), Kind::F32);
    assert_eq!(m.layer_count(), 2);
    // max(round16(16) + round16(20), round16(20) + round16(12)) = 16 + 32 = 48.
    assert_eq!(m.arena_bytes(), 48);
    assert_eq!(
        (
            m.layer(0).unwrap().in_offset,
            m.layer(0).unwrap().out_offset
        ),
        (0, 16)
    );
    assert_eq!(
        (
            m.layer(1).unwrap().in_offset,
            m.layer(1).unwrap().out_offset
        ),
        (16, 0)
    );
    assert_eq!(m.layer(0).unwrap().activation, Some(Activation::Relu));
    assert_eq!(m.layer(0).unwrap().block_rows, 4);
    assert_eq!(m.bn_records().count(), 1);
    assert_eq!(m.bn_record(0).unwrap().var, &[2.0; 5]);

    let i = int8_cnn().build();
    let store = aligned(&i);
    let m = Model::parse(&bytemuck::cast_slice::<u32, u8>(&store)[..i.len()]).unwrap();
    assert_eq!(m.kind(), Kind::Int8);
    assert_eq!(m.layer_count(), 4);
    assert!(m.layer(2).unwrap().table.is_some());
    assert!(m.layer(2).unwrap().zp_folded);
    // conv: 32 + 48 -> 80 is the peak.
    assert_eq!(m.arena_bytes(), 80);
}

#[test]
fn crc_of_the_reference_string() {
    // The CRC-32 check value of "123456789" (the catalogue's "check" field).
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}

/// Build, mutate one thing, rebuild with a fresh CRC, expect this error.
fn expect(b: &Builder, mutate: impl Fn(&mut Builder), want: ModelError) {
    let mut b = b.clone();
    mutate(&mut b);
    assert_eq!(parse_bytes(&b.build()), Err(want));
}

/// Patch raw bytes (after building), refresh the CRC, expect this error.
fn expect_raw(b: &Builder, patch: impl Fn(&mut Vec<u8>), want: ModelError) {
    let mut bytes = b.build();
    patch(&mut bytes);
    refresh_crc(&mut bytes);
    assert_eq!(parse_bytes(&bytes), Err(want));
}

#[test]
fn header_errors() {
    let b = f32_mlp();
    let bytes = b.build();
    assert_eq!(
        parse_bytes(&bytes[..10]),
        Err(ModelError::Truncated {
            needed: 64,
            actual: 10
        })
    );
    let mut bad = bytes.clone();
    bad[0] = b'X';
    assert_eq!(parse_bytes(&bad), Err(ModelError::BadMagic));
    // Version 1 (no requant scale) and unknown versions are refused.
    expect_raw(&b, |v| v[4] = 1, ModelError::UnsupportedVersion(1));
    expect_raw(&b, |v| v[4] = 3, ModelError::UnsupportedVersion(3));
    expect_raw(&b, |v| v[6] |= 8, ModelError::UnknownFlags(10));
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        parse_bytes(&longer),
        Err(ModelError::SizeMismatch {
            header: bytes.len() as u32,
            actual: bytes.len() + 1
        })
    );
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    assert!(matches!(
        parse_bytes(&flipped),
        Err(ModelError::CrcMismatch { .. })
    ));
    expect_raw(
        &b,
        |v| v[20..22].copy_from_slice(&0u16.to_le_bytes()),
        ModelError::Header(HeaderFault::LayerCount),
    );
    expect_raw(
        &b,
        |v| v[40..42].copy_from_slice(&0u16.to_le_bytes()),
        ModelError::Header(HeaderFault::InputShape),
    );
    expect_raw(
        &b,
        |v| v[48..52].copy_from_slice(&1.0f32.to_le_bytes()),
        ModelError::Header(HeaderFault::InputQuantization),
    );
    expect_raw(
        &b,
        |v| v[56..60].copy_from_slice(&f32::NAN.to_le_bytes()),
        ModelError::Header(HeaderFault::PixelScale),
    );
    expect_raw(&b, |v| v[46] = 1, ModelError::Header(HeaderFault::Reserved));
    expect_raw(
        &b,
        |v| v[16] ^= 16,
        ModelError::ArenaMismatch {
            header: 32,
            computed: 48,
        },
    );
    expect_raw(
        &b,
        |v| v[24..28].copy_from_slice(&7u32.to_le_bytes()),
        ModelError::TableBounds(Table::Layers),
    );
    expect_raw(
        &b,
        |v| v[28..32].copy_from_slice(&64u32.to_le_bytes()),
        ModelError::TableBounds(Table::Tensors),
    );
    expect_raw(
        &b,
        |v| v[28..32].copy_from_slice(&u32::MAX.to_le_bytes()),
        ModelError::TableBounds(Table::Tensors),
    );
    // An unaligned view of a valid file.
    let store = aligned(&[&[0u8][..], &bytes].concat());
    let view = &bytemuck::cast_slice::<u32, u8>(&store)[1..=bytes.len()];
    assert_eq!(Model::parse(view).unwrap_err(), ModelError::Misaligned);
}

#[test]
fn tensor_errors() {
    let b = f32_mlp();
    let t = |i: u16, fault| ModelError::Tensor { index: i, fault };
    expect(
        &b,
        |b| b.tensors[1].dtype = 9,
        t(1, TensorFault::UnknownDtype(9)),
    );
    expect(&b, |b| b.tensors[0].block = 5, t(0, TensorFault::Layout));
    expect(&b, |b| b.tensors[1].dims[2] = 0, t(1, TensorFault::Dims));
    expect(
        &b,
        |b| {
            b.tensors[1].data.pop();
        },
        t(1, TensorFault::Length),
    );
    // Offsets: tensor 1 moved onto tensor 0, and past the end.
    let base = b.build();
    let tt = u32::from_le_bytes(base[28..32].try_into().unwrap()) as usize;
    let off0 = base[tt + 20..tt + 24].to_vec();
    expect_raw(
        &b,
        |v| v[tt + 32 + 20..tt + 32 + 24].copy_from_slice(&off0),
        t(1, TensorFault::Overlap),
    );
    expect_raw(
        &b,
        |v| {
            let past = (round16(v.len()) as u32 + 16).to_le_bytes();
            v[tt + 32 + 20..tt + 32 + 24].copy_from_slice(&past)
        },
        t(1, TensorFault::OutOfBounds),
    );
    expect_raw(
        &b,
        |v| v[tt + 20] = v[tt + 20].wrapping_add(4),
        t(0, TensorFault::Misaligned),
    );
    expect_raw(&b, |v| v[tt + 3] = 1, t(0, TensorFault::Reserved));
}

#[test]
fn layer_errors() {
    let b = f32_mlp();
    let l = |i: u16, fault| ModelError::Layer { index: i, fault };
    expect(&b, |b| b.layers[0].op = 42, l(0, LayerFault::UnknownOp(42)));
    expect(
        &b,
        |b| b.layers[1].act = 9,
        l(1, LayerFault::UnknownActivation(9)),
    );
    expect(
        &b,
        |b| b.layers[1].input = [1, 1, 6],
        l(1, LayerFault::InputShape),
    );
    expect(
        &b,
        |b| b.layers[0].output = [1, 2, 5],
        l(0, LayerFault::OutputShape),
    );
    expect(
        &b,
        |b| b.layers[0].window = [1, 0, 0, 0, 0, 0, 0, 0],
        l(0, LayerFault::Geometry),
    );
    expect(
        &b,
        |b| b.layers[0].tensors[1] = NO_TENSOR,
        l(0, LayerFault::MissingTensor(Role::Bias)),
    );
    expect(
        &b,
        |b| b.layers[0].tensors[2] = 1,
        l(0, LayerFault::UnexpectedTensor(Role::Multiplier)),
    );
    expect(
        &b,
        |b| b.layers[0].tensors[0] = 99,
        l(0, LayerFault::TensorIndex(Role::Weight)),
    );
    expect(
        &b,
        |b| b.layers[0].tensors[0] = 2,
        l(0, LayerFault::TensorKind(Role::Weight)),
    );
    expect(
        &b,
        |b| b.layers[0].tensors[1] = 3,
        l(0, LayerFault::TensorKind(Role::Bias)),
    );
    expect(&b, |b| b.layers[0].flags = 1, l(0, LayerFault::BadFlags(1)));
    expect(
        &b,
        |b| b.layers[0].quant.0 = 1.0,
        l(0, LayerFault::Quantization),
    );
    expect(&b, |b| b.classes = 4, l(1, LayerFault::FinalShape));
    expect(
        &b,
        |b| b.bn[0].2 = 0.0,
        ModelError::Bn {
            index: 0,
            fault: LayerFault::Quantization,
        },
    );
    expect(
        &b,
        |b| b.bn[0].0 = 7,
        ModelError::Bn {
            index: 0,
            fault: LayerFault::InputShape,
        },
    );
    expect(
        &b,
        |b| b.bn[0].1[3] = 0,
        ModelError::Bn {
            index: 0,
            fault: LayerFault::TensorKind(Role::BnParam),
        },
    );

    let q = int8_cnn();
    expect(
        &q,
        |b| b.layers[2].tensors[4] = NO_TENSOR,
        l(2, LayerFault::MissingTensor(Role::Table)),
    );
    expect(
        &q,
        |b| b.layers[3].quant.4 = -129,
        l(3, LayerFault::Quantization),
    );
    expect(
        &q,
        |b| {
            b.layers[3].quant.3 = 100;
            b.layers[3].quant.4 = 50;
        },
        l(3, LayerFault::Quantization),
    );
    expect(
        &q,
        |b| b.layers[3].quant.1 = 300,
        l(3, LayerFault::Quantization),
    );
    expect(
        &q,
        |b| b.layers[1].act = 1,
        l(1, LayerFault::ActivationNotAllowed),
    );
    expect(
        &q,
        |b| b.tensors[3].data = i32s(&[-4, 77, -4]),
        l(0, LayerFault::Quantization),
    );
    expect(&q, |b| b.layers[0].flags = 2, l(0, LayerFault::BadFlags(2)));
    expect(
        &q,
        |b| b.input_q.1 = 200,
        ModelError::Header(HeaderFault::InputQuantization),
    );
}

fn mutate_and_parse(base: &[u8], cuts: &[(usize, u8)], fix_crc: bool, truncate: Option<usize>) {
    let mut v = base.to_vec();
    for &(at, x) in cuts {
        if let Some(b) = v.get_mut(at) {
            *b ^= x;
        }
    }
    if let Some(n) = truncate {
        v.truncate(n);
    }
    if fix_crc {
        refresh_crc(&mut v);
    }
    // Any outcome but a panic is acceptable; a model that parses must also
    // run without panicking.
    let store = aligned(&v);
    let view = &bytemuck::cast_slice::<u32, u8>(&store)[..v.len()];
    let parsed = Model::parse(view);
    if let Ok(m) = &parsed {
        let _ = run_any(m);
    }
}

/// Run a parsed model once on a deterministic input; returns the argmax.
fn run_any(m: &Model<'_>) -> Result<usize, ModelError> {
    let mut arena = vec![0u32; m.arena_bytes().div_ceil(4)];
    let mut e = crate::engine::Engine::new(m, bytemuck::cast_slice_mut(&mut arena))?;
    match m.kind() {
        Kind::Int8 => e
            .input_i8()?
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i * 37 % 256) as u8 as i8),
        Kind::F32 => e
            .input_f32()?
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = (i as f32 * 0.3).sin()),
    }
    Ok(e.run()?.argmax())
}

#[test]
fn engine_runs_the_f32_model_like_a_hand_computation() {
    let b = f32_mlp();
    let bytes = b.build();
    let store = aligned(&bytes);
    let m = Model::parse(&bytemuck::cast_slice::<u32, u8>(&store)[..bytes.len()]).unwrap();
    let x: Vec<f32> = (0..4).map(|i| (i as f32 * 0.3).sin()).collect();
    // Unblock the stored weights: stored[(blk·P + p)·R + r] = W[blk·R + r, p].
    let unblock = |t: &T, rows: usize, cols: usize| -> Vec<f32> {
        let s: Vec<f32> = t
            .data
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let mut w = vec![0.0; rows * cols];
        for o in 0..rows {
            for p in 0..cols {
                w[o * cols + p] = s[((o / 4) * cols + p) * 4 + o % 4];
            }
        }
        w
    };
    let (w1, w2) = (unblock(&b.tensors[0], 5, 4), unblock(&b.tensors[2], 3, 5));
    let h: Vec<f64> = (0..5)
        .map(|o| {
            (0.1 + (0..4)
                .map(|p| f64::from(w1[o * 4 + p]) * f64::from(x[p]))
                .sum::<f64>())
            .max(0.0)
        })
        .collect();
    let y: Vec<f64> = (0..3)
        .map(|o| -0.2 + (0..5).map(|p| f64::from(w2[o * 5 + p]) * h[p]).sum::<f64>())
        .collect();
    let mut arena = vec![0u32; m.arena_bytes() / 4];
    let mut e = crate::engine::Engine::new(&m, bytemuck::cast_slice_mut(&mut arena)).unwrap();
    e.input_f32().unwrap().copy_from_slice(&x);
    let crate::engine::Output::F32(out) = e.run().unwrap() else {
        panic!("f32 model")
    };
    for (a, b) in out.iter().zip(&y) {
        assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
    }
    // Too small an arena and the wrong input kind are errors.
    let mut small = vec![0u32; 4];
    assert!(crate::engine::Engine::new(&m, bytemuck::cast_slice_mut(&mut small)).is_err());
    let mut e = crate::engine::Engine::new(&m, bytemuck::cast_slice_mut(&mut arena)).unwrap();
    assert_eq!(e.input_i8().unwrap_err(), ModelError::WrongKind);
}

#[test]
fn engine_runs_the_int8_model_and_observes_every_layer() {
    let bytes = int8_cnn().build();
    let store = aligned(&bytes);
    let m = Model::parse(&bytemuck::cast_slice::<u32, u8>(&store)[..bytes.len()]).unwrap();
    let mut arena = vec![0u32; m.arena_bytes() / 4];
    let mut e = crate::engine::Engine::new(&m, bytemuck::cast_slice_mut(&mut arena)).unwrap();
    e.input_i8()
        .unwrap()
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i * 37 % 256) as u8 as i8);
    let mut events = Vec::new();
    let out = e.run_observed(|i, ev| events.push((i, ev))).unwrap();
    assert!(matches!(out, crate::engine::Output::I8 { values, .. } if values.len() == 3));
    assert_eq!(events.len(), 8);
    assert_eq!(run_any(&m), run_any(&m));
}

/// `b` with its int8 dense and conv weights blocked by 4 (dtype 2) in the
/// pair form (dtype 4): word `j` = `lo + 2^24·hi` of stored bytes `2j`,
/// `2j + 1`.
fn with_pairs(b: &Builder) -> Builder {
    let mut b = b.clone();
    let weights: Vec<u16> = b
        .layers
        .iter()
        .filter(|l| l.op == 1 || l.op == 2)
        .map(|l| l.tensors[0])
        .filter(|&t| b.tensors[usize::from(t)].block == 4)
        .collect();
    for id in weights {
        let t = &mut b.tensors[usize::from(id)];
        let words: Vec<i32> = t
            .data
            .chunks(2)
            .map(|p| crate::kernels::pack::pair_word(p[0] as i8, p[1] as i8))
            .collect();
        t.dtype = 4;
        t.data = i32s(&words);
    }
    b
}

/// The int8 outputs of `bytes` for the deterministic input of [`run_any`].
fn levels(bytes: &[u8]) -> Vec<i8> {
    let store = aligned(bytes);
    let m = Model::parse(&bytemuck::cast_slice::<u32, u8>(&store)[..bytes.len()]).unwrap();
    let mut arena = vec![0u32; m.arena_bytes() / 4];
    let mut e = crate::engine::Engine::new(&m, bytemuck::cast_slice_mut(&mut arena)).unwrap();
    e.input_i8()
        .unwrap()
        .iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i * 37 % 256) as u8 as i8);
    match e.run().unwrap() {
        crate::engine::Output::I8 { values, .. } => values.to_vec(),
        crate::engine::Output::F32(_) => panic!("int8 model"),
    }
}

#[test]
fn pair_form_weights_parse_and_run_like_bytes() {
    let b = int8_cnn();
    let p = with_pairs(&b);
    let bytes = p.build();
    let store = aligned(&bytes);
    let m = Model::parse(&bytemuck::cast_slice::<u32, u8>(&store)[..bytes.len()]).unwrap();
    // Padded conv (zero point per load) and dense, both R = 4; the R = 8
    // dense stays in bytes: a file may mix the forms.
    for i in [0, 3] {
        assert!(
            matches!(m.layer(i).unwrap().weights, Some(Data::I8Pairs(_))),
            "layer {i}"
        );
    }
    assert!(matches!(m.layer(2).unwrap().weights, Some(Data::I8(_))));
    assert_eq!(m.tensor(0).unwrap().0.dtype, DType::I8Pair);
    assert_eq!(m.tensor(0).unwrap().0.len, 4 * 18 * 2);
    assert_eq!(levels(&bytes), levels(&b.build()));

    let t = |i: u16, fault| ModelError::Tensor { index: i, fault };
    let l = |i: u16, fault| ModelError::Layer { index: i, fault };
    // A word whose low half is 128 is not a pair; nor is -128 in the high half.
    expect(
        &p,
        |b| b.tensors[0].data[..4].copy_from_slice(&128i32.to_le_bytes()),
        t(0, TensorFault::Values),
    );
    expect(
        &p,
        |b| {
            b.tensors[9].data[4..8]
                .copy_from_slice(&crate::kernels::pack::pair_word(0, -128).to_le_bytes())
        },
        t(9, TensorFault::Values),
    );
    // Pair words are blocked by 4 rows only.
    expect(
        &p,
        |b| {
            b.tensors[4].dtype = 4;
            b.tensors[4].data = vec![0; 8 * 12 * 2];
        },
        t(4, TensorFault::Layout),
    );
    // The length is two bytes per weight.
    expect(
        &p,
        |b| b.tensors[0].data.truncate(4 * 18),
        t(0, TensorFault::Length),
    );
    // Only blocked int8 dense/conv weights may be pairs: not a plain
    // tensor (a table), not in an f32 model.
    expect(
        &b,
        |b| {
            b.tensors[8].dtype = 4;
            b.tensors[8].data.resize(512, 0);
        },
        t(8, TensorFault::Layout),
    );
    let f = f32_mlp();
    expect(
        &f,
        |b| {
            b.tensors[0].dtype = 4;
            let n = b.tensors[0].data.len() / 2;
            b.tensors[0].data = vec![0; n];
        },
        l(0, LayerFault::TensorKind(Role::Weight)),
    );
}

#[test]
fn decoding_after_parse_equals_the_checked_decode() {
    // `Model::layer` and `Model::bn_record` skip the checks `parse` ran;
    // on an accepted file they must return what the checked decode did.
    for b in [f32_mlp(), int8_cnn(), with_pairs(&int8_cnn())] {
        let bytes = b.build();
        let store = aligned(&bytes);
        let m = Model::parse(&bytemuck::cast_slice::<u32, u8>(&store)[..bytes.len()]).unwrap();
        let mut shape = m.header().input;
        for i in 0..m.layer_count() {
            let checked = m.decode_layer(i, Some(shape)).unwrap();
            let trusted = m.layer(i).unwrap();
            assert_eq!(format!("{checked:?}"), format!("{trusted:?}"), "layer {i}");
            shape = checked.output;
        }
        for j in 0..m.bn_records().count() {
            let checked = m.decode_bn(j, true).unwrap();
            let trusted = m.bn_record(j).unwrap();
            assert_eq!(
                format!("{checked:?}"),
                format!("{trusted:?}"),
                "BN record {j}"
            );
        }
    }
}

#[test]
fn int8_rules_the_kernels_rely_on() {
    let b = int8_cnn();
    let l = |i: u16, fault| ModelError::Layer { index: i, fault };
    // A folded zero point needs a convolution without padding.
    expect(&b, |b| b.layers[0].flags = 1, l(0, LayerFault::BadFlags(1)));
    // The requant scale (layer bytes 56..60) of a weighted int8 layer:
    // positive and finite, the output scale unless a table follows; 0 for
    // other layers.
    let at = |i: usize| 64 + 64 * i + 56;
    for bad in [0.0f32, -1.0, f32::NAN, 1.5] {
        expect_raw(
            &b,
            |v| v[at(0)..at(0) + 4].copy_from_slice(&bad.to_le_bytes()),
            l(0, LayerFault::Quantization),
        );
    }
    expect_raw(
        &b,
        |v| v[at(1)..at(1) + 4].copy_from_slice(&1.0f32.to_le_bytes()),
        l(1, LayerFault::Quantization),
    );
    // No int8 pooling window may lie entirely in the padding: a 2×2 window
    // with stride 2 and padding 2 has one at the corner.
    expect(
        &b,
        |b| {
            b.layers[1].window = [2, 2, 2, 2, 2, 0, 2, 0];
            b.layers[1].output = [3, 3, 3];
            b.layers[2].input = [3, 3, 3];
        },
        l(1, LayerFault::Geometry),
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn truncated_flipped_or_spliced_files_never_panic(
        which in 0..3usize,
        flips in prop::collection::vec((0usize..2000, 1u8..=255), 0..6),
        fix_crc in any::<bool>(),
        cut in prop::option::of(0usize..2000),
        splice in prop::option::of((0usize..2000, 0usize..2000)),
    ) {
        let a = f32_mlp().build();
        let b = int8_cnn().build();
        let c = with_pairs(&int8_cnn()).build();
        let (base, other) = match which {
            0 => (a, b),
            1 => (b, a),
            _ => (c, b),
        };
        let mut v = base.clone();
        if let Some((at, from)) = splice {
            let at = at % v.len();
            let from = from % other.len();
            let n = (v.len() - at).min(other.len() - from);
            v[at..at + n].copy_from_slice(&other[from..from + n]);
        }
        let flips: Vec<(usize, u8)> = flips.into_iter().map(|(i, x)| (i % v.len(), x)).collect();
        mutate_and_parse(&v, &flips, fix_crc, cut.map(|c| c % (v.len() + 1)));
    }
}

// ------------------------------------------------------------------ writer

/// A 16-aligned buffer of `len` bytes (as `u128` words).
fn buffer(len: usize) -> Vec<u128> {
    vec![0u128; len.div_ceil(16)]
}

/// The writer's file for the model `bytes` describes (parsed, then
/// described through `LayerDesc::from` / `BnDesc::from`).
fn rewrite(bytes: &[u8]) -> Result<Vec<u8>, WriteError> {
    let store = aligned(bytes);
    let m = Model::parse(&bytemuck::cast_slice::<u32, u8>(&store)[..bytes.len()]).unwrap();
    let layers: Vec<LayerDesc<'_>> = m.layers().map(|l| LayerDesc::from(&l.unwrap())).collect();
    let bn: Vec<BnDesc<'_>> = m.bn_records().map(|b| BnDesc::from(&b.unwrap())).collect();
    let desc = ModelDesc::of(&m, &layers, &bn);
    let len = write::required_len(&desc)?;
    let mut out = buffer(len);
    let n = write::write(&desc, bytemuck::cast_slice_mut(&mut out))?;
    assert_eq!(n, len);
    Ok(bytemuck::cast_slice::<u128, u8>(&out)[..n].to_vec())
}

#[test]
fn the_writer_reproduces_the_independent_oracle_byte_for_byte() {
    for (name, b) in [
        ("f32 MLP with BN", f32_mlp()),
        ("int8 CNN", int8_cnn()),
        ("int8 CNN, pair weights", with_pairs(&int8_cnn())),
    ] {
        let bytes = b.build();
        assert_eq!(rewrite(&bytes).unwrap(), bytes, "{name}");
    }
}

/// `f32_mlp()` parsed, its descriptions handed to `f`, the result written.
fn write_mlp_with(f: impl FnOnce(&mut ModelDesc<'_>, &mut Vec<u128>)) -> Result<usize, WriteError> {
    let bytes = f32_mlp().build();
    let store = aligned(&bytes);
    let m = Model::parse(&bytemuck::cast_slice::<u32, u8>(&store)[..bytes.len()]).unwrap();
    let layers: Vec<LayerDesc<'_>> = m.layers().map(|l| LayerDesc::from(&l.unwrap())).collect();
    let bn: Vec<BnDesc<'_>> = m.bn_records().map(|b| BnDesc::from(&b.unwrap())).collect();
    let mut desc = ModelDesc::of(&m, &layers, &bn);
    let mut out = buffer(bytes.len());
    f(&mut desc, &mut out);
    write::write(&desc, bytemuck::cast_slice_mut(&mut out))
}

#[test]
fn writer_errors_are_specific() {
    let len = f32_mlp().build().len();
    assert_eq!(write_mlp_with(|_, _| {}), Ok(len));
    // Buffer too small, misaligned.
    assert_eq!(
        write_mlp_with(|_, out| out.truncate(1)),
        Err(WriteError::BufferTooSmall {
            needed: len,
            actual: 16
        })
    );
    let bytes = f32_mlp().build();
    let store = aligned(&bytes);
    let m = Model::parse(&bytemuck::cast_slice::<u32, u8>(&store)[..bytes.len()]).unwrap();
    let layers: Vec<LayerDesc<'_>> = m.layers().map(|l| LayerDesc::from(&l.unwrap())).collect();
    let desc = ModelDesc::of(&m, &layers, &[]);
    let mut out = buffer(len + 16);
    let shifted = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut out)[1..];
    assert_eq!(
        write::write(&desc, shifted),
        Err(WriteError::BufferMisaligned)
    );
    // Counts.
    let none = ModelDesc::of(&m, &[], &[]);
    assert_eq!(write::required_len(&none), Err(WriteError::LayerCount(0)));
    let many = vec![layers[1]; MAX_LAYERS + 1];
    let many = ModelDesc::of(&m, &many, &[]);
    assert_eq!(
        write::required_len(&many),
        Err(WriteError::LayerCount(MAX_LAYERS + 1))
    );
    let bn: Vec<BnDesc<'_>> = (0..=layout::MAX_BN)
        .map(|_| BnDesc::from(&m.bn_record(0).unwrap()))
        .collect();
    assert_eq!(
        write::required_len(&ModelDesc::of(&m, &layers, &bn)),
        Err(WriteError::BnCount(layout::MAX_BN + 1))
    );
    // Shapes that do not chain: the parser's verdict, naming the layer.
    assert_eq!(
        write_mlp_with(|d, _| {
            let mut l = d.layers.to_vec();
            // 5 features as 5×1×1 instead of the first layer's 1×1×5.
            l[1].input = Shape::nhwc(1, 5, 1, 1);
            d.layers = Vec::leak(l);
        }),
        Err(WriteError::Invalid(ModelError::Layer {
            index: 1,
            fault: LayerFault::InputShape
        }))
    );
    // A field too wide for the format.
    assert_eq!(
        write_mlp_with(|d, _| d.classes = 70_000),
        Err(WriteError::Field {
            layer: None,
            field: Field::Classes
        })
    );
    // A tensor of the wrong kind: int8 weights in an f32 file.
    assert_eq!(
        write_mlp_with(|d, _| {
            let mut l = d.layers.to_vec();
            l[0].weights = Some(Data::I8(Vec::leak(vec![0i8; 32])));
            d.layers = Vec::leak(l);
        }),
        Err(WriteError::Invalid(ModelError::Layer {
            index: 0,
            fault: LayerFault::TensorKind(Role::Weight)
        }))
    );
    // A bias not padded to whole blocks.
    assert_eq!(
        write_mlp_with(|d, _| {
            let mut l = d.layers.to_vec();
            l[0].bias = Some(Data::F32(Vec::leak(vec![0.0f32; 5])));
            d.layers = Vec::leak(l);
        }),
        Err(WriteError::Invalid(ModelError::Layer {
            index: 0,
            fault: LayerFault::TensorKind(Role::Bias)
        }))
    );
}

/// `bytes` in a 16-aligned buffer, and its length.
fn owned(bytes: &[u8]) -> (Vec<u128>, usize) {
    let mut store = buffer(bytes.len());
    bytemuck::cast_slice_mut::<u128, u8>(&mut store)[..bytes.len()].copy_from_slice(bytes);
    (store, bytes.len())
}

#[test]
fn in_place_updates_keep_the_file_valid_or_leave_it_unchanged() {
    // int8: a new bias changes the outputs; the file still parses.
    let (mut store, len) = owned(&int8_cnn().build());
    let file = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut store)[..len];
    let before = levels(file);
    let bias_id = Model::parse(file).unwrap().layer(0).unwrap().tensor_ids[1];
    let (desc, _) = Model::parse(file)
        .unwrap()
        .tensor(usize::from(bias_id))
        .unwrap();
    let new_bias = vec![5000i32; desc.logical_len()];
    write::update_tensor(file, usize::from(bias_id), Data::I32(&new_bias)).unwrap();
    assert!(Model::parse(file).is_ok());
    assert_ne!(levels(file), before);
    // Rejected updates leave every byte as it was.
    let snapshot = file.to_vec();
    let mult_id = usize::from(Model::parse(file).unwrap().layer(0).unwrap().tensor_ids[2]);
    let cases: [(usize, Data<'_>, WriteError); 5] = [
        (999, Data::I32(&[0]), WriteError::NoTensor(999)),
        (
            usize::from(bias_id),
            Data::F32(&[0.0; 4]),
            WriteError::WrongData(usize::from(bias_id)),
        ),
        (
            usize::from(bias_id),
            Data::I32(&[0; 3]),
            WriteError::WrongData(usize::from(bias_id)),
        ),
        // A multiplier below 2^30 (and not 0): out of the Q31 range.
        (
            mult_id,
            Data::I32(&[12345; 3]),
            WriteError::BadValues(mult_id),
        ),
        (mult_id, Data::I32(&[-1; 3]), WriteError::BadValues(mult_id)),
    ];
    for (id, values, want) in cases {
        assert_eq!(write::update_tensor(file, id, values), Err(want));
        assert_eq!(file, &snapshot[..]);
    }
    // Pair words must stay pairs.
    let (mut store, len) = owned(&with_pairs(&int8_cnn()).build());
    let file = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut store)[..len];
    let w = usize::from(Model::parse(file).unwrap().layer(0).unwrap().tensor_ids[0]);
    let (desc, _) = Model::parse(file).unwrap().tensor(w).unwrap();
    let words = vec![i32::MAX; desc.len as usize / 4];
    assert_eq!(
        write::update_tensor(file, w, Data::I8Pairs(&words)),
        Err(WriteError::BadValues(w))
    );

    // f32: a BN record's statistics and ε.
    let (mut store, len) = owned(&f32_mlp().build());
    let file = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut store)[..len];
    let state = |var: &'static [f32], eps| crate::batchnorm::BnState {
        gamma: &[2.0; 5],
        beta: &[0.5; 5],
        mean: &[0.25; 5],
        var,
        eps,
    };
    write::update_bn(file, 0, state(&[3.0; 5], 1e-3)).unwrap();
    let m = Model::parse(file).unwrap();
    let b = m.bn_record(0).unwrap();
    assert_eq!(
        (b.gamma, b.beta, b.mean, b.var, b.eps),
        (
            &[2.0; 5][..],
            &[0.5; 5][..],
            &[0.25; 5][..],
            &[3.0; 5][..],
            1e-3
        )
    );
    let snapshot = file.to_vec();
    let var_id = usize::from(b.tensor_ids[3]);
    for (j, s, want) in [
        (1, state(&[1.0; 5], 1e-3), WriteError::NoBn(1)),
        (0, state(&[1.0; 4], 1e-3), WriteError::WrongData(var_id)),
        (0, state(&[-1.0; 5], 1e-3), WriteError::BadValues(var_id)),
        (0, state(&[1.0; 5], 0.0), WriteError::BadValues(var_id)),
    ] {
        assert_eq!(write::update_bn(file, j, s), Err(want));
        assert_eq!(file, &snapshot[..]);
    }
    // A damaged file is refused, not repaired.
    file[100] ^= 1;
    assert!(matches!(
        write::update_bn(file, 0, state(&[1.0; 5], 1e-3)),
        Err(WriteError::Invalid(ModelError::CrcMismatch { .. }))
    ));
}

#[test]
fn update_quant_changes_the_output_stage_or_leaves_the_file_unchanged() {
    use super::QuantOut;
    // int8: the last layer's output scale, zero point and clamps.
    let (mut store, len) = owned(&int8_cnn().build());
    let file = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut store)[..len];
    let before = levels(file);
    let old = Model::parse(file).unwrap().layer(3).unwrap().quant;
    let new = QuantOut {
        scale: 0.25,
        zero_point: 7,
        requant_zero_point: 7,
        clamp_min: -100,
        clamp_max: 100,
        requant_scale: 0.25,
    };
    write::update_quant(file, 3, new).unwrap();
    let m = Model::parse(file).unwrap();
    assert_eq!(m.layer(3).unwrap().quant, new);
    assert_eq!(
        m.layer(2).unwrap().quant.scale,
        1.0 / 256.0,
        "another layer"
    );
    assert_ne!(levels(file), before);
    // Back to the old values: the original file, byte for byte.
    write::update_quant(file, 3, old).unwrap();
    assert_eq!(file, &int8_cnn().build()[..]);
    // Rejected: every byte stays (the record and the CRC).
    let snapshot = file.to_vec();
    let bad = [
        QuantOut { scale: 0.0, ..old },
        QuantOut {
            scale: f32::NAN,
            ..old
        },
        QuantOut {
            scale: f32::INFINITY,
            ..old
        },
        QuantOut {
            zero_point: 128,
            ..old
        },
        QuantOut {
            requant_zero_point: -129,
            ..old
        },
        QuantOut {
            clamp_min: 10,
            clamp_max: 9,
            ..old
        },
        // A layer without sigmoid/tanh requantizes to its output scale.
        QuantOut {
            requant_scale: 2.0 * old.scale,
            ..old
        },
        QuantOut {
            requant_scale: 0.0,
            ..old
        },
    ];
    for q in bad {
        assert_eq!(
            write::update_quant(file, 3, q),
            Err(WriteError::BadQuant(3)),
            "{q:?}"
        );
        assert_eq!(file, &snapshot[..], "{q:?}");
    }
    // A pooling layer has no requantization scale.
    let pool = Model::parse(file).unwrap().layer(1).unwrap().quant;
    assert_eq!(
        write::update_quant(
            file,
            1,
            QuantOut {
                requant_scale: 0.05,
                ..pool
            }
        ),
        Err(WriteError::BadQuant(1))
    );
    assert_eq!(
        write::update_quant(file, 4, old),
        Err(WriteError::NoLayer(4))
    );
    assert_eq!(file, &snapshot[..]);
    // f32: only the all-zero quantization.
    let (mut store, len) = owned(&f32_mlp().build());
    let file = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut store)[..len];
    let snapshot = file.to_vec();
    write::update_quant(file, 0, QuantOut::NONE).unwrap();
    assert_eq!(file, &snapshot[..]);
    assert_eq!(
        write::update_quant(
            file,
            0,
            QuantOut {
                scale: 1.0,
                ..QuantOut::NONE
            }
        ),
        Err(WriteError::BadQuant(0))
    );
    assert_eq!(file, &snapshot[..]);
    // A damaged file is refused, not repaired.
    file[100] ^= 1;
    let damaged = file.to_vec();
    assert!(matches!(
        write::update_quant(file, 0, QuantOut::NONE),
        Err(WriteError::Invalid(ModelError::CrcMismatch { .. }))
    ));
    assert_eq!(file, &damaged[..]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any update of any tensor with arbitrary values of its dtype and
    /// length leaves a file that parses, or an `Err` and the file as it was.
    #[test]
    fn random_updates_never_break_a_file(
        pairs in any::<bool>(),
        pick in any::<prop::sample::Index>(),
        words in prop::collection::vec(any::<i32>(), 256),
    ) {
        let b = if pairs { with_pairs(&int8_cnn()) } else { int8_cnn() };
        let (mut store, len) = owned(&b.build());
        let file = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut store)[..len];
        let m = Model::parse(file).unwrap();
        let id = pick.index(m.tensor_count());
        let (desc, _) = m.tensor(id).unwrap();
        let n = desc.len as usize / desc.dtype.size();
        let bytes: Vec<i8> = words.iter().map(|&w| w as i8).collect();
        let floats: Vec<f32> = words.iter().map(|&w| f32::from_bits(w as u32)).collect();
        let values = match desc.dtype {
            DType::I8 => Data::I8(&bytes[..n]),
            DType::I32 => Data::I32(&words[..n]),
            DType::I8Pair => Data::I8Pairs(&words[..n / 2]),
            DType::F32 => Data::F32(&floats[..n]),
        };
        let snapshot = file.to_vec();
        match write::update_tensor(file, id, values) {
            Ok(()) => prop_assert!(Model::parse(file).is_ok()),
            Err(_) => prop_assert_eq!(&file[..], &snapshot[..]),
        }
    }
}
