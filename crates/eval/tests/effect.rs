//! The paired cluster bootstrap against numpy 2.4.6 / scikit-learn 1.9.1 on the cases in
//! `reference/effect_cases.json`, written by `reference/effect_reference.py` (`--check`
//! regenerates and compares). The resample draws are part of the fixture: the test first checks
//! that our SplitMix64 plan equals them, so both sides bootstrap exactly the same rows. Then the
//! window-scores files and their pairing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::Deserialize;
use silencio_eval::effect::{
    self, BootstrapOptions, CompareOptions, Verdict, WindowScores, compare, pair,
};
use silencio_eval::matrix::Matrix;

/// Sums of a few hundred AUC differences: far below any effect of interest.
const TOL: f64 = 1e-9;

#[derive(Deserialize)]
struct Fixture {
    score_scale: f32,
    cases: Vec<Case>,
    stratified: Vec<Stratified>,
}

#[derive(Deserialize)]
struct Fold {
    rows: usize,
    cols: usize,
    clusters: Vec<usize>,
    y: String,
    a: Vec<u32>,
    b: Vec<u32>,
    auc_a: f64,
    auc_b: f64,
}

#[derive(Deserialize)]
struct Stratified {
    name: String,
    folds: Vec<Fold>,
    plan_seed: u64,
    n_resamples: usize,
    plan: Vec<Vec<Vec<usize>>>,
    auc_a: f64,
    auc_b: f64,
    delta: f64,
    n_skipped: usize,
    mean: f64,
    se: f64,
    ci_low: f64,
    ci_high: f64,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    rows: usize,
    cols: usize,
    n_clusters: usize,
    clusters: Vec<usize>,
    y: String,
    a: Vec<u32>,
    b: Vec<u32>,
    plan_seed: u64,
    n_resamples: usize,
    plan: Vec<Vec<usize>>,
    deltas: Vec<Option<f64>>,
    auc_a: f64,
    auc_b: f64,
    delta: f64,
    n_skipped: usize,
    mean: f64,
    se: f64,
    ci_low: f64,
    ci_high: f64,
}

fn load() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/effect_cases.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("read fixture"))
        .expect("parse fixture")
}

fn scores(v: &[u32], rows: usize, cols: usize, scale: f32) -> Matrix {
    Matrix::new(rows, cols, v.iter().map(|&x| x as f32 / scale).collect()).unwrap()
}

/// The reference's labels string (`0`/`1` per cell, row-major) as a matrix.
fn labels_of(y: &str, rows: usize, cols: usize) -> Matrix {
    Matrix::new(
        rows,
        cols,
        y.bytes()
            .map(|b| if b == b'1' { 1.0 } else { 0.0 })
            .collect(),
    )
    .unwrap()
}

/// One reference case's rows as a pairing (species and rows named by position).
fn paired(
    rows: usize,
    cols: usize,
    clusters: &[usize],
    y: &str,
    a: &[u32],
    b: &[u32],
    scale: f32,
) -> effect::Paired {
    effect::Paired {
        species: (0..cols).map(|j| format!("s{j}")).collect(),
        row_ids: (0..rows).map(|r| format!("r{r}")).collect(),
        clusters: clusters.to_vec(),
        n_clusters: clusters.iter().max().unwrap() + 1,
        labels: labels_of(y, rows, cols),
        a: scores(a, rows, cols, scale),
        b: scores(b, rows, cols, scale),
    }
}

/// The bootstrap's summary against numpy's: `want` is auc_a, auc_b, delta, mean, se, ci_low,
/// ci_high.
fn assert_summary(name: &str, r: &effect::PairedBootstrap, want: [f64; 7]) {
    let ours = [
        r.auc_a,
        r.auc_b,
        r.delta,
        r.mean_delta,
        r.se,
        r.ci_low,
        r.ci_high,
    ];
    let what = ["auc_a", "auc_b", "delta", "mean", "se", "ci_low", "ci_high"];
    for ((what, x), y) in what.iter().zip(ours).zip(want) {
        assert!((x - y).abs() < TOL, "{name} {what}: ours {x}, numpy {y}");
    }
}

#[test]
fn bootstrap_matches_numpy_and_sklearn() {
    let f = load();
    assert_eq!(f.cases.len(), 3);
    for c in &f.cases {
        // The same draws on both sides.
        let plan = effect::resample_plan(c.n_clusters, c.n_resamples, c.plan_seed);
        assert_eq!(plan, c.plan, "{}: SplitMix64 plan differs", c.name);

        let labels = labels_of(&c.y, c.rows, c.cols);
        let (a, b) = (
            scores(&c.a, c.rows, c.cols, f.score_scale),
            scores(&c.b, c.rows, c.cols, f.score_scale),
        );
        let mut members = vec![Vec::new(); c.n_clusters];
        for (r, &k) in c.clusters.iter().enumerate() {
            members[k].push(r);
        }
        let ours = effect::resampled_deltas(&labels, &a, &b, &members, &plan).unwrap();
        let theirs: Vec<f64> = c.deltas.iter().flatten().copied().collect();
        assert_eq!(ours.len(), theirs.len(), "{}: skipped resamples", c.name);
        for (i, (x, y)) in ours.iter().zip(&theirs).enumerate() {
            assert!((x - y).abs() < TOL, "{} resample {i}: {x} vs {y}", c.name);
        }

        let r = effect::paired_bootstrap(
            &labels,
            &a,
            &b,
            &c.clusters,
            &BootstrapOptions {
                n_resamples: c.n_resamples,
                seed: c.plan_seed,
            },
        )
        .unwrap();
        assert_eq!(r.n_skipped, c.n_skipped, "{}", c.name);
        assert_eq!(r.n_clusters, c.n_clusters);
        assert_summary(
            &c.name,
            &r,
            [c.auc_a, c.auc_b, c.delta, c.mean, c.se, c.ci_low, c.ci_high],
        );
    }
    // The sparse case must exercise skipping, or it proves nothing about it.
    assert!(f.cases.iter().any(|c| c.n_skipped > 0));
}

#[test]
fn stratified_bootstrap_matches_numpy_and_sklearn() {
    let f = load();
    assert_eq!(f.stratified.len(), 2);
    for c in &f.stratified {
        let sizes: Vec<usize> = c
            .folds
            .iter()
            .map(|k| k.clusters.iter().max().unwrap() + 1)
            .collect();
        assert_eq!(
            effect::stratified_plan(&sizes, c.n_resamples, c.plan_seed),
            c.plan,
            "{}: plan differs",
            c.name
        );
        let folds: Vec<effect::Paired> = c
            .folds
            .iter()
            .map(|k| paired(k.rows, k.cols, &k.clusters, &k.y, &k.a, &k.b, f.score_scale))
            .collect();
        let (r, per_fold) = effect::stratified_bootstrap(
            &folds,
            &BootstrapOptions {
                n_resamples: c.n_resamples,
                seed: c.plan_seed,
            },
        )
        .unwrap();
        assert_eq!(r.n_skipped, c.n_skipped, "{}", c.name);
        for (k, (ours, theirs)) in per_fold.iter().zip(&c.folds).enumerate() {
            assert!(
                (ours.auc_a - theirs.auc_a).abs() < TOL,
                "{} fold {k}",
                c.name
            );
            assert!(
                (ours.auc_b - theirs.auc_b).abs() < TOL,
                "{} fold {k}",
                c.name
            );
        }
        assert_summary(
            &c.name,
            &r,
            [c.auc_a, c.auc_b, c.delta, c.mean, c.se, c.ci_low, c.ci_high],
        );
        // More folds at the same seed spread lower the smallest detectable effect.
        let opts = CompareOptions {
            bootstrap: BootstrapOptions {
                n_resamples: c.n_resamples,
                seed: c.plan_seed,
            },
            seed_values: vec![vec![0.80, 0.82, 0.84]],
            n_seeds: 1,
        };
        let all = effect::compare_folds(&folds, &opts).unwrap();
        assert_eq!(all.n_folds, folds.len());
        let model = effect::min_detectable_effect(r.se, 0.02, folds.len()).unwrap();
        // With 3 folds or more, the spread of the folds' own Δ (numpy's) may set the MDE.
        let d: Vec<f64> = c.folds.iter().map(|k| k.auc_b - k.auc_a).collect();
        let k = d.len() as f64;
        let expect = if d.len() >= 3 {
            let m = d.iter().sum::<f64>() / k;
            let sd = (d.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (k - 1.0)).sqrt();
            let between = sd / k.sqrt();
            assert!((all.se_between_folds.unwrap() - between).abs() < 1e-12);
            model.max((effect::Z_975 + effect::Z_80) * between)
        } else {
            assert_eq!(all.se_between_folds, None);
            model
        };
        assert!(
            (all.mde - expect).abs() < 1e-12,
            "{}: mde {} vs {expect}",
            c.name,
            all.mde
        );
        assert!(all.lines().iter().any(|l| l.contains("Δ per fold")));
    }
    assert!(f.stratified.iter().any(|c| c.n_skipped > 0));
}

#[test]
fn one_fold_is_the_plain_comparison() {
    let f = load();
    let c = &f.cases[0];
    let folds = [paired(
        c.rows,
        c.cols,
        &c.clusters,
        &c.y,
        &c.a,
        &c.b,
        f.score_scale,
    )];
    let opts = CompareOptions {
        bootstrap: BootstrapOptions {
            n_resamples: c.n_resamples,
            seed: c.plan_seed,
        },
        seed_values: vec![],
        n_seeds: 1,
    };
    let one = effect::compare_folds(&folds, &opts).unwrap();
    let plain = compare(&folds[0], &opts).unwrap();
    assert_eq!(one, plain);
    assert!((one.bootstrap.se - c.se).abs() < TOL);
    assert_eq!(one.n_folds, 1);
}

fn window_scores(order: &[usize], species: &[&str], scores: &[[f32; 2]]) -> WindowScores {
    // Four windows of two soundscapes; species x is present in windows 0 and 2.
    let ids = ["S1_5", "S1_10", "S2_5", "S2_10"];
    let labels = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]];
    WindowScores {
        schema: WindowScores::SCHEMA.into(),
        species: species.iter().map(|s| s.to_string()).collect(),
        row_ids: order.iter().map(|&i| ids[i].to_string()).collect(),
        clusters: order.iter().map(|&i| ids[i][..2].to_string()).collect(),
        labels: order
            .iter()
            .map(|&i| {
                let l = labels[i];
                if species[0] == "x" {
                    l.to_vec()
                } else {
                    vec![l[1], l[0]]
                }
            })
            .collect(),
        scores: order.iter().map(|&i| scores[i].to_vec()).collect(),
    }
}

#[test]
fn files_round_trip_and_pair_by_row_and_species() {
    let dir = tempfile::tempdir().unwrap();
    let a = window_scores(
        &[0, 1, 2, 3],
        &["x", "y"],
        &[[0.9, 0.1], [0.2, 0.8], [0.7, 0.6], [0.1, 0.3]],
    );
    // B lists rows in another order and species swapped: pairing must undo both.
    let b = window_scores(
        &[3, 2, 1, 0],
        &["y", "x"],
        &[[0.8, 0.9], [0.9, 0.1], [0.7, 0.6], [0.2, 0.3]],
    );
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    a.write_json(&pa).unwrap();
    b.write_json(&pb).unwrap();
    let (a, b) = (
        WindowScores::load(&pa, None).unwrap(),
        WindowScores::load(&pb, None).unwrap(),
    );
    let p = pair(&a, &b).unwrap();
    assert_eq!(p.species, ["x", "y"]);
    assert_eq!(p.clusters, [0, 0, 1, 1]);
    // Window S1_10: B gave [0.9, 0.1] in its own species order (y, x), i.e. x 0.1, y 0.9.
    assert_eq!(p.b.row(1), &[0.1, 0.9]);
    assert_eq!(p.a.row(1), &[0.2, 0.8]);
    assert_eq!(p.labels.row(2), &[1.0, 1.0]);

    let c = compare(
        &p,
        &CompareOptions {
            bootstrap: BootstrapOptions {
                n_resamples: 100,
                seed: 5,
            },
            seed_values: vec![vec![0.80, 0.82, 0.84]],
            n_seeds: 1,
        },
    )
    .unwrap();
    // Seed sd 0.02 (see the unit test): MDE ≥ 2.8016 · sqrt(2) · 0.02 = 0.0792 with one seed.
    assert!(c.mde >= 2.801_585 * 2f64.sqrt() * 0.02 - 1e-9);
    assert!(c.seed_noise_included);
    assert_eq!(c.mde_by_seeds.len(), 4);
    assert!(c.lines().iter().any(|l| l.contains("Δ (B − A)")));
}

#[test]
fn pairing_refuses_different_sets() {
    let a = window_scores(&[0, 1, 2, 3], &["x", "y"], &[[0.5, 0.5]; 4]);
    let fewer = window_scores(&[0, 1, 2], &["x", "y"], &[[0.5, 0.5]; 4]);
    assert!(pair(&a, &fewer).is_err());
    let mut relabelled = a.clone();
    relabelled.labels[0] = vec![0.0, 0.0];
    assert!(pair(&a, &relabelled).is_err());
    let mut reclustered = a.clone();
    reclustered.clusters[0] = "S9".into();
    assert!(pair(&a, &reclustered).is_err());
    let mut bad = a.clone();
    bad.schema = "other".into();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.json");
    std::fs::write(&p, serde_json::to_vec(&bad).unwrap()).unwrap();
    assert!(WindowScores::load(&p, None).is_err());
}

#[test]
fn submissions_are_labelled_by_their_solution_and_clustered_by_soundscape() {
    let dir = tempfile::tempdir().unwrap();
    let sol = dir.path().join("solution.csv");
    let sub = dir.path().join("a.csv");
    std::fs::write(
        &sol,
        "row_id,x,y\nS1_5,1,0\nS1_10,0,1\nS2_5,1,1\nS2_10,0,0\n",
    )
    .unwrap();
    // Columns in another order and one extra species the solution does not score.
    std::fs::write(
        &sub,
        "row_id,y,z,x\nS2_10,0.3,0,0.1\nS1_5,0.1,0,0.9\nS1_10,0.8,0,0.2\nS2_5,0.6,0,0.7\n",
    )
    .unwrap();
    let w = WindowScores::load(&sub, Some(&sol)).unwrap();
    assert_eq!(w.species, ["x", "y"]);
    assert_eq!(w.row_ids, ["S1_5", "S1_10", "S2_5", "S2_10"]);
    assert_eq!(w.clusters, ["S1", "S1", "S2", "S2"]);
    assert_eq!(w.scores[0], [0.9, 0.1]);
    assert_eq!(w.labels[2], [1.0, 1.0]);
    // A CSV without its solution is refused with a reason.
    let e = WindowScores::load(&sub, None).unwrap_err().to_string();
    assert!(e.contains("--solution"), "{e}");
}

#[test]
fn run_reports_give_their_macro_auc() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("report.json");
    std::fs::write(
        &run,
        r#"{"valid":{"overall":{"macro_auc":0.9}},"mixed":{"overall":{"macro_auc":0.7}},
            "suites":{"weak":{"overall":{"macro_auc":0.6}}}}"#,
    )
    .unwrap();
    assert_eq!(effect::report_macro_auc(&run, "mixed").unwrap(), 0.7);
    assert_eq!(effect::report_macro_auc(&run, "valid").unwrap(), 0.9);
    assert_eq!(effect::report_macro_auc(&run, "weak").unwrap(), 0.6);
    assert!(effect::report_macro_auc(&run, "overlap").is_err());
    let single = dir.path().join("eval.json");
    std::fs::write(&single, r#"{"overall":{"macro_auc":0.55}}"#).unwrap();
    assert_eq!(effect::report_macro_auc(&single, "mixed").unwrap(), 0.55);
}

#[test]
fn a_clear_effect_is_detected_and_a_null_one_is_not() {
    // 40 soundscapes of 12 windows, 3 species; A scores at random-ish order, B ranks every
    // positive above every negative: Δ is large and the interval far from 0.
    let (n_s, w, m) = (40usize, 12usize, 3usize);
    let mut y = Vec::new();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut clusters = Vec::new();
    for s in 0..n_s {
        for i in 0..w {
            for j in 0..m {
                let pos = (s + i + j) % 4 == 0;
                y.push(if pos { 1.0 } else { 0.0 });
                // A: a fixed pseudo-random score unrelated to the label.
                a.push(((s * 31 + i * 7 + j * 13) % 97) as f32 / 97.0);
                b.push(if pos { 0.9 } else { 0.1 });
            }
            clusters.push(s);
        }
    }
    let n = n_s * w;
    let labels = Matrix::new(n, m, y).unwrap();
    let (a, b) = (Matrix::new(n, m, a).unwrap(), Matrix::new(n, m, b).unwrap());
    let o = BootstrapOptions {
        n_resamples: 200,
        seed: 1,
    };
    let r = effect::paired_bootstrap(&labels, &a, &b, &clusters, &o).unwrap();
    let mde = effect::min_detectable_effect(r.se, 0.0, 1).unwrap();
    assert!(r.delta > 0.3, "{r:?}");
    assert_eq!(
        effect::verdict(r.delta, mde, r.ci_low, r.ci_high),
        Verdict::Detected
    );
    // The same model against itself: nothing to see.
    let r = effect::paired_bootstrap(&labels, &a, &a, &clusters, &o).unwrap();
    assert_eq!(
        effect::verdict(r.delta, 0.0, r.ci_low, r.ci_high),
        Verdict::InsideNoise
    );
}
