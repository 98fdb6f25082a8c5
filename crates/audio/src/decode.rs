//! Decoding any recording a user has into mono f32 at the model's sample rate.
//!
//! symphonia demuxes and decodes (WAV 8/16/24/32-bit PCM and 32/64-bit float, OGG Vorbis, FLAC,
//! MP3, AAC in MP4/M4A); channels are averaged packet by packet; rubato resamples as packets
//! arrive. Arbitrary bytes end in `Ok` or a typed [`Error`], never a panic: symphonia's own
//! panics on hostile streams are caught at this boundary and reported as a corrupt stream.

use std::io::{Cursor, Seek, SeekFrom};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use serde::{Deserialize, Serialize};
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use crate::error::{Error, Result};
use crate::mp4::{self, Mp4Trim};
use crate::resample::StreamResampler;

/// Lowest input sample rate we accept (phone voice memos go down to 8 kHz).
pub const MIN_SAMPLE_RATE: u32 = 8_000;
/// Highest input sample rate we accept (ultrasonic bat recorders use up to 384 kHz).
pub const MAX_SAMPLE_RATE: u32 = 384_000;

/// Largest accepted |sample|. Integer formats give [-1, 1]; float formats may exceed full
/// scale a little, but 60 dB above it is garbage, and squares of ~1e19 overflow f32 power.
pub const MAX_SAMPLE_MAGNITUDE: f32 = 1000.0;

/// How to decode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DecodeOptions {
    /// Output sample rate; `None` keeps the original rate (used by `info`).
    pub target_rate: Option<u32>,
    /// Longest accepted recording in seconds; longer input fails with [`Error::TooLong`]
    /// as soon as the limit is crossed, so memory stays bounded.
    pub max_duration_s: f64,
    /// Most samples (frames × channels, at the original rate) decoded; more fail with
    /// [`Error::TooManySamples`]. Decoding and resampling cost grows with rate × channels ×
    /// duration, not with the bytes sent (a few KB of FLAC constant subframes can declare
    /// minutes at 384 kHz), so a server bounds this as well as the duration. `None`: only the
    /// duration bounds it.
    #[serde(default)]
    pub max_input_samples: Option<u64>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            target_rate: Some(32_000),
            // One hour: longer than any BirdCLEF clip or soundscape; servers set it lower.
            max_duration_s: 3600.0,
            max_input_samples: None,
        }
    }
}

/// What the input was, before downmix and resampling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioInfo {
    /// Container short name from symphonia (`wav`, `ogg`, `flac`, `mp3`, `isomp4`).
    pub container: String,
    /// Codec short name (`pcm_s16le`, `vorbis`, `flac`, `mp3`, `aac`, …).
    pub codec: String,
    /// Original sample rate in Hz.
    pub sample_rate: u32,
    /// Original channel count.
    pub channels: usize,
    /// Bits per sample where the codec has one (PCM, FLAC).
    pub bits_per_sample: Option<u32>,
    /// Sample format of the stream where the codec has one (`s16`, `f32`, …).
    pub sample_format: Option<String>,
    /// Decoded frames at the original rate.
    pub frames: u64,
    /// Duration in seconds (`frames / sample_rate`).
    pub duration_s: f64,
    /// Packets that failed to decode and were skipped (0 for a healthy file).
    pub skipped_packets: u64,
}

/// Mono audio at `sample_rate` plus what the original was.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Mono samples in [-1, 1] (mean of the channels).
    pub samples: Vec<f32>,
    /// Rate of `samples` in Hz.
    pub sample_rate: u32,
    /// The original stream.
    pub info: AudioInfo,
}

/// Called during decoding with all output produced so far (at the target rate), so that work on
/// the first windows can start while later packets are still being decoded.
pub type Progress<'a> = &'a mut dyn FnMut(&[f32]);

/// Decodes a file. The extension is used only as a hint; content decides.
pub fn decode_path(path: impl AsRef<Path>, opts: &DecodeOptions) -> Result<Decoded> {
    decode_path_with(path, opts, &mut |_| {})
}

/// [`decode_path`], reporting progress.
pub fn decode_path_with(
    path: impl AsRef<Path>,
    opts: &DecodeOptions,
    progress: Progress<'_>,
) -> Result<Decoded> {
    let path = path.as_ref();
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let trim = mp4::read_trim(&mut file);
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    decode_source(Box::new(file), hint, trim, opts, progress)
}

/// Decodes bytes held in memory (an HTTP upload, a fuzz input).
pub fn decode_bytes(bytes: Vec<u8>, opts: &DecodeOptions) -> Result<Decoded> {
    decode_bytes_with(bytes, opts, &mut |_| {})
}

/// [`decode_bytes`], reporting progress.
pub fn decode_bytes_with(
    bytes: Vec<u8>,
    opts: &DecodeOptions,
    progress: Progress<'_>,
) -> Result<Decoded> {
    if bytes.is_empty() {
        return Err(Error::Empty("zero bytes".into()));
    }
    let mut cursor = Cursor::new(bytes);
    let trim = mp4::read_trim(&mut cursor);
    cursor.set_position(0);
    decode_source(Box::new(cursor), Hint::new(), trim, opts, progress)
}

fn decode_source(
    src: Box<dyn MediaSource>,
    hint: Hint,
    trim: Option<Mp4Trim>,
    opts: &DecodeOptions,
    progress: Progress<'_>,
) -> Result<Decoded> {
    if opts.max_duration_s.is_nan() || opts.max_duration_s <= 0.0 {
        return Err(Error::InvalidConfig("max_duration_s must be > 0".into()));
    }
    // symphonia is safe Rust but can still panic on hostile streams (index or arithmetic
    // overflow checks); the contract of this crate is "no panic on any bytes".
    catch_unwind(AssertUnwindSafe(|| {
        decode_inner(src, hint, trim, opts, progress)
    }))
    .unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "decoder panicked".into());
        Err(Error::Corrupt(format!("decoder failure: {msg}")))
    })
}

fn sym_err(context: &str, e: SymError) -> Error {
    match e {
        SymError::Unsupported(what) => Error::UnsupportedFormat(format!("{context}: {what}")),
        SymError::IoError(io) => Error::Corrupt(format!("{context}: {io}")),
        other => Error::Corrupt(format!("{context}: {other}")),
    }
}

fn decode_inner(
    src: Box<dyn MediaSource>,
    hint: Hint,
    trim: Option<Mp4Trim>,
    opts: &DecodeOptions,
    progress: Progress<'_>,
) -> Result<Decoded> {
    let mss = MediaSourceStream::new(src, Default::default());
    let mut format: Box<dyn FormatReader> = symphonia::default::get_probe()
        .probe(
            &hint,
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| match e {
            SymError::Unsupported(_) => Error::UnsupportedFormat(
                "not a recognised container (supported: WAV, OGG, FLAC, MP3, MP4/M4A)".into(),
            ),
            other => sym_err("probe", other),
        })?;
    let container = format.format_info().short_name.to_string();

    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| Error::UnsupportedCodec(format!("{container}: no audio track")))?;
    let track_id = track.id;
    let n_frames = track.num_frames;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .cloned()
        .ok_or_else(|| Error::UnsupportedCodec(format!("{container}: unknown audio codec")))?;
    check_declared(n_frames, &params, opts)?;
    let mut decoder: Box<dyn AudioDecoder> = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            SymError::Unsupported(what) => Error::UnsupportedCodec(format!("{container}: {what}")),
            other => sym_err("codec", other),
        })?;
    let codec = decoder.codec_info().short_name.to_string();
    // Only AAC in MP4 needs our trim; symphonia applies gapless info for MP3, Vorbis, FLAC.
    let trim = trim.filter(|_| container == "isomp4" && codec == "aac");

    let mut state: Option<Stream> = None;
    let mut skipped = 0u64;
    let mut interleaved: Vec<f32> = Vec::new();
    let mut mono: Vec<f32> = Vec::new();

    loop {
        let packet = match format.next_packet() {
            Ok(Some(p)) => p,
            Ok(None) => break,
            // A truncated upload ends early: keep what decoded (as players do).
            Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(SymError::ResetRequired) => {
                return Err(Error::UnsupportedFormat(
                    "stream changes parameters mid-way (chained streams)".into(),
                ));
            }
            Err(e) => return Err(sym_err("demux", e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buf = match decoder.decode(&packet) {
            Ok(b) => b,
            Err(SymError::DecodeError(_)) | Err(SymError::IoError(_)) => {
                skipped += 1;
                continue;
            }
            Err(SymError::Unsupported(what)) => {
                return Err(Error::UnsupportedCodec(format!("{codec}: {what}")));
            }
            Err(e) => return Err(sym_err("decode", e)),
        };
        let frames = buf.frames();
        if frames == 0 {
            continue;
        }
        let spec_rate = buf.spec().rate();
        let spec_channels = buf.spec().channels().count();
        let st = match &mut state {
            Some(st) => {
                if st.rate != spec_rate || st.channels != spec_channels {
                    return Err(Error::UnsupportedFormat(
                        "sample rate or channel count changes mid-stream".into(),
                    ));
                }
                st
            }
            None => {
                let mut st = Stream::new(spec_rate, spec_channels, trim, opts)?;
                // Bounded by max_duration so a lying header cannot make us allocate more.
                let cap = (opts.max_duration_s * spec_rate as f64) as u64;
                if let Some(n) = n_frames {
                    st.resampler.reserve_for(n.min(cap));
                }
                state.insert(st)
            }
        };
        interleaved.resize(frames * spec_channels, 0.0);
        buf.copy_to_slice_interleaved(&mut interleaved[..]);
        mono.clear();
        downmix(&interleaved, spec_channels, &mut mono);
        let kept = st.trim(mono.len());
        if let Some(bad) = mono[kept.clone()]
            .iter()
            .position(|s| !s.is_finite() || s.abs() > MAX_SAMPLE_MAGNITUDE)
        {
            let (frame, value) = (st.frames + bad as u64, mono[kept.start + bad]);
            return Err(if value.is_finite() {
                Error::OutOfRange {
                    frame,
                    value,
                    limit: MAX_SAMPLE_MAGNITUDE,
                }
            } else {
                Error::NonFinite { frame }
            });
        }
        st.frames += kept.len() as u64;
        if st.frames as f64 > opts.max_duration_s * st.rate as f64 {
            return Err(Error::TooLong {
                max_s: opts.max_duration_s,
            });
        }
        // Every decoded frame costs, trimmed or not.
        st.samples += (frames * spec_channels) as u64;
        if let Some(max) = opts.max_input_samples
            && st.samples > max
        {
            return Err(Error::TooManySamples { max });
        }
        st.resampler.push(&mono[kept])?;
        progress(st.resampler.output());
    }

    let Some(st) = state else {
        return Err(if skipped > 0 {
            Error::Corrupt(format!("no packet of {skipped} could be decoded"))
        } else {
            Error::Empty(format!("{container}/{codec} stream holds no audio frames"))
        });
    };
    let info = AudioInfo {
        container,
        codec,
        sample_rate: st.rate,
        channels: st.channels,
        bits_per_sample: params.bits_per_sample,
        sample_format: params
            .sample_format
            .map(|f| format!("{f:?}").to_lowercase()),
        frames: st.frames,
        duration_s: st.frames as f64 / st.rate as f64,
        skipped_packets: skipped,
    };
    let samples = st.resampler.finish()?;
    Ok(Decoded {
        samples,
        sample_rate: opts.target_rate.unwrap_or(st.rate),
        info,
    })
}

/// Refuses, before any packet is decoded, a stream whose header declares more than the limits
/// allow. Headers can lie or be silent (streamed WAV, OGG without a length), so the decode loop
/// counts as well; this only saves the work for honest headers.
fn check_declared(
    n_frames: Option<u64>,
    params: &symphonia::core::codecs::audio::AudioCodecParameters,
    opts: &DecodeOptions,
) -> Result<()> {
    let (Some(frames), Some(rate)) = (n_frames, params.sample_rate) else {
        return Ok(());
    };
    if rate > 0 && frames as f64 > opts.max_duration_s * rate as f64 {
        return Err(Error::TooLong {
            max_s: opts.max_duration_s,
        });
    }
    let channels = params.channels.as_ref().map_or(1, |c| c.count().max(1)) as u64;
    if let Some(max) = opts.max_input_samples
        && frames.saturating_mul(channels) > max
    {
        return Err(Error::TooManySamples { max });
    }
    Ok(())
}

struct Stream {
    rate: u32,
    channels: usize,
    /// Frames kept so far.
    frames: u64,
    /// Samples decoded so far (all channels, before trimming).
    samples: u64,
    /// Leading frames still to drop (encoder priming).
    skip: u64,
    /// Playable frames in all, where the container says.
    keep: Option<u64>,
    resampler: StreamResampler,
}

impl Stream {
    /// The range of the next `n` decoded frames that is playable audio, after priming and
    /// end padding.
    fn trim(&mut self, n: usize) -> std::ops::Range<usize> {
        let drop = (self.skip.min(n as u64)) as usize;
        self.skip -= drop as u64;
        let mut end = n;
        if let Some(keep) = self.keep {
            let room = keep.saturating_sub(self.frames) as usize;
            end = end.min(drop + room);
        }
        drop..end
    }

    fn new(
        rate: u32,
        channels: usize,
        trim: Option<Mp4Trim>,
        opts: &DecodeOptions,
    ) -> Result<Self> {
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
            return Err(Error::UnsupportedSampleRate {
                rate,
                min: MIN_SAMPLE_RATE,
                max: MAX_SAMPLE_RATE,
            });
        }
        if channels == 0 {
            return Err(Error::Corrupt("zero channels".into()));
        }
        let target = opts.target_rate.unwrap_or(rate);
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&target) {
            return Err(Error::InvalidConfig(format!(
                "target rate {target} Hz outside {MIN_SAMPLE_RATE}..={MAX_SAMPLE_RATE}"
            )));
        }
        let (skip, keep) = match trim {
            Some(t) => {
                let (skip, keep) = t.frames(rate);
                (skip, Some(keep))
            }
            None => (0, None),
        };
        Ok(Self {
            rate,
            channels,
            frames: 0,
            samples: 0,
            skip,
            keep,
            resampler: StreamResampler::new(rate, target)?,
        })
    }
}

/// Averages interleaved channels into `out` (appends one sample per frame).
pub fn downmix(interleaved: &[f32], channels: usize, out: &mut Vec<f32>) {
    if channels == 1 {
        out.extend_from_slice(interleaved);
        return;
    }
    let scale = 1.0 / channels as f32;
    out.extend(
        interleaved
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() * scale),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downmix_is_the_channel_mean() {
        let mut out = Vec::new();
        downmix(&[1.0, 0.0, 0.5, 0.5, -1.0, 1.0], 2, &mut out);
        assert_eq!(out, vec![0.5, 0.5, 0.0]);
        let mut out = Vec::new();
        downmix(&[0.3, 0.6, 0.9], 3, &mut out);
        assert!((out[0] - 0.6).abs() < 1e-7);
    }

    #[test]
    fn empty_and_garbage_bytes_are_typed_errors() {
        let opts = DecodeOptions::default();
        assert!(matches!(decode_bytes(vec![], &opts), Err(Error::Empty(_))));
        let e = decode_bytes(b"this is not audio at all, just text".to_vec(), &opts);
        assert!(matches!(e, Err(Error::UnsupportedFormat(_))), "{e:?}");
    }
}
