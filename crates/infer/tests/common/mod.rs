//! Helpers of the infer crate's integration tests: tiny random bundles and the demo audio.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use silencio_audio::FeatureConfig;
use silencio_infer::{BundleSpec, ModelBundle, Provenance, Species};
use silencio_models::ModelConfig;
use silencio_models::efficientnet::{EfficientNetConfig, EfficientNetVariant};

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

pub fn soundscape() -> Vec<u8> {
    let dir = demo().join("train_soundscapes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    std::fs::read(&files[0]).unwrap()
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
