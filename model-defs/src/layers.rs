//! Building blocks shared by the backbones: convolution + batch norm (+ activation).

use std::sync::Arc;

use burn::module::{Module, RunningState};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::{relu, relu6};
use burn::tensor::ops::PadMode;
use burn::tensor::{Device, Tensor, TensorData};

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
            // The vectorised kernel on flex (44 % of B0's forward was libm `expf`), Burn's op
            // elsewhere and under autodiff.
            Activation::Silu => silencio_kernels::silu(x),
            Activation::Identity => x,
        }
    }
}

/// Evaluates `$body` with `$lane` bound to the scalar function of activation `$act` (a fn item
/// per activation, so that each kernel is compiled, and vectorised, with its activation inlined).
macro_rules! with_lane {
    ($act:expr, $lane:ident => $body:expr) => {
        match $act {
            Activation::Relu => {
                let $lane = relu_lane;
                $body
            }
            Activation::Relu6 => {
                let $lane = relu6_lane;
                $body
            }
            Activation::Silu => {
                let $lane = silencio_kernels::act::silu;
                $body
            }
            Activation::Identity => {
                let $lane = identity_lane;
                $body
            }
        }
    };
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
    /// Host copies of what the flex kernels read on every forward, made by
    /// [`ConvBnAct::fold_batch_norm`] (inference only: they do not follow parameter updates).
    #[module(skip)]
    pub host: Option<Arc<HostParams>>,
}

/// A layer's parameters on the host, as the flex kernels take them.
#[derive(Debug, Clone, PartialEq)]
pub struct HostParams {
    /// The batch norm as `x · scale + shift` per channel (see [`batch_norm_affine`]).
    pub scale: Vec<f32>,
    /// See `scale`.
    pub shift: Vec<f32>,
    /// The convolution's weights when it is depthwise (the kernel reads them); empty otherwise
    /// (flex's GEMM reads the tensor).
    pub weight: Vec<f32>,
}

impl HostParams {
    /// Read from a convolution and the batch norm after it (the weights only when the
    /// convolution is depthwise).
    fn read(conv: &Conv2d, bn: &BatchNorm) -> Self {
        let (scale, shift) = batch_norm_affine(bn);
        let weight = match conv.groups > 1 {
            true => silencio_kernels::host_values(conv.weight.val()),
            false => Vec::new(),
        };
        Self {
            scale,
            shift,
            weight,
        }
    }
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
            host: None,
        }
    }
}

/// TensorFlow "SAME" padding `(before, after)` of one axis of size `n`.
pub fn tf_same_padding(n: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = n.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(n);
    (total / 2, total - total / 2)
}

/// Batch norm then `act`: at inference on flex one fused pass of `silencio-kernels` (Burn's
/// batch norm is four broadcast passes, each allocating), Burn's modules otherwise (training
/// uses batch statistics; other backends keep their own kernels).
pub fn batch_norm_act(bn: &BatchNorm, act: Activation, x: Tensor<4>) -> Tensor<4> {
    norm_act(bn, None, act, x)
}

/// [`batch_norm_act`] with the norm's scale and shift already on the host when `host` holds
/// them (a prepared model), else read from `bn`.
fn norm_act(bn: &BatchNorm, host: Option<&HostParams>, act: Activation, x: Tensor<4>) -> Tensor<4> {
    if silencio_kernels::applies(&x) {
        let read;
        let (scale, shift) = match host {
            Some(p) => (&p.scale[..], &p.shift[..]),
            None => {
                read = batch_norm_affine(bn);
                (&read.0[..], &read.1[..])
            }
        };
        let fused =
            with_lane!(act, lane => silencio_kernels::batch_norm_act(x, scale, shift, lane));
        return fused.unwrap_or_else(|x| act.apply(bn.forward(x)));
    }
    act.apply(bn.forward(x))
}

/// Folds an inference batch norm into the convolution before it, the load-time rewrite of
/// inference engines: the convolution's weights (and bias) are scaled by `γ/√(σ² + ε)` per
/// output channel, and the norm keeps only the shift (`γ = 1`, `β = shift`, `μ = 0`,
/// `σ² = 1 − ε`). The pair stays an ordinary module computing the same function on every
/// backend (to float32 rounding); on flex the norm's pass then only adds the shift before the
/// activation, and the convolution loses its bias pass. Inference only: a folded norm has no
/// statistics left to train.
pub fn fold_batch_norm(conv: Conv2d, bn: BatchNorm) -> (Conv2d, BatchNorm) {
    let (scale, mut shift) = batch_norm_affine(&bn);
    let c = scale.len();
    let device = conv.weight.device();
    let vector = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [c]), &device);
    if let Some(b) = &conv.bias {
        // act(bn(W·x + b)) = act(scale·W·x + (scale·b + shift)).
        let b = silencio_kernels::host_values(b.val());
        for ((s, a), b) in shift.iter_mut().zip(&scale).zip(b) {
            *s += a * b;
        }
    }
    let per_out = vector(scale).reshape([c, 1, 1, 1]);
    let conv = Conv2d {
        weight: conv.weight.map(|w| w * per_out),
        bias: None,
        ..conv
    };
    let eps = bn.epsilon;
    let bn = BatchNorm {
        gamma: bn.gamma.map(|g| g.ones_like()),
        beta: bn.beta.map(|_| vector(shift)),
        running_mean: RunningState::new(vector(vec![0.0; c])),
        running_var: RunningState::new(vector(vec![(1.0 - eps) as f32; c])),
        ..bn
    };
    (conv, bn)
}

fn relu_lane(v: f32) -> f32 {
    if v > 0.0 { v } else { 0.0 }
}

fn relu6_lane(v: f32) -> f32 {
    v.clamp(0.0, 6.0)
}

fn identity_lane(v: f32) -> f32 {
    v
}

/// A batch norm at inference as `x · scale + shift` per channel:
/// `scale = γ / √(σ² + ε)`, `shift = β − μ · scale` (computed in `f64`).
pub fn batch_norm_affine(bn: &BatchNorm) -> (Vec<f32>, Vec<f32>) {
    let v = |t: Tensor<1>| {
        t.into_data()
            .convert::<f64>()
            .try_into_vec::<f64>()
            .unwrap_or_default()
    };
    let (g, b) = (v(bn.gamma.val()), v(bn.beta.val()));
    let (m, var) = (v(bn.running_mean.value()), v(bn.running_var.value()));
    let scale: Vec<f64> = g
        .iter()
        .zip(&var)
        .map(|(g, v)| g / (v + bn.epsilon).sqrt())
        .collect();
    let shift = b
        .iter()
        .zip(&m)
        .zip(&scale)
        .map(|((b, m), a)| (b - m * a) as f32);
    (scale.iter().map(|&a| a as f32).collect(), shift.collect())
}

impl ConvBnAct {
    /// [`fold_batch_norm`], then keeps the kernels' parameters on the host when the weights
    /// live on flex: the load-time rewrite for inference.
    pub fn fold_batch_norm(self) -> Self {
        let (conv, bn) = fold_batch_norm(self.conv, self.bn);
        let host = silencio_kernels::applies(&conv.weight.val())
            .then(|| Arc::new(HostParams::read(&conv, &bn)));
        Self {
            conv,
            bn,
            act: self.act,
            tf_same: self.tf_same,
            host,
        }
    }

    /// `[B, C_in, H, W] -> [B, C_out, H', W']`.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        if silencio_kernels::applies(&x) && self.conv.groups > 1 {
            // Depthwise on flex: the kernel takes TF "SAME"'s asymmetric padding directly
            // (no padded copy of the input).
            let [_, _, h, w] = x.dims();
            let [k, s] = [self.conv.kernel_size[0], self.conv.stride[0]];
            let pad = match self.tf_same {
                Some(_) => {
                    [tf_same_padding(h, k, s), tf_same_padding(w, k, s)].map(|(a, b)| [a, b])
                }
                None => {
                    let p = self.padding();
                    [[p, p], [p, p]]
                }
            };
            let uncached;
            let p = match &self.host {
                Some(p) => p.as_ref(),
                None => {
                    uncached = HostParams::read(&self.conv, &self.bn);
                    &uncached
                }
            };
            let fused = with_lane!(self.act, lane => silencio_kernels::depthwise_conv2d_bn_act(
                x, &p.weight, k, s, pad, &p.scale, &p.shift, lane
            ));
            return fused.unwrap_or_else(|x| self.forward_modules(x));
        }
        self.forward_modules(x)
    }

    /// The symmetric padding of the convolution (0 under TF "SAME", which pads the input).
    fn padding(&self) -> usize {
        match self.conv.padding {
            PaddingConfig2d::Explicit(p, ..) => p,
            _ => 0,
        }
    }

    /// Burn's modules: padding, convolution, then the batch norm and activation.
    fn forward_modules(&self, x: Tensor<4>) -> Tensor<4> {
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
        norm_act(
            &self.bn,
            self.host.as_deref(),
            self.act,
            self.conv.forward(x),
        )
    }
}
