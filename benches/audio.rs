//! Front-end benches: decode, resample, log-mel (names `{backend}/{what}/bs{n}`; the audio
//! front-end runs on the CPU whatever Burn backend the models use). The side-by-side ratio
//! against librosa and torchaudio is `benches/compare/side_by_side.py`.

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use silencio_audio::resample::StreamResampler;
use silencio_audio::{DecodeOptions, FeatureConfig, LogMel, decode_bytes};

fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../datasets/fixtures/audio")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/decode");
    g.sample_size(10);
    let ogg = fixture("soundscape_1min.ogg");
    g.bench_function("ogg_vorbis_60s_32k/bs1", |b| {
        b.iter(|| decode_bytes(black_box(ogg.clone()), &DecodeOptions::default()).expect("decode"))
    });
    let m4a = fixture("crowsetta_forest.m4a");
    g.bench_function("aac_m4a_10s_44k1_stereo_to_32k/bs1", |b| {
        b.iter(|| decode_bytes(black_box(m4a.clone()), &DecodeOptions::default()).expect("decode"))
    });
    g.finish();
}

fn resample(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/resample");
    g.sample_size(10);
    for rate in [44_100u32, 48_000, 384_000] {
        let x: Vec<f32> = (0..rate as usize * 10)
            .map(|i| (i as f32 * 0.01).sin() * 0.5)
            .collect();
        g.bench_function(format!("{rate}_to_32000_10s/bs1"), |b| {
            b.iter(|| {
                let mut r = StreamResampler::new(rate, 32_000).expect("resampler");
                for piece in x.chunks(4096) {
                    r.push(piece).expect("push");
                }
                r.finish().expect("finish")
            })
        });
    }
    g.finish();
}

fn logmel(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/logmel");
    g.sample_size(10);
    let minute = decode_bytes(fixture("soundscape_1min.ogg"), &DecodeOptions::default())
        .expect("decode")
        .samples;
    for recipe in ["birdclef", "panns", "wide"] {
        let lm = LogMel::new(&FeatureConfig::recipe(recipe).expect("recipe")).expect("logmel");
        g.bench_function(format!("{recipe}/bs12"), |b| {
            b.iter(|| lm.features(black_box(&minute)).expect("features"))
        });
        g.bench_function(format!("{recipe}/bs1"), |b| {
            b.iter(|| {
                lm.features(black_box(&minute[..160_000]))
                    .expect("features")
            })
        });
    }
    g.finish();
}

fn frontend(c: &mut Criterion) {
    let mut g = c.benchmark_group("cpu/frontend");
    g.sample_size(10);
    let ogg = fixture("soundscape_1min.ogg");
    let cfg = FeatureConfig::recipe("birdclef").expect("recipe");
    // Decode and log-mel overlapped, as `silencio features` and the server run them.
    g.bench_function("ogg_60s_birdclef_overlapped/bs12", |b| {
        b.iter(|| {
            silencio_audio::features_from_bytes(black_box(ogg.clone()), &cfg, 3600.0).expect("fe")
        })
    });
    // The same work one stage after the other, for comparison.
    let lm = LogMel::new(&cfg).expect("logmel");
    g.bench_function("ogg_60s_birdclef_sequential/bs12", |b| {
        b.iter(|| {
            let d =
                decode_bytes(black_box(ogg.clone()), &DecodeOptions::default()).expect("decode");
            lm.features(&d.samples).expect("features")
        })
    });
    g.finish();
}

criterion_group!(benches, decode, resample, logmel, frontend);
criterion_main!(benches);
