//! The online pipeline end to end, through the real `silencio` binary: `simulate` writes
//! 1-minute OGG files cut from real soundscapes with real calls overlaid, `watch` turns each
//! into a BirdCLEF submission CSV exactly once — across a SIGKILL and a restart — and
//! quarantines files it cannot read while the stream goes on. The completeness protocol is
//! tested finding by finding: a copy that stalls mid-write, two inputs of one stem, links
//! (never followed), a huge WAV (never read whole), a file rewritten after scoring.
//!
//! The model is a small random bundle (the loop is under test, not accuracy); each CSV is
//! compared with the scores `Classifier::identify_path` gives in this process for the same
//! file, which shows that the consumer runs the offline features and model.
#![allow(clippy::unwrap_used)]

use crate::common;

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
        assert_matches_offline(&c, &input.join(ogg), &out.join(format!("{ogg}.csv")));
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
        assert_matches_offline(&c, &input.join(ogg), &out.join(format!("{ogg}.csv")));
    }
    let mut left = names(&out);
    left.retain(|n| n != "ledger.jsonl" && n != "quarantine");
    let want: Vec<String> = oggs.iter().map(|o| format!("{o}.csv")).collect();
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
    assert_eq!(
        std::fs::read(out.join(format!("{torn_file}.csv"))).unwrap(),
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
            &out.join(format!("{good}.ogg.csv")),
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
        let t = silencio_eval::submission::read_submission(out.join(format!("{stem}.ogg.csv")))
            .unwrap();
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

/// A 16-bit PCM mono WAV of `samples` at `rate`, its header saying `data_bytes` of data.
fn wav_bytes(samples: &[f32], rate: u32, data_bytes: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(44 + samples.len() * 2);
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&data_bytes.saturating_add(36).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_bytes.to_le_bytes());
    for &x in samples {
        let v = (x.clamp(-1.0, 1.0) * 32767.0).round() as i16;
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

/// A demo soundscape as a 32 kHz 16-bit WAV (a second real recording format).
fn demo_wav(ogg: &str) -> Vec<u8> {
    let d = silencio_audio::decode_path(soundscapes().join(ogg), &Default::default()).unwrap();
    wav_bytes(&d.samples, d.sample_rate, (d.samples.len() * 2) as u32)
}

fn watch_daemon(
    input: &Path,
    out: &Path,
    bundle: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> Child {
    let mut c = Command::new(bin());
    c.args([
        "watch",
        "--in",
        s(input),
        "--out",
        s(out),
        "--model",
        s(bundle),
    ])
    .args(extra)
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// Finding: a copy that stalls for longer than the old 1 s settle was taken half-written (an
/// OGG quarantined as truncated, a WAV scored on its first half and then again). Files not
/// renamed in now wait for the quiet period: each is scored once, whole.
#[test]
fn a_copy_that_stalls_mid_write_is_scored_once_when_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, input, out) = (
        tmp.path().join("bundle"),
        tmp.path().join("in"),
        tmp.path().join("out"),
    );
    write_bundle(&bundle);
    std::fs::create_dir_all(&input).unwrap();
    let files = [
        (
            "STALL_ogg.ogg",
            std::fs::read(soundscapes().join("DEMO1_20240101_060000.ogg")).unwrap(),
        ),
        ("STALL_wav.wav", demo_wav("DEMO2_20240101_120000.ogg")),
    ];
    // The quiet period through the environment (the CLI's default is 30 s); the stall is
    // longer than the old 1 s settle and shorter than this.
    let mut consumer = watch_daemon(
        &input,
        &out,
        &bundle,
        &["--sweep-every", "1s"],
        &[("SILENCIO_WATCH_QUIET_PERIOD", "6s")],
        &tmp.path().join("watch.log"),
    );
    wait_for("the consumer", Duration::from_secs(120), || {
        out.join("ledger.jsonl").exists()
    });
    std::thread::sleep(Duration::from_millis(500));
    let writers: Vec<_> = files
        .iter()
        .map(|(name, bytes)| {
            let (path, bytes) = (input.join(name), bytes.clone());
            std::thread::spawn(move || {
                use std::io::Write;
                let mut f = std::fs::File::create(&path).unwrap();
                let half = bytes.len() / 2;
                f.write_all(&bytes[..half]).unwrap();
                f.sync_all().unwrap();
                std::thread::sleep(Duration::from_millis(2500));
                f.write_all(&bytes[half..]).unwrap();
                f.sync_all().unwrap();
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    wait_for("both outputs", Duration::from_secs(120), || {
        ledger(&out).len() >= 2
    });
    // Nothing more comes: no second scoring, no quarantine.
    std::thread::sleep(Duration::from_secs(8));
    consumer.kill().unwrap();
    consumer.wait().unwrap();
    let log = std::fs::read_to_string(tmp.path().join("watch.log")).unwrap();
    let l = ledger(&out);
    assert_eq!(l.len(), 2, "{l:?}\n{log}");
    for e in &l {
        assert_eq!(e["status"], "done", "{e}\n{log}");
        assert_eq!(e["windows"], 12, "{e}");
    }
    assert!(names(&out.join("quarantine")).is_empty(), "{log}");
    let c = Classifier::load(&bundle, &device()).unwrap();
    for (name, _) in &files {
        assert_matches_offline(&c, &input.join(name), &out.join(format!("{name}.csv")));
    }
}

/// Finding: `x.ogg` and `x.wav` shared the output `x.csv` (work was keyed by stem), so one of
/// them was never scored. Each input now has its own output, `<file name>.csv`.
#[test]
fn two_inputs_of_one_stem_get_two_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, input, out) = (
        tmp.path().join("bundle"),
        tmp.path().join("in"),
        tmp.path().join("out"),
    );
    write_bundle(&bundle);
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(
        soundscapes().join("DEMO1_20240101_060000.ogg"),
        input.join("x.ogg"),
    )
    .unwrap();
    std::fs::write(input.join("x.wav"), demo_wav("DEMO2_20240101_120000.ogg")).unwrap();
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
    let l = ledger(&out);
    assert_eq!(l.len(), 2, "{l:?}");
    let entry = |name: &str| l.iter().find(|e| e["file"] == name).unwrap();
    for name in ["x.ogg", "x.wav"] {
        let e = entry(name);
        assert_eq!(e["status"], "done", "{e}");
        assert!(e.get("recovered").is_none(), "scored, not adopted: {e}");
    }
    for name in ["x.ogg", "x.wav"] {
        // Its own scores (row ids still the stem's: x_5 … x_60), under its own name.
        let csv = out.join(entry(name)["output"].as_str().unwrap());
        assert_matches_offline(&c, &input.join(name), &csv);
        assert_eq!(entry(name)["output"], format!("{name}.csv"));
    }
    assert!(names(&out.join("quarantine")).is_empty());
}

/// Finding: links were followed: a link to a file outside the folder was read and hashed, and
/// with the quarantine on another file system its target's content was copied there. Links
/// (and other non-files) are now skipped: never opened, hashed, recorded or moved.
#[test]
fn links_are_never_followed_hashed_or_moved() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, input, out, outside) = (
        tmp.path().join("bundle"),
        tmp.path().join("in"),
        tmp.path().join("out"),
        tmp.path().join("outside"),
    );
    write_bundle(&bundle);
    for d in [&input, &outside] {
        std::fs::create_dir_all(d).unwrap();
    }
    let real = std::fs::read(soundscapes().join("DEMO1_20240101_060000.ogg")).unwrap();
    std::fs::write(outside.join("secret.ogg"), &real).unwrap();
    std::fs::write(outside.join("secret.txt"), "the key is 1234\n".repeat(40)).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.ogg"), input.join("A_link.ogg")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), input.join("B_link.wav")).unwrap();
    std::os::unix::fs::symlink(outside.join("gone.ogg"), input.join("C_dangling.ogg")).unwrap();
    std::fs::create_dir(input.join("D_dir.ogg")).unwrap();
    std::fs::copy(
        soundscapes().join("DEMO2_20240101_120000.ogg"),
        input.join("E_good.ogg"),
    )
    .unwrap();
    // A quarantine on another file system where there is one (a rename cannot move there).
    let shm = Path::new("/dev/shm");
    let q_parent = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let q = q_parent.path().join("quarantine");
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
        "--quarantine",
        s(&q),
    ]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    let l = ledger(&out);
    let files: Vec<&str> = l.iter().map(|e| e["file"].as_str().unwrap()).collect();
    assert_eq!(
        files,
        ["E_good.ogg"],
        "only the regular file is an input\n{err}"
    );
    assert_eq!(with_ext(&out, ".csv"), ["E_good.ogg.csv"]);
    assert!(names(&q).is_empty(), "nothing quarantined: {:?}", names(&q));
    // The links are where they were, still links, and their targets untouched.
    for n in ["A_link.ogg", "B_link.wav", "C_dangling.ogg"] {
        let m = std::fs::symlink_metadata(input.join(n)).unwrap();
        assert!(m.file_type().is_symlink(), "{n}");
        assert!(
            err.contains(&format!("skipped {n}: a symbolic link")),
            "{n}: {err}"
        );
    }
    assert_eq!(std::fs::read(outside.join("secret.ogg")).unwrap(), real);
    assert!(input.join("D_dir.ogg").is_dir());
    assert!(err.contains("skipped D_dir.ogg: a directory"), "{err}");
}

/// The output of the ledger's last line (`a.ogg.csv` before anything is recorded).
fn ledger_output(out: &Path) -> String {
    ledger(out)
        .last()
        .and_then(|e| e["output"].as_str().map(String::from))
        .unwrap_or_else(|| "a.ogg.csv".into())
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Finding: a 3 GB WAV was read whole, twice (5.7 GB resident) before any duration check, and
/// crashed the watcher again on each restart. Its header now says it is too long: it is
/// quarantined without being read, the watcher's peak memory stays far below its size, and a
/// restart has nothing left to do.
#[test]
fn a_huge_wav_is_quarantined_from_its_header_without_being_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, input, out) = (
        tmp.path().join("bundle"),
        tmp.path().join("in"),
        tmp.path().join("out"),
    );
    write_bundle(&bundle);
    std::fs::create_dir_all(&input).unwrap();
    // 3 GB of 32 kHz 16-bit mono (13 h of silence), sparse: no disk is used.
    const SIZE: u64 = 3_000_000_000;
    let huge = input.join("A_huge.wav");
    std::fs::write(&huge, wav_bytes(&[], 32_000, (SIZE - 44) as u32)).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&huge)
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    std::fs::copy(
        soundscapes().join("DEMO1_20240101_060000.ogg"),
        input.join("B_good.ogg"),
    )
    .unwrap();
    let args = [
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
    ];
    let mut consumer = spawn(&args, &tmp.path().join("watch1.log"));
    let mut peak_kb = 0;
    let status = loop {
        if let Some(kb) = vm_hwm_kb(consumer.id()) {
            peak_kb = peak_kb.max(kb);
        }
        if let Some(st) = consumer.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let log = std::fs::read_to_string(tmp.path().join("watch1.log")).unwrap();
    assert!(status.success(), "{log}");
    assert!(
        peak_kb < 500_000,
        "peak resident memory {peak_kb} kB for a {SIZE}-byte file\n{log}"
    );
    let q = out.join("quarantine");
    assert_eq!(names(&q), ["A_huge.wav", "A_huge.wav.reason.txt"], "{log}");
    let reason = std::fs::read_to_string(q.join("A_huge.wav.reason.txt")).unwrap();
    assert!(reason.contains("kind: too_long"), "{reason}");
    let l = ledger(&out);
    assert_eq!(l.len(), 2, "{l:?}");
    let e = l.iter().find(|e| e["file"] == "A_huge.wav").unwrap();
    assert_eq!(e["status"], "quarantined");
    assert_eq!(e["size"], SIZE);
    let c = Classifier::load(&bundle, &device()).unwrap();
    assert_matches_offline(&c, &input.join("B_good.ogg"), &out.join("B_good.ogg.csv"));

    // A restart is calm: nothing to do, nothing recorded twice.
    let o = run(&args);
    assert!(o.status.success());
    assert_eq!(ledger(&out).len(), 2);
}

/// Finding (completeness protocol): a file that changes after it was scored is scored again
/// and its output replaced; a new mtime on the same bytes is recorded once, not re-read on
/// every sweep.
#[test]
fn a_file_changed_after_scoring_is_scored_again_and_its_output_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, input, out) = (
        tmp.path().join("bundle"),
        tmp.path().join("in"),
        tmp.path().join("out"),
    );
    write_bundle(&bundle);
    std::fs::create_dir_all(&input).unwrap();
    let one = std::fs::read(soundscapes().join("DEMO1_20240101_060000.ogg")).unwrap();
    let two = std::fs::read(soundscapes().join("DEMO2_20240101_120000.ogg")).unwrap();
    let (path, part) = (input.join("a.ogg"), input.join(".a.ogg.part"));
    let publish = |bytes: &[u8]| {
        std::fs::write(&part, bytes).unwrap();
        std::fs::rename(&part, &path).unwrap();
    };
    let mut consumer = watch_daemon(
        &input,
        &out,
        &bundle,
        &["--sweep-every", "1s", "--settle", "500ms"],
        &[],
        &tmp.path().join("watch.log"),
    );
    let c = Classifier::load(&bundle, &device()).unwrap();
    let log = || std::fs::read_to_string(tmp.path().join("watch.log")).unwrap();

    publish(&one);
    wait_for("the first output", Duration::from_secs(120), || {
        !ledger(&out).is_empty()
    });
    // The output as the ledger names it (the naming rule is checked at the end).
    let csv = out.join(ledger_output(&out));
    assert_matches_offline(&c, &path, &csv);
    let first = std::fs::read(&csv).unwrap();
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let first_inode = inode(&csv);

    // Same bytes, a new mtime: one ledger line records it; no re-scoring, on any sweep.
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
        .unwrap();
    drop(f);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(ledger(&out).len(), 2, "{}", log());
    assert_eq!(inode(&csv), first_inode, "the output was not written again");

    // New content written in place: scored again, the output replaced.
    std::fs::write(&path, &two).unwrap();
    wait_for("the second output", Duration::from_secs(120), || {
        ledger(&out).len() >= 3
    });
    assert_matches_offline(&c, &path, &csv);
    // Replaced by a rename (a new file), not rewritten in place. (Its bytes may equal the
    // first ones: the random test model scores some recordings alike.)
    assert_ne!(inode(&csv), first_inode, "{}", log());

    // The first content again, renamed in: the first output again.
    publish(&one);
    wait_for("the third output", Duration::from_secs(120), || {
        ledger(&out).len() >= 4
    });
    std::thread::sleep(Duration::from_secs(3));
    consumer.kill().unwrap();
    consumer.wait().unwrap();
    assert_eq!(std::fs::read(&csv).unwrap(), first, "{}", log());
    let l = ledger(&out);
    assert_eq!(l.len(), 4, "{l:?}\n{}", log());
    assert!(
        l.iter()
            .all(|e| e["status"] == "done" && e["file"] == "a.ogg")
    );
    let sha: Vec<&str> = l.iter().map(|e| e["sha256"].as_str().unwrap()).collect();
    assert_eq!((sha[0], sha[1], sha[3]), (sha[1], sha[0], sha[0]));
    assert_ne!(sha[2], sha[0]);
    let mut left = names(&out);
    left.retain(|n| !n.starts_with('.'));
    assert_eq!(left, ["a.ogg.csv", "ledger.jsonl", "quarantine"]);
}

/// Compatibility: an output folder written when outputs were named `<stem>.csv` loads as it
/// is (its inputs stay done, nothing is scored again); an input re-scored later gets the new
/// name and its old output goes.
#[test]
fn a_ledger_of_stem_named_outputs_still_loads_and_is_migrated_on_rescoring() {
    let tmp = tempfile::tempdir().unwrap();
    let (bundle, input, out) = (
        tmp.path().join("bundle"),
        tmp.path().join("in"),
        tmp.path().join("out"),
    );
    write_bundle(&bundle);
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(
        soundscapes().join("DEMO1_20240101_060000.ogg"),
        input.join("a.ogg"),
    )
    .unwrap();
    let args = [
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
    ];
    assert!(run(&args).status.success());
    // Made legacy: the output renamed `a.csv` and the ledger line saying so.
    std::fs::rename(out.join("a.ogg.csv"), out.join("a.csv")).unwrap();
    let text = std::fs::read_to_string(out.join("ledger.jsonl")).unwrap();
    assert!(text.contains(r#""output":"a.ogg.csv""#), "{text}");
    let legacy = text.replace(r#""output":"a.ogg.csv""#, r#""output":"a.csv""#);
    std::fs::write(out.join("ledger.jsonl"), &legacy).unwrap();
    let before = std::fs::read(out.join("a.csv")).unwrap();

    let o = run(&args);
    assert!(o.status.success());
    assert_eq!(
        std::fs::read_to_string(out.join("ledger.jsonl")).unwrap(),
        legacy
    );
    assert_eq!(std::fs::read(out.join("a.csv")).unwrap(), before);
    assert!(!out.join("a.ogg.csv").exists());

    std::fs::copy(
        soundscapes().join("DEMO2_20240101_120000.ogg"),
        input.join("a.ogg"),
    )
    .unwrap();
    assert!(run(&args).status.success());
    let c = Classifier::load(&bundle, &device()).unwrap();
    assert_matches_offline(&c, &input.join("a.ogg"), &out.join("a.ogg.csv"));
    assert!(!out.join("a.csv").exists(), "the legacy output was removed");
    let l = ledger(&out);
    assert_eq!(l.len(), 2);
    assert_eq!(l[1]["output"], "a.ogg.csv");
}
