//! `Model::parse` on arbitrary bytes and, when they parse, one engine run:
//! core's promise that a malformed model is an `Err`, never a panic, an
//! out-of-bounds access or an overflow (cargo fuzz builds with overflow
//! checks and debug assertions on), and that a model which parses runs.
//!
//! Almost every mutation breaks the CRC-32, which the parser checks before
//! anything else; so after parsing the bytes as given, the target stores the
//! right CRC and parses again, which lets the fuzzer reach the checks behind
//! it. The seed corpus (`corpus/parse_and_run/*.ncm`) holds valid files
//! written by the exporter (`cargo xtask fuzz` regenerates missing ones).

#![no_main]

use libfuzzer_sys::fuzz_target;
use normcore::engine::Engine;
use normcore::model::{file_crc, layout::CRC_FIELD, Kind, Model, Op};

/// Engine runs above these are skipped: the harness's own limits (a valid
/// model may ask for gigabytes of arena or 10^11 operations; that is not a
/// fault of the parser, only too slow for a fuzzer).
const MAX_ARENA: usize = 16 << 20;
const MAX_WORK: usize = 50_000_000;

fuzz_target!(|data: &[u8]| {
    let mut words = vec![0u128; data.len().div_ceil(16)];
    let buf = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut words)[..data.len()];
    buf.copy_from_slice(data);
    parse_and_run(buf);
    if buf.len() >= CRC_FIELD.end {
        let crc = file_crc(buf);
        if buf[CRC_FIELD] != crc.to_le_bytes() {
            buf[CRC_FIELD].copy_from_slice(&crc.to_le_bytes());
            parse_and_run(buf);
        }
    }
});

fn parse_and_run(bytes: &[u8]) {
    let Ok(model) = Model::parse(bytes) else {
        return;
    };
    // Everything the tools read must be readable without panicking too.
    for i in 0..model.tensor_count() {
        let _ = model.tensor(i);
    }
    for b in model.bn_records() {
        if let Ok(b) = b {
            let _ = b.state();
        }
    }
    if model.arena_bytes() > MAX_ARENA || work(&model) > MAX_WORK {
        return;
    }
    let mut arena = vec![0u128; model.arena_bytes().div_ceil(16)];
    let arena = &mut bytemuck::cast_slice_mut::<u128, u8>(&mut arena)[..model.arena_bytes()];
    let Ok(mut engine) = Engine::new(&model, arena) else {
        return;
    };
    match model.kind() {
        Kind::Int8 => {
            if let Ok(x) = engine.input_i8() {
                for (i, v) in x.iter_mut().enumerate() {
                    *v = (i * 37 % 256) as u8 as i8;
                }
            }
        }
        Kind::F32 => {
            if let Ok(x) = engine.input_f32() {
                for (i, v) in x.iter_mut().enumerate() {
                    *v = (i as f32 * 0.3).sin();
                }
            }
        }
    }
    if let Ok(out) = engine.run() {
        let _ = out.argmax();
    }
}

/// An upper bound of the operations of one run: MACs, pooling windows and
/// every activation element.
fn work(model: &Model<'_>) -> usize {
    model
        .layers()
        .flatten()
        .map(|l| {
            let elems = |s: normcore::Shape| s.h.saturating_mul(s.w).saturating_mul(s.c);
            let window = match l.op {
                Op::Pool(p) => p.window.kernel_h.saturating_mul(p.window.kernel_w),
                Op::GlobalAvgPool => l.input.h.saturating_mul(l.input.w),
                _ => 1,
            };
            l.op.macs(l.output)
                .saturating_add(elems(l.output).saturating_mul(window))
                .saturating_add(elems(l.input))
        })
        .fold(0usize, usize::saturating_add)
}
