//! Runs the embedded models on the embedded test samples and reports what
//! the host needs to check the device against its own engine: every
//! sample's prediction and exact logits, a digest of all outputs, the
//! accuracy, the cost of each layer and of a whole inference, and the stack
//! high-water mark.
//!
//! The assets (`cargo xtask assets`: `model-f32.ncm`, `model-int8.ncm`,
//! `samples.bin`) are compiled in by `build.rs`; the models are parsed and
//! validated by `Model::parse` at start-up. For each model and sample:
//! 1. the input is written into the arena and one inference is timed as a
//!    whole (`Engine::run`): the per-inference cost;
//! 2. the input is written again and the inference repeated with
//!    `Engine::run_observed`, reading the counter when each layer starts
//!    and ends: the per-layer costs. Both runs must give the same outputs.
//!
//! Costs are in instructions under QEMU's `-icount shift=6` (timer ticks /
//! 1.6; `NORMCORE_ICOUNT=1`), in cycles on hardware with DWT. Without
//! `-icount` the QEMU figures are meaningless.
//!
//! Output lines (decoded defmt; the host test parses them):
//! ```text
//! sample 3 label=7 f32 class=7 bits=[0x4123abcd, ...]
//! sample 3 label=7 int8 class=7 q=[-12, 5, ...]
//! f32 result: correct=63 total=64 digest=0x1f099dd9
//! f32 host parity: identical=64 within_tolerance=64 argmax_equal=64 total=64
//! f32 layer 0 op=dense act=relu macs=2048 instructions=9000 per_mac=4.39
//! f32 inference: macs=3392 instructions=15000 layers=14800 per_mac=4.42 samples=64
//! ```
//! It exits with failure if a model does not parse, or if the device's
//! outputs differ from the host engine's expected ones that `samples.bin`
//! carries (int8: any difference; f32: beyond 1e-5 or another class).
//!
//! A build with one kind of model (`--no-default-features --features int8`
//! or `f32`: the engine has no code for the other kind) still parses and
//! checks both files, and runs only the one it supports; for the other it
//! logs `f32: skipped: ...` (or `int8: ...`).
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use heapless::{Vec, VecView};
use normcore::engine::{self, Engine, Event, Output};
use normcore::layers::Activation;
use normcore::model::{Kind, Model, ModelError, MAX_LAYERS};
use normcore_firmware::board::active::{self as board, Board};
use normcore_firmware::cost::{icount_instructions, Stopwatch, TickCounter, Unit};
use normcore_firmware::digest::Crc32;
use normcore_firmware::{exit, stack};

/// The generated assets (see `build.rs`).
#[allow(clippy::unreadable_literal, clippy::large_const_arrays)]
mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}
use assets::*;

/// f32 logits may differ from the host's by this much (relative above 1):
/// the same kernels in the same order make them bit-identical in practice.
const F32_TOLERANCE: f32 = 1e-5;

/// What one model did over all samples.
struct Report {
    /// Correct predictions.
    correct: usize,
    /// Outputs equal to the host's (int8: exactly; f32: bit for bit).
    identical: usize,
    /// f32 outputs within [`F32_TOLERANCE`] of the host's (int8: identical).
    within: usize,
    /// Same predicted class as the host.
    argmax_equal: usize,
    /// CRC-32 of all outputs.
    digest: u32,
    /// Counter units per layer, in execution order, summed over samples:
    /// a fixed-capacity list as long as the model (the format allows at
    /// most `MAX_LAYERS` layers; a slot per layer, so no separate count).
    layer_ticks: Vec<u64, MAX_LAYERS>,
    /// Counter units of whole inferences, summed over samples.
    total_ticks: u64,
}

/// A zero for each layer of `model` in `ticks` (a view: one copy of this
/// code whatever the capacity); more layers than it holds end the program.
fn one_slot_per_layer(model: &Model<'_>, ticks: &mut VecView<u64>) {
    if ticks.resize(model.layer_count(), 0).is_err() {
        defmt::error!("more than {=usize} layers", ticks.capacity());
        exit(false)
    }
}

fn activation_name(a: Option<Activation>) -> &'static str {
    match a {
        None => "none",
        Some(Activation::Relu) => "relu",
        Some(Activation::Relu6) => "relu6",
        Some(Activation::Sigmoid) => "sigmoid",
        Some(Activation::Tanh) => "tanh",
    }
}

/// One sample's logits, copied out of the arena.
#[derive(Clone, Copy)]
enum Logits {
    I8([i8; CLASSES]),
    F32([f32; CLASSES]),
}

impl Logits {
    fn of(out: &Output<'_>) -> Option<Self> {
        match *out {
            Output::I8 { values, .. } => Some(Logits::I8(values.try_into().ok()?)),
            Output::F32(values) => Some(Logits::F32(values.try_into().ok()?)),
        }
    }

    /// Bitwise equality (f32 `==` would call -0 and 0 equal).
    fn same_bits(&self, other: &Self) -> bool {
        match (self, other) {
            (Logits::I8(a), Logits::I8(b)) => a == b,
            (Logits::F32(a), Logits::F32(b)) => {
                a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
            }
            _ => false,
        }
    }

    fn argmax(&self) -> usize {
        match self {
            Logits::I8(v) => Output::I8 {
                values: v,
                scale: 1.0,
                zero_point: 0,
            }
            .argmax(),
            Logits::F32(v) => Output::F32(v).argmax(),
        }
    }
}

/// The host engine's logits for sample `s`, from `samples.bin`.
fn expected(kind: Kind, s: usize) -> Logits {
    match kind {
        Kind::Int8 => Logits::I8(NORMCORE_SAMPLES_EXPECTED_I8[s]),
        Kind::F32 => Logits::F32(NORMCORE_SAMPLES_EXPECTED_F32[s].map(f32::from_bits)),
    }
}

fn write_input(engine: &mut Engine<'_, '_, '_>, kind: Kind, s: usize) -> Result<(), ModelError> {
    match kind {
        Kind::Int8 => engine.input_i8()?.copy_from_slice(&NORMCORE_SAMPLES_I8[s]),
        Kind::F32 => engine
            .input_f32()?
            .copy_from_slice(&NORMCORE_SAMPLES_F32[s]),
    }
    Ok(())
}

/// Run `model` on every sample, printing each result; see the module docs.
/// The results go into `report` (new, a slot per layer), which stays
/// where the caller has it: it holds the per-layer table, and every move
/// would be another copy on the stack.
fn evaluate<T: TickCounter>(
    name: &str,
    model: &Model<'_>,
    arena: &mut [u8],
    sw: &Stopwatch<T>,
    report: &mut Report,
) -> Result<(), ModelError> {
    let kind = model.kind();
    let mut engine = Engine::new(model, arena)?;
    let mut crc = Crc32::new();
    for (s, &label) in NORMCORE_SAMPLES_LABELS.iter().enumerate() {
        // 1. The whole inference.
        write_input(&mut engine, kind, s)?;
        let e = &mut engine;
        let (out, cost) = sw.measure(move || e.run());
        let logits = Logits::of(&out?).ok_or(ModelError::WrongKind)?;
        report.total_ticks += u64::from(cost.count);

        // 2. Layer by layer. The observer reads the counter last thing when
        // a layer starts and first thing when it ends.
        write_input(&mut engine, kind, s)?;
        let mut start = sw.stamp();
        let ticks = &mut report.layer_ticks;
        let again = engine.run_observed(|layer, event| match event {
            Event::Start => start = sw.stamp(),
            Event::End => {
                let end = sw.stamp();
                if let Some(t) = ticks.get_mut(layer) {
                    *t += u64::from(sw.between(start, end).count);
                }
            }
        })?;
        if !Logits::of(&again).is_some_and(|l| l.same_bits(&logits)) {
            defmt::error!(
                "{=str}: sample {=usize} gave different outputs on a second run",
                name,
                s
            );
            exit(false)
        }

        let class = logits.argmax();
        report.correct += usize::from(class == usize::from(label));
        let host = expected(kind, s);
        report.argmax_equal += usize::from(class == host.argmax());
        if logits.same_bits(&host) {
            report.identical += 1;
        }
        match logits {
            Logits::I8(q) => {
                crc.update(&q.map(|v| v as u8));
                report.within += usize::from(logits.same_bits(&host));
                defmt::info!(
                    "sample {=usize} label={=u16} int8 class={=usize} q={=[?]}",
                    s,
                    label,
                    class,
                    q
                );
            }
            Logits::F32(v) => {
                let bits = v.map(f32::to_bits);
                for b in bits {
                    crc.update(&b.to_le_bytes());
                }
                if let Logits::F32(h) = host {
                    let close = v
                        .iter()
                        .zip(&h)
                        .all(|(d, h)| (d - h).abs() <= F32_TOLERANCE * h.abs().max(1.0));
                    report.within += usize::from(close);
                }
                defmt::info!(
                    "sample {=usize} label={=u16} f32 class={=usize} bits={=[?]:#010x}",
                    s,
                    label,
                    class,
                    bits
                );
            }
        }
    }
    report.digest = crc.value();
    Ok(())
}

/// `units` as a per-inference figure and "per MAC" with two decimals.
fn per_inference(units: u64, unit: Unit) -> u64 {
    let n = SAMPLES as u64;
    let total = match unit {
        Unit::Cycles => units,
        Unit::Ticks { hz } => icount_instructions(units, hz),
    };
    (total + n / 2) / n
}

/// `(integer part, hundredths)` of `a / b`, rounded.
fn ratio(a: u64, b: u64) -> (u32, u32) {
    if b == 0 {
        return (0, 0);
    }
    let h = (a * 100 + b / 2) / b;
    ((h / 100) as u32, (h % 100) as u32)
}

fn print_costs<T: TickCounter>(name: &str, model: &Model<'_>, report: &Report, sw: &Stopwatch<T>) {
    let unit = sw.unit();
    let key = match unit {
        Unit::Cycles => "cycles",
        Unit::Ticks { .. } => "instructions",
    };
    let mut macs_total = 0u64;
    let mut layers_total = 0u64;
    for (i, (layer, &ticks)) in model.layers().zip(&report.layer_ticks).enumerate() {
        let Ok(layer) = layer else {
            defmt::error!("layer {=usize} no longer decodes", i);
            exit(false)
        };
        let macs = layer.op.macs(layer.output) as u64;
        let cost = per_inference(ticks, unit);
        let (whole, frac) = ratio(cost, macs);
        macs_total += macs;
        layers_total += cost;
        defmt::info!(
            "{=str} layer {=usize} op={=str} act={=str} macs={=u64} {=str}={=u64} per_mac={=u32}.{=u32:02}",
            name,
            i,
            layer.op.name(),
            activation_name(layer.activation),
            macs,
            key,
            cost,
            whole,
            frac
        );
    }
    let total = per_inference(report.total_ticks, unit);
    let (whole, frac) = ratio(total, macs_total);
    defmt::info!(
        "{=str} inference: macs={=u64} {=str}={=u64} layers={=u64} per_mac={=u32}.{=u32:02} samples={=usize}",
        name,
        macs_total,
        key,
        total,
        layers_total,
        whole,
        frac,
        SAMPLES
    );
}

/// Parse `bytes` and call `f` with the model; a parse error ends the
/// program. (A parsed `Model` is small, the header's facts and where the
/// tables are: `Model::layer` decodes a layer record when it is needed.)
fn with_model<R>(name: &str, bytes: &'static [u8], f: impl FnOnce(&Model<'static>) -> R) -> R {
    let parsed = Model::parse(bytes);
    match &parsed {
        Ok(m) => f(m),
        Err(e) => {
            defmt::error!("{=str}: Model::parse failed: {}", name, e);
            exit(false)
        }
    }
}

/// The embedded models: name, kind and file.
const MODELS: [(&str, Kind, &[u8]); 2] = [
    ("f32", Kind::F32, &NORMCORE_MODEL_F32.0),
    ("int8", Kind::Int8, &NORMCORE_MODEL_INT8.0),
];

/// Parse a model and check that it fits what the build sized: its input and
/// output match the samples and its arena fits the static one.
#[inline(never)]
fn check(name: &str, bytes: &'static [u8], arena: usize) {
    with_model(name, bytes, |m| check_model(name, m, arena))
}

fn check_model(name: &str, m: &Model<'_>, arena: usize) {
    let h = m.header();
    defmt::info!(
        "model {=str}: bytes={=usize} layers={=usize} input={=usize}x{=usize}x{=usize} classes={=usize} arena={=usize}",
        name,
        m.bytes().len(),
        m.layer_count(),
        h.input.h,
        h.input.w,
        h.input.c,
        h.classes,
        m.arena_bytes()
    );
    let features = h.input.sample_len().unwrap_or(0);
    if features != FEATURES || h.classes != CLASSES || m.arena_bytes() > arena {
        defmt::error!(
            "model {=str} does not fit the build: {=usize} inputs (samples {=usize}), {=usize} classes ({=usize}), arena {=usize} (static {=usize})",
            name,
            features,
            FEATURES,
            h.classes,
            CLASSES,
            m.arena_bytes(),
            arena
        );
        exit(false)
    }
}

/// Parse and run one model on every sample and print its results; whether
/// they agree with the host engine's.
#[inline(never)]
fn run<T: TickCounter>(
    name: &str,
    bytes: &'static [u8],
    arena: &mut [u8],
    sw: &Stopwatch<T>,
) -> bool {
    with_model(name, bytes, |m| run_model(name, m, arena, sw))
}

fn run_model<T: TickCounter>(
    name: &str,
    m: &Model<'_>,
    arena: &mut [u8],
    sw: &Stopwatch<T>,
) -> bool {
    let mut report = Report {
        correct: 0,
        identical: 0,
        within: 0,
        argmax_equal: 0,
        digest: 0,
        layer_ticks: Vec::new(),
        total_ticks: 0,
    };
    one_slot_per_layer(m, &mut report.layer_ticks);
    if let Err(e) = evaluate(name, m, arena, sw, &mut report) {
        defmt::error!("{=str}: inference failed: {}", name, e);
        exit(false)
    }
    defmt::info!(
        "{=str} result: correct={=usize} total={=usize} digest={=u32:#010x}",
        name,
        report.correct,
        SAMPLES,
        report.digest
    );
    defmt::info!(
        "{=str} host parity: identical={=usize} within_tolerance={=usize} argmax_equal={=usize} total={=usize}",
        name,
        report.identical,
        report.within,
        report.argmax_equal,
        SAMPLES
    );
    print_costs(name, m, &report, sw);
    report.within == SAMPLES && report.argmax_equal == SAMPLES
}

#[entry]
fn main() -> ! {
    // SAFETY: no heap, and nothing else lives below the stack pointer.
    let painted = unsafe { stack::paint() };
    defmt::info!("normcore-firmware infer on {=str}", board::NAME);

    let (Some(mut core), Some(board)) = (cortex_m::Peripherals::take(), Board::take()) else {
        defmt::error!("peripherals already taken");
        exit(false)
    };
    let sw = Stopwatch::new(&mut core.DCB, core.DWT, board.timer);
    sw.log_unit();

    let Some(arena) = normcore_firmware::take_arena!(ARENA_BYTES) else {
        defmt::error!("arena already taken");
        exit(false)
    };
    // Validate both files before running anything (also the one this
    // build's engine does not run: the parser is the same).
    for (name, _, bytes) in MODELS {
        check(name, bytes, arena.len());
    }
    defmt::info!(
        "samples: embedded={=usize} values={=usize} classes={=usize} arena={=usize} (bytes, static, shared by the models)",
        SAMPLES,
        FEATURES,
        CLASSES,
        ARENA_BYTES
    );

    let mut parity = true;
    for (name, kind, bytes) in MODELS {
        if engine::supports(kind) {
            parity &= run(name, bytes, arena, &sw);
        } else {
            defmt::info!(
                "{=str}: skipped: this build's engine does not run {=str} models (firmware feature `{=str}` off)",
                name,
                name,
                name
            );
        }
    }

    defmt::info!(
        "stack: high_water={=usize} size={=usize} (bytes)",
        painted.high_water(),
        painted.size()
    );
    if !parity {
        defmt::error!("the device's outputs differ from the host engine's");
    }
    exit(parity)
}
