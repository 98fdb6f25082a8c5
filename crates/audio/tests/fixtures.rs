//! Decoding every committed real fixture (`datasets/fixtures/audio/expected.json`, written by
//! `datasets/fixtures/make_fixtures.sh` from ffprobe): container, codec, rate, channels, bit
//! depth and length, then downmix and resampling on real multi-channel and odd-rate files.

mod common;

use silencio_audio::{DecodeOptions, decode_path};

fn original() -> DecodeOptions {
    DecodeOptions {
        target_rate: None,
        ..DecodeOptions::default()
    }
}

#[test]
fn every_fixture_decodes_with_ffprobe_facts() {
    let expected = common::read_json(&common::fixture("expected.json"));
    let entries = expected.as_array().expect("list");
    assert!(entries.len() >= 16);
    let mut formats = std::collections::BTreeSet::new();
    for e in entries {
        let name = e["file"].as_str().expect("file");
        let path = common::fixture(name);
        let d = decode_path(&path, &original()).unwrap_or_else(|err| panic!("{name}: {err}"));
        let i = &d.info;
        let container = match e["container"].as_str().expect("container") {
            "wav" => "wave",
            "mp4" => "isomp4",
            other => other,
        };
        assert_eq!(i.container, container, "{name}");
        formats.insert(format!(
            "{}/{}",
            i.container,
            e["sample_format"].as_str().unwrap_or("-")
        ));
        assert_eq!(
            i.sample_rate as u64,
            e["sample_rate"].as_u64().expect("rate"),
            "{name}"
        );
        assert_eq!(
            i.channels as u64,
            e["channels"].as_u64().expect("channels"),
            "{name}"
        );
        // 8/16/24/32-bit integer PCM and FLAC report their depth (float WAV has none).
        let integer =
            i.codec.starts_with("pcm_s") || i.codec.starts_with("pcm_u") || i.codec == "flac";
        if let (Some(bits), true) = (e["bits"].as_u64(), integer) {
            assert_eq!(i.bits_per_sample.map(u64::from), Some(bits), "{name}");
        }
        match e["frames"].as_u64() {
            Some(f) => assert_eq!(i.frames, f, "{name}: exact length"),
            // Lossy codecs: ffmpeg's count differs by how much end padding it keeps
            // (at most one codec frame).
            None => {
                let f = e["frames_ffmpeg"].as_u64().expect("frames_ffmpeg");
                assert!(
                    i.frames.abs_diff(f) <= 2048,
                    "{name}: {} vs ffmpeg {f}",
                    i.frames
                );
            }
        }
        let dur = e["duration_s"].as_f64().expect("duration");
        assert!(
            (i.duration_s - dur).abs() < 0.06,
            "{name}: {} vs {dur}",
            i.duration_s
        );
        assert_eq!(i.skipped_packets, 0, "{name}");
        assert!(
            d.samples
                .iter()
                .all(|s| s.is_finite() && s.abs() <= 1.0 + 1e-6),
            "{name}"
        );

        // The same file at 32 kHz: exactly ceil(frames · 32000 / rate) samples.
        let r = decode_path(&path, &DecodeOptions::default()).expect("resampled");
        assert_eq!(r.sample_rate, 32_000);
        let want = (i.frames * 32_000).div_ceil(i.sample_rate as u64);
        assert_eq!(r.samples.len() as u64, want, "{name}");
    }
    for f in [
        "wave/u8", "wave/s16", "wave/s24", "wave/s32", "wave/f32", "wave/f64",
    ] {
        assert!(formats.contains(f), "missing WAV layout {f}: {formats:?}");
    }
    for c in ["ogg", "flac", "mp3", "isomp4"] {
        assert!(formats.iter().any(|f| f.starts_with(c)), "missing {c}");
    }
}

/// `wav_s16_32k_5ch.wav` holds `x·16·g[c]` in channel c, with x the crowsetta clip from
/// sample 176000 and g = [1, 0.5, 0.25, -1, 0.125] (see `make_fixtures.sh`): its downmix
/// is `x·16·mean(g)`.
#[test]
fn five_channel_downmix_is_the_channel_mean() {
    let src = decode_path(common::fixture("crowsetta_forest.wav"), &original()).expect("src");
    let five = decode_path(common::fixture("wav_s16_32k_5ch.wav"), &original()).expect("5ch");
    assert_eq!(five.info.channels, 5);
    let g_mean = (1.0 + 0.5 + 0.25 - 1.0 + 0.125) / 5.0;
    let worst = five
        .samples
        .iter()
        .enumerate()
        .map(|(k, &y)| (y - src.samples[176_000 + k] * 16.0 * g_mean).abs())
        .fold(0.0f32, f32::max);
    // Each channel was rounded to 16 bits once: error ≤ half an LSB.
    assert!(worst <= 0.5 / 32768.0 + 1e-7, "worst {worst}");
}

/// The 44.1 kHz stereo file, resampled to 32 kHz, carries the same calls as the 32 kHz
/// original at the same times: its log-mel correlates strongly with the source's.
#[test]
fn resampled_stereo_matches_the_32k_source_spectrally() {
    use silencio_audio::{FeatureConfig, LogMel};
    let cfg = FeatureConfig::recipe("birdclef").expect("recipe");
    let lm = LogMel::new(&cfg).expect("logmel");
    let src = decode_path(
        common::fixture("crowsetta_forest.wav"),
        &DecodeOptions::default(),
    )
    .expect("src");
    let st = decode_path(
        common::fixture("wav_s16_44k1_stereo.wav"),
        &DecodeOptions::default(),
    )
    .expect("stereo");
    // The stereo variant is 1 s from 5.5 s, left = 16x, right = 8x: mean gain 12.
    let a = lm.compute(&st.samples);
    let b = lm.compute(
        &src.samples[176_000..176_000 + st.samples.len()]
            .iter()
            .map(|v| v * 12.0)
            .collect::<Vec<_>>(),
    );
    assert_eq!(a.len(), b.len());
    // Below 14 kHz (mel bands up to ~120) and away from the 1 s clip's edges.
    let frames = cfg.frames_for(st.samples.len());
    let mut diffs = Vec::new();
    for m in 0..115 {
        for t in 4..frames - 4 {
            let (x, y) = (a[m * frames + t], b[m * frames + t]);
            if y > -60.0 {
                diffs.push((x - y).abs());
            }
        }
    }
    diffs.sort_by(f32::total_cmp);
    let median = diffs[diffs.len() / 2];
    assert!(diffs.len() > 1000, "{}", diffs.len());
    assert!(median < 0.05, "median |Δ| {median} dB after 44.1k→32k");
}
