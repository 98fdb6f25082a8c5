//! The dashboard's serving panel against the real `silencio serve`: the binary serves a small
//! random bundle, takes real identify requests (demo clips, audio/ogg) and one corrupt upload;
//! the dashboard (in-process, over a socket) scrapes it and its `/api/serving` figures agree
//! with what the test sent and with the server's own answers. Once the server is stopped the
//! panel reports it down, a state and not an error.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use silencio_dashboard::DashboardConfig;
use silencio_dashboard::serving::{MIN_SCRAPE_INTERVAL, MONITORING_ROUTES};

/// A `silencio serve` child and the address it bound; killed on drop so a failing test
/// leaves nothing running.
struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_server(bundle: &Path, data: &Path) -> Server {
    let (child, addr, _, _) = common::start_serve(
        Command::new(env!("CARGO_BIN_EXE_silencio"))
            .args(["serve", "--addr", "127.0.0.1:0", "--replicas", "1"])
            .args(["--api-key", "dashboard-live-key", "--sample-share", "0"])
            .arg("--model")
            .arg(bundle)
            .arg("--data-dir")
            .arg(data)
            .stdout(Stdio::null()),
    );
    Server {
        child,
        base: format!("http://{addr}"),
    }
}

async fn wait_ready(c: &reqwest::Client, base: &str) {
    let t = Instant::now();
    while !matches!(c.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(t.elapsed() < Duration::from_secs(120), "{base} never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first clip (by name) of each species in the demo's train_audio.
fn demo_clips() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(common::demo().join("train_audio"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs.iter()
        .filter_map(|d| {
            let mut files: Vec<PathBuf> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "ogg"))
                .collect();
            files.sort();
            files.into_iter().next()
        })
        .collect()
}

/// `/api/serving` from the dashboard, after the scrape cache has expired.
async fn serving(c: &reqwest::Client, dashboard: &str) -> Value {
    tokio::time::sleep(MIN_SCRAPE_INTERVAL + Duration::from_millis(200)).await;
    let r = c
        .get(format!("{dashboard}/api/serving"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the panel answers 200 whatever the server");
    r.json().await.unwrap()
}

fn count(s: &Value, route: &str, status: &str) -> f64 {
    s["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"] == route && r["status"] == status)
        .map(|r| r["count"].as_f64().unwrap())
        .sum()
}

/// Requests on the API routes (what the latency histogram covers).
fn api_requests(s: &Value) -> f64 {
    s["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| !MONITORING_ROUTES.contains(&r["route"].as_str().unwrap()))
        .map(|r| r["count"].as_f64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_live_silencio_serve_then_reports_it_down() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = common::write_bundle(&tmp.path().join("bundle"), "live", "7");
    let mut server = spawn_server(&bundle, &tmp.path().join("serve-data"));
    let base = server.base.clone();
    let c = reqwest::Client::new();
    wait_ready(&c, &base).await;

    // Real clips, one per demo species; the client's own round-trip time of each.
    let clips = demo_clips();
    assert!(clips.len() >= 3, "{clips:?}");
    let (mut windows, mut client_s) = (0u64, 0.0f64);
    for clip in &clips {
        let t = Instant::now();
        let r = c
            .post(format!("{base}/v1/identify?top_k=3"))
            .header("content-type", "audio/ogg")
            .body(std::fs::read(clip).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", clip.display());
        let j: Value = r.json().await.unwrap();
        client_s += t.elapsed().as_secs_f64();
        assert_eq!(j["model_version"], "live@7");
        let n = j["windows"].as_array().unwrap().len() as u64;
        assert!(n > 0, "{}", clip.display());
        windows += n;
    }
    // One bad upload: the head of a real OGG file, cut off.
    let head = std::fs::read(&clips[0]).unwrap()[..600].to_vec();
    let t = Instant::now();
    let r = c
        .post(format!("{base}/v1/identify"))
        .header("content-type", "audio/ogg")
        .body(head)
        .send()
        .await
        .unwrap();
    let bad_status = r.status().as_u16();
    let _ = r.bytes().await.unwrap();
    client_s += t.elapsed().as_secs_f64();
    assert!((400..500).contains(&bad_status), "{bad_status}");
    let sent = clips.len() as f64;

    // The dashboard, in-process on its own socket, told about the server.
    let runs = tmp.path().join("runs");
    let registry = tmp.path().join("registry");
    std::fs::create_dir_all(&runs).unwrap();
    std::fs::create_dir_all(&registry).unwrap();
    let config = DashboardConfig {
        addr: "127.0.0.1:0".into(),
        runs,
        registry,
        server: Some(base.clone()),
        cache: None,
        scan_threads: 1,
        ..DashboardConfig::new(common::demo())
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, dashboard_task) = silencio_dashboard::start(config, async {
        let _ = stop_rx.await;
    })
    .await
    .unwrap();
    let dash = format!("http://{addr}");

    // First scrape: everything the test sent, nothing else on the API routes yet.
    let s = serving(&c, &dash).await;
    eprintln!(
        "first scrape: {}",
        serde_json::to_string_pretty(&s).unwrap()
    );
    assert_eq!(s["configured"], true);
    assert_eq!(s["server"], base.as_str());
    assert_eq!(s["up"], true, "{s}");
    assert!(s["error"].is_null(), "{s}");
    assert!(s["models_error"].is_null(), "{s}");
    assert_eq!(count(&s, "/v1/identify", "200"), sent);
    assert_eq!(count(&s, "/v1/identify", &bad_status.to_string()), 1.0);
    // 5xx answers: only /readyz's 503s while the model warmed up, which are monitoring and
    // not counted as API errors.
    let rows = s["requests"].as_array().unwrap();
    let fives = rows
        .iter()
        .filter(|r| r["status"].as_str().unwrap().starts_with('5'));
    assert!(fives.clone().all(|r| r["route"] == "/readyz"), "{rows:?}");
    assert_eq!(s["errors_5xx"].as_f64().unwrap(), 0.0, "{s}");
    let rejected: f64 = s["rejected"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_f64().unwrap())
        .sum();
    assert_eq!(rejected, 1.0, "{}", s["rejected"]);
    // The readiness polls are counted too, so the total is at least what the test sent.
    assert!(s["requests_total"].as_f64().unwrap() >= sent + 2.0);
    assert!(count(&s, "/readyz", "200") >= 1.0);

    // Latency covers the API routes: the identify requests, 200 and 4xx alike.
    let lat = &s["latency"];
    assert_eq!(lat["source"], "histogram");
    assert_eq!(lat["count"].as_f64().unwrap(), api_requests(&s));
    assert_eq!(lat["count"].as_f64().unwrap(), sent + 1.0);
    let mean = lat["mean_s"].as_f64().unwrap();
    // The server times each request inside the client's round trip.
    assert!(
        mean > 0.0 && mean * (sent + 1.0) <= client_s + 1e-6,
        "server mean {mean} s, client total {client_s} s"
    );
    let (p50, p95, p99) = (
        lat["p50_s"].as_f64().unwrap(),
        lat["p95_s"].as_f64().unwrap(),
        lat["p99_s"].as_f64().unwrap(),
    );
    assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{lat}");

    // Every window went through one batch and got one top-1 prediction.
    let b = &s["batches"];
    let batches = b["count"].as_f64().unwrap();
    assert!(batches >= 1.0 && batches <= windows as f64, "{b}");
    let batched = b["mean"].as_f64().unwrap() * batches;
    assert!((batched - windows as f64).abs() < 1e-6, "{b} vs {windows}");
    let per_bucket: f64 = b["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["count"].as_f64().unwrap())
        .sum();
    assert_eq!(per_bucket, batches);
    let predicted: f64 = s["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[1].as_f64().unwrap())
        .sum();
    assert_eq!(predicted, windows as f64);
    let inference = s["inference"].as_array().unwrap();
    assert_eq!(inference.len(), 1, "{inference:?}");
    assert_eq!(inference[0]["model_version"], "live@7");
    assert_eq!(inference[0]["count"].as_f64().unwrap(), batches);
    assert!(inference[0]["mean_s"].as_f64().unwrap() > 0.0);
    assert_eq!(s["queue_depth"], 0.0);

    // The loaded bundle, as the server's /v1/models lists it, in the panel's rows.
    let models = s["models"].as_array().unwrap();
    assert_eq!(models.len(), 1, "{models:?}");
    let m = &models[0];
    assert_eq!(m["version"], "live@7");
    assert_eq!(m["role"], "stable");
    assert_eq!(m["share_pct"], 100.0);
    assert_eq!(m["requests"].as_f64().unwrap(), sent);
    assert_eq!(m["windows"].as_u64().unwrap(), windows);
    assert_eq!(
        (m["queued"].as_u64(), m["replicas"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(m["trained"], false, "a random-weight bundle");
    assert!(!m["loaded_at"].as_str().unwrap().is_empty(), "{m}");
    assert!(s["history"].as_array().unwrap().is_empty());

    // More identify requests, then a second scrape: one history point with their rate.
    for clip in &clips[..2] {
        let r = c
            .post(format!("{base}/v1/identify"))
            .header("content-type", "audio/ogg")
            .body(std::fs::read(clip).unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let s2 = serving(&c, &dash).await;
    assert_eq!(s2["up"], true, "{s2}");
    assert_eq!(count(&s2, "/v1/identify", "200"), sent + 2.0);
    let h = s2["history"].as_array().unwrap();
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h[0]["requests_per_s"].as_f64().unwrap() > 0.0, "{h:?}");
    assert!(h[0]["p95_s"].as_f64().unwrap() > 0.0, "{h:?}");

    // A scrape with no client traffic since the last: the dashboard's own polling is
    // monitoring, so the API request rate is zero and the API request count unchanged.
    let s3 = serving(&c, &dash).await;
    let h = s3["history"].as_array().unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(
        api_requests(&s3),
        api_requests(&s2),
        "API requests counted without client traffic: {:?}",
        s3["requests"]
    );
    assert_eq!(h[1]["requests_per_s"], 0.0, "{h:?}");

    // Stop the server gracefully (SIGTERM: it drains and exits 0).
    let pid = server.child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let t = Instant::now();
    let status = loop {
        if let Some(st) = server.child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(60), "server did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");

    // Down is a state of the panel: 200, up false, why, and no figures.
    let down = serving(&c, &dash).await;
    eprintln!("after stop: {down}");
    assert_eq!(down["configured"], true);
    assert_eq!(down["server"], base.as_str());
    assert_eq!(down["up"], false);
    let why = down["error"].as_str().unwrap();
    assert!(why.contains(base.trim_start_matches("http://")), "{why}");
    assert!(down["models"].is_null());
    assert_eq!(down["requests_total"], 0.0);
    assert!(down["latency"].is_null());

    stop_tx.send(()).unwrap();
    dashboard_task.await.unwrap().unwrap();
}
