//! End-to-end: `silencio serve` on a free port with a small random bundle, then `silencio
//! loadgen` against it in every mode at concurrency 1 and 4 — the binaries as a user runs
//! them. The report must show answered requests in every mode, aborted uploads in mobile
//! mode, ordered latency percentiles and the server's own batch-size histogram, and the
//! server must still be up afterwards.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn silencio() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_silencio"));
    c.env_remove("SILENCIO_MODEL")
        .env_remove("SILENCIO_REGISTRY")
        .env_remove("SILENCIO_LOADGEN_URL");
    c
}

/// The smallest architecture the CLI packages, untrained: serving does not care.
fn create_bundle(out: &Path) {
    let o = silencio()
        .args([
            "bundle",
            "create",
            "--arch",
            "efficientnet_lite0",
            "--name",
            "loadgen",
            "--version",
            "1",
        ])
        .arg("--taxonomy")
        .arg(root().join("datasets/demo/birdclef/taxonomy.csv"))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the server when the test ends, whatever happens.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 GET over std's TCP: the status code.
fn get_status(port: u16, path: &str) -> Option<u16> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[test]
fn loadgen_reports_every_mode_against_the_real_server() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    create_bundle(&bundle);
    let port = free_port();
    let mut server = Server(
        silencio()
            .arg("serve")
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--model")
            .arg(&bundle)
            .arg("--data-dir")
            .arg(tmp.path().join("serve-data"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    // Loadgen waits for /readyz itself; this only fails fast if the server dies at start-up.
    let start = Instant::now();
    while get_status(port, "/healthz") != Some(200) {
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "silencio serve exited"
        );
        assert!(start.elapsed() < Duration::from_secs(120), "no /healthz");
        std::thread::sleep(Duration::from_millis(200));
    }

    let out = tmp.path().join("report");
    let o = silencio()
        .args([
            "loadgen",
            "--mode",
            "all",
            "--concurrency",
            "1,4",
            "--duration",
            "3s",
            "--warmup",
            "1s",
            "--think-ms",
            "100",
            "--abort-share",
            "0.5",
            "--timeout",
            "60s",
            "--wait-ready",
            "180s",
        ])
        .arg("--url")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    eprintln!("{stdout}");
    // The table on stdout names every level.
    for key in [
        "tour-closed-c1",
        "tour-closed-c4",
        "power-closed-c1",
        "power-closed-c4",
        "mobile-closed-c1",
        "mobile-closed-c4",
    ] {
        assert!(stdout.contains(key), "{key} missing from\n{stdout}");
    }

    let report: silencio_loadgen::Report =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report.levels.len(), 6);
    assert!(out.join("report.csv").is_file());
    for mode in ["tour", "power", "mobile"] {
        let levels: Vec<_> = report.levels.iter().filter(|l| l.mode == mode).collect();
        assert_eq!(levels.len(), 2);
        let ok: u64 = levels.iter().map(|l| l.ok).sum();
        assert!(ok > 0, "{mode}: no OK request");
        let windows_per_answer = if mode == "power" { 12 } else { 1 };
        for l in &levels {
            // Nothing the server could not answer: no 5xx, no bad request, no broken connection
            // (aborted uploads are counted apart).
            assert_eq!(l.server_5xx, 0, "{l:?}");
            assert_eq!(l.client_4xx, 0, "{l:?}");
            assert_eq!(l.transport_errors, 0, "{l:?}");
            assert_eq!(l.windows, windows_per_answer * l.ok, "{l:?}");
            if let Some(lat) = &l.latency_ms {
                assert_eq!(lat.n as u64, l.ok);
                assert!(lat.min_ms > 0.0);
                assert!(
                    lat.min_ms <= lat.p50_ms && lat.p50_ms <= lat.p95_ms,
                    "{lat:?}"
                );
                assert!(
                    lat.p95_ms <= lat.p99_ms && lat.p99_ms <= lat.max_ms,
                    "{lat:?}"
                );
                assert!(
                    l.model_versions.keys().all(|v| v.contains("loadgen")),
                    "{l:?}"
                );
            }
        }
        // The server's batch-size histogram, diffed over the level, saw this traffic.
        assert!(
            levels.iter().any(|l| {
                l.batch_size.as_ref().is_some_and(|b| {
                    b.count > 0 && b.buckets.iter().map(|x| x.count).sum::<u64>() > 0
                })
            }),
            "{mode}: no batch-size histogram: {:?}",
            levels.iter().map(|l| &l.metrics_note).collect::<Vec<_>>()
        );
    }
    let aborted: u64 = report
        .levels
        .iter()
        .filter(|l| l.mode == "mobile")
        .map(|l| l.aborted)
        .sum();
    assert!(aborted > 0, "no mobile upload was aborted");

    // Dropped uploads and all: the server is still up and ready.
    assert_eq!(get_status(port, "/healthz"), Some(200));
    assert_eq!(get_status(port, "/readyz"), Some(200));
    assert!(server.0.try_wait().unwrap().is_none());
}
