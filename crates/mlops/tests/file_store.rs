//! The local file store, read back by the real MLflow (Python client and `mlflow server`).
//!
//! Needs `SILENCIO_MLFLOW_PYTHON` (a python with mlflow, for `check_file_store.py`) and
//! `SILENCIO_MLFLOW_BIN` (the `mlflow` executable); `SILENCIO_SKIP_MLFLOW=1` skips instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::json;
use silencio_mlops::{Metric, Run, RunStatus, Tracking, git_info, system_info};

// No single quote: MLflow's own get_experiment_by_name builds a filter string it cannot parse.
const EXPERIMENT: &str = "birdclef file-store test: \"quoted\" ünïcode/ñ";

/// Writes a run with params, metrics (several steps, NaN, a nested key), tags and artifacts;
/// returns the run and what MLflow should read back.
fn write_run(mlruns: &Path, work: &Path) -> (Run, serde_json::Value) {
    let tracking = Tracking::open(&format!("file://{}", mlruns.display())).unwrap();
    let git = git_info(Path::new(env!("CARGO_MANIFEST_DIR")));
    let mut tags: Vec<(String, String)> = system_info().tags();
    if let Some(g) = &git {
        tags.extend(g.tags());
    }
    tags.push(("silencio.model".into(), "efficientnet_b0".into()));
    let tag_refs: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let run = tracking
        .start_run(EXPERIMENT, "effnet lr=3e-4", &tag_refs)
        .unwrap();

    run.log_params(&[("lr", "0.0003"), ("epochs", "2"), ("optim/name", "adamw")])
        .unwrap();
    let metrics = vec![
        Metric::at("loss/train", 0.75, 0, 1_700_000_000_000),
        Metric::at("loss/train", 0.5, 1, 1_700_000_001_000),
        Metric::at("val_auc", 0.8125, 1, 1_700_000_001_500),
        Metric::at("grad_norm", f64::NAN, 1, 1_700_000_001_600),
    ];
    run.log_metrics(&metrics).unwrap();
    run.log_metric("lr_sched", 1e-20, 7).unwrap();
    run.set_tags(&[("stage", "smoke"), ("stage", "final")])
        .unwrap();

    std::fs::write(work.join("report.md"), "# AUC 0.8125\n").unwrap();
    let bundle = work.join("bundle");
    std::fs::create_dir_all(bundle.join("weights")).unwrap();
    std::fs::write(bundle.join("bundle.json"), "{\"classes\": 206}").unwrap();
    std::fs::write(bundle.join("weights/model.bin"), "weights").unwrap();
    run.log_artifact(&work.join("report.md"), "").unwrap();
    run.log_artifact(&bundle, "model").unwrap();
    run.end_run(RunStatus::Finished).unwrap();
    assert!(
        run.log_metric("late", 1.0, 0).is_err(),
        "an ended run takes no metrics"
    );

    let mut expected_tags = BTreeMap::new();
    expected_tags.insert("mlflow.runName".to_string(), "effnet lr=3e-4".to_string());
    expected_tags.insert("mlflow.source.type".into(), "LOCAL".into());
    expected_tags.insert("silencio.model".into(), "efficientnet_b0".into());
    expected_tags.insert("stage".into(), "final".into());
    if let Some(g) = &git {
        expected_tags.insert("mlflow.source.git.commit".into(), g.commit.clone());
    }
    let recent_ts = run_metric_ts(mlruns, &run, "lr_sched");
    let expected = json!({
        "experiment": EXPERIMENT,
        "run_id": run.run_id(),
        "run_name": "effnet lr=3e-4",
        "status": "FINISHED",
        "params": {"lr": "0.0003", "epochs": "2", "optim/name": "adamw"},
        "tags": expected_tags,
        "metrics": {
            "loss/train": [[0.75, 0, 1_700_000_000_000i64], [0.5, 1, 1_700_000_001_000i64]],
            "val_auc": [[0.8125, 1, 1_700_000_001_500i64]],
            "lr_sched": [[1e-20, 7, recent_ts]],
        },
        "artifacts": {
            "report.md": "# AUC 0.8125\n",
            "model/bundle.json": "{\"classes\": 206}",
            "model/weights/model.bin": "weights",
        },
    });
    (run, expected)
}

/// The timestamp the store wrote for a metric logged "now".
fn run_metric_ts(mlruns: &Path, run: &Run, key: &str) -> i64 {
    let path = mlruns
        .join(run.experiment_id())
        .join(run.run_id())
        .join("metrics")
        .join(key);
    let text = std::fs::read_to_string(path).unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn mlflow_python_client_reads_the_file_store() {
    let Some(python) = common::mlflow_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mlruns = dir.path().join("mlruns");
    let (run, expected) = write_run(&mlruns, dir.path());

    // The NaN metric: Python's json cannot carry NaN in the expectations, check it here.
    let grad = run_metric_ts(&mlruns, &run, "grad_norm");
    assert_eq!(grad, 1_700_000_001_600);

    let expected_path = dir.path().join("expected.json");
    std::fs::write(&expected_path, serde_json::to_vec(&expected).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_file_store.py");
    let out = Command::new(&python)
        .arg(&script)
        .arg(format!("file://{}", mlruns.display()))
        .arg(&expected_path)
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .output()
        .unwrap_or_else(|e| panic!("running {python}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "MLflow check failed:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");

    // A second run in the same experiment finds it by name (no duplicate experiment).
    let tracking = Tracking::open(mlruns.to_str().unwrap()).unwrap();
    assert_eq!(
        tracking.experiment_id(EXPERIMENT).unwrap().as_deref(),
        Some(run.experiment_id())
    );
    let again = tracking.start_run(EXPERIMENT, "", &[]).unwrap();
    assert_eq!(again.experiment_id(), run.experiment_id());
    again.end_run(RunStatus::Failed).unwrap();
}

#[test]
fn mlflow_server_opens_the_file_store() {
    let Some(bin) = common::mlflow_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mlruns = dir.path().join("mlruns");
    let (run, _) = write_run(&mlruns, dir.path());
    let uri = format!("file://{}", mlruns.display());
    let server = common::MlflowServer::start(&bin, &["--backend-store-uri", &uri], dir.path());

    let got = server.get_json(&format!("/api/2.0/mlflow/runs/get?run_id={}", run.run_id()));
    let info = &got["run"]["info"];
    assert_eq!(info["run_id"], run.run_id());
    assert_eq!(info["status"], "FINISHED");
    assert_eq!(info["run_name"], "effnet lr=3e-4");
    let params = got["run"]["data"]["params"].as_array().unwrap();
    assert!(
        params
            .iter()
            .any(|p| p["key"] == "lr" && p["value"] == "0.0003")
    );
    let metrics = got["run"]["data"]["metrics"].as_array().unwrap();
    assert!(
        metrics
            .iter()
            .any(|m| m["key"] == "loss/train" && m["value"] == 0.5)
    );
    let files = server.artifact_paths(run.run_id(), "model");
    assert!(files.iter().any(|f| f == "model/bundle.json"), "{files:?}");
    // The UI itself (the page a person opens).
    let page = ureq::get(&server.base).call().unwrap();
    assert_eq!(page.status(), 200);
}
