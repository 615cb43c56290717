//! Mini-batch SGD training: schedules, a fresh shuffle each epoch,
//! evaluation, and the whole state a checkpoint saves.

use crate::data::Dataset;
use crate::network::{Init, Mode, Network, NetworkError, Workspace};
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
                "bad schedule `{s}`: use `constant`, `step:GAMMA:EVERY` or `exp:GAMMA:EVERY` \
                 with a decay 0 < GAMMA <= 1 and EVERY >= 1 steps (e.g. exp:0.5:10000)"
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
        // GAMMA > 1 would make the rate grow: not a decay.
        if !(gamma > 0.0 && gamma <= 1.0) || every == 0 {
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
    /// Check the hyper-parameters (a fresh run, or one read from a checkpoint).
    pub fn validate(&self) -> Result<(), TrainError> {
        self.sgd(0)
            .validate()
            .map_err(|e| TrainError::Config(e.to_string()))?;
        if self.lr.is_nan() || self.lr <= 0.0 {
            return Err(TrainError::Config(format!(
                "the learning rate must be positive (got {}): with 0 nothing is learned",
                self.lr
            )));
        }
        if self.batch < 2 {
            return Err(TrainError::Config(
                "batch must be at least 2 (BN needs two samples for a variance)".into(),
            ));
        }
        Ok(())
    }

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
    Network(#[from] NetworkError),
    /// Training diverged: see [`DIVERGENCE_RULE`].
    #[error(
        "training diverged at step {step}: {reason}; lower the learning rate (now {lr}) or add BN"
    )]
    Diverged {
        /// The step.
        step: u64,
        /// The loss.
        loss: f32,
        /// The learning rate in use.
        lr: f32,
        /// Which part of the rule fired.
        reason: String,
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
    guard: Guard,
    /// How raw input values map to the network's input (`x = raw ·
    /// pixel_scale`), when the network says so itself (an imported one,
    /// `normcore import --pixel-scale`); `None`: the data set's.
    pub pixel_scale: Option<f32>,
}

/// Seed offsets that give the shuffles and dropout their own streams.
const DATA_STREAM: u64 = 0x5EED_0000_DA7A_0001;
const NOISE_STREAM: u64 = 0x5EED_0000_0015_E002;

/// Samples per evaluation batch.
const EVAL_BATCH: usize = 500;

/// When a run counts as diverged (checked at every step by
/// [`Trainer::train_step`]; the `train` command's documentation repeats it).
pub const DIVERGENCE_RULE: &str = "Training stops as diverged (non-zero exit, nothing written) \
when the batch loss is NaN or infinite, when a weight or BN statistic becomes NaN or infinite, \
when the batch loss exceeds 100 x its reference, or when it stays above 10 x its reference for \
10 steps in a row. The reference is the larger of ln(classes) (the loss of a uniform guess) and \
the first batch loss of this run (or of this resumed part).";

/// Multiple of the reference loss that is divergence at once.
const EXPLODE_AT_ONCE: f32 = 100.0;
/// Multiple of the reference loss that is divergence when it lasts.
const EXPLODE_LASTING: f32 = 10.0;
/// Steps in a row above [`EXPLODE_LASTING`] x the reference.
const LASTING_STEPS: u32 = 10;

/// The divergence rule's state ([`DIVERGENCE_RULE`]).
#[derive(Debug, Clone, Copy, Default)]
struct Guard {
    reference: Option<f32>,
    high: u32,
}

impl Guard {
    /// `Some(reason)` if `loss` (of a batch, finite) makes the run diverged.
    fn check(&mut self, loss: f32, classes: usize) -> Option<String> {
        let floor = (classes.max(2) as f32).ln();
        let reference = *self.reference.get_or_insert(loss.max(floor));
        if loss > EXPLODE_AT_ONCE * reference {
            return Some(format!(
                "the loss {loss} exceeds {EXPLODE_AT_ONCE} x its reference {reference:.4}"
            ));
        }
        if loss > EXPLODE_LASTING * reference {
            self.high += 1;
            if self.high >= LASTING_STEPS {
                return Some(format!(
                    "the loss (now {loss}) stayed above {EXPLODE_LASTING} x its reference \
                     {reference:.4} for {LASTING_STEPS} steps"
                ));
            }
        } else {
            self.high = 0;
        }
        None
    }
}

/// The first layer (1-based) and part whose values are not all finite.
pub fn non_finite_state(net: &Network) -> Option<String> {
    non_finite_parts(net, true)
}

/// As [`non_finite_state`], for the BN running statistics only (a training
/// step checks the weights as it updates them).
fn non_finite_statistics(net: &Network) -> Option<String> {
    non_finite_parts(net, false)
}

fn non_finite_parts(net: &Network, weights: bool) -> Option<String> {
    for (i, l) in net.layers.iter().enumerate() {
        let parts = [
            ("weights", &l.params),
            ("running mean", &l.running_mean),
            ("running variance", &l.running_var),
        ];
        for (what, v) in &parts[usize::from(!weights)..] {
            if !all_finite(v) {
                return Some(format!("layer {} has non-finite {what}", i + 1));
            }
        }
    }
    None
}

use crate::hostops::all_finite;

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

/// Check that a training set's labels can teach `net` anything: at least
/// two distinct classes, all below the network's class count. A set of
/// one class trains to a constant answer that scores 100 % on itself.
/// Returns the number of distinct labels.
pub fn check_labels(net: &Network, data: &Dataset) -> Result<usize, TrainError> {
    let k = net.classes();
    let mut seen = vec![false; k.max(1)];
    for &l in &data.labels {
        match seen.get_mut(usize::from(l)) {
            Some(s) => *s = true,
            None => {
                return Err(TrainError::Mismatch(format!(
                    "data set `{}` has label {l} but the network outputs {k} classes (0..={})",
                    data.name,
                    k.saturating_sub(1)
                )))
            }
        }
    }
    let present: Vec<usize> = (0..k).filter(|&c| seen[c]).collect();
    if present.len() < 2 {
        return Err(TrainError::Mismatch(format!(
            "data set `{}` has only label(s) {present:?} among its {} samples, for a network \
             of {k} classes: training needs samples of at least two classes (check the label \
             column, the last of each row)",
            data.name,
            data.len()
        )));
    }
    Ok(present.len())
}

impl Trainer {
    /// A fresh run: initialise `net`'s weights from the seed.
    pub fn new(
        spec: crate::spec::NetworkSpec,
        init: Init,
        cfg: TrainConfig,
        threads: usize,
    ) -> Result<Self, TrainError> {
        cfg.validate()?;
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
            guard: Guard::default(),
            pixel_scale: None,
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
        // The next batch's rows start loading while this one trains (at an
        // epoch's end the next order is not drawn yet: nothing to fetch).
        let next: Vec<usize> = self.order[self.pos..(self.pos + b).min(self.order.len())]
            .iter()
            .map(|&i| i as usize)
            .collect();
        data.prefetch(&next);
        let ws = self
            .ws
            .as_mut()
            .ok_or(TrainError::Config("no workspace".into()))?;
        let loss = self
            .net
            .train_pass(ws, &self.batch_x, &self.batch_y, &mut self.noise_rng)?;
        let sgd = self.cfg.sgd(self.step);
        let diverged = |reason: String| TrainError::Diverged {
            step: self.step + 1,
            loss,
            lr: sgd.lr,
            reason,
        };
        if !loss.is_finite() {
            return Err(diverged(format!("loss is {loss}")));
        }
        if let Some(reason) = self.guard.check(loss, self.net.classes()) {
            return Err(diverged(reason));
        }
        if let Some(layer) = self.net.sgd_step(&sgd)? {
            return Err(diverged(format!(
                "layer {layer} has non-finite weights after the update (loss {loss})"
            )));
        }
        if let Some(reason) = non_finite_statistics(&self.net) {
            return Err(diverged(format!("{reason} after the update (loss {loss})")));
        }
        self.step += 1;
        Ok(loss)
    }

    /// The training workspace, once the first step has made it.
    pub fn workspace_mut(&mut self) -> Option<&mut Workspace> {
        self.ws.as_mut()
    }

    /// Whether the divergence rule sees nothing suspicious: the last batch
    /// loss is not above 10 x its reference. Periodic checkpoints are
    /// taken only then.
    pub fn is_calm(&self) -> bool {
        self.guard.high == 0
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

#[cfg(test)]
mod tests {
    use super::*;

    use crate::data::{builtin_digits_split, Dataset};
    use crate::spec::{preset, NetworkSpec};

    #[test]
    fn all_finite_finds_every_non_finite_value() {
        let mut v: Vec<f32> = (0..3000).map(|i| i as f32 - 1500.5).collect();
        v.push(f32::MAX);
        v.push(-f32::MIN_POSITIVE / 2.0);
        assert!(all_finite(&v));
        assert!(all_finite(&[]));
        for bad in [f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 1023, 1024, 2999, 3001] {
                let mut w = v.clone();
                w[at] = bad;
                assert!(!all_finite(&w), "{bad} at {at}");
            }
        }
    }

    fn cfg(batch: usize, lr: f32, seed: u64) -> TrainConfig {
        TrainConfig {
            batch,
            lr,
            momentum: 0.9,
            weight_decay: 1e-4,
            nesterov: false,
            schedule: Schedule::Constant,
            seed,
        }
    }

    fn digits() -> (Dataset, Dataset) {
        builtin_digits_split().unwrap()
    }

    fn spec(toml: &str) -> NetworkSpec {
        NetworkSpec::from_toml(toml, "test.toml").unwrap()
    }

    /// Two hidden ReLU layers, no BN: at a huge learning rate the second
    /// update overflows the activations and the loss becomes NaN.
    const NO_BN_DEEP: &str = r#"
        input = [8, 8, 1]
        classes = 10
        [[layers]]
        type = "dense"
        units = 32
        [[layers]]
        type = "relu"
        [[layers]]
        type = "dense"
        units = 32
        [[layers]]
        type = "relu"
        [[layers]]
        type = "dense"
        units = 10
    "#;

    #[test]
    fn schedules_give_the_documented_rates() {
        let close = |a: f32, b: f32| (a - b).abs() <= 1e-6 * b.abs();
        assert_eq!(Schedule::Constant.lr(0.1, 0), 0.1);
        assert_eq!(Schedule::Constant.lr(0.1, 1_000_000), 0.1);
        let step = Schedule::Step {
            gamma: 0.5,
            every: 10,
        };
        for (t, want) in [
            (0, 0.1),
            (9, 0.1),
            (10, 0.05),
            (19, 0.05),
            (25, 0.025),
            (100, 0.1 / 1024.0),
        ] {
            assert!(
                close(step.lr(0.1, t), want),
                "step t={t}: {}",
                step.lr(0.1, t)
            );
        }
        let exp = Schedule::Exponential {
            gamma: 0.5,
            every: 10,
        };
        for (t, want) in [
            (0, 0.1),
            (5, 0.1 * std::f32::consts::FRAC_1_SQRT_2),
            (10, 0.05),
            (15, 0.05 * std::f32::consts::FRAC_1_SQRT_2),
            (30, 0.0125),
        ] {
            assert!(close(exp.lr(0.1, t), want), "exp t={t}: {}", exp.lr(0.1, t));
        }
        // Smooth decay is monotone between the steps of the step schedule.
        assert!(exp.lr(0.1, 11) < exp.lr(0.1, 10) && exp.lr(0.1, 11) > exp.lr(0.1, 20));
        let mut c = cfg(8, 0.2, 1);
        c.schedule = step;
        assert!(close(c.sgd(10).lr, 0.1));
        assert_eq!((c.sgd(10).momentum, c.sgd(10).weight_decay), (0.9, 1e-4));
    }

    #[test]
    fn schedules_parse_print_and_reject_bad_text() {
        for text in [
            "constant",
            "step:0.5:10",
            "exp:0.1:10000",
            "step:0.3:1000",
            "exp:0.75:3",
        ] {
            let s: Schedule = text.parse().unwrap();
            assert_eq!(s.to_string(), text);
            assert_eq!(s.to_string().parse::<Schedule>(), Ok(s));
        }
        assert_eq!(
            "step:0.5:10".parse(),
            Ok(Schedule::Step {
                gamma: 0.5,
                every: 10
            })
        );
        assert_eq!(
            "exp:0.25:7".parse(),
            Ok(Schedule::Exponential {
                gamma: 0.25,
                every: 7
            })
        );
        for bad in [
            "",
            "Constant",
            "constant:1",
            "step",
            "step:0.5",
            "step:0.5:10:1",
            "linear:0.5:10",
            "step:x:10",
            "step:0.5:ten",
            "step:0:10",
            "step:2:10",
            "exp:1.5:3",
            "exp:-0.5:10",
            "exp:nan:10",
            "exp:inf:10",
            "step:0.5:0",
            "step:0.5:-1",
        ] {
            let e = bad.parse::<Schedule>().unwrap_err();
            assert!(
                e.contains(&format!("`{bad}`")) && e.contains("step:GAMMA:EVERY"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn digits_mlp_reaches_90_percent_within_600_steps() {
        let (train, test) = digits();
        let mut t =
            Trainer::new(preset("digits-mlp").unwrap(), Init::He, cfg(32, 0.1, 1), 1).unwrap();
        check_data(&t.net, &train).unwrap();
        let before = t.evaluate(&test, None).unwrap();
        let mut losses = Vec::new();
        while t.step < 600 {
            losses.push(t.train_step(&train).unwrap());
        }
        let e = t.evaluate(&test, None).unwrap();
        assert_eq!(e.samples, test.len());
        assert!(
            before.accuracy < 0.5,
            "untrained accuracy {}",
            before.accuracy
        );
        eprintln!(
            "digits-mlp: test accuracy {:.4} after 600 steps",
            e.accuracy
        );
        assert!(
            e.accuracy >= 0.90,
            "test accuracy {} after 600 steps",
            e.accuracy
        );
        assert!(e.loss < before.loss);
        let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
        assert!(mean(&losses[550..]) < 0.25 * mean(&losses[..50]));
        // 600 steps of 32 over ~1,440 samples: 14 epochs.
        let per_epoch = (train.len() / 32) as u64;
        assert_eq!(t.epoch, 600_u64.div_ceil(per_epoch));
    }

    /// Every piece of state a checkpoint saves, as bits.
    fn state_bits(t: &Trainer) -> Vec<u64> {
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
                v.extend(xs.iter().map(|x| u64::from(x.to_bits())));
            }
        }
        v
    }

    fn with_dropout(mut spec: NetworkSpec) -> NetworkSpec {
        spec.layers
            .insert(3, crate::spec::LayerSpec::Dropout { rate: 0.2 });
        spec
    }

    #[test]
    fn the_same_seed_gives_bit_identical_runs_and_another_seed_differs() {
        let (train, _) = digits();
        let run = |seed: u64, threads: usize| {
            let spec = with_dropout(preset("digits-mlp").unwrap());
            let mut c = cfg(32, 0.1, seed);
            c.schedule = Schedule::Step {
                gamma: 0.5,
                every: 20,
            };
            let mut t = Trainer::new(spec, Init::He, c, threads).unwrap();
            for _ in 0..60 {
                t.train_step(&train).unwrap();
            }
            t
        };
        let a = run(1, 1);
        let b = run(1, 1);
        assert_eq!(state_bits(&a), state_bits(&b));
        // Two threads split nothing this small: the same bits again.
        assert_eq!(state_bits(&a), state_bits(&run(1, 2)));
        let c = run(2, 1);
        assert_ne!(a.net.layers[0].params, c.net.layers[0].params);
        assert_ne!(a.order, c.order);
        assert_ne!(a.noise_rng, c.noise_rng);
        // The shuffles and the dropout masks have their own streams.
        assert_ne!(a.data_rng, a.noise_rng);
    }

    /// `n` samples of one value each, `i / 64`, so a batch names its samples.
    fn numbered(n: usize) -> Dataset {
        let images = (0..n).map(|i| i as f32 / 64.0).collect();
        let labels = (0..n).map(|i| (i % 2) as u16).collect();
        Dataset::new("numbered", images, labels, [1, 1, 1], 2, 1.0 / 64.0).unwrap()
    }

    fn tiny() -> NetworkSpec {
        spec("input = [1, 1, 1]\nclasses = 2\n[[layers]]\ntype = \"dense\"\nunits = 2")
    }

    /// The samples of each step's batch, as indices.
    fn batches(t: &mut Trainer, data: &Dataset, steps: usize) -> Vec<Vec<usize>> {
        (0..steps)
            .map(|_| {
                t.train_step(data).unwrap();
                t.batch_x
                    .iter()
                    .map(|&x| (x * 64.0).round() as usize)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn each_epoch_is_a_fresh_shuffle_seeing_every_sample_once() {
        let data = numbered(12);
        let mut t = Trainer::new(tiny(), Init::He, cfg(4, 0.1, 3), 1).unwrap();
        let seen = batches(&mut t, &data, 12);
        assert_eq!(t.epoch, 4);
        let epochs: Vec<Vec<usize>> = seen.chunks(3).map(|c| c.concat()).collect();
        for (e, order) in epochs.iter().enumerate() {
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..12).collect::<Vec<_>>(), "epoch {e}: {order:?}");
        }
        for w in epochs.windows(2) {
            assert_ne!(w[0], w[1], "an epoch repeated the previous order");
        }
        assert_ne!(epochs[0], (0..12).collect::<Vec<_>>(), "not shuffled");
        // The labels travel with their samples.
        for (x, &y) in t.batch_x.iter().zip(&t.batch_y) {
            assert_eq!(usize::from(y), (x * 64.0).round() as usize % 2);
        }
    }

    #[test]
    fn a_partial_last_batch_is_dropped_and_the_next_epoch_reshuffles() {
        // 14 samples, batch 4: 3 batches per epoch, 2 samples left over.
        let data = numbered(14);
        let mut t = Trainer::new(tiny(), Init::He, cfg(4, 0.1, 5), 1).unwrap();
        let seen = batches(&mut t, &data, 9);
        assert_eq!(t.epoch, 3);
        for epoch in seen.chunks(3) {
            let mut ids = epoch.concat();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), 12, "a sample was drawn twice in an epoch");
        }
    }

    #[test]
    fn a_huge_learning_rate_without_bn_is_reported_as_divergence() {
        let (train, _) = digits();
        let mut c = cfg(32, 1e6, 1);
        c.momentum = 0.0;
        let mut t = Trainer::new(spec(NO_BN_DEEP), Init::He, c, 1).unwrap();
        let (err, before) = loop {
            assert!(t.step < 50, "no divergence within 50 steps");
            let before = t.net.clone();
            if let Err(e) = t.train_step(&train) {
                break (e, before);
            }
        };
        let TrainError::Diverged {
            step,
            loss,
            lr,
            ref reason,
        } = err
        else {
            panic!("expected divergence, got {err}");
        };
        assert_eq!(step, t.step + 1, "the step that failed is the next one");
        assert_eq!(lr, 1e6);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("diverged at step {step}"))
                && msg.contains("lower the learning rate"),
            "{msg}"
        );
        if !reason.contains("after the update") {
            assert!(!loss.is_finite() || loss > 100.0 * 10f32.ln(), "{msg}");
            // A failed step that stopped on its loss applied no update.
            for (a, b) in before.layers.iter().zip(&t.net.layers) {
                assert_eq!(a.params, b.params);
            }
        }
    }

    #[test]
    fn a_finite_but_exploding_loss_is_divergence_and_a_normal_run_is_not() {
        let mut g = Guard::default();
        // Reference: ln(10) floor when the first loss is lower.
        assert_eq!(g.check(1.0, 10), None);
        for _ in 0..100 {
            assert_eq!(g.check(20.0, 10), None, "below 10 x ln 10");
        }
        let at_once = g.check(231.0, 10).expect("above 100 x reference");
        assert!(at_once.contains("exceeds 100 x"), "{at_once}");
        let mut g = Guard::default();
        g.check(2.0, 3);
        for i in 1..LASTING_STEPS {
            assert_eq!(g.check(30.0, 3), None, "step {i}");
        }
        assert!(g.check(30.0, 3).unwrap().contains("for 10 steps"));
        // A spike that comes back resets the count.
        let mut g = Guard::default();
        g.check(2.3, 10);
        for _ in 0..5 {
            for _ in 1..LASTING_STEPS {
                assert_eq!(g.check(30.0, 10), None);
            }
            assert_eq!(g.check(2.0, 10), None);
        }
        // A large but finite learning rate on digits (the CLI's default
        // network, with BN) is stopped, while the default rate trains.
        let (train, _) = digits();
        let mut t =
            Trainer::new(preset("digits-mlp").unwrap(), Init::He, cfg(32, 1e6, 1), 1).unwrap();
        let err = (0..200)
            .find_map(|_| t.train_step(&train).err())
            .expect("lr 1e6 diverges within 200 steps");
        assert!(matches!(err, TrainError::Diverged { .. }), "{err}");
        let mut t =
            Trainer::new(preset("digits-mlp").unwrap(), Init::He, cfg(32, 1.0, 1), 1).unwrap();
        for _ in 0..300 {
            t.train_step(&train).unwrap();
        }
    }

    #[test]
    fn bad_settings_are_config_errors() {
        let bad = |c: TrainConfig| match Trainer::new(preset("digits-mlp").unwrap(), Init::He, c, 1)
        {
            Err(TrainError::Config(m)) => m,
            Err(e) => panic!("expected a config error, got {e}"),
            Ok(_) => panic!("accepted {c:?}"),
        };
        for batch in [0, 1] {
            assert!(bad(cfg(batch, 0.1, 1)).contains("batch"));
        }
        for lr in [-0.1, f32::NAN, f32::INFINITY] {
            bad(cfg(32, lr, 1));
        }
        for momentum in [1.0, -0.1, 1.5, f32::NAN] {
            let mut c = cfg(32, 0.1, 1);
            c.momentum = momentum;
            bad(c);
        }
        let mut c = cfg(32, 0.1, 1);
        c.weight_decay = -1.0;
        bad(c);
        // The message says what is wrong.
        let e = TrainError::Config(bad(cfg(32, -1.0, 1))).to_string();
        assert!(e.starts_with("invalid training settings: "), "{e}");
        // A zero rate learns nothing: refused, saying so.
        assert!(bad(cfg(32, 0.0, 1)).contains("learning rate must be positive"));
        // Edge values that are valid.
        let mut c = cfg(2, f32::MIN_POSITIVE, 1);
        c.momentum = 0.0;
        assert!(Trainer::new(preset("digits-mlp").unwrap(), Init::He, c, 1).is_ok());
    }

    #[test]
    fn data_that_does_not_fit_the_network_is_a_mismatch() {
        let (train, _) = digits();
        let mut t = Trainer::new(tiny(), Init::He, cfg(4, 0.1, 1), 1).unwrap();
        let e = t.train_step(&train).unwrap_err();
        assert!(
            matches!(e, TrainError::Network(_) | TrainError::Mismatch(_)),
            "{e}"
        );
        let e = check_data(&t.net, &train).unwrap_err().to_string();
        assert!(e.contains("8x8x1") && e.contains("1x1x1"), "{e}");
        // More classes in the data than the network outputs.
        let three =
            Dataset::new("three", vec![0.0; 4], vec![0, 1, 2, 0], [1, 1, 1], 3, 1.0).unwrap();
        let e = check_data(&t.net, &three).unwrap_err().to_string();
        assert!(e.contains("3 classes") && e.contains("outputs 2"), "{e}");
        // Fewer samples than one batch.
        let e = t.train_step(&numbered(3)).unwrap_err().to_string();
        assert!(e.contains("fewer than one batch of 4"), "{e}");
    }

    #[test]
    fn evaluation_batches_the_whole_set_and_changes_nothing() {
        let (train, test) = digits();
        let mut t =
            Trainer::new(preset("digits-cnn").unwrap(), Init::He, cfg(16, 0.05, 1), 1).unwrap();
        for _ in 0..20 {
            t.train_step(&train).unwrap();
        }
        let state = state_bits(&t);
        let mut calls = 0;
        let mut seen = 0;
        let mut probe = |ws: &Workspace| {
            calls += 1;
            seen += ws.logits().len() / 10;
        };
        let e = t.evaluate(&train, Some(&mut probe)).unwrap();
        assert_eq!(
            (calls, seen),
            (train.len().div_ceil(EVAL_BATCH), train.len())
        );
        assert_eq!(e.samples, train.len());
        assert!((0.0..=1.0).contains(&e.accuracy) && e.loss.is_finite() && e.loss > 0.0);
        assert_eq!(
            state,
            state_bits(&t),
            "evaluation changed the training state"
        );
        let again = t.evaluate(&test, None).unwrap();
        assert_eq!(again, t.evaluate(&test, None).unwrap());
    }
}
