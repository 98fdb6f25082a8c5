//! The soundscape mixer's labels, checked independently: every placed call is found again in
//! the decoded OGG by matched filtering (normalised cross-correlation over the whole minute),
//! and the windows where the calls are found give exactly the solution CSV. Calls come from
//! held-out recordings only, and a mix is byte-identical for the same seed.

// Test helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use silencio_audio::{DecodeOptions, decode_path};
use silencio_data::mix::{self, CallPool, MixOptions, SAMPLE_RATE};
use silencio_data::{
    CvFold, Holdout, Split, Taxonomy, holdout_split, read_train_csv, train_valid_split,
    usable_records,
};

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/demo")
}

fn decode32k(p: &Path) -> Vec<f32> {
    decode_path(
        p,
        &DecodeOptions {
            target_rate: Some(SAMPLE_RATE),
            max_duration_s: 3600.0,
            max_input_samples: None,
        },
    )
    .unwrap()
    .samples
}

/// The `m` offsets (samples) where `t` correlates best with `x` (normalised cross-correlation),
/// at least `t.len()` apart, with their correlations.
fn best_matches(x: &[f32], t: &[f32], m: usize) -> Vec<(usize, f64)> {
    let n = (x.len() + t.len()).next_power_of_two();
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    let fwd = planner.plan_fft_forward(n);
    let inv = planner.plan_fft_inverse(n);
    let spectrum = |v: &[f32]| {
        let mut buf: Vec<f64> = v.iter().map(|&s| f64::from(s)).collect();
        buf.resize(n, 0.0);
        let mut out = fwd.make_output_vec();
        fwd.process(&mut buf, &mut out).unwrap();
        out
    };
    let (fx, ft) = (spectrum(x), spectrum(t));
    let mut prod: Vec<_> = fx.iter().zip(&ft).map(|(a, b)| a * b.conj()).collect();
    let mut corr = inv.make_output_vec();
    inv.process(&mut prod, &mut corr).unwrap();
    let t_norm = t.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
    let mut prefix = vec![0.0f64; x.len() + 1];
    for (i, &v) in x.iter().enumerate() {
        prefix[i + 1] = prefix[i] + f64::from(v).powi(2);
    }
    let mut r: Vec<f64> = (0..=x.len() - t.len())
        .map(|k| {
            let e = (prefix[k + t.len()] - prefix[k]).max(1e-20).sqrt();
            corr[k] / n as f64 / (e * t_norm)
        })
        .collect();
    let mut found = Vec::new();
    for _ in 0..m {
        let (k, best) = r
            .iter()
            .enumerate()
            .fold((0, f64::MIN), |b, (k, &v)| if v > b.1 { (k, v) } else { b });
        found.push((k, best));
        let lo = k.saturating_sub(t.len());
        let hi = (k + t.len()).min(r.len());
        r[lo..hi].iter_mut().for_each(|v| *v = f64::MIN);
    }
    found
}

fn read_csv(path: &Path) -> Vec<BTreeMap<String, String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let headers = r.headers().unwrap().clone();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            headers
                .iter()
                .zip(rec.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn placed_calls_are_redetected_in_the_windows_the_solution_names() {
    let root = demo().join("birdclef");
    let opts = MixOptions {
        minutes: 2,
        seed: 11,
        snr_db: (0.0, 10.0),
        max_overlap: 3,
        background_only: 0.25,
        pool: CallPool::Valid,
        ..MixOptions::default()
    };
    let set = mix::load_calls(&root, &opts).unwrap();
    assert!(
        set.calls.len() >= 3,
        "too few held-out calls: {}",
        set.calls.len()
    );
    let backgrounds = mix::load_backgrounds(&demo().join("backgrounds")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("mix");
    let report = mix::mix(&set, &backgrounds, &opts, &out).unwrap();
    assert_eq!(report.windows.len(), 24);
    assert!(report.windows.iter().any(|w| w.calls == 0));
    assert!(report.windows.iter().any(|w| w.calls >= 2));

    // Calls come only from recordings the ETL's split (same fraction and seed) holds out.
    let taxonomy = Taxonomy::from_csv(&root.join("taxonomy.csv")).unwrap();
    let (records, _) = read_train_csv(&root.join("train.csv")).unwrap();
    let usable = usable_records(&records, &taxonomy);
    let splits = train_valid_split(&usable, &taxonomy, opts.valid_fraction, opts.split_seed);
    let held_out: BTreeSet<&str> = usable
        .iter()
        .zip(&splits)
        .filter(|(_, s)| **s == Split::Valid)
        .map(|(r, _)| r.filename.as_str())
        .collect();
    let calls = read_csv(&out.join("calls.csv"));
    assert_eq!(calls.len(), report.placed.len());
    for c in &calls {
        assert!(
            held_out.contains(c["source"].as_str()),
            "{} is not held out",
            c["source"]
        );
    }

    // Find every call again in the decoded soundscape, from its source recording alone. A
    // stretch placed m times in one soundscape must give its m best matches there.
    let sr = f64::from(SAMPLE_RATE);
    let mut groups: BTreeMap<(String, String, String, String), Vec<f64>> = BTreeMap::new();
    for c in &calls {
        let key = (
            c["soundscape"].clone(),
            c["source"].clone(),
            c["source_start_s"].clone(),
            c["code"].clone(),
        );
        let (start, end): (f64, f64) = (c["start_s"].parse().unwrap(), c["end_s"].parse().unwrap());
        let g = groups.entry(key).or_default();
        g.push(start);
        g.push(end - start);
    }
    let mut detected: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut soundscapes: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    for ((soundscape, source, source_start, code), starts_and_lengths) in &groups {
        let x = soundscapes
            .entry(soundscape.clone())
            .or_insert_with(|| decode32k(&out.join(format!("soundscapes/{soundscape}.ogg"))));
        assert_eq!(x.len(), 60 * SAMPLE_RATE as usize);
        let src = decode32k(&root.join("train_audio").join(source));
        let s0 = (source_start.parse::<f64>().unwrap() * sr).round() as usize;
        let len = (starts_and_lengths[1] * sr).round() as usize;
        let mut placed: Vec<f64> = starts_and_lengths.iter().step_by(2).copied().collect();
        placed.sort_by(f64::total_cmp);
        let mut found: Vec<(f64, f64)> = best_matches(x, &src[s0..s0 + len], placed.len())
            .into_iter()
            .map(|(k, r)| (k as f64 / sr, r))
            .collect();
        found.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (p, (f, r)) in placed.iter().zip(&found) {
            assert!(
                (f - p).abs() < 0.01,
                "{code} from {source}: placed at {p:.3} s, found at {f:.3} s (r = {r:.2})"
            );
            let window_end = ((f / 5.0).floor() as usize + 1) * 5;
            detected
                .entry(format!("{soundscape}_{window_end}"))
                .or_default()
                .insert(code.clone());
        }
    }
    let solution = read_csv(&out.join("solution.csv"));
    assert_eq!(solution.len(), 24);
    for row in &solution {
        let labelled: BTreeSet<String> = row
            .iter()
            .filter(|(k, v)| *k != "row_id" && *v == "1")
            .map(|(k, _)| k.clone())
            .collect();
        let found = detected.get(&row["row_id"]).cloned().unwrap_or_default();
        assert_eq!(labelled, found, "window {}", row["row_id"]);
    }
    let header: Vec<String> = csv::Reader::from_path(out.join("solution.csv"))
        .unwrap()
        .headers()
        .unwrap()
        .iter()
        .map(String::from)
        .collect();
    let codes: Vec<String> = taxonomy
        .species()
        .iter()
        .map(|s| s.primary_label.clone())
        .collect();
    assert_eq!(header[0], "row_id");
    assert_eq!(header[1..], codes[..], "columns follow the taxonomy order");

    // The Raven tables hold the same calls.
    let raven: usize = report
        .soundscapes
        .iter()
        .map(|s| {
            let stem = Path::new(s)
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let t = std::fs::read_to_string(
                out.join(format!("selections/{stem}.Table.1.selections.txt")),
            )
            .unwrap();
            assert!(t.starts_with("Selection\tView\tChannel\tBegin Time (s)"));
            t.lines().count() - 1
        })
        .sum();
    assert_eq!(raven, calls.len());

    // Same seed, same bytes.
    let again = tmp.path().join("again");
    mix::mix(&set, &backgrounds, &opts, &again).unwrap();
    for name in ["solution.csv", "calls.csv", "windows.csv", "mix.json"] {
        assert_eq!(
            std::fs::read(out.join(name)).unwrap(),
            std::fs::read(again.join(name)).unwrap(),
            "{name}"
        );
    }
    for s in &report.soundscapes {
        assert_eq!(
            std::fs::read(out.join(s)).unwrap(),
            std::fs::read(again.join(s)).unwrap()
        );
    }
}

#[test]
fn an_empty_pool_is_a_clear_error() {
    let opts = MixOptions {
        minutes: 1,
        valid_fraction: 0.0,
        ..MixOptions::default()
    };
    let set = mix::load_calls(&demo().join("birdclef"), &opts).unwrap();
    assert!(set.calls.is_empty());
    let backgrounds = mix::load_backgrounds(&demo().join("backgrounds")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let e = mix::mix(&set, &backgrounds, &opts, tmp.path()).unwrap_err();
    assert!(e.to_string().contains("no calls"), "{e}");
    assert!(!tmp.path().join("solution.csv").exists());
}

#[test]
fn calls_follow_a_given_split_table() {
    let root = demo().join("birdclef");
    let taxonomy = Taxonomy::from_csv(&root.join("taxonomy.csv")).unwrap();
    let (records, _) = read_train_csv(&root.join("train.csv")).unwrap();
    // A table with half the recordings held out, unlike the default 20 %.
    let table = silencio_data::split_table(&records, &taxonomy, 0.5, 0.7, 3);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("splits.csv");
    std::fs::write(&path, &table).unwrap();
    let held_out: BTreeSet<String> = csv::Reader::from_path(&path)
        .unwrap()
        .records()
        .map(|r| r.unwrap())
        .filter(|r| &r[3] == "valid")
        .map(|r| r[0].to_string())
        .collect();
    let opts = MixOptions {
        split_table: Some(path.clone()),
        ..MixOptions::default()
    };
    let set = mix::load_calls(&root, &opts).unwrap();
    let sources: BTreeSet<String> = set.calls.iter().map(|c| c.source.clone()).collect();
    assert!(!sources.is_empty());
    assert!(sources.is_subset(&held_out), "{sources:?}");
    assert_eq!(sources.len() + set.skipped.len(), held_out.len());
    // A table with a bad split value is a typed error, not a silent fallback.
    std::fs::write(&path, table.replacen(",valid,", ",maybe,", 1)).unwrap();
    let e = mix::load_calls(&root, &opts).unwrap_err();
    assert!(matches!(e, silencio_data::Error::Csv { .. }), "{e}");
}

#[test]
fn calls_can_come_from_a_list_inside_a_root() {
    let demo_root = demo().join("birdclef");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::copy(demo_root.join("taxonomy.csv"), root.join("taxonomy.csv")).unwrap();
    std::os::unix::fs::symlink(demo_root.join("train_audio"), root.join("train_audio")).unwrap();
    // A list of two zebra finch recordings, all lent (pool `all`).
    let csv = std::fs::read_to_string(demo_root.join("train.csv")).unwrap();
    let mut lines = csv.lines();
    let mut list = format!("{}\n", lines.next().unwrap());
    for l in lines.filter(|l| l.starts_with("zebrafinch,")).take(2) {
        list.push_str(l);
        list.push('\n');
    }
    std::fs::write(root.join("calls.csv"), list).unwrap();
    let opts = MixOptions {
        pool: CallPool::All,
        ..MixOptions::default()
    };
    let set = mix::load_calls(&root.join("calls.csv"), &opts).unwrap();
    assert_eq!(set.calls.len() + set.skipped.len(), 2);
    assert!(set.calls.iter().all(|c| c.code == "zebrafinch"));
}

#[test]
fn folds_lend_calls_from_their_own_held_out_recordings_only() {
    let root = demo().join("birdclef");
    let taxonomy = Taxonomy::from_csv(&root.join("taxonomy.csv")).unwrap();
    let (records, _) = read_train_csv(&root.join("train.csv")).unwrap();
    let usable = usable_records(&records, &taxonomy);
    let folds = 3;
    let mut lent: Vec<BTreeSet<String>> = Vec::new();
    for fold in 0..folds {
        let cv = CvFold { fold, folds };
        let opts = MixOptions {
            cv: Some(cv),
            ..MixOptions::default()
        };
        let set = mix::load_calls(&root, &opts).unwrap();
        let held_out: BTreeSet<&str> = usable
            .iter()
            .zip(holdout_split(
                &usable,
                &taxonomy,
                Holdout::Fold(cv),
                opts.split_seed,
            ))
            .filter(|(_, s)| *s == Split::Valid)
            .map(|(r, _)| r.filename.as_str())
            .collect();
        assert!(!set.calls.is_empty(), "fold {fold} lends no call");
        let sources: BTreeSet<String> = set.calls.iter().map(|c| c.source.clone()).collect();
        for s in &sources {
            assert!(
                held_out.contains(s.as_str()),
                "fold {fold}: {s} is not held out"
            );
        }
        lent.push(sources);
    }
    // The folds' calls come from disjoint recordings.
    for a in 0..folds {
        for b in a + 1..folds {
            assert!(
                lent[a].is_disjoint(&lent[b]),
                "folds {a} and {b} share a recording"
            );
        }
    }
    let bad = MixOptions {
        cv: Some(CvFold { fold: 3, folds }),
        ..MixOptions::default()
    };
    assert!(mix::load_calls(&root, &bad).is_err());
}
