//! Adaptation on the device for the embedded int8 model, measured against
//! a drift of its inputs: statistics re-estimation (normcore's
//! `adapt::restat`, paper Alg. 2 on the device's own unlabeled data), then
//! tail training (`adapt::tail`: the last dense layer and γ, β of the BN
//! layer feeding it, SGD on the same samples with their labels), and the
//! adapted parameters persisted and reloaded.
//!
//! The scenario is [`crate::scenario`]'s (the host test repeats it): the
//! embedded samples split by index parity into an adaptation half (even,
//! at most 64) and an evaluation half (odd), both shifted by the integer
//! drift `gain_offset` (gain 154/256, +0.3 in input units); the tail's
//! settings `scenario::TAIL` and `scenario::TAIL_EPOCHS`. [`Method`] says
//! whether the tail runs ([`Method::RestatTail`], the default, what every
//! board here runs) or not ([`Method::Restat`], for a board whose RAM
//! cannot hold the tail's workspace for its model). In order:
//! 0. the flash region is searched for an overlay a previous run saved
//!    (`Store::load`); if there is one for this model, the shifted
//!    evaluation half runs with it (a RAM-backed region is always blank;
//!    a chip's flash keeps it across resets and reflashing);
//! 1. the evaluation half, clean and shifted, through the plain engine
//!    (`Engine::run`, the inference-only path): accuracy, digest,
//!    instructions per inference;
//! 2. re-estimation on the shifted adaptation half: one pass per BN layer
//!    (`Restat::observe` per sample, `Restat::finish_pass` refolds into the
//!    overlay), each sample's cost measured; the overlay's CRC-32;
//! 3. the shifted evaluation half through the adapted engine
//!    (`Engine::run_adapted` with the overlay);
//! 4. (`RestatTail`) tail training: `TAIL_EPOCHS` epochs over the shifted
//!    adaptation half with its labels, one `Tail::step` per sample (each
//!    step's cost measured), then `Tail::commit` into the overlay; the mean
//!    loss of the first and last epoch, the overlay's CRC-32; the shifted
//!    evaluation half again (`tuned`);
//! 5. the final overlay's CRC-32 (the host computes the same overlay after
//!    each step, bit for bit), the RAM adaptation uses (core's
//!    `adapt::plan`);
//! 6. the overlay saved with `adapt::store::Store` into the flash region,
//!    then a simulated reset: the overlay's words are zeroed and rebuilt
//!    only from what `Store::load` returns (`Overlay::load`), and the
//!    shifted evaluation half runs again: its digest must be the last
//!    step's.
//!
//! # Memory
//! Every buffer is static, sized by the board's build script from the
//! embedded int8 model (`ARENA_BYTES`; `OVERLAY_WORDS` and `RESTAT_WORDS`
//! for re-estimation, `TAIL_OVERLAY_WORDS` and `TAIL_WORDS` with the tail:
//! core's `Overlay::words_needed`, `Restat::words_needed`,
//! `Tail::words_needed`), or on the stack: the engine's arena; the
//! overlay; one scratch buffer that is the re-estimation workspace, then
//! the tail's, then the buffer `load` copies the saved overlay into; and
//! the flash region. On the MPS2 boards the region is a `RamFlash` with
//! the nRF51's 1 KiB pages ([`PAGE`]), [`store_bytes`] in all (QEMU models
//! no flash controller there); on the micro:bit and the nRF52840-DK it is
//! the chip's own flash through its NVMC driver (any `NorFlash` passed to
//! [`main`]; the slots follow its `WRITE_SIZE` and `ERASE_SIZE`; the region
//! is the board's `memory.x` `STORE`), costing no RAM. QEMU models the
//! nRF51's NVMC, so the micro:bit's run writes real (emulated) flash.
//!
//! # Output lines (decoded defmt; the host test parses them)
//! ```text
//! finetune scenario: samples=64 adapt=32 eval=32 gain_q8=154 offset=5 zero_point=-128 method=restat+tail
//! finetune saved: found=0
//! finetune clean: correct=31 total=32 digest=0x0357ba37 instructions=14848
//! finetune shifted: correct=23 total=32 digest=0x560c6ee9 instructions=14849
//! finetune pass 0: layer=0 samples=32 values=32 instructions=419701 per_sample=13116 refold=97804
//! finetune pass 1: layer=1 samples=32 values=32 instructions=595483 per_sample=18609 refold=97001
//! finetune restat: passes=2 samples=32 instructions=1209989 per_sample=31725 refold=194806 inference=14848 crc=0xce925a78
//! finetune adapted: correct=29 total=32 digest=0x3f0ba66f instructions=15207
//! finetune tail: epochs=10 samples=32 steps=320 lr=0.01 momentum=0.9 train_bn=1 loss_first=0.018913656 loss_last=0.0010990442 instructions=15841034 per_step=49503 commit=686108 inference=14848 crc=0x437ced0c
//! finetune tuned: correct=30 total=32 digest=0x0a142f0f instructions=15414
//! finetune overlay: bytes=2256 entries=3 crc=0x437ced0c
//! finetune ram: overlay=2256 restat=1024 tail=3704 adaptation=5960 scratch=3704 store=6144 arena=384 (bytes; ...)
//! finetune store: seq=1 region=6144 slot=3072 capacity=3048 saved=2256 instructions=51366
//! finetune reload: seq=1 bytes=2256 crc=0x437ced0c correct=30 total=32 digest=0x0a142f0f identical=1
//! stack: high_water=7240 size=4181776 (bytes)
//! ```
//! (`mps2-an386`, the demo's model. With `method=restat` the `tail` and
//! `tuned` lines are absent and `tail=0`; with a saved overlay of this
//! model, `saved` reads `found=1 seq= bytes= crc= correct= total=
//! digest=`, and the save's `seq` follows it.) Costs are instructions
//! under QEMU's `-icount shift=6` (`NORMCORE_ICOUNT=1`), cycles with DWT on
//! hardware (the field is then `cycles`). `instructions` of a pass is the
//! sum over its samples of `observe`; `per_sample` of `restat` is the cost
//! of one adaptation sample over every pass, `per_step` of `tail` that of
//! one SGD step (forward through the backbone, the tail forward and
//! backward), both to compare with `inference`, one plain inference. The
//! losses print in the shortest form that reads back to the same f32.
//!
//! It exits with failure if the model is missing or does not fit the
//! buffers or the flash region, if any step errs, or if the reloaded
//! overlay is not the saved one or gives other outputs.

use embedded_storage::nor_flash::NorFlash;
use normcore::adapt::overlay::{Overlay, Scope};
use normcore::adapt::restat::Restat;
use normcore::adapt::store::{self, RamFlash, Store};
use normcore::adapt::tail::Tail;
use normcore::adapt::{plan, AdaptError};
use normcore::engine::{Engine, Output};
use normcore::kernels::NoTap;
use normcore::model::{crc32, Kind, Model};

use crate::assets::Assets;
use crate::board::Board;
use crate::cost::{Stopwatch, TickCounter};
use crate::digest::Crc32;
use crate::scenario;
use crate::stack;

/// What the program adapts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Re-estimation of every BN layer, then tail training
    /// ([`scenario::TAIL`], [`scenario::TAIL_EPOCHS`]); the overlay's
    /// scope is [`scenario::SCOPE`].
    RestatTail,
    /// Re-estimation alone ([`scenario::SCOPE_RESTAT`]): for a board whose
    /// RAM cannot hold the tail's workspace for its model (none here: the
    /// micro:bit holds it once the flash region is its own flash, see its
    /// bin).
    Restat,
}

impl Method {
    /// The overlay's scope.
    pub const fn scope(self) -> Scope {
        match self {
            Method::RestatTail => scenario::SCOPE,
            Method::Restat => scenario::SCOPE_RESTAT,
        }
    }

    /// Words of the overlay and of the workspace for the build's planned
    /// words (`OVERLAY_WORDS`, `RESTAT_WORDS`, `TAIL_OVERLAY_WORDS`,
    /// `TAIL_WORDS`): `(overlay, workspace)`, the workspace serving
    /// re-estimation, then the tail.
    pub const fn words(
        self,
        overlay: usize,
        restat: usize,
        tail_overlay: usize,
        tail: usize,
    ) -> (usize, usize) {
        match self {
            Method::RestatTail => (tail_overlay, max(restat, tail)),
            Method::Restat => (overlay, restat),
        }
    }
}

/// The larger of `a` and `b` (`const`).
const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Erase page of the RAM-backed flash region: the nRF51's (the micro:bit)
/// 1 KiB.
pub const PAGE: usize = 1024;
/// Write unit of the RAM-backed flash region: a word, as the nRF51's NVMC
/// writes.
pub const WRITE: usize = 4;

/// The RAM-backed flash region of `N` bytes the program saves into on
/// boards without a flash driver (QEMU).
pub type Flash<const N: usize> = RamFlash<N, WRITE, PAGE>;

/// Bytes of a flash region holding two slots for an overlay of
/// `overlay_words` words, on a flash writing `write`-byte units and erasing
/// `page`-byte pages (a `NorFlash`'s `WRITE_SIZE` and `ERASE_SIZE`): each
/// slot the store's header (its span at `write`-byte units) and the
/// overlay, in whole pages. 0 without an overlay.
pub const fn store_bytes(overlay_words: usize, write: usize, page: usize) -> usize {
    if overlay_words == 0 || write == 0 || page == 0 {
        return 0;
    }
    let span = store::HEADER_LEN.div_ceil(write) * write;
    2 * (span + 4 * overlay_words).div_ceil(page) * page
}

/// Bytes of the scratch buffer: the adaptation workspace (`work_words`
/// f32: re-estimation's, then the tail's), later the buffer the saved
/// overlay (`overlay_words`) is loaded into.
pub const fn scratch_bytes(overlay_words: usize, work_words: usize) -> usize {
    4 * max(overlay_words, work_words)
}

/// The run failed; what went wrong is already logged.
struct Failed;

/// Log `what` failed with `e`.
fn failed(what: &str, e: impl defmt::Format) -> Failed {
    defmt::error!("finetune: {=str}: {}", what, e);
    Failed
}

/// The static buffers, each `None` if already taken.
#[derive(Debug)]
pub struct Buffers {
    /// The engine's arena (`ARENA_BYTES`, 16-aligned).
    pub arena: Option<&'static mut [u8]>,
    /// The overlay (`4·OVERLAY_WORDS` bytes, 16-aligned).
    pub overlay: Option<&'static mut [u8]>,
    /// [`scratch_bytes`] (16-aligned).
    pub scratch: Option<&'static mut [u8]>,
}

/// What one run over the evaluation half gave.
struct Eval {
    correct: usize,
    total: usize,
    /// CRC-32 of every output, in order (as `infer` digests int8 outputs).
    digest: u32,
    /// Counter units of the inferences, summed.
    units: u64,
}

/// How the evaluation half runs.
#[derive(Clone, Copy)]
enum Run<'a, 'o> {
    /// Clean inputs, the plain engine.
    Clean,
    /// Shifted inputs, the plain engine.
    Shifted,
    /// Shifted inputs, the engine with the overlay.
    Adapted(&'a Overlay<'o>),
}

/// Everything the steps share.
struct Ctx<'c, T> {
    assets: &'c Assets,
    model: &'c Model<'static>,
    sw: &'c Stopwatch<T>,
}

impl<T: TickCounter> Ctx<'_, T> {
    /// Write sample `s` into `engine`'s input, shifted if `shift`.
    fn input(&self, engine: &mut Engine<'_, '_, '_>, s: usize, shift: bool) -> Result<(), Failed> {
        let x = engine
            .input_i8()
            .map_err(|e| failed("the engine's input", e))?;
        x.copy_from_slice(self.assets.samples.i8_input(s));
        if shift {
            let h = self.model.header();
            scenario::shift(x, h.input_zero_point, h.input_scale);
        }
        Ok(())
    }

    /// The evaluation half through `engine` as `how` says.
    fn evaluate(&self, engine: &mut Engine<'_, '_, '_>, how: Run<'_, '_>) -> Result<Eval, Failed> {
        let samples = &self.assets.samples;
        let mut eval = Eval {
            correct: 0,
            total: 0,
            digest: 0,
            units: 0,
        };
        let mut crc = Crc32::new();
        for s in scenario::evaluation(samples.count) {
            self.input(engine, s, !matches!(how, Run::Clean))?;
            let e = &mut *engine;
            let (out, cost) = self.sw.measure(move || match how {
                Run::Adapted(o) => e.run_adapted(Some(o), usize::MAX, &mut NoTap),
                _ => e.run().map_err(AdaptError::from),
            });
            let out = out.map_err(|e| failed("inference", e))?;
            eval.units += u64::from(cost.count);
            let class = out.argmax();
            let Output::I8 { values, .. } = out else {
                return Err(failed("inference", "not int8 outputs"));
            };
            for &v in values {
                crc.update(&[v as u8]);
            }
            let label = samples.labels.get(s).copied().unwrap_or(u16::MAX);
            eval.correct += usize::from(class == usize::from(label));
            eval.total += 1;
        }
        eval.digest = crc.value();
        Ok(eval)
    }

    /// Log one evaluation's line.
    fn log_eval(&self, what: &str, e: &Eval) {
        let unit = self.sw.unit();
        defmt::info!(
            "finetune {=str}: correct={=usize} total={=usize} digest={=u32:#010x} {=str}={=u64}",
            what,
            e.correct,
            e.total,
            e.digest,
            unit.key(),
            per(unit.report(e.units), e.total)
        );
    }

    /// Re-estimate every BN layer on the shifted adaptation half, into
    /// `overlay`, with `work` as the workspace; logs each pass and the
    /// totals. `inference`: the plain per-inference figure, to compare.
    fn restat(
        &self,
        engine: &mut Engine<'_, '_, '_>,
        overlay: &mut Overlay<'_>,
        work: &mut [f32],
        inference: u64,
    ) -> Result<(), Failed> {
        let model = self.model;
        let unit = self.sw.unit();
        let mut r = Restat::new(model, work).map_err(|e| failed("Restat::new", e))?;
        let (mut observe, mut refold, mut samples) = (0u64, 0u64, 0u32);
        while !r.done() {
            let (pass, _) = r.pass();
            let mut units = 0u64;
            for s in scenario::adaptation(self.assets.samples.count) {
                self.input(engine, s, true)?;
                let (e, rr, o) = (&mut *engine, &mut r, &*overlay);
                let (done, cost) = self.sw.measure(move || rr.observe(e, Some(o)));
                done.map_err(|e| failed("Restat::observe", e))?;
                units += u64::from(cost.count);
            }
            let (rr, o) = (&mut r, &mut *overlay);
            let (report, cost) = self.sw.measure(move || rr.finish_pass(model, o));
            let report = report.map_err(|e| failed("Restat::finish_pass", e))?;
            defmt::info!(
                "finetune pass {=usize}: layer={=usize} samples={=u32} values={=u64} {=str}={=u64} per_sample={=u64} refold={=u64}",
                pass,
                report.layer,
                report.samples,
                report.values,
                unit.key(),
                unit.report(units),
                per(unit.report(units), report.samples as usize),
                unit.report(u64::from(cost.count))
            );
            observe += units;
            refold += u64::from(cost.count);
            samples = report.samples;
        }
        let (passes, _) = r.pass();
        defmt::info!(
            "finetune restat: passes={=usize} samples={=u32} {=str}={=u64} per_sample={=u64} refold={=u64} inference={=u64} crc={=u32:#010x}",
            passes,
            samples,
            unit.key(),
            unit.report(observe + refold),
            per(unit.report(observe), samples as usize),
            unit.report(refold),
            inference,
            crc32(overlay.as_bytes())
        );
        Ok(())
    }

    /// Tail training on the shifted adaptation half with its labels
    /// ([`scenario::TAIL`], [`scenario::TAIL_EPOCHS`] epochs, the samples
    /// in index order), starting from `overlay` and committed into it, with
    /// `work` as the workspace; logs the losses and costs. `inference`: the
    /// plain per-inference figure, to compare.
    fn tail(
        &self,
        engine: &mut Engine<'_, '_, '_>,
        overlay: &mut Overlay<'_>,
        work: &mut [f32],
        inference: u64,
    ) -> Result<(), Failed> {
        let model = self.model;
        let unit = self.sw.unit();
        let cfg = scenario::TAIL;
        let samples = &self.assets.samples;
        let mut t =
            Tail::new(model, Some(overlay), cfg, work).map_err(|e| failed("Tail::new", e))?;
        let n = scenario::adaptation(samples.count).count();
        let (mut units, mut first, mut last) = (0u64, 0f32, 0f32);
        for epoch in 0..scenario::TAIL_EPOCHS {
            let mut sum = 0f32;
            for s in scenario::adaptation(samples.count) {
                self.input(engine, s, true)?;
                let label = usize::from(samples.labels.get(s).copied().unwrap_or(u16::MAX));
                let (e, tt, o) = (&mut *engine, &mut t, &*overlay);
                let (loss, cost) = self.sw.measure(move || tt.step(e, Some(o), label));
                sum += loss.map_err(|e| failed("Tail::step", e))?;
                units += u64::from(cost.count);
            }
            // The epoch's mean loss, as the host's `adapt::tail` takes it.
            let mean = sum / n as f32;
            if epoch == 0 {
                first = mean;
            }
            last = mean;
        }
        let steps = t.steps();
        let (tt, o) = (&mut t, &mut *overlay);
        let (done, commit) = self.sw.measure(move || tt.commit(model, o));
        done.map_err(|e| failed("Tail::commit", e))?;
        defmt::info!(
            "finetune tail: epochs={=usize} samples={=usize} steps={=u32} lr={=f32} momentum={=f32} train_bn={=u8} loss_first={=f32} loss_last={=f32} {=str}={=u64} per_step={=u64} commit={=u64} inference={=u64} crc={=u32:#010x}",
            scenario::TAIL_EPOCHS,
            n,
            steps,
            cfg.lr,
            cfg.momentum,
            u8::from(cfg.train_bn),
            first,
            last,
            unit.key(),
            unit.report(units),
            per(unit.report(units), steps as usize),
            unit.report(u64::from(commit.count)),
            inference,
            crc32(overlay.as_bytes())
        );
        Ok(())
    }
}

/// `total / n`, rounded to nearest (0 for no `n`).
fn per(total: u64, n: usize) -> u64 {
    let n = n as u64;
    (total + n / 2).checked_div(n).unwrap_or(0)
}

/// The int8 model, parsed and checked against the buffers; the words of
/// the overlay, of re-estimation's and of the tail's workspace (0 without
/// the tail).
fn model_and_plan(
    assets: &Assets,
    buffers: &Buffers,
    method: Method,
    arena: usize,
) -> Result<(Model<'static>, Words), Failed> {
    let Some(bytes) = assets.model(Kind::Int8) else {
        return Err(failed("the build embeds no int8 model", "nothing to adapt"));
    };
    let model = Model::parse(bytes).map_err(|e| failed("Model::parse", e))?;
    let scope = method.scope();
    let words = Words {
        overlay: Overlay::words_needed(&model, scope).map_err(|e| failed("the overlay", e))?,
        restat: Restat::words_needed(&model).map_err(|e| failed("re-estimation", e))?,
        tail: match method {
            Method::RestatTail => Tail::words_needed(&model, &scenario::TAIL)
                .map_err(|e| failed("tail training", e))?,
            Method::Restat => 0,
        },
    };
    let work = max(words.restat, words.tail);
    let len = |b: &Option<&'static mut [u8]>| b.as_ref().map_or(0, |b| b.len());
    let h = model.header();
    let bn = model.bn_records().count();
    defmt::info!(
        "model int8: bytes={=usize} layers={=usize} bn_layers={=usize} input={=usize}x{=usize}x{=usize} classes={=usize} arena={=usize}",
        bytes.len(),
        model.layer_count(),
        bn,
        h.input.h,
        h.input.w,
        h.input.c,
        h.classes,
        model.arena_bytes()
    );
    let samples = &assets.samples;
    if model.arena_bytes() > arena
        || 4 * words.overlay > len(&buffers.overlay)
        || scratch_bytes(words.overlay, work) > len(&buffers.scratch)
        || h.input.sample_len().unwrap_or(0) != samples.features
        || h.classes != samples.classes
    {
        defmt::error!(
            "finetune: the model does not fit the build: arena {=usize} (static {=usize}), overlay {=usize} B ({=usize}), workspace {=usize} B (scratch {=usize}), {=usize} classes (samples {=usize})",
            model.arena_bytes(),
            arena,
            4 * words.overlay,
            len(&buffers.overlay),
            4 * work,
            len(&buffers.scratch),
            h.classes,
            samples.classes
        );
        return Err(Failed);
    }
    Ok((model, words))
}

/// The words the buffers are used for.
#[derive(Clone, Copy)]
struct Words {
    overlay: usize,
    restat: usize,
    tail: usize,
}

/// Look for an overlay a previous run saved in `store` (a RAM-backed
/// region is blank: none); if there is one for this model, run the shifted
/// evaluation half with it. `buf` takes the saved bytes, `words` the
/// overlay (both overwritten after). Logs `finetune saved:`.
fn saved<T: TickCounter, F: NorFlash>(
    ctx: &Ctx<'_, T>,
    engine: &mut Engine<'_, '_, '_>,
    store: &mut Store<F>,
    buf: &mut [u8],
    words: &mut [u32],
) -> Result<(), Failed> {
    let loaded = match store.load(buf) {
        Ok(Some(l)) => l,
        Ok(None) => {
            defmt::info!("finetune saved: found=0");
            return Ok(());
        }
        Err(e) => return Err(failed("Store::load", e)),
    };
    match Overlay::load(ctx.model, &buf[..loaded.len], words) {
        Ok(overlay) => {
            let e = ctx.evaluate(engine, Run::Adapted(&overlay))?;
            defmt::info!(
                "finetune saved: found=1 seq={=u32} bytes={=usize} crc={=u32:#010x} correct={=usize} total={=usize} digest={=u32:#010x}",
                loaded.seq,
                loaded.len,
                crc32(overlay.as_bytes()),
                e.correct,
                e.total,
                e.digest
            );
        }
        // Another model's (or another scope's) overlay: adapt anew and
        // save over it.
        Err(e) => defmt::warn!(
            "finetune saved: found=1 seq={=u32} bytes={=usize} usable=0 ({})",
            loaded.seq,
            loaded.len,
            e
        ),
    }
    Ok(())
}

/// The program's steps (module docs).
fn run<T: TickCounter, F: NorFlash>(
    assets: &Assets,
    buffers: Buffers,
    method: Method,
    flash: F,
    sw: &Stopwatch<T>,
) -> Result<(), Failed> {
    let arena_len = buffers.arena.as_ref().map_or(0, |a| a.len());
    let (model, words) = model_and_plan(assets, &buffers, method, arena_len)?;
    let (Some(arena), Some(overlay_bytes), Some(scratch)) =
        (buffers.arena, buffers.overlay, buffers.scratch)
    else {
        return Err(failed("the static buffers", "already taken"));
    };
    let ctx = Ctx {
        assets,
        model: &model,
        sw,
    };
    let n = assets.samples.count;
    let h = model.header();
    defmt::info!(
        "finetune scenario: samples={=usize} adapt={=usize} eval={=usize} gain_q8={=i32} offset={=i32} zero_point={=i32} method={=str}",
        n,
        scenario::adaptation(n).count(),
        scenario::evaluation(n).count(),
        scenario::GAIN_Q8,
        scenario::offset_levels(h.input_scale),
        h.input_zero_point,
        match method {
            Method::RestatTail => "restat+tail",
            Method::Restat => "restat",
        }
    );
    let mut engine = Engine::new(&model, arena).map_err(|e| failed("Engine::new", e))?;

    // The buffers as the adaptation code takes them (16-aligned statics of
    // whole words: the casts cannot fail).
    let cast = |b: &'static mut [u8]| -> Result<&'static mut [u32], Failed> {
        bytemuck::try_cast_slice_mut(b).map_err(|_| failed("a static buffer", "misaligned"))
    };
    let overlay_words = &mut cast(overlay_bytes)?[..words.overlay];
    let scratch = cast(scratch)?;

    // 0. What a previous run saved (on a chip's own flash).
    let region = flash.capacity();
    let need = store_bytes(words.overlay, F::WRITE_SIZE, F::ERASE_SIZE);
    if need > region {
        defmt::error!(
            "finetune: the flash region of {=usize} B cannot hold two slots of the {=usize} B overlay ({=usize} B in pages of {=usize} B)",
            region,
            4 * words.overlay,
            need,
            F::ERASE_SIZE
        );
        return Err(Failed);
    }
    let mut store = Store::new(flash, 0, region as u32).map_err(|e| failed("Store::new", e))?;
    saved(
        &ctx,
        &mut engine,
        &mut store,
        bytemuck::cast_slice_mut(&mut *scratch),
        overlay_words,
    )?;

    // 1. Clean and shifted, the plain engine.
    let clean = ctx.evaluate(&mut engine, Run::Clean)?;
    ctx.log_eval("clean", &clean);
    let shifted = ctx.evaluate(&mut engine, Run::Shifted)?;
    ctx.log_eval("shifted", &shifted);
    let unit = sw.unit();
    let inference = per(unit.report(clean.units), clean.total);

    // 2-4. Re-estimation, the adapted engine; tail training, the tuned
    // engine; the overlay's CRC.
    let (adapted, entries) = {
        let mut overlay = Overlay::new(&model, method.scope(), overlay_words)
            .map_err(|e| failed("Overlay::new", e))?;
        let work: &mut [f32] = bytemuck::cast_slice_mut(&mut scratch[..words.restat]);
        ctx.restat(&mut engine, &mut overlay, work, inference)?;
        let mut adapted = ctx.evaluate(&mut engine, Run::Adapted(&overlay))?;
        ctx.log_eval("adapted", &adapted);
        if method == Method::RestatTail {
            let work: &mut [f32] = bytemuck::cast_slice_mut(&mut scratch[..words.tail]);
            ctx.tail(&mut engine, &mut overlay, work, inference)?;
            adapted = ctx.evaluate(&mut engine, Run::Adapted(&overlay))?;
            ctx.log_eval("tuned", &adapted);
        }
        (adapted, overlay.entries())
    };
    let crc = crc32(bytemuck::cast_slice(overlay_words));
    defmt::info!(
        "finetune overlay: bytes={=usize} entries={=usize} crc={=u32:#010x}",
        4 * words.overlay,
        entries,
        crc
    );
    let planned =
        plan(&model, method.scope(), &scenario::TAIL).map_err(|e| failed("adapt::plan", e))?;
    defmt::info!(
        "finetune ram: overlay={=usize} restat={=usize} tail={=usize} adaptation={=usize} scratch={=usize} store={=usize} arena={=usize} (bytes; adaptation = overlay + max(restat, tail) workspace, core's adapt::plan; the scratch is the workspace, then the reload buffer; store: the flash region)",
        planned.overlay,
        planned.restat,
        planned.tail,
        planned.total(),
        4 * scratch.len(),
        region,
        arena_len
    );

    // 5. Save, then a simulated reset: nothing of the overlay survives but
    // what the store returns.
    let (saved, cost) = sw.measure(|| store.save(bytemuck::cast_slice(overlay_words)));
    let seq = saved.map_err(|e| failed("Store::save", e))?;
    defmt::info!(
        "finetune store: seq={=u32} region={=usize} slot={=usize} capacity={=usize} saved={=usize} {=str}={=u64}",
        seq,
        region,
        store.slot_len(),
        store.capacity(),
        4 * words.overlay,
        unit.key(),
        unit.report(u64::from(cost.count))
    );
    overlay_words.fill(0);
    let mut store = Store::new(store.into_inner(), 0, region as u32)
        .map_err(|e| failed("Store::new after the reset", e))?;
    let buf: &mut [u8] = bytemuck::cast_slice_mut(scratch);
    let loaded = match store.load(buf) {
        Ok(Some(l)) => l,
        Ok(None) => return Err(failed("Store::load", "no valid slot")),
        Err(e) => return Err(failed("Store::load", e)),
    };
    let overlay = Overlay::load(&model, &buf[..loaded.len], overlay_words)
        .map_err(|e| failed("Overlay::load", e))?;
    let reloaded_crc = crc32(overlay.as_bytes());
    let reload = ctx.evaluate(&mut engine, Run::Adapted(&overlay))?;
    let identical = reloaded_crc == crc && reload.digest == adapted.digest;
    defmt::info!(
        "finetune reload: seq={=u32} bytes={=usize} crc={=u32:#010x} correct={=usize} total={=usize} digest={=u32:#010x} identical={=u8}",
        loaded.seq,
        loaded.len,
        reloaded_crc,
        reload.correct,
        reload.total,
        reload.digest,
        u8::from(identical)
    );
    if !identical {
        defmt::error!(
            "finetune: the reloaded overlay (crc {=u32:#010x}, digest {=u32:#010x}) is not the saved one (crc {=u32:#010x}, digest {=u32:#010x})",
            reloaded_crc,
            reload.digest,
            crc,
            adapted.digest
        );
        return Err(Failed);
    }
    Ok(())
}

/// The `finetune` program: see the module docs. `buffers` are the static
/// buffers the `bin!` macro sizes from the build's constants; `flash` the
/// region the overlay is saved into (its whole capacity is the store's).
/// Ends the program through `B::exit`, with success when every step ran
/// and the reloaded overlay gave the adapted outputs again.
pub fn main<B: Board, F: NorFlash>(
    assets: &Assets,
    buffers: Buffers,
    method: Method,
    flash: Option<F>,
) -> ! {
    // SAFETY: no heap, and nothing else lives below the stack pointer.
    let painted = unsafe { stack::paint() };
    defmt::info!("normcore-firmware finetune on {=str}", B::NAME);
    let Some(mut parts) = B::take() else {
        defmt::error!("peripherals already taken");
        B::exit(false)
    };
    let Some(flash) = flash else {
        defmt::error!("flash region already taken");
        B::exit(false)
    };
    let sw = Stopwatch::new(&mut parts.core.DCB, parts.core.DWT, parts.timer);
    sw.log_unit();
    let ok = run(assets, buffers, method, flash, &sw).is_ok();
    defmt::info!(
        "stack: high_water={=usize} size={=usize} (bytes)",
        painted.high_water(),
        painted.size()
    );
    B::exit(ok)
}
