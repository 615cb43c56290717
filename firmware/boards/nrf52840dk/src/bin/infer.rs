//! Runs the embedded models on the embedded test samples on the
//! nRF52840-DK and reports over RTT (defmt): each sample's class and
//! logits, the cycles of each inference (DWT CYCCNT: CPU cycles at 64 MHz,
//! measured on the hardware, unlike QEMU's instruction counts), accuracy,
//! a digest of all outputs, and parity with the host engine's outputs that
//! the assets carry. Then LED1 blinks slowly if the board agrees with the
//! host engine, LED2 quickly if it does not; it runs until the probe stops
//! it (Ctrl-C in `probe-rs run`).
//!
//! Output lines, as the mps2 `infer` prints them, with cycles instead of
//! instructions:
//! ```text
//! sample 3 label=7 int8 class=7 cycles=21034 q=[-12, 5, ...]
//! int8 result: correct=63 total=64 digest=0x1f099dd9
//! int8 host parity: identical=64 within_tolerance=64 argmax_equal=64 total=64
//! int8 inference: macs=3392 cycles=21034 min=21020 max=21100 per_mac=6.20 us=328 samples=64
//! ```
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m_rt::entry;
use defmt_rtt as _;
use embedded_hal::digital::OutputPin;
use normcore::engine::{Engine, Output};
use normcore::model::{Kind, Model, ModelError};
use normcore_nrf52840dk::digest::Crc32;
use normcore_nrf52840dk::{blink, Board, Cycles, CPU_HZ, NAME};
use panic_probe as _;

/// The generated assets (see `build.rs`).
#[allow(clippy::unreadable_literal, clippy::large_const_arrays)]
mod assets {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}
use assets::*;

/// f32 logits may differ from the host's by this much (relative above 1).
const F32_TOLERANCE: f32 = 1e-5;

/// The engine's working memory: static, 16-aligned, sized at build time
/// for the larger model.
#[repr(C, align(16))]
struct Arena([u8; ARENA_BYTES]);

static mut ARENA: Arena = Arena([0; ARENA_BYTES]);

/// The arena, once.
fn take_arena() -> Option<&'static mut [u8]> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    if TAKEN.swap(true, Ordering::AcqRel) {
        return None;
    }
    // SAFETY: `TAKEN` makes this the only reference to `ARENA` ever made;
    // the pointer is to a static, so never null.
    unsafe { (&raw mut ARENA.0).as_mut() }.map(|a| a.as_mut_slice())
}

/// What one model did over all samples.
#[derive(Default)]
struct Report {
    correct: usize,
    identical: usize,
    within: usize,
    argmax_equal: usize,
    digest: u32,
    cycles_total: u64,
    cycles_min: u32,
    cycles_max: u32,
}

/// Index of the first largest value.
fn argmax_i8(v: &[i8]) -> usize {
    Output::I8 {
        values: v,
        scale: 1.0,
        zero_point: 0,
    }
    .argmax()
}

/// Run `model` on every sample, printing each result.
fn evaluate(model: &Model<'_>, arena: &mut [u8], cycles: &Cycles) -> Result<Report, ModelError> {
    let kind = model.kind();
    let mut engine = Engine::new(model, arena)?;
    let mut r = Report {
        cycles_min: u32::MAX,
        ..Report::default()
    };
    let mut crc = Crc32::new();
    for (s, &label) in NORMCORE_SAMPLES_LABELS.iter().enumerate() {
        match kind {
            Kind::Int8 => engine.input_i8()?.copy_from_slice(&NORMCORE_SAMPLES_I8[s]),
            Kind::F32 => engine
                .input_f32()?
                .copy_from_slice(&NORMCORE_SAMPLES_F32[s]),
        }
        let e = &mut engine;
        let (out, c) = cycles.measure(move || e.run());
        let out = out?;
        r.cycles_total += u64::from(c);
        r.cycles_min = r.cycles_min.min(c);
        r.cycles_max = r.cycles_max.max(c);
        let class = out.argmax();
        r.correct += usize::from(class == usize::from(label));
        match out {
            Output::I8 { values, .. } => {
                let host = &NORMCORE_SAMPLES_EXPECTED_I8[s];
                let same = values == host.as_slice();
                r.identical += usize::from(same);
                r.within += usize::from(same);
                r.argmax_equal += usize::from(class == argmax_i8(host));
                for &v in values {
                    crc.update(&[v as u8]);
                }
                defmt::info!(
                    "sample {=usize} label={=u16} int8 class={=usize} cycles={=u32} q={=[?]}",
                    s,
                    label,
                    class,
                    c,
                    values
                );
            }
            Output::F32(values) => {
                let host = NORMCORE_SAMPLES_EXPECTED_F32[s].map(f32::from_bits);
                let identical = values
                    .iter()
                    .zip(&host)
                    .all(|(d, h)| d.to_bits() == h.to_bits());
                let close = values
                    .iter()
                    .zip(&host)
                    .all(|(d, h)| (d - h).abs() <= F32_TOLERANCE * h.abs().max(1.0));
                r.identical += usize::from(identical);
                r.within += usize::from(close);
                r.argmax_equal += usize::from(class == Output::F32(&host).argmax());
                let bits: [u32; CLASSES] =
                    core::array::from_fn(|i| values.get(i).map_or(0, |v| v.to_bits()));
                for b in bits {
                    crc.update(&b.to_le_bytes());
                }
                defmt::info!(
                    "sample {=usize} label={=u16} f32 class={=usize} cycles={=u32} bits={=[?]:#010x}",
                    s,
                    label,
                    class,
                    c,
                    bits
                );
            }
        }
    }
    r.digest = crc.value();
    Ok(r)
}

/// `(integer part, hundredths)` of `a / b`, rounded.
fn ratio(a: u64, b: u64) -> (u32, u32) {
    if b == 0 {
        return (0, 0);
    }
    let h = (a * 100 + b / 2) / b;
    ((h / 100) as u32, (h % 100) as u32)
}

/// Parse and run one model, print its summary; whether it agrees with the
/// host engine.
fn run(name: &str, bytes: &'static [u8], arena: &mut [u8], cycles: &Cycles) -> bool {
    let model = match Model::parse(bytes) {
        Ok(m) => m,
        Err(e) => {
            defmt::error!("{=str}: Model::parse failed: {}", name, e);
            return false;
        }
    };
    let r = match evaluate(&model, arena, cycles) {
        Ok(r) => r,
        Err(e) => {
            defmt::error!("{=str}: inference failed: {}", name, e);
            return false;
        }
    };
    defmt::info!(
        "{=str} result: correct={=usize} total={=usize} digest={=u32:#010x}",
        name,
        r.correct,
        SAMPLES,
        r.digest
    );
    defmt::info!(
        "{=str} host parity: identical={=usize} within_tolerance={=usize} argmax_equal={=usize} total={=usize}",
        name,
        r.identical,
        r.within,
        r.argmax_equal,
        SAMPLES
    );
    let macs: u64 = model
        .layers()
        .map(|l| l.map_or(0, |l| l.op.macs(l.output) as u64))
        .sum();
    let n = SAMPLES as u64;
    let mean = (r.cycles_total + n / 2) / n;
    let (whole, frac) = ratio(mean, macs);
    defmt::info!(
        "{=str} inference: macs={=u64} cycles={=u64} min={=u32} max={=u32} per_mac={=u32}.{=u32:02} us={=u64} samples={=usize}",
        name,
        macs,
        mean,
        r.cycles_min,
        r.cycles_max,
        whole,
        frac,
        mean * 1_000_000 / u64::from(CPU_HZ),
        SAMPLES
    );
    r.within == SAMPLES && r.argmax_equal == SAMPLES
}

/// The embedded models: name and file.
const MODELS: [(&str, &[u8]); 2] = [
    ("f32", &NORMCORE_MODEL_F32.0),
    ("int8", &NORMCORE_MODEL_INT8.0),
];

#[entry]
fn main() -> ! {
    let Some(mut board) = Board::take() else {
        defmt::panic!("board already taken")
    };
    let Some(arena) = take_arena() else {
        defmt::panic!("arena already taken")
    };
    defmt::info!(
        "normcore infer on {=str}; cost unit: CPU cycles (DWT CYCCNT) at {=u32} Hz",
        NAME,
        CPU_HZ
    );
    defmt::info!(
        "samples: embedded={=usize} values={=usize} classes={=usize} arena={=usize} (bytes)",
        SAMPLES,
        FEATURES,
        CLASSES,
        ARENA_BYTES
    );
    let mut parity = true;
    for (name, bytes) in MODELS {
        // LED1 lit while a model runs.
        let Ok(()) = board.led1.set_low();
        parity &= run(name, bytes, arena, &board.cycles);
        let Ok(()) = board.led1.set_high();
    }
    if parity {
        defmt::info!("device = host engine: yes (LED1 blinks slowly)");
    } else {
        defmt::error!("the device's outputs differ from the host engine's (LED2 blinks fast)");
    }
    loop {
        let Ok(()) = if parity {
            blink(&mut board.led1, &mut board.delay, 100, 900)
        } else {
            blink(&mut board.led2, &mut board.delay, 100, 100)
        };
    }
}
