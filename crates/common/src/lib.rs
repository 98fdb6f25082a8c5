//! What the silencio crates share, written once so that a fix reaches every caller:
//! - [`csv`]: the one CSV quoting rule of the hand-written tables;
//! - [`fs`]: atomic file replacement (temp file, fsync, rename, fsync of the directory) and the
//!   pieces of staging a whole directory (new fsynced files, UTF-8 listings);
//! - [`rand`]: the SplitMix64 generator whose exact sequence the splits, the soundscape mixer,
//!   the trainer's augmentation and the load generator depend on;
//! - [`time`]: proleptic Gregorian calendar arithmetic and RFC 3339 UTC timestamps;
//! - [`registry`]: the local model registry's on-disk layout (`aliases.json`, `versions/<v>/`);
//! - [`shutdown_signal`] (feature `tokio`): a future that resolves on SIGINT or SIGTERM.
//!
//! No Burn here, and tokio only behind its feature, so light clients stay light. Functions
//! return `std::io::Result` or this crate's [`Error`]; each caller maps that into its own
//! crate's error where it calls.

#![warn(missing_docs)]

pub mod csv;
pub mod fs;
pub mod rand;
pub mod registry;
#[cfg(feature = "tokio")]
mod shutdown;
pub mod time;

pub use fs::write_atomic;
pub use rand::SplitMix64;
#[cfg(feature = "tokio")]
pub use shutdown::shutdown_signal;

use std::path::PathBuf;

/// Errors of the registry readers (file access and JSON), naming the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `path` holds JSON of the wrong shape, or none.
    #[error("{}: {message}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

/// This crate's results.
pub type Result<T> = std::result::Result<T, Error>;
