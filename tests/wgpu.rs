//! The same Burn graph on wgpu as on flex, run on Mesa's lavapipe (Vulkan on the CPU) in CI's
//! wgpu step (`cargo test -p silencio --features wgpu,gpu-check --test e2e_wgpu`; see `.ci/run`):
//! a forward of every architecture at reduced width, training steps with autodiff (losses and
//! every gradient), and `silencio identify --device wgpu` on a real recording — each against
//! flex with the same weights and the same real log-mel windows.
//!
//! Tolerances: both sides compute in float32, in a different order (flex's sequential sums,
//! lavapipe's tiled shaders), so each result may move by a few ulps of its scale per reduction:
//! logits and probabilities 1e-4 of their scale (the bound the issue set; measured ~1e-6);
//! gradients 1e-2 of each tensor's largest value at the first step: flex sums a weight gradient's
//! batch × positions terms sequentially in float32, which the PyTorch-equivalence work measured
//! at 0.3–0.7 % off for ResNet's early layers (measured here: 3.8e-3 on the reduced ResNet);
//! losses 1e-4 relative over
//! three AdamW steps (Adam's normalised update can turn a 1e-6 gradient difference on a
//! near-zero gradient into a step of lr, so later steps drift by more than the first).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use burn::train::TrainStep;
use silencio_models::ARCHITECTURES;
use trainer::dataset::WindowStore;
use trainer::equivalence::Stepper;
use trainer::gpu_check::{self, CheckSize};
use trainer::model::{LossSpec, Trainee};

fn wgpu() -> Device {
    silencio_infer::parse_device("wgpu").unwrap()
}

/// The embedded real recordings through the trainer's ETL, once per test binary.
fn store() -> (&'static trainer::Experiment, &'static WindowStore) {
    static STORE: OnceLock<(tempfile::TempDir, trainer::Experiment, WindowStore)> = OnceLock::new();
    let (_, exp, store) = STORE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let (exp, store) = gpu_check::embedded_store(tmp.path()).unwrap();
        (tmp, exp, store)
    });
    (exp, store)
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0.0, |m, (x, y)| {
        if (x - y).is_nan() {
            f32::INFINITY
        } else {
            m.max((x - y).abs())
        }
    })
}

#[test]
fn every_architecture_forward_matches_flex() {
    let (_, store) = store();
    let [mels, _] = store.shape();
    for arch in ARCHITECTURES {
        let model = gpu_check::reduced_config(arch, 206, mels)
            .unwrap()
            .init(&Device::flex())
            .unwrap();
        let run = |device: &Device| -> Vec<f32> {
            let x = gpu_check::windows(store, 2, device).unwrap();
            model
                .clone()
                .fork(device)
                .forward(x)
                .logits
                .into_data()
                .try_to_vec::<f32>()
                .unwrap()
        };
        let (flex, gpu) = (run(&Device::flex()), run(&wgpu()));
        let (scale, diff) = (max_abs(&flex), max_diff(&flex, &gpu));
        println!("{arch}: max |logit| {scale:.4}, max |Δ| {diff:.3e}");
        assert!(scale > 0.0, "{arch}: the logits are not all zero");
        assert!(
            diff <= 1e-4 * scale.max(1.0),
            "{arch}: wgpu differs from flex by {diff} (scale {scale})"
        );
    }
}

/// Every gradient of a module, by parameter.
struct Grads<'a> {
    grads: &'a GradientsParams,
    out: HashMap<String, Vec<f32>>,
}

impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.out.insert(
                param.id.to_string(),
                g.into_data().try_to_vec::<f32>().unwrap(),
            );
        }
    }
}

fn trainee(
    model: &silencio_models::Model,
    device: &Device,
    t: &trainer::experiment::TrainConfig,
) -> Trainee {
    Trainee {
        model: model.clone().fork(device).train(),
        loss: LossSpec {
            kind: t.loss,
            smoothing: t.label_smoothing,
        },
    }
}

#[test]
fn training_steps_on_wgpu_match_flex() {
    let (exp, store) = store();
    let [mels, _] = store.shape();
    let t = exp.train.clone();
    for arch in gpu_check::TIMED_ARCHS {
        let model = gpu_check::check_config(arch, CheckSize::Tiny, store.classes(), mels)
            .unwrap()
            .init(&Device::flex())
            .unwrap();
        let devices = [Device::flex().autodiff(), wgpu().autodiff()];

        // First step: every gradient.
        let grads: Vec<HashMap<String, Vec<f32>>> = devices
            .iter()
            .map(|d| {
                let tr = trainee(&model, d, &t);
                let b = gpu_check::batch(store, 0, 2, t.secondary_weight, d).unwrap();
                let out = TrainStep::step(&tr, b);
                let mut v = Grads {
                    grads: &out.grads,
                    out: HashMap::new(),
                };
                tr.visit(&mut v);
                v.out
            })
            .collect();
        assert!(!grads[0].is_empty());
        assert_eq!(
            grads[0].len(),
            grads[1].len(),
            "{arch}: same parameters have gradients"
        );
        let grad_tol = 1e-2f32;
        let mut worst = 0f32;
        for (id, g) in &grads[0] {
            let (scale, diff) = (max_abs(g), max_diff(g, &grads[1][id]));
            worst = worst.max(diff / scale.max(1e-12));
            assert!(
                // Floor: a parameter whose exact gradient is 0 (a bias ahead of a batch norm)
                // carries rounding noise only (seen: 5e-9).
                diff <= grad_tol * scale.max(1e-4),
                "{arch}: gradient {id} differs by {diff} (scale {scale})"
            );
        }
        println!(
            "{arch}: {} gradients, worst relative |Δ| {worst:.3e}",
            grads[0].len()
        );

        // Three optimiser steps: the losses.
        let losses: Vec<Vec<f64>> = devices
            .iter()
            .map(|d| {
                let mut s = Stepper::new(trainee(&model, d, &t), &t, 3).unwrap();
                (0..3)
                    .map(|k| {
                        let b = gpu_check::batch(store, 2 * k, 2, t.secondary_weight, d).unwrap();
                        s.step(vec![b]).loss
                    })
                    .collect()
            })
            .collect();
        println!("{arch}: loss flex {:?} / wgpu {:?}", losses[0], losses[1]);
        for (k, (a, b)) in losses[0].iter().zip(&losses[1]).enumerate() {
            assert!(
                (a - b).abs() <= 1e-4 * a.abs().max(1e-3),
                "{arch}: step {} loss {a} on flex, {b} on wgpu",
                k + 1
            );
        }
    }
}

fn silencio() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_silencio"));
    c.env_remove("SILENCIO_MODEL")
        .env_remove("SILENCIO_REGISTRY")
        .env_remove("SILENCIO_DEVICE");
    c
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn identify_on_wgpu_matches_flex() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    let o = silencio()
        .args([
            "bundle",
            "create",
            "--arch",
            "efficientnet_lite0",
            "--name",
            "demo",
        ])
        .args(["--version", "1", "--taxonomy"])
        .arg(root().join("datasets/demo/birdclef/taxonomy.csv"))
        .arg("--out")
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let clip = root().join("datasets/demo/birdclef/train_audio/comyel/DEMO000002.ogg");
    let scores = |device: &str| -> Vec<(String, f64)> {
        let o = silencio()
            .arg("identify")
            .arg(&clip)
            .arg("--model")
            .arg(&bundle)
            .args(["--top-k", "9", "--format", "json", "--device", device])
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{device}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let mut v = Vec::new();
        for (i, w) in j["windows"].as_array().unwrap().iter().enumerate() {
            for s in w["species"].as_array().unwrap() {
                v.push((
                    format!("{i}/{}", s["code"].as_str().unwrap()),
                    s["score"].as_f64().unwrap(),
                ));
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (flex, gpu) = (scores("flex"), scores("wgpu"));
    assert!(!flex.is_empty());
    assert_eq!(
        flex.iter().map(|s| &s.0).collect::<Vec<_>>(),
        gpu.iter().map(|s| &s.0).collect::<Vec<_>>(),
        "same windows and species"
    );
    let worst = flex
        .iter()
        .zip(&gpu)
        .map(|(a, b)| (a.1 - b.1).abs())
        .fold(0.0, f64::max);
    println!("identify: {} scores, max |Δ| {worst:.3e}", flex.len());
    assert!(worst <= 1e-4, "wgpu's scores differ from flex's by {worst}");
}
