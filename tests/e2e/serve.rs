//! End to end over real sockets: the HTTP API with reqwest, the tour-guide WebSocket with real
//! audio, the exposition format checked by `promtool check metrics`, graceful shutdown with a
//! request in flight, and the `silencio serve` binary under SIGTERM.
//!
//! `promtool` comes from Debian's `prometheus` package; `$SILENCIO_PROMTOOL` names the binary
//! (default `promtool`), and `SILENCIO_SKIP_PROMTOOL=1` skips that one check.
#![allow(clippy::unwrap_used)]

use crate::common;
// The deploy/ files (Prometheus rules and config, the real prometheus against a real server):
// here rather than in a test binary of their own, which would link all of Burn again.
#[path = "deploy.rs"]
mod deploy;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use silencio_server::{AppState, ServerConfig};
use tokio_tungstenite::tungstenite::Message;

struct Running {
    addr: SocketAddr,
    state: AppState,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<silencio_server::Result<()>>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

async fn wait_ready(client: &reqwest::Client, url: &str) {
    let t = Instant::now();
    loop {
        if let Ok(r) = client.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{url} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The test config serving a fresh bundle `name@1`, its files under `tmp`.
fn served(name: &str, tmp: &std::path::Path) -> ServerConfig {
    let bundle = common::write_bundle(&tmp.join("b"), name, "1");
    common::config(&tmp.join("data"), Some(bundle))
}

/// `POST url` with the real OGG fixture `crowsetta_forest.ogg`.
async fn identify_forest_ogg(c: &reqwest::Client, url: &str) -> reqwest::Response {
    let ogg = std::fs::read(common::fixture("crowsetta_forest.ogg")).unwrap();
    c.post(url)
        .header("content-type", "audio/ogg")
        .header("x-api-key", "test-key")
        .body(ogg)
        .send()
        .await
        .unwrap()
}

/// Opens a WebSocket to `url` with the test server's API key (a stream with a session needs it).
async fn connect_keyed(
    url: impl AsRef<str>,
) -> tokio_tungstenite::tungstenite::Result<(
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::handshake::client::Response,
)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.as_ref().into_client_request().unwrap();
    req.headers_mut()
        .insert("x-api-key", "test-key".parse().unwrap());
    tokio_tungstenite::connect_async(req).await
}

async fn start(cfg: ServerConfig) -> Running {
    let server = silencio_server::bind(cfg).await.unwrap();
    let addr = server.local_addr().unwrap();
    let state = server.state().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(async move {
        let _ = rx.await;
    }));
    let r = Running {
        addr,
        state,
        stop: Some(tx),
        handle,
    };
    wait_ready(&reqwest::Client::new(), &r.url("/readyz")).await;
    r
}

fn promtool_check(text: &str) {
    if std::env::var_os("SILENCIO_SKIP_PROMTOOL").is_some() {
        eprintln!("SILENCIO_SKIP_PROMTOOL set: promtool check skipped");
        return;
    }
    let bin = std::env::var("SILENCIO_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let mut child = Command::new(&bin)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {bin:?} ({e}): install Debian's `prometheus` package (apt-get install \
                 prometheus), point $SILENCIO_PROMTOOL at promtool, or set SILENCIO_SKIP_PROMTOOL=1"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool prints lint problems and still exits 0 on some versions: nothing must be said.
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.trim().is_empty(), "promtool complained:\n{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http_api_over_a_socket_and_metrics_pass_promtool() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = served("e2e-http", tmp.path());
    cfg.sample_share = 1.0;
    let s = start(cfg).await;
    let c = reqwest::Client::new();

    let r = identify_forest_ogg(&c, &s.url("/v1/identify?top_k=3&session_id=e2e")).await;
    assert_eq!(r.status(), 200);
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["model_version"], "e2e-http@1");
    assert_eq!(j["windows"].as_array().unwrap().len(), 2);
    assert_eq!(j["windows"][1]["species"].as_array().unwrap().len(), 3);
    let id = j["request_id"].as_str().unwrap().to_string();

    let r = c
        .post(s.url("/v1/feedback"))
        .bearer_auth("test-key")
        .json(
            &json!({"request_id": id, "window": 1, "verdict": "wrong", "correct_code": "gretit1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // A session is read with the key only.
    let r = c.get(s.url("/v1/sessions/e2e")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(s.url("/v1/sessions/e2e"))
        .bearer_auth("test-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(s.url("/v1/species")).send().await.unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["species"]
            .as_array()
            .unwrap()
            .len(),
        9
    );
    let r = c
        .post(s.url("/v1/identify"))
        .header("content-type", "audio/ogg")
        .body(Vec::new())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error_type"],
        "empty_audio"
    );
    let r = c.get(s.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("swagger-ui"));

    let sample = tmp.path().join("data/samples").join(&id).join("meta.json");
    let t = Instant::now();
    // The sampler counts a sample once it is durable: wait for the file and the count.
    let sampled = |text: &str| {
        text.lines()
            .any(|l| l.starts_with("silencio_sampled_total "))
    };
    loop {
        let text = c
            .get(s.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if sample.is_file() && sampled(&text) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "sample never saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = c.get(s.url("/metrics")).send().await.unwrap();
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = r.text().await.unwrap();
    for name in silencio_server::metrics::NAMES {
        assert!(text.contains(name), "{name} missing");
    }
    promtool_check(&text);
    s.shutdown().await;
}

/// Reads text messages until one parses as JSON (skipping pings).
async fn next_json<S>(ws: &mut S) -> Value
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), ws.next())
            .await
            .expect("no message within 60 s")
            .expect("stream ended")
            .unwrap();
        match m {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected message {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn websocket_stream_answers_each_window_as_it_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = common::write_bundle(&tmp.path().join("b"), "e2e-stream", "1");
    let mut cfg = common::config(&tmp.path().join("data"), Some(bundle));
    // The test sends a recording as fast as windows are answered, not live.
    cfg.stream_rate.audio_burst_s = 600.0;
    let s = start(cfg).await;
    let ws_url = format!("ws://{}/v1/stream", s.addr);

    // A real 1-minute soundscape at 48 kHz, s16, in 0.5 s chunks, plus 2.5 s more.
    let mut pcm = common::decode(&common::soundscape_path(), 48_000);
    assert_eq!(pcm.len(), 60 * 48_000);
    pcm.extend_from_within(..120_000);
    let (ws, _) = connect_keyed(&ws_url).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(
        json!({"sample_rate": 48000, "encoding": "pcm_s16le", "session_id": "tour-1", "top_k": 3})
            .to_string(),
    ))
    .await
    .unwrap();
    let mut last_unique = 0;
    let mut received = 0usize;
    for (i, chunk) in pcm.chunks(24_000).enumerate() {
        let bytes: Vec<u8> = chunk
            .iter()
            .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
            .collect();
        tx.send(Message::binary(bytes)).await.unwrap();
        // Each window is answered once its 5 s are in, before any later audio is sent.
        if (i + 1) % 10 == 0 {
            let m = next_json(&mut rx).await;
            assert!(m.get("error").is_none(), "{m}");
            let w = &m["window"];
            assert_eq!(w["start_s"].as_f64().unwrap(), 5.0 * received as f64, "{m}");
            assert_eq!(w["end_s"].as_f64().unwrap(), 5.0 * (received + 1) as f64);
            assert_eq!(w["species"].as_array().unwrap().len(), 3);
            assert_eq!(m["session"]["session_id"], "tour-1");
            let u = m["session"]["unique_species"].as_u64().unwrap();
            assert!(u >= last_unique && u <= 9, "{u} after {last_unique}");
            last_unique = u;
            received += 1;
        }
    }
    assert_eq!(received, 12);
    // The last 2.5 s are flushed by {"end": true}, then the server closes.
    tx.send(Message::text(r#"{"end": true}"#)).await.unwrap();
    let m = next_json(&mut rx).await;
    assert_eq!(m["window"]["start_s"].as_f64().unwrap(), 60.0);
    assert_eq!(m["window"]["end_s"].as_f64().unwrap(), 65.0);
    last_unique = m["session"]["unique_species"].as_u64().unwrap();
    let closing = tokio::time::timeout(Duration::from_secs(30), rx.next())
        .await
        .unwrap();
    assert!(
        matches!(closing, Some(Ok(Message::Close(_))) | None),
        "{closing:?}"
    );

    let c = reqwest::Client::new();
    let sess: Value = c
        .get(s.url("/v1/sessions/tour-1"))
        .bearer_auth("test-key")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sess["unique_species"].as_u64().unwrap(), last_unique);
    assert_eq!(sess["windows"], 13);

    // At the model's own rate (no resampling) a stream window scores exactly as an upload of
    // the same samples does.
    let clip: Vec<f32> =
        common::decode(&common::soundscape_path(), 32_000)[160_000..320_000].to_vec();
    let (ws, _) = connect_keyed(&ws_url).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(
        json!({"sample_rate": 32000, "encoding": "pcm_f32le", "session_id": "tour-2", "top_k": 9})
            .to_string(),
    ))
    .await
    .unwrap();
    // Odd-sized frames: samples straddle frame boundaries.
    let bytes: Vec<u8> = clip.iter().flat_map(|s| s.to_le_bytes()).collect();
    for part in bytes.chunks(12_345) {
        tx.send(Message::binary(part.to_vec())).await.unwrap();
    }
    let streamed = next_json(&mut rx).await;
    tx.send(Message::text(r#"{"end": true}"#)).await.unwrap();
    let up: Value = c
        .post(s.url("/v1/identify?top_k=9"))
        .header("content-type", "audio/wav")
        .body(common::wav_f32(&clip, 32_000))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let a = streamed["window"]["species"].as_array().unwrap();
    let b = up["windows"][0]["species"].as_array().unwrap();
    assert_eq!(a.len(), 9);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x["code"], y["code"]);
        assert!((x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap()).abs() < 1e-4);
    }

    // A bad start message is answered with an error and a close.
    let m = refused_start(
        &ws_url,
        json!({"sample_rate": 48000, "encoding": "mp3", "session_id": "x"}),
    )
    .await;
    assert_eq!(m["error_type"], "bad_request");
    // An odd sample rate (issue 16: 383 987 Hz cost a 383 987-point FFT resampler per window
    // and 40 MB per idle stream) is refused up front, naming the accepted rates.
    let m = refused_start(
        &ws_url,
        json!({"sample_rate": 383987, "encoding": "pcm_s16le", "session_id": "x"}),
    )
    .await;
    assert_eq!(m["error_type"], "bad_request");
    assert!(m["error"].as_str().unwrap().contains("44100"), "{m}");
    s.shutdown().await;
}

/// A stream's `recorded_at` applies the bundle's hour priors to each window at the hour that
/// window falls in (the priors alone: no smoothing, which needs later windows); a start whose
/// `recorded_at` gives no hour is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_streams_recorded_at_applies_hour_priors_window_by_window() {
    use silencio_infer::{PostProcess, RecordingContext};
    let tmp = tempfile::tempdir().unwrap();
    let n = common::taxonomy().len();
    // At 07 h the first species is heard far more often than on average; at 06 h far less.
    let at = |h: u8| RecordingContext {
        recorder: None,
        hour: Some(h),
    };
    let post = PostProcess::new(Some(common::first_species_priors(at(7), at(6), 0.02)));
    let bundle = common::write_bundle_post(&tmp.path().join("b"), "stream-priors", post.clone());
    let mut cfg = common::config(&tmp.path().join("data"), Some(bundle));
    cfg.stream_rate.audio_burst_s = 600.0;
    let s = start(cfg).await;
    let ws_url = format!("ws://{}/v1/stream", s.addr);
    // Two windows of a real soundscape at the model's rate.
    let clip: Vec<f32> = common::decode(&common::soundscape_path(), 32_000)[..320_000].to_vec();
    let stream = |recorded_at: Option<&str>| {
        let ws_url = ws_url.clone();
        let clip = clip.clone();
        let mut start = json!({"sample_rate": 32000, "encoding": "pcm_f32le", "top_k": n});
        if let Some(t) = recorded_at {
            start["recorded_at"] = json!(t);
        }
        async move {
            let (ws, _) = connect_keyed(&ws_url).await.unwrap();
            let (mut tx, mut rx) = ws.split();
            tx.send(Message::text(start.to_string())).await.unwrap();
            let bytes: Vec<u8> = clip.iter().flat_map(|v| v.to_le_bytes()).collect();
            tx.send(Message::binary(bytes)).await.unwrap();
            let mut windows = Vec::new();
            for _ in 0..2 {
                let m = next_json(&mut rx).await;
                assert!(m.get("error").is_none(), "{m}");
                let species = m["window"]["species"].as_array().unwrap().clone();
                let by_code: Vec<f32> = codes_order(&species, n);
                windows.push(by_code);
            }
            tx.send(Message::text(r#"{"end": true}"#)).await.unwrap();
            windows
        }
    };
    fn codes_order(species: &[Value], n: usize) -> Vec<f32> {
        let codes: Vec<String> = common::taxonomy().into_iter().map(|s| s.code).collect();
        assert_eq!(species.len(), n);
        codes
            .iter()
            .map(|c| {
                let s = species.iter().find(|s| s["code"] == *c).unwrap();
                s["score"].as_f64().unwrap() as f32
            })
            .collect()
    }
    let plain = stream(None).await;
    // The first sample at 06:59:57: window 0 (06:59:57) is at 06 h, window 1 (07:00:02) at 07 h.
    let start_at = "2024-03-01T06:59:57-05:00";
    let hourly = stream(Some(start_at)).await;
    for (i, (raw, got)) in plain.iter().zip(&hourly).enumerate() {
        // Expected: the raw window through the priors alone, at its own hour.
        let mut w = vec![silencio_infer::WindowScores {
            start_s: 5.0 * i as f64,
            end_s: 5.0 * (i + 1) as f64,
            scores: raw.clone(),
        }];
        let ctx = RecordingContext::from_timestamp_after(start_at, 5.0 * i as f64);
        assert_eq!(ctx.hour, Some(6 + i as u8));
        post.apply_priors(&ctx, &mut w);
        for (a, b) in got.iter().zip(&w[0].scores) {
            assert!((a - b).abs() < 1e-5, "window {i}: {a} vs {b}");
        }
    }
    // The hour moved the first species: down at 06 h, up at 07 h.
    assert!(
        hourly[0][0] < plain[0][0],
        "{} vs {}",
        hourly[0][0],
        plain[0][0]
    );
    assert!(
        hourly[1][0] > plain[1][0],
        "{} vs {}",
        hourly[1][0],
        plain[1][0]
    );
    let m = refused_start(
        &ws_url,
        json!({"sample_rate": 32000, "encoding": "pcm_s16le", "recorded_at": "yesterday"}),
    )
    .await;
    assert_eq!(m["error_type"], "bad_request");
    assert!(m["error"].as_str().unwrap().contains("recorded_at"), "{m}");
    s.shutdown().await;
}

/// Opens a stream with `start` as its first message and returns the server's answer.
async fn refused_start(ws_url: &str, start: Value) -> Value {
    let (ws, _) = connect_keyed(ws_url).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(start.to_string())).await.unwrap();
    next_json(&mut rx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn graceful_shutdown_drains_a_request_in_flight() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = common::write_bundle(&tmp.path().join("b"), "e2e-drain", "1");
    let s = start(common::config(&tmp.path().join("data"), Some(bundle))).await;
    let model = s.state.routing().stable.clone().unwrap();
    // A slow request: its window waits in the queue while shutdown starts.
    let pause = model.engine().unwrap().pause();
    let url = s.url("/v1/identify");
    let slow = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .header("content-type", "audio/wav")
            .body(common::clip_5s_wav())
            .send()
            .await
    });
    let t = Instant::now();
    while model.engine().unwrap().queued() == 0 {
        assert!(t.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let state = s.state.clone();
    let addr = s.addr;
    let stopping = tokio::spawn(s.shutdown());
    let t = Instant::now();
    while !state.is_shutting_down() {
        assert!(t.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!slow.is_finished(), "the request must still be waiting");
    assert!(!stopping.is_finished(), "the server must wait for it");
    // No new connections are taken while draining.
    let fresh = reqwest::Client::new()
        .get(format!("http://{addr}/healthz"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(fresh.is_err(), "a new connection was served while draining");
    drop(pause);
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["windows"].as_array().unwrap().len(), 1);
    tokio::time::timeout(Duration::from_secs(60), stopping)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_serves_until_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = common::write_bundle(&tmp.path().join("b"), "e2e-cli", "1");
    let (mut child, addr, seen, lines) = common::start_serve(
        Command::new(env!("CARGO_BIN_EXE_silencio"))
            .args([
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--replicas",
                "1",
                "--model",
            ])
            .arg(&bundle)
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .env_remove("SILENCIO_API_KEY")
            .env("RUST_LOG", "warn"),
    );
    // The generated key is printed once at start-up, before or after the address.
    let key_of = |l: &str| {
        l.contains("API key")
            .then(|| l.rsplit(' ').next().map(str::to_string))
            .flatten()
    };
    let mut key = seen.iter().find_map(|l| key_of(l));
    let t = Instant::now();
    while key.is_none() {
        assert!(t.elapsed() < Duration::from_secs(60), "no API key line");
        let Ok(l) = lines.recv_timeout(Duration::from_secs(60)) else {
            panic!("silencio serve ended early")
        };
        key = key_of(&l);
    }
    let key = key.unwrap();
    assert_eq!(key.len(), 32, "{key}");
    let c = reqwest::Client::new();
    wait_ready(&c, &format!("http://{addr}/readyz")).await;
    let r = c
        .post(format!("http://{addr}/v1/identify"))
        .header("content-type", "audio/wav")
        .body(common::clip_5s_wav())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Writes need the printed key.
    let rollback = format!("http://{addr}/v1/admin/rollback");
    assert_eq!(
        c.post(&rollback)
            .bearer_auth("guess")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.post(&rollback)
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .status(),
        409
    );

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("stopped")), "{rest:?}");
}

/// With BirdNET built in: `silencio serve` takes an ensemble file naming a bundle and BirdNET,
/// refuses it in the default (commercial) deployment because BirdNET V2.4 is CC BY-NC-SA 4.0,
/// and with `--non-commercial` answers `POST /v1/identify` as the ensemble.
#[cfg(feature = "birdnet")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_serves_a_bundle_and_birdnet_only_when_non_commercial() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_bundle(&tmp.path().join("b"), "e2e-nc", "1");
    let ensemble = tmp.path().join("ensemble.toml");
    std::fs::write(
        &ensemble,
        "[[members]]\nmodel = \"b\"\nweight = 0.6\n[[members]]\nmodel = \"birdnet\"\nweight = 0.4\n",
    )
    .unwrap();
    let serve = |extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_silencio"));
        c.args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--replicas",
            "1",
            "--model",
        ])
        .arg(&ensemble)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .args(extra)
        .env_remove("SILENCIO_NON_COMMERCIAL")
        .env("SILENCIO_API_KEY", "test-key")
        .env("RUST_LOG", "warn");
        c
    };
    let out = serve(&[]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error[licence]"), "{err}");
    assert!(err.contains("CC-BY-NC-SA-4.0"), "{err}");
    assert!(err.contains("--non-commercial"), "{err}");

    let (mut child, addr, _, _lines) = common::start_serve(&mut serve(&["--non-commercial"]));
    let c = reqwest::Client::new();
    wait_ready(&c, &format!("http://{addr}/readyz")).await;
    let r = c
        .post(format!("http://{addr}/v1/identify?top_k=3"))
        .header("content-type", "audio/wav")
        .body(common::clip_5s_wav())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let j: Value = r.json().await.unwrap();
    assert_eq!(j["model_version"], "e2e-nc@1+birdnet@2.4");
    assert_eq!(j["windows"].as_array().unwrap().len(), 1);
    assert_eq!(j["windows"][0]["species"].as_array().unwrap().len(), 3);
    let m: Value = c
        .get(format!("http://{addr}/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        m["models"][0]["model_version"], "e2e-nc@1+birdnet@2.4",
        "{m}"
    );
    assert_eq!(m["models"][0]["licence_status"], "non_commercial", "{m}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_cli_says_how_to_get_a_model_when_there_is_none() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_silencio"))
        .args(["serve", "--addr", "127.0.0.1:0", "--registry"])
        .arg(tmp.path().join("empty-registry"))
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .env_remove("SILENCIO_MODEL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("error[no_model]"), "{err}");
    assert!(err.contains("cargo run --release -p trainer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_flushes_open_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = common::write_bundle(&tmp.path().join("b"), "e2e-stream-drain", "1");
    let s = start(common::config(&tmp.path().join("data"), Some(bundle))).await;
    let (ws, _) = connect_keyed(format!("ws://{}/v1/stream", s.addr))
        .await
        .unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(Message::text(
        json!({"sample_rate": 32000, "encoding": "pcm_s16le", "session_id": "drain"}).to_string(),
    ))
    .await
    .unwrap();
    // 7 s: one whole window and 2 s of the next.
    let pcm = common::decode(&common::soundscape_path(), 32_000);
    let bytes: Vec<u8> = pcm[..7 * 32_000]
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0).round() as i16).to_le_bytes())
        .collect();
    tx.send(Message::binary(bytes)).await.unwrap();
    let first = next_json(&mut rx).await;
    assert_eq!(first["window"]["start_s"].as_f64().unwrap(), 0.0);
    let stopping = tokio::spawn(s.shutdown());
    // The shutdown answers the partial window, closes the stream, and only then returns.
    let last = next_json(&mut rx).await;
    assert_eq!(last["window"]["start_s"].as_f64().unwrap(), 5.0, "{last}");
    let closing = tokio::time::timeout(Duration::from_secs(30), rx.next())
        .await
        .unwrap();
    assert!(
        matches!(closing, Some(Ok(Message::Close(_))) | None),
        "{closing:?}"
    );
    tokio::time::timeout(Duration::from_secs(60), stopping)
        .await
        .unwrap()
        .unwrap();
}

/// Issue 16's lock-out, reproduced: 100 connections send `POST /v1/identify` headers announcing
/// 500 kB and then dribble one byte a second. Bodies are read before admission, under a deadline
/// and a minimum rate, so a normal client still gets its identification at once, every slow
/// upload gets 408 `timeout` once its grace period is over, and memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_uploads_cannot_lock_out_other_clients() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = served("e2e-slow", tmp.path());
    // Fewer admission slots than attackers, as in the report (64 against 100).
    cfg.queue = 64;
    cfg.upload = silencio_server::upload::UploadPolicy {
        timeout: Duration::from_secs(30),
        grace: Duration::from_secs(3),
        min_bytes_per_s: 1000,
    };
    let s = start(cfg).await;

    let head = format!(
        "POST /v1/identify HTTP/1.1\r\nHost: {}\r\nContent-Type: audio/wav\r\n\
         Content-Length: 500000\r\n\r\n",
        s.addr
    );
    let mut slow = Vec::new();
    for _ in 0..100 {
        let head = head.clone();
        let addr = s.addr;
        slow.push(tokio::spawn(async move {
            let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
            sock.write_all(head.as_bytes()).await.unwrap();
            let started = Instant::now();
            let mut answer = Vec::new();
            loop {
                // One byte a second until the server answers (or 20 s pass).
                let mut buf = [0u8; 4096];
                match tokio::time::timeout(Duration::from_secs(1), sock.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
                        answer.extend_from_slice(&buf[..n]);
                        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                            break;
                        }
                    }
                    Err(_) => {
                        if started.elapsed() > Duration::from_secs(20)
                            || sock.write_all(b"R").await.is_err()
                        {
                            break;
                        }
                    }
                }
            }
            (
                String::from_utf8_lossy(&answer).to_string(),
                started.elapsed(),
            )
        }));
    }
    // Let every slow upload start first.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let c = reqwest::Client::new();
    let t = Instant::now();
    let r = identify_forest_ogg(&c, &s.url("/v1/identify")).await;
    let waited = t.elapsed();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(
        waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );

    let mut timeouts = 0;
    for h in slow {
        let (answer, after) = h.await.unwrap();
        if answer.starts_with("HTTP/1.1 408") && answer.contains("\"error_type\":\"timeout\"") {
            timeouts += 1;
            // Not before the grace period, and well before the deadline.
            assert!(
                after >= Duration::from_secs(2) && after < Duration::from_secs(15),
                "{after:?}"
            );
        }
    }
    assert_eq!(timeouts, 100, "every slow upload is answered 408 timeout");
    let rss_kb: u64 = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(rss_kb < 1 << 20, "RSS {rss_kb} kB");
    s.shutdown().await;
}

/// Issue 16: streams had no cap and no idle timeout (1000 idle streams stayed open 150 s).
/// Over the cap, the upgrade is answered 429; a stream that sends nothing for `stream_idle` is
/// closed with a `timeout` error, which frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_are_capped_and_idle_ones_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = served("e2e-idle", tmp.path());
    cfg.max_streams = 2;
    cfg.stream_idle = Duration::from_secs(1);
    let s = start(cfg).await;
    let ws_url = format!("ws://{}/v1/stream", s.addr);
    let start_msg =
        json!({"sample_rate": 32000, "encoding": "pcm_s16le", "session_id": "idle"}).to_string();
    let mut open = Vec::new();
    for _ in 0..2 {
        let (ws, _) = connect_keyed(&ws_url).await.unwrap();
        let (mut tx, rx) = ws.split();
        tx.send(Message::text(start_msg.clone())).await.unwrap();
        open.push((tx, rx));
    }
    // The third is refused before the upgrade.
    match connect_keyed(&ws_url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 429),
        other => panic!("a third stream was not refused: {:?}", other.map(|_| ())),
    }
    // Silent for over a second: each open stream gets `timeout`, then a close.
    let t = Instant::now();
    for (_, rx) in &mut open {
        let mut err = None;
        while let Some(Ok(m)) = rx.next().await {
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v.get("error_type").is_some() {
                    err = Some(v);
                }
            }
        }
        assert_eq!(err.unwrap()["error_type"], "timeout");
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    // Their slots are free again.
    assert!(s.state.streams_closed(Duration::from_secs(5)).await);
    let (ws, _) = connect_keyed(&ws_url).await.unwrap();
    drop(ws);
    s.shutdown().await;
}

/// Issue 16: a stream had no per-message limits, and any client could record into any
/// session. Audio faster than 2× real time after a 30 s burst, or more than 100 messages a
/// second after a burst of 200, is answered `rate_limited` and the stream closed; a session
/// needs the key, a stream without one is open to all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn streams_are_rate_limited_and_sessions_need_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(served("e2e-rate", tmp.path())).await;
    let ws_url = format!("ws://{}/v1/stream", s.addr);
    let plain = |session: Option<&str>| {
        let mut m = json!({"sample_rate": 32000, "encoding": "pcm_s16le"});
        if let Some(id) = session {
            m["session_id"] = json!(id);
        }
        Message::text(m.to_string())
    };
    // Reads until an error message (or a close) and returns it.
    async fn first_error<S>(rx: &mut S) -> Value
    where
        S: futures_util::Stream<Item = tokio_tungstenite::tungstenite::Result<Message>> + Unpin,
    {
        loop {
            let m = next_json(rx).await;
            if m.get("error").is_some() {
                return m;
            }
        }
    }

    // A session without the key: refused.
    let (ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(plain(Some("anon"))).await.unwrap();
    assert_eq!(next_json(&mut rx).await["error_type"], "unauthorized");

    // No session, no key: served, and the windows carry no session.
    let (ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(plain(None)).await.unwrap();
    let second = vec![0u8; 64_000];
    for _ in 0..5 {
        tx.send(Message::binary(second.clone())).await.unwrap();
    }
    let m = next_json(&mut rx).await;
    assert!(
        m.get("error").is_none() && m.get("session").is_none(),
        "{m}"
    );
    assert_eq!(m["window"]["start_s"].as_f64().unwrap(), 0.0);

    // Audio far faster than real time: a 30 s burst passes, then `rate_limited`.
    for _ in 0..40 {
        if tx.send(Message::binary(second.clone())).await.is_err() {
            break;
        }
    }
    let m = first_error(&mut rx).await;
    assert_eq!(m["error_type"], "rate_limited", "{m}");

    // A flood of tiny messages: `rate_limited` after the burst of 200.
    let (ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let (mut tx, mut rx) = ws.split();
    tx.send(plain(None)).await.unwrap();
    for _ in 0..400 {
        if tx.send(Message::binary(vec![0u8; 2])).await.is_err() {
            break;
        }
    }
    let m = first_error(&mut rx).await;
    assert_eq!(m["error_type"], "rate_limited", "{m}");
    assert!(m["error"].as_str().unwrap().contains("messages"), "{m}");
    s.shutdown().await;
}
