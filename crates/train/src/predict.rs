//! Scores for evaluation: the validation windows straight from the shards, and mixed
//! soundscapes (made from held-out calls) through the same `Classifier` that serves users.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor, TensorData};
use silencio_data::mix::MixOptions;
use silencio_data::splits::Split;
use silencio_infer::Identification;
use silencio_models::Model;

use crate::dataset::WindowStore;
use crate::{Error, Result};
use silencio_data::PeriodFilter;

/// Row-major scores and labels with per-row metadata, ready for the metrics.
#[derive(Debug, Clone, Default)]
pub struct Scored {
    /// Row ids.
    pub rows: Vec<String>,
    /// `rows × classes` probabilities.
    pub scores: Vec<Vec<f32>>,
    /// `rows × classes` 0/1 labels.
    pub labels: Vec<Vec<f32>>,
    /// Slicing attributes per row (collection, rating, SNR bin, overlap, background, …).
    pub meta: Vec<BTreeMap<String, String>>,
    /// The cluster of each row (its source recording, or its soundscape), for the paired
    /// bootstrap of `silencio eval compare`.
    pub clusters: Vec<String>,
}

impl Scored {
    /// Writes the rows as `silencio.window_scores.v1` JSON to `path` (atomically, creating
    /// its folder), species in score order.
    pub fn write_window_scores(&self, species: &[String], path: &Path) -> Result<()> {
        let eval_err = |e: silencio_eval::Error| Error::Data {
            message: format!("window scores {}: {e}", path.display()),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        silencio_eval::effect::WindowScores {
            schema: silencio_eval::effect::WindowScores::SCHEMA.into(),
            species: species.to_vec(),
            row_ids: self.rows.clone(),
            clusters: self.clusters.clone(),
            labels: self.labels.clone(),
            scores: self.scores.clone(),
        }
        .write_json(path)
        .map_err(eval_err)
    }
}

fn forward(
    model: &Model,
    data: Vec<f32>,
    n: usize,
    m: usize,
    t: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    // [n, 1, mels, frames] -> [n, classes]
    let x = Tensor::<4>::from_data(TensorData::new(data, [n, 1, m, t]), device);
    let p = sigmoid(model.forward(x).logits);
    p.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Training {
            message: format!("reading scores: {e:?}"),
        })
}

/// What `train.csv` says of one clip: slicing facts and its source recording.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipFact {
    /// XC, iNat, CSA, …
    pub collection: String,
    /// Quality rating, when parsable.
    pub rating: Option<f64>,
    /// Its source recording ([`silencio_data::recording_group`]): the cluster of its windows.
    pub recording: String,
}

/// [`ClipFact`]s by filename.
pub type ClipFacts = BTreeMap<String, ClipFact>;

/// Reads [`ClipFacts`] from `root/train.csv` (rows it cannot parse are simply absent).
pub fn clip_facts(root: &Path) -> Result<ClipFacts> {
    let (records, _) = silencio_data::read_train_csv(&root.join("train.csv"))?;
    Ok(records
        .iter()
        .map(|r| {
            let fact = ClipFact {
                collection: r.collection.clone(),
                rating: r.rating,
                recording: silencio_data::recording_group(r).to_string(),
            };
            (r.filename.clone(), fact)
        })
        .collect())
}

/// Scores every validation window of the store; labels are primary/secondary ≥ 0.5.
pub fn validation(
    store: &WindowStore,
    model: &Model,
    batch: usize,
    device: &Device,
    facts: &ClipFacts,
) -> Result<Scored> {
    let idx = store.select(Split::Valid, PeriodFilter::All);
    let [m, t] = store.shape();
    let c = store.classes();
    let mut probs = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(batch.max(1)) {
        let mut data = Vec::with_capacity(chunk.len() * m * t);
        for &i in chunk {
            data.extend(store.features(i)?);
        }
        let p = forward(model, data, chunk.len(), m, t, device)?;
        probs.extend(p.chunks(c).map(<[f32]>::to_vec));
    }
    Ok(windows(store, &idx, probs, facts))
}

/// Rows, labels and slicing facts of the store's windows `idx`, with their probabilities.
pub fn windows(
    store: &WindowStore,
    idx: &[usize],
    probs: Vec<Vec<f32>>,
    facts: &ClipFacts,
) -> Scored {
    let man = store.manifest();
    let mut out = Scored::default();
    for (&i, p) in idx.iter().zip(probs) {
        let w = store.window(i);
        let clip = &man.clips[w.clip];
        out.rows.push(format!("{}#{}", clip.filename, w.window));
        out.scores.push(p);
        out.labels.push(
            store
                .targets(i, 1.0)
                .into_iter()
                .map(|v| if v >= 0.5 { 1.0 } else { 0.0 })
                .collect(),
        );
        let mut meta = BTreeMap::new();
        let fact = facts.get(&clip.filename);
        if let Some(f) = fact {
            meta.insert("collection".into(), f.collection.clone());
            meta.insert(
                "rating".into(),
                silencio_eval::slices::rating_bin(f.rating.unwrap_or(0.0) as f32),
            );
        }
        out.meta.push(meta);
        out.clusters
            .push(fact.map_or_else(|| clip.filename.clone(), |f| f.recording.clone()));
    }
    out
}

/// SNR bin of a mixed window (`no call` for background-only windows).
fn snr_bin(snr: Option<f64>) -> String {
    snr.map_or_else(
        || "no call".into(),
        |s| silencio_eval::slices::snr_bin(s as f32),
    )
}

/// Mixes `opts.minutes` soundscapes from the held-out calls of `root` on `bgs` into `out`
/// (which keeps the mixer's files for inspection), then scores them with `score` (the bundle, as
/// serving runs it). Rows are
/// the mixer's `row_id`s.
pub fn mixed(
    root: &Path,
    bgs: &[silencio_data::mix::Background],
    opts: &MixOptions,
    out: &Path,
    score: &dyn Fn(&Path) -> silencio_infer::Result<Identification>,
    classes: &[String],
) -> Result<Scored> {
    let set = silencio_data::mix::load_calls(root, opts)?;
    let report = silencio_data::mix::mix(&set, bgs, opts, out)?;
    let mut scored = Scored::default();
    let by_code: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    for file in &report.soundscapes {
        let id = score(&out.join(file))?;
        let stem = Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let rows: Vec<_> = report
            .windows
            .iter()
            .filter(|w| w.soundscape == stem || w.soundscape == *file)
            .collect();
        for (w, scores) in rows.iter().zip(&id.windows) {
            let mut y = vec![0.0f32; classes.len()];
            for code in w.species.split_whitespace() {
                if let Some(&k) = by_code.get(code) {
                    y[k] = 1.0;
                }
            }
            scored.rows.push(w.row_id.clone());
            scored.scores.push(scores.scores.clone());
            scored.labels.push(y);
            let mut meta = BTreeMap::new();
            meta.insert("snr".into(), snr_bin(w.snr_min_db));
            meta.insert(
                "overlap".into(),
                silencio_eval::slices::overlap_bin(w.calls),
            );
            meta.insert("background".into(), w.background.clone());
            if let Some(tod) = silencio_eval::time_of_day(&stem) {
                meta.insert("time_of_day".into(), tod);
            }
            scored.meta.push(meta);
            scored.clusters.push(stem.clone());
        }
    }
    Ok(scored)
}

/// Writes `dir/eval-<set>/window_scores.json` for the validation windows (`valid`), the mixed
/// soundscapes (`mixed`) and each suite, so that `silencio eval compare` can pair two runs.
/// Returns each file with its MLflow artefact folder (`eval-<set>`).
pub fn write_window_scores(
    dir: &Path,
    species: &[silencio_infer::Species],
    valid: &Scored,
    mixed: Option<&Scored>,
    suites: &[(String, Scored)],
) -> Result<Vec<(std::path::PathBuf, String)>> {
    let codes: Vec<String> = species.iter().map(|s| s.code.clone()).collect();
    let sets = std::iter::once(("valid", valid))
        .chain(mixed.map(|m| ("mixed", m)))
        .chain(suites.iter().map(|(n, s)| (n.as_str(), s)));
    let mut out = Vec::new();
    for (name, scored) in sets {
        let folder = format!("eval-{name}");
        let path = dir.join(&folder).join("window_scores.json");
        scored.write_window_scores(&codes, &path)?;
        out.push((path, folder));
    }
    Ok(out)
}
