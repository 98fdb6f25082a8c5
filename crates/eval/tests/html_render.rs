//! Renders a report's HTML in headless Chromium and checks that the browser sees the inline SVG
//! plots and the escaped species names (and draws a non-empty screenshot).
//!
//! Needs `SILENCIO_CHROMIUM=/path/to/chromium` (Debian: `apt-get install chromium`, binary
//! `/usr/bin/chromium`). Without it the test fails unless `SILENCIO_SKIP_CHROMIUM=1`, so CI
//! cannot skip it by accident.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use silencio_eval::matrix::Matrix;
use silencio_eval::report::{EvalReport, ReportInput, ReportOptions};

const NASTY: &str = "<Hyla & \"frog\">";
const NASTY_TEXT: &str = "&lt;Hyla &amp; \"frog\"&gt;";

fn report() -> EvalReport {
    let species: Vec<String> = [NASTY, "grekis", "compau", "1139490<script>", "tink&amp"]
        .map(String::from)
        .to_vec();
    let classes: Vec<String> = ["Amphibia", "Aves", "Aves", "Insecta", "Mammalia"]
        .map(String::from)
        .to_vec();
    let (n_rows, n_cols) = (60, species.len());
    let mut labels = Matrix::zeros(n_rows, n_cols);
    let mut scores = Matrix::zeros(n_rows, n_cols);
    let mut meta = Vec::new();
    for r in 0..n_rows {
        let truth = r % n_cols;
        labels.set(r, truth, 1.0);
        for c in 0..n_cols {
            // Deterministic, imperfect scores: the true class is usually but not always on top.
            let noise = ((r * 31 + c * 17) % 13) as f32 / 13.0;
            let bump = if c == truth { 0.45 } else { 0.0 };
            scores.set(r, c, (noise * 0.6 + bump).min(1.0));
        }
        let stem = format!("H02_20230420_{:02}0000", (r * 5) % 24);
        let mut m = BTreeMap::new();
        if let Some(tod) = silencio_eval::time_of_day(&stem) {
            m.insert("time_of_day".to_string(), tod);
        }
        m.insert(
            "collection".to_string(),
            if r % 2 == 0 { "XC" } else { "iNat <\"&>" }.to_string(),
        );
        meta.push(m);
    }
    EvalReport::build(
        ReportInput {
            title: "Render test: <b>not bold</b> & \"quoted\"",
            scores: &scores,
            labels: &labels,
            species: &species,
            column_class: &classes,
            rows_meta: &meta,
        },
        ReportOptions {
            n_pr_curves: 2,
            confusion_top: 5,
            max_pr_points: 50,
        },
    )
    .unwrap()
}

/// Runs a command with a deadline (a wedged browser must not hang the test suite).
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("collect output");
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
    c.args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()));
    c
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(bin) = std::env::var_os("SILENCIO_CHROMIUM") else {
        if std::env::var("SILENCIO_SKIP_CHROMIUM").as_deref() == Ok("1") {
            eprintln!("SILENCIO_SKIP_CHROMIUM=1: not rendering the report in Chromium");
            return;
        }
        panic!(
            "set SILENCIO_CHROMIUM to a chromium binary (Debian: apt-get install chromium → \
             /usr/bin/chromium), or SILENCIO_SKIP_CHROMIUM=1 to skip this test explicitly"
        );
    };
    let bin = bin.to_string_lossy().into_owned();
    let dir = tempfile::tempdir().unwrap();
    let html_path = dir.path().join("report.html");
    report().write_html(&html_path).unwrap();
    let url = format!("file://{}", html_path.display());

    let out = run(
        chromium(&bin, &dir.path().join("profile-dom"))
            .arg("--dump-dom")
            .arg(&url),
        Duration::from_secs(120),
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !dom.is_empty(),
        "chromium --dump-dom failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for id in ["ap-bars", "pr-curves", "confusion"] {
        assert!(
            dom.contains(&format!("<svg id=\"{id}\"")),
            "no <svg id={id}> in the DOM"
        );
    }
    assert!(dom.contains("<polyline"), "PR curves have no polyline");
    assert!(dom.matches("<rect").count() > 20, "too few rects drawn");
    assert!(dom.contains("<table id=\"slices\""), "no slice table");
    // The browser parsed every name as text: re-serialised escaped, never as markup.
    assert!(
        dom.contains(NASTY_TEXT),
        "escaped species name missing from the DOM"
    );
    assert!(dom.contains("1139490&lt;script&gt;"));
    assert!(dom.contains("tink&amp;amp"));
    assert!(
        dom.contains("iNat &lt;\"&amp;&gt;"),
        "escaped slice value missing"
    );
    assert!(!dom.contains("<Hyla") && !dom.contains("<script") && !dom.contains("<b>not bold"));

    let png = dir.path().join("report.png");
    let out = run(
        chromium(&bin, &dir.path().join("profile-png"))
            .arg(format!("--screenshot={}", png.display()))
            .arg("--window-size=1280,2000")
            .arg("--hide-scrollbars")
            .arg(&url),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "chromium --screenshot failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&png).expect("screenshot written");
    assert!(
        bytes.len() > 1000,
        "screenshot is only {} bytes",
        bytes.len()
    );
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "screenshot is not a PNG");
    if let Some(keep) = std::env::var_os("SILENCIO_KEEP_SCREENSHOT") {
        std::fs::copy(&png, keep).unwrap();
    }
}
