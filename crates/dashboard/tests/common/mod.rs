//! Fixtures shared by the dashboard tests: a runs directory with reports written by
//! `silencio_eval`, a local registry, a stand-in metrics endpoint fed by the same Prometheus
//! exporter the server uses, and helpers to start the dashboard.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use silencio_dashboard::{DashboardConfig, SplitOptions};
use silencio_eval::matrix::Matrix;
use silencio_eval::report::{EvalReport, ReportInput, ReportOptions};

/// The committed demo dataset (real audio).
pub fn demo_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/demo/birdclef")
}

/// A report over `species` with deterministic, imperfect scores and two row slices.
pub fn make_report(title: &str, species: &[&str], classes: &[&str], seed: usize) -> EvalReport {
    let (n_rows, n_cols) = (40, species.len());
    let mut labels = Matrix::zeros(n_rows, n_cols);
    let mut scores = Matrix::zeros(n_rows, n_cols);
    let mut meta = Vec::new();
    for r in 0..n_rows {
        let truth = (r + seed) % n_cols;
        labels.set(r, truth, 1.0);
        for c in 0..n_cols {
            let noise = ((r * 31 + c * 17 + seed * 7) % 13) as f32 / 13.0;
            let bump = if c == truth { 0.4 } else { 0.0 };
            scores.set(r, c, (noise * 0.6 + bump).min(1.0));
        }
        let mut m = BTreeMap::new();
        m.insert(
            "collection".to_string(),
            if r % 2 == 0 { "XC" } else { "iNat" }.to_string(),
        );
        meta.push(m);
    }
    let species: Vec<String> = species.iter().map(|s| s.to_string()).collect();
    let classes: Vec<String> = classes.iter().map(|s| s.to_string()).collect();
    EvalReport::build(
        ReportInput {
            title,
            scores: &scores,
            labels: &labels,
            species: &species,
            column_class: &classes,
            rows_meta: &meta,
        },
        ReportOptions::default(),
    )
    .unwrap()
}

pub const SPECIES: [&str; 4] = ["gretit1", "zebrafinch", "bengalesefinch", "fruitfly"];
pub const CLASSES: [&str; 4] = ["Aves", "Aves", "Aves", "Insecta"];

fn set_mtime(path: &Path, t: SystemTime) {
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(t).unwrap();
}

/// `runs/` with an older bare `silencio eval` report and a newer trainer run report
/// (valid, mixed and one suite, HTML pages beside it). Returns the newer run's reports.
pub fn write_runs(runs: &Path) -> (EvalReport, EvalReport, EvalReport) {
    let old_dir = runs.join("older/run-1");
    std::fs::create_dir_all(&old_dir).unwrap();
    let old = make_report("older: bare report", &SPECIES, &CLASSES, 3);
    old.write_json(old_dir.join("report.json")).unwrap();
    old.write_html(old_dir.join("report.html")).unwrap();
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    set_mtime(&old_dir.join("report.json"), an_hour_ago);

    let new_dir = runs.join("demo/demo-2");
    std::fs::create_dir_all(&new_dir).unwrap();
    let valid = make_report("demo: validation windows", &SPECIES, &CLASSES, 0);
    let mixed = make_report("demo: mixed soundscapes", &SPECIES, &CLASSES, 1);
    let weak = make_report("demo: weak suite", &SPECIES, &CLASSES, 2);
    // The trainer's RunReport layout: {valid, mixed, suites}.
    let run_report = serde_json::json!({
        "valid": valid,
        "mixed": mixed,
        "suites": {"weak": weak},
    });
    std::fs::write(
        new_dir.join("report.json"),
        serde_json::to_vec_pretty(&run_report).unwrap(),
    )
    .unwrap();
    valid.write_html(new_dir.join("report.html")).unwrap();
    mixed.write_html(new_dir.join("mixed.html")).unwrap();
    // No suite-weak.html: its set must come without a link.

    // A broken report, older than both: listed with its error, never shown.
    let broken = runs.join("broken/run-0");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("report.json"), b"{not json").unwrap();
    set_mtime(
        &broken.join("report.json"),
        SystemTime::now() - Duration::from_secs(7200),
    );
    (valid, mixed, weak)
}

/// A bundle.json as `silencio_infer::ModelBundle::write` lays it out (that crate brings Burn,
/// which this crate keeps out), with `n` species.
pub fn bundle_json(version: &str, trained: bool, recipe: &str) -> serde_json::Value {
    let features =
        serde_json::to_value(silencio_audio::FeatureConfig::recipe(recipe).unwrap()).unwrap();
    let species: Vec<serde_json::Value> = SPECIES
        .iter()
        .zip(CLASSES)
        .map(|(c, k)| {
            serde_json::json!({"code": c, "scientific_name": "x", "common_name": c, "class_name": k})
        })
        .collect();
    serde_json::json!({
        "format": "silencio-bundle",
        "format_version": 1,
        "name": "el-silencio",
        "version": version,
        "model": {
            "backbone": {"kind": "efficientnet", "variant": "lite0", "in_channels": 1},
            "head": {"kind": "clip", "pooling": "avg", "hidden": null, "dropout": 0.2},
            "num_classes": SPECIES.len(),
            "input_norm": {"mean": -60.0, "std": 35.0}
        },
        "features": features,
        "species": species,
        "weights": {"file": "weights.safetensors", "sha256": "ab".repeat(32), "bytes": 2_097_152},
        "provenance": {"trained": trained, "run_id": "r1", "source": "test fixture", "metrics": {}, "created_unix_s": 1_800_000_000}
    })
}

/// A local registry: versions 1 (staging) and 2 (production, recipe `panns`), a copy in
/// progress (`.staging-x`) that must be ignored, and a version directory missing from
/// model.json.
pub fn write_registry(root: &Path) {
    for (v, trained, recipe) in [
        ("1", false, "birdclef"),
        ("2", true, "panns"),
        ("3", true, "birdclef"),
    ] {
        let dir = root.join("versions").join(v);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("bundle.json"),
            serde_json::to_vec_pretty(&bundle_json(&format!("17000000{v}"), trained, recipe))
                .unwrap(),
        )
        .unwrap();
    }
    std::fs::create_dir_all(root.join("versions/.staging-1234")).unwrap();
    std::fs::write(
        root.join("aliases.json"),
        br#"{"production": "2", "staging": "1"}"#,
    )
    .unwrap();
    std::fs::write(
        root.join("model.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "name": "el-silencio",
            "description": "test registry",
            "creation_timestamp": 1_800_000_000_000_i64,
            "versions": [
                {"version": 1, "source": "/runs/a/bundle", "run_id": "r1", "description": "first",
                 "tags": {"gate": "passed"}, "creation_timestamp": 1_800_000_000_001_i64},
                {"version": 2, "source": "/runs/b/bundle", "run_id": "r2", "description": "second",
                 "tags": {}, "creation_timestamp": 1_800_000_000_002_i64}
            ]
        }))
        .unwrap(),
    )
    .unwrap();
}

/// A dashboard configuration over the demo data and fixtures under `dir`.
pub fn config(dir: &Path, server: Option<String>) -> DashboardConfig {
    let runs = dir.join("runs");
    let registry = dir.join("registry");
    write_runs(&runs);
    write_registry(&registry);
    DashboardConfig {
        addr: "127.0.0.1:0".into(),
        data: demo_data(),
        runs,
        registry,
        server,
        cache: Some(dir.join("cache/durations.json")),
        split: SplitOptions::default(),
        clips_per_class: 3,
        scan_threads: 2,
    }
}

/// `/v1/models` of a server running a stable bundle and a canary ensemble, built from the API's
/// own wire types (a renamed field fails to compile here too). The canary carries its `path`,
/// as answers to a caller with the API key do.
pub fn served_models() -> silencio_api::ModelsList {
    use silencio_api::{Blend, Licence, LicenceStatus, ModelInfo};
    let stable = ModelInfo {
        model_version: "1700000002".into(),
        role: "stable".into(),
        share: 0.9,
        loaded_at: "2026-05-01T06:00:00.000Z".into(),
        requests_served: 40,
        windows_inferred: 160,
        client_gone: 1,
        queued_windows: 3,
        replicas: 2,
        max_batch: 8,
        architecture: "efficientnet lite0 + clip head".into(),
        trained: true,
        members: vec!["1700000002".into()],
        blend: None,
        licences: vec![Licence {
            id: "CC-BY-4.0".into(),
            covers: "weights".into(),
        }],
        licence_status: LicenceStatus::Commercial,
        path: None,
    };
    let canary = ModelInfo {
        model_version: "1700000003".into(),
        role: "canary".into(),
        share: 0.1,
        requests_served: 4,
        windows_inferred: 16,
        client_gone: 0,
        queued_windows: 0,
        trained: false,
        members: vec!["1700000002".into(), "1700000001".into()],
        blend: Some(Blend::Rank),
        licences: vec![Licence {
            id: "CC-BY-NC-SA-4.0".into(),
            covers: "training data".into(),
        }],
        licence_status: LicenceStatus::NonCommercial,
        path: Some("/srv/registry/versions/1700000003".into()),
        ..stable.clone()
    };
    silencio_api::ModelsList {
        models: vec![stable, canary],
    }
}

/// The serving process's metrics as its exporter renders them: the same crate and builder
/// (`metrics-exporter-prometheus`, histogram buckets set) recording the metric names of the
/// server's contract. Served over a real socket with `/v1/models`.
pub struct MetricsSource {
    pub recorder: Arc<metrics_exporter_prometheus::PrometheusRecorder>,
}

impl MetricsSource {
    pub fn new() -> Self {
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("silencio_http_request_duration_seconds".into()),
                &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
            )
            .unwrap()
            .set_buckets_for_metric(
                Matcher::Full("silencio_batch_size".into()),
                &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
            )
            .unwrap()
            .set_buckets_for_metric(
                Matcher::Full("silencio_inference_seconds".into()),
                &[0.01, 0.05, 0.1, 0.5, 1.0],
            )
            .unwrap()
            .build_recorder();
        Self {
            recorder: Arc::new(recorder),
        }
    }

    /// Records `n` identify requests of `latency_s` each, in batches of `batch` windows, with
    /// top-1 predictions cycling through `SPECIES`, plus one /metrics scrape.
    pub fn traffic(&self, n: usize, latency_s: f64, batch: f64) {
        metrics::with_local_recorder(self.recorder.as_ref(), || {
            for i in 0..n {
                metrics::counter!("silencio_http_requests_total", "route" => "/v1/identify", "status" => "200").increment(1);
                metrics::histogram!("silencio_http_request_duration_seconds", "route" => "/v1/identify", "status" => "200").record(latency_s);
                metrics::histogram!("silencio_batch_size").record(batch);
                metrics::histogram!("silencio_inference_seconds", "model_version" => "1700000002")
                    .record(0.04);
                metrics::counter!("silencio_predictions_total", "species" => SPECIES[i % SPECIES.len()]).increment(1);
            }
            metrics::counter!("silencio_http_requests_total", "route" => "/v1/identify", "status" => "429").increment(1);
            metrics::counter!("silencio_rejected_total", "reason" => "overloaded").increment(1);
            metrics::counter!("silencio_http_requests_total", "route" => "/metrics", "status" => "200").increment(1);
            metrics::histogram!("silencio_http_request_duration_seconds", "route" => "/metrics", "status" => "200").record(2.0);
            metrics::gauge!("silencio_queue_depth").set(3.0);
        });
    }

    pub fn render(&self) -> String {
        self.recorder.handle().render()
    }

    /// Serves `/metrics` and `/v1/models` on 127.0.0.1 (a free port) on the current runtime.
    pub async fn serve(self: &Arc<Self>) -> std::net::SocketAddr {
        use axum::routing::get;
        let me = Arc::clone(self);
        let app = axum::Router::new()
            .route(
                "/metrics",
                get(move || {
                    let me = Arc::clone(&me);
                    async move { me.render() }
                }),
            )
            .route("/v1/models", get(|| async { axum::Json(served_models()) }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }
}
