//! The model facade: specs open into scorers whose answers are what their members say, pooled
//! and blended as documented — one bundle unchanged, ensembles with mixed recipes, sample rates
//! and window lengths, rank blending, licences, and `no_birdnet` where BirdNET is absent.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use silencio_audio::FeatureConfig;
use silencio_infer::ensemble::{MemberInput, rank};
use silencio_infer::{Classifier, Licence, LicenceStatus, ModelSpec, OpenOptions, open};

mod common;
use common::{demo, device, soundscape, write_bundle_with};

fn registry(dir: &Path) -> std::path::PathBuf {
    dir.join("registry")
}

/// A recipe unlike `birdclef`'s: 22.05 kHz, 64 mels, 3 s windows every 3 s (BirdNET-like).
fn odd_recipe() -> FeatureConfig {
    let mut f = FeatureConfig::recipe("panns").unwrap();
    f.sample_rate = 22_050;
    f.f_max = 11_000.0;
    f.window.length_s = 3.0;
    f.window.hop_s = 3.0;
    f
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-5
}

#[test]
fn one_bundle_opens_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a");
    write_bundle_with(
        &dir,
        "a",
        4,
        FeatureConfig::recipe("birdclef").unwrap(),
        vec![Licence::new("Apache-2.0", "weights")],
    );
    let spec = ModelSpec::parse(dir.to_str().unwrap(), &registry(tmp.path())).unwrap();
    let s = open(&spec, &device(), &OpenOptions::default()).unwrap();
    assert!(s.classifier().is_some());
    let want = Classifier::load(&dir, &device())
        .unwrap()
        .identify(soundscape())
        .unwrap();
    let got = s.identify(soundscape()).unwrap();
    assert_eq!(got.model_version, "a@1");
    assert_eq!(got.windows, want.windows);
    assert_eq!(s.licences(), [Licence::new("Apache-2.0", "weights")]);
    assert_eq!(s.untrained(), ["a@1".to_string()]);
}

#[test]
fn an_ensemble_of_mixed_recipes_pools_and_blends_its_members() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    let birdclef = FeatureConfig::recipe("birdclef").unwrap();
    write_bundle_with(
        &a,
        "a",
        4,
        birdclef.clone(),
        vec![Licence::new("MIT", "data")],
    );
    write_bundle_with(&b, "b", 4, odd_recipe(), vec![Licence::birdnet("teacher")]);
    write_bundle_with(&c, "c", 4, birdclef, vec![Licence::new("MIT", "data")]);
    let file = tmp.path().join("ens.toml");
    std::fs::write(
        &file,
        "name = \"abc\"\n[[members]]\nmodel = \"a\"\nweight = 2\n[[members]]\nmodel = \"b\"\n\
         [[members]]\nmodel = \"c\"\nweight = 0.5\n",
    )
    .unwrap();
    let spec = ModelSpec::parse(file.to_str().unwrap(), &registry(tmp.path())).unwrap();
    let s = open(&spec, &device(), &OpenOptions::default()).unwrap();
    let ens = s.ensemble().unwrap();

    // Each recipe is computed once: a and c share one feature set, b has its own.
    let p = ens.prepare(soundscape()).unwrap();
    let feats = |i: usize| match &p.inputs[i] {
        MemberInput::Features(f) => f.clone(),
        MemberInput::Samples(_) => panic!("bundles read features"),
    };
    assert!(std::sync::Arc::ptr_eq(&feats(0), &feats(2)));
    assert!(!std::sync::Arc::ptr_eq(&feats(0), &feats(1)));
    assert_eq!(feats(1).windows[1].start_s, 3.0);

    // The answer: on the 5 s grid, each member's windows max-pooled where they overlap the
    // output window, then the weighted mean of the members' probabilities.
    let got = s.identify(soundscape()).unwrap();
    assert_eq!(got.model_version, "abc");
    let own = |d: &Path| {
        Classifier::load(d, &device())
            .unwrap()
            .identify(soundscape())
            .unwrap()
    };
    let (ia, ib, ic) = (own(&a), own(&b), own(&c));
    assert!(got.windows.len() >= 2);
    for w in &got.windows {
        let g_end = w.start_s + 5.0;
        let pooled = |id: &silencio_infer::Identification, k: usize| {
            id.windows
                .iter()
                .filter(|x| x.start_s < g_end && x.end_s > w.start_s)
                .map(|x| x.scores[k])
                .fold(f32::NEG_INFINITY, f32::max)
        };
        for k in 0..4 {
            let want = (2.0 * pooled(&ia, k) + pooled(&ib, k) + 0.5 * pooled(&ic, k)) / 3.5;
            assert!(close(w.scores[k], want), "{} vs {want}", w.scores[k]);
        }
    }
    // A 3 s member window straddling two output windows counts in both.
    assert!(
        ib.windows
            .iter()
            .any(|x| x.start_s == 3.0 && x.end_s == 6.0)
    );

    // Licences: the union, and the ensemble is non-commercial because one member is.
    assert_eq!(s.licences().len(), 2);
    assert_eq!(
        LicenceStatus::of(s.licences()),
        LicenceStatus::NonCommercial
    );
}

#[test]
fn rank_blending_averages_ranks_against_the_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    write_bundle_with(
        &a,
        "a",
        3,
        FeatureConfig::recipe("birdclef").unwrap(),
        vec![],
    );
    write_bundle_with(&b, "b", 3, odd_recipe(), vec![]);
    let reference = demo().join("train_soundscapes");
    let spec = ModelSpec::from_cli(
        &[a.display().to_string(), b.display().to_string()],
        &[3.0, 1.0],
        Some(silencio_infer::Blend::Rank),
        Some(&reference),
        &registry(tmp.path()),
    )
    .unwrap();
    let s = open(&spec, &device(), &OpenOptions::default()).unwrap();
    let got = s.identify(soundscape()).unwrap();

    // The same by hand: each member's pooled scores on the reference set, sorted per class,
    // give the rank of its pooled score on the clip.
    // One member as an ensemble of one: its scores pooled onto the 5 s grid.
    let pooled = |dir: &Path| {
        let spec = ModelSpec::from_cli(
            &[dir.display().to_string()],
            &[1.0],
            None,
            None,
            &registry(tmp.path()),
        )
        .unwrap();
        open(&spec, &device(), &OpenOptions::default()).unwrap()
    };
    let (probability, only_b) = (pooled(&a), pooled(&b));
    let refs = silencio_infer::scorer::reference_files(&reference).unwrap();
    let sorted = |sc: &silencio_infer::Scorer, k: usize| {
        let mut v: Vec<f32> = refs
            .iter()
            .flat_map(|f| sc.identify_path(f).unwrap().windows)
            .map(|w| w.scores[k])
            .collect();
        v.sort_by(f32::total_cmp);
        v
    };
    let (pa, pb) = (
        probability.identify(soundscape()).unwrap(),
        only_b.identify(soundscape()).unwrap(),
    );
    for k in 0..3 {
        let (qa, qb) = (sorted(&probability, k), sorted(&only_b, k));
        for (i, w) in got.windows.iter().enumerate() {
            let want = (3.0 * rank(&qa, pa.windows[i].scores[k])
                + rank(&qb, pb.windows[i].scores[k]))
                / 4.0;
            assert!(
                close(w.scores[k], want),
                "class {k} window {i}: {} vs {want}",
                w.scores[k]
            );
        }
    }
    // Ranks are spread over [0, 1], not probabilities.
    assert!(
        got.windows
            .iter()
            .flat_map(|w| &w.scores)
            .all(|x| (0.0..=1.0).contains(x))
    );
}

#[test]
fn birdnet_specs_fail_typed_without_birdnet() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    write_bundle_with(
        &a,
        "a",
        3,
        FeatureConfig::recipe("birdclef").unwrap(),
        vec![],
    );
    for models in [
        vec!["birdnet".to_string()],
        vec![a.display().to_string(), "birdnet".into()],
    ] {
        let spec = ModelSpec::from_cli(&models, &[], None, None, &registry(tmp.path())).unwrap();
        assert!(spec.needs_birdnet().unwrap());
        let e = open(&spec, &device(), &OpenOptions::default()).unwrap_err();
        assert_eq!(e.kind(), "no_birdnet", "{e}");
    }
}

#[test]
fn the_location_model_travels_in_the_bundle_and_through_ensembles() {
    use silencio_infer::location::{FilterMode, LocationQuery, Place};
    let tmp = tempfile::tempdir().unwrap();
    let codes = ["sp0", "sp1", "sp2"];
    let model = silencio_infer::OccurrenceModel::learn(
        [("sp0", 6.8, -74.3), ("sp1", 52.5, 13.4)],
        &codes,
        Default::default(),
    )
    .unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    common::write_bundle_located(&a, 3, model.clone());
    write_bundle_with(
        &b,
        "b",
        3,
        FeatureConfig::recipe("birdclef").unwrap(),
        vec![],
    );
    // A tampered location file is refused like tampered weights.
    let bad = tmp.path().join("bad");
    common::write_bundle_located(&bad, 3, model.clone());
    std::fs::write(bad.join("location.json"), b"{}").unwrap();
    let e = silencio_infer::ModelBundle::open(&bad).unwrap_err();
    assert!(e.to_string().contains("location file"), "{e}");

    let open_spec = |models: &[&Path]| {
        let names: Vec<String> = models.iter().map(|p| p.display().to_string()).collect();
        let spec = ModelSpec::from_cli(&names, &[], None, None, &registry(tmp.path())).unwrap();
        open(&spec, &device(), &OpenOptions::default()).unwrap()
    };
    let single = open_spec(&[&a]);
    let loc = single.location().unwrap();
    assert_eq!(
        loc.expected(&LocationQuery::from(Place::new(0.0, 1.0).unwrap()))
            .unknown,
        ["sp2"]
    );
    // An ensemble answers in its first member's classes, so that member's ranges apply.
    assert!(open_spec(&[&a, &b]).location().is_some());
    assert!(open_spec(&[&b, &a]).location().is_none());

    // Applied to a real identification: removed at one place, kept at the other.
    let mut at_home = single.identify(soundscape()).unwrap();
    let raw = at_home.clone();
    let home = LocationQuery::from(Place::new(6.72, -74.26).unwrap());
    let out = loc
        .apply_identification(&mut at_home, &home, FilterMode::default())
        .unwrap();
    assert_eq!(out.removed, ["sp1"]);
    for (w, r) in at_home.windows.iter().zip(&raw.windows) {
        assert_eq!(w.scores[1], 0.0);
        assert_eq!((w.scores[0], w.scores[2]), (r.scores[0], r.scores[2]));
    }
    let mut in_berlin = raw.clone();
    let berlin = LocationQuery::from(Place::new(52.52, 13.40).unwrap());
    let out = loc
        .apply_identification(&mut in_berlin, &berlin, FilterMode::default())
        .unwrap();
    assert_eq!(out.removed, ["sp0"]);
    assert_eq!(in_berlin.windows[0].scores[1], raw.windows[0].scores[1]);
}
