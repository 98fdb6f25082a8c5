//! Training throughput, named `{backend}/train_{model}/bs{n}`: full train steps (forward,
//! multi-label BCE-with-logits over 206 classes, backward, AdamW update) of ResNet-50 and
//! EfficientNet-B0 on `birdclef` windows, `[B, 1, 128, 313]` (128 mels × 313 frames), random
//! weights, one fixed random batch. Not a criterion bench: a train step takes seconds here, so it
//! runs a few warm-up steps and reports the median of a few timed steps (s/step and windows/s).
//!
//! The step is the trainer's: the model wrapped in [`trainer::model::Trainee`] with
//! `LossKind::Bce`, forked onto `device.autodiff()` in train mode (as `trainer::fit` does), one
//! `TrainStep::step` (forward, `multilabel_loss`, backward, `GradientsParams`), then
//! `ModuleOptimizer::step` of the trainer's optimiser (`trainer::fit::optimizer`: AdamW fused on
//! flex, weight decay 1e-2, epsilon 1e-5) at lr 1e-3. The clock stops after the loss scalar is read back to the host and
//! the device is synchronised. One more step after the timed ones, synchronised between its
//! phases, splits a step into forward + loss, backward and the AdamW update (`breakdown_s`).
//!
//! Settings (arguments after `--` win over the environment):
//!
//! | argument | environment | default |
//! |---|---|---|
//! | `--models a,b` | `SILENCIO_TRAIN_MODELS` | `resnet50,efficientnet_b0` |
//! | `--batches 8,16` | `SILENCIO_TRAIN_BATCHES` | `8` |
//! | `--warmup n` | `SILENCIO_TRAIN_WARMUP` | `2` |
//! | `--steps n` | `SILENCIO_TRAIN_STEPS` | `5` |
//! | `--threads n` | `RAYON_NUM_THREADS` | `2` (as `torch.set_num_threads(2)`) |
//! | `--json path` | `BENCH_JSON` | `$CARGO_TARGET_DIR/train_throughput.json` (else `target/…`) |
//!
//! The backend is `$SILENCIO_DEVICE` (default flex). Side by side with PyTorch:
//! `benches/compare/train_side_by_side.py`.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Distribution, Tensor};
use burn::train::TrainStep;
use serde_json::json;
use silencio_models::ModelConfig;
use trainer::dataset::WindowBatch;
use trainer::experiment::{LossKind, TrainConfig};
use trainer::model::{LossSpec, Trainee};

const CLASSES: usize = 206;
const MELS: usize = 128;
const FRAMES: usize = 313;
const LR: f64 = 1e-3;
const WEIGHT_DECAY: f64 = 1e-2;

struct Settings {
    models: Vec<String>,
    batches: Vec<usize>,
    warmup: usize,
    steps: usize,
    threads: usize,
    json: PathBuf,
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn number(what: &str, s: &str) -> usize {
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{what}: not a number: {s:?}"))
}

fn settings() -> Settings {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    let mut models =
        env("SILENCIO_TRAIN_MODELS").unwrap_or_else(|| "resnet50,efficientnet_b0".into());
    let mut batches = env("SILENCIO_TRAIN_BATCHES").unwrap_or_else(|| "8".into());
    let mut warmup = env("SILENCIO_TRAIN_WARMUP").unwrap_or_else(|| "2".into());
    let mut steps = env("SILENCIO_TRAIN_STEPS").unwrap_or_else(|| "5".into());
    let mut threads = env("RAYON_NUM_THREADS").unwrap_or_else(|| "2".into());
    let mut json = env("BENCH_JSON").map(PathBuf::from).unwrap_or_else(|| {
        env("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
            .join("train_throughput.json")
    });
    // `cargo bench` passes `--bench` (and a filter, if given): ignore what is not ours.
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let (key, inline) = match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        let slot = match key.as_str() {
            "--models" => &mut models,
            "--batches" => &mut batches,
            "--warmup" => &mut warmup,
            "--steps" => &mut steps,
            "--threads" => &mut threads,
            "--json" => {
                if let Some(v) = inline.or_else(|| args.next()) {
                    json = PathBuf::from(v);
                }
                continue;
            }
            _ => continue,
        };
        if let Some(v) = inline.or_else(|| args.next()) {
            *slot = v;
        }
    }
    let s = Settings {
        models: list(&models),
        batches: list(&batches).iter().map(|b| number("batch", b)).collect(),
        warmup: number("warmup", &warmup),
        steps: number("steps", &steps).max(1),
        threads: number("threads", &threads).max(1),
        json,
    };
    assert!(!s.models.is_empty(), "no models");
    assert!(!s.batches.is_empty(), "no batch sizes");
    s
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages.
fn loadavg() -> Option<Vec<f64>> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    s.split_whitespace()
        .take(3)
        .map(|v| v.parse().ok())
        .collect()
}

/// (wall clock, busy CPU seconds of the machine, CPU seconds of this process), as in
/// `models_side_by_side.py`; Linux's USER_HZ is 100.
fn cpu_snapshot() -> (Instant, Option<f64>, Option<f64>) {
    const HZ: f64 = 100.0;
    let busy = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        let v: Vec<f64> = s
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        // user nice system irq softirq steal
        let idx = [0usize, 1, 2, 5, 6, 7];
        Some(idx.iter().filter_map(|&i| v.get(i)).sum::<f64>() / HZ)
    });
    let own = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ut: f64 = f.get(11)?.parse().ok()?;
            let st: f64 = f.get(12)?.parse().ok()?;
            Some((ut + st) / HZ)
        });
    (Instant::now(), busy, own)
}

/// Average number of cores that other processes kept busy between two snapshots.
fn other_cores(
    a: &(Instant, Option<f64>, Option<f64>),
    b: &(Instant, Option<f64>, Option<f64>),
) -> Option<f64> {
    let wall = b.0.duration_since(a.0).as_secs_f64();
    let busy = b.1? - a.1?;
    let own = b.2? - a.2?;
    (wall > 0.0).then(|| ((busy - own) / wall).max(0.0))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn main() {
    let s = settings();
    rayon::ThreadPoolBuilder::new()
        .num_threads(s.threads)
        .build_global()
        .expect("rayon global pool");
    let spec = std::env::var("SILENCIO_DEVICE").unwrap_or_else(|_| "flex".into());
    let device = silencio_infer::parse_device(&spec).expect("device");
    let backend = spec.split(':').next().unwrap_or("flex").to_string();
    let ad = device.clone().autodiff();
    let load_start = loadavg();
    println!(
        "train throughput on {backend}: {} thread(s), {} warm-up + {} timed steps, input [B, 1, {MELS}, {FRAMES}], {CLASSES} classes, load average {}",
        rayon::current_num_threads(),
        s.warmup,
        s.steps,
        load_start
            .as_ref()
            .map_or_else(|| "?".into(), |l| format!("{l:?}"))
    );

    let mut rows = Vec::new();
    for name in &s.models {
        for &bs in &s.batches {
            let id = format!("{backend}/train_{name}/bs{bs}");
            let model = ModelConfig::named(name, CLASSES, MELS)
                .expect("architecture")
                .init(&device)
                .expect("model");
            let params = model.num_params();
            let mut trainee = Trainee::new(
                model.fork(&ad).train(),
                LossSpec {
                    kind: LossKind::Bce,
                    smoothing: 0.0,
                },
            );
            // The trainer's optimiser, as `trainer::fit` builds it.
            let mut optim = trainer::fit::optimizer(&TrainConfig {
                weight_decay: WEIGHT_DECAY as f32,
                ..TrainConfig::default()
            })
            .init();
            // One fixed batch: standard-normal windows, multi-hot targets (~2 % positives).
            let features: Tensor<4> =
                Tensor::random([bs, 1, MELS, FRAMES], Distribution::Normal(0.0, 1.0), &ad);
            let targets: Tensor<2> =
                Tensor::random([bs, CLASSES], Distribution::Bernoulli(0.02), &ad);

            let mut step = |trainee: Trainee| -> (Trainee, f64, f32) {
                let t0 = Instant::now();
                let batch = WindowBatch {
                    features: features.clone(),
                    targets: targets.clone(),
                    distill: None,
                };
                // Forward, loss, backward, gradients per parameter (the Learner's train step).
                let out = TrainStep::step(&trainee, batch);
                let trainee = optim.step(LR, trainee, out.grads);
                // Host read-back + sync: the device has finished when these return.
                let loss: f32 = out.item.loss.into_scalar();
                ad.sync().expect("sync");
                (trainee, t0.elapsed().as_secs_f64(), loss)
            };

            let mut warm = Vec::new();
            let mut losses = Vec::new();
            for _ in 0..s.warmup {
                let (t, dt, loss) = step(trainee);
                trainee = t;
                warm.push(dt);
                losses.push(loss);
            }
            let snap0 = cpu_snapshot();
            let mut times = Vec::new();
            for _ in 0..s.steps {
                let (t, dt, loss) = step(trainee);
                trainee = t;
                times.push(dt);
                losses.push(loss);
            }
            let oc = other_cores(&snap0, &cpu_snapshot());

            // One more step (not in the median), synchronised between its phases: where the
            // time goes. The same calls as `TrainStep::step`, taken apart.
            let t0 = Instant::now();
            let out = trainee.forward_loss(WindowBatch {
                features: features.clone(),
                targets: targets.clone(),
                distill: None,
            });
            let _: f32 = out.loss.clone().into_scalar();
            ad.sync().expect("sync");
            let t1 = Instant::now();
            let grads = GradientsParams::from_grads(out.loss.backward(), &trainee);
            ad.sync().expect("sync");
            let t2 = Instant::now();
            let trainee = optim.step(LR, trainee, grads);
            ad.sync().expect("sync");
            let t3 = Instant::now();
            drop(trainee);
            let breakdown = [
                t1.duration_since(t0).as_secs_f64(),
                t2.duration_since(t1).as_secs_f64(),
                t3.duration_since(t2).as_secs_f64(),
            ];

            let med = median(&times);
            let wps = bs as f64 / med;
            println!(
                "{id}: median {med:.3} s/step, {wps:.2} windows/s (n={}, min {:.3} s, max {:.3} s, warm-up {:?} s, other processes {} cores, loss {:.4} -> {:.4}; one more step: forward+loss {:.3} s, backward {:.3} s, AdamW {:.3} s)",
                times.len(),
                times.iter().copied().fold(f64::INFINITY, f64::min),
                times.iter().copied().fold(0.0, f64::max),
                warm.iter()
                    .map(|t| (t * 1e3).round() / 1e3)
                    .collect::<Vec<_>>(),
                oc.map_or_else(|| "?".into(), |c| format!("{c:.2}")),
                losses.first().copied().unwrap_or(f32::NAN),
                losses.last().copied().unwrap_or(f32::NAN),
                breakdown[0],
                breakdown[1],
                breakdown[2],
            );
            rows.push(json!({
                "id": id,
                "model": name,
                "batch": bs,
                "params": params,
                "median_s": med,
                "windows_per_s": wps,
                "n": times.len(),
                "times_s": times,
                "warmup_s": warm,
                "losses": losses,
                "other_procs_cores": oc,
                "breakdown_s": {
                    "forward_loss": breakdown[0],
                    "backward": breakdown[1],
                    "optimizer": breakdown[2],
                },
            }));
        }
    }

    let load_end = loadavg();
    println!("\n| benchmark | median s/step | windows/s |\n|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.3} | {:.2} |",
            r["id"].as_str().unwrap_or("?"),
            r["median_s"].as_f64().unwrap_or(f64::NAN),
            r["windows_per_s"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let doc = json!({
        "backend": backend,
        "device": spec,
        "threads": rayon::current_num_threads(),
        "warmup": s.warmup,
        "steps": s.steps,
        "input": [1, MELS, FRAMES],
        "classes": CLASSES,
        "loss": "bce_with_logits (trainer::model::multilabel_loss, LossKind::Bce)",
        "optimizer": {"name": "AdamW (trainer::fit::optimizer: FusedAdamW)", "lr": LR, "weight_decay": WEIGHT_DECAY, "epsilon": 1e-5,
                      "betas": [0.9, 0.999]},
        "loadavg_start": load_start,
        "loadavg_end": load_end,
        "rows": rows,
    });
    if let Some(dir) = s.json.parent() {
        std::fs::create_dir_all(dir).expect("JSON directory");
    }
    let text = serde_json::to_string_pretty(&doc).expect("JSON");
    std::fs::write(&s.json, text + "\n").expect("write JSON");
    println!("\nwrote {}", s.json.display());
}
