//! A 16-bit PCM WAV writer: the load generator sends clips cut to exact lengths, and WAV is
//! the one format every decoder reads without an encoder on our side.

/// Encode mono samples in [-1, 1] as a 16-bit PCM WAV file (RIFF, `fmt ` + `data` chunks).
/// Samples outside [-1, 1] (and NaN, as 0) are clipped rather than wrapped.
pub fn encode_wav_mono16(samples: &[f32], sample_rate: u32) -> Vec<u8> {
    const HEADER: usize = 44;
    let data_len = samples.len() * 2;
    // RIFF sizes are u32; 60 s clips are far below that, so saturate instead of failing.
    let data_len32 = u32::try_from(data_len).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(HEADER + data_len);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36u32.saturating_add(data_len32)).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // channels
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate.saturating_mul(2)).to_le_bytes()); // byte rate
    out.extend_from_slice(&2u16.to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len32.to_le_bytes());
    for &s in samples {
        let s = if s.is_nan() { 0.0 } else { s.clamp(-1.0, 1.0) };
        out.extend_from_slice(&((s * 32767.0).round() as i16).to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields_match_the_riff_layout() {
        let w = encode_wav_mono16(&[0.0, 1.0, -1.0, 2.0, f32::NAN], 32_000);
        assert_eq!(w.len(), 44 + 10);
        assert_eq!(&w[0..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(w[4..8].try_into().unwrap()), 36 + 10);
        assert_eq!(&w[8..16], b"WAVEfmt ");
        assert_eq!(u32::from_le_bytes(w[24..28].try_into().unwrap()), 32_000);
        assert_eq!(u32::from_le_bytes(w[28..32].try_into().unwrap()), 64_000);
        assert_eq!(&w[36..40], b"data");
        assert_eq!(u32::from_le_bytes(w[40..44].try_into().unwrap()), 10);
        let pcm: Vec<i16> = w[44..]
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect();
        // Clipped, not wrapped; NaN becomes silence.
        assert_eq!(pcm, vec![0, 32767, -32767, 32767, 0]);
    }
}
