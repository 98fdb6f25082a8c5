//! Embeddable inference for El Silencio Acoustic Explorer.
//!
//! This crate is the one place where the compute backend is chosen: its Cargo features `flex`
//! (default, pure-Rust CPU), `wgpu` (Vulkan/Metal/DX12 GPUs) and `cuda` map onto Burn's; every
//! binary forwards its own `flex`/`wgpu`/`cuda` features here and nowhere else. At run time
//! [`parse_device`] / [`default_device`] pick among the compiled backends without panicking on
//! a bad name (Burn's own `BURN_DEVICE` lookup panics).
//!
//! On top of that: the model [`bundle`] (one self-describing directory: architecture, weights,
//! feature recipe, species, provenance), the [`Classifier`] that runs one (bytes in, per-window
//! species scores out, with a batch API), [`ensemble`]s of members with different recipes and
//! window lengths, the output [`output`] formats (JSON, CSV, Raven, Audacity) and the
//! [`registry`] lookup used when no model is named.
//!
//! Tools do not pick among these themselves: a [`ModelSpec`] (parsed from `--model` or an
//! ensemble file) goes to [`open`], which gives one [`Scorer`]; [`licence`] says what each
//! model's weights and data allow.
#![warn(missing_docs)]

pub mod bundle;
pub mod classifier;
pub mod ensemble;
pub mod licence;
pub mod location;
pub mod output;
pub mod priors;
pub mod registry;
pub mod scorer;
pub mod spec;

use burn::tensor::{Device, Tensor, TensorData};
use silencio_audio::Features;

pub use bundle::{
    BundleMeta, BundleSpec, ModelBundle, Provenance, Species, WeightsDtype, optimise,
};
pub use classifier::{Classifier, Identification, OutputDiff, SpeciesScore, WindowScores, top_k};
pub use ensemble::{Ensemble, Member, MemberInfo};
pub use licence::{Deployment, Licence, LicenceStatus};
pub use location::{
    FilterMode, FilterOutcome, LOCATION_FILE, LocationFilter, LocationQuery, OccurrenceConfig,
    OccurrenceModel, Place, Week,
};
pub use output::{Format, RenderOptions, render};
pub use priors::{
    ClassGroup, PRIORS_FILE, PostProcess, RecordingContext, SitePriors, TemporalSmoothing,
};
pub use scorer::{OpenOptions, Scorer, open};
pub use silencio_kernels::is_flex;
pub use spec::{Blend, Leaf, ModelSpec};

/// The one error type of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A device name nobody knows.
    #[error("unknown device {name:?} (expected flex, wgpu[:N] or cuda[:N]; compiled: {compiled})")]
    UnknownDevice {
        /// What was asked for.
        name: String,
        /// Backends this binary was built with.
        compiled: String,
    },
    /// A known backend that this binary was built without.
    #[error(
        "backend {name:?} is not compiled in (rebuild with --features {name}; compiled: {compiled})"
    )]
    NotCompiled {
        /// The backend.
        name: String,
        /// Backends this binary was built with.
        compiled: String,
    },
    /// No backend feature at all.
    #[error("no backend compiled in: enable one of the features flex, wgpu, cuda")]
    NoBackend,
    /// A bundle that is missing, malformed or inconsistent; lists every problem.
    #[error("model bundle {path}: {}", problems.join("; "))]
    Bundle {
        /// The bundle directory.
        path: String,
        /// What does not agree.
        problems: Vec<String>,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The audio could not be decoded or featurised.
    #[error(transparent)]
    Audio(#[from] silencio_audio::Error),
    /// Input of the wrong shape for the model.
    #[error("shape: {0}")]
    Shape(String),
    /// An ensemble that cannot work.
    #[error("ensemble: {0}")]
    Ensemble(String),
    /// An unknown output format or a rendering failure.
    #[error("output: {0}")]
    Format(String),
    /// A malformed registry.
    #[error("model registry {root}: {message}")]
    Registry {
        /// The registry root.
        root: String,
        /// What is wrong.
        message: String,
    },
    /// A model spec that does not parse or cannot work.
    #[error("model spec: {0}")]
    Spec(String),
    /// A spec that needs BirdNET in a build without it.
    #[error("{0}")]
    NoBirdnet(String),
    /// A model whose licences the deployment does not allow.
    #[error("licence: {0}")]
    Licence(String),
    /// No model named and none registered.
    #[error(
        "no model given and the registry at {root} has no production or staging version: pass \
         --model <bundle dir>, or train one (`cargo run -p trainer`) and register it"
    )]
    NoModel {
        /// The registry root looked at.
        root: String,
    },
    /// A latitude or longitude off the globe or not finite.
    #[error(
        "bad place: latitude {latitude}, longitude {longitude} (latitude in [-90, 90], longitude \
         in [-180, 180])"
    )]
    BadPlace {
        /// The latitude given.
        latitude: f64,
        /// The longitude given.
        longitude: f64,
    },
    /// A week number or date that gives no week of the year.
    #[error("bad week {text:?}: {reason}")]
    BadWeek {
        /// What was given.
        text: String,
        /// Why it is not a week.
        reason: String,
    },
    /// A location filter mode that does not exist or cannot work.
    #[error("bad location filter mode {text:?}: {reason}")]
    FilterMode {
        /// What was given.
        text: String,
        /// Why it is refused.
        reason: String,
    },
    /// An occurrence model (`location.json`) or its config that cannot work.
    #[error("location model: {message}")]
    Location {
        /// What is wrong.
        message: String,
    },
    /// Site/hour priors or smoothing (`priors.json`) that cannot work.
    #[error("priors: {message}")]
    Priors {
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// A stable machine-readable kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::UnknownDevice { .. } => "unknown_device",
            Error::NotCompiled { .. } => "not_compiled",
            Error::NoBackend => "no_backend",
            Error::Bundle { .. } => "bundle",
            Error::Io { .. } => "io",
            Error::Audio(e) => e.kind(),
            Error::Shape(_) => "shape",
            Error::Ensemble(_) => "ensemble",
            Error::Format(_) => "format",
            Error::Registry { .. } => "registry",
            Error::NoModel { .. } => "no_model",
            Error::BadPlace { .. } => "bad_place",
            Error::BadWeek { .. } => "bad_week",
            Error::FilterMode { .. } => "filter_mode",
            Error::Location { .. } => "location",
            Error::Priors { .. } => "priors",
            Error::Spec(_) => "spec",
            Error::NoBirdnet(_) => "no_birdnet",
            Error::Licence(_) => "licence",
        }
    }

    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Backends compiled into this build, in order of preference.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(feature = "cuda") {
        v.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    v
}

/// Parses `flex`, `wgpu`, `wgpu:N` (N-th discrete GPU), `wgpu:cpu` (a software adapter such as
/// Mesa's lavapipe: a second Burn device beside `wgpu` when that is the only adapter), `cuda`,
/// `cuda:N`.
pub fn parse_device(spec: &str) -> Result<Device> {
    let compiled = compiled_backends().join(", ");
    let spec = spec.trim().to_ascii_lowercase();
    if spec == "wgpu:cpu" {
        #[cfg(feature = "wgpu")]
        return Ok(Device::wgpu(burn::tensor::DeviceKind::Cpu));
        #[allow(unreachable_code)]
        return Err(Error::NotCompiled {
            name: "wgpu".into(),
            compiled,
        });
    }
    let (name, index) = match spec.split_once(':') {
        Some((n, i)) => match i.parse::<usize>() {
            Ok(i) => (n.to_string(), Some(i)),
            Err(_) => {
                return Err(Error::UnknownDevice {
                    name: spec.clone(),
                    compiled,
                });
            }
        },
        None => (spec.clone(), None),
    };
    let not_compiled = || Error::NotCompiled {
        name: name.clone(),
        compiled: compiled.clone(),
    };
    match (name.as_str(), index) {
        ("flex" | "cpu", None) => {
            #[cfg(feature = "flex")]
            return Ok(Device::flex());
            #[allow(unreachable_code)]
            Err(not_compiled())
        }
        ("wgpu", _) => {
            #[cfg(feature = "wgpu")]
            return Ok(Device::wgpu(match index {
                Some(i) => burn::tensor::DeviceKind::DiscreteGpu(i),
                None => burn::tensor::DeviceKind::DefaultDevice,
            }));
            #[allow(unreachable_code)]
            Err(not_compiled())
        }
        ("cuda", _) => {
            #[cfg(feature = "cuda")]
            return Ok(Device::cuda(index.unwrap_or(0)));
            #[allow(unreachable_code)]
            Err(not_compiled())
        }
        _ => Err(Error::UnknownDevice {
            name: spec.clone(),
            compiled,
        }),
    }
}

/// The device named by `SILENCIO_DEVICE`, else the most capable compiled backend
/// (cuda, then wgpu, then flex).
pub fn default_device() -> Result<Device> {
    match std::env::var("SILENCIO_DEVICE") {
        Ok(s) if !s.trim().is_empty() => parse_device(&s),
        _ => parse_device(compiled_backends().first().ok_or(Error::NoBackend)?),
    }
}

/// Model input from front-end features: `[windows, 1, n_mels, n_frames]` (one image channel,
/// as the CNNs of the plan take it).
pub fn features_to_tensor(features: &Features, device: &Device) -> Tensor<4> {
    let [w, m, t] = features.shape();
    let data = TensorData::new(features.data.clone(), [w, 1, m, t]);
    Tensor::<4>::from_data(data, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use silencio_audio::{FeatureConfig, LogMel};

    #[test]
    fn device_names_parse_or_fail_typed() {
        assert!(parse_device("flex").is_ok());
        assert!(matches!(
            parse_device("tpu"),
            Err(Error::UnknownDevice { .. })
        ));
        assert!(matches!(
            parse_device("wgpu:x"),
            Err(Error::UnknownDevice { .. })
        ));
        if !cfg!(feature = "cuda") {
            assert!(matches!(
                parse_device("cuda:1"),
                Err(Error::NotCompiled { .. })
            ));
        }
    }

    #[test]
    fn features_become_nchw_tensor_with_same_values() {
        let cfg = FeatureConfig::recipe("panns").unwrap();
        let x: Vec<f32> = (0..6 * 32_000)
            .map(|i| (i as f32 * 0.05).sin() * 0.1)
            .collect();
        let f = LogMel::new(&cfg).unwrap().features(&x).unwrap();
        let device = parse_device("flex").unwrap();
        let t = features_to_tensor(&f, &device);
        assert_eq!(t.dims(), [2, 1, 64, 501]);
        let back: Vec<f32> = t.into_data().try_to_vec().unwrap();
        assert_eq!(back, f.data);
        // Window 1, mel 10, frame 7 sits where NCHW says it does.
        assert_eq!(back[64 * 501 + 10 * 501 + 7], f.window(1)[10 * 501 + 7]);
    }
}
