//! `Model::parse`: every check of FORMAT.md, in file order.

use super::*;

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

/// Byte range `[offset, offset + count·size)` of a table, checked.
fn table_range(
    offset: u32,
    count: usize,
    size: usize,
    file: usize,
    t: Table,
) -> Res<(usize, usize)> {
    let start = offset as usize;
    let end = count
        .checked_mul(size)
        .and_then(|b| b.checked_add(start))
        .ok_or(ModelError::TableBounds(t))?;
    if start % 4 != 0 || start < HEADER_LEN || end > file {
        return Err(ModelError::TableBounds(t));
    }
    Ok((start, end))
}

fn overlaps(a: (usize, usize), b: (usize, usize)) -> bool {
    a.0 < b.1 && b.0 < a.1 && a.0 != a.1 && b.0 != b.1
}

/// What a layer requires of one tensor.
struct Want {
    role: Role,
    dtype: DType,
    /// Required blocked rows (0: plain).
    block: u8,
    /// Required logical dims.
    dims: [u32; 4],
}

impl<'a> Model<'a> {
    /// Parse and validate a model file borrowed in place. The buffer must
    /// start at a 4-byte aligned address.
    pub fn parse(bytes: &'a [u8]) -> Result<Model<'a>, ModelError> {
        if cfg!(target_endian = "big") {
            return Err(ModelError::BigEndian);
        }
        let Some(h) = Rec::<HEADER_LEN>::at(bytes, 0) else {
            return Err(ModelError::Truncated {
                needed: HEADER_LEN,
                actual: bytes.len(),
            });
        };
        if h.0[..4] != MAGIC {
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
        let file_size = h.u32(8);
        if file_size as usize != bytes.len() {
            return Err(ModelError::SizeMismatch {
                header: file_size,
                actual: bytes.len(),
            });
        }
        let stored = h.u32(12);
        let computed = file_crc(bytes);
        if stored != computed {
            return Err(ModelError::CrcMismatch { stored, computed });
        }
        if bytes.as_ptr() as usize % 4 != 0 {
            return Err(ModelError::Misaligned);
        }
        let kind = if flags & FLAG_INT8 != 0 {
            Kind::Int8
        } else {
            Kind::F32
        };
        let header_err = |f| Err(ModelError::Header(f));
        let layer_count = usize::from(h.u16(20));
        let tensor_count = usize::from(h.u16(22));
        let bn_count = usize::from(h.u16(36));
        if layer_count == 0 || layer_count > MAX_LAYERS {
            return header_err(HeaderFault::LayerCount);
        }
        if tensor_count > MAX_TENSORS {
            return header_err(HeaderFault::TensorCount);
        }
        let has_bn = flags & FLAG_HAS_BN != 0;
        if has_bn != (bn_count > 0) || (!has_bn && h.u32(32) != 0) || bn_count > MAX_LAYERS {
            return header_err(HeaderFault::BnTable);
        }
        let input = Shape::nhwc(
            1,
            usize::from(h.u16(40)),
            usize::from(h.u16(42)),
            usize::from(h.u16(44)),
        );
        if input.is_empty() {
            return header_err(HeaderFault::InputShape);
        }
        let classes = usize::from(h.u16(38));
        if classes == 0 {
            return header_err(HeaderFault::Classes);
        }
        if h.u16(46) != 0 || h.u32(60) != 0 {
            return header_err(HeaderFault::Reserved);
        }
        let (input_scale, input_zero_point) = (h.f32(48), h.i32(52));
        let quant_ok = match kind {
            Kind::Int8 => {
                input_scale.is_finite()
                    && input_scale > 0.0
                    && (-128..=127).contains(&input_zero_point)
            }
            Kind::F32 => input_scale.to_bits() == 0 && input_zero_point == 0,
        };
        if !quant_ok {
            return header_err(HeaderFault::InputQuantization);
        }
        let pixel_scale = h.f32(56);
        if !(pixel_scale.is_finite() && pixel_scale > 0.0) {
            return header_err(HeaderFault::PixelScale);
        }

        // Tables: inside the file, aligned, after the header, not overlapping.
        let file = bytes.len();
        let lt = table_range(h.u32(24), layer_count, LAYER_LEN, file, Table::Layers)?;
        let tt = table_range(h.u32(28), tensor_count, TENSOR_LEN, file, Table::Tensors)?;
        let bt = if has_bn {
            table_range(h.u32(32), bn_count, BN_LEN, file, Table::Bn)?
        } else {
            (0, 0)
        };
        if overlaps(lt, tt) {
            return Err(ModelError::TableBounds(Table::Tensors));
        }
        if overlaps(lt, bt) || overlaps(tt, bt) {
            return Err(ModelError::TableBounds(Table::Bn));
        }
        let data_start = lt.1.max(tt.1).max(bt.1);

        let model = Model {
            bytes,
            header: Header {
                kind,
                arena_bytes: h.u32(16) as usize,
                input,
                classes,
                input_scale,
                input_zero_point,
                pixel_scale,
            },
            layer_count,
            tensor_count,
            bn_count,
            layer_table: lt.0,
            tensor_table: tt.0,
            bn_table: bt.0,
            scan_values: true,
        };
        model.check_tensors(tt.0, data_start)?;

        // Every layer once: the shape chain, and the memory plan's peak.
        let mut shape = input;
        let mut arena = 0usize;
        for i in 0..layer_count {
            let layer = model.decode_layer(i, Some(shape))?;
            shape = layer.output;
            let need = arena_size(kind, core::iter::once((layer.input, layer.output)))
                .ok_or(ModelError::ArenaMismatch {
                    header: h.u32(16),
                    computed: u32::MAX,
                })?;
            arena = arena.max(need);
        }
        if shape != Shape::nhwc(1, 1, 1, classes) {
            return Err(layer_err(layer_count - 1, LayerFault::FinalShape));
        }
        if arena != model.header.arena_bytes || u32::try_from(arena).is_err() {
            return Err(ModelError::ArenaMismatch {
                header: h.u32(16),
                computed: u32::try_from(arena).unwrap_or(u32::MAX),
            });
        }
        for j in 0..bn_count {
            model.bn_record(j)?;
        }
        Ok(Model {
            scan_values: false,
            ..model
        })
    }

    /// Layer `i`, decoded from its record (validated by `parse`), with its
    /// arena offsets. `expected`: the input shape the chain requires (only
    /// `parse` checks it; later decodes trust the validated chain).
    fn decode_layer(&self, i: usize, expected: Option<Shape>) -> Res<Layer<'a>> {
        if i >= self.layer_count {
            return Err(layer_err(i, LayerFault::InputShape));
        }
        let rec = Rec::<LAYER_LEN>::at(self.bytes, self.layer_table + i * LAYER_LEN)
            .ok_or(ModelError::TableBounds(Table::Layers))?;
        let mut layer = self.decode_layer_record(i, rec, expected, self.tensor_table)?;
        let (a, b) = region_offsets(
            self.header.kind,
            self.header.arena_bytes,
            i,
            layer.input,
            layer.output,
        )
        .ok_or(ModelError::ArenaMismatch {
            header: self.header.arena_bytes as u32,
            computed: 0,
        })?;
        layer.in_offset = a;
        layer.out_offset = b;
        Ok(layer)
    }

    /// Layer `i` (0-based) in execution order.
    pub fn layer(&self, i: usize) -> Result<Layer<'a>, ModelError> {
        self.decode_layer(i, None)
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layer_count
    }

    /// Every layer in execution order. Each was validated by `parse`, so an
    /// `Err` here means the buffer changed after parsing.
    pub fn layers(&self) -> impl Iterator<Item = Result<Layer<'a>, ModelError>> + '_ {
        (0..self.layer_count).map(move |i| self.layer(i))
    }

    /// BN record `j`.
    pub fn bn_record(&self, j: usize) -> Result<BnRecord<'a>, ModelError> {
        if j >= self.bn_count {
            return Err(bn_err(j, LayerFault::InputShape));
        }
        let rec = Rec::<BN_LEN>::at(self.bytes, self.bn_table + j * BN_LEN)
            .ok_or(ModelError::TableBounds(Table::Bn))?;
        self.decode_bn(j, rec, self.tensor_table)
    }

    /// The BN records (none without `HAS_BN`).
    pub fn bn_records(&self) -> impl Iterator<Item = Result<BnRecord<'a>, ModelError>> + '_ {
        (0..self.bn_count).map(move |j| self.bn_record(j))
    }

    /// Decode tensor record `index` (bounds were checked by `check_tensors`).
    #[inline(never)]
    fn tensor_desc(&self, table: usize, index: usize) -> Res<TensorDesc> {
        let at = table + index * TENSOR_LEN;
        let rec =
            Rec::<TENSOR_LEN>::at(self.bytes, at).ok_or(ModelError::TableBounds(Table::Tensors))?;
        let err = |fault| ModelError::Tensor {
            index: index as u16,
            fault,
        };
        let dtype = DType::from_code(rec.u8(0)).ok_or(err(TensorFault::UnknownDtype(rec.u8(0))))?;
        let (layout, block) = (rec.u8(1), rec.u8(2));
        let blocked = match (layout, block) {
            (0, 0) => false,
            (1, 4 | 8) => true,
            _ => return Err(err(TensorFault::Layout)),
        };
        // Pair words are row-blocked by 4 (FORMAT.md).
        if dtype == DType::I8Pair && block != 4 {
            return Err(err(TensorFault::Layout));
        }
        if rec.u8(3) != 0 || rec.u32(28) != 0 {
            return Err(err(TensorFault::Reserved));
        }
        let dims = [rec.u32(4), rec.u32(8), rec.u32(12), rec.u32(16)];
        let logical = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d as usize))
            .filter(|&n| n > 0)
            .ok_or(err(TensorFault::Dims))?;
        // Blocked: rows padded to whole blocks, `rows = dims[0]`.
        let stored = if blocked {
            let rows = dims[0] as usize;
            let per_row = logical / rows;
            rows.div_ceil(usize::from(block))
                .checked_mul(usize::from(block))
                .and_then(|r| r.checked_mul(per_row))
                .ok_or(err(TensorFault::Dims))?
        } else {
            logical
        };
        let (offset, len) = (rec.u32(20), rec.u32(24));
        if stored.checked_mul(dtype.size()) != Some(len as usize) {
            return Err(err(TensorFault::Length));
        }
        Ok(TensorDesc {
            dtype,
            block_rows: if blocked { block } else { 0 },
            dims,
            offset,
            len,
        })
    }

    /// Every tensor: valid record, 16-aligned data inside the data region,
    /// in ascending order without overlap.
    fn check_tensors(&self, table: usize, data_start: usize) -> Res<()> {
        let mut prev_end = data_start;
        for i in 0..self.tensor_count {
            let t = self.tensor_desc(table, i)?;
            let err = |fault| ModelError::Tensor {
                index: i as u16,
                fault,
            };
            let (start, len) = (t.offset as usize, t.len as usize);
            if start % ALIGN != 0 {
                return Err(err(TensorFault::Misaligned));
            }
            let end = start
                .checked_add(len)
                .ok_or(err(TensorFault::OutOfBounds))?;
            if start < data_start || end > self.bytes.len() {
                return Err(err(TensorFault::OutOfBounds));
            }
            if start < prev_end {
                return Err(err(TensorFault::Overlap));
            }
            prev_end = end;
        }
        Ok(())
    }

    /// The data of tensor `index`, typed.
    #[inline(never)]
    fn tensor_data(&self, table: usize, index: usize) -> Res<(TensorDesc, Data<'a>)> {
        let t = self.tensor_desc(table, index)?;
        let raw: &'a [u8] = self
            .bytes
            .get(t.offset as usize..(t.offset + t.len) as usize)
            .ok_or(ModelError::Tensor {
                index: index as u16,
                fault: TensorFault::OutOfBounds,
            })?;
        let misaligned = ModelError::Tensor {
            index: index as u16,
            fault: TensorFault::Misaligned,
        };
        let data = match t.dtype {
            DType::I8 => Data::I8(bytemuck::cast_slice(raw)),
            DType::F32 => Data::F32(bytemuck::try_cast_slice(raw).map_err(|_| misaligned)?),
            DType::I32 => Data::I32(bytemuck::try_cast_slice(raw).map_err(|_| misaligned)?),
            DType::I8Pair => {
                let words: &'a [i32] = bytemuck::try_cast_slice(raw).map_err(|_| misaligned)?;
                if self.scan_values
                    && !words
                    .iter()
                    .all(|&w| crate::kernels::pack::split_pair_word(w).is_some())
                {
                    return Err(ModelError::Tensor {
                        index: index as u16,
                        fault: TensorFault::Values,
                    });
                }
                Data::I8Pairs(words)
            }
        };
        Ok((t, data))
    }

    /// Fetch a tensor a layer refers to and check it against `want`.
    #[inline(never)]
    fn fetch(
        &self,
        table: usize,
        id: u16,
        want: Want,
        fault_at: &dyn Fn(LayerFault) -> ModelError,
    ) -> Res<Data<'a>> {
        if id == NO_TENSOR {
            return Err(fault_at(LayerFault::MissingTensor(want.role)));
        }
        if usize::from(id) >= self.tensor_count {
            return Err(fault_at(LayerFault::TensorIndex(want.role)));
        }
        // The record's kind first, then its data (whose values a dtype may
        // restrict: a pair word that is not one is a tensor fault).
        let t = self.tensor_desc(table, usize::from(id))?;
        if t.dtype != want.dtype || t.block_rows != want.block || t.dims != want.dims {
            return Err(fault_at(LayerFault::TensorKind(want.role)));
        }
        Ok(self.tensor_data(table, usize::from(id))?.1)
    }

    fn decode_layer_record(
        &self,
        index: usize,
        rec: Rec<'_, LAYER_LEN>,
        input_expected: Option<Shape>,
        table: usize,
    ) -> Res<Layer<'a>> {
        let fault = |f| layer_err(index, f);
        let kind = self.header.kind;
        let code = rec.u8(0);
        let activation = activation_from_code(rec.u8(1))
            .ok_or(fault(LayerFault::UnknownActivation(rec.u8(1))))?;
        let flags = rec.u16(2);
        let shape_at = |at: usize| {
            Shape::nhwc(
                1,
                usize::from(rec.u16(at)),
                usize::from(rec.u16(at + 2)),
                usize::from(rec.u16(at + 4)),
            )
        };
        let input = shape_at(4);
        let output = shape_at(10);
        if input_expected.is_some_and(|e| e != input) {
            return Err(fault(LayerFault::InputShape));
        }
        if output.is_empty() {
            return Err(fault(LayerFault::OutputShape));
        }
        if rec.u16(34) != 0 || rec.u32(56) != 0 || rec.u32(60) != 0 {
            return Err(fault(LayerFault::Reserved));
        }
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
        let no_window = window.kernel_h == 0
            && window.kernel_w == 0
            && window.stride_h == 0
            && window.stride_w == 0
            && window.padding == Padding::NONE;
        let geometry = |e: crate::error::Error| {
            let _ = e;
            fault(LayerFault::Geometry)
        };
        // Windowed ops: the output size the window gives (zero stride,
        // zero kernel, kernel beyond the padded input: Geometry). Shapes
        // are non-zero (checked above and by the previous layer), and every
        // size product is checked where it is used (the memory plan, the
        // tensor lengths), so the ops are built directly.
        let (oh, ow) = if (2..=5).contains(&code) {
            window.output_hw(input.h, input.w).map_err(geometry)?
        } else {
            (1, 1)
        };
        let (ih, iw, ic) = (input.h, input.w, input.c);
        let op = match code {
            1 => Op::Dense(Dense {
                inputs: input.sample_len().map_err(geometry)?,
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
            4 | 5 => Op::Pool(Pool2d {
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
        let has_window = matches!(op, Op::Conv(_) | Op::Depthwise(_) | Op::Pool(_));
        if !has_window && !no_window {
            return Err(fault(LayerFault::Geometry));
        }
        let computed_out = match op {
            Op::Dense(_) | Op::Conv(_) => Shape::nhwc(1, oh, ow, output.c),
            Op::Depthwise(_) | Op::Pool(_) => Shape::nhwc(1, oh, ow, ic),
            Op::GlobalAvgPool => Shape::nhwc(1, 1, 1, ic),
            Op::Activation => input,
        };
        if computed_out != output {
            return Err(fault(LayerFault::OutputShape));
        }
        let pooling = matches!(op, Op::Pool(_) | Op::GlobalAvgPool);
        if (pooling && activation.is_some())
            || (matches!(op, Op::Activation) && activation.is_none())
        {
            return Err(fault(LayerFault::ActivationNotAllowed));
        }
        let weighted = matches!(op, Op::Dense(_) | Op::Conv(_) | Op::Depthwise(_));
        let folded = flags & LAYER_ZP_FOLDED != 0;
        // A folded zero point needs every tap in bounds (no padding).
        if flags & !LAYER_ZP_FOLDED != 0
            || (folded
                && (kind != Kind::Int8
                    || !matches!(op, Op::Dense(_) | Op::Conv(_))
                    || window.padding != Padding::NONE))
        {
            return Err(fault(LayerFault::BadFlags(flags)));
        }
        // int8 pooling: every window has a tap (no int8 value stands for
        // padding) and averages fit i32 (at most 2^22 taps).
        if kind == Kind::Int8 {
            let ok = match op {
                Op::Pool(p) => {
                    crate::kernels::int8::check_pool_windows(&p, output.h, output.w).is_ok()
                }
                Op::GlobalAvgPool => input.h * input.w <= crate::kernels::int8::MAX_POOL_TAPS,
                _ => true,
            };
            if !ok {
                return Err(fault(LayerFault::Geometry));
            }
        }

        let ids = [
            rec.u16(24),
            rec.u16(26),
            rec.u16(28),
            rec.u16(30),
            rec.u16(32),
        ];
        let roles = [
            Role::Weight,
            Role::Bias,
            Role::Multiplier,
            Role::Shift,
            Role::Table,
        ];
        let int8 = kind == Kind::Int8;
        let saturating = matches!(activation, Some(Activation::Sigmoid | Activation::Tanh));
        // Which tensors this layer must have (the rest must be absent).
        let needs = [
            weighted,
            weighted,
            weighted && int8,
            weighted && int8,
            int8 && saturating && (weighted || matches!(op, Op::Activation)),
        ];
        for ((&id, &need), &role) in ids.iter().zip(&needs).zip(&roles) {
            crate::kernels::unroll_barrier(); // one compact loop (code size)
            if !need && id != NO_TENSOR {
                return Err(fault(LayerFault::UnexpectedTensor(role)));
            }
        }

        let wdt = if int8 { DType::I8 } else { DType::F32 };
        let bdt = if int8 { DType::I32 } else { DType::F32 };
        let fault_at = |f| layer_err(index, f);
        let mut block_rows = 0usize;
        let (mut weights, mut bias, mut requant, mut table_data) = (None, None, None, None);
        if weighted {
            // (rows, per-row dims, channels of the output stage)
            let (wdims, block, out_ch) = match op {
                Op::Dense(d) => ([d.outputs as u32, d.inputs as u32, 1, 1], true, d.outputs),
                Op::Conv(c) => (
                    [
                        c.out_c as u32,
                        c.window.kernel_h as u32,
                        c.window.kernel_w as u32,
                        c.in_c as u32,
                    ],
                    true,
                    c.out_c,
                ),
                Op::Depthwise(d) => (
                    [
                        d.window.kernel_h as u32,
                        d.window.kernel_w as u32,
                        d.channels as u32,
                        1,
                    ],
                    false,
                    d.channels,
                ),
                _ => ([0; 4], false, 0),
            };
            // The weight tensor decides the block size; check it is 4 or 8.
            let wid = ids[0];
            if wid == NO_TENSOR {
                return Err(fault(LayerFault::MissingTensor(Role::Weight)));
            }
            if usize::from(wid) >= self.tensor_count {
                return Err(fault(LayerFault::TensorIndex(Role::Weight)));
            }
            let wt = self.tensor_desc(table, usize::from(wid))?;
            let r = if block { wt.block_rows } else { 0 };
            // int8 dense and conv weights may also come in pair words.
            let wdt = if int8 && block && wt.dtype == DType::I8Pair {
                DType::I8Pair
            } else {
                wdt
            };
            if block && r == 0 {
                return Err(fault(LayerFault::TensorKind(Role::Weight)));
            }
            block_rows = usize::from(r);
            weights = Some(self.fetch(
                table,
                wid,
                Want {
                    role: Role::Weight,
                    dtype: wdt,
                    block: r,
                    dims: wdims,
                },
                &fault_at,
            )?);
            let padded = if block {
                out_ch.div_ceil(block_rows) * block_rows
            } else {
                out_ch
            };
            bias = Some(self.fetch(
                table,
                ids[1],
                Want {
                    role: Role::Bias,
                    dtype: bdt,
                    block: 0,
                    dims: [padded as u32, 1, 1, 1],
                },
                &fault_at,
            )?);
            if int8 {
                let m = self.fetch(
                    table,
                    ids[2],
                    Want {
                        role: Role::Multiplier,
                        dtype: DType::I32,
                        block: 0,
                        dims: [out_ch as u32, 1, 1, 1],
                    },
                    &fault_at,
                )?;
                let s = self.fetch(
                    table,
                    ids[3],
                    Want {
                        role: Role::Shift,
                        dtype: DType::I32,
                        block: 0,
                        dims: [out_ch as u32, 1, 1, 1],
                    },
                    &fault_at,
                )?;
                if let (Data::I32(m), Data::I32(s)) = (m, s) {
                    requant = Some((m, s));
                }
                // |acc| bound: terms·255·127 plus the bias must fit i32.
                let terms = match op {
                    Op::Dense(d) => d.inputs,
                    Op::Conv(c) => c.window.kernel_h * c.window.kernel_w * c.in_c,
                    Op::Depthwise(d) => d.window.kernel_h * d.window.kernel_w,
                    _ => 0,
                };
                if terms > 60_000 {
                    return Err(fault(LayerFault::AccumulatorRange));
                }
            }
        }
        if needs[4] {
            if let Data::I8(t) = self.fetch(
                table,
                ids[4],
                Want {
                    role: Role::Table,
                    dtype: DType::I8,
                    block: 0,
                    dims: [256, 1, 1, 1],
                },
                &fault_at,
            )? {
                table_data = t.try_into().ok();
            }
        }

        let quant = QuantOut {
            scale: rec.f32(36),
            zero_point: rec.i32(40),
            requant_zero_point: rec.i32(44),
            clamp_min: rec.i32(48),
            clamp_max: rec.i32(52),
        };
        let q_ok = if int8 {
            let zp = |v: i32| (-128..=127).contains(&v);
            quant.scale.is_finite()
                && quant.scale > 0.0
                && zp(quant.zero_point)
                && zp(quant.requant_zero_point)
                && zp(quant.clamp_min)
                && zp(quant.clamp_max)
                && quant.clamp_min <= quant.clamp_max
        } else {
            quant.scale.to_bits() == 0
                && quant.zero_point == 0
                && quant.requant_zero_point == 0
                && quant.clamp_min == 0
                && quant.clamp_max == 0
        };
        if !q_ok {
            return Err(fault(LayerFault::Quantization));
        }
        let layer = Layer {
            op,
            activation,
            zp_folded: folded,
            input,
            output,
            weights,
            block_rows,
            bias,
            requant,
            table: table_data,
            quant,
            in_offset: 0,
            out_offset: 0,
            tensor_ids: ids,
        };
        if let Some(stage) = layer.output_stage().filter(|_| self.scan_values) {
            let channels = output.c;
            stage
                .validate(channels)
                .map_err(|_| fault(LayerFault::Quantization))?;
        }
        Ok(layer)
    }

    fn decode_bn(&self, index: usize, rec: Rec<'_, BN_LEN>, table: usize) -> Res<BnRecord<'a>> {
        let fault = |f| bn_err(index, f);
        let li = usize::from(rec.u16(0));
        let layer = self
            .decode_layer(li, None)
            .map_err(|_| fault(LayerFault::InputShape))?;
        if !matches!(layer.op, Op::Dense(_) | Op::Conv(_) | Op::Depthwise(_)) {
            return Err(fault(LayerFault::UnexpectedTensor(Role::BnParam)));
        }
        if rec.u16(10) != 0 {
            return Err(fault(LayerFault::Reserved));
        }
        let eps = rec.f32(12);
        if !(eps.is_finite() && eps > 0.0) {
            return Err(fault(LayerFault::Quantization));
        }
        let c = layer.output.c as u32;
        let fault_at = |f| bn_err(index, f);
        let ids = [rec.u16(2), rec.u16(4), rec.u16(6), rec.u16(8)];
        let mut out = [&[][..]; 4];
        for (slot, &id) in out.iter_mut().zip(&ids) {
            match self.fetch(
                table,
                id,
                Want {
                    role: Role::BnParam,
                    dtype: DType::F32,
                    block: 0,
                    dims: [c, 1, 1, 1],
                },
                &fault_at,
            )? {
                Data::F32(d) => *slot = d,
                _ => return Err(fault(LayerFault::TensorKind(Role::BnParam))),
            }
        }
        if out[3].iter().any(|v| v.is_nan() || *v < 0.0) {
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
        if index >= self.tensor_count {
            return Err(ModelError::Tensor {
                index: index as u16,
                fault: TensorFault::OutOfBounds,
            });
        }
        self.tensor_data(self.tensor_table, index)
    }
}
