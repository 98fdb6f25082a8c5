//! The prepared GPU run (`gpu-check`, driven by `scripts/gpu-check.sh`): one self-contained
//! binary, built beforehand with the GPU features and copied to an offline GPU machine, that
//! prints the device, checks forward parity with flex on real audio, times EfficientNet-B0 and
//! ResNet-50 inference and training steps, and runs the scaling table over the GPUs present.
//!
//! Everything it needs is inside the binary: six short real recordings of the demo set (one per
//! species, ~150 KB; licences in `datasets/demo/birdclef/train.csv`) from which it writes a small
//! BirdCLEF-layout set and runs the trainer's own ETL. The JSON report is rewritten (atomically)
//! after every phase, so a run cut short by a time limit still leaves the figures of the phases
//! that finished; a failing phase is recorded and the next one runs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;
use silencio_models::cnn14::Cnn14Config;
use silencio_models::resnet::ResNetConfig;
use silencio_models::{BackboneConfig, HeadConfig, ModelConfig};

use crate::dataset::{WindowBatch, WindowStore};
use crate::equivalence::Stepper;
use crate::model::{LossSpec, Trainee};
use crate::pipeline::{RunOptions, write_atomic};
use crate::{Error, Experiment, Result, prepare, scaling};
use silencio_models::Architecture;

/// The architectures the run times (the two the BirdCLEF baselines train).
pub const TIMED_ARCHS: [&str; 2] = ["efficientnet_b0", "resnet50"];

/// Classes of the timed models: the BirdCLEF 2025 taxonomy's size.
pub const CLASSES: usize = 206;

/// How big the checked models are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum CheckSize {
    /// Full-size EfficientNet-B0 and ResNet-50 (206 classes), batch sizes 1 / 16 / 64.
    Full,
    /// Reduced width and depth, batch sizes 1 / 2, two steps: for Mesa's lavapipe in CI.
    Tiny,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Device to check (`wgpu`, `wgpu:N`, `cuda`, `cuda:N`; `flex` checks the harness itself).
    pub device: String,
    /// Model size.
    pub size: CheckSize,
    /// The JSON report, rewritten after every phase.
    pub out: PathBuf,
    /// Scratch directory (data set, shards, scaling runs).
    pub work: PathBuf,
    /// Inference batch sizes.
    pub batch_sizes: Vec<usize>,
    /// Timed forward passes per batch size (after one untimed warm-up).
    pub infer_iters: usize,
    /// Windows per training step.
    pub train_batch: usize,
    /// Timed training steps per architecture (after one untimed warm-up).
    pub train_steps: usize,
    /// Devices of the scaling table; empty: every GPU found (see [`gpu_devices`]).
    pub scaling_devices: Vec<String>,
    /// Steps per scaling run.
    pub scaling_steps: usize,
}

impl CheckOptions {
    /// The defaults of `size`: full size times batch 1 / 16 / 64, 20 forward passes each and
    /// 10 training steps of 16 windows; tiny runs the least that still exercises every phase.
    pub fn new(device: &str, size: CheckSize, out: PathBuf, work: PathBuf) -> Self {
        let full = size == CheckSize::Full;
        Self {
            device: device.to_string(),
            size,
            out,
            work,
            batch_sizes: if full { vec![1, 16, 64] } else { vec![1, 2] },
            infer_iters: if full { 20 } else { 2 },
            train_batch: if full { 16 } else { 2 },
            train_steps: if full { 10 } else { 2 },
            scaling_devices: Vec::new(),
            scaling_steps: if full { 8 } else { 2 },
        }
    }
}

/// Whether a phase finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Finished, and its checks held.
    Ok,
    /// Finished, but a check (parity, finite losses) did not hold.
    CheckFailed,
    /// Stopped by an error or a panic.
    Error,
}

/// One phase of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// `device`, `data`, `parity`, `inference`, `training`, `scaling`.
    pub name: &'static str,
    /// Outcome.
    pub status: Status,
    /// Wall time of the phase.
    pub seconds: f64,
    /// The error or failed check, if any.
    pub error: Option<String>,
    /// The phase's figures.
    pub result: serde_json::Value,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `gpu-check` and its version.
    pub tool: String,
    /// Device asked for.
    pub device: String,
    /// Model size.
    pub size: CheckSize,
    /// Phases finished so far, in order.
    pub phases: Vec<Phase>,
}

impl Report {
    /// Whether every phase finished with its checks held.
    pub fn passed(&self) -> bool {
        self.phases.iter().all(|p| p.status == Status::Ok)
    }
}

/// A graphics adapter as wgpu reports it.
#[derive(Debug, Clone, Serialize)]
pub struct Adapter {
    /// Adapter name (e.g. `NVIDIA H100 80GB HBM3`, `llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub name: String,
    /// Discrete GPU, integrated GPU, CPU…
    pub device_type: String,
    /// Graphics API.
    pub backend: String,
    /// Driver and its version.
    pub driver: String,
}

/// The `device` phase's result.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceInfo {
    /// Backends compiled into this binary.
    pub compiled: Vec<&'static str>,
    /// The Burn device the run uses.
    pub device: String,
    /// Every Vulkan/Metal/DX12/GL adapter wgpu sees (empty without wgpu).
    pub adapters: Vec<Adapter>,
    /// Devices the scaling phase uses.
    pub scaling_devices: Vec<String>,
    /// CPU threads of the host.
    pub cpu_threads: usize,
}

/// One architecture's forward parity with flex.
#[derive(Debug, Clone, Serialize)]
pub struct Parity {
    /// Architecture.
    pub arch: String,
    /// Real windows compared.
    pub windows: usize,
    /// Largest |logit| on flex (the scale of the differences).
    pub max_abs_logit: f32,
    /// Largest logit difference device − flex.
    pub max_abs_diff: f32,
    /// The bound: `rel_tolerance × max(1, max_abs_logit)`.
    pub tolerance: f32,
}

/// One inference timing.
#[derive(Debug, Clone, Serialize)]
pub struct InferTiming {
    /// Architecture.
    pub arch: String,
    /// Windows per forward pass.
    pub batch: usize,
    /// The first pass (kernel compilation, autotuning, allocation), seconds.
    pub first_s: f64,
    /// Timed passes.
    pub iters: usize,
    /// Median pass, milliseconds.
    pub p50_ms: f64,
    /// Mean pass, milliseconds.
    pub mean_ms: f64,
    /// Windows per second at the median.
    pub windows_per_s: f64,
}

/// One architecture's training timing.
#[derive(Debug, Clone, Serialize)]
pub struct TrainTiming {
    /// Architecture.
    pub arch: String,
    /// Windows per step.
    pub batch: usize,
    /// The first step, seconds.
    pub first_s: f64,
    /// Timed steps.
    pub steps: usize,
    /// Mean step, seconds.
    pub s_per_step: f64,
    /// Steps per second.
    pub steps_per_s: f64,
    /// Windows per second.
    pub windows_per_s: f64,
    /// Loss of every step, warm-up included.
    pub losses: Vec<f64>,
}

/// Relative bound of the parity phase: float32 sums in another order on another device (and
/// TF32 tensor cores, where the GPU's matmul uses them) move logits by ~1e-4 of their scale.
pub const PARITY_REL_TOLERANCE: f32 = 1e-3;

/// The model of `arch` that the run checks: full size, or reduced (narrow and shallow) for a
/// software adapter. Dropout is off so that training steps compare across devices.
pub fn check_config(
    arch: &str,
    size: CheckSize,
    classes: usize,
    mels: usize,
) -> Result<ModelConfig> {
    let mut cfg = match size {
        CheckSize::Full => ModelConfig::named(arch, classes, mels)?,
        CheckSize::Tiny => reduced_config(arch, classes, mels)?,
    };
    if let HeadConfig::Clip(h) = &mut cfg.head {
        h.dropout = 0.0;
    }
    Ok(cfg)
}

/// `arch` at reduced width and depth, with every kind of layer it has at full size (squeeze-
/// excitation and SiLU in B0, bottlenecks with downsampling in ResNet, …).
pub fn reduced_config(arch: &str, classes: usize, mels: usize) -> Result<ModelConfig> {
    let mut cfg = ModelConfig::named(arch, classes, mels)?;
    cfg.backbone = match cfg.backbone {
        BackboneConfig::Efficientnet(c) => {
            BackboneConfig::Efficientnet(c.with_width_mult(0.25).with_depth_mult(0.25))
        }
        BackboneConfig::Resnet(_) => BackboneConfig::Resnet(
            ResNetConfig::new()
                .with_layers([1, 1, 1, 1])
                .with_base_width(8),
        ),
        BackboneConfig::Cnn14(c) => BackboneConfig::Cnn14(
            Cnn14Config::new()
                .with_mel_bins(c.mel_bins)
                .with_widths([8, 8, 16, 16, 32, 32]),
        ),
    };
    if let HeadConfig::Clip(h) = &mut cfg.head
        && h.hidden.is_some()
    {
        h.hidden = Some(32);
    }
    Ok(cfg)
}

/// The embedded recordings: one short clip per demo species.
const CLIPS: [(&str, &[u8]); 6] = [
    (
        "bengalesefinch/DEMO000026.ogg",
        include_bytes!("../../../datasets/demo/birdclef/train_audio/bengalesefinch/DEMO000026.ogg"),
    ),
    (
        "comyel/DEMO000002.ogg",
        include_bytes!("../../../datasets/demo/birdclef/train_audio/comyel/DEMO000002.ogg"),
    ),
    (
        "fruitfly/DEMO000006.ogg",
        include_bytes!("../../../datasets/demo/birdclef/train_audio/fruitfly/DEMO000006.ogg"),
    ),
    (
        "gretit1/DEMO000034.ogg",
        include_bytes!("../../../datasets/demo/birdclef/train_audio/gretit1/DEMO000034.ogg"),
    ),
    (
        "norcar/DEMO000004.ogg",
        include_bytes!("../../../datasets/demo/birdclef/train_audio/norcar/DEMO000004.ogg"),
    ),
    (
        "zebrafinch/DEMO000030.ogg",
        include_bytes!("../../../datasets/demo/birdclef/train_audio/zebrafinch/DEMO000030.ogg"),
    ),
];
const TRAIN_CSV: &str = include_str!("../../../datasets/demo/birdclef/train.csv");
const TAXONOMY_CSV: &str = include_str!("../../../datasets/demo/birdclef/taxonomy.csv");

/// The embedded set under `work/data`, through the trainer's ETL into `work/shards`, and the
/// demo experiment pointing at it.
pub fn embedded_store(work: &Path) -> Result<(Experiment, WindowStore)> {
    let mut exp = Experiment::demo()?;
    exp.data.root = work.join("data");
    exp.data.shards = work.join("shards");
    exp.data.backgrounds = None;
    write_embedded_dataset(&exp.data.root)?;
    let store = prepare::shards(&exp, &mut |_| {})?;
    Ok((exp, store))
}

/// Writes the embedded recordings as a BirdCLEF-layout set under `root` (`train.csv` keeps the
/// demo's rows of those recordings, with their licences).
pub fn write_embedded_dataset(root: &Path) -> Result<()> {
    for (name, bytes) in CLIPS {
        let path = root.join("train_audio").join(name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        write_atomic(&path, bytes)?;
    }
    let mut lines = TRAIN_CSV.lines();
    let mut csv = String::new();
    if let Some(header) = lines.next() {
        csv.push_str(header);
        csv.push('\n');
    }
    for line in lines.filter(|l| CLIPS.iter().any(|(n, _)| l.contains(&format!(",{n},")))) {
        csv.push_str(line);
        csv.push('\n');
    }
    write_atomic(&root.join("train.csv"), csv.as_bytes())?;
    write_atomic(&root.join("taxonomy.csv"), TAXONOMY_CSV.as_bytes())
}

/// Every adapter wgpu finds (none in a build without wgpu).
pub fn adapters() -> Vec<Adapter> {
    #[cfg(feature = "wgpu")]
    {
        use burn::tensor::wgpu::wgpu;
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        block_on(instance.enumerate_adapters(wgpu::Backends::all()))
            .into_iter()
            .map(|a| {
                let i = a.get_info();
                Adapter {
                    name: i.name,
                    device_type: format!("{:?}", i.device_type),
                    backend: format!("{:?}", i.backend),
                    driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
                }
            })
            .collect()
    }
    #[cfg(not(feature = "wgpu"))]
    Vec::new()
}

/// Polls a future that needs no reactor (wgpu's native adapter enumeration resolves at once).
#[cfg(feature = "wgpu")]
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

/// The scaling phase's devices for `device`: every discrete GPU of its backend (`wgpu:0…`,
/// `cuda:0…`, counted from wgpu's Vulkan adapters); with no discrete GPU (a software adapter
/// such as lavapipe), the adapter twice as two Burn devices (`wgpu`, `wgpu:cpu`), so that the
/// data-parallel path still runs on two; flex repeats the CPU device.
pub fn gpu_devices(device: &str, adapters: &[Adapter]) -> Vec<String> {
    let kind = device.split(':').next().unwrap_or(device);
    let gpus = adapters
        .iter()
        .filter(|a| a.device_type == "DiscreteGpu" && a.backend == "Vulkan")
        .count();
    match (kind, gpus) {
        ("flex", _) => scaling::device_names("flex", 2),
        ("wgpu", 0) => vec!["wgpu".into(), "wgpu:cpu".into()],
        (k, 0) => vec![k.to_string()],
        (k, n) => scaling::device_names(k, n),
    }
}

/// Device counts of the scaling table: 1, 2, 4… up to `available`.
pub fn scaling_counts(available: usize) -> Vec<usize> {
    std::iter::successors(Some(1usize), |n| Some(n * 2))
        .take_while(|&n| n <= available.max(1))
        .collect()
}

/// Real log-mel windows of the embedded set, `n` of them (cycling), as `[n, 1, mels, frames]`.
pub fn windows(store: &WindowStore, n: usize, device: &Device) -> Result<Tensor<4>> {
    let [m, t] = store.shape();
    let mut x = Vec::with_capacity(n * m * t);
    for i in (0..store.len()).cycle().take(n) {
        x.extend(store.features(i)?);
    }
    Ok(Tensor::from_data(TensorData::new(x, [n, 1, m, t]), device))
}

/// A training batch of `n` windows starting at window `at` (cycling), with their targets.
pub fn batch(
    store: &WindowStore,
    at: usize,
    n: usize,
    secondary: f32,
    device: &Device,
) -> Result<WindowBatch> {
    let [m, t] = store.shape();
    let classes = store.classes();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for i in (0..store.len()).cycle().skip(at).take(n) {
        x.extend(store.features(i)?);
        y.extend(store.targets(i, secondary));
    }
    Ok(WindowBatch {
        features: Tensor::from_data(TensorData::new(x, [n, 1, m, t]), device),
        targets: Tensor::from_data(TensorData::new(y, [n, classes]), device),
        distill: None,
    })
}

fn max_abs(v: &[f32]) -> f32 {
    v.iter().fold(0.0, |m, x| m.max(x.abs()))
}

/// Forward parity of `arch` on `device` against flex, same weights, `n` real windows.
pub fn parity(
    arch: &str,
    size: CheckSize,
    store: &WindowStore,
    n: usize,
    device: &Device,
) -> Result<Parity> {
    let [mels, _] = store.shape();
    let flex = Device::flex();
    let model = check_config(arch, size, CLASSES, mels)?.init(&flex)?;
    let on_flex: Vec<f32> = model
        .forward(windows(store, n, &flex)?)
        .logits
        .into_data()
        .try_to_vec::<f32>()
        .map_err(data_err)?;
    let on_device: Vec<f32> = model
        .fork(device)
        .forward(windows(store, n, device)?)
        .logits
        .into_data()
        .try_to_vec::<f32>()
        .map_err(data_err)?;
    let diff: Vec<f32> = on_flex.iter().zip(&on_device).map(|(a, b)| a - b).collect();
    let scale = max_abs(&on_flex);
    Ok(Parity {
        arch: arch.to_string(),
        windows: n,
        max_abs_logit: scale,
        max_abs_diff: if diff.iter().all(|d| d.is_finite()) {
            max_abs(&diff)
        } else {
            f32::INFINITY
        },
        tolerance: PARITY_REL_TOLERANCE * scale.max(1.0),
    })
}

fn data_err(e: impl std::fmt::Debug) -> Error {
    Error::Data {
        message: format!("tensor data: {e:?}"),
    }
}

/// Times `iters` forward passes of `batch` windows (after one untimed pass), waiting for the
/// device each time by reading the logits back.
pub fn time_inference(
    arch: &str,
    size: CheckSize,
    store: &WindowStore,
    batch: usize,
    iters: usize,
    device: &Device,
) -> Result<InferTiming> {
    let [mels, _] = store.shape();
    let model = check_config(arch, size, CLASSES, mels)?.init(device)?;
    let x = windows(store, batch, device)?;
    let pass = || -> Result<f64> {
        let t0 = Instant::now();
        let out = model.forward(x.clone()).logits.into_data();
        let _: Vec<f32> = out.try_to_vec::<f32>().map_err(data_err)?;
        Ok(t0.elapsed().as_secs_f64())
    };
    let first_s = pass()?;
    let mut times = (0..iters.max(1))
        .map(|_| pass())
        .collect::<Result<Vec<f64>>>()?;
    times.sort_by(f64::total_cmp);
    let p50 = times[times.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    Ok(InferTiming {
        arch: arch.to_string(),
        batch,
        first_s,
        iters: times.len(),
        p50_ms: p50 * 1e3,
        mean_ms: mean * 1e3,
        windows_per_s: batch as f64 / p50,
    })
}

/// Times `steps` training steps (after one untimed step) with the trainer's loss, AdamW and
/// schedule, through the same [`Stepper`] the PyTorch-equivalence tests check.
pub fn time_training(
    arch: &str,
    size: CheckSize,
    store: &WindowStore,
    exp: &Experiment,
    batch_size: usize,
    steps: usize,
    device: &Device,
) -> Result<TrainTiming> {
    let [mels, _] = store.shape();
    let device = device.clone().autodiff();
    let mut t = exp.train.clone();
    t.batch_size = batch_size;
    let trainee = Trainee::new(
        check_config(arch, size, store.classes(), mels)?
            .init(&device)?
            .train(),
        LossSpec {
            kind: t.loss,
            smoothing: t.label_smoothing,
        },
    );
    let mut stepper = Stepper::new(trainee, &t, steps + 1)?;
    let mut losses = Vec::new();
    let mut step = |k: usize| -> Result<f64> {
        let b = batch(
            store,
            k * batch_size,
            batch_size,
            t.secondary_weight,
            &device,
        )?;
        let t0 = Instant::now();
        let rec = stepper.step(vec![b]);
        losses.push(rec.loss);
        Ok(t0.elapsed().as_secs_f64())
    };
    let first_s = step(0)?;
    let total: f64 = (1..=steps.max(1)).map(&mut step).sum::<Result<f64>>()?;
    let n = steps.max(1) as f64;
    Ok(TrainTiming {
        arch: arch.to_string(),
        batch: batch_size,
        first_s,
        steps: steps.max(1),
        s_per_step: total / n,
        steps_per_s: n / total,
        windows_per_s: n * batch_size as f64 / total,
        losses,
    })
}

/// Runs every phase, rewriting `opts.out` after each, and returns the report (see
/// [`Report::passed`]). Only a report that cannot be written is an error.
pub fn run(opts: &CheckOptions, log: &mut dyn FnMut(&str)) -> Result<Report> {
    let mut report = Report {
        tool: format!("gpu-check {}", env!("CARGO_PKG_VERSION")),
        device: opts.device.clone(),
        size: opts.size,
        phases: Vec::new(),
    };
    std::fs::create_dir_all(&opts.work).map_err(|e| Error::io(&opts.work, e))?;
    let mut phase = |report: &mut Report,
                     name: &'static str,
                     f: &mut dyn FnMut() -> Result<(serde_json::Value, Option<String>)>|
     -> Result<()> {
        log(&format!("== {name}"));
        let t0 = Instant::now();
        let (status, error, result) = match catch_unwind(AssertUnwindSafe(&mut *f)) {
            Ok(Ok((v, None))) => (Status::Ok, None, v),
            Ok(Ok((v, Some(failed)))) => (Status::CheckFailed, Some(failed), v),
            Ok(Err(e)) => (Status::Error, Some(e.to_string()), serde_json::Value::Null),
            Err(p) => (
                Status::Error,
                Some(format!("panic: {}", panic_message(&p))),
                serde_json::Value::Null,
            ),
        };
        let p = Phase {
            name,
            status,
            seconds: t0.elapsed().as_secs_f64(),
            error,
            result,
        };
        log(&format!(
            "{name}: {:?} in {:.1} s{}\n{}",
            p.status,
            p.seconds,
            p.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default(),
            serde_json::to_string_pretty(&p.result).unwrap_or_default()
        ));
        report.phases.push(p);
        crate::pipeline::write_json(&opts.out, report)
    };

    // Device.
    let mut device: Option<Device> = None;
    let mut scaling_devices = opts.scaling_devices.clone();
    phase(&mut report, "device", &mut || {
        let d = silencio_infer::parse_device(&opts.device)?;
        // A first tensor brings the device up (adapter, queue), so a broken driver fails here.
        let probe: Vec<f32> = Tensor::<1>::from_floats([1.0, 2.0], &d)
            .mul_scalar(2.0)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(data_err)?;
        let adapters = adapters();
        if scaling_devices.is_empty() {
            scaling_devices = gpu_devices(&opts.device, &adapters);
        }
        let info = DeviceInfo {
            compiled: silencio_infer::compiled_backends(),
            device: format!("{d:?}"),
            adapters,
            scaling_devices: scaling_devices.clone(),
            cpu_threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        device = Some(d);
        let failed = (probe != [2.0, 4.0]).then(|| format!("2·[1, 2] gave {probe:?}"));
        Ok((to_json(&info), failed))
    })?;
    let Some(device) = device else {
        return Ok(report);
    };

    // Data: the embedded recordings through the trainer's ETL.
    let mut data: Option<(Experiment, Arc<WindowStore>)> = None;
    phase(&mut report, "data", &mut || {
        let (exp, s) = embedded_store(&opts.work)?;
        let info = serde_json::json!({
            "windows": s.len(),
            "shape": s.shape(),
            "classes": s.classes(),
        });
        data = Some((exp, Arc::new(s)));
        Ok((info, None))
    })?;
    let Some((exp, store)) = data else {
        return Ok(report);
    };

    phase(&mut report, "parity", &mut || {
        let rows = TIMED_ARCHS
            .iter()
            .map(|a| parity(a, opts.size, &store, 4, &device))
            .collect::<Result<Vec<_>>>()?;
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| r.max_abs_diff > r.tolerance || r.max_abs_diff.is_nan())
            .map(|r| format!("{}: |Δlogit| {} > {}", r.arch, r.max_abs_diff, r.tolerance))
            .collect();
        Ok((
            to_json(&rows),
            (!failed.is_empty()).then(|| failed.join("; ")),
        ))
    })?;

    phase(&mut report, "inference", &mut || {
        let mut rows = Vec::new();
        for arch in TIMED_ARCHS {
            for &b in &opts.batch_sizes {
                rows.push(time_inference(
                    arch,
                    opts.size,
                    &store,
                    b,
                    opts.infer_iters,
                    &device,
                )?);
            }
        }
        Ok((to_json(&rows), None))
    })?;

    phase(&mut report, "training", &mut || {
        let rows = TIMED_ARCHS
            .iter()
            .map(|a| {
                time_training(
                    a,
                    opts.size,
                    &store,
                    &exp,
                    opts.train_batch,
                    opts.train_steps,
                    &device,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        let failed: Vec<String> = rows
            .iter()
            .filter(|r| !r.losses.iter().all(|l| l.is_finite()))
            .map(|r| format!("{}: non-finite loss {:?}", r.arch, r.losses))
            .collect();
        Ok((
            to_json(&rows),
            (!failed.is_empty()).then(|| failed.join("; ")),
        ))
    })?;

    phase(&mut report, "scaling", &mut || {
        let mut e = exp.clone();
        e.model.arch = match opts.size {
            CheckSize::Full => TIMED_ARCHS[0].parse()?,
            CheckSize::Tiny => Architecture::Tiny,
        };
        e.train.batch_size = opts.train_batch;
        e.train.workers = 1;
        let counts = scaling_counts(scaling_devices.len());
        let kind = opts.device.split(':').next().unwrap_or("gpu").to_string();
        let (rows, table) = scaling::run(
            RunOptions {
                experiment: e,
                resume: false,
                run_name: None,
                tracking_uri: opts.work.join("mlruns").display().to_string(),
                registry: opts.work.join("registry").display().to_string(),
                teacher_override: None,
                parent_run: None,
                baseline: None,
            },
            &kind,
            &scaling_devices,
            &counts,
            opts.scaling_steps,
            &opts.work.join("scaling"),
            &mut |_| {},
        )?;
        Ok((
            serde_json::json!({ "devices": scaling_devices, "rows": rows, "table": table }),
            None,
        ))
    })?;
    Ok(report)
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaling_counts_are_powers_of_two_up_to_the_devices() {
        assert_eq!(scaling_counts(0), vec![1]);
        assert_eq!(scaling_counts(1), vec![1]);
        assert_eq!(scaling_counts(3), vec![1, 2]);
        assert_eq!(scaling_counts(8), vec![1, 2, 4, 8]);
    }

    #[test]
    fn scaling_devices_follow_the_gpus_found() {
        let gpu = |t: &str, b: &str| Adapter {
            name: "x".into(),
            device_type: t.into(),
            backend: b.into(),
            driver: String::new(),
        };
        let h100s = [
            gpu("DiscreteGpu", "Vulkan"),
            gpu("DiscreteGpu", "Vulkan"),
            gpu("DiscreteGpu", "Gl"),
            gpu("Cpu", "Vulkan"),
        ];
        assert_eq!(gpu_devices("wgpu", &h100s), ["wgpu:0", "wgpu:1"]);
        assert_eq!(gpu_devices("cuda:1", &h100s), ["cuda:0", "cuda:1"]);
        let lavapipe = [gpu("Cpu", "Vulkan")];
        assert_eq!(gpu_devices("wgpu", &lavapipe), ["wgpu", "wgpu:cpu"]);
        assert_eq!(gpu_devices("cuda", &[]), ["cuda"]);
        assert_eq!(gpu_devices("flex", &[]), ["flex", "flex"]);
    }

    #[test]
    fn the_embedded_set_keeps_its_rows_and_licences() {
        let dir = tempfile::tempdir().unwrap();
        write_embedded_dataset(dir.path()).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("train.csv")).unwrap();
        assert_eq!(csv.lines().count(), 1 + CLIPS.len(), "{csv}");
        for (name, bytes) in CLIPS {
            assert!(csv.contains(&format!(",{name},")), "{name} has its row");
            assert_eq!(
                std::fs::read(dir.path().join("train_audio").join(name)).unwrap(),
                bytes
            );
        }
        // Every row keeps its licence (the last column).
        assert!(
            csv.lines()
                .skip(1)
                .all(|l| l.rsplit(',').next().is_some_and(|c| !c.trim().is_empty())),
            "{csv}"
        );
    }
}
