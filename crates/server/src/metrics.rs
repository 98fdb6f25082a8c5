//! Prometheus metrics. The names are a contract: the load generator and the Grafana
//! dashboard read them.
//!
//! The `metrics` facade has one global recorder per process, so [`handle`] installs it once and
//! every app built in the process (tests build many) renders the same registry; tests compare
//! before/after values, and labels such as `model_version` keep apps apart.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{Error, Result};

/// Requests by route template and status.
pub const HTTP_REQUESTS: &str = "silencio_http_requests_total";
/// Request latency by route template and status.
pub const HTTP_DURATION: &str = "silencio_http_request_duration_seconds";
/// Windows waiting for a batch, over all loaded versions.
pub const QUEUE_DEPTH: &str = "silencio_queue_depth";
/// Windows per batch.
pub const BATCH_SIZE: &str = "silencio_batch_size";
/// Seconds per forward pass, by model version.
pub const INFERENCE: &str = "silencio_inference_seconds";
/// Forward time over audio seconds, by model version.
pub const REAL_TIME_FACTOR: &str = "silencio_real_time_factor";
/// Top-1 species per window.
pub const PREDICTIONS: &str = "silencio_predictions_total";
/// Top-1 score per window (its mean over time is a drift signal).
pub const TOP_SCORE: &str = "silencio_top_score";
/// Requests refused or abandoned, by reason.
pub const REJECTED: &str = "silencio_rejected_total";
/// Feedback entries stored, by verdict (recorded by the feedback store).
pub const FEEDBACK: &str = "silencio_feedback_total";
/// Requests saved for labelling (recorded by the sampler).
pub const SAMPLED: &str = "silencio_sampled_total";
/// Unique species detected per session (recorded by the session store).
pub const SESSION_UNIQUE_SPECIES: &str = "silencio_session_unique_species";

/// Every name above.
pub const NAMES: [&str; 12] = [
    HTTP_REQUESTS,
    HTTP_DURATION,
    QUEUE_DEPTH,
    BATCH_SIZE,
    INFERENCE,
    REAL_TIME_FACTOR,
    PREDICTIONS,
    TOP_SCORE,
    REJECTED,
    FEEDBACK,
    SAMPLED,
    SESSION_UNIQUE_SPECIES,
];

static HANDLE: OnceLock<std::result::Result<PrometheusHandle, String>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use.
pub fn handle() -> Result<PrometheusHandle> {
    HANDLE
        .get_or_init(|| install().map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::Internal(format!("cannot install the metrics recorder: {e}")))
}

fn install() -> std::result::Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    let seconds = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5,
        5.0, 10.0, 30.0,
    ];
    let handle = PrometheusBuilder::new()
        .set_buckets(&seconds)?
        .set_buckets_for_metric(
            Matcher::Full(BATCH_SIZE.into()),
            &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
        )?
        .set_buckets_for_metric(
            Matcher::Full(REAL_TIME_FACTOR.into()),
            &[
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0,
            ],
        )?
        .set_buckets_for_metric(
            Matcher::Full(TOP_SCORE.into()),
            &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0],
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

/// HELP lines (promtool wants one per metric).
fn describe() {
    describe_counter!(HTTP_REQUESTS, "HTTP requests by route template and status");
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency by route template and status"
    );
    describe_gauge!(QUEUE_DEPTH, "Windows waiting for a batch");
    describe_histogram!(BATCH_SIZE, "Windows per inference batch");
    describe_histogram!(
        INFERENCE,
        metrics::Unit::Seconds,
        "Seconds per forward pass by model version"
    );
    describe_histogram!(
        REAL_TIME_FACTOR,
        "Forward pass time over seconds of audio, by model version"
    );
    describe_counter!(PREDICTIONS, "Top-1 species per 5 s window");
    describe_histogram!(TOP_SCORE, "Top-1 score per window");
    describe_counter!(REJECTED, "Requests refused or abandoned, by reason");
    describe_counter!(FEEDBACK, "Feedback entries stored, by verdict");
    describe_counter!(SAMPLED, "Requests saved with their audio for labelling");
    describe_gauge!(
        SESSION_UNIQUE_SPECIES,
        "Unique species detected in a session"
    );
}

/// The exposition text.
pub fn render() -> Result<String> {
    let h = handle()?;
    h.run_upkeep();
    Ok(h.render())
}

pub(crate) fn http(route: &str, status: u16, elapsed: Duration) {
    let status = status.to_string();
    counter!(HTTP_REQUESTS, "route" => route.to_string(), "status" => status.clone()).increment(1);
    histogram!(HTTP_DURATION, "route" => route.to_string(), "status" => status)
        .record(elapsed.as_secs_f64());
}

pub(crate) fn queue_depth_add(n: usize) {
    gauge!(QUEUE_DEPTH).increment(n as f64);
}

pub(crate) fn queue_depth_sub(n: usize) {
    gauge!(QUEUE_DEPTH).decrement(n as f64);
}

pub(crate) fn batch(model_version: &str, windows: usize, elapsed: Duration, audio_s: f64) {
    histogram!(BATCH_SIZE).record(windows as f64);
    let v = model_version.to_string();
    histogram!(INFERENCE, "model_version" => v.clone()).record(elapsed.as_secs_f64());
    if audio_s > 0.0 {
        histogram!(REAL_TIME_FACTOR, "model_version" => v).record(elapsed.as_secs_f64() / audio_s);
    }
}

pub(crate) fn prediction(code: &str, score: f32) {
    counter!(PREDICTIONS, "species" => code.to_string()).increment(1);
    histogram!(TOP_SCORE).record(f64::from(score));
}

pub(crate) fn rejected(reason: &'static str) {
    counter!(REJECTED, "reason" => reason).increment(1);
}
