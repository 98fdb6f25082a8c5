//! Reading and vetting an upload before the decoder sees it: the body limit (413), the media
//! type (415), and the checks a decoder does not make because it is lenient by design — it
//! plays what it can of a truncated file, as players do, and sniffs the format from content.
//! An API must not answer a half upload or a lying header as if it were the whole recording,
//! so a body whose content is not the declared type, a WAV whose header promises more audio
//! than the body holds, and an OGG stream cut before its end-of-stream page are refused here.

use std::time::Duration;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::{Error, Result};

/// Audio containers the API takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioType {
    /// OGG (Vorbis).
    Ogg,
    /// RIFF WAVE.
    Wav,
    /// MPEG audio (MP3).
    Mpeg,
    /// FLAC.
    Flac,
    /// MP4 / M4A (AAC).
    Mp4,
}

impl AudioType {
    /// The canonical media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Ogg => "audio/ogg",
            Self::Wav => "audio/wav",
            Self::Mpeg => "audio/mpeg",
            Self::Flac => "audio/flac",
            Self::Mp4 => "audio/mp4",
        }
    }
}

/// What a request body is, by its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// Raw audio of a declared type.
    Audio(AudioType),
    /// `application/json` with `audio_base64`.
    Json,
}

/// Media types accepted by `POST /v1/identify`, for error messages and the OpenAPI text.
pub const ACCEPTED: &str = "audio/ogg, audio/wav (audio/x-wav), audio/mpeg, audio/flac, \
                            audio/mp4 (audio/m4a, audio/x-m4a) or application/json";

/// Classifies a `Content-Type` header value (parameters such as `; codecs=vorbis` ignored).
pub fn body_kind(content_type: Option<&str>) -> Result<BodyKind> {
    let Some(ct) = content_type else {
        return Err(Error::UnsupportedMediaType(format!(
            "no Content-Type; send one of {ACCEPTED}"
        )));
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Ok(match essence.as_str() {
        "audio/ogg" | "application/ogg" | "audio/vorbis" => BodyKind::Audio(AudioType::Ogg),
        "audio/wav" | "audio/x-wav" | "audio/wave" | "audio/vnd.wave" => {
            BodyKind::Audio(AudioType::Wav)
        }
        "audio/mpeg" | "audio/mp3" => BodyKind::Audio(AudioType::Mpeg),
        "audio/flac" | "audio/x-flac" => BodyKind::Audio(AudioType::Flac),
        "audio/mp4" | "audio/m4a" | "audio/x-m4a" => BodyKind::Audio(AudioType::Mp4),
        "application/json" => BodyKind::Json,
        _ => {
            return Err(Error::UnsupportedMediaType(format!(
                "{essence:?}; send one of {ACCEPTED}"
            )));
        }
    })
}

/// The container the bytes start like, if any.
pub fn sniff(b: &[u8]) -> Option<AudioType> {
    if b.starts_with(b"OggS") {
        Some(AudioType::Ogg)
    } else if b.len() >= 12
        && (b.starts_with(b"RIFF") || b.starts_with(b"RIFX") || b.starts_with(b"RF64"))
        && &b[8..12] == b"WAVE"
    {
        Some(AudioType::Wav)
    } else if b.starts_with(b"fLaC") {
        Some(AudioType::Flac)
    } else if b.len() >= 8 && &b[4..8] == b"ftyp" {
        Some(AudioType::Mp4)
    } else if b.starts_with(b"ID3")
        // MPEG audio frame sync with a layer (ADTS AAC has layer bits 00).
        || (b.len() >= 2 && b[0] == 0xFF && b[1] & 0xE0 == 0xE0 && b[1] & 0x06 != 0)
    {
        Some(AudioType::Mpeg)
    } else {
        None
    }
}

/// Refuses bodies that are not what they claim or not whole. `declared` is `None` for JSON
/// uploads (any supported content goes).
pub fn vet(bytes: &[u8], declared: Option<AudioType>) -> Result<()> {
    if bytes.is_empty() {
        return Err(silencio_audio::Error::Empty("zero bytes".into()).into());
    }
    let found = sniff(bytes);
    match (declared, found) {
        (Some(d), Some(f)) if d != f => {
            return Err(Error::ContentMismatch(format!(
                "Content-Type says {} but the body is {}",
                d.media_type(),
                f.media_type()
            )));
        }
        (Some(d), None) => {
            return Err(silencio_audio::Error::Corrupt(format!(
                "the body does not start like {} (nor any audio format the API takes)",
                d.media_type()
            ))
            .into());
        }
        _ => {}
    }
    match found {
        Some(AudioType::Wav) => vet_wav(bytes),
        Some(AudioType::Ogg) => vet_ogg(bytes),
        _ => Ok(()),
    }
}

fn corrupt(msg: String) -> Error {
    silencio_audio::Error::Corrupt(msg).into()
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The `data` chunk must fit in the body (a WAV that says 1 GB and holds 10 kB is a truncated
/// upload or a lie). RF64 and streaming writers put 0xFFFFFFFF there: not checkable, allowed.
fn vet_wav(b: &[u8]) -> Result<()> {
    if !b.starts_with(b"RIFF") {
        return Ok(());
    }
    let mut pos = 12usize;
    while let Some(size) = le32(b, pos + 4) {
        let id = &b[pos..pos + 4];
        let body = pos + 8;
        let left = b.len() - body;
        if id == b"data" {
            if size != u32::MAX && size as usize > left {
                return Err(corrupt(format!(
                    "the WAV header declares {size} bytes of audio but the upload holds {left}: \
                     truncated upload or a lying header"
                )));
            }
            return Ok(());
        }
        let next = body
            .checked_add(size as usize)
            .and_then(|p| p.checked_add(size as usize & 1));
        match next {
            Some(p) if p <= b.len() => pos = p,
            _ => {
                return Err(corrupt(format!(
                    "WAV chunk {:?} declares {size} bytes, beyond the end of the upload",
                    String::from_utf8_lossy(id)
                )));
            }
        }
    }
    Err(corrupt("the WAV file has no data chunk".into()))
}

/// Walks the OGG pages: every page must be whole and the last one must end the stream.
fn vet_ogg(b: &[u8]) -> Result<()> {
    let mut pos = 0usize;
    let mut last_flags = None;
    while pos < b.len() {
        if b.len() - pos < 27 {
            return Err(corrupt(format!(
                "truncated OGG upload: {} stray bytes after the last whole page",
                b.len() - pos
            )));
        }
        if &b[pos..pos + 4] != b"OggS" {
            // Not a page boundary: leave the verdict to the decoder.
            return Ok(());
        }
        let n_seg = b[pos + 26] as usize;
        let Some(table) = b.get(pos + 27..pos + 27 + n_seg) else {
            return Err(corrupt("truncated OGG upload: a page header is cut".into()));
        };
        let len = 27 + n_seg + table.iter().map(|&s| s as usize).sum::<usize>();
        if pos + len > b.len() {
            return Err(corrupt(format!(
                "truncated OGG upload: the page at byte {pos} needs {len} bytes, {} are left",
                b.len() - pos
            )));
        }
        last_flags = Some(b[pos + 5]);
        pos += len;
    }
    match last_flags {
        Some(f) if f & 0x04 != 0 => Ok(()),
        Some(_) => Err(corrupt(
            "truncated OGG upload: the stream stops before its end-of-stream page".into(),
        )),
        None => Err(corrupt("an OGG upload without pages".into())),
    }
}

/// How fast a request body must arrive. Bodies are read before a request is admitted to the
/// inference queue, so a slow client holds only its own connection; this bounds even that: a
/// client that stops sending, or dribbles, gets 408 instead of holding its bytes and its task
/// for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadPolicy {
    /// The whole body must have arrived by then.
    pub timeout: Duration,
    /// No rate is asked for before this (connection set-up, a slow first packet).
    pub grace: Duration,
    /// After `grace`, the average rate since the request began must stay at least this.
    pub min_bytes_per_s: u64,
}

impl UploadPolicy {
    /// JSON bodies of the small endpoints (feedback, admin).
    pub const SMALL: Self = Self {
        timeout: Duration::from_secs(30),
        grace: Duration::from_secs(10),
        min_bytes_per_s: 1024,
    };

    /// When the next bytes must have arrived, `received` bytes after `start`: the moment the
    /// average rate would fall below the minimum (never inside the grace period), at the latest
    /// the overall deadline.
    fn due(&self, start: Instant, received: u64) -> Instant {
        let rate_holds = match self.min_bytes_per_s {
            0 => self.timeout,
            r => Duration::from_secs_f64(received as f64 / r as f64).max(self.grace),
        };
        start + rate_holds.min(self.timeout)
    }
}

/// Bytes reserved up front for a body: a declared length is a claim, not bytes that arrived.
const PREALLOC_MAX: u64 = 1 << 20;

/// Reads a body of at most `limit` bytes under `policy`; more is `TooLarge` without reading the
/// rest, too slow is `Timeout`.
pub async fn read_body(
    body: Body,
    limit: u64,
    declared_len: Option<u64>,
    policy: &UploadPolicy,
) -> Result<Bytes> {
    let too_large = |n: u64| {
        Error::TooLarge(format!(
            "request body of {n}+ bytes exceeds the limit of {limit} bytes (--max-body-mb)"
        ))
    };
    if let Some(n) = declared_len
        && n > limit
    {
        return Err(too_large(n));
    }
    let start = Instant::now();
    let mut stream = body.into_data_stream();
    let mut buf =
        BytesMut::with_capacity(declared_len.unwrap_or(0).min(limit).min(PREALLOC_MAX) as usize);
    loop {
        let due = policy.due(start, buf.len() as u64);
        let Ok(next) = tokio::time::timeout_at(due, stream.next()).await else {
            return Err(Error::Timeout(format!(
                "request body too slow: {} bytes in {:.1} s (at least {} bytes/s after {} s, \
                 all within {} s)",
                buf.len(),
                start.elapsed().as_secs_f64(),
                policy.min_bytes_per_s,
                policy.grace.as_secs(),
                policy.timeout.as_secs()
            )));
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| Error::BadRequest(format!("reading the body: {e}")))?;
        if (buf.len() + chunk.len()) as u64 > limit {
            return Err(too_large((buf.len() + chunk.len()) as u64));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_map_and_refuse() {
        assert_eq!(
            body_kind(Some("audio/x-wav")).ok(),
            Some(BodyKind::Audio(AudioType::Wav))
        );
        assert_eq!(
            body_kind(Some("Audio/OGG; codecs=vorbis")).ok(),
            Some(BodyKind::Audio(AudioType::Ogg))
        );
        assert_eq!(
            body_kind(Some("application/json; charset=utf-8")).ok(),
            Some(BodyKind::Json)
        );
        assert!(matches!(
            body_kind(Some("text/plain")),
            Err(Error::UnsupportedMediaType(_))
        ));
        assert!(matches!(
            body_kind(None),
            Err(Error::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn wav_data_longer_than_the_body_is_refused() {
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&36u32.to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&[1, 0, 1, 0, 0x80, 0x3E, 0, 0, 0, 0x7D, 0, 0, 2, 0, 16, 0]);
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&4u32.to_le_bytes());
        wav.extend_from_slice(&[0, 0, 1, 0]);
        assert!(vet(&wav, Some(AudioType::Wav)).is_ok());
        let n = wav.len();
        wav[n - 8..n - 4].copy_from_slice(&(1u32 << 30).to_le_bytes());
        let e = vet(&wav, Some(AudioType::Wav)).unwrap_err();
        assert_eq!(e.kind(), "corrupt_stream");
    }
}
