//! `silencio loadgen`: flags in, silencio_loadgen::run out.

use std::path::PathBuf;

use silencio_loadgen::{LoadConfig, LoopKind, Mode, Progress, parse_duration};

use crate::Failure;

/// Load-test a running `silencio serve`.
#[derive(clap::Args)]
pub struct LoadgenArgs {
    /// Server base URL.
    #[arg(
        long,
        env = "SILENCIO_LOADGEN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Traffic shape: tour (5 s clips, steady), power (1-minute uploads), mobile (think times,
    /// aborted uploads), or all; a comma list works too.
    #[arg(long, default_value = "all")]
    mode: String,
    /// Concurrency levels: virtual users (closed loop) or the cap on outstanding requests
    /// (open loop).
    #[arg(long, default_value = "1,8,16,32")]
    concurrency: String,
    /// Measured time per level (e.g. 20s, 2m).
    #[arg(long, default_value = "20s")]
    duration: String,
    /// Time per level before measuring, excluded from the statistics.
    #[arg(long, default_value = "3s")]
    warmup: String,
    /// closed: each user waits for its answer; open: Poisson arrivals at --rate.
    #[arg(long = "loop", default_value = "closed", value_parser = ["closed", "open"])]
    loop_kind: String,
    /// Open loop: arrivals per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Mobile: mean think time between a user's requests, in ms (exponential).
    #[arg(long, default_value_t = 500.0)]
    think_ms: f64,
    /// Mobile: share of uploads streamed slowly and dropped midway.
    #[arg(long, default_value_t = 0.1)]
    abort_share: f64,
    /// Directory of your own recordings (wav, ogg, flac, mp3, m4a) instead of the embedded
    /// clips; each is cut or looped to 5 s and 60 s.
    #[arg(long)]
    clips: Option<PathBuf>,
    /// Report directory (report.json, report.csv; written atomically).
    #[arg(long, default_value = "loadgen-report")]
    out: PathBuf,
    /// Seed of every random choice (clips, think times, aborts, arrivals).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Per-request timeout.
    #[arg(long, default_value = "30s")]
    timeout: String,
    /// How long to wait for GET /readyz to answer 200 first (0 skips the check).
    #[arg(long, default_value = "60s")]
    wait_ready: String,
    /// The server's API key: tour and mobile users then tag requests with a session, as the
    /// guides' app does (sessions need the key); without it they send none.
    #[arg(long, env = "SILENCIO_API_KEY")]
    api_key: Option<String>,
}

fn duration(flag: &str, v: &str) -> anyhow::Result<std::time::Duration> {
    parse_duration(v).map_err(|e| Failure::error("invalid_config", format!("--{flag}: {e}")))
}

/// The library's typed error, keeping its kind for the CLI's `error[kind]` line.
fn typed(e: silencio_loadgen::Error) -> anyhow::Error {
    Failure::error(e.kind(), e.to_string())
}

pub fn loadgen(a: LoadgenArgs) -> anyhow::Result<()> {
    if !a.think_ms.is_finite() || a.think_ms < 0.0 {
        return Err(Failure::error("invalid_config", "--think-ms must be >= 0"));
    }
    let loop_kind = match (a.loop_kind.as_str(), a.rate) {
        ("open", Some(rate)) => LoopKind::Open { rate },
        ("open", None) => {
            return Err(Failure::error(
                "invalid_config",
                "--loop open needs --rate R",
            ));
        }
        (_, Some(_)) => {
            return Err(Failure::error(
                "invalid_config",
                "--rate is for --loop open",
            ));
        }
        _ => LoopKind::Closed,
    };
    let cfg = LoadConfig {
        url: a.url,
        modes: Mode::parse_list(&a.mode).map_err(typed)?,
        concurrency: LoadConfig::parse_concurrency(&a.concurrency).map_err(typed)?,
        duration: duration("duration", &a.duration)?,
        warmup: duration("warmup", &a.warmup)?,
        loop_kind,
        think: std::time::Duration::from_secs_f64(a.think_ms / 1e3),
        abort_share: a.abort_share,
        clips: a.clips,
        seed: a.seed,
        timeout: duration("timeout", &a.timeout)?,
        wait_ready: duration("wait-ready", &a.wait_ready)?,
        api_key: a.api_key,
    };
    cfg.validate().map_err(typed)?;
    let report = silencio_loadgen::run_blocking(cfg, |p| match p {
        Progress::Ready { url } => eprintln!("{url} is ready"),
        Progress::LevelStart { key, seconds } => eprintln!("{key}: running {seconds:.0} s"),
        Progress::LevelDone(l) => eprintln!(
            "{}: {} requests, {} ok, {} rejected, {:.2} ok/s",
            l.key, l.requests, l.ok, l.rejected_429, l.throughput_rps
        ),
    })
    .map_err(typed)?;
    print!("{}", report.table());
    let (json, csv) = report.write(&a.out).map_err(typed)?;
    eprintln!("report: {} {}", json.display(), csv.display());
    Ok(())
}
