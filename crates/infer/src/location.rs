//! Where a species is expected: a location filter learnt from a BirdCLEF `train.csv`, without
//! BirdNET.
//!
//! BirdNET-Analyzer and BirdNET-Go drop species that their range model does not expect at the
//! recording's place and week. Here the same job is done from the training data alone: the
//! [`OccurrenceModel`] keeps, for each species, where it was recorded (deduplicated on a grid,
//! capped, see [`OccurrenceModel::learn`]) and scores a [`Place`] by a Gaussian kernel of the
//! great-circle distance to the nearest recording of that species. `train.csv` carries no dates,
//! so this model ignores the [`Week`]; the [`LocationQuery`] carries one all the same, for the
//! BirdNET range model (place *and* week) that will implement [`LocationFilter`] later.
//!
//! Species without a single located recording are [`Occurrence::Unknown`]: nothing is known
//! against them, so they always pass through unfiltered.
//!
//! The model is stored in a bundle as [`LOCATION_FILE`] (JSON):
//! `{"format": 1, "source": "...", "config": {"radius_km", "grid_deg", "max_points_per_species"},
//! "species": [{"code", "recordings", "points": [[lat, lon], ...]}]}`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use silencio_common::SplitMix64;

use crate::bundle::Species;
use crate::classifier::Identification;
use crate::{Error, Result};

/// File name of the occurrence model inside a model bundle.
pub const LOCATION_FILE: &str = "location.json";

/// Layout version of [`LOCATION_FILE`] that this build writes and reads.
pub const LOCATION_FORMAT: u32 = 1;

/// Occurrence under which [`FilterMode::Filter`] drops a species by default. With the default
/// kernel that is a nearest recording about 1.73 radii away (`exp(-3) ≈ 0.05`).
pub const DEFAULT_THRESHOLD: f32 = 0.05;

/// Mean Earth radius (IUGG), km.
pub const EARTH_RADIUS_KM: f64 = 6371.0088;

/// A validated point on Earth: latitude in [-90, 90], longitude in [-180, 180], both finite.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPlace")]
pub struct Place {
    latitude: f64,
    longitude: f64,
}

/// [`Place`] as it arrives, before validation.
#[derive(Deserialize)]
struct RawPlace {
    latitude: f64,
    longitude: f64,
}

impl TryFrom<RawPlace> for Place {
    type Error = Error;

    fn try_from(r: RawPlace) -> Result<Self> {
        Place::new(r.latitude, r.longitude)
    }
}

impl Place {
    /// A place, or [`Error::BadPlace`] when a coordinate is out of range or not finite.
    pub fn new(latitude: f64, longitude: f64) -> Result<Self> {
        if valid_coordinates(latitude, longitude) {
            Ok(Self {
                latitude,
                longitude,
            })
        } else {
            Err(Error::BadPlace {
                latitude,
                longitude,
            })
        }
    }

    /// Latitude in degrees north.
    pub fn latitude(&self) -> f64 {
        self.latitude
    }

    /// Longitude in degrees east.
    pub fn longitude(&self) -> f64 {
        self.longitude
    }

    /// Great-circle distance to `other` in km.
    pub fn distance_km(&self, other: &Place) -> f64 {
        haversine_km(
            self.latitude,
            self.longitude,
            other.latitude,
            other.longitude,
        )
    }
}

fn valid_coordinates(latitude: f64, longitude: f64) -> bool {
    latitude.is_finite()
        && longitude.is_finite()
        && (-90.0..=90.0).contains(&latitude)
        && (-180.0..=180.0).contains(&longitude)
}

/// Great-circle distance in km between two (latitude, longitude) points in degrees, by the
/// haversine formula on a sphere of [`EARTH_RADIUS_KM`] (within about 0.5 % of the ellipsoid,
/// far below what a range filter can resolve).
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = p2 - p1;
    let dl = (lon2 - lon1).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    // Rounding can push h a hair above 1 for antipodes; asin would then be NaN.
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// A week of the year as BirdNET counts them: four per month, 1..=48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Week(u8);

impl Week {
    /// Week `n`, or [`Error::BadWeek`] outside 1..=48.
    pub fn new(n: u8) -> Result<Self> {
        if (1..=48).contains(&n) {
            Ok(Self(n))
        } else {
            Err(Error::BadWeek {
                text: n.to_string(),
                reason: "weeks are 1..=48 (four per month)".into(),
            })
        }
    }

    /// The week of a date given as `YYYY-MM-DD` or an RFC 3339 timestamp
    /// (`2025-04-20T07:40:00-05:00`): `(month - 1) * 4 + min(4, (day - 1) / 7 + 1)`. The date
    /// is taken as written, i.e. local to the timestamp's offset, which is the recorder's
    /// calendar and so the season the species follows.
    pub fn from_date(text: &str) -> Result<Self> {
        let bad = |reason: &str| Error::BadWeek {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let s = text.trim();
        let (date, time) = match s.get(..10) {
            Some(d) if d.is_ascii() => (d, &s[10..]),
            _ => return Err(bad("expected YYYY-MM-DD or an RFC 3339 timestamp")),
        };
        let b = date.as_bytes();
        if b[4] != b'-' || b[7] != b'-' {
            return Err(bad("expected YYYY-MM-DD or an RFC 3339 timestamp"));
        }
        let num = |r: std::ops::Range<usize>| -> Option<u32> {
            let part = &date[r];
            part.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| part.parse().ok())
                .flatten()
        };
        let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
            return Err(bad("expected YYYY-MM-DD or an RFC 3339 timestamp"));
        };
        if !(1..=12).contains(&m) || d == 0 {
            return Err(bad("no such date"));
        }
        // A day past the month's end comes back from the round trip as another date.
        let days = silencio_common::time::days_from_civil(i64::from(y), m, d);
        if silencio_common::time::civil_from_days(days) != (i64::from(y), m, d) {
            return Err(bad("no such date"));
        }
        if !time.is_empty() && !valid_rfc3339_time(time) {
            return Err(bad("malformed RFC 3339 time part"));
        }
        let week = (m - 1) * 4 + ((d - 1) / 7 + 1).min(4);
        Self::new(week as u8)
    }

    /// The week number, 1..=48.
    pub fn number(&self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Week {
    type Error = Error;

    fn try_from(n: u8) -> Result<Self> {
        Self::new(n)
    }
}

impl From<Week> for u8 {
    fn from(w: Week) -> u8 {
        w.0
    }
}

impl FromStr for Week {
    type Err = Error;

    /// A week number (`1`..`48`) or a date ([`Week::from_date`]).
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        if !t.is_empty() && t.len() <= 2 && t.bytes().all(|c| c.is_ascii_digit()) {
            return Self::new(t.parse().unwrap_or(0));
        }
        Self::from_date(t)
    }
}

/// `THH:MM:SS[.frac](Z|±HH:MM)` after the date of an RFC 3339 timestamp.
fn valid_rfc3339_time(t: &str) -> bool {
    let b = t.as_bytes();
    let two = |i: usize, max: u32| -> bool {
        t.get(i..i + 2).is_some_and(|p| {
            p.bytes().all(|c| c.is_ascii_digit()) && p.parse::<u32>().is_ok_and(|v| v <= max)
        })
    };
    if b.len() < 10 || !matches!(b[0], b'T' | b't' | b' ') || b[3] != b':' || b[6] != b':' {
        return false;
    }
    // 60 admits a leap second, as RFC 3339 does.
    if !(two(1, 23) && two(4, 59) && two(7, 60)) {
        return false;
    }
    let mut rest = &t[9..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', _, _, b':', _, _] => {
            two_digits(&rest[1..3], 23) && two_digits(&rest[4..6], 59)
        }
        _ => false,
    }
}

fn two_digits(p: &str, max: u32) -> bool {
    p.bytes().all(|c| c.is_ascii_digit()) && p.parse::<u32>().is_ok_and(|v| v <= max)
}

/// Where and when a recording was made: what a [`LocationFilter`] is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocationQuery {
    /// Where.
    pub place: Place,
    /// When, if known. Ignored by [`OccurrenceModel`] (`train.csv` has no dates).
    #[serde(default)]
    pub week: Option<Week>,
}

impl From<Place> for LocationQuery {
    fn from(place: Place) -> Self {
        Self { place, week: None }
    }
}

/// How expected a species is at a query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Occurrence {
    /// A score in [0, 1]: 1 where the species was recorded, falling with distance.
    Known(f32),
    /// Nothing is known about this species' range; filters let it through.
    Unknown,
}

/// What a [`LocationFilter`] does to scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FilterMode {
    /// Zero the scores of species whose occurrence is below `threshold`.
    Filter {
        /// Occurrence under which a species is dropped, in [0, 1].
        threshold: f32,
    },
    /// Multiply each species' scores by its occurrence (unknown species by 1).
    Reweight,
}

impl Default for FilterMode {
    fn default() -> Self {
        FilterMode::Filter {
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

impl FilterMode {
    /// [`FilterMode::Filter`] with a checked threshold (finite, in [0, 1]).
    pub fn filter(threshold: f32) -> Result<Self> {
        let mode = FilterMode::Filter { threshold };
        mode.check()?;
        Ok(mode)
    }

    fn check(&self) -> Result<()> {
        match *self {
            FilterMode::Filter { threshold } if !(0.0..=1.0).contains(&threshold) => {
                Err(Error::FilterMode {
                    text: threshold.to_string(),
                    reason: "the threshold must be in [0, 1]".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

impl FromStr for FilterMode {
    type Err = Error;

    /// `filter` (threshold [`DEFAULT_THRESHOLD`]), `filter:<threshold>` or `reweight`, any case.
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim().to_ascii_lowercase();
        let (name, arg) = match t.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (t.as_str(), None),
        };
        match (name, arg) {
            ("filter", None) => Ok(FilterMode::default()),
            ("filter", Some(a)) => match a.trim().parse::<f32>() {
                Ok(v) => FilterMode::filter(v),
                Err(_) => Err(Error::FilterMode {
                    text: s.to_string(),
                    reason: "the threshold is not a number".into(),
                }),
            },
            ("reweight", None) => Ok(FilterMode::Reweight),
            _ => Err(Error::FilterMode {
                text: s.to_string(),
                reason: "expected filter, filter:<threshold> or reweight".into(),
            }),
        }
    }
}

impl fmt::Display for FilterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterMode::Filter { threshold } => write!(f, "filter:{threshold}"),
            FilterMode::Reweight => f.write_str("reweight"),
        }
    }
}

/// What [`LocationFilter::apply`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilterOutcome {
    /// The mode applied.
    pub mode: FilterMode,
    /// Where.
    pub place: Place,
    /// When, if given.
    pub week: Option<Week>,
    /// Species not expected there, in class order: under [`FilterMode::Filter`] those whose
    /// scores were zeroed; under [`FilterMode::Reweight`] those scaled by less than
    /// [`DEFAULT_THRESHOLD`].
    pub removed: Vec<String>,
    /// Species with unknown occurrence, passed through unchanged.
    pub unknown: usize,
}

/// A species and how expected it is at a place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Expectation {
    /// Species code.
    pub code: String,
    /// Occurrence in [0, 1].
    pub occurrence: f32,
}

/// The species list of a place (`GET /v1/species?lat=&lon=`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Expected {
    /// Species with a known range, best first (ties by code).
    pub known: Vec<Expectation>,
    /// Species with no known range (never filtered), by code.
    pub unknown: Vec<String>,
}

/// A source of per-species occurrence at a place (and week): this crate's [`OccurrenceModel`]
/// now, BirdNET's range model later. Applying it to scores is shared.
pub trait LocationFilter: std::fmt::Debug {
    /// How expected species `code` is at `query`; [`Occurrence::Unknown`] for species the
    /// filter knows nothing about.
    fn occurrence(&self, code: &str, query: &LocationQuery) -> Occurrence;

    /// Every species code the filter has an entry for (known or not).
    fn codes(&self) -> Vec<&str>;

    /// Per-class multipliers for `species` at `query` under `mode`, with the outcome report.
    fn weights(
        &self,
        species: &[Species],
        query: &LocationQuery,
        mode: FilterMode,
    ) -> Result<(Vec<f32>, FilterOutcome)> {
        mode.check()?;
        let mut weights = Vec::with_capacity(species.len());
        let mut removed = Vec::new();
        let mut unknown = 0;
        for s in species {
            let w = match self.occurrence(&s.code, query) {
                Occurrence::Unknown => {
                    unknown += 1;
                    1.0
                }
                Occurrence::Known(o) => match mode {
                    FilterMode::Filter { threshold } if o < threshold => {
                        removed.push(s.code.clone());
                        0.0
                    }
                    FilterMode::Filter { .. } => 1.0,
                    FilterMode::Reweight => {
                        if o < DEFAULT_THRESHOLD {
                            removed.push(s.code.clone());
                        }
                        o
                    }
                },
            };
            weights.push(w);
        }
        let outcome = FilterOutcome {
            mode,
            place: query.place,
            week: query.week,
            removed,
            unknown,
        };
        Ok((weights, outcome))
    }

    /// Filters or reweights `scores` (one row per window, one column per entry of `species`)
    /// in place. A row of another width is [`Error::Shape`], and nothing is changed.
    fn apply(
        &self,
        species: &[Species],
        scores: &mut [Vec<f32>],
        query: &LocationQuery,
        mode: FilterMode,
    ) -> Result<FilterOutcome> {
        if let Some(row) = scores.iter().find(|r| r.len() != species.len()) {
            return Err(Error::Shape(format!(
                "location filter: a window has {} scores for {} species",
                row.len(),
                species.len()
            )));
        }
        let (weights, outcome) = self.weights(species, query, mode)?;
        for row in scores.iter_mut() {
            for (s, w) in row.iter_mut().zip(&weights) {
                *s *= w;
            }
        }
        Ok(outcome)
    }

    /// [`apply`](Self::apply) to every window of an identification.
    fn apply_identification(
        &self,
        id: &mut Identification,
        query: &LocationQuery,
        mode: FilterMode,
    ) -> Result<FilterOutcome> {
        if let Some(w) = id
            .windows
            .iter()
            .find(|w| w.scores.len() != id.species.len())
        {
            return Err(Error::Shape(format!(
                "location filter: a window has {} scores for {} species",
                w.scores.len(),
                id.species.len()
            )));
        }
        let (weights, outcome) = self.weights(&id.species, query, mode)?;
        for w in &mut id.windows {
            for (s, k) in w.scores.iter_mut().zip(&weights) {
                *s *= k;
            }
        }
        Ok(outcome)
    }

    /// Every species of the filter at `query`: known ones best first, unknown ones apart.
    fn expected(&self, query: &LocationQuery) -> Expected {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for code in self.codes() {
            match self.occurrence(code, query) {
                Occurrence::Known(occurrence) => known.push(Expectation {
                    code: code.to_string(),
                    occurrence,
                }),
                Occurrence::Unknown => unknown.push(code.to_string()),
            }
        }
        known.sort_by(|a, b| {
            b.occurrence
                .total_cmp(&a.occurrence)
                .then_with(|| a.code.cmp(&b.code))
        });
        unknown.sort();
        Expected { known, unknown }
    }
}

/// How an [`OccurrenceModel`] is learnt and scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OccurrenceConfig {
    /// Kernel radius R in km: occurrence = `exp(-(d / R)^2)` at distance d from the nearest
    /// recording. The default 1000 km because recordings are sparse and opportunistic
    /// (xeno-canto, iNaturalist): a species is rarely recorded at every site where it lives, so
    /// a species recorded within about R of a place is plausible there, while one whose nearest
    /// recording is on another continent (several thousand km) is not.
    pub radius_km: f64,
    /// Cell size in degrees of the grid that deduplicates recording places (0.1° ≈ 11 km,
    /// far below R: merging recordings of the same site changes no score that matters).
    pub grid_deg: f64,
    /// Most places kept per species, chosen by farthest-point sampling so that what is dropped
    /// lies close to what is kept.
    pub max_points_per_species: usize,
}

impl Default for OccurrenceConfig {
    fn default() -> Self {
        Self {
            radius_km: 1000.0,
            grid_deg: 0.1,
            max_points_per_species: 512,
        }
    }
}

impl OccurrenceConfig {
    fn check(&self) -> Result<()> {
        let mut problems = Vec::new();
        if !(self.radius_km.is_finite() && self.radius_km > 0.0) {
            problems.push(format!("radius_km {} must be > 0", self.radius_km));
        }
        if !(self.grid_deg.is_finite() && self.grid_deg > 0.0 && self.grid_deg <= 10.0) {
            problems.push(format!("grid_deg {} must be in (0, 10]", self.grid_deg));
        }
        if self.max_points_per_species == 0 {
            problems.push("max_points_per_species must be at least 1".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Location {
                message: format!("bad occurrence config: {}", problems.join("; ")),
            })
        }
    }

    fn cell(&self, lat: f64, lon: f64) -> (i64, i64) {
        (
            (lat / self.grid_deg).floor() as i64,
            (lon / self.grid_deg).floor() as i64,
        )
    }

    /// The centre of a grid cell, clamped to the globe and rounded to 1e-6° so the JSON stays
    /// short.
    fn centre(&self, (i, j): (i64, i64)) -> [f64; 2] {
        let round = |v: f64| (v * 1e6).round() / 1e6;
        [
            round(((i as f64 + 0.5) * self.grid_deg).clamp(-90.0, 90.0)),
            round(((j as f64 + 0.5) * self.grid_deg).clamp(-180.0, 180.0)),
        ]
    }
}

/// Where one species was recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeciesRange {
    /// Species code.
    pub code: String,
    /// Located recordings learnt from (before deduplication).
    pub recordings: usize,
    /// Kept places as `[latitude, longitude]` grid-cell centres; empty = unknown range.
    pub points: Vec<[f64; 2]>,
}

/// Per-species occurrence by place, learnt from located recordings. See the module docs.
/// Deserialising checks it (format, config, coordinates, unique codes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawModel")]
pub struct OccurrenceModel {
    format: u32,
    source: String,
    config: OccurrenceConfig,
    species: Vec<SpeciesRange>,
    #[serde(skip)]
    index: HashMap<String, usize>,
}

/// [`OccurrenceModel`] as stored, before the checks and the code index.
#[derive(Deserialize)]
struct RawModel {
    format: u32,
    source: String,
    config: OccurrenceConfig,
    species: Vec<SpeciesRange>,
}

impl TryFrom<RawModel> for OccurrenceModel {
    type Error = String;

    fn try_from(r: RawModel) -> std::result::Result<Self, String> {
        if r.format != LOCATION_FORMAT {
            return Err(format!(
                "format {} (this build reads {LOCATION_FORMAT})",
                r.format
            ));
        }
        r.config.check().map_err(|e| e.to_string())?;
        let mut index = HashMap::with_capacity(r.species.len());
        for (i, s) in r.species.iter().enumerate() {
            if let Some(p) = s.points.iter().find(|p| !valid_coordinates(p[0], p[1])) {
                return Err(format!("species {}: point {p:?} is off the globe", s.code));
            }
            if index.insert(s.code.clone(), i).is_some() {
                return Err(format!("species code {:?} listed twice", s.code));
            }
        }
        Ok(Self {
            format: r.format,
            source: r.source,
            config: r.config,
            species: r.species,
            index,
        })
    }
}

impl OccurrenceModel {
    /// Learns from `(species code, latitude, longitude)` points for the classes `species`.
    ///
    /// Points of codes outside `species`, with coordinates off the globe, or at exactly
    /// (0, 0) (a common placeholder for "unknown", in the open Atlantic) are skipped and
    /// counted in [`source`](Self::source). Each species keeps the distinct grid cells it was
    /// recorded in; past [`OccurrenceConfig::max_points_per_species`] cells, farthest-point
    /// sampling from the most-recorded cell keeps a deterministic spread (every dropped cell
    /// lies within the largest kept gap of a kept one, so nearest distances barely move).
    /// Species without a point are unknown. Duplicate codes in `species` are
    /// [`Error::Location`].
    pub fn learn<S: AsRef<str>, C: AsRef<str>>(
        points: impl IntoIterator<Item = (S, f64, f64)>,
        species: &[C],
        cfg: OccurrenceConfig,
    ) -> Result<Self> {
        cfg.check()?;
        let mut index = HashMap::with_capacity(species.len());
        for (i, c) in species.iter().enumerate() {
            if index.insert(c.as_ref().to_string(), i).is_some() {
                return Err(Error::Location {
                    message: format!("species code {:?} listed twice", c.as_ref()),
                });
            }
        }
        let mut cells: Vec<BTreeMap<(i64, i64), usize>> = vec![BTreeMap::new(); species.len()];
        let mut recordings = vec![0usize; species.len()];
        let (mut located, mut outside, mut invalid) = (0usize, 0usize, 0usize);
        for (code, lat, lon) in points {
            let Some(&i) = index.get(code.as_ref()) else {
                outside += 1;
                continue;
            };
            if !valid_coordinates(lat, lon) || (lat == 0.0 && lon == 0.0) {
                invalid += 1;
                continue;
            }
            located += 1;
            recordings[i] += 1;
            *cells[i].entry(cfg.cell(lat, lon)).or_default() += 1;
        }
        let ranges: Vec<SpeciesRange> = species
            .iter()
            .zip(cells)
            .zip(recordings)
            .map(|((code, cells), recordings)| SpeciesRange {
                code: code.as_ref().to_string(),
                recordings,
                points: spread(&cfg, cells),
            })
            .collect();
        let with_range = ranges.iter().filter(|r| !r.points.is_empty()).count();
        let source = format!(
            "{located} located points of {with_range}/{} species ({outside} of other species, \
             {invalid} without valid coordinates)",
            species.len()
        );
        Ok(Self {
            format: LOCATION_FORMAT,
            source,
            config: cfg,
            species: ranges,
            index,
        })
    }

    /// The same model with another provenance text (e.g. `train.csv: N located rows`).
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// Where the model was learnt from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// How it was learnt.
    pub fn config(&self) -> &OccurrenceConfig {
        &self.config
    }

    /// Every species, in the order learnt.
    pub fn ranges(&self) -> &[SpeciesRange] {
        &self.species
    }

    /// Species with at least one located recording.
    pub fn known_count(&self) -> usize {
        self.species.iter().filter(|r| !r.points.is_empty()).count()
    }

    /// The model as pretty JSON, the content of [`LOCATION_FILE`].
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("an occurrence model serialises");
        v.push(b'\n');
        v
    }

    /// A model from JSON bytes, checked (format, config, coordinates, unique codes); `origin`
    /// names the source in errors.
    pub fn from_json_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::Location {
            message: format!("{origin}: {e}"),
        })
    }

    /// Writes [`to_json_bytes`](Self::to_json_bytes) to `path` atomically.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        silencio_common::write_atomic(path, &self.to_json_bytes()).map_err(|e| Error::io(path, e))
    }

    /// Reads and checks a model written by [`write_json`](Self::write_json).
    pub fn read_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_json_bytes(&bytes, &path.display().to_string())
    }

    /// Distance in km from `place` to the nearest kept recording of `code`; `None` when the
    /// species is unknown.
    pub fn nearest_km(&self, code: &str, place: &Place) -> Option<f64> {
        let r = &self.species[*self.index.get(code)?];
        r.points
            .iter()
            .map(|p| haversine_km(place.latitude, place.longitude, p[0], p[1]))
            .min_by(f64::total_cmp)
    }
}

impl LocationFilter for OccurrenceModel {
    fn occurrence(&self, code: &str, query: &LocationQuery) -> Occurrence {
        match self.nearest_km(code, &query.place) {
            Some(d) => {
                let x = d / self.config.radius_km;
                Occurrence::Known((-x * x).exp() as f32)
            }
            None => Occurrence::Unknown,
        }
    }

    fn codes(&self) -> Vec<&str> {
        self.species.iter().map(|r| r.code.as_str()).collect()
    }
}

/// The kept places of one species: every cell centre, or past the cap a farthest-point sample
/// starting from the most-recorded cell (ties by cell order), output in cell order.
fn spread(cfg: &OccurrenceConfig, cells: BTreeMap<(i64, i64), usize>) -> Vec<[f64; 2]> {
    let all: Vec<((i64, i64), usize)> = cells.into_iter().collect();
    if all.len() <= cfg.max_points_per_species {
        return all.iter().map(|&(c, _)| cfg.centre(c)).collect();
    }
    let centres: Vec<[f64; 2]> = all.iter().map(|&(c, _)| cfg.centre(c)).collect();
    let first = all
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.1.cmp(&b.1.1).then_with(|| b.0.cmp(&a.0)))
        .map_or(0, |(i, _)| i);
    let mut kept = vec![false; all.len()];
    let mut nearest = vec![f64::INFINITY; all.len()];
    let mut next = first;
    for _ in 0..cfg.max_points_per_species {
        kept[next] = true;
        let [la, lo] = centres[next];
        for (d, p) in nearest.iter_mut().zip(&centres) {
            *d = d.min(haversine_km(la, lo, p[0], p[1]));
        }
        // The farthest cell from everything kept so far; the first such in cell order.
        let mut best = (f64::NEG_INFINITY, 0);
        for (i, &d) in nearest.iter().enumerate() {
            if !kept[i] && d > best.0 {
                best = (d, i);
            }
        }
        next = best.1;
    }
    centres
        .into_iter()
        .zip(kept)
        .filter_map(|(c, k)| k.then_some(c))
        .collect()
}

/// What [`holdout_check`] measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HoldoutReport {
    /// Folds.
    pub k_fold: usize,
    /// Occurrence counted as "expected".
    pub threshold: f32,
    /// Located points held out, over all folds.
    pub held_out: usize,
    /// Held-out points whose species had no located recording outside their fold (unknown to
    /// the fold's model, so they would pass through; not counted below).
    pub own_unknown: usize,
    /// Held-out points scored for their own species.
    pub scored: usize,
    /// Fraction of scored points whose own species is expected (occurrence ≥ threshold) at
    /// their own place: the recall of true presences.
    pub recall: Option<f64>,
    /// Mean own-species occurrence over scored points.
    pub mean_own: Option<f64>,
    /// Scored points with another known species to compare against.
    pub pairs: usize,
    /// Fraction of pairs where the other (random, known) species is expected at the point's
    /// place: how often a wrong species would be let through.
    pub other_kept: Option<f64>,
    /// Mean occurrence of the other species.
    pub mean_other: Option<f64>,
    /// Fraction of pairs where the own species scores above the other (ties count half): a
    /// paired AUC, 0.5 = the filter knows nothing.
    pub auc: Option<f64>,
}

/// Cross-validates an occurrence model on its own data: the located points are split into
/// `k_fold` folds by grid cell (all recordings of one cell share a fold, so a held-out
/// recording is never matched by a twin from the same site), and for each held-out point the
/// model learnt from the other folds is asked whether the point's own species is expected at
/// its place, and, as a control, whether a deterministic pseudo-random other species with a
/// known range is. Points skipped by [`OccurrenceModel::learn`] are not held out.
pub fn holdout_check<S: AsRef<str>, C: AsRef<str>>(
    points: &[(S, f64, f64)],
    species: &[C],
    k_fold: usize,
    cfg: OccurrenceConfig,
    threshold: f32,
) -> Result<HoldoutReport> {
    if k_fold < 2 {
        return Err(Error::Location {
            message: format!("holdout needs at least 2 folds, not {k_fold}"),
        });
    }
    cfg.check()?;
    let codes: std::collections::HashSet<&str> = species.iter().map(AsRef::as_ref).collect();
    // (index in `points`, code, latitude, longitude)
    type Usable<'a> = (usize, &'a str, f64, f64);
    let usable: Vec<Usable> = points
        .iter()
        .enumerate()
        .filter(|(_, (c, lat, lon))| {
            codes.contains(c.as_ref())
                && valid_coordinates(*lat, *lon)
                && !(*lat == 0.0 && *lon == 0.0)
        })
        .map(|(i, (c, lat, lon))| (i, c.as_ref(), *lat, *lon))
        .collect();
    let fold_of = |lat: f64, lon: f64| {
        let (a, b) = cfg.cell(lat, lon);
        (SplitMix64::mix((a as u64).wrapping_mul(0x1_0000_0001) ^ (b as u64)) % k_fold as u64)
            as usize
    };
    let mut r = HoldoutReport {
        k_fold,
        threshold,
        held_out: 0,
        own_unknown: 0,
        scored: 0,
        recall: None,
        mean_own: None,
        pairs: 0,
        other_kept: None,
        mean_other: None,
        auc: None,
    };
    let (mut own_hits, mut own_sum) = (0usize, 0f64);
    let (mut other_hits, mut other_sum, mut wins) = (0usize, 0f64, 0f64);
    for fold in 0..k_fold {
        let (test, train): (Vec<&Usable>, Vec<&Usable>) =
            usable.iter().partition(|p| fold_of(p.2, p.3) == fold);
        if test.is_empty() {
            continue;
        }
        let model = OccurrenceModel::learn(train.iter().map(|p| (p.1, p.2, p.3)), species, cfg)?;
        let known: Vec<&str> = model
            .ranges()
            .iter()
            .filter(|s| !s.points.is_empty())
            .map(|s| s.code.as_str())
            .collect();
        for &&(i, code, lat, lon) in &test {
            r.held_out += 1;
            let query = LocationQuery::from(Place::new(lat, lon)?);
            let Occurrence::Known(own) = model.occurrence(code, &query) else {
                r.own_unknown += 1;
                continue;
            };
            r.scored += 1;
            own_sum += f64::from(own);
            own_hits += usize::from(own >= threshold);
            let others: Vec<&str> = known.iter().copied().filter(|&c| c != code).collect();
            if others.is_empty() {
                continue;
            }
            // Seeded by the point's index, so the control is the same on every run.
            let pick = others[(SplitMix64::mix(i as u64) % others.len() as u64) as usize];
            let Occurrence::Known(other) = model.occurrence(pick, &query) else {
                continue;
            };
            r.pairs += 1;
            other_sum += f64::from(other);
            other_hits += usize::from(other >= threshold);
            wins += match own.total_cmp(&other) {
                std::cmp::Ordering::Greater => 1.0,
                std::cmp::Ordering::Equal => 0.5,
                std::cmp::Ordering::Less => 0.0,
            };
        }
    }
    let frac = |n: f64, d: usize| (d > 0).then(|| n / d as f64);
    r.recall = frac(own_hits as f64, r.scored);
    r.mean_own = frac(own_sum, r.scored);
    r.other_kept = frac(other_hits as f64, r.pairs);
    r.mean_other = frac(other_sum, r.pairs);
    r.auc = frac(wins, r.pairs);
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The El Silencio reserve is not located in the repository's docs; roughly 6.77 N,
    /// 74.98 W (Magdalena valley lowlands, Colombia) stands in for it.
    const EL_SILENCIO: (f64, f64) = (6.77, -74.98);
    const BERLIN: (f64, f64) = (52.52, 13.405);

    fn sp(code: &str) -> Species {
        Species {
            code: code.into(),
            scientific_name: String::new(),
            common_name: String::new(),
            class_name: "Aves".into(),
        }
    }

    fn q(p: (f64, f64)) -> LocationQuery {
        Place::new(p.0, p.1).unwrap().into()
    }

    /// A in Colombia, B in Europe, C without coordinates.
    fn abc() -> OccurrenceModel {
        let pts = vec![
            ("A", 6.8, -74.9),
            ("A", 4.7, -74.1),
            ("A", 6.25, -75.6),
            ("B", 52.5, 13.4),
            ("B", 48.85, 2.35),
            ("B", 51.5, -0.13),
            ("C", f64::NAN, f64::NAN),
        ];
        OccurrenceModel::learn(pts, &["A", "B", "C"], OccurrenceConfig::default()).unwrap()
    }

    #[test]
    fn haversine_matches_known_distances() {
        // A quarter meridian and half the equator are exact fractions of the circumference.
        let quarter = std::f64::consts::FRAC_PI_2 * EARTH_RADIUS_KM;
        assert!((haversine_km(0.0, 0.0, 90.0, 0.0) - quarter).abs() < 1e-6);
        assert!((haversine_km(0.0, 0.0, 0.0, 180.0) - 2.0 * quarter).abs() < 1e-6);
        assert!((haversine_km(0.0, -179.5, 0.0, 179.5) - quarter / 90.0).abs() < 1e-6);
        assert_eq!(haversine_km(6.77, -74.98, 6.77, -74.98), 0.0);
        // Published great-circle distances, within 1 %.
        let london_paris = haversine_km(51.5074, -0.1278, 48.8566, 2.3522);
        assert!((london_paris / 344.0 - 1.0).abs() < 0.01, "{london_paris}");
        let bogota_medellin = haversine_km(4.7110, -74.0721, 6.2442, -75.5812);
        assert!(
            (bogota_medellin / 240.0 - 1.0).abs() < 0.01,
            "{bogota_medellin}"
        );
    }

    #[test]
    fn places_are_validated() {
        assert!(Place::new(6.77, -74.98).is_ok());
        assert!(Place::new(-90.0, 180.0).is_ok());
        for (lat, lon) in [
            (90.1, 0.0),
            (-91.0, 0.0),
            (0.0, 180.5),
            (0.0, -181.0),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
        ] {
            let e = Place::new(lat, lon).unwrap_err();
            assert!(matches!(e, Error::BadPlace { .. }), "{lat},{lon}: {e}");
            assert_eq!(e.kind(), "bad_place");
        }
        let bad: std::result::Result<Place, _> =
            serde_json::from_str(r#"{"latitude": 95, "longitude": 0}"#);
        assert!(bad.is_err());
    }

    #[test]
    fn weeks_count_four_per_month() {
        let w = |s: &str| Week::from_date(s).unwrap().number();
        assert_eq!(w("2025-01-01"), 1);
        assert_eq!(w("2025-01-07"), 1);
        assert_eq!(w("2025-01-08"), 2);
        assert_eq!(w("2025-01-22"), 4);
        assert_eq!(w("2025-01-31"), 4);
        assert_eq!(w("2025-02-01"), 5);
        assert_eq!(w("2025-04-20"), 15);
        assert_eq!(w("2024-02-29"), 8);
        assert_eq!(w("2025-12-31"), 48);
        assert_eq!(w("2025-04-20T07:40:00Z"), 15);
        assert_eq!(w("2025-04-20T23:59:59.250-05:00"), 15);
        assert_eq!("12".parse::<Week>().unwrap().number(), 12);
        assert_eq!("2025-03-15".parse::<Week>().unwrap().number(), 11);
        for bad in [
            "2025-02-29",
            "2025-13-01",
            "2025-00-10",
            "2025-04-31",
            "2025/04/20",
            "20250420",
            "2025-04-20T07:40",
            "2025-04-20T25:00:00Z",
            "2025-04-20T07:40:00+5",
            "April",
            "",
        ] {
            let e = Week::from_date(bad).unwrap_err();
            assert_eq!(e.kind(), "bad_week", "{bad}");
        }
        assert!(Week::new(0).is_err());
        assert!(Week::new(49).is_err());
        assert!("49".parse::<Week>().is_err());
        assert_eq!(serde_json::to_string(&Week::new(7).unwrap()).unwrap(), "7");
        assert!(serde_json::from_str::<Week>("0").is_err());
    }

    #[test]
    fn filter_modes_parse() {
        assert_eq!(
            "filter".parse::<FilterMode>().unwrap(),
            FilterMode::Filter {
                threshold: DEFAULT_THRESHOLD
            }
        );
        assert_eq!(
            " Filter:0.2 ".parse::<FilterMode>().unwrap(),
            FilterMode::Filter { threshold: 0.2 }
        );
        assert_eq!(
            "reweight".parse::<FilterMode>().unwrap(),
            FilterMode::Reweight
        );
        for bad in ["drop", "filter:x", "filter:1.5", "reweight:2", ""] {
            let e = bad.parse::<FilterMode>().unwrap_err();
            assert_eq!(e.kind(), "filter_mode", "{bad}");
        }
        let m = FilterMode::filter(0.3).unwrap();
        assert_eq!(m.to_string().parse::<FilterMode>().unwrap(), m);
    }

    #[test]
    fn filter_keeps_local_species_and_drops_far_ones() {
        let m = abc();
        let species = [sp("A"), sp("B"), sp("C"), sp("Z")];
        for (place, kept, dropped) in [(EL_SILENCIO, 0, 1), (BERLIN, 1, 0)] {
            let mut scores = vec![vec![0.9, 0.8, 0.7, 0.6], vec![0.1, 0.2, 0.3, 0.4]];
            let out = m
                .apply(&species, &mut scores, &q(place), FilterMode::default())
                .unwrap();
            assert_eq!(out.removed, vec![species[dropped].code.clone()]);
            // C has no located recording, Z is not in the model at all.
            assert_eq!(out.unknown, 2);
            for (w, orig) in scores
                .iter()
                .zip([[0.9, 0.8, 0.7, 0.6], [0.1, 0.2, 0.3, 0.4]])
            {
                assert_eq!(w[dropped], 0.0);
                assert_eq!(w[kept], orig[kept]);
                assert_eq!(&w[2..], &orig[2..]);
            }
        }
    }

    #[test]
    fn reweight_scales_by_occurrence() {
        let m = abc();
        let species = [sp("A"), sp("B"), sp("C")];
        let mut scores = vec![vec![0.5, 0.5, 0.5]];
        let out = m
            .apply(&species, &mut scores, &q(EL_SILENCIO), FilterMode::Reweight)
            .unwrap();
        // The nearest A cell centre is the recording at (6.8, -74.9) moved to its 0.1° cell
        // centre: under 20 km, so a weight of about exp(-3e-4).
        let d = m
            .nearest_km("A", &Place::new(6.77, -74.98).unwrap())
            .unwrap();
        assert!(d < 20.0, "{d}");
        let wa = (-(d / 1000.0).powi(2)).exp() as f32;
        assert!((scores[0][0] - 0.5 * wa).abs() < 1e-6);
        assert!(scores[0][1] < 1e-10, "B in Colombia: {}", scores[0][1]);
        assert_eq!(scores[0][2], 0.5);
        assert_eq!(out.removed, vec!["B".to_string()]);
        assert_eq!(out.unknown, 1);
    }

    #[test]
    fn wrong_width_is_a_shape_error_and_changes_nothing() {
        let m = abc();
        let mut scores = vec![vec![0.5, 0.5, 0.5], vec![0.5, 0.5]];
        let e = m
            .apply(
                &[sp("A"), sp("B"), sp("C")],
                &mut scores,
                &q(EL_SILENCIO),
                FilterMode::default(),
            )
            .unwrap_err();
        assert_eq!(e.kind(), "shape");
        assert_eq!(scores[0], vec![0.5, 0.5, 0.5]);
    }

    #[test]
    fn expected_lists_best_first_and_unknown_apart() {
        let m = abc();
        let e = m.expected(&q(BERLIN));
        let codes: Vec<&str> = e.known.iter().map(|x| x.code.as_str()).collect();
        assert_eq!(codes, ["B", "A"]);
        assert!(e.known[0].occurrence > 0.99);
        assert!(e.known[1].occurrence < 1e-6);
        assert_eq!(e.unknown, ["C"]);
        let e = m.expected(&q(EL_SILENCIO));
        assert_eq!(e.known[0].code, "A");
    }

    #[test]
    fn learning_dedups_on_the_grid_and_counts_skips() {
        let pts = vec![
            ("A", 6.81, -74.91),
            ("A", 6.84, -74.99), // same 0.1° cell as the one above
            ("A", 6.91, -74.91),
            ("A", 0.0, 0.0),
            ("A", 91.0, 0.0),
            ("Q", 1.0, 1.0),
        ];
        let m = OccurrenceModel::learn(pts, &["A", "B"], OccurrenceConfig::default()).unwrap();
        let a = &m.ranges()[0];
        assert_eq!(a.recordings, 3);
        assert_eq!(a.points, vec![[6.85, -74.95], [6.95, -74.95]]);
        assert!(m.ranges()[1].points.is_empty());
        assert_eq!(m.known_count(), 1);
        assert!(m.source().contains("3 located points"), "{}", m.source());
        assert!(m.source().contains("1 of other species"), "{}", m.source());
        assert!(m.source().contains("2 without valid"), "{}", m.source());
        let dup = OccurrenceModel::learn(
            Vec::<(&str, f64, f64)>::new(),
            &["A", "A"],
            Default::default(),
        );
        assert_eq!(dup.unwrap_err().kind(), "location");
        let bad_cfg = OccurrenceConfig {
            radius_km: 0.0,
            ..Default::default()
        };
        let e = OccurrenceModel::learn(Vec::<(&str, f64, f64)>::new(), &["A"], bad_cfg);
        assert_eq!(e.unwrap_err().kind(), "location");
    }

    #[test]
    fn the_cap_keeps_a_deterministic_spread() {
        // 41 cells along the equator from 0° to 40°E plus 30 extra recordings at 0°.
        let mut pts: Vec<(&str, f64, f64)> =
            (0..=40).map(|i| ("A", 0.05, f64::from(i) + 0.05)).collect();
        pts.extend((0..30).map(|_| ("A", 0.05, 0.05)));
        let cfg = OccurrenceConfig {
            max_points_per_species: 3,
            ..Default::default()
        };
        let m = OccurrenceModel::learn(pts.clone(), &["A"], cfg).unwrap();
        // Start at the most-recorded cell (0°), then the farthest (40°), then the middle.
        let lons: Vec<f64> = m.ranges()[0].points.iter().map(|p| p[1]).collect();
        assert_eq!(lons, vec![0.05, 20.05, 40.05]);
        assert_eq!(m.ranges()[0].recordings, 71);
        let again = OccurrenceModel::learn(pts, &["A"], cfg).unwrap();
        assert_eq!(m, again);
    }

    #[test]
    fn json_round_trip_and_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCATION_FILE);
        let m = abc().with_source("train.csv: 6 located rows");
        m.write_json(&path).unwrap();
        let back = OccurrenceModel::read_json(&path).unwrap();
        assert_eq!(back.source(), "train.csv: 6 located rows");
        assert_eq!(back.ranges(), m.ranges());
        assert_eq!(back.config(), m.config());
        assert_eq!(back.expected(&q(BERLIN)), m.expected(&q(BERLIN)));

        let text = String::from_utf8(m.to_json_bytes()).unwrap();
        let bumped = text.replace("\"format\": 1", "\"format\": 2");
        let e = OccurrenceModel::from_json_bytes(bumped.as_bytes(), "x").unwrap_err();
        assert_eq!(e.kind(), "location");
        let off = text.replacen("52.55", "152.55", 1);
        assert_ne!(off, text);
        let e = OccurrenceModel::from_json_bytes(off.as_bytes(), "x").unwrap_err();
        assert!(e.to_string().contains("off the globe"), "{e}");
        let e = OccurrenceModel::read_json(dir.path().join("nope.json")).unwrap_err();
        assert_eq!(e.kind(), "io");
    }

    #[test]
    fn holdout_separates_own_from_other_species() {
        // Two species, each recorded at 20 sites spread over its own region.
        let mut pts = Vec::new();
        for i in 0..20 {
            let f = f64::from(i);
            pts.push(("A", 2.0 + 0.4 * f, -77.0 + 0.3 * f));
            pts.push(("B", 40.0 + 0.7 * f, -5.0 + 1.1 * f));
        }
        let r = holdout_check(&pts, &["A", "B"], 5, OccurrenceConfig::default(), 0.05).unwrap();
        assert_eq!(r.held_out, 40);
        assert_eq!(r.scored + r.own_unknown, 40);
        assert_eq!(r.own_unknown, 0);
        assert_eq!(r.recall, Some(1.0));
        assert_eq!(r.other_kept, Some(0.0));
        assert_eq!(r.auc, Some(1.0));
        // With a kernel far too narrow for sites 50 km apart, recall collapses: the check can fail.
        let narrow = OccurrenceConfig {
            radius_km: 5.0,
            ..Default::default()
        };
        let r = holdout_check(&pts, &["A", "B"], 5, narrow, 0.05).unwrap();
        assert!(r.recall.unwrap() < 0.5, "{r:?}");
        assert!(holdout_check(&pts, &["A", "B"], 1, narrow, 0.05).is_err());
    }
}
