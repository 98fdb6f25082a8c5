//! End-to-end: the `silencio` binary on real fixtures, as a user runs it.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn silencio() -> Command {
    Command::new(env!("CARGO_BIN_EXE_silencio"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("datasets/fixtures/audio").join(name)
}

fn read_npy(path: &std::path::Path) -> (Vec<u64>, Vec<f32>) {
    let npy = npyz::NpyFile::new(std::fs::File::open(path).expect("npy")).expect("header");
    let shape = npy.shape().to_vec();
    (shape, npy.into_vec::<f32>().expect("f32"))
}

#[test]
fn features_writes_the_library_result_as_npy_for_every_container() {
    let tmp = tempdir();
    let cfg = silencio_audio::FeatureConfig::recipe("birdclef").expect("recipe");
    for name in [
        "crowsetta_forest.wav",
        "crowsetta_forest.ogg",
        "crowsetta_forest.flac",
        "hawkears_common_yellowthroat.mp3",
        "crowsetta_forest.m4a",
    ] {
        let out = tmp.join(format!("{name}.npy"));
        let o = silencio()
            .args(["features"])
            .arg(fixture(name))
            .args(["--recipe", "birdclef", "--out"])
            .arg(&out)
            .output()
            .expect("run");
        assert!(
            o.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (shape, data) = read_npy(&out);
        let (_, want) =
            silencio_audio::features_from_path(fixture(name), &cfg, 3600.0).expect("library");
        assert_eq!(shape, want.shape().map(|d| d as u64).to_vec(), "{name}");
        assert_eq!(
            data, want.data,
            "{name}: CLI and library must agree bit for bit"
        );
    }
    // 10 s at 32 kHz → two 5 s windows of 128 × 313.
    let (shape, _) = read_npy(&tmp.join("crowsetta_forest.wav.npy"));
    assert_eq!(shape, vec![2, 128, 313]);
}

#[test]
fn features_overlap_and_windows_json() {
    let tmp = tempdir();
    let out = tmp.join("o.npy");
    let wj = tmp.join("w.json");
    let o = silencio()
        .arg("features")
        .arg(fixture("crowsetta_forest.wav"))
        .args(["--recipe", "panns", "--hop-s", "2.5", "--out"])
        .arg(&out)
        .arg("--windows-json")
        .arg(&wj)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The clip is 320001 samples (10 s + 1): after the window at 5 s, 2.5 s remain from
    // 7.5 s, above the 1 s minimum, so a fourth, zero-padded window is kept.
    let (shape, _) = read_npy(&out);
    assert_eq!(shape, vec![4, 64, 501]);
    let w: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&wj).expect("json")).expect("parse");
    let starts: Vec<f64> = w
        .iter()
        .map(|w| w["start_s"].as_f64().expect("start"))
        .collect();
    assert_eq!(starts, vec![0.0, 2.5, 5.0, 7.5]);
}

#[test]
fn info_reports_format_rate_channels_duration() {
    let o = silencio()
        .args(["info", "--json"])
        .arg(fixture("crowsetta_forest.m4a"))
        .output()
        .expect("run");
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["container"], "isomp4");
    assert_eq!(v["codec"], "aac");
    assert_eq!(v["sample_rate"], 44_100);
    assert_eq!(v["channels"], 2);
    assert!((v["duration_s"].as_f64().expect("dur") - 10.0).abs() < 1e-3);
    let text = silencio()
        .arg("info")
        .arg(fixture("wav_s24_48k_stereo.wav"))
        .output()
        .expect("run");
    let s = String::from_utf8_lossy(&text.stdout);
    assert!(
        s.contains("48000 Hz") && s.contains("channels:    2") && s.contains("bits:        24"),
        "{s}"
    );
}

#[test]
fn bad_input_gives_one_line_error_and_nonzero_exit_and_no_file() {
    let tmp = tempdir();
    let junk = tmp.join("junk.ogg");
    std::fs::write(&junk, b"definitely not an ogg stream").expect("write");
    let out = tmp.join("never.npy");
    for (input, kind) in [
        (junk.clone(), "unsupported_format"),
        (tmp.join("missing.wav"), "io"),
    ] {
        let o = silencio()
            .arg("features")
            .arg(&input)
            .arg("--out")
            .arg(&out)
            .output()
            .expect("run");
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(err.starts_with(&format!("error[{kind}]")), "{err}");
        assert!(!out.exists(), "no output on failure");
    }
    // Too long for the limit given.
    let o = silencio()
        .arg("features")
        .arg(fixture("soundscape_1min.ogg"))
        .args(["--max-duration-s", "30", "--out"])
        .arg(&out)
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error[too_long]"));
}

#[test]
fn validate_reports_problems_writes_json_and_succeeds() {
    let dir = tempfile::tempdir().expect("tmp");
    let root = dir.path();
    std::fs::write(
        root.join("taxonomy.csv"),
        "primary_label,inat_taxon_id,scientific_name,common_name,class_name\n\
         grekis,1,Pitangus sulphuratus,Great Kiskadee,Aves\n",
    )
    .expect("write");
    std::fs::create_dir_all(root.join("train_audio/grekis")).expect("mkdir");
    std::fs::copy(
        fixture("crowsetta_forest.ogg"),
        root.join("train_audio/grekis/XC1.ogg"),
    )
    .expect("copy");
    std::fs::write(
        root.join("train.csv"),
        "primary_label,secondary_labels,type,filename,collection,rating\n\
         grekis,[],['song'],grekis/XC1.ogg,XC,5\n\
         nosuch,[],[],nosuch/XC2.ogg,XC,5\n",
    )
    .expect("write");
    let o = silencio()
        .args(["validate", "--data"])
        .arg(root)
        .output()
        .expect("run");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("2 rows, 1 usable"), "{stdout}");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("validation_report.json")).expect("report"),
    )
    .expect("json");
    assert_eq!(report["unknown_labels"][0]["label"], "nosuch");
    assert_eq!(report["per_class"][0]["primary"], 1);
    // Splits: the one usable recording, deterministic by seed.
    let split = root.join("splits.csv");
    let run = || {
        silencio()
            .args(["split", "--data"])
            .arg(root)
            .arg("--out")
            .arg(&split)
            .output()
            .expect("run")
    };
    assert!(run().status.success());
    let table = std::fs::read_to_string(&split).expect("splits");
    assert_eq!(
        table.lines().next(),
        Some("filename,primary_label,collection,split,period")
    );
    assert_eq!(table.lines().count(), 2, "{table}");
    assert!(table.contains("grekis/XC1.ogg,grekis,XC,"), "{table}");
    assert!(run().status.success());
    assert_eq!(std::fs::read_to_string(&split).expect("again"), table);
    // No taxonomy: a one-line typed error, non-zero exit.
    std::fs::remove_file(root.join("taxonomy.csv")).expect("rm");
    let o = silencio()
        .args(["validate", "--data"])
        .arg(root)
        .output()
        .expect("run");
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("error[io]"));
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "silencio-e2e-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).expect("tmp");
    d
}
