//! `normcore import`: an ONNX file to a checkpoint.

use crate::checkpoint;
use crate::train::{Schedule, TrainConfig, Trainer};
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

/// `normcore import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The ONNX model (`.onnx`) of a sequential network.
    model: PathBuf,
    /// The checkpoint to write.
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// How raw input values map to the network's input, `x = raw ·
    /// SCALE`: e.g. 1/255 for a network trained on bytes divided by 255,
    /// 1/16 for the built-in digits. Stored in the checkpoint (eval and
    /// export rescale a data set's samples to it) [default: the file's
    /// normcore.pixel_scale metadata, else the data set's].
    #[arg(long, value_parser = crate::cli::parse_pixel_scale)]
    pixel_scale: Option<f32>,
}

/// Run `normcore import`.
pub fn run(a: ImportArgs) -> Result<()> {
    crate::cli::check_output(&a.out, &[&a.model])?;
    let imported = super::import_file(&a.model)?;
    let cfg = TrainConfig {
        batch: 60,
        lr: 0.1,
        momentum: 0.9,
        weight_decay: 0.0,
        nesterov: false,
        schedule: Schedule::Constant,
        seed: 1,
    };
    let spec = imported.net.spec.clone();
    let mut t = Trainer::new(spec, crate::network::Init::Xavier, cfg, 1)?;
    t.net = imported.net;
    t.pixel_scale = a.pixel_scale.or(imported.pixel_scale);
    checkpoint::save(&mut t, &a.out)?;
    let net = &t.net;
    let kinds: Vec<&str> = net.spec.layers.iter().map(|l| l.kind()).collect();
    println!(
        "imported {} ({}, opset {}): network `{}`, input {}, {} classes, {} parameters, {} MACs",
        a.model.display(),
        if imported.producer.is_empty() {
            "unknown producer"
        } else {
            &imported.producer
        },
        imported.opset,
        net.spec.name,
        net.input(),
        net.classes(),
        net.param_count(),
        net.macs()
    );
    println!("layers: {}", kinds.join(" - "));
    match t.pixel_scale {
        Some(p) => println!("pixel scale: {p}"),
        None => println!("pixel scale: the data set's (give --pixel-scale to fix one)"),
    }
    println!("checkpoint: {}", a.out.display());
    Ok(())
}
