//! Parity with scikit-learn 1.9.1 (`roc_auc_score`, `average_precision_score`, macro and per
//! class) on the cases in `reference/sklearn_cases.json`, written by
//! `reference/make_reference.py` (see its docstring for the encoding; `--check` regenerates and
//! compares).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde::Deserialize;
use silencio_eval::matrix::Matrix;
use silencio_eval::metrics;

const TOL: f64 = 1e-6;

#[derive(Deserialize)]
struct Fixture {
    sklearn: String,
    score_scale: f32,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    id: usize,
    kind: String,
    rows: usize,
    cols: usize,
    y: String,
    s: Vec<u32>,
    auc: Vec<Option<f64>>,
    ap: Vec<Option<f64>>,
    macro_auc: Option<f64>,
    macro_ap: Option<f64>,
    pn_ties: u64,
}

fn load() -> Fixture {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/reference/sklearn_cases.json"
    );
    let text = std::fs::read_to_string(path).expect("read fixture");
    serde_json::from_str(&text).expect("parse fixture")
}

fn matrices(c: &Case, scale: f32) -> (Matrix, Matrix) {
    let labels: Vec<f32> =
        c.y.bytes()
            .map(|b| if b == b'1' { 1.0 } else { 0.0 })
            .collect();
    let scores: Vec<f32> = c.s.iter().map(|&v| v as f32 / scale).collect();
    (
        Matrix::new(c.rows, c.cols, scores).unwrap(),
        Matrix::new(c.rows, c.cols, labels).unwrap(),
    )
}

/// Tracks the largest |rust − sklearn| and where it happened.
#[derive(Default)]
struct Worst {
    diff: f64,
    at: String,
    compared: usize,
}

impl Worst {
    fn check(&mut self, what: &str, id: usize, ours: Option<f64>, theirs: Option<f64>) {
        match (ours, theirs) {
            (Some(a), Some(b)) => {
                let d = (a - b).abs();
                assert!(
                    d <= TOL,
                    "case {id} {what}: ours {a} vs sklearn {b} (|Δ| {d:e})"
                );
                if d > self.diff || self.at.is_empty() {
                    self.diff = d;
                    self.at = format!("case {id} {what}");
                }
                self.compared += 1;
            }
            (a, b) => assert_eq!(a, b, "case {id} {what}: defined on one side only"),
        }
    }
}

#[test]
fn matches_sklearn_on_every_case() {
    let fx = load();
    assert!(
        fx.cases.len() >= 2000,
        "fixture has {} cases",
        fx.cases.len()
    );
    let mut worst = Worst::default();
    for c in &fx.cases {
        let (scores, labels) = matrices(c, fx.score_scale);
        let m = metrics::evaluate(&scores, &labels).unwrap();
        worst.check("macro ROC-AUC", c.id, m.macro_auc, c.macro_auc);
        worst.check("macro AP", c.id, m.macro_ap, c.macro_ap);
        for (j, pc) in m.per_class.iter().enumerate() {
            worst.check(&format!("ROC-AUC col {j}"), c.id, pc.auc, c.auc[j]);
            worst.check(&format!("AP col {j}"), c.id, pc.ap, c.ap[j]);
        }
    }
    println!(
        "scikit-learn {}: {} values compared over {} cases, worst |Δ| = {:e} at {}",
        fx.sklearn,
        worst.compared,
        fx.cases.len(),
        worst.diff,
        worst.at
    );
}

#[test]
fn fixture_exercises_ties_and_degenerate_columns() {
    let fx = load();
    let tie_cases = fx.cases.iter().filter(|c| c.pn_ties > 0).count();
    let no_positive = fx
        .cases
        .iter()
        .filter(|c| c.ap.iter().any(Option::is_none))
        .count();
    let all_positive = fx
        .cases
        .iter()
        .filter(|c| {
            c.ap.iter()
                .zip(&c.auc)
                .any(|(ap, auc)| ap.is_some() && auc.is_none())
        })
        .count();
    let unscorable = fx.cases.iter().filter(|c| c.macro_auc.is_none()).count();
    let large = fx.cases.iter().filter(|c| c.kind == "large").count();
    println!(
        "{tie_cases} cases with tied (positive, negative) pairs, {no_positive} with a column \
         without positives, {all_positive} with an all-positive column, {unscorable} unscorable, \
         {large} large"
    );
    assert!(tie_cases >= 1000, "only {tie_cases} tie-heavy cases");
    assert!(no_positive >= 200 && all_positive >= 100 && unscorable >= 10 && large >= 10);
}

/// ROC-AUC with a strict rule: a tie counts as a loss. It must disagree with scikit-learn on
/// the tie-heavy cases, or the fixture could not tell a wrong tie rule from the right one.
fn strict_auc(labels: &[f32], scores: &[f32]) -> Option<f64> {
    let (mut wins, mut pairs) = (0u64, 0u64);
    for (i, &li) in labels.iter().enumerate() {
        for (j, &lj) in labels.iter().enumerate() {
            if li > 0.5 && lj <= 0.5 {
                pairs += 1;
                wins += u64::from(scores[i] > scores[j]);
            }
        }
    }
    (pairs > 0).then(|| wins as f64 / pairs as f64)
}

#[test]
fn a_wrong_tie_rule_fails_the_fixture() {
    let fx = load();
    let mut failing = 0;
    for c in fx
        .cases
        .iter()
        .filter(|c| c.pn_ties > 0 && c.kind != "large")
    {
        let (scores, labels) = matrices(c, fx.score_scale);
        let any_off = (0..c.cols).any(|j| {
            match (strict_auc(&labels.column(j), &scores.column(j)), c.auc[j]) {
                (Some(a), Some(b)) => (a - b).abs() > TOL,
                _ => false,
            }
        });
        failing += usize::from(any_off);
    }
    println!("a tie-as-loss ROC-AUC is off by more than {TOL:e} in {failing} cases");
    assert!(
        failing >= 1000,
        "only {failing} cases catch a wrong tie rule"
    );
}
