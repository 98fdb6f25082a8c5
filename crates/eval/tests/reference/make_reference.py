#!/usr/bin/env python3
"""Writes sklearn_cases.json: scikit-learn's ROC-AUC and average precision on thousands of
random, tie-heavy and degenerate multi-label cases, for crates/eval/tests/sklearn_parity.rs.

    python make_reference.py            # (re)write the fixture next to this script
    python make_reference.py --check    # regenerate in memory, compare with the committed file

What is computed, per case (labels Y, scores S, n rows x m columns):
  auc[j]     roc_auc_score(Y[:, j], S[:, j]) for columns with a positive and a negative, else null
  ap[j]      average_precision_score(Y[:, j], S[:, j]) for columns with a positive, else null
  macro_auc  roc_auc_score(Y[:, kept], S[:, kept], average="macro") over the auc columns
             (the BirdCLEF 2025 metric: Kaggle drops columns without a positive; a column
             without a negative would make scikit-learn raise, so it is dropped too)
  macro_ap   average_precision_score(..., average="macro") over the ap columns

Encoding, to keep the file small and exact: labels are a string of 0/1, row-major; scores are
integers 0..999, row-major, and the score is that integer / 1000 (both metrics depend only on
the order of the scores, and distinct integers stay distinct as f32). `pn_ties` counts
(positive, negative) pairs with equal scores in the auc columns: cases where it is non-zero
separate the correct tie rule (a tie counts 1/2) from any strict ordering.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import sklearn
from sklearn.metrics import average_precision_score, roc_auc_score

SEED = 20250406
N_CASES = 2000
N_LARGE = 24
DIGITS = 12
HERE = Path(__file__).resolve().parent
OUT = HERE / "sklearn_cases.json"


def make_inputs(rng, kind):
    """Labels (n, m) of 0/1 and integer scores (n, m) in 0..999."""
    if kind == "large":
        n, m = int(rng.integers(300, 801)), int(rng.integers(2, 5))
    else:
        n, m = int(rng.integers(2, 61)), int(rng.integers(1, 9))
    prevalence = rng.uniform(0.01, 0.06, m) if kind == "sparse" else rng.uniform(0.05, 0.6, m)
    y = (rng.random((n, m)) < prevalence).astype(np.int64)
    # Degenerate columns: some never positive (skipped), some always positive (no negative).
    for j in range(m):
        u = rng.random()
        if u < 0.12:
            y[:, j] = 0
        elif u < 0.18:
            y[:, j] = 1
    # Scores carry some signal (possibly inverted) so AUCs spread over [0, 1].
    strength = rng.uniform(-1.0, 3.0, m)
    latent = rng.normal(size=(n, m)) + strength * y
    if kind == "random" or kind == "large":
        levels = 1000
    elif kind == "ties":
        levels = int(rng.integers(2, 7))
    elif kind == "coarse":
        levels = int(rng.integers(7, 21))
    elif kind == "sparse":
        levels = int(rng.choice([3, 10, 1000]))
    else:  # "flat": whole columns tied, or two levels
        levels = int(rng.integers(1, 3))
    lo, hi = latent.min(axis=0), latent.max(axis=0)
    q = np.floor((latent - lo) / np.where(hi > lo, hi - lo, 1.0) * levels)
    q = np.clip(q, 0, levels - 1)
    if kind == "flat":
        flat_cols = rng.random(m) < 0.5
        q[:, flat_cols] = 0
    s = np.rint(q * (999 / max(levels - 1, 1))).astype(np.int64)
    return y, s


def metrics(y, s):
    x = s.astype(np.float64) / 1000.0
    pos = y.sum(axis=0)
    n = y.shape[0]
    auc_cols = [j for j in range(y.shape[1]) if 0 < pos[j] < n]
    ap_cols = [j for j in range(y.shape[1]) if pos[j] > 0]
    auc = [None] * y.shape[1]
    ap = [None] * y.shape[1]
    for j in auc_cols:
        auc[j] = float(roc_auc_score(y[:, j], x[:, j]))
    for j in ap_cols:
        ap[j] = float(average_precision_score(y[:, j], x[:, j]))

    def macro(fn, cols):
        if not cols:
            return None
        if len(cols) == 1:
            return float(fn(y[:, cols[0]], x[:, cols[0]]))
        return float(fn(y[:, cols], x[:, cols], average="macro"))

    macro_auc = macro(roc_auc_score, auc_cols)
    macro_ap = macro(average_precision_score, ap_cols)
    # Kaggle's own route (drop columns summing to 0) must agree when no column is all-positive.
    kaggle_cols = [j for j in range(y.shape[1]) if pos[j] > 0]
    if len(kaggle_cols) >= 2 and kaggle_cols == auc_cols:
        kaggle = roc_auc_score(y[:, kaggle_cols], x[:, kaggle_cols], average="macro")
        assert abs(kaggle - macro_auc) < 1e-15

    ties = 0
    for j in auc_cols:
        p_vals, counts_p = np.unique(s[y[:, j] == 1, j], return_counts=True)
        n_vals, counts_n = np.unique(s[y[:, j] == 0, j], return_counts=True)
        common, ip, inn = np.intersect1d(p_vals, n_vals, return_indices=True)
        ties += int((counts_p[ip] * counts_n[inn]).sum())
    rnd = lambda v: None if v is None else round(v, DIGITS)
    return {
        "auc": [rnd(v) for v in auc],
        "ap": [rnd(v) for v in ap],
        "macro_auc": rnd(macro_auc),
        "macro_ap": rnd(macro_ap),
        "pn_ties": ties,
    }


def generate():
    rng = np.random.default_rng(SEED)
    kinds = ["random", "ties", "coarse", "sparse", "flat"]
    weights = [0.25, 0.35, 0.15, 0.15, 0.10]
    plan = list(rng.choice(kinds, size=N_CASES, p=weights)) + ["large"] * N_LARGE
    cases = []
    for i, kind in enumerate(plan):
        y, s = make_inputs(rng, str(kind))
        case = {
            "id": i,
            "kind": str(kind),
            "rows": int(y.shape[0]),
            "cols": int(y.shape[1]),
            "y": "".join(map(str, y.ravel().tolist())),
            "s": s.ravel().tolist(),
        }
        case.update(metrics(y, s))
        cases.append(case)
    return {
        "generator": "crates/eval/tests/reference/make_reference.py",
        "seed": SEED,
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "score_scale": 1000,
        "cases": cases,
    }


def dump(doc):
    # One case per line: small, and a diff shows which cases changed.
    head = {k: v for k, v in doc.items() if k != "cases"}
    lines = [json.dumps(c, separators=(",", ":")) for c in doc["cases"]]
    body = json.dumps(head, separators=(",", ":"))[:-1]
    return body + ',"cases":[\n' + ",\n".join(lines) + "\n]}\n"


def close(a, b, tol=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol


def check(doc):
    if not OUT.exists():
        print(f"{OUT} does not exist; run without --check first", file=sys.stderr)
        return 1
    old = json.loads(OUT.read_text())
    problems = []
    for key in ("seed", "score_scale"):
        if old.get(key) != doc[key]:
            problems.append(f"{key}: committed {old.get(key)} vs now {doc[key]}")
    if len(old["cases"]) != len(doc["cases"]):
        problems.append(f"case count: committed {len(old['cases'])} vs now {len(doc['cases'])}")
    for a, b in zip(old["cases"], doc["cases"]):
        for key in ("kind", "rows", "cols", "y", "s", "pn_ties"):
            if a[key] != b[key]:
                problems.append(f"case {a['id']}: {key} differs")
        for key in ("macro_auc", "macro_ap"):
            if not close(a[key], b[key]):
                problems.append(f"case {a['id']}: {key} committed {a[key]} vs now {b[key]}")
        for key in ("auc", "ap"):
            if len(a[key]) != len(b[key]) or not all(map(close, a[key], b[key])):
                problems.append(f"case {a['id']}: per-class {key} differs")
    if old.get("sklearn") != doc["sklearn"] or old.get("numpy") != doc["numpy"]:
        print(
            f"note: committed with scikit-learn {old.get('sklearn')} / numpy {old.get('numpy')}, "
            f"checked with {doc['sklearn']} / {doc['numpy']}"
        )
    for p in problems[:20]:
        print(p, file=sys.stderr)
    if problems:
        print(f"{len(problems)} difference(s) with {OUT}", file=sys.stderr)
        return 1
    print(f"ok: {len(doc['cases'])} cases match {OUT.name}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed fixture")
    args = ap.parse_args()
    doc = generate()
    if args.check:
        return check(doc)
    OUT.write_text(dump(doc))
    n_ties = sum(1 for c in doc["cases"] if c["pn_ties"] > 0)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(doc['cases'])} cases, {n_ties} with tied pos/neg pairs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
