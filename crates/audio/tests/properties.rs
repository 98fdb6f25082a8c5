//! Property tests of the front-end (proptest): shapes, finiteness, silence at the floor, a
//! sine's peak in the right mel band, +6.02 dB for ×2 gain, window coverage, and no panic on
//! arbitrary or damaged bytes.

mod common;

use proptest::prelude::*;
use silencio_audio::mel::{DB_FLOOR, hz_to_mel, mel_to_hz};
use silencio_audio::{DecodeOptions, FeatureConfig, LogMel, WindowConfig, decode_bytes};

fn recipe() -> impl Strategy<Value = FeatureConfig> {
    prop::sample::select(vec!["birdclef", "panns", "wide"])
        .prop_map(|r| FeatureConfig::recipe(r).expect("recipe"))
}

/// Centre frequencies of the mel bands (librosa's `mel_frequencies(n_mels + 2)[1:-1]`).
fn centres(cfg: &FeatureConfig) -> Vec<f64> {
    let (lo, hi) = (hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max));
    (1..=cfg.n_mels)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (cfg.n_mels + 1) as f64))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn shape_and_finiteness(cfg in recipe(), n in 0usize..400_000, seed in any::<u32>()) {
        let mut s = seed;
        let x: Vec<f32> = (0..n).map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        }).collect();
        let f = LogMel::new(&cfg).unwrap().features(&x).unwrap();
        let windows = cfg.window.windows(n, cfg.sample_rate).unwrap().len();
        prop_assert!(windows >= 1);
        prop_assert_eq!(f.shape(), [windows, cfg.n_mels, cfg.frames_per_window()]);
        prop_assert_eq!(f.data.len(), windows * cfg.n_mels * cfg.frames_per_window());
        prop_assert!(f.data.iter().all(|v| v.is_finite() && *v >= DB_FLOOR));
    }

    #[test]
    fn silence_sits_at_the_floor(cfg in recipe(), n in 1usize..200_000) {
        let f = LogMel::new(&cfg).unwrap().features(&vec![0.0; n]).unwrap();
        prop_assert!(f.data.iter().all(|&v| v == DB_FLOOR));
    }

    #[test]
    fn sine_peaks_in_its_band(cfg in recipe(), frac in 0.05f64..0.95, amp in 0.01f32..1.0) {
        // A frequency well inside the recipe's range, in mel terms.
        let (lo, hi) = (hz_to_mel(cfg.f_min), hz_to_mel(cfg.f_max));
        let hz = mel_to_hz(lo + (hi - lo) * frac);
        let sr = cfg.sample_rate as f64;
        let x: Vec<f32> = (0..cfg.window.length_samples(cfg.sample_rate))
            .map(|i| amp * (2.0 * std::f64::consts::PI * hz * i as f64 / sr).sin() as f32)
            .collect();
        let lm = LogMel::new(&cfg).unwrap();
        let f = lm.features(&x).unwrap();
        let frames = f.n_frames;
        let w = f.window(0);
        let mean_db: Vec<f32> = (0..cfg.n_mels)
            .map(|m| w[m * frames + 2..(m + 1) * frames - 2].iter().sum::<f32>() / (frames - 4) as f32)
            .collect();
        let peak = (0..cfg.n_mels).max_by(|&a, &b| mean_db[a].total_cmp(&mean_db[b])).unwrap();
        let c = centres(&cfg);
        let nearest = (0..cfg.n_mels)
            .min_by(|&a, &b| (c[a] - hz).abs().total_cmp(&(c[b] - hz).abs()))
            .unwrap();
        prop_assert!(peak.abs_diff(nearest) <= 1, "{} Hz: peak band {} (centre {:.0} Hz), nearest {} ({:.0} Hz)",
            hz, peak, c[peak], nearest, c[nearest]);
    }

    #[test]
    fn doubling_gain_adds_6_02_db(cfg in recipe(), seed in any::<u32>()) {
        let mut s = seed;
        let x: Vec<f32> = (0..96_000).map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.4
        }).collect();
        let x2: Vec<f32> = x.iter().map(|v| v * 2.0).collect();
        let lm = LogMel::new(&cfg).unwrap();
        let (a, b) = (lm.features(&x).unwrap(), lm.features(&x2).unwrap());
        let want = 20.0 * 2f32.log10();
        let mut checked = 0;
        for (p, q) in a.data.iter().zip(&b.data) {
            // Away from the floor (the zero padding of the last window sits there).
            if *p > DB_FLOOR + 20.0 {
                prop_assert!((q - p - want).abs() < 2e-3, "{} -> {}", p, q);
                checked += 1;
            }
        }
        prop_assert!(checked > a.data.len() / 4);
    }

    #[test]
    fn windows_cover_the_recording(n in 0usize..2_000_000, hop_frac in 0.2f64..1.0, tail in 0.0f64..5.0) {
        let cfg = WindowConfig { length_s: 5.0, hop_s: 5.0 * hop_frac, min_tail_s: tail };
        let sr = 32_000;
        let w = cfg.windows(n, sr).unwrap();
        let len = cfg.length_samples(sr);
        let hop = (cfg.hop_s * sr as f64).round() as usize;
        prop_assert!(!w.is_empty());
        for (i, win) in w.iter().enumerate() {
            prop_assert_eq!(win.index, i);
            prop_assert_eq!(win.start_sample, i * hop);
            prop_assert!(win.valid_samples <= len);
            prop_assert!((win.end_s - win.start_s - 5.0).abs() < 1e-9);
        }
        let last = w[w.len() - 1];
        let covered = last.start_sample + last.valid_samples;
        if covered < n {
            // Only a short tail below the minimum may be left out.
            let next = last.start_sample + hop;
            prop_assert!(n - next < (tail * sr as f64).round() as usize);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_bytes(bytes, &DecodeOptions::default());
    }

    #[test]
    fn damaged_real_files_never_panic(
        which in 0usize..6,
        cut in 0.0f64..1.0,
        flips in prop::collection::vec((0.0f64..1.0, any::<u8>()), 0..16),
    ) {
        let names = ["crowsetta_forest.ogg", "crowsetta_forest.flac", "crowsetta_forest_32k.mp3",
            "crowsetta_forest_32k.m4a", "wav_s24_48k_stereo.wav", "wav_f64_384k_mono.wav"];
        let mut b = std::fs::read(common::fixture(names[which])).unwrap();
        for (pos, v) in flips {
            let i = (pos * b.len() as f64) as usize % b.len();
            b[i] ^= v;
        }
        b.truncate(((cut * b.len() as f64) as usize).max(1));
        match decode_bytes(b, &DecodeOptions::default()) {
            Ok(d) => prop_assert!(d.samples.iter().all(|s| s.is_finite())),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }
}

#[test]
fn typed_errors_for_bad_input() {
    use silencio_audio::Error;
    let real = std::fs::read(common::fixture("crowsetta_forest.wav")).unwrap();
    // Too long: the limit is a parameter.
    let short = DecodeOptions {
        max_duration_s: 2.0,
        max_input_samples: None,
        ..DecodeOptions::default()
    };
    assert!(matches!(
        decode_bytes(real.clone(), &short),
        Err(Error::TooLong { .. })
    ));
    // A WAV header with no sample data.
    let mut empty = real[..44].to_vec();
    empty[40..44].copy_from_slice(&0u32.to_le_bytes());
    let e = decode_bytes(empty, &DecodeOptions::default());
    assert!(
        matches!(e, Err(Error::Empty(_)) | Err(Error::Corrupt(_))),
        "{e:?}"
    );
    // Not audio.
    assert!(matches!(
        decode_bytes(b"%PDF-1.7 not audio".to_vec(), &DecodeOptions::default()),
        Err(Error::UnsupportedFormat(_))
    ));
}

/// A float WAV holding a NaN, built from the real f32 fixture: typed error, not garbage.
#[test]
fn nan_in_float_wav_is_rejected() {
    let mut b = std::fs::read(common::fixture("wav_f32_22k05_mono.wav")).unwrap();
    let data = b.windows(4).position(|w| w == b"data").unwrap() + 8;
    b[data + 400..data + 404].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = decode_bytes(b, &DecodeOptions::default());
    assert!(
        matches!(e, Err(silencio_audio::Error::NonFinite { frame: 100 })),
        "{e:?}"
    );
}

/// The fuzzer's first finding: a float WAV holding finite but absurd values (1e38) made the
/// features non-finite; it is now a typed error.
#[test]
fn huge_float_samples_are_rejected() {
    let mut b = std::fs::read(common::fixture("wav_f32_22k05_mono.wav")).unwrap();
    let data = b.windows(4).position(|w| w == b"data").unwrap() + 8;
    b[data + 40..data + 44].copy_from_slice(&1e38f32.to_le_bytes());
    let e = decode_bytes(b, &DecodeOptions::default());
    assert!(
        matches!(e, Err(silencio_audio::Error::OutOfRange { frame: 10, .. })),
        "{e:?}"
    );
}

/// A WAV at 4 kHz is outside the supported 8–384 kHz range.
#[test]
fn unsupported_rate_is_typed() {
    let mut b = std::fs::read(common::fixture("wav_u8_8k_mono.wav")).unwrap();
    let fmt = b.windows(4).position(|w| w == b"fmt ").unwrap() + 8;
    b[fmt + 4..fmt + 8].copy_from_slice(&4000u32.to_le_bytes());
    b[fmt + 8..fmt + 12].copy_from_slice(&4000u32.to_le_bytes());
    let e = decode_bytes(b, &DecodeOptions::default());
    assert!(
        matches!(
            e,
            Err(silencio_audio::Error::UnsupportedSampleRate { rate: 4000, .. })
        ),
        "{e:?}"
    );
}

/// The fuzz target's committed seed corpus, run as a regression test on every `cargo test`.
#[test]
fn fuzz_seed_corpus_decodes_without_panic() {
    let dir = common::root().join("crates/audio/fuzz/seeds/decode_bytes");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("seeds") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("seed");
        let _ = decode_bytes(bytes, &DecodeOptions::default());
        n += 1;
    }
    assert!(n >= 10, "seed corpus has {n} files");
}
