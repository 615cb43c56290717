//! Mini-batch SGD training: schedules, a fresh shuffle each epoch,
//! evaluation, and the whole state a checkpoint saves.

use crate::data::Dataset;
use crate::model::{Init, Mode, ModelError, Network, Workspace};
use normcore::{Rng, Sgd};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Learning-rate schedule as a function of the step `t` (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// `η_t = η`.
    Constant,
    /// `η_t = η · γ^floor(t / every)`.
    Step {
        /// Decay factor per period.
        gamma: f32,
        /// Period in steps.
        every: u64,
    },
    /// `η_t = η · γ^(t / every)`, smooth.
    Exponential {
        /// Decay factor per period.
        gamma: f32,
        /// Period in steps.
        every: u64,
    },
}

impl Schedule {
    /// The rate at step `t` for base rate `lr`.
    pub fn lr(&self, lr: f32, t: u64) -> f32 {
        match *self {
            Schedule::Constant => lr,
            Schedule::Step { gamma, every } => lr * gamma.powi((t / every.max(1)) as i32),
            Schedule::Exponential { gamma, every } => {
                lr * gamma.powf(t as f32 / every.max(1) as f32)
            }
        }
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "bad schedule `{s}`: use `constant`, `step:GAMMA:EVERY` or `exp:GAMMA:EVERY` (e.g. exp:0.5:10000)"
            )
        };
        if s == "constant" {
            return Ok(Schedule::Constant);
        }
        let parts: Vec<&str> = s.split(':').collect();
        let [kind, gamma, every] = parts[..] else {
            return Err(bad());
        };
        let gamma: f32 = gamma.parse().map_err(|_| bad())?;
        let every: u64 = every.parse().map_err(|_| bad())?;
        if !(gamma > 0.0 && gamma.is_finite()) || every == 0 {
            return Err(bad());
        }
        match kind {
            "step" => Ok(Schedule::Step { gamma, every }),
            "exp" => Ok(Schedule::Exponential { gamma, every }),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => f.write_str("constant"),
            Schedule::Step { gamma, every } => write!(f, "step:{gamma}:{every}"),
            Schedule::Exponential { gamma, every } => write!(f, "exp:{gamma}:{every}"),
        }
    }
}

/// Hyper-parameters of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Mini-batch size.
    pub batch: usize,
    /// Base learning rate.
    pub lr: f32,
    /// SGD momentum.
    pub momentum: f32,
    /// L2 weight decay on dense/conv weights.
    pub weight_decay: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Seed of the initialisation, the shuffles and dropout.
    pub seed: u64,
}

impl TrainConfig {
    /// The optimiser at step `t`.
    pub fn sgd(&self, t: u64) -> Sgd {
        Sgd {
            lr: self.schedule.lr(self.lr, t),
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            nesterov: self.nesterov,
        }
    }
}

/// Errors while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The network could not run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The loss became NaN or infinite.
    #[error("training diverged at step {step}: loss is {loss}; lower the learning rate (now {lr}) or add BN")]
    Diverged {
        /// The step.
        step: u64,
        /// The loss.
        loss: f32,
        /// The learning rate in use.
        lr: f32,
    },
    /// Data and network do not fit together.
    #[error("{0}")]
    Mismatch(String),
    /// Bad hyper-parameters.
    #[error("invalid training settings: {0}")]
    Config(String),
}

/// Accuracy and loss over a data set.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Fraction of samples classified correctly.
    pub accuracy: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Samples evaluated.
    pub samples: usize,
}

/// A training run in progress: the network and everything needed to resume
/// it exactly.
#[derive(Debug)]
pub struct Trainer {
    /// The network being trained.
    pub net: Network,
    /// Hyper-parameters.
    pub cfg: TrainConfig,
    /// Steps taken.
    pub step: u64,
    /// Epochs started.
    pub epoch: u64,
    /// This epoch's sample order.
    pub order: Vec<u32>,
    /// Position in `order`.
    pub pos: usize,
    /// Generator of the shuffles.
    pub data_rng: Rng,
    /// Generator of dropout masks.
    pub noise_rng: Rng,
    threads: usize,
    ws: Option<Workspace>,
    eval_ws: Option<Workspace>,
    batch_x: Vec<f32>,
    batch_y: Vec<u16>,
}

/// Seed offsets that give the shuffles and dropout their own streams.
const DATA_STREAM: u64 = 0x5EED_0000_DA7A_0001;
const NOISE_STREAM: u64 = 0x5EED_0000_0015_E002;

/// Samples per evaluation batch.
const EVAL_BATCH: usize = 500;

/// Check that a data set feeds a network.
pub fn check_data(net: &Network, data: &Dataset) -> Result<(), TrainError> {
    let input = net.input();
    if (data.h, data.w, data.c) != (input.h, input.w, input.c) {
        return Err(TrainError::Mismatch(format!(
            "data set `{}` has {}x{}x{} samples but the network expects {input}",
            data.name, data.h, data.w, data.c
        )));
    }
    if data.n_classes > net.classes() {
        return Err(TrainError::Mismatch(format!(
            "data set `{}` has {} classes but the network outputs {}",
            data.name,
            data.n_classes,
            net.classes()
        )));
    }
    if data.is_empty() {
        return Err(TrainError::Mismatch(format!(
            "data set `{}` is empty",
            data.name
        )));
    }
    Ok(())
}

impl Trainer {
    /// A fresh run: initialise `net`'s weights from the seed.
    pub fn new(
        spec: crate::spec::NetworkSpec,
        init: Init,
        cfg: TrainConfig,
        threads: usize,
    ) -> Result<Self, TrainError> {
        cfg.sgd(0)
            .validate()
            .map_err(|e| TrainError::Config(e.to_string()))?;
        if cfg.batch < 2 {
            return Err(TrainError::Config(
                "batch must be at least 2 (BN needs two samples for a variance)".into(),
            ));
        }
        let mut init_rng = Rng::new(cfg.seed);
        let net = Network::new(spec, init, &mut init_rng)?;
        Ok(Self::resume(
            net,
            cfg,
            0,
            0,
            Vec::new(),
            0,
            Rng::new(cfg.seed ^ DATA_STREAM),
            Rng::new(cfg.seed ^ NOISE_STREAM),
            threads,
        ))
    }

    /// Rebuild a run from saved state (see the checkpoint module).
    #[allow(clippy::too_many_arguments)]
    pub fn resume(
        net: Network,
        cfg: TrainConfig,
        step: u64,
        epoch: u64,
        order: Vec<u32>,
        pos: usize,
        data_rng: Rng,
        noise_rng: Rng,
        threads: usize,
    ) -> Self {
        Trainer {
            net,
            cfg,
            step,
            epoch,
            order,
            pos,
            data_rng,
            noise_rng,
            threads: threads.max(1),
            ws: None,
            eval_ws: None,
            batch_x: Vec::new(),
            batch_y: Vec::new(),
        }
    }

    /// One SGD step on the next mini-batch of `data`; returns the batch loss.
    /// An epoch ends when fewer than `batch` unseen samples remain; the next
    /// one starts with a fresh shuffle.
    pub fn train_step(&mut self, data: &Dataset) -> Result<f32, TrainError> {
        let b = self.cfg.batch;
        if data.len() < b {
            return Err(TrainError::Mismatch(format!(
                "data set `{}` has {} samples, fewer than one batch of {b}",
                data.name,
                data.len()
            )));
        }
        if self.order.len() != data.len() || self.pos + b > self.order.len() {
            self.order = (0..data.len() as u32).collect();
            self.data_rng.shuffle(&mut self.order);
            self.pos = 0;
            self.epoch += 1;
        }
        if self.ws.is_none() {
            self.ws = Some(self.net.workspace(b, self.threads)?);
        }
        let per = data.sample_len();
        self.batch_x.resize(b * per, 0.0);
        self.batch_y.resize(b, 0);
        let idx: Vec<usize> = self.order[self.pos..self.pos + b]
            .iter()
            .map(|&i| i as usize)
            .collect();
        data.gather(&idx, &mut self.batch_x, &mut self.batch_y)
            .map_err(|e| TrainError::Mismatch(e.to_string()))?;
        self.pos += b;
        let ws = self
            .ws
            .as_mut()
            .ok_or(TrainError::Config("no workspace".into()))?;
        self.net
            .forward(ws, &self.batch_x, Mode::Train(&mut self.noise_rng))?;
        let loss = self.net.backward(ws, &self.batch_x, &self.batch_y)?;
        let sgd = self.cfg.sgd(self.step);
        if !loss.is_finite() {
            return Err(TrainError::Diverged {
                step: self.step,
                loss,
                lr: sgd.lr,
            });
        }
        self.net.sgd_step(&sgd)?;
        self.step += 1;
        Ok(loss)
    }

    /// Accuracy and loss on `data` in inference mode. `probe`, if given, is
    /// called with each evaluation batch's workspace (to read activations).
    pub fn evaluate(
        &mut self,
        data: &Dataset,
        mut probe: Option<&mut dyn FnMut(&Workspace)>,
    ) -> Result<Evaluation, TrainError> {
        if self.eval_ws.is_none() {
            self.eval_ws = Some(self.net.workspace(EVAL_BATCH, self.threads)?);
        }
        let ws = self
            .eval_ws
            .as_mut()
            .ok_or(TrainError::Config("no workspace".into()))?;
        evaluate_with(&mut self.net, ws, data, &mut probe)
    }
}

/// Evaluate `net` on `data` with a given workspace.
pub fn evaluate_with(
    net: &mut Network,
    ws: &mut Workspace,
    data: &Dataset,
    probe: &mut Option<&mut dyn FnMut(&Workspace)>,
) -> Result<Evaluation, TrainError> {
    check_data(net, data)?;
    let k = net.classes();
    let per = data.sample_len();
    let cap = ws.capacity();
    let mut x = vec![0.0f32; cap * per];
    let mut y = vec![0u16; cap];
    let mut probs = vec![0.0f32; cap * k];
    let (mut correct, mut loss_sum) = (0usize, 0.0f64);
    let mut start = 0;
    while start < data.len() {
        let m = cap.min(data.len() - start);
        let idx: Vec<usize> = (start..start + m).collect();
        data.gather(&idx, &mut x[..m * per], &mut y[..m])
            .map_err(|e| TrainError::Mismatch(e.to_string()))?;
        let logits = net.forward(ws, &x[..m * per], Mode::Eval)?;
        let l =
            normcore::layers::loss::softmax_cross_entropy(logits, &y[..m], k, &mut probs[..m * k])
                .map_err(|e| TrainError::Mismatch(e.to_string()))?;
        loss_sum += f64::from(l) * m as f64;
        correct += logits
            .chunks_exact(k)
            .zip(&y[..m])
            .filter(|(row, &label)| normcore::layers::loss::argmax(row) == usize::from(label))
            .count();
        if let Some(p) = probe.as_deref_mut() {
            p(ws);
        }
        start += m;
    }
    Ok(Evaluation {
        accuracy: correct as f64 / data.len() as f64,
        loss: loss_sum / data.len() as f64,
        samples: data.len(),
    })
}
