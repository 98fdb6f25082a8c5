//! Registering a model that passed the gate, and finding a registered model to start from,
//! through `silencio-mlops`' registry (a local directory by default, or MLflow's registry).

use std::path::{Path, PathBuf};

use silencio_mlops::Registry;
use silencio_mlops::registry::NewVersion;

use crate::{Error, Result};

fn err(e: silencio_mlops::Error) -> Error {
    Error::Tracking {
        message: format!("registry: {e}"),
    }
}

/// Registers `bundle_dir` as a new version of `name` and points `alias` at it. A local registry
/// copies the bundle; an MLflow registry records the run's `bundle` artefacts
/// (`runs:/<run>/bundle`). Returns the version.
pub fn register(
    uri: &str,
    name: &str,
    bundle_dir: &Path,
    run_id: &str,
    alias: &str,
) -> Result<String> {
    let reg = Registry::open(uri).map_err(err)?;
    reg.create_registered_model(name).map_err(err)?;
    let source = match &reg {
        Registry::Local(_) => bundle_dir.display().to_string(),
        _ => format!("runs:/{run_id}/bundle"),
    };
    let v = reg
        .create_version(
            name,
            &NewVersion {
                source: &source,
                run_id: (!run_id.is_empty()).then_some(run_id),
                description: "registered by the trainer after passing its quality gate",
                tags: &[],
            },
        )
        .map_err(err)?;
    reg.set_alias(name, alias, v).map_err(err)?;
    Ok(v.to_string())
}

/// The bundle directory of `name` at `alias_or_version` (an alias such as `production`, or a
/// version number) in a local registry.
pub fn resolve(uri: &str, name: &str, alias_or_version: &str) -> Result<PathBuf> {
    let reg = Registry::open(uri).map_err(err)?;
    let mv = match alias_or_version.parse::<u64>() {
        Ok(v) => reg.get_version(name, v),
        Err(_) => reg.get_by_alias(name, alias_or_version),
    }
    .map_err(err)?;
    mv.local_path.ok_or_else(|| Error::Config {
        path: "model.from_registry".into(),
        message: format!(
            "{name}@{alias_or_version} lives at {} on an MLflow server; continue from a local \
             registry (the default) or a bundle directory",
            mv.source
        ),
    })
}
