//! The run's evaluation: one `silencio_eval` report per evaluation set (validation windows,
//! mixed soundscapes), written as JSON + self-contained HTML, and the quality gate over both.

use std::path::Path;

use serde::{Deserialize, Serialize};
use silencio_eval::report::{ReportInput, ReportOptions};
use silencio_eval::{EvalReport, Matrix};
use silencio_infer::Species;

use crate::experiment::Experiment;
use crate::predict::Scored;
use crate::{Error, Result};

/// Both reports of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    /// Validation windows (held-out recordings of the training data).
    pub valid: EvalReport,
    /// Mixed soundscapes from held-out calls (absent when the experiment makes none).
    pub mixed: Option<EvalReport>,
    /// Failure suites by name (`weak`, `overlap`, `interference`).
    #[serde(default)]
    pub suites: std::collections::BTreeMap<String, EvalReport>,
}

fn eval_err(e: silencio_eval::Error) -> Error {
    Error::Data {
        message: format!("evaluation: {e}"),
    }
}

fn one(title: &str, s: &Scored, species: &[Species]) -> Result<EvalReport> {
    let scores = Matrix::from_rows(&s.scores).map_err(eval_err)?;
    let labels = Matrix::from_rows(&s.labels).map_err(eval_err)?;
    let codes: Vec<String> = species.iter().map(|s| s.code.clone()).collect();
    let classes: Vec<String> = species.iter().map(|s| s.class_name.clone()).collect();
    EvalReport::build(
        ReportInput {
            title,
            scores: &scores,
            labels: &labels,
            species: &codes,
            column_class: &classes,
            rows_meta: &s.meta,
        },
        ReportOptions::default(),
    )
    .map_err(eval_err)
}

/// The macro ROC-AUC of `s` (the report's overall figure); None without any positive label.
pub fn macro_auc(s: &Scored, species: &[Species]) -> Result<Option<f64>> {
    Ok(one("", s, species)?.overall.macro_auc)
}

/// Builds the run's reports.
pub fn report(
    exp: &Experiment,
    species: &[Species],
    valid: &Scored,
    mixed: Option<&Scored>,
    suites: &[(String, Scored)],
) -> Result<RunReport> {
    Ok(RunReport {
        valid: one(&format!("{}: validation windows", exp.name), valid, species)?,
        mixed: mixed
            .map(|m| one(&format!("{}: mixed soundscapes", exp.name), m, species))
            .transpose()?,
        suites: suites
            .iter()
            .map(|(n, s)| {
                Ok((
                    n.clone(),
                    one(&format!("{}: {n} suite", exp.name), s, species)?,
                ))
            })
            .collect::<Result<_>>()?,
    })
}

/// Writes `report.json` (every set) and one HTML page per set (`report.html`, `mixed.html`,
/// `suite-<name>.html`).
pub fn write(r: &RunReport, json: &Path, html: &Path) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(r).map_err(|e| Error::Data {
        message: e.to_string(),
    })?;
    let tmp = json.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, json).map_err(|e| Error::io(json, e))?;
    r.valid.write_html(html).map_err(eval_err)?;
    if let Some(m) = &r.mixed {
        m.write_html(html.with_file_name("mixed.html"))
            .map_err(eval_err)?;
    }
    for (n, r) in &r.suites {
        r.write_html(html.with_file_name(format!("suite-{n}.html")))
            .map_err(eval_err)?;
    }
    Ok(())
}

/// Headline metrics for MLflow and the terminal.
pub fn headline(r: &RunReport) -> Vec<(String, f64)> {
    let mut v = Vec::new();
    let mut push = |k: &str, x: Option<f64>| {
        if let Some(x) = x {
            v.push((k.to_string(), x));
        }
    };
    push("eval_valid_macro_auc", r.valid.overall.macro_auc);
    push("eval_valid_macro_map", r.valid.overall.macro_ap);
    if let Some(m) = &r.mixed {
        push("eval_mixed_macro_auc", m.overall.macro_auc);
        push("eval_mixed_macro_map", m.overall.macro_ap);
    }
    for (n, s) in &r.suites {
        push(&format!("eval_suite_{n}_macro_auc"), s.overall.macro_auc);
    }
    v
}

/// The gate over both sets: `(passed, reasons)`; each reason names its set.
pub fn gate(exp: &Experiment, r: &RunReport) -> (bool, Vec<String>) {
    let mut reasons = Vec::new();
    let d = exp.gate.valid.evaluate(&r.valid);
    reasons.extend(
        d.reasons
            .into_iter()
            .map(|x| format!("validation windows: {x}")),
    );
    let mixed_bars = exp.gate.mixed != silencio_eval::GateConfig::default();
    match (&r.mixed, mixed_bars) {
        (Some(m), _) => {
            let d = exp.gate.mixed.evaluate(m);
            reasons.extend(
                d.reasons
                    .into_iter()
                    .map(|x| format!("mixed soundscapes: {x}")),
            );
        }
        (None, true) => {
            reasons.push("mixed soundscapes: the gate has bars for them but none were made".into())
        }
        (None, false) => {}
    }
    (reasons.is_empty(), reasons)
}
