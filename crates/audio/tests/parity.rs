//! Parity of the log-mel front-end with librosa on real clips already at 32 kHz, in every
//! container we decode (WAV, OGG Vorbis, FLAC, MP3, AAC/M4A).
//!
//! Reference arrays: `crates/audio/tests/reference/*.npy`, made by
//! `crates/audio/tests/reference/make_reference.py` (librosa 0.11.0, pinned in the
//! `requirements.txt` beside it; `.ci/run` re-runs it with `--check`). Tolerance from the
//! project's spec: over the bins within 80 dB of the clip's maximum, mean |Δ| ≤ 0.01 dB and
//! max |Δ| ≤ 0.1 dB.

mod common;

use silencio_audio::mel::mel_filterbank;
use silencio_audio::{DecodeOptions, FeatureConfig, LogMel, decode_path};

#[test]
fn filterbanks_equal_librosa() {
    let manifest =
        common::read_json(&common::root().join("crates/audio/tests/reference/manifest.json"));
    let mut checked = 0;
    for a in manifest["arrays"].as_array().expect("arrays") {
        if a["kind"] != "melbank" {
            continue;
        }
        let recipe = a["recipe"].as_str().expect("recipe");
        let (shape, want) = common::read_npy(
            &common::root()
                .join("crates/audio/tests/reference")
                .join(a["file"].as_str().expect("file")),
        );
        let got = mel_filterbank(&FeatureConfig::recipe(recipe).expect("recipe"));
        assert_eq!(shape, vec![got.len(), got[0].len()], "{recipe}");
        let peak = want.iter().cloned().fold(0.0, f64::max);
        for (g, w) in got.iter().flatten().zip(&want) {
            assert!((g - w).abs() <= 1e-9 * peak, "{recipe}: {g} vs {w}");
        }
        checked += 1;
    }
    assert_eq!(checked, 2);
}

#[test]
fn logmel_matches_librosa_on_real_clips_in_all_containers() {
    let dir = common::root().join("crates/audio/tests/reference");
    let manifest = common::read_json(&dir.join("manifest.json"));
    let mut containers = std::collections::BTreeSet::new();
    let mut report = Vec::new();
    for a in manifest["arrays"].as_array().expect("arrays") {
        if a["kind"] != "logmel" {
            continue;
        }
        let recipe = a["recipe"].as_str().expect("recipe");
        let src = common::root().join(a["source"].as_str().expect("source"));
        let cfg = FeatureConfig::recipe(recipe).expect("recipe");
        let d = decode_path(&src, &DecodeOptions::default()).expect("decode");
        assert_eq!(
            d.info.sample_rate,
            32_000,
            "{}: parity clips are already at 32 kHz",
            src.display()
        );
        containers.insert(d.info.container.clone());
        let mut samples = d.samples;
        if let Some(n) = a["source_samples"].as_u64() {
            // The reference cut the decoded audio to this many samples (e.g. first 10 s).
            samples.truncate(n as usize);
        }
        let f = LogMel::new(&cfg)
            .expect("logmel")
            .features(&samples)
            .expect("features");
        let (shape, want) = common::read_npy(&dir.join(a["file"].as_str().expect("file")));
        assert_eq!(shape, f.shape().to_vec(), "{}", a["file"]);

        let peak = want.iter().cloned().fold(f64::MIN, f64::max);
        let (mut sum, mut max, mut n) = (0.0f64, 0.0f64, 0usize);
        for (g, w) in f.data.iter().zip(&want) {
            if *w >= peak - 80.0 {
                let d = (*g as f64 - w).abs();
                sum += d;
                max = max.max(d);
                n += 1;
            }
        }
        let mean = sum / n as f64;
        report.push(format!(
            "{:<45} {:<7} bins {:>6}  mean {:.5} dB  max {:.5} dB",
            a["file"].as_str().unwrap_or(""),
            d.info.container,
            n,
            mean,
            max
        ));
        assert!(n > f.data.len() / 4, "{}: too few bins in range", a["file"]);
        assert!(mean <= 0.01, "{}: mean |Δ| {mean} dB", a["file"]);
        assert!(max <= 0.1, "{}: max |Δ| {max} dB", a["file"]);
    }
    println!("{}", report.join("\n"));
    let want: std::collections::BTreeSet<String> = ["wave", "ogg", "flac", "mp3", "isomp4"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(containers, want, "every container must be covered");
}
