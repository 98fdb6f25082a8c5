//! MLflow's local file store, in the layout `mlflow/store/tracking/file_store.py` (MLflow
//! 3.17.2) reads:
//!
//! ```text
//! mlruns/<experiment_id>/meta.yaml                   artifact_location, creation_time, experiment_id,
//!                                                    last_update_time, lifecycle_stage, name
//! mlruns/<experiment_id>/<run_id>/meta.yaml          run info; status as an integer
//! mlruns/<experiment_id>/<run_id>/params/<key>       the value, no newline
//! mlruns/<experiment_id>/<run_id>/metrics/<key>      lines "<timestamp_ms> <value> <step>"
//! mlruns/<experiment_id>/<run_id>/tags/<key>         the value, no newline
//! mlruns/<experiment_id>/<run_id>/artifacts/…
//! mlruns/.trash/                                     deleted experiments
//! ```
//! Keys with `/` are nested files (`metrics/loss/train`), as MLflow writes them.
//!
//! Params, tags and meta.yaml are written atomically (a temp file in the run or experiment
//! directory, which MLflow never lists, then a rename); metric lines are appended with one
//! write per key and call.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::fsutil::{self, now_ms};
use crate::tracking::{Metric, RunStatus, TAG_RUN_NAME};
use crate::yaml::{self, Value};
use crate::{Error, Result};

const META: &str = "meta.yaml";
const TRASH: &str = ".trash";
/// Directories at the root that are not experiments (MLflow's registry file store, trash).
const NOT_EXPERIMENTS: [&str; 2] = [TRASH, "models"];
/// `SourceType.LOCAL`.
const SOURCE_TYPE_LOCAL: i64 = 4;

/// A file store root (`mlruns/`).
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    /// Opens (creating if needed) the store at `root`, with experiment 0 "Default" as MLflow
    /// creates it.
    pub fn open(root: &Path) -> Result<Self> {
        let root = if root.is_absolute() {
            root.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io(root, e))?
                .join(root)
        };
        fsutil::create_dir_all(&root)?;
        let store = FileStore { root };
        if !store.root.join("0").join(META).exists() {
            store.write_experiment("0", "Default")?;
        }
        fsutil::create_dir_all(&store.root.join(TRASH))?;
        Ok(store)
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `file:///abs/root`.
    pub fn uri(&self) -> String {
        fsutil::path_to_file_uri(&self.root)
    }

    fn write_experiment(&self, id: &str, name: &str) -> Result<()> {
        let dir = self.root.join(id);
        fsutil::create_dir_all(&dir)?;
        let now = now_ms();
        let mut m = BTreeMap::new();
        m.insert(
            "artifact_location",
            Value::Str(fsutil::path_to_file_uri(&dir)),
        );
        m.insert("creation_time", Value::Int(now));
        m.insert("experiment_id", Value::Str(id.to_string()));
        m.insert("last_update_time", Value::Int(now));
        m.insert("lifecycle_stage", Value::Str("active".into()));
        m.insert("name", Value::Str(name.to_string()));
        fsutil::write_atomic(&dir.join(META), &dir, yaml::write(&m).as_bytes())
    }

    fn read_meta(path: &Path) -> Result<BTreeMap<String, Value>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        yaml::read(&text).map_err(|message| Error::Malformed {
            path: path.to_path_buf(),
            message,
        })
    }

    /// (id, meta) of every experiment directory under `dir` with a readable meta.yaml.
    fn experiments_in(dir: &Path) -> Result<Vec<(String, BTreeMap<String, Value>)>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::io(dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if NOT_EXPERIMENTS.contains(&name.as_str()) || name.starts_with('.') {
                continue;
            }
            let meta_path = entry.path().join(META);
            if !meta_path.is_file() {
                continue;
            }
            // MLflow skips malformed experiments with a warning; so do we.
            if let Ok(meta) = Self::read_meta(&meta_path) {
                out.push((name, meta));
            }
        }
        Ok(out)
    }

    fn name_of(meta: &BTreeMap<String, Value>) -> Option<String> {
        match meta.get("name") {
            Some(Value::Str(s)) => Some(s.clone()),
            Some(Value::Int(i)) => Some(i.to_string()),
            _ => None,
        }
    }

    /// The id of the active experiment called `name`.
    pub fn experiment_by_name(&self, name: &str) -> Result<Option<String>> {
        for (id, meta) in Self::experiments_in(&self.root)? {
            let active =
                !matches!(meta.get("lifecycle_stage"), Some(Value::Str(s)) if s == "deleted");
            if active && Self::name_of(&meta).as_deref() == Some(name) {
                return Ok(Some(id));
            }
        }
        for (_, meta) in Self::experiments_in(&self.root.join(TRASH))? {
            if Self::name_of(&meta).as_deref() == Some(name) {
                return Err(Error::ExperimentDeleted {
                    name: name.to_string(),
                });
            }
        }
        Ok(None)
    }

    /// The id of experiment `name`, created if absent (with an 18-digit random id, as MLflow's
    /// `_generate_unique_integer_id`).
    pub fn get_or_create_experiment(&self, name: &str) -> Result<String> {
        if let Some(id) = self.experiment_by_name(name)? {
            return Ok(id);
        }
        let id = loop {
            let n =
                uuid::Uuid::new_v4().as_u128() % 900_000_000_000_000_000 + 100_000_000_000_000_000;
            let id = n.to_string();
            if !self.root.join(&id).exists() && !self.root.join(TRASH).join(&id).exists() {
                break id;
            }
        };
        self.write_experiment(&id, name)?;
        Ok(id)
    }

    fn artifact_location(&self, experiment_id: &str) -> Result<String> {
        let meta = Self::read_meta(&self.root.join(experiment_id).join(META))?;
        match meta.get("artifact_location") {
            Some(Value::Str(s)) if !s.is_empty() => Ok(s.clone()),
            _ => Ok(fsutil::path_to_file_uri(&self.root.join(experiment_id))),
        }
    }

    pub(crate) fn create_run(
        &self,
        experiment_id: &str,
        run_name: &str,
        user: &str,
        start_time: i64,
        tags: &[(String, String)],
    ) -> Result<FileRun> {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let run_dir = self.root.join(experiment_id).join(&run_id);
        let location = self.artifact_location(experiment_id)?;
        let artifact_uri = format!("{}/{run_id}/artifacts", location.trim_end_matches('/'));
        for sub in ["metrics", "params", "artifacts", "tags"] {
            fsutil::create_dir_all(&run_dir.join(sub))?;
        }
        let run = FileRun {
            run_dir,
            run_id,
            experiment_id: experiment_id.to_string(),
            artifact_uri,
            user: user.to_string(),
            start_time,
            run_name: std::sync::Mutex::new(run_name.to_string()),
        };
        run.write_meta(RunStatus::Running, None)?;
        let tags: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run.set_tags(&tags)?;
        Ok(run)
    }
}

impl FileStore {
    /// Reopens run `run_id` (in any experiment) and marks it RUNNING again, for a process that
    /// continues a run after a crash.
    pub(crate) fn resume_run(&self, run_id: &str) -> Result<FileRun> {
        crate::keys::validate_key("run id", run_id)?;
        let entries = std::fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, e))?;
        for e in entries.flatten() {
            let run_dir = e.path().join(run_id);
            let meta_path = run_dir.join(META);
            let Ok(text) = std::fs::read_to_string(&meta_path) else {
                continue;
            };
            let m = yaml::read(&text).map_err(|message| Error::Malformed {
                path: meta_path.clone(),
                message,
            })?;
            let text_of = |k: &str| match m.get(k) {
                Some(Value::Str(s)) => s.clone(),
                Some(Value::Int(i)) => i.to_string(),
                _ => String::new(),
            };
            let run = FileRun {
                run_dir,
                run_id: run_id.to_string(),
                experiment_id: text_of("experiment_id"),
                artifact_uri: text_of("artifact_uri"),
                user: text_of("user_id"),
                start_time: match m.get("start_time") {
                    Some(Value::Int(i)) => *i,
                    _ => 0,
                },
                run_name: std::sync::Mutex::new(text_of("run_name")),
            };
            run.write_meta(RunStatus::Running, None)?;
            return Ok(run);
        }
        Err(Error::NotFound {
            what: "run",
            name: run_id.to_string(),
        })
    }
}

/// A run of the file store.
#[derive(Debug)]
pub(crate) struct FileRun {
    run_dir: PathBuf,
    pub(crate) run_id: String,
    pub(crate) experiment_id: String,
    pub(crate) artifact_uri: String,
    user: String,
    start_time: i64,
    // Setting mlflow.runName renames the run in meta.yaml too, as MLflow does.
    run_name: std::sync::Mutex<String>,
}

impl FileRun {
    fn run_name(&self) -> String {
        match self.run_name.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn write_meta(&self, status: RunStatus, end_time: Option<i64>) -> Result<()> {
        let mut m = BTreeMap::new();
        m.insert("artifact_uri", Value::Str(self.artifact_uri.clone()));
        m.insert("deleted_time", Value::Null);
        m.insert("end_time", end_time.map(Value::Int).unwrap_or(Value::Null));
        m.insert("entry_point_name", Value::Str(String::new()));
        m.insert("experiment_id", Value::Str(self.experiment_id.clone()));
        m.insert("lifecycle_stage", Value::Str("active".into()));
        m.insert("run_id", Value::Str(self.run_id.clone()));
        m.insert("run_name", Value::Str(self.run_name()));
        // Older MLflow versions read run_uuid; newer ones ignore it.
        m.insert("run_uuid", Value::Str(self.run_id.clone()));
        m.insert("source_name", Value::Str(String::new()));
        m.insert("source_type", Value::Int(SOURCE_TYPE_LOCAL));
        m.insert("source_version", Value::Str(String::new()));
        m.insert("start_time", Value::Int(self.start_time));
        m.insert("status", Value::Int(status.as_int()));
        m.insert("tags", Value::EmptyList);
        m.insert("user_id", Value::Str(self.user.clone()));
        fsutil::write_atomic(
            &self.run_dir.join(META),
            &self.run_dir,
            yaml::write(&m).as_bytes(),
        )
    }

    fn key_path(&self, sub: &str, key: &str) -> PathBuf {
        let mut p = self.run_dir.join(sub);
        for part in key.split('/') {
            p.push(part);
        }
        p
    }

    pub(crate) fn log_params(&self, params: &[(&str, &str)]) -> Result<()> {
        for &(k, v) in params {
            let path = self.key_path("params", k);
            match std::fs::read_to_string(&path) {
                Ok(old) if old == v => continue,
                Ok(old) => {
                    return Err(Error::ParamChanged {
                        key: k.to_string(),
                        old,
                        new: v.to_string(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, e)),
            }
            fsutil::write_atomic(&path, &self.run_dir, v.as_bytes())?;
        }
        Ok(())
    }

    pub(crate) fn log_metrics(&self, metrics: &[Metric]) -> Result<()> {
        let mut by_key: BTreeMap<&str, String> = BTreeMap::new();
        for m in metrics {
            let line = by_key.entry(m.key.as_str()).or_default();
            line.push_str(&format!(
                "{} {} {}\n",
                m.timestamp_ms,
                fmt_value(m.value),
                m.step
            ));
        }
        for (key, text) in by_key {
            fsutil::append(&self.key_path("metrics", key), &text)?;
        }
        Ok(())
    }

    pub(crate) fn set_tags(&self, tags: &[(&str, &str)]) -> Result<()> {
        for &(k, v) in tags {
            fsutil::write_atomic(&self.key_path("tags", k), &self.run_dir, v.as_bytes())?;
            if k == TAG_RUN_NAME && v != self.run_name() {
                match self.run_name.lock() {
                    Ok(mut g) => *g = v.to_string(),
                    Err(p) => *p.into_inner() = v.to_string(),
                }
                self.write_meta(RunStatus::Running, None)?;
            }
        }
        Ok(())
    }

    fn artifact_dir(&self) -> Result<PathBuf> {
        fsutil::file_uri_to_path(&self.artifact_uri).ok_or_else(|| Error::UnsupportedUri {
            uri: self.artifact_uri.clone(),
            reason: "the experiment's artifact location is not a local file: URI".into(),
        })
    }

    pub(crate) fn log_artifacts(&self, files: &[(PathBuf, String)]) -> Result<()> {
        let dir = self.artifact_dir()?;
        fsutil::create_dir_all(&dir)?;
        // The temp file must be on the artifact directory's file system; the run directory is
        // when the artifacts live inside it (the default), and MLflow never lists it.
        let tmp_dir = if dir.starts_with(&self.run_dir) {
            self.run_dir.clone()
        } else {
            dir.clone()
        };
        for (src, rel) in files {
            let mut dest = dir.clone();
            for part in rel.split('/') {
                dest.push(part);
            }
            fsutil::copy_file_atomic(src, &dest, &tmp_dir)?;
        }
        Ok(())
    }

    pub(crate) fn end(&self, status: RunStatus, end_time: i64) -> Result<()> {
        self.write_meta(status, Some(end_time))
    }
}

/// A metric value as Python's `float()` reads it back (`nan`, `inf`, `-inf` included).
fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else {
        // Rust's shortest round-trip form; Python parses every such string to the same f64.
        format!("{v:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_text() {
        for v in [0.5, 1e-20, 3.0, -2.5e300, 0.1 + 0.2] {
            assert_eq!(fmt_value(v).parse::<f64>().unwrap(), v);
        }
        assert_eq!(fmt_value(f64::NAN), "nan");
        assert_eq!(fmt_value(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn layout() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(&dir.path().join("mlruns")).unwrap();
        assert!(dir.path().join("mlruns/0/meta.yaml").is_file());
        assert!(dir.path().join("mlruns/.trash").is_dir());
        let id = store.get_or_create_experiment("e").unwrap();
        assert_eq!(id.len(), 18);
        assert_eq!(store.get_or_create_experiment("e").unwrap(), id);
        assert_eq!(
            store.experiment_by_name("Default").unwrap().as_deref(),
            Some("0")
        );
        let run = store
            .create_run(&id, "r", "me", 5, &[("a/b".into(), "c".into())])
            .unwrap();
        run.log_params(&[("lr", "0.1")]).unwrap();
        run.log_params(&[("lr", "0.1")]).unwrap();
        assert!(matches!(
            run.log_params(&[("lr", "0.2")]),
            Err(Error::ParamChanged { .. })
        ));
        run.log_metrics(&[
            Metric::at("loss/train", 0.5, 1, 10),
            Metric::at("loss/train", 0.25, 2, 11),
        ])
        .unwrap();
        let rd = dir.path().join("mlruns").join(&id).join(&run.run_id);
        assert_eq!(
            std::fs::read_to_string(rd.join("metrics/loss/train")).unwrap(),
            "10 0.5 1\n11 0.25 2\n"
        );
        assert_eq!(std::fs::read_to_string(rd.join("tags/a/b")).unwrap(), "c");
        assert_eq!(
            std::fs::read_to_string(rd.join("params/lr")).unwrap(),
            "0.1"
        );
        run.end(RunStatus::Finished, 9).unwrap();
        let meta = FileStore::read_meta(&rd.join("meta.yaml")).unwrap();
        assert_eq!(meta["status"], Value::Int(3));
        assert_eq!(meta["end_time"], Value::Int(9));
        // No temp file left behind where MLflow would see it.
        let leftovers: Vec<_> = std::fs::read_dir(&rd)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
