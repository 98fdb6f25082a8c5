//! The model as the Burn Learner trains it: a [`silencio_models::Model`] plus its loss.
//!
//! Losses follow the BirdCLEF winners' recipes: binary cross-entropy on logits (multi-label,
//! soft targets for secondary labels and mixup) or focal loss (Lin et al. 2017, "Focal Loss for
//! Dense Object Detection"), with optional label smoothing towards 0.5. With a teacher
//! (`[distill]`, `[pseudo]`) the loss adds the terms of [`crate::distill`].

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};
use burn::train::{InferenceStep, MultiLabelClassificationOutput, TrainOutput, TrainStep};
use silencio_models::Model;

use crate::dataset::{DistillBatch, WindowBatch};
use crate::distill::{self, DistillSpec};
use crate::experiment::LossKind;

/// Loss settings carried by the trainee (not parameters: skipped by the module record).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossSpec {
    /// BCE or focal.
    pub kind: LossKind,
    /// Label smoothing ε: targets become y(1−ε) + ε/2.
    pub smoothing: f32,
}

/// Model + loss, trained by the Learner.
#[derive(Module, Debug)]
pub struct Trainee {
    /// The network.
    pub model: Model,
    /// Student embedding → teacher embedding, learnt when embeddings are matched
    /// (`distill.embedding_weight > 0`); not part of the bundled model.
    pub projection: Option<Linear>,
    /// The loss.
    #[module(skip)]
    pub loss: LossSpec,
    /// Distillation weights (None: the hard loss alone, as without a teacher).
    #[module(skip)]
    pub distill: Option<DistillSpec>,
}

/// Width of the embedding [`Model::embed`] gives for a model of `config`: the clip head's
/// hidden width if it has one, else the backbone's channels.
pub fn embedding_dim(config: &silencio_models::ModelConfig) -> usize {
    match &config.head {
        silencio_models::HeadConfig::Clip(h) => {
            h.hidden.unwrap_or_else(|| config.feature_channels())
        }
        silencio_models::HeadConfig::Sed(_) => config.feature_channels(),
    }
}

impl Trainee {
    /// A trainee without distillation: `model` under `loss`.
    pub fn new(model: Model, loss: LossSpec) -> Self {
        Self {
            model,
            projection: None,
            loss,
            distill: None,
        }
    }

    /// Adds distillation: `spec`'s weights, and a projection from the student's embedding
    /// (`student_dim`) to the teacher's (`teacher_dim`) when embeddings are matched.
    pub fn with_distill(
        mut self,
        spec: DistillSpec,
        dims: Option<(usize, usize)>,
        device: &Device,
    ) -> Self {
        self.projection = match dims {
            Some((s, t)) if spec.embedding_weight > 0.0 => {
                Some(LinearConfig::new(s, t).init(device))
            }
            _ => None,
        };
        self.distill = Some(spec);
        self
    }
}

/// Element-wise multi-label loss of `logits` against soft `targets` (both `[batch, classes]`).
pub fn multilabel_loss_elements(
    logits: Tensor<2>,
    targets: Tensor<2>,
    spec: LossSpec,
) -> Tensor<2> {
    let eps = spec.smoothing;
    let y = if eps > 0.0 {
        targets.mul_scalar(1.0 - eps).add_scalar(eps / 2.0)
    } else {
        targets
    };
    // Stable BCE with logits: max(x, 0) − x·y + log(1 + e^−|x|).
    let bce = logits.clone().clamp_min(0.0) - logits.clone() * y.clone()
        + logits.clone().abs().neg().exp().log1p();
    match spec.kind {
        LossKind::Bce => bce,
        LossKind::Focal { gamma } => {
            let p = sigmoid(logits);
            // p_t = p·y + (1 − p)(1 − y); weight (1 − p_t)^γ.
            let pt = p.clone() * y.clone() + (p.neg().add_scalar(1.0)) * (y.neg().add_scalar(1.0));
            let w = pt.neg().add_scalar(1.0).clamp_min(0.0).powf_scalar(gamma);
            w * bce
        }
    }
}

/// Mean multi-label loss of `logits` against soft `targets` (both `[batch, classes]`).
pub fn multilabel_loss(logits: Tensor<2>, targets: Tensor<2>, spec: LossSpec) -> Tensor<1> {
    multilabel_loss_elements(logits, targets, spec).mean()
}

impl Trainee {
    /// Forward pass and loss; outputs are probabilities, metric targets are `target ≥ 0.5`.
    pub fn forward_loss(&self, batch: WindowBatch) -> MultiLabelClassificationOutput {
        let WindowBatch {
            features,
            targets,
            distill,
        } = batch;
        let (logits, loss) = match distill {
            // Without teacher fields (validation, runs without a teacher): the plain loss.
            None => {
                // [b, 1, mels, frames] -> [b, classes]
                let logits = self.model.forward(features).logits;
                let loss = multilabel_loss(logits.clone(), targets.clone(), self.loss);
                (logits, loss)
            }
            Some(d) => self.distill_loss(features, targets.clone(), d),
        };
        MultiLabelClassificationOutput {
            loss,
            output: sigmoid(logits),
            targets: targets.greater_equal_elem(0.5).int(),
        }
    }

    /// hard_weight · hard + weight · soft + embedding_weight · embedding, where the hard term
    /// is the loss on the targets averaged over the entries `target_mask` keeps (a pseudo
    /// window's uncovered classes carry no label).
    fn distill_loss(
        &self,
        features: Tensor<4>,
        targets: Tensor<2>,
        d: DistillBatch,
    ) -> (Tensor<2>, Tensor<1>) {
        let spec = self.distill.unwrap_or_else(DistillSpec::hard_only);
        let matching = match (&self.projection, d.teacher_embedding) {
            (Some(p), Some(e)) if spec.embedding_weight > 0.0 => Some((p, e)),
            _ => None,
        };
        let (logits, student_embedding) = match matching {
            Some(_) => {
                let (out, e) = self.model.forward_with_embedding(features);
                (out.logits, Some(e))
            }
            None => (self.model.forward(features).logits, None),
        };
        let hard = distill::masked_mean(
            multilabel_loss_elements(logits.clone(), targets, self.loss),
            d.target_mask,
        );
        let mut loss = hard.mul_scalar(spec.hard_weight);
        if spec.weight > 0.0 {
            let soft = distill::soft_target_loss(
                logits.clone(),
                d.teacher_probs,
                d.teacher_mask,
                spec.temperature,
            );
            loss = loss + soft.mul_scalar(spec.weight);
        }
        if let (Some((p, teacher)), Some(student)) = (matching, student_embedding) {
            let emb = distill::embedding_loss(
                p.forward(student),
                teacher,
                d.embedding_present,
                spec.embedding_loss,
            );
            loss = loss + emb.mul_scalar(spec.embedding_weight);
        }
        (logits, loss)
    }
}

impl TrainStep for Trainee {
    type Input = WindowBatch;
    type Output = MultiLabelClassificationOutput;

    fn step(&self, batch: WindowBatch) -> TrainOutput<MultiLabelClassificationOutput> {
        let out = self.forward_loss(batch);
        let grads = out.loss.backward();
        TrainOutput::new(self, grads, out)
    }
}

impl InferenceStep for Trainee {
    type Input = WindowBatch;
    type Output = MultiLabelClassificationOutput;

    fn step(&self, batch: WindowBatch) -> MultiLabelClassificationOutput {
        self.forward_loss(batch)
    }
}
