//! `trainer submit`: runs the trainer as a job on a Ray cluster through the Ray Jobs REST API,
//! follows its status and logs, and stops it on Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use silencio_mlops::ray::{JobStatus, JobSubmission, RayJobs, RuntimeEnv};

use crate::{Error, Result};

fn err(e: silencio_mlops::Error) -> Error {
    Error::Tracking {
        message: format!("ray: {e}"),
    }
}

/// Shell-quotes one argument.
fn quote(a: &str) -> String {
    if !a.is_empty()
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@".contains(c))
    {
        a.to_string()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

/// The trainer command line a job runs: `cargo run --release -p trainer -- <args>`.
pub fn forwarded_args(args: &[String]) -> String {
    let mut s = String::from("cargo run --release -p trainer --");
    for a in args {
        s.push(' ');
        s.push_str(&quote(a));
    }
    s
}

/// Submits `entrypoint` (default: `default_entrypoint`) to the Ray cluster at `address`; when
/// `follow`, prints its logs until it ends and stops it on Ctrl-C. Returns the job's final
/// status name; a job that fails is an error.
pub fn submit(
    address: &str,
    entrypoint: Option<String>,
    working_dir: Option<String>,
    default_entrypoint: &str,
    follow: bool,
) -> Result<String> {
    let ray = RayJobs::new(address).map_err(err)?;
    let mut job = JobSubmission::new(entrypoint.unwrap_or_else(|| default_entrypoint.to_string()));
    job.runtime_env = RuntimeEnv {
        working_dir,
        ..Default::default()
    };
    job.metadata
        .insert("submitted_by".into(), "silencio trainer submit".into());
    let id = ray.submit(&job).map_err(err)?;
    eprintln!("submitted job {id} to {address}: {}", job.entrypoint);
    if !follow {
        return Ok(id);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // A second Ctrl-C while stopping exits at once.
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("stopping job (Ctrl-C again to leave it running and exit)");
    })
    .map_err(|e| Error::Tracking {
        message: format!("installing the Ctrl-C handler: {e}"),
    })?;
    let info = ray
        .follow(
            &id,
            Duration::from_millis(500),
            |chunk| print!("{chunk}"),
            &stop,
        )
        .map_err(err)?;
    eprintln!(
        "job {id}: {:?}{}",
        info.status,
        info.message
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    match info.status {
        JobStatus::Succeeded => Ok(id),
        JobStatus::Stopped if stop.load(Ordering::SeqCst) => Ok(id),
        other => Err(Error::Training {
            message: format!("ray job {id} ended {other:?}"),
        }),
    }
}
