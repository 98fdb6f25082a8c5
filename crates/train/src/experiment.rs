//! Experiment configuration: one TOML file per experiment under `experiments/`.
//!
//! Every field has a default, so a file names only what it changes; the embedded demo
//! experiment is [`Experiment::demo`]. The whole resolved config is logged to MLflow as params
//! and saved as an artefact, so a run can be repeated from its record.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use silencio_data::PeriodFilter;
use silencio_models::Architecture;

use crate::{Error, Result};

/// A whole experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    /// Experiment name (MLflow experiment and registered model name).
    pub name: String,
    /// What to train on.
    #[serde(default)]
    pub data: DataConfig,
    /// What to train.
    #[serde(default)]
    pub model: ModelSpec,
    /// How to train.
    #[serde(default)]
    pub train: TrainConfig,
    /// How to evaluate.
    #[serde(default)]
    pub eval: EvalConfig,
    /// The bar a model must clear to be registered.
    #[serde(default)]
    pub gate: GateSpec,
    /// Where the result goes.
    #[serde(default)]
    pub output: OutputConfig,
    /// Knowledge distillation from a teacher store (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
    /// Pseudo-labelled soundscape windows from a teacher store (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pseudo: Option<PseudoConfig>,
    /// Site/hour priors and temporal smoothing stored in the bundle (absent: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priors: Option<PriorsConfig>,
}

/// Data: a BirdCLEF-layout root, turned into shards by the ETL when they are missing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// BirdCLEF root (`taxonomy.csv`, `train.csv`, `train_audio/`).
    pub root: PathBuf,
    /// Shard directory (made by the ETL when it has no complete manifest).
    pub shards: PathBuf,
    /// Feature recipe.
    pub recipe: String,
    /// Keep at most this many windows per clip (0 = all).
    pub max_windows_per_clip: usize,
    /// Share of recordings held out for validation.
    pub valid_fraction: f64,
    /// Cross-validation instead of `valid_fraction`: the recordings are stratified into
    /// `folds` folds and fold `fold` is held out (0 = off). Running every fold of one seed scores
    /// every recording that can be held out once, which is how a small pool gets a larger
    /// test set (see `silencio eval compare`).
    pub folds: usize,
    /// The fold held out, in `0..folds`.
    pub fold: usize,
    /// Seed of the split and of the mixed test sets' calls; `train.seed` when absent. Set it
    /// to vary the training seed alone while the held-out recordings stay the same.
    pub split_seed: Option<u64>,
    /// Which period to train on: `all`, `initial` (older 70 %) or `retrain` (newer 30 %).
    pub period: PeriodFilter,
    /// Background recordings for noise mixing and the mixed test set.
    pub backgrounds: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("datasets/demo/birdclef"),
            shards: PathBuf::from("demo-shards"),
            recipe: "birdclef".into(),
            max_windows_per_clip: 0,
            valid_fraction: 0.2,
            folds: 0,
            fold: 0,
            split_seed: None,
            period: PeriodFilter::All,
            backgrounds: Some(PathBuf::from("datasets/demo/backgrounds")),
        }
    }
}

impl DataConfig {
    /// The cross-validation fold held out, when `folds` is set.
    pub fn cv(&self) -> Option<silencio_data::CvFold> {
        (self.folds > 0).then_some(silencio_data::CvFold {
            fold: self.fold,
            folds: self.folds,
        })
    }
}

/// The model: an architecture from scratch, a pretrained checkpoint, or a registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSpec {
    /// `efficientnet_b0`, `efficientnet_lite0`, `resnet50`, `cnn14`, or `tiny` (a narrow
    /// EfficientNet that trains in minutes on two CPU cores).
    pub arch: Architecture,
    /// Frame-wise + clip-wise SED attention head instead of the clip head.
    pub sed: bool,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// A PyTorch checkpoint to start from.
    pub pretrained: Option<PathBuf>,
    /// Its layout (see `silencio bundle create --layout`).
    pub layout: Option<String>,
    /// Environment variable that may hold the checkpoint path instead (e.g.
    /// `SILENCIO_LITE0_PTH`); it wins over `pretrained` when set.
    pub pretrained_env: Option<String>,
    /// Continue from the registry's model with this alias (`production`, `staging`) or version.
    pub from_registry: Option<String>,
    /// Train only a linear head on frozen embeddings of this member (`birdnet`).
    pub probe: Option<String>,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            arch: Architecture::Tiny,
            sed: false,
            dropout: 0.2,
            pretrained: None,
            layout: None,
            pretrained_env: None,
            from_registry: None,
            probe: None,
        }
    }
}

/// Loss function.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LossKind {
    /// Binary cross-entropy on logits.
    Bce,
    /// Focal loss (Lin et al. 2017) with focusing parameter `gamma`.
    Focal {
        /// Focusing parameter.
        gamma: f32,
    },
}

/// Training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Epochs.
    pub epochs: usize,
    /// Windows per step (per device).
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f32,
    /// Linear warm-up length, in epochs (the rest is cosine decay to `min_lr`).
    pub warmup_epochs: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Loss.
    pub loss: LossKind,
    /// Targets move towards 0.5 by this much (0 = none).
    pub label_smoothing: f32,
    /// Target of secondary labels (re-weights what the ETL stored).
    pub secondary_weight: f32,
    /// Probability of mixing a batch item with another (0 = off).
    pub mixup_prob: f64,
    /// Beta(α, α) of the mixing weight.
    pub mixup_alpha: f64,
    /// SpecAugment time masks per window.
    pub time_masks: usize,
    /// Widest time mask, in frames.
    pub time_mask_frames: usize,
    /// SpecAugment frequency masks per window.
    pub freq_masks: usize,
    /// Widest frequency mask, in mel bins.
    pub freq_mask_bins: usize,
    /// Probability of adding a background recording.
    pub noise_prob: f64,
    /// SNR range of the background, dB.
    pub noise_snr_db: [f32; 2],
    /// Random 5 s crops across neighbouring windows of a clip instead of the fixed grid.
    pub random_crop: bool,
    /// Sample windows with weights ∝ 1/√(class count) instead of uniformly.
    pub balanced_sampling: bool,
    /// Stop after this many epochs without a lower validation loss (0 = never).
    pub early_stopping: usize,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
    /// Devices, e.g. `["flex"]`, `["cuda:0", "cuda:1"]`, `["wgpu:0"]`.
    pub devices: Vec<String>,
    /// Stop each epoch after this many steps (0 = the whole split); for scaling runs.
    pub max_steps_per_epoch: usize,
    /// Data-loading worker threads.
    pub workers: usize,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 12,
            batch_size: 16,
            lr: 2e-3,
            weight_decay: 1e-2,
            warmup_epochs: 1.0,
            min_lr: 1e-5,
            loss: LossKind::Bce,
            label_smoothing: 0.0,
            secondary_weight: 0.5,
            mixup_prob: 0.0,
            mixup_alpha: 0.4,
            time_masks: 2,
            time_mask_frames: 30,
            freq_masks: 2,
            freq_mask_bins: 12,
            noise_prob: 0.0,
            noise_snr_db: [0.0, 20.0],
            random_crop: true,
            balanced_sampling: false,
            early_stopping: 0,
            seed: 0,
            devices: vec!["flex".into()],
            max_steps_per_epoch: 0,
            workers: 1,
        }
    }
}

/// Evaluation: the validation windows, and a mixed soundscape test set made from held-out calls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Minutes of mixed soundscapes (0 = none).
    pub mix_minutes: usize,
    /// SNR range of the mixed calls, dB.
    pub mix_snr_db: [f64; 2],
    /// Seed of the mixer.
    pub mix_seed: u64,
    /// Windows per forward pass.
    pub batch_size: usize,
    /// Failure suites, each a mixed set from held-out calls: `weak` (−20…−10 dB SNR),
    /// `overlap` (2–4 simultaneous species in every window), `interference` (half the windows
    /// hold only background: false alarms on bird chorus and urban noise).
    pub suites: Vec<String>,
    /// Minutes of each failure suite.
    pub suite_minutes: usize,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            mix_minutes: 2,
            mix_snr_db: [-20.0, 10.0],
            mix_seed: 0,
            batch_size: 32,
            suites: vec!["weak".into(), "overlap".into(), "interference".into()],
            suite_minutes: 1,
        }
    }
}

/// Quality gate: thresholds on the two evaluation reports (see `silencio_eval::GateConfig`:
/// `min_macro_auc`, `min_macro_ap`, `min_slice = [{dimension, value, min_macro_auc}]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateSpec {
    /// Bars on the validation windows.
    pub valid: silencio_eval::GateConfig,
    /// Bars on the mixed soundscapes.
    pub mixed: silencio_eval::GateConfig,
}

/// Where results go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Run directories (`<runs>/<run name>/`: checkpoints, report, bundle).
    pub runs: PathBuf,
    /// Registered model name (default `el-silencio`: every experiment makes candidate versions
    /// of the one model that `silencio identify` and the server use).
    pub model_name: Option<String>,
    /// Alias given to a model that passes the gate.
    pub alias: String,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            runs: PathBuf::from("runs"),
            model_name: None,
            alias: "staging".into(),
        }
    }
}

/// How the student's embedding is matched to the teacher's (through a learnt projection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingLoss {
    /// Mean of 1 − cos(projected student embedding, teacher embedding).
    Cosine,
    /// Mean squared difference of the projected student and the teacher embedding.
    Mse,
}

fn one() -> f32 {
    1.0
}

fn one_usize() -> usize {
    1
}

fn half() -> f64 {
    0.5
}

fn half_f32() -> f32 {
    0.5
}

fn cosine() -> EmbeddingLoss {
    EmbeddingLoss::Cosine
}

/// `[distill]`: knowledge distillation (Hinton et al. 2015) from a teacher store written by
/// `trainer teach`. The loss is `hard_weight`·hard + `weight`·soft + `embedding_weight`·embedding;
/// the soft term covers only the classes the teacher scores and the windows it scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The teacher: a directory name under `<data.shards>/teachers/`, or a path (anything with
    /// a `/`).
    pub teacher: PathBuf,
    /// The model that writes that store (a model spec as `trainer teach --teacher` takes it:
    /// `birdnet`, `registry:production`, a bundle, an ensemble); the recipe scores the labelled
    /// clips and the soundscapes with it before training. Absent: the store must exist.
    #[serde(default)]
    pub teacher_model: Option<String>,
    /// Weight of the soft-target loss (default 1).
    #[serde(default = "one")]
    pub weight: f32,
    /// Distillation temperature T (default 1; > 0).
    #[serde(default = "one")]
    pub temperature: f32,
    /// Weight of the embedding-matching loss (default 0 = off, no projection is learnt).
    #[serde(default)]
    pub embedding_weight: f32,
    /// How embeddings are matched (default cosine).
    #[serde(default = "cosine")]
    pub embedding_loss: EmbeddingLoss,
    /// Weight of the loss on the hard (and pseudo) labels (default 1).
    #[serde(default = "one")]
    pub hard_weight: f32,
}

/// How teacher probabilities become pseudo-labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PseudoLabels {
    /// The probabilities as they are.
    Soft,
    /// Probabilities below `threshold` become 0, the others stay as they are (soft): the
    /// usual guard against low-confidence noise in pseudo-labelling.
    Threshold,
    /// `p^power`: a power > 1 pushes uncertain probabilities towards 0 and keeps confident
    /// ones (the power transform the BirdCLEF 2025 winner applied to its pseudo-labels so that
    /// their noise did not build up over the rounds).
    Power,
}

fn soft() -> PseudoLabels {
    PseudoLabels::Soft
}

/// `[pseudo]`: the teacher's pseudo-labelled soundscape windows mixed into training (noisy
/// student: they go through the same augmentation as the labelled windows).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudoConfig {
    /// The teacher: a directory name under `<data.shards>/teachers/`, or a path.
    pub teacher: PathBuf,
    /// The model that writes the first round's teacher store (a model spec as `trainer teach
    /// --teacher` takes it); the rounds orchestration reads it, a single run does not.
    #[serde(default)]
    pub teacher_model: Option<String>,
    /// How probabilities become targets (default soft).
    #[serde(default = "soft")]
    pub labels: PseudoLabels,
    /// Cut-off of `labels = "threshold"` (default 0.5; in [0, 1]).
    #[serde(default = "half_f32")]
    pub threshold: f32,
    /// Exponent of `labels = "power"` (default 1; > 0).
    #[serde(default = "one")]
    pub power: f32,
    /// Pseudo-labelled windows per labelled training window in each epoch (default 0.5; at
    /// most every window of the pool), a different part of the pool each epoch.
    #[serde(default = "half")]
    pub ratio: f64,
    /// Rounds of teacher → student (default 1); the student of round k teaches round k+1.
    #[serde(default = "one_usize")]
    pub rounds: usize,
    /// An experiment of another model family that trains alternate rounds (cross-family swap),
    /// relative to this experiment's file.
    #[serde(default)]
    pub swap: Option<PathBuf>,
    /// Windows whose highest teacher probability (covered classes) is below this are dropped.
    #[serde(default)]
    pub min_confidence: Option<f32>,
}

/// `[priors]`: site and hour priors learnt from a teacher's scores on the soundscapes, and
/// temporal smoothing per class group, stored in the bundle (`priors.json`) and applied by the
/// model facade (see `silencio_infer::priors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PriorsConfig {
    /// The teacher store to learn from (default: the `[pseudo]` teacher in effect, else the
    /// `[distill]` one).
    pub teacher: Option<PathBuf>,
    /// Weight of the prior's shift in logits.
    pub strength: f32,
    /// Shrinkage of a recorder's or hour's mean towards the global one, in windows.
    pub shrinkage_windows: f64,
    /// Smooth scores over neighbouring windows (insects and frogs more than birds).
    pub smoothing: bool,
}

impl Default for PriorsConfig {
    fn default() -> Self {
        Self {
            teacher: None,
            strength: silencio_infer::priors::DEFAULT_STRENGTH,
            shrinkage_windows: silencio_infer::priors::DEFAULT_SHRINKAGE_WINDOWS,
            smoothing: true,
        }
    }
}

/// The directory of a teacher named in `[distill]` or `[pseudo]`: a plain name is a directory
/// under `<shards>/teachers/`, anything else (a path with a separator) is taken as it is.
pub fn teacher_dir(shards: &Path, teacher: &Path) -> PathBuf {
    if teacher.components().count() == 1 && teacher.is_relative() {
        crate::teacher::TeacherStore::dir_for(shards, &teacher.to_string_lossy())
    } else {
        teacher.to_path_buf()
    }
}

/// The registered model every experiment adds versions to unless it names another.
pub const DEFAULT_MODEL_NAME: &str = "el-silencio";

/// The embedded default experiment (the same as `experiments/demo.toml`).
pub const DEMO_TOML: &str = include_str!("../../../experiments/demo.toml");

impl Experiment {
    /// The seed of the split (and of the calls mixed from it): `data.split_seed`, else
    /// `train.seed`.
    pub fn split_seed(&self) -> u64 {
        self.data.split_seed.unwrap_or(self.train.seed)
    }

    /// The embedded demo experiment.
    pub fn demo() -> Result<Self> {
        Self::parse(DEMO_TOML, Path::new("experiments/demo.toml"))
    }

    /// Reads an experiment file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses and checks an experiment.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let mut exp: Self = toml::from_str(text).map_err(|e| Error::Config {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        // The swap experiment is a sibling file: named relative to this one.
        if let Some(p) = exp.pseudo.as_mut()
            && let Some(swap) = p.swap.as_mut()
            && swap.is_relative()
            && let Some(dir) = path.parent()
        {
            *swap = dir.join(&*swap);
        }
        exp.check().map_err(|message| Error::Config {
            path: path.display().to_string(),
            message,
        })?;
        Ok(exp)
    }

    fn check(&self) -> std::result::Result<(), String> {
        self.check_base()?;
        self.check_teaching()
    }

    /// Every check but the teaching sections' (which may load the swap experiment).
    fn check_base(&self) -> std::result::Result<(), String> {
        let t = &self.train;
        if self.name.is_empty() || self.name.contains(['/', '\\']) || self.name.contains("..") {
            return Err(format!(
                "name {:?} must be a plain, non-empty name",
                self.name
            ));
        }
        if t.epochs == 0 || t.batch_size == 0 {
            return Err("epochs and batch_size must be > 0".into());
        }
        if !(t.lr > 0.0 && t.min_lr >= 0.0 && t.min_lr <= t.lr) {
            return Err("need lr > 0 and 0 <= min_lr <= lr".into());
        }
        if !(0.0..0.5).contains(&t.label_smoothing) {
            return Err("label_smoothing must lie in [0, 0.5)".into());
        }
        if !(0.0..=1.0).contains(&t.secondary_weight)
            || !(0.0..=1.0).contains(&t.mixup_prob)
            || !(0.0..=1.0).contains(&t.noise_prob)
        {
            return Err("secondary_weight, mixup_prob and noise_prob must lie in [0, 1]".into());
        }
        if t.mixup_alpha <= 0.0 {
            return Err("mixup_alpha must be > 0".into());
        }
        if t.devices.is_empty() {
            return Err("devices must name at least one device".into());
        }
        if let Some(cv) = self.data.cv() {
            cv.check()
                .map_err(|e| format!("data.folds/data.fold: {e}"))?;
        }
        if let Some(s) = self
            .eval
            .suites
            .iter()
            .find(|s| !["weak", "overlap", "interference"].contains(&s.as_str()))
        {
            return Err(format!(
                "eval.suites: unknown suite {s:?} (use weak, overlap, interference)"
            ));
        }
        if let LossKind::Focal { gamma } = t.loss
            && (gamma.is_nan() || gamma < 0.0)
        {
            return Err("focal gamma must be >= 0".into());
        }
        if let Some(p) = &self.model.probe
            && p != "birdnet"
        {
            return Err(format!(
                "model.probe {p:?} (the one embedding model is \"birdnet\")"
            ));
        }
        if self.model.pretrained.is_some() != self.model.layout.is_some()
            && self.model.pretrained_env.is_none()
        {
            return Err("model.pretrained and model.layout go together".into());
        }
        Ok(())
    }

    fn check_teaching(&self) -> std::result::Result<(), String> {
        let nonneg = |v: f32| v.is_finite() && v >= 0.0;
        if (self.distill.is_some() || self.pseudo.is_some()) && self.model.probe.is_some() {
            return Err("[distill] and [pseudo] train a network, not a model.probe".into());
        }
        // A store the recipe writes goes under <shards>/teachers/<name>: a name, not a path.
        let plain = |t: &Path| t.components().count() == 1 && t.is_relative();
        for (section, teacher, model) in [
            (
                "distill",
                self.distill.as_ref().map(|d| &d.teacher),
                self.distill.as_ref().and_then(|d| d.teacher_model.as_ref()),
            ),
            (
                "pseudo",
                self.pseudo.as_ref().map(|p| &p.teacher),
                self.pseudo.as_ref().and_then(|p| p.teacher_model.as_ref()),
            ),
        ] {
            if let (Some(t), Some(_)) = (teacher, model)
                && !plain(t)
            {
                return Err(format!(
                    "{section}.teacher must be a plain name when {section}.teacher_model is set \
                     (the store is written to <data.shards>/teachers/<name>), not {}",
                    t.display()
                ));
            }
        }
        if let Some(d) = &self.distill {
            if !(d.temperature.is_finite() && d.temperature > 0.0) {
                return Err("distill.temperature must be > 0".into());
            }
            if !(nonneg(d.weight) && nonneg(d.embedding_weight) && nonneg(d.hard_weight)) {
                return Err("distill.weight, embedding_weight and hard_weight must be >= 0".into());
            }
        }
        if let Some(p) = &self.pseudo {
            if !(0.0..=1.0).contains(&p.threshold) {
                return Err("pseudo.threshold must lie in [0, 1]".into());
            }
            if !(p.power.is_finite() && p.power > 0.0) {
                return Err("pseudo.power must be > 0".into());
            }
            if !(p.ratio.is_finite() && p.ratio >= 0.0) {
                return Err("pseudo.ratio must be >= 0".into());
            }
            if p.rounds == 0 {
                return Err("pseudo.rounds must be >= 1".into());
            }
            if let Some(c) = p.min_confidence
                && !(0.0..=1.0).contains(&c)
            {
                return Err("pseudo.min_confidence must lie in [0, 1]".into());
            }
            if let Some(swap) = &p.swap {
                // Parsed without following its own swap, so two files naming each other end.
                let text = std::fs::read_to_string(swap)
                    .map_err(|e| format!("pseudo.swap {}: {e}", swap.display()))?;
                let other: Self = toml::from_str(&text)
                    .map_err(|e| format!("pseudo.swap {}: {e}", swap.display()))?;
                other
                    .check_base()
                    .map_err(|e| format!("pseudo.swap {}: {e}", swap.display()))?;
            }
        }
        if let Some(pr) = &self.priors {
            if !(pr.strength.is_finite() && pr.strength >= 0.0) {
                return Err("priors.strength must be >= 0".into());
            }
            if !(pr.shrinkage_windows.is_finite() && pr.shrinkage_windows >= 0.0) {
                return Err("priors.shrinkage_windows must be >= 0".into());
            }
            if pr.teacher.is_none() && self.pseudo.is_none() && self.distill.is_none() {
                return Err(
                    "[priors] needs a teacher: priors.teacher, [pseudo] or [distill]".into(),
                );
            }
        }
        Ok(())
    }

    /// The registered model name.
    pub fn model_name(&self) -> String {
        self.output
            .model_name
            .clone()
            .unwrap_or_else(|| DEFAULT_MODEL_NAME.to_string())
    }

    /// Flat `key = value` pairs of the whole config, for MLflow params.
    pub fn params(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Ok(v) = serde_json::to_value(self) {
            flatten("", &v, &mut out);
        }
        out
    }
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::Null => {}
        serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_committed_experiment_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments");
        let mut names = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                let exp = Experiment::load(&p).unwrap();
                assert_eq!(
                    Some(exp.name.as_str()),
                    p.file_stem().and_then(|s| s.to_str())
                );
                names.push(exp.name);
            }
        }
        names.sort();
        for want in [
            "cnn14-sed",
            "birdnet-probe",
            "demo",
            "efficientnet-b0-finetune",
            "resnet50-scratch",
            "retrain",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
        assert_eq!(Experiment::demo().unwrap().name, "demo");
    }

    #[test]
    fn bad_experiments_are_typed_errors() {
        let bad = [
            "name = \"x\"\n[train]\nepochs = 0\n",
            "name = \"x\"\n[train]\nbogus = 1\n",
            "name = \"x\"\n[data]\nperiod = \"later\"\n",
            "name = \"../x\"\n",
            "name = \"x\"\n[train]\nlabel_smoothing = 0.7\n",
            "name = \"x\"\n[model]\nprobe = \"perch\"\n",
            "[train]\n",
            "name = \"x\"\n[distill]\nteacher = \"t\"\ntemperature = 0\n",
            "name = \"x\"\n[distill]\nteacher = \"t\"\nweight = -1\n",
            "name = \"x\"\n[distill]\nteacher = \"t\"\nembedding_loss = \"l1\"\n",
            "name = \"x\"\n[distill]\nteacher = \"t\"\nbogus = 1\n",
            "name = \"x\"\n[distill]\nweight = 1\n",
            "name = \"x\"\n[pseudo]\nteacher = \"t\"\nthreshold = 1.5\n",
            "name = \"x\"\n[pseudo]\nteacher = \"t\"\npower = 0\n",
            "name = \"x\"\n[pseudo]\nteacher = \"t\"\nratio = -0.5\n",
            "name = \"x\"\n[pseudo]\nteacher = \"t\"\nrounds = 0\n",
            "name = \"x\"\n[pseudo]\nteacher = \"t\"\nlabels = \"hard\"\n",
            "name = \"x\"\n[pseudo]\nteacher = \"t\"\nmin_confidence = 2\n",
            "name = \"x\"\n[pseudo]\nteacher = \"t\"\nswap = \"/nonexistent/x.toml\"\n",
            "name = \"x\"\n[pseudo]\nteacher = \"a/t\"\nteacher_model = \"birdnet\"\n",
            "name = \"x\"\n[distill]\nteacher = \"/t\"\nteacher_model = \"birdnet\"\n",
            "name = \"x\"\n[priors]\nstrength = 1\n",
            "name = \"x\"\n[pseudo]\nteacher = \"t\"\n[priors]\nstrength = -1\n",
            "name = \"x\"\n[data]\nfolds = 1\n",
            "name = \"x\"\n[data]\nfolds = 5\nfold = 5\n",
        ];
        for text in bad {
            let e = Experiment::parse(text, Path::new("t.toml")).unwrap_err();
            assert_eq!(e.kind(), "config", "{text}: {e}");
        }
    }

    #[test]
    fn folds_and_split_seed_choose_the_split() {
        let plain = Experiment::demo().unwrap();
        assert_eq!(plain.data.cv(), None);
        assert_eq!(plain.split_seed(), plain.train.seed);
        let text = "name = \"x\"\n[data]\nfolds = 5\nfold = 2\nsplit_seed = 7\n[train]\nseed = 3\n";
        let e = Experiment::parse(text, Path::new("t.toml")).unwrap();
        assert_eq!(
            e.data.cv(),
            Some(silencio_data::CvFold { fold: 2, folds: 5 })
        );
        assert_eq!(e.split_seed(), 7);
        assert_eq!(e.train.seed, 3);
        assert!(e.params().contains(&("data.fold".into(), "2".into())));
    }

    #[test]
    fn teaching_sections_parse_with_defaults_and_reach_the_params() {
        let plain = Experiment::demo().unwrap();
        assert!(plain.distill.is_none() && plain.pseudo.is_none());
        assert!(!plain.params().iter().any(|(k, _)| k.starts_with("distill")));
        let swap = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../experiments/cnn14-sed.toml");
        let text = format!(
            "name = \"x\"\n[distill]\nteacher = \"t1\"\ntemperature = 2.0\n\
             embedding_weight = 0.5\nembedding_loss = \"mse\"\n\
             [pseudo]\nteacher = \"/abs/t2\"\nlabels = \"power\"\npower = 2.0\n\
             rounds = 3\nswap = \"{}\"\n",
            swap.display()
        );
        let e = Experiment::parse(&text, Path::new("t.toml")).unwrap();
        let d = e.distill.as_ref().unwrap();
        assert_eq!(
            (d.weight, d.temperature, d.embedding_weight, d.hard_weight),
            (1.0, 2.0, 0.5, 1.0)
        );
        assert_eq!(d.embedding_loss, EmbeddingLoss::Mse);
        let p = e.pseudo.as_ref().unwrap();
        assert_eq!(p.labels, PseudoLabels::Power);
        assert_eq!((p.ratio, p.rounds, p.threshold), (0.5, 3, 0.5));
        let params = e.params();
        for (k, v) in [
            ("distill.temperature", "2.0"),
            ("distill.embedding_loss", "mse"),
            ("pseudo.labels", "power"),
            ("pseudo.rounds", "3"),
        ] {
            assert!(
                params.iter().any(|(a, b)| a == k && b == v),
                "{k} = {v} missing from {params:?}"
            );
        }
        // A plain name is a directory of the shards' teachers; a path is taken as it is.
        let shards = Path::new("/s");
        assert_eq!(teacher_dir(shards, &d.teacher), Path::new("/s/teachers/t1"));
        assert_eq!(teacher_dir(shards, &p.teacher), Path::new("/abs/t2"));
        // The sections survive the run directory's copy of the experiment.
        let again =
            Experiment::parse(&toml::to_string_pretty(&e).unwrap(), Path::new("t.toml")).unwrap();
        assert_eq!(again, e);
    }
}
