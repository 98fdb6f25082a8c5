//! `birdnet-probe` end to end on the committed demo set: BirdNET V2.4 embeddings of the shards'
//! windows, a linear head trained with Burn, a probe bundle, evaluation through the bundle as
//! `silencio identify` runs it, the gate and the registry.
//!
//! Only with `--features birdnet` (BirdNET's weights are CC BY-NC-SA and never in the repo):
//! `SILENCIO_BIRDNET_DIR=OUT_DIR cargo test --release -p trainer --features birdnet --test e2e probe`.
#![cfg(feature = "birdnet")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use silencio_audio::{DecodeOptions, WindowConfig};
use silencio_onnx::BirdNet;
use silencio_onnx::labels::{CHUNK_SAMPLES, SAMPLE_RATE};
use silencio_onnx::probe::{EMBEDDING_DIM, ProbeBundle};

use crate::harness::repo;

fn device() -> burn::tensor::Device {
    silencio_infer::default_device().unwrap()
}

#[test]
fn a_window_embedding_is_the_mean_of_its_two_chunks() {
    let bn = BirdNet::load(&device()).unwrap();
    let clip = std::fs::read_dir(repo().join("datasets/demo/birdclef/train_audio/comyel"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let opts = DecodeOptions {
        target_rate: Some(SAMPLE_RATE),
        ..Default::default()
    };
    let audio = silencio_audio::decode_path(&clip, &opts).unwrap().samples;
    let got = bn.window_embeddings(&audio, &[0.0]).unwrap();
    let mut chunks = vec![vec![0f32; CHUNK_SAMPLES]; 2];
    for (k, start) in [0usize, 2 * SAMPLE_RATE as usize].into_iter().enumerate() {
        let end = (start + CHUNK_SAMPLES).min(audio.len());
        if start < end {
            chunks[k][..end - start].copy_from_slice(&audio[start..end]);
        }
    }
    let refs: Vec<&[f32]> = chunks.iter().map(Vec::as_slice).collect();
    let e = bn.forward_chunks(&refs).unwrap().embeddings;
    assert_eq!(got[0].len(), EMBEDDING_DIM);
    let worst = (0..EMBEDDING_DIM)
        .map(|i| (got[0][i] - (e[0][i] + e[1][i]) / 2.0).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-5, "max |Δ| {worst}");
    // The two chunks differ, so the mean is not just one of them.
    assert!((0..EMBEDDING_DIM).any(|i| (e[0][i] - e[1][i]).abs() > 1e-3));
}

#[test]
fn the_probe_experiment_trains_evaluates_and_registers_a_probe_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let r = repo();
    // The committed experiment, with its paths moved into the temporary directory.
    let mut exp: toml::Table =
        toml::from_str(&std::fs::read_to_string(r.join("experiments/birdnet-probe.toml")).unwrap())
            .unwrap();
    let set = |t: &mut toml::Table, table: &str, key: &str, v: toml::Value| {
        t[table].as_table_mut().unwrap().insert(key.into(), v);
    };
    let path = |p: PathBuf| toml::Value::String(p.display().to_string());
    set(
        &mut exp,
        "data",
        "root",
        path(r.join("datasets/demo/birdclef")),
    );
    set(&mut exp, "data", "shards", path(tmp.path().join("shards")));
    set(
        &mut exp,
        "data",
        "backgrounds",
        path(r.join("datasets/demo/backgrounds")),
    );
    set(&mut exp, "output", "runs", path(tmp.path().join("runs")));
    let text = toml::to_string(&exp).unwrap();
    let exp = tmp.path().join("birdnet-probe.toml");
    std::fs::write(&exp, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .current_dir(&r)
        .arg("--experiment")
        .arg(&exp)
        .arg("--tracking-uri")
        .arg(tmp.path().join("mlruns"))
        .arg("--registry")
        .arg(tmp.path().join("registry"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");
    let bundle = PathBuf::from(
        stdout
            .lines()
            .last()
            .unwrap()
            .rsplit_once(": ")
            .unwrap()
            .1
            .trim(),
    );
    // A probe bundle, registered under its own alias; `staging` stays untouched.
    let probe = ProbeBundle::open(&bundle).unwrap();
    assert_eq!(probe.meta().species.len(), 9);
    assert!(probe.meta().provenance.trained);
    let aliases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("registry/aliases.json")).unwrap())
            .unwrap();
    assert_eq!(aliases["birdnet-probe"], "1", "{aliases}");
    assert!(aliases.get("staging").is_none(), "{aliases}");
    let copy = tmp.path().join("registry/versions/1");
    assert_eq!(
        ProbeBundle::open(&copy).unwrap().head(),
        probe.head(),
        "the registry holds the same head"
    );
    // The report's validation AUC: BirdNET embeddings separate the demo species well.
    let run_dir = bundle.parent().unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    let auc = |set: &str| report[set]["overall"]["macro_auc"].as_f64().unwrap();
    assert!(
        auc("valid") > 0.8,
        "validation macro ROC-AUC {}",
        auc("valid")
    );
    assert!(auc("mixed") > 0.5, "mixed macro ROC-AUC {}", auc("mixed"));
    // Embeddings were cached beside the shards; a second run would not recompute them.
    assert!(
        tmp.path()
            .join("shards/birdnet-embeddings.safetensors")
            .is_file()
    );

    // The bundle scores a recording on the standard 5 s grid through the same path as
    // `silencio identify --model <probe>`.
    let ens = silencio_onnx::BirdNetProbe::load(&bundle, &device())
        .unwrap()
        .into_ensemble(3600.0)
        .unwrap();
    let sc = std::fs::read_dir(r.join("datasets/demo/birdclef/train_soundscapes"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let id = ens.identify(std::fs::read(&sc).unwrap()).unwrap();
    let samples = silencio_audio::decode_path(&sc, &DecodeOptions::default())
        .unwrap()
        .samples;
    let grid = WindowConfig::default()
        .windows(samples.len(), 32_000)
        .unwrap();
    assert_eq!(id.windows.len(), grid.len());
    for (w, g) in id.windows.iter().zip(&grid) {
        assert_eq!((w.start_s, w.end_s), (g.start_s, g.end_s));
        assert!(w.scores.iter().all(|s| (0.0..=1.0).contains(s)));
    }
}
