//! Cutting a recording into fixed-length analysis windows (5 s for BirdCLEF).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a recording is cut into windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowConfig {
    /// Window length in seconds (BirdCLEF scores 5 s windows).
    pub length_s: f64,
    /// Step between window starts in seconds; `< length_s` overlaps.
    pub hop_s: f64,
    /// A last, short window is kept (zero-padded) only if it holds at least this much audio.
    /// Default 1.0 s, as BirdNET-Analyzer's minimum chunk length: shorter tails are mostly
    /// padding and would add a near-silent row per clip. A recording shorter than one window
    /// always gives one window, whatever this says.
    pub min_tail_s: f64,
}

impl Default for WindowConfig {
    fn default() -> Self {
        Self {
            length_s: 5.0,
            hop_s: 5.0,
            min_tail_s: 1.0,
        }
    }
}

/// One analysis window of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// 0-based position in the recording.
    pub index: usize,
    /// Start in seconds from the recording's start.
    pub start_s: f64,
    /// Nominal end (`start_s + length_s`), the time BirdCLEF row ids use.
    pub end_s: f64,
    /// First sample.
    pub start_sample: usize,
    /// Samples of real audio in the window; the rest up to the window length is zero padding.
    pub valid_samples: usize,
}

impl WindowConfig {
    /// Checks that the numbers can work at `sample_rate`.
    pub fn validate(&self, sample_rate: u32) -> Result<()> {
        let len = self.length_s * sample_rate as f64;
        let hop = self.hop_s * sample_rate as f64;
        // Upper bounds keep a typo from allocating gigabytes per window.
        if !(len.is_finite() && len >= 1.0 && self.length_s <= 600.0) {
            return Err(Error::InvalidConfig(format!(
                "window length {} s",
                self.length_s
            )));
        }
        if !(hop.is_finite() && hop >= 1.0 && self.hop_s <= 3600.0) {
            return Err(Error::InvalidConfig(format!("window hop {} s", self.hop_s)));
        }
        if !(self.min_tail_s.is_finite() && self.min_tail_s >= 0.0) {
            return Err(Error::InvalidConfig(format!(
                "min tail {} s",
                self.min_tail_s
            )));
        }
        Ok(())
    }

    /// Window length in samples at `sample_rate`.
    pub fn length_samples(&self, sample_rate: u32) -> usize {
        (self.length_s * sample_rate as f64).round() as usize
    }

    /// Step between window starts in samples at `sample_rate`.
    pub fn hop_samples(&self, sample_rate: u32) -> usize {
        (self.hop_s * sample_rate as f64).round() as usize
    }

    /// The windows of a recording of `n` samples.
    pub fn windows(&self, n: usize, sample_rate: u32) -> Result<Vec<Window>> {
        self.validate(sample_rate)?;
        let sr = sample_rate as f64;
        let len = self.length_samples(sample_rate);
        let hop = self.hop_samples(sample_rate);
        let min_tail = (self.min_tail_s * sr).round() as usize;
        let make = |index: usize, start: usize| Window {
            index,
            start_s: start as f64 / sr,
            end_s: start as f64 / sr + self.length_s,
            start_sample: start,
            valid_samples: n.saturating_sub(start).min(len),
        };
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let w = make(out.len(), start);
            // Full windows always count; a short last one only with enough audio.
            if w.valid_samples == len || w.valid_samples >= min_tail || start == 0 {
                out.push(w);
            }
            if start + len >= n {
                break;
            }
            start += hop;
        }
        if out.is_empty() {
            out.push(make(0, 0));
        }
        Ok(out)
    }
}

impl Window {
    /// The window's `len` samples out of `samples`: borrowed when the window is full, copied
    /// and zero-padded when it is a short last one.
    pub fn extract<'a>(&self, samples: &'a [f32], len: usize) -> Cow<'a, [f32]> {
        let end = (self.start_sample + self.valid_samples).min(samples.len());
        let src = &samples[self.start_sample.min(end)..end];
        if src.len() == len {
            return Cow::Borrowed(src);
        }
        let mut w = vec![0.0; len];
        w[..src.len()].copy_from_slice(src);
        Cow::Owned(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SR: u32 = 32_000;

    #[test]
    fn birdclef_minute_gives_twelve_windows_ending_5_to_60() {
        let w = WindowConfig::default().windows(60 * 32_000, SR).unwrap();
        assert_eq!(w.len(), 12);
        let ends: Vec<f64> = w.iter().map(|w| w.end_s).collect();
        assert_eq!(ends, (1..=12).map(|i| i as f64 * 5.0).collect::<Vec<_>>());
        assert!(w.iter().all(|w| w.valid_samples == 160_000));
    }

    #[test]
    fn short_recording_gives_one_padded_window() {
        for n in [1, 100, 31_999, 159_999] {
            let w = WindowConfig::default().windows(n, SR).unwrap();
            assert_eq!(w.len(), 1, "n={n}");
            assert_eq!(w[0].valid_samples, n);
        }
        // Even zero samples: one silent window, never none.
        assert_eq!(WindowConfig::default().windows(0, SR).unwrap().len(), 1);
    }

    #[test]
    fn tail_kept_only_above_minimum() {
        let cfg = WindowConfig::default();
        // 5 s + 0.5 s: tail below 1 s dropped.
        assert_eq!(cfg.windows(176_000, SR).unwrap().len(), 1);
        // 5 s + 1 s: tail kept, padded.
        let w = cfg.windows(192_000, SR).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(w[1].valid_samples, 32_000);
        let x: Vec<f32> = (0..192_000).map(|i| i as f32).collect();
        let last = w[1].extract(&x, 160_000);
        assert_eq!(last[0], 160_000.0);
        assert_eq!(last[31_999], 191_999.0);
        assert!(last[32_000..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn overlapping_hop() {
        let cfg = WindowConfig {
            hop_s: 2.5,
            ..WindowConfig::default()
        };
        let starts = |n: usize| -> Vec<f64> {
            cfg.windows(n, SR)
                .unwrap()
                .iter()
                .map(|w| w.start_s)
                .collect()
        };
        // 10 s: the window at 5 s already reaches the end; no redundant tail.
        assert_eq!(starts(10 * 32_000), vec![0.0, 2.5, 5.0]);
        // 11 s: the window at 7.5 s holds 3.5 s ≥ 1 s and is kept, padded.
        assert_eq!(starts(11 * 32_000), vec![0.0, 2.5, 5.0, 7.5]);
    }

    #[test]
    fn bad_config_is_an_error() {
        let cfg = WindowConfig {
            hop_s: 0.0,
            ..WindowConfig::default()
        };
        assert!(matches!(cfg.windows(100, SR), Err(Error::InvalidConfig(_))));
        let huge = WindowConfig {
            length_s: 1e12,
            ..WindowConfig::default()
        };
        assert!(matches!(
            huge.windows(100, SR),
            Err(Error::InvalidConfig(_))
        ));
    }
}
