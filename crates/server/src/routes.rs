//! The HTTP handlers (admin ones in [`crate::admin`], the WebSocket in [`crate::stream`]).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine as _;
use bytes::Bytes;
use silencio_infer::Identification;

use crate::api::*;
use crate::auth::Caller;
use crate::config::SHORT_LANE_SAMPLES;
use crate::engine::Priority;
use crate::served::Input;
use crate::state::{AppState, LoadedModel, RecentRequest};
use crate::upload::{self, BodyKind};
use crate::{Error, Result};

/// Largest JSON body of the small endpoints (feedback, admin).
pub(crate) const SMALL_BODY: u64 = 64 * 1024;
/// Largest `top_k`.
pub const MAX_TOP_K: usize = 1000;

/// Counts and times every request under its route template (`/v1/sessions/{id}`, not the raw
/// path, so label values stay few).
pub(crate) async fn track(matched: Option<MatchedPath>, req: Request, next: Next) -> Response {
    let route = matched
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let start = Instant::now();
    let resp = next.run(req).await;
    crate::metrics::http(&route, resp.status().as_u16(), start.elapsed());
    resp
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Reads a small JSON body into `T`; bad JSON is a 400 with `{error, error_type}`.
pub(crate) async fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<T> {
    let bytes = upload::read_body(
        body,
        SMALL_BODY,
        content_length(headers),
        &upload::UploadPolicy::SMALL,
    )
    .await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// `top_k` and `min_score`, checked.
pub(crate) fn listing(top_k: Option<usize>, min_score: Option<f32>) -> Result<(usize, f32)> {
    let k = top_k.unwrap_or(5);
    if k > MAX_TOP_K {
        return Err(Error::BadRequest(format!(
            "top_k must be at most {MAX_TOP_K}"
        )));
    }
    let s = min_score.unwrap_or(0.0);
    if !(0.0..=1.0).contains(&s) {
        return Err(Error::BadRequest(format!(
            "min_score must be in [0, 1], got {s}"
        )));
    }
    Ok((k, s))
}

/// The answer's windows: the `k` best species of each with at least `min_score`.
pub(crate) fn window_results(id: &Identification, k: usize, min_score: f32) -> Vec<WindowResult> {
    id.windows
        .iter()
        .enumerate()
        .map(|(i, w)| WindowResult {
            start_s: w.start_s,
            end_s: w.end_s,
            species: id
                .top_k(i, k, min_score)
                .into_iter()
                .map(species_score)
                .collect(),
        })
        .collect()
}

fn reject_reason(e: &Error) -> Option<&'static str> {
    Some(match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "bad_audio",
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        // Counted where it happens (admission).
        _ => return None,
    })
}

/// Identify the species in a recording, per 5 s window.
///
/// The body is raw audio (`Content-Type` audio/ogg, audio/wav, audio/mpeg, audio/flac,
/// audio/mp4) or JSON with `audio_base64`.
#[utoipa::path(
    post, path = "/v1/identify", tag = "identify",
    params(IdentifyQuery),
    request_body(description = "A recording: raw audio, or JSON with audio_base64", content(
        (IdentifyJson = "application/json"),
        ("audio/ogg"), ("audio/wav"), ("audio/mpeg"), ("audio/flac"), ("audio/mp4")
    )),
    responses(
        (status = 200, description = "Species per window", body = IdentifyResponse),
        (status = 400, description = "Bad JSON, base64 or query", body = ErrorBody),
        (status = 401, description = "A session_id without the API key", body = ErrorBody),
        (status = 408, description = "Body too slow: below the minimum rate or past the deadline", body = ErrorBody),
        (status = 413, description = "Body or recording too large/long", body = ErrorBody),
        (status = 415, description = "Unsupported or mismatched media type", body = ErrorBody),
        (status = 422, description = "Corrupt or undecodable audio", body = ErrorBody),
        (status = 429, description = "Overloaded: retry after the Retry-After header", body = ErrorBody),
        (status = 503, description = "No model ready, shutting down, or past the request deadline", body = ErrorBody),
    )
)]
pub async fn identify(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    query: std::result::Result<Query<IdentifyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IdentifyResponse>> {
    let r = identify_inner(&state, caller, query, &headers, body).await;
    if let Err(e) = &r
        && let Some(reason) = reject_reason(e)
    {
        crate::metrics::rejected(reason);
    }
    r.map(Json)
}

async fn identify_inner(
    state: &AppState,
    caller: Caller,
    query: std::result::Result<Query<IdentifyQuery>, QueryRejection>,
    headers: &HeaderMap,
    body: Body,
) -> Result<IdentifyResponse> {
    let started = Instant::now();
    let Query(q) = query.map_err(|e| Error::BadRequest(e.body_text()))?;
    let (k, min_score) = listing(q.top_k, q.min_score)?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let kind = upload::body_kind(content_type)?;
    let limit = state.config().max_body_bytes;
    // The body is read before admission, under a deadline and a minimum rate: a slow or
    // stalled upload costs its own connection, never a queue slot that others need.
    let policy = state.config().upload;
    let raw = upload::read_body(body, limit, content_length(headers), &policy).await?;
    // Refuse at once, before any decoding, when the queue is full.
    let _admission = state.admit()?;
    let (audio, declared, mut session_id, mut where_when) = match kind {
        BodyKind::Audio(t) => (raw, Some(t), None, (None, None, None)),
        BodyKind::Json => {
            let j: IdentifyJson = serde_json::from_slice(&raw)
                .map_err(|e| Error::BadRequest(format!("invalid JSON body: {e}")))?;
            let audio = base64::engine::general_purpose::STANDARD
                .decode(j.audio_base64.trim())
                .map_err(|e| Error::BadRequest(format!("audio_base64 is not valid base64: {e}")))?;
            (
                Bytes::from(audio),
                None,
                j.session_id,
                (j.latitude, j.longitude, j.recorded_at),
            )
        }
    };
    // The query's place and time win over the body's, as its session does.
    if q.latitude.is_some() || q.longitude.is_some() {
        where_when = (q.latitude, q.longitude, q.recorded_at.clone());
    } else if q.recorded_at.is_some() {
        where_when.2 = q.recorded_at.clone();
    }
    let (latitude, longitude, recorded_at) = where_when;
    if q.session_id.is_some() {
        session_id = q.session_id;
    }
    if let Some(s) = &session_id {
        crate::sessions::validate_session_id(s)?;
        session_allowed(caller)?;
    }
    let media_type = declared
        .or_else(|| upload::sniff(&audio))
        .map_or("application/octet-stream", |t| t.media_type());

    let model = state.pick()?;
    let t_decode = Instant::now();
    let (info, input) = decode_upload(state, &model, audio.clone(), declared).await?;
    let decode = t_decode.elapsed();
    let priority = Priority::for_windows(input.windows());
    let scored = model.score(input, priority).await?;

    let mut id = Identification {
        model_version: model.model_version(),
        audio: Some(info),
        species: model.species().clone(),
        windows: scored.windows,
    };
    // The bundle's priors.json: the hour from `recorded_at` (a phone knows no recorder), then
    // the smoothing; before the location filter, in the facade's order.
    let ctx = recorded_at
        .as_deref()
        .map(silencio_infer::RecordingContext::from_timestamp)
        .unwrap_or_default();
    model.post_process(&mut id, &ctx);
    let location = apply_location(
        state,
        &model,
        &mut id,
        latitude,
        longitude,
        recorded_at.as_deref(),
        q.location_mode.as_deref(),
    )?;
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    state.remember(
        &request_id,
        RecentRequest {
            model_version: id.model_version.clone(),
            windows: id.windows.len(),
            species: id.species.clone(),
        },
    );
    if let Some(s) = &session_id {
        state.sessions().record(s, &id.model_version, &id);
    }
    let resp = IdentifyResponse {
        request_id,
        model_version: id.model_version.clone(),
        windows: window_results(&id, k, min_score),
        timing_ms: Timing {
            decode: ms(decode),
            queue: ms(scored.queue),
            inference: ms(scored.inference),
            total: ms(started.elapsed()),
        },
        location,
    };
    maybe_sample(state, &resp, media_type, audio);
    Ok(resp)
}

/// Recording into a session needs the key: sessions are the operator's data (a guide's outing),
/// and without a key anyone could create sessions by the thousand and evict the live ones
/// (10 000 fresh ids did in 128 s).
pub(crate) fn session_allowed(caller: Caller) -> Result<()> {
    if caller.keyed {
        Ok(())
    } else {
        Err(Error::Unauthorized(
            "a session_id needs the API key (`Authorization: Bearer <key>` or `X-API-Key`); \
             identify without session_id is open"
                .into(),
        ))
    }
}

/// Decodes an upload into the model's features in one of two lanes. Every upload starts in
/// the short lane, within [`SHORT_LANE_SAMPLES`]; one that declares or decodes to more is
/// moved to the long lane (its own permits) and decoded there within the whole budget. Short
/// clips so never queue behind long or costly uploads (four clients sending 9.6 KB FLACs that
/// declared 119 s at 384 kHz took others' p50 from 28 ms to 5.2 s when decoding was one
/// first-come queue). The wasted work of a move is at most the short lane's budget, and none
/// when the header states the length.
async fn decode_upload(
    state: &AppState,
    model: &Arc<LoadedModel>,
    audio: Bytes,
    declared: Option<upload::AudioType>,
) -> Result<(silencio_audio::AudioInfo, Input)> {
    let max_s = state.config().max_duration_s;
    let budget = state.config().max_input_samples();
    let decode = |bytes: Bytes, max_samples: u64| {
        let model = model.clone();
        tokio::task::spawn_blocking(move || {
            upload::vet(&bytes, declared)?;
            model.prepare_bytes(bytes.to_vec(), max_s, max_samples)
        })
    };
    let gone = |_| Error::Unavailable("shutting down".into());
    let failed = |e| Error::Internal(format!("decoder task failed: {e}"));
    let short = SHORT_LANE_SAMPLES.min(budget);
    let first = {
        let _permit = state.decoders().short.acquire().await.map_err(gone)?;
        decode(audio.clone(), short).await.map_err(failed)?
    };
    match first {
        Err(Error::Audio(silencio_audio::Error::TooManySamples { .. })) if budget > short => {
            tracing::debug!("upload beyond the short lane's budget: decoding in the long lane");
            let _permit = state.decoders().long.acquire().await.map_err(gone)?;
            decode(audio, budget).await.map_err(failed)?
        }
        other => other,
    }
}

/// Saves the request for labelling when the sampler draws it; off the request's path, and a
/// failure is only logged.
fn maybe_sample(state: &AppState, resp: &IdentifyResponse, media_type: &'static str, audio: Bytes) {
    if !state.sampler().should_sample() {
        return;
    }
    let prediction = match serde_json::to_value(resp) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "sample not saved: prediction does not serialise");
            return;
        }
    };
    let state = state.clone();
    let request_id = resp.request_id.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = state
            .sampler()
            .save(&request_id, media_type, &audio, &prediction)
        {
            tracing::warn!(request_id, error = %e, kind = e.kind(), "sample not saved");
        }
    });
}

fn stable(state: &AppState) -> Result<Arc<LoadedModel>> {
    state
        .routing()
        .stable
        .clone()
        .ok_or_else(|| Error::Unavailable("no model loaded yet; see /readyz".into()))
}

/// The species the stable model knows, in class order; with `lat` and `lon` (and `date`),
/// how expected each is there: expected ones first (best first), then those whose range is
/// unknown, then those not expected.
#[utoipa::path(get, path = "/v1/species", tag = "identify", params(SpeciesQuery), responses(
    (status = 200, description = "The taxonomy", body = SpeciesList),
    (status = 400, description = "Bad coordinates or date", body = ErrorBody),
    (status = 503, description = "No model loaded yet", body = ErrorBody),
))]
pub async fn species(
    State(state): State<AppState>,
    query: std::result::Result<Query<SpeciesQuery>, QueryRejection>,
) -> Result<Json<SpeciesList>> {
    use silencio_infer::location::Occurrence;
    let Query(q) = query.map_err(|e| Error::BadRequest(e.body_text()))?;
    let m = stable(&state)?;
    let place = located(q.lat, q.lon, q.date.as_deref())?;
    let info = |s: &silencio_infer::Species, occurrence: Option<f32>| SpeciesInfo {
        code: s.code.clone(),
        scientific_name: s.scientific_name.clone(),
        common_name: s.common_name.clone(),
        class_name: s.class_name.clone(),
        occurrence,
    };
    let (species, location) = match (place, m.location()) {
        (Some(query), Some(filter)) => {
            let mode = state.config().location_mode;
            let (weights, outcome) = filter.weights(m.species(), &query, mode)?;
            let mut rows: Vec<(u8, f32, SpeciesInfo)> = m
                .species()
                .iter()
                .zip(&weights)
                .map(|(s, w)| match filter.occurrence(&s.code, &query) {
                    Occurrence::Known(o) if *w > 0.0 && !outcome.removed.contains(&s.code) => {
                        (0, o, info(s, Some(o)))
                    }
                    Occurrence::Known(o) => (2, o, info(s, Some(o))),
                    Occurrence::Unknown => (1, 0.0, info(s, None)),
                })
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)));
            let report = location_report(&outcome, LocationSource::Request);
            (rows.into_iter().map(|r| r.2).collect(), Some(report))
        }
        _ => (m.species().iter().map(|s| info(s, None)).collect(), None),
    };
    Ok(Json(SpeciesList {
        model_version: m.model_version(),
        species,
        location,
    }))
}

/// A place from optional coordinates and date; both coordinates or none.
fn located(
    lat: Option<f64>,
    lon: Option<f64>,
    date: Option<&str>,
) -> Result<Option<silencio_infer::location::LocationQuery>> {
    use silencio_infer::location::{LocationQuery, Place, Week};
    let bad = |e: silencio_infer::Error| Error::BadRequest(e.to_string());
    match (lat, lon) {
        (Some(lat), Some(lon)) => Ok(Some(LocationQuery {
            place: Place::new(lat, lon).map_err(bad)?,
            week: date.map(Week::from_date).transpose().map_err(bad)?,
        })),
        (None, None) => Ok(None),
        _ => Err(Error::BadRequest(
            "give both latitude and longitude, or neither".into(),
        )),
    }
}

/// The wire form of what the filter did.
fn location_report(
    o: &silencio_infer::location::FilterOutcome,
    source: LocationSource,
) -> LocationReport {
    LocationReport {
        mode: o.mode.to_string(),
        latitude: o.place.latitude(),
        longitude: o.place.longitude(),
        week: o.week.map(|w| w.number()),
        source,
        removed: o.removed.clone(),
        unknown: o.unknown,
    }
}

/// Applies the location filter to `id`: the request's place (else the server's default) with
/// the request's mode (else the server's; `off` turns it off). Nothing happens when the model
/// records no species ranges.
pub(crate) fn apply_location(
    state: &AppState,
    model: &LoadedModel,
    id: &mut Identification,
    latitude: Option<f64>,
    longitude: Option<f64>,
    recorded_at: Option<&str>,
    mode: Option<&str>,
) -> Result<Option<LocationReport>> {
    use silencio_infer::location::{FilterMode, LocationQuery};
    let requested = located(latitude, longitude, recorded_at)?;
    let mode = match mode.map(str::trim) {
        Some(m) if m.eq_ignore_ascii_case("off") => return Ok(None),
        Some(m) => m
            .parse::<FilterMode>()
            .map_err(|e| Error::BadRequest(e.to_string()))?,
        None => state.config().location_mode,
    };
    let Some(filter) = model.location() else {
        return Ok(None);
    };
    let (query, source) = match requested {
        Some(q) => (q, LocationSource::Request),
        None => match state.config().location {
            Some(place) => (LocationQuery::from(place), LocationSource::ServerDefault),
            None => return Ok(None),
        },
    };
    let outcome = filter.apply_identification(id, &query, mode)?;
    Ok(Some(location_report(&outcome, source)))
}

pub(crate) fn model_info(m: &LoadedModel, role: &str, share: f64, with_path: bool) -> ModelInfo {
    use std::sync::atomic::Ordering::Relaxed;
    let engines = m.engines();
    let sum = |f: &dyn Fn(&crate::engine::Engine) -> u64| engines.iter().map(|e| f(e)).sum();
    let first = engines.first();
    ModelInfo {
        model_version: m.model_version(),
        role: role.into(),
        share,
        loaded_at: m.loaded_at().to_string(),
        requests_served: m.requests_served(),
        windows_inferred: sum(&|e| e.stats().windows.load(Relaxed)),
        client_gone: sum(&|e| e.stats().client_gone.load(Relaxed)),
        queued_windows: engines.iter().map(|e| e.queued()).sum(),
        replicas: first.map_or(0, |e| e.config().replicas),
        max_batch: first.map_or(0, |e| e.config().max_batch),
        architecture: m.architecture().to_string(),
        trained: m.trained(),
        members: m.members(),
        blend: m.blend().map(crate::api::blend),
        licences: m.licences().iter().map(crate::api::licence).collect(),
        licence_status: crate::api::licence_status(silencio_infer::LicenceStatus::of(m.licences())),
        path: with_path.then(|| m.source().to_string()),
    }
}

/// The loaded versions; `with_path`: the bundle directories too (callers that checked the API
/// key).
pub(crate) fn models_list(state: &AppState, with_path: bool) -> ModelsList {
    let r = state.routing();
    let canary_share = r.canary.as_ref().map_or(0.0, |c| c.share);
    let mut models = Vec::new();
    if let Some(s) = &r.stable {
        models.push(model_info(s, "stable", 1.0 - canary_share, with_path));
    }
    if let Some(c) = &r.canary {
        models.push(model_info(&c.model, "canary", c.share, with_path));
    }
    if let Some(p) = &r.previous {
        models.push(model_info(p, "previous", 0.0, with_path));
    }
    ModelsList { models }
}

/// Loaded model versions, their roles, traffic shares and counters; with the API key, their
/// bundle directories too.
#[utoipa::path(get, path = "/v1/models", tag = "models", responses(
    (status = 200, description = "Loaded versions", body = ModelsList),
))]
pub async fn models(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<ModelsList> {
    Json(models_list(&state, caller.keyed))
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses(
    (status = 200, description = "Up", body = Health),
))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        model_version: None,
    })
}

/// Ready for traffic: a model is loaded and warmed up by a real forward pass, and the server
/// is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses(
    (status = 200, description = "Ready", body = Health),
    (status = 503, description = "Loading, warming up or shutting down", body = ErrorBody),
))]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Health>> {
    if state.is_shutting_down() {
        return Err(Error::Unavailable("shutting down".into()));
    }
    let m = stable(&state)?;
    Ok(Json(Health {
        status: "ready".into(),
        model_version: Some(m.model_version()),
    }))
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "ops", responses(
    (status = 200, description = "Prometheus text format", content_type = "text/plain"),
))]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let h = state.metrics();
    h.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        h.render(),
    )
        .into_response()
}

/// The species detected in one outing (session); API key required.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    params(("id" = String, Path, description = "Session id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The session", body = crate::sessions::SessionSummary),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown or expired session", body = ErrorBody),
    )
)]
pub async fn session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<crate::sessions::SessionSummary>> {
    crate::sessions::validate_session_id(&id)?;
    state
        .sessions()
        .get(&id)
        .map(Json)
        .ok_or_else(|| Error::NotFound(format!("no session {id:?} (unknown or expired)")))
}

/// Feedback on one window of an identification (API key required); stored durably before
/// the 201.
#[utoipa::path(post, path = "/v1/feedback", tag = "feedback",
    request_body = FeedbackRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Stored (fsync'd)", body = Stored),
        (status = 200, description = "Stored before (a retry): nothing added", body = Stored),
        (status = 400, description = "Invalid JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 404, description = "Unknown (or too old) request_id", body = ErrorBody),
        (status = 422, description = "Window out of range or unknown species code", body = ErrorBody),
    )
)]
pub async fn feedback(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Stored>)> {
    let req: FeedbackRequest = json_body(&headers, body).await?;
    let recent = state.recent(&req.request_id).ok_or_else(|| {
        Error::NotFound(format!(
            "no recent request {:?} (unknown, or older than the last {} requests)",
            req.request_id,
            state.config().recent_requests
        ))
    })?;
    if req.window >= recent.windows {
        return Err(Error::Invalid(format!(
            "window {} is out of range: request {} had {} window(s)",
            req.window, req.request_id, recent.windows
        )));
    }
    if let Some(code) = &req.correct_code
        && !recent.species.iter().any(|s| &s.code == code)
    {
        return Err(Error::Invalid(format!(
            "correct_code {code:?} is not a species the model knows (see /v1/species)"
        )));
    }
    let fb = crate::feedback::Feedback {
        request_id: req.request_id,
        window: req.window,
        verdict: req.verdict,
        correct_code: req.correct_code,
        received_at: crate::feedback::now_rfc3339(),
    };
    let st = state.clone();
    let stored = tokio::task::spawn_blocking(move || st.feedback().append(&fb))
        .await
        .map_err(|e| Error::Internal(format!("feedback task failed: {e}")))??;
    // A retry of feedback already stored: 200 and `stored: false`, nothing counted twice.
    let status = if stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(Stored { stored })))
}
