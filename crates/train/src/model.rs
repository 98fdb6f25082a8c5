//! The model as the Burn Learner trains it: a [`silencio_models::Model`] plus its loss.
//!
//! Losses follow the BirdCLEF winners' recipes: binary cross-entropy on logits (multi-label,
//! soft targets for secondary labels and mixup) or focal loss (Lin et al. 2017, "Focal Loss for
//! Dense Object Detection"), with optional label smoothing towards 0.5.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::sigmoid;
use burn::train::{InferenceStep, MultiLabelClassificationOutput, TrainOutput, TrainStep};
use silencio_models::Model;

use crate::dataset::WindowBatch;
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
    /// The loss.
    #[module(skip)]
    pub loss: LossSpec,
}

/// Mean multi-label loss of `logits` against soft `targets` (both `[batch, classes]`).
pub fn multilabel_loss(logits: Tensor<2>, targets: Tensor<2>, spec: LossSpec) -> Tensor<1> {
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
        LossKind::Bce => bce.mean(),
        LossKind::Focal { gamma } => {
            let p = sigmoid(logits);
            // p_t = p·y + (1 − p)(1 − y); weight (1 − p_t)^γ.
            let pt = p.clone() * y.clone() + (p.neg().add_scalar(1.0)) * (y.neg().add_scalar(1.0));
            let w = pt.neg().add_scalar(1.0).clamp_min(0.0).powf_scalar(gamma);
            (w * bce).mean()
        }
    }
}

impl Trainee {
    /// Forward pass and loss; outputs are probabilities, metric targets are `target ≥ 0.5`.
    pub fn forward_loss(&self, batch: WindowBatch) -> MultiLabelClassificationOutput {
        // [b, 1, mels, frames] -> [b, classes]
        let logits = self.model.forward(batch.features).logits;
        let loss = multilabel_loss(logits.clone(), batch.targets.clone(), self.loss);
        MultiLabelClassificationOutput {
            loss,
            output: sigmoid(logits),
            targets: batch.targets.greater_equal_elem(0.5).int(),
        }
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
