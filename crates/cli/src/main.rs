//! `silencio`: the command line of El Silencio Acoustic Explorer. Thin: every command parses
//! its flags and calls a library crate.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use silencio_audio::{DecodeOptions, FeatureConfig, RECIPES};

mod compare;
mod dashboard;
mod eval;
mod feedback;
mod health;
mod loadgen;
mod models;
mod progress;
mod serve;
mod watch;

/// An error the CLI raises itself (a check no library makes), with its `error[kind]`.
#[derive(Debug)]
pub(crate) struct Failure {
    kind: &'static str,
    message: String,
}

impl Failure {
    pub(crate) fn error(kind: &'static str, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(Self {
            kind,
            message: message.into(),
        })
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The kind of a silencio-eval error (that crate has no `kind()` of its own).
#[derive(Parser)]
#[command(name = "silencio", version, about = "El Silencio Acoustic Explorer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a recording's container, codec, sample rate, channels and duration.
    Info {
        /// Audio file (WAV, OGG, FLAC, MP3, M4A/MP4).
        audio: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Longest accepted recording in seconds.
        #[arg(long, env = "SILENCIO_MAX_DURATION_S", default_value_t = 3600.0)]
        max_duration_s: f64,
    },
    /// Write the log-mel windows the models see as float32 .npy `[windows, mels, frames]`.
    Features {
        /// Audio file (WAV, OGG, FLAC, MP3, M4A/MP4).
        audio: PathBuf,
        /// Feature recipe.
        #[arg(long, default_value = "birdclef", value_parser = clap::builder::PossibleValuesParser::new(RECIPES))]
        recipe: String,
        /// Output .npy path (written atomically).
        #[arg(long)]
        out: PathBuf,
        /// Step between window starts in seconds (default: the window length, no overlap).
        #[arg(long)]
        hop_s: Option<f64>,
        /// Keep a short last window (zero-padded) only if it holds at least this many seconds.
        #[arg(long)]
        min_tail_s: Option<f64>,
        /// Longest accepted recording in seconds.
        #[arg(long, env = "SILENCIO_MAX_DURATION_S", default_value_t = 3600.0)]
        max_duration_s: f64,
        /// Also write the windows' start/end times as JSON next to the .npy.
        #[arg(long)]
        windows_json: Option<PathBuf>,
    },
    /// Check a BirdCLEF-layout dataset (taxonomy.csv, train.csv, train_audio/,
    /// train_soundscapes/) and report every problem; bad rows are reported, never fatal.
    Validate {
        /// Dataset root.
        #[arg(long)]
        data: PathBuf,
        /// Where to write the JSON report (default: <data>/validation_report.json).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only check that clips exist (no decoding): fast on the full 7.8 GB set.
        #[arg(long)]
        no_decode: bool,
        /// Clips shorter than this many seconds are reported.
        #[arg(long, default_value_t = 1.0)]
        min_duration_s: f64,
    },
    /// Split recordings into train/validation (multi-label iterative stratification) and
    /// initial/retrain (older 70 % / newer 30 % by catalogue number per collection).
    Split {
        /// Dataset root (taxonomy.csv, train.csv).
        #[arg(long)]
        data: PathBuf,
        /// Output CSV (filename, primary_label, collection, split, period).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        split: SplitArgs,
    },
    /// Decode every clip of a BirdCLEF-layout dataset, cut windows, compute log-mel features
    /// and write safetensors shards plus a manifest (resumable: a re-run continues after the
    /// last complete shard and gives byte-identical output).
    Etl(EtlArgs),
    /// Mix 1-minute 32 kHz soundscapes: real calls placed on real backgrounds at chosen SNRs,
    /// with the BirdCLEF solution CSV, Raven selection tables and the mixing metadata.
    Mix(MixArgs),
    /// Identify the species in a recording, per 5 s window, with a model bundle (or BirdNET).
    Identify(models::IdentifyArgs),
    /// Model bundles.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Pack several models into one ensemble (a self-contained directory), optionally
    /// registering it as a registry version.
    Ensemble(models::EnsembleArgs),
    /// Score a model on labelled soundscapes (`soundscapes/` + BirdCLEF `solution.csv`):
    /// macro ROC-AUC (the BirdCLEF metric), macro mAP, slices, report.json + report.html, and
    /// optionally a quality gate. `silencio eval compare`: two models' scores on the same
    /// windows, Δ with a bootstrap interval, the smallest detectable effect and a verdict.
    Eval(compare::EvalCli),
    /// Write a Kaggle BirdCLEF 2025 submission CSV for a directory of soundscapes, timed
    /// against Kaggle's CPU budget.
    Submission(eval::SubmissionArgs),
    /// The data and model dashboard: a web page (offline) with the dataset, sample clips,
    /// the latest evaluation, registered models and live serving figures.
    Dashboard(dashboard::DashboardArgs),
    /// Serve the identification HTTP API (batching, metrics, OpenAPI at /docs) until
    /// SIGINT/SIGTERM, then drain requests in flight.
    Serve(serve::ServeArgs),
    /// Load-test a running server: tour (5 s clips), power (1-minute uploads) and mobile
    /// (think times, aborted uploads) traffic at several concurrency levels; prints p50/p95/p99
    /// latency, throughput, errors and the server's batch-size histogram, writes JSON + CSV.
    Loadgen(loadgen::LoadgenArgs),
    /// What `silencio serve` kept for labelling: `feedback export` writes the sampled audio
    /// and a manifest joining the model's predictions with listeners' feedback.
    #[command(subcommand)]
    Feedback(feedback::FeedbackCommand),
    /// Produce field data over time: 1-minute 32 kHz OGG files cut from soundscapes, written
    /// atomically every --every, optionally with real calls overlaid (labels beside).
    Simulate(watch::SimulateArgs),
    /// Watch a folder and write one BirdCLEF submission CSV per new recording, exactly once
    /// across restarts (ledger), quarantining unreadable files.
    Watch(watch::WatchArgs),
    /// GET a URL (default: a local server's /readyz) and exit 0 on a 2xx answer, 1 otherwise,
    /// with one line saying why: the container image's health check (it has no curl).
    Healthcheck(health::HealthcheckArgs),
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Package a fresh or ImageNet/AudioSet-pretrained model with a taxonomy and recipe as an
    /// untrained bundle (a starting point for training; marked `trained: false`).
    Create(models::BundleCreateArgs),
    /// Open a bundle, check that its parts agree, and print its description.
    Check {
        /// Bundle directory.
        dir: PathBuf,
    },
    /// Write a bundle's weights again in f16 or int8 for serving, as a new bundle, and print
    /// the sizes and how far the scores moved.
    Optimise(models::BundleOptimiseArgs),
}

#[derive(clap::Args)]
struct MixArgs {
    /// BirdCLEF-layout root lending the calls (taxonomy.csv, train.csv, train_audio/), or a
    /// train.csv-format list of calls inside such a root.
    #[arg(long)]
    calls: PathBuf,
    /// Directory of background recordings (any supported format).
    #[arg(long)]
    backgrounds: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Number of 1-minute soundscapes.
    #[arg(long, default_value_t = 10)]
    minutes: usize,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// SNR range in dB, `low:high`.
    #[arg(long, default_value = "-20:10", allow_hyphen_values = true)]
    snr_db: String,
    /// Most calls in one 5 s window.
    #[arg(long, default_value_t = 4)]
    max_overlap: usize,
    /// Share of windows with background only.
    #[arg(long, default_value_t = 0.25)]
    background_only: f64,
    /// Recordings that lend calls: `valid` (held out of training; for test sets), `train`,
    /// or `all` (demos only).
    #[arg(long, default_value = "valid", value_parser = ["valid", "train", "all"])]
    pool: String,
    /// Validation share of the split (use the ETL's value so the held-out set matches).
    #[arg(long, default_value_t = 0.2)]
    valid_fraction: f64,
    /// Seed of the split (use the ETL's value).
    #[arg(long, default_value_t = 0)]
    split_seed: u64,
    /// Take the split from this table (`silencio split`'s CSV) instead of recomputing it.
    #[arg(long)]
    splits: Option<PathBuf>,
}

/// How recordings are split; `split` and `etl` share them so that their splits agree.
#[derive(clap::Args)]
struct SplitArgs {
    /// Share of recordings held out for validation.
    #[arg(long, default_value_t = 0.2)]
    valid_fraction: f64,
    /// Share of each collection, oldest first, for initial training.
    #[arg(long, default_value_t = 0.7)]
    initial_fraction: f64,
    /// Seed of the stratification's tie-breaks.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(clap::Args)]
struct EtlArgs {
    /// Dataset root: a path, file://, or s3://bucket/prefix (taxonomy.csv, train.csv,
    /// train_audio/).
    #[arg(long)]
    data: String,
    /// Output location: a path, file:// or s3://bucket/prefix (AWS_* variables for S3).
    #[arg(long)]
    out: String,
    /// Feature recipe.
    #[arg(long, default_value = "birdclef", value_parser = clap::builder::PossibleValuesParser::new(RECIPES))]
    recipe: String,
    /// Storage type of the features.
    #[arg(long, default_value = "f16", value_parser = ["f16", "f32"])]
    dtype: String,
    /// Target size of each shard in MB (MiB).
    #[arg(long, default_value_t = 256.0)]
    shard_mb: f64,
    /// Keep at most this many windows per clip, the first ones (0 = all).
    #[arg(long, default_value_t = 0)]
    max_windows_per_clip: usize,
    /// Target value of secondary labels (primary labels are 1.0).
    #[arg(long, default_value_t = 0.5)]
    secondary_weight: f32,
    #[command(flatten)]
    split: SplitArgs,
    /// Longest clip decoded, in seconds (longer clips are skipped and reported).
    #[arg(long, env = "SILENCIO_MAX_DURATION_S", default_value_t = 3600.0)]
    max_duration_s: f64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Clips per decoding batch (0: 64); a batch also closes at 8 MiB of encoded audio.
    #[arg(long, default_value_t = 0)]
    clips_in_flight: usize,
    /// Progress: a bar on a terminal, JSON lines on stdout otherwise.
    #[arg(long, default_value = "auto", value_parser = ["auto", "bar", "json", "none"])]
    progress: String,
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Identify(a) => models::identify(a)?,
        Command::Bundle(BundleCommand::Create(a)) => models::bundle_create(a)?,
        Command::Bundle(BundleCommand::Optimise(a)) => models::bundle_optimise(a)?,
        Command::Ensemble(a) => models::ensemble(a)?,
        Command::Eval(a) => match a.command {
            Some(compare::EvalCommand::Compare(c)) => compare::compare(c)?,
            None => match a.eval {
                Some(e) => eval::eval(e)?,
                // clap requires --data when no subcommand is given, so this is unreachable.
                None => return Err(Failure::error("usage", "silencio eval needs --data")),
            },
        },
        Command::Submission(a) => eval::submission(a)?,
        Command::Dashboard(a) => dashboard::dashboard(a)?,
        Command::Serve(a) => serve::serve(a)?,
        Command::Loadgen(a) => loadgen::loadgen(a)?,
        Command::Feedback(c) => feedback::feedback(c)?,
        Command::Simulate(a) => watch::simulate(a)?,
        Command::Watch(a) => watch::watch(a)?,
        Command::Healthcheck(a) => health::healthcheck(&a)?,
        Command::Bundle(BundleCommand::Check { dir }) => {
            let b = silencio_infer::ModelBundle::open(&dir)?;
            let m = b.meta();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "model_version": m.model_version(),
                    "architecture": m.model.name(),
                    "species": m.species.len(),
                    "recipe": m.features.recipe,
                    "trained": m.provenance.trained,
                    "weights_sha256": m.weights.sha256,
                    "weights_dtype": m.weights_dtype,
                }))?
            );
        }
        Command::Info {
            audio,
            json,
            max_duration_s,
        } => {
            let opts = DecodeOptions {
                target_rate: None,
                max_duration_s,
                max_input_samples: None,
            };
            let d = silencio_audio::decode_path(&audio, &opts)?;
            let i = &d.info;
            if json {
                println!("{}", serde_json::to_string_pretty(i)?);
            } else {
                println!("file:        {}", audio.display());
                println!("container:   {}", i.container);
                println!("codec:       {}", i.codec);
                println!("sample rate: {} Hz", i.sample_rate);
                println!("channels:    {}", i.channels);
                if let Some(b) = i.bits_per_sample {
                    println!("bits:        {b}");
                }
                println!("duration:    {:.3} s ({} frames)", i.duration_s, i.frames);
                if i.skipped_packets > 0 {
                    println!("skipped:     {} corrupt packets", i.skipped_packets);
                }
            }
        }
        Command::Features {
            audio,
            recipe,
            out,
            hop_s,
            min_tail_s,
            max_duration_s,
            windows_json,
        } => {
            let mut cfg = FeatureConfig::recipe(&recipe)?;
            if let Some(h) = hop_s {
                cfg.window.hop_s = h;
            }
            if let Some(m) = min_tail_s {
                cfg.window.min_tail_s = m;
            }
            let (info, f) = silencio_audio::features_from_path(&audio, &cfg, max_duration_s)?;
            silencio_audio::npy::write_f32(&out, &f.shape(), &f.data)?;
            if let Some(p) = windows_json {
                let body = serde_json::to_vec_pretty(&f.windows)?;
                silencio_audio::npy::write_atomic(&p, &body)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            let [w, m, t] = f.shape();
            eprintln!(
                "{}: {} {} Hz {} ch {:.2} s -> {} [{w}, {m}, {t}] ({recipe})",
                audio.display(),
                info.codec,
                info.sample_rate,
                info.channels,
                info.duration_s,
                out.display()
            );
        }
        Command::Validate {
            data,
            out,
            no_decode,
            min_duration_s,
        } => {
            let opts = silencio_data::ValidateOptions {
                decode: !no_decode,
                min_duration_s,
                ..Default::default()
            };
            let report = silencio_data::validate(&data, &opts)?;
            let out = out.unwrap_or_else(|| data.join("validation_report.json"));
            silencio_audio::npy::write_atomic(&out, &serde_json::to_vec_pretty(&report)?)?;
            println!("{}", report.summary());
            println!("report: {}", out.display());
        }
        Command::Split {
            data,
            out,
            split:
                SplitArgs {
                    valid_fraction,
                    initial_fraction,
                    seed,
                },
        } => {
            anyhow::ensure!(
                (0.0..1.0).contains(&valid_fraction) && (0.0..=1.0).contains(&initial_fraction),
                "fractions must lie in [0, 1)"
            );
            let taxonomy = silencio_data::Taxonomy::from_csv(&data.join("taxonomy.csv"))?;
            let (records, bad) = silencio_data::read_train_csv(&data.join("train.csv"))?;
            let table = silencio_data::split_table(
                &records,
                &taxonomy,
                valid_fraction,
                initial_fraction,
                seed,
            );
            silencio_audio::npy::write_atomic(&out, table.as_bytes())?;
            eprintln!(
                "{}: {} recordings split ({} malformed rows skipped; see `silencio validate`)",
                out.display(),
                table.lines().count() - 1,
                bad.len()
            );
        }
        Command::Etl(args) => etl(args)?,
        Command::Mix(args) => mix(args)?,
    }
    Ok(())
}

fn etl(a: EtlArgs) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let mut opts = silencio_data::EtlOptions::new(FeatureConfig::recipe(&a.recipe)?);
    opts.dtype = silencio_data::Dtype::parse(&a.dtype)?;
    anyhow::ensure!(
        a.shard_mb.is_finite() && a.shard_mb > 0.0,
        "--shard-mb must be > 0"
    );
    opts.shard_bytes = (a.shard_mb * 1_048_576.0).ceil() as u64;
    opts.max_windows_per_clip = a.max_windows_per_clip;
    opts.secondary_weight = a.secondary_weight;
    opts.valid_fraction = a.split.valid_fraction;
    opts.initial_fraction = a.split.initial_fraction;
    opts.seed = a.split.seed;
    opts.max_duration_s = a.max_duration_s;
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t.max(1))
            .build_global()
            .context("setting the thread count")?;
    }
    let data = silencio_data::Store::open(&a.data)?;
    let out = silencio_data::Store::create(&a.out)?;
    let mode = match a.progress.as_str() {
        "auto" if std::io::stderr().is_terminal() => "bar",
        "auto" => "json",
        m => m,
    };
    let mut progress = progress::EtlProgress::new(mode);
    let r = silencio_data::etl::run(&data, &out, &opts, a.clips_in_flight, &mut |e| {
        progress.event(e)
    })?;
    progress.finish(&r, &a.out);
    Ok(())
}

fn mix(a: MixArgs) -> anyhow::Result<()> {
    use silencio_data::mix::{CallPool, MixOptions};
    let (lo, hi) = a
        .snr_db
        .split_once(':')
        .and_then(|(l, h)| Some((l.trim().parse().ok()?, h.trim().parse().ok()?)))
        .context("--snr-db must look like -20:10")?;
    let opts = MixOptions {
        minutes: a.minutes,
        seed: a.seed,
        snr_db: (lo, hi),
        max_overlap: a.max_overlap,
        background_only: a.background_only,
        pool: match a.pool.as_str() {
            "train" => CallPool::Train,
            "all" => CallPool::All,
            _ => CallPool::Valid,
        },
        valid_fraction: a.valid_fraction,
        split_seed: a.split_seed,
        split_table: a.splits,
        ..MixOptions::default()
    };
    let set = silencio_data::mix::load_calls(&a.calls, &opts)?;
    let backgrounds = silencio_data::mix::load_backgrounds(&a.backgrounds)?;
    let report = silencio_data::mix::mix(&set, &backgrounds, &opts, &a.out)?;
    let with_calls = report.windows.iter().filter(|w| w.calls > 0).count();
    eprintln!(
        "{}: {} soundscape(s), {} windows ({} with calls, {} background only), {} calls placed \
         from {} recordings of {} species; {} recording(s) lent no call",
        a.out.display(),
        report.soundscapes.len(),
        report.windows.len(),
        with_calls,
        report.windows.len() - with_calls,
        report.placed.len(),
        report.calls_available,
        report.species_available,
        report.calls_skipped.len(),
    );
    Ok(())
}

fn main() -> ExitCode {
    // Model specs may name BirdNET and its probes (loaded by silencio-onnx).
    silencio_onnx::install();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, with the typed kind first when a library (or the CLI's own checks) raised it.
            let kind = if let Some(f) = e.downcast_ref::<Failure>() {
                f.kind
            } else if let Some(v) = e.downcast_ref::<silencio_eval::Error>() {
                v.kind()
            } else if let Some(a) = e.downcast_ref::<silencio_audio::Error>() {
                a.kind()
            } else if let Some(d) = e.downcast_ref::<silencio_data::Error>() {
                d.kind()
            } else if let Some(i) = e.downcast_ref::<silencio_infer::Error>() {
                i.kind()
            } else if let Some(m) = e.downcast_ref::<silencio_models::Error>() {
                m.kind()
            } else if let Some(d) = e.downcast_ref::<silencio_dashboard::Error>() {
                d.kind()
            } else if let Some(s) = e.downcast_ref::<silencio_server::Error>() {
                s.kind()
            } else {
                "error"
            };
            eprintln!("error[{kind}]: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
