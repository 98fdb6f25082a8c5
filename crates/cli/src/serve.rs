//! `silencio serve`: the identification HTTP API (flags only; the server is silencio-server).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use silencio_server::{EngineConfig, ServerConfig};

/// Flags of `silencio serve`; each also reads an environment variable.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "SILENCIO_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
    /// Model to serve: a bundle directory, an ensemble file (.toml/.json) or directory,
    /// `registry:<alias or version>`, `birdnet` (builds with the `birdnet` feature). Default:
    /// the registry's production version, else staging.
    #[arg(long, env = "SILENCIO_MODEL")]
    pub model: Option<String>,
    /// This deployment is non-commercial (research, teaching, the reserve's own use): serve
    /// models whose weights or data forbid commercial use (BirdNET and what derives from it,
    /// BirdCLEF-trained models) or record no licence. Without it they are refused at load.
    #[arg(long, env = "SILENCIO_NON_COMMERCIAL")]
    pub non_commercial: bool,
    /// Where the recordings are made (WGS 84 latitude), unless a request says otherwise: the
    /// location filter drops species not expected there. Default: the El Silencio reserve.
    #[arg(long, allow_hyphen_values = true, default_value_t = silencio_server::config::EL_SILENCIO.0)]
    pub latitude: f64,
    /// Longitude of that place.
    #[arg(long, allow_hyphen_values = true, default_value_t = silencio_server::config::EL_SILENCIO.1)]
    pub longitude: f64,
    /// Filter only requests that give their own place.
    #[arg(long)]
    pub no_default_location: bool,
    /// How the location filter changes scores: `filter`, `filter:<threshold>` or `reweight`.
    #[arg(long, default_value = "filter")]
    pub location_mode: silencio_infer::location::FilterMode,
    /// Registry root that `registry:<name>` and the default refer to.
    #[arg(long, env = "SILENCIO_REGISTRY", default_value = "registry")]
    pub registry: PathBuf,
    /// Where feedback and sampled requests are stored.
    #[arg(long, env = "SILENCIO_DATA_DIR", default_value = "serve-data")]
    pub data_dir: PathBuf,
    /// API key of the write endpoints (feedback, admin). Default: a random key, printed once.
    #[arg(long, env = "SILENCIO_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Model replicas (worker threads, one model copy each). Default: one per core (at most 8).
    #[arg(long, env = "SILENCIO_REPLICAS")]
    pub replicas: Option<usize>,
    /// A batch closes at this many windows (1 disables batching). Default: 1 on the CPU
    /// (batching only adds waiting there), 8 on a GPU.
    #[arg(long, env = "SILENCIO_MAX_BATCH")]
    pub max_batch: Option<usize>,
    /// …or once its oldest window has waited this many milliseconds.
    #[arg(long, env = "SILENCIO_MAX_WAIT_MS", default_value_t = 10)]
    pub max_wait_ms: u64,
    /// Requests admitted at once; more get 429 with Retry-After.
    #[arg(long, env = "SILENCIO_QUEUE", default_value_t = 64)]
    pub queue: usize,
    /// Largest request body in MiB (413 beyond).
    #[arg(long, env = "SILENCIO_MAX_BODY_MB", default_value_t = 32.0)]
    pub max_body_mb: f64,
    /// An identify body must have arrived within this many seconds (408 beyond).
    #[arg(long, env = "SILENCIO_UPLOAD_TIMEOUT_S", default_value_t = 120)]
    pub upload_timeout_s: u64,
    /// …and, after this many seconds, keep this average rate in kbit/s (408 below; a phone on
    /// EDGE sends ~50).
    #[arg(long, env = "SILENCIO_UPLOAD_GRACE_S", default_value_t = 10)]
    pub upload_grace_s: u64,
    /// See --upload-grace-s.
    #[arg(long, env = "SILENCIO_UPLOAD_MIN_KBPS", default_value_t = 16)]
    pub upload_min_kbps: u64,
    /// Requests on the /v1 routes in flight at once, uploads being read included (429 beyond).
    #[arg(long, env = "SILENCIO_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Deadline of a /v1 request, first byte to answer, in seconds (503 beyond; at least
    /// --upload-timeout-s).
    #[arg(long, env = "SILENCIO_REQUEST_TIMEOUT_S", default_value_t = 180)]
    pub request_timeout_s: u64,
    /// WebSocket streams open at once (429 beyond).
    #[arg(long, env = "SILENCIO_MAX_STREAMS", default_value_t = 256)]
    pub max_streams: usize,
    /// A stream silent for this many seconds is closed with a `timeout` error.
    #[arg(long, env = "SILENCIO_STREAM_IDLE_S", default_value_t = 60)]
    pub stream_idle_s: u64,
    /// Longest recording in seconds (413 beyond).
    #[arg(long, env = "SILENCIO_MAX_DURATION_S", default_value_t = 120.0)]
    pub max_duration_s: f64,
    /// Share of identify requests saved with their audio for labelling.
    #[arg(long, env = "SILENCIO_SAMPLE_SHARE", default_value_t = 0.05)]
    pub sample_share: f64,
    /// Disk quota of saved samples in MiB.
    #[arg(long, env = "SILENCIO_SAMPLE_QUOTA_MB", default_value_t = 1024)]
    pub sample_quota_mb: u64,
    /// Compute device: flex, wgpu[:N], cuda[:N].
    #[arg(long, env = "SILENCIO_DEVICE", default_value = "flex")]
    pub device: String,
    /// Replica threads: `own` (each replica's CPU kernels stay on its thread) or `shared`
    /// (they use the process-wide pool too).
    #[arg(long, env = "SILENCIO_REPLICA_THREADS", value_enum, default_value_t)]
    pub replica_threads: silencio_server::config::ReplicaThreads,
}

pub fn serve(a: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        a.max_body_mb.is_finite() && a.max_body_mb > 0.0,
        "--max-body-mb must be > 0"
    );
    let generated = a.api_key.is_none();
    let defaults = ServerConfig::default();
    let config = ServerConfig {
        addr: a.addr,
        model: a.model,
        location: if a.no_default_location {
            None
        } else {
            Some(silencio_infer::location::Place::new(
                a.latitude,
                a.longitude,
            )?)
        },
        location_mode: a.location_mode,
        deployment: if a.non_commercial {
            silencio_infer::Deployment::NonCommercial
        } else {
            silencio_infer::Deployment::Commercial
        },
        registry: a.registry,
        data_dir: a.data_dir,
        api_key: a.api_key.unwrap_or_else(silencio_server::generate_api_key),
        engine: EngineConfig {
            replicas: a
                .replicas
                .unwrap_or_else(silencio_server::config::default_replicas),
            max_batch: a
                .max_batch
                .unwrap_or_else(|| silencio_server::config::default_max_batch(&a.device)),
            max_wait: Duration::from_millis(a.max_wait_ms),
            device: a.device,
            threads: a.replica_threads,
        },
        queue: a.queue,
        max_body_bytes: (a.max_body_mb * 1_048_576.0).round() as u64,
        max_in_flight: a.max_in_flight,
        request_timeout: Duration::from_secs(a.request_timeout_s),
        max_streams: a.max_streams,
        stream_idle: Duration::from_secs(a.stream_idle_s),
        upload: silencio_server::upload::UploadPolicy {
            timeout: Duration::from_secs(a.upload_timeout_s),
            grace: Duration::from_secs(a.upload_grace_s),
            min_bytes_per_s: a.upload_min_kbps * 1000 / 8,
        },
        max_duration_s: a.max_duration_s,
        sample_share: a.sample_share,
        sample_quota_bytes: a.sample_quota_mb.saturating_mul(1 << 20),
        ..defaults
    };
    silencio_server::init_logging();
    let key = config.api_key.clone();
    silencio_server::serve_blocking(config, |addr| {
        eprintln!("silencio serve: listening on http://{addr} (docs: http://{addr}/docs)");
        if generated {
            // Printed once: writes (feedback, admin) need it.
            eprintln!("silencio serve: API key (generated; pass --api-key to fix one): {key}");
        }
    })?;
    eprintln!("silencio serve: stopped");
    Ok(())
}
