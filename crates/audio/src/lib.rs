//! Audio front-end of El Silencio Acoustic Explorer: decode any recording (WAV, OGG Vorbis,
//! FLAC, MP3, AAC/M4A), downmix to mono, resample to 32 kHz, cut 5 s windows and compute the
//! log-mel features the models see. One implementation, shared by training and serving; the
//! [`FeatureConfig`] that parameterises it travels inside model bundles.
#![warn(missing_docs)]

pub mod decode;
pub mod error;
pub mod mel;
pub mod mp4;
pub mod npy;
mod pipeline;
pub mod resample;
pub mod window;

pub use decode::{AudioInfo, DecodeOptions, Decoded, decode_bytes, decode_path};
pub use error::{Error, Result};
pub use mel::{FeatureConfig, Features, LogMel, RECIPES};
pub use window::{Window, WindowConfig};

/// Decode options that resample to the rate `cfg` expects.
pub fn decode_options_for(cfg: &FeatureConfig, max_duration_s: f64) -> DecodeOptions {
    DecodeOptions {
        target_rate: Some(cfg.sample_rate),
        max_duration_s,
        max_input_samples: None,
    }
}

/// The whole front-end on a file: decode at the recipe's rate, window, log-mel; the log-mel of
/// each full window starts on another core as soon as decoding has produced it.
pub fn features_from_path(
    path: impl AsRef<std::path::Path>,
    cfg: &FeatureConfig,
    max_duration_s: f64,
) -> Result<(AudioInfo, Features)> {
    let lm = LogMel::new(cfg)?;
    let opts = decode_options_for(cfg, max_duration_s);
    pipeline::overlapped(&lm, |progress| {
        decode::decode_path_with(path, &opts, progress)
    })
}

/// The whole front-end on bytes in memory (an upload), overlapped as [`features_from_path`].
pub fn features_from_bytes(
    bytes: Vec<u8>,
    cfg: &FeatureConfig,
    max_duration_s: f64,
) -> Result<(AudioInfo, Features)> {
    features_from_bytes_with(bytes, cfg, &decode_options_for(cfg, max_duration_s))
}

/// [`features_from_bytes`] under explicit decode options (a server's sample budget); `opts`
/// must resample to `cfg`'s rate.
pub fn features_from_bytes_with(
    bytes: Vec<u8>,
    cfg: &FeatureConfig,
    opts: &DecodeOptions,
) -> Result<(AudioInfo, Features)> {
    if opts.target_rate != Some(cfg.sample_rate) {
        return Err(Error::InvalidConfig(format!(
            "decode options resample to {:?} Hz, the recipe wants {} Hz",
            opts.target_rate, cfg.sample_rate
        )));
    }
    let lm = LogMel::new(cfg)?;
    pipeline::overlapped(&lm, |progress| {
        decode::decode_bytes_with(bytes, opts, progress)
    })
}
