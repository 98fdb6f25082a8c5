//! ETL: a BirdCLEF-layout dataset → log-mel windows in safetensors shards plus a manifest, the
//! form the trainer streams.
//!
//! Determinism is what makes the run resumable: the usable rows (train.csv order), their
//! splits and the options fix a *fingerprint*; windows are emitted in clip order and a shard
//! closes after exactly `ceil(shard_bytes / window_bytes)` windows, so shard `k` holds the
//! same windows whatever happened before. Each shard is followed by a small sidecar JSON
//! (written after it, both atomically) that records where the shard ends; a re-run trusts
//! every complete shard + sidecar pair with the same fingerprint, restarts at the end of the
//! last one, and so produces byte-identical shards and manifest whether or not it was killed.

mod decode;
mod manifest;
mod plan;
mod shards;

use serde::{Deserialize, Serialize};
use silencio_audio::FeatureConfig;

use crate::error::{Error, Result};
use crate::splits::{CvFold, Holdout, Period, Split};
use crate::store::Store;
use crate::train_csv::RowProblem;
use crate::validate::{Duplicate, UnknownLabel};

/// Version of the shard and manifest layout.
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's name under the output location.
pub const MANIFEST: &str = "manifest.json";
const SHARD_DIR: &str = "shards";
/// Bytes in front of a shard's data for its safetensors header (length + padded JSON).
const HEADER_SLOT: usize = 1024;
/// Clips decoded per batch by default.
const DEFAULT_BATCH_CLIPS: usize = 64;

/// Storage type of the features in the shards (labels are always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    /// IEEE half precision: half the bytes; dB values keep ~3 significant digits.
    F16,
    /// IEEE single precision.
    F32,
}

impl Dtype {
    /// Bytes per value.
    pub fn size(self) -> usize {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }

    /// Appends `values` to `out` in this type, little-endian (f16 rounds to nearest).
    pub fn encode(self, values: &[f32], out: &mut Vec<u8>) {
        out.reserve(values.len() * self.size());
        match self {
            Self::F32 => values
                .iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
            Self::F16 => values
                .iter()
                .for_each(|&v| out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes())),
        }
    }

    /// The values of little-endian `bytes` of this type, widened to f32 (a trailing partial
    /// value is ignored).
    pub fn decode(self, bytes: &[u8]) -> Vec<f32> {
        match self {
            Self::F32 => bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Self::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }

    /// Parses `f16` / `f32`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "f16" => Ok(Self::F16),
            "f32" => Ok(Self::F32),
            _ => Err(Error::InvalidOptions(format!(
                "dtype {s:?} (use f16 or f32)"
            ))),
        }
    }
}

/// Everything that decides the output; all of it is part of the run's fingerprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EtlOptions {
    /// Feature recipe (sample rate, FFT, mels, windows).
    pub features: FeatureConfig,
    /// Storage type of the features.
    pub dtype: Dtype,
    /// Target bytes of features per shard (~256 MB by default).
    pub shard_bytes: u64,
    /// Keep at most this many windows per clip, the first ones (0 = all).
    pub max_windows_per_clip: usize,
    /// Target of each secondary label (the primary one is 1.0).
    pub secondary_weight: f32,
    /// Share of recordings held out for validation (iterative stratification).
    pub valid_fraction: f64,
    /// Share of each collection, oldest first, marked for initial training.
    pub initial_fraction: f64,
    /// Seed of the split.
    pub seed: u64,
    /// Longest clip decoded, in seconds; longer ones are skipped and reported.
    pub max_duration_s: f64,
    /// Cross-validation: hold out this fold instead of `valid_fraction` (absent from the
    /// fingerprint when unset, so earlier shards stay valid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<CvFold>,
}

impl EtlOptions {
    /// The defaults of `silencio etl` for a recipe.
    pub fn new(features: FeatureConfig) -> Self {
        Self {
            features,
            dtype: Dtype::F16,
            shard_bytes: 256 << 20,
            max_windows_per_clip: 0,
            secondary_weight: 0.5,
            valid_fraction: 0.2,
            initial_fraction: 0.7,
            seed: 0,
            max_duration_s: 3600.0,
            cv: None,
        }
    }

    /// What the split holds out: the fold when `cv` is set, else `valid_fraction`.
    pub fn holdout(&self) -> Holdout {
        self.cv
            .map_or(Holdout::Fraction(self.valid_fraction), Holdout::Fold)
    }

    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidOptions(m.into()));
        if self.shard_bytes == 0 {
            return bad("shard size must be > 0");
        }
        if !(0.0..1.0).contains(&self.valid_fraction) {
            return bad("valid fraction must lie in [0, 1)");
        }
        if let Some(cv) = self.cv {
            cv.check().map_err(Error::InvalidOptions)?;
        }
        if !(0.0..=1.0).contains(&self.initial_fraction) {
            return bad("initial fraction must lie in [0, 1]");
        }
        if !(0.0..=1.0).contains(&self.secondary_weight) {
            return bad("secondary weight must lie in [0, 1]");
        }
        self.features
            .validate()
            .map_err(|e| Error::InvalidOptions(e.to_string()))
    }
}

/// A position in the stream of windows: clip `clip` (index into the usable rows), its window
/// `window` (index among the kept windows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Usable-row index.
    pub clip: usize,
    /// Kept-window index within the clip.
    pub window: usize,
}

/// One window of the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowRecord {
    /// Usable-row index (see [`ClipRecord`]).
    pub clip: usize,
    /// Window index within the clip.
    pub window: usize,
    /// Start, seconds from the clip's start.
    pub start_s: f64,
    /// Nominal end (start + window length).
    pub end_s: f64,
    /// Seconds of real audio (the rest is zero padding).
    pub valid_s: f64,
    /// Non-zero targets as `[class, weight]`, classes in taxonomy order. A negative weight marks
    /// a species known to be absent (feedback: "wrong", no correction); such a window knows
    /// nothing about the other species.
    pub labels: Vec<(usize, f32)>,
    /// Train or validation (the clip's).
    pub split: Split,
    /// Initial or retraining period (the clip's).
    pub period: Period,
    /// Shard index.
    pub shard: usize,
    /// Row in the shard's tensors.
    pub row: usize,
    /// Byte offset of this window's features in the shard file.
    pub offset: u64,
}

/// One clip that produced windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipRecord {
    /// Usable-row index.
    pub clip: usize,
    /// `train.csv` line.
    pub line: u64,
    /// Path under `train_audio/`.
    pub filename: String,
    /// Primary label.
    pub primary_label: String,
    /// Train or validation.
    pub split: Split,
    /// Initial or retraining period.
    pub period: Period,
    /// Decoded duration in seconds.
    pub duration_s: f64,
    /// Windows the recording gives (before the per-clip cap).
    pub windows_total: usize,
    /// Windows kept.
    pub windows: usize,
}

/// A clip that could not be used, and why (the run goes on).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedClip {
    /// Usable-row index.
    pub clip: usize,
    /// `train.csv` line.
    pub line: u64,
    /// Path under `train_audio/`.
    pub filename: String,
    /// `missing`, or the audio error's kind (`corrupt`, `unsupported_format`, `too_long`, …).
    pub kind: String,
    /// The error message.
    pub detail: String,
}

/// One shard in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// Shard index.
    pub index: usize,
    /// Path under the output location.
    pub file: String,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// File size.
    pub bytes: u64,
    /// Windows in it.
    pub windows: usize,
}

/// Rows of `train.csv` that were not used, by reason.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RowReport {
    /// Rows that could not be parsed.
    pub malformed_rows: Vec<RowProblem>,
    /// Labels not in the taxonomy (primary: row skipped; secondary: label dropped).
    pub unknown_labels: Vec<UnknownLabel>,
    /// Repeated filenames (later rows skipped).
    pub duplicate_rows: Vec<Duplicate>,
    /// Ratings outside 0–5 (kept).
    pub rating_outliers: Vec<RowProblem>,
}

/// Totals of a finished run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Rows of train.csv (parsed or not).
    pub rows: usize,
    /// Rows that passed screening.
    pub usable_rows: usize,
    /// Clips that produced windows.
    pub clips: usize,
    /// Clips skipped (missing, undecodable, too long).
    pub skipped_clips: usize,
    /// Windows written.
    pub windows: usize,
    /// Windows per split.
    pub train_windows: usize,
    /// Validation windows.
    pub valid_windows: usize,
    /// Decoded audio of the used clips, seconds.
    pub audio_s: f64,
    /// Shards written.
    pub shards: usize,
    /// Bytes of all shards.
    pub shard_bytes: u64,
}

/// The manifest: how to find every window, and what was left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// Hash of everything that determines the output.
    pub fingerprint: String,
    /// The options of the run.
    pub options: EtlOptions,
    /// Class order of the label columns (taxonomy codes).
    pub classes: Vec<String>,
    /// `[n_mels, n_frames]` of each window's features.
    pub feature_shape: [usize; 2],
    /// Totals.
    pub totals: Totals,
    /// Shards in order.
    pub shards: Vec<ShardRecord>,
    /// Clips that produced windows, in train.csv order.
    pub clips: Vec<ClipRecord>,
    /// Every window, in shard order.
    pub windows: Vec<WindowRecord>,
    /// Clips that failed.
    pub skipped_clips: Vec<SkippedClip>,
    /// Rows that were not used.
    pub rows: RowReport,
}

impl Manifest {
    /// The `train_audio/` filename of each clip that produced windows, by usable-row index
    /// ([`WindowRecord::clip`]).
    pub fn clip_files(&self) -> std::collections::HashMap<usize, &str> {
        self.clips
            .iter()
            .map(|c| (c.clip, c.filename.as_str()))
            .collect()
    }
}

/// The manifest without its per-clip and per-window lists: what a run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestHead {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format: u32,
    /// Hash of everything that determines the output.
    pub fingerprint: String,
    /// Totals.
    pub totals: Totals,
    /// Shards in order.
    pub shards: Vec<ShardRecord>,
    /// Clips that failed.
    pub skipped_clips: Vec<SkippedClip>,
    /// Rows that were not used.
    pub rows: RowReport,
}

/// Progress, reported as the run goes.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EtlEvent {
    /// Screening done; `done_clips` were already covered by shards of an earlier run.
    Started {
        /// Usable clips.
        clips: usize,
        /// Clips already covered by stored shards.
        done_clips: usize,
        /// Shards kept from an earlier run.
        resumed_shards: usize,
    },
    /// One clip processed.
    Clip {
        /// Clips processed so far (including resumed ones).
        done_clips: usize,
        /// Usable clips.
        clips: usize,
        /// Windows kept from it (0 when skipped).
        windows: usize,
        /// Its decoded seconds (0 when skipped).
        audio_s: f64,
        /// Whether it was skipped.
        skipped: bool,
    },
    /// One shard and its sidecar written.
    Shard {
        /// Shard index.
        index: usize,
        /// Windows in it.
        windows: usize,
        /// File size.
        bytes: u64,
    },
    /// The manifest is written (or was already there).
    Finished {
        /// Totals of the whole output.
        windows: usize,
        /// Shards.
        shards: usize,
        /// Clips skipped.
        skipped_clips: usize,
        /// True when the output was already complete and nothing was done.
        already_complete: bool,
    },
}

/// What `run` did.
#[derive(Debug, Clone, PartialEq)]
pub struct EtlOutcome {
    /// The manifest's head (read back when the output was already complete).
    pub manifest: ManifestHead,
    /// Shards kept from an earlier run.
    pub resumed_shards: usize,
    /// Shards written now.
    pub new_shards: usize,
    /// Audio seconds decoded now (for throughput).
    pub decoded_audio_s: f64,
    /// Windows computed now.
    pub new_windows: usize,
    /// Nothing was done: the manifest was already there.
    pub already_complete: bool,
}

/// Runs the ETL from `data` (BirdCLEF layout: taxonomy.csv, train.csv, train_audio/) to `out`,
/// stage by stage: [`plan`] (rows, splits, targets, fingerprint), the resume check, [`decode`]
/// (batches of at most `clips_in_flight` clips (0 = 64) or 8 MiB of encoded audio over the
/// rayon pool, one batch ahead of the shard writer), [`shards`] (packing), [`manifest`].
/// Memory is bounded by a batch and one shard, whatever the number of clips.
pub fn run(
    data: &Store,
    out: &Store,
    opts: &EtlOptions,
    clips_in_flight: usize,
    progress: &mut dyn FnMut(&EtlEvent),
) -> Result<EtlOutcome> {
    opts.check()?;
    let plan = plan::plan(data, opts)?;
    if let Some(m) = out.get(MANIFEST)? {
        let m: ManifestHead = serde_json::from_slice(&m)
            .map_err(|e| Error::CorruptOutput(format!("{MANIFEST}: {e}")))?;
        if m.fingerprint != plan.fingerprint {
            return Err(shards::conflict(out));
        }
        progress(&EtlEvent::Finished {
            windows: m.totals.windows,
            shards: m.totals.shards,
            skipped_clips: m.totals.skipped_clips,
            already_complete: true,
        });
        return Ok(EtlOutcome {
            resumed_shards: m.shards.len(),
            manifest: m,
            new_shards: 0,
            decoded_audio_s: 0.0,
            new_windows: 0,
            already_complete: true,
        });
    }

    out.sweep_staging(SHARD_DIR)?;
    out.sweep_staging("")?;
    let done = shards::load_sidecars(out, &plan.fingerprint)?;
    let resumed_shards = done.len();
    let cursor = done.last().map(|s| s.end).unwrap_or_default();
    progress(&EtlEvent::Started {
        clips: plan.clips.len(),
        done_clips: cursor.clip,
        resumed_shards,
    });

    let lm = silencio_audio::LogMel::new(&opts.features)
        .map_err(|e| Error::InvalidOptions(e.to_string()))?;
    let mut packer = shards::Packer::new(out, opts, &plan, done, cursor);
    let in_flight = if clips_in_flight == 0 {
        DEFAULT_BATCH_CLIPS
    } else {
        clips_in_flight
    };
    let audio = data.child("train_audio");
    let dopts = silencio_audio::decode_options_for(&opts.features, opts.max_duration_s);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::scope(|scope| -> Result<()> {
        let (clips, audio, lm, dopts) = (&plan.clips, &audio, &lm, &dopts);
        scope.spawn(move || decode::produce(clips, audio, lm, dopts, cursor.clip, in_flight, tx));
        for (first, results) in rx {
            packer.batch(first, results, progress)?;
        }
        Ok(())
    })?;
    let packed = packer.finish(progress)?;
    let manifest = manifest::write_manifest(
        out,
        ManifestHead {
            format: FORMAT_VERSION,
            fingerprint: plan.fingerprint,
            totals: Totals {
                rows: plan.rows_total,
                usable_rows: plan.clips.len(),
                ..Totals::default()
            },
            shards: Vec::new(),
            skipped_clips: packed.trailing_skips,
            rows: plan.rows,
        },
        opts,
        &plan.taxonomy,
        packed.feature_shape,
        packed.shards,
    )?;
    progress(&EtlEvent::Finished {
        windows: manifest.totals.windows,
        shards: manifest.totals.shards,
        skipped_clips: manifest.totals.skipped_clips,
        already_complete: false,
    });
    Ok(EtlOutcome {
        resumed_shards,
        new_shards: manifest.shards.len() - resumed_shards,
        manifest,
        decoded_audio_s: packed.decoded_audio_s,
        new_windows: packed.new_windows,
        already_complete: false,
    })
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    const TAXONOMY: &str = "primary_label,inat_taxon_id,scientific_name,common_name,class_name\n\
        aaa,,A a,A,Aves\nbbb,,B b,B,Aves\nccc,,C c,C,Amphibia\n";

    fn tone(seconds: f64, hz: f64) -> Vec<u8> {
        let rate = 32_000u32;
        let n = (seconds * f64::from(rate)) as usize;
        let mut wav = Vec::new();
        let data_len = (n * 2) as u32;
        wav.extend(b"RIFF");
        wav.extend((36 + data_len).to_le_bytes());
        wav.extend(b"WAVEfmt ");
        wav.extend(16u32.to_le_bytes());
        wav.extend(1u16.to_le_bytes());
        wav.extend(1u16.to_le_bytes());
        wav.extend(rate.to_le_bytes());
        wav.extend((rate * 2).to_le_bytes());
        wav.extend(2u16.to_le_bytes());
        wav.extend(16u16.to_le_bytes());
        wav.extend(b"data");
        wav.extend(data_len.to_le_bytes());
        for i in 0..n {
            let v = (0.3
                * (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin()
                * 32767.0) as i16;
            wav.extend(v.to_le_bytes());
        }
        wav
    }

    fn dataset() -> Store {
        let s = Store::open("memory://").unwrap();
        s.put("taxonomy.csv", TAXONOMY.as_bytes().to_vec()).unwrap();
        let mut csv =
            String::from("primary_label,secondary_labels,type,filename,collection,rating\n");
        for (i, (label, sec, secs)) in [
            ("aaa", "['bbb']", 12.0),
            ("bbb", "[]", 3.0),
            ("ccc", "['zzz']", 7.0),
            ("aaa", "[]", 5.0),
            ("zzz", "[]", 5.0),
            ("bbb", "[]", 0.0),
        ]
        .iter()
        .enumerate()
        {
            let name = format!("{label}/XC{}.wav", 100 + i);
            csv.push_str(&format!("{label},\"{sec}\",[],{name},XC,4.0\n"));
            if *secs > 0.0 {
                s.put(
                    &format!("train_audio/{name}"),
                    tone(*secs, 440.0 * (i + 1) as f64),
                )
                .unwrap();
            }
        }
        s.put("train.csv", csv.into_bytes()).unwrap();
        s
    }

    fn small_opts() -> EtlOptions {
        let mut o = EtlOptions::new(FeatureConfig::recipe("birdclef").unwrap());
        o.features.n_mels = 16;
        o.features.n_fft = 512;
        o.features.hop_length = 4000;
        // 16 mels × 41 frames × 2 bytes: three windows per shard.
        o.shard_bytes = 3 * 16 * 41 * 2;
        o
    }

    #[test]
    fn feedback_negatives_become_training_windows_that_know_one_absent_species() {
        let data = dataset();
        // The 3 s clip heard again, marked "not bbb"; a species outside the taxonomy is skipped.
        data.put(
            crate::feedback_rows::NEGATIVES_FILE,
            b"filename,primary_label\nbbb/XC101.wav,aaa\nbbb/XC101.wav,nope\n".to_vec(),
        )
        .unwrap();
        let out = Store::open("memory://").unwrap();
        let plain = Store::open("memory://").unwrap();
        let with = run(&data, &out, &small_opts(), 2, &mut |_| {}).unwrap();
        let without = run(&dataset(), &plain, &small_opts(), 2, &mut |_| {}).unwrap();
        assert_eq!(
            with.manifest.totals.windows,
            without.manifest.totals.windows + 1
        );
        assert_ne!(with.manifest.fingerprint, without.manifest.fingerprint);
        let m: Manifest = serde_json::from_slice(&out.get(MANIFEST).unwrap().unwrap()).unwrap();
        let neg: Vec<_> = m
            .windows
            .iter()
            .filter(|w| w.labels.iter().any(|&(_, v)| v < 0.0))
            .collect();
        assert_eq!(neg.len(), 1);
        assert_eq!(neg[0].labels, vec![(0, -1.0)]);
        assert_eq!(neg[0].split, Split::Train);
        assert_eq!(neg[0].period, crate::splits::Period::Retrain);
    }

    #[test]
    fn windows_labels_shards_and_report() {
        let data = dataset();
        let out = Store::open("memory://").unwrap();
        let mut events = Vec::new();
        let r = run(&data, &out, &small_opts(), 2, &mut |e| {
            events.push(e.clone())
        })
        .unwrap();
        let m: Manifest = serde_json::from_slice(&out.get(MANIFEST).unwrap().unwrap()).unwrap();
        assert_eq!(r.manifest.totals, m.totals);
        assert_eq!(r.manifest.shards, m.shards);
        assert_eq!(r.manifest.skipped_clips, m.skipped_clips);
        // 12 s → 3 windows (2 full + 2 s tail ≥ 1 s), 3 s → 1, 7 s → 2, 5 s → 1.
        assert_eq!(m.totals.windows, 7);
        assert_eq!(m.totals.clips, 4);
        assert_eq!(m.shards.len(), 3);
        assert_eq!(
            m.shards.iter().map(|s| s.windows).collect::<Vec<_>>(),
            [3, 3, 1]
        );
        assert_eq!(m.skipped_clips.len(), 1);
        assert_eq!(m.skipped_clips[0].kind, "missing");
        assert!(
            m.rows
                .unknown_labels
                .iter()
                .any(|u| u.label == "zzz" && u.field == "primary")
        );
        assert!(
            m.rows
                .unknown_labels
                .iter()
                .any(|u| u.label == "zzz" && u.field == "secondary")
        );
        assert_eq!(m.windows[0].labels, vec![(0, 1.0), (1, 0.5)]);
        assert_eq!(m.windows[5].labels, vec![(2, 1.0)]);
        assert!((m.windows[2].valid_s - 2.0).abs() < 1e-9);
        // The offsets point at each window's features in the file.
        let bytes = out.get(&m.shards[1].file).unwrap().unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let f = st.tensor("features").unwrap();
        assert_eq!(f.shape(), [3, 16, 41]);
        let w = &m.windows[4];
        assert_eq!((w.shard, w.row), (1, 1));
        let one = 16 * 41 * 2;
        assert_eq!(
            &bytes[w.offset as usize..w.offset as usize + one],
            &f.data()[one..2 * one]
        );
        let l = st.tensor("labels").unwrap();
        assert_eq!(l.shape(), [3, 3]);
        let row: Vec<f32> = l.data()[12..24]
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let mut want = vec![0.0; 3];
        for &(c, v) in &w.labels {
            want[c] = v;
        }
        assert_eq!(row, want);
        assert_eq!(hex(&Sha256::digest(&bytes)), m.shards[1].sha256);
        assert!(matches!(
            events.last(),
            Some(EtlEvent::Finished { windows: 7, .. })
        ));

        // A re-run does nothing and keeps every byte.
        let before: Vec<_> = out
            .list("")
            .unwrap()
            .iter()
            .map(|n| out.get(n).unwrap())
            .collect();
        let again = run(&data, &out, &small_opts(), 2, &mut |_| {}).unwrap();
        assert!(again.already_complete);
        let after: Vec<_> = out
            .list("")
            .unwrap()
            .iter()
            .map(|n| out.get(n).unwrap())
            .collect();
        assert_eq!(before, after);

        // Other options on the same output are refused, nothing is touched.
        let mut other = small_opts();
        other.secondary_weight = 0.3;
        let e = run(&data, &out, &other, 2, &mut |_| {}).unwrap_err();
        assert!(matches!(e, Error::Conflict(_)), "{e}");
    }

    #[test]
    fn resuming_from_any_prefix_of_shards_gives_identical_output() {
        let data = dataset();
        let full = Store::open("memory://").unwrap();
        run(&data, &full, &small_opts(), 3, &mut |_| {}).unwrap();
        let names = full.list("").unwrap();
        for keep in 0..3 {
            let out = Store::open("memory://").unwrap();
            for n in &names {
                let index: Option<usize> = n
                    .strip_prefix("shards/shard-")
                    .and_then(|t| t[..5].parse().ok());
                // Keep shards < keep with sidecars, plus shard `keep` without its sidecar
                // (killed between the two writes).
                match index {
                    Some(i) if i < keep || (i == keep && n.ends_with(".safetensors")) => {
                        out.put(n, full.get(n).unwrap().unwrap().to_vec()).unwrap();
                    }
                    _ => {}
                }
            }
            let r = run(&data, &out, &small_opts(), 1, &mut |_| {}).unwrap();
            assert_eq!(r.resumed_shards, keep);
            assert_eq!(out.list("").unwrap(), names);
            for n in &names {
                assert_eq!(
                    out.get(n).unwrap(),
                    full.get(n).unwrap(),
                    "{n} after keeping {keep}"
                );
            }
        }
    }

    #[test]
    fn window_cap_and_f32() {
        let data = dataset();
        let out = Store::open("memory://").unwrap();
        let mut o = small_opts();
        o.max_windows_per_clip = 1;
        o.dtype = Dtype::F32;
        run(&data, &out, &o, 0, &mut |_| {}).unwrap();
        let m: Manifest = serde_json::from_slice(&out.get(MANIFEST).unwrap().unwrap()).unwrap();
        assert_eq!(m.totals.windows, 4);
        assert_eq!(m.clips[0].windows_total, 3);
        let bytes = out.get(&m.shards[0].file).unwrap().unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(
            st.tensor("features").unwrap().dtype(),
            safetensors::Dtype::F32
        );
    }

    #[test]
    fn bad_options_and_missing_csv_are_typed_errors() {
        let data = dataset();
        let out = Store::open("memory://").unwrap();
        let mut o = small_opts();
        o.shard_bytes = 0;
        assert!(matches!(
            run(&data, &out, &o, 0, &mut |_| {}),
            Err(Error::InvalidOptions(_))
        ));
        let empty = Store::open("memory://").unwrap();
        assert!(matches!(
            run(&empty, &out, &small_opts(), 0, &mut |_| {}),
            Err(Error::Missing(_))
        ));
    }
}
