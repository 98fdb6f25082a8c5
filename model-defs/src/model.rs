//! A whole classifier: backbone + head, built from one serialisable [`ModelConfig`].

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::cnn14::{Cnn14, Cnn14Config};
use crate::efficientnet::{EfficientNet, EfficientNetConfig, EfficientNetVariant};
use crate::heads::{ClipHead, ClipHeadConfig, Pooling, SedHead, SedHeadConfig};
use crate::resnet::{ResNet, ResNetConfig};
use crate::{Error, Result};

/// Which backbone, with its hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BackboneConfig {
    /// Bottleneck ResNet (ResNet-50 by default).
    Resnet(ResNetConfig),
    /// EfficientNet-B0 / Lite0.
    Efficientnet(EfficientNetConfig),
    /// PANNs CNN14.
    Cnn14(Cnn14Config),
}

/// Which head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HeadConfig {
    /// One prediction per window.
    Clip(ClipHeadConfig),
    /// Frame-wise + clip-wise attention head.
    Sed(SedHeadConfig),
}

/// Affine normalisation of the log-mel input (`(x - mean) / std`) applied inside the model,
/// so that it travels with the weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct InputNorm {
    /// Subtracted first.
    pub mean: f32,
    /// Then divided by.
    pub std: f32,
}

/// Everything needed to build a [`Model`] (weights aside).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Backbone.
    pub backbone: BackboneConfig,
    /// Head.
    pub head: HeadConfig,
    /// Output classes.
    pub num_classes: usize,
    /// Optional input normalisation.
    #[serde(default)]
    pub input_norm: Option<InputNorm>,
}

/// torchvision's classifier: global average pooling, dropout, one linear layer.
fn linear_head(dropout: f64) -> HeadConfig {
    HeadConfig::Clip(ClipHeadConfig {
        pooling: Pooling::Avg,
        hidden: None,
        dropout,
    })
}

/// Names of the full-size architectures ([`Architecture::FULL_SIZE`]), for flag parsers.
pub const ARCHITECTURES: [&str; 4] = ["resnet50", "efficientnet_b0", "efficientnet_lite0", "cnn14"];

/// The architectures a model is built from by name (experiments, the CLI, benches), parsed at
/// the edge so that an unknown name is an error there, not a branch taken later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// ResNet-50.
    Resnet50,
    /// EfficientNet-B0.
    EfficientnetB0,
    /// EfficientNet-Lite0.
    EfficientnetLite0,
    /// PANNs CNN14.
    Cnn14,
    /// The demo's EfficientNet-Lite0 at width and depth 0.5: learns the demo set in minutes on
    /// two CPU cores.
    Tiny,
}

impl Architecture {
    /// The full-size architectures, in [`ARCHITECTURES`] order.
    pub const FULL_SIZE: [Architecture; 4] = [
        Architecture::Resnet50,
        Architecture::EfficientnetB0,
        Architecture::EfficientnetLite0,
        Architecture::Cnn14,
    ];

    /// The name experiments and flags use.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Resnet50 => "resnet50",
            Architecture::EfficientnetB0 => "efficientnet_b0",
            Architecture::EfficientnetLite0 => "efficientnet_lite0",
            Architecture::Cnn14 => "cnn14",
            Architecture::Tiny => "tiny",
        }
    }

    /// The model for `num_classes` classes; `mel_bins` matters for CNN14 only.
    pub fn config(self, num_classes: usize, mel_bins: usize) -> ModelConfig {
        match self {
            Architecture::Resnet50 => ModelConfig::resnet50(num_classes),
            Architecture::EfficientnetB0 => ModelConfig::efficientnet_b0(num_classes),
            Architecture::EfficientnetLite0 => ModelConfig::efficientnet_lite0(num_classes),
            Architecture::Cnn14 => ModelConfig::cnn14(num_classes, mel_bins),
            Architecture::Tiny => ModelConfig::tiny(num_classes),
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Architecture {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Architecture::FULL_SIZE
            .into_iter()
            .chain([Architecture::Tiny])
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                Error::InvalidConfig(format!(
                    "unknown architecture {s:?} (known: {}, tiny)",
                    ARCHITECTURES.join(", ")
                ))
            })
    }
}

impl ModelConfig {
    /// ResNet-50 (1 input channel) with a linear clip head.
    pub fn resnet50(num_classes: usize) -> Self {
        Self {
            backbone: BackboneConfig::Resnet(ResNetConfig::new()),
            head: linear_head(0.0),
            num_classes,
            input_norm: None,
        }
    }

    /// EfficientNet-B0 (1 input channel) with a linear clip head (dropout 0.2, as torchvision).
    pub fn efficientnet_b0(num_classes: usize) -> Self {
        Self {
            backbone: BackboneConfig::Efficientnet(EfficientNetConfig::new(
                EfficientNetVariant::B0,
            )),
            head: linear_head(0.2),
            num_classes,
            input_norm: None,
        }
    }

    /// EfficientNet-Lite0 (1 input channel; batch-norm epsilon 1e-3 as the TensorFlow-trained
    /// weights) with a linear clip head.
    pub fn efficientnet_lite0(num_classes: usize) -> Self {
        Self {
            backbone: BackboneConfig::Efficientnet(
                EfficientNetConfig::new(EfficientNetVariant::Lite0)
                    .with_bn_eps(1e-3)
                    .with_tf_same_padding(true),
            ),
            head: linear_head(0.2),
            num_classes,
            input_norm: None,
        }
    }

    /// PANNs CNN14 over `mel_bins` mel bins with its own head (`fc1` 2048 + ReLU, dropout 0.5).
    pub fn cnn14(num_classes: usize, mel_bins: usize) -> Self {
        Self {
            backbone: BackboneConfig::Cnn14(Cnn14Config::new().with_mel_bins(mel_bins)),
            head: HeadConfig::Clip(ClipHeadConfig {
                pooling: Pooling::MaxMean,
                hidden: Some(2048),
                dropout: 0.5,
            }),
            num_classes,
            input_norm: None,
        }
    }

    /// A named architecture (see [`Architecture`]); `mel_bins` matters for CNN14 only.
    pub fn named(name: &str, num_classes: usize, mel_bins: usize) -> Result<Self> {
        Ok(name.parse::<Architecture>()?.config(num_classes, mel_bins))
    }

    /// [`Architecture::Tiny`]: EfficientNet-Lite0 at width 0.5 and depth 0.5 (no
    /// squeeze-excitation, ReLU6).
    pub fn tiny(num_classes: usize) -> Self {
        let mut c = Self::efficientnet_lite0(num_classes);
        c.backbone = BackboneConfig::Efficientnet(
            EfficientNetConfig::new(EfficientNetVariant::Lite0)
                .with_width_mult(0.5)
                .with_depth_mult(0.5)
                .with_bn_eps(1e-3),
        );
        c
    }

    /// Replaces the head by a SED attention head.
    pub fn with_sed_head(mut self, dropout: f64) -> Self {
        self.head = HeadConfig::Sed(SedHeadConfig { dropout });
        self
    }

    /// Sets the input normalisation.
    pub fn with_input_norm(mut self, mean: f32, std: f32) -> Self {
        self.input_norm = Some(InputNorm { mean, std });
        self
    }

    /// Channels the backbone hands to the head.
    pub fn feature_channels(&self) -> usize {
        match &self.backbone {
            BackboneConfig::Resnet(c) => c.out_channels(),
            BackboneConfig::Efficientnet(c) => c.out_channels(),
            BackboneConfig::Cnn14(c) => c.out_channels(),
        }
    }

    /// Input channels the model expects.
    pub fn in_channels(&self) -> usize {
        match &self.backbone {
            BackboneConfig::Resnet(c) => c.in_channels,
            BackboneConfig::Efficientnet(c) => c.in_channels,
            BackboneConfig::Cnn14(_) => 1,
        }
    }

    /// A short human name (`efficientnet_b0+sed`, …).
    pub fn name(&self) -> String {
        let b = match &self.backbone {
            BackboneConfig::Resnet(c) if c.layers == [3, 4, 6, 3] => "resnet50".to_string(),
            BackboneConfig::Resnet(c) => format!("resnet{:?}", c.layers),
            BackboneConfig::Efficientnet(c) => match c.variant {
                EfficientNetVariant::B0 => "efficientnet_b0".into(),
                EfficientNetVariant::Lite0 => "efficientnet_lite0".into(),
            },
            BackboneConfig::Cnn14(_) => "cnn14".into(),
        };
        match self.head {
            HeadConfig::Clip(_) => b,
            HeadConfig::Sed(_) => format!("{b}+sed"),
        }
    }

    /// Checks the numbers before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.num_classes == 0 {
            return bad("num_classes must be > 0".into());
        }
        if let Some(n) = self.input_norm
            && !(n.std.is_finite() && n.std > 0.0 && n.mean.is_finite())
        {
            return bad(format!("input_norm std must be finite and > 0, got {n:?}"));
        }
        match &self.backbone {
            BackboneConfig::Resnet(c) => {
                if c.in_channels == 0 || c.base_width == 0 || c.layers.contains(&0) {
                    return bad(format!("resnet: zero in {c:?}"));
                }
            }
            BackboneConfig::Efficientnet(c) => {
                let in_range = |v: f64, hi: f64| v > 0.0 && v <= hi;
                let ok = c.in_channels > 0
                    && in_range(c.width_mult, 8.0)
                    && in_range(c.depth_mult, 8.0)
                    && in_range(c.bn_eps, 1.0);
                if !ok {
                    return bad(format!("efficientnet: out-of-range value in {c:?}"));
                }
            }
            BackboneConfig::Cnn14(c) => {
                if c.mel_bins == 0 || c.widths.contains(&0) {
                    return bad(format!("cnn14: zero in {c:?}"));
                }
            }
        }
        if let HeadConfig::Clip(h) = &self.head
            && h.hidden == Some(0)
        {
            return bad("clip head hidden width must be > 0".into());
        }
        let dropout = match &self.head {
            HeadConfig::Clip(h) => h.dropout,
            HeadConfig::Sed(h) => h.dropout,
        };
        if !(0.0..1.0).contains(&dropout) {
            return bad(format!("dropout {dropout} outside [0, 1)"));
        }
        Ok(())
    }

    /// Builds the model with fresh weights.
    pub fn init(&self, device: &Device) -> Result<Model> {
        self.validate()?;
        let backbone = match &self.backbone {
            BackboneConfig::Resnet(c) => Backbone::Resnet(c.init(device)),
            BackboneConfig::Efficientnet(c) => Backbone::Efficientnet(c.init(device)),
            BackboneConfig::Cnn14(c) => Backbone::Cnn14(c.init(device)),
        };
        let ch = self.feature_channels();
        let head = match &self.head {
            HeadConfig::Clip(h) => Head::Clip(h.init(ch, self.num_classes, device)),
            HeadConfig::Sed(h) => Head::Sed(h.init(ch, self.num_classes, device)),
        };
        Ok(Model {
            backbone,
            head,
            input_norm: self.input_norm.map(|n| [n.mean, n.std]),
        })
    }
}

/// The backbones.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Backbone {
    /// ResNet.
    Resnet(ResNet),
    /// EfficientNet.
    Efficientnet(EfficientNet),
    /// CNN14.
    Cnn14(Cnn14),
}

/// The heads.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Head {
    /// Clip head.
    Clip(ClipHead),
    /// SED head.
    Sed(SedHead),
}

/// What a forward pass returns.
#[derive(Debug, Clone)]
pub struct ModelOutput {
    /// Clip logits `[B, classes]` (apply a sigmoid for per-species probabilities).
    pub logits: Tensor<2>,
    /// Frame logits `[B, frames, classes]` (SED head only).
    pub frame_logits: Option<Tensor<3>>,
}

/// Backbone + head.
#[derive(Module, Debug)]
pub struct Model {
    /// Feature extractor.
    pub backbone: Backbone,
    /// Classifier.
    pub head: Head,
    /// `[mean, std]` of the input normalisation, if any.
    #[module(skip)]
    pub input_norm: Option<[f32; 2]>,
}

impl Model {
    /// The load-time rewrites for inference (flex has no graph to optimise, so the model is
    /// rewritten once instead): every batch norm folded into the convolution before it, and
    /// the parameters the flex kernels read kept on the host. The same function to float32
    /// rounding, on every backend; for inference only (a folded norm cannot train, and the
    /// host copies do not follow parameter updates).
    pub fn for_inference(self) -> Self {
        let backbone = match self.backbone {
            Backbone::Resnet(b) => Backbone::Resnet(b.fold_batch_norms()),
            Backbone::Efficientnet(b) => Backbone::Efficientnet(b.fold_batch_norms()),
            Backbone::Cnn14(b) => Backbone::Cnn14(b.fold_batch_norms()),
        };
        Self { backbone, ..self }
    }

    /// The backbone's feature map `[B, C, F', T']` for input `[B, C_in, mel, frames]`.
    pub fn features(&self, x: Tensor<4>) -> Tensor<4> {
        silencio_kernels::in_pool(x, |x| self.features_here(x))
    }

    fn features_here(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match self.input_norm {
            Some([m, s]) => (x - m) / s,
            None => x,
        };
        match &self.backbone {
            Backbone::Resnet(b) => b.forward(x),
            Backbone::Efficientnet(b) => b.forward(x),
            Backbone::Cnn14(b) => b.forward(x),
        }
    }

    /// Logits for input `[B, C_in, mel, frames]` (on flex at inference, on a worker of rayon's
    /// pool: see [`silencio_kernels::in_pool`]).
    pub fn forward(&self, x: Tensor<4>) -> ModelOutput {
        silencio_kernels::in_pool(x, |x| self.forward_here(x))
    }

    fn forward_here(&self, x: Tensor<4>) -> ModelOutput {
        let f = self.features_here(x);
        match &self.head {
            Head::Clip(h) => ModelOutput {
                logits: h.forward(f),
                frame_logits: None,
            },
            Head::Sed(h) => {
                let o = h.forward(f);
                ModelOutput {
                    logits: o.clip,
                    frame_logits: Some(o.frames),
                }
            }
        }
    }

    /// Logits and the clip embedding ([`Self::embed`]) from one pass of the backbone, for
    /// training that also matches embeddings (distillation). The logits are those of
    /// [`Self::forward`]: the same operations in the same order, dropout included.
    pub fn forward_with_embedding(&self, x: Tensor<4>) -> (ModelOutput, Tensor<2>) {
        silencio_kernels::in_pool(x, |x| self.forward_with_embedding_here(x))
    }

    fn forward_with_embedding_here(&self, x: Tensor<4>) -> (ModelOutput, Tensor<2>) {
        let f = self.features_here(x);
        match &self.head {
            Head::Clip(h) => {
                let e = h.embed(f);
                let logits = h.fc.forward(h.dropout.forward(e.clone()));
                (
                    ModelOutput {
                        logits,
                        frame_logits: None,
                    },
                    e,
                )
            }
            Head::Sed(h) => {
                let [b, c, _, _] = f.dims();
                let e = f.clone().mean_dims(&[2, 3]).reshape([b, c]);
                let o = h.forward(f);
                (
                    ModelOutput {
                        logits: o.clip,
                        frame_logits: Some(o.frames),
                    },
                    e,
                )
            }
        }
    }

    /// A clip embedding `[B, E]`: the clip head's pooled (and hidden) features, or the
    /// global average of the feature map under a SED head.
    pub fn embed(&self, x: Tensor<4>) -> Tensor<2> {
        silencio_kernels::in_pool(x, |x| self.embed_here(x))
    }

    fn embed_here(&self, x: Tensor<4>) -> Tensor<2> {
        let f = self.features_here(x);
        match &self.head {
            Head::Clip(h) => h.embed(f),
            Head::Sed(_) => {
                let [b, c, _, _] = f.dims();
                f.mean_dims(&[2, 3]).reshape([b, c])
            }
        }
    }
}
