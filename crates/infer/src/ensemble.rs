//! Ensembles: several models, possibly with different recipes, sample rates and window
//! lengths (BirdNET's 3 s at 48 kHz next to our 5 s at 32 kHz), pooled onto one window grid.
//!
//! Each member scores the recording on its own terms: the audio is decoded once per distinct
//! sample rate and each distinct log-mel recipe is computed once, whatever number of members
//! share it. A member window counts toward an output window when they overlap; its scores are
//! max-pooled there (a call heard in any overlapping chunk is heard in the window, as BirdCLEF
//! labels are). The ensemble score of a species is the weighted mean, over the members that
//! know the species, of their pooled probabilities ([`Blend::Probability`]) or of their
//! per-class ranks against a reference set ([`Blend::Rank`], see [`Ensemble::calibrate`]);
//! species no member knows score 0.

use std::collections::HashMap;
use std::sync::Arc;

use silencio_audio::{AudioInfo, DecodeOptions, FeatureConfig, Features, LogMel, WindowConfig};

use crate::bundle::Species;
use crate::classifier::{Classifier, Identification, WindowScores};
use crate::spec::Blend;
use crate::{Error, Result};

/// Reference windows kept per (member, class) for rank blending: ranks are read off this many
/// quantiles of the member's reference scores, interpolated linearly between them.
pub const RANK_QUANTILES: usize = 512;

/// Something that scores mono audio.
pub trait Member: Send + Sync {
    /// A name for reports (`name@version`).
    fn name(&self) -> String;
    /// Its classes in score order.
    fn species(&self) -> &[Species];
    /// The sample rate it wants.
    fn sample_rate(&self) -> u32;
    /// Scores of its own windows over `samples` (mono at [`Member::sample_rate`]).
    fn score(&self, samples: &[f32]) -> Result<Vec<WindowScores>>;
    /// The log-mel recipe it reads, when it reads one: members that share a recipe get its
    /// features computed once per recording and scored by [`Member::score_features`].
    fn recipe(&self) -> Option<&FeatureConfig> {
        None
    }
    /// Scores of the windows of features made by [`Member::recipe`].
    fn score_features(&self, features: &Features) -> Result<Vec<WindowScores>> {
        let _ = features;
        Err(Error::Ensemble(format!(
            "{} reads audio, not features",
            self.name()
        )))
    }
    /// Its embedding of each span `(start_s, end_s)` of the output grid from what it reads
    /// (`input`, as [`Ensemble::prepare`] made it); `None` for a member without embeddings.
    fn embed(&self, input: &MemberInput, spans: &[(f64, f64)]) -> Result<Option<Vec<Vec<f32>>>> {
        let _ = (input, spans);
        Ok(None)
    }
}

impl Member for Classifier {
    fn name(&self) -> String {
        self.model_version()
    }
    fn species(&self) -> &[Species] {
        self.species().as_slice()
    }
    fn sample_rate(&self) -> u32 {
        self.features().sample_rate
    }
    fn score(&self, samples: &[f32]) -> Result<Vec<WindowScores>> {
        Ok(self.identify_samples(samples)?.windows)
    }
    fn recipe(&self) -> Option<&FeatureConfig> {
        Some(self.features())
    }
    fn score_features(&self, features: &Features) -> Result<Vec<WindowScores>> {
        Ok(self.identify_features(features)?.windows)
    }
    fn embed(&self, input: &MemberInput, spans: &[(f64, f64)]) -> Result<Option<Vec<Vec<f32>>>> {
        let MemberInput::Features(f) = input else {
            return Err(Error::Ensemble(format!(
                "{} reads features, not audio",
                self.name()
            )));
        };
        let own: Vec<(f64, f64)> = f.windows.iter().map(|w| (w.start_s, w.end_s)).collect();
        Ok(Some(mean_pool(&own, &self.embed_features(f)?, spans)))
    }
}

/// Rows of windows `own` (`(start_s, end_s)`) mean-pooled onto `spans`: each span takes the
/// mean of the rows whose window overlaps it (zeros where none does), as scores are max-pooled
/// onto the grid.
pub fn mean_pool(own: &[(f64, f64)], rows: &[Vec<f32>], spans: &[(f64, f64)]) -> Vec<Vec<f32>> {
    let width = rows.first().map_or(0, Vec::len);
    spans
        .iter()
        .map(|&(start, end)| {
            let mut mean = vec![0f32; width];
            let hits: Vec<&Vec<f32>> = own
                .iter()
                .zip(rows)
                .filter(|((s, e), _)| *s < end && *e > start)
                .map(|(_, r)| r)
                .collect();
            for r in &hits {
                for (m, x) in mean.iter_mut().zip(r.iter()) {
                    *m += x / hits.len() as f32;
                }
            }
            mean
        })
        .collect()
}

/// For each class of `target`, its index in `source`: matched by code, else by scientific
/// name (both case-insensitive, trimmed); `None` where `source` does not know it.
pub fn match_species(target: &[Species], source: &[Species]) -> Vec<Option<usize>> {
    let by_code: HashMap<String, usize> = source
        .iter()
        .enumerate()
        .map(|(i, s)| (norm(&s.code), i))
        .collect();
    let by_name: HashMap<String, usize> = source
        .iter()
        .enumerate()
        .map(|(i, s)| (norm(&s.scientific_name), i))
        .collect();
    target
        .iter()
        .map(|s| {
            by_code
                .get(&norm(&s.code))
                .or_else(|| by_name.get(&norm(&s.scientific_name)))
                .copied()
        })
        .collect()
}

/// What the ensemble needs to know of a member that runs elsewhere (a server's batching
/// engine): its name, classes and input.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberInfo {
    /// `name@version`.
    pub name: String,
    /// Classes in score order.
    pub species: Vec<Species>,
    /// Sample rate it reads.
    pub sample_rate: u32,
    /// Its log-mel recipe, when it reads features.
    pub recipe: Option<FeatureConfig>,
}

impl MemberInfo {
    /// The description of a loaded member.
    pub fn of(m: &dyn Member) -> Self {
        Self {
            name: m.name(),
            species: m.species().to_vec(),
            sample_rate: m.sample_rate(),
            recipe: m.recipe().cloned(),
        }
    }
}

struct Entry {
    info: MemberInfo,
    /// `None` for members run by the caller (see [`Ensemble::add_described`]).
    member: Option<Box<dyn Member>>,
    weight: f32,
    /// For each ensemble species, the member's class index.
    map: Vec<Option<usize>>,
    /// Rank blending: per ensemble species, sorted quantiles of the member's reference scores.
    ranks: Option<Vec<Vec<f32>>>,
}

/// One decoded recording prepared for every member: its audio at each member's rate and the
/// features of each distinct recipe.
#[derive(Debug)]
pub struct Prepared {
    /// The decoded input (`None` for samples given as such).
    pub info: Option<AudioInfo>,
    /// Duration in seconds (at the first member's rate).
    pub duration_s: f64,
    /// Per member, what it reads.
    pub inputs: Vec<MemberInput>,
}

/// What one member reads from a [`Prepared`] recording.
#[derive(Debug, Clone)]
pub enum MemberInput {
    /// Mono samples at its rate.
    Samples(Arc<Vec<f32>>),
    /// Features of its recipe.
    Features(Arc<Features>),
}

/// A weighted ensemble over one species list and one window grid.
pub struct Ensemble {
    name: String,
    species: Arc<Vec<Species>>,
    window: WindowConfig,
    members: Vec<Entry>,
    blend: Blend,
    max_duration_s: f64,
}

impl std::fmt::Debug for Ensemble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ensemble")
            .field("name", &self.name)
            .field("blend", &self.blend)
            .field(
                "members",
                &self
                    .members
                    .iter()
                    .map(|e| e.info.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn norm(s: &str) -> String {
    s.trim().to_lowercase()
}

impl Ensemble {
    /// An empty ensemble predicting `species` on `window`'s grid.
    pub fn new(name: impl Into<String>, species: Vec<Species>, window: WindowConfig) -> Self {
        Self {
            name: name.into(),
            species: Arc::new(species),
            window,
            members: Vec::new(),
            blend: Blend::Probability,
            max_duration_s: DecodeOptions::default().max_duration_s,
        }
    }

    /// Longest recording accepted, in seconds (default one hour).
    pub fn with_max_duration(mut self, seconds: f64) -> Self {
        self.max_duration_s = seconds;
        self
    }

    /// How members combine (default [`Blend::Probability`]); rank blending needs
    /// [`Ensemble::calibrate`] before it scores.
    pub fn with_blend(mut self, blend: Blend) -> Self {
        self.blend = blend;
        self
    }

    /// The blend.
    pub fn blend(&self) -> Blend {
        self.blend
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its classes, in score order.
    pub fn species(&self) -> &Arc<Vec<Species>> {
        &self.species
    }

    /// The grid it reports on.
    pub fn window(&self) -> &WindowConfig {
        &self.window
    }

    /// The members, in order.
    pub fn members(&self) -> impl Iterator<Item = (&MemberInfo, f32)> {
        self.members.iter().map(|e| (&e.info, e.weight))
    }

    /// Adds a member with a weight > 0. Its classes are matched to the ensemble's by code,
    /// else by scientific name (case-insensitive); a member sharing no species is refused.
    pub fn add(self, member: Box<dyn Member>, weight: f32) -> Result<Self> {
        let info = MemberInfo::of(member.as_ref());
        self.push(info, Some(member), weight)
    }

    /// Adds a member that the caller runs itself (its scores come to [`Ensemble::combine`]).
    pub fn add_described(self, info: MemberInfo, weight: f32) -> Result<Self> {
        self.push(info, None, weight)
    }

    fn push(
        mut self,
        info: MemberInfo,
        member: Option<Box<dyn Member>>,
        weight: f32,
    ) -> Result<Self> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(Error::Ensemble(format!(
                "member {} has weight {weight}; weights must be > 0",
                info.name
            )));
        }
        let map = match_species(&self.species, &info.species);
        if map.iter().all(Option::is_none) {
            return Err(Error::Ensemble(format!(
                "member {} shares no species (by code or scientific name) with the ensemble",
                info.name
            )));
        }
        self.members.push(Entry {
            info,
            member,
            weight,
            map,
            ranks: None,
        });
        Ok(self)
    }

    /// How many ensemble species each member covers.
    pub fn coverage(&self) -> Vec<(String, usize)> {
        self.members
            .iter()
            .map(|e| (e.info.name.clone(), e.map.iter().flatten().count()))
            .collect()
    }

    /// Decodes `bytes` once per distinct member sample rate and computes each distinct recipe's
    /// features once, within the ensemble's longest duration.
    pub fn prepare(&self, bytes: Vec<u8>) -> Result<Prepared> {
        self.prepare_within(bytes, self.max_duration_s, None)
    }

    /// [`Ensemble::prepare`] within `max_duration_s` and at most `max_input_samples` decoded
    /// (a server's limits: an upload over them is `too_long` / `too_many_samples`).
    pub fn prepare_within(
        &self,
        bytes: Vec<u8>,
        max_duration_s: f64,
        max_input_samples: Option<u64>,
    ) -> Result<Prepared> {
        let mut info = None;
        let p = self.prepare_with(|rate| {
            let opts = DecodeOptions {
                target_rate: Some(rate),
                max_duration_s,
                max_input_samples,
            };
            let d = silencio_audio::decode_bytes(bytes.clone(), &opts)?;
            info.get_or_insert(d.info);
            Ok(d.samples)
        })?;
        Ok(Prepared { info, ..p })
    }

    /// [`Ensemble::prepare`] with `audio_at(rate)` giving the mono samples at a rate (called
    /// once per distinct member rate, in member order).
    fn prepare_with(&self, mut audio_at: impl FnMut(u32) -> Result<Vec<f32>>) -> Result<Prepared> {
        let Some(first) = self.members.first() else {
            return Err(Error::Ensemble("the ensemble has no members".into()));
        };
        let mut decoded: Vec<(u32, Arc<Vec<f32>>)> = Vec::new();
        for e in &self.members {
            let rate = e.info.sample_rate;
            if !decoded.iter().any(|(r, _)| *r == rate) {
                decoded.push((rate, Arc::new(audio_at(rate)?)));
            }
        }
        let at = |rate: u32| -> &Arc<Vec<f32>> {
            &decoded
                .iter()
                .find(|(r, _)| *r == rate)
                .expect("decoded above")
                .1
        };
        let duration_s =
            at(first.info.sample_rate).len() as f64 / f64::from(first.info.sample_rate);
        let mut features: Vec<(FeatureConfig, Arc<Features>)> = Vec::new();
        let mut inputs = Vec::with_capacity(self.members.len());
        for e in &self.members {
            let samples = at(e.info.sample_rate);
            inputs.push(match &e.info.recipe {
                None => MemberInput::Samples(samples.clone()),
                Some(cfg) => {
                    let f = match features.iter().find(|(c, _)| c == cfg) {
                        Some((_, f)) => f.clone(),
                        None => {
                            let f = Arc::new(LogMel::new(cfg)?.features(samples)?);
                            features.push((cfg.clone(), f.clone()));
                            f
                        }
                    };
                    MemberInput::Features(f)
                }
            });
        }
        Ok(Prepared {
            info: None,
            duration_s,
            inputs,
        })
    }

    /// Every member's scores of a prepared recording (members run here, in order).
    pub fn score_prepared(&self, p: &Prepared) -> Result<Vec<Vec<WindowScores>>> {
        self.members
            .iter()
            .zip(&p.inputs)
            .map(|(e, input)| {
                let m = e.member.as_deref().ok_or_else(|| {
                    Error::Ensemble(format!(
                        "member {} is run by the caller; pass its scores to combine",
                        e.info.name
                    ))
                })?;
                match input {
                    MemberInput::Samples(s) => m.score(s),
                    MemberInput::Features(f) => m.score_features(f),
                }
            })
            .collect()
    }

    /// Member `i`'s scores of its input, when it runs here (`None` for a described member).
    pub fn score_member(&self, i: usize, input: &MemberInput) -> Option<Result<Vec<WindowScores>>> {
        let m = self.members.get(i)?.member.as_deref()?;
        Some(match input {
            MemberInput::Samples(s) => m.score(s),
            MemberInput::Features(f) => m.score_features(f),
        })
    }

    /// Prepares mono `samples` at `rate` Hz (a live stream's window) as [`Ensemble::prepare`]
    /// prepares a decoded upload: resampled once per member rate, each recipe computed once.
    pub fn prepare_samples(&self, samples: &[f32], rate: u32) -> Result<Prepared> {
        self.prepare_with(|to| {
            if to == rate {
                return Ok(samples.to_vec());
            }
            let mut r = silencio_audio::resample::StreamResampler::new(rate, to)?;
            r.push(samples)?;
            Ok(r.finish()?)
        })
    }

    /// Decodes, scores every member and pools onto the grid.
    pub fn identify(&self, bytes: Vec<u8>) -> Result<Identification> {
        let p = self.prepare(bytes)?;
        let scored = self.score_prepared(&p)?;
        let mut id = self.combine(p.duration_s, &scored)?;
        id.audio = p.info;
        Ok(id)
    }

    /// [`Ensemble::identify`] with an embedding per output window: the first member (in
    /// order) that gives embeddings, mean-pooled from its windows; `None` when no member does.
    pub fn identify_embedded(
        &self,
        bytes: Vec<u8>,
    ) -> Result<(Identification, Option<Vec<Vec<f32>>>)> {
        let p = self.prepare(bytes)?;
        let scored = self.score_prepared(&p)?;
        let mut id = self.combine(p.duration_s, &scored)?;
        id.audio = p.info;
        let spans = self.spans(p.duration_s)?;
        for (e, input) in self.members.iter().zip(&p.inputs) {
            if let Some(m) = e.member.as_deref()
                && let Some(emb) = m.embed(input, &spans)?
            {
                return Ok((id, Some(emb)));
            }
        }
        Ok((id, None))
    }

    /// The output grid of a recording of `duration_s` seconds as `(start_s, end of its audio)`
    /// spans, the overlap test of pooling.
    fn spans(&self, duration_s: f64) -> Result<Vec<(f64, f64)>> {
        // The grid at a nominal 1 kHz: only times matter here.
        let rate = 1000;
        Ok(self
            .window
            .windows((duration_s * rate as f64).round() as usize, rate)?
            .iter()
            .map(|g| (g.start_s, g.start_s + g.valid_samples as f64 / rate as f64))
            .collect())
    }

    /// Per output window, per member, per ensemble species: the member's max-pooled score
    /// (`None` where it does not know the species or has no overlapping window).
    fn pool(
        &self,
        duration_s: f64,
        scored: &[Vec<WindowScores>],
    ) -> Result<Vec<(silencio_audio::Window, PooledMembers)>> {
        if scored.len() != self.members.len() {
            return Err(Error::Ensemble(format!(
                "{} members' scores for {} members",
                scored.len(),
                self.members.len()
            )));
        }
        // The grid at a nominal 1 kHz: only times matter here.
        let rate = 1000;
        let grid = self
            .window
            .windows((duration_s * rate as f64).round() as usize, rate)?;
        let k = self.species.len();
        Ok(grid
            .into_iter()
            .map(|g| {
                let g_end = g.start_s + g.valid_samples as f64 / rate as f64;
                let per_member = self
                    .members
                    .iter()
                    .zip(scored)
                    .map(|(e, ws)| {
                        let mut pooled: Vec<Option<f32>> = vec![None; k];
                        for w in ws
                            .iter()
                            .filter(|w| w.start_s < g_end && w.end_s > g.start_s)
                        {
                            for (s, m) in e.map.iter().enumerate() {
                                if let Some(&v) = m.and_then(|m| w.scores.get(m)) {
                                    pooled[s] = Some(pooled[s].map_or(v, |p| p.max(v)));
                                }
                            }
                        }
                        pooled
                    })
                    .collect();
                (g, per_member)
            })
            .collect())
    }

    /// Whether rank blending still lacks its reference distributions.
    pub fn needs_calibration(&self) -> bool {
        self.blend == Blend::Rank && self.members.iter().any(|e| e.ranks.is_none())
    }

    /// Sets each member's per-class score distribution for rank blending from its scores on
    /// reference recordings: one `(duration_s, scores of every member)` per recording, pooled
    /// onto the grid as at scoring time.
    pub fn calibrate(&mut self, reference: &[(f64, Vec<Vec<WindowScores>>)]) -> Result<()> {
        let k = self.species.len();
        let mut values: Vec<Vec<Vec<f32>>> = vec![vec![Vec::new(); k]; self.members.len()];
        for (duration_s, scored) in reference {
            for (_, per_member) in self.pool(*duration_s, scored)? {
                for (m, pooled) in per_member.iter().enumerate() {
                    for (s, v) in pooled.iter().enumerate() {
                        if let Some(v) = v {
                            values[m][s].push(*v);
                        }
                    }
                }
            }
        }
        if values.iter().flatten().all(Vec::is_empty) {
            return Err(Error::Ensemble(
                "the rank reference holds no windows to calibrate on".into(),
            ));
        }
        for (e, vals) in self.members.iter_mut().zip(values) {
            e.ranks = Some(vals.into_iter().map(quantiles).collect());
        }
        Ok(())
    }

    /// Pools members' window scores (one list per member, in member order) onto the grid of
    /// a recording of `duration_s` seconds and blends them.
    pub fn combine(&self, duration_s: f64, scored: &[Vec<WindowScores>]) -> Result<Identification> {
        if self.needs_calibration() {
            return Err(Error::Ensemble(
                "rank blending needs its reference distributions (calibrate first)".into(),
            ));
        }
        let k = self.species.len();
        let windows = self
            .pool(duration_s, scored)?
            .into_iter()
            .map(|(g, per_member)| {
                let mut num = vec![0f32; k];
                let mut den = vec![0f32; k];
                for (e, pooled) in self.members.iter().zip(&per_member) {
                    for s in 0..k {
                        if let Some(p) = pooled[s] {
                            let v = match (&self.blend, &e.ranks) {
                                (Blend::Rank, Some(r)) => rank(&r[s], p),
                                _ => p,
                            };
                            num[s] += e.weight * v;
                            den[s] += e.weight;
                        }
                    }
                }
                WindowScores {
                    start_s: g.start_s,
                    end_s: g.end_s,
                    scores: num
                        .iter()
                        .zip(&den)
                        .map(|(n, d)| if *d > 0.0 { n / d } else { 0.0 })
                        .collect(),
                }
            })
            .collect();
        Ok(Identification {
            model_version: self.name.clone(),
            audio: None,
            species: self.species.clone(),
            windows,
        })
    }
}

/// Per member, per ensemble species: a member's max-pooled score on one output window (`None`
/// where it does not know the species or has no overlapping window).
type PooledMembers = Vec<Vec<Option<f32>>>;

/// At most [`RANK_QUANTILES`] evenly spaced order statistics of `v` (all of them when fewer).
fn quantiles(mut v: Vec<f32>) -> Vec<f32> {
    v.retain(|x| x.is_finite());
    v.sort_by(f32::total_cmp);
    if v.len() <= RANK_QUANTILES {
        return v;
    }
    let last = (v.len() - 1) as f64;
    (0..RANK_QUANTILES)
        .map(|i| v[(i as f64 * last / (RANK_QUANTILES - 1) as f64).round() as usize])
        .collect()
}

/// Where `x` falls in the sorted reference `q`, in [0, 1]: the fraction of the reference below
/// it, interpolated linearly between neighbouring quantiles; 0.5 without a reference.
pub fn rank(q: &[f32], x: f32) -> f32 {
    match q.len() {
        0 => 0.5,
        1 => match x.total_cmp(&q[0]) {
            std::cmp::Ordering::Less => 0.0,
            std::cmp::Ordering::Equal => 0.5,
            std::cmp::Ordering::Greater => 1.0,
        },
        n => {
            if x <= q[0] {
                return 0.0;
            }
            if x >= q[n - 1] {
                return 1.0;
            }
            // q[i] <= x < q[i + 1]
            let i = q.partition_point(|&v| v <= x) - 1;
            let (lo, hi) = (q[i], q[i + 1]);
            let frac = if hi > lo { (x - lo) / (hi - lo) } else { 0.0 };
            (i as f32 + frac) / (n - 1) as f32
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_follow_the_reference_distribution() {
        let q = [0.1, 0.2, 0.4, 0.8];
        assert_eq!(rank(&q, 0.05), 0.0);
        assert_eq!(rank(&q, 0.9), 1.0);
        assert!((rank(&q, 0.2) - 1.0 / 3.0).abs() < 1e-6);
        // Halfway between the 2nd and 3rd quantiles.
        assert!((rank(&q, 0.3) - 0.5).abs() < 1e-6);
        assert_eq!(rank(&[], 0.3), 0.5);
        assert_eq!(rank(&[0.3], 0.3), 0.5);
        // Monotone.
        let mut last = -1.0;
        for i in 0..100 {
            let r = rank(&q, i as f32 / 100.0);
            assert!(r >= last);
            last = r;
        }
    }

    #[test]
    fn embeddings_mean_pool_onto_the_spans_they_overlap() {
        let own = [(0.0, 3.0), (2.0, 5.0), (4.0, 7.0)];
        let rows = vec![vec![3.0, 0.0], vec![3.0, 6.0], vec![6.0, 3.0]];
        let spans = [(0.0, 5.0), (5.0, 10.0), (20.0, 25.0)];
        assert_eq!(
            mean_pool(&own, &rows, &spans),
            vec![vec![4.0, 3.0], vec![6.0, 3.0], vec![0.0, 0.0]]
        );
    }

    #[test]
    fn quantiles_keep_the_extremes_and_thin_the_rest() {
        let v: Vec<f32> = (0..10_000).rev().map(|i| i as f32).collect();
        let q = quantiles(v);
        assert_eq!(q.len(), RANK_QUANTILES);
        assert_eq!(q[0], 0.0);
        assert_eq!(*q.last().unwrap(), 9999.0);
        assert!(q.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(quantiles(vec![3.0, f32::NAN, 1.0]), vec![1.0, 3.0]);
    }
}
