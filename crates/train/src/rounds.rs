//! Pseudo-label rounds ("noisy student", Xie et al. 2020, "Self-training with Noisy Student
//! improves ImageNet classification"; as the BirdCLEF 2025 and 2026 winners ran it on the
//! unlabelled soundscapes): a teacher scores the soundscapes, a student trains on the labelled
//! clips plus those pseudo-labelled windows under noise (mixup, SpecAugment), and the student
//! teaches the next round.
//!
//! With `[pseudo] swap = "<experiment>"` the rounds alternate between two model families (round
//! 1 the experiment's own, round 2 the swap's, round 3 the own again, …), so no backbone is fed
//! its own labels: the 2026 write-ups report that swapping pseudo-labels between families
//! helped and re-feeding one backbone its own labels made it worse.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::experiment::{Experiment, teacher_dir};
use crate::pipeline::{self, RunOptions, RunPhase};
use crate::teach::{self, TeachOptions, TeachSummary};
use crate::teacher::RecordingSet;
use crate::track::Tracker;
use crate::{Error, Result};

/// Which experiment's model trains in a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// The experiment's own `[model]` and `[train]`.
    Own,
    /// The `[pseudo] swap` experiment's.
    Swap,
}

/// Who teaches a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeacherOf {
    /// The initial teacher (`[pseudo] teacher_model`, a model spec).
    Initial,
    /// The student trained in round `k` (1-based).
    Student(usize),
}

/// One round of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundPlan {
    /// 1-based round number.
    pub round: usize,
    /// The student's family.
    pub family: Family,
    /// Whose pseudo-labels it trains on.
    pub teacher: TeacherOf,
}

/// The rounds of a recipe: round 1 learns from the initial teacher, round k + 1 from round k's
/// student; with a swap experiment the families alternate, so each student is taught by the
/// other family.
pub fn schedule(rounds: usize, swap: bool) -> Vec<RoundPlan> {
    (1..=rounds)
        .map(|round| RoundPlan {
            round,
            family: if swap && round % 2 == 0 {
                Family::Swap
            } else {
                Family::Own
            },
            teacher: if round == 1 {
                TeacherOf::Initial
            } else {
                TeacherOf::Student(round - 1)
            },
        })
        .collect()
}

/// Whether an experiment is a recipe (teacher scoring and rounds) rather than one run: it names
/// a model to write a teacher store (`teacher_model` in `[distill]` or `[pseudo]`) or asks for
/// more than one round.
pub fn is_recipe(exp: &Experiment) -> bool {
    exp.distill
        .as_ref()
        .is_some_and(|d| d.teacher_model.is_some())
        || exp
            .pseudo
            .as_ref()
            .is_some_and(|p| p.teacher_model.is_some() || p.rounds > 1)
}

/// What a finished round left (kept in `recipe.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundRecord {
    /// 1-based round.
    pub round: usize,
    /// The student's family.
    pub family: Family,
    /// The student's experiment name.
    pub experiment: String,
    /// Its run name (an MLflow child run of the recipe's run).
    pub run_name: String,
    /// The teacher directory whose pseudo-labels it trained on.
    pub teacher_dir: PathBuf,
    /// The student's outcome (bundle, gate, registered version, metrics).
    pub outcome: pipeline::OutcomeRecord,
}

/// `recipe.json`: where a recipe is, so a killed one resumes after its last finished stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecipeState {
    /// The recipe's run name.
    pub run_name: String,
    /// Its MLflow run (the parent of the rounds' runs).
    pub mlflow_run_id: Option<String>,
    /// Teacher stores this recipe finished writing (their directories).
    pub teachers: Vec<PathBuf>,
    /// Rounds finished.
    pub rounds: Vec<RoundRecord>,
    /// Running, finished or failed.
    pub status: RunPhase,
}

/// What a recipe produced.
#[derive(Debug, Clone)]
pub struct RecipeOutcome {
    /// The recipe's directory (`recipe.json`).
    pub dir: PathBuf,
    /// Its MLflow run id.
    pub mlflow_run_id: String,
    /// The teacher runs of this invocation.
    pub teach: Vec<TeachSummary>,
    /// Every finished round, in order (resumed ones included).
    pub rounds: Vec<RoundRecord>,
    /// Why the rounds stopped before the last one, if they did.
    pub stopped: Option<String>,
}

impl RecipeOutcome {
    /// A few lines for the terminal.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "recipe {} (mlflow run {})\n",
            self.dir.display(),
            self.mlflow_run_id
        );
        for r in &self.rounds {
            let o = &r.outcome;
            let auc = o
                .metrics
                .iter()
                .filter(|(k, _)| k.ends_with("macro_auc"))
                .map(|(k, v)| format!("{k} {v:.4}"))
                .collect::<Vec<_>>()
                .join(", ");
            s.push_str(&format!(
                "round {} ({:?}, {}): {}; gate {}{}\n",
                r.round,
                r.family,
                r.experiment,
                auc,
                if o.gate_passed { "passed" } else { "failed" },
                o.registered
                    .as_deref()
                    .map(|v| format!(", registered as version {v}"))
                    .unwrap_or_default()
            ));
        }
        if let Some(why) = &self.stopped {
            s.push_str(&format!("stopped: {why}\n"));
        }
        s.trim_end().to_string()
    }
}

fn read_state(dir: &Path) -> Option<RecipeState> {
    pipeline::read_json(&dir.join("recipe.json"))
}

fn write_state(dir: &Path, s: &RecipeState) -> Result<()> {
    pipeline::write_json(&dir.join("recipe.json"), s)
}

/// The recipe's directory: `<runs>/<name>/<run name>` (new), or for `--resume` the named or
/// latest unfinished recipe.
fn recipe_dir(opts: &RunOptions) -> Result<(PathBuf, RecipeState)> {
    let exp = &opts.experiment;
    let base = exp.output.runs.join(&exp.name);
    std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
    if opts.resume {
        return pipeline::resume_dir(&base, opts.run_name.as_deref(), read_state, |s| {
            s.status != RunPhase::Finished
        })?
        .ok_or_else(|| Error::Config {
            path: base.display().to_string(),
            message: "--resume: no unfinished recipe to continue".into(),
        });
    }
    let prefix = format!("{}-recipe", exp.name);
    let (dir, name) = pipeline::new_run_dir(&base, opts.run_name.as_deref(), &prefix, "recipe")?;
    Ok((
        dir,
        RecipeState {
            run_name: name,
            mlflow_run_id: None,
            teachers: Vec::new(),
            rounds: Vec::new(),
            status: RunPhase::Running,
        },
    ))
}

/// The experiment a round trains: the recipe's own, or for the swap family the swap
/// experiment's name, model and training recipe on the recipe's data, evaluation, gate,
/// teachers and output (so both families are judged on the same sets by the same bar).
pub fn round_experiment(exp: &Experiment, family: Family) -> Result<Experiment> {
    let mut out = exp.clone();
    if family == Family::Swap {
        let path = exp
            .pseudo
            .as_ref()
            .and_then(|p| p.swap.clone())
            .ok_or_else(|| Error::Config {
                path: format!("experiment {}", exp.name),
                message: "a swap round needs [pseudo] swap".into(),
            })?;
        let swap = Experiment::load(&path)?;
        out.name = swap.name;
        out.model = swap.model;
        out.train = swap.train;
        if swap.output.model_name.is_some() {
            out.output.model_name = swap.output.model_name;
        }
    }
    Ok(out)
}

/// Runs a recipe: the teacher stores its first round needs, then each round's student as a
/// child run (evaluated, gated and registered like any candidate), each student writing the
/// next round's teacher store. A student that fails its gate teaches no one: the rounds stop.
/// Every stage is recorded in `recipe.json` when it finishes, so `resume` continues after the
/// last finished stage (a round killed mid-training resumes from its last checkpoint).
pub fn run(opts: RunOptions, device: &str, log: &mut dyn FnMut(&str)) -> Result<RecipeOutcome> {
    let exp = opts.experiment.clone();
    let (dir, mut state) = recipe_dir(&opts)?;
    log(&format!("recipe {} in {}", state.run_name, dir.display()));
    let mut tracker = Tracker::open(&opts.tracking_uri)?;
    let resumed = state.mlflow_run_id.is_some();
    let run_id = tracker.start(&exp.name, &state.run_name, state.mlflow_run_id.as_deref())?;
    state.mlflow_run_id = Some(run_id.clone());
    write_state(&dir, &state)?;
    if !resumed {
        tracker.log_params(&exp.params())?;
        tracker.log_system_tags()?;
        tracker.set_tag("recipe", "true")?;
    }
    let result = run_stages(&opts, &exp, &dir, &mut state, &mut tracker, device, log);
    state.status = if result.is_ok() {
        RunPhase::Finished
    } else {
        RunPhase::Failed
    };
    if let Err(e) = &result {
        let _ = tracker.set_tag("error", &e.to_string());
    }
    write_state(&dir, &state)?;
    tracker.finish(result.is_ok())?;
    let (teach, stopped) = result?;
    Ok(RecipeOutcome {
        dir,
        mlflow_run_id: run_id,
        teach,
        rounds: state.rounds,
        stopped,
    })
}

#[allow(clippy::too_many_arguments)]
fn teach_once(
    opts: &RunOptions,
    exp: &Experiment,
    state: &mut RecipeState,
    dir: &Path,
    spec: &str,
    name: &Path,
    sets: Vec<RecordingSet>,
    device: &str,
    log: &mut dyn FnMut(&str),
) -> Result<Option<TeachSummary>> {
    let store = teacher_dir(&exp.data.shards, name);
    if state.teachers.contains(&store) {
        return Ok(None);
    }
    // `name` is a plain name (the experiment's checks): the store is <shards>/teachers/<name>.
    let summary = teach::teach(
        &TeachOptions {
            teacher: spec.to_string(),
            name: Some(name.to_string_lossy().to_string()),
            data: exp.data.root.clone(),
            shards: exp.data.shards.clone(),
            sets,
            registry: PathBuf::from(&opts.registry),
            device: device.to_string(),
            limit: None,
            etl: Some(exp.clone()),
        },
        log,
    )?;
    log(&summary.line());
    if !summary.failed.is_empty() {
        log(&format!(
            "teacher {spec}: {} recordings could not be scored (they are left out)",
            summary.failed.len()
        ));
    }
    state.teachers.push(store);
    write_state(dir, state)?;
    Ok(Some(summary))
}

type Stages = (Vec<TeachSummary>, Option<String>);

#[allow(clippy::too_many_arguments)]
fn run_stages(
    opts: &RunOptions,
    exp: &Experiment,
    dir: &Path,
    state: &mut RecipeState,
    tracker: &mut Tracker,
    device: &str,
    log: &mut dyn FnMut(&str),
) -> Result<Stages> {
    let mut taught = Vec::new();
    // The first teachers: the distillation teacher on the labelled clips and the soundscapes,
    // the pseudo-label teacher on the soundscapes.
    if let Some(d) = &exp.distill
        && let Some(spec) = &d.teacher_model
    {
        let sets = vec![RecordingSet::TrainAudio, RecordingSet::Soundscapes];
        taught.extend(teach_once(
            opts, exp, state, dir, spec, &d.teacher, sets, device, log,
        )?);
    }
    let Some(pseudo) = &exp.pseudo else {
        // Distillation only: one student.
        let rec = round(opts, exp, state, tracker, plan_one(), None, log)?;
        state.rounds.push(rec);
        write_state(dir, state)?;
        return Ok((taught, None));
    };
    if let Some(spec) = &pseudo.teacher_model {
        let sets = vec![RecordingSet::Soundscapes];
        taught.extend(teach_once(
            opts,
            exp,
            state,
            dir,
            spec,
            &pseudo.teacher,
            sets,
            device,
            log,
        )?);
    }
    let plan = schedule(pseudo.rounds, pseudo.swap.is_some());
    for p in plan {
        if state.rounds.iter().any(|r| r.round == p.round) {
            continue;
        }
        let teacher = match p.teacher {
            TeacherOf::Initial => teacher_dir(&exp.data.shards, &pseudo.teacher),
            TeacherOf::Student(k) => {
                let prev = state
                    .rounds
                    .iter()
                    .find(|r| r.round == k)
                    .ok_or_else(|| Error::Data {
                        message: format!("round {k} has no record"),
                    })?
                    .clone();
                if !prev.outcome.gate_passed {
                    let why = format!(
                        "round {k}'s student failed its quality gate, so it teaches no one \
                         (rounds {}..{} not run)",
                        p.round, pseudo.rounds
                    );
                    log(&why);
                    tracker.set_tag("recipe_stopped", &why)?;
                    return Ok((taught, Some(why)));
                }
                let name = PathBuf::from(format!("{}-round{k}", state.run_name));
                let spec = prev.outcome.bundle_dir.display().to_string();
                let sets = vec![RecordingSet::Soundscapes];
                taught.extend(teach_once(
                    opts, exp, state, dir, &spec, &name, sets, device, log,
                )?);
                teacher_dir(&exp.data.shards, &name)
            }
        };
        let rec = round(opts, exp, state, tracker, p, Some(teacher), log)?;
        state.rounds.push(rec);
        write_state(dir, state)?;
    }
    Ok((taught, None))
}

fn plan_one() -> RoundPlan {
    RoundPlan {
        round: 1,
        family: Family::Own,
        teacher: TeacherOf::Initial,
    }
}

/// One student: a child run of the recipe's run.
#[allow(clippy::too_many_arguments)]
fn round(
    opts: &RunOptions,
    exp: &Experiment,
    state: &RecipeState,
    tracker: &mut Tracker,
    p: RoundPlan,
    pseudo_teacher: Option<PathBuf>,
    log: &mut dyn FnMut(&str),
) -> Result<RoundRecord> {
    let round_exp = round_experiment(exp, p.family)?;
    let run_name = format!("{}-round{}", state.run_name, p.round);
    let run_dir = round_exp.output.runs.join(&round_exp.name).join(&run_name);
    // A round killed after it started continues (from its last checkpoint); one that finished
    // but was not yet recorded here is read back instead of trained again.
    let outcome = match pipeline::read_outcome(&run_dir) {
        Some(o) => o,
        None => {
            log(&format!(
                "round {} ({:?} family: {}), pseudo-labels from {}",
                p.round,
                p.family,
                round_exp.name,
                pseudo_teacher
                    .as_deref()
                    .map_or("the experiment's teacher".into(), |t| t
                        .display()
                        .to_string())
            ));
            let out = pipeline::run(
                RunOptions {
                    experiment: round_exp.clone(),
                    resume: run_dir.join("run.json").is_file(),
                    run_name: Some(run_name.clone()),
                    tracking_uri: opts.tracking_uri.clone(),
                    registry: opts.registry.clone(),
                    teacher_override: pseudo_teacher.clone(),
                    parent_run: state.mlflow_run_id.clone(),
                    baseline: None,
                },
                log,
            )?;
            pipeline::OutcomeRecord::of(&out)
        }
    };
    for (k, v) in &outcome.metrics {
        tracker.log_metric(&format!("round_{k}"), *v, p.round)?;
    }
    if let Some(v) = &outcome.registered {
        tracker.set_tag(&format!("round{}_registered_version", p.round), v)?;
    }
    Ok(RoundRecord {
        round: p.round,
        family: p.family,
        experiment: round_exp.name,
        run_name,
        teacher_dir: pseudo_teacher.unwrap_or_default(),
        outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_family_feeds_each_student_to_the_next_round() {
        let plan = schedule(3, false);
        assert_eq!(plan.len(), 3);
        assert!(plan.iter().all(|p| p.family == Family::Own));
        assert_eq!(
            plan.iter().map(|p| p.teacher).collect::<Vec<_>>(),
            vec![
                TeacherOf::Initial,
                TeacherOf::Student(1),
                TeacherOf::Student(2)
            ]
        );
    }

    #[test]
    fn a_swap_alternates_families_so_no_student_learns_from_its_own_family() {
        let plan = schedule(4, true);
        assert_eq!(
            plan.iter().map(|p| p.family).collect::<Vec<_>>(),
            vec![Family::Own, Family::Swap, Family::Own, Family::Swap]
        );
        for p in &plan[1..] {
            let TeacherOf::Student(k) = p.teacher else {
                panic!("round {} is taught by the initial teacher", p.round)
            };
            assert_eq!(k, p.round - 1);
            assert_ne!(plan[k - 1].family, p.family, "round {}", p.round);
        }
        assert!(schedule(0, true).is_empty());
    }
}
