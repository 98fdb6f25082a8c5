//! The crate's one error type.

use std::path::{Path, PathBuf};

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in tracking, registry and job calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A tracking or registry URI this crate cannot use.
    #[error("unsupported URI {uri:?}: {reason}")]
    UnsupportedUri {
        /// The URI as given.
        uri: String,
        /// Why it is refused.
        reason: String,
    },
    /// A metric, param or tag key, run id, alias or model name MLflow would refuse.
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        /// What kind of name (`"param key"`, `"alias"`, …).
        what: &'static str,
        /// The name as given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A value over MLflow's limits (param value 6000 chars, tag value 8000 chars).
    #[error("{what} {key:?} is {len} characters, over the limit of {limit}")]
    TooLong {
        /// What kind of value.
        what: &'static str,
        /// Its key.
        key: String,
        /// Its length in characters.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// A param logged twice with different values (MLflow params are immutable).
    #[error("param {key:?} was already logged as {old:?}; cannot change it to {new:?}")]
    ParamChanged {
        /// The param key.
        key: String,
        /// The value already stored.
        old: String,
        /// The value refused.
        new: String,
    },
    /// The MLflow server answered with an error.
    #[error("MLflow {endpoint} answered HTTP {status} {error_code}: {message}")]
    Mlflow {
        /// The endpoint called.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// MLflow's `error_code` (`RESOURCE_DOES_NOT_EXIST`, …), or `HTTP_<status>` when the
        /// body was not MLflow's JSON error.
        error_code: String,
        /// MLflow's `message`, or the body.
        message: String,
    },
    /// The Ray dashboard answered with an error.
    #[error("Ray {endpoint} answered HTTP {status}: {message}")]
    Ray {
        /// The endpoint called.
        endpoint: String,
        /// HTTP status.
        status: u16,
        /// The body (Ray answers errors as plain text, often a traceback).
        message: String,
    },
    /// No answer (connection refused, timeout, unreadable body).
    #[error("HTTP {method} {url}: {message}")]
    Transport {
        /// The method.
        method: &'static str,
        /// The URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// An answer that parsed as HTTP but not as the expected JSON.
    #[error("unexpected answer from {endpoint}: {message}")]
    Protocol {
        /// The endpoint called.
        endpoint: String,
        /// What was wrong.
        message: String,
    },
    /// A file of the local store or registry that does not parse.
    #[error("{path}: malformed: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// An experiment name that exists only in the trash (MLflow refuses to reuse it too).
    #[error("experiment {name:?} exists in deleted state; restore it or remove it from .trash")]
    ExperimentDeleted {
        /// The name.
        name: String,
    },
    /// A registered model, version or alias that does not exist.
    #[error("{what} not found: {name}")]
    NotFound {
        /// What was looked for.
        what: &'static str,
        /// Its name.
        name: String,
    },
    /// A registered model that already exists.
    #[error("registered model {name:?} already exists")]
    AlreadyExists {
        /// The name.
        name: String,
    },
    /// A local registry directory that belongs to another model.
    #[error("local registry {root} holds model {holds:?}, not {asked:?}")]
    OtherModel {
        /// The registry root.
        root: PathBuf,
        /// The model it holds.
        holds: String,
        /// The model asked for.
        asked: String,
    },
    /// The run was already ended.
    #[error("run {run_id} already ended")]
    RunEnded {
        /// The run.
        run_id: String,
    },
    /// A Ray job was stopped on request of the caller (`follow` with `should_stop`).
    #[error("Ray job {submission_id} was stopped on request")]
    Interrupted {
        /// The job.
        submission_id: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        Error::InvalidName {
            what,
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// MLflow's `error_code` when this is a server error.
    pub fn mlflow_error_code(&self) -> Option<&str> {
        match self {
            Error::Mlflow { error_code, .. } => Some(error_code),
            _ => None,
        }
    }
}
