//! Experiment tracking: one API, two backends chosen by the tracking URI.
//!
//! | URI | backend |
//! |---|---|
//! | `""`, `mlruns`, `./path`, `/abs/path`, `file:./path`, `file:///abs/path` | MLflow file store |
//! | `http://host:port`, `https://…` (feature `tls`) | MLflow tracking server (REST) |
//!
//! ```no_run
//! use silencio_mlops::{Metric, RunStatus, Tracking};
//! # fn main() -> silencio_mlops::Result<()> {
//! let tracking = Tracking::open("mlruns")?;
//! let run = tracking.start_run("birdclef-effnet", "lr-3e-4", &[("mlflow.source.git.commit", "abc123")])?;
//! run.log_params(&[("lr", "3e-4"), ("epochs", "30")])?;
//! run.log_metrics(&[Metric::new("val/auc", 0.91, 1)])?;
//! run.log_artifact("model/bundle.json".as_ref(), "model")?;
//! run.end_run(RunStatus::Finished)?;
//! # Ok(()) }
//! ```
//!
//! The file store is MLflow's `FileStore` layout; MLflow 3.x keeps it in maintenance mode and
//! only opens it with `MLFLOW_ALLOW_FILE_STORE=true`:
//! `MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri ./mlruns`.

mod file_store;
mod rest;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::fsutil::now_ms;
use crate::{Error, Result};

pub use file_store::FileStore;
pub use rest::RestStore;

/// MLflow's run states; the file store keeps them as these integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Running (1).
    Running,
    /// Scheduled (2).
    Scheduled,
    /// Finished successfully (3).
    Finished,
    /// Failed (4).
    Failed,
    /// Killed (5).
    Killed,
}

impl RunStatus {
    /// The integer the file store writes (`mlflow.entities.RunStatus`).
    pub fn as_int(self) -> i64 {
        match self {
            RunStatus::Running => 1,
            RunStatus::Scheduled => 2,
            RunStatus::Finished => 3,
            RunStatus::Failed => 4,
            RunStatus::Killed => 5,
        }
    }

    /// The name the REST API uses (`"FINISHED"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "RUNNING",
            RunStatus::Scheduled => "SCHEDULED",
            RunStatus::Finished => "FINISHED",
            RunStatus::Failed => "FAILED",
            RunStatus::Killed => "KILLED",
        }
    }
}

/// One metric value.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Key, e.g. `val/auc`.
    pub key: String,
    /// Value (NaN and infinities are kept, as MLflow keeps them).
    pub value: f64,
    /// Step (epoch, global step).
    pub step: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl Metric {
    /// A value stamped now.
    pub fn new(key: impl Into<String>, value: f64, step: i64) -> Self {
        Metric {
            key: key.into(),
            value,
            step,
            timestamp_ms: now_ms(),
        }
    }

    /// A value with an explicit timestamp.
    pub fn at(key: impl Into<String>, value: f64, step: i64, timestamp_ms: i64) -> Self {
        Metric {
            key: key.into(),
            value,
            step,
            timestamp_ms,
        }
    }
}

impl From<(&str, f64, i64, i64)> for Metric {
    /// `(key, value, step, timestamp_ms)`.
    fn from((key, value, step, timestamp_ms): (&str, f64, i64, i64)) -> Self {
        Metric::at(key, value, step, timestamp_ms)
    }
}

/// The tag MLflow shows as the run's name.
pub const TAG_RUN_NAME: &str = "mlflow.runName";
/// The user who started the run.
pub const TAG_USER: &str = "mlflow.user";
/// The program that ran.
pub const TAG_SOURCE_NAME: &str = "mlflow.source.name";
/// `LOCAL`, `JOB`, …
pub const TAG_SOURCE_TYPE: &str = "mlflow.source.type";
/// The git commit of the code.
pub const TAG_GIT_COMMIT: &str = "mlflow.source.git.commit";
/// The git branch of the code.
pub const TAG_GIT_BRANCH: &str = "mlflow.source.git.branch";

/// A tracking backend, opened from a URI.
#[derive(Debug)]
pub struct Tracking {
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    File(FileStore),
    Rest(RestStore),
}

impl Tracking {
    /// Opens the backend named by `uri` (see the module docs). An empty URI is `mlruns` in the
    /// current directory, MLflow's default.
    pub fn open(uri: &str) -> Result<Self> {
        let uri = uri.trim();
        let backend = if uri.starts_with("http://") || uri.starts_with("https://") {
            Backend::Rest(RestStore::new(uri)?)
        } else if uri.starts_with("file:") {
            let path =
                crate::fsutil::file_uri_to_path(uri).ok_or_else(|| Error::UnsupportedUri {
                    uri: uri.to_string(),
                    reason: "only local file: URIs (no host) are supported".into(),
                })?;
            Backend::File(FileStore::open(&path)?)
        } else if uri.contains("://") || uri.starts_with("databricks") {
            return Err(Error::UnsupportedUri {
                uri: uri.to_string(),
                reason: "use a path, file: URI, or http(s):// MLflow server \
                         (sqlite:// and other database URIs need an MLflow server in front)"
                    .into(),
            });
        } else {
            Backend::File(FileStore::open(Path::new(if uri.is_empty() {
                "mlruns"
            } else {
                uri
            }))?)
        };
        Ok(Tracking { backend })
    }

    /// Opens `$MLFLOW_TRACKING_URI`, else `mlruns` in the current directory.
    pub fn from_env() -> Result<Self> {
        Tracking::open(&std::env::var("MLFLOW_TRACKING_URI").unwrap_or_default())
    }

    /// The tracking URI, normalised (`file:///abs/mlruns` or the server's base URL).
    pub fn uri(&self) -> String {
        match &self.backend {
            Backend::File(f) => f.uri(),
            Backend::Rest(r) => r.base().to_string(),
        }
    }

    /// The id of the active experiment called `name`, if there is one.
    pub fn experiment_id(&self, name: &str) -> Result<Option<String>> {
        crate::keys::validate_experiment_name(name)?;
        match &self.backend {
            Backend::File(f) => f.experiment_by_name(name),
            Backend::Rest(r) => r.experiment_by_name(name),
        }
    }

    /// The id of the experiment called `name`, created if absent.
    pub fn get_or_create_experiment(&self, name: &str) -> Result<String> {
        crate::keys::validate_experiment_name(name)?;
        match &self.backend {
            Backend::File(f) => f.get_or_create_experiment(name),
            Backend::Rest(r) => r.get_or_create_experiment(name),
        }
    }

    /// Starts a run in experiment `experiment_name` (created if absent). `run_name` may be
    /// empty (a name is made up). `tags` are set at creation; `mlflow.runName`, `mlflow.user`,
    /// `mlflow.source.name` and `mlflow.source.type` are added when not given.
    pub fn start_run(
        &self,
        experiment_name: &str,
        run_name: &str,
        tags: &[(&str, &str)],
    ) -> Result<Run> {
        let experiment_id = self.get_or_create_experiment(experiment_name)?;
        let run_name = if run_name.is_empty() {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("run-{}", &id[..8])
        } else {
            run_name.to_string()
        };
        let mut all: Vec<(String, String)> = Vec::new();
        for (k, v) in tags {
            crate::keys::validate_key("tag key", k)?;
            crate::keys::check_len("tag", k, v, crate::keys::MAX_TAG_VALUE_LEN)?;
            if *k == TAG_RUN_NAME && *v != run_name {
                return Err(Error::invalid(
                    "tag",
                    k,
                    format!("{TAG_RUN_NAME}={v:?} contradicts run name {run_name:?}"),
                ));
            }
            all.retain(|(key, _)| key != k);
            all.push((k.to_string(), v.to_string()));
        }
        let user = tags
            .iter()
            .find(|(k, _)| *k == TAG_USER)
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(current_user);
        let defaults = [
            (TAG_RUN_NAME, run_name.clone()),
            (TAG_USER, user.clone()),
            (TAG_SOURCE_NAME, current_program()),
            (TAG_SOURCE_TYPE, "LOCAL".to_string()),
        ];
        for (k, v) in defaults {
            if !all.iter().any(|(key, _)| key == k) {
                all.push((k.to_string(), v));
            }
        }
        let start = now_ms();
        let inner = match &self.backend {
            Backend::File(f) => {
                RunInner::File(f.create_run(&experiment_id, &run_name, &user, start, &all)?)
            }
            Backend::Rest(r) => {
                RunInner::Rest(r.create_run(&experiment_id, &run_name, &user, start, &all)?)
            }
        };
        Ok(Run {
            inner,
            ended: AtomicBool::new(false),
        })
    }
}

impl Tracking {
    /// Reopens the existing run `run_id` and marks it RUNNING again: a trainer resumed after
    /// a crash keeps logging into the same run.
    pub fn resume_run(&self, run_id: &str) -> Result<Run> {
        let inner = match &self.backend {
            Backend::File(f) => RunInner::File(f.resume_run(run_id)?),
            Backend::Rest(r) => RunInner::Rest(r.resume_run(run_id)?),
        };
        Ok(Run {
            inner,
            ended: AtomicBool::new(false),
        })
    }
}

fn current_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_string())
}

fn current_program() -> String {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default()
}

/// A started run. Every method may be called from several threads. A run that is dropped
/// without [`Run::end_run`] stays RUNNING, as an MLflow run of a process that died does: end it
/// with `Failed` on error paths.
#[derive(Debug)]
pub struct Run {
    inner: RunInner,
    ended: AtomicBool,
}

#[derive(Debug)]
enum RunInner {
    File(file_store::FileRun),
    Rest(rest::RestRun),
}

impl Run {
    /// The run id (32 hex digits).
    pub fn run_id(&self) -> &str {
        match &self.inner {
            RunInner::File(r) => &r.run_id,
            RunInner::Rest(r) => &r.run_id,
        }
    }

    /// The experiment id.
    pub fn experiment_id(&self) -> &str {
        match &self.inner {
            RunInner::File(r) => &r.experiment_id,
            RunInner::Rest(r) => &r.experiment_id,
        }
    }

    /// Where the run's artifacts live (`file:///…/artifacts`, `mlflow-artifacts:/…`).
    pub fn artifact_uri(&self) -> &str {
        match &self.inner {
            RunInner::File(r) => &r.artifact_uri,
            RunInner::Rest(r) => &r.artifact_uri,
        }
    }

    fn check_active(&self) -> Result<()> {
        if self.ended.load(Ordering::SeqCst) {
            return Err(Error::RunEnded {
                run_id: self.run_id().to_string(),
            });
        }
        Ok(())
    }

    /// Logs params. A param is immutable: logging a key again with another value fails
    /// ([`Error::ParamChanged`] locally, `INVALID_PARAMETER_VALUE` from a server).
    pub fn log_params(&self, params: &[(&str, &str)]) -> Result<()> {
        self.check_active()?;
        let mut unique: Vec<(&str, &str)> = Vec::with_capacity(params.len());
        for &(k, v) in params {
            crate::keys::validate_key("param key", k)?;
            crate::keys::check_len("param", k, v, crate::keys::MAX_PARAM_VALUE_LEN)?;
            match unique.iter().find(|(key, _)| *key == k) {
                Some((_, old)) if *old != v => {
                    return Err(Error::ParamChanged {
                        key: k.to_string(),
                        old: old.to_string(),
                        new: v.to_string(),
                    });
                }
                Some(_) => {}
                None => unique.push((k, v)),
            }
        }
        match &self.inner {
            RunInner::File(r) => r.log_params(&unique),
            RunInner::Rest(r) => r.log_batch(&[], &unique, &[]),
        }
    }

    /// Logs one param.
    pub fn log_param(&self, key: &str, value: &str) -> Result<()> {
        self.log_params(&[(key, value)])
    }

    /// Logs metric values (any number: the REST backend splits them into batches MLflow takes).
    pub fn log_metrics(&self, metrics: &[Metric]) -> Result<()> {
        self.check_active()?;
        for m in metrics {
            crate::keys::validate_key("metric key", &m.key)?;
        }
        match &self.inner {
            RunInner::File(r) => r.log_metrics(metrics),
            RunInner::Rest(r) => r.log_batch(metrics, &[], &[]),
        }
    }

    /// Logs one metric value stamped now.
    pub fn log_metric(&self, key: &str, value: f64, step: i64) -> Result<()> {
        self.log_metrics(&[Metric::new(key, value, step)])
    }

    /// Sets tags (overwriting earlier values).
    pub fn set_tags(&self, tags: &[(&str, &str)]) -> Result<()> {
        self.check_active()?;
        for (k, v) in tags {
            crate::keys::validate_key("tag key", k)?;
            crate::keys::check_len("tag", k, v, crate::keys::MAX_TAG_VALUE_LEN)?;
        }
        match &self.inner {
            RunInner::File(r) => r.set_tags(tags),
            RunInner::Rest(r) => r.set_tags(tags),
        }
    }

    /// Uploads `local_path` under `artifact_subdir` (`""` for the root). A file lands at
    /// `<artifact_subdir>/<file name>`; a directory's contents land under `<artifact_subdir>`
    /// (as MLflow's `log_artifacts`).
    pub fn log_artifact(&self, local_path: &Path, artifact_subdir: &str) -> Result<()> {
        self.check_active()?;
        let subdir = artifact_subdir.trim_matches('/');
        crate::fsutil::validate_artifact_path(subdir)?;
        let meta = std::fs::metadata(local_path).map_err(|e| Error::io(local_path, e))?;
        let files: Vec<(std::path::PathBuf, String)> = if meta.is_dir() {
            crate::fsutil::walk_files(local_path)?
                .into_iter()
                .map(|(p, rel)| (p, join_artifact(subdir, &rel)))
                .collect()
        } else {
            let name = local_path
                .file_name()
                .ok_or_else(|| {
                    Error::invalid(
                        "artifact",
                        &local_path.display().to_string(),
                        "no file name",
                    )
                })?
                .to_string_lossy()
                .into_owned();
            vec![(local_path.to_path_buf(), join_artifact(subdir, &name))]
        };
        for (_, rel) in &files {
            crate::fsutil::validate_artifact_path(rel)?;
        }
        match &self.inner {
            RunInner::File(r) => r.log_artifacts(&files),
            RunInner::Rest(r) => r.log_artifacts(&files),
        }
    }

    /// Ends the run with `status`. Later logging calls fail with [`Error::RunEnded`].
    pub fn end_run(&self, status: RunStatus) -> Result<()> {
        if self.ended.swap(true, Ordering::SeqCst) {
            return Err(Error::RunEnded {
                run_id: self.run_id().to_string(),
            });
        }
        let end = now_ms();
        let res = match &self.inner {
            RunInner::File(r) => r.end(status, end),
            RunInner::Rest(r) => r.end(status, end),
        };
        if res.is_err() {
            // Let the caller retry ending a run whose update did not go through.
            self.ended.store(false, Ordering::SeqCst);
        }
        res
    }
}

fn join_artifact(subdir: &str, rel: &str) -> String {
    if subdir.is_empty() {
        rel.to_string()
    } else {
        format!("{subdir}/{rel}")
    }
}
