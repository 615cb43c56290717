//! The host side of normcore: data sets, network descriptions, a trainer
//! built on core's layer math, checkpoints, the paper's experiments, and the
//! exporter that folds, quantizes and writes `.ncm` model files. The
//! `normcore` binary is a thin command line over this library; the
//! integration tests and the firmware's build use it directly.

pub mod adapt;
pub mod assets;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod export;
pub mod fastgemm;
pub mod hostops;
pub mod network;
pub mod onnx;
pub mod reproduce;
pub mod spec;
pub mod train;
