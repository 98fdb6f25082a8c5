//! Distillation and pseudo-labelled windows on the demo set: a short run with a teacher store
//! written here (the demo's own windows as "soundscape" windows, teacher outputs for a few
//! labelled clips) trains, writes a bundle carrying the teacher's licence, records the teaching
//! params and counts in MLflow and sits under a parent run; a teacher made for other shards is
//! a config error; the distillation terms add exactly their weighted losses; the pseudo part of
//! an epoch walks the pool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::data::dataset::Dataset;
use burn::tensor::{Device, Tensor, TensorData};
use silencio_data::{PeriodFilter, Split};
use trainer::Experiment;
use trainer::dataset::{DistillBatch, PseudoPool, WindowBatch, WindowDataset, WindowStore};
use trainer::distill::{self, DistillSpec};
use trainer::experiment::{DistillConfig, EmbeddingLoss, PseudoConfig, PseudoLabels};
use trainer::model::{LossSpec, Trainee, multilabel_loss};
use trainer::pipeline::{self, RunOptions};
use trainer::teacher::{RecordingSet, TEACHER_FORMAT, TeacherInfo, TeacherRecording, TeacherStore};

const TEACHER_LICENCE: &str = "LicenseRef-test-teacher";
const EMB: usize = 4;

use crate::harness::repo;

/// The demo experiment, short: 2 epochs of at most 2 steps, no failure suites.
fn experiment(tmp: &Path) -> Experiment {
    let r = repo();
    let mut e = Experiment::demo().unwrap();
    e.data.root = r.join("datasets/demo/birdclef");
    e.data.shards = tmp.join("shards");
    e.data.backgrounds = Some(r.join("datasets/demo/backgrounds"));
    e.output.runs = tmp.join("runs");
    e.train.epochs = 2;
    e.train.max_steps_per_epoch = 2;
    e.train.batch_size = 8;
    e.eval.mix_minutes = 1;
    e.eval.suites = Vec::new();
    e
}

fn info(store: &WindowStore, fingerprint: &str) -> TeacherInfo {
    let m = store.manifest();
    let mut covered = vec![true; m.classes.len()];
    covered[0] = false;
    TeacherInfo {
        format: TEACHER_FORMAT,
        spec: "test".into(),
        model: "test-teacher@1".into(),
        classes: m.classes.clone(),
        covered,
        embedding_dim: Some(EMB),
        feature_shape: m.feature_shape,
        feature_dtype: silencio_data::Dtype::F32,
        shards_fingerprint: fingerprint.into(),
        licences: vec![TEACHER_LICENCE.into()],
    }
}

/// What the synthetic teacher store holds.
struct Written {
    /// Labelled training windows with teacher outputs.
    teacher_windows: usize,
    /// Soundscape windows kept by `min_confidence = 0.1`.
    pool: usize,
    /// Soundscape windows dropped by it.
    dropped: usize,
}

/// Teacher `name` for `store`: the first three training clips' windows (plus one window at a
/// start the ETL never made), and every training window's features as soundscape windows in
/// recordings of 10; every 5th soundscape window is unconfident (all probabilities 0.05).
/// Pool window k's probability of class 1 is (k + 1)/(n + 2), so each is recognisable.
fn write_teacher(store: &WindowStore, dir: &Path, fingerprint: &str) -> Written {
    let t = TeacherStore::create(dir, info(store, fingerprint)).unwrap();
    let m = store.manifest();
    let c = m.classes.len();
    let train = store.select(Split::Train, PeriodFilter::All);
    let mut clips: Vec<usize> = Vec::new();
    for &i in &train {
        let clip = store.window(i).clip;
        if !clips.contains(&clip) {
            clips.push(clip);
        }
    }
    let mut teacher_windows = 0;
    for &clip in clips.iter().take(3) {
        let file = m
            .clips
            .iter()
            .find(|r| r.clip == clip)
            .unwrap()
            .filename
            .clone();
        let mut starts: Vec<f32> = m
            .windows
            .iter()
            .filter(|w| w.clip == clip)
            .map(|w| w.start_s as f32)
            .collect();
        teacher_windows += train
            .iter()
            .filter(|&&i| store.window(i).clip == clip)
            .count();
        starts.push(9999.0);
        let w = starts.len();
        t.write(&TeacherRecording {
            set: RecordingSet::TrainAudio,
            file,
            start_s: starts,
            probs: vec![vec![0.7; c]; w],
            embedding: vec![vec![0.5; EMB]; w],
            features: Vec::new(),
        })
        .unwrap();
    }
    let n = train.len();
    let (mut pool, mut dropped) = (0, 0);
    for (r, chunk) in train.chunks(10).enumerate() {
        let mut probs = Vec::new();
        let mut features = Vec::new();
        for (j, &i) in chunk.iter().enumerate() {
            let k = r * 10 + j;
            let mut p = vec![0.05; c];
            if k % 5 == 4 {
                dropped += 1;
            } else {
                p[1] = (k + 1) as f32 / (n + 2) as f32;
                p[2] = 0.9;
                pool += 1;
            }
            probs.push(p);
            features.push(store.features(i).unwrap());
        }
        let w = chunk.len();
        t.write(&TeacherRecording {
            set: RecordingSet::Soundscapes,
            file: format!("S{r:02}_20240101_000000.ogg"),
            start_s: (0..w).map(|k| 5.0 * k as f32).collect(),
            probs,
            embedding: vec![vec![0.25; EMB]; w],
            features,
        })
        .unwrap();
    }
    // A recording scored without student features is skipped, not trained on.
    t.write(&TeacherRecording {
        set: RecordingSet::Soundscapes,
        file: "NOFEATURES.ogg".into(),
        start_s: vec![0.0],
        probs: vec![vec![0.9; c]],
        embedding: Vec::new(),
        features: Vec::new(),
    })
    .unwrap();
    Written {
        teacher_windows,
        pool,
        dropped,
    }
}

fn options(tmp: &Path, exp: Experiment) -> RunOptions {
    RunOptions {
        experiment: exp,
        resume: false,
        run_name: None,
        tracking_uri: tmp.join("mlruns").display().to_string(),
        registry: tmp.join("registry").display().to_string(),
        teacher_override: None,
        parent_run: None,
        baseline: None,
    }
}

/// The directory of MLflow run `id` in the file store under `mlruns`.
fn mlflow_run_dir(mlruns: &Path, id: &str) -> PathBuf {
    for e in std::fs::read_dir(mlruns).unwrap().flatten() {
        let p = e.path().join(id);
        if p.is_dir() {
            return p;
        }
    }
    panic!("run {id} not in {}", mlruns.display());
}

fn read_key(run: &Path, kind: &str, key: &str) -> String {
    std::fs::read_to_string(run.join(kind).join(key))
        .unwrap_or_else(|e| panic!("{kind}/{key}: {e}"))
        .trim()
        .to_string()
}

#[test]
fn a_taught_run_trains_records_and_licences_and_a_foreign_teacher_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut exp = experiment(tmp.path());
    let store = trainer::prepare::shards(&exp, &mut |_| {}).unwrap();
    let fingerprint = store.manifest().fingerprint.clone();
    let written = write_teacher(
        &store,
        &TeacherStore::dir_for(&exp.data.shards, "t1"),
        &fingerprint,
    );
    let labelled = store.select(Split::Train, PeriodFilter::All).len();
    exp.distill = Some(DistillConfig {
        teacher: "t1".into(),
        teacher_model: None,
        weight: 0.5,
        temperature: 2.0,
        embedding_weight: 0.25,
        embedding_loss: EmbeddingLoss::Mse,
        hard_weight: 1.0,
    });
    exp.pseudo = Some(PseudoConfig {
        teacher: "t1".into(),
        teacher_model: None,
        labels: PseudoLabels::Threshold,
        threshold: 0.3,
        power: 1.0,
        ratio: 0.5,
        rounds: 1,
        swap: None,
        min_confidence: Some(0.1),
    });
    let mut opts = options(tmp.path(), exp.clone());
    opts.parent_run = Some("0123456789abcdef".into());
    let mut lines = Vec::new();
    let out = pipeline::run(opts, &mut |m| lines.push(m.to_string())).unwrap();
    let log = lines.join("\n");

    // The bundle exists and carries the teacher's licence beside the data's.
    let bundle = silencio_infer::ModelBundle::open(&out.bundle_dir).unwrap();
    let licences = &bundle.meta().provenance.licences;
    assert!(
        licences
            .iter()
            .any(|l| l.id == TEACHER_LICENCE && l.covers.contains("test-teacher@1")),
        "{licences:?}"
    );
    assert!(licences.len() >= 2, "{licences:?}");

    // Counts: half as many pseudo windows as labelled ones (rounded), from a pool of the
    // confident windows; teacher outputs on the three clips' training windows only.
    let per_epoch = (0.5 * labelled as f64).round() as usize;
    assert!(
        per_epoch < written.pool,
        "the test wants a pool larger than an epoch's share"
    );
    let run_state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.run_dir.join("run.json")).unwrap()).unwrap();
    let run_id = run_state["mlflow_run_id"].as_str().unwrap();
    let run = mlflow_run_dir(&tmp.path().join("mlruns"), run_id);
    for (k, v) in [
        ("distill.weight", "0.5".to_string()),
        ("distill.temperature", "2.0".to_string()),
        ("distill.embedding_weight", "0.25".to_string()),
        ("distill.embedding_loss", "mse".to_string()),
        ("pseudo.labels", "threshold".to_string()),
        ("pseudo.ratio", "0.5".to_string()),
        ("teach.labelled_windows", labelled.to_string()),
        ("teach.teacher_windows", written.teacher_windows.to_string()),
        ("teach.pseudo_pool_windows", written.pool.to_string()),
        ("teach.pseudo_dropped", written.dropped.to_string()),
        ("teach.pseudo_windows_per_epoch", per_epoch.to_string()),
    ] {
        assert_eq!(read_key(&run, "params", k), v, "param {k}\n{log}");
    }
    assert_eq!(
        read_key(&run, "tags", "mlflow.parentRunId"),
        "0123456789abcdef"
    );
    assert!(
        log.contains(&format!(
            "{} of {labelled} training windows have teacher outputs",
            written.teacher_windows
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("{per_epoch} per epoch beside {labelled} labelled")),
        "{log}"
    );
    assert!(log.contains("1 recordings without features"), "{log}");

    // A teacher made for other shards is refused before training, also as an override.
    let bad = tmp.path().join("foreign-teacher");
    TeacherStore::create(&bad, info(&store, "another-fingerprint")).unwrap();
    let mut foreign = exp.clone();
    foreign.name = "foreign".into();
    foreign.distill.as_mut().unwrap().teacher = bad.clone();
    foreign.pseudo = None;
    let err = pipeline::run(options(tmp.path(), foreign), &mut |_| {}).unwrap_err();
    assert_eq!(err.kind(), "config", "{err}");
    assert!(err.to_string().contains("another-fingerprint"), "{err}");
    let mut over = options(tmp.path(), exp.clone());
    over.run_name = Some("override".into());
    over.teacher_override = Some(bad);
    let err = pipeline::run(over, &mut |_| {}).unwrap_err();
    assert_eq!(err.kind(), "config", "{err}");
    assert!(err.to_string().contains("another-fingerprint"), "{err}");
}

fn t2(v: Vec<f32>, shape: [usize; 2], d: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, shape), d)
}

fn scalar(t: Tensor<1>) -> f32 {
    t.into_data().try_to_vec::<f32>().unwrap()[0]
}

/// The distillation loss on a fixed batch: with only the hard weight it is the plain loss; the
/// soft term adds weight · soft_target_loss; the embedding term adds its weight · MSE of the
/// projected embedding; a target mask restricts the hard term to the labelled entries.
#[test]
fn distillation_terms_add_exactly_their_weighted_losses() {
    let d = Device::flex();
    let (b, c, mels, frames) = (3, 5, 32, 64);
    let cfg = silencio_models::ModelConfig::tiny(c);
    let model = cfg.init(&d).unwrap();
    let x: Vec<f32> = (0..b * mels * frames)
        .map(|i| ((i * 37 % 101) as f32 / 10.0) - 5.0)
        .collect();
    let features = Tensor::<4>::from_data(TensorData::new(x, [b, 1, mels, frames]), &d);
    let targets = t2(
        vec![
            1.0, 0.0, 0.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.2, 0.0, 1.0,
        ],
        [b, c],
        &d,
    );
    let probs = t2(
        (0..b * c).map(|i| 0.05 + 0.9 * (i as f32 / 15.0)).collect(),
        [b, c],
        &d,
    );
    let mask = t2(
        (0..b * c)
            .map(|i| if i % 5 == 0 || i >= 10 { 0.0 } else { 1.0 })
            .collect(),
        [b, c],
        &d,
    );
    let teacher_emb = t2((0..b * EMB).map(|i| i as f32 / 7.0).collect(), [b, EMB], &d);
    let loss_spec = LossSpec {
        kind: trainer::experiment::LossKind::Bce,
        smoothing: 0.0,
    };
    let batch = |target_mask: Tensor<2>| WindowBatch {
        features: features.clone(),
        targets: targets.clone(),
        distill: Some(DistillBatch {
            target_mask,
            teacher_probs: probs.clone(),
            teacher_mask: mask.clone(),
            teacher_embedding: Some(teacher_emb.clone()),
            embedding_present: Tensor::from_data(TensorData::new(vec![1.0, 0.0, 1.0], [b]), &d),
        }),
    };
    let ones = t2(vec![1.0; b * c], [b, c], &d);
    let spec = |weight: f32, embedding_weight: f32| DistillSpec {
        hard_weight: 1.0,
        weight,
        temperature: 2.0,
        embedding_weight,
        embedding_loss: EmbeddingLoss::Mse,
    };
    let trainee = |s: DistillSpec| {
        let student = trainer::model::embedding_dim(&cfg);
        Trainee::new(model.clone(), loss_spec).with_distill(s, Some((student, EMB)), &d)
    };
    let loss = |s: DistillSpec, m: Tensor<2>| scalar(trainee(s).forward_loss(batch(m)).loss);
    // Flex without autodiff: dropout is off, so the forward passes agree.
    let logits = model.forward(features.clone()).logits;
    let plain = scalar(multilabel_loss(logits.clone(), targets.clone(), loss_spec));

    let hard_only = loss(spec(0.0, 0.0), ones.clone());
    assert!(
        (hard_only - plain).abs() <= 1e-6 * plain.abs().max(1.0),
        "{hard_only} vs {plain}"
    );
    // Without teacher fields (validation batches) the loss is the plain one bit for bit.
    let no_teacher = scalar(
        trainee(spec(0.5, 0.25))
            .forward_loss(WindowBatch {
                features: features.clone(),
                targets: targets.clone(),
                distill: None,
            })
            .loss,
    );
    assert_eq!(no_teacher, plain);

    let soft = scalar(distill::soft_target_loss(
        logits.clone(),
        probs.clone(),
        mask.clone(),
        2.0,
    ));
    assert!(soft > 0.0);
    let with_soft = loss(spec(0.5, 0.0), ones.clone());
    assert!(
        (with_soft - (plain + 0.5 * soft)).abs() < 1e-5,
        "{with_soft} vs {plain} + 0.5·{soft}"
    );

    // The projection is a learnt Linear(E → 4): its MSE to the teacher on windows 0 and 2.
    let t = trainee(spec(0.0, 0.25));
    let (_, e) = model.forward_with_embedding(features.clone());
    assert_eq!(e.dims(), [b, trainer::model::embedding_dim(&cfg)]);
    let projected = t.projection.as_ref().unwrap().forward(e);
    let emb = scalar(distill::embedding_loss(
        projected,
        teacher_emb.clone(),
        Tensor::from_data(TensorData::new(vec![1.0, 0.0, 1.0], [b]), &d),
        EmbeddingLoss::Mse,
    ));
    let with_emb = scalar(t.forward_loss(batch(ones.clone())).loss);
    assert!(
        (with_emb - (plain + 0.25 * emb)).abs() < 1e-5,
        "{with_emb} vs {plain} + 0.25·{emb}"
    );

    // A target mask keeps the hard loss to its entries: only window 0 labelled.
    let row0 = t2(
        (0..b * c).map(|i| if i < c { 1.0 } else { 0.0 }).collect(),
        [b, c],
        &d,
    );
    let masked = loss(spec(0.0, 0.0), row0);
    let first = scalar(multilabel_loss(
        logits.slice([0..1, 0..c]),
        targets.slice([0..1, 0..c]),
        loss_spec,
    ));
    assert!((masked - first).abs() < 1e-6, "{masked} vs {first}");
}

/// The pseudo part of a training set: `ratio` of the labelled count each epoch, a different
/// part of the pool each epoch (consecutive blocks of one seeded order), labelled windows
/// untouched; the pseudo-labels are the thresholded teacher probabilities, and their target
/// mask is the teacher's coverage.
#[test]
fn pseudo_windows_walk_the_pool_epoch_by_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path());
    let store = Arc::new(trainer::prepare::shards(&exp, &mut |_| {}).unwrap());
    let dir = tmp.path().join("teacher");
    let written = write_teacher(&store, &dir, &store.manifest().fingerprint.clone());
    let cfg = PseudoConfig {
        teacher: dir.clone(),
        teacher_model: None,
        labels: PseudoLabels::Threshold,
        threshold: 0.06,
        power: 1.0,
        ratio: 0.25,
        rounds: 1,
        swap: None,
        min_confidence: Some(0.1),
    };
    let teacher = pipeline::open_teacher(&dir, &store).unwrap();
    let (pool, counts) = PseudoPool::build(teacher, &cfg, None).unwrap();
    assert_eq!(counts.windows, written.pool);
    assert_eq!(counts.dropped, written.dropped);
    assert_eq!(counts.without_features, 1);
    let train = store.select(Split::Train, PeriodFilter::All);
    let n = (0.25 * train.len() as f64).round() as usize;
    let pool = Arc::new(pool);
    let (ds, per_epoch) =
        WindowDataset::new(store.clone(), train.clone(), 0.5, false).with_pseudo(pool, n, 7);
    assert_eq!(per_epoch, n);
    assert_eq!(ds.len(), train.len() + n);
    assert_eq!(ds.labelled_len(), train.len());
    assert!(2 * n <= written.pool, "the test wants two disjoint epochs");

    // One epoch reads every item once; pseudo items are recognised by their class-1 label.
    let epoch = |ds: &WindowDataset| -> Vec<u32> {
        let mut seen = Vec::new();
        for i in 0..ds.len() {
            let item = ds.get(i).unwrap();
            if let Some(m) = &item.target_mask {
                assert_eq!(m[0], 0.0, "class 0 is not covered");
                assert!(item.next.is_none());
                // Threshold 0.06: the 0.05s became 0, the 0.9 stayed.
                assert_eq!(item.targets[0], 0.0);
                assert_eq!(item.targets[2], 0.9);
                let p1 = item.targets[1];
                assert!(p1 == 0.0 || p1 >= 0.06, "{p1}");
                seen.push(item.targets[1].to_bits());
            } else {
                assert!(item.teacher.is_none());
            }
        }
        seen
    };
    let e0 = epoch(&ds);
    let e1 = epoch(&ds);
    assert_eq!((e0.len(), e1.len()), (n, n));
    // Windows whose class-1 probability survives the threshold are distinct; those below
    // all read 0. Count distinct recognisable windows across both epochs.
    let nonzero = |v: &[u32]| v.iter().filter(|b| f32::from_bits(**b) > 0.0).count();
    let distinct: HashSet<u32> = e0
        .iter()
        .chain(&e1)
        .copied()
        .filter(|b| f32::from_bits(*b) > 0.0)
        .collect();
    assert_eq!(
        distinct.len(),
        nonzero(&e0) + nonzero(&e1),
        "epoch 1 repeated windows of epoch 0"
    );
}
