//! The local model registry's on-disk layout, in one place for every reader and writer:
//! ```text
//! <root>/aliases.json        {"production": "3", "staging": "4"}   alias → version
//! <root>/model.json          the registered model and its versions (silencio-mlops writes it)
//! <root>/versions/<v>/       a model bundle (bundle.json + weights)
//! ```
//! `silencio-mlops` registers and promotes (the trainer through it), `silencio-infer` resolves
//! the model to use when none is named, the dashboard lists versions. What a bundle or
//! `model.json` holds belongs to those crates; only the paths, the alias file and the version
//! names are here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Aliases tried, in order, for the model to use when none is named.
pub const DEFAULT_ALIASES: [&str; 2] = ["production", "staging"];

/// The alias file's name under the root.
pub const ALIASES_FILE: &str = "aliases.json";

/// The registered model's file under the root.
pub const MODEL_FILE: &str = "model.json";

/// The directory of version bundles under the root.
pub const VERSIONS_DIR: &str = "versions";

/// The registry root from `$SILENCIO_REGISTRY`, else `./registry`.
pub fn default_root() -> PathBuf {
    std::env::var_os("SILENCIO_REGISTRY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("registry"))
}

/// `<root>/aliases.json`.
pub fn aliases_path(root: &Path) -> PathBuf {
    root.join(ALIASES_FILE)
}

/// `<root>/model.json`.
pub fn model_path(root: &Path) -> PathBuf {
    root.join(MODEL_FILE)
}

/// `<root>/versions`.
pub fn versions_dir(root: &Path) -> PathBuf {
    root.join(VERSIONS_DIR)
}

/// `<root>/versions/<version>` (check the name with [`is_plain_version`] first when it comes
/// from a file).
pub fn version_dir(root: &Path, version: &str) -> PathBuf {
    versions_dir(root).join(version)
}

/// Whether `v` can only name a directory directly under `versions/`: not empty, no path
/// separator, no `..`, and not hidden (`.staging-<uuid>` directories are copies in progress).
pub fn is_plain_version(v: &str) -> bool {
    !v.is_empty() && !v.starts_with('.') && !v.contains(['/', '\\']) && !v.contains("..")
}

/// The alias → version map of `aliases.json`; empty when the file does not exist.
pub fn read_aliases(root: &Path) -> Result<BTreeMap<String, String>> {
    let path = aliases_path(root);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::Json {
            path,
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(source) => Err(Error::Io { path, source }),
    }
}

/// Replaces `aliases.json` atomically with `aliases` (pretty JSON and a newline). Writers
/// serialise themselves (silencio-mlops holds a lock file around read-modify-write).
pub fn write_aliases(root: &Path, aliases: &BTreeMap<String, String>) -> Result<()> {
    let path = aliases_path(root);
    let mut bytes = serde_json::to_vec_pretty(aliases).map_err(|e| Error::Json {
        path: path.clone(),
        message: e.to_string(),
    })?;
    bytes.push(b'\n');
    crate::fs::write_atomic(&path, &bytes).map_err(|source| Error::Io { path, source })
}

/// The first of [`DEFAULT_ALIASES`] that `aliases` defines, with its version.
pub fn current(aliases: &BTreeMap<String, String>) -> Option<(&'static str, &str)> {
    DEFAULT_ALIASES
        .iter()
        .find_map(|&a| aliases.get(a).map(|v| (a, v.as_str())))
}

/// The names of the version directories under `versions/` that are plain versions (unsorted;
/// empty when there is no `versions/`).
pub fn list_version_dirs(root: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(versions_dir(root)) else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_plain_version(n))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn aliases_round_trip_and_pick_production_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(read_aliases(root).unwrap().is_empty());
        let mut a = BTreeMap::new();
        a.insert("staging".to_string(), "4".to_string());
        write_aliases(root, &a).unwrap();
        assert_eq!(
            current(&read_aliases(root).unwrap()),
            Some(("staging", "4"))
        );
        a.insert("production".to_string(), "3".to_string());
        write_aliases(root, &a).unwrap();
        let text = std::fs::read_to_string(aliases_path(root)).unwrap();
        assert!(text.ends_with("}\n"), "{text}");
        assert_eq!(
            current(&read_aliases(root).unwrap()),
            Some(("production", "3"))
        );
        std::fs::write(aliases_path(root), "{not json").unwrap();
        assert!(matches!(read_aliases(root), Err(Error::Json { .. })));
    }

    #[test]
    fn only_plain_version_directories_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        assert!(list_version_dirs(root).is_empty());
        for d in ["1", "2", ".staging-abc"] {
            std::fs::create_dir_all(version_dir(root, d)).unwrap();
        }
        std::fs::write(versions_dir(root).join("3"), b"a file").unwrap();
        let mut v = list_version_dirs(root);
        v.sort();
        assert_eq!(v, ["1", "2"]);
        for bad in ["", "../x", "a/b", "a\\b", ".hidden", "a..b"] {
            assert!(!is_plain_version(bad), "{bad}");
        }
    }
}
