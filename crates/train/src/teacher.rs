//! What a teacher said about each 5 s window: the store `trainer teach` writes beside the ETL
//! shards and distillation, pseudo-labelling and the site/hour priors read.
//!
//! Layout of a teacher directory (`<shards>/teachers/<name>/`):
//! ```text
//! teacher.json                           TeacherInfo: the spec, the class mapping, dimensions
//! soundscapes/<stem>.safetensors         one file per scored recording of train_soundscapes/
//! train_audio/<label>/<id>.safetensors   one per recording of train_audio/ (when asked)
//! ```
//! Each recording file holds `start_s [W]`, `probs [W, C]` (task classes, taxonomy order; 0 for
//! classes the teacher does not cover), optionally `embedding [W, E]` and, for soundscapes,
//! `features [W, mels, frames]` in the *student's* feature recipe (the ETL manifest's), so a
//! pseudo-labelled window trains exactly like an ETL window. A file is written atomically, so its
//! presence means the recording is done: a killed `teach` resumes by skipping finished files.
//! safetensors keeps the format readable from Python (`safetensors.numpy.load_file`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype as StDtype, TensorView};
use serde::{Deserialize, Serialize};

use silencio_data::Dtype;

use crate::{Error, Result};

fn f32_dtype() -> Dtype {
    Dtype::F32
}

/// Two window starts within this many seconds are the same window (teacher and ETL grids are
/// computed apart, in f32 and f64).
pub const SAME_WINDOW_S: f64 = 1e-3;

/// Format version of `teacher.json` and the recording files.
pub const TEACHER_FORMAT: u32 = 1;

/// Which part of the BirdCLEF root a recording comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordingSet {
    /// `train_soundscapes/`: unlabelled 1-minute soundscapes.
    Soundscapes,
    /// `train_audio/`: the labelled clips.
    TrainAudio,
}

impl RecordingSet {
    /// The sub-directory of the teacher directory (and of the BirdCLEF root: `train_<…>`).
    pub fn dir_name(self) -> &'static str {
        match self {
            Self::Soundscapes => "soundscapes",
            Self::TrainAudio => "train_audio",
        }
    }

    /// The BirdCLEF root's directory holding this set's audio.
    pub fn source_dir(self) -> &'static str {
        match self {
            Self::Soundscapes => "train_soundscapes",
            Self::TrainAudio => "train_audio",
        }
    }
}

/// `teacher.json`: who the teacher is and how its outputs map onto the task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeacherInfo {
    /// [`TEACHER_FORMAT`].
    pub format: u32,
    /// The model spec as given (`--teacher`).
    pub spec: String,
    /// `name@version` of the opened model.
    pub model: String,
    /// Task classes (taxonomy codes, the shards' order).
    pub classes: Vec<String>,
    /// Per task class: whether the teacher scores it (matched by code, else scientific name).
    pub covered: Vec<bool>,
    /// Embedding width, when the teacher gives embeddings.
    pub embedding_dim: Option<usize>,
    /// `[mels, frames]` of the stored student features (the ETL manifest's).
    pub feature_shape: [usize; 2],
    /// Storage type of the stored student features: the ETL manifest's, so a pseudo-labelled
    /// window is stored as an ETL window is (f16 halves the soundscapes' features, ~19 GB of
    /// f32 for BirdCLEF 2025's). Stores written before this field hold f32.
    #[serde(default = "f32_dtype")]
    pub feature_dtype: Dtype,
    /// The ETL manifest fingerprint the features were computed for.
    pub shards_fingerprint: String,
    /// SPDX ids of the teacher's licences (they travel into students trained on its labels).
    pub licences: Vec<String>,
}

impl TeacherInfo {
    /// The teacher's licences as they travel into what was derived from it (`use`: what it
    /// gave, e.g. "labels the student learnt from").
    pub fn derived_licences(&self, r#use: &str) -> Vec<silencio_infer::licence::Licence> {
        self.licences
            .iter()
            .map(|id| {
                silencio_infer::licence::Licence::new(
                    id.clone(),
                    format!("teacher {} ({use})", self.model),
                )
            })
            .collect()
    }
}

/// One scored recording.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherRecording {
    /// Which set.
    pub set: RecordingSet,
    /// Path under the set's source directory (`H02_20230420_074000.ogg`, `grekis/XC1.ogg`).
    pub file: String,
    /// Window starts, seconds.
    pub start_s: Vec<f32>,
    /// `[W][C]` teacher probabilities on the task's classes.
    pub probs: Vec<Vec<f32>>,
    /// `[W][E]` teacher embeddings (empty when the teacher has none).
    pub embedding: Vec<Vec<f32>>,
    /// `[W][mels·frames]` student features (soundscapes only; empty otherwise).
    pub features: Vec<Vec<f32>>,
}

impl TeacherRecording {
    /// Number of windows.
    pub fn len(&self) -> usize {
        self.start_s.len()
    }

    /// Whether there are no windows.
    pub fn is_empty(&self) -> bool {
        self.start_s.is_empty()
    }
}

/// A teacher directory.
#[derive(Debug, Clone)]
pub struct TeacherStore {
    dir: PathBuf,
    info: TeacherInfo,
}

fn corrupt(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Data {
        message: format!("{}: {message}", path.display()),
    }
}

fn f32_bytes(rows: &[Vec<f32>]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in rows {
        Dtype::F32.encode(r, &mut out);
    }
    out
}

fn rows_of(dtype: Dtype, bytes: &[u8], width: usize) -> Vec<Vec<f32>> {
    let vals = dtype.decode(bytes);
    if width == 0 {
        return Vec::new();
    }
    vals.chunks(width).map(<[f32]>::to_vec).collect()
}

impl TeacherStore {
    /// The directory of teacher `name` for the shards at `shards`.
    pub fn dir_for(shards: &Path, name: &str) -> PathBuf {
        shards.join("teachers").join(name)
    }

    /// Creates the directory, or reopens it when its `teacher.json` says the same thing (a
    /// resumed `teach`); a different teacher in the same place is refused.
    pub fn create(dir: &Path, info: TeacherInfo) -> Result<Self> {
        let path = dir.join("teacher.json");
        if path.exists() {
            let old = Self::open(dir)?;
            if old.info != info {
                return Err(Error::Config {
                    path: path.display().to_string(),
                    message: format!(
                        "holds another teacher ({} for {} classes); pick another --name or \
                         remove the directory",
                        old.info.spec,
                        old.info.classes.len()
                    ),
                });
            }
            return Ok(old);
        }
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        crate::pipeline::write_json(&path, &info)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            info,
        })
    }

    /// Opens an existing teacher directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("teacher.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let info: TeacherInfo = serde_json::from_slice(&bytes).map_err(|e| corrupt(&path, e))?;
        if info.format != TEACHER_FORMAT {
            return Err(corrupt(
                &path,
                format!(
                    "format {} (this trainer reads {TEACHER_FORMAT})",
                    info.format
                ),
            ));
        }
        if info.covered.len() != info.classes.len() {
            return Err(corrupt(&path, "covered and classes differ in length"));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            info,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `teacher.json`.
    pub fn info(&self) -> &TeacherInfo {
        &self.info
    }

    /// Where a recording's file goes.
    pub fn path_of(&self, set: RecordingSet, file: &str) -> PathBuf {
        let rel = Path::new(file).with_extension("safetensors");
        self.dir.join(set.dir_name()).join(rel)
    }

    /// Whether a recording was scored already.
    pub fn done(&self, set: RecordingSet, file: &str) -> bool {
        self.path_of(set, file).is_file()
    }

    /// Writes one recording atomically (shapes checked against `teacher.json`).
    pub fn write(&self, rec: &TeacherRecording) -> Result<()> {
        let path = self.path_of(rec.set, &rec.file);
        let w = rec.len();
        let c = self.info.classes.len();
        let [m, f] = self.info.feature_shape;
        let bad = |what: &str| Error::Data {
            message: format!("{}: {what} has the wrong shape", rec.file),
        };
        if rec.probs.len() != w || rec.probs.iter().any(|r| r.len() != c) {
            return Err(bad("probs"));
        }
        let e = self.info.embedding_dim.unwrap_or(0);
        if !rec.embedding.is_empty()
            && (rec.embedding.len() != w || rec.embedding.iter().any(|r| r.len() != e))
        {
            return Err(bad("embedding"));
        }
        if !rec.features.is_empty()
            && (rec.features.len() != w || rec.features.iter().any(|r| r.len() != m * f))
        {
            return Err(bad("features"));
        }
        let start: Vec<u8> = rec.start_s.iter().flat_map(|v| v.to_le_bytes()).collect();
        let probs = f32_bytes(&rec.probs);
        let emb = f32_bytes(&rec.embedding);
        let fd = self.info.feature_dtype;
        let mut feats = Vec::new();
        for row in &rec.features {
            fd.encode(row, &mut feats);
        }
        fn view<'a>(
            file: &str,
            dtype: StDtype,
            shape: Vec<usize>,
            data: &'a [u8],
        ) -> Result<TensorView<'a>> {
            TensorView::new(dtype, shape, data).map_err(|e| Error::Data {
                message: format!("{file}: {e}"),
            })
        }
        let view = |dtype, shape, data| view(&rec.file, dtype, shape, data);
        let mut tensors = vec![
            ("start_s".to_string(), view(StDtype::F32, vec![w], &start)?),
            ("probs".to_string(), view(StDtype::F32, vec![w, c], &probs)?),
        ];
        if !rec.embedding.is_empty() {
            tensors.push((
                "embedding".to_string(),
                view(StDtype::F32, vec![w, e], &emb)?,
            ));
        }
        if !rec.features.is_empty() {
            let st = match fd {
                Dtype::F16 => StDtype::F16,
                Dtype::F32 => StDtype::F32,
            };
            tensors.push(("features".to_string(), view(st, vec![w, m, f], &feats)?));
        }
        let meta: HashMap<String, String> = [
            ("file".to_string(), rec.file.clone()),
            ("set".to_string(), rec.set.dir_name().to_string()),
        ]
        .into();
        let bytes = safetensors::serialize(tensors, Some(meta)).map_err(|e| Error::Data {
            message: format!("{}: {e}", rec.file),
        })?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        crate::pipeline::write_atomic(&path, &bytes)
    }

    /// Reads one recording.
    pub fn read(&self, set: RecordingSet, file: &str) -> Result<TeacherRecording> {
        let path = self.path_of(set, file);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| corrupt(&path, e))?;
        // The audio file's own name (with its extension) is in the metadata.
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(&path, e))?;
        let stored_file = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("file").cloned())
            .unwrap_or_else(|| file.to_string());
        // Features may be f16 (see TeacherInfo::feature_dtype); everything else is f32.
        let get = |name: &str, width: usize| -> Result<Option<Vec<Vec<f32>>>> {
            match st.tensor(name) {
                Ok(t) if t.dtype() == StDtype::F32 => {
                    Ok(Some(rows_of(Dtype::F32, t.data(), width)))
                }
                Ok(t) if t.dtype() == StDtype::F16 && name == "features" => {
                    Ok(Some(rows_of(Dtype::F16, t.data(), width)))
                }
                Ok(_) => Err(corrupt(&path, format!("{name} is not f32"))),
                Err(_) => Ok(None),
            }
        };
        let start_s = get("start_s", 1)?
            .ok_or_else(|| corrupt(&path, "no start_s"))?
            .into_iter()
            .map(|r| r[0])
            .collect::<Vec<f32>>();
        let w = start_s.len();
        let c = self.info.classes.len();
        let probs = get("probs", c)?.ok_or_else(|| corrupt(&path, "no probs"))?;
        let embedding = match self.info.embedding_dim {
            Some(e) => get("embedding", e)?.unwrap_or_default(),
            None => Vec::new(),
        };
        let [m, f] = self.info.feature_shape;
        let features = get("features", m * f)?.unwrap_or_default();
        if probs.len() != w
            || (!embedding.is_empty() && embedding.len() != w)
            || (!features.is_empty() && features.len() != w)
        {
            return Err(corrupt(&path, "tensors disagree on the number of windows"));
        }
        Ok(TeacherRecording {
            set,
            file: stored_file,
            start_s,
            probs,
            embedding,
            features,
        })
    }

    /// The recordings of `set` scored so far, as paths under the source directory without the
    /// audio extension (sorted); [`Self::read`] takes them as they are.
    pub fn list(&self, set: RecordingSet) -> Result<Vec<String>> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
            if !dir.is_dir() {
                return Ok(());
            }
            for e in std::fs::read_dir(dir)? {
                let p = e?.path();
                if p.is_dir() {
                    walk(root, &p, out)?;
                } else if p.extension().is_some_and(|x| x == "safetensors")
                    && let Ok(rel) = p.strip_prefix(root)
                {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
            Ok(())
        }
        let root = self.dir.join(set.dir_name());
        let mut out = Vec::new();
        walk(&root, &root, &mut out).map_err(|e| Error::io(&root, e))?;
        out.sort();
        // Stored without the audio extension: give back the stem path (`x.safetensors` → `x`).
        Ok(out
            .into_iter()
            .map(|s| s.trim_end_matches(".safetensors").to_string())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> TeacherInfo {
        TeacherInfo {
            format: TEACHER_FORMAT,
            spec: "registry:production".into(),
            model: "demo@1".into(),
            classes: vec!["a".into(), "b".into(), "c".into()],
            covered: vec![true, false, true],
            embedding_dim: Some(2),
            feature_shape: [2, 3],
            feature_dtype: silencio_data::Dtype::F32,
            shards_fingerprint: "f".into(),
            licences: vec!["CC0-1.0".into()],
        }
    }

    #[test]
    fn f16_features_halve_the_file_and_round_as_the_etl_does() {
        let rec = |features: Vec<Vec<f32>>| TeacherRecording {
            set: RecordingSet::Soundscapes,
            file: "H02_20230420_074000.ogg".into(),
            start_s: vec![0.0, 5.0],
            probs: vec![vec![0.1, 0.0, 0.9], vec![0.5, 0.0, 0.25]],
            embedding: vec![vec![1.0, -1.0], vec![0.5, 2.0]],
            features,
        };
        let feats = vec![vec![-41.3, 0.1, 7.77, -80.0, 12.5, 3.0], vec![1.1; 6]];
        let (t32, t16) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let s32 = TeacherStore::create(t32.path(), info()).unwrap();
        let mut i16 = info();
        i16.feature_dtype = Dtype::F16;
        let s16 = TeacherStore::create(t16.path(), i16).unwrap();
        let r = rec(feats.clone());
        s32.write(&r).unwrap();
        s16.write(&r).unwrap();
        let back = s16.read(r.set, &r.file).unwrap();
        // Features come back as their f16 rounding; probabilities and embeddings stay f32.
        for (got, want) in back.features.iter().flatten().zip(feats.iter().flatten()) {
            assert_eq!(*got, half::f16::from_f32(*want).to_f32());
        }
        assert_ne!(back.features[1][0], 1.1);
        assert_eq!(back.probs, r.probs);
        assert_eq!(back.embedding, r.embedding);
        let size = |s: &TeacherStore| std::fs::metadata(s.path_of(r.set, &r.file)).unwrap().len();
        // 12 features: 48 bytes in f32, 24 in f16.
        assert_eq!(size(&s32) - size(&s16), 24);
        // A teacher.json written before the field reads as f32.
        let mut v = serde_json::to_value(info()).unwrap();
        v.as_object_mut().unwrap().remove("feature_dtype");
        let old: TeacherInfo = serde_json::from_value(v).unwrap();
        assert_eq!(old.feature_dtype, Dtype::F32);
    }

    #[test]
    fn a_recording_round_trips_and_a_resume_sees_it_done() {
        let tmp = tempfile::tempdir().unwrap();
        let store = TeacherStore::create(tmp.path(), info()).unwrap();
        let rec = TeacherRecording {
            set: RecordingSet::Soundscapes,
            file: "H02_20230420_074000.ogg".into(),
            start_s: vec![0.0, 5.0],
            probs: vec![vec![0.1, 0.0, 0.9], vec![0.5, 0.0, 0.25]],
            embedding: vec![vec![1.0, -1.0], vec![0.5, 2.0]],
            features: vec![vec![1.0; 6], vec![2.0; 6]],
        };
        assert!(!store.done(rec.set, &rec.file));
        store.write(&rec).unwrap();
        assert!(store.done(rec.set, &rec.file));
        let again = TeacherStore::create(tmp.path(), info()).unwrap();
        assert_eq!(again.read(rec.set, &rec.file).unwrap(), rec);
        assert_eq!(
            again.list(RecordingSet::Soundscapes).unwrap(),
            vec!["H02_20230420_074000".to_string()]
        );
        // Another teacher in the same place is refused; a wrong shape is refused.
        let mut other = info();
        other.spec = "birdnet".into();
        assert!(TeacherStore::create(tmp.path(), other).is_err());
        let mut bad = rec.clone();
        bad.probs[1].pop();
        assert!(store.write(&bad).is_err());
    }
}
