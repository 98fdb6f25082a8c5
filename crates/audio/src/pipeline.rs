//! Decoding and feature extraction overlapped: audio decoding never waits for analysis.
//!
//! Vorbis/MP3/AAC decoding is serial, so on its own it keeps one core busy. Every window that
//! decoding has fully produced is offered to a worker thread at once through a short queue;
//! when the worker lags, the window is simply left for later rather than queued, so decoding
//! never waits and memory stays bounded (at most `QUEUE` window copies) however long the
//! recording. When decoding ends, this thread joins the worker on the queue, then every window
//! not yet done (skipped ones, the zero-padded tail) is computed on the rayon pool. The result is
//! bit-identical to [`LogMel::features`] on the decoded samples (same per-frame arithmetic).

use std::sync::{Mutex, mpsc};

use rayon::prelude::*;

use crate::AudioInfo;
use crate::decode::{Decoded, Progress};
use crate::error::Result;
use crate::mel::{Features, LogMel};

type Job = (usize, Vec<f32>);

/// Windows waiting for the worker at most (each 640 KB for 5 s at 32 kHz).
const QUEUE: usize = 4;

fn drain(lm: &LogMel, jobs: &Mutex<mpsc::Receiver<Job>>) -> Vec<(usize, Vec<f32>)> {
    let mut done = Vec::new();
    loop {
        // The lock is held only to take one job, never while computing it.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => break,
        };
        match job {
            Ok((k, w)) => done.push((k, lm.compute(&w))),
            Err(_) => break,
        }
    }
    done
}

/// Runs `decode` (which reports progress) and the log-mel of its windows concurrently.
pub(crate) fn overlapped(
    lm: &LogMel,
    decode: impl FnOnce(Progress<'_>) -> Result<Decoded>,
) -> Result<(AudioInfo, Features)> {
    let cfg = lm.config();
    let sr = cfg.sample_rate;
    cfg.window.validate(sr)?;
    let win_len = cfg.window.length_samples(sr);
    let hop = cfg.window.hop_samples(sr);
    let (tx, rx) = mpsc::sync_channel::<Job>(QUEUE);
    let jobs = Mutex::new(rx);

    std::thread::scope(|scope| {
        let worker = scope.spawn(|| drain(lm, &jobs));
        // Window k is full, and so certainly in the final list, once k·hop + len samples exist.
        let mut sent = 0usize;
        let mut on_progress = |out: &[f32]| {
            while sent * hop + win_len <= out.len() {
                let start = sent * hop;
                // Full queue (worker busy) or dead worker: the window is left to the final
                // pass, which computes every window not done.
                let _ = tx.try_send((sent, out[start..start + win_len].to_vec()));
                sent += 1;
            }
        };
        let decoded = decode(&mut on_progress);
        drop(tx);
        let mut done = drain(lm, &jobs);
        done.extend(worker.join().unwrap_or_default());
        let d = decoded?;

        let windows = cfg.window.windows(d.samples.len(), sr)?;
        let (mels, frames) = (cfg.n_mels, cfg.frames_for(win_len));
        let mut data = vec![0.0; windows.len() * mels * frames];
        let mut have = vec![false; windows.len()];
        for (k, block) in done {
            if k < windows.len() && block.len() == mels * frames {
                data[k * mels * frames..(k + 1) * mels * frames].copy_from_slice(&block);
                have[k] = true;
            }
        }
        let rest: Vec<(usize, Vec<f32>)> = windows
            .par_iter()
            .enumerate()
            .filter(|(k, _)| !have[*k])
            .map(|(k, w)| (k, lm.compute(&w.extract(&d.samples, win_len))))
            .collect();
        for (k, block) in rest {
            data[k * mels * frames..(k + 1) * mels * frames].copy_from_slice(&block);
        }
        Ok((
            d.info,
            Features {
                windows,
                n_mels: mels,
                n_frames: frames,
                data,
            },
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DecodeOptions, FeatureConfig};

    #[test]
    fn overlapped_equals_decode_then_features() {
        // Real AAC at 44.1 kHz stereo (resampled on the way), 10 s, 2.5 s hop: full windows and
        // a zero-padded tail. Real 1-minute Vorbis at a 2 s hop: 29 windows arrive faster
        // than one worker computes them, so the queue overflows and the final pass fills in.
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/fixtures/audio");
        for (file, hop, recipes) in [
            ("crowsetta_forest.m4a", 2.5, &["birdclef", "panns"][..]),
            ("soundscape_1min.ogg", 2.0, &["birdclef"][..]),
        ] {
            let bytes = std::fs::read(dir.join(file)).unwrap();
            for recipe in recipes {
                let mut cfg = FeatureConfig::recipe(recipe).unwrap();
                cfg.window.hop_s = hop;
                let (_, f) = crate::features_from_bytes(bytes.clone(), &cfg, 120.0).unwrap();
                let d = crate::decode_bytes(bytes.clone(), &DecodeOptions::default()).unwrap();
                let g = LogMel::new(&cfg).unwrap().features(&d.samples).unwrap();
                assert_eq!(f.windows, g.windows, "{file}");
                assert_eq!(f.shape(), g.shape(), "{file}");
                assert!(
                    f.data == g.data,
                    "{file} {recipe}: overlapped result differs"
                );
            }
        }
    }
}
