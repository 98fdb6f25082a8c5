//! The dataset panel: species per taxon class and collection, ratings, clip durations and the
//! train/validation and initial/retrain splits of a BirdCLEF-layout tree, read with
//! `silencio_data`'s readers and split with its split functions (the ETL's, so the numbers
//! shown are the shards' numbers).
//!
//! Durations come from decoding each clip once at its own rate with `silencio_audio` (exact,
//! priming and padding trimmed) on background threads; they are cached in a JSON file keyed by
//! size and modification time, so a restart re-reads only clips that changed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use silencio_data::{Period, Split, Taxonomy, TrainRecord};

use crate::error::{Error, Result};

/// How recordings are split (the ETL's parameters; defaults are `silencio etl`'s).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SplitOptions {
    /// Share held out for validation.
    pub valid_fraction: f64,
    /// Share of each collection, oldest first, for initial training.
    pub initial_fraction: f64,
    /// Seed of the stratification.
    pub seed: u64,
}

impl Default for SplitOptions {
    fn default() -> Self {
        Self {
            valid_fraction: 0.2,
            initial_fraction: 0.7,
            seed: 0,
        }
    }
}

/// A BirdCLEF-layout dataset loaded for the dashboard.
#[derive(Debug)]
pub struct Dataset {
    root: PathBuf,
    taxonomy: Taxonomy,
    usable: Vec<TrainRecord>,
    /// Filenames of every parsed `train.csv` row: the only audio the dashboard serves.
    listed: HashSet<String>,
    malformed_rows: usize,
    skipped_rows: usize,
    soundscapes: usize,
    splits: Vec<Split>,
    periods: Vec<Period>,
    split_options: SplitOptions,
    durations: Arc<Durations>,
}

impl Dataset {
    /// Reads `taxonomy.csv` and `train.csv` under `root` and computes the splits.
    pub fn open(root: &Path, split_options: SplitOptions) -> Result<Self> {
        let SplitOptions {
            valid_fraction,
            initial_fraction,
            seed,
        } = split_options;
        if !(0.0..1.0).contains(&valid_fraction) || !(0.0..=1.0).contains(&initial_fraction) {
            return Err(Error::InvalidOption(
                "valid fraction must lie in [0, 1), initial fraction in [0, 1]".into(),
            ));
        }
        let taxonomy = Taxonomy::from_csv(&root.join("taxonomy.csv"))?;
        let (records, problems) = silencio_data::read_train_csv(&root.join("train.csv"))?;
        // Screened exactly as the ETL screens, so that these splits are the shards' splits.
        let usable = silencio_data::usable_records(&records, &taxonomy);
        let splits = silencio_data::train_valid_split(&usable, &taxonomy, valid_fraction, seed);
        let periods = silencio_data::temporal_split(&usable, initial_fraction);
        let soundscapes = std::fs::read_dir(root.join("train_soundscapes"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter(|e| e.path().is_file())
                    .count()
            })
            .unwrap_or(0);
        Ok(Self {
            root: root.to_path_buf(),
            listed: records.iter().map(|r| r.filename.clone()).collect(),
            skipped_rows: records.len() - usable.len(),
            malformed_rows: problems.len(),
            taxonomy,
            usable,
            soundscapes,
            splits,
            periods,
            split_options,
            durations: Arc::new(Durations::default()),
        })
    }

    /// The dataset root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The taxonomy.
    pub fn taxonomy(&self) -> &Taxonomy {
        &self.taxonomy
    }

    /// The usable `train.csv` rows (known primary label, first occurrence of a filename).
    pub fn records(&self) -> &[TrainRecord] {
        &self.usable
    }

    /// The file under `train_audio/` for a filename listed in `train.csv`, or `None` for any
    /// other name: only listed names are served, so no request can reach outside the tree.
    pub fn audio_path(&self, filename: &str) -> Option<PathBuf> {
        if !self.listed.contains(filename) {
            return None;
        }
        // train.csv itself could name `../x`: accept only plain relative components.
        let rel = Path::new(filename);
        let plain = rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        plain.then(|| self.root.join("train_audio").join(rel))
    }

    /// Clip durations scanned so far.
    pub fn durations(&self) -> &Arc<Durations> {
        &self.durations
    }

    /// Starts scanning clip durations on `threads` background threads (cached in
    /// `cache`, when given). Returns at once; [`Dataset::summary`] shows the progress.
    pub fn start_duration_scan(self: &Arc<Self>, cache: Option<PathBuf>, threads: usize) {
        let ds = Arc::clone(self);
        std::thread::spawn(move || ds.scan_durations(cache.as_deref(), threads.max(1)));
    }

    /// Scans every usable clip's duration on the calling thread plus `threads − 1` helpers,
    /// reusing and updating the cache file.
    pub fn scan_durations(&self, cache: Option<&Path>, threads: usize) {
        let d = &self.durations;
        let cached = cache.map(load_cache).unwrap_or_default();
        let mut todo: Vec<(String, u64, u64)> = Vec::new();
        {
            let mut st = d.lock();
            st.total = self.usable.len();
            for r in &self.usable {
                let path = self.root.join("train_audio").join(&r.filename);
                let (bytes, mtime_ns) = match std::fs::metadata(&path) {
                    Ok(m) => (m.len(), mtime_ns(&m)),
                    Err(e) => {
                        st.entries.insert(
                            r.filename.clone(),
                            DurationEntry::failed(0, 0, "missing", &e.to_string()),
                        );
                        continue;
                    }
                };
                match cached.get(&r.filename) {
                    Some(c) if c.bytes == bytes && c.mtime_ns == mtime_ns => {
                        st.entries.insert(r.filename.clone(), c.clone());
                    }
                    _ => todo.push((r.filename.clone(), bytes, mtime_ns)),
                }
            }
            st.from_cache = st.entries.len();
        }
        let next = AtomicUsize::new(0);
        let last_save = Mutex::new(Instant::now());
        let work = || {
            while let Some((name, bytes, mtime)) = todo.get(next.fetch_add(1, Ordering::Relaxed)) {
                let path = self.root.join("train_audio").join(name);
                let opts = silencio_audio::DecodeOptions {
                    target_rate: None,
                    // Durations only: accept any realistic recording (6 h).
                    max_duration_s: 6.0 * 3600.0,
                    max_input_samples: None,
                };
                let entry = match silencio_audio::decode_path(&path, &opts) {
                    Ok(x) => DurationEntry {
                        bytes: *bytes,
                        mtime_ns: *mtime,
                        duration_s: Some(x.info.duration_s),
                        error: None,
                    },
                    Err(e) => DurationEntry::failed(*bytes, *mtime, e.kind(), &e.to_string()),
                };
                d.lock().entries.insert(name.clone(), entry);
                // Save now and then, so that a stopped dashboard keeps most of a long scan.
                if let (Some(c), Ok(mut t)) = (cache, last_save.try_lock())
                    && t.elapsed() > Duration::from_secs(15)
                {
                    *t = Instant::now();
                    d.save(c);
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
        d.lock().complete = true;
        if let Some(c) = cache {
            d.save(c);
        }
    }

    /// Everything the dataset panel shows.
    pub fn summary(&self) -> DatasetSummary {
        let tax = self.taxonomy.species();
        let mut per_species: HashMap<&str, usize> = HashMap::new();
        for r in &self.usable {
            *per_species.entry(r.primary_label.as_str()).or_default() += 1;
        }
        let species: Vec<SpeciesCount> = tax
            .iter()
            .map(|s| SpeciesCount {
                code: s.primary_label.clone(),
                common_name: s.common_name.clone(),
                class_name: s.class_name.clone(),
                recordings: per_species
                    .get(s.primary_label.as_str())
                    .copied()
                    .unwrap_or(0),
            })
            .collect();

        let mut classes: Vec<ClassCount> = Vec::new();
        for s in &species {
            let i = match classes.iter().position(|c| c.class_name == s.class_name) {
                Some(i) => i,
                None => {
                    classes.push(ClassCount {
                        class_name: s.class_name.clone(),
                        species: 0,
                        species_with_recordings: 0,
                        recordings: 0,
                    });
                    classes.len() - 1
                }
            };
            let c = &mut classes[i];
            c.species += 1;
            c.species_with_recordings += usize::from(s.recordings > 0);
            c.recordings += s.recordings;
        }

        let mut by_collection: BTreeMap<&str, (usize, HashSet<&str>)> = BTreeMap::new();
        for r in &self.usable {
            let e = by_collection.entry(r.collection.as_str()).or_default();
            e.0 += 1;
            e.1.insert(r.primary_label.as_str());
        }
        let mut collections: Vec<CollectionCount> = by_collection
            .into_iter()
            .map(|(c, (n, sp))| CollectionCount {
                collection: if c.is_empty() { "(none)" } else { c }.to_string(),
                recordings: n,
                species: sp.len(),
            })
            .collect();
        collections.sort_by_key(|c| std::cmp::Reverse(c.recordings));

        DatasetSummary {
            root: self.root.display().to_string(),
            n_species: tax.len(),
            n_recordings: self.usable.len(),
            malformed_rows: self.malformed_rows,
            skipped_rows: self.skipped_rows,
            soundscapes: self.soundscapes,
            classes,
            collections,
            species,
            ratings: rating_histogram(&self.usable),
            durations: self.durations.summary(),
            splits: self.split_summary(),
        }
    }

    fn split_summary(&self) -> SplitSummary {
        let mut table: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        let mut per_collection: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
        for ((r, s), p) in self.usable.iter().zip(&self.splits).zip(&self.periods) {
            let s = if *s == Split::Valid { "valid" } else { "train" };
            let p = if *p == Period::Retrain {
                "retrain"
            } else {
                "initial"
            };
            *table.entry((s, p)).or_default() += 1;
            let c = per_collection.entry(r.collection.as_str()).or_default();
            c[usize::from(s == "valid")] += 1;
            c[2 + usize::from(p == "retrain")] += 1;
        }
        let count = |f: &dyn Fn(&str, &str) -> bool| -> usize {
            table
                .iter()
                .filter(|((s, p), _)| f(s, p))
                .map(|(_, n)| n)
                .sum()
        };
        SplitSummary {
            options: self.split_options,
            train: count(&|s, _| s == "train"),
            valid: count(&|s, _| s == "valid"),
            initial: count(&|_, p| p == "initial"),
            retrain: count(&|_, p| p == "retrain"),
            cells: ["train", "valid"]
                .iter()
                .flat_map(|s| ["initial", "retrain"].map(|p| (*s, p)))
                .map(|(s, p)| SplitCell {
                    split: s.into(),
                    period: p.into(),
                    recordings: table.get(&(s, p)).copied().unwrap_or(0),
                })
                .collect(),
            collections: per_collection
                .into_iter()
                .map(|(c, [t, v, i, r])| CollectionSplit {
                    collection: c.to_string(),
                    train: t,
                    valid: v,
                    initial: i,
                    retrain: r,
                })
                .collect(),
        }
    }
}

fn mtime_ns(m: &std::fs::Metadata) -> u64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// BirdCLEF ratings run 0–5 in half steps (0 = unrated): one bin per half step.
fn rating_histogram(records: &[TrainRecord]) -> RatingHistogram {
    let mut bins: Vec<RatingBin> = (0..=10)
        .map(|i| RatingBin {
            rating: i as f64 / 2.0,
            recordings: 0,
        })
        .collect();
    let mut missing = 0;
    let mut out_of_range = 0;
    for r in records {
        match r.rating {
            Some(v) if (0.0..=5.0).contains(&v) => bins[(v * 2.0).round() as usize].recordings += 1,
            Some(_) => out_of_range += 1,
            None => missing += 1,
        }
    }
    RatingHistogram {
        bins,
        missing,
        out_of_range,
    }
}

/// Upper edges (seconds) of the duration histogram's bins; the last bin is open.
pub const DURATION_EDGES_S: [f64; 9] = [5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];

/// One clip's scanned duration, as cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DurationEntry {
    /// File size when scanned.
    pub bytes: u64,
    /// Modification time when scanned (ns since the epoch).
    pub mtime_ns: u64,
    /// Seconds, when decoding worked.
    pub duration_s: Option<f64>,
    /// `kind: message` of the decoding error otherwise.
    pub error: Option<String>,
}

impl DurationEntry {
    fn failed(bytes: u64, mtime_ns: u64, kind: &str, message: &str) -> Self {
        Self {
            bytes,
            mtime_ns,
            duration_s: None,
            error: Some(format!("{kind}: {message}")),
        }
    }
}

/// Scanned durations, shared between the scanning threads and the HTTP handlers.
#[derive(Debug, Default)]
pub struct Durations {
    state: Mutex<DurationState>,
}

#[derive(Debug, Default)]
struct DurationState {
    entries: HashMap<String, DurationEntry>,
    total: usize,
    from_cache: usize,
    complete: bool,
}

#[derive(Serialize, Deserialize)]
struct CacheFile {
    format: String,
    version: u32,
    entries: BTreeMap<String, DurationEntry>,
}

const CACHE_FORMAT: &str = "silencio-dashboard-durations";

/// A missing or unreadable cache is an empty one: it only saves work.
fn load_cache(path: &Path) -> HashMap<String, DurationEntry> {
    let Ok(bytes) = std::fs::read(path) else {
        return HashMap::new();
    };
    match serde_json::from_slice::<CacheFile>(&bytes) {
        Ok(c) if c.format == CACHE_FORMAT && c.version == 1 => c.entries.into_iter().collect(),
        _ => {
            eprintln!(
                "dashboard: ignoring unreadable duration cache {}",
                path.display()
            );
            HashMap::new()
        }
    }
}

impl Durations {
    fn lock(&self) -> MutexGuard<'_, DurationState> {
        // A panicking scanner thread cannot leave the map half-updated (one insert at a time).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether every clip has been scanned.
    pub fn is_complete(&self) -> bool {
        self.lock().complete
    }

    /// The duration of a scanned clip.
    pub fn get(&self, filename: &str) -> Option<f64> {
        self.lock().entries.get(filename).and_then(|e| e.duration_s)
    }

    fn save(&self, path: &Path) {
        let file = CacheFile {
            format: CACHE_FORMAT.into(),
            version: 1,
            entries: self
                .lock()
                .entries
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        };
        let res = serde_json::to_vec(&file)
            .map_err(|e| Error::Json {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
            .and_then(|b| crate::write_atomic(path, &b));
        // A read-only dataset still gets its durations, only not cached across restarts.
        if let Err(e) = res {
            eprintln!("dashboard: duration cache not saved: {e}");
        }
    }

    /// The duration histogram and progress.
    pub fn summary(&self) -> DurationSummary {
        let st = self.lock();
        let mut values: Vec<f64> = st.entries.values().filter_map(|e| e.duration_s).collect();
        values.sort_by(f64::total_cmp);
        let mut bins: Vec<DurationBin> = Vec::with_capacity(DURATION_EDGES_S.len() + 1);
        let mut lo = 0.0;
        for &hi in &DURATION_EDGES_S {
            bins.push(DurationBin {
                lo_s: lo,
                hi_s: Some(hi),
                recordings: 0,
            });
            lo = hi;
        }
        bins.push(DurationBin {
            lo_s: lo,
            hi_s: None,
            recordings: 0,
        });
        for &v in &values {
            let i = DURATION_EDGES_S
                .iter()
                .position(|&e| v < e)
                .unwrap_or(DURATION_EDGES_S.len());
            bins[i].recordings += 1;
        }
        let mut failures: Vec<(String, String)> = st
            .entries
            .iter()
            .filter_map(|(k, e)| e.error.as_ref().map(|m| (k.clone(), m.clone())))
            .collect();
        failures.sort();
        DurationSummary {
            total: st.total,
            scanned: st.entries.len(),
            from_cache: st.from_cache,
            complete: st.complete,
            failed: failures.len(),
            failures: failures.into_iter().take(20).collect(),
            total_hours: values.iter().sum::<f64>() / 3600.0,
            min_s: values.first().copied(),
            median_s: values.get(values.len() / 2).copied(),
            max_s: values.last().copied(),
            bins,
        }
    }
}

/// The dataset panel's JSON (`/api/dataset`).
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    /// Dataset root as given.
    pub root: String,
    /// Species in the taxonomy.
    pub n_species: usize,
    /// Usable recordings.
    pub n_recordings: usize,
    /// `train.csv` rows that do not parse.
    pub malformed_rows: usize,
    /// Parsed rows skipped (unknown primary label, repeated filename).
    pub skipped_rows: usize,
    /// Files in `train_soundscapes/`.
    pub soundscapes: usize,
    /// Per taxon class, in taxonomy order of first appearance.
    pub classes: Vec<ClassCount>,
    /// Per collection, most recordings first.
    pub collections: Vec<CollectionCount>,
    /// Per species, taxonomy order.
    pub species: Vec<SpeciesCount>,
    /// Rating histogram.
    pub ratings: RatingHistogram,
    /// Duration histogram (progress while scanning).
    pub durations: DurationSummary,
    /// Split sizes.
    pub splits: SplitSummary,
}

/// One taxon class.
#[derive(Debug, Clone, Serialize)]
pub struct ClassCount {
    /// Aves, Amphibia, Insecta, Mammalia.
    pub class_name: String,
    /// Species of the class in the taxonomy.
    pub species: usize,
    /// Of which with at least one recording.
    pub species_with_recordings: usize,
    /// Recordings whose primary label is of the class.
    pub recordings: usize,
}

/// One collection (XC, iNat, CSA).
#[derive(Debug, Clone, Serialize)]
pub struct CollectionCount {
    /// Collection name.
    pub collection: String,
    /// Recordings.
    pub recordings: usize,
    /// Distinct primary labels.
    pub species: usize,
}

/// One species.
#[derive(Debug, Clone, Serialize)]
pub struct SpeciesCount {
    /// Species code.
    pub code: String,
    /// English name.
    pub common_name: String,
    /// Taxon class.
    pub class_name: String,
    /// Recordings with this primary label.
    pub recordings: usize,
}

/// Ratings in half steps.
#[derive(Debug, Clone, Serialize)]
pub struct RatingHistogram {
    /// 0, 0.5, …, 5 (0 = unrated).
    pub bins: Vec<RatingBin>,
    /// Rows without a rating.
    pub missing: usize,
    /// Rows with a rating outside 0–5.
    pub out_of_range: usize,
}

/// One rating value.
#[derive(Debug, Clone, Serialize)]
pub struct RatingBin {
    /// The rating.
    pub rating: f64,
    /// Recordings with it.
    pub recordings: usize,
}

/// Duration histogram and scan progress.
#[derive(Debug, Clone, Serialize)]
pub struct DurationSummary {
    /// Clips to scan.
    pub total: usize,
    /// Clips scanned (or found missing).
    pub scanned: usize,
    /// Of which taken from the cache.
    pub from_cache: usize,
    /// Whether the scan has finished.
    pub complete: bool,
    /// Clips that could not be decoded.
    pub failed: usize,
    /// The first 20 failures: `(filename, reason)`.
    pub failures: Vec<(String, String)>,
    /// Total audio in hours.
    pub total_hours: f64,
    /// Shortest clip.
    pub min_s: Option<f64>,
    /// Median clip.
    pub median_s: Option<f64>,
    /// Longest clip.
    pub max_s: Option<f64>,
    /// `[lo, hi)` bins; the last is open-ended.
    pub bins: Vec<DurationBin>,
}

/// One duration bin.
#[derive(Debug, Clone, Serialize)]
pub struct DurationBin {
    /// Lower edge in seconds (inclusive).
    pub lo_s: f64,
    /// Upper edge (exclusive); `None` for the last bin.
    pub hi_s: Option<f64>,
    /// Recordings.
    pub recordings: usize,
}

/// Split sizes.
#[derive(Debug, Clone, Serialize)]
pub struct SplitSummary {
    /// The parameters used.
    pub options: SplitOptions,
    /// Training recordings.
    pub train: usize,
    /// Validation recordings.
    pub valid: usize,
    /// Older share (initial training).
    pub initial: usize,
    /// Newer share (retraining).
    pub retrain: usize,
    /// The 2 × 2 table split × period.
    pub cells: Vec<SplitCell>,
    /// Per collection.
    pub collections: Vec<CollectionSplit>,
}

/// One cell of split × period.
#[derive(Debug, Clone, Serialize)]
pub struct SplitCell {
    /// `train` or `valid`.
    pub split: String,
    /// `initial` or `retrain`.
    pub period: String,
    /// Recordings.
    pub recordings: usize,
}

/// Splits within one collection.
#[derive(Debug, Clone, Serialize)]
pub struct CollectionSplit {
    /// Collection.
    pub collection: String,
    /// Training recordings.
    pub train: usize,
    /// Validation recordings.
    pub valid: usize,
    /// Initial period.
    pub initial: usize,
    /// Retrain period.
    pub retrain: usize,
}
