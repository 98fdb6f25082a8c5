//! Finding the model to use when the user names none: the registry's `production` version,
//! else `staging`.
//!
//! Layout read here (the registry itself — registering, promoting, the quality gate — belongs
//! to the MLOps crate):
//! ```text
//! <registry>/aliases.json          {"production": "<version>", "staging": "<version>"}
//! <registry>/versions/<version>/   a model bundle
//! ```
//! The registry root is `$SILENCIO_REGISTRY`, else `./registry`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Aliases tried in order.
pub const DEFAULT_ALIASES: [&str; 2] = ["production", "staging"];

/// The registry root from `$SILENCIO_REGISTRY`, else `./registry`.
pub fn default_root() -> PathBuf {
    std::env::var_os("SILENCIO_REGISTRY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("registry"))
}

/// The bundle directory of the first alias of [`DEFAULT_ALIASES`] that the registry at
/// `root` defines, with the alias used.
pub fn resolve_default(root: &Path) -> Result<(PathBuf, &'static str)> {
    let aliases_path = root.join("aliases.json");
    let aliases: BTreeMap<String, String> = match std::fs::read(&aliases_path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Registry {
            root: root.display().to_string(),
            message: format!("aliases.json does not parse: {e}"),
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(Error::io(&aliases_path, e)),
    };
    for alias in DEFAULT_ALIASES {
        if let Some(v) = aliases.get(alias) {
            if v.is_empty() || v.contains('/') || v.contains("..") {
                return Err(Error::Registry {
                    root: root.display().to_string(),
                    message: format!("alias {alias} points at an invalid version {v:?}"),
                });
            }
            return Ok((root.join("versions").join(v), alias));
        }
    }
    Err(Error::NoModel {
        root: root.display().to_string(),
    })
}
