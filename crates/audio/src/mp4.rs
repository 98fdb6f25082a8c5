//! Gapless trimming for AAC in MP4/M4A, which symphonia's MP4 reader does not apply.
//!
//! AAC encoders prepend priming samples (1024 for ffmpeg's and Apple's encoders) and pad the
//! last frame. The MP4 says how much through its edit list (`elst`: where presentation starts,
//! in media time) and the media header (`mdhd`: total media duration). Without the trim every
//! window would be shifted by ~32 ms and the features would not line up with other decoders
//! (ffmpeg, and so librosa, applies the edit list).

use std::io::{Read, Seek, SeekFrom};

/// What the MP4's first sound track says about playable samples, in its media timescale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mp4Trim {
    /// Media timescale (ticks per second, usually the sample rate).
    pub timescale: u32,
    /// Leading ticks to skip (the first edit's media_time).
    pub skip: u64,
    /// Total media duration in ticks (from `mdhd`), including the skipped part.
    pub duration: u64,
}

impl Mp4Trim {
    /// Frames to skip and frames to keep at `sample_rate`.
    pub fn frames(&self, sample_rate: u32) -> (u64, u64) {
        let conv =
            |t: u64| (t as u128 * sample_rate as u128 / self.timescale.max(1) as u128) as u64;
        (
            conv(self.skip),
            conv(self.duration.saturating_sub(self.skip)),
        )
    }
}

const MAX_DEPTH: usize = 8;

fn read_exact<R: Read>(r: &mut R, n: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; n];
    r.read_exact(&mut b).ok()?;
    Some(b)
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Child boxes of `[start, end)`: (type, payload start, payload end).
fn children<R: Read + Seek>(r: &mut R, start: u64, end: u64) -> Option<Vec<([u8; 4], u64, u64)>> {
    let mut out = Vec::new();
    let mut pos = start;
    while pos.checked_add(8)? <= end && out.len() < 4096 {
        r.seek(SeekFrom::Start(pos)).ok()?;
        let h = read_exact(r, 8)?;
        let size32 = be_u32(&h, 0)? as u64;
        let kind: [u8; 4] = h[4..8].try_into().ok()?;
        let (size, header) = match size32 {
            0 => (end - pos, 8),
            1 => (be_u64(&read_exact(r, 8)?, 0)?, 16),
            s => (s, 8),
        };
        if size < header || pos.checked_add(size)? > end {
            return None;
        }
        out.push((kind, pos + header, pos + size));
        pos += size;
    }
    Some(out)
}

fn payload<R: Read + Seek>(r: &mut R, start: u64, end: u64) -> Option<Vec<u8>> {
    let n = usize::try_from(end - start).ok()?;
    if n > 1 << 20 {
        return None;
    }
    r.seek(SeekFrom::Start(start)).ok()?;
    read_exact(r, n)
}

fn find<'a>(boxes: &'a [([u8; 4], u64, u64)], kind: &[u8; 4]) -> Option<&'a ([u8; 4], u64, u64)> {
    boxes.iter().find(|b| &b.0 == kind)
}

/// Reads the trim of the first sound track; `None` when the file is not an MP4, has no edit
/// list, or anything about it is malformed (then nothing is trimmed).
pub fn read_trim<R: Read + Seek>(r: &mut R) -> Option<Mp4Trim> {
    let len = r.seek(SeekFrom::End(0)).ok()?;
    let top = children(r, 0, len)?;
    let moov = find(&top, b"moov")?;
    let traks = children(r, moov.1, moov.2)?;
    for (_, s, e) in traks.iter().filter(|b| &b.0 == b"trak").take(MAX_DEPTH * 8) {
        let trak = children(r, *s, *e)?;
        let Some(mdia) = find(&trak, b"mdia") else {
            continue;
        };
        let mdia = children(r, mdia.1, mdia.2)?;
        let hdlr = payload(r, find(&mdia, b"hdlr")?.1, find(&mdia, b"hdlr")?.2)?;
        if hdlr.get(8..12)? != b"soun" {
            continue;
        }
        let mdhd_box = find(&mdia, b"mdhd")?;
        let mdhd = payload(r, mdhd_box.1, mdhd_box.2)?;
        let (timescale, duration) = match mdhd.first()? {
            0 => (be_u32(&mdhd, 12)?, be_u32(&mdhd, 16)? as u64),
            1 => (be_u32(&mdhd, 20)?, be_u64(&mdhd, 24)?),
            _ => return None,
        };
        let edts = find(&trak, b"edts")?;
        let edts = children(r, edts.1, edts.2)?;
        let elst_box = find(&edts, b"elst")?;
        let elst = payload(r, elst_box.1, elst_box.2)?;
        let version = *elst.first()?;
        let count = be_u32(&elst, 4)? as usize;
        let entry = if version == 1 { 20 } else { 12 };
        // The first edit with a media time (-1 marks an empty edit, i.e. inserted silence).
        let skip = (0..count.min(64)).find_map(|i| {
            let at = 8 + i * entry;
            let t = if version == 1 {
                be_u64(&elst, at + 8)? as i64
            } else {
                be_u32(&elst, at + 4)? as i32 as i64
            };
            (t >= 0).then_some(t as u64)
        })?;
        if timescale == 0 || skip > duration {
            return None;
        }
        return Some(Mp4Trim {
            timescale,
            skip,
            duration,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn not_mp4_or_truncated_gives_none() {
        assert_eq!(
            read_trim(&mut Cursor::new(b"RIFF....WAVEfmt ".to_vec())),
            None
        );
        assert_eq!(read_trim(&mut Cursor::new(vec![0u8; 3])), None);
        // A box claiming to be larger than the file.
        let mut b = vec![0, 0, 0, 200];
        b.extend_from_slice(b"moov");
        assert_eq!(read_trim(&mut Cursor::new(b)), None);
    }
}
