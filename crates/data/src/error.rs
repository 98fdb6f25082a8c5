//! The one error type of the data crate.

use std::path::PathBuf;

/// What can go wrong reading a BirdCLEF-layout dataset or building a labelling set. Row-level
/// problems of a dataset are not errors: they go into the validation report and the row is
/// skipped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file that must exist (taxonomy.csv, train.csv) cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A CSV whose header lacks a required column, or that is not CSV.
    #[error("{path}: {message}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The taxonomy is unusable (empty, or a code listed twice).
    #[error("taxonomy: {0}")]
    Taxonomy(String),
    /// A storage location cannot be opened, read or written.
    #[error("{url}: {message}")]
    Store {
        /// The location.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A required object (taxonomy.csv, train.csv) is absent from the data location.
    #[error("{0} not found")]
    Missing(String),
    /// Options that cannot work (a shard size of zero, a fraction outside [0, 1]).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The output location holds another run's shards (different data or options).
    #[error("{0}")]
    Conflict(String),
    /// A shard or manifest already stored does not match what it claims.
    #[error("corrupt output: {0}")]
    CorruptOutput(String),
    /// A stored file that does not parse (a feedback log line, a sample's JSON): reported,
    /// never skipped silently where skipping would lose data.
    #[error("corrupt {path} line {line}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A local file operation other than reading an input failed (create, copy, rename,
    /// remove, fsync); the context names the operation and its paths.
    #[error("{context}: {source}")]
    Fs {
        /// The operation and its paths, e.g. `rename a to b`.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl Error {
    /// A short machine-readable name of the error's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Csv { .. } => "csv",
            Self::Taxonomy(_) => "taxonomy",
            Self::Store { .. } => "store",
            Self::Missing(_) => "missing",
            Self::InvalidOptions(_) => "invalid_options",
            Self::Conflict(_) => "conflict",
            Self::CorruptOutput(_) => "corrupt_output",
            Self::Corrupt { .. } => "corrupt",
            Self::Fs { .. } => "io",
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
