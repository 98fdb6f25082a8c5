//! One upload and what came of it.

use std::time::{Duration, Instant};

use bytes::Bytes;
use silencio_api::{ErrorBody, IdentifyResponse};

use crate::clips::Clip;

/// Bytes per chunk when a mobile upload is streamed slowly.
pub const SLOW_CHUNK_BYTES: usize = 16 * 1024;
/// Pause before each chunk of a slow upload (16 KiB / 20 ms ≈ 6.5 Mbit/s, a phone's uplink).
pub const SLOW_CHUNK_INTERVAL: Duration = Duration::from_millis(20);

/// The server's `timing_ms` of a 200 answer (the API's own type, from `silencio-api`).
pub type ServerTiming = silencio_api::Timing;

/// What one request came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 200 with a well-formed identification.
    Ok {
        /// From sending the first byte to reading the last byte of the answer.
        latency: Duration,
        /// `model_version` of the answer.
        model_version: String,
        /// Number of 5 s windows answered.
        windows: usize,
        /// The server's own timing, when sent.
        timing: Option<ServerTiming>,
    },
    /// Any other HTTP status (429 included), with the body's `error_type` when it has one.
    Status {
        /// HTTP status code.
        code: u16,
        /// Until the answer was read.
        latency: Duration,
        /// `error_type` of a `{error, error_type}` body (or `bad_response` for a 2xx whose
        /// body is not an identification).
        error_type: Option<String>,
    },
    /// No HTTP answer: connection refused or reset, timeout, body read failure.
    Transport {
        /// `timeout`, `connect`, `body` or `request`.
        kind: &'static str,
        /// The error with its causes (`error sending request: connection reset…`).
        message: String,
    },
    /// A mobile upload this client dropped midway on purpose.
    Aborted {
        /// Body bytes handed to the connection before the drop.
        sent_bytes: usize,
    },
}

fn transport(e: &reqwest::Error) -> Outcome {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    // reqwest's own message names the URL (one per session id) and little else; the cause
    // (reset, refused, closed early) is in the chain.
    let mut causes = Vec::new();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        causes.push(c.to_string());
        src = c.source();
    }
    let message = if causes.is_empty() {
        e.to_string()
    } else {
        causes.join(": ")
    };
    Outcome::Transport { kind, message }
}

/// Upload `clip` to `url` and classify the answer. With `abort_at = Some(n)` the body is
/// streamed in [`SLOW_CHUNK_BYTES`] chunks every [`SLOW_CHUNK_INTERVAL`] and the request is
/// dropped (its connection closed) once at least `n` bytes were handed over.
pub async fn upload(
    client: &reqwest::Client,
    url: &str,
    clip: &Clip,
    timeout: Duration,
    abort_at: Option<usize>,
) -> Outcome {
    let start = Instant::now();
    let req = client
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, clip.content_type)
        .timeout(timeout);
    let Some(abort_at) = abort_at else {
        return finish(req.body(clip.body.clone()).send().await, start).await;
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<usize>();
    let body = reqwest::Body::wrap_stream(slow_stream(clip.body.clone(), abort_at, tx));
    let send = req.body(body).send();
    tokio::select! {
        // The server may answer before we abort (e.g. 413 or 429 on the headers alone).
        r = send => finish(r, start).await,
        sent = rx => Outcome::Aborted { sent_bytes: sent.unwrap_or(0) },
    }
}

/// The body in chunks with a pause before each; once `abort_at` bytes were taken by the
/// connection (it polls for the next chunk) the stream reports that and never ends.
fn slow_stream(
    body: Bytes,
    abort_at: usize,
    tx: tokio::sync::oneshot::Sender<usize>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures_util::stream::unfold((0usize, Some(tx)), move |(sent, tx)| {
        let body = body.clone();
        async move {
            if sent >= abort_at || sent >= body.len() {
                if let Some(tx) = tx {
                    let _ = tx.send(sent);
                }
                // Hold the request open until the caller drops it.
                std::future::pending::<()>().await;
                return None;
            }
            tokio::time::sleep(SLOW_CHUNK_INTERVAL).await;
            let end = (sent + SLOW_CHUNK_BYTES).min(body.len());
            Some((Ok(body.slice(sent..end)), (end, tx)))
        }
    })
}

async fn finish(r: Result<reqwest::Response, reqwest::Error>, start: Instant) -> Outcome {
    let resp = match r {
        Ok(r) => r,
        Err(e) => {
            return transport(&e);
        }
    };
    let code = resp.status().as_u16();
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => {
            return transport(&e);
        }
    };
    let latency = start.elapsed();
    if code == 200
        && let Ok(a) = serde_json::from_slice::<IdentifyResponse>(&body)
    {
        return Outcome::Ok {
            latency,
            model_version: a.model_version,
            windows: a.windows.len(),
            timing: Some(a.timing_ms),
        };
    }
    let error_type = if (200..300).contains(&code) {
        Some("bad_response".to_string())
    } else {
        serde_json::from_slice::<ErrorBody>(&body)
            .ok()
            .map(|e| e.error_type)
    };
    Outcome::Status {
        code,
        latency,
        error_type,
    }
}
