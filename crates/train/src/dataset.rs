//! Training data: the ETL's shards, read window by window, and the batcher that augments them.
//!
//! A window's features are read from its shard at the byte offset the manifest records, so
//! memory holds one batch, not the dataset (BirdCLEF 2025's 28 k clips make ~100 GB of f16
//! features). Shards must be on a local disk; the ETL writes them there by default.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Tensor, TensorData};
use silencio_common::SplitMix64;
use silencio_data::etl::{Dtype, Manifest, WindowRecord};
use silencio_data::splits::{PeriodFilter, Split};

use crate::augment::{self, AugmentConfig};
use crate::{Error, Result};

/// The shards of one ETL run, opened for reading.
pub struct WindowStore {
    manifest: Manifest,
    files: Vec<File>,
    dir: PathBuf,
}

impl std::fmt::Debug for WindowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowStore")
            .field("dir", &self.dir)
            .field("windows", &self.manifest.windows.len())
            .finish()
    }
}

impl WindowStore {
    /// Opens `dir/manifest.json` and every shard it lists.
    pub fn open(dir: &Path) -> Result<Self> {
        let path = dir.join("manifest.json");
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| Error::Data {
            message: format!("{} does not parse: {e}", path.display()),
        })?;
        let mut files = Vec::with_capacity(manifest.shards.len());
        for s in &manifest.shards {
            let p = dir.join(&s.file);
            let f = File::open(&p).map_err(|e| Error::io(&p, e))?;
            let len = f.metadata().map_err(|e| Error::io(&p, e))?.len();
            if len != s.bytes {
                return Err(Error::Data {
                    message: format!(
                        "{} has {len} bytes, the manifest says {}",
                        p.display(),
                        s.bytes
                    ),
                });
            }
            files.push(f);
        }
        Ok(Self {
            manifest,
            files,
            dir: dir.to_path_buf(),
        })
    }

    /// Windows stored.
    pub fn len(&self) -> usize {
        self.manifest.windows.len()
    }

    /// Whether no window is stored.
    pub fn is_empty(&self) -> bool {
        self.manifest.windows.is_empty()
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// `[mels, frames]` of every window.
    pub fn shape(&self) -> [usize; 2] {
        self.manifest.feature_shape
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.manifest.classes.len()
    }

    /// Reads the features of window `i` (`mels × frames`, row-major) as f32.
    pub fn features(&self, i: usize) -> Result<Vec<f32>> {
        let w = self.manifest.windows.get(i).ok_or_else(|| Error::Data {
            message: format!("window {i} is out of range"),
        })?;
        let file = self.files.get(w.shard).ok_or_else(|| Error::Data {
            message: format!("window {i} names shard {} that is not listed", w.shard),
        })?;
        let [m, t] = self.shape();
        let n = m * t;
        let dtype = self.manifest.options.dtype;
        let mut buf = vec![0u8; n * dtype.size()];
        file.read_exact_at(&mut buf, w.offset)
            .map_err(|e| Error::io(&self.dir.join(&self.manifest.shards[w.shard].file), e))?;
        Ok(match dtype {
            Dtype::F32 => buf
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => buf
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        })
    }

    /// Indices of the windows of `split` that `period` admits.
    pub fn select(&self, split: Split, period: PeriodFilter) -> Vec<usize> {
        self.manifest
            .windows
            .iter()
            .enumerate()
            .filter(|(_, w)| w.split == split && period.admits(w.period))
            .map(|(i, _)| i)
            .collect()
    }

    /// The window record `i`.
    pub fn window(&self, i: usize) -> &WindowRecord {
        &self.manifest.windows[i]
    }

    /// Dense targets of window `i`: primary labels 1, secondary ones `secondary_weight`.
    pub fn targets(&self, i: usize, secondary_weight: f32) -> Vec<f32> {
        let mut y = vec![0.0; self.classes()];
        for &(c, w) in &self.manifest.windows[i].labels {
            if c < y.len() {
                y[c] = if w >= 1.0 { 1.0 } else { secondary_weight };
            }
        }
        y
    }

    /// Mean and standard deviation of the features of up to `max` windows of `indices`
    /// (the model's input normalisation).
    pub fn feature_stats(&self, indices: &[usize], max: usize) -> Result<(f32, f32)> {
        let step = (indices.len() / max.max(1)).max(1);
        let (mut s, mut s2, mut n) = (0f64, 0f64, 0f64);
        for &i in indices.iter().step_by(step).take(max) {
            for v in self.features(i)? {
                s += v as f64;
                s2 += (v as f64) * (v as f64);
                n += 1.0;
            }
        }
        if n == 0.0 {
            return Ok((0.0, 1.0));
        }
        let mean = s / n;
        let std = (s2 / n - mean * mean).max(1e-6).sqrt();
        Ok((mean as f32, std as f32))
    }
}

/// One window as the batcher sees it.
#[derive(Debug, Clone)]
pub struct WindowItem {
    /// Features, `mels × frames`.
    pub features: Vec<f32>,
    /// The clip's next window, when random crops may reach into it.
    pub next: Option<Vec<f32>>,
    /// Dense targets.
    pub targets: Vec<f32>,
}

/// A split of the store as a Burn dataset.
#[derive(Clone)]
pub struct WindowDataset {
    store: Arc<WindowStore>,
    indices: Vec<usize>,
    secondary_weight: f32,
    with_next: bool,
}

impl WindowDataset {
    /// Windows `indices` of `store`; `with_next` reads each window's successor for random crops.
    pub fn new(
        store: Arc<WindowStore>,
        indices: Vec<usize>,
        secondary_weight: f32,
        with_next: bool,
    ) -> Self {
        Self {
            store,
            indices,
            secondary_weight,
            with_next,
        }
    }

    /// Resamples the windows with weights ∝ 1/√(count of their rarest class), keeping the
    /// size: rare species are seen more often without repeating one clip hundreds of times.
    pub fn balanced(mut self, seed: u64) -> Self {
        let c = self.store.classes();
        let mut counts = vec![0usize; c];
        for &i in &self.indices {
            for &(k, _) in &self.store.window(i).labels {
                if k < c {
                    counts[k] += 1;
                }
            }
        }
        let weights: Vec<f64> = self
            .indices
            .iter()
            .map(|&i| {
                let rarest = self
                    .store
                    .window(i)
                    .labels
                    .iter()
                    .filter(|(k, _)| *k < c)
                    .map(|&(k, _)| counts[k])
                    .min()
                    .unwrap_or(1)
                    .max(1);
                1.0 / (rarest as f64).sqrt()
            })
            .collect();
        let total: f64 = weights.iter().sum();
        let mut cumulative = Vec::with_capacity(weights.len());
        let mut acc = 0.0;
        for w in &weights {
            acc += w / total;
            cumulative.push(acc);
        }
        let mut rng = SplitMix64::new(seed ^ 0xba1a_ced5);
        let picked = (0..self.indices.len())
            .map(|_| {
                let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                let k = cumulative.partition_point(|&c| c < u);
                self.indices[k.min(self.indices.len() - 1)]
            })
            .collect();
        self.indices = picked;
        self
    }

    /// The same dataset over other store windows.
    pub fn with_indices(mut self, indices: Vec<usize>) -> Self {
        self.indices = indices;
        self
    }

    /// Store window indices in dataset order.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset<WindowItem> for WindowDataset {
    fn get(&self, index: usize) -> std::result::Result<WindowItem, DatasetError> {
        let to_err = DatasetError::new::<Error>;
        let i = *self.indices.get(index).ok_or_else(|| {
            to_err(Error::Data {
                message: format!("item {index} of {}", self.indices.len()),
            })
        })?;
        let features = self.store.features(i).map_err(to_err)?;
        let w = self.store.window(i);
        // The successor is the next manifest window of the same clip with real audio in it.
        let next = match self.store.manifest.windows.get(i + 1) {
            Some(n)
                if self.with_next
                    && n.clip == w.clip
                    && n.valid_s > 0.5 * (n.end_s - n.start_s) =>
            {
                Some(self.store.features(i + 1).map_err(to_err)?)
            }
            _ => None,
        };
        Ok(WindowItem {
            features,
            next,
            targets: self.store.targets(i, self.secondary_weight),
        })
    }

    fn len(&self) -> usize {
        self.indices.len()
    }
}

/// A batch: features `[batch, 1, mels, frames]` and soft targets `[batch, classes]`.
#[derive(Debug, Clone)]
pub struct WindowBatch {
    /// Log-mel windows.
    pub features: Tensor<4>,
    /// Targets in [0, 1].
    pub targets: Tensor<2>,
}

/// Turns items into batches, augmenting them when `augment` is set (training).
pub struct WindowBatcher {
    shape: [usize; 2],
    classes: usize,
    augment: Option<AugmentConfig>,
    noise: Arc<Vec<Vec<f32>>>,
    rng: Mutex<SplitMix64>,
}

impl WindowBatcher {
    /// A batcher for windows of `shape` and `classes` targets; `noise` holds log-mel background
    /// windows of the same shape for noise mixing.
    pub fn new(
        shape: [usize; 2],
        classes: usize,
        augment: Option<AugmentConfig>,
        noise: Arc<Vec<Vec<f32>>>,
        seed: u64,
    ) -> Self {
        Self {
            shape,
            classes,
            augment,
            noise,
            rng: Mutex::new(SplitMix64::new(seed)),
        }
    }
}

impl Batcher<WindowItem, WindowBatch> for WindowBatcher {
    fn batch(&self, items: Vec<WindowItem>, device: &Device) -> WindowBatch {
        let [m, t] = self.shape;
        let b = items.len();
        let mut x = Vec::with_capacity(b * m * t);
        let mut y = Vec::with_capacity(b * self.classes);
        match &self.augment {
            Some(cfg) => {
                // A poisoned lock only means another batch panicked; its RNG state is still valid.
                let mut rng = match self.rng.lock() {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
                let mut xs = Vec::with_capacity(b);
                let mut ys = Vec::with_capacity(b);
                for item in items {
                    let mut f =
                        augment::crop(&item.features, item.next.as_deref(), m, t, cfg, &mut rng);
                    augment::add_noise(&mut f, &self.noise, cfg, &mut rng);
                    augment::spec_augment(&mut f, m, t, cfg, &mut rng);
                    xs.push(f);
                    ys.push(item.targets);
                }
                augment::mixup(&mut xs, &mut ys, cfg, &mut rng);
                for (f, t) in xs.into_iter().zip(ys) {
                    x.extend(f);
                    y.extend(t);
                }
            }
            None => {
                for item in items {
                    x.extend(item.features);
                    y.extend(item.targets);
                }
            }
        }
        WindowBatch {
            // [b, 1, mels, frames]
            features: Tensor::from_data(TensorData::new(x, [b, 1, m, t]), device),
            targets: Tensor::from_data(TensorData::new(y, [b, self.classes]), device),
        }
    }
}
