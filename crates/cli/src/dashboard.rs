//! `silencio dashboard`: flags in, `silencio_dashboard::run_blocking` out.

use std::path::PathBuf;

use silencio_dashboard::{DashboardConfig, SplitOptions};

/// The data and model dashboard (a web page that works offline).
#[derive(clap::Args)]
pub(crate) struct DashboardArgs {
    /// Address to listen on.
    #[arg(
        long,
        env = "SILENCIO_DASHBOARD_ADDR",
        default_value = "127.0.0.1:8090"
    )]
    addr: String,
    /// BirdCLEF-layout dataset root (taxonomy.csv, train.csv, train_audio/).
    #[arg(long, default_value = "datasets/demo/birdclef")]
    data: PathBuf,
    /// Runs directory (the newest runs/<experiment>/<run>/report.json is shown).
    #[arg(long, default_value = "runs")]
    runs: PathBuf,
    /// Local model registry root.
    #[arg(long, env = "SILENCIO_REGISTRY", default_value = "registry")]
    registry: PathBuf,
    /// Base URL of a running `silencio serve` to show live figures from (its /metrics and
    /// /v1/models).
    #[arg(long)]
    server: Option<String>,
    /// Clip duration cache file (default: ~/.cache/silencio/, one file per dataset).
    #[arg(long, conflicts_with = "no_cache")]
    cache: Option<PathBuf>,
    /// Keep clip durations in memory only.
    #[arg(long)]
    no_cache: bool,
    /// Sample clips shown per taxon class.
    #[arg(long, default_value_t = 3)]
    clips_per_class: usize,
    /// Threads scanning clip durations (default: all cores).
    #[arg(long)]
    scan_threads: Option<usize>,
    #[command(flatten)]
    split: crate::SplitArgs,
}

pub(crate) fn dashboard(a: DashboardArgs) -> anyhow::Result<()> {
    let mut cfg = DashboardConfig::new(a.data);
    cfg.addr = a.addr;
    cfg.runs = a.runs;
    cfg.registry = a.registry;
    cfg.server = a.server;
    if a.no_cache {
        cfg.cache = None;
    } else if let Some(c) = a.cache {
        cfg.cache = Some(c);
    }
    cfg.clips_per_class = a.clips_per_class;
    if let Some(t) = a.scan_threads {
        cfg.scan_threads = t.max(1);
    }
    cfg.split = SplitOptions {
        valid_fraction: a.split.valid_fraction,
        initial_fraction: a.split.initial_fraction,
        seed: a.split.seed,
    };
    silencio_dashboard::run_blocking(cfg)?;
    Ok(())
}
