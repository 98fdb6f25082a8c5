//! The serving panel: the dashboard's backend scrapes the serving process's `/metrics`
//! (Prometheus text) and `/v1/models` with a blocking client and turns them into figures the
//! page polls (same origin, so no CORS). A server that is down is a state the panel shows,
//! not an error.
//!
//! Scrapes happen when the page asks (at most one per [`MIN_SCRAPE_INTERVAL`]); rates and the
//! recent latency come from the difference between two scrapes, and the last
//! [`HISTORY_POINTS`] of them are kept so that a page opened later sees the recent past.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use silencio_api::{Blend, Licence, LicenceStatus, ModelInfo, ModelsList};

use crate::prom::{self, Exposition, Histogram};

/// Scrapes closer together than this are answered from the last one.
pub const MIN_SCRAPE_INTERVAL: Duration = Duration::from_millis(900);
/// Points of history kept.
pub const HISTORY_POINTS: usize = 300;
/// Routes of monitoring traffic, left out of the request rate, latency and 5xx count so that
/// they show the identification API's traffic: the probes, and `/v1/models`, which the
/// dashboard itself polls on every scrape (counting it would show ~1 req/s of phantom traffic).
pub const MONITORING_ROUTES: [&str; 4] = ["/metrics", "/healthz", "/readyz", "/v1/models"];

/// Metric names read (the server's contract).
pub mod names {
    /// Counter `{route, status}`.
    pub const REQUESTS: &str = "silencio_http_requests_total";
    /// Histogram `{route, status}`.
    pub const DURATION: &str = "silencio_http_request_duration_seconds";
    /// Gauge.
    pub const QUEUE_DEPTH: &str = "silencio_queue_depth";
    /// Histogram of windows per batch.
    pub const BATCH_SIZE: &str = "silencio_batch_size";
    /// Histogram `{model_version}`.
    pub const INFERENCE: &str = "silencio_inference_seconds";
    /// Counter `{species}` (top-1 per window).
    pub const PREDICTIONS: &str = "silencio_predictions_total";
    /// Counter `{reason}`.
    pub const REJECTED: &str = "silencio_rejected_total";
}

/// Request count of one route and status.
#[derive(Debug, Clone, Serialize)]
pub struct RouteCount {
    /// Route template.
    pub route: String,
    /// HTTP status.
    pub status: String,
    /// Requests since the server started.
    pub count: f64,
}

/// Latency over the API routes since the server started.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Requests measured.
    pub count: f64,
    /// Mean seconds.
    pub mean_s: Option<f64>,
    /// Median.
    pub p50_s: Option<f64>,
    /// 95th percentile.
    pub p95_s: Option<f64>,
    /// 99th percentile.
    pub p99_s: Option<f64>,
    /// `histogram` (interpolated in buckets) or `summary` (the exporter's quantiles).
    pub source: String,
}

/// One bucket of the batch size histogram.
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    /// Upper bound (`+Inf` for the last).
    pub le: String,
    /// Observations in this bucket (not cumulative).
    pub count: f64,
}

/// Batches formed by the server.
#[derive(Debug, Clone, Serialize)]
pub struct Batches {
    /// Batches run.
    pub count: f64,
    /// Mean windows per batch.
    pub mean: Option<f64>,
    /// Distribution (empty when the exporter gives a summary).
    pub buckets: Vec<Bucket>,
}

/// Inference time of one model version.
#[derive(Debug, Clone, Serialize)]
pub struct Inference {
    /// Model version label.
    pub model_version: String,
    /// Batches timed.
    pub count: f64,
    /// Mean seconds per batch.
    pub mean_s: Option<f64>,
}

/// One point of the recent history.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryPoint {
    /// Scrape time (ms since the epoch).
    pub t_ms: u64,
    /// API requests per second since the previous scrape.
    pub requests_per_s: f64,
    /// p95 latency of the API requests since the previous scrape (none without requests).
    pub p95_s: Option<f64>,
    /// Queue depth at the scrape.
    pub queue_depth: Option<f64>,
    /// Mean batch size since the previous scrape.
    pub mean_batch: Option<f64>,
}

/// One model the server has loaded, as the serving panel's table shows it (one column per
/// field, labelled in `dashboard.js`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServedModel {
    /// `name@version`.
    pub version: String,
    /// `stable`, `canary` or `previous` (loaded for rollback, no traffic).
    pub role: String,
    /// Share of identify traffic it gets, in percent.
    pub share_pct: f64,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// Requests it answered.
    pub requests: u64,
    /// Windows it ran.
    pub windows: u64,
    /// Requests whose client left before their windows ran.
    pub client_gone: u64,
    /// Windows waiting in its queue.
    pub queued: usize,
    /// Replica threads.
    pub replicas: usize,
    /// Batch size limit.
    pub max_batch: usize,
    /// Architecture.
    pub architecture: String,
    /// Whether the weights were trained on the task (random-weight bundles say false).
    pub trained: bool,
    /// Its members (`name@version`), in order; the model itself when it is one bundle.
    pub members: Vec<String>,
    /// How an ensemble blends its members (`probability` or `rank`); none for one bundle.
    pub blend: Option<String>,
    /// Its licences as `id (what it covers)`.
    pub licences: Vec<String>,
    /// What those licences allow, in words.
    pub licence_status: String,
}

impl From<ModelInfo> for ServedModel {
    fn from(m: ModelInfo) -> Self {
        // Every field named, no `..`: a field added to or renamed in the API's wire type
        // stops this from compiling, so the panel cannot silently drop or mislabel it.
        let ModelInfo {
            model_version,
            role,
            share,
            loaded_at,
            requests_served,
            windows_inferred,
            client_gone,
            queued_windows,
            replicas,
            max_batch,
            architecture,
            trained,
            members,
            blend,
            licences,
            licence_status,
            // Only sent with an API key (the dashboard has none); it names the host's files.
            path: _,
        } = m;
        Self {
            version: model_version,
            role,
            share_pct: share * 100.0,
            loaded_at,
            requests: requests_served,
            windows: windows_inferred,
            client_gone,
            queued: queued_windows,
            replicas,
            max_batch,
            architecture,
            trained,
            members,
            blend: blend.map(|b| {
                match b {
                    Blend::Probability => "probability",
                    Blend::Rank => "rank",
                }
                .to_string()
            }),
            licences: licences
                .into_iter()
                .map(|Licence { id, covers }| format!("{id} ({covers})"))
                .collect(),
            licence_status: match licence_status {
                LicenceStatus::Commercial => "commercial use allowed",
                LicenceStatus::NonCommercial => "non-commercial only",
                LicenceStatus::Unknown => "unknown",
            }
            .to_string(),
        }
    }
}

/// The serving panel's JSON (`/api/serving`).
#[derive(Debug, Clone, Serialize)]
pub struct ServingSnapshot {
    /// Whether `--server` was given.
    pub configured: bool,
    /// The server's base URL.
    pub server: Option<String>,
    /// Whether the last scrape of `/metrics` worked.
    pub up: bool,
    /// Why it did not (connection refused, HTTP status, unparsable text).
    pub error: Option<String>,
    /// Scrape time (ms since the epoch).
    pub scraped_at_ms: u64,
    /// The models of `/v1/models`, stable first (none when it could not be read).
    pub models: Option<Vec<ServedModel>>,
    /// Why `/v1/models` could not be read, if so (unreachable, or not the API's model list).
    pub models_error: Option<String>,
    /// All requests since the server started (monitoring included).
    pub requests_total: f64,
    /// Per route and status.
    pub requests: Vec<RouteCount>,
    /// API requests (monitoring routes excluded: `/readyz` answers 503 while warming up) that
    /// answered 5xx.
    pub errors_5xx: f64,
    /// API latency.
    pub latency: Option<Latency>,
    /// Windows waiting for a batch.
    pub queue_depth: Option<f64>,
    /// Batch sizes.
    pub batches: Option<Batches>,
    /// Inference time per model version.
    pub inference: Vec<Inference>,
    /// Top-1 predictions per species, most frequent first (at most 40).
    pub predictions: Vec<(String, f64)>,
    /// Rejected requests per reason.
    pub rejected: BTreeMap<String, f64>,
    /// Recent history, oldest first.
    pub history: Vec<HistoryPoint>,
}

impl ServingSnapshot {
    fn empty(server: Option<String>) -> Self {
        Self {
            configured: server.is_some(),
            server,
            up: false,
            error: None,
            scraped_at_ms: now_ms(),
            models: None,
            models_error: None,
            requests_total: 0.0,
            requests: Vec::new(),
            errors_5xx: 0.0,
            latency: None,
            queue_depth: None,
            batches: None,
            inference: Vec::new(),
            predictions: Vec::new(),
            rejected: BTreeMap::new(),
            history: Vec::new(),
        }
    }
}

/// `/v1/models` read as the API's [`ModelsList`] (the server's own type, from `silencio-api`)
/// into the panel's rows. An answer of another shape (an older or foreign server) shows no
/// rows: what is wrong with it goes to `models_error`, which the panel shows.
fn models_json(body: &str, snap: &mut ServingSnapshot) {
    match serde_json::from_str::<ModelsList>(body) {
        Ok(list) => snap.models = Some(list.models.into_iter().map(ServedModel::from).collect()),
        Err(e) if serde_json::from_str::<serde::de::IgnoredAny>(body).is_ok() => {
            snap.models_error = Some(format!("/v1/models is not the API's model list: {e}"));
        }
        Err(e) => snap.models_error = Some(format!("/v1/models: {e}")),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn api_route(l: &BTreeMap<String, String>) -> bool {
    !l.get("route")
        .is_some_and(|r| MONITORING_ROUTES.contains(&r.as_str()))
}

/// Figures of one scrape (no history).
pub fn figures(e: &Exposition, snap: &mut ServingSnapshot) {
    snap.requests = e
        .series(names::REQUESTS)
        .map(|s| RouteCount {
            route: s.labels.get("route").cloned().unwrap_or_default(),
            status: s.labels.get("status").cloned().unwrap_or_default(),
            count: s.value,
        })
        .collect();
    snap.requests
        .sort_by(|a, b| (&a.route, &a.status).cmp(&(&b.route, &b.status)));
    snap.requests_total = snap.requests.iter().map(|r| r.count).sum();
    snap.errors_5xx = snap
        .requests
        .iter()
        .filter(|r| r.status.starts_with('5') && !MONITORING_ROUTES.contains(&r.route.as_str()))
        .map(|r| r.count)
        .sum();
    snap.latency = if let Some(h) = e.histogram(names::DURATION, api_route) {
        Some(Latency {
            count: h.count,
            mean_s: h.mean(),
            p50_s: h.quantile(0.5),
            p95_s: h.quantile(0.95),
            p99_s: h.quantile(0.99),
            source: "histogram".into(),
        })
    } else if e.has_family(names::DURATION) {
        let count: f64 = e
            .series(&format!("{}_count", names::DURATION))
            .filter(|s| api_route(&s.labels))
            .map(|s| s.value)
            .sum();
        let sum: f64 = e
            .series(&format!("{}_sum", names::DURATION))
            .filter(|s| api_route(&s.labels))
            .map(|s| s.value)
            .sum();
        Some(Latency {
            count,
            mean_s: (count > 0.0).then(|| sum / count),
            p50_s: e.summary_quantile(names::DURATION, 0.5, api_route),
            p95_s: e.summary_quantile(names::DURATION, 0.95, api_route),
            p99_s: e.summary_quantile(names::DURATION, 0.99, api_route),
            source: "summary".into(),
        })
    } else {
        None
    };
    snap.queue_depth = e.sum(names::QUEUE_DEPTH);
    snap.batches = match e.histogram(names::BATCH_SIZE, |_| true) {
        Some(h) => Some(Batches {
            count: h.count,
            mean: h.mean(),
            buckets: h
                .per_bucket()
                .into_iter()
                .map(|(le, count)| Bucket {
                    le: if le.is_infinite() {
                        "+Inf".into()
                    } else {
                        format!("{le}")
                    },
                    count,
                })
                .collect(),
        }),
        None => e.sum(&format!("{}_count", names::BATCH_SIZE)).map(|count| {
            let sum = e.sum(&format!("{}_sum", names::BATCH_SIZE)).unwrap_or(0.0);
            Batches {
                count,
                mean: (count > 0.0).then(|| sum / count),
                buckets: Vec::new(),
            }
        }),
    };
    let counts = e.sum_by(&format!("{}_count", names::INFERENCE), "model_version");
    let sums = e.sum_by(&format!("{}_sum", names::INFERENCE), "model_version");
    snap.inference = counts
        .into_iter()
        .map(|(v, count)| Inference {
            mean_s: (count > 0.0).then(|| sums.get(&v).copied().unwrap_or(0.0) / count),
            model_version: v,
            count,
        })
        .collect();
    let mut preds: Vec<(String, f64)> = e
        .sum_by(names::PREDICTIONS, "species")
        .into_iter()
        .collect();
    preds.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    preds.truncate(40);
    snap.predictions = preds;
    snap.rejected = e.sum_by(names::REJECTED, "reason");
}

/// The recent-history point between two scrapes `dt` apart.
pub fn history_point(prev: &Exposition, cur: &Exposition, dt: Duration) -> HistoryPoint {
    let api_requests = |e: &Exposition| -> f64 {
        e.series(names::REQUESTS)
            .filter(|s| api_route(&s.labels))
            .map(|s| s.value)
            .sum()
    };
    let (a, b) = (api_requests(prev), api_requests(cur));
    // A counter that went down means the server restarted: count from zero.
    let delta = if b >= a { b - a } else { b };
    let recent = |name: &str, keep: &dyn Fn(&BTreeMap<String, String>) -> bool| {
        let c = cur.histogram(name, keep)?;
        Some(match prev.histogram(name, keep) {
            Some(p) => c.since(&p),
            None => c,
        })
    };
    let lat: Option<Histogram> = recent(names::DURATION, &api_route);
    let batch: Option<Histogram> = recent(names::BATCH_SIZE, &|_| true);
    HistoryPoint {
        t_ms: now_ms(),
        requests_per_s: delta / dt.as_secs_f64().max(1e-3),
        p95_s: lat.and_then(|h| h.quantile(0.95)),
        queue_depth: cur.sum(names::QUEUE_DEPTH),
        mean_batch: batch.and_then(|h| h.mean()),
    }
}

struct State {
    last: Option<(Instant, ServingSnapshot)>,
    prev: Option<(Instant, Exposition)>,
    history: VecDeque<HistoryPoint>,
}

/// Scrapes one serving process on demand.
pub struct Serving {
    base: Option<String>,
    agent: ureq::Agent,
    state: tokio::sync::Mutex<State>,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving").field("base", &self.base).finish()
    }
}

/// Largest body read from the server (a `/metrics` with many species labels is ~100 kB).
const MAX_BODY: u64 = 16 << 20;

fn fetch(agent: &ureq::Agent, url: &str) -> std::result::Result<String, String> {
    let mut res = agent.get(url).call().map_err(|e| match e {
        ureq::Error::StatusCode(c) => format!("{url} answered HTTP {c}"),
        other => format!("{url}: {other}"),
    })?;
    res.body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(|e| format!("{url}: {e}"))
}

impl Serving {
    /// A scraper of the server at `base` (`http://host:port`), or one that reports "not
    /// configured" for `None`.
    pub fn new(base: Option<String>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            // A busy server must not stall the panel: the page polls again soon.
            .timeout_global(Some(Duration::from_secs(3)))
            .build()
            .into();
        Self {
            base: base.map(|b| b.trim_end_matches('/').to_string()),
            agent,
            state: tokio::sync::Mutex::new(State {
                last: None,
                prev: None,
                history: VecDeque::new(),
            }),
        }
    }

    /// The current figures (scraping when the last scrape is older than
    /// [`MIN_SCRAPE_INTERVAL`]).
    pub async fn snapshot(&self) -> ServingSnapshot {
        let Some(base) = self.base.clone() else {
            return ServingSnapshot::empty(None);
        };
        let mut st = self.state.lock().await;
        if let Some((at, snap)) = &st.last
            && at.elapsed() < MIN_SCRAPE_INTERVAL
        {
            return snap.clone();
        }
        let agent = self.agent.clone();
        let b = base.clone();
        let fetched = tokio::task::spawn_blocking(move || {
            let metrics = fetch(&agent, &format!("{b}/metrics"));
            // Models only when the server answers at all (one timeout, not two).
            let models = metrics
                .as_ref()
                .ok()
                .map(|_| fetch(&agent, &format!("{b}/v1/models")));
            (metrics, models)
        })
        .await;
        let now = Instant::now();
        let mut snap = ServingSnapshot::empty(Some(base));
        match fetched {
            Err(e) => snap.error = Some(format!("scrape task failed: {e}")),
            Ok((Err(e), _)) => snap.error = Some(e),
            Ok((Ok(text), models)) => match prom::parse(&text) {
                Err(e) => snap.error = Some(format!("/metrics: {e}")),
                Ok(exp) => {
                    snap.up = true;
                    figures(&exp, &mut snap);
                    match models {
                        Some(Ok(body)) => models_json(&body, &mut snap),
                        Some(Err(e)) => snap.models_error = Some(e),
                        None => {}
                    }
                    if let Some((t, prev)) = &st.prev {
                        let p = history_point(prev, &exp, now - *t);
                        st.history.push_back(p);
                        while st.history.len() > HISTORY_POINTS {
                            st.history.pop_front();
                        }
                    }
                    st.prev = Some((now, exp));
                }
            },
        }
        if !snap.up {
            // The next successful scrape starts a new baseline (the server may have restarted).
            st.prev = None;
        }
        snap.history = st.history.iter().cloned().collect();
        st.last = Some((now, snap.clone()));
        snap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_that_is_not_the_apis_model_list_shows_no_rows_and_says_why() {
        let mut snap = ServingSnapshot::empty(Some("http://x".into()));
        models_json(r#"{"models": [{"model_version": "v1"}]}"#, &mut snap);
        assert!(snap.models.is_none());
        let e = snap.models_error.unwrap();
        assert!(e.contains("not the API's model list"), "{e}");

        let mut snap = ServingSnapshot::empty(Some("http://x".into()));
        models_json("<html>proxy error</html>", &mut snap);
        assert!(snap.models.is_none());
        let e = snap.models_error.unwrap();
        assert!(e.starts_with("/v1/models: "), "{e}");

        let mut snap = ServingSnapshot::empty(Some("http://x".into()));
        models_json(r#"{"models": []}"#, &mut snap);
        assert_eq!(snap.models, Some(Vec::new()));
        assert!(snap.models_error.is_none());
    }
}
