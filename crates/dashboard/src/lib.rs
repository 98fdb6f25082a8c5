//! The data and model dashboard of El Silencio Acoustic Explorer (`silencio dashboard`): one
//! web page, working offline, that shows
//! - the dataset: species per taxon class and collection, ratings, clip durations, the
//!   train/validation and initial/retrain splits ([`dataset`]);
//! - sample clips: waveform and log-mel (the models' own front-end) with playback ([`clips`]);
//! - the newest evaluation report: per-class AP and slices, with its HTML page ([`report`]);
//! - the registered model versions ([`registry`]);
//! - live serving figures scraped from a running server's `/metrics` ([`serving`], parsed by
//!   [`prom`]).
//!
//! The page's data comes from JSON routes (`/api/dataset`, `/api/clips`, `/api/report`,
//! `/api/models`, `/api/serving`), so they are testable without a browser; charts are drawn
//! by uPlot, vendored under `assets/` and embedded in the binary (no CDN).
#![warn(missing_docs)]

pub mod clips;
pub mod dataset;
pub mod error;
pub use silencio_prom as prom;
pub mod registry;
pub mod report;
pub mod serving;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use dataset::{Dataset, DatasetSummary, SplitOptions};
pub use error::{Error, Result};
pub use web::app;

/// Everything `silencio dashboard` is told.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// Address to listen on (`127.0.0.1:8090`; port 0 picks a free one).
    pub addr: String,
    /// BirdCLEF-layout dataset root (taxonomy.csv, train.csv, train_audio/).
    pub data: PathBuf,
    /// Runs directory (`runs/<experiment>/<run>/report.json`).
    pub runs: PathBuf,
    /// Local model registry root.
    pub registry: PathBuf,
    /// Base URL of a serving process to scrape (`http://127.0.0.1:8080`).
    pub server: Option<String>,
    /// Duration cache file; `None` keeps durations in memory only.
    pub cache: Option<PathBuf>,
    /// Split parameters (the ETL's).
    pub split: SplitOptions,
    /// Sample clips per taxon class.
    pub clips_per_class: usize,
    /// Threads scanning clip durations.
    pub scan_threads: usize,
}

impl DashboardConfig {
    /// Defaults for a dataset at `data`: `runs/` and `registry/` in the working directory, the
    /// duration cache in the user's cache directory ([`default_cache`]), 3 clips per class.
    pub fn new(data: impl Into<PathBuf>) -> Self {
        let data = data.into();
        Self {
            addr: "127.0.0.1:8090".into(),
            cache: default_cache(&data),
            data,
            runs: PathBuf::from("runs"),
            registry: PathBuf::from("registry"),
            server: None,
            split: SplitOptions::default(),
            clips_per_class: 3,
            scan_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Where the duration cache of the dataset at `data` goes by default:
/// `$XDG_CACHE_HOME/silencio/` (else `~/.cache/silencio/`), one file per dataset named by a
/// hash of its absolute path, so that datasets (often read-only) are never written to. `None`
/// when there is no home directory (durations are then kept in memory only).
pub fn default_cache(data: &Path) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    let abs = std::fs::canonicalize(data).unwrap_or_else(|_| data.to_path_buf());
    // FNV-1a: stable across runs and platforms (std's hasher is randomly seeded).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in abs.to_string_lossy().bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    Some(
        base.join("silencio")
            .join(format!("dashboard-durations-{h:016x}.json")),
    )
}

/// The dashboard's state, shared by the handlers.
#[derive(Debug)]
pub struct Dashboard {
    config: DashboardConfig,
    dataset: Arc<Dataset>,
    serving: serving::Serving,
    clips: tokio::sync::OnceCell<Arc<clips::ClipsResponse>>,
}

impl Dashboard {
    /// Loads the dataset's tables (fails on an unreadable taxonomy.csv or train.csv); does not
    /// start the duration scan (see [`Dashboard::start_background`]).
    pub fn open(config: DashboardConfig) -> Result<Arc<Self>> {
        if let Some(s) = &config.server
            && !(s.starts_with("http://") || s.starts_with("https://"))
        {
            return Err(Error::InvalidOption(format!(
                "--server must be an http:// or https:// URL, got {s:?}"
            )));
        }
        let dataset = Arc::new(Dataset::open(&config.data, config.split)?);
        Ok(Arc::new(Self {
            serving: serving::Serving::new(config.server.clone()),
            dataset,
            config,
            clips: tokio::sync::OnceCell::new(),
        }))
    }

    /// Starts the background duration scan.
    pub fn start_background(&self) {
        self.dataset
            .start_duration_scan(self.config.cache.clone(), self.config.scan_threads);
    }

    /// The configuration.
    pub fn config(&self) -> &DashboardConfig {
        &self.config
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// The sample clips, computed on first use (decoding and log-mel on a blocking thread)
    /// and kept: the dataset does not change under a running dashboard.
    pub async fn clips(&self) -> Result<Arc<clips::ClipsResponse>> {
        self.clips
            .get_or_try_init(|| async {
                let ds = Arc::clone(&self.dataset);
                let registry = self.config.registry.clone();
                let per_class = self.config.clips_per_class;
                tokio::task::spawn_blocking(move || compute_clips(&ds, &registry, per_class))
                    .await
                    .map_err(|e| Error::Task(e.to_string()))?
                    .map(Arc::new)
            })
            .await
            .cloned()
    }
}

fn compute_clips(ds: &Dataset, registry: &Path, per_class: usize) -> Result<clips::ClipsResponse> {
    // The model in use decides the transform, so the picture is what it sees.
    let (features, features_source) = match registry::current_features(registry) {
        Some(x) => x,
        None => (
            silencio_audio::FeatureConfig::recipe("birdclef")?,
            "default recipe (birdclef): no model in the registry".to_string(),
        ),
    };
    let lm = silencio_audio::LogMel::new(&features)?;
    let clips = clips::pick(ds, per_class)
        .into_iter()
        .map(|r| clips::render(ds, r, &features, &lm))
        .collect();
    Ok(clips::ClipsResponse {
        features,
        features_source,
        clips,
    })
}

/// Binds `config.addr`, starts the duration scan and serves until `shutdown` completes (then
/// stops accepting and lets requests in flight finish). Returns the bound address at once;
/// the server runs on the returned task.
pub async fn start(
    config: DashboardConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<()>>)> {
    let addr = config.addr.clone();
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| Error::Bind {
            addr: addr.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| Error::Bind {
        addr: addr.clone(),
        source,
    })?;
    let state = Dashboard::open(config)?;
    state.start_background();
    let router = app(state);
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| Error::io(PathBuf::from(addr), e))
    });
    Ok((local, task))
}

/// `silencio dashboard`: serves until Ctrl-C or SIGTERM, on its own runtime.
pub fn run_blocking(config: DashboardConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        // Handlers are light; decoding runs on the blocking pool.
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Task(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let (addr, task) = start(config, silencio_common::shutdown_signal()).await?;
        eprintln!("dashboard: http://{addr}/ (Ctrl-C stops)");
        task.await.map_err(|e| Error::Task(e.to_string()))?
    })
}

/// Replaces `path` atomically ([`silencio_common::write_atomic`]), creating its directory, so
/// that readers never see a half-written file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    silencio_common::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}
