//! Step-for-step equivalence with PyTorch: initial weights that both frameworks make from one
//! seed, the fixture that the reference script writes, and one training step taken exactly as
//! Burn's Learner takes it.
//!
//! Reference: `crates/train/tests/reference/make_equivalence.py` (PyTorch and torchvision, pinned
//! in its `requirements.txt`) trains torchvision's EfficientNet-B0 and ResNet-50 from the same
//! seeded weights on the same log-mel batches and records per step the learning rate, the loss,
//! the global gradient norm and a sample of parameters, in float32 and again in float64 (the
//! float64 run measures how far float32 rounding alone moves a trajectory: the tolerances of
//! `tests/equivalence.rs` are derived from it).
//!
//! Seeded weights (the same rule in both frameworks, on PyTorch's tensor names and shapes):
//! - `*.running_mean` 0, `*.running_var` 1, BatchNorm `weight` 1 and `bias` 0;
//! - a convolution weight `[out, in, kh, kw]`: uniform in ±√(6 / (in·kh·kw)) (He uniform);
//! - a linear weight `[out, in]`: uniform in ±1/√in; any other bias: uniform in ±1/√fan_in of
//!   its weight.
//!
//! Uniform value k of a tensor is `(2u − 1)·bound` computed in f64 and rounded to f32, with
//! `u = (x_k >> 11) / 2^53` and `x_k` the k-th output of SplitMix64 seeded with
//! `seed ^ fnv1a64(name)`: bit-identical in numpy.

use std::collections::HashMap;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Tensor;
use burn::train::TrainStep;
use serde::{Deserialize, Serialize};
use silencio_common::SplitMix64;

use crate::augment::{MixPair, SpecMasks};
use crate::dataset::WindowBatch;
use crate::experiment::TrainConfig;
use crate::model::Trainee;
use crate::{Error, Result};

/// FNV-1a (64 bit) of a tensor name: its offset from the run's seed.
pub fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `n` values uniform in `[-bound, bound)` for tensor `name` (see the module docs).
pub fn seeded_uniform(seed: u64, name: &str, n: usize, bound: f64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed ^ fnv1a64(name));
    (0..n)
        .map(|_| ((2.0 * rng.uniform() - 1.0) * bound) as f32)
        .collect()
}

/// One tensor of a PyTorch state dict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySpec {
    /// PyTorch name (`features.1.0.block.0.0.weight`).
    pub name: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
}

/// The seeded initial value of `keys[i]` (see the module docs for the rule).
pub fn seeded_tensor(keys: &[KeySpec], i: usize, seed: u64) -> Vec<f32> {
    let k = &keys[i];
    let n: usize = k.shape.iter().product();
    let (prefix, leaf) = k.name.rsplit_once('.').unwrap_or(("", k.name.as_str()));
    let sibling = |leaf: &str| {
        let name = format!("{prefix}.{leaf}");
        keys.iter().find(|s| s.name == name)
    };
    let is_norm = sibling("running_mean").is_some();
    let fan_in = |shape: &[usize]| shape.iter().skip(1).product::<usize>().max(1) as f64;
    match leaf {
        "running_mean" => vec![0.0; n],
        "running_var" => vec![1.0; n],
        "weight" if is_norm => vec![1.0; n],
        "bias" if is_norm => vec![0.0; n],
        "weight" if k.shape.len() == 4 => {
            seeded_uniform(seed, &k.name, n, (6.0 / fan_in(&k.shape)).sqrt())
        }
        "weight" => seeded_uniform(seed, &k.name, n, 1.0 / fan_in(&k.shape).sqrt()),
        _ => {
            let fan = sibling("weight").map_or(1.0, |w| fan_in(&w.shape));
            seeded_uniform(seed, &k.name, n, 1.0 / fan.sqrt())
        }
    }
}

/// A safetensors state dict (f32, PyTorch names and shapes) of every key, seeded.
pub fn seeded_state_dict(keys: &[KeySpec], seed: u64) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = (0..keys.len())
        .map(|i| {
            seeded_tensor(keys, i, seed)
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect()
        })
        .collect();
    let views = keys
        .iter()
        .zip(&bytes)
        .map(|(k, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, k.shape.clone(), b)
                .map(|v| (k.name.clone(), v))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Data {
            message: format!("seeded state dict: {e}"),
        })?;
    safetensors::serialize(views, None).map_err(|e| Error::Data {
        message: format!("seeded state dict: {e}"),
    })
}

/// The recipe both frameworks train with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeSpec {
    /// Seed of the initial weights.
    pub seed: u64,
    /// Windows per step (per device).
    pub batch_size: usize,
    /// Steps taken.
    pub steps: usize,
    /// Output classes of the model.
    pub classes: usize,
    /// Epochs and steps per epoch of the schedule (`epochs · steps_per_epoch = steps`).
    pub epochs: usize,
    /// Steps per epoch.
    pub steps_per_epoch: usize,
    /// Warm-up length in epochs.
    pub warmup_epochs: f64,
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Label smoothing ε.
    pub label_smoothing: f32,
    /// Target of secondary labels.
    pub secondary_weight: f32,
    /// Input normalisation `[mean, std]`.
    pub input_norm: [f32; 2],
    /// Data-parallel devices (each takes `batch_size` windows of a step).
    pub devices: usize,
}

impl RecipeSpec {
    /// The trainer's recipe with these numbers (augmentations off: the fixture fixes them).
    pub fn train_config(&self) -> TrainConfig {
        TrainConfig {
            epochs: self.epochs,
            batch_size: self.batch_size,
            lr: self.lr,
            weight_decay: self.weight_decay,
            warmup_epochs: self.warmup_epochs,
            min_lr: self.min_lr,
            label_smoothing: self.label_smoothing,
            secondary_weight: self.secondary_weight,
            mixup_prob: 0.0,
            time_masks: 0,
            freq_masks: 0,
            noise_prob: 0.0,
            random_crop: false,
            seed: self.seed,
            ..TrainConfig::default()
        }
    }
}

/// One step's data: which store windows, and the augmentations fixed from outside.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchSpec {
    /// Window indices in the ETL manifest, in batch order (all devices).
    pub windows: Vec<usize>,
    /// SpecAugment masks per item (empty: none).
    #[serde(default)]
    pub masks: Vec<SpecMasks>,
    /// Mixups, per device batch (empty: none).
    #[serde(default)]
    pub mix: Vec<Vec<MixPair>>,
    /// Σx and Σx² of the network's input after augmentation and normalisation (f64).
    pub input_sums: [f64; 2],
    /// Σ of the targets after smoothing and mixup.
    pub target_sum: f64,
}

/// What one framework recorded at one precision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Loss of each step (mean over the devices' batches).
    pub loss: Vec<f64>,
    /// Global L2 norm of the gradient that each step applied.
    pub grad_norm: Vec<f64>,
    /// `params[c][k]`: the sampled values of `sample.keys[k]` after `param_steps[c]` steps.
    pub params: Vec<Vec<Vec<f64>>>,
}

/// Which parameter values are compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParamSample {
    /// PyTorch names.
    pub keys: Vec<String>,
    /// Flat indices (PyTorch layout) sampled in each.
    pub indices: Vec<Vec<usize>>,
}

/// The reference script's record of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fixture {
    /// `efficientnet_b0` or `resnet50`.
    pub arch: String,
    /// What the run exercises (`plain`, `augment`, `two_devices`).
    pub variant: String,
    /// Versions and settings of the reference.
    pub reference: HashMap<String, String>,
    /// The recipe.
    pub recipe: RecipeSpec,
    /// The state dict's tensors, in PyTorch order.
    pub keys: Vec<KeySpec>,
    /// Per step.
    pub batches: Vec<BatchSpec>,
    /// The learning rate of each step.
    pub lr: Vec<f64>,
    /// Steps after which parameters were sampled (0: the initial weights).
    pub param_steps: Vec<usize>,
    /// What is sampled.
    pub sample: ParamSample,
    /// PyTorch in float32.
    pub f32: Trajectory,
    /// PyTorch in float64.
    pub f64: Trajectory,
}

/// Sums the squares of every gradient of a module's float parameters.
struct GradSquares<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl ModuleVisitor for GradSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sum += g.square().sum().into_scalar::<f64>();
        }
    }
}

/// Global L2 norm of `grads` over the parameters of `module`.
pub fn grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut v = GradSquares { grads, sum: 0.0 };
    module.visit(&mut v);
    v.sum.sqrt()
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRecord {
    /// Learning rate applied.
    pub lr: f64,
    /// Loss (mean over the devices' batches).
    pub loss: f64,
    /// Global gradient norm applied.
    pub grad_norm: f64,
}

/// A trainee, its optimiser and schedule, stepped as Burn's Learner steps them: each device's
/// batch through `TrainStep::step`, the gradients summed on the main device (Burn's
/// `GradientsAccumulator`, as its multi-device strategy does), the scheduler's next rate, then
/// `ModuleOptimizer::step`.
pub struct Stepper {
    /// The model being trained (on an autodiff device).
    pub trainee: Trainee,
    optim: ModuleOptimizer,
    sched: ModuleLrScheduler,
}

impl Stepper {
    /// The trainer's optimiser and schedule (`fit::optimizer`, `fit::schedule`) for `t`.
    pub fn new(trainee: Trainee, t: &TrainConfig, steps_per_epoch: usize) -> Result<Self> {
        Ok(Self {
            trainee,
            optim: crate::fit::optimizer(t).init(),
            sched: crate::fit::schedule(t, steps_per_epoch)?,
        })
    }

    /// One optimiser step over one batch per device (all on the trainee's device). One batch runs
    /// on this thread, as Burn's single-device strategy runs it; several run on a thread each, as
    /// its multi-device step does (there the threads are new each step, so batch norm's running
    /// statistics are only folded by `valid()`: compare trainable parameters only).
    pub fn step(&mut self, batches: Vec<WindowBatch>) -> StepRecord {
        let n = batches.len().max(1) as f64;
        let trainee = &self.trainee;
        let outputs: Vec<_> = if batches.len() == 1 {
            batches
                .into_iter()
                .map(|b| TrainStep::step(trainee, b))
                .collect()
        } else {
            std::thread::scope(|s| {
                let workers: Vec<_> = batches
                    .into_iter()
                    .map(|batch| s.spawn(move || TrainStep::step(trainee, batch)))
                    .collect();
                workers
                    .into_iter()
                    .map(|w| match w.join() {
                        Ok(out) => out,
                        Err(panic) => std::panic::resume_unwind(panic),
                    })
                    .collect()
            })
        };
        let mut loss = 0.0;
        let mut acc = burn::optim::GradientsAccumulator::new();
        for out in outputs {
            loss += out.item.loss.into_scalar::<f64>();
            acc.accumulate(&self.trainee, out.grads);
        }
        let grads = acc.grads();
        let lr = self.sched.step();
        let norm = grad_norm(&self.trainee, &grads);
        self.trainee = self.optim.step(lr.clone(), self.trainee.clone(), grads);
        StepRecord {
            lr: lr.base(),
            loss: loss / n,
            grad_norm: norm,
        }
    }
}
