//! `silencio identify` and `silencio bundle`: thin wrappers over silencio-infer and
//! silencio-models.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use silencio_audio::{FeatureConfig, RECIPES};
use silencio_infer::{
    Blend, BundleSpec, Classifier, Format, Licence, ModelBundle, ModelSpec, OpenOptions,
    OutputDiff, Provenance, RenderOptions, Scorer, Species,
};
use silencio_models::{ARCHITECTURES, CheckpointLayout, ModelConfig};

/// Which model to run and how: shared by `identify`, `eval`, `submission` and `watch`.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// A model: a bundle directory, an ensemble file (.toml/.json) or directory, `birdnet`
    /// (builds with the `birdnet` feature), a BirdNET probe directory, `registry` (production,
    /// else staging) or `registry:<alias or version>`. Several (`--model a --model b`, or
    /// comma-separated) make an ensemble on the 5 s grid, species of the first member.
    /// Default: `registry`.
    #[arg(long, env = "SILENCIO_MODEL", value_delimiter = ',')]
    pub model: Vec<String>,
    /// Ensemble weights, one per --model (default: all 1).
    #[arg(long, value_delimiter = ',')]
    pub weight: Vec<f32>,
    /// How an ensemble combines its members: `probability` (weighted mean) or `rank`
    /// (weighted mean of per-class ranks against --rank-reference).
    #[arg(long)]
    pub blend: Option<Blend>,
    /// Rank blending: audio (a file or a directory) whose windows give each member's score
    /// distribution per class.
    #[arg(long)]
    pub rank_reference: Option<PathBuf>,
    /// Registry root that `registry` and `registry:<name>` refer to.
    #[arg(long, env = "SILENCIO_REGISTRY", default_value = "registry")]
    pub registry: PathBuf,
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

impl ModelArgs {
    /// The spec the flags name.
    pub fn spec(&self) -> anyhow::Result<ModelSpec> {
        Ok(ModelSpec::from_cli(
            &self.model,
            &self.weight,
            self.blend,
            self.rank_reference.as_deref(),
            &self.registry,
        )?)
    }

    /// Opens the model, saying on stderr which registry version a bare `registry` meant,
    /// which members are untrained and which licences forbid commercial use.
    pub fn open(&self) -> anyhow::Result<Scorer> {
        let spec = self.spec()?;
        if let ModelSpec::Registry {
            root,
            reference: silencio_infer::spec::RegistryRef::Default,
        } = &spec
        {
            let (dir, alias) = silencio_infer::registry::resolve_default(root)?;
            eprintln!("using the registry's {alias} model: {}", dir.display());
        }
        let device = silencio_infer::parse_device(&self.device)?;
        let scorer = silencio_infer::open(
            &spec,
            &device,
            &OpenOptions {
                batch_size: self.batch_size,
                max_duration_s: self.max_duration_s,
            },
        )?;
        for name in scorer.untrained() {
            eprintln!(
                "warning: {name} is marked untrained (provenance.trained = false): its scores \
                 are not identifications"
            );
        }
        let nc: Vec<String> = scorer
            .licences()
            .iter()
            .filter(|l| l.non_commercial())
            .map(|l| format!("{} ({})", l.id, l.covers))
            .collect();
        if !nc.is_empty() {
            eprintln!("licence: non-commercial use only: {}", nc.join(", "));
        }
        Ok(scorer)
    }
}

/// `silencio identify`.
#[derive(clap::Args)]
pub struct IdentifyArgs {
    /// Audio file (WAV, OGG, FLAC, MP3, M4A/MP4).
    pub audio: PathBuf,
    #[command(flatten)]
    pub model: ModelArgs,
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
    /// Where it was recorded (WGS 84 latitude): with --lon, species the model's location
    /// filter does not expect there are removed or down-weighted (--location-mode).
    #[arg(long, allow_hyphen_values = true, requires = "lon")]
    pub lat: Option<f64>,
    /// Where it was recorded (WGS 84 longitude).
    #[arg(long, allow_hyphen_values = true, requires = "lat")]
    pub lon: Option<f64>,
    /// When it was recorded (`YYYY-MM-DD` or RFC 3339): the week, for range models that use it.
    #[arg(long, requires = "lat")]
    pub date: Option<String>,
    /// `filter` (species expected below 0.05 are zeroed), `filter:<threshold>` or `reweight`
    /// (scores times the species' occurrence there).
    #[arg(long, default_value = "filter")]
    pub location_mode: silencio_infer::location::FilterMode,
}

/// `silencio ensemble`.
#[derive(clap::Args)]
pub struct EnsembleArgs {
    /// The members (see `silencio identify --help` for --model, --weight, --blend).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Its name (default: the members' names joined by `+`).
    #[arg(long)]
    pub name: Option<String>,
    /// Write the self-contained ensemble directory here (must not exist): the member bundles,
    /// `ensemble.toml`, the rank reference.
    #[arg(long)]
    pub out: PathBuf,
    /// Also register it in --registry as a new version (the server then loads it with
    /// `registry_version`, `--model registry:<version>`, canary and promote like a bundle).
    #[arg(long)]
    pub register: bool,
    /// With --register: the alias to point at the new version.
    #[arg(long, default_value = "staging", requires = "register")]
    pub alias: String,
    /// With --register: the registered model it joins (default: the one the registry holds,
    /// else the ensemble's name).
    #[arg(long, requires = "register")]
    pub registered_name: Option<String>,
}

/// Runs `silencio ensemble`: checks that the members open together, packs them, registers.
pub fn ensemble(a: EnsembleArgs) -> anyhow::Result<()> {
    let spec = a.model.spec()?;
    // Opening proves the members load, share species and (for rank) calibrate.
    let scorer = a.model.open()?;
    let name = a.name.clone().unwrap_or_else(|| scorer.name());
    drop(scorer);
    let dir = silencio_infer::spec::pack(&spec, Some(&name), &a.out)?;
    eprintln!("packed ensemble {name} into {}", dir.display());
    if a.register {
        let uri = a.model.registry.display().to_string();
        let reg = silencio_mlops::Registry::open(&uri)?;
        let registered = match &a.registered_name {
            Some(n) => n.clone(),
            None => reg
                .local_model_name()?
                .unwrap_or_else(|| name.replace(['+', '@'], "-")),
        };
        let source = dir.display().to_string();
        let v = reg.create_version(
            &registered,
            &silencio_mlops::registry::NewVersion {
                source: &source,
                run_id: None,
                description: &format!("ensemble {name}"),
                tags: &[("kind", "ensemble")],
            },
        )?;
        reg.set_alias(&registered, &a.alias, v)?;
        println!(
            "registered {registered} version {v} ({}): ensemble {name}",
            a.alias
        );
    }
    Ok(())
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
    /// A `train.csv` whose coordinates give each species' occurrence by location (the
    /// bundle's location filter; rows without coordinates are skipped).
    #[arg(long)]
    pub location_from: Option<PathBuf>,
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

/// Runs `silencio identify`.
pub fn identify(a: IdentifyArgs) -> anyhow::Result<()> {
    let format: Format = a.format.parse()?;
    let bytes =
        std::fs::read(&a.audio).with_context(|| format!("reading {}", a.audio.display()))?;
    use silencio_infer::location::{LocationQuery, Place, Week};
    // The place is checked before the model loads: a typo costs nothing.
    let query = match (a.lat, a.lon) {
        (Some(lat), Some(lon)) => Some(LocationQuery {
            place: Place::new(lat, lon)?,
            week: a.date.as_deref().map(Week::from_date).transpose()?,
        }),
        _ => None,
    };
    let scorer = a.model.open()?;
    // A soundscape name (`H02_20230420_074000.ogg`) gives the site and hour priors.
    let context = silencio_infer::RecordingContext::from_path(&a.audio);
    let mut id = scorer.identify_in(bytes, &context)?;
    let location = match (query, scorer.location()) {
        (Some(q), Some(m)) => Some(m.apply_identification(&mut id, &q, a.location_mode)?),
        (Some(_), None) => {
            eprintln!(
                "warning: {} has no location filter (its bundle records no species ranges); \
                 --lat/--lon change nothing",
                scorer.name()
            );
            None
        }
        (None, _) => None,
    };
    let (low_hz, high_hz) = scorer.band();
    let opts = RenderOptions {
        top_k: a.top_k,
        min_score: a.min_score,
        file: a.audio.display().to_string(),
        low_hz,
        high_hz,
        licences: scorer.licences().to_vec(),
        location,
    };
    write_out(
        a.out.as_deref(),
        &silencio_infer::render(&id, format, &opts)?,
    )
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
    let location = match &a.location_from {
        Some(csv) => {
            let (rows, _) = silencio_data::read_train_csv(csv)?;
            let codes: Vec<&str> = species.iter().map(|s| s.code.as_str()).collect();
            let m = silencio_infer::OccurrenceModel::learn(
                silencio_data::located_points(&rows),
                &codes,
                Default::default(),
            )?
            .with_source(format!("{}: {} rows", csv.display(), rows.len()));
            eprintln!(
                "location filter: {} of {} species located",
                m.known_count(),
                codes.len()
            );
            Some(m)
        }
        None => None,
    };
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
    let (model, source, licence) = match (&a.pretrained, a.layout.as_deref()) {
        (None, None) => (
            cfg.init(&device)?,
            "random initialisation".to_string(),
            Licence::new(
                silencio_infer::licence::OWN,
                "weights: random initialisation",
            ),
        ),
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
            let name = p
                .file_name()
                .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into());
            (
                m,
                format!("pretrained backbone {}", p.display()),
                Licence::new(
                    layout.weights_licence(),
                    format!("pretrained weights: {name}"),
                ),
            )
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
            licences: vec![licence],
            ..Provenance::default()
        },
        location,
        post_process: None,
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

/// `silencio bundle optimise`.
#[derive(clap::Args)]
pub struct BundleOptimiseArgs {
    /// The bundle to convert (f32 weights).
    #[arg(long)]
    pub bundle: PathBuf,
    /// Output directory (must not exist).
    #[arg(long)]
    pub out: PathBuf,
    /// How to store the weights: f16 (half the bytes) or int8 (Burn's quantisation, about a
    /// quarter). The model computes in f32 either way.
    #[arg(long, value_parser = ["f16", "int8"])]
    pub dtype: String,
    /// Recordings (files or directories) on which to compare the two bundles' scores.
    /// Default: four windows of seeded noise, which only shows that nothing broke.
    #[arg(long)]
    pub compare: Vec<PathBuf>,
    /// Compute device for loading and comparing: flex, wgpu[:N], cuda[:N].
    #[arg(long, env = "SILENCIO_DEVICE", default_value = "flex")]
    pub device: String,
}

/// `silencio bundle optimise`: the library converts and compares; this prints.
pub fn bundle_optimise(a: BundleOptimiseArgs) -> anyhow::Result<()> {
    let device = silencio_infer::parse_device(&a.device)?;
    let dtype: silencio_infer::WeightsDtype = a.dtype.parse().map_err(anyhow::Error::msg)?;
    let b = silencio_infer::optimise(&a.bundle, &a.out, dtype, &device)?;
    let (src, dest) = (
        Classifier::load(&a.bundle, &device)?,
        Classifier::load(&a.out, &device)?,
    );
    let (diff, compared_on) = if a.compare.is_empty() {
        (
            OutputDiff::on_noise(&src, &dest, 4, 7)?,
            "4 windows of seeded noise".to_string(),
        )
    } else {
        let mut files = Vec::new();
        for p in &a.compare {
            files.extend(
                silencio_infer::scorer::reference_files(p)
                    .with_context(|| format!("--compare {}", p.display()))?,
            );
        }
        let d = OutputDiff::on_audio(&src, &dest, &files)?;
        (
            d,
            format!("{} windows of {} recordings", d.windows, files.len()),
        )
    };
    let (before, after) = (src.meta().weights.bytes, b.meta().weights.bytes);
    eprintln!(
        "wrote {} ({dtype} weights: {:.1} MB, {:.3} of {:.1} MB) to {}; on {compared_on} the \
         scores moved by at most {:.2e} (mean {:.2e}), top species agree on {:.0} %",
        b.meta().model_version(),
        after as f64 / 1e6,
        after as f64 / before as f64,
        before as f64 / 1e6,
        a.out.display(),
        diff.max_abs,
        diff.mean_abs,
        diff.top1_agreement * 100.0
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "model_version": b.meta().model_version(),
            "converted_from": b.meta().converted_from,
            "weights_dtype": dtype,
            "weights_bytes_before": before,
            "weights_bytes_after": after,
            "compared_on": compared_on,
            "diff": diff,
        }))?
    );
    Ok(())
}
