//! BirdCLEF 2025 data layout for El Silencio Acoustic Explorer: `taxonomy.csv` (its row order is
//! the class order everywhere), `train.csv` (secondary labels as Python-list strings),
//! `train_audio/`, `train_soundscapes/`, a validation report that lists every problem and
//! skips bad rows instead of failing the run, deterministic splits, the resumable ETL to
//! feature shards on any object store, and labelling sets built from what the server sampled
//! and the feedback it stored ([`labelling`]).
#![warn(missing_docs)]

pub mod error;
pub mod etl;
pub mod feedback_rows;
pub mod labelling;
pub mod mix;
pub mod splits;
pub mod store;
pub mod taxonomy;
pub mod train_csv;
pub mod validate;

pub use error::{Error, Result};
pub use etl::{Dtype, EtlEvent, EtlOptions, EtlOutcome, Manifest, ManifestHead};
pub use splits::{
    CvFold, Holdout, Period, PeriodFilter, Split, holdout_split, recording_group, split_table,
    temporal_split, train_valid_split,
};
pub use store::Store;
pub use taxonomy::{Species, Taxonomy};
pub use train_csv::{RowProblem, TrainRecord, located_points, parse_py_list, read_train_csv};
pub use validate::{
    Screened, ValidateOptions, ValidationReport, screen_rows, usable_records, validate,
};
