//! The evaluation panel: the newest `runs/<experiment>/<run>/report.json` and its sets.
//!
//! Two shapes are read: the trainer's run report (`{valid, mixed?, suites}`, each a
//! `silencio_eval::EvalReport`, with `report.html`, `mixed.html` and `suite-<name>.html`
//! beside it) and a bare `EvalReport` as `silencio eval` writes it (with `report.html`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use silencio_eval::EvalReport;

use crate::error::{Error, Result};

/// Recent runs listed beside the newest one.
pub const RECENT_RUNS: usize = 20;

/// The trainer's `report.json` (its `RunReport`; the trainer crate is not a dependency here,
/// it brings Burn).
#[derive(Debug, Clone, Deserialize)]
struct RunReport {
    valid: EvalReport,
    mixed: Option<EvalReport>,
    #[serde(default)]
    suites: BTreeMap<String, EvalReport>,
}

/// The evaluation panel's JSON (`/api/report`).
#[derive(Debug, Clone, Serialize)]
pub struct ReportResponse {
    /// Whether a report was found.
    pub available: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// The runs directory.
    pub runs_dir: String,
    /// The newest run's report, when any.
    pub latest: Option<LatestReport>,
    /// Up to [`RECENT_RUNS`] runs with a report, newest first.
    pub recent: Vec<RunHeadline>,
}

/// The newest report.
#[derive(Debug, Clone, Serialize)]
pub struct LatestReport {
    /// Experiment directory name.
    pub experiment: String,
    /// Run directory name.
    pub run: String,
    /// Path of `report.json`.
    pub path: String,
    /// Its modification time (ms since the epoch).
    pub modified_ms: u64,
    /// The evaluation sets, validation first.
    pub sets: Vec<ReportSet>,
}

/// One evaluation set of a report.
#[derive(Debug, Clone, Serialize)]
pub struct ReportSet {
    /// `valid`, `mixed`, `suite:<name>`, or `report` for a bare `silencio eval` report.
    pub name: String,
    /// Link to its HTML page on this dashboard, when the page exists.
    pub html_url: Option<String>,
    /// The report.
    pub report: EvalReport,
}

/// One run in the recent list.
#[derive(Debug, Clone, Serialize)]
pub struct RunHeadline {
    /// Experiment.
    pub experiment: String,
    /// Run.
    pub run: String,
    /// Modification time of its report (ms since the epoch).
    pub modified_ms: u64,
    /// Macro ROC-AUC of its first set.
    pub macro_auc: Option<f64>,
    /// Macro AP of its first set.
    pub macro_ap: Option<f64>,
    /// Error, when the report does not parse.
    pub error: Option<String>,
}

struct Found {
    experiment: String,
    run: String,
    path: PathBuf,
    modified_ms: u64,
}

/// Every `runs/<experiment>/<run>/report.json`, newest first (ties by path, so the order is
/// stable).
fn find_reports(runs: &Path) -> Vec<Found> {
    let mut out = Vec::new();
    let Ok(exps) = std::fs::read_dir(runs) else {
        return out;
    };
    for exp in exps.filter_map(|e| e.ok()) {
        let Ok(run_dirs) = std::fs::read_dir(exp.path()) else {
            continue;
        };
        for run in run_dirs.filter_map(|e| e.ok()) {
            let path = run.path().join("report.json");
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            out.push(Found {
                experiment: exp.file_name().to_string_lossy().into_owned(),
                run: run.file_name().to_string_lossy().into_owned(),
                path,
                modified_ms,
            });
        }
    }
    out.sort_by(|a, b| {
        b.modified_ms
            .cmp(&a.modified_ms)
            .then_with(|| b.path.cmp(&a.path))
    });
    out
}

/// The sets of a `report.json` with the HTML file of each (relative to the run directory).
fn read_sets(path: &Path) -> Result<Vec<(String, String, EvalReport)>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let json_err = |e: serde_json::Error| Error::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if value.get("valid").is_some() {
        let r: RunReport = serde_json::from_value(value).map_err(json_err)?;
        let mut sets = vec![("valid".to_string(), "report.html".to_string(), r.valid)];
        if let Some(m) = r.mixed {
            sets.push(("mixed".into(), "mixed.html".into(), m));
        }
        for (n, s) in r.suites {
            sets.push((format!("suite:{n}"), format!("suite-{n}.html"), s));
        }
        Ok(sets)
    } else {
        let r: EvalReport = serde_json::from_value(value).map_err(json_err)?;
        Ok(vec![("report".into(), "report.html".into(), r)])
    }
}

/// The panel's data for the runs directory `runs`.
pub fn latest(runs: &Path) -> ReportResponse {
    let found = find_reports(runs);
    let mut resp = ReportResponse {
        available: false,
        reason: None,
        runs_dir: runs.display().to_string(),
        latest: None,
        recent: Vec::new(),
    };
    for f in found.iter().take(RECENT_RUNS) {
        let mut h = RunHeadline {
            experiment: f.experiment.clone(),
            run: f.run.clone(),
            modified_ms: f.modified_ms,
            macro_auc: None,
            macro_ap: None,
            error: None,
        };
        match read_sets(&f.path) {
            Ok(sets) => {
                if let Some((_, _, r)) = sets.first() {
                    h.macro_auc = r.overall.macro_auc;
                    h.macro_ap = r.overall.macro_ap;
                }
                if resp.latest.is_none() {
                    let dir = f.path.parent().unwrap_or(Path::new("."));
                    resp.latest = Some(LatestReport {
                        experiment: f.experiment.clone(),
                        run: f.run.clone(),
                        path: f.path.display().to_string(),
                        modified_ms: f.modified_ms,
                        sets: sets
                            .into_iter()
                            .map(|(name, html, report)| ReportSet {
                                html_url: dir
                                    .join(&html)
                                    .is_file()
                                    .then(|| format!("/report/{}", set_slug(&name))),
                                name,
                                report,
                            })
                            .collect(),
                    });
                }
            }
            // A broken report is listed with its error; the next one is shown instead.
            Err(e) => h.error = Some(format!("{}: {e}", e.kind())),
        }
        resp.recent.push(h);
    }
    resp.available = resp.latest.is_some();
    if !resp.available {
        resp.reason = Some(if found.is_empty() {
            format!(
                "no runs/<experiment>/<run>/report.json under {} (train a model: cargo run \
                 --release -p trainer)",
                runs.display()
            )
        } else {
            "no report.json parses (see the recent runs' errors)".into()
        });
    }
    resp
}

/// URL segment of a set name (`suite:weak` → `suite-weak`).
fn set_slug(name: &str) -> String {
    name.replace(':', "-")
}

/// The HTML page of set `slug` of the newest readable report. Only names derived from the
/// report's own sets map to files, so no request can reach any other path.
pub fn html_page(runs: &Path, slug: &str) -> Result<(PathBuf, String)> {
    for f in find_reports(runs) {
        let Ok(sets) = read_sets(&f.path) else {
            continue;
        };
        let dir = f.path.parent().unwrap_or(Path::new("."));
        let Some((_, html, _)) = sets.iter().find(|(n, ..)| set_slug(n) == slug) else {
            return Err(Error::NotFound(format!("no report set {slug:?}")));
        };
        let path = dir.join(html);
        let body = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("{} does not exist", path.display()))
            }
            _ => Error::io(&path, e),
        })?;
        return Ok((path, body));
    }
    Err(Error::NotFound("no evaluation report".into()))
}
