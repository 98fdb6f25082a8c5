//! The data-parallel path (Burn's multi-device strategy: one worker and one batch per device,
//! gradients summed on the main device) on two CPU devices, against one device taking the
//! same windows per step. No GPU is needed: both "devices" are the flex CPU device.
//!
//! Stated tolerance: after two epochs, the mean absolute difference between the two runs'
//! validation probabilities is at most 25 % of how far training moved them from the initial
//! model's (measured here: 0.0024 against 0.0149, 16 %; after one epoch 0.0004 against 0.0057).
//! (They cannot agree exactly: batch norm sees 8 windows per device instead of 16, the data
//! order differs, and AdamW sees the summed rather than the mean gradient, which matters only
//! through its epsilon.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;

use burn::tensor::Device;
use silencio_data::PeriodFilter;
use silencio_data::splits::Split;
use trainer::dataset::WindowDataset;
use trainer::fit::{FitSpec, fit};
use trainer::{Experiment, predict, prepare};

fn probabilities(
    model: &silencio_models::Model,
    store: &trainer::dataset::WindowStore,
) -> Vec<f32> {
    let s = predict::validation(store, model, 32, &Device::flex(), &Default::default()).unwrap();
    s.scores.concat()
}

#[test]
fn two_cpu_devices_agree_with_one() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut exp = Experiment::demo().unwrap();
    exp.data.root = repo.join("datasets/demo/birdclef");
    exp.data.shards = tmp.path().join("shards");
    let store = Arc::new(prepare::shards(&exp, &mut |_| {}).unwrap());
    let [mels, frames] = store.shape();
    let cfg = prepare::model_config(&exp, store.classes(), mels).unwrap();
    let train_idx = store.select(Split::Train, PeriodFilter::All);
    let valid_idx = store.select(Split::Valid, PeriodFilter::All);

    // Deterministic, augmentation-free recipe: the runs differ only in how a step is split.
    let mut t = exp.train.clone();
    t.epochs = 2;
    t.random_crop = false;
    t.mixup_prob = 0.0;
    t.noise_prob = 0.0;
    t.time_masks = 0;
    t.freq_masks = 0;
    t.warmup_epochs = 0.0;
    t.lr = 1e-3;

    let run = |devices: Vec<Device>, batch: usize, name: &str| {
        let device = Device::flex();
        device.seed(7);
        let mut model = cfg.init(&device).unwrap();
        model.input_norm = Some([-60.0, 35.0]);
        let mut t = t.clone();
        t.batch_size = batch;
        let dir = tmp.path().join(name);
        let out = fit(
            FitSpec {
                train: &t,
                dir: &dir,
                resume_epoch: None,
                devices,
                on_epoch: None,
            },
            model,
            &cfg,
            WindowDataset::new(store.clone(), train_idx.clone(), 0.5, false),
            WindowDataset::new(store.clone(), valid_idx.clone(), 1.0, false),
            [mels, frames],
            Arc::new(Vec::new()),
        )
        .unwrap();
        probabilities(&out.model, &store)
    };
    let initial = {
        let device = Device::flex();
        device.seed(7);
        let mut model = cfg.init(&device).unwrap();
        model.input_norm = Some([-60.0, 35.0]);
        probabilities(&model, &store)
    };
    let one = run(vec![Device::flex()], 16, "one");
    let two = run(vec![Device::flex(), Device::flex()], 8, "two");
    let mean_abs = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() as f64)
            .sum::<f64>()
            / a.len() as f64
    };
    let d_devices = mean_abs(&one, &two);
    let d_trained = mean_abs(&one, &initial);
    println!("mean |p_1dev - p_2dev| = {d_devices:.4}; mean |p_1dev - p_init| = {d_trained:.4}");
    assert!(two.iter().all(|p| p.is_finite()));
    assert!(
        d_trained > 1e-2,
        "training did not move the model: {d_trained}"
    );
    assert!(
        d_devices <= 0.25 * d_trained,
        "two devices disagree with one: {d_devices} vs {d_trained} moved by training"
    );
}

/// `trainer scaling` on one and two CPU devices, on the gpu-check's six embedded recordings
/// (too few to hold out a validation recording): one row per count, each run trained its steps
/// (a checkpoint exists) and the CSV and plot carry the rows.
#[test]
fn scaling_table_runs_one_and_two_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let mut exp = Experiment::demo().unwrap();
    exp.data.root = tmp.path().join("data");
    exp.data.shards = tmp.path().join("shards");
    exp.data.backgrounds = None;
    exp.train.batch_size = 2;
    exp.train.workers = 1;
    trainer::gpu_check::write_embedded_dataset(&exp.data.root).unwrap();
    let out = tmp.path().join("scaling");
    let devices = trainer::scaling::device_names("flex", 2);
    let exp_copy = exp.clone();
    let opts = trainer::pipeline::RunOptions {
        experiment: exp,
        resume: false,
        run_name: None,
        tracking_uri: tmp.path().join("mlruns").display().to_string(),
        registry: tmp.path().join("registry").display().to_string(),
        teacher_override: None,
        parent_run: None,
        baseline: None,
    };
    let (rows, table) =
        trainer::scaling::run(opts, "flex", &devices, &[1, 2], 2, &out, &mut |_| {}).unwrap();
    println!("{table}");
    assert_eq!(rows.iter().map(|r| r.devices).collect::<Vec<_>>(), [1, 2]);
    for r in &rows {
        assert_eq!(r.windows, 2 * 2 * r.devices);
        assert!(r.seconds > 0.0 && r.throughput().is_finite());
        let run = out.join(format!("run-{}", r.devices));
        assert!(
            std::fs::read_dir(run.join("checkpoint")).unwrap().count() > 0,
            "no checkpoint in {}",
            run.display()
        );
    }
    let csv = std::fs::read_to_string(out.join("scaling.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.lines().nth(2).unwrap().starts_with("2,2,8,"), "{csv}");
    let svg = std::fs::read_to_string(out.join("scaling.svg")).unwrap();
    assert_eq!(svg.matches("<circle").count(), 2);

    // Training proper refuses an empty validation split with a typed error, instead of the
    // panic in Burn's AUROC metric.
    let store = Arc::new(prepare::shards(&exp_copy, &mut |_| {}).unwrap());
    let [mels, frames] = store.shape();
    let cfg = prepare::model_config(&exp_copy, store.classes(), mels).unwrap();
    let train_idx = store.select(Split::Train, PeriodFilter::All);
    let err = fit(
        FitSpec {
            train: &exp_copy.train,
            dir: &tmp.path().join("no-valid"),
            resume_epoch: None,
            devices: vec![Device::flex()],
            on_epoch: None,
        },
        cfg.init(&Device::flex()).unwrap(),
        &cfg,
        WindowDataset::new(store.clone(), train_idx, 0.5, false),
        WindowDataset::new(store.clone(), Vec::new(), 1.0, false),
        [mels, frames],
        Arc::new(Vec::new()),
    )
    .expect_err("fit without validation windows must fail");
    assert!(
        matches!(err, trainer::Error::Data { .. }),
        "unexpected error: {err}"
    );
}
