//! The dashboard's JSON routes, audio route and report pages, driven through the router
//! (`oneshot`, no socket) against the real demo dataset, a runs directory of reports written by
//! `silencio_eval`, and a local registry; the serving panel against a real socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use serde_json::Value;
use silencio_dashboard::{Dashboard, DashboardConfig, app};
use tower::ServiceExt as _;

async fn get(
    state: &Arc<Dashboard>,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let mut req = Request::builder().uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app(Arc::clone(state))
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap()
        .to_vec();
    (status, headers, body)
}

async fn get_json(state: &Arc<Dashboard>, uri: &str) -> Value {
    let (status, _, body) = get(state, uri, &[]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).unwrap()
}

fn open(dir: &std::path::Path, server: Option<String>) -> Arc<Dashboard> {
    Dashboard::open(common::config(dir, server)).unwrap()
}

#[tokio::test]
async fn dataset_counts_splits_and_cached_durations() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(dir.path(), None);
    let data = common::demo_data();
    let taxonomy = silencio_data::Taxonomy::from_csv(&data.join("taxonomy.csv")).unwrap();
    let (records, _) = silencio_data::read_train_csv(&data.join("train.csv")).unwrap();
    let usable = silencio_data::usable_records(&records, &taxonomy);

    // Before the scan: durations are not complete, the rest is there.
    let d = get_json(&state, "/api/dataset").await;
    assert_eq!(d["durations"]["complete"], false);
    assert_eq!(d["n_species"], taxonomy.len());
    assert_eq!(d["n_recordings"], usable.len());

    // Species per class from the taxonomy, recordings per class from the rows.
    let mut species_per_class: BTreeMap<String, u64> = BTreeMap::new();
    for s in taxonomy.species() {
        *species_per_class.entry(s.class_name.clone()).or_default() += 1;
    }
    let mut rec_per_class: BTreeMap<String, u64> = BTreeMap::new();
    let mut rec_per_coll: BTreeMap<String, u64> = BTreeMap::new();
    for r in &usable {
        let c = &taxonomy.species()[taxonomy.index_of(&r.primary_label).unwrap()].class_name;
        *rec_per_class.entry(c.clone()).or_default() += 1;
        *rec_per_coll.entry(r.collection.clone()).or_default() += 1;
    }
    for c in d["classes"].as_array().unwrap() {
        let name = c["class_name"].as_str().unwrap();
        assert_eq!(c["species"], species_per_class[name], "{name}");
        assert_eq!(
            c["recordings"].as_u64().unwrap(),
            rec_per_class.get(name).copied().unwrap_or(0),
            "{name}"
        );
    }
    assert_eq!(
        d["classes"].as_array().unwrap().len(),
        species_per_class.len()
    );
    for c in d["collections"].as_array().unwrap() {
        assert_eq!(
            c["recordings"],
            rec_per_coll[c["collection"].as_str().unwrap()]
        );
    }
    let rating_total: u64 = d["ratings"]["bins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["recordings"].as_u64().unwrap())
        .sum::<u64>()
        + d["ratings"]["missing"].as_u64().unwrap()
        + d["ratings"]["out_of_range"].as_u64().unwrap();
    assert_eq!(rating_total, usable.len() as u64);

    // Splits agree with the data crate's split table (what `silencio split` writes).
    let table = silencio_data::split_table(&records, &taxonomy, 0.2, 0.7, 0);
    let count = |col: usize, v: &str| {
        table
            .lines()
            .skip(1)
            .filter(|l| l.split(',').nth(col) == Some(v))
            .count() as u64
    };
    let s = &d["splits"];
    assert_eq!(s["train"].as_u64().unwrap(), count(3, "train"));
    assert_eq!(s["valid"].as_u64().unwrap(), count(3, "valid"));
    assert_eq!(s["initial"].as_u64().unwrap(), count(4, "initial"));
    assert_eq!(s["retrain"].as_u64().unwrap(), count(4, "retrain"));
    assert!(s["valid"].as_u64().unwrap() > 0 && s["retrain"].as_u64().unwrap() > 0);

    // The scan: every clip's duration equals a full decode's, and the cache is written.
    let cache = dir.path().join("cache/durations.json");
    state.dataset().scan_durations(Some(&cache), 2);
    let d = get_json(&state, "/api/dataset").await;
    let du = &d["durations"];
    assert_eq!(du["complete"], true);
    assert_eq!(du["scanned"], usable.len());
    assert_eq!(du["failed"], 0);
    assert_eq!(du["from_cache"], 0);
    let binned: u64 = du["bins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["recordings"].as_u64().unwrap())
        .sum();
    assert_eq!(binned, usable.len() as u64);
    let mut total = 0.0;
    for r in &usable {
        let x = silencio_audio::decode_path(
            data.join("train_audio").join(&r.filename),
            &silencio_audio::DecodeOptions {
                target_rate: None,
                max_duration_s: 3600.0,
                max_input_samples: None,
            },
        )
        .unwrap();
        assert_eq!(
            state.dataset().durations().get(&r.filename),
            Some(x.info.duration_s)
        );
        total += x.info.duration_s;
    }
    assert!((du["total_hours"].as_f64().unwrap() - total / 3600.0).abs() < 1e-9);
    assert!(cache.is_file());

    // A second dashboard reads every duration from the cache.
    let again = open(dir.path(), None);
    again.dataset().scan_durations(Some(&cache), 1);
    let du2 = get_json(&again, "/api/dataset").await["durations"].clone();
    assert_eq!(du2["from_cache"], usable.len());
    assert_eq!(du2["bins"], du["bins"]);
}

#[tokio::test]
async fn clips_use_the_current_models_features_and_play_the_original_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(dir.path(), None);
    let c = get_json(&state, "/api/clips").await;
    // Registry fixture: production is version 2 with the `panns` recipe.
    assert_eq!(c["features"]["recipe"], "panns");
    assert!(
        c["features_source"]
            .as_str()
            .unwrap()
            .contains("version 2 (production)")
    );
    let cfg = silencio_audio::FeatureConfig::recipe("panns").unwrap();
    let frames = cfg.frames_per_window();
    let clips = c["clips"].as_array().unwrap();
    assert!(!clips.is_empty());
    let mut per_class: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for clip in clips {
        assert!(clip["error"].is_null(), "{clip}");
        per_class
            .entry(clip["class_name"].as_str().unwrap())
            .or_default()
            .push(clip["species"].as_str().unwrap());
        let mel = &clip["mel"];
        assert_eq!(mel["n_mels"], cfg.n_mels);
        assert_eq!(mel["n_frames"], frames);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(mel["data_b64"].as_str().unwrap())
            .unwrap();
        assert_eq!(bytes.len(), cfg.n_mels * frames);
        // Real audio spans the range (not a constant picture).
        assert_eq!(bytes.iter().max(), Some(&255));
        assert!(bytes.iter().min().unwrap() < &64);
        let wf = &clip["waveform"];
        let (lo, hi) = (wf["min"].as_array().unwrap(), wf["max"].as_array().unwrap());
        assert_eq!(lo.len(), hi.len());
        assert!(lo.len() > 100);
        assert!(
            lo.iter()
                .zip(hi)
                .all(|(a, b)| a.as_f64().unwrap() <= b.as_f64().unwrap())
        );
        assert!(hi.iter().any(|v| v.as_f64().unwrap() > 0.01));
        let (a, b) = (
            clip["window_start_s"].as_f64().unwrap(),
            clip["window_end_s"].as_f64().unwrap(),
        );
        assert!((b - a - cfg.window.length_s).abs() < 1e-9);

        // The audio route serves exactly the original file.
        let file = clip["filename"].as_str().unwrap();
        let url = clip["audio_url"].as_str().unwrap();
        let (status, headers, body) = get(&state, url, &[]).await;
        assert_eq!(status, StatusCode::OK, "{url}");
        assert_eq!(headers[header::CONTENT_TYPE], "audio/ogg");
        let original = std::fs::read(common::demo_data().join("train_audio").join(file)).unwrap();
        assert_eq!(body, original);
    }
    // At most 3 per class, different species first: Aves has 5 species with recordings.
    assert_eq!(per_class["Aves"].len(), 3);
    let mut aves = per_class["Aves"].clone();
    aves.dedup();
    assert_eq!(aves.len(), 3, "{aves:?}");
    assert_eq!(per_class["Insecta"], vec!["fruitfly"]);
}

#[tokio::test]
async fn audio_route_serves_only_listed_files_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(dir.path(), None);
    let (records, _) =
        silencio_data::read_train_csv(&common::demo_data().join("train.csv")).unwrap();
    let file = &records[0].filename;
    let original = std::fs::read(common::demo_data().join("train_audio").join(file)).unwrap();
    let url = format!("/audio/{file}");
    let (status, headers, body) = get(&state, &url, &[("range", "bytes=10-19")]).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(body, original[10..20]);
    assert_eq!(
        headers[header::CONTENT_RANGE],
        format!("bytes 10-19/{}", original.len())
    );
    let (status, _, _) = get(
        &state,
        &url,
        &[("range", &format!("bytes={}-", original.len()))],
    )
    .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);

    for bad in [
        "/audio/../taxonomy.csv",
        "/audio/%2E%2E/train.csv",
        "/audio/..%2Ftrain.csv",
        "/audio/%2Fetc%2Fpasswd",
        "/audio/gretit1/NOT_LISTED.ogg",
        "/audio/gretit1",
    ] {
        let (status, _, body) = get(&state, bad, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
        if !body.is_empty() {
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["error_type"], "not_found", "{bad}");
        }
    }
}

#[tokio::test]
async fn a_train_csv_naming_paths_outside_the_tree_serves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(data.join("train_audio/sp")).unwrap();
    std::fs::copy(
        common::demo_data().join("taxonomy.csv"),
        data.join("taxonomy.csv"),
    )
    .unwrap();
    std::fs::write(dir.path().join("secret.ogg"), b"secret").unwrap();
    std::fs::write(
        data.join("train.csv"),
        "primary_label,secondary_labels,type,filename,collection,rating\n\
         gretit1,[],[],../../secret.ogg,XC,4.0\n\
         gretit1,[],[],/etc/hostname,XC,4.0\n",
    )
    .unwrap();
    let mut cfg = DashboardConfig::new(&data);
    cfg.cache = None;
    cfg.runs = dir.path().join("no-runs");
    cfg.registry = dir.path().join("no-registry");
    let state = Dashboard::open(cfg).unwrap();
    for uri in [
        "/audio/../../secret.ogg",
        "/audio//etc/hostname",
        "/audio/%2Fetc%2Fhostname",
    ] {
        let (status, _, body) = get(&state, uri, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_ne!(body, b"secret");
    }
    // Nothing else is broken by such rows: the panels still answer.
    let r = get_json(&state, "/api/report").await;
    assert_eq!(r["available"], false);
    assert!(r["reason"].as_str().unwrap().contains("report.json"));
    let m = get_json(&state, "/api/models").await;
    assert_eq!(m["available"], false);
}

#[tokio::test]
async fn report_is_the_newest_run_with_its_sets_and_pages() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(dir.path(), None);
    let (valid, mixed, weak) = common::write_runs(&dir.path().join("runs"));
    let r = get_json(&state, "/api/report").await;
    assert_eq!(r["available"], true);
    let l = &r["latest"];
    assert_eq!(l["experiment"], "demo");
    assert_eq!(l["run"], "demo-2");
    let sets = l["sets"].as_array().unwrap();
    let names: Vec<&str> = sets.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["valid", "mixed", "suite:weak"]);
    for (set, want) in sets.iter().zip([&valid, &mixed, &weak]) {
        let got: silencio_eval::EvalReport = serde_json::from_value(set["report"].clone()).unwrap();
        assert_eq!(got.title, want.title);
        assert_eq!(got.slices.len(), want.slices.len());
        for (g, w) in got.per_class.iter().zip(&want.per_class) {
            assert_eq!(g.species, w.species);
            assert_eq!(g.ap.is_some(), w.ap.is_some());
            if let (Some(a), Some(b)) = (g.ap, w.ap) {
                assert!((a - b).abs() < 1e-12);
            }
        }
    }
    assert_eq!(sets[0]["html_url"], "/report/valid");
    assert_eq!(sets[1]["html_url"], "/report/mixed");
    assert!(
        sets[2]["html_url"].is_null(),
        "suite-weak.html was not written"
    );

    // Recent runs: newest first, the broken one listed with its error.
    let recent = r["recent"].as_array().unwrap();
    let order: Vec<&str> = recent
        .iter()
        .map(|h| h["experiment"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["demo", "older", "broken"]);
    assert!(
        recent[2]["error"]
            .as_str()
            .unwrap()
            .contains("invalid_json")
    );
    assert_eq!(
        recent[1]["macro_auc"].as_f64(),
        silencio_eval::EvalReport::read_json(dir.path().join("runs/older/run-1/report.json"))
            .unwrap()
            .overall
            .macro_auc
    );

    let (status, headers, body) = get(&state, "/report/valid", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert_eq!(String::from_utf8(body).unwrap(), valid.to_html());
    for bad in [
        "/report/suite-weak",
        "/report/..%2F..%2Fetc",
        "/report/nope",
    ] {
        let (status, _, _) = get(&state, bad, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
    }
}

#[tokio::test]
async fn models_lists_registry_versions_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(dir.path(), None);
    let m = get_json(&state, "/api/models").await;
    assert_eq!(m["available"], true);
    assert_eq!(m["name"], "el-silencio");
    assert_eq!(m["current"], serde_json::json!(["2", "production"]));
    let versions = m["versions"].as_array().unwrap();
    let names: Vec<&str> = versions
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    // 3 exists only as a directory; .staging-1234 is a copy in progress.
    assert_eq!(names, ["3", "2", "1"]);
    assert_eq!(versions[1]["aliases"], serde_json::json!(["production"]));
    assert_eq!(versions[2]["aliases"], serde_json::json!(["staging"]));
    assert_eq!(versions[2]["tags"]["gate"], "passed");
    assert_eq!(versions[1]["run_id"], "r2");
    assert!(versions[0]["run_id"].is_null());
    let b = &versions[1]["bundle"];
    assert_eq!(b["architecture"], "efficientnet lite0 + clip head");
    assert_eq!(b["recipe"], "panns");
    assert_eq!(b["trained"], true);
    assert_eq!(b["num_classes"], common::SPECIES.len());
    assert_eq!(b["species"], common::SPECIES.len());
    assert_eq!(versions[2]["bundle"]["trained"], false);

    // A corrupt bundle.json is reported on its version, the others still listed.
    std::fs::write(
        dir.path().join("registry/versions/1/bundle.json"),
        b"{\"truncated\": ",
    )
    .unwrap();
    let m = get_json(&state, "/api/models").await;
    let v1 = &m["versions"][2];
    assert!(v1["bundle"].is_null());
    assert!(
        v1["bundle_error"]
            .as_str()
            .unwrap()
            .contains("invalid_json")
    );
    assert!(m["versions"][1]["bundle"].is_object());
}

#[tokio::test]
async fn serving_not_configured_and_down_are_states_not_errors() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(dir.path(), None);
    let s = get_json(&state, "/api/serving").await;
    assert_eq!(s["configured"], false);
    assert_eq!(s["up"], false);

    // A port nobody listens on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let state = open(dir.path(), Some(format!("http://{addr}")));
    let s = get_json(&state, "/api/serving").await;
    assert_eq!(s["configured"], true);
    assert_eq!(s["up"], false);
    assert!(s["error"].as_str().unwrap().contains(&addr.to_string()));
    assert!(s["history"].as_array().unwrap().is_empty());

    let bad = DashboardConfig {
        server: Some("localhost:8080".into()),
        ..common::config(dir.path(), None)
    };
    let e = Dashboard::open(bad).unwrap_err();
    assert_eq!(e.kind(), "invalid_option");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_figures_from_a_live_metrics_endpoint() {
    let source = Arc::new(common::MetricsSource::new());
    source.traffic(40, 0.08, 4.0);
    let addr = source.serve().await;
    let dir = tempfile::tempdir().unwrap();
    let state = open(dir.path(), Some(format!("http://{addr}/")));

    let s = get_json(&state, "/api/serving").await;
    assert_eq!(s["up"], true, "{s}");
    // 40 ok + 1 rejected + 1 scrape.
    assert_eq!(s["requests_total"], 42.0);
    assert_eq!(s["errors_5xx"], 0.0);
    assert_eq!(s["queue_depth"], 3.0);
    assert_eq!(s["rejected"]["overloaded"], 1.0);
    let lat = &s["latency"];
    assert_eq!(lat["source"], "histogram");
    // Monitoring routes are left out: 40 API requests of 80 ms, all in (0.05, 0.1].
    assert_eq!(lat["count"], 40.0);
    assert!((lat["mean_s"].as_f64().unwrap() - 0.08).abs() < 1e-9);
    let p95 = lat["p95_s"].as_f64().unwrap();
    assert!(p95 > 0.05 && p95 <= 0.1, "{p95}");
    let b = &s["batches"];
    assert_eq!(b["count"], 40.0);
    assert_eq!(b["mean"], 4.0);
    let four = b["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["le"] == "4")
        .unwrap();
    assert_eq!(four["count"], 40.0);
    assert_eq!(s["inference"][0]["model_version"], "1700000002");
    assert!((s["inference"][0]["mean_s"].as_f64().unwrap() - 0.04).abs() < 1e-9);
    let preds = s["predictions"].as_array().unwrap();
    assert_eq!(preds.len(), common::SPECIES.len());
    assert_eq!(
        preds.iter().map(|p| p[1].as_f64().unwrap()).sum::<f64>(),
        40.0
    );
    // /v1/models (the API's own type) becomes the panel's rows, every field in a column the
    // page labels, and nothing of the host's file system.
    assert_eq!(s["models_error"], Value::Null);
    let rows = s["models"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0],
        serde_json::json!({
            "version": "1700000002",
            "role": "stable",
            "share_pct": 90.0,
            "loaded_at": "2026-05-01T06:00:00.000Z",
            "requests": 40,
            "windows": 160,
            "client_gone": 1,
            "queued": 3,
            "replicas": 2,
            "max_batch": 8,
            "architecture": "efficientnet lite0 + clip head",
            "trained": true,
            "members": ["1700000002"],
            "blend": null,
            "licences": ["CC-BY-4.0 (weights)"],
            "licence_status": "commercial use allowed",
        })
    );
    let canary = &rows[1];
    assert_eq!(canary["version"], "1700000003");
    assert_eq!(canary["role"], "canary");
    assert_eq!(canary["share_pct"], 10.0);
    assert_eq!(canary["trained"], false);
    assert_eq!(canary["blend"], "rank");
    assert_eq!(
        canary["members"],
        serde_json::json!(["1700000002", "1700000001"])
    );
    assert_eq!(canary["licences"][0], "CC-BY-NC-SA-4.0 (training data)");
    assert_eq!(canary["licence_status"], "non-commercial only");
    assert!(
        !s.to_string().contains("/srv/registry"),
        "the bundle path leaked"
    );
    let (_, _, js) = get(&state, "/assets/dashboard.js", &[]).await;
    let js = String::from_utf8(js).unwrap();
    for key in rows[0].as_object().unwrap().keys() {
        assert!(
            js.contains(&format!("m.{key}")),
            "the page shows no column for {key}"
        );
    }
    assert!(s["history"].as_array().unwrap().is_empty());

    // More traffic, then a second scrape: one history point with the rate between them.
    source.traffic(20, 0.3, 8.0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = get_json(&state, "/api/serving").await;
    let h = s["history"].as_array().unwrap();
    assert_eq!(h.len(), 1);
    let rate = h[0]["requests_per_s"].as_f64().unwrap();
    // 21 API requests (20 ok + 1 rejected) over a bit more than 1.1 s.
    assert!(rate > 0.0 && rate < 21.0 / 1.1 + 1e-9, "{rate}");
    let recent_p95 = h[0]["p95_s"].as_f64().unwrap();
    assert!(recent_p95 > 0.25 && recent_p95 <= 0.5, "{recent_p95}");
    assert_eq!(h[0]["mean_batch"], 8.0);

    // A scrape right after is answered from the last one (no new point).
    let s = get_json(&state, "/api/serving").await;
    assert_eq!(s["history"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn page_and_vendored_assets_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let state = open(dir.path(), None);
    let (status, _, body) = get(&state, "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let html = String::from_utf8(body).unwrap();
    // Nothing loads from outside: every script and stylesheet is a local path.
    for needle in ["src=\"http", "href=\"http", "//cdn"] {
        assert!(!html.contains(needle), "{needle}");
    }
    for asset in [
        "/assets/uPlot.iife.min.js",
        "/assets/uPlot.min.css",
        "/assets/dashboard.js",
        "/assets/dashboard.css",
        "/assets/uPlot.LICENSE",
    ] {
        assert!(
            html.contains(asset) || asset.ends_with("LICENSE"),
            "{asset} not referenced"
        );
        let (status, _, body) = get(&state, asset, &[]).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
        assert!(body.len() > 500, "{asset}");
    }
    let (_, _, js) = get(&state, "/assets/uPlot.iife.min.js", &[]).await;
    assert!(String::from_utf8_lossy(&js).contains("uPlot"));
}
