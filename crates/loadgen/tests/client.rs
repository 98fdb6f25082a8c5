//! The load generator's own behaviour on real sockets: an aborted upload really closes its
//! connection midway, the WAV it sends decodes as the server decodes it, `--clips` reads real
//! files, and a whole run counts every answer of a scripted HTTP peer correctly (statuses the
//! real server cannot be made to give on demand: 5xx, 429 at chosen requests). The real
//! server is exercised by tests/e2e/loadgen.rs at the workspace root.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use silencio_loadgen::client::{Outcome, SLOW_CHUNK_BYTES, upload};
use silencio_loadgen::{ClipSet, LoadConfig, LoopKind, Mode};
use tokio::io::AsyncReadExt;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test]
async fn an_aborted_upload_closes_the_connection_midway() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // A bare TCP peer: reads until the client closes, never answers.
    let peer = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    });
    let clips = ClipSet::embedded().unwrap();
    let clip = &clips.short[0];
    let total = clip.body.len();
    let abort_at = total / 2;
    let url = format!("http://{addr}/v1/identify");
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        upload(
            &client(),
            &url,
            clip,
            Duration::from_secs(30),
            Some(abort_at),
        ),
    )
    .await
    .expect("the abort did not happen");
    let Outcome::Aborted { sent_bytes } = out else {
        panic!("expected an abort, got {out:?}");
    };
    assert!(sent_bytes >= abort_at && sent_bytes < total, "{sent_bytes}");

    // The peer saw the connection closed with part of the body only.
    let got = tokio::time::timeout(Duration::from_secs(10), peer)
        .await
        .expect("connection left open")
        .unwrap();
    let head_end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("post /v1/identify"), "{head}");
    assert!(head.contains("content-type: audio/wav"), "{head}");
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let body = &got[head_end..];
    // Chunk framing adds a few bytes per 16 KiB; the body stops far short of the whole clip
    // and without the chunked terminator.
    assert!(
        body.len() > abort_at - 2 * SLOW_CHUNK_BYTES,
        "{}",
        body.len()
    );
    assert!(body.len() < total, "{} of {total}", body.len());
    assert!(!body.ends_with(b"0\r\n\r\n"));
}

#[tokio::test]
async fn a_connection_closed_without_an_answer_is_a_transport_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Reads the request head, then hangs up without a word.
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 1024];
        let _ = s.read(&mut buf).await;
    });
    let clips = ClipSet::embedded().unwrap();
    let url = format!("http://{addr}/v1/identify?session_id=x");
    let out = upload(
        &client(),
        &url,
        &clips.short[0],
        Duration::from_secs(30),
        None,
    )
    .await;
    let Outcome::Transport { kind, message } = out else {
        panic!("expected a transport error, got {out:?}");
    };
    assert_ne!(kind, "timeout");
    // The cause, not the URL: messages of different sessions stay comparable.
    assert!(!message.contains("session_id"), "{message}");
    assert!(!message.is_empty());
}

#[test]
fn the_wav_sent_decodes_to_the_same_samples() {
    let samples: Vec<f32> = (0..32_000)
        .map(|i| 0.5 * (i as f32 * 440.0 * std::f32::consts::TAU / 32_000.0).sin())
        .collect();
    let wav = silencio_loadgen::wav::encode_wav_mono16(&samples, 32_000);
    let d = silencio_audio::decode_bytes(
        wav,
        &silencio_audio::DecodeOptions {
            target_rate: None,
            max_duration_s: 10.0,
            max_input_samples: None,
        },
    )
    .unwrap();
    assert_eq!(d.sample_rate, 32_000);
    assert_eq!(d.info.channels, 1);
    assert_eq!(d.info.bits_per_sample, Some(16));
    assert_eq!(d.samples.len(), samples.len());
    let worst = samples
        .iter()
        .zip(&d.samples)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1.0 / 32_767.0, "{worst}");

    // The embedded clips too: exactly 5 s and 60 s once decoded.
    let set = ClipSet::embedded().unwrap();
    for (c, secs) in [(&set.short[1], 5.0), (&set.long[2], 60.0)] {
        let d = silencio_audio::decode_bytes(c.body.to_vec(), &Default::default()).unwrap();
        assert_eq!(d.info.duration_s, secs);
    }
}

#[test]
fn clips_from_a_directory_of_real_files() {
    let tmp = tempfile::tempdir().unwrap();
    let fx = root().join("datasets/fixtures/audio");
    for f in [
        "hawkears_common_yellowthroat.mp3",
        "crowsetta_forest.flac",
        "wav_s16_44k1_stereo.wav",
    ] {
        std::fs::copy(fx.join(f), tmp.path().join(f)).unwrap();
    }
    std::fs::write(tmp.path().join("notes.txt"), "not audio").unwrap();
    let set = ClipSet::from_dir(tmp.path()).unwrap();
    assert_eq!(set.short.len(), 3);
    let names: Vec<&str> = set.short.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "crowsetta_forest.flac",
            "hawkears_common_yellowthroat.mp3",
            "wav_s16_44k1_stereo.wav"
        ]
    );
    for c in set.short.iter().chain(&set.long) {
        let d = silencio_audio::decode_bytes(
            c.body.to_vec(),
            &silencio_audio::DecodeOptions {
                target_rate: None,
                max_duration_s: 100.0,
                max_input_samples: None,
            },
        )
        .unwrap();
        assert_eq!(d.info.channels, 1);
        assert!((d.info.duration_s - c.audio_s).abs() < 1e-4);
        assert!(
            c.audio_s == 5.0 || (c.audio_s - 60.0).abs() < 1e-4,
            "{}",
            c.audio_s
        );
    }

    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        ClipSet::from_dir(empty.path()).unwrap_err().kind(),
        "no_clips"
    );
    std::fs::write(empty.path().join("broken.ogg"), b"OggS but not really").unwrap();
    let e = ClipSet::from_dir(empty.path()).unwrap_err();
    assert_eq!(e.kind(), "bad_clip");
    assert!(e.to_string().contains("broken.ogg"));
}

/// A scripted HTTP peer speaking the API's contract: every 5th identify answers 429, every
/// 7th 500, the rest 200 with one window per 5 s of audio; `/metrics` exposes a batch-size
/// histogram counting every answered identify as a batch of one.
#[derive(Default)]
struct Peer {
    seq: AtomicU64,
    answered: AtomicU64,
    broken_uploads: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay_ms: u64,
}

async fn identify(State(p): State<Arc<Peer>>, headers: HeaderMap, body: Body) -> Response {
    let now = p.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    p.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let r = async {
        let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
            p.broken_uploads.fetch_add(1, Ordering::SeqCst);
            return StatusCode::BAD_REQUEST.into_response();
        };
        assert_eq!(headers[header::CONTENT_TYPE], "audio/wav");
        tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
        let n = p.seq.fetch_add(1, Ordering::SeqCst) + 1;
        p.answered.fetch_add(1, Ordering::SeqCst);
        if n % 5 == 0 {
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                axum::Json(serde_json::json!({"error": "queue full", "error_type": "overloaded"})),
            )
                .into_response();
        }
        if n % 7 == 0 {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                axum::Json(serde_json::json!({"error": "boom", "error_type": "internal"})),
            )
                .into_response();
        }
        let secs = (bytes.len() - 44) / (2 * 32_000);
        let windows: Vec<_> = (0..secs / 5)
            .map(|i| serde_json::json!({"start_s": i * 5, "end_s": i * 5 + 5, "species": []}))
            .collect();
        axum::Json(serde_json::json!({
            "request_id": n.to_string(),
            "model_version": "peer@1",
            "windows": windows,
            "timing_ms": {"decode": 1.0, "queue": 2.0, "inference": 3.0, "total": 6.0},
        }))
        .into_response()
    }
    .await;
    p.in_flight.fetch_sub(1, Ordering::SeqCst);
    r
}

async fn metrics(State(p): State<Arc<Peer>>) -> String {
    let n = p.answered.load(Ordering::SeqCst);
    let mut s = String::from("# TYPE silencio_batch_size histogram\n");
    for le in ["1", "2", "4", "8", "16", "32", "+Inf"] {
        s += &format!("silencio_batch_size_bucket{{le=\"{le}\"}} {n}\n");
    }
    s += &format!("silencio_batch_size_sum {n}\nsilencio_batch_size_count {n}\n");
    s
}

async fn start_peer(delay_ms: u64) -> (String, Arc<Peer>) {
    let peer = Arc::new(Peer {
        delay_ms,
        ..Default::default()
    });
    let app = Router::new()
        .route("/readyz", get(|| async { "ready" }))
        .route("/metrics", get(metrics))
        .route("/v1/identify", post(identify))
        .with_state(peer.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, peer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_loop_run_accounts_for_every_answer() {
    let (url, peer) = start_peer(5).await;
    let cfg = LoadConfig {
        url,
        modes: Mode::ALL.to_vec(),
        concurrency: vec![1, 3],
        duration: Duration::from_millis(1500),
        warmup: Duration::from_millis(300),
        think: Duration::from_millis(20),
        abort_share: 0.5,
        ..Default::default()
    };
    let report = silencio_loadgen::run(cfg).await.unwrap();
    assert_eq!(report.levels.len(), 6);
    let keys: Vec<&str> = report.levels.iter().map(|l| l.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "tour-closed-c1",
            "tour-closed-c3",
            "power-closed-c1",
            "power-closed-c3",
            "mobile-closed-c1",
            "mobile-closed-c3"
        ]
    );
    for l in &report.levels {
        let answered = l.ok + l.rejected_429 + l.server_5xx;
        assert_eq!(
            l.requests,
            answered + l.client_4xx + l.other_status + l.transport_errors + l.aborted,
            "{}",
            l.key
        );
        assert_eq!(
            l.client_4xx + l.other_status + l.transport_errors,
            0,
            "{l:?}"
        );
        assert!(l.ok > 0 && l.rejected_429 > 0, "{l:?}");
        assert_eq!(l.error_types.get("overloaded"), Some(&l.rejected_429));
        assert_eq!(l.model_versions.get("peer@1"), Some(&l.ok));
        let per_clip = if l.mode == "power" { 12 } else { 1 };
        assert_eq!(l.windows, per_clip * l.ok, "{}", l.key);
        // Measured from the first scrape's answer to the end: at most the 1.5 s asked.
        assert!(
            l.duration_s > 1.0 && l.duration_s <= 1.5,
            "{}",
            l.duration_s
        );
        assert_eq!(l.throughput_rps, l.ok as f64 / l.duration_s);
        let clip_s = if l.mode == "power" { 60.0 } else { 5.0 };
        assert_eq!(l.audio_s_per_s, l.ok as f64 * clip_s / l.duration_s);
        let lat = l.latency_ms.as_ref().unwrap();
        assert_eq!(lat.n as u64, l.ok);
        assert!(lat.min_ms <= lat.p50_ms && lat.p50_ms <= lat.p95_ms);
        assert!(lat.p95_ms <= lat.p99_ms && lat.p99_ms <= lat.max_ms);
        assert_eq!(l.server_timing_ms.unwrap().inference_ms, 3.0);
        // The histogram diff covers every measured answer (measuring starts once the first
        // scrape is back), plus the few warm-up requests still in flight around that scrape,
        // never the earlier levels' batches.
        let b = l.batch_size.as_ref().unwrap();
        assert!(
            b.count >= answered && b.count <= answered + 10 * l.concurrency as u64,
            "{}: {} batches for {answered} answers",
            l.key,
            b.count
        );
        assert_eq!(b.buckets[0].le, "1");
        assert_eq!(b.buckets[0].count, b.count);
        if l.mode == "mobile" {
            assert!(l.aborted > 0, "{l:?}");
        } else {
            assert_eq!(l.aborted, 0);
        }
    }
    // Aborted uploads reached the peer as broken bodies; closed loop never exceeds its users.
    assert!(peer.broken_uploads.load(Ordering::SeqCst) > 0);
    assert!(peer.max_in_flight.load(Ordering::SeqCst) <= 3);

    let dir = tempfile::tempdir().unwrap();
    let (json, csv) = report.write(&dir.path().join("out")).unwrap();
    let back: silencio_loadgen::Report =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(back.levels.len(), 6);
    assert_eq!(back.levels[3].ok, report.levels[3].ok);
    let csv = std::fs::read_to_string(csv).unwrap();
    assert_eq!(csv.lines().count(), 7);
    let head: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    assert_eq!(head.len(), row.len());
    assert_eq!(row[0], "tour-closed-c1");
    assert!(report.table().contains("mobile-closed-c3"));
    // Only the two reports: no temp file left behind.
    assert_eq!(
        std::fs::read_dir(dir.path().join("out")).unwrap().count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_loop_keeps_arriving_and_caps_outstanding_requests() {
    // 100 ms per answer and at most 2 outstanding: ~20/s served of ~60/s arriving.
    let (url, peer) = start_peer(100).await;
    let cfg = LoadConfig {
        url,
        modes: vec![Mode::Tour],
        concurrency: vec![2],
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(200),
        loop_kind: LoopKind::Open { rate: 60.0 },
        ..Default::default()
    };
    let report = silencio_loadgen::run(cfg).await.unwrap();
    let l = &report.levels[0];
    assert_eq!(l.key, "tour-open-c2");
    assert_eq!(l.rate_rps, Some(60.0));
    assert!(l.client_dropped > 0, "{l:?}");
    assert!(l.requests > 0);
    // Poisson arrivals at 60/s for 2 s: far more than 2 s / 100 ms * 2 = 40 could be served.
    assert!(l.requests + l.client_dropped > 60, "{l:?}");
    assert!(peer.max_in_flight.load(Ordering::SeqCst) <= 2);
}

#[tokio::test]
async fn a_server_that_never_gets_ready_is_a_typed_error() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new().route(
        "/readyz",
        get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "warming up") }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cfg = LoadConfig {
        url,
        wait_ready: Duration::from_millis(500),
        ..Default::default()
    };
    let e = silencio_loadgen::run(cfg).await.unwrap_err();
    assert_eq!(e.kind(), "not_ready");
    assert!(e.to_string().contains("503"), "{e}");
}
