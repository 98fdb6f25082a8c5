//! Field feedback on predictions ("this window was wrong, it was X"), kept in an append-only
//! JSON Lines log so that a crash can at worst tear the one line being written.
//!
//! Layout: `<data-dir>/feedback/feedback.jsonl`, one [`Feedback`] per line. [`FeedbackStore::append`]
//! writes the whole line and fsyncs before it returns `Ok`, so a 201 answered to a client means
//! the entry survives a power cut. [`FeedbackStore::open`] cuts a torn final line (a crash
//! mid-write, never acknowledged) off the log and keeps its bytes in `torn-<unix ms>.part` next to
//! it for inspection. One process writes a data dir at a time. The reader of the log (and its
//! file name) is [`silencio_data::labelling`]'s, which the labelling export uses too.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use silencio_data::labelling::{read_feedback_log, whole_lines_len};

use crate::{Error, Result};

/// File name of the log inside the feedback directory.
pub use silencio_data::labelling::FEEDBACK_LOG_FILE as LOG_FILE;

/// The stored entry and the verdict (wire types of `silencio-api`; the entry is what
/// `POST /v1/feedback` stores and `silencio feedback export` reads).
pub use silencio_api::{Feedback, Said, Verdict};

/// The open log. Appends are serialised by a mutex; each blocks on an fsync, so async callers
/// should run it in `spawn_blocking`.
#[derive(Debug)]
pub struct FeedbackStore {
    path: PathBuf,
    log: Mutex<Log>,
}

#[derive(Debug)]
struct Log {
    file: File,
    /// Length of the log made only of whole lines; a failed write is cut back to it.
    len: u64,
    /// What each stored entry says (all but its time): a retried POST is not stored twice.
    seen: HashSet<Said>,
}

impl FeedbackStore {
    /// Opens (creating) the log in `dir`, cutting off a torn final line.
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create feedback dir {}", dir.display()), e))?;
        let path = dir.join(LOG_FILE);
        let ctx = |what: &str| format!("{what} {}", path.display());
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io(ctx("open"), e))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| Error::io(ctx("read"), e))?;
        let whole = whole_lines_len(&bytes);
        if whole < bytes.len() {
            let torn = &bytes[whole..];
            let keep = dir.join(format!("torn-{}.part", unix_ms(SystemTime::now())));
            crate::sampling::write_file_atomic(&keep, torn)?;
            tracing::warn!(
                log = %path.display(),
                bytes = torn.len(),
                kept = %keep.display(),
                "feedback log ended in a torn line (crash mid-write); cut it off"
            );
            file.set_len(whole as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(ctx("truncate torn line of"), e))?;
        }
        // A new log's directory entry must survive a crash too.
        crate::sampling::fsync_dir(dir)?;
        // What is stored already, so that retries after a restart are recognised too. A corrupt
        // line is `read_all`'s to report; it must not stop the server from taking feedback.
        let seen = bytes[..whole]
            .split(|&b| b == b'\n')
            .filter_map(|l| serde_json::from_slice::<Feedback>(l).ok())
            .map(|f| f.said())
            .collect();
        file.seek(SeekFrom::End(0))
            .map_err(|e| Error::io(ctx("seek"), e))?;
        Ok(Self {
            path,
            log: Mutex::new(Log {
                file,
                len: whole as u64,
                seen,
            }),
        })
    }

    /// Path of the log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and fsyncs it; `Ok(true)` means it is durable, `Ok(false)` that the
    /// same verdict on the same window (same correction) is stored already: a client's retry
    /// is not counted twice.
    pub fn append(&self, fb: &Feedback) -> Result<bool> {
        let mut line = serde_json::to_vec(fb)
            .map_err(|e| Error::Internal(format!("serialise feedback: {e}")))?;
        line.push(b'\n');
        // A panic in another append cannot leave a half line behind (the write below is cut
        // back on error), so a poisoned lock is still a consistent log.
        let mut log = self
            .log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = fb.said();
        if log.seen.contains(&key) {
            return Ok(false);
        }
        let written = log
            .file
            .write_all(&line)
            .and_then(|()| log.file.sync_data());
        if let Err(e) = written {
            // Cut a partial write back so the next append does not glue onto half a line.
            let len = log.len;
            if let Err(cut) = log.file.set_len(len).and_then(|()| log.file.sync_data()) {
                tracing::error!(log = %self.path.display(), error = %cut, "could not cut back a failed feedback write");
            }
            return Err(Error::io(format!("append to {}", self.path.display()), e));
        }
        log.len += line.len() as u64;
        log.seen.insert(key);
        drop(log);
        metrics::counter!("silencio_feedback_total", "verdict" => fb.verdict.as_str()).increment(1);
        Ok(true)
    }

    /// Every entry in the log of `dir`, oldest first (an absent log reads as empty): see
    /// [`read_feedback_log`]. A corrupt line is `corrupt_store`.
    pub fn read_all(dir: &Path) -> Result<Vec<Feedback>> {
        Ok(read_feedback_log(dir)?)
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// RFC 3339 UTC timestamps with milliseconds, e.g. `2026-05-01T06:12:03.250Z`.
pub use silencio_common::time::{now_rfc3339, rfc3339};

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_matches_known_instants() {
        let at = |s: u64, ms: u64| rfc3339(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (leap day of a century leap year) 12:34:56.789
        assert_eq!(at(951_827_696, 789), "2000-02-29T12:34:56.789Z");
        // 2025-12-31T23:59:59Z
        assert_eq!(at(1_767_225_599, 0), "2025-12-31T23:59:59.000Z");
    }
}
