//! Inference kernels for folded models (docs/FORMAT.md), one sample at a
//! time (the device runs batch 1), NHWC, writing into the caller's slices.
//!
//! - [`requant`]: the int8 fixed-point formats, requantization
//!   (`i32` accumulator → `i8` with a Q1.31 multiplier and a shift) and the
//!   per-layer [`OutputStage`].
//! - [`pack`]: the row-blocked weight layout of dense and conv layers, and
//!   its pair form for int8 (two weights per 32-bit word).
//! - [`int8`]: integer-only dense, conv2d, depthwise, pooling, ReLU clamps,
//!   lookup tables and softmax, bit-exact on every target.
//! - [`f32`](mod@f32): the same layers for f32 models.
//!
//! # Why row blocks
//! A dense layer or a convolution is, per output pixel, a set of dot products
//! over the same input. Walking `R` output rows at once (R = 4 or 8) keeps
//! `R` accumulators in registers, loads each input once for `R`
//! multiply-adds, and reads the weights strictly sequentially, because the
//! exporter stored them in exactly that order (`stored[(b·P + p)·R + r] =
//! W[b·R + r, p]`). There is no im2col: a convolution's in-bounds kernel row
//! is `KW'·Cin` contiguous inputs in NHWC and `KW'·Cin·R` contiguous
//! weights, the same inner loop as a dense layer.
//!
//! Every kernel validates all its arguments before it writes anything: an
//! `Err` (a specific [`Error`](crate::Error) variant) leaves the outputs
//! untouched, and no input makes a kernel panic. The engine calls the loops
//! behind these entry points directly (the model parser validated every
//! layer already); the loops are safe code that never panics whatever they
//! are given.

pub mod f32;
pub mod int8;
pub mod pack;
pub mod requant;

use crate::layers::conv::Taps;
use crate::layers::Window;

/// Keeps LLVM from unrolling (or interleaving) the loop it sits in, at no
/// cost (an empty `asm` that touches nothing) on ARM, and compiles to
/// nothing elsewhere.
///
/// Two uses. In hot loops: on M-class cores LLVM runtime-unrolls small
/// loops 4×; the scheduler then interleaves the copies accumulator by
/// accumulator, which keeps four inputs live, and with `r7` reserved as the
/// frame pointer (13 allocatable core registers) the accumulators spill.
/// In loops that are not hot (pooling, output stages, activations): the
/// unrolled copies only cost flash, and the engine's code budget is small.
#[inline(always)]
pub(crate) fn unroll_barrier() {
    #[cfg(target_arch = "arm")]
    core::hint::black_box(());
}

/// Call `f(output pixel index, rows, columns)` for every output pixel of a
/// window sliding over an `in_h × in_w` input, in NHWC order, with the
/// in-bounds taps of its window (shared by every windowed kernel). The
/// window arithmetic is one non-inlined function (`Windows::next`): one
/// copy for all kernels, a call per output pixel.
#[inline(always)]
pub(crate) fn for_each_window(
    win: &Window,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    mut f: impl FnMut(usize, Taps, Taps),
) {
    let mut it = Windows {
        win,
        in_h,
        in_w,
        out_h,
        out_w,
        oh: 0,
        ow: 0,
    };
    while let Some((o, th, tw)) = it.next() {
        f(o, th, tw);
    }
}

/// The output pixels of a sliding window, in NHWC order (see
/// `for_each_window`).
struct Windows<'w> {
    win: &'w Window,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    oh: usize,
    ow: usize,
}

impl Windows<'_> {
    /// The next output pixel: its index, in-bounds rows and columns.
    #[inline(never)]
    fn next(&mut self) -> Option<(usize, Taps, Taps)> {
        if self.oh >= self.out_h || self.out_w == 0 {
            return None;
        }
        let item = (
            self.oh * self.out_w + self.ow,
            self.win.taps_h(self.oh, self.in_h),
            self.win.taps_w(self.ow, self.in_w),
        );
        self.ow += 1;
        if self.ow == self.out_w {
            self.ow = 0;
            self.oh += 1;
        }
        Some(item)
    }
}

/// Sees a weighted int8 layer's i32 accumulators (bias included, before
/// requantization): on-device adaptation recovers each channel's
/// pre-normalization value from them (`adapt::restat`). The engine's
/// inference passes [`NoTap`], whose empty method compiles to nothing, so
/// the kernels' inference code is unchanged by the hook.
pub trait Tap {
    /// `acc[k]` is the accumulator of channel `first + k` at one output
    /// pixel (pixels in NHWC order, every channel of a pixel once).
    fn acc(&mut self, first: usize, acc: &[i32]);
}

/// The tap of plain inference: sees nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTap;

impl Tap for NoTap {
    #[inline(always)]
    fn acc(&mut self, _first: usize, _acc: &[i32]) {}
}

pub use pack::{pack_pairs, pack_rows, packed_len, padded_rows, unpack_pairs, unpack_rows};
pub use requant::{quantize_multiplier, requantize, OutputStage};
