//! The location filter learnt from a `train.csv`: a synthetic one written here (species A only
//! around El Silencio, B only in Europe, C without coordinates), its held-out check, and the
//! committed demo set, whose rows have no coordinates and so must filter nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use silencio_infer::location::{DEFAULT_THRESHOLD, Occurrence, holdout_check};
use silencio_infer::{
    FilterMode, LocationFilter, LocationQuery, OccurrenceConfig, OccurrenceModel, Place, Species,
};
use trainer::location::{holdout_train_csv, learn_from_rows, learn_from_train_csv};

/// The reserve's coordinates are not in the repository; roughly 6.77 N, 74.98 W (Magdalena
/// valley lowlands, Colombia) stands in for them.
const EL_SILENCIO: (f64, f64) = (6.77, -74.98);
const MADRID: (f64, f64) = (40.42, -3.70);

const HEADER: &str = "primary_label,secondary_labels,type,filename,collection,rating,url,\
                      latitude,longitude,scientific_name,common_name,author,license";

fn row(code: &str, n: usize, lat: &str, lon: &str) -> String {
    format!(
        "{code},[],['song'],{code}/XC{n}.ogg,XC,4.0,https://xeno-canto.org/{n},{lat},{lon},\
         Genus {code},Bird {code},Someone,cc-by-nc 4.0"
    )
}

/// A around Colombia, B across Europe, C without coordinates (one row has only a latitude).
fn synthetic_csv(dir: &Path) -> std::path::PathBuf {
    let mut lines = vec![HEADER.to_string()];
    let colombia = [
        (6.80, -74.90),
        (6.60, -74.70),
        (7.10, -75.20),
        (4.71, -74.07),
        (6.24, -75.58),
        (5.07, -75.52),
    ];
    let europe = [
        (51.50, -0.13),
        (48.86, 2.35),
        (52.52, 13.40),
        (41.39, 2.17),
        (45.46, 9.19),
    ];
    for (i, (lat, lon)) in colombia.iter().enumerate() {
        lines.push(row("spa", i, &lat.to_string(), &lon.to_string()));
    }
    for (i, (lat, lon)) in europe.iter().enumerate() {
        lines.push(row("spb", 100 + i, &lat.to_string(), &lon.to_string()));
    }
    lines.push(row("spc", 200, "", ""));
    lines.push(row("spc", 201, "6.8", ""));
    let path = dir.join("train.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn species(codes: &[&str]) -> Vec<Species> {
    codes
        .iter()
        .map(|c| Species {
            code: c.to_string(),
            scientific_name: String::new(),
            common_name: String::new(),
            class_name: "Aves".into(),
        })
        .collect()
}

fn at(p: (f64, f64)) -> LocationQuery {
    Place::new(p.0, p.1).unwrap().into()
}

#[test]
fn synthetic_train_csv_filters_by_place() {
    let dir = tempfile::tempdir().unwrap();
    let csv = synthetic_csv(dir.path());
    let codes = ["spa", "spb", "spc"];
    let model = learn_from_train_csv(&csv, &codes, OccurrenceConfig::default()).unwrap();
    assert!(
        model.source().contains("11 located rows of 13"),
        "{}",
        model.source()
    );
    assert_eq!(model.known_count(), 2);
    let sp = species(&codes);

    // Filter at El Silencio: A kept, B zeroed, C passes through.
    let mut scores = vec![vec![0.7, 0.6, 0.5]; 3];
    let out = model
        .apply(&sp, &mut scores, &at(EL_SILENCIO), FilterMode::default())
        .unwrap();
    assert_eq!(out.removed, ["spb"]);
    assert_eq!(out.unknown, 1);
    assert!(scores.iter().all(|w| w == &[0.7, 0.0, 0.5]), "{scores:?}");

    // In Europe the reverse.
    let mut scores = vec![vec![0.7, 0.6, 0.5]; 2];
    let out = model
        .apply(&sp, &mut scores, &at(MADRID), FilterMode::default())
        .unwrap();
    assert_eq!(out.removed, ["spa"]);
    assert!(scores.iter().all(|w| w == &[0.0, 0.6, 0.5]), "{scores:?}");

    // Reweight: each known species is scaled by exp(-(d/R)^2), d its nearest recording (cell
    // centre); the local one keeps most of its score, the far one nearly vanishes, C is
    // untouched.
    for (place, local, far) in [(EL_SILENCIO, 0, 1), (MADRID, 1, 0)] {
        let orig = [0.7f32, 0.6, 0.5];
        let mut scores = vec![orig.to_vec()];
        let out = model
            .apply(&sp, &mut scores, &at(place), FilterMode::Reweight)
            .unwrap();
        let p = Place::new(place.0, place.1).unwrap();
        for i in [local, far] {
            let d = model.nearest_km(codes[i], &p).unwrap();
            let w = (-(d / 1000.0).powi(2)).exp() as f32;
            assert!((scores[0][i] - orig[i] * w).abs() < 1e-6, "{scores:?}");
        }
        assert!(scores[0][local] > 0.5 * orig[local], "{scores:?}");
        assert!(scores[0][far] < 1e-6, "{scores:?}");
        assert_eq!(scores[0][2], 0.5);
        assert_eq!(out.removed, [codes[far]]);
    }

    // The species list of a place.
    let e = model.expected(&at(EL_SILENCIO));
    assert_eq!(e.known[0].code, "spa");
    assert_eq!(e.unknown, ["spc"]);

    // Stored and read back, it answers the same.
    let path = dir.path().join(silencio_infer::LOCATION_FILE);
    model.write_json(&path).unwrap();
    let back = OccurrenceModel::read_json(&path).unwrap();
    assert_eq!(back.expected(&at(MADRID)), model.expected(&at(MADRID)));
    assert!(back.source().contains("train.csv"));

    // Held out by site, each A or B recording is still expected where it was made (the other
    // sites of its species lie within about 1000 km) and the other species never is.
    let (rows, _) = silencio_data::read_train_csv(&csv).unwrap();
    let r = holdout_train_csv(
        &rows,
        &codes,
        3,
        OccurrenceConfig::default(),
        DEFAULT_THRESHOLD,
    )
    .unwrap();
    println!("synthetic A/B/C: {}", serde_json::to_string(&r).unwrap());
    assert_eq!(r.held_out, 11);
    assert_eq!((r.recall, r.other_kept), (Some(1.0), Some(0.0)), "{r:?}");
}

/// Five species with overlapping ranges (boxes of latitude/longitude), 30 recordings each at
/// pseudo-random places inside the box, written as a train.csv and read back.
fn ranged_rows(dir: &Path) -> Vec<silencio_data::TrainRecord> {
    // (code, latitude span, longitude span)
    type Range = (&'static str, (f64, f64), (f64, f64));
    let ranges: [Range; 5] = [
        // Magdalena valley, Colombia.
        ("magd", (5.5, 8.5), (-75.5, -73.5)),
        // Northern Andes, Colombia and Ecuador.
        ("ande", (-3.0, 7.0), (-79.0, -74.0)),
        // Neotropical lowlands, Mexico to Bolivia.
        ("neot", (-15.0, 20.0), (-95.0, -60.0)),
        // Western Europe.
        ("euro", (37.0, 55.0), (-9.0, 15.0)),
        // West Africa.
        ("afri", (5.0, 15.0), (-15.0, 5.0)),
    ];
    let mut rng = silencio_common::SplitMix64::new(2025);
    let mut lines = vec![HEADER.to_string()];
    let mut n = 0;
    for (code, (la0, la1), (lo0, lo1)) in ranges {
        for _ in 0..30 {
            let lat = la0 + (la1 - la0) * rng.uniform();
            let lon = lo0 + (lo1 - lo0) * rng.uniform();
            lines.push(row(code, n, &format!("{lat:.4}"), &format!("{lon:.4}")));
            n += 1;
        }
    }
    let path = dir.join("train.csv");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (rows, problems) = silencio_data::read_train_csv(&path).unwrap();
    assert!(problems.is_empty());
    rows
}

#[test]
fn held_out_recordings_are_expected_where_they_were_made() {
    let dir = tempfile::tempdir().unwrap();
    let rows = ranged_rows(dir.path());
    let codes = ["magd", "ande", "neot", "euro", "afri"];
    let mut aucs = Vec::new();
    for radius_km in [250.0, 1000.0, 3000.0] {
        let cfg = OccurrenceConfig {
            radius_km,
            ..Default::default()
        };
        let r = holdout_train_csv(&rows, &codes, 5, cfg, DEFAULT_THRESHOLD).unwrap();
        println!(
            "radius {radius_km} km: {}",
            serde_json::to_string(&r).unwrap()
        );
        assert_eq!(r.held_out, 150);
        assert_eq!(r.scored + r.own_unknown, r.held_out);
        let (recall, other) = (r.recall.unwrap(), r.other_kept.unwrap());
        // Presences are expected far more often than a random other species is.
        assert!(recall > other + 0.2, "{r:?}");
        assert!(r.auc.unwrap() > 0.7, "{r:?}");
        aucs.push(r.auc.unwrap());
    }
    // The kernel falls monotonically with distance, so the radius moves the threshold's cut
    // but never the order of two occurrences: the paired AUC cannot change with it.
    assert!(aucs.iter().all(|&a| a == aucs[0]), "{aucs:?}");
    let r = holdout_train_csv(&rows, &codes, 5, Default::default(), DEFAULT_THRESHOLD).unwrap();
    // At the default radius, every held-out recording lies within its species' box of other
    // recordings, so none is dropped.
    assert_eq!(r.recall, Some(1.0), "{r:?}");
}

#[test]
fn the_demo_set_has_no_coordinates_and_filters_nothing() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/demo/birdclef");
    let taxonomy = silencio_data::Taxonomy::from_csv(&root.join("taxonomy.csv")).unwrap();
    let codes: Vec<&str> = taxonomy
        .species()
        .iter()
        .map(|s| s.primary_label.as_str())
        .collect();
    let model =
        learn_from_train_csv(&root.join("train.csv"), &codes, OccurrenceConfig::default()).unwrap();
    assert_eq!(model.known_count(), 0);
    assert!(
        model.source().contains(": 0 located rows of"),
        "{}",
        model.source()
    );
    let sp = species(&codes);
    let original: Vec<Vec<f32>> = (0..4)
        .map(|w| {
            (0..codes.len())
                .map(|i| (w * 7 + i) as f32 / 100.0)
                .collect()
        })
        .collect();
    for mode in [FilterMode::default(), FilterMode::Reweight] {
        for place in [EL_SILENCIO, MADRID] {
            let mut scores = original.clone();
            let out = model.apply(&sp, &mut scores, &at(place), mode).unwrap();
            assert_eq!(scores, original);
            assert!(out.removed.is_empty());
            assert_eq!(out.unknown, codes.len());
        }
    }
    for c in &codes {
        assert_eq!(model.occurrence(c, &at(EL_SILENCIO)), Occurrence::Unknown);
    }
    let (rows, _) = silencio_data::read_train_csv(&root.join("train.csv")).unwrap();
    let empty = learn_from_rows(&rows, &codes, OccurrenceConfig::default()).unwrap();
    assert_eq!(empty.known_count(), 0);
    let r = holdout_check(
        &trainer::location::located_points(&rows),
        &codes,
        5,
        OccurrenceConfig::default(),
        DEFAULT_THRESHOLD,
    )
    .unwrap();
    assert_eq!((r.held_out, r.recall), (0, None));
}
