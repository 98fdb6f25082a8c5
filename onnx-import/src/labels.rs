//! BirdNET's label file and chunking.

use silencio_infer::Species;

use crate::{Error, Result};

/// BirdNET's input rate.
pub const SAMPLE_RATE: u32 = 48_000;
/// BirdNET's chunk: 3 s.
pub const CHUNK_SAMPLES: usize = 144_000;
/// Classes of BirdNET V2.4 GLOBAL 6K.
pub const CLASSES: usize = 6522;

/// Parses `Scientific name_Common name` lines into species (code = scientific name, class
/// unknown: BirdNET's list mixes birds, frogs, insects, mammals and non-animal sounds).
pub fn parse_labels(text: &str, path: &str) -> Result<Vec<Species>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((sci, common)) = line.split_once('_') else {
            return Err(Error::Labels {
                path: path.into(),
                message: format!("line {}: {line:?} is not `Scientific_Common`", i + 1),
            });
        };
        out.push(Species {
            code: sci.to_string(),
            scientific_name: sci.to_string(),
            common_name: common.to_string(),
            class_name: String::new(),
        });
    }
    Ok(out)
}

/// Start samples of consecutive 3 s chunks over `n` samples (BirdNET-Analyzer without
/// overlap): the last, short chunk is kept (zero-padded) when it holds at least 1.5 s, as
/// BirdNET-Analyzer's minimum; a recording shorter than one chunk gives one chunk.
pub fn chunk_starts(n: usize) -> Vec<usize> {
    let mut v = Vec::new();
    let mut s = 0;
    while s < n {
        if s == 0 || n - s >= CHUNK_SAMPLES / 2 {
            v.push(s);
        }
        s += CHUNK_SAMPLES;
    }
    if v.is_empty() {
        v.push(0);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_parse_and_bad_lines_are_reported() {
        let s = parse_labels("Abroscopus albogularis_Rufous-faced Warbler\nZonotrichia albicollis_White-throated Sparrow\n", "x").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].scientific_name, "Zonotrichia albicollis");
        assert_eq!(s[1].common_name, "White-throated Sparrow");
        assert!(parse_labels("no separator here\n", "x").is_err());
    }

    #[test]
    fn chunks_cover_the_recording() {
        assert_eq!(chunk_starts(0), vec![0]);
        assert_eq!(chunk_starts(1000), vec![0]);
        assert_eq!(chunk_starts(CHUNK_SAMPLES * 2), vec![0, CHUNK_SAMPLES]);
        // 1 minute at 48 kHz: 20 chunks.
        assert_eq!(chunk_starts(60 * 48_000).len(), 20);
        // A 1 s tail is dropped, a 2 s tail kept.
        assert_eq!(chunk_starts(CHUNK_SAMPLES + 48_000).len(), 1);
        assert_eq!(chunk_starts(CHUNK_SAMPLES + 96_000).len(), 2);
    }
}
