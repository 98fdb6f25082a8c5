//! End-to-end: `silencio submission` and `silencio eval` on a soundscape set the mixer labelled
//! (`silencio mix` on the committed demo data), with a real (untrained) bundle from
//! `silencio bundle create` — the binary as a user runs it. The submission's BirdCLEF score,
//! silencio-eval's scorer on the written files and the report's macro ROC-AUC must agree; the
//! quality gate and bad solutions give typed errors.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn demo() -> PathBuf {
    root().join("datasets/demo")
}

fn silencio() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_silencio"));
    c.env_remove("SILENCIO_MODEL")
        .env_remove("SILENCIO_REGISTRY")
        .env_remove("SILENCIO_DEVICE");
    c
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn timed(what: &str, c: &mut Command) -> Output {
    let t = Instant::now();
    let o = c.output().unwrap();
    eprintln!("{what}: {:.2} s", t.elapsed().as_secs_f64());
    o
}

/// An untrained bundle of the demo taxonomy. Untrained EfficientNets score every window the
/// same (their random-init features collapse), which would make any two AUCs agree at 0.5;
/// an untrained ResNet-50's scores do vary with the input, so the agreement test uses it.
fn create_bundle(out: &Path, arch: &str) {
    ok(&timed(
        "bundle create",
        silencio()
            .args(["bundle", "create", "--arch", arch])
            .args(["--name", "demo", "--version", "1", "--taxonomy"])
            .arg(demo().join("birdclef/taxonomy.csv"))
            .arg("--out")
            .arg(out),
    ));
}

/// One labelled minute: `soundscapes/`, `solution.csv`, `windows.csv`.
fn mix(out: &Path) {
    ok(&timed(
        "mix",
        silencio()
            .arg("mix")
            .arg("--calls")
            .arg(demo().join("birdclef"))
            .arg("--backgrounds")
            .arg(demo().join("backgrounds"))
            .arg("--out")
            .arg(out)
            .args(["--minutes", "1", "--seed", "3"]),
    ));
}

fn taxonomy_codes() -> Vec<String> {
    let mut r = csv::Reader::from_path(demo().join("birdclef/taxonomy.csv")).unwrap();
    r.records().map(|x| x.unwrap()[0].to_string()).collect()
}

/// The number after `label` on the stdout line that starts with it.
fn number_after(stdout: &str, label: &str) -> f64 {
    let line = stdout
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in {stdout}"));
    line[label.len()..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn submission_score_equals_the_scorer_and_the_eval_report() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    create_bundle(&bundle, "resnet50");
    let data = tmp.path().join("mixed");
    mix(&data);
    let solution = data.join("solution.csv");

    // (a) The submission: Kaggle's layout, scored against the mixer's solution.
    let sub = tmp.path().join("out/submission.csv");
    let o = timed(
        "submission",
        silencio()
            .arg("submission")
            .arg(data.join("soundscapes"))
            .arg("--model")
            .arg(&bundle)
            .arg("--out")
            .arg(&sub)
            .arg("--score-against")
            .arg(&solution),
    );
    let stdout = ok(&o);
    let stderr = String::from_utf8_lossy(&o.stderr);
    eprintln!("{stdout}");
    assert!(stderr.contains("untrained"), "{stderr}");
    assert!(stderr.contains("[1/1] "), "per-soundscape time: {stderr}");
    assert!(stdout.contains("s per soundscape"), "{stdout}");
    assert!(stdout.contains("of Kaggle's CPU budget"), "{stdout}");

    let mut r = csv::Reader::from_path(&sub).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(String::from).collect();
    let codes = taxonomy_codes();
    assert_eq!(header[0], "row_id");
    assert_eq!(header[1..], codes[..], "species columns in taxonomy order");
    let records: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    let stems: Vec<String> = std::fs::read_dir(data.join("soundscapes"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(stems.len(), 1);
    let want: Vec<String> = (1..=12)
        .map(|i| format!("{}_{}", stems[0], 5 * i))
        .collect();
    let got: Vec<&str> = records.iter().map(|x| &x[0]).collect();
    assert_eq!(got, want);
    // The scores vary from window to window, so the agreement below is not a tie at 0.5.
    let first: Vec<&str> = records[0].iter().skip(1).collect();
    assert!(
        records
            .iter()
            .any(|r| r.iter().skip(1).collect::<Vec<_>>() != first),
        "every window scored the same"
    );
    for rec in &records {
        assert_eq!(rec.len(), codes.len() + 1);
        for v in rec.iter().skip(1) {
            let p: f64 = v.parse().unwrap();
            assert!((0.0..=1.0).contains(&p), "{v} is not a probability");
        }
    }
    let printed = number_after(&stdout, "BirdCLEF score:");
    let scorer = silencio_eval::submission::score_submission(&solution, &sub).unwrap();
    assert!(scorer.summary.n_auc_scored > 0);
    assert!(
        (printed - scorer.score).abs() < 1e-9,
        "{printed} vs {}",
        scorer.score
    );

    // (b) eval on the same data: the report's macro ROC-AUC is the same number.
    let report_dir = tmp.path().join("report");
    let o = timed(
        "eval",
        silencio()
            .arg("eval")
            .arg("--model")
            .arg(&bundle)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&report_dir),
    );
    let stdout = ok(&o);
    eprintln!("{stdout}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report_dir.join("report.json")).unwrap()).unwrap();
    let auc = report["overall"]["macro_auc"].as_f64().unwrap();
    assert!(
        (auc - scorer.score).abs() < 1e-9,
        "{auc} vs {}",
        scorer.score
    );
    assert_eq!(
        report["overall"]["n_auc_scored"].as_u64().unwrap() as usize,
        scorer.summary.n_auc_scored
    );
    assert_eq!(report["n_rows"], 12);
    assert_eq!(report["n_species"], codes.len());
    assert!((number_after(&stdout, "macro ROC-AUC:") - auc).abs() < 1e-4);
    let ap = report["overall"]["macro_ap"].as_f64().unwrap();
    assert!((number_after(&stdout, "macro mAP:") - ap).abs() < 1e-4);
    assert!(stdout.contains("s per soundscape"), "{stdout}");
    // Slices from the stem (time of day) and from windows.csv (overlap, SNR, background).
    let dims: Vec<&str> = report["slices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["dimension"].as_str().unwrap())
        .collect();
    for d in ["class", "time_of_day", "overlap", "snr", "background"] {
        assert!(dims.contains(&d), "no {d} slice in {dims:?}");
    }
    let html = std::fs::read_to_string(report_dir.join("report.html")).unwrap();
    assert!(html.contains("demo@1"));

    // Without --model: the registry's production version; a copy of the same bundle gives the
    // same bytes.
    let reg = tmp.path().join("registry");
    registry_with(&reg, &bundle);
    let sub2 = tmp.path().join("submission2.csv");
    let o = silencio()
        .arg("submission")
        .arg(data.join("soundscapes"))
        .arg("--registry")
        .arg(&reg)
        .arg("--out")
        .arg(&sub2)
        .output()
        .unwrap();
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("production"));
    assert_eq!(std::fs::read(&sub2).unwrap(), std::fs::read(&sub).unwrap());
}

/// A registry at `reg` whose production version is a copy of `bundle`.
fn registry_with(reg: &Path, bundle: &Path) {
    let v = reg.join("versions/3");
    std::fs::create_dir_all(&v).unwrap();
    for e in std::fs::read_dir(bundle).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, v.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(
        reg.join("aliases.json"),
        r#"{"production": "3", "staging": "9"}"#,
    )
    .unwrap();
}

#[test]
fn quality_gate_fails_with_its_reason_and_the_registry_model_is_the_default() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    create_bundle(&bundle, "efficientnet_lite0");
    let data = tmp.path().join("mixed");
    mix(&data);

    // (c) The quality gate: an impossible bar fails with the reason, a trivial one passes.
    let gate = |bar: &str| {
        silencio()
            .arg("eval")
            .arg("--model")
            .arg(&bundle)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(tmp.path().join("gate"))
            .args(["--min-macro-auc", bar])
            .output()
            .unwrap()
    };
    let o = gate("1.01");
    assert_ne!(o.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("error[gate]"), "{stderr}");
    assert!(
        stderr.contains("macro ROC-AUC") && stderr.contains("< 1.010"),
        "{stderr}"
    );
    // The report is still written, so the failure can be read.
    assert!(tmp.path().join("gate/report.json").is_file());
    let stdout = ok(&gate("0.0"));
    assert!(stdout.contains("gate:           passed"), "{stdout}");

    // `--model registry` takes the registry's production version, as no --model does.
    let reg = tmp.path().join("registry");
    registry_with(&reg, &bundle);
    let o = silencio()
        .arg("eval")
        .args(["--model", "registry", "--registry"])
        .arg(&reg)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(tmp.path().join("report2"))
        .output()
        .unwrap();
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("production"));
}

/// A data directory holding one demo soundscape and the given solution text.
fn data_with_solution(dir: &Path, solution: impl Fn(&str) -> String) -> PathBuf {
    let src = demo().join("birdclef/train_soundscapes/DEMO1_20240101_060000.ogg");
    std::fs::create_dir_all(dir.join("soundscapes")).unwrap();
    std::fs::copy(&src, dir.join("soundscapes/DEMO1_20240101_060000.ogg")).unwrap();
    std::fs::write(dir.join("solution.csv"), solution("DEMO1_20240101_060000")).unwrap();
    dir.to_path_buf()
}

fn eval_err(bundle: &Path, data: &Path) -> String {
    let o = silencio()
        .arg("eval")
        .arg("--model")
        .arg(bundle)
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(data.join("report"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    // One error line, the last one (an untrained bundle's warning may come before it).
    assert_eq!(err.lines().filter(|l| l.starts_with("error[")).count(), 1);
    let last = err.lines().last().unwrap_or_default();
    assert!(last.starts_with("error["), "{err}");
    last.to_string()
}

#[test]
fn bad_solutions_and_inputs_give_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    create_bundle(&bundle, "efficientnet_lite0");
    let rows = |stem: &str, n: usize, cols: usize| {
        (1..=n)
            .map(|i| format!("{stem}_{}{}\n", 5 * i, ",0".repeat(cols)))
            .collect::<String>()
    };

    // (d) A species the model does not predict.
    let d = data_with_solution(&tmp.path().join("unknown"), |stem| {
        format!("row_id,bkcchi,notabird\n{}", rows(stem, 12, 2))
    });
    let err = eval_err(&bundle, &d);
    assert!(err.starts_with("error[unknown_species]"), "{err}");
    assert!(err.contains("notabird"), "{err}");
    assert!(!d.join("report/report.json").exists());

    // A solution row naming a soundscape that is not there.
    let d = data_with_solution(&tmp.path().join("absent"), |stem| {
        format!(
            "row_id,bkcchi\n{}{}",
            rows(stem, 12, 1),
            rows("GONE_1", 1, 1)
        )
    });
    let err = eval_err(&bundle, &d);
    assert!(
        err.starts_with("error[missing]") && err.contains("GONE_1"),
        "{err}"
    );

    // A malformed row id, and a value that is not 0/1.
    let d = data_with_solution(&tmp.path().join("rowid"), |stem| {
        format!("row_id,bkcchi\n{stem}_7,0\n")
    });
    let err = eval_err(&bundle, &d);
    assert!(
        err.starts_with("error[format]") && err.contains("_7"),
        "{err}"
    );
    let d = data_with_solution(&tmp.path().join("value"), |stem| {
        format!("row_id,bkcchi\n{stem}_5,0.5\n")
    });
    assert!(eval_err(&bundle, &d).starts_with("error[format]"));

    // Rows past the end of the (1-minute) soundscape.
    let d = data_with_solution(&tmp.path().join("long"), |stem| {
        format!("row_id,bkcchi\n{}", rows(stem, 13, 1))
    });
    let err = eval_err(&bundle, &d);
    assert!(
        err.starts_with("error[missing]") && err.contains("_65"),
        "{err}"
    );

    // No solution at all; no soundscapes for submission; no model in the registry.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = eval_err(&bundle, &empty);
    assert!(
        err.starts_with("error[missing]") && err.contains("solution.csv"),
        "{err}"
    );
    let o = silencio()
        .arg("submission")
        .arg(&empty)
        .arg("--model")
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error[missing]"));
    let o = silencio()
        .arg("submission")
        .arg(tmp.path().join("long/soundscapes"))
        .arg("--registry")
        .arg(&empty)
        .arg("--out")
        .arg(empty.join("s.csv"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error[no_model]"));
    assert!(!empty.join("s.csv").exists());
}

/// The model facade end to end: two bundles with different recipes packed and registered as an
/// ensemble version by `silencio ensemble`, then named by registry alias or by directory in
/// `identify`, `submission`, `eval` and `watch` — each tool answers with the same ensemble.
#[test]
fn an_ensemble_packs_registers_and_runs_in_every_tool() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    create_bundle(&a, "efficientnet_lite0");
    ok(&silencio()
        .args([
            "bundle",
            "create",
            "--arch",
            "efficientnet_lite0",
            "--recipe",
            "panns",
        ])
        .args(["--name", "other", "--version", "2", "--taxonomy"])
        .arg(demo().join("birdclef/taxonomy.csv"))
        .arg("--out")
        .arg(&b)
        .output()
        .unwrap());
    let (registry, packed) = (tmp.path().join("registry"), tmp.path().join("packed"));
    let stdout = ok(&silencio()
        .arg("ensemble")
        .arg("--model")
        .arg(format!("{},{}", a.display(), b.display()))
        .args([
            "--weight",
            "2,1",
            "--name",
            "pair",
            "--register",
            "--alias",
            "production",
        ])
        .arg("--registry")
        .arg(&registry)
        .arg("--out")
        .arg(&packed)
        .output()
        .unwrap());
    assert!(
        stdout.contains("registered pair version 1 (production): ensemble pair"),
        "{stdout}"
    );
    assert!(packed.join("ensemble.toml").is_file());
    assert!(registry.join("versions/1/ensemble.toml").is_file());

    // identify: the registered version and the packed directory are the same ensemble.
    let identify = |model: &str| -> serde_json::Value {
        let clip = demo().join("birdclef/train_soundscapes/DEMO1_20240101_060000.ogg");
        serde_json::from_str(&ok(&silencio()
            .arg("identify")
            .arg(clip)
            .args(["--model", model, "--top-k", "3"])
            .arg("--registry")
            .arg(&registry)
            .output()
            .unwrap()))
        .unwrap()
    };
    let reg = identify("registry:production");
    assert_eq!(reg["model_version"], "pair");
    assert_eq!(reg, identify(packed.to_str().unwrap()));
    assert_eq!(reg["licence_status"], "commercial");
    assert_eq!(reg["windows"].as_array().unwrap().len(), 12);

    // submission and eval on a mixed minute, the ensemble named by the registry default.
    let data = tmp.path().join("mixed");
    mix(&data);
    let sub = tmp.path().join("sub.csv");
    let stdout = ok(&silencio()
        .arg("submission")
        .arg(data.join("soundscapes"))
        .args(["--model", "registry", "--registry"])
        .arg(&registry)
        .arg("--out")
        .arg(&sub)
        .output()
        .unwrap());
    assert!(stdout.contains("pair"), "{stdout}");
    let rows = std::fs::read_to_string(&sub).unwrap().lines().count();
    assert_eq!(rows, 13, "a header and 12 windows");
    let stdout = ok(&silencio()
        .arg("eval")
        .arg("--model")
        .arg(&packed)
        .arg("--data")
        .arg(&data)
        .arg("--out")
        .arg(tmp.path().join("report"))
        .output()
        .unwrap());
    assert!(stdout.contains("pair"), "{stdout}");
    assert!(tmp.path().join("report/report.json").is_file());

    // watch: the same spec scores a folder.
    let (input, out) = (tmp.path().join("in"), tmp.path().join("out"));
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(
        data.join("soundscapes")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
        input.join("clip.ogg"),
    )
    .unwrap();
    let o = silencio()
        .arg("watch")
        .arg("--in")
        .arg(&input)
        .arg("--out")
        .arg(&out)
        .arg("--model")
        .arg(&packed)
        .args(["--once", "--settle", "100ms"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ledger = std::fs::read_to_string(out.join("ledger.jsonl")).unwrap();
    assert!(ledger.contains(r#""model_version":"pair""#), "{ledger}");
    assert!(out.join("clip.ogg.csv").is_file());
}
