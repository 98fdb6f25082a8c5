//! The audio the virtual users upload: real recordings cut or looped to exactly 5 s (tour
//! guide, mobile) and 60 s (power user), sent as 16-bit PCM WAV built in memory.
//!
//! By default three short OGG recordings from the demo dataset are embedded (about 52 KB;
//! MIT / BSD-3-Clause, see datasets/demo/birdclef/train.csv), so `silencio loadgen` runs with
//! no data at hand. `--clips DIR` takes the user's own files instead.

use std::io::Cursor;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use bytes::Bytes;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use crate::error::{Error, Result};
use crate::wav::encode_wav_mono16;

/// Length of a tour-guide / mobile clip in seconds.
pub const SHORT_S: f64 = 5.0;
/// Length of a power-user upload in seconds.
pub const LONG_S: f64 = 60.0;
/// Most files taken from `--clips` (first by name): each becomes a 60 s WAV of a few MB.
pub const MAX_DIR_CLIPS: usize = 16;

/// Real recordings from the demo dataset (32 kHz mono OGG Vorbis), embedded in the binary.
const EMBEDDED: &[(&str, &[u8])] = &[
    (
        "comyel/DEMO000002.ogg",
        include_bytes!("../../../datasets/demo/birdclef/train_audio/comyel/DEMO000002.ogg"),
    ),
    (
        "gretit1/DEMO000034.ogg",
        include_bytes!("../../../datasets/demo/birdclef/train_audio/gretit1/DEMO000034.ogg"),
    ),
    (
        "zebrafinch/DEMO000012.ogg",
        include_bytes!("../../../datasets/demo/birdclef/train_audio/zebrafinch/DEMO000012.ogg"),
    ),
];

/// One upload body, ready to send.
#[derive(Debug, Clone)]
pub struct Clip {
    /// Where its audio came from (e.g. `comyel/DEMO000002.ogg`).
    pub name: String,
    /// The encoded file.
    pub body: Bytes,
    /// Its `Content-Type`.
    pub content_type: &'static str,
    /// Audio length in seconds.
    pub audio_s: f64,
}

/// The clips of every mode.
#[derive(Debug, Clone)]
pub struct ClipSet {
    /// Exactly [`SHORT_S`] seconds each.
    pub short: Vec<Clip>,
    /// Exactly [`LONG_S`] seconds each.
    pub long: Vec<Clip>,
}

/// Decoded mono audio.
#[derive(Debug, Clone)]
pub struct Source {
    /// File or embedded name.
    pub name: String,
    /// Mono samples (channel mean).
    pub samples: Vec<f32>,
    /// Sample rate in Hz.
    pub rate: u32,
}

impl ClipSet {
    /// The embedded demo recordings.
    pub fn embedded() -> Result<Self> {
        let sources = EMBEDDED
            .iter()
            .map(|(name, bytes)| decode(name, bytes.to_vec(), Some("ogg"), LONG_S))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self::from_sources(&sources))
    }

    /// The first [`MAX_DIR_CLIPS`] audio files (by name) of `dir`. A file that does not decode
    /// is an error naming it: a load test on a silently smaller set would mislead.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let rd = std::fs::read_dir(dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        let mut files = Vec::new();
        for entry in rd {
            let p = entry
                .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
                .path();
            let ext = p
                .extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase);
            if p.is_file()
                && ext
                    .as_deref()
                    .is_some_and(|e| ["wav", "ogg", "flac", "mp3", "m4a", "mp4"].contains(&e))
            {
                files.push((p, ext));
            }
        }
        files.sort();
        files.truncate(MAX_DIR_CLIPS);
        if files.is_empty() {
            return Err(Error::NoClips(dir.to_path_buf()));
        }
        let mut sources = Vec::with_capacity(files.len());
        for (p, ext) in files {
            let bytes =
                std::fs::read(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            sources.push(decode(&name, bytes, ext.as_deref(), LONG_S)?);
        }
        Ok(Self::from_sources(&sources))
    }

    /// Short clips: each source cut or looped to 5 s. Long clips: the sources one after the
    /// other (rotated, so each long clip starts with a different one) until 60 s.
    pub fn from_sources(sources: &[Source]) -> Self {
        let short = sources
            .iter()
            .map(|s| clip(&s.name, &fit(&s.samples, frames(SHORT_S, s.rate)), s.rate))
            .collect();
        let long = (0..sources.len())
            .map(|i| {
                let first = &sources[i];
                // Only sources of the same rate can be joined into one stream.
                let ring: Vec<&[f32]> = sources[i..]
                    .iter()
                    .chain(&sources[..i])
                    .filter(|s| s.rate == first.rate)
                    .map(|s| s.samples.as_slice())
                    .collect();
                let joined = concat_cycle(&ring, frames(LONG_S, first.rate));
                clip(&first.name, &joined, first.rate)
            })
            .collect();
        Self { short, long }
    }
}

fn frames(seconds: f64, rate: u32) -> usize {
    (seconds * rate as f64).round() as usize
}

fn clip(name: &str, samples: &[f32], rate: u32) -> Clip {
    Clip {
        name: name.to_string(),
        audio_s: samples.len() as f64 / rate as f64,
        body: Bytes::from(encode_wav_mono16(samples, rate)),
        content_type: "audio/wav",
    }
}

/// `samples` cut to `n` frames, or repeated until `n` frames when shorter.
pub fn fit(samples: &[f32], n: usize) -> Vec<f32> {
    concat_cycle(&[samples], n)
}

/// The parts one after the other, cycling, until exactly `n` frames (silence if all are empty).
pub fn concat_cycle(parts: &[&[f32]], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n);
    if parts.iter().all(|p| p.is_empty()) {
        out.resize(n, 0.0);
        return out;
    }
    'fill: loop {
        for p in parts {
            let take = p.len().min(n - out.len());
            out.extend_from_slice(&p[..take]);
            if out.len() == n {
                break 'fill;
            }
        }
    }
    out
}

/// Decode the first `max_s` seconds of a recording to mono. symphonia can panic on hostile
/// files; that is caught and reported as a bad clip.
pub fn decode(name: &str, bytes: Vec<u8>, ext: Option<&str>, max_s: f64) -> Result<Source> {
    let bad = |message: String| Error::Clip {
        name: name.to_string(),
        message,
    };
    let out = catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, ext, max_s)))
        .unwrap_or_else(|_| Err("decoder panicked".into()))
        .map_err(bad)?;
    let (samples, rate) = out;
    if samples.is_empty() {
        return Err(bad("no audio frames".into()));
    }
    Ok(Source {
        name: name.to_string(),
        samples,
        rate,
    })
}

fn decode_inner(
    bytes: Vec<u8>,
    ext: Option<&str>,
    max_s: f64,
) -> std::result::Result<(Vec<f32>, u32), String> {
    let mut hint = Hint::new();
    if let Some(e) = ext {
        hint.with_extension(e);
    }
    let mss = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| format!("not a recognised audio file: {e}"))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or("no audio track")?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .cloned()
        .ok_or("unknown audio codec")?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| format!("codec: {e}"))?;
    let mut rate = 0u32;
    let mut mono: Vec<f32> = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(format!("demux: {e}")),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(b) => b,
            Err(SymError::DecodeError(_)) => continue,
            Err(e) => return Err(format!("decode: {e}")),
        };
        let n = buf.frames();
        if n == 0 {
            continue;
        }
        let ch = buf.spec().channels().count().max(1);
        if rate == 0 {
            rate = buf.spec().rate();
            if !(8_000..=384_000).contains(&rate) {
                return Err(format!("sample rate {rate} Hz out of 8-384 kHz"));
            }
        } else if rate != buf.spec().rate() {
            return Err("sample rate changes mid-stream".into());
        }
        interleaved.resize(n * ch, 0.0);
        buf.copy_to_slice_interleaved(&mut interleaved[..]);
        let scale = 1.0 / ch as f32;
        mono.extend(
            interleaved
                .chunks_exact(ch)
                .map(|f| f.iter().sum::<f32>() * scale),
        );
        if mono.len() as f64 >= max_s * rate as f64 {
            mono.truncate(frames(max_s, rate));
            break;
        }
    }
    Ok((mono, rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_cuts_and_loops_to_the_exact_length() {
        assert_eq!(fit(&[1.0, 2.0, 3.0], 2), vec![1.0, 2.0]);
        assert_eq!(fit(&[1.0, 2.0], 5), vec![1.0, 2.0, 1.0, 2.0, 1.0]);
        assert_eq!(fit(&[], 3), vec![0.0; 3]);
        assert_eq!(
            concat_cycle(&[&[1.0], &[], &[2.0, 3.0]], 6),
            vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
        );
    }

    #[test]
    fn embedded_clips_are_exactly_5_and_60_seconds_of_real_audio() {
        let set = ClipSet::embedded().unwrap();
        assert_eq!(set.short.len(), EMBEDDED.len());
        assert_eq!(set.long.len(), EMBEDDED.len());
        for c in &set.short {
            assert_eq!(c.audio_s, 5.0);
            assert_eq!(c.body.len(), 44 + 2 * 5 * 32_000);
        }
        for c in &set.long {
            assert_eq!(c.audio_s, 60.0);
            assert_eq!(c.body.len(), 44 + 2 * 60 * 32_000);
        }
        // Real audio, not silence: some PCM sample is loud.
        let pcm = &set.short[0].body[44..];
        let peak = pcm
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]).unsigned_abs())
            .max()
            .unwrap();
        assert!(peak > 1000, "peak {peak}");
    }

    #[test]
    fn garbage_is_a_typed_clip_error() {
        let e = decode("x.ogg", b"not audio".to_vec(), Some("ogg"), 5.0).unwrap_err();
        assert_eq!(e.kind(), "bad_clip");
        assert!(e.to_string().contains("x.ogg"));
    }
}
