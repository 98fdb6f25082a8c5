//! The local registry: versions copied in, aliases, atomic writes, and the layout
//! `silencio-infer`'s `registry::resolve_default` reads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use silencio_mlops::registry::NewVersion;
use silencio_mlops::{Error, Registry};

fn bundle(dir: &Path, tag: &str) -> PathBuf {
    let b = dir.join(format!("bundle-{tag}"));
    std::fs::create_dir_all(b.join("weights")).unwrap();
    std::fs::write(b.join("bundle.json"), format!("{{\"tag\": \"{tag}\"}}")).unwrap();
    std::fs::write(b.join("weights/model.safetensors"), tag.as_bytes()).unwrap();
    b
}

/// What `silencio-infer` does to find the default model (crates/infer/src/registry.rs),
/// restated here because this crate must not depend on Burn.
fn infer_resolve_default(root: &Path) -> Option<(PathBuf, &'static str)> {
    let aliases: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(root.join("aliases.json")).ok()?).unwrap();
    for alias in ["production", "staging"] {
        if let Some(v) = aliases.get(alias) {
            assert!(!v.is_empty() && !v.contains('/') && !v.contains(".."));
            return Some((root.join("versions").join(v), alias));
        }
    }
    None
}

fn no_temp_files(root: &Path) {
    for entry in walk(root) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".tmp") && !name.starts_with(".staging") && name != ".lock",
            "left behind: {}",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

#[test]
fn versions_aliases_and_infer_layout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("registry");
    let reg = Registry::open(root.to_str().unwrap()).unwrap();
    let name = "birdclef-effnet";

    assert!(matches!(
        reg.get_by_alias(name, "production"),
        Err(Error::NotFound { .. })
    ));
    assert!(reg.create_registered_model(name).unwrap());
    assert!(!reg.create_registered_model(name).unwrap());
    assert!(matches!(
        reg.create_registered_model("other-model"),
        Err(Error::OtherModel { .. })
    ));
    assert!(infer_resolve_default(&root).is_none());

    let b1 = bundle(dir.path(), "one");
    let b2 = bundle(dir.path(), "two");
    let v1 = reg
        .create_version(
            name,
            &NewVersion {
                source: b1.to_str().unwrap(),
                run_id: Some("0123abcd"),
                description: "first",
                tags: &[("val_auc", "0.81")],
            },
        )
        .unwrap();
    let v2 = reg
        .create_version(
            name,
            &NewVersion {
                source: &format!("file://{}", b2.display()),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((v1, v2), (1, 2));
    // The bundle is copied, not linked: later edits of the source do not change version 1.
    std::fs::write(b1.join("bundle.json"), "changed").unwrap();
    assert_eq!(
        std::fs::read_to_string(root.join("versions/1/bundle.json")).unwrap(),
        "{\"tag\": \"one\"}"
    );
    assert_eq!(
        std::fs::read(root.join("versions/2/weights/model.safetensors")).unwrap(),
        b"two"
    );

    reg.set_alias(name, "staging", v2).unwrap();
    // infer finds staging while there is no production.
    assert_eq!(
        infer_resolve_default(&root).unwrap(),
        (root.join("versions/2"), "staging")
    );
    reg.set_alias(name, "production", v1).unwrap();
    assert_eq!(
        infer_resolve_default(&root).unwrap(),
        (root.join("versions/1"), "production")
    );
    let aliases: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(root.join("aliases.json")).unwrap()).unwrap();
    assert_eq!(aliases.get("production").map(String::as_str), Some("1"));

    let prod = reg.get_by_alias(name, "production").unwrap();
    assert_eq!(prod.version, 1);
    assert_eq!(prod.run_id.as_deref(), Some("0123abcd"));
    assert_eq!(prod.description, "first");
    assert_eq!(prod.tags.get("val_auc").map(String::as_str), Some("0.81"));
    assert_eq!(prod.aliases, vec!["production".to_string()]);
    assert_eq!(
        prod.local_path.as_deref(),
        Some(root.join("versions/1").as_path())
    );
    assert_eq!(
        prod.source,
        std::fs::canonicalize(&b1).unwrap().display().to_string()
    );

    let all = reg.list_versions(name).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].aliases, vec!["staging".to_string()]);

    // Promotion and rollback are alias moves.
    reg.set_alias(name, "production", v2).unwrap();
    reg.delete_alias(name, "staging").unwrap();
    assert_eq!(
        infer_resolve_default(&root).unwrap().0,
        root.join("versions/2")
    );
    assert!(matches!(
        reg.get_by_alias(name, "staging"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        reg.delete_alias(name, "staging"),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        reg.set_alias(name, "production", 9),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        reg.set_alias(name, "latest", 1),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        reg.set_alias(name, "v1", 1),
        Err(Error::InvalidName { .. })
    ));
    reg.set_alias(name, "production", v1).unwrap();
    assert_eq!(
        reg.get_version(name, 1).unwrap().aliases,
        vec!["production".to_string()]
    );

    // A source that is not a directory is refused, and leaves nothing behind.
    assert!(
        reg.create_version(
            name,
            &NewVersion {
                source: "/nonexistent/bundle",
                ..Default::default()
            }
        )
        .is_err()
    );
    no_temp_files(&root);
}

#[test]
fn concurrent_writers_get_distinct_versions() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("registry");
    let b = bundle(dir.path(), "x");
    let handles: Vec<_> = (0..6)
        .map(|_| {
            let root = root.clone();
            let b = b.clone();
            std::thread::spawn(move || {
                let reg = Registry::open(root.to_str().unwrap()).unwrap();
                reg.create_version(
                    "m",
                    &NewVersion {
                        source: b.to_str().unwrap(),
                        ..Default::default()
                    },
                )
                .unwrap()
            })
        })
        .collect();
    let mut got: Vec<u64> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    got.sort();
    assert_eq!(got, vec![1, 2, 3, 4, 5, 6]);
    let reg = Registry::open(root.to_str().unwrap()).unwrap();
    assert_eq!(reg.list_versions("m").unwrap().len(), 6);
    for v in 1..=6 {
        assert!(root.join(format!("versions/{v}/bundle.json")).is_file());
    }
    no_temp_files(&root);
}

#[test]
fn corrupt_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("registry");
    let reg = Registry::open(root.to_str().unwrap()).unwrap();
    reg.create_registered_model("m").unwrap();
    std::fs::write(root.join("aliases.json"), "{not json").unwrap();
    assert!(matches!(
        reg.get_by_alias("m", "production"),
        Err(Error::Malformed { .. })
    ));
    std::fs::write(root.join("aliases.json"), "{\"production\": \"abc\"}").unwrap();
    assert!(matches!(
        reg.get_by_alias("m", "production"),
        Err(Error::Malformed { .. })
    ));
}
