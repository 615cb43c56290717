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

use crate::kernels;
use crate::layers::Activation;
use crate::model::{Data, Kind, Layer, Model, ModelError, Op};
use crate::tensor::{View, ViewMut};

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

fn bytes_of(kind: Kind, elements: usize) -> usize {
    match kind {
        Kind::F32 => elements * 4,
        Kind::Int8 => elements,
    }
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
    /// bytes, 4-byte aligned).
    pub fn new(model: &'m Model<'b>, arena: &'a mut [u8]) -> Result<Self, ModelError> {
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

    fn input_region(&mut self) -> Result<&mut [u8], ModelError> {
        let first = &self.model.layers()[0];
        let len = bytes_of(self.model.kind(), first.input.sample_len()?);
        self.arena
            .get_mut(first.in_offset..first.in_offset + len)
            .ok_or(ModelError::ArenaTooSmall {
                needed: len,
                actual: 0,
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
        let kind = self.model.kind();
        let mut zp_in = self.model.header().input_zero_point;
        for (i, layer) in self.model.layers().iter().enumerate() {
            let in_len = bytes_of(kind, layer.input.sample_len()?);
            let out_len = bytes_of(kind, layer.output.sample_len()?);
            let (x, y) = regions(
                self.arena,
                layer.in_offset,
                in_len,
                layer.out_offset,
                out_len,
            )?;
            observe(i, Event::Start);
            match kind {
                Kind::Int8 => run_i8(
                    layer,
                    bytemuck::cast_slice(x),
                    bytemuck::cast_slice_mut(y),
                    zp_in,
                )?,
                Kind::F32 => run_f32(
                    layer,
                    bytemuck::try_cast_slice(x).map_err(|_| ModelError::ArenaMisaligned)?,
                    bytemuck::try_cast_slice_mut(y).map_err(|_| ModelError::ArenaMisaligned)?,
                )?,
            }
            observe(i, Event::End);
            zp_in = layer.quant.zero_point;
        }
        let last = self.model.layers().last().ok_or(ModelError::WrongKind)?;
        let len = bytes_of(kind, last.output.sample_len()?);
        let out = self
            .arena
            .get(last.out_offset..last.out_offset + len)
            .ok_or(ModelError::ArenaTooSmall {
                needed: len,
                actual: 0,
            })?;
        Ok(match kind {
            Kind::Int8 => Output::I8 {
                values: bytemuck::cast_slice(out),
                scale: last.quant.scale,
                zero_point: last.quant.zero_point,
            },
            Kind::F32 => {
                Output::F32(bytemuck::try_cast_slice(out).map_err(|_| ModelError::ArenaMisaligned)?)
            }
        })
    }
}

fn weights_i8<'x>(layer: &Layer<'x>) -> Result<(&'x [i8], &'x [i32]), ModelError> {
    match (layer.weights, layer.bias) {
        (Some(Data::I8(w)), Some(Data::I32(b))) => Ok((w, b)),
        _ => Err(ModelError::WrongKind),
    }
}

fn weights_f32<'x>(layer: &Layer<'x>) -> Result<(&'x [f32], &'x [f32]), ModelError> {
    match (layer.weights, layer.bias) {
        (Some(Data::F32(w)), Some(Data::F32(b))) => Ok((w, b)),
        _ => Err(ModelError::WrongKind),
    }
}

fn run_i8(layer: &Layer<'_>, x: &[i8], y: &mut [i8], zp_in: i32) -> Result<(), ModelError> {
    use kernels::int8;
    let stage = layer.output_stage();
    match layer.op {
        Op::Dense(d) => {
            let (w, b) = weights_i8(layer)?;
            let stage = stage.ok_or(ModelError::WrongKind)?;
            let zp = if layer.zp_folded { 0 } else { zp_in };
            int8::dense_i8(
                x,
                w,
                layer.block_rows,
                b,
                d.inputs,
                d.outputs,
                zp,
                &stage,
                y,
            )?;
        }
        Op::Conv(c) => {
            let (w, b) = weights_i8(layer)?;
            let stage = stage.ok_or(ModelError::WrongKind)?;
            int8::conv2d_i8(
                &c,
                x,
                w,
                layer.block_rows,
                b,
                zp_in,
                layer.zp_folded,
                &stage,
                y,
            )?;
        }
        Op::Depthwise(d) => {
            let (w, b) = weights_i8(layer)?;
            let stage = stage.ok_or(ModelError::WrongKind)?;
            int8::depthwise_i8(&d, x, w, b, zp_in, &stage, y)?;
        }
        Op::Pool(p) => match p.kind {
            crate::layers::PoolKind::Max => int8::max_pool_i8(&p, x, y)?,
            crate::layers::PoolKind::Average => int8::avg_pool_i8(&p, x, y)?,
        },
        Op::GlobalAvgPool => {
            int8::global_avg_pool_i8(layer.input.h, layer.input.w, layer.input.c, x, y)?
        }
        Op::Activation => match (layer.activation, layer.table) {
            (Some(Activation::Sigmoid | Activation::Tanh), Some(t)) => int8::lut_i8(t, x, y)?,
            (Some(Activation::Relu | Activation::Relu6), _) => {
                int8::relu_i8(x, y, layer.quant.clamp_min, layer.quant.clamp_max)?
            }
            _ => return Err(ModelError::WrongKind),
        },
    }
    Ok(())
}

fn run_f32(layer: &Layer<'_>, x: &[f32], y: &mut [f32]) -> Result<(), ModelError> {
    use kernels::f32 as k;
    match layer.op {
        Op::Dense(d) => {
            let (w, b) = weights_f32(layer)?;
            k::dense_f32(
                x,
                w,
                layer.block_rows,
                b,
                d.inputs,
                d.outputs,
                layer.activation,
                y,
            )?;
        }
        Op::Conv(c) => {
            let (w, b) = weights_f32(layer)?;
            k::conv2d_f32(&c, x, w, layer.block_rows, b, layer.activation, y)?;
        }
        Op::Depthwise(d) => {
            let (w, b) = weights_f32(layer)?;
            k::depthwise_f32(&d, x, w, b, layer.activation, y)?;
        }
        Op::Pool(p) => p.forward(View::new(layer.input, x)?, ViewMut::new(layer.output, y)?)?,
        Op::GlobalAvgPool => crate::layers::global_avg_pool_forward(
            View::new(layer.input, x)?,
            ViewMut::new(layer.output, y)?,
        )?,
        Op::Activation => layer
            .activation
            .ok_or(ModelError::WrongKind)?
            .forward(x, y)?,
    }
    Ok(())
}
