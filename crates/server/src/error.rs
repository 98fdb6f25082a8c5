//! The server's one error type: every failure maps to an HTTP status and a JSON body
//! `{error, error_type}` so clients can branch on `error_type` without parsing prose.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Audio the decoder refused (format, codec, corrupt stream, empty, too long, NaN…).
    #[error(transparent)]
    Audio(#[from] silencio_audio::Error),
    /// Model loading or inference failed.
    #[error(transparent)]
    Infer(silencio_infer::Error),
    /// A request the API cannot accept as sent (bad JSON, bad base64, bad query value…).
    #[error("{0}")]
    BadRequest(String),
    /// The body's media type is not one the API takes.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(String),
    /// The body is a different audio format than its `Content-Type` says (a lying header).
    #[error("content type mismatch: {0}")]
    ContentMismatch(String),
    /// A well-formed request whose content cannot be accepted (e.g. feedback naming a species
    /// the model does not know, or a window the request did not have).
    #[error("{0}")]
    Invalid(String),
    /// No model was named and the registry has none to serve.
    #[error("{0}")]
    NoModel(String),
    /// Body or recording longer than the configured limit.
    #[error("{0}")]
    TooLarge(String),
    /// The request body did not arrive in time (too slow, or stalled): 408.
    #[error("{0}")]
    Timeout(String),
    /// The queue is full: try again after `retry_after_s`.
    #[error("server overloaded: queue full, retry after {retry_after_s} s")]
    Overloaded { retry_after_s: u64 },
    /// A client sending faster than its limit (a stream's audio or messages).
    #[error("{0}")]
    RateLimited(String),
    /// Missing or wrong API key on a write endpoint.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the server's state (e.g. promote with no canary loaded).
    #[error("{0}")]
    Conflict(String),
    /// Not ready yet (model loading / warming up) or shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// Durable storage (feedback log, samples) failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A stored file (feedback log, sample) that does not parse: never skipped silently.
    #[error("corrupt {path} line {line}: {message}")]
    Corrupt {
        path: std::path::PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Stable snake_case kind, the `error_type` of the JSON body.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Audio(e) => e.kind(),
            Self::Infer(e) => e.kind(),
            Self::BadRequest(_) => "bad_request",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::ContentMismatch(_) => "content_type_mismatch",
            Self::Invalid(_) => "invalid",
            Self::NoModel(_) => "no_model",
            Self::TooLarge(_) => "too_large",
            Self::Timeout(_) => "timeout",
            Self::Overloaded { .. } => "overloaded",
            Self::RateLimited(_) => "rate_limited",
            Self::Unauthorized(_) => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::Unavailable(_) => "unavailable",
            Self::Io { .. } => "io",
            Self::Corrupt { .. } => "corrupt_store",
            Self::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        {
            use silencio_infer::Error as I;
            match self {
                // A model the deployment may not serve, or one this build cannot run: the
                // operator's request is refused, the server is fine.
                Self::Infer(I::Licence(_)) => return StatusCode::FORBIDDEN,
                Self::Infer(I::NoBirdnet(_) | I::Spec(_)) => {
                    return StatusCode::UNPROCESSABLE_ENTITY;
                }
                _ => {}
            }
        }
        match self {
            // Audio the client sent that we cannot use: 415 for formats/codecs we do not
            // decode, 413 for too long or too costly, 422 for everything else about the content.
            Self::Audio(e) => {
                use silencio_audio::Error as A;
                match e {
                    A::UnsupportedFormat(_) | A::UnsupportedCodec(_) => {
                        StatusCode::UNSUPPORTED_MEDIA_TYPE
                    }
                    A::TooLong { .. } | A::TooManySamples { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    // Our own files or settings, not the client's audio.
                    A::Io { .. } | A::InvalidConfig(_) | A::UnknownRecipe { .. } => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                    A::Corrupt(_)
                    | A::Empty(_)
                    | A::NonFinite { .. }
                    | A::OutOfRange { .. }
                    | A::UnsupportedSampleRate { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                }
            }
            Self::Infer(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ContentMismatch(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NoModel(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded { .. } | Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Io { .. } | Self::Corrupt { .. } | Self::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

/// The data crate owns the on-disk layout of samples and the feedback log (their readers
/// fail with its errors); every kind is mapped by name, so a new one needs a status here.
impl From<silencio_data::Error> for Error {
    fn from(e: silencio_data::Error) -> Self {
        use silencio_data::Error as D;
        match e {
            D::Io { path, source } => Self::io(format!("read {}", path.display()), source),
            D::Fs { context, source } => Self::Io { context, source },
            D::Corrupt {
                path,
                line,
                message,
            } => Self::Corrupt {
                path,
                line,
                message,
            },
            D::Missing(_) => Self::NotFound(e.to_string()),
            D::Conflict(m) => Self::Conflict(m),
            D::InvalidOptions(_) => Self::BadRequest(e.to_string()),
            D::Csv { .. } | D::Taxonomy(_) | D::Store { .. } | D::CorruptOutput(_) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl From<silencio_infer::Error> for Error {
    /// Audio errors keep their own variant (and so their 4xx status) when they come through
    /// the model facade, which decodes for ensembles.
    fn from(e: silencio_infer::Error) -> Self {
        match e {
            silencio_infer::Error::Audio(a) => Self::Audio(a),
            other => Self::Infer(other),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.to_string(), "error_type": self.kind() });
        let mut resp = (status, axum::Json(body)).into_response();
        // RFC 9110: a 401 names the scheme the client should use.
        if matches!(self, Self::Unauthorized(_)) {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Self::Overloaded { retry_after_s } = self
            && let Ok(v) = axum::http::HeaderValue::from_str(&retry_after_s.to_string())
        {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, v);
        }
        resp
    }
}
