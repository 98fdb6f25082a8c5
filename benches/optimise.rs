//! Measures `bundle::optimise` on full-size models: the weights file in f32, f16 and int8,
//! how long a server takes to open each (checksum, load, widen, fold), and how far each moves
//! the probabilities on real audio. The numbers in `crates/infer/OPTIMISE.md` come from here:
//!
//! ```sh
//! cargo bench -p silencio-benches --bench optimise -- \
//!     [--arch resnet50,efficientnet_b0] [--seeds 1] [--bundle DIR ...] [--audio DIR] \
//!     [--classes 206]
//! ```
//! `--arch` writes random-weight bundles of those architectures (`bundle create`'s models, with
//! BirdCLEF 2025's 206 classes) whose batch norms are recalibrated on the windows the
//! comparison runs on, as the kernels' parity test does: a random initialisation's scores are
//! its biases (every layer shrinks the signal), which no rounding moves, and batch norms
//! calibrated on other audio blow up (a random EfficientNet-B0 calibrated on the demo
//! soundscape reaches logits of 9e3 on the demo clips, where 1e-5 of noise on the input moves
//! a probability by 0.8). `--bundle` adds existing f32 bundles (e.g. a trained one), used as
//! they are. Besides the probability differences it prints how far they are relative to how
//! much the f32 probabilities vary across windows (`rel`).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Tensor;
use silencio_audio::Features;
use silencio_infer::{
    BundleSpec, Classifier, ModelBundle, OutputDiff, Provenance, Species, WeightsDtype, optimise,
};
use silencio_models::ModelConfig;

// The tests' helper `recalibrate`.
#[path = "../crates/infer/tests/common/mod.rs"]
mod common;

type Res<T> = Result<T, Box<dyn Error>>;

struct Args {
    arch: Vec<String>,
    seeds: Vec<u64>,
    bundles: Vec<PathBuf>,
    audio: PathBuf,
    classes: usize,
}

fn args() -> Res<Args> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut a = Args {
        arch: vec!["resnet50".into(), "efficientnet_b0".into()],
        seeds: vec![1],
        bundles: Vec::new(),
        audio: root.join("datasets/demo/birdclef/train_audio"),
        classes: 206,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // `cargo bench` passes `--bench` to every harness-less bench.
        if flag == "--bench" {
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--arch" => {
                a.arch = value
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(Into::into)
                    .collect()
            }
            "--seeds" => a.seeds = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--bundle" => a.bundles.push(value.into()),
            "--audio" => a.audio = value.into(),
            "--classes" => a.classes = value.parse()?,
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    Ok(a)
}

/// A random-weight bundle of `arch`, as `silencio bundle create` makes one.
fn random_bundle(
    arch: &str,
    seed: u64,
    classes: usize,
    calibration: &Tensor<4>,
    dir: &Path,
) -> Res<PathBuf> {
    let features = silencio_audio::FeatureConfig::recipe("birdclef")?;
    let model_cfg = ModelConfig::named(arch, classes, features.n_mels)?;
    let device = silencio_infer::default_device()?;
    device.seed(seed);
    let model = model_cfg.init(&device)?;
    let model = common::recalibrate(model, calibration);
    let species = (0..classes)
        .map(|i| Species {
            code: format!("sp{i}"),
            scientific_name: format!("Genus species{i}"),
            common_name: format!("Species {i}"),
            class_name: "Aves".into(),
        })
        .collect();
    let out = dir.join(format!("{arch}-s{seed}"));
    ModelBundle::write(
        &out,
        BundleSpec {
            name: arch.into(),
            version: format!("seed{seed}"),
            model: model_cfg,
            features,
            species,
            provenance: Provenance {
                source: "random initialisation, batch norms recalibrated on the windows compared \
                         (benches/optimise.rs)"
                    .into(),
                ..Provenance::default()
            },
            location: None,
            post_process: None,
        },
        &model,
    )?;
    Ok(out)
}

/// Every file's log-mel windows (the `birdclef` recipe, which every bundle measured uses).
fn features(files: &[PathBuf]) -> Res<Vec<Features>> {
    let cfg = silencio_audio::FeatureConfig::recipe("birdclef")?;
    let mut out = Vec::new();
    for f in files {
        out.push(silencio_audio::features_from_path(f, &cfg, 3600.0)?.1);
    }
    Ok(out)
}

/// All windows as one `[n, 1, mels, frames]` tensor.
fn windows(feats: &[Features]) -> Res<Tensor<4>> {
    let device = silencio_infer::default_device()?;
    let all = feats
        .iter()
        .map(|f| silencio_infer::features_to_tensor(f, &device))
        .collect();
    Ok(Tensor::cat(all, 0))
}

/// `x` rounded to f16's 11 significant bits (log-mel dB values are well inside f16's range):
/// the input perturbation that says how sensitive a model is to f16-sized changes.
fn f16_precision(x: f32) -> f32 {
    f32::from_bits((x.to_bits() + 0x1000) & !0x1fff)
}

/// Median seconds of `n` runs of `f`, and its last result.
fn timed<T>(n: usize, mut f: impl FnMut() -> Res<T>) -> Res<(f64, T)> {
    let mut times = Vec::with_capacity(n);
    let mut last = None;
    for _ in 0..n {
        let t = Instant::now();
        last = Some(f()?);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok((times[n / 2], last.ok_or("no runs")?))
}

/// Probabilities of every window of every file.
fn scores(c: &Classifier, feats: &[Features]) -> Res<Vec<Vec<f32>>> {
    let mut rows = Vec::new();
    for f in feats {
        rows.extend(c.predict_features(f)?);
    }
    Ok(rows)
}

/// Mean over species of the range of a species' probability across windows: how much the
/// f32 model's output varies at all.
fn spread(rows: &[Vec<f32>]) -> f64 {
    let k = rows.first().map_or(0, Vec::len);
    let total: f64 = (0..k)
        .map(|j| {
            let (lo, hi) = rows.iter().fold((f32::MAX, f32::MIN), |(lo, hi), r| {
                (lo.min(r[j]), hi.max(r[j]))
            });
            f64::from(hi - lo)
        })
        .sum();
    total / k.max(1) as f64
}

fn measure(src: &Path, feats: &[Features], tmp: &Path) -> Res<()> {
    let device = silencio_infer::default_device()?;
    let meta = ModelBundle::open(src)?.meta().clone();
    println!(
        "\n## {} ({}, {} species)\n",
        meta.model_version(),
        meta.model.name(),
        meta.species.len()
    );
    println!(
        "| weights | file (MB) | of f32 | optimise (s) | open + load (s) | score {} files (s) | max abs Δp | mean abs Δp | rel | top-1 agree |",
        feats.len()
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let (_, f32c) = timed(1, || Ok(Classifier::load(src, &device)?))?;
    let (_, reference) = timed(1, || scores(&f32c, feats))?;
    let spread = spread(&reference);
    let rounded: Vec<Features> = feats
        .iter()
        .map(|f| Features {
            data: f.data.iter().copied().map(f16_precision).collect(),
            ..f.clone()
        })
        .collect();
    let d = OutputDiff::between(&reference, &scores(&f32c, &rounded)?)?;
    println!(
        "| f32, input at f16 precision | | | | | | {:.2e} | {:.2e} | {:.2e} | {:.3} |",
        d.max_abs,
        d.mean_abs,
        f64::from(d.max_abs) / spread.max(f64::MIN_POSITIVE),
        d.top1_agreement,
    );
    for dtype in WeightsDtype::ALL {
        let (t_opt, dir) = if dtype == WeightsDtype::F32 {
            (0.0, src.to_path_buf())
        } else {
            let dest = tmp.join(format!("{}-{}-{dtype}", meta.name, meta.version));
            let _ = std::fs::remove_dir_all(&dest);
            timed(1, || {
                Ok(optimise(src, &dest, dtype, &device)?.dir().to_path_buf())
            })?
        };
        let b = ModelBundle::open(&dir)?;
        // What a server does at start-up: checksum, read, widen, fold batch norms.
        let (t_load, c) = timed(3, || Ok(Classifier::load(&dir, &device)?))?;
        let (t_run, rows) = timed(1, || scores(&c, feats))?;
        let d = OutputDiff::between(&reference, &rows)?;
        println!(
            "| {dtype} | {:.2} | {:.3} | {} | {t_load:.2} | {t_run:.1} | {:.2e} | {:.2e} | {:.2e} | {:.3} |",
            b.meta().weights.bytes as f64 / 1e6,
            b.meta().weights.bytes as f64 / meta.weights.bytes as f64,
            if dtype == WeightsDtype::F32 {
                "–".to_string()
            } else {
                format!("{t_opt:.1}")
            },
            d.max_abs,
            d.mean_abs,
            f64::from(d.max_abs) / spread.max(f64::MIN_POSITIVE),
            d.top1_agreement,
        );
    }
    println!(
        "\n{} windows; f32 probabilities vary by {spread:.2e} across windows (mean over species of max − min); rel = max abs Δp / that.",
        reference.len()
    );
    Ok(())
}

fn main() -> Res<()> {
    let a = args()?;
    let files = silencio_infer::scorer::reference_files(&a.audio)?;
    let feats = features(&files)?;
    let tmp = std::env::temp_dir().join(format!("silencio-optimise-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let result = (|| {
        let mut sources = a.bundles.clone();
        if !a.arch.is_empty() {
            let calibration = windows(&feats)?;
            for arch in &a.arch {
                for &seed in &a.seeds {
                    sources.push(random_bundle(arch, seed, a.classes, &calibration, &tmp)?);
                }
            }
        }
        for s in &sources {
            measure(s, &feats, &tmp)?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}
