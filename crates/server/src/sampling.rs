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
//! [`Sampler::export`] turns the samples and the feedback log into a labelling set (see there).

use std::collections::HashMap;
use std::fs::File;
use std::hash::BuildHasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::feedback::{Feedback, FeedbackStore, rfc3339, unix_ms};
use crate::{Error, Result};

/// File names inside a sample directory (besides `audio.<ext>`).
pub const PREDICTION_FILE: &str = "prediction.json";
/// See [`PREDICTION_FILE`].
pub const META_FILE: &str = "meta.json";
/// The manifest [`Sampler::export`] writes.
pub const MANIFEST_FILE: &str = "manifest.csv";
/// Header of [`MANIFEST_FILE`]: one row per (sample, window); feedback joined on both.
pub const MANIFEST_HEADER: &str = "request_id,audio_path,model_version,saved_at,window,start_s,end_s,top_code,top_score,top_species,verdict,correct_code,feedback_received_at,feedback_count";

const TMP_PREFIX: &str = ".tmp-";
const TRASH_PREFIX: &str = ".trash-";
/// Species listed per window in the manifest's `top_species`.
const MANIFEST_TOP: usize = 3;

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

/// What `meta.json` of a sample holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleMeta {
    /// Request the sample was taken from.
    pub request_id: String,
    /// Media type the client sent.
    pub content_type: String,
    /// Audio file name inside the sample directory.
    pub audio_file: String,
    /// Size of the audio in bytes.
    pub audio_bytes: u64,
    /// `model_version` of the prediction, when it had one.
    #[serde(default)]
    pub model_version: Option<String>,
    /// When it was saved (RFC 3339 UTC).
    pub saved_at: String,
    /// When it was saved, in ms since the Unix epoch (what pruning orders by).
    pub saved_unix_ms: u64,
}

/// What [`Sampler::export`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportSummary {
    /// The labelling directory.
    pub out: PathBuf,
    /// Samples exported (one audio copy each).
    pub samples: usize,
    /// Manifest rows (one per sample window).
    pub rows: usize,
    /// Feedback entries joined to a manifest row.
    pub feedback_matched: usize,
    /// Feedback entries about requests (or windows) that were not sampled.
    pub feedback_unmatched: usize,
    /// Sample directories skipped because they do not parse (left untouched).
    pub skipped: Vec<String>,
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
            match read_meta(&path) {
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

    /// Writes a labelling set to `out`: `audio/<request_id>.<ext>` (copies) and
    /// [`MANIFEST_FILE`] with one row per sample window ([`MANIFEST_HEADER`]): the top species
    /// of the window as the model saw it and the latest feedback on that window (by
    /// `request_id` and `window`) from the log in `feedback_dir`. The set is built beside `out`
    /// and renamed into place; an earlier export in `out` is replaced, anything else there is
    /// refused (`conflict`).
    pub fn export(dir: &Path, feedback_dir: Option<&Path>, out: &Path) -> Result<ExportSummary> {
        let feedback = match feedback_dir {
            Some(d) => FeedbackStore::read_all(d)?,
            None => Vec::new(),
        };
        let mut samples = Vec::new();
        let mut skipped = Vec::new();
        if dir.is_dir() {
            for (name, path) in list_dir(dir)? {
                if name.starts_with('.') || !path.is_dir() {
                    continue;
                }
                match read_sample(&path) {
                    Ok(s) => samples.push(s),
                    Err(e) => {
                        tracing::warn!(dir = %path.display(), error = %e, "sample skipped");
                        skipped.push(name);
                    }
                }
            }
        } else {
            return Err(Error::NotFound(format!(
                "no samples directory at {}",
                dir.display()
            )));
        }
        samples.sort_by(|a, b| {
            (a.meta.saved_unix_ms, &a.meta.request_id)
                .cmp(&(b.meta.saved_unix_ms, &b.meta.request_id))
        });

        // (request_id, window) -> feedback on it, oldest first (log order).
        let mut by_window: HashMap<(&str, usize), Vec<&Feedback>> = HashMap::new();
        for fb in &feedback {
            by_window
                .entry((fb.request_id.as_str(), fb.window))
                .or_default()
                .push(fb);
        }

        let name = out
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.is_empty() && *n != "." && *n != "..")
            .ok_or_else(|| {
                Error::BadRequest(format!(
                    "export target {} has no directory name",
                    out.display()
                ))
            })?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if out.exists() && !is_replaceable_export(out)? {
            return Err(Error::Conflict(format!(
                "{} exists and is not an earlier export (no {MANIFEST_FILE}); choose another --out",
                out.display()
            )));
        }
        std::fs::create_dir_all(&parent)
            .map_err(|e| Error::io(format!("create {}", parent.display()), e))?;
        let stage = parent.join(format!(".{name}.partial-{}", uuid::Uuid::new_v4()));
        let audio_dir = stage.join("audio");

        let mut summary = ExportSummary {
            out: out.to_path_buf(),
            samples: samples.len(),
            rows: 0,
            feedback_matched: 0,
            feedback_unmatched: 0,
            skipped,
        };
        let built = (|| -> Result<()> {
            std::fs::create_dir_all(&audio_dir)
                .map_err(|e| Error::io(format!("create {}", audio_dir.display()), e))?;
            let mut csv = String::from(MANIFEST_HEADER);
            csv.push('\n');
            for s in &samples {
                let id = s.meta.request_id.as_str();
                let ext = Path::new(&s.meta.audio_file)
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or("bin");
                let rel = format!("audio/{id}.{ext}");
                copy_synced(&s.dir.join(&s.meta.audio_file), &stage.join(&rel))?;
                let windows = prediction_windows(&s.prediction);
                let mut push_row = |w: Option<(usize, &PredWindow)>| {
                    let fbs = w.and_then(|(i, _)| by_window.get(&(id, i)));
                    let last = fbs.and_then(|v| v.last());
                    summary.feedback_matched += fbs.map_or(0, Vec::len);
                    let top = w.map(|(_, pw)| pw.top.as_slice()).unwrap_or_default();
                    let fields = [
                        id.to_string(),
                        rel.clone(),
                        s.meta.model_version.clone().unwrap_or_default(),
                        s.meta.saved_at.clone(),
                        w.map(|(i, _)| i.to_string()).unwrap_or_default(),
                        w.and_then(|(_, pw)| pw.start_s)
                            .map(fmt_s)
                            .unwrap_or_default(),
                        w.and_then(|(_, pw)| pw.end_s)
                            .map(fmt_s)
                            .unwrap_or_default(),
                        top.first().map(|t| t.0.clone()).unwrap_or_default(),
                        top.first()
                            .map(|t| format!("{:.4}", t.1))
                            .unwrap_or_default(),
                        top.iter()
                            .take(MANIFEST_TOP)
                            .map(|(c, p)| format!("{c}:{p:.4}"))
                            .collect::<Vec<_>>()
                            .join(";"),
                        last.map(|f| f.verdict.as_str().to_string())
                            .unwrap_or_default(),
                        last.and_then(|f| f.correct_code.clone())
                            .unwrap_or_default(),
                        last.map(|f| f.received_at.clone()).unwrap_or_default(),
                        fbs.map_or(0, Vec::len).to_string(),
                    ];
                    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
                    csv.push_str(&line.join(","));
                    csv.push('\n');
                    summary.rows += 1;
                };
                if windows.is_empty() {
                    // Still list the audio: a labeller can label it without predictions.
                    push_row(None);
                } else {
                    for (i, w) in windows.iter().enumerate() {
                        push_row(Some((i, w)));
                    }
                }
            }
            write_synced(&stage.join(MANIFEST_FILE), csv.as_bytes())?;
            fsync_dir(&audio_dir)?;
            fsync_dir(&stage)?;
            Ok(())
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(e);
        }
        summary.feedback_unmatched = feedback.len() - summary.feedback_matched;

        // Swap in: the old export moves aside first, so a crash between the renames leaves both
        // sets on disk (and the samples are untouched originals anyway).
        let old = parent.join(format!(".{name}.old-{}", uuid::Uuid::new_v4()));
        let had_old = out.exists();
        if had_old {
            std::fs::rename(out, &old)
                .map_err(|e| Error::io(format!("move aside {}", out.display()), e))?;
        }
        std::fs::rename(&stage, out).map_err(|e| {
            Error::io(
                format!("rename {} to {}", stage.display(), out.display()),
                e,
            )
        })?;
        fsync_dir(&parent)?;
        if had_old {
            std::fs::remove_dir_all(&old)
                .map_err(|e| Error::io(format!("remove {}", old.display()), e))?;
        }
        Ok(summary)
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

struct Sample {
    dir: PathBuf,
    meta: SampleMeta,
    prediction: serde_json::Value,
}

struct PredWindow {
    start_s: Option<f64>,
    end_s: Option<f64>,
    /// (code, score), best first.
    top: Vec<(String, f64)>,
}

/// The windows of a saved prediction: `{"windows": [{"start_s", "end_s", "species": [{"code",
/// "score"}, ...]}]}` (the API's identify answer; `top`, `predictions` or `detections` are
/// accepted for the list too).
fn prediction_windows(pred: &serde_json::Value) -> Vec<PredWindow> {
    let Some(windows) = pred.get("windows").and_then(|w| w.as_array()) else {
        return Vec::new();
    };
    windows
        .iter()
        .map(|w| {
            let list = ["species", "top", "predictions", "detections"]
                .iter()
                .find_map(|k| w.get(*k).and_then(|v| v.as_array()));
            let mut top: Vec<(String, f64)> = list
                .into_iter()
                .flatten()
                .filter_map(|s| {
                    Some((
                        s.get("code")?.as_str()?.to_string(),
                        s.get("score")?.as_f64()?,
                    ))
                })
                .collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            PredWindow {
                start_s: w.get("start_s").and_then(|v| v.as_f64()),
                end_s: w.get("end_s").and_then(|v| v.as_f64()),
                top,
            }
        })
        .collect()
}

fn fmt_s(x: f64) -> String {
    format!("{x:.3}")
}

/// RFC 4180 quoting when needed.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn read_meta(dir: &Path) -> Result<SampleMeta> {
    let path = dir.join(META_FILE);
    let bytes =
        std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path,
        line: e.line(),
        message: e.to_string(),
    })
}

fn read_sample(dir: &Path) -> Result<Sample> {
    let meta = read_meta(dir)?;
    let path = dir.join(PREDICTION_FILE);
    let bytes =
        std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    let prediction = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path,
        line: e.line(),
        message: e.to_string(),
    })?;
    Ok(Sample {
        dir: dir.to_path_buf(),
        meta,
        prediction,
    })
}

/// An existing `out` may be replaced only when it is empty or an earlier export.
fn is_replaceable_export(out: &Path) -> Result<bool> {
    if !out.is_dir() {
        return Ok(false);
    }
    Ok(out.join(MANIFEST_FILE).is_file() || list_dir(out)?.is_empty())
}

/// Entries of `dir` as (UTF-8 name, path); non-UTF-8 names are not ours and are skipped.
fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let ctx = || format!("list {}", dir.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(ctx(), e))? {
        let e = e.map_err(|e| Error::io(ctx(), e))?;
        if let Ok(name) = e.file_name().into_string() {
            out.push((name, e.path()));
        }
    }
    Ok(out)
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
    let mut f =
        File::create_new(path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(format!("write {}", path.display()), e))
}

fn copy_synced(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .and_then(|_| File::open(to)?.sync_all())
        .map(|_| ())
        .map_err(|e| Error::io(format!("copy {} to {}", from.display(), to.display()), e))
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

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("abc"), "abc");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
