//! Tracking and registry against a real `mlflow server` (SQLite backend, artifact proxy),
//! started by the test on a free loopback port and killed at the end.
//!
//! Needs `SILENCIO_MLFLOW_BIN` (the `mlflow` executable); `SILENCIO_SKIP_MLFLOW=1` skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use serde_json::Value;
use silencio_mlops::registry::NewVersion;
use silencio_mlops::{Error, Metric, Registry, RunStatus, Tracking};

fn history(server: &common::MlflowServer, run_id: &str, key: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let mut path = format!(
            "/api/2.0/mlflow/metrics/get-history?run_id={run_id}&metric_key={key}&max_results=1000"
        );
        if !token.is_empty() {
            path.push_str(&format!("&page_token={token}"));
        }
        let v = server.get_json(&path);
        out.extend(v["metrics"].as_array().cloned().unwrap_or_default());
        match v["next_page_token"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => return out,
        }
    }
}

fn download(server: &common::MlflowServer, path: &str) -> String {
    let mut r = ureq::get(format!(
        "{}/api/2.0/mlflow-artifacts/artifacts/{path}",
        server.base
    ))
    .call()
    .unwrap();
    r.body_mut().read_to_string().unwrap()
}

#[test]
fn rest_tracking_and_registry() {
    let Some(bin) = common::mlflow_bin() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:///{}", dir.path().join("mlflow.db").display());
    let artifacts = dir.path().join("artifacts");
    let server = common::MlflowServer::start(
        &bin,
        &[
            "--backend-store-uri",
            &db,
            "--artifacts-destination",
            artifacts.to_str().unwrap(),
        ],
        dir.path(),
    );

    // --- tracking
    let tracking = Tracking::open(&server.base).unwrap();
    let run = tracking
        .start_run(
            "birdclef rest",
            "rest-run",
            &[("mlflow.source.git.commit", "0123abc")],
        )
        .unwrap();
    assert!(
        run.artifact_uri().starts_with("mlflow-artifacts:/"),
        "{}",
        run.artifact_uri()
    );

    // > 100 params and > 1000 metrics in one call: only batching gets them through.
    let keys: Vec<String> = (0..150).map(|i| format!("p{i:03}")).collect();
    let values: Vec<String> = (0..150).map(|i| format!("value {i}")).collect();
    let params: Vec<(&str, &str)> = keys
        .iter()
        .zip(&values)
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    run.log_params(&params).unwrap();
    let mut metrics: Vec<Metric> = (0..2000)
        .map(|s| {
            Metric::at(
                "loss/train",
                1.0 / (s as f64 + 1.0),
                s,
                1_700_000_000_000 + s,
            )
        })
        .collect();
    metrics.extend(
        (0..500).map(|s| Metric::at("val_auc", s as f64 / 500.0, s, 1_700_000_100_000 + s)),
    );
    metrics.push(Metric::at("grad_norm", f64::NAN, 0, 1_700_000_200_000));
    run.log_metrics(&metrics).unwrap();
    run.set_tags(&[("stage", "rest-test")]).unwrap();
    run.set_tags(&[("a", "1"), ("b", "2")]).unwrap();

    std::fs::write(dir.path().join("report.md"), "# rest report\n").unwrap();
    let bundle = dir.path().join("bundle");
    std::fs::create_dir_all(bundle.join("weights")).unwrap();
    std::fs::write(bundle.join("bundle.json"), "{\"classes\": 206}").unwrap();
    std::fs::write(
        bundle.join("weights/model bin.safetensors"),
        vec![7u8; 300_000],
    )
    .unwrap();
    run.log_artifact(&dir.path().join("report.md"), "reports")
        .unwrap();
    run.log_artifact(&bundle, "model").unwrap();

    // A changed param is refused by the server, as a typed error with its error code.
    let err = run.log_params(&[("p000", "other")]).unwrap_err();
    assert_eq!(
        err.mlflow_error_code(),
        Some("INVALID_PARAMETER_VALUE"),
        "{err}"
    );
    // A bad key never reaches the server.
    assert!(matches!(
        run.log_metric("bad key!", 1.0, 0),
        Err(Error::InvalidName { .. })
    ));
    run.end_run(RunStatus::Finished).unwrap();

    // Read everything back through REST.
    let got = server.get_json(&format!("/api/2.0/mlflow/runs/get?run_id={}", run.run_id()));
    let info = &got["run"]["info"];
    assert_eq!(info["status"], "FINISHED");
    assert_eq!(info["run_name"], "rest-run");
    assert_eq!(info["experiment_id"], run.experiment_id());
    let data = &got["run"]["data"];
    let params_back = data["params"].as_array().unwrap();
    assert_eq!(params_back.len(), 150);
    assert!(
        params_back
            .iter()
            .any(|p| p["key"] == "p149" && p["value"] == "value 149")
    );
    let tags = data["tags"].as_array().unwrap();
    for (k, v) in [
        ("stage", "rest-test"),
        ("a", "1"),
        ("b", "2"),
        ("mlflow.source.git.commit", "0123abc"),
        ("mlflow.runName", "rest-run"),
        ("mlflow.source.type", "LOCAL"),
    ] {
        assert!(
            tags.iter().any(|t| t["key"] == k && t["value"] == v),
            "tag {k}: {tags:?}"
        );
    }
    let loss = history(&server, run.run_id(), "loss/train");
    assert_eq!(loss.len(), 2000);
    let last = loss.iter().find(|m| m["step"] == 1999).unwrap();
    assert_eq!(last["value"].as_f64().unwrap(), 1.0 / 2000.0);
    assert_eq!(last["timestamp"], 1_700_000_001_999i64);
    assert_eq!(history(&server, run.run_id(), "val_auc").len(), 500);
    assert_eq!(
        history(&server, run.run_id(), "grad_norm")[0]["value"],
        "NaN"
    );

    let listed = server.get_json(&format!(
        "/api/2.0/mlflow/artifacts/list?run_id={}&path=model/weights",
        run.run_id()
    ));
    assert_eq!(
        listed["files"][0]["path"],
        "model/weights/model bin.safetensors"
    );
    assert_eq!(listed["files"][0]["file_size"], 300_000);
    let base_path = run.artifact_uri().trim_start_matches("mlflow-artifacts:/");
    assert_eq!(
        download(&server, &format!("{base_path}/reports/report.md")),
        "# rest report\n"
    );
    assert_eq!(
        download(&server, &format!("{base_path}/model/bundle.json")),
        "{\"classes\": 206}"
    );
    // And on the server's disk, where --artifacts-destination put it.
    assert!(
        artifacts
            .join(base_path)
            .join("model/bundle.json")
            .is_file()
    );

    // The experiment is found by name, not created twice.
    let again = tracking.start_run("birdclef rest", "", &[]).unwrap();
    assert_eq!(again.experiment_id(), run.experiment_id());
    again.end_run(RunStatus::Killed).unwrap();
    let info2 = server.get_json(&format!(
        "/api/2.0/mlflow/runs/get?run_id={}",
        again.run_id()
    ));
    assert_eq!(info2["run"]["info"]["status"], "KILLED");

    // --- registry
    let reg = Registry::open(&server.base).unwrap();
    let name = "birdclef-effnet";
    assert!(reg.create_registered_model(name).unwrap());
    assert!(!reg.create_registered_model(name).unwrap());
    let source1 = format!("{}/model", run.artifact_uri());
    let v1 = reg
        .create_version(
            name,
            &NewVersion {
                source: &source1,
                run_id: Some(run.run_id()),
                description: "first",
                tags: &[("val_auc", "0.81")],
            },
        )
        .unwrap();
    let source2 = format!("runs:/{}/model", run.run_id());
    let v2 = reg
        .create_version(
            name,
            &NewVersion {
                source: &source2,
                run_id: Some(run.run_id()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((v1, v2), (1, 2));
    reg.set_alias(name, "production", v1).unwrap();
    reg.set_alias(name, "staging", v2).unwrap();
    let prod = reg.get_by_alias(name, "production").unwrap();
    assert_eq!(prod.version, 1);
    assert_eq!(prod.source, source1);
    assert_eq!(prod.run_id.as_deref(), Some(run.run_id()));
    assert_eq!(prod.description, "first");
    assert_eq!(prod.tags.get("val_auc").map(String::as_str), Some("0.81"));
    assert_eq!(prod.aliases, vec!["production".to_string()]);
    assert_eq!(reg.get_by_alias(name, "staging").unwrap().version, 2);
    let versions = reg.list_versions(name).unwrap();
    assert_eq!(
        versions.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(versions[1].aliases, vec!["staging".to_string()]);
    assert_eq!(
        reg.get_version(name, 2).unwrap().aliases,
        vec!["staging".to_string()]
    );

    // Promote: production moves to 2; staging removed.
    reg.set_alias(name, "production", v2).unwrap();
    reg.delete_alias(name, "staging").unwrap();
    assert_eq!(reg.get_by_alias(name, "production").unwrap().version, 2);
    let gone = reg.get_by_alias(name, "staging").unwrap_err();
    assert!(gone.mlflow_error_code().is_some(), "{gone}");
    let missing = reg.set_alias(name, "production", 99).unwrap_err();
    assert_eq!(
        missing.mlflow_error_code(),
        Some("RESOURCE_DOES_NOT_EXIST"),
        "{missing}"
    );
    assert!(
        matches!(missing, Error::Mlflow { status: 404, .. }),
        "{missing:?}"
    );

    eprintln!(
        "mlflow server start: {:.1} s",
        server.started_in.as_secs_f64()
    );
    drop(server);
    assert!(Path::new(&artifacts).is_dir());
}
