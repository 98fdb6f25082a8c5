//! One training run with Burn's `SupervisedTraining` + `Learner`: AdamW, linear warm-up then
//! cosine decay, checkpoints every epoch, early stopping on validation loss, one or several
//! devices, and every epoch's metrics handed to a callback (MLflow).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataset::Dataset;
use burn::module::Module;
use burn::optim::lr_scheduler::LrSchedulerConfig;
use burn::optim::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::optim::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::optim::lr_scheduler::sequential::SequentialLrSchedulerConfig;
use burn::tensor::Device;
use burn::train::logger::{FileMetricLogger, MetricLogger};
use burn::train::metric::store::{Aggregate, Direction, EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{
    AucPrMetric, AurocMetric, ClassReduction, LearningRateMetric, LossMetric, MetricDefinition,
    MetricId, NumericEntry,
};
use burn::train::{
    ExecutionStrategy, Learner, MetricEarlyStoppingStrategy, MultiDeviceOptim, StoppingCondition,
    SupervisedTraining,
};
use silencio_models::{Model, ModelConfig};

use crate::adamw::FusedAdamW;
use crate::augment::AugmentConfig;
use crate::dataset::{WindowBatcher, WindowDataset};
use crate::distill::DistillSpec;
use crate::experiment::TrainConfig;
use crate::model::{LossSpec, Trainee};
use crate::{Error, Result};

/// Metric names as Burn reports them (and as MLflow keys after [`metric_key`]).
pub const VALID_AUC: &str = "AUROC [Macro]";
/// Burn's name of the macro area under the PR curve.
pub const VALID_AP: &str = "AUC-PR [Macro]";

/// `split_metric` with Burn's punctuation removed: `valid_auroc_macro`.
pub fn metric_key(split: &str, name: &str) -> String {
    let mut k = format!("{split}_");
    let mut last_us = true;
    for ch in name.chars() {
        if ch.is_ascii_alphanumeric() {
            k.push(ch.to_ascii_lowercase());
            last_us = false;
        } else if !last_us {
            k.push('_');
            last_us = true;
        }
    }
    k.trim_end_matches('_').to_string()
}

/// Called once per finished epoch and split with `(epoch, split, metric, value)`.
pub type EpochCallback = Box<dyn FnMut(usize, &str, &str, f64) + Send>;

/// Forwards each epoch's final metric values to a callback.
struct EpochLogger {
    names: HashMap<MetricId, String>,
    last: HashMap<String, f64>,
    callback: EpochCallback,
}

impl MetricLogger for EpochLogger {
    fn log(&mut self, update: MetricsUpdate, _epoch: usize, _split: &Split) {
        for u in update.entries_numeric {
            let Some(name) = self.names.get(&u.entry.metric_id) else {
                continue;
            };
            // The running entry is the epoch aggregate so far: its last value is the epoch's.
            let v = match u.running_entry.or(u.numeric_entry) {
                Some(NumericEntry::Value(v)) | Some(NumericEntry::Final(v)) => v,
                Some(NumericEntry::Aggregated {
                    aggregated_value, ..
                }) => aggregated_value,
                None => continue,
            };
            if v.is_finite() {
                self.last.insert(name.clone(), v);
            }
        }
    }

    fn read_numeric(
        &mut self,
        _name: &str,
        _epoch: usize,
        _split: &Split,
    ) -> std::result::Result<Vec<NumericEntry>, String> {
        // The file logger answers history queries (early stopping, best checkpoint).
        Err("the epoch logger keeps no history".into())
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id.clone(), definition.name.to_string());
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        let split = format!("{}", summary.split).to_lowercase();
        for (name, v) in self.last.drain() {
            (self.callback)(summary.epoch_number, &split, &name, v);
        }
    }
}

/// What [`fit`] needs besides the data.
pub struct FitSpec<'a> {
    /// Training recipe.
    pub train: &'a TrainConfig,
    /// Run directory (checkpoints under `checkpoint/`, Burn's logs).
    pub dir: &'a Path,
    /// Resume from this epoch's checkpoint.
    pub resume_epoch: Option<usize>,
    /// Devices (one: single-device; several: data-parallel).
    pub devices: Vec<Device>,
    /// Per-epoch metrics.
    pub on_epoch: Option<EpochCallback>,
}

/// The trained model and how training ended.
pub struct FitOutcome {
    /// The model after the last epoch, without autodiff.
    pub model: Model,
    /// Epochs run in total (including resumed ones).
    pub epochs: usize,
    /// Why training stopped early, if it did.
    pub stopped: Option<String>,
}

impl std::fmt::Debug for FitOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FitOutcome")
            .field("epochs", &self.epochs)
            .field("stopped", &self.stopped)
            .finish()
    }
}

/// The last epoch with a complete model checkpoint in `dir/checkpoint/`.
pub fn last_checkpoint(dir: &Path) -> Option<usize> {
    let names: Vec<String> = std::fs::read_dir(dir.join("checkpoint"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let epochs = |prefix: &str| -> Vec<usize> {
        names
            .iter()
            .filter_map(|n| n.strip_prefix(prefix)?.strip_suffix(".bpk")?.parse().ok())
            .collect()
    };
    // An epoch counts only when model, optimiser and scheduler were all written.
    let optim = epochs("optim-");
    let sched = epochs("scheduler-");
    epochs("model-")
        .into_iter()
        .filter(|e| optim.contains(e) && sched.contains(e))
        .max()
}

/// The augmentation settings of a training recipe.
pub fn augment_config(t: &TrainConfig) -> AugmentConfig {
    AugmentConfig {
        random_crop: t.random_crop,
        noise_prob: t.noise_prob,
        noise_snr_db: t.noise_snr_db,
        time_masks: t.time_masks,
        time_mask_frames: t.time_mask_frames,
        freq_masks: t.freq_masks,
        freq_mask_bins: t.freq_mask_bins,
        mixup_prob: t.mixup_prob,
        mixup_alpha: t.mixup_alpha,
    }
}

/// The optimiser of every training run: AdamW with the recipe's decoupled weight decay and
/// Burn's other defaults (β 0.9 / 0.999, ε 1e-5), fused on flex.
pub fn optimizer(t: &TrainConfig) -> FusedAdamW {
    FusedAdamW::new(t.weight_decay)
}

/// The learning-rate schedule: linear warm-up from lr/100 to lr, then cosine to `min_lr`.
/// Step k (from 0) of a warm-up of w steps takes lr/100 + k·(lr − lr/100)/w; step w + j of the
/// cosine's c = total − w steps takes min_lr + (lr − min_lr)(1 + cos(πj/c))/2.
pub fn schedule(t: &TrainConfig, steps_per_epoch: usize) -> Result<ModuleLrScheduler> {
    let total = (t.epochs * steps_per_epoch).max(2);
    let warm = ((t.warmup_epochs * steps_per_epoch as f64).round() as usize).clamp(1, total - 1);
    SequentialLrSchedulerConfig::new(
        vec![
            LrSchedulerConfig::Linear(LinearLrSchedulerConfig::new(t.lr / 100.0, t.lr, warm)),
            LrSchedulerConfig::Cosine(
                CosineAnnealingLrSchedulerConfig::new(t.lr, total - warm).with_min_lr(t.min_lr),
            ),
        ],
        vec![warm],
    )
    .init()
    .map_err(|m| Error::Config {
        path: "train".into(),
        message: format!("learning-rate schedule: {m}"),
    })
}

/// What training with a teacher adds to [`fit`] (`[distill]`, `[pseudo]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Teaching {
    /// Loss weights.
    pub spec: DistillSpec,
    /// `(student, teacher)` embedding widths, when embeddings are matched.
    pub embedding_dims: Option<(usize, usize)>,
}

/// Trains `model` (config `config`) on `train` and validates on `valid`.
pub fn fit(
    spec: FitSpec<'_>,
    model: Model,
    config: &ModelConfig,
    train: WindowDataset,
    valid: WindowDataset,
    shape: [usize; 2],
    noise: Arc<Vec<Vec<f32>>>,
) -> Result<FitOutcome> {
    fit_taught(spec, None, model, config, train, valid, shape, noise)
}

/// [`fit`] with a teacher: training batches carry the teacher's outputs and the loss adds the
/// distillation terms. Validation batches carry none, so the validation loss (and early
/// stopping on it) is the plain loss on the held-out labels, comparable across runs.
#[allow(clippy::too_many_arguments)]
pub fn fit_taught(
    spec: FitSpec<'_>,
    teaching: Option<Teaching>,
    model: Model,
    config: &ModelConfig,
    train: WindowDataset,
    valid: WindowDataset,
    shape: [usize; 2],
    noise: Arc<Vec<Vec<f32>>>,
) -> Result<FitOutcome> {
    let t = spec.train;
    let classes = config.num_classes;
    let main = spec.devices.first().cloned().ok_or_else(|| Error::Config {
        path: "train.devices".into(),
        message: "no device".into(),
    })?;
    // Burn's AUROC/AUC-PR metrics panic on an epoch without validation items: refuse first.
    if valid.is_empty() {
        return Err(Error::Data {
            message: "the validation split holds no windows (more recordings, or a larger \
                      data.valid_fraction)"
                .into(),
        });
    }
    main.seed(t.seed);
    let n_dev = spec.devices.len();
    // Each device takes one batch per step: an epoch has ⌈n / (batch · devices)⌉ steps.
    let mut steps = train.len().div_ceil(t.batch_size * n_dev).max(1);
    let train_len = if t.max_steps_per_epoch > 0 && steps > t.max_steps_per_epoch {
        steps = t.max_steps_per_epoch;
        steps * t.batch_size * n_dev
    } else {
        train.len()
    };
    let train = if train_len < train.len() {
        let idx = train.indices()[..train_len].to_vec();
        train.with_indices(idx)
    } else {
        train
    };
    let mut train_batcher =
        WindowBatcher::new(shape, classes, Some(augment_config(t)), noise, t.seed);
    if let Some(teach) = &teaching {
        train_batcher = train_batcher.with_teacher(teach.embedding_dims.map(|(_, e)| e));
    }
    let train_loader = DataLoaderBuilder::new(train_batcher)
        .batch_size(t.batch_size)
        .shuffle(t.seed)
        .num_workers(t.workers.max(1))
        .build(train);
    let valid_loader = DataLoaderBuilder::new(WindowBatcher::new(
        shape,
        classes,
        None,
        Arc::new(Vec::new()),
        t.seed,
    ))
    .batch_size(t.batch_size.max(32))
    .num_workers(1)
    .build(valid);

    let autodiff = main.clone().autodiff();
    let mut trainee = Trainee::new(
        model.fork(&autodiff).train(),
        LossSpec {
            kind: t.loss,
            smoothing: t.label_smoothing,
        },
    );
    if let Some(teach) = teaching {
        trainee = trainee.with_distill(teach.spec, teach.embedding_dims, &autodiff);
    }
    let optim = optimizer(t).init();
    let sched = schedule(t, steps)?;

    let strategy = if n_dev == 1 {
        ExecutionStrategy::SingleDevice(main.clone())
    } else {
        ExecutionStrategy::multi(spec.devices.clone(), MultiDeviceOptim::OptimMainDevice)
    };
    let dir: PathBuf = spec.dir.to_path_buf();
    let mut training = SupervisedTraining::new(&dir, train_loader, valid_loader)
        .with_metric_logger(FileMetricLogger::new(&dir))
        .metric_train_numeric(LossMetric::new())
        .metric_valid_numeric(LossMetric::new())
        .metric_train_numeric(LearningRateMetric::new())
        .metric_valid_numeric(AurocMetric::multilabel(ClassReduction::Macro))
        .metric_valid_numeric(AucPrMetric::multilabel(ClassReduction::Macro))
        .with_default_checkpointers()
        .with_training_strategy(strategy.into())
        .num_epochs(t.epochs)
        .summary();
    if let Some(cb) = spec.on_epoch {
        training = training.with_metric_logger(EpochLogger {
            names: HashMap::new(),
            last: HashMap::new(),
            callback: cb,
        });
    }
    if t.early_stopping > 0 {
        training = training.early_stopping(MetricEarlyStoppingStrategy::new(
            &LossMetric::new(),
            Aggregate::Mean,
            Direction::Lowest,
            Split::Valid,
            StoppingCondition::NoImprovementSince {
                n_epochs: t.early_stopping,
            },
        ));
    }
    if let Some(e) = spec.resume_epoch {
        training = training.checkpoint(e);
    }
    let result = training.launch(Learner::new(trainee, optim, sched));
    if let Some(e) = result.error {
        return Err(Error::Training {
            message: e.to_string(),
        });
    }
    let stopped = result.interrupted.as_ref().map(|s| format!("{s:?}"));
    let model = result.model.model.valid();
    let epochs = last_checkpoint(&dir).unwrap_or(t.epochs);
    Ok(FitOutcome {
        model,
        epochs,
        stopped,
    })
}
