//! The load generator's one error type.

use std::path::PathBuf;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that stops a load run before or between levels. Failures of single requests
/// are not errors: they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that cannot be used (zero duration, bad URL, share out of 0..=1…).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A clip (embedded or from `--clips`) that could not be decoded or cut.
    #[error("clip {name}: {message}")]
    Clip {
        /// File name or embedded clip name.
        name: String,
        /// What went wrong.
        message: String,
    },
    /// `--clips` held no usable audio file.
    #[error("no audio files (wav, ogg, flac, mp3, m4a) in {0}")]
    NoClips(PathBuf),
    /// The server never answered `GET /readyz` with 200 in time.
    #[error("server at {url} not ready after {waited_s:.0} s: {last}")]
    NotReady {
        /// Base URL.
        url: String,
        /// Seconds waited.
        waited_s: f64,
        /// The last status or transport error seen.
        last: String,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(#[from] reqwest::Error),
    /// Reading clips or writing the report.
    #[error("{context}: {source}")]
    Io {
        /// What was being read or written.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Serialising the report.
    #[error("report json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Stable snake_case kind of the error.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "invalid_config",
            Self::Clip { .. } => "bad_clip",
            Self::NoClips(_) => "no_clips",
            Self::NotReady { .. } => "not_ready",
            Self::Client(_) => "http_client",
            Self::Io { .. } => "io",
            Self::Json(_) => "json",
        }
    }
}
