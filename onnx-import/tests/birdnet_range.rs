//! BirdNET's range model through Burn against the original FP16 TFLite model, and as a
//! location filter for a taxonomy.
//!
//! Reference data: `$SILENCIO_BIRDNET_DIR/reference/range_*` written by
//! `onnx-import/scripts/convert_birdnet.py` (TensorFlow's TFLite interpreter, batch 1 per
//! query; outside git, CC BY-NC-SA 4.0). Only built with the `birdnet` feature:
//! `SILENCIO_BIRDNET_DIR=OUT cargo test -p silencio-onnx --features birdnet`.
#![cfg(feature = "birdnet")]
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use silencio_infer::Species;
use silencio_infer::location::{
    FilterMode, LocationFilter, LocationQuery, Occurrence, Place, Week,
};
use silencio_onnx::labels::CLASSES;
use silencio_onnx::range::{BIRDNET_RANGE_THRESHOLD, BirdNetRange};

fn reference_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("SILENCIO_BIRDNET_DIR").expect("SILENCIO_BIRDNET_DIR"))
        .join("reference")
}

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(reference_dir().join(name)).unwrap();
    let f = npyz::NpyFile::new(&bytes[..]).unwrap();
    let shape = f.shape().iter().map(|&d| d as usize).collect();
    (shape, f.into_vec().unwrap())
}

fn query(lat: f64, lon: f64, week: Option<u8>) -> LocationQuery {
    LocationQuery {
        place: Place::new(lat, lon).unwrap(),
        week: week.map(|w| Week::new(w).unwrap()),
    }
}

/// Max |Burn − TFLite| over every query of the reference set. Both run float32 math on the
/// same FP16-rounded weights; sums in another order differ by a few ulps of the logits, so
/// 1e-5 on scores in [0, 1] is tight but safe (ONNX Runtime is within 1e-6 of TFLite).
const TOLERANCE: f32 = 1e-5;

#[test]
fn the_range_model_in_burn_matches_tflite() {
    let dev = silencio_infer::default_device().unwrap();
    let model = BirdNetRange::load(&dev).unwrap();
    let (qs, q) = npy("range_queries.npy");
    let (os, want) = npy("range_occurrence.npy");
    assert_eq!(qs[1], 3);
    assert_eq!(os, vec![qs[0], CLASSES]);
    assert!(qs[0] >= 10, "reference holds {} queries", qs[0]);
    let inputs: Vec<[f32; 3]> = q.chunks(3).map(|r| [r[0], r[1], r[2]]).collect();
    // One batch of all queries: batching must not change a row.
    let got = model.forward(&inputs).unwrap();
    let mut worst = 0f32;
    for (i, row) in got.iter().enumerate() {
        for (a, b) in row.iter().zip(&want[i * CLASSES..(i + 1) * CLASSES]) {
            worst = worst.max((a - b).abs());
        }
    }
    // The same through the filter's own path (one query at a time, week -1 = no week).
    let csv = std::fs::read_to_string(reference_dir().join("range_queries.csv")).unwrap();
    let mut worst_single = 0f32;
    for (i, line) in csv.lines().skip(1).enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let (lat, lon, week): (f64, f64, i32) = (
            f[2].parse().unwrap(),
            f[3].parse().unwrap(),
            f[4].parse().unwrap(),
        );
        let week = u8::try_from(week).ok();
        let got = model.occurrences(&query(lat, lon, week)).unwrap();
        for (a, b) in got.iter().zip(&want[i * CLASSES..(i + 1) * CLASSES]) {
            worst_single = worst_single.max((a - b).abs());
        }
    }
    eprintln!(
        "BirdNET range model, Burn vs TFLite on {} queries: max |Δ| {worst:.3e} (batched), \
         {worst_single:.3e} (one at a time)",
        qs[0]
    );
    assert!(worst <= TOLERANCE, "max |Δ occurrence| {worst}");
    assert!(
        worst_single <= TOLERANCE,
        "max |Δ occurrence| {worst_single}"
    );
}

fn bird(code: &str, scientific: &str) -> Species {
    Species {
        code: code.into(),
        scientific_name: scientific.into(),
        common_name: String::new(),
        class_name: "Aves".into(),
    }
}

#[test]
fn species_are_expected_where_they_live() {
    let dev = silencio_infer::default_device().unwrap();
    // A taxonomy with eBird-style codes: mapped to BirdNET's labels by scientific name.
    let taxonomy = vec![
        bird("grekis", "Pitangus sulphuratus"),
        bird("eurbla", "Turdus merula"),
        bird("notabird", "Nonexistens imaginarius"),
    ];
    let range = BirdNetRange::load(&dev).unwrap().for_species(&taxonomy);
    assert_eq!(range.codes(), vec!["eurbla", "grekis"]);
    let el_silencio = query(6.72, -74.26, Some(10));
    let berlin = query(52.52, 13.40, Some(20));
    let known = |code: &str, q: &LocationQuery| match range.occurrence(code, q) {
        Occurrence::Known(x) => x,
        Occurrence::Unknown => panic!("{code} is unknown"),
    };
    let kiskadee = (known("grekis", &el_silencio), known("grekis", &berlin));
    let blackbird = (known("eurbla", &el_silencio), known("eurbla", &berlin));
    eprintln!(
        "occurrence El Silencio w10 / Berlin w20: Great Kiskadee {:.4} / {:.4}, \
         Eurasian Blackbird {:.4} / {:.4}",
        kiskadee.0, kiskadee.1, blackbird.0, blackbird.1
    );
    let t = BIRDNET_RANGE_THRESHOLD;
    assert!(kiskadee.0 >= t && kiskadee.1 < t, "{kiskadee:?}");
    assert!(blackbird.1 >= t && blackbird.0 < t, "{blackbird:?}");
    // Unknown species pass through.
    assert_eq!(
        range.occurrence("notabird", &el_silencio),
        Occurrence::Unknown
    );
    // All year at El Silencio: the kiskadee stays, the blackbird never comes.
    let all_year = query(6.72, -74.26, None);
    assert!(known("grekis", &all_year) >= t);
    assert!(known("eurbla", &all_year) < t);

    // As a filter at BirdNET-Analyzer's threshold: each place drops the other's bird only.
    let mode = FilterMode::filter(t).unwrap();
    let (w, out) = range.weights(&taxonomy, &el_silencio, mode).unwrap();
    assert_eq!(w, vec![1.0, 0.0, 1.0]);
    assert_eq!(out.removed, vec!["eurbla".to_string()]);
    let (w, out) = range.weights(&taxonomy, &berlin, mode).unwrap();
    assert_eq!(w, vec![0.0, 1.0, 1.0]);
    assert_eq!(out.removed, vec!["grekis".to_string()]);

    // BirdNET's own codes (the `birdnet` member's classes) map without a taxonomy.
    let own = BirdNetRange::load(&dev).unwrap();
    assert_eq!(own.codes().len(), CLASSES);
    assert_eq!(
        own.occurrence("Pitangus sulphuratus", &el_silencio),
        Occurrence::Known(kiskadee.0)
    );
}
