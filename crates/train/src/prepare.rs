//! Everything before the Learner: shards (the ETL when they are missing), the model to start
//! from, the input normalisation and the noise bank.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;
use silencio_audio::{FeatureConfig, LogMel};
use silencio_data::{EtlOptions, Store};
use silencio_infer::Licence;
use silencio_models::{CheckpointLayout, Model, ModelConfig};

use crate::dataset::WindowStore;
use crate::experiment::Experiment;
use crate::{Error, Result};

/// Runs the ETL of `exp.data` into its shard directory unless a complete run with the same
/// options is there (the ETL itself checks: a finished output is left untouched), then opens
/// the shards.
pub fn shards(exp: &Experiment, log: &mut dyn FnMut(&str)) -> Result<WindowStore> {
    let d = &exp.data;
    let features = FeatureConfig::recipe(&d.recipe)?;
    let mut opts = EtlOptions::new(features);
    opts.max_windows_per_clip = d.max_windows_per_clip;
    opts.valid_fraction = d.valid_fraction;
    opts.cv = d.cv();
    opts.seed = exp.split_seed();
    let data = Store::open(&d.root.display().to_string())?;
    let out = Store::create(&d.shards.display().to_string())?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let outcome = silencio_data::etl::run(&data, &out, &opts, threads, &mut |_| {})?;
    log(&format!(
        "data: {} windows ({} train, {} valid) in {} ({})",
        outcome.manifest.totals.windows,
        outcome.manifest.totals.train_windows,
        outcome.manifest.totals.valid_windows,
        d.shards.display(),
        if outcome.already_complete {
            "shards already complete"
        } else {
            "ETL ran"
        }
    ));
    WindowStore::open(&d.shards)
}

/// The architecture an experiment names, for `classes` classes and `mels` mel bins.
pub fn model_config(exp: &Experiment, classes: usize, mels: usize) -> Result<ModelConfig> {
    let m = &exp.model;
    let mut cfg = m.arch.config(classes, mels);
    if let silencio_models::HeadConfig::Clip(h) = &mut cfg.head {
        h.dropout = m.dropout;
    }
    if m.sed {
        cfg = cfg.with_sed_head(m.dropout);
    }
    Ok(cfg)
}

/// The pretrained checkpoint an experiment asks for: `$pretrained_env` when set, else
/// `pretrained`.
pub fn checkpoint_path(exp: &Experiment) -> Option<std::path::PathBuf> {
    let m = &exp.model;
    m.pretrained_env
        .as_ref()
        .and_then(std::env::var_os)
        .map(std::path::PathBuf::from)
        .or_else(|| m.pretrained.clone())
}

/// The starting model: fresh, from a PyTorch checkpoint, or (for `from_registry`) the given
/// bundle's weights. Returns the model, its config and where it came from.
pub fn initial_model(
    exp: &Experiment,
    cfg: ModelConfig,
    base_bundle: Option<&Path>,
    device: &Device,
) -> Result<(Model, ModelConfig, String, Vec<Licence>)> {
    if let Some(dir) = base_bundle {
        let bundle = silencio_infer::ModelBundle::open(dir)?;
        let model = bundle.load_model(device)?;
        let meta = bundle.meta();
        // Fine-tuning keeps whatever the base model's weights owe.
        return Ok((
            model,
            meta.model.clone(),
            format!("registered model {}", meta.model_version()),
            meta.provenance.licences.clone(),
        ));
    }
    match checkpoint_path(exp) {
        Some(p) => {
            let layout = exp.model.layout.as_deref().ok_or_else(|| Error::Config {
                path: "model.layout".into(),
                message: "a pretrained checkpoint needs its layout".into(),
            })?;
            let layout = CheckpointLayout::parse(layout)?;
            let (m, c, report) = silencio_models::from_checkpoint(&cfg, layout, &p, device)?;
            let name = p
                .file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into());
            Ok((
                m,
                c,
                format!(
                    "pretrained {} ({} tensors loaded)",
                    p.display(),
                    report.applied
                ),
                vec![Licence::new(
                    layout.weights_licence(),
                    format!("pretrained weights: {name}"),
                )],
            ))
        }
        None if exp.model.pretrained_env.is_some() && exp.model.pretrained.is_none() => {
            Err(Error::Config {
                path: "model.pretrained_env".into(),
                message: format!(
                    "${} is not set: point it at the checkpoint (scripts/test.sh installs the \
                     Lite0 ImageNet weights and sets SILENCIO_LITE0_PTH)",
                    exp.model.pretrained_env.as_deref().unwrap_or_default()
                ),
            })
        }
        None => Ok((
            cfg.init(device)?,
            cfg,
            "random initialisation".into(),
            Vec::new(),
        )),
    }
}

/// Log-mel windows of every background recording in `dir` (for noise mixing).
pub fn noise_bank(dir: Option<&Path>, features: &FeatureConfig) -> Result<Arc<Vec<Vec<f32>>>> {
    let Some(dir) = dir else {
        return Ok(Arc::new(Vec::new()));
    };
    let lm = LogMel::new(features)?;
    let mut bank = Vec::new();
    for bg in silencio_data::mix::load_backgrounds(dir)? {
        let f = lm.features(&bg.samples)?;
        let n = f.n_mels * f.n_frames;
        bank.extend(f.data.chunks_exact(n).map(|c| c.to_vec()));
    }
    Ok(Arc::new(bank))
}

/// The licences of a dataset's recordings, from `train.csv`'s `license` column: one entry per
/// licence with the number of recordings under it (`cc-by-nc-sa 4.0` reads as the SPDX
/// `CC-BY-NC-SA-4.0`; an empty cell as `NOASSERTION`). A model trained on them owes all.
pub fn training_data_licences(root: &Path) -> Result<Vec<Licence>> {
    let (rows, _) = silencio_data::read_train_csv(&root.join("train.csv"))?;
    let mut counts = std::collections::BTreeMap::<String, usize>::new();
    for r in &rows {
        *counts.entry(spdx(&r.license)).or_default() += 1;
    }
    Ok(counts
        .into_iter()
        .map(|(id, n)| Licence::new(id, format!("training data: {n} recordings of train.csv")))
        .collect())
}

/// A licence as train.csv files write it, in SPDX form.
fn spdx(s: &str) -> String {
    let s = s.trim();
    if s.is_empty() {
        return "NOASSERTION".into();
    }
    let joined = s.split_whitespace().collect::<Vec<_>>().join("-");
    // Creative Commons ids are upper case in SPDX; others (`BSD-3-Clause`, `MIT`) keep theirs.
    if joined.to_ascii_lowercase().starts_with("cc") {
        joined.to_ascii_uppercase()
    } else {
        joined
    }
}

#[cfg(test)]
mod licence_tests {
    use super::*;

    #[test]
    fn train_csv_licences_read_as_spdx() {
        assert_eq!(spdx("cc-by-nc-sa 4.0"), "CC-BY-NC-SA-4.0");
        assert_eq!(spdx(" CC-BY-4.0 "), "CC-BY-4.0");
        assert_eq!(spdx(""), "NOASSERTION");
        assert!(Licence::new(spdx("cc-by-nc 4.0"), "x").non_commercial());
    }

    #[test]
    fn the_demo_set_owes_its_sources_licences() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/demo/birdclef");
        let l = training_data_licences(&root).unwrap();
        let ids: Vec<&str> = l.iter().map(|l| l.id.as_str()).collect();
        assert_eq!(ids, ["BSD-3-Clause", "CC-BY-4.0", "CC0-1.0", "MIT"]);
        assert!(l[3].covers.starts_with("training data: 21 recordings"));
    }
}
