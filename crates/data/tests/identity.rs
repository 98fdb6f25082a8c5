//! Byte identity of what the data crate writes, before and after refactors (issue 17 moves
//! SplitMix64 and the atomic writes into a shared crate: the splits, the mixer and the ETL
//! depend on its exact sequence). Every file the ETL (with its splits) and the soundscape mixer
//! write for the committed demo set is hashed (SHA-256) and compared with
//! `tests/reference/identity.json`, recorded from the code before the move.
//!
//! A deliberate change of output re-records it: `SILENCIO_BLESS=1 cargo test -p silencio-data
//! --test identity`, and the diff of the JSON shows which files changed.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use silencio_audio::FeatureConfig;
use silencio_data::Store;
use silencio_data::etl::{self, EtlOptions};
use silencio_data::mix::{self, CallPool, MixOptions};

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/demo")
}

fn reference() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/identity.json")
}

/// Every file under `root`: relative path → SHA-256 (hex).
fn digests(root: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
    fn walk(root: &Path, dir: &Path, prefix: &str, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(root, &p, prefix, out);
            } else {
                let rel = p
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                let hex: String = Sha256::digest(std::fs::read(&p).unwrap())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                out.insert(format!("{prefix}/{rel}"), hex);
            }
        }
    }
    walk(root, root, prefix, out);
}

#[test]
fn etl_splits_and_mixer_output_is_byte_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let mut got = BTreeMap::new();

    // The ETL with its defaults (splits included), small shards so that several are written.
    let data = Store::open(demo().join("birdclef").to_str().unwrap()).unwrap();
    let etl_dir = tmp.path().join("etl");
    let out = Store::create(etl_dir.to_str().unwrap()).unwrap();
    let mut opts = EtlOptions::new(FeatureConfig::recipe("birdclef").unwrap());
    opts.shard_bytes = 1 << 19;
    opts.seed = 7;
    etl::run(&data, &out, &opts, 2, &mut |_| {}).unwrap();
    digests(&etl_dir, "etl", &mut got);

    // The mixer on held-out calls.
    let mopts = MixOptions {
        minutes: 2,
        seed: 11,
        pool: CallPool::Valid,
        ..MixOptions::default()
    };
    let set = mix::load_calls(&demo().join("birdclef"), &mopts).unwrap();
    let backgrounds = mix::load_backgrounds(&demo().join("backgrounds")).unwrap();
    let mix_dir = tmp.path().join("mix");
    mix::mix(&set, &backgrounds, &mopts, &mix_dir).unwrap();
    digests(&mix_dir, "mix", &mut got);

    if std::env::var_os("SILENCIO_BLESS").is_some() {
        let text = serde_json::to_string_pretty(&got).unwrap() + "\n";
        std::fs::write(reference(), text).unwrap();
        return;
    }
    let want: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(reference()).unwrap()).unwrap();
    let changed: Vec<_> = want
        .keys()
        .chain(got.keys())
        .filter(|k| want.get(*k) != got.get(*k))
        .collect();
    assert!(changed.is_empty(), "output changed: {changed:?}");
}
