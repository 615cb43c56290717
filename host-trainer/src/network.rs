//! A trainable sequential network on the host, built on core's layer math.
//!
//! The layer math is core's (`normcore`), called directly or through the
//! host's equivalents in [`hostops`]: max pooling that records its argmax;
//! BN, ReLU, sigmoid and the SGD update as core's loops built for AVX-512
//! and AVX2 too (the same arithmetic, core's bits on one thread);
//! convolutions lowered one cache-sized part at a time, and narrow ones
//! (a first layer) computed directly, whose weight gradients (and the
//! narrow ones' outputs) sum in another order than core's product. This
//! module owns the buffers (parameters, gradients,
//! momenta, running statistics, activations) and spreads work over threads:
//! each thread runs a batch-separable layer on a contiguous slice of the
//! batch, and weight gradients (sums over the batch) are reduced from
//! per-thread partials in a fixed order. BN, whose statistics couple the
//! samples, is split the same way in two phases: per-thread partial sums
//! added in thread order (mean, then variance about it; in backward, `Σdy`
//! and `Σdy·x̂`), then the elementwise pass on every thread. So a run is
//! deterministic for a given thread count, and differs between thread
//! counts only by the reassociation of those sums. Dropout sees the whole
//! batch on one thread (its random draws follow the sample order).

use crate::fastgemm::FastGemm;
use crate::hostops;
use crate::spec::{Hwc, NetworkSpec, Op, Resolved, SpecError};
use normcore::batchnorm::BnState;
use normcore::layers::{self, Activation};
use normcore::{Error as CoreError, Rng, Sgd, View, ViewMut};
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// How weights are initialised (biases start at 0, BN at γ = 1, β = 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// `N(0, std²)`: the paper's "small random Gaussian values" (Sec. 4.1).
    Gaussian {
        /// Standard deviation.
        std: f32,
    },
    /// Glorot/Xavier normal, `std = sqrt(2 / (fan_in + fan_out))`.
    Xavier,
    /// He/Kaiming normal, `std = sqrt(2 / fan_in)`, for ReLU networks.
    He,
}

/// The largest `gaussian:STD` accepted: beyond it the first layer saturates
/// or overflows whatever the data.
pub const MAX_INIT_STD: f32 = 10.0;

impl std::str::FromStr for Init {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "xavier" | "glorot" => Ok(Init::Xavier),
            "he" | "kaiming" => Ok(Init::He),
            _ => {
                let std = s
                    .strip_prefix("gaussian:")
                    .and_then(|v| v.parse::<f32>().ok())
                    .filter(|v| *v > 0.0 && *v <= MAX_INIT_STD)
                    .ok_or_else(|| {
                        format!(
                            "unknown init `{s}`: use he, xavier or gaussian:STD with \
                             0 < STD <= {MAX_INIT_STD} (e.g. gaussian:0.05)"
                        )
                    })?;
                Ok(Init::Gaussian { std })
            }
        }
    }
}

impl std::fmt::Display for Init {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Init::Gaussian { std } => write!(f, "gaussian:{std}"),
            Init::Xavier => f.write_str("xavier"),
            Init::He => f.write_str("he"),
        }
    }
}

/// One layer: its resolved op and shapes, and its state.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Operation and per-sample shapes.
    pub r: Resolved,
    /// Weights then bias (dense, conv, depthwise) or γ then β (BN).
    pub params: Vec<f32>,
    /// `∂L/∂params` of the last backward pass.
    pub grads: Vec<f32>,
    /// SGD momentum buffer.
    pub velocity: Vec<f32>,
    /// BN population mean (empty for other layers).
    pub running_mean: Vec<f32>,
    /// BN population variance, unbiased (empty for other layers).
    pub running_var: Vec<f32>,
}

impl Layer {
    /// The weight part of the parameters (γ for BN).
    pub fn weights(&self) -> &[f32] {
        &self.params[..self.r.op.weight_len()]
    }
    /// The bias part (β for BN); empty when the layer has none.
    pub fn bias(&self) -> &[f32] {
        &self.params[self.r.op.weight_len()..]
    }
    fn bias_opt(&self) -> Option<&[f32]> {
        let b = self.bias();
        (!b.is_empty()).then_some(b)
    }
    /// BN inference state (only meaningful for BN layers).
    pub fn bn_state(&self) -> Option<BnState<'_>> {
        match self.r.op {
            Op::BatchNorm(bn) => Some(BnState {
                gamma: self.weights(),
                beta: self.bias(),
                mean: &self.running_mean,
                var: &self.running_var,
                eps: bn.config().eps,
            }),
            _ => None,
        }
    }
}

/// A network: its description and its layers' state.
#[derive(Debug, Clone)]
pub struct Network {
    /// The description it was built from.
    pub spec: NetworkSpec,
    /// The layers.
    pub layers: Vec<Layer>,
}

/// Training (batch statistics, dropout active) or inference.
#[derive(Debug)]
pub enum Mode<'a> {
    /// Training: BN uses batch statistics and updates its running ones;
    /// dropout draws from the generator.
    Train(&'a mut Rng),
    /// Inference: BN uses population statistics; dropout is the identity.
    Eval,
}

/// Per-thread buffers.
#[derive(Debug, Default)]
struct ThreadBufs {
    scratch: Vec<f32>,
    partial: Vec<f32>,
    /// A convolution's im2col lowering, one part of the batch at a time
    /// ([`hostops::conv_lowering_len`]; `scratch`, [`hostops::conv_scratch_len`],
    /// is its input gradient's).
    lowering: Vec<f32>,
}

/// Activation and gradient buffers for batches of up to `capacity` samples.
#[derive(Debug)]
pub struct Workspace {
    capacity: usize,
    threads: usize,
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
    acts: Vec<Vec<f32>>,
    grad: [Vec<f32>; 2],
    probs: Vec<f32>,
    saved_mean: Vec<Vec<f32>>,
    saved_inv_std: Vec<Vec<f32>>,
    masks: Vec<Vec<u8>>,
    /// Per max-pool layer: the argmax of every output of the last forward
    /// pass ([`hostops::maxpool_forward`]); empty for other layers.
    pool_args: Vec<Vec<u32>>,
    /// Per layer: whether the last forward pass fused this BN layer with
    /// the ReLU after it ([`hostops::bn_forward_train`] wrote the ReLU's
    /// output; the BN's own output buffer was left untouched), so that the
    /// backward pass fuses them too.
    relu_fused: Vec<bool>,
    bufs: Vec<ThreadBufs>,
    /// Per-layer work below which a layer runs on one thread
    /// ([`PAR_MIN_WORK`]; lowered by tests to exercise the threaded paths).
    par_min_work: usize,
    /// Per layer, wall time spent in its forward (`[0]`) and backward
    /// (`[1]`) pass since [`Workspace::time_layers`] switched timing on;
    /// empty while it is off.
    layer_times: Vec<[Duration; 2]>,
    /// Samples in the last forward pass.
    n: usize,
}

/// Errors from running a network.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The description does not chain.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A core kernel rejected its inputs (a bug in this module if it happens).
    #[error("layer {layer}: {error}")]
    Kernel {
        /// 1-based layer index.
        layer: usize,
        /// The kernel's error (in the message, not a `source`: an error
        /// chain would print it twice).
        error: CoreError,
    },
    /// A BN layer's running variance is NaN or negative: the statistics
    /// of a run that diverged.
    #[error(
        "layer {0} (batchnorm) diverged: its running variance is NaN or negative; \
         train again with a lower learning rate"
    )]
    Diverged(usize),
    /// A batch larger than the workspace or of the wrong sample size.
    #[error("batch of {n} samples of {len} values does not fit a workspace for {capacity} samples of {expected}")]
    Batch {
        /// Samples given.
        n: usize,
        /// Values per sample given.
        len: usize,
        /// Workspace capacity.
        capacity: usize,
        /// Values per sample expected.
        expected: usize,
    },
    /// The thread pool could not be created.
    #[error("cannot start {0} threads: {1}")]
    Threads(usize, String),
    /// The network (or its workspace) needs more memory than there is.
    #[error("{0}")]
    Memory(String),
}

/// Bytes of memory this machine has available for a new allocation:
/// `MemAvailable` of `/proc/meminfo` (Linux); `None` elsewhere.
pub fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line
        .trim_start_matches("MemAvailable:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kb.checked_mul(1024)
}

/// Check, before allocating, that `layers` fit in memory: per layer, its
/// parameters, gradients and momenta (plus BN statistics) and, for a
/// workspace of `capacity` samples, its activations (twice for dropout's
/// masks, plus the two gradient buffers). Sizes are computed in `u128`
/// with saturation, so no size overflows. Refuses when the total exceeds
/// what the machine has available ([`available_memory`]) or what one
/// allocation can address, naming the largest layer and the bytes.
pub fn check_memory(
    spec: &NetworkSpec,
    layers: &[Resolved],
    capacity: usize,
    threads: usize,
) -> Result<(), NetworkError> {
    const F32: u128 = 4;
    let cap = capacity as u128;
    let len = |h: Hwc| {
        (h.h as u128)
            .saturating_mul(h.w as u128)
            .saturating_mul(h.c as u128)
    };
    let mut total: u128 = 0;
    let mut largest = (0usize, 0u128);
    let mut max_act: u128 = layers.first().map_or(0, |r| len(r.input));
    for (i, r) in layers.iter().enumerate() {
        let params = r.op.checked_param_len().map_or(u128::MAX, |n| n as u128);
        let bn = match r.op {
            Op::BatchNorm(bn) => 2 * bn.channels() as u128,
            _ => 0,
        };
        let out = len(r.output);
        max_act = max_act.max(out);
        let dropout = u128::from(matches!(r.op, Op::Dropout(_)));
        // What the workspace keeps per layer beyond its activations: a max
        // pool's argmax (`pool_args`: a u32 per output). A convolution's
        // lowering and the lowering's gradient are per-thread scratch, one
        // part of a batch at a time (`ThreadBufs::lowering` and `scratch`,
        // about 512 KiB each unless one sample's is larger): counted here
        // for every convolution and every thread, which bounds the largest.
        let kept = match r.op {
            Op::Pool(p) if hostops::maxpool_supported(&p) => out.saturating_mul(4),
            _ => 0,
        };
        let lowering = match r.op {
            Op::Conv { op, .. } => (hostops::conv_lowering_len(&op, capacity) as u128)
                .saturating_add(hostops::conv_scratch_len(&op, capacity) as u128)
                .saturating_mul(F32)
                .saturating_mul(threads as u128),
            _ => 0,
        };
        let bytes = params
            .saturating_mul(3)
            .saturating_add(bn)
            .saturating_mul(F32)
            .saturating_add(cap.saturating_mul(out).saturating_mul(F32 + dropout))
            .saturating_add(cap.saturating_mul(kept))
            .saturating_add(lowering);
        if bytes > largest.1 {
            largest = (i, bytes);
        }
        total = total.saturating_add(bytes);
    }
    total = total.saturating_add(cap.saturating_mul(max_act).saturating_mul(2 * F32));
    let available = available_memory();
    let limit = available.map_or(isize::MAX as u128, |a| {
        u128::from(a).min(isize::MAX as u128)
    });
    if total <= limit {
        return Ok(());
    }
    let show = |b: u128| {
        if b == u128::MAX {
            "more than 2^128".to_string()
        } else {
            b.to_string()
        }
    };
    let what = if capacity > 0 {
        format!(" with batches of {capacity}")
    } else {
        String::new()
    };
    let (i, bytes) = largest;
    let kind = spec.layers.get(i).map_or("layer", |l| l.kind());
    Err(NetworkError::Memory(format!(
        "the network needs about {} bytes of memory{what}, layer {} ({kind}) alone {} bytes, \
         but this machine has {}: make the network smaller",
        show(total),
        i + 1,
        show(bytes),
        match available {
            Some(a) => format!("{a} bytes available (MemAvailable in /proc/meminfo)"),
            None => format!("at most {} bytes in one allocation", isize::MAX),
        }
    )))
}

fn kernel(layer: usize) -> impl Fn(CoreError) -> NetworkError {
    move |error| NetworkError::Kernel {
        layer: layer + 1,
        error,
    }
}

/// Split the first `n` samples of `data` (each `per` values) into `t`
/// contiguous chunks; returns (first sample, chunk) pairs.
fn chunks_mut<T>(data: &mut [T], n: usize, per: usize, t: usize) -> Vec<(usize, &mut [T])> {
    let mut out = Vec::with_capacity(t);
    let mut rest = &mut data[..n * per];
    let mut start = 0;
    for i in 0..t {
        let end = (i + 1) * n / t;
        let (head, tail) = rest.split_at_mut((end - start) * per);
        if end > start {
            out.push((start, head));
        }
        rest = tail;
        start = end;
    }
    out
}

impl Network {
    /// Build a network from its description with freshly initialised weights.
    pub fn new(spec: NetworkSpec, init: Init, rng: &mut Rng) -> Result<Self, NetworkError> {
        let resolved = spec.resolve()?;
        check_memory(&spec, &resolved, 0, 1)?;
        let layers = resolved
            .into_iter()
            .map(|r| {
                let n = r.op.param_len();
                let mut params = vec![0.0f32; n];
                let (mut running_mean, mut running_var) = (Vec::new(), Vec::new());
                match r.op {
                    Op::BatchNorm(bn) => {
                        params[..bn.channels()].fill(1.0);
                        running_mean = vec![0.0; bn.channels()];
                        running_var = vec![1.0; bn.channels()];
                    }
                    Op::Dense { .. } | Op::Conv { .. } | Op::Depthwise { .. } => {
                        let (fan_in, fan_out) = fans(&r);
                        let std = match init {
                            Init::Gaussian { std } => std,
                            Init::Xavier => (2.0 / (fan_in + fan_out) as f32).sqrt(),
                            Init::He => (2.0 / fan_in as f32).sqrt(),
                        };
                        for w in &mut params[..r.op.weight_len()] {
                            *w = std * rng.normal();
                        }
                    }
                    _ => {}
                }
                Layer {
                    r,
                    grads: vec![0.0; n],
                    velocity: vec![0.0; n],
                    params,
                    running_mean,
                    running_var,
                }
            })
            .collect();
        Ok(Network { spec, layers })
    }

    /// Input shape of one sample.
    pub fn input(&self) -> Hwc {
        let [h, w, c] = self.spec.input;
        Hwc { h, w, c }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.spec.classes
    }

    /// Total trainable parameters.
    pub fn param_count(&self) -> usize {
        self.layers.iter().map(|l| l.params.len()).sum()
    }

    /// Multiply-accumulates per sample, forward.
    pub fn macs(&self) -> usize {
        self.layers.iter().map(|l| l.r.op.macs(l.r.output)).sum()
    }

    /// A workspace for batches of up to `capacity` samples on `threads` threads.
    pub fn workspace(&self, capacity: usize, threads: usize) -> Result<Workspace, NetworkError> {
        let resolved: Vec<Resolved> = self.layers.iter().map(|l| l.r).collect();
        let threads = threads.max(1);
        check_memory(&self.spec, &resolved, capacity, threads)?;
        let pool = if threads > 1 {
            Some(std::sync::Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .map_err(|e| NetworkError::Threads(threads, e.to_string()))?,
            ))
        } else {
            None
        };
        let (mut scratch, mut lowering) = (0, 0);
        let mut partial = 0;
        let mut max_act = self.input().len();
        for (i, l) in self.layers.iter().enumerate() {
            max_act = max_act.max(l.r.output.len());
            partial = partial.max(l.params.len());
            if let Op::Conv { op, .. } = l.r.op {
                // Sized for the whole batch on one thread (a layer too
                // small to split runs there); parts cap them. The first
                // layer's input gradient is never formed.
                lowering = lowering.max(hostops::conv_lowering_len(&op, capacity));
                if i > 0 {
                    scratch = scratch.max(hostops::conv_scratch_len(&op, capacity));
                }
            }
        }
        let bn_len = |l: &Layer| match l.r.op {
            Op::BatchNorm(bn) => bn.channels(),
            _ => 0,
        };
        Ok(Workspace {
            capacity,
            threads,
            pool,
            acts: self
                .layers
                .iter()
                .map(|l| vec![0.0; capacity * l.r.output.len()])
                .collect(),
            grad: [vec![0.0; capacity * max_act], vec![0.0; capacity * max_act]],
            probs: vec![0.0; capacity * self.classes()],
            saved_mean: self.layers.iter().map(|l| vec![0.0; bn_len(l)]).collect(),
            saved_inv_std: self.layers.iter().map(|l| vec![0.0; bn_len(l)]).collect(),
            masks: self
                .layers
                .iter()
                .map(|l| match l.r.op {
                    Op::Dropout(_) => vec![0u8; capacity * l.r.output.len()],
                    _ => Vec::new(),
                })
                .collect(),
            pool_args: self
                .layers
                .iter()
                .map(|l| match l.r.op {
                    Op::Pool(p) if hostops::maxpool_supported(&p) => {
                        vec![0u32; capacity * l.r.output.len()]
                    }
                    _ => Vec::new(),
                })
                .collect(),
            relu_fused: vec![false; self.layers.len()],
            bufs: (0..threads)
                .map(|_| ThreadBufs {
                    scratch: vec![0.0; scratch],
                    // Per-thread weight gradients (with threads) and BN's
                    // partial sums (always).
                    partial: vec![0.0; partial],
                    lowering: vec![0.0; lowering],
                })
                .collect(),
            par_min_work: PAR_MIN_WORK,
            layer_times: Vec::new(),
            n: 0,
        })
    }

    /// Forward pass over `n` samples in `x` (`n · input.len()` values, NHWC).
    /// Returns the logits, `[n, classes]`.
    pub fn forward<'w>(
        &mut self,
        ws: &'w mut Workspace,
        x: &[f32],
        mode: Mode<'_>,
    ) -> Result<&'w [f32], NetworkError> {
        let per = self.input().len();
        let n = x.len() / per.max(1);
        if n > ws.capacity || n * per != x.len() {
            return Err(NetworkError::Batch {
                n,
                len: x.len().checked_div(n).unwrap_or(0),
                capacity: ws.capacity,
                expected: per,
            });
        }
        ws.n = n;
        let mut rng = match mode {
            Mode::Train(r) => Some(r),
            Mode::Eval => None,
        };
        ws.relu_fused.fill(false);
        let mut skip = false;
        let mut clock = None;
        for i in 0..self.layers.len() {
            lap(&mut ws.layer_times, &mut clock, Some(i), 0);
            if std::mem::take(&mut skip) {
                // A ReLU whose output its BN layer wrote.
                continue;
            }
            // In training, BN followed by ReLU runs as one pass (the BN
            // output is read by nothing else).
            let fuse_relu = rng.is_some()
                && matches!(
                    self.layers.get(i + 1).map(|l| l.r.op),
                    Some(Op::Act(Activation::Relu))
                );
            let (before, after) = ws.acts.split_at_mut(i);
            let xin: &[f32] = if i == 0 { x } else { &before[i - 1] };
            let layer = &mut self.layers[i];
            let r = layer.r;
            let xin = &xin[..n * r.input.len()];
            let (cur, next) = after.split_at_mut(1);
            let yout = &mut cur[0][..n * r.output.len()];
            let err = kernel(i);
            match r.op {
                Op::BatchNorm(bn) => {
                    let xs = r.input.batch(n);
                    if rng.is_some() {
                        // Host BN: one range per thread, exactly core's
                        // kernel (same sums, same bits) on one thread.
                        let parallel = worth_parallel(r, n, ws.threads, ws.par_min_work);
                        let t = if parallel { ws.threads } else { 1 };
                        let pool = ws.pool.as_deref().filter(|_| parallel);
                        let wl = r.op.weight_len();
                        let cfg = bn.config();
                        if n * r.input.len() < 2 * bn.channels() {
                            return Err(err(CoreError::BatchTooSmall {
                                needed: 2,
                                actual: n * r.input.len() / bn.channels(),
                            }));
                        }
                        let (y, fused) = match next.first_mut() {
                            Some(relu_out) if fuse_relu => {
                                (&mut relu_out[..n * r.output.len()], true)
                            }
                            _ => (yout, false),
                        };
                        hostops::bn_forward_train(
                            pool,
                            &hostops::split(n, t),
                            &mut ws.bufs,
                            (r.input.len(), bn.channels()),
                            xin,
                            layer.params.split_at(wl),
                            y,
                            (&mut ws.saved_mean[i], &mut ws.saved_inv_std[i]),
                            Some((
                                &mut layer.running_mean,
                                &mut layer.running_var,
                                cfg.momentum,
                            )),
                            cfg.eps,
                            fused,
                        );
                        ws.relu_fused[i] = fused;
                        skip = fused;
                    } else {
                        let state = layer.bn_state().ok_or(NetworkError::Kernel {
                            layer: i + 1,
                            error: CoreError::InvalidParam(normcore::Param::Dimension),
                        })?;
                        bn.forward_eval(
                            View::new(xs, xin).map_err(&err)?,
                            &state,
                            ViewMut::new(xs, yout).map_err(&err)?,
                        )
                        .map_err(|e| match e {
                            CoreError::InvalidParam(normcore::Param::Variance) => {
                                NetworkError::Diverged(i + 1)
                            }
                            e => err(e),
                        })?;
                    }
                }
                Op::Dropout(d) => match rng.as_deref_mut() {
                    Some(rng) => d
                        .forward_train(xin, yout, &mut ws.masks[i][..xin.len()], rng)
                        .map_err(&err)?,
                    None => yout.copy_from_slice(xin),
                },
                Op::Flatten => yout.copy_from_slice(xin),
                op => {
                    let layer = &self.layers[i];
                    let run = |(start, y, arg): Chunk<'_>, bufs: &mut ThreadBufs| {
                        let m = y.len() / r.output.len();
                        let xc = &xin[start * r.input.len()..(start + m) * r.input.len()];
                        forward_chunk(layer, op, r, m, xc, y, arg, &mut bufs.lowering).map_err(&err)
                    };
                    let parallel = worth_parallel(r, n, ws.threads, ws.par_min_work);
                    let t = if parallel { ws.threads } else { 1 };
                    let chunks = chunks_mut(yout, n, r.output.len(), t);
                    let args = &mut ws.pool_args[i];
                    let arg_per = if args.is_empty() { 0 } else { r.output.len() };
                    let arg_chunks = chunks_mut(args, n, arg_per, t);
                    let chunks: Vec<Chunk<'_>> = chunks
                        .into_iter()
                        .zip(arg_chunks)
                        .map(|((start, y), (_, a))| (start, y, a))
                        .collect();
                    match &ws.pool {
                        Some(pool) if parallel => pool.install(|| {
                            chunks
                                .into_par_iter()
                                .zip(ws.bufs.par_iter_mut())
                                .try_for_each(|(c, b)| run(c, b))
                        })?,
                        _ => {
                            for c in chunks {
                                run(c, &mut ws.bufs[0])?;
                            }
                        }
                    }
                }
            }
        }
        lap(&mut ws.layer_times, &mut clock, None, 0);
        Ok(ws.logits())
    }

    /// A training step's passes: [`Network::forward`] in training mode on
    /// `x`, then [`Network::backward`] against `labels`; returns the mean
    /// loss. When some layer splits this batch over the workspace's
    /// threads, both passes run inside its pool ([`Workspace::in_pool`]);
    /// otherwise on this thread (entering the pool costs a wake-up, about
    /// a third of a paper-MLP step on a 2-core VM).
    pub fn train_pass(
        &mut self,
        ws: &mut Workspace,
        x: &[f32],
        labels: &[u16],
        noise: &mut Rng,
    ) -> Result<f32, NetworkError> {
        let n = x.len() / self.input().len().max(1);
        let splits = self
            .layers
            .iter()
            .any(|l| worth_parallel(l.r, n, ws.threads, ws.par_min_work));
        let mut pass = |ws: &mut Workspace| {
            self.forward(ws, x, Mode::Train(noise))?;
            self.backward(ws, x, labels)
        };
        if splits {
            ws.in_pool(pass)
        } else {
            pass(ws)
        }
    }

    /// Softmax cross-entropy of the last forward pass against `labels`, then
    /// the backward pass: every layer's `grads` hold `∂L/∂params`. `x` is the
    /// input of that forward pass. Returns the mean loss.
    pub fn backward(
        &mut self,
        ws: &mut Workspace,
        x: &[f32],
        labels: &[u16],
    ) -> Result<f32, NetworkError> {
        let n = ws.n;
        if x.len() != n * self.input().len() {
            return Err(NetworkError::Batch {
                n,
                len: x.len().checked_div(n).unwrap_or(0),
                capacity: ws.capacity,
                expected: self.input().len(),
            });
        }
        let k = self.classes();
        let last = self.layers.len() - 1;
        // The loss counts as the last layer's backward pass.
        let mut clock = None;
        lap(&mut ws.layer_times, &mut clock, Some(last), 1);
        let err_loss = kernel(last);
        let loss = layers::loss::softmax_cross_entropy(
            &ws.acts[last][..n * k],
            labels,
            k,
            &mut ws.probs[..n * k],
        )
        .map_err(&err_loss)?;
        layers::loss::softmax_cross_entropy_backward(
            &ws.probs[..n * k],
            labels,
            k,
            &mut ws.grad[0][..n * k],
        )
        .map_err(&err_loss)?;
        let mut cur = 0; // ws.grad[cur] holds ∂L/∂(output of layer i)
        for i in (0..self.layers.len()).rev() {
            if i != last {
                lap(&mut ws.layer_times, &mut clock, Some(i), 1);
            }
            if i > 0 && ws.relu_fused[i - 1] {
                // This ReLU's backward runs inside its BN layer's.
                continue;
            }
            let r = self.layers[i].r;
            // The first layer's input gradient is never needed.
            let need_dx = i > 0;
            if !need_dx && r.op.param_len() == 0 {
                break;
            }
            let [g0, g1] = &mut ws.grad;
            let (dy_buf, dx_buf) = if cur == 0 { (&*g0, g1) } else { (&*g1, g0) };
            let dy = &dy_buf[..n * r.output.len()];
            let dx = &mut dx_buf[..n * r.input.len()];
            let xin: &[f32] = if i == 0 { x } else { &ws.acts[i - 1] };
            let xin = &xin[..n * r.input.len()];
            let yout = &ws.acts[i][..n * r.output.len()];
            let err = kernel(i);
            let layer = &mut self.layers[i];
            match r.op {
                Op::BatchNorm(bn) => {
                    // Host BN, split as in forward (core's bits on one thread).
                    let parallel = worth_parallel(r, n, ws.threads, ws.par_min_work);
                    let t = if parallel { ws.threads } else { 1 };
                    let wl = r.op.weight_len();
                    hostops::bn_backward(
                        ws.pool.as_deref().filter(|_| parallel),
                        &hostops::split(n, t),
                        &mut ws.bufs,
                        (r.input.len(), bn.channels()),
                        xin,
                        &layer.params[..wl],
                        (&ws.saved_mean[i], &ws.saved_inv_std[i]),
                        dy,
                        ws.relu_fused[i].then(|| &ws.acts[i + 1][..n * r.output.len()]),
                        dx,
                        layer.grads.split_at_mut(wl),
                    );
                }
                Op::Dropout(d) => d.backward(dy, &ws.masks[i][..dy.len()], dx).map_err(&err)?,
                Op::Flatten => dx.copy_from_slice(dy),
                op => {
                    let plen = r.op.param_len();
                    let wl = r.op.weight_len();
                    let (weights, grads) = (&layer.params[..wl], &mut layer.grads);
                    let args = &ws.pool_args[i];
                    let run = |start: usize,
                               m: usize,
                               dxc: Option<&mut [f32]>,
                               g: Option<&mut [f32]>,
                               scratch: &mut [f32],
                               lowering: &mut [f32]| {
                        let (xi, yo) = (r.input.len(), r.output.len());
                        let arg = if args.is_empty() {
                            &args[..]
                        } else {
                            &args[start * yo..(start + m) * yo]
                        };
                        backward_chunk(
                            op,
                            r,
                            m,
                            weights,
                            &xin[start * xi..(start + m) * xi],
                            &yout[start * yo..(start + m) * yo],
                            &dy[start * yo..(start + m) * yo],
                            arg,
                            lowering,
                            dxc,
                            g,
                            scratch,
                        )
                        .map_err(&err)
                    };
                    match &ws.pool {
                        Some(pool) if worth_parallel(r, n, ws.threads, ws.par_min_work) => {
                            let chunks = chunks_mut(dx, n, r.input.len(), ws.threads);
                            pool.install(|| {
                                chunks
                                    .into_par_iter()
                                    .zip(ws.bufs.par_iter_mut())
                                    .try_for_each(|((start, dxc), b)| {
                                        let m = dxc.len() / r.input.len();
                                        let ThreadBufs {
                                            scratch,
                                            partial,
                                            lowering,
                                        } = b;
                                        let g = (plen > 0).then_some(&mut partial[..plen]);
                                        run(start, m, need_dx.then_some(dxc), g, scratch, lowering)
                                    })
                            })?;
                            if plen > 0 {
                                // Fixed-order reduction: deterministic for a given thread count.
                                grads.copy_from_slice(&ws.bufs[0].partial[..plen]);
                                for b in &ws.bufs[1..] {
                                    for (g, p) in grads.iter_mut().zip(&b.partial[..plen]) {
                                        *g += p;
                                    }
                                }
                            }
                        }
                        _ => {
                            let g = (plen > 0).then_some(&mut grads[..]);
                            let b = &mut ws.bufs[0];
                            run(
                                0,
                                n,
                                need_dx.then_some(dx),
                                g,
                                &mut b.scratch,
                                &mut b.lowering,
                            )?;
                        }
                    }
                }
            }
            cur = 1 - cur;
        }
        lap(&mut ws.layer_times, &mut clock, None, 1);
        Ok(loss)
    }

    /// One SGD update of every parameter from the last backward pass. Weight
    /// decay applies to dense/conv/depthwise weights only, not to biases or
    /// BN's γ and β. Returns the first layer (1-based) whose parameters
    /// are not all finite after the update, if any (every layer is updated
    /// all the same).
    pub fn sgd_step(&mut self, opt: &Sgd) -> Result<Option<usize>, NetworkError> {
        let mut non_finite = None;
        for (i, l) in self.layers.iter_mut().enumerate() {
            if l.params.is_empty() {
                continue;
            }
            let wl = l.r.op.weight_len();
            let decay_weights = !matches!(l.r.op, Op::BatchNorm(_));
            let (pw, pb) = l.params.split_at_mut(wl);
            let (gw, gb) = l.grads.split_at(wl);
            let (vw, vb) = l.velocity.split_at_mut(wl);
            let weights = hostops::sgd_update(opt, pw, gw, vw, (!decay_weights).then_some(0.0))
                .map_err(kernel(i))?;
            let bias = hostops::sgd_update(opt, pb, gb, vb, Some(0.0)).map_err(kernel(i))?;
            if !(weights && bias) {
                non_finite.get_or_insert(i + 1);
            }
        }
        Ok(non_finite)
    }
}

/// Work (samples × per-sample MACs or elements) below which a layer runs on
/// one thread: waking the pool costs more than it saves. Measured with
/// `normcore bench`: splitting the paper MLP's layers (at most 60 × 78,400 =
/// 4.7M) over 2 threads made a step slower (0.64 s vs 0.41 s per 1,000
/// steps), while the CNN's convolutions (15M and 52M) gain.
const PAR_MIN_WORK: usize = 8 << 20;

/// How many times [`PAR_MIN_WORK`] exceeds the number of elements above
/// which a layer without a product (BN, activation, pooling) is split over
/// the threads: 8 Mi / 128 = 64 Ki elements, which the CNN's BN, ReLU and
/// pooling layers reach (64 samples of 9,216 or 2,048 values) and the paper
/// MLP's (60 x 100) do not. Splitting them is what lets a second thread
/// speed up the whole step, not only the convolutions.
const ELEMENTWISE_DIVISOR: usize = 128;

/// Whether a layer's work on `n` samples is worth splitting over `threads`.
fn worth_parallel(r: Resolved, n: usize, threads: usize, min_work: usize) -> bool {
    let macs = r.op.macs(r.output);
    let (per_sample, min_work) = if macs == 0 {
        (r.input.len(), min_work / ELEMENTWISE_DIVISOR)
    } else {
        (macs.max(r.input.len()), min_work)
    };
    threads > 1 && n >= threads && n * per_sample >= min_work
}

fn fans(r: &Resolved) -> (usize, usize) {
    match r.op {
        Op::Dense { op, .. } => (op.inputs, op.outputs),
        Op::Conv { op, .. } => {
            let k = op.window.kernel_h * op.window.kernel_w;
            (k * op.in_c, k * op.out_c)
        }
        Op::Depthwise { op, .. } => {
            let k = op.window.kernel_h * op.window.kernel_w;
            (k, k)
        }
        _ => (1, 1),
    }
}

/// One thread's share of a forward pass: first sample, output and max-pool
/// argmax (empty for other layers).
type Chunk<'a> = (usize, &'a mut [f32], &'a mut [u32]);

/// Forward of a batch-separable layer on `m` samples.
fn forward_chunk(
    layer: &Layer,
    op: Op,
    r: Resolved,
    m: usize,
    x: &[f32],
    y: &mut [f32],
    arg: &mut [u32],
    lowering: &mut [f32],
) -> Result<(), CoreError> {
    let xs = r.input.batch(m);
    let ys = r.output.batch(m);
    let xv = View::new(xs, x)?;
    match op {
        Op::Dense { op, .. } => op.forward(
            &FastGemm,
            xv,
            layer.weights(),
            layer.bias_opt(),
            ViewMut::new(ys, y)?,
        ),
        // The views check the activations' shapes, hostops the rest.
        Op::Conv { op, .. } => hostops::conv_forward(
            &op,
            xv.data(),
            layer.weights(),
            layer.bias_opt(),
            ViewMut::new(ys, y)?.into_data(),
            lowering,
        ),
        Op::Depthwise { op, .. } => {
            op.forward(xv, layer.weights(), layer.bias_opt(), ViewMut::new(ys, y)?)
        }
        Op::Act(Activation::Relu) if x.len() == y.len() => {
            hostops::relu_forward(x, y);
            Ok(())
        }
        Op::Act(Activation::Sigmoid) if x.len() == y.len() => {
            hostops::sigmoid_forward(x, y);
            Ok(())
        }
        Op::Act(a) => a.forward(x, y),
        Op::Pool(p) if !arg.is_empty() => {
            // The views check the shapes; the arguments fill `arg` exactly.
            let yv = ViewMut::new(ys, y)?;
            hostops::maxpool_forward(&p, xv.data(), yv.into_data(), arg);
            Ok(())
        }
        Op::Pool(p) => p.forward(xv, ViewMut::new(ys, y)?),
        Op::GlobalAvgPool => layers::global_avg_pool_forward(xv, ViewMut::new(ys, y)?),
        Op::BatchNorm(_) | Op::Dropout(_) | Op::Flatten => Ok(()),
    }
}

/// Backward of a batch-separable layer on `m` samples: `dx` (if wanted) and
/// the parameter gradients of this chunk (weights then bias) into `grads`.
fn backward_chunk(
    op: Op,
    r: Resolved,
    m: usize,
    weights: &[f32],
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    arg: &[u32],
    cols: &mut [f32],
    dx: Option<&mut [f32]>,
    grads: Option<&mut [f32]>,
    scratch: &mut [f32],
) -> Result<(), CoreError> {
    let xs = r.input.batch(m);
    let ys = r.output.batch(m);
    let dxv = match dx {
        Some(d) => Some(ViewMut::named(normcore::Operand::InputGrad, xs, d)?),
        None => None,
    };
    let (dw, db) = match grads {
        Some(g) => {
            let (w, b) = g.split_at_mut(op.weight_len());
            (Some(w), (!b.is_empty()).then_some(b))
        }
        None => (None, None),
    };
    let mut empty: [f32; 0] = [];
    let dw = dw.unwrap_or(&mut empty);
    match op {
        Op::Dense { op, .. } => op.backward(
            &FastGemm,
            View::new(xs, x)?,
            weights,
            View::new(ys, dy)?,
            dxv,
            dw,
            db,
        ),
        Op::Conv { op, .. } => {
            View::new(xs, x)?;
            View::new(ys, dy)?;
            hostops::conv_backward(
                &op,
                x,
                cols,
                weights,
                dy,
                dxv.map(ViewMut::into_data),
                dw,
                db,
                scratch,
            )
        }
        Op::Depthwise { op, .. } => {
            op.backward(View::new(xs, x)?, weights, View::new(ys, dy)?, dxv, dw, db)
        }
        Op::Act(a) => match dxv {
            Some(mut d) if a == Activation::Relu && y.len() == dy.len() => {
                hostops::relu_backward(y, dy, d.data_mut());
                Ok(())
            }
            Some(mut d) if a == Activation::Sigmoid && y.len() == dy.len() => {
                hostops::sigmoid_backward(y, dy, d.data_mut());
                Ok(())
            }
            Some(mut d) => a.backward(y, dy, d.data_mut()),
            None => Ok(()),
        },
        Op::Pool(p) => match dxv {
            Some(d) if !arg.is_empty() => {
                View::new(ys, dy)?;
                hostops::maxpool_backward(&p, dy, arg, d.into_data());
                Ok(())
            }
            Some(d) => p.backward(View::new(xs, x)?, View::new(ys, dy)?, d),
            None => Ok(()),
        },
        Op::GlobalAvgPool => match dxv {
            Some(d) => layers::global_avg_pool_backward(View::new(ys, dy)?, d),
            None => Ok(()),
        },
        Op::BatchNorm(_) | Op::Dropout(_) | Op::Flatten => Ok(()),
    }
}

impl hostops::Partial for ThreadBufs {
    fn partial(&mut self) -> &mut [f32] {
        &mut self.partial
    }
}

/// Per-layer timing ([`Workspace::time_layers`]): adds the time since the
/// last lap to the layer `clock` names (pass 0 forward, 1 backward), then
/// starts timing `next`. Nothing when timing is off (`times` empty).
fn lap(
    times: &mut [[Duration; 2]],
    clock: &mut Option<(usize, Instant)>,
    next: Option<usize>,
    pass: usize,
) {
    if times.is_empty() {
        return;
    }
    let now = Instant::now();
    if let Some((layer, start)) = clock.take() {
        if let Some(t) = times.get_mut(layer) {
            t[pass] += now - start;
        }
    }
    *clock = next.map(|l| (l, now));
}

impl Workspace {
    /// Switches per-layer timing on (with every total at zero) or off. While
    /// on, [`Workspace::layer_times`] accumulates each layer's wall time in
    /// forward and backward passes (a fused BN + ReLU counts as the BN
    /// layer, the loss as the last layer's backward); `normcore bench
    /// --layers` prints it.
    pub fn time_layers(&mut self, on: bool) {
        self.layer_times = if on {
            vec![[Duration::ZERO; 2]; self.acts.len()]
        } else {
            Vec::new()
        };
    }

    /// Per layer, `[forward, backward]` wall time since timing was switched
    /// on; empty while it is off.
    pub fn layer_times(&self) -> &[[Duration; 2]] {
        &self.layer_times
    }

    /// Runs `f` on this workspace's thread pool (directly when it has
    /// none). A training step runs its forward and backward passes inside
    /// one call: each layer's parallel part then starts from a pool thread,
    /// which hands work to a pool thread that has just finished the last
    /// layer's, instead of waking the pool from outside for every layer
    /// (18 times per step of the `cnn` preset).
    pub fn in_pool<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R {
        match self.pool.clone() {
            Some(pool) => pool.install(|| f(self)),
            None => f(self),
        }
    }

    /// Batch capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Logits of the last forward pass, `[n, classes]`.
    pub fn logits(&self) -> &[f32] {
        let last = self.acts.len() - 1;
        let k = self.probs.len() / self.capacity.max(1);
        &self.acts[last][..self.n * k]
    }
    /// Output of layer `i` (0-based) in the last forward pass, `[n, ...]` NHWC.
    /// After a training pass, a BN layer fused with the ReLU after it has
    /// no output of its own (stale); evaluation passes fuse nothing.
    pub fn activation(&self, i: usize, per_sample: usize) -> &[f32] {
        &self.acts[i][..self.n * per_sample]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A network from a TOML description (see `spec.rs`).
    fn net(toml: &str, init: Init, seed: u64) -> Network {
        let spec = NetworkSpec::from_toml(toml, "test.toml").unwrap();
        Network::new(spec, init, &mut Rng::new(seed)).unwrap()
    }

    /// dense (no bias) + BN + sigmoid + dense + tanh + dense: the paper's
    /// MLP block, plus a second nonlinearity so both smooth ones are checked.
    const MLP: &str = r#"
        input = [2, 3, 2]
        classes = 5
        [[layers]]
        type = "dense"
        units = 8
        bias = false
        [[layers]]
        type = "batchnorm"
        [[layers]]
        type = "sigmoid"
        [[layers]]
        type = "dense"
        units = 6
        [[layers]]
        type = "tanh"
        [[layers]]
        type = "dense"
        units = 5
    "#;

    /// conv (same padding), BN, ReLU, max-pool, depthwise (padding), BN,
    /// tanh, conv (stride 2, asymmetric padding), ReLU6, global average pool,
    /// dropout, dense: 6x6x2 -> 6x6x4 -> 3x3x4 -> 3x3x4 -> 2x2x6 -> 1x1x6 -> 5.
    const CNN_GAP: &str = r#"
        input = [6, 6, 2]
        classes = 5
        [[layers]]
        type = "conv2d"
        filters = 4
        kernel = 3
        padding = "same"
        bias = false
        [[layers]]
        type = "batchnorm"
        [[layers]]
        type = "relu"
        [[layers]]
        type = "maxpool"
        kernel = 2
        [[layers]]
        type = "depthwise_conv2d"
        kernel = 3
        padding = 1
        bias = false
        [[layers]]
        type = "batchnorm"
        [[layers]]
        type = "tanh"
        [[layers]]
        type = "conv2d"
        filters = 6
        kernel = 2
        stride = 2
        padding = [0, 1, 0, 1]
        [[layers]]
        type = "relu6"
        [[layers]]
        type = "global_avgpool"
        [[layers]]
        type = "dropout"
        rate = 0.25
        [[layers]]
        type = "dense"
        units = 5
    "#;

    /// conv (stride 2, padding 1, bias) + sigmoid + depthwise (bias) + BN +
    /// tanh + average pool + flatten + dense without bias (smooth everywhere,
    /// so central differences must agree at the first step):
    /// 6x6x2 -> 3x3x4 -> 2x2x4 -> 1x1x4 -> 5.
    const CNN_AVG: &str = r#"
        input = [6, 6, 2]
        classes = 5
        [[layers]]
        type = "conv2d"
        filters = 4
        kernel = 3
        stride = 2
        padding = 1
        [[layers]]
        type = "sigmoid"
        [[layers]]
        type = "depthwise_conv2d"
        kernel = 2
        [[layers]]
        type = "batchnorm"
        [[layers]]
        type = "tanh"
        [[layers]]
        type = "avgpool"
        kernel = 2
        [[layers]]
        type = "flatten"
        [[layers]]
        type = "dense"
        units = 5
        bias = false
    "#;

    fn batch(net: &Network, n: usize, seed: u64) -> (Vec<f32>, Vec<u16>) {
        let mut rng = Rng::new(seed);
        let x = (0..n * net.input().len())
            .map(|_| rng.uniform(-1.0, 1.0))
            .collect();
        let y = (0..n)
            .map(|_| rng.below(net.classes() as u32) as u16)
            .collect();
        (x, y)
    }

    /// Mean softmax cross-entropy of `[n, k]` logits, in f64.
    fn loss_f64(logits: &[f32], labels: &[u16], k: usize) -> f64 {
        let mut total = 0.0;
        for (z, &l) in logits.chunks_exact(k).zip(labels) {
            let m = z.iter().fold(f64::MIN, |m, &v| m.max(f64::from(v)));
            let lse = z
                .iter()
                .map(|&v| (f64::from(v) - m).exp())
                .sum::<f64>()
                .ln();
            total += m + lse - f64::from(z[usize::from(l)]);
        }
        total / labels.len() as f64
    }

    /// Training-mode loss; `rng` is copied so every call draws the same
    /// dropout masks.
    fn train_loss(net: &mut Network, ws: &mut Workspace, x: &[f32], y: &[u16], rng: Rng) -> f64 {
        let mut rng = rng;
        let k = net.classes();
        let logits = net.forward(ws, x, Mode::Train(&mut rng)).unwrap();
        loss_f64(logits, y, k)
    }

    /// Every parameter's analytic gradient against central differences of
    /// the training-mode loss, perturbing one parameter at a time (at most
    /// `max_per_layer` evenly spaced ones per layer). At most the fraction
    /// `kinked` of them may need the one-sided fallback.
    fn check_gradients(toml: &str, init: Init, n: usize, max_per_layer: usize, kinked: f64) {
        let mut net = net(toml, init, 3);
        // Non-trivial γ and β, so BN's parameter gradients are not a special case.
        let mut rng = Rng::new(11);
        for l in &mut net.layers {
            if matches!(l.r.op, Op::BatchNorm(_)) {
                for p in &mut l.params {
                    *p += rng.uniform(-0.3, 0.3);
                }
            } else if l.r.op.param_len() > l.r.op.weight_len() {
                let wl = l.r.op.weight_len();
                for b in &mut l.params[wl..] {
                    *b = rng.uniform(-0.2, 0.2);
                }
            }
        }
        let (x, y) = batch(&net, n, 5);
        let mut ws = net.workspace(n, 1).unwrap();
        let noise = Rng::new(99);
        let mut r = noise;
        net.forward(&mut ws, &x, Mode::Train(&mut r)).unwrap();
        let loss = net.backward(&mut ws, &x, &y).unwrap();
        let base = train_loss(&mut net, &mut ws, &x, &y, noise);
        assert!(
            (f64::from(loss) - base).abs() <= 1e-5 * base.max(1.0),
            "backward's loss {loss} vs recomputed {base}"
        );
        let grads: Vec<Vec<f32>> = net.layers.iter().map(|l| l.grads.clone()).collect();
        let (mut checked, mut retried) = (0, 0);
        for li in 0..net.layers.len() {
            let len = net.layers[li].params.len();
            let stride = len.div_ceil(max_per_layer.max(1)).max(1);
            for j in (0..len).step_by(stride) {
                let an = f64::from(grads[li][j]);
                let p0 = net.layers[li].params[j];
                let mut loss_at = |net: &mut Network, d: f32| {
                    net.layers[li].params[j] = p0 + d;
                    let l = train_loss(net, &mut ws, &x, &y, noise);
                    net.layers[li].params[j] = p0;
                    l
                };
                let ok = |fd: f64| (fd - an).abs() <= 1e-3 + 1e-2 * an.abs();
                let l0 = loss_at(&mut net, 0.0);
                let h = 1e-2f32;
                let central = (loss_at(&mut net, h) - loss_at(&mut net, -h)) / (2.0 * f64::from(h));
                let mut fds = vec![central];
                if !ok(central) {
                    // A step can carry a ReLU input or a max-pool winner
                    // across its kink. The second-order one-sided difference
                    // on the side without the kink still agrees (a wrong
                    // gradient agrees on neither side at any step).
                    for h in [1e-2f32, 3e-3, 1e-3] {
                        let h2 = 2.0 * f64::from(h);
                        let fwd = (-3.0 * l0 + 4.0 * loss_at(&mut net, h)
                            - loss_at(&mut net, 2.0 * h))
                            / h2;
                        let bwd = (3.0 * l0 - 4.0 * loss_at(&mut net, -h)
                            + loss_at(&mut net, -2.0 * h))
                            / h2;
                        fds.extend([fwd, bwd]);
                        if ok(fwd) || ok(bwd) {
                            break;
                        }
                    }
                }
                assert!(
                    fds.iter().any(|&fd| ok(fd)),
                    "layer {} ({}) param {j}: finite differences {fds:?} vs backward {an}",
                    li + 1,
                    net.spec.layers[li].kind()
                );
                checked += 1;
                retried += usize::from(fds.len() > 1);
            }
        }
        assert!(
            checked > 0 && retried as f64 <= kinked * checked as f64,
            "{retried} of {checked} parameters disagreed with the central difference"
        );
    }

    #[test]
    fn mlp_gradients_match_finite_differences() {
        check_gradients(MLP, Init::Xavier, 4, usize::MAX, 0.0);
    }

    #[test]
    fn cnn_with_global_pool_and_dropout_gradients_match_finite_differences() {
        // ReLU after BN: a step of 1e-2 moves all 144 ReLU inputs of a channel,
        // and about one parameter in ten carries one across 0.
        check_gradients(CNN_GAP, Init::He, 4, usize::MAX, 0.2);
    }

    #[test]
    fn cnn_with_avg_pool_gradients_match_finite_differences() {
        check_gradients(CNN_AVG, Init::He, 4, usize::MAX, 0.0);
    }

    #[test]
    fn layer_parameters_are_laid_out_weights_then_bias() {
        let net = net(CNN_GAP, Init::He, 1);
        for l in &net.layers {
            let op = l.r.op;
            assert_eq!(l.params.len(), op.param_len());
            assert_eq!(l.weights().len() + l.bias().len(), op.param_len());
            assert_eq!(l.grads.len(), op.param_len());
            assert_eq!(l.velocity.len(), op.param_len());
            match op {
                Op::BatchNorm(bn) => {
                    // γ = 1, β = 0, population statistics (0, 1).
                    assert!(l.weights().iter().all(|&g| g == 1.0));
                    assert!(l.bias().iter().all(|&b| b == 0.0));
                    assert_eq!(l.running_mean, vec![0.0; bn.channels()]);
                    assert_eq!(l.running_var, vec![1.0; bn.channels()]);
                }
                Op::Conv { bias, .. } | Op::Dense { bias, .. } | Op::Depthwise { bias, .. } => {
                    assert!(l.bias().iter().all(|&b| b == 0.0));
                    assert_eq!(l.bias().is_empty(), !bias);
                    assert!(l.weights().iter().any(|&w| w != 0.0));
                }
                _ => assert!(l.params.is_empty() && l.running_mean.is_empty()),
            }
        }
    }

    /// Loss, logits and every gradient of one training pass.
    fn pass(
        net: &mut Network,
        threads: usize,
        min_work: usize,
        x: &[f32],
        y: &[u16],
    ) -> (f32, Vec<f32>, Vec<Vec<f32>>) {
        let mut ws = net.workspace(y.len(), threads).unwrap();
        ws.par_min_work = min_work;
        let mut rng = Rng::new(7);
        let logits = net
            .forward(&mut ws, x, Mode::Train(&mut rng))
            .unwrap()
            .to_vec();
        let loss = net.backward(&mut ws, x, y).unwrap();
        let grads = net.layers.iter().map(|l| l.grads.clone()).collect();
        (loss, logits, grads)
    }

    /// `a` and `b` agree to `rel` relative to the largest magnitude in `a`.
    fn assert_close(a: &[f32], b: &[f32], rel: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = a.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
        for (i, (p, q)) in a.iter().zip(b).enumerate() {
            assert!(
                (p - q).abs() <= rel * scale,
                "{what}[{i}]: {p} vs {q} (scale {scale})"
            );
        }
    }

    fn assert_threads_agree(toml: &str, n: usize, min_work: usize) {
        let net0 = net(toml, Init::He, 2);
        let (x, y) = batch(&net0, n, 4);
        let (mut a, mut b, mut c) = (net0.clone(), net0.clone(), net0.clone());
        let (l1, z1, g1) = pass(&mut a, 1, min_work, &x, &y);
        let (l2, z2, g2) = pass(&mut b, 2, min_work, &x, &y);
        assert!((l1 - l2).abs() <= 1e-5 * l1.abs(), "loss {l1} vs {l2}");
        assert_close(&z1, &z2, 1e-5, "logits");
        for (i, (p, q)) in g1.iter().zip(&g2).enumerate() {
            assert_close(p, q, 1e-5, &format!("layer {} grads", i + 1));
        }
        // The running statistics: the same up to the reassociation of BN's sums.
        for (p, q) in a.layers.iter().zip(&b.layers) {
            assert_close(&p.running_mean, &q.running_mean, 1e-5, "running mean");
            assert_close(&p.running_var, &q.running_var, 1e-5, "running var");
        }
        // A fixed thread count is deterministic, bit for bit.
        let (l3, z3, g3) = pass(&mut c, 2, min_work, &x, &y);
        assert_eq!(l2.to_bits(), l3.to_bits());
        assert_eq!(z2, z3);
        assert_eq!(g2, g3);
        // A training step's passes inside the pool (`train_pass`) give the
        // same bits as the passes called from outside it.
        let mut d = net0.clone();
        let mut ws = d.workspace(y.len(), 2).unwrap();
        ws.par_min_work = min_work;
        let l4 = d.train_pass(&mut ws, &x, &y, &mut Rng::new(7)).unwrap();
        assert_eq!(l4.to_bits(), l2.to_bits());
        assert_eq!(ws.logits(), &z2[..]);
        let g4: Vec<Vec<f32>> = d.layers.iter().map(|l| l.grads.clone()).collect();
        assert_eq!(g4, g2);
    }

    #[test]
    fn two_threads_match_one_thread_on_every_layer_kind() {
        // A threshold of 0 splits every batch-separable layer over the threads.
        assert_threads_agree(CNN_GAP, 8, 0);
        assert_threads_agree(CNN_AVG, 9, 0);
        assert_threads_agree(MLP, 8, 0);
    }

    #[test]
    fn two_threads_match_one_thread_above_the_real_threshold() {
        // 16 samples x 1024 x 512 MACs = 8 Mi: exactly the threshold.
        let toml = r#"
            input = [32, 32, 1]
            classes = 10
            [[layers]]
            type = "dense"
            units = 512
            bias = false
            [[layers]]
            type = "batchnorm"
            [[layers]]
            type = "relu"
            [[layers]]
            type = "dense"
            units = 10
        "#;
        let n = net(toml, Init::He, 1);
        assert!(worth_parallel(n.layers[0].r, 16, 2, PAR_MIN_WORK));
        assert!(!worth_parallel(n.layers[0].r, 15, 2, PAR_MIN_WORK));
        assert!(!worth_parallel(n.layers[3].r, 16, 2, PAR_MIN_WORK));
        assert!(!worth_parallel(n.layers[0].r, 16, 1, PAR_MIN_WORK));
        assert_threads_agree(toml, 16, PAR_MIN_WORK);
    }

    #[test]
    fn eval_of_one_sample_equals_that_sample_inside_a_batch() {
        for (toml, threads) in [(CNN_GAP, 1), (CNN_GAP, 2), (MLP, 1), (CNN_AVG, 2)] {
            let mut net = net(toml, Init::He, 8);
            // Population statistics away from (0, 1), so that eval-mode BN
            // visibly differs from training mode.
            let mut rng = Rng::new(3);
            for l in &mut net.layers {
                for m in &mut l.running_mean {
                    *m = rng.uniform(-0.5, 0.5);
                }
                for v in &mut l.running_var {
                    *v = rng.uniform(0.5, 2.0);
                }
            }
            let n = 8;
            let (x, _) = batch(&net, n, 6);
            let per = net.input().len();
            let k = net.classes();
            let mut ws = net.workspace(n, threads).unwrap();
            ws.par_min_work = 0;
            let all = net.forward(&mut ws, &x, Mode::Eval).unwrap().to_vec();
            assert_eq!(all.len(), n * k);
            let mut one = net.workspace(1, threads).unwrap();
            for i in 0..n {
                let z = net
                    .forward(&mut one, &x[i * per..(i + 1) * per], Mode::Eval)
                    .unwrap();
                assert_close(&all[i * k..(i + 1) * k], z, 1e-5, &format!("sample {i}"));
            }
            // Eval mode does not touch the population statistics.
            let before: Vec<_> = net.layers.iter().map(|l| l.running_var.clone()).collect();
            net.forward(&mut ws, &x, Mode::Eval).unwrap();
            let after: Vec<_> = net.layers.iter().map(|l| l.running_var.clone()).collect();
            assert_eq!(before, after);
        }
    }

    #[test]
    fn train_mode_updates_running_statistics_and_dropout_follows_the_generator() {
        let mut net = net(CNN_GAP, Init::He, 8);
        let (x, _) = batch(&net, 4, 6);
        let mut ws = net.workspace(4, 1).unwrap();
        let mut r1 = Rng::new(5);
        let a = net
            .forward(&mut ws, &x, Mode::Train(&mut r1))
            .unwrap()
            .to_vec();
        assert_ne!(r1, Rng::new(5), "dropout draws from the generator");
        assert_ne!(net.layers[1].running_mean, vec![0.0; 4]);
        let mut r2 = Rng::new(5);
        let b = net
            .forward(&mut ws, &x, Mode::Train(&mut r2))
            .unwrap()
            .to_vec();
        assert_eq!(a, b, "same generator state, same masks, same output");
        assert_eq!(r1, r2);
        let mut r3 = Rng::new(6);
        let c = net
            .forward(&mut ws, &x, Mode::Train(&mut r3))
            .unwrap()
            .to_vec();
        assert_ne!(a, c, "another generator state, other masks");
    }

    #[test]
    fn wrong_batches_are_errors() {
        let mut net = net(MLP, Init::He, 1);
        let mut ws = net.workspace(4, 1).unwrap();
        let per = net.input().len();
        // More samples than the workspace holds, and a partial sample.
        for len in [5 * per, 2 * per + 1] {
            let x = vec![0.0; len];
            assert!(matches!(
                net.forward(&mut ws, &x, Mode::Eval),
                Err(NetworkError::Batch { .. })
            ));
        }
        let x = vec![0.0; 2 * per];
        let mut rng = Rng::new(1);
        net.forward(&mut ws, &x, Mode::Train(&mut rng)).unwrap();
        // Labels out of range and an input that is not the forward pass's.
        assert!(matches!(
            net.backward(&mut ws, &x, &[0, 9]),
            Err(NetworkError::Kernel { .. })
        ));
        assert!(matches!(
            net.backward(&mut ws, &x[..per], &[0, 1]),
            Err(NetworkError::Batch { .. })
        ));
    }

    #[test]
    fn sgd_step_decays_weights_but_not_biases_or_bn() {
        let mut net = net(MLP, Init::He, 1);
        for l in &mut net.layers {
            l.grads.fill(0.0);
        }
        let before = net.clone();
        let opt = Sgd {
            lr: 0.5,
            momentum: 0.0,
            weight_decay: 0.1,
            nesterov: false,
        };
        assert_eq!(net.sgd_step(&opt).unwrap(), None);
        for (a, b) in before.layers.iter().zip(&net.layers) {
            let shrink = !matches!(a.r.op, Op::BatchNorm(_));
            for (p, q) in a.weights().iter().zip(b.weights()) {
                let want = if shrink { p * (1.0 - 0.05) } else { *p };
                assert!((q - want).abs() <= 1e-6 * p.abs(), "{p} -> {q}");
            }
            assert_eq!(a.bias(), b.bias());
        }
    }

    /// Per-layer timing covers every layer of both passes, changes no
    /// result, and switches off.
    #[test]
    fn layer_timing_covers_both_passes_and_changes_nothing() {
        let net0 = net(CNN_GAP, Init::He, 2);
        let (x, y) = batch(&net0, 6, 4);
        let (mut a, mut b) = (net0.clone(), net0);
        let mut wa = a.workspace(6, 1).unwrap();
        let mut wb = b.workspace(6, 1).unwrap();
        assert!(wb.layer_times().is_empty());
        wb.time_layers(true);
        let la = a.train_pass(&mut wa, &x, &y, &mut Rng::new(3)).unwrap();
        let lb = b.train_pass(&mut wb, &x, &y, &mut Rng::new(3)).unwrap();
        assert_eq!(la.to_bits(), lb.to_bits());
        assert_eq!(wa.logits(), wb.logits());
        let times = wb.layer_times();
        assert_eq!(times.len(), b.layers.len());
        // Every layer with parameters did work in both passes.
        for (l, t) in b.layers.iter().zip(times) {
            if !l.params.is_empty() {
                assert!(t[0] > Duration::ZERO && t[1] > Duration::ZERO, "{t:?}");
            }
        }
        wb.time_layers(false);
        assert!(wb.layer_times().is_empty());
    }

    /// The update reports the first layer whose parameters are not finite
    /// afterwards, and still updates every layer.
    #[test]
    fn sgd_step_reports_the_first_non_finite_layer() {
        let mut net = net(MLP, Init::He, 1);
        for l in &mut net.layers {
            l.grads.fill(1.0);
        }
        let with_params: Vec<usize> = (0..net.layers.len())
            .filter(|&i| !net.layers[i].params.is_empty())
            .collect();
        assert!(with_params.len() >= 2);
        let (first, last) = (with_params[0], with_params[with_params.len() - 1]);
        net.layers[last].grads[0] = f32::INFINITY;
        let before = net.clone();
        let opt = Sgd {
            lr: 0.1,
            ..Sgd::default()
        };
        assert_eq!(net.sgd_step(&opt).unwrap(), Some(last + 1));
        for (a, b) in before.layers.iter().zip(&net.layers) {
            for (p, q) in a.params.iter().zip(&b.params) {
                assert_ne!(p, q, "every parameter moved");
            }
        }
        net.layers[first].grads[1] = f32::NAN;
        assert_eq!(net.sgd_step(&opt).unwrap(), Some(first + 1));
    }

    #[test]
    fn init_parses_and_prints() {
        for s in ["he", "xavier", "gaussian:0.05"] {
            let i: Init = s.parse().unwrap();
            assert_eq!(i.to_string(), s);
        }
        assert_eq!("kaiming".parse::<Init>(), Ok(Init::He));
        assert_eq!("glorot".parse::<Init>(), Ok(Init::Xavier));
        for bad in [
            "",
            "gauss",
            "gaussian:",
            "gaussian:-1",
            "gaussian:0",
            "gaussian:nan",
            "gaussian:1e30",
            "gaussian:11",
        ] {
            let e = bad.parse::<Init>().unwrap_err();
            assert!(e.contains("gaussian:STD"), "{bad}: {e}");
        }
        // He: std sqrt(2 / fan_in) on a wide layer.
        let toml = "input = [1, 1, 400]\nclasses = 300\n[[layers]]\ntype = \"dense\"\nunits = 300";
        let n = net(toml, Init::He, 1);
        let w = n.layers[0].weights();
        let var = w.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / w.len() as f64;
        assert!((var / (2.0 / 400.0) - 1.0).abs() < 0.05, "variance {var}");
    }
}
