//! The BirdCLEF 2025 metric and its companions, with scikit-learn's exact semantics.
//!
//! The competition scores a submission by `sklearn.metrics.roc_auc_score(average="macro")`
//! over the species columns whose solution has at least one positive (Kaggle drops the columns
//! that sum to 0 before calling it). Here:
//!
//! - **ROC-AUC** of one column is the Mann–Whitney statistic: the share of (positive, negative)
//!   pairs ranked in the right order, a tie counting ½. That is exactly the trapezoid area under
//!   scikit-learn's `roc_curve` (one curve point per distinct score; `drop_intermediate` only
//!   removes collinear points, which leaves the area unchanged).
//! - A column with **no positive** is skipped (as Kaggle does). A column with **no negative**
//!   (every row positive) is skipped too: scikit-learn raises "Only one class present in y_true"
//!   there, so Kaggle's scorer would fail; skipping keeps the metric defined.
//! - **Average precision** follows `average_precision_score`:
//!   AP = Σₙ (Rₙ − Rₙ₋₁) Pₙ over distinct score thresholds taken from high to low, all rows
//!   sharing a score entering at once. Macro mAP averages it over the columns with at least one
//!   positive (an all-positive column has AP 1).
//!
//! A label is positive when it is `> 0.5`. Scores must be finite.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::matrix::{Labels, Scores};

/// Metrics of one column (species).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Column index.
    pub column: usize,
    /// Rows labelled positive.
    pub n_positive: usize,
    /// Rows labelled negative.
    pub n_negative: usize,
    /// ROC-AUC; `None` without both a positive and a negative.
    pub auc: Option<f64>,
    /// Average precision; `None` without a positive.
    pub ap: Option<f64>,
}

/// Macro metrics of a score matrix plus the per-class values they average.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Macro ROC-AUC (the competition metric); `None` when no column is scorable.
    pub macro_auc: Option<f64>,
    /// Macro average precision; `None` when no column has a positive.
    pub macro_ap: Option<f64>,
    /// Columns that entered the macro ROC-AUC.
    pub n_auc_scored: usize,
    /// Columns that entered the macro AP.
    pub n_ap_scored: usize,
    /// One entry per column, in column order.
    pub per_class: Vec<ClassMetrics>,
}

/// One point of a precision-recall curve: rows with score `>= threshold` are called positive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PrPoint {
    /// The decision threshold (a score present in the data).
    pub threshold: f32,
    /// Precision at this threshold.
    pub precision: f64,
    /// Recall at this threshold.
    pub recall: f64,
}

/// Confusion counts and derived rates at one threshold (`score >= threshold` is positive).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ThresholdStats {
    /// The threshold.
    pub threshold: f32,
    /// True positives.
    pub true_positives: u64,
    /// False positives.
    pub false_positives: u64,
    /// False negatives.
    pub false_negatives: u64,
    /// True negatives.
    pub true_negatives: u64,
    /// TP / (TP + FP); 0 when nothing is predicted positive (scikit-learn's `zero_division`).
    pub precision: f64,
    /// TP / (TP + FN); 0 when there is no positive.
    pub recall: f64,
    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub f1: f64,
}

/// Cumulative counts at each distinct threshold, highest first (scikit-learn's
/// `_binary_clf_curve`).
struct Curve {
    thresholds: Vec<f32>,
    tps: Vec<u64>,
    fps: Vec<u64>,
}

impl Curve {
    fn new(positive: &[bool], scores: &[f32]) -> Self {
        let mut order: Vec<usize> = (0..scores.len()).collect();
        // Scores are finite here; total_cmp puts -0.0 next to 0.0 and the `==` below
        // groups them, as numpy does.
        order.sort_unstable_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        let mut curve = Curve {
            thresholds: Vec::new(),
            tps: Vec::new(),
            fps: Vec::new(),
        };
        let (mut tp, mut fp) = (0u64, 0u64);
        let mut i = 0;
        while i < order.len() {
            let s = scores[order[i]];
            while i < order.len() && scores[order[i]] == s {
                if positive[order[i]] {
                    tp += 1;
                } else {
                    fp += 1;
                }
                i += 1;
            }
            curve.thresholds.push(s);
            curve.tps.push(tp);
            curve.fps.push(fp);
        }
        curve
    }

    fn totals(&self) -> (u64, u64) {
        (
            self.tps.last().copied().unwrap_or(0),
            self.fps.last().copied().unwrap_or(0),
        )
    }

    fn auc(&self) -> Option<f64> {
        let (p, n) = self.totals();
        if p == 0 || n == 0 {
            return None;
        }
        // Twice the trapezoid area in integer units: exact, so ties count exactly ½.
        let (mut prev_tp, mut prev_fp) = (0u128, 0u128);
        let mut twice_area = 0u128;
        for (&tp, &fp) in self.tps.iter().zip(&self.fps) {
            let (tp, fp) = (u128::from(tp), u128::from(fp));
            twice_area += (fp - prev_fp) * (tp + prev_tp);
            prev_tp = tp;
            prev_fp = fp;
        }
        Some(twice_area as f64 / (2.0 * p as f64 * n as f64))
    }

    fn average_precision(&self) -> Option<f64> {
        let (p, _) = self.totals();
        if p == 0 {
            return None;
        }
        let mut prev_tp = 0u64;
        let mut ap = 0.0f64;
        for (&tp, &fp) in self.tps.iter().zip(&self.fps) {
            if tp > prev_tp {
                let recall_step = (tp - prev_tp) as f64 / p as f64;
                ap += recall_step * (tp as f64 / (tp + fp) as f64);
            }
            prev_tp = tp;
        }
        Some(ap)
    }

    fn pr_points(&self) -> Vec<PrPoint> {
        let (p, _) = self.totals();
        self.thresholds
            .iter()
            .zip(self.tps.iter().zip(&self.fps))
            .map(|(&threshold, (&tp, &fp))| PrPoint {
                threshold,
                precision: tp as f64 / (tp + fp) as f64,
                recall: if p == 0 { 0.0 } else { tp as f64 / p as f64 },
            })
            .collect()
    }
}

fn check_binary(labels: &[f32], scores: &[f32]) -> Result<Vec<bool>> {
    if labels.len() != scores.len() {
        return Err(Error::ShapeMismatch {
            what: "labels vs scores".into(),
            expected: format!("{} values", labels.len()),
            got: format!("{} values", scores.len()),
        });
    }
    if scores.is_empty() {
        return Err(Error::Empty("no rows".into()));
    }
    labels
        .iter()
        .zip(scores)
        .enumerate()
        .map(|(row, (&l, &s))| {
            if !s.is_finite() {
                Err(Error::NonFiniteScore {
                    row,
                    col: 0,
                    value: s,
                })
            } else if !l.is_finite() {
                Err(Error::NonFiniteLabel {
                    row,
                    col: 0,
                    value: l,
                })
            } else {
                Ok(l > 0.5)
            }
        })
        .collect()
}

/// Checks that scores and labels have the same non-empty shape and finite values.
pub(crate) fn check_pair(scores: &Scores, labels: &Labels) -> Result<()> {
    if scores.n_rows() != labels.n_rows() || scores.n_cols() != labels.n_cols() {
        return Err(Error::ShapeMismatch {
            what: "scores vs labels".into(),
            expected: format!("{} × {}", labels.n_rows(), labels.n_cols()),
            got: format!("{} × {}", scores.n_rows(), scores.n_cols()),
        });
    }
    if scores.n_rows() == 0 || scores.n_cols() == 0 {
        return Err(Error::Empty(format!(
            "{} rows × {} columns",
            scores.n_rows(),
            scores.n_cols()
        )));
    }
    let n_cols = scores.n_cols();
    if let Some(i) = scores.data().iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFiniteScore {
            row: i / n_cols,
            col: i % n_cols,
            value: scores.data()[i],
        });
    }
    if let Some(i) = labels.data().iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFiniteLabel {
            row: i / n_cols,
            col: i % n_cols,
            value: labels.data()[i],
        });
    }
    Ok(())
}

/// ROC-AUC of one binary problem; `Ok(None)` without both a positive and a negative.
pub fn roc_auc(labels: &[f32], scores: &[f32]) -> Result<Option<f64>> {
    let positive = check_binary(labels, scores)?;
    Ok(Curve::new(&positive, scores).auc())
}

/// Average precision of one binary problem; `Ok(None)` without a positive.
pub fn average_precision(labels: &[f32], scores: &[f32]) -> Result<Option<f64>> {
    let positive = check_binary(labels, scores)?;
    Ok(Curve::new(&positive, scores).average_precision())
}

/// Precision-recall points, one per distinct score, highest threshold (lowest recall) first.
///
/// scikit-learn's `precision_recall_curve` returns the same points in reverse, plus a final
/// (recall 0, precision 1) point without a threshold; plots conventionally start there.
pub fn precision_recall_curve(labels: &[f32], scores: &[f32]) -> Result<Vec<PrPoint>> {
    let positive = check_binary(labels, scores)?;
    Ok(Curve::new(&positive, scores).pr_points())
}

fn stats_from_counts(threshold: f32, tp: u64, fp: u64, fn_: u64, tn: u64) -> ThresholdStats {
    let precision = if tp + fp == 0 {
        0.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let recall = if tp + fn_ == 0 {
        0.0
    } else {
        tp as f64 / (tp + fn_) as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    ThresholdStats {
        threshold,
        true_positives: tp,
        false_positives: fp,
        false_negatives: fn_,
        true_negatives: tn,
        precision,
        recall,
        f1,
    }
}

fn count(positive: impl Iterator<Item = (bool, f32)>, threshold: f32) -> [u64; 4] {
    let mut c = [0u64; 4];
    for (pos, s) in positive {
        let called = s >= threshold;
        let k = match (pos, called) {
            (true, true) => 0,
            (false, true) => 1,
            (true, false) => 2,
            (false, false) => 3,
        };
        c[k] += 1;
    }
    c
}

/// Precision, recall and F1 of one binary problem when `score >= threshold` means positive.
pub fn threshold_stats(labels: &[f32], scores: &[f32], threshold: f32) -> Result<ThresholdStats> {
    let positive = check_binary(labels, scores)?;
    let [tp, fp, fn_, tn] = count(positive.into_iter().zip(scores.iter().copied()), threshold);
    Ok(stats_from_counts(threshold, tp, fp, fn_, tn))
}

/// Micro-averaged precision, recall and F1 over every cell of the matrices.
pub fn threshold_stats_micro(
    scores: &Scores,
    labels: &Labels,
    threshold: f32,
) -> Result<ThresholdStats> {
    check_pair(scores, labels)?;
    let cells = labels
        .data()
        .iter()
        .map(|&l| l > 0.5)
        .zip(scores.data().iter().copied());
    let [tp, fp, fn_, tn] = count(cells, threshold);
    Ok(stats_from_counts(threshold, tp, fp, fn_, tn))
}

/// Per-column [`threshold_stats`], in column order.
pub fn threshold_stats_per_class(
    scores: &Scores,
    labels: &Labels,
    threshold: f32,
) -> Result<Vec<ThresholdStats>> {
    check_pair(scores, labels)?;
    (0..scores.n_cols())
        .map(|c| threshold_stats(&labels.column(c), &scores.column(c), threshold))
        .collect()
}

/// Per-class ROC-AUC and AP and their macro averages (see the module docs for which columns
/// count).
pub fn evaluate(scores: &Scores, labels: &Labels) -> Result<MetricSummary> {
    check_pair(scores, labels)?;
    let mut per_class = Vec::with_capacity(scores.n_cols());
    for c in 0..scores.n_cols() {
        let positive: Vec<bool> = labels.column(c).iter().map(|&l| l > 0.5).collect();
        let curve = Curve::new(&positive, &scores.column(c));
        let (p, n) = curve.totals();
        per_class.push(ClassMetrics {
            column: c,
            n_positive: p as usize,
            n_negative: n as usize,
            auc: curve.auc(),
            ap: curve.average_precision(),
        });
    }
    Ok(summarise(per_class))
}

/// Macro averages of already-computed per-class values.
pub(crate) fn summarise(per_class: Vec<ClassMetrics>) -> MetricSummary {
    let mean = |values: Vec<f64>| {
        if values.is_empty() {
            None
        } else {
            // Sum in column order, as numpy's mean over the per-class array does.
            Some(values.iter().sum::<f64>() / values.len() as f64)
        }
    };
    let aucs: Vec<f64> = per_class.iter().filter_map(|c| c.auc).collect();
    let aps: Vec<f64> = per_class.iter().filter_map(|c| c.ap).collect();
    MetricSummary {
        n_auc_scored: aucs.len(),
        n_ap_scored: aps.len(),
        macro_auc: mean(aucs),
        macro_ap: mean(aps),
        per_class,
    }
}

/// The competition score: macro ROC-AUC, or [`Error::NoScoredColumns`] when no column has
/// both a positive and a negative.
pub fn macro_roc_auc(scores: &Scores, labels: &Labels) -> Result<f64> {
    evaluate(scores, labels)?
        .macro_auc
        .ok_or(Error::NoScoredColumns)
}

/// Macro average precision over the columns with a positive; [`Error::NoScoredColumns`] when
/// there is none.
pub fn macro_average_precision(scores: &Scores, labels: &Labels) -> Result<f64> {
    evaluate(scores, labels)?
        .macro_ap
        .ok_or(Error::NoScoredColumns)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::matrix::Matrix;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn sklearn_doc_example() {
        // sklearn docs: roc_auc_score and average_precision_score examples.
        let y = [0.0, 0.0, 1.0, 1.0];
        let s = [0.1, 0.4, 0.35, 0.8];
        assert!(close(roc_auc(&y, &s).unwrap().unwrap(), 0.75));
        assert!(close(
            average_precision(&y, &s).unwrap().unwrap(),
            0.833_333_333_333_333_4
        ));
    }

    #[test]
    fn perfect_reversed_and_tied() {
        let y = [0.0, 0.0, 1.0, 1.0, 1.0];
        let up = [0.1, 0.2, 0.3, 0.4, 0.5];
        let down = [0.5, 0.4, 0.3, 0.2, 0.1];
        let flat = [0.3; 5];
        assert_eq!(roc_auc(&y, &up).unwrap(), Some(1.0));
        assert_eq!(roc_auc(&y, &down).unwrap(), Some(0.0));
        assert_eq!(roc_auc(&y, &flat).unwrap(), Some(0.5));
        assert_eq!(average_precision(&y, &up).unwrap(), Some(1.0));
        // All tied: one threshold, precision = prevalence.
        assert!(close(average_precision(&y, &flat).unwrap().unwrap(), 0.6));
    }

    #[test]
    fn partial_tie_counts_half() {
        // One positive tied with one of two negatives: pairs (right, tie) = (1, ½) of 2.
        let y = [1.0, 0.0, 0.0];
        let s = [0.5, 0.5, 0.1];
        assert!(close(roc_auc(&y, &s).unwrap().unwrap(), 0.75));
    }

    #[test]
    fn undefined_columns_are_none() {
        assert_eq!(roc_auc(&[0.0, 0.0], &[0.1, 0.2]).unwrap(), None);
        assert_eq!(roc_auc(&[1.0, 1.0], &[0.1, 0.2]).unwrap(), None);
        assert_eq!(average_precision(&[0.0, 0.0], &[0.1, 0.2]).unwrap(), None);
        assert_eq!(
            average_precision(&[1.0, 1.0], &[0.1, 0.2]).unwrap(),
            Some(1.0)
        );
    }

    #[test]
    fn macro_skips_unscorable_columns() {
        // col 0 perfect, col 1 no positive, col 2 all positive, col 3 reversed.
        let labels =
            Matrix::from_rows(&[vec![1.0, 0.0, 1.0, 1.0], vec![0.0, 0.0, 1.0, 0.0]]).unwrap();
        let scores =
            Matrix::from_rows(&[vec![0.9, 0.5, 0.1, 0.1], vec![0.1, 0.5, 0.2, 0.9]]).unwrap();
        let m = evaluate(&scores, &labels).unwrap();
        assert_eq!(m.n_auc_scored, 2);
        assert_eq!(m.macro_auc, Some(0.5));
        assert_eq!(m.n_ap_scored, 3);
        assert!(close(m.macro_ap.unwrap(), (1.0 + 1.0 + 0.5) / 3.0));
        assert_eq!(m.per_class[1].auc, None);
        assert_eq!(m.per_class[2].auc, None);
        assert_eq!(m.per_class[2].n_negative, 0);
    }

    #[test]
    fn errors_are_typed() {
        let a = Matrix::zeros(2, 2);
        let b = Matrix::zeros(2, 3);
        assert!(matches!(evaluate(&a, &b), Err(Error::ShapeMismatch { .. })));
        let e = Matrix::zeros(0, 3);
        assert!(matches!(evaluate(&e, &e), Err(Error::Empty(_))));
        let mut nan = Matrix::zeros(2, 2);
        nan.set(1, 0, f32::NAN);
        assert!(matches!(
            evaluate(&nan, &a),
            Err(Error::NonFiniteScore { row: 1, col: 0, .. })
        ));
        assert!(matches!(macro_roc_auc(&a, &a), Err(Error::NoScoredColumns)));
        assert!(matches!(
            roc_auc(&[1.0], &[]),
            Err(Error::ShapeMismatch { .. })
        ));
        assert!(matches!(roc_auc(&[], &[]), Err(Error::Empty(_))));
    }

    #[test]
    fn threshold_stats_basic() {
        let y = [1.0, 1.0, 0.0, 0.0];
        let s = [0.9, 0.3, 0.6, 0.1];
        let t = threshold_stats(&y, &s, 0.5).unwrap();
        assert_eq!(
            (
                t.true_positives,
                t.false_positives,
                t.false_negatives,
                t.true_negatives
            ),
            (1, 1, 1, 1)
        );
        assert!(close(t.precision, 0.5) && close(t.recall, 0.5) && close(t.f1, 0.5));
        let none = threshold_stats(&y, &s, 2.0).unwrap();
        assert_eq!((none.precision, none.recall, none.f1), (0.0, 0.0, 0.0));
    }

    #[test]
    fn pr_curve_points() {
        let pts = precision_recall_curve(&[0.0, 0.0, 1.0, 1.0], &[0.1, 0.4, 0.35, 0.8]).unwrap();
        let got: Vec<(f64, f64)> = pts.iter().map(|p| (p.recall, p.precision)).collect();
        assert_eq!(
            got,
            vec![(0.5, 1.0), (0.5, 0.5), (1.0, 2.0 / 3.0), (1.0, 0.5)]
        );
    }

    /// The O(n²) definition: pairs ordered right, ties ½.
    fn brute_auc(y: &[bool], s: &[f32]) -> Option<f64> {
        let (mut num, mut pairs) = (0.0, 0.0);
        for (i, &yi) in y.iter().enumerate() {
            for (j, &yj) in y.iter().enumerate() {
                if yi && !yj {
                    pairs += 1.0;
                    if s[i] > s[j] {
                        num += 1.0;
                    } else if s[i] == s[j] {
                        num += 0.5;
                    }
                }
            }
        }
        (pairs > 0.0).then(|| num / pairs)
    }

    proptest! {
        #[test]
        fn auc_invariant_under_monotone_transforms(
            cells in proptest::collection::vec((any::<bool>(), 0u8..12), 1..60),
            scale in 0.01f32..100.0,
            shift in -10.0f32..10.0,
        ) {
            let y: Vec<f32> = cells.iter().map(|&(b, _)| if b { 1.0 } else { 0.0 }).collect();
            // Few levels, so ties are frequent.
            let s: Vec<f32> = cells.iter().map(|&(_, q)| f32::from(q) / 11.0).collect();
            let base = roc_auc(&y, &s).unwrap();
            let affine: Vec<f32> = s.iter().map(|v| v * scale + shift).collect();
            let cubed: Vec<f32> = s.iter().map(|v| (v - 0.3).powi(3)).collect();
            let sigmoid: Vec<f32> = s.iter().map(|v| 1.0 / (1.0 + (-4.0 * v).exp())).collect();
            prop_assert_eq!(base, roc_auc(&y, &affine).unwrap());
            prop_assert_eq!(base, roc_auc(&y, &cubed).unwrap());
            prop_assert_eq!(base, roc_auc(&y, &sigmoid).unwrap());
            prop_assert_eq!(average_precision(&y, &s).unwrap(), average_precision(&y, &sigmoid).unwrap());
            let yb: Vec<bool> = y.iter().map(|&v| v > 0.5).collect();
            match (base, brute_auc(&yb, &s)) {
                (Some(a), Some(b)) => prop_assert!((a - b).abs() < 1e-12),
                (a, b) => prop_assert_eq!(a, b),
            }
        }
    }
}
