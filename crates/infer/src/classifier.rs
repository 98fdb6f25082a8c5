//! Running a bundle: audio bytes in, per-window species scores out.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;
use silencio_audio::{AudioInfo, FeatureConfig, Features, LogMel};
use silencio_models::Model;

use crate::bundle::{BundleMeta, ModelBundle, Species};
use crate::{Error, Result};

/// Scores of one window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowScores {
    /// Start in seconds.
    pub start_s: f64,
    /// Nominal end in seconds (`start + window length`).
    pub end_s: f64,
    /// One probability per species, in [`Identification::species`] order.
    pub scores: Vec<f32>,
}

impl WindowScores {
    /// The rows `scores` of `feats`'s windows (in order), with their times.
    pub fn of(feats: &Features, scores: Vec<Vec<f32>>) -> Vec<Self> {
        feats
            .windows
            .iter()
            .zip(scores)
            .map(|(w, scores)| Self {
                start_s: w.start_s,
                end_s: w.end_s,
                scores,
            })
            .collect()
    }
}

/// One species with its score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeciesScore {
    /// Code.
    pub code: String,
    /// Scientific name.
    pub scientific_name: String,
    /// Common name.
    pub common_name: String,
    /// Class.
    pub class_name: String,
    /// Probability in [0, 1].
    pub score: f32,
}

/// What a classifier heard in a recording.
#[derive(Debug, Clone)]
pub struct Identification {
    /// `name@version` of the model (or the ensemble).
    pub model_version: String,
    /// The decoded input, when the classifier decoded it.
    pub audio: Option<AudioInfo>,
    /// Classes, in score order.
    pub species: Arc<Vec<Species>>,
    /// Per-window scores.
    pub windows: Vec<WindowScores>,
}

impl Identification {
    /// The `k` best species of window `i` with a score of at least `min_score`, best first
    /// (ties keep class order).
    pub fn top_k(&self, i: usize, k: usize, min_score: f32) -> Vec<SpeciesScore> {
        let Some(w) = self.windows.get(i) else {
            return Vec::new();
        };
        top_k(&w.scores, k, min_score)
            .into_iter()
            .map(|(j, score)| {
                let s = &self.species[j];
                SpeciesScore {
                    code: s.code.clone(),
                    scientific_name: s.scientific_name.clone(),
                    common_name: s.common_name.clone(),
                    class_name: s.class_name.clone(),
                    score,
                }
            })
            .collect()
    }
}

/// Indices and values of the `k` largest scores that are `>= min_score`, largest first; NaN
/// scores never qualify.
pub fn top_k(scores: &[f32], k: usize, min_score: f32) -> Vec<(usize, f32)> {
    let mut idx: Vec<(usize, f32)> = scores
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, s)| *s >= min_score)
        .collect();
    idx.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    idx.truncate(k);
    idx
}

/// A loaded bundle on a device.
#[derive(Debug)]
pub struct Classifier {
    meta: BundleMeta,
    species: Arc<Vec<Species>>,
    model: Model,
    device: Device,
    logmel: LogMel,
    batch_size: usize,
    max_duration_s: f64,
    location: Option<Arc<crate::location::OccurrenceModel>>,
}

impl Classifier {
    /// Opens and checks the bundle at `dir`, then loads its model onto `device`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let bundle = ModelBundle::open(dir)?;
        let model = bundle.load_model(device)?;
        let mut c = Self::from_parts(bundle.meta().clone(), model, device)?;
        c.location = bundle.location()?.map(Arc::new);
        Ok(c)
    }

    /// A classifier from a description and a model already in memory (training, tests).
    pub fn from_parts(meta: BundleMeta, model: Model, device: &Device) -> Result<Self> {
        let logmel = LogMel::new(&meta.features)?;
        Ok(Self {
            species: Arc::new(meta.species.clone()),
            meta,
            // The classifier only infers: the load-time rewrites apply.
            model: model.for_inference(),
            device: device.clone(),
            logmel,
            batch_size: 16,
            max_duration_s: silencio_audio::DecodeOptions::default().max_duration_s,
            location: None,
        })
    }

    /// The bundle's occurrence model (the location filter), when it has one.
    pub fn location(&self) -> Option<&Arc<crate::location::OccurrenceModel>> {
        self.location.as_ref()
    }

    /// Windows per forward pass (default 16).
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Longest recording accepted, in seconds (default one hour).
    pub fn with_max_duration(mut self, seconds: f64) -> Self {
        self.max_duration_s = seconds;
        self
    }

    /// The bundle's description.
    pub fn meta(&self) -> &BundleMeta {
        &self.meta
    }

    /// The feature recipe.
    pub fn features(&self) -> &FeatureConfig {
        &self.meta.features
    }

    /// Classes in score order.
    pub fn species(&self) -> &Arc<Vec<Species>> {
        &self.species
    }

    /// `name@version`.
    pub fn model_version(&self) -> String {
        self.meta.model_version()
    }

    /// Decodes an encoded recording (any format `silencio-audio` reads) and scores each window.
    pub fn identify(&self, bytes: Vec<u8>) -> Result<Identification> {
        let (info, feats) =
            silencio_audio::features_from_bytes(bytes, &self.meta.features, self.max_duration_s)?;
        let mut id = self.identify_features(&feats)?;
        id.audio = Some(info);
        Ok(id)
    }

    /// [`Classifier::identify`] on a file.
    pub fn identify_path(&self, path: impl AsRef<Path>) -> Result<Identification> {
        let (info, feats) =
            silencio_audio::features_from_path(path, &self.meta.features, self.max_duration_s)?;
        let mut id = self.identify_features(&feats)?;
        id.audio = Some(info);
        Ok(id)
    }

    /// Scores mono samples already at the recipe's sample rate.
    pub fn identify_samples(&self, samples: &[f32]) -> Result<Identification> {
        let feats = self.logmel.features(samples)?;
        self.identify_features(&feats)
    }

    /// Scores precomputed features (they must follow this bundle's recipe).
    pub fn identify_features(&self, feats: &Features) -> Result<Identification> {
        let scores = self.predict_features(feats)?;
        Ok(Identification {
            model_version: self.model_version(),
            audio: None,
            species: self.species.clone(),
            windows: WindowScores::of(feats, scores),
        })
    }

    /// The batch API: probabilities `[windows][species]` for many windows of features, run
    /// `batch_size` windows per forward pass.
    pub fn predict_features(&self, feats: &Features) -> Result<Vec<Vec<f32>>> {
        let [n, m, t] = feats.shape();
        let want = (
            self.meta.features.n_mels,
            self.meta.features.frames_per_window(),
        );
        if n > 0 && (m, t) != want {
            return Err(Error::Shape(format!(
                "features are {m} mels x {t} frames; the bundle's recipe makes {} x {}",
                want.0, want.1
            )));
        }
        self.predict_data(&feats.data, m, t)
    }

    /// Probabilities for a batch of raw windows (mono, recipe rate, each exactly one window
    /// long or shorter — shorter ones are zero-padded).
    pub fn predict_windows(&self, windows: &[&[f32]]) -> Result<Vec<Vec<f32>>> {
        let len = self
            .meta
            .features
            .window
            .length_samples(self.meta.features.sample_rate);
        let m = self.meta.features.n_mels;
        let t = self.meta.features.frames_per_window();
        let mut data = Vec::with_capacity(windows.len() * m * t);
        let mut buf = vec![0f32; len];
        for w in windows {
            if w.len() > len {
                return Err(Error::Shape(format!(
                    "a window has {} samples; the recipe's window is {len}",
                    w.len()
                )));
            }
            buf.fill(0.0);
            buf[..w.len()].copy_from_slice(w);
            data.extend(self.logmel.compute(&buf));
        }
        self.predict_data(&data, m, t)
    }

    /// [`Classifier::identify`] with the model's embedding of each window (the same windows,
    /// in order): what a teacher gives for distillation.
    pub fn identify_embedded(&self, bytes: Vec<u8>) -> Result<(Identification, Vec<Vec<f32>>)> {
        let (info, feats) =
            silencio_audio::features_from_bytes(bytes, &self.meta.features, self.max_duration_s)?;
        let mut id = self.identify_features(&feats)?;
        id.audio = Some(info);
        let embeddings = self.embed_features(&feats)?;
        Ok((id, embeddings))
    }

    /// The model's embedding (`silencio_models::Model::embed`) of each window of features
    /// that follow this bundle's recipe, `batch_size` windows per forward pass.
    pub fn embed_features(&self, feats: &Features) -> Result<Vec<Vec<f32>>> {
        let [n, m, t] = feats.shape();
        let mut out = Vec::with_capacity(n);
        for chunk in feats.data.chunks((self.batch_size * m * t).max(1)) {
            let b = chunk.len() / (m * t).max(1);
            let x =
                Tensor::<4>::from_data(TensorData::new(chunk.to_vec(), [b, 1, m, t]), &self.device);
            let y = self.model.embed(x);
            let [_, e] = y.dims();
            let v: Vec<f32> = y
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| Error::Shape(format!("{e:?}")))?;
            out.extend(v.chunks(e.max(1)).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    /// Probabilities of `[windows, m, t]` log-mel data, `batch_size` windows per forward pass.
    fn predict_data(&self, data: &[f32], m: usize, t: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(data.len() / (m * t).max(1));
        for chunk in data.chunks(self.batch_size * m * t) {
            let b = chunk.len() / (m * t);
            let x =
                Tensor::<4>::from_data(TensorData::new(chunk.to_vec(), [b, 1, m, t]), &self.device);
            out.extend(self.probabilities(x)?);
        }
        Ok(out)
    }

    fn probabilities(&self, x: Tensor<4>) -> Result<Vec<Vec<f32>>> {
        let [b, ..] = x.dims();
        let k = self.species.len();
        let p = silencio_kernels::sigmoid(self.model.forward(x).logits);
        let v: Vec<f32> = p
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| Error::Shape(format!("{e:?}")))?;
        if v.len() != b * k {
            return Err(Error::Shape(format!(
                "model returned {} values for {b} windows x {k} species",
                v.len()
            )));
        }
        Ok(v.chunks(k).map(|c| c.to_vec()).collect())
    }
}

/// How far one model's probabilities are from another's on the same windows: what
/// [`crate::bundle::optimise`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OutputDiff {
    /// Windows compared.
    pub windows: usize,
    /// Largest |p_a − p_b| over every window and species (NaN if either gave a NaN).
    pub max_abs: f32,
    /// Mean |p_a − p_b|.
    pub mean_abs: f64,
    /// Fraction of windows whose highest-scoring species is the same.
    pub top1_agreement: f64,
}

impl OutputDiff {
    /// Compares rows of probabilities `[windows][species]` of the same shape.
    pub fn between(a: &[Vec<f32>], b: &[Vec<f32>]) -> Result<Self> {
        if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.len() != y.len()) {
            return Err(Error::Shape(format!(
                "cannot compare {} windows with {} (or their species differ)",
                a.len(),
                b.len()
            )));
        }
        let (mut max_abs, mut sum, mut n, mut same) = (0f32, 0f64, 0usize, 0usize);
        for (x, y) in a.iter().zip(b) {
            for (p, q) in x.iter().zip(y) {
                let d = (p - q).abs();
                // `f32::max` would drop a NaN, and a NaN is the worst difference there is.
                max_abs = if d.is_nan() || max_abs.is_nan() {
                    f32::NAN
                } else {
                    max_abs.max(d)
                };
                sum += f64::from(d);
                n += 1;
            }
            let best = |r: &[f32]| top_k(r, 1, f32::NEG_INFINITY).first().map(|t| t.0);
            same += usize::from(best(x) == best(y));
        }
        Ok(Self {
            windows: a.len(),
            max_abs,
            mean_abs: if n == 0 { 0.0 } else { sum / n as f64 },
            top1_agreement: if a.is_empty() {
                1.0
            } else {
                same as f64 / a.len() as f64
            },
        })
    }

    /// Both classifiers on every window of each recording.
    pub fn on_audio(a: &Classifier, b: &Classifier, files: &[impl AsRef<Path>]) -> Result<Self> {
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        for f in files {
            pa.extend(a.identify_path(f)?.windows.into_iter().map(|w| w.scores));
            pb.extend(b.identify_path(f)?.windows.into_iter().map(|w| w.scores));
        }
        Self::between(&pa, &pb)
    }

    /// Both classifiers on raw windows (see [`Classifier::predict_windows`]).
    pub fn on_windows(a: &Classifier, b: &Classifier, windows: &[&[f32]]) -> Result<Self> {
        Self::between(&a.predict_windows(windows)?, &b.predict_windows(windows)?)
    }

    /// Both classifiers on `n` windows of uniform noise (±0.1 full scale) from `seed`, at
    /// `a`'s window length: a check that nothing broke when no recordings are at hand (noise
    /// exercises a model far less than real audio does).
    pub fn on_noise(a: &Classifier, b: &Classifier, n: usize, seed: u64) -> Result<Self> {
        let f = &a.meta().features;
        let len = f.window.length_samples(f.sample_rate);
        let mut rng = silencio_common::rand::SplitMix64::new(seed);
        let noise: Vec<Vec<f32>> = (0..n)
            .map(|_| {
                (0..len)
                    .map(|_| (rng.uniform() as f32 - 0.5) * 0.2)
                    .collect()
            })
            .collect();
        let windows: Vec<&[f32]> = noise.iter().map(Vec::as_slice).collect();
        Self::on_windows(a, b, &windows)
    }
}
