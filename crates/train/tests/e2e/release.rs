//! `trainer pipeline run` end to end on the demo data, with a real `mlflow server`, a real
//! production `silencio serve` taking traffic and guides' feedback, and the staging server the
//! pipeline starts itself: a retrained candidate is promoted (after a SIGKILL between stages
//! and `--resume`, without training or registering twice); a candidate made slower on purpose
//! (a full-size ResNet-50 behind a half-width Lite0) is rolled back by its canary; `pipeline
//! watch` starts a run when a new feedback label arrives.
//!
//! Needs the `silencio` binary beside the trainer's (`cargo test --workspace` builds it) and
//! `SILENCIO_MLFLOW_BIN` unless `SILENCIO_SKIP_MLFLOW=1`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common;
use crate::harness::{repo, run_ok};
use crate::trainer::experiment;

const KEY: &str = "pipeline-test-key";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn get(url: &str) -> (u16, Value) {
    let mut r = agent().get(url).call().unwrap();
    let s = r.status().as_u16();
    (s, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn post(url: &str, ct: &str, body: &[u8]) -> (u16, Value) {
    let mut r = agent()
        .post(url)
        .header("content-type", ct)
        .header("x-api-key", KEY)
        .send(body)
        .unwrap();
    let s = r.status().as_u16();
    (s, r.body_mut().read_json().unwrap_or(Value::Null))
}

fn stable(url: &str) -> String {
    let (_, m) = get(&format!("{url}/v1/models"));
    m["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "stable")
        .map(|m| m["model_version"].as_str().unwrap().to_string())
        .unwrap()
}

fn roles(url: &str) -> Vec<String> {
    let (_, m) = get(&format!("{url}/v1/models"));
    m["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap().to_string())
        .collect()
}

fn pipeline_config(
    t: &Path,
    name: &str,
    exp: &Path,
    url: &str,
    tracking: &str,
    extra: &str,
) -> PathBuf {
    let text = format!(
        r#"name = "pipeline"
runs = "{runs}"
tracking_uri = "{tracking}"
registry = "{registry}"
[retrain]
experiment = "{exp}"
feedback_dir = "{serve}"
max_drop = 1.0
{extra}
[optimise]
dtype = "f16"
max_score_change = 0.05
[production]
url = "{url}"
api_key_env = "SILENCIO_PIPELINE_KEY"
share = 0.5
window_s = 3.0
min_requests = 4
max_wait_s = 300.0
max_error_rate = 0.01
max_latency_ratio = 3.0
"#,
        runs = t.join("pipeline-runs").display(),
        registry = t.join("registry").display(),
        exp = exp.display(),
        serve = t.join("serve-data").display(),
    );
    let p = t.join(format!("{name}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

fn pipeline(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_trainer"));
    c.current_dir(repo())
        .env("SILENCIO_PIPELINE_KEY", KEY)
        .args(["pipeline", "run", "--config"])
        .arg(config);
    c
}

fn state(dir: &Path) -> Value {
    std::fs::read(dir.join("pipeline.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null)
}

fn done(s: &Value) -> Vec<String> {
    s["done"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["stage"].as_str().unwrap().to_string())
        .collect()
}

fn versions(t: &Path) -> usize {
    silencio_mlops::Registry::open(&t.join("registry").display().to_string())
        .unwrap()
        .list_versions("el-silencio")
        .unwrap()
        .len()
}

#[test]
fn the_pipeline_promotes_a_retrained_model_resumes_after_a_kill_and_rolls_back_a_slow_one() {
    let Some(mlflow) = common::mlflow_bin() else {
        return;
    };
    let silencio = Path::new(env!("CARGO_BIN_EXE_trainer")).with_file_name("silencio");
    assert!(
        silencio.is_file(),
        "{} is missing: build it (`cargo build -p silencio`, or run `cargo test --workspace`)",
        silencio.display()
    );
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let db = format!("sqlite:///{}", t.join("mlflow.db").display());
    let artifacts = t.join("artifacts");
    let server = common::MlflowServer::start(
        &mlflow,
        &[
            "--backend-store-uri",
            &db,
            "--artifacts-destination",
            artifacts.to_str().unwrap(),
        ],
        t,
    );

    // Production version 1: the demo experiment, short, registered and aliased `production`.
    let exp = experiment(t, "cx", 1, "[gate.valid]\nmin_macro_auc = 0.0\n");
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_trainer"))
            .current_dir(repo())
            .arg("--experiment")
            .arg(&exp)
            .args(["--tracking-uri", &server.base, "--registry"])
            .arg(t.join("registry")),
    );
    let reg = silencio_mlops::Registry::open(&t.join("registry").display().to_string()).unwrap();
    reg.set_alias("el-silencio", "production", 1).unwrap();

    // The production server, keeping every request as a sample so that feedback can teach.
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _prod = Kill(
        Command::new(&silencio)
            .current_dir(t)
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .arg("--registry")
            .arg(t.join("registry"))
            .arg("--data-dir")
            .arg(t.join("serve-data"))
            .args(["--api-key", KEY, "--sample-share", "1.0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while get_ready(&url) != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "production server not ready"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Servers name a model by its bundle (`name@<bundle version>`).
    let served_as = |v: u64| {
        let dir = reg
            .get_version("el-silencio", v)
            .unwrap()
            .local_path
            .unwrap();
        silencio_infer::ModelBundle::open(dir)
            .unwrap()
            .meta()
            .model_version()
    };
    assert_eq!(stable(&url), served_as(1));

    // A guide's recording and feedback on three of its windows.
    let soundscape = std::fs::read(
        repo().join("datasets/demo/birdclef/train_soundscapes/DEMO1_20240101_060000.ogg"),
    )
    .unwrap();
    let (s, answer) = post(&format!("{url}/v1/identify"), "audio/ogg", &soundscape);
    assert_eq!(s, 200, "{answer}");
    let request_id = answer["request_id"].as_str().unwrap().to_string();
    for (w, verdict, code) in [
        (0, "right", None),
        (1, "wrong", Some("comyel")),
        (2, "wrong", None),
    ] {
        let body = json!({"request_id": request_id, "window": w, "verdict": verdict, "correct_code": code});
        let (s, a) = post(
            &format!("{url}/v1/feedback"),
            "application/json",
            body.to_string().as_bytes(),
        );
        assert!(s == 200 || s == 201, "{s} {a}");
    }

    // Users keep identifying while the pipeline runs (the canary needs traffic).
    let clip = std::fs::read(repo().join("datasets/fixtures/audio/crowsetta_forest.ogg")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, url, clip) = (stop.clone(), url.clone(), clip.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = agent()
                    .post(format!("{url}/v1/identify"))
                    .header("content-type", "audio/ogg")
                    .send(&clip[..]);
                // The server goes away when a failing test unwinds: stop quietly then.
                let Ok(r) = r else { break };
                let s = r.status().as_u16();
                assert!(s == 200 || s == 429, "identify answered {s}");
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            n
        })
    };

    // A retrained candidate, killed once the training stage has finished.
    let good = pipeline_config(t, "good", &exp, &url, &server.base, "");
    let run_dir = t.join("pipeline-runs/pipeline/good");
    let first_log = t.join("good-first.log");
    let out = std::fs::File::create(&first_log).unwrap();
    let mut child = Kill(
        pipeline(&good)
            .args(["--run-name", "good"])
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    loop {
        if done(&state(&run_dir)).contains(&"train".to_string()) {
            break;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            panic!(
                "the pipeline ended before it was killed: {status}\n{}",
                std::fs::read_to_string(&first_log).unwrap()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "training never finished"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.0.kill().unwrap(); // SIGKILL
    child.0.wait().unwrap();
    let before = state(&run_dir);
    assert!(before["outcome"].is_null());
    let versions_after_training = versions(t);
    assert_eq!(versions_after_training, 2, "version 1 and the candidate");

    let stdout = run_ok(pipeline(&good).arg("--resume"));
    println!("{stdout}");
    assert!(stdout.contains("data: done before, skipped"), "{stdout}");
    assert!(stdout.contains("train: done before, skipped"), "{stdout}");
    assert!(stdout.contains("\"outcome\":\"promoted\""), "{stdout}");
    let after = state(&run_dir);
    assert_eq!(
        after["done"][1], before["done"][1],
        "the training stage was not redone"
    );
    assert_eq!(
        done(&after),
        [
            "data",
            "train",
            "optimise",
            "integration",
            "register",
            "canary",
            "release"
        ]
    );
    // The feedback became two training rows and one negative.
    let fb = &after["done"][0]["detail"]["feedback"];
    assert_eq!(
        (
            fb["confirmed"].as_u64(),
            fb["corrected"].as_u64(),
            fb["negatives"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{fb}"
    );
    // The negative trained: the run's shards hold one window whose only label is "absent".
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("shards/manifest.json")).unwrap())
            .unwrap();
    let negatives = manifest["windows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| {
            w["labels"]
                .as_array()
                .unwrap()
                .iter()
                .any(|l| l[1].as_f64().unwrap() < 0.0)
        })
        .count();
    assert_eq!(negatives, 1);
    // Version 3 (the f16 bundle) serves all traffic and is the registry's production model.
    assert_eq!(versions(t), 3);
    assert_eq!(stable(&url), served_as(3));
    assert_eq!(roles(&url), ["stable", "previous"]);
    let prod = reg.get_by_alias("el-silencio", "production").unwrap();
    assert_eq!(prod.version, 3);
    let served = silencio_infer::ModelBundle::open(prod.local_path.unwrap()).unwrap();
    assert_eq!(
        served.meta().weights_dtype,
        silencio_infer::WeightsDtype::F16
    );
    let canary = &after["done"][5]["detail"]["figures"];
    assert!(
        canary["canary_requests"].as_f64().unwrap() >= 4.0,
        "{canary}"
    );
    // One MLflow run, read back from the server: every stage a step, promoted.
    let run_id = after["mlflow_run_id"].as_str().unwrap();
    let run = server.get_json(&format!("/api/2.0/mlflow/runs/get?run_id={run_id}"));
    let tags: Vec<(String, String)> = run["run"]["data"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["key"].as_str().unwrap().into(),
                t["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    for stage in [
        "data",
        "train",
        "optimise",
        "integration",
        "register",
        "canary",
        "release",
    ] {
        assert!(
            tags.contains(&(format!("stage.{stage}"), "done".into())),
            "{stage}: {tags:?}"
        );
    }
    assert!(
        tags.contains(&("pipeline.outcome".into(), "promoted".into())),
        "{tags:?}"
    );
    let files = server.artifact_paths(run_id, "pipeline");
    assert!(
        files.iter().any(|f| f.ends_with("stage-canary.json")),
        "{files:?}"
    );

    // A candidate made worse on purpose: a full-size ResNet-50 from scratch behind the tiny
    // production model. It clears the offline gate (with room) but its canary is many times
    // slower, so it is rolled back and production does not change.
    let slow_exp = experiment(t, "cx-slow", 1, "[gate.valid]\nmin_macro_auc = 0.0\n");
    let text = std::fs::read_to_string(&slow_exp)
        .unwrap()
        .replace("arch = \"tiny\"", "arch = \"resnet50\"")
        .replace("[train]", "[train]\nmax_steps_per_epoch = 1");
    std::fs::write(&slow_exp, text).unwrap();
    let slow = pipeline_config(
        t,
        "slow",
        &slow_exp,
        &url,
        &server.base,
        "from_production = false",
    );
    let stdout = run_ok(pipeline(&slow).args(["--run-name", "slow"]));
    println!("{stdout}");
    assert!(stdout.contains("\"outcome\":\"rolled_back\""), "{stdout}");
    assert!(stdout.contains("p95 inference time"), "{stdout}");
    assert_eq!(stable(&url), served_as(3));
    assert!(!roles(&url).contains(&"canary".to_string()));
    assert_eq!(
        reg.get_by_alias("el-silencio", "production")
            .unwrap()
            .version,
        3
    );

    // `pipeline watch`: its first look marks what is there as trained on; one new feedback
    // label (this config's threshold) starts a run, which promotes the next version.
    let watch = pipeline_config(t, "watch", &exp, &url, &server.base, "");
    let mut text = std::fs::read_to_string(&watch).unwrap();
    text.push_str("[watch]\nfeedback_labels = 1\nrecordings = 1000\npoll_s = 0.2\n");
    std::fs::write(&watch, text).unwrap();
    let watch_log = t.join("watch.log");
    let out = std::fs::File::create(&watch_log).unwrap();
    let mut watcher = Kill(
        Command::new(env!("CARGO_BIN_EXE_trainer"))
            .current_dir(repo())
            .env("SILENCIO_PIPELINE_KEY", KEY)
            .args(["pipeline", "watch", "--max-runs", "1", "--config"])
            .arg(&watch)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let marks = t.join("pipeline-runs/pipeline/watch.json");
    let t0 = Instant::now();
    while !marks.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the watcher never looked"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Nothing new yet: no run starts.
    std::thread::sleep(Duration::from_secs(1));
    assert!(watcher.0.try_wait().unwrap().is_none());
    assert_eq!(versions(t), 5);
    let body = json!({"request_id": request_id, "window": 3, "verdict": "right"});
    let (s, a) = post(
        &format!("{url}/v1/feedback"),
        "application/json",
        body.to_string().as_bytes(),
    );
    assert!(s == 200 || s == 201, "{s} {a}");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = watcher.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(900),
            "the watched run never ended"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let log = std::fs::read_to_string(&watch_log).unwrap();
    assert!(status.success(), "{log}");
    assert!(
        log.contains("starting a run: 4 feedback entries (+1)"),
        "{log}"
    );
    assert!(log.contains("\"outcome\":\"promoted\""), "{log}");
    assert_eq!(
        reg.get_by_alias("el-silencio", "production")
            .unwrap()
            .version,
        7
    );
    assert_eq!(stable(&url), served_as(7));

    stop.store(true, Ordering::Relaxed);
    assert!(traffic.join().unwrap() > 0);
}

fn get_ready(url: &str) -> u16 {
    agent()
        .get(&format!("{url}/readyz"))
        .call()
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}
