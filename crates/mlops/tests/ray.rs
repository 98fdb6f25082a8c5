//! The Ray Jobs client against a real Ray head.
//!
//! Needs `SILENCIO_RAY_ADDRESS` (e.g. `http://127.0.0.1:8265`) of a running head, started with
//! `ray start --head --dashboard-host 127.0.0.1 --dashboard-port 8265 --num-cpus 1`;
//! `SILENCIO_SKIP_RAY=1` skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use silencio_mlops::Error;
use silencio_mlops::ray::{JobStatus, JobSubmission, RayJobs};

fn ray() -> Option<RayJobs> {
    common::required_env("SILENCIO_RAY_ADDRESS", "SILENCIO_SKIP_RAY")
        .map(|a| RayJobs::new(&a).unwrap())
}

#[test]
fn job_runs_to_success_and_its_log_is_followed() {
    let Some(ray) = ray() else {
        return;
    };
    let mut job = JobSubmission::new(
        "python -c \"import os; print('hello from ray', os.environ['SILENCIO_GREETING']); import time; time.sleep(1)\"",
    );
    job.runtime_env
        .env_vars
        .insert("SILENCIO_GREETING".into(), "hola".into());
    job.metadata.insert("experiment".into(), "ray-test".into());
    let id = ray.submit(&job).unwrap();
    assert!(!id.is_empty());

    let mut followed = String::new();
    let never = AtomicBool::new(false);
    let info = ray
        .follow(
            &id,
            Duration::from_millis(500),
            |chunk| followed.push_str(chunk),
            &never,
        )
        .unwrap();
    assert_eq!(info.status, JobStatus::Succeeded, "{info:?}\n{followed}");
    assert_eq!(info.driver_exit_code, Some(0));
    assert_eq!(info.submission_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        info.metadata
            .as_ref()
            .and_then(|m| m.get("experiment"))
            .map(String::as_str),
        Some("ray-test")
    );
    assert!(
        followed.contains("hello from ray hola"),
        "followed log: {followed}"
    );
    assert!(ray.logs(&id).unwrap().contains("hello from ray hola"));
    // Stopping a finished job is not an error; Ray says it did not stop anything.
    assert!(!ray.stop(&id).unwrap());
}

#[test]
fn job_is_stopped_on_request() {
    let Some(ray) = ray() else {
        return;
    };
    let mut job = JobSubmission::new("sleep 600");
    let own_id = format!("silencio-test-{}", std::process::id());
    job.submission_id = Some(own_id.clone());
    let id = ray.submit(&job).unwrap();
    assert_eq!(id, own_id);
    // Submitting the same id twice is refused by Ray, as a typed error.
    assert!(matches!(
        ray.submit(&job),
        Err(Error::Ray {
            status: 400 | 500,
            ..
        })
    ));

    // Simulate Ctrl-C: set the flag once the job runs; follow stops it and waits for the end.
    let stop = AtomicBool::new(false);
    let t0 = Instant::now();
    let info = std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(120);
            while Instant::now() < deadline {
                if ray
                    .status(&id)
                    .is_ok_and(|i| i.status == JobStatus::Running)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            stop.store(true, Ordering::SeqCst);
        });
        ray.follow(&id, Duration::from_millis(500), |_| {}, &stop)
    })
    .unwrap();
    assert_eq!(info.status, JobStatus::Stopped, "{info:?}");
    assert!(t0.elapsed() < Duration::from_secs(300));
    assert_eq!(ray.status(&id).unwrap().status, JobStatus::Stopped);

    assert!(matches!(
        ray.status("silencio-no-such-job"),
        Err(Error::Ray { status: 404, .. })
    ));
}
