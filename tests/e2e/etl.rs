//! End-to-end tests of `silencio etl` on the committed real demo dataset: a run on a tree with a
//! corrupt clip and an unknown label, SIGKILL mid-run then resume (byte-identical to an
//! uninterrupted run), an idempotent re-run, and the same ETL to and from a real S3-compatible
//! server (moto_server, started here on loopback).

// Test helpers outside #[test] fns unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use silencio_data::Store;

fn silencio() -> Command {
    Command::new(env!("CARGO_BIN_EXE_silencio"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn demo() -> PathBuf {
    repo().join("datasets/demo/birdclef")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// Every file under `root` (relative path → bytes).
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// The demo set `copies` times over (each copy a new recording id, so that a run lasts long
/// enough to be killed mid-way), plus one corrupt clip and one row whose primary label is not in
/// the taxonomy (and a secondary label that is not either), as users' trees have.
fn dirty_demo(dir: &Path, copies: usize) -> PathBuf {
    let root = dir.join("data");
    copy_dir(&demo(), &root);
    let mut rdr = csv::Reader::from_path(root.join("train.csv")).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.unwrap()).collect();
    let col = headers.iter().position(|h| h == "filename").unwrap();
    let mut w = csv::Writer::from_path(root.join("train.csv")).unwrap();
    w.write_record(&headers).unwrap();
    for copy in 0..copies {
        for row in &rows {
            let mut row: Vec<String> = row.iter().map(String::from).collect();
            if copy > 0 {
                let new = row[col].replace(".ogg", &format!("9{copy}.ogg"));
                let audio = root.join("train_audio");
                std::fs::copy(audio.join(&row[col]), audio.join(&new)).unwrap();
                row[col] = new;
            }
            w.write_record(&row).unwrap();
        }
    }
    w.flush().unwrap();
    drop(w);
    let csv = std::fs::read_to_string(root.join("train.csv")).unwrap();
    let first = csv.lines().nth(1).unwrap().to_string();
    let label = first.split(',').next().unwrap().to_string();
    let audio = root.join("train_audio");
    let a_clip = std::fs::read_dir(audio.join(&label))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    // A clip cut short: Ogg magic, then noise.
    let mut corrupt = b"OggS".to_vec();
    corrupt.extend((0..4000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(audio.join(&label).join("XC999001.ogg"), corrupt).unwrap();
    std::fs::create_dir_all(audio.join("notaspecies")).unwrap();
    std::fs::copy(&a_clip, audio.join("notaspecies/XC999002.ogg")).unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(root.join("train.csv"))
        .unwrap();
    if !csv.ends_with('\n') {
        writeln!(f).unwrap();
    }
    writeln!(
        f,
        "{label},\"['nosuchbird']\",\"['song']\",{label}/XC999001.ogg,XC,3.0,,,,,,test,CC0"
    )
    .unwrap();
    writeln!(
        f,
        "notaspecies,[],\"['song']\",notaspecies/XC999002.ogg,XC,3.0,,,,,,test,CC0"
    )
    .unwrap();
    root
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap()
}

const SHARD_MB: &str = "0.25";

fn etl(data: &str, out: &str) -> Command {
    let mut c = silencio();
    c.args(["etl", "--data", data, "--out", out, "--shard-mb", SHARD_MB])
        .args(["--progress", "json", "--threads", "1"]);
    c
}

#[test]
fn etl_reports_bad_clips_and_resumes_after_sigkill_byte_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dirty_demo(tmp.path(), 8);
    let data_s = data.to_str().unwrap();

    // Uninterrupted run.
    let a = tmp.path().join("a");
    let run = etl(data_s, a.to_str().unwrap()).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let m = manifest(&a);
    let skipped = m["skipped_clips"].as_array().unwrap();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0]["filename"]
            .as_str()
            .unwrap()
            .ends_with("XC999001.ogg")
    );
    assert_ne!(skipped[0]["kind"], "missing");
    let unknown = m["rows"]["unknown_labels"].as_array().unwrap();
    assert!(
        unknown
            .iter()
            .any(|u| u["label"] == "notaspecies" && u["field"] == "primary")
    );
    assert!(
        unknown
            .iter()
            .any(|u| u["label"] == "nosuchbird" && u["field"] == "secondary")
    );
    assert!(
        stderr.contains("XC999001.ogg") && stderr.contains("notaspecies"),
        "{stderr}"
    );
    let shards = m["shards"].as_array().unwrap().len();
    assert!(
        shards >= 6,
        "need several shards to kill mid-run, got {shards}"
    );
    let windows = m["totals"]["windows"].as_u64().unwrap();
    assert_eq!(windows as usize, m["windows"].as_array().unwrap().len());
    // No window of one recording in two splits.
    let mut split_of = BTreeMap::new();
    for w in m["windows"].as_array().unwrap() {
        let prev = split_of.insert(w["clip"].as_u64(), w["split"].clone());
        assert!(prev.is_none() || prev.as_ref() == Some(&w["split"]));
    }
    // `silencio split` with the same flags gives every recording the ETL's split.
    let table = tmp.path().join("splits.csv");
    let split = silencio()
        .args(["split", "--data", data_s, "--out", table.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(split.status.success());
    let table: BTreeMap<String, String> = csv::Reader::from_path(&table)
        .unwrap()
        .records()
        .map(|r| {
            let r = r.unwrap();
            (r[0].to_string(), r[3].to_string())
        })
        .collect();
    let clips = m["clips"].as_array().unwrap();
    assert!(!clips.is_empty());
    for c in clips {
        assert_eq!(
            table
                .get(c["filename"].as_str().unwrap())
                .map(String::as_str),
            c["split"].as_str(),
            "{c}"
        );
    }
    let summary: serde_json::Value = String::from_utf8_lossy(&run.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap();
    assert_eq!(summary["event"], "summary");
    assert_eq!(summary["windows"], windows);

    // Killed with SIGKILL after its third shard, then re-run.
    let b = tmp.path().join("b");
    let mut child = etl(data_s, b.to_str().unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        if v["event"] == "shard" && v["index"].as_u64() >= Some(2) {
            break;
        }
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    assert!(
        !b.join("manifest.json").exists(),
        "the run finished before it was killed"
    );
    let resumed = etl(data_s, b.to_str().unwrap()).output().unwrap();
    assert!(resumed.status.success());
    let last: serde_json::Value = String::from_utf8_lossy(&resumed.stdout)
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap();
    assert!(last["resumed_shards"].as_u64().unwrap() >= 3, "{last}");
    assert_eq!(tree(&a), tree(&b), "killed + resumed output differs");

    // A further re-run does nothing and changes nothing.
    let again = etl(data_s, b.to_str().unwrap()).output().unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already complete"));
    assert_eq!(tree(&a), tree(&b));

    // Other options on the same output: refused with a typed error, output untouched.
    let clash = silencio()
        .args(["etl", "--data", data_s, "--out", b.to_str().unwrap()])
        .args(["--shard-mb", "1", "--progress", "none"])
        .output()
        .unwrap();
    assert_eq!(clash.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&clash.stderr).starts_with("error[conflict]"));
    assert_eq!(tree(&a), tree(&b));
}

#[test]
fn etl_of_a_missing_dataset_is_a_typed_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = silencio()
        .args(["etl", "--data"])
        .arg(tmp.path().join("nothing"))
        .args(["--out"])
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error[missing]") && err.contains("nothing"),
        "{err}"
    );
    assert!(
        !tmp.path().join("nothing").exists(),
        "reading must not create the directory"
    );
    // A directory without taxonomy.csv.
    let out = silencio()
        .args(["etl", "--data"])
        .arg(tmp.path())
        .args(["--out"])
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error[missing]") && err.contains("taxonomy.csv"),
        "{err}"
    );
}

/// moto_server on a free loopback port, killed on drop.
struct Moto {
    child: std::process::Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SILENCIO_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let venv = repo().join(".venv-test/bin/moto_server");
    venv.exists().then_some(venv)
}

fn http(port: u16, request: &str) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp
}

fn start_moto(exe: &Path) -> Moto {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(exe)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let moto = Moto { child, port };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "moto_server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    moto
}

#[test]
fn etl_reads_and_writes_s3_on_a_loopback_server() {
    let Some(exe) = moto_server() else {
        assert!(
            std::env::var_os("SILENCIO_SKIP_S3").is_some(),
            "moto_server not found: run the README's test command (bash scripts/test.sh), \
             set SILENCIO_MOTO_SERVER, or set SILENCIO_SKIP_S3=1 to skip this test"
        );
        return;
    };
    let moto = start_moto(&exe);
    let endpoint = format!("http://127.0.0.1:{}", moto.port);
    let resp = http(
        moto.port,
        &format!(
            "PUT /silencio HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            moto.port
        ),
    );
    assert!(resp.starts_with("HTTP/1.1 200"), "create bucket: {resp}");
    let s3_opts = [
        ("aws_endpoint", endpoint.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "test"),
        ("aws_secret_access_key", "test"),
        ("aws_region", "us-east-1"),
    ];

    // Upload the demo set, then ETL from S3 to S3.
    let bucket_data = Store::open_with("s3://silencio/demo", &s3_opts, true).unwrap();
    for (rel, bytes) in tree(&demo()) {
        bucket_data.put(&rel, bytes).unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let local = tmp.path().join("local");
    let run_s3 = |data: &str, out: &str| {
        let mut c = etl(data, out);
        for (k, v) in &s3_opts {
            c.env(k.to_uppercase(), v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    run_s3("s3://silencio/demo", "s3://silencio/etl");
    run_s3(demo().to_str().unwrap(), local.to_str().unwrap());

    // The S3 output is the local output, object for object.
    let bucket_out = Store::open_with("s3://silencio/etl", &s3_opts, false).unwrap();
    let local_files = tree(&local);
    assert_eq!(
        bucket_out.list("").unwrap(),
        local_files.keys().cloned().collect::<Vec<_>>()
    );
    for (rel, bytes) in &local_files {
        assert_eq!(
            bucket_out.get(rel).unwrap().unwrap().as_ref(),
            &bytes[..],
            "{rel}"
        );
    }
    // And a re-run against S3 finds it complete.
    let mut c = etl("s3://silencio/demo", "s3://silencio/etl");
    for (k, v) in &s3_opts {
        c.env(k.to_uppercase(), v);
    }
    let o = c.output().unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("already complete"));
}
