//! Writing `.ncm` files into the caller's buffer, and updating one tensor
//! or one BN record of a file in place: no allocation, no panic.
//!
//! [`write()`] lays out a [`ModelDesc`] (the header's facts, the layers with
//! their tensors in stored form, the BN records) exactly as FORMAT.md
//! says, through the records of [`super::layout`]: header, layer table,
//! tensor table, BN table, then the tensor data, each tensor at the next
//! [`DATA_ALIGN`] offset, zeros between, the file ending with the last
//! tensor. Tensors get their indices in one canonical order: each layer's
//! tensors in slot order (weights, bias, multipliers, shifts, table), then
//! each BN record's γ, β, E\[x\], Var\[x\]. The arena is the memory plan's
//! ([`super::plan::arena_bytes`]), the CRC is [`super::file_crc`], and the
//! written file is validated by [`Model::parse`] before `write` returns:
//! a file `write` accepts is one every reader accepts, and a rule it breaks
//! is reported with the parser's own words ([`WriteError::Invalid`]).
//!
//! [`required_len`] says how many bytes the file takes before anything is
//! written. Tensors are given as stored (FORMAT.md): dense and conv weights
//! row-blocked (`normcore::kernels::pack_rows`, or pair words,
//! `pack_pairs`) with their rows per block in [`LayerDesc::block_rows`],
//! their bias padded to whole blocks; the writer derives every tensor's
//! logical dims from the op ([`Op::tensor_dims`]).
//!
//! [`update_tensor`], [`update_bn`] and [`update_quant`] change values of a
//! valid file in place, with the CRC refreshed: what adapting a model on a
//! device needs, and what baking an adaptation into a new file on the host
//! is made of. They check the new values against the same rules the parser
//! applies, so the file stays valid; on any `Err` the file is unchanged.

use super::layout::{
    round_up, window_bytes, ActCode, LayoutCode, RawBn, RawHeader, RawLayer, RawTensor, Slot,
    BUFFER_ALIGN, CRC_FIELD, DATA_ALIGN, MAX_BN, SLOTS,
};
use super::{
    file_crc, parse, plan, BnRecord, DType, Data, Kind, Layer, Model, ModelError, Op, QuantOut,
    WriteError, BN_LEN, FLAG_HAS_BN, FLAG_INT8, HEADER_LEN, LAYER_LEN, LAYER_ZP_FOLDED, MAGIC,
    MAX_LAYERS, MAX_TENSORS, NO_TENSOR, TENSOR_LEN, VERSION,
};
use crate::batchnorm::BnState;
use crate::layers::Activation;
use crate::tensor::Shape;
use bytemuck::Pod;

/// One layer to write: the fields of [`Layer`] that the file stores.
#[derive(Debug, Clone, Copy)]
pub struct LayerDesc<'t> {
    /// The operation (its geometry).
    pub op: Op,
    /// Fused activation, or for [`Op::Activation`] the function itself.
    pub activation: Option<Activation>,
    /// int8: the input zero point is folded into the bias.
    pub zp_folded: bool,
    /// Input shape (batch 1).
    pub input: Shape,
    /// Output shape (batch 1).
    pub output: Shape,
    /// Weights as stored: row-blocked for dense and conv (i8, i8 pairs or
    /// f32), plain `[KH, KW, C]` for depthwise.
    pub weights: Option<Data<'t>>,
    /// Rows per weight block (dense and conv: 4 or 8), else 0.
    pub block_rows: usize,
    /// Bias, padded to whole blocks for dense and conv.
    pub bias: Option<Data<'t>>,
    /// int8 requantization multipliers (Q31 bits) and shifts, `[C]` each.
    pub requant: Option<(&'t [i32], &'t [i32])>,
    /// int8 sigmoid/tanh table.
    pub table: Option<&'t [i8; 256]>,
    /// int8 output quantization (all zero in f32 files).
    pub quant: QuantOut,
}

impl<'t> From<&Layer<'t>> for LayerDesc<'t> {
    fn from(l: &Layer<'t>) -> Self {
        LayerDesc {
            op: l.op,
            activation: l.activation,
            zp_folded: l.zp_folded,
            input: l.input,
            output: l.output,
            weights: l.weights,
            block_rows: l.block_rows,
            bias: l.bias,
            requant: l.requant,
            table: l.table,
            quant: l.quant,
        }
    }
}

impl<'t> LayerDesc<'t> {
    /// The tensor in `slot`, if the layer has one.
    pub fn tensor(&self, slot: Slot) -> Option<Data<'t>> {
        match slot {
            Slot::Weight => self.weights,
            Slot::Bias => self.bias,
            Slot::Multiplier => self.requant.map(|(m, _)| Data::I32(m)),
            Slot::Shift => self.requant.map(|(_, s)| Data::I32(s)),
            Slot::Table => self.table.map(|t| Data::I8(&t[..])),
        }
    }
}

/// One BN record to write: the layer it was folded into and its statistics.
#[derive(Debug, Clone, Copy)]
pub struct BnDesc<'t> {
    /// Index of the layer (dense, conv or depthwise) the BN was folded into.
    pub layer: usize,
    /// γ, β, E\[x\], Var\[x\] (unbiased), ε; `[C]` each, `C` the layer's
    /// output channels.
    pub state: BnState<'t>,
}

impl<'t> From<&BnRecord<'t>> for BnDesc<'t> {
    fn from(b: &BnRecord<'t>) -> Self {
        BnDesc {
            layer: b.layer,
            state: BnState {
                gamma: b.gamma,
                beta: b.beta,
                mean: b.mean,
                var: b.var,
                eps: b.eps,
            },
        }
    }
}

/// A whole model to write.
#[derive(Debug, Clone, Copy)]
pub struct ModelDesc<'t> {
    /// f32 or int8.
    pub kind: Kind,
    /// Input shape of one sample.
    pub input: Shape,
    /// Output classes (the last layer's output channels).
    pub classes: usize,
    /// int8 input scale (0 in f32 files).
    pub input_scale: f32,
    /// int8 input zero point (0 in f32 files).
    pub input_zero_point: i32,
    /// The data set's stored value per raw input unit (MNIST: 1/255).
    pub pixel_scale: f32,
    /// Layers in execution order.
    pub layers: &'t [LayerDesc<'t>],
    /// BN records.
    pub bn: &'t [BnDesc<'t>],
}

impl<'t> ModelDesc<'t> {
    /// The header's facts of a parsed model, with `layers` and `bn` (for
    /// example the model's own, through `LayerDesc::from` and
    /// `BnDesc::from`: rewriting a file this module wrote gives it back
    /// byte for byte).
    pub fn of(model: &Model<'_>, layers: &'t [LayerDesc<'t>], bn: &'t [BnDesc<'t>]) -> Self {
        let h = model.header();
        ModelDesc {
            kind: h.kind,
            input: h.input,
            classes: h.classes,
            input_scale: h.input_scale,
            input_zero_point: h.input_zero_point,
            pixel_scale: h.pixel_scale,
            layers,
            bn,
        }
    }
}

impl<'a> Data<'a> {
    /// The dtype these values are stored as.
    pub fn dtype(&self) -> DType {
        match self {
            Data::F32(_) => DType::F32,
            Data::I8(_) => DType::I8,
            Data::I32(_) => DType::I32,
            Data::I8Pairs(_) => DType::I8Pair,
        }
    }

    /// Stored elements (a pair word holds two).
    pub fn elements(&self) -> usize {
        match *self {
            Data::F32(v) => v.len(),
            Data::I8(v) => v.len(),
            Data::I32(v) => v.len(),
            Data::I8Pairs(v) => 2 * v.len(),
        }
    }

    /// The stored bytes (little-endian on every target this crate accepts).
    pub fn bytes(&self) -> &'a [u8] {
        match *self {
            Data::F32(v) => bytemuck::cast_slice(v),
            Data::I8(v) => bytemuck::cast_slice(v),
            Data::I32(v) | Data::I8Pairs(v) => bytemuck::cast_slice(v),
        }
    }
}

/// One tensor in canonical order: its record fields and data.
#[derive(Clone, Copy)]
struct Item<'t> {
    data: Data<'t>,
    block_rows: u8,
    dims: [u32; 4],
}

/// Every tensor of `d` in canonical order, or the first error.
fn for_each_tensor<'t>(
    d: &ModelDesc<'t>,
    mut f: impl FnMut(Item<'t>) -> Result<(), WriteError>,
) -> Result<(), WriteError> {
    for (i, l) in d.layers.iter().enumerate() {
        let index = i as u16; // at most MAX_LAYERS: checked first
        for slot in Slot::ALL {
            let Some(data) = l.tensor(slot) else {
                continue;
            };
            let dims =
                l.op.tensor_dims(slot, l.block_rows)
                    .ok_or(WriteError::Invalid(ModelError::Layer {
                        index,
                        fault: super::LayerFault::UnexpectedTensor(slot.role()),
                    }))?;
            let block_rows = if slot == Slot::Weight && l.op.is_blocked() {
                u8::try_from(l.block_rows).map_err(|_| WriteError::Field {
                    layer: Some(index),
                    field: super::Field::BlockRows,
                })?
            } else {
                0
            };
            // The stored length the dims ask for (rows padded to whole
            // blocks), in elements: a mismatch is named by its role.
            if super::layout::stored_elements(dims, block_rows) != Some(data.elements()) {
                return Err(WriteError::Invalid(ModelError::Layer {
                    index,
                    fault: super::LayerFault::TensorKind(slot.role()),
                }));
            }
            f(Item {
                data,
                block_rows,
                dims,
            })?;
        }
    }
    for b in d.bn {
        let s = b.state;
        for v in [s.gamma, s.beta, s.mean, s.var] {
            let c = u32::try_from(v.len()).map_err(|_| WriteError::FileTooLarge)?;
            f(Item {
                data: Data::F32(v),
                block_rows: 0,
                dims: [c, 1, 1, 1],
            })?;
        }
    }
    Ok(())
}

// The most tensors a description can have (every slot of every layer, four
// per BN record) fit the tensor table: no count to check.
const _: () = assert!(MAX_LAYERS * SLOTS + MAX_BN * 4 <= MAX_TENSORS);

/// Where the tables and the data go.
#[derive(Clone, Copy)]
struct Placement {
    layer_table: usize,
    tensor_table: usize,
    bn_table: usize,
    data_start: usize,
    tensors: usize,
    file_len: usize,
    arena: u32,
}

fn u16_field(v: usize, layer: Option<u16>, field: super::Field) -> Result<u16, WriteError> {
    u16::try_from(v).map_err(|_| WriteError::Field { layer, field })
}

fn shape_field(s: Shape, layer: Option<u16>) -> Result<[u16; 3], WriteError> {
    let f = |v| u16_field(v, layer, super::Field::Shape);
    Ok([f(s.h)?, f(s.w)?, f(s.c)?])
}

/// Counts and fields that must fit the format, then the placement.
fn place(d: &ModelDesc<'_>) -> Result<Placement, WriteError> {
    use super::Field;
    if cfg!(target_endian = "big") {
        return Err(WriteError::Invalid(ModelError::BigEndian));
    }
    if d.layers.is_empty() || d.layers.len() > MAX_LAYERS {
        return Err(WriteError::LayerCount(d.layers.len()));
    }
    if d.bn.len() > MAX_BN {
        return Err(WriteError::BnCount(d.bn.len()));
    }
    shape_field(d.input, None)?;
    u16_field(d.classes, None, Field::Classes)?;
    for (i, l) in d.layers.iter().enumerate() {
        let index = Some(i as u16);
        shape_field(l.input, index)?;
        shape_field(l.output, index)?;
        if let Some(w) = l.op.window() {
            window_bytes(&w).ok_or(WriteError::Field {
                layer: index,
                field: Field::Window,
            })?;
        }
    }
    for b in d.bn {
        u16_field(b.layer, None, Field::BnLayer)?;
    }
    let mut tensors = 0usize;
    for_each_tensor(d, |_| {
        tensors += 1;
        Ok(())
    })?;
    let layer_table = HEADER_LEN;
    let tensor_table = layer_table + d.layers.len() * LAYER_LEN;
    let bn_table = tensor_table + tensors * TENSOR_LEN;
    let tables_end = bn_table + d.bn.len() * BN_LEN;
    let data_start = round_up(tables_end, DATA_ALIGN).ok_or(WriteError::FileTooLarge)?;
    let mut cursor = data_start;
    for_each_tensor(d, |t| {
        let at = round_up(cursor, DATA_ALIGN).ok_or(WriteError::FileTooLarge)?;
        cursor = at
            .checked_add(t.data.bytes().len())
            .ok_or(WriteError::FileTooLarge)?;
        Ok(())
    })?;
    let file_len = cursor.max(tables_end);
    u32::try_from(file_len).map_err(|_| WriteError::FileTooLarge)?;
    let arena = plan::arena_bytes(d.kind, d.layers.iter().map(|l| (l.input, l.output)))
        .and_then(|a| u32::try_from(a).ok())
        .ok_or(WriteError::FileTooLarge)?;
    Ok(Placement {
        layer_table,
        tensor_table,
        bn_table,
        data_start,
        tensors,
        file_len,
        arena,
    })
}

/// Bytes the file of `d` takes: what [`write()`] needs in its buffer.
pub fn required_len(d: &ModelDesc<'_>) -> Result<usize, WriteError> {
    Ok(place(d)?.file_len)
}

/// Copy `rec`'s bytes to `out` at `at` (inside: `place` sized `out`).
fn put<T: Pod>(out: &mut [u8], at: usize, rec: &T) -> Result<(), WriteError> {
    let src = bytemuck::bytes_of(rec);
    let dst = at
        .checked_add(src.len())
        .and_then(|end| out.get_mut(at..end))
        .ok_or(WriteError::FileTooLarge)?;
    dst.copy_from_slice(src);
    Ok(())
}

/// Write the file of `d` at the start of `out` (which must be
/// [`BUFFER_ALIGN`]-aligned, so that the result can be validated in place);
/// returns its length. The file is `out[..len]`. On `Err`, `out` may hold a
/// partial file, which no reader accepts (its CRC is not written until the
/// end).
pub fn write(d: &ModelDesc<'_>, out: &mut [u8]) -> Result<usize, WriteError> {
    let p = place(d)?;
    if out.len() < p.file_len {
        return Err(WriteError::BufferTooSmall {
            needed: p.file_len,
            actual: out.len(),
        });
    }
    if out.as_ptr() as usize % BUFFER_ALIGN != 0 {
        return Err(WriteError::BufferMisaligned);
    }
    let out = &mut out[..p.file_len];
    out.fill(0);
    let int8 = d.kind == Kind::Int8;
    let has_bn = !d.bn.is_empty();
    let header = RawHeader {
        magic: MAGIC,
        version: VERSION,
        flags: if int8 { FLAG_INT8 } else { 0 } | if has_bn { FLAG_HAS_BN } else { 0 },
        file_size: p.file_len as u32,
        crc32: 0,
        arena_bytes: p.arena,
        layer_count: d.layers.len() as u16,
        tensor_count: p.tensors as u16,
        layer_table_offset: p.layer_table as u32,
        tensor_table_offset: p.tensor_table as u32,
        bn_table_offset: if has_bn { p.bn_table as u32 } else { 0 },
        bn_count: d.bn.len() as u16,
        classes: d.classes as u16,
        input: shape_field(d.input, None)?,
        reserved0: 0,
        input_scale: d.input_scale,
        input_zero_point: d.input_zero_point,
        pixel_scale: d.pixel_scale,
        reserved1: 0,
    };
    put(out, 0, &header)?;

    // Tensor records and data, in canonical order.
    let (mut index, mut cursor) = (0usize, p.data_start);
    for_each_tensor(d, |t| {
        let at = round_up(cursor, DATA_ALIGN).ok_or(WriteError::FileTooLarge)?;
        let bytes = t.data.bytes();
        let rec = RawTensor {
            dtype: t.data.dtype() as u8,
            layout: LayoutCode::of(t.block_rows) as u8,
            block_rows: t.block_rows,
            reserved0: 0,
            dims: t.dims,
            offset: at as u32,
            len: bytes.len() as u32,
            reserved1: 0,
        };
        put(out, p.tensor_table + index * TENSOR_LEN, &rec)?;
        out.get_mut(at..at + bytes.len())
            .ok_or(WriteError::FileTooLarge)?
            .copy_from_slice(bytes);
        index += 1;
        cursor = at + bytes.len();
        Ok(())
    })?;

    // Layer records: each present tensor takes the next index.
    let mut next = 0u16;
    for (i, l) in d.layers.iter().enumerate() {
        let mut tensors = [NO_TENSOR; SLOTS];
        for (id, slot) in tensors.iter_mut().zip(Slot::ALL) {
            if l.tensor(slot).is_some() {
                *id = next;
                next += 1;
            }
        }
        let q = l.quant;
        let rec = RawLayer {
            op: l.op.code() as u8,
            activation: ActCode::of(l.activation) as u8,
            flags: if l.zp_folded { LAYER_ZP_FOLDED } else { 0 },
            input: shape_field(l.input, Some(i as u16))?,
            output: shape_field(l.output, Some(i as u16))?,
            window: l
                .op
                .window()
                .and_then(|w| window_bytes(&w))
                .unwrap_or([0; 8]),
            tensors,
            reserved0: 0,
            output_scale: q.scale,
            output_zero_point: q.zero_point,
            requant_zero_point: q.requant_zero_point,
            clamp_min: q.clamp_min,
            clamp_max: q.clamp_max,
            requant_scale: q.requant_scale,
            reserved1: 0,
        };
        put(out, p.layer_table + i * LAYER_LEN, &rec)?;
    }
    for (j, b) in d.bn.iter().enumerate() {
        let rec = RawBn {
            layer: b.layer as u16,
            tensors: [next, next + 1, next + 2, next + 3],
            reserved0: 0,
            eps: b.state.eps,
        };
        next += 4;
        put(out, p.bn_table + j * BN_LEN, &rec)?;
    }
    refresh_crc(out);
    Model::parse(out).map_err(WriteError::Invalid)?;
    Ok(p.file_len)
}

/// Store the file's CRC in its header.
fn refresh_crc(file: &mut [u8]) {
    let crc = file_crc(file);
    if let Some(field) = file.get_mut(CRC_FIELD) {
        field.copy_from_slice(&crc.to_le_bytes());
    }
}

/// Overwrite the values of tensor `index` of the valid file `file` with
/// `values` (same dtype and length, in stored form) and refresh the CRC.
/// The values must obey the format's rules for every role the tensor plays
/// (requantization multipliers and shifts in range, pair words that are
/// pairs, variances non-negative), else [`WriteError::BadValues`]. On `Err`
/// the file is unchanged.
pub fn update_tensor(file: &mut [u8], index: usize, values: Data<'_>) -> Result<(), WriteError> {
    let model = Model::parse(file).map_err(WriteError::Invalid)?;
    let id = u16::try_from(index).map_err(|_| WriteError::NoTensor(index))?;
    let (desc, _) = model
        .tensor(index)
        .map_err(|_| WriteError::NoTensor(index))?;
    if values.dtype() != desc.dtype || values.bytes().len() != desc.len as usize {
        return Err(WriteError::WrongData(index));
    }
    if !values_ok(&model, id, values)? {
        return Err(WriteError::BadValues(index));
    }
    let at = desc.offset as usize;
    let bytes = values.bytes();
    file.get_mut(at..at + bytes.len())
        .ok_or(WriteError::NoTensor(index))?
        .copy_from_slice(bytes);
    refresh_crc(file);
    Ok(())
}

/// Whether `values` may replace tensor `id` of `model`: the parser's value
/// rules ([`parse::requant_ok`], [`parse::pairs_ok`], [`parse::var_ok`])
/// for each role the tensor plays.
fn values_ok(model: &Model<'_>, id: u16, values: Data<'_>) -> Result<bool, WriteError> {
    let mut ok = match values {
        Data::I8Pairs(w) => parse::pairs_ok(w),
        _ => true,
    };
    for layer in model.layers() {
        let l = layer.map_err(WriteError::Invalid)?;
        let ids = l.tensor_ids;
        if let (Some((m, s)), Data::I32(v)) = (l.requant, values) {
            if ids[Slot::Multiplier as usize] == id {
                ok &= parse::requant_ok(v, s);
            }
            if ids[Slot::Shift as usize] == id {
                ok &= parse::requant_ok(m, v);
            }
        }
    }
    for bn in model.bn_records() {
        let b = bn.map_err(WriteError::Invalid)?;
        if let Data::F32(v) = values {
            if b.tensor_ids[3] == id {
                ok &= parse::var_ok(v);
            }
        }
    }
    Ok(ok)
}

/// Overwrite BN record `j` of the valid file `file`: its γ, β, E\[x\],
/// Var\[x\] (each the record's length) and ε, and refresh the CRC. On `Err`
/// the file is unchanged.
pub fn update_bn(file: &mut [u8], j: usize, state: BnState<'_>) -> Result<(), WriteError> {
    let model = Model::parse(file).map_err(WriteError::Invalid)?;
    let rec = model.bn_record(j).map_err(|_| WriteError::NoBn(j))?;
    let new = [state.gamma, state.beta, state.mean, state.var];
    let mut places = [(0usize, 0usize); 4];
    for ((place, v), &id) in places.iter_mut().zip(new).zip(&rec.tensor_ids) {
        let (desc, _) = model.tensor(usize::from(id)).map_err(WriteError::Invalid)?;
        if v.len() * 4 != desc.len as usize {
            return Err(WriteError::WrongData(usize::from(id)));
        }
        *place = (desc.offset as usize, desc.len as usize);
    }
    if !(parse::var_ok(state.var) && parse::positive(state.eps)) {
        return Err(WriteError::BadValues(usize::from(rec.tensor_ids[3])));
    }
    let at = model
        .bn
        .get(j)
        .map(|r| model.offset_of(r))
        .ok_or(WriteError::NoBn(j))?;
    let raw = RawBn {
        layer: rec.layer as u16,
        tensors: rec.tensor_ids,
        reserved0: 0,
        eps: state.eps,
    };
    for ((at, len), v) in places.into_iter().zip(new) {
        file.get_mut(at..at + len)
            .ok_or(WriteError::NoBn(j))?
            .copy_from_slice(bytemuck::cast_slice(v));
    }
    put(file, at, &raw)?;
    refresh_crc(file);
    Ok(())
}

/// Overwrite the output quantization of layer `layer` of the valid file
/// `file` (the record's output scale, zero points, clamps and
/// requantization scale, [`QuantOut`]) and refresh the CRC. The new record
/// must pass the parser's checks for the layer (int8: a finite positive
/// scale, zero points and clamps in `[-128, 127]` with `clamp_min ≤
/// clamp_max`, a weighted layer's requantization scale; f32: all zero),
/// which the file is re-parsed with, else [`WriteError::BadQuant`]. On
/// `Err` the file is unchanged.
pub fn update_quant(file: &mut [u8], layer: usize, q: QuantOut) -> Result<(), WriteError> {
    let model = Model::parse(file).map_err(WriteError::Invalid)?;
    let rec = model.layers.get(layer).ok_or(WriteError::NoLayer(layer))?;
    let (old, at) = (*rec, model.offset_of(rec));
    let new = RawLayer {
        output_scale: q.scale,
        output_zero_point: q.zero_point,
        requant_zero_point: q.requant_zero_point,
        clamp_min: q.clamp_min,
        clamp_max: q.clamp_max,
        requant_scale: q.requant_scale,
        ..old
    };
    let crc = file.get(CRC_FIELD).map(|c| [c[0], c[1], c[2], c[3]]);
    put(file, at, &new)?;
    refresh_crc(file);
    if Model::parse(file).is_err() {
        // Put the record and the CRC back: the file as it was.
        put(file, at, &old)?;
        if let (Some(field), Some(crc)) = (file.get_mut(CRC_FIELD), crc) {
            field.copy_from_slice(&crc);
        }
        return Err(WriteError::BadQuant(layer));
    }
    Ok(())
}
