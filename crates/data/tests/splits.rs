//! The train/validation and temporal splits group rows by source recording: with one row per
//! recording (the demo set) they are the per-row splits; rows sharing a url never straddle.
#![allow(clippy::unwrap_used)] // test helpers

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use silencio_data::splits::iterative_stratification;
use silencio_data::{
    CvFold, Holdout, Period, Split, Taxonomy, TrainRecord, holdout_split, read_train_csv,
    recording_group, temporal_split, train_valid_split, usable_records,
};

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/demo/birdclef")
}

fn demo_rows() -> (Vec<TrainRecord>, Taxonomy) {
    let taxonomy = Taxonomy::from_csv(&demo().join("taxonomy.csv")).unwrap();
    let (records, _) = read_train_csv(&demo().join("train.csv")).unwrap();
    (usable_records(&records, &taxonomy), taxonomy)
}

/// The split as it was before grouping: each row one item.
fn per_row_split(rows: &[TrainRecord], taxonomy: &Taxonomy, frac: f64, seed: u64) -> Vec<Split> {
    let labels: Vec<Vec<usize>> = rows
        .iter()
        .map(|r| {
            let mut ls: Vec<usize> = std::iter::once(&r.primary_label)
                .chain(&r.secondary_labels)
                .filter_map(|l| taxonomy.index_of(l))
                .collect();
            ls.sort_unstable();
            ls.dedup();
            ls
        })
        .collect();
    iterative_stratification(&labels, taxonomy.len(), &[1.0 - frac, frac], seed)
        .into_iter()
        .map(|j| if j == 1 { Split::Valid } else { Split::Train })
        .collect()
}

/// Whether some group has rows with different values.
fn straddles<T: PartialEq + Copy>(rows: &[TrainRecord], values: &[T]) -> bool {
    let mut seen: HashMap<&str, T> = HashMap::new();
    rows.iter()
        .zip(values)
        .any(|(r, &v)| *seen.entry(recording_group(r)).or_insert(v) != v)
}

#[test]
fn demo_split_with_unique_urls_is_the_per_row_split() {
    let (rows, taxonomy) = demo_rows();
    let urls: Vec<&str> = rows.iter().map(|r| r.url.as_str()).collect();
    assert!(urls.iter().all(|u| !u.is_empty()));
    let mut unique = urls.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), urls.len(), "the demo's urls are unique");
    for seed in [0, 1, 3, 42] {
        for frac in [0.2, 0.5] {
            let grouped = train_valid_split(&rows, &taxonomy, frac, seed);
            assert_eq!(grouped, per_row_split(&rows, &taxonomy, frac, seed));
            assert!(grouped.contains(&Split::Valid) && grouped.contains(&Split::Train));
        }
    }
}

#[test]
fn rows_sharing_a_url_share_their_split_and_period() {
    let (mut rows, taxonomy) = demo_rows();
    // Pieces of few recordings: every run of three rows of a species shares one url (and one
    // row has an empty url, so it is grouped by its filename alone).
    let mut count: HashMap<String, usize> = HashMap::new();
    for r in &mut rows {
        let n = count.entry(r.primary_label.clone()).or_default();
        r.url = format!("src:{}/{}", r.primary_label, *n / 3);
        *n += 1;
    }
    rows[0].url.clear();
    let groups: std::collections::HashSet<&str> = rows.iter().map(recording_group).collect();
    assert!(groups.len() < rows.len() - 5, "{} groups", groups.len());

    let mut any_valid = false;
    let mut per_row_straddled = false;
    for seed in 0..8 {
        let split = train_valid_split(&rows, &taxonomy, 0.3, seed);
        assert!(
            !straddles(&rows, &split),
            "seed {seed}: a recording straddles"
        );
        any_valid |= split.contains(&Split::Valid);
        // The per-row split does put pieces on both sides: the grouping is what prevents it.
        per_row_straddled |= straddles(&rows, &per_row_split(&rows, &taxonomy, 0.3, seed));
    }
    assert!(any_valid);
    assert!(per_row_straddled);

    let periods = temporal_split(&rows, 0.7);
    assert!(!straddles(&rows, &periods), "a recording straddles periods");
    assert!(periods.contains(&Period::Retrain) && periods.contains(&Period::Initial));
}

#[test]
fn temporal_split_counts_a_recording_once_at_its_oldest_row() {
    let (rows, _) = demo_rows();
    let mut rows: Vec<TrainRecord> = rows
        .into_iter()
        .filter(|r| r.collection == "DEMO")
        .take(10)
        .collect();
    assert_eq!(rows.len(), 10);
    // Sorted by catalogue number, rows 0..10 in order; one recording of rows 0, 1 and 9.
    rows.sort_by_key(|r| silencio_data::splits::catalogue_number(&r.filename));
    for r in &mut rows {
        r.url = r.filename.clone();
    }
    for i in [0, 1, 9] {
        rows[i].url = "src:one".into();
    }
    // 8 recordings, ceil(0.7 · 8) = 6 initial: the shared one (oldest at row 0) and rows 2..=6.
    let p = temporal_split(&rows, 0.7);
    let want: Vec<Period> = (0..10)
        .map(|i| {
            if i <= 6 || i == 9 {
                Period::Initial
            } else {
                Period::Retrain
            }
        })
        .collect();
    assert_eq!(p, want);
}

#[test]
fn folds_hold_out_every_eligible_recording_exactly_once() {
    let (mut rows, taxonomy) = demo_rows();
    // Pieces: pairs of rows share a recording, and the first species keeps one recording only.
    let mut count: HashMap<String, usize> = HashMap::new();
    for r in &mut rows {
        let n = count.entry(r.primary_label.clone()).or_default();
        r.url = format!("src:{}/{}", r.primary_label, *n / 2);
        *n += 1;
    }
    let lonely = rows[0].primary_label.clone();
    for r in rows.iter_mut().filter(|r| r.primary_label == lonely) {
        r.url = "src:only-one".into();
        r.secondary_labels.clear();
    }
    for r in &mut rows {
        r.secondary_labels.retain(|l| *l != lonely);
    }
    // Species carried by at least two recordings.
    let mut recordings_of: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
    for r in &rows {
        for l in std::iter::once(&r.primary_label).chain(&r.secondary_labels) {
            recordings_of
                .entry(l)
                .or_default()
                .insert(recording_group(r));
        }
    }
    let eligible = |r: &TrainRecord| {
        std::iter::once(&r.primary_label)
            .chain(&r.secondary_labels)
            .all(|l| recordings_of[l.as_str()].len() >= 2)
    };
    for seed in [0, 5] {
        let k = 4;
        let splits: Vec<Vec<Split>> = (0..k)
            .map(|fold| {
                holdout_split(
                    &rows,
                    &taxonomy,
                    Holdout::Fold(CvFold { fold, folds: k }),
                    seed,
                )
            })
            .collect();
        for (i, r) in rows.iter().enumerate() {
            let held: Vec<usize> = (0..k).filter(|&f| splits[f][i] == Split::Valid).collect();
            if eligible(r) {
                assert_eq!(
                    held.len(),
                    1,
                    "seed {seed}: {} held out in folds {held:?}",
                    r.filename
                );
            } else {
                assert!(
                    held.is_empty(),
                    "seed {seed}: {} (one recording) held out",
                    r.filename
                );
            }
        }
        for s in &splits {
            assert!(!straddles(&rows, s), "a recording straddles");
            // Stratified: every fold holds out some recordings, none holds out most.
            let n = s.iter().filter(|&&x| x == Split::Valid).count();
            assert!(
                n > 0 && n < rows.len() / 2,
                "fold holds out {n} of {}",
                rows.len()
            );
        }
        let again = holdout_split(
            &rows,
            &taxonomy,
            Holdout::Fold(CvFold { fold: 1, folds: k }),
            seed,
        );
        assert_eq!(again, splits[1], "deterministic");
    }
    assert!(rows.iter().any(|r| !eligible(r)));
    assert!(CvFold { fold: 2, folds: 2 }.check().is_err());
    assert!(CvFold { fold: 0, folds: 1 }.check().is_err());
    assert!(CvFold { fold: 1, folds: 2 }.check().is_ok());
}
