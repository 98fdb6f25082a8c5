#!/usr/bin/env python3
"""Writes effect_cases.json: a paired cluster bootstrap of the macro ROC-AUC difference computed
with numpy and scikit-learn, for crates/eval/tests/effect.rs.

    python effect_reference.py            # (re)write the fixture next to this script
    python effect_reference.py --check    # regenerate in memory, compare with the committed file

Per case (labels Y, scores A and B, n rows x m species, a cluster id per row):
  plan       the resample draws: resample b is n_clusters cluster indices drawn with
             replacement. They come from SplitMix64 (Vigna's splitmix64.c) seeded with
             `plan_seed`, each draw `next_u64() % n_clusters`, resample after resample: the same
             generator as silencio_common::SplitMix64::below, so the Rust test checks that its
             own plan equals this one and then bootstraps with exactly these indices.
  deltas     for each resample: rows = the rows of each drawn cluster, in draw order (repeats
             kept); macro ROC-AUC of B minus that of A with roc_auc_score(average="macro") over
             the species having a positive and a negative in the resample (the BirdCLEF rule);
             null when no species qualifies (the resample is skipped).
  auc_a/b    macro ROC-AUC on all rows; delta = auc_b - auc_a.
  mean, se   numpy mean and std(ddof=1) of the non-null deltas.
  ci_low/hi  numpy.percentile(deltas, [2.5, 97.5]) (default linear interpolation).

Stratified cases (cross-validation: each fold its own models A and B on its own held-out
windows) add, per fold, the same fields as a case, and:
  plan       resample b is, fold after fold, n_clusters(fold) draws from ONE SplitMix64 seeded
             with `plan_seed` (with one fold this is the plan above).
  deltas     for each resample: the mean over folds of each fold's delta on its own draws; null
             when any fold has no scorable species on its draws.
  delta      the mean over folds of auc_b - auc_a; auc_a/b the means of the folds' AUCs.

Scores are integers 0..999 divided by 1000 (both exact as f32 in order, and the metric depends
only on order); labels are 0/1.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import sklearn
from sklearn.metrics import roc_auc_score

HERE = Path(__file__).resolve().parent
OUT = HERE / "effect_cases.json"
SEED = 20251119
MASK = (1 << 64) - 1


class SplitMix64:
    """silencio_common::SplitMix64, bit for bit."""

    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return self.next_u64() % n


def plan(n_clusters, n_resamples, seed):
    rng = SplitMix64(seed)
    return [[rng.below(n_clusters) for _ in range(n_clusters)] for _ in range(n_resamples)]


def macro_auc(y, s):
    keep = [j for j in range(y.shape[1]) if 0 < y[:, j].sum() < y.shape[0]]
    if not keep:
        return None
    return float(roc_auc_score(y[:, keep], s[:, keep], average="macro"))


def summary(deltas):
    """n_skipped, mean, se and the 95 % percentile interval of the non-null resampled deltas."""
    used = np.array([d for d in deltas if d is not None])
    lo, hi = np.percentile(used, [2.5, 97.5])
    return {
        "n_skipped": sum(d is None for d in deltas),
        "mean": float(used.mean()),
        "se": float(used.std(ddof=1)),
        "ci_low": float(lo),
        "ci_high": float(hi),
    }


def fold_data(rng, n_clusters, sizes, m, prevalence):
    clusters = np.concatenate([np.full(k, c) for c, k in enumerate(sizes)])
    n = len(clusters)
    y = (rng.random((n, m)) < prevalence).astype(np.int64)
    a = np.clip(np.round(1000 * (0.5 + 0.12 * y + 0.18 * rng.normal(size=(n, m)))), 0, 999)
    b = np.clip(np.round(1000 * (0.5 + 0.16 * y + 0.18 * rng.normal(size=(n, m)))), 0, 999)
    return {
        "rows": n,
        "cols": m,
        "n_clusters": n_clusters,
        "clusters": clusters.tolist(),
        "y": y,
        "a": a.astype(np.int64),
        "b": b.astype(np.int64),
    }


def make_case(rng, name, n_clusters, sizes, m, prevalence, plan_seed, n_resamples):
    d = fold_data(rng, n_clusters, sizes, m, prevalence)
    clusters, n, y, a, b = np.array(d["clusters"]), d["rows"], d["y"], d["a"], d["b"]
    p = plan(n_clusters, n_resamples, plan_seed)
    members = [np.flatnonzero(clusters == c) for c in range(n_clusters)]
    deltas = []
    for draw in p:
        rows = np.concatenate([members[c] for c in draw])
        ya, sa, sb = y[rows], a[rows] / 1000.0, b[rows] / 1000.0
        da, db = macro_auc(ya, sa), macro_auc(ya, sb)
        deltas.append(None if da is None else db - da)
    auc_a, auc_b = macro_auc(y, a / 1000.0), macro_auc(y, b / 1000.0)
    return {
        "name": name,
        "rows": n,
        "cols": m,
        "n_clusters": n_clusters,
        "clusters": clusters.tolist(),
        "y": "".join(str(v) for v in y.ravel()),
        "a": a.ravel().tolist(),
        "b": b.ravel().tolist(),
        "plan_seed": plan_seed,
        "n_resamples": n_resamples,
        "plan": p,
        "deltas": deltas,
        "auc_a": auc_a,
        "auc_b": auc_b,
        "delta": auc_b - auc_a,
        **summary(deltas),
    }


def make_stratified(rng, name, folds, plan_seed, n_resamples):
    data = [fold_data(rng, *f) for f in folds]
    gen = SplitMix64(plan_seed)
    p = [[[gen.below(d["n_clusters"]) for _ in range(d["n_clusters"])] for d in data]
         for _ in range(n_resamples)]
    members = [[np.flatnonzero(np.array(d["clusters"]) == c) for c in range(d["n_clusters"])]
               for d in data]
    deltas = []
    for draws in p:
        per_fold = []
        for d, mem, draw in zip(data, members, draws):
            rows = np.concatenate([mem[c] for c in draw])
            ya = d["y"][rows]
            da = macro_auc(ya, d["a"][rows] / 1000.0)
            db = macro_auc(ya, d["b"][rows] / 1000.0)
            per_fold.append(None if da is None else db - da)
        deltas.append(None if any(x is None for x in per_fold) else float(np.mean(per_fold)))
    aucs = [(macro_auc(d["y"], d["a"] / 1000.0), macro_auc(d["y"], d["b"] / 1000.0)) for d in data]
    return {
        "name": name,
        "folds": [
            {
                "rows": d["rows"],
                "cols": d["cols"],
                "n_clusters": d["n_clusters"],
                "clusters": d["clusters"],
                "y": "".join(str(v) for v in d["y"].ravel()),
                "a": d["a"].ravel().tolist(),
                "b": d["b"].ravel().tolist(),
                "auc_a": x,
                "auc_b": y,
            }
            for d, (x, y) in zip(data, aucs)
        ],
        "plan_seed": plan_seed,
        "n_resamples": n_resamples,
        "plan": p,
        "deltas": deltas,
        "auc_a": float(np.mean([x for x, _ in aucs])),
        "auc_b": float(np.mean([y for _, y in aucs])),
        "delta": float(np.mean([y - x for x, y in aucs])),
        **summary(deltas),
    }


def generate():
    rng = np.random.default_rng(SEED)
    cases = [
        # 12 soundscape-like clusters of 12 windows, 5 species.
        make_case(rng, "soundscapes", 12, [12] * 12, 5, 0.25, 7, 300),
        # Uneven clusters (recordings of 1..9 windows), 3 species.
        make_case(rng, "uneven", 9, [1, 2, 3, 4, 5, 6, 7, 8, 9], 3, 0.3, 11, 300),
        # A rare species: some resamples hold no positive of any species and are skipped.
        make_case(rng, "sparse", 6, [3] * 6, 1, 0.08, 3, 200),
    ]
    stratified = [
        # Three folds of different sizes and species counts (the per-fold macro AUCs differ).
        make_stratified(rng, "three_folds", [(8, [10] * 8, 4, 0.25), (5, [3, 5, 7, 9, 11], 4, 0.3),
                                             (6, [6] * 6, 2, 0.2)], 13, 300),
        # A sparse fold: resamples skipped when it has nothing to score.
        make_stratified(rng, "sparse_fold", [(6, [6] * 6, 3, 0.3), (5, [2] * 5, 1, 0.1)], 17, 200),
    ]
    return {
        "seed": SEED,
        "score_scale": 1000,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "cases": cases,
        "stratified": stratified,
    }


def dump(doc):
    head = {k: v for k, v in doc.items() if k not in ("cases", "stratified")}
    body = json.dumps(head, separators=(",", ":"))[:-1]
    for key in ("cases", "stratified"):
        lines = [json.dumps(c, separators=(",", ":")) for c in doc[key]]
        body += f',"{key}":[\n' + ",\n".join(lines) + "\n]"
    return body + "}\n"


def close(x, y, tol=1e-9):
    if x is None or y is None:
        return x is None and y is None
    return abs(x - y) <= tol


def check(doc):
    if not OUT.exists():
        print(f"{OUT} does not exist; run without --check first", file=sys.stderr)
        return 1
    old = json.loads(OUT.read_text())
    problems = []
    if len(old["cases"]) != len(doc["cases"]):
        problems.append("case count differs")
    if len(old.get("stratified", [])) != len(doc["stratified"]):
        problems.append("stratified case count differs")
    exact_case = ("name", "rows", "cols", "clusters", "y", "a", "b", "plan", "n_skipped")
    exact_strat = ("name", "folds", "plan", "n_skipped")
    pairs = [(o, n, exact_case) for o, n in zip(old["cases"], doc["cases"])]
    pairs += [(o, n, exact_strat) for o, n in zip(old.get("stratified", []), doc["stratified"])]
    for o, n, exact in pairs:
        for key in exact:
            if o[key] != n[key]:
                problems.append(f"{o['name']}: {key} differs")
        for key in ("auc_a", "auc_b", "delta", "mean", "se", "ci_low", "ci_high"):
            if not close(o[key], n[key]):
                problems.append(f"{o['name']}: {key} committed {o[key]} vs now {n[key]}")
        if len(o["deltas"]) != len(n["deltas"]) or not all(map(close, o["deltas"], n["deltas"])):
            problems.append(f"{o['name']}: deltas differ")
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        return 1
    print(f"ok: {len(doc['cases'])} bootstrap cases and {len(doc['stratified'])} stratified ones "
          f"match {OUT.name}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed fixture")
    args = ap.parse_args()
    doc = generate()
    if args.check:
        return check(doc)
    OUT.write_text(dump(doc))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")
    for c in doc["cases"] + doc["stratified"]:
        print(f"  {c['name']}: delta {c['delta']:+.4f}, se {c['se']:.4f}, "
              f"CI [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}], skipped {c['n_skipped']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
