//! Crash safety of `silencio serve`'s durable state: the real binary identifies real clips,
//! takes feedback (some of it while the process is SIGKILLed mid-stream), is restarted on the
//! same data dir, and every feedback answered 201 before the kill is still in the log, the log's
//! bytes from before the kill unchanged; sampled requests are whole; `silencio feedback export`
//! joins the feedback with the sampled predictions.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashMap;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use silencio_server::feedback::{Feedback, FeedbackStore, LOG_FILE, Verdict};

const KEY: &str = "crash-test-key";

/// A `silencio serve` child and the address it bound.
struct Server {
    child: Child,
    base: String,
}

fn spawn_server(bundle: &Path, data: &Path) -> Server {
    let (child, addr, _, _) = common::start_serve(
        Command::new(env!("CARGO_BIN_EXE_silencio"))
            .args(["serve", "--addr", "127.0.0.1:0", "--replicas", "1"])
            .args(["--api-key", KEY, "--sample-share", "1.0", "--model"])
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

impl Drop for Server {
    // A failing test must not leave a server running; after a kill this is a no-op.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_ready(c: &reqwest::Client, base: &str) {
    let t = Instant::now();
    while !matches!(c.get(format!("{base}/readyz")).send().await, Ok(r) if r.status() == 200) {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "{base} never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn identify(c: &reqwest::Client, base: &str, clip: &str, media: &str) -> (String, usize) {
    let audio = std::fs::read(common::fixture(clip)).unwrap();
    let r = c
        .post(format!("{base}/v1/identify?top_k=3"))
        .header("content-type", media)
        .body(audio)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{clip}");
    let j: Value = r.json().await.unwrap();
    let windows = j["windows"].as_array().unwrap().len();
    assert!(windows > 0);
    (j["request_id"].as_str().unwrap().to_string(), windows)
}

/// What a client sent (the server adds `received_at`).
type Sent = silencio_server::feedback::Said;

async fn post_feedback(c: &reqwest::Client, base: &str, s: &Sent) -> reqwest::Result<u16> {
    let body = json!({"request_id": s.0, "window": s.1, "verdict": s.2, "correct_code": s.3});
    let r = c
        .post(format!("{base}/v1/feedback"))
        .bearer_auth(KEY)
        .json(&body)
        .send()
        .await?;
    Ok(r.status().as_u16())
}

fn counts(items: impl IntoIterator<Item = Sent>) -> HashMap<Sent, usize> {
    let mut m = HashMap::new();
    for s in items {
        *m.entry(s).or_insert(0) += 1;
    }
    m
}

fn wait_for_sample(samples: &Path, id: &str) {
    let t = Instant::now();
    while !samples.join(id).join("meta.json").is_file() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "request {id} was never sampled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn feedback_acknowledged_before_a_sigkill_survives_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = common::write_bundle(&tmp.path().join("bundle"), "crash", "1");
    let data = tmp.path().join("serve-data");
    let (feedback_dir, samples_dir) = (data.join("feedback"), data.join("samples"));
    let c = reqwest::Client::new();

    let mut server = spawn_server(&bundle, &data);
    wait_ready(&c, &server.base).await;
    let species: Value = c
        .get(format!("{}/v1/species", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let codes: Vec<String> = species["species"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["code"].as_str().unwrap().to_string())
        .collect();

    // Three real clips, feedback on every window of each, acknowledged one by one.
    let clips = [
        ("crowsetta_forest.ogg", "audio/ogg"),
        ("hawkears_common_yellowthroat.mp3", "audio/mpeg"),
        ("opensoundscape_birds_10s.wav", "audio/wav"),
    ];
    let mut labelled = Vec::new();
    let mut acked: Vec<Sent> = Vec::new();
    for (k, (clip, media)) in clips.iter().enumerate() {
        let (id, windows) = identify(&c, &server.base, clip, media).await;
        for w in 0..windows {
            let s: Sent = if (k + w).is_multiple_of(2) {
                (id.clone(), w, Verdict::Right, None)
            } else {
                (
                    id.clone(),
                    w,
                    Verdict::Wrong,
                    Some(codes[(k + w) % codes.len()].clone()),
                )
            };
            assert_eq!(post_feedback(&c, &server.base, &s).await.unwrap(), 201);
            acked.push(s);
        }
        labelled.push((id, windows));
    }
    for (id, _) in &labelled {
        wait_for_sample(&samples_dir, id);
    }

    // Then a storm of feedback from four clients on one more request, killed mid-stream.
    let (storm_id, storm_windows) =
        identify(&c, &server.base, "wav_s16_44k1_stereo.wav", "audio/wav").await;
    let acked = Arc::new(Mutex::new(acked));
    let stop = Arc::new(AtomicBool::new(false));
    // Storm answers, repeats (200, stored before) included: the storm's progress.
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut clients = Vec::new();
    for t in 0..4usize {
        let (c, base, id) = (c.clone(), server.base.clone(), storm_id.clone());
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        let answered = Arc::clone(&answered);
        clients.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Acquire) {
                let verdict = if (t + i).is_multiple_of(3) {
                    Verdict::Wrong
                } else {
                    Verdict::Right
                };
                let s: Sent = (id.clone(), (t + i) % storm_windows, verdict, None);
                match post_feedback(&c, &base, &s).await {
                    Ok(201) => {
                        acked.lock().unwrap().push(s);
                        answered.fetch_add(1, Ordering::AcqRel);
                    }
                    // The same verdict again: stored before, so acknowledged without a copy.
                    Ok(200) => {
                        answered.fetch_add(1, Ordering::AcqRel);
                    }
                    Ok(other) => panic!("feedback answered {other}"),
                    // The kill: connections refused or reset. Unacknowledged, so either fate is fine.
                    Err(_) => break,
                }
                i += 1;
            }
        }));
    }
    let t = Instant::now();
    while answered.load(Ordering::Acquire) < 60 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "feedback storm too slow"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL (std's kill on Unix): no shutdown code runs.
    server.child.kill().unwrap();
    let status = server.child.wait().unwrap();
    assert!(!status.success());
    stop.store(true, Ordering::Release);
    for h in clients {
        h.await.unwrap();
    }
    let acked: Vec<Sent> = acked.lock().unwrap().clone();

    // Every acknowledged entry is in the log; nothing else but possibly in-flight storm ones.
    let log_after_kill = std::fs::read(feedback_dir.join(LOG_FILE)).unwrap();
    let stored = FeedbackStore::read_all(&feedback_dir).unwrap();
    let (have, want) = (
        counts(stored.iter().map(Feedback::said)),
        counts(acked.iter().cloned()),
    );
    for (s, n) in &want {
        let got = have.get(s).copied().unwrap_or(0);
        assert!(got >= *n, "{s:?}: {n} acknowledged, {got} stored");
    }
    for s in have.keys() {
        assert!(
            want.contains_key(s) || s.0 == storm_id,
            "{s:?} stored but never sent"
        );
    }
    eprintln!(
        "killed mid-storm: {} feedback acknowledged, {} stored, log {} bytes",
        acked.len(),
        stored.len(),
        log_after_kill.len()
    );
    // At most the four requests in flight at the kill were stored without an answer.
    assert!(
        stored.len() <= acked.len() + 4,
        "{} stored, {} acked",
        stored.len(),
        acked.len()
    );
    assert!(
        stored
            .iter()
            .all(|f| f.received_at.ends_with('Z') && f.received_at.len() == 24)
    );
    // Samples on disk are whole, never half-written.
    for e in std::fs::read_dir(&samples_dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if !name.starts_with('.') {
            for f in ["meta.json", "prediction.json"] {
                assert!(e.path().join(f).is_file(), "sample {name} lacks {f}");
            }
        }
    }

    // Restart on the same data dir: the log is kept byte for byte and grows after it.
    let mut server = spawn_server(&bundle, &data);
    wait_ready(&c, &server.base).await;
    let reopened = std::fs::read(feedback_dir.join(LOG_FILE)).unwrap();
    assert_eq!(reopened, log_after_kill, "reopening changed the log");
    let (id, _) = identify(&c, &server.base, "crowsetta_forest.ogg", "audio/ogg").await;
    let after: Sent = (id, 0, Verdict::Wrong, Some(codes[0].clone()));
    assert_eq!(post_feedback(&c, &server.base, &after).await.unwrap(), 201);
    let log = std::fs::read(feedback_dir.join(LOG_FILE)).unwrap();
    assert!(log.starts_with(&log_after_kill));
    let all = FeedbackStore::read_all(&feedback_dir).unwrap();
    assert_eq!(all.len(), stored.len() + 1);
    assert_eq!(all[..stored.len()], stored[..]);
    assert_eq!(all.last().unwrap().said(), after);
    // Feedback on a request answered before the SIGKILL is still taken (issue 16: it was 404,
    // the answered requests lived only in memory).
    let before_kill: Sent = (storm_id.clone(), 0, Verdict::Wrong, Some(codes[2].clone()));
    assert_eq!(
        post_feedback(&c, &server.base, &before_kill).await.unwrap(),
        201
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // The labelling export joins the sampled predictions with the acknowledged feedback.
    let out = tmp.path().join("labelling");
    let export = Command::new(env!("CARGO_BIN_EXE_silencio"))
        .args(["feedback", "export", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let summary: Value = serde_json::from_slice(&export.stdout).unwrap();
    assert!(summary["samples"].as_u64().unwrap() >= labelled.len() as u64);
    let manifest = std::fs::read_to_string(out.join("manifest.csv")).unwrap();
    let mut rdr = csv::Reader::from_reader(manifest.as_bytes());
    let rows: Vec<HashMap<String, String>> = rdr.deserialize().map(|r| r.unwrap()).collect();
    for s in acked.iter().filter(|s| s.0 != storm_id) {
        let row = rows
            .iter()
            .find(|r| r["request_id"] == s.0 && r["window"] == s.1.to_string())
            .unwrap_or_else(|| panic!("no manifest row for {s:?}"));
        assert_eq!(row["verdict"], s.2.as_str());
        assert_eq!(row["correct_code"], s.3.clone().unwrap_or_default());
        assert!(!row["top_code"].is_empty());
        let audio: PathBuf = out.join(&row["audio_path"]);
        assert!(audio.is_file(), "{}", audio.display());
    }
}
