//! The winners' recipes in `experiments/` end to end on the committed demo set, each shrunk to a
//! few steps: teach (a first teacher scores the soundscapes, and the labelled clips for
//! distillation) → distil → two pseudo-label rounds (each an MLflow child run, gated and
//! registered, each student teaching the next round) → read back from MLflow with the real
//! client; a killed recipe resumes without training a finished round again; a student that
//! fails its gate teaches no one.
//!
//! The first teacher is a bundle with random weights (BirdNET and a registered production model
//! are not there in CI): these tests check the plumbing, not accuracy. Needs
//! `SILENCIO_MLFLOW_PYTHON` (scripts/test.sh sets it) unless `SILENCIO_SKIP_MLFLOW=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;
use harness::{repo, run_ok, trainer};
use std::path::{Path, PathBuf};
use std::process::Command;

use silencio_infer::{Licence, ModelBundle};
use toml::{Table, Value};
use trainer::Experiment;
use trainer::rounds::{Family, RecipeState};
use trainer::teacher::{RecordingSet, TeacherStore};

const TEACHER_LICENCE: &str = "LicenseRef-test-teacher";

fn table(pairs: &[(&str, Value)]) -> Value {
    Value::Table(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    )
}

fn s(v: impl AsRef<Path>) -> Value {
    Value::String(v.as_ref().display().to_string())
}

/// A few-step training section: one epoch of two steps.
fn short_train() -> Value {
    table(&[
        ("epochs", Value::Integer(1)),
        ("batch_size", Value::Integer(16)),
        ("max_steps_per_epoch", Value::Integer(2)),
        ("lr", Value::Float(3e-3)),
    ])
}

/// The recipe `file` on the demo set: everything under `tmp`, the tiny model, a few steps, the
/// first teacher `teacher` (a bundle), and `edit` for the rest.
fn shrink(tmp: &Path, file: &str, teacher: &Path, edit: impl FnOnce(&mut Table)) -> PathBuf {
    let r = repo();
    let text = std::fs::read_to_string(r.join("experiments").join(file)).unwrap();
    let mut t: Table = toml::from_str(&text).unwrap();
    t.insert(
        "data".into(),
        table(&[
            ("root", s(r.join("datasets/demo/birdclef"))),
            ("shards", s(tmp.join("shards"))),
            ("backgrounds", s(r.join("datasets/demo/backgrounds"))),
        ]),
    );
    t.insert(
        "model".into(),
        table(&[("arch", Value::String("tiny".into()))]),
    );
    t.insert("train".into(), short_train());
    t.insert("eval".into(), table(&[("mix_minutes", Value::Integer(1))]));
    t.remove("gate");
    t.insert("output".into(), table(&[("runs", s(tmp.join("runs")))]));
    for section in ["distill", "pseudo"] {
        if let Some(Value::Table(sec)) = t.get_mut(section) {
            sec.insert("teacher".into(), Value::String("t0".into()));
            if sec.contains_key("teacher_model") || section == "distill" {
                sec.insert("teacher_model".into(), s(teacher));
            }
        }
    }
    if let Some(Value::Table(p)) = t.get_mut("pseudo") {
        p.insert("rounds".into(), Value::Integer(2));
    }
    edit(&mut t);
    let out = tmp.join(file);
    std::fs::write(&out, toml::to_string(&t).unwrap()).unwrap();
    out
}

/// A bundle with random weights in the demo's classes and feature recipe (runs the ETL).
fn random_teacher(tmp: &Path, exp_file: &Path) -> PathBuf {
    let exp = Experiment::load(exp_file).unwrap();
    // The ETL first: the bundle takes the shards' feature recipe.
    trainer::prepare::shards(&exp, &mut |_| {}).unwrap();
    let species = trainer::pipeline::task_species(&exp.data.root).unwrap();
    let dir = tmp.join("teacher-bundle");
    harness::random_bundle(
        &dir,
        &exp,
        &exp.data.shards,
        species,
        Licence::new(TEACHER_LICENCE, "test teacher"),
    );
    dir
}

/// The one recipe directory under `<runs>/<name>/`.
fn recipe_dir(tmp: &Path, name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(tmp.join("runs").join(name))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("recipe.json").is_file())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.pop().unwrap()
}

fn state(dir: &Path) -> RecipeState {
    serde_json::from_slice(&std::fs::read(dir.join("recipe.json")).unwrap()).unwrap()
}

/// The recipe's MLflow run and its children, read with the real `mlflow` package.
fn mlflow(tmp: &Path, run_id: &str) -> Option<serde_json::Value> {
    let Ok(py) = std::env::var("SILENCIO_MLFLOW_PYTHON") else {
        assert!(
            std::env::var("SILENCIO_SKIP_MLFLOW").is_ok(),
            "set SILENCIO_MLFLOW_PYTHON to a python with mlflow (scripts/test.sh does), or \
             SILENCIO_SKIP_MLFLOW=1"
        );
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_mlflow_recipe.py");
    let out = Command::new(py)
        .arg(script)
        .arg(format!("file://{}", tmp.join("mlruns").display()))
        .arg(run_id)
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mlflow read failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn the_2025_recipe_teaches_then_runs_two_noisy_student_rounds_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // The teacher bundle needs the shards' recipe: write the experiment once without it first.
    let placeholder = t.join("none");
    let exp = shrink(t, "birdclef2025-noisy-student.toml", &placeholder, |_| {});
    let teacher = random_teacher(t, &exp);
    let exp = shrink(t, "birdclef2025-noisy-student.toml", &teacher, |_| {});
    let out = run_ok(&mut trainer(t, &exp));

    let dir = recipe_dir(t, "birdclef2025-noisy-student");
    let st = state(&dir);
    assert_eq!(st.rounds.len(), 2, "{out}");
    // Round 1 learnt from the first teacher's store, round 2 from round 1's student.
    let t0 = TeacherStore::dir_for(&t.join("shards"), "t0");
    assert_eq!(st.rounds[0].teacher_dir, t0);
    let t1 = TeacherStore::dir_for(&t.join("shards"), &format!("{}-round1", st.run_name));
    assert_eq!(st.rounds[1].teacher_dir, t1);
    let store1 = TeacherStore::open(&t1).unwrap();
    assert_eq!(
        PathBuf::from(&store1.info().spec),
        st.rounds[0].outcome.bundle_dir,
        "round 1's student teaches round 2"
    );
    for store in [TeacherStore::open(&t0).unwrap(), store1] {
        assert_eq!(store.list(RecordingSet::Soundscapes).unwrap().len(), 2);
    }
    // Each student gated and registered (no bars in the shrunk recipe), as its own version.
    let versions: Vec<String> = st
        .rounds
        .iter()
        .map(|r| {
            assert!(r.outcome.gate_passed);
            assert_eq!(r.family, Family::Own);
            r.outcome.registered.clone().unwrap()
        })
        .collect();
    assert_ne!(versions[0], versions[1]);
    // The teacher's licence travels into both students.
    for r in &st.rounds {
        let b = ModelBundle::open(&r.outcome.bundle_dir).unwrap();
        assert!(
            b.meta()
                .provenance
                .licences
                .iter()
                .any(|l| l.id == TEACHER_LICENCE),
            "{:?}",
            b.meta().provenance.licences
        );
    }

    let parent = st.mlflow_run_id.clone().unwrap();
    if let Some(m) = mlflow(t, &parent) {
        let children = m["children"].as_array().unwrap();
        assert_eq!(children.len(), 2, "{m}");
        for (i, c) in children.iter().enumerate() {
            assert_eq!(c["status"], "FINISHED");
            assert_eq!(c["tags"]["mlflow.parentRunId"], parent.as_str());
            assert_eq!(c["params"]["pseudo.labels"], "power");
            assert_eq!(c["tags"]["registered_version"], versions[i].as_str());
            assert!(
                c["params"]["teach.pseudo_teacher"]
                    .as_str()
                    .unwrap()
                    .ends_with(if i == 0 { "t0" } else { "-round1" }),
                "{c}"
            );
        }
        assert_eq!(m["parent"]["status"], "FINISHED");
        assert_eq!(m["parent"]["tags"]["recipe"], "true");
        assert!(
            m["parent"]["metrics"]
                .as_object()
                .unwrap()
                .keys()
                .any(|k| k.starts_with("round_")),
            "{m}"
        );
    }

    // Killed after round 2 finished but before the recipe recorded it: --resume reads the
    // round back instead of training (and registering) it again.
    let mut killed = st.clone();
    killed.rounds.pop();
    killed.status = trainer::pipeline::RunPhase::Running;
    std::fs::write(
        dir.join("recipe.json"),
        serde_json::to_vec_pretty(&killed).unwrap(),
    )
    .unwrap();
    let again = run_ok(trainer(t, &exp).arg("--resume"));
    assert!(out.contains("round 2 (Own family"), "{out}");
    assert!(
        !again.contains("round 2 (Own family"),
        "trained again:\n{again}"
    );
    let resumed = state(&dir);
    assert_eq!(resumed.rounds, st.rounds);
    assert_eq!(resumed.status, trainer::pipeline::RunPhase::Finished);
}

#[test]
fn the_2026_recipe_distils_swaps_families_and_ships_priors() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let r = repo();
    // The other family: the tiny network with a SED head, from its own experiment file.
    let swap = t.join("swap.toml");
    let mut st = Table::new();
    st.insert("name".into(), Value::String("recipe-swap".into()));
    st.insert(
        "data".into(),
        table(&[("root", s(r.join("datasets/demo/birdclef")))]),
    );
    st.insert(
        "model".into(),
        table(&[
            ("arch", Value::String("tiny".into())),
            ("sed", Value::Boolean(true)),
        ]),
    );
    st.insert("train".into(), short_train());
    std::fs::write(&swap, toml::to_string(&st).unwrap()).unwrap();
    let with_swap = |t: &mut Table| {
        if let Some(Value::Table(p)) = t.get_mut("pseudo") {
            p.insert("swap".into(), s(&swap));
        }
    };
    let placeholder = t.join("none");
    let exp = shrink(t, "birdclef2026-distill.toml", &placeholder, with_swap);
    let teacher = random_teacher(t, &exp);
    let exp = shrink(t, "birdclef2026-distill.toml", &teacher, with_swap);
    let out = run_ok(&mut trainer(t, &exp));

    let dir = recipe_dir(t, "birdclef2026-distill");
    let st = state(&dir);
    assert_eq!(st.rounds.len(), 2, "{out}");
    assert_eq!(
        st.rounds.iter().map(|r| r.family).collect::<Vec<_>>(),
        vec![Family::Own, Family::Swap]
    );
    assert_eq!(st.rounds[0].experiment, "birdclef2026-distill");
    assert_eq!(st.rounds[1].experiment, "recipe-swap");
    // The distillation teacher scored the labelled clips too.
    let t0 = TeacherStore::open(&TeacherStore::dir_for(&t.join("shards"), "t0")).unwrap();
    assert!(!t0.list(RecordingSet::TrainAudio).unwrap().is_empty());
    assert_eq!(t0.list(RecordingSet::Soundscapes).unwrap().len(), 2);
    // Each student carries priors learnt from the soundscapes its round's teacher scored, and
    // the teacher's licence.
    for r in &st.rounds {
        assert!(r.outcome.gate_passed);
        let b = ModelBundle::open(&r.outcome.bundle_dir).unwrap();
        let post = b.post_process().unwrap().expect("priors.json");
        let priors = post.priors.as_ref().unwrap();
        // DEMO1 and DEMO2 are two recorders at 06 h and 12 h.
        assert_eq!(priors.recorders().len(), 2);
        assert_eq!(
            priors.hours().keys().copied().collect::<Vec<_>>(),
            vec![6, 12]
        );
        assert!(post.smoothing.is_some());
        assert!(
            b.meta()
                .provenance
                .licences
                .iter()
                .any(|l| l.id == TEACHER_LICENCE)
        );
    }
    let parent = st.mlflow_run_id.clone().unwrap();
    if let Some(m) = mlflow(t, &parent) {
        let children = m["children"].as_array().unwrap();
        assert_eq!(children.len(), 2, "{m}");
        assert_eq!(children[0]["params"]["distill.temperature"], "2.0");
        assert_eq!(children[1]["params"]["model.sed"], "true");
        for c in children {
            assert_eq!(c["tags"]["mlflow.parentRunId"], parent.as_str());
            assert_eq!(c["tags"]["quality_gate"], "passed");
        }
    }
}

#[test]
fn a_student_that_fails_its_gate_teaches_no_one() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // A perfect macro ROC-AUC and AP on the validation windows: out of reach for a student of
    // two training steps.
    let impossible = |t: &mut Table| {
        t.insert(
            "gate".into(),
            table(&[(
                "valid",
                table(&[
                    ("min_macro_auc", Value::Float(1.0)),
                    ("min_macro_ap", Value::Float(1.0)),
                ]),
            )]),
        );
    };
    let placeholder = t.join("none");
    let exp = shrink(
        t,
        "birdclef2025-noisy-student.toml",
        &placeholder,
        impossible,
    );
    let teacher = random_teacher(t, &exp);
    let exp = shrink(t, "birdclef2025-noisy-student.toml", &teacher, impossible);
    let out = run_ok(&mut trainer(t, &exp));
    let st = state(&recipe_dir(t, "birdclef2025-noisy-student"));
    assert_eq!(st.rounds.len(), 1, "{out}");
    assert!(!st.rounds[0].outcome.gate_passed);
    assert_eq!(st.rounds[0].outcome.registered, None);
    assert!(out.contains("failed its quality gate"), "{out}");
    assert_eq!(st.status, trainer::pipeline::RunPhase::Finished);
}

/// The 2026 recipe as written — BirdNET the teacher of distillation and of round 1's
/// pseudo-labels — shrunk to a few steps (a BirdNET build: `SILENCIO_BIRDNET_DIR=… cargo test -p
/// trainer --features birdnet --test e2e recipes`).
#[cfg(feature = "birdnet")]
#[test]
fn the_2026_recipe_runs_with_birdnet_as_its_teacher() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let one_round = |t: &mut Table| {
        if let Some(Value::Table(p)) = t.get_mut("pseudo") {
            p.remove("swap");
            p.insert("rounds".into(), Value::Integer(1));
        }
    };
    let exp = shrink(
        t,
        "birdclef2026-distill.toml",
        Path::new("birdnet"),
        one_round,
    );
    let out = run_ok(&mut trainer(t, &exp));
    let st = state(&recipe_dir(t, "birdclef2026-distill"));
    assert_eq!(st.rounds.len(), 1, "{out}");
    let t0 = TeacherStore::open(&TeacherStore::dir_for(&t.join("shards"), "t0")).unwrap();
    assert_eq!(t0.info().embedding_dim, Some(1024));
    assert!(t0.info().covered.iter().any(|&c| c));
    let b = ModelBundle::open(&st.rounds[0].outcome.bundle_dir).unwrap();
    // BirdNET's licence travels into the student (it is non-commercial).
    assert!(
        b.meta()
            .provenance
            .licences
            .iter()
            .any(|l| l.id == "CC-BY-NC-SA-4.0"),
        "{:?}",
        b.meta().provenance.licences
    );
    assert!(b.post_process().unwrap().is_some());
}
