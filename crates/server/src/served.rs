//! A served model version: whatever a model spec names, opened through the infer crate's
//! facade and run on the server's batching engines.
//!
//! - One bundle: its features go to its [`Engine`] and the answer is on its own windows, as
//!   `silencio identify` gives it.
//! - An ensemble (bundles, BirdNET, probes): the upload is decoded once per member sample rate
//!   and each recipe computed once ([`Ensemble::prepare`]); each bundle member's features go
//!   to that member's own engine (batched with other requests' windows), members that are not
//!   bundles (BirdNET, probes) run on the blocking pool; the facade pools and blends the
//!   answers onto the 5 s grid ([`Ensemble::combine`]).
//!
//! The licence gate runs before anything loads: a commercial deployment refuses a
//! non-commercial or unlicensed member ([`silencio_infer::licence::check`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use silencio_audio::{AudioInfo, Features, LogMel, WindowConfig};
use silencio_infer::ensemble::{MemberInput, Prepared};
use silencio_infer::location::LocationFilter;
use silencio_infer::scorer::SharedFilter;
use silencio_infer::scorer::{LoadedLeaf, OpenOptions};
use silencio_infer::{
    BundleMeta, Deployment, Ensemble, Identification, Leaf, Licence, MemberInfo, ModelBundle,
    ModelSpec, PostProcess, RecordingContext, Species, WindowScores, licence,
};

use crate::config::EngineConfig;
use crate::engine::{Engine, Priority};
use crate::{Error, Result};

/// One model version, loaded with its replicas and warmed up.
#[derive(Debug)]
pub struct LoadedModel {
    name: String,
    source: String,
    loaded_at: String,
    species: Arc<Vec<Species>>,
    licences: Vec<Licence>,
    trained: bool,
    architecture: String,
    window: WindowConfig,
    /// Requests answered by an ensemble (a single bundle's engine counts its own).
    answered: AtomicU64,
    /// Where its classes are expected (see [`silencio_infer::scorer::location_filter`]).
    location: Option<SharedFilter>,
    /// Its (first member's) bundle's site/hour priors and smoothing (`priors.json`).
    post: Option<Arc<PostProcess>>,
    runner: Runner,
}

enum Runner {
    Single {
        meta: Box<BundleMeta>,
        logmel: LogMel,
        engine: Engine,
    },
    Ensemble {
        ensemble: Ensemble,
        /// Per member: its engine when it is a bundle; the others run inside `ensemble`.
        engines: Vec<Option<Engine>>,
    },
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Runner::Single { engine, .. } => f.debug_tuple("Single").field(engine).finish(),
            Runner::Ensemble { ensemble, .. } => f.debug_tuple("Ensemble").field(ensemble).finish(),
        }
    }
}

/// An upload or a stream window made ready for the model.
pub(crate) enum Input {
    /// A single bundle's features.
    Features(Arc<Features>),
    /// An ensemble's members' inputs.
    Ensemble(Prepared),
}

impl Input {
    /// Windows of the answer (5 s windows of an ensemble's grid): what decides a request's
    /// queue.
    pub(crate) fn windows(&self) -> usize {
        match self {
            Input::Features(f) => f.windows.len(),
            Input::Ensemble(p) => (p.duration_s / 5.0).ceil() as usize,
        }
    }
}

/// What a request's scoring took.
pub(crate) struct Scoring {
    /// Per-window scores on the model's grid.
    pub windows: Vec<WindowScores>,
    /// Waiting for a batch (the longest over members).
    pub queue: Duration,
    /// Running (the longest over members).
    pub inference: Duration,
}

/// The members' scores of `p`: bundle members through their engines (blocking on the
/// answers; for load-time calibration, off the async runtime), the others in place.
fn score_members_blocking(
    ensemble: &Ensemble,
    engines: &[Option<Engine>],
    p: &Prepared,
) -> Result<Vec<Vec<WindowScores>>> {
    let mut out = Vec::with_capacity(engines.len());
    for (i, (engine, input)) in engines.iter().zip(&p.inputs).enumerate() {
        out.push(match (engine, input) {
            (Some(engine), MemberInput::Features(f)) => {
                let scored = engine
                    .submit(f.clone(), Priority::Low)
                    .blocking_recv()
                    .map_err(|_| Error::Internal("the model engine stopped".into()))??;
                WindowScores::of(f, scored.scores)
            }
            _ => ensemble
                .score_member(i, input)
                .ok_or_else(|| Error::Internal(format!("member {i} has no runner")))??,
        });
    }
    Ok(out)
}

impl LoadedModel {
    /// Opens `spec` and starts its engines (blocking until all replicas are warm); `source`
    /// says where it came from (a directory or `registry:<version>`) for `/v1/models`.
    pub fn load(
        spec: &ModelSpec,
        source: &str,
        cfg: &EngineConfig,
        deployment: Deployment,
    ) -> Result<Arc<Self>> {
        let resolved = spec.resolve()?;
        let loaded_at = crate::feedback::now_rfc3339();
        if resolved.single
            && let [(Leaf::Bundle(dir), _)] = resolved.members.as_slice()
        {
            let bundle = ModelBundle::open(dir)?;
            let location = bundle.location()?.map(|m| Arc::new(m) as SharedFilter);
            let post = bundle.post_process()?.map(Arc::new);
            let meta = bundle.meta().clone();
            let licences = licence::union([meta.provenance.licences.as_slice()]);
            licence::check(deployment, &meta.model_version(), &licences)?;
            let logmel = LogMel::new(&meta.features)?;
            let engine = Engine::start(
                dir,
                &meta.model_version(),
                meta.features.window.length_s,
                cfg,
            )?;
            return Ok(Arc::new(Self {
                name: meta.model_version(),
                source: source.to_string(),
                loaded_at,
                species: Arc::new(meta.species.clone()),
                licences,
                trained: meta.provenance.trained,
                architecture: meta.model.name().to_string(),
                window: meta.features.window.clone(),
                answered: AtomicU64::new(0),
                location,
                post,
                runner: Runner::Single {
                    meta: Box::new(meta),
                    logmel,
                    engine,
                },
            }));
        }
        // Bundle members are described from their bundle.json and licence-checked before any
        // weights load; BirdNET members must load to say what they are.
        let device = silencio_infer::parse_device(&cfg.device)?;
        let opts = OpenOptions {
            batch_size: cfg.max_batch,
            ..OpenOptions::default()
        };
        let mut members: Vec<(MemberInfo, Option<LoadedLeaf>)> = Vec::new();
        let mut licences = Vec::new();
        let mut trained = true;
        let mut architectures = Vec::new();
        for (leaf, _) in &resolved.members {
            if let Leaf::Bundle(dir) = leaf {
                let meta = ModelBundle::open(dir)?.meta().clone();
                if meta.provenance.licences.is_empty() {
                    // One unlicensed member leaves the whole ensemble's licence unknown.
                    licence::check(deployment, &meta.model_version(), &[])?;
                }
                licences.extend(meta.provenance.licences.iter().cloned());
                trained &= meta.provenance.trained;
                architectures.push(meta.model.name().to_string());
                members.push((
                    MemberInfo {
                        name: meta.model_version(),
                        species: meta.species.clone(),
                        sample_rate: meta.features.sample_rate,
                        recipe: Some(meta.features.clone()),
                    },
                    None,
                ));
            } else {
                let l = silencio_infer::scorer::load_leaf(leaf, &device, &opts)?;
                licences.extend(l.licences.iter().cloned());
                trained &= l.trained;
                architectures.push(l.member.name());
                members.push((MemberInfo::of(l.member.as_ref()), Some(l)));
            }
        }
        let licences = licence::union([licences.as_slice()]);
        // The answer is in the first member's classes; its bundle says where they live.
        let (ranges, post) = match resolved.members.first() {
            Some((Leaf::Bundle(dir), _)) => {
                let b = ModelBundle::open(dir)?;
                (b.location()?.map(Arc::new), b.post_process()?.map(Arc::new))
            }
            _ => (None, None),
        };

        let name = resolved.name.clone().unwrap_or_else(|| {
            members
                .iter()
                .map(|(i, _)| i.name.as_str())
                .collect::<Vec<_>>()
                .join("+")
        });
        licence::check(deployment, &name, &licences)?;
        let first = members
            .first()
            .map(|(i, _)| i.species.clone())
            .unwrap_or_default();
        let kinds: Vec<Leaf> = resolved.members.iter().map(|(l, _)| l.clone()).collect();
        let location = silencio_infer::scorer::location_filter(ranges, &kinds, &first, &device)?;
        let mut ensemble =
            Ensemble::new(name.clone(), first, WindowConfig::default()).with_blend(resolved.blend);
        let mut engines = Vec::with_capacity(members.len());
        for ((info, loaded), (leaf, w)) in members.into_iter().zip(&resolved.members) {
            match (loaded, leaf) {
                (Some(l), _) => {
                    ensemble = ensemble.add(l.member, *w)?;
                    engines.push(None);
                }
                (None, Leaf::Bundle(dir)) => {
                    let window_s = info.recipe.as_ref().map_or(5.0, |r| r.window.length_s);
                    engines.push(Some(Engine::start(dir, &info.name, window_s, cfg)?));
                    ensemble = ensemble.add_described(info, *w)?;
                }
                (None, _) => {
                    return Err(Error::Internal(
                        "a member that is not a bundle was not loaded".into(),
                    ));
                }
            }
        }
        if ensemble.needs_calibration() {
            // Rank blending: each member's score distribution on the reference recordings,
            // run through the same engines as requests.
            let reference = resolved
                .rank_reference
                .as_deref()
                .ok_or_else(|| Error::Internal("rank blending without a rank reference".into()))?;
            let mut scored = Vec::new();
            for f in silencio_infer::scorer::reference_files(reference)? {
                let bytes = std::fs::read(&f).map_err(|e| Error::io(f.display().to_string(), e))?;
                let p = ensemble.prepare(bytes)?;
                scored.push((
                    p.duration_s,
                    score_members_blocking(&ensemble, &engines, &p)?,
                ));
            }
            ensemble.calibrate(&scored)?;
        }
        Ok(Arc::new(Self {
            species: ensemble.species().clone(),
            window: ensemble.window().clone(),
            name,
            source: source.to_string(),
            loaded_at,
            licences,
            trained,
            architecture: format!("ensemble({})", architectures.join(", ")),
            answered: AtomicU64::new(0),
            location,
            post,
            runner: Runner::Ensemble { ensemble, engines },
        }))
    }

    /// `name@version`, or the ensemble's name.
    pub fn model_version(&self) -> String {
        self.name.clone()
    }

    /// Where it was loaded from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// When it was loaded (RFC 3339).
    pub fn loaded_at(&self) -> &str {
        &self.loaded_at
    }

    /// Classes in score order.
    pub fn species(&self) -> &Arc<Vec<Species>> {
        &self.species
    }

    /// Where its classes are expected, when it knows.
    pub fn location(&self) -> Option<&(dyn LocationFilter + Send + Sync)> {
        self.location.as_deref()
    }

    /// Applies its bundle's site/hour priors (when `ctx` is known to them) and smoothing to
    /// `id`, as the model facade does for the offline tools.
    pub fn post_process(&self, id: &mut Identification, ctx: &RecordingContext) {
        if let Some(p) = &self.post {
            p.apply(&id.species, ctx, &mut id.windows);
        }
    }

    /// Applies its bundle's site/hour priors alone (when `ctx` is known to them) to `id`: a
    /// live stream's window, answered before its neighbours exist (no smoothing).
    pub fn apply_priors(&self, id: &mut Identification, ctx: &RecordingContext) {
        if let Some(p) = &self.post {
            p.apply_priors(ctx, &mut id.windows);
        }
    }

    /// Licences of every member.
    pub fn licences(&self) -> &[Licence] {
        &self.licences
    }

    /// Whether every member's weights were trained on the task.
    pub fn trained(&self) -> bool {
        self.trained
    }

    /// The architecture (`ensemble(a, b)` for ensembles).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The grid of its answers.
    pub fn window(&self) -> &WindowConfig {
        &self.window
    }

    /// Members' names (the model itself for one bundle).
    pub fn members(&self) -> Vec<String> {
        match &self.runner {
            Runner::Single { .. } => vec![self.name.clone()],
            Runner::Ensemble { ensemble, .. } => {
                ensemble.members().map(|(i, _)| i.name.clone()).collect()
            }
        }
    }

    /// The blend, for an ensemble.
    pub fn blend(&self) -> Option<silencio_infer::Blend> {
        match &self.runner {
            Runner::Single { .. } => None,
            Runner::Ensemble { ensemble, .. } => Some(ensemble.blend()),
        }
    }

    /// Its engines (one per bundle member).
    pub fn engines(&self) -> Vec<&Engine> {
        match &self.runner {
            Runner::Single { engine, .. } => vec![engine],
            Runner::Ensemble { engines, .. } => engines.iter().flatten().collect(),
        }
    }

    /// The first bundle member's engine (the model's own for one bundle).
    pub fn engine(&self) -> Option<&Engine> {
        self.engines().into_iter().next()
    }

    /// Requests answered.
    pub fn requests_served(&self) -> u64 {
        match &self.runner {
            Runner::Single { engine, .. } => engine.stats().requests.load(Ordering::SeqCst),
            Runner::Ensemble { .. } => self.answered.load(Ordering::SeqCst),
        }
    }

    /// The sample rate a live stream is resampled to (the first member's).
    pub fn stream_rate(&self) -> u32 {
        match &self.runner {
            Runner::Single { meta, .. } => meta.features.sample_rate,
            Runner::Ensemble { ensemble, .. } => ensemble
                .members()
                .next()
                .map_or(32_000, |(i, _)| i.sample_rate),
        }
    }

    /// Decodes an upload into what the model reads, within `max_duration_s` and at most
    /// `max_input_samples` decoded (blocking: run it on the blocking pool).
    pub(crate) fn prepare_bytes(
        &self,
        bytes: Vec<u8>,
        max_duration_s: f64,
        max_input_samples: u64,
    ) -> Result<(AudioInfo, Input)> {
        match &self.runner {
            Runner::Single { meta, .. } => {
                let opts = silencio_audio::DecodeOptions {
                    max_input_samples: Some(max_input_samples),
                    ..silencio_audio::decode_options_for(&meta.features, max_duration_s)
                };
                let (info, feats) =
                    silencio_audio::features_from_bytes_with(bytes, &meta.features, &opts)?;
                Ok((info, Input::Features(Arc::new(feats))))
            }
            Runner::Ensemble { ensemble, .. } => {
                let mut p =
                    ensemble.prepare_within(bytes, max_duration_s, Some(max_input_samples))?;
                let info = p
                    .info
                    .take()
                    .ok_or_else(|| Error::Internal("decoded audio without its info".into()))?;
                Ok((info, Input::Ensemble(p)))
            }
        }
    }

    /// One stream window: mono `samples` at [`LoadedModel::stream_rate`], window `index` of
    /// the stream, zero-padded to the window length (blocking: run it on the blocking pool).
    pub(crate) fn prepare_window(&self, mut samples: Vec<f32>, index: usize) -> Result<Input> {
        let rate = self.stream_rate();
        let len = self.window.length_samples(rate);
        match &self.runner {
            Runner::Single { meta, logmel, .. } => {
                let fc = &meta.features;
                let start_s = index as f64 * fc.window.length_s;
                let valid = samples.len().min(len);
                samples.resize(len, 0.0);
                Ok(Input::Features(Arc::new(Features {
                    windows: vec![silencio_audio::Window {
                        index,
                        start_s,
                        end_s: start_s + fc.window.length_s,
                        start_sample: index * len,
                        valid_samples: valid,
                    }],
                    n_mels: fc.n_mels,
                    n_frames: fc.frames_per_window(),
                    data: logmel.compute(&samples),
                })))
            }
            Runner::Ensemble { ensemble, .. } => {
                // Padded to one whole window, so the grid holds exactly one.
                samples.resize(len, 0.0);
                Ok(Input::Ensemble(ensemble.prepare_samples(&samples, rate)?))
            }
        }
    }

    /// Scores a prepared input: the engines batch its windows with other requests'.
    pub(crate) async fn score(
        self: &Arc<Self>,
        input: Input,
        priority: Priority,
    ) -> Result<Scoring> {
        match (&self.runner, input) {
            (Runner::Single { engine, .. }, Input::Features(f)) => {
                let scored = engine
                    .submit(f.clone(), priority)
                    .await
                    .map_err(|_| Error::Internal("the model engine stopped".into()))??;
                Ok(Scoring {
                    queue: scored.queue,
                    inference: scored.inference,
                    windows: WindowScores::of(&f, scored.scores),
                })
            }
            (Runner::Ensemble { ensemble, engines }, Input::Ensemble(p)) => {
                let p = Arc::new(p);
                // Every member starts at once: engines queue, the others run on the pool.
                let mut pending = Vec::with_capacity(engines.len());
                for (i, (engine, input)) in engines.iter().zip(&p.inputs).enumerate() {
                    pending.push(match (engine, input) {
                        (Some(engine), MemberInput::Features(f)) => {
                            Pending::Engine(f.clone(), engine.submit(f.clone(), priority))
                        }
                        _ => {
                            let (model, p) = (self.clone(), p.clone());
                            Pending::Blocking(tokio::task::spawn_blocking(move || {
                                let Runner::Ensemble { ensemble, .. } = &model.runner else {
                                    return Err(Error::Internal("not an ensemble".into()));
                                };
                                let started = std::time::Instant::now();
                                let s =
                                    ensemble.score_member(i, &p.inputs[i]).ok_or_else(|| {
                                        Error::Internal(format!("member {i} has no runner"))
                                    })??;
                                Ok((s, started.elapsed()))
                            }))
                        }
                    });
                }
                let (mut queue, mut inference) = (Duration::ZERO, Duration::ZERO);
                let mut scored = Vec::with_capacity(pending.len());
                for p in pending {
                    scored.push(match p {
                        Pending::Engine(f, rx) => {
                            let s = rx.await.map_err(|_| {
                                Error::Internal("the model engine stopped".into())
                            })??;
                            queue = queue.max(s.queue);
                            inference = inference.max(s.inference);
                            WindowScores::of(&f, s.scores)
                        }
                        Pending::Blocking(h) => {
                            let (s, took) = h.await.map_err(|e| {
                                Error::Internal(format!("member scoring task failed: {e}"))
                            })??;
                            inference = inference.max(took);
                            s
                        }
                    });
                }
                let id = ensemble.combine(p.duration_s, &scored)?;
                // Counted before the reply leaves (as a bundle's engine counts).
                self.answered.fetch_add(1, Ordering::SeqCst);
                Ok(Scoring {
                    windows: id.windows,
                    queue,
                    inference,
                })
            }
            _ => Err(Error::Internal(
                "an input prepared for another model".into(),
            )),
        }
    }
}

enum Pending {
    Engine(
        Arc<Features>,
        tokio::sync::oneshot::Receiver<Result<crate::engine::Scored>>,
    ),
    Blocking(tokio::task::JoinHandle<Result<(Vec<WindowScores>, Duration)>>),
}
