//! Burn modules of El Silencio Acoustic Explorer: ResNet-50, EfficientNet-B0 / Lite0 and
//! PANNs CNN14 backbones, a clip-level linear head and a SED attention head, built from one
//! serialisable [`ModelConfig`], plus loaders for the official PyTorch checkpoint layouts.
//!
//! Every model takes log-mel input `[batch, 1, mel, frames]` (the recipe of `silencio-audio`)
//! and returns per-class logits. No backend is chosen here (see `silencio-infer`).
#![warn(missing_docs)]

pub mod cnn14;
pub mod efficientnet;
pub mod heads;
pub mod layers;
pub mod model;
pub mod pretrained;
pub mod resnet;

pub use model::{
    ARCHITECTURES, Architecture, Backbone, BackboneConfig, Head, HeadConfig, InputNorm, Model,
    ModelConfig, ModelOutput,
};
pub use pretrained::{
    CheckpointLayout, LoadReport, adapt_input_channels, from_checkpoint, load_pytorch,
    load_pytorch_into, load_safetensors_into, pytorch_tensors, replace_classifier,
};

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration that cannot build a model.
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    /// A checkpoint that cannot be loaded into the model.
    #[error("checkpoint {path}: {message}")]
    Checkpoint {
        /// The file.
        path: String,
        /// What is wrong, naming the tensors.
        message: String,
    },
}

impl Error {
    /// A stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidConfig(_) => "invalid_config",
            Error::Checkpoint { .. } => "checkpoint",
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
