//! Bundles round-trip and refuse inconsistency; the classifier scores real audio per window;
//! ensembles pool onto one grid; outputs parse as their readers expect.
#![allow(clippy::unwrap_used)]

use silencio_infer::{
    Classifier, Ensemble, Format, ModelBundle, RenderOptions, Species, WindowScores, registry,
    render,
};

mod common;
use common::{device, small_config, soundscape, spec, species, write_bundle};

#[test]
fn a_bundle_round_trips_and_scores_real_audio_per_window() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let b = write_bundle(&dir, 6);
    assert_eq!(b.meta().model_version(), "test@1");
    assert!(b.meta().provenance.created_unix_s > 0);
    // No staging directory is left behind.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(left.len(), 1);

    let c = Classifier::load(&dir, &device()).unwrap();
    let bytes = soundscape();
    let id = c.identify(bytes.clone()).unwrap();
    // A one-minute soundscape: twelve 5 s windows.
    assert_eq!(id.windows.len(), 12);
    assert_eq!(id.audio.as_ref().unwrap().sample_rate, 32_000);
    for (i, w) in id.windows.iter().enumerate() {
        assert_eq!(w.start_s, 5.0 * i as f64);
        assert_eq!(w.end_s, w.start_s + 5.0);
        assert_eq!(w.scores.len(), 6);
        assert!(w.scores.iter().all(|s| (0.0..=1.0).contains(s)));
    }

    // The reloaded model equals the one in memory, and batching does not change scores.
    let model = b.load_model(&device()).unwrap();
    let c1 = Classifier::from_parts(b.meta().clone(), model, &device())
        .unwrap()
        .with_batch_size(1);
    let id1 = c1.identify(bytes).unwrap();
    for (a, b) in id.windows.iter().zip(&id1.windows) {
        for (x, y) in a.scores.iter().zip(&b.scores) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }
    // The raw-window batch API agrees with the file path through decode + windows.
    let dec = silencio_audio::decode_bytes(soundscape(), &Default::default()).unwrap();
    let w: Vec<&[f32]> = dec.samples.chunks(160_000).take(3).collect();
    let p = c.predict_windows(&w).unwrap();
    for (row, w) in p.iter().zip(&id.windows) {
        for (x, y) in row.iter().zip(&w.scores) {
            assert!((x - y).abs() < 1e-5);
        }
    }
    // top-k: sorted, bounded, thresholded.
    let top = id.top_k(0, 3, 0.0);
    assert_eq!(top.len(), 3);
    assert!(top[0].score >= top[1].score && top[1].score >= top[2].score);
    assert!(id.top_k(0, 3, 1.1).is_empty());
}

#[test]
fn inconsistent_or_tampered_bundles_are_refused_with_every_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    write_bundle(&dir, 4);
    // Versions are immutable.
    let model = small_config(4).init(&device()).unwrap();
    let e = ModelBundle::write(&dir, spec(4), &model).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    // A species list that disagrees with the model is refused at write time.
    let mut s = spec(4);
    s.species.pop();
    s.species.push(s.species[0].clone());
    let e = ModelBundle::write(tmp.path().join("c"), s, &model).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("appears twice"), "{msg}");
    assert!(!tmp.path().join("c").exists());

    // Edit the description: 5 species for a 4-output model, CNN14 mel mismatch.
    let json_path = dir.join("bundle.json");
    let original = std::fs::read_to_string(&json_path).unwrap();
    let mut meta: serde_json::Value = serde_json::from_str(&original).unwrap();
    meta["species"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"code": "x", "scientific_name": "x", "common_name": "x", "class_name": "Aves"}));
    meta["format_version"] = 99.into();
    std::fs::write(&json_path, serde_json::to_vec(&meta).unwrap()).unwrap();
    let e = ModelBundle::open(&dir).unwrap_err();
    assert_eq!(e.kind(), "bundle");
    let msg = e.to_string();
    assert!(
        msg.contains("5 entries but the model has 4 outputs"),
        "{msg}"
    );
    assert!(msg.contains("format_version 99"), "{msg}");
    std::fs::write(&json_path, &original).unwrap();
    ModelBundle::open(&dir).unwrap();

    // Flip one byte of the weights: the checksum says so.
    let w = dir.join("weights.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&w, &bytes).unwrap();
    let e = ModelBundle::open(&dir).unwrap_err();
    assert!(e.to_string().contains("SHA-256"), "{e}");

    // Not a bundle at all.
    let e = ModelBundle::open(tmp.path()).unwrap_err();
    assert!(e.to_string().contains("not a model bundle"), "{e}");
}

fn ws(start: f64, end: f64, scores: &[f32]) -> WindowScores {
    WindowScores {
        start_s: start,
        end_s: end,
        scores: scores.to_vec(),
    }
}

#[test]
fn ensembles_pool_member_windows_onto_the_grid_and_weight_by_species() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    write_bundle(&dir, 3);
    let a = Classifier::load(&dir, &device()).unwrap();
    let b = Classifier::load(&dir, &device()).unwrap();
    let mut sp = species(3);
    // A species only the ensemble knows.
    sp.push(Species {
        code: "zz".into(),
        scientific_name: "Nobody knows".into(),
        common_name: "?".into(),
        class_name: "Aves".into(),
    });
    let win = silencio_audio::WindowConfig::default();
    let e = Ensemble::new("ens@1", sp, win)
        .add(Box::new(a), 1.0)
        .unwrap()
        .add(Box::new(b), 3.0)
        .unwrap();
    assert_eq!(e.coverage()[0].1, 3);
    // Member 1: 5 s windows; member 2: 3 s windows (BirdNET-like) over 10 s.
    let m1 = vec![
        ws(0.0, 5.0, &[0.1, 0.2, 0.3]),
        ws(5.0, 10.0, &[0.4, 0.5, 0.6]),
    ];
    let m2 = vec![
        ws(0.0, 3.0, &[0.9, 0.0, 0.0]),
        ws(3.0, 6.0, &[0.0, 0.8, 0.0]),
        ws(6.0, 9.0, &[0.0, 0.0, 0.7]),
        ws(9.0, 12.0, &[0.2, 0.0, 0.0]),
    ];
    let id = e.combine(10.0, &[m1, m2]).unwrap();
    assert_eq!(id.windows.len(), 2);
    // Window 0 (0–5 s): member 2's chunks 0–3 and 3–6 overlap it → max pooled.
    let w0 = &id.windows[0].scores;
    let want0 = [
        (0.1 + 3.0 * 0.9) / 4.0,
        (0.2 + 3.0 * 0.8) / 4.0,
        (0.3 + 3.0 * 0.0) / 4.0,
        0.0,
    ];
    for (g, w) in w0.iter().zip(want0) {
        assert!((g - w).abs() < 1e-6, "{w0:?}");
    }
    // Window 1 (5–10 s): chunks 3–6, 6–9, 9–12.
    let w1 = &id.windows[1].scores;
    let want1 = [
        (0.4 + 3.0 * 0.2) / 4.0,
        (0.5 + 3.0 * 0.8) / 4.0,
        (0.6 + 3.0 * 0.7) / 4.0,
    ];
    for (g, w) in w1.iter().zip(want1) {
        assert!((g - w).abs() < 1e-6, "{w1:?}");
    }
    // On real audio, an ensemble of one model twice equals the model.
    let c = Classifier::load(&dir, &device()).unwrap();
    let single = c.identify(soundscape()).unwrap();
    let ens = Ensemble::new("x", species(3), silencio_audio::WindowConfig::default())
        .add(Box::new(Classifier::load(&dir, &device()).unwrap()), 1.0)
        .unwrap()
        .add(Box::new(Classifier::load(&dir, &device()).unwrap()), 2.0)
        .unwrap();
    let both = ens.identify(soundscape()).unwrap();
    assert_eq!(both.windows.len(), single.windows.len());
    for (a, b) in single.windows.iter().zip(&both.windows) {
        for (x, y) in a.scores.iter().zip(&b.scores) {
            assert!((x - y).abs() < 1e-5);
        }
    }
    // Members sharing nothing, or with a bad weight, are refused.
    let other = Ensemble::new(
        "y",
        vec![Species {
            code: "q".into(),
            scientific_name: "Q q".into(),
            common_name: "Q".into(),
            class_name: "Aves".into(),
        }],
        silencio_audio::WindowConfig::default(),
    );
    assert!(
        other
            .add(Box::new(Classifier::load(&dir, &device()).unwrap()), 1.0)
            .is_err()
    );
    let e = Ensemble::new("z", species(3), silencio_audio::WindowConfig::default())
        .add(Box::new(Classifier::load(&dir, &device()).unwrap()), 0.0)
        .unwrap_err();
    assert_eq!(e.kind(), "ensemble");
}

#[test]
fn outputs_parse_as_json_csv_raven_and_audacity() {
    let sp = std::sync::Arc::new(vec![
        Species {
            code: "grekis".into(),
            scientific_name: "Pitangus sulphuratus".into(),
            common_name: "Great Kiskadee".into(),
            class_name: "Aves".into(),
        },
        Species {
            code: "frog1".into(),
            scientific_name: "Boana, faber".into(),
            common_name: "Smith \"frog\"".into(),
            class_name: "Amphibia".into(),
        },
    ]);
    let id = silencio_infer::Identification {
        model_version: "m@2".into(),
        audio: None,
        species: sp,
        windows: vec![ws(0.0, 5.0, &[0.9, 0.2]), ws(5.0, 10.0, &[0.1, 0.7])],
    };
    let opts = RenderOptions {
        top_k: 1,
        min_score: 0.5,
        file: "a,b.ogg".into(),
        low_hz: 20.0,
        high_hz: 16000.0,
        licences: vec![silencio_infer::Licence::birdnet("teacher")],
        location: None,
    };
    let j: serde_json::Value =
        serde_json::from_str(&render(&id, Format::Json, &opts).unwrap()).unwrap();
    assert_eq!(j["model_version"], "m@2");
    assert_eq!(j["licences"][0]["id"], "CC-BY-NC-SA-4.0");
    assert_eq!(j["licence_status"], "non_commercial");
    assert_eq!(j["windows"][0]["species"][0]["code"], "grekis");
    assert_eq!(j["windows"][1]["species"][0]["class_name"], "Amphibia");
    assert_eq!(j["windows"][1]["end_s"], 10.0);

    let csv = render(&id, Format::Csv, &opts).unwrap();
    let mut r = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[1][2], "Boana, faber");
    assert_eq!(&rows[1][3], "Smith \"frog\"");
    assert_eq!(&rows[1][6], "0.7000");
    assert_eq!(&rows[1][7], "a,b.ogg");

    let raven = render(&id, Format::Raven, &opts).unwrap();
    let lines: Vec<Vec<&str>> = raven.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines[0][3], "Begin Time (s)");
    assert_eq!(lines.len(), 3);
    assert!(lines.iter().all(|l| l.len() == 12));
    assert_eq!(lines[2][..5], ["2", "Spectrogram 1", "1", "5.0", "10.0"]);
    assert_eq!(lines[2][8], "frog1");

    let aud = render(&id, Format::Audacity, &opts).unwrap();
    assert_eq!(
        aud.lines().next().unwrap(),
        "0.0\t5.0\tPitangus sulphuratus, Great Kiskadee\t0.9000"
    );
    assert!("yaml".parse::<Format>().is_err());
}

#[test]
fn the_default_model_is_production_else_staging_else_a_clear_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let e = registry::resolve_default(root).unwrap_err();
    assert_eq!(e.kind(), "no_model");
    assert!(e.to_string().contains("--model"), "{e}");
    std::fs::write(root.join("aliases.json"), r#"{"staging": "4"}"#).unwrap();
    let (p, alias) = registry::resolve_default(root).unwrap();
    assert_eq!((p, alias), (root.join("versions/4"), "staging"));
    std::fs::write(
        root.join("aliases.json"),
        r#"{"staging": "4", "production": "3"}"#,
    )
    .unwrap();
    assert_eq!(registry::resolve_default(root).unwrap().1, "production");
    std::fs::write(root.join("aliases.json"), r#"{"production": "../x"}"#).unwrap();
    assert_eq!(
        registry::resolve_default(root).unwrap_err().kind(),
        "registry"
    );
}
