//! "Tour guide mode": a WebSocket that takes live PCM and answers each 5 s window as it
//! closes.
//!
//! Protocol: the client's first message is text JSON [`StreamStart`] (`sample_rate`,
//! `encoding` `pcm_s16le`|`pcm_f32le`, optional `session_id` (with the API key on the upgrade
//! request), `top_k`, `min_score`, `recorded_at` for the model's hour priors); then
//! binary frames of mono PCM in any sizes (a sample may straddle frames). For every completed
//! window the server sends one text message [`StreamWindow`]; a text `{"end": true}` flushes
//! the last partial window (if it holds at least the recipe's minimum tail, 1 s) and closes.
//! Errors are text messages `{error, error_type}`; a fatal one is followed by a close.
//!
//! Each window is resampled on its own (one resampler per stream, reset between windows, exact
//! length), so the memory of a stream is one window, however long the outing.
//!
//! Limits, so that one client cannot take what others need: a message is at most 4 MiB; audio
//! and messages arrive no faster than [`StreamRate`] allows (default: 2× real time after a
//! 30 s burst, a phone catching up after a dropout; 100 messages a second after a burst of
//! 200); beyond either, the stream gets a `rate_limited` error and is closed. Plus the idle
//! timeout and the cap on open streams (server config).

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use silencio_audio::resample::StreamResampler;
use silencio_infer::{Identification, WindowScores};

use crate::api::{StreamSession, StreamStart, StreamWindow};
use crate::auth::Caller;
use crate::engine::Priority;
use crate::routes::{listing, session_allowed, window_results};
use crate::state::{AppState, LoadedModel};
use crate::{Error, Result};

/// Sample rates a stream may declare: the rates audio hardware, phones and field recorders
/// (AudioMoth's 250 kHz) record at. Any rate
/// is not accepted: a resampler's cost grows with how badly the two rates divide (383 987 Hz
/// built a 383 987-point FFT per window, ~40 MB each), and a stream rebuilds it at every window.
pub const STREAM_RATES: [u32; 15] = [
    8_000, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 88_200, 96_000, 176_400,
    192_000, 250_000, 352_800, 384_000,
];

/// How fast a stream may send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamRate {
    /// Audio may arrive this many times faster than real time, on average…
    pub audio_speed: f64,
    /// …after a burst of this many seconds of audio.
    pub audio_burst_s: f64,
    /// Messages a second, on average (a phone sends 10–50: 20–100 ms buffers)…
    pub messages_per_s: f64,
    /// …after a burst of this many.
    pub message_burst: f64,
}

impl Default for StreamRate {
    fn default() -> Self {
        Self {
            audio_speed: 2.0,
            audio_burst_s: 30.0,
            messages_per_s: 100.0,
            message_burst: 200.0,
        }
    }
}

/// Largest WebSocket message accepted.
const MAX_MESSAGE: usize = 4 << 20;
/// How long a client may take to send its start message.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Open a tour-guide stream (WebSocket upgrade).
#[utoipa::path(get, path = "/v1/stream", tag = "identify",
    responses(
        (status = 101, description = "WebSocket: first a text StreamStart, then binary mono PCM; \
            one text StreamWindow per closed 5 s window; text {\"end\": true} flushes and closes"),
        (status = 429, description = "Too many open streams", body = crate::api::ErrorBody),
        (status = 503, description = "No model ready", body = crate::api::ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    ws: WebSocketUpgrade,
) -> Response {
    let model = match state.pick() {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    // Counted before the upgrade, so that a client over the cap gets a plain 429.
    let open = match state.stream_opened() {
        Ok(g) => g,
        Err(e) => return e.into_response(),
    };
    ws.max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| run(state, caller, model, socket, open))
}

fn error_message(e: &Error) -> Message {
    Message::Text(
        serde_json::json!({ "error": e.to_string(), "error_type": e.kind() })
            .to_string()
            .into(),
    )
}

async fn run(
    state: AppState,
    caller: Caller,
    model: Arc<LoadedModel>,
    mut socket: WebSocket,
    _open: crate::state::StreamGuard,
) {
    let mut shutdown = state.shutdown_signal();
    let idle = state.config().stream_idle;
    let start = match tokio::time::timeout(START_TIMEOUT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<StreamStart>(&t)
            .map_err(|e| Error::BadRequest(format!("invalid start message: {e}"))),
        Ok(Some(Ok(_))) => Err(Error::BadRequest(
            "the first message must be the text JSON start message".into(),
        )),
        Ok(_) => return,
        Err(_) => Err(Error::BadRequest("no start message within 30 s".into())),
    };
    let mut session = match start.and_then(|s| Session::new(&state, caller, model, s)) {
        Ok(s) => s,
        Err(e) => return fail(socket, &e).await,
    };
    loop {
        let msg = tokio::select! {
            m = tokio::time::timeout(idle, socket.recv()) => match m {
                Ok(m) => m,
                Err(_) => {
                    // Idle: answer what was heard, say why, close (an open stream holds
                    // memory and a slot of `max_streams`).
                    let _ = session.flush(&mut socket).await;
                    let e = Error::Timeout(format!("no message for {} s", idle.as_secs()));
                    return fail(socket, &e).await;
                }
            },
            _ = until_shutdown(&mut shutdown) => {
                // Draining: answer what was heard, then close.
                let _ = session.flush(&mut socket).await;
                return close(socket).await;
            }
        };
        let step = match msg {
            Some(Ok(_)) if !session.messages.take(1.0) => Err(Error::RateLimited(format!(
                "more than {} messages a second: send larger buffers",
                state.config().stream_rate.messages_per_s
            ))),
            Some(Ok(Message::Binary(b))) => session.push_bytes(&b, &mut socket).await,
            Some(Ok(Message::Text(t))) => {
                let end = serde_json::from_str::<serde_json::Value>(&t)
                    .ok()
                    .and_then(|v| v.get("end").and_then(|e| e.as_bool()))
                    .unwrap_or(false);
                if end {
                    let _ = session.flush(&mut socket).await;
                    return close(socket).await;
                }
                Err(Error::BadRequest(
                    "text messages after the start must be {\"end\": true}".into(),
                ))
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
        };
        if let Err(e) = step {
            return fail(socket, &e).await;
        }
    }
}

/// How long a closing stream waits for the client's close frame.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sends `e` and closes.
async fn fail(mut socket: WebSocket, e: &Error) {
    let _ = socket.send(error_message(e)).await;
    close(socket).await;
}

/// Closes the stream the WebSocket way: a close frame, then what the client still sends is
/// read and dropped until its close frame (at most [`CLOSE_WAIT`]). Closing the TCP connection
/// with the client's frames unread would reset it, and a client still sending (one being
/// rate-limited) would lose the error message that says why.
async fn close(mut socket: WebSocket) {
    let _ = socket.send(Message::Close(None)).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn until_shutdown(rx: &mut tokio::sync::watch::Receiver<bool>) {
    if rx.wait_for(|s| *s).await.is_err() {
        // The state (and its sender) is gone: never resolve.
        std::future::pending::<()>().await;
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    S16,
    F32,
}

impl Encoding {
    fn bytes(self) -> usize {
        match self {
            Self::S16 => 2,
            Self::F32 => 4,
        }
    }
}

/// A token bucket: `take` spends when there is enough, refilled at `rate` per second up to
/// `burst`.
struct Bucket {
    level: f64,
    burst: f64,
    rate: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            level: burst,
            burst,
            rate,
            at: tokio::time::Instant::now(),
        }
    }

    fn take(&mut self, n: f64) -> bool {
        let now = tokio::time::Instant::now();
        self.level = (self.level + self.rate * (now - self.at).as_secs_f64()).min(self.burst);
        self.at = now;
        if self.level >= n {
            self.level -= n;
            true
        } else {
            false
        }
    }
}

struct Session {
    state: AppState,
    model: Arc<LoadedModel>,
    id: Option<String>,
    /// Seconds of audio the client may still send now.
    audio: Bucket,
    /// Messages the client may still send now.
    messages: Bucket,
    top_k: usize,
    min_score: f32,
    encoding: Encoding,
    in_rate: u32,
    /// Input samples per window.
    window_in: usize,
    min_tail_in: usize,
    /// Samples of the model's rate per window.
    window_out: usize,
    resampler: StreamResampler,
    in_window: usize,
    index: usize,
    leftover: Vec<u8>,
    /// The start's `recorded_at`: window `i`'s hour for the priors.
    recorded_at: Option<String>,
}

impl Session {
    fn new(
        state: &AppState,
        caller: Caller,
        model: Arc<LoadedModel>,
        start: StreamStart,
    ) -> Result<Self> {
        if let Some(id) = &start.session_id {
            crate::sessions::validate_session_id(id)?;
            session_allowed(caller)?;
        }
        let (top_k, min_score) = listing(start.top_k, start.min_score)?;
        if let Some(t) = &start.recorded_at
            && silencio_infer::RecordingContext::from_timestamp(t)
                .hour
                .is_none()
        {
            return Err(Error::BadRequest(format!(
                "recorded_at {t:?}: give the site's clock time of the first sample, e.g. \
                 2026-12-07T06:30:00-05:00"
            )));
        }
        let encoding = match start.encoding.as_str() {
            "pcm_s16le" => Encoding::S16,
            "pcm_f32le" => Encoding::F32,
            other => {
                return Err(Error::BadRequest(format!(
                    "encoding {other:?}: use pcm_s16le or pcm_f32le"
                )));
            }
        };
        if !STREAM_RATES.contains(&start.sample_rate) {
            return Err(Error::BadRequest(format!(
                "sample_rate {} Hz: use one of {STREAM_RATES:?}",
                start.sample_rate
            )));
        }
        let window = model.window();
        let window_in = window.length_samples(start.sample_rate);
        let min_tail_in = (window.min_tail_s * f64::from(start.sample_rate)).round() as usize;
        let window_out = window.length_samples(model.stream_rate());
        let resampler = StreamResampler::new(start.sample_rate, model.stream_rate())?;
        let rate = state.config().stream_rate;
        Ok(Self {
            state: state.clone(),
            id: start.session_id,
            audio: Bucket::new(rate.audio_speed, rate.audio_burst_s),
            messages: Bucket::new(rate.messages_per_s, rate.message_burst),
            top_k,
            min_score,
            encoding,
            in_rate: start.sample_rate,
            window_in,
            min_tail_in: min_tail_in.max(1),
            window_out,
            resampler,
            in_window: 0,
            index: 0,
            leftover: Vec::new(),
            recorded_at: start.recorded_at,
            model,
        })
    }

    fn decode(&mut self, bytes: &[u8]) -> Result<Vec<f32>> {
        let width = self.encoding.bytes();
        let mut buf = std::mem::take(&mut self.leftover);
        buf.extend_from_slice(bytes);
        let whole = buf.len() / width * width;
        let mut out = Vec::with_capacity(whole / width);
        for c in buf[..whole].chunks_exact(width) {
            let v = match self.encoding {
                Encoding::S16 => f32::from(i16::from_le_bytes([c[0], c[1]])) / 32_768.0,
                Encoding::F32 => f32::from_le_bytes([c[0], c[1], c[2], c[3]]),
            };
            if !v.is_finite() {
                return Err(silencio_audio::Error::NonFinite {
                    frame: (self.index * self.window_in + self.in_window + out.len()) as u64,
                }
                .into());
            }
            out.push(v);
        }
        self.leftover = buf[whole..].to_vec();
        Ok(out)
    }

    async fn push_bytes(&mut self, bytes: &[u8], socket: &mut WebSocket) -> Result<()> {
        let seconds = (bytes.len() / self.encoding.bytes()) as f64 / f64::from(self.in_rate);
        if !self.audio.take(seconds) {
            let r = self.state.config().stream_rate;
            return Err(Error::RateLimited(format!(
                "audio arrives faster than {}× real time (after a {} s burst): stream it live, \
                 or upload a recording to /v1/identify",
                r.audio_speed, r.audio_burst_s
            )));
        }
        let samples = self.decode(bytes)?;
        let mut rest = &samples[..];
        while !rest.is_empty() {
            let take = (self.window_in - self.in_window).min(rest.len());
            self.resampler.push(&rest[..take])?;
            self.in_window += take;
            rest = &rest[take..];
            if self.in_window == self.window_in {
                self.close_window(socket).await?;
            }
        }
        Ok(())
    }

    /// Sends the partial window if it holds enough audio.
    async fn flush(&mut self, socket: &mut WebSocket) -> Result<()> {
        if self.in_window >= self.min_tail_in {
            self.close_window(socket).await?;
        }
        Ok(())
    }

    async fn close_window(&mut self, socket: &mut WebSocket) -> Result<()> {
        let samples = self.resampler.take()?;
        self.in_window = 0;
        let index = self.index;
        self.index += 1;
        let msg = match self.score(samples, index).await {
            Ok(m) => serde_json::to_string(&m)
                .map_err(|e| Error::Internal(format!("serialise a window: {e}")))?,
            // Overload drops this window, not the stream.
            Err(e @ Error::Overloaded { .. }) => {
                let _ = socket.send(error_message(&e)).await;
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        socket
            .send(Message::Text(msg.into()))
            .await
            .map_err(|e| Error::BadRequest(format!("client gone: {e}")))
    }

    async fn score(&self, mut samples: Vec<f32>, index: usize) -> Result<StreamWindow> {
        // A stream closed by the shutdown still gets its last window.
        let _admission = if self.state.is_shutting_down() {
            self.state.admit_draining()?
        } else {
            self.state.admit()?
        };
        let model = self.model.clone();
        samples.truncate(self.window_out);
        let input = tokio::task::spawn_blocking(move || model.prepare_window(samples, index))
            .await
            .map_err(|e| Error::Internal(format!("feature task failed: {e}")))??;
        let scored = self.model.score(input, Priority::High).await?;
        let length_s = self.model.window().length_s;
        let start_s = index as f64 * length_s;
        let [w] = <[WindowScores; 1]>::try_from(scored.windows)
            .map_err(|w| Error::Internal(format!("{} windows for one stream window", w.len())))?;
        let mut id = Identification {
            model_version: self.model.model_version(),
            audio: None,
            species: self.model.species().clone(),
            windows: vec![WindowScores {
                start_s,
                end_s: start_s + length_s,
                ..w
            }],
        };
        // The hour priors at the hour this window falls in, before the location filter as for
        // uploads (no smoothing: it needs later windows).
        if let Some(t) = &self.recorded_at {
            let ctx = silencio_infer::RecordingContext::from_timestamp_after(t, start_s);
            self.model.apply_priors(&mut id, &ctx);
        }
        // A guide's stream is heard where the server stands: its default place applies.
        crate::routes::apply_location(&self.state, &self.model, &mut id, None, None, None, None)?;
        let session = self.id.as_ref().map(|sid| {
            let sessions = self.state.sessions();
            sessions.record(sid, &id.model_version, &id);
            StreamSession {
                session_id: sid.clone(),
                unique_species: sessions.get(sid).map_or(0, |s| s.unique_species),
            }
        });
        let window = window_results(&id, self.top_k, self.min_score)
            .into_iter()
            .next()
            .ok_or_else(|| Error::Internal("no scores for the window".into()))?;
        Ok(StreamWindow { window, session })
    }
}
