//! Models run over directories of soundscapes: the logic of `silencio eval` (a labelled set
//! scored into an [`EvalReport`]) and `silencio submission` (a Kaggle submission CSV).
//!
//! The crate never sees a model: the caller passes a scorer callback that turns one soundscape
//! file into per-window probabilities ([`Scored`]). This module pairs soundscape files with
//! BirdCLEF row ids (`{stem}_{end_second}`) and solution rows, checks that the solution's
//! species are the model's, assembles scores in solution row and column order with each row's
//! slice attributes, times the run against Kaggle's CPU budget ([`Timing`]), and renders the
//! column-aligned summary lines the CLI prints.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::error::{EXAMPLES, Error, Result};
use crate::gate::{GateConfig, GateDecision};
use crate::matrix::Matrix;
use crate::report::{EvalReport, ReportInput, ReportOptions};
use crate::slices;
use crate::submission::{self, SubmissionScore, Table, WINDOW_SECONDS};

/// Kaggle BirdCLEF 2025's CPU budget: about 700 one-minute test soundscapes in a 90-minute
/// CPU notebook.
pub const KAGGLE_SOUNDSCAPES: f64 = 700.0;
/// Kaggle BirdCLEF 2025's CPU notebook limit in seconds.
pub const KAGGLE_BUDGET_S: f64 = 90.0 * 60.0;

/// Audio files taken as soundscapes (lower-cased extension).
pub const SOUNDSCAPE_EXTENSIONS: [&str; 4] = ["ogg", "wav", "flac", "mp3"];

/// Width of the label column in the summary lines (`model:          …`).
const LABEL_WIDTH: usize = 16;

/// Slice attributes of each row, by row id (dimension → bin).
pub type WindowAttributes = HashMap<String, BTreeMap<String, String>>;

/// One scored soundscape, as the caller's scorer returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Probabilities per 5 s window, in the model's class order.
    pub rows: Vec<Vec<f32>>,
    /// Wall-clock seconds to decode, featurise and score it.
    pub seconds: f64,
    /// Its duration in seconds (0 when unknown).
    pub audio_s: f64,
}

/// Wall-clock totals of a run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timing {
    /// Soundscapes scored.
    pub soundscapes: usize,
    /// Seconds spent scoring them.
    pub seconds: f64,
    /// Seconds of audio they hold.
    pub audio_s: f64,
}

impl Timing {
    /// Counts one scored soundscape.
    pub fn add(&mut self, s: &Scored) {
        self.soundscapes += 1;
        self.seconds += s.seconds;
        self.audio_s += s.audio_s;
    }

    /// E.g. `0.85 s per soundscape (mean of 12) = 11.0% of Kaggle's CPU budget (…)`. Kaggle's
    /// soundscapes are one minute long; for other lengths the share is per minute of audio, so
    /// a set of short mixes still says whether the model fits the budget.
    pub fn summary(&self) -> String {
        let n = self.soundscapes.max(1) as f64;
        let mean = self.seconds / n;
        let mean_audio = self.audio_s / n;
        let budget = KAGGLE_BUDGET_S / KAGGLE_SOUNDSCAPES;
        let kaggle = format!(
            "Kaggle's CPU budget ({budget:.2} s per 1-minute soundscape: ~{KAGGLE_SOUNDSCAPES:.0} \
             in {:.0} min)",
            KAGGLE_BUDGET_S / 60.0
        );
        if (mean_audio - 60.0).abs() < 0.5 || self.audio_s <= 0.0 {
            format!(
                "{mean:.2} s per soundscape (mean of {}) = {:.1}% of {kaggle}",
                self.soundscapes,
                100.0 * mean / budget
            )
        } else {
            let per_minute = self.seconds / (self.audio_s / 60.0);
            format!(
                "{mean:.2} s per soundscape (mean of {}, {mean_audio:.1} s of audio each); \
                 {per_minute:.2} s per minute of audio = {:.1}% of {kaggle}",
                self.soundscapes,
                100.0 * per_minute / budget
            )
        }
    }
}

/// Checks that a model cuts BirdCLEF's rows: [`WINDOW_SECONDS`] windows every
/// [`WINDOW_SECONDS`]; any other grid would pair scores with the wrong row ids.
pub fn check_window_grid(model: &str, length_s: f64, hop_s: f64) -> Result<()> {
    let want = f64::from(WINDOW_SECONDS);
    if (length_s - want).abs() > 1e-9 || (hop_s - want).abs() > 1e-9 {
        return Err(Error::WindowGrid {
            model: model.to_string(),
            length_s,
            hop_s,
            want,
        });
    }
    Ok(())
}

/// The soundscapes of `dir` as `(stem, path)`, sorted by file name: files with one of
/// [`SOUNDSCAPE_EXTENSIONS`] (any case). Stems must be unique, since they become row ids.
pub fn soundscape_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    if !dir.is_dir() {
        return Err(Error::NotSoundscapeDir { dir: dir.into() });
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if !path.is_file() || !ext.is_some_and(|e| SOUNDSCAPE_EXTENSIONS.contains(&e.as_str())) {
            continue;
        }
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            files.push((stem.to_string(), path.clone()));
        }
    }
    files.sort_by(|a, b| a.1.file_name().cmp(&b.1.file_name()));
    if files.is_empty() {
        return Err(Error::NoSoundscapes {
            dir: dir.into(),
            extensions: SOUNDSCAPE_EXTENSIONS.map(|e| format!(".{e}")).join(", "),
        });
    }
    let mut seen = BTreeSet::new();
    let stems: BTreeSet<String> = files
        .iter()
        .filter(|(s, _)| !seen.insert(s.as_str()))
        .map(|(s, _)| s.clone())
        .collect();
    if !stems.is_empty() {
        return Err(Error::DuplicateStems {
            dir: dir.into(),
            stems,
        });
    }
    Ok(files)
}

/// `{stem}_{end_second}` split into the stem and the 0-based window index; `None` unless the
/// end second is a positive multiple of [`WINDOW_SECONDS`].
pub fn parse_row_id(id: &str) -> Option<(&str, usize)> {
    let (stem, end) = id.rsplit_once('_')?;
    let end: u32 = end.parse().ok()?;
    (!stem.is_empty() && end > 0 && end.is_multiple_of(WINDOW_SECONDS))
        .then(|| (stem, (end / WINDOW_SECONDS - 1) as usize))
}

/// The first [`EXAMPLES`] of `items`, for an error that lists them with their count.
fn first_few(items: &[String]) -> Vec<String> {
    items.iter().take(EXAMPLES).cloned().collect()
}

/// Slice attributes per row id from the mixer's `windows.csv` (`calls`, `snr_min_db`,
/// `background`; any column may be absent, `row_id` may not).
pub fn read_windows_csv(path: &Path) -> Result<WindowAttributes> {
    let csv_err = |source| Error::Csv {
        path: path.into(),
        source,
    };
    let mut rdr = csv::Reader::from_path(path).map_err(csv_err)?;
    let header = rdr.headers().map_err(csv_err)?.clone();
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let row_id = col("row_id").ok_or_else(|| Error::format(path, "no `row_id` column"))?;
    let (calls, snr, background) = (col("calls"), col("snr_min_db"), col("background"));
    let mut out = HashMap::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(csv_err)?;
        let line = i + 2;
        let field = |c: Option<usize>| c.and_then(|c| rec.get(c)).map(str::trim);
        let mut meta = BTreeMap::new();
        if let Some(v) = field(calls) {
            let n: usize = v.parse().map_err(|_| {
                Error::format(path, format!("line {line}: calls {v:?} is not a count"))
            })?;
            meta.insert(slices::DIM_OVERLAP.to_string(), slices::overlap_bin(n));
        }
        // Background-only windows have no SNR: they stay out of the SNR slices.
        if let Some(v) = field(snr).filter(|v| !v.is_empty()) {
            let db: f32 = v.parse().map_err(|_| {
                Error::format(path, format!("line {line}: snr_min_db {v:?} is not dB"))
            })?;
            meta.insert(slices::DIM_SNR.to_string(), slices::snr_bin(db));
        }
        if let Some(v) = field(background).filter(|v| !v.is_empty()) {
            let name = Path::new(v)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or(v);
            meta.insert(slices::DIM_BACKGROUND.to_string(), name.to_string());
        }
        let id = field(Some(row_id)).unwrap_or_default().to_string();
        out.insert(id, meta);
    }
    Ok(out)
}

/// A labelled soundscape set: `solution.csv`, `soundscapes/`, optionally the mixer's
/// `windows.csv`, checked against each other when opened.
#[derive(Debug, Clone)]
pub struct EvalSet {
    dir: PathBuf,
    solution_path: PathBuf,
    solution: Table,
    /// `(stem, window index)` of each solution row, solution order.
    rows: Vec<(String, usize)>,
    /// The soundscapes the solution names, `(stem, path)` in stem order.
    soundscapes: Vec<(String, PathBuf)>,
    soundscape_dir: PathBuf,
    unused: usize,
}

impl EvalSet {
    /// Opens `dir`: reads `solution.csv`, parses its row ids, and checks that every soundscape
    /// it names is in `soundscapes/`. `windows.csv` is read later, by [`EvalSet::evaluate`].
    pub fn open(dir: &Path) -> Result<Self> {
        let solution_path = dir.join("solution.csv");
        if !solution_path.is_file() {
            return Err(Error::NoSolution { dir: dir.into() });
        }
        let solution = submission::read_solution(&solution_path)?;

        // Rows: which soundscape and window each solution row is.
        let mut rows = Vec::with_capacity(solution.row_ids.len());
        for id in &solution.row_ids {
            let (stem, w) = parse_row_id(id).ok_or_else(|| {
                Error::format(
                    &solution_path,
                    format!(
                        "row_id {id:?} is not `{{soundscape}}_{{end second}}` with an end \
                         second that is a positive multiple of {WINDOW_SECONDS}"
                    ),
                )
            })?;
            rows.push((stem.to_string(), w));
        }
        let stems: BTreeSet<&str> = rows.iter().map(|(s, _)| s.as_str()).collect();
        let soundscape_dir = dir.join("soundscapes");
        let mut files: HashMap<String, PathBuf> =
            soundscape_files(&soundscape_dir)?.into_iter().collect();
        let absent: Vec<String> = stems
            .iter()
            .filter(|s| !files.contains_key(**s))
            .map(|s| s.to_string())
            .collect();
        if !absent.is_empty() {
            return Err(Error::AbsentSoundscapes {
                solution: solution_path,
                dir: soundscape_dir,
                count: absent.len(),
                examples: first_few(&absent),
            });
        }
        let unused = files.len() - stems.len();
        let soundscapes = stems
            .iter()
            .filter_map(|s| files.remove(*s).map(|p| (s.to_string(), p)))
            .collect();
        Ok(Self {
            dir: dir.into(),
            solution_path,
            solution,
            rows,
            soundscapes,
            soundscape_dir,
            unused,
        })
    }

    /// The directory it was opened from, as given.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The solution: row ids, species codes and 0/1 labels.
    pub fn solution(&self) -> &Table {
        &self.solution
    }

    /// The soundscapes the solution names, `(stem, path)` in the order they are scored.
    pub fn soundscapes(&self) -> &[(String, PathBuf)] {
        &self.soundscapes
    }

    /// How many soundscapes of `soundscapes/` have no solution row (they are skipped).
    pub fn unused_soundscapes(&self) -> usize {
        self.unused
    }

    /// The note about skipped soundscapes, when there are any (without the `note: ` prefix).
    pub fn unused_note(&self) -> Option<String> {
        (self.unused > 0).then(|| {
            format!(
                "{} soundscape(s) in {} have no row in solution.csv and are skipped",
                self.unused,
                self.soundscape_dir.display()
            )
        })
    }

    /// Looks the solution's species up among a model's `(code, class name)` pairs (model
    /// order); every solution species must be there. `model` names it in errors and titles.
    pub fn columns<'a>(
        &self,
        model: &str,
        species: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Columns> {
        let species: Vec<(&str, &str)> = species.into_iter().collect();
        let column_of: HashMap<&str, usize> = species
            .iter()
            .enumerate()
            .map(|(i, (code, _))| (*code, i))
            .collect();
        let unknown: Vec<String> = self
            .solution
            .species
            .iter()
            .filter(|s| !column_of.contains_key(s.as_str()))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            return Err(Error::UnknownSpecies {
                solution: self.solution_path.clone(),
                model: model.to_string(),
                count: unknown.len(),
                examples: first_few(&unknown),
            });
        }
        let index: Vec<usize> = self
            .solution
            .species
            .iter()
            .filter_map(|s| column_of.get(s.as_str()).copied())
            .collect();
        let class = index.iter().map(|&j| species[j].1.to_string()).collect();
        Ok(Columns {
            model: model.to_string(),
            ignored: species.len() - index.len(),
            index,
            class,
        })
    }

    /// Scores every soundscape the solution names with `score` (in [`EvalSet::soundscapes`]
    /// order), then builds the report: scores in solution row and column order, each row's
    /// slice attributes from `windows.csv` (when present) and its stem's time of day.
    ///
    /// `score`'s own errors pass through unchanged; this crate's become `E` through `From`.
    pub fn evaluate<E, F>(&self, columns: &Columns, mut score: F) -> Result<Evaluation, E>
    where
        E: From<Error>,
        F: FnMut(&Path) -> Result<Scored, E>,
    {
        let mut timing = Timing::default();
        let mut scored: HashMap<&str, Scored> = HashMap::new();
        for (stem, path) in &self.soundscapes {
            let s = score(path)?;
            timing.add(&s);
            scored.insert(stem, s);
        }
        let report = self.report(columns, &scored)?;
        Ok(Evaluation { report, timing })
    }

    fn report(&self, columns: &Columns, scored: &HashMap<&str, Scored>) -> Result<EvalReport> {
        let cols = &columns.index;
        let windows = match self.dir.join("windows.csv") {
            p if p.is_file() => Some(read_windows_csv(&p)?),
            _ => None,
        };
        let mut data = Vec::with_capacity(self.rows.len() * cols.len());
        let mut rows_meta = Vec::with_capacity(self.rows.len());
        let mut past_end = Vec::new();
        for ((stem, w), id) in self.rows.iter().zip(&self.solution.row_ids) {
            match scored.get(stem.as_str()).and_then(|s| s.rows.get(*w)) {
                Some(row) => {
                    for &j in cols {
                        let v = row.get(j).copied().ok_or_else(|| Error::ShapeMismatch {
                            what: format!("scores of {stem}"),
                            expected: format!("more than {j} classes per window"),
                            got: row.len().to_string(),
                        })?;
                        data.push(v);
                    }
                }
                None => past_end.push(id.clone()),
            }
            let mut meta = windows
                .as_ref()
                .and_then(|m| m.get(id))
                .cloned()
                .unwrap_or_default();
            if let Some(t) = slices::time_of_day(stem) {
                meta.insert(slices::DIM_TIME_OF_DAY.to_string(), t);
            }
            rows_meta.push(meta);
        }
        if !past_end.is_empty() {
            return Err(Error::RowsPastEnd {
                solution: self.solution_path.clone(),
                count: past_end.len(),
                examples: first_few(&past_end),
            });
        }
        let scores = Matrix::new(self.rows.len(), cols.len(), data)?;
        let title = format!("{} on {}", columns.model, self.dir.display());
        EvalReport::build(
            ReportInput {
                title: &title,
                scores: &scores,
                labels: &self.solution.values,
                species: &self.solution.species,
                column_class: &columns.class,
                rows_meta: &rows_meta,
            },
            ReportOptions::default(),
        )
    }
}

/// The solution's species as columns of a model's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Columns {
    model: String,
    /// Model column of each solution species, solution order.
    index: Vec<usize>,
    /// Taxon class of each solution species, solution order.
    class: Vec<String>,
    ignored: usize,
}

impl Columns {
    /// The model column of each solution species, solution order.
    pub fn index(&self) -> &[usize] {
        &self.index
    }

    /// How many of the model's species the solution lacks (they are not scored).
    pub fn ignored(&self) -> usize {
        self.ignored
    }

    /// The note about unscored model species, when there are any (without `note: `).
    pub fn ignored_note(&self) -> Option<String> {
        (self.ignored > 0).then(|| {
            format!(
                "{} of the model's species are not in solution.csv and not scored",
                self.ignored
            )
        })
    }
}

/// What [`EvalSet::evaluate`] returns.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The report (not yet written).
    pub report: EvalReport,
    /// How long scoring took.
    pub timing: Timing,
}

/// Runs the quality gate when a bar is set, `None` when neither is.
pub fn gate(
    report: &EvalReport,
    min_macro_auc: Option<f64>,
    min_macro_ap: Option<f64>,
) -> Option<GateDecision> {
    (min_macro_auc.is_some() || min_macro_ap.is_some()).then(|| {
        GateConfig {
            min_macro_auc,
            min_macro_ap,
            ..GateConfig::default()
        }
        .evaluate(report)
    })
}

/// A failed gate as an error (`kind() == "gate"`), a passed one as `Ok`.
pub fn gate_result(decision: &GateDecision) -> Result<()> {
    if decision.passed {
        Ok(())
    } else {
        Err(Error::GateFailed {
            reasons: decision.reasons.clone(),
        })
    }
}

/// `label:` padded to the value column.
fn line(label: &str, value: impl std::fmt::Display) -> String {
    format!("{:<LABEL_WIDTH$}{value}", format!("{label}:"))
}

fn metric(v: Option<f64>) -> String {
    v.map_or_else(|| "undefined".into(), |v| format!("{v:.4}"))
}

/// E.g. `demo@1, untrained (loaded in 0.25 s)`.
pub fn model_line(version: &str, trained: bool, load_s: f64) -> String {
    let untrained = if trained { "" } else { ", untrained" };
    format!("{version}{untrained} (loaded in {load_s:.2} s)")
}

/// The summary of `silencio eval`, one line each: model, eval set, metrics, speed, report
/// paths. `model` is [`model_line`]'s text.
pub fn eval_lines(
    model: &str,
    set: &EvalSet,
    ev: &Evaluation,
    json: &Path,
    html: &Path,
) -> Vec<String> {
    let (r, o) = (&ev.report, &ev.report.overall);
    vec![
        line("model", model),
        line(
            "eval set",
            format!(
                "{}: {} soundscape(s), {} windows, {} species",
                set.dir.display(),
                set.soundscapes.len(),
                r.n_rows,
                r.n_species
            ),
        ),
        line(
            "macro ROC-AUC",
            format!(
                "{} (BirdCLEF metric; {} species scored)",
                metric(o.macro_auc),
                o.n_auc_scored
            ),
        ),
        line(
            "macro mAP",
            format!(
                "{} ({} species with a positive)",
                metric(o.macro_ap),
                o.n_ap_scored
            ),
        ),
        line("speed", ev.timing.summary()),
        line(
            "report",
            format!("{} and {}", json.display(), html.display()),
        ),
    ]
}

/// The gate's lines: one per cleared bar, then `gate: passed` when every bar was cleared (a
/// failure is [`gate_result`]'s error instead).
pub fn gate_lines(decision: &GateDecision) -> Vec<String> {
    let mut lines: Vec<String> = decision
        .cleared
        .iter()
        .map(|c| line("gate cleared", c))
        .collect();
    if decision.passed {
        lines.push(line("gate", "passed"));
    }
    lines
}

/// A submission scored from a directory of soundscapes, not yet written.
#[derive(Debug, Clone)]
pub struct SubmissionRun {
    /// Row ids, soundscape (file-name) order then window order.
    pub row_ids: Vec<String>,
    /// Species codes, the model's order.
    pub species: Vec<String>,
    /// Scores, `row_ids.len() × species.len()`.
    pub scores: Matrix,
    /// Soundscapes scored.
    pub soundscapes: usize,
    /// How long scoring took.
    pub timing: Timing,
}

/// Scores `files` (e.g. from [`soundscape_files`]) in order into a submission with the model's
/// `species` as columns. `score`'s errors pass through unchanged.
pub fn score_submission<E, F>(
    files: &[(String, PathBuf)],
    species: Vec<String>,
    mut score: F,
) -> Result<SubmissionRun, E>
where
    E: From<Error>,
    F: FnMut(&Path) -> Result<Scored, E>,
{
    let mut timing = Timing::default();
    let mut row_ids = Vec::new();
    let mut data = Vec::new();
    for (stem, path) in files {
        let s = score(path)?;
        timing.add(&s);
        row_ids.extend(submission::soundscape_row_ids(stem, s.rows.len()));
        for row in s.rows {
            data.extend(row);
        }
    }
    let scores = Matrix::new(row_ids.len(), species.len(), data)?;
    Ok(SubmissionRun {
        row_ids,
        species,
        scores,
        soundscapes: files.len(),
        timing,
    })
}

impl SubmissionRun {
    /// Writes the submission CSV (atomically), creating its directory first.
    pub fn write(&self, out: &Path) -> Result<()> {
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        submission::write_submission(out, &self.species, &self.row_ids, &self.scores)
    }

    /// The summary of `silencio submission`: file, model, speed. `model` is [`model_line`]'s
    /// text.
    pub fn lines(&self, out: &Path, model: &str) -> Vec<String> {
        vec![
            line(
                "submission",
                format!(
                    "{}: {} rows x {} species from {} soundscape(s)",
                    out.display(),
                    self.row_ids.len(),
                    self.species.len(),
                    self.soundscapes
                ),
            ),
            line("model", model),
            line("speed", self.timing.summary()),
        ]
    }
}

/// `BirdCLEF score: …` for a submission scored against `solution`.
pub fn score_line(s: &SubmissionScore, solution: &Path) -> String {
    line(
        "BirdCLEF score",
        format!(
            "{:.10} (macro ROC-AUC against {}, {} species scored)",
            s.score,
            solution.display(),
            s.summary.n_auc_scored
        ),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// An eval set of two 10 s soundscapes (`a`, `b`), species `x` and `y`, plus a stray `c`.
    fn eval_set(dir: &Path) {
        write(
            &dir.join("solution.csv"),
            "row_id,x,y\na_5,1,0\na_10,0,1\nb_5,0,1\nb_10,1,0\n",
        );
        for f in ["a.ogg", "b.WAV", "c.flac", "notes.txt"] {
            write(&dir.join("soundscapes").join(f), "");
        }
    }

    /// A model of classes `y`, `z`, `x` (birds but `z`) scoring `x` high where it is present.
    fn fake_score(path: &Path) -> Result<Scored> {
        let rows = match path.file_stem().and_then(|s| s.to_str()) {
            Some("a") => vec![vec![0.2, 0.0, 0.9], vec![0.8, 0.0, 0.1]],
            _ => vec![vec![0.7, 0.0, 0.3], vec![0.1, 0.0, 0.6]],
        };
        Ok(Scored {
            rows,
            seconds: 0.5,
            audio_s: 10.0,
        })
    }

    const MODEL: [(&str, &str); 3] = [("y", "Aves"), ("z", "Insecta"), ("x", "Aves")];

    #[test]
    fn row_ids_split_into_stem_and_window() {
        assert_eq!(parse_row_id("soundscape_1_5"), Some(("soundscape_1", 0)));
        assert_eq!(parse_row_id("a_60"), Some(("a", 11)));
        for bad in ["a_7", "a_0", "_5", "a5", "a_-5", "a_x", ""] {
            assert_eq!(parse_row_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn windows_csv_gives_slice_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("windows.csv");
        write(
            &p,
            "row_id,calls,snr_min_db,background\nm_5,2,3.5,bg/rain.ogg\nm_10,0,,\n",
        );
        let w = read_windows_csv(&p).unwrap();
        let first = &w["m_5"];
        assert_eq!(first[slices::DIM_OVERLAP], slices::overlap_bin(2));
        assert_eq!(first[slices::DIM_SNR], slices::snr_bin(3.5));
        assert_eq!(first[slices::DIM_BACKGROUND], "rain");
        // No SNR and no background: those dimensions are absent, not empty.
        let second = &w["m_10"];
        assert_eq!(second.len(), 1);
        assert_eq!(second[slices::DIM_OVERLAP], slices::overlap_bin(0));

        // Only row_id is required.
        write(&p, "row_id\nm_5\n");
        assert!(read_windows_csv(&p).unwrap()["m_5"].is_empty());

        write(&p, "id,calls\nm_5,1\n");
        let e = read_windows_csv(&p).unwrap_err();
        assert_eq!(e.kind(), "format");
        assert!(e.to_string().contains("no `row_id` column"), "{e}");

        write(&p, "row_id,calls\nm_5,1\nm_10,many\n");
        let e = read_windows_csv(&p).unwrap_err();
        assert!(e.to_string().contains("line 3: calls \"many\""), "{e}");
        write(&p, "row_id,snr_min_db\nm_5,loud\n");
        let e = read_windows_csv(&p).unwrap_err();
        assert!(e.to_string().contains("line 2: snr_min_db"), "{e}");
    }

    #[test]
    fn soundscape_files_checks() {
        let dir = tempfile::tempdir().unwrap();
        let e = soundscape_files(&dir.path().join("none")).unwrap_err();
        assert_eq!(e.kind(), "missing");
        assert!(e.to_string().ends_with("is not a directory of soundscapes"));

        write(&dir.path().join("readme.txt"), "");
        let e = soundscape_files(dir.path()).unwrap_err();
        assert_eq!(e.kind(), "missing");
        assert!(
            e.to_string()
                .starts_with("no soundscapes (.ogg, .wav, .flac, .mp3) in ")
        );

        write(&dir.path().join("b.mp3"), "");
        write(&dir.path().join("a.OGG"), "");
        let files = soundscape_files(dir.path()).unwrap();
        let stems: Vec<&str> = files.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(stems, ["a", "b"]);

        write(&dir.path().join("a.wav"), "");
        let e = soundscape_files(dir.path()).unwrap_err();
        assert_eq!(e.kind(), "invalid_input");
        assert!(
            e.to_string().ends_with(
                ": several files share the stem(s) {\"a\"}, so their row ids would collide"
            ),
            "{e}"
        );
    }

    #[test]
    fn eval_set_open_checks() {
        let dir = tempfile::tempdir().unwrap();
        let e = EvalSet::open(dir.path()).unwrap_err();
        assert_eq!(e.kind(), "missing");
        assert!(e.to_string().contains("has no solution.csv"), "{e}");

        eval_set(dir.path());
        let set = EvalSet::open(dir.path()).unwrap();
        let stems: Vec<&str> = set.soundscapes().iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(stems, ["a", "b"]);
        assert_eq!(set.unused_soundscapes(), 1);
        assert!(
            set.unused_note()
                .unwrap()
                .starts_with("1 soundscape(s) in ")
        );

        write(
            &dir.path().join("solution.csv"),
            "row_id,x\na_5,1\ngone_5,0\ngone2_5,0\n",
        );
        let e = EvalSet::open(dir.path()).unwrap_err();
        assert_eq!(e.kind(), "missing");
        assert!(e.to_string().ends_with(": gone, gone2"), "{e}");

        write(&dir.path().join("solution.csv"), "row_id,x\na_7,1\n");
        let e = EvalSet::open(dir.path()).unwrap_err();
        assert_eq!(e.kind(), "format");
        assert!(e.to_string().contains("\"a_7\""), "{e}");
    }

    #[test]
    fn columns_follow_the_solution_and_unknown_species_fail() {
        let dir = tempfile::tempdir().unwrap();
        eval_set(dir.path());
        let set = EvalSet::open(dir.path()).unwrap();
        let cols = set.columns("m@1", MODEL).unwrap();
        assert_eq!(cols.index(), [2, 0]);
        assert_eq!(cols.ignored(), 1);
        assert!(cols.ignored_note().unwrap().starts_with("1 of the model's"));

        let e = set.columns("m@1", [("x", "Aves")]).unwrap_err();
        assert_eq!(e.kind(), "unknown_species");
        assert!(
            e.to_string()
                .ends_with("names 1 species that model m@1 does not predict: y"),
            "{e}"
        );
    }

    #[test]
    fn evaluate_assembles_scores_in_solution_order() {
        let dir = tempfile::tempdir().unwrap();
        eval_set(dir.path());
        write(
            &dir.path().join("windows.csv"),
            "row_id,calls\na_5,1\na_10,1\nb_5,1\nb_10,1\n",
        );
        let set = EvalSet::open(dir.path()).unwrap();
        let cols = set.columns("m@1", MODEL).unwrap();
        let mut seen = Vec::new();
        let ev = set
            .evaluate(&cols, |p: &Path| {
                seen.push(p.file_name().unwrap().to_owned());
                fake_score(p)
            })
            .unwrap();
        assert_eq!(seen, ["a.ogg", "b.WAV"]);
        // The fake model ranks every positive above every negative.
        assert_eq!(ev.report.overall.macro_auc, Some(1.0));
        assert_eq!(ev.report.n_rows, 4);
        assert_eq!(ev.timing.soundscapes, 2);
        assert!(
            ev.report
                .slices
                .iter()
                .any(|s| s.dimension == slices::DIM_OVERLAP)
        );

        let lines = eval_lines(
            "m@1 (loaded in 0.10 s)",
            &set,
            &ev,
            "r.json".as_ref(),
            "r.html".as_ref(),
        );
        assert_eq!(lines[0], "model:          m@1 (loaded in 0.10 s)");
        assert!(
            lines[1].ends_with(": 2 soundscape(s), 4 windows, 2 species"),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[2],
            "macro ROC-AUC:  1.0000 (BirdCLEF metric; 2 species scored)"
        );
        assert_eq!(lines[5], "report:         r.json and r.html");
    }

    #[test]
    fn rows_past_the_end_and_scorer_errors() {
        let dir = tempfile::tempdir().unwrap();
        eval_set(dir.path());
        let set = EvalSet::open(dir.path()).unwrap();
        let cols = set.columns("m@1", MODEL).unwrap();
        let e = set
            .evaluate(&cols, |p: &Path| {
                let mut s = fake_score(p)?;
                s.rows.truncate(1);
                Ok::<_, Error>(s)
            })
            .unwrap_err();
        assert_eq!(e.kind(), "missing");
        assert!(
            e.to_string()
                .ends_with("lie past the end of their soundscape: a_10, b_10")
        );

        // The scorer's own error type passes through.
        #[derive(Debug)]
        enum Mine {
            Model,
            Eval(Error),
        }
        impl From<Error> for Mine {
            fn from(e: Error) -> Self {
                Mine::Eval(e)
            }
        }
        let e = set
            .evaluate(&cols, |_: &Path| Err(Mine::Model))
            .unwrap_err();
        assert!(matches!(e, Mine::Model));
        let e = set
            .evaluate(&cols, |_: &Path| {
                Ok::<_, Mine>(Scored {
                    rows: vec![],
                    seconds: 0.0,
                    audio_s: 0.0,
                })
            })
            .unwrap_err();
        assert!(
            matches!(e, Mine::Eval(ref e) if e.kind() == "missing"),
            "{e:?}"
        );
    }

    #[test]
    fn long_lists_are_cut_with_an_ellipsis() {
        let dir = tempfile::tempdir().unwrap();
        eval_set(dir.path());
        let set = EvalSet::open(dir.path()).unwrap();
        let e = set.columns("m", [("q", "Aves")]).unwrap_err();
        assert!(e.to_string().ends_with(": x, y"), "{e}");
        let e = Error::UnknownSpecies {
            solution: "s.csv".into(),
            model: "m".into(),
            count: 7,
            examples: first_few(&(0..7).map(|i| i.to_string()).collect::<Vec<_>>()),
        };
        assert_eq!(
            e.to_string(),
            "s.csv names 7 species that model m does not predict: 0, 1, 2, 3, 4, …"
        );
    }

    #[test]
    fn window_grid_and_gate_kinds() {
        assert!(check_window_grid("m", 5.0, 5.0).is_ok());
        let e = check_window_grid("m@2", 3.0, 1.5).unwrap_err();
        assert_eq!(e.kind(), "invalid_config");
        assert_eq!(
            e.to_string(),
            "bundle m@2 cuts 3 s windows every 1.5 s; BirdCLEF rows are 5 s windows every 5 s"
        );
        let failed = GateDecision {
            passed: false,
            reasons: vec!["a < 1".into(), "b < 2".into()],
            cleared: vec!["c >= 0".into()],
        };
        assert_eq!(gate_lines(&failed), ["gate cleared:   c >= 0"]);
        let e = gate_result(&failed).unwrap_err();
        assert_eq!(e.kind(), "gate");
        assert_eq!(e.to_string(), "quality gate failed: a < 1; b < 2");
        let passed = GateDecision {
            passed: true,
            ..failed
        };
        assert!(gate_result(&passed).is_ok());
        assert_eq!(
            gate_lines(&passed).last().unwrap(),
            "gate:           passed"
        );
    }

    #[test]
    fn timing_summary_text() {
        let mut t = Timing::default();
        for _ in 0..2 {
            t.add(&Scored {
                rows: vec![],
                seconds: 0.77,
                audio_s: 60.0,
            });
        }
        assert_eq!(
            t.summary(),
            "0.77 s per soundscape (mean of 2) = 10.0% of Kaggle's CPU budget (7.71 s per \
             1-minute soundscape: ~700 in 90 min)"
        );
        let short = Timing {
            soundscapes: 4,
            seconds: 2.0,
            audio_s: 120.0,
        };
        assert_eq!(
            short.summary(),
            "0.50 s per soundscape (mean of 4, 30.0 s of audio each); 1.00 s per minute of \
             audio = 13.0% of Kaggle's CPU budget (7.71 s per 1-minute soundscape: ~700 in 90 \
             min)"
        );
        // Durations unknown: per soundscape, as if a minute each.
        let unknown = Timing {
            soundscapes: 0,
            seconds: 0.0,
            audio_s: 0.0,
        };
        assert!(
            unknown
                .summary()
                .starts_with("0.00 s per soundscape (mean of 0) = 0.0%")
        );
    }

    #[test]
    fn submission_rows_follow_files_and_windows() {
        let dir = tempfile::tempdir().unwrap();
        eval_set(dir.path());
        let files = soundscape_files(&dir.path().join("soundscapes")).unwrap();
        let species: Vec<String> = MODEL.iter().map(|(c, _)| c.to_string()).collect();
        let run = score_submission(&files, species, fake_score).unwrap();
        assert_eq!(run.row_ids, ["a_5", "a_10", "b_5", "b_10", "c_5", "c_10"]);
        assert_eq!(run.scores.n_rows(), 6);
        let out = dir.path().join("out/sub.csv");
        run.write(&out).unwrap();
        let back = submission::read_submission(&out).unwrap();
        assert_eq!(back.row_ids, run.row_ids);
        let lines = run.lines("sub.csv".as_ref(), "m@1 (loaded in 0.10 s)");
        assert_eq!(
            lines[0],
            "submission:     sub.csv: 6 rows x 3 species from 3 soundscape(s)"
        );
        assert!(lines[2].starts_with("speed:          0.50 s per soundscape (mean of 3, 10.0 s"));
    }
}
