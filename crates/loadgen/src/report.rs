//! The report: one entry per (mode, concurrency) level, printed as a table and written as
//! JSON and CSV. Level `key`s (`tour-closed-c16`) are stable so that two runs (e.g. a server
//! with `--max-batch 1` and one with batching) can be compared level by level.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::ServerTiming;
use crate::error::{Error, Result};
use crate::prom::HistogramSummary;
use crate::stats::LatencySummary;

/// A whole run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `silencio-loadgen`.
    pub tool: String,
    /// Version of the load generator.
    pub version: String,
    /// Server base URL.
    pub url: String,
    /// Unix time the run started.
    pub started_unix_s: u64,
    /// The settings of the run.
    pub config: ConfigEcho,
    /// The clips uploaded.
    pub clips: Vec<ClipInfo>,
    /// One entry per level, in the order run.
    pub levels: Vec<LevelReport>,
}

/// Settings of a run, as reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigEcho {
    /// `closed` or `open`.
    pub loop_kind: String,
    /// Open loop: arrivals per second.
    pub rate_rps: Option<f64>,
    /// Measured seconds per level.
    pub duration_s: f64,
    /// Seconds per level excluded from the statistics.
    pub warmup_s: f64,
    /// Mobile mode: mean think time between requests.
    pub think_ms: f64,
    /// Mobile mode: share of uploads aborted midway.
    pub abort_share: f64,
    /// Per-request timeout.
    pub timeout_s: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// `embedded` or the `--clips` directory.
    pub clip_source: String,
}

/// One uploaded clip.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClipInfo {
    /// `short` (5 s) or `long` (60 s).
    pub set: String,
    /// Source recording.
    pub name: String,
    /// Seconds of audio.
    pub audio_s: f64,
    /// Body bytes.
    pub bytes: usize,
    /// Content-Type sent.
    pub content_type: String,
}

/// Means of the server's `timing_ms` over the OK requests of a level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TimingMeans {
    /// Mean decode + features time.
    pub decode_ms: f64,
    /// Mean time in the batching queue.
    pub queue_ms: f64,
    /// Mean batch forward time.
    pub inference_ms: f64,
    /// Mean total server time.
    pub total_ms: f64,
}

impl TimingMeans {
    pub(crate) fn of(t: &[ServerTiming]) -> Option<Self> {
        if t.is_empty() {
            return None;
        }
        let n = t.len() as f64;
        let m = |f: fn(&ServerTiming) -> f64| t.iter().map(f).sum::<f64>() / n;
        Some(Self {
            decode_ms: m(|t| t.decode),
            queue_ms: m(|t| t.queue),
            inference_ms: m(|t| t.inference),
            total_ms: m(|t| t.total),
        })
    }
}

/// Results of one (mode, concurrency) level. Counts cover requests started after the warm-up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LevelReport {
    /// `{mode}-{loop}-c{concurrency}`, stable across runs.
    pub key: String,
    /// `tour`, `power` or `mobile`.
    pub mode: String,
    /// `closed` or `open`.
    pub loop_kind: String,
    /// Virtual users (closed loop) or cap on outstanding requests (open loop).
    pub concurrency: usize,
    /// Open loop: arrivals per second.
    pub rate_rps: Option<f64>,
    /// Seconds measured.
    pub duration_s: f64,
    /// Requests sent (aborted ones included).
    pub requests: u64,
    /// 200 with a well-formed identification.
    pub ok: u64,
    /// 429 (overload).
    pub rejected_429: u64,
    /// Other 4xx.
    pub client_4xx: u64,
    /// 5xx.
    pub server_5xx: u64,
    /// Other statuses (1xx/3xx, or a 2xx that is not an identification).
    pub other_status: u64,
    /// No HTTP answer (refused, reset, timeout).
    pub transport_errors: u64,
    /// Uploads dropped midway on purpose (mobile).
    pub aborted: u64,
    /// Open loop: arrivals not sent because the outstanding cap was reached.
    pub client_dropped: u64,
    /// OK requests per second.
    pub throughput_rps: f64,
    /// Seconds of audio identified per second.
    pub audio_s_per_s: f64,
    /// Latency of OK requests (upload to last byte of the answer).
    pub latency_ms: Option<LatencySummary>,
    /// Latency of 429 answers (how fast overload is refused).
    pub rejected_latency_ms: Option<LatencySummary>,
    /// Means of the server's own timing over OK requests.
    pub server_timing_ms: Option<TimingMeans>,
    /// 5 s windows per OK answer, summed (a 60 s upload answers 12).
    pub windows: u64,
    /// Model versions that answered, with counts (a canary shows here).
    pub model_versions: BTreeMap<String, u64>,
    /// `error_type`s of non-200 answers and `transport:{kind}` for transport errors.
    pub error_types: BTreeMap<String, u64>,
    /// The server's `silencio_batch_size` histogram over the level (scrape diff).
    pub batch_size: Option<HistogramSummary>,
    /// The server's `silencio_rejected_total` increase over the level, by reason.
    pub server_rejected: BTreeMap<String, f64>,
    /// Why the batch-size histogram is missing, when it is.
    pub metrics_note: Option<String>,
    /// A few distinct transport error messages, to tell resets from timeouts.
    #[serde(default)]
    pub error_samples: Vec<String>,
}

impl Report {
    /// A fixed-width table of every level.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<24} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>5} {:>7} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
            "level",
            "req",
            "ok",
            "429",
            "4xx",
            "5xx",
            "err",
            "abort",
            "ok/s",
            "audio/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "batch"
        );
        for l in &self.levels {
            let lat = |f: fn(&LatencySummary) -> f64| {
                l.latency_ms
                    .as_ref()
                    .map_or("-".to_string(), |x| format!("{:.1}", f(x)))
            };
            let batch = l
                .batch_size
                .as_ref()
                .and_then(|b| b.mean)
                .map_or("-".to_string(), |m| format!("{m:.2}"));
            let _ = writeln!(
                s,
                "{:<24} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>5} {:>7.2} {:>8.1} {:>8} {:>8} {:>8} {:>8} {:>6}",
                l.key,
                l.requests,
                l.ok,
                l.rejected_429,
                l.client_4xx,
                l.server_5xx,
                l.transport_errors + l.other_status,
                l.aborted,
                l.throughput_rps,
                l.audio_s_per_s,
                lat(|x| x.p50_ms),
                lat(|x| x.p95_ms),
                lat(|x| x.p99_ms),
                lat(|x| x.max_ms),
                batch,
            );
        }
        s
    }

    /// One CSV row per level; the batch histogram as `le:count` pairs in one column.
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "key,mode,loop,concurrency,rate_rps,duration_s,requests,ok,rejected_429,client_4xx,\
             server_5xx,other_status,transport_errors,aborted,client_dropped,throughput_rps,\
             audio_s_per_s,p50_ms,p95_ms,p99_ms,max_ms,mean_ms,server_queue_ms,\
             server_inference_ms,server_total_ms,batches,batch_mean,batch_hist\n",
        );
        let opt = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:.3}"));
        for l in &self.levels {
            let lat = |f: fn(&LatencySummary) -> f64| opt(l.latency_ms.as_ref().map(f));
            let tm = |f: fn(&TimingMeans) -> f64| opt(l.server_timing_ms.as_ref().map(f));
            let (batches, mean, hist) = match &l.batch_size {
                Some(b) => (
                    b.count.to_string(),
                    opt(b.mean),
                    b.buckets
                        .iter()
                        .map(|x| format!("{}:{}", x.le, x.count))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                None => Default::default(),
            };
            let _ = writeln!(
                s,
                "{},{},{},{},{},{:.3},{},{},{},{},{},{},{},{},{},{:.3},{:.3},{},{},{},{},{},{},{},{},{},{},{}",
                l.key,
                l.mode,
                l.loop_kind,
                l.concurrency,
                opt(l.rate_rps),
                l.duration_s,
                l.requests,
                l.ok,
                l.rejected_429,
                l.client_4xx,
                l.server_5xx,
                l.other_status,
                l.transport_errors,
                l.aborted,
                l.client_dropped,
                l.throughput_rps,
                l.audio_s_per_s,
                lat(|x| x.p50_ms),
                lat(|x| x.p95_ms),
                lat(|x| x.p99_ms),
                lat(|x| x.max_ms),
                lat(|x| x.mean_ms),
                tm(|x| x.queue_ms),
                tm(|x| x.inference_ms),
                tm(|x| x.total_ms),
                batches,
                mean,
                hist,
            );
        }
        s
    }

    /// Write `report.json` and `report.csv` into `dir` (created if needed), each atomically.
    /// Returns their paths.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        let json = dir.join("report.json");
        let csv = dir.join("report.csv");
        let mut body = serde_json::to_vec_pretty(self)?;
        body.push(b'\n');
        write_atomic(&json, &body)?;
        write_atomic(&csv, self.csv().as_bytes())?;
        Ok((json, csv))
    }
}

/// Replaces `path` atomically ([`silencio_common::write_atomic`]): a reader sees the old file
/// or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    silencio_common::write_atomic(path, bytes)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}
