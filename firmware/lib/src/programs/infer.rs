//! Runs the embedded models on the embedded test samples and reports what
//! the host needs to check the device against its own engine: every
//! sample's prediction and exact logits, a digest of all outputs, the
//! accuracy, the cost of each layer and of a whole inference, and the stack
//! high-water mark.
//!
//! The assets (one or both model files and `samples.bin`) are compiled in
//! by the board's build script; the models are parsed and validated by
//! `Model::parse` at start-up. For each model and sample:
//! 1. the input is written into the arena and one inference is timed as a
//!    whole (`Engine::run`): the per-inference cost;
//! 2. the input is written again and the inference repeated with
//!    `Engine::run_observed`, reading the counter when each layer starts
//!    and ends: the per-layer costs. Both runs must give the same outputs.
//!
//! Costs are in instructions under QEMU's `-icount shift=6` (timer ticks ·
//! 10^9 / (hz · 64); `NORMCORE_ICOUNT=1`), in cycles on hardware with DWT. Without
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
//! carries (int8: any difference; f32: beyond
//! [`F32_PARITY_TOLERANCE`](normcore::engine::F32_PARITY_TOLERANCE) or
//! another class).
//!
//! A build with one kind of model (`--no-default-features --features int8`
//! or `f32`: the engine has no code for the other kind) still parses and
//! checks both files, and runs only the one it supports; for the other it
//! logs `f32: skipped: ...` (or `int8: ...`). Under QEMU the counts are
//! instructions only with `-icount shift=6` (the boards' runner sets it
//! with `NORMCORE_ICOUNT=1`).

use heapless::{Vec, VecView};
use normcore::engine::{self, f32_parity, Engine, Event, Output};
use normcore::layers::Activation;
use normcore::model::{Kind, Model, ModelError, MAX_LAYERS};

use crate::assets::Assets;
use crate::board::Board;
use crate::cost::{icount_instructions, Stopwatch, TickCounter, Unit};
use crate::digest::Crc32;
use crate::stack;

/// The run failed; what went wrong is already logged.
struct Failed;

/// What one model did over all samples.
struct Report {
    /// Correct predictions.
    correct: usize,
    /// Outputs equal to the host's (int8: exactly; f32: bit for bit).
    identical: usize,
    /// f32 outputs within the parity tolerance of the host's (int8:
    /// identical).
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
/// code whatever the capacity).
fn one_slot_per_layer(model: &Model<'_>, ticks: &mut VecView<u64>) -> Result<(), Failed> {
    ticks.resize(model.layer_count(), 0).map_err(|_| {
        defmt::error!("more than {=usize} layers", ticks.capacity());
        Failed
    })
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

/// CRC-32 of one output's values (int8 bytes, f32 bit patterns
/// little-endian), as the host digests them.
fn output_crc(crc: &mut Crc32, out: &Output<'_>) {
    match *out {
        Output::I8 { values, .. } => {
            for &v in values {
                crc.update(&[v as u8]);
            }
        }
        Output::F32(values) => {
            for v in values {
                crc.update(&v.to_bits().to_le_bytes());
            }
        }
    }
}

/// How a device output compares with the host's for sample `s`:
/// `(identical, within tolerance, host's class)`; `None` if the shapes or
/// kinds differ.
fn compare(assets: &Assets, out: &Output<'_>, s: usize) -> Option<(bool, bool, usize)> {
    let samples = &assets.samples;
    match *out {
        Output::I8 { values, .. } => {
            let host = samples.i8_expected(s);
            if host.len() != values.len() {
                return None;
            }
            let same = host == values;
            let class = Output::I8 {
                values: host,
                scale: 1.0,
                zero_point: 0,
            }
            .argmax();
            Some((same, same, class))
        }
        Output::F32(values) => {
            let host = samples.f32_expected(s);
            if host.len() != values.len() {
                return None;
            }
            let same = values.iter().zip(host).all(|(d, &h)| d.to_bits() == h);
            let within = values
                .iter()
                .zip(host)
                .all(|(&d, &h)| f32_parity(d, f32::from_bits(h)));
            // The host's class, with the engine's own argmax rule.
            let mut best = 0;
            for (i, &h) in host.iter().enumerate() {
                if f32::from_bits(h) > f32::from_bits(host[best]) {
                    best = i;
                }
            }
            Some((same, within, best))
        }
    }
}

fn write_input(
    engine: &mut Engine<'_, '_, '_>,
    assets: &Assets,
    kind: Kind,
    s: usize,
) -> Result<(), ModelError> {
    match kind {
        Kind::Int8 => engine
            .input_i8()?
            .copy_from_slice(assets.samples.i8_input(s)),
        Kind::F32 => engine
            .input_f32()?
            .copy_from_slice(assets.samples.f32_input(s)),
    }
    Ok(())
}

/// Log one sample's result line (the host test parses it).
fn log_sample(s: usize, label: u16, class: usize, out: &Output<'_>) {
    match *out {
        Output::I8 { values, .. } => defmt::info!(
            "sample {=usize} label={=u16} int8 class={=usize} q={=[?]}",
            s,
            label,
            class,
            values
        ),
        Output::F32(values) => {
            defmt::info!(
                "sample {=usize} label={=u16} f32 class={=usize} bits=[{}]",
                s,
                label,
                class,
                F32Bits(values)
            )
        }
    }
}

/// f32 values shown as their bit patterns, without a copy.
struct F32Bits<'a>(&'a [f32]);

impl defmt::Format for F32Bits<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        for (i, v) in self.0.iter().enumerate() {
            if i > 0 {
                defmt::write!(f, ", ");
            }
            defmt::write!(f, "{=u32:#010x}", v.to_bits());
        }
    }
}

/// Run `model` on every sample, printing each result; see the module docs.
/// The results go into `report` (new, a slot per layer), which stays
/// where the caller has it: it holds the per-layer table, and every move
/// would be another copy on the stack.
fn evaluate<T: TickCounter>(
    name: &str,
    assets: &Assets,
    model: &Model<'_>,
    arena: &mut [u8],
    sw: &Stopwatch<T>,
    report: &mut Report,
) -> Result<(), ModelError> {
    let kind = model.kind();
    let mut engine = Engine::new(model, arena)?;
    let mut crc = Crc32::new();
    for (s, &label) in assets.samples.labels.iter().enumerate() {
        // 1. The whole inference.
        write_input(&mut engine, assets, kind, s)?;
        let e = &mut engine;
        let (out, cost) = sw.measure(move || e.run());
        let first = digest_of(&out?);
        report.total_ticks += u64::from(cost.count);

        // 2. Layer by layer. The observer reads the counter last thing when
        // a layer starts and first thing when it ends.
        write_input(&mut engine, assets, kind, s)?;
        let mut start = sw.stamp();
        let ticks = &mut report.layer_ticks;
        let out = engine.run_observed(|layer, event| match event {
            Event::Start => start = sw.stamp(),
            Event::End => {
                let end = sw.stamp();
                if let Some(t) = ticks.get_mut(layer) {
                    *t += u64::from(sw.between(start, end).count);
                }
            }
        })?;
        if digest_of(&out) != first {
            defmt::error!(
                "{=str}: sample {=usize} gave different outputs on a second run",
                name,
                s
            );
            return Err(ModelError::WrongKind);
        }

        let class = out.argmax();
        report.correct += usize::from(class == usize::from(label));
        let Some((same, within, host_class)) = compare(assets, &out, s) else {
            defmt::error!(
                "{=str}: sample {=usize}: the output does not have the samples' shape",
                name,
                s
            );
            return Err(ModelError::WrongKind);
        };
        report.argmax_equal += usize::from(class == host_class);
        report.identical += usize::from(same);
        report.within += usize::from(within);
        output_crc(&mut crc, &out);
        log_sample(s, label, class, &out);
    }
    report.digest = crc.value();
    Ok(())
}

/// CRC-32 of one output (to compare two runs without copying the logits).
fn digest_of(out: &Output<'_>) -> u32 {
    let mut crc = Crc32::new();
    output_crc(&mut crc, out);
    crc.value()
}

/// `units` as a per-inference figure.
fn per_inference(units: u64, unit: Unit, samples: usize) -> u64 {
    let n = samples.max(1) as u64;
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

fn print_costs<T: TickCounter>(
    name: &str,
    model: &Model<'_>,
    report: &Report,
    sw: &Stopwatch<T>,
    samples: usize,
) -> Result<(), Failed> {
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
            return Err(Failed);
        };
        let macs = layer.op.macs(layer.output) as u64;
        let cost = per_inference(ticks, unit, samples);
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
    let total = per_inference(report.total_ticks, unit, samples);
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
        samples
    );
    Ok(())
}

/// Parse a model file; a parse error is logged.
fn parse(name: &str, bytes: &'static [u8]) -> Result<Model<'static>, Failed> {
    Model::parse(bytes).map_err(|e| {
        defmt::error!("{=str}: Model::parse failed: {}", name, e);
        Failed
    })
}

/// Check that a parsed model fits what the build sized: its kind, its
/// input and output match the samples, and its arena fits the static one.
fn check_model(
    name: &str,
    kind: Kind,
    m: &Model<'_>,
    assets: &Assets,
    arena: usize,
) -> Result<(), Failed> {
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
    let samples = &assets.samples;
    if m.kind() != kind
        || features != samples.features
        || h.classes != samples.classes
        || m.arena_bytes() > arena
    {
        defmt::error!(
            "model {=str} does not fit the build: {=usize} inputs (samples {=usize}), {=usize} classes ({=usize}), arena {=usize} (static {=usize})",
            name,
            features,
            samples.features,
            h.classes,
            samples.classes,
            m.arena_bytes(),
            arena
        );
        return Err(Failed);
    }
    Ok(())
}

/// Parse and run one model on every sample and print its results; whether
/// they agree with the host engine's.
#[inline(never)]
fn run_model<T: TickCounter>(
    name: &str,
    assets: &Assets,
    bytes: &'static [u8],
    arena: &mut [u8],
    sw: &Stopwatch<T>,
) -> Result<bool, Failed> {
    let m = parse(name, bytes)?;
    let n = assets.samples.count;
    let mut report = Report {
        correct: 0,
        identical: 0,
        within: 0,
        argmax_equal: 0,
        digest: 0,
        layer_ticks: Vec::new(),
        total_ticks: 0,
    };
    one_slot_per_layer(&m, &mut report.layer_ticks)?;
    if let Err(e) = evaluate(name, assets, &m, arena, sw, &mut report) {
        defmt::error!("{=str}: inference failed: {}", name, e);
        return Err(Failed);
    }
    defmt::info!(
        "{=str} result: correct={=usize} total={=usize} digest={=u32:#010x}",
        name,
        report.correct,
        n,
        report.digest
    );
    defmt::info!(
        "{=str} host parity: identical={=usize} within_tolerance={=usize} argmax_equal={=usize} total={=usize}",
        name,
        report.identical,
        report.within,
        report.argmax_equal,
        n
    );
    print_costs(name, &m, &report, sw, n)?;
    Ok(report.within == n && report.argmax_equal == n)
}

/// Validate every embedded model, then run each that this build's engine
/// supports; whether the device agreed with the host on all of them.
fn run<T: TickCounter>(
    assets: &Assets,
    arena: &mut [u8],
    sw: &Stopwatch<T>,
) -> Result<bool, Failed> {
    // Validate every file before running anything (also one this build's
    // engine does not run: the parser is the same).
    for (name, kind, bytes) in assets.models() {
        check_model(name, kind, &parse(name, bytes)?, assets, arena.len())?;
    }
    defmt::info!(
        "samples: embedded={=usize} values={=usize} classes={=usize} arena={=usize} (bytes, static, shared by the models)",
        assets.samples.count,
        assets.samples.features,
        assets.samples.classes,
        arena.len()
    );
    let mut parity = true;
    for (name, kind, bytes) in assets.models() {
        if engine::supports(kind) {
            parity &= run_model(name, assets, bytes, arena, sw)?;
        } else {
            defmt::info!(
                "{=str}: skipped: this build's engine does not run {=str} models (firmware feature `{=str}` off)",
                name,
                name,
                name
            );
        }
    }
    Ok(parity)
}

/// The `infer` program: see the module docs. `arena` is the static arena
/// (`take_arena!(ARENA_BYTES)`); ends the program through `B::exit`, with
/// success when every model ran and agreed with the host.
pub fn main<B: Board>(assets: &Assets, arena: Option<&'static mut [u8]>) -> ! {
    // SAFETY: no heap, and nothing else lives below the stack pointer.
    let painted = unsafe { stack::paint() };
    defmt::info!("normcore-firmware infer on {=str}", B::NAME);
    let Some(mut parts) = B::take() else {
        defmt::error!("peripherals already taken");
        B::exit(false)
    };
    let Some(arena) = arena else {
        defmt::error!("arena already taken");
        B::exit(false)
    };
    let sw = Stopwatch::new(&mut parts.core.DCB, parts.core.DWT, parts.timer);
    sw.log_unit();
    let parity = run(assets, arena, &sw).unwrap_or(false);
    defmt::info!(
        "stack: high_water={=usize} size={=usize} (bytes)",
        painted.high_water(),
        painted.size()
    );
    if !parity {
        defmt::error!("the device's outputs differ from the host engine's");
    }
    B::exit(parity)
}
