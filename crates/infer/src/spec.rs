//! What a model name means, in one place for every tool that runs a model (identify, serve,
//! watch, submission, eval, the trainer's evaluation).
//!
//! A [`ModelSpec`] is parsed from the CLI's `--model` strings or from a small ensemble file:
//! - a bundle directory (`bundle.json`), a BirdNET probe directory (`probe.json`);
//! - `birdnet`: BirdNET V2.4 (builds with the `birdnet` feature);
//! - `registry` (the registry's production, else staging version) or `registry:<alias or
//!   version>`;
//! - an ensemble file (`*.toml` / `*.json`), or a directory holding `ensemble.toml` (how the
//!   registry stores an ensemble version: the file beside its member bundles):
//!
//! ```toml
//! name = "effb0+birdnet"     # optional; default: the members' names joined by `+`
//! blend = "rank"             # "probability" (default) or "rank"
//! rank_reference = "refs"    # rank blending: audio whose windows give each member's score
//!                            # distribution (relative paths: from the file's directory)
//! [[members]]
//! model = "effb0"            # any spec string; relative paths from the file's directory
//! weight = 0.6
//! [[members]]
//! model = "birdnet"
//! weight = 0.4
//! ```
//!
//! [`ModelSpec::resolve`] follows registry references and flattens nested ensembles into the
//! leaves that run ([`Leaf`]); [`crate::scorer::open`] loads them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::BUNDLE_FILE;
use crate::{Error, Result};

/// The ensemble file inside a directory (a registered ensemble version).
pub const ENSEMBLE_FILE: &str = "ensemble.toml";
/// A probe bundle's description file (`silencio-onnx` writes probes).
pub const PROBE_FILE: &str = "probe.json";
/// The spec string of BirdNET V2.4.
pub const BIRDNET: &str = "birdnet";
/// The spec string of the registry's default model, and the prefix of `registry:<name>`.
pub const REGISTRY: &str = "registry";

/// How registry references nest at most (an ensemble version naming another version …).
const MAX_DEPTH: usize = 8;

/// How an ensemble combines its members' scores on each window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Blend {
    /// Weighted mean of the members' probabilities.
    #[default]
    Probability,
    /// Weighted mean of each member's per-class rank: its score's position in that member's
    /// distribution of scores for the class over a reference set (the BirdCLEF 2026 winner's
    /// blend: members with differently calibrated probabilities count as their weights say).
    Rank,
}

impl std::str::FromStr for Blend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "probability" | "prob" | "mean" => Ok(Self::Probability),
            "rank" => Ok(Self::Rank),
            other => Err(Error::Spec(format!(
                "unknown blend {other:?} (expected probability or rank)"
            ))),
        }
    }
}

impl Blend {
    /// Its name in files and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Probability => "probability",
            Self::Rank => "rank",
        }
    }
}

/// Which registered version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryRef {
    /// Production, else staging.
    Default,
    /// An alias (`production`, `staging`, …) or a version.
    Named(String),
}

/// A model as a user names it.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelSpec {
    /// A bundle directory.
    Bundle(PathBuf),
    /// A linear probe on BirdNET embeddings (needs BirdNET).
    Probe(PathBuf),
    /// BirdNET V2.4.
    BirdNet,
    /// A registered version.
    Registry {
        /// The registry root.
        root: PathBuf,
        /// Which version.
        reference: RegistryRef,
    },
    /// A weighted ensemble.
    Ensemble(EnsembleSpec),
}

/// A weighted ensemble of specs.
#[derive(Debug, Clone, PartialEq)]
pub struct EnsembleSpec {
    /// Its name (default: the members' names joined by `+`).
    pub name: Option<String>,
    /// How scores combine.
    pub blend: Blend,
    /// Members and their weights (> 0).
    pub members: Vec<(ModelSpec, f32)>,
    /// Rank blending: audio (a file or a directory of them) that gives each member's score
    /// distribution per class.
    pub rank_reference: Option<PathBuf>,
}

/// The file form of an ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleFile {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Blend.
    #[serde(default)]
    pub blend: Blend,
    /// Reference audio for rank blending (relative to the file's directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rank_reference: Option<String>,
    /// Members.
    pub members: Vec<EnsembleEntry>,
}

/// One member line of an [`EnsembleFile`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleEntry {
    /// A spec string (relative paths from the file's directory).
    pub model: String,
    /// Weight (> 0, default 1).
    #[serde(default = "one")]
    pub weight: f32,
}

fn one() -> f32 {
    1.0
}

impl EnsembleFile {
    /// Parses TOML, or JSON when `path` ends in `.json`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let bad = |m: String| Error::Spec(format!("{}: {m}", path.display()));
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))
        } else {
            toml::from_str(&text).map_err(|e| bad(e.to_string()))
        }
    }

    /// The TOML text of this file.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string_pretty(self).map_err(|e| Error::Spec(format!("ensemble file: {e}")))
    }
}

/// One model that runs: what a spec comes down to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// A bundle directory.
    Bundle(PathBuf),
    /// A probe directory.
    Probe(PathBuf),
    /// BirdNET V2.4.
    BirdNet,
}

impl Leaf {
    /// Whether it needs the `birdnet` build.
    pub fn needs_birdnet(&self) -> bool {
        !matches!(self, Leaf::Bundle(_))
    }
}

/// A spec with registry references followed and nested ensembles flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The ensemble's name, when it has one.
    pub name: Option<String>,
    /// How scores combine (irrelevant for one leaf).
    pub blend: Blend,
    /// Reference audio for rank blending.
    pub rank_reference: Option<PathBuf>,
    /// The leaves and their weights.
    pub members: Vec<(Leaf, f32)>,
    /// Whether the spec is one model rather than an ensemble (it then reports on its own
    /// window grid, unpooled).
    pub single: bool,
}

impl ModelSpec {
    /// Parses one `--model` string; paths must exist (a bundle, probe or ensemble).
    pub fn parse(s: &str, registry_root: &Path) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(Error::Spec("an empty model name".into()));
        }
        if s.eq_ignore_ascii_case(BIRDNET) {
            return Ok(Self::BirdNet);
        }
        if s == REGISTRY {
            return Ok(Self::Registry {
                root: registry_root.to_path_buf(),
                reference: RegistryRef::Default,
            });
        }
        if let Some(name) = s.strip_prefix("registry:") {
            if !silencio_common::registry::is_plain_version(name) {
                return Err(Error::Spec(format!(
                    "{s:?}: registry:<alias or version> names a version directly under the \
                     registry (no path separators, not hidden)"
                )));
            }
            return Ok(Self::Registry {
                root: registry_root.to_path_buf(),
                reference: RegistryRef::Named(name.to_string()),
            });
        }
        Self::from_path(Path::new(s), registry_root)
    }

    /// What is at `path`: a bundle, a probe, an ensemble directory or an ensemble file.
    pub fn from_path(path: &Path, registry_root: &Path) -> Result<Self> {
        if path.is_dir() {
            if path.join(BUNDLE_FILE).is_file() {
                return Ok(Self::Bundle(path.to_path_buf()));
            }
            if path.join(PROBE_FILE).is_file() {
                return Ok(Self::Probe(path.to_path_buf()));
            }
            if path.join(ENSEMBLE_FILE).is_file() {
                return Self::from_file(&path.join(ENSEMBLE_FILE), registry_root);
            }
            return Err(Error::Bundle {
                path: path.display().to_string(),
                problems: vec![format!(
                    "not a model: it holds no {BUNDLE_FILE}, {PROBE_FILE} or {ENSEMBLE_FILE}"
                )],
            });
        }
        if path.is_file() {
            return Self::from_file(path, registry_root);
        }
        Err(Error::Spec(format!(
            "no model at {:?}: expected a bundle or probe directory, an ensemble file (.toml, \
             .json), `{BIRDNET}`, `{REGISTRY}` or `registry:<alias or version>`",
            path.display().to_string()
        )))
    }

    /// An ensemble file; its relative paths are taken from the file's directory.
    pub fn from_file(path: &Path, registry_root: &Path) -> Result<Self> {
        let file = EnsembleFile::read(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let at = |p: &str| {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let mut members = Vec::with_capacity(file.members.len());
        for m in &file.members {
            let spec = match m.model.trim() {
                s if s.eq_ignore_ascii_case(BIRDNET)
                    || s == REGISTRY
                    || s.starts_with("registry:") =>
                {
                    Self::parse(s, registry_root)?
                }
                s => Self::from_path(&at(s), registry_root)?,
            };
            members.push((spec, m.weight));
        }
        Self::ensemble(EnsembleSpec {
            name: file.name,
            blend: file.blend,
            members,
            rank_reference: file.rank_reference.as_deref().map(at),
        })
    }

    /// An ensemble, checked: at least one member, weights finite and > 0, a reference when
    /// blending by rank.
    pub fn ensemble(e: EnsembleSpec) -> Result<Self> {
        if e.members.is_empty() {
            return Err(Error::Spec("an ensemble needs at least one member".into()));
        }
        if let Some((_, w)) = e.members.iter().find(|(_, w)| !(w.is_finite() && *w > 0.0)) {
            return Err(Error::Spec(format!(
                "ensemble weights must be > 0, got {w}"
            )));
        }
        if e.blend == Blend::Rank && e.rank_reference.is_none() {
            return Err(Error::Spec(
                "blend = \"rank\" needs rank_reference: audio whose windows give each member's \
                 score distribution (ranks within one request would tie on a single window)"
                    .into(),
            ));
        }
        Ok(Self::Ensemble(e))
    }

    /// The CLI's form: no `--model` means the registry's default; one without weights is that
    /// model; several (or weights, or a blend) make an ensemble.
    pub fn from_cli(
        models: &[String],
        weights: &[f32],
        blend: Option<Blend>,
        rank_reference: Option<&Path>,
        registry_root: &Path,
    ) -> Result<Self> {
        if !weights.is_empty() && weights.len() != models.len().max(1) {
            return Err(Error::Spec(format!(
                "{} --weight values for {} models: give one per model or none",
                weights.len(),
                models.len().max(1)
            )));
        }
        let mut specs = models
            .iter()
            .map(|m| Self::parse(m, registry_root))
            .collect::<Result<Vec<_>>>()?;
        if specs.is_empty() {
            specs.push(Self::parse(REGISTRY, registry_root)?);
        }
        if specs.len() == 1 && weights.is_empty() && blend.is_none() {
            return Ok(specs.remove(0));
        }
        Self::ensemble(EnsembleSpec {
            name: None,
            blend: blend.unwrap_or_default(),
            members: specs
                .into_iter()
                .enumerate()
                .map(|(i, s)| (s, weights.get(i).copied().unwrap_or(1.0)))
                .collect(),
            rank_reference: rank_reference.map(Path::to_path_buf),
        })
    }

    /// Follows registry references and flattens nested ensembles (a nested member's weight is
    /// its share of its ensemble times that ensemble's weight, which keeps probability blends
    /// exact).
    pub fn resolve(&self) -> Result<Resolved> {
        self.resolve_at(0)
    }

    fn resolve_at(&self, depth: usize) -> Result<Resolved> {
        if depth > MAX_DEPTH {
            return Err(Error::Spec(format!(
                "model specs nest more than {MAX_DEPTH} deep (a registry version naming itself?)"
            )));
        }
        let leaf = |l: Leaf| Resolved {
            name: None,
            blend: Blend::Probability,
            rank_reference: None,
            members: vec![(l, 1.0)],
            single: true,
        };
        match self {
            Self::Bundle(p) => Ok(leaf(Leaf::Bundle(p.clone()))),
            Self::Probe(p) => Ok(leaf(Leaf::Probe(p.clone()))),
            Self::BirdNet => Ok(leaf(Leaf::BirdNet)),
            Self::Registry { root, reference } => {
                let dir = registry_dir(root, reference)?;
                Self::from_path(&dir, root)?.resolve_at(depth + 1)
            }
            Self::Ensemble(e) => {
                let mut members = Vec::new();
                for (spec, w) in &e.members {
                    let r = spec.resolve_at(depth + 1)?;
                    if !r.single && r.members.len() > 1 && r.blend != e.blend {
                        return Err(Error::Spec(format!(
                            "a member ensemble blends by {} inside an ensemble blending by {}: \
                             nested ensembles must blend alike",
                            r.blend.as_str(),
                            e.blend.as_str()
                        )));
                    }
                    let total: f32 = r.members.iter().map(|(_, x)| x).sum();
                    members.extend(r.members.into_iter().map(|(l, x)| (l, w * x / total)));
                }
                Ok(Resolved {
                    name: e.name.clone(),
                    blend: e.blend,
                    rank_reference: e.rank_reference.clone(),
                    members,
                    single: false,
                })
            }
        }
    }

    /// Whether running it needs the `birdnet` build.
    pub fn needs_birdnet(&self) -> Result<bool> {
        Ok(self
            .resolve()?
            .members
            .iter()
            .any(|(l, _)| l.needs_birdnet()))
    }
}

/// Writes `spec` as a self-contained ensemble directory at `out` (which must not exist): every
/// bundle or probe member copied into `out/m<k>-<its directory name>/`, BirdNET named as such,
/// the rank reference copied into `out/rank_reference/`, and an [`ENSEMBLE_FILE`] naming them
/// by relative path with their flattened weights. Built beside `out` and renamed into place.
/// The result is what the registry stores as an ensemble version: registering copies the
/// directory, and `registry:<version>` then opens it like any spec.
pub fn pack(spec: &ModelSpec, name: Option<&str>, out: &Path) -> Result<PathBuf> {
    use silencio_common::fs::copy_tree;
    if out.exists() {
        return Err(Error::Spec(format!(
            "{} exists; an ensemble is packed into a new directory",
            out.display()
        )));
    }
    let r = spec.resolve()?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
    let stage = parent.join(format!(
        ".{}.partial-{}",
        out.file_name()
            .map_or_else(|| "ensemble".into(), |n| n.to_string_lossy()),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&stage);
    let built = (|| -> Result<()> {
        std::fs::create_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
        let mut members = Vec::with_capacity(r.members.len());
        for (k, (leaf, weight)) in r.members.iter().enumerate() {
            let model = match leaf {
                Leaf::BirdNet => BIRDNET.to_string(),
                Leaf::Bundle(dir) | Leaf::Probe(dir) => {
                    let base = dir
                        .file_name()
                        .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned());
                    let rel = format!("m{k}-{base}");
                    copy_tree(dir, &stage.join(&rel)).map_err(|e| Error::io(dir, e))?;
                    rel
                }
            };
            members.push(EnsembleEntry {
                model,
                weight: *weight,
            });
        }
        let rank_reference = match &r.rank_reference {
            Some(src) => {
                let dest = stage.join("rank_reference");
                if src.is_dir() {
                    copy_tree(src, &dest).map_err(|e| Error::io(src, e))?;
                } else {
                    std::fs::create_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
                    let file = src.file_name().unwrap_or_default();
                    std::fs::copy(src, dest.join(file)).map_err(|e| Error::io(src, e))?;
                }
                Some("rank_reference".to_string())
            }
            None => None,
        };
        let file = EnsembleFile {
            name: name.map(str::to_string).or(r.name.clone()),
            blend: r.blend,
            rank_reference,
            members,
        };
        let path = stage.join(ENSEMBLE_FILE);
        silencio_common::write_atomic(&path, file.to_toml()?.as_bytes())
            .map_err(|e| Error::io(&path, e))?;
        std::fs::rename(&stage, out).map_err(|e| Error::io(out, e))?;
        silencio_common::fs::sync_dir(&parent).map_err(|e| Error::io(&parent, e))
    })();
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&stage);
        return Err(e);
    }
    Ok(out.to_path_buf())
}

/// The directory of a registered version.
fn registry_dir(root: &Path, reference: &RegistryRef) -> Result<PathBuf> {
    use silencio_common::registry as layout;
    match reference {
        RegistryRef::Default => Ok(crate::registry::resolve_default(root)?.0),
        RegistryRef::Named(name) => {
            let aliases = crate::registry::read_aliases(root)?;
            let version = aliases.get(name).map_or(name.as_str(), String::as_str);
            if !layout::is_plain_version(version) {
                return Err(Error::Registry {
                    root: root.display().to_string(),
                    message: format!("alias {name} points at an invalid version {version:?}"),
                });
            }
            let dir = layout::version_dir(root, version);
            if !dir.is_dir() {
                return Err(Error::Registry {
                    root: root.display().to_string(),
                    message: format!(
                        "{name:?} is neither an alias ({}) nor a registered version",
                        aliases.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                });
            }
            Ok(dir)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(dir: &Path, file: &str) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file), "{}").unwrap();
    }

    #[test]
    fn strings_parse_to_what_they_name() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("registry");
        touch(&tmp.path().join("b"), BUNDLE_FILE);
        touch(&tmp.path().join("p"), PROBE_FILE);
        assert_eq!(
            ModelSpec::parse("birdnet", &root).unwrap(),
            ModelSpec::BirdNet
        );
        assert_eq!(
            ModelSpec::parse("registry:production", &root).unwrap(),
            ModelSpec::Registry {
                root: root.clone(),
                reference: RegistryRef::Named("production".into())
            }
        );
        assert!(ModelSpec::parse("registry:../x", &root).is_err());
        let b = tmp.path().join("b");
        assert_eq!(
            ModelSpec::parse(b.to_str().unwrap(), &root).unwrap(),
            ModelSpec::Bundle(b)
        );
        let p = tmp.path().join("p");
        assert_eq!(
            ModelSpec::parse(p.to_str().unwrap(), &root).unwrap(),
            ModelSpec::Probe(p)
        );
        let e = ModelSpec::parse(tmp.path().join("nothing").to_str().unwrap(), &root);
        assert_eq!(e.unwrap_err().kind(), "spec");
        let e = ModelSpec::parse(tmp.path().to_str().unwrap(), &root).unwrap_err();
        assert_eq!(e.kind(), "bundle");
        assert!(e.to_string().contains("not a model"));
    }

    #[test]
    fn ensemble_files_resolve_relative_to_themselves_and_flatten() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("registry");
        touch(&tmp.path().join("e/a"), BUNDLE_FILE);
        touch(&tmp.path().join("e/b"), BUNDLE_FILE);
        touch(&tmp.path().join("c"), BUNDLE_FILE);
        std::fs::write(
            tmp.path().join("e/ensemble.toml"),
            "blend = \"probability\"\n[[members]]\nmodel = \"a\"\nweight = 3\n\
             [[members]]\nmodel = \"b\"\n",
        )
        .unwrap();
        std::fs::write(
            tmp.path().join("outer.json"),
            r#"{"name": "big", "members": [{"model": "e", "weight": 2}, {"model": "c"}, {"model": "birdnet", "weight": 0.5}]}"#,
        )
        .unwrap();
        let spec =
            ModelSpec::parse(tmp.path().join("outer.json").to_str().unwrap(), &root).unwrap();
        let r = spec.resolve().unwrap();
        assert!(!r.single);
        assert_eq!(r.name.as_deref(), Some("big"));
        let want = [
            (Leaf::Bundle(tmp.path().join("e/a")), 2.0 * 3.0 / 4.0),
            (Leaf::Bundle(tmp.path().join("e/b")), 2.0 * 1.0 / 4.0),
            (Leaf::Bundle(tmp.path().join("c")), 1.0),
            (Leaf::BirdNet, 0.5),
        ];
        assert_eq!(r.members.len(), want.len());
        for ((l, w), (wl, ww)) in r.members.iter().zip(want) {
            assert_eq!(*l, wl);
            assert!((w - ww).abs() < 1e-6, "{w} vs {ww}");
        }
        assert!(spec.needs_birdnet().unwrap());
    }

    #[test]
    fn bad_ensembles_are_refused_with_reasons() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("registry");
        touch(&tmp.path().join("a"), BUNDLE_FILE);
        let a = tmp.path().join("a").display().to_string();
        let e = ModelSpec::from_cli(std::slice::from_ref(&a), &[1.0, 2.0], None, None, &root)
            .unwrap_err();
        assert!(e.to_string().contains("--weight"), "{e}");
        let e = ModelSpec::from_cli(&[a.clone(), a.clone()], &[1.0, 0.0], None, None, &root)
            .unwrap_err();
        assert!(e.to_string().contains("> 0"), "{e}");
        let e = ModelSpec::from_cli(&[a.clone(), a.clone()], &[], Some(Blend::Rank), None, &root)
            .unwrap_err();
        assert!(e.to_string().contains("rank_reference"), "{e}");
        std::fs::write(tmp.path().join("x.toml"), "members = []\nfoo = 1\n").unwrap();
        let e = ModelSpec::parse(tmp.path().join("x.toml").to_str().unwrap(), &root).unwrap_err();
        assert_eq!(e.kind(), "spec");
        // One model without weights is that model, not an ensemble of one.
        assert_eq!(
            ModelSpec::from_cli(std::slice::from_ref(&a), &[], None, None, &root).unwrap(),
            ModelSpec::Bundle(a.into())
        );
    }

    #[test]
    fn registry_names_follow_aliases_and_versions() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("registry");
        touch(&root.join("versions/3"), BUNDLE_FILE);
        touch(&root.join("versions/4"), BUNDLE_FILE);
        std::fs::write(
            root.join("aliases.json"),
            r#"{"production": "3", "staging": "4"}"#,
        )
        .unwrap();
        let leaf_of = |s: &str| {
            ModelSpec::parse(s, &root)
                .unwrap()
                .resolve()
                .unwrap()
                .members[0]
                .0
                .clone()
        };
        assert_eq!(leaf_of("registry"), Leaf::Bundle(root.join("versions/3")));
        assert_eq!(
            leaf_of("registry:staging"),
            Leaf::Bundle(root.join("versions/4"))
        );
        assert_eq!(leaf_of("registry:3"), Leaf::Bundle(root.join("versions/3")));
        let e = ModelSpec::parse("registry:9", &root)
            .unwrap()
            .resolve()
            .unwrap_err();
        assert_eq!(e.kind(), "registry");
        // An ensemble version: its file beside its members.
        let v5 = root.join("versions/5");
        touch(&v5.join("m1"), BUNDLE_FILE);
        std::fs::write(
            v5.join(ENSEMBLE_FILE),
            "[[members]]\nmodel = \"m1\"\n[[members]]\nmodel = \"registry:3\"\n",
        )
        .unwrap();
        let r = ModelSpec::parse("registry:5", &root)
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(
            r.members.iter().map(|m| m.0.clone()).collect::<Vec<_>>(),
            vec![
                Leaf::Bundle(v5.join("m1")),
                Leaf::Bundle(root.join("versions/3"))
            ]
        );
    }
}
