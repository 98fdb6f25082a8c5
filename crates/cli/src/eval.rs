//! `silencio eval` and `silencio submission`: a model bundle run over soundscapes, scored with
//! the BirdCLEF 2025 metric into a report, or written as a Kaggle submission CSV. Thin:
//! scoring is silencio-infer's; the metric, report, gate and CSV format are silencio-eval's.
//! This module only pairs soundscape files with row ids and solution rows, and times the run.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use silencio_eval::submission::{self, WINDOW_SECONDS};
use silencio_eval::{EvalReport, GateConfig, Matrix, ReportInput, ReportOptions, slices};
use silencio_infer::Classifier;

use crate::Failure;
use crate::models::{open_classifier, registry_default};

/// Kaggle BirdCLEF 2025's CPU budget: about 700 one-minute test soundscapes in a 90-minute
/// CPU notebook.
const KAGGLE_SOUNDSCAPES: f64 = 700.0;
const KAGGLE_BUDGET_S: f64 = 90.0 * 60.0;

/// Audio files taken as soundscapes (lower-cased extension).
const SOUNDSCAPE_EXTENSIONS: [&str; 4] = ["ogg", "wav", "flac", "mp3"];

/// How many examples an error lists.
const EXAMPLES: usize = 5;

/// The model and how to run it (shared by `eval` and `submission`).
#[derive(clap::Args)]
pub struct ModelArgs {
    /// A model bundle directory, or `registry` for the registry's production version, else
    /// staging (also the default).
    #[arg(long, env = "SILENCIO_MODEL")]
    pub model: Option<String>,
    /// Registry root used when --model is not given (or is `registry`).
    #[arg(long, env = "SILENCIO_REGISTRY", default_value = "registry")]
    pub registry: PathBuf,
    /// Compute device: flex, wgpu[:N], cuda[:N].
    #[arg(long, env = "SILENCIO_DEVICE", default_value = "flex")]
    pub device: String,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Longest accepted soundscape in seconds.
    #[arg(long, env = "SILENCIO_MAX_DURATION_S", default_value_t = 3600.0)]
    pub max_duration_s: f64,
}

/// `silencio eval`.
#[derive(clap::Args)]
pub struct EvalArgs {
    /// Labelled soundscape set: `soundscapes/*.ogg` (or .wav/.flac/.mp3) and `solution.csv`
    /// (`row_id` = `{stem}_{end_second}`, one 0/1 column per species), optionally the mixer's
    /// `windows.csv` (SNR, overlap and background slices).
    #[arg(long)]
    pub data: PathBuf,
    /// Report directory: `report.json` and `report.html` (written atomically).
    #[arg(long, default_value = "eval-report")]
    pub out: PathBuf,
    /// Quality gate: fail (error[gate], exit 2) when the macro ROC-AUC is below this.
    #[arg(long)]
    pub min_macro_auc: Option<f64>,
    /// Quality gate: fail (error[gate], exit 2) when the macro AP is below this.
    #[arg(long)]
    pub min_macro_ap: Option<f64>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `silencio submission`.
#[derive(clap::Args)]
pub struct SubmissionArgs {
    /// Directory of soundscapes (.ogg, .wav, .flac, .mp3), scored in file-name order.
    pub soundscapes: PathBuf,
    /// Submission CSV (written atomically).
    #[arg(long, default_value = "submission.csv")]
    pub out: PathBuf,
    /// Also score the submission against this solution CSV and print the BirdCLEF score.
    #[arg(long)]
    pub score_against: Option<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// One scored soundscape.
struct Scored {
    /// Probabilities per window, bundle class order.
    rows: Vec<Vec<f32>>,
    /// Wall-clock seconds to decode, featurise and score it.
    seconds: f64,
    /// Its duration in seconds.
    audio_s: f64,
}

/// Wall-clock totals of a run.
#[derive(Default)]
struct Timing {
    soundscapes: usize,
    seconds: f64,
    audio_s: f64,
}

impl Timing {
    fn add(&mut self, s: &Scored) {
        self.soundscapes += 1;
        self.seconds += s.seconds;
        self.audio_s += s.audio_s;
    }

    /// E.g. `0.85 s per soundscape (mean of 12) = 11.0% of Kaggle's CPU budget (…)`.
    fn summary(&self) -> String {
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

/// The bundle directory `--model` names, or the registry's default.
fn model_spec(a: &ModelArgs) -> anyhow::Result<String> {
    match a.model.as_deref() {
        None | Some("registry") => registry_default(&a.registry),
        Some(dir) => Ok(dir.to_string()),
    }
}

/// Loads the model and checks that it cuts BirdCLEF's rows: 5 s windows every 5 s.
fn load(a: &ModelArgs) -> anyhow::Result<(Classifier, f64)> {
    let device = silencio_infer::parse_device(&a.device)?;
    let spec = model_spec(a)?;
    let t = Instant::now();
    let c = open_classifier(&spec, &device, a.batch_size, a.max_duration_s)?;
    let load_s = t.elapsed().as_secs_f64();
    let w = &c.features().window;
    let want = f64::from(WINDOW_SECONDS);
    if (w.length_s - want).abs() > 1e-9 || (w.hop_s - want).abs() > 1e-9 {
        return Err(Failure::error(
            "invalid_config",
            format!(
                "bundle {} cuts {} s windows every {} s; BirdCLEF rows are {want} s windows \
                 every {want} s",
                c.model_version(),
                w.length_s,
                w.hop_s
            ),
        ));
    }
    Ok((c, load_s))
}

/// The soundscapes of `dir` as `(stem, path)`, sorted by file name.
fn soundscape_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let io = |source| silencio_eval::Error::Io {
        path: dir.into(),
        source,
    };
    if !dir.is_dir() {
        return Err(Failure::error(
            "missing",
            format!("{} is not a directory of soundscapes", dir.display()),
        ));
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
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
        return Err(Failure::error(
            "missing",
            format!(
                "no soundscapes ({}) in {}",
                SOUNDSCAPE_EXTENSIONS.map(|e| format!(".{e}")).join(", "),
                dir.display()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    let dup: BTreeSet<&str> = files
        .iter()
        .filter(|(s, _)| !seen.insert(s.as_str()))
        .map(|(s, _)| s.as_str())
        .collect();
    if !dup.is_empty() {
        return Err(Failure::error(
            "invalid_input",
            format!(
                "{}: several files share the stem(s) {dup:?}, so their row ids would collide",
                dir.display()
            ),
        ));
    }
    Ok(files)
}

/// Scores one soundscape, timing it; prints a progress line on stderr.
fn score(c: &Classifier, path: &Path, i: usize, n: usize) -> anyhow::Result<Scored> {
    let t = Instant::now();
    let id = c
        .identify_path(path)
        .with_context(|| format!("scoring {}", path.display()))?;
    let seconds = t.elapsed().as_secs_f64();
    let audio_s = id.audio.as_ref().map_or(0.0, |a| a.duration_s);
    let rows: Vec<Vec<f32>> = id.windows.into_iter().map(|w| w.scores).collect();
    eprintln!(
        "[{}/{n}] {}: {} windows, {audio_s:.1} s of audio, {seconds:.2} s",
        i + 1,
        path.display(),
        rows.len()
    );
    Ok(Scored {
        rows,
        seconds,
        audio_s,
    })
}

/// `{stem}_{end_second}` split into the stem and the 0-based window index.
fn parse_row_id(id: &str) -> Option<(&str, usize)> {
    let (stem, end) = id.rsplit_once('_')?;
    let end: u32 = end.parse().ok()?;
    (!stem.is_empty() && end > 0 && end.is_multiple_of(WINDOW_SECONDS))
        .then(|| (stem, (end / WINDOW_SECONDS - 1) as usize))
}

fn examples(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(EXAMPLES).map(String::as_str).collect();
    if items.len() > EXAMPLES {
        format!("{}, …", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// Slice attributes per row id from the mixer's `windows.csv` (`calls`, `snr_min_db`,
/// `background`; any column may be absent).
fn read_windows_csv(path: &Path) -> anyhow::Result<HashMap<String, BTreeMap<String, String>>> {
    let csv_err = |source| silencio_eval::Error::Csv {
        path: path.into(),
        source,
    };
    let format_err = |message: String| silencio_eval::Error::Format {
        path: path.into(),
        message,
    };
    let mut rdr = csv::Reader::from_path(path).map_err(csv_err)?;
    let header = rdr.headers().map_err(csv_err)?.clone();
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let row_id = col("row_id").ok_or_else(|| format_err("no `row_id` column".into()))?;
    let (calls, snr, background) = (col("calls"), col("snr_min_db"), col("background"));
    let mut out = HashMap::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(csv_err)?;
        let line = i + 2;
        let field = |c: Option<usize>| c.and_then(|c| rec.get(c)).map(str::trim);
        let mut meta = BTreeMap::new();
        if let Some(v) = field(calls) {
            let n: usize = v
                .parse()
                .map_err(|_| format_err(format!("line {line}: calls {v:?} is not a count")))?;
            meta.insert(slices::DIM_OVERLAP.to_string(), slices::overlap_bin(n));
        }
        // Background-only windows have no SNR: they stay out of the SNR slices.
        if let Some(v) = field(snr).filter(|v| !v.is_empty()) {
            let db: f32 = v
                .parse()
                .map_err(|_| format_err(format!("line {line}: snr_min_db {v:?} is not dB")))?;
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

/// E.g. `demo@1, untrained (loaded in 0.25 s)`.
fn model_line(c: &Classifier, load_s: f64) -> String {
    let untrained = if c.meta().provenance.trained {
        ""
    } else {
        ", untrained"
    };
    format!("{}{untrained} (loaded in {load_s:.2} s)", c.model_version())
}

fn metric(v: Option<f64>) -> String {
    v.map_or_else(|| "undefined".into(), |v| format!("{v:.4}"))
}

/// Runs `silencio eval`.
pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let solution_path = a.data.join("solution.csv");
    if !solution_path.is_file() {
        return Err(Failure::error(
            "missing",
            format!(
                "{} has no solution.csv: an eval set is soundscapes/ plus a BirdCLEF \
                 solution.csv (`silencio mix` writes one)",
                a.data.display()
            ),
        ));
    }
    let solution = submission::read_solution(&solution_path)?;

    // Rows: which soundscape and window each solution row is.
    let mut rows = Vec::with_capacity(solution.row_ids.len());
    for id in &solution.row_ids {
        let r = parse_row_id(id).ok_or_else(|| silencio_eval::Error::Format {
            path: solution_path.clone(),
            message: format!(
                "row_id {id:?} is not `{{soundscape}}_{{end second}}` with an end second that \
                 is a positive multiple of {WINDOW_SECONDS}"
            ),
        })?;
        rows.push(r);
    }
    let stems: BTreeSet<&str> = rows.iter().map(|(s, _)| *s).collect();
    let soundscape_dir = a.data.join("soundscapes");
    let files: HashMap<String, PathBuf> = soundscape_files(&soundscape_dir)?.into_iter().collect();
    let absent: Vec<String> = stems
        .iter()
        .filter(|s| !files.contains_key(**s))
        .map(|s| s.to_string())
        .collect();
    if !absent.is_empty() {
        return Err(Failure::error(
            "missing",
            format!(
                "{} soundscape(s) named in {} are not in {}: {}",
                absent.len(),
                solution_path.display(),
                soundscape_dir.display(),
                examples(&absent)
            ),
        ));
    }
    let unused = files.len() - stems.len();
    if unused > 0 {
        eprintln!(
            "note: {unused} soundscape(s) in {} have no row in solution.csv and are skipped",
            soundscape_dir.display()
        );
    }

    let (c, load_s) = load(&a.model)?;

    // Columns: the solution's species, looked up among the model's.
    let species = c.species().clone();
    let column_of: HashMap<&str, usize> = species
        .iter()
        .enumerate()
        .map(|(i, s)| (s.code.as_str(), i))
        .collect();
    let unknown: Vec<String> = solution
        .species
        .iter()
        .filter(|s| !column_of.contains_key(s.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(Failure::error(
            "unknown_species",
            format!(
                "{} names {} species that model {} does not predict: {}",
                solution_path.display(),
                unknown.len(),
                c.model_version(),
                examples(&unknown)
            ),
        ));
    }
    let cols: Vec<usize> = solution
        .species
        .iter()
        .filter_map(|s| column_of.get(s.as_str()).copied())
        .collect();
    let column_class: Vec<String> = cols
        .iter()
        .map(|&j| species[j].class_name.clone())
        .collect();
    let ignored = species.len() - cols.len();
    if ignored > 0 {
        eprintln!("note: {ignored} of the model's species are not in solution.csv and not scored");
    }

    // Score every soundscape the solution names.
    let mut timing = Timing::default();
    let mut scored: HashMap<&str, Scored> = HashMap::new();
    for (i, stem) in stems.iter().enumerate() {
        let path = files.get(*stem).context("soundscape file")?;
        let s = score(&c, path, i, stems.len())?;
        timing.add(&s);
        scored.insert(stem, s);
    }

    // Scores in solution row order and solution column order.
    let windows = match a.data.join("windows.csv") {
        p if p.is_file() => Some(read_windows_csv(&p)?),
        _ => None,
    };
    let mut data = Vec::with_capacity(rows.len() * cols.len());
    let mut rows_meta = Vec::with_capacity(rows.len());
    let mut past_end = Vec::new();
    for ((stem, w), id) in rows.iter().zip(&solution.row_ids) {
        match scored.get(stem).and_then(|s| s.rows.get(*w)) {
            Some(row) => data.extend(cols.iter().map(|&j| row[j])),
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
        return Err(Failure::error(
            "missing",
            format!(
                "{} row(s) of {} lie past the end of their soundscape: {}",
                past_end.len(),
                solution_path.display(),
                examples(&past_end)
            ),
        ));
    }
    let scores = Matrix::new(rows.len(), cols.len(), data)?;
    let title = format!("{} on {}", c.model_version(), a.data.display());
    let report = EvalReport::build(
        ReportInput {
            title: &title,
            scores: &scores,
            labels: &solution.values,
            species: &solution.species,
            column_class: &column_class,
            rows_meta: &rows_meta,
        },
        ReportOptions::default(),
    )?;
    std::fs::create_dir_all(&a.out)
        .map_err(|source| silencio_eval::Error::Io {
            path: a.out.clone(),
            source,
        })
        .context("creating the report directory")?;
    let (json, html) = (a.out.join("report.json"), a.out.join("report.html"));
    report.write_json(&json)?;
    report.write_html(&html)?;

    let o = &report.overall;
    println!("model:          {}", model_line(&c, load_s));
    println!(
        "eval set:       {}: {} soundscape(s), {} windows, {} species",
        a.data.display(),
        stems.len(),
        report.n_rows,
        report.n_species
    );
    println!(
        "macro ROC-AUC:  {} (BirdCLEF metric; {} species scored)",
        metric(o.macro_auc),
        o.n_auc_scored
    );
    println!(
        "macro mAP:      {} ({} species with a positive)",
        metric(o.macro_ap),
        o.n_ap_scored
    );
    println!("speed:          {}", timing.summary());
    println!("report:         {} and {}", json.display(), html.display());

    if a.min_macro_auc.is_some() || a.min_macro_ap.is_some() {
        let decision = GateConfig {
            min_macro_auc: a.min_macro_auc,
            min_macro_ap: a.min_macro_ap,
            ..GateConfig::default()
        }
        .evaluate(&report);
        for line in &decision.cleared {
            println!("gate cleared:   {line}");
        }
        if !decision.passed {
            return Err(Failure::error(
                "gate",
                format!("quality gate failed: {}", decision.reasons.join("; ")),
            ));
        }
        println!("gate:           passed");
    }
    Ok(())
}

/// Runs `silencio submission`.
pub fn submission(a: SubmissionArgs) -> anyhow::Result<()> {
    let files = soundscape_files(&a.soundscapes)?;
    let (c, load_s) = load(&a.model)?;
    let species: Vec<String> = c.species().iter().map(|s| s.code.clone()).collect();

    let mut timing = Timing::default();
    let mut row_ids = Vec::new();
    let mut data = Vec::new();
    for (i, (stem, path)) in files.iter().enumerate() {
        let s = score(&c, path, i, files.len())?;
        timing.add(&s);
        row_ids.extend(submission::soundscape_row_ids(stem, s.rows.len()));
        for row in s.rows {
            data.extend(row);
        }
    }
    let scores = Matrix::new(row_ids.len(), species.len(), data)?;
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| silencio_eval::Error::Io {
            path: dir.into(),
            source,
        })?;
    }
    submission::write_submission(&a.out, &species, &row_ids, &scores)?;

    println!(
        "submission:     {}: {} rows x {} species from {} soundscape(s)",
        a.out.display(),
        row_ids.len(),
        species.len(),
        files.len()
    );
    println!("model:          {}", model_line(&c, load_s));
    println!("speed:          {}", timing.summary());
    if let Some(solution) = &a.score_against {
        let s = submission::score_submission(solution, &a.out)?;
        println!(
            "BirdCLEF score: {:.10} (macro ROC-AUC against {}, {} species scored)",
            s.score,
            solution.display(),
            s.summary.n_auc_scored
        );
    }
    Ok(())
}
