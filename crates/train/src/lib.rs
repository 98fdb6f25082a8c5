//! The El Silencio trainer: experiments (TOML), Burn's Learner on the ETL's shards,
//! augmentation, data-parallel devices, evaluation, quality gate, registry and MLflow tracking.
#![warn(missing_docs)]

pub mod adamw;
pub mod augment;
pub mod dataset;
pub mod distill;
pub mod equivalence;
pub mod error;
pub mod evaluate;
pub mod experiment;
pub mod fit;
pub mod gpu_check;
pub mod jobs;
pub mod location;
pub mod model;
pub mod pipeline;
pub mod predict;
pub mod prepare;
pub mod priors;
#[cfg(feature = "birdnet")]
pub mod probe;
pub mod registry;
pub mod release;
pub mod rounds;
pub mod scaling;
pub mod teach;
pub mod teacher;
pub mod track;

pub use error::{Error, Result};
pub use experiment::Experiment;
