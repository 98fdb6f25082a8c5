//! Helpers shared by the integration tests: finding the real services, starting an MLflow
//! server on a free loopback port, and stopping it (with every process it spawned) on drop.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The value of `var`, or `None` when `skip_var=1` says to skip; panics when neither is set
/// (a missing service must not make a test pass silently).
pub fn required_env(var: &str, skip_var: &str) -> Option<String> {
    if let Ok(v) = std::env::var(var)
        && !v.is_empty()
    {
        return Some(v);
    }
    if std::env::var(skip_var).as_deref() == Ok("1") {
        eprintln!("{var} unset and {skip_var}=1: skipping");
        return None;
    }
    panic!(
        "{var} is not set. Point it at the real service (see crates/mlops/tests/requirements.txt), \
         or set {skip_var}=1 to skip this test explicitly."
    );
}

/// `SILENCIO_MLFLOW_BIN` (path of the `mlflow` executable) unless `SILENCIO_SKIP_MLFLOW=1`.
pub fn mlflow_bin() -> Option<String> {
    required_env("SILENCIO_MLFLOW_BIN", "SILENCIO_SKIP_MLFLOW")
}

/// `SILENCIO_MLFLOW_PYTHON` (a python with mlflow installed) unless `SILENCIO_SKIP_MLFLOW=1`.
pub fn mlflow_python() -> Option<String> {
    required_env("SILENCIO_MLFLOW_PYTHON", "SILENCIO_SKIP_MLFLOW")
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running `mlflow server`; killed with its whole process group on drop.
pub struct MlflowServer {
    child: Child,
    pub base: String,
    pub started_in: Duration,
    log: PathBuf,
}

impl MlflowServer {
    /// Starts `mlflow server` with `args` (backend and artifact options) and waits for /health.
    pub fn start(bin: &str, args: &[&str], log_dir: &std::path::Path) -> MlflowServer {
        let port = free_port();
        let log = log_dir.join(format!("mlflow-server-{port}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let t0 = Instant::now();
        let child = Command::new(bin)
            .args(["server", "--host", "127.0.0.1", "--port", &port.to_string()])
            // One worker: the test machine has 2 cores and a second worker only slows startup.
            .args(["--workers", "1"])
            .args(args)
            // MLflow 3.x only opens a file store (`file:…`, `./mlruns`) with this set.
            .env("MLFLOW_ALLOW_FILE_STORE", "true")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            // Its own process group, so Drop can stop the uvicorn worker and job runner too.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let mut server = MlflowServer {
            child,
            base: format!("http://127.0.0.1:{port}"),
            started_in: Duration::ZERO,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(240);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "mlflow server exited ({status}) before answering:\n{}",
                    server.log_tail()
                );
            }
            if let Ok(r) = agent.get(format!("{}/health", server.base)).call()
                && r.status() == 200
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mlflow server not healthy after 240 s:\n{}",
                server.log_tail()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        server.started_in = t0.elapsed();
        eprintln!(
            "mlflow server {} healthy after {:.1} s",
            server.base,
            server.started_in.as_secs_f64()
        );
        server
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// GET `path` (under the base URL) as JSON, panicking with the body on a non-200 answer.
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        let mut r = ureq::get(format!("{}{path}", self.base))
            .config()
            .http_status_as_error(false)
            .build()
            .call()
            .unwrap();
        let status = r.status();
        let body = r.body_mut().read_to_string().unwrap();
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// The artefact paths directly under `path` of run `run_id`, as the server lists them.
    pub fn artifact_paths(&self, run_id: &str, path: &str) -> Vec<String> {
        let listed = self.get_json(&format!(
            "/api/2.0/mlflow/artifacts/list?run_id={run_id}&path={path}"
        ));
        listed["files"]
            .as_array()
            .unwrap_or_else(|| panic!("no files under {path}: {listed}"))
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        let pgid = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &pgid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Workers that outlive the TERM (the job runner ignores its parent's exit).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &pgid])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}
