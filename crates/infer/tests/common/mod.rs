//! Helpers of the infer crate's integration tests: tiny random bundles and the demo audio.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::nn::BatchNorm;
use burn::tensor::{Device, Tensor};
use silencio_audio::FeatureConfig;
use silencio_infer::{BundleSpec, ModelBundle, Provenance, Species};
use silencio_models::efficientnet::{EfficientNetConfig, EfficientNetVariant};
use silencio_models::{Backbone, Model, ModelConfig};

pub fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/demo/birdclef")
}

pub fn species(n: usize) -> Vec<Species> {
    (0..n)
        .map(|i| Species {
            code: format!("sp{i}"),
            scientific_name: format!("Genus species{i}"),
            common_name: format!("Bird {i}"),
            class_name: "Aves".into(),
        })
        .collect()
}

/// A small EfficientNet-B0 (width 0.25) so that tests stay fast.
pub fn small_config(classes: usize) -> ModelConfig {
    let mut cfg = ModelConfig::efficientnet_b0(classes);
    cfg.backbone = silencio_models::BackboneConfig::Efficientnet(
        EfficientNetConfig::new(EfficientNetVariant::B0).with_width_mult(0.25),
    );
    cfg.with_input_norm(-40.0, 20.0)
}

pub fn spec(classes: usize) -> BundleSpec {
    BundleSpec {
        name: "test".into(),
        version: "1".into(),
        model: small_config(classes),
        features: FeatureConfig::recipe("birdclef").unwrap(),
        species: species(classes),
        provenance: Provenance {
            trained: false,
            source: "random weights (test)".into(),
            ..Provenance::default()
        },
        location: None,
        post_process: None,
    }
}

pub fn device() -> burn::tensor::Device {
    silencio_infer::default_device().unwrap()
}

pub fn write_bundle(dir: &Path, classes: usize) -> ModelBundle {
    let model = small_config(classes).init(&device()).unwrap();
    ModelBundle::write(dir, spec(classes), &model).unwrap()
}

/// The first demo soundscape (one minute).
pub fn soundscape_path() -> PathBuf {
    let dir = demo().join("train_soundscapes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.swap_remove(0)
}

/// The first demo soundscape's twelve windows as the model takes them.
pub fn soundscape_windows() -> Tensor<4> {
    let cfg = FeatureConfig::recipe("birdclef").unwrap();
    let (_, f) = silencio_audio::features_from_path(soundscape_path(), &cfg, 120.0).unwrap();
    silencio_infer::features_to_tensor(&f, &device())
}

pub fn soundscape() -> Vec<u8> {
    std::fs::read(soundscape_path()).unwrap()
}

/// A bundle of `classes` species named `name@1`, on `features`, recording `licences`.
pub fn write_bundle_with(
    dir: &Path,
    name: &str,
    classes: usize,
    features: FeatureConfig,
    licences: Vec<silencio_infer::Licence>,
) -> ModelBundle {
    let model = small_config(classes).init(&device()).unwrap();
    let mut s = spec(classes);
    s.name = name.into();
    s.features = features;
    s.provenance.licences = licences;
    ModelBundle::write(dir, s, &model).unwrap()
}

/// [`write_bundle_with`] that also records where its species live (the location filter).
pub fn write_bundle_located(
    dir: &Path,
    classes: usize,
    location: silencio_infer::OccurrenceModel,
) -> ModelBundle {
    let model = small_config(classes).init(&device()).unwrap();
    let mut s = spec(classes);
    s.location = Some(location);
    ModelBundle::write(dir, s, &model).unwrap()
}

/// Every batch norm of an EfficientNet or ResNet backbone, to set its momentum.
fn batch_norms(model: &mut Model) -> Vec<&mut BatchNorm> {
    match &mut model.backbone {
        Backbone::Efficientnet(e) => {
            let mut v = vec![&mut e.stem.bn, &mut e.head.bn];
            for block in e.stages.iter_mut().flatten() {
                if let Some(x) = &mut block.expand {
                    v.push(&mut x.bn);
                }
                v.push(&mut block.dw.bn);
                v.push(&mut block.project.bn);
            }
            v
        }
        Backbone::Resnet(r) => {
            let mut v = vec![&mut r.bn1];
            let blocks = r
                .layer1
                .iter_mut()
                .chain(&mut r.layer2)
                .chain(&mut r.layer3);
            for b in blocks.chain(&mut r.layer4) {
                v.extend([&mut b.bn1, &mut b.bn2, &mut b.bn3]);
                if let Some(d) = &mut b.downsample {
                    v.push(&mut d.bn);
                }
            }
            v
        }
        Backbone::Cnn14(_) => Vec::new(),
    }
}

/// One training-mode pass over `x` with every batch norm's momentum at 1: the running
/// statistics become those of real audio, layer after layer, so that every layer sees
/// unit-scale activations as in a trained network.
pub fn recalibrate(mut model: Model, x: &Tensor<4>) -> Model {
    for bn in batch_norms(&mut model) {
        bn.momentum = 1.0;
    }
    let ad = Device::flex().autodiff();
    let m = model.fork(&ad).train();
    let _ = m
        .forward(Tensor::<4>::from_data(x.to_data(), &ad))
        .logits
        .into_data();
    m.valid()
}
