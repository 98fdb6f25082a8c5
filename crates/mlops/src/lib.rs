//! MLOps for El Silencio: experiment tracking, model registry and remote jobs, with no Python
//! at run time.
//!
//! - [`tracking`]: one [`Tracking`] API with two backends chosen by the tracking URI: MLflow's
//!   local **file store** (`mlruns/`, `file:///abs/path`), written in the layout MLflow's
//!   `FileStore` reads, and an MLflow **tracking server** (`http://…`) through its REST API,
//!   artifacts through the server's artifact proxy.
//! - [`registry`]: one [`Registry`] API over MLflow's model registry (REST) or a local directory
//!   laid out as `silencio-infer` reads it (`aliases.json` + `versions/<v>/`).
//! - [`ray`]: a Ray Jobs client (submit, status, logs, stop, follow).
//! - [`info`]: git and machine facts worth tagging a run with.
//!
//! Formats were checked against MLflow 3.17.2 and Ray 2.60.0 (see `tests/requirements.txt`).

#![warn(missing_docs)]

mod error;
mod fsutil;
mod http;
pub mod info;
pub mod keys;
pub mod ray;
pub mod registry;
pub mod tracking;
mod yaml;

pub use error::{Error, Result};
pub use info::{GitInfo, SystemInfo, git_info, system_info};
pub use registry::{ModelVersion, Registry};
pub use tracking::{Metric, Run, RunStatus, Tracking};
