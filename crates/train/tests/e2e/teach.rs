//! `trainer teach` on the committed demo set with small untrained bundles as teachers: the
//! plumbing (windows, class mapping, embeddings, student features, resume, failures), not
//! accuracy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;
use harness::repo;

use std::path::Path;
use std::process::Command;

use silencio_infer::{Licence, ModelBundle, ModelSpec, OpenOptions, Species};
use trainer::Experiment;
use trainer::teach::{TeachOptions, teach};
use trainer::teacher::{RecordingSet, TeacherStore};

const SOUNDSCAPES: [&str; 2] = ["DEMO1_20240101_060000.ogg", "DEMO2_20240101_120000.ogg"];

fn device() -> burn::tensor::Device {
    silencio_infer::parse_device("flex").unwrap()
}

/// An untrained demo-architecture bundle over `species`, on the student's recipe.
fn write_bundle(dir: &Path, exp: &Experiment, shards: &Path, species: Vec<Species>) {
    harness::random_bundle(
        dir,
        exp,
        shards,
        species,
        Licence::new("CC-BY-4.0", "test data"),
    );
}

fn options(teacher: &Path, data: &Path, shards: &Path, name: &str) -> TeachOptions {
    TeachOptions {
        teacher: teacher.display().to_string(),
        name: Some(name.into()),
        data: data.to_path_buf(),
        shards: shards.to_path_buf(),
        sets: vec![RecordingSet::Soundscapes],
        registry: data.join("no-registry"),
        device: "flex".into(),
        limit: None,
        etl: None,
    }
}

fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tol)
}

#[test]
fn a_bundle_teacher_scores_every_soundscape_window_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    silencio_common::fs::copy_tree(&repo().join("datasets/demo/birdclef"), &data).unwrap();
    let shards = tmp.path().join("shards");
    let mut exp = Experiment::demo().unwrap();
    exp.data.root = data.clone();
    exp.data.shards = shards.clone();
    // A stray temporary file and an undecodable recording among the soundscapes.
    let sc = data.join("train_soundscapes");
    std::fs::write(sc.join("DEMO1_20240101_060000.ogg.part"), b"half").unwrap();
    std::fs::write(sc.join("BROKEN_20240101_000000.ogg"), b"not audio at all").unwrap();

    // The first run makes the shards (the student's recipe) through the experiment's ETL.
    let task = trainer::pipeline::task_species(&data).unwrap();
    let full = tmp.path().join("full");
    let mut opts = options(&full, &data, &shards, "full");
    opts.etl = Some(exp.clone());
    trainer::prepare::shards(&exp, &mut |_| {}).unwrap();
    write_bundle(&full, &exp, &shards, task.clone());
    let mut log = Vec::new();
    let s = teach(&opts, &mut |m| log.push(m.to_string())).unwrap();
    assert_eq!(s.scored, 2, "{log:?}");
    assert_eq!(s.already_done, 0);
    assert_eq!(s.windows, 24);
    assert_eq!(s.covered, 9);
    assert_eq!(s.failed.len(), 1, "{:?}", s.failed);
    assert_eq!(s.failed[0].file, "BROKEN_20240101_000000.ogg");
    assert!(log.iter().any(|l| l.contains("[2/3]")), "{log:?}");

    let store = TeacherStore::open(&s.dir).unwrap();
    assert_eq!(s.dir, shards.join("teachers/full"));
    let manifest = trainer::dataset::WindowStore::open(&shards)
        .unwrap()
        .manifest()
        .clone();
    let info = store.info();
    assert_eq!(info.classes, manifest.classes);
    assert_eq!(info.covered, vec![true; 9]);
    assert_eq!(info.shards_fingerprint, manifest.fingerprint);
    assert_eq!(info.feature_shape, manifest.feature_shape);
    assert_eq!(info.licences, vec!["CC-BY-4.0".to_string()]);
    assert_eq!(info.model, "full@1");
    assert_eq!(
        store.list(RecordingSet::Soundscapes).unwrap(),
        SOUNDSCAPES
            .iter()
            .map(|f| f.trim_end_matches(".ogg").to_string())
            .collect::<Vec<_>>()
    );

    // Independently: the facade's own scores, the model's embeddings, the student features.
    let scorer = silencio_infer::open(
        &ModelSpec::Bundle(full.clone()),
        &device(),
        &OpenOptions::default(),
    )
    .unwrap();
    let bundle = ModelBundle::open(&full).unwrap();
    let model = bundle.load_model(&device()).unwrap();
    for f in SOUNDSCAPES {
        let rec = store.read(RecordingSet::Soundscapes, f).unwrap();
        assert_eq!(rec.file, f);
        assert_eq!(
            rec.start_s,
            (0..12).map(|i| i as f32 * 5.0).collect::<Vec<_>>()
        );
        let id = scorer.identify_path(sc.join(f)).unwrap();
        assert_eq!(id.windows.len(), 12);
        assert_eq!(
            (rec.probs.len(), rec.embedding.len(), rec.features.len()),
            (12, 12, 12)
        );
        for (w, p) in id.windows.iter().zip(&rec.probs) {
            assert!(close(&w.scores, p, 1e-6), "{f} at {}", w.start_s);
        }
        let (_, feats) =
            silencio_audio::features_from_path(sc.join(f), &manifest.options.features, 3600.0)
                .unwrap();
        assert_eq!(feats.windows.len(), 12);
        // Stored in the ETL's type (f16 here): within half an f16 step of the features.
        assert_eq!(info.feature_dtype, manifest.options.dtype);
        for (i, row) in rec.features.iter().enumerate() {
            let near = feats
                .window(i)
                .iter()
                .zip(row)
                .all(|(x, y)| (x - y).abs() <= 1e-4 + x.abs() / 2048.0);
            assert!(near && row.len() == feats.window(i).len(), "{f} window {i}");
        }
        let emb = model.embed(silencio_infer::features_to_tensor(&feats, &device()));
        let [w, e] = emb.dims();
        assert_eq!((w, Some(e)), (12, info.embedding_dim));
        let emb: Vec<f32> = emb
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .unwrap();
        for (i, row) in rec.embedding.iter().enumerate() {
            assert!(
                close(&emb[i * e..(i + 1) * e], row, 1e-3),
                "{f} embedding {i}"
            );
        }
        // Not all windows alike: the store holds each window's own values.
        assert_ne!(rec.embedding[0], rec.embedding[1]);
    }

    // train_audio/: only the windows the ETL kept are stored (here its first per clip).
    let mut one = exp.clone();
    one.data.shards = tmp.path().join("shards-one");
    one.data.max_windows_per_clip = 1;
    let kept_etl = trainer::prepare::shards(&one, &mut |_| {}).unwrap();
    let mut ta = options(&full, &data, &one.data.shards, "train-audio");
    ta.sets = vec![RecordingSet::TrainAudio];
    let s = teach(&ta, &mut |_| {}).unwrap();
    let m1 = kept_etl.manifest();
    assert!(
        manifest.windows.len() > manifest.clips.len(),
        "some clip has several windows"
    );
    assert_eq!(
        s.windows,
        m1.windows.len(),
        "one stored window per ETL window"
    );
    let ta_store = TeacherStore::open(&s.dir).unwrap();
    for c in &m1.clips {
        let rec = ta_store
            .read(RecordingSet::TrainAudio, &c.filename)
            .unwrap();
        let start = m1
            .windows
            .iter()
            .find(|w| w.clip == c.clip)
            .unwrap()
            .start_s;
        assert_eq!(rec.start_s, vec![start as f32], "{}", c.filename);
    }

    // Resume: nothing left to do; after one file is removed, only it is scored again.
    let again = teach(&opts, &mut |_| {}).unwrap();
    assert_eq!((again.scored, again.already_done), (0, 2));
    let kept = store.path_of(RecordingSet::Soundscapes, SOUNDSCAPES[0]);
    let kept_bytes = std::fs::read(&kept).unwrap();
    std::fs::remove_file(store.path_of(RecordingSet::Soundscapes, SOUNDSCAPES[1])).unwrap();
    std::fs::write(&kept, b"left alone").unwrap();
    let resumed = teach(&opts, &mut |_| {}).unwrap();
    assert_eq!((resumed.scored, resumed.already_done), (1, 1));
    assert_eq!(std::fs::read(&kept).unwrap(), b"left alone");
    std::fs::write(&kept, &kept_bytes).unwrap();
    assert!(store.done(RecordingSet::Soundscapes, SOUNDSCAPES[1]));

    // A teacher covering some classes: by code (task class 2), by scientific name (class 5).
    let partial = tmp.path().join("partial");
    let other = |code: &str, sci: &str| Species {
        code: code.into(),
        scientific_name: sci.into(),
        common_name: String::new(),
        class_name: "Aves".into(),
    };
    write_bundle(
        &partial,
        &exp,
        &shards,
        vec![
            other("nobody", "Nemo nusquam"),
            task[2].clone(),
            other("zzz", &task[5].scientific_name),
        ],
    );
    let s = teach(&options(&partial, &data, &shards, "partial"), &mut |_| {}).unwrap();
    assert_eq!((s.scored, s.covered), (2, 2));
    let store = TeacherStore::open(&s.dir).unwrap();
    let mut want = vec![false; 9];
    want[2] = true;
    want[5] = true;
    assert_eq!(store.info().covered, want);
    let scorer = silencio_infer::open(
        &ModelSpec::Bundle(partial.clone()),
        &device(),
        &OpenOptions::default(),
    )
    .unwrap();
    let rec = store
        .read(RecordingSet::Soundscapes, SOUNDSCAPES[0])
        .unwrap();
    let id = scorer.identify_path(sc.join(SOUNDSCAPES[0])).unwrap();
    assert_eq!(rec.probs.len(), 12);
    for (w, p) in id.windows.iter().zip(&rec.probs) {
        let mut expect = vec![0f32; 9];
        expect[2] = w.scores[1];
        expect[5] = w.scores[2];
        assert!(close(p, &expect, 1e-6), "{p:?} vs {expect:?}");
    }

    // The subcommand: two tries now (the broken recording sorts first, then one is scored).
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .arg("teach")
        .arg("--teacher")
        .arg(&full)
        .arg("--data")
        .arg(&data)
        .arg("--shards")
        .arg(&shards)
        .arg("--name")
        .arg("cli")
        .arg("--limit")
        .arg("2")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 recordings scored (12 windows)"),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed: train_soundscapes/BROKEN"),
        "the undecodable recording is reported"
    );
    assert_eq!(
        TeacherStore::open(&shards.join("teachers/cli"))
            .unwrap()
            .list(RecordingSet::Soundscapes)
            .unwrap()
            .len(),
        1
    );

    // `trainer priors`: the same model with site and hour priors learnt from that store's
    // soundscape (recorder DEMO1 at 06 h), carrying the teacher's licence.
    let with_priors = tmp.path().join("with-priors");
    let out = Command::new(env!("CARGO_BIN_EXE_trainer"))
        .arg("priors")
        .arg("--bundle")
        .arg(&full)
        .arg("--teacher")
        .arg(shards.join("teachers/cli"))
        .arg("--out")
        .arg(&with_priors)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = ModelBundle::open(&with_priors).unwrap();
    let src = ModelBundle::open(&full).unwrap();
    assert_eq!(b.meta().version, format!("{}+priors", src.meta().version));
    assert_eq!(b.meta().model, src.meta().model);
    assert_eq!(b.meta().species, src.meta().species);
    assert!(src.post_process().unwrap().is_none());
    let post = b.post_process().unwrap().unwrap();
    let priors = post.priors.unwrap();
    assert_eq!(priors.global().windows, 12);
    assert!(
        priors.recorders().contains_key("DEMO1"),
        "{:?}",
        priors.recorders().keys()
    );
}

/// BirdNET as the teacher (BirdNET builds only): its classes matched by scientific name, its
/// 1024-d embeddings stored per window, its licence recorded.
#[cfg(feature = "birdnet")]
#[test]
fn birdnet_teaches_with_its_embeddings() {
    silencio_onnx::install();
    let tmp = tempfile::tempdir().unwrap();
    let data = repo().join("datasets/demo/birdclef");
    let shards = tmp.path().join("shards");
    let mut exp = Experiment::demo().unwrap();
    exp.data.root = data.clone();
    exp.data.shards = shards.clone();
    let mut opts = options(Path::new("birdnet"), &data, &shards, "unused");
    opts.name = None;
    opts.etl = Some(exp);
    let s = teach(&opts, &mut |m| println!("{m}")).unwrap();
    assert_eq!(s.dir, shards.join("teachers/birdnet"));
    assert_eq!((s.scored, s.windows), (2, 24), "{:?}", s.failed);
    assert!(s.covered > 0);
    let store = TeacherStore::open(&s.dir).unwrap();
    assert_eq!(store.info().embedding_dim, Some(1024));
    assert!(
        store.info().licences.iter().any(|l| l.contains("NC")),
        "{:?}",
        store.info().licences
    );
    let rec = store
        .read(RecordingSet::Soundscapes, SOUNDSCAPES[0])
        .unwrap();
    assert_eq!(rec.embedding.len(), 12);
    assert!(rec.embedding.iter().all(|e| e.len() == 1024));
    assert_ne!(rec.embedding[0], rec.embedding[1]);
    // Uncovered classes score 0; covered ones carry BirdNET's probabilities.
    for (c, covered) in store.info().covered.iter().enumerate() {
        if !covered {
            assert!(rec.probs.iter().all(|p| p[c] == 0.0));
        }
    }
    assert!(rec.probs.iter().flatten().any(|p| *p > 0.0));
}
