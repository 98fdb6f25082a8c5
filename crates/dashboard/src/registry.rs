//! The models panel: the local model registry (the layout of `silencio_common::registry`,
//! written by `silencio-mlops`, read by `silencio-infer` too):
//! ```text
//! <root>/aliases.json        {"production": "3", "staging": "4"}
//! <root>/model.json          {name, description, creation_timestamp, versions: [...]}
//! <root>/versions/<v>/       a model bundle (bundle.json + weights)
//! ```
//! Read-only, and tolerant: a version directory without an entry in `model.json` (or the
//! reverse) is still listed, with what is known.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use silencio_audio::FeatureConfig;
use silencio_common::registry as layout;

use crate::error::{Error, Result};

/// Aliases tried, in order, for the model in use (as `silencio-infer` resolves it).
pub use silencio_common::registry::DEFAULT_ALIASES;

#[derive(Debug, Default, Deserialize)]
struct ModelFile {
    #[serde(default)]
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    creation_timestamp: Option<i64>,
    #[serde(default)]
    versions: Vec<VersionEntry>,
}

#[derive(Debug, Clone, Deserialize)]
struct VersionEntry {
    version: u64,
    #[serde(default)]
    source: String,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    creation_timestamp: Option<i64>,
}

/// The models panel's JSON (`/api/models`).
#[derive(Debug, Clone, Serialize)]
pub struct ModelsResponse {
    /// Whether a registry was found.
    pub available: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// The registry root.
    pub root: String,
    /// Registered model name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Registration time (ms since the epoch).
    pub creation_timestamp: Option<i64>,
    /// Alias → version.
    pub aliases: BTreeMap<String, String>,
    /// The version a CLI or server without `--model` would use, and the alias that picks it.
    pub current: Option<(String, String)>,
    /// Versions, newest first.
    pub versions: Vec<VersionInfo>,
}

/// One registered version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionInfo {
    /// Version number.
    pub version: String,
    /// Aliases pointing at it.
    pub aliases: Vec<String>,
    /// Registration time (ms since the epoch).
    pub creation_timestamp: Option<i64>,
    /// The run that produced it.
    pub run_id: Option<String>,
    /// Where it was copied from.
    pub source: String,
    /// Free text.
    pub description: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// What its `bundle.json` says.
    pub bundle: Option<BundleSummary>,
    /// Why the bundle could not be read, if so.
    pub bundle_error: Option<String>,
}

/// The parts of a `bundle.json` a person wants to see.
#[derive(Debug, Clone, Serialize)]
pub struct BundleSummary {
    /// The bundle's model version string.
    pub model_version: String,
    /// Backbone kind and variant, then the head (`efficientnet lite0 + clip head`).
    pub architecture: String,
    /// Output classes.
    pub num_classes: Option<u64>,
    /// Species listed.
    pub species: usize,
    /// Feature recipe name.
    pub recipe: String,
    /// Whether it was trained (false: a freshly packaged starting point).
    pub trained: Option<bool>,
    /// Weight file size.
    pub weights_bytes: Option<u64>,
    /// Weight file SHA-256.
    pub weights_sha256: Option<String>,
    /// Where it came from.
    pub provenance: Option<String>,
    /// Creation time (s since the epoch).
    pub created_unix_s: Option<i64>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Json {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

fn summarise(bundle: &Value) -> BundleSummary {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let model = &bundle["model"];
    let backbone = &model["backbone"];
    let mut arch = [&backbone["kind"], &backbone["variant"]]
        .iter()
        .filter_map(|v| v.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(h) = model["head"]["kind"].as_str() {
        arch.push_str(&format!(" + {h} head"));
    }
    BundleSummary {
        model_version: s(&bundle["version"]).unwrap_or_default(),
        architecture: arch,
        num_classes: model["num_classes"].as_u64(),
        species: bundle["species"].as_array().map_or(0, Vec::len),
        recipe: s(&bundle["features"]["recipe"]).unwrap_or_default(),
        trained: bundle["provenance"]["trained"].as_bool(),
        weights_bytes: bundle["weights"]["bytes"].as_u64(),
        weights_sha256: s(&bundle["weights"]["sha256"]),
        provenance: s(&bundle["provenance"]["source"]),
        created_unix_s: bundle["provenance"]["created_unix_s"].as_i64(),
    }
}

/// The registry's aliases (empty when there is no `aliases.json`).
fn aliases(root: &Path) -> Result<BTreeMap<String, String>> {
    layout::read_aliases(root).map_err(|e| match e {
        silencio_common::Error::Io { path, source } => Error::io(path, source),
        silencio_common::Error::Json { path, message } => Error::Json { path, message },
    })
}

/// The version the default aliases pick, with the alias.
fn current(aliases: &BTreeMap<String, String>) -> Option<(String, String)> {
    layout::current(aliases).map(|(a, v)| (v.to_string(), a.to_string()))
}

/// The feature configuration of the registry's current model, and which version it is; `None`
/// when the registry has no usable current model.
pub fn current_features(root: &Path) -> Option<(FeatureConfig, String)> {
    let aliases = aliases(root).ok()?;
    let (version, alias) = current(&aliases)?;
    if !layout::is_plain_version(&version) {
        return None;
    }
    let bundle: Value = read_json(&layout::version_dir(root, &version).join("bundle.json"))
        .ok()
        .flatten()?;
    let cfg: FeatureConfig = serde_json::from_value(bundle["features"].clone()).ok()?;
    cfg.validate().ok()?;
    Some((cfg, format!("registry version {version} ({alias})")))
}

/// The panel's data for the registry at `root`.
pub fn list(root: &Path) -> ModelsResponse {
    let mut resp = ModelsResponse {
        available: false,
        reason: None,
        root: root.display().to_string(),
        name: String::new(),
        description: String::new(),
        creation_timestamp: None,
        aliases: BTreeMap::new(),
        current: None,
        versions: Vec::new(),
    };
    if !root.is_dir() {
        resp.reason = Some(format!(
            "no registry at {} (the trainer registers models that pass its gate)",
            root.display()
        ));
        return resp;
    }
    let model: ModelFile = match read_json(&layout::model_path(root)) {
        Ok(m) => m.unwrap_or_default(),
        Err(e) => {
            resp.reason = Some(format!("{}: {e}", e.kind()));
            return resp;
        }
    };
    resp.aliases = match aliases(root) {
        Ok(a) => a,
        Err(e) => {
            resp.reason = Some(format!("{}: {e}", e.kind()));
            return resp;
        }
    };
    resp.current = current(&resp.aliases);
    resp.name = model.name;
    resp.description = model.description;
    resp.creation_timestamp = model.creation_timestamp;

    let mut names: BTreeSet<String> = model
        .versions
        .iter()
        .map(|v| v.version.to_string())
        .collect();
    // Without `.staging-<uuid>` directories (copies in progress).
    names.extend(layout::list_version_dirs(root));
    for name in names {
        let entry = model
            .versions
            .iter()
            .find(|v| v.version.to_string() == name);
        let mut info = VersionInfo {
            aliases: resp
                .aliases
                .iter()
                .filter(|(_, v)| **v == name)
                .map(|(a, _)| a.clone())
                .collect(),
            creation_timestamp: entry.and_then(|e| e.creation_timestamp),
            run_id: entry.and_then(|e| e.run_id.clone()),
            source: entry.map(|e| e.source.clone()).unwrap_or_default(),
            description: entry.map(|e| e.description.clone()).unwrap_or_default(),
            tags: entry.map(|e| e.tags.clone()).unwrap_or_default(),
            bundle: None,
            bundle_error: None,
            version: name.clone(),
        };
        let path = layout::version_dir(root, &name).join("bundle.json");
        match read_json::<Value>(&path) {
            Ok(Some(b)) => info.bundle = Some(summarise(&b)),
            Ok(None) => info.bundle_error = Some(format!("{} is missing", path.display())),
            Err(e) => info.bundle_error = Some(format!("{}: {e}", e.kind())),
        }
        resp.versions.push(info);
    }
    // Newest first: numeric versions by number, others after them by name.
    resp.versions.sort_by(|a, b| {
        let key = |v: &VersionInfo| (v.version.parse::<u64>().ok(), v.version.clone());
        key(b).cmp(&key(a))
    });
    resp.available = true;
    resp
}
