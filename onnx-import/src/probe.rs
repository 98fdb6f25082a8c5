//! Linear probes on BirdNET embeddings (`birdnet-probe`): a logistic-regression head trained on
//! the task's labels over BirdNET V2.4's frozen 1024-d embedding, the "embeddings + linear
//! classifier" recipe of Ghani et al., "Global birdsong embeddings enable superior transfer
//! learning for bioacoustic classification" (Scientific Reports 2023; reference: Perch's
//! `chirp/projects/agile` linear classifier over BirdNET/Perch embeddings).
//!
//! A 5 s window's embedding is the mean of BirdNET's embeddings of the two 3 s chunks at 0–3 s
//! and 2–5 s of the window, which cover it exactly. The head is plain data (weight and bias in
//! a safetensors file), so the format is readable without BirdNET; scoring audio needs the
//! `birdnet` feature.
//!
//! ```text
//! <bundle>/probe.json         format, name, version, embedding spec, species, head file + SHA-256
//! <bundle>/head.safetensors   `weight` [classes, 1024] and `bias` [classes], f32
//! ```
//! The head is derived from BirdNET's embedding, so a probe bundle carries BirdNET's licence
//! (CC BY-NC-SA 4.0) and is never committed.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use silencio_infer::Species;
use silencio_infer::bundle::{Provenance, WeightsRef};

use crate::{Error, Result};

/// File name of the description inside a probe bundle (model specs recognise probes by it).
pub use silencio_infer::spec::PROBE_FILE;
/// File name of the head inside a probe bundle.
pub const HEAD_FILE: &str = "head.safetensors";
/// Value of [`ProbeMeta::format`].
pub const PROBE_FORMAT: &str = "silencio-probe";
/// Current [`ProbeMeta::format_version`].
pub const PROBE_FORMAT_VERSION: u32 = 1;
/// Width of BirdNET V2.4's embedding.
pub const EMBEDDING_DIM: usize = 1024;
/// Offsets (s) of the 3 s chunks whose embeddings are averaged for one 5 s window.
pub const CHUNK_OFFSETS_S: [f64; 2] = [0.0, 2.0];
/// Length of the windows a probe scores, in seconds.
pub const WINDOW_S: f64 = 5.0;

/// Which embedding the head reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingSpec {
    /// The embedding model, e.g. `birdnet@2.4`.
    pub model: String,
    /// Width.
    pub dim: usize,
    /// Sample rate the embedding model takes.
    pub sample_rate: u32,
    /// Window length the head scores, seconds.
    pub window_s: f64,
    /// Chunk offsets within a window, seconds.
    pub chunk_offsets_s: Vec<f64>,
    /// How chunk embeddings are pooled (`mean`).
    pub pooling: String,
}

impl Default for EmbeddingSpec {
    fn default() -> Self {
        Self {
            model: "birdnet@2.4".into(),
            dim: EMBEDDING_DIM,
            sample_rate: crate::labels::SAMPLE_RATE,
            window_s: WINDOW_S,
            chunk_offsets_s: CHUNK_OFFSETS_S.to_vec(),
            pooling: "mean".into(),
        }
    }
}

/// Contents of `probe.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeMeta {
    /// Always [`PROBE_FORMAT`].
    pub format: String,
    /// [`PROBE_FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// The embedding the head reads.
    pub embedding: EmbeddingSpec,
    /// Output classes in order.
    pub species: Vec<Species>,
    /// The head file.
    pub weights: WeightsRef,
    /// Where it came from.
    pub provenance: Provenance,
}

impl ProbeMeta {
    /// `name@version`.
    pub fn model_version(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    fn disagreements(&self) -> Vec<String> {
        let mut bad = Vec::new();
        if self.format != PROBE_FORMAT {
            bad.push(format!(
                "format is {:?}, expected {PROBE_FORMAT:?}",
                self.format
            ));
        }
        if self.format_version != PROBE_FORMAT_VERSION {
            bad.push(format!(
                "format_version {} is not supported (this build reads {PROBE_FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.embedding != EmbeddingSpec::default() {
            bad.push(format!(
                "embedding {:?} is not the one this build computes ({:?})",
                self.embedding,
                EmbeddingSpec::default()
            ));
        }
        if self.name.trim().is_empty() || self.version.trim().is_empty() {
            bad.push("name and version must not be empty".into());
        }
        if self.species.is_empty() {
            bad.push("no species".into());
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(s) = self.species.iter().find(|s| !seen.insert(s.code.as_str())) {
            bad.push(format!("species code {:?} appears twice", s.code));
        }
        bad
    }
}

/// The head: `sigmoid(x · Wᵀ + b)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeHead {
    /// `[classes][dim]`, row-major.
    pub weight: Vec<f32>,
    /// `[classes]`.
    pub bias: Vec<f32>,
}

impl ProbeHead {
    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.bias.len()
    }

    /// Probabilities for one embedding.
    pub fn scores(&self, embedding: &[f32]) -> Vec<f32> {
        self.weight
            .chunks(embedding.len().max(1))
            .zip(&self.bias)
            .map(|(w, b)| {
                let z = w.iter().zip(embedding).map(|(a, x)| a * x).sum::<f32>() + b;
                1.0 / (1.0 + (-z).exp())
            })
            .collect()
    }

    fn check(&self, dim: usize) -> Result<()> {
        if self.bias.is_empty() || self.weight.len() != self.bias.len() * dim {
            return Err(Error::Shape(format!(
                "probe head: weight has {} values, bias {}; expected classes × {dim} and classes",
                self.weight.len(),
                self.bias.len()
            )));
        }
        Ok(())
    }

    fn to_safetensors(&self, dim: usize) -> Result<Vec<u8>> {
        use safetensors::tensor::{Dtype, TensorView};
        let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
        let (w, b) = (bytes(&self.weight), bytes(&self.bias));
        let c = self.classes();
        let views = [
            (
                "weight",
                TensorView::new(Dtype::F32, vec![c, dim], &w).map_err(shape)?,
            ),
            (
                "bias",
                TensorView::new(Dtype::F32, vec![c], &b).map_err(shape)?,
            ),
        ];
        safetensors::serialize(views, None).map_err(shape)
    }

    fn from_safetensors(bytes: &[u8], dim: usize) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(shape)?;
        let read = |name: &str| -> Result<Vec<f32>> {
            let t = st.tensor(name).map_err(shape)?;
            if t.dtype() != safetensors::tensor::Dtype::F32 {
                return Err(Error::Shape(format!("{name} is {:?}, not F32", t.dtype())));
            }
            Ok(t.data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let head = Self {
            weight: read("weight")?,
            bias: read("bias")?,
        };
        head.check(dim)?;
        Ok(head)
    }
}

fn shape(e: impl std::fmt::Display) -> Error {
    Error::Shape(format!("probe head: {e}"))
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Model {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a caller provides to write a probe bundle.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// Model name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Classes in order.
    pub species: Vec<Species>,
    /// Provenance.
    pub provenance: Provenance,
}

/// An opened, consistent probe bundle.
#[derive(Debug, Clone)]
pub struct ProbeBundle {
    dir: PathBuf,
    meta: ProbeMeta,
    head: ProbeHead,
}

impl ProbeBundle {
    /// Whether `dir` holds a probe bundle (rather than a spectrogram-model bundle).
    pub fn is_probe(dir: &Path) -> bool {
        dir.join(PROBE_FILE).is_file()
    }

    /// Writes a new probe bundle at `dir` (which must not exist): staged, then renamed.
    pub fn write(dir: impl AsRef<Path>, spec: ProbeSpec, head: &ProbeHead) -> Result<Self> {
        let dir = dir.as_ref();
        let bad = |m: String| Error::Model {
            path: dir.display().to_string(),
            message: m,
        };
        if dir.exists() {
            return Err(bad("already exists; bundles are immutable".into()));
        }
        head.check(EMBEDDING_DIM)?;
        if head.classes() != spec.species.len() {
            return Err(bad(format!(
                "the head has {} classes but {} species are given",
                head.classes(),
                spec.species.len()
            )));
        }
        let weights = head.to_safetensors(EMBEDDING_DIM)?;
        let mut provenance = spec.provenance;
        if provenance.created_unix_s == 0 {
            provenance.created_unix_s = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
        }
        let meta = ProbeMeta {
            format: PROBE_FORMAT.into(),
            format_version: PROBE_FORMAT_VERSION,
            name: spec.name,
            version: spec.version,
            embedding: EmbeddingSpec::default(),
            species: spec.species,
            weights: WeightsRef {
                file: HEAD_FILE.into(),
                sha256: sha256_hex(&weights),
                bytes: weights.len() as u64,
            },
            provenance,
        };
        let problems = meta.disagreements();
        if !problems.is_empty() {
            return Err(bad(problems.join("; ")));
        }
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| bad(e.to_string()))?;
        let parent = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
        let name = dir
            .file_name()
            .map_or_else(|| "probe".into(), |n| n.to_string_lossy().to_string());
        let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let result = (|| {
            std::fs::create_dir_all(&staging).map_err(|e| io(&staging, e))?;
            for (file, bytes) in [(HEAD_FILE, &weights), (PROBE_FILE, &json)] {
                let p = staging.join(file);
                std::fs::write(&p, bytes).map_err(|e| io(&p, e))?;
                std::fs::File::open(&p)
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io(&p, e))?;
            }
            std::fs::rename(&staging, dir).map_err(|e| io(dir, e))
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
            head: head.clone(),
        })
    }

    /// Opens a probe bundle and checks that its parts agree.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let bad = |m: String| Error::Model {
            path: dir.display().to_string(),
            message: m,
        };
        let p = dir.join(PROBE_FILE);
        let text = std::fs::read(&p).map_err(|e| io(&p, e))?;
        let meta: ProbeMeta = serde_json::from_slice(&text)
            .map_err(|e| bad(format!("{PROBE_FILE} does not parse: {e}")))?;
        let mut problems = meta.disagreements();
        if meta.weights.file.contains(['/', '\\']) || meta.weights.file.contains("..") {
            problems.push(format!(
                "head file {:?} must be a plain name",
                meta.weights.file
            ));
        }
        if !problems.is_empty() {
            return Err(bad(problems.join("; ")));
        }
        let w = dir.join(&meta.weights.file);
        let bytes = std::fs::read(&w).map_err(|e| io(&w, e))?;
        let sha = sha256_hex(&bytes);
        if sha != meta.weights.sha256 || bytes.len() as u64 != meta.weights.bytes {
            return Err(bad(format!(
                "head file has SHA-256 {sha} ({} bytes) but the bundle says {} ({} bytes)",
                bytes.len(),
                meta.weights.sha256,
                meta.weights.bytes
            )));
        }
        let head = ProbeHead::from_safetensors(&bytes, meta.embedding.dim)?;
        if head.classes() != meta.species.len() {
            return Err(bad(format!(
                "the head has {} classes but the bundle lists {} species",
                head.classes(),
                meta.species.len()
            )));
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            meta,
            head,
        })
    }

    /// The description.
    pub fn meta(&self) -> &ProbeMeta {
        &self.meta
    }

    /// The head.
    pub fn head(&self) -> &ProbeHead {
        &self.head
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn species(n: usize) -> Vec<Species> {
        (0..n)
            .map(|i| Species {
                code: format!("sp{i}"),
                scientific_name: format!("Genus species{i}"),
                common_name: format!("Bird {i}"),
                class_name: "Aves".into(),
            })
            .collect()
    }

    fn head(c: usize) -> ProbeHead {
        ProbeHead {
            weight: (0..c * EMBEDDING_DIM)
                .map(|i| ((i % 97) as f32 - 48.0) / 1000.0)
                .collect(),
            bias: (0..c).map(|i| i as f32 * 0.1 - 0.2).collect(),
        }
    }

    fn spec(c: usize) -> ProbeSpec {
        ProbeSpec {
            name: "probe".into(),
            version: "1".into(),
            species: species(c),
            provenance: Provenance::default(),
        }
    }

    #[test]
    fn a_probe_bundle_round_trips_and_scores_like_the_formula() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p");
        let h = head(3);
        ProbeBundle::write(&dir, spec(3), &h).unwrap();
        assert!(ProbeBundle::is_probe(&dir));
        let b = ProbeBundle::open(&dir).unwrap();
        assert_eq!(b.head(), &h);
        assert_eq!(b.meta().model_version(), "probe@1");
        let x: Vec<f32> = (0..EMBEDDING_DIM).map(|i| (i as f32).sin()).collect();
        let s = b.head().scores(&x);
        for (c, got) in s.iter().enumerate() {
            let z: f64 = (0..EMBEDDING_DIM)
                .map(|i| h.weight[c * EMBEDDING_DIM + i] as f64 * x[i] as f64)
                .sum::<f64>()
                + h.bias[c] as f64;
            let want = 1.0 / (1.0 + (-z).exp());
            assert!((*got as f64 - want).abs() < 1e-5, "{got} vs {want}");
        }
        // Immutable.
        assert!(ProbeBundle::write(&dir, spec(3), &h).is_err());
    }

    #[test]
    fn tampered_or_inconsistent_probe_bundles_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        // Wrong class count.
        let e = ProbeBundle::write(tmp.path().join("a"), spec(2), &head(3)).unwrap_err();
        assert!(e.to_string().contains("3 classes"), "{e}");
        assert!(!tmp.path().join("a").exists());
        // A flipped byte in the head.
        let dir = tmp.path().join("b");
        ProbeBundle::write(&dir, spec(3), &head(3)).unwrap();
        let p = dir.join(HEAD_FILE);
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 1;
        std::fs::write(&p, bytes).unwrap();
        let e = ProbeBundle::open(&dir).unwrap_err();
        assert!(e.to_string().contains("SHA-256"), "{e}");
        // Another embedding.
        let dir = tmp.path().join("c");
        ProbeBundle::write(&dir, spec(3), &head(3)).unwrap();
        let p = dir.join(PROBE_FILE);
        let text = std::fs::read_to_string(&p)
            .unwrap()
            .replace("birdnet@2.4", "perch@8");
        std::fs::write(&p, text).unwrap();
        let e = ProbeBundle::open(&dir).unwrap_err();
        assert!(e.to_string().contains("embedding"), "{e}");
    }
}
