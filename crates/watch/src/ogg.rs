//! A cheap completeness check of Ogg files.
//!
//! The decoder keeps what it can of a truncated upload (as players do), which is right for a
//! one-off request but wrong for a stream of field files: a file cut off while a recorder or a
//! copy was writing it would be scored as a shorter recording and never looked at again. Every
//! complete Ogg stream ends with a whole page carrying the end-of-stream flag, so walking the
//! page headers (no decoding) tells a cut-off file apart.

use std::io::{Read, Seek, SeekFrom};

use crate::{Error, Result};

const CAPTURE: &[u8; 4] = b"OggS";
/// Fixed part of a page header (RFC 3533 §6).
const HEADER: usize = 27;
/// `header_type` bit of the last page of a logical stream.
const EOS: u8 = 0x04;

/// Checks that `bytes`, if they are an Ogg file, end with a complete end-of-stream page.
/// Bytes that are not Ogg pass (the decoder judges them).
pub fn check_complete(bytes: &[u8]) -> Result<()> {
    check_complete_reader(
        &mut std::io::Cursor::new(bytes),
        std::path::Path::new("<bytes>"),
    )
}

/// [`check_complete`] on a file (or any seekable reader), reading only the page headers: a
/// page's body is skipped, never read, so memory stays constant whatever the file's size.
/// `path` names the file in I/O errors.
pub fn check_complete_reader<R: Read + Seek>(r: &mut R, path: &std::path::Path) -> Result<()> {
    let io = |e| Error::io(path, e);
    let len = r.seek(SeekFrom::End(0)).map_err(io)?;
    let mut at = 0u64;
    let mut last_flags = 0u8;
    let mut fixed = [0u8; HEADER];
    let mut table = [0u8; 255];
    let mut first = true;
    while at < len {
        r.seek(SeekFrom::Start(at)).map_err(io)?;
        let fixed_len = (len - at).min(HEADER as u64) as usize;
        r.read_exact(&mut fixed[..fixed_len]).map_err(io)?;
        if !fixed[..fixed_len].starts_with(CAPTURE) {
            // Not Ogg at all, or not a page boundary: corruption the decoder reports better
            // than we can.
            return Ok(());
        }
        if fixed_len < HEADER {
            return Err(cut_off(at, len));
        }
        first = false;
        let n_segments = usize::from(fixed[26]);
        if at + (HEADER + n_segments) as u64 > len {
            return Err(cut_off(at, len));
        }
        r.read_exact(&mut table[..n_segments]).map_err(io)?;
        let body: u64 = table[..n_segments].iter().map(|&s| u64::from(s)).sum();
        let end = at + (HEADER + n_segments) as u64 + body;
        if end > len {
            return Err(cut_off(at, len));
        }
        last_flags = fixed[5];
        at = end;
    }
    if !first && last_flags & EOS == 0 {
        return Err(Error::Truncated(format!(
            "the Ogg stream has no end-of-stream page ({len} bytes)"
        )));
    }
    Ok(())
}

fn cut_off(page: u64, len: u64) -> Error {
    Error::Truncated(format!(
        "the Ogg page at byte {page} runs past the end of the file ({len} bytes)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_ogg() -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../datasets/demo/birdclef/train_soundscapes/DEMO1_20240101_060000.ogg");
        std::fs::read(p).unwrap()
    }

    #[test]
    fn a_real_ogg_is_complete_and_any_cut_is_not() {
        let b = demo_ogg();
        check_complete(&b).unwrap();
        for frac in [0.1, 0.5, 0.9, 0.999] {
            let cut = &b[..(b.len() as f64 * frac) as usize];
            let e = check_complete(cut).unwrap_err();
            assert_eq!(e.kind(), "truncated", "{frac}: {e}");
        }
        // A cut exactly at a page boundary (the last page dropped whole) is caught too.
        let last = b.windows(4).rposition(|w| w == CAPTURE).unwrap();
        assert_eq!(check_complete(&b[..last]).unwrap_err().kind(), "truncated");
    }

    #[test]
    fn non_ogg_bytes_are_left_to_the_decoder() {
        check_complete(b"").unwrap();
        check_complete(b"hello, not audio").unwrap();
        check_complete(b"RIFF\0\0\0\0WAVE").unwrap();
    }
}
