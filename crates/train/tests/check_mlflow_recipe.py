"""Opens a recipe's MLflow run and its child runs (one per pseudo-label round) with the real
MLflow client and prints what they hold as JSON. Run by crates/train/tests/recipes.rs.

Usage: MLFLOW_ALLOW_FILE_STORE=true python check_mlflow_recipe.py <tracking_uri> <run_id>
"""

import json
import sys

from mlflow import MlflowClient


def summary(c, run):
    return {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "params": run.data.params,
        "metrics": run.data.metrics,
        "tags": {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.log")},
        "artifacts": sorted(f.path for f in c.list_artifacts(run.info.run_id)),
    }


def main():
    uri, run_id = sys.argv[1], sys.argv[2]
    c = MlflowClient(tracking_uri=uri)
    parent = c.get_run(run_id)
    # Children may live in other experiments (a swap round trains another experiment).
    exps = [e.experiment_id for e in c.search_experiments()]
    children = c.search_runs(
        exps, filter_string=f"tags.mlflow.parentRunId = '{run_id}'", order_by=["attributes.start_time ASC"]
    )
    print(json.dumps({"parent": summary(c, parent), "children": [summary(c, r) for r in children]}))


if __name__ == "__main__":
    main()
