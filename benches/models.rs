//! Model forward latency, named `{backend}/{model}/bs{n}`: each architecture at batch 1, 12
//! (one 1-minute soundscape) and 32 on the `birdclef` window (128 mels × 313 frames), random
//! weights; plus `{backend}/e2e_soundscape_effb0/bs12`: decode + log-mel + EfficientNet-B0 of a
//! real 1-minute soundscape (divide by 12 for the per-window cost against Kaggle's 0.64 s);
//! and `{backend}/gemm_1024/bs1`, a 1024³ matrix product: the GEMM rate the models' GFLOP/s
//! are put against.
//! Models are prepared as the served ones are (`Model::for_inference`: batch norms folded,
//! kernel parameters on the host). On flex every forward also runs as Burn alone would run it:
//! the model unprepared, the project's kernels off (`flex-burn-ops/…`; skip with
//! `SILENCIO_BENCH_KERNELS_ONLY=1`). The backend is `$SILENCIO_DEVICE` (default flex); reading the output back to the host
//! synchronises the device before the clock stops. Side by side with PyTorch and ONNX Runtime:
//! `benches/compare/models_side_by_side.py`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use silencio_audio::FeatureConfig;
use silencio_models::{ARCHITECTURES, ModelConfig};

fn forward(c: &mut Criterion) {
    let spec = std::env::var("SILENCIO_DEVICE").unwrap_or_else(|_| "flex".into());
    let device = silencio_infer::parse_device(&spec).expect("device");
    let backend = spec.split(':').next().unwrap_or("flex").to_string();
    let models: Vec<String> = std::env::var("SILENCIO_BENCH_MODELS")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_else(|_| ARCHITECTURES.iter().map(|s| s.to_string()).collect());
    // On flex, the same models again with the project's kernels off (`{backend}-burn-ops/…`):
    // Burn's own ops, before and after side by side in one run.
    let passes: &[(bool, String)] =
        if backend == "flex" && std::env::var_os("SILENCIO_BENCH_KERNELS_ONLY").is_none() {
            &[
                (true, backend.clone()),
                (false, format!("{backend}-burn-ops")),
            ]
        } else {
            &[(true, backend.clone())]
        };
    for (kernels, group) in passes {
        silencio_kernels::set_enabled(*kernels);
        forward_group(c, group, &models, &device);
    }
    silencio_kernels::set_enabled(true);
}

fn forward_group(c: &mut Criterion, group: &str, models: &[String], device: &burn::tensor::Device) {
    let device = device.clone();
    let mut g = c.benchmark_group(group);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    for name in models {
        let model = ModelConfig::named(name, 206, 128)
            .expect("architecture")
            .init(&device)
            .expect("model");
        // What users run, or Burn's ops alone on the model as loaded.
        let model = match silencio_kernels::enabled() {
            true => model.for_inference(),
            false => model,
        };
        for bs in [1usize, 12, 32] {
            let x: Tensor<4> = Tensor::random(
                [bs, 1, 128, 313],
                Distribution::Normal(-40.0, 20.0),
                &device,
            );
            g.bench_function(format!("{name}/bs{bs}"), |b| {
                b.iter(|| {
                    let y = model.forward(black_box(x.clone())).logits;
                    // Host read-back: the device has finished when this returns.
                    black_box(y.into_data())
                })
            });
        }
    }
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let spec = std::env::var("SILENCIO_DEVICE").unwrap_or_else(|_| "flex".into());
    let device = silencio_infer::parse_device(&spec).expect("device");
    let backend = spec.split(':').next().unwrap_or("flex").to_string();
    let ogg = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../datasets/fixtures/audio/soundscape_1min.ogg"),
    )
    .expect("fixture");
    let cfg = FeatureConfig::recipe("birdclef").expect("recipe");
    let model = ModelConfig::efficientnet_b0(206)
        .init(&device)
        .expect("model")
        .for_inference();
    let mut g = c.benchmark_group(&backend);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("e2e_soundscape_effb0/bs12", |b| {
        b.iter(|| {
            let (_, f) = silencio_audio::features_from_bytes(black_box(ogg.clone()), &cfg, 3600.0)
                .expect("features");
            let x = silencio_infer::features_to_tensor(&f, &device);
            let p = silencio_kernels::sigmoid(model.forward(x).logits);
            black_box(p.into_data())
        })
    });
    g.finish();
}

/// `{backend}/gemm_1024/bs1`: one 1024 × 1024 × 1024 float32 matrix product (2 · 1024³ FLOP)
/// through Burn's `matmul`: the machine's attainable GEMM rate, against which the side-by-side
/// script puts each model's GFLOP/s.
fn gemm(c: &mut Criterion) {
    let spec = std::env::var("SILENCIO_DEVICE").unwrap_or_else(|_| "flex".into());
    let device = silencio_infer::parse_device(&spec).expect("device");
    let backend = spec.split(':').next().unwrap_or("flex").to_string();
    let n = 1024;
    let a: Tensor<2> = Tensor::random([n, n], Distribution::Normal(0.0, 1.0), &device);
    let b: Tensor<2> = Tensor::random([n, n], Distribution::Normal(0.0, 1.0), &device);
    let mut g = c.benchmark_group(&backend);
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    g.bench_function(format!("gemm_{n}/bs1"), |bench| {
        bench.iter(|| black_box(a.clone().matmul(black_box(b.clone())).into_data()))
    });
    g.finish();
}

criterion_group!(benches, gemm, forward, end_to_end);
criterion_main!(benches);
