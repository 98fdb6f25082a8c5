//! The project's CPU kernels (`silencio-kernels`) against Burn's own ops, on models whose
//! activations are realistic rather than a random initialisation's (a random EfficientNet-B0's
//! logits are ~1e-13, where sigmoid never leaves 0.5), on real audio: the 12 windows of the
//! 1-minute soundscape fixture.
//! - full-size EfficientNet-B0 (206 classes) whose batch-norm statistics were recalibrated on
//!   those windows (one training-mode pass at momentum 1), so that every layer sees unit-scale
//!   activations;
//! - EfficientNet-Lite0 with its real ImageNet weights (`SILENCIO_LITE0_PTH`, as the PyTorch
//!   parity test), fed the log-mels on its three channels;
//! - full-size ResNet-50, recalibrated the same way (its ReLU/batch-norm path is fused too).
//!
//! Each model runs three ways against Burn's ops on the model as loaded: the kernels on, the
//! model prepared for inference (`Model::for_inference`: batch norms folded into the
//! convolutions, kernel parameters on the host) with the kernels on, as served, and the prepared
//! model with the kernels off (the fold alone, as wgpu runs it).
//!
//! Stated tolerances: the backbone's features and the logits within 1e-4 of their largest
//! magnitude (both sides float32; the kernels fold each batch norm into one multiply-add and
//! evaluate exp within 1 ulp, Burn rounds differently), probabilities within 1e-5; the features'
//! standard deviation must exceed 0.1 (realistic activations). One test function: the kernels'
//! switch is process-wide.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use silencio_audio::FeatureConfig;
use silencio_models::{BackboneConfig, Model, ModelConfig};

mod common;
use common::recalibrate;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../datasets/fixtures/audio")
        .join(name)
}

/// The soundscape's windows, `[12, 1, 128, 313]` log-mel dB.
fn windows(device: &Device) -> Tensor<4> {
    let cfg = FeatureConfig::recipe("birdclef").unwrap();
    let (_, f) =
        silencio_audio::features_from_path(fixture("soundscape_1min.ogg"), &cfg, 120.0).unwrap();
    silencio_infer::features_to_tensor(&f, device)
}

fn flat<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().unwrap()
}

/// Largest difference relative to the largest magnitude, and the standard deviation, of `off`.
fn rel_diff(on: &[f32], off: &[f32]) -> (f32, f32) {
    let scale = off.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = on
        .iter()
        .zip(off)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let mean = off.iter().sum::<f32>() / off.len() as f32;
    let std = (off.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / off.len() as f32).sqrt();
    (d / scale.max(1e-30), std)
}

/// `f(model, x)` with the kernels on, then `f(reference, x)` with them off.
fn both<const D: usize>(
    model: &Model,
    reference: &Model,
    x: &Tensor<4>,
    f: impl Fn(&Model, Tensor<4>) -> Tensor<D>,
) -> (Vec<f32>, Vec<f32>) {
    silencio_kernels::set_enabled(true);
    let on = flat(f(model, x.clone()));
    silencio_kernels::set_enabled(false);
    let off = flat(f(reference, x.clone()));
    silencio_kernels::set_enabled(true);
    (on, off)
}

fn check(name: &str, model: &Model, x: &Tensor<4>) {
    compare(name, model, model, x);
    let prepared = model.clone().for_inference();
    compare(&format!("{name}, prepared"), &prepared, model, x);
    // The fold alone (Burn's ops on the folded model) against the model as loaded.
    let off = |m: &Model, f: &dyn Fn(&Model) -> Vec<f32>| {
        silencio_kernels::set_enabled(false);
        let v = f(m);
        silencio_kernels::set_enabled(true);
        v
    };
    let features = |m: &Model| flat(m.features(x.clone()));
    let (df, _) = rel_diff(&off(&prepared, &features), &off(model, &features));
    println!("{name}: the fold alone, max |Δ features| {df:.2e} of the largest");
    assert!(df <= 1e-4, "{name}: folding moved the features by {df:e}");
}

/// `model` with the kernels on against `reference` (the model as loaded) with them off.
fn compare(name: &str, model: &Model, reference: &Model, x: &Tensor<4>) {
    // The backbone's output: where the activations must be realistic (a randomly initialised
    // head keeps the logits small whatever the features).
    let (f_on, f_off) = both(model, reference, x, |m, x| m.features(x));
    let (df, f_std) = rel_diff(&f_on, &f_off);
    let (l_on, l_off) = both(model, reference, x, |m, x| m.forward(x).logits);
    let (dl, l_std) = rel_diff(&l_on, &l_off);
    let sig = |v: &f32| 1.0 / (1.0 + (-f64::from(*v)).exp());
    let dp = l_on
        .iter()
        .zip(&l_off)
        .fold(0f64, |m, (a, b)| m.max((sig(a) - sig(b)).abs()));
    println!(
        "{name}: features std {f_std:.3} (max |Δ| {df:.2e} of the largest), logits std {l_std:.3} \
         (max |Δ| {dl:.2e}), max |Δp| {dp:.2e}"
    );
    assert!(
        f_std > 0.1,
        "{name}: activations are not realistic (feature std {f_std})"
    );
    assert!(
        df <= 1e-4,
        "{name}: features differ by {df:e} of their scale"
    );
    assert!(dl <= 1e-4, "{name}: logits differ by {dl:e} of their scale");
    assert!(dp <= 1e-5, "{name}: probabilities differ by {dp:e}");
}

#[test]
fn kernels_match_burns_ops_on_real_audio_with_realistic_activations() {
    let device = Device::flex();
    device.seed(17);
    let x = windows(&device);
    assert_eq!(x.dims()[0], 12);

    let b0 = ModelConfig::efficientnet_b0(206)
        .with_input_norm(-40.0, 20.0)
        .init(&device)
        .unwrap();
    check("efficientnet_b0 (recalibrated)", &recalibrate(b0, &x), &x);

    // ResNet-50 on the first four windows (its forward is the slowest of the three).
    let x4 = x.clone().narrow(0, 0, 4);
    let r50 = ModelConfig::named("resnet50", 206, 128)
        .unwrap()
        .with_input_norm(-40.0, 20.0)
        .init(&device)
        .unwrap();
    check("resnet50 (recalibrated)", &recalibrate(r50, &x4), &x4);

    match std::env::var_os("SILENCIO_LITE0_PTH") {
        Some(path) => {
            let mut cfg = ModelConfig::efficientnet_lite0(1000);
            if let BackboneConfig::Efficientnet(c) = &mut cfg.backbone {
                c.in_channels = 3;
            }
            let (lite0, _) = silencio_models::pretrained::load_pytorch(
                &cfg,
                silencio_models::pretrained::CheckpointLayout::LukemelasEfficientNet,
                Path::new(&path),
                &device,
            )
            .unwrap();
            // ImageNet-scale input: the log-mels around 0 with unit spread, on three channels.
            let x3 = x.clone().add_scalar(40.0).div_scalar(20.0).repeat_dim(1, 3);
            check("efficientnet_lite0 (ImageNet weights)", &lite0, &x3);
        }
        None => assert!(
            std::env::var_os("SILENCIO_SKIP_LITE0").is_some(),
            "set SILENCIO_LITE0_PTH (scripts/test.sh does) or SILENCIO_SKIP_LITE0=1"
        ),
    }
}
