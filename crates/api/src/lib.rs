//! silencio-api: the wire types of El Silencio Acoustic Explorer's identification API, declared
//! once for the server (`silencio-server`, which turns on the `openapi` feature for the utoipa
//! schemas of its OpenAPI document) and for every client (the watched folder's server engine,
//! the load generator, the dashboard), so that a field renamed here fails to compile wherever it
//! is read instead of breaking at run time.
//!
//! Request and response bodies, the error body, the WebSocket stream's messages, the query of
//! `POST /v1/identify`, sessions and feedback. No Burn, no async runtime: serde only.
//!
//! What these types serialize to is the API's contract: field names, `skip_serializing_if` and
//! the enums' renames are part of it (the server's tests pin the JSON).
#![warn(missing_docs)]

use serde::{Deserialize, Serialize};

/// The `Content-Type` a client sends a recording under, from its file name's extension
/// (case-insensitive); OGG for anything else, the BirdCLEF format.
pub fn audio_content_type(file_name: &str) -> &'static str {
    let ext = std::path::Path::new(file_name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match ext.as_str() {
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        _ => "audio/ogg",
    }
}

/// Query of `POST /v1/identify`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct IdentifyQuery {
    /// Species listed per window (default 5).
    pub top_k: Option<usize>,
    /// Lowest score listed, in [0, 1] (default 0).
    pub min_score: Option<f32>,
    /// Session (outing) the clip belongs to; its species are added to the session.
    pub session_id: Option<String>,
    /// Where it was recorded (WGS 84 latitude; with `longitude`): overrides the server's
    /// default location for the location filter.
    pub latitude: Option<f64>,
    /// Where it was recorded (WGS 84 longitude).
    pub longitude: Option<f64>,
    /// When it was recorded (RFC 3339 or `YYYY-MM-DD`).
    pub recorded_at: Option<String>,
    /// `filter` (species expected there below 0.05 are zeroed), `filter:<threshold>`,
    /// `reweight` (scores times the occurrence there) or `off`; default: the server's.
    pub location_mode: Option<String>,
}

impl IdentifyQuery {
    /// The query string's `(name, value)` pairs, unset fields left out: for clients building
    /// the URL (the names are the fields' serde names, checked by this crate's tests).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let Self {
            top_k,
            min_score,
            session_id,
            latitude,
            longitude,
            recorded_at,
            location_mode,
        } = self;
        let mut out = Vec::new();
        if let Some(k) = top_k {
            out.push(("top_k", k.to_string()));
        }
        if let Some(m) = min_score {
            out.push(("min_score", m.to_string()));
        }
        if let Some(s) = session_id {
            out.push(("session_id", s.clone()));
        }
        if let Some(v) = latitude {
            out.push(("latitude", v.to_string()));
        }
        if let Some(v) = longitude {
            out.push(("longitude", v.to_string()));
        }
        if let Some(v) = recorded_at {
            out.push(("recorded_at", v.clone()));
        }
        if let Some(v) = location_mode {
            out.push(("location_mode", v.clone()));
        }
        out
    }
}

/// JSON body of `POST /v1/identify` (the alternative to a raw audio body).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// One 5 s window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WindowResult {
    /// Start in seconds.
    pub start_s: f64,
    /// End in seconds (start + window length).
    pub end_s: f64,
    /// Best species first.
    pub species: Vec<SpeciesScore>,
}

/// Where a request's time went, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IdentifyResponse {
    /// Id to quote in feedback.
    pub request_id: String,
    /// `name@version` of the model that answered.
    pub model_version: String,
    /// Per-window species.
    pub windows: Vec<WindowResult>,
    /// Time spent.
    pub timing_ms: Timing,
    /// What the location filter did; absent when the model has no species ranges or no
    /// location applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationReport>,
}

/// Where a location came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LocationSource {
    /// The request's `latitude`/`longitude`.
    Request,
    /// The server's configured location (the reserve it serves).
    ServerDefault,
}

/// What the location filter did to an answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LocationReport {
    /// `filter:<threshold>` (species expected below it were zeroed) or `reweight` (scores
    /// were multiplied by each species' occurrence there).
    pub mode: String,
    /// Latitude used.
    pub latitude: f64,
    /// Longitude used.
    pub longitude: f64,
    /// Week of the year (1–48, four per month), when a date was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub week: Option<u8>,
    /// Where the place came from.
    pub source: LocationSource,
    /// Codes of the species not expected there (zeroed, or weighted below 0.05).
    pub removed: Vec<String>,
    /// Species whose range is unknown, passed through unchanged.
    pub unknown: usize,
}

/// Query of `GET /v1/species`: with `lat` and `lon`, each species says how expected it is there.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct SpeciesQuery {
    /// Latitude (WGS 84).
    pub lat: Option<f64>,
    /// Longitude (WGS 84).
    pub lon: Option<f64>,
    /// Date (`YYYY-MM-DD` or RFC 3339).
    pub date: Option<String>,
}

/// A species the model knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpeciesInfo {
    /// eBird / BirdCLEF code.
    pub code: String,
    /// Scientific name.
    pub scientific_name: String,
    /// Common name.
    pub common_name: String,
    /// Aves, Amphibia, Insecta or Mammalia.
    pub class_name: String,
    /// With a location: how expected it is there, in [0, 1] (absent: range unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurrence: Option<f32>,
}

/// Answer of `GET /v1/species`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SpeciesList {
    /// The stable model whose classes these are.
    pub model_version: String,
    /// In the model's class order; with a location, expected ones first (best first), then
    /// those whose range is unknown, then those not expected there.
    pub species: Vec<SpeciesInfo>,
    /// The place the list is for, when `lat`/`lon` were given and the model knows ranges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<LocationReport>,
}

/// One licence of a model and what it covers (SPDX identifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Licence {
    /// SPDX identifier, e.g. `CC-BY-NC-SA-4.0`.
    pub id: String,
    /// What it applies to (weights, training data, a pretrained backbone, a teacher).
    pub covers: String,
}

/// What a model's licences allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LicenceStatus {
    /// Every licence allows commercial use.
    Commercial,
    /// One forbids it (served only by a server started with `--non-commercial`).
    NonCommercial,
    /// None recorded.
    Unknown,
}

/// How an ensemble combines its members' scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Blend {
    /// Weighted mean of probabilities.
    Probability,
    /// Weighted mean of per-class ranks against a reference set.
    Rank,
}

/// A loaded model version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Its members (`name@version`), in order; the model itself when it is one bundle.
    #[serde(default)]
    pub members: Vec<String>,
    /// How an ensemble blends its members; absent for one bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blend: Option<Blend>,
    /// Licences of its weights and of everything they derive from, over all members.
    #[serde(default)]
    pub licences: Vec<Licence>,
    /// What those licences allow.
    pub licence_status: LicenceStatus,
    /// Bundle directory on the server: only with a valid API key (the admin endpoints'
    /// answers, or `GET /v1/models` sent with the key), since it names the host's file system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Answer of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelsList {
    /// Stable first.
    pub models: Vec<ModelInfo>,
}

/// Body of `POST /v1/admin/models`: one of `path` or `registry_version`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FeedbackRequest {
    /// `request_id` of the identification.
    pub request_id: String,
    /// Window index in that identification.
    pub window: usize,
    /// Whether its top prediction was right.
    pub verdict: Verdict,
    /// The species it really was (a code the model knows).
    #[serde(default)]
    pub correct_code: Option<String>,
}

/// Answer of `POST /v1/feedback`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Stored {
    /// True: the entry is on disk now (fsync'd, 201). False: the same verdict on the same
    /// window was stored before (a retry, 200); nothing was added.
    pub stored: bool,
}

/// Every error: a message and a stable machine-readable kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// Stable snake_case kind (`too_large`, `overloaded`, `corrupt_stream`, …).
    pub error_type: String,
}

/// Answer of `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    /// `ok` or `ready`.
    pub status: String,
    /// Stable model, when one is loaded.
    #[serde(default)]
    pub model_version: Option<String>,
}

/// First message of a `/v1/stream` WebSocket (text).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// When the first sample was recorded, in the site's clock (`2026-12-07T06:30:00-05:00`):
    /// the model's hour priors then apply to each window at the hour it falls in. Its
    /// temporal smoothing does not apply to streams: it needs later windows, which would delay
    /// every answer.
    #[serde(default)]
    pub recorded_at: Option<String>,
}

/// The session part of a stream message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamSession {
    /// The stream's session.
    pub session_id: String,
    /// Unique species detected in the session so far.
    pub unique_species: usize,
}

/// One message per closed window of a stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StreamWindow {
    /// The window.
    pub window: WindowResult,
    /// The session so far, when the stream has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<StreamSession>,
}

/// A session as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionSummary {
    /// The client's session id.
    pub session_id: String,
    /// First request (RFC 3339 UTC).
    pub started_at: String,
    /// Latest request (RFC 3339 UTC).
    pub last_seen_at: String,
    /// Identifications recorded.
    pub requests: u64,
    /// Windows scored over them.
    pub windows: u64,
    /// Species detected at least once (the business metric).
    pub unique_species: usize,
    /// Model versions that served the session, first first.
    pub model_versions: Vec<String>,
    /// The detected species, in the order they were first heard.
    pub species: Vec<SessionSpecies>,
}

/// One species detected in a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionSpecies {
    /// Code.
    pub code: String,
    /// Scientific name.
    pub scientific_name: String,
    /// Common name.
    pub common_name: String,
    /// Taxonomic class.
    pub class_name: String,
    /// When it was first detected (RFC 3339 UTC).
    pub first_seen_at: String,
    /// Windows that scored it at or above the threshold.
    pub detections: u64,
    /// Best score seen.
    pub max_score: f32,
}

// Also the server's feedback log entry (one JSON line each, read by `silencio feedback export`).
/// A listener's verdict on one window of one identification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Feedback {
    /// `request_id` of the identification the feedback is about.
    pub request_id: String,
    /// Index of the 5 s window in that identification.
    pub window: usize,
    /// Whether the top prediction of that window was right.
    pub verdict: Verdict,
    /// The species code it really was, when the listener knows.
    #[serde(default)]
    pub correct_code: Option<String>,
    /// When the server received it (RFC 3339 UTC, set by the server).
    pub received_at: String,
}

/// An entry without its arrival time (what the client sent): two entries saying the same are
/// one verdict.
pub type Said = (String, usize, Verdict, Option<String>);

impl Feedback {
    /// What this entry says, without its arrival time.
    pub fn said(&self) -> Said {
        (
            self.request_id.clone(),
            self.window,
            self.verdict,
            self.correct_code.clone(),
        )
    }
}

/// Whether a prediction was right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The top prediction was wrong.
    Wrong,
    /// The top prediction was right.
    Right,
}

impl Verdict {
    /// The snake_case name (the `verdict` label of `silencio_feedback_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wrong => "wrong",
            Self::Right => "right",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The JSON these types write is the API's contract (names, skipped fields, renames).
    #[test]
    fn wire_json_is_pinned() {
        let r = IdentifyResponse {
            request_id: "r1".into(),
            model_version: "m@1".into(),
            windows: vec![WindowResult {
                start_s: 0.0,
                end_s: 5.0,
                species: vec![SpeciesScore {
                    code: "a".into(),
                    scientific_name: "A a".into(),
                    common_name: "Aa".into(),
                    class_name: "Aves".into(),
                    score: 0.5,
                }],
            }],
            timing_ms: Timing {
                decode: 1.0,
                queue: 2.0,
                inference: 3.0,
                total: 6.0,
            },
            location: None,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"request_id":"r1","model_version":"m@1","windows":[{"start_s":0.0,"end_s":5.0,"species":[{"code":"a","scientific_name":"A a","common_name":"Aa","class_name":"Aves","score":0.5}]}],"timing_ms":{"decode":1.0,"queue":2.0,"inference":3.0,"total":6.0}}"#
        );
        let w = StreamWindow {
            window: r.windows[0].clone(),
            session: None,
        };
        assert!(!serde_json::to_string(&w).unwrap().contains("session"));
        let m = ModelInfo {
            model_version: "m@1".into(),
            role: "stable".into(),
            share: 1.0,
            loaded_at: "t".into(),
            requests_served: 0,
            windows_inferred: 0,
            client_gone: 0,
            queued_windows: 0,
            replicas: 1,
            max_batch: 8,
            architecture: "x".into(),
            trained: false,
            members: vec!["m@1".into()],
            blend: None,
            licences: vec![Licence {
                id: "CC-BY-NC-SA-4.0".into(),
                covers: "training data".into(),
            }],
            licence_status: LicenceStatus::NonCommercial,
            path: None,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert!(!text.contains("path") && !text.contains("blend"), "{text}");
        assert!(
            text.contains(r#""licence_status":"non_commercial""#),
            "{text}"
        );
        assert_eq!(
            serde_json::to_string(&Verdict::Wrong).unwrap(),
            r#""wrong""#
        );
        let fb: FeedbackRequest =
            serde_json::from_str(r#"{"request_id":"r1","window":0,"verdict":"right"}"#).unwrap();
        assert_eq!((fb.verdict, fb.correct_code), (Verdict::Right, None));
        let e: ErrorBody =
            serde_json::from_str(r#"{"error":"full","error_type":"overloaded"}"#).unwrap();
        assert_eq!(e.error_type, "overloaded");
    }

    #[test]
    fn query_pairs_use_the_serde_names() {
        let q = IdentifyQuery {
            top_k: Some(182),
            min_score: Some(0.0),
            session_id: Some("s1".into()),
            latitude: Some(6.72),
            longitude: Some(-74.26),
            recorded_at: Some("2025-03-01".into()),
            location_mode: Some("reweight".into()),
        };
        let json = serde_json::to_value(&q).unwrap();
        let pairs = q.pairs();
        let names: Vec<&str> = pairs.iter().map(|(n, _)| *n).collect();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let (mut names_sorted, mut keys_sorted) = (names.clone(), keys);
        names_sorted.sort_unstable();
        keys_sorted.sort_unstable();
        assert_eq!(names_sorted, keys_sorted);
        assert_eq!(
            pairs,
            [
                ("top_k", "182".to_string()),
                ("min_score", "0".to_string()),
                ("session_id", "s1".to_string()),
                ("latitude", "6.72".to_string()),
                ("longitude", "-74.26".to_string()),
                ("recorded_at", "2025-03-01".to_string()),
                ("location_mode", "reweight".to_string())
            ]
        );
        assert!(IdentifyQuery::default().pairs().is_empty());
    }
}
