//! Bundles round-trip and refuse inconsistency; the classifier scores real audio per window;
//! ensembles pool onto one grid; outputs parse as their readers expect.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use burn::tensor::Tensor;
use silencio_infer::{
    Classifier, Ensemble, Format, ModelBundle, OutputDiff, RenderOptions, Species, WeightsDtype,
    WindowScores, optimise, registry, render,
};

mod common;
use common::{
    device, recalibrate, small_config, soundscape, soundscape_path, soundscape_windows, spec,
    species, write_bundle,
};

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

/// `(name, dtype)` of every tensor in a safetensors file, from its JSON header.
fn safetensors_dtypes(path: &Path) -> Vec<(String, String)> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(k, v)| (k.clone(), v["dtype"].as_str().unwrap().to_string()))
        .collect()
}

/// A small random model recalibrated on the soundscape, so that its scores depend on the
/// audio (a random initialisation's are its biases: every layer shrinks the signal), written
/// with a location filter and priors to see that they travel.
fn write_realistic_bundle(dir: &Path, classes: usize) -> ModelBundle {
    let model = small_config(classes).init(&device()).unwrap();
    let model = recalibrate(model, &soundscape_windows());
    let mut s = spec(classes);
    let codes: Vec<String> = (0..classes).map(|i| format!("sp{i}")).collect();
    s.location = Some(
        silencio_infer::OccurrenceModel::learn([("sp0", 6.8, -74.3)], &codes, Default::default())
            .unwrap(),
    );
    s.post_process = Some(silencio_infer::PostProcess::new(None));
    ModelBundle::write(dir, s, &model).unwrap()
}

/// Every float parameter of a bundle's model as loaded (f32), in module order.
fn loaded_params(b: &ModelBundle) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &burn::module::Param<Tensor<D>>) {
            assert_eq!(p.val().dtype(), burn::tensor::DType::F32);
            self.0
                .push(p.val().into_data().try_to_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(Vec::new());
    burn::module::Module::visit(&b.load_model(&device()).unwrap(), &mut c);
    c.0
}

/// Checks every loaded parameter of `b` against `a`'s: `bound(original, tensor's largest
/// magnitude)` is how far each may be.
fn assert_params_within(a: &ModelBundle, b: &ModelBundle, bound: impl Fn(f32, f32) -> f32) {
    let (pa, pb) = (loaded_params(a), loaded_params(b));
    assert_eq!(pa.len(), pb.len());
    for (x, y) in pa.iter().zip(&pb) {
        let peak = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (v, w) in x.iter().zip(y) {
            assert!(
                (v - w).abs() <= bound(*v, peak),
                "{v} became {w} (peak {peak})"
            );
        }
    }
}

#[test]
fn an_f16_bundle_is_half_the_size_and_scores_like_its_f32_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = (tmp.path().join("f32"), tmp.path().join("f16"));
    let a = write_realistic_bundle(&src, 6);
    let b = optimise(&src, &dest, WeightsDtype::F16, &device()).unwrap();
    // No staging directory is left behind.
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 2);
    let b2 = ModelBundle::open(&dest).unwrap();
    let (ma, mb) = (a.meta(), b2.meta());
    assert_eq!(mb, b.meta());
    assert_eq!(mb.weights_dtype, WeightsDtype::F16);
    assert_eq!(mb.format_version, 2);
    assert_eq!(mb.model_version(), "test@1+f16");
    let from = mb.converted_from.as_ref().unwrap();
    assert_eq!(
        (from.model_version.as_str(), from.weights_sha256.as_str()),
        ("test@1", ma.weights.sha256.as_str())
    );
    let json = std::fs::read_to_string(dest.join("bundle.json")).unwrap();
    assert!(json.contains(r#""weights_dtype": "f16""#), "{json}");
    // Everything but the weights is the source's: species, recipe, licences, the location
    // filter and the priors (the same bytes).
    assert_eq!(
        (
            &mb.model,
            &mb.features,
            &mb.species,
            &mb.provenance.licences
        ),
        (
            &ma.model,
            &ma.features,
            &ma.species,
            &ma.provenance.licences
        )
    );
    assert_eq!(mb.location, ma.location);
    assert_eq!(mb.post_process, ma.post_process);
    assert!(b2.location().unwrap().is_some() && b2.post_process().unwrap().is_some());

    // Every tensor is f16 but the batch norms' (kept f32: see WeightsDtype::F16), and the
    // file is about half: 0.546 here, where batch norms are 7 % of the f32 file and the
    // header (the same in both) 2.5 %; ResNet-50's f16 file is 0.50 of its f32 one.
    let dtypes = safetensors_dtypes(&dest.join(&mb.weights.file));
    assert!(dtypes.len() > 100);
    for (name, dtype) in &dtypes {
        let norm = name.split('.').rev().nth(1).unwrap().starts_with("bn");
        assert_eq!(dtype, if norm { "F32" } else { "F16" }, "{name}");
    }
    let ratio = mb.weights.bytes as f64 / ma.weights.bytes as f64;
    eprintln!("f16 weights are {ratio:.3} of f32");
    assert!(ratio < 0.55, "f16 weights are {ratio:.3} of f32");
    // Loaded back as f32, each weight is its f16 rounding: within 2^-11 of itself (half of
    // f16's 10-bit mantissa step), or 2^-25 absolute below f16's normal range.
    assert_params_within(&a, &b2, |v, _| v.abs() * 2f32.powi(-11) + 2f32.powi(-25));

    // Same scores within f16's rounding. Each weight moves by at most 2^-11 of itself;
    // independent roundings over this model's ~80 weight layers add up in quadrature to
    // about √80 · 2^-11 ≈ 4.4e-3 of a logit, and a probability moves by at most a quarter of
    // its logit's move: with logits up to ~2 here, 2.2e-3. Tolerance 2e-3; measured 3e-4 to
    // 5e-4 over five random models. A tensor left unconverted or mis-cast moves scores by
    // 1e-1 or more.
    let (ca, cb) = (
        Classifier::load(&src, &device()).unwrap(),
        Classifier::load(&dest, &device()).unwrap(),
    );
    let d = OutputDiff::on_audio(&ca, &cb, &[soundscape_path()]).unwrap();
    eprintln!("f16 vs f32 on a soundscape: {d:?}");
    assert_eq!(d.windows, 12);
    assert!(d.max_abs < 2e-3, "{d:?}");
    assert_eq!(cb.model_version(), "test@1+f16");

    // A tampered f16 file is refused like a tampered f32 one.
    let w = dest.join(&mb.weights.file);
    let mut bytes = std::fs::read(&w).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 1;
    std::fs::write(&w, &bytes).unwrap();
    let e = ModelBundle::open(&dest).unwrap_err();
    assert!(e.to_string().contains("SHA-256"), "{e}");

    // Bundles are immutable; rounding never compounds; f32 to f32 is no conversion.
    let e = optimise(&src, &dest, WeightsDtype::F16, &device()).unwrap_err();
    assert!(e.to_string().contains("already exists"), "{e}");
    bytes[n - 1] ^= 1;
    std::fs::write(&w, &bytes).unwrap();
    let e = optimise(&dest, tmp.path().join("x"), WeightsDtype::Int8, &device()).unwrap_err();
    assert!(e.to_string().contains("starts from the f32 bundle"), "{e}");
    let e = optimise(&src, tmp.path().join("y"), WeightsDtype::F32, &device()).unwrap_err();
    assert!(e.to_string().contains("f32 weights already"), "{e}");
    assert!(!tmp.path().join("x").exists() && !tmp.path().join("y").exists());
}

#[test]
fn an_int8_bundle_is_a_quarter_of_the_size_and_scores_close_to_its_f32_source() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dest) = (tmp.path().join("f32"), tmp.path().join("int8"));
    let a = write_realistic_bundle(&src, 6);
    let b = optimise(&src, &dest, WeightsDtype::Int8, &device()).unwrap();
    let mb = ModelBundle::open(&dest).unwrap().meta().clone();
    assert_eq!(
        (mb.weights_dtype, mb.weights.file.as_str()),
        (WeightsDtype::Int8, "weights.bpk")
    );
    assert_eq!(b.meta().model_version(), "test@1+int8");
    let ratio = mb.weights.bytes as f64 / a.meta().weights.bytes as f64;
    eprintln!("int8 weights are {ratio:.3} of f32");
    assert!(ratio < 0.45, "int8 weights are {ratio:.3} of f32");
    // Each weight rounds to the nearest multiple of its block's scale, the block's largest
    // magnitude / 127: at most half a step, at most the tensor's peak / 254 (plus f32
    // rounding of the product).
    let dq = ModelBundle::open(&dest).unwrap();
    assert_params_within(&a, &dq, |_, peak| peak / 254.0 * (1.0 + 1e-5));
    // Scores within int8's rounding: a weight moves by up to 1/254 of its block's peak,
    // about 1 % of a typical weight (a third of the peak), so by the same quadrature a logit
    // moves ~√80 · 1 % / √3 ≈ 5 % and a probability up to ~2.5e-2. Tolerance 2e-2; measured
    // 4e-3 to 7e-3 over five random models.
    let (ca, cb) = (
        Classifier::load(&src, &device()).unwrap(),
        Classifier::load(&dest, &device()).unwrap(),
    );
    let d = OutputDiff::on_audio(&ca, &cb, &[soundscape_path()]).unwrap();
    eprintln!("int8 vs f32 on a soundscape: {d:?}");
    assert!(d.max_abs < 2e-2, "{d:?}");
    // Tampering is caught by the checksum here too.
    let w = dest.join(&mb.weights.file);
    let mut bytes = std::fs::read(&w).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&w, &bytes).unwrap();
    let e = ModelBundle::open(&dest).unwrap_err();
    assert!(e.to_string().contains("SHA-256"), "{e}");
}

#[test]
fn f32_bundles_keep_format_1_and_a_description_without_a_dtype_opens_as_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    write_bundle(&dir, 3);
    // Written as before f16 existed, so older builds still read it.
    let json_path = dir.join("bundle.json");
    let original = std::fs::read_to_string(&json_path).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&original).unwrap();
    assert_eq!(meta["format_version"], 1);
    assert!(meta.get("weights_dtype").is_none() && meta.get("converted_from").is_none());
    let b = ModelBundle::open(&dir).unwrap();
    assert_eq!(b.meta().weights_dtype, WeightsDtype::F32);
    Classifier::load(&dir, &device()).unwrap();
    // A format-1 description claiming f16 weights is one no older build could read right.
    let mut bad = meta.clone();
    bad["weights_dtype"] = "f16".into();
    std::fs::write(&json_path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let e = ModelBundle::open(&dir).unwrap_err();
    assert!(
        e.to_string().contains("f16 weights need format_version 2"),
        "{e}"
    );
    bad["weights_dtype"] = "f8".into();
    std::fs::write(&json_path, serde_json::to_vec(&bad).unwrap()).unwrap();
    let e = ModelBundle::open(&dir).unwrap_err();
    assert!(e.to_string().contains("does not parse"), "{e}");
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
