//! `silencio eval compare`: is model B better than model A on the same windows, by more than
//! the evaluation's noise? Thin: reading the score files, pairing, the bootstrap, the minimum
//! detectable effect and the verdict are silencio-eval's (`effect`); this module parses flags,
//! prints the lines it gets back and writes the JSON.

use std::path::PathBuf;

use clap::Subcommand as _;
use silencio_eval::effect::{self, BootstrapOptions, CompareOptions, WindowScores};

use crate::eval::EvalArgs;

/// `silencio eval`: score a model on a labelled set (its flags), or `compare` two models'
/// scores. Parsed by hand from the derived parts: a flattened `EvalArgs` would demand `--data`
/// of `compare` too.
pub struct EvalCli {
    /// `compare`, when given.
    pub command: Option<EvalCommand>,
    /// The model-scoring flags, when no subcommand is given.
    pub eval: Option<EvalArgs>,
}

impl clap::FromArgMatches for EvalCli {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        if m.subcommand().is_some() {
            return Ok(Self {
                command: Some(EvalCommand::from_arg_matches(m)?),
                eval: None,
            });
        }
        Ok(Self {
            command: None,
            eval: Some(EvalArgs::from_arg_matches(m)?),
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for EvalCli {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        EvalCommand::augment_subcommands(EvalArgs::augment_args(cmd))
            .args_conflicts_with_subcommands(true)
            .subcommand_negates_reqs(true)
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

/// Subcommands of `silencio eval`.
#[derive(clap::Subcommand)]
pub enum EvalCommand {
    /// Compare two models scored on the same windows: Δ macro ROC-AUC (B − A) with a paired
    /// cluster bootstrap (windows of one soundscape or recording move together), the seed
    /// spread of per-seed reports, the smallest detectable effect and a verdict (detected or
    /// inside the noise).
    Compare(CompareArgs),
}

/// `silencio eval compare`.
#[derive(clap::Args)]
pub struct CompareArgs {
    /// Scores of A (the baseline): a window-scores JSON (silencio.window_scores.v1: species,
    /// row_ids, clusters, labels, scores) or a Kaggle submission CSV (then --solution). With
    /// cross-validation, one file per fold, comma-separated: fold k's A and B are paired, Δ is
    /// the mean over folds and the bootstrap draws within each fold.
    #[arg(long, value_delimiter = ',', required = true)]
    pub a: Vec<PathBuf>,
    /// Scores of B (the technique), on the same windows (as many files as --a, same order).
    #[arg(long, value_delimiter = ',', required = true)]
    pub b: Vec<PathBuf>,
    /// The set's BirdCLEF solution.csv: the labels of submission CSVs (clusters are their
    /// soundscape stems); one per fold with several folds.
    #[arg(long, value_delimiter = ',')]
    pub solution: Vec<PathBuf>,
    /// Run reports (report.json) of the baseline trained with different seeds, comma-separated
    /// (at least 2): their spread is the training noise.
    #[arg(long, value_delimiter = ',')]
    pub seeds_a: Vec<PathBuf>,
    /// The same for B (optional; pooled with A's spread).
    #[arg(long, value_delimiter = ',')]
    pub seeds_b: Vec<PathBuf>,
    /// Which set of the run reports the seed values come from: valid, mixed, or a suite name.
    #[arg(long, default_value = "mixed")]
    pub set: String,
    /// Seeds per arm behind each fold's Δ (1 when A and B are single runs).
    #[arg(long, default_value_t = 1)]
    pub n_seeds: usize,
    /// Bootstrap resamples.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    /// Seed of the bootstrap's draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the full result as JSON (atomically).
    #[arg(long, default_value = "compare.json")]
    pub out: PathBuf,
}

/// Runs `silencio eval compare`.
pub fn compare(a: CompareArgs) -> anyhow::Result<()> {
    if a.a.len() != a.b.len() {
        anyhow::bail!(
            "--a names {} file(s) and --b {}: one pair per fold",
            a.a.len(),
            a.b.len()
        );
    }
    if !a.solution.is_empty() && a.solution.len() != a.a.len() {
        anyhow::bail!(
            "--solution names {} file(s) for {} fold(s): one per fold",
            a.solution.len(),
            a.a.len()
        );
    }
    let folds =
        a.a.iter()
            .zip(&a.b)
            .enumerate()
            .map(|(k, (pa, pb))| {
                let sol = a.solution.get(k).map(PathBuf::as_path);
                let wa = WindowScores::load(pa, sol)?;
                let wb = WindowScores::load(pb, sol)?;
                effect::pair(&wa, &wb)
            })
            .collect::<silencio_eval::Result<Vec<_>>>()?;
    let mut seed_values = Vec::new();
    for files in [&a.seeds_a, &a.seeds_b] {
        if files.is_empty() {
            continue;
        }
        let values = files
            .iter()
            .map(|p| effect::report_macro_auc(p, &a.set))
            .collect::<silencio_eval::Result<Vec<f64>>>()?;
        seed_values.push(values);
    }
    let c = effect::compare_folds(
        &folds,
        &CompareOptions {
            bootstrap: BootstrapOptions {
                n_resamples: a.bootstrap,
                seed: a.seed,
            },
            seed_values,
            n_seeds: a.n_seeds,
        },
    )?;
    for (k, (pa, pb)) in a.a.iter().zip(&a.b).enumerate() {
        let fold = if a.a.len() > 1 {
            format!(" (fold {k})")
        } else {
            String::new()
        };
        println!("A{fold}: {}", pa.display());
        println!("B{fold}: {}", pb.display());
    }
    for line in c.lines() {
        println!("{line}");
    }
    c.write_json(&a.out)?;
    println!("wrote {}", a.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::Parser;

    use crate::{Cli, Command, run};

    use super::EvalCommand;

    /// A submission CSV for two soundscapes of three windows; `good` ranks positives first.
    fn write_set(dir: &std::path::Path) {
        // Species x: present in S1_5, S2_10; species y: present in S1_10, S2_5, S2_15.
        std::fs::write(
            dir.join("solution.csv"),
            "row_id,x,y\nS1_5,1,0\nS1_10,0,1\nS1_15,0,0\nS2_5,0,1\nS2_10,1,0\nS2_15,0,1\n",
        )
        .unwrap();
        // A ranks by a fixed pattern unrelated to the labels; B ranks every positive first.
        std::fs::write(
            dir.join("a.csv"),
            "row_id,x,y\nS1_5,0.2,0.5\nS1_10,0.6,0.1\nS1_15,0.4,0.7\nS2_5,0.9,0.3\nS2_10,0.1,0.8\nS2_15,0.3,0.2\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("b.csv"),
            "row_id,y,x\nS1_5,0.1,0.9\nS1_10,0.9,0.1\nS1_15,0.2,0.2\nS2_5,0.8,0.1\nS2_10,0.1,0.8\nS2_15,0.7,0.3\n",
        )
        .unwrap();
        for (i, v) in [0.61, 0.64, 0.58].iter().enumerate() {
            std::fs::write(
                dir.join(format!("seed{i}.json")),
                format!(r#"{{"valid":{{"overall":{{"macro_auc":0.9}}}},"mixed":{{"overall":{{"macro_auc":{v}}}}}}}"#),
            )
            .unwrap();
        }
    }

    #[test]
    fn compare_parses_runs_and_writes_json() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_set(d);
        let p = |f: &str| d.join(f).display().to_string();
        let seeds = format!(
            "{},{},{}",
            p("seed0.json"),
            p("seed1.json"),
            p("seed2.json")
        );
        let out = p("compare.json");
        let argv = [
            "silencio",
            "eval",
            "compare",
            "--a",
            &p("a.csv"),
            "--b",
            &p("b.csv"),
            "--solution",
            &p("solution.csv"),
            "--seeds-a",
            &seeds,
            "--bootstrap",
            "200",
            "--out",
            &out,
        ];
        let cli = Cli::try_parse_from(argv).unwrap();
        assert!(matches!(
            &cli.command,
            Command::Eval(e) if matches!(e.command, Some(EvalCommand::Compare(_)))
        ));
        run(cli).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("compare.json")).unwrap()).unwrap();
        // B ranks every positive above every negative in both species: AUC 1.
        assert_eq!(v["bootstrap"]["auc_b"], 1.0);
        // A, species x: positives 0.2, 0.1 vs negatives 0.6, 0.4, 0.9, 0.3: all 8 pairs wrong,
        // AUC 0. Species y: positives 0.1, 0.3, 0.2 vs negatives 0.5, 0.7, 0.8: 0 of 9: AUC 0.
        assert_eq!(v["bootstrap"]["auc_a"], 0.0);
        assert_eq!(v["bootstrap"]["delta"], 1.0);
        assert_eq!(v["bootstrap"]["n_clusters"], 2);
        // Seeds 0.61, 0.64, 0.58: mean 0.61, deviations 0, 0.03, -0.03: sd sqrt(0.0018/2) = 0.03.
        let sd = v["seeds"]["sd"].as_f64().unwrap();
        assert!((sd - 0.03).abs() < 1e-12, "{sd}");
        assert_eq!(v["seed_noise_included"], true);
        assert!(v["mde"].as_f64().unwrap() > 0.0);
        // Every resample is Δ 1 (each soundscape alone also has A at 0 and B at 1), so SE 0 and
        // the MDE is 2.8016 · sqrt(2 · 0.03²) = 0.1189: Δ = 1 is detected.
        assert_eq!(v["bootstrap"]["se"], 0.0);
        let mde = v["mde"].as_f64().unwrap();
        assert!((mde - 2.801_585_218_112_968_3 * (2.0f64 * 0.0009).sqrt()).abs() < 1e-9);
        assert_eq!(v["verdict"], "detected");
    }

    #[test]
    fn folds_pair_file_by_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        write_set(d);
        let p = |f: &str| d.join(f).display().to_string();
        let two = |f: &str| format!("{},{}", p(f), p(f));
        let seeds = format!("{},{}", p("seed0.json"), p("seed1.json"));
        let out = p("folds.json");
        let (a, b, sol) = (two("a.csv"), two("b.csv"), two("solution.csv"));
        let argv = [
            "silencio",
            "eval",
            "compare",
            "--a",
            &a,
            "--b",
            &b,
            "--solution",
            &sol,
            "--seeds-a",
            &seeds,
            "--bootstrap",
            "50",
            "--out",
            &out,
        ];
        run(Cli::try_parse_from(argv).unwrap()).unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(d.join("folds.json")).unwrap()).unwrap();
        assert_eq!(v["n_folds"], 2);
        assert_eq!(v["folds"].as_array().unwrap().len(), 2);
        assert_eq!(v["bootstrap"]["delta"], 1.0);
        assert_eq!(v["bootstrap"]["n_clusters"], 4);
        // Seeds 0.61, 0.64: sd 0.03/sqrt(2); two folds count as two trainings per arm.
        let sd = 0.03 / 2f64.sqrt();
        let want = 2.801_585_218_112_968_3 * (2.0 * sd * sd / 2.0).sqrt();
        assert!((v["mde"].as_f64().unwrap() - want).abs() < 1e-9);

        let b1 = p("b.csv");
        let argv = [
            "silencio",
            "eval",
            "compare",
            "--a",
            &a,
            "--b",
            &b1,
            "--solution",
            &sol,
        ];
        let e = run(Cli::try_parse_from(argv).unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("one pair per fold"), "{e:#}");
    }

    #[test]
    fn plain_eval_still_needs_its_data_flag() {
        assert!(Cli::try_parse_from(["silencio", "eval"]).is_err());
        let cli = Cli::try_parse_from(["silencio", "eval", "--data", "x"]).unwrap();
        assert!(
            matches!(&cli.command, Command::Eval(e) if e.command.is_none() && e.eval.is_some())
        );
        // A CSV without its solution is refused by the library, with the flag to add.
        let dir = tempfile::tempdir().unwrap();
        write_set(dir.path());
        let a = dir.path().join("a.csv").display().to_string();
        let cli =
            Cli::try_parse_from(["silencio", "eval", "compare", "--a", &a, "--b", &a]).unwrap();
        let e = run(cli).unwrap_err();
        assert!(format!("{e:#}").contains("--solution"), "{e:#}");
    }
}
