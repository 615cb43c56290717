//! Integer-only int8 kernels (FORMAT.md, "int8 files"), batch 1, NHWC.
//!
//! # Arithmetic
//! Dense, conv2d and depthwise accumulate in i32,
//! ```text
//! acc[c] = bias[c] + Σ_p (x[p] - zp_in) · w[c, p]
//! ```
//! (with `ZP_FOLDED` the bias already holds `bias[c] - zp_in·Σ_p w[c, p]`
//! and the kernel sums `x·w` only), then apply the layer's
//! [`OutputStage`]: requantize with the channel's Q1.31 multiplier and shift
//! (round half up), add the zero point, clamp (ReLU/ReLU6), and for
//! sigmoid/tanh look the result up in a 256-entry table. Accumulation wraps
//! modulo 2^32, which is exact while `P·255·127 < 2^31` (the model reader
//! enforces it) and never panics otherwise.
//!
//! A padded tap of a convolution reads the real value 0, i.e. `x = zp_in`,
//! and so contributes `(zp_in - zp_in)·w = 0`: the kernels simply skip it.
//! That is why a padded convolution must subtract the zero point per load
//! (`zp_folded = false`): a folded bias would also have subtracted
//! `zp_in·w` for the skipped taps.
//!
//! Max pooling compares int8 values; average pooling sums in i32 and divides
//! by the number `n` of in-bounds taps rounding half up,
//! `⌊(2·sum + n) / (2·n)⌋`; both keep the input's scale and zero point.
//!
//! # Two weight forms, one result
//! Dense and conv weights come row-blocked ([`BlockedI8`]) either as bytes
//! (dtype `i8`) or as pair words (dtype `i8pair`, two weights of adjacent
//! rows per 32-bit word, `lo + 2^24·hi`). Both give bit-identical outputs
//! (exact integer arithmetic; tested against each other and a naive sum).
//!
//! # Cost (Cortex-M4, `thumbv7em-none-eabihf`, measured under QEMU `-icount`)
//! Dense is the convolution loop on a 1×1 input: per output pixel, passes
//! of 4 rows, each one inner loop per in-bounds kernel row, then the output
//! stage (about 20 instructions per output: `SMULL`, shifts, clamps, table).
//! - Bytes (`dot4`): per input one `LDRSB` of the input, four `LDRSB` of
//!   weights, four `SMLABB` into accumulators held in registers, `SUBS`,
//!   `BNE`: 11 instructions per 4 MACs, 2.75 per MAC (3.0 with a zero point
//!   subtracted per load). Measured: 2.85 per MAC on a 784 → 100 dense
//!   layer, 3.0 over the paper MLP (784-100-100-100-10). Wider shapes (8
//!   rows, several inputs per iteration) were measured slower: LLVM hoists
//!   the loads and spills (13 allocatable registers, `r7` being the frame
//!   pointer), and without packed-SIMD instructions (`SXTB16`, `SMLAD`:
//!   intrinsics, which this crate does not use) a byte weight costs a load
//!   and a multiply-accumulate, so about 2.25 per MAC is the floor.
//! - Pairs (`dot_pairs`): one `SMLAL` (32×32 + 64) multiplies an input by
//!   a word and adds two MACs at once, `x·lo + 2^24·x·hi`, recovered exactly
//!   every 512 inputs (256 with a zero point): two inputs per iteration are
//!   two `LDRSB`, four word loads, four `SMLAL`, `SUBS`, `BNE`, 11
//!   instructions per 8 MACs, 1.375 per MAC. Measured: 1.56 per MAC on
//!   784 → 100 and 1.78 over the whole paper MLP, output stages included.
//!   One call per run (a kernel row, or a gathered window: below), the
//!   64-bit sums split at its end. (An earlier form carried the sums across
//!   the kernel rows of a pass inside one call; its bookkeeping cost about
//!   90 instructions per row and spilled the loop's registers.)
//! - Blocks of 8 rows (bytes) are never faster than blocks of 4 in int8
//!   (the rows of the bench), so they have one loop, zero point
//!   subtracted (0 when folded: one `SUB` per input more), not two: about
//!   180 bytes of engine code.
//! - Kernels of several rows: a window whose patch `KH·KW·Cin` fits 512
//!   bytes is first copied (words where the target allows unaligned ones)
//!   into one contiguous run, its padded taps as the zero point, which add
//!   `(zp - zp)·w = 0` exactly as skipping them does; its weights are one
//!   run already (`[KH][KW][Cin][R]` per block), so each pass of 4 filters
//!   is one dot call over the whole patch. The dot routine (a `dot4`
//!   variant or `dot_pairs`) is chosen once per layer and called straight
//!   from the pass loop. Measured against the previous kernels (unpadded
//!   windows of at most 64 taps gathered, pair sums carried across kernel
//!   rows, a dispatch per pass): the `cnn` preset's 5×5 conv 16 → 32
//!   (pairs) from 1.88 to 1.58 instructions per MAC; a padded 3×3 conv
//!   16 → 32 on 12×12 from 2.90 to 2.27 in pairs but from 3.18 to 3.40 in
//!   bytes (its border windows now multiply their padded taps: MACs
//!   counted unpadded). With the gathered run the pair form pays from 16
//!   inputs ([`PAIR_MIN_RUN`]), so the first convolutions (5×5 on one
//!   channel; DS-CNN's 10×4) now run in pairs: 5.97 to 4.85 and 4.98 to
//!   3.42 per MAC.
//! - Depthwise and pooling share one per-channel loop (`channel_windows`):
//!   accumulators on the stack, channels innermost, about 8 instructions per
//!   depthwise MAC plus the per-tap overhead.
//!
//! Code size counts as much as speed (a Cortex-M engine's flash budget):
//! the hot loops are few small generic functions, everything around them
//! is one non-generic function per kind of layer, and loops that are not
//! hot carry an `unroll_barrier` (LLVM would otherwise unroll them).

use super::pack::{check_block_rows, packed_len, padded_rows};
use super::requant::OutputStage;
use super::{for_each_window, unroll_barrier, NoTap, Tap};
use crate::error::{check_len, Error, Operand, Param};
use crate::layers::conv::{mul, Padding};
use crate::layers::{Conv2d, DepthwiseConv2d, Pool2d, Window};

/// Most in-bounds taps an average-pooling window (or pixels a global
/// average) may have: `2^22`, so that `2·sum + n` fits in i32.
pub const MAX_POOL_TAPS: usize = 1 << 22;

/// Most classes a softmax takes (the model header stores them in a u16), so
/// that the integer softmax's sums fit in u32.
pub const MAX_CLASSES: usize = u16::MAX as usize;

fn check_zero_point(zp: i32) -> Result<(), Error> {
    if (-128..=127).contains(&zp) {
        Ok(())
    } else {
        Err(Error::InvalidParam(Param::ZeroPoint))
    }
}

/// `a[k] += xv·w[k]` for `k < 4`.
#[inline(always)]
fn mac4(a: &mut [i32; 4], xv: i32, w: &[i8; 4]) {
    for k in 0..4 {
        a[k] = a[k].wrapping_add(xv.wrapping_mul(i32::from(w[k])));
    }
}

/// The i8 form over one run of inputs: `acc[k] += Σ_i (x[i] - zp)·w[i·S + k]`
/// for `k < 4`, four rows of a block whose weights for one input are
/// `S = R` bytes apart. `w` starts at the run's first weight of the four
/// rows (in a block of 8, rows 4..8 start 4 past the block's rows 0..4)
/// and runs to the end of the block; when the run's last input has only
/// its 4 weights left (rows 4..8, last input of the block) it is added
/// apart.
///
/// The loop is one input per iteration: `LDRSB` of the input (pre-indexed),
/// four `LDRSB` of the weights at offsets 0..3 from a pointer advanced by
/// `S`, four `SMLABB` (`SUB` and four `MLA` with the zero point), `SUBS`,
/// `BNE`: 11 instructions per 4 MACs (12 with the zero point), nothing
/// spilled. Wider shapes (8 rows, or several inputs per iteration) were
/// measured slower: LLVM's scheduler hoists the loads and spills.
#[inline(never)]
fn dot4<const S: usize, const ZP: bool>(
    acc: &mut [i32; 4],
    x: &[i8],
    w: BlockedI8<'_>,
    at: usize,
    zp: i32,
) {
    let BlockedI8::Bytes(w) = w else {
        return;
    };
    let w = w.get(at..).unwrap_or(&[]);
    let load = |v: i8| {
        if ZP {
            i32::from(v).wrapping_sub(zp)
        } else {
            i32::from(v)
        }
    };
    let mut a = *acc;
    for (wk, &xv) in w.chunks_exact(S).zip(x) {
        unroll_barrier();
        if let Some(wk) = wk.first_chunk::<4>() {
            mac4(&mut a, load(xv), wk);
        }
    }
    let full = w.len() / S;
    let wl = w.get(full * S..).and_then(<[i8]>::first_chunk::<4>);
    if let (Some(&xv), Some(wl)) = (x.get(full), wl) {
        mac4(&mut a, load(xv), wl);
    }
    *acc = a;
}

/// Inputs per 64-bit accumulation of the pair form before it is split:
/// `|Σ x·w| < 2^23` in the low field needs `n·128·127 < 2^23` without a
/// zero point (`n ≤ 515`) and `n·255·127 < 2^23` with one (`n ≤ 259`).
const PAIR_SPAN: usize = 512;
/// As [`PAIR_SPAN`], with a zero point subtracted.
const PAIR_SPAN_ZP: usize = 256;

/// Add a pair-form accumulator `a = L + 2^24·H` (`|L| < 2^23`) to two
/// rows: `acc[0] += L`, `acc[1] += H`.
#[inline(always)]
fn split_pair(a: i64, acc: &mut [i32]) {
    let lo = ((a as i32) << 8) >> 8;
    let hi = (a.wrapping_sub(i64::from(lo)) >> 24) as i32;
    if let [r0, r1, ..] = acc {
        *r0 = r0.wrapping_add(lo);
        *r1 = r1.wrapping_add(hi);
    }
}

/// `a[k] += xv·w[k]`, 32×32 → 64-bit (`SMLAL`).
#[inline(always)]
fn mac_pairs(a: &mut [i64; 2], xv: i32, w: &[i32; 2]) {
    for k in 0..2 {
        a[k] = a[k].wrapping_add(i64::from(xv) * i64::from(w[k]));
    }
}

/// One span of the pair form (at most [`PAIR_SPAN`] inputs, or
/// [`PAIR_SPAN_ZP`] with a zero point): `a[k] += Σ_i (x[i] - zp)·w[2i + k]`
/// for the two words `k` of the four rows of a block; `w` holds two words
/// per input of `x` (more are ignored).
///
/// Two inputs per iteration: two `LDRSB`, four word loads (an `LDRD` where
/// adjacent), four `SMLAL`, `SUBS`, `BNE`: 11 instructions per 8 MACs,
/// 1.375 per MAC, nothing spilled (measured; four or eight inputs per
/// iteration spill); with a zero point two `SUB`s more (1.625 per MAC).
/// An odd last input is added apart.
#[inline(always)]
fn span_pairs(acc: &mut [i64; 2], x: &[i8], w: &[i32], zp: i32) {
    // A local copy: the caller's memory would be kept up to date across
    // each `unroll_barrier`.
    let mut a = *acc;
    // As arrays: every load at a constant offset from one pointer.
    let (x2, w4) = (x.chunks_exact(2), w.chunks_exact(4));
    let (n2, xt) = (x2.len(), x2.remainder());
    let mut body = |xc: &[i8], wc: &[i32], zp: i32| {
        let (Some(xc), Some(wc)) = (xc.first_chunk::<2>(), wc.first_chunk::<4>()) else {
            return;
        };
        for j in 0..2 {
            let xv = i64::from(i32::from(xc[j]).wrapping_sub(zp));
            for k in 0..2 {
                a[k] = a[k].wrapping_add(xv * i64::from(wc[2 * j + k]));
            }
        }
    };
    // Two copies of the loop: without a zero point it has no `SUB`s.
    if zp == 0 {
        for (xc, wc) in x2.zip(w4) {
            unroll_barrier();
            body(xc, wc, 0);
        }
    } else {
        for (xc, wc) in x2.zip(w4) {
            unroll_barrier();
            body(xc, wc, zp);
        }
    }
    let wt = w.get(4 * n2..).and_then(<[i32]>::first_chunk::<2>);
    if let (Some(&xv), Some(wl)) = (xt.first(), wt) {
        mac_pairs(&mut a, i32::from(xv).wrapping_sub(zp), wl);
    }
    *acc = a;
}

/// The pair form (FORMAT.md dtype `i8pair`, blocks of 4 rows) over one
/// run of inputs, span by span (at most [`PAIR_SPAN`] inputs, or
/// [`PAIR_SPAN_ZP`] with a zero point): as `dot4`, from words that each
/// hold the weights of two adjacent rows for one input, `w = lo + 2^24·hi`
/// (`lo`, `hi` in `[-127, 127]`), two words per input.
///
/// One 32-bit multiply-accumulate into a 64-bit accumulator (`SMLAL`) then
/// does two MACs: `Σ x·w = Σ x·lo + 2^24·Σ x·hi`, and as long as the low
/// sum stays within `±2^23` (the span) the two sums are recovered exactly
/// (`split_pair`): the results are bit-identical to the i8 form's.
#[inline(never)]
fn dot_pairs(acc: &mut [i32; 4], x: &[i8], w: BlockedI8<'_>, at: usize, zp: i32) {
    let BlockedI8::Pairs(w) = w else {
        return;
    };
    let span = if zp == 0 { PAIR_SPAN } else { PAIR_SPAN_ZP };
    // Opaque to the optimiser: `acc` stays in memory, read and written by
    // the splits only, instead of holding four registers across the loop
    // (which would spill the loop's own).
    let acc = core::hint::black_box(acc);
    let (mut x, mut w) = (x, w.get(at..).unwrap_or(&[]));
    while let Some((xs, xr)) = x.split_at_checked(x.len().min(span)) {
        let (ws, wr) = w.split_at_checked(2 * xs.len()).unwrap_or((w, &[]));
        let mut a = [0i64; 2];
        span_pairs(&mut a, xs, ws, zp);
        split_pair(a[0], &mut acc[0..2]);
        split_pair(a[1], &mut acc[2..4]);
        if xr.is_empty() {
            break;
        }
        (x, w) = (xr, wr);
    }
}

/// Row-blocked int8 weights of a dense or conv layer, in one of their two
/// stored forms (FORMAT.md, "Row-blocked weights"; both in blocks of `R`
/// rows, `stored[(b·P + p)·R + r] = W[b·R + r, p]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockedI8<'a> {
    /// dtype `i8`: one byte per weight.
    Bytes(&'a [i8]),
    /// dtype `i8pair`: one 32-bit word per two adjacent weights `(lo, hi)`
    /// (rows `2k`, `2k + 1` of a block, same input), `lo + 2^24·hi`; see
    /// [`pack_pairs`](super::pack::pack_pairs). Blocks of 4 rows only (the
    /// loop takes 4 rows at a time; 8 would only change the stride). Twice
    /// the flash of [`Bytes`](Self::Bytes), about half the instructions per
    /// MAC.
    Pairs(&'a [i32]),
}

impl BlockedI8<'_> {
    /// Stored length in weights (two per word for pairs).
    fn weights(&self) -> usize {
        match self {
            BlockedI8::Bytes(w) => w.len(),
            BlockedI8::Pairs(w) => w.len().saturating_mul(2),
        }
    }
}

/// Dense layer on one sample: `y = stage(bias + W·(x - zp_in))`.
///
/// - `x`: `[inputs]`; `w`: `[outputs, inputs]` row-blocked with `r` rows
///   ([`packed_len`]`(outputs, inputs, r)` elements); `bias`:
///   `[⌈outputs/r⌉·r]` (the padding entries are ignored); `y`: `[outputs]`.
/// - `zp_in`: the input zero point, in `[-128, 127]`; pass 0 for a layer
///   with `ZP_FOLDED` (its bias already holds the zero point's share).
/// - `stage`: `outputs` multipliers and shifts, clamps, optional table.
///
/// Errors (nothing written): `r` not 4 or 8 (`Param::BlockRows`), a zero
/// size (`Param::Dimension`), a length mismatch of `x`, `w`, `bias` or `y`
/// (`LengthMismatch` naming it), `zp_in` out of range (`Param::ZeroPoint`),
/// an invalid stage ([`OutputStage::validate`]).
pub fn dense_i8(
    x: &[i8],
    w: &[i8],
    r: usize,
    bias: &[i32],
    inputs: usize,
    outputs: usize,
    zp_in: i32,
    stage: &OutputStage<'_>,
    y: &mut [i8],
) -> Result<(), Error> {
    dense_blocked_i8(
        x,
        BlockedI8::Bytes(w),
        r,
        bias,
        inputs,
        outputs,
        zp_in,
        stage,
        y,
    )
}

/// [`dense_i8`] with the weights in either stored form ([`BlockedI8`]);
/// the results do not depend on the form. For [`BlockedI8::Pairs`] `r`
/// must be 4, the weight length is counted in weights (two per word), and
/// the words must
/// be valid pairs (both halves in `[-127, 127]`, as
/// [`pack_pairs`](super::pack::pack_pairs) makes them and the model
/// reader checks): other words give unspecified outputs (never a panic).
pub fn dense_blocked_i8(
    x: &[i8],
    w: BlockedI8<'_>,
    r: usize,
    bias: &[i32],
    inputs: usize,
    outputs: usize,
    zp_in: i32,
    stage: &OutputStage<'_>,
    y: &mut [i8],
) -> Result<(), Error> {
    check_block_rows(r)?;
    if inputs == 0 || outputs == 0 {
        return Err(Error::InvalidParam(Param::Dimension));
    }
    // A dense layer is a 1×1 convolution of a 1×1 input with `inputs`
    // channels (no padding: the zero point, if any, is subtracted per load).
    let geom = Conv2d {
        in_h: 1,
        in_w: 1,
        in_c: inputs,
        out_c: outputs,
        window: Window::square(1, 1, 0),
    };
    conv2d_blocked_i8(&geom, x, w, r, bias, zp_in, false, stage, y)
}

/// 2-d convolution on one sample, computed directly (no im2col).
///
/// - `x`: `[in_h, in_w, in_c]`; `w`: filters `[out_c, KH, KW, in_c]`
///   row-blocked with `r` rows, i.e. `[⌈out_c/r⌉][KH][KW][in_c][r]`;
///   `bias`: `[⌈out_c/r⌉·r]`; `y`: `[out_h, out_w, out_c]`.
/// - `zp_in`: the input zero point in `[-128, 127]`. With `zp_folded` the
///   bias already holds `-zp_in·Σw` and the kernel sums `x·w`; that is only
///   valid without padding (see the [module docs](self)).
///
/// Per output pixel and block of `r` filters, the accumulators start at the
/// bias and run over the in-bounds kernel rows; each is one contiguous run
/// of `KW'·in_c` inputs and `KW'·in_c·r` weights (padded taps are skipped).
///
/// Errors (nothing written): `r` not 4 or 8 (`Param::BlockRows`), an
/// invalid geometry (as [`Conv2d::new`]), a length mismatch of `x`, `w`,
/// `bias` or `y`, `zp_in` out of range (`Param::ZeroPoint`), `zp_folded`
/// with padding (`Param::Padding`), an invalid stage.
pub fn conv2d_i8(
    geom: &Conv2d,
    x: &[i8],
    w: &[i8],
    r: usize,
    bias: &[i32],
    zp_in: i32,
    zp_folded: bool,
    stage: &OutputStage<'_>,
    y: &mut [i8],
) -> Result<(), Error> {
    conv2d_blocked_i8(
        geom,
        x,
        BlockedI8::Bytes(w),
        r,
        bias,
        zp_in,
        zp_folded,
        stage,
        y,
    )
}

/// [`conv2d_i8`] with the weights in either stored form ([`BlockedI8`]),
/// as [`dense_blocked_i8`] (pair words need `r = 4`, else
/// `Param::BlockRows`).
#[inline(never)]
pub fn conv2d_blocked_i8(
    geom: &Conv2d,
    x: &[i8],
    w: BlockedI8<'_>,
    r: usize,
    bias: &[i32],
    zp_in: i32,
    zp_folded: bool,
    stage: &OutputStage<'_>,
    y: &mut [i8],
) -> Result<(), Error> {
    check_block_rows(r)?;
    if matches!(w, BlockedI8::Pairs(_)) && r != 4 {
        return Err(Error::InvalidParam(Param::BlockRows));
    }
    let out = geom.output_shape(1)?;
    let win = geom.window;
    let patch = mul(mul(win.kernel_h, win.kernel_w)?, geom.in_c)?;
    check_len(Operand::Input, geom.input_shape(1).len()?, x.len())?;
    check_len(
        Operand::Weight,
        packed_len(geom.out_c, patch, r)?,
        w.weights(),
    )?;
    check_len(Operand::Bias, padded_rows(geom.out_c, r)?, bias.len())?;
    check_zero_point(zp_in)?;
    if zp_folded && win.padding != Padding::NONE {
        return Err(Error::InvalidParam(Param::Padding));
    }
    stage.validate(geom.out_c)?;
    check_len(Operand::Output, out.len()?, y.len())?;
    let zp = if zp_folded { 0 } else { zp_in };
    conv_blocks(
        geom, out.h, out.w, patch, x, w, r, bias, zp, stage, y, &mut NoTap,
    );
    Ok(())
}

/// Most taps (`KH·KW·Cin`) of a convolution whose windows `conv_blocks`
/// gathers into one run per pixel (bytes of its stack frame).
const GATHER: usize = 512;

/// Inputs per dot call of [`conv2d_blocked_i8`] on a window with every tap
/// in bounds (the "run"; a dense layer is a 1×1 kernel over all its inputs,
/// `in_c`): the whole patch `KH·KW·Cin` where the kernel has several rows
/// and the patch fits the gather buffer (512), else one kernel row
/// `KW·Cin`. Each call costs a few dozen instructions besides its MACs, so
/// the run decides which weight form is faster (see [`PAIR_MIN_RUN`]).
pub fn dot_run_len(kernel_h: usize, kernel_w: usize, in_c: usize) -> usize {
    let row = kernel_w.saturating_mul(in_c);
    let patch = kernel_h.saturating_mul(row);
    if gathers(kernel_h, patch) {
        patch
    } else {
        row
    }
}

/// Whether `conv_blocks` copies each window of a kernel with `kernel_h`
/// rows and `patch = KH·KW·Cin` taps into one run.
fn gathers(kernel_h: usize, patch: usize) -> bool {
    kernel_h > 1 && patch <= GATHER
}

/// Whether the pair form is the faster one for a dense layer (`1, 1,
/// inputs`) or a convolution (`KH, KW, Cin`) on a Cortex-M4: its run
/// ([`dot_run_len`]) is at least [`PAIR_MIN_RUN`]. The exporter's `auto`
/// weight form (with blocks of 4 rows) and the firmware bench use it.
pub fn pairs_faster(kernel_h: usize, kernel_w: usize, in_c: usize) -> bool {
    dot_run_len(kernel_h, kernel_w, in_c) >= PAIR_MIN_RUN
}

/// The shortest run ([`dot_run_len`]) from which the pair form
/// ([`BlockedI8::Pairs`]) is faster than bytes on a Cortex-M4: the pair
/// loop does two MACs per `SMLAL` but pays more per call (two 64-bit
/// accumulators to set up and split). Measured under QEMU (`cargo xtask
/// bench firmware`, the `run=` rows, instructions per MAC, bytes / pairs;
/// the convolutions' runs are their gathered patches, `9·Cin`):
///
/// | run | dense `N×32` | conv 3×3 on 12×12×Cin, 16 filters |
/// |----:|-------------|------------------------------------|
/// | 8   | 11.74 / 12.63 |            |
/// | 16  | 7.24 / 7.00 |              |
/// | 18  |             | 6.15 / 5.79  |
/// | 24  | 5.75 / 5.13 |              |
/// | 32  | 5.00 / 4.19 |              |
/// | 36  |             | 4.40 / 3.54  |
/// | 48  | 4.25 / 3.25 |              |
/// | 64  | 3.87 / 2.78 |              |
/// | 72  |             | 3.61 / 2.49  |
/// | 144 |             | 3.21 / 1.96  |
///
/// The rule itself is [`pairs_faster`].
pub const PAIR_MIN_RUN: usize = 16;

/// Channels per output stage call of `conv_blocks` (measured: 16 beats 4,
/// the old one call per pass, everywhere; 32 is 1 % slower on `cnn`, 0.6 %
/// faster on DS-CNN's 64 channels).
const STAGE_GROUP: usize = 16;

/// `dst = src` over their common length, four bytes per load and store
/// where the target allows unaligned words (Cortex-M3 and up).
#[inline(always)]
fn copy_run(dst: &mut [i8], src: &[i8]) {
    let (mut d4, mut s4) = (dst.chunks_exact_mut(4), src.chunks_exact(4));
    for (d, s) in (&mut d4).zip(&mut s4) {
        unroll_barrier();
        d.copy_from_slice(s);
    }
    for (d, s) in d4.into_remainder().iter_mut().zip(s4.remainder()) {
        unroll_barrier();
        *d = *s;
    }
}

/// Where the weights of pass `i` (4 filters) start in the blocked weights,
/// for a run whose first weight is stored unit `w0` of block 0: blocks of
/// `per_block` units hold one pass (`R = 4`, `h = 0`) or two (`R = 8`, `h =
/// 1`: bytes only, the second pass 4 bytes in).
#[derive(Clone, Copy)]
struct PassAt {
    per_block: usize,
    h: usize,
}

impl PassAt {
    #[inline(always)]
    fn at(self, i: usize, w0: usize) -> usize {
        (i >> self.h) * self.per_block + w0 + (i & self.h) * 4
    }
}

/// A dot routine: `acc += Σ (x - zp)·w` over one run `x` for the 4
/// filters of a pass whose weights start at stored unit `at` of the
/// blocked weights (`dot4` for bytes, `dot_pairs` for pair words; each
/// does nothing given the other form).
type Dot = fn(&mut [i32; 4], &[i8], BlockedI8<'_>, usize, i32);

/// The dot routine for weights `w` in blocks of `r` rows and zero point
/// `zp` (0 when folded). Blocks of 8 are never faster than 4 in int8
/// (module docs): one loop serves them, folded or not; pair words are
/// blocked by 4 rows (validated). Chosen once per layer: the passes then
/// call it directly, with no dispatch of their own.
fn dot_for(w: BlockedI8<'_>, r: usize, zp: i32) -> Dot {
    match (w, r, zp) {
        (BlockedI8::Pairs(_), _, _) => dot_pairs,
        (_, 4, 0) => dot4::<4, false>,
        (_, 4, _) => dot4::<4, true>,
        _ => dot4::<8, true>,
    }
}

/// The dense and convolution loop (arguments validated; `zp` 0 when
/// folded): pixels, then passes of 4 filters (halves of a block of 8), each
/// one dot routine per run of its window, then the output stage once per
/// [`STAGE_GROUP`] channels. Passes that are entirely padding (past
/// `out_c`) are skipped.
///
/// A run is an in-bounds kernel row (`KW'·in_c` contiguous inputs in NHWC,
/// and as many weights times R contiguous in the blocked layout), or, for a
/// kernel of several rows whose patch fits [`GATHER`], the whole window
/// copied into one run: its weights already are one (`[KH][KW][Cin][R]`
/// per block), and its padded taps are copied as the zero point, which
/// adds `(zp - zp)·w = 0`, exactly what skipping them adds. One call per
/// pass then covers the patch; short kernel rows (a first layer: Cin = 1,
/// KW·Cin = 5) would otherwise cost a call each for a few MACs.
#[inline(never)]
pub(crate) fn conv_blocks(
    c: &Conv2d,
    out_h: usize,
    out_w: usize,
    patch: usize,
    x: &[i8],
    w: BlockedI8<'_>,
    r: usize,
    bias: &[i32],
    zp: i32,
    stage: &OutputStage<'_>,
    y: &mut [i8],
    tap: &mut impl Tap,
) {
    let (cin, kw, cout) = (c.in_c, c.window.kernel_w, c.out_c);
    // Stored units per weight: 1 for bytes, 1/2 for pair words.
    let shift = usize::from(matches!(w, BlockedI8::Pairs(_)));
    let dot = dot_for(w, r, zp);
    let passes = PassAt {
        per_block: (patch * r) >> shift,
        h: usize::from(r == 8),
    };
    let (x_step, w_step) = (c.in_w * cin, (kw * cin * r) >> shift);
    let gather = gathers(c.window.kernel_h, patch);
    // Made on the first gathered pixel: a dense layer never pays for it.
    let mut buf: Option<[i8; GATHER]> = None;
    let mut accs = [[0i32; 4]; STAGE_GROUP / 4];
    let n_pass = cout.div_ceil(4);
    for_each_window(&c.window, c.in_h, c.in_w, out_h, out_w, |o, th, tw| {
        let Some(pixel) = y.get_mut(o * cout..(o + 1) * cout) else {
            return;
        };
        let mut len = tw.len() * cin;
        let mut x0 = (th.start * c.in_w + tw.start) * cin;
        let mut w0 = ((th.lo * kw + tw.lo) * cin * r) >> shift;
        let mut rows = th.len();
        let mut src = x;
        if gather {
            let run = buf.get_or_insert([0; GATHER]);
            if rows * len != patch {
                // Padded taps read as the zero point.
                for v in run.iter_mut().take(patch) {
                    unroll_barrier();
                    *v = zp as i8;
                }
            }
            let d0 = (th.lo * kw + tw.lo) * cin;
            for row in 0..rows {
                let (s, d) = (x0 + row * x_step, d0 + row * kw * cin);
                if let (Some(xs), Some(ds)) = (x.get(s..s + len), run.get_mut(d..d + len)) {
                    copy_run(ds, xs);
                }
            }
            (src, x0, w0, len, rows) = (&run[..], 0, 0, patch, 1);
        }
        // The output stage once per group of up to STAGE_GROUP channels
        // (its entry costs about as much as 4 outputs), not once per pass.
        let mut g0 = 0;
        while g0 < n_pass {
            let n = (n_pass - g0).min(accs.len());
            let (Some(group), Some(b)) = (accs.get_mut(..n), bias.get(g0 * 4..)) else {
                return;
            };
            for (acc, b) in group.iter_mut().zip(b.chunks_exact(4)) {
                if let Some(b) = b.first_chunk::<4>() {
                    *acc = *b;
                }
            }
            for row in 0..rows {
                let start = x0 + row * x_step;
                let Some(xs) = src.get(start..start + len) else {
                    break;
                };
                let w0 = w0 + row * w_step;
                for (k, acc) in group.iter_mut().enumerate() {
                    unroll_barrier();
                    dot(acc, xs, w, passes.at(g0 + k, w0), zp);
                }
            }
            for (k, acc) in group.iter().enumerate() {
                let i = g0 + k;
                tap.acc(i * 4, acc.get(..cout - i * 4).unwrap_or(acc));
            }
            let g = g0 * 4..((g0 + n) * 4).min(cout);
            let (m, sh) = (&stage.multipliers, &stage.shifts);
            if let (Some(yg), Some(mg), Some(sg)) =
                (pixel.get_mut(g.clone()), m.get(g.clone()), sh.get(g))
            {
                stage.write(accs.as_flattened(), mg, sg, yg);
            }
            g0 += n;
        }
    });
}

/// Depthwise convolution (channel multiplier 1) on one sample.
///
/// - `x`: `[in_h, in_w, C]`; `w`: taps `[KH, KW, C]` (plain); `bias`: `[C]`;
///   `y`: `[out_h, out_w, C]`; `zp_in` in `[-128, 127]`, subtracted from
///   every loaded input (depthwise layers are never zero-point-folded).
///
/// Per output pixel, blocks of channels accumulate on the stack over the
/// in-bounds taps (see `channel_windows`); within a tap the channels'
/// inputs and weights are contiguous.
///
/// Errors (nothing written): an invalid geometry, a length mismatch of
/// `x`, `w`, `bias` or `y`, `zp_in` out of range, an invalid stage.
pub fn depthwise_i8(
    geom: &DepthwiseConv2d,
    x: &[i8],
    w: &[i8],
    bias: &[i32],
    zp_in: i32,
    stage: &OutputStage<'_>,
    y: &mut [i8],
) -> Result<(), Error> {
    let out = geom.output_shape(1)?;
    check_len(Operand::Input, geom.input_shape(1).len()?, x.len())?;
    check_len(Operand::Weight, geom.weight_len()?, w.len())?;
    check_len(Operand::Bias, geom.channels, bias.len())?;
    check_zero_point(zp_in)?;
    stage.validate(geom.channels)?;
    check_len(Operand::Output, out.len()?, y.len())?;
    let op = ChannelOp::Taps {
        w,
        kw: geom.window.kernel_w,
        bias,
        zp: zp_in,
        stage,
    };
    let dims = (geom.in_h, geom.in_w, geom.channels);
    channel_windows(op, &geom.window, dims, (out.h, out.w), x, y, &mut NoTap);
    Ok(())
}

/// What `channel_windows` computes per channel of each window.
#[derive(Clone, Copy)]
pub(crate) enum ChannelOp<'a> {
    /// The largest input (max pooling).
    Max,
    /// The rounded mean (average pooling, global average pooling).
    Mean,
    /// `stage(bias + Σ (x - zp)·w[tap])` (depthwise convolution; `w` is
    /// `[KH, KW, C]`, `kw` its KW).
    Taps {
        w: &'a [i8],
        kw: usize,
        bias: &'a [i32],
        zp: i32,
        stage: &'a OutputStage<'a>,
    },
}

/// The `KW` of a depthwise op (0 for pooling, which has no taps).
fn kw_of(op: ChannelOp<'_>) -> usize {
    match op {
        ChannelOp::Taps { kw, .. } => kw,
        _ => 0,
    }
}

/// One tap of `channel_windows` on a block of accumulators: `xp` the
/// input pixel from the block's first channel, `at` the tap's first weight
/// (depthwise). Not inlined: one copy of each loop (code size).
#[inline(never)]
fn tap_i8(op: ChannelOp<'_>, a: &mut [i32], xp: &[i8], at: usize) {
    match op {
        ChannelOp::Max => {
            for (v, &xv) in a.iter_mut().zip(xp) {
                unroll_barrier();
                *v = (*v).max(i32::from(xv));
            }
        }
        ChannelOp::Mean => {
            for (v, &xv) in a.iter_mut().zip(xp) {
                unroll_barrier();
                *v += i32::from(xv);
            }
        }
        ChannelOp::Taps { w, zp, .. } => {
            let wp = w.get(at..).unwrap_or(&[]);
            for ((v, &xv), &wv) in a.iter_mut().zip(xp).zip(wp) {
                unroll_barrier();
                let xv = i32::from(xv).wrapping_sub(zp);
                *v = v.wrapping_add(xv.wrapping_mul(i32::from(wv)));
            }
        }
    }
}

/// Channels per stack block of `channel_windows`: 64 (256 B of stack), so
/// that a 64-channel layer (DS-CNN's depthwise) takes one call per tap and
/// pixel instead of two (measured: 11.77 → 10.85 instructions per MAC on
/// its 25×5×64 depthwise layers).
const CHANNEL_BLOCK: usize = 64;

/// Every per-channel window kernel (depthwise convolution, max and average
/// pooling, global average pooling: one function, for code size), arguments
/// validated. Per output pixel and block of [`CHANNEL_BLOCK`] channels,
/// i32 accumulators on the stack start at the bias, -128 or 0, take every
/// in-bounds tap in window order (channels innermost: contiguous in NHWC
/// and in the taps), then become outputs.
///
/// Depthwise costs about 8 instructions per MAC (`LDRSB` of the input,
/// `SUB` of the zero point, `LDRSB` of the tap, load, `MLA`, store of the
/// accumulator, the loop), plus a few per tap and block.
#[inline(never)]
pub(crate) fn channel_windows(
    op: ChannelOp<'_>,
    win: &Window,
    (in_h, in_w, c): (usize, usize, usize),
    (out_h, out_w): (usize, usize),
    x: &[i8],
    y: &mut [i8],
    tap: &mut impl Tap,
) {
    let mut acc = [0i32; CHANNEL_BLOCK];
    for_each_window(win, in_h, in_w, out_h, out_w, |o, th, tw| {
        let Some(pixel) = y.get_mut(o * c..(o + 1) * c) else {
            return;
        };
        // 1 ≤ n ≤ KH·KW ≤ 2^22 for pooling (validated).
        let n = (th.len() * tw.len()) as i32;
        for (c0, out) in (0..)
            .step_by(CHANNEL_BLOCK)
            .zip(pixel.chunks_mut(CHANNEL_BLOCK))
        {
            let a = &mut acc[..out.len()];
            let init = match op {
                ChannelOp::Max => &[-128; CHANNEL_BLOCK][..],
                ChannelOp::Mean => &[0; CHANNEL_BLOCK][..],
                ChannelOp::Taps { bias, .. } => bias.get(c0..).unwrap_or(&[]),
            };
            for (v, &b) in a.iter_mut().zip(init) {
                unroll_barrier();
                *v = b;
            }
            for (kh, ih) in th.iter() {
                for (k, iw) in tw.iter() {
                    let xp = x.get((ih * in_w + iw) * c + c0..).unwrap_or(&[]);
                    tap_i8(op, a, xp, (kh * kw_of(op) + k) * c + c0);
                }
            }
            match op {
                ChannelOp::Taps { stage, .. } => {
                    tap.acc(c0, a);
                    let m = stage.multipliers.get(c0..).unwrap_or(&[]);
                    let s = stage.shifts.get(c0..).unwrap_or(&[]);
                    stage.write(a, m, s, out);
                }
                _ => {
                    for (o, &v) in out.iter_mut().zip(a.iter()) {
                        unroll_barrier();
                        *o = match op {
                            ChannelOp::Mean => rounded_mean(v, n),
                            _ => v as i8,
                        };
                    }
                }
            }
        }
    });
}

/// Validate a pooling call: geometry, lengths, no window entirely in the
/// padding and, for averages, at most [`MAX_POOL_TAPS`] taps per window.
/// Returns `(out_h, out_w)`.
fn check_pool(g: &Pool2d, x: usize, y: usize, average: bool) -> Result<(usize, usize), Error> {
    let out = g.output_shape(1)?;
    check_len(Operand::Input, g.input_shape(1).len()?, x)?;
    check_len(Operand::Output, out.len()?, y)?;
    check_pool_windows(g, out.h, out.w)?;
    if average && mul(g.window.kernel_h, g.window.kernel_w)? > MAX_POOL_TAPS {
        return Err(Error::InvalidParam(Param::Kernel));
    }
    Ok((out.h, out.w))
}

/// The int8 pooling windows of a geometry with an `out_h × out_w` output
/// (both ≥ 1): none may lie entirely in the padding (`Param::Padding`). The
/// model reader checks this for every int8 pooling layer (a file's kernel
/// extents are bytes, so its windows never exceed [`MAX_POOL_TAPS`]).
pub(crate) fn check_pool_windows(g: &Pool2d, out_h: usize, out_w: usize) -> Result<(), Error> {
    // Only a leading or trailing window can lie entirely in the padding
    // (windows move monotonically), so the first and last ones decide.
    let win = g.window;
    let empty = win.taps_h(0, g.in_h).len() == 0
        || win.taps_h(out_h.saturating_sub(1), g.in_h).len() == 0
        || win.taps_w(0, g.in_w).len() == 0
        || win.taps_w(out_w.saturating_sub(1), g.in_w).len() == 0;
    if empty {
        return Err(Error::InvalidParam(Param::Padding));
    }
    Ok(())
}

/// Max pooling on one sample: `y[oh, ow, c]` is the largest in-bounds
/// `x[ih, iw, c]` of the window (padding is ignored, never a 0).
///
/// `x`: `[in_h, in_w, C]`, `y`: `[out_h, out_w, C]`. `geom.kind` is not
/// consulted (this function always takes the maximum).
///
/// Errors (nothing written): an invalid geometry, a length mismatch of `x`
/// or `y`, a window lying entirely in the padding (`Param::Padding`: it has
/// no int8 value without the zero point).
pub fn max_pool_i8(geom: &Pool2d, x: &[i8], y: &mut [i8]) -> Result<(), Error> {
    let out = check_pool(geom, x.len(), y.len(), false)?;
    let dims = (geom.in_h, geom.in_w, geom.channels);
    channel_windows(ChannelOp::Max, &geom.window, dims, out, x, y, &mut NoTap);
    Ok(())
}

/// `⌊(2·sum + n) / (2·n)⌋`, the mean rounded half up; `1 ≤ n ≤ 2^22` and
/// `|sum| ≤ 128·n`, so nothing overflows and the result is an i8.
#[inline]
fn rounded_mean(sum: i32, n: i32) -> i8 {
    // n = 0 (a window without taps) is rejected by validation; 0 then.
    (2 * sum + n)
        .checked_div_euclid(2 * n)
        .unwrap_or(0)
        .clamp(-128, 127) as i8
}

/// Average pooling on one sample: the mean of the in-bounds taps (padding
/// is ignored and not counted), summed in i32 and divided with rounding half
/// up, `⌊(2·sum + n) / (2·n)⌋`.
///
/// `x`: `[in_h, in_w, C]`, `y`: `[out_h, out_w, C]`. `geom.kind` is not
/// consulted (this function always averages).
///
/// Errors (nothing written): as [`max_pool_i8`], and a window of more than
/// [`MAX_POOL_TAPS`] taps (`Param::Kernel`).
pub fn avg_pool_i8(geom: &Pool2d, x: &[i8], y: &mut [i8]) -> Result<(), Error> {
    let out = check_pool(geom, x.len(), y.len(), true)?;
    let dims = (geom.in_h, geom.in_w, geom.channels);
    channel_windows(ChannelOp::Mean, &geom.window, dims, out, x, y, &mut NoTap);
    Ok(())
}

/// Max or average pooling by `geom.kind`: [`max_pool_i8`] or [`avg_pool_i8`].
pub fn pool_i8(geom: &Pool2d, x: &[i8], y: &mut [i8]) -> Result<(), Error> {
    match geom.kind {
        crate::layers::PoolKind::Max => max_pool_i8(geom, x, y),
        crate::layers::PoolKind::Average => avg_pool_i8(geom, x, y),
    }
}

/// Global average pooling on one sample: `[h, w, c] -> [c]`, each channel's
/// mean over the `n = h·w` pixels with rounding half up,
/// `⌊(2·sum + n) / (2·n)⌋` (the average pooling of [`avg_pool_i8`] with
/// one `h × w` window).
///
/// Errors (nothing written): a zero dimension (`Param::Dimension`), more
/// than [`MAX_POOL_TAPS`] pixels (`Param::Kernel`), a length mismatch of `x`
/// (`h·w·c`) or `y` (`c`).
pub fn global_avg_pool_i8(
    h: usize,
    w: usize,
    c: usize,
    x: &[i8],
    y: &mut [i8],
) -> Result<(), Error> {
    if h == 0 || w == 0 || c == 0 {
        return Err(Error::InvalidParam(Param::Dimension));
    }
    let n = mul(h, w)?;
    if n > MAX_POOL_TAPS {
        return Err(Error::InvalidParam(Param::Kernel));
    }
    check_len(Operand::Input, mul(n, c)?, x.len())?;
    check_len(Operand::Output, c, y.len())?;
    let win = Window {
        kernel_h: h,
        kernel_w: w,
        stride_h: 1,
        stride_w: 1,
        padding: Padding::NONE,
    };
    channel_windows(ChannelOp::Mean, &win, (h, w, c), (1, 1), x, y, &mut NoTap);
    Ok(())
}

/// Clamp every value into `[min, max]`: a standalone int8 ReLU (`min` =
/// the zero point) or ReLU6 (`max` = the level of 6.0); scale and zero
/// point are kept.
///
/// Errors (nothing written): not `-128 ≤ min ≤ max ≤ 127` (`Param::Clamp`),
/// `y` not as long as `x` (`LengthMismatch`, `Operand::Output`).
pub fn relu_i8(x: &[i8], y: &mut [i8], min: i32, max: i32) -> Result<(), Error> {
    if !(-128 <= min && min <= max && max <= 127) {
        return Err(Error::InvalidParam(Param::Clamp));
    }
    check_len(Operand::Output, x.len(), y.len())?;
    let (lo, hi) = (min as i8, max as i8);
    for (o, &v) in y.iter_mut().zip(x) {
        unroll_barrier();
        *o = v.max(lo).min(hi); // not `clamp`, which may panic
    }
    Ok(())
}

/// Table lookup: `y = table[x + 128]` (a standalone int8 sigmoid or tanh).
///
/// Errors (nothing written): `y` not as long as `x`.
pub fn lut_i8(table: &[i8; 256], x: &[i8], y: &mut [i8]) -> Result<(), Error> {
    check_len(Operand::Output, x.len(), y.len())?;
    for (o, &v) in y.iter_mut().zip(x) {
        unroll_barrier();
        *o = table[usize::from(v as u8 ^ 0x80)];
    }
    Ok(())
}

fn check_logits(logits: &[i8], out: usize) -> Result<i8, Error> {
    if logits.is_empty() || logits.len() > MAX_CLASSES {
        return Err(Error::InvalidParam(Param::Dimension));
    }
    check_len(Operand::Probabilities, logits.len(), out)?;
    Ok(logits.iter().copied().max().unwrap_or(i8::MIN))
}

/// Softmax of int8 logits (real value `scale·(q - zp)`) as f32
/// probabilities.
///
/// The zero point cancels, so with `d = q - q_max ≤ 0`:
/// `e_i = expf(d_i · scale)` (libm, correctly-rounded-or-close IEEE f32,
/// identical on host and device; subtracting the maximum keeps every
/// `e_i ≤ 1` and the largest exactly 1, so nothing overflows and the sum is
/// at least 1), `p_i = e_i / Σ e`. The sum of the probabilities is within
/// `(n + 1)·2^-24` of 1 for `n` classes.
///
/// Errors (nothing written): no logits or more than [`MAX_CLASSES`]
/// (`Param::Dimension`), `scale` not finite and > 0 (`Param::Scale`),
/// `probs` not as long as `logits` (`Operand::Probabilities`).
pub fn softmax_i8_f32(logits: &[i8], scale: f32, probs: &mut [f32]) -> Result<(), Error> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::InvalidParam(Param::Scale));
    }
    let qmax = i32::from(check_logits(logits, probs.len())?);
    let mut sum = 0.0f32;
    for (p, &q) in probs.iter_mut().zip(logits) {
        let e = libm::expf((i32::from(q) - qmax) as f32 * scale);
        *p = e;
        sum += e;
    }
    for p in probs.iter_mut() {
        *p /= sum;
    }
    Ok(())
}

/// Entry 0 of an integer softmax table: `2^15`, the weight of the largest logit.
pub const EXP_TABLE_ONE: u16 = 1 << 15;

/// The table of [`softmax_i8`] for logits of scale `scale` (host side, or
/// once at start-up on a device with an FPU):
/// `table[d] = round(2^15 · e^(-d·scale))` for `d = q_max - q ∈ [0, 255]`,
/// computed in f64 with libm (deterministic everywhere). Entry 0 is `2^15`
/// and the entries do not increase.
///
/// Errors: `scale` not finite and > 0 (`Param::Scale`).
pub fn softmax_exp_table(scale: f32) -> Result<[u16; 256], Error> {
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::InvalidParam(Param::Scale));
    }
    let mut table = [0u16; 256];
    for (d, t) in table.iter_mut().enumerate() {
        let e = libm::exp(-(d as f64) * f64::from(scale));
        *t = libm::round(e * f64::from(EXP_TABLE_ONE)) as u16; // in [0, 2^15]
    }
    Ok(table)
}

/// Integer-only softmax: int8 logits to int8 probabilities with scale
/// `1/256` and zero point `-128` (probability `(q + 128)/256`).
///
/// With `e_i = table[q_max - q_i]` (see [`softmax_exp_table`]; the largest
/// logit weighs `2^15`) and `S = Σ e_i` (at most `65535·2^15 < 2^32`):
/// ```text
/// p_i = ⌊(256·e_i + ⌊S/2⌋) / S⌋        (256·e_i/S rounded half up, 0 ..= 256)
/// q_i = min(p_i - 128, 127)            (256, a certain class, saturates to 127)
/// ```
/// all in u32, no floating point. Properties (tested): a larger logit never
/// gets a smaller probability, the largest logit gets the largest; each
/// `p_i - 256·e_i/S` lies in `(-1/2 - 1/(2S), 1/2]`, so `Σ (q_i + 128)` is
/// within `n/2 + 1` levels of 256 for `n` classes (the `+1` is the
/// saturation); and `q_i + 128` is within 1 level of `256·p_i` of
/// [`softmax_i8_f32`] for up to 64 classes (the table's rounding to `2^-15`
/// moves `256·e_i/S` by at most `1/256 + n/256` levels).
///
/// Errors (nothing written): no logits or more than [`MAX_CLASSES`]
/// (`Param::Dimension`), a table whose entry 0 is not `2^15` or that
/// increases somewhere (`Param::ExpTable`), `out` not as long as `logits`
/// (`Operand::Probabilities`).
pub fn softmax_i8(logits: &[i8], exp_table: &[u16; 256], out: &mut [i8]) -> Result<(), Error> {
    let qmax = i32::from(check_logits(logits, out.len())?);
    if exp_table[0] != EXP_TABLE_ONE || exp_table.windows(2).any(|p| p[1] > p[0]) {
        return Err(Error::InvalidParam(Param::ExpTable));
    }
    // q_max - q ∈ [0, 255]: a valid index for any i8 pair.
    let weight = |q: i8| u32::from(exp_table[((qmax - i32::from(q)) & 0xFF) as usize]);
    // n ≤ 65535 entries of at most 2^15: no overflow; S ≥ 2^15 (the maximum's).
    let sum: u32 = logits.iter().map(|&q| weight(q)).sum();
    for (o, &q) in out.iter_mut().zip(logits) {
        // 256·e ≤ 2^23 and S/2 < 2^31: the numerator fits in u32.
        let p = (256 * weight(q) + sum / 2) / sum;
        *o = (p as i32 - 128).min(127) as i8;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Every kernel against a naive reference written here on i64 (unblocked
    //! weights, explicit `(x - zp)·w` sums, [`requantize`] for the output
    //! stage): the int8 results must be bit-exact.

    use super::*;
    use crate::kernels::pack::pack_rows;
    use crate::kernels::requant::{requantize, MULTIPLIER_MIN};
    use crate::layers::{PoolKind, Window};
    use crate::rng::Rng;
    use proptest::prelude::*;
    use std::boxed::Box;
    use std::vec;
    use std::vec::Vec;

    /// `n` values uniform in `[lo, hi]`.
    fn ints(rng: &mut Rng, n: usize, lo: i32, hi: i32) -> Vec<i32> {
        (0..n)
            .map(|_| lo + rng.below((hi - lo + 1) as u32) as i32)
            .collect()
    }

    fn bytes(rng: &mut Rng, n: usize, lo: i32, hi: i32) -> Vec<i8> {
        ints(rng, n, lo, hi).into_iter().map(|v| v as i8).collect()
    }

    /// An owned output stage and its reference semantics.
    #[derive(Debug, Clone)]
    struct Stage {
        m: Vec<i32>,
        s: Vec<i32>,
        zp: i32,
        lo: i32,
        hi: i32,
        lut: Option<Box<[i8; 256]>>,
    }

    impl Stage {
        fn view(&self) -> OutputStage<'_> {
            OutputStage {
                multipliers: &self.m,
                shifts: &self.s,
                zero_point: self.zp,
                clamp_min: self.lo,
                clamp_max: self.hi,
                lut: self.lut.as_deref(),
            }
        }

        /// FORMAT.md's output stage, spelled out on i64.
        fn reference(&self, c: usize, acc: i64) -> i8 {
            let acc = i32::try_from(acc).expect("test accumulator beyond i32");
            let q = i64::from(requantize(acc, self.m[c], self.s[c])) + i64::from(self.zp);
            let q = q.clamp(i64::from(self.lo), i64::from(self.hi)) as i32;
            match &self.lut {
                Some(t) => t[(q + 128) as usize],
                None => q as i8,
            }
        }
    }

    /// `mode`: 0 no activation, 1 ReLU, 2 ReLU6, 3 table (sigmoid/tanh).
    /// Shifts span the fast (`t ≥ 33`) and the slow requantization path,
    /// and outputs from small to saturated; one channel in 16 has `M = 0`.
    fn random_stage(rng: &mut Rng, channels: usize, mode: u32) -> Stage {
        let zp = rng.below(256) as i32 - 128;
        let m = (0..channels)
            .map(|_| {
                if rng.below(16) == 0 {
                    0
                } else {
                    MULTIPLIER_MIN + rng.below(1 << 30) as i32
                }
            })
            .collect();
        let s = ints(rng, channels, -16, 1);
        let (lo, hi, lut) = match mode {
            1 => (zp, 127, None),
            2 => (zp, (zp + 1 + rng.below(100) as i32).min(127), None),
            3 => {
                let mut t = Box::new([0i8; 256]);
                for v in t.iter_mut() {
                    *v = rng.below(256) as u8 as i8;
                }
                (-128, 127, Some(t))
            }
            _ => (-128, 127, None),
        };
        Stage {
            m,
            s,
            zp,
            lo,
            hi,
            lut,
        }
    }

    /// Bias padded to whole blocks of `r`, the padding filled with noise
    /// (the kernels must ignore it).
    fn padded_bias(rng: &mut Rng, bias: &[i32], r: usize) -> Vec<i32> {
        let mut b = bias.to_vec();
        b.extend(ints(
            rng,
            padded_rows(bias.len(), r).unwrap() - bias.len(),
            -1000,
            1000,
        ));
        b
    }

    fn block(eight: bool) -> usize {
        if eight {
            8
        } else {
            4
        }
    }

    // ---------------------------------------------------------------- dense

    fn naive_dense(x: &[i8], w: &[i8], bias: &[i32], zp: i32, st: &Stage) -> Vec<i8> {
        let inputs = x.len();
        (0..bias.len())
            .map(|o| {
                let mut acc = i64::from(bias[o]);
                for i in 0..inputs {
                    acc += (i64::from(x[i]) - i64::from(zp)) * i64::from(w[o * inputs + i]);
                }
                st.reference(o, acc)
            })
            .collect()
    }

    proptest! {
        /// Random sizes (outputs not a multiple of R, a single input, long
        /// inputs), R = 4 and 8, any zero point, folded or not, every stage mode.
        #[test]
        fn dense_i8_matches_naive(
            inputs in 1usize..=70, outputs in 1usize..=21, eight in any::<bool>(),
            zp_zero in any::<bool>(), folded in any::<bool>(), mode in 0u32..4, seed in any::<u64>(),
        ) {
            let r = block(eight);
            let mut rng = Rng::new(seed);
            let x = bytes(&mut rng, inputs, -128, 127);
            let w = bytes(&mut rng, outputs * inputs, -127, 127);
            let bias = ints(&mut rng, outputs, -20_000, 20_000);
            let zp = if zp_zero { 0 } else { rng.below(256) as i32 - 128 };
            let st = random_stage(&mut rng, outputs, mode);
            let want = naive_dense(&x, &w, &bias, zp, &st);

            let mut packed = vec![0i8; packed_len(outputs, inputs, r).unwrap()];
            pack_rows(&w, outputs, inputs, r, &mut packed).unwrap();
            // Folding: the bias absorbs -zp·Σw and the kernel gets zp = 0.
            let (kbias, kzp): (Vec<i32>, i32) = if folded {
                let b = (0..outputs)
                    .map(|o| bias[o] - zp * w[o * inputs..][..inputs].iter().map(|&v| i32::from(v)).sum::<i32>())
                    .collect();
                (b, 0)
            } else {
                (bias.clone(), zp)
            };
            let kbias = padded_bias(&mut rng, &kbias, r);
            let mut y = vec![0i8; outputs];
            dense_i8(&x, &packed, r, &kbias, inputs, outputs, kzp, &st.view(), &mut y).unwrap();
            prop_assert_eq!(y, want);
        }
    }

    /// Extreme values everywhere: inputs at ±128 against weights at ±127, a
    /// zero point at the other end, the largest multipliers.
    #[test]
    fn dense_i8_extremes() {
        for (xv, wv, zp) in [(-128i8, -127i8, 127), (127, 127, -128), (-128, 127, -128)] {
            for r in [4, 8] {
                let (inputs, outputs) = (37, 9);
                let x = vec![xv; inputs];
                let w = vec![wv; outputs * inputs];
                let bias = vec![0; outputs];
                let st = Stage {
                    m: vec![i32::MAX; outputs],
                    s: vec![-12; outputs],
                    zp: 3,
                    lo: -128,
                    hi: 127,
                    lut: None,
                };
                let mut packed = vec![0i8; packed_len(outputs, inputs, r).unwrap()];
                pack_rows(&w, outputs, inputs, r, &mut packed).unwrap();
                let mut y = vec![0i8; outputs];
                let b = padded_bias(&mut Rng::new(1), &bias, r);
                dense_i8(&x, &packed, r, &b, inputs, outputs, zp, &st.view(), &mut y).unwrap();
                assert_eq!(y, naive_dense(&x, &w, &bias, zp, &st));
            }
        }
    }

    // ----------------------------------------------------------------- conv

    #[derive(Debug, Clone, Copy)]
    struct Geo {
        h: usize,
        w: usize,
        c: usize,
        kh: usize,
        kw: usize,
        sh: usize,
        sw: usize,
        /// top, bottom, left, right
        pad: [usize; 4],
    }

    impl Geo {
        fn window(&self) -> Window {
            Window {
                kernel_h: self.kh,
                kernel_w: self.kw,
                stride_h: self.sh,
                stride_w: self.sw,
                padding: Padding {
                    top: self.pad[0],
                    bottom: self.pad[1],
                    left: self.pad[2],
                    right: self.pad[3],
                },
            }
        }
        fn out(&self) -> (usize, usize) {
            (
                (self.h + self.pad[0] + self.pad[1] - self.kh) / self.sh + 1,
                (self.w + self.pad[2] + self.pad[3] - self.kw) / self.sw + 1,
            )
        }
        /// Input pixel `(ih, iw)` read by output `(oh, ow)` at tap `(kh, kw)`,
        /// or `None` in the padding.
        fn tap(&self, oh: usize, ow: usize, kh: usize, kw: usize) -> Option<(usize, usize)> {
            let ih = (oh * self.sh + kh).checked_sub(self.pad[0])?;
            let iw = (ow * self.sw + kw).checked_sub(self.pad[2])?;
            (ih < self.h && iw < self.w).then_some((ih, iw))
        }
    }

    fn geo(max_c: usize) -> impl Strategy<Value = Geo> {
        (
            (1usize..=6, 1usize..=6, 1usize..=max_c),
            (1usize..=4, 1usize..=4, 1usize..=3, 1usize..=3),
            [0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2],
        )
            .prop_map(|((h, w, c), (kh, kw, sh, sw), pad)| Geo {
                h,
                w,
                c,
                kh: kh.min(h + pad[0] + pad[1]),
                kw: kw.min(w + pad[2] + pad[3]),
                sh,
                sw,
                pad,
            })
    }

    fn naive_conv(
        g: &Geo,
        cout: usize,
        x: &[i8],
        w: &[i8],
        bias: &[i32],
        zp: i32,
        st: &Stage,
    ) -> Vec<i8> {
        let (oh_n, ow_n) = g.out();
        let mut y = Vec::new();
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                for co in 0..cout {
                    let mut acc = i64::from(bias[co]);
                    for kh in 0..g.kh {
                        for kw in 0..g.kw {
                            let Some((ih, iw)) = g.tap(oh, ow, kh, kw) else {
                                continue;
                            };
                            for ci in 0..g.c {
                                let xv = i64::from(x[(ih * g.w + iw) * g.c + ci]) - i64::from(zp);
                                let wv = i64::from(w[((co * g.kh + kh) * g.kw + kw) * g.c + ci]);
                                acc += xv * wv;
                            }
                        }
                    }
                    y.push(st.reference(co, acc));
                }
            }
        }
        y
    }

    proptest! {
        /// Random geometries (asymmetric padding, strides, kernels up to the
        /// padded input, windows entirely in the padding), R = 4 and 8,
        /// channel counts not a multiple of R and beyond two groups of the output stage (16), folded zero points where
        /// allowed (no padding) and an error where not.
        #[test]
        fn conv2d_i8_matches_naive(
            g in geo(5), cout in 1usize..=37, eight in any::<bool>(), folded in any::<bool>(),
            mode in 0u32..4, seed in any::<u64>(),
        ) {
            let r = block(eight);
            let mut rng = Rng::new(seed);
            let conv = Conv2d::new(g.h, g.w, g.c, cout, g.window()).unwrap();
            let patch = g.kh * g.kw * g.c;
            let x = bytes(&mut rng, g.h * g.w * g.c, -128, 127);
            let w = bytes(&mut rng, cout * patch, -127, 127);
            let bias = ints(&mut rng, cout, -20_000, 20_000);
            let zp = rng.below(256) as i32 - 128;
            let st = random_stage(&mut rng, cout, mode);
            let want = naive_conv(&g, cout, &x, &w, &bias, zp, &st);

            let mut packed = vec![0i8; packed_len(cout, patch, r).unwrap()];
            pack_rows(&w, cout, patch, r, &mut packed).unwrap();
            let kbias: Vec<i32> = if folded {
                (0..cout)
                    .map(|o| bias[o] - zp * w[o * patch..][..patch].iter().map(|&v| i32::from(v)).sum::<i32>())
                    .collect()
            } else {
                bias.clone()
            };
            let kbias = padded_bias(&mut rng, &kbias, r);
            let (oh, ow) = g.out();
            let mut y = vec![99i8; oh * ow * cout];
            let res = conv2d_i8(&conv, &x, &packed, r, &kbias, zp, folded, &st.view(), &mut y);
            // The pair form of the same weights gives the same bytes.
            let pairs = to_pairs(&packed);
            let mut y2 = vec![99i8; oh * ow * cout];
            let res2 = conv2d_blocked_i8(
                &conv, &x, BlockedI8::Pairs(&pairs), r, &kbias, zp, folded, &st.view(), &mut y2,
            );
            if r == 4 {
                prop_assert_eq!(res, res2);
                prop_assert_eq!(&y, &y2);
            } else {
                // Pair words are blocked by 4 rows only.
                prop_assert_eq!(res2, Err(Error::InvalidParam(Param::BlockRows)));
            }
            if folded && g.pad != [0; 4] {
                prop_assert_eq!(res, Err(Error::InvalidParam(Param::Padding)));
                prop_assert!(y.iter().all(|&v| v == 99));
            } else {
                prop_assert_eq!(res, Ok(()));
                prop_assert_eq!(y, want);
            }
        }
    }

    proptest! {
        /// The pair form over gathered windows (patches up to 512 inputs,
        /// padded taps copied as the zero point) and kernel rows (larger
        /// patches), runs longer than a span split inside: kernel rows of
        /// 20..=200 inputs, 3 to 5 of them per pass (patches of 60..=1000
        /// inputs), with and without padding (a zero point per load, span
        /// 256; folded, span 512), and at the extremes that bound the span
        /// (x = -128 or 127 everywhere, weights ±127, x - zp up to ±255):
        /// bit for bit against the i8 form and the naive sum.
        #[test]
        fn conv_pairs_match_bytes_and_naive_over_gathered_windows_and_rows(
            c in 4usize..=40, k in 3usize..=5, padded in any::<bool>(), cout in 1usize..=9,
            extreme in any::<bool>(), seed in any::<u64>(),
        ) {
            let p = usize::from(padded);
            let g = Geo { h: k + 1, w: k + 1, c, kh: k, kw: k, sh: 1, sw: 1, pad: [p; 4] };
            let mut rng = Rng::new(seed);
            let conv = Conv2d::new(g.h, g.w, g.c, cout, g.window()).unwrap();
            let patch = k * k * c;
            let (x, w, zp) = if extreme {
                let xv = if rng.below(2) == 0 { -128i8 } else { 127 };
                let w: Vec<i8> = (0..cout * patch).map(|i| if (i / patch) % 2 == 0 { 127 } else { -127 }).collect();
                (vec![xv; g.h * g.w * c], w, if xv < 0 { 127 } else { -128 })
            } else {
                let x = bytes(&mut rng, g.h * g.w * c, -128, 127);
                (x, bytes(&mut rng, cout * patch, -127, 127), rng.below(256) as i32 - 128)
            };
            let zp = if padded { zp } else { 0 };
            let bias = ints(&mut rng, cout, -20_000, 20_000);
            let mut st = random_stage(&mut rng, cout, 0);
            st.s.iter_mut().for_each(|s| *s = (-14 - s.abs()).max(-31));
            let want = naive_conv(&g, cout, &x, &w, &bias, zp, &st);
            let mut packed = vec![0i8; packed_len(cout, patch, 4).unwrap()];
            pack_rows(&w, cout, patch, 4, &mut packed).unwrap();
            let kbias = padded_bias(&mut rng, &bias, 4);
            let (oh, ow) = g.out();
            let mut y = vec![99i8; oh * ow * cout];
            let pairs = to_pairs(&packed);
            conv2d_blocked_i8(&conv, &x, BlockedI8::Pairs(&pairs), 4, &kbias, zp, false, &st.view(), &mut y).unwrap();
            prop_assert_eq!(&y, &want);
            let mut y8 = vec![99i8; oh * ow * cout];
            conv2d_i8(&conv, &x, &packed, 4, &kbias, zp, false, &st.view(), &mut y8).unwrap();
            prop_assert_eq!(y8, want);
        }
    }

    /// Blocked i8 weights as pair words.
    fn to_pairs(packed: &[i8]) -> Vec<i32> {
        let mut words = vec![0i32; packed.len() / 2];
        crate::kernels::pack::pack_pairs(packed, &mut words).unwrap();
        words
    }

    proptest! {
        /// The pair form against the naive sum and the i8 form, bit for bit:
        /// inputs beyond one span (512 without a zero point, 256 with one),
        /// odd lengths (the two-input loop's remainder), outputs not a
        /// multiple of 4, and the extreme products that bound the span
        /// (x = -128 against w = ±127, x - zp = ±255).
        #[test]
        fn dense_pairs_match_bytes_and_naive(
            inputs in 1usize..=1100, outputs in 1usize..=37,
            zp_mode in 0u32..3, extreme in any::<bool>(), mode in 0u32..4, seed in any::<u64>(),
        ) {
            let r = 4;
            let mut rng = Rng::new(seed);
            let (x, w) = if extreme {
                let xv = if rng.below(2) == 0 { -128i8 } else { 127 };
                let x = vec![xv; inputs];
                let w: Vec<i8> = (0..outputs * inputs)
                    .map(|i| if (i / inputs) % 2 == 0 { 127 } else { -127 })
                    .collect();
                (x, w)
            } else {
                (bytes(&mut rng, inputs, -128, 127), bytes(&mut rng, outputs * inputs, -127, 127))
            };
            let zp = match zp_mode {
                0 => 0,
                1 => if x[0] < 0 { 127 } else { -128 },
                _ => rng.below(256) as i32 - 128,
            };
            let bias = ints(&mut rng, outputs, -20_000, 20_000);
            let mut st = random_stage(&mut rng, outputs, mode);
            // Small multipliers keep the large sums from saturating everywhere.
            st.s.iter_mut().for_each(|s| *s = (-14 - s.abs()).max(-31));
            let want = naive_dense(&x, &w, &bias, zp, &st);
            let mut packed = vec![0i8; packed_len(outputs, inputs, r).unwrap()];
            pack_rows(&w, outputs, inputs, r, &mut packed).unwrap();
            let pairs = to_pairs(&packed);
            let kbias = padded_bias(&mut rng, &bias, r);
            let mut y = vec![0i8; outputs];
            dense_blocked_i8(&x, BlockedI8::Pairs(&pairs), r, &kbias, inputs, outputs, zp, &st.view(), &mut y).unwrap();
            prop_assert_eq!(&y, &want);
            let mut y8 = vec![0i8; outputs];
            dense_i8(&x, &packed, r, &kbias, inputs, outputs, zp, &st.view(), &mut y8).unwrap();
            prop_assert_eq!(y8, want);
        }
    }

    #[test]
    fn pair_weights_are_counted_in_weights() {
        // 5 inputs -> 6 outputs, R = 4: 40 weights, 20 words.
        let (x, b) = (vec![1i8; 5], vec![0i32; 8]);
        let words = vec![pair_word_of(1, 1); 20];
        let st = ok_stage(6);
        let mut y = vec![99i8; 6];
        dense_blocked_i8(
            &x,
            BlockedI8::Pairs(&words),
            4,
            &b,
            5,
            6,
            0,
            &st.view(),
            &mut y,
        )
        .unwrap();
        let mut y = vec![99i8; 6];
        let err = dense_blocked_i8(
            &x,
            BlockedI8::Pairs(&words[..19]),
            4,
            &b,
            5,
            6,
            0,
            &st.view(),
            &mut y,
        );
        rejected(err, len_err(Operand::Weight, 40, 38), &y);
        // Blocks of 8 rows exist for bytes, not for pairs.
        let b8 = vec![0i32; 8];
        let err = dense_blocked_i8(
            &x,
            BlockedI8::Pairs(&words),
            8,
            &b8,
            5,
            6,
            0,
            &st.view(),
            &mut y,
        );
        rejected(err, Error::InvalidParam(Param::BlockRows), &y);
    }

    fn pair_word_of(lo: i8, hi: i8) -> i32 {
        crate::kernels::pack::pair_word(lo, hi)
    }

    // ------------------------------------------------------------ depthwise

    fn naive_depthwise(g: &Geo, x: &[i8], w: &[i8], bias: &[i32], zp: i32, st: &Stage) -> Vec<i8> {
        let (oh_n, ow_n) = g.out();
        let mut y = Vec::new();
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                for ch in 0..g.c {
                    let mut acc = i64::from(bias[ch]);
                    for kh in 0..g.kh {
                        for kw in 0..g.kw {
                            if let Some((ih, iw)) = g.tap(oh, ow, kh, kw) {
                                let xv = i64::from(x[(ih * g.w + iw) * g.c + ch]) - i64::from(zp);
                                acc += xv * i64::from(w[(kh * g.kw + kw) * g.c + ch]);
                            }
                        }
                    }
                    y.push(st.reference(ch, acc));
                }
            }
        }
        y
    }

    proptest! {
        /// Channel counts around the group of 4 (1..=11), every stage mode.
        #[test]
        fn depthwise_i8_matches_naive(g in geo(11), mode in 0u32..4, seed in any::<u64>()) {
            let mut rng = Rng::new(seed);
            let dw = DepthwiseConv2d::new(g.h, g.w, g.c, g.window()).unwrap();
            let x = bytes(&mut rng, g.h * g.w * g.c, -128, 127);
            let w = bytes(&mut rng, g.kh * g.kw * g.c, -127, 127);
            let bias = ints(&mut rng, g.c, -5_000, 5_000);
            let zp = rng.below(256) as i32 - 128;
            let st = random_stage(&mut rng, g.c, mode);
            let (oh, ow) = g.out();
            let mut y = vec![0i8; oh * ow * g.c];
            depthwise_i8(&dw, &x, &w, &bias, zp, &st.view(), &mut y).unwrap();
            prop_assert_eq!(y, naive_depthwise(&g, &x, &w, &bias, zp, &st));
        }
    }

    // -------------------------------------------------------------- pooling

    /// `None` when some window lies entirely in the padding.
    fn naive_pool(g: &Geo, kind: PoolKind, x: &[i8]) -> Option<Vec<i8>> {
        let (oh_n, ow_n) = g.out();
        let mut y = Vec::new();
        for oh in 0..oh_n {
            for ow in 0..ow_n {
                for ch in 0..g.c {
                    let vals: Vec<i32> = (0..g.kh)
                        .flat_map(|kh| (0..g.kw).map(move |kw| (kh, kw)))
                        .filter_map(|(kh, kw)| g.tap(oh, ow, kh, kw))
                        .map(|(ih, iw)| i32::from(x[(ih * g.w + iw) * g.c + ch]))
                        .collect();
                    if vals.is_empty() {
                        return None;
                    }
                    let v = match kind {
                        PoolKind::Max => *vals.iter().max().unwrap(),
                        // Round half up of the exact mean, via f64 (exact
                        // at the ties: (2k-1)/2 is representable).
                        PoolKind::Average => {
                            let mean = vals.iter().sum::<i32>() as f64 / vals.len() as f64;
                            (mean + 0.5).floor() as i32
                        }
                    };
                    y.push(v as i8);
                }
            }
        }
        Some(y)
    }

    proptest! {
        /// Max and average pooling over random windows; a geometry with a
        /// window entirely in the padding is `Param::Padding`, output untouched.
        #[test]
        fn pools_match_naive(g in geo(9), average in any::<bool>(), seed in any::<u64>()) {
            let kind = if average { PoolKind::Average } else { PoolKind::Max };
            let mut rng = Rng::new(seed);
            let pool = Pool2d::new(kind, g.h, g.w, g.c, g.window()).unwrap();
            let x = bytes(&mut rng, g.h * g.w * g.c, -128, 127);
            let (oh, ow) = g.out();
            let mut y = vec![99i8; oh * ow * g.c];
            let res = if average { avg_pool_i8(&pool, &x, &mut y) } else { max_pool_i8(&pool, &x, &mut y) };
            let mut y2 = vec![99i8; y.len()];
            prop_assert_eq!(pool_i8(&pool, &x, &mut y2), res);
            match naive_pool(&g, kind, &x) {
                Some(want) => {
                    prop_assert_eq!(res, Ok(()));
                    prop_assert_eq!(&y, &want);
                    prop_assert_eq!(y2, want);
                }
                None => {
                    prop_assert_eq!(res, Err(Error::InvalidParam(Param::Padding)));
                    prop_assert!(y.iter().all(|&v| v == 99));
                }
            }
        }

        /// 2×2 max pooling without padding (the usual pooling, which the
        /// random windows above rarely hit): any stride, odd extents,
        /// channel counts past the window loop's block of 64.
        #[test]
        fn max_pool_2x2_matches_naive(
            h in 2usize..=9, w in 2usize..=9, c in 1usize..=70, sh in 1usize..=3, sw in 1usize..=3,
            seed in any::<u64>(),
        ) {
            let g = Geo { h, w, c, kh: 2, kw: 2, sh, sw, pad: [0; 4] };
            let mut rng = Rng::new(seed);
            let pool = Pool2d::new(PoolKind::Max, h, w, c, g.window()).unwrap();
            let x = bytes(&mut rng, h * w * c, -128, 127);
            let (oh, ow) = g.out();
            let mut y = vec![99i8; oh * ow * c];
            max_pool_i8(&pool, &x, &mut y).unwrap();
            prop_assert_eq!(Some(y), naive_pool(&g, PoolKind::Max, &x));
        }

        #[test]
        fn global_avg_pool_i8_matches_naive(h in 1usize..=9, w in 1usize..=9, c in 1usize..=70, seed in any::<u64>()) {
            let mut rng = Rng::new(seed);
            let x = bytes(&mut rng, h * w * c, -128, 127);
            let mut y = vec![0i8; c];
            global_avg_pool_i8(h, w, c, &x, &mut y).unwrap();
            for ch in 0..c {
                let sum: i32 = (0..h * w).map(|p| i32::from(x[p * c + ch])).sum();
                let want = ((sum as f64 / (h * w) as f64) + 0.5).floor() as i32;
                prop_assert_eq!(i32::from(y[ch]), want);
            }
        }

        #[test]
        fn relu_and_lut_are_elementwise(x in proptest::collection::vec(any::<i8>(), 0..50),
                                        lo in -128i32..=127, span in 0i32..=255, seed in any::<u64>()) {
            let hi = (lo + span).min(127);
            let mut y = vec![0i8; x.len()];
            relu_i8(&x, &mut y, lo, hi).unwrap();
            for (&a, &b) in x.iter().zip(&y) {
                prop_assert_eq!(i32::from(b), i32::from(a).clamp(lo, hi));
            }
            let mut rng = Rng::new(seed);
            let mut table = [0i8; 256];
            for t in table.iter_mut() {
                *t = rng.below(256) as u8 as i8;
            }
            lut_i8(&table, &x, &mut y).unwrap();
            for (&a, &b) in x.iter().zip(&y) {
                prop_assert_eq!(b, table[(i32::from(a) + 128) as usize]);
            }
        }
    }

    #[test]
    fn average_rounds_half_up() {
        // Means 1.5 -> 2, -1.5 -> -1, -0.5 -> 0, 0.25 -> 0, -2.75 -> -3.
        let cases: [(&[i8], i8); 5] = [
            (&[1, 2], 2),
            (&[-1, -2], -1),
            (&[0, -1], 0),
            (&[1, 0, 0, 0], 0),
            (&[-3, -3, -3, -2], -3),
        ];
        for (vals, want) in cases {
            let mut y = [0i8];
            global_avg_pool_i8(1, vals.len(), 1, vals, &mut y).unwrap();
            assert_eq!(y[0], want, "{vals:?}");
        }
        // Extremes: all -128 or all 127 stay.
        let mut y = [0i8; 2];
        global_avg_pool_i8(3, 3, 2, &[-128, 127].repeat(9), &mut y).unwrap();
        assert_eq!(y, [-128, 127]);
    }

    // -------------------------------------------------------------- softmax

    proptest! {
        /// f32 softmax: sums to 1 within 1e-6 (n ≤ 12 classes: the bound
        /// (n+1)·2^-24 is 7.7e-7), agrees with f64 within
        /// `(|d·scale| + n + 4)·2^-23` relative, is monotone in the logit and
        /// gives the largest logit the largest probability.
        #[test]
        fn softmax_f32_properties(logits in proptest::collection::vec(any::<i8>(), 1..=12), scale in 1e-3f32..1.0) {
            let mut p = vec![0.0f32; logits.len()];
            softmax_i8_f32(&logits, scale, &mut p).unwrap();
            let sum: f64 = p.iter().map(|&v| f64::from(v)).sum();
            prop_assert!((sum - 1.0).abs() <= 1e-6, "sum {sum}");
            let qmax = *logits.iter().max().unwrap();
            let z: f64 = logits.iter().map(|&q| ((f64::from(q) - f64::from(qmax)) * f64::from(scale)).exp()).sum();
            let n = logits.len() as f64;
            for (i, (&qi, &pi)) in logits.iter().zip(&p).enumerate() {
                let arg = (f64::from(qi) - f64::from(qmax)) * f64::from(scale);
                let want = arg.exp() / z;
                // Rounding the f32 argument d·scale costs |arg|·2^-24
                // relative; expf, the sum and the division a few 2^-24 more.
                let tol = want * (arg.abs() + n + 4.0) * f64::from(f32::EPSILON) + 1e-38;
                prop_assert!((f64::from(pi) - want).abs() <= tol, "class {i}: {pi} vs {want}");
                for (&qj, &pj) in logits.iter().zip(&p) {
                    if qi >= qj {
                        prop_assert!(pi >= pj);
                    }
                }
                if qi == qmax {
                    prop_assert!(p.iter().all(|&v| v <= pi));
                }
            }
        }

        /// Integer softmax: Σ(q+128) within 256 ± (n/2 + 1) levels (k = 1/2
        /// per class, +1 for the saturation of a certain class), monotone,
        /// the largest logit gets the largest probability, and within 1 level
        /// of 256·p of the f32 softmax.
        #[test]
        fn softmax_i8_properties(logits in proptest::collection::vec(any::<i8>(), 1..=64), scale in 1e-3f32..2.0) {
            let table = softmax_exp_table(scale).unwrap();
            let mut q = vec![0i8; logits.len()];
            softmax_i8(&logits, &table, &mut q).unwrap();
            let n = logits.len() as i32;
            let levels: i32 = q.iter().map(|&v| i32::from(v) + 128).sum();
            prop_assert!(2 * (levels - 256).abs() <= n + 2, "sum {levels} for {n} classes");
            let mut p = vec![0.0f32; logits.len()];
            softmax_i8_f32(&logits, scale, &mut p).unwrap();
            let qmax = *logits.iter().max().unwrap();
            for (i, (&li, &qi)) in logits.iter().zip(&q).enumerate() {
                for (&lj, &qj) in logits.iter().zip(&q) {
                    if li >= lj {
                        prop_assert!(qi >= qj);
                    }
                }
                if li == qmax {
                    prop_assert!(q.iter().all(|&v| v <= qi));
                }
                let got = f64::from(i32::from(qi) + 128);
                let want = 256.0 * f64::from(p[i]);
                prop_assert!((got - want).abs() <= 1.0, "class {i}: {got} levels vs {want}");
            }
        }
    }

    #[test]
    fn softmax_edges_and_errors() {
        // One class: probability 1 (saturated to 127 in int8).
        let mut p = [0.0f32];
        softmax_i8_f32(&[-5], 0.1, &mut p).unwrap();
        assert_eq!(p, [1.0]);
        let table = softmax_exp_table(0.1).unwrap();
        assert_eq!(table[0], EXP_TABLE_ONE);
        assert!(table.windows(2).all(|t| t[1] <= t[0]));
        let mut q = [0i8];
        softmax_i8(&[-5], &table, &mut q).unwrap();
        assert_eq!(q, [127]);
        // A certain class: the others get -128 (probability 0).
        let mut q = [0i8; 3];
        let big = softmax_exp_table(1.0).unwrap();
        softmax_i8(&[127, -128, -128], &big, &mut q).unwrap();
        assert_eq!(q, [127, -128, -128]);
        // Equal logits share equally: 256/4 = 64 levels each.
        let mut q = [0i8; 4];
        softmax_i8(&[3; 4], &table, &mut q).unwrap();
        assert_eq!(q, [-64i8; 4]); // 64 levels - 128

        let dim = Err(Error::InvalidParam(Param::Dimension));
        assert_eq!(softmax_i8_f32(&[], 0.1, &mut []), dim);
        assert_eq!(softmax_i8(&[], &table, &mut []), dim);
        for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let mut p = [7.0f32; 2];
            assert_eq!(
                softmax_i8_f32(&[1, 2], bad, &mut p),
                Err(Error::InvalidParam(Param::Scale))
            );
            assert_eq!(p, [7.0; 2]);
            assert_eq!(
                softmax_exp_table(bad),
                Err(Error::InvalidParam(Param::Scale))
            );
        }
        let mut p = [7.0f32; 3];
        assert_eq!(
            softmax_i8_f32(&[1, 2], 0.1, &mut p),
            Err(Error::LengthMismatch {
                operand: Operand::Probabilities,
                expected: 2,
                actual: 3
            })
        );
        let mut q = [7i8; 1];
        assert_eq!(
            softmax_i8(&[1, 2], &table, &mut q),
            Err(Error::LengthMismatch {
                operand: Operand::Probabilities,
                expected: 2,
                actual: 1
            })
        );
        let mut bad = table;
        bad[0] = 0;
        let mut q = [7i8; 2];
        assert_eq!(
            softmax_i8(&[1, 2], &bad, &mut q),
            Err(Error::InvalidParam(Param::ExpTable))
        );
        let mut bad = table;
        bad[200] = bad[199] + 1;
        assert_eq!(
            softmax_i8(&[1, 2], &bad, &mut q),
            Err(Error::InvalidParam(Param::ExpTable))
        );
        assert_eq!(q, [7; 2]);
    }

    // --------------------------------------------------------------- errors

    /// A kernel call with everything but the output bound.
    type Call<'a> = &'a dyn Fn(&mut [i8]) -> Result<(), Error>;

    /// A call's result and its output buffer.
    type Outcome = (Result<(), Error>, Vec<i8>);

    fn ok_stage(n: usize) -> Stage {
        Stage {
            m: vec![MULTIPLIER_MIN; n],
            s: vec![-8; n],
            zp: 0,
            lo: -128,
            hi: 127,
            lut: None,
        }
    }

    /// Assert `res` is `err` and `y` still holds its sentinel 99s.
    #[track_caller]
    fn rejected(res: Result<(), Error>, err: Error, y: &[i8]) {
        assert_eq!(res, Err(err));
        assert!(y.iter().all(|&v| v == 99), "output written on error");
    }

    fn len_err(operand: Operand, expected: usize, actual: usize) -> Error {
        Error::LengthMismatch {
            operand,
            expected,
            actual,
        }
    }

    #[test]
    fn dense_i8_bad_arguments_are_specific_errors() {
        // 5 inputs -> 6 outputs, R = 4: w 8·5 = 40, bias 8.
        let (x, w, b) = (vec![1i8; 5], vec![1i8; 40], vec![0i32; 8]);
        let st = ok_stage(6);
        let run = |x: &[i8],
                   w: &[i8],
                   r: usize,
                   b: &[i32],
                   i: usize,
                   o: usize,
                   zp: i32,
                   st: &OutputStage<'_>,
                   yl: usize| {
            let mut y = vec![99i8; yl];
            let res = dense_i8(x, w, r, b, i, o, zp, st, &mut y);
            (res, y)
        };
        let (res, y) = run(&x, &w, 4, &b, 5, 6, 0, &st.view(), 6);
        assert_eq!(res, Ok(()));
        assert!(y.iter().all(|&v| v != 99));
        let cases: Vec<(Outcome, Error)> = vec![
            (
                run(&x, &w, 5, &b, 5, 6, 0, &st.view(), 6),
                Error::InvalidParam(Param::BlockRows),
            ),
            (
                run(&x, &w, 4, &b, 0, 6, 0, &st.view(), 6),
                Error::InvalidParam(Param::Dimension),
            ),
            (
                run(&x, &w, 4, &b, 5, 0, 0, &st.view(), 6),
                Error::InvalidParam(Param::Dimension),
            ),
            (
                run(&x[..4], &w, 4, &b, 5, 6, 0, &st.view(), 6),
                len_err(Operand::Input, 5, 4),
            ),
            (
                run(&x, &w[..39], 4, &b, 5, 6, 0, &st.view(), 6),
                len_err(Operand::Weight, 40, 39),
            ),
            (
                run(&x, &w, 4, &b[..6], 5, 6, 0, &st.view(), 6),
                len_err(Operand::Bias, 8, 6),
            ),
            (
                run(&x, &w, 4, &b, 5, 6, 128, &st.view(), 6),
                Error::InvalidParam(Param::ZeroPoint),
            ),
            (
                run(&x, &w, 4, &b, 5, 6, 0, &ok_stage(5).view(), 6),
                len_err(Operand::Multiplier, 6, 5),
            ),
            (
                run(
                    &x,
                    &w,
                    4,
                    &b,
                    5,
                    6,
                    0,
                    &OutputStage {
                        shifts: &[0, 0, 0, 0, 0, 31],
                        ..st.view()
                    },
                    6,
                ),
                Error::InvalidParam(Param::Shift),
            ),
            (
                run(
                    &x,
                    &w,
                    4,
                    &b,
                    5,
                    6,
                    0,
                    &OutputStage {
                        clamp_min: 5,
                        clamp_max: 4,
                        ..st.view()
                    },
                    6,
                ),
                Error::InvalidParam(Param::Clamp),
            ),
            (
                run(&x, &w, 4, &b, 5, 6, 0, &st.view(), 5),
                len_err(Operand::Output, 6, 5),
            ),
            (
                run(&x, &w, 4, &b, 5, 6, 0, &st.view(), 7),
                len_err(Operand::Output, 6, 7),
            ),
        ];
        for ((res, y), err) in cases {
            rejected(res, err, &y);
        }
    }

    #[test]
    fn conv_and_depthwise_bad_arguments_are_specific_errors() {
        // 4×4×3 -> 3×3, stride 1, padding 1 -> 4×4×5, R = 8: patch 27.
        let conv = Conv2d::new(4, 4, 3, 5, Window::square(3, 1, 1)).unwrap();
        let (x, w, b) = (vec![1i8; 48], vec![1i8; 8 * 27], vec![0i32; 8]);
        let st = ok_stage(5);
        let mut y = vec![99i8; 80];
        conv2d_i8(&conv, &x, &w, 8, &b, 0, false, &st.view(), &mut y).unwrap();
        let bad_geom = Conv2d { in_c: 0, ..conv };
        let cases: [(Call<'_>, Error); 9] = [
            (
                &|y| conv2d_i8(&conv, &x, &w, 3, &b, 0, false, &st.view(), y),
                Error::InvalidParam(Param::BlockRows),
            ),
            (
                &|y| conv2d_i8(&bad_geom, &x, &w, 8, &b, 0, false, &st.view(), y),
                Error::InvalidParam(Param::Dimension),
            ),
            (
                &|y| conv2d_i8(&conv, &x[1..], &w, 8, &b, 0, false, &st.view(), y),
                len_err(Operand::Input, 48, 47),
            ),
            (
                &|y| conv2d_i8(&conv, &x, &w[..27 * 4], 8, &b, 0, false, &st.view(), y),
                len_err(Operand::Weight, 216, 108),
            ),
            (
                &|y| conv2d_i8(&conv, &x, &w, 8, &b[..5], 0, false, &st.view(), y),
                len_err(Operand::Bias, 8, 5),
            ),
            (
                &|y| conv2d_i8(&conv, &x, &w, 8, &b, -129, false, &st.view(), y),
                Error::InvalidParam(Param::ZeroPoint),
            ),
            (
                &|y| conv2d_i8(&conv, &x, &w, 8, &b, 0, true, &st.view(), y),
                Error::InvalidParam(Param::Padding),
            ),
            (
                &|y| {
                    conv2d_i8(
                        &conv,
                        &x,
                        &w,
                        8,
                        &b,
                        0,
                        false,
                        &OutputStage {
                            multipliers: &[1; 5],
                            ..st.view()
                        },
                        y,
                    )
                },
                Error::InvalidParam(Param::Multiplier),
            ),
            (
                &|y| conv2d_i8(&conv, &x, &w, 8, &b, 0, false, &st.view(), &mut y[1..]),
                len_err(Operand::Output, 80, 79),
            ),
        ];
        for (call, err) in cases {
            let mut y = vec![99i8; 80];
            rejected(call(&mut y), err, &y);
        }

        let dw = DepthwiseConv2d::new(4, 4, 3, Window::square(3, 2, 1)).unwrap(); // -> 2×2×3
        let (x, w, b) = (vec![1i8; 48], vec![1i8; 27], vec![0i32; 3]);
        let st = ok_stage(3);
        let cases: [(Call<'_>, Error); 6] = [
            (
                &|y| {
                    depthwise_i8(
                        &DepthwiseConv2d { in_h: 0, ..dw },
                        &x,
                        &w,
                        &b,
                        0,
                        &st.view(),
                        y,
                    )
                },
                Error::InvalidParam(Param::Dimension),
            ),
            (
                &|y| depthwise_i8(&dw, &x[..40], &w, &b, 0, &st.view(), y),
                len_err(Operand::Input, 48, 40),
            ),
            (
                &|y| depthwise_i8(&dw, &x, &w[1..], &b, 0, &st.view(), y),
                len_err(Operand::Weight, 27, 26),
            ),
            (
                &|y| depthwise_i8(&dw, &x, &w, &b[1..], 0, &st.view(), y),
                len_err(Operand::Bias, 3, 2),
            ),
            (
                &|y| depthwise_i8(&dw, &x, &w, &b, 0, &ok_stage(4).view(), y),
                len_err(Operand::Multiplier, 3, 4),
            ),
            (
                &|y| depthwise_i8(&dw, &x, &w, &b, 0, &st.view(), &mut y[..11]),
                len_err(Operand::Output, 12, 11),
            ),
        ];
        for (call, err) in cases {
            let mut y = vec![99i8; 12];
            rejected(call(&mut y), err, &y);
        }
        let mut y = vec![99i8; 12];
        depthwise_i8(&dw, &x, &w, &b, 0, &st.view(), &mut y).unwrap();
    }

    #[test]
    fn pool_and_elementwise_bad_arguments_are_specific_errors() {
        let pool = Pool2d::new(PoolKind::Max, 4, 4, 2, Window::square(2, 2, 0)).unwrap(); // -> 2×2×2
        let x = vec![1i8; 32];
        let mut y = vec![99i8; 8];
        rejected(
            max_pool_i8(&pool, &x[1..], &mut y),
            len_err(Operand::Input, 32, 31),
            &y,
        );
        rejected(
            avg_pool_i8(&pool, &x, &mut y[1..]),
            len_err(Operand::Output, 8, 7),
            &y,
        );
        let bad = Pool2d {
            channels: 0,
            ..pool
        };
        rejected(
            max_pool_i8(&bad, &x, &mut y),
            Error::InvalidParam(Param::Dimension),
            &y,
        );
        // Padding 2 with a 2×2 window: the corner window sees only padding.
        let padded = Pool2d::new(PoolKind::Max, 4, 4, 2, Window::square(2, 2, 2)).unwrap(); // -> 4×4×2
        let mut y = vec![99i8; 32];
        rejected(
            max_pool_i8(&padded, &x, &mut y),
            Error::InvalidParam(Param::Padding),
            &y,
        );
        // A window of more than 2^22 taps cannot be averaged in i32.
        let huge = Window {
            kernel_h: 2049,
            kernel_w: 2048,
            stride_h: 64,
            stride_w: 64,
            padding: Padding::symmetric(1100, 1100),
        };
        let huge = Pool2d::new(PoolKind::Average, 1, 1, 1, huge).unwrap();
        let n = huge.output_shape(1).unwrap().len().unwrap();
        let mut y = vec![99i8; n];
        rejected(
            avg_pool_i8(&huge, &[0], &mut y),
            Error::InvalidParam(Param::Kernel),
            &y,
        );
        max_pool_i8(&huge, &[5], &mut y).unwrap(); // max has no sum to overflow
        assert!(y.iter().all(|&v| v == 5));

        let mut y = vec![99i8; 2];
        rejected(
            global_avg_pool_i8(0, 1, 2, &[], &mut y),
            Error::InvalidParam(Param::Dimension),
            &y,
        );
        rejected(
            global_avg_pool_i8(2049, 2048, 1, &[], &mut y),
            Error::InvalidParam(Param::Kernel),
            &y,
        );
        rejected(
            global_avg_pool_i8(2, 2, 2, &[0; 7], &mut y),
            len_err(Operand::Input, 8, 7),
            &y,
        );
        rejected(
            global_avg_pool_i8(2, 2, 2, &[0; 8], &mut y[..1]),
            len_err(Operand::Output, 2, 1),
            &y,
        );

        let mut y = vec![99i8; 3];
        rejected(
            relu_i8(&[1, 2, 3], &mut y, 5, 4),
            Error::InvalidParam(Param::Clamp),
            &y,
        );
        rejected(
            relu_i8(&[1, 2, 3], &mut y, -129, 4),
            Error::InvalidParam(Param::Clamp),
            &y,
        );
        rejected(
            relu_i8(&[1, 2], &mut y, 0, 4),
            len_err(Operand::Output, 2, 3),
            &y,
        );
        rejected(
            lut_i8(&[0; 256], &[1, 2], &mut y),
            len_err(Operand::Output, 2, 3),
            &y,
        );
    }
}
