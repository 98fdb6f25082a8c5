//! The one error type of the audio crate.

use std::path::PathBuf;

/// Everything that can go wrong turning bytes into features. Every variant is a user-facing
/// condition (bad file, bad config), never an internal bug: decoding arbitrary bytes must end in
/// one of these, not in a panic.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The container is not one we read (we read WAV, OGG, FLAC, MP3, MP4/M4A).
    #[error("unsupported audio format: {0}")]
    UnsupportedFormat(String),
    /// The container holds no audio track we can decode (e.g. an MP4 without AAC audio).
    #[error("unsupported codec: {0}")]
    UnsupportedCodec(String),
    /// The stream is malformed or truncated beyond repair.
    #[error("corrupt audio stream: {0}")]
    Corrupt(String),
    /// The input decodes to no audio at all.
    #[error("empty audio: {0}")]
    Empty(String),
    /// The recording is longer than the configured maximum.
    #[error("audio too long: more than {max_s} s (limit is a parameter: max_duration_s)")]
    TooLong {
        /// The configured maximum in seconds.
        max_s: f64,
    },
    /// Decoding would cost more than the configured budget: more samples (frames × channels
    /// at the original rate) than `max_input_samples`.
    #[error(
        "audio too costly to decode: more than {max} samples (sample rate × channels × duration; \
         limit is a parameter: max_input_samples)"
    )]
    TooManySamples {
        /// The configured maximum.
        max: u64,
    },
    /// A decoded sample is NaN or infinite (possible in float WAV).
    #[error("audio contains non-finite samples (NaN or infinity) at frame {frame}")]
    NonFinite {
        /// Index of the first offending frame at the original rate.
        frame: u64,
    },
    /// A decoded float sample is far beyond full scale (garbage in a float WAV): it would
    /// overflow the power spectrum.
    #[error("sample {value:e} at frame {frame} is beyond ±{limit} (corrupt float audio)")]
    OutOfRange {
        /// Index of the first offending frame at the original rate.
        frame: u64,
        /// The value found.
        value: f32,
        /// The accepted magnitude.
        limit: f32,
    },
    /// The sample rate is outside the supported range.
    #[error("unsupported sample rate {rate} Hz (supported: {min}..={max} Hz)")]
    UnsupportedSampleRate {
        /// The rate found in the stream.
        rate: u32,
        /// Lowest supported rate.
        min: u32,
        /// Highest supported rate.
        max: u32,
    },
    /// A feature or window configuration that cannot work (e.g. f_max above Nyquist).
    #[error("invalid feature configuration: {0}")]
    InvalidConfig(String),
    /// A recipe name that does not exist.
    #[error("unknown recipe {name:?} (known: {known})")]
    UnknownRecipe {
        /// The name asked for.
        name: String,
        /// Comma-separated known names.
        known: String,
    },
    /// Reading the input file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A stable, machine-readable name for the variant (used as `error_type` by the server
    /// and printed by the CLI).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::UnsupportedFormat(_) => "unsupported_format",
            Error::UnsupportedCodec(_) => "unsupported_codec",
            Error::Corrupt(_) => "corrupt_stream",
            Error::Empty(_) => "empty_audio",
            Error::TooLong { .. } => "too_long",
            Error::TooManySamples { .. } => "too_many_samples",
            Error::NonFinite { .. } => "non_finite_samples",
            Error::OutOfRange { .. } => "sample_out_of_range",
            Error::UnsupportedSampleRate { .. } => "unsupported_sample_rate",
            Error::InvalidConfig(_) => "invalid_config",
            Error::UnknownRecipe { .. } => "unknown_recipe",
            Error::Io { .. } => "io",
        }
    }
}
