//! Kaggle BirdCLEF 2025 submission files.
//!
//! Layout: a header `row_id,<species 1>,…,<species 206>` (taxonomy order), then one row per
//! 5 s window with `row_id = {soundscape_stem}_{end_second}` (`…_5`, `…_10`, …, `…_60`) and one
//! probability per species. A solution file has the same layout with 0/1 values.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::matrix::{Matrix, Scores};
use crate::metrics::{self, MetricSummary};
use crate::report::write_atomic;

/// Window length the row ids count in.
pub const WINDOW_SECONDS: u32 = 5;

/// Name of the first column.
pub const ROW_ID: &str = "row_id";

/// How many examples an alignment error lists.
const EXAMPLES: usize = 5;

/// `row_id` of the window of `stem` that ends at `end_second`.
pub fn row_id(stem: &str, end_second: u32) -> String {
    format!("{stem}_{end_second}")
}

/// Row ids of the first `n_windows` 5 s windows of a soundscape: `{stem}_5`, `{stem}_10`, ….
pub fn soundscape_row_ids(stem: &str, n_windows: usize) -> Vec<String> {
    (1..=n_windows as u32)
        .map(|i| row_id(stem, i * WINDOW_SECONDS))
        .collect()
}

/// A parsed submission or solution.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// Row ids, file order.
    pub row_ids: Vec<String>,
    /// Species codes, file order.
    pub species: Vec<String>,
    /// Values, `row_ids.len() × species.len()`.
    pub values: Matrix,
}

/// The result of [`score_submission`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmissionScore {
    /// The competition score: macro ROC-AUC over the solution's scorable species.
    pub score: f64,
    /// Species codes in solution order (the order of `summary.per_class`).
    pub species: Vec<String>,
    /// Per-class and macro metrics.
    pub summary: MetricSummary,
}

fn duplicates<'a>(items: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut dup = BTreeSet::new();
    for s in items {
        if !seen.insert(s.as_str()) {
            dup.insert(s.clone());
        }
    }
    dup.into_iter().collect()
}

/// Writes a submission CSV atomically. `scores` has one row per `row_ids` entry and one column
/// per `species` entry; every score must be finite (Kaggle rejects NaN).
pub fn write_submission(
    path: impl AsRef<Path>,
    species: &[String],
    row_ids: &[String],
    scores: &Scores,
) -> Result<()> {
    let path = path.as_ref();
    if row_ids.len() != scores.n_rows() || species.len() != scores.n_cols() {
        return Err(Error::ShapeMismatch {
            what: "submission".into(),
            expected: format!("{} row ids × {} species", row_ids.len(), species.len()),
            got: format!("{} × {} scores", scores.n_rows(), scores.n_cols()),
        });
    }
    if let Some(i) = scores.data().iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFiniteScore {
            row: i / scores.n_cols().max(1),
            col: i % scores.n_cols().max(1),
            value: scores.data()[i],
        });
    }
    for (what, names) in [("row_id", row_ids), ("species", species)] {
        let dup = duplicates(names);
        if !dup.is_empty() {
            return Err(Error::InvalidArgument(format!("duplicate {what}: {dup:?}")));
        }
    }
    let csv_err = |source| Error::Csv {
        path: path.into(),
        source,
    };
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(std::iter::once(ROW_ID).chain(species.iter().map(String::as_str)))
        .map_err(csv_err)?;
    let mut record = Vec::with_capacity(species.len() + 1);
    for (r, id) in row_ids.iter().enumerate() {
        record.clear();
        record.push(id.clone());
        // `{}` on f32 prints the shortest text that reads back to the same value.
        record.extend(scores.row(r).iter().map(|v| v.to_string()));
        w.write_record(&record).map_err(csv_err)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    write_atomic(path, &bytes)
}

/// Reads a submission: `row_id` then one finite number per species.
pub fn read_submission(path: impl AsRef<Path>) -> Result<Table> {
    read_table(path.as_ref(), false)
}

/// Reads a solution: same layout as a submission, every value 0 or 1.
pub fn read_solution(path: impl AsRef<Path>) -> Result<Table> {
    read_table(path.as_ref(), true)
}

fn read_table(path: &Path, binary: bool) -> Result<Table> {
    let csv_err = |source| Error::Csv {
        path: path.into(),
        source,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(csv_err)?;
    let header = rdr.headers().map_err(csv_err)?.clone();
    let mut cols = header.iter();
    match cols.next() {
        Some(first) if first.trim() == ROW_ID => {}
        other => {
            return Err(Error::format(
                path,
                format!("first column must be `{ROW_ID}`, found {other:?}"),
            ));
        }
    }
    let species: Vec<String> = cols.map(|s| s.trim().to_string()).collect();
    if species.is_empty() {
        return Err(Error::format(path, "no species columns"));
    }
    let dup = duplicates(&species);
    if !dup.is_empty() {
        return Err(Error::format(path, format!("duplicate columns {dup:?}")));
    }
    let mut row_ids = Vec::new();
    let mut data = Vec::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(csv_err)?;
        let line = i + 2;
        if rec.len() != species.len() + 1 {
            return Err(Error::format(
                path,
                format!(
                    "line {line}: {} fields, header has {}",
                    rec.len(),
                    species.len() + 1
                ),
            ));
        }
        row_ids.push(rec[0].trim().to_string());
        for (j, field) in rec.iter().skip(1).enumerate() {
            let v: f32 = field.trim().parse().map_err(|_| {
                Error::format(
                    path,
                    format!(
                        "line {line}, column `{}`: not a number: {field:?}",
                        species[j]
                    ),
                )
            })?;
            if !v.is_finite() || (binary && v != 0.0 && v != 1.0) {
                let want = if binary { "0 or 1" } else { "a finite number" };
                return Err(Error::format(
                    path,
                    format!(
                        "line {line}, column `{}`: {field:?} is not {want}",
                        species[j]
                    ),
                ));
            }
            data.push(v);
        }
    }
    if row_ids.is_empty() {
        return Err(Error::format(path, "no rows"));
    }
    let dup = duplicates(&row_ids);
    if !dup.is_empty() {
        return Err(Error::format(
            path,
            format!("duplicate row_id {:?}", &dup[..dup.len().min(EXAMPLES)]),
        ));
    }
    let values = Matrix::new(row_ids.len(), species.len(), data)?;
    Ok(Table {
        row_ids,
        species,
        values,
    })
}

/// Differences `a − b`, the count and the first few in `a`'s order.
fn missing(a: &[String], b: &[String]) -> (usize, Vec<String>) {
    let b: BTreeSet<&str> = b.iter().map(String::as_str).collect();
    let miss: Vec<&String> = a.iter().filter(|x| !b.contains(x.as_str())).collect();
    (
        miss.len(),
        miss.into_iter().take(EXAMPLES).cloned().collect(),
    )
}

/// Scores a submission against a solution the way Kaggle does: rows matched by `row_id`,
/// columns by species code (any order), macro ROC-AUC over the solution's species with a
/// positive (and a negative; see [`crate::metrics`]). Missing or extra rows or columns are
/// errors that name a few of them.
pub fn score_submission(
    solution_path: impl AsRef<Path>,
    submission_path: impl AsRef<Path>,
) -> Result<SubmissionScore> {
    let solution = read_solution(solution_path)?;
    let submission = read_submission(submission_path)?;

    let (count, examples) = missing(&solution.species, &submission.species);
    if count > 0 {
        return Err(Error::MissingColumns { count, examples });
    }
    let (count, examples) = missing(&submission.species, &solution.species);
    if count > 0 {
        return Err(Error::ExtraColumns { count, examples });
    }
    let (count, examples) = missing(&solution.row_ids, &submission.row_ids);
    if count > 0 {
        return Err(Error::MissingRows { count, examples });
    }
    let (count, examples) = missing(&submission.row_ids, &solution.row_ids);
    if count > 0 {
        return Err(Error::ExtraRows { count, examples });
    }

    let row_of: HashMap<&str, usize> = submission
        .row_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let col_of: HashMap<&str, usize> = submission
        .species
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    // Both sets are equal now, so every lookup succeeds; reorder into solution order.
    let rows: Vec<usize> = solution
        .row_ids
        .iter()
        .filter_map(|id| row_of.get(id.as_str()).copied())
        .collect();
    let cols: Vec<usize> = solution
        .species
        .iter()
        .filter_map(|s| col_of.get(s.as_str()).copied())
        .collect();
    let aligned = submission.values.select_rows(&rows)?.select_cols(&cols)?;
    let summary = metrics::evaluate(&aligned, &solution.values)?;
    let score = summary.macro_auc.ok_or(Error::NoScoredColumns)?;
    Ok(SubmissionScore {
        score,
        species: solution.species,
        summary,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn row_ids() {
        assert_eq!(row_id("H02_20230420_074000", 5), "H02_20230420_074000_5");
        let ids = soundscape_row_ids("soundscape_1", 12);
        assert_eq!(ids.len(), 12);
        assert_eq!(ids[11], "soundscape_1_60");
    }

    #[test]
    fn write_read_score() {
        let dir = tempfile::tempdir().unwrap();
        let species = s(&["a", "b"]);
        let ids = soundscape_row_ids("x", 4);
        let sol = Matrix::from_rows(&[
            vec![1.0, 0.0],
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 0.0],
        ])
        .unwrap();
        let sub = Matrix::from_rows(&[
            vec![0.9, 0.1],
            vec![0.2, 0.3],
            vec![0.6, 0.2],
            vec![0.7, 0.1],
        ])
        .unwrap();
        let sol_p = dir.path().join("solution.csv");
        let sub_p = dir.path().join("submission.csv");
        write_submission(&sol_p, &species, &ids, &sol).unwrap();
        // Submission with rows and columns shuffled: alignment is by name.
        let sub_species = s(&["b", "a"]);
        let order = [3usize, 0, 2, 1];
        let sub_ids: Vec<String> = order.iter().map(|&i| ids[i].clone()).collect();
        let shuffled = sub
            .select_rows(&order)
            .unwrap()
            .select_cols(&[1, 0])
            .unwrap();
        write_submission(&sub_p, &sub_species, &sub_ids, &shuffled).unwrap();

        let t = read_submission(&sub_p).unwrap();
        assert_eq!(t.values, shuffled);
        let sc = score_submission(&sol_p, &sub_p).unwrap();
        // Column a: positives 0.9, 0.6; negatives 0.2, 0.7 → 3 of 4 pairs.
        assert_eq!(sc.score, 0.75);
        assert_eq!(sc.summary.n_auc_scored, 1);
    }

    #[test]
    fn alignment_errors_are_clear() {
        let dir = tempfile::tempdir().unwrap();
        let sol_p = dir.path().join("solution.csv");
        std::fs::write(&sol_p, "row_id,a,b\nx_5,1,0\nx_10,0,1\n").unwrap();
        let sub = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            score_submission(&sol_p, &p)
        };
        assert!(matches!(
            sub("m.csv", "row_id,a\nx_5,0.1\nx_10,0.2\n"),
            Err(Error::MissingColumns { count: 1, .. })
        ));
        assert!(matches!(
            sub("e.csv", "row_id,a,b,c\nx_5,0.1,0,0\nx_10,0.2,0,0\n"),
            Err(Error::ExtraColumns { count: 1, .. })
        ));
        let err = sub("r.csv", "row_id,a,b\nx_5,0.1,0.2\n").unwrap_err();
        assert!(matches!(err, Error::MissingRows { count: 1, .. }));
        assert!(err.to_string().contains("x_10"), "{err}");
        assert!(matches!(
            sub("x.csv", "row_id,a,b\nx_5,0.1,0.2\nx_10,0.2,0.1\nx_15,0,0\n"),
            Err(Error::ExtraRows { count: 1, .. })
        ));
        assert!(matches!(
            sub("n.csv", "row_id,a,b\nx_5,0.1,nope\nx_10,0.2,0.1\n"),
            Err(Error::Format { .. })
        ));
        assert!(matches!(
            sub("d.csv", "row_id,a,b\nx_5,0.1,0.2\nx_5,0.2,0.1\n"),
            Err(Error::Format { .. })
        ));
        std::fs::write(&sol_p, "row_id,a\nx_5,0.5\n").unwrap();
        assert!(matches!(read_solution(&sol_p), Err(Error::Format { .. })));
    }
}
