//! Cross-validation from the experiment file: `[data] folds/fold` reach the ETL, so the folds'
//! shards hold out disjoint recordings and every demo recording that can be held out (each of
//! its species has another recording) is held out once; `split_seed` keeps the split while the
//! training seed changes.

use std::collections::{BTreeMap, BTreeSet};

use silencio_data::{Split, Taxonomy, read_train_csv, recording_group, usable_records};
use trainer::experiment::Experiment;

use crate::harness::repo;

fn held_out(exp: &Experiment) -> (BTreeSet<String>, usize, String) {
    let store = trainer::prepare::shards(exp, &mut |_| {}).unwrap();
    let m = store.manifest();
    let valid: BTreeSet<String> = m
        .clips
        .iter()
        .filter(|c| c.split == Split::Valid)
        .map(|c| c.filename.clone())
        .collect();
    (valid, m.clips.len(), m.fingerprint.clone())
}

#[test]
fn folds_hold_out_each_recording_once_and_split_seed_fixes_the_split() {
    let tmp = tempfile::tempdir().unwrap();
    let r = repo();
    let folds = 3;
    let mut all = BTreeSet::new();
    let mut clips = 0;
    let mut fingerprints = Vec::new();
    for fold in 0..folds {
        let mut e = Experiment::demo().unwrap();
        e.data.root = r.join("datasets/demo/birdclef");
        e.data.shards = tmp.path().join(format!("shards-{fold}"));
        e.data.folds = folds;
        e.data.fold = fold;
        let (valid, n, fp) = held_out(&e);
        assert!(
            !valid.is_empty() && valid.len() < n / 2,
            "fold {fold}: {} of {n}",
            valid.len()
        );
        assert!(
            all.is_disjoint(&valid),
            "fold {fold} holds out a recording twice"
        );
        all.extend(valid);
        clips = n;
        fingerprints.push(fp);
    }
    // Counted here from train.csv: recordings whose every species has another recording.
    let root = r.join("datasets/demo/birdclef");
    let taxonomy = Taxonomy::from_csv(&root.join("taxonomy.csv")).unwrap();
    let rows = usable_records(
        &read_train_csv(&root.join("train.csv")).unwrap().0,
        &taxonomy,
    );
    let labels = |row: &silencio_data::TrainRecord| -> Vec<String> {
        std::iter::once(&row.primary_label)
            .chain(&row.secondary_labels)
            .filter(|l| taxonomy.index_of(l).is_some())
            .cloned()
            .collect()
    };
    let mut recordings: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for row in &rows {
        for l in labels(row) {
            recordings
                .entry(l)
                .or_default()
                .insert(recording_group(row).to_string());
        }
    }
    let eligible: BTreeSet<String> = rows
        .iter()
        .filter(|row| labels(row).iter().all(|l| recordings[l].len() >= 2))
        .map(|row| row.filename.clone())
        .collect();
    assert!(
        eligible.len() < clips,
        "the demo has recordings that cannot be held out"
    );
    assert_eq!(
        all, eligible,
        "every recording that can be held out is, once"
    );

    // Another training seed with the split seed kept: the same shards (same fingerprint).
    let mut e = Experiment::demo().unwrap();
    e.data.root = r.join("datasets/demo/birdclef");
    e.data.shards = tmp.path().join("shards-seed");
    e.data.folds = folds;
    e.train.seed = 5;
    e.data.split_seed = Some(0);
    assert_eq!(held_out(&e).2, fingerprints[0]);
    // Without it the seed moves the split.
    e.data.split_seed = None;
    e.data.shards = tmp.path().join("shards-moved");
    assert_ne!(held_out(&e).2, fingerprints[0]);
}
