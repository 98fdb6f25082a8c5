//! The crate's one error type.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while evaluating, reporting or reading submissions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No rows or no columns where some are needed.
    #[error("empty input: {0}")]
    Empty(String),
    /// Two inputs that must agree in shape do not.
    #[error("shape mismatch in {what}: expected {expected}, got {got}")]
    ShapeMismatch {
        /// Which input.
        what: String,
        /// The shape or length wanted.
        expected: String,
        /// The shape or length given.
        got: String,
    },
    /// A score is NaN or infinite (scikit-learn refuses these too).
    #[error("score at row {row}, column {col} is not finite ({value})")]
    NonFiniteScore {
        /// Row index.
        row: usize,
        /// Column index.
        col: usize,
        /// The offending value.
        value: f32,
    },
    /// A label is NaN or infinite.
    #[error("label at row {row}, column {col} is not finite ({value})")]
    NonFiniteLabel {
        /// Row index.
        row: usize,
        /// Column index.
        col: usize,
        /// The offending value.
        value: f32,
    },
    /// No column has both a positive and a negative, so the macro metric is undefined
    /// (Kaggle's scorer asserts on this too).
    #[error("no species has both a positive and a negative row: the macro ROC-AUC is undefined")]
    NoScoredColumns,
    /// A caller-supplied argument is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Reading or writing a file failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A CSV file could not be parsed or written.
    #[error("CSV error in {path}: {source}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: csv::Error,
    },
    /// A JSON file could not be parsed or written.
    #[error("JSON error in {path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A file parsed but its content is not what the format requires.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line numbers where known.
        message: String,
    },
    /// The submission lacks rows that the solution has.
    #[error("submission is missing {count} row_id(s) present in the solution, e.g. {examples:?}")]
    MissingRows {
        /// How many.
        count: usize,
        /// The first few.
        examples: Vec<String>,
    },
    /// The submission has rows that the solution lacks.
    #[error("submission has {count} row_id(s) not in the solution, e.g. {examples:?}")]
    ExtraRows {
        /// How many.
        count: usize,
        /// The first few.
        examples: Vec<String>,
    },
    /// The submission lacks species columns that the solution has.
    #[error(
        "submission is missing {count} species column(s) present in the solution, e.g. {examples:?}"
    )]
    MissingColumns {
        /// How many.
        count: usize,
        /// The first few.
        examples: Vec<String>,
    },
    /// The submission has species columns that the solution lacks.
    #[error("submission has {count} column(s) not in the solution, e.g. {examples:?}")]
    ExtraColumns {
        /// How many.
        count: usize,
        /// The first few.
        examples: Vec<String>,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl Error {
    /// A short machine-readable kind, as every crate of the workspace gives one.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Csv { .. } => "csv",
            Error::Json { .. } => "json",
            Error::Format { .. } => "format",
            Error::NoScoredColumns => "no_scored_species",
            Error::MissingRows { .. } | Error::ExtraRows { .. } => "rows",
            Error::MissingColumns { .. } | Error::ExtraColumns { .. } => "columns",
            Error::NonFiniteScore { .. } | Error::NonFiniteLabel { .. } => "non_finite",
            Error::ShapeMismatch { .. } => "shape",
            Error::Empty(_) => "empty",
            Error::InvalidArgument(_) => "invalid_argument",
        }
    }
}
