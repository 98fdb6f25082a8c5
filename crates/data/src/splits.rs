//! Splits, always by source recording (the rows cut from one recording are one group, so none
//! of its windows can sit in two splits), deterministic by seed:
//! - train/validation: iterative stratification for multi-label data (Sechidis, Tsoumakas &
//!   Vlahavas, "On the stratification of multi-label data", ECML PKDD 2011), as
//!   scikit-multilearn's `IterativeStratification` implements it for one level;
//! - temporal: within each collection, the older 70 % by catalogue number (XC, iNat and CSA ids
//!   grow with upload time) for initial training and the newer 30 % for retraining.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use silencio_common::SplitMix64;

use crate::taxonomy::Taxonomy;
use crate::train_csv::TrainRecord;

/// Assigns each item (its label indices in `0..n_labels`) to a fold so that every label's
/// examples are spread over the folds in the proportions `fractions` (which sum to 1).
/// Returns the fold index of each item.
pub fn iterative_stratification(
    labels: &[Vec<usize>],
    n_labels: usize,
    fractions: &[f64],
    seed: u64,
) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let n = labels.len();
    let folds = fractions.len();
    // Desired items per fold, and desired examples of each label per fold.
    let mut want: Vec<f64> = fractions.iter().map(|r| r * n as f64).collect();
    let mut per_label = vec![0usize; n_labels];
    for ls in labels {
        for &l in ls {
            per_label[l] += 1;
        }
    }
    let mut want_label: Vec<Vec<f64>> = (0..n_labels)
        .map(|l| fractions.iter().map(|r| r * per_label[l] as f64).collect())
        .collect();
    let mut fold = vec![usize::MAX; n];
    let mut remaining_of: Vec<Vec<usize>> = vec![Vec::new(); n_labels];
    for (i, ls) in labels.iter().enumerate() {
        for &l in ls {
            remaining_of[l].push(i);
        }
    }
    let mut left = vec![0usize; n_labels];
    for l in 0..n_labels {
        left[l] = remaining_of[l].len();
    }

    // Picks the fold wanting most of `label` (then most items overall, then at random).
    let pick = |want_l: &[f64], want: &[f64], rng: &mut SplitMix64| -> usize {
        let best = want_l.iter().cloned().fold(f64::MIN, f64::max);
        let c1: Vec<usize> = (0..folds).filter(|&j| want_l[j] == best).collect();
        let best2 = c1.iter().map(|&j| want[j]).fold(f64::MIN, f64::max);
        let c2: Vec<usize> = c1.into_iter().filter(|&j| want[j] == best2).collect();
        c2[rng.below(c2.len())]
    };

    loop {
        // The label with the fewest examples still unassigned (ties at random).
        let min = left.iter().filter(|&&c| c > 0).min().copied();
        let Some(min) = min else { break };
        let ties: Vec<usize> = (0..n_labels).filter(|&l| left[l] == min).collect();
        let l = ties[rng.below(ties.len())];
        let mut items: Vec<usize> = remaining_of[l]
            .iter()
            .copied()
            .filter(|&i| fold[i] == usize::MAX)
            .collect();
        rng.shuffle(&mut items);
        for i in items {
            let j = pick(&want_label[l], &want, &mut rng);
            fold[i] = j;
            want[j] -= 1.0;
            for &m in &labels[i] {
                want_label[m][j] -= 1.0;
                left[m] -= 1;
            }
        }
    }
    // Items without labels: wherever most items are still wanted.
    let mut unlabelled: Vec<usize> = (0..n).filter(|&i| fold[i] == usize::MAX).collect();
    rng.shuffle(&mut unlabelled);
    for i in unlabelled {
        let best = want.iter().cloned().fold(f64::MIN, f64::max);
        let c: Vec<usize> = (0..folds).filter(|&j| want[j] == best).collect();
        let j = c[rng.below(c.len())];
        fold[i] = j;
        want[j] -= 1.0;
    }
    fold
}

/// Train or validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Used for training.
    Train,
    /// Held out for validation.
    Valid,
}

/// The source recording of a row: its `url` when not empty, else its filename. Rows with the
/// same value are one group for every split, and one cluster for evaluation. The url is taken
/// whole: pieces whose urls differ only in a `#t=start,end` fragment are different groups, so
/// a dataset whose pieces share a recording must give them the same url.
pub fn recording_group(r: &TrainRecord) -> &str {
    let url = r.url.trim();
    if url.is_empty() { &r.filename } else { url }
}

/// The group index of each row (groups numbered in order of first appearance) and the number
/// of groups.
fn groups_of(records: &[TrainRecord]) -> (Vec<usize>, usize) {
    let mut index: HashMap<&str, usize> = HashMap::new();
    let of = records
        .iter()
        .map(|r| {
            let n = index.len();
            *index.entry(recording_group(r)).or_insert(n)
        })
        .collect();
    (of, index.len())
}

/// Stratified train/validation split of recordings, by their primary and secondary labels
/// (labels not in the taxonomy are ignored). The rows of one source recording
/// ([`recording_group`]) are stratified as one item carrying the union of their labels and all
/// get its fold; with one row per recording this is the per-row split. `valid_fraction` in
/// (0, 1).
pub fn train_valid_split(
    records: &[TrainRecord],
    taxonomy: &Taxonomy,
    valid_fraction: f64,
    seed: u64,
) -> Vec<Split> {
    holdout_split(records, taxonomy, Holdout::Fraction(valid_fraction), seed)
}

/// One fold of a `folds`-fold cross-validation: fold `fold` (in `0..folds`) is held out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CvFold {
    /// The fold held out for validation.
    pub fold: usize,
    /// Number of folds (at least 2).
    pub folds: usize,
}

impl CvFold {
    /// Checks `folds ≥ 2` and `fold < folds`.
    pub fn check(self) -> std::result::Result<(), String> {
        if self.folds < 2 || self.fold >= self.folds {
            return Err(format!(
                "fold {} of {} folds: need at least 2 folds and a fold in 0..{}",
                self.fold, self.folds, self.folds
            ));
        }
        Ok(())
    }
}

/// Which recordings a split holds out for validation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Holdout {
    /// A share of the recordings, in (0, 1).
    Fraction(f64),
    /// One fold of a cross-validation: the recordings are stratified into `folds` equal folds
    /// (the assignment depends on the seed, never on `fold`), so the `folds` splits of one seed
    /// hold out disjoint sets of recordings whose union is every recording that can be held
    /// out. A recording can be held out only when every species it carries is also carried by
    /// another recording: the model then trains on every species it is tested on, and a species
    /// known from one recording is always trained on, never scored.
    Fold(CvFold),
}

/// Stratified split of recordings (see [`train_valid_split`] and [`Holdout`]).
pub fn holdout_split(
    records: &[TrainRecord],
    taxonomy: &Taxonomy,
    holdout: Holdout,
    seed: u64,
) -> Vec<Split> {
    let (group_of, n_groups) = groups_of(records);
    let mut labels: Vec<Vec<usize>> = vec![Vec::new(); n_groups];
    for (r, &g) in records.iter().zip(&group_of) {
        labels[g].extend(
            std::iter::once(&r.primary_label)
                .chain(&r.secondary_labels)
                .filter_map(|l| taxonomy.index_of(l)),
        );
    }
    for ls in &mut labels {
        ls.sort_unstable();
        ls.dedup();
    }
    let valid: Vec<bool> = match holdout {
        Holdout::Fraction(f) => {
            let f = f.clamp(0.0, 1.0);
            iterative_stratification(&labels, taxonomy.len(), &[1.0 - f, f], seed)
                .into_iter()
                .map(|fold| fold == 1)
                .collect()
        }
        Holdout::Fold(cv) => {
            let mut groups_with = vec![0usize; taxonomy.len()];
            for ls in &labels {
                for &l in ls {
                    groups_with[l] += 1;
                }
            }
            let eligible: Vec<usize> = (0..n_groups)
                .filter(|&g| {
                    !labels[g].is_empty() && labels[g].iter().all(|&l| groups_with[l] >= 2)
                })
                .collect();
            let sub: Vec<Vec<usize>> = eligible.iter().map(|&g| labels[g].clone()).collect();
            let k = cv.folds.max(1);
            let folds =
                iterative_stratification(&sub, taxonomy.len(), &vec![1.0 / k as f64; k], seed);
            let mut valid = vec![false; n_groups];
            for (&g, f) in eligible.iter().zip(folds) {
                valid[g] = f == cv.fold;
            }
            valid
        }
    };
    group_of
        .into_iter()
        .map(|g| if valid[g] { Split::Valid } else { Split::Train })
        .collect()
}

/// Older or newer part of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// The older share, for initial training.
    Initial,
    /// The newer share, for retraining.
    Retrain,
}

/// Which periods a selection takes: every window, or one [`Period`]'s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeriodFilter {
    /// Both periods.
    #[default]
    All,
    /// The older share only.
    Initial,
    /// The newer share only.
    Retrain,
}

impl PeriodFilter {
    /// Whether a window of period `p` is taken.
    pub fn admits(self, p: Period) -> bool {
        match self {
            PeriodFilter::All => true,
            PeriodFilter::Initial => p == Period::Initial,
            PeriodFilter::Retrain => p == Period::Retrain,
        }
    }
}

/// The catalogue number of `grekis/XC123456.ogg` (123456), `iNat1234` or `CSA36389`: the
/// digits of the file stem. `None` when the stem has none.
pub fn catalogue_number(filename: &str) -> Option<u64> {
    let stem = filename.rsplit('/').next()?.split('.').next()?;
    let digits: String = stem.chars().filter(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Within each collection, the oldest `ceil(initial_fraction · n)` of its `n` source
/// recordings ([`recording_group`]) by catalogue number are [`Period::Initial`], the rest
/// [`Period::Retrain`]; a recording cut into several rows counts once, at its oldest row, and
/// all its rows share its period. Recordings without a number count as oldest; ties break by
/// filename, so the result is deterministic.
pub fn temporal_split(records: &[TrainRecord], initial_fraction: f64) -> Vec<Period> {
    let (group_of, _) = groups_of(records);
    // Per collection, its groups with their rows; the first row of a group is its oldest.
    let mut by_collection: HashMap<&str, HashMap<usize, Vec<usize>>> = HashMap::new();
    for (i, r) in records.iter().enumerate() {
        by_collection
            .entry(r.collection.as_str())
            .or_default()
            .entry(group_of[i])
            .or_default()
            .push(i);
    }
    let key = |i: usize| (catalogue_number(&records[i].filename), &records[i].filename);
    let mut out = vec![Period::Initial; records.len()];
    for groups in by_collection.into_values() {
        let mut groups: Vec<Vec<usize>> = groups.into_values().collect();
        for rows in &mut groups {
            rows.sort_by(|&a, &b| key(a).cmp(&key(b)).then(a.cmp(&b)));
        }
        // Row order breaks ties, as the stable per-row sort did.
        groups.sort_by(|a, b| key(a[0]).cmp(&key(b[0])).then(a[0].cmp(&b[0])));
        let keep = (initial_fraction.clamp(0.0, 1.0) * groups.len() as f64).ceil() as usize;
        for rows in groups.iter().skip(keep) {
            for &i in rows {
                out[i] = Period::Retrain;
            }
        }
    }
    out
}

/// The split table of a dataset: `filename,primary_label,collection,split,period` per usable
/// recording (unknown primary labels and duplicate filenames left out), in `train.csv` order.
pub fn split_table(
    records: &[TrainRecord],
    taxonomy: &Taxonomy,
    valid_fraction: f64,
    initial_fraction: f64,
    seed: u64,
) -> String {
    // Screened exactly as the ETL screens, so that this table and its shards agree.
    let usable = crate::validate::usable_records(records, taxonomy);
    let splits = train_valid_split(&usable, taxonomy, valid_fraction, seed);
    let periods = temporal_split(&usable, initial_fraction);
    // The csv writer quotes fields that need it (a filename with a comma stays one field).
    // Writing to memory cannot fail.
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(["filename", "primary_label", "collection", "split", "period"]);
    for ((r, s), p) in usable.iter().zip(splits).zip(periods) {
        let s = if s == Split::Valid { "valid" } else { "train" };
        let p = if p == Period::Retrain {
            "retrain"
        } else {
            "initial"
        };
        let _ = w.write_record([&r.filename, &r.primary_label, &r.collection, s, p]);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 600 items, 30 labels with Zipf-like frequencies, 1–3 labels each: BirdCLEF-like skew.
    fn synthetic(seed: u64) -> Vec<Vec<usize>> {
        let mut rng = SplitMix64::new(seed);
        (0..600)
            .map(|_| {
                let k = 1 + rng.below(3);
                let mut ls: Vec<usize> = (0..k)
                    .map(|_| {
                        // P(label l) ∝ 1 / (l + 1)
                        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                        let h: f64 = (1..=30).map(|l| 1.0 / l as f64).sum();
                        let mut acc = 0.0;
                        (0..30)
                            .find(|&l| {
                                acc += 1.0 / (l + 1) as f64 / h;
                                u < acc
                            })
                            .unwrap_or(29)
                    })
                    .collect();
                ls.sort_unstable();
                ls.dedup();
                ls
            })
            .collect()
    }

    fn worst_label_deviation(labels: &[Vec<usize>], folds: &[usize], frac: f64) -> f64 {
        let mut n = [0usize; 30];
        let mut v = [0usize; 30];
        for (ls, &f) in labels.iter().zip(folds) {
            for &l in ls {
                n[l] += 1;
                v[l] += usize::from(f == 1);
            }
        }
        (0..30)
            .map(|l| (v[l] as f64 - frac * n[l] as f64).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn stratification_is_deterministic_and_balanced() {
        let labels = synthetic(7);
        let a = iterative_stratification(&labels, 30, &[0.8, 0.2], 42);
        assert_eq!(a, iterative_stratification(&labels, 30, &[0.8, 0.2], 42));
        assert_ne!(a, iterative_stratification(&labels, 30, &[0.8, 0.2], 43));
        let valid = a.iter().filter(|&&f| f == 1).count();
        // Label balance comes first; the item total stays within 1 % of N of the target.
        assert!((valid as f64 - 120.0).abs() <= 6.0, "valid {valid}");
        let strat = worst_label_deviation(&labels, &a, 0.2);
        // A plain random 20 % split of the same items, for comparison.
        let mut rng = SplitMix64::new(42);
        let mut idx: Vec<usize> = (0..labels.len()).collect();
        rng.shuffle(&mut idx);
        let mut random = vec![0; labels.len()];
        for &i in &idx[..120] {
            random[i] = 1;
        }
        let rand_dev = worst_label_deviation(&labels, &random, 0.2);
        eprintln!("worst label deviation: stratified {strat}, random {rand_dev}");
        assert!(strat <= 2.0, "stratified worst deviation {strat} examples");
        assert!(strat < rand_dev, "stratified {strat} vs random {rand_dev}");
    }

    #[test]
    fn temporal_split_is_per_collection_and_ordered() {
        let rec = |f: &str, c: &str| TrainRecord {
            line: 0,
            primary_label: "x".into(),
            secondary_labels: vec![],
            call_types: vec![],
            filename: f.into(),
            collection: c.into(),
            rating: None,
            latitude: None,
            longitude: None,
            author: String::new(),
            license: String::new(),
            url: String::new(),
        };
        let records: Vec<TrainRecord> = [
            ("a/XC900.ogg", "XC"),
            ("a/XC100.ogg", "XC"),
            ("b/XC500.ogg", "XC"),
            ("a/iNat50.ogg", "iNat"),
            ("a/iNat7.ogg", "iNat"),
            ("b/XC300.ogg", "XC"),
            ("c/XC700.ogg", "XC"),
            ("c/XC800.ogg", "XC"),
            ("c/XC200.ogg", "XC"),
            ("c/XC400.ogg", "XC"),
            ("c/XC600.ogg", "XC"),
        ]
        .iter()
        .map(|(f, c)| rec(f, c))
        .collect();
        let p = temporal_split(&records, 0.7);
        // XC: 9 recordings, ceil(6.3) = 7 oldest (100..700) initial; 800, 900 retrain.
        // iNat: 2 recordings, ceil(1.4) = 2 initial.
        for (r, p) in records.iter().zip(&p) {
            let n = catalogue_number(&r.filename).unwrap();
            let want = if r.collection == "XC" && n >= 800 {
                Period::Retrain
            } else {
                Period::Initial
            };
            assert_eq!(*p, want, "{}", r.filename);
        }
        assert_eq!(catalogue_number("grekis/XC123456.ogg"), Some(123_456));
        assert_eq!(catalogue_number("CSA36389.ogg"), Some(36_389));
        assert_eq!(catalogue_number("x/nodigits.ogg"), None);
    }
}
