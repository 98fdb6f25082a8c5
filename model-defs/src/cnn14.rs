//! PANNs CNN14 backbone.
//!
//! Paper: Kong et al., "PANNs: Large-Scale Pretrained Audio Neural Networks for Audio Pattern
//! Recognition", IEEE/ACM TASLP 2020 (arXiv:1912.10211). Reference implementation followed:
//! `Cnn14` and `ConvBlock` of qiuqiangkong/audioset_tagging_cnn `pytorch/models.py` (the same
//! code ships as `panns_inference/models.py` on PyPI). Layout of the official checkpoint
//! `Cnn14_mAP=0.431.pth`: `bn0`, `conv_block{1..6}.{conv1,bn1,conv2,bn2}`, `fc1`,
//! `fc_audioset`.
//!
//! Deviations: the STFT/log-mel front end (`spectrogram_extractor`, `logmel_extractor`,
//! torchlibrosa) is not part of the model — features come from `silencio-audio`'s recipe and
//! travel in the bundle — and the input is our `[B, 1, mel, time]` layout, transposed inside to
//! PANNs' `[B, 1, time, mel]` so that official weights apply unchanged. The backbone returns the
//! last feature map in our `[B, C, freq, time]` order; PANNs' pooling (mean over frequency, max +
//! mean over time) and `fc1` live in the clip head.

use crate::layers::{Activation, batch_norm_act, fold_batch_norm};
use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig};
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Device, Tensor};

/// Configuration of CNN14.
#[derive(Config, Debug, PartialEq)]
pub struct Cnn14Config {
    /// Mel bins of the input (64 in the official checkpoint; `bn0` normalises each bin).
    #[config(default = 64)]
    pub mel_bins: usize,
    /// Output channels of the six conv blocks (official: 64 … 2048).
    #[config(default = "[64, 128, 256, 512, 1024, 2048]")]
    pub widths: [usize; 6],
    /// Dropout after each block during training (official: 0.2).
    #[config(default = 0.2)]
    pub dropout: f64,
}

/// PANNs `ConvBlock`: two 3×3 conv + BN + ReLU, then average pooling.
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// First 3×3 convolution.
    pub conv1: Conv2d,
    /// Its norm.
    pub bn1: BatchNorm,
    /// Second 3×3 convolution.
    pub conv2: Conv2d,
    /// Its norm.
    pub bn2: BatchNorm,
    /// Average-pool size (2×2, the last block 1×1).
    #[module(skip)]
    pub pool: [usize; 2],
}

impl ConvBlock {
    fn new(c_in: usize, c_out: usize, pool: [usize; 2], device: &Device) -> Self {
        let conv = |a, b| {
            Conv2dConfig::new([a, b], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(false)
                .init(device)
        };
        Self {
            conv1: conv(c_in, c_out),
            bn1: BatchNormConfig::new(c_out).init(device),
            conv2: conv(c_out, c_out),
            bn2: BatchNormConfig::new(c_out).init(device),
            pool,
        }
    }

    fn fold_batch_norms(self) -> Self {
        let (conv1, bn1) = fold_batch_norm(self.conv1, self.bn1);
        let (conv2, bn2) = fold_batch_norm(self.conv2, self.bn2);
        Self {
            conv1,
            bn1,
            conv2,
            bn2,
            pool: self.pool,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = batch_norm_act(&self.bn1, Activation::Relu, self.conv1.forward(x));
        let x = batch_norm_act(&self.bn2, Activation::Relu, self.conv2.forward(x));
        if self.pool == [1, 1] {
            return x;
        }
        // F.avg_pool2d(x, kernel_size=pool) — stride defaults to the kernel, floor mode.
        avg_pool2d(x, AvgPoolOptions::new(self.pool))
    }
}

/// CNN14 feature extractor.
#[derive(Module, Debug)]
pub struct Cnn14 {
    /// Per-mel-bin batch norm of the input.
    pub bn0: BatchNorm,
    /// The six conv blocks (official `conv_block1` … `conv_block6`).
    pub blocks: Vec<ConvBlock>,
    /// Dropout between blocks (training only).
    pub dropout: Dropout,
}

impl Cnn14Config {
    /// Channels of the returned feature map.
    pub fn out_channels(&self) -> usize {
        self.widths[5]
    }

    /// Builds the backbone with fresh weights.
    pub fn init(&self, device: &Device) -> Cnn14 {
        let mut c_in = 1;
        let blocks = self
            .widths
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let pool = if i == 5 { [1, 1] } else { [2, 2] };
                let b = ConvBlock::new(c_in, w, pool, device);
                c_in = w;
                b
            })
            .collect();
        Cnn14 {
            bn0: BatchNormConfig::new(self.mel_bins).init(device),
            blocks,
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl Cnn14 {
    /// The load-time rewrite for inference: each block's batch norms folded into their
    /// convolutions (see [`fold_batch_norm`]). `bn0` stays: it normalises the input before the
    /// first convolution's zero padding, so folding it would change the border.
    pub fn fold_batch_norms(self) -> Self {
        Self {
            blocks: self
                .blocks
                .into_iter()
                .map(ConvBlock::fold_batch_norms)
                .collect(),
            ..self
        }
    }

    /// `[B, 1, mel, time] -> [B, C, mel/32, time/32]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // PANNs order: [B, 1, time, mel].
        let x = x.swap_dims(2, 3);
        // bn0 normalises each mel bin: put mel on the channel axis, [B, mel, time, 1].
        let x = self.bn0.forward(x.swap_dims(1, 3)).swap_dims(1, 3);
        let mut x = x;
        for b in &self.blocks {
            x = self.dropout.forward(b.forward(x));
        }
        // Back to our [B, C, freq, time].
        x.swap_dims(2, 3)
    }
}
