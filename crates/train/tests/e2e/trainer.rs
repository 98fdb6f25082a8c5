//! End-to-end trainer runs on the committed real demo set: train → evaluate → gate → registry,
//! tracked in a local MLflow file store that the real `mlflow` package then opens; the gate
//! refusing a model; SIGKILL mid-training and `--resume`; and two devices against one.
//!
//! Needs `SILENCIO_MLFLOW_PYTHON` (a Python with the pinned `mlflow`; scripts/test.sh sets it)
//! unless `SILENCIO_SKIP_MLFLOW=1`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;
use harness::{repo, run_ok, trainer};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// An experiment on the demo set with its shards, runs, MLflow store and registry in `tmp`.
pub(crate) fn experiment(tmp: &Path, name: &str, epochs: usize, extra: &str) -> PathBuf {
    let r = repo();
    let text = format!(
        r#"name = "{name}"
[data]
root = "{root}"
shards = "{shards}"
backgrounds = "{bg}"
[model]
arch = "tiny"
[train]
epochs = {epochs}
batch_size = 16
lr = 3e-3
mixup_prob = 0.5
noise_prob = 0.3
[eval]
mix_minutes = 1
[output]
runs = "{runs}"
{extra}
"#,
        root = r.join("datasets/demo/birdclef").display(),
        shards = tmp.join("shards").display(),
        bg = r.join("datasets/demo/backgrounds").display(),
        runs = tmp.join("runs").display(),
    );
    let p = tmp.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn run_json(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("run.json")).unwrap()).unwrap()
}

/// The MLflow summary of a run, read with the real `mlflow` package; None when skipped.
fn mlflow_check(tmp: &Path, run_id: &str, epochs: usize) -> Option<serde_json::Value> {
    let Ok(py) = std::env::var("SILENCIO_MLFLOW_PYTHON") else {
        assert!(
            std::env::var("SILENCIO_SKIP_MLFLOW").is_ok(),
            "set SILENCIO_MLFLOW_PYTHON to a python with mlflow (scripts/test.sh does), or \
             SILENCIO_SKIP_MLFLOW=1"
        );
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/check_mlflow_run.py");
    let out = Command::new(py)
        .arg(script)
        .arg(format!("file://{}", tmp.join("mlruns").display()))
        .arg(run_id)
        .arg(epochs.to_string())
        .env("MLFLOW_ALLOW_FILE_STORE", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mlflow check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

fn last_line_path(stdout: &str) -> PathBuf {
    let last = stdout.lines().last().unwrap();
    PathBuf::from(last.rsplit(": ").next().unwrap())
}

/// The trained demo bundle as served (`Model::for_inference`: batch norms folded, the project's
/// CPU kernels) against Burn's ops on the model as loaded (under autodiff, where the kernels
/// never run; frozen, so that it infers), on the 12 windows of the real 1-minute soundscape. Tolerances as in
/// `crates/infer/tests/kernels_parity.rs`: logits within 1e-4 of their largest magnitude,
/// probabilities within 1e-5.
fn prepared_model_matches_burns_ops(bundle: &silencio_infer::ModelBundle) {
    use burn::module::Module;
    use burn::tensor::{Device, Tensor};
    let device = Device::flex();
    let model = bundle.load_model(&device).unwrap();
    let audio = repo().join("datasets/fixtures/audio/soundscape_1min.ogg");
    let (_, f) =
        silencio_audio::features_from_path(&audio, &bundle.meta().features, 120.0).unwrap();
    let x = silencio_infer::features_to_tensor(&f, &device);
    let ad = device.autodiff();
    // Frozen: on an autodiff device an unfrozen batch norm would use batch statistics and
    // dropout would drop.
    let burn_ops = model
        .clone()
        .fork(&ad)
        .freeze()
        .forward(Tensor::<4>::from_data(x.to_data(), &ad))
        .logits;
    let flat = |t: Tensor<2>| t.into_data().try_to_vec::<f32>().unwrap();
    let reference = flat(burn_ops);
    let served = flat(model.for_inference().forward(x).logits);
    let scale = reference.iter().fold(0f32, |m, v| m.max(v.abs()));
    let dl = served
        .iter()
        .zip(&reference)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale;
    let sig = |v: &f32| 1.0 / (1.0 + (-f64::from(*v)).exp());
    let dp = served
        .iter()
        .zip(&reference)
        .fold(0f64, |m, (a, b)| m.max((sig(a) - sig(b)).abs()));
    println!(
        "trained demo bundle: logits up to {scale:.2}, max |Δ| {dl:.2e} of it, max |Δp| {dp:.2e}"
    );
    // Logits near 0 would make the comparison empty (a random EfficientNet-B0's are ~1e-13).
    assert!(scale > 0.1, "logits up to {scale}: too small to compare");
    assert!(dl <= 1e-4, "logits differ by {dl:e} of their scale");
    assert!(dp <= 1e-5, "probabilities differ by {dp:e}");
}

#[test]
fn demo_trains_evaluates_registers_and_mlflow_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let exp = experiment(
        t,
        "e2e",
        3,
        "[gate.valid]\nmin_macro_auc = 0.0\n[gate.mixed]\nmin_macro_auc = 0.0\n",
    );
    let stdout = run_ok(&mut trainer(t, &exp));
    // The last line ends with the bundle path; the bundle opens and names its run.
    let bundle = last_line_path(&stdout);
    let b = silencio_infer::ModelBundle::open(&bundle).unwrap();
    let run_dir = bundle.parent().unwrap();
    let state = run_json(run_dir);
    let run_id = state["mlflow_run_id"].as_str().unwrap().to_string();
    assert_eq!(state["status"], "finished");
    assert_eq!(b.meta().provenance.run_id.as_deref(), Some(run_id.as_str()));
    assert_eq!(b.meta().species.len(), 9);
    prepared_model_matches_burns_ops(&b);
    // Both reports exist and agree with the printed metrics.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    let auc = report["valid"]["overall"]["macro_auc"].as_f64().unwrap();
    assert!(
        stdout.contains(&format!("eval_valid_macro_auc: {auc:.4}")),
        "{stdout}"
    );
    assert!(report["mixed"]["overall"]["macro_auc"].as_f64().is_some());
    // The failure suites: weak calls are all below -10 dB, overlap windows hold 2+ species,
    // and each suite has its HTML page.
    for suite in ["weak", "overlap", "interference"] {
        assert!(
            report["suites"][suite]["n_rows"].as_u64().unwrap() > 0,
            "{suite}"
        );
        assert!(run_dir.join(format!("suite-{suite}.html")).exists());
    }
    // Every set's window scores: as many windows as the report scored, the same macro AUC
    // recomputed from the file, and clusters that are recordings (validation) or soundscapes.
    for (set, r) in [
        ("valid", &report["valid"]),
        ("mixed", &report["mixed"]),
        ("weak", &report["suites"]["weak"]),
        ("overlap", &report["suites"]["overlap"]),
        ("interference", &report["suites"]["interference"]),
    ] {
        let path = run_dir.join(format!("eval-{set}/window_scores.json"));
        let w = silencio_eval::effect::WindowScores::read_json(&path).unwrap();
        assert_eq!(
            w.row_ids.len() as u64,
            r["n_rows"].as_u64().unwrap(),
            "{set}"
        );
        assert_eq!(w.species.len(), 9);
        let scores = silencio_eval::Matrix::from_rows(&w.scores).unwrap();
        let labels = silencio_eval::Matrix::from_rows(&w.labels).unwrap();
        let auc = silencio_eval::evaluate(&scores, &labels).unwrap().macro_auc;
        let want = r["overall"]["macro_auc"].as_f64().unwrap();
        assert!(
            (auc.unwrap() - want).abs() < 1e-12,
            "{set}: {auc:?} vs {want}"
        );
        for (id, cluster) in w.row_ids.iter().zip(&w.clusters) {
            if set == "valid" {
                // The demo's urls name the source recordings (pypi:<package>/<path>).
                assert!(cluster.starts_with("pypi:"), "{id}: {cluster}");
            } else {
                assert!(id.starts_with(&format!("{cluster}_")), "{id}: {cluster}");
            }
        }
    }
    let slice_values = |suite: &str, dim: &str| -> Vec<String> {
        report["suites"][suite]["slices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["dimension"] == dim)
            .map(|s| s["value"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(slice_values("weak", "snr"), vec!["<-10 dB".to_string()]);
    assert!(
        slice_values("overlap", "overlap")
            .iter()
            .all(|v| v == "2" || v == "3+")
    );
    let html = std::fs::read_to_string(run_dir.join("report.html")).unwrap();
    assert!(html.contains("<svg"));
    // Registered as staging: the registry's alias points at a copy of this bundle, which is what
    // `silencio identify` picks up by default.
    let reg = t.join("registry");
    let (dir, alias) = silencio_infer::registry::resolve_default(&reg).unwrap();
    assert_eq!(alias, "staging");
    let copy = silencio_infer::ModelBundle::open(&dir).unwrap();
    assert_eq!(copy.meta().weights.sha256, b.meta().weights.sha256);
    // The real MLflow client reads the run: params, per-epoch metrics, tags, artefacts.
    if let Some(m) = mlflow_check(t, &run_id, 3) {
        assert_eq!(m["experiment"], "e2e");
        assert_eq!(m["status"], "FINISHED");
        assert_eq!(m["params"]["train.epochs"], "3");
        assert_eq!(m["tags"]["quality_gate"], "passed");
        let logged = m["metrics"]["eval_valid_macro_auc"].as_f64().unwrap();
        assert!((logged - auc).abs() < 1e-9);
        assert!(m["metrics"]["valid_auroc_macro"].as_f64().is_some(), "{m}");
    }

    // `retrain`: continue the registered staging model on the newer 30 % of the data; it
    // clears the gate again and becomes version 2.
    let retrain = experiment(t, "retrain", 1, "[gate.valid]\nmin_macro_auc = 0.0\n");
    let text = std::fs::read_to_string(&retrain)
        .unwrap()
        .replace("arch = \"tiny\"", "from_registry = \"staging\"")
        .replace("[train]", "[train]\nlr = 1e-4")
        .replacen("lr = 3e-3\n", "", 1)
        .replace("[data]", "[data]\nperiod = \"retrain\"");
    std::fs::write(&retrain, text).unwrap();
    // Compared with the model it retrains (the pipeline's "not worse than production"), with
    // room to drop: the same mixed soundscapes are scored by both and the gate passes.
    let reg_arg = t.join("registry");
    let stdout =
        run_ok(trainer(t, &retrain).args(["--baseline", "registry:staging", "--max-drop", "1.0"]));
    assert!(
        stdout.contains("mixed: macro ROC-AUC") && stdout.contains("baseline registry:staging"),
        "{stdout}"
    );
    assert!(
        stdout.contains("(registered model el-silencio@"),
        "{stdout}"
    );
    assert!(stdout.contains("registered as version 2"), "{stdout}");
    let (dir2, _) = silencio_infer::registry::resolve_default(&reg).unwrap();
    let v2 = silencio_infer::ModelBundle::open(&dir2).unwrap();
    assert_ne!(v2.meta().weights.sha256, b.meta().weights.sha256);
    assert_eq!(v2.meta().model, b.meta().model);
    // A candidate that must beat the model it retrains by a whole unit of ROC-AUC cannot: the
    // gate refuses it with the baseline's reason and version 3 is never registered.
    let stdout = run_ok(trainer(t, &retrain).args([
        "--baseline",
        "registry:2",
        "--max-drop=-1.0",
        "--run-name",
        "worse",
    ]));
    assert!(
        stdout.contains("quality gate: FAILED, not registered"),
        "{stdout}"
    );
    assert!(stdout.contains("below the baseline's"), "{stdout}");
    assert!(reg_arg.join("versions/3").symlink_metadata().is_err());
}

#[test]
fn quality_gate_refuses_a_model_below_its_bar() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // ROC-AUC can never reach 1.01: the gate must refuse, say why, and register nothing.
    let exp = experiment(t, "gate", 1, "[gate.valid]\nmin_macro_auc = 1.01\n");
    let stdout = run_ok(&mut trainer(t, &exp));
    assert!(
        stdout.contains("quality gate: FAILED, not registered"),
        "{stdout}"
    );
    assert!(stdout.contains("< 1.010"), "{stdout}");
    let err = silencio_infer::registry::resolve_default(&t.join("registry")).unwrap_err();
    assert_eq!(err.kind(), "no_model");
    // The bundle is still written (for inspection) and the run records the refusal.
    assert!(last_line_path(&stdout).join("bundle.json").exists());
    let run_dir = last_line_path(&stdout).parent().unwrap().to_path_buf();
    let run_id = run_json(&run_dir)["mlflow_run_id"]
        .as_str()
        .unwrap()
        .to_string();
    if let Some(m) = mlflow_check(t, &run_id, 1) {
        assert_eq!(m["tags"]["quality_gate"], "failed");
    }
}

#[test]
fn killed_mid_training_resumes_from_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let epochs = 6;
    let exp = experiment(t, "resume", epochs, "");
    let mut child = trainer(t, &exp)
        .args(["--run-name", "r1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    // Kill once epoch 2's checkpoint is complete by the rule --resume applies (model,
    // optimiser and scheduler all written): Burn writes the three files from separate
    // threads, in no fixed order, so no single file marks the end.
    let run = t.join("runs/resume/r1");
    while trainer::fit::last_checkpoint(&run).is_none_or(|e| e < 2) {
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "no checkpoint after 900 s"
        );
        if let Some(s) = child.try_wait().unwrap() {
            panic!("trainer ended before it could be killed: {s}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap(); // SIGKILL: no clean-up runs
    child.wait().unwrap();
    let dir = t.join("runs/resume/r1");
    assert_eq!(run_json(&dir)["status"], "running");
    let run_id = run_json(&dir)["mlflow_run_id"]
        .as_str()
        .unwrap()
        .to_string();

    let stdout = run_ok(trainer(t, &exp).arg("--resume"));
    let resumed_at: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("resuming after epoch "))
        .expect("resume line")
        .trim()
        .parse()
        .unwrap();
    assert!((2..epochs).contains(&resumed_at), "{resumed_at}");
    assert!(stdout.contains("(resumed)"), "{stdout}");
    // Same run directory, same MLflow run, now finished with every epoch logged once.
    assert_eq!(run_json(&dir)["status"], "finished");
    assert_eq!(run_json(&dir)["mlflow_run_id"].as_str().unwrap(), run_id);
    assert!(dir.join(format!("checkpoint/model-{epochs}.bpk")).exists());
    if let Some(m) = mlflow_check(t, &run_id, epochs) {
        assert_eq!(m["status"], "FINISHED");
    }
}

/// The Ray head's dashboard address (scripts/test.sh starts one), or None when skipped.
fn ray_address() -> Option<String> {
    match std::env::var("SILENCIO_RAY_ADDRESS") {
        Ok(a) => Some(a),
        Err(_) => {
            assert!(
                std::env::var("SILENCIO_SKIP_RAY").is_ok(),
                "set SILENCIO_RAY_ADDRESS to a Ray head's dashboard (scripts/test.sh starts one), \
                 or SILENCIO_SKIP_RAY=1"
            );
            None
        }
    }
}

#[test]
fn submit_runs_the_trainer_as_a_ray_job_and_follows_its_logs() {
    let Some(addr) = ray_address() else { return };
    let bin = env!("CARGO_BIN_EXE_trainer");
    let out = Command::new(bin)
        .args(["submit", "--ray-address", &addr, "--entrypoint"])
        .arg(format!("{bin} --help"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // The job's own output (the trainer's help) came back through the followed logs.
    assert!(
        stdout.contains("Train, evaluate, gate and register"),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("Succeeded"), "{stderr}");
}

#[test]
fn ctrl_c_stops_a_submitted_ray_job() {
    let Some(addr) = ray_address() else { return };
    let mut child = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args([
            "submit",
            "--ray-address",
            &addr,
            "--entrypoint",
            "sleep 600",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the job is submitted and running, then send SIGINT as a terminal would.
    std::thread::sleep(Duration::from_secs(8));
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "submit did not stop the job"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("stopping job"), "{stderr}");
    assert!(stderr.contains("Stopped"), "{stderr}");
}

// The mlops crate's harness for a real `mlflow server` (free port, /health wait, process-group
// kill on drop), shared rather than copied.
use crate::common;

#[test]
fn demo_tracks_and_registers_on_an_mlflow_server() {
    let Some(bin) = common::mlflow_bin() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let db = format!("sqlite:///{}", t.join("mlflow.db").display());
    let artifacts = t.join("artifacts");
    let server = common::MlflowServer::start(
        &bin,
        &[
            "--backend-store-uri",
            &db,
            "--artifacts-destination",
            artifacts.to_str().unwrap(),
        ],
        t,
    );
    let exp = experiment(t, "rest", 1, "[gate.valid]\nmin_macro_auc = 0.0\n");
    let stdout = run_ok(
        Command::new(env!("CARGO_BIN_EXE_trainer"))
            .current_dir(repo())
            .arg("--experiment")
            .arg(&exp)
            .args(["--tracking-uri", &server.base, "--registry", &server.base]),
    );
    let run_dir = last_line_path(&stdout).parent().unwrap().to_path_buf();
    let run_id = run_json(&run_dir)["mlflow_run_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(stdout.contains("#/experiments/"), "{stdout}");

    // The run, read back through the server's REST API.
    let run = server.get_json(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}"));
    assert_eq!(run["run"]["info"]["status"], "FINISHED");
    let data = &run["run"]["data"];
    let param = |k: &str| {
        data["params"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["key"] == k)
            .map(|p| p["value"].as_str().unwrap().to_string())
    };
    assert_eq!(param("train.epochs").as_deref(), Some("1"));
    let metric_keys: Vec<&str> = data["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    for k in [
        "train_loss",
        "valid_loss",
        "eval_valid_macro_auc",
        "eval_mixed_macro_auc",
    ] {
        assert!(metric_keys.contains(&k), "{k} not in {metric_keys:?}");
    }
    // Artefacts went through the server's proxy.
    let files = server.artifact_paths(&run_id, "bundle");
    for want in ["bundle/bundle.json", "bundle/weights.safetensors"] {
        assert!(files.iter().any(|f| f == want), "{want} not in {files:?}");
    }
    // Registered in MLflow's model registry with alias staging, pointing at this run.
    let mv =
        server.get_json("/api/2.0/mlflow/registered-models/alias?name=el-silencio&alias=staging");
    assert_eq!(mv["model_version"]["version"], "1");
    assert_eq!(mv["model_version"]["run_id"], run_id.as_str());
}
