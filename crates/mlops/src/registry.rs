//! Model registry: one API over MLflow's registry (REST) or a local directory.
//!
//! **Local layout** — `silencio_common::registry`'s, which `silencio-infer` reads too, so
//! `silencio identify` finds the `production`/`staging` model with no server:
//! ```text
//! <root>/aliases.json        {"production": "3", "staging": "4"}   alias → version
//! <root>/versions/<v>/       a copy of the model bundle directory
//! <root>/model.json          {"name", "description", "creation_timestamp",
//!                             "versions": [{version, source, run_id, description, tags,
//!                                           creation_timestamp}]}
//! ```
//! A local root holds one registered model (infer's layout has one `aliases.json`); another
//! model gets its own root. Bundles are copied into `versions/.staging-<uuid>/` and renamed into
//! place, JSON files are written to a temp file and renamed, and a lock file serialises
//! writers, so a reader never sees a half-copied version or half-written JSON.
//!
//! **REST** — `/api/2.0/mlflow/registered-models/…` and `/model-versions/…` of an MLflow
//! server. MLflow checks a version's `source` against its `run_id` (the source must lie under
//! the run's artifact URI, or be `runs:/<run_id>/<path>`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use silencio_common::registry as layout;

use crate::fsutil::{self, now_ms};
use crate::http::{Http, str_field};
use crate::keys::{validate_alias, validate_model_name};
use crate::{Error, Result};

/// One version of a registered model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelVersion {
    /// The registered model's name.
    pub name: String,
    /// Version number (1, 2, …).
    pub version: u64,
    /// Where the model came from (a run artifact URI, or the local bundle path copied).
    pub source: String,
    /// The run that produced it.
    pub run_id: Option<String>,
    /// Free text.
    pub description: String,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Aliases pointing at this version.
    pub aliases: Vec<String>,
    /// Milliseconds since the Unix epoch.
    pub creation_timestamp: i64,
    /// Local registry only: the bundle directory (`<root>/versions/<v>`).
    pub local_path: Option<PathBuf>,
}

/// A new version's description.
#[derive(Debug, Clone, Default)]
pub struct NewVersion<'a> {
    /// Local: the bundle directory to copy (a path or `file:` URI). REST: the artifact URI.
    pub source: &'a str,
    /// The run that produced it.
    pub run_id: Option<&'a str>,
    /// Free text.
    pub description: &'a str,
    /// Tags.
    pub tags: &'a [(&'a str, &'a str)],
}

/// A model registry, opened from a URI.
#[derive(Debug)]
pub enum Registry {
    /// A local directory.
    Local(LocalRegistry),
    /// An MLflow server.
    Rest(RestRegistry),
}

impl Registry {
    /// The model a local registry holds (`None` when it holds none yet, or for MLflow, whose
    /// server holds many): what a new version joins by default.
    pub fn local_model_name(&self) -> Result<Option<String>> {
        match self {
            Registry::Local(l) => Ok(l.model_file()?.map(|m| m.name)),
            Registry::Rest(_) => Ok(None),
        }
    }

    /// `http(s)://…` opens an MLflow server; a path or `file:` URI opens a local directory;
    /// `""` is `$SILENCIO_REGISTRY`, else `./registry` (as `silencio-infer` resolves it).
    pub fn open(uri: &str) -> Result<Self> {
        let uri = uri.trim();
        if uri.starts_with("http://") || uri.starts_with("https://") {
            return Ok(Registry::Rest(RestRegistry::new(uri)?));
        }
        let path = if uri.is_empty() {
            layout::default_root()
        } else if uri.starts_with("file:") {
            fsutil::file_uri_to_path(uri).ok_or_else(|| Error::UnsupportedUri {
                uri: uri.to_string(),
                reason: "only local file: URIs (no host) are supported".into(),
            })?
        } else if uri.contains("://") {
            return Err(Error::UnsupportedUri {
                uri: uri.to_string(),
                reason: "use a directory, a file: URI or an http(s):// MLflow server".into(),
            });
        } else {
            PathBuf::from(uri)
        };
        Ok(Registry::Local(LocalRegistry::open(&path)?))
    }

    /// Creates the registered model `name`; `Ok(false)` when it already existed.
    pub fn create_registered_model(&self, name: &str) -> Result<bool> {
        match self {
            Registry::Local(r) => r.create_registered_model(name),
            Registry::Rest(r) => r.create_registered_model(name),
        }
    }

    /// Registers a new version of `name` (the model is created if absent) and returns its
    /// number. Locally the bundle directory `new.source` is copied into `versions/<v>/`.
    pub fn create_version(&self, name: &str, new: &NewVersion) -> Result<u64> {
        match self {
            Registry::Local(r) => r.create_version(name, new),
            Registry::Rest(r) => r.create_version(name, new),
        }
    }

    /// Points `alias` at `version` (moving it if it pointed elsewhere).
    pub fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()> {
        validate_alias(alias)?;
        match self {
            Registry::Local(r) => r.set_alias(name, alias, version),
            Registry::Rest(r) => r.set_alias(name, alias, version),
        }
    }

    /// The version `alias` points at.
    pub fn get_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        validate_alias(alias)?;
        match self {
            Registry::Local(r) => r.get_by_alias(name, alias),
            Registry::Rest(r) => r.get_by_alias(name, alias),
        }
    }

    /// Removes `alias`.
    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        validate_alias(alias)?;
        match self {
            Registry::Local(r) => r.delete_alias(name, alias),
            Registry::Rest(r) => r.delete_alias(name, alias),
        }
    }

    /// One version.
    pub fn get_version(&self, name: &str, version: u64) -> Result<ModelVersion> {
        match self {
            Registry::Local(r) => r.get_version(name, version),
            Registry::Rest(r) => r.get_version(name, version),
        }
    }

    /// Every version, oldest first.
    pub fn list_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        match self {
            Registry::Local(r) => r.list_versions(name),
            Registry::Rest(r) => r.list_versions(name),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Local

/// model.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ModelFile {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    creation_timestamp: i64,
    #[serde(default)]
    versions: Vec<VersionEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VersionEntry {
    version: u64,
    source: String,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    #[serde(default)]
    creation_timestamp: i64,
}

/// The shared layout's errors as this crate's.
fn layout_err(e: silencio_common::Error) -> Error {
    match e {
        silencio_common::Error::Io { path, source } => Error::Io { path, source },
        silencio_common::Error::Json { path, message } => Error::Malformed { path, message },
    }
}

/// A registry directory (see the module docs for its layout).
#[derive(Debug, Clone)]
pub struct LocalRegistry {
    root: PathBuf,
}

/// Held while writing; removed on drop.
struct Lock {
    path: PathBuf,
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A lock older than this was left by a crashed writer (no write here takes that long except
/// the bundle copy, which happens before the lock is taken).
const STALE_LOCK: Duration = Duration::from_secs(120);

impl LocalRegistry {
    /// Opens (creating) the registry directory `root`.
    pub fn open(root: &Path) -> Result<Self> {
        fsutil::create_dir_all(&layout::versions_dir(root))?;
        Ok(LocalRegistry {
            root: root.to_path_buf(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> Result<Lock> {
        let path = self.root.join(".lock");
        let start = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(Lock { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > STALE_LOCK);
                    if stale {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if start.elapsed() > STALE_LOCK {
                        return Err(Error::io(
                            &path,
                            std::io::Error::new(
                                std::io::ErrorKind::TimedOut,
                                "registry lock held by another writer",
                            ),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(Error::io(&path, e)),
            }
        }
    }

    fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::Malformed {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path, e)),
        }
    }

    fn write_json<T: Serialize>(&self, file: &str, value: &T) -> Result<()> {
        let mut bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Malformed {
            path: self.root.join(file),
            message: e.to_string(),
        })?;
        bytes.push(b'\n');
        fsutil::write_atomic(&self.root.join(file), &self.root, &bytes)
    }

    fn model_file(&self) -> Result<Option<ModelFile>> {
        Self::read_json(&layout::model_path(&self.root))
    }

    /// model.json for `name`, checking the root holds that model.
    fn model(&self, name: &str) -> Result<ModelFile> {
        validate_model_name(name)?;
        match self.model_file()? {
            Some(m) if m.name == name => Ok(m),
            Some(m) => Err(Error::OtherModel {
                root: self.root.clone(),
                holds: m.name,
                asked: name.to_string(),
            }),
            None => Err(Error::NotFound {
                what: "registered model",
                name: name.to_string(),
            }),
        }
    }

    fn aliases(&self) -> Result<BTreeMap<String, String>> {
        layout::read_aliases(&self.root).map_err(layout_err)
    }

    fn create_registered_model(&self, name: &str) -> Result<bool> {
        validate_model_name(name)?;
        let _lock = self.lock()?;
        match self.model_file()? {
            Some(m) if m.name == name => Ok(false),
            Some(m) => Err(Error::OtherModel {
                root: self.root.clone(),
                holds: m.name,
                asked: name.to_string(),
            }),
            None => {
                self.write_json(
                    layout::MODEL_FILE,
                    &ModelFile {
                        name: name.to_string(),
                        description: String::new(),
                        creation_timestamp: now_ms(),
                        versions: Vec::new(),
                    },
                )?;
                Ok(true)
            }
        }
    }

    fn create_version(&self, name: &str, new: &NewVersion) -> Result<u64> {
        self.create_registered_model(name)?;
        let src = if new.source.starts_with("file:") {
            fsutil::file_uri_to_path(new.source).ok_or_else(|| Error::UnsupportedUri {
                uri: new.source.to_string(),
                reason: "only local file: URIs (no host) are supported".into(),
            })?
        } else {
            PathBuf::from(new.source)
        };
        if !src.is_dir() {
            return Err(Error::invalid(
                "model source",
                new.source,
                "a local registry version is a copy of a bundle directory; this is not a directory",
            ));
        }
        let versions = layout::versions_dir(&self.root);
        // Copy outside the lock: bundles can be large.
        let staging = versions.join(format!(".staging-{}", uuid::Uuid::new_v4().simple()));
        if let Err(e) = fsutil::copy_tree(&src, &staging) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        let _lock = self.lock()?;
        let mut model = self.model(name)?;
        let mut v = model.versions.iter().map(|e| e.version).max().unwrap_or(0) + 1;
        // Never reuse a number whose directory exists (left by a crash before model.json).
        while versions.join(v.to_string()).exists() {
            v += 1;
        }
        if let Err(e) = std::fs::rename(&staging, versions.join(v.to_string())) {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(Error::io(versions.join(v.to_string()), e));
        }
        model.versions.push(VersionEntry {
            version: v,
            source: std::fs::canonicalize(&src)
                .unwrap_or(src)
                .display()
                .to_string(),
            run_id: new.run_id.map(str::to_string),
            description: new.description.to_string(),
            tags: new
                .tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            creation_timestamp: now_ms(),
        });
        self.write_json(layout::MODEL_FILE, &model)?;
        Ok(v)
    }

    fn to_version(
        &self,
        e: &VersionEntry,
        name: &str,
        aliases: &BTreeMap<String, String>,
    ) -> ModelVersion {
        let v = e.version.to_string();
        ModelVersion {
            name: name.to_string(),
            version: e.version,
            source: e.source.clone(),
            run_id: e.run_id.clone(),
            description: e.description.clone(),
            tags: e.tags.clone(),
            aliases: aliases
                .iter()
                .filter(|(_, ver)| **ver == v)
                .map(|(a, _)| a.clone())
                .collect(),
            creation_timestamp: e.creation_timestamp,
            local_path: Some(layout::version_dir(&self.root, &v)),
        }
    }

    fn get_version(&self, name: &str, version: u64) -> Result<ModelVersion> {
        let model = self.model(name)?;
        let aliases = self.aliases()?;
        model
            .versions
            .iter()
            .find(|e| e.version == version)
            .map(|e| self.to_version(e, name, &aliases))
            .ok_or_else(|| Error::NotFound {
                what: "model version",
                name: format!("{name} version {version}"),
            })
    }

    fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()> {
        let _lock = self.lock()?;
        let model = self.model(name)?;
        if !model.versions.iter().any(|e| e.version == version) {
            return Err(Error::NotFound {
                what: "model version",
                name: format!("{name} version {version}"),
            });
        }
        let mut aliases = self.aliases()?;
        aliases.insert(alias.to_string(), version.to_string());
        layout::write_aliases(&self.root, &aliases).map_err(layout_err)
    }

    fn get_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        let model = self.model(name)?;
        let aliases = self.aliases()?;
        let not_found = || Error::NotFound {
            what: "alias",
            name: format!("{name}@{alias}"),
        };
        let v: u64 = aliases
            .get(alias)
            .ok_or_else(not_found)?
            .parse()
            .map_err(|_| Error::Malformed {
                path: layout::aliases_path(&self.root),
                message: format!("alias {alias} does not hold a version number"),
            })?;
        model
            .versions
            .iter()
            .find(|e| e.version == v)
            .map(|e| self.to_version(e, name, &aliases))
            .ok_or_else(not_found)
    }

    fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        let _lock = self.lock()?;
        self.model(name)?;
        let mut aliases = self.aliases()?;
        if aliases.remove(alias).is_none() {
            return Err(Error::NotFound {
                what: "alias",
                name: format!("{name}@{alias}"),
            });
        }
        layout::write_aliases(&self.root, &aliases).map_err(layout_err)
    }

    fn list_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        let model = self.model(name)?;
        let aliases = self.aliases()?;
        let mut out: Vec<ModelVersion> = model
            .versions
            .iter()
            .map(|e| self.to_version(e, name, &aliases))
            .collect();
        out.sort_by_key(|v| v.version);
        Ok(out)
    }
}

// ---------------------------------------------------------------------------------------------
// REST

/// MLflow's model registry on a tracking server.
#[derive(Debug, Clone)]
pub struct RestRegistry {
    http: Http,
}

const API: &str = "/api/2.0/mlflow";

impl RestRegistry {
    /// A client of the server at `base`.
    pub fn new(base: &str) -> Result<Self> {
        let store = crate::tracking::RestStore::new(base)?;
        Ok(RestRegistry {
            http: store.http().clone(),
        })
    }

    fn create_registered_model(&self, name: &str) -> Result<bool> {
        match self.http.post_json(
            &format!("{API}/registered-models/create"),
            &json!({ "name": name }),
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.mlflow_error_code() == Some("RESOURCE_ALREADY_EXISTS") => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn create_version(&self, name: &str, new: &NewVersion) -> Result<u64> {
        self.create_registered_model(name)?;
        let ep = "model-versions/create";
        let mut body = json!({
            "name": name,
            "source": new.source,
            "description": new.description,
            "tags": new.tags.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
        });
        if let (Some(run_id), Some(obj)) = (new.run_id, body.as_object_mut()) {
            obj.insert("run_id".into(), json!(run_id));
        }
        let v = self.http.post_json(&format!("{API}/{ep}"), &body)?;
        let mv = v.get("model_version").ok_or_else(|| Error::Protocol {
            endpoint: ep.into(),
            message: "no model_version in the answer".into(),
        })?;
        parse_version(ep, mv).map(|m| m.version)
    }

    fn set_alias(&self, name: &str, alias: &str, version: u64) -> Result<()> {
        self.http.post_json(
            &format!("{API}/registered-models/alias"),
            &json!({ "name": name, "alias": alias, "version": version.to_string() }),
        )?;
        Ok(())
    }

    fn get_by_alias(&self, name: &str, alias: &str) -> Result<ModelVersion> {
        let ep = "registered-models/alias";
        let v = self
            .http
            .get_json(&format!("{API}/{ep}"), &[("name", name), ("alias", alias)])?;
        let mv = v.get("model_version").ok_or_else(|| Error::Protocol {
            endpoint: ep.into(),
            message: "no model_version in the answer".into(),
        })?;
        parse_version(ep, mv)
    }

    fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        self.http.delete_json(
            &format!("{API}/registered-models/alias"),
            &json!({ "name": name, "alias": alias }),
        )?;
        Ok(())
    }

    fn get_version(&self, name: &str, version: u64) -> Result<ModelVersion> {
        let ep = "model-versions/get";
        let vs = version.to_string();
        let v = self
            .http
            .get_json(&format!("{API}/{ep}"), &[("name", name), ("version", &vs)])?;
        let mv = v.get("model_version").ok_or_else(|| Error::Protocol {
            endpoint: ep.into(),
            message: "no model_version in the answer".into(),
        })?;
        let mut m = parse_version(ep, mv)?;
        // model-versions/get leaves aliases out; registered-models/get has them.
        let aliases = self.aliases(name)?;
        m.aliases = aliases
            .into_iter()
            .filter(|(_, v)| *v == m.version)
            .map(|(a, _)| a)
            .collect();
        Ok(m)
    }

    fn aliases(&self, name: &str) -> Result<Vec<(String, u64)>> {
        let ep = "registered-models/get";
        let v = self
            .http
            .get_json(&format!("{API}/{ep}"), &[("name", name)])?;
        let mut out = Vec::new();
        let list = v
            .get("registered_model")
            .and_then(|m| m.get("aliases"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for a in list {
            let alias = str_field(ep, &a, "alias")?;
            let version = parse_u64(ep, &str_field(ep, &a, "version")?)?;
            out.push((alias, version));
        }
        Ok(out)
    }

    fn list_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        let ep = "model-versions/search";
        let filter = format!("name='{}'", name.replace('\'', "\\'"));
        let aliases = self.aliases(name)?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut q: Vec<(&str, &str)> = vec![("filter", &filter), ("max_results", "1000")];
            if let Some(t) = &token {
                q.push(("page_token", t));
            }
            let v = self.http.get_json(&format!("{API}/{ep}"), &q)?;
            for mv in v
                .get("model_versions")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[])
            {
                let mut m = parse_version(ep, mv)?;
                m.aliases = aliases
                    .iter()
                    .filter(|(_, v)| *v == m.version)
                    .map(|(a, _)| a.clone())
                    .collect();
                out.push(m);
            }
            token = v
                .get("next_page_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        out.sort_by_key(|m| m.version);
        Ok(out)
    }
}

fn parse_u64(ep: &str, s: &str) -> Result<u64> {
    s.parse().map_err(|_| Error::Protocol {
        endpoint: ep.into(),
        message: format!("version {s:?} is not a number"),
    })
}

fn parse_version(ep: &str, mv: &Value) -> Result<ModelVersion> {
    let tags = mv
        .get("tags")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    Some((
                        t.get("key")?.as_str()?.to_string(),
                        t.get("value")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(ModelVersion {
        name: str_field(ep, mv, "name")?,
        version: parse_u64(ep, &str_field(ep, mv, "version")?)?,
        source: mv
            .get("source")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        run_id: mv
            .get("run_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        description: mv
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        tags,
        aliases: mv
            .get("aliases")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
        creation_timestamp: mv
            .get("creation_timestamp")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        local_path: None,
    })
}
