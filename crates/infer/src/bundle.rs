//! The model bundle: one self-describing directory that holds everything needed to run a
//! model exactly as it was trained.
//!
//! ```text
//! <bundle>/bundle.json          format, name, version, ModelConfig, FeatureConfig, species in
//!                               class order, weights file + SHA-256, provenance
//! <bundle>/weights.safetensors  the Burn module's tensors (burn-store), f32 or f16
//! <bundle>/weights.bpk          instead, for int8 weights: Burn's quantised tensors (burnpack)
//! <bundle>/location.json        optional: where each species is expected (see
//!                               [`crate::location`]), SHA-256 in bundle.json
//! <bundle>/priors.json          optional: site/hour priors and temporal smoothing (see
//!                               [`crate::priors`]), SHA-256 in bundle.json
//! ```
//! A bundle is written into a staging directory and renamed into place, so a crash never
//! leaves half of one; an existing bundle is never overwritten (versions are immutable).
//! [`ModelBundle::open`] checks that the parts agree and lists every disagreement.
//! [`optimise`] writes a bundle's weights again in f16 or int8 for serving, as a new bundle.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{DType, Device, Tensor};
use burn_store::{
    BurnpackStore, FloatCastAdapter, HalfPrecisionAdapter, ModuleSnapshot, SafetensorsStore,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use silencio_audio::FeatureConfig;
use silencio_models::{BackboneConfig, Model, ModelConfig};

use crate::{Error, Result};

/// File name of the description inside a bundle.
pub const BUNDLE_FILE: &str = "bundle.json";
/// File name of the weights inside a bundle (f32 and f16 weights).
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// File name of int8 weights: safetensors cannot hold Burn's quantised tensors, burnpack can.
pub const WEIGHTS_FILE_INT8: &str = "weights.bpk";
/// Value of [`BundleMeta::format`].
pub const FORMAT: &str = "silencio-bundle";
/// Newest [`BundleMeta::format_version`] this build reads. 1: f32 weights; 2: adds
/// [`BundleMeta::weights_dtype`] (f16, int8). A bundle is written with the oldest version
/// that describes it ([`WeightsDtype::format_version`]), so f32 bundles stay readable by
/// builds that predate f16, and those builds refuse an f16 bundle instead of loading f16
/// tensors into an f32 model.
pub const FORMAT_VERSION: u32 = 2;
/// Oldest [`BundleMeta::format_version`] this build reads.
pub const MIN_FORMAT_VERSION: u32 = 1;

/// How a bundle stores its weights. The model always computes in f32: narrower weights are
/// widened once, when loaded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightsDtype {
    /// Every tensor in f32 (safetensors): what training writes.
    #[default]
    F32,
    /// Convolution and linear tensors in f16, batch norms in f32 (safetensors): half the
    /// bytes. Batch norms stay f32 because a small running variance underflows f16 and a
    /// running mean of raw log-mel features (about -40 dB) would move by f16's 0.03 step;
    /// they are 0.4 % of ResNet-50's bytes and 2 % of EfficientNet-B0's.
    F16,
    /// Convolution and linear weights quantised by Burn (symmetric int8, one f32 scale per
    /// block of at most one output channel), biases and batch norms in f32 (burnpack): about
    /// a quarter of the bytes.
    Int8,
}

impl WeightsDtype {
    /// All of them, in order of size.
    pub const ALL: [WeightsDtype; 3] = [WeightsDtype::F32, WeightsDtype::F16, WeightsDtype::Int8];

    /// The name in `bundle.json` and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            WeightsDtype::F32 => "f32",
            WeightsDtype::F16 => "f16",
            WeightsDtype::Int8 => "int8",
        }
    }

    /// The weights file this dtype is written to.
    pub fn file_name(self) -> &'static str {
        match self {
            WeightsDtype::F32 | WeightsDtype::F16 => WEIGHTS_FILE,
            WeightsDtype::Int8 => WEIGHTS_FILE_INT8,
        }
    }

    /// The oldest bundle format that can describe weights of this dtype.
    pub fn format_version(self) -> u32 {
        match self {
            WeightsDtype::F32 => 1,
            WeightsDtype::F16 | WeightsDtype::Int8 => 2,
        }
    }

    fn is_f32(&self) -> bool {
        *self == WeightsDtype::F32
    }
}

impl std::fmt::Display for WeightsDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WeightsDtype {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown weights dtype {s:?} (expected f32, f16 or int8)"))
    }
}

/// What an optimised bundle was converted from (see [`optimise`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConvertedFrom {
    /// `name@version` of the source bundle.
    pub model_version: String,
    /// Hex SHA-256 of the source's (f32) weights file.
    pub weights_sha256: String,
}

/// One output class, in the bundle's class order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Species {
    /// eBird / BirdCLEF code (`primary_label`), e.g. `grekis`.
    pub code: String,
    /// Scientific name.
    pub scientific_name: String,
    /// Common name.
    pub common_name: String,
    /// Taxonomic class (Aves, Amphibia, Insecta, Mammalia).
    pub class_name: String,
}

/// Where a bundle came from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Whether the weights were trained on the task. Bundles built from random or ImageNet
    /// weights (tests, fine-tuning starts) say `false`, and tools say so loudly.
    pub trained: bool,
    /// Training run id (tracking server), if any.
    #[serde(default)]
    pub run_id: Option<String>,
    /// Free text: dataset, script, parent checkpoint.
    #[serde(default)]
    pub source: String,
    /// Evaluation metrics at packaging time (e.g. `val_macro_roc_auc`).
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Seconds since the Unix epoch when the bundle was written.
    #[serde(default)]
    pub created_unix_s: u64,
    /// Licences of the weights and of everything they derive from (data, backbone, teacher);
    /// empty in bundles written before licences were kept (status `unknown`).
    #[serde(default)]
    pub licences: Vec<crate::licence::Licence>,
}

/// A file of a bundle (the weights, the occurrence model, the priors), with its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsRef {
    /// File name inside the bundle.
    pub file: String,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// Contents of `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleMeta {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Model name, e.g. `birdclef2025-effb0`.
    pub name: String,
    /// Version string, e.g. `3` or `2026-11-24.1`.
    pub version: String,
    /// Architecture and its configuration.
    pub model: ModelConfig,
    /// The feature recipe the model was trained on.
    pub features: FeatureConfig,
    /// Output classes in order.
    pub species: Vec<Species>,
    /// The weights.
    pub weights: WeightsRef,
    /// How the weights are stored; absent (f32) in bundles written before f16 existed.
    #[serde(default, skip_serializing_if = "WeightsDtype::is_f32")]
    pub weights_dtype: WeightsDtype,
    /// The bundle whose weights these are, narrowed by [`optimise`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_from: Option<ConvertedFrom>,
    /// The occurrence model of the location filter, when the bundle has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<WeightsRef>,
    /// The post-processing (site/hour priors, smoothing), when the bundle has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_process: Option<WeightsRef>,
    /// Where it came from.
    pub provenance: Provenance,
}

impl BundleMeta {
    /// `name@version`, the string predictions carry.
    pub fn model_version(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// Every way the parts disagree (empty when consistent). Weights are checked by
    /// [`ModelBundle::open`].
    pub fn disagreements(&self) -> Vec<String> {
        let mut bad = Vec::new();
        if self.format != FORMAT {
            bad.push(format!("format is {:?}, expected {FORMAT:?}", self.format));
        }
        if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&self.format_version) {
            bad.push(format!(
                "format_version {} is not supported (this build reads \
                 {MIN_FORMAT_VERSION} to {FORMAT_VERSION})",
                self.format_version
            ));
        } else if self.format_version < self.weights_dtype.format_version() {
            bad.push(format!(
                "{} weights need format_version {} but the bundle says {}",
                self.weights_dtype,
                self.weights_dtype.format_version(),
                self.format_version
            ));
        }
        if self.name.trim().is_empty() || self.version.trim().is_empty() {
            bad.push("name and version must not be empty".into());
        }
        if let Err(e) = self.model.validate() {
            bad.push(e.to_string());
        }
        if let Err(e) = self.features.validate() {
            bad.push(format!("feature recipe: {e}"));
        }
        if self.species.len() != self.model.num_classes {
            bad.push(format!(
                "species list has {} entries but the model has {} outputs",
                self.species.len(),
                self.model.num_classes
            ));
        }
        let mut seen = HashSet::new();
        for s in &self.species {
            if s.code.trim().is_empty() {
                bad.push("a species has an empty code".into());
            } else if !seen.insert(s.code.as_str()) {
                bad.push(format!("species code {:?} appears twice", s.code));
            }
        }
        if self.model.in_channels() != 1 {
            bad.push(format!(
                "the model takes {} input channels; log-mel features have 1",
                self.model.in_channels()
            ));
        }
        if let BackboneConfig::Cnn14(c) = &self.model.backbone
            && c.mel_bins != self.features.n_mels
        {
            bad.push(format!(
                "CNN14 normalises {} mel bins but the recipe makes {}",
                c.mel_bins, self.features.n_mels
            ));
        }
        if self.weights.file.contains('/') || self.weights.file.contains("..") {
            bad.push(format!(
                "weights file {:?} must be a plain name",
                self.weights.file
            ));
        }
        bad
    }
}

/// What a caller provides to write a bundle (the weights reference is computed).
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Architecture.
    pub model: ModelConfig,
    /// Feature recipe.
    pub features: FeatureConfig,
    /// Classes in order.
    pub species: Vec<Species>,
    /// Provenance (`created_unix_s` is filled in when 0).
    pub provenance: Provenance,
    /// Where each species is expected (the location filter), if known.
    pub location: Option<crate::location::OccurrenceModel>,
    /// Site/hour priors and temporal smoothing, if learnt.
    pub post_process: Option<crate::priors::PostProcess>,
}

/// An opened, consistent bundle.
#[derive(Debug, Clone)]
pub struct ModelBundle {
    dir: PathBuf,
    meta: BundleMeta,
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks an optional file of the bundle at `dir` against its checksum: `Ok(Err(problem))`
/// when it is missing, not a plain name, or differs.
fn check_optional(dir: &Path, what: &str, l: &WeightsRef) -> Result<Result<(), String>> {
    let p = dir.join(&l.file);
    if l.file.contains('/') || l.file.contains("..") || !p.is_file() {
        return Ok(Err(format!("{what} file {} is missing", l.file)));
    }
    let (sha, n) = sha256_file(&p)?;
    if sha != l.sha256 || n != l.bytes {
        return Ok(Err(format!(
            "{what} file {} has SHA-256 {sha} ({n} bytes) but the bundle says {} ({} bytes)",
            l.file, l.sha256, l.bytes
        )));
    }
    Ok(Ok(()))
}

/// The post-processing of the bundle at `dir` described by `meta` (none when it has none),
/// checked against its checksum and the bundle's species. Hashes only `priors.json`, for
/// callers that have opened the bundle already.
pub fn read_post_process(
    dir: &Path,
    meta: &BundleMeta,
) -> Result<Option<crate::priors::PostProcess>> {
    let Some(l) = &meta.post_process else {
        return Ok(None);
    };
    let bad = |problem: String| Error::Bundle {
        path: dir.display().to_string(),
        problems: vec![problem],
    };
    if l.file.contains('/') || l.file.contains("..") {
        return Err(bad(format!("priors file {} is missing", l.file)));
    }
    let p = dir.join(&l.file);
    // Hashed as read, so the bytes parsed are the bytes checked.
    let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
    let sha = hex(&Sha256::digest(&bytes));
    if sha != l.sha256 || bytes.len() as u64 != l.bytes {
        return Err(bad(format!(
            "priors file {} has SHA-256 {sha} ({} bytes) but the bundle says {} ({} bytes)",
            l.file,
            bytes.len(),
            l.sha256,
            l.bytes
        )));
    }
    crate::priors::PostProcess::from_json_bytes(&bytes, &p.display().to_string(), &meta.species)
        .map(Some)
}

/// Seconds since the Unix epoch.
fn now_unix_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Writes a new bundle at `dir` atomically: `fill` puts the files into a staging directory
/// beside it and returns the description, which is checked, written, synced with the files,
/// and the directory renamed into place. `dir` must not exist (versions are immutable).
fn write_staged(dir: &Path, fill: impl FnOnce(&Path) -> Result<BundleMeta>) -> Result<ModelBundle> {
    if dir.exists() {
        return Err(Error::Bundle {
            path: dir.display().to_string(),
            problems: vec!["already exists; bundles are immutable, pick a new version".into()],
        });
    }
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let file_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "bundle".into());
    let staging = parent.join(format!(".{file_name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    let result = (|| {
        let meta = fill(&staging)?;
        let problems = meta.disagreements();
        if !problems.is_empty() {
            return Err(Error::Bundle {
                path: dir.display().to_string(),
                problems,
            });
        }
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| Error::Bundle {
            path: dir.display().to_string(),
            problems: vec![e.to_string()],
        })?;
        let p = staging.join(BUNDLE_FILE);
        std::fs::write(&p, json).map_err(|e| Error::io(&p, e))?;
        let files = [
            Some(&meta.weights),
            meta.location.as_ref(),
            meta.post_process.as_ref(),
        ]
        .into_iter()
        .flatten()
        .map(|l| staging.join(&l.file))
        .chain([p]);
        for f in files {
            std::fs::File::open(&f)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&f, e))?;
        }
        std::fs::rename(&staging, dir).map_err(|e| Error::io(dir, e))?;
        Ok(meta)
    })();
    match result {
        Ok(meta) => Ok(ModelBundle {
            dir: dir.to_path_buf(),
            meta,
        }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// The module types whose weights int8 quantises: every architecture's bulk (batch norms and
/// biases are a few per cent of the parameters and stay f32).
const INT8_MODULES: [&str; 3] = ["Struct:Conv2d", "Struct:Conv1d", "Struct:Linear"];

/// Burn's quantiser applied to the `weight` of [`INT8_MODULES`] only (Burn's own `Quantizer`
/// takes every float parameter, batch norms' running variances included, with one scheme).
#[derive(Default)]
struct Int8Weights {
    /// `(field, enclosing module type)` of each level entered.
    stack: Vec<(String, String)>,
}

impl ModuleMapper for Int8Weights {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let weight = matches!(self.stack.last(),
            Some((name, module)) if name == "weight" && INT8_MODULES.contains(&module.as_str()));
        if !weight {
            return param;
        }
        param.map(|t| {
            let scheme = int8_scheme(&t.dims());
            t.quantize_dynamic(&scheme)
        })
    }
}

/// Symmetric int8 with one f32 scale per block. A block spans every axis but the first, each
/// as far as the largest divisor of its length that fits Burn's `u8` block sizes (≤ 255),
/// since flex needs whole blocks: one scale per output channel of a convolution with up to
/// 255 input channels, per 128 input channels of one with 512 to 2048. One scale per tensor
/// lets one large weight coarsen all others: on three trained EfficientNet-Lite0 (width 0.5)
/// bundles and the demo clips, it moved probabilities 1.2–3.5× further at most and 1.2–2.2×
/// on average than blocks, which cost 4 % more bytes. Smaller blocks (at most 32 or 8 values
/// per axis) took off at most 12 % of the error for 8–30 % more bytes: what remains is 8-bit
/// resolution itself.
fn int8_scheme(dims: &[usize]) -> QuantScheme {
    let block: Vec<u8> = dims
        .iter()
        .enumerate()
        .map(|(axis, &len)| match axis {
            0 => 1,
            // Within 1..=255, so the cast is exact.
            _ => (1..=len.min(255)).rev().find(|k| len % k == 0).unwrap_or(1) as u8,
        })
        .collect();
    let scheme = QuantScheme::default()
        .with_value(QuantValue::Q8S)
        .with_store(QuantStore::Native);
    if block.iter().all(|&b| b == 1) {
        // Blocks of one value would be f32 again: one scale for the tensor.
        scheme
    } else {
        scheme.per_block(block, ScaleDtype::F32)
    }
}

/// Widens Burn's quantised tensors back to f32 after loading: the project's flex kernels and
/// batch-norm folding read weights as f32 host data, which a quantised tensor cannot give.
struct Dequantise;

impl ModuleMapper for Dequantise {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.map(|t| match t.dtype() {
            DType::QFloat(_) => t.dequantize(),
            _ => t,
        })
    }
}

/// Saves `model` into `staging` as `dtype` and describes the file.
fn save_weights(model: &Model, staging: &Path, dtype: WeightsDtype) -> Result<WeightsRef> {
    let file = dtype.file_name();
    let path = staging.join(file);
    let bad = |e: String| Error::Bundle {
        path: path.display().to_string(),
        problems: vec![format!("cannot write {dtype} weights: {e}")],
    };
    match dtype {
        WeightsDtype::F32 => model
            .save_into(&mut SafetensorsStore::from_file(&path))
            .map_err(|e| bad(e.to_string()))?,
        // Burn's default set is every layer type except BatchNorm, which covers every tensor
        // of our architectures but the batch norms' (see `WeightsDtype::F16`).
        WeightsDtype::F16 => model
            .save_into(
                &mut SafetensorsStore::from_file(&path)
                    .with_to_adapter(HalfPrecisionAdapter::new()),
            )
            .map_err(|e| bad(e.to_string()))?,
        WeightsDtype::Int8 => model
            .clone()
            .map(&mut Int8Weights::default())
            .save_into(&mut BurnpackStore::from_file(&path).auto_extension(false))
            .map_err(|e| bad(e.to_string()))?,
    }
    let (sha256, bytes) = sha256_file(&path)?;
    Ok(WeightsRef {
        file: file.into(),
        sha256,
        bytes,
    })
}

/// Writes the bundle at `src` again with its weights stored as `dtype`, as a new bundle at
/// `dest` (atomic, like [`ModelBundle::write`]): the same description, species, recipe,
/// licences, location filter and priors (copied byte for byte), its version suffixed
/// `+<dtype>` so predictions say which weights made them, and [`BundleMeta::converted_from`]
/// naming the source and its weights' checksum. Starts from f32 weights only, so rounding
/// never compounds. [`OutputDiff`](crate::OutputDiff) measures what it changed.
pub fn optimise(
    src: impl AsRef<Path>,
    dest: impl AsRef<Path>,
    dtype: WeightsDtype,
    device: &Device,
) -> Result<ModelBundle> {
    let src = src.as_ref();
    let source = ModelBundle::open(src)?;
    let from = source.meta();
    let refuse = |problem: String| Error::Bundle {
        path: src.display().to_string(),
        problems: vec![problem],
    };
    if from.weights_dtype != WeightsDtype::F32 {
        return Err(refuse(format!(
            "holds {} weights; optimise starts from the f32 bundle they came from{}",
            from.weights_dtype,
            from.converted_from
                .as_ref()
                .map(|c| format!(" ({})", c.model_version))
                .unwrap_or_default()
        )));
    }
    if dtype == WeightsDtype::F32 {
        return Err(refuse("holds f32 weights already: pick f16 or int8".into()));
    }
    let model = source.load_model(device)?;
    let mut meta = from.clone();
    meta.format_version = dtype.format_version();
    meta.version = format!("{}+{dtype}", from.version);
    meta.weights_dtype = dtype;
    meta.converted_from = Some(ConvertedFrom {
        model_version: from.model_version(),
        weights_sha256: from.weights.sha256.clone(),
    });
    meta.provenance.created_unix_s = now_unix_s();
    write_staged(dest.as_ref(), |staging| {
        meta.weights = save_weights(&model, staging, dtype)?;
        for (what, file) in [("location", &meta.location), ("priors", &meta.post_process)] {
            if let Some(l) = file {
                let (from, to) = (src.join(&l.file), staging.join(&l.file));
                std::fs::copy(&from, &to).map_err(|e| Error::io(&from, e))?;
                // Checked again as copied: the source was checked when opened, not since.
                if let Err(problem) = check_optional(staging, what, l)? {
                    return Err(refuse(problem));
                }
            }
        }
        Ok(meta)
    })
}

impl ModelBundle {
    /// Writes `model` with `spec` as a new bundle at `dir` (which must not exist yet), with
    /// f32 weights ([`optimise`] narrows them).
    pub fn write(dir: impl AsRef<Path>, spec: BundleSpec, model: &Model) -> Result<Self> {
        write_staged(dir.as_ref(), |staging| {
            let weights = save_weights(model, staging, WeightsDtype::F32)?;
            let location = match &spec.location {
                Some(m) => {
                    let p = staging.join(crate::location::LOCATION_FILE);
                    std::fs::write(&p, m.to_json_bytes()).map_err(|e| Error::io(&p, e))?;
                    let (sha256, bytes) = sha256_file(&p)?;
                    Some(WeightsRef {
                        file: crate::location::LOCATION_FILE.into(),
                        sha256,
                        bytes,
                    })
                }
                None => None,
            };
            let post_process = match &spec.post_process {
                Some(p) => {
                    p.validate(&spec.species)?;
                    let path = staging.join(crate::priors::PRIORS_FILE);
                    std::fs::write(&path, p.to_json_bytes()?).map_err(|e| Error::io(&path, e))?;
                    let (sha256, bytes) = sha256_file(&path)?;
                    Some(WeightsRef {
                        file: crate::priors::PRIORS_FILE.into(),
                        sha256,
                        bytes,
                    })
                }
                None => None,
            };
            let mut provenance = spec.provenance;
            if provenance.created_unix_s == 0 {
                provenance.created_unix_s = now_unix_s();
            }
            Ok(BundleMeta {
                format: FORMAT.into(),
                format_version: WeightsDtype::F32.format_version(),
                name: spec.name,
                version: spec.version,
                model: spec.model,
                features: spec.features,
                species: spec.species,
                weights,
                weights_dtype: WeightsDtype::F32,
                converted_from: None,
                location,
                post_process,
                provenance,
            })
        })
    }

    /// Opens a bundle directory and checks that its parts agree (description, recipe,
    /// species, weights checksum).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let p = dir.join(BUNDLE_FILE);
        let bytes = std::fs::read(&p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Bundle {
                    path: dir.display().to_string(),
                    problems: vec![format!("no {BUNDLE_FILE}: not a model bundle")],
                }
            } else {
                Error::io(&p, e)
            }
        })?;
        let meta: BundleMeta = serde_json::from_slice(&bytes).map_err(|e| Error::Bundle {
            path: dir.display().to_string(),
            problems: vec![format!("{BUNDLE_FILE} does not parse: {e}")],
        })?;
        let mut problems = meta.disagreements();
        let w = dir.join(&meta.weights.file);
        if problems.is_empty() {
            if !w.is_file() {
                problems.push(format!("weights file {} is missing", meta.weights.file));
            } else {
                let (sha, n) = sha256_file(&w)?;
                if sha != meta.weights.sha256 || n != meta.weights.bytes {
                    problems.push(format!(
                        "weights file {} has SHA-256 {sha} ({n} bytes) but the bundle says {} ({} bytes)",
                        meta.weights.file, meta.weights.sha256, meta.weights.bytes
                    ));
                }
            }
        }
        for (what, file) in [("location", &meta.location), ("priors", &meta.post_process)] {
            if let Some(l) = file
                && let Err(problem) = check_optional(dir, what, l)?
            {
                problems.push(problem);
            }
        }
        if !problems.is_empty() {
            return Err(Error::Bundle {
                path: dir.display().to_string(),
                problems,
            });
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
        })
    }

    /// The description.
    pub fn meta(&self) -> &BundleMeta {
        &self.meta
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bundle's occurrence model (checked against its checksum by [`ModelBundle::open`]).
    pub fn location(&self) -> Result<Option<crate::location::OccurrenceModel>> {
        match &self.meta.location {
            Some(l) => Ok(Some(crate::location::OccurrenceModel::read_json(
                self.dir.join(&l.file),
            )?)),
            None => Ok(None),
        }
    }

    /// The bundle's site/hour priors and smoothing (checked against its checksum and species).
    pub fn post_process(&self) -> Result<Option<crate::priors::PostProcess>> {
        read_post_process(&self.dir, &self.meta)
    }

    /// Builds the model and loads the weights; every parameter must be present with its shape
    /// and every stored tensor must be used.
    pub fn load_model(&self, device: &Device) -> Result<Model> {
        let path = self.dir.join(&self.meta.weights.file);
        let bad = |problems: Vec<String>| Error::Bundle {
            path: self.dir.display().to_string(),
            problems,
        };
        let mut model = self
            .meta
            .model
            .init(device)
            .map_err(|e| bad(vec![e.to_string()]))?;
        let r = match self.meta.weights_dtype {
            // Every float tensor comes back f32 whatever the file holds (the cast is a no-op
            // on f32 weights), so the model computes in f32 on every backend.
            WeightsDtype::F32 | WeightsDtype::F16 => {
                let mut store = SafetensorsStore::from_file(&path)
                    .allow_partial(true)
                    .with_from_adapter(FloatCastAdapter::to(DType::F32));
                model.load_from(&mut store).map_err(|e| e.to_string())
            }
            WeightsDtype::Int8 => {
                // Read and dequantised on the CPU, then moved: no GPU backend's support for
                // Burn's quantised tensors (and this block scheme) is relied on.
                #[cfg(feature = "flex")]
                let host = Device::flex();
                #[cfg(not(feature = "flex"))]
                let host = device.clone();
                let on_host = host == *device;
                let mut m = if on_host {
                    model
                } else {
                    self.meta
                        .model
                        .init(&host)
                        .map_err(|e| bad(vec![e.to_string()]))?
                };
                let mut store = BurnpackStore::from_file(&path)
                    .auto_extension(false)
                    .allow_partial(true);
                let r = m.load_from(&mut store).map_err(|e| e.to_string());
                m = m.map(&mut Dequantise);
                model = if on_host { m } else { m.to_device(device) };
                r
            }
        }
        .map_err(|e| bad(vec![format!("cannot read weights: {e}")]))?;
        let mut problems: Vec<String> = r.errors.iter().map(|e| e.to_string()).collect();
        if !r.missing.is_empty() {
            problems.push(format!(
                "weights lack {} parameters of the architecture, e.g. {}",
                r.missing.len(),
                r.missing[0].0
            ));
        }
        if !r.unused.is_empty() {
            problems.push(format!(
                "weights hold {} tensors the architecture does not have, e.g. {}",
                r.unused.len(),
                r.unused[0]
            ));
        }
        if !problems.is_empty() {
            return Err(bad(problems));
        }
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_dtypes_have_one_name_in_json_and_on_the_command_line() {
        for d in WeightsDtype::ALL {
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.as_str()));
            assert_eq!(serde_json::from_str::<WeightsDtype>(&json).unwrap(), d);
            assert_eq!(d.as_str().parse::<WeightsDtype>().unwrap(), d);
            assert_eq!(d.to_string(), d.as_str());
        }
        assert_eq!(WeightsDtype::default(), WeightsDtype::F32);
        assert!(serde_json::from_str::<WeightsDtype>("\"F16\"").is_err());
        assert!("bf16".parse::<WeightsDtype>().is_err());
        // Only int8 leaves safetensors; only f32 is readable by builds before format 2.
        assert_eq!(WeightsDtype::Int8.file_name(), WEIGHTS_FILE_INT8);
        assert_eq!(WeightsDtype::F16.file_name(), WEIGHTS_FILE);
        assert_eq!(WeightsDtype::F32.format_version(), 1);
        assert_eq!(WeightsDtype::F16.format_version(), 2);
    }

    #[test]
    fn int8_blocks_divide_every_weight_shape_and_fit_in_a_byte() {
        let block = |dims: &[usize]| {
            int8_scheme(dims)
                .block_size()
                .map(|b| b.to_dim_vec(dims.len()))
        };
        // A 3×3 convolution with 64 inputs: one scale per output channel.
        assert_eq!(block(&[128, 64, 3, 3]), Some(vec![1, 64, 3, 3]));
        // 2048 inputs: blocks of 128 (the largest divisor ≤ 255).
        assert_eq!(block(&[512, 2048, 1, 1]), Some(vec![1, 128, 1, 1]));
        // Depthwise: one scale per channel's kernel. A linear layer [in, out]: per row.
        assert_eq!(block(&[32, 1, 3, 3]), Some(vec![1, 1, 3, 3]));
        assert_eq!(block(&[1280, 206]), Some(vec![1, 206]));
        // Primes above 255 and a single column fall back to whatever divides, or one scale.
        assert_eq!(block(&[8, 257]), None);
        assert_eq!(block(&[1280, 1]), None);
    }
}
