//! `silencio simulate` and `silencio watch`: flags in, `silencio_watch` does the work.

use std::net::SocketAddr;
use std::path::PathBuf;

use silencio_data::mix::CallPool;
use silencio_watch::{
    Overlay, Scorer, ServerClient, SimConfig, WatchConfig, WatchEvent, Watcher, parse_duration,
    parse_range,
};

use crate::Failure;
use crate::models::ModelArgs;

/// `silencio simulate`.
#[derive(clap::Args)]
pub struct SimulateArgs {
    /// Directory of source soundscapes, cut into consecutive minutes (file-name order,
    /// wrapping around).
    #[arg(long)]
    soundscapes: PathBuf,
    /// Output directory (the consumer's input); files appear there only when complete.
    #[arg(long)]
    out: PathBuf,
    /// Time between files: `10s`, `500ms`, `2m`, or `0` for as fast as possible.
    #[arg(long, default_value = "10s")]
    every: String,
    /// Stop after this many files (default: run until Ctrl-C).
    #[arg(long)]
    count: Option<usize>,
    /// BirdCLEF-layout root (taxonomy.csv, train.csv, train_audio/) lending real calls to
    /// overlay; their labels are written beside each file as `<stem>.labels.csv`.
    #[arg(long)]
    overlay_calls: Option<PathBuf>,
    /// SNR range of the overlaid calls in dB, `low,high`.
    #[arg(long, default_value = "-10,10", allow_hyphen_values = true)]
    snr: String,
    /// Recordings that lend calls: `valid` (held out of training), `train` or `all`.
    #[arg(long, default_value = "valid", value_parser = ["valid", "train", "all"])]
    pool: String,
    /// Most calls in one 5 s window.
    #[arg(long, default_value_t = 3)]
    max_overlap: usize,
    /// Share of windows left as background only.
    #[arg(long, default_value_t = 0.25)]
    background_only: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Recorder name in the file names (`{recorder}_{date}_{time}.ogg`).
    #[arg(long, default_value = "SIM")]
    recorder: String,
}

/// `silencio watch`.
#[derive(clap::Args)]
pub struct WatchArgs {
    /// The watched folder.
    #[arg(long = "in")]
    input: PathBuf,
    /// Output folder: one `<file name>.csv` per input (`x.ogg` → `x.ogg.csv`, BirdCLEF
    /// submission format), `ledger.jsonl`.
    #[arg(long)]
    out: PathBuf,
    /// The local model (any spec; see `silencio identify --help`).
    #[command(flatten)]
    model: ModelArgs,
    /// Score through a running `silencio serve` at this URL instead of a local model.
    #[arg(long)]
    server: Option<String>,
    /// With --server: `taxonomy.csv` giving the submission's column order (default: the
    /// server's class order, from its `GET /v1/species`).
    #[arg(long, requires = "server")]
    taxonomy: Option<PathBuf>,
    /// With --server: seconds before a request is abandoned (and retried).
    #[arg(long, default_value_t = 120.0, requires = "server")]
    server_timeout_s: f64,
    /// Where unreadable inputs go, with `<name>.reason.txt` (default: <out>/quarantine).
    #[arg(long)]
    quarantine: Option<PathBuf>,
    /// Most files queued or being scored at once.
    #[arg(long, default_value_t = 2)]
    max_in_flight: usize,
    /// Process what is there (and what arrives meanwhile), then exit.
    #[arg(long)]
    once: bool,
    /// Time between sweeps of the folder (file-system events can be missed).
    #[arg(long, default_value = "10s")]
    sweep_every: String,
    /// How long a file not renamed into the folder must keep its size and modification time
    /// to be read (files renamed in are read at once). Long, because a stalled copy looks
    /// complete.
    #[arg(
        long,
        visible_alias = "settle",
        env = "SILENCIO_WATCH_QUIET_PERIOD",
        default_value = "30s"
    )]
    quiet_period: String,
    /// Expose the consumer's Prometheus metrics on this address (e.g. 127.0.0.1:9187).
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Progress lines: `text` or `json` (one object per event, on stderr).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    progress: String,
}

fn typed(e: silencio_watch::Error) -> anyhow::Error {
    Failure::error(e.kind(), e.to_string())
}

/// Runs `silencio simulate`.
pub fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    let mut cfg = SimConfig::new(&a.soundscapes, &a.out);
    cfg.every = parse_duration(&a.every).map_err(typed)?;
    cfg.count = a.count;
    cfg.seed = a.seed;
    cfg.recorder = a.recorder;
    cfg.overlay = match a.overlay_calls {
        Some(calls) => Some(Overlay {
            calls,
            snr_db: parse_range(&a.snr).map_err(typed)?,
            pool: match a.pool.as_str() {
                "train" => CallPool::Train,
                "all" => CallPool::All,
                _ => CallPool::Valid,
            },
            max_overlap: a.max_overlap,
            background_only: a.background_only,
        }),
        None => None,
    };
    cfg.stop = silencio_watch::stop_on_signal().map_err(typed)?;
    let s = silencio_watch::simulate_with(&cfg, &mut |p| {
        eprintln!(
            "[{}] {} ({} @ {:.0} s, {} calls{}) in {:.2} s",
            p.index,
            p.audio.display(),
            p.source.0,
            p.source.1,
            p.calls,
            p.labels
                .as_ref()
                .map_or(String::new(), |l| format!(", labels {}", l.display())),
            p.seconds
        );
    })
    .map_err(typed)?;
    for (name, why) in &s.sources_skipped {
        eprintln!("warning: source {name} skipped: {why}");
    }
    eprintln!(
        "{}: {} file(s) written, {} already there, in {:.1} s",
        a.out.display(),
        s.written.len(),
        s.existing,
        s.seconds
    );
    Ok(())
}

/// Runs `silencio watch`.
pub fn watch(a: WatchArgs) -> anyhow::Result<()> {
    let engine = match &a.server {
        Some(url) => {
            if !a.model.model.is_empty() {
                return Err(Failure::error(
                    "invalid_options",
                    "--model and --server exclude each other: the server runs its own model",
                ));
            }
            let columns = match &a.taxonomy {
                Some(t) => Some(ServerClient::columns_from_taxonomy(t).map_err(typed)?),
                None => None,
            };
            let timeout =
                std::time::Duration::try_from_secs_f64(a.server_timeout_s).map_err(|_| {
                    Failure::error("invalid_options", "--server-timeout-s must be >= 0")
                })?;
            Scorer::Server(ServerClient::new(url, columns, timeout))
        }
        None => Scorer::local(a.model.open()?).map_err(typed)?,
    };
    if let Some(addr) = a.metrics_addr {
        let bound = silencio_watch::serve_metrics(addr).map_err(typed)?;
        eprintln!("metrics: http://{bound}/metrics");
    }
    let mut cfg = WatchConfig::new(&a.input, &a.out);
    cfg.quarantine = a.quarantine;
    cfg.max_in_flight = a.max_in_flight;
    cfg.once = a.once;
    cfg.sweep_every = parse_duration(&a.sweep_every).map_err(typed)?;
    cfg.quiet_period = parse_duration(&a.quiet_period).map_err(typed)?;
    cfg.max_duration_s = a.model.max_duration_s;
    cfg.stop = silencio_watch::stop_on_signal().map_err(typed)?;
    let json = a.progress == "json";
    let input = a.input.display().to_string();
    Watcher::new(cfg, engine)
        .map_err(typed)?
        .run(&mut |e| log(e, json, &input))
        .map_err(typed)?;
    Ok(())
}

fn log(e: &WatchEvent, json: bool, input: &str) {
    if json {
        eprintln!("{}", event_json(e));
        return;
    }
    match e {
        WatchEvent::Started {
            engine,
            ledger_lines,
            cleaned,
        } => eprintln!(
            "watching {input} with {engine}; ledger holds {ledger_lines} line(s); {cleaned} \
             leftover temp file(s) removed"
        ),
        WatchEvent::Done {
            file,
            output,
            windows,
            audio_s,
            seconds,
            recovered,
            stats,
        } => {
            let how = if *recovered {
                "output found complete after a crash, adopted".to_string()
            } else {
                format!("{windows} windows, {audio_s:.1} s of audio in {seconds:.2} s")
            };
            eprintln!(
                "done {file} -> {}: {how} | {} files, {} windows, {:.2} files/min, RTF {:.3}",
                output.display(),
                stats.files,
                stats.windows,
                stats.files_per_minute(),
                stats.real_time_factor()
            );
        }
        WatchEvent::Quarantined {
            file,
            kind,
            message,
            ..
        } => eprintln!("quarantined {file}: error[{kind}]: {message}"),
        WatchEvent::Retrying { file, message } => eprintln!("retrying {file} later: {message}"),
        WatchEvent::Skipped { file, reason } => eprintln!("skipped {file}: {reason}"),
        WatchEvent::Stopped { stats } => eprintln!(
            "stopped: {} file(s) scored ({} adopted after a crash), {} quarantined, {} windows, \
             {:.1} s of audio in {:.1} s: {:.2} files/min sustained, real-time factor {:.4}",
            stats.files,
            stats.recovered,
            stats.quarantined,
            stats.windows,
            stats.audio_s,
            stats.elapsed_s,
            stats.files_per_minute(),
            stats.real_time_factor()
        ),
    }
}

fn event_json(e: &WatchEvent) -> serde_json::Value {
    let stats = |s: &silencio_watch::Stats| {
        serde_json::json!({
            "files": s.files, "recovered": s.recovered, "quarantined": s.quarantined,
            "windows": s.windows, "audio_s": s.audio_s, "busy_s": s.busy_s,
            "elapsed_s": s.elapsed_s, "files_per_min": s.files_per_minute(),
            "real_time_factor": s.real_time_factor(),
        })
    };
    match e {
        WatchEvent::Started {
            engine,
            ledger_lines,
            cleaned,
        } => serde_json::json!({"event": "started", "engine": engine,
            "ledger_lines": ledger_lines, "cleaned": cleaned}),
        WatchEvent::Done {
            file,
            output,
            windows,
            audio_s,
            seconds,
            recovered,
            stats: s,
        } => serde_json::json!({"event": "done", "file": file, "output": output,
            "windows": windows, "audio_s": audio_s, "seconds": seconds,
            "recovered": recovered, "stats": stats(s)}),
        WatchEvent::Quarantined {
            file,
            kind,
            message,
            stats: s,
        } => serde_json::json!({"event": "quarantined", "file": file, "kind": kind,
            "message": message, "stats": stats(s)}),
        WatchEvent::Retrying { file, message } => {
            serde_json::json!({"event": "retrying", "file": file, "message": message})
        }
        WatchEvent::Skipped { file, reason } => {
            serde_json::json!({"event": "skipped", "file": file, "reason": reason})
        }
        WatchEvent::Stopped { stats: s } => {
            serde_json::json!({"event": "stopped", "stats": stats(s)})
        }
    }
}
