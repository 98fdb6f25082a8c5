//! Building blocks shared by the backbones: convolution + batch norm (+ activation).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, relu6, silu};
use burn::tensor::{Device, Tensor};

/// Activation functions the backbones use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// `max(x, 0)` (ResNet, CNN14).
    Relu,
    /// `min(max(x, 0), 6)` (EfficientNet-Lite: quantisation friendly).
    Relu6,
    /// `x · sigmoid(x)`, a.k.a. swish (EfficientNet-B0).
    Silu,
    /// No activation.
    Identity,
}

impl Activation {
    /// Applies the activation.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => relu(x),
            Activation::Relu6 => relu6(x),
            Activation::Silu => silu(x),
            Activation::Identity => x,
        }
    }
}

/// Convolution without bias, batch norm, then an activation: torchvision's
/// `Conv2dNormActivation` (keys `N.0` conv, `N.1` bn).
#[derive(Module, Debug)]
pub struct ConvBnAct {
    /// The convolution (no bias: the batch norm's shift replaces it).
    pub conv: Conv2d,
    /// The batch norm.
    pub bn: BatchNorm,
    /// The activation after the norm.
    #[module(skip)]
    pub act: Activation,
}

/// Hyper-parameters of one [`ConvBnAct`].
#[derive(Debug, Clone, Copy)]
pub struct ConvSpec {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Square kernel size.
    pub kernel: usize,
    /// Stride in both directions.
    pub stride: usize,
    /// Groups (`c_in` for a depthwise convolution).
    pub groups: usize,
    /// Symmetric padding on every side.
    pub padding: usize,
    /// Batch-norm epsilon.
    pub bn_eps: f64,
    /// Activation after the norm.
    pub act: Activation,
}

impl ConvSpec {
    /// A `k×k` convolution with PyTorch's symmetric "same-ish" padding `(k - 1) / 2`.
    pub fn new(c_in: usize, c_out: usize, kernel: usize, stride: usize, act: Activation) -> Self {
        Self {
            c_in,
            c_out,
            kernel,
            stride,
            groups: 1,
            padding: (kernel - 1) / 2,
            bn_eps: 1e-5,
            act,
        }
    }

    /// Depthwise (one group per channel).
    pub fn depthwise(mut self) -> Self {
        self.groups = self.c_in;
        self
    }

    /// Batch-norm epsilon.
    pub fn eps(mut self, eps: f64) -> Self {
        self.bn_eps = eps;
        self
    }

    /// Explicit padding.
    pub fn pad(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }

    /// Builds the layer with fresh (Kaiming) weights.
    pub fn init(self, device: &Device) -> ConvBnAct {
        let p = self.padding;
        ConvBnAct {
            conv: Conv2dConfig::new([self.c_in, self.c_out], [self.kernel, self.kernel])
                .with_stride([self.stride, self.stride])
                .with_groups(self.groups)
                .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                .with_bias(false)
                .init(device),
            bn: BatchNormConfig::new(self.c_out)
                .with_epsilon(self.bn_eps)
                .init(device),
            act: self.act,
        }
    }
}

impl ConvBnAct {
    /// `[B, C_in, H, W] -> [B, C_out, H', W']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.act.apply(self.bn.forward(self.conv.forward(x)))
    }
}
