//! The continuous pipeline behind `trainer pipeline run`: from new data and guides' feedback to
//! a promoted model, one MLflow run with one step per stage.
//!
//! 1. **data**: the serving data dir's feedback is exported and its labelled windows join the
//!    base data as training rows, its "wrong" windows as negatives for their species
//!    ([`silencio_data::feedback_rows`]);
//! 2. **train**: the experiment retrains from the registry's production model on that data,
//!    evaluated and gated as every run is, plus "not worse than production" on the same mixed
//!    soundscapes ([`crate::pipeline::Baseline`]); it is registered under the `candidate` alias;
//! 3. **optimise**: the bundle's weights stored as f16 or int8, the change of the scores on the
//!    evaluation soundscapes measured and bounded;
//! 4. **integration**: a staging `silencio serve` started from the optimised candidate answers
//!    real clips, refuses bad uploads with typed 4xx errors and exports its metrics;
//! 5. **register**: the optimised bundle becomes a registry version under `staging`;
//! 6. **canary**: the production server loads it as a canary at a share of traffic, and its
//!    error rate and latency are watched for a window;
//! 7. **release**: within bounds it is promoted (server and registry `production` alias),
//!    otherwise rolled back.
//!
//! `pipeline.json` in the run directory records each finished stage (written atomically), so a
//! killed run resumes at the first unfinished stage; release checks what the server serves
//! before it acts, so a model is never promoted twice.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use silencio_infer::WeightsDtype;

use crate::pipeline::{self, Baseline, RunOptions};
use crate::track::Tracker;
use crate::{Error, Experiment, Result};

/// Registry alias of a trained candidate before it is optimised and tested.
pub const CANDIDATE_ALIAS: &str = "candidate";
/// State file in the pipeline's run directory.
pub const STATE_FILE: &str = "pipeline.json";

fn cfg_err(path: &str, message: impl Into<String>) -> Error {
    Error::Config {
        path: path.into(),
        message: message.into(),
    }
}

/// `trainer pipeline` configuration (TOML; paths relative to the working directory, like
/// experiments).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Name of the MLflow experiment and of the runs' directory.
    #[serde(default = "default_name")]
    pub name: String,
    /// Where run directories go (`<runs>/<name>/<run>`).
    #[serde(default = "default_runs")]
    pub runs: PathBuf,
    /// MLflow tracking URI (directory, `file:` or `http(s)://`).
    #[serde(default = "default_tracking")]
    pub tracking_uri: String,
    /// The registry the production server reads (a directory).
    #[serde(default = "default_registry")]
    pub registry: PathBuf,
    /// Retraining.
    pub retrain: RetrainConfig,
    /// Serving optimisation.
    #[serde(default)]
    pub optimise: OptimiseConfig,
    /// The staging server's integration test.
    #[serde(default)]
    pub staging: StagingConfig,
    /// The production server and the canary's bounds.
    pub production: ProductionConfig,
    /// What starts a run under `trainer pipeline watch`.
    #[serde(default)]
    pub watch: WatchConfig,
}

fn default_name() -> String {
    "pipeline".into()
}
fn default_runs() -> PathBuf {
    "pipeline-runs".into()
}
fn default_tracking() -> String {
    "mlruns".into()
}
fn default_registry() -> PathBuf {
    "registry".into()
}

/// `[retrain]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrainConfig {
    /// The experiment that trains the candidate; it continues from the registry's production
    /// model when there is one.
    pub experiment: PathBuf,
    /// Data dir of the production `silencio serve` (its `samples/` and `feedback/`): labelled
    /// windows become training rows. None: train on the experiment's data only.
    #[serde(default)]
    pub feedback_dir: Option<PathBuf>,
    /// Largest accepted drop of macro ROC-AUC below production on each mixed set.
    #[serde(default)]
    pub max_drop: f64,
    /// Override the experiment's epochs.
    #[serde(default)]
    pub epochs: Option<usize>,
    /// Continue from the production model's weights (false: the experiment's own start, e.g.
    /// a new architecture; it is still compared with production).
    #[serde(default = "yes")]
    pub from_production: bool,
}

fn yes() -> bool {
    true
}

/// `[optimise]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimiseConfig {
    /// How the served weights are stored.
    #[serde(default = "default_dtype")]
    pub dtype: WeightsDtype,
    /// Largest accepted absolute change of any score on the evaluation soundscapes.
    #[serde(default = "default_max_change")]
    pub max_score_change: f32,
}

fn default_dtype() -> WeightsDtype {
    WeightsDtype::F16
}
fn default_max_change() -> f32 {
    0.02
}

impl Default for OptimiseConfig {
    fn default() -> Self {
        Self {
            dtype: default_dtype(),
            max_score_change: default_max_change(),
        }
    }
}

/// `[staging]`.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StagingConfig {
    /// The `silencio` binary (default: beside this trainer, else on PATH).
    #[serde(default)]
    pub silencio: Option<PathBuf>,
    /// Real recordings the candidate must answer (default: the experiment's soundscapes).
    #[serde(default)]
    pub clips: Vec<PathBuf>,
}

/// `[production]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductionConfig {
    /// Base URL of the production `silencio serve`.
    pub url: String,
    /// Environment variable holding its admin API key.
    #[serde(default = "default_key_env")]
    pub api_key_env: String,
    /// Share of identify traffic the canary gets.
    #[serde(default = "default_share")]
    pub share: f64,
    /// How long the canary is watched once it has answered `min_requests`.
    #[serde(default = "default_window")]
    pub window_s: f64,
    /// Requests the canary must answer before it is judged.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Longest wait for that traffic; without it the canary is rolled back.
    #[serde(default = "default_max_wait")]
    pub max_wait_s: f64,
    /// Largest share of 5xx answers during the window.
    #[serde(default = "default_error_rate")]
    pub max_error_rate: f64,
    /// Largest ratio of the canary's p95 batch inference time to the stable model's.
    #[serde(default = "default_latency_ratio")]
    pub max_latency_ratio: f64,
}

fn default_key_env() -> String {
    "SILENCIO_API_KEY".into()
}
fn default_share() -> f64 {
    0.25
}
fn default_window() -> f64 {
    60.0
}
fn default_min_requests() -> u64 {
    20
}
fn default_max_wait() -> f64 {
    1800.0
}
fn default_error_rate() -> f64 {
    0.01
}
fn default_latency_ratio() -> f64 {
    2.0
}

/// `[watch]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// New feedback entries that start a run.
    #[serde(default = "default_labels")]
    pub feedback_labels: usize,
    /// New recordings under the experiment's `train_audio/` that start a run.
    #[serde(default = "default_recordings")]
    pub recordings: usize,
    /// Seconds between looks.
    #[serde(default = "default_poll")]
    pub poll_s: f64,
}

fn default_labels() -> usize {
    50
}
fn default_recordings() -> usize {
    100
}
fn default_poll() -> f64 {
    60.0
}

impl Default for WatchConfig {
    fn default() -> Self {
        Self {
            feedback_labels: default_labels(),
            recordings: default_recordings(),
            poll_s: default_poll(),
        }
    }
}

impl PipelineConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let c: Self = toml::from_str(&text).map_err(|e| cfg_err(&p, e.to_string()))?;
        if !(0.0..=1.0).contains(&c.production.share) || c.production.share == 0.0 {
            return Err(cfg_err(&p, "production.share must be in (0, 1]"));
        }
        if c.production.window_s <= 0.0 || c.production.max_latency_ratio <= 0.0 {
            return Err(cfg_err(
                &p,
                "production.window_s and max_latency_ratio must be positive",
            ));
        }
        Ok(c)
    }
}

/// The stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Feedback export and the training root.
    Data,
    /// Retraining, evaluation and the gate.
    Train,
    /// f16 / int8 weights.
    Optimise,
    /// The staging server's test.
    Integration,
    /// A registry version under `staging`.
    Register,
    /// The canary on the production server.
    Canary,
    /// Promotion or rollback.
    Release,
}

impl Stage {
    /// Every stage in order.
    pub const ALL: [Stage; 7] = [
        Stage::Data,
        Stage::Train,
        Stage::Optimise,
        Stage::Integration,
        Stage::Register,
        Stage::Canary,
        Stage::Release,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Data => "data",
            Stage::Train => "train",
            Stage::Optimise => "optimise",
            Stage::Integration => "integration",
            Stage::Register => "register",
            Stage::Canary => "canary",
            Stage::Release => "release",
        }
    }
}

/// How a pipeline run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The candidate serves all traffic and is the registry's `production`.
    Promoted {
        /// Registry version.
        version: String,
    },
    /// The canary broke a bound and was dropped.
    RolledBack {
        /// Registry version.
        version: String,
        /// Which bounds.
        reasons: Vec<String>,
    },
    /// Stopped before serving (the gate, the optimisation bound or the integration test).
    Rejected {
        /// The stage that refused it.
        stage: Stage,
        /// Why.
        reasons: Vec<String>,
    },
}

/// One finished stage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageRecord {
    /// Which.
    pub stage: Stage,
    /// What it produced (paths, counts, measurements).
    pub detail: Value,
}

/// `pipeline.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineState {
    /// Run name.
    pub run_name: String,
    /// MLflow run id.
    pub mlflow_run_id: Option<String>,
    /// Finished stages, in order.
    pub done: Vec<StageRecord>,
    /// Set when the run ended.
    pub outcome: Option<Outcome>,
}

impl PipelineState {
    /// The record of `stage`, when it finished.
    pub fn record(&self, stage: Stage) -> Option<&Value> {
        self.done
            .iter()
            .find(|r| r.stage == stage)
            .map(|r| &r.detail)
    }
}

/// Reads a run directory's state.
pub fn read_state(dir: &Path) -> Option<PipelineState> {
    pipeline::read_json(&dir.join(STATE_FILE))
}

fn write_state(dir: &Path, s: &PipelineState) -> Result<()> {
    pipeline::write_json(&dir.join(STATE_FILE), s)
}

/// What to run.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The configuration.
    pub config: PipelineConfig,
    /// Continue the latest unfinished run (or `run_name`).
    pub resume: bool,
    /// Run name.
    pub run_name: Option<String>,
}

/// The run's directory and state: new, or the one to resume.
fn open_run(opts: &PipelineOptions) -> Result<(PathBuf, PipelineState)> {
    let base = opts.config.runs.join(&opts.config.name);
    std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
    if opts.resume {
        if let Some(found) =
            pipeline::resume_dir(&base, opts.run_name.as_deref(), read_state, |s| {
                s.outcome.is_none()
            })?
        {
            return Ok(found);
        }
        return Err(cfg_err(
            &base.display().to_string(),
            "no unfinished pipeline run to resume",
        ));
    }
    let (dir, name) =
        pipeline::new_run_dir(&base, opts.run_name.as_deref(), "run", "pipeline run")?;
    let state = PipelineState {
        run_name: name,
        mlflow_run_id: None,
        done: Vec::new(),
        outcome: None,
    };
    write_state(&dir, &state)?;
    Ok((dir, state))
}

/// Runs (or resumes) a pipeline run to its outcome.
pub fn run(opts: &PipelineOptions, log: &mut dyn FnMut(&str)) -> Result<(PathBuf, Outcome)> {
    let cfg = &opts.config;
    let (dir, mut state) = open_run(opts)?;
    let mut tracker = Tracker::open(&cfg.tracking_uri)?;
    let id = tracker.start(&cfg.name, &state.run_name, state.mlflow_run_id.as_deref())?;
    if state.mlflow_run_id.is_none() {
        state.mlflow_run_id = Some(id);
        write_state(&dir, &state)?;
        tracker.log_params(&[
            (
                "retrain.experiment".into(),
                cfg.retrain.experiment.display().to_string(),
            ),
            ("retrain.max_drop".into(), cfg.retrain.max_drop.to_string()),
            (
                "optimise.dtype".into(),
                format!("{:?}", cfg.optimise.dtype).to_lowercase(),
            ),
            ("production.url".into(), cfg.production.url.clone()),
            ("production.share".into(), cfg.production.share.to_string()),
        ])?;
    }
    log(&format!(
        "pipeline run {} in {}",
        state.run_name,
        dir.display()
    ));
    let mut ctx = Ctx {
        cfg,
        dir: dir.clone(),
        tracker,
    };
    let result = drive(&mut ctx, &mut state, log);
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            // Killed runs resume; a failed stage leaves the run unfinished for --resume too.
            let _ = ctx.tracker.set_tag("pipeline.error", &e.to_string());
            return Err(e);
        }
    };
    state.outcome = Some(outcome.clone());
    write_state(&dir, &state)?;
    let tag = match &outcome {
        Outcome::Promoted { .. } => "promoted",
        Outcome::RolledBack { .. } => "rolled_back",
        Outcome::Rejected { .. } => "rejected",
    };
    ctx.tracker.set_tag("pipeline.outcome", tag)?;
    ctx.tracker
        .log_artifact(&dir.join(STATE_FILE), "pipeline")?;
    ctx.tracker.finish(true)?;
    Ok((dir, outcome))
}

struct Ctx<'a> {
    cfg: &'a PipelineConfig,
    dir: PathBuf,
    tracker: Tracker,
}

fn detail_str(d: &Value, key: &str) -> Result<String> {
    d.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::Data {
            message: format!("{STATE_FILE}: a finished stage lacks {key:?}"),
        })
}

fn drive(
    ctx: &mut Ctx<'_>,
    state: &mut PipelineState,
    log: &mut dyn FnMut(&str),
) -> Result<Outcome> {
    for (step, stage) in Stage::ALL.into_iter().enumerate() {
        if let Some(d) = state.record(stage) {
            log(&format!("{}: done before, skipped", stage.as_str()));
            if let Some(o) = stopped(stage, d) {
                return Ok(o);
            }
            continue;
        }
        log(&format!("{}: starting", stage.as_str()));
        let t0 = Instant::now();
        let detail = match stage {
            Stage::Data => data(ctx, log)?,
            Stage::Train => train(ctx, state, log)?,
            Stage::Optimise => optimise(ctx, state, log)?,
            Stage::Integration => integration(ctx, state, log)?,
            Stage::Register => register(ctx, state, log)?,
            Stage::Canary => canary(ctx, state, log)?,
            Stage::Release => release(ctx, state, log)?,
        };
        ctx.tracker.log_metric(
            &format!("stage_{}_seconds", stage.as_str()),
            t0.elapsed().as_secs_f64(),
            step,
        )?;
        ctx.tracker
            .set_tag(&format!("stage.{}", stage.as_str()), "done")?;
        let path = ctx.dir.join(format!("stage-{}.json", stage.as_str()));
        pipeline::write_json(&path, &detail)?;
        ctx.tracker.log_artifact(&path, "pipeline")?;
        state.done.push(StageRecord {
            stage,
            detail: detail.clone(),
        });
        write_state(&ctx.dir, state)?;
        log(&format!(
            "{}: done in {:.1} s",
            stage.as_str(),
            t0.elapsed().as_secs_f64()
        ));
        if let Some(o) = stopped(stage, &detail) {
            return Ok(o);
        }
    }
    let d = state.record(Stage::Release).cloned().unwrap_or_default();
    serde_json::from_value(d["outcome"].clone()).map_err(|e| Error::Data {
        message: format!("release outcome: {e}"),
    })
}

/// The outcome when a finished stage ended the run (a refusal, or the release).
fn stopped(stage: Stage, d: &Value) -> Option<Outcome> {
    if let Some(reasons) = d.get("rejected").and_then(Value::as_array) {
        return Some(Outcome::Rejected {
            stage,
            reasons: reasons
                .iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect(),
        });
    }
    if stage == Stage::Release {
        return serde_json::from_value(d["outcome"].clone()).ok();
    }
    None
}

/// The experiment as the pipeline trains it.
fn experiment(ctx: &Ctx<'_>) -> Result<Experiment> {
    let mut exp = Experiment::load(&ctx.cfg.retrain.experiment)?;
    if let Some(e) = ctx.cfg.retrain.epochs {
        exp.train.epochs = e;
    }
    Ok(exp)
}

/// The registry's production version, if any.
fn production_version(ctx: &Ctx<'_>, model: &str) -> Option<String> {
    let reg = silencio_mlops::Registry::open(&ctx.cfg.registry.display().to_string()).ok()?;
    reg.get_by_alias(model, "production")
        .ok()
        .map(|v| v.version.to_string())
}

fn data(ctx: &mut Ctx<'_>, log: &mut dyn FnMut(&str)) -> Result<Value> {
    let exp = experiment(ctx)?;
    let Some(fb) = &ctx.cfg.retrain.feedback_dir else {
        return Ok(json!({"root": exp.data.root, "feedback": null}));
    };
    let export = ctx.dir.join("labelling");
    let root = ctx.dir.join("train-root");
    // A kill mid-stage leaves these half-built: build them again.
    for d in [&export, &root] {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
    }
    let samples = fb.join("samples");
    if !samples.is_dir() {
        log(&format!(
            "no samples in {}: training on the experiment's data",
            samples.display()
        ));
        return Ok(json!({"root": exp.data.root, "feedback": null}));
    }
    let exported = silencio_data::labelling::export(&samples, Some(&fb.join("feedback")), &export)?;
    let summary = silencio_data::feedback_rows::build_root(&exp.data.root, &export, &root)?;
    log(&format!(
        "feedback: {} samples, {} confirmed, {} corrected, {} negatives, {} skipped",
        exported.samples,
        summary.confirmed,
        summary.corrected,
        summary.negatives,
        summary.skipped.len()
    ));
    ctx.tracker
        .log_metric("feedback_labels", summary.labels() as f64, 0)?;
    ctx.tracker
        .log_metric("feedback_negatives", summary.negatives as f64, 0)?;
    Ok(json!({"root": root, "feedback": summary}))
}

fn train(ctx: &mut Ctx<'_>, state: &PipelineState, log: &mut dyn FnMut(&str)) -> Result<Value> {
    let mut exp = experiment(ctx)?;
    let data = state.record(Stage::Data).cloned().unwrap_or_default();
    let root = PathBuf::from(detail_str(&data, "root")?);
    if root != exp.data.root {
        // Other data, other features: their own shards (the ETL refuses to mix two roots).
        exp.data.shards = ctx.dir.join("shards");
        exp.data.root = root;
    }
    // Runs of the pipeline live under its run directory; the candidate is never served as is.
    exp.output.runs = ctx.dir.join("runs");
    exp.output.alias = CANDIDATE_ALIAS.into();
    let production = production_version(ctx, &exp.model_name());
    let registry = ctx.cfg.registry.display().to_string();
    let baseline = match &production {
        Some(v) => {
            if ctx.cfg.retrain.from_production {
                exp.model.from_registry = Some("production".into());
                log(&format!("retraining from production version {v}"));
            }
            Some(Baseline {
                spec: silencio_infer::ModelSpec::parse(
                    &format!("registry:{v}"),
                    &ctx.cfg.registry,
                )?,
                label: format!("production (version {v})"),
                max_drop: ctx.cfg.retrain.max_drop,
            })
        }
        None => {
            log("no production model: training the experiment from its own start");
            None
        }
    };
    let run_dir = exp.output.runs.join(&exp.name).join("train");
    let out = pipeline::run(
        RunOptions {
            experiment: exp,
            resume: run_dir.join("run.json").is_file(),
            run_name: Some("train".into()),
            tracking_uri: ctx.cfg.tracking_uri.clone(),
            registry,
            teacher_override: None,
            parent_run: Some(ctx.tracker.run_id().to_string()),
            baseline,
        },
        log,
    )?;
    let mut d = json!({
        "bundle": out.bundle_dir,
        "report": out.report_json,
        "run_dir": out.run_dir,
        "registered": out.registered,
        "production": production,
        "metrics": out.metrics,
    });
    if !out.gate_passed {
        d["rejected"] = json!(out.gate_reasons);
    }
    Ok(d)
}

fn optimise(ctx: &mut Ctx<'_>, state: &PipelineState, log: &mut dyn FnMut(&str)) -> Result<Value> {
    let t = state.record(Stage::Train).cloned().unwrap_or_default();
    let src = PathBuf::from(detail_str(&t, "bundle")?);
    let run_dir = PathBuf::from(detail_str(&t, "run_dir")?);
    let dtype = ctx.cfg.optimise.dtype;
    if dtype == WeightsDtype::F32 {
        return Ok(json!({"bundle": src, "dtype": "f32", "max_score_change": 0.0}));
    }
    let dest = ctx.dir.join("optimised");
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
    }
    let device = burn::tensor::Device::default();
    let optimised = silencio_infer::bundle::optimise(&src, &dest, dtype, &device)?;
    let bytes = |b: &silencio_infer::ModelBundle| b.meta().weights.bytes;
    let before = silencio_infer::ModelBundle::open(&src)?;
    // The scores of both on the soundscapes the candidate was evaluated on.
    let soundscapes = evaluation_soundscapes(&run_dir)?;
    let open = |dir: &Path| {
        silencio_infer::open(
            &silencio_infer::ModelSpec::Bundle(dir.to_path_buf()),
            &device,
            &Default::default(),
        )
    };
    let (a, b) = (open(&src)?, open(&dest)?);
    let mut max_change = 0f32;
    for p in &soundscapes {
        let (x, y) = (a.identify_path(p)?, b.identify_path(p)?);
        for (wx, wy) in x.windows.iter().zip(&y.windows) {
            for (sx, sy) in wx.scores.iter().zip(&wy.scores) {
                max_change = max_change.max((sx - sy).abs());
            }
        }
    }
    ctx.tracker
        .log_metric("optimise_max_score_change", f64::from(max_change), 0)?;
    ctx.tracker
        .log_metric("optimise_weights_bytes", bytes(&optimised) as f64, 0)?;
    log(&format!(
        "optimised to {dtype:?}: weights {} → {} bytes; largest score change {max_change:.2e} on {} soundscapes",
        bytes(&before),
        bytes(&optimised),
        soundscapes.len()
    ));
    let mut d = json!({
        "bundle": dest,
        "dtype": dtype,
        "bytes_before": bytes(&before),
        "bytes_after": bytes(&optimised),
        "max_score_change": max_change,
        "soundscapes": soundscapes.len(),
    });
    if max_change > ctx.cfg.optimise.max_score_change {
        d["rejected"] = json!([format!(
            "{dtype:?} weights change a score by {max_change:.4} (bound {})",
            ctx.cfg.optimise.max_score_change
        )]);
    }
    Ok(d)
}

/// The mixed soundscapes a training run evaluated on (`eval-*/` audio).
fn evaluation_soundscapes(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(run_dir)
        .map_err(|e| Error::io(run_dir, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with("eval-") || name.ends_with("-baseline") || !e.path().is_dir() {
            continue;
        }
        let dir = e.path();
        out.extend(
            crate::teach::recordings(&dir)?
                .into_iter()
                .map(|r| dir.join(r)),
        );
    }
    out.sort();
    Ok(out)
}

/// The `silencio` binary.
fn silencio_bin(cfg: &PipelineConfig) -> PathBuf {
    if let Some(p) = &cfg.staging.silencio {
        return p.clone();
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("silencio")));
    match beside {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("silencio"),
    }
}

/// A blocking HTTP client for the servers (typed errors, never a panic on a bad answer).
struct Http {
    agent: ureq::Agent,
    key: Option<String>,
}

/// An HTTP answer.
struct Answer {
    status: u16,
    body: String,
}

fn http_err(url: &str, e: impl std::fmt::Display) -> Error {
    Error::Tracking {
        message: format!("{url}: {e}"),
    }
}

impl Http {
    fn new(key: Option<String>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(120)))
            .build()
            .into();
        Self { agent, key }
    }

    fn read(
        url: &str,
        r: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Answer> {
        let mut r = r.map_err(|e| http_err(url, e))?;
        let status = r.status().as_u16();
        let mut body = String::new();
        r.body_mut()
            .as_reader()
            .read_to_string(&mut body)
            .map_err(|e| http_err(url, e))?;
        Ok(Answer { status, body })
    }

    fn get(&self, url: &str) -> Result<Answer> {
        Self::read(url, self.agent.get(url).call())
    }

    fn post(&self, url: &str, content_type: &str, body: &[u8]) -> Result<Answer> {
        let mut req = self.agent.post(url).header("content-type", content_type);
        if let Some(k) = &self.key {
            req = req.header("x-api-key", k.as_str());
        }
        Self::read(url, req.send(body))
    }

    fn post_json(&self, url: &str, body: &Value) -> Result<Answer> {
        self.post(url, "application/json", body.to_string().as_bytes())
    }
}

/// A `silencio serve` child, stopped on drop.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?;
    Ok(l.local_addr()
        .map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?
        .port())
}

fn start_staging(ctx: &Ctx<'_>, bundle: &Path, http: &Http) -> Result<Server> {
    let port = free_port()?;
    let data = ctx.dir.join("staging-data");
    let log_path = ctx.dir.join("staging.log");
    let log_file = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let err_file = log_file.try_clone().map_err(|e| Error::io(&log_path, e))?;
    let bin = silencio_bin(ctx.cfg);
    let child = Command::new(&bin)
        .arg("serve")
        .arg("--addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--model")
        .arg(bundle)
        .arg("--data-dir")
        .arg(&data)
        .arg("--registry")
        .arg(&ctx.cfg.registry)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(err_file)
        .spawn()
        .map_err(|e| {
            cfg_err(
                "staging.silencio",
                format!("cannot start {}: {e}", bin.display()),
            )
        })?;
    let mut server = Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let t0 = Instant::now();
    loop {
        if let Ok(a) = http.get(&format!("{}/readyz", server.url))
            && a.status == 200
        {
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            return Err(Error::Data {
                message: format!("the staging server exited ({status}):\n{text}"),
            });
        }
        if t0.elapsed() > Duration::from_secs(180) {
            return Err(Error::Data {
                message: format!(
                    "the staging server was not ready in 180 s (log: {})",
                    log_path.display()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn integration(
    ctx: &mut Ctx<'_>,
    state: &PipelineState,
    log: &mut dyn FnMut(&str),
) -> Result<Value> {
    let o = state.record(Stage::Optimise).cloned().unwrap_or_default();
    let bundle = PathBuf::from(detail_str(&o, "bundle")?);
    let clips = if ctx.cfg.staging.clips.is_empty() {
        let soundscapes = experiment(ctx)?.data.root.join("train_soundscapes");
        crate::teach::recordings(&soundscapes)?
            .into_iter()
            .take(4)
            .map(|r| soundscapes.join(r))
            .collect()
    } else {
        ctx.cfg.staging.clips.clone()
    };
    let http = Http::new(None);
    let server = start_staging(ctx, &bundle, &http)?;
    let mut problems = Vec::new();
    let mut answered = 0;
    let expected_version = silencio_infer::ModelBundle::open(&bundle)?
        .meta()
        .model_version();
    for c in &clips {
        let bytes = std::fs::read(c).map_err(|e| Error::io(c, e))?;
        let a = http.post(
            &format!("{}/v1/identify", server.url),
            silencio_api::audio_content_type(&c.to_string_lossy()),
            &bytes,
        )?;
        let answer = serde_json::from_str::<silencio_api::IdentifyResponse>(&a.body)
            .ok()
            .filter(|r| a.status == 200 && !r.windows.is_empty());
        match answer {
            None => problems.push(format!(
                "{}: HTTP {} without windows: {}",
                c.display(),
                a.status,
                a.body
            )),
            Some(r) if r.model_version != expected_version => problems.push(format!(
                "{}: answered by {:?}, not {expected_version}",
                c.display(),
                r.model_version
            )),
            Some(_) => answered += 1,
        }
    }
    // Bad uploads: typed client errors, and the server still answers afterwards.
    let bad: [(&str, &[u8], &str); 2] = [
        ("empty", b"", "audio/ogg"),
        ("not audio", b"this is not a recording", "audio/wav"),
    ];
    for (what, body, ct) in bad {
        let a = http.post(&format!("{}/v1/identify", server.url), ct, body)?;
        let typed = serde_json::from_str::<silencio_api::ErrorBody>(&a.body).is_ok();
        if !(400..500).contains(&a.status) || !typed {
            problems.push(format!("{what} upload: HTTP {} {}", a.status, a.body));
        }
    }
    let ready = http.get(&format!("{}/readyz", server.url))?.status;
    if ready != 200 {
        problems.push(format!("/readyz answered {ready} after the bad uploads"));
    }
    let metrics = http.get(&format!("{}/metrics", server.url))?;
    let served = silencio_prom::parse(&metrics.body)
        .map_err(|e| http_err("/metrics", e))?
        .sum("silencio_http_requests_total")
        .unwrap_or(0.0);
    if served < (clips.len() + 2) as f64 {
        problems.push(format!(
            "/metrics counts {served} requests, {} were sent",
            clips.len() + 2
        ));
    }
    drop(server);
    log(&format!(
        "integration: {answered} of {} clips answered, {} problems",
        clips.len(),
        problems.len()
    ));
    let mut d = json!({"clips": clips.len(), "answered": answered, "requests_counted": served});
    if !problems.is_empty() || clips.is_empty() {
        if clips.is_empty() {
            problems.push("no clips to test with (set staging.clips)".into());
        }
        d["rejected"] = json!(problems);
    }
    Ok(d)
}

fn register(ctx: &mut Ctx<'_>, state: &PipelineState, log: &mut dyn FnMut(&str)) -> Result<Value> {
    let o = state.record(Stage::Optimise).cloned().unwrap_or_default();
    let bundle = PathBuf::from(detail_str(&o, "bundle")?);
    let meta = silencio_infer::ModelBundle::open(&bundle)?.meta().clone();
    let v = crate::registry::register(
        &ctx.cfg.registry.display().to_string(),
        &meta.name,
        &bundle,
        ctx.tracker.run_id(),
        "staging",
    )?;
    log(&format!("registered {} version {v} as staging", meta.name));
    // What the servers call it (`name@<bundle version>`), not the registry's number.
    Ok(json!({"name": meta.name, "version": v, "model_version": meta.model_version()}))
}

/// The canary's figures at one moment.
#[derive(Debug, Clone)]
struct Snapshot {
    canary_requests: u64,
    requests: f64,
    errors: f64,
    canary_latency: Option<silencio_prom::Histogram>,
    stable_latency: Option<silencio_prom::Histogram>,
}

fn snapshot(http: &Http, url: &str, canary: &str, stable: &str) -> Result<Snapshot> {
    let canary_requests = models(http, url)?
        .into_iter()
        .find(|m| m.model_version == canary)
        .map_or(0, |m| m.requests_served);
    let text = http.get(&format!("{url}/metrics"))?.body;
    let m = silencio_prom::parse(&text).map_err(|e| http_err("/metrics", e))?;
    let by_status = m.sum_by("silencio_http_requests_total", "status");
    let requests = by_status.values().sum();
    let errors = by_status
        .iter()
        .filter(|(s, _)| s.starts_with('5'))
        .map(|(_, n)| n)
        .sum();
    let latency = |v: &str| {
        m.histogram("silencio_inference_seconds", |l| {
            l.get("model_version").map(String::as_str) == Some(v)
        })
    };
    Ok(Snapshot {
        canary_requests,
        requests,
        errors,
        canary_latency: latency(canary),
        stable_latency: latency(stable),
    })
}

/// Whether the canary stayed within bounds between two snapshots; the reasons when not.
fn judge(p: &ProductionConfig, a: &Snapshot, b: &Snapshot) -> (Value, Vec<String>) {
    let mut reasons = Vec::new();
    let requests = b.requests - a.requests;
    let errors = b.errors - a.errors;
    let error_rate = if requests > 0.0 {
        errors / requests
    } else {
        0.0
    };
    if error_rate > p.max_error_rate {
        reasons.push(format!(
            "5xx rate {error_rate:.4} > {} ({errors} of {requests} requests)",
            p.max_error_rate
        ));
    }
    let p95 =
        |x: &Option<silencio_prom::Histogram>, y: &Option<silencio_prom::Histogram>| match (x, y) {
            (Some(x), Some(y)) => y.since(x).quantile(0.95),
            (None, Some(y)) => y.quantile(0.95),
            _ => None,
        };
    let canary = p95(&a.canary_latency, &b.canary_latency);
    let stable = p95(&a.stable_latency, &b.stable_latency);
    let ratio = match (canary, stable) {
        (Some(c), Some(s)) if s > 0.0 => Some(c / s),
        _ => None,
    };
    match ratio {
        Some(r) if r > p.max_latency_ratio => reasons.push(format!(
            "p95 inference time {:.4} s is {r:.2}× the stable model's {:.4} s (bound {}×)",
            canary.unwrap_or(0.0),
            stable.unwrap_or(0.0),
            p.max_latency_ratio
        )),
        Some(_) => {}
        None => reasons
            .push("no inference timings for the canary and the stable model to compare".into()),
    }
    (
        json!({
            "requests": requests,
            "errors": errors,
            "error_rate": error_rate,
            "canary_p95_s": canary,
            "stable_p95_s": stable,
            "latency_ratio": ratio,
            "canary_requests": b.canary_requests - a.canary_requests.min(b.canary_requests),
        }),
        reasons,
    )
}

fn production_http(cfg: &PipelineConfig) -> Http {
    Http::new(std::env::var(&cfg.production.api_key_env).ok())
}

/// The models a server has loaded (`GET /v1/models`, read as the API's own types).
fn models(http: &Http, url: &str) -> Result<Vec<silencio_api::ModelInfo>> {
    let a = http.get(&format!("{url}/v1/models"))?;
    if a.status != 200 {
        return Err(http_err(
            url,
            format!("/v1/models answered {}: {}", a.status, a.body),
        ));
    }
    let list: silencio_api::ModelsList =
        serde_json::from_str(&a.body).map_err(|e| http_err(url, format!("/v1/models: {e}")))?;
    Ok(list.models)
}

/// The stable model's `model_version` on the production server.
fn stable_on(http: &Http, url: &str) -> Result<Option<String>> {
    Ok(models(http, url)?
        .into_iter()
        .find(|m| m.role == "stable")
        .map(|m| m.model_version))
}

fn canary(ctx: &mut Ctx<'_>, state: &PipelineState, log: &mut dyn FnMut(&str)) -> Result<Value> {
    let r = state.record(Stage::Register).cloned().unwrap_or_default();
    let version = detail_str(&r, "version")?;
    let canary_v = detail_str(&r, "model_version")?;
    let p = &ctx.cfg.production;
    let url = p.url.trim_end_matches('/');
    let http = production_http(ctx.cfg);
    let stable = stable_on(&http, url)?.ok_or_else(|| Error::Data {
        message: format!("{url} serves no stable model"),
    })?;
    let a = http.post_json(
        &format!("{url}/v1/admin/models"),
        &json!({"registry_version": version, "share": p.share}),
    )?;
    if a.status != 201 {
        return Err(http_err(
            url,
            format!("loading the canary answered {}: {}", a.status, a.body),
        ));
    }
    log(&format!(
        "canary {canary_v} loaded on {url} at share {} beside {stable}",
        p.share
    ));
    // Wait for traffic, then watch a window.
    let t0 = Instant::now();
    let start = snapshot(&http, url, &canary_v, &stable)?;
    loop {
        let s = snapshot(&http, url, &canary_v, &stable)?;
        if s.canary_requests >= start.canary_requests + p.min_requests {
            break;
        }
        if t0.elapsed().as_secs_f64() > p.max_wait_s {
            return Ok(json!({
                "version": version,
                "model_version": canary_v,
                "stable": stable,
                "verdict": "rollback",
                "reasons": [format!("the canary answered {} requests in {} s, fewer than {}", s.canary_requests - start.canary_requests, p.max_wait_s, p.min_requests)],
            }));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs_f64(p.window_s));
    let end = snapshot(&http, url, &canary_v, &stable)?;
    let (figures, reasons) = judge(p, &start, &end);
    for (k, v) in [
        ("canary_error_rate", &figures["error_rate"]),
        ("canary_latency_ratio", &figures["latency_ratio"]),
    ] {
        if let Some(x) = v.as_f64() {
            ctx.tracker.log_metric(k, x, 0)?;
        }
    }
    log(&format!("canary figures: {figures}"));
    Ok(json!({
        "version": version,
        "model_version": canary_v,
        "stable": stable,
        "figures": figures,
        "verdict": if reasons.is_empty() { "promote" } else { "rollback" },
        "reasons": reasons,
    }))
}

fn release(ctx: &mut Ctx<'_>, state: &PipelineState, log: &mut dyn FnMut(&str)) -> Result<Value> {
    let c = state.record(Stage::Canary).cloned().unwrap_or_default();
    let version = detail_str(&c, "version")?;
    let canary_v = detail_str(&c, "model_version")?;
    let verdict = detail_str(&c, "verdict")?;
    let url = ctx.cfg.production.url.trim_end_matches('/').to_string();
    let http = production_http(ctx.cfg);
    let reg = silencio_mlops::Registry::open(&ctx.cfg.registry.display().to_string())
        .map_err(|e| http_err("registry", e))?;
    let r = state.record(Stage::Register).cloned().unwrap_or_default();
    let name = detail_str(&r, "name")?;
    let num: u64 = version.parse().map_err(|_| Error::Data {
        message: format!("registry version {version:?} is not a number"),
    })?;
    if verdict == "promote" {
        // Never twice: after a kill between the promotion and this record, the server already
        // serves it as stable.
        if stable_on(&http, &url)?.as_deref() == Some(canary_v.as_str()) {
            log(&format!("{canary_v} already serves as stable"));
        } else {
            let a = http.post_json(&format!("{url}/v1/admin/promote"), &json!({}))?;
            if a.status != 200 {
                return Err(http_err(
                    &url,
                    format!("promote answered {}: {}", a.status, a.body),
                ));
            }
            log(&format!("promoted {canary_v} on {url}"));
        }
        reg.set_alias(&name, "production", num)
            .map_err(|e| http_err("registry", e))?;
        return Ok(json!({"outcome": Outcome::Promoted { version }}));
    }
    let reasons: Vec<String> = c["reasons"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    let canary_loaded = models(&http, &url)?
        .iter()
        .any(|m| m.role == "canary" && m.model_version == canary_v);
    if canary_loaded {
        let a = http.post_json(&format!("{url}/v1/admin/rollback"), &json!({}))?;
        if a.status != 200 {
            return Err(http_err(
                &url,
                format!("rollback answered {}: {}", a.status, a.body),
            ));
        }
    }
    log(&format!("rolled back {canary_v}: {}", reasons.join("; ")));
    Ok(json!({"outcome": Outcome::RolledBack { version, reasons }}))
}

/// What `trainer pipeline watch` counts to decide that a run is due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arrivals {
    /// Feedback entries in the serving data dir's log.
    pub feedback: usize,
    /// Recordings under the experiment's `train_audio/`.
    pub recordings: usize,
}

/// Counts what has arrived.
pub fn arrivals(cfg: &PipelineConfig) -> Result<Arrivals> {
    let exp = Experiment::load(&cfg.retrain.experiment)?;
    let feedback = match &cfg.retrain.feedback_dir {
        Some(d) => silencio_data::labelling::read_feedback_log(&d.join("feedback"))?.len(),
        None => 0,
    };
    Ok(Arrivals {
        feedback,
        recordings: crate::teach::recordings(&exp.data.root.join("train_audio"))?.len(),
    })
}

/// Whether enough has arrived since `last` (the counts at the last run).
pub fn due(w: &WatchConfig, last: Arrivals, now: Arrivals) -> bool {
    now.feedback >= last.feedback + w.feedback_labels
        || now.recordings >= last.recordings + w.recordings
}

/// `trainer pipeline watch`: resumes an unfinished run, then starts a run whenever enough has
/// arrived since the last one (counts kept in `<runs>/<name>/watch.json`, so a restarted
/// watcher does not start again for what it already trained on). Stops after `max_runs`.
pub fn watch(
    cfg: &PipelineConfig,
    max_runs: Option<usize>,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let base = cfg.runs.join(&cfg.name);
    std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
    let marks = base.join("watch.json");
    let mut runs = 0;
    let mut last = match pipeline::read_json::<Arrivals>(&marks) {
        Some(a) => a,
        None => {
            // The first look sets the baseline: what is there now was trained on already.
            let now = arrivals(cfg)?;
            pipeline::write_json(&marks, &now)?;
            now
        }
    };
    loop {
        let now = arrivals(cfg)?;
        let unfinished =
            pipeline::resume_dir(&base, None, read_state, |s| s.outcome.is_none())?.is_some();
        if unfinished || due(&cfg.watch, last, now) {
            log(&format!(
                "{}: {} feedback entries (+{}), {} recordings (+{})",
                if unfinished {
                    "resuming"
                } else {
                    "starting a run"
                },
                now.feedback,
                now.feedback.saturating_sub(last.feedback),
                now.recordings,
                now.recordings.saturating_sub(last.recordings)
            ));
            let opts = PipelineOptions {
                config: cfg.clone(),
                resume: unfinished,
                run_name: None,
            };
            let (dir, outcome) = run(&opts, log)?;
            log(&format!(
                "{}: {}",
                dir.display(),
                serde_json::to_string(&outcome).unwrap_or_default()
            ));
            last = now;
            pipeline::write_json(&marks, &last)?;
            runs += 1;
            if max_runs.is_some_and(|m| runs >= m) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_secs_f64(cfg.watch.poll_s.max(0.1)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(bounds: &[(f64, f64)]) -> silencio_prom::Histogram {
        silencio_prom::Histogram {
            count: bounds.last().map_or(0.0, |b| b.1),
            sum: 0.0,
            buckets: bounds.to_vec(),
        }
    }

    fn prod() -> ProductionConfig {
        toml::from_str("url = \"http://x\"").unwrap()
    }

    #[test]
    fn thresholds_decide_a_run() {
        let w = WatchConfig {
            feedback_labels: 3,
            recordings: 10,
            poll_s: 1.0,
        };
        let last = Arrivals {
            feedback: 5,
            recordings: 100,
        };
        assert!(!due(
            &w,
            last,
            Arrivals {
                feedback: 7,
                recordings: 109
            }
        ));
        assert!(due(
            &w,
            last,
            Arrivals {
                feedback: 8,
                recordings: 100
            }
        ));
        assert!(due(
            &w,
            last,
            Arrivals {
                feedback: 5,
                recordings: 110
            }
        ));
    }

    #[test]
    fn the_canary_is_judged_on_errors_and_latency_in_the_window() {
        let p = prod();
        // 100 requests, no 5xx; canary p95 in the 0.1 s bucket, stable in 0.1 s too.
        let fast = hist(&[(0.05, 0.0), (0.1, 10.0), (f64::INFINITY, 10.0)]);
        let a = Snapshot {
            canary_requests: 0,
            requests: 1000.0,
            errors: 3.0,
            canary_latency: None,
            stable_latency: Some(hist(&[(0.05, 0.0), (0.1, 50.0), (f64::INFINITY, 50.0)])),
        };
        let b = Snapshot {
            canary_requests: 20,
            requests: 1100.0,
            errors: 3.0,
            canary_latency: Some(fast.clone()),
            stable_latency: Some(hist(&[(0.05, 0.0), (0.1, 90.0), (f64::INFINITY, 90.0)])),
        };
        let (fig, reasons) = judge(&p, &a, &b);
        assert!(reasons.is_empty(), "{reasons:?}");
        assert_eq!(fig["requests"], 100.0);
        // Errors before the window do not count; two in it are 2 %, over the 1 % bound.
        let mut c = b.clone();
        c.errors = 5.0;
        let (_, reasons) = judge(&p, &a, &c);
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].starts_with("5xx rate 0.0200"), "{reasons:?}");
        // A canary whose batches land in the 1 s bucket is 10× slower than stable.
        let mut d = b.clone();
        d.canary_latency = Some(hist(&[(0.1, 0.0), (1.0, 10.0), (f64::INFINITY, 10.0)]));
        let (fig, reasons) = judge(&p, &a, &d);
        assert!(
            reasons.iter().any(|r| r.contains("p95 inference time")),
            "{reasons:?}"
        );
        assert!(fig["latency_ratio"].as_f64().unwrap() > 2.0);
        // No timings: no verdict of "fine".
        let mut e = b;
        e.canary_latency = None;
        assert!(!judge(&p, &a, &e).1.is_empty());
    }

    #[test]
    fn a_config_is_checked_when_read() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("p.toml");
        std::fs::write(
            &p,
            "[retrain]\nexperiment = \"e.toml\"\n[production]\nurl = \"http://x\"\nshare = 1.5\n",
        )
        .unwrap();
        assert!(
            PipelineConfig::load(&p)
                .unwrap_err()
                .to_string()
                .contains("share")
        );
        std::fs::write(
            &p,
            "[retrain]\nexperiment = \"e.toml\"\nfoo = 1\n[production]\nurl = \"http://x\"\n",
        )
        .unwrap();
        assert!(PipelineConfig::load(&p).is_err());
        std::fs::write(
            &p,
            "[retrain]\nexperiment = \"e.toml\"\n[production]\nurl = \"http://x\"\n",
        )
        .unwrap();
        let c = PipelineConfig::load(&p).unwrap();
        assert_eq!(c.optimise.dtype, WeightsDtype::F16);
        assert_eq!(c.production.share, 0.25);
    }

    #[test]
    fn the_shipped_config_reads() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/pipeline.toml");
        let c = PipelineConfig::load(&p).unwrap();
        assert_eq!(c.retrain.experiment, Path::new("experiments/demo.toml"));
        assert_eq!(c.optimise.dtype, WeightsDtype::F16);
        assert!(c.retrain.from_production);
    }

    #[test]
    fn a_refusal_or_the_release_ends_the_run() {
        let d = json!({"rejected": ["gate: too low"]});
        assert_eq!(
            stopped(Stage::Train, &d),
            Some(Outcome::Rejected {
                stage: Stage::Train,
                reasons: vec!["gate: too low".into()]
            })
        );
        assert_eq!(stopped(Stage::Optimise, &json!({"bundle": "b"})), None);
        let r = json!({"outcome": Outcome::Promoted { version: "3".into() }});
        assert_eq!(
            stopped(Stage::Release, &r),
            Some(Outcome::Promoted {
                version: "3".into()
            })
        );
    }
}
