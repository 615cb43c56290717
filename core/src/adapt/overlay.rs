//! The overlay: adapted parameters in RAM that the engine reads in place of
//! the file's tensors. The model in flash never changes; running without
//! the overlay (or with its entries inactive) is the original model, bit
//! for bit.
//!
//! # What it holds
//! One **entry** per layer that adaptation may change, decided once by
//! [`Overlay::words_needed`] / [`Overlay::new`] from the model and a
//! [`Scope`]:
//!
//! - **re-estimation** (`scope.restat`): every layer with a BN record. int8:
//!   the bias (i32, padded as the file's), the requantization multipliers
//!   and shifts, and the statistics `E[x]`, `Var[x]`. The int8 weights are
//!   not copied: a refold leaves them as they are ([`super::refold`]). f32:
//!   the weights (a refold scales them), the bias and the statistics.
//!   γ and β are stored only for the layer a tail may train (the BN layer
//!   right before the last one, when the scope has the tail too): every
//!   other layer keeps the file's γ, β (re-estimation never changes them),
//!   and [`super::refold::refold`] refuses others there
//!   ([`AdaptError::NotInOverlay`]).
//! - **tail training** (`scope.tail`): the last layer, which must be dense:
//!   its weights in the file's blocked order (int8: one byte per weight,
//!   whether the file stores bytes or pair words; f32 as stored), bias, and
//!   for int8 its multipliers, shifts and output quantization (the logits'
//!   range is re-chosen when the weights change).
//!
//! # RAM
//! [`Overlay::words_needed`] words: `4 + 16·n` (header, `n` entries), and
//! per entry
//! - int8 BN layer: `B + 2·C` (bias `B` = `C` padded as the file's,
//!   multipliers, shifts) `+ 2·C` (`E[x]`, `Var[x]`) `+ 2·C` (γ, β, only for
//!   the layer a tail trains);
//! - f32 BN layer: `W + B + 2·C` (`+ 2·C` likewise);
//! - the tail (dense `K` outputs, `D` inputs, stored with `K'` rows, `K`
//!   padded to the row block): int8 `B + 2·K + ⌈K'·D/4⌉`, f32 `B + K'·D`.
//!
//! For MNIST `paper-mlp` int8 (784-100-100-100-10, blocks of 4 rows) that is
//! 6,208 bytes for re-estimation and 8,400 bytes with the tail
//! (`cargo test -p normcore-trainer --release --lib adapt_ram_plan`).
//!
//! Each entry has flags: [`ACTIVE`] (the engine uses the entry's bias,
//! multipliers, shifts, weights and quantization; an inactive entry is
//! ignored), [`HAS_BN`] (the entry's BN record replaces the file's) and
//! [`HAS_WEIGHTS`], [`HAS_QUANT`] (those parts were written).
//!
//! # One blob
//! Header, entry table and data live in the caller's `u32` buffer, in this
//! order, so that persisting the overlay is saving [`Overlay::as_bytes`]
//! ([`super::store`]), and loading it is [`Overlay::load`], which accepts
//! the bytes only for the same model (its file CRC) and the same layout
//! (the entry table is recomputed from the model and compared word for
//! word) and validates every active entry's output stage.
//!
//! | word | field |
//! |------|-------|
//! | 0 | magic `"NCOV"` |
//! | 1 | version (bits 0–15, [`VERSION`]), scope (bits 16–23: bit 0 restat, bit 1 tail), entries (bits 24–31) |
//! | 2 | the model file's CRC-32 |
//! | 3 | words used by the whole overlay |
//! | 4 + 16·k | entry k ([`ENTRY_WORDS`] words, below) |
//! | … | data: each part at its entry's word offset |
//!
//! An entry: `layer | flags << 16`, channels, bias offset, bias length,
//! multiplier offset, shift offset, weight offset, weight length (words),
//! BN offset, the six words of the output quantization (scale bits, zero
//! point, requantization zero point, clamps, requantization scale bits), BN
//! length (`2·C` words: `E[x]`, `Var[x]`; or `4·C`: `E[x]`, `Var[x]`, γ,
//! β). An offset of 0 means the part is absent.
//!
//! Version 1 (before the layout above: a full BN record for every layer,
//! the tail's int8 weights as the file stores them) is refused by
//! [`Overlay::load`] with [`AdaptError::OverlayVersion`]: adapt again.

use bytemuck::{cast_slice, cast_slice_mut};

use super::AdaptError;
use crate::batchnorm::BnState;
use crate::model::{Data, Kind, Layer, Model, Op, QuantOut};

/// The overlay's first word.
pub const MAGIC: [u8; 4] = *b"NCOV";
/// The overlay layout version (2: statistics without γ, β except for the
/// layer a tail trains; the tail's int8 weights as bytes).
pub const VERSION: u16 = 2;
/// Words of the header.
pub const HEADER_WORDS: usize = 4;
/// Words of one entry.
pub const ENTRY_WORDS: usize = 16;
/// Most entries (one per BN record and the tail).
pub const MAX_ENTRIES: usize = crate::model::layout::MAX_BN + 1;

/// Entry flag: the engine uses this entry's parameters.
pub const ACTIVE: u16 = 1 << 0;
/// Entry flag: the entry's BN record replaces the file's.
pub const HAS_BN: u16 = 1 << 1;
/// Entry flag: the entry's weights were written.
pub const HAS_WEIGHTS: u16 = 1 << 2;
/// Entry flag: the entry's output quantization replaces the file's.
pub const HAS_QUANT: u16 = 1 << 3;

/// What an overlay makes room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Scope {
    /// Statistics re-estimation: every BN-folded layer.
    pub restat: bool,
    /// Tail training: the last (dense) layer.
    pub tail: bool,
}

impl Scope {
    fn bits(self) -> u32 {
        u32::from(self.restat) | u32::from(self.tail) << 1
    }

    fn of_bits(b: u32) -> Scope {
        Scope {
            restat: b & 1 != 0,
            tail: b & 2 != 0,
        }
    }
}

// Entry word indices.
const E_LAYER: usize = 0;
const E_CHANNELS: usize = 1;
const E_BIAS: usize = 2;
const E_BIAS_LEN: usize = 3;
const E_MULT: usize = 4;
const E_SHIFT: usize = 5;
const E_W: usize = 6;
const E_W_LEN: usize = 7;
const E_BN: usize = 8;
const E_QUANT: usize = 9;
const QUANT_WORDS: usize = 6;
const E_BN_LEN: usize = 15;

/// A part of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Part {
    /// The bias (i32 or f32), padded as the file's.
    Bias,
    /// int8 multipliers.
    Multiplier,
    /// int8 shifts.
    Shift,
    /// The weights in the file's blocked order: int8 as bytes (also for a
    /// file storing pair words), f32 as f32.
    Weights,
    /// The BN record, f32: `E[x]`, `Var[x]` (`2·C`), followed by γ, β
    /// (`4·C` in all) for the layer a tail trains
    /// ([`Overlay::holds_affine`]).
    Bn,
}

/// The overlay in the caller's words (see the [module docs](self)).
#[derive(Debug)]
pub struct Overlay<'o> {
    words: &'o mut [u32],
    kind: Kind,
}

/// The entry table a model and a scope call for, written into `out` (which
/// holds at least the header); returns the words the overlay needs.
fn layout(model: &Model<'_>, scope: Scope, out: &mut [u32]) -> Result<usize, AdaptError> {
    let kind = model.kind();
    let last = model.layer_count().saturating_sub(1);
    if scope.tail {
        let l = model.layer(last)?;
        if !matches!(l.op, Op::Dense(_)) {
            return Err(AdaptError::NoTail);
        }
    }
    if scope.restat && model.bn_records().next().is_none() {
        return Err(AdaptError::NoBn);
    }
    // Layers in order with what each gets.
    let mut n = 0usize;
    let entries_end = |n: usize| HEADER_WORDS + n * ENTRY_WORDS;
    let count = (0..model.layer_count())
        .filter(|&i| (scope.restat && bn_index(model, i).is_some()) || (scope.tail && i == last))
        .count();
    if count > MAX_ENTRIES {
        return Err(AdaptError::TooManyEntries);
    }
    let mut at = entries_end(count);
    let mut put = |e: usize, w: usize, v: u32| {
        if let Some(slot) = out.get_mut(entries_end(e) + w) {
            *slot = v;
        }
    };
    for i in 0..model.layer_count() {
        let bn = scope.restat && bn_index(model, i).is_some();
        let tail = scope.tail && i == last;
        if !(bn || tail) {
            continue;
        }
        let l = model.layer(i)?;
        let c = l.op.out_channels();
        let bias_len = match l.bias {
            Some(Data::I32(b)) => b.len(),
            Some(Data::F32(b)) => b.len(),
            _ => return Err(AdaptError::BadLayer { layer: i }),
        };
        let w_words = match l.weights {
            Some(Data::I8(w)) => w.len().div_ceil(4),
            // Unpacked to bytes (Overlay::patch).
            Some(Data::I8Pairs(w)) => w
                .len()
                .checked_mul(2)
                .ok_or(AdaptError::TooLarge)?
                .div_ceil(4),
            Some(Data::I32(w)) => w.len(),
            Some(Data::F32(w)) => w.len(),
            None => return Err(AdaptError::BadLayer { layer: i }),
        };
        let mut take = |words: usize| -> Result<u32, AdaptError> {
            let o = at;
            at = at.checked_add(words).ok_or(AdaptError::TooLarge)?;
            u32::try_from(o).map_err(|_| AdaptError::TooLarge)
        };
        let word = |v: usize| u32::try_from(v).map_err(|_| AdaptError::TooLarge);
        put(n, E_LAYER, word(i)?);
        put(n, E_CHANNELS, word(c)?);
        put(n, E_BIAS, take(bias_len)?);
        put(n, E_BIAS_LEN, word(bias_len)?);
        if kind == Kind::Int8 {
            put(n, E_MULT, take(c)?);
            put(n, E_SHIFT, take(c)?);
        }
        if kind == Kind::F32 || tail {
            put(n, E_W, take(w_words)?);
            put(n, E_W_LEN, word(w_words)?);
        }
        if bn {
            // γ, β only where a tail may train them.
            let affine = scope.tail && i + 1 == last;
            let len = if affine { 4 * c } else { 2 * c };
            put(n, E_BN, take(len)?);
            put(n, E_BN_LEN, word(len)?);
        }
        n += 1;
    }
    if let Some(h) = out.get_mut(..HEADER_WORDS) {
        h[0] = u32::from_le_bytes(MAGIC);
        h[1] = u32::from(VERSION) | scope.bits() << 16 | (n as u32) << 24;
        h[2] = model.header_crc();
        h[3] = word_u32(at)?;
    }
    Ok(at)
}

/// The first `need` of `words`, zeroed, with the header and entry table
/// `layout` writes for `model` and `scope`.
fn laid_out<'w>(
    model: &Model<'_>,
    scope: Scope,
    words: &'w mut [u32],
    need: usize,
) -> Result<&'w mut [u32], AdaptError> {
    let actual = words.len();
    let words = words.get_mut(..need).ok_or(AdaptError::BufferTooSmall {
        needed: need * 4,
        actual: actual * 4,
    })?;
    words.fill(0);
    layout(model, scope, words)?;
    Ok(words)
}

fn word_u32(v: usize) -> Result<u32, AdaptError> {
    u32::try_from(v).map_err(|_| AdaptError::TooLarge)
}

/// The index of the BN record folded into layer `i`, if any.
pub fn bn_index(model: &Model<'_>, i: usize) -> Option<usize> {
    model
        .bn_records()
        .position(|r| r.map(|r| r.layer == i).unwrap_or(false))
}

impl<'o> Overlay<'o> {
    /// Words (4 bytes each) an overlay for `model` and `scope` needs: the
    /// plan, before anything starts. Errors: [`AdaptError::NoBn`] (restat on
    /// a model without a BN table), [`AdaptError::NoTail`] (the last layer
    /// is not dense), [`AdaptError::TooLarge`].
    pub fn words_needed(model: &Model<'_>, scope: Scope) -> Result<usize, AdaptError> {
        layout(model, scope, &mut [])
    }

    /// An empty overlay (every entry inactive: the original model) for
    /// `model` and `scope` in `words` (at least
    /// [`words_needed`](Self::words_needed)). Everything past the header
    /// and the entries is zeroed.
    pub fn new(model: &Model<'_>, scope: Scope, words: &'o mut [u32]) -> Result<Self, AdaptError> {
        let need = Self::words_needed(model, scope)?;
        let words = laid_out(model, scope, words, need)?;
        Ok(Overlay {
            words,
            kind: model.kind(),
        })
    }

    /// An overlay from saved bytes (a [`super::store`] payload) copied into
    /// `words`. Accepted only for the same model (file CRC), the layout the
    /// model and the saved scope call for, and valid active entries;
    /// otherwise [`AdaptError::WrongModel`] or [`AdaptError::BadOverlay`],
    /// and nothing of the previous content of `words` is relied on.
    pub fn load(model: &Model<'_>, bytes: &[u8], words: &'o mut [u32]) -> Result<Self, AdaptError> {
        if bytes.len() < HEADER_WORDS * 4 || bytes.len() % 4 != 0 {
            return Err(AdaptError::BadOverlay);
        }
        let head = |k: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&bytes[4 * k..4 * k + 4]);
            u32::from_le_bytes(b)
        };
        if head(0) != u32::from_le_bytes(MAGIC) {
            return Err(AdaptError::BadOverlay);
        }
        let version = (head(1) & 0xFFFF) as u16;
        if version != VERSION {
            return Err(AdaptError::OverlayVersion { found: version });
        }
        if head(2) != model.header_crc() {
            return Err(AdaptError::WrongModel);
        }
        let scope = Scope::of_bits(head(1) >> 16 & 0xFF);
        let need = Self::words_needed(model, scope).map_err(|_| AdaptError::BadOverlay)?;
        if bytes.len() != need * 4 || head(3) as usize != need {
            return Err(AdaptError::BadOverlay);
        }
        // The layout the model calls for, then the saved words over it; the
        // entry table must be the same except flags and quantization.
        let words = laid_out(model, scope, words, need)?;
        let n = (head(1) >> 24) as usize;
        let mut expected = [0u32; ENTRY_WORDS];
        for e in 0..n {
            let at = HEADER_WORDS + e * ENTRY_WORDS;
            expected.copy_from_slice(&words[at..at + ENTRY_WORDS]);
            for (k, &want) in expected.iter().enumerate() {
                let got = head(at + k);
                let same = match k {
                    E_LAYER => got & 0xFFFF == want & 0xFFFF,
                    k if (E_QUANT..E_QUANT + QUANT_WORDS).contains(&k) => true,
                    _ => got == want,
                };
                if !same {
                    return Err(AdaptError::BadOverlay);
                }
            }
        }
        for (w, b) in words.iter_mut().zip(bytes.chunks_exact(4)) {
            *w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        let o = Overlay {
            words,
            kind: model.kind(),
        };
        o.validate(model)?;
        Ok(o)
    }

    /// Every active entry's stage is valid, every written BN record is
    /// valid, every f32 value finite.
    fn validate(&self, model: &Model<'_>) -> Result<(), AdaptError> {
        for e in 0..self.entries() {
            let layer = self.entry_layer(e);
            let mut l = model.layer(layer).map_err(|_| AdaptError::BadOverlay)?;
            if self.flags(e) & HAS_BN != 0 {
                let bn = self
                    .current_bn(model, layer)
                    .ok_or(AdaptError::BadOverlay)?;
                bn.check(l.op.out_channels())
                    .map_err(|_| AdaptError::BadOverlay)?;
            }
            if self.flags(e) & ACTIVE != 0 {
                self.patch(layer, &mut l)?;
                if let Some(stage) = l.output_stage() {
                    stage
                        .validate(l.op.out_channels())
                        .map_err(|_| AdaptError::BadOverlay)?;
                    let q = l.quant;
                    if !(q.scale.is_finite() && q.scale > 0.0) {
                        return Err(AdaptError::BadOverlay);
                    }
                }
                // The pair form cannot hold -128 (kernels::pack): what the
                // overlay holds for a file of pair words must fit it.
                if let (Some(Data::I8Pairs(_)), Some(Data::I8(w))) =
                    (model.layer(layer).ok().and_then(|f| f.weights), l.weights)
                {
                    if w.contains(&i8::MIN) {
                        return Err(AdaptError::BadOverlay);
                    }
                }
                let finite = |d: Option<Data<'_>>| match d {
                    Some(Data::F32(v)) => v.iter().all(|x| x.is_finite()),
                    _ => true,
                };
                if !finite(l.bias) || !finite(l.weights) {
                    return Err(AdaptError::BadOverlay);
                }
            }
        }
        Ok(())
    }

    /// The overlay as bytes, to save ([`super::store::Store::save`]).
    pub fn as_bytes(&self) -> &[u8] {
        cast_slice(self.words)
    }

    /// Bytes the overlay occupies.
    pub fn len_bytes(&self) -> usize {
        self.words.len() * 4
    }

    /// The scope it was planned for.
    pub fn scope(&self) -> Scope {
        Scope::of_bits(self.words[1] >> 16 & 0xFF)
    }

    /// Number of entries.
    pub fn entries(&self) -> usize {
        (self.words[1] >> 24) as usize
    }

    fn entry(&self, e: usize) -> &[u32] {
        let at = HEADER_WORDS + e * ENTRY_WORDS;
        self.words
            .get(at..at + ENTRY_WORDS)
            .unwrap_or(&[0; ENTRY_WORDS])
    }

    fn entry_mut(&mut self, e: usize) -> Option<&mut [u32]> {
        let at = HEADER_WORDS + e * ENTRY_WORDS;
        self.words.get_mut(at..at + ENTRY_WORDS)
    }

    /// The layer of entry `e`.
    pub fn entry_layer(&self, e: usize) -> usize {
        (self.entry(e)[E_LAYER] & 0xFFFF) as usize
    }

    /// The flags of entry `e`.
    pub fn flags(&self, e: usize) -> u16 {
        (self.entry(e)[E_LAYER] >> 16) as u16
    }

    /// The entry of layer `i`, if the overlay has one.
    pub fn entry_of(&self, i: usize) -> Option<usize> {
        (0..self.entries()).find(|&e| self.entry_layer(e) == i)
    }

    /// Set (`on`) or clear flags of entry `e`.
    pub fn set_flags(&mut self, e: usize, flags: u16, on: bool) {
        if let Some(en) = self.entry_mut(e) {
            let f = (en[E_LAYER] >> 16) as u16;
            let f = if on { f | flags } else { f & !flags };
            en[E_LAYER] = en[E_LAYER] & 0xFFFF | u32::from(f) << 16;
        }
    }

    /// Drop every adaptation: all entries inactive, no BN record, no
    /// weights, no quantization (the original model).
    pub fn reset(&mut self) {
        for e in 0..self.entries() {
            self.set_flags(e, ACTIVE | HAS_BN | HAS_WEIGHTS | HAS_QUANT, false);
        }
    }

    /// Whether any entry is active.
    pub fn is_active(&self) -> bool {
        (0..self.entries()).any(|e| self.flags(e) & ACTIVE != 0)
    }

    fn span(&self, e: usize, part: Part) -> Option<(usize, usize)> {
        let en = self.entry(e);
        let c = en[E_CHANNELS] as usize;
        let (off, len) = match part {
            Part::Bias => (en[E_BIAS], en[E_BIAS_LEN] as usize),
            Part::Multiplier => (en[E_MULT], c),
            Part::Shift => (en[E_SHIFT], c),
            Part::Weights => (en[E_W], en[E_W_LEN] as usize),
            Part::Bn => (en[E_BN], en[E_BN_LEN] as usize),
        };
        (off != 0).then_some((off as usize, len))
    }

    /// The words of a part of entry `e`, if the entry has it.
    pub fn part(&self, e: usize, part: Part) -> Option<&[u32]> {
        let (o, n) = self.span(e, part)?;
        self.words.get(o..o.checked_add(n)?)
    }

    /// The words of a part of entry `e`, to write.
    pub fn part_mut(&mut self, e: usize, part: Part) -> Option<&mut [u32]> {
        let (o, n) = self.span(e, part)?;
        self.words.get_mut(o..o.checked_add(n)?)
    }

    /// The output quantization stored in entry `e`.
    pub fn quant(&self, e: usize) -> QuantOut {
        let q = &self.entry(e)[E_QUANT..E_QUANT + QUANT_WORDS];
        QuantOut {
            scale: f32::from_bits(q[0]),
            zero_point: q[1] as i32,
            requant_zero_point: q[2] as i32,
            clamp_min: q[3] as i32,
            clamp_max: q[4] as i32,
            requant_scale: f32::from_bits(q[5]),
        }
    }

    /// Store an output quantization in entry `e` (sets [`HAS_QUANT`]).
    pub fn set_quant(&mut self, e: usize, q: QuantOut) {
        if let Some(en) = self.entry_mut(e) {
            en[E_QUANT..E_QUANT + QUANT_WORDS].copy_from_slice(&[
                q.scale.to_bits(),
                q.zero_point as u32,
                q.requant_zero_point as u32,
                q.clamp_min as u32,
                q.clamp_max as u32,
                q.requant_scale.to_bits(),
            ]);
        }
        self.set_flags(e, HAS_QUANT, true);
    }

    /// Whether entry `e` has room for γ, β (the layer a tail trains); every
    /// other BN entry holds only `E[x]`, `Var[x]`, with the file's γ, β.
    pub fn holds_affine(&self, e: usize) -> bool {
        let en = self.entry(e);
        en[E_BN] != 0 && en[E_BN_LEN] == 4 * en[E_CHANNELS]
    }

    /// Entry `e`'s statistics `(E[x], Var[x])`, if written ([`HAS_BN`]).
    pub fn stats_of(&self, e: usize) -> Option<(&[f32], &[f32])> {
        if self.flags(e) & HAS_BN == 0 {
            return None;
        }
        let v: &[f32] = cast_slice(self.part(e, Part::Bn)?);
        let c = self.entry(e)[E_CHANNELS] as usize;
        Some((v.get(..c)?, v.get(c..2 * c)?))
    }

    /// Entry `e`'s whole BN record (ε 0), if written ([`HAS_BN`]) and the
    /// entry holds γ, β ([`holds_affine`](Self::holds_affine)); for the
    /// others, [`current_bn`](Self::current_bn) adds the file's γ, β.
    pub fn bn_of(&self, e: usize) -> Option<BnState<'_>> {
        let (mean, var) = self.stats_of(e)?;
        if !self.holds_affine(e) {
            return None;
        }
        let v: &[f32] = cast_slice(self.part(e, Part::Bn)?);
        let c = mean.len();
        Some(BnState {
            gamma: v.get(2 * c..3 * c)?,
            beta: v.get(3 * c..4 * c)?,
            mean,
            var,
            eps: 0.0,
        })
    }

    /// Layer `i`'s BN state as the engine currently folds it: the
    /// overlay's statistics (and γ, β where the entry holds them) where it
    /// has a record, else the file's (ε always the file's). `None` for a
    /// layer without BN.
    pub fn current_bn<'s>(&'s self, model: &'s Model<'_>, i: usize) -> Option<BnState<'s>> {
        let file = model.bn_record(bn_index(model, i)?).ok()?;
        let mut s = BnState {
            gamma: file.gamma,
            beta: file.beta,
            mean: file.mean,
            var: file.var,
            eps: file.eps,
        };
        if let Some(e) = self.entry_of(i) {
            if let Some(bn) = self.bn_of(e) {
                s = BnState {
                    eps: file.eps,
                    ..bn
                };
            } else if let Some((mean, var)) = self.stats_of(e) {
                s.mean = mean;
                s.var = var;
            }
        }
        Some(s)
    }

    /// Write `state` as entry `e`'s BN record (sets [`HAS_BN`]): its
    /// statistics, and γ, β where the entry holds them
    /// ([`holds_affine`](Self::holds_affine)). Elsewhere γ, β are the
    /// file's and `state`'s are not stored: [`super::refold::refold`], the
    /// caller, refuses γ, β other than the file's there.
    pub fn set_bn(&mut self, e: usize, state: &BnState<'_>) -> Result<(), AdaptError> {
        let affine = self.holds_affine(e);
        let c = self.entry(e)[E_CHANNELS] as usize;
        let part = self.part_mut(e, Part::Bn).ok_or(AdaptError::NotInOverlay)?;
        let v: &mut [f32] = cast_slice_mut(part);
        state.check(c)?;
        let bad = AdaptError::BadOverlay;
        v.get_mut(..c).ok_or(bad)?.copy_from_slice(state.mean);
        v.get_mut(c..2 * c).ok_or(bad)?.copy_from_slice(state.var);
        if affine {
            v.get_mut(2 * c..3 * c)
                .ok_or(bad)?
                .copy_from_slice(state.gamma);
            v.get_mut(3 * c..4 * c)
                .ok_or(bad)?
                .copy_from_slice(state.beta);
        }
        self.set_flags(e, HAS_BN, true);
        Ok(())
    }

    /// Put the overlay's parameters into `layer` (layer `i` of the model)
    /// where entry `i` is active: bias, multipliers and shifts, weights
    /// (when written), output quantization (when written). A layer without
    /// an active entry is left as the file has it.
    pub fn patch<'s>(&'s self, i: usize, layer: &mut Layer<'s>) -> Result<(), AdaptError> {
        let Some(e) = self.entry_of(i) else {
            return Ok(());
        };
        let flags = self.flags(e);
        if flags & ACTIVE == 0 {
            return Ok(());
        }
        let bad = AdaptError::BadOverlay;
        let bias = self.part(e, Part::Bias).ok_or(bad)?;
        layer.bias = Some(match self.kind {
            Kind::Int8 => Data::I32(cast_slice(bias)),
            Kind::F32 => Data::F32(cast_slice(bias)),
        });
        if self.kind == Kind::Int8 {
            let m = self.part(e, Part::Multiplier).ok_or(bad)?;
            let s = self.part(e, Part::Shift).ok_or(bad)?;
            layer.requant = Some((cast_slice(m), cast_slice(s)));
        }
        if flags & HAS_WEIGHTS != 0 {
            let w = self.part(e, Part::Weights).ok_or(bad)?;
            let bytes: &[i8] = cast_slice(w);
            layer.weights = Some(match layer.weights {
                Some(Data::I8(file)) => Data::I8(bytes.get(..file.len()).ok_or(bad)?),
                // The same blocked order unpacked: the byte kernel computes
                // the same integers as the pair kernel.
                Some(Data::I8Pairs(file)) => Data::I8(
                    bytes
                        .get(..file.len().checked_mul(2).ok_or(bad)?)
                        .ok_or(bad)?,
                ),
                Some(Data::F32(_)) => Data::F32(cast_slice(w)),
                _ => return Err(bad),
            });
        }
        if flags & HAS_QUANT != 0 {
            layer.quant = self.quant(e);
        }
        Ok(())
    }
}
