//! Writing identifications the way their readers expect: JSON for programs, CSV and the
//! Raven selection table and Audacity label track that BirdNET-Analyzer users already load.

use serde::Serialize;
use silencio_common::csv::field as csv_field;

use crate::classifier::{Identification, SpeciesScore, WindowScores};
use crate::{Error, Result};

/// Output formats of `silencio identify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{model_version, windows: [{start_s, end_s, species: [...]}]}`.
    Json,
    /// One row per (window, species): `Start (s),End (s),Scientific name,Common name,
    /// Species code,Class,Confidence,File` (BirdNET-Analyzer's CSV columns plus code and class).
    Csv,
    /// Raven Pro selection table, BirdNET-Analyzer's column set.
    Raven,
    /// Audacity label track: `start<TAB>end<TAB>Scientific, Common<TAB>confidence`.
    Audacity,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "csv" => Ok(Format::Csv),
            "raven" | "table" => Ok(Format::Raven),
            "audacity" => Ok(Format::Audacity),
            other => Err(Error::Format(format!(
                "unknown output format {other:?} (json, csv, raven, audacity)"
            ))),
        }
    }
}

/// What to keep and how to label it.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Species per window.
    pub top_k: usize,
    /// Minimum score to report.
    pub min_score: f32,
    /// The input's path, for the CSV `File` and Raven `Begin Path` columns.
    pub file: String,
    /// Raven `Low Freq (Hz)`.
    pub low_hz: f64,
    /// Raven `High Freq (Hz)`.
    pub high_hz: f64,
    /// The model's licences, listed in the JSON report (with their status) so that whoever
    /// reads the identifications sees what the model's weights and data allow.
    pub licences: Vec<crate::licence::Licence>,
    /// What the location filter did, when one was applied (listed in the JSON report).
    pub location: Option<crate::location::FilterOutcome>,
}

#[derive(Serialize)]
struct JsonWindow {
    start_s: f64,
    end_s: f64,
    species: Vec<SpeciesScore>,
}

#[derive(Serialize)]
struct JsonReport {
    model_version: String,
    licences: Vec<crate::licence::Licence>,
    licence_status: crate::licence::LicenceStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<crate::location::FilterOutcome>,
    windows: Vec<JsonWindow>,
}

/// The Raven header BirdNET-Analyzer writes.
pub const RAVEN_HEADER: &str = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tCommon Name\tSpecies Code\tConfidence\tBegin Path\tFile Offset (s)\n";

/// The CSV header.
pub const CSV_HEADER: &str =
    "Start (s),End (s),Scientific name,Common name,Species code,Class,Confidence,File\n";

fn tsv_field(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// Every reported (window, species) pair, window by window, best species first.
fn detections<'a>(
    id: &'a Identification,
    opts: &'a RenderOptions,
) -> impl Iterator<Item = (&'a WindowScores, SpeciesScore)> + 'a {
    id.windows.iter().enumerate().flat_map(move |(i, w)| {
        id.top_k(i, opts.top_k, opts.min_score)
            .into_iter()
            .map(move |r| (w, r))
    })
}

/// Renders `id` in `format`.
pub fn render(id: &Identification, format: Format, opts: &RenderOptions) -> Result<String> {
    let rows = |i: usize| id.top_k(i, opts.top_k, opts.min_score);
    let t = |x: f64| format!("{x:.1}");
    Ok(match format {
        Format::Json => {
            let report = JsonReport {
                model_version: id.model_version.clone(),
                licences: opts.licences.clone(),
                licence_status: crate::licence::LicenceStatus::of(&opts.licences),
                location: opts.location.clone(),
                windows: id
                    .windows
                    .iter()
                    .enumerate()
                    .map(|(i, w)| JsonWindow {
                        start_s: w.start_s,
                        end_s: w.end_s,
                        species: rows(i),
                    })
                    .collect(),
            };
            let mut s =
                serde_json::to_string_pretty(&report).map_err(|e| Error::Format(e.to_string()))?;
            s.push('\n');
            s
        }
        Format::Csv => {
            let mut s = CSV_HEADER.to_string();
            for (w, r) in detections(id, opts) {
                s.push_str(&format!(
                    "{},{},{},{},{},{},{:.4},{}\n",
                    t(w.start_s),
                    t(w.end_s),
                    csv_field(&r.scientific_name),
                    csv_field(&r.common_name),
                    csv_field(&r.code),
                    csv_field(&r.class_name),
                    r.score,
                    csv_field(&opts.file)
                ));
            }
            s
        }
        Format::Raven => {
            let mut s = RAVEN_HEADER.to_string();
            for (sel, (w, r)) in (1..).zip(detections(id, opts)) {
                s.push_str(&format!(
                    "{sel}\tSpectrogram 1\t1\t{}\t{}\t{}\t{}\t{}\t{}\t{:.4}\t{}\t{}\n",
                    t(w.start_s),
                    t(w.end_s),
                    opts.low_hz.round(),
                    opts.high_hz.round(),
                    tsv_field(&r.common_name),
                    tsv_field(&r.code),
                    r.score,
                    tsv_field(&opts.file),
                    t(w.start_s)
                ));
            }
            s
        }
        Format::Audacity => {
            let mut s = String::new();
            for (w, r) in detections(id, opts) {
                s.push_str(&format!(
                    "{}\t{}\t{}, {}\t{:.4}\n",
                    t(w.start_s),
                    t(w.end_s),
                    tsv_field(&r.scientific_name),
                    tsv_field(&r.common_name),
                    r.score
                ));
            }
            s
        }
    })
}
