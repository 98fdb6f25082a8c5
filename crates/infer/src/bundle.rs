//! The model bundle: one self-describing directory that holds everything needed to run a
//! model exactly as it was trained.
//!
//! ```text
//! <bundle>/bundle.json          format, name, version, ModelConfig, FeatureConfig, species in
//!                               class order, weights file + SHA-256, provenance
//! <bundle>/weights.safetensors  the Burn module's tensors (burn-store)
//! <bundle>/location.json        optional: where each species is expected (see
//!                               [`crate::location`]), SHA-256 in bundle.json
//! <bundle>/priors.json          optional: site/hour priors and temporal smoothing (see
//!                               [`crate::priors`]), SHA-256 in bundle.json
//! ```
//! A bundle is written into a staging directory and renamed into place, so a crash never
//! leaves half of one; an existing bundle is never overwritten (versions are immutable).
//! [`ModelBundle::open`] checks that the parts agree and lists every disagreement.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use silencio_audio::FeatureConfig;
use silencio_models::{BackboneConfig, Model, ModelConfig};

use crate::{Error, Result};

/// File name of the description inside a bundle.
pub const BUNDLE_FILE: &str = "bundle.json";
/// File name of the weights inside a bundle.
pub const WEIGHTS_FILE: &str = "weights.safetensors";
/// Value of [`BundleMeta::format`].
pub const FORMAT: &str = "silencio-bundle";
/// Current [`BundleMeta::format_version`].
pub const FORMAT_VERSION: u32 = 1;

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
        if self.format_version != FORMAT_VERSION {
            bad.push(format!(
                "format_version {} is not supported (this build reads {FORMAT_VERSION})",
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

impl ModelBundle {
    /// Writes `model` with `spec` as a new bundle at `dir` (which must not exist yet).
    pub fn write(dir: impl AsRef<Path>, spec: BundleSpec, model: &Model) -> Result<Self> {
        let dir = dir.as_ref();
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
            let weights = staging.join(WEIGHTS_FILE);
            let mut store = SafetensorsStore::from_file(&weights);
            model.save_into(&mut store).map_err(|e| Error::Bundle {
                path: weights.display().to_string(),
                problems: vec![format!("cannot write weights: {e}")],
            })?;
            let (sha256, bytes) = sha256_file(&weights)?;
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
                provenance.created_unix_s = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
            }
            let meta = BundleMeta {
                format: FORMAT.into(),
                format_version: FORMAT_VERSION,
                name: spec.name,
                version: spec.version,
                model: spec.model,
                features: spec.features,
                species: spec.species,
                weights: WeightsRef {
                    file: WEIGHTS_FILE.into(),
                    sha256,
                    bytes,
                },
                location,
                post_process,
                provenance,
            };
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
            let files = [Some(weights.clone()), Some(p.clone())]
                .into_iter()
                .chain(meta.location.as_ref().map(|l| Some(staging.join(&l.file))))
                .chain(
                    meta.post_process
                        .as_ref()
                        .map(|l| Some(staging.join(&l.file))),
                )
                .flatten();
            for f in files {
                std::fs::File::open(&f)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| Error::io(&f, e))?;
            }
            std::fs::rename(&staging, dir).map_err(|e| Error::io(dir, e))?;
            Ok(meta)
        })();
        match result {
            Ok(meta) => Ok(Self {
                dir: dir.to_path_buf(),
                meta,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                Err(e)
            }
        }
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
        let mut store = SafetensorsStore::from_file(&path).allow_partial(true);
        let r = model
            .load_from(&mut store)
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
