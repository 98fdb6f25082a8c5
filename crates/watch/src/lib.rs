//! The online pipeline: field data arriving over time, identified as it lands.
//!
//! - [`simulate`] (the producer) cuts 1-minute 32 kHz OGG files from real soundscapes one
//!   after another, optionally overlaying real calls through the soundscape mixer of
//!   `silencio-data` (whose labels it writes beside each file), and renames each file into
//!   place only when it is complete.
//! - [`Watcher`] (the consumer) picks up every new file of a folder (file-system events plus
//!   sweeps), runs the same model as offline (any model spec, opened in this process as a
//!   `silencio_infer::Scorer`, or the HTTP server), writes one BirdCLEF submission CSV per
//!   input atomically and records each input once in an fsync'd JSONL [`ledger`], so that a
//!   crash and a restart never process a file twice nor leave a partial output. Files that
//!   cannot be read go to a quarantine folder with the reason; the stream goes on.
#![warn(missing_docs)]

pub mod exporter;
pub mod ledger;
pub mod ogg;
pub mod scorer;
pub mod sim;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use exporter::serve_metrics;
pub use ledger::{Ledger, LedgerEntry, Status};
pub use scorer::{Scorer, Scores, ServerClient};
pub use sim::{Overlay, Produced, SimConfig, SimSummary, simulate, simulate_with};
pub use watch::{Stats, WatchConfig, WatchEvent, Watcher};

/// Audio extensions the consumer picks up and the producer reads (lower case).
pub const AUDIO_EXTENSIONS: [&str; 6] = ["ogg", "oga", "wav", "flac", "mp3", "m4a"];

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Audio that cannot be decoded.
    #[error(transparent)]
    Audio(#[from] silencio_audio::Error),
    /// The data crate (mixer, taxonomy) failed.
    #[error(transparent)]
    Data(#[from] silencio_data::Error),
    /// The model failed (bundle, device, registry).
    #[error(transparent)]
    Infer(#[from] silencio_infer::Error),
    /// Writing or reading a submission CSV failed.
    #[error(transparent)]
    Eval(#[from] silencio_eval::Error),
    /// An OGG file that stops before its end-of-stream page (cut off while being written).
    #[error("truncated: {0}")]
    Truncated(String),
    /// A recording too short to hold one window.
    #[error("no windows: {0}")]
    NoWindows(String),
    /// The server answered that the file is bad (a 4xx answer).
    #[error("server rejected the file ({error_type}): {message}")]
    Rejected {
        /// The server's `error_type`.
        error_type: String,
        /// The server's message.
        message: String,
    },
    /// The server could not be reached or failed (a transient error: the file is retried).
    #[error("server {url}: {message}")]
    Server {
        /// The server's base URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The server answered something that is not the expected JSON.
    #[error("server {url}: unexpected answer: {message}")]
    ServerResponse {
        /// The server's base URL.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// Settings that cannot work.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The file-system watch could not be set up.
    #[error("watching {path}: {source}")]
    Watch {
        /// The watched directory.
        path: PathBuf,
        /// The cause.
        source: notify::Error,
    },
    /// A ledger line that does not parse.
    #[error("ledger {path}, line {line}: {message}")]
    Ledger {
        /// The ledger file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A worker thread died.
    #[error("worker: {0}")]
    Worker(String),
}

impl Error {
    /// A stable machine-readable kind (snake_case).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::Audio(e) => e.kind(),
            Error::Data(e) => e.kind(),
            Error::Infer(e) => e.kind(),
            Error::Eval(e) => e.kind(),
            Error::Truncated(_) => "truncated",
            Error::NoWindows(_) => "no_windows",
            Error::Rejected { .. } => "rejected",
            Error::Server { .. } => "server",
            Error::ServerResponse { .. } => "server_response",
            Error::InvalidOptions(_) => "invalid_options",
            Error::Watch { .. } => "watch",
            Error::Ledger { .. } => "ledger",
            Error::Worker(_) => "worker",
        }
    }

    /// Whether the error is the input file's fault (it goes to quarantine), rather than the
    /// machine's, the model's or the server's (which stop the stream or are retried).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Error::Audio(_)
                | Error::Infer(silencio_infer::Error::Audio(_))
                | Error::Truncated(_)
                | Error::NoWindows(_)
                | Error::Rejected { .. }
        )
    }

    /// The kind to record for a quarantined file: the audio error's own kind, or the server's
    /// `error_type`.
    pub fn quarantine_kind(&self) -> String {
        match self {
            Error::Rejected { error_type, .. } => error_type.clone(),
            e => e.kind().to_string(),
        }
    }

    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A flag that turns true on Ctrl-C (SIGINT) or SIGTERM, for a graceful stop: the current
/// file finishes, nothing is left half-written. Call once per process.
pub fn stop_on_signal() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .map_err(|e| Error::InvalidOptions(format!("installing the Ctrl-C handler: {e}")))?;
    Ok(stop)
}

/// Whether `name` is one this crate (or a common tool) uses for a file still being written:
/// hidden names (`.x.ogg.part`, `.x.csv.123.tmp`) and the usual partial suffixes.
pub fn is_temporary_name(name: &str) -> bool {
    const PARTIAL: [&str; 5] = [".part", ".tmp", ".partial", ".crdownload", ".swp"];
    name.starts_with('.') || name.ends_with('~') || PARTIAL.iter().any(|s| name.ends_with(s))
}

/// Whether `path` names an audio file the consumer should look at (by extension, not a
/// temporary name).
pub fn is_audio_candidate(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if is_temporary_name(name) {
        return false;
    }
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.as_str()))
}

/// Parses a duration: `10s`, `500ms`, `2m`, `1h`, or a plain number of seconds (`0`, `2.5`).
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let s = s.trim();
    let bad = || Error::InvalidOptions(format!("{s:?} is not a duration (e.g. 10s, 500ms, 2m, 0)"));
    let split = s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(bad()),
    };
    std::time::Duration::try_from_secs_f64(v * scale).map_err(|_| bad())
}

/// Parses an SNR range in dB, `low,high` (or `low:high`), low ≤ high.
pub fn parse_range(s: &str) -> Result<(f64, f64)> {
    let bad = || Error::InvalidOptions(format!("{s:?} is not a range like -10,10"));
    let (lo, hi) = s.split_once([',', ':']).ok_or_else(bad)?;
    let (lo, hi): (f64, f64) = (
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    );
    if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// Makes a directory's entries (renames, new files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    silencio_common::fs::sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Replaces `path` atomically ([`silencio_common::write_atomic`]): a hidden `.name.*.tmp` temp
/// file in the same directory (which the watcher ignores and sweeps up), fsync, rename, fsync
/// of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    silencio_common::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_and_foreign_names_are_ignored() {
        for n in [
            ".a.ogg.part",
            "a.ogg.part",
            ".a.csv.12.tmp",
            "a.ogg.crdownload",
            "a.ogg~",
            "notes.txt",
            "a.labels.csv",
            "noext",
        ] {
            assert!(!is_audio_candidate(Path::new(n)), "{n}");
        }
        for n in ["SIM_20250101_060000.ogg", "x.WAV", "x.flac", "x.mp3"] {
            assert!(is_audio_candidate(Path::new(n)), "{n}");
        }
    }

    #[test]
    fn durations_and_ranges_parse() {
        use std::time::Duration;
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        for bad in ["", "s", "-1s", "10 parsecs", "abc"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_range("-10,5").unwrap(), (-10.0, 5.0));
        assert_eq!(parse_range("-20:10").unwrap(), (-20.0, 10.0));
        assert!(parse_range("5,-5").is_err());
        assert!(parse_range("5").is_err());
    }

    #[test]
    fn atomic_write_leaves_only_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("a.csv");
        write_atomic(&p, b"x").unwrap();
        write_atomic(&p, b"yz").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"yz");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }

    #[test]
    fn bad_input_errors_are_told_apart_from_machine_errors() {
        let a = Error::Audio(silencio_audio::Error::Empty("x".into()));
        assert!(a.is_bad_input());
        assert_eq!(a.quarantine_kind(), "empty_audio");
        let s = Error::Server {
            url: "u".into(),
            message: "down".into(),
        };
        assert!(!s.is_bad_input());
        let r = Error::Rejected {
            error_type: "unsupported_format".into(),
            message: "m".into(),
        };
        assert!(r.is_bad_input());
        assert_eq!(r.quarantine_kind(), "unsupported_format");
    }
}
