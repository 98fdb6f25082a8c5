//! Fuzz target: `silencio_audio::decode_bytes` must return `Ok` or a typed error for any bytes.
//! Seeds: `crates/audio/fuzz/seeds/decode_bytes/` (heads of the real fixtures of every
//! container, made by `crates/audio/fuzz/make_seeds.sh`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use silencio_audio::{DecodeOptions, decode_bytes};

static QUIET: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    // decode_bytes catches symphonia's internal panics and returns Error::Corrupt; libFuzzer's
    // abort-on-panic hook would flag those caught ones too. Only a panic that escapes our API
    // (libfuzzer-sys aborts on it after the hook) is a finding.
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let opts = DecodeOptions {
        max_duration_s: 120.0,
        max_input_samples: None,
        ..DecodeOptions::default()
    };
    if let Ok(d) = decode_bytes(data.to_vec(), &opts) {
        assert!(d.samples.iter().all(|s| s.is_finite()));
    }
});
