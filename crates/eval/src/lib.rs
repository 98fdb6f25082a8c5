//! Evaluation for the El Silencio stack (BirdCLEF 2025: 206 species, one prediction per 5 s
//! window).
//!
//! - [`metrics`]: the competition metric (macro ROC-AUC over species with a positive), macro mAP,
//!   per-class values, precision-recall curves and threshold statistics. Both follow
//!   scikit-learn exactly, ties included; `tests/sklearn_parity.rs` checks thousands of cases
//!   against fixtures written by `tests/reference/make_reference.py`.
//! - [`slices`]: the metric on subsets of rows (collection, time of day, SNR, …) and of columns
//!   (taxon class).
//! - [`report`]: [`report::EvalReport`], written as JSON and as a self-contained HTML page
//!   with inline SVG plots.
//! - [`gate`]: the quality gate a model must pass before the registry promotes it.
//! - [`submission`]: Kaggle submission and solution CSV files, and scoring one against the other.
//! - [`effect`]: how large a difference between two models an evaluation can see: a paired
//!   cluster bootstrap of the macro ROC-AUC difference, seed spread, the minimum detectable
//!   effect and a verdict (`silencio eval compare`).
//! - [`soundscapes`]: a model (a scorer callback) run over soundscape directories: an
//!   [`EvalSet`] scored into a report, a submission assembled, timed against Kaggle's budget.
//!
//! The crate does not depend on burn: scores come in as plain `f32` matrices.
#![warn(missing_docs)]

pub mod effect;
pub mod error;
pub mod gate;
mod html;
pub mod matrix;
pub mod metrics;
pub mod report;
pub mod slices;
pub mod soundscapes;
pub mod submission;

pub use error::{Error, Result};
pub use gate::{GateConfig, GateDecision, SliceThreshold};
pub use matrix::{Labels, Matrix, Scores};
pub use metrics::{ClassMetrics, MetricSummary, PrPoint, ThresholdStats, evaluate};
pub use report::{EvalReport, ReportInput, ReportOptions};
pub use slices::{SliceResult, slice_report, time_of_day};
pub use soundscapes::{EvalSet, Evaluation, Scored, SubmissionRun, Timing};
