//! Checkpoints: the whole training state in one file, written atomically.
//!
//! Layout (little-endian):
//! ```text
//! 0   8   magic "NCCKPT\0\x01" (the last byte is the format version)
//! 8   8   u64 length J of the JSON header
//! 16  J   JSON header: network spec, config, step, epoch, position, RNG
//!         states, and the tensor table (name, element count) in file order
//! ..      the tensors' f32 values, in table order
//! ..      the epoch order, u32 per sample
//! end-4 4 CRC-32 (IEEE) of every preceding byte
//! ```
//! A file is written to a temporary name in the same directory, flushed to
//! disk, then renamed over the target, so an interrupted write never leaves
//! a half-written checkpoint behind under the real name.

use crate::model::Network;
use crate::spec::NetworkSpec;
use crate::train::{TrainConfig, Trainer};
use normcore::Rng;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"NCCKPT\0\x01";

/// Why a checkpoint cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// File-system failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid checkpoint.
    #[error("{path}: not a valid normcore checkpoint: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    spec: NetworkSpec,
    cfg: TrainConfig,
    step: u64,
    epoch: u64,
    pos: usize,
    data_rng: u64,
    noise_rng: u64,
    tensors: Vec<(String, usize)>,
    order_len: usize,
}

/// Every saved tensor of a network, with a stable name, in file order.
fn tensors_mut(net: &mut Network) -> Vec<(String, &mut Vec<f32>)> {
    let mut out = Vec::new();
    for (i, l) in net.layers.iter_mut().enumerate() {
        out.push((format!("{i}.params"), &mut l.params));
        out.push((format!("{i}.velocity"), &mut l.velocity));
        out.push((format!("{i}.running_mean"), &mut l.running_mean));
        out.push((format!("{i}.running_var"), &mut l.running_var));
    }
    out
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Serialise a trainer's state.
pub fn to_bytes(t: &mut Trainer) -> Vec<u8> {
    let order_len = t.order.len();
    let mut header = Header {
        spec: t.net.spec.clone(),
        cfg: t.cfg,
        step: t.step,
        epoch: t.epoch,
        pos: t.pos,
        data_rng: t.data_rng.state,
        noise_rng: t.noise_rng.state,
        tensors: Vec::new(),
        order_len,
    };
    let order = t.order.clone();
    let tensors = tensors_mut(&mut t.net);
    header.tensors = tensors.iter().map(|(n, v)| (n.clone(), v.len())).collect();
    // The header holds only plain numbers and strings: serialising cannot fail.
    let json = serde_json::to_vec(&header).unwrap_or_default();
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    for (_, v) in tensors {
        for x in v.iter() {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    for i in order {
        out.extend_from_slice(&i.to_le_bytes());
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Write `bytes` to `path` atomically: temporary file, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoint".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err(path))
}

/// Save a trainer's whole state to `path`, atomically.
pub fn save(t: &mut Trainer, path: &Path) -> Result<(), CheckpointError> {
    write_atomic(path, &to_bytes(t))
}

/// Load a checkpoint, validating everything: magic, CRC, header, the
/// network's shapes and every tensor's length.
pub fn load(path: &Path, threads: usize) -> Result<Trainer, CheckpointError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    from_bytes(&bytes, threads).map_err(|reason| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

/// Parse a checkpoint image.
pub fn from_bytes(bytes: &[u8], threads: usize) -> Result<Trainer, String> {
    if bytes.len() < 20 || &bytes[..6] != b"NCCKPT" {
        return Err("wrong magic (is this a normcore checkpoint?)".into());
    }
    if &bytes[..8] != MAGIC {
        return Err(format!(
            "format version {} is not supported (this build reads version {})",
            bytes[7], MAGIC[7]
        ));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != stored {
        return Err("CRC mismatch: the file is damaged or truncated".into());
    }
    let json_len = u64::from_le_bytes(body[8..16].try_into().map_err(|_| "short header")?);
    let json_end = usize::try_from(json_len)
        .ok()
        .and_then(|l| l.checked_add(16))
        .filter(|&e| e <= body.len())
        .ok_or("header length exceeds the file")?;
    let header: Header =
        serde_json::from_slice(&body[16..json_end]).map_err(|e| format!("bad header: {e}"))?;
    let mut net = Network::new(
        header.spec.clone(),
        crate::model::Init::Xavier,
        &mut Rng::new(0),
    )
    .map_err(|e| format!("saved network is invalid: {e}"))?;
    let mut at = json_end;
    {
        let tensors = tensors_mut(&mut net);
        if tensors.len() != header.tensors.len() {
            return Err("tensor table does not match the network".into());
        }
        for ((name, dst), (hname, hlen)) in tensors.into_iter().zip(&header.tensors) {
            if &name != hname || dst.len() != *hlen {
                return Err(format!(
                    "tensor {hname} has {hlen} values, the network needs {} for {name}",
                    dst.len()
                ));
            }
            let end = at + 4 * hlen;
            let src = body.get(at..end).ok_or("tensor data truncated")?;
            for (d, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
            at = end;
        }
    }
    let order_bytes = body
        .get(at..at + 4 * header.order_len)
        .ok_or("epoch order truncated")?;
    if at + 4 * header.order_len != body.len() {
        return Err("trailing bytes after the epoch order".into());
    }
    let order: Vec<u32> = order_bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if header.pos > order.len() {
        return Err("position beyond the epoch order".into());
    }
    Ok(Trainer::resume(
        net,
        header.cfg,
        header.step,
        header.epoch,
        order,
        header.pos,
        Rng::new(header.data_rng),
        Rng::new(header.noise_rng),
        threads,
    ))
}
