//! Routes: the page and its vendored assets, the JSON API, the original audio files and the
//! evaluation report pages.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::json;

use crate::error::Error;
use crate::{Dashboard, registry, report};

const INDEX_HTML: &str = include_str!("../assets/index.html");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard.css");
const UPLOT_JS: &str = include_str!("../assets/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uPlot.min.css");
const UPLOT_LICENSE: &str = include_str!("../assets/uPlot.LICENSE");

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::InvalidOption(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = json!({"error": self.to_string(), "error_type": self.kind()});
        (status, no_store(), Json(body)).into_response()
    }
}

fn no_store() -> [(header::HeaderName, &'static str); 1] {
    [(header::CACHE_CONTROL, "no-store")]
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The dashboard's router (tests drive it with `tower::ServiceExt::oneshot`, no socket).
pub fn app(state: Arc<Dashboard>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/assets/dashboard.js",
            get(|| async { asset("text/javascript; charset=utf-8", DASHBOARD_JS) }),
        )
        .route(
            "/assets/dashboard.css",
            get(|| async { asset("text/css; charset=utf-8", DASHBOARD_CSS) }),
        )
        .route(
            "/assets/uPlot.iife.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", UPLOT_JS) }),
        )
        .route(
            "/assets/uPlot.min.css",
            get(|| async { asset("text/css; charset=utf-8", UPLOT_CSS) }),
        )
        .route(
            "/assets/uPlot.LICENSE",
            get(|| async { asset("text/plain; charset=utf-8", UPLOT_LICENSE) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/dataset", get(api_dataset))
        .route("/api/clips", get(api_clips))
        .route("/api/report", get(api_report))
        .route("/api/models", get(api_models))
        .route("/api/serving", get(api_serving))
        .route("/audio/{*file}", get(audio))
        .route("/report/{set}", get(report_page))
        .with_state(state)
}

async fn api_dataset(State(s): State<Arc<Dashboard>>) -> Response {
    (no_store(), Json(s.dataset.summary())).into_response()
}

async fn api_clips(State(s): State<Arc<Dashboard>>) -> Result<Response, Error> {
    let clips = s.clips().await?;
    Ok((no_store(), Json(clips.as_ref().clone())).into_response())
}

async fn api_report(State(s): State<Arc<Dashboard>>) -> Result<Response, Error> {
    let runs = s.config.runs.clone();
    let r = tokio::task::spawn_blocking(move || report::latest(&runs))
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
    Ok((no_store(), Json(r)).into_response())
}

async fn api_models(State(s): State<Arc<Dashboard>>) -> Result<Response, Error> {
    let root = s.config.registry.clone();
    let r = tokio::task::spawn_blocking(move || registry::list(&root))
        .await
        .map_err(|e| Error::Task(e.to_string()))?;
    Ok((no_store(), Json(r)).into_response())
}

async fn api_serving(State(s): State<Arc<Dashboard>>) -> Response {
    (no_store(), Json(s.serving.snapshot().await)).into_response()
}

async fn report_page(
    State(s): State<Arc<Dashboard>>,
    UrlPath(set): UrlPath<String>,
) -> Result<Response, Error> {
    let runs = s.config.runs.clone();
    let (_, body) = tokio::task::spawn_blocking(move || report::html_page(&runs, &set))
        .await
        .map_err(|e| Error::Task(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

fn audio_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "ogg" | "oga" => "audio/ogg",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "flac" => "audio/flac",
        "m4a" | "mp4" => "audio/mp4",
        _ => "application/octet-stream",
    }
}

/// A single `bytes=` range of a body of `len` bytes, as `start..end` (end exclusive);
/// `Err(())` when unsatisfiable, `Ok(None)` when absent or not a single byte range (then the
/// whole body is sent, which HTTP allows).
#[allow(clippy::result_unit_err)]
pub fn parse_range(
    value: Option<&HeaderValue>,
    len: u64,
) -> std::result::Result<Option<(u64, u64)>, ()> {
    let Some(spec) = value
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        // `-n`: the last n bytes.
        (Err(_), Ok(n)) if a.is_empty() => {
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len)
        }
        (Ok(s), Err(_)) if b.is_empty() => (s, len),
        (Ok(s), Ok(e)) if e >= s => (s, (e + 1).min(len)),
        _ => return Ok(None),
    };
    if range.0 >= len {
        return Err(());
    }
    Ok(Some(range))
}

/// An original recording, only for filenames listed in train.csv (so no path outside
/// `train_audio/` can be asked for), with single byte ranges so the player can seek.
async fn audio(
    State(s): State<Arc<Dashboard>>,
    UrlPath(file): UrlPath<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let path = s
        .dataset
        .audio_path(&file)
        .ok_or_else(|| Error::NotFound(format!("{file:?} is not a clip listed in train.csv")))?;
    let bytes = tokio::fs::read(&path).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotFound(format!("{} is missing", path.display())),
        _ => Error::io(&path, e),
    })?;
    let len = bytes.len() as u64;
    let ctype = audio_type(&file);
    match parse_range(headers.get(header::RANGE), len) {
        Ok(None) => Ok((
            [
                (header::CONTENT_TYPE, ctype.to_string()),
                (header::ACCEPT_RANGES, "bytes".to_string()),
            ],
            bytes,
        )
            .into_response()),
        Ok(Some((a, b))) => Ok((
            StatusCode::PARTIAL_CONTENT,
            [
                (header::CONTENT_TYPE, ctype.to_string()),
                (header::ACCEPT_RANGES, "bytes".to_string()),
                (header::CONTENT_RANGE, format!("bytes {a}-{}/{len}", b - 1)),
            ],
            bytes[a as usize..b as usize].to_vec(),
        )
            .into_response()),
        Err(()) => Ok((
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{len}"))],
        )
            .into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 100), Ok(None));
        assert_eq!(parse_range(Some(&hv("bytes=0-9")), 100), Ok(Some((0, 10))));
        assert_eq!(
            parse_range(Some(&hv("bytes=90-")), 100),
            Ok(Some((90, 100)))
        );
        assert_eq!(
            parse_range(Some(&hv("bytes=-10")), 100),
            Ok(Some((90, 100)))
        );
        assert_eq!(
            parse_range(Some(&hv("bytes=50-500")), 100),
            Ok(Some((50, 100)))
        );
        assert_eq!(parse_range(Some(&hv("bytes=100-")), 100), Err(()));
        assert_eq!(parse_range(Some(&hv("bytes=-0")), 100), Err(()));
        assert_eq!(parse_range(Some(&hv("bytes=0-1,5-6")), 100), Ok(None));
        assert_eq!(parse_range(Some(&hv("items=0-1")), 100), Ok(None));
        assert_eq!(parse_range(Some(&hv("bytes=9-3")), 100), Ok(None));
    }
}
