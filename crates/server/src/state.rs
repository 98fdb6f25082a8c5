//! The server's shared state: the loaded model versions and how traffic is split between
//! them, admission, the stores, recent requests for feedback.
//!
//! Model versions are swapped through one `RwLock<Arc<Routing>>`: a request clones the
//! `Arc<LoadedModel>` it was routed to and keeps it until it is answered, so a promote or
//! rollback never pulls a model from under a request in flight; the old version's replicas
//! exit once its last request is done.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use silencio_infer::ModelSpec;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::config::ServerConfig;
use crate::feedback::FeedbackStore;
use crate::recent::RecentRequests;
use crate::sampling::{Sampler, SamplerConfig};
use crate::sessions::Sessions;
use crate::{Error, Result};

pub use crate::served::LoadedModel;

/// A version taking part of the traffic.
#[derive(Debug, Clone)]
pub struct Canary {
    /// The model.
    pub model: Arc<LoadedModel>,
    /// Share of requests it gets, in [0, 1].
    pub share: f64,
}

/// Which versions serve traffic.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    /// Takes what the canary does not.
    pub stable: Option<Arc<LoadedModel>>,
    /// Takes `share` of requests.
    pub canary: Option<Canary>,
    /// The stable version before the last promote (kept loaded for an instant rollback).
    pub previous: Option<Arc<LoadedModel>>,
}

/// A request admitted past the queue limit; dropping it frees the slot.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
}

/// An open stream, counted while alive.
#[derive(Debug)]
pub struct StreamGuard {
    state: AppState,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.state
            .inner
            .streams
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

pub use crate::recent::RecentRequest;

/// The decoding lanes' permits: `short` for uploads within
/// [`crate::config::SHORT_LANE_SAMPLES`] (one per core), `long` for the rest (half the cores).
#[derive(Debug)]
pub(crate) struct Decoders {
    pub short: Semaphore,
    pub long: Semaphore,
}

struct Inner {
    cfg: ServerConfig,
    /// The data directory's lock, held while the server lives.
    _data_lock: std::fs::File,
    routing: RwLock<Arc<Routing>>,
    routed: AtomicU64,
    admission: Arc<Semaphore>,
    /// Decoding runs on the blocking pool in two lanes (short uploads, long ones), each with a
    /// few permits so an overload cannot spread hundreds of decoders over two cores.
    decoders: Decoders,
    admin: tokio::sync::Mutex<()>,
    recent: RecentRequests,
    sessions: Sessions,
    feedback: FeedbackStore,
    sampler: Sampler,
    shutting_down: AtomicBool,
    shutdown_tx: watch::Sender<bool>,
    /// Open WebSocket streams (they outlive the HTTP connection that upgraded them, so the
    /// server's graceful shutdown waits for them separately).
    streams: watch::Sender<usize>,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
}

/// The state every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("addr", &self.inner.cfg.addr)
            .finish()
    }
}

/// File whose lock marks a data directory as in use by a running server.
pub const DATA_LOCK_FILE: &str = "server.lock";

/// Takes the data directory's lock for as long as the returned file lives (the OS drops it
/// when the process exits, even on SIGKILL): two servers on one directory would interleave the
/// feedback log and each keep the sample quota as if alone.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("create data dir {}", dir.display()), e))?;
    let path = dir.join(DATA_LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Conflict(format!(
            "another server is using the data directory {} (--data-dir): give each server its own",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::io(format!("lock {}", path.display()), e))
        }
    }
}

impl AppState {
    /// State with no model loaded yet (`/readyz` says 503 until [`AppState::load_stable`]):
    /// opens the feedback log and sample store under `cfg.data_dir` and the metrics recorder.
    pub fn new(cfg: ServerConfig) -> Result<Self> {
        cfg.validate()?;
        let metrics = crate::metrics::handle()?;
        let data_lock = lock_data_dir(&cfg.data_dir)?;
        let feedback = FeedbackStore::open(&cfg.data_dir.join("feedback"))?;
        let recent = RecentRequests::open(&cfg.data_dir.join("recent"), cfg.recent_requests)?;
        let sampler = Sampler::open(
            &cfg.data_dir.join("samples"),
            SamplerConfig {
                share: cfg.sample_share,
                quota_bytes: cfg.sample_quota_bytes,
                max_age: cfg.sample_max_age,
            },
        )?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2);
        let (shutdown_tx, _) = watch::channel(false);
        let (streams, _) = watch::channel(0usize);
        Ok(Self {
            inner: Arc::new(Inner {
                routing: RwLock::new(Arc::new(Routing::default())),
                routed: AtomicU64::new(0),
                admission: Arc::new(Semaphore::new(cfg.queue)),
                decoders: Decoders {
                    short: Semaphore::new(cores),
                    long: Semaphore::new(cores / 2),
                },
                admin: tokio::sync::Mutex::new(()),
                recent,
                sessions: Sessions::new(cfg.session_threshold),
                feedback,
                sampler,
                shutting_down: AtomicBool::new(false),
                shutdown_tx,
                streams,
                metrics,
                _data_lock: data_lock,
                cfg,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.cfg
    }

    /// Loads the model at `path` (a bundle, or an ensemble file or directory) as the stable
    /// version (warm before it takes traffic); the current stable, if any, becomes the
    /// previous one.
    pub async fn load_stable(&self, path: &Path) -> Result<Arc<LoadedModel>> {
        let spec = ModelSpec::from_path(path, &self.inner.cfg.registry)?;
        self.load_stable_spec(spec, path.display().to_string())
            .await
    }

    /// [`AppState::load_stable`] of any model spec; `source` says where it came from.
    pub async fn load_stable_spec(
        &self,
        spec: ModelSpec,
        source: String,
    ) -> Result<Arc<LoadedModel>> {
        let model = self.load(spec, source.clone()).await?;
        let _admin = self.inner.admin.lock().await;
        self.swap(|r| Routing {
            previous: r.stable.clone(),
            stable: Some(model.clone()),
            canary: r.canary.clone(),
        });
        tracing::info!(model = %model.model_version(), %source, "stable model ready");
        Ok(model)
    }

    /// Loads and warms a model without routing any traffic to it; refused when its licences
    /// do not fit the deployment.
    pub async fn load(&self, spec: ModelSpec, source: String) -> Result<Arc<LoadedModel>> {
        let cfg = self.inner.cfg.engine.clone();
        let deployment = self.inner.cfg.deployment;
        tokio::task::spawn_blocking(move || LoadedModel::load(&spec, &source, &cfg, deployment))
            .await
            .map_err(|e| Error::Internal(format!("model loading task failed: {e}")))?
    }

    /// The current routing table.
    pub fn routing(&self) -> Arc<Routing> {
        self.inner
            .routing
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the routing table (callers hold the admin lock).
    pub(crate) fn swap(&self, f: impl FnOnce(&Routing) -> Routing) {
        let mut w = self
            .inner
            .routing
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let next = f(&w);
        *w = Arc::new(next);
    }

    /// Serialises admin operations (load, promote, rollback).
    pub(crate) async fn admin_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.admin.lock().await
    }

    /// The version the next request goes to: the canary for exactly `share` of requests
    /// (spread evenly by a counter, so a test or a small canary sees its share without luck).
    pub fn pick(&self) -> Result<Arc<LoadedModel>> {
        let r = self.routing();
        let Some(stable) = &r.stable else {
            return Err(Error::Unavailable(
                "no model loaded yet (loading and warming up); see /readyz".into(),
            ));
        };
        if let Some(c) = &r.canary {
            let n = self.inner.routed.fetch_add(1, Ordering::Relaxed) as f64;
            if ((n + 1.0) * c.share).floor() > (n * c.share).floor() {
                return Ok(c.model.clone());
            }
        }
        Ok(stable.clone())
    }

    /// A slot for one request, or 429 at once when `queue` requests are already in.
    pub fn admit(&self) -> Result<Admission> {
        if self.is_shutting_down() {
            return Err(Error::Unavailable("shutting down".into()));
        }
        self.admit_draining()
    }

    /// [`AppState::admit`] that still admits while draining: the last window of a stream
    /// that is being closed by the shutdown.
    pub(crate) fn admit_draining(&self) -> Result<Admission> {
        match self.inner.admission.clone().try_acquire_owned() {
            Ok(p) => Ok(Admission { _permit: p }),
            Err(_) => {
                crate::metrics::rejected("overloaded");
                Err(Error::Overloaded { retry_after_s: 1 })
            }
        }
    }

    pub(crate) fn decoders(&self) -> &Decoders {
        &self.inner.decoders
    }

    /// Remembers an answered request for feedback (across restarts).
    pub fn remember(&self, request_id: &str, r: RecentRequest) {
        self.inner.recent.remember(request_id, r);
    }

    /// A recent request by id.
    pub fn recent(&self, request_id: &str) -> Option<RecentRequest> {
        self.inner.recent.get(request_id)
    }

    /// Session store.
    pub fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    /// Feedback log.
    pub fn feedback(&self) -> &FeedbackStore {
        &self.inner.feedback
    }

    /// Passive sampler.
    pub fn sampler(&self) -> &Sampler {
        &self.inner.sampler
    }

    /// The API key of the write endpoints.
    pub fn api_key(&self) -> &str {
        &self.inner.cfg.api_key
    }

    /// The metrics handle.
    pub fn metrics(&self) -> &metrics_exporter_prometheus::PrometheusHandle {
        &self.inner.metrics
    }

    /// Marks the server as draining: `/readyz` answers 503, new identifications 503, streams
    /// flush and close.
    pub fn begin_shutdown(&self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.inner.shutdown_tx.send(true);
    }

    /// Whether [`AppState::begin_shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutting_down.load(Ordering::SeqCst)
    }

    /// Resolves when shutdown begins (for long-lived connections).
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown_tx.subscribe()
    }

    /// Counts an open stream until the guard is dropped; `Overloaded` when `max_streams` are
    /// open already (checked and counted in one step).
    pub(crate) fn stream_opened(&self) -> Result<StreamGuard> {
        let cap = self.inner.cfg.max_streams;
        if !self.inner.streams.send_if_modified(|n| {
            let room = *n < cap;
            *n += usize::from(room);
            room
        }) {
            crate::metrics::rejected("overloaded");
            return Err(Error::Overloaded { retry_after_s: 5 });
        }
        Ok(StreamGuard {
            state: self.clone(),
        })
    }

    /// Waits until no stream is open, at most `limit`.
    pub async fn streams_closed(&self, limit: std::time::Duration) -> bool {
        let mut rx = self.inner.streams.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Ready: a stable model is loaded and warm, and not shutting down.
    pub fn is_ready(&self) -> bool {
        !self.is_shutting_down() && self.routing().stable.is_some()
    }
}
