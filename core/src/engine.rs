//! Runs a parsed [`Model`] on one sample in a caller-provided arena.
//!
//! The arena is the only RAM the engine touches: the model says how much it
//! needs ([`Model::arena_bytes`], the peak of simultaneously live
//! activations, FORMAT.md "Memory plan") and every layer reads its input and
//! writes its output at the offsets the parser planned. Weights are read in
//! place from the model's buffer. Nothing is allocated, nothing is static.
//!
//! ```text
//! let model = Model::parse(BYTES)?;
//! let mut arena = [0u8; N];                  // N >= model.arena_bytes(), 4-aligned
//! let mut engine = Engine::new(&model, &mut arena)?;
//! engine.input_i8()?.copy_from_slice(&sample);
//! let out = engine.run()?;                   // logits (int8 with scale/zero point, or f32)
//! ```
//!
//! [`Engine::run_observed`] calls back before and after every layer, which is
//! how the firmware measures per-layer cost without timing code in here.
//!
//! # One kind of model per build
//! An application ships f32 models or int8 models, rarely both, and the
//! engine's code for each kind (its dispatch and the kernels it reaches) is
//! a few KiB of flash. The crate features `engine-f32` and `engine-int8`
//! (both on by default) decide which the engine runs: with one off, that
//! kind's dispatch is not compiled, and [`Engine::new`] returns
//! [`ModelError::Unsupported`] for such a model ([`supports`] says which
//! kinds a build runs). [`Model::parse`] validates both kinds in every
//! build: a device rejects a model it cannot run, it never misreads it.

#[cfg(feature = "adapt")]
use crate::adapt::{overlay::Overlay, AdaptError, LayerTap};
use crate::kernels::{NoTap, Tap};
use crate::model::{plan, Kind, Layer, Model, ModelError};
#[cfg(any(feature = "engine-f32", feature = "engine-int8"))]
use crate::{
    kernels,
    layers::{Conv2d, Padding, PoolKind, Window},
    model::{Data, Op},
};

/// Whether this build's engine runs models of `kind` (the `engine-f32` and
/// `engine-int8` features).
pub const fn supports(kind: Kind) -> bool {
    match kind {
        Kind::F32 => cfg!(feature = "engine-f32"),
        Kind::Int8 => cfg!(feature = "engine-int8"),
    }
}

/// How far a device's f32 logit may be from the host engine's for the two
/// to agree (relative above magnitude 1): see [`f32_parity`]. The same
/// kernels in the same order make them bit-identical in practice; the margin
/// covers a compiler for another core that orders or contracts differently.
/// The one definition for the firmware's `infer`, the host's device tests
/// and `normcore device-eval`.
pub const F32_PARITY_TOLERANCE: f32 = 1e-5;

/// Whether a device's f32 logit agrees with the host's:
/// `|device − host| ≤ F32_PARITY_TOLERANCE · max(1, |host|)` (NaN never
/// agrees).
pub fn f32_parity(device: f32, host: f32) -> bool {
    let scale = if host.abs() > 1.0 { host.abs() } else { 1.0 };
    (device - host).abs() <= F32_PARITY_TOLERANCE * scale
}

/// When an observer is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Event {
    /// Before the layer runs.
    Start,
    /// After the layer ran.
    End,
}

/// The model's output for one sample.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// int8 logits: real = scale · (q - zero_point).
    I8 {
        /// Quantized logits, `[classes]`.
        values: &'a [i8],
        /// Scale.
        scale: f32,
        /// Zero point.
        zero_point: i32,
    },
    /// f32 logits, `[classes]`.
    F32(&'a [f32]),
}

impl Output<'_> {
    /// Index of the largest logit (first on ties): the predicted class.
    pub fn argmax(&self) -> usize {
        match *self {
            Output::I8 { values, .. } => {
                let mut best = 0;
                for (i, &v) in values.iter().enumerate() {
                    if v > values[best] {
                        best = i;
                    }
                }
                best
            }
            Output::F32(v) => crate::layers::loss::argmax(v),
        }
    }
}

/// Runs a model; borrows it and the arena.
#[derive(Debug)]
pub struct Engine<'m, 'b, 'a> {
    model: &'m Model<'b>,
    arena: &'a mut [u8],
}

/// Bytes of one sample of activations of `shape`: the memory plan's
/// [`plan::sample_bytes`], without its overflow check on the product with
/// the element size, which `Model::parse` made for every shape of the
/// model (the plan's regions, each at most the arena, fit `usize`).
fn sample_bytes(kind: Kind, shape: crate::tensor::Shape) -> Result<usize, ModelError> {
    Ok(shape.sample_len()? * plan::element_bytes(kind))
}

/// Split the arena into a layer's input (read) and output (written) regions.
/// The parser's plan puts one at offset 0 and the other at the end, so they
/// never overlap; the bounds are still checked here.
fn regions(
    arena: &mut [u8],
    in_off: usize,
    in_len: usize,
    out_off: usize,
    out_len: usize,
) -> Result<(&[u8], &mut [u8]), ModelError> {
    let too_small = ModelError::ArenaTooSmall {
        needed: in_off
            .saturating_add(in_len)
            .max(out_off.saturating_add(out_len)),
        actual: arena.len(),
    };
    let in_end = in_off.checked_add(in_len).ok_or(too_small)?;
    let out_end = out_off.checked_add(out_len).ok_or(too_small)?;
    if in_off < out_off {
        if in_end > out_off {
            return Err(too_small);
        }
        let (lo, hi) = arena.split_at_mut(out_off.min(arena.len()));
        Ok((
            lo.get(in_off..in_end).ok_or(too_small)?,
            hi.get_mut(..out_len).ok_or(too_small)?,
        ))
    } else {
        if out_end > in_off {
            return Err(too_small);
        }
        let (lo, hi) = arena.split_at_mut(in_off.min(arena.len()));
        let out = lo.get_mut(out_off..out_end).ok_or(too_small)?;
        Ok((hi.get(..in_len).ok_or(too_small)?, out))
    }
}

impl<'m, 'b, 'a> Engine<'m, 'b, 'a> {
    /// An engine for `model` in `arena` (at least `model.arena_bytes()`
    /// bytes, 4-byte aligned). [`ModelError::Unsupported`] if this build
    /// does not run the model's kind ([`supports`]).
    pub fn new(model: &'m Model<'b>, arena: &'a mut [u8]) -> Result<Self, ModelError> {
        if !supports(model.kind()) {
            return Err(ModelError::Unsupported(model.kind()));
        }
        if arena.len() < model.arena_bytes() {
            return Err(ModelError::ArenaTooSmall {
                needed: model.arena_bytes(),
                actual: arena.len(),
            });
        }
        if arena.as_ptr() as usize % 4 != 0 {
            return Err(ModelError::ArenaMisaligned);
        }
        Ok(Engine { model, arena })
    }

    /// The model.
    pub fn model(&self) -> &'m Model<'b> {
        self.model
    }

    /// The first layer's input: at offset 0 of the arena (FORMAT.md, "Memory
    /// plan": layer 0 reads at 0), `h·w·c` values of the header's input.
    fn input_region(&mut self) -> Result<&mut [u8], ModelError> {
        let len = sample_bytes(self.model.kind(), self.model.header().input)?;
        let actual = self.arena.len();
        self.arena.get_mut(..len).ok_or(ModelError::ArenaTooSmall {
            needed: len,
            actual,
        })
    }

    /// Where to write an int8 model's input (`h·w·c` values, NHWC, quantized
    /// with the header's input scale and zero point).
    pub fn input_i8(&mut self) -> Result<&mut [i8], ModelError> {
        if self.model.kind() != Kind::Int8 {
            return Err(ModelError::WrongKind);
        }
        Ok(bytemuck::cast_slice_mut(self.input_region()?))
    }

    /// Where to write an f32 model's input (`h·w·c` values, NHWC).
    pub fn input_f32(&mut self) -> Result<&mut [f32], ModelError> {
        if self.model.kind() != Kind::F32 {
            return Err(ModelError::WrongKind);
        }
        bytemuck::try_cast_slice_mut(self.input_region()?).map_err(|_| ModelError::ArenaMisaligned)
    }

    /// Run every layer on the input written through `input_*`.
    pub fn run(&mut self) -> Result<Output<'_>, ModelError> {
        self.run_observed(|_, _| {})
    }

    /// As [`run`](Self::run), calling `observe(layer index, event)` before
    /// and after each layer.
    pub fn run_observed(
        &mut self,
        mut observe: impl FnMut(usize, Event),
    ) -> Result<Output<'_>, ModelError> {
        let mut out = Last {
            zero_point: self.model.header().input_zero_point,
            scale: 0.0,
            offset: 0,
            len: 0,
        };
        for i in 0..self.model.layer_count() {
            observe(i, Event::Start);
            let layer = self.model.layer(i)?;
            out = self.run_layer(&layer, out.zero_point, &mut NoTap)?;
            observe(i, Event::End);
        }
        self.output(out)
    }

    /// Run layers `0..upto` (all of them when `upto` is past the last) with
    /// `overlay`'s parameters in place of the file's where it has them
    /// ([`Overlay::patch`]), letting `tap` see the layers it asks for
    /// ([`LayerTap`]); returns the last layer run's output (`upto = 0`
    /// returns the input, as written). The same dispatch and kernels as
    /// [`run`](Self::run): with an empty overlay and a tap that asks for
    /// nothing the output is bit-identical.
    #[cfg(feature = "adapt")]
    pub fn run_adapted(
        &mut self,
        overlay: Option<&Overlay<'_>>,
        upto: usize,
        tap: &mut impl LayerTap,
    ) -> Result<Output<'_>, AdaptError> {
        let header = self.model.header();
        let mut out = Last {
            zero_point: header.input_zero_point,
            scale: header.input_scale,
            offset: 0,
            len: sample_bytes(self.model.kind(), header.input)?,
        };
        for i in 0..self.model.layer_count().min(upto) {
            let mut layer = self.model.layer(i)?;
            if let Some(o) = overlay {
                o.patch(i, &mut layer)?;
            }
            if !tap.wants(i) {
                out = self.run_layer(&layer, out.zero_point, &mut NoTap)?;
                continue;
            }
            tap.begin(i, &layer);
            if self.model.kind() == Kind::F32 {
                // The kernel without its activation, the tap, then the
                // activation: the tap sees the pre-activation.
                let act = layer.activation.take();
                let is_act = layer.op == Op::Activation;
                if is_act {
                    layer.activation = act;
                }
                out = self.run_layer(&layer, out.zero_point, &mut NoTap)?;
                let y = self
                    .arena
                    .get_mut(out.offset..out.offset.saturating_add(out.len))
                    .ok_or(ModelError::ArenaTooSmall {
                        needed: out.offset.saturating_add(out.len),
                        actual: 0,
                    })?;
                let y: &mut [f32] =
                    bytemuck::try_cast_slice_mut(y).map_err(|_| ModelError::ArenaMisaligned)?;
                if !is_act {
                    tap.pre_f32(y);
                    kernels::f32::activate(act, y);
                }
            } else {
                out = self.run_layer(&layer, out.zero_point, tap)?;
            }
        }
        Ok(self.output(out)?)
    }

    /// Run `layer` on the arena (its input where the plan put it, its
    /// output likewise), `zp_in` being its input's zero point (int8), an
    /// int8 weighted layer's accumulators shown to `tap`; returns where its
    /// output is. Not generic over the observer and not inlined into the
    /// caller, so that the engine's code exists once, however many observers
    /// call it (inference has one tap type, [`NoTap`]). Only the kinds this build supports have a dispatch.
    #[inline(never)]
    #[cfg_attr(
        not(all(feature = "engine-f32", feature = "engine-int8")),
        allow(unused_variables)
    )]
    #[cfg_attr(
        not(any(feature = "engine-f32", feature = "engine-int8")),
        allow(unreachable_code)
    )]
    fn run_layer(
        &mut self,
        layer: &Layer<'_>,
        zp_in: i32,
        tap: &mut impl Tap,
    ) -> Result<Last, ModelError> {
        let kind = self.model.kind();
        let in_len = sample_bytes(kind, layer.input)?;
        let out_len = sample_bytes(kind, layer.output)?;
        let (x, y) = regions(
            self.arena,
            layer.in_offset,
            in_len,
            layer.out_offset,
            out_len,
        )?;
        match kind {
            #[cfg(feature = "engine-int8")]
            Kind::Int8 => run_i8(
                layer,
                bytemuck::cast_slice(x),
                bytemuck::cast_slice_mut(y),
                zp_in,
                tap,
            )?,
            #[cfg(feature = "engine-f32")]
            Kind::F32 => run_f32(
                layer,
                bytemuck::try_cast_slice(x).map_err(|_| ModelError::ArenaMisaligned)?,
                bytemuck::try_cast_slice_mut(y).map_err(|_| ModelError::ArenaMisaligned)?,
            )?,
            #[cfg(not(all(feature = "engine-f32", feature = "engine-int8")))]
            unsupported => return Err(ModelError::Unsupported(unsupported)),
        }
        Ok(Last {
            zero_point: layer.quant.zero_point,
            scale: layer.quant.scale,
            offset: layer.out_offset,
            len: out_len,
        })
    }

    /// The last layer's output, where `run_layer` said it is.
    #[inline(never)]
    fn output(&self, last: Last) -> Result<Output<'_>, ModelError> {
        let out = self
            .arena
            .get(last.offset..last.offset.saturating_add(last.len))
            .ok_or(ModelError::ArenaTooSmall {
                needed: last.offset.saturating_add(last.len),
                actual: self.arena.len(),
            })?;
        Ok(match self.model.kind() {
            Kind::Int8 if supports(Kind::Int8) => Output::I8 {
                values: bytemuck::cast_slice(out),
                scale: last.scale,
                zero_point: last.zero_point,
            },
            Kind::F32 if supports(Kind::F32) => {
                Output::F32(bytemuck::try_cast_slice(out).map_err(|_| ModelError::ArenaMisaligned)?)
            }
            unsupported => return Err(ModelError::Unsupported(unsupported)),
        })
    }
}

/// Where a layer's output is, and its int8 quantization (the next layer's
/// input zero point; for the last layer, the model's output).
#[derive(Debug, Clone, Copy)]
struct Last {
    zero_point: i32,
    scale: f32,
    offset: usize,
    len: usize,
}

/// A dense or conv layer as a convolution (dense: a 1×1 convolution of a
/// 1×1 input with `inputs` channels), so both run the same kernel.
#[cfg(any(feature = "engine-f32", feature = "engine-int8"))]
#[inline(never)]
fn as_conv(op: &Op) -> Option<Conv2d> {
    match op {
        Op::Dense(d) => Some(Conv2d {
            in_h: 1,
            in_w: 1,
            in_c: d.inputs,
            out_c: d.outputs,
            window: Window::square(1, 1, 0),
        }),
        Op::Conv(c) => Some(*c),
        _ => None,
    }
}

/// The window of a global average pooling over a `h × w` input.
#[cfg(any(feature = "engine-f32", feature = "engine-int8"))]
fn whole(h: usize, w: usize) -> Window {
    Window {
        kernel_h: h,
        kernel_w: w,
        stride_h: 1,
        stride_w: 1,
        padding: Padding::NONE,
    }
}

/// One int8 layer. The parser validated every shape, geometry, tensor
/// length and quantization parameter of the model, so this calls the
/// kernels' loops directly instead of their validating entry points (code
/// size); those loops are safe Rust, never index out of bounds and never
/// panic whatever they are given.
#[cfg(feature = "engine-int8")]
#[inline(never)]
fn run_i8(
    layer: &Layer<'_>,
    x: &[i8],
    y: &mut [i8],
    zp_in: i32,
    tap: &mut impl Tap,
) -> Result<(), ModelError> {
    use crate::layers::Activation;
    use kernels::int8::{self, BlockedI8, ChannelOp};
    let wrong = ModelError::WrongKind;
    let (i, o) = (layer.input, layer.output);
    let dims = (i.h, i.w, i.c);
    match &layer.op {
        Op::Pool(p) => {
            let op = match p.kind {
                PoolKind::Max => ChannelOp::Max,
                PoolKind::Average => ChannelOp::Mean,
            };
            int8::channel_windows(op, &p.window, dims, (o.h, o.w), x, y, tap);
            return Ok(());
        }
        Op::GlobalAvgPool => {
            int8::channel_windows(ChannelOp::Mean, &whole(i.h, i.w), dims, (1, 1), x, y, tap);
            return Ok(());
        }
        Op::Activation => {
            match (layer.activation, layer.table) {
                (Some(Activation::Sigmoid | Activation::Tanh), Some(t)) => int8::lut_i8(t, x, y)?,
                (Some(Activation::Relu | Activation::Relu6), _) => {
                    int8::relu_i8(x, y, layer.quant.clamp_min, layer.quant.clamp_max)?
                }
                _ => return Err(wrong),
            }
            return Ok(());
        }
        _ => {}
    }
    let stage = layer.output_stage().ok_or(wrong)?;
    let Some(Data::I32(bias)) = layer.bias else {
        return Err(wrong);
    };
    let w = match layer.weights {
        Some(Data::I8(w)) => BlockedI8::Bytes(w),
        Some(Data::I8Pairs(w)) => BlockedI8::Pairs(w),
        _ => return Err(wrong),
    };
    match (&layer.op, w) {
        (Op::Depthwise(d), BlockedI8::Bytes(w)) => {
            let op = ChannelOp::Taps {
                w,
                kw: d.window.kernel_w,
                bias,
                zp: zp_in,
                stage: &stage,
            };
            int8::channel_windows(op, &d.window, dims, (o.h, o.w), x, y, tap);
        }
        (op, w) => {
            let c = as_conv(op).ok_or(wrong)?;
            let patch = c.window.kernel_h * c.window.kernel_w * c.in_c;
            let zp = if layer.zp_folded { 0 } else { zp_in };
            int8::conv_blocks(
                &c,
                o.h,
                o.w,
                patch,
                x,
                w,
                layer.block_rows,
                bias,
                zp,
                &stage,
                y,
                tap,
            );
        }
    }
    Ok(())
}

/// One f32 layer, as `run_i8`.
#[cfg(feature = "engine-f32")]
#[inline(never)]
fn run_f32(layer: &Layer<'_>, x: &[f32], y: &mut [f32]) -> Result<(), ModelError> {
    use kernels::f32::{self as k, ChannelOp};
    let wrong = ModelError::WrongKind;
    let (i, o) = (layer.input, layer.output);
    let dims = (i.h, i.w, i.c);
    match (&layer.op, layer.weights, layer.bias) {
        (Op::Pool(p), _, _) => {
            let op = match p.kind {
                PoolKind::Max => ChannelOp::Max,
                PoolKind::Average => ChannelOp::Mean,
            };
            k::channel_windows(op, &p.window, dims, (o.h, o.w), x, y);
        }
        (Op::GlobalAvgPool, _, _) => {
            k::channel_windows(ChannelOp::Mean, &whole(i.h, i.w), dims, (1, 1), x, y)
        }
        (Op::Activation, _, _) => k::activation_f32(layer.activation.ok_or(wrong)?, x, y)?,
        (Op::Depthwise(d), Some(Data::F32(w)), Some(Data::F32(bias))) => {
            let op = ChannelOp::Taps {
                w,
                kw: d.window.kernel_w,
                bias,
                act: layer.activation,
            };
            k::channel_windows(op, &d.window, dims, (o.h, o.w), x, y);
        }
        (op, Some(Data::F32(w)), Some(Data::F32(bias))) => {
            let c = as_conv(op).ok_or(wrong)?;
            let patch = c.window.kernel_h * c.window.kernel_w * c.in_c;
            k::conv_blocks(
                &c,
                o.h,
                o.w,
                patch,
                x,
                w,
                layer.block_rows,
                bias,
                layer.activation,
                y,
            );
        }
        _ => return Err(wrong),
    }
    Ok(())
}
