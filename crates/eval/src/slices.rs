//! The metric on slices: subsets of columns (taxon class) and of rows (any row attribute).
//!
//! Row attributes are free-form `key → value` maps so callers can slice by whatever they know
//! (collection, rating bin, time of day, SNR bin, overlap count, background type). The helpers
//! below turn raw values into the bins this project reports on; the `DIM_*` constants name the
//! keys it uses.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::matrix::{Labels, Scores};
use crate::metrics::{self, ClassMetrics};

/// Dimension name of the column-wise slice by taxon class.
pub const DIM_CLASS: &str = "class";
/// Row attribute: data collection (e.g. `XC`, `iNat`, `CSA`, `soundscape`).
pub const DIM_COLLECTION: &str = "collection";
/// Row attribute: recording rating bin, see [`rating_bin`].
pub const DIM_RATING: &str = "rating";
/// Row attribute: time-of-day bin, see [`time_of_day`].
pub const DIM_TIME_OF_DAY: &str = "time_of_day";
/// Row attribute: signal-to-noise bin, see [`snr_bin`].
pub const DIM_SNR: &str = "snr";
/// Row attribute: number of overlapping vocalising species, see [`overlap_bin`].
pub const DIM_OVERLAP: &str = "overlap";
/// Row attribute: background type (rain, river, insects, silence, …).
pub const DIM_BACKGROUND: &str = "background";

/// The metric on one slice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceResult {
    /// What was sliced on, e.g. `class` or `time_of_day`.
    pub dimension: String,
    /// The slice's value, e.g. `Aves` or `dawn 05-08`.
    pub value: String,
    /// Rows in the slice.
    pub n_rows: usize,
    /// Columns that entered the slice's macro ROC-AUC.
    pub n_species_scored: usize,
    /// Macro ROC-AUC on the slice; `None` when no column has both a positive and a negative.
    pub macro_auc: Option<f64>,
    /// Macro AP on the slice; `None` when no column has a positive.
    pub macro_ap: Option<f64>,
}

/// The metric on every slice: first one per taxon class (columns whose `column_class` is that
/// class, all rows), then for each row attribute key (sorted) one per value (rows with that
/// value, all columns). Rows lacking a key are in none of that key's slices.
///
/// `rows_meta` has one map per row of `scores`; `column_class` one class name per column.
pub fn slice_report(
    scores: &Scores,
    labels: &Labels,
    rows_meta: &[BTreeMap<String, String>],
    column_class: &[String],
) -> Result<Vec<SliceResult>> {
    metrics::check_pair(scores, labels)?;
    if rows_meta.len() != scores.n_rows() {
        return Err(Error::ShapeMismatch {
            what: "rows_meta".into(),
            expected: format!("{} rows", scores.n_rows()),
            got: format!("{} rows", rows_meta.len()),
        });
    }
    if column_class.len() != scores.n_cols() {
        return Err(Error::ShapeMismatch {
            what: "column_class".into(),
            expected: format!("{} columns", scores.n_cols()),
            got: format!("{} columns", column_class.len()),
        });
    }
    let full = metrics::evaluate(scores, labels)?;
    let mut out = Vec::new();

    // Column slices reuse the per-class values: a class's macro is the mean over its columns.
    let classes: BTreeSet<&str> = column_class.iter().map(String::as_str).collect();
    for class in classes {
        let members: Vec<ClassMetrics> = full
            .per_class
            .iter()
            .filter(|c| column_class[c.column] == class)
            .cloned()
            .collect();
        let s = metrics::summarise(members);
        out.push(SliceResult {
            dimension: DIM_CLASS.into(),
            value: class.into(),
            n_rows: scores.n_rows(),
            n_species_scored: s.n_auc_scored,
            macro_auc: s.macro_auc,
            macro_ap: s.macro_ap,
        });
    }

    let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (row, meta) in rows_meta.iter().enumerate() {
        for (k, v) in meta {
            groups.entry((k, v)).or_default().push(row);
        }
    }
    for ((dimension, value), rows) in groups {
        let s = metrics::evaluate(&scores.select_rows(&rows)?, &labels.select_rows(&rows)?)?;
        out.push(SliceResult {
            dimension: dimension.into(),
            value: value.into(),
            n_rows: rows.len(),
            n_species_scored: s.n_auc_scored,
            macro_auc: s.macro_auc,
            macro_ap: s.macro_ap,
        });
    }
    Ok(out)
}

/// Time-of-day bin of a soundscape from its stem `{site}_{YYYYMMDD}_{HHMMSS}`, e.g.
/// `H02_20230420_074000` → `dawn 05-08`. Bins (local time, El Silencio sits near the equator so
/// sunrise and sunset barely move): `night 19-05`, `dawn 05-08`, `day 08-17`, `dusk 17-19`.
/// `None` when the stem has no date-time part or the hour is not 00–23.
pub fn time_of_day(stem: &str) -> Option<String> {
    let parts: Vec<&str> = stem.split('_').collect();
    let is_digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    let time = parts
        .windows(2)
        .rev()
        .find(|w| is_digits(w[0], 8) && is_digits(w[1], 6))
        .map(|w| w[1])?;
    let hour: u32 = time.get(0..2)?.parse().ok()?;
    let bin = match hour {
        5..=7 => "dawn 05-08",
        8..=16 => "day 08-17",
        17..=18 => "dusk 17-19",
        19..=23 | 0..=4 => "night 19-05",
        _ => return None,
    };
    Some(bin.into())
}

/// Rating bin of a `train.csv` rating (0–5, 0 meaning unrated).
pub fn rating_bin(rating: f32) -> String {
    if !rating.is_finite() || rating <= 0.0 {
        "unrated".into()
    } else if rating < 3.0 {
        "low <3".into()
    } else if rating < 4.0 {
        "mid 3-4".into()
    } else {
        "high >=4".into()
    }
}

/// SNR bin of a window's signal-to-noise ratio in dB.
pub fn snr_bin(snr_db: f32) -> String {
    // Weak signals (−20…−10 dB) are a failure suite of their own: keep them apart from −10…0.
    if snr_db.is_nan() {
        "unknown".into()
    } else if snr_db < -10.0 {
        "<-10 dB".into()
    } else if snr_db < 0.0 {
        "-10-0 dB".into()
    } else if snr_db < 10.0 {
        "0-10 dB".into()
    } else if snr_db < 20.0 {
        "10-20 dB".into()
    } else {
        ">=20 dB".into()
    }
}

/// Bin of the number of species heard in a window: `0`, `1`, `2`, `3+`.
pub fn overlap_bin(n_species: usize) -> String {
    match n_species {
        0..=2 => n_species.to_string(),
        _ => "3+".into(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::matrix::Matrix;

    #[test]
    fn time_of_day_bins() {
        assert_eq!(
            time_of_day("H02_20230420_074000").as_deref(),
            Some("dawn 05-08")
        );
        assert_eq!(
            time_of_day("H02_20230420_000000").as_deref(),
            Some("night 19-05")
        );
        assert_eq!(
            time_of_day("S13_20230601_120500").as_deref(),
            Some("day 08-17")
        );
        assert_eq!(
            time_of_day("S13_20230601_175900").as_deref(),
            Some("dusk 17-19")
        );
        assert_eq!(
            time_of_day("S13_20230601_190000").as_deref(),
            Some("night 19-05")
        );
        assert_eq!(time_of_day("S13_20230601_250000"), None);
        assert_eq!(time_of_day("XC123456"), None);
        assert_eq!(time_of_day(""), None);
    }

    #[test]
    fn bins() {
        assert_eq!(rating_bin(0.0), "unrated");
        assert_eq!(rating_bin(4.5), "high >=4");
        assert_eq!(snr_bin(-3.0), "-10-0 dB");
        assert_eq!(snr_bin(-15.0), "<-10 dB");
        assert_eq!(snr_bin(25.0), ">=20 dB");
        assert_eq!(overlap_bin(5), "3+");
    }

    #[test]
    fn slices_by_class_and_attribute() {
        // Two species; rows 0-1 "a" (perfect), rows 2-3 "b" (reversed).
        let labels = Matrix::from_rows(&[
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
        ])
        .unwrap();
        let scores = Matrix::from_rows(&[
            vec![0.9, 0.1],
            vec![0.1, 0.9],
            vec![0.1, 0.9],
            vec![0.9, 0.1],
        ])
        .unwrap();
        let meta: Vec<BTreeMap<String, String>> = ["a", "a", "b", "b"]
            .iter()
            .map(|v| BTreeMap::from([("collection".to_string(), v.to_string())]))
            .collect();
        let classes = vec!["Aves".to_string(), "Insecta".to_string()];
        let r = slice_report(&scores, &labels, &meta, &classes).unwrap();
        assert_eq!(r.len(), 4);
        assert_eq!(
            (r[0].dimension.as_str(), r[0].value.as_str()),
            ("class", "Aves")
        );
        assert_eq!(r[0].n_species_scored, 1);
        assert_eq!(r[0].macro_auc, Some(0.5));
        let a = r.iter().find(|s| s.value == "a").unwrap();
        assert_eq!((a.n_rows, a.macro_auc), (2, Some(1.0)));
        let b = r.iter().find(|s| s.value == "b").unwrap();
        assert_eq!(b.macro_auc, Some(0.0));
        assert!(slice_report(&scores, &labels, &meta[..3], &classes).is_err());
    }
}
