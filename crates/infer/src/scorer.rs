//! The model facade: [`open`] turns any [`ModelSpec`] — a bundle, a registered version,
//! BirdNET, a probe, a weighted ensemble of these — into one [`Scorer`] that takes audio and
//! answers on a window grid. Every tool that runs a model goes through it.
//!
//! One bundle answers on its own windows (its recipe's length and hop), exactly as
//! [`Classifier::identify`]. Anything else is an [`Ensemble`] on the 5 s grid: each member's
//! recipe computed once per recording, pooled, blended by probability or by rank.
//!
//! BirdNET and its probes live in `silencio-onnx` (which depends on this crate); a binary
//! built with them calls [`install_external`] once at start. Without it, a spec that needs
//! them fails at load time with `no_birdnet`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use burn::tensor::Device;
use silencio_audio::{DecodeOptions, WindowConfig};

use crate::bundle::{ModelBundle, Species};
use crate::classifier::{Classifier, Identification};
use crate::ensemble::{Ensemble, Member};
use crate::licence::{self, Licence};
use crate::location::{LocationFilter, OccurrenceModel};
use crate::priors::{PostProcess, RecordingContext};
use crate::spec::{Blend, Leaf, ModelSpec, Resolved};
use crate::{Error, Result};

/// How the models are run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenOptions {
    /// Windows per forward pass.
    pub batch_size: usize,
    /// Longest recording accepted, in seconds.
    pub max_duration_s: f64,
}

impl Default for OpenOptions {
    fn default() -> Self {
        Self {
            batch_size: 16,
            max_duration_s: DecodeOptions::default().max_duration_s,
        }
    }
}

/// One loaded leaf with what reports say about it.
pub struct LoadedLeaf {
    /// The model.
    pub member: Box<dyn Member>,
    /// The frequency band it listens to, in Hz (Raven/Audacity boxes).
    pub band: (f64, f64),
    /// Licences of its weights and what they derive from.
    pub licences: Vec<Licence>,
    /// Whether its weights were trained on the task.
    pub trained: bool,
}

impl std::fmt::Debug for LoadedLeaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedLeaf")
            .field("member", &self.member.name())
            .field("licences", &self.licences)
            .finish()
    }
}

/// A location filter shared by a model's users (requests, streams).
pub type SharedFilter = Arc<dyn LocationFilter + Send + Sync>;

/// Loads the leaves this crate cannot: BirdNET and its probes.
pub trait ExternalLeaves: Send + Sync {
    /// Loads `leaf` (never a bundle) onto `device`.
    fn load(&self, leaf: &Leaf, device: &Device, opts: &OpenOptions) -> Result<LoadedLeaf>;

    /// BirdNET's range model (latitude, longitude, week → occurrence) over `species`, for
    /// models with a BirdNET member and no ranges of their own; `None` without BirdNET.
    fn range(&self, species: &[Species], device: &Device) -> Result<Option<SharedFilter>> {
        let _ = (species, device);
        Ok(None)
    }
}

/// The location filter of a model in the classes `species`: its first member's bundle ranges
/// (`bundle_ranges`), else, when a member is BirdNET or a probe (so its licence is already
/// BirdNET's), BirdNET's range model. A model without either has none.
pub fn location_filter(
    bundle_ranges: Option<Arc<OccurrenceModel>>,
    leaves: &[Leaf],
    species: &[Species],
    device: &Device,
) -> Result<Option<SharedFilter>> {
    if let Some(m) = bundle_ranges {
        return Ok(Some(m));
    }
    match EXTERNAL.get() {
        Some(x) if leaves.iter().any(Leaf::needs_birdnet) => x.range(species, device),
        _ => Ok(None),
    }
}

static EXTERNAL: OnceLock<Box<dyn ExternalLeaves>> = OnceLock::new();

/// Installs the loader of BirdNET leaves for this process (once; later calls are ignored and
/// return false).
pub fn install_external(loader: Box<dyn ExternalLeaves>) -> bool {
    EXTERNAL.set(loader).is_ok()
}

/// The `no_birdnet` error for `what`.
pub fn no_birdnet(what: &str) -> Error {
    Error::NoBirdnet(format!(
        "{what} needs BirdNET and this build has none: convert it with \
         onnx-import/scripts/convert-birdnet.sh OUT_DIR, then build with \
         SILENCIO_BIRDNET_DIR=OUT_DIR and --features birdnet"
    ))
}

/// Loads one leaf: bundles here, BirdNET leaves through [`install_external`]'s loader.
pub fn load_leaf(leaf: &Leaf, device: &Device, opts: &OpenOptions) -> Result<LoadedLeaf> {
    match leaf {
        Leaf::Bundle(dir) => {
            let c = Classifier::load(dir, device)?
                .with_batch_size(opts.batch_size)
                .with_max_duration(opts.max_duration_s);
            let f = c.features();
            Ok(LoadedLeaf {
                band: (f.f_min, f.f_max),
                licences: c.meta().provenance.licences.clone(),
                trained: c.meta().provenance.trained,
                member: Box::new(c),
            })
        }
        other => match EXTERNAL.get() {
            Some(x) => x.load(other, device, opts),
            None => Err(no_birdnet(&match other {
                Leaf::Probe(p) => format!("{} (a linear probe on BirdNET embeddings)", p.display()),
                _ => "BirdNET".to_string(),
            })),
        },
    }
}

enum Kind {
    /// Boxed: a classifier holds its log-mel plan inline, an ensemble only pointers.
    Single(Box<Classifier>),
    Ensemble(Ensemble),
}

/// Any model spec, loaded: audio in, per-window species scores out.
pub struct Scorer {
    kind: Kind,
    licences: Vec<Licence>,
    band: (f64, f64),
    untrained: Vec<String>,
    location: Option<SharedFilter>,
    /// The (first member's) bundle's priors and smoothing.
    post: Option<Arc<PostProcess>>,
}

impl std::fmt::Debug for Scorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scorer")
            .field("name", &self.name())
            .field("licences", &self.licences)
            .finish()
    }
}

/// Opens `spec` on `device`.
pub fn open(spec: &ModelSpec, device: &Device, opts: &OpenOptions) -> Result<Scorer> {
    let r = spec.resolve()?;
    if r.single
        && let [(Leaf::Bundle(dir), _)] = r.members.as_slice()
    {
        let c = Classifier::load(dir, device)?
            .with_batch_size(opts.batch_size)
            .with_max_duration(opts.max_duration_s);
        let f = c.features();
        return Ok(Scorer {
            untrained: if c.meta().provenance.trained {
                Vec::new()
            } else {
                vec![c.model_version()]
            },
            licences: licence::union([c.meta().provenance.licences.as_slice()]),
            band: (f.f_min, f.f_max),
            location: c.location().cloned().map(|m| m as SharedFilter),
            post: crate::bundle::read_post_process(dir, c.meta())?.map(Arc::new),
            kind: Kind::Single(Box::new(c)),
        });
    }
    // The ensemble answers in its first member's classes, so that member's bundle says where
    // they are expected, and its priors and smoothing apply to the blend.
    let first = match r.members.first() {
        Some((Leaf::Bundle(dir), _)) => Some(ModelBundle::open(dir)?),
        _ => None,
    };
    let ranges = first.as_ref().map(ModelBundle::location).transpose()?;
    let ranges = ranges.flatten().map(Arc::new);
    let post = first.as_ref().map(ModelBundle::post_process).transpose()?;
    let post = post.flatten().map(Arc::new);
    let leaves = r
        .members
        .iter()
        .map(|(l, _)| load_leaf(l, device, opts))
        .collect::<Result<Vec<_>>>()?;
    let mut ens = ensemble_of(&r, &leaves, opts)?;
    let kinds: Vec<Leaf> = r.members.iter().map(|(l, _)| l.clone()).collect();
    let location = location_filter(ranges, &kinds, ens.species(), device)?;
    let licences = licence::union(leaves.iter().map(|l| l.licences.as_slice()));
    let band = (
        leaves
            .iter()
            .map(|l| l.band.0)
            .fold(f64::INFINITY, f64::min),
        leaves.iter().map(|l| l.band.1).fold(0.0, f64::max),
    );
    let untrained = untrained(&leaves.iter().collect::<Vec<_>>());
    for (leaf, (_, w)) in leaves.into_iter().zip(&r.members) {
        ens = ens.add(leaf.member, *w)?;
    }
    if ens.needs_calibration() {
        let reference = r
            .rank_reference
            .as_deref()
            .ok_or_else(|| Error::Spec("rank blending without rank_reference".into()))?;
        let files = reference_files(reference)?;
        let mut scored = Vec::with_capacity(files.len());
        for f in &files {
            let bytes = std::fs::read(f).map_err(|e| Error::io(f, e))?;
            let p = ens.prepare(bytes)?;
            scored.push((p.duration_s, ens.score_prepared(&p)?));
        }
        ens.calibrate(&scored)?;
    }
    Ok(Scorer {
        kind: Kind::Ensemble(ens),
        licences,
        band,
        untrained,
        location,
        post,
    })
}

/// The (memberless) ensemble a resolved spec describes: its name, the first member's classes,
/// the 5 s grid, the blend. Callers add the members (loaded here, or run elsewhere).
pub fn ensemble_of(r: &Resolved, leaves: &[LoadedLeaf], opts: &OpenOptions) -> Result<Ensemble> {
    let first = leaves
        .first()
        .ok_or_else(|| Error::Ensemble("the ensemble has no members".into()))?;
    let species: Vec<Species> = first.member.species().to_vec();
    let name = r.name.clone().unwrap_or_else(|| {
        leaves
            .iter()
            .map(|l| l.member.name())
            .collect::<Vec<_>>()
            .join("+")
    });
    Ok(Ensemble::new(name, species, WindowConfig::default())
        .with_max_duration(opts.max_duration_s)
        .with_blend(r.blend))
}

fn untrained(leaves: &[&LoadedLeaf]) -> Vec<String> {
    leaves
        .iter()
        .filter(|l| !l.trained)
        .map(|l| l.member.name())
        .collect()
}

/// Audio file extensions read as reference recordings.
pub const AUDIO_EXTENSIONS: [&str; 7] = ["ogg", "wav", "flac", "mp3", "m4a", "mp4", "opus"];

/// The recordings of a rank reference: the file itself, or the audio files of a directory
/// (recursively, in path order).
pub fn reference_files(path: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let p = e.map_err(|e| Error::io(dir, e))?.path();
            if p.is_dir() {
                walk(&p, out)?;
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| AUDIO_EXTENSIONS.iter().any(|a| a.eq_ignore_ascii_case(x)))
            {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    if path.is_dir() {
        walk(path, &mut out)?;
        out.sort();
    } else {
        out.push(path.to_path_buf());
    }
    if out.is_empty() {
        return Err(Error::Spec(format!(
            "rank reference {} holds no audio files",
            path.display()
        )));
    }
    Ok(out)
}

impl Scorer {
    /// `name@version` of the model, or the ensemble's name.
    pub fn name(&self) -> String {
        match &self.kind {
            Kind::Single(c) => c.model_version(),
            Kind::Ensemble(e) => e.name().to_string(),
        }
    }

    /// Classes in score order.
    pub fn species(&self) -> &Arc<Vec<Species>> {
        match &self.kind {
            Kind::Single(c) => c.species(),
            Kind::Ensemble(e) => e.species(),
        }
    }

    /// Licences of every member, deduplicated.
    pub fn licences(&self) -> &[Licence] {
        &self.licences
    }

    /// The band the members listen to, in Hz (lowest low, highest high).
    pub fn band(&self) -> (f64, f64) {
        self.band
    }

    /// Where its classes are expected (the location filter; see [`location_filter`]).
    pub fn location(&self) -> Option<&(dyn LocationFilter + Send + Sync)> {
        self.location.as_deref()
    }

    /// Members whose weights are marked untrained (their scores are not identifications).
    pub fn untrained(&self) -> &[String] {
        &self.untrained
    }

    /// The window grid of its answers.
    pub fn window(&self) -> WindowConfig {
        match &self.kind {
            Kind::Single(c) => c.features().window.clone(),
            Kind::Ensemble(e) => e.window().clone(),
        }
    }

    /// The blend, for an ensemble.
    pub fn blend(&self) -> Option<Blend> {
        match &self.kind {
            Kind::Single(_) => None,
            Kind::Ensemble(e) => Some(e.blend()),
        }
    }

    /// The bundle, when the spec is one.
    pub fn classifier(&self) -> Option<&Classifier> {
        match &self.kind {
            Kind::Single(c) => Some(c),
            Kind::Ensemble(_) => None,
        }
    }

    /// The ensemble, when the spec is not one bundle.
    pub fn ensemble(&self) -> Option<&Ensemble> {
        match &self.kind {
            Kind::Single(_) => None,
            Kind::Ensemble(e) => Some(e),
        }
    }

    /// Decodes an encoded recording and scores each window.
    /// Without a recording context only the smoothing of [`Scorer::post_process`] applies.
    pub fn identify(&self, bytes: Vec<u8>) -> Result<Identification> {
        self.identify_in(bytes, &RecordingContext::default())
    }

    /// [`Scorer::identify`] of a recording made at `ctx` (site and hour): the model's
    /// post-processing applies in full.
    pub fn identify_in(&self, bytes: Vec<u8>, ctx: &RecordingContext) -> Result<Identification> {
        let mut id = match &self.kind {
            Kind::Single(c) => c.identify(bytes),
            Kind::Ensemble(e) => e.identify(bytes),
        }?;
        self.apply_post_process(&mut id, ctx);
        Ok(id)
    }

    /// [`Scorer::identify_in`] with an embedding per answered window (same windows, same
    /// order), when the model gives embeddings: one bundle's own (`Model::embed`); for an
    /// ensemble, its first member that has them (bundles and BirdNET do), mean-pooled onto the
    /// 5 s grid. Post-processing changes the scores only.
    pub fn identify_embedded(
        &self,
        bytes: Vec<u8>,
        ctx: &RecordingContext,
    ) -> Result<(Identification, Option<Vec<Vec<f32>>>)> {
        let (mut id, emb) = match &self.kind {
            Kind::Single(c) => c.identify_embedded(bytes).map(|(id, e)| (id, Some(e))),
            Kind::Ensemble(e) => e.identify_embedded(bytes),
        }?;
        self.apply_post_process(&mut id, ctx);
        Ok((id, emb))
    }

    /// [`Scorer::identify`] on a file, in the context its name gives
    /// ([`RecordingContext::from_path`]: `H02_20230420_074000.ogg` is recorder H02 at 07 h).
    pub fn identify_path(&self, path: impl AsRef<Path>) -> Result<Identification> {
        let p = path.as_ref();
        self.identify_path_in(p, &RecordingContext::from_path(p))
    }

    /// [`Scorer::identify_path`] with the recording context given, for a path whose own name
    /// does not say it (a watched file opened through `/proc/self/fd/N`).
    pub fn identify_path_in(
        &self,
        path: impl AsRef<Path>,
        ctx: &RecordingContext,
    ) -> Result<Identification> {
        let p = path.as_ref();
        let mut id = match &self.kind {
            Kind::Single(c) => c.identify_path(p),
            Kind::Ensemble(e) => e.identify(std::fs::read(p).map_err(|err| Error::io(p, err))?),
        }?;
        self.apply_post_process(&mut id, ctx);
        Ok(id)
    }
}

/// Site/hour priors and temporal smoothing ([`crate::priors`]).
impl Scorer {
    /// The post-processing its answers go through: a bundle's own `priors.json`, or for an
    /// ensemble its first member's, applied to the blend (the ensemble answers in that
    /// member's classes).
    pub fn post_process(&self) -> Option<&PostProcess> {
        self.post.as_deref()
    }

    /// Applies [`Scorer::post_process`] to `id` (scored by this model) for a recording made at
    /// `ctx`: priors when `ctx` is known to them, then smoothing. For callers that score
    /// through other paths (streams, the server's batches).
    pub fn apply_post_process(&self, id: &mut Identification, ctx: &RecordingContext) {
        if let Some(p) = &self.post {
            p.apply(&id.species, ctx, &mut id.windows);
        }
    }
}
