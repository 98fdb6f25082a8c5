//! Streaming band-limited resampling (rubato's synchronous FFT resampler).
//!
//! Samples are pushed as packets are decoded, so memory holds only the output at the target
//! rate, never the whole recording at its original rate (a 384 kHz bat recording would be 12×
//! larger). The resampler's start-up delay is trimmed and the output length is exactly
//! `ceil(n_in · out_rate / in_rate)`, as `rubato::Resampler::process_all_into_buffer` does.
//! rubato reports its delay in whole output frames, so a sub-sample shift (< 1 frame, ≤ 31 µs at
//! 32 kHz) can remain: far below a mel frame (16 ms) and invisible to magnitude features.

use audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Indexing, Resampler, WindowFunction};

use crate::error::{Error, Result};

/// Smallest input block, in frames. One FFT block per chunk gives the sharpest anti-aliasing
/// filter rubato offers for a given chunk (its cutoff narrows with the block size).
const MIN_CHUNK: usize = 2048;

/// Input chunk for `in_rate → out_rate`: rubato's FFT sizes are multiples of
/// `rate / gcd(in, out)`; a power-of-two multiple keeps both FFTs fast (2048 would give 683·3 for
/// 48 kHz → 32 kHz, a prime factor that costs rustfft a Bluestein transform, 4× slower).
fn chunk_for(in_rate: u32, out_rate: u32) -> usize {
    let (mut a, mut b) = (in_rate as usize, out_rate as usize);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    let min_in = in_rate as usize / a;
    MIN_CHUNK.div_ceil(min_in).next_power_of_two() * min_in
}

/// Resamples a mono stream pushed in pieces.
pub struct StreamResampler {
    inner: Option<Fft<f32>>,
    in_rate: u32,
    out_rate: u32,
    pending: Vec<f32>,
    out: Vec<f32>,
    scratch: Vec<f32>,
    to_trim: usize,
    n_in: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("in_rate", &self.in_rate)
            .field("out_rate", &self.out_rate)
            .field("n_in", &self.n_in)
            .finish()
    }
}

fn resample_err(e: impl std::fmt::Display) -> Error {
    Error::InvalidConfig(format!("resampler: {e}"))
}

impl StreamResampler {
    /// A resampler from `in_rate` to `out_rate` (identity when they are equal).
    pub fn new(in_rate: u32, out_rate: u32) -> Result<Self> {
        let inner = if in_rate == out_rate {
            None
        } else {
            let r = Fft::<f32>::new_custom(
                in_rate as usize,
                out_rate as usize,
                chunk_for(in_rate, out_rate),
                1,
                1,
                WindowFunction::BlackmanHarris2,
                FixedSync::Input,
            )
            .map_err(resample_err)?;
            Some(r)
        };
        let (to_trim, scratch_len) = match &inner {
            Some(r) => (r.output_delay(), r.output_frames_max()),
            None => (0, 0),
        };
        Ok(Self {
            inner,
            in_rate,
            out_rate,
            pending: Vec::new(),
            out: Vec::new(),
            scratch: vec![0.0; scratch_len],
            to_trim,
            n_in: 0,
        })
    }

    /// Output frames that `n_in` input frames become.
    pub fn expected_len(&self, n_in: u64) -> u64 {
        (n_in * self.out_rate as u64).div_ceil(self.in_rate as u64)
    }

    /// Reserves room for the output of `n_in` more input frames (when the container says how
    /// long it is), so a long recording is not copied on every growth of the buffer.
    pub fn reserve_for(&mut self, n_in: u64) {
        let n = self.expected_len(n_in).min(1 << 28) as usize;
        self.out.reserve(n.saturating_sub(self.out.len()));
    }

    /// Frames pushed so far (at the input rate).
    pub fn frames_in(&self) -> u64 {
        self.n_in
    }

    /// Output produced so far (delay already trimmed); it only ever grows.
    pub fn output(&self) -> &[f32] {
        &self.out
    }

    /// Frames produced so far (at the output rate).
    pub fn frames_out(&self) -> usize {
        self.out.len()
    }

    /// Feeds more input.
    pub fn push(&mut self, samples: &[f32]) -> Result<()> {
        self.n_in += samples.len() as u64;
        if self.inner.is_none() {
            self.out.extend_from_slice(samples);
            return Ok(());
        }
        self.pending.extend_from_slice(samples);
        let mut start = 0;
        while self.pending.len() - start >= self.chunk_in() {
            let end = start + self.chunk_in();
            self.run_chunk(start, end, None)?;
            start = end;
        }
        self.pending.drain(..start);
        Ok(())
    }

    fn chunk_in(&self) -> usize {
        self.inner.as_ref().map_or(1, |r| r.input_frames_next())
    }

    fn run_chunk(&mut self, start: usize, end: usize, partial: Option<usize>) -> Result<()> {
        let Some(r) = self.inner.as_mut() else {
            return Ok(());
        };
        let n = end - start;
        let input = InterleavedSlice::new(&self.pending[start..end], 1, n).map_err(resample_err)?;
        let out_len = self.scratch.len();
        let mut output =
            InterleavedSlice::new_mut(&mut self.scratch[..], 1, out_len).map_err(resample_err)?;
        let indexing = partial.map(|p| Indexing::new().partial_len(p));
        let (_, produced) = r
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(resample_err)?;
        let skip = self.to_trim.min(produced);
        self.to_trim -= skip;
        self.out.extend_from_slice(&self.scratch[skip..produced]);
        Ok(())
    }

    /// Flushes the tail and returns exactly `expected_len(frames_in())` samples.
    pub fn finish(mut self) -> Result<Vec<f32>> {
        self.take()
    }

    /// [`StreamResampler::finish`] that leaves the resampler as new, for the next segment of a
    /// stream cut into independent pieces (a live stream's windows): the FFT plans and buffers
    /// are kept, where building a fresh resampler per piece would plan them again.
    pub fn take(&mut self) -> Result<Vec<f32>> {
        let expected = self.expected_len(self.n_in) as usize;
        if self.inner.is_some() {
            let chunk = self.chunk_in();
            let tail = self.pending.len();
            self.pending.resize(chunk, 0.0);
            self.run_chunk(0, chunk, Some(tail))?;
            // The filter delay still holds output: feed silence until it is out.
            while self.out.len() < expected {
                self.pending.iter_mut().for_each(|s| *s = 0.0);
                self.run_chunk(0, chunk, Some(0))?;
            }
        }
        self.out.truncate(expected);
        if let Some(r) = self.inner.as_mut() {
            r.reset();
            self.to_trim = r.output_delay();
        }
        self.pending.clear();
        self.n_in = 0;
        Ok(std::mem::take(&mut self.out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, freq: f32, secs: f32) -> Vec<f32> {
        let n = (rate as f32 * secs) as usize;
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * freq * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn a_reused_resampler_matches_a_fresh_one() {
        for (a, b) in [
            (48_000, 32_000),
            (44_100, 32_000),
            (384_000, 32_000),
            (8_000, 32_000),
        ] {
            let mut reused = StreamResampler::new(a, b).expect("resampler");
            for (i, piece) in [sine(a, 440.0, 5.0), sine(a, 3000.0, 2.3)]
                .iter()
                .enumerate()
            {
                let mut fresh = StreamResampler::new(a, b).expect("resampler");
                fresh.push(piece).expect("push");
                // Pushed in odd pieces: chunking must not matter either.
                for c in piece.chunks(1234) {
                    reused.push(c).expect("push");
                }
                let want = fresh.finish().expect("finish");
                let got = reused.take().expect("take");
                assert_eq!(got.len(), want.len(), "{a}->{b} piece {i}");
                let worst = got
                    .iter()
                    .zip(&want)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                assert!(worst < 1e-6, "{a}->{b} piece {i}: {worst}");
            }
        }
    }

    #[test]
    fn identity_when_rates_match() {
        let x = sine(32_000, 440.0, 0.5);
        let mut r = StreamResampler::new(32_000, 32_000).unwrap();
        r.push(&x).unwrap();
        assert_eq!(r.finish().unwrap(), x);
    }

    /// Fits `a·sin(ω(i − d))` to `y[lo..hi]`; returns (amplitude, delay in samples, max residual).
    fn fit_sine(y: &[f32], freq: f64, rate: f64, lo: usize, hi: usize) -> (f64, f64, f64) {
        let w = 2.0 * std::f64::consts::PI * freq / rate;
        let (mut c, mut s) = (0.0, 0.0);
        for (i, &v) in y.iter().enumerate().take(hi).skip(lo) {
            c += v as f64 * (w * i as f64).cos();
            s += v as f64 * (w * i as f64).sin();
        }
        let n = (hi - lo) as f64;
        let (amp, d) = (2.0 * c.hypot(s) / n, (-c).atan2(s) / w);
        let resid = (lo..hi)
            .map(|i| (y[i] as f64 - amp * (w * (i as f64 - d)).sin()).abs())
            .fold(0.0, f64::max);
        (amp, d, resid)
    }

    #[test]
    fn length_amplitude_and_timing_preserved_for_common_rates() {
        for &rate in &[8_000u32, 22_050, 44_100, 48_000, 96_000, 384_000] {
            let x = sine(rate, 1000.0, 1.0);
            let mut r = StreamResampler::new(rate, 32_000).unwrap();
            // Push in uneven pieces, as packets arrive.
            for piece in x.chunks(1237) {
                r.push(piece).unwrap();
            }
            let y = r.finish().unwrap();
            assert_eq!(y.len(), 32_000, "rate {rate}");
            // Away from the edges (where the filter sees the zero padding) the output is the
            // same 1 kHz sine: unit amplitude, start-up delay trimmed to under one sample
            // (rubato rounds its delay to whole output frames: ≤ 31 µs here).
            let (amp, delay, resid) = fit_sine(&y, 1000.0, 32_000.0, 2000, 30_000);
            assert!((amp - 1.0).abs() < 0.01, "rate {rate}: amplitude {amp}");
            assert!(delay.abs() < 1.0, "rate {rate}: delay {delay} samples");
            assert!(resid < 5e-3, "rate {rate}: residual {resid}");
        }
    }

    #[test]
    fn removes_content_above_new_nyquist() {
        // 20 kHz at 48 kHz cannot exist at 32 kHz: it must be filtered, not aliased to 12 kHz.
        let x = sine(48_000, 20_000.0, 1.0);
        let mut r = StreamResampler::new(48_000, 32_000).unwrap();
        r.push(&x).unwrap();
        let y = r.finish().unwrap();
        let rms = (y[2000..30_000].iter().map(|v| v * v).sum::<f32>() / 28_000.0).sqrt();
        // ≥ 50 dB below the input's rms (0.707).
        assert!(rms < 2.3e-3, "aliased energy rms {rms}");
    }
}
