//! `validate` on a BirdCLEF-layout tree built from the committed real fixtures, with one of
//! every problem planted: each is reported, bad rows are skipped, the rest is counted.
#![allow(clippy::unwrap_used)] // test helpers

use std::path::{Path, PathBuf};

use silencio_data::{ValidateOptions, validate};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../datasets/fixtures/audio")
        .join(name)
}

fn put(root: &Path, rel: &str, from: &str) {
    let dst = root.join("train_audio").join(rel);
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    std::fs::copy(fixture(from), dst).unwrap();
}

fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(
        root.join("taxonomy.csv"),
        "primary_label,inat_taxon_id,scientific_name,common_name,class_name\n\
         grekis,13245,Pitangus sulphuratus,Great Kiskadee,Aves\n\
         bkmtou1,12345,Pteroglossus aracari,Black-necked Aracari,Aves\n\
         41970,41970,Dendropsophus microcephalus,Yellow Treefrog,Amphibia\n",
    )
    .unwrap();
    put(root, "grekis/XC1.ogg", "crowsetta_forest.ogg");
    put(root, "grekis/XC2.ogg", "soundscape_1min.ogg");
    put(root, "bkmtou1/iNat3.ogg", "crowsetta_forest_32k.m4a");
    put(root, "41970/CSA4.ogg", "wav_f64_384k_mono.wav"); // 0.25 s: too short
    std::fs::create_dir_all(root.join("train_audio/bkmtou1")).unwrap();
    std::fs::write(
        root.join("train_audio/bkmtou1/XC5.ogg"),
        b"OggS but not really",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("train_soundscapes")).unwrap();
    std::fs::copy(
        fixture("soundscape_1min.ogg"),
        root.join("train_soundscapes/H02_20230420_074000.ogg"),
    )
    .unwrap();
    let header = "primary_label,secondary_labels,type,filename,collection,rating,url,latitude,longitude,scientific_name,common_name,author,license";
    // Each row its own source recording (the url groups rows for the splits).
    let rows = [
        // line 2: good, secondary label known
        "grekis,['bkmtou1'],['song'],grekis/XC1.ogg,XC,4.5,u2,4.1,-74.2,P s,GK,A,cc-by",
        // line 3: good, unknown secondary label (dropped, row kept)
        "grekis,\"['bkmtou1', 'nosuch1']\",['call'],grekis/XC2.ogg,XC,7.0,u3,,,P s,GK,A,cc-by",
        // line 4: good m4a-in-ogg-name (content decides), no secondaries
        "bkmtou1,[],[],bkmtou1/iNat3.ogg,iNat,0,u4,,,P a,BA,B,cc0",
        // line 5: too short
        "41970,[],[],41970/CSA4.ogg,CSA,3,u5,,,D m,YT,C,cc0",
        // line 6: corrupt
        "bkmtou1,[],[],bkmtou1/XC5.ogg,XC,2,u6,,,P a,BA,B,cc0",
        // line 7: missing file
        "grekis,[],[],grekis/XC9.ogg,XC,2,u7,,,P s,GK,A,cc0",
        // line 8: unknown primary label
        "zzzzzz,[],[],zzzzzz/XC10.ogg,XC,2,u8,,,?,?,A,cc0",
        // line 9: duplicate of line 2
        "grekis,[],[],grekis/XC1.ogg,XC,4,u9,,,P s,GK,A,cc0",
        // line 10: malformed secondary list
        "grekis,bkmtou1,[],grekis/XC11.ogg,XC,4,u10,,,P s,GK,A,cc0",
    ];
    std::fs::write(
        root.join("train.csv"),
        format!("{header}\n{}\n", rows.join("\n")),
    )
    .unwrap();
    dir
}

#[test]
fn every_planted_problem_is_reported_and_skipped() {
    let dir = tree();
    let r = validate(dir.path(), &ValidateOptions::default()).unwrap();
    assert_eq!(r.species, 3);
    assert_eq!(r.rows, 9);
    assert_eq!(r.usable_rows, 3, "{r:#?}");
    assert_eq!(r.soundscapes, 1);

    assert_eq!(r.malformed_rows.len(), 1);
    assert_eq!(r.malformed_rows[0].line, 10);

    let unknown: Vec<(u64, &str, &str)> = r
        .unknown_labels
        .iter()
        .map(|u| (u.line, u.label.as_str(), u.field.as_str()))
        .collect();
    assert_eq!(
        unknown,
        vec![(3, "nosuch1", "secondary"), (8, "zzzzzz", "primary")]
    );

    assert_eq!(r.duplicate_rows.len(), 1);
    assert_eq!(
        (r.duplicate_rows[0].line, r.duplicate_rows[0].first_line),
        (9, 2)
    );

    let clips: Vec<(u64, &str)> = r
        .clip_problems
        .iter()
        .map(|c| (c.line, c.kind.as_str()))
        .collect();
    assert_eq!(
        clips,
        vec![(5, "too_short"), (6, "unreadable"), (7, "missing")]
    );

    assert_eq!(r.rating_outliers.len(), 1);
    assert_eq!(r.rating_outliers[0].line, 3);

    // Per class, in taxonomy order: grekis 2 primary; bkmtou1 1 primary + 2 secondary.
    let counts: Vec<(&str, usize, usize)> = r
        .per_class
        .iter()
        .map(|c| (c.code.as_str(), c.primary, c.secondary))
        .collect();
    assert_eq!(
        counts,
        vec![("grekis", 2, 0), ("bkmtou1", 1, 2), ("41970", 0, 0)]
    );
    assert_eq!(r.classes_without_recordings, vec!["41970"]);
    // 10 s + 60 s + 10 s of real audio.
    assert!((r.audio_seconds - 80.0).abs() < 0.01, "{}", r.audio_seconds);
    assert!(!r.is_clean());
    let s = r.summary();
    assert!(
        s.contains("3 usable") && s.contains("missing 1, unreadable 1, empty 0, too short 1"),
        "{s}"
    );
}

#[test]
fn quick_mode_only_checks_presence() {
    let dir = tree();
    let opts = ValidateOptions {
        decode: false,
        ..ValidateOptions::default()
    };
    let r = validate(dir.path(), &opts).unwrap();
    // Without decoding, the corrupt and the short clip pass; only the missing one is caught.
    let kinds: Vec<&str> = r.clip_problems.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, vec!["missing"]);
    assert_eq!(r.usable_rows, 5);
}

#[test]
fn missing_taxonomy_or_columns_are_typed_errors() {
    let dir = tree();
    std::fs::write(dir.path().join("train.csv"), "filename\nx.ogg\n").unwrap();
    assert!(matches!(
        validate(dir.path(), &ValidateOptions::default()),
        Err(silencio_data::Error::Csv { .. })
    ));
    std::fs::remove_file(dir.path().join("taxonomy.csv")).unwrap();
    assert!(matches!(
        validate(dir.path(), &ValidateOptions::default()),
        Err(silencio_data::Error::Io { .. })
    ));
}

#[test]
fn split_table_leaves_out_unknown_labels_and_duplicates() {
    let dir = tree();
    let tax = silencio_data::Taxonomy::from_csv(&dir.path().join("taxonomy.csv")).unwrap();
    let (records, bad) = silencio_data::read_train_csv(&dir.path().join("train.csv")).unwrap();
    assert_eq!(bad.len(), 1);
    let t = silencio_data::split_table(&records, &tax, 0.2, 0.7, 3);
    let files: Vec<&str> = t
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    // Line 8 (unknown primary) and line 9 (duplicate of XC1) are left out.
    assert_eq!(
        files,
        vec![
            "grekis/XC1.ogg",
            "grekis/XC2.ogg",
            "bkmtou1/iNat3.ogg",
            "41970/CSA4.ogg",
            "bkmtou1/XC5.ogg",
            "grekis/XC9.ogg"
        ]
    );
    assert_eq!(t, silencio_data::split_table(&records, &tax, 0.2, 0.7, 3));
    // XC has 4 recordings: ceil(2.8) = 3 oldest initial, XC9 (newest) retrain.
    assert!(
        t.contains("grekis/XC9.ogg,grekis,XC,") && t.lines().last().unwrap().ends_with(",retrain")
    );
}
