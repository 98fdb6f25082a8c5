//! Ensembles: several models, possibly with different recipes, sample rates and window
//! lengths (BirdNET's 3 s at 48 kHz next to our 5 s at 32 kHz), pooled onto one window grid.
//!
//! Each member scores the recording on its own terms. A member window counts toward an
//! output window when they overlap; its scores are max-pooled there (a call heard in any
//! overlapping chunk is heard in the window, as BirdCLEF labels are). The ensemble score of a
//! species is the weighted mean of the pooled probabilities of the members that know the
//! species; species no member knows score 0.

use std::collections::HashMap;
use std::sync::Arc;

use silencio_audio::{DecodeOptions, WindowConfig};

use crate::bundle::Species;
use crate::classifier::{Classifier, Identification, WindowScores};
use crate::{Error, Result};

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
}

struct Entry {
    member: Box<dyn Member>,
    weight: f32,
    /// For each ensemble species, the member's class index.
    map: Vec<Option<usize>>,
}

/// A weighted ensemble over one species list and one window grid.
pub struct Ensemble {
    name: String,
    species: Arc<Vec<Species>>,
    window: WindowConfig,
    members: Vec<Entry>,
    max_duration_s: f64,
}

impl std::fmt::Debug for Ensemble {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ensemble")
            .field("name", &self.name)
            .field(
                "members",
                &self
                    .members
                    .iter()
                    .map(|e| e.member.name())
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
            max_duration_s: DecodeOptions::default().max_duration_s,
        }
    }

    /// Longest recording accepted, in seconds (default one hour).
    pub fn with_max_duration(mut self, seconds: f64) -> Self {
        self.max_duration_s = seconds;
        self
    }

    /// Adds a member with a weight > 0. Its classes are matched to the ensemble's by code,
    /// else by scientific name (case-insensitive); a member sharing no species is refused.
    pub fn add(mut self, member: Box<dyn Member>, weight: f32) -> Result<Self> {
        if !(weight.is_finite() && weight > 0.0) {
            return Err(Error::Ensemble(format!(
                "member {} has weight {weight}; weights must be > 0",
                member.name()
            )));
        }
        let by_code: HashMap<String, usize> = member
            .species()
            .iter()
            .enumerate()
            .map(|(i, s)| (norm(&s.code), i))
            .collect();
        let by_name: HashMap<String, usize> = member
            .species()
            .iter()
            .enumerate()
            .map(|(i, s)| (norm(&s.scientific_name), i))
            .collect();
        let map: Vec<Option<usize>> = self
            .species
            .iter()
            .map(|s| {
                by_code
                    .get(&norm(&s.code))
                    .or_else(|| by_name.get(&norm(&s.scientific_name)))
                    .copied()
            })
            .collect();
        if map.iter().all(Option::is_none) {
            return Err(Error::Ensemble(format!(
                "member {} shares no species (by code or scientific name) with the ensemble",
                member.name()
            )));
        }
        self.members.push(Entry {
            member,
            weight,
            map,
        });
        Ok(self)
    }

    /// How many ensemble species each member covers.
    pub fn coverage(&self) -> Vec<(String, usize)> {
        self.members
            .iter()
            .map(|e| (e.member.name(), e.map.iter().flatten().count()))
            .collect()
    }

    /// Decodes once per distinct member sample rate and scores every window of the grid.
    pub fn identify(&self, bytes: Vec<u8>) -> Result<Identification> {
        if self.members.is_empty() {
            return Err(Error::Ensemble("the ensemble has no members".into()));
        }
        let mut decoded: HashMap<u32, silencio_audio::Decoded> = HashMap::new();
        for e in &self.members {
            let rate = e.member.sample_rate();
            if let std::collections::hash_map::Entry::Vacant(v) = decoded.entry(rate) {
                let opts = DecodeOptions {
                    target_rate: Some(rate),
                    max_duration_s: self.max_duration_s,
                    max_input_samples: None,
                };
                v.insert(silencio_audio::decode_bytes(bytes.clone(), &opts)?);
            }
        }
        let first = &decoded[&self.members[0].member.sample_rate()];
        let duration_s = first.samples.len() as f64 / first.sample_rate as f64;
        let audio = Some(first.info.clone());
        let scored: Vec<Vec<WindowScores>> = self
            .members
            .iter()
            .map(|e| e.member.score(&decoded[&e.member.sample_rate()].samples))
            .collect::<Result<_>>()?;
        let mut id = self.combine(duration_s, &scored)?;
        id.audio = audio;
        Ok(id)
    }

    /// Pools members' window scores (one list per member, in member order) onto the grid of
    /// a recording of `duration_s` seconds.
    pub fn combine(&self, duration_s: f64, scored: &[Vec<WindowScores>]) -> Result<Identification> {
        // The grid at a nominal 1 kHz: only times matter here.
        let rate = 1000;
        let grid = self
            .window
            .windows((duration_s * rate as f64).round() as usize, rate)?;
        let k = self.species.len();
        let mut windows = Vec::with_capacity(grid.len());
        for g in &grid {
            let g_end = g.start_s + g.valid_samples as f64 / rate as f64;
            let mut num = vec![0f32; k];
            let mut den = vec![0f32; k];
            for (e, ws) in self.members.iter().zip(scored) {
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
                for s in 0..k {
                    if let Some(p) = pooled[s] {
                        num[s] += e.weight * p;
                        den[s] += e.weight;
                    }
                }
            }
            windows.push(WindowScores {
                start_s: g.start_s,
                end_s: g.end_s,
                scores: num
                    .iter()
                    .zip(&den)
                    .map(|(n, d)| if *d > 0.0 { n / d } else { 0.0 })
                    .collect(),
            });
        }
        Ok(Identification {
            model_version: self.name.clone(),
            audio: None,
            species: self.species.clone(),
            windows,
        })
    }
}
