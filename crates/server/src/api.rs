//! The API's request and response bodies (what the OpenAPI document describes).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// Query of `POST /v1/identify`.
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IdentifyQuery {
    /// Species listed per window (default 5).
    pub top_k: Option<usize>,
    /// Lowest score listed, in [0, 1] (default 0).
    pub min_score: Option<f32>,
    /// Session (outing) the clip belongs to; its species are added to the session.
    pub session_id: Option<String>,
}

/// JSON body of `POST /v1/identify` (the alternative to a raw audio body).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct IdentifyJson {
    /// The recording (any supported format), base64 (standard alphabet).
    pub audio_base64: String,
    /// Session (outing) the clip belongs to.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Where it was recorded (WGS 84), if known.
    #[serde(default)]
    pub latitude: Option<f64>,
    /// Where it was recorded (WGS 84), if known.
    #[serde(default)]
    pub longitude: Option<f64>,
    /// When it was recorded (RFC 3339), if known.
    #[serde(default)]
    pub recorded_at: Option<String>,
}

/// One species of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SpeciesScore {
    /// eBird / BirdCLEF code.
    pub code: String,
    /// Scientific name.
    pub scientific_name: String,
    /// Common name.
    pub common_name: String,
    /// Aves, Amphibia, Insecta or Mammalia.
    pub class_name: String,
    /// Probability in [0, 1].
    pub score: f32,
}

impl From<silencio_infer::SpeciesScore> for SpeciesScore {
    fn from(s: silencio_infer::SpeciesScore) -> Self {
        Self {
            code: s.code,
            scientific_name: s.scientific_name,
            common_name: s.common_name,
            class_name: s.class_name,
            score: s.score,
        }
    }
}

/// One 5 s window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WindowResult {
    /// Start in seconds.
    pub start_s: f64,
    /// End in seconds (start + window length).
    pub end_s: f64,
    /// Best species first.
    pub species: Vec<SpeciesScore>,
}

/// Where a request's time went, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Timing {
    /// Decoding, resampling and log-mel features.
    pub decode: f64,
    /// Waiting for a batch.
    pub queue: f64,
    /// Forward passes.
    pub inference: f64,
    /// The whole request, as the server saw it.
    pub total: f64,
}

/// Answer of `POST /v1/identify`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct IdentifyResponse {
    /// Id to quote in feedback.
    pub request_id: String,
    /// `name@version` of the model that answered.
    pub model_version: String,
    /// Per-window species.
    pub windows: Vec<WindowResult>,
    /// Time spent.
    pub timing_ms: Timing,
}

/// A species the model knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SpeciesInfo {
    /// eBird / BirdCLEF code.
    pub code: String,
    /// Scientific name.
    pub scientific_name: String,
    /// Common name.
    pub common_name: String,
    /// Aves, Amphibia, Insecta or Mammalia.
    pub class_name: String,
}

/// Answer of `GET /v1/species`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SpeciesList {
    /// The stable model whose classes these are.
    pub model_version: String,
    /// In the model's class order.
    pub species: Vec<SpeciesInfo>,
}

/// A loaded model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelInfo {
    /// `name@version`.
    pub model_version: String,
    /// `stable`, `canary` or `previous` (loaded for rollback, no traffic).
    pub role: String,
    /// Share of identify traffic it gets.
    pub share: f64,
    /// When it was loaded (RFC 3339).
    pub loaded_at: String,
    /// Requests it answered.
    pub requests_served: u64,
    /// Windows it ran.
    pub windows_inferred: u64,
    /// Requests whose client left before their windows ran.
    pub client_gone: u64,
    /// Windows waiting in its queue.
    pub queued_windows: usize,
    /// Replica threads.
    pub replicas: usize,
    /// Batch size limit.
    pub max_batch: usize,
    /// Architecture.
    pub architecture: String,
    /// Whether the weights were trained on the task (random-weight bundles say false).
    pub trained: bool,
    /// Bundle directory on the server: only with a valid API key (the admin endpoints'
    /// answers, or `GET /v1/models` sent with the key), since it names the host's file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Answer of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelsList {
    /// Stable first.
    pub models: Vec<ModelInfo>,
}

/// Body of `POST /v1/admin/models`: one of `path` or `registry_version`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
pub struct LoadModel {
    /// A bundle directory on the server.
    #[serde(default)]
    pub path: Option<String>,
    /// A version in the server's registry (`<registry>/versions/<v>`).
    #[serde(default)]
    pub registry_version: Option<String>,
    /// Share of traffic for the new canary, in [0, 1] (default 0.1).
    #[serde(default)]
    pub share: Option<f64>,
}

/// Body of `POST /v1/feedback`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct FeedbackRequest {
    /// `request_id` of the identification.
    pub request_id: String,
    /// Window index in that identification.
    pub window: usize,
    /// Whether its top prediction was right.
    pub verdict: crate::feedback::Verdict,
    /// The species it really was (a code the model knows).
    #[serde(default)]
    pub correct_code: Option<String>,
}

/// Answer of `POST /v1/feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stored {
    /// True: the entry is on disk now (fsync'd, 201). False: the same verdict on the same
    /// window was stored before (a retry, 200); nothing was added.
    pub stored: bool,
}

/// Every error: a message and a stable machine-readable kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// Stable snake_case kind (`too_large`, `overloaded`, `corrupt_stream`, …).
    pub error_type: String,
}

/// Answer of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
    /// Stable model, when one is loaded.
    #[serde(default)]
    pub model_version: Option<String>,
}

/// First message of a `/v1/stream` WebSocket (text).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
pub struct StreamStart {
    /// Rate of the PCM that follows, one of the usual recording rates (8000, 11025, 16000, 22050,
    /// 24000, 32000, 44100, 48000, 88200, 96000, 176400, 192000, 250000, 352800, 384000 Hz).
    pub sample_rate: u32,
    /// `pcm_s16le` or `pcm_f32le`, mono.
    pub encoding: String,
    /// Session (outing) the stream's windows count for; needs the API key on the upgrade
    /// request.
    #[serde(default)]
    pub session_id: Option<String>,
    /// Species listed per window (default 5).
    #[serde(default)]
    pub top_k: Option<usize>,
    /// Lowest score listed (default 0).
    #[serde(default)]
    pub min_score: Option<f32>,
}

/// The session part of a stream message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamSession {
    /// The stream's session.
    pub session_id: String,
    /// Unique species detected in the session so far.
    pub unique_species: usize,
}

/// One message per closed window of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StreamWindow {
    /// The window.
    pub window: WindowResult,
    /// The session so far, when the stream has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<StreamSession>,
}
