//! The evaluation report: everything a person or the registry needs to judge a model, written
//! as JSON (machines) and as a self-contained HTML page with inline SVG plots (people).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::matrix::{Labels, Scores};
use crate::metrics::{self, PrPoint};
use crate::slices::{self, SliceResult};

/// What a report is computed from.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    /// Shown as the page title, e.g. the model and the evaluation set.
    pub title: &'a str,
    /// Predicted scores, rows × species.
    pub scores: &'a Scores,
    /// Ground truth, same shape.
    pub labels: &'a Labels,
    /// Species code of each column (taxonomy order).
    pub species: &'a [String],
    /// Taxon class of each column (`Aves`, `Amphibia`, `Insecta`, `Mammalia`).
    pub column_class: &'a [String],
    /// Row attributes for slicing, one map per row; empty for no row slices.
    pub rows_meta: &'a [BTreeMap<String, String>],
}

/// Knobs of [`EvalReport::build`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReportOptions {
    /// PR curves kept for the best and for the worst classes by AP (each).
    pub n_pr_curves: usize,
    /// Number of most frequent classes in the confusion matrix.
    pub confusion_top: usize,
    /// PR curves are thinned to at most this many points (at least 2).
    pub max_pr_points: usize,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            n_pr_curves: 3,
            confusion_top: 12,
            max_pr_points: 200,
        }
    }
}

/// Macro metrics over the whole evaluation set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverallMetrics {
    /// Macro ROC-AUC (the competition metric).
    pub macro_auc: Option<f64>,
    /// Macro average precision.
    pub macro_ap: Option<f64>,
    /// Species that entered the macro ROC-AUC.
    pub n_auc_scored: usize,
    /// Species that entered the macro AP.
    pub n_ap_scored: usize,
}

/// Metrics of one species.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    /// Species code.
    pub species: String,
    /// Taxon class.
    pub class_name: String,
    /// Positive rows.
    pub n_positive: usize,
    /// ROC-AUC, if defined.
    pub auc: Option<f64>,
    /// Average precision, if defined.
    pub ap: Option<f64>,
}

/// A precision-recall curve kept for plotting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrCurveReport {
    /// Species code.
    pub species: String,
    /// Taxon class.
    pub class_name: String,
    /// `top` or `bottom` by AP.
    pub group: String,
    /// The species' average precision.
    pub ap: f64,
    /// Curve points, highest threshold first (thinned).
    pub points: Vec<PrPoint>,
}

/// Which class wins the argmax for rows whose only positive is a frequent class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Confusion {
    /// The most frequent classes (by single-positive rows), row order of `counts`.
    pub true_classes: Vec<String>,
    /// Column labels of `counts`: `true_classes` then `other` (any other argmax).
    pub predicted: Vec<String>,
    /// `counts[i][j]`: rows of true class `i` whose argmax was `predicted[j]`.
    pub counts: Vec<Vec<u64>>,
    /// Rows that entered the matrix.
    pub n_rows_used: usize,
}

/// A complete evaluation report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Title.
    pub title: String,
    /// Rows (5 s windows) evaluated.
    pub n_rows: usize,
    /// Species columns.
    pub n_species: usize,
    /// Overall macro metrics.
    pub overall: OverallMetrics,
    /// One entry per species, in column order.
    pub per_class: Vec<ClassReport>,
    /// The metric per slice (see [`slices::slice_report`]).
    pub slices: Vec<SliceResult>,
    /// PR curves of the best and worst species by AP.
    pub pr_curves: Vec<PrCurveReport>,
    /// Argmax confusion among the most frequent species.
    pub confusion: Confusion,
}

fn thin(points: Vec<PrPoint>, max: usize) -> Vec<PrPoint> {
    let max = max.max(2);
    if points.len() <= max {
        return points;
    }
    let last = points.len() - 1;
    (0..max)
        .map(|i| points[(i * last + (max - 1) / 2) / (max - 1)])
        .collect()
}

fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

fn confusion(
    scores: &Scores,
    labels: &Labels,
    species: &[String],
    top: usize,
) -> Result<Confusion> {
    // Multi-label rows have no single "true class": only rows with exactly one positive count.
    let mut single: Vec<(usize, usize)> = Vec::new();
    for r in 0..labels.n_rows() {
        let mut positives = labels.row(r).iter().enumerate().filter(|(_, v)| **v > 0.5);
        if let (Some((c, _)), None) = (positives.next(), positives.next()) {
            single.push((r, c));
        }
    }
    let mut freq = vec![0usize; labels.n_cols()];
    for &(_, c) in &single {
        freq[c] += 1;
    }
    let mut order: Vec<usize> = (0..labels.n_cols()).filter(|&c| freq[c] > 0).collect();
    order.sort_by(|&a, &b| freq[b].cmp(&freq[a]).then(a.cmp(&b)));
    order.truncate(top);
    let slot: BTreeMap<usize, usize> = order.iter().enumerate().map(|(i, &c)| (c, i)).collect();
    let mut counts = vec![vec![0u64; order.len() + 1]; order.len()];
    let mut used = 0;
    for (r, c) in single {
        let Some(&i) = slot.get(&c) else { continue };
        let pred = argmax(scores.row(r)).ok_or_else(|| Error::Empty("no columns".into()))?;
        let j = slot.get(&pred).copied().unwrap_or(order.len());
        counts[i][j] += 1;
        used += 1;
    }
    let true_classes: Vec<String> = order.iter().map(|&c| species[c].clone()).collect();
    let mut predicted = true_classes.clone();
    predicted.push("other".into());
    Ok(Confusion {
        true_classes,
        predicted,
        counts,
        n_rows_used: used,
    })
}

impl EvalReport {
    /// Computes every part of the report.
    pub fn build(input: ReportInput<'_>, options: ReportOptions) -> Result<Self> {
        let ReportInput {
            title,
            scores,
            labels,
            species,
            column_class,
            rows_meta,
        } = input;
        let summary = metrics::evaluate(scores, labels)?;
        if species.len() != scores.n_cols() {
            return Err(Error::ShapeMismatch {
                what: "species".into(),
                expected: format!("{} columns", scores.n_cols()),
                got: format!("{} names", species.len()),
            });
        }
        let empty_meta;
        let rows_meta = if rows_meta.is_empty() {
            empty_meta = vec![BTreeMap::new(); scores.n_rows()];
            &empty_meta
        } else {
            rows_meta
        };
        let slices = slices::slice_report(scores, labels, rows_meta, column_class)?;

        let per_class: Vec<ClassReport> = summary
            .per_class
            .iter()
            .map(|c| ClassReport {
                species: species[c.column].clone(),
                class_name: column_class[c.column].clone(),
                n_positive: c.n_positive,
                auc: c.auc,
                ap: c.ap,
            })
            .collect();

        let mut by_ap: Vec<(usize, f64)> = summary
            .per_class
            .iter()
            .filter_map(|c| c.ap.map(|ap| (c.column, ap)))
            .collect();
        by_ap.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let k = options.n_pr_curves;
        let picks: Vec<(usize, f64, &str)> = if by_ap.len() <= 2 * k {
            by_ap.iter().map(|&(c, ap)| (c, ap, "top")).collect()
        } else {
            let top = by_ap[..k].iter().map(|&(c, ap)| (c, ap, "top"));
            let bottom = by_ap[by_ap.len() - k..]
                .iter()
                .map(|&(c, ap)| (c, ap, "bottom"));
            top.chain(bottom).collect()
        };
        let mut pr_curves = Vec::with_capacity(picks.len());
        for (c, ap, group) in picks {
            let points = metrics::precision_recall_curve(&labels.column(c), &scores.column(c))?;
            pr_curves.push(PrCurveReport {
                species: species[c].clone(),
                class_name: column_class[c].clone(),
                group: group.into(),
                ap,
                points: thin(points, options.max_pr_points),
            });
        }

        Ok(Self {
            title: title.into(),
            n_rows: scores.n_rows(),
            n_species: scores.n_cols(),
            overall: OverallMetrics {
                macro_auc: summary.macro_auc,
                macro_ap: summary.macro_ap,
                n_auc_scored: summary.n_auc_scored,
                n_ap_scored: summary.n_ap_scored,
            },
            per_class,
            slices,
            pr_curves,
            confusion: confusion(scores, labels, species, options.confusion_top)?,
        })
    }

    /// The slice with this dimension and value, if present.
    pub fn slice(&self, dimension: &str, value: &str) -> Option<&SliceResult> {
        self.slices
            .iter()
            .find(|s| s.dimension == dimension && s.value == value)
    }

    /// Writes the report as pretty JSON, atomically.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| Error::Json {
            path: path.into(),
            source,
        })?;
        write_atomic(path, &bytes)
    }

    /// Reads a report written by [`EvalReport::write_json`].
    pub fn read_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.into(),
            source,
        })
    }

    /// The report as one self-contained HTML page (inline CSS and SVG, no script, no network).
    pub fn to_html(&self) -> String {
        crate::html::render(self)
    }

    /// Writes [`EvalReport::to_html`], atomically.
    pub fn write_html(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), self.to_html().as_bytes())
    }
}

/// Replaces `path` atomically ([`silencio_common::write_atomic`]), so readers never see a
/// half-written file.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    silencio_common::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::matrix::Matrix;

    fn sample() -> EvalReport {
        let labels = Matrix::from_rows(&[
            vec![1.0, 0.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![0.0, 1.0, 0.0],
            vec![1.0, 1.0, 0.0],
            vec![0.0, 0.0, 0.0],
        ])
        .unwrap();
        let scores = Matrix::from_rows(&[
            vec![0.9, 0.1, 0.2],
            vec![0.8, 0.7, 0.1],
            vec![0.1, 0.3, 0.6],
            vec![0.5, 0.5, 0.5],
            vec![0.2, 0.2, 0.2],
        ])
        .unwrap();
        let species: Vec<String> = ["a<b", "c&d", "e\"f"].map(String::from).to_vec();
        let classes: Vec<String> = ["Aves", "Aves", "Insecta"].map(String::from).to_vec();
        EvalReport::build(
            ReportInput {
                title: "test",
                scores: &scores,
                labels: &labels,
                species: &species,
                column_class: &classes,
                rows_meta: &[],
            },
            ReportOptions::default(),
        )
        .unwrap()
    }

    #[test]
    fn confusion_uses_single_positive_rows() {
        let r = sample();
        // Class "c&d" has 2 single-positive rows, "a<b" 1; row 3 has two positives.
        assert_eq!(r.confusion.true_classes, vec!["c&d", "a<b"]);
        assert_eq!(r.confusion.predicted, vec!["c&d", "a<b", "other"]);
        // c&d rows: argmax a<b (row 1), e"f → other (row 2); a<b row: argmax a<b.
        assert_eq!(r.confusion.counts, vec![vec![0, 1, 1], vec![0, 1, 0]]);
        assert_eq!(r.confusion.n_rows_used, 3);
    }

    #[test]
    fn json_round_trip_and_atomic_write() {
        let r = sample();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.json");
        r.write_json(&p).unwrap();
        r.write_json(&p).unwrap();
        let back = EvalReport::read_json(&p).unwrap();
        // serde_json's default float parser may miss the last ulp; everything else is exact.
        let (a, b) = (
            back.overall.macro_auc.unwrap(),
            r.overall.macro_auc.unwrap(),
        );
        assert!((a - b).abs() < 1e-14);
        assert_eq!(back.confusion, r.confusion);
        assert_eq!(back.to_html(), r.to_html());
        // Only the target remains: the temporary file was renamed.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn html_escapes_names() {
        let html = sample().to_html();
        assert!(html.contains("a&lt;b"));
        assert!(html.contains("c&amp;d"));
        assert!(html.contains("e&quot;f"));
        assert!(!html.contains("a<b"));
        assert!(!html.contains("e\"f"));
        assert!(
            !html.contains("http://") && !html.contains("https://") && !html.contains("<script")
        );
    }

    #[test]
    fn thinning_keeps_ends() {
        let pts: Vec<PrPoint> = (0..1000)
            .map(|i| PrPoint {
                threshold: i as f32,
                precision: 1.0,
                recall: i as f64,
            })
            .collect();
        let t = thin(pts, 10);
        assert_eq!(t.len(), 10);
        assert_eq!(t[0].recall, 0.0);
        assert_eq!(t[9].recall, 999.0);
    }
}
