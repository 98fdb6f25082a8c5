//! A Ray Jobs client: the dashboard's REST API (`/api/jobs/…`, Ray 2.60), which `ray job
//! submit` uses too.
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use std::time::Duration;
//! use silencio_mlops::ray::{JobSubmission, RayJobs};
//! # fn main() -> silencio_mlops::Result<()> {
//! let ray = RayJobs::new("http://127.0.0.1:8265")?;
//! let id = ray.submit(&JobSubmission::new("cargo run --release -p trainer -- experiments/effnet.toml"))?;
//! let stop = AtomicBool::new(false); // set from a Ctrl-C handler
//! let info = ray.follow(&id, Duration::from_secs(2), |text| print!("{text}"), &stop)?;
//! println!("{:?}", info.status);
//! # Ok(()) }
//! ```
//!
//! `runtime_env.working_dir` is passed as given: a URI the cluster can fetch (`s3://…`,
//! `gs://…`, `https://…/x.zip`) or a directory on the head node. (Ray's CLI also accepts a
//! local directory by zipping and uploading it first; that upload is not done here.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::http::{Flavor, Http, abbreviate, str_field};
use crate::{Error, Result};

/// A job's state (`ray.dashboard.modules.job.common.JobStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    /// Waiting to start (runtime env being set up, resources).
    Pending,
    /// Running.
    Running,
    /// Stopped by a user.
    Stopped,
    /// Exited 0.
    Succeeded,
    /// Failed.
    Failed,
}

impl JobStatus {
    /// STOPPED, SUCCEEDED or FAILED.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Stopped | JobStatus::Succeeded | JobStatus::Failed
        )
    }
}

/// `runtime_env` of a submission.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuntimeEnv {
    /// Code directory URI (or a path on the head node).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Environment variables of the entrypoint.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env_vars: BTreeMap<String, String>,
}

/// A job to submit.
#[derive(Debug, Clone, Serialize)]
pub struct JobSubmission {
    /// Shell command run on the head node (e.g. `python train.py`).
    pub entrypoint: String,
    /// Environment.
    pub runtime_env: RuntimeEnv,
    /// A caller-chosen id (Ray makes `raysubmit_…` when absent); submitting an id twice fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub submission_id: Option<String>,
    /// Free key/values shown with the job.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// CPUs reserved for the entrypoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_cpus: Option<f64>,
    /// GPUs reserved for the entrypoint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint_num_gpus: Option<f64>,
}

impl JobSubmission {
    /// A job running `entrypoint` with nothing else set.
    pub fn new(entrypoint: impl Into<String>) -> Self {
        JobSubmission {
            entrypoint: entrypoint.into(),
            runtime_env: RuntimeEnv::default(),
            submission_id: None,
            metadata: BTreeMap::new(),
            entrypoint_num_cpus: None,
            entrypoint_num_gpus: None,
        }
    }
}

/// What `GET /api/jobs/<id>` says about a job.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct JobInfo {
    /// State.
    pub status: JobStatus,
    /// The submission id.
    #[serde(default)]
    pub submission_id: Option<String>,
    /// The entrypoint.
    #[serde(default)]
    pub entrypoint: String,
    /// Ray's explanation of the state.
    #[serde(default)]
    pub message: Option<String>,
    /// `JOB_SUPERVISOR_ACTOR_START_TIMEOUT`, … when Ray failed it.
    #[serde(default)]
    pub error_type: Option<String>,
    /// Start, ms since the epoch.
    #[serde(default)]
    pub start_time: Option<i64>,
    /// End, ms since the epoch.
    #[serde(default)]
    pub end_time: Option<i64>,
    /// The entrypoint's exit code once it ended.
    #[serde(default)]
    pub driver_exit_code: Option<i64>,
    /// Metadata given at submission.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// A Ray cluster's job API.
#[derive(Debug, Clone)]
pub struct RayJobs {
    http: Http,
}

/// How long `follow` waits for a job to reach a terminal state once it asked Ray to stop it.
const STOP_GRACE: Duration = Duration::from_secs(60);

impl RayJobs {
    /// A client of the dashboard at `address` (`http://127.0.0.1:8265`).
    pub fn new(address: &str) -> Result<Self> {
        let address = address.trim();
        let ok = address.starts_with("http://")
            || (address.starts_with("https://") && cfg!(feature = "tls"));
        if !ok {
            return Err(Error::UnsupportedUri {
                uri: address.to_string(),
                reason: "a Ray dashboard address is http://host:8265 \
                         (https needs the `tls` feature)"
                    .into(),
            });
        }
        Ok(RayJobs {
            http: Http::new(address, Flavor::Ray),
        })
    }

    fn job_path(id: &str, suffix: &str) -> String {
        format!("/api/jobs/{}{suffix}", crate::fsutil::encode_path(id))
    }

    /// Submits a job; returns its submission id.
    pub fn submit(&self, job: &JobSubmission) -> Result<String> {
        let ep = "/api/jobs/";
        let body = serde_json::to_value(job).map_err(|e| Error::Protocol {
            endpoint: ep.into(),
            message: e.to_string(),
        })?;
        let v = self.http.post_json(ep, &body)?;
        str_field(ep, &v, "submission_id")
    }

    /// The job's state.
    pub fn status(&self, submission_id: &str) -> Result<JobInfo> {
        let ep = Self::job_path(submission_id, "");
        let v = self.http.get_json(&ep, &[])?;
        serde_json::from_value(v.clone()).map_err(|e| Error::Protocol {
            endpoint: ep,
            message: format!("{e}: {}", abbreviate(&v)),
        })
    }

    /// The job's whole log so far.
    pub fn logs(&self, submission_id: &str) -> Result<String> {
        let ep = Self::job_path(submission_id, "/logs");
        let v = self.http.get_json(&ep, &[])?;
        str_field(&ep, &v, "logs")
    }

    /// Asks Ray to stop the job; `Ok(false)` when it had already ended.
    pub fn stop(&self, submission_id: &str) -> Result<bool> {
        let ep = Self::job_path(submission_id, "/stop");
        let v = self.http.post_empty(&ep)?;
        v.get("stopped")
            .and_then(Value::as_bool)
            .ok_or_else(|| Error::Protocol {
                endpoint: ep,
                message: format!("no boolean 'stopped' in {}", abbreviate(&v)),
            })
    }

    /// Polls the job every `poll_interval` until it ends, passing each new piece of its log to
    /// `on_log_chunk`. When `should_stop` becomes true (a Ctrl-C handler sets it) the job is
    /// stopped and followed to its end: the result then says `STOPPED`. Returns
    /// [`Error::Interrupted`] if it is still running a minute after the stop.
    pub fn follow(
        &self,
        submission_id: &str,
        poll_interval: Duration,
        mut on_log_chunk: impl FnMut(&str),
        should_stop: &AtomicBool,
    ) -> Result<JobInfo> {
        let mut printed = 0usize;
        let mut stop_sent: Option<Instant> = None;
        loop {
            let info = self.status(submission_id)?;
            // Logs after the status: a terminal status means the log is complete.
            let logs = self.logs(submission_id)?;
            if logs.len() < printed || !logs.is_char_boundary(printed) {
                // The log was rotated or replaced: start over rather than slice mid-char.
                printed = 0;
            }
            if logs.len() > printed {
                on_log_chunk(&logs[printed..]);
                printed = logs.len();
            }
            if info.status.is_terminal() {
                return Ok(info);
            }
            if should_stop.load(Ordering::SeqCst) {
                match stop_sent {
                    None => {
                        self.stop(submission_id)?;
                        stop_sent = Some(Instant::now());
                    }
                    Some(t) if t.elapsed() > STOP_GRACE => {
                        return Err(Error::Interrupted {
                            submission_id: submission_id.to_string(),
                        });
                    }
                    Some(_) => {}
                }
            }
            // Sleep in slices so a stop request is acted on quickly.
            let until = Instant::now() + poll_interval;
            while Instant::now() < until {
                if should_stop.load(Ordering::SeqCst) && stop_sent.is_none() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50).min(poll_interval));
            }
        }
    }
}
