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

use super::*;
use crate::kernels::unroll_barrier;

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

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1 && a.0 != a.1 && b.0 != b.1
}

/// Bytes of one sample of activations of `shape`, rounded up to 16 (the
/// plan's unit). Exact in u64: the file's dimensions are 16-bit.
fn region_bytes(kind: Kind, shape: Shape) -> u64 {
    let elements = shape.h as u64 * shape.w as u64 * shape.c as u64;
    let bytes = match kind {
        Kind::F32 => elements * 4,
        Kind::Int8 => elements,
    };
    (bytes + (ALIGN as u64 - 1)) & !(ALIGN as u64 - 1)
}

/// The header's fields other than the file's framing: counts, the BN
/// table's presence, input shape, classes, reserved fields, the input
/// quantization (int8: a finite positive scale and a zero point in
/// `[-128, 127]`; f32: zeros) and the pixel scale.
fn check_header(h: Rec<'_, HEADER_LEN>, int8: bool) -> Result<(), HeaderFault> {
    let layers = usize::from(h.u16(20));
    let bn = usize::from(h.u16(36));
    let has_bn = h.u16(6) & FLAG_HAS_BN != 0;
    if layers == 0 || layers > MAX_LAYERS {
        return Err(HeaderFault::LayerCount);
    }
    if usize::from(h.u16(22)) > MAX_TENSORS {
        return Err(HeaderFault::TensorCount);
    }
    if has_bn != (bn > 0) || (!has_bn && h.u32(32) != 0) || bn > MAX_LAYERS {
        return Err(HeaderFault::BnTable);
    }
    if h.u16(40) == 0 || h.u16(42) == 0 || h.u16(44) == 0 {
        return Err(HeaderFault::InputShape);
    }
    if h.u16(38) == 0 {
        return Err(HeaderFault::Classes);
    }
    if h.u16(46) != 0 || h.u32(60) != 0 {
        return Err(HeaderFault::Reserved);
    }
    let (scale, zero_point) = (h.f32(48), h.i32(52));
    let quant_ok = if int8 {
        positive(scale) && (-128..=127).contains(&zero_point)
    } else {
        scale.to_bits() == 0 && zero_point == 0
    };
    if !quant_ok {
        return Err(HeaderFault::InputQuantization);
    }
    if !positive(h.f32(56)) {
        return Err(HeaderFault::PixelScale);
    }
    Ok(())
}

/// Finite and above zero (NaN fails both comparisons).
fn positive(v: f32) -> bool {
    v > 0.0 && v < f32::INFINITY
}

/// Input and output shapes of a layer record.
#[inline(always)]
fn layer_shapes(rec: Rec<'_, LAYER_LEN>) -> (Shape, Shape) {
    let shape_at = |at: usize| {
        Shape::nhwc(
            1,
            usize::from(rec.u16(at)),
            usize::from(rec.u16(at + 2)),
            usize::from(rec.u16(at + 4)),
        )
    };
    (shape_at(4), shape_at(10))
}

impl<'a> Model<'a> {
    /// Parse and validate a model file borrowed in place. The buffer must
    /// start at a 4-byte aligned address.
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
        let mut peak = 0u64;
        for i in 0..self.layer_count {
            let layer = self.decode_layer(i, Some(shape))?;
            peak = peak.max(region_bytes(kind, layer.input) + region_bytes(kind, layer.output));
            shape = layer.output;
        }
        if shape != Shape::nhwc(1, 1, 1, self.header.classes) {
            return Err(layer_err(self.layer_count - 1, LayerFault::FinalShape));
        }
        let header = self.header.arena_bytes as u32;
        if peak != u64::from(header) {
            return Err(ModelError::ArenaMismatch {
                header,
                computed: u32::try_from(peak).unwrap_or(u32::MAX),
            });
        }
        for j in 0..self.bn_count {
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
        let Some(h) = Rec::<HEADER_LEN>::at(bytes, 0) else {
            return Err(ModelError::Truncated {
                needed: HEADER_LEN,
                actual: bytes.len(),
            });
        };
        if h.u32(0) != u32::from_le_bytes(MAGIC) {
            return Err(ModelError::BadMagic);
        }
        let version = h.u16(4);
        if version != VERSION {
            return Err(ModelError::UnsupportedVersion(version));
        }
        let flags = h.u16(6);
        if flags & !(FLAG_INT8 | FLAG_HAS_BN) != 0 {
            return Err(ModelError::UnknownFlags(flags));
        }
        let file = bytes.len();
        if h.u32(8) as usize != file {
            return Err(ModelError::SizeMismatch {
                header: h.u32(8),
                actual: file,
            });
        }
        let (stored, computed) = (h.u32(12), file_crc(bytes));
        if stored != computed {
            return Err(ModelError::CrcMismatch { stored, computed });
        }
        if bytes.as_ptr() as usize % 4 != 0 {
            return Err(ModelError::Misaligned);
        }
        let int8 = flags & FLAG_INT8 != 0;
        check_header(h, int8).map_err(ModelError::Header)?;
        let (layer_count, tensor_count) = (usize::from(h.u16(20)), usize::from(h.u16(22)));
        let bn_count = usize::from(h.u16(36));
        // `[offset, offset + count·size)` of the table whose offset is at `at`.
        let range = |at: usize, count: usize, size: usize, t: Table| -> Res<(usize, usize)> {
            let start = h.u32(at) as usize;
            match start.checked_add(count * size) {
                Some(end) if start % 4 == 0 && start >= HEADER_LEN && end <= file => {
                    Ok((start, end))
                }
                _ => Err(ModelError::TableBounds(t)),
            }
        };
        let lt = range(24, layer_count, LAYER_LEN, Table::Layers)?;
        let tt = range(28, tensor_count, TENSOR_LEN, Table::Tensors)?;
        let bt = if bn_count > 0 {
            range(32, bn_count, BN_LEN, Table::Bn)?
        } else {
            (0, 0)
        };
        if overlaps(lt, tt) {
            return Err(ModelError::TableBounds(Table::Tensors));
        }
        if overlaps(lt, bt) || overlaps(tt, bt) {
            return Err(ModelError::TableBounds(Table::Bn));
        }
        Ok(Model {
            bytes,
            header: Header {
                kind: if int8 { Kind::Int8 } else { Kind::F32 },
                arena_bytes: h.u32(16) as usize,
                input: Shape::nhwc(
                    1,
                    usize::from(h.u16(40)),
                    usize::from(h.u16(42)),
                    usize::from(h.u16(44)),
                ),
                classes: usize::from(h.u16(38)),
                input_scale: h.f32(48),
                input_zero_point: h.i32(52),
                pixel_scale: h.f32(56),
            },
            layer_count,
            tensor_count,
            bn_count,
            layer_table: lt.0,
            tensor_table: tt.0,
            bn_table: bt.0,
        })
    }

    /// Layer `i` (0-based) in execution order.
    ///
    /// `parse` validated every record, so this only decodes (FORMAT.md's
    /// fields, the tensors' data slices and the arena offsets): about 460
    /// instructions on a Cortex-M4 for an int8 layer with five tensors, 350
    /// for an f32 layer, no RAM.
    pub fn layer(&self, i: usize) -> Result<Layer<'a>, ModelError> {
        self.decode_layer(i, None)
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layer_count
    }

    /// Every layer in execution order. Each was validated by `parse`.
    pub fn layers(&self) -> impl Iterator<Item = Result<Layer<'a>, ModelError>> + '_ {
        (0..self.layer_count).map(move |i| self.layer(i))
    }

    /// BN record `j`.
    pub fn bn_record(&self, j: usize) -> Result<BnRecord<'a>, ModelError> {
        self.decode_bn(j, false)
    }

    /// The BN records (none without `HAS_BN`).
    pub fn bn_records(&self) -> impl Iterator<Item = Result<BnRecord<'a>, ModelError>> + '_ {
        (0..self.bn_count).map(move |j| self.bn_record(j))
    }

    /// Record `i` of the table at `table` with `count` records of `N` bytes.
    fn record<const N: usize>(&self, table: usize, count: usize, i: usize) -> Option<Rec<'a, N>> {
        if i >= count {
            return None;
        }
        Rec::at(self.bytes, table + i * N)
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
            .record::<TENSOR_LEN>(self.tensor_table, self.tensor_count, index)
            .ok_or(err(TensorFault::OutOfBounds))?;
        let dtype = DType::from_code(rec.u8(0)).ok_or(err(TensorFault::UnknownDtype(rec.u8(0))))?;
        let block = rec.u8(2);
        // Layout 0 is plain, layout 1 blocked by 4 or 8 rows; pair words
        // are blocked by 4 (FORMAT.md).
        let layout_ok = match (rec.u8(1), block) {
            (0, 0) | (1, 8) => dtype != DType::I8Pair,
            (1, 4) => true,
            _ => false,
        };
        if !layout_ok {
            return Err(err(TensorFault::Layout));
        }
        if rec.u8(3) != 0 || rec.u32(28) != 0 {
            return Err(err(TensorFault::Reserved));
        }
        let dims = [rec.u32(4), rec.u32(8), rec.u32(12), rec.u32(16)];
        // Stored elements: the rows (`dims[0]`) padded to whole blocks
        // (plain: `block` is 0 and the rows stay) times the other dims.
        let b = usize::from(block.max(1));
        let mut stored = (dims[0] as usize).div_ceil(b).checked_mul(b);
        for &d in dims.iter().skip(1) {
            stored = stored.and_then(|n| n.checked_mul(d as usize));
        }
        let stored = stored
            .and_then(|n| n.checked_mul(dtype.size()))
            .filter(|_| !dims.contains(&0))
            .ok_or(err(TensorFault::Dims))?;
        let (offset, len) = (rec.u32(20), rec.u32(24));
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
        let data_start = (self.layer_table + self.layer_count * LAYER_LEN)
            .max(self.tensor_table + self.tensor_count * TENSOR_LEN)
            .max(self.bn_table + self.bn_count * BN_LEN);
        let mut prev_end = data_start;
        for i in 0..self.tensor_count {
            let t = self.tensor_desc(i)?;
            let start = t.offset as usize;
            let end = start.checked_add(t.len as usize);
            let fault = if start % ALIGN != 0 {
                Some(TensorFault::Misaligned)
            } else if start < data_start || end.is_none_or(|e| e > self.bytes.len()) {
                Some(TensorFault::OutOfBounds)
            } else if start < prev_end {
                Some(TensorFault::Overlap)
            } else if let (_, Data::I8Pairs(words)) = self.tensor_data(i as u16)? {
                (!words
                    .iter()
                    .all(|&w| crate::kernels::pack::split_pair_word(w).is_some()))
                .then_some(TensorFault::Values)
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
        // Callers pass indices below `tensor_count` (checked by `parse`);
        // any other index still reads only inside the buffer.
        let rec =
            Rec::<TENSOR_LEN>::at(self.bytes, self.tensor_table + usize::from(id) * TENSOR_LEN)
                .ok_or(err(TensorFault::OutOfBounds))?;
        let start = rec.u32(20) as usize;
        let raw: &'a [u8] = start
            .checked_add(rec.u32(24) as usize)
            .and_then(|end| self.bytes.get(start..end))
            .ok_or(err(TensorFault::OutOfBounds))?;
        let misaligned = |_| err(TensorFault::Misaligned);
        let data = match rec.u8(0) {
            1 => Data::F32(bytemuck::try_cast_slice(raw).map_err(misaligned)?),
            2 => Data::I8(bytemuck::try_cast_slice(raw).map_err(misaligned)?),
            3 => Data::I32(bytemuck::try_cast_slice(raw).map_err(misaligned)?),
            4 => Data::I8Pairs(bytemuck::try_cast_slice(raw).map_err(misaligned)?),
            c => return Err(err(TensorFault::UnknownDtype(c))),
        };
        Ok((rec.u8(2), data))
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
        let rec = self
            .record::<LAYER_LEN>(self.layer_table, self.layer_count, i)
            .ok_or(fault(LayerFault::InputShape))?;
        let activation = activation_from_code(rec.u8(1))
            .ok_or(fault(LayerFault::UnknownActivation(rec.u8(1))))?;
        let (input, output) = layer_shapes(rec);
        let g = |at: usize| usize::from(rec.u8(at));
        let window = Window {
            kernel_h: g(16),
            kernel_w: g(17),
            stride_h: g(18),
            stride_w: g(19),
            padding: Padding {
                top: g(20),
                bottom: g(21),
                left: g(22),
                right: g(23),
            },
        };
        let (ih, iw, ic) = (input.h, input.w, input.c);
        let op = match rec.u8(0) {
            1 => Op::Dense(Dense {
                inputs: usize::try_from(ih as u64 * iw as u64 * ic as u64)
                    .map_err(|_| fault(LayerFault::Geometry))?,
                outputs: output.c,
            }),
            2 => Op::Conv(Conv2d {
                in_h: ih,
                in_w: iw,
                in_c: ic,
                out_c: output.c,
                window,
            }),
            3 => Op::Depthwise(DepthwiseConv2d {
                in_h: ih,
                in_w: iw,
                channels: ic,
                window,
            }),
            code @ (4 | 5) => Op::Pool(Pool2d {
                kind: if code == 4 {
                    PoolKind::Max
                } else {
                    PoolKind::Average
                },
                in_h: ih,
                in_w: iw,
                channels: ic,
                window,
            }),
            6 => Op::GlobalAvgPool,
            7 => Op::Activation,
            other => return Err(fault(LayerFault::UnknownOp(other))),
        };
        let ids = [
            rec.u16(24),
            rec.u16(26),
            rec.u16(28),
            rec.u16(30),
            rec.u16(32),
        ];
        if let Some(expected) = expected {
            self.check_layer(rec, &op, activation, expected, &ids)
                .map_err(fault)?;
        }
        // The tensors, as their records say (checked above, or by `parse`):
        // one loop around one inlined copy of the lookup.
        let mut slots = [None; 5];
        let mut k = 0;
        while let (Some(&id), Some(slot)) = (ids.get(k), slots.get_mut(k)) {
            k = step(k);
            if id != NO_TENSOR {
                *slot = Some(self.tensor_slice(id)?);
            }
        }
        let requant = match (slots[2], slots[3]) {
            (Some((_, Data::I32(m))), Some((_, Data::I32(s)))) => Some((m, s)),
            _ => None,
        };
        let table = match slots[4] {
            Some((_, Data::I8(t))) => t.try_into().ok(),
            _ => None,
        };
        // The memory plan: even layers read at 0 and write at the end, odd
        // layers the reverse (`parse` checked that the arena holds both).
        let arena = self.header.arena_bytes as u64;
        let end = |s: Shape| arena.saturating_sub(region_bytes(self.header.kind, s)) as usize;
        let (in_offset, out_offset) = if i % 2 == 0 {
            (0, end(output))
        } else {
            (end(input), 0)
        };
        Ok(Layer {
            op,
            activation,
            zp_folded: rec.u16(2) & LAYER_ZP_FOLDED != 0,
            input,
            output,
            weights: slots[0].map(|(_, d)| d),
            block_rows: slots[0].map_or(0, |(r, _)| usize::from(r)),
            bias: slots[1].map(|(_, d)| d),
            requant,
            table,
            quant: QuantOut {
                scale: rec.f32(36),
                zero_point: rec.i32(40),
                requant_zero_point: rec.i32(44),
                clamp_min: rec.i32(48),
                clamp_max: rec.i32(52),
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
        rec: Rec<'_, LAYER_LEN>,
        op: &Op,
        activation: Option<Activation>,
        expected: Shape,
        ids: &[u16; 5],
    ) -> Result<(), LayerFault> {
        let (input, output) = layer_shapes(rec);
        let int8 = self.header.kind == Kind::Int8;
        if input != expected {
            return Err(LayerFault::InputShape);
        }
        if output.is_empty() {
            return Err(LayerFault::OutputShape);
        }
        if rec.u16(34) != 0 || rec.u32(56) != 0 || rec.u32(60) != 0 {
            return Err(LayerFault::Reserved);
        }
        // The window's output size (zero stride, zero kernel, kernel beyond
        // the padded input: Geometry); ops without a window have none.
        // Per op: the weights' dims, the multiply-accumulates per output
        // (int8: at most 60,000, so that |acc| fits i32) and the channels
        // of the output.
        let (window, wdims, taps, channels) = match *op {
            Op::Dense(d) => (None, [d.outputs, d.inputs, 1, 1], d.inputs, d.outputs),
            Op::Conv(c) => {
                let w = c.window;
                let taps = w.kernel_h * w.kernel_w * c.in_c;
                (
                    Some(w),
                    [c.out_c, w.kernel_h, w.kernel_w, c.in_c],
                    taps,
                    c.out_c,
                )
            }
            Op::Depthwise(d) => {
                let w = d.window;
                let taps = w.kernel_h * w.kernel_w;
                (
                    Some(w),
                    [w.kernel_h, w.kernel_w, d.channels, 1],
                    taps,
                    d.channels,
                )
            }
            Op::Pool(p) => (Some(p.window), [0; 4], 0, p.channels),
            Op::GlobalAvgPool | Op::Activation => (None, [0; 4], 0, input.c),
        };
        let (oh, ow) = match window {
            Some(w) => w
                .output_hw(input.h, input.w)
                .map_err(|_| LayerFault::Geometry)?,
            None if rec.u32(16) | rec.u32(20) != 0 => return Err(LayerFault::Geometry),
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
        let blocked = matches!(op, Op::Dense(_) | Op::Conv(_));
        let weighted = blocked || matches!(op, Op::Depthwise(_));
        // A folded zero point needs every tap in bounds (no padding).
        let flags = rec.u16(2);
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
        let u = |v: usize| u32::try_from(v).unwrap_or(0); // 0: never a valid dim
        let c = u(channels);
        let mut r = 1u32;
        let roles = [
            Role::Weight,
            Role::Bias,
            Role::Multiplier,
            Role::Shift,
            Role::Table,
        ];
        let mut k = 0;
        while let (Some(&id), Some(&need), Some(&role)) = (ids.get(k), needs.get(k), roles.get(k)) {
            k = step(k);
            if !need {
                if id != NO_TENSOR {
                    return Err(LayerFault::UnexpectedTensor(role));
                }
                continue;
            }
            let (dtype, dims) = match role {
                Role::Weight => (if int8 { DType::I8 } else { DType::F32 }, wdims.map(u)),
                Role::Bias => (
                    if int8 { DType::I32 } else { DType::F32 },
                    [c.div_ceil(r) * r, 1, 1, 1],
                ),
                Role::Multiplier | Role::Shift => (DType::I32, [c, 1, 1, 1]),
                _ => (DType::I8, [256, 1, 1, 1]),
            };
            let rows = self.want(id, role, dtype, blocked && role == Role::Weight, dims)?;
            if role == Role::Weight {
                r = u32::from(rows.max(1));
            }
        }

        let q = [rec.i32(40), rec.i32(44), rec.i32(48), rec.i32(52)];
        let scale = rec.f32(36);
        let q_ok = if int8 {
            positive(scale) && q.iter().all(|v| (-128..=127).contains(v)) && q[2] <= q[3]
        } else {
            scale.to_bits() == 0 && q == [0; 4]
        };
        if !q_ok {
            return Err(LayerFault::Quantization);
        }
        if weighted && int8 {
            if taps > 60_000 {
                return Err(LayerFault::AccumulatorRange);
            }
            // Multipliers 0 or in [2^30, 2^31), shifts in [-31, 30].
            use crate::kernels::requant::{multiplier_ok, shift_ok};
            if let (Ok((_, Data::I32(m))), Ok((_, Data::I32(s)))) =
                (self.tensor_data(ids[2]), self.tensor_data(ids[3]))
            {
                for (&m, &s) in m.iter().zip(s) {
                    unroll_barrier();
                    if !(multiplier_ok(m) && shift_ok(s)) {
                        return Err(LayerFault::Quantization);
                    }
                }
            }
        }
        Ok(())
    }

    /// BN record `j`; `check`: validate it (only `parse` does).
    #[inline(never)]
    pub(super) fn decode_bn(&self, j: usize, check: bool) -> Res<BnRecord<'a>> {
        let fault = |f| bn_err(j, f);
        let rec = self
            .record::<BN_LEN>(self.bn_table, self.bn_count, j)
            .ok_or(fault(LayerFault::InputShape))?;
        // The layer it was folded into (its record validated by `parse`
        // before any BN record): its op and output channels.
        let li = usize::from(rec.u16(0));
        let layer = self
            .record::<LAYER_LEN>(self.layer_table, self.layer_count, li)
            .ok_or(fault(LayerFault::InputShape))?;
        let ids = [rec.u16(2), rec.u16(4), rec.u16(6), rec.u16(8)];
        let eps = rec.f32(12);
        if check {
            if !matches!(layer.u8(0), 1..=3) {
                return Err(fault(LayerFault::UnexpectedTensor(Role::BnParam)));
            }
            if rec.u16(10) != 0 {
                return Err(fault(LayerFault::Reserved));
            }
            if !positive(eps) {
                return Err(fault(LayerFault::Quantization));
            }
            let dims = [u32::from(layer.u16(14)), 1, 1, 1];
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
        if check && out[3].iter().any(|v| v.is_nan() || *v < 0.0) {
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
        self.tensor_count
    }

    /// Tensor `index`'s record and data (for tools that rewrite or inspect files).
    pub fn tensor(&self, index: usize) -> Result<(TensorDesc, Data<'a>), ModelError> {
        let desc = self.tensor_desc(index)?;
        Ok((desc, self.tensor_data(index as u16)?.1))
    }
}
