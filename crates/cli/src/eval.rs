//! `silencio eval` and `silencio submission`: a model (any spec) run over soundscapes, scored with
//! the BirdCLEF 2025 metric into a report, or written as a Kaggle submission CSV. Thin: scoring
//! is silencio-infer's; pairing files with rows, the checks, the metric, report, gate, CSV
//! format and summary lines are silencio-eval's (`soundscapes`). This module loads the model,
//! hands silencio-eval a scorer, writes the report and prints what it gets back.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use silencio_eval::soundscapes::{self, EvalSet, Scored};
use silencio_eval::submission;
use silencio_infer::Scorer;

use crate::models::ModelArgs;

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

/// Loads the model and checks that it cuts BirdCLEF's rows: 5 s windows every 5 s. Returns
/// it with its [`soundscapes::model_line`].
fn load(a: &ModelArgs) -> anyhow::Result<(Scorer, String)> {
    let t = Instant::now();
    let s = a.open()?;
    let load_s = t.elapsed().as_secs_f64();
    let w = s.window();
    let version = s.name();
    soundscapes::check_window_grid(&version, w.length_s, w.hop_s)?;
    let line = soundscapes::model_line(&version, s.untrained().is_empty(), load_s);
    Ok((s, line))
}

/// A scorer for silencio-eval: scores one soundscape, timing it, and prints a progress line
/// (`[i/n] path: …`) on stderr.
fn scorer(c: &Scorer, n: usize) -> impl FnMut(&Path) -> anyhow::Result<Scored> + '_ {
    let mut i = 0;
    move |path| {
        i += 1;
        let t = Instant::now();
        let id = c
            .identify_path(path)
            .with_context(|| format!("scoring {}", path.display()))?;
        let seconds = t.elapsed().as_secs_f64();
        let audio_s = id.audio.as_ref().map_or(0.0, |a| a.duration_s);
        let rows: Vec<Vec<f32>> = id.windows.into_iter().map(|w| w.scores).collect();
        eprintln!(
            "[{i}/{n}] {}: {} windows, {audio_s:.1} s of audio, {seconds:.2} s",
            path.display(),
            rows.len()
        );
        Ok(Scored {
            rows,
            seconds,
            audio_s,
        })
    }
}

/// Runs `silencio eval`.
pub fn eval(a: EvalArgs) -> anyhow::Result<()> {
    let set = EvalSet::open(&a.data)?;
    if let Some(note) = set.unused_note() {
        eprintln!("note: {note}");
    }
    let (c, model_line) = load(&a.model)?;
    let species = c.species();
    let columns = set.columns(
        &c.name(),
        species
            .iter()
            .map(|s| (s.code.as_str(), s.class_name.as_str())),
    )?;
    if let Some(note) = columns.ignored_note() {
        eprintln!("note: {note}");
    }
    let ev = set.evaluate(&columns, scorer(&c, set.soundscapes().len()))?;

    std::fs::create_dir_all(&a.out)
        .map_err(|source| silencio_eval::Error::Io {
            path: a.out.clone(),
            source,
        })
        .context("creating the report directory")?;
    let (json, html) = (a.out.join("report.json"), a.out.join("report.html"));
    ev.report.write_json(&json)?;
    ev.report.write_html(&html)?;
    for line in soundscapes::eval_lines(&model_line, &set, &ev, &json, &html) {
        println!("{line}");
    }

    if let Some(decision) = soundscapes::gate(&ev.report, a.min_macro_auc, a.min_macro_ap) {
        for line in soundscapes::gate_lines(&decision) {
            println!("{line}");
        }
        soundscapes::gate_result(&decision)?;
    }
    Ok(())
}

/// Runs `silencio submission`.
pub fn submission(a: SubmissionArgs) -> anyhow::Result<()> {
    let files = soundscapes::soundscape_files(&a.soundscapes)?;
    let (c, model_line) = load(&a.model)?;
    let species: Vec<String> = c.species().iter().map(|s| s.code.clone()).collect();
    let run = soundscapes::score_submission(&files, species, scorer(&c, files.len()))?;
    run.write(&a.out)?;
    for line in run.lines(&a.out, &model_line) {
        println!("{line}");
    }
    if let Some(solution) = &a.score_against {
        let s = submission::score_submission(solution, &a.out)?;
        println!("{}", soundscapes::score_line(&s, solution));
    }
    Ok(())
}
