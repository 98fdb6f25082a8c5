//! Passive sampling: a small random share of identification requests is kept (audio + what the
//! model said) so that people can label it later and the next model trains on field audio.
//!
//! Layout: `<data-dir>/samples/<request_id>/{audio.<ext>, prediction.json, meta.json}`. A sample
//! appears whole or not at all: it is written in `.tmp-*` beside it, fsynced, then renamed into
//! place; pruning renames a sample to `.trash-*` before deleting it. Crash leftovers of both are
//! removed by [`Sampler::open`]. After each save the oldest samples beyond the byte quota, and
//! any older than the maximum age, are pruned, so the newest are kept.
//!
//! Errors from [`Sampler::save`] are for logging: a failed sample must not fail the
//! identification it samples.
//!
//! The layout's names and [`SampleMeta`] belong to [`silencio_data::labelling`], whose
//! `export` turns the samples and the feedback log into a labelling set
//! (`silencio feedback export`).

use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use silencio_data::labelling::{META_FILE, PREDICTION_FILE, SampleMeta, read_sample_meta};

use crate::feedback::{rfc3339, unix_ms};
use crate::{Error, Result};

// Hidden, so the export (which skips dot entries) never reads a staged or doomed sample.
const TMP_PREFIX: &str = ".tmp-";
const TRASH_PREFIX: &str = ".trash-";

/// How much to sample and how much to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// Share of requests kept, in [0, 1].
    pub share: f64,
    /// Most bytes the samples may take on disk; the oldest go first.
    pub quota_bytes: u64,
    /// Samples older than this are deleted.
    pub max_age: Duration,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            share: 0.05,
            quota_bytes: 1 << 30,
            max_age: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    id: String,
    saved_ms: u64,
    bytes: u64,
}

/// The sampler of one samples directory.
#[derive(Debug)]
pub struct Sampler {
    dir: PathBuf,
    cfg: SamplerConfig,
    /// Randomly keyed SipHash of a counter: a thread-safe uniform source without a `rand` dep.
    hasher: std::collections::hash_map::RandomState,
    draws: AtomicU64,
    /// Samples on disk; one lock serialises index updates and pruning.
    index: Mutex<Vec<Entry>>,
}

impl Sampler {
    /// Opens (creating) `dir`, removes crash leftovers and prunes to `cfg`.
    pub fn open(dir: &Path, cfg: SamplerConfig) -> Result<Self> {
        if !(cfg.share.is_finite() && (0.0..=1.0).contains(&cfg.share)) {
            return Err(Error::BadRequest(format!(
                "sample share must be in [0, 1], got {}",
                cfg.share
            )));
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create samples dir {}", dir.display()), e))?;
        let mut index = Vec::new();
        for (name, path) in list_dir(dir)? {
            if name.starts_with(TMP_PREFIX) || name.starts_with(TRASH_PREFIX) {
                // Half-written or half-deleted: never visible as a sample, safe to drop.
                std::fs::remove_dir_all(&path)
                    .map_err(|e| Error::io(format!("remove leftover {}", path.display()), e))?;
                continue;
            }
            if name.starts_with('.') || !path.is_dir() {
                continue;
            }
            match read_sample_meta(&path) {
                Ok(meta) => index.push(Entry {
                    id: name,
                    saved_ms: meta.saved_unix_ms,
                    bytes: dir_bytes(&path)?,
                }),
                // Not ours (samples appear only whole): leave it alone, but say so.
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "not a sample; ignored")
                }
            }
        }
        let sampler = Self {
            dir: dir.to_path_buf(),
            cfg,
            hasher: Default::default(),
            draws: AtomicU64::new(0),
            index: Mutex::new(index),
        };
        sampler.prune()?;
        Ok(sampler)
    }

    /// The samples directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration.
    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Number of samples on disk and their bytes.
    pub fn usage(&self) -> (usize, u64) {
        let index = self.lock();
        (index.len(), index.iter().map(|e| e.bytes).sum())
    }

    /// One Bernoulli(`share`) draw.
    pub fn should_sample(&self) -> bool {
        if self.cfg.share <= 0.0 {
            return false;
        }
        let n = self.draws.fetch_add(1, Ordering::Relaxed);
        // 53 random bits -> uniform in [0, 1).
        let u = (self.hasher.hash_one(n) >> 11) as f64 / (1u64 << 53) as f64;
        u < self.cfg.share
    }

    /// Saves one request whole (see the module docs), then prunes.
    pub fn save(
        &self,
        request_id: &str,
        content_type: &str,
        audio: &[u8],
        prediction: &serde_json::Value,
    ) -> Result<()> {
        validate_id(request_id)?;
        let dest = self.dir.join(request_id);
        if dest.exists() {
            return Err(Error::Conflict(format!(
                "sample {request_id} already exists"
            )));
        }
        let audio_file = format!("audio.{}", extension_for(content_type));
        let now = SystemTime::now();
        let meta = SampleMeta {
            request_id: request_id.to_string(),
            content_type: content_type.to_string(),
            audio_file: audio_file.clone(),
            audio_bytes: audio.len() as u64,
            model_version: prediction
                .get("model_version")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            saved_at: rfc3339(now),
            saved_unix_ms: unix_ms(now),
        };
        let pred = pretty(prediction)?;
        let meta_bytes = pretty(&meta)?;
        let bytes = (audio.len() + pred.len() + meta_bytes.len()) as u64;
        if bytes > self.cfg.quota_bytes {
            return Err(Error::TooLarge(format!(
                "sample of {bytes} bytes exceeds the sample quota of {} bytes",
                self.cfg.quota_bytes
            )));
        }

        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{request_id}-{}", uuid::Uuid::new_v4()));
        let staged = (|| {
            std::fs::create_dir(&tmp)
                .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
            write_synced(&tmp.join(&audio_file), audio)?;
            write_synced(&tmp.join(PREDICTION_FILE), &pred)?;
            // meta.json last: its presence marks a complete sample even to a reader that
            // ignores the rename protocol.
            write_synced(&tmp.join(META_FILE), &meta_bytes)?;
            fsync_dir(&tmp)?;
            std::fs::rename(&tmp, &dest).map_err(|e| {
                Error::io(format!("rename {} to {}", tmp.display(), dest.display()), e)
            })?;
            fsync_dir(&self.dir)
        })();
        if let Err(e) = staged {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        {
            let mut index = self.lock();
            index.push(Entry {
                id: request_id.to_string(),
                saved_ms: meta.saved_unix_ms,
                bytes,
            });
        }
        metrics::counter!("silencio_sampled_total").increment(1);
        self.prune()
    }

    /// Deletes the samples beyond the quota (oldest first) and those older than `max_age`.
    pub fn prune(&self) -> Result<()> {
        let mut index = self.lock();
        // Newest first; the id breaks ties so the order is stable.
        index.sort_by(|a, b| b.saved_ms.cmp(&a.saved_ms).then_with(|| b.id.cmp(&a.id)));
        let now = unix_ms(SystemTime::now());
        let max_age_ms = u64::try_from(self.cfg.max_age.as_millis()).unwrap_or(u64::MAX);
        let mut used = 0u64;
        let mut keep = 0;
        for e in index.iter() {
            let young = now.saturating_sub(e.saved_ms) <= max_age_ms;
            if !young || used + e.bytes > self.cfg.quota_bytes {
                break;
            }
            used += e.bytes;
            keep += 1;
        }
        if keep == index.len() {
            return Ok(());
        }
        let doomed = index.split_off(keep);
        for e in &doomed {
            let path = self.dir.join(&e.id);
            let trash = self
                .dir
                .join(format!("{TRASH_PREFIX}{}-{}", e.id, uuid::Uuid::new_v4()));
            // Rename first so no reader ever sees a half-deleted sample.
            std::fs::rename(&path, &trash)
                .map_err(|err| Error::io(format!("prune {}", path.display()), err))?;
            std::fs::remove_dir_all(&trash)
                .map_err(|err| Error::io(format!("remove {}", trash.display()), err))?;
        }
        fsync_dir(&self.dir)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // The index is rebuilt from whole entries only; a panic elsewhere cannot tear it.
        self.index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// File extension for a media type (parameters ignored); `bin` for unknown ones.
pub fn extension_for(content_type: &str) -> &'static str {
    let mt = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match mt.as_str() {
        "audio/ogg" | "application/ogg" | "audio/vorbis" | "audio/opus" => "ogg",
        "audio/wav" | "audio/wave" | "audio/x-wav" | "audio/vnd.wave" => "wav",
        "audio/flac" | "audio/x-flac" => "flac",
        "audio/mpeg" | "audio/mp3" => "mp3",
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" | "audio/aac" => "m4a",
        _ => "bin",
    }
}

/// A request id is a directory name: 1–128 of `[A-Za-z0-9_-]` (UUIDs fit), nothing that could
/// climb out of the samples directory.
fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "request id must be 1-128 characters of [A-Za-z0-9_-], got {id:?}"
        )))
    }
}

fn pretty<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    let mut out =
        serde_json::to_vec_pretty(v).map_err(|e| Error::Internal(format!("serialise: {e}")))?;
    out.push(b'\n');
    Ok(out)
}

/// Entries of `dir` as (UTF-8 name, path); non-UTF-8 names are not ours and are skipped.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    silencio_common::fs::list_dir_utf8(dir)
        .map_err(|e| Error::io(format!("list {}", dir.display()), e))
}

fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for (_, p) in list_dir(dir)? {
        n += std::fs::metadata(&p)
            .map_err(|e| Error::io(format!("stat {}", p.display()), e))?
            .len();
    }
    Ok(n)
}

/// Creates `path` (which must not exist) with `bytes` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    silencio_common::fs::write_new_synced(path, bytes)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// Replaces `path` with `bytes` atomically ([`silencio_common::write_atomic`]): temp file in
/// the same directory, fsync, rename, fsync the directory.
pub(crate) fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    silencio_common::write_atomic(path, bytes)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

/// Makes renames and new entries in `dir` durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    silencio_common::fs::sync_dir(dir).map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_follow_the_media_type() {
        assert_eq!(extension_for("audio/ogg"), "ogg");
        assert_eq!(extension_for("Audio/X-WAV; charset=binary"), "wav");
        assert_eq!(extension_for("audio/mpeg"), "mp3");
        assert_eq!(extension_for("audio/flac"), "flac");
        assert_eq!(extension_for("audio/mp4"), "m4a");
        assert_eq!(extension_for("application/octet-stream"), "bin");
    }

    #[test]
    fn request_ids_cannot_climb_out() {
        assert!(validate_id("0b6f2c1e-8a4d-4e0b-9a4e-2f1f3c0d9e77").is_ok());
        for bad in ["", "..", "../x", "a/b", ".tmp-x", &"x".repeat(129)] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }
}
