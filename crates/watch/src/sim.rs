//! The producer: field data arriving over time.
//!
//! Minute after minute of the input soundscapes (in file-name order, wrapping around) becomes a
//! 1-minute 32 kHz OGG file named like a BirdCLEF soundscape (`SIM_20250101_060000.ogg`, one
//! minute later each time). Without an overlay a file is the literal minute, encoded as a
//! recorder would write it. With one, the minute goes through the soundscape mixer of
//! `silencio-data` as its only background: real calls are placed on it at SNRs drawn from the
//! given range and their labels are written beside the audio as `<stem>.labels.csv` (BirdCLEF
//! solution format). The mixer levels its background and rotates it by a random offset, so an
//! overlaid file is the source minute starting somewhere inside it and wrapping around.
//!
//! Nothing half-written is ever visible under a name the consumer reads: plain cuts are
//! written to a hidden temp file and renamed; the mixer writes into a hidden staging directory
//! inside the output directory, the labels are renamed into place first, then the audio (one
//! rename within a file system), then the directory is fsync'd.
//! Files that already exist are never overwritten: a restarted producer continues after them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use silencio_audio::DecodeOptions;
use silencio_common::SplitMix64;
use silencio_common::time::{civil_from_days, days_from_civil};
use silencio_data::mix::{self, Background, CallPool, MixOptions, SAMPLE_RATE};

use crate::{AUDIO_EXTENSIONS, Error, Result, sync_dir, write_atomic};

/// Seconds per produced file.
const MINUTE_S: usize = mix::SOUNDSCAPE_S;
/// A source shorter than this lends no minute.
const MIN_SOURCE_S: usize = mix::WINDOW_S;

/// Real calls to overlay.
#[derive(Debug, Clone)]
pub struct Overlay {
    /// BirdCLEF-layout root lending the calls (taxonomy.csv, train.csv, train_audio/), or a
    /// train.csv-format list inside one.
    pub calls: PathBuf,
    /// SNR range in dB, drawn uniformly per call.
    pub snr_db: (f64, f64),
    /// Recordings that lend calls.
    pub pool: CallPool,
    /// Most calls in one 5 s window.
    pub max_overlap: usize,
    /// Share of windows left as background only.
    pub background_only: f64,
}

/// Producer settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Directory of source soundscapes (any format the audio crate decodes).
    pub soundscapes: PathBuf,
    /// Output directory (the consumer's input).
    pub out: PathBuf,
    /// Time between files (zero: as fast as possible).
    pub every: Duration,
    /// Files to produce (indices 0..count); `None`: until stopped.
    pub count: Option<usize>,
    /// Calls to overlay, if any.
    pub overlay: Option<Overlay>,
    /// Seed of every random choice (file `i` depends only on the seed and `i`).
    pub seed: u64,
    /// Recorder name in the file names (`{recorder}_{date}_{time}`).
    pub recorder: String,
    /// Turned true from outside to stop after the current file.
    pub stop: Arc<AtomicBool>,
}

impl SimConfig {
    /// Settings with the defaults: no overlay, seed 0, recorder `SIM`.
    pub fn new(soundscapes: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            soundscapes: soundscapes.into(),
            out: out.into(),
            every: Duration::ZERO,
            count: None,
            overlay: None,
            seed: 0,
            recorder: "SIM".into(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// One file written.
#[derive(Debug, Clone)]
pub struct Produced {
    /// Index of the file (minute number).
    pub index: usize,
    /// The audio file.
    pub audio: PathBuf,
    /// The labels beside it (with an overlay).
    pub labels: Option<PathBuf>,
    /// Source recording and the second its minute starts at.
    pub source: (String, f64),
    /// Calls placed.
    pub calls: usize,
    /// Seconds spent mixing and writing it.
    pub seconds: f64,
}

/// What a run produced.
#[derive(Debug, Clone, Default)]
pub struct SimSummary {
    /// Files written, in order.
    pub written: Vec<Produced>,
    /// Indices skipped because their file already existed.
    pub existing: usize,
    /// Source recordings that could not be decoded, with the reason.
    pub sources_skipped: Vec<(String, String)>,
    /// Wall time of the run, seconds.
    pub seconds: f64,
}

/// Runs the producer; see [`simulate_with`].
pub fn simulate(cfg: &SimConfig) -> Result<SimSummary> {
    simulate_with(cfg, &mut |_| {})
}

/// Runs the producer, calling `on_file` after each file is in place. Stops after
/// `cfg.count` files or when `cfg.stop` turns true.
pub fn simulate_with(cfg: &SimConfig, on_file: &mut dyn FnMut(&Produced)) -> Result<SimSummary> {
    let started = Instant::now();
    if cfg.recorder.is_empty() || cfg.recorder.contains(['/', '\\', '.', '_']) {
        return Err(Error::InvalidOptions(format!(
            "recorder name {:?} must be non-empty without '/', '.' or '_'",
            cfg.recorder
        )));
    }
    std::fs::create_dir_all(&cfg.out).map_err(|e| Error::io(&cfg.out, e))?;
    let mut sources = Minutes::new(&cfg.soundscapes)?;
    let set = match &cfg.overlay {
        Some(o) => {
            let set = mix::load_calls(&o.calls, &mix_options(cfg, 0))?;
            if set.calls.is_empty() {
                return Err(Error::InvalidOptions(format!(
                    "{}: no usable call in the {:?} pool",
                    o.calls.display(),
                    o.pool
                )));
            }
            Some(set)
        }
        None => None,
    };
    // Hidden and inside the output directory: invisible to the consumer, and on the same file
    // system so that the final rename is atomic.
    let staging = cfg.out.join(format!(".sim-staging-{}", std::process::id()));
    let mut summary = SimSummary::default();
    let result: Result<()> = (|| {
        let mut index = 0usize;
        let mut next_due = Instant::now();
        while cfg.count.is_none_or(|n| index < n) {
            if cfg.stop.load(Ordering::SeqCst) {
                break;
            }
            let (source, start_s, samples) = sources.next_minute()?;
            let stem = stem(&cfg.recorder, index);
            let audio = cfg.out.join(format!("{stem}.ogg"));
            if audio.exists() {
                summary.existing += 1;
                index += 1;
                continue;
            }
            if !cfg.every.is_zero() && !sleep_until(next_due, &cfg.stop) {
                break;
            }
            let t = Instant::now();
            let (labels, calls) = match &set {
                // Real calls overlaid by the mixer (its background level and offset, labels
                // by construction), the labels renamed into place before the audio.
                Some(set) => {
                    let bg = Background {
                        name: format!("{source}@{start_s}"),
                        samples,
                    };
                    let report = mix::mix(set, &[bg], &mix_options(cfg, index), &staging)?;
                    let p = cfg.out.join(format!("{stem}.labels.csv"));
                    let staged = staging.join("solution.csv");
                    write_atomic(&p, &relabel(&staged, &mix::soundscape_stem(0), &stem)?)?;
                    let staged_audio = report
                        .soundscapes
                        .first()
                        .map(|f| staging.join(f))
                        .ok_or_else(|| {
                            Error::InvalidOptions("the mixer wrote no soundscape".into())
                        })?;
                    std::fs::rename(&staged_audio, &audio).map_err(|e| Error::io(&audio, e))?;
                    sync_dir(&cfg.out)?;
                    (Some(p), report.placed.len())
                }
                // A literal one-minute cut of the field recording, as a recorder would write it.
                None => {
                    let serial = splitmix(cfg.seed ^ index as u64) as i32;
                    let ogg =
                        mix::encode_ogg(&samples, MixOptions::default().vorbis_quality, serial)?;
                    write_atomic(&audio, &ogg)?;
                    (None, 0)
                }
            };
            let produced = Produced {
                index,
                audio,
                labels,
                source: (source, start_s),
                calls,
                seconds: t.elapsed().as_secs_f64(),
            };
            on_file(&produced);
            summary.written.push(produced);
            index += 1;
            next_due = t + cfg.every;
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&staging);
    result?;
    summary.sources_skipped = sources.skipped;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The mixer's settings for file `index`: one minute, its own seed.
fn mix_options(cfg: &SimConfig, index: usize) -> MixOptions {
    let seed = splitmix(cfg.seed ^ splitmix(index as u64));
    match &cfg.overlay {
        Some(o) => MixOptions {
            minutes: 1,
            seed,
            snr_db: o.snr_db,
            pool: o.pool,
            max_overlap: o.max_overlap,
            min_overlap: 1.min(o.max_overlap),
            background_only: o.background_only,
            ..MixOptions::default()
        },
        None => MixOptions {
            minutes: 1,
            seed,
            ..MixOptions::default()
        },
    }
}

/// Sleeps until `t` in short steps; false when stopped first.
fn sleep_until(t: Instant, stop: &AtomicBool) -> bool {
    loop {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let now = Instant::now();
        if now >= t {
            return true;
        }
        std::thread::sleep((t - now).min(Duration::from_millis(100)));
    }
}

/// The mixer's solution CSV with its row ids moved from `from` (the mixer's stem) to `to`.
fn relabel(solution: &Path, from: &str, to: &str) -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(solution).map_err(|e| Error::io(solution, e))?;
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        match line.strip_prefix(from) {
            Some(rest) if i > 0 && rest.starts_with('_') => {
                out.push_str(to);
                out.push_str(rest);
            }
            _ if i == 0 => out.push_str(line),
            _ => {
                return Err(Error::InvalidOptions(format!(
                    "{}: line {} does not start with {from}_",
                    solution.display(),
                    i + 1
                )));
            }
        }
        out.push('\n');
    }
    Ok(out.into_bytes())
}

/// File `index`'s stem in BirdCLEF's `{recorder}_{YYYYMMDD}_{HHMMSS}` form: one minute per
/// file from 2025-01-01 06:00, the date moving on after midnight.
pub fn stem(recorder: &str, index: usize) -> String {
    let minutes = 6 * 60 + index as u64;
    let (days, minute_of_day) = (minutes / 1440, minutes % 1440);
    let (y, m, d) = civil_from_days(days_from_civil(2025, 1, 1) + days as i64);
    format!(
        "{recorder}_{y:04}{m:02}{d:02}_{:02}{:02}00",
        minute_of_day / 60,
        minute_of_day % 60
    )
}

/// SplitMix64's first output from state `x`: a seed mixer.
fn splitmix(x: u64) -> u64 {
    SplitMix64::new(x).next_u64()
}

/// Consecutive minutes of the source recordings, one recording decoded at a time.
struct Minutes {
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<(String, Vec<f32>)>,
    pos: usize,
    /// Files tried since a minute was last given (to stop when none decodes).
    tried: usize,
    skipped: Vec<(String, String)>,
}

impl Minutes {
    fn new(dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let ext = p
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                let hidden = p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_none_or(|n| n.starts_with('.'));
                p.is_file()
                    && !hidden
                    && ext.is_some_and(|e| AUDIO_EXTENSIONS.contains(&e.as_str()))
            })
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::InvalidOptions(format!(
                "{}: no soundscapes ({})",
                dir.display(),
                AUDIO_EXTENSIONS.join(", ")
            )));
        }
        Ok(Self {
            files,
            next_file: 0,
            current: None,
            pos: 0,
            tried: 0,
            skipped: Vec::new(),
        })
    }

    /// The next minute: `(source name, start second, samples)`. A recording shorter than a
    /// minute (but at least one window) lends itself whole; the mixer loops it.
    fn next_minute(&mut self) -> Result<(String, f64, Vec<f32>)> {
        let minute = MINUTE_S * SAMPLE_RATE as usize;
        loop {
            if let Some((name, samples)) = &self.current {
                let left = samples.len() - self.pos;
                let whole_short = self.pos == 0
                    && samples.len() < minute
                    && samples.len() >= MIN_SOURCE_S * SAMPLE_RATE as usize;
                if left >= minute || whole_short {
                    let take = left.min(minute);
                    let out = (
                        name.clone(),
                        self.pos as f64 / f64::from(SAMPLE_RATE),
                        samples[self.pos..self.pos + take].to_vec(),
                    );
                    self.pos += take;
                    self.tried = 0;
                    return Ok(out);
                }
            }
            if self.tried >= self.files.len() {
                return Err(Error::InvalidOptions(format!(
                    "no source soundscape decodes to at least {MIN_SOURCE_S} s: {:?}",
                    self.skipped
                )));
            }
            let path = &self.files[self.next_file];
            self.next_file = (self.next_file + 1) % self.files.len();
            self.tried += 1;
            self.pos = 0;
            let name = path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
            let opts = DecodeOptions {
                target_rate: Some(SAMPLE_RATE),
                ..DecodeOptions::default()
            };
            self.current = match silencio_audio::decode_path(path, &opts) {
                Ok(d) => Some((name, d.samples)),
                Err(e) => {
                    if !self.skipped.iter().any(|(n, _)| *n == name) {
                        self.skipped.push((name, e.to_string()));
                    }
                    None
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_are_birdclef_like_and_cross_midnight() {
        assert_eq!(stem("SIM", 0), "SIM_20250101_060000");
        assert_eq!(stem("SIM", 61), "SIM_20250101_070100");
        assert_eq!(stem("SIM", 18 * 60), "SIM_20250102_000000");
        // 2025 is not a leap year: 59 days after 1 January is 1 March.
        assert_eq!(stem("R1", 18 * 60 + 58 * 1440), "R1_20250301_000000");
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn relabel_moves_row_ids_and_keeps_the_header() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("solution.csv");
        std::fs::write(&p, "row_id,a,b\nMIX_X_5,0,1\nMIX_X_10,1,0\n").unwrap();
        let out = String::from_utf8(relabel(&p, "MIX_X", "SIM_Y").unwrap()).unwrap();
        assert_eq!(out, "row_id,a,b\nSIM_Y_5,0,1\nSIM_Y_10,1,0\n");
        std::fs::write(&p, "row_id,a\nOTHER_5,0\n").unwrap();
        assert!(relabel(&p, "MIX_X", "SIM_Y").is_err());
    }

    #[test]
    fn minutes_walk_the_sources_in_order_and_wrap() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../datasets/demo/birdclef/train_soundscapes");
        let mut m = Minutes::new(&dir).unwrap();
        let names: Vec<(String, f64, usize)> = (0..3)
            .map(|_| {
                let (n, s, x) = m.next_minute().unwrap();
                (n, s, x.len())
            })
            .collect();
        let minute = 60 * 32_000;
        assert_eq!(names[0], ("DEMO1_20240101_060000.ogg".into(), 0.0, minute));
        assert_eq!(names[1], ("DEMO2_20240101_120000.ogg".into(), 0.0, minute));
        assert_eq!(names[2].0, "DEMO1_20240101_060000.ogg");
    }

    #[test]
    fn plain_cuts_are_the_literal_minutes_in_order() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../datasets/demo/birdclef/train_soundscapes");
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = SimConfig::new(&dir, tmp.path());
        cfg.every = Duration::ZERO;
        cfg.count = Some(2);
        let sum = simulate(&cfg).unwrap();
        assert_eq!(sum.written.len(), 2);
        let mut m = Minutes::new(&dir).unwrap();
        for p in &sum.written {
            let (_, _, source) = m.next_minute().unwrap();
            let got = silencio_audio::decode_path(&p.audio, &Default::default())
                .unwrap()
                .samples;
            assert_eq!(got.len(), source.len());
            // The same waveform through Vorbis: no rotation, no gain change.
            let dot: f64 = got.iter().zip(&source).map(|(a, b)| f64::from(a * b)).sum();
            let e = |x: &[f32]| x.iter().map(|v| f64::from(v * v)).sum::<f64>();
            let corr = dot / (e(&got) * e(&source)).sqrt();
            assert!(corr > 0.95, "correlation {corr}");
            let gain = (e(&got) / e(&source)).sqrt();
            assert!((0.9..1.1).contains(&gain), "gain {gain}");
            assert!(p.labels.is_none());
        }
        // Nothing but the two files is left in the output directory.
        let names: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
