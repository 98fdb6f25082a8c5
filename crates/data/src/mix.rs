//! Soundscape mixer: 1-minute 32 kHz soundscapes with real calls placed on real backgrounds, so
//! that the labels are known by construction. It is the ground truth of the evaluation slices
//! (SNR, overlap, background) and feeds the online-stream simulation.
//!
//! Each 5 s window is either background only (a configurable share) or holds 1…`max_overlap`
//! calls of distinct species, each wholly inside the window, at an SNR drawn uniformly from a
//! range. SNR is the ratio of the call's mean power to the background's mean power over the
//! same samples, so it means the same whatever the background's level. Calls are the loudest
//! stretch (≤ `call_max_s`) of a recording, trimmed to where it is within 25 dB of its loudest
//! 20 ms frame. Everything follows from the seed.

use std::collections::BTreeSet;
use std::num::{NonZeroU8, NonZeroU32};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use silencio_audio::{DecodeOptions, decode_path};
use silencio_common::SplitMix64;

use crate::error::{Error, Result};
use crate::splits::{CvFold, Holdout, Split, holdout_split};
use crate::taxonomy::Taxonomy;
use crate::train_csv::read_train_csv;
use crate::validate::usable_records;

/// Output sample rate (BirdCLEF soundscapes).
pub const SAMPLE_RATE: u32 = 32_000;
/// Soundscape length in seconds.
pub const SOUNDSCAPE_S: usize = 60;
/// Window length in seconds (BirdCLEF's scoring unit).
pub const WINDOW_S: usize = 5;
/// Frame length of the call-activity detector (20 ms).
const FRAME: usize = 640;
/// Frames quieter than this below the loudest one end a call.
const ACTIVE_DB: f64 = 25.0;
/// Fade in/out of each placed call, so that its edges do not click.
const FADE: usize = 320;

/// Which recordings may lend calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CallPool {
    /// Only the validation split (held out of training): for test sets.
    Valid,
    /// Only the training split: for augmentation.
    Train,
    /// Every recording: for demos, never for evaluation.
    All,
}

/// Mixer settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixOptions {
    /// Number of 1-minute soundscapes.
    pub minutes: usize,
    /// Seed of every random choice.
    pub seed: u64,
    /// SNR range in dB (inclusive), drawn uniformly per call.
    pub snr_db: (f64, f64),
    /// Most calls in one window (1…4 in the plan).
    pub max_overlap: usize,
    /// Fewest species in a window that holds calls (1 by default; 2+ makes an overlap suite).
    #[serde(default = "one")]
    pub min_overlap: usize,
    /// Share of windows with background only.
    pub background_only: f64,
    /// Longest call placed, seconds (< 5).
    pub call_max_s: f64,
    /// Shortest call kept, seconds.
    pub call_min_s: f64,
    /// Background level after normalisation, dB re full scale (RMS over the minute).
    pub background_dbfs: f64,
    /// Vorbis quality (-0.2…1).
    pub vorbis_quality: f32,
    /// Recordings calls come from.
    pub pool: CallPool,
    /// Validation share of the split (the same split the ETL makes with the same values).
    pub valid_fraction: f64,
    /// Seed of that split.
    pub split_seed: u64,
    /// A split table (`silencio split`'s CSV: `filename`, `split`) to take the split from
    /// instead of recomputing it; recordings it does not list lend no call.
    pub split_table: Option<PathBuf>,
    /// Cross-validation: the held-out fold instead of `valid_fraction` (as the ETL's `cv`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cv: Option<CvFold>,
}

fn one() -> usize {
    1
}

impl Default for MixOptions {
    fn default() -> Self {
        Self {
            minutes: 10,
            seed: 0,
            snr_db: (-20.0, 10.0),
            max_overlap: 4,
            min_overlap: 1,
            background_only: 0.25,
            call_max_s: 4.0,
            call_min_s: 0.3,
            background_dbfs: -30.0,
            vorbis_quality: 0.4,
            pool: CallPool::Valid,
            valid_fraction: 0.2,
            split_seed: 0,
            split_table: None,
            cv: None,
        }
    }
}

impl MixOptions {
    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::InvalidOptions(m.into()));
        if self.minutes == 0 {
            return bad("minutes must be > 0");
        }
        if !(self.snr_db.0.is_finite()
            && self.snr_db.1.is_finite()
            && self.snr_db.0 <= self.snr_db.1)
        {
            return bad("SNR range must be finite, low ≤ high");
        }
        if self.min_overlap == 0 || self.min_overlap > self.max_overlap {
            return bad("min overlap must lie in 1..=max overlap");
        }
        if self.max_overlap == 0 {
            return bad("max overlap must be ≥ 1");
        }
        if !(0.0..=1.0).contains(&self.background_only) {
            return bad("background-only share must lie in [0, 1]");
        }
        if !(self.call_min_s > 0.0 && self.call_min_s <= self.call_max_s && self.call_max_s < 4.9) {
            return bad("call lengths must satisfy 0 < min ≤ max < 4.9 s");
        }
        if !(-1.0..=1.0).contains(&self.vorbis_quality) {
            return bad("vorbis quality must lie in [-0.2, 1]");
        }
        if let Some(cv) = self.cv {
            cv.check().map_err(Error::InvalidOptions)?;
        }
        Ok(())
    }
}

/// One call ready to place: 32 kHz mono samples of a recording's loudest stretch.
#[derive(Debug, Clone)]
pub struct Call {
    /// Species code.
    pub code: String,
    /// Class index in the taxonomy.
    pub class: usize,
    /// `train_audio/`-relative filename of the source recording.
    pub source: String,
    /// Where the stretch starts in the source, seconds.
    pub source_start_s: f64,
    /// The samples.
    pub samples: Vec<f32>,
    /// 5th and 95th percentile of the stretch's spectral energy, Hz (a Raven box).
    pub band_hz: (f64, f64),
}

/// A background recording at 32 kHz.
#[derive(Debug, Clone)]
pub struct Background {
    /// File name.
    pub name: String,
    /// The samples.
    pub samples: Vec<f32>,
}

/// One placed call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedCall {
    /// Soundscape stem.
    pub soundscape: String,
    /// BirdCLEF row id of its window.
    pub row_id: String,
    /// Species code.
    pub code: String,
    /// Source recording.
    pub source: String,
    /// Start of the stretch in the source, seconds.
    pub source_start_s: f64,
    /// Start in the soundscape, seconds.
    pub start_s: f64,
    /// End in the soundscape, seconds.
    pub end_s: f64,
    /// SNR against the background under it, dB.
    pub snr_db: f64,
    /// Calls in its window (itself included).
    pub overlap: usize,
    /// Low edge of its Raven box, Hz.
    pub low_hz: f64,
    /// High edge of its Raven box, Hz.
    pub high_hz: f64,
}

/// One window of a soundscape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixedWindow {
    /// BirdCLEF row id (`{soundscape}_{end_second}`).
    pub row_id: String,
    /// Soundscape stem.
    pub soundscape: String,
    /// Background file.
    pub background: String,
    /// Where the background starts in that file, seconds.
    pub background_offset_s: f64,
    /// Number of calls (0 = background only).
    pub calls: usize,
    /// Lowest SNR of its calls (empty when none).
    pub snr_min_db: Option<f64>,
    /// Species present, space-separated codes in taxonomy order.
    pub species: String,
}

/// What the mixer wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixReport {
    /// Options used.
    pub options: MixOptions,
    /// Soundscape files, relative to the output directory.
    pub soundscapes: Vec<String>,
    /// Calls available after loading.
    pub calls_available: usize,
    /// Species the calls cover.
    pub species_available: usize,
    /// Recordings that lent no call (undecodable, too quiet, too short), with the reason.
    pub calls_skipped: Vec<(String, String)>,
    /// Windows written.
    pub windows: Vec<MixedWindow>,
    /// Calls placed.
    pub placed: Vec<PlacedCall>,
}

/// The calls of a dataset, ready to mix.
#[derive(Debug, Clone)]
pub struct CallSet {
    /// The dataset's taxonomy (class order of the solution columns).
    pub taxonomy: Taxonomy,
    /// Usable calls.
    pub calls: Vec<Call>,
    /// Recordings that lent no call, with the reason.
    pub skipped: Vec<(String, String)>,
}

/// Loads calls from a BirdCLEF-layout root (or from a `train.csv`-format list of calls that
/// sits in such a root, e.g. a hand-picked subset): its usable rows in `pool` (split as the
/// ETL splits them, or as `split_table` says), each cut to its loudest stretch.
pub fn load_calls(calls: &Path, opts: &MixOptions) -> Result<CallSet> {
    if let Some(cv) = opts.cv {
        cv.check().map_err(Error::InvalidOptions)?;
    }
    let (root, list) = if calls.is_file() {
        (
            calls.parent().unwrap_or(Path::new(".")),
            calls.to_path_buf(),
        )
    } else {
        (calls, calls.join("train.csv"))
    };
    let taxonomy = Taxonomy::from_csv(&root.join("taxonomy.csv"))?;
    let (records, _) = read_train_csv(&list)?;
    let usable = usable_records(&records, &taxonomy);
    let splits: Vec<Option<Split>> = match &opts.split_table {
        Some(path) => {
            let table = read_split_table(path)?;
            usable
                .iter()
                .map(|r| table.get(&r.filename).copied())
                .collect()
        }
        None => holdout_split(
            &usable,
            &taxonomy,
            opts.cv
                .map_or(Holdout::Fraction(opts.valid_fraction), Holdout::Fold),
            opts.split_seed,
        )
        .into_iter()
        .map(Some)
        .collect(),
    };
    let chosen: Vec<_> = usable
        .iter()
        .zip(splits)
        .filter(|(_, s)| match opts.pool {
            CallPool::Valid => *s == Some(Split::Valid),
            CallPool::Train => *s == Some(Split::Train),
            CallPool::All => true,
        })
        .map(|(r, _)| r)
        .collect();
    let audio = root.join("train_audio");
    let decoded: Vec<_> = chosen
        .par_iter()
        .map(|r| {
            let d = decode_path(
                audio.join(&r.filename),
                &DecodeOptions {
                    target_rate: Some(SAMPLE_RATE),
                    max_duration_s: 3600.0,
                    max_input_samples: None,
                },
            );
            (r, d)
        })
        .collect();
    let mut calls = Vec::new();
    let mut skipped = Vec::new();
    for (r, d) in decoded {
        let class = taxonomy.index_of(&r.primary_label).unwrap_or(0);
        match d {
            Err(e) => skipped.push((r.filename.clone(), e.to_string())),
            Ok(d) => match loudest_stretch(&d.samples, opts.call_max_s, opts.call_min_s) {
                None => skipped.push((r.filename.clone(), "no audible call".into())),
                Some((start, end)) => {
                    let samples = d.samples[start..end].to_vec();
                    calls.push(Call {
                        code: r.primary_label.clone(),
                        class,
                        source: r.filename.clone(),
                        source_start_s: start as f64 / f64::from(SAMPLE_RATE),
                        band_hz: energy_band(&samples),
                        samples,
                    })
                }
            },
        }
    }
    Ok(CallSet {
        taxonomy,
        calls,
        skipped,
    })
}

/// `filename → split` from a split table (`silencio split`'s CSV).
fn read_split_table(path: &Path) -> Result<std::collections::HashMap<String, Split>> {
    let csv_err = |message: String| Error::Csv {
        path: path.to_path_buf(),
        message,
    };
    let mut rdr = csv::Reader::from_path(path).map_err(|e| csv_err(e.to_string()))?;
    let headers = rdr.headers().map_err(|e| csv_err(e.to_string()))?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| csv_err(format!("missing column {name}")))
    };
    let (f, s) = (col("filename")?, col("split")?);
    let mut out = std::collections::HashMap::new();
    for rec in rdr.records() {
        let rec = rec.map_err(|e| csv_err(e.to_string()))?;
        let split = match rec.get(s) {
            Some("valid") => Split::Valid,
            Some("train") => Split::Train,
            other => return Err(csv_err(format!("split {other:?} (want train or valid)"))),
        };
        out.insert(rec.get(f).unwrap_or_default().to_string(), split);
    }
    Ok(out)
}

/// Loads every decodable audio file of `dir` (sorted by name) at 32 kHz.
pub fn load_backgrounds(dir: &Path) -> Result<Vec<Background>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    names.sort();
    let opts = DecodeOptions {
        target_rate: Some(SAMPLE_RATE),
        max_duration_s: 3600.0,
        max_input_samples: None,
    };
    let out: Vec<Background> = names
        .iter()
        .filter_map(|p| {
            let d = decode_path(p, &opts).ok()?;
            let loud = d.samples.iter().any(|v| v.abs() > 1e-6);
            (loud && d.samples.len() >= SAMPLE_RATE as usize).then(|| Background {
                name: p
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                samples: d.samples,
            })
        })
        .collect();
    if out.is_empty() {
        return Err(Error::InvalidOptions(format!(
            "{}: no decodable background of at least 1 s",
            dir.display()
        )));
    }
    Ok(out)
}

/// The loudest stretch of at most `max_s` seconds, trimmed to its active part: `(start, end)`
/// in samples, or `None` when nothing of at least `min_s` is audible.
pub fn loudest_stretch(x: &[f32], max_s: f64, min_s: f64) -> Option<(usize, usize)> {
    let frames: Vec<f64> = x
        .chunks(FRAME)
        .map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / c.len() as f64)
        .collect();
    if frames.is_empty() {
        return None;
    }
    let span = ((max_s * f64::from(SAMPLE_RATE)) as usize / FRAME).clamp(1, frames.len());
    // Sliding sum of frame energies; the first maximum wins (deterministic).
    let mut sum: f64 = frames[..span].iter().sum();
    let (mut best, mut best_at) = (sum, 0);
    for i in span..frames.len() {
        sum += frames[i] - frames[i - span];
        if sum > best * (1.0 + 1e-12) {
            (best, best_at) = (sum, i + 1 - span);
        }
    }
    let seg = &frames[best_at..best_at + span];
    let peak = seg.iter().copied().fold(0.0, f64::max);
    if peak <= 1e-12 {
        return None;
    }
    let floor = peak * 10f64.powf(-ACTIVE_DB / 10.0);
    let first = seg.iter().position(|&e| e >= floor)?;
    let last = seg.iter().rposition(|&e| e >= floor)?;
    let start = (best_at + first) * FRAME;
    let end = ((best_at + last + 1) * FRAME).min(x.len());
    ((end - start) as f64 >= min_s * f64::from(SAMPLE_RATE)).then_some((start, end))
}

/// 5th and 95th percentiles of the spectral energy (Welch average, 2048-point FFT), Hz.
fn energy_band(x: &[f32]) -> (f64, f64) {
    const N: usize = 2048;
    let mut planner = realfft::RealFftPlanner::<f64>::new();
    let fft = planner.plan_fft_forward(N);
    let hann: Vec<f64> = (0..N)
        .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N as f64).cos())
        .collect();
    let mut power = vec![0.0; N / 2 + 1];
    let mut buf = vec![0.0; N];
    let mut spec = fft.make_output_vec();
    let mut start = 0;
    loop {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = x.get(start + i).map_or(0.0, |&v| f64::from(v)) * hann[i];
        }
        if fft.process(&mut buf, &mut spec).is_ok() {
            for (p, c) in power.iter_mut().zip(&spec) {
                *p += c.norm_sqr();
            }
        }
        start += N / 2;
        if start + N / 2 >= x.len() {
            break;
        }
    }
    let hz = |k: usize| k as f64 * f64::from(SAMPLE_RATE) / N as f64;
    // Below 50 Hz is rumble and DC, not the call.
    let lo_bin = (50.0 * N as f64 / f64::from(SAMPLE_RATE)).ceil() as usize;
    let total: f64 = power[lo_bin..].iter().sum();
    if total <= 0.0 {
        return (0.0, f64::from(SAMPLE_RATE) / 2.0);
    }
    let (mut acc, mut lo, mut hi) = (0.0, None, None);
    for (k, p) in power.iter().enumerate().skip(lo_bin) {
        acc += p;
        if lo.is_none() && acc >= 0.05 * total {
            lo = Some(hz(k));
        }
        if hi.is_none() && acc >= 0.95 * total {
            hi = Some(hz(k));
        }
    }
    (
        lo.unwrap_or(0.0),
        hi.unwrap_or(f64::from(SAMPLE_RATE) / 2.0),
    )
}

fn mean_power(x: &[f32]) -> f64 {
    x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len().max(1) as f64
}

/// Soundscape `i`'s stem, in BirdCLEF's `{recorder}_{date}_{time}` form: recorder `MIX`,
/// one minute per file from 06:00.
pub fn soundscape_stem(i: usize) -> String {
    let minutes = 6 * 60 + i;
    format!(
        "MIX_20250101_{:02}{:02}00",
        (minutes / 60) % 24,
        minutes % 60
    )
}

/// One soundscape's file, windows and calls.
type Minute = (String, Vec<MixedWindow>, Vec<PlacedCall>);

/// Mixes `opts.minutes` soundscapes into `out` (created): `soundscapes/*.ogg`,
/// `solution.csv`, `selections/<stem>.Table.1.selections.txt`, `windows.csv`, `calls.csv`,
/// `mix.json`. Every file is written atomically.
pub fn mix(
    set: &CallSet,
    backgrounds: &[Background],
    opts: &MixOptions,
    out: &Path,
) -> Result<MixReport> {
    opts.check()?;
    let (taxonomy, calls) = (&set.taxonomy, &set.calls[..]);
    if calls.is_empty() && opts.background_only < 1.0 {
        return Err(Error::InvalidOptions(
            "no calls to place (is the chosen split empty?)".into(),
        ));
    }
    if backgrounds.is_empty() {
        return Err(Error::InvalidOptions("no backgrounds".into()));
    }
    let species: BTreeSet<usize> = calls.iter().map(|c| c.class).collect();
    let n = SOUNDSCAPE_S * SAMPLE_RATE as usize;
    let win = WINDOW_S * SAMPLE_RATE as usize;
    let results: Vec<Result<Minute>> = (0..opts.minutes)
        .into_par_iter()
        .map(|i| {
            // One stream per soundscape: the output does not depend on the thread count.
            let mut rng =
                SplitMix64::new(opts.seed ^ (i as u64).wrapping_mul(0xA076_1D64_78BD_642F));
            let stem = soundscape_stem(i);
            let bg = &backgrounds[rng.below(backgrounds.len())];
            let offset = rng.below(bg.samples.len());
            let mut y: Vec<f32> = (0..n)
                .map(|k| bg.samples[(offset + k) % bg.samples.len()])
                .collect();
            let gain =
                (10f64.powf(opts.background_dbfs / 20.0) / mean_power(&y).sqrt().max(1e-9)) as f32;
            y.iter_mut().for_each(|v| *v *= gain);
            let background = y.clone();
            let mut windows = Vec::with_capacity(SOUNDSCAPE_S / WINDOW_S);
            let mut placed = Vec::new();
            for w in 0..SOUNDSCAPE_S / WINDOW_S {
                let row_id = format!("{stem}_{}", (w + 1) * WINDOW_S);
                let mut here: Vec<PlacedCall> = Vec::new();
                if calls.is_empty() || rng.uniform() < opts.background_only {
                    // Background only.
                } else {
                    let k = (opts.min_overlap + rng.below(opts.max_overlap - opts.min_overlap + 1))
                        .min(species.len());
                    let mut used = BTreeSet::new();
                    while here.len() < k {
                        let c = &calls[rng.below(calls.len())];
                        if !used.insert(c.class) {
                            continue;
                        }
                        let d = c.samples.len();
                        let slack = win - d;
                        let start = w * win + rng.below(slack + 1);
                        let snr = opts.snr_db.0 + rng.uniform() * (opts.snr_db.1 - opts.snr_db.0);
                        let p_bg = mean_power(&background[start..start + d]);
                        let p_call = mean_power(&c.samples).max(1e-20);
                        let g = (p_bg * 10f64.powf(snr / 10.0) / p_call).sqrt() as f32;
                        for (j, &v) in c.samples.iter().enumerate() {
                            let fade = (j.min(d - 1 - j) as f32 / FADE as f32).min(1.0);
                            y[start + j] += g * fade * v;
                        }
                        here.push(PlacedCall {
                            soundscape: stem.clone(),
                            row_id: row_id.clone(),
                            code: c.code.clone(),
                            source: c.source.clone(),
                            source_start_s: c.source_start_s,
                            start_s: start as f64 / f64::from(SAMPLE_RATE),
                            end_s: (start + d) as f64 / f64::from(SAMPLE_RATE),
                            snr_db: snr,
                            overlap: 0,
                            low_hz: c.band_hz.0,
                            high_hz: c.band_hz.1,
                        });
                    }
                }
                let count = here.len();
                here.iter_mut().for_each(|p| p.overlap = count);
                let mut codes: Vec<usize> = here
                    .iter()
                    .filter_map(|p| taxonomy.index_of(&p.code))
                    .collect();
                codes.sort_unstable();
                windows.push(MixedWindow {
                    row_id,
                    soundscape: stem.clone(),
                    background: bg.name.clone(),
                    background_offset_s: offset as f64 / f64::from(SAMPLE_RATE),
                    calls: count,
                    snr_min_db: here.iter().map(|p| p.snr_db).reduce(f64::min),
                    species: codes
                        .iter()
                        .map(|&c| taxonomy.species()[c].primary_label.as_str())
                        .collect::<Vec<_>>()
                        .join(" "),
                });
                placed.extend(here);
            }
            // Loud mixes are scaled down as a whole (SNRs unchanged) rather than clipped.
            let peak = y.iter().fold(0f32, |m, v| m.max(v.abs()));
            if peak > 0.98 {
                let s = 0.98 / peak;
                y.iter_mut().for_each(|v| *v *= s);
            }
            let serial = (opts.seed as i32) ^ (i as i32).wrapping_mul(0x2545_F491);
            let ogg = encode_ogg(&y, opts.vorbis_quality, serial)?;
            write(&out.join("soundscapes").join(format!("{stem}.ogg")), &ogg)?;
            write(
                &out.join("selections")
                    .join(format!("{stem}.Table.1.selections.txt")),
                raven_table(&placed).as_bytes(),
            )?;
            Ok((format!("soundscapes/{stem}.ogg"), windows, placed))
        })
        .collect();
    let mut report = MixReport {
        options: opts.clone(),
        soundscapes: Vec::new(),
        calls_available: calls.len(),
        species_available: species.len(),
        calls_skipped: set.skipped.clone(),
        windows: Vec::new(),
        placed: Vec::new(),
    };
    for r in results {
        let (file, windows, placed) = r?;
        report.soundscapes.push(file);
        report.windows.extend(windows);
        report.placed.extend(placed);
    }
    write(
        &out.join("solution.csv"),
        solution_csv(taxonomy, &report.windows)?.as_slice(),
    )?;
    write(&out.join("windows.csv"), &csv_of(&report.windows)?)?;
    write(&out.join("calls.csv"), &csv_of(&report.placed)?)?;
    let json = serde_json::to_vec_pretty(&report)
        .map_err(|e| Error::InvalidOptions(format!("report: {e}")))?;
    write(&out.join("mix.json"), &json)?;
    Ok(report)
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    silencio_common::write_atomic(path, bytes).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Encodes mono 32 kHz samples as OGG Vorbis at `quality` (-0.2…1) with stream `serial`.
pub fn encode_ogg(y: &[f32], quality: f32, serial: i32) -> Result<Vec<u8>> {
    let err = |e: vorbis_rs::VorbisError| Error::InvalidOptions(format!("vorbis encoder: {e}"));
    let mut enc = vorbis_rs::VorbisEncoderBuilder::new_with_serial(
        NonZeroU32::new(SAMPLE_RATE).unwrap_or(NonZeroU32::MIN),
        NonZeroU8::MIN,
        Vec::new(),
        serial,
    )
    .bitrate_management_strategy(vorbis_rs::VorbisBitrateManagementStrategy::QualityVbr {
        target_quality: quality,
    })
    .build()
    .map_err(err)?;
    for block in y.chunks(4096) {
        enc.encode_audio_block([block]).map_err(err)?;
    }
    enc.finish().map_err(err)
}

/// A Raven Pro selection table (tab-separated) of one soundscape's calls.
fn raven_table(placed: &[PlacedCall]) -> String {
    let mut s = String::from(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSpecies\tSNR (dB)\tOverlap\tSource\n",
    );
    for (i, p) in placed.iter().enumerate() {
        s.push_str(&format!(
            "{}\tSpectrogram 1\t1\t{:.6}\t{:.6}\t{:.1}\t{:.1}\t{}\t{:.2}\t{}\t{}\n",
            i + 1,
            p.start_s,
            p.end_s,
            p.low_hz,
            p.high_hz,
            p.code,
            p.snr_db,
            p.overlap,
            p.source
        ));
    }
    s
}

/// BirdCLEF solution: `row_id`, then one 0/1 column per species in taxonomy order.
fn solution_csv(taxonomy: &Taxonomy, windows: &[MixedWindow]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let csv_err = |e: csv::Error| Error::InvalidOptions(format!("solution.csv: {e}"));
    let mut header = vec!["row_id"];
    header.extend(taxonomy.species().iter().map(|s| s.primary_label.as_str()));
    w.write_record(&header).map_err(csv_err)?;
    for win in windows {
        let present: BTreeSet<&str> = win.species.split_whitespace().collect();
        let mut row = vec![win.row_id.clone()];
        row.extend(
            taxonomy
                .species()
                .iter()
                .map(|s| u8::from(present.contains(s.primary_label.as_str())).to_string()),
        );
        w.write_record(&row).map_err(csv_err)?;
    }
    w.into_inner()
        .map_err(|e| Error::InvalidOptions(format!("solution.csv: {e}")))
}

fn csv_of<T: Serialize>(rows: &[T]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in rows {
        w.serialize(r)
            .map_err(|e| Error::InvalidOptions(format!("csv: {e}")))?;
    }
    w.into_inner()
        .map_err(|e| Error::InvalidOptions(format!("csv: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loudest_stretch_finds_and_trims_the_burst() {
        let sr = SAMPLE_RATE as usize;
        let mut x = vec![0.0005f32; 8 * sr];
        for (k, v) in x[3 * sr..(3 * sr + sr / 2)].iter_mut().enumerate() {
            *v = 0.5 * (k as f32 * 0.3).sin();
        }
        let (s, e) = loudest_stretch(&x, 4.0, 0.1).unwrap();
        assert!((s as i64 - 3 * sr as i64).abs() <= FRAME as i64, "{s}");
        assert!(
            (e as i64 - (3 * sr + sr / 2) as i64).abs() <= FRAME as i64,
            "{e}"
        );
        assert!(loudest_stretch(&vec![0.0; sr], 4.0, 0.1).is_none());
        assert!(
            loudest_stretch(&x, 4.0, 1.0).is_none(),
            "0.5 s burst is shorter than 1 s"
        );
    }

    #[test]
    fn energy_band_brackets_a_tone() {
        let x: Vec<f32> = (0..SAMPLE_RATE)
            .map(|k| (2.0 * std::f32::consts::PI * 3000.0 * k as f32 / SAMPLE_RATE as f32).sin())
            .collect();
        let (lo, hi) = energy_band(&x);
        assert!(
            (2900.0..3000.0).contains(&lo) && (3000.0..3100.0).contains(&hi),
            "{lo} {hi}"
        );
    }

    #[test]
    fn stems_follow_birdclef_naming() {
        assert_eq!(soundscape_stem(0), "MIX_20250101_060000");
        assert_eq!(soundscape_stem(61), "MIX_20250101_070100");
    }
}
