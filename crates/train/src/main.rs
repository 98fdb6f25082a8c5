//! `cargo run --release -p trainer [-- --experiment experiments/<name>.toml]`: trains,
//! evaluates, gates and registers one model; see `trainer --help`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "trainer",
    version,
    about = "Train, evaluate, gate and register an El Silencio model"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args, Debug, Clone)]
struct RunArgs {
    /// Experiment file (default: the embedded demo, experiments/demo.toml).
    #[arg(long, env = "SILENCIO_EXPERIMENT")]
    experiment: Option<PathBuf>,
    /// Continue the latest unfinished run of this experiment from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Run name (default: `<experiment>-<unix time>`); with --resume, the run to continue.
    #[arg(long)]
    run_name: Option<String>,
    /// MLflow tracking URI: a directory / `file:` URI (default `mlruns`) or `http(s)://` server.
    #[arg(long, env = "MLFLOW_TRACKING_URI", default_value = "mlruns")]
    tracking_uri: String,
    /// Model registry: a directory (default `$SILENCIO_REGISTRY` or `registry`) or an MLflow
    /// server `http(s)://…`.
    #[arg(long, env = "SILENCIO_REGISTRY", default_value = "registry")]
    registry: String,
    /// Devices, comma-separated (`flex`, `cuda:0,cuda:1`, `wgpu:0`); overrides the experiment.
    #[arg(long, value_delimiter = ',')]
    devices: Vec<String>,
    /// Override the number of epochs.
    #[arg(long)]
    epochs: Option<usize>,
    /// Compare with this model on the same mixed soundscapes and suites, and fail the gate
    /// when the candidate's macro ROC-AUC is more than --max-drop below its (e.g.
    /// `registry:production`).
    #[arg(long)]
    baseline: Option<String>,
    /// Largest accepted drop below --baseline, per set.
    #[arg(long, default_value_t = 0.0)]
    max_drop: f64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit this trainer as a job to a Ray cluster (Ray Jobs REST API), follow its status and
    /// logs, and stop it on Ctrl-C.
    Submit {
        /// Ray dashboard address.
        #[arg(long, env = "RAY_ADDRESS", default_value = "http://127.0.0.1:8265")]
        ray_address: String,
        /// Entry point to run on the cluster (default: this trainer with the given arguments).
        #[arg(long)]
        entrypoint: Option<String>,
        /// Working directory shipped with the job (default: none, the cluster has the repo).
        #[arg(long)]
        working_dir: Option<String>,
        /// Return after submitting instead of following the job.
        #[arg(long)]
        no_follow: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Trains a fixed number of steps on 1, 2, 4… devices and writes the wall-time table and
    /// plot.
    Scaling {
        /// Device counts to try.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        counts: Vec<usize>,
        /// Device kind (`flex`, `cuda`, `wgpu`): `cuda` gives cuda:0..n.
        #[arg(long, default_value = "flex")]
        kind: String,
        /// Steps per run.
        #[arg(long, default_value_t = 8)]
        steps: usize,
        /// Output directory for scaling.csv / scaling.svg.
        #[arg(long, default_value = "runs/scaling")]
        out: PathBuf,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Scores every 5 s window of train_soundscapes/ (and, with --train-audio, train_audio/)
    /// with a teacher model into `<shards>/teachers/<name>/` (probabilities on the task's
    /// classes, embeddings, student features); resumable: finished recordings are skipped.
    Teach(TeachArgs),
    /// Writes a new bundle: `--bundle`'s model with site and hour priors learnt from a
    /// teacher's scores on the soundscapes (`trainer teach` output), applied wherever the
    /// bundle answers (identify, serve, watch).
    Priors {
        /// The model bundle (its classes must be the teacher store's).
        #[arg(long)]
        bundle: PathBuf,
        /// A teacher directory (`<shards>/teachers/<name>`).
        #[arg(long)]
        teacher: PathBuf,
        /// The new bundle (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Its version (default: the source's with `+priors`).
        #[arg(long)]
        version: Option<String>,
    },
    /// The continuous pipeline: retrain from production on new data and feedback, gate (not
    /// worse than production), optimise, test a staging server, register, canary on the
    /// production server, promote or roll back — one MLflow run, resumable after a kill.
    #[command(subcommand)]
    Pipeline(PipelineCommand),
}

#[derive(Subcommand, Debug)]
enum PipelineCommand {
    /// One run to its outcome (promoted, rolled back or rejected); exit status 0 unless a
    /// stage failed.
    Run(PipelineArgs),
    /// Start a run whenever enough feedback labels or recordings have arrived (thresholds in
    /// the config's `[watch]`).
    Watch {
        /// The pipeline configuration (see deploy/pipeline.toml).
        #[arg(long, default_value = "deploy/pipeline.toml")]
        config: PathBuf,
        /// Stop after this many runs (default: never).
        #[arg(long)]
        max_runs: Option<usize>,
    },
}

#[derive(clap::Args, Debug, Clone)]
struct PipelineArgs {
    /// The pipeline configuration (see deploy/pipeline.toml).
    #[arg(long, default_value = "deploy/pipeline.toml")]
    config: PathBuf,
    /// Continue the latest unfinished run (or --run-name) at its first unfinished stage.
    #[arg(long)]
    resume: bool,
    /// Run name.
    #[arg(long)]
    run_name: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
struct TeachArgs {
    /// The teacher: a bundle directory, an ensemble file, `birdnet` (BirdNET builds),
    /// `registry` or `registry:<alias or version>`.
    #[arg(long)]
    teacher: String,
    /// Take --data and --shards from this experiment (its ETL runs first when its shards are
    /// incomplete). Without it, --data and --shards, or else the embedded demo experiment.
    #[arg(long, env = "SILENCIO_EXPERIMENT")]
    experiment: Option<PathBuf>,
    /// BirdCLEF root (default: the experiment's, else datasets/demo/birdclef).
    #[arg(long)]
    data: Option<PathBuf>,
    /// ETL output whose manifest gives the student's recipe (default: the experiment's, else
    /// demo-shards).
    #[arg(long)]
    shards: Option<PathBuf>,
    /// Teacher directory name (default: the spec, sanitised: `registry-production`).
    #[arg(long)]
    name: Option<String>,
    /// Also score train_audio/.
    #[arg(long)]
    train_audio: bool,
    /// Registry root that `registry` specs refer to.
    #[arg(long, env = "SILENCIO_REGISTRY", default_value = "registry")]
    registry: PathBuf,
    /// Compute device: flex, wgpu[:N], cuda[:N].
    #[arg(long, env = "SILENCIO_DEVICE", default_value = "flex")]
    device: String,
    /// Score at most this many recordings now.
    #[arg(long)]
    limit: Option<usize>,
}

fn teach_options(a: TeachArgs) -> Result<trainer::teach::TeachOptions> {
    use trainer::teacher::RecordingSet;
    // With no paths given, the demo experiment (so its ETL can run on a fresh checkout).
    let mut exp = match &a.experiment {
        Some(p) => Some(trainer::Experiment::load(p)?),
        None if a.data.is_none() && a.shards.is_none() => Some(trainer::Experiment::demo()?),
        None => None,
    };
    let data = a.data.unwrap_or_else(|| {
        exp.as_ref().map_or_else(
            || PathBuf::from("datasets/demo/birdclef"),
            |e| e.data.root.clone(),
        )
    });
    let shards = a.shards.unwrap_or_else(|| {
        exp.as_ref()
            .map_or_else(|| PathBuf::from("demo-shards"), |e| e.data.shards.clone())
    });
    if let Some(e) = &mut exp {
        e.data.root = data.clone();
        e.data.shards = shards.clone();
    }
    let mut sets = vec![RecordingSet::Soundscapes];
    if a.train_audio {
        sets.push(RecordingSet::TrainAudio);
    }
    Ok(trainer::teach::TeachOptions {
        teacher: a.teacher,
        name: a.name,
        data,
        shards,
        sets,
        registry: a.registry,
        device: a.device,
        limit: a.limit,
        etl: exp,
    })
}

fn main() {
    if let Err(e) = real_main() {
        let kind = e
            .downcast_ref::<trainer::Error>()
            .map(|e| e.kind())
            .unwrap_or("error");
        eprintln!("error[{kind}]: {e:#}");
        std::process::exit(1);
    }
}

fn options(a: &RunArgs) -> Result<trainer::pipeline::RunOptions> {
    let mut exp = match &a.experiment {
        Some(p) => trainer::Experiment::load(p)?,
        None => trainer::Experiment::demo()?,
    };
    if !a.devices.is_empty() {
        exp.train.devices = a.devices.clone();
    }
    if let Some(e) = a.epochs {
        exp.train.epochs = e;
    }
    Ok(trainer::pipeline::RunOptions {
        experiment: exp,
        resume: a.resume,
        run_name: a.run_name.clone(),
        tracking_uri: a.tracking_uri.clone(),
        registry: a.registry.clone(),
        teacher_override: None,
        parent_run: None,
        baseline: a
            .baseline
            .as_deref()
            .map(|b| -> Result<_> {
                Ok(trainer::pipeline::Baseline {
                    spec: silencio_infer::ModelSpec::parse(b, std::path::Path::new(&a.registry))?,
                    label: b.to_string(),
                    max_drop: a.max_drop,
                })
            })
            .transpose()?,
    })
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    // BirdNET builds let model specs name `birdnet` and probes.
    #[cfg(feature = "birdnet")]
    silencio_onnx::install();
    match cli.command {
        None => {
            let opts = options(&cli.run)?;
            if trainer::rounds::is_recipe(&opts.experiment) {
                let device = opts
                    .experiment
                    .train
                    .devices
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "flex".into());
                let out = trainer::rounds::run(opts, &device, &mut |m| println!("{m}"))?;
                println!("{}", out.summary());
            } else {
                let out = trainer::pipeline::run(opts, &mut |m| println!("{m}"))?;
                println!("{}", out.summary());
                println!("model bundle: {}", out.bundle_dir.display());
            }
        }
        Some(Command::Submit {
            ray_address,
            entrypoint,
            working_dir,
            no_follow,
            run,
        }) => {
            trainer::jobs::submit(
                &ray_address,
                entrypoint,
                working_dir,
                &trainer::jobs::forwarded_args(&run_args_vec(&run)),
                !no_follow,
            )?;
        }
        Some(Command::Scaling {
            counts,
            kind,
            steps,
            out,
            run,
        }) => {
            let devices =
                trainer::scaling::device_names(&kind, counts.iter().copied().max().unwrap_or(1));
            let (_, table) = trainer::scaling::run(
                options(&run)?,
                &kind,
                &devices,
                &counts,
                steps,
                &out,
                &mut |m| println!("{m}"),
            )?;
            println!("{table}");
        }
        Some(Command::Teach(a)) => {
            let s = trainer::teach::teach(&teach_options(a)?, &mut |m| println!("{m}"))?;
            for f in &s.failed {
                eprintln!("failed: {}/{}: {}", f.set.source_dir(), f.file, f.error);
            }
            println!("{}", s.line());
        }
        Some(Command::Priors {
            bundle,
            teacher,
            out,
            version,
        }) => {
            let store = trainer::teacher::TeacherStore::open(&teacher)?;
            let version = match version {
                Some(v) => v,
                None => format!(
                    "{}+priors",
                    silencio_infer::ModelBundle::open(&bundle)?.meta().version
                ),
            };
            let device = burn::tensor::Device::default();
            let b = trainer::priors::bundle_with_priors(&bundle, &store, &out, &version, &device)?;
            println!(
                "{} with site and hour priors: {}",
                b.meta().model_version(),
                out.display()
            );
        }
        Some(Command::Pipeline(PipelineCommand::Run(a))) => {
            let opts = trainer::release::PipelineOptions {
                config: trainer::release::PipelineConfig::load(&a.config)?,
                resume: a.resume,
                run_name: a.run_name,
            };
            let (dir, outcome) = trainer::release::run(&opts, &mut |m| println!("{m}"))?;
            println!("{}", serde_json::to_string(&outcome)?);
            println!("pipeline run: {}", dir.display());
        }
        Some(Command::Pipeline(PipelineCommand::Watch { config, max_runs })) => {
            let config = trainer::release::PipelineConfig::load(&config)?;
            trainer::release::watch(&config, max_runs, &mut |m| println!("{m}"))?;
        }
    }
    Ok(())
}

/// The run arguments as trainer flags, for the job a cluster runs.
fn run_args_vec(a: &RunArgs) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(p) = &a.experiment {
        v.push("--experiment".into());
        v.push(p.display().to_string());
    }
    if a.resume {
        v.push("--resume".into());
    }
    if let Some(n) = &a.run_name {
        v.push("--run-name".into());
        v.push(n.clone());
    }
    v.push("--tracking-uri".into());
    v.push(a.tracking_uri.clone());
    v.push("--registry".into());
    v.push(a.registry.clone());
    if !a.devices.is_empty() {
        v.push("--devices".into());
        v.push(a.devices.join(","));
    }
    if let Some(e) = a.epochs {
        v.push("--epochs".into());
        v.push(e.to_string());
    }
    v
}
