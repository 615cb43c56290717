//! `docs/FORMAT.md` is held to the code: this test reads the document's
//! record tables (offset, type and field of every row), its code lists
//! (ops, activations, dtypes, layouts, flags) and its limits and
//! alignments, and compares each with `normcore::model::layout` (and
//! `plan`), the one definition the parser and the writer use. A change to
//! either side that the other does not make fails here, naming the row.
//!
//! Offsets and types come from the records themselves (`offset_of!` and
//! the field's Rust type), so nothing below restates a number.

use core::any::type_name_of_val;
use core::mem::offset_of;
use normcore::model::layout::{
    self, ActCode, DType, LayoutCode, OpCode, RawBn, RawHeader, RawLayer, RawTensor, Slot,
};
use normcore::model::plan;

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/FORMAT.md");
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The rows `(offset, type, field)` of the first table after the heading
/// that starts with `heading`.
fn table(doc: &str, heading: &str) -> Vec<(usize, String, String)> {
    let start = doc
        .lines()
        .position(|l| l.starts_with(heading))
        .unwrap_or_else(|| panic!("FORMAT.md has no heading `{heading}`"));
    doc.lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2) // the header row and the separator
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let offset = cells[1]
                .parse()
                .unwrap_or_else(|_| panic!("{heading}: offset `{}`", cells[1]));
            (offset, normalise_type(cells[2]), cells[3].to_owned())
        })
        .collect()
}

/// The document's type notation as Rust spells it: `u16 × 3` is `[u16; 3]`.
fn normalise_type(t: &str) -> String {
    let t = t.trim_matches('`');
    match t.split_once(" × ") {
        Some((elem, n)) => format!("[{elem}; {n}]"),
        None => t.to_owned(),
    }
}

/// An expected row: the label its field cell starts with, the offset and
/// the Rust type of the bytes.
type Row = (&'static str, usize, &'static str);

/// Compare the document's rows with `want`, and check that the rows tile
/// the record (`len` bytes) without gaps or overlaps.
fn check(doc: &str, heading: &str, want: &[Row], len: usize) {
    let rows = table(doc, heading);
    assert_eq!(
        rows.len(),
        want.len(),
        "{heading}: {} rows in FORMAT.md, {} fields in layout.rs",
        rows.len(),
        want.len()
    );
    let mut end = 0;
    for ((offset, ty, field), &(label, at, rust)) in rows.iter().zip(want) {
        assert!(
            field.starts_with(label),
            "{heading}: the row at offset {offset} is `{field}`, layout.rs has `{label}` there"
        );
        assert_eq!(*offset, at, "{heading}: `{label}` offset");
        assert_eq!(ty, rust, "{heading}: `{label}` type");
        assert_eq!(
            *offset, end,
            "{heading}: `{label}` does not follow the row before"
        );
        end = at + size_of_type(rust);
    }
    assert_eq!(end, len, "{heading}: the rows cover {end} of {len} bytes");
}

fn size_of_type(t: &str) -> usize {
    let scalar = |s: &str| match s {
        "u8" | "i8" => 1,
        "u16" | "i16" => 2,
        "u32" | "i32" | "f32" => 4,
        other => panic!("type `{other}`"),
    };
    match t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(inner) => {
            let (elem, n) = inner.split_once("; ").unwrap();
            scalar(elem) * n.parse::<usize>().unwrap()
        }
        None => scalar(t),
    }
}

/// `Raw::zeroed().field`'s offset and Rust type name.
macro_rules! field {
    ($label:expr, $raw:ty, $f:ident) => {{
        let r = <$raw as bytemuck::Zeroable>::zeroed();
        ($label, offset_of!($raw, $f), type_name_of_val(&r.$f))
    }};
    // Element `i` of an array field.
    ($label:expr, $raw:ty, $f:ident[$i:expr]) => {{
        let r = <$raw as bytemuck::Zeroable>::zeroed();
        let elem = type_name_of_val(&r.$f[0]);
        (
            $label,
            offset_of!($raw, $f) + $i * core::mem::size_of_val(&r.$f[0]),
            elem,
        )
    }};
}

#[test]
fn record_tables_match_the_layout() {
    let doc = spec();
    check(
        &doc,
        &format!("## Header ({} bytes)", layout::HEADER_LEN),
        &[
            field!("magic", RawHeader, magic),
            field!("version", RawHeader, version),
            field!("flags", RawHeader, flags),
            field!("file_size", RawHeader, file_size),
            field!("crc32", RawHeader, crc32),
            field!("arena_bytes", RawHeader, arena_bytes),
            field!("layer_count", RawHeader, layer_count),
            field!("tensor_count", RawHeader, tensor_count),
            field!("layer_table_offset", RawHeader, layer_table_offset),
            field!("tensor_table_offset", RawHeader, tensor_table_offset),
            field!("bn_table_offset", RawHeader, bn_table_offset),
            field!("bn_count", RawHeader, bn_count),
            field!("classes", RawHeader, classes),
            field!("input h, w, c", RawHeader, input),
            field!("reserved", RawHeader, reserved0),
            field!("input_scale", RawHeader, input_scale),
            field!("input_zero_point", RawHeader, input_zero_point),
            field!("pixel_scale", RawHeader, pixel_scale),
            field!("reserved", RawHeader, reserved1),
        ],
        layout::HEADER_LEN,
    );
    check(
        &doc,
        &format!("## Layer table ({} bytes per layer", layout::LAYER_LEN),
        &[
            field!("op", RawLayer, op),
            field!("activation", RawLayer, activation),
            field!("flags", RawLayer, flags),
            field!("input h, w, c", RawLayer, input),
            field!("output h, w, c", RawLayer, output),
            field!(
                "kernel h, kernel w, stride h, stride w, pad top, pad bottom, pad left, pad right",
                RawLayer,
                window
            ),
            field!("weight tensor", RawLayer, tensors[Slot::Weight as usize]),
            field!("bias tensor", RawLayer, tensors[Slot::Bias as usize]),
            field!(
                "requant multiplier tensor",
                RawLayer,
                tensors[Slot::Multiplier as usize]
            ),
            field!(
                "requant shift tensor",
                RawLayer,
                tensors[Slot::Shift as usize]
            ),
            field!(
                "lookup-table tensor",
                RawLayer,
                tensors[Slot::Table as usize]
            ),
            field!("reserved", RawLayer, reserved0),
            field!("output scale", RawLayer, output_scale),
            field!("output zero point", RawLayer, output_zero_point),
            field!("requant zero point", RawLayer, requant_zero_point),
            field!("clamp min", RawLayer, clamp_min),
            field!("clamp max", RawLayer, clamp_max),
            field!("requant scale", RawLayer, requant_scale),
            field!("reserved", RawLayer, reserved1),
        ],
        layout::LAYER_LEN,
    );
    check(
        &doc,
        &format!("## Tensor table ({} bytes per tensor)", layout::TENSOR_LEN),
        &[
            field!("dtype", RawTensor, dtype),
            field!("layout", RawTensor, layout),
            field!("block rows", RawTensor, block_rows),
            field!("reserved", RawTensor, reserved0),
            field!("logical dims", RawTensor, dims),
            field!("offset of the data", RawTensor, offset),
            field!("length in bytes", RawTensor, len),
            field!("reserved", RawTensor, reserved1),
        ],
        layout::TENSOR_LEN,
    );
    check(
        &doc,
        &format!("## BN table ({} bytes per folded BN", layout::BN_LEN),
        &[
            field!("index of the layer", RawBn, layer),
            field!("γ tensor", RawBn, tensors[0]),
            field!("β tensor", RawBn, tensors[1]),
            field!("E[x] tensor", RawBn, tensors[2]),
            field!("Var[x] tensor", RawBn, tensors[3]),
            field!("reserved", RawBn, reserved0),
            field!("ε", RawBn, eps),
        ],
        layout::BN_LEN,
    );
}

/// The `N name` items of a code list such as `op: 1 dense, 2 conv2d (…)`,
/// from the field cell of the row whose field starts with `label`.
fn codes(doc: &str, heading: &str, label: &str) -> Vec<(u8, String)> {
    let rows = table(doc, heading);
    let (_, _, field) = rows
        .iter()
        .find(|(_, _, f)| f.starts_with(label))
        .unwrap_or_else(|| panic!("{heading}: no `{label}` row"));
    let list = field[label.len()..].trim_start_matches(':').trim();
    let list = list.split(" (").next().unwrap();
    list.split(", ")
        .map(|item| {
            let (n, name) = item.split_once(' ').unwrap();
            (n.parse().unwrap(), name.to_owned())
        })
        .collect()
}

#[test]
fn code_lists_match_the_enums() {
    let doc = spec();
    let layer = "## Layer table";
    let ops: Vec<(u8, String)> = OpCode::ALL
        .iter()
        .map(|&op| {
            let name = match op {
                OpCode::Dense => "dense",
                OpCode::Conv2d => "conv2d",
                OpCode::Depthwise => "depthwise conv2d",
                OpCode::MaxPool => "max pool",
                OpCode::AvgPool => "average pool",
                OpCode::GlobalAvgPool => "global average pool",
                OpCode::Activation => "activation",
            };
            (op as u8, name.to_owned())
        })
        .collect();
    assert_eq!(codes(&doc, layer, "op"), ops);
    let acts: Vec<(u8, String)> = ActCode::ALL
        .iter()
        .map(|&a| {
            let name = match a {
                ActCode::None => "none",
                ActCode::Relu => "ReLU",
                ActCode::Relu6 => "ReLU6",
                ActCode::Sigmoid => "sigmoid",
                ActCode::Tanh => "tanh",
            };
            (a as u8, name.to_owned())
        })
        .collect();
    assert_eq!(codes(&doc, layer, "activation"), acts);
    let dtypes: Vec<(u8, String)> = DType::ALL
        .iter()
        .map(|&d| {
            let name = match d {
                DType::F32 => "f32",
                DType::I8 => "i8",
                DType::I32 => "i32",
                DType::I8Pair => "i8pair",
            };
            (d as u8, name.to_owned())
        })
        .collect();
    assert_eq!(codes(&doc, "## Tensor table", "dtype"), dtypes);
    // Element sizes, as the length row states them.
    for &d in &DType::ALL {
        let name = &dtypes.iter().find(|(c, _)| *c == d as u8).unwrap().1;
        assert!(
            doc.contains(&format!("{name} {}", d.size())),
            "FORMAT.md does not give {name} a size of {}",
            d.size()
        );
    }
    assert_eq!(
        codes(&doc, "## Tensor table", "layout"),
        [
            (LayoutCode::Plain as u8, "plain".to_owned()),
            (LayoutCode::RowBlocked as u8, "row-blocked".to_owned())
        ]
    );
    // Flag bits.
    for (flag, name) in [
        (layout::FLAG_INT8, "INT8"),
        (layout::FLAG_HAS_BN, "HAS_BN"),
        (layout::LAYER_ZP_FOLDED, "ZP_FOLDED"),
    ] {
        let text = format!("bit {} `{name}`", flag.trailing_zeros());
        assert!(flag.is_power_of_two() && doc.contains(&text), "`{text}`");
    }
}

/// The text must appear in FORMAT.md.
fn says(doc: &str, text: &str) {
    assert!(doc.contains(text), "FORMAT.md should say `{text}`");
}

#[test]
fn limits_and_alignments_match_the_constants() {
    let doc = spec();
    says(
        &doc,
        &format!(
            "| magic | `\"{}\"` |",
            std::str::from_utf8(&layout::MAGIC).unwrap()
        ),
    );
    says(&doc, &format!("| version | `{}` |", layout::VERSION));
    says(&doc, &format!("format version {}", layout::VERSION));
    says(
        &doc,
        &format!("| layer_count | 1 ..= {} |", layout::MAX_LAYERS),
    );
    says(
        &doc,
        &format!("| tensor_count | 0 ..= {} |", layout::MAX_TENSORS),
    );
    says(
        &doc,
        &format!("`{:#06X}` none", layout::NO_TENSOR).replace("0X", "0x"),
    );
    let thousands = |n: usize| format!("{},{:03}", n / 1000, n % 1000);
    says(
        &doc,
        &format!(
            "requires `P ≤ {}` (`MAX_ACC_TAPS`",
            thousands(layout::MAX_ACC_TAPS)
        ),
    );
    says(&doc, &format!("(`TABLE_ALIGN` = {})", layout::TABLE_ALIGN));
    says(&doc, &format!("(`DATA_ALIGN` = {})", layout::DATA_ALIGN));
    says(
        &doc,
        &format!("(`BUFFER_ALIGN` = {})", layout::BUFFER_ALIGN),
    );
    says(
        &doc,
        &format!("a multiple of {} (`REGION_ALIGN`)", plan::REGION_ALIGN),
    );
    says(
        &doc,
        &format!("`R = {}` (the loop that reads it", layout::PAIR_BLOCK_ROWS),
    );
    says(
        &doc,
        &format!(
            "| activation (int8 sigmoid/tanh) | — | — | — | i8 `[{}]` |",
            layout::LUT_LEN
        ),
    );
    let crc = layout::CRC_FIELD;
    assert_eq!(crc.start, offset_of!(RawHeader, crc32));
    says(&doc, "with these four bytes taken as zero");
}
