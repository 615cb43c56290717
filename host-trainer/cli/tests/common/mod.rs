//! What every CLI test file runs `normcore` with: the binary in a
//! directory (MNIST's environment variable removed, so that a test never
//! reads a data set it did not ask for), its output as text, a directory's
//! listing. Each test file keeps its own `ok`/`fails`, which differ in what
//! they return and which exit codes they accept.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// `normcore args...` run in `dir`.
pub fn normcore(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_normcore"))
        .args(args)
        .current_dir(dir)
        .env_remove("NORMCORE_MNIST_DIR")
        .output()
        .expect("run normcore")
}

/// Bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The names in `dir`, sorted.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}
