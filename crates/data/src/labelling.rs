//! Labelling sets from what `silencio serve` kept: its sampled requests and its feedback log
//! become `audio/` copies plus a `manifest.csv` that people label and the next model trains on.
//!
//! The server writes the inputs (`silencio_server::sampling::Sampler`,
//! `silencio_server::feedback::FeedbackStore`); their on-disk layout is defined here, so the
//! writer and this reader cannot drift apart:
//! - samples: `<samples>/<request_id>/{audio.<ext>, prediction.json, meta.json}`, each appearing
//!   whole (staged in a hidden directory and renamed); hidden entries are never samples;
//! - feedback: `<feedback>/feedback.jsonl`, one [`Feedback`] per line, appended and fsynced; only
//!   a crash mid-append can leave a torn (newline-less) final line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use silencio_api::Feedback;
use silencio_common::csv::field as csv_field;
use silencio_common::fs::{list_dir_utf8, sync_dir, write_new_synced};

use crate::{Error, Result};

/// File name of the prediction inside a sample directory (besides `audio.<ext>`).
pub const PREDICTION_FILE: &str = "prediction.json";
/// File name of the [`SampleMeta`] inside a sample directory; written last, so its presence
/// marks a complete sample.
pub const META_FILE: &str = "meta.json";
/// The manifest [`export`] writes.
pub const MANIFEST_FILE: &str = "manifest.csv";
/// Header of [`MANIFEST_FILE`]: one row per (sample, window); feedback joined on both.
pub const MANIFEST_HEADER: &str = "request_id,audio_path,model_version,saved_at,window,start_s,end_s,top_code,top_score,top_species,verdict,correct_code,feedback_received_at,feedback_count";
/// File name of the feedback log inside the feedback directory.
pub const FEEDBACK_LOG_FILE: &str = "feedback.jsonl";

/// Species listed per window in the manifest's `top_species`.
const MANIFEST_TOP: usize = 3;

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

/// What [`export`] wrote.
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

/// Writes a labelling set to `out` from the samples in `samples_dir` and the feedback log in
/// `feedback_dir`: `audio/<request_id>.<ext>` (copies) and [`MANIFEST_FILE`] with one row per
/// sample window ([`MANIFEST_HEADER`]): the top species of the window as the model saw it and
/// the latest feedback on that window (by `request_id` and `window`). Samples are listed oldest
/// first; one without windows still gets a row (its audio can be labelled without
/// predictions). The set is built beside `out` and renamed into place; an earlier export in
/// `out` (or an empty directory) is replaced, anything else there is refused
/// ([`Error::Conflict`]).
pub fn export(
    samples_dir: &Path,
    feedback_dir: Option<&Path>,
    out: &Path,
) -> Result<ExportSummary> {
    let feedback = match feedback_dir {
        Some(d) => read_feedback_log(d)?,
        None => Vec::new(),
    };
    if !samples_dir.is_dir() {
        return Err(Error::Missing(format!(
            "samples directory {}",
            samples_dir.display()
        )));
    }
    let mut samples = Vec::new();
    let mut skipped = Vec::new();
    for (name, path) in list_dir(samples_dir)? {
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
    samples.sort_by(|a, b| {
        (a.meta.saved_unix_ms, &a.meta.request_id).cmp(&(b.meta.saved_unix_ms, &b.meta.request_id))
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
            Error::InvalidOptions(format!(
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
        .map_err(|e| fs_err(format!("create {}", parent.display()), e))?;
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
            .map_err(|e| fs_err(format!("create {}", audio_dir.display()), e))?;
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
        let manifest = stage.join(MANIFEST_FILE);
        write_new_synced(&manifest, csv.as_bytes())
            .map_err(|e| fs_err(format!("write {}", manifest.display()), e))?;
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
            .map_err(|e| fs_err(format!("move aside {}", out.display()), e))?;
    }
    std::fs::rename(&stage, out).map_err(|e| {
        fs_err(
            format!("rename {} to {}", stage.display(), out.display()),
            e,
        )
    })?;
    fsync_dir(&parent)?;
    if had_old {
        std::fs::remove_dir_all(&old)
            .map_err(|e| fs_err(format!("remove {}", old.display()), e))?;
    }
    Ok(summary)
}

/// Every entry in the feedback log of `dir` ([`FEEDBACK_LOG_FILE`]), oldest first; an absent
/// log reads as empty. A torn final line (a crash mid-append, never acknowledged) is skipped
/// with a warning; a corrupt line before it is [`Error::Corrupt`], because skipping it would
/// silently lose stored feedback.
pub fn read_feedback_log(dir: &Path) -> Result<Vec<Feedback>> {
    let path = dir.join(FEEDBACK_LOG_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Io { path, source }),
    };
    let whole = whole_lines_len(&bytes);
    if whole < bytes.len() {
        tracing::warn!(
            log = %path.display(),
            bytes = bytes.len() - whole,
            "skipping a torn final line in the feedback log"
        );
    }
    parse_feedback_lines(&path, &bytes[..whole])
}

/// Length of the prefix of `bytes` that ends in a newline (all of it when it does): the whole
/// lines of an append-only log, without a torn final line.
pub fn whole_lines_len(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
}

/// The entries in the whole lines `bytes` of the log at `path`; blank lines are skipped.
fn parse_feedback_lines(path: &Path, bytes: &[u8]) -> Result<Vec<Feedback>> {
    let mut out = Vec::new();
    for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let fb = serde_json::from_slice(line).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        out.push(fb);
    }
    Ok(out)
}

/// Reads the [`SampleMeta`] of the sample directory `dir`.
pub fn read_sample_meta(dir: &Path) -> Result<SampleMeta> {
    read_json(&dir.join(META_FILE))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
        path: path.to_path_buf(),
        line: e.line(),
        message: e.to_string(),
    })
}

struct Sample {
    dir: PathBuf,
    meta: SampleMeta,
    prediction: serde_json::Value,
}

fn read_sample(dir: &Path) -> Result<Sample> {
    Ok(Sample {
        dir: dir.to_path_buf(),
        meta: read_sample_meta(dir)?,
        prediction: read_json(&dir.join(PREDICTION_FILE))?,
    })
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

/// An existing `out` may be replaced only when it is empty or an earlier export.
fn is_replaceable_export(out: &Path) -> Result<bool> {
    if !out.is_dir() {
        return Ok(false);
    }
    Ok(out.join(MANIFEST_FILE).is_file() || list_dir(out)?.is_empty())
}

fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    list_dir_utf8(dir).map_err(|e| fs_err(format!("list {}", dir.display()), e))
}

fn copy_synced(from: &Path, to: &Path) -> Result<()> {
    std::fs::copy(from, to)
        .and_then(|_| std::fs::File::open(to)?.sync_all())
        .map_err(|e| fs_err(format!("copy {} to {}", from.display(), to.display()), e))
}

/// Makes renames and new entries in `dir` durable.
fn fsync_dir(dir: &Path) -> Result<()> {
    sync_dir(dir).map_err(|e| fs_err(format!("fsync {}", dir.display()), e))
}

fn fs_err(context: String, source: std::io::Error) -> Error {
    Error::Fs { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_len_stops_after_the_last_newline() {
        assert_eq!(whole_lines_len(b""), 0);
        assert_eq!(whole_lines_len(b"{\"a\""), 0);
        assert_eq!(whole_lines_len(b"{}\n{\"a"), 3);
        assert_eq!(whole_lines_len(b"{}\n{}\n"), 6);
    }
}
