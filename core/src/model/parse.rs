//! `Model::parse`: every check of FORMAT.md; and the decoding of layer and
//! BN records, which `Model::layer` and `Model::bn_record` repeat later.
//!
//! One decoder serves both. `parse` calls it with the checks on: each record
//! is validated (`check_layer`, and the BN checks) before anything is taken
//! from it, and every tensor record, placement and value restriction was
//! validated before the first layer (`check_tensors`). After `parse` the
//! bytes cannot have changed (the model borrows them), so later decodes
//! only extract: fields, the tensors' data slices and the arena offsets,
//! with checked slice accesses and arithmetic that cannot overflow on the
//! file's 16-bit dimensions. No path panics, and a decode of a record that
//! `parse` accepted returns exactly what the checked decode returned (the
//! tests compare them).
//!
//! Code size matters as much as speed here (the parser is linked into every
//! device image): the checks return small fault codes in a register and are
//! wrapped into a [`ModelError`] once; the per-role tensor checks are one
//! table-driven loop around one helper ([`Model::want`]); small loops keep
//! an opaque index so that they stay loops.

use super::layout::{
    window_of, RawBn, RawHeader, RawLayer, RawTensor, DATA_ALIGN, MAX_ACC_TAPS, MAX_BN, SLOTS,
    TABLE_ALIGN,
};
use super::*;
use crate::kernels::unroll_barrier;
use crate::layers::Padding;
use bytemuck::Pod;

type Res<T> = Result<T, ModelError>;

fn layer_err(index: usize, fault: LayerFault) -> ModelError {
    ModelError::Layer {
        index: index as u16,
        fault,
    }
}

fn bn_err(index: usize, fault: LayerFault) -> ModelError {
    ModelError::Bn {
        index: index as u16,
        fault,
    }
}

/// `k + 1`, hidden from the optimiser. A loop over a small array that
/// steps its index with this has no computable trip count, so it stays one
/// loop instead of being unrolled into copies (code size); it costs a
/// store and a load per iteration.
#[inline(always)]
fn step(k: usize) -> usize {
    core::hint::black_box(k + 1)
}

/// The `count` records of type `T` at `start` in `bytes`, and their byte
/// range: inside the file, after the header, [`TABLE_ALIGN`]-aligned.
fn table<T: Pod>(bytes: &[u8], start: u32, count: u16, t: Table) -> Res<(&[T], (usize, usize))> {
    let start = start as usize;
    let end = start.checked_add(usize::from(count) * core::mem::size_of::<T>());
    match end {
        Some(end) if start % TABLE_ALIGN == 0 && start >= HEADER_LEN && end <= bytes.len() => {
            let records = bytes
                .get(start..end)
                .and_then(|b| bytemuck::try_cast_slice(b).ok())
                .ok_or(ModelError::TableBounds(t))?;
            Ok((records, (start, end)))
        }
        _ => Err(ModelError::TableBounds(t)),
    }
}

/// The header's arena `header` is not the plan's `computed` (`None`: it
/// overflows).
fn arena_mismatch(header: usize, computed: Option<usize>) -> ModelError {
    let u = |v: Option<usize>| v.and_then(|v| u32::try_from(v).ok()).unwrap_or(u32::MAX);
    ModelError::ArenaMismatch {
        header: u(Some(header)),
        computed: u(computed),
    }
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1 && a.0 != a.1 && b.0 != b.1
}

/// The `T` record at byte `at` of `bytes`, in place, if it is all there
/// and aligned (the buffer and the tables are 4-aligned: `read_header`).
#[inline(always)]
fn record_at<T: Pod>(bytes: &[u8], at: usize) -> Option<&T> {
    let end = at.checked_add(core::mem::size_of::<T>())?;
    bytemuck::try_from_bytes(bytes.get(at..end)?).ok()
}

/// The header's fields other than the file's framing: counts, the BN
/// table's presence, input shape, classes, reserved fields, the input
/// quantization (int8: a finite positive scale and a zero point in
/// `[-128, 127]`; f32: zeros) and the pixel scale.
fn check_header(h: &RawHeader, int8: bool) -> Result<(), HeaderFault> {
    let layers = usize::from(h.layer_count);
    let bn = usize::from(h.bn_count);
    let has_bn = h.flags & FLAG_HAS_BN != 0;
    if layers == 0 || layers > MAX_LAYERS {
        return Err(HeaderFault::LayerCount);
    }
    if usize::from(h.tensor_count) > MAX_TENSORS {
        return Err(HeaderFault::TensorCount);
    }
    if has_bn != (bn > 0) || (!has_bn && h.bn_table_offset != 0) || bn > MAX_BN {
        return Err(HeaderFault::BnTable);
    }
    if h.input.contains(&0) {
        return Err(HeaderFault::InputShape);
    }
    if h.classes == 0 {
        return Err(HeaderFault::Classes);
    }
    if h.reserved0 != 0 || h.reserved1 != 0 {
        return Err(HeaderFault::Reserved);
    }
    let (scale, zero_point) = (h.input_scale, h.input_zero_point);
    let quant_ok = if int8 {
        positive(scale) && (-128..=127).contains(&zero_point)
    } else {
        scale.to_bits() == 0 && zero_point == 0
    };
    if !quant_ok {
        return Err(HeaderFault::InputQuantization);
    }
    if !positive(h.pixel_scale) {
        return Err(HeaderFault::PixelScale);
    }
    Ok(())
}

/// Finite and above zero (NaN fails both comparisons).
pub(super) fn positive(v: f32) -> bool {
    v > 0.0 && v < f32::INFINITY
}

/// The value rules beyond dtypes (FORMAT.md), one definition each, used by
/// the parser and by the writer's in-place updates.
///
/// Requantization: multipliers 0 or in `[2^30, 2^31)`, shifts in `[-31, 30]`.
#[inline(never)]
pub(super) fn requant_ok(multipliers: &[i32], shifts: &[i32]) -> bool {
    use crate::kernels::requant::{multiplier_ok, shift_ok};
    for (&m, &s) in multipliers.iter().zip(shifts) {
        unroll_barrier();
        if !(multiplier_ok(m) && shift_ok(s)) {
            return false;
        }
    }
    true
}

/// Pair words: both halves in `[-127, 127]`.
pub(super) fn pairs_ok(words: &[i32]) -> bool {
    words
        .iter()
        .all(|&w| crate::kernels::pack::split_pair_word(w).is_some())
}

/// BN variances: not NaN, not negative.
pub(super) fn var_ok(var: &[f32]) -> bool {
    !var.iter().any(|v| v.is_nan() || *v < 0.0)
}

/// Input and output shapes of a layer record.
#[inline(always)]
fn layer_shapes(rec: &RawLayer) -> (Shape, Shape) {
    (hwc(rec.input), hwc(rec.output))
}

/// A batch-1 shape from a record's height, width and channels.
#[inline(always)]
fn hwc(s: [u16; 3]) -> Shape {
    Shape::nhwc(1, usize::from(s[0]), usize::from(s[1]), usize::from(s[2]))
}

impl<'a> Model<'a> {
    /// Parse and validate a model file borrowed in place. The buffer must
    /// start at a [`BUFFER_ALIGN`] (4-byte) aligned address.
    pub fn parse(bytes: &'a [u8]) -> Result<Model<'a>, ModelError> {
        let model = Model::read_header(bytes)?;
        model.validate()?;
        Ok(model)
    }

    /// Everything after the header: the tensors, every layer once (checked:
    /// the shape chain, and the memory plan's peak), the BN records.
    #[inline(never)]
    fn validate(&self) -> Res<()> {
        self.check_tensors()?;
        let kind = self.header.kind;
        let mut shape = self.header.input;
        let mut peak = Some(0usize);
        for i in 0..self.layers.len() {
            let layer = self.decode_layer(i, Some(shape))?;
            let need = plan::layer_need(kind, layer.input, layer.output);
            peak = peak.zip(need).map(|(p, n)| p.max(n));
            shape = layer.output;
        }
        if shape != Shape::nhwc(1, 1, 1, self.header.classes) {
            return Err(layer_err(self.layers.len() - 1, LayerFault::FinalShape));
        }
        if peak != Some(self.header.arena_bytes) {
            return Err(arena_mismatch(self.header.arena_bytes, peak));
        }
        for j in 0..self.bn.len() {
            self.decode_bn(j, true)?;
        }
        Ok(())
    }

    /// The header (FORMAT.md, "Header") and where the tables are: inside
    /// the file, 4-aligned, after the header, not overlapping.
    #[inline(never)]
    fn read_header(bytes: &'a [u8]) -> Res<Model<'a>> {
        if cfg!(target_endian = "big") {
            return Err(ModelError::BigEndian);
        }
        if bytes.len() < HEADER_LEN {
            return Err(ModelError::Truncated {
                needed: HEADER_LEN,
                actual: bytes.len(),
            });
        }
        // Records are read in place: the buffer must be aligned first.
        let Some(h) = record_at::<RawHeader>(bytes, 0) else {
            return Err(ModelError::Misaligned);
        };
        if h.magic != MAGIC {
            return Err(ModelError::BadMagic);
        }
        if h.version != VERSION {
            return Err(ModelError::UnsupportedVersion(h.version));
        }
        let flags = h.flags;
        if flags & !(FLAG_INT8 | FLAG_HAS_BN) != 0 {
            return Err(ModelError::UnknownFlags(flags));
        }
        let file = bytes.len();
        if h.file_size as usize != file {
            return Err(ModelError::SizeMismatch {
                header: h.file_size,
                actual: file,
            });
        }
        let (stored, computed) = (h.crc32, file_crc(bytes));
        if stored != computed {
            return Err(ModelError::CrcMismatch { stored, computed });
        }
        let int8 = flags & FLAG_INT8 != 0;
        check_header(h, int8).map_err(ModelError::Header)?;
        let lt = table::<RawLayer>(bytes, h.layer_table_offset, h.layer_count, Table::Layers)?;
        let tt = table::<RawTensor>(bytes, h.tensor_table_offset, h.tensor_count, Table::Tensors)?;
        let bt = if h.bn_count > 0 {
            table::<RawBn>(bytes, h.bn_table_offset, h.bn_count, Table::Bn)?
        } else {
            (&[][..], (0, 0))
        };
        if overlaps(lt.1, tt.1) {
            return Err(ModelError::TableBounds(Table::Tensors));
        }
        if overlaps(lt.1, bt.1) || overlaps(tt.1, bt.1) {
            return Err(ModelError::TableBounds(Table::Bn));
        }
        Ok(Model {
            bytes,
            header: Header {
                kind: if int8 { Kind::Int8 } else { Kind::F32 },
                arena_bytes: h.arena_bytes as usize,
                input: hwc(h.input),
                classes: usize::from(h.classes),
                input_scale: h.input_scale,
                input_zero_point: h.input_zero_point,
                pixel_scale: h.pixel_scale,
            },
            layers: lt.0,
            tensors: tt.0,
            bn: bt.0,
        })
    }

    /// Layer `i` (0-based) in execution order.
    ///
    /// `parse` validated every record, so this only decodes (FORMAT.md's
    /// fields, the tensors' data slices and the arena offsets): about 440
    /// instructions on a Cortex-M4 for an int8 layer with five tensors, 340
    /// for an f32 layer, no RAM.
    pub fn layer(&self, i: usize) -> Result<Layer<'a>, ModelError> {
        self.decode_layer(i, None)
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Every layer in execution order. Each was validated by `parse`.
    pub fn layers(&self) -> impl Iterator<Item = Result<Layer<'a>, ModelError>> + '_ {
        (0..self.layers.len()).map(move |i| self.layer(i))
    }

    /// BN record `j`.
    pub fn bn_record(&self, j: usize) -> Result<BnRecord<'a>, ModelError> {
        self.decode_bn(j, false)
    }

    /// The BN records (none without `HAS_BN`).
    pub fn bn_records(&self) -> impl Iterator<Item = Result<BnRecord<'a>, ModelError>> + '_ {
        (0..self.bn.len()).map(move |j| self.bn_record(j))
    }

    /// Where `records` (one of this model's tables) ends in the file; 0
    /// for an empty one.
    fn end_of<T>(&self, records: &[T]) -> usize {
        match records.first() {
            Some(r) => self.offset_of(r) + core::mem::size_of_val(records),
            None => 0,
        }
    }

    /// Byte offset in the file of `record` (a record of this model's).
    pub(super) fn offset_of<T>(&self, record: &T) -> usize {
        (record as *const T as usize).wrapping_sub(self.bytes.as_ptr() as usize)
    }

    /// Decode and validate tensor record `index` (FORMAT.md, "Tensor
    /// table"): dtype, layout, reserved fields, dims and length.
    #[inline(never)]
    fn tensor_desc(&self, index: usize) -> Res<TensorDesc> {
        let err = |fault| ModelError::Tensor {
            index: index as u16,
            fault,
        };
        let rec = self
            .tensors
            .get(index)
            .ok_or(err(TensorFault::OutOfBounds))?;
        let dtype = DType::from_u8(rec.dtype).ok_or(err(TensorFault::UnknownDtype(rec.dtype)))?;
        let block = rec.block_rows;
        if !LayoutCode::valid(rec.layout, block, dtype) {
            return Err(err(TensorFault::Layout));
        }
        if rec.reserved0 != 0 || rec.reserved1 != 0 {
            return Err(err(TensorFault::Reserved));
        }
        let dims = rec.dims;
        // Stored elements: the rows (`dims[0]`) padded to whole blocks
        // (plain: `block` is 0 and the rows stay) times the other dims.
        let stored = super::layout::stored_elements(dims, block)
            .and_then(|n| n.checked_mul(dtype.size()))
            .filter(|_| !dims.contains(&0))
            .ok_or(err(TensorFault::Dims))?;
        let (offset, len) = (rec.offset, rec.len);
        if stored != len as usize {
            return Err(err(TensorFault::Length));
        }
        Ok(TensorDesc {
            dtype,
            block_rows: block,
            dims,
            offset,
            len,
        })
    }

    /// Every tensor: valid record, 16-aligned data inside the data region
    /// (after the tables), in ascending order without overlap, and pair
    /// words that are pairs.
    #[inline(never)]
    fn check_tensors(&self) -> Res<()> {
        let data_start = self
            .end_of(self.layers)
            .max(self.end_of(self.tensors))
            .max(self.end_of(self.bn));
        let mut prev_end = data_start;
        for i in 0..self.tensors.len() {
            let t = self.tensor_desc(i)?;
            let start = t.offset as usize;
            let end = start.checked_add(t.len as usize);
            let fault = if start % DATA_ALIGN != 0 {
                Some(TensorFault::Misaligned)
            } else if start < data_start || end.is_none_or(|e| e > self.bytes.len()) {
                Some(TensorFault::OutOfBounds)
            } else if start < prev_end {
                Some(TensorFault::Overlap)
            } else if let (_, Data::I8Pairs(words)) = self.tensor_data(i as u16)? {
                (!pairs_ok(words)).then_some(TensorFault::Values)
            } else {
                None
            };
            if let Some(fault) = fault {
                return Err(ModelError::Tensor {
                    index: i as u16,
                    fault,
                });
            }
            prev_end = end.unwrap_or(usize::MAX);
        }
        Ok(())
    }

    /// The rows per block (0: plain) and the typed data of tensor `id`,
    /// read from its record without validating it (`check_tensors` did).
    #[inline(never)]
    fn tensor_data(&self, id: u16) -> Res<(u8, Data<'a>)> {
        self.tensor_slice(id)
    }

    /// [`Self::tensor_data`], inlined: the layer decoder's copy.
    #[inline(always)]
    fn tensor_slice(&self, id: u16) -> Res<(u8, Data<'a>)> {
        let err = |fault| ModelError::Tensor { index: id, fault };
        // Callers pass indices below the tensor count (checked by `parse`).
        let rec = self
            .tensors
            .get(usize::from(id))
            .ok_or(err(TensorFault::OutOfBounds))?;
        let start = rec.offset as usize;
        let raw: &'a [u8] = start
            .checked_add(rec.len as usize)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or(err(TensorFault::OutOfBounds))?;
        let misaligned = |_| err(TensorFault::Misaligned);
        let data = match DType::from_u8(rec.dtype) {
            Some(DType::F32) => Data::F32(bytemuck::try_cast_slice(raw).map_err(misaligned)?),
            Some(DType::I8) => Data::I8(bytemuck::try_cast_slice(raw).map_err(misaligned)?),
            Some(DType::I32) => Data::I32(bytemuck::try_cast_slice(raw).map_err(misaligned)?),
            Some(DType::I8Pair) => {
                Data::I8Pairs(bytemuck::try_cast_slice(raw).map_err(misaligned)?)
            }
            None => return Err(err(TensorFault::UnknownDtype(rec.dtype))),
        };
        Ok((rec.block_rows, data))
    }

    /// Tensor `id`, in the role `role`, must exist and be of `dtype`
    /// (int8 `blocked` weights: or pair words), blocked or plain as
    /// `blocked` says, with logical `dims`. Returns its rows per block.
    #[inline(never)]
    fn want(
        &self,
        id: u16,
        role: Role,
        dtype: DType,
        blocked: bool,
        dims: [u32; 4],
    ) -> Result<u8, LayerFault> {
        if id == NO_TENSOR {
            return Err(LayerFault::MissingTensor(role));
        }
        let t = self
            .tensor_desc(usize::from(id))
            .map_err(|_| LayerFault::TensorIndex(role))?;
        let pairs = blocked && dtype == DType::I8 && t.dtype == DType::I8Pair;
        if (t.dtype == dtype || pairs) && blocked == (t.block_rows != 0) && t.dims == dims {
            Ok(t.block_rows)
        } else {
            Err(LayerFault::TensorKind(role))
        }
    }

    /// Layer `i`, decoded from its record, with its arena offsets.
    /// `expected`: the input shape the chain requires; given only by
    /// `parse`, which is what turns the checks on.
    pub(super) fn decode_layer(&self, i: usize, expected: Option<Shape>) -> Res<Layer<'a>> {
        let fault = |f| layer_err(i, f);
        let rec = self.layers.get(i).ok_or(fault(LayerFault::InputShape))?;
        let activation = ActCode::from_u8(rec.activation)
            .ok_or(fault(LayerFault::UnknownActivation(rec.activation)))?
            .activation();
        let (input, output) = layer_shapes(rec);
        let window = window_of(rec.window);
        let (ih, iw, ic) = (input.h, input.w, input.c);
        let op = match OpCode::from_u8(rec.op) {
            Some(OpCode::Dense) => Op::Dense(Dense {
                inputs: usize::try_from(ih as u64 * iw as u64 * ic as u64)
                    .map_err(|_| fault(LayerFault::Geometry))?,
                outputs: output.c,
            }),
            Some(OpCode::Conv2d) => Op::Conv(Conv2d {
                in_h: ih,
                in_w: iw,
                in_c: ic,
                out_c: output.c,
                window,
            }),
            Some(OpCode::Depthwise) => Op::Depthwise(DepthwiseConv2d {
                in_h: ih,
                in_w: iw,
                channels: ic,
                window,
            }),
            Some(code @ (OpCode::MaxPool | OpCode::AvgPool)) => Op::Pool(Pool2d {
                kind: if code == OpCode::MaxPool {
                    PoolKind::Max
                } else {
                    PoolKind::Average
                },
                in_h: ih,
                in_w: iw,
                channels: ic,
                window,
            }),
            Some(OpCode::GlobalAvgPool) => Op::GlobalAvgPool,
            Some(OpCode::Activation) => Op::Activation,
            None => return Err(fault(LayerFault::UnknownOp(rec.op))),
        };
        let ids = rec.tensors;
        if let Some(expected) = expected {
            self.check_layer(rec, &op, activation, expected, &ids)
                .map_err(fault)?;
        }
        // The tensors, as their records say (checked above, or by `parse`):
        // one loop around one inlined copy of the lookup.
        let mut slots = [None; SLOTS];
        let mut k = 0;
        while let (Some(&id), Some(slot)) = (ids.get(k), slots.get_mut(k)) {
            k = step(k);
            if id != NO_TENSOR {
                *slot = Some(self.tensor_slice(id)?);
            }
        }
        let requant = match (
            slots[Slot::Multiplier as usize],
            slots[Slot::Shift as usize],
        ) {
            (Some((_, Data::I32(m))), Some((_, Data::I32(s)))) => Some((m, s)),
            _ => None,
        };
        let table = match slots[Slot::Table as usize] {
            Some((_, Data::I8(t))) => t.try_into().ok(),
            _ => None,
        };
        // The memory plan. A `Model` exists only once `parse` checked that
        // the header's arena is the plan's peak, so every layer fits; while
        // `parse` is still decoding (the arena not yet checked) a layer that
        // does not fit gets (0, 0), which nobody sees: `validate` then
        // rejects the file with `ArenaMismatch`.
        let (in_offset, out_offset) =
            plan::offsets(self.header.kind, self.header.arena_bytes, i, input, output)
                .unwrap_or_default();
        Ok(Layer {
            op,
            activation,
            zp_folded: rec.flags & LAYER_ZP_FOLDED != 0,
            input,
            output,
            weights: slots[Slot::Weight as usize].map(|(_, d)| d),
            block_rows: slots[Slot::Weight as usize].map_or(0, |(r, _)| usize::from(r)),
            bias: slots[Slot::Bias as usize].map(|(_, d)| d),
            requant,
            table,
            quant: QuantOut {
                scale: rec.output_scale,
                zero_point: rec.output_zero_point,
                requant_zero_point: rec.requant_zero_point,
                clamp_min: rec.clamp_min,
                clamp_max: rec.clamp_max,
                requant_scale: rec.requant_scale,
            },
            in_offset,
            out_offset,
            tensor_ids: ids,
        })
    }

    /// Every rule of FORMAT.md for layer record `rec` (its `op` and
    /// `activation` decoded, tensor indices `ids`) whose input must be
    /// `expected`: shapes, reserved fields, geometry, flags, the tensors
    /// each role requires (dtype, layout, dims) and forbids, quantization
    /// parameters and the requantization values.
    #[inline(never)]
    fn check_layer(
        &self,
        rec: &RawLayer,
        op: &Op,
        activation: Option<Activation>,
        expected: Shape,
        ids: &[u16; SLOTS],
    ) -> Result<(), LayerFault> {
        let (input, output) = layer_shapes(rec);
        let int8 = self.header.kind == Kind::Int8;
        if input != expected {
            return Err(LayerFault::InputShape);
        }
        if output.is_empty() {
            return Err(LayerFault::OutputShape);
        }
        if rec.reserved0 != 0 || rec.reserved1 != 0 {
            return Err(LayerFault::Reserved);
        }
        // The window's output size (zero stride, zero kernel, kernel beyond
        // the padded input: Geometry); ops without a window have none.
        // Per op: the multiply-accumulates per output (int8: at most
        // `MAX_ACC_TAPS`, so that |acc| fits i32) and the output channels.
        let window = op.window();
        let (taps, channels) = match *op {
            Op::Dense(d) => (d.inputs, d.outputs),
            Op::Conv(c) => (c.window.kernel_h * c.window.kernel_w * c.in_c, c.out_c),
            Op::Depthwise(d) => (d.window.kernel_h * d.window.kernel_w, d.channels),
            Op::Pool(p) => (0, p.channels),
            Op::GlobalAvgPool | Op::Activation => (0, input.c),
        };
        let (oh, ow) = match window {
            Some(w) => w
                .output_hw(input.h, input.w)
                .map_err(|_| LayerFault::Geometry)?,
            None if rec.window != [0; 8] => return Err(LayerFault::Geometry),
            None => (1, 1),
        };
        let computed = if matches!(op, Op::Activation) {
            input
        } else {
            Shape::nhwc(1, oh, ow, channels)
        };
        if computed != output {
            return Err(LayerFault::OutputShape);
        }
        let pooling = matches!(op, Op::Pool(_) | Op::GlobalAvgPool);
        if (pooling && activation.is_some())
            || (matches!(op, Op::Activation) && activation.is_none())
        {
            return Err(LayerFault::ActivationNotAllowed);
        }
        let blocked = op.is_blocked();
        let weighted = blocked || matches!(op, Op::Depthwise(_));
        // A folded zero point needs every tap in bounds (no padding).
        let flags = rec.flags;
        if flags & !LAYER_ZP_FOLDED != 0
            || (flags != 0
                && !(int8 && blocked && window.is_none_or(|w| w.padding == Padding::NONE)))
        {
            return Err(LayerFault::BadFlags(flags));
        }
        // int8 pooling: every window has a tap (no int8 value stands for
        // padding) and averages fit i32 (at most 2^22 taps).
        let pool_ok = match op {
            Op::Pool(p) => crate::kernels::int8::check_pool_windows(p, oh, ow).is_ok(),
            Op::GlobalAvgPool => input.h * input.w <= crate::kernels::int8::MAX_POOL_TAPS,
            _ => true,
        };
        if int8 && !pool_ok {
            return Err(LayerFault::Geometry);
        }

        // The tensors, one role at a time: whether the layer has it, then
        // its dtype, layout and dims. The weights decide the rows per block
        // (dense and conv: 4 or 8); the bias is padded to whole blocks.
        let saturating = matches!(activation, Some(Activation::Sigmoid | Activation::Tanh));
        let needs = [
            weighted,
            weighted,
            weighted && int8,
            weighted && int8,
            int8 && saturating && (weighted || matches!(op, Op::Activation)),
        ];
        let mut r = 0usize;
        let mut k = 0;
        while let (Some(&id), Some(&need), Some(&slot)) =
            (ids.get(k), needs.get(k), Slot::ALL.get(k))
        {
            k = step(k);
            let role = slot.role();
            if !need {
                if id != NO_TENSOR {
                    return Err(LayerFault::UnexpectedTensor(role));
                }
                continue;
            }
            let dtype = match slot {
                Slot::Weight if int8 => DType::I8,
                Slot::Bias if int8 => DType::I32,
                Slot::Weight | Slot::Bias => DType::F32,
                Slot::Multiplier | Slot::Shift => DType::I32,
                Slot::Table => DType::I8,
            };
            let dims = op
                .tensor_dims(slot, r)
                .ok_or(LayerFault::TensorKind(role))?;
            let rows = self.want(id, role, dtype, blocked && slot == Slot::Weight, dims)?;
            if slot == Slot::Weight {
                r = usize::from(rows);
            }
        }

        let q = [
            rec.output_zero_point,
            rec.requant_zero_point,
            rec.clamp_min,
            rec.clamp_max,
        ];
        let scale = rec.output_scale;
        // The requantization target: the output scale, or for a table
        // (sigmoid/tanh) the pre-activation's; only weighted int8 layers.
        let target = rec.requant_scale;
        let target_ok = if weighted && int8 {
            positive(target) && (saturating || target.to_bits() == scale.to_bits())
        } else {
            target.to_bits() == 0
        };
        let q_ok = if int8 {
            positive(scale) && q.iter().all(|v| (-128..=127).contains(v)) && q[2] <= q[3]
        } else {
            scale.to_bits() == 0 && q == [0; 4]
        };
        if !target_ok {
            return Err(LayerFault::Quantization);
        }
        if !q_ok {
            return Err(LayerFault::Quantization);
        }
        if weighted && int8 {
            if taps > MAX_ACC_TAPS {
                return Err(LayerFault::AccumulatorRange);
            }
            if let (Ok((_, Data::I32(m))), Ok((_, Data::I32(s)))) = (
                self.tensor_data(ids[Slot::Multiplier as usize]),
                self.tensor_data(ids[Slot::Shift as usize]),
            ) {
                if !requant_ok(m, s) {
                    return Err(LayerFault::Quantization);
                }
            }
        }
        Ok(())
    }

    /// BN record `j`; `check`: validate it (only `parse` does).
    #[inline(never)]
    pub(super) fn decode_bn(&self, j: usize, check: bool) -> Res<BnRecord<'a>> {
        let fault = |f| bn_err(j, f);
        let rec = self.bn.get(j).ok_or(fault(LayerFault::InputShape))?;
        // The layer it was folded into (its record validated by `parse`
        // before any BN record): its op and output channels.
        let li = usize::from(rec.layer);
        let layer = self.layers.get(li).ok_or(fault(LayerFault::InputShape))?;
        let ids = rec.tensors;
        let eps = rec.eps;
        if check {
            let weighted = matches!(
                OpCode::from_u8(layer.op),
                Some(OpCode::Dense | OpCode::Conv2d | OpCode::Depthwise)
            );
            if !weighted {
                return Err(fault(LayerFault::UnexpectedTensor(Role::BnParam)));
            }
            if rec.reserved0 != 0 {
                return Err(fault(LayerFault::Reserved));
            }
            if !positive(eps) {
                return Err(fault(LayerFault::Quantization));
            }
            let dims = [u32::from(layer.output[2]), 1, 1, 1];
            let mut k = 0;
            while let Some(&id) = ids.get(k) {
                k = step(k);
                self.want(id, Role::BnParam, DType::F32, false, dims)
                    .map_err(fault)?;
            }
        }
        let mut out = [&[][..]; 4];
        let mut k = 0;
        while let (Some(&id), Some(slot)) = (ids.get(k), out.get_mut(k)) {
            k = step(k);
            match self.tensor_data(id)?.1 {
                Data::F32(d) => *slot = d,
                _ => return Err(fault(LayerFault::TensorKind(Role::BnParam))),
            }
        }
        if check && !var_ok(out[3]) {
            return Err(fault(LayerFault::TensorKind(Role::BnParam)));
        }
        Ok(BnRecord {
            layer: li,
            gamma: out[0],
            beta: out[1],
            mean: out[2],
            var: out[3],
            eps,
            tensor_ids: ids,
        })
    }

    /// Model-wide facts.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The CRC-32 the header stores (checked by `parse`): the file's
    /// identity, for example of the model a saved overlay belongs to.
    pub fn header_crc(&self) -> u32 {
        let at = layout::CRC_FIELD;
        self.bytes
            .get(at)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u32::from_le_bytes)
    }

    /// f32 or int8.
    pub fn kind(&self) -> Kind {
        self.header.kind
    }

    /// Bytes of arena the engine needs.
    pub fn arena_bytes(&self) -> usize {
        self.header.arena_bytes
    }

    /// The file.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of tensors in the table.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }

    /// Tensor `index`'s record and data (for tools that rewrite or inspect files).
    pub fn tensor(&self, index: usize) -> Result<(TensorDesc, Data<'a>), ModelError> {
        let desc = self.tensor_desc(index)?;
        Ok((desc, self.tensor_data(index as u16)?.1))
    }
}
