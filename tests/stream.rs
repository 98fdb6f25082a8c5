//! The online pipeline end to end, through the real `silencio` binary: `simulate` writes
//! 1-minute OGG files cut from real soundscapes with real calls overlaid, `watch` turns each
//! into a BirdCLEF submission CSV exactly once — across a SIGKILL and a restart — and
//! quarantines files it cannot read while the stream goes on.
//!
//! The model is a small random bundle (the loop is under test, not accuracy); each CSV is
//! compared with the scores `Classifier::identify_path` gives in this process for the same
//! file, which shows that the consumer runs the offline features and model.
#![allow(clippy::unwrap_used)]

#[path = "../crates/server/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use silencio_infer::Classifier;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_silencio")
}

fn soundscapes() -> PathBuf {
    common::demo().join("train_soundscapes")
}

fn device() -> burn::tensor::Device {
    silencio_infer::parse_device("flex").unwrap()
}

/// A small random-weight bundle over the demo taxonomy (the server tests' own), so that
/// label and prediction columns are the same codes.
fn write_bundle(dir: &Path) {
    common::write_bundle(dir, "stream-test", "1");
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(bin()).args(args).output().unwrap();
    eprintln!(
        "$ silencio {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn spawn(args: &[&str], log: &Path) -> Child {
    let f = std::fs::File::create(log).unwrap();
    Command::new(bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn with_ext(dir: &Path, ext: &str) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| n.ends_with(ext) && !n.starts_with('.'))
        .collect()
}

fn ledger(out: &Path) -> Vec<serde_json::Value> {
    match std::fs::read_to_string(out.join("ledger.jsonl")) {
        Ok(t) => t
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Asserts that `csv` is the submission of `audio`: row ids `{stem}_5 … {stem}_60`, the
/// bundle's species as columns, and the scores `Classifier::identify_path` gives (1e-6).
fn assert_matches_offline(c: &Classifier, audio: &Path, csv: &Path) {
    let stem = audio.file_stem().unwrap().to_str().unwrap();
    let t = silencio_eval::submission::read_submission(csv).unwrap();
    let id = c.identify_path(audio).unwrap();
    assert_eq!(id.windows.len(), 12, "{}", audio.display());
    let want_ids: Vec<String> = (1..=12).map(|i| format!("{stem}_{}", 5 * i)).collect();
    assert_eq!(t.row_ids, want_ids);
    let codes: Vec<String> = c.species().iter().map(|s| s.code.clone()).collect();
    assert_eq!(t.species, codes);
    for (r, w) in id.windows.iter().enumerate() {
        for (j, want) in w.scores.iter().enumerate() {
            let got = t.values.row(r)[j];
            assert!(
                (got - want).abs() <= 1e-6,
                "{} row {r} col {j}: {got} vs {want}",
                csv.display()
            );
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn simulate_then_watch_scores_every_file_once_like_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, input, out) = (
        tmp.path().join("bundle"),
        tmp.path().join("in"),
        tmp.path().join("out"),
    );
    write_bundle(&bundle);

    let o = run(&[
        "simulate",
        "--soundscapes",
        s(&soundscapes()),
        "--out",
        s(&input),
        "--every",
        "0",
        "--count",
        "3",
        "--overlay-calls",
        s(&common::demo()),
        "--pool",
        "all",
        "--snr",
        "-5,10",
        "--seed",
        "7",
    ]);
    assert!(o.status.success());
    let oggs = with_ext(&input, ".ogg");
    assert_eq!(
        oggs,
        [
            "SIM_20250101_060000.ogg",
            "SIM_20250101_060100.ogg",
            "SIM_20250101_060200.ogg"
        ]
    );
    // Nothing else: labels beside each file, no staging or temp file left.
    assert_eq!(names(&input).len(), 6, "{:?}", names(&input));
    let codes: Vec<String> = common::taxonomy().into_iter().map(|s| s.code).collect();
    let mut positives = 0.0;
    for ogg in &oggs {
        let stem = ogg.trim_end_matches(".ogg");
        let labels =
            silencio_eval::submission::read_solution(input.join(format!("{stem}.labels.csv")))
                .unwrap();
        assert_eq!(labels.species, codes);
        let ids: Vec<String> = (1..=12).map(|i| format!("{stem}_{}", 5 * i)).collect();
        assert_eq!(labels.row_ids, ids);
        positives += labels.values.data().iter().sum::<f32>();
        let d = silencio_audio::decode_path(input.join(ogg), &Default::default()).unwrap();
        assert_eq!(d.info.sample_rate, 32_000);
        assert!(
            (d.info.duration_s - 60.0).abs() < 0.05,
            "{}",
            d.info.duration_s
        );
    }
    assert!(positives >= 3.0, "calls were overlaid: {positives} labels");

    let o = run(&[
        "watch",
        "--in",
        s(&input),
        "--out",
        s(&out),
        "--model",
        s(&bundle),
        "--once",
        "--settle",
        "100ms",
    ]);
    assert!(o.status.success());
    let c = Classifier::load(&bundle, &device()).unwrap();
    let csvs = with_ext(&out, ".csv");
    assert_eq!(csvs.len(), 3, "{csvs:?}");
    for ogg in &oggs {
        let stem = ogg.trim_end_matches(".ogg");
        assert_matches_offline(&c, &input.join(ogg), &out.join(format!("{stem}.csv")));
    }
    let l = ledger(&out);
    assert_eq!(l.len(), 3);
    for e in &l {
        assert_eq!(e["status"], "done");
        assert_eq!(e["windows"], 12);
        assert_eq!(e["model_version"], "stream-test@1");
        assert_eq!(e["sha256"].as_str().unwrap().len(), 64);
    }

    // A second run finds everything done: no new ledger line, outputs untouched.
    let before: Vec<Vec<u8>> = csvs
        .iter()
        .map(|n| std::fs::read(out.join(n)).unwrap())
        .collect();
    let o = run(&[
        "watch",
        "--in",
        s(&input),
        "--out",
        s(&out),
        "--model",
        s(&bundle),
        "--once",
    ]);
    assert!(o.status.success());
    assert_eq!(ledger(&out).len(), 3);
    let after: Vec<Vec<u8>> = csvs
        .iter()
        .map(|n| std::fs::read(out.join(n)).unwrap())
        .collect();
    assert_eq!(before, after);
    assert!(String::from_utf8_lossy(&o.stderr).contains("stopped: 0 file(s)"));
}

#[test]
fn a_sigkilled_watcher_restarts_without_duplicates_or_partial_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, input, out) = (
        tmp.path().join("bundle"),
        tmp.path().join("in"),
        tmp.path().join("out"),
    );
    write_bundle(&bundle);
    std::fs::create_dir_all(&input).unwrap();
    const N: usize = 6;
    let n = N.to_string();
    let mut producer = spawn(
        &[
            "simulate",
            "--soundscapes",
            s(&soundscapes()),
            "--out",
            s(&input),
            "--every",
            "1s",
            "--count",
            &n,
            "--seed",
            "3",
        ],
        &tmp.path().join("simulate.log"),
    );
    let watch_args = [
        "watch",
        "--in",
        s(&input),
        "--out",
        s(&out),
        "--model",
        s(&bundle),
        "--settle",
        "200ms",
        "--sweep-every",
        "1s",
    ];
    let mut consumer = spawn(&watch_args, &tmp.path().join("watch1.log"));
    // Kill it mid-stream: some outputs written, the producer still going.
    wait_for("the first outputs", Duration::from_secs(300), || {
        ledger(&out).len() >= 2
    });
    consumer.kill().unwrap(); // SIGKILL
    consumer.wait().unwrap();
    let done_before_kill = ledger(&out).len();
    assert!(
        done_before_kill < N,
        "the kill came after the end of the stream"
    );

    // What a kill at the worst moments leaves, made certain rather than left to timing: a temp
    // CSV cut off half-way, and an output whose ledger line was torn off mid-append.
    std::fs::write(
        out.join(".SIM_20250101_069999.csv.4242.tmp"),
        "row_id,a\nX_5",
    )
    .unwrap();
    let text = std::fs::read_to_string(out.join("ledger.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // The last whole line (the kill itself may have torn a line after it: that one goes too).
    let last = lines
        .iter()
        .rposition(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .unwrap();
    let torn: serde_json::Value = serde_json::from_str(lines[last]).unwrap();
    let mut kept = lines[..last].join("\n");
    if last > 0 {
        kept.push('\n');
    }
    kept.push_str(&lines[last][..20]);
    std::fs::write(out.join("ledger.jsonl"), kept).unwrap();
    let torn_file = torn["file"].as_str().unwrap().to_string();
    let torn_csv = std::fs::read(out.join(torn["output"].as_str().unwrap())).unwrap();

    // Restart while the producer is still feeding; let it finish the stream.
    let mut consumer = spawn(&watch_args, &tmp.path().join("watch2.log"));
    assert!(producer.wait().unwrap().success());
    wait_for("every output", Duration::from_secs(300), || {
        ledger(&out).len() >= N
    });
    consumer.kill().unwrap();
    consumer.wait().unwrap();
    eprintln!(
        "watch after restart:\n{}",
        std::fs::read_to_string(tmp.path().join("watch2.log")).unwrap()
    );

    // Exactly one complete output per input, nothing partial, each input once in the ledger.
    let oggs = with_ext(&input, ".ogg");
    assert_eq!(oggs.len(), N);
    let c = Classifier::load(&bundle, &device()).unwrap();
    for ogg in &oggs {
        let stem = ogg.trim_end_matches(".ogg");
        assert_matches_offline(&c, &input.join(ogg), &out.join(format!("{stem}.csv")));
    }
    let mut left = names(&out);
    left.retain(|n| n != "ledger.jsonl" && n != "quarantine");
    let want: Vec<String> = oggs.iter().map(|o| o.replace(".ogg", ".csv")).collect();
    assert_eq!(
        left, want,
        "only the CSVs (no temp file) in the output folder"
    );
    assert!(names(&out.join("quarantine")).is_empty());
    let l = ledger(&out);
    let mut files: Vec<&str> = l.iter().map(|e| e["file"].as_str().unwrap()).collect();
    files.sort();
    assert_eq!(files, oggs.iter().map(String::as_str).collect::<Vec<_>>());
    // The output whose ledger line was lost was adopted, not written a second time.
    let rec = l.iter().find(|e| e["file"] == torn_file.as_str()).unwrap();
    assert_eq!(rec["recovered"], true, "{rec}");
    let stem = torn_file.trim_end_matches(".ogg");
    assert_eq!(
        std::fs::read(out.join(format!("{stem}.csv"))).unwrap(),
        torn_csv
    );
    assert!(
        std::fs::read_to_string(out.join("ledger.jsonl"))
            .unwrap()
            .ends_with('\n')
    );
}

#[test]
fn corrupt_inputs_are_quarantined_and_the_stream_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, input, out) = (
        tmp.path().join("bundle"),
        tmp.path().join("in"),
        tmp.path().join("out"),
    );
    write_bundle(&bundle);
    std::fs::create_dir_all(&input).unwrap();
    let real = std::fs::read(soundscapes().join("DEMO1_20240101_060000.ogg")).unwrap();
    // Bad files sort first, so the good ones come after them.
    std::fs::write(input.join("A_truncated.ogg"), &real[..real.len() * 2 / 5]).unwrap();
    std::fs::write(input.join("B_empty.ogg"), b"").unwrap();
    std::fs::write(input.join("C_text.ogg"), "this is not audio\n".repeat(50)).unwrap();
    std::fs::write(input.join("D_good.ogg"), &real).unwrap();
    std::fs::copy(
        soundscapes().join("DEMO2_20240101_120000.ogg"),
        input.join("E_good.ogg"),
    )
    .unwrap();

    let o = run(&[
        "watch",
        "--in",
        s(&input),
        "--out",
        s(&out),
        "--model",
        s(&bundle),
        "--once",
        "--settle",
        "100ms",
        "--max-in-flight",
        "1",
    ]);
    assert!(o.status.success());
    let c = Classifier::load(&bundle, &device()).unwrap();
    for good in ["D_good", "E_good"] {
        assert_matches_offline(
            &c,
            &input.join(format!("{good}.ogg")),
            &out.join(format!("{good}.csv")),
        );
    }
    let q = out.join("quarantine");
    assert_eq!(
        names(&q),
        [
            "A_truncated.ogg",
            "A_truncated.ogg.reason.txt",
            "B_empty.ogg",
            "B_empty.ogg.reason.txt",
            "C_text.ogg",
            "C_text.ogg.reason.txt"
        ]
    );
    // Moved, not copied: the input folder holds the good files only, bytes intact.
    assert_eq!(names(&input), ["D_good.ogg", "E_good.ogg"]);
    assert_eq!(std::fs::read(q.join("B_empty.ogg")).unwrap().len(), 0);
    let reason = |n: &str| std::fs::read_to_string(q.join(format!("{n}.reason.txt"))).unwrap();
    assert!(reason("A_truncated.ogg").contains("kind: truncated"));
    for n in ["B_empty.ogg", "C_text.ogg"] {
        let r = reason(n);
        let kind = r.lines().find_map(|l| l.strip_prefix("kind: ")).unwrap();
        // An audio error's kind, not an I/O failure of ours.
        assert!(
            ["empty_audio", "unsupported_format", "corrupt_stream"].contains(&kind),
            "{n}: {r}"
        );
        assert!(r.contains("message: "));
    }
    let l = ledger(&out);
    let status = |f: &str| {
        l.iter()
            .find(|e| e["file"] == f)
            .map(|e| e["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("A_truncated.ogg").as_deref(), Some("quarantined"));
    assert_eq!(status("C_text.ogg").as_deref(), Some("quarantined"));
    assert_eq!(status("D_good.ogg").as_deref(), Some("done"));
    assert_eq!(l.len(), 5);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("quarantined A_truncated.ogg: error[truncated]"),
        "{err}"
    );
}

fn http_get_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = String::new();
    s.read_to_string(&mut head).ok()?;
    head.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn watch_through_the_server_writes_what_the_local_model_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, input, out) = (
        tmp.path().join("bundle"),
        tmp.path().join("in"),
        tmp.path().join("out"),
    );
    write_bundle(&bundle);
    std::fs::create_dir_all(&input).unwrap();
    for f in ["DEMO1_20240101_060000.ogg", "DEMO2_20240101_120000.ogg"] {
        std::fs::copy(soundscapes().join(f), input.join(f)).unwrap();
    }
    std::fs::write(input.join("X_text.ogg"), "not audio at all\n".repeat(20)).unwrap();

    let (mut server, addr, _, _) = common::start_serve(
        Command::new(bin())
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
            .arg(tmp.path().join("serve-data"))
            .env_remove("SILENCIO_API_KEY")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null()),
    );
    wait_for("the server", Duration::from_secs(120), || {
        http_get_status(&addr, "/readyz") == Some(200)
    });
    let url = format!("http://{addr}");
    let o = run(&[
        "watch",
        "--in",
        s(&input),
        "--out",
        s(&out),
        "--server",
        &url,
        "--once",
        "--settle",
        "100ms",
    ]);
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(o.status.success());

    let c = Classifier::load(&bundle, &device()).unwrap();
    for stem in ["DEMO1_20240101_060000", "DEMO2_20240101_120000"] {
        let t =
            silencio_eval::submission::read_submission(out.join(format!("{stem}.csv"))).unwrap();
        let id = c.identify_path(input.join(format!("{stem}.ogg"))).unwrap();
        let codes: Vec<String> = c.species().iter().map(|s| s.code.clone()).collect();
        // The server's class order, fetched from GET /v1/species.
        assert_eq!(t.species, codes);
        assert_eq!(t.row_ids.len(), 12);
        assert_eq!(t.row_ids[11], format!("{stem}_60"));
        for (r, w) in id.windows.iter().enumerate() {
            for (j, want) in w.scores.iter().enumerate() {
                // The server batches windows across requests: equal up to float reordering.
                let got = t.values.row(r)[j];
                assert!(
                    (got - want).abs() <= 1e-5,
                    "{stem} {r} {j}: {got} vs {want}"
                );
            }
        }
    }
    let reason = std::fs::read_to_string(out.join("quarantine/X_text.ogg.reason.txt")).unwrap();
    assert!(reason.contains("kind: "), "{reason}");
    let l = ledger(&out);
    assert_eq!(l.len(), 3);
    let q = l.iter().find(|e| e["file"] == "X_text.ogg").unwrap();
    assert_eq!(q["status"], "quarantined");
}
