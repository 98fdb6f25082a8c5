//! The whole run behind `cargo run -p trainer`: data → model → Learner → bundle → evaluation
//! report → quality gate → registry, tracked in MLflow from the first step to the last.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use silencio_data::splits::Split;
use silencio_infer::{BundleSpec, Identification, ModelBundle, Provenance, Species};

use crate::dataset::{self, PseudoPool, WindowDataset, WindowStore};
use crate::distill::DistillSpec;
use crate::experiment::{Experiment, teacher_dir};
use crate::fit::{self, FitSpec, Teaching};
use crate::teacher::TeacherStore;
use crate::track::Tracker;
use crate::{Error, Result, evaluate, predict, prepare};
use silencio_data::PeriodFilter;

/// What to run and where to record it.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The experiment.
    pub experiment: Experiment,
    /// Continue the latest unfinished run (or `run_name`) from its last checkpoint.
    pub resume: bool,
    /// Run name.
    pub run_name: Option<String>,
    /// MLflow tracking URI (directory, `file:` or `http(s)://`).
    pub tracking_uri: String,
    /// Registry (directory or `http(s)://` MLflow server).
    pub registry: String,
    /// Use this teacher directory for `[pseudo]` instead of the experiment's (pseudo-label
    /// rounds: the previous round's student teaches; `[distill]`'s teacher stays).
    pub teacher_override: Option<PathBuf>,
    /// MLflow run id of a parent run: this run is tagged `mlflow.parentRunId` and shows as its
    /// child (one child per pseudo-label round).
    pub parent_run: Option<String>,
    /// A model the candidate must not be worse than (the production model, when a pipeline
    /// retrains it): scored on the same mixed soundscapes and suites, and a gate reason when
    /// the candidate's macro ROC-AUC falls more than `max_drop` below its on any of them.
    pub baseline: Option<Baseline>,
}

/// The model a candidate is compared with on the same evaluation sets.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// The model (the production model: `registry:production`, a bundle, an ensemble).
    pub spec: silencio_infer::ModelSpec,
    /// How the user named it (for logs and gate reasons).
    pub label: String,
    /// Largest accepted drop of macro ROC-AUC below the baseline's, per set.
    pub max_drop: f64,
}

/// What a finished run decided (`<run dir>/outcome.json`), so a recipe that was killed after a
/// round finished reads the round back instead of training it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeRecord {
    /// The model bundle.
    pub bundle_dir: PathBuf,
    /// The evaluation report (JSON).
    pub report_json: PathBuf,
    /// Whether the gate passed.
    pub gate_passed: bool,
    /// Why not.
    pub gate_reasons: Vec<String>,
    /// The registered version.
    pub registered: Option<String>,
    /// Headline metrics.
    pub metrics: Vec<(String, f64)>,
}

impl OutcomeRecord {
    /// The record of an outcome.
    pub fn of(o: &RunOutcome) -> Self {
        Self {
            bundle_dir: o.bundle_dir.clone(),
            report_json: o.report_json.clone(),
            gate_passed: o.gate_passed,
            gate_reasons: o.gate_reasons.clone(),
            registered: o.registered.clone(),
            metrics: o.metrics.clone(),
        }
    }
}

/// The outcome of the run in `dir` when it finished; None otherwise.
pub fn read_outcome(dir: &Path) -> Option<OutcomeRecord> {
    let state = read_state(dir)?;
    if state.status != RunPhase::Finished {
        return None;
    }
    read_json(&dir.join("outcome.json"))
}

/// A run's state file (`<run dir>/run.json`), so `--resume` continues the same MLflow run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// Run name.
    pub run_name: String,
    /// MLflow run id.
    pub mlflow_run_id: Option<String>,
    /// Where the run is.
    pub status: RunPhase,
}

/// A run's state as `run.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunPhase {
    /// Started, not finished (or killed: `--resume` continues it).
    Running,
    /// Finished.
    Finished,
    /// Ended with an error.
    Failed,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Run directory.
    pub run_dir: PathBuf,
    /// The model bundle.
    pub bundle_dir: PathBuf,
    /// Evaluation report (JSON and HTML).
    pub report_json: PathBuf,
    /// HTML report.
    pub report_html: PathBuf,
    /// Whether the gate passed, and why not.
    pub gate_passed: bool,
    /// Gate reasons.
    pub gate_reasons: Vec<String>,
    /// Registered version (when the gate passed).
    pub registered: Option<String>,
    /// Where the MLflow run is.
    pub tracking: String,
    /// Headline metrics.
    pub metrics: Vec<(String, f64)>,
}

impl RunOutcome {
    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.metrics {
            s.push_str(&format!("{k}: {v:.4}\n"));
        }
        s.push_str(&format!(
            "report: {} ({})\n",
            self.report_html.display(),
            self.report_json.display()
        ));
        s.push_str(&format!("mlflow: {}\n", self.tracking));
        if self.gate_passed {
            s.push_str(&format!(
                "quality gate: passed; registered as version {}\n",
                self.registered.as_deref().unwrap_or("?")
            ));
        } else {
            s.push_str("quality gate: FAILED, not registered:\n");
            for r in &self.gate_reasons {
                s.push_str(&format!("  - {r}\n"));
            }
        }
        s.trim_end().to_string()
    }
}

/// Replaces `path` atomically ([`silencio_common::write_atomic`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    silencio_common::write_atomic(path, bytes).map_err(|e| Error::io(path, e))
}

/// `value` as pretty JSON at `path`, atomically (state files, records).
pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| Error::Data {
        message: e.to_string(),
    })?;
    write_atomic(path, &bytes)
}

/// The JSON file at `path`; None when it is absent or does not parse (a run never started).
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// The run directory under `base` that `--resume` continues: `name`'s, or else the most
/// recently modified one; in either case only one whose state (`read`) is `unfinished`.
pub(crate) fn resume_dir<S>(
    base: &Path,
    name: Option<&str>,
    read: impl Fn(&Path) -> Option<S>,
    unfinished: impl Fn(&S) -> bool,
) -> Result<Option<(PathBuf, S)>> {
    let mut dirs: Vec<(SystemTime, PathBuf)> = match name {
        Some(n) => vec![(UNIX_EPOCH, base.join(n))],
        None => std::fs::read_dir(base)
            .map_err(|e| Error::io(base, e))?
            .flatten()
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect(),
    };
    dirs.sort();
    Ok(dirs
        .into_iter()
        .rev()
        .find_map(|(_, d)| read(&d).filter(|s| unfinished(s)).map(|s| (d, s))))
}

fn read_state(dir: &Path) -> Option<RunState> {
    read_json(&dir.join("run.json"))
}

fn write_state(dir: &Path, s: &RunState) -> Result<()> {
    write_json(&dir.join("run.json"), s)
}

/// A new directory `<base>/<name>` for a `what` ("run", "recipe"): `name` as given, or
/// `<prefix>-<unix time>`; one that exists is refused (a name is never reused).
pub(crate) fn new_run_dir(
    base: &Path,
    name: Option<&str>,
    prefix: &str,
    what: &str,
) -> Result<(PathBuf, String)> {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = name.map_or_else(|| format!("{prefix}-{secs}"), str::to_string);
    let dir = base.join(&name);
    if dir.exists() {
        return Err(Error::Config {
            path: dir.display().to_string(),
            message: format!("{what} directory exists (pick another --run-name, or --resume it)"),
        });
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    Ok((dir, name))
}

/// The run directory: a new one, or for `--resume` the named / latest unfinished one.
fn run_dir(opts: &RunOptions) -> Result<(PathBuf, RunState, bool)> {
    let exp = &opts.experiment;
    let base = exp.output.runs.join(&exp.name);
    std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
    if opts.resume {
        if let Some((dir, state)) = resume_dir(&base, opts.run_name.as_deref(), read_state, |s| {
            s.status != RunPhase::Finished
        })? {
            return Ok((dir, state, true));
        }
        return Err(Error::Config {
            path: base.display().to_string(),
            message: "--resume: no unfinished run to continue".into(),
        });
    }
    let (dir, name) = new_run_dir(&base, opts.run_name.as_deref(), &exp.name, "run")?;
    Ok((
        dir,
        RunState {
            run_name: name,
            mlflow_run_id: None,
            status: RunPhase::Running,
        },
        false,
    ))
}

/// Runs an experiment end to end.
pub fn run(opts: RunOptions, log: &mut dyn FnMut(&str)) -> Result<RunOutcome> {
    let t0 = Instant::now();
    let exp = opts.experiment.clone();
    let (dir, mut state, resumed) = run_dir(&opts)?;
    log(&format!(
        "run {} in {}{}",
        state.run_name,
        dir.display(),
        if resumed { " (resumed)" } else { "" }
    ));

    let mut tracker = Tracker::open(&opts.tracking_uri)?;
    let run_id = tracker.start(&exp.name, &state.run_name, state.mlflow_run_id.as_deref())?;
    state.mlflow_run_id = Some(run_id.clone());
    write_state(&dir, &state)?;
    if let Some(parent) = &opts.parent_run {
        tracker.set_tag("mlflow.parentRunId", parent)?;
    }
    let result = run_inner(&opts, &exp, &dir, resumed, &mut tracker, log).and_then(|out| {
        // Written before run.json says finished: a finished run always has its outcome.
        write_json(&dir.join("outcome.json"), &OutcomeRecord::of(&out))?;
        Ok(out)
    });
    let tracking = tracker.describe();
    match &result {
        Ok(_) => {
            state.status = RunPhase::Finished;
            tracker.finish(true)?;
        }
        Err(e) => {
            state.status = RunPhase::Failed;
            let _ = tracker.set_tag("error", &e.to_string());
            tracker.finish(false)?;
        }
    }
    write_state(&dir, &state)?;
    let mut out = result?;
    out.tracking = tracking;
    log(&format!("done in {:.1} s", t0.elapsed().as_secs_f64()));
    Ok(out)
}

fn run_inner(
    opts: &RunOptions,
    exp: &Experiment,
    dir: &Path,
    resumed: bool,
    tracker: &mut Tracker,
    log: &mut dyn FnMut(&str),
) -> Result<RunOutcome> {
    let exp_path = dir.join("experiment.toml");
    let toml_text = toml::to_string_pretty(exp).map_err(|e| Error::Data {
        message: e.to_string(),
    })?;
    write_atomic(&exp_path, toml_text.as_bytes())?;
    if !resumed {
        tracker.log_params(&exp.params())?;
        tracker.log_system_tags()?;
    }

    // Data.
    let store = Arc::new(prepare::shards(exp, log)?);
    let features = store.manifest().options.features.clone();
    let [mels, frames] = store.shape();
    let classes = store.manifest().classes.clone();
    let species = task_species(&exp.data.root)?;
    let train_idx = store.select(Split::Train, exp.data.period);
    let valid_idx = store.select(Split::Valid, PeriodFilter::All);
    if train_idx.is_empty() || valid_idx.is_empty() {
        return Err(Error::Data {
            message: format!(
                "{} training and {} validation windows: both must be non-empty",
                train_idx.len(),
                valid_idx.len()
            ),
        });
    }

    if exp.model.probe.is_some() {
        return probe_run(opts, exp, dir, tracker, &store, &species, log);
    }

    // Devices and model.
    let devices = exp
        .train
        .devices
        .iter()
        .map(|d| silencio_infer::parse_device(d))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let main = devices[0].clone();
    let base_bundle = match &exp.model.from_registry {
        Some(alias) => Some(crate::registry::resolve(
            &opts.registry,
            &exp.model_name(),
            alias,
        )?),
        None => None,
    };
    let cfg = prepare::model_config(exp, classes.len(), mels)?;
    let (model, mut cfg, source, weight_licences) =
        prepare::initial_model(exp, cfg, base_bundle.as_deref(), &main)?;
    if cfg.input_norm.is_none() {
        let (mean, std) = store.feature_stats(&train_idx, 256)?;
        cfg.input_norm = Some(silencio_models::InputNorm { mean, std });
    }
    // The normalisation travels inside the model (and its bundle config).
    let mut model = model;
    model.input_norm = cfg.input_norm.map(|n| [n.mean, n.std]);
    log(&format!(
        "model: {} = {} ({source}); {} train / {} valid windows; devices {:?}",
        exp.model.arch,
        cfg.name(),
        train_idx.len(),
        valid_idx.len(),
        exp.train.devices
    ));
    let noise = prepare::noise_bank(exp.data.backgrounds.as_deref(), &features)?;

    let mut train = WindowDataset::new(
        store.clone(),
        train_idx,
        exp.train.secondary_weight,
        exp.train.random_crop,
    );
    if exp.train.balanced_sampling {
        train = train.balanced(exp.train.seed);
    }
    let valid = WindowDataset::new(store.clone(), valid_idx, 1.0, false);
    let taught = teach(opts, exp, &store, &cfg, train, log)?;
    let train = taught.train;
    if !resumed && !taught.params.is_empty() {
        tracker.log_params(&taught.params)?;
    }

    // Train.
    let resume_epoch = if resumed {
        fit::last_checkpoint(dir)
    } else {
        None
    };
    if let Some(e) = resume_epoch {
        log(&format!("resuming after epoch {e}"));
    }
    let t_train = Instant::now();
    let outcome = fit::fit_taught(
        FitSpec {
            train: &exp.train,
            dir,
            resume_epoch,
            devices: devices.clone(),
            on_epoch: Some(tracker.epoch_logger()?),
        },
        taught.teaching,
        model,
        &cfg,
        train,
        valid,
        [mels, frames],
        noise,
    )?;
    let train_s = t_train.elapsed().as_secs_f64();
    log(&format!(
        "trained {} epochs in {train_s:.1} s{}",
        outcome.epochs,
        outcome
            .stopped
            .as_deref()
            .map(|s| format!(" (stopped early: {s})"))
            .unwrap_or_default()
    ));

    // Evaluate.
    let facts = predict::clip_facts(&exp.data.root)?;
    let valid_scored =
        predict::validation(&store, &outcome.model, exp.eval.batch_size, &main, &facts)?;

    // Bundle (before the mixed test set: that one runs through the bundle, as serving does).
    let bundle_dir = dir.join("bundle");
    if bundle_dir.exists() {
        // A bundle of an interrupted run: the weights may differ after resuming.
        std::fs::remove_dir_all(&bundle_dir).map_err(|e| Error::io(&bundle_dir, e))?;
    }
    let version = format!(
        "{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    );
    // Where each species was recorded (train.csv's coordinates): the bundle's location filter.
    let location = {
        let codes: Vec<&str> = species.iter().map(|s| s.code.as_str()).collect();
        let m = crate::location::learn_from_train_csv(
            &exp.data.root.join("train.csv"),
            &codes,
            Default::default(),
        )?;
        log(&format!(
            "location filter: {} of {} species located ({})",
            m.known_count(),
            codes.len(),
            m.source()
        ));
        (m.known_count() > 0).then_some(m)
    };
    let (post_process, priors_licences) = post_process(opts, exp, &species, log)?;
    let bundle = ModelBundle::write(
        &bundle_dir,
        BundleSpec {
            name: exp.model_name(),
            version,
            model: cfg.clone(),
            features: features.clone(),
            species: species.clone(),
            provenance: Provenance {
                trained: true,
                run_id: Some(tracker.run_id().to_string()),
                source: format!("trainer experiment {} from {source}", exp.name),
                metrics: Default::default(),
                created_unix_s: 0,
                licences: silencio_infer::licence::union([
                    weight_licences.as_slice(),
                    prepare::training_data_licences(&exp.data.root)?.as_slice(),
                    taught.licences.as_slice(),
                    priors_licences.as_slice(),
                ]),
            },
            location,
            post_process,
        },
        &outcome.model,
    )?;
    // The test set runs through the model facade, as every served model does.
    let scorer = silencio_infer::open(
        &silencio_infer::ModelSpec::Bundle(bundle.dir().to_path_buf()),
        &main,
        &silencio_infer::OpenOptions::default(),
    )?;
    let score = |p: &Path| scorer.identify_path(p);
    finish(
        opts,
        exp,
        dir,
        tracker,
        Candidate {
            species: &species,
            classes: &classes,
            valid: valid_scored,
            bundle_dir,
            epochs: outcome.epochs,
            train_s,
            score: &score,
        },
        log,
    )
}

/// The training set and loss of a run with a teacher (`[distill]`, `[pseudo]`).
struct Taught {
    /// The training windows, with teacher outputs and pseudo-labelled windows.
    train: WindowDataset,
    /// The loss settings for [`fit::fit_taught`] (None: no teacher).
    teaching: Option<Teaching>,
    /// The teachers' licences (their labels train the student).
    licences: Vec<silencio_infer::licence::Licence>,
    /// Counts for MLflow (`teach.*`).
    params: Vec<(String, String)>,
}

/// Opens a teacher store and checks that it was made for these shards.
pub fn open_teacher(dir: &Path, store: &WindowStore) -> Result<TeacherStore> {
    let teacher = TeacherStore::open(dir).map_err(|e| match e {
        Error::Io { .. } => Error::Config {
            path: dir.display().to_string(),
            message: format!("no teacher store here ({e}); write it with `trainer teach`"),
        },
        other => other,
    })?;
    let info = teacher.info();
    let m = store.manifest();
    let mismatch = |message: String| Error::Config {
        path: dir.display().to_string(),
        message,
    };
    if info.shards_fingerprint != m.fingerprint {
        return Err(mismatch(format!(
            "the teacher was made for shards {}, these are {}: teach again on these shards",
            info.shards_fingerprint, m.fingerprint
        )));
    }
    if info.classes != m.classes {
        return Err(mismatch(format!(
            "the teacher's {} classes differ from the shards' {}",
            info.classes.len(),
            m.classes.len()
        )));
    }
    if info.feature_shape != m.feature_shape {
        return Err(mismatch(format!(
            "the teacher's features are {:?}, the shards' {:?}",
            info.feature_shape, m.feature_shape
        )));
    }
    Ok(teacher)
}

/// The teacher directories of `[distill]` and `[pseudo]`; `teacher_override` replaces the
/// pseudo-label teacher only (in rounds the previous student writes the pseudo-labels, while the
/// distillation teacher stays the strong pretrained one).
pub fn teacher_dirs(
    exp: &Experiment,
    teacher_override: Option<&Path>,
) -> (Option<PathBuf>, Option<PathBuf>) {
    let shards = &exp.data.shards;
    (
        exp.distill
            .as_ref()
            .map(|d| teacher_dir(shards, &d.teacher)),
        exp.pseudo.as_ref().map(|p| match teacher_override {
            Some(o) => o.to_path_buf(),
            None => teacher_dir(shards, &p.teacher),
        }),
    )
}

/// Adds what the teachers say to the training windows: their outputs on labelled windows
/// (`[distill]`) and pseudo-labelled soundscape windows (`[pseudo]`).
fn teach(
    opts: &RunOptions,
    exp: &Experiment,
    store: &Arc<WindowStore>,
    cfg: &silencio_models::ModelConfig,
    train: WindowDataset,
    log: &mut dyn FnMut(&str),
) -> Result<Taught> {
    let (distill_dir, pseudo_dir) = teacher_dirs(exp, opts.teacher_override.as_deref());
    if distill_dir.is_none() && pseudo_dir.is_none() {
        return Ok(Taught {
            train,
            teaching: None,
            licences: Vec::new(),
            params: Vec::new(),
        });
    }
    let mut train = train;
    let mut licences = Vec::new();
    let mut params = Vec::new();
    let mut add_licences = |t: &TeacherStore| {
        licences.extend(t.info().derived_licences("labels the student learnt from"));
    };
    let labelled = train.labelled_len();
    let mut spec = DistillSpec::hard_only();
    let mut embedding_dims = None;
    let mut with_embedding = false;
    if let (Some(d), Some(dir)) = (&exp.distill, &distill_dir) {
        let teacher = open_teacher(dir, store)?;
        add_licences(&teacher);
        spec = DistillSpec::from_config(d);
        if d.embedding_weight > 0.0 {
            let e = teacher.info().embedding_dim.ok_or_else(|| Error::Config {
                path: dir.display().to_string(),
                message: "distill.embedding_weight > 0 but the teacher stored no embeddings".into(),
            })?;
            embedding_dims = Some((crate::model::embedding_dim(cfg), e));
            with_embedding = true;
        }
        let outputs =
            dataset::labelled_teacher_outputs(store, &teacher, train.indices(), with_embedding)?;
        let matched = train
            .indices()
            .iter()
            .filter(|i| outputs.contains_key(i))
            .count();
        log(&format!(
            "distillation from {}: {matched} of {labelled} training windows have teacher outputs",
            dir.display()
        ));
        params.push(("teach.distill_teacher".into(), dir.display().to_string()));
        params.push(("teach.teacher_windows".into(), matched.to_string()));
        train = train.with_teacher(Arc::new(outputs));
    }
    if let (Some(p), Some(dir)) = (&exp.pseudo, &pseudo_dir) {
        let teacher = open_teacher(dir, store)?;
        add_licences(&teacher);
        // The same store as [distill]'s: its outputs on pseudo windows feed distillation too.
        let serves_distill = (distill_dir.as_ref() == Some(dir)).then_some(with_embedding);
        let (pool, counts) = PseudoPool::build(teacher, p, serves_distill)?;
        let wanted = (p.ratio * labelled as f64).round() as usize;
        let (t, per_epoch) = train.with_pseudo(Arc::new(pool), wanted, exp.train.seed);
        train = t;
        log(&format!(
            "pseudo-labels from {}: {} windows of {} soundscapes ({} dropped below \
             min_confidence, {} recordings without features); {per_epoch} per epoch beside \
             {labelled} labelled windows",
            dir.display(),
            counts.windows,
            counts.recordings,
            counts.dropped,
            counts.without_features
        ));
        params.push(("teach.pseudo_teacher".into(), dir.display().to_string()));
        params.push((
            "teach.pseudo_pool_windows".into(),
            counts.windows.to_string(),
        ));
        params.push(("teach.pseudo_dropped".into(), counts.dropped.to_string()));
        params.push((
            "teach.pseudo_windows_per_epoch".into(),
            per_epoch.to_string(),
        ));
    }
    params.push(("teach.labelled_windows".into(), labelled.to_string()));
    Ok(Taught {
        train,
        teaching: Some(Teaching {
            spec,
            embedding_dims,
        }),
        licences,
        params,
    })
}

/// `[priors]`: site/hour priors learnt from a teacher store's soundscape scores (and the
/// temporal smoothing), for the bundle; with the teacher's licences.
fn post_process(
    opts: &RunOptions,
    exp: &Experiment,
    species: &[Species],
    log: &mut dyn FnMut(&str),
) -> Result<(
    Option<silencio_infer::PostProcess>,
    Vec<silencio_infer::licence::Licence>,
)> {
    let Some(pc) = &exp.priors else {
        return Ok((None, Vec::new()));
    };
    let (distill, pseudo) = teacher_dirs(exp, opts.teacher_override.as_deref());
    let dir = pc
        .teacher
        .as_ref()
        .map(|t| teacher_dir(&exp.data.shards, t))
        .or(pseudo)
        .or(distill)
        .ok_or_else(|| Error::Config {
            path: format!("experiment {}", exp.name),
            message: "[priors] needs a teacher: priors.teacher, [pseudo] or [distill]".into(),
        })?;
    let store = TeacherStore::open(&dir)?;
    let codes: Vec<String> = species.iter().map(|s| s.code.clone()).collect();
    let priors =
        crate::priors::learn_from_teacher(&store, &codes)?.with_shrinkage(pc.shrinkage_windows)?;
    log(&format!(
        "priors from {}: {} recorders, {} hours of day",
        dir.display(),
        priors.recorders().len(),
        priors.hours().len()
    ));
    let licences = store.info().derived_licences("site and hour priors");
    Ok((
        Some(silencio_infer::PostProcess {
            priors: Some(priors),
            smoothing: pc
                .smoothing
                .then(silencio_infer::TemporalSmoothing::default),
            strength: pc.strength,
        }),
        licences,
    ))
}

/// The task's species in taxonomy order (the shards' class order).
pub fn task_species(root: &Path) -> Result<Vec<Species>> {
    let taxonomy = silencio_data::Taxonomy::from_csv(&root.join("taxonomy.csv"))?;
    Ok(taxonomy
        .species()
        .iter()
        .map(|s| Species {
            code: s.primary_label.clone(),
            scientific_name: s.scientific_name.clone(),
            common_name: s.common_name.clone(),
            class_name: s.class_name.clone(),
        })
        .collect())
}

/// A trained candidate, ready for evaluation, the gate and the registry.
pub(crate) struct Candidate<'a> {
    /// Classes in score order.
    pub species: &'a [Species],
    /// Their codes.
    pub classes: &'a [String],
    /// Validation scores.
    pub valid: predict::Scored,
    /// The bundle written for it.
    pub bundle_dir: PathBuf,
    /// Epochs trained.
    pub epochs: usize,
    /// Training time.
    pub train_s: f64,
    /// Scores a recording through the bundle, as serving does.
    pub score: &'a dyn Fn(&Path) -> silencio_infer::Result<Identification>,
}

/// Mixed soundscapes and failure suites, the report, the gate and the registry: the same for
/// every kind of candidate.
pub(crate) fn finish(
    opts: &RunOptions,
    exp: &Experiment,
    dir: &Path,
    tracker: &mut Tracker,
    c: Candidate<'_>,
    log: &mut dyn FnMut(&str),
) -> Result<RunOutcome> {
    // Mixed soundscapes from held-out calls, then the failure suites, all scored through the
    // bundle as serving scores them.
    let mut mixed = None;
    let mut suites = Vec::new();
    let baseline = match &opts.baseline {
        Some(b) => {
            let device = burn::tensor::Device::default();
            let scorer = silencio_infer::open(&b.spec, &device, &Default::default())?;
            Some((b, scorer))
        }
        None => None,
    };
    let mut baseline_reasons = Vec::new();
    if baseline.is_some() && (exp.data.backgrounds.is_none() || exp.eval.mix_minutes == 0) {
        baseline_reasons.push(
            "baseline: no mixed soundscapes to compare on (set data.backgrounds and eval.mix_minutes)"
                .to_string(),
        );
    }
    if let Some(bg_dir) = &exp.data.backgrounds {
        let bgs = silencio_data::mix::load_backgrounds(bg_dir)?;
        let base = silencio_data::mix::MixOptions {
            minutes: exp.eval.mix_minutes.max(1),
            seed: exp.eval.mix_seed,
            snr_db: (exp.eval.mix_snr_db[0], exp.eval.mix_snr_db[1]),
            valid_fraction: exp.data.valid_fraction,
            cv: exp.data.cv(),
            split_seed: exp.split_seed(),
            ..Default::default()
        };
        let mut sets = Vec::new();
        if exp.eval.mix_minutes > 0 {
            sets.push(("mixed".to_string(), base.clone()));
        }
        for name in &exp.eval.suites {
            let mut o = base.clone();
            o.minutes = exp.eval.suite_minutes.max(1);
            o.seed = base.seed + 1;
            match name.as_str() {
                "weak" => {
                    o.snr_db = (-20.0, -10.0);
                    o.background_only = 0.0;
                }
                "overlap" => {
                    o.min_overlap = 2;
                    o.max_overlap = 4;
                    o.background_only = 0.0;
                }
                _ => o.background_only = 0.5,
            }
            sets.push((name.clone(), o));
        }
        for (name, o) in sets {
            let out_dir = dir.join(format!("eval-{name}"));
            if out_dir.exists() {
                std::fs::remove_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
            }
            let scored = predict::mixed(&exp.data.root, &bgs, &o, &out_dir, c.score, c.classes)?;
            if let Some((b, scorer)) = &baseline {
                // The same soundscapes (mixing is deterministic in its options), scored by the
                // baseline on the candidate's classes.
                let b_dir = dir.join(format!("eval-{name}-baseline"));
                if b_dir.exists() {
                    std::fs::remove_dir_all(&b_dir).map_err(|e| Error::io(&b_dir, e))?;
                }
                let score = |p: &Path| scorer.identify_path(p);
                let theirs = predict::mixed(&exp.data.root, &bgs, &o, &b_dir, &score, c.classes)?;
                let ours = evaluate::macro_auc(&scored, c.species)?;
                let base = evaluate::macro_auc(&theirs, c.species)?;
                match (ours, base) {
                    (Some(ours), Some(base)) => {
                        tracker.log_metric(
                            &format!("baseline_{name}_macro_auc"),
                            base,
                            c.epochs,
                        )?;
                        log(&format!(
                            "{name}: macro ROC-AUC {ours:.4}, baseline {} {base:.4}",
                            b.label
                        ));
                        if ours < base - b.max_drop {
                            baseline_reasons.push(format!(
                                "{name}: macro ROC-AUC {ours:.4} is more than {} below the baseline's {base:.4} ({})",
                                b.max_drop, b.label
                            ));
                        }
                    }
                    _ => baseline_reasons.push(format!(
                        "{name}: no positive labels, nothing to compare with the baseline"
                    )),
                }
            }
            if name == "mixed" {
                mixed = Some(scored);
            } else {
                suites.push((name, scored));
            }
        }
    }
    let report = evaluate::report(exp, c.species, &c.valid, mixed.as_ref(), &suites)?;
    let report_json = dir.join("report.json");
    let report_html = dir.join("report.html");
    evaluate::write(&report, &report_json, &report_html)?;
    let window_scores =
        predict::write_window_scores(dir, c.species, &c.valid, mixed.as_ref(), &suites)?;
    let metrics = evaluate::headline(&report);
    for (k, v) in &metrics {
        tracker.log_metric(k, *v, c.epochs)?;
    }
    tracker.log_metric("train_seconds", c.train_s, c.epochs)?;

    // Gate and registry.
    let mut decision = evaluate::gate(exp, &report);
    if !baseline_reasons.is_empty() {
        decision.0 = false;
        decision.1.extend(baseline_reasons);
    }
    tracker.set_tag("quality_gate", if decision.0 { "passed" } else { "failed" })?;
    tracker.log_artifact(&dir.join("experiment.toml"), "")?;
    tracker.log_artifact(&report_json, "report")?;
    tracker.log_artifact(&report_html, "report")?;
    for (f, folder) in &window_scores {
        tracker.log_artifact(f, folder)?;
    }
    // Every file of the bundle (a model bundle or a probe bundle).
    let mut files: Vec<PathBuf> = std::fs::read_dir(&c.bundle_dir)
        .map_err(|e| Error::io(&c.bundle_dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    for f in &files {
        tracker.log_artifact(f, "bundle")?;
    }
    let registered = if decision.0 {
        let v = crate::registry::register(
            &opts.registry,
            &exp.model_name(),
            &c.bundle_dir,
            tracker.run_id(),
            &exp.output.alias,
        )?;
        tracker.set_tag("registered_version", &v)?;
        log(&format!(
            "registered {} version {v} as {} in {}",
            exp.model_name(),
            exp.output.alias,
            opts.registry
        ));
        Some(v)
    } else {
        for r in &decision.1 {
            log(&format!("quality gate: {r}"));
        }
        None
    };
    Ok(RunOutcome {
        run_dir: dir.to_path_buf(),
        bundle_dir: c.bundle_dir,
        report_json,
        report_html,
        gate_passed: decision.0,
        gate_reasons: decision.1,
        registered,
        tracking: String::new(),
        metrics,
    })
}
#[cfg(feature = "birdnet")]
fn probe_run(
    opts: &RunOptions,
    exp: &Experiment,
    dir: &Path,
    tracker: &mut Tracker,
    store: &Arc<crate::dataset::WindowStore>,
    species: &[Species],
    log: &mut dyn FnMut(&str),
) -> Result<RunOutcome> {
    crate::probe::run(opts, exp, dir, tracker, store, species, log)
}

#[cfg(not(feature = "birdnet"))]
fn probe_run(
    _opts: &RunOptions,
    exp: &Experiment,
    _dir: &Path,
    _tracker: &mut Tracker,
    _store: &Arc<crate::dataset::WindowStore>,
    _species: &[Species],
    _log: &mut dyn FnMut(&str),
) -> Result<RunOutcome> {
    Err(Error::Config {
        path: format!("experiment {}", exp.name),
        message: "model.probe = \"birdnet\" needs BirdNET: convert it with \
                  onnx-import/scripts/convert-birdnet.sh OUT_DIR, then \
                  SILENCIO_BIRDNET_DIR=OUT_DIR cargo run --release -p trainer --features birdnet"
            .into(),
    })
}
