//! MLflow tracking of a run (through `silencio-mlops`): params, per-epoch metrics, system and
//! git tags, artefacts; a resumed run keeps logging into the same MLflow run.

use std::path::Path;
use std::sync::Arc;

use silencio_mlops::{Metric, Run, RunStatus, Tracking};

use crate::{Error, Result};

fn err(e: silencio_mlops::Error) -> Error {
    Error::Tracking {
        message: e.to_string(),
    }
}

/// One MLflow run.
#[derive(Debug)]
pub struct Tracker {
    tracking: Tracking,
    run: Option<Arc<Run>>,
}

impl Tracker {
    /// Opens the tracking URI (a directory, `file:` URI or `http(s)://` server).
    pub fn open(uri: &str) -> Result<Self> {
        Ok(Self {
            tracking: Tracking::open(uri).map_err(err)?,
            run: None,
        })
    }

    fn run(&self) -> Result<&Run> {
        self.run.as_deref().ok_or_else(|| Error::Tracking {
            message: "no active run".into(),
        })
    }

    /// Starts a new run, or resumes `existing`; returns the run id.
    pub fn start(
        &mut self,
        experiment: &str,
        run_name: &str,
        existing: Option<&str>,
    ) -> Result<String> {
        let run = match existing {
            Some(id) => self.tracking.resume_run(id).map_err(err)?,
            None => self
                .tracking
                .start_run(experiment, run_name, &[("mlflow.source.type", "LOCAL")])
                .map_err(err)?,
        };
        let id = run.run_id().to_string();
        self.run = Some(Arc::new(run));
        Ok(id)
    }

    /// The run id.
    pub fn run_id(&self) -> &str {
        self.run.as_ref().map_or("", |r| r.run_id())
    }

    /// Where to look at the run.
    pub fn describe(&self) -> String {
        let uri = self.tracking.uri();
        match &self.run {
            Some(r) if uri.starts_with("http") => format!(
                "{uri}/#/experiments/{}/runs/{}",
                r.experiment_id(),
                r.run_id()
            ),
            Some(r) => format!(
                "run {} in {uri} (open with: MLFLOW_ALLOW_FILE_STORE=true mlflow ui --backend-store-uri {uri})",
                r.run_id()
            ),
            None => uri,
        }
    }

    /// Logs params.
    pub fn log_params(&self, params: &[(String, String)]) -> Result<()> {
        let p: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.run()?.log_params(&p).map_err(err)
    }

    /// Tags the run with the machine, the Rust toolchain and the git commit.
    pub fn log_system_tags(&self) -> Result<()> {
        let mut tags = silencio_mlops::system_info().tags();
        if let Some(g) = silencio_mlops::git_info(Path::new(".")) {
            tags.extend(g.tags());
        }
        let t: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.run()?.set_tags(&t).map_err(err)
    }

    /// Sets one tag.
    pub fn set_tag(&self, key: &str, value: &str) -> Result<()> {
        self.run()?.set_tags(&[(key, value)]).map_err(err)
    }

    /// Logs one metric.
    pub fn log_metric(&self, key: &str, value: f64, step: usize) -> Result<()> {
        self.run()?.log_metric(key, value, step as i64).map_err(err)
    }

    /// A callback for the Learner that logs each finished epoch's metrics at once, so a run
    /// killed mid-training keeps the epochs it finished.
    pub fn epoch_logger(&self) -> Result<crate::fit::EpochCallback> {
        let run = self.run.clone().ok_or_else(|| Error::Tracking {
            message: "no active run".into(),
        })?;
        Ok(Box::new(move |epoch, split, name, value| {
            let key = crate::fit::metric_key(split, name);
            if let Err(e) = run.log_metrics(&[Metric::new(key, value, epoch as i64)]) {
                eprintln!("warning: MLflow did not take metric {name}: {e}");
            }
        }))
    }

    /// Uploads a file (or a directory's contents) under `subdir` of the run's artefacts.
    pub fn log_artifact(&self, path: &Path, subdir: &str) -> Result<()> {
        self.run()?.log_artifact(path, subdir).map_err(err)
    }

    /// Ends the run, FINISHED or FAILED.
    pub fn finish(&mut self, ok: bool) -> Result<()> {
        if let Some(r) = self.run.take() {
            r.end_run(if ok {
                RunStatus::Finished
            } else {
                RunStatus::Failed
            })
            .map_err(err)?;
        }
        Ok(())
    }
}
