//! `trainer teach`: a teacher model (any model spec: a bundle, a registered version, an
//! ensemble, BirdNET in a BirdNET build) scores every 5 s window of `train_soundscapes/` (and,
//! when asked, `train_audio/`) into a [`TeacherStore`] beside the ETL shards, for distillation
//! and pseudo-labels.
//!
//! The teacher's classes are mapped onto the task's (taxonomy order, the shards' classes) by
//! code, else scientific name; classes it does not know get probability 0 and `covered =
//! false`. Soundscape windows also store the *student's* features (the ETL manifest's recipe),
//! computed by the same decode and log-mel as the ETL. Each recording is written atomically, so
//! a killed run resumes where it stopped; a recording that fails is reported and skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use silencio_audio::{FeatureConfig, LogMel};
use silencio_infer::priors::RecordingContext;
use silencio_infer::scorer::AUDIO_EXTENSIONS;
use silencio_infer::{ModelSpec, OpenOptions, Scorer, Species};

use crate::dataset::WindowStore;
use crate::experiment::Experiment;
use crate::teacher::{RecordingSet, TEACHER_FORMAT, TeacherInfo, TeacherRecording, TeacherStore};
use crate::{Error, Result};

/// Window starts closer than this are the same window (seconds).
const SAME_START_S: f64 = 1e-6;

/// What `trainer teach` does.
#[derive(Debug, Clone)]
pub struct TeachOptions {
    /// The teacher's model spec (`--model` syntax: a bundle, `registry[:alias|version]`,
    /// `birdnet`, an ensemble file).
    pub teacher: String,
    /// Name of the teacher directory (default: [`default_name`] of the spec).
    pub name: Option<String>,
    /// The BirdCLEF root (`taxonomy.csv`, `train_soundscapes/`, `train_audio/`).
    pub data: PathBuf,
    /// The ETL output whose manifest gives the student's recipe and fingerprint; the teacher
    /// directory goes under it.
    pub shards: PathBuf,
    /// The sets to score, in order.
    pub sets: Vec<RecordingSet>,
    /// Registry root that `registry` specs refer to.
    pub registry: PathBuf,
    /// Compute device (`flex`, `wgpu[:N]`, `cuda[:N]`).
    pub device: String,
    /// Score at most this many recordings in this run (the rest wait for the next one).
    pub limit: Option<usize>,
    /// When given, its ETL runs first unless its shards are complete (`data` and `shards`
    /// should then be its own).
    pub etl: Option<Experiment>,
}

/// A recording that could not be scored (the run went on).
#[derive(Debug, Clone, PartialEq)]
pub struct FailedRecording {
    /// Its set.
    pub set: RecordingSet,
    /// Path under the set's source directory.
    pub file: String,
    /// Why.
    pub error: String,
}

/// What a `teach` run did.
#[derive(Debug, Clone, PartialEq)]
pub struct TeachSummary {
    /// The teacher directory.
    pub dir: PathBuf,
    /// Recordings scored in this run.
    pub scored: usize,
    /// Recordings found done (an earlier run scored them).
    pub already_done: usize,
    /// Recordings that failed.
    pub failed: Vec<FailedRecording>,
    /// Windows written in this run.
    pub windows: usize,
    /// Task classes the teacher covers.
    pub covered: usize,
}

impl TeachSummary {
    /// One line for the log.
    pub fn line(&self) -> String {
        format!(
            "teacher {}: {} recordings scored ({} windows), {} already done, {} failed; {} \
             task classes covered",
            self.dir.display(),
            self.scored,
            self.windows,
            self.already_done,
            self.failed.len(),
            self.covered
        )
    }
}

/// The default teacher directory name of a spec: its characters outside `[A-Za-z0-9._-]`
/// become `-` (runs of them one), without leading or trailing `-`/`.`, lower case
/// (`registry:production` → `registry-production`); `teacher` when nothing is left.
pub fn default_name(spec: &str) -> String {
    let mut out = String::with_capacity(spec.len());
    for c in spec.trim().chars() {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    // No hidden directory, no `..`.
    let out = out.trim_matches(|c| c == '-' || c == '.').to_string();
    if out.is_empty() {
        "teacher".to_string()
    } else {
        out
    }
}

/// Per task class, the teacher's class index (see [`silencio_infer::ensemble::match_species`]).
pub fn class_map(task: &[Species], teacher: &[Species]) -> Vec<Option<usize>> {
    silencio_infer::ensemble::match_species(task, teacher)
}

/// A teacher's scores as task-class probabilities: 0 where the teacher does not know the class.
pub fn task_probs(map: &[Option<usize>], scores: &[f32]) -> Vec<f32> {
    map.iter()
        .map(|m| m.and_then(|j| scores.get(j).copied()).unwrap_or(0.0))
        .collect()
}

/// The audio files under `dir` (recursively, hidden files and non-audio names such as
/// `x.ogg.tmp` left out) as `/`-separated paths relative to it, sorted.
pub fn recordings(dir: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let p = e.map_err(|e| Error::io(dir, e))?.path();
            let hidden = p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out)?;
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| AUDIO_EXTENSIONS.iter().any(|a| a.eq_ignore_ascii_case(x)))
                && let Ok(rel) = p.strip_prefix(root)
            {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if dir.is_dir() {
        walk(dir, dir, &mut out)?;
    }
    out.sort();
    Ok(out)
}

/// What stays fixed over a run.
struct Ctx<'a> {
    scorer: &'a Scorer,
    map: Vec<Option<usize>>,
    student: &'a FeatureConfig,
    logmel: LogMel,
    max_duration_s: f64,
    /// Per `train_audio/` file, the starts of the windows the ETL kept (`max_windows_per_clip`
    /// and skipped clips included): distillation reads nothing else, so nothing else is stored.
    etl_starts: HashMap<&'a str, Vec<f64>>,
}

impl Ctx<'_> {
    /// Scores one recording (student features for soundscapes).
    fn score(
        &self,
        set: RecordingSet,
        file: &str,
        bytes: Vec<u8>,
    ) -> Result<(TeacherRecording, Option<usize>)> {
        let features = match set {
            RecordingSet::Soundscapes => {
                // The ETL's decode and log-mel (crates/data/src/etl/decode.rs).
                let opts = silencio_audio::decode_options_for(self.student, self.max_duration_s);
                let d = silencio_audio::decode_bytes(bytes.clone(), &opts)?;
                Some(self.logmel.features(&d.samples)?)
            }
            RecordingSet::TrainAudio => None,
        };
        // Site and hour from the file name, as `silencio identify` reads them.
        let ctx = RecordingContext::from_path(Path::new(file));
        let (id, emb) = self.scorer.identify_embedded(bytes, &ctx)?;
        let dim = emb.as_ref().and_then(|e| e.first()).map(Vec::len);
        let mut rec = TeacherRecording {
            set,
            file: file.to_string(),
            start_s: Vec::new(),
            probs: Vec::new(),
            embedding: Vec::new(),
            features: Vec::new(),
        };
        for (i, w) in id.windows.iter().enumerate() {
            // Soundscape rows need the student's window with the same start (the grids agree;
            // a tail window only one side keeps is left out).
            let feat = match &features {
                Some(f) => match f
                    .windows
                    .iter()
                    .position(|s| (s.start_s - w.start_s).abs() < SAME_START_S)
                {
                    Some(k) => Some(f.window(k).to_vec()),
                    None => continue,
                },
                None => None,
            };
            if set == RecordingSet::TrainAudio {
                let kept = self.etl_starts.get(file).is_some_and(|starts| {
                    starts
                        .iter()
                        .any(|s| (s - w.start_s).abs() <= crate::teacher::SAME_WINDOW_S)
                });
                if !kept {
                    continue;
                }
            }
            rec.start_s.push(w.start_s as f32);
            rec.probs.push(task_probs(&self.map, &w.scores));
            if let Some(e) = emb.as_ref().and_then(|e| e.get(i)) {
                rec.embedding.push(e.clone());
            }
            rec.features.extend(feat);
        }
        Ok((rec, dim))
    }
}

/// Scores the recordings `opts` names with its teacher into `<shards>/teachers/<name>/`,
/// skipping those already there; `progress` gets one line per recording.
pub fn teach(opts: &TeachOptions, progress: &mut dyn FnMut(&str)) -> Result<TeachSummary> {
    let store_shards = match &opts.etl {
        Some(exp) => crate::prepare::shards(exp, progress)?,
        None => WindowStore::open(&opts.shards).map_err(|e| Error::Data {
            message: format!(
                "no ETL manifest for the student's recipe at {} ({e}): run the ETL first \
                 (`trainer`, or `trainer teach --experiment <file>`)",
                opts.shards.display()
            ),
        })?,
    };
    let manifest = store_shards.manifest();
    let task = crate::pipeline::task_species(&opts.data)?;
    let codes: Vec<String> = task.iter().map(|s| s.code.clone()).collect();
    if codes != manifest.classes {
        return Err(Error::Data {
            message: format!(
                "{}/taxonomy.csv and the manifest at {} list different classes",
                opts.data.display(),
                opts.shards.display()
            ),
        });
    }
    let student = &manifest.options.features;
    let spec = ModelSpec::parse(&opts.teacher, &opts.registry)?;
    let device = silencio_infer::parse_device(&opts.device)?;
    let scorer = silencio_infer::open(
        &spec,
        &device,
        &OpenOptions {
            max_duration_s: manifest.options.max_duration_s,
            ..OpenOptions::default()
        },
    )?;
    let (tw, sw) = (scorer.window(), &student.window);
    if tw.length_s != sw.length_s || tw.hop_s != sw.hop_s {
        return Err(Error::Config {
            path: opts.teacher.clone(),
            message: format!(
                "the teacher answers on {} s windows every {} s, the student's recipe on {} s \
                 every {} s: teacher windows would not match ETL windows (make the teacher an \
                 ensemble, which answers on the 5 s grid)",
                tw.length_s, tw.hop_s, sw.length_s, sw.hop_s
            ),
        });
    }
    let map = class_map(&task, scorer.species());
    let covered: Vec<bool> = map.iter().map(Option::is_some).collect();
    let n_covered = covered.iter().filter(|c| **c).count();
    if n_covered == 0 {
        return Err(Error::Config {
            path: opts.teacher.clone(),
            message: "the teacher shares no class (by code or scientific name) with the task"
                .into(),
        });
    }
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| default_name(&opts.teacher));
    let dir = TeacherStore::dir_for(&opts.shards, &name);
    let mut info = TeacherInfo {
        format: TEACHER_FORMAT,
        spec: opts.teacher.clone(),
        model: scorer.name(),
        classes: codes,
        covered,
        embedding_dim: None,
        feature_shape: manifest.feature_shape,
        feature_dtype: manifest.options.dtype,
        shards_fingerprint: manifest.fingerprint.clone(),
        licences: scorer.licences().iter().map(|l| l.id.clone()).collect(),
    };
    // The embedding width is known once a recording is scored: a fresh store is created then,
    // an existing one must agree with everything else.
    let mut store = if dir.join("teacher.json").is_file() {
        let existing = TeacherStore::open(&dir)?;
        info.embedding_dim = existing.info().embedding_dim;
        // A store begun by an earlier build (f32 features) is resumed as it began.
        info.feature_dtype = existing.info().feature_dtype;
        Some(TeacherStore::create(&dir, info.clone())?)
    } else {
        None
    };
    progress(&format!(
        "teacher {} ({}): {n_covered} of {} task classes covered → {}",
        opts.teacher,
        scorer.name(),
        info.classes.len(),
        dir.display()
    ));
    let ctx = Ctx {
        scorer: &scorer,
        map,
        student,
        logmel: LogMel::new(student)?,
        max_duration_s: manifest.options.max_duration_s,
        etl_starts: {
            let files = manifest.clip_files();
            let mut m: HashMap<&str, Vec<f64>> = HashMap::new();
            for w in &manifest.windows {
                if let Some(&f) = files.get(&w.clip) {
                    m.entry(f).or_default().push(w.start_s);
                }
            }
            m
        },
    };
    let mut summary = TeachSummary {
        dir: dir.clone(),
        scored: 0,
        already_done: 0,
        failed: Vec::new(),
        windows: 0,
        covered: n_covered,
    };
    let mut todo = Vec::new();
    for &set in &opts.sets {
        for file in recordings(&opts.data.join(set.source_dir()))? {
            if store.as_ref().is_some_and(|s| s.done(set, &file)) {
                summary.already_done += 1;
            } else {
                todo.push((set, file));
            }
        }
    }
    if let Some(n) = opts.limit {
        todo.truncate(n);
    }
    let total = todo.len();
    for (i, (set, file)) in todo.into_iter().enumerate() {
        let path = opts.data.join(set.source_dir()).join(&file);
        let t0 = Instant::now();
        let scored = std::fs::read(&path)
            .map_err(|e| Error::io(&path, e))
            .and_then(|bytes| ctx.score(set, &file, bytes));
        let (rec, dim) = match scored {
            Ok(r) => r,
            Err(e) => {
                progress(&format!(
                    "[{}/{total}] {}/{file}: skipped: {e}",
                    i + 1,
                    set.source_dir()
                ));
                summary.failed.push(FailedRecording {
                    set,
                    file,
                    error: e.to_string(),
                });
                continue;
            }
        };
        let s = match &store {
            Some(s) => s,
            None => {
                info.embedding_dim = dim;
                store.insert(TeacherStore::create(&dir, info.clone())?)
            }
        };
        s.write(&rec)?;
        summary.scored += 1;
        summary.windows += rec.len();
        progress(&format!(
            "[{}/{total}] {}/{file}: {} windows, {:.1} s",
            i + 1,
            set.source_dir(),
            rec.len(),
            t0.elapsed().as_secs_f64()
        ));
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(code: &str, sci: &str) -> Species {
        Species {
            code: code.into(),
            scientific_name: sci.into(),
            common_name: String::new(),
            class_name: "Aves".into(),
        }
    }

    #[test]
    fn names_are_safe_directory_names() {
        assert_eq!(default_name("registry:production"), "registry-production");
        assert_eq!(default_name("birdnet"), "birdnet");
        assert_eq!(default_name("BirdNET"), "birdnet");
        assert_eq!(default_name("runs/demo 1//bundle/"), "runs-demo-1-bundle");
        assert_eq!(default_name("../x"), "x");
        assert_eq!(default_name(".hidden"), "hidden");
        assert_eq!(default_name("::"), "teacher");
        assert_eq!(default_name("v1.2_a-b"), "v1.2_a-b");
    }

    #[test]
    fn classes_map_by_code_then_scientific_name_and_uncovered_score_zero() {
        let task = vec![
            sp("grekis", "Pitangus sulphuratus"),
            sp("comyel", "Geothlypis trichas"),
            sp("x1", "Nobody knows"),
        ];
        // BirdNET-style: codes are scientific names, in another order.
        let teacher = vec![
            sp("Geothlypis trichas", "Geothlypis trichas"),
            sp("grekis", "Something else"),
            sp("Other bird", "Other bird"),
        ];
        let map = class_map(&task, &teacher);
        assert_eq!(map, vec![Some(1), Some(0), None]);
        assert_eq!(task_probs(&map, &[0.25, 0.5, 0.75]), vec![0.5, 0.25, 0.0]);
    }
}
