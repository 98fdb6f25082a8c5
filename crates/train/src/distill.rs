//! Distillation losses and pseudo-label transforms.
//!
//! - Soft targets: Hinton, Vinyals & Dean 2015, "Distilling the Knowledge in a Neural Network"
//!   (arXiv:1503.02531), with a temperature T and the T² factor that keeps the gradient scale
//!   independent of T. BirdCLEF is multi-label, so the softmax becomes one sigmoid per class
//!   (the per-class binary form of the same loss).
//! - Embedding matching through a learnt projection: FitNets (Romero et al. 2015, "FitNets:
//!   Hints for Thin Deep Nets", arXiv:1412.6550) regress a teacher's hidden layer through a
//!   learnt regressor; here the clip embeddings, by cosine or squared distance.
//! - Pseudo-labels: noisy student (Xie et al. 2020, "Self-training with Noisy Student improves
//!   ImageNet classification", arXiv:1911.04252): the teacher's labels are the student's targets
//!   and the student trains under noise (mixup, SpecAugment, background noise). BirdCLEF 2025's
//!   1st place raised its pseudo-labels to a power over several rounds; its 2nd place trained on
//!   soft (ensemble-averaged) probabilities, which acts as distillation.

use burn::tensor::Tensor;

use crate::experiment::{EmbeddingLoss, PseudoConfig, PseudoLabels};

/// Teacher probabilities are clamped to `[P_CLAMP, 1 − P_CLAMP]` before the logit, so that a
/// teacher's 0 or 1 gives a finite logit.
pub const P_CLAMP: f32 = 1e-6;

/// The distillation weights a [`crate::model::Trainee`] applies.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistillSpec {
    /// Weight of the loss on the hard (and pseudo) labels.
    pub hard_weight: f32,
    /// Weight of [`soft_target_loss`].
    pub weight: f32,
    /// Temperature T of [`soft_target_loss`].
    pub temperature: f32,
    /// Weight of [`embedding_loss`] (0 = off).
    pub embedding_weight: f32,
    /// Cosine or MSE.
    pub embedding_loss: EmbeddingLoss,
}

impl DistillSpec {
    /// The hard (and pseudo) labels alone, weight 1: what a `[pseudo]` run without
    /// `[distill]` trains with.
    pub fn hard_only() -> Self {
        Self {
            hard_weight: 1.0,
            weight: 0.0,
            temperature: 1.0,
            embedding_weight: 0.0,
            embedding_loss: EmbeddingLoss::Cosine,
        }
    }

    /// The weights of an experiment's `[distill]` section.
    pub fn from_config(c: &crate::experiment::DistillConfig) -> Self {
        Self {
            hard_weight: c.hard_weight,
            weight: c.weight,
            temperature: c.temperature,
            embedding_weight: c.embedding_weight,
            embedding_loss: c.embedding_loss,
        }
    }
}

/// Stable binary cross-entropy with logits, element-wise: max(x, 0) − x·y + log(1 + e^−|x|).
fn bce_with_logits(x: Tensor<2>, y: Tensor<2>) -> Tensor<2> {
    x.clone().clamp_min(0.0) - x.clone() * y + x.abs().neg().exp().log1p()
}

/// Σ(values·mask) / max(Σmask, 1): the mean over the masked entries (0 when none is).
pub fn masked_mean<const D: usize>(values: Tensor<D>, mask: Tensor<D>) -> Tensor<1> {
    let n = mask.clone().sum().clamp_min(1.0);
    (values * mask).sum() / n
}

/// Multi-label soft-target loss (Hinton et al. 2015, per-class sigmoid form).
///
/// With student logits z, teacher probabilities p (clamped to [[`P_CLAMP`], 1 − [`P_CLAMP`]]),
/// teacher logits t = ln(p / (1 − p)) and temperature T, the soft target is q = σ(t / T) and
/// the loss per element is T² · BCE(q, z / T) = T² · [max(z/T, 0) − (z/T)·q + ln(1 + e^−|z/T|)].
/// The result is the mean over the entries where `mask` is 1 (`[B, C]`: the classes the teacher
/// covers, on the windows it scored); 0 when the mask is empty.
pub fn soft_target_loss(
    student_logits: Tensor<2>,
    teacher_probs: Tensor<2>,
    mask: Tensor<2>,
    temperature: f32,
) -> Tensor<1> {
    let p = teacher_probs.clamp(P_CLAMP, 1.0 - P_CLAMP);
    let t = (p.clone() / p.neg().add_scalar(1.0)).log();
    let q = burn::tensor::activation::sigmoid(t.div_scalar(temperature));
    let z = student_logits.div_scalar(temperature);
    let per = bce_with_logits(z, q).mul_scalar(temperature * temperature);
    masked_mean(per, mask)
}

/// Embedding matching between the projected student embeddings `projected` `[B, E]` and the
/// teacher's `teacher` `[B, E]`, averaged over the windows where `present` `[B]` is 1:
/// cosine: 1 − a·b / (‖a‖‖b‖) per window (norms floored at 1e-8); MSE: the mean over E of
/// (a − b)² per window (so the whole is mean((a − b)²) over the present windows' entries).
pub fn embedding_loss(
    projected: Tensor<2>,
    teacher: Tensor<2>,
    present: Tensor<1>,
    kind: EmbeddingLoss,
) -> Tensor<1> {
    let per_window: Tensor<1> = match kind {
        EmbeddingLoss::Cosine => {
            let dot = (projected.clone() * teacher.clone()).sum_dim(1);
            let na = projected.powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-8);
            let nb = teacher.powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-8);
            (dot / (na * nb)).neg().add_scalar(1.0).squeeze_dim(1)
        }
        EmbeddingLoss::Mse => (projected - teacher)
            .powi_scalar(2)
            .mean_dim(1)
            .squeeze_dim(1),
    };
    masked_mean(per_window, present)
}

/// Threshold pseudo-labels: p below `threshold` becomes 0, the others stay as they are.
pub fn threshold_labels(probs: &[f32], threshold: f32) -> Vec<f32> {
    probs
        .iter()
        .map(|&p| if p < threshold { 0.0 } else { p })
        .collect()
}

/// Power-scaled pseudo-labels: p^power.
pub fn power_labels(probs: &[f32], power: f32) -> Vec<f32> {
    probs.iter().map(|&p| p.max(0.0).powf(power)).collect()
}

/// Soft pseudo-labels: the probabilities, clamped to [0, 1].
pub fn soft_labels(probs: &[f32]) -> Vec<f32> {
    probs.iter().map(|&p| p.clamp(0.0, 1.0)).collect()
}

/// The pseudo-labels `[pseudo]` asks for, from one window's teacher probabilities.
pub fn pseudo_labels(probs: &[f32], cfg: &PseudoConfig) -> Vec<f32> {
    match cfg.labels {
        PseudoLabels::Soft => soft_labels(probs),
        PseudoLabels::Threshold => threshold_labels(probs, cfg.threshold),
        PseudoLabels::Power => power_labels(probs, cfg.power),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t2(v: Vec<f32>, shape: [usize; 2]) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, shape), &Device::flex())
    }

    fn t1(v: Vec<f32>) -> Tensor<1> {
        let n = v.len();
        Tensor::from_data(TensorData::new(v, [n]), &Device::flex())
    }

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_data().try_to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn soft_target_loss_by_hand() {
        // 2 windows × 3 classes, T = 2.
        // Teacher p = 0.8 → t = ln 4 → t/T = ln 2 → q = σ(ln 2) = 2/3;
        //         p = 0.2 → q = 1/3;  p = 0.5 → t = 0 → q = 1/2.
        // Student z = 0 → z/T = 0 → BCE = ln 2 whatever q is.
        // Student z = 2 ln 3 → z/T = ln 3 → BCE = ln 3 − ln 3·q + ln(1 + 1/3)
        //   = ln 3·(1 − q) + ln(4/3).
        let ln3 = 3f32.ln();
        let z = t2(vec![0.0, 2.0 * ln3, 2.0 * ln3, 0.0, 0.0, 2.0 * ln3], [2, 3]);
        let p = t2(vec![0.8, 0.8, 0.2, 0.5, 0.2, 0.5], [2, 3]);
        // Class 1 uncovered on both windows; window 1, class 2 not scored either.
        let mask = t2(vec![1.0, 0.0, 1.0, 1.0, 0.0, 0.0], [2, 3]);
        let loss = scalar(soft_target_loss(z, p, mask, 2.0));
        // Masked entries: (0,0): ln 2; (0,2): q = 1/3 → ln 3·(2/3) + ln(4/3); (1,0): ln 2.
        // Mean of the three, times T² = 4.
        let want = 4.0 * (2.0 * 2f32.ln() + ln3 * 2.0 / 3.0 + (4.0f32 / 3.0).ln()) / 3.0;
        assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
        // An empty mask gives 0, not NaN.
        let none = soft_target_loss(
            t2(vec![1.0; 6], [2, 3]),
            t2(vec![0.5; 6], [2, 3]),
            t2(vec![0.0; 6], [2, 3]),
            2.0,
        );
        assert_eq!(scalar(none), 0.0);
    }

    #[test]
    fn soft_target_loss_at_t1_is_plain_bce_on_the_teacher_probabilities() {
        // T = 1: q = σ(logit p) = p; p = 0.8, z = 0 → BCE = ln 2 (z = 0 kills the q term);
        // p = 0.8, z = ln 4 → max(ln4,0) − ln 4·0.8 + ln(1 + 1/4) = 0.2·ln 4 + ln 1.25.
        let z = t2(vec![0.0, 4f32.ln()], [1, 2]);
        let p = t2(vec![0.8, 0.8], [1, 2]);
        let loss = scalar(soft_target_loss(z, p, t2(vec![1.0, 1.0], [1, 2]), 1.0));
        let want = (2f32.ln() + 0.2 * 4f32.ln() + 1.25f32.ln()) / 2.0;
        assert!((loss - want).abs() < 1e-5, "{loss} vs {want}");
    }

    #[test]
    fn embedding_losses_by_hand() {
        // Window 0: a = (1, 0), b = (0, 2): cos = 0 → 1; squared diff (1 + 4)/2 = 2.5.
        // Window 1: a = (3, 4), b = (6, 8): cos = 1 → 0; squared diff (9 + 16)/2 = 12.5.
        // Window 2: absent (its numbers must not count).
        let a = t2(vec![1.0, 0.0, 3.0, 4.0, 100.0, 0.0], [3, 2]);
        let b = t2(vec![0.0, 2.0, 6.0, 8.0, 0.0, 100.0], [3, 2]);
        let present = t1(vec![1.0, 1.0, 0.0]);
        let cos = scalar(embedding_loss(
            a.clone(),
            b.clone(),
            present.clone(),
            EmbeddingLoss::Cosine,
        ));
        // (1 + 0) / 2.
        assert!((cos - 0.5).abs() < 1e-6, "{cos}");
        let mse = scalar(embedding_loss(a, b, present, EmbeddingLoss::Mse));
        // (2.5 + 12.5) / 2.
        assert!((mse - 7.5).abs() < 1e-5, "{mse}");
    }

    #[test]
    fn pseudo_label_transforms_by_hand() {
        let p = [0.1, 0.5, 0.9, 0.0];
        // Below 0.5 → 0; 0.5 and 0.9 kept as they are.
        assert_eq!(threshold_labels(&p, 0.5), vec![0.0, 0.5, 0.9, 0.0]);
        // Squares: 0.01, 0.25, 0.81, 0.
        let sq = power_labels(&p, 2.0);
        for (g, w) in sq.iter().zip([0.01, 0.25, 0.81, 0.0]) {
            assert!((g - w).abs() < 1e-7, "{sq:?}");
        }
        assert_eq!(soft_labels(&[1.5, -0.1, 0.3]), vec![1.0, 0.0, 0.3]);
    }
}
