//! Decoding cost is bounded by the audio's rate, channels and duration before work is spent:
//! a 9.6 KB FLAC of constant subframes declaring 119 s at 383 987 Hz (45.7 M samples) is
//! refused from its header, and with its length left unstated it is stopped at the budget.

#[path = "common/flac.rs"]
mod flac;

use silencio_audio::decode::decode_bytes_with;
use silencio_audio::{DecodeOptions, Error, decode_bytes};

/// A server's budget: 120 s of 48 kHz stereo.
const BUDGET: u64 = 120 * 96_000;

fn opts(max_input_samples: Option<u64>) -> DecodeOptions {
    DecodeOptions {
        target_rate: Some(32_000),
        max_duration_s: 120.0,
        max_input_samples,
    }
}

#[test]
fn the_writer_makes_valid_flac() {
    let bytes = flac::constant_flac(8_000, 10.0, 1000, true);
    let d = decode_bytes(
        bytes,
        &DecodeOptions {
            target_rate: None,
            ..opts(Some(BUDGET))
        },
    )
    .expect("decodes");
    assert_eq!(d.info.codec, "flac");
    assert_eq!(d.info.sample_rate, 8_000);
    assert_eq!(d.info.frames, 80_000);
    let want = 1000.0 / 32768.0;
    assert!(d.samples.iter().all(|&s| (s - want).abs() < 1e-6));
}

#[test]
fn an_honest_header_over_budget_is_refused_before_any_packet() {
    let bytes = flac::constant_flac(383_987, 119.0, 1000, true);
    assert!(bytes.len() < 12_000, "{} bytes", bytes.len());
    let mut calls = 0;
    let e = decode_bytes_with(bytes.clone(), &opts(Some(BUDGET)), &mut |_| calls += 1)
        .expect_err("over budget");
    assert!(matches!(e, Error::TooManySamples { max: BUDGET }), "{e}");
    assert_eq!(e.kind(), "too_many_samples");
    assert_eq!(calls, 0, "packets were decoded before the refusal");
    // The duration limit is checked from the header too.
    let mut calls = 0;
    let e = decode_bytes_with(
        bytes,
        &DecodeOptions {
            max_duration_s: 60.0,
            ..opts(None)
        },
        &mut |_| calls += 1,
    )
    .expect_err("too long");
    assert!(matches!(e, Error::TooLong { .. }), "{e}");
    assert_eq!(calls, 0);
}

#[test]
fn a_silent_header_is_stopped_at_the_budget() {
    let bytes = flac::constant_flac(383_987, 119.0, 1000, false);
    let mut produced = 0;
    let e = decode_bytes_with(bytes, &opts(Some(BUDGET)), &mut |out| produced = out.len())
        .expect_err("over budget");
    assert!(matches!(e, Error::TooManySamples { .. }), "{e}");
    // What was resampled before the stop: at most the budget (plus one block) at 32 kHz.
    let bound = ((BUDGET + 65_535) as f64 * 32_000.0 / 383_987.0) as usize;
    assert!(produced > 0 && produced <= bound, "{produced} > {bound}");
    // The same stream within a larger budget decodes in full: the limit is what stopped it.
    let all = flac::constant_flac(383_987, 10.0, 1000, false);
    let d = decode_bytes(all, &opts(Some(BUDGET))).expect("within budget");
    assert_eq!(d.info.frames, 3_839_870);
}
