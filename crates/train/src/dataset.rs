//! Training data: the ETL's shards, read window by window, and the batcher that augments them.
//!
//! A window's features are read from its shard at the byte offset the manifest records, so
//! memory holds one batch, not the dataset (BirdCLEF 2025's 28 k clips make ~100 GB of f16
//! features). Shards must be on a local disk; the ETL writes them there by default.
//!
//! With a teacher (`[distill]`, `[pseudo]`), items also carry what the teacher said: its
//! probabilities on the classes it covers and its embedding, for labelled windows of clips it
//! scored (matched by file and window start), and pseudo-labelled soundscape windows from its
//! store, whose targets are the transformed teacher probabilities (noisy student: the
//! pseudo-labels are the targets, through the same loss and augmentation as hard labels).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::tensor::{Device, Tensor, TensorData};
use silencio_common::SplitMix64;
use silencio_data::etl::{Manifest, WindowRecord};
use silencio_data::splits::{PeriodFilter, Split};

use crate::augment::{self, AugmentConfig};
use crate::experiment::PseudoConfig;
use crate::teacher::{RecordingSet, TeacherRecording, TeacherStore};
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
        Ok(dtype.decode(&buf))
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
            // A negative weight: known absent, target 0.
            if c < y.len() && w > 0.0 {
                y[c] = if w >= 1.0 { 1.0 } else { secondary_weight };
            }
        }
        y
    }

    /// Which targets of window `i` are known: None when all are (a labelled clip); for a window
    /// with a species known to be absent (feedback: "wrong" without the right species), 1 at
    /// its labelled species and 0 elsewhere, so the loss says nothing about the others.
    pub fn target_mask(&self, i: usize) -> Option<Vec<f32>> {
        let labels = &self.manifest.windows[i].labels;
        if !labels.iter().any(|&(_, w)| w < 0.0) {
            return None;
        }
        let mut m = vec![0.0; self.classes()];
        for &(c, _) in labels {
            if c < m.len() {
                m[c] = 1.0;
            }
        }
        Some(m)
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

/// What a teacher said about one window.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherTargets {
    /// Probabilities on the task's classes.
    pub probs: Vec<f32>,
    /// 1 for the classes the teacher covers, 0 for the others.
    pub mask: Arc<Vec<f32>>,
    /// The teacher's embedding, when embeddings are matched.
    pub embedding: Option<Vec<f32>>,
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
    /// Which targets are labels (1) and which are unknown (0); None: all are labels. A
    /// pseudo-labelled window knows only the classes its teacher covers.
    pub target_mask: Option<Arc<Vec<f32>>>,
    /// The teacher's outputs on this window, for the distillation terms.
    pub teacher: Option<TeacherTargets>,
}

/// The covered-class mask of a teacher as 0/1 floats.
pub fn covered_mask(teacher: &TeacherStore) -> Arc<Vec<f32>> {
    Arc::new(
        teacher
            .info()
            .covered
            .iter()
            .map(|&c| if c { 1.0 } else { 0.0 })
            .collect(),
    )
}

/// The teacher's outputs for the labelled windows `indices` of `store`, from its `train_audio`
/// recordings: a window gets them when the teacher scored its clip (same file under
/// `train_audio/`) at the same start (within 1 ms). Keeps probabilities (C floats) and, with
/// `with_embedding`, embeddings (E floats) of every matched window in memory.
pub fn labelled_teacher_outputs(
    store: &WindowStore,
    teacher: &TeacherStore,
    indices: &[usize],
    with_embedding: bool,
) -> Result<HashMap<usize, TeacherTargets>> {
    let mask = covered_mask(teacher);
    let files = store.manifest().clip_files();
    let mut by_clip: HashMap<usize, Vec<usize>> = HashMap::new();
    for &i in indices {
        if let Some(w) = store.manifest().windows.get(i) {
            by_clip.entry(w.clip).or_default().push(i);
        }
    }
    let mut clips: Vec<_> = by_clip.into_iter().collect();
    clips.sort();
    let mut out = HashMap::new();
    for (clip, windows) in clips {
        let Some(&file) = files.get(&clip) else {
            continue;
        };
        if !teacher.done(RecordingSet::TrainAudio, file) {
            continue;
        }
        let rec = teacher.read(RecordingSet::TrainAudio, file)?;
        for i in windows {
            let start = store.window(i).start_s;
            let Some(j) = rec
                .start_s
                .iter()
                .position(|&s| (s as f64 - start).abs() <= crate::teacher::SAME_WINDOW_S)
            else {
                continue;
            };
            out.insert(
                i,
                TeacherTargets {
                    probs: rec.probs[j].clone(),
                    mask: mask.clone(),
                    embedding: if with_embedding {
                        rec.embedding.get(j).cloned()
                    } else {
                        None
                    },
                },
            );
        }
    }
    Ok(out)
}

/// One pseudo-labelled window of the pool.
#[derive(Debug, Clone)]
struct PseudoWindow {
    /// Recording (index into the pool's files).
    file: usize,
    /// Window within it.
    window: usize,
    /// Its pseudo-labels.
    targets: Vec<f32>,
}

/// The pseudo-labelled soundscape windows of a teacher store. Pseudo-labels stay in memory (C
/// floats a window); features are read from the recording's file when a window is drawn (the
/// last recording read is cached: windows of one recording drawn in a row read it once).
pub struct PseudoPool {
    teacher: TeacherStore,
    files: Vec<String>,
    windows: Vec<PseudoWindow>,
    mask: Arc<Vec<f32>>,
    distill: Option<bool>,
    cache: Mutex<Option<(usize, Arc<TeacherRecording>)>>,
}

impl std::fmt::Debug for PseudoPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PseudoPool")
            .field("teacher", &self.teacher.dir())
            .field("recordings", &self.files.len())
            .field("windows", &self.windows.len())
            .finish()
    }
}

/// What building a [`PseudoPool`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolCounts {
    /// Soundscape recordings with features.
    pub recordings: usize,
    /// Recordings skipped for lack of student features.
    pub without_features: usize,
    /// Windows in the pool.
    pub windows: usize,
    /// Windows dropped by `min_confidence`.
    pub dropped: usize,
}

impl PseudoPool {
    /// The soundscape windows of `teacher` with `cfg`'s pseudo-labels, less those whose
    /// highest covered probability is below `min_confidence`. `distill`: Some(with embedding)
    /// when this teacher is also the `[distill]` teacher, so its outputs on these windows feed
    /// the distillation terms too.
    pub fn build(
        teacher: TeacherStore,
        cfg: &PseudoConfig,
        distill: Option<bool>,
    ) -> Result<(Self, PoolCounts)> {
        let mask = covered_mask(&teacher);
        let mut counts = PoolCounts {
            recordings: 0,
            without_features: 0,
            windows: 0,
            dropped: 0,
        };
        let mut files = Vec::new();
        let mut windows = Vec::new();
        for name in teacher.list(RecordingSet::Soundscapes)? {
            let rec = teacher.read(RecordingSet::Soundscapes, &name)?;
            if rec.features.len() != rec.len() || rec.is_empty() {
                counts.without_features += 1;
                continue;
            }
            let file = files.len();
            files.push(name);
            counts.recordings += 1;
            for (w, p) in rec.probs.iter().enumerate() {
                let top = p
                    .iter()
                    .zip(mask.iter())
                    .filter(|(_, m)| **m > 0.0)
                    .fold(0f32, |a, (v, _)| a.max(*v));
                if cfg.min_confidence.is_some_and(|c| top < c) {
                    counts.dropped += 1;
                    continue;
                }
                windows.push(PseudoWindow {
                    file,
                    window: w,
                    targets: crate::distill::pseudo_labels(p, cfg),
                });
            }
        }
        counts.windows = windows.len();
        Ok((
            Self {
                teacher,
                files,
                windows,
                mask,
                distill,
                cache: Mutex::new(None),
            },
            counts,
        ))
    }

    /// Windows in the pool.
    pub fn len(&self) -> usize {
        self.windows.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    fn recording(&self, file: usize) -> Result<Arc<TeacherRecording>> {
        // A poisoned lock only means another reader panicked; the cache is still valid.
        let mut cache = match self.cache.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let Some((f, rec)) = cache.as_ref()
            && *f == file
        {
            return Ok(rec.clone());
        }
        let name = self.files.get(file).ok_or_else(|| Error::Data {
            message: format!("pseudo recording {file} is out of range"),
        })?;
        let rec = Arc::new(self.teacher.read(RecordingSet::Soundscapes, name)?);
        *cache = Some((file, rec.clone()));
        Ok(rec)
    }

    /// Window `k` of the pool as a training item.
    fn item(&self, k: usize) -> Result<WindowItem> {
        let w = self.windows.get(k).ok_or_else(|| Error::Data {
            message: format!("pseudo window {k} of {}", self.windows.len()),
        })?;
        let rec = self.recording(w.file)?;
        let features = rec
            .features
            .get(w.window)
            .cloned()
            .ok_or_else(|| Error::Data {
                message: format!("{}: no window {}", rec.file, w.window),
            })?;
        let teacher = self.distill.map(|with_embedding| TeacherTargets {
            probs: rec.probs.get(w.window).cloned().unwrap_or_default(),
            mask: self.mask.clone(),
            embedding: if with_embedding {
                rec.embedding.get(w.window).cloned()
            } else {
                None
            },
        });
        Ok(WindowItem {
            features,
            next: None,
            targets: w.targets.clone(),
            target_mask: Some(self.mask.clone()),
            teacher,
        })
    }
}

/// The pseudo-labelled part of a training set: `per_epoch` slots, each drawing a window of the
/// pool. Slot s of epoch e takes window `order[(s + e·per_epoch) mod pool]` of a seeded
/// permutation, so successive epochs walk through the whole pool. The epoch is counted from
/// the pseudo items' reads (each epoch reads every item once); a resumed run starts again at
/// epoch 0's windows.
struct PseudoSlots {
    pool: Arc<PseudoPool>,
    per_epoch: usize,
    order: Vec<usize>,
    reads: Arc<AtomicUsize>,
}

/// A split of the store as a Burn dataset.
#[derive(Clone)]
pub struct WindowDataset {
    store: Arc<WindowStore>,
    indices: Vec<usize>,
    secondary_weight: f32,
    with_next: bool,
    teacher: Option<Arc<HashMap<usize, TeacherTargets>>>,
    pseudo: Option<Arc<PseudoSlots>>,
    /// Pseudo slots among `indices` (the reads of one epoch).
    pseudo_count: usize,
}

/// A seeded Fisher–Yates permutation of `0..n`.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    let mut rng = SplitMix64::new(seed);
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
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
            teacher: None,
            pseudo: None,
            pseudo_count: 0,
        }
    }

    /// Attaches the teacher's outputs on labelled windows (see [`labelled_teacher_outputs`]).
    pub fn with_teacher(mut self, outputs: Arc<HashMap<usize, TeacherTargets>>) -> Self {
        self.teacher = Some(outputs);
        self
    }

    /// Adds `per_epoch` pseudo-labelled windows drawn from `pool` (at most the pool's size),
    /// shuffled in among the labelled ones with `seed` so that a step cap keeps the mix.
    /// Returns the dataset and the number of pseudo windows per epoch. Call after
    /// [`Self::balanced`], which resamples labelled windows only.
    pub fn with_pseudo(
        mut self,
        pool: Arc<PseudoPool>,
        per_epoch: usize,
        seed: u64,
    ) -> (Self, usize) {
        let n = per_epoch.min(pool.len());
        if n == 0 {
            return (self, 0);
        }
        // Pseudo slot s is index store.len() + s: indices stay plain numbers for `with_indices`.
        let base = self.store.len();
        self.indices.extend((0..n).map(|s| base + s));
        let order = permutation(self.indices.len(), seed ^ 0x5eed_5107);
        self.indices = order.into_iter().map(|k| self.indices[k]).collect();
        self.pseudo_count = n;
        self.pseudo = Some(Arc::new(PseudoSlots {
            order: permutation(pool.len(), seed ^ 0x9e37_79b9),
            pool,
            per_epoch: n,
            reads: Arc::new(AtomicUsize::new(0)),
        }));
        (self, n)
    }

    /// Labelled (store) windows among the indices.
    pub fn labelled_len(&self) -> usize {
        let n = self.store.len();
        self.indices.iter().filter(|&&i| i < n).count()
    }

    fn pseudo_item(&self, slot: usize) -> Result<WindowItem> {
        let p = self.pseudo.as_ref().ok_or_else(|| Error::Data {
            message: format!("pseudo slot {slot} without a pseudo pool"),
        })?;
        let epoch = p.reads.fetch_add(1, Ordering::Relaxed) / self.pseudo_count.max(1);
        let k = (slot + epoch * p.per_epoch) % p.order.len().max(1);
        let w = *p.order.get(k).ok_or_else(|| Error::Data {
            message: "empty pseudo pool".into(),
        })?;
        p.pool.item(w)
    }

    /// Resamples the windows with weights ∝ 1/√(count of their rarest class), keeping the
    /// size: rare species are seen more often without repeating one clip hundreds of times.
    pub fn balanced(mut self, seed: u64) -> Self {
        let n = self.store.len();
        // Pseudo slots (indices past the store) are not resampled: they are dropped.
        self.indices.retain(|&i| i < n);
        self.pseudo = None;
        self.pseudo_count = 0;
        if self.indices.is_empty() {
            return self;
        }
        let c = self.store.classes();
        let mut counts = vec![0usize; c];
        for &i in &self.indices {
            // Species present; an absent one (negative weight) is no example of it.
            for &(k, w) in &self.store.window(i).labels {
                if k < c && w > 0.0 {
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
                    .filter(|&&(k, w)| k < c && w > 0.0)
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
        let n = self.store.len();
        self.pseudo_count = indices.iter().filter(|&&i| i >= n).count();
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
        if i >= self.store.len() {
            return self.pseudo_item(i - self.store.len()).map_err(to_err);
        }
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
            target_mask: self.store.target_mask(i).map(Arc::new),
            teacher: self.teacher.as_ref().and_then(|t| t.get(&i).cloned()),
        })
    }

    fn len(&self) -> usize {
        self.indices.len()
    }
}

/// The teacher part of a batch (training with a teacher only).
#[derive(Debug, Clone)]
pub struct DistillBatch {
    /// `[batch, classes]`: 1 where the target is a label (all of a labelled window, the
    /// teacher's covered classes of a pseudo-labelled one).
    pub target_mask: Tensor<2>,
    /// `[batch, classes]` teacher probabilities (0 where there are none).
    pub teacher_probs: Tensor<2>,
    /// `[batch, classes]`: 1 where a teacher probability exists and counts.
    pub teacher_mask: Tensor<2>,
    /// `[batch, E]` teacher embeddings, when embeddings are matched.
    pub teacher_embedding: Option<Tensor<2>>,
    /// `[batch]`: 1 where the teacher embedding exists and counts.
    pub embedding_present: Tensor<1>,
}

/// A batch: features `[batch, 1, mels, frames]` and soft targets `[batch, classes]`.
#[derive(Debug, Clone)]
pub struct WindowBatch {
    /// Log-mel windows.
    pub features: Tensor<4>,
    /// Targets in [0, 1].
    pub targets: Tensor<2>,
    /// What the teacher said (None without a teacher, and for validation).
    pub distill: Option<DistillBatch>,
}

/// Turns items into batches, augmenting them when `augment` is set (training).
pub struct WindowBatcher {
    shape: [usize; 2],
    classes: usize,
    augment: Option<AugmentConfig>,
    noise: Arc<Vec<Vec<f32>>>,
    rng: Mutex<SplitMix64>,
    teacher: Option<Option<usize>>,
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
            teacher: None,
        }
    }

    /// Batches carry a [`DistillBatch`], with `[batch, embedding_dim]` teacher embeddings when
    /// `embedding_dim` is set.
    pub fn with_teacher(mut self, embedding_dim: Option<usize>) -> Self {
        self.teacher = Some(embedding_dim);
        self
    }
}

/// The per-item teacher rows of a batch before they become tensors.
struct TeacherRows {
    target_mask: Vec<Vec<f32>>,
    probs: Vec<Vec<f32>>,
    mask: Vec<Vec<f32>>,
    embedding: Vec<Vec<f32>>,
    present: Vec<f32>,
}

impl TeacherRows {
    fn new(items: &[WindowItem], classes: usize, dim: Option<usize>) -> Self {
        let mut r = Self {
            target_mask: Vec::with_capacity(items.len()),
            probs: Vec::with_capacity(items.len()),
            mask: Vec::with_capacity(items.len()),
            embedding: Vec::with_capacity(items.len()),
            present: Vec::with_capacity(items.len()),
        };
        for item in items {
            r.target_mask.push(match &item.target_mask {
                Some(m) if m.len() == classes => m.to_vec(),
                _ => vec![1.0; classes],
            });
            match &item.teacher {
                Some(t) if t.probs.len() == classes && t.mask.len() == classes => {
                    r.probs.push(t.probs.clone());
                    r.mask.push(t.mask.to_vec());
                }
                _ => {
                    r.probs.push(vec![0.0; classes]);
                    r.mask.push(vec![0.0; classes]);
                }
            }
            let e = dim.unwrap_or(0);
            match item.teacher.as_ref().and_then(|t| t.embedding.as_ref()) {
                Some(v) if dim.is_some() && v.len() == e => {
                    r.embedding.push(v.clone());
                    r.present.push(1.0);
                }
                _ => {
                    r.embedding.push(vec![0.0; e]);
                    r.present.push(0.0);
                }
            }
        }
        r
    }

    /// Mixup of the teacher rows with the pairs the features and targets were mixed with:
    /// probabilities by max and masks by product, as targets are; a mixed item's embedding is
    /// dropped (the teacher never embedded the mix, and embeddings do not mix like labels).
    fn mix(&mut self, pairs: &[augment::MixPair]) {
        augment::mix_rows_product(&mut self.target_mask, pairs);
        augment::mix_rows_max(&mut self.probs, pairs);
        augment::mix_rows_product(&mut self.mask, pairs);
        for p in pairs {
            if let Some(v) = self.present.get_mut(p.item) {
                *v = 0.0;
            }
        }
    }

    fn into_batch(self, classes: usize, dim: Option<usize>, device: &Device) -> DistillBatch {
        let b = self.present.len();
        let flat = |rows: Vec<Vec<f32>>| rows.into_iter().flatten().collect::<Vec<f32>>();
        let t2 = |rows: Vec<Vec<f32>>, w: usize| {
            Tensor::from_data(TensorData::new(flat(rows), [b, w]), device)
        };
        DistillBatch {
            target_mask: t2(self.target_mask, classes),
            teacher_probs: t2(self.probs, classes),
            teacher_mask: t2(self.mask, classes),
            teacher_embedding: dim.map(|e| t2(self.embedding, e)),
            embedding_present: Tensor::from_data(TensorData::new(self.present, [b]), device),
        }
    }
}

impl Batcher<WindowItem, WindowBatch> for WindowBatcher {
    fn batch(&self, items: Vec<WindowItem>, device: &Device) -> WindowBatch {
        let [m, t] = self.shape;
        let b = items.len();
        let mut x = Vec::with_capacity(b * m * t);
        let mut y = Vec::with_capacity(b * self.classes);
        let mut rows = match self.teacher {
            Some(dim) => Some(TeacherRows::new(&items, self.classes, dim)),
            // Windows that know only some targets (feedback negatives) need the masked hard
            // loss, teacher or not; without a teacher the soft terms have nothing to add.
            None if items.iter().any(|i| i.target_mask.is_some()) => {
                Some(TeacherRows::new(&items, self.classes, None))
            }
            None => None,
        };
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
                let pairs = augment::draw_mixup(xs.len(), cfg, &mut rng);
                augment::apply_mixup(&mut xs, &mut ys, &pairs);
                if let Some(r) = rows.as_mut() {
                    r.mix(&pairs);
                }
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
            distill: rows.map(|r| r.into_batch(self.classes, self.teacher.flatten(), device)),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn item(targets: Vec<f32>, mask: Option<Vec<f32>>) -> WindowItem {
        WindowItem {
            features: vec![0.0; 4 * 6],
            next: None,
            targets,
            target_mask: mask.map(Arc::new),
            teacher: None,
        }
    }

    fn rows(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn a_window_knowing_one_absent_species_masks_the_loss_without_a_teacher() {
        let device = Device::flex();
        let b = WindowBatcher::new([4, 6], 3, None, Arc::new(Vec::new()), 0);
        // Labelled clips only: the plain loss, no mask.
        let plain = b.batch(
            vec![item(vec![1., 0., 0.], None), item(vec![0., 1., 0.], None)],
            &device,
        );
        assert!(plain.distill.is_none());
        // With a feedback negative ("not class 1"): the hard loss counts the labelled clip's
        // every class and the negative's one class; no teacher term has anything to add.
        let mixed = b.batch(
            vec![
                item(vec![1., 0., 0.], None),
                item(vec![0., 0., 0.], Some(vec![0., 1., 0.])),
            ],
            &device,
        );
        let d = mixed.distill.unwrap();
        assert_eq!(rows(d.target_mask), [1., 1., 1., 0., 1., 0.]);
        assert_eq!(rows(d.teacher_mask), [0.; 6]);
        assert!(d.teacher_embedding.is_none());
        assert_eq!(rows(mixed.targets), [1., 0., 0., 0., 0., 0.]);
    }
}
