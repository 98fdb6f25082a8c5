//! End-to-end: `silencio bundle create` then `silencio identify` in every output format, the
//! registry default, and typed errors — the binary as a user runs it.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn silencio() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_silencio"));
    c.env_remove("SILENCIO_MODEL")
        .env_remove("SILENCIO_REGISTRY");
    c
}

fn ok(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn soundscape() -> PathBuf {
    let dir = root().join("datasets/demo/birdclef/train_soundscapes");
    let mut f: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    f.sort();
    f.remove(0)
}

fn create_bundle(out: &Path) {
    let o = silencio()
        .args([
            "bundle",
            "create",
            "--arch",
            "efficientnet_lite0",
            "--name",
            "demo",
            "--version",
            "1",
        ])
        .arg("--taxonomy")
        .arg(root().join("datasets/demo/birdclef/taxonomy.csv"))
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    ok(&o);
    assert!(String::from_utf8_lossy(&o.stderr).contains("untrained"));
}

#[test]
fn identify_prints_json_csv_raven_and_audacity_for_a_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("bundle");
    create_bundle(&bundle);
    let check: serde_json::Value = serde_json::from_str(&ok(&silencio()
        .args(["bundle", "check"])
        .arg(&bundle)
        .output()
        .unwrap()))
    .unwrap();
    assert_eq!(check["species"], 9);
    assert_eq!(check["trained"], false);

    let run = |format: &str| {
        let o = silencio()
            .arg("identify")
            .arg(soundscape())
            .arg("--model")
            .arg(&bundle)
            .args(["--top-k", "3", "--format", format])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            err.contains("untrained"),
            "the untrained bundle is flagged: {err}"
        );
        ok(&o)
    };
    let j: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(j["model_version"], "demo@1");
    let windows = j["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 12);
    assert_eq!(windows[11]["start_s"], 55.0);
    assert_eq!(windows[11]["end_s"], 60.0);
    let taxonomy =
        std::fs::read_to_string(root().join("datasets/demo/birdclef/taxonomy.csv")).unwrap();
    for w in windows {
        let sp = w["species"].as_array().unwrap();
        assert_eq!(sp.len(), 3);
        let scores: Vec<f64> = sp.iter().map(|s| s["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|p| p[0] >= p[1]));
        for s in sp {
            assert!(taxonomy.contains(s["code"].as_str().unwrap()));
            assert!(!s["scientific_name"].as_str().unwrap().is_empty());
            assert!(!s["class_name"].as_str().unwrap().is_empty());
        }
    }
    let csv = run("csv");
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    assert_eq!(&r.headers().unwrap()[0], "Start (s)");
    assert_eq!(r.records().count(), 36);
    let raven = run("raven");
    assert!(raven.starts_with("Selection\tView\tChannel\tBegin Time (s)"));
    assert_eq!(raven.lines().count(), 37);
    let aud = run("audacity");
    assert_eq!(aud.lines().count(), 36);
    assert!(aud.lines().all(|l| l.split('\t').count() == 4));

    // --out writes the same bytes atomically.
    let out = tmp.path().join("o.json");
    ok(&silencio()
        .arg("identify")
        .arg(soundscape())
        .arg("--model")
        .arg(&bundle)
        .args(["--top-k", "3", "--out"])
        .arg(&out)
        .output()
        .unwrap());
    let again: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(again, j);

    // Without --model: the registry's staging version when there is no production one.
    let reg = tmp.path().join("registry");
    std::fs::create_dir_all(reg.join("versions")).unwrap();
    std::fs::rename(&bundle, reg.join("versions/7")).unwrap();
    std::fs::write(reg.join("aliases.json"), r#"{"staging": "7"}"#).unwrap();
    let o = silencio()
        .arg("identify")
        .arg(soundscape())
        .arg("--registry")
        .arg(&reg)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(v["windows"].as_array().unwrap().len(), 12);
    assert!(String::from_utf8_lossy(&o.stderr).contains("staging"));
}

#[test]
fn identify_stops_clearly_without_a_model_and_on_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let o = silencio()
        .arg("identify")
        .arg(soundscape())
        .arg("--registry")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error[no_model]"), "{err}");
    assert!(err.contains("--model"), "{err}");

    // A directory that is not a bundle.
    let o = silencio()
        .arg("identify")
        .arg(soundscape())
        .arg("--model")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error[bundle]"));

    // Garbage audio with a real bundle: a typed decode error, nothing printed on stdout.
    let bundle = tmp.path().join("b");
    create_bundle(&bundle);
    let junk = tmp.path().join("junk.ogg");
    std::fs::write(&junk, b"OggS but not really an ogg file at all").unwrap();
    let o = silencio()
        .arg("identify")
        .arg(&junk)
        .arg("--model")
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(o.stdout.is_empty());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("error[corrupt_stream]"), "{err}");

    // BirdNET in a build without it says how to get it.
    if !cfg!(feature = "birdnet") {
        let o = silencio()
            .arg("identify")
            .arg(soundscape())
            .args(["--model", "birdnet"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("error[no_birdnet]"), "{err}");
        assert!(err.contains("convert-birdnet.sh"), "{err}");

        // So does a linear probe on BirdNET embeddings (a `birdnet-probe` experiment's bundle).
        use silencio_onnx::probe::{EMBEDDING_DIM, ProbeBundle, ProbeHead, ProbeSpec};
        let probe = tmp.path().join("probe");
        ProbeBundle::write(
            &probe,
            ProbeSpec {
                name: "probe".into(),
                version: "1".into(),
                species: vec![silencio_infer::Species {
                    code: "sp".into(),
                    scientific_name: "Genus species".into(),
                    common_name: "A bird".into(),
                    class_name: "Aves".into(),
                }],
                provenance: Default::default(),
            },
            &ProbeHead {
                weight: vec![0.0; EMBEDDING_DIM],
                bias: vec![0.0],
            },
        )
        .unwrap();
        let o = silencio()
            .arg("identify")
            .arg(soundscape())
            .arg("--model")
            .arg(&probe)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.starts_with("error[no_birdnet]"), "{err}");
        assert!(err.contains("linear probe"), "{err}");
    }
}

#[test]
fn several_models_make_a_weighted_ensemble_on_the_5_s_grid() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    create_bundle(&a);
    let run = |extra: &[&str]| {
        silencio()
            .arg("identify")
            .arg(soundscape())
            .args(["--model"])
            .arg(format!("{},{}", a.display(), a.display()))
            .args(extra)
            .output()
            .unwrap()
    };
    let single: serde_json::Value = serde_json::from_str(&ok(&silencio()
        .arg("identify")
        .arg(soundscape())
        .arg("--model")
        .arg(&a)
        .args(["--top-k", "9"])
        .output()
        .unwrap()))
    .unwrap();
    let both: serde_json::Value =
        serde_json::from_str(&ok(&run(&["--weight", "1,3", "--top-k", "9"]))).unwrap();
    assert_eq!(both["model_version"], "demo@1+demo@1");
    // The same model twice, whatever the weights, gives the model's own scores.
    let (s, b) = (&single["windows"], &both["windows"]);
    assert_eq!(b.as_array().unwrap().len(), 12);
    for (ws, wb) in s.as_array().unwrap().iter().zip(b.as_array().unwrap()) {
        for (x, y) in ws["species"]
            .as_array()
            .unwrap()
            .iter()
            .zip(wb["species"].as_array().unwrap())
        {
            assert_eq!(x["code"], y["code"]);
            let d = x["score"].as_f64().unwrap() - y["score"].as_f64().unwrap();
            assert!(d.abs() < 1e-5);
        }
    }
    let o = run(&["--weight", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--weight"));
}

/// With BirdNET built in (`--features birdnet`, `SILENCIO_BIRDNET_DIR`): a bundle and BirdNET
/// make one ensemble through the model facade, on the bundle's taxonomy and the 5 s grid, and
/// the answer is marked non-commercial (BirdNET V2.4 is CC BY-NC-SA 4.0) while the bundle's own
/// is not.
#[cfg(feature = "birdnet")]
#[test]
fn a_bundle_and_birdnet_make_one_non_commercial_ensemble() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    create_bundle(&a);
    let run = |model: String| {
        let o = silencio()
            .arg("identify")
            .arg(soundscape())
            .arg("--model")
            .arg(model)
            .args(["--top-k", "9"])
            .output()
            .unwrap();
        let j: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
        (j, String::from_utf8_lossy(&o.stderr).to_string())
    };
    let (alone, _) = run(a.display().to_string());
    assert_eq!(alone["licence_status"], "commercial");
    let (j, err) = run(format!("{},birdnet", a.display()));
    assert_eq!(j["model_version"], "demo@1+birdnet@2.4");
    assert_eq!(j["licence_status"], "non_commercial");
    assert!(
        j["licences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["id"] == "CC-BY-NC-SA-4.0"),
        "{}",
        j["licences"]
    );
    assert!(err.contains("non-commercial"), "{err}");
    let windows = j["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 12);
    for (i, w) in windows.iter().enumerate() {
        assert_eq!(w["start_s"], 5.0 * i as f64);
        assert_eq!(w["end_s"], 5.0 * (i + 1) as f64);
        // The bundle's 9 species, BirdNET's scores blended in where it knows them.
        assert_eq!(w["species"].as_array().unwrap().len(), 9);
    }
    // BirdNET moves the scores: the blend is not the bundle alone.
    let score = |j: &serde_json::Value, w: usize, code: &str| {
        j["windows"][w]["species"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["code"] == code)
            .unwrap()["score"]
            .as_f64()
            .unwrap()
    };
    let moved = (0..12)
        .map(|w| (score(&j, w, "gretit1") - score(&alone, w, "gretit1")).abs())
        .fold(0.0, f64::max);
    assert!(moved > 1e-4, "BirdNET changed nothing: {moved}");
}

#[test]
fn a_bundle_started_from_the_lite0_imagenet_weights_identifies_per_window() {
    let Some(pth) = std::env::var_os("SILENCIO_LITE0_PTH") else {
        assert!(
            std::env::var_os("SILENCIO_SKIP_LITE0").is_some(),
            "set SILENCIO_LITE0_PTH (scripts/test.sh does) or SILENCIO_SKIP_LITE0=1"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let b = tmp.path().join("lite0");
    let o = silencio()
        .args([
            "bundle",
            "create",
            "--arch",
            "efficientnet_lite0",
            "--name",
            "lite0",
            "--layout",
            "lite0-package",
        ])
        .arg("--pretrained")
        .arg(&pth)
        .arg("--taxonomy")
        .arg(root().join("datasets/demo/birdclef/taxonomy.csv"))
        .arg("--out")
        .arg(&b)
        .output()
        .unwrap();
    ok(&o);
    // 247 parameters and buffers, 49 num_batches_tracked skipped.
    assert!(String::from_utf8_lossy(&o.stderr).contains("loaded 247 tensors"));
    let j: serde_json::Value = serde_json::from_str(&ok(&silencio()
        .arg("identify")
        .arg(soundscape())
        .arg("--model")
        .arg(&b)
        .args(["--top-k", "9"])
        .output()
        .unwrap()))
    .unwrap();
    let w = j["windows"].as_array().unwrap();
    assert_eq!(w.len(), 12);
    // A real pretrained backbone sees different audio in different windows (the fresh head
    // is untrained, so the values mean nothing yet, but they must move with the input).
    let scores = |i: usize| -> Vec<f64> {
        let mut v: Vec<(String, f64)> = w[i]["species"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["code"].as_str().unwrap().to_string(),
                    s["score"].as_f64().unwrap(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|x| x.1).collect()
    };
    let spread = (1..12)
        .map(|i| {
            scores(0)
                .iter()
                .zip(scores(i))
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max)
        })
        .fold(0.0, f64::max);
    assert!(spread > 1e-3, "windows score alike: {spread}");
}

/// The location filter end to end: `bundle create --location-from` learns ranges from a
/// `train.csv`, and `identify --lat --lon` removes the species not expected there, saying so.
#[test]
fn identify_filters_species_by_where_the_recording_was_made() {
    let tmp = tempfile::tempdir().unwrap();
    let taxonomy = root().join("datasets/demo/birdclef/taxonomy.csv");
    let codes: Vec<String> = std::fs::read_to_string(&taxonomy)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_string())
        .collect();
    let (here, there) = (&codes[0], &codes[1]);
    let csv = tmp.path().join("train.csv");
    std::fs::write(
        &csv,
        format!(
            "primary_label,secondary_labels,type,filename,collection,rating,url,latitude,longitude,scientific_name,common_name,author,license\n\
             {here},[],[],{here}/1.ogg,XC,5,,6.8,-74.3,A a,A,x,CC0-1.0\n\
             {there},[],[],{there}/1.ogg,XC,5,,52.5,13.4,B b,B,x,CC0-1.0\n"
        ),
    )
    .unwrap();
    let bundle = tmp.path().join("b");
    let o = silencio()
        .args([
            "bundle",
            "create",
            "--arch",
            "efficientnet_lite0",
            "--name",
            "loc",
        ])
        .arg("--taxonomy")
        .arg(&taxonomy)
        .arg("--location-from")
        .arg(&csv)
        .arg("--out")
        .arg(&bundle)
        .output()
        .unwrap();
    ok(&o);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("location filter: 2 of"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let run = |place: &[&str]| -> serde_json::Value {
        serde_json::from_str(&ok(&silencio()
            .arg("identify")
            .arg(soundscape())
            .arg("--model")
            .arg(&bundle)
            .args(["--top-k", "100"])
            .args(place)
            .output()
            .unwrap()))
        .unwrap()
    };
    let score = |j: &serde_json::Value, code: &str| {
        j["windows"][0]["species"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["code"] == code)
            .map(|s| s["score"].as_f64().unwrap())
            .unwrap()
    };
    let plain = run(&[]);
    assert!(plain.get("location").is_none());
    let reserve = run(&["--lat", "6.72", "--lon", "-74.26", "--date", "2025-03-01"]);
    assert_eq!(reserve["location"]["removed"], serde_json::json!([there]));
    assert_eq!(reserve["location"]["week"], 9);
    assert_eq!(score(&reserve, there), 0.0);
    assert_eq!(score(&reserve, here), score(&plain, here));
    let berlin = run(&["--lat", "52.52", "--lon", "13.40"]);
    assert_eq!(berlin["location"]["removed"], serde_json::json!([here]));
    assert_eq!(score(&berlin, there), score(&plain, there));
    // A bad place is a typed error.
    let o = silencio()
        .arg("identify")
        .arg(soundscape())
        .arg("--model")
        .arg(&bundle)
        .args(["--lat", "123", "--lon", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("error[bad_place]"), "{err}");
}

/// In a BirdNET build an ensemble with a BirdNET member and no ranges of its own filters by
/// BirdNET's range model: the Black-capped Chickadee (North America) and the Great Tit
/// (Europe) trade places between Boston and Berlin; species BirdNET does not know pass.
#[cfg(feature = "birdnet")]
#[test]
fn birdnet_members_bring_birdnets_range_model() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    create_bundle(&a);
    let at = |lat: &str, lon: &str| -> serde_json::Value {
        let o = silencio()
            .arg("identify")
            .arg(soundscape())
            .arg("--model")
            .arg(format!("{},birdnet", a.display()))
            .args(["--lat", lat, "--lon", lon, "--date", "2025-05-10"])
            .output()
            .unwrap();
        serde_json::from_str(&ok(&o)).unwrap()
    };
    let removed = |j: &serde_json::Value| -> Vec<String> {
        j["location"]["removed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    };
    let berlin = at("52.52", "13.40");
    let boston = at("42.36", "-71.06");
    assert!(removed(&berlin).contains(&"bkcchi".to_string()), "{berlin}");
    assert!(
        !removed(&berlin).contains(&"gretit1".to_string()),
        "{berlin}"
    );
    assert!(
        removed(&boston).contains(&"gretit1".to_string()),
        "{boston}"
    );
    assert!(
        !removed(&boston).contains(&"bkcchi".to_string()),
        "{boston}"
    );
    assert!(
        berlin["location"]["unknown"].as_u64().unwrap() >= 1,
        "fruitfly is not a bird"
    );
}
