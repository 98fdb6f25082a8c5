//! Handler tests over `app(state)` with tower's `oneshot` (no socket), on a real (tiny,
//! random-weight) model bundle and real audio: every endpoint, the bad-upload corpus,
//! overload, cancelled clients, canary/promote/rollback and swaps under requests in flight.
//!
//! Metrics are process-wide, so each test uses its own model name and compares before/after.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use serde_json::{Value, json};
use silencio_server::{AppState, ServerConfig, app};
use tower::ServiceExt;

#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            )
        })
    }
}

async fn send(app: &Router, req: Request<Body>) -> Resp {
    let r = app.clone().oneshot(req).await.unwrap();
    let status = r.status();
    let headers = r.headers().clone();
    let body = axum::body::to_bytes(r.into_body(), usize::MAX)
        .await
        .unwrap()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn upload(uri: &str, content_type: &str, body: Vec<u8>) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .unwrap()
}

/// `r` with the test server's API key.
fn keyed(mut r: Request<Body>) -> Request<Body> {
    r.headers_mut()
        .insert("x-api-key", "test-key".parse().unwrap());
    r
}

fn post_json(uri: &str, key: Option<&str>, body: Value) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
    }
    b.body(Body::from(body.to_string())).unwrap()
}

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    state: AppState,
    app: Router,
}

/// A state with a model `name@1` loaded (warm), built from `tweak(config)`.
async fn fixture(name: &str, tweak: impl FnOnce(&mut ServerConfig)) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let bundle = common::write_bundle(&dir.join("bundle-1"), name, "1");
    let mut cfg = common::config(&dir.join("data"), Some(bundle.clone()));
    tweak(&mut cfg);
    let state = AppState::new(cfg).unwrap();
    state.load_stable(&bundle).await.unwrap();
    let app = app(state.clone());
    Fixture {
        _tmp: tmp,
        dir,
        state,
        app,
    }
}

fn ogg_10s() -> Vec<u8> {
    std::fs::read(common::fixture("crowsetta_forest.ogg")).unwrap()
}

fn assert_error(r: &Resp, status: StatusCode, kind: &str) {
    assert_eq!(
        r.status,
        status,
        "body: {}",
        String::from_utf8_lossy(&r.body)
    );
    let j = r.json();
    assert_eq!(j["error_type"], kind, "{j}");
    assert!(j["error"].as_str().is_some_and(|s| !s.is_empty()), "{j}");
}

fn scores_of(w: &Value) -> Vec<f64> {
    w["species"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["score"].as_f64().unwrap())
        .collect()
}

/// Sum of a metric's samples whose line contains every `needle` (label pairs).
fn metric(text: &str, name: &str, needles: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next().is_some_and(|n| n == name))
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics_text(app: &Router) -> String {
    let r = send(app, get("/metrics")).await;
    assert_eq!(r.status, StatusCode::OK);
    String::from_utf8(r.body).unwrap()
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_follows_the_model_and_health_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = common::write_bundle(&tmp.path().join("b"), "api-ready", "1");
    let state = AppState::new(common::config(&tmp.path().join("data"), None)).unwrap();
    let app = app(state.clone());
    assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::OK);
    assert_error(
        &send(&app, get("/readyz")).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    // No model: identify says so instead of failing.
    let r = send(&app, upload("/v1/identify", "audio/ogg", ogg_10s())).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_error(
        &send(&app, get("/v1/species")).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );

    state.load_stable(&bundle).await.unwrap();
    let r = send(&app, get("/readyz")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["model_version"], "api-ready@1");
    // Warm means a forward pass ran already: the counters show the warm-up is not traffic.
    let m = send(&app, get("/v1/models")).await.json();
    assert_eq!(m["models"][0]["requests_served"], 0);
    // The bundle's directory names the host's file system: only with the API key.
    assert!(m["models"][0].get("path").is_none(), "{m}");
    let keyed = Request::get("/v1/models")
        .header("x-api-key", "test-key")
        .body(Body::empty())
        .unwrap();
    let m = send(&app, keyed).await.json();
    assert!(m["models"][0]["path"].as_str().is_some(), "{m}");

    state.begin_shutdown();
    assert_error(
        &send(&app, get("/readyz")).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
    );
    assert_eq!(send(&app, get("/healthz")).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identify_raw_json_and_query_parameters() {
    let f = fixture("api-identify", |_| {}).await;
    let taxonomy = common::taxonomy();

    let r = send(&f.app, upload("/v1/identify", "audio/ogg", ogg_10s())).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let raw = r.json();
    assert_eq!(raw["model_version"], "api-identify@1");
    assert_eq!(raw["request_id"].as_str().unwrap().len(), 32);
    let windows = raw["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 2, "10 s is two 5 s windows");
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w["start_s"].as_f64().unwrap(), 5.0 * i as f64);
        assert_eq!(w["end_s"].as_f64().unwrap(), 5.0 * (i + 1) as f64);
        let sp = w["species"].as_array().unwrap();
        assert_eq!(sp.len(), 5, "top_k defaults to 5");
        for s in sp {
            let t = taxonomy.iter().find(|t| t.code == s["code"]).unwrap();
            assert_eq!(s["scientific_name"], t.scientific_name.as_str());
            assert_eq!(s["common_name"], t.common_name.as_str());
            assert_eq!(s["class_name"], t.class_name.as_str());
        }
        let sc = scores_of(w);
        assert!(sc.windows(2).all(|p| p[0] >= p[1]), "best first: {sc:?}");
        assert!(sc.iter().all(|s| (0.0..=1.0).contains(s)));
    }
    let t = &raw["timing_ms"];
    for k in ["decode", "queue", "inference", "total"] {
        assert!(t[k].as_f64().unwrap() >= 0.0, "{t}");
    }
    assert!(t["total"].as_f64().unwrap() >= t["decode"].as_f64().unwrap());

    // The same audio as JSON + base64 gets the same scores.
    let b64 = base64::engine::general_purpose::STANDARD.encode(ogg_10s());
    let r = send(
        &f.app,
        post_json(
            "/v1/identify",
            Some("test-key"),
            json!({"audio_base64": b64, "session_id": "walk-1", "latitude": 5.9, "longitude": -75.3,
                   "recorded_at": "2025-03-01T06:30:00Z"}),
        ),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let j = r.json();
    assert_ne!(j["request_id"], raw["request_id"]);
    for (a, b) in j["windows"].as_array().unwrap().iter().zip(windows) {
        assert_eq!(a["species"][0]["code"], b["species"][0]["code"]);
        for (x, y) in scores_of(a).iter().zip(scores_of(b)) {
            assert!((x - y).abs() < 1e-4, "{x} vs {y}");
        }
    }

    // top_k and min_score.
    let r = send(
        &f.app,
        upload("/v1/identify?top_k=2", "audio/ogg", ogg_10s()),
    )
    .await;
    assert_eq!(
        r.json()["windows"][0]["species"].as_array().unwrap().len(),
        2
    );
    let all = scores_of(&windows[0]);
    let cut = all[2];
    let r = send(
        &f.app,
        upload(
            &format!("/v1/identify?top_k=9&min_score={cut}"),
            "audio/ogg",
            ogg_10s(),
        ),
    )
    .await;
    let kept = scores_of(&r.json()["windows"][0]);
    assert!(kept.len() >= 3 && kept.len() < 9, "{kept:?} (cut {cut})");
    assert!(kept.iter().all(|s| *s >= cut - 1e-6));
    assert_error(
        &send(
            &f.app,
            upload("/v1/identify?top_k=many", "audio/ogg", ogg_10s()),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_error(
        &send(
            &f.app,
            upload("/v1/identify?min_score=2", "audio/ogg", ogg_10s()),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );

    // Other formats of the same recording decode too.
    for (file, ct) in [
        ("crowsetta_forest.wav", "audio/wav"),
        ("crowsetta_forest.flac", "audio/flac"),
        ("crowsetta_forest_32k.mp3", "audio/mpeg"),
        ("crowsetta_forest.m4a", "audio/mp4"),
    ] {
        let bytes = std::fs::read(common::fixture(file)).unwrap();
        let r = send(&f.app, upload("/v1/identify", ct, bytes)).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{file}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["windows"].as_array().unwrap().len(), 2, "{file}");
    }
    let m = send(&f.app, get("/v1/models")).await.json();
    assert_eq!(m["models"][0]["requests_served"], 8);
    assert_eq!(m["models"][0]["role"], "stable");
    assert_eq!(m["models"][0]["share"], 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn species_sessions_and_feedback() {
    let f = fixture("api-feedback", |_| {}).await;
    let r = send(&f.app, get("/v1/species")).await;
    assert_eq!(r.status, StatusCode::OK);
    let j = r.json();
    assert_eq!(j["model_version"], "api-feedback@1");
    let codes: Vec<&str> = j["species"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["code"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = common::taxonomy().into_iter().map(|s| s.code).collect();
    assert_eq!(codes, expected);

    // Sessions collect species over requests.
    for _ in 0..2 {
        let r = send(
            &f.app,
            keyed(upload(
                "/v1/identify?session_id=outing-7",
                "audio/ogg",
                ogg_10s(),
            )),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = send(&f.app, keyed(get("/v1/sessions/outing-7"))).await;
    assert_eq!(r.status, StatusCode::OK);
    let s = r.json();
    assert_eq!(s["session_id"], "outing-7");
    assert_eq!(s["requests"], 2);
    assert_eq!(s["windows"], 4);
    assert_eq!(
        s["unique_species"].as_u64().unwrap() as usize,
        s["species"].as_array().unwrap().len()
    );
    assert_error(
        &send(&f.app, keyed(get("/v1/sessions/never-seen"))).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &send(
            &f.app,
            upload("/v1/identify?session_id=bad%20id", "audio/ogg", ogg_10s()),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );

    // Feedback on a real answer.
    let r = send(&f.app, upload("/v1/identify", "audio/ogg", ogg_10s())).await;
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let fb = json!({"request_id": id, "window": 1, "verdict": "wrong", "correct_code": "norcar"});
    assert_error(
        &send(&f.app, post_json("/v1/feedback", None, fb.clone())).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    assert_error(
        &send(
            &f.app,
            post_json("/v1/feedback", Some("wrong-key"), fb.clone()),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let unknown = json!({"request_id": "0123456789abcdef", "window": 0, "verdict": "right"});
    assert_error(
        &send(&f.app, post_json("/v1/feedback", Some("test-key"), unknown)).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let out_of_range = json!({"request_id": id, "window": 2, "verdict": "right"});
    assert_error(
        &send(
            &f.app,
            post_json("/v1/feedback", Some("test-key"), out_of_range),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    );
    let bad_code =
        json!({"request_id": id, "window": 0, "verdict": "wrong", "correct_code": "dodo"});
    assert_error(
        &send(
            &f.app,
            post_json("/v1/feedback", Some("test-key"), bad_code),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid",
    );
    let bad_verdict = json!({"request_id": id, "window": 0, "verdict": "maybe"});
    assert_error(
        &send(
            &f.app,
            post_json("/v1/feedback", Some("test-key"), bad_verdict),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    let r = send(
        &f.app,
        post_json("/v1/feedback", Some("test-key"), fb.clone()),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json(), json!({"stored": true}));
    // A retry of the same feedback is acknowledged, not stored twice.
    let r = send(&f.app, post_json("/v1/feedback", Some("test-key"), fb)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), json!({"stored": false}));
    // X-API-Key works too.
    let req = Request::post("/v1/feedback")
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-api-key", "test-key")
        .body(Body::from(
            json!({"request_id": id, "window": 0, "verdict": "right"}).to_string(),
        ))
        .unwrap();
    assert_eq!(send(&f.app, req).await.status, StatusCode::CREATED);

    let stored =
        silencio_server::feedback::FeedbackStore::read_all(&f.dir.join("data/feedback")).unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].request_id, id);
    assert_eq!(stored[0].window, 1);
    assert_eq!(stored[0].correct_code.as_deref(), Some("norcar"));
    assert!(stored[0].received_at.ends_with('Z'));
}

/// The OpenAPI document is the router's own (utoipa-axum): every documented operation is
/// routed (answered by its handler or its layers, never axum's bare 404 or 405), and the
/// served document is the one [`silencio_server::openapi::document`] builds from the same
/// route lists. (That no route is added undocumented is checked in the crate: routes are added
/// only with `routes!`, which documents them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_route_is_in_the_openapi_document() {
    let f = fixture("api-routes", |_| {}).await;
    let doc = send(&f.app, get("/openapi.json")).await.json();
    assert_eq!(
        doc,
        serde_json::to_value(silencio_server::openapi::document()).unwrap()
    );
    let mut operations = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let uri = path.replace("{id}", "no-such-session");
        for method in item.as_object().unwrap().keys() {
            let Ok(m) = axum::http::Method::from_bytes(method.to_uppercase().as_bytes()) else {
                continue;
            };
            if !["GET", "POST", "PUT", "DELETE", "PATCH"].contains(&m.as_str()) {
                continue;
            }
            // No key and no body: the keyed routes answer 401, the others a 4xx of their own;
            // nothing changes state.
            let req = Request::builder()
                .method(m.clone())
                .uri(&uri)
                .body(Body::empty())
                .unwrap();
            let r = send(&f.app, req).await;
            assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
            assert!(
                !(r.status == StatusCode::NOT_FOUND && r.body.is_empty()),
                "{m} {path} is documented but not routed"
            );
            operations.push(format!("{m} {path}"));
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        [
            "GET /healthz",
            "GET /metrics",
            "GET /readyz",
            "GET /v1/models",
            "GET /v1/sessions/{id}",
            "GET /v1/species",
            "GET /v1/stream",
            "POST /v1/admin/models",
            "POST /v1/admin/promote",
            "POST /v1/admin/rollback",
            "POST /v1/feedback",
            "POST /v1/identify",
        ]
    );
    // A path the router does not serve gets the bare 404 the loop above rules out.
    let r = send(&f.app, get("/v1/nothing-here")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn openapi_docs_and_metrics() {
    let f = fixture("api-metrics", |c| c.sample_share = 1.0).await;
    let r = send(&f.app, get("/openapi.json")).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/identify",
        "/v1/species",
        "/v1/models",
        "/v1/sessions/{id}",
        "/v1/feedback",
        "/v1/stream",
        "/v1/admin/models",
        "/v1/admin/promote",
        "/v1/admin/rollback",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the OpenAPI paths");
    }
    assert!(doc["components"]["schemas"]["IdentifyResponse"].is_object());
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());

    // Swagger UI from the vendored bundle: the page and its assets, no CDN.
    let r = send(&f.app, get("/docs")).await;
    assert!(r.status.is_redirection());
    let r = send(&f.app, get("/docs/")).await;
    assert_eq!(r.status, StatusCode::OK);
    let html = String::from_utf8(r.body).unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("unpkg.com") && !html.contains("cdn"),
        "{html}"
    );
    for asset in [
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "swagger-initializer.js",
    ] {
        let r = send(&f.app, get(&format!("/docs/{asset}"))).await;
        assert_eq!(r.status, StatusCode::OK, "{asset}");
        assert!(r.body.len() > 100, "{asset}");
    }
    let init = send(&f.app, get("/docs/swagger-initializer.js")).await;
    assert!(String::from_utf8_lossy(&init.body).contains("/openapi.json"));

    // Traffic: identify (sampled: share 1), feedback, a session, a rejection.
    let r = send(
        &f.app,
        keyed(upload("/v1/identify?session_id=m1", "audio/ogg", ogg_10s())),
    )
    .await;
    let id = r.json()["request_id"].as_str().unwrap().to_string();
    let fb = json!({"request_id": id, "window": 0, "verdict": "right"});
    assert_eq!(
        send(&f.app, post_json("/v1/feedback", Some("test-key"), fb))
            .await
            .status,
        StatusCode::CREATED
    );
    send(
        &f.app,
        upload("/v1/identify", "text/plain", b"hello".to_vec()),
    )
    .await;
    let sample = f.dir.join("data/samples").join(&id).join("meta.json");
    wait_until("the sample to be saved", || sample.is_file()).await;
    // The sampler counts a sample after it is durable, a moment after the file appears.
    let mut text = metrics_text(&f.app).await;
    let t = Instant::now();
    while metric(&text, "silencio_sampled_total", &[]) < 1.0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "sampled_total never counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        text = metrics_text(&f.app).await;
    }
    for name in silencio_server::metrics::NAMES {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert!(
        metric(
            &text,
            "silencio_http_requests_total",
            &[r#"route="/v1/identify""#, r#"status="200""#]
        ) >= 1.0
    );
    assert!(
        metric(
            &text,
            "silencio_http_requests_total",
            &[r#"route="/v1/identify""#, r#"status="415""#]
        ) >= 1.0
    );
    // Route labels are templates, never raw paths.
    assert!(!text.contains("route=\"/v1/sessions/m1\""));
    assert!(
        metric(
            &text,
            "silencio_http_request_duration_seconds_count",
            &[r#"route="/v1/identify""#]
        ) >= 2.0
    );
    assert_eq!(
        metric(
            &text,
            "silencio_inference_seconds_count",
            &[r#"model_version="api-metrics@1""#]
        ),
        1.0,
        "one batch (two windows of one request)"
    );
    assert_eq!(
        metric(
            &text,
            "silencio_real_time_factor_count",
            &[r#"model_version="api-metrics@1""#]
        ),
        1.0
    );
    assert!(text.contains("silencio_batch_size_bucket{le=\"32\"}"));
    assert!(
        metric(
            &text,
            "silencio_rejected_total",
            &[r#"reason="unsupported_media_type""#]
        ) >= 1.0
    );
    assert!(metric(&text, "silencio_feedback_total", &[r#"verdict="right""#]) >= 1.0);
    assert!(metric(&text, "silencio_sampled_total", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_uploads_get_4xx_and_the_server_stays_healthy() {
    let f = fixture("api-bad", |c| {
        c.max_body_bytes = 2 << 20;
        c.max_duration_s = 30.0;
    })
    .await;
    let ogg = ogg_10s();
    let clip = common::decode(&common::fixture("crowsetta_forest.wav"), 32_000);
    let good_wav = common::wav_s16(&clip, 32_000);
    // A WAV whose data chunk claims 1 GB.
    let mut gigabyte = good_wav.clone();
    gigabyte[40..44].copy_from_slice(&(1u32 << 30).to_le_bytes());
    let mut nan = clip[..32_000].to_vec();
    nan[1234] = f32::NAN;
    let long = std::fs::read(common::soundscape_path()).unwrap();
    let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
        (
            "truncated OGG",
            "audio/ogg",
            ogg[..ogg.len() / 2].to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_stream",
        ),
        (
            "OGG cut inside its headers",
            "audio/ogg",
            ogg[..200].to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_stream",
        ),
        (
            "zero bytes",
            "audio/ogg",
            Vec::new(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "empty_audio",
        ),
        (
            "OGG sent as WAV",
            "audio/wav",
            ogg.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content_type_mismatch",
        ),
        (
            "WAV declaring 1 GB",
            "audio/wav",
            gigabyte,
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_stream",
        ),
        (
            "NaN float WAV",
            "audio/wav",
            common::wav_f32(&nan, 32_000),
            StatusCode::UNPROCESSABLE_ENTITY,
            "non_finite_samples",
        ),
        (
            "random bytes as OGG",
            "audio/ogg",
            (0..5000u32).map(|i| (i * 7919 % 251) as u8).collect(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_stream",
        ),
        (
            "body over the limit",
            "audio/wav",
            vec![0u8; 3 << 20],
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            "recording over max duration",
            "audio/ogg",
            long,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_long",
        ),
        (
            "text/plain",
            "text/plain",
            b"a bird".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "invalid JSON",
            "application/json",
            b"{\"audio_base64\": ".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "JSON without audio",
            "application/json",
            b"{\"session_id\": \"x\"}".to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "invalid base64",
            "application/json",
            br#"{"audio_base64": "not base64!!"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
    ];
    for (what, ct, body, status, kind) in cases {
        let r = send(&f.app, upload("/v1/identify", ct, body)).await;
        assert_eq!(
            r.status,
            status,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["error_type"], kind, "{what}: {}", r.json());
    }
    // No Content-Type at all.
    let req = Request::post("/v1/identify")
        .body(Body::from(ogg.clone()))
        .unwrap();
    assert_error(
        &send(&f.app, req).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    // A lying Content-Length larger than the limit is refused before reading.
    let req = Request::post("/v1/identify")
        .header(header::CONTENT_TYPE, "audio/ogg")
        .header(header::CONTENT_LENGTH, "1073741824")
        .body(Body::from(ogg.clone()))
        .unwrap();
    assert_error(
        &send(&f.app, req).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    );

    assert_eq!(send(&f.app, get("/healthz")).await.status, StatusCode::OK);
    assert_eq!(send(&f.app, get("/readyz")).await.status, StatusCode::OK);
    let r = send(&f.app, upload("/v1/identify", "audio/wav", good_wav)).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&f.app, upload("/v1/identify", "audio/ogg", ogg)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["windows"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overload_answers_429_at_once_and_serves_what_it_admitted() {
    let f = fixture("api-overload", |c| c.queue = 3).await;
    let model = f.state.routing().stable.clone().unwrap();
    // Slow work: the replica holds off batches while the burst arrives.
    let pause = model.engine().unwrap().pause();
    let clip = common::clip_5s_wav();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let app = f.app.clone();
        let req = upload("/v1/identify", "audio/wav", clip.clone());
        tasks.push(tokio::spawn(async move { send(&app, req).await }));
    }
    // The 9 beyond the queue come back at once, while the 3 admitted are still waiting.
    wait_until("9 rejections", || {
        tasks.iter().filter(|t| t.is_finished()).count() >= 9
    })
    .await;
    wait_until("3 queued windows", || model.engine().unwrap().queued() == 3).await;
    assert_eq!(tasks.iter().filter(|t| t.is_finished()).count(), 9);
    // Refused at the door, not after decoding: a fresh request is refused too.
    let r = send(&f.app, upload("/v1/identify", "audio/wav", clip.clone())).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "overloaded");
    assert_eq!(r.headers[header::RETRY_AFTER], "1");
    drop(pause);
    let mut ok = 0;
    let mut busy = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                busy += 1;
                assert!(r.headers.contains_key(header::RETRY_AFTER));
                assert_eq!(r.json()["error_type"], "overloaded");
            }
            s => panic!("unexpected {s}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    assert_eq!((ok, busy), (3, 9));
    assert_eq!(send(&f.app, get("/healthz")).await.status, StatusCode::OK);
    let r = send(&f.app, upload("/v1/identify", "audio/wav", clip)).await;
    assert_eq!(r.status, StatusCode::OK);
    let text = metrics_text(&f.app).await;
    assert!(
        metric(
            &text,
            "silencio_rejected_total",
            &[r#"reason="overloaded""#]
        ) >= 10.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancelled_requests_are_dropped_before_inference() {
    let f = fixture("api-gone", |_| {}).await;
    let model = f.state.routing().stable.clone().unwrap();
    let stats = model.engine().unwrap().stats().clone();
    let before = metric(
        &metrics_text(&f.app).await,
        "silencio_rejected_total",
        &[r#"reason="client_gone""#],
    );
    let pause = model.engine().unwrap().pause();
    let clip = common::clip_5s_wav();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let app = f.app.clone();
        let req = upload("/v1/identify", "audio/wav", clip.clone());
        tasks.push(tokio::spawn(async move { send(&app, req).await }));
    }
    wait_until("3 queued windows", || model.engine().unwrap().queued() == 3).await;
    // The clients hang up (the HTTP futures are dropped).
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        assert!(t.await.unwrap_err().is_cancelled());
    }
    // One that stays.
    let app = f.app.clone();
    let stays =
        tokio::spawn(async move { send(&app, upload("/v1/identify", "audio/wav", clip)).await });
    wait_until("the 4th window", || model.engine().unwrap().queued() == 4).await;
    let windows_before = stats.windows.load(std::sync::atomic::Ordering::SeqCst);
    drop(pause);
    let r = stays.await.unwrap();
    assert_eq!(r.status, StatusCode::OK);
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(stats.client_gone.load(SeqCst), 3);
    assert_eq!(
        stats.windows.load(SeqCst) - windows_before,
        1,
        "only the window of the client that stayed was inferred"
    );
    let after = metric(
        &metrics_text(&f.app).await,
        "silencio_rejected_total",
        &[r#"reason="client_gone""#],
    );
    assert!(after - before >= 3.0, "{before} -> {after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_fill_up_and_short_clips_go_first() {
    let f = fixture("api-batch", |c| c.engine.max_batch = 4).await;
    let model = f.state.routing().stable.clone().unwrap();
    let stats = model.engine().unwrap().stats().clone();
    use std::sync::atomic::Ordering::SeqCst;

    // Four 5 s clips queued together run as one batch of four.
    let pause = model.engine().unwrap().pause();
    let clip = common::clip_5s_wav();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let app = f.app.clone();
        let req = upload("/v1/identify", "audio/wav", clip.clone());
        tasks.push(tokio::spawn(async move { send(&app, req).await }));
    }
    wait_until("4 queued windows", || model.engine().unwrap().queued() == 4).await;
    let batches = stats.batches.load(SeqCst);
    drop(pause);
    for t in tasks {
        assert_eq!(t.await.unwrap().status, StatusCode::OK);
    }
    assert_eq!(stats.batches.load(SeqCst) - batches, 1);

    // A 1-minute upload queued first, a 5 s clip after it: the clip is answered first.
    let pause = model.engine().unwrap().pause();
    let long = std::fs::read(common::soundscape_path()).unwrap();
    let app = f.app.clone();
    let long_task = tokio::spawn(async move {
        let r = send(&app, upload("/v1/identify", "audio/ogg", long)).await;
        (r, Instant::now())
    });
    wait_until("12 queued windows", || {
        model.engine().unwrap().queued() == 12
    })
    .await;
    let app = f.app.clone();
    let short_task = tokio::spawn(async move {
        let r = send(&app, upload("/v1/identify", "audio/wav", clip)).await;
        (r, Instant::now())
    });
    wait_until("13 queued windows", || {
        model.engine().unwrap().queued() == 13
    })
    .await;
    drop(pause);
    let (long_r, long_done) = long_task.await.unwrap();
    let (short_r, short_done) = short_task.await.unwrap();
    assert_eq!(long_r.status, StatusCode::OK);
    assert_eq!(short_r.status, StatusCode::OK);
    assert_eq!(long_r.json()["windows"].as_array().unwrap().len(), 12);
    assert!(
        short_done < long_done,
        "the short clip waited behind the long upload"
    );
}

async fn load_canary(app: &Router, bundle: &Path, share: f64) -> Resp {
    send(
        app,
        post_json(
            "/v1/admin/models",
            Some("test-key"),
            json!({"path": bundle.display().to_string(), "share": share}),
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_share_promote_and_rollback() {
    let f = fixture("api-canary", |c| c.registry = c.data_dir.join("registry")).await;
    let b2 = common::write_bundle(&f.dir.join("bundle-2"), "api-canary", "2");
    let clip = common::clip_5s_wav();

    // Admin needs the key and a valid bundle.
    let r = send(
        &f.app,
        post_json(
            "/v1/admin/models",
            None,
            json!({"path": b2.display().to_string()}),
        ),
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = send(
        &f.app,
        post_json(
            "/v1/admin/models",
            Some("test-key"),
            json!({"path": f.dir.join("nope").display().to_string()}),
        ),
    )
    .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid");
    let r = send(
        &f.app,
        post_json("/v1/admin/models", Some("test-key"), json!({})),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    let r = send(
        &f.app,
        post_json("/v1/admin/promote", Some("test-key"), json!({})),
    )
    .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    let b1 = f.dir.join("bundle-1");
    let r = load_canary(&f.app, &b1, 0.5).await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");

    let r = load_canary(&f.app, &b2, 0.25).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let m = r.json();
    assert_eq!(m["models"][0]["role"], "stable");
    assert_eq!(m["models"][0]["share"], 0.75);
    assert_eq!(m["models"][1]["role"], "canary");
    assert_eq!(m["models"][1]["model_version"], "api-canary@2");

    let mut by_version = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..8 {
        let r = send(&f.app, upload("/v1/identify", "audio/wav", clip.clone())).await;
        assert_eq!(r.status, StatusCode::OK);
        *by_version
            .entry(r.json()["model_version"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(by_version["api-canary@1"], 6);
    assert_eq!(by_version["api-canary@2"], 2);
    let m = send(&f.app, get("/v1/models")).await.json();
    assert_eq!(m["models"][0]["requests_served"], 6);
    assert_eq!(m["models"][1]["requests_served"], 2);
    let text = metrics_text(&f.app).await;
    assert_eq!(
        metric(
            &text,
            "silencio_inference_seconds_count",
            &[r#"model_version="api-canary@1""#]
        ),
        6.0
    );
    assert_eq!(
        metric(
            &text,
            "silencio_inference_seconds_count",
            &[r#"model_version="api-canary@2""#]
        ),
        2.0
    );

    // Promote: v2 takes all traffic; v1 stays loaded for rollback.
    let r = send(
        &f.app,
        post_json("/v1/admin/promote", Some("test-key"), json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let m = r.json();
    assert_eq!(m["models"][0]["model_version"], "api-canary@2");
    assert_eq!(m["models"][0]["share"], 1.0);
    assert_eq!(m["models"][1]["role"], "previous");
    for _ in 0..3 {
        let r = send(&f.app, upload("/v1/identify", "audio/wav", clip.clone())).await;
        assert_eq!(r.json()["model_version"], "api-canary@2");
    }
    assert_eq!(
        send(&f.app, get("/v1/species")).await.json()["model_version"],
        "api-canary@2"
    );

    // Rollback: back to v1; a second rollback has nothing left.
    let r = send(
        &f.app,
        post_json("/v1/admin/rollback", Some("test-key"), json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["models"].as_array().unwrap().len(), 1);
    let r = send(&f.app, upload("/v1/identify", "audio/wav", clip.clone())).await;
    assert_eq!(r.json()["model_version"], "api-canary@1");
    let r = send(
        &f.app,
        post_json("/v1/admin/rollback", Some("test-key"), json!({})),
    )
    .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");

    // Rollback with a canary drops the canary (loaded from the registry this time).
    common::write_bundle(&f.dir.join("data/registry/versions/7"), "api-canary", "7");
    let bad = json!({"registry_version": "../7"});
    let r = send(&f.app, post_json("/v1/admin/models", Some("test-key"), bad)).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "bad_request");
    let by_registry = json!({"registry_version": "7", "share": 1.0});
    let r = send(
        &f.app,
        post_json("/v1/admin/models", Some("test-key"), by_registry),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = send(&f.app, upload("/v1/identify", "audio/wav", clip.clone())).await;
    assert_eq!(r.json()["model_version"], "api-canary@7");
    let r = send(
        &f.app,
        post_json("/v1/admin/rollback", Some("test-key"), json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = send(&f.app, upload("/v1/identify", "audio/wav", clip)).await;
    assert_eq!(r.json()["model_version"], "api-canary@1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_swap_loses_no_request_in_flight() {
    let f = fixture("api-swap", |_| {}).await;
    let b2 = common::write_bundle(&f.dir.join("bundle-2"), "api-swap", "2");
    let old = f.state.routing().stable.clone().unwrap();
    let clip = common::clip_5s_wav();
    let pause = old.engine().unwrap().pause();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let app = f.app.clone();
        let req = upload("/v1/identify", "audio/wav", clip.clone());
        tasks.push(tokio::spawn(async move { send(&app, req).await }));
    }
    wait_until("5 queued windows", || old.engine().unwrap().queued() == 5).await;
    // Swap twice while they wait: v2 as canary for all traffic, promoted, then v1 dropped from
    // the routing table entirely by a second promote of a fresh v3.
    assert_eq!(
        load_canary(&f.app, &b2, 1.0).await.status,
        StatusCode::CREATED
    );
    let r = send(
        &f.app,
        post_json("/v1/admin/promote", Some("test-key"), json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let b3 = common::write_bundle(&f.dir.join("bundle-3"), "api-swap", "3");
    assert_eq!(
        load_canary(&f.app, &b3, 1.0).await.status,
        StatusCode::CREATED
    );
    let r = send(
        &f.app,
        post_json("/v1/admin/promote", Some("test-key"), json!({})),
    )
    .await;
    let listed: Vec<String> = r.json()["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model_version"].as_str().unwrap().to_string())
        .collect();
    assert!(!listed.contains(&"api-swap@1".to_string()), "{listed:?}");
    // New traffic goes to v3 while the old requests still wait on v1.
    let r = send(&f.app, upload("/v1/identify", "audio/wav", clip)).await;
    assert_eq!(r.json()["model_version"], "api-swap@3");
    assert!(tasks.iter().all(|t| !t.is_finished()));
    drop(pause);
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["model_version"], "api-swap@1");
    }
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(old.engine().unwrap().stats().requests.load(SeqCst), 5);
}

/// Two replicas in either thread mode (`own`: each replica a thread of the model's own rayon
/// pool; `shared`: plain threads beside the process-wide pool) answer concurrent requests, and
/// every answer carries the same scores.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_in_either_thread_mode_agree() {
    use silencio_server::config::ReplicaThreads;
    let tmp = tempfile::tempdir().unwrap();
    let bundle = common::write_bundle(&tmp.path().join("b"), "api-threads", "1");
    let mut answers = Vec::new();
    for threads in [ReplicaThreads::Own, ReplicaThreads::Shared] {
        let mut cfg = common::config(&tmp.path().join(format!("{threads:?}")), None);
        cfg.engine.replicas = 2;
        cfg.engine.threads = threads;
        let state = AppState::new(cfg).unwrap();
        state.load_stable(&bundle).await.unwrap();
        let app = app(state);
        let requests = (0..6).map(|_| {
            let app = app.clone();
            async move { send(&app, upload("/v1/identify?top_k=9", "audio/ogg", ogg_10s())).await }
        });
        for r in futures_util::future::join_all(requests).await {
            assert_eq!(r.status, StatusCode::OK, "{threads:?}: {}", r.json());
            answers.push((threads, r.json()["windows"].clone()));
        }
        let m = send(&app, get("/v1/models")).await.json();
        assert_eq!(m["models"][0]["replicas"], 2);
    }
    // Scores of every species per window (near-equal scores of an untrained model would swap
    // places in a top-5); batches of other sizes and threads may round differently.
    let scores = |w: &serde_json::Value| -> Vec<(String, f64)> {
        let mut v = Vec::new();
        for (i, win) in w.as_array().unwrap().iter().enumerate() {
            for s in win["species"].as_array().unwrap() {
                v.push((format!("{i}/{}", s["code"]), s["score"].as_f64().unwrap()));
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let first = scores(&answers[0].1);
    assert!(!first.is_empty());
    for (threads, windows) in &answers {
        let got = scores(windows);
        assert_eq!(got.len(), first.len(), "{threads:?}");
        for (a, b) in got.iter().zip(&first) {
            assert_eq!(a.0, b.0, "{threads:?}");
            assert!((a.1 - b.1).abs() <= 1e-5, "{threads:?}: {a:?} vs {b:?}");
        }
    }
}

/// Issue 16: two servers could share one `--data-dir` (interleaved feedback, the sample quota
/// exceeded). The second is refused while the first lives; once it is gone the lock is free.
#[test]
fn a_data_dir_serves_one_server_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let first = AppState::new(common::config(&data, None)).unwrap();
    let second = AppState::new(common::config(&data, None));
    match second {
        Err(e) => {
            assert_eq!(e.kind(), "conflict");
            assert!(e.to_string().contains("another server"), "{e}");
        }
        Ok(_) => panic!("a second server opened the same data directory"),
    }
    drop(first);
    AppState::new(common::config(&data, None)).unwrap();
}

// ---------------------------------------------------------------- decoding cost

/// Four clients looping 9.6 KB FLACs of constant subframes that decode to 119 s at 383 987 Hz
/// (45.7 M samples, ~2 s of decoding each) took other users' p50 from 28 ms to 5.2 s when
/// decoding was one first-come queue without a sample budget. Now they are refused (413
/// too_many_samples): at once when the header states the length, after the budget when it does
/// not, and in their own lane, so normal clips keep their latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn costly_uploads_are_bounded_and_do_not_delay_short_clips() {
    let f = fixture("cost", |_| {}).await;
    let honest = common::flac::constant_flac(383_987, 119.0, 1000, true);
    let silent = common::flac::constant_flac(383_987, 119.0, 1000, false);
    assert!(silent.len() < 12_000);
    let r = send(&f.app, upload("/v1/identify", "audio/flac", honest)).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_many_samples");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attackers: Vec<_> = (0..4)
        .map(|_| {
            let (app, body, stop) = (f.app.clone(), silent.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = send(&app, upload("/v1/identify", "audio/flac", body.clone())).await;
                    statuses.push((r.status, r.json()["error_type"].clone()));
                }
                statuses
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut took = Vec::new();
    for _ in 0..8 {
        let t = Instant::now();
        let r = send(&f.app, upload("/v1/identify", "audio/ogg", ogg_10s())).await;
        took.push(t.elapsed());
        assert_eq!(r.status, StatusCode::OK);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut refused = 0;
    for a in attackers {
        for (status, kind) in a.await.unwrap() {
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{kind}");
            assert_eq!(kind, "too_many_samples");
            refused += 1;
        }
    }
    assert!(refused >= 4, "the attack ran: {refused} refusals");
    took.sort();
    // Generous: a 10 s clip decodes and scores in tens of ms here; before the fix each waited
    // for whole costly decodes ahead of it (seconds).
    assert!(
        took[4] < Duration::from_millis(1500),
        "median {:?}",
        took[4]
    );
    assert!(took[7] < Duration::from_secs(3), "max {:?}", took[7]);
}

// ---------------------------------------------------------------- sessions and layers

/// Issue 16: without a key, 10 000 requests with fresh session ids evicted every live session,
/// and anyone could read any session. Recording into a session and reading one now need the
/// key; identify without a session stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_need_the_key() {
    let f = fixture("sess-key", |_| {}).await;
    let r = send(
        &f.app,
        keyed(upload(
            "/v1/identify?session_id=guide-1",
            "audio/ogg",
            ogg_10s(),
        )),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    for i in 0..20 {
        let r = send(
            &f.app,
            upload(
                &format!("/v1/identify?session_id=flood-{i}"),
                "audio/ogg",
                ogg_10s(),
            ),
        )
        .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    assert_eq!(f.state.sessions().len(), 1, "unkeyed ids created sessions");
    // In a JSON body too.
    let b64 = base64::engine::general_purpose::STANDARD.encode(ogg_10s());
    let r = send(
        &f.app,
        post_json(
            "/v1/identify",
            None,
            json!({"audio_base64": b64, "session_id": "flood-json"}),
        ),
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    // Open without a session.
    let r = send(&f.app, upload("/v1/identify", "audio/ogg", ogg_10s())).await;
    assert_eq!(r.status, StatusCode::OK);
    // Read with the key only.
    assert_error(
        &send(&f.app, get("/v1/sessions/guide-1")).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let r = send(&f.app, keyed(get("/v1/sessions/guide-1"))).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["requests"], 1);
}

/// A body that sends `first` and then never ends.
fn hanging_body(first: &'static [u8]) -> Body {
    let head = futures_util::stream::once(async move {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(first))
    });
    Body::from_stream(futures_util::StreamExt::chain(
        head,
        futures_util::stream::pending(),
    ))
}

/// The tower layers: past `max_in_flight` requests a new one is shed at once (429
/// `overloaded`, JSON) while health and metrics still answer; a request past the deadline gets
/// 503 `unavailable` (JSON), whatever handler it was in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_in_flight_cap_sheds_and_the_deadline_answers() {
    let f = fixture("layers", |c| {
        c.max_in_flight = 1;
        c.upload.timeout = Duration::from_secs(1);
        c.request_timeout = Duration::from_secs(1);
    })
    .await;
    // A feedback body that never completes holds the one slot (its own read timeout is 30 s).
    let app = f.app.clone();
    let held = tokio::spawn(async move {
        let req = Request::post("/v1/feedback")
            .header(header::CONTENT_TYPE, "application/json")
            .header("x-api-key", "test-key")
            .body(hanging_body(b"{\"request_id\":"))
            .unwrap();
        let t = Instant::now();
        (send(&app, req).await, t.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = send(&f.app, get("/v1/species")).await;
    assert_error(&r, StatusCode::TOO_MANY_REQUESTS, "overloaded");
    assert!(r.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(send(&f.app, get("/healthz")).await.status, StatusCode::OK);
    assert_eq!(send(&f.app, get("/metrics")).await.status, StatusCode::OK);
    let (r, took) = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("the deadline did not fire")
        .unwrap();
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(r.json()["error"].as_str().unwrap().contains("deadline"));
    assert!(took >= Duration::from_millis(900), "{took:?}");
    // The slot is free again.
    assert_eq!(
        send(&f.app, get("/v1/species")).await.status,
        StatusCode::OK
    );
}

/// A recipe unlike `birdclef`'s: 22.05 kHz, 64 mels, 3 s windows every 3 s.
fn odd_recipe() -> silencio_audio::FeatureConfig {
    let mut f = silencio_audio::FeatureConfig::recipe("panns").unwrap();
    f.sample_rate = 22_050;
    f.f_max = 11_000.0;
    f.window.length_s = 3.0;
    f.window.hop_s = 3.0;
    f
}

fn own() -> Vec<silencio_infer::Licence> {
    vec![silencio_infer::Licence::new(
        silencio_infer::licence::OWN,
        "weights (test)",
    )]
}

/// Two bundles with different recipes, sample rates and window lengths in an ensemble file.
fn ensemble_file(dir: &Path) -> std::path::PathBuf {
    common::write_bundle_with(
        &dir.join("a"),
        "ens-a",
        "1",
        silencio_audio::FeatureConfig::recipe("birdclef").unwrap(),
        own(),
    );
    common::write_bundle_with(&dir.join("b"), "ens-b", "1", odd_recipe(), own());
    let file = dir.join("ens.toml");
    std::fs::write(
        &file,
        "name = \"ens-ab\"\n[[members]]\nmodel = \"a\"\nweight = 3\n[[members]]\nmodel = \"b\"\n",
    )
    .unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ensemble_of_mixed_recipes_serves_what_the_facade_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = ensemble_file(tmp.path());
    let state = AppState::new(common::config(&tmp.path().join("data"), None)).unwrap();
    state.load_stable(&file).await.unwrap();
    let app = app(state.clone());

    let audio = ogg_10s();
    let r = send(
        &app,
        upload("/v1/identify?top_k=100", "audio/ogg", audio.clone()),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let j = r.json();
    assert_eq!(j["model_version"], "ens-ab");

    // The same spec through the facade in this process: same windows, same scores.
    let spec = silencio_infer::ModelSpec::parse(file.to_str().unwrap(), tmp.path()).unwrap();
    let device = silencio_infer::parse_device("flex").unwrap();
    let local = silencio_infer::open(&spec, &device, &silencio_infer::OpenOptions::default())
        .unwrap()
        .identify(audio)
        .unwrap();
    let windows = j["windows"].as_array().unwrap();
    assert_eq!(windows.len(), local.windows.len());
    assert_eq!(windows.len(), 2, "a 10 s clip is two 5 s windows");
    for (w, l) in windows.iter().zip(&local.windows) {
        assert_eq!(w["start_s"].as_f64().unwrap(), l.start_s);
        for s in w["species"].as_array().unwrap() {
            let code = s["code"].as_str().unwrap();
            let k = local.species.iter().position(|x| x.code == code).unwrap();
            let want = f64::from(l.scores[k]);
            assert!((s["score"].as_f64().unwrap() - want).abs() < 1e-5, "{code}");
        }
    }

    // /v1/models says what it is.
    let m = send(&app, get("/v1/models")).await.json();
    let stable = &m["models"][0];
    assert_eq!(stable["members"], json!(["ens-a@1", "ens-b@1"]));
    assert_eq!(stable["blend"], "probability");
    assert_eq!(stable["licence_status"], "commercial");
    assert_eq!(stable["requests_served"], 1);
    assert!(
        stable["architecture"]
            .as_str()
            .unwrap()
            .starts_with("ensemble(")
    );
    // Each bundle member ran its windows on its own engine: 2 (5 s) + 4 (3 s) windows.
    assert_eq!(stable["windows_inferred"], 6);

    // The server's limits hold for ensembles too: 130 s is over its 120 s.
    let long = common::wav_s16(&vec![0.0; 130 * 8_000], 8_000);
    let r = send(&app, upload("/v1/identify", "audio/wav", long)).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "too_long");
    // Bad audio is still the client's error, typed, through the ensemble's decoder.
    let bad = send(
        &app,
        upload("/v1/identify", "audio/ogg", b"OggS not really".to_vec()),
    )
    .await;
    assert!(bad.status.is_client_error(), "{}", bad.status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ensemble_registry_version_goes_through_canary_promote_and_rollback() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = tmp.path().join("registry");
    let bundle = common::write_bundle(&registry.join("versions/1"), "reg-single", "1");
    let spec =
        silencio_infer::ModelSpec::parse(ensemble_file(tmp.path()).to_str().unwrap(), &registry)
            .unwrap();
    silencio_infer::spec::pack(&spec, Some("reg-ens"), &registry.join("versions/2")).unwrap();
    std::fs::write(
        registry.join("aliases.json"),
        r#"{"production": "1", "staging": "2"}"#,
    )
    .unwrap();
    let mut cfg = common::config(&tmp.path().join("data"), None);
    cfg.registry = registry.clone();
    let state = AppState::new(cfg).unwrap();
    state.load_stable(&bundle).await.unwrap();
    let app = app(state.clone());
    let version = |app: Router| async move {
        send(&app, upload("/v1/identify", "audio/ogg", ogg_10s()))
            .await
            .json()["model_version"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The ensemble version as a canary taking all traffic.
    let r = send(
        &app,
        post_json(
            "/v1/admin/models",
            Some("test-key"),
            json!({"registry_version": "staging", "share": 1.0}),
        ),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["models"][1]["path"], "registry:staging");
    assert_eq!(version(app.clone()).await, "reg-ens");
    let r = send(
        &app,
        post_json("/v1/admin/promote", Some("test-key"), json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["models"][0]["model_version"], "reg-ens");
    assert_eq!(version(app.clone()).await, "reg-ens");
    let r = send(
        &app,
        post_json("/v1/admin/rollback", Some("test-key"), json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(version(app.clone()).await, "reg-single@1");
    // Loading the ensemble again while the single model is stable works; loading a version
    // that serves as stable is refused.
    let r = send(
        &app,
        post_json(
            "/v1/admin/models",
            Some("test-key"),
            json!({"registry_version": "1"}),
        ),
    )
    .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    // An ensemble that needs BirdNET, in a server built without it: refused at load, typed.
    let with_birdnet = tmp.path().join("with-birdnet.toml");
    std::fs::write(
        &with_birdnet,
        format!(
            "[[members]]\nmodel = {:?}\n[[members]]\nmodel = \"birdnet\"\n",
            bundle.display().to_string()
        ),
    )
    .unwrap();
    let r = send(
        &app,
        post_json(
            "/v1/admin/models",
            Some("test-key"),
            json!({"path": with_birdnet.display().to_string()}),
        ),
    )
    .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "no_birdnet");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn non_commercial_models_load_only_in_a_non_commercial_deployment() {
    let tmp = tempfile::tempdir().unwrap();
    let nc = common::write_bundle_with(
        &tmp.path().join("nc"),
        "lic-nc",
        "1",
        silencio_audio::FeatureConfig::recipe("birdclef").unwrap(),
        vec![silencio_infer::Licence::new(
            "CC-BY-NC-SA-4.0",
            "training data: BirdCLEF 2025",
        )],
    );
    let unknown = common::write_bundle_with(
        &tmp.path().join("unknown"),
        "lic-unknown",
        "1",
        silencio_audio::FeatureConfig::recipe("birdclef").unwrap(),
        Vec::new(),
    );
    let ok = common::write_bundle(&tmp.path().join("ok"), "lic-ok", "1");

    // A commercial deployment (the default): refused at start, and through the admin API.
    let state = AppState::new(common::config(&tmp.path().join("data"), None)).unwrap();
    for refused in [&nc, &unknown] {
        let e = state.load_stable(refused).await.unwrap_err();
        assert_eq!(e.kind(), "licence", "{e}");
    }
    state.load_stable(&ok).await.unwrap();
    let app = app(state.clone());
    let r = send(
        &app,
        post_json(
            "/v1/admin/models",
            Some("test-key"),
            json!({"path": nc.display().to_string()}),
        ),
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "licence");
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("CC-BY-NC-SA-4.0")
    );
    // An ensemble with one non-commercial member is non-commercial.
    let file = tmp.path().join("mixed.toml");
    std::fs::write(
        &file,
        format!(
            "[[members]]\nmodel = {:?}\n[[members]]\nmodel = {:?}\n",
            ok.display().to_string(),
            nc.display().to_string()
        ),
    )
    .unwrap();
    let e = state.load_stable(&file).await.unwrap_err();
    assert_eq!(e.kind(), "licence");
    drop(app);
    drop(state);

    // A non-commercial deployment serves them and says so.
    let mut cfg = common::config(&tmp.path().join("data2"), None);
    cfg.deployment = silencio_infer::Deployment::NonCommercial;
    let state = AppState::new(cfg).unwrap();
    state.load_stable(&file).await.unwrap();
    let m = send(&app_of(&state), get("/v1/models")).await.json();
    assert_eq!(m["models"][0]["licence_status"], "non_commercial");
    let ids: Vec<&str> = m["models"][0]["licences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"CC-BY-NC-SA-4.0") && ids.contains(&"LicenseRef-own"),
        "{ids:?}"
    );
}

fn app_of(state: &AppState) -> Router {
    app(state.clone())
}

/// A bundle's priors.json applies to served answers as the facade applies it offline: the hour
/// of `recorded_at` (a phone knows no recorder) shifts the scores, then the smoothing; without a
/// time only the smoothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundles_priors_apply_with_the_hour_of_recorded_at() {
    use silencio_infer::{PostProcess, RecordingContext};
    let tmp = tempfile::tempdir().unwrap();
    let codes: Vec<String> = common::taxonomy().into_iter().map(|s| s.code).collect();
    let n = codes.len();
    // At 07 h the first species is heard far more often than on average; at 13 h far less.
    let at = |h: u8| RecordingContext {
        recorder: Some("R1".into()),
        hour: Some(h),
    };
    let priors = common::first_species_priors(at(7), at(13), 0.1);
    let bundle = common::write_bundle_post(
        &tmp.path().join("b"),
        "post",
        PostProcess::new(Some(priors)),
    );
    let state = AppState::new(common::config(&tmp.path().join("data"), None)).unwrap();
    state.load_stable(&bundle).await.unwrap();
    let app = app(state.clone());
    let scorer = silencio_infer::open(
        &silencio_infer::ModelSpec::Bundle(bundle.clone()),
        &silencio_infer::parse_device("flex").unwrap(),
        &silencio_infer::OpenOptions::default(),
    )
    .unwrap();
    let scores = |j: &Value, w: usize| -> Vec<f64> {
        codes
            .iter()
            .map(|c| {
                j["windows"][w]["species"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|s| s["code"] == *c)
                    .map(|s| s["score"].as_f64().unwrap())
                    .unwrap()
            })
            .collect()
    };
    for (query, ctx) in [
        (
            "&recorded_at=2024-03-01T07:30:00-05:00",
            RecordingContext::from_timestamp("2024-03-01T07:30:00-05:00"),
        ),
        (
            "&recorded_at=2024-03-01T13:00:00",
            RecordingContext::from_timestamp("2024-03-01T13:00:00"),
        ),
        ("", RecordingContext::default()),
    ] {
        let r = send(
            &app,
            upload(
                &format!("/v1/identify?top_k={n}&min_score=0&location_mode=off{query}"),
                "audio/ogg",
                ogg_10s(),
            ),
        )
        .await;
        let served = r.json();
        let offline = scorer.identify_in(ogg_10s(), &ctx).unwrap();
        assert_eq!(
            served["windows"].as_array().unwrap().len(),
            offline.windows.len()
        );
        for (w, ow) in offline.windows.iter().enumerate() {
            for (a, b) in scores(&served, w).iter().zip(&ow.scores) {
                assert!(
                    (a - *b as f64).abs() < 1e-5,
                    "{query}: window {w}: {a} vs {b}"
                );
            }
        }
    }
    // The hour moved the first species' score: up at dawn, down at noon.
    let first = |q: &str| {
        let app = app.clone();
        let q = q.to_string();
        async move {
            let r = send(
                &app,
                upload(
                    &format!("/v1/identify?top_k={n}&min_score=0&location_mode=off{q}"),
                    "audio/ogg",
                    ogg_10s(),
                ),
            )
            .await;
            scores(&r.json(), 0)[0]
        }
    };
    let (dawn, noon, none) = (
        first("&recorded_at=2024-03-01T07:30:00").await,
        first("&recorded_at=2024-03-01T13:00:00").await,
        first("").await,
    );
    assert!(dawn > none && none > noon, "{dawn} {none} {noon}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn location_changes_answers_only_through_the_documented_filter() {
    let tmp = tempfile::tempdir().unwrap();
    let codes: Vec<String> = common::taxonomy().into_iter().map(|s| s.code).collect();
    let (colombian, european) = (codes[0].as_str(), codes[1].as_str());
    // One species recorded only around the reserve, one only in Europe; the rest unknown.
    let bundle = common::write_bundle_located(
        &tmp.path().join("b"),
        "loc",
        &[
            (colombian, 6.8, -74.3),
            (colombian, 7.1, -73.9),
            (european, 52.5, 13.4),
            (european, 48.9, 2.3),
        ],
    );
    let state = AppState::new(common::config(&tmp.path().join("data"), None)).unwrap();
    state.load_stable(&bundle).await.unwrap();
    let app = app(state.clone());
    let k = codes.len();
    let ask = |query: String| {
        let app = app.clone();
        async move {
            send(
                &app,
                upload(
                    &format!("/v1/identify?top_k={k}&{query}"),
                    "audio/ogg",
                    ogg_10s(),
                ),
            )
            .await
        }
    };
    let score = |j: &Value, code: &str| -> f64 {
        j["windows"][0]["species"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["code"] == code)
            .map_or(0.0, |s| s["score"].as_f64().unwrap())
    };

    let off = ask("location_mode=off".into()).await.json();
    assert!(off.get("location").is_none(), "{off}");
    assert!(score(&off, european) > 0.0 && score(&off, colombian) > 0.0);

    // No place given: the server's default (the El Silencio reserve) applies.
    let home = ask(String::new()).await.json();
    assert_eq!(home["location"]["source"], "server_default");
    assert_eq!(home["location"]["removed"], json!([european]));
    assert_eq!(home["location"]["unknown"], k - 2);
    assert_eq!(score(&home, european), 0.0);
    assert_eq!(score(&home, colombian), score(&off, colombian));
    // Species whose range is unknown pass through unchanged.
    for c in &codes[2..] {
        assert_eq!(score(&home, c), score(&off, c), "{c}");
    }

    // In Berlin it is the other way round.
    let berlin = ask("latitude=52.52&longitude=13.40&recorded_at=2025-05-10".into())
        .await
        .json();
    assert_eq!(berlin["location"]["source"], "request");
    assert_eq!(berlin["location"]["week"], 18);
    assert_eq!(berlin["location"]["removed"], json!([colombian]));
    assert_eq!(score(&berlin, colombian), 0.0);
    assert_eq!(score(&berlin, european), score(&off, european));

    // Reweighting scales by occurrence instead of zeroing.
    let rw = ask("latitude=52.52&longitude=13.40&location_mode=reweight".into())
        .await
        .json();
    assert_eq!(rw["location"]["mode"], "reweight");
    assert!(score(&rw, european) <= score(&off, european));
    assert!(score(&rw, colombian) < 1e-3 * score(&off, colombian).max(1e-9) + 1e-9);

    // Bad places and modes are the client's error.
    for q in [
        "latitude=95&longitude=0",
        "latitude=10",
        "latitude=1&longitude=2&recorded_at=yesterday",
        "location_mode=sometimes",
    ] {
        assert_error(&ask(q.into()).await, StatusCode::BAD_REQUEST, "bad_request");
    }

    // What is expected where: the species list of a place.
    let list = send(&app, get("/v1/species?lat=52.52&lon=13.40"))
        .await
        .json();
    let first = &list["species"][0];
    assert_eq!(first["code"], european);
    assert!(first["occurrence"].as_f64().unwrap() > 0.9);
    let last = list["species"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["code"], colombian);
    assert_eq!(list["location"]["removed"], json!([colombian]));
    let plain = send(&app, get("/v1/species")).await.json();
    assert!(plain.get("location").is_none());
    assert_eq!(plain["species"][0]["code"], codes[0].as_str());
}
