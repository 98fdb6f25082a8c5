//! The consumer's ledger: one JSON line per input handled, appended and fsync'd after the
//! input's output is in place, so that a restart knows what is done.
//!
//! The ledger is append-only: an input scored again (its content changed) gets a new line, and
//! the latest line of a file name wins. Inputs are keyed by their full file name. `output` is
//! relative to the output directory: `<file name>.csv` (`x.ogg.csv`); ledgers written when
//! outputs were named `<stem>.csv` load unchanged and their outputs are honoured.
//!
//! A crash can leave a last line cut off half-way: it is dropped on opening (its input had no
//! complete ledger record, so the consumer looks at it again and finds its output, if any).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What happened to an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Scored; its CSV is in the output directory.
    Done,
    /// Unreadable: moved to the quarantine directory with a reason file.
    Quarantined,
}

/// One ledger line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// File name in the input directory.
    pub file: String,
    /// SHA-256 of the file's bytes (hex).
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch (a cheap "unchanged" check).
    pub mtime_ns: Option<u128>,
    /// Outcome.
    pub status: Status,
    /// The CSV (done) or the quarantined file, relative to the output directory.
    pub output: String,
    /// Windows scored (done).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows: Option<usize>,
    /// `name@version` of the model, or the server's model version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<String>,
    /// Error kind (quarantined).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// True when the output was found complete after a crash and adopted, not recomputed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    /// When, seconds since the Unix epoch.
    pub at: f64,
}

/// The ledger file, opened for appending, with the latest entry of each input in memory.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: File,
    latest: HashMap<String, LedgerEntry>,
    lines: usize,
}

impl Ledger {
    /// Opens (or creates) the ledger at `path` and locks it (exclusively: a second opener
    /// fails), dropping a torn last line.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |e| Error::io(path, e);
        let mut text = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(io)?;
        // One consumer per output folder; the kernel drops the lock when a process dies.
        file.try_lock().map_err(|e| {
            Error::InvalidOptions(format!(
                "{}: held by another consumer ({e})",
                path.display()
            ))
        })?;
        // Everything after the last newline was being written when the process died.
        let keep = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if keep < text.len() {
            file.set_len(keep as u64).map_err(io)?;
            file.sync_all().map_err(io)?;
            text.truncate(keep);
        }
        let mut latest = HashMap::new();
        let mut lines = 0;
        for (i, line) in text.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let e: LedgerEntry = serde_json::from_slice(line).map_err(|e| Error::Ledger {
                path: path.to_path_buf(),
                line: i + 1,
                message: e.to_string(),
            })?;
            latest.insert(e.file.clone(), e);
            lines += 1;
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
            latest,
            lines,
        })
    }

    /// The latest entry of input `file`.
    pub fn get(&self, file: &str) -> Option<&LedgerEntry> {
        self.latest.get(file)
    }

    /// Latest entries, one per input.
    pub fn entries(&self) -> impl Iterator<Item = &LedgerEntry> {
        self.latest.values()
    }

    /// Number of lines (an input handled twice, e.g. replaced by new content, counts twice).
    pub fn lines(&self) -> usize {
        self.lines
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entry` as one line and fsyncs it before returning.
    pub fn append(&mut self, entry: LedgerEntry) -> Result<()> {
        let mut line = serde_json::to_vec(&entry).map_err(|e| Error::Ledger {
            path: self.path.clone(),
            line: self.lines + 1,
            message: e.to_string(),
        })?;
        line.push(b'\n');
        // One write call: with O_APPEND a line lands whole or (on a crash) torn at the end.
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        self.lines += 1;
        self.latest.insert(entry.file.clone(), entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(file: &str, sha: &str) -> LedgerEntry {
        LedgerEntry {
            file: file.into(),
            sha256: sha.into(),
            size: 3,
            mtime_ns: Some(7),
            status: Status::Done,
            output: format!("{file}.csv"),
            windows: Some(12),
            model_version: Some("m@1".into()),
            kind: None,
            recovered: false,
            at: 1.0,
        }
    }

    #[test]
    fn entries_survive_reopening_and_a_torn_line_is_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("ledger.jsonl");
        let mut l = Ledger::open(&p).unwrap();
        l.append(entry("a.ogg", "1")).unwrap();
        l.append(entry("b.ogg", "2")).unwrap();
        l.append(entry("a.ogg", "3")).unwrap();
        drop(l);
        // A crash in the middle of the next line.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(br#"{"file":"c.ogg","sha2"#).unwrap();
        drop(f);

        let mut l = Ledger::open(&p).unwrap();
        assert_eq!(l.lines(), 3);
        assert_eq!(l.get("a.ogg").unwrap().sha256, "3");
        assert!(l.get("c.ogg").is_none());
        l.append(entry("c.ogg", "4")).unwrap();
        drop(l);
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 4);
        for line in text.lines() {
            serde_json::from_str::<LedgerEntry>(line).unwrap();
        }
    }

    #[test]
    fn a_corrupt_complete_line_is_an_error_not_silence() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("ledger.jsonl");
        std::fs::write(&p, "not json\n").unwrap();
        assert_eq!(Ledger::open(&p).unwrap_err().kind(), "ledger");
    }
}
