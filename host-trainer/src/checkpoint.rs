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

use crate::network::Network;
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
    /// The file is a model file written by `normcore export`, not a
    /// checkpoint.
    #[error(
        "{path}: this is an exported model file (.ncm), not a checkpoint: use the checkpoint \
         `normcore train -o FILE.ckpt` wrote (model files are read by `normcore inspect`, \
         `adapt` and `samples`)"
    )]
    ModelFile {
        /// The file.
        path: PathBuf,
    },
    /// The state to save has NaN or infinite values: the file is left as it is.
    #[error("{path} not written: {reason} (the run diverged); the file is left as it was")]
    NotFinite {
        /// The file.
        path: PathBuf,
        /// Which layer and part.
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
    /// The network's own pixel scale (imported networks); absent in
    /// checkpoints of networks trained here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pixel_scale: Option<f32>,
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
        pixel_scale: t.pixel_scale,
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
    remove_stale_temps(dir, &name);
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

/// Remove `.NAME.tmp-PID` files in `dir` left by processes that no longer
/// run (a run killed while writing). Only where the process table can be
/// read (`/proc` on Linux); elsewhere nothing is removed.
pub fn remove_stale_temps(dir: &Path, name: &str) {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return;
    }
    let prefix = format!(".{name}.tmp-");
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !proc.join(pid.to_string()).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Save a trainer's whole state to `path`, atomically.
/// Refuses a state with NaN or infinite weights, momenta or statistics, so
/// that a checkpoint is only ever replaced by a valid one.
pub fn save(t: &mut Trainer, path: &Path) -> Result<(), CheckpointError> {
    write_atomic(path, &checked_bytes(t, path)?)
}

/// [`to_bytes`], refusing (for the file `path`, named in the error) a state
/// with NaN or infinite weights, momenta or statistics.
pub fn checked_bytes(t: &mut Trainer, path: &Path) -> Result<Vec<u8>, CheckpointError> {
    let reason = crate::train::non_finite_state(&t.net).or_else(|| {
        t.net
            .layers
            .iter()
            .position(|l| l.velocity.iter().any(|v| !v.is_finite()))
            .map(|i| format!("layer {} has non-finite momenta", i + 1))
    });
    if let Some(reason) = reason {
        return Err(CheckpointError::NotFinite {
            path: path.to_path_buf(),
            reason,
        });
    }
    Ok(to_bytes(t))
}

/// Load a checkpoint, validating everything: magic, CRC, header, the
/// network's shapes and every tensor's length.
pub fn load(path: &Path, threads: usize) -> Result<Trainer, CheckpointError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    if crate::export::is_model_file(&bytes) {
        return Err(CheckpointError::ModelFile {
            path: path.to_path_buf(),
        });
    }
    from_bytes(&bytes, threads).map_err(|reason| CheckpointError::Corrupt {
        path: path.to_path_buf(),
        reason,
    })
}

/// Whether `bytes` start like a checkpoint (its magic without the version).
pub fn is_checkpoint(bytes: &[u8]) -> bool {
    bytes.len() >= 7 && bytes[..7] == MAGIC[..7]
}

/// Parse a checkpoint image.
pub fn from_bytes(bytes: &[u8], threads: usize) -> Result<Trainer, String> {
    // The magic's first 7 bytes name the format, the 8th is its version. A
    // file that is a prefix of the magic is a truncated checkpoint.
    let n = bytes.len().min(7);
    if bytes[..n] != MAGIC[..n] {
        return Err("wrong magic (is this a normcore checkpoint?)".into());
    }
    if bytes.len() < 20 {
        return Err(format!(
            "truncated: {} bytes, less than the magic, header length and CRC",
            bytes.len()
        ));
    }
    if bytes[7] != MAGIC[7] {
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
    header
        .cfg
        .validate()
        .map_err(|e| format!("saved settings are invalid: {e}"))?;
    // A damaged or hostile header must not make us allocate more than the
    // file could hold: every tensor of the network is stored in it.
    let layers = header
        .spec
        .resolve()
        .map_err(|e| format!("saved network is invalid: {e}"))?;
    // params and velocity per layer, running mean and variance per BN channel.
    let need = layers.iter().try_fold(0usize, |sum, r| {
        let stats = match r.op {
            crate::spec::Op::BatchNorm(bn) => 2 * bn.channels(),
            _ => 0,
        };
        sum.checked_add(r.op.param_len().checked_mul(2)?.checked_add(stats)?)
    });
    if need
        .and_then(|v| v.checked_mul(4))
        .is_none_or(|b| b > body.len() - json_end)
    {
        return Err(
            "tensor data truncated: the saved network needs more values than the file holds".into(),
        );
    }
    let mut net = Network::new(
        header.spec.clone(),
        crate::network::Init::Xavier,
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
    let order_end = header
        .order_len
        .checked_mul(4)
        .and_then(|b| b.checked_add(at))
        .ok_or("epoch order truncated")?;
    let order_bytes = body.get(at..order_end).ok_or("epoch order truncated")?;
    if order_end != body.len() {
        return Err("trailing bytes after the epoch order".into());
    }
    let order: Vec<u32> = order_bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if header.pos > order.len() {
        return Err("position beyond the epoch order".into());
    }
    // Files of this build never hold such state (`checked_bytes`); older
    // ones or edited ones may.
    if let Some(reason) = crate::train::non_finite_state(&net) {
        return Err(format!(
            "{reason}: the run that wrote it diverged; train again with a lower learning rate"
        ));
    }
    if header
        .pixel_scale
        .is_some_and(|p| !(p.is_finite() && p > 0.0))
    {
        return Err("the pixel scale is not a positive number".into());
    }
    let mut t = Trainer::resume(
        net,
        header.cfg,
        header.step,
        header.epoch,
        order,
        header.pos,
        Rng::new(header.data_rng),
        Rng::new(header.noise_rng),
        threads,
    );
    t.pixel_scale = header.pixel_scale;
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{builtin_digits_split, Dataset};
    use crate::network::Init;
    use crate::spec::{preset, LayerSpec};
    use crate::train::Schedule;

    /// digits-mlp with dropout (so the noise generator matters), trained with
    /// momentum, weight decay and a step schedule (so every saved piece of
    /// state matters).
    fn trainer(seed: u64) -> Trainer {
        let mut spec = preset("digits-mlp").unwrap();
        spec.layers.insert(3, LayerSpec::Dropout { rate: 0.2 });
        let cfg = TrainConfig {
            batch: 32,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: true,
            schedule: Schedule::Step {
                gamma: 0.5,
                every: 30,
            },
            seed,
        };
        Trainer::new(spec, Init::He, cfg, 1).unwrap()
    }

    fn run_to(t: &mut Trainer, data: &Dataset, steps: u64) {
        while t.step < steps {
            t.train_step(data).unwrap();
        }
    }

    /// Every tensor, generator state and position, as bits.
    fn state(t: &Trainer) -> Vec<u64> {
        let mut v = vec![
            t.step,
            t.epoch,
            t.pos as u64,
            t.data_rng.state,
            t.noise_rng.state,
        ];
        v.extend(t.order.iter().map(|&i| u64::from(i)));
        for l in &t.net.layers {
            for xs in [&l.params, &l.velocity, &l.running_mean, &l.running_var] {
                v.push(xs.len() as u64);
                v.extend(xs.iter().map(|x| u64::from(x.to_bits())));
            }
        }
        v
    }

    #[test]
    fn resuming_from_a_checkpoint_continues_the_run_bit_for_bit() {
        let (train, _) = builtin_digits_split().unwrap();
        let total = 100;
        let mut straight = trainer(7);
        run_to(&mut straight, &train, total);
        let want = to_bytes(&mut straight);
        let per_epoch = (train.len() / 32) as u64;
        let dir = tempfile::tempdir().unwrap();
        // Before the first step, mid-epoch, at an epoch's last batch, and one
        // step before the end.
        for k in [0, 50, per_epoch, total - 1] {
            let mut first = trainer(7);
            run_to(&mut first, &train, k);
            let path = dir.path().join(format!("k{k}.ckpt"));
            save(&mut first, &path).unwrap();
            drop(first);
            let mut resumed = load(&path, 1).unwrap();
            assert_eq!(resumed.step, k);
            run_to(&mut resumed, &train, total);
            assert_eq!(state(&resumed), state(&straight), "resumed at step {k}");
            assert_eq!(resumed.cfg, straight.cfg);
            assert_eq!(resumed.net.spec, straight.net.spec);
            assert!(
                to_bytes(&mut resumed) == want,
                "resumed at step {k}: images differ"
            );
        }
        // The state really moved: velocities, statistics and generators.
        let fresh = trainer(7);
        assert_ne!(
            straight.net.layers[1].running_mean,
            fresh.net.layers[1].running_mean
        );
        assert!(straight.net.layers[0].velocity.iter().any(|&v| v != 0.0));
        assert_ne!(straight.noise_rng, fresh.noise_rng);
        assert!(straight.epoch >= 3);
    }

    #[test]
    fn a_saved_image_round_trips_exactly() {
        let (train, _) = builtin_digits_split().unwrap();
        let mut t = trainer(3);
        run_to(&mut t, &train, 5);
        let bytes = to_bytes(&mut t);
        assert_eq!(&bytes[..8], MAGIC);
        let mut back = from_bytes(&bytes, 2).unwrap();
        assert_eq!(state(&back), state(&t));
        assert_eq!(to_bytes(&mut back), bytes);
    }

    /// A small checkpoint image with every section present.
    fn small_image() -> Vec<u8> {
        let (train, _) = builtin_digits_split().unwrap();
        let spec = crate::spec::NetworkSpec::from_toml(
            "name = \"small\"\ninput = [8, 8, 1]\nclasses = 10\n\
             [[layers]]\ntype = \"dense\"\nunits = 4\nbias = false\n\
             [[layers]]\ntype = \"batchnorm\"\n[[layers]]\ntype = \"relu\"\n\
             [[layers]]\ntype = \"dense\"\nunits = 10",
            "small.toml",
        )
        .unwrap();
        let cfg = TrainConfig {
            batch: 8,
            lr: 0.1,
            momentum: 0.9,
            weight_decay: 0.0,
            nesterov: false,
            schedule: Schedule::Constant,
            seed: 1,
        };
        let mut t = Trainer::new(spec, Init::He, cfg, 1).unwrap();
        run_to(&mut t, &train, 3);
        to_bytes(&mut t)
    }

    fn reason(bytes: &[u8]) -> String {
        match from_bytes(bytes, 1) {
            Err(r) => r,
            Ok(_) => panic!("accepted a damaged checkpoint"),
        }
    }

    /// The JSON header and what follows it (tensors, then order) of an image.
    fn parts(bytes: &[u8]) -> (serde_json::Value, Vec<u8>) {
        let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
        let json = serde_json::from_slice(&bytes[16..16 + len]).unwrap();
        (json, bytes[16 + len..bytes.len() - 4].to_vec())
    }

    /// An image with a valid frame and CRC around any header and payload.
    fn frame(json: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&(json.len() as u64).to_le_bytes());
        out.extend_from_slice(json);
        out.extend_from_slice(payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn reframed(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value, &mut Vec<u8>)) -> Vec<u8> {
        let (mut json, mut payload) = parts(bytes);
        edit(&mut json, &mut payload);
        frame(&serde_json::to_vec(&json).unwrap(), &payload)
    }

    #[test]
    fn truncated_files_are_corrupt_at_every_length() {
        let bytes = small_image();
        let json_end = 16 + u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
        // The test's framing (with the header re-serialised) is the file's.
        assert!(from_bytes(&reframed(&bytes, |_, _| {}), 1).is_ok());
        for len in 0..bytes.len() {
            let r = reason(&bytes[..len]);
            assert!(
                r.contains("truncated"),
                "{len} of {} bytes: {r}",
                bytes.len()
            );
        }
        // Through the file API: the path and the reason, as a Corrupt error.
        let dir = tempfile::tempdir().unwrap();
        for len in [
            0,
            7,
            19,
            20,
            json_end / 2,
            json_end,
            json_end + 10,
            bytes.len() - 1,
        ] {
            let path = dir.path().join("cut.ckpt");
            fs::write(&path, &bytes[..len]).unwrap();
            match load(&path, 1) {
                Err(e @ CheckpointError::Corrupt { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains("cut.ckpt") && msg.contains("not a valid normcore checkpoint"),
                        "{msg}"
                    );
                }
                Err(e) => panic!("{len}: {e}"),
                Ok(_) => panic!("{len}: accepted"),
            }
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_is_detected() {
        let bytes = small_image();
        for i in 0..bytes.len() {
            for bit in [0x01u8, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                let r = reason(&b);
                let want = match i {
                    0..=6 => "wrong magic",
                    7 => "format version",
                    _ => "CRC mismatch",
                };
                assert!(r.contains(want), "byte {i} ^ {bit:#x}: {r}");
            }
        }
    }

    #[test]
    fn other_files_and_other_versions_are_named_as_such() {
        let bytes = small_image();
        for other in [
            &b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01"[..],
            b"name = \"digits-mlp\"\ninput = [8, 8, 1]\n",
            b"NCCKPU\0\x01 and then anything at all",
            b"x",
        ] {
            assert!(reason(other).contains("wrong magic"), "{other:?}");
        }
        let mut v2 = bytes.clone();
        v2[7] = 2;
        let r = reason(&v2);
        assert!(
            r.contains("format version 2 is not supported") && r.contains("version 1"),
            "{r}"
        );
        // Even with a CRC that matches, a future version is not parsed.
        let n = v2.len() - 4;
        let crc = crc32fast::hash(&v2[..n]);
        v2[n..].copy_from_slice(&crc.to_le_bytes());
        assert!(reason(&v2).contains("format version 2"));
    }

    #[test]
    fn headers_that_disagree_with_the_data_are_corrupt() {
        let bytes = small_image();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "tensor 0.params has 257 values, the network needs 256",
                reframed(&bytes, |j, _| j["tensors"][0][1] = 257.into()),
            ),
            (
                "tensor 0.velocity has 0 values, the network needs 256",
                reframed(&bytes, |j, _| j["tensors"][1][1] = 0.into()),
            ),
            (
                "tensor 1.mean has 4 values, the network needs 4 for 1.running_mean",
                reframed(&bytes, |j, _| j["tensors"][6][0] = "1.mean".into()),
            ),
            (
                "tensor table does not match the network",
                reframed(&bytes, |j, _| {
                    j["tensors"].as_array_mut().unwrap().pop();
                }),
            ),
            (
                // The network grew but the tensors did not.
                "tensor 0.params has 256 values, the network needs 320",
                reframed(&bytes, |j, _| j["spec"]["layers"][0]["units"] = 5.into()),
            ),
            (
                "the saved network needs more values than the file holds",
                reframed(&bytes, |j, _| {
                    j["spec"]["layers"][0]["units"] = 1_000_000_000.into()
                }),
            ),
            (
                "saved network is invalid: layer 1 (batchnorm)",
                reframed(&bytes, |j, _| {
                    j["spec"]["layers"].as_array_mut().unwrap().remove(0);
                }),
            ),
            (
                "saved settings are invalid",
                reframed(&bytes, |j, _| j["cfg"]["batch"] = 0.into()),
            ),
            (
                "saved settings are invalid",
                reframed(&bytes, |j, _| j["cfg"]["momentum"] = 1.0.into()),
            ),
            (
                "epoch order truncated",
                reframed(&bytes, |j, _| {
                    let n = j["order_len"].as_u64().unwrap();
                    j["order_len"] = (n + 1).into();
                }),
            ),
            (
                "epoch order truncated",
                reframed(&bytes, |j, _| j["order_len"] = (u64::MAX / 2).into()),
            ),
            (
                "trailing bytes after the epoch order",
                reframed(&bytes, |_, p| p.extend_from_slice(&[0; 4])),
            ),
            (
                "tensor data truncated",
                reframed(&bytes, |j, p| {
                    // Drop the order and the last two values of the last tensor.
                    let order = j["order_len"].as_u64().unwrap() as usize;
                    j["order_len"] = 0.into();
                    p.truncate(p.len() - 4 * order - 8);
                }),
            ),
            (
                "position beyond the epoch order",
                reframed(&bytes, |j, _| j["pos"] = 1_000_000.into()),
            ),
            (
                "bad header",
                reframed(&bytes, |j, _| j["step"] = "three".into()),
            ),
            (
                "bad header",
                reframed(&bytes, |j, _| j["spec"]["extra"] = 1.into()),
            ),
            ("bad header", frame(b"{not json", &[])),
            ("bad header", frame(b"", &[])),
        ];
        for (want, image) in cases {
            let r = reason(&image);
            assert!(r.contains(want), "want `{want}`, got `{r}`");
        }
        // A header length pointing past the end, with a CRC that matches.
        let mut long = bytes[..bytes.len() - 4].to_vec();
        long[8..16].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        let crc = crc32fast::hash(&long);
        long.extend_from_slice(&crc.to_le_bytes());
        assert!(reason(&long).contains("header length exceeds the file"));
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("model.ckpt");
        write_atomic(&path, b"first").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"first");
        write_atomic(&path, b"second, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second, longer");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec!["model.ckpt"],
            "a temporary file was left behind"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_previous_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let listing = || {
            let mut v: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        // The parent "directory" is a file: nothing can be created under it.
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"keep me").unwrap();
        let e = write_atomic(&file.join("model.ckpt"), b"new").unwrap_err();
        assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
        assert!(e.to_string().contains("not-a-dir"), "{e}");
        assert_eq!(fs::read(&file).unwrap(), b"keep me");
        // The target is a directory: the rename fails after the temporary
        // file is written, and the temporary file is removed.
        let target = dir.path().join("model.ckpt");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("inside"), b"old").unwrap();
        let e = write_atomic(&target, b"new").unwrap_err();
        assert!(e.to_string().contains("model.ckpt"), "{e}");
        assert_eq!(fs::read(target.join("inside")).unwrap(), b"old");
        assert_eq!(listing(), vec!["model.ckpt", "not-a-dir"]);
        // A real checkpoint survives a failed save over it.
        let mut t = trainer(1);
        let good = dir.path().join("good.ckpt");
        save(&mut t, &good).unwrap();
        let before = fs::read(&good).unwrap();
        assert!(save(&mut t, &good.join("child")).is_err());
        assert_eq!(fs::read(&good).unwrap(), before);
        assert!(load(&good, 1).is_ok());
    }

    #[test]
    fn a_missing_file_is_an_io_error_naming_it() {
        let e = match load(Path::new("/nonexistent/dir/x.ckpt"), 1) {
            Err(e) => e,
            Ok(_) => panic!("loaded a missing file"),
        };
        assert!(matches!(e, CheckpointError::Io { .. }));
        assert!(e.to_string().contains("/nonexistent/dir/x.ckpt"), "{e}");
    }

    /// Issue 12: a diverged BN layer is named as diverged, once: by the
    /// network when it evaluates, and by the loader, which refuses such a
    /// file (older builds could write one); a model file given as a
    /// checkpoint is named as such.
    #[test]
    fn diverged_statistics_and_model_files_are_named() {
        let (train, _) = builtin_digits_split().unwrap();
        let mut t = trainer(3);
        run_to(&mut t, &train, 2);
        let bn = t
            .net
            .layers
            .iter()
            .position(|l| !l.running_var.is_empty())
            .unwrap();
        t.net.layers[bn].running_var[0] = f32::NAN;
        let e = t.evaluate(&train, None).unwrap_err().to_string();
        assert_eq!(e.matches("diverged").count(), 1, "{e}");
        assert!(!e.contains("variance must be"), "{e}");
        assert!(
            e.contains(&format!("layer {} (batchnorm) diverged", bn + 1)),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nan.ckpt");
        fs::write(&path, to_bytes(&mut t)).unwrap();
        let e = load(&path, 1).unwrap_err().to_string();
        assert!(
            e.contains("nan.ckpt")
                && e.contains("non-finite running variance")
                && e.contains("diverged"),
            "{e}"
        );
        let ncm = dir.path().join("m.ncm");
        fs::write(&ncm, b"NCMF and the rest of a model file").unwrap();
        let e = load(&ncm, 1).unwrap_err().to_string();
        assert!(
            e.contains("m.ncm: this is an exported model file (.ncm), not a checkpoint"),
            "{e}"
        );
    }
}
