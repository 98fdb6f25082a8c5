//! `silencio identify` and `silencio bundle`: thin wrappers over silencio-infer and
//! silencio-models.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use burn::tensor::Device;
use silencio_audio::{FeatureConfig, RECIPES};
use silencio_infer::{
    BundleSpec, Classifier, Ensemble, Format, Member, ModelBundle, Provenance, RenderOptions,
    Species, registry,
};
use silencio_models::{ARCHITECTURES, CheckpointLayout, ModelConfig};
use silencio_onnx::probe::ProbeBundle;

/// `silencio identify`.
#[derive(clap::Args)]
pub struct IdentifyArgs {
    /// Audio file (WAV, OGG, FLAC, MP3, M4A/MP4).
    pub audio: PathBuf,
    /// A model bundle directory, or `birdnet` (builds with the `birdnet` feature). Several
    /// (`--model a --model birdnet`, or comma-separated) make an ensemble: weighted mean of
    /// probabilities on the 5 s grid, species of the first member. Default: the registry's
    /// production version, else staging.
    #[arg(long, env = "SILENCIO_MODEL", value_delimiter = ',')]
    pub model: Vec<String>,
    /// Ensemble weights, one per --model (default: all 1).
    #[arg(long, value_delimiter = ',')]
    pub weight: Vec<f32>,
    /// Registry root used when --model is not given.
    #[arg(long, env = "SILENCIO_REGISTRY", default_value = "registry")]
    pub registry: PathBuf,
    /// Species reported per window.
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Lowest score reported.
    #[arg(long, default_value_t = 0.0)]
    pub min_score: f32,
    /// Output format.
    #[arg(long, default_value = "json", value_parser = ["json", "csv", "raven", "audacity"])]
    pub format: String,
    /// Write here (atomically) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Compute device: flex, wgpu[:N], cuda[:N].
    #[arg(long, env = "SILENCIO_DEVICE", default_value = "flex")]
    pub device: String,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Longest accepted recording in seconds.
    #[arg(long, env = "SILENCIO_MAX_DURATION_S", default_value_t = 3600.0)]
    pub max_duration_s: f64,
}

/// `silencio bundle create`.
#[derive(clap::Args)]
pub struct BundleCreateArgs {
    /// Architecture.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(ARCHITECTURES))]
    pub arch: String,
    /// Use the SED attention head instead of the clip head.
    #[arg(long)]
    pub sed: bool,
    /// BirdCLEF `taxonomy.csv`: the classes, in order.
    #[arg(long)]
    pub taxonomy: PathBuf,
    /// Feature recipe.
    #[arg(long, default_value = "birdclef", value_parser = clap::builder::PossibleValuesParser::new(RECIPES))]
    pub recipe: String,
    /// Start from an official PyTorch checkpoint (backbone kept, classifier replaced).
    #[arg(long)]
    pub pretrained: Option<PathBuf>,
    /// Its layout.
    #[arg(long, value_parser = ["torchvision-efficientnet", "timm-efficientnet", "lite0-package", "torchvision-resnet", "panns-cnn14"])]
    pub layout: Option<String>,
    /// Bundle name.
    #[arg(long)]
    pub name: String,
    /// Bundle version.
    #[arg(long, default_value = "0")]
    pub version: String,
    /// Output directory (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

fn write_out(out: Option<&Path>, body: &str) -> anyhow::Result<()> {
    match out {
        Some(p) => silencio_audio::npy::write_atomic(p, body.as_bytes())
            .with_context(|| format!("writing {}", p.display())),
        None => {
            let mut so = std::io::stdout().lock();
            so.write_all(body.as_bytes())?;
            so.flush()?;
            Ok(())
        }
    }
}

/// One loaded member: the model, its classes and the frequency band it listens to.
struct Loaded {
    member: Box<dyn Member>,
    species: Vec<Species>,
    band: (f64, f64),
}

fn load_classifier(spec: &str, a: &IdentifyArgs, device: &Device) -> anyhow::Result<Classifier> {
    open_classifier(spec, device, a.batch_size, a.max_duration_s)
}

/// Opens the bundle at `spec` on `device`, warning on stderr when it is marked untrained.
pub(crate) fn open_classifier(
    spec: &str,
    device: &Device,
    batch_size: usize,
    max_duration_s: f64,
) -> anyhow::Result<Classifier> {
    let c = Classifier::load(spec, device)?
        .with_batch_size(batch_size)
        .with_max_duration(max_duration_s);
    if !c.meta().provenance.trained {
        eprintln!(
            "warning: bundle {} is marked untrained (provenance.trained = false): its \
             scores are not identifications",
            c.model_version()
        );
    }
    Ok(c)
}

fn load_member(spec: &str, a: &IdentifyArgs, device: &Device) -> anyhow::Result<Loaded> {
    if spec == "birdnet" {
        return birdnet_member(device, a.max_duration_s);
    }
    if ProbeBundle::is_probe(Path::new(spec)) {
        return probe_member(spec, device, a.max_duration_s);
    }
    let c = load_classifier(spec, a, device)?;
    let f = c.features().clone();
    Ok(Loaded {
        species: c.species().as_ref().clone(),
        band: (f.f_min, f.f_max),
        member: Box::new(c),
    })
}

/// The registry's default bundle (production, else staging), saying on stderr which one.
pub(crate) fn registry_default(root: &Path) -> anyhow::Result<String> {
    let (dir, alias) = registry::resolve_default(root)?;
    eprintln!("using the registry's {alias} model: {}", dir.display());
    Ok(dir.display().to_string())
}

/// Runs `silencio identify`.
pub fn identify(a: IdentifyArgs) -> anyhow::Result<()> {
    let format: Format = a.format.parse()?;
    let device = silencio_infer::parse_device(&a.device)?;
    let bytes =
        std::fs::read(&a.audio).with_context(|| format!("reading {}", a.audio.display()))?;
    let mut specs = a.model.clone();
    if specs.is_empty() {
        specs.push(registry_default(&a.registry)?);
    }
    if !a.weight.is_empty() && a.weight.len() != specs.len() {
        bail!(
            "{} --weight values for {} models: give one per model or none",
            a.weight.len(),
            specs.len()
        );
    }
    let single_bundle =
        specs.len() == 1 && specs[0] != "birdnet" && !ProbeBundle::is_probe(Path::new(&specs[0]));
    let (id, (low_hz, high_hz)) = if single_bundle {
        // One bundle: its own windows (its recipe's window length and hop), no pooling.
        let c = load_classifier(&specs[0], &a, &device)?;
        let band = (c.features().f_min, c.features().f_max);
        (c.identify(bytes)?, band)
    } else {
        let loaded = specs
            .iter()
            .map(|s| load_member(s, &a, &device))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let low = loaded
            .iter()
            .map(|l| l.band.0)
            .fold(f64::INFINITY, f64::min);
        let high = loaded.iter().map(|l| l.band.1).fold(0.0, f64::max);
        let name = loaded
            .iter()
            .map(|l| l.member.name())
            .collect::<Vec<_>>()
            .join("+");
        let mut ens = Ensemble::new(
            name,
            loaded[0].species.clone(),
            silencio_audio::WindowConfig::default(),
        )
        .with_max_duration(a.max_duration_s);
        for (i, l) in loaded.into_iter().enumerate() {
            ens = ens.add(l.member, a.weight.get(i).copied().unwrap_or(1.0))?;
        }
        (ens.identify(bytes)?, (low, high))
    };
    let opts = RenderOptions {
        top_k: a.top_k,
        min_score: a.min_score,
        file: a.audio.display().to_string(),
        low_hz,
        high_hz,
    };
    write_out(
        a.out.as_deref(),
        &silencio_infer::render(&id, format, &opts)?,
    )
}

#[cfg(feature = "birdnet")]
fn birdnet_member(device: &Device, max_duration_s: f64) -> anyhow::Result<Loaded> {
    eprintln!("BirdNET V2.4 (CC BY-NC-SA 4.0: non-commercial use only)");
    let m = silencio_onnx::BirdNet::load(device)?.with_max_duration(max_duration_s);
    Ok(Loaded {
        species: m.species().as_ref().clone(),
        band: (0.0, 15_000.0),
        member: Box::new(m),
    })
}

/// A linear probe on BirdNET embeddings (a `birdnet-probe` experiment's bundle).
#[cfg(feature = "birdnet")]
fn probe_member(spec: &str, device: &Device, _max_duration_s: f64) -> anyhow::Result<Loaded> {
    eprintln!("BirdNET V2.4 probe (CC BY-NC-SA 4.0: non-commercial use only)");
    let m = silencio_onnx::BirdNetProbe::load(spec, device)?;
    Ok(Loaded {
        species: m.bundle().meta().species.clone(),
        band: (0.0, 15_000.0),
        member: Box::new(m),
    })
}

#[cfg(not(feature = "birdnet"))]
fn probe_member(spec: &str, _device: &Device, _max_duration_s: f64) -> anyhow::Result<Loaded> {
    Err(crate::Failure::error(
        "no_birdnet",
        format!(
            "{spec} is a linear probe on BirdNET embeddings and this build has no BirdNET: convert it \
         with onnx-import/scripts/convert-birdnet.sh OUT_DIR, then build with \
         SILENCIO_BIRDNET_DIR=OUT_DIR cargo build --release -p silencio --features birdnet"
        ),
    ))
}

#[cfg(not(feature = "birdnet"))]
fn birdnet_member(_device: &Device, _max_duration_s: f64) -> anyhow::Result<Loaded> {
    Err(crate::Failure::error(
        "no_birdnet",
        "this build has no BirdNET: convert it with onnx-import/scripts/convert-birdnet.sh OUT_DIR, \
         then build with SILENCIO_BIRDNET_DIR=OUT_DIR cargo build --release -p silencio --features birdnet",
    ))
}

/// Runs `silencio bundle create`.
pub fn bundle_create(a: BundleCreateArgs) -> anyhow::Result<()> {
    let taxonomy = silencio_data::Taxonomy::from_csv(&a.taxonomy)?;
    let features = FeatureConfig::recipe(&a.recipe)?;
    let species: Vec<Species> = taxonomy
        .species()
        .iter()
        .map(|s| Species {
            code: s.primary_label.clone(),
            scientific_name: s.scientific_name.clone(),
            common_name: s.common_name.clone(),
            class_name: s.class_name.clone(),
        })
        .collect();
    let device = silencio_infer::parse_device("flex")?;
    let classes = species.len();
    let mut cfg = ModelConfig::named(&a.arch, classes, features.n_mels)?;
    if a.sed {
        if a.pretrained.is_some() {
            bail!(
                "--sed with --pretrained is not supported: start from the clip-head bundle and \
                 train the SED head from there"
            );
        }
        cfg = cfg.with_sed_head(0.25);
    }
    let (model, source) = match (&a.pretrained, a.layout.as_deref()) {
        (None, None) => (cfg.init(&device)?, "random initialisation".to_string()),
        (Some(p), Some(layout)) => {
            let layout = CheckpointLayout::parse(layout)?;
            let (m, ck, report) = silencio_models::from_checkpoint(&cfg, layout, p, &device)?;
            eprintln!(
                "loaded {} tensors from {} ({} skipped as irrelevant)",
                report.applied,
                p.display(),
                report.ignored
            );
            cfg = ck;
            (m, format!("pretrained backbone {}", p.display()))
        }
        _ => bail!("--pretrained and --layout go together"),
    };
    let spec = BundleSpec {
        name: a.name,
        version: a.version,
        model: cfg,
        features,
        species,
        provenance: Provenance {
            trained: false,
            source,
            ..Provenance::default()
        },
    };
    let b = ModelBundle::write(&a.out, spec, &model)?;
    eprintln!(
        "wrote untrained bundle {} ({}, {} species) to {}",
        b.meta().model_version(),
        b.meta().model.name(),
        b.meta().species.len(),
        a.out.display()
    );
    Ok(())
}
