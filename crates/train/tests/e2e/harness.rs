//! What the trainer's end-to-end tests share: the repository root and running the trainer
//! binary with a run's MLflow store and registry under a temporary directory.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use silencio_infer::{BundleSpec, Licence, ModelBundle, Provenance, Species};
use trainer::Experiment;

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

/// A bundle with random weights at `dir` (named after it): the experiment's architecture over
/// `species`, on the feature recipe of the shards at `shards`, recording `licence`.
pub fn random_bundle(
    dir: &Path,
    exp: &Experiment,
    shards: &Path,
    species: Vec<Species>,
    licence: Licence,
) {
    let store = trainer::dataset::WindowStore::open(shards).unwrap();
    let features = store.manifest().options.features.clone();
    let cfg = trainer::prepare::model_config(exp, species.len(), features.n_mels).unwrap();
    let model = cfg
        .init(&silencio_infer::parse_device("flex").unwrap())
        .unwrap();
    ModelBundle::write(
        dir,
        BundleSpec {
            name: dir.file_name().unwrap().to_string_lossy().into(),
            version: "1".into(),
            model: cfg,
            features,
            species,
            provenance: Provenance {
                trained: false,
                source: "random weights (test)".into(),
                licences: vec![licence],
                ..Provenance::default()
            },
            location: None,
            post_process: None,
        },
        &model,
    )
    .unwrap();
}
