//! The crate's one error type.

use std::collections::BTreeSet;
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
    /// A directory that should hold soundscapes is not a directory.
    #[error("{} is not a directory of soundscapes", .dir.display())]
    NotSoundscapeDir {
        /// The path given.
        dir: PathBuf,
    },
    /// A soundscape directory holds no audio file of a known extension.
    #[error("no soundscapes ({}) in {}", .extensions, .dir.display())]
    NoSoundscapes {
        /// The directory.
        dir: PathBuf,
        /// The extensions looked for, e.g. `.ogg, .wav`.
        extensions: String,
    },
    /// Several soundscape files share a stem, so their row ids would collide.
    #[error(
        "{}: several files share the stem(s) {:?}, so their row ids would collide",
        .dir.display(),
        .stems
    )]
    DuplicateStems {
        /// The directory.
        dir: PathBuf,
        /// The shared stems.
        stems: BTreeSet<String>,
    },
    /// An eval set directory has no `solution.csv`.
    #[error(
        "{} has no solution.csv: an eval set is soundscapes/ plus a BirdCLEF solution.csv \
         (`silencio mix` writes one)",
        .dir.display()
    )]
    NoSolution {
        /// The eval set directory.
        dir: PathBuf,
    },
    /// The solution names soundscapes that are not on disk.
    #[error(
        "{count} soundscape(s) named in {} are not in {}: {}",
        .solution.display(),
        .dir.display(),
        listed(.examples, *.count)
    )]
    AbsentSoundscapes {
        /// The solution CSV.
        solution: PathBuf,
        /// The soundscape directory.
        dir: PathBuf,
        /// How many are absent.
        count: usize,
        /// The first few stems.
        examples: Vec<String>,
    },
    /// Solution rows lie past the end of their soundscape (the model cut fewer windows).
    #[error(
        "{count} row(s) of {} lie past the end of their soundscape: {}",
        .solution.display(),
        listed(.examples, *.count)
    )]
    RowsPastEnd {
        /// The solution CSV.
        solution: PathBuf,
        /// How many rows.
        count: usize,
        /// The first few row ids.
        examples: Vec<String>,
    },
    /// The solution names species the model does not predict.
    #[error(
        "{} names {count} species that model {model} does not predict: {}",
        .solution.display(),
        listed(.examples, *.count)
    )]
    UnknownSpecies {
        /// The solution CSV.
        solution: PathBuf,
        /// The model's version string.
        model: String,
        /// How many species.
        count: usize,
        /// The first few codes.
        examples: Vec<String>,
    },
    /// A model does not cut BirdCLEF's rows (5 s windows every 5 s).
    #[error(
        "bundle {model} cuts {length_s} s windows every {hop_s} s; BirdCLEF rows are {want} s \
         windows every {want} s"
    )]
    WindowGrid {
        /// The model's version string.
        model: String,
        /// Its window length in seconds.
        length_s: f64,
        /// Its hop in seconds.
        hop_s: f64,
        /// BirdCLEF's window (and hop) in seconds.
        want: f64,
    },
    /// The quality gate was not cleared.
    #[error("quality gate failed: {}", .reasons.join("; "))]
    GateFailed {
        /// One line per failed bar.
        reasons: Vec<String>,
    },
}

/// How many examples an error lists.
pub(crate) const EXAMPLES: usize = 5;

/// `examples` (at most [`EXAMPLES`] of `count`), with `…` when some were left out.
fn listed(examples: &[String], count: usize) -> String {
    let shown: Vec<&str> = examples.iter().take(EXAMPLES).map(String::as_str).collect();
    if count > shown.len() {
        format!("{}, …", shown.join(", "))
    } else {
        shown.join(", ")
    }
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
            // The kinds `silencio eval` printed before these checks moved here, kept stable.
            Error::NotSoundscapeDir { .. }
            | Error::NoSoundscapes { .. }
            | Error::NoSolution { .. }
            | Error::AbsentSoundscapes { .. }
            | Error::RowsPastEnd { .. } => "missing",
            Error::DuplicateStems { .. } => "invalid_input",
            Error::UnknownSpecies { .. } => "unknown_species",
            Error::WindowGrid { .. } => "invalid_config",
            Error::GateFailed { .. } => "gate",
        }
    }
}
