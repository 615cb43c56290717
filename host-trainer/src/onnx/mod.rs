//! ONNX in and out: `normcore import model.onnx` turns the graph of a
//! sequential network trained elsewhere (PyTorch, TensorFlow via tf2onnx,
//! ...) into a normcore network with its BN layers unfolded and their
//! running statistics, and `normcore export --format onnx` writes a
//! normcore network back as ONNX.
//!
//! - [`proto`]: the ONNX protobuf messages (hand-declared `prost` structs).
//! - [`import`](import_bytes): graph → [`NetworkSpec`](crate::spec::NetworkSpec)
//!   and parameters, NCHW → NHWC.
//! - [`to_onnx`]: network → graph, NHWC → NCHW.
//!
//! Layouts: ONNX is NCHW, normcore NHWC. Conv weights `[M, C, KH, KW]`
//! become `[M, KH, KW, C]`, depthwise `[C, 1, KH, KW]` become `[KH, KW, C]`,
//! and the first dense layer after a flatten of a `C×H×W` map has its
//! columns permuted: ONNX flattens in `c·H·W + y·W + x` order, normcore in
//! `(y·W + x)·C + c` order.

pub mod command;
mod export;
mod import;
pub mod proto;

pub use export::to_onnx;
pub use import::{import_bytes, import_file, ImportError, Imported, OPSETS, SUPPORTED};

/// The `metadata_props` key that carries a network's pixel scale through
/// an ONNX file (written by [`to_onnx`], read back as the default of
/// `normcore import --pixel-scale`).
pub const PIXEL_SCALE_KEY: &str = "normcore.pixel_scale";

#[cfg(test)]
mod tests;
