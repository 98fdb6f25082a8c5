//! What a server is started with. Every field has a flag in `silencio serve`; the defaults are
//! the ones documented there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, Result};

/// How one loaded model version runs its windows.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Worker threads, each holding its own copy of the model.
    pub replicas: usize,
    /// A batch closes at this many windows…
    pub max_batch: usize,
    /// …or once its oldest window has waited this long.
    pub max_wait: Duration,
    /// Compute device (`flex`, `wgpu[:N]`, `cuda[:N]`).
    pub device: String,
    /// Where the replicas' CPU kernels find their threads.
    pub threads: ReplicaThreads,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            replicas: default_replicas(),
            max_batch: default_max_batch("flex"),
            max_wait: Duration::from_millis(10),
            device: "flex".into(),
            threads: ReplicaThreads::default(),
        }
    }
}

/// How replicas and the CPU kernels' parallel loops share the cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReplicaThreads {
    /// Each replica is a thread of its model version's own rayon pool of `replicas` threads:
    /// a replica's parallel loops (flex's GEMM, the kernels) stay on its thread, so `replicas`
    /// threads are all the model ever runs (one replica per core, no oversubscription).
    #[default]
    Own,
    /// Each replica is a plain thread; the parallel loops go to the process-wide rayon pool (one
    /// thread per core) besides: one request can use every core, several oversubscribe them.
    Shared,
}

/// The default `--max-batch` on `device`: 1 on the CPU (flex), where a window costs about the
/// same at batch 1 as at batch 8 and batching only adds waiting — full-size EfficientNet-B0, 2
/// cores, 2 replicas: 73.8 clips/s at 16 users and p50 107 ms at 8 users at batch 1, against
/// 74.5 clips/s and 192 ms at batch 8 (`benches/compare/serving_last_run.json`); 8 elsewhere
/// (GPUs, where a batch fills the device).
pub fn default_max_batch(device: &str) -> usize {
    match silencio_infer::parse_device(device) {
        Ok(d) if silencio_infer::is_flex(&d) => 1,
        _ => 8,
    }
}

/// One replica per core (at most 8): with a full-size EfficientNet-B0 on 2 cores, one replica
/// served 39 clips/s and two 72 (tour mode, 16 users, batch 1; with the demo model, four
/// replicas added nothing over two).
pub fn default_replicas() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().clamp(1, 8))
        .unwrap_or(1)
}

/// The El Silencio Natural Reserve (Yondó, Antioquia, Middle Magdalena Valley, Colombia),
/// roughly: 6.72 N, 74.26 W. Approximate — the BirdCLEF 2025 materials that would give the
/// recorders' coordinates are not on this machine — and a kernel of ~1000 km makes the filter
/// insensitive to a few km; `--latitude/--longitude` set the real place.
pub const EL_SILENCIO: (f64, f64) = (6.72, -74.26);

/// [`EL_SILENCIO`] as a place.
pub fn el_silencio() -> silencio_infer::location::Place {
    // Constant, valid coordinates.
    silencio_infer::location::Place::new(EL_SILENCIO.0, EL_SILENCIO.1)
        .unwrap_or_else(|_| unreachable!("EL_SILENCIO is a valid place"))
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// The first stable model, as a model spec (a bundle or ensemble path, `registry:<alias
    /// or version>`, `birdnet`); `None`: the registry's production, else staging version.
    pub model: Option<String>,
    /// Where the server's recordings are made unless a request says otherwise (the location
    /// filter's default place); `None`: only requests that give one are filtered.
    pub location: Option<silencio_infer::location::Place>,
    /// How the location filter changes scores unless a request says otherwise.
    pub location_mode: silencio_infer::location::FilterMode,
    /// Whether the deployment is non-commercial: only then may models with non-commercial
    /// (or unrecorded) licences be served.
    pub deployment: silencio_infer::Deployment,
    /// Model registry root (`aliases.json`, `versions/<v>/`).
    pub registry: PathBuf,
    /// Where feedback and sampled requests are stored.
    pub data_dir: PathBuf,
    /// Key required by the write endpoints (feedback, admin). Never empty.
    pub api_key: String,
    /// Batching and replicas.
    pub engine: EngineConfig,
    /// Requests admitted at once (decoding, queued or running); beyond it: 429.
    pub queue: usize,
    /// Largest request body in bytes; beyond it: 413.
    pub max_body_bytes: u64,
    /// How fast an identify body must arrive; slower: 408.
    pub upload: crate::upload::UploadPolicy,
    /// Requests on the `/v1` routes in flight at once (uploads being read included); beyond
    /// it: 429 at once. Well above any tour group behind one lodge's Wi-Fi.
    pub max_in_flight: usize,
    /// Deadline of a `/v1` request from its first byte to its answer (503 beyond); at least
    /// the upload timeout.
    pub request_timeout: Duration,
    /// WebSocket streams open at once; more get 429.
    pub max_streams: usize,
    /// How fast a stream may send audio and messages.
    pub stream_rate: crate::tour::StreamRate,
    /// A stream that sends nothing for this long is closed with a `timeout` error.
    pub stream_idle: Duration,
    /// Longest recording in seconds; beyond it: 413.
    pub max_duration_s: f64,
    /// Share of identify requests saved with their audio for labelling.
    pub sample_share: f64,
    /// Disk quota of the saved samples in bytes.
    pub sample_quota_bytes: u64,
    /// Saved samples older than this are deleted.
    pub sample_max_age: Duration,
    /// A species counts as detected in a session when a window scores it at least this.
    pub session_threshold: f32,
    /// Recent request ids remembered for feedback.
    pub recent_requests: usize,
    /// Traffic share of a canary loaded without an explicit share.
    pub default_canary_share: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            model: None,
            deployment: silencio_infer::Deployment::Commercial,
            location: Some(el_silencio()),
            location_mode: silencio_infer::location::FilterMode::default(),
            registry: silencio_infer::registry::default_root(),
            data_dir: PathBuf::from("serve-data"),
            api_key: generate_api_key(),
            engine: EngineConfig::default(),
            queue: 64,
            max_body_bytes: 32 << 20,
            // 16 kbit/s on average after 10 s: a phone on EDGE (~50 kbit/s) sends a 5 s OGG
            // clip (~30 kB) in about 5 s.
            max_in_flight: 1024,
            request_timeout: Duration::from_secs(180),
            max_streams: 256,
            stream_idle: Duration::from_secs(60),
            stream_rate: crate::tour::StreamRate::default(),
            upload: crate::upload::UploadPolicy {
                timeout: Duration::from_secs(120),
                grace: Duration::from_secs(10),
                min_bytes_per_s: 2000,
            },
            max_duration_s: 120.0,
            sample_share: 0.05,
            sample_quota_bytes: 1 << 30,
            sample_max_age: Duration::from_secs(30 * 24 * 3600),
            session_threshold: 0.5,
            recent_requests: 10_000,
            default_canary_share: 0.1,
        }
    }
}

/// Decoding budget per second of the longest accepted recording, in samples (frames ×
/// channels at the original rate): 48 kHz stereo. Decoding cost follows samples, not bytes or
/// seconds, so a 384 kHz mono upload may last an eighth of `max_duration_s`.
pub const DECODE_SAMPLES_PER_S: f64 = 96_000.0;

/// Uploads that decode to at most this many samples (30 s of 48 kHz stereo) take the short
/// decoding lane; longer ones wait in their own lane, so they never delay the short clips that
/// most clients send.
pub const SHORT_LANE_SAMPLES: u64 = 30 * 96_000;

/// A fresh random API key (122 random bits from the OS, hex).
pub fn generate_api_key() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl ServerConfig {
    /// Checks the numbers before anything starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::BadRequest(m));
        if self.api_key.trim().is_empty() {
            return bad("the API key must not be empty".into());
        }
        if self.engine.replicas == 0 || self.engine.replicas > 64 {
            return bad(format!(
                "replicas must be 1..=64, got {}",
                self.engine.replicas
            ));
        }
        if self.engine.max_batch == 0 || self.engine.max_batch > 256 {
            return bad(format!(
                "max batch must be 1..=256, got {}",
                self.engine.max_batch
            ));
        }
        if self.queue == 0 {
            return bad("queue must be at least 1".into());
        }
        if self.max_streams == 0 || self.stream_idle.is_zero() {
            return bad("max streams and the stream idle timeout must be > 0".into());
        }
        if self.upload.timeout.is_zero() {
            return bad("the upload timeout must be > 0".into());
        }
        let r = self.stream_rate;
        if ![
            r.audio_speed,
            r.audio_burst_s,
            r.messages_per_s,
            r.message_burst,
        ]
        .iter()
        .all(|v| v.is_finite() && *v > 0.0)
        {
            return bad(format!("stream rate limits must be > 0, got {r:?}"));
        }
        if self.max_in_flight == 0 {
            return bad("max in flight must be at least 1".into());
        }
        if self.request_timeout < self.upload.timeout {
            return bad(format!(
                "the request timeout ({} s) must be at least the upload timeout ({} s)",
                self.request_timeout.as_secs(),
                self.upload.timeout.as_secs()
            ));
        }
        if self.max_body_bytes == 0 {
            return bad("max body must be > 0".into());
        }
        if !(self.max_duration_s.is_finite() && self.max_duration_s > 0.0) {
            return bad(format!(
                "max duration must be > 0 s, got {}",
                self.max_duration_s
            ));
        }
        if !(0.0..=1.0).contains(&self.sample_share) {
            return bad(format!(
                "sample share must be in [0, 1], got {}",
                self.sample_share
            ));
        }
        if !(0.0..=1.0).contains(&self.default_canary_share) {
            return bad(format!(
                "canary share must be in [0, 1], got {}",
                self.default_canary_share
            ));
        }
        Ok(())
    }

    /// Most samples one upload may decode to: `max_duration_s` of 48 kHz stereo.
    pub fn max_input_samples(&self) -> u64 {
        (self.max_duration_s * DECODE_SAMPLES_PER_S) as u64
    }

    /// The model to serve first, with where it comes from: `model`, else the registry's
    /// production, else staging version.
    pub fn model_spec(&self) -> Result<(silencio_infer::ModelSpec, String)> {
        if let Some(m) = &self.model {
            let spec = silencio_infer::ModelSpec::parse(m, &self.registry)?;
            return Ok((spec, m.clone()));
        }
        match silencio_infer::registry::resolve_default(&self.registry) {
            Ok((dir, alias)) => {
                tracing::info!(registry = %self.registry.display(), alias, "serving the registry's model");
                let spec = silencio_infer::ModelSpec::from_path(&dir, &self.registry)?;
                Ok((spec, dir.display().to_string()))
            }
            Err(silencio_infer::Error::NoModel { root }) => Err(Error::NoModel(format!(
                "no model to serve: the registry at {root} has no production or staging version. \
                 Train and register one first (`cargo run --release -p trainer`), or pass \
                 --model <bundle dir or ensemble file>"
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use silencio_infer::ModelSpec;
    use silencio_infer::spec::RegistryRef;

    #[test]
    fn the_model_flag_takes_any_spec() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("ens.toml");
        std::fs::create_dir_all(tmp.path().join("a")).unwrap();
        std::fs::write(tmp.path().join("a/bundle.json"), "{}").unwrap();
        std::fs::write(
            &file,
            "[[members]]\nmodel = \"a\"\n[[members]]\nmodel = \"a\"\n",
        )
        .unwrap();
        let cfg = |model: &str| ServerConfig {
            model: Some(model.into()),
            registry: tmp.path().join("registry"),
            ..ServerConfig::default()
        };
        let (spec, source) = cfg(file.to_str().unwrap()).model_spec().unwrap();
        assert!(matches!(spec, ModelSpec::Ensemble(ref e) if e.members.len() == 2));
        assert_eq!(source, file.display().to_string());
        let (spec, _) = cfg("registry:staging").model_spec().unwrap();
        assert_eq!(
            spec,
            ModelSpec::Registry {
                root: tmp.path().join("registry"),
                reference: RegistryRef::Named("staging".into())
            }
        );
        let e = cfg("no/such/model").model_spec().unwrap_err();
        assert_eq!(e.kind(), "spec");
        // The default place is the reserve's, and valid.
        let d = ServerConfig::default().location.unwrap();
        assert_eq!((d.latitude(), d.longitude()), EL_SILENCIO);
    }
}
