//! Building blocks shared by the backbones: convolution + batch norm (+ activation).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, relu6, silu};
use burn::tensor::ops::PadMode;
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
    /// TensorFlow "SAME" padding computed from the input size (asymmetric for stride 2:
    /// the extra row/column goes bottom/right), as TF-trained weights (Lite0) expect.
    #[module(skip)]
    pub tf_same: Option<[usize; 2]>,
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
    /// TensorFlow "SAME" padding instead of symmetric padding.
    pub tf_same: bool,
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
            tf_same: false,
        }
    }

    /// TensorFlow "SAME" padding, computed per input size.
    pub fn tf_same(mut self, on: bool) -> Self {
        self.tf_same = on;
        self
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
        let p = if self.tf_same { 0 } else { self.padding };
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
            tf_same: self.tf_same.then_some([self.kernel, self.stride]),
        }
    }
}

/// TensorFlow "SAME" padding `(before, after)` of one axis of size `n`.
pub fn tf_same_padding(n: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = n.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(n);
    (total / 2, total - total / 2)
}

impl ConvBnAct {
    /// `[B, C_in, H, W] -> [B, C_out, H', W']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match self.tf_same {
            Some([k, s]) => {
                let [_, _, h, w] = x.dims();
                let (top, bottom) = tf_same_padding(h, k, s);
                let (left, right) = tf_same_padding(w, k, s);
                if top + bottom + left + right == 0 {
                    x
                } else {
                    x.pad([(top, bottom), (left, right)], PadMode::Constant(0.0))
                }
            }
            None => x,
        };
        self.act.apply(self.bn.forward(self.conv.forward(x)))
    }
}
