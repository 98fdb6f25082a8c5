//! `silencio validate`: checks a BirdCLEF-layout tree and reports every problem without
//! stopping at the first; bad rows are reported and skipped, never fatal for the whole run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use silencio_audio::{DecodeOptions, decode_path};

use crate::error::Result;
use crate::taxonomy::Taxonomy;
use crate::train_csv::{RowProblem, TrainRecord, read_train_csv};

/// What to check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidateOptions {
    /// Decode every clip fully (finds corrupt and too-short audio); `false` only checks that
    /// files exist and are non-empty (fast on the full 7.8 GB set).
    pub decode: bool,
    /// Clips shorter than this (seconds) are reported as too short.
    pub min_duration_s: f64,
    /// Clips longer than this fail to decode as too long (bounds memory).
    pub max_duration_s: f64,
}

impl Default for ValidateOptions {
    fn default() -> Self {
        Self {
            decode: true,
            // Below 1 s a clip cannot fill the 1 s minimum of a padded 5 s window.
            min_duration_s: 1.0,
            max_duration_s: 3600.0,
        }
    }
}

/// A problem with one clip of `train_audio/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipProblem {
    /// 1-based `train.csv` line.
    pub line: u64,
    /// Path relative to `train_audio/`.
    pub filename: String,
    /// `missing`, `unreadable`, `too_short` or `empty`.
    pub kind: String,
    /// Details (the decoder's error, the duration).
    pub detail: String,
}

/// A label that the taxonomy does not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnknownLabel {
    /// 1-based `train.csv` line.
    pub line: u64,
    /// The label.
    pub label: String,
    /// `primary` (the row is skipped) or `secondary` (the label is dropped).
    pub field: String,
}

/// A row repeating an earlier row's recording.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Duplicate {
    /// 1-based line of the repeat (skipped).
    pub line: u64,
    /// Line of the first occurrence (kept).
    pub first_line: u64,
    /// The repeated filename.
    pub filename: String,
}

/// Recordings per species, in taxonomy order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassCount {
    /// Species code.
    pub code: String,
    /// Aves, Amphibia, Insecta or Mammalia.
    pub class_name: String,
    /// Usable rows with this primary label.
    pub primary: usize,
    /// Usable rows listing it as a secondary label.
    pub secondary: usize,
}

/// Everything `validate` found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationReport {
    /// The dataset root.
    pub root: PathBuf,
    /// Options used.
    pub options: ValidateOptions,
    /// Species in `taxonomy.csv`.
    pub species: usize,
    /// Data rows in `train.csv`.
    pub rows: usize,
    /// Rows that passed every check.
    pub usable_rows: usize,
    /// Rows that could not be parsed.
    pub malformed_rows: Vec<RowProblem>,
    /// Labels not in the taxonomy.
    pub unknown_labels: Vec<UnknownLabel>,
    /// Rows repeating a filename.
    pub duplicate_rows: Vec<Duplicate>,
    /// Missing, unreadable, empty or too-short clips.
    pub clip_problems: Vec<ClipProblem>,
    /// Rows whose rating is outside 0–5 (0 = unrated).
    pub rating_outliers: Vec<RowProblem>,
    /// Per-species counts over usable rows, taxonomy order.
    pub per_class: Vec<ClassCount>,
    /// Species with no usable recording as primary label.
    pub classes_without_recordings: Vec<String>,
    /// Total decoded audio of usable rows, seconds (0 without decoding).
    pub audio_seconds: f64,
    /// Files in `train_soundscapes/` (0 when the folder is absent).
    pub soundscapes: usize,
}

impl ValidationReport {
    /// Whether nothing at all was found.
    pub fn is_clean(&self) -> bool {
        self.malformed_rows.is_empty()
            && self.unknown_labels.is_empty()
            && self.duplicate_rows.is_empty()
            && self.clip_problems.is_empty()
            && self.rating_outliers.is_empty()
    }

    /// A readable summary, a few lines.
    pub fn summary(&self) -> String {
        let mut kinds: HashMap<&str, usize> = HashMap::new();
        for c in &self.clip_problems {
            *kinds.entry(c.kind.as_str()).or_default() += 1;
        }
        let clip = |k: &str| kinds.get(k).copied().unwrap_or(0);
        let mut s = format!(
            "{}: {} species, {} rows, {} usable ({:.1} h of audio), {} soundscapes\n",
            self.root.display(),
            self.species,
            self.rows,
            self.usable_rows,
            self.audio_seconds / 3600.0,
            self.soundscapes
        );
        s += &format!(
            "  malformed rows {}, unknown labels {}, duplicate rows {}, rating outliers {}\n",
            self.malformed_rows.len(),
            self.unknown_labels.len(),
            self.duplicate_rows.len(),
            self.rating_outliers.len()
        );
        s += &format!(
            "  clips: missing {}, unreadable {}, empty {}, too short {}\n",
            clip("missing"),
            clip("unreadable"),
            clip("empty"),
            clip("too_short")
        );
        s += &format!(
            "  species without recordings: {}",
            if self.classes_without_recordings.is_empty() {
                "none".to_string()
            } else {
                self.classes_without_recordings.join(", ")
            }
        );
        s
    }
}

/// A clip's duration in seconds, or its problem as (kind, detail).
type ClipCheck = std::result::Result<f64, (String, String)>;

fn check_clip(path: &Path, opts: &ValidateOptions) -> ClipCheck {
    if !opts.decode {
        return match std::fs::metadata(path) {
            Ok(m) if m.len() > 0 => Ok(0.0),
            Ok(_) => Err(("empty".into(), "zero bytes".into())),
            Err(e) => Err(("missing".into(), e.to_string())),
        };
    }
    if !path.exists() {
        return Err(("missing".into(), "no such file".into()));
    }
    let d = DecodeOptions {
        target_rate: None,
        max_duration_s: opts.max_duration_s,
        max_input_samples: None,
    };
    match decode_path(path, &d) {
        Ok(x) if x.info.duration_s < opts.min_duration_s => Err((
            "too_short".into(),
            format!("{:.3} s < {} s", x.info.duration_s, opts.min_duration_s),
        )),
        Ok(x) => Ok(x.info.duration_s),
        Err(silencio_audio::Error::Empty(m)) => Err(("empty".into(), m)),
        Err(e) => Err(("unreadable".into(), format!("{}: {e}", e.kind()))),
    }
}

/// Rows screened against the taxonomy, the same way for validation and ETL.
#[derive(Debug, Clone, Default)]
pub struct Screened<'a> {
    /// Rows to use: first occurrence of a filename, primary label in the taxonomy.
    pub usable: Vec<&'a TrainRecord>,
    /// Labels not in the taxonomy (a primary one skips the row, a secondary one is ignored).
    pub unknown_labels: Vec<UnknownLabel>,
    /// Repeated filenames (the later rows are skipped).
    pub duplicate_rows: Vec<Duplicate>,
    /// Ratings outside 0–5 (reported; the row is kept).
    pub rating_outliers: Vec<RowProblem>,
}

/// Screens `records`: duplicates and unknown primary labels are skipped, the rest reported.
pub fn screen_rows<'a>(records: &'a [TrainRecord], taxonomy: &Taxonomy) -> Screened<'a> {
    let mut out = Screened::default();
    let mut first_seen: HashMap<&str, u64> = HashMap::new();
    for r in records {
        if let Some(&first) = first_seen.get(r.filename.as_str()) {
            out.duplicate_rows.push(Duplicate {
                line: r.line,
                first_line: first,
                filename: r.filename.clone(),
            });
            continue;
        }
        first_seen.insert(&r.filename, r.line);
        for s in r
            .secondary_labels
            .iter()
            .filter(|s| taxonomy.index_of(s).is_none())
        {
            out.unknown_labels.push(UnknownLabel {
                line: r.line,
                label: s.clone(),
                field: "secondary".into(),
            });
        }
        if let Some(v) = r.rating.filter(|v| !(0.0..=5.0).contains(v)) {
            out.rating_outliers.push(RowProblem {
                line: r.line,
                reason: format!("rating {v} outside 0-5"),
            });
        }
        if taxonomy.index_of(&r.primary_label).is_none() {
            out.unknown_labels.push(UnknownLabel {
                line: r.line,
                label: r.primary_label.clone(),
                field: "primary".into(),
            });
            continue;
        }
        out.usable.push(r);
    }
    out
}

/// The usable rows of `records` (see [`screen_rows`]), owned: the input of the splits.
pub fn usable_records(records: &[TrainRecord], taxonomy: &Taxonomy) -> Vec<TrainRecord> {
    screen_rows(records, taxonomy)
        .usable
        .into_iter()
        .cloned()
        .collect()
}

/// Validates the tree at `root` (`taxonomy.csv`, `train.csv`, `train_audio/`,
/// `train_soundscapes/`). Fails only when `taxonomy.csv` or `train.csv` cannot be read.
pub fn validate(root: &Path, opts: &ValidateOptions) -> Result<ValidationReport> {
    let taxonomy = Taxonomy::from_csv(&root.join("taxonomy.csv"))?;
    let (records, malformed_rows) = read_train_csv(&root.join("train.csv"))?;
    let rows = records.len() + malformed_rows.len();

    let Screened {
        usable: candidates,
        unknown_labels,
        duplicate_rows,
        rating_outliers,
    } = screen_rows(&records, &taxonomy);

    let audio = root.join("train_audio");
    let checked: Vec<(&TrainRecord, ClipCheck)> = candidates
        .par_iter()
        .map(|r| (*r, check_clip(&audio.join(&r.filename), opts)))
        .collect();
    let mut clip_problems = Vec::new();
    let mut per_class: Vec<ClassCount> = taxonomy
        .species()
        .iter()
        .map(|s| ClassCount {
            code: s.primary_label.clone(),
            class_name: s.class_name.clone(),
            primary: 0,
            secondary: 0,
        })
        .collect();
    let mut usable_rows = 0;
    let mut audio_seconds = 0.0;
    for (r, res) in checked {
        match res {
            Ok(secs) => {
                usable_rows += 1;
                audio_seconds += secs;
                if let Some(i) = taxonomy.index_of(&r.primary_label) {
                    per_class[i].primary += 1;
                }
                for s in &r.secondary_labels {
                    if let Some(i) = taxonomy.index_of(s) {
                        per_class[i].secondary += 1;
                    }
                }
            }
            Err((kind, detail)) => clip_problems.push(ClipProblem {
                line: r.line,
                filename: r.filename.clone(),
                kind,
                detail,
            }),
        }
    }
    let classes_without_recordings = per_class
        .iter()
        .filter(|c| c.primary == 0)
        .map(|c| c.code.clone())
        .collect();
    let soundscapes = std::fs::read_dir(root.join("train_soundscapes"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().is_file())
                .count()
        })
        .unwrap_or(0);
    Ok(ValidationReport {
        root: root.to_path_buf(),
        options: opts.clone(),
        species: taxonomy.len(),
        rows,
        usable_rows,
        malformed_rows,
        unknown_labels,
        duplicate_rows,
        clip_problems,
        rating_outliers,
        per_class,
        classes_without_recordings,
        audio_seconds,
        soundscapes,
    })
}
