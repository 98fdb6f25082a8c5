//! The server's durable state on real files: the feedback log survives concurrency and torn
//! writes, samples appear whole and are pruned to quota and age (newest kept), what the server
//! wrote exports as a labelling set (`silencio_data::labelling`, whose own tests cover the
//! export in full); sessions count unique species and expire; API keys; and the ops files
//! in deploy/ (Prometheus config checked by the real `promtool`, Grafana dashboard expressions
//! checked against the metric names the server exports).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use silencio_data::labelling::{MANIFEST_FILE, MANIFEST_HEADER, META_FILE};
use silencio_infer::{Format, Identification, RenderOptions, Species, WindowScores};
use silencio_server::auth::check_api_key;
use silencio_server::feedback::{Feedback, FeedbackStore, LOG_FILE, Verdict, now_rfc3339};
use silencio_server::sampling::{Sampler, SamplerConfig};
use silencio_server::sessions::Sessions;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo().join("datasets/fixtures/audio").join(name)).unwrap()
}

fn fb(request_id: &str, window: usize, verdict: Verdict, code: Option<&str>) -> Feedback {
    Feedback {
        request_id: request_id.into(),
        window,
        verdict,
        correct_code: code.map(str::to_string),
        received_at: now_rfc3339(),
    }
}

// ---------------------------------------------------------------- feedback

#[test]
fn feedback_round_trips_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("feedback");
    let a = fb("req-a", 0, Verdict::Right, None);
    let b = fb("req-b", 3, Verdict::Wrong, Some("grekis"));
    {
        let store = FeedbackStore::open(&dir).unwrap();
        store.append(&a).unwrap();
        store.append(&b).unwrap();
    }
    assert_eq!(
        FeedbackStore::read_all(&dir).unwrap(),
        vec![a.clone(), b.clone()]
    );
    // Reopening appends after what is there, never over it.
    let c = fb("req-c", 1, Verdict::Wrong, None);
    let reopened = FeedbackStore::open(&dir).unwrap();
    assert!(reopened.append(&c).unwrap());
    // A retry (the same verdict, another arrival time), even after the reopen, is not stored
    // twice (issue 16: retries double-counted); a different verdict on that window is.
    let retry = Feedback {
        received_at: "2099-01-01T00:00:00Z".into(),
        ..b.clone()
    };
    assert!(!reopened.append(&retry).unwrap());
    assert!(!reopened.append(&c).unwrap());
    drop(reopened);
    assert_eq!(
        FeedbackStore::read_all(&dir).unwrap(),
        vec![a.clone(), b.clone(), c.clone()]
    );
    let changed = fb("req-c", 1, Verdict::Right, None);
    assert!(FeedbackStore::open(&dir).unwrap().append(&changed).unwrap());
    assert_eq!(
        FeedbackStore::read_all(&dir).unwrap(),
        vec![a, b, c, changed]
    );
    // JSON Lines with the API's field names and snake_case verdicts.
    let text = std::fs::read_to_string(dir.join(LOG_FILE)).unwrap();
    assert_eq!(text.lines().count(), 4);
    assert!(text.contains(r#""verdict":"wrong""#) && text.contains(r#""correct_code":"grekis""#));
    // A directory without a log reads as empty.
    assert!(
        FeedbackStore::read_all(&tmp.path().join("none"))
            .unwrap()
            .is_empty()
    );
}

#[test]
fn concurrent_appends_are_all_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Arc::new(FeedbackStore::open(tmp.path()).unwrap());
    let (threads, each) = (16, 40);
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..each {
                    let verdict = if i % 2 == 0 {
                        Verdict::Right
                    } else {
                        Verdict::Wrong
                    };
                    // Long ids make interleaved writes visible if appends were not serialised.
                    let id = format!("t{t}-i{i}-{}", "x".repeat(200));
                    store.append(&fb(&id, i, verdict, Some("sp1"))).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let all = FeedbackStore::read_all(tmp.path()).unwrap();
    assert_eq!(all.len(), threads * each);
    let ids: HashSet<_> = all.iter().map(|f| f.request_id.clone()).collect();
    assert_eq!(ids.len(), threads * each, "an entry was lost or duplicated");
    // Each thread's entries keep their order (appends are serialised).
    for t in 0..threads {
        let windows: Vec<_> = all
            .iter()
            .filter(|f| f.request_id.starts_with(&format!("t{t}-")))
            .map(|f| f.window)
            .collect();
        assert_eq!(windows, (0..each).collect::<Vec<_>>());
    }
}

#[test]
fn a_torn_last_line_is_cut_off_and_nothing_before_it_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let kept: Vec<_> = (0..5)
        .map(|i| fb(&format!("req-{i}"), i, Verdict::Right, None))
        .collect();
    {
        let store = FeedbackStore::open(dir).unwrap();
        for f in &kept {
            store.append(f).unwrap();
        }
    }
    let log = dir.join(LOG_FILE);
    let before = std::fs::read(&log).unwrap();
    // A crash in the middle of writing a sixth line: half of its JSON, no newline.
    let line = serde_json::to_string(&fb("req-torn", 9, Verdict::Wrong, Some("sp9"))).unwrap();
    let half = &line.as_bytes()[..line.len() / 2];
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(half).unwrap();
    }
    // Readers skip the torn tail.
    assert_eq!(FeedbackStore::read_all(dir).unwrap(), kept);
    // open() recovers: the log is cut back to its whole lines, the fragment kept aside.
    let store = FeedbackStore::open(dir).unwrap();
    assert_eq!(std::fs::read(&log).unwrap(), before);
    let parts: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "part"))
        .collect();
    assert_eq!(parts.len(), 1);
    assert_eq!(std::fs::read(&parts[0]).unwrap(), half);
    // New entries follow on a fresh line and everything before is intact, byte for byte.
    let next = fb("req-next", 2, Verdict::Wrong, Some("sp2"));
    store.append(&next).unwrap();
    let mut want = kept.clone();
    want.push(next);
    assert_eq!(FeedbackStore::read_all(dir).unwrap(), want);
    assert!(std::fs::read(&log).unwrap().starts_with(&before));
}

#[test]
fn a_corrupt_line_inside_the_log_is_an_error_not_a_silent_skip() {
    let tmp = tempfile::tempdir().unwrap();
    let store = FeedbackStore::open(tmp.path()).unwrap();
    store.append(&fb("a", 0, Verdict::Right, None)).unwrap();
    let log = tmp.path().join(LOG_FILE);
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(b"{not json}\n");
    std::fs::write(&log, &bytes).unwrap();
    let err = FeedbackStore::read_all(tmp.path()).unwrap_err();
    assert_eq!(err.kind(), "corrupt_store");
    assert!(err.to_string().contains("line 2"), "{err}");
}

// ---------------------------------------------------------------- sampling

fn sampler(dir: &Path, share: f64, quota_bytes: u64, max_age: Duration) -> Sampler {
    Sampler::open(
        dir,
        SamplerConfig {
            share,
            quota_bytes,
            max_age,
        },
    )
    .unwrap()
}

#[test]
fn the_sampled_share_matches_the_configured_one() {
    let tmp = tempfile::tempdir().unwrap();
    let day = Duration::from_secs(86_400);
    let s = Arc::new(sampler(tmp.path(), 0.05, 1 << 20, day));
    // 8 threads x 25 000 draws; binomial sd = sqrt(n p (1 - p)) ~ 97.5: accept +-6 sd.
    let (threads, each) = (8u64, 25_000u64);
    let hits: u64 = (0..threads)
        .map(|_| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || (0..each).filter(|_| s.should_sample()).count() as u64)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .sum();
    let n = (threads * each) as f64;
    let (mean, sd) = (n * 0.05, (n * 0.05 * 0.95).sqrt());
    assert!(
        (hits as f64 - mean).abs() < 6.0 * sd,
        "{hits} of {n} sampled, expected {mean} +- {}",
        6.0 * sd
    );
    assert!(!(0..10_000).any(|_| sampler(tmp.path(), 0.0, 1, day).should_sample()));
    let all = sampler(tmp.path(), 1.0, 1 << 20, day);
    assert!((0..10_000).all(|_| all.should_sample()));
    for bad in [-0.1, 1.5, f64::NAN] {
        let cfg = SamplerConfig {
            share: bad,
            ..SamplerConfig::default()
        };
        assert_eq!(
            Sampler::open(tmp.path(), cfg).unwrap_err().kind(),
            "bad_request"
        );
    }
}

fn species(n: usize) -> Vec<Species> {
    (0..n)
        .map(|i| Species {
            code: format!("sp{i}"),
            scientific_name: format!("Genus species{i}"),
            common_name: format!("Bird {i}"),
            class_name: "Aves".into(),
        })
        .collect()
}

fn identification(scores: &[&[f32]]) -> Identification {
    Identification {
        model_version: "test@1".into(),
        audio: None,
        species: Arc::new(species(scores[0].len())),
        windows: scores
            .iter()
            .enumerate()
            .map(|(i, s)| WindowScores {
                start_s: 5.0 * i as f64,
                end_s: 5.0 * (i + 1) as f64,
                scores: s.to_vec(),
            })
            .collect(),
    }
}

/// The prediction as the CLI/API JSON renders it (windows -> species -> code, score).
fn prediction(scores: &[&[f32]]) -> serde_json::Value {
    let opts = RenderOptions {
        top_k: 3,
        min_score: 0.0,
        file: String::new(),
        low_hz: 0.0,
        high_hz: 16_000.0,
        licences: Vec::new(),
        location: None,
    };
    let text = silencio_infer::render(&identification(scores), Format::Json, &opts).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn samples_on_disk(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

#[test]
fn a_sample_is_written_whole_with_its_audio_and_prediction() {
    let tmp = tempfile::tempdir().unwrap();
    let s = sampler(tmp.path(), 1.0, 1 << 30, Duration::from_secs(3600));
    let audio = fixture("crowsetta_forest.ogg");
    let pred = prediction(&[&[0.9, 0.1], &[0.2, 0.7]]);
    s.save("req-1", "audio/ogg", &audio, &pred).unwrap();
    let d = tmp.path().join("req-1");
    assert_eq!(std::fs::read(d.join("audio.ogg")).unwrap(), audio);
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join("prediction.json")).unwrap()).unwrap();
    assert_eq!(saved, pred);
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d.join(META_FILE)).unwrap()).unwrap();
    assert_eq!(meta["audio_bytes"], audio.len());
    assert_eq!(meta["model_version"], "test@1");
    assert_eq!(
        samples_on_disk(tmp.path()),
        BTreeSet::from(["req-1".to_string()])
    );
    // Same id twice, or an id that is a path, is refused and stores nothing.
    assert_eq!(
        s.save("req-1", "audio/ogg", &audio, &pred)
            .unwrap_err()
            .kind(),
        "conflict"
    );
    assert_eq!(
        s.save("../x", "audio/ogg", &audio, &pred)
            .unwrap_err()
            .kind(),
        "bad_request"
    );
    assert_eq!(samples_on_disk(tmp.path()).len(), 1);
}

#[test]
fn quota_pruning_keeps_the_newest_samples() {
    let tmp = tempfile::tempdir().unwrap();
    let audio = fixture("hawkears_common_yellowthroat.mp3");
    let pred = prediction(&[&[0.9, 0.1]]);
    // Room for three samples (audio + small JSON files), not four.
    let quota = 3 * (audio.len() as u64 + 2_000);
    let s = sampler(tmp.path(), 1.0, quota, Duration::from_secs(3600));
    let ids: Vec<String> = (0..7).map(|i| format!("req-{i}")).collect();
    for id in &ids {
        s.save(id, "audio/mpeg", &audio, &pred).unwrap();
        // Distinct save times so "newest" is well defined (ms resolution).
        std::thread::sleep(Duration::from_millis(3));
    }
    let want: BTreeSet<String> = ids[4..].iter().cloned().collect();
    assert_eq!(samples_on_disk(tmp.path()), want);
    let (n, bytes) = s.usage();
    assert_eq!(n, 3);
    assert!(bytes <= quota);
    // A sample bigger than the whole quota is refused rather than evicting everything.
    let big = vec![0u8; quota as usize + 1];
    assert_eq!(
        s.save("req-big", "audio/wav", &big, &pred)
            .unwrap_err()
            .kind(),
        "too_large"
    );
    assert_eq!(samples_on_disk(tmp.path()), want);
    // Reopening with a smaller quota prunes to it, again keeping the newest.
    drop(s);
    let s = sampler(tmp.path(), 1.0, quota / 3, Duration::from_secs(3600));
    assert_eq!(
        samples_on_disk(tmp.path()),
        BTreeSet::from(["req-6".to_string()])
    );
    assert_eq!(s.usage().0, 1);
}

#[test]
fn age_pruning_drops_samples_older_than_the_maximum_age() {
    let tmp = tempfile::tempdir().unwrap();
    let audio = fixture("wav_u8_8k_mono.wav");
    let pred = prediction(&[&[0.9, 0.1]]);
    let month = Duration::from_secs(30 * 86_400);
    {
        let s = sampler(tmp.path(), 1.0, 1 << 30, month);
        for id in ["old-1", "old-2", "young"] {
            s.save(id, "audio/wav", &audio, &pred).unwrap();
        }
    }
    // Age two of them by 40 days (as if saved then: the time is in meta.json).
    let forty_days_ago = std::time::SystemTime::now() - Duration::from_secs(40 * 86_400);
    let ms = forty_days_ago
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for id in ["old-1", "old-2"] {
        let p = tmp.path().join(id).join(META_FILE);
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        meta["saved_unix_ms"] = ms.into();
        std::fs::write(&p, serde_json::to_vec(&meta).unwrap()).unwrap();
    }
    let s = sampler(tmp.path(), 1.0, 1 << 30, month);
    assert_eq!(
        samples_on_disk(tmp.path()),
        BTreeSet::from(["young".to_string()])
    );
    // Saving prunes by age too: the young one stays while it is young.
    s.save("newer", "audio/wav", &audio, &pred).unwrap();
    assert_eq!(
        samples_on_disk(tmp.path()),
        BTreeSet::from(["young".to_string(), "newer".to_string()])
    );
}

#[test]
fn no_half_sample_is_ever_visible() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // Leftovers of a crash mid-save and mid-prune: removed on open, never seen as samples.
    std::fs::create_dir(dir.join(".tmp-req-crashed-1234")).unwrap();
    std::fs::write(dir.join(".tmp-req-crashed-1234/audio.ogg"), b"half").unwrap();
    std::fs::create_dir(dir.join(".trash-req-old-5678")).unwrap();
    let audio = Arc::new(fixture("crowsetta_forest.wav"));
    let pred = prediction(&[&[0.9, 0.1], &[0.3, 0.6]]);
    // Quota for ~4 samples so pruning runs while the reader looks.
    let quota = 4 * (audio.len() as u64 + 2_000);
    let s = Arc::new(sampler(&dir, 1.0, quota, Duration::from_secs(3600)));
    assert!(samples_on_disk(&dir).is_empty());

    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (dir, done, audio) = (dir.clone(), Arc::clone(&done), Arc::clone(&audio));
        std::thread::spawn(move || {
            let mut seen = 0usize;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                for e in std::fs::read_dir(&dir).unwrap() {
                    let e = e.unwrap();
                    let name = e.file_name().into_string().unwrap();
                    if name.starts_with('.') {
                        continue;
                    }
                    // Pruning may remove it under us; what is there must be whole.
                    let Ok(meta) = std::fs::read(e.path().join(META_FILE)) else {
                        assert!(!e.path().exists(), "{name} visible without meta.json");
                        continue;
                    };
                    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
                    if let Ok(a) = std::fs::read(e.path().join("audio.wav")) {
                        assert_eq!(a.len(), audio.len(), "{name}: partial audio visible");
                        assert_eq!(meta["audio_bytes"], audio.len());
                        seen += 1;
                    }
                }
            }
            seen
        })
    };
    for i in 0..40 {
        s.save(&format!("req-{i}"), "audio/wav", &audio, &pred)
            .unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let seen = reader.join().unwrap();
    assert!(seen > 0, "the reader never saw a sample");
    // Only whole samples and no staging directories are left.
    let left = samples_on_disk(&dir);
    assert!(left.iter().all(|n| n.starts_with("req-")), "{left:?}");
    assert_eq!(left.len(), 4);
}

/// The writer (the server's sampler and feedback store) and the reader (the data crate's
/// export) agree on the layout, and the rendered prediction JSON is what the export parses.
#[test]
fn what_the_server_kept_exports_as_a_labelling_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("serve-data");
    let (samples_dir, feedback_dir) = (data.join("samples"), data.join("feedback"));
    let s = sampler(&samples_dir, 1.0, 1 << 30, Duration::from_secs(3600));
    let ogg = fixture("crowsetta_forest.ogg");
    let mp3 = fixture("hawkears_common_yellowthroat.mp3");
    s.save(
        "req-a",
        "audio/ogg",
        &ogg,
        &prediction(&[&[0.9, 0.1, 0.0], &[0.2, 0.1, 0.7]]),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(3));
    s.save(
        "req-b",
        "audio/mpeg",
        &mp3,
        &prediction(&[&[0.1, 0.8, 0.05]]),
    )
    .unwrap();
    let store = FeedbackStore::open(&feedback_dir).unwrap();
    store.append(&fb("req-a", 1, Verdict::Right, None)).unwrap();
    // The latest feedback on a window wins; both are counted.
    store
        .append(&fb("req-a", 1, Verdict::Wrong, Some("sp0")))
        .unwrap();
    store.append(&fb("req-b", 0, Verdict::Right, None)).unwrap();
    store
        .append(&fb("req-unsampled", 0, Verdict::Wrong, None))
        .unwrap();
    store.append(&fb("req-b", 7, Verdict::Wrong, None)).unwrap(); // no such window

    let out = tmp.path().join("labelling");
    let sum = silencio_data::labelling::export(&samples_dir, Some(&feedback_dir), &out).unwrap();
    assert_eq!((sum.samples, sum.rows), (2, 3));
    assert_eq!((sum.feedback_matched, sum.feedback_unmatched), (3, 2));
    assert!(sum.skipped.is_empty());
    assert_eq!(std::fs::read(out.join("audio/req-a.ogg")).unwrap(), ogg);
    assert_eq!(std::fs::read(out.join("audio/req-b.mp3")).unwrap(), mp3);

    let text = std::fs::read_to_string(out.join(MANIFEST_FILE)).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>().join(","),
        MANIFEST_HEADER
    );
    let rows: Vec<HashMap<String, String>> = rdr.deserialize().map(|r| r.unwrap()).collect();
    let row = |id: &str, w: &str| {
        rows.iter()
            .find(|r| r["request_id"] == id && r["window"] == w)
            .unwrap()
            .clone()
    };
    let a0 = row("req-a", "0");
    assert_eq!(
        (a0["top_code"].as_str(), a0["verdict"].as_str()),
        ("sp0", "")
    );
    assert_eq!(a0["audio_path"], "audio/req-a.ogg");
    assert_eq!(a0["model_version"], "test@1");
    let a1 = row("req-a", "1");
    assert_eq!(a1["top_code"], "sp2");
    assert_eq!(a1["top_species"], "sp2:0.7000;sp0:0.2000;sp1:0.1000");
    assert_eq!(a1["start_s"], "5.000");
    assert_eq!(
        (a1["verdict"].as_str(), a1["correct_code"].as_str()),
        ("wrong", "sp0")
    );
    assert_eq!(a1["feedback_count"], "2");
    let b0 = row("req-b", "0");
    assert_eq!(
        (b0["top_code"].as_str(), b0["verdict"].as_str()),
        ("sp1", "right")
    );
    // An export error reaches the server's error type with its kind intact.
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), b"keep me").unwrap();
    let err =
        silencio_data::labelling::export(&samples_dir, Some(&feedback_dir), &mine).unwrap_err();
    assert_eq!(silencio_server::Error::from(err).kind(), "conflict");
}

// ---------------------------------------------------------------- sessions

#[test]
fn sessions_count_unique_species_over_the_threshold() {
    let sessions = Sessions::new(0.5);
    let nan = f32::NAN;
    // sp0 twice (0.9, 0.6), sp2 at exactly the threshold, sp1 below it, sp3 NaN.
    sessions.record(
        "walk-1",
        "test@1",
        &identification(&[&[0.9, 0.4, 0.1, nan], &[0.6, 0.49, 0.5, 0.0]]),
    );
    let s = sessions.get("walk-1").unwrap();
    assert_eq!((s.requests, s.windows, s.unique_species), (1, 2, 2));
    let codes: Vec<_> = s.species.iter().map(|x| x.code.as_str()).collect();
    assert_eq!(codes, ["sp0", "sp2"]);
    assert_eq!(s.species[0].detections, 2);
    assert_eq!(s.species[0].max_score, 0.9);
    assert_eq!(s.species[0].common_name, "Bird 0");
    // A second request adds sp1 and re-detects sp0; another model version is noted.
    sessions.record(
        "walk-1",
        "test@2",
        &identification(&[&[0.95, 0.7, 0.0, 0.0]]),
    );
    let s = sessions.get("walk-1").unwrap();
    assert_eq!((s.requests, s.windows, s.unique_species), (2, 3, 3));
    let codes: Vec<_> = s.species.iter().map(|x| x.code.as_str()).collect();
    assert_eq!(codes, ["sp0", "sp2", "sp1"]);
    assert_eq!(s.species[0].detections, 3);
    assert_eq!(s.species[0].max_score, 0.95);
    assert_eq!(s.model_versions, ["test@1", "test@2"]);
    assert!(s.started_at <= s.last_seen_at);
    // Sessions are separate; unknown ones are None.
    sessions.record(
        "walk-2",
        "test@1",
        &identification(&[&[0.1, 0.1, 0.1, 0.1]]),
    );
    assert_eq!(sessions.get("walk-2").unwrap().unique_species, 0);
    assert!(sessions.get("walk-3").is_none());
    assert_eq!(sessions.mean_unique_species(), 1.5);
    // An id the API would refuse is not recorded.
    sessions.record("", "test@1", &identification(&[&[0.9, 0.9, 0.9, 0.9]]));
    assert_eq!(sessions.len(), 2);
}

#[test]
fn idle_sessions_expire_and_the_count_is_bounded() {
    let sessions = Sessions::with_limits(0.5, 100, Duration::from_millis(50));
    sessions.record("a", "m@1", &identification(&[&[0.9, 0.1]]));
    assert!(sessions.get("a").is_some());
    std::thread::sleep(Duration::from_millis(150));
    assert!(
        sessions.get("a").is_none(),
        "an idle session outlived the idle time"
    );
    assert!(sessions.is_empty());
    assert_eq!(sessions.mean_unique_species(), 0.0);

    // Beyond the maximum, the least recently seen session goes.
    let sessions = Sessions::with_limits(0.5, 3, Duration::from_secs(3600));
    let id = identification(&[&[0.9, 0.1]]);
    for s in ["s1", "s2", "s3"] {
        sessions.record(s, "m@1", &id);
    }
    sessions.record("s1", "m@1", &id); // s2 is now the least recent
    sessions.record("s4", "m@1", &id);
    assert_eq!(sessions.len(), 3);
    assert!(sessions.get("s2").is_none());
    for s in ["s1", "s3", "s4"] {
        assert!(sessions.get(s).is_some(), "{s} evicted");
    }
    assert_eq!(sessions.get("s1").unwrap().requests, 2);
}

#[test]
fn the_durable_state_exports_its_metrics() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let tmp = tempfile::tempdir().unwrap();
    metrics::with_local_recorder(&recorder, || {
        let store = FeedbackStore::open(&tmp.path().join("feedback")).unwrap();
        store.append(&fb("r1", 0, Verdict::Wrong, None)).unwrap();
        store.append(&fb("r2", 0, Verdict::Wrong, None)).unwrap();
        store.append(&fb("r3", 0, Verdict::Right, None)).unwrap();
        let s = sampler(
            &tmp.path().join("samples"),
            1.0,
            1 << 30,
            Duration::from_secs(60),
        );
        s.save(
            "r1",
            "audio/wav",
            &fixture("wav_u8_8k_mono.wav"),
            &prediction(&[&[0.9]]),
        )
        .unwrap();
        let sessions = Sessions::new(0.5);
        sessions.record("a", "m@1", &identification(&[&[0.9, 0.8, 0.1]]));
        sessions.record("b", "m@1", &identification(&[&[0.9, 0.1, 0.1]]));
    });
    let text = handle.render();
    for want in [
        r#"silencio_feedback_total{verdict="wrong"} 2"#,
        r#"silencio_feedback_total{verdict="right"} 1"#,
        "silencio_sampled_total 1",
        "silencio_session_unique_species 1.5",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "{want:?} missing from\n{text}"
        );
    }
}

// ---------------------------------------------------------------- auth

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

#[test]
fn api_keys_are_accepted_in_both_headers_and_refused_otherwise() {
    let key = "s3cret-key-0123";
    for ok in [
        headers(&[("authorization", "Bearer s3cret-key-0123")]),
        headers(&[("authorization", "bearer  s3cret-key-0123 ")]),
        headers(&[("x-api-key", "s3cret-key-0123")]),
        headers(&[
            ("x-api-key", "wrong"),
            ("authorization", "Bearer s3cret-key-0123"),
        ]),
    ] {
        check_api_key(&ok, key).unwrap();
    }
    for bad in [
        headers(&[]),
        headers(&[("authorization", "Bearer s3cret-key-012")]),
        headers(&[("authorization", "Bearer s3cret-key-01234")]),
        headers(&[("authorization", "Basic s3cret-key-0123")]),
        headers(&[("authorization", "s3cret-key-0123")]),
        headers(&[("x-api-key", "S3CRET-KEY-0123")]),
        headers(&[("x-api-key", "")]),
    ] {
        let err = check_api_key(&bad, key).unwrap_err();
        assert_eq!(err.kind(), "unauthorized");
        let resp = err.into_response();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    }
    // An empty configured key opens nothing.
    assert!(check_api_key(&headers(&[("x-api-key", "")]), "").is_err());
}

// ---------------------------------------------------------------- deploy/

/// Every metric the server exports: (name, is_histogram, labels).
const METRICS: &[(&str, bool, &[&str])] = &[
    ("silencio_http_requests_total", false, &["route", "status"]),
    ("silencio_http_request_duration_seconds", true, &["route"]),
    ("silencio_queue_depth", false, &[]),
    ("silencio_batch_size", true, &[]),
    ("silencio_inference_seconds", true, &["model_version"]),
    ("silencio_real_time_factor", true, &["model_version"]),
    ("silencio_predictions_total", false, &["species"]),
    ("silencio_top_score", true, &[]),
    ("silencio_rejected_total", false, &["reason"]),
    ("silencio_feedback_total", false, &["verdict"]),
    ("silencio_sampled_total", false, &[]),
    ("silencio_session_unique_species", false, &[]),
];

/// Labels Prometheus adds or histograms carry.
const IMPLICIT_LABELS: &[&str] = &["le", "instance", "job", "service"];

fn dashboard() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("deploy/grafana-dashboard.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every panel, rows' nested panels included.
fn panels(dash: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut stack: Vec<serde_json::Value> = dash["panels"].as_array().unwrap().clone();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p.get("panels").and_then(|v| v.as_array()) {
            stack.extend(inner.iter().cloned());
        }
        out.push(p);
    }
    out
}

fn exprs(dash: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap().to_string();
            out.push((title, t["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// Identifiers in a PromQL expression (metric names, labels, functions), with what follows each.
fn tokens(expr: &str) -> Vec<(String, char)> {
    let mut out = Vec::new();
    let b: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < b.len() {
        if b[i] == '"' {
            // Skip string literals (label values, regexes).
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if b[i] == '[' {
            // Range durations such as [5m] or [$__rate_interval].
            while i < b.len() && b[i] != ']' {
                i += 1;
            }
        } else if b[i].is_ascii_alphabetic() || b[i] == '_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            let next = b[i..]
                .iter()
                .copied()
                .find(|c| !c.is_whitespace())
                .unwrap_or(' ');
            out.push((b[start..i].iter().collect(), next));
        } else {
            i += 1;
        }
    }
    out
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_the_server_exports() {
    // The list here is the server's own (its metrics module names the contract).
    let ours: BTreeSet<&str> = METRICS.iter().map(|m| m.0).collect();
    let server: BTreeSet<&str> = silencio_server::metrics::NAMES.into_iter().collect();
    assert_eq!(
        ours, server,
        "the server's metric names changed: update METRICS"
    );
    let dash = dashboard();
    assert_eq!(dash["uid"], "silencio-serve");
    assert!(dash["schemaVersion"].as_u64().unwrap() >= 30);
    let all = exprs(&dash);
    assert!(all.len() >= 15, "only {} queries", all.len());
    let known: HashMap<&str, (bool, &[&str])> =
        METRICS.iter().map(|(n, h, l)| (*n, (*h, *l))).collect();
    let all_labels: HashSet<&str> = METRICS
        .iter()
        .flat_map(|(_, _, l)| l.iter().copied())
        .chain(IMPLICIT_LABELS.iter().copied())
        .collect();
    let mut used = HashSet::new();
    for (title, expr) in &all {
        let mut metrics_here = 0;
        for (tok, next) in tokens(expr) {
            if tok.starts_with("silencio_") {
                let base = tok.as_str();
                let (name, hist_part) = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        base.strip_suffix(s)
                            .filter(|b| known.get(b).is_some_and(|k| k.0))
                    })
                    .map_or((base, false), |b| (b, true));
                let Some((&name, &(is_hist, _))) = known.get_key_value(name) else {
                    panic!("panel {title:?} queries {tok}, which the server does not export");
                };
                assert!(
                    !is_hist || hist_part,
                    "panel {title:?} queries histogram {name} without _bucket/_sum/_count"
                );
                used.insert(name);
                metrics_here += 1;
            } else if next == '=' || next == '!' {
                // A label matcher: it must be a label some metric carries.
                assert!(
                    all_labels.contains(tok.as_str()),
                    "panel {title:?}: unknown label {tok}"
                );
            }
        }
        assert!(
            metrics_here > 0,
            "panel {title:?} queries no silencio metric: {expr}"
        );
        // `by (...)` groupings use known labels only.
        for part in expr.split("by (").skip(1) {
            for label in part.split(')').next().unwrap().split(',') {
                let label = label.trim();
                assert!(
                    all_labels.contains(label),
                    "panel {title:?} groups by unknown {label}"
                );
            }
        }
    }
    // The dashboard covers every exported metric.
    let missing: Vec<_> = METRICS
        .iter()
        .map(|m| m.0)
        .filter(|m| !used.contains(m))
        .collect();
    assert!(missing.is_empty(), "metrics with no panel: {missing:?}");
    // Panels have a place on the grid and a Prometheus data source.
    for p in panels(&dash) {
        assert!(p["gridPos"]["w"].as_u64().unwrap() > 0, "{}", p["title"]);
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["type"], "prometheus", "{}", p["title"]);
        }
    }
}

fn promtool() -> Option<String> {
    if std::env::var_os("SILENCIO_SKIP_PROMTOOL").is_some() {
        eprintln!("SILENCIO_SKIP_PROMTOOL is set: promtool checks skipped");
        return None;
    }
    Some(std::env::var("SILENCIO_PROMTOOL").unwrap_or_else(|_| "promtool".into()))
}

fn run_promtool(bin: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {bin} ({e}): install it (Debian: apt-get install prometheus), point \
                 SILENCIO_PROMTOOL at it, or set SILENCIO_SKIP_PROMTOOL=1"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn promtool_accepts_the_prometheus_config() {
    let Some(bin) = promtool() else { return };
    let cfg = repo().join("deploy/prometheus/prometheus.yml");
    let (ok, text) = run_promtool(&bin, &["check", "config", cfg.to_str().unwrap()]);
    assert!(
        ok && text.contains("SUCCESS"),
        "promtool check config failed:\n{text}"
    );
    let yaml = std::fs::read_to_string(&cfg).unwrap();
    assert!(yaml.contains("127.0.0.1:8080") && yaml.contains("scrape_interval: 5s"));
    // The check is meaningful: a broken copy is refused.
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("prometheus.yml");
    // With the rules it names beside it, so that the interval is all that is wrong.
    std::fs::copy(
        repo().join("deploy/prometheus/alerts.yml"),
        tmp.path().join("alerts.yml"),
    )
    .unwrap();
    std::fs::write(
        &broken,
        yaml.replace("scrape_interval: 5s", "scrape_interval: 5 parsecs"),
    )
    .unwrap();
    let (ok, text) = run_promtool(&bin, &["check", "config", broken.to_str().unwrap()]);
    assert!(!ok, "promtool accepted a broken config:\n{text}");
}

#[test]
fn promtool_parses_every_dashboard_query() {
    let Some(bin) = promtool() else { return };
    // Each query becomes a recording rule, so `promtool check rules` parses its PromQL.
    let mut rules = String::from("groups:\n  - name: silencio_dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs(&dashboard()).iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "1m");
        rules.push_str(&format!(
            "      - record: silencio:dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("rules.yml");
    std::fs::write(&path, &rules).unwrap();
    let (ok, text) = run_promtool(&bin, &["check", "rules", path.to_str().unwrap()]);
    assert!(
        ok && text.contains("SUCCESS"),
        "promtool check rules failed:\n{text}\n{rules}"
    );
    // And a query with a syntax error is refused, so the check has teeth.
    std::fs::write(&path, rules.replace("sum by (route)", "sum by (route")).unwrap();
    assert!(!run_promtool(&bin, &["check", "rules", path.to_str().unwrap()]).0);
}
