//! Log-mel spectrogram, pinned to librosa's defaults so it can be checked against librosa ≥ 0.10:
//! `librosa.power_to_db(librosa.feature.melspectrogram(y, sr, n_fft, hop_length, window='hann',
//! center=True, pad_mode='constant', power=2.0, n_mels, fmin, fmax, htk=False, norm='slaney'),
//! ref=1.0, amin=1e-10, top_db=None)`:
//! periodic Hann window of `n_fft` samples, frames centred (`n_fft/2` zeros padded each side),
//! |FFT|², Slaney mel scale with Slaney area normalisation, `10·log10(max(x, 1e-10))`.
//! Frames per window: `1 + len / hop` (313 for 5 s at hop 512).
//!
//! The filterbank is stored sparse (each FFT bin touches at most two triangles), so the mel
//! projection costs ~2 multiply-adds per bin instead of `n_mels` per bin.

use std::sync::Arc;

use rayon::prelude::*;
use realfft::{RealFftPlanner, RealToComplex, num_complex::Complex};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::window::{Window, WindowConfig};

/// Floor of the power spectrum before the log (librosa's `amin`).
pub const AMIN: f32 = 1e-10;
/// `10 / ln(10)`: dB per natural-log unit of power.
const DB_PER_NEPER: f32 = 10.0 / std::f32::consts::LN_10;
/// The dB value of silence: `10·log10(AMIN)`.
pub const DB_FLOOR: f32 = -100.0;

/// Every parameter of the feature transform. It travels inside model bundles so that training
/// and serving cannot disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureConfig {
    /// Name of the recipe these values came from (`birdclef`, `panns`, `wide`, or custom).
    pub recipe: String,
    /// Sample rate the audio is resampled to, in Hz.
    pub sample_rate: u32,
    /// FFT size and Hann window length in samples.
    pub n_fft: usize,
    /// Step between frames in samples.
    pub hop_length: usize,
    /// Number of mel bands.
    pub n_mels: usize,
    /// Lowest mel edge in Hz.
    pub f_min: f64,
    /// Highest mel edge in Hz (≤ sample_rate / 2).
    pub f_max: f64,
    /// How recordings are cut into windows.
    pub window: WindowConfig,
}

/// Names accepted by [`FeatureConfig::recipe`].
pub const RECIPES: [&str; 3] = ["birdclef", "panns", "wide"];

impl FeatureConfig {
    /// A named recipe: `birdclef` (n_fft 2048, hop 512, 128 mels, 20–16000 Hz), `panns` (1024,
    /// 320, 64 mels, 50–14000 Hz), `wide` (4096, 1252, 224 mels, 0–16000 Hz); all at 32 kHz on
    /// 5 s windows.
    pub fn recipe(name: &str) -> Result<Self> {
        let (n_fft, hop_length, n_mels, f_min, f_max) = match name {
            "birdclef" => (2048, 512, 128, 20.0, 16_000.0),
            "panns" => (1024, 320, 64, 50.0, 14_000.0),
            "wide" => (4096, 1252, 224, 0.0, 16_000.0),
            _ => {
                return Err(Error::UnknownRecipe {
                    name: name.to_string(),
                    known: RECIPES.join(", "),
                });
            }
        };
        Ok(Self {
            recipe: name.to_string(),
            sample_rate: 32_000,
            n_fft,
            hop_length,
            n_mels,
            f_min,
            f_max,
            window: WindowConfig::default(),
        })
    }

    /// Checks that the numbers describe a transform that can run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        let nyquist = self.sample_rate as f64 / 2.0;
        if self.sample_rate == 0 {
            return bad("sample_rate must be > 0".into());
        }
        if self.n_fft < 2 || self.n_fft > 1 << 16 {
            return bad(format!("n_fft {} outside 2..=65536", self.n_fft));
        }
        if self.hop_length == 0 {
            return bad("hop_length must be > 0".into());
        }
        if self.n_mels == 0 || self.n_mels > self.n_fft / 2 + 1 {
            return bad(format!(
                "n_mels {} outside 1..={}",
                self.n_mels,
                self.n_fft / 2 + 1
            ));
        }
        if !(self.f_min >= 0.0 && self.f_min < self.f_max && self.f_max <= nyquist) {
            return bad(format!(
                "need 0 <= f_min < f_max <= {nyquist} Hz, got {}..{}",
                self.f_min, self.f_max
            ));
        }
        self.window.validate(self.sample_rate)
    }

    /// Frames of a window of `n` samples (`center=True`): `1 + n / hop`.
    pub fn frames_for(&self, n: usize) -> usize {
        1 + n / self.hop_length
    }

    /// Frames per analysis window (313 for `birdclef`).
    pub fn frames_per_window(&self) -> usize {
        self.frames_for(self.window.length_samples(self.sample_rate))
    }
}

/// Slaney's mel scale (librosa `hz_to_mel(htk=False)`): linear below 1 kHz, log above.
pub fn hz_to_mel(hz: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / logstep
    } else {
        hz / F_SP
    }
}

/// Inverse of [`hz_to_mel`].
pub fn mel_to_hz(mel: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (logstep * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// One triangular filter: weights for FFT bins `start .. start + weights.len()`.
#[derive(Debug, Clone)]
struct MelFilter {
    start: usize,
    weights: Vec<f32>,
}

/// Slaney-normalised triangular filterbank as librosa's `filters.mel(htk=False,
/// norm='slaney')`, computed in f64; returns dense `[n_mels][n_fft/2 + 1]`.
pub fn mel_filterbank(cfg: &FeatureConfig) -> Vec<Vec<f64>> {
    let n_bins = cfg.n_fft / 2 + 1;
    let sr = cfg.sample_rate as f64;
    let fft_freqs: Vec<f64> = (0..n_bins)
        .map(|k| k as f64 * sr / cfg.n_fft as f64)
        .collect();
    let (mel_lo, mel_hi) = (hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max));
    let m = cfg.n_mels;
    // n_mels + 2 edges, evenly spaced in mel (librosa's `mel_frequencies`).
    let edges: Vec<f64> = (0..m + 2)
        .map(|i| mel_to_hz(mel_lo + (mel_hi - mel_lo) * i as f64 / (m + 1) as f64))
        .collect();
    (0..m)
        .map(|i| {
            let (lo, mid, hi) = (edges[i], edges[i + 1], edges[i + 2]);
            let enorm = 2.0 / (hi - lo);
            fft_freqs
                .iter()
                .map(|&f| {
                    let lower = (f - lo) / (mid - lo);
                    let upper = (hi - f) / (hi - mid);
                    lower.min(upper).max(0.0) * enorm
                })
                .collect()
        })
        .collect()
}

/// Log-mel features of many windows: `data` is `[windows, n_mels, n_frames]`, row-major.
#[derive(Debug, Clone)]
pub struct Features {
    /// The windows, in order.
    pub windows: Vec<Window>,
    /// Mel bands per window.
    pub n_mels: usize,
    /// Frames per window.
    pub n_frames: usize,
    /// Values in dB.
    pub data: Vec<f32>,
}

impl Features {
    /// `[windows, n_mels, n_frames]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.windows.len(), self.n_mels, self.n_frames]
    }

    /// The `[n_mels, n_frames]` block of window `i`.
    pub fn window(&self, i: usize) -> &[f32] {
        let n = self.n_mels * self.n_frames;
        &self.data[i * n..(i + 1) * n]
    }
}

/// Dot product in eight lanes, so that the compiler can vectorise it (a plain float sum must
/// keep its order and cannot be); the lane order is fixed, so results are deterministic.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ca, ra) = a.as_chunks::<8>();
    let (cb, rb) = b.as_chunks::<8>();
    let mut acc = [0f32; 8];
    for (x, y) in ca.iter().zip(cb) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// Frames computed per parallel task: small enough to spread one 5 s window over both cores,
/// large enough to amortise the task overhead.
const FRAMES_PER_TASK: usize = 64;

/// A ready-to-run log-mel transform (window, FFT plan and filterbank built once).
#[derive(Clone)]
pub struct LogMel {
    cfg: FeatureConfig,
    hann: Vec<f32>,
    filters: Vec<MelFilter>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl std::fmt::Debug for LogMel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogMel").field("cfg", &self.cfg).finish()
    }
}

struct Scratch {
    frame: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    fft: Vec<Complex<f32>>,
    power: Vec<f32>,
}

impl LogMel {
    /// Builds the transform; fails on an invalid configuration.
    pub fn new(cfg: &FeatureConfig) -> Result<Self> {
        cfg.validate()?;
        let n = cfg.n_fft;
        // Periodic Hann (scipy.signal.get_window('hann', n, fftbins=True)).
        let hann = (0..n)
            .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32)
            .collect();
        let filters = mel_filterbank(cfg)
            .into_iter()
            .map(|row| {
                let start = row.iter().position(|&w| w > 0.0).unwrap_or(0);
                let end = row.iter().rposition(|&w| w > 0.0).map_or(start, |e| e + 1);
                MelFilter {
                    start,
                    weights: row[start..end].iter().map(|&w| w as f32).collect(),
                }
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(n);
        Ok(Self {
            cfg: cfg.clone(),
            hann,
            filters,
            fft,
        })
    }

    /// The configuration this transform runs.
    pub fn config(&self) -> &FeatureConfig {
        &self.cfg
    }

    fn scratch(&self) -> Scratch {
        Scratch {
            frame: self.fft.make_input_vec(),
            spectrum: self.fft.make_output_vec(),
            fft: self.fft.make_scratch_vec(),
            power: vec![0.0; self.cfg.n_fft / 2 + 1],
        }
    }

    /// Frames `t0..t1` of `x`, written frame-major into `out` (`[t1 - t0][n_mels]`).
    fn frames_into(&self, x: &[f32], t0: usize, t1: usize, out: &mut [f32], s: &mut Scratch) {
        let n = self.cfg.n_fft;
        let pad = n / 2;
        let hop = self.cfg.hop_length;
        for (t, row) in (t0..t1).zip(out.chunks_exact_mut(self.cfg.n_mels)) {
            // Frame t covers x[t·hop − n/2 .. t·hop + n/2) of the zero-padded signal.
            let first = (t * hop) as isize - pad as isize;
            if first >= 0 && first as usize + n <= x.len() {
                // Interior frame: a straight multiply the compiler vectorises.
                let src = &x[first as usize..first as usize + n];
                for ((v, &a), &w) in s.frame.iter_mut().zip(src).zip(&self.hann) {
                    *v = a * w;
                }
            } else {
                for (k, v) in s.frame.iter_mut().enumerate() {
                    let i = first + k as isize;
                    *v = if i >= 0 && (i as usize) < x.len() {
                        x[i as usize] * self.hann[k]
                    } else {
                        0.0
                    };
                }
            }
            // Lengths match the plan by construction, so this cannot fail.
            let _ = self
                .fft
                .process_with_scratch(&mut s.frame, &mut s.spectrum, &mut s.fft);
            for (p, c) in s.power.iter_mut().zip(&s.spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (m, f) in row.iter_mut().zip(&self.filters) {
                let bins = &s.power[f.start..f.start + f.weights.len()];
                let e = dot(bins, &f.weights);
                // 10·log10(x) as (10/ln 10)·ln(x): one libm call instead of two.
                *m = if e > AMIN {
                    DB_PER_NEPER * e.ln()
                } else {
                    DB_FLOOR
                };
            }
        }
    }

    /// Log-mel of one window of samples: `[n_mels, 1 + len/hop]`, row-major.
    pub fn compute(&self, x: &[f32]) -> Vec<f32> {
        let frames = self.cfg.frames_for(x.len());
        let mut fm = vec![0.0; frames * self.cfg.n_mels];
        let mut s = self.scratch();
        self.frames_into(x, 0, frames, &mut fm, &mut s);
        transpose(&fm, frames, self.cfg.n_mels)
    }

    /// Cuts `samples` (mono at `config().sample_rate`) into windows and computes all of them,
    /// spread over the rayon pool.
    pub fn features(&self, samples: &[f32]) -> Result<Features> {
        self.features_impl(samples, true)
    }

    /// [`LogMel::features`] computed on the calling thread: for callers that already run many
    /// recordings in parallel (the ETL), where splitting each one again only adds overhead.
    /// Bit-identical to [`LogMel::features`].
    pub fn features_on_this_thread(&self, samples: &[f32]) -> Result<Features> {
        self.features_impl(samples, false)
    }

    fn features_impl(&self, samples: &[f32], parallel: bool) -> Result<Features> {
        let windows = self
            .cfg
            .window
            .windows(samples.len(), self.cfg.sample_rate)?;
        let win_len = self.cfg.window.length_samples(self.cfg.sample_rate);
        let frames = self.cfg.frames_for(win_len);
        let mels = self.cfg.n_mels;
        // Full windows are borrowed; only a short last one is copied and zero-padded.
        let padded: Vec<_> = windows
            .iter()
            .map(|w| w.extract(samples, win_len))
            .collect();
        let tasks: Vec<(usize, usize)> = (0..windows.len())
            .flat_map(|w| (0..frames).step_by(FRAMES_PER_TASK).map(move |t| (w, t)))
            .collect();
        let block = |s: &mut Scratch, &(w, t0): &(usize, usize)| {
            let t1 = (t0 + FRAMES_PER_TASK).min(frames);
            let mut out = vec![0.0; (t1 - t0) * mels];
            self.frames_into(&padded[w], t0, t1, &mut out, s);
            out
        };
        let blocks: Vec<Vec<f32>> = if parallel {
            tasks
                .par_iter()
                .map_init(|| self.scratch(), |s, t| block(s, t))
                .collect()
        } else {
            let mut s = self.scratch();
            tasks.iter().map(|t| block(&mut s, t)).collect()
        };
        let mut data = vec![0.0; windows.len() * mels * frames];
        for (&(w, t0), block) in tasks.iter().zip(&blocks) {
            let dst = &mut data[w * mels * frames..(w + 1) * mels * frames];
            for (dt, row) in block.chunks_exact(mels).enumerate() {
                for (m, &v) in row.iter().enumerate() {
                    dst[m * frames + t0 + dt] = v;
                }
            }
        }
        Ok(Features {
            windows,
            n_mels: mels,
            n_frames: frames,
            data,
        })
    }
}

fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[r * cols + c];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipes_validate_and_birdclef_has_313_frames() {
        for r in RECIPES {
            FeatureConfig::recipe(r).unwrap().validate().unwrap();
        }
        assert_eq!(
            FeatureConfig::recipe("birdclef")
                .unwrap()
                .frames_per_window(),
            313
        );
        assert!(matches!(
            FeatureConfig::recipe("nope"),
            Err(Error::UnknownRecipe { .. })
        ));
    }

    #[test]
    fn mel_scale_round_trips_and_is_slaney() {
        // Slaney: 1000 Hz is mel 15, linear below.
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel(500.0) - 7.5).abs() < 1e-12);
        for hz in [0.0, 20.0, 999.0, 1000.0, 4000.0, 16_000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6);
        }
    }

    #[test]
    fn invalid_configs_rejected() {
        let mut c = FeatureConfig::recipe("birdclef").unwrap();
        c.f_max = 20_000.0;
        assert!(LogMel::new(&c).is_err());
        let mut c = FeatureConfig::recipe("birdclef").unwrap();
        c.hop_length = 0;
        assert!(LogMel::new(&c).is_err());
    }

    #[test]
    fn parallel_features_equal_serial_compute() {
        let cfg = FeatureConfig::recipe("panns").unwrap();
        let lm = LogMel::new(&cfg).unwrap();
        let x: Vec<f32> = (0..7 * 32_000)
            .map(|i| ((i as f32 * 0.37).sin() + (i as f32 * 0.011).cos()) * 0.3)
            .collect();
        let f = lm.features(&x).unwrap();
        assert_eq!(f.shape(), [2, 64, 501]);
        for (i, w) in f.windows.iter().enumerate() {
            let serial = lm.compute(&w.extract(&x, 160_000));
            assert_eq!(f.window(i), &serial[..]);
        }
    }
}
