//! The one error type of the data crate.

use std::path::PathBuf;

/// What can go wrong reading a BirdCLEF-layout dataset. Row-level problems are not errors:
/// they go into the validation report and the row is skipped.
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
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
