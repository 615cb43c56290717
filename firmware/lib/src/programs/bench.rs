//! Per-kernel cost on fixed shapes: each of core's inference kernels runs
//! once on deterministic pseudo-random weights and inputs made here (no
//! assets), timed by the board's counter, and one line per run is printed:
//! ```text
//! bench kernel=dense_i8 shape=784x100 form=r4 pairs act=sigmoid macs=78400 instructions=121462 per_mac=1.55
//! ```
//! `macs` counts multiply-accumulates (for pooling and element-wise
//! kernels: input elements read, for the output stage: outputs). Under QEMU
//! with `-icount shift=6` (`NORMCORE_ICOUNT=1`; `cargo xtask bench firmware`
//! turns it on and prints the lines as a table) `instructions` are exact
//! and repeatable; on hardware with DWT the column is `cycles`.
//!
//! The shapes are those of the paper's MLP (784 → 100 → 100 → 100 → 10,
//! sigmoid in the hidden layers: `paper-mlp` with BN folded) and of a small
//! CNN (5×5 and 3×3 convolutions, depthwise 3×3, pooling). The
//! `paper_mlp_*` rows chain the four dense layers' kernels, output stages
//! included; the `engine_paper_mlp_*` rows run the same network from a
//! model file written here (`Model::parse`, `Engine::run`): the whole
//! inference as an application runs it, dispatch included (and the
//! `model_parse` rows time the parse, per byte of the file).
//!
//! Where a kernel has two weight forms (int8 dense and conv: bytes, or pair
//! words in blocks of 4 rows), the bench also checks that both give
//! identical outputs, and that the engine's int8 logits are the kernel
//! chain's; it exits with failure if not. A build for one kind of model
//! (`--no-default-features --features int8`, or `f32`) skips the other
//! kind's `engine_paper_mlp_*` row with a log line. The shapes are
//! constants: a geometry or packing that fails to build is a bug in this
//! program, and panics (the board's panic handler ends it with failure).

use core::hint::black_box;
use core::sync::atomic::AtomicBool;

use crate::board::Board;
use crate::cost::{Cost, Stopwatch, TickCounter, Unit};
use crate::stack;
use normcore::engine::{self, Engine, Output};
use normcore::kernels::int8::{self, BlockedI8};
use normcore::kernels::requant::OutputStage;
use normcore::kernels::{f32 as kf32, pack_pairs, pack_rows, packed_len, padded_rows};
use normcore::layers::conv::Padding;
use normcore::layers::{Activation, Conv2d, Dense, DepthwiseConv2d, Pool2d, PoolKind, Window};
use normcore::model::write::{self, LayerDesc, ModelDesc};
use normcore::model::{Data, Kind, Model, Op, QuantOut, WriteError};
use normcore::{Error, Rng, Shape};

/// Weight elements of the largest layer: 784 → 100 in blocks of 8 rows
/// (104 rows), and the whole paper MLP's 104·(784 + 100 + 100) + 16·100.
const W_LEN: usize = 104 * (784 + 100 + 100) + 16 * 100;
/// Elements of the largest activation (24×24×16).
const ACT_LEN: usize = 24 * 24 * 16;
/// Most output channels (padded to blocks of 8).
const CH: usize = 104;

/// Everything the kernels read and write, in RAM.
#[repr(C, align(16))]
struct Buffers {
    w_i8: [i8; W_LEN],
    w32: [i32; W_LEN / 2],
    w_plain_i8: [i8; W_LEN],
    w_f32: [f32; W_LEN],
    w_plain_f32: [f32; W_LEN],
    x_i8: [i8; ACT_LEN],
    y_i8: [i8; ACT_LEN],
    y2_i8: [i8; ACT_LEN],
    x_f32: [f32; ACT_LEN],
    y_f32: [f32; ACT_LEN],
    p: Params,
}

/// Per-channel parameters and other read-only data.
#[repr(C)]
struct Params {
    bias_i32: [i32; 4 * CH],
    bias_f32: [f32; 4 * CH],
    multipliers: [i32; 4 * CH],
    shifts: [i32; 4 * CH],
    lut: [i8; 256],
    acc: [i32; 1024],
}

static mut BUFFERS: Buffers = Buffers {
    w_i8: [0; W_LEN],
    w32: [0; W_LEN / 2],
    w_plain_i8: [0; W_LEN],
    w_f32: [0.0; W_LEN],
    w_plain_f32: [0.0; W_LEN],
    x_i8: [0; ACT_LEN],
    y_i8: [0; ACT_LEN],
    y2_i8: [0; ACT_LEN],
    x_f32: [0.0; ACT_LEN],
    y_f32: [0.0; ACT_LEN],
    p: Params {
        bias_i32: [0; 4 * CH],
        bias_f32: [0.0; 4 * CH],
        multipliers: [0; 4 * CH],
        shifts: [0; 4 * CH],
        lut: [0; 256],
        acc: [0; 1024],
    },
};

/// The buffers, once.
fn take_buffers() -> Option<&'static mut Buffers> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if !crate::take_once(&TAKEN) {
        return None;
    }
    // SAFETY: `TAKEN` makes this the only reference to `BUFFERS` ever made,
    // and the pointer to a static is non-null and aligned.
    unsafe { (&raw mut BUFFERS).as_mut() }
}

/// Fill the buffers with deterministic values in the kernels' ranges:
/// weights in `[-127, 127]` (f32: `[-1, 1)`), inputs in `[-128, 127]`,
/// small biases, multipliers in `[2^30, 2^31)` with shifts of -9 .. -7 (the
/// usual `M ≈ 10^-3`), and a monotone sigmoid-like table.
fn fill(b: &mut Buffers) {
    let mut rng = Rng::new(0x6e6f_726d_636f_7265);
    for v in b.w_plain_i8.iter_mut() {
        *v = (rng.below(255) as i32 - 127) as i8;
    }
    for v in b.w_plain_f32.iter_mut() {
        *v = rng.uniform(-1.0, 1.0);
    }
    for v in b.x_i8.iter_mut() {
        *v = rng.next_u32() as i8;
    }
    for v in b.x_f32.iter_mut() {
        *v = rng.uniform(-1.0, 1.0);
    }
    for v in b.p.bias_i32.iter_mut() {
        *v = rng.below(20_001) as i32 - 10_000;
    }
    for v in b.p.bias_f32.iter_mut() {
        *v = rng.uniform(-0.5, 0.5);
    }
    for v in b.p.multipliers.iter_mut() {
        *v = (1 << 30) | (rng.next_u32() >> 2) as i32;
    }
    for v in b.p.shifts.iter_mut() {
        *v = -7 - rng.below(3) as i32;
    }
    for (i, v) in b.p.lut.iter_mut().enumerate() {
        *v = ((i as i32 - 128) / 2) as i8;
    }
    for v in b.p.acc.iter_mut() {
        *v = rng.below(1 << 20) as i32 - (1 << 19);
    }
}

/// What a row prints as its work: multiply-accumulates, or elements.
#[derive(Clone, Copy)]
pub(crate) enum Work {
    Macs(u32),
    Elements(u32),
}

/// Runs and prints the rows.
pub(crate) struct Bench<'s, T> {
    pub(crate) sw: &'s Stopwatch<T>,
    pub(crate) failed: bool,
}

/// `(integer part, hundredths)` of `a / b`, rounded.
fn ratio(a: u64, b: u64) -> (u32, u32) {
    if b == 0 {
        return (0, 0);
    }
    let h = (a * 100 + b / 2) / b;
    ((h / 100) as u32, (h % 100) as u32)
}

impl<T: TickCounter> Bench<'_, T> {
    /// Time `f` once and print its row; a kernel error fails the bench.
    fn row(
        &mut self,
        kernel: &str,
        shape: &str,
        form: &str,
        act: &str,
        work: Work,
        f: impl FnOnce() -> Result<(), Error>,
    ) -> u64 {
        let (result, cost) = self.sw.measure(f);
        if let Err(e) = result {
            defmt::error!("{=str} {=str} {=str}: {}", kernel, shape, form, e);
            self.failed = true;
            return 0;
        }
        self.print(kernel, shape, form, act, work, cost)
    }

    /// Print one row for a measured cost; the count.
    fn print(
        &self,
        kernel: &str,
        shape: &str,
        form: &str,
        act: &str,
        work: Work,
        cost: Cost,
    ) -> u64 {
        let (key, count) = match cost.unit {
            Unit::Cycles => ("cycles", u64::from(cost.count)),
            Unit::Ticks { .. } => (
                "instructions",
                u64::from(cost.icount_instructions().unwrap_or(0)),
            ),
        };
        let (unit, n) = match work {
            Work::Macs(n) => ("macs", n),
            Work::Elements(n) => ("elements", n),
        };
        let (whole, frac) = ratio(count, u64::from(n));
        defmt::info!(
            "bench kernel={=str} shape={=str} form={=str} act={=str} {=str}={=u32} {=str}={=u64} per_{=str}={=u32}.{=u32:02}",
            kernel,
            shape,
            form,
            act,
            unit,
            n,
            key,
            count,
            if matches!(work, Work::Macs(_)) { "mac" } else { "element" },
            whole,
            frac
        );
        count
    }

    /// Print the row of layer `layer` of network row `net`: kernel
    /// `net.L<layer>`, shape the layer's op.
    #[allow(clippy::too_many_arguments)]
    fn print_layer(
        &self,
        net: &str,
        layer: usize,
        op: &str,
        form: &str,
        act: &str,
        work: Work,
        cost: Cost,
    ) {
        let count = match cost.unit {
            Unit::Cycles => u64::from(cost.count),
            Unit::Ticks { .. } => u64::from(cost.icount_instructions().unwrap_or(0)),
        };
        let (unit, n) = match work {
            Work::Macs(n) => ("macs", n),
            Work::Elements(n) => ("elements", n),
        };
        let (whole, frac) = ratio(count, u64::from(n));
        defmt::info!(
            "bench kernel={=str}.L{=usize} shape={=str} form={=str} act={=str} {=str}={=u32} {=str}={=u64} per_{=str}={=u32}.{=u32:02}",
            net,
            layer,
            op,
            form,
            act,
            unit,
            n,
            cost.unit.key(),
            count,
            if matches!(work, Work::Macs(_)) { "mac" } else { "element" },
            whole,
            frac
        );
    }

    /// Fail the bench if two weight forms of a kernel disagree.
    fn same(&mut self, what: &str, a: &[i8], b: &[i8]) {
        if a != b {
            defmt::error!("{=str}: the two weight forms give different outputs", what);
            self.failed = true;
        }
    }
}

/// A stage for `n` channels from the buffers, with the table when `lut`.
fn stage(p: &Params, n: usize, lut: bool) -> OutputStage<'_> {
    OutputStage {
        multipliers: &p.multipliers[..n],
        shifts: &p.shifts[..n],
        zero_point: -3,
        clamp_min: -128,
        clamp_max: 127,
        lut: if lut { Some(&p.lut) } else { None },
    }
}

/// Pack the first `rows·cols` plain weights into the blocked buffers at
/// element `at` (even): i8, pair words (at `at/2`) and f32. Returns the
/// stored length in weights.
fn pack(b: &mut Buffers, at: usize, rows: usize, cols: usize, r: usize) -> usize {
    let len = packed_len(rows, cols, r).unwrap_or(0);
    let n = rows * cols;
    let ok = pack_rows(&b.w_plain_i8[..n], rows, cols, r, &mut b.w_i8[at..at + len]).is_ok()
        && pack_pairs(&b.w_i8[at..at + len], &mut b.w32[at / 2..(at + len) / 2]).is_ok()
        && pack_rows(
            &b.w_plain_f32[..n],
            rows,
            cols,
            r,
            &mut b.w_f32[at..at + len],
        )
        .is_ok();
    if !ok {
        defmt::panic!("pack {=usize}x{=usize} r{=usize} failed", rows, cols, r);
    }
    len
}

/// The int8 weights at `at .. at + len` (in weights) in one stored form.
fn blocked<'a>(w8: &'a [i8], w32: &'a [i32], pairs: bool, at: usize, len: usize) -> BlockedI8<'a> {
    if pairs {
        BlockedI8::Pairs(&w32[at / 2..(at + len) / 2])
    } else {
        BlockedI8::Bytes(&w8[at..at + len])
    }
}

/// The int8 weight forms there are for blocks of `r` rows: bytes, and pair
/// words for blocks of 4.
fn forms(r: usize) -> &'static [bool] {
    if r == 4 {
        &[false, true]
    } else {
        &[false]
    }
}

/// The name of a weight form: block rows, and `p` for pair words.
fn form_name(r: usize, pairs: bool) -> &'static str {
    match (r, pairs) {
        (4, false) => "r4",
        (4, true) => "r4 pairs",
        (_, false) => "r8",
        (_, true) => "r8 pairs",
    }
}

/// The dense rows: the paper MLP's shapes, both block sizes, int8 in both
/// weight forms (checked equal) and f32.
fn dense<T: TickCounter>(bench: &mut Bench<'_, T>, b: &mut Buffers) {
    const SHAPES: [(usize, usize, &str, bool); 3] = [
        (784, 100, "784x100", true),
        (100, 100, "100x100", true),
        (100, 10, "100x10", false),
    ];
    for r in [4, 8] {
        for (inputs, outputs, shape, sig) in SHAPES {
            let len = pack(b, 0, outputs, inputs, r);
            let macs = Work::Macs((inputs * outputs) as u32);
            let act = if sig { "sigmoid" } else { "none" };
            let pad = padded_rows(outputs, r).unwrap_or(0);
            for &pairs in forms(r) {
                let b = &mut *b;
                let (w, st) = (
                    blocked(&b.w_i8, &b.w32, pairs, 0, len),
                    stage(&b.p, outputs, sig),
                );
                let y = if pairs { &mut b.y2_i8 } else { &mut b.y_i8 };
                bench.row("dense_i8", shape, form_name(r, pairs), act, macs, || {
                    int8::dense_blocked_i8(
                        black_box(&b.x_i8[..inputs]),
                        w,
                        r,
                        &b.p.bias_i32[..pad],
                        inputs,
                        outputs,
                        0,
                        &st,
                        &mut y[..outputs],
                    )
                });
            }
            if r == 4 {
                bench.same("dense_i8", &b.y_i8[..outputs], &b.y2_i8[..outputs]);
            }
            let fact = if sig { Some(Activation::Sigmoid) } else { None };
            bench.row("dense_f32", shape, form_name(r, false), act, macs, || {
                kf32::dense_f32(
                    black_box(&b.x_f32[..inputs]),
                    &b.w_f32[..len],
                    r,
                    &b.p.bias_f32[..pad],
                    inputs,
                    outputs,
                    fact,
                    &mut b.y_f32[..outputs],
                )
            });
        }
    }
    // The zero point subtracted per load (a layer without ZP_FOLDED).
    let len = pack(b, 0, 100, 784, 4);
    for pairs in [false, true] {
        let b = &mut *b;
        let (w, st) = (
            blocked(&b.w_i8, &b.w32, pairs, 0, len),
            stage(&b.p, 100, true),
        );
        let y = if pairs { &mut b.y2_i8 } else { &mut b.y_i8 };
        bench.row(
            "dense_i8_zp",
            "784x100",
            form_name(4, pairs),
            "sigmoid",
            Work::Macs(78_400),
            || {
                int8::dense_blocked_i8(
                    black_box(&b.x_i8[..784]),
                    w,
                    4,
                    &b.p.bias_i32[..100],
                    784,
                    100,
                    -128,
                    &st,
                    &mut y[..100],
                )
            },
        );
    }
    bench.same("dense_i8_zp", &b.y_i8[..100], &b.y2_i8[..100]);
}

/// The whole paper MLP, 784 → 100 → 100 → 100 → 10 with sigmoid tables
/// (int8) or `math::sigmoid` (f32) in the hidden layers, as the engine
/// chains it (two buffers in turn).
fn paper_mlp<T: TickCounter>(bench: &mut Bench<'_, T>, b: &mut Buffers, r: usize) -> [i8; 10] {
    const LAYERS: [(usize, usize); 4] = PAPER_MLP;
    let mut offsets = [0usize; 5];
    for (i, &(inputs, outputs)) in LAYERS.iter().enumerate() {
        offsets[i + 1] = offsets[i] + pack(b, offsets[i], outputs, inputs, r);
    }
    let macs = Work::Macs(LAYERS.iter().map(|&(i, o)| (i * o) as u32).sum());
    let mut logits = [[0i8; 10]; 2];
    for &pairs in forms(r) {
        let b = &mut *b;
        let (x, y, y2) = (&b.x_i8, &mut b.y_i8, &mut b.y2_i8);
        let bias = &b.p.bias_i32;
        let weights: [BlockedI8<'_>; 4] = core::array::from_fn(|i| {
            if pairs {
                BlockedI8::Pairs(&b.w32[offsets[i] / 2..offsets[i + 1] / 2])
            } else {
                BlockedI8::Bytes(&b.w_i8[offsets[i]..offsets[i + 1]])
            }
        });
        let stages = [
            stage(&b.p, 100, true),
            stage(&b.p, 100, true),
            stage(&b.p, 100, true),
            stage(&b.p, 10, false),
        ];
        let mut out = [0i8; 10];
        bench.row(
            "paper_mlp_i8",
            "784-100-100-100-10",
            form_name(r, pairs),
            "sigmoid",
            macs,
            || {
                let (mut src, mut dst) = (&mut y[..], &mut y2[..]);
                src[..784].copy_from_slice(black_box(&x[..784]));
                for (i, &(inputs, outputs)) in LAYERS.iter().enumerate() {
                    int8::dense_blocked_i8(
                        &src[..inputs],
                        weights[i],
                        r,
                        &bias[..padded_rows(outputs, r)?],
                        inputs,
                        outputs,
                        0,
                        &stages[i],
                        &mut dst[..outputs],
                    )?;
                    core::mem::swap(&mut src, &mut dst);
                }
                out.copy_from_slice(&src[..10]);
                Ok(())
            },
        );
        logits[usize::from(pairs)] = out;
    }
    if r == 4 {
        bench.same("paper_mlp_i8", &logits[0], &logits[1]);
    }
    let out = logits[0];
    let (x, y) = (&b.x_f32, &mut b.y_f32);
    let (bias, w) = (&b.p.bias_f32, &b.w_f32);
    bench.row(
        "paper_mlp_f32",
        "784-100-100-100-10",
        form_name(r, false),
        "sigmoid",
        macs,
        || {
            let (src, dst) = y.split_at_mut(ACT_LEN / 2);
            let (mut src, mut dst) = (src, dst);
            src[..784].copy_from_slice(black_box(&x[..784]));
            for (i, &(inputs, outputs)) in LAYERS.iter().enumerate() {
                let act = if i < 3 {
                    Some(Activation::Sigmoid)
                } else {
                    None
                };
                kf32::dense_f32(
                    &src[..inputs],
                    &w[offsets[i]..offsets[i + 1]],
                    r,
                    &bias[..padded_rows(outputs, r)?],
                    inputs,
                    outputs,
                    act,
                    &mut dst[..outputs],
                )?;
                core::mem::swap(&mut src, &mut dst);
            }
            Ok(())
        },
    );
    out
}

/// The paper's MLP (Sec. 4.1) with BN folded: 784 → 100 → 100 → 100 → 10,
/// sigmoid in the hidden layers.
const PAPER_MLP: [(usize, usize); 4] = [(784, 100), (100, 100), (100, 100), (100, 10)];

/// Bytes for the paper MLP's model file (the f32 one is the largest,
/// about 400 KB) and the engine's arena.
const MODEL_LEN: usize = 400 * 1024;
/// The largest arena of the networks run here: DS-CNN in f32, two
/// 25×5×64 f32 activations (64,000 B) and its input.
const ARENA_LEN: usize = 80 * 1024;

/// A model file and an arena, 16-aligned as `Model::parse` and the plan want.
#[repr(C, align(16))]
struct EngineBuffers {
    model: [u8; MODEL_LEN],
    arena: [u8; ARENA_LEN],
}

static mut ENGINE: EngineBuffers = EngineBuffers {
    model: [0; MODEL_LEN],
    arena: [0; ARENA_LEN],
};

fn take_engine_buffers() -> Option<&'static mut EngineBuffers> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if !crate::take_once(&TAKEN) {
        return None;
    }
    // SAFETY: `TAKEN` makes this the only reference to `ENGINE` ever made,
    // and the pointer to a static is non-null and aligned.
    unsafe { (&raw mut ENGINE).as_mut() }
}

/// The weight form of a paper MLP file.
#[derive(Clone, Copy, PartialEq)]
enum File {
    F32,
    I8,
    Pairs,
}

/// Write the paper MLP (the blocked weights of [`paper_mlp`] at `offsets`,
/// R = 4, the bench's biases, stages and table) as a model file with
/// core's writer; its length.
fn write_paper_mlp(
    buf: &mut [u8],
    form: File,
    b: &Buffers,
    offsets: &[usize; 5],
) -> Result<usize, WriteError> {
    let int8 = form != File::F32;
    let layers = PAPER_MLP.len();
    let layer = |i: usize| {
        let (inputs, outputs) = PAPER_MLP[i];
        let hidden = i + 1 < layers;
        let rows = outputs.div_ceil(4) * 4;
        let (w0, w1) = (offsets[i], offsets[i + 1]);
        let weights = match form {
            File::F32 => Data::F32(&b.w_f32[w0..w1]),
            File::I8 => Data::I8(&b.w_i8[w0..w1]),
            File::Pairs => Data::I8Pairs(&b.w32[w0 / 2..w1 / 2]),
        };
        // Output quantization: the sigmoid table's (1/256, -128), or the
        // logits'; requantization zero point and clamps as `stage`.
        let (scale, zero_point) = if hidden {
            (1.0f32 / 256.0, -128)
        } else {
            (0.1, -3)
        };
        LayerDesc {
            op: Op::Dense(Dense { inputs, outputs }),
            activation: hidden.then_some(Activation::Sigmoid),
            zp_folded: int8,
            input: Shape::nhwc(1, 1, 1, inputs),
            output: Shape::nhwc(1, 1, 1, outputs),
            weights: Some(weights),
            block_rows: 4,
            bias: Some(if int8 {
                Data::I32(&b.p.bias_i32[..rows])
            } else {
                Data::F32(&b.p.bias_f32[..rows])
            }),
            requant: int8.then(|| (&b.p.multipliers[..outputs], &b.p.shifts[..outputs])),
            table: (int8 && hidden).then_some(&b.p.lut),
            quant: if int8 {
                QuantOut {
                    scale,
                    zero_point,
                    requant_zero_point: -3,
                    clamp_min: -128,
                    clamp_max: 127,
                    requant_scale: scale,
                }
            } else {
                QuantOut::NONE
            },
        }
    };
    let layers: [LayerDesc<'_>; 4] = core::array::from_fn(layer);
    let desc = ModelDesc {
        kind: if int8 { Kind::Int8 } else { Kind::F32 },
        input: Shape::nhwc(1, 1, 1, 784),
        classes: 10,
        input_scale: if int8 { 1.0 / 255.0 } else { 0.0 },
        input_zero_point: if int8 { -128 } else { 0 },
        pixel_scale: 1.0 / 255.0,
        layers: &layers,
        bn: &[],
    };
    write::write(&desc, buf)
}

/// The paper MLP through the engine (`Model::parse`, `Engine::run`) from a
/// model file written here: the whole inference as an application runs it
/// (dispatch, arena plan, kernels, output stages). The int8 logits must
/// equal the kernel chain's of [`paper_mlp`].
fn engine_paper_mlp<T: TickCounter>(
    bench: &mut Bench<'_, T>,
    b: &mut Buffers,
    e: &mut EngineBuffers,
    logits: &[i8; 10],
) {
    let mut offsets = [0usize; 5];
    for (i, &(inputs, outputs)) in PAPER_MLP.iter().enumerate() {
        offsets[i + 1] = offsets[i] + pack(b, offsets[i], outputs, inputs, 4);
    }
    let macs = Work::Macs(PAPER_MLP.iter().map(|&(i, o)| (i * o) as u32).sum());
    for (form, name) in [
        (File::I8, "r4"),
        (File::Pairs, "r4 pairs"),
        (File::F32, "r4"),
    ] {
        let len = match write_paper_mlp(&mut e.model, form, b, &offsets) {
            Ok(len) => len,
            Err(err) => {
                defmt::error!("paper MLP file ({=str}): {}", name, err);
                bench.failed = true;
                continue;
            }
        };
        let file = &e.model[..len];
        let parsed = bench.sw.measure(|| Model::parse(black_box(file)));
        let model = match parsed.0 {
            Ok(m) => m,
            Err(err) => {
                defmt::error!("paper MLP file ({=str}): {}", name, err);
                bench.failed = true;
                continue;
            }
        };
        let kernel = if form == File::F32 {
            "engine_paper_mlp_f32"
        } else {
            "engine_paper_mlp_i8"
        };
        bench.print(
            "model_parse",
            "784-100-100-100-10",
            name,
            "-",
            Work::Elements(len as u32),
            parsed.1,
        );
        // What the engine pays per layer per inference to decode a layer
        // record again (`Model::layer`): every layer once, per layer.
        let layers = model.layer_count();
        let decoded = bench.sw.measure(|| {
            (0..layers).try_for_each(|i| black_box(model.layer(black_box(i))).map(|_| ()))
        });
        if decoded.0.is_err() {
            defmt::error!("paper MLP file ({=str}): a layer no longer decodes", name);
            bench.failed = true;
        }
        bench.print(
            "model_layer",
            "784-100-100-100-10",
            name,
            "-",
            Work::Elements(layers as u32),
            decoded.1,
        );
        // A build for one kind of model (firmware features `f32`, `int8`)
        // parses both files but runs only its own.
        if !engine::supports(model.kind()) {
            defmt::info!(
                "{=str} ({=str}): skipped: this build's engine does not run the model's kind",
                kernel,
                name
            );
            continue;
        }
        let Ok(mut engine) = Engine::new(&model, &mut e.arena) else {
            bench.failed = true;
            continue;
        };
        let ok = match form {
            File::F32 => engine
                .input_f32()
                .map(|x| x.copy_from_slice(&b.x_f32[..784])),
            _ => engine.input_i8().map(|x| x.copy_from_slice(&b.x_i8[..784])),
        };
        if ok.is_err() {
            bench.failed = true;
            continue;
        }
        let eng = &mut engine;
        let (out, cost) = bench.sw.measure(move || {
            eng.run().map(|o| match o {
                Output::I8 { values, .. } => values.first_chunk::<10>().copied(),
                Output::F32(_) => None,
            })
        });
        match out {
            Ok(levels) => {
                bench.print(kernel, "784-100-100-100-10", name, "sigmoid", macs, cost);
                if let Some(levels) = levels {
                    bench.same(kernel, &levels, logits);
                }
            }
            Err(err) => {
                defmt::error!("engine ({=str}): {}", name, err);
                bench.failed = true;
            }
        }
    }
}

/// One layer of a whole network (`networks`): every conv and depthwise
/// layer is followed by (folded) BN and ReLU, the last dense layer gives
/// the logits.
#[derive(Clone, Copy)]
enum Net {
    /// Convolution: kernel `(h, w)`, stride `(h, w)`, padding, filters.
    Conv((usize, usize), (usize, usize), Padding, usize),
    /// Depthwise 3×3, stride 1, padding 1 ("same").
    Dw3,
    /// Max pooling 2×2, stride 2.
    MaxPool2,
    /// Global average pooling.
    Gap,
    /// Dense, no activation: the logits.
    Dense(usize),
}

/// The trainer's `cnn` preset (host-trainer/src/spec.rs) with BN folded:
/// 28×28×1, conv 5×5 16 (valid) – ReLU – max pool 2 – conv 5×5 32 (valid)
/// – ReLU – max pool 2 – dense 10.
const CNN: (&str, (usize, usize, usize), &[Net]) = (
    "cnn",
    (28, 28, 1),
    &[
        Net::Conv((5, 5), (1, 1), Padding::NONE, 16),
        Net::MaxPool2,
        Net::Conv((5, 5), (1, 1), Padding::NONE, 32),
        Net::MaxPool2,
        Net::Dense(10),
    ],
);

/// MLPerf Tiny's keyword-spotting DS-CNN shape with BN folded: 49×10×1,
/// conv 10×4 stride 2 "same" (padding 4/5 rows, 1/1 columns: 25×5) with
/// 64 channels, four blocks of depthwise 3×3 + pointwise 1×1 with 64
/// channels (each with ReLU), global average pooling, dense 12.
const DS_CNN: (&str, (usize, usize, usize), &[Net]) = (
    "ds_cnn",
    (49, 10, 1),
    &[
        Net::Conv(
            (10, 4),
            (2, 2),
            Padding {
                top: 4,
                bottom: 5,
                left: 1,
                right: 1,
            },
            64,
        ),
        Net::Dw3,
        Net::Conv((1, 1), (1, 1), Padding::NONE, 64),
        Net::Dw3,
        Net::Conv((1, 1), (1, 1), Padding::NONE, 64),
        Net::Dw3,
        Net::Conv((1, 1), (1, 1), Padding::NONE, 64),
        Net::Dw3,
        Net::Conv((1, 1), (1, 1), Padding::NONE, 64),
        Net::Gap,
        Net::Dense(12),
    ],
);

/// Most layers of a network here.
const NET_LAYERS: usize = 12;

/// The int8 weight form `normcore export --weights auto` picks for a
/// dense or conv layer (blocks of 4 rows): core's rule,
/// `int8::pairs_faster`, as host-trainer's `pairs_pay` applies it.
fn auto_pairs(op: &Op) -> bool {
    match op {
        Op::Dense(d) => int8::pairs_faster(1, 1, d.inputs),
        Op::Conv(c) => int8::pairs_faster(c.window.kernel_h, c.window.kernel_w, c.in_c),
        _ => false,
    }
}

/// The ops and shapes of `net` on an `input` (h, w, c) sample: `(op,
/// input, output)` per layer. The shapes are constants: a geometry that
/// does not build is a bug here (panic).
fn net_ops(input: (usize, usize, usize), net: &[Net]) -> [(Op, Shape, Shape); NET_LAYERS] {
    let mut ops = [(
        Op::GlobalAvgPool,
        Shape::nhwc(1, 1, 1, 1),
        Shape::nhwc(1, 1, 1, 1),
    ); NET_LAYERS];
    let (mut h, mut w, mut c) = input;
    for (slot, layer) in ops.iter_mut().zip(net) {
        let op = match *layer {
            Net::Conv((kh, kw), (sh, sw), padding, out_c) => {
                let win = Window {
                    kernel_h: kh,
                    kernel_w: kw,
                    stride_h: sh,
                    stride_w: sw,
                    padding,
                };
                Conv2d::new(h, w, c, out_c, win).map(Op::Conv)
            }
            Net::Dw3 => DepthwiseConv2d::new(h, w, c, Window::square(3, 1, 1)).map(Op::Depthwise),
            Net::MaxPool2 => {
                Pool2d::new(PoolKind::Max, h, w, c, Window::square(2, 2, 0)).map(Op::Pool)
            }
            Net::Gap => Ok(Op::GlobalAvgPool),
            Net::Dense(n) => Ok(Op::Dense(Dense {
                inputs: h * w * c,
                outputs: n,
            })),
        };
        let Ok(op) = op else {
            defmt::panic!("bad network geometry");
        };
        let out = match op {
            Op::Conv(g) => g.output_shape(1),
            Op::Depthwise(g) => g.output_shape(1),
            Op::Pool(g) => g.output_shape(1),
            Op::GlobalAvgPool => Ok(Shape::nhwc(1, 1, 1, c)),
            _ => Ok(Shape::nhwc(1, 1, 1, op.out_channels())),
        };
        let Ok(out) = out else {
            defmt::panic!("bad network geometry");
        };
        *slot = (op, Shape::nhwc(1, h, w, c), out);
        (h, w, c) = (out.h, out.w, out.c);
    }
    ops
}

/// Write `net` as a model file of `kind` into `buf` with core's writer:
/// deterministic pseudo-random weights from the bench's buffers (dense and
/// conv row-blocked by 4, int8 in the `auto` form: pair words where the
/// runs are long), the bench's biases, multipliers and shifts; every
/// activation at scale 1/64, zero point -128. Returns the file's length.
fn write_net(
    buf: &mut [u8],
    int8: bool,
    b: &mut Buffers,
    input: (usize, usize, usize),
    net: &[Net],
) -> Result<usize, WriteError> {
    let ops = net_ops(input, net);
    let n = net.len();
    // Pack each weighted layer's weights at its own offset (all forms).
    let mut at = [(0usize, 0usize); NET_LAYERS];
    let mut next = 0;
    for (i, &(op, _, _)) in ops.iter().enumerate().take(n) {
        let len = match op {
            Op::Conv(c) => pack(
                b,
                next,
                c.out_c,
                c.window.kernel_h * c.window.kernel_w * c.in_c,
                4,
            ),
            Op::Dense(d) => pack(b, next, d.outputs, d.inputs, 4),
            Op::Depthwise(d) => {
                let len = 9 * d.channels;
                b.w_i8[next..next + len].copy_from_slice(&b.w_plain_i8[..len]);
                b.w_f32[next..next + len].copy_from_slice(&b.w_plain_f32[..len]);
                len
            }
            _ => 0,
        };
        at[i] = (next, len);
        next += len.div_ceil(4) * 4;
    }
    let b = &*b;
    let act_scale = 1.0f32 / 64.0;
    let layer = |i: usize| {
        let (op, input, output) = ops[i];
        let (w0, len) = at[i];
        let last = i + 1 == n;
        let channels = op.out_channels();
        let weights = match op {
            Op::Conv(_) | Op::Dense(_) | Op::Depthwise(_) => Some(if !int8 {
                Data::F32(&b.w_f32[w0..w0 + len])
            } else if auto_pairs(&op) {
                Data::I8Pairs(&b.w32[w0 / 2..(w0 + len) / 2])
            } else {
                Data::I8(&b.w_i8[w0..w0 + len])
            }),
            _ => None,
        };
        let weighted = weights.is_some();
        let rows = if op.is_blocked() {
            channels.div_ceil(4) * 4
        } else {
            channels
        };
        let (scale, zp) = if last { (0.1, -3) } else { (act_scale, -128) };
        LayerDesc {
            op,
            activation: (weighted && !last).then_some(Activation::Relu),
            // The exporter folds the zero point wherever no tap is padding.
            zp_folded: int8
                && op.is_blocked()
                && op.window().is_none_or(|w| w.padding == Padding::NONE),
            input,
            output,
            weights,
            block_rows: if op.is_blocked() { 4 } else { 0 },
            bias: weighted.then(|| {
                if int8 {
                    Data::I32(&b.p.bias_i32[..rows])
                } else {
                    Data::F32(&b.p.bias_f32[..rows])
                }
            }),
            requant: (int8 && weighted)
                .then(|| (&b.p.multipliers[..channels], &b.p.shifts[..channels])),
            table: None,
            quant: if int8 {
                QuantOut {
                    scale,
                    zero_point: zp,
                    requant_zero_point: zp,
                    clamp_min: -128,
                    clamp_max: 127,
                    requant_scale: if weighted { scale } else { 0.0 },
                }
            } else {
                QuantOut::NONE
            },
        }
    };
    let layers: [LayerDesc<'_>; NET_LAYERS] = core::array::from_fn(|i| layer(i.min(n - 1)));
    let classes = ops[n - 1].2.c;
    let desc = ModelDesc {
        kind: if int8 { Kind::Int8 } else { Kind::F32 },
        input: Shape::nhwc(1, input.0, input.1, input.2),
        classes,
        input_scale: if int8 { 1.0 / 255.0 } else { 0.0 },
        input_zero_point: if int8 { -128 } else { 0 },
        pixel_scale: 1.0 / 255.0,
        layers: &layers[..n],
        bn: &[],
    };
    write::write(&desc, buf)
}

/// Whole-network rows: the `cnn` preset and DS-CNN, int8 (`auto` weight
/// form) and f32, each written here as a model file (core's writer,
/// deterministic weights), parsed and run through the engine: one row per
/// inference (`net_cnn_i8`, ...: instructions per inference and per MAC),
/// one per layer (`net_cnn_i8.L0`, ...; pooling per input element), and a
/// `bench network=` line with the file and arena bytes (which `cargo xtask
/// bench firmware` checks against each board's memory).
fn networks<T: TickCounter>(bench: &mut Bench<'_, T>, b: &mut Buffers, e: &mut EngineBuffers) {
    for (name, input, net) in [CNN, DS_CNN] {
        for int8 in [true, false] {
            let kernel = match (name, int8) {
                ("cnn", true) => "net_cnn_i8",
                ("cnn", false) => "net_cnn_f32",
                (_, true) => "net_ds_cnn_i8",
                _ => "net_ds_cnn_f32",
            };
            let form = if int8 { "auto" } else { "r4" };
            let len = match write_net(&mut e.model, int8, b, input, net) {
                Ok(len) => len,
                Err(err) => {
                    defmt::error!("{=str} file: {}", kernel, err);
                    bench.failed = true;
                    continue;
                }
            };
            let Ok(model) = Model::parse(&e.model[..len]) else {
                defmt::error!("{=str}: the file does not parse", kernel);
                bench.failed = true;
                continue;
            };
            let arena = model.header().arena_bytes;
            defmt::info!(
                "bench network={=str} file={=usize} arena={=usize}",
                kernel,
                len,
                arena
            );
            if !engine::supports(model.kind()) {
                defmt::info!(
                    "{=str}: skipped: this build's engine does not run the model's kind",
                    kernel
                );
                continue;
            }
            let macs: usize = (0..model.layer_count())
                .filter_map(|i| model.layer(i).ok())
                .map(|l| l.op.macs(l.output))
                .sum();
            let Ok(mut engine) = Engine::new(&model, &mut e.arena) else {
                defmt::error!("{=str}: the arena ({=usize} B) is too small", kernel, arena);
                bench.failed = true;
                continue;
            };
            let pixels = input.0 * input.1 * input.2;
            let write_input =
                |engine: &mut Engine<'_, '_, '_>| -> Result<(), normcore::model::ModelError> {
                    if int8 {
                        engine
                            .input_i8()
                            .map(|x| x.copy_from_slice(&b.x_i8[..pixels]))
                    } else {
                        engine
                            .input_f32()
                            .map(|x| x.copy_from_slice(&b.x_f32[..pixels]))
                    }
                };
            if write_input(&mut engine).is_err() {
                bench.failed = true;
                continue;
            }
            let eng = &mut engine;
            let (out, cost) = bench.sw.measure(move || eng.run().map(|_| ()));
            if let Err(err) = out {
                defmt::error!("{=str}: {}", kernel, err);
                bench.failed = true;
                continue;
            }
            let shape = if name == "cnn" { "28x28x1" } else { "49x10x1" };
            bench.print(kernel, shape, form, "relu", Work::Macs(macs as u32), cost);
            // Layer by layer (the counter read last thing when a layer
            // starts and first thing when it ends, as `infer` does).
            let mut ticks = [0u32; NET_LAYERS];
            let sw = bench.sw;
            if write_input(&mut engine).is_err() {
                bench.failed = true;
                continue;
            }
            let mut start = sw.stamp();
            let observed = engine.run_observed(|i, event| match event {
                engine::Event::Start => start = sw.stamp(),
                engine::Event::End => {
                    let end = sw.stamp();
                    if let Some(t) = ticks.get_mut(i) {
                        *t = sw.between(start, end).count;
                    }
                }
            });
            if observed.is_err() {
                bench.failed = true;
                continue;
            }
            for (i, &count) in ticks.iter().enumerate().take(model.layer_count()) {
                let Ok(l) = model.layer(i) else { continue };
                let lform = match l.weights {
                    Some(Data::I8Pairs(_)) => "r4 pairs",
                    Some(Data::I8(_) | Data::F32(_)) if l.op.is_blocked() => "r4",
                    Some(_) => "plain",
                    None => "-",
                };
                let work = match l.op.macs(l.output) {
                    0 => Work::Elements(l.input.len().unwrap_or(0) as u32),
                    m => Work::Macs(m as u32),
                };
                let act = if l.activation.is_some() {
                    "relu"
                } else {
                    "none"
                };
                let layer_cost = Cost { count, ..cost };
                bench.print_layer(kernel, i, l.op.name(), lform, act, work, layer_cost);
            }
        }
    }
}

/// The convolution rows: 5×5 without padding (zero point folded), 3×3
/// with padding (zero point per load), and a depthwise 3×3.
fn conv<T: TickCounter>(bench: &mut Bench<'_, T>, b: &mut Buffers) {
    // (in h, in w, in c, out c, kernel, pad, shape)
    const SHAPES: [(usize, usize, usize, usize, usize, usize, &str); 3] = [
        (28, 28, 1, 16, 5, 0, "28x28x1-5x5-16"),
        (12, 12, 16, 32, 5, 0, "12x12x16-5x5-32"),
        (12, 12, 16, 32, 3, 1, "12x12x16-3x3p1-32"),
    ];
    for (h, w, cin, cout, k, p, shape) in SHAPES {
        let Ok(geom) = Conv2d::new(h, w, cin, cout, Window::square(k, 1, p)) else {
            defmt::panic!("bad conv geometry {=str}", shape);
        };
        let Ok(out) = geom.output_shape(1) else {
            defmt::panic!("bad geometry")
        };
        let patch = k * k * cin;
        let macs = Work::Macs((out.h * out.w * cout * patch) as u32);
        let (n_in, n_out) = (h * w * cin, out.h * out.w * cout);
        let zp = if p == 0 { 0 } else { -128 };
        // int8: bytes in blocks of 8 and of 4, pairs (blocks of 4); f32: 8.
        for (r, pairs) in [(8, false), (4, false), (4, true)] {
            let len = pack(b, 0, cout, patch, r);
            let b = &mut *b;
            let (w, st) = (
                blocked(&b.w_i8, &b.w32, pairs, 0, len),
                stage(&b.p, cout, false),
            );
            let y = if pairs { &mut b.y2_i8 } else { &mut b.y_i8 };
            bench.row(
                "conv2d_i8",
                shape,
                form_name(r, pairs),
                "none",
                macs,
                || {
                    int8::conv2d_blocked_i8(
                        &geom,
                        black_box(&b.x_i8[..n_in]),
                        w,
                        r,
                        &b.p.bias_i32[..padded_rows(cout, r).unwrap_or(0)],
                        zp,
                        p == 0,
                        &st,
                        &mut y[..n_out],
                    )
                },
            );
        }
        bench.same("conv2d_i8", &b.y_i8[..n_out], &b.y2_i8[..n_out]);
        let len = pack(b, 0, cout, patch, 8);
        bench.row(
            "conv2d_f32",
            shape,
            form_name(8, false),
            "none",
            macs,
            || {
                kf32::conv2d_f32(
                    &geom,
                    black_box(&b.x_f32[..n_in]),
                    &b.w_f32[..len],
                    8,
                    &b.p.bias_f32[..cout],
                    None,
                    &mut b.y_f32[..n_out],
                )
            },
        );
    }

    let Ok(dw) = DepthwiseConv2d::new(12, 12, 32, Window::square(3, 1, 1)) else {
        defmt::panic!("bad geometry")
    };
    let macs = Work::Macs(12 * 12 * 32 * 9);
    let n = 12 * 12 * 32;
    let b = &mut *b;
    let st = stage(&b.p, 32, false);
    bench.row(
        "depthwise_i8",
        "12x12x32-3x3p1",
        "plain",
        "none",
        macs,
        || {
            int8::depthwise_i8(
                &dw,
                black_box(&b.x_i8[..n]),
                &b.w_plain_i8[..9 * 32],
                &b.p.bias_i32[..32],
                -5,
                &st,
                &mut b.y_i8[..n],
            )
        },
    );
    bench.row(
        "depthwise_f32",
        "12x12x32-3x3p1",
        "plain",
        "none",
        macs,
        || {
            kf32::depthwise_f32(
                &dw,
                black_box(&b.x_f32[..n]),
                &b.w_plain_f32[..9 * 32],
                &b.p.bias_f32[..32],
                None,
                &mut b.y_f32[..n],
            )
        },
    );
}

/// Where the pair form starts to pay: int8 dense layers of 32 outputs over
/// short inputs, and 3×3 convolutions (unpadded, zero point folded) whose
/// kernel rows are short runs of `3·Cin` inputs, in both weight forms
/// (blocks of 4). The shapes name the run length the inner loop sees
/// (`run=`): the whole input for dense, `KW·Cin` for a convolution. This
/// is what `normcore export --weights auto` decides by.
fn crossover<T: TickCounter>(bench: &mut Bench<'_, T>, b: &mut Buffers) {
    const RUNS: [(usize, &str); 6] = [
        (8, "run=8 8x32"),
        (16, "run=16 16x32"),
        (24, "run=24 24x32"),
        (32, "run=32 32x32"),
        (48, "run=48 48x32"),
        (64, "run=64 64x32"),
    ];
    for (inputs, shape) in RUNS {
        let len = pack(b, 0, 32, inputs, 4);
        let macs = Work::Macs((inputs * 32) as u32);
        for pairs in [false, true] {
            let b = &mut *b;
            let (w, st) = (
                blocked(&b.w_i8, &b.w32, pairs, 0, len),
                stage(&b.p, 32, false),
            );
            let y = if pairs { &mut b.y2_i8 } else { &mut b.y_i8 };
            bench.row("dense_i8", shape, form_name(4, pairs), "none", macs, || {
                int8::dense_blocked_i8(
                    black_box(&b.x_i8[..inputs]),
                    w,
                    4,
                    &b.p.bias_i32[..32],
                    inputs,
                    32,
                    0,
                    &st,
                    &mut y[..32],
                )
            });
        }
        bench.same("dense_i8", &b.y_i8[..32], &b.y2_i8[..32]);
    }
    const CONVS: [(usize, &str); 4] = [
        (2, "run=6 12x12x2-3x3-16"),
        (4, "run=12 12x12x4-3x3-16"),
        (8, "run=24 12x12x8-3x3-16"),
        (16, "run=48 12x12x16-3x3-16"),
    ];
    for (cin, shape) in CONVS {
        let Ok(geom) = Conv2d::new(12, 12, cin, 16, Window::square(3, 1, 0)) else {
            defmt::panic!("bad geometry")
        };
        let (n_in, n_out) = (12 * 12 * cin, 10 * 10 * 16);
        let macs = Work::Macs((n_out * 9 * cin) as u32);
        let len = pack(b, 0, 16, 9 * cin, 4);
        for pairs in [false, true] {
            let b = &mut *b;
            let (w, st) = (
                blocked(&b.w_i8, &b.w32, pairs, 0, len),
                stage(&b.p, 16, false),
            );
            let y = if pairs { &mut b.y2_i8 } else { &mut b.y_i8 };
            bench.row(
                "conv2d_i8",
                shape,
                form_name(4, pairs),
                "none",
                macs,
                || {
                    int8::conv2d_blocked_i8(
                        &geom,
                        black_box(&b.x_i8[..n_in]),
                        w,
                        4,
                        &b.p.bias_i32[..16],
                        0,
                        true,
                        &st,
                        &mut y[..n_out],
                    )
                },
            );
        }
        bench.same("conv2d_i8", &b.y_i8[..n_out], &b.y2_i8[..n_out]);
    }
}

/// Pooling and element-wise rows; `elements` counts input values read.
fn pools<T: TickCounter>(bench: &mut Bench<'_, T>, b: &mut Buffers) {
    let n = 24 * 24 * 16;
    for (kind, name_i8, name_f32) in [
        (PoolKind::Max, "max_pool_i8", "max_pool_f32"),
        (PoolKind::Average, "avg_pool_i8", "avg_pool_f32"),
    ] {
        let Ok(p) = Pool2d::new(kind, 24, 24, 16, Window::square(2, 2, 0)) else {
            defmt::panic!("bad geometry")
        };
        let e = Work::Elements(n as u32);
        let out = 12 * 12 * 16;
        bench.row(name_i8, "24x24x16-2x2s2", "-", "-", e, || {
            int8::pool_i8(&p, black_box(&b.x_i8[..n]), &mut b.y_i8[..out])
        });
        bench.row(name_f32, "24x24x16-2x2s2", "-", "-", e, || {
            kf32::pool_f32(&p, black_box(&b.x_f32[..n]), &mut b.y_f32[..out])
        });
    }
    let e = Work::Elements(8 * 8 * 32);
    bench.row("global_avg_pool_i8", "8x8x32", "-", "-", e, || {
        int8::global_avg_pool_i8(8, 8, 32, black_box(&b.x_i8[..2048]), &mut b.y_i8[..32])
    });
    bench.row("global_avg_pool_f32", "8x8x32", "-", "-", e, || {
        kf32::global_avg_pool_f32(8, 8, 32, black_box(&b.x_f32[..2048]), &mut b.y_f32[..32])
    });
    let e = Work::Elements(1024);
    bench.row("relu_i8", "1024", "-", "relu", e, || {
        int8::relu_i8(black_box(&b.x_i8[..1024]), &mut b.y_i8[..1024], -3, 127)
    });
    bench.row("lut_i8", "1024", "-", "sigmoid", e, || {
        int8::lut_i8(&b.p.lut, black_box(&b.x_i8[..1024]), &mut b.y_i8[..1024])
    });
    bench.row("sigmoid_f32", "1024", "-", "sigmoid", e, || {
        kf32::activation_f32(
            Activation::Sigmoid,
            black_box(&b.x_f32[..1024]),
            &mut b.y_f32[..1024],
        )
    });
    // Elementary functions one value at a time.
    let (x, y) = b.y_f32.split_at_mut(1024);
    elementary(bench, &mut x[..1024], &mut y[..1024]);
    // Requantization alone: one output channel per accumulator.
    let st = stage(&b.p, 1, false);
    bench.row("requant", "1024", "-", "none", e, || {
        for (o, &a) in b.y_i8[..1024].iter_mut().zip(black_box(&b.p.acc[..])) {
            *o = st.apply(0, a);
        }
        Ok(())
    });
}

/// Elementary functions one value at a time (through a function pointer,
/// as the engine's activation loop calls them) on `x.len()` points of
/// `[-8, 8)`: core's, libm's and micromath's `exp`, sigmoid, `tanh`,
/// `sqrt`, `1/sqrt` and `ln`, written to `y` (same length). The micromath
/// rows are the candidates DESIGN.md asks to measure before use; positive
/// arguments for sqrt, 1/sqrt and ln.
pub(crate) fn elementary<T: TickCounter>(bench: &mut Bench<'_, T>, x: &mut [f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let half = n as f32 / 2.0;
    let step = n as f32 / 16.0;
    for (i, v) in x[..n].iter_mut().enumerate() {
        *v = (i as f32 - half) / step;
    }
    type Func = (&'static str, &'static str, fn(f32) -> f32);
    use micromath::F32Ext;
    let funcs: [Func; 13] = [
        ("exp", "core", normcore::math::exp),
        ("exp", "libm", libm::expf),
        ("exp", "micromath", |x| F32Ext::exp(x)),
        ("sigmoid", "core", normcore::math::sigmoid),
        ("sigmoid", "micromath", |x| 1.0 / (1.0 + F32Ext::exp(-x))),
        ("tanh", "libm", |x| Activation::Tanh.apply(x)),
        ("tanh", "micromath", |x| {
            let e = F32Ext::exp(2.0 * x);
            (e - 1.0) / (e + 1.0)
        }),
        ("sqrt", "libm", |x| libm::sqrtf(x.abs() + 1e-3)),
        ("sqrt", "micromath", |x| F32Ext::sqrt(x.abs() + 1e-3)),
        ("invsqrt", "libm", |x| 1.0 / libm::sqrtf(x.abs() + 1e-3)),
        ("invsqrt", "micromath", |x| F32Ext::invsqrt(x.abs() + 1e-3)),
        ("ln", "libm", |x| libm::logf(x.abs() + 1e-3)),
        ("ln", "micromath", |x| F32Ext::ln(x.abs() + 1e-3)),
    ];
    let e = Work::Elements(n as u32);
    for (name, form, f) in funcs {
        let f = black_box(f);
        bench.row(name, "1024", form, "-", e, || {
            for (o, &v) in y[..n].iter_mut().zip(black_box(&x[..n])) {
                *o = f(v);
            }
            Ok(())
        });
    }
}

/// The `bench` program; ends through `B::exit`, with failure if two forms
/// of a kernel disagree.
pub fn main<B: Board>() -> ! {
    // SAFETY: no heap, and nothing else lives below the stack pointer.
    let painted = unsafe { stack::paint() };
    defmt::info!("normcore-firmware bench on {=str}", B::NAME);
    let Some(mut parts) = B::take() else {
        defmt::error!("peripherals already taken");
        B::exit(false)
    };
    let sw = Stopwatch::new(&mut parts.core.DCB, parts.core.DWT, parts.timer);
    sw.log_unit();
    let Some(b) = take_buffers() else {
        defmt::error!("buffers already taken");
        B::exit(false)
    };
    fill(b);
    let mut bench = Bench {
        sw: &sw,
        failed: false,
    };
    dense(&mut bench, b);
    let logits = paper_mlp(&mut bench, b, 4);
    paper_mlp(&mut bench, b, 8);
    let Some(e) = take_engine_buffers() else {
        defmt::error!("engine buffers already taken");
        B::exit(false)
    };
    engine_paper_mlp(&mut bench, b, e, &logits);
    defmt::info!(
        "sizes: model={=usize} layer={=usize} (bytes of a parsed Model and of one of its Layers)",
        core::mem::size_of::<Model<'_>>(),
        core::mem::size_of::<normcore::model::Layer<'_>>()
    );
    networks(&mut bench, b, e);
    conv(&mut bench, b);
    crossover(&mut bench, b);
    pools(&mut bench, b);
    defmt::info!(
        "stack: high_water={=usize} size={=usize} (bytes)",
        painted.high_water(),
        painted.size()
    );
    B::exit(!bench.failed)
}
