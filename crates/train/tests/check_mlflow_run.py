"""Opens a trainer run with the real MLflow client (the same code `mlflow ui` uses) and checks
what the trainer logged. Run by crates/train/tests/trainer.rs.

Usage: MLFLOW_ALLOW_FILE_STORE=true python check_mlflow_run.py <tracking_uri> <run_id> <epochs>
Prints a JSON summary; exits non-zero with a message on the first problem.
"""

import json
import sys

from mlflow import MlflowClient


def main():
    uri, run_id, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    c = MlflowClient(tracking_uri=uri)
    run = c.get_run(run_id)
    exp = c.get_experiment(run.info.experiment_id)
    hist = c.get_metric_history(run_id, "train_loss")
    # A kill between an epoch's metrics and its checkpoint repeats that epoch on resume.
    steps = sorted(set(m.step for m in hist))
    arts = []

    def walk(path=None):
        for f in c.list_artifacts(run_id, path):
            if f.is_dir:
                walk(f.path)
            else:
                arts.append(f.path)

    walk()
    out = {
        "experiment": exp.name,
        "status": run.info.status,
        "run_name": run.info.run_name,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.log")},
        "train_loss_steps": steps,
        "artifacts": sorted(arts),
    }
    print(json.dumps(out))
    problems = []
    if steps != list(range(1, epochs + 1)):
        problems.append(f"train_loss steps {steps} != 1..{epochs}")
    for a in ["bundle/bundle.json", "bundle/weights.safetensors", "report/report.html", "report/report.json", "experiment.toml"]:
        if a not in arts:
            problems.append(f"artifact {a} missing")
    for p in ["train.epochs", "model.arch", "train.lr"]:
        if p not in run.data.params:
            problems.append(f"param {p} missing")
    if problems:
        print("MISMATCH: " + "; ".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
