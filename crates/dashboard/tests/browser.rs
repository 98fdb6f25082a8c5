//! The dashboard in a real browser: headless Chromium loads the page from a running dashboard
//! (real demo data, a runs/registry fixture, a live metrics endpoint), and the test checks
//! that every chart was drawn with data (`data-rendered="<points>"`, set by the page after
//! uPlot draws), that the page saw no script error, rejected promise, failed resource or
//! console.error (collected into `<html data-errors>`), that Chromium's own log shows no
//! console message, and keeps a screenshot as a CI artefact:
//! `$SILENCIO_ARTIFACTS_DIR/dashboard.png`, else `target/dashboard.png`.
//!
//! Needs `SILENCIO_CHROMIUM=/path/to/chromium` (Debian: `apt-get install chromium`; set by
//! scripts/test.sh). Without it the test fails unless `SILENCIO_SKIP_CHROMIUM=1`, so CI cannot
//! skip it by accident.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs a command with a deadline (a wedged browser must not hang the test suite).
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let start = Instant::now();
    // Drain both pipes on threads: a chatty browser would otherwise block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return Output {
                status,
                stdout: t_out.join().unwrap(),
                stderr: t_err.join().unwrap(),
            };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn chromium(bin: &str, profile: &Path) -> Command {
    let mut c = Command::new(bin);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1400,5200",
        // Virtual time pauses while requests are in flight, so this is page time, not a sleep.
        "--virtual-time-budget=20000",
        "--enable-logging=stderr",
        "--v=0",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// The value of attribute `attr` on the element with id `id` in serialized HTML.
fn attr_of(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    let tag = &dom[start..end];
    let key = format!("{attr}=\"");
    let v = tag.find(&key)? + key.len();
    let len = tag[v..].find('"')?;
    Some(tag[v..v + len].to_string())
}

fn root_attr(dom: &str, attr: &str) -> Option<String> {
    let start = dom.find("<html")?;
    let end = start + dom[start..].find('>')?;
    let tag = &dom[start..end];
    let key = format!("{attr}=\"");
    let v = tag.find(&key)? + key.len();
    let len = tag[v..].find('"')?;
    Some(tag[v..v + len].to_string())
}

fn get_json(url: &str) -> serde_json::Value {
    let mut res = ureq::get(url).call().unwrap();
    serde_json::from_str(&res.body_mut().read_to_string().unwrap()).unwrap()
}

fn artefact_path() -> PathBuf {
    match std::env::var_os("SILENCIO_ARTIFACTS_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("dashboard.png"),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/dashboard.png"),
    }
}

#[test]
fn dashboard_renders_with_data_in_headless_chromium() {
    let Some(bin) = std::env::var_os("SILENCIO_CHROMIUM") else {
        if std::env::var("SILENCIO_SKIP_CHROMIUM").as_deref() == Ok("1") {
            eprintln!("SILENCIO_SKIP_CHROMIUM=1: not loading the dashboard in Chromium");
            return;
        }
        panic!(
            "set SILENCIO_CHROMIUM to a chromium binary (Debian: apt-get install chromium → \
             /usr/bin/chromium), or SILENCIO_SKIP_CHROMIUM=1 to skip this test explicitly"
        );
    };
    let bin = bin.to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // The serving process's metrics, from the exporter the server uses, on a real socket.
    let source = Arc::new(common::MetricsSource::new());
    source.traffic(40, 0.08, 4.0);
    let metrics_addr = rt.block_on(source.serve());

    let cfg = common::config(dir.path(), Some(format!("http://{metrics_addr}")));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (addr, server) = rt
        .block_on(silencio_dashboard::start(cfg, async {
            let _ = stop_rx.await;
        }))
        .unwrap();
    let base = format!("http://{addr}");

    // The duration scan runs in the background: wait for it, so the page sees the histogram.
    let t0 = Instant::now();
    while get_json(&format!("{base}/api/dataset"))["durations"]["complete"] != true {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "duration scan stuck"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Two scrapes with traffic between them: the serving history has a point to draw.
    get_json(&format!("{base}/api/serving"));
    source.traffic(20, 0.3, 8.0);
    std::thread::sleep(Duration::from_millis(1100));
    let serving = get_json(&format!("{base}/api/serving"));
    assert_eq!(serving["history"].as_array().unwrap().len(), 1);
    let n_clips = get_json(&format!("{base}/api/clips"))["clips"]
        .as_array()
        .unwrap()
        .len();
    assert!(n_clips >= 2);

    let out = run(
        chromium(&bin, &dir.path().join("profile-dom"))
            .arg("--dump-dom")
            .arg(format!("{base}/")),
        Duration::from_secs(180),
    );
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chromium failed: {}\n{log}",
        out.status
    );
    assert_eq!(
        root_attr(&dom, "data-ready").as_deref(),
        Some("1"),
        "the page did not finish loading its panels:\n{log}"
    );
    assert_eq!(
        root_attr(&dom, "data-serving-rendered").as_deref(),
        Some("1")
    );
    assert_eq!(
        root_attr(&dom, "data-errors").as_deref(),
        Some("[]"),
        "errors seen by the page"
    );

    let mut charts: Vec<String> = [
        "chart-class-species",
        "chart-class-recordings",
        "chart-collections",
        "chart-ratings",
        "chart-durations",
        "chart-splits",
        "chart-species",
        "chart-ap",
        "chart-slices",
        "chart-serving-rate",
        "chart-serving-latency",
        "chart-serving-batches",
        "chart-serving-predictions",
    ]
    .map(String::from)
    .to_vec();
    for i in 0..n_clips {
        charts.push(format!("chart-wave-{i}"));
        charts.push(format!("mel-{i}"));
    }
    for id in &charts {
        let points: usize = attr_of(&dom, id, "data-rendered")
            .unwrap_or_else(|| panic!("{id} has no data-rendered attribute"))
            .parse()
            .unwrap();
        assert!(points > 0, "{id} rendered without data");
    }
    // uPlot drew canvases, and the tables and panel texts carry the data.
    assert!(dom.matches("class=\"uplot").count() >= charts.len() - n_clips);
    assert!(dom.contains("demo-2"), "latest run not shown");
    assert!(dom.contains("efficientnet lite0 + clip head"));
    assert!(dom.contains("/report/valid"));
    assert!(
        dom.contains("is up"),
        "serving panel does not say the server is up"
    );
    assert!(dom.contains("canary"), "server models table missing");
    assert!(dom.contains("<audio"));

    // Chromium's log: no uncaught error and no console message of any level from the page.
    let noisy: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Uncaught") || l.contains("CONSOLE"))
        .collect();
    assert!(noisy.is_empty(), "console output: {noisy:#?}");

    // Screenshot as a CI artefact.
    let png = artefact_path();
    std::fs::create_dir_all(png.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&png);
    let out = run(
        chromium(&bin, &dir.path().join("profile-shot"))
            .arg(format!("--screenshot={}", png.display()))
            .arg(format!("{base}/")),
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(bytes.len() > 20_000, "suspiciously small screenshot");
    eprintln!("screenshot: {} ({} bytes)", png.display(), bytes.len());

    let _ = stop_tx.send(());
    rt.block_on(server).unwrap().unwrap();
}
