//! Guides' feedback as training data: the windows of a labelling export ([`crate::labelling`])
//! that a listener confirmed or corrected become clips of a BirdCLEF-layout training root that
//! also holds the base data, so the trainer's ETL, split and provenance see ordinary rows.
//!
//! - `right`: the model's top species was there: a clip labelled with it;
//! - `wrong` with a `correct_code`: a clip labelled with the correct species;
//! - `wrong` without one: the top species was *not* there. That says nothing about the other
//!   species, so the window is no positive example of anything: it adds no `train.csv` row but
//!   is listed in [`NEGATIVES_FILE`] (clip, species), which the ETL reads as a training window
//!   whose one known target is that species' 0 (the trainer masks the others out of the loss).
//!
//! One clip per labelled window, cut from the sample at 32 kHz and stored as OGG Vorbis under
//! `train_audio/feedback/`. The windows of one request share a `url` (`feedback:<request_id>`),
//! so the grouped split keeps them on one side.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use silencio_audio::DecodeOptions;

use crate::labelling::MANIFEST_FILE;
use crate::taxonomy::Taxonomy;
use crate::{Error, Result};

/// Directory under `train_audio/` holding the feedback clips (and the `collection` value).
pub const FEEDBACK_DIR: &str = "feedback";
/// Windows a listener marked wrong without the right species: `filename,primary_label`.
pub const NEGATIVES_FILE: &str = "feedback_negatives.csv";
/// What [`build_root`] did (`feedback.json` in the root).
pub const SUMMARY_FILE: &str = "feedback.json";
/// Licence recorded for clips that came from the service's users.
pub const FEEDBACK_LICENCE: &str = "LicenseRef-silencio-feedback";

/// One row of the export's manifest (the columns this module reads).
#[derive(Debug, Clone, Deserialize)]
struct ManifestRow {
    request_id: String,
    audio_path: String,
    window: Option<usize>,
    start_s: Option<f64>,
    end_s: Option<f64>,
    top_code: String,
    verdict: String,
    correct_code: String,
}

/// How a labelled window teaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedbackUse {
    /// Verdict `right`: the top species is the label.
    Confirmed,
    /// Verdict `wrong` with the correct species: that species is the label.
    Corrected,
    /// Verdict `wrong` without one: the top species is absent.
    Negative,
}

/// What [`build_root`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FeedbackSummary {
    /// Windows labelled with the model's top species.
    pub confirmed: usize,
    /// Windows labelled with a corrected species.
    pub corrected: usize,
    /// Windows listed as negatives for their top species.
    pub negatives: usize,
    /// Manifest rows without feedback.
    pub unlabelled: usize,
    /// Labelled rows left out, with why (a species not in the taxonomy, audio that does not
    /// decode, a window outside its audio).
    pub skipped: Vec<String>,
    /// `train.csv` rows added.
    pub rows_added: usize,
}

impl FeedbackSummary {
    /// Labels that became training rows.
    pub fn labels(&self) -> usize {
        self.confirmed + self.corrected
    }
}

/// The use of a manifest row's feedback, with its species; None when it has none.
fn use_of(row: &ManifestRow) -> Option<(FeedbackUse, &str)> {
    match (row.verdict.as_str(), row.correct_code.trim()) {
        ("right", _) => Some((FeedbackUse::Confirmed, row.top_code.as_str())),
        ("wrong", "") => Some((FeedbackUse::Negative, row.top_code.as_str())),
        // Corrected to the species it predicted: the listener confirmed it after all.
        ("wrong", c) if c == row.top_code => Some((FeedbackUse::Confirmed, c)),
        ("wrong", c) => Some((FeedbackUse::Corrected, c)),
        _ => None,
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Builds at `out` (which must not exist; built beside it and renamed into place) a training
/// root holding `base`'s data — every entry of `base` linked, `train_audio/`'s species
/// directories linked one by one — plus the feedback clips of the labelling export `export`,
/// with `train.csv` = `base`'s rows followed by one row per confirmed or corrected window.
pub fn build_root(base: &Path, export: &Path, out: &Path) -> Result<FeedbackSummary> {
    if out.exists() {
        return Err(Error::Conflict(format!(
            "{} exists; a training root is built once",
            out.display()
        )));
    }
    let taxonomy = Taxonomy::from_csv(&base.join("taxonomy.csv"))?;
    let manifest = export.join(MANIFEST_FILE);
    if !manifest.is_file() {
        return Err(Error::Missing(format!(
            "{} (not a labelling export: run `silencio feedback export`)",
            manifest.display()
        )));
    }
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| Error::InvalidOptions(format!("{} has no name", out.display())))?
        .to_string_lossy()
        .to_string();
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let stage = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    let built = fill(base, export, &manifest, &taxonomy, &stage);
    match built {
        Ok(summary) => {
            std::fs::rename(&stage, out).map_err(io(out))?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            Err(e)
        }
    }
}

fn link(from: &Path, to: &Path) -> Result<()> {
    let from = from.canonicalize().map_err(io(from))?;
    std::os::unix::fs::symlink(&from, to).map_err(io(to))
}

fn fill(
    base: &Path,
    export: &Path,
    manifest: &Path,
    taxonomy: &Taxonomy,
    stage: &Path,
) -> Result<FeedbackSummary> {
    let audio_out = stage.join("train_audio");
    let clips = audio_out.join(FEEDBACK_DIR);
    std::fs::create_dir_all(&clips).map_err(io(&clips))?;
    for e in std::fs::read_dir(base).map_err(io(base))? {
        let e = e.map_err(io(base))?;
        let n = e.file_name();
        if n == "train.csv" || n == "train_audio" || n == SUMMARY_FILE || n == NEGATIVES_FILE {
            continue;
        }
        link(&e.path(), &stage.join(&n))?;
    }
    let base_audio = base.join("train_audio");
    if base_audio.is_dir() {
        for e in std::fs::read_dir(&base_audio).map_err(io(&base_audio))? {
            let e = e.map_err(io(&base_audio))?;
            if e.file_name() == FEEDBACK_DIR {
                return Err(Error::Conflict(format!(
                    "{} already has a {FEEDBACK_DIR}/ directory",
                    base_audio.display()
                )));
            }
            link(&e.path(), &audio_out.join(e.file_name()))?;
        }
    }

    // train.csv: the base rows as they are, then the feedback rows by column name.
    let base_csv = base.join("train.csv");
    let mut reader = csv::Reader::from_path(&base_csv).map_err(|e| Error::Csv {
        path: base_csv.clone(),
        message: e.to_string(),
    })?;
    let header = reader
        .headers()
        .map_err(|e| Error::Csv {
            path: base_csv.clone(),
            message: e.to_string(),
        })?
        .clone();
    let out_csv = stage.join("train.csv");
    let csv_err = |e: csv::Error| Error::Csv {
        path: out_csv.clone(),
        message: e.to_string(),
    };
    let mut writer = csv::Writer::from_path(&out_csv).map_err(csv_err)?;
    writer.write_record(&header).map_err(csv_err)?;
    for rec in reader.records() {
        let rec = rec.map_err(|e| Error::Csv {
            path: base_csv.clone(),
            message: e.to_string(),
        })?;
        writer.write_record(&rec).map_err(csv_err)?;
    }

    let mut summary = FeedbackSummary::default();
    let mut negatives = String::from("filename,primary_label\n");
    let mut rows = csv::Reader::from_path(manifest).map_err(|e| Error::Csv {
        path: manifest.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut decoded: HashMap<String, std::result::Result<Vec<f32>, String>> = HashMap::new();
    for (i, row) in rows.deserialize::<ManifestRow>().enumerate() {
        let row = row.map_err(|e| Error::Csv {
            path: manifest.to_path_buf(),
            message: e.to_string(),
        })?;
        let Some((use_, code)) = use_of(&row) else {
            summary.unlabelled += 1;
            continue;
        };
        let what = format!("{} window {}", row.request_id, row.window.unwrap_or(i));
        let Some(species) = taxonomy.index_of(code).map(|k| &taxonomy.species()[k]) else {
            summary
                .skipped
                .push(format!("{what}: {code:?} is not in the taxonomy"));
            continue;
        };
        let (Some(w), Some(start), Some(end)) = (row.window, row.start_s, row.end_s) else {
            summary.skipped.push(format!("{what}: no window times"));
            continue;
        };
        let samples = decoded.entry(row.audio_path.clone()).or_insert_with(|| {
            silencio_audio::decode_path(export.join(&row.audio_path), &DecodeOptions::default())
                .map(|d| d.samples)
                .map_err(|e| e.to_string())
        });
        let samples = match samples {
            Ok(s) => s,
            Err(e) => {
                summary.skipped.push(format!("{what}: {e}"));
                continue;
            }
        };
        let rate = DecodeOptions::default().target_rate.unwrap_or(32_000) as f64;
        let (a, b) = ((start * rate) as usize, (end * rate) as usize);
        if !(a < b && b <= samples.len() + rate as usize / 100) {
            summary
                .skipped
                .push(format!("{what}: {start}–{end} s is outside its audio"));
            continue;
        }
        let cut = &samples[a..b.min(samples.len())];
        let file = format!("{}_w{w}.ogg", row.request_id);
        let ogg = crate::mix::encode_ogg(cut, 0.6, (i as i32).wrapping_add(1))?;
        let path = clips.join(&file);
        std::fs::write(&path, ogg).map_err(io(&path))?;
        let filename = format!("{FEEDBACK_DIR}/{file}");
        match use_ {
            FeedbackUse::Negative => {
                summary.negatives += 1;
                negatives.push_str(&format!("{filename},{code}\n"));
                continue;
            }
            FeedbackUse::Confirmed => summary.confirmed += 1,
            FeedbackUse::Corrected => summary.corrected += 1,
        }
        let url = format!("feedback:{}", row.request_id);
        let fields: Vec<&str> = header
            .iter()
            .map(|col| match col {
                "primary_label" => code,
                "secondary_labels" => "[]",
                "type" => "[]",
                "filename" => filename.as_str(),
                "collection" => FEEDBACK_DIR,
                "rating" => "0.0",
                "url" => url.as_str(),
                "scientific_name" => species.scientific_name.as_str(),
                "common_name" => species.common_name.as_str(),
                "author" => "El Silencio guides' feedback",
                "license" => FEEDBACK_LICENCE,
                _ => "",
            })
            .collect();
        writer.write_record(&fields).map_err(csv_err)?;
        summary.rows_added += 1;
    }
    writer.flush().map_err(io(&out_csv))?;
    let p = stage.join(NEGATIVES_FILE);
    std::fs::write(&p, negatives).map_err(io(&p))?;
    let p = stage.join(SUMMARY_FILE);
    let json = serde_json::to_vec_pretty(&summary)
        .map_err(|e| Error::InvalidOptions(format!("feedback summary: {e}")))?;
    std::fs::write(&p, json).map_err(io(&p))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(verdict: &str, top: &str, correct: &str) -> ManifestRow {
        ManifestRow {
            request_id: "r".into(),
            audio_path: "audio/r.wav".into(),
            window: Some(0),
            start_s: Some(0.0),
            end_s: Some(5.0),
            top_code: top.into(),
            verdict: verdict.into(),
            correct_code: correct.into(),
        }
    }

    #[test]
    fn verdicts_map_to_uses() {
        assert_eq!(
            use_of(&row("right", "a", "")),
            Some((FeedbackUse::Confirmed, "a"))
        );
        assert_eq!(
            use_of(&row("wrong", "a", "b")),
            Some((FeedbackUse::Corrected, "b"))
        );
        assert_eq!(
            use_of(&row("wrong", "a", " ")),
            Some((FeedbackUse::Negative, "a"))
        );
        assert_eq!(
            use_of(&row("wrong", "a", "a")),
            Some((FeedbackUse::Confirmed, "a"))
        );
        assert_eq!(use_of(&row("", "a", "")), None);
    }
}
