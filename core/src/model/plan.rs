//! The memory plan (FORMAT.md, "Memory plan"): computed here and only here.
//!
//! Layers run in order; layer `i` reads its input and writes its output,
//! both in one arena. The caller writes the first input at offset 0.
//! Buffers alternate ends: an even layer reads at offset 0 and writes at
//! the end (`arena − region(out)`), an odd layer the reverse, so the arena
//! is the peak of simultaneously live activations of a sequential network:
//!
//! ```text
//! arena = max_i region(in_i) + region(out_i)
//! region(shape) = round_up(h·w·c · element bytes, REGION_ALIGN)
//! ```
//!
//! The writer stores [`arena_bytes`] in the header, the parser recomputes
//! it with [`layer_need`] and rejects a file that disagrees, and
//! [`Model::layer`](super::Model::layer) places each layer with
//! [`offsets`]; the engine only splits the arena where they say.

use super::layout::round_up;
use super::Kind;
use crate::tensor::Shape;

/// Alignment of every arena region (the arena itself must be 4-aligned:
/// f32 activations are borrowed as `&[f32]`).
pub const REGION_ALIGN: usize = 16;

/// Bytes of one element of activations in a model of `kind`.
pub const fn element_bytes(kind: Kind) -> usize {
    match kind {
        Kind::F32 => 4,
        Kind::Int8 => 1,
    }
}

/// Bytes of one sample of activations of `shape` (its `h·w·c`; the batch
/// dimension is ignored); `None` on overflow.
pub fn sample_bytes(kind: Kind, shape: Shape) -> Option<usize> {
    shape.sample_len().ok()?.checked_mul(element_bytes(kind))
}

/// [`sample_bytes`] rounded up to [`REGION_ALIGN`]: the room a region takes.
pub fn region_bytes(kind: Kind, shape: Shape) -> Option<usize> {
    round_up(sample_bytes(kind, shape)?, REGION_ALIGN)
}

/// Arena bytes a layer from `input` to `output` needs: both regions.
pub fn layer_need(kind: Kind, input: Shape, output: Shape) -> Option<usize> {
    region_bytes(kind, input)?.checked_add(region_bytes(kind, output)?)
}

/// The arena of a chain of layer `(input, output)` shapes: the largest
/// [`layer_need`]; `None` on overflow.
pub fn arena_bytes(kind: Kind, shapes: impl IntoIterator<Item = (Shape, Shape)>) -> Option<usize> {
    let mut arena = 0usize;
    for (i, o) in shapes {
        arena = arena.max(layer_need(kind, i, o)?);
    }
    Some(arena)
}

/// Arena offsets `(input, output)` of layer `index` in an arena of `arena`
/// bytes: even layers read at 0 and write at the end, odd layers the
/// reverse. `None` if the region does not fit.
pub fn offsets(
    kind: Kind,
    arena: usize,
    index: usize,
    input: Shape,
    output: Shape,
) -> Option<(usize, usize)> {
    let end = |s: Shape| arena.checked_sub(region_bytes(kind, s)?);
    if index % 2 == 0 {
        Some((0, end(output)?))
    } else {
        Some((end(input)?, 0))
    }
}
