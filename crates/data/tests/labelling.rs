//! The labelling export on real files: samples laid out as the server writes them (built here by
//! hand; `crates/server/tests/durable.rs` exports what the server's own sampler saved) and a
//! feedback log become audio copies and a manifest that joins the feedback; the log reader skips
//! a torn final line and refuses a corrupt one.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use silencio_api::{Feedback, Verdict};
use silencio_data::labelling::{
    FEEDBACK_LOG_FILE, MANIFEST_FILE, MANIFEST_HEADER, META_FILE, PREDICTION_FILE, SampleMeta,
    export, read_feedback_log,
};

fn fixture(name: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/audio");
    std::fs::read(dir.join(name)).unwrap()
}

fn fb(request_id: &str, window: usize, verdict: Verdict, code: Option<&str>) -> Feedback {
    Feedback {
        request_id: request_id.into(),
        window,
        verdict,
        correct_code: code.map(str::to_string),
        received_at: silencio_common::time::now_rfc3339(),
    }
}

/// Writes `entries` as the server's feedback log in `dir`.
fn write_log(dir: &Path, entries: &[Feedback]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut text = String::new();
    for f in entries {
        text.push_str(&serde_json::to_string(f).unwrap());
        text.push('\n');
    }
    std::fs::write(dir.join(FEEDBACK_LOG_FILE), text).unwrap();
}

/// The identify answer as the API renders it: windows of 5 s, species best first (top 3).
fn prediction(scores: &[&[f64]]) -> serde_json::Value {
    let windows: Vec<serde_json::Value> = scores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut species: Vec<(usize, f64)> = s.iter().copied().enumerate().collect();
            species.sort_by(|a, b| b.1.total_cmp(&a.1));
            let species: Vec<serde_json::Value> = species
                .into_iter()
                .take(3)
                .map(|(c, score)| serde_json::json!({"code": format!("sp{c}"), "score": score}))
                .collect();
            serde_json::json!({
                "start_s": 5.0 * i as f64,
                "end_s": 5.0 * (i + 1) as f64,
                "species": species,
            })
        })
        .collect();
    serde_json::json!({"model_version": "test@1", "windows": windows})
}

/// Writes one sample directory the way the server's sampler lays it out.
fn save(
    samples: &Path,
    id: &str,
    ext: &str,
    audio: &[u8],
    pred: &serde_json::Value,
    saved_unix_ms: u64,
) {
    let d = samples.join(id);
    std::fs::create_dir_all(&d).unwrap();
    let audio_file = format!("audio.{ext}");
    std::fs::write(d.join(&audio_file), audio).unwrap();
    std::fs::write(
        d.join(PREDICTION_FILE),
        serde_json::to_vec_pretty(pred).unwrap(),
    )
    .unwrap();
    let meta = SampleMeta {
        request_id: id.into(),
        content_type: format!("audio/{ext}"),
        audio_file,
        audio_bytes: audio.len() as u64,
        model_version: pred["model_version"].as_str().map(str::to_string),
        saved_at: "2026-05-01T06:12:03.250Z".into(),
        saved_unix_ms,
    };
    std::fs::write(d.join(META_FILE), serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
}

fn names_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// The manifest's rows as maps by column name, after checking the header.
fn manifest(out: &Path) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(out.join(MANIFEST_FILE)).unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        rdr.headers().unwrap().iter().collect::<Vec<_>>().join(","),
        MANIFEST_HEADER
    );
    rdr.deserialize().map(|r| r.unwrap()).collect()
}

#[test]
fn export_writes_a_manifest_that_joins_feedback() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("serve-data");
    let (samples_dir, feedback_dir) = (data.join("samples"), data.join("feedback"));
    let ogg = fixture("crowsetta_forest.ogg");
    let mp3 = fixture("hawkears_common_yellowthroat.mp3");
    save(
        &samples_dir,
        "req-a",
        "ogg",
        &ogg,
        &prediction(&[&[0.9, 0.1, 0.0], &[0.2, 0.1, 0.7]]),
        1_000,
    );
    save(
        &samples_dir,
        "req-b",
        "mp3",
        &mp3,
        &prediction(&[&[0.1, 0.8, 0.05]]),
        1_003,
    );
    write_log(
        &feedback_dir,
        &[
            fb("req-a", 1, Verdict::Right, None),
            // The latest feedback on a window wins; both are counted.
            fb("req-a", 1, Verdict::Wrong, Some("sp0")),
            fb("req-b", 0, Verdict::Right, None),
            fb("req-unsampled", 0, Verdict::Wrong, None),
            fb("req-b", 7, Verdict::Wrong, None), // no such window
        ],
    );

    let out = tmp.path().join("labelling");
    let sum = export(&samples_dir, Some(&feedback_dir), &out).unwrap();
    assert_eq!((sum.samples, sum.rows), (2, 3));
    assert_eq!((sum.feedback_matched, sum.feedback_unmatched), (3, 2));
    assert!(sum.skipped.is_empty());
    assert_eq!(sum.out, out);
    assert_eq!(std::fs::read(out.join("audio/req-a.ogg")).unwrap(), ogg);
    assert_eq!(std::fs::read(out.join("audio/req-b.mp3")).unwrap(), mp3);

    let rows = manifest(&out);
    // Oldest sample first, its windows in order.
    let order: Vec<_> = rows
        .iter()
        .map(|r| format!("{}/{}", r["request_id"], r["window"]))
        .collect();
    assert_eq!(order, ["req-a/0", "req-a/1", "req-b/0"]);
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
    assert_eq!(a0["saved_at"], "2026-05-01T06:12:03.250Z");
    assert_eq!(
        (a0["top_score"].as_str(), a0["end_s"].as_str()),
        ("0.9000", "5.000")
    );
    assert_eq!(a0["feedback_count"], "0");
    let a1 = row("req-a", "1");
    assert_eq!(a1["top_code"], "sp2");
    assert_eq!(a1["top_species"], "sp2:0.7000;sp0:0.2000;sp1:0.1000");
    assert_eq!(a1["start_s"], "5.000");
    assert_eq!(
        (a1["verdict"].as_str(), a1["correct_code"].as_str()),
        ("wrong", "sp0")
    );
    assert_eq!(a1["feedback_count"], "2");
    assert!(!a1["feedback_received_at"].is_empty());
    let b0 = row("req-b", "0");
    assert_eq!(
        (b0["top_code"].as_str(), b0["verdict"].as_str()),
        ("sp1", "right")
    );

    // Re-exporting replaces the earlier export; an unrelated directory is never overwritten.
    let text = std::fs::read_to_string(out.join(MANIFEST_FILE)).unwrap();
    export(&samples_dir, Some(&feedback_dir), &out).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join(MANIFEST_FILE)).unwrap(),
        text
    );
    let mine = tmp.path().join("mine");
    std::fs::create_dir(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), b"keep me").unwrap();
    let err = export(&samples_dir, Some(&feedback_dir), &mine).unwrap_err();
    assert_eq!(err.kind(), "conflict");
    assert_eq!(std::fs::read(mine.join("notes.txt")).unwrap(), b"keep me");
    // No staging directories are left beside the exports.
    let beside: Vec<_> = names_in(tmp.path()).into_iter().collect();
    assert_eq!(beside, ["labelling", "mine", "serve-data"]);
}

#[test]
fn unreadable_samples_are_skipped_and_audio_without_windows_still_gets_a_row() {
    let tmp = tempfile::tempdir().unwrap();
    let samples = tmp.path().join("samples");
    let wav = fixture("wav_u8_8k_mono.wav");
    save(&samples, "quiet", "wav", &wav, &serde_json::json!({}), 5);
    // A directory without meta.json (not a sample), one whose prediction does not parse, and
    // the server's staging leftovers (hidden): none becomes a row.
    std::fs::create_dir_all(samples.join("stray")).unwrap();
    save(&samples, "broken", "wav", &wav, &serde_json::json!({}), 6);
    std::fs::write(samples.join("broken").join(PREDICTION_FILE), b"{not json").unwrap();
    std::fs::create_dir_all(samples.join(".tmp-req-x-1")).unwrap();

    let out = tmp.path().join("set");
    // Without a feedback directory every row is unlabelled.
    let sum = export(&samples, None, &out).unwrap();
    assert_eq!((sum.samples, sum.rows), (1, 1));
    assert_eq!(
        sum.skipped.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"broken".to_string(), &"stray".to_string()])
    );
    let rows = manifest(&out);
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(
        (r["request_id"].as_str(), r["audio_path"].as_str()),
        ("quiet", "audio/quiet.wav")
    );
    assert_eq!((r["window"].as_str(), r["top_code"].as_str()), ("", ""));
    assert_eq!(
        (r["model_version"].as_str(), r["feedback_count"].as_str()),
        ("", "0")
    );
    assert_eq!(
        names_in(&out.join("audio")),
        BTreeSet::from(["quiet.wav".to_string()])
    );

    // No samples directory at all is an error, and nothing is written.
    let err = export(&tmp.path().join("nowhere"), None, &tmp.path().join("x")).unwrap_err();
    assert_eq!(err.kind(), "missing");
    assert!(!tmp.path().join("x").exists());
    // Nor is a target without a directory name accepted.
    let err = export(&samples, None, Path::new("/")).unwrap_err();
    assert_eq!(err.kind(), "invalid_options");
}

#[test]
fn the_log_reader_skips_a_torn_tail_and_refuses_a_corrupt_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().join("feedback");
    // An absent log reads as empty.
    assert!(read_feedback_log(&dir).unwrap().is_empty());
    let kept = vec![
        fb("a", 0, Verdict::Right, None),
        fb("b", 2, Verdict::Wrong, Some("sp1")),
    ];
    write_log(&dir, &kept);
    let log = dir.join(FEEDBACK_LOG_FILE);
    // A crash mid-append: half a line, no newline. Readers skip it.
    let mut bytes = std::fs::read(&log).unwrap();
    let line = serde_json::to_string(&fb("torn", 9, Verdict::Wrong, None)).unwrap();
    bytes.extend_from_slice(&line.as_bytes()[..line.len() / 2]);
    std::fs::write(&log, &bytes).unwrap();
    assert_eq!(read_feedback_log(&dir).unwrap(), kept);
    // A whole line that does not parse is an error naming its line, not a silent skip.
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.truncate(silencio_data::labelling::whole_lines_len(&bytes));
    bytes.extend_from_slice(b"\n{not json}\n");
    std::fs::write(&log, &bytes).unwrap();
    let err = read_feedback_log(&dir).unwrap_err();
    assert_eq!(err.kind(), "corrupt");
    assert!(err.to_string().contains("line 4"), "{err}");
    // The export reads the same log, so it refuses too rather than drop feedback.
    let samples = tmp.path().join("samples");
    std::fs::create_dir_all(&samples).unwrap();
    let err = export(&samples, Some(&dir), &tmp.path().join("set")).unwrap_err();
    assert_eq!(err.kind(), "corrupt");
}

/// One window's identify answer with `code` on top.
fn window_top(i: usize, code: &str) -> serde_json::Value {
    serde_json::json!({
        "start_s": 5.0 * i as f64,
        "end_s": 5.0 * (i + 1) as f64,
        "species": [{"code": code, "score": 0.9}],
    })
}

#[test]
fn feedback_becomes_training_rows_beside_the_base_data() {
    use silencio_data::feedback_rows::{FEEDBACK_DIR, NEGATIVES_FILE, build_root};
    use silencio_data::train_csv::read_train_csv;

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("serve-data");
    let (samples_dir, feedback_dir) = (data.join("samples"), data.join("feedback"));
    let wav = fixture("crowsetta_forest.wav");
    let pred = |codes: &[&str]| {
        let w: Vec<_> = codes
            .iter()
            .enumerate()
            .map(|(i, c)| window_top(i, c))
            .collect();
        serde_json::json!({"model_version": "demo@1", "windows": w})
    };
    save(
        &samples_dir,
        "req1",
        "wav",
        &wav,
        &pred(&["comyel", "norcar"]),
        1,
    );
    save(
        &samples_dir,
        "req2",
        "wav",
        &wav,
        &pred(&["woothr", "eastow"]),
        2,
    );
    save(&samples_dir, "req3", "wav", &wav, &pred(&["gretit1"]), 3);
    write_log(
        &feedback_dir,
        &[
            fb("req1", 0, Verdict::Right, None),
            fb("req1", 1, Verdict::Wrong, Some("bkcchi")),
            fb("req2", 0, Verdict::Wrong, None),
            fb("req2", 1, Verdict::Wrong, Some("not-a-species")),
        ],
    );
    let exported = tmp.path().join("labelling");
    export(&samples_dir, Some(&feedback_dir), &exported).unwrap();

    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/demo/birdclef");
    let root = tmp.path().join("root");
    let s = build_root(&base, &exported, &root).unwrap();
    assert_eq!((s.confirmed, s.corrected, s.negatives), (1, 1, 1));
    assert_eq!(s.rows_added, 2);
    assert_eq!(s.unlabelled, 1, "req3 has no feedback");
    assert_eq!(s.skipped.len(), 1, "{:?}", s.skipped);
    assert!(s.skipped[0].contains("not-a-species"), "{:?}", s.skipped);

    let (base_rows, _) = read_train_csv(&base.join("train.csv")).unwrap();
    let (rows, problems) = read_train_csv(&root.join("train.csv")).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(rows.len(), base_rows.len() + 2);
    assert_eq!(
        rows[..base_rows.len()],
        base_rows[..],
        "base rows unchanged"
    );
    let added = &rows[base_rows.len()..];
    let labels: Vec<(&str, &str)> = added
        .iter()
        .map(|r| (r.primary_label.as_str(), r.filename.as_str()))
        .collect();
    assert_eq!(
        labels,
        [
            ("comyel", "feedback/req1_w0.ogg"),
            ("bkcchi", "feedback/req1_w1.ogg")
        ]
    );
    // One request, one split group.
    assert!(added.iter().all(|r| r.url == "feedback:req1"));
    // Each clip is its window: 5 s at 32 kHz.
    for r in added {
        let d = silencio_audio::decode_path(
            root.join("train_audio").join(&r.filename),
            &Default::default(),
        )
        .unwrap();
        let secs = d.samples.len() as f64 / f64::from(d.sample_rate);
        assert!((secs - 5.0).abs() < 0.05, "{} lasts {secs} s", r.filename);
    }
    let neg = std::fs::read_to_string(root.join(NEGATIVES_FILE)).unwrap();
    assert_eq!(neg, "filename,primary_label\nfeedback/req2_w0.ogg,woothr\n");
    // The base's recordings are there through links; the base itself is untouched.
    assert!(root.join("train_audio/comyel").is_dir());
    assert!(root.join("taxonomy.csv").is_file());
    assert!(root.join("train_soundscapes").is_dir());
    assert!(!base.join("train_audio").join(FEEDBACK_DIR).exists());
    // Built once.
    assert!(build_root(&base, &exported, &root).is_err());
}
