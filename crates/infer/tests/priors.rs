//! Site/hour priors and temporal smoothing travel in the bundle (`priors.json`) and apply
//! through the facade: a soundscape named `H02_20230420_074000.ogg` gets exactly the bundle's
//! raw scores shifted by the hand-computed prior and smoothed by the hand-computed kernels.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use silencio_infer::{
    ModelBundle, ModelSpec, OpenOptions, PostProcess, RecordingContext, Scorer, SitePriors,
    TemporalSmoothing, open,
};

mod common;
use common::{demo, device, small_config, spec};

/// Class groups: birds smooth lightly, the insect and the frog widely.
const CLASSES: [&str; 4] = ["Aves", "Insecta", "Amphibia", "Aves"];

fn ctx(recorder: &str, hour: u8) -> RecordingContext {
    RecordingContext {
        recorder: Some(recorder.into()),
        hour: Some(hour),
    }
}

/// Twelve windows (one file) at H02, 07 h, and twelve at S01, 13 h. Global means
/// [0.4, 0.2, 0.1, 0.1]. With k = 12, H02's shrunk means are (12·m + 12·p̄)/24:
/// [0.5, 0.2, 0.075, 0.1], and hour 7 holds the same windows, so at strength 0.5 the logit
/// shift is 0.5·2·ln(p̂/p̄) = [ln 1.25, 0, ln 0.75, 0]: the odds of class 0 grow by 1.25 and
/// those of class 2 shrink by 0.75.
fn post_process() -> PostProcess {
    let h02 = [0.6f32, 0.2, 0.05, 0.1];
    let s01 = [0.2f32, 0.2, 0.15, 0.1];
    let rows = (0..12)
        .map(|_| (ctx("H02", 7), h02))
        .chain((0..12).map(|_| (ctx("S01", 13), s01)));
    let codes = (0..4).map(|i| format!("sp{i}")).collect();
    let priors = SitePriors::learn(codes, rows)
        .unwrap()
        .with_shrinkage(12.0)
        .unwrap();
    PostProcess {
        priors: Some(priors),
        smoothing: Some(TemporalSmoothing {
            continuous: vec![0.25, 0.5, 0.25],
            calls: vec![0.1, 0.8, 0.1],
        }),
        strength: 0.5,
    }
}

/// The same random model written twice: without and with `priors.json`.
fn bundles(root: &Path) -> (PathBuf, PathBuf) {
    let model = small_config(4).init(&device()).unwrap();
    let mut s = spec(4);
    for (sp, class) in s.species.iter_mut().zip(CLASSES) {
        sp.class_name = class.into();
    }
    let (plain, post) = (root.join("plain"), root.join("post"));
    ModelBundle::write(&plain, s.clone(), &model).unwrap();
    s.post_process = Some(post_process());
    ModelBundle::write(&post, s, &model).unwrap();
    (plain, post)
}

fn scorer(models: &[&Path], root: &Path) -> Scorer {
    let names: Vec<String> = models.iter().map(|p| p.display().to_string()).collect();
    let spec = ModelSpec::from_cli(&names, &[], None, None, &root.join("registry")).unwrap();
    open(&spec, &device(), &OpenOptions::default()).unwrap()
}

/// The demo soundscape copied under `name`.
fn soundscape_named(dir: &Path, name: &str) -> PathBuf {
    let src = demo().join("train_soundscapes/DEMO1_20240101_060000.ogg");
    let dst = dir.join(name);
    std::fs::copy(src, &dst).unwrap();
    dst
}

/// By hand: odds of class c times `factor[c]`, then per class the kernel of its group over
/// neighbouring windows, renormalised at the edges.
fn by_hand(raw: &[Vec<f32>], factor: [f64; 4]) -> Vec<Vec<f64>> {
    let shifted: Vec<Vec<f64>> = raw
        .iter()
        .map(|w| {
            w.iter()
                .zip(factor)
                .map(|(p, f)| {
                    let odds = f * f64::from(*p) / (1.0 - f64::from(*p));
                    odds / (1.0 + odds)
                })
                .collect()
        })
        .collect();
    let n = shifted.len();
    (0..n)
        .map(|i| {
            (0..4)
                .map(|c| {
                    let (side, centre) = if CLASSES[c] == "Aves" {
                        (0.1, 0.8)
                    } else {
                        (0.25, 0.5)
                    };
                    let mut num = centre * shifted[i][c];
                    let mut den = centre;
                    if i > 0 {
                        num += side * shifted[i - 1][c];
                        den += side;
                    }
                    if i + 1 < n {
                        num += side * shifted[i + 1][c];
                        den += side;
                    }
                    num / den
                })
                .collect()
        })
        .collect()
}

fn assert_close(got: &silencio_infer::Identification, want: &[Vec<f64>]) {
    assert_eq!(got.windows.len(), want.len());
    for (w, e) in got.windows.iter().zip(want) {
        for (a, b) in w.scores.iter().zip(e) {
            assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
        }
    }
}

#[test]
fn a_soundscape_gets_its_site_and_hour_prior_then_smoothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, post) = bundles(tmp.path());
    let h02 = soundscape_named(tmp.path(), "H02_20230420_074000.ogg");
    let raw_scorer = scorer(&[&plain], tmp.path());
    assert!(raw_scorer.post_process().is_none());
    let raw: Vec<Vec<f32>> = raw_scorer
        .identify_path(&h02)
        .unwrap()
        .windows
        .into_iter()
        .map(|w| w.scores)
        .collect();
    assert_eq!(raw.len(), 12);

    let s = scorer(&[&post], tmp.path());
    assert_eq!(s.post_process(), Some(&post_process()));
    let want = by_hand(&raw, [1.25, 1.0, 0.75, 1.0]);
    assert_close(&s.identify_path(&h02).unwrap(), &want);
    // The same bytes with the context given explicitly.
    let bytes = std::fs::read(&h02).unwrap();
    assert_close(
        &s.identify_in(bytes.clone(), &ctx("H02", 7)).unwrap(),
        &want,
    );

    // No context (bytes only), or a recorder and an hour the priors never saw: smoothing only.
    let smoothed = by_hand(&raw, [1.0; 4]);
    assert_close(&s.identify(bytes).unwrap(), &smoothed);
    let elsewhere = soundscape_named(tmp.path(), "X99_20230420_220000.ogg");
    assert_close(&s.identify_path(&elsewhere).unwrap(), &smoothed);

    // An unknown recorder at a known hour: the hour term alone. Hour 13's shrunk means are
    // [0.3, 0.2, 0.125, 0.1]: odds factors (0.3/0.4)^0.5 and (0.125/0.1)^0.5.
    let at_13 = soundscape_named(tmp.path(), "X99_20230420_130000.ogg");
    let want_13 = by_hand(&raw, [0.75f64.sqrt(), 1.0, 1.25f64.sqrt(), 1.0]);
    assert_close(&s.identify_path(&at_13).unwrap(), &want_13);
}

#[test]
fn an_ensemble_applies_its_first_members_post_processing() {
    let tmp = tempfile::tempdir().unwrap();
    let (plain, post) = bundles(tmp.path());
    assert_eq!(
        scorer(&[&post, &plain], tmp.path()).post_process(),
        Some(&post_process())
    );
    assert!(
        scorer(&[&plain, &post], tmp.path())
            .post_process()
            .is_none()
    );
}

#[test]
fn tampered_or_mismatched_priors_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, post) = bundles(tmp.path());
    let file = post.join(silencio_infer::PRIORS_FILE);
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replacen("0.5", "5.0", 1)).unwrap();
    let e = ModelBundle::open(&post).unwrap_err();
    assert!(e.to_string().contains("priors file"), "{e}");
    let e = open(
        &ModelSpec::Bundle(post.clone()),
        &device(),
        &OpenOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), "bundle");

    // Priors over other classes never make it into a bundle.
    let model = small_config(4).init(&device()).unwrap();
    let mut s = spec(4);
    s.species[0].code = "other".into();
    s.post_process = Some(post_process());
    let e = ModelBundle::write(tmp.path().join("mismatch"), s, &model).unwrap_err();
    assert_eq!(e.kind(), "priors");
    assert!(!tmp.path().join("mismatch").exists());
}
