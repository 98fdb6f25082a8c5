"""Reads a file store written by silencio-mlops with the real MLflow client and checks it.

Usage: MLFLOW_ALLOW_FILE_STORE=true python check_file_store.py <tracking_uri> <expected.json>

expected.json: {"experiment": name, "run_id": id, "run_name": name, "status": "FINISHED",
                "params": {k: v}, "tags": {k: v} (subset), "metrics": {k: [[value, step, ts], ...]},
                "artifacts": {path: text}}
Exits non-zero with a message on the first mismatch. Run by tests/file_store.rs.
"""

import json
import math
import os
import sys
import tempfile

from mlflow import MlflowClient


def fail(msg):
    print(f"MISMATCH: {msg}", file=sys.stderr)
    sys.exit(1)


def same_float(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def walk(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        if f.is_dir:
            out += walk(client, run_id, f.path)
        else:
            out.append(f.path)
    return out


def main():
    uri, expected_path = sys.argv[1], sys.argv[2]
    with open(expected_path) as f:
        exp = json.load(f)
    client = MlflowClient(tracking_uri=uri)

    experiment = client.get_experiment_by_name(exp["experiment"])
    if experiment is None:
        fail(f"experiment {exp['experiment']!r} not found")
    if experiment.lifecycle_stage != "active":
        fail(f"experiment lifecycle {experiment.lifecycle_stage}")
    default = client.get_experiment("0")
    if default.name != "Default":
        fail(f"experiment 0 is {default.name!r}")

    runs = client.search_runs([experiment.experiment_id])
    ids = [r.info.run_id for r in runs]
    if exp["run_id"] not in ids:
        fail(f"search_runs found {ids}, not {exp['run_id']}")

    run = client.get_run(exp["run_id"])
    if run.info.run_name != exp["run_name"]:
        fail(f"run_name {run.info.run_name!r}")
    if run.info.status != exp["status"]:
        fail(f"status {run.info.status!r}")
    if run.info.end_time is None or run.info.end_time < run.info.start_time:
        fail(f"times {run.info.start_time} .. {run.info.end_time}")
    if run.data.params != exp["params"]:
        fail(f"params {run.data.params} != {exp['params']}")
    for k, v in exp["tags"].items():
        if run.data.tags.get(k) != v:
            fail(f"tag {k}: {run.data.tags.get(k)!r} != {v!r}")

    for key, points in exp["metrics"].items():
        hist = client.get_metric_history(exp["run_id"], key)
        got = [(m.value, m.step, m.timestamp) for m in hist]
        want = [tuple(p) for p in points]
        if len(got) != len(want) or not all(
            same_float(g[0], w[0]) and g[1:] == w[1:] for g, w in zip(got, want)
        ):
            fail(f"history of {key}: {got} != {want}")
        # The run's summary value is the one at the largest step.
        last = max(want, key=lambda p: (p[1], p[2], p[0]))
        if not same_float(run.data.metrics[key], last[0]):
            fail(f"summary of {key}: {run.data.metrics[key]} != {last[0]}")

    paths = sorted(walk(client, exp["run_id"]))
    if paths != sorted(exp["artifacts"]):
        fail(f"artifacts {paths} != {sorted(exp['artifacts'])}")
    with tempfile.TemporaryDirectory() as d:
        for path, text in exp["artifacts"].items():
            local = client.download_artifacts(exp["run_id"], path, d)
            with open(local) as f:
                if f.read() != text:
                    fail(f"artifact {path} content differs")

    print(f"OK: MLflow {__import__('mlflow').__version__} read run {exp['run_id']} "
          f"({len(run.data.params)} params, {len(run.data.metrics)} metrics, {len(paths)} artifacts)")


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    main()
