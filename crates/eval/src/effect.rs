//! How large an effect an evaluation can see: a paired cluster bootstrap of the macro ROC-AUC
//! difference between two models scored on the same windows, the spread of a metric over
//! training seeds, the smallest effect both noises together let through, and a verdict.
//!
//! **Paired cluster bootstrap.** Windows of one recording (a mixed soundscape, a held-out
//! clip) are not independent: they share a background, a bird, a microphone. Resampling windows
//! one by one would understate the noise, so whole clusters are drawn with replacement
//! (`n_clusters` draws, each bringing every row of its cluster, repeated rows counted again) and
//! the macro ROC-AUC of both models is recomputed on the same resample with
//! [`metrics::macro_roc_auc`](crate::metrics::macro_roc_auc) (the competition metric: species
//! without a positive, or without a negative, in that resample are skipped, for both models
//! alike). The draws come from [`SplitMix64`] seeded by the caller, cluster `k` of draw `j` of
//! resample `b` being the `(b·n_clusters + j)`-th [`SplitMix64::below`] value, so a run is
//! reproducible and a reference script can read the same indices. A resample on which no
//! species is scorable is skipped and counted. Reported: the point Δ = AUC(B) − AUC(A) on all
//! rows, the mean Δ over resamples, the standard error (sample standard deviation of the
//! resampled Δ, `ddof = 1`, as `numpy.std(..., ddof=1)`), and the 95 % percentile interval
//! (2.5th and 97.5th percentiles with numpy's default linear interpolation).
//!
//! **Seed spread.** Training twice with different seeds gives two different models; their
//! metric differs even on the same test set. [`seed_spread`] is the sample standard deviation
//! of one configuration's metric over its seeds (`ddof = 1`, so at least two seeds).
//!
//! **Minimum detectable effect** ([`min_detectable_effect`]): with a two-sided test at
//! α = 0.05 and 80 % power,
//!
//! ```text
//! MDE = (z₀.₉₇₅ + z₀.₈) · √( SE_boot² + 2·σ_seed² / n )
//! ```
//!
//! where `SE_boot` is the bootstrap standard error of the paired Δ (test-set sampling noise),
//! `σ_seed` the seed standard deviation of one configuration's metric (training noise) and `n`
//! the seeds per arm: the mean of `n` seeds has variance `σ²/n`, the difference of two such
//! means (baseline and technique) `2σ²/n`. Both sources are needed: a large test set shrinks
//! `SE_boot` but not the training noise, and many seeds shrink `σ²/n` but not the test set's
//! sampling noise. `z₀.₉₇₅ + z₀.₈ ≈ 1.960 + 0.842 = 2.802`: an effect of this size is found
//! significant four times in five.
//!
//! **Cross-validation** ([`stratified_bootstrap`], [`compare_folds`]). A small pool holds out
//! few recordings per split; running every fold of a K-fold split (each fold's models trained
//! without its recordings) scores every recording once. The effect is the mean of the folds' Δ;
//! the bootstrap draws clusters within each fold; the seed term becomes `2σ²/(n·K)`, each fold
//! being trained apart. With three folds or more, the folds' own Δ give a second estimate of the
//! noise of their mean, `sd(Δ_k)/√K`, which holds every source at once (also dependence the
//! bootstrap cannot see, such as one held-out call mixed into several soundscapes); the MDE
//! takes the larger of the two.
//!
//! **Verdict** ([`verdict`]): a measured Δ is [`Verdict::Detected`] only when |Δ| is at least the
//! MDE *and* the bootstrap interval excludes 0; anything else is [`Verdict::InsideNoise`], to be
//! said plainly as "no effect this pool can see", never as "B is better".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use silencio_common::SplitMix64;

use crate::error::{Error, Result};
use crate::matrix::{Labels, Scores};
use crate::metrics;

/// z₀.₉₇₅: the two-sided 5 % critical value of the standard normal.
pub const Z_975: f64 = 1.959_963_984_540_054;
/// z₀.₈: the standard normal quantile that gives 80 % power.
pub const Z_80: f64 = 0.841_621_233_572_914_3;

/// Cluster index of each row, clusters numbered in order of first appearance, and their count.
///
/// `ids` are any labels of the unit that moves together (a soundscape stem, a source
/// recording); rows with equal ids share a cluster.
pub fn cluster_index<S: AsRef<str>>(ids: &[S]) -> (Vec<usize>, usize) {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    let index = ids
        .iter()
        .map(|id| {
            let n = seen.len();
            *seen.entry(id.as_ref()).or_insert(n)
        })
        .collect();
    (index, seen.len())
}

/// The cluster draws of `n_resamples` bootstrap resamples of `n_clusters` clusters: resample
/// `b` is `n_clusters` values in `0..n_clusters`, drawn with [`SplitMix64::below`] from one
/// generator seeded with `seed`, resample after resample.
pub fn resample_plan(n_clusters: usize, n_resamples: usize, seed: u64) -> Vec<Vec<usize>> {
    stratified_plan(&[n_clusters], n_resamples, seed)
        .into_iter()
        .map(|mut strata| strata.swap_remove(0))
        .collect()
}

/// The cluster draws of a stratified bootstrap (one stratum per cross-validation fold):
/// resample `b` is, stratum after stratum, `sizes[k]` values in `0..sizes[k]`, all drawn from
/// one [`SplitMix64`] seeded with `seed`. With one stratum this is [`resample_plan`].
pub fn stratified_plan(sizes: &[usize], n_resamples: usize, seed: u64) -> Vec<Vec<Vec<usize>>> {
    let mut rng = SplitMix64::new(seed);
    (0..n_resamples)
        .map(|_| {
            sizes
                .iter()
                .map(|&n| (0..n).map(|_| rng.below(n)).collect())
                .collect()
        })
        .collect()
}

/// Settings of [`paired_bootstrap`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapOptions {
    /// Number of resamples (at least 2; 1000 is usual).
    pub n_resamples: usize,
    /// Seed of the cluster draws.
    pub seed: u64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            n_resamples: 1000,
            seed: 0,
        }
    }
}

/// What a paired bootstrap found. Δ is always B − A: positive when B scores higher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedBootstrap {
    /// Rows (windows) scored.
    pub n_rows: usize,
    /// Clusters (recordings) they belong to.
    pub n_clusters: usize,
    /// Macro ROC-AUC of A on all rows.
    pub auc_a: f64,
    /// Macro ROC-AUC of B on all rows.
    pub auc_b: f64,
    /// `auc_b − auc_a` on all rows: the measured effect.
    pub delta: f64,
    /// Mean Δ over the resamples used.
    pub mean_delta: f64,
    /// Standard error of Δ: the sample standard deviation (`ddof = 1`) of the resampled Δ.
    pub se: f64,
    /// 2.5th percentile of the resampled Δ (numpy's linear interpolation).
    pub ci_low: f64,
    /// 97.5th percentile of the resampled Δ.
    pub ci_high: f64,
    /// Resamples requested.
    pub n_resamples: usize,
    /// Resamples skipped because no species had both a positive and a negative in them.
    pub n_skipped: usize,
    /// The seed of the draws.
    pub seed: u64,
}

/// The `q`-th percentile (`0 ≤ q ≤ 100`) of `sorted` (ascending, non-empty) with numpy's
/// default "linear" method: position `q/100 · (n − 1)`, interpolated between its neighbours.
pub fn percentile(sorted: &[f64], q: f64) -> Result<f64> {
    if sorted.is_empty() {
        return Err(Error::Empty("percentile of no values".into()));
    }
    if !(0.0..=100.0).contains(&q) {
        return Err(Error::InvalidArgument(format!(
            "percentile {q} is outside 0..=100"
        )));
    }
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    Ok(sorted[lo] + (sorted[hi] - sorted[lo]) * frac)
}

/// Sample standard deviation (`ddof = 1`); needs at least two values.
pub fn sample_sd(values: &[f64]) -> Result<f64> {
    if values.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "a standard deviation needs at least 2 values, got {}",
            values.len()
        )));
    }
    if let Some(v) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!("value {v} is not finite")));
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    Ok((ss / (n - 1.0)).sqrt())
}

/// Paired cluster bootstrap of the macro ROC-AUC difference B − A (see the module docs).
///
/// `labels`, `scores_a` and `scores_b` have the same shape (rows × species, the same rows and
/// columns in the same order); `clusters[r]` is the cluster of row `r` (as [`cluster_index`]
/// numbers them: every value below the number of distinct clusters, each used).
pub fn paired_bootstrap(
    labels: &Labels,
    scores_a: &Scores,
    scores_b: &Scores,
    clusters: &[usize],
    opts: &BootstrapOptions,
) -> Result<PairedBootstrap> {
    let stratum = Stratum::new(labels, scores_a, scores_b, clusters)?;
    Ok(bootstrap_strata(&[stratum], opts)?.0)
}

/// One cross-validation fold's own figures in a [`stratified_bootstrap`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FoldDelta {
    /// Rows (windows) of the fold.
    pub n_rows: usize,
    /// Their clusters.
    pub n_clusters: usize,
    /// Macro ROC-AUC of the fold's A.
    pub auc_a: f64,
    /// Macro ROC-AUC of the fold's B.
    pub auc_b: f64,
    /// `auc_b − auc_a`.
    pub delta: f64,
    /// Species with a positive and a negative among the fold's rows.
    pub n_species_scored: usize,
}

/// Paired cluster bootstrap over cross-validation folds: each fold has its own models A and B
/// scored on its own held-out windows. The effect is the mean over folds of each fold's
/// Δ = AUC(B) − AUC(A) (`auc_a`, `auc_b`: the means of the folds' AUCs; `n_rows`, `n_clusters`:
/// totals); each resample draws clusters within every fold ([`stratified_plan`]), so a fold
/// keeps its size, and its Δ is that mean on the draws. A resample on which some fold has no
/// scorable species is skipped. With one fold this is [`paired_bootstrap`].
pub fn stratified_bootstrap(
    folds: &[Paired],
    opts: &BootstrapOptions,
) -> Result<(PairedBootstrap, Vec<FoldDelta>)> {
    if folds.is_empty() {
        return Err(Error::Empty("no folds to compare".into()));
    }
    let strata = folds
        .iter()
        .map(|p| Stratum::new(&p.labels, &p.a, &p.b, &p.clusters))
        .collect::<Result<Vec<_>>>()?;
    bootstrap_strata(&strata, opts)
}

/// One stratum's rows, checked, with the rows of each cluster.
struct Stratum<'a> {
    labels: &'a Labels,
    a: &'a Scores,
    b: &'a Scores,
    members: Vec<Vec<usize>>,
}

impl<'a> Stratum<'a> {
    fn new(labels: &'a Labels, a: &'a Scores, b: &'a Scores, clusters: &[usize]) -> Result<Self> {
        let n_rows = labels.n_rows();
        for (what, m) in [("scores of A", a), ("scores of B", b)] {
            if m.n_rows() != n_rows || m.n_cols() != labels.n_cols() {
                return Err(Error::ShapeMismatch {
                    what: what.into(),
                    expected: format!("{n_rows} × {} (as the labels)", labels.n_cols()),
                    got: format!("{} × {}", m.n_rows(), m.n_cols()),
                });
            }
        }
        if clusters.len() != n_rows {
            return Err(Error::ShapeMismatch {
                what: "cluster ids".into(),
                expected: format!("{n_rows} (one per row)"),
                got: clusters.len().to_string(),
            });
        }
        if n_rows == 0 {
            return Err(Error::Empty("no rows to compare".into()));
        }
        let n_clusters = clusters.iter().max().map_or(0, |&m| m + 1);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); n_clusters];
        for (r, &c) in clusters.iter().enumerate() {
            members[c].push(r);
        }
        if let Some(c) = members.iter().position(Vec::is_empty) {
            return Err(Error::InvalidArgument(format!(
                "cluster {c} has no row: clusters must be numbered 0..{n_clusters} without gaps"
            )));
        }
        Ok(Self {
            labels,
            a,
            b,
            members,
        })
    }
}

fn bootstrap_strata(
    strata: &[Stratum<'_>],
    opts: &BootstrapOptions,
) -> Result<(PairedBootstrap, Vec<FoldDelta>)> {
    if opts.n_resamples < 2 {
        return Err(Error::InvalidArgument(format!(
            "a bootstrap needs at least 2 resamples, got {}",
            opts.n_resamples
        )));
    }
    let folds = strata
        .iter()
        .map(|s| {
            let auc_a = metrics::macro_roc_auc(s.a, s.labels)?;
            let auc_b = metrics::macro_roc_auc(s.b, s.labels)?;
            Ok(FoldDelta {
                n_rows: s.labels.n_rows(),
                n_clusters: s.members.len(),
                auc_a,
                auc_b,
                delta: auc_b - auc_a,
                n_species_scored: metrics::evaluate(s.a, s.labels)?.n_auc_scored,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let sizes: Vec<usize> = strata.iter().map(|s| s.members.len()).collect();
    let plan = stratified_plan(&sizes, opts.n_resamples, opts.seed);
    let mut deltas = Vec::with_capacity(plan.len());
    let mut rows = Vec::new();
    'resample: for draws in &plan {
        let mut sum = 0.0;
        for (s, draw) in strata.iter().zip(draws) {
            match draw_delta(s.labels, s.a, s.b, &s.members, draw, &mut rows)? {
                Some(d) => sum += d,
                None => continue 'resample,
            }
        }
        deltas.push(sum / strata.len() as f64);
    }
    let n_skipped = opts.n_resamples - deltas.len();
    if deltas.len() < 2 {
        return Err(Error::InvalidArgument(format!(
            "only {} of {} resamples had a scorable species: too few clusters with positives",
            deltas.len(),
            opts.n_resamples
        )));
    }
    let k = folds.len() as f64;
    let mean_of = |f: fn(&FoldDelta) -> f64| folds.iter().map(f).sum::<f64>() / k;
    let mean_delta = deltas.iter().sum::<f64>() / deltas.len() as f64;
    let se = sample_sd(&deltas)?;
    let mut sorted = deltas;
    sorted.sort_by(f64::total_cmp);
    let boot = PairedBootstrap {
        n_rows: folds.iter().map(|f| f.n_rows).sum(),
        n_clusters: folds.iter().map(|f| f.n_clusters).sum(),
        auc_a: mean_of(|f| f.auc_a),
        auc_b: mean_of(|f| f.auc_b),
        delta: mean_of(|f| f.delta),
        mean_delta,
        se,
        ci_low: percentile(&sorted, 2.5)?,
        ci_high: percentile(&sorted, 97.5)?,
        n_resamples: opts.n_resamples,
        n_skipped,
        seed: opts.seed,
    };
    Ok((boot, folds))
}

/// Δ on the rows of the clusters drawn (`rows` is scratch space); `None` when no species is
/// scorable on them.
fn draw_delta(
    labels: &Labels,
    scores_a: &Scores,
    scores_b: &Scores,
    members: &[Vec<usize>],
    draw: &[usize],
    rows: &mut Vec<usize>,
) -> Result<Option<f64>> {
    rows.clear();
    for &c in draw {
        let m = members.get(c).ok_or_else(|| {
            Error::InvalidArgument(format!("resample draws cluster {c} of {}", members.len()))
        })?;
        rows.extend_from_slice(m);
    }
    let y = labels.select_rows(rows)?;
    let a = metrics::macro_roc_auc(&scores_a.select_rows(rows)?, &y);
    let b = metrics::macro_roc_auc(&scores_b.select_rows(rows)?, &y);
    match (a, b) {
        (Ok(a), Ok(b)) => Ok(Some(b - a)),
        // Same labels, so both fail together: nothing to compare on this resample.
        (Err(Error::NoScoredColumns), _) | (_, Err(Error::NoScoredColumns)) => Ok(None),
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// Δ = AUC(B) − AUC(A) on each resample of `plan` (cluster draws), skipping resamples on
/// which no species is scorable.
pub fn resampled_deltas(
    labels: &Labels,
    scores_a: &Scores,
    scores_b: &Scores,
    members: &[Vec<usize>],
    plan: &[Vec<usize>],
) -> Result<Vec<f64>> {
    let mut rows = Vec::new();
    let mut deltas = Vec::with_capacity(plan.len());
    for draw in plan {
        if let Some(d) = draw_delta(labels, scores_a, scores_b, members, draw, &mut rows)? {
            deltas.push(d);
        }
    }
    Ok(deltas)
}

/// The spread of one configuration's metric over training seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedSpread {
    /// The per-seed values, as given.
    pub values: Vec<f64>,
    /// Their mean.
    pub mean: f64,
    /// Their sample standard deviation (`ddof = 1`).
    pub sd: f64,
}

/// Mean and sample standard deviation of per-seed metric values (at least two seeds).
pub fn seed_spread(values: &[f64]) -> Result<SeedSpread> {
    let sd = sample_sd(values)?;
    Ok(SeedSpread {
        values: values.to_vec(),
        mean: values.iter().sum::<f64>() / values.len() as f64,
        sd,
    })
}

/// The smallest Δ a comparison detects four times in five at two-sided α = 0.05:
/// `(z₀.₉₇₅ + z₀.₈) · √(se_bootstrap² + 2·sd_seeds²/n_seeds)` (see the module docs).
///
/// `se_bootstrap` is the test-set noise of the paired Δ, `sd_seeds` the seed standard deviation
/// of one arm's metric (0 when unknown: the MDE is then a lower bound), `n_seeds` the seeds each
/// arm is averaged over (≥ 1).
pub fn min_detectable_effect(se_bootstrap: f64, sd_seeds: f64, n_seeds: usize) -> Result<f64> {
    if !(se_bootstrap.is_finite() && se_bootstrap >= 0.0 && sd_seeds.is_finite() && sd_seeds >= 0.0)
    {
        return Err(Error::InvalidArgument(format!(
            "standard errors must be finite and ≥ 0 (bootstrap {se_bootstrap}, seeds {sd_seeds})"
        )));
    }
    if n_seeds == 0 {
        return Err(Error::InvalidArgument("n_seeds must be ≥ 1".into()));
    }
    let var = se_bootstrap * se_bootstrap + 2.0 * sd_seeds * sd_seeds / n_seeds as f64;
    Ok((Z_975 + Z_80) * var.sqrt())
}

/// Whether a measured effect stands out of the noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// |Δ| ≥ MDE and the 95 % interval excludes 0: the pool sees this effect.
    Detected,
    /// Smaller than the MDE, or an interval that contains 0: the pool cannot tell it from
    /// noise.
    InsideNoise,
}

impl Verdict {
    /// A plain sentence for people.
    pub fn sentence(self, delta: f64, mde: f64) -> String {
        match self {
            Verdict::Detected => format!(
                "detected: Δ = {delta:+.4} is at least the smallest detectable effect \
                 ({mde:.4}) and its 95 % interval excludes 0 ({} scores higher)",
                if delta > 0.0 { "B" } else { "A" }
            ),
            Verdict::InsideNoise => format!(
                "inside the noise: Δ = {delta:+.4} cannot be told from 0 by this evaluation \
                 (smallest detectable effect {mde:.4}); do not claim an improvement"
            ),
        }
    }
}

/// [`Verdict::Detected`] when `|delta| ≥ mde` and the interval `[ci_low, ci_high]` does not
/// contain 0; otherwise [`Verdict::InsideNoise`].
pub fn verdict(delta: f64, mde: f64, ci_low: f64, ci_high: f64) -> Verdict {
    let excludes_zero = ci_low > 0.0 || ci_high < 0.0;
    if delta.abs() >= mde && excludes_zero {
        Verdict::Detected
    } else {
        Verdict::InsideNoise
    }
}

/// Per-window scores of one model on one evaluation set, with the labels and the cluster
/// (recording) of every window: what [`compare`] needs from each model.
///
/// As JSON (`schema` = [`WindowScores::SCHEMA`]):
/// `{"schema", "species": [codes], "row_ids": [..], "clusters": [..], "labels": [[0/1 ..]],
/// "scores": [[..]]}`, one inner array per row, one value per species. A Kaggle submission CSV
/// with the set's `solution.csv` is read into the same shape by
/// [`WindowScores::from_submission`], the cluster of a row being its soundscape stem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowScores {
    /// Always [`WindowScores::SCHEMA`].
    pub schema: String,
    /// Species code of each column.
    pub species: Vec<String>,
    /// Row ids (a soundscape's `{stem}_{end_second}`, a clip's `{filename}#{window}`).
    pub row_ids: Vec<String>,
    /// The cluster of each row: the unit whose windows move together in the bootstrap (the
    /// soundscape, or the source recording of a clip).
    pub clusters: Vec<String>,
    /// `rows × species` ground truth (`> 0.5` is positive).
    pub labels: Vec<Vec<f32>>,
    /// `rows × species` scores.
    pub scores: Vec<Vec<f32>>,
}

impl WindowScores {
    /// The format tag written in every file.
    pub const SCHEMA: &'static str = "silencio.window_scores.v1";

    /// Checks the shapes: one row id, cluster, label row and score row per row, each row one
    /// value per species, no duplicate row id or species.
    pub fn check(&self) -> Result<()> {
        let n = self.row_ids.len();
        for (what, len) in [
            ("clusters", self.clusters.len()),
            ("labels", self.labels.len()),
            ("scores", self.scores.len()),
        ] {
            if len != n {
                return Err(Error::ShapeMismatch {
                    what: format!("window scores: {what}"),
                    expected: format!("{n} rows (one per row id)"),
                    got: len.to_string(),
                });
            }
        }
        for (what, names) in [("row id", &self.row_ids), ("species", &self.species)] {
            let mut seen = std::collections::BTreeSet::new();
            if let Some(d) = names.iter().find(|x| !seen.insert(x.as_str())) {
                return Err(Error::InvalidArgument(format!("duplicate {what} {d:?}")));
            }
        }
        Ok(())
    }

    /// Reads a window-scores JSON file.
    pub fn read_json(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let w: Self = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            path: path.into(),
            source,
        })?;
        if w.schema != Self::SCHEMA {
            return Err(Error::format(
                path,
                format!("schema {:?}, expected {:?}", w.schema, Self::SCHEMA),
            ));
        }
        w.check().map_err(|e| Error::format(path, e.to_string()))?;
        Ok(w)
    }

    /// Writes the file atomically (the trainer's evaluation can call this per test set).
    pub fn write_json(&self, path: &std::path::Path) -> Result<()> {
        self.check()?;
        let bytes = serde_json::to_vec(self).map_err(|source| Error::Json {
            path: path.into(),
            source,
        })?;
        silencio_common::fs::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
    }

    /// A submission scored against its solution: rows of the solution (every one must be in
    /// the submission), columns of the solution (every one must be in the submission), the
    /// cluster of a row its soundscape stem (`row_id` = `{stem}_{end_second}`).
    pub fn from_submission(
        submission: &crate::submission::Table,
        solution: &crate::submission::Table,
    ) -> Result<Self> {
        let col_of: BTreeMap<&str, usize> = submission
            .species
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let row_of: BTreeMap<&str, usize> = submission
            .row_ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let cols: Vec<usize> = solution
            .species
            .iter()
            .map(|s| {
                col_of.get(s.as_str()).copied().ok_or_else(|| {
                    Error::InvalidArgument(format!("the submission has no column {s:?}"))
                })
            })
            .collect::<Result<_>>()?;
        let mut out = Self {
            schema: Self::SCHEMA.into(),
            species: solution.species.clone(),
            row_ids: Vec::new(),
            clusters: Vec::new(),
            labels: Vec::new(),
            scores: Vec::new(),
        };
        for (r, id) in solution.row_ids.iter().enumerate() {
            let Some(&sr) = row_of.get(id.as_str()) else {
                return Err(Error::InvalidArgument(format!(
                    "the submission has no row {id:?}"
                )));
            };
            let stem = crate::soundscapes::parse_row_id(id)
                .map(|(stem, _)| stem.to_string())
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "row id {id:?} is not {{soundscape}}_{{end_second}}"
                    ))
                })?;
            let srow = submission.values.row(sr);
            out.row_ids.push(id.clone());
            out.clusters.push(stem);
            out.labels.push(solution.values.row(r).to_vec());
            out.scores.push(cols.iter().map(|&c| srow[c]).collect());
        }
        Ok(out)
    }

    /// Reads scores from `path`: a window-scores `.json`, or a submission `.csv` labelled by
    /// `solution` (required for a CSV).
    pub fn load(path: &std::path::Path, solution: Option<&std::path::Path>) -> Result<Self> {
        let is_csv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        if !is_csv {
            return Self::read_json(path);
        }
        let Some(sol) = solution else {
            return Err(Error::InvalidArgument(format!(
                "{} is a submission CSV: its labels come from the set's solution.csv \
                 (--solution)",
                path.display()
            )));
        };
        let sub = crate::submission::read_submission(path)?;
        let sol = crate::submission::read_solution(sol)?;
        Self::from_submission(&sub, &sol)
    }
}

/// Two models' scores on the same windows, aligned row by row and column by column.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    /// Species codes (A's column order).
    pub species: Vec<String>,
    /// Row ids (A's row order).
    pub row_ids: Vec<String>,
    /// Cluster index per row ([`cluster_index`] numbering).
    pub clusters: Vec<usize>,
    /// Number of clusters.
    pub n_clusters: usize,
    /// Labels (identical in both files).
    pub labels: Labels,
    /// A's scores.
    pub a: Scores,
    /// B's scores, in A's order.
    pub b: Scores,
}

/// Aligns B to A by row id and species code. Both must cover exactly the same rows and
/// species, with the same labels and clusters: a paired comparison on different windows, or
/// on differently labelled ones, would not be paired.
pub fn pair(a: &WindowScores, b: &WindowScores) -> Result<Paired> {
    a.check()?;
    b.check()?;
    let same_set = |x: &[String], y: &[String]| {
        let xs: std::collections::BTreeSet<&String> = x.iter().collect();
        let ys: std::collections::BTreeSet<&String> = y.iter().collect();
        xs == ys
    };
    if !same_set(&a.row_ids, &b.row_ids) {
        return Err(Error::InvalidArgument(format!(
            "A and B were scored on different windows ({} vs {} rows, not the same ids): \
             compare models on the same evaluation set",
            a.row_ids.len(),
            b.row_ids.len()
        )));
    }
    if !same_set(&a.species, &b.species) {
        return Err(Error::InvalidArgument(
            "A and B score different species".into(),
        ));
    }
    let b_row: BTreeMap<&str, usize> = b
        .row_ids
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let b_col: BTreeMap<&str, usize> = b
        .species
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    let cols: Vec<usize> = a.species.iter().map(|s| b_col[s.as_str()]).collect();
    let n_cols = a.species.len();
    let (mut y, mut sa, mut sb) = (Vec::new(), Vec::new(), Vec::new());
    for (r, id) in a.row_ids.iter().enumerate() {
        let br = b_row[id.as_str()];
        let (ya, yb) = (&a.labels[r], &b.labels[br]);
        if ya.len() != n_cols || a.scores[r].len() != n_cols {
            return Err(Error::ShapeMismatch {
                what: format!("A's row {id}"),
                expected: format!("{n_cols} values"),
                got: format!("{} labels, {} scores", ya.len(), a.scores[r].len()),
            });
        }
        if yb.len() != n_cols || b.scores[br].len() != n_cols {
            return Err(Error::ShapeMismatch {
                what: format!("B's row {id}"),
                expected: format!("{n_cols} values"),
                got: format!("{} labels, {} scores", yb.len(), b.scores[br].len()),
            });
        }
        if cols
            .iter()
            .enumerate()
            .any(|(c, &bc)| (ya[c] > 0.5) != (yb[bc] > 0.5))
        {
            return Err(Error::InvalidArgument(format!(
                "A and B disagree on the labels of row {id}: not the same evaluation set"
            )));
        }
        if a.clusters[r] != b.clusters[br] {
            return Err(Error::InvalidArgument(format!(
                "A and B put row {id} in different clusters ({:?} vs {:?})",
                a.clusters[r], b.clusters[br]
            )));
        }
        y.extend_from_slice(ya);
        sa.extend_from_slice(&a.scores[r]);
        sb.extend(cols.iter().map(|&bc| b.scores[br][bc]));
    }
    let n = a.row_ids.len();
    let (clusters, n_clusters) = cluster_index(&a.clusters);
    Ok(Paired {
        species: a.species.clone(),
        row_ids: a.row_ids.clone(),
        clusters,
        n_clusters,
        labels: crate::Matrix::new(n, n_cols, y)?,
        a: crate::Matrix::new(n, n_cols, sa)?,
        b: crate::Matrix::new(n, n_cols, sb)?,
    })
}

/// The macro ROC-AUC of one evaluation set in a report JSON: the trainer's `report.json`
/// (`{"valid": …, "mixed": …, "suites": {name: …}}`; `set` is `valid`, `mixed` or a suite
/// name) or `silencio eval`'s (one report, `overall` at the top; `set` is ignored).
pub fn report_macro_auc(path: &std::path::Path, set: &str) -> Result<f64> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })?;
    let report = if v.get("overall").is_some() {
        &v
    } else if let Some(r) = v.get(set).filter(|r| !r.is_null()) {
        r
    } else if let Some(r) = v.get("suites").and_then(|s| s.get(set)) {
        r
    } else {
        return Err(Error::format(
            path,
            format!("no evaluation set {set:?} (neither a run report's set nor a suite)"),
        ));
    };
    report
        .get("overall")
        .and_then(|o| o.get("macro_auc"))
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| Error::format(path, format!("set {set:?} has no overall.macro_auc")))
}

/// What [`compare`] measured, in full: written as `compare.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Species columns compared.
    pub n_species: usize,
    /// Species that entered the macro ROC-AUC on all rows.
    pub n_species_scored: usize,
    /// The paired bootstrap (Δ = B − A, its SE and 95 % interval; over several folds, the
    /// stratified one of [`stratified_bootstrap`]).
    pub bootstrap: PairedBootstrap,
    /// Cross-validation folds compared (1: one split).
    pub n_folds: usize,
    /// Each fold's own AUCs and Δ.
    pub folds: Vec<FoldDelta>,
    /// With 3 folds or more: the standard error of the mean Δ from the folds' own spread,
    /// `sd(Δ_k)/√K`. It holds every noise, including dependence the bootstrap cannot see;
    /// the MDE is the larger of `(z₀.₉₇₅ + z₀.₈)` times it and the bootstrap-and-seeds MDE.
    pub se_between_folds: Option<f64>,
    /// The seed spread used (absent when no per-seed values were given).
    pub seeds: Option<SeedSpread>,
    /// True when seed noise entered the MDE; false means the MDE counts only the test set's
    /// noise and is a lower bound.
    pub seed_noise_included: bool,
    /// Seeds per arm behind each fold's Δ (1 when A and B are single runs).
    pub n_seeds: usize,
    /// The smallest detectable effect for this comparison: the seed term counts
    /// `n_seeds · n_folds` independent trainings per arm, each fold being trained apart.
    pub mde: f64,
    /// The bootstrap-and-seeds MDE with 1, 3, 5 and 10 seeds per arm (and fold): what more
    /// seeds would buy.
    pub mde_by_seeds: Vec<(usize, f64)>,
    /// Detected or inside the noise.
    pub verdict: Verdict,
    /// The verdict in one sentence.
    pub sentence: String,
}

/// Settings of [`compare`].
#[derive(Debug, Clone, PartialEq)]
pub struct CompareOptions {
    /// The bootstrap.
    pub bootstrap: BootstrapOptions,
    /// Per-seed values of the metric (baseline, and possibly the other arm): their pooled
    /// spread is the training noise. Each inner list needs ≥ 2 values.
    pub seed_values: Vec<Vec<f64>>,
    /// Seeds per arm behind the compared Δ (≥ 1).
    pub n_seeds: usize,
}

/// The pooled seed spread of several arms' per-seed values: the root mean of their variances
/// (each arm `ddof = 1`); values are those of the first arm followed by the others.
pub fn pooled_seed_spread(arms: &[Vec<f64>]) -> Result<SeedSpread> {
    if arms.is_empty() {
        return Err(Error::Empty("no per-seed values".into()));
    }
    let spreads = arms
        .iter()
        .map(|a| seed_spread(a))
        .collect::<Result<Vec<_>>>()?;
    let var = spreads.iter().map(|s| s.sd * s.sd).sum::<f64>() / spreads.len() as f64;
    let values: Vec<f64> = arms.iter().flatten().copied().collect();
    Ok(SeedSpread {
        mean: values.iter().sum::<f64>() / values.len() as f64,
        values,
        sd: var.sqrt(),
    })
}

/// Bootstrap, seed spread, MDE and verdict for two models' scores on the same windows.
pub fn compare(p: &Paired, opts: &CompareOptions) -> Result<Comparison> {
    compare_folds(std::slice::from_ref(p), opts)
}

/// [`compare`] over cross-validation folds: fold `k`'s A and B were trained without its
/// held-out windows and scored on them. Δ is the mean of the folds' Δ, its noise the
/// [`stratified_bootstrap`]'s, and the training noise of a mean over `K` folds each trained
/// `n_seeds` times is `2σ²/(n_seeds·K)`: every fold's models are trained apart, so the folds
/// average the training noise as more seeds would (σ measured at one split, so that it holds
/// training noise only).
pub fn compare_folds(folds: &[Paired], opts: &CompareOptions) -> Result<Comparison> {
    let (bootstrap, fold_deltas) = stratified_bootstrap(folds, &opts.bootstrap)?;
    let n_species_scored = fold_deltas
        .iter()
        .map(|f| f.n_species_scored)
        .max()
        .unwrap_or(0);
    let k = fold_deltas.len();
    let seeds = if opts.seed_values.is_empty() {
        None
    } else {
        Some(pooled_seed_spread(&opts.seed_values)?)
    };
    let sd = seeds.as_ref().map_or(0.0, |s| s.sd);
    // The spread of the folds' own Δ holds every noise at once (test set, training, and the
    // dependence a cluster bootstrap cannot see, e.g. calls reused across soundscapes): when
    // it is larger than the model's, it is the one used.
    let se_between_folds = if k >= 3 {
        let d: Vec<f64> = fold_deltas.iter().map(|f| f.delta).collect();
        Some(sample_sd(&d)? / (k as f64).sqrt())
    } else {
        None
    };
    let mde = min_detectable_effect(bootstrap.se, sd, opts.n_seeds * k)?
        .max(se_between_folds.map_or(0.0, |se| (Z_975 + Z_80) * se));
    let mde_by_seeds = [1, 3, 5, 10]
        .into_iter()
        .map(|n| Ok((n, min_detectable_effect(bootstrap.se, sd, n * k)?)))
        .collect::<Result<Vec<_>>>()?;
    let v = verdict(bootstrap.delta, mde, bootstrap.ci_low, bootstrap.ci_high);
    Ok(Comparison {
        n_species: folds.iter().map(|p| p.species.len()).max().unwrap_or(0),
        n_species_scored,
        n_folds: k,
        folds: fold_deltas,
        se_between_folds,
        sentence: v.sentence(bootstrap.delta, mde),
        seed_noise_included: seeds.is_some(),
        seeds,
        n_seeds: opts.n_seeds,
        mde,
        mde_by_seeds,
        verdict: v,
        bootstrap,
    })
}

impl Comparison {
    /// Writes the comparison as pretty JSON, atomically.
    pub fn write_json(&self, path: &std::path::Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| Error::Json {
            path: path.into(),
            source,
        })?;
        silencio_common::fs::write_atomic(path, &bytes).map_err(|e| Error::io(path, e))
    }

    /// Terminal lines: the two scores, Δ with its interval, the MDE and the verdict.
    pub fn lines(&self) -> Vec<String> {
        let b = &self.bootstrap;
        let mut v = vec![
            format!(
                "windows: {} in {} clusters; species: {} ({} scored)",
                b.n_rows, b.n_clusters, self.n_species, self.n_species_scored
            ),
            format!(
                "macro ROC-AUC{}: A {:.4}, B {:.4}",
                if self.n_folds > 1 {
                    " (mean over folds)"
                } else {
                    ""
                },
                b.auc_a,
                b.auc_b
            ),
            format!(
                "Δ (B − A) = {:+.4}; bootstrap ({} resamples of clusters, seed {}, {} skipped): \
                 SE {:.4}, 95 % interval [{:+.4}, {:+.4}]",
                b.delta, b.n_resamples, b.seed, b.n_skipped, b.se, b.ci_low, b.ci_high
            ),
        ];
        if self.n_folds > 1 {
            v.push(format!(
                "{} folds, Δ per fold: {}{}",
                self.n_folds,
                self.folds
                    .iter()
                    .map(|f| format!("{:+.4}", f.delta))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.se_between_folds.map_or(String::new(), |se| format!(
                    "; SE from their spread {se:.4}"
                ))
            ));
        }
        match &self.seeds {
            Some(s) => v.push(format!(
                "seed spread: sd {:.4} over {} value(s) (mean {:.4})",
                s.sd,
                s.values.len(),
                s.mean
            )),
            None => v.push(
                "seed spread: not given (--seeds-a): the MDE counts the test set's noise only \
                 and is a lower bound"
                    .into(),
            ),
        }
        v.push(format!(
            "smallest detectable effect (α 0.05 two-sided, power 0.8, {} seed(s) per arm{}): \
             {:.4}; with {}",
            self.n_seeds,
            if self.n_folds > 1 { " and fold" } else { "" },
            self.mde,
            self.mde_by_seeds
                .iter()
                .map(|(n, m)| format!("{n} seeds {m:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        v.push(self.sentence.clone());
        v
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::matrix::Matrix;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn clusters_are_numbered_by_first_appearance() {
        let (idx, n) = cluster_index(&["s2", "s2", "s1", "s2", "s3", "s1"]);
        assert_eq!(idx, vec![0, 0, 1, 0, 2, 1]);
        assert_eq!(n, 3);
    }

    #[test]
    fn percentile_interpolates_as_numpy() {
        // numpy.percentile([1, 2, 3, 4], 2.5) = 1 + 0.075 * (2 - 1) = 1.075 (position 0.075);
        // 97.5 -> position 2.925 -> 3 + 0.925 = 3.925; 50 -> 2.5.
        let v = [1.0, 2.0, 3.0, 4.0];
        assert!(close(percentile(&v, 2.5).unwrap(), 1.075));
        assert!(close(percentile(&v, 97.5).unwrap(), 3.925));
        assert!(close(percentile(&v, 50.0).unwrap(), 2.5));
        assert!(close(percentile(&[7.0], 97.5).unwrap(), 7.0));
        assert!(percentile(&[], 50.0).is_err());
        assert!(percentile(&v, 101.0).is_err());
    }

    #[test]
    fn sample_sd_uses_n_minus_one() {
        // [0.80, 0.82, 0.84]: mean 0.82, squared deviations 0.0004 + 0 + 0.0004 = 0.0008,
        // / (3 - 1) = 0.0004, sqrt = 0.02.
        let s = seed_spread(&[0.80, 0.82, 0.84]).unwrap();
        assert!((s.sd - 0.02).abs() < 1e-12);
        assert!((s.mean - 0.82).abs() < 1e-12);
        assert!(seed_spread(&[0.8]).is_err());
        assert!(seed_spread(&[0.8, f64::NAN]).is_err());
    }

    #[test]
    fn mde_by_hand() {
        // se 0.01, sd 0.02, 2 seeds: variance 0.0001 + 2 * 0.0004 / 2 = 0.0005,
        // sqrt = 0.0223607, × 2.8015852 = 0.0626454.
        let m = min_detectable_effect(0.01, 0.02, 2).unwrap();
        assert!((m - 2.801_585_218_112_968_3 * 0.0005f64.sqrt()).abs() < 1e-12);
        assert!((m - 0.062_645_4).abs() < 1e-6);
        // Without seed noise it is 2.8016 × the bootstrap SE.
        assert!(close(
            min_detectable_effect(0.01, 0.0, 1).unwrap(),
            0.028_015_852_181_129_68
        ));
        assert!(min_detectable_effect(0.01, 0.02, 0).is_err());
        assert!(min_detectable_effect(-0.01, 0.0, 1).is_err());
    }

    #[test]
    fn verdict_needs_size_and_an_interval_off_zero() {
        assert_eq!(verdict(0.03, 0.02, 0.01, 0.05), Verdict::Detected);
        assert_eq!(verdict(-0.03, 0.02, -0.05, -0.01), Verdict::Detected);
        // Big enough but the interval holds 0.
        assert_eq!(verdict(0.03, 0.02, -0.001, 0.06), Verdict::InsideNoise);
        // Interval off 0 but smaller than the MDE.
        assert_eq!(verdict(0.01, 0.02, 0.002, 0.02), Verdict::InsideNoise);
        assert!(
            Verdict::InsideNoise
                .sentence(0.01, 0.02)
                .contains("inside the noise")
        );
    }

    #[test]
    fn plan_is_seeded_and_in_range() {
        let p = resample_plan(5, 3, 42);
        assert_eq!(p, resample_plan(5, 3, 42));
        assert_ne!(p, resample_plan(5, 3, 43));
        assert!(p.iter().all(|d| d.len() == 5 && d.iter().all(|&c| c < 5)));
        // The draws are SplitMix64::below in sequence.
        let mut rng = SplitMix64::new(42);
        assert_eq!(p[0][0], rng.below(5));
        assert_eq!(p[0][1], rng.below(5));
    }

    #[test]
    fn identical_models_give_zero_everywhere() {
        let y = Matrix::from_rows(&[vec![1.0], vec![0.0], vec![1.0], vec![0.0]]).unwrap();
        let s = Matrix::from_rows(&[vec![0.9], vec![0.2], vec![0.4], vec![0.6]]).unwrap();
        let b = paired_bootstrap(
            &y,
            &s,
            &s,
            &[0, 0, 1, 1],
            &BootstrapOptions {
                n_resamples: 50,
                seed: 1,
            },
        )
        .unwrap();
        assert_eq!((b.delta, b.se, b.ci_low, b.ci_high), (0.0, 0.0, 0.0, 0.0));
        // AUC by hand: positives 0.9, 0.4; negatives 0.2, 0.6: pairs (0.9>0.2, 0.9>0.6,
        // 0.4>0.2, 0.4<0.6) = 3/4.
        assert!(close(b.auc_a, 0.75));
        assert_eq!(b.n_clusters, 2);
    }

    #[test]
    fn bootstrap_by_hand_on_two_clusters() {
        // Cluster 0: rows (y=1, a=0.9, b=0.9), (y=0, a=0.2, b=0.2): both models perfect there.
        // Cluster 1: rows (y=1, a=0.1, b=0.8), (y=0, a=0.3, b=0.3): A wrong, B right.
        // Resample {0,0}: AUC 1 vs 1, Δ 0. {1,1}: A 0 (0.1 < 0.3), B 1: Δ 1.
        // {0,1} or {1,0}: A: positives 0.9, 0.1 vs negatives 0.2, 0.3 -> pairs 0.9>0.2, 0.9>0.3,
        // 0.1<0.2, 0.1<0.3 = 2/4 = 0.5; B = 1: Δ 0.5.
        let y = Matrix::from_rows(&[vec![1.0], vec![0.0], vec![1.0], vec![0.0]]).unwrap();
        let a = Matrix::from_rows(&[vec![0.9], vec![0.2], vec![0.1], vec![0.3]]).unwrap();
        let b = Matrix::from_rows(&[vec![0.9], vec![0.2], vec![0.8], vec![0.3]]).unwrap();
        let members = vec![vec![0, 1], vec![2, 3]];
        let plan = vec![vec![0, 0], vec![1, 1], vec![0, 1], vec![1, 0]];
        let d = resampled_deltas(&y, &a, &b, &members, &plan).unwrap();
        assert_eq!(d, vec![0.0, 1.0, 0.5, 0.5]);
        // Full data is the {0,1} case.
        let r = paired_bootstrap(&y, &a, &b, &[0, 0, 1, 1], &BootstrapOptions::default()).unwrap();
        assert!(close(r.delta, 0.5));
        assert!(r.ci_low >= 0.0 && r.ci_high <= 1.0);
    }

    #[test]
    fn resamples_without_a_scorable_species_are_skipped() {
        // Cluster 1 has no positive: a resample of it alone scores nothing.
        let y = Matrix::from_rows(&[vec![1.0], vec![0.0], vec![0.0]]).unwrap();
        let a = Matrix::from_rows(&[vec![0.9], vec![0.2], vec![0.3]]).unwrap();
        let members = vec![vec![0, 1], vec![2]];
        let plan = vec![vec![1, 1], vec![0, 1]];
        let d = resampled_deltas(&y, &a, &a, &members, &plan).unwrap();
        assert_eq!(d, vec![0.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let y = Matrix::from_rows(&[vec![1.0], vec![0.0]]).unwrap();
        let s = Matrix::from_rows(&[vec![0.9], vec![0.2]]).unwrap();
        let o = BootstrapOptions::default();
        assert!(paired_bootstrap(&y, &s, &s, &[0], &o).is_err());
        assert!(paired_bootstrap(&y, &s, &s, &[0, 2], &o).is_err());
        let short = Matrix::from_rows(&[vec![0.9]]).unwrap();
        assert!(paired_bootstrap(&y, &s, &short, &[0, 0], &o).is_err());
        let one = BootstrapOptions {
            n_resamples: 1,
            seed: 0,
        };
        assert!(paired_bootstrap(&y, &s, &s, &[0, 1], &one).is_err());
    }
}
