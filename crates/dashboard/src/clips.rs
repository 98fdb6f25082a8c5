//! Sample clips: for a few recordings of each taxon class, the waveform and the log-mel of one
//! 5 s window, computed by `silencio_audio`'s front-end with the feature configuration of the
//! model in use (so the picture is what the model sees), plus the original file's URL.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Serialize;
use silencio_audio::{FeatureConfig, LogMel};
use silencio_data::TrainRecord;

use crate::dataset::Dataset;

/// Points of the waveform envelope sent to the page (min and max per bucket).
pub const WAVEFORM_POINTS: usize = 500;

/// The clips panel's JSON (`/api/clips`).
#[derive(Debug, Clone, Serialize)]
pub struct ClipsResponse {
    /// The feature configuration used (the registry model's, or the default recipe's).
    pub features: FeatureConfig,
    /// Where it came from (`registry version 3 (production)` or `default recipe`).
    pub features_source: String,
    /// One entry per sample clip, grouped by class.
    pub clips: Vec<Clip>,
}

/// One sample clip.
#[derive(Debug, Clone, Serialize)]
pub struct Clip {
    /// Taxon class.
    pub class_name: String,
    /// Species code.
    pub species: String,
    /// English name.
    pub common_name: String,
    /// Path under `train_audio/` (as in `train.csv`).
    pub filename: String,
    /// URL of the original file on this dashboard.
    pub audio_url: String,
    /// Collection.
    pub collection: String,
    /// Rating.
    pub rating: Option<f64>,
    /// Length of the whole recording in seconds (after decoding).
    pub duration_s: Option<f64>,
    /// The window shown (the clip's loudest by mean log-mel).
    pub window_start_s: f64,
    /// End of the window shown.
    pub window_end_s: f64,
    /// Waveform envelope of the window.
    pub waveform: Option<Waveform>,
    /// Log-mel of the window.
    pub mel: Option<Mel>,
    /// Why the clip could not be shown (decoding error), if so.
    pub error: Option<String>,
}

/// Min and max of the samples in equal time buckets.
#[derive(Debug, Clone, Serialize)]
pub struct Waveform {
    /// Seconds from the window start of each bucket's start.
    pub t: Vec<f32>,
    /// Minimum per bucket.
    pub min: Vec<f32>,
    /// Maximum per bucket.
    pub max: Vec<f32>,
}

/// A log-mel window quantised to bytes for the page's heat map.
#[derive(Debug, Clone, Serialize)]
pub struct Mel {
    /// Mel bands (rows; row 0 is the lowest band).
    pub n_mels: usize,
    /// Frames (columns).
    pub n_frames: usize,
    /// dB value of byte 0.
    pub db_min: f32,
    /// dB value of byte 255.
    pub db_max: f32,
    /// `n_mels × n_frames` bytes, row-major, base64.
    pub data_b64: String,
}

/// Picks up to `per_class` clips per taxon class: species of the class in turn (most recorded
/// first, so each clip shows another species), each species' best-rated recording first.
pub fn pick(dataset: &Dataset, per_class: usize) -> Vec<&TrainRecord> {
    let tax = dataset.taxonomy();
    let mut by_species: BTreeMap<&str, Vec<&TrainRecord>> = BTreeMap::new();
    for r in dataset.records() {
        by_species
            .entry(r.primary_label.as_str())
            .or_default()
            .push(r);
    }
    for v in by_species.values_mut() {
        v.sort_by(|a, b| {
            b.rating
                .unwrap_or(-1.0)
                .total_cmp(&a.rating.unwrap_or(-1.0))
                .then_with(|| a.filename.cmp(&b.filename))
        });
    }
    let mut classes: Vec<&str> = Vec::new();
    for s in tax.species() {
        if !classes.contains(&s.class_name.as_str()) {
            classes.push(&s.class_name);
        }
    }
    let mut out = Vec::new();
    for class in classes {
        let mut species: Vec<&Vec<&TrainRecord>> = tax
            .species()
            .iter()
            .filter(|s| s.class_name == class)
            .filter_map(|s| by_species.get(s.primary_label.as_str()))
            .collect();
        species.sort_by_key(|s| std::cmp::Reverse(s.len()));
        let mut taken = 0;
        'rounds: for round in 0.. {
            let mut any = false;
            for recs in &species {
                if let Some(r) = recs.get(round) {
                    any = true;
                    out.push(*r);
                    taken += 1;
                    if taken == per_class {
                        break 'rounds;
                    }
                }
            }
            if !any {
                break;
            }
        }
    }
    out
}

/// Decodes one clip at the model's rate and computes its log-mel windows; shows the loudest.
pub fn render(dataset: &Dataset, r: &TrainRecord, cfg: &FeatureConfig, lm: &LogMel) -> Clip {
    let common_name = dataset
        .taxonomy()
        .index_of(&r.primary_label)
        .map(|i| dataset.taxonomy().species()[i].common_name.clone())
        .unwrap_or_default();
    let class_name = dataset
        .taxonomy()
        .index_of(&r.primary_label)
        .map(|i| dataset.taxonomy().species()[i].class_name.clone())
        .unwrap_or_default();
    let mut clip = Clip {
        class_name,
        species: r.primary_label.clone(),
        common_name,
        filename: r.filename.clone(),
        audio_url: audio_url(&r.filename),
        collection: r.collection.clone(),
        rating: r.rating,
        duration_s: dataset.durations().get(&r.filename),
        window_start_s: 0.0,
        window_end_s: cfg.window.length_s,
        waveform: None,
        mel: None,
        error: None,
    };
    let Some(path) = dataset.audio_path(&r.filename) else {
        clip.error = Some("not a plain relative path".into());
        return clip;
    };
    // Long BirdCLEF recordings exist; an hour bounds memory (≈ 460 MB at 32 kHz, f32).
    let opts = silencio_audio::decode_options_for(cfg, 3600.0);
    let decoded = match silencio_audio::decode_path(&path, &opts) {
        Ok(d) => d,
        Err(e) => {
            clip.error = Some(format!("{}: {e}", e.kind()));
            return clip;
        }
    };
    clip.duration_s = Some(decoded.info.duration_s);
    let feats = match lm.features_on_this_thread(&decoded.samples) {
        Ok(f) => f,
        Err(e) => {
            clip.error = Some(format!("{}: {e}", e.kind()));
            return clip;
        }
    };
    let n = feats.windows.len();
    let mean = |i: usize| {
        let w = feats.window(i);
        w.iter().map(|&v| v as f64).sum::<f64>() / w.len().max(1) as f64
    };
    let best = (0..n)
        .max_by(|&a, &b| mean(a).total_cmp(&mean(b)))
        .unwrap_or(0);
    let Some(w) = feats.windows.get(best) else {
        clip.error = Some("no window".into());
        return clip;
    };
    clip.window_start_s = w.start_s;
    clip.window_end_s = w.end_s;
    let len = cfg.window.length_samples(cfg.sample_rate);
    let samples = w.extract(&decoded.samples, len);
    clip.waveform = Some(envelope(&samples, cfg.sample_rate, WAVEFORM_POINTS));
    clip.mel = Some(quantise(feats.window(best), feats.n_mels, feats.n_frames));
    clip
}

/// The dashboard URL of a file under `train_audio/` (each path segment percent-encoded).
pub fn audio_url(filename: &str) -> String {
    let mut out = String::from("/audio/");
    for (i, seg) in filename.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        for b in seg.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn envelope(x: &[f32], sample_rate: u32, points: usize) -> Waveform {
    let points = points.clamp(1, x.len().max(1));
    let per = x.len().div_ceil(points).max(1);
    let mut wf = Waveform {
        t: Vec::with_capacity(points),
        min: Vec::with_capacity(points),
        max: Vec::with_capacity(points),
    };
    for (i, chunk) in x.chunks(per).enumerate() {
        wf.t.push((i * per) as f32 / sample_rate as f32);
        wf.min
            .push(chunk.iter().copied().fold(f32::INFINITY, f32::min));
        wf.max
            .push(chunk.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    }
    wf
}

/// dB values to bytes over the window's own range (floored 80 dB below its peak, the usual
/// display range, so that digital silence does not flatten the picture).
fn quantise(db: &[f32], n_mels: usize, n_frames: usize) -> Mel {
    let hi = db.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lo = db
        .iter()
        .copied()
        .fold(f32::INFINITY, f32::min)
        .max(hi - 80.0);
    let span = (hi - lo).max(1e-6);
    let bytes: Vec<u8> = db
        .iter()
        .map(|&v| (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    Mel {
        n_mels,
        n_frames,
        db_min: lo,
        db_max: hi,
        data_b64: base64::engine::general_purpose::STANDARD.encode(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_keeps_extremes() {
        let x: Vec<f32> = (0..1000).map(|i| ((i % 10) as f32 - 5.0) / 5.0).collect();
        let w = envelope(&x, 1000, 100);
        assert_eq!(w.min.len(), 100);
        assert!(w.min.iter().all(|&v| v == -1.0));
        assert!(w.max.iter().all(|&v| v == 0.8));
        assert_eq!(w.t[1], 0.01);
    }

    #[test]
    fn quantise_spans_the_bytes() {
        let db = [-100.0, -60.0, -20.0, 0.0];
        let m = quantise(&db, 2, 2);
        assert_eq!((m.db_min, m.db_max), (-80.0, 0.0));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&m.data_b64)
            .unwrap_or_default();
        assert_eq!(bytes, vec![0, 64, 191, 255]);
    }

    #[test]
    fn audio_urls_are_percent_encoded_per_segment() {
        assert_eq!(audio_url("grekis/XC1.ogg"), "/audio/grekis/XC1.ogg");
        assert_eq!(audio_url("a b/c#?.ogg"), "/audio/a%20b/c%23%3F.ogg");
    }
}
