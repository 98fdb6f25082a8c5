//! The one error type of the dashboard crate.

use std::path::PathBuf;

/// What can go wrong serving the dashboard. Missing optional parts (no runs yet, no registry,
/// no serving process) are not errors: the JSON routes report them as unavailable.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The dataset (taxonomy.csv, train.csv) cannot be read.
    #[error("dataset: {0}")]
    Data(#[from] silencio_data::Error),
    /// Audio could not be decoded or its features computed.
    #[error("audio: {0}")]
    Audio(#[from] silencio_audio::Error),
    /// An evaluation report could not be read.
    #[error("evaluation report: {0}")]
    Eval(#[from] silencio_eval::Error),
    /// Reading or writing a file failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file does not parse.
    #[error("{path} does not parse: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The address to listen on is unusable.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A resource the dashboard does not have (an audio file not listed in train.csv, a
    /// report page that does not exist).
    #[error("not found: {0}")]
    NotFound(String),
    /// An option that cannot work.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// A background task failed (panicked or was cancelled).
    #[error("internal task failed: {0}")]
    Task(String),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable, machine-readable name for the variant (`error_type` in JSON answers, printed
    /// by the CLI).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Data(e) => e.kind(),
            Error::Audio(e) => e.kind(),
            Error::Eval(e) => e.kind(),
            Error::Io { .. } => "io",
            Error::Json { .. } => "invalid_json",
            Error::Bind { .. } => "bind",
            Error::NotFound(_) => "not_found",
            Error::InvalidOption(_) => "invalid_option",
            Error::Task(_) => "task_failed",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
