//! The trainer's one error type.

use std::path::Path;

/// Everything the trainer can fail on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// An experiment file or option that cannot work.
    #[error("experiment {path}: {message}")]
    Config {
        /// Where.
        path: String,
        /// What.
        message: String,
    },
    /// Shards or manifest that do not fit together.
    #[error("training data: {message}")]
    Data {
        /// What.
        message: String,
    },
    /// Training itself failed.
    #[error("training failed: {message}")]
    Training {
        /// What.
        message: String,
    },
    /// MLflow tracking, the registry or Ray.
    #[error("tracking: {message}")]
    Tracking {
        /// What.
        message: String,
    },
    /// The audio crate.
    #[error(transparent)]
    Audio(#[from] silencio_audio::Error),
    /// The data crate.
    #[error(transparent)]
    Dataset(#[from] silencio_data::Error),
    /// The models crate.
    #[error(transparent)]
    Model(#[from] silencio_models::Error),
    /// The inference crate.
    #[error(transparent)]
    Infer(#[from] silencio_infer::Error),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// A short machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Config { .. } => "config",
            Self::Data { .. } => "data",
            Self::Training { .. } => "training",
            Self::Tracking { .. } => "tracking",
            Self::Audio(e) => e.kind(),
            Self::Dataset(e) => e.kind(),
            Self::Model(e) => e.kind(),
            Self::Infer(e) => e.kind(),
        }
    }
}

/// The trainer's result.
pub type Result<T> = std::result::Result<T, Error>;
