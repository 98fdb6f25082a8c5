//! ResNet-50 backbone.
//!
//! Paper: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016
//! (arXiv:1512.03385). Reference implementation followed: torchvision `models/resnet.py`
//! (`resnet50`, the "v1.5" layout that puts the stride on the 3×3 convolution of each
//! bottleneck). Deviations: configurable input channels (1 for log-mel spectrograms) and a
//! backbone that stops before the average pooling; the classifier is a head from `heads.rs`.

use crate::layers::{Activation, batch_norm_act, fold_batch_norm};
use burn::config::Config;
use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

/// Configuration of a bottleneck ResNet.
#[derive(Config, Debug, PartialEq)]
pub struct ResNetConfig {
    /// Blocks per stage (`[3, 4, 6, 3]` is ResNet-50).
    #[config(default = "[3, 4, 6, 3]")]
    pub layers: [usize; 4],
    /// Input channels.
    #[config(default = 1)]
    pub in_channels: usize,
    /// Width of the first stage's bottleneck (64 in ResNet-50; smaller only for tests).
    #[config(default = 64)]
    pub base_width: usize,
}

/// torchvision's `Bottleneck` (expansion 4).
#[derive(Module, Debug)]
pub struct Bottleneck {
    /// 1×1 reduce.
    pub conv1: Conv2d,
    /// Norm after `conv1`.
    pub bn1: BatchNorm,
    /// 3×3, carries the stride (v1.5).
    pub conv2: Conv2d,
    /// Norm after `conv2`.
    pub bn2: BatchNorm,
    /// 1×1 expand (×4).
    pub conv3: Conv2d,
    /// Norm after `conv3`.
    pub bn3: BatchNorm,
    /// Projection shortcut when the shape changes.
    pub downsample: Option<Downsample>,
}

/// 1×1 strided projection + norm (torchvision `downsample.0` / `downsample.1`).
#[derive(Module, Debug)]
pub struct Downsample {
    /// The projection.
    pub conv: Conv2d,
    /// Its norm.
    pub bn: BatchNorm,
}

fn conv(c_in: usize, c_out: usize, k: usize, stride: usize, device: &Device) -> Conv2d {
    let p = (k - 1) / 2;
    Conv2dConfig::new([c_in, c_out], [k, k])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
        .with_bias(false)
        .init(device)
}

fn bn(c: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(c).init(device)
}

impl Bottleneck {
    fn new(c_in: usize, width: usize, stride: usize, device: &Device) -> Self {
        let c_out = width * 4;
        let downsample = (stride != 1 || c_in != c_out).then(|| Downsample {
            conv: conv(c_in, c_out, 1, stride, device),
            bn: bn(c_out, device),
        });
        Self {
            conv1: conv(c_in, width, 1, 1, device),
            bn1: bn(width, device),
            conv2: conv(width, width, 3, stride, device),
            bn2: bn(width, device),
            conv3: conv(width, c_out, 1, 1, device),
            bn3: bn(c_out, device),
            downsample,
        }
    }

    fn fold_batch_norms(self) -> Self {
        let (conv1, bn1) = fold_batch_norm(self.conv1, self.bn1);
        let (conv2, bn2) = fold_batch_norm(self.conv2, self.bn2);
        let (conv3, bn3) = fold_batch_norm(self.conv3, self.bn3);
        let downsample = self.downsample.map(|d| {
            let (conv, bn) = fold_batch_norm(d.conv, d.bn);
            Downsample { conv, bn }
        });
        Self {
            conv1,
            bn1,
            conv2,
            bn2,
            conv3,
            bn3,
            downsample,
        }
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let identity = match &self.downsample {
            Some(d) => batch_norm_act(&d.bn, Activation::Identity, d.conv.forward(x.clone())),
            None => x.clone(),
        };
        let h = batch_norm_act(&self.bn1, Activation::Relu, self.conv1.forward(x));
        let h = batch_norm_act(&self.bn2, Activation::Relu, self.conv2.forward(h));
        let h = batch_norm_act(&self.bn3, Activation::Identity, self.conv3.forward(h));
        relu(h + identity)
    }
}

/// ResNet feature extractor (torchvision names: `conv1`, `bn1`, `layer1..4`).
#[derive(Module, Debug)]
pub struct ResNet {
    /// 7×7 stride-2 stem.
    pub conv1: Conv2d,
    /// Stem norm.
    pub bn1: BatchNorm,
    /// 3×3 stride-2 max pooling.
    pub maxpool: MaxPool2d,
    /// Stage 1 (stride 1).
    pub layer1: Vec<Bottleneck>,
    /// Stage 2 (stride 2).
    pub layer2: Vec<Bottleneck>,
    /// Stage 3 (stride 2).
    pub layer3: Vec<Bottleneck>,
    /// Stage 4 (stride 2).
    pub layer4: Vec<Bottleneck>,
}

impl ResNetConfig {
    /// Channels of the returned feature map (2048 for ResNet-50).
    pub fn out_channels(&self) -> usize {
        self.base_width * 8 * 4
    }

    /// Builds the backbone with fresh weights.
    pub fn init(&self, device: &Device) -> ResNet {
        let w = self.base_width;
        let mut c_in = w;
        let mut stage = |n: usize, width: usize, stride: usize| -> Vec<Bottleneck> {
            (0..n)
                .map(|i| {
                    let b = Bottleneck::new(c_in, width, if i == 0 { stride } else { 1 }, device);
                    c_in = width * 4;
                    b
                })
                .collect()
        };
        let layer1 = stage(self.layers[0], w, 1);
        let layer2 = stage(self.layers[1], w * 2, 2);
        let layer3 = stage(self.layers[2], w * 4, 2);
        let layer4 = stage(self.layers[3], w * 8, 2);
        ResNet {
            conv1: conv(self.in_channels, w, 7, 2, device),
            bn1: bn(w, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
        }
    }
}

impl ResNet {
    /// The load-time rewrite for inference: every batch norm folded into the convolution
    /// before it (see [`fold_batch_norm`]).
    pub fn fold_batch_norms(self) -> Self {
        let (conv1, bn1) = fold_batch_norm(self.conv1, self.bn1);
        let stage = |v: Vec<Bottleneck>| v.into_iter().map(Bottleneck::fold_batch_norms).collect();
        Self {
            conv1,
            bn1,
            maxpool: self.maxpool,
            layer1: stage(self.layer1),
            layer2: stage(self.layer2),
            layer3: stage(self.layer3),
            layer4: stage(self.layer4),
        }
    }

    /// `[B, C_in, H, W] -> [B, 2048, H/32, W/32]`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = batch_norm_act(&self.bn1, Activation::Relu, self.conv1.forward(x));
        let mut x = self.maxpool.forward(x);
        for b in self
            .layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
        {
            x = b.forward(x);
        }
        x
    }
}
