//! What the trainer's end-to-end tests share: the repository root and running the trainer
//! binary with a run's MLflow store and registry under a temporary directory.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `trainer --experiment exp` with its MLflow store (`tmp/mlruns`) and registry
/// (`tmp/registry`), run from the repository root.
pub fn trainer(tmp: &Path, exp: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.current_dir(repo())
        .arg("--experiment")
        .arg(exp)
        .arg("--tracking-uri")
        .arg(tmp.join("mlruns"))
        .arg("--registry")
        .arg(tmp.join("registry"));
    c
}

/// Runs `c`, which must succeed; its stdout.
pub fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "trainer failed\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}
