//! Finding the model to use when the user names none: the registry's `production` version,
//! else `staging`.
//!
//! Layout read here (`silencio_common::registry`; the registry itself — registering,
//! promoting, the quality gate — belongs to the MLOps crate):
//! ```text
//! <registry>/aliases.json          {"production": "<version>", "staging": "<version>"}
//! <registry>/versions/<version>/   a model bundle
//! ```
//! The registry root is `$SILENCIO_REGISTRY`, else `./registry`.

use std::path::{Path, PathBuf};

use silencio_common::registry as layout;
pub use silencio_common::registry::{DEFAULT_ALIASES, default_root};

use crate::{Error, Result};

/// The alias → version map of the registry at `root` (empty without `aliases.json`).
pub fn read_aliases(root: &Path) -> Result<std::collections::BTreeMap<String, String>> {
    layout::read_aliases(root).map_err(|e| match e {
        silencio_common::Error::Io { path, source } => Error::io(&path, source),
        silencio_common::Error::Json { message, .. } => Error::Registry {
            root: root.display().to_string(),
            message: format!("aliases.json does not parse: {message}"),
        },
    })
}

/// The bundle directory of the first alias of [`DEFAULT_ALIASES`] that the registry at
/// `root` defines, with the alias used.
pub fn resolve_default(root: &Path) -> Result<(PathBuf, &'static str)> {
    let aliases = read_aliases(root)?;
    let Some((alias, v)) = layout::current(&aliases) else {
        return Err(Error::NoModel {
            root: root.display().to_string(),
        });
    };
    if !layout::is_plain_version(v) {
        return Err(Error::Registry {
            root: root.display().to_string(),
            message: format!("alias {alias} points at an invalid version {v:?}"),
        });
    }
    Ok((layout::version_dir(root, v), alias))
}
