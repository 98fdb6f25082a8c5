//! Classification heads over a backbone's `[B, C, freq, time]` feature map.
//!
//! - [`ClipHead`]: one prediction per input window. `Avg` pooling is torchvision's
//!   `avgpool → dropout → Linear`; `MaxMean` pooling plus a hidden layer is PANNs CNN14's
//!   (`mean over freq → max + mean over time → fc1 + ReLU → fc_audioset`, Kong et al. 2020).
//! - [`SedHead`]: sound-event-detection attention head, frame-wise and clip-wise outputs.
//!   Follows PANNs' decision-level attention (`AttBlock` in audioset_tagging_cnn
//!   `pytorch/models.py`, `Cnn14_DecisionLevelAtt`) in the form the BirdCLEF 2021–2025 SED
//!   solutions use (`AttBlockV2`: max+avg 1-D smoothing over time, `fc1`, then `att` and `cla`
//!   1×1 convolutions, softmax(tanh(att)) over time). Deviation: the clip output is the
//!   attention-weighted mean of frame *logits* rather than of frame probabilities, so that
//!   both outputs are logits and train with the same BCE-with-logits loss.

use burn::module::Module;
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::pool::{AvgPool1d, AvgPool1dConfig, MaxPool1d, MaxPool1dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig1d};
use burn::tensor::activation::{relu, softmax, tanh};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

/// How a clip head pools the feature map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean over frequency and time (torchvision's global average pooling).
    Avg,
    /// Mean over frequency, then max + mean over time (PANNs).
    MaxMean,
}

/// Hyper-parameters of a [`ClipHead`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipHeadConfig {
    /// Pooling of the feature map.
    pub pooling: Pooling,
    /// Width of an optional hidden layer with ReLU (PANNs `fc1`: 2048).
    pub hidden: Option<usize>,
    /// Dropout before each linear layer (training only).
    pub dropout: f64,
}

/// Global pooling + optional hidden layer + linear classifier.
#[derive(Module, Debug)]
pub struct ClipHead {
    /// Optional hidden layer (`fc1` in PANNs).
    pub hidden: Option<Linear>,
    /// The classifier (`classifier.1` in torchvision, `fc_audioset` in PANNs, `fc` in ResNet).
    pub fc: Linear,
    /// Dropout (training only).
    pub dropout: Dropout,
    /// Pooling kind.
    #[module(skip)]
    pub pooling: Pooling,
}

impl ClipHeadConfig {
    /// Builds the head for `channels` input channels and `classes` outputs.
    pub fn init(&self, channels: usize, classes: usize, device: &Device) -> ClipHead {
        let hidden = self
            .hidden
            .map(|h| LinearConfig::new(channels, h).init(device));
        let d = self.hidden.unwrap_or(channels);
        ClipHead {
            hidden,
            fc: LinearConfig::new(d, classes).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
            pooling: self.pooling,
        }
    }
}

impl ClipHead {
    /// The clip embedding: pooled features, through the hidden layer if any. `[B, C, F, T] -> [B, E]`.
    pub fn embed(&self, x: Tensor<4>) -> Tensor<2> {
        let [b, c, _, _] = x.dims();
        let pooled: Tensor<2> = match self.pooling {
            Pooling::Avg => x.mean_dims(&[2, 3]).reshape([b, c]),
            Pooling::MaxMean => {
                // [B, C, F, T] -> [B, C, T]
                let x: Tensor<3> = x.mean_dim(2).squeeze_dim(2);
                (x.clone().max_dim(2) + x.mean_dim(2)).reshape([b, c])
            }
        };
        match &self.hidden {
            Some(h) => relu(h.forward(self.dropout.forward(pooled))),
            None => pooled,
        }
    }

    /// Clip logits `[B, classes]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        self.fc.forward(self.dropout.forward(self.embed(x)))
    }
}

/// Hyper-parameters of a [`SedHead`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SedHeadConfig {
    /// Dropout before `fc1` and before the attention (training only).
    pub dropout: f64,
}

/// Attention head: frame-wise and clip-wise logits.
#[derive(Module, Debug)]
pub struct SedHead {
    /// Per-frame projection `C → C` with ReLU.
    pub fc1: Linear,
    /// Attention logits per class and frame.
    pub att: Conv1d,
    /// Class logits per frame.
    pub cla: Conv1d,
    /// 3-frame max smoothing over time.
    pub max_pool: MaxPool1d,
    /// 3-frame mean smoothing over time.
    pub avg_pool: AvgPool1d,
    /// Dropout (training only).
    pub dropout: Dropout,
}

/// Outputs of a SED head.
#[derive(Debug, Clone)]
pub struct SedOutput {
    /// Clip logits `[B, classes]`.
    pub clip: Tensor<2>,
    /// Frame logits `[B, frames, classes]` (frames at the backbone's time resolution).
    pub frames: Tensor<3>,
    /// Attention weights `[B, classes, frames]` (sum to 1 over frames).
    pub attention: Tensor<3>,
}

impl SedHeadConfig {
    /// Builds the head for `channels` input channels and `classes` outputs.
    pub fn init(&self, channels: usize, classes: usize, device: &Device) -> SedHead {
        let smooth = PaddingConfig1d::Explicit(1, 1);
        SedHead {
            fc1: LinearConfig::new(channels, channels).init(device),
            att: Conv1dConfig::new(channels, classes, 1).init(device),
            cla: Conv1dConfig::new(channels, classes, 1).init(device),
            max_pool: MaxPool1dConfig::new(3)
                .with_stride(1)
                .with_padding(smooth.clone())
                .init(),
            avg_pool: AvgPool1dConfig::new(3)
                .with_stride(1)
                .with_padding(smooth)
                .init(),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl SedHead {
    /// `[B, C, F, T]` feature map to clip and frame logits.
    pub fn forward(&self, x: Tensor<4>) -> SedOutput {
        // [B, C, F, T] -> [B, C, T]
        let x: Tensor<3> = x.mean_dim(2).squeeze_dim(2);
        let x = self.max_pool.forward(x.clone()) + self.avg_pool.forward(x);
        let x = self.dropout.forward(x);
        // fc1 acts per frame: [B, T, C].
        let x = relu(self.fc1.forward(x.swap_dims(1, 2))).swap_dims(1, 2);
        let x = self.dropout.forward(x);
        // [B, K, T]
        let attention = softmax(tanh(self.att.forward(x.clone())), 2);
        let cla = self.cla.forward(x);
        let clip = (attention.clone() * cla.clone()).sum_dim(2).squeeze_dim(2);
        SedOutput {
            clip,
            frames: cla.swap_dims(1, 2),
            attention,
        }
    }
}
