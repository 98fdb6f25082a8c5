//! Drives the levels: virtual users (closed loop) or Poisson arrivals (open loop), metrics
//! scrapes around the measured window, and the per-level statistics.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client::{Outcome, ServerTiming, upload};
use crate::clips::{Clip, ClipSet};
use crate::error::{Error, Result};
use crate::prom::{self, Exposition, Histogram};
use crate::report::{ClipInfo, ConfigEcho, LevelReport, Report, TimingMeans};
use crate::stats::{LatencySummary, Rng};
use crate::{LoadConfig, LoopKind, Mode};

/// Name of the server's batch-size histogram.
pub const BATCH_METRIC: &str = "silencio_batch_size";
/// Name of the server's rejection counter.
pub const REJECTED_METRIC: &str = "silencio_rejected_total";

/// Distinct transport error messages kept per level.
const MAX_ERROR_SAMPLES: usize = 5;

/// Where a run is, for a progress display.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The server answered `/readyz`.
    Ready {
        /// Server base URL.
        url: &'a str,
    },
    /// A level begins.
    LevelStart {
        /// Its key (`tour-closed-c8`).
        key: &'a str,
        /// Warm-up plus measured seconds.
        seconds: f64,
    },
    /// A level ended.
    LevelDone(&'a LevelReport),
}

struct Shared {
    client: reqwest::Client,
    base: String,
    clips: ClipSet,
    cfg: LoadConfig,
}

/// One request: when it started (since the level began) and how it ended.
struct Record {
    start: Duration,
    audio_s: f64,
    /// `None`: an open-loop arrival not sent because the outstanding cap was reached.
    outcome: Option<Outcome>,
}

/// Run every (mode, concurrency) level of `cfg` against the server and report.
pub async fn run(cfg: LoadConfig) -> Result<Report> {
    run_with_progress(cfg, |_| {}).await
}

/// [`run`], calling `progress` as levels start and end.
pub async fn run_with_progress(
    cfg: LoadConfig,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Report> {
    cfg.validate()?;
    let clips = match &cfg.clips {
        Some(dir) => ClipSet::from_dir(dir)?,
        None => ClipSet::embedded()?,
    };
    let max_conc = cfg.concurrency.iter().copied().max().unwrap_or(1);
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(k) = &cfg.api_key {
        let v = reqwest::header::HeaderValue::from_str(k.trim())
            .map_err(|e| Error::Config(format!("the API key is not a header value: {e}")))?;
        headers.insert("x-api-key", v);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        // A proxy from the environment would measure the proxy, not the server.
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(max_conc)
        .build()?;
    let base = cfg.url.trim_end_matches('/').to_string();
    let started_unix_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    wait_ready(&client, &base, cfg.wait_ready).await?;
    progress(Progress::Ready { url: &base });

    let clip_info = |set: &str, c: &Clip| ClipInfo {
        set: set.into(),
        name: c.name.clone(),
        audio_s: c.audio_s,
        bytes: c.body.len(),
        content_type: c.content_type.into(),
    };
    let mut clip_list: Vec<ClipInfo> = clips.short.iter().map(|c| clip_info("short", c)).collect();
    clip_list.extend(clips.long.iter().map(|c| clip_info("long", c)));
    let (loop_kind, rate_rps) = loop_name(cfg.loop_kind);
    let echo = ConfigEcho {
        loop_kind: loop_kind.into(),
        rate_rps,
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
        think_ms: cfg.think.as_secs_f64() * 1e3,
        abort_share: cfg.abort_share,
        timeout_s: cfg.timeout.as_secs_f64(),
        seed: cfg.seed,
        clip_source: cfg
            .clips
            .as_ref()
            .map_or("embedded".into(), |d| d.display().to_string()),
    };
    let sh = Arc::new(Shared {
        client,
        base: base.clone(),
        clips,
        cfg: cfg.clone(),
    });
    let mut levels = Vec::new();
    let mut index = 0u64;
    for &mode in &cfg.modes {
        for &conc in &cfg.concurrency {
            let key = format!("{}-{}-c{conc}", mode.name(), loop_kind);
            progress(Progress::LevelStart {
                key: &key,
                seconds: (cfg.warmup + cfg.duration).as_secs_f64(),
            });
            let level = run_level(&sh, mode, conc, index, key).await;
            progress(Progress::LevelDone(&level));
            levels.push(level);
            index += 1;
        }
    }
    Ok(Report {
        tool: "silencio-loadgen".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        url: base,
        started_unix_s,
        config: echo,
        clips: clip_list,
        levels,
    })
}

fn loop_name(k: LoopKind) -> (&'static str, Option<f64>) {
    match k {
        LoopKind::Closed => ("closed", None),
        LoopKind::Open { rate } => ("open", Some(rate)),
    }
}

async fn wait_ready(client: &reqwest::Client, base: &str, wait: Duration) -> Result<()> {
    if wait.is_zero() {
        return Ok(());
    }
    let url = format!("{base}/readyz");
    let start = Instant::now();
    loop {
        let last = match client
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("GET /readyz answered {}", r.status()),
            Err(e) => format!("GET /readyz: {e}"),
        };
        if start.elapsed() >= wait {
            return Err(Error::NotReady {
                url: base.into(),
                waited_s: start.elapsed().as_secs_f64(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A parsed `/metrics`, or why there is none.
type Scrape = std::result::Result<Exposition, String>;

async fn scrape(client: &reqwest::Client, base: &str) -> Scrape {
    let r = client
        .get(format!("{base}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("GET /metrics answered {}", r.status()));
    }
    let text = r.text().await.map_err(|e| format!("GET /metrics: {e}"))?;
    prom::parse(&text).map_err(|e| format!("/metrics: {e}"))
}

/// What a virtual user sends next: a clip, and for an aborted upload the byte to stop at.
fn pick<'a>(sh: &'a Shared, mode: Mode, rng: &mut Rng) -> (&'a Clip, Option<usize>) {
    let set = match mode {
        Mode::Power => &sh.clips.long,
        Mode::Tour | Mode::Mobile => &sh.clips.short,
    };
    let clip = &set[rng.index(set.len())];
    let abort = (mode == Mode::Mobile && rng.uniform() < sh.cfg.abort_share)
        .then(|| (clip.body.len() as f64 * (0.2 + 0.6 * rng.uniform())) as usize);
    (clip, abort)
}

/// Tour guides and phones report to a session (the app's species list) when the run has the
/// key; power uploads do not.
fn identify_url(sh: &Shared, mode: Mode, user: usize) -> String {
    match mode {
        _ if sh.cfg.api_key.is_none() => format!("{}/v1/identify", sh.base),
        Mode::Power => format!("{}/v1/identify", sh.base),
        _ => format!(
            "{}/v1/identify?session_id=loadgen-{}-{user}",
            sh.base,
            mode.name()
        ),
    }
}

fn seed(sh: &Shared, level: u64, user: u64) -> u64 {
    sh.cfg.seed ^ level.wrapping_mul(0x0100_0000_01B3) ^ user.wrapping_mul(0x9E37_79B9)
}

/// Sleep `d`, but not past `end`.
async fn sleep_capped(d: Duration, end: Instant) {
    let until = (Instant::now() + d).min(end);
    tokio::time::sleep_until(until.into()).await;
}

async fn run_level(
    sh: &Arc<Shared>,
    mode: Mode,
    conc: usize,
    index: u64,
    key: String,
) -> LevelReport {
    let t0 = Instant::now();
    let measure_from = t0 + sh.cfg.warmup;
    let end = measure_from + sh.cfg.duration;
    let before = {
        let sh = sh.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            let r = scrape(&sh.client, &sh.base).await;
            (r, Instant::now())
        })
    };
    let records = match sh.cfg.loop_kind {
        LoopKind::Closed => closed_loop(sh, mode, conc, index, t0, end).await,
        LoopKind::Open { rate } => open_loop(sh, mode, conc, rate, index, t0, end).await,
    };
    let (before, scraped_at) = before
        .await
        .unwrap_or_else(|e| (Err(format!("scrape task: {e}")), measure_from));
    let after = scrape(&sh.client, &sh.base).await;
    // Measure from the moment the first scrape came back, so that every measured request's
    // batch lies between the two scrapes; if that scrape was slow (an overloaded server), keep
    // the planned start and accept that a few warm-up batches are counted.
    let slack = sh.cfg.duration / 10;
    let m0 = if before.is_ok() && scraped_at <= measure_from + slack {
        scraped_at
    } else {
        measure_from
    };
    let window = Window {
        from: m0 - t0,
        seconds: (end - m0).as_secs_f64(),
    };
    summarize(sh, mode, conc, key, &records, window, (before, after))
}

/// The measured part of a level: requests started `from` (since the level began) on.
struct Window {
    from: Duration,
    seconds: f64,
}

async fn closed_loop(
    sh: &Arc<Shared>,
    mode: Mode,
    conc: usize,
    level: u64,
    t0: Instant,
    end: Instant,
) -> Vec<Record> {
    let users: Vec<_> = (0..conc)
        .map(|u| {
            let sh = sh.clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(seed(&sh, level, u as u64));
                let url = identify_url(&sh, mode, u);
                let think = sh.cfg.think.as_secs_f64();
                let mut out = Vec::new();
                if mode == Mode::Mobile {
                    // Users do not all start at the same instant.
                    sleep_capped(Duration::from_secs_f64(rng.exponential(think)), end).await;
                }
                while Instant::now() < end {
                    let (clip, abort) = pick(&sh, mode, &mut rng);
                    let start = t0.elapsed();
                    let o = upload(&sh.client, &url, clip, sh.cfg.timeout, abort).await;
                    out.push(Record {
                        start,
                        audio_s: clip.audio_s,
                        outcome: Some(o),
                    });
                    if mode == Mode::Mobile {
                        sleep_capped(Duration::from_secs_f64(rng.exponential(think)), end).await;
                    }
                }
                out
            })
        })
        .collect();
    let mut records = Vec::new();
    for u in users {
        // A user task only ends by finishing its loop; a panic would be a bug, not a result.
        if let Ok(r) = u.await {
            records.extend(r);
        }
    }
    records
}

async fn open_loop(
    sh: &Arc<Shared>,
    mode: Mode,
    cap: usize,
    rate: f64,
    level: u64,
    t0: Instant,
    end: Instant,
) -> Vec<Record> {
    let sem = Arc::new(tokio::sync::Semaphore::new(cap));
    let mut rng = Rng::new(seed(sh, level, u64::MAX));
    let mut next = t0;
    let mut tasks = Vec::new();
    let mut records = Vec::new();
    let mut i = 0usize;
    loop {
        next += Duration::from_secs_f64(rng.exponential(1.0 / rate));
        if next >= end {
            break;
        }
        tokio::time::sleep_until(next.into()).await;
        let (clip, abort) = pick(sh, mode, &mut rng);
        let start = next - t0;
        match sem.clone().try_acquire_owned() {
            Ok(permit) => {
                let sh = sh.clone();
                let url = identify_url(&sh, mode, i % cap);
                let (clip, audio_s) = (clip.clone(), clip.audio_s);
                tasks.push(tokio::spawn(async move {
                    let o = upload(&sh.client, &url, &clip, sh.cfg.timeout, abort).await;
                    drop(permit);
                    Record {
                        start,
                        audio_s,
                        outcome: Some(o),
                    }
                }));
            }
            Err(_) => records.push(Record {
                start,
                audio_s: clip.audio_s,
                outcome: None,
            }),
        }
        i += 1;
    }
    for t in tasks {
        if let Ok(r) = t.await {
            records.push(r);
        }
    }
    records
}

fn summarize(
    sh: &Shared,
    mode: Mode,
    conc: usize,
    key: String,
    records: &[Record],
    window: Window,
    (before, after): (Scrape, Scrape),
) -> LevelReport {
    let cfg = &sh.cfg;
    let (loop_kind, rate_rps) = loop_name(cfg.loop_kind);
    let duration_s = window.seconds;
    let mut l = LevelReport {
        key,
        mode: mode.name().into(),
        loop_kind: loop_kind.into(),
        concurrency: conc,
        rate_rps,
        duration_s,
        requests: 0,
        ok: 0,
        rejected_429: 0,
        client_4xx: 0,
        server_5xx: 0,
        other_status: 0,
        transport_errors: 0,
        aborted: 0,
        client_dropped: 0,
        throughput_rps: 0.0,
        audio_s_per_s: 0.0,
        latency_ms: None,
        rejected_latency_ms: None,
        server_timing_ms: None,
        windows: 0,
        model_versions: BTreeMap::new(),
        error_types: BTreeMap::new(),
        batch_size: None,
        server_rejected: BTreeMap::new(),
        metrics_note: None,
        error_samples: Vec::new(),
    };
    let (mut ok_ms, mut rej_ms, mut timings): (Vec<f64>, Vec<f64>, Vec<ServerTiming>) =
        Default::default();
    let mut audio_ok = 0.0;
    for r in records.iter().filter(|r| r.start >= window.from) {
        let Some(o) = &r.outcome else {
            l.client_dropped += 1;
            continue;
        };
        l.requests += 1;
        match o {
            Outcome::Ok {
                latency,
                model_version,
                windows,
                timing,
            } => {
                l.ok += 1;
                ok_ms.push(latency.as_secs_f64() * 1e3);
                audio_ok += r.audio_s;
                l.windows += *windows as u64;
                *l.model_versions.entry(model_version.clone()).or_default() += 1;
                timings.extend(*timing);
            }
            Outcome::Status {
                code,
                latency,
                error_type,
            } => {
                match code {
                    429 => {
                        l.rejected_429 += 1;
                        rej_ms.push(latency.as_secs_f64() * 1e3);
                    }
                    400..=499 => l.client_4xx += 1,
                    500..=599 => l.server_5xx += 1,
                    _ => l.other_status += 1,
                }
                let t = error_type.clone().unwrap_or_else(|| format!("http_{code}"));
                *l.error_types.entry(t).or_default() += 1;
            }
            Outcome::Transport { kind, message } => {
                l.transport_errors += 1;
                if l.error_samples.len() < MAX_ERROR_SAMPLES && !l.error_samples.contains(message) {
                    l.error_samples.push(message.clone());
                }
                *l.error_types
                    .entry(format!("transport:{kind}"))
                    .or_default() += 1;
            }
            Outcome::Aborted { .. } => l.aborted += 1,
        }
    }
    l.throughput_rps = l.ok as f64 / duration_s;
    l.audio_s_per_s = audio_ok / duration_s;
    l.latency_ms = LatencySummary::of(&ok_ms);
    l.rejected_latency_ms = LatencySummary::of(&rej_ms);
    l.server_timing_ms = TimingMeans::of(&timings);
    match (before, after) {
        (Ok(b), Ok(a)) => {
            match (
                b.histogram(BATCH_METRIC, |_| true),
                a.histogram(BATCH_METRIC, |_| true),
            ) {
                (bh, Some(ah)) => {
                    let empty = Histogram {
                        buckets: Vec::new(),
                        sum: 0.0,
                        count: 0.0,
                    };
                    l.batch_size = Some(prom::summary(&ah.since(bh.as_ref().unwrap_or(&empty))));
                }
                (_, None) => l.metrics_note = Some(format!("/metrics has no {BATCH_METRIC}")),
            }
            let rb = b.sum_by(REJECTED_METRIC, "reason");
            for (reason, v) in a.sum_by(REJECTED_METRIC, "reason") {
                let d = v - rb.get(&reason).copied().unwrap_or(0.0);
                if d > 0.0 {
                    l.server_rejected.insert(reason, d);
                }
            }
        }
        (Err(e), _) | (_, Err(e)) => l.metrics_note = Some(e),
    }
    l
}

/// [`run_with_progress`] on a multi-threaded tokio runtime of its own, for callers without
/// one (the CLI).
pub fn run_blocking(cfg: LoadConfig, progress: impl FnMut(Progress<'_>)) -> Result<Report> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the tokio runtime", e))?;
    rt.block_on(run_with_progress(cfg, progress))
}
