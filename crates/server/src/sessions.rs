//! Sessions: a guide's outing, the requests a client tags with one session id. Its summary,
//! the unique species detected, is the plan's business metric ("how many species does a
//! visitor hear?").
//!
//! A species counts for a session when one of its windows scores at least the threshold
//! (default 0.5); NaN never counts. Sessions live in memory only (an outing lasts hours and a
//! restart costs a guide little), bounded two ways: a session idle for longer than the idle
//! time (default 12 h) expires, and beyond the maximum count (default 10 000) the least recently
//! seen one is evicted.
//!
//! Metric: the gauge `silencio_session_unique_species` is the **mean unique species over the
//! active sessions** of this replica, updated on every record and expiry. The latest session's
//! count alone would say nothing about the fleet, and a histogram observed on every change
//! would weigh long outings more; the mean over live sessions is the figure the plan asks for
//! and averages across replicas with `avg()`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use silencio_infer::Identification;

use crate::feedback::now_rfc3339;
use crate::{Error, Result};

/// Default score from which a window counts a species.
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// Default most sessions held.
pub const DEFAULT_MAX_SESSIONS: usize = 10_000;
/// Default idle time after which a session expires.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Longest accepted session id.
pub const MAX_SESSION_ID_LEN: usize = 128;

/// A session as the API returns it, and one species of it (wire types of `silencio-api`).
pub use silencio_api::{SessionSpecies, SessionSummary};

/// The live sessions of one server.
#[derive(Debug)]
pub struct Sessions {
    threshold: f32,
    max_sessions: usize,
    idle: Duration,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<String, State>,
    /// (last seen, tie-break) -> session id: the front is the least recently seen.
    lru: BTreeMap<(Instant, u64), String>,
    seq: u64,
    /// Sum of `unique_species` over `map` (for the mean gauge).
    total_unique: usize,
}

#[derive(Debug)]
struct State {
    summary: SessionSummary,
    lru_key: (Instant, u64),
    /// code -> index in `summary.species`.
    by_code: HashMap<String, usize>,
}

/// `Ok` when `id` is 1–128 visible ASCII characters (what the API accepts as a session id).
pub fn validate_session_id(id: &str) -> Result<()> {
    if !id.is_empty() && id.len() <= MAX_SESSION_ID_LEN && id.bytes().all(|b| b.is_ascii_graphic())
    {
        Ok(())
    } else {
        Err(Error::BadRequest(format!(
            "session id must be 1-{MAX_SESSION_ID_LEN} visible ASCII characters"
        )))
    }
}

impl Sessions {
    /// Sessions counting a species from `threshold`, with the default bounds.
    pub fn new(threshold: f32) -> Self {
        Self::with_limits(threshold, DEFAULT_MAX_SESSIONS, DEFAULT_IDLE)
    }

    /// Sessions with explicit bounds (`max_sessions` of at least 1).
    pub fn with_limits(threshold: f32, max_sessions: usize, idle: Duration) -> Self {
        Self {
            threshold,
            max_sessions: max_sessions.max(1),
            idle,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The threshold.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Adds one identification to `session_id` (created on first use). An id that
    /// [`validate_session_id`] refuses is ignored: the route validates it first.
    pub fn record(&self, session_id: &str, model_version: &str, id: &Identification) {
        if validate_session_id(session_id).is_err() {
            tracing::debug!("invalid session id ignored");
            return;
        }
        let now = Instant::now();
        let wall = now_rfc3339();
        let mut inner = self.lock();
        self.expire(&mut inner, now);
        if !inner.map.contains_key(session_id) {
            while inner.map.len() >= self.max_sessions {
                let Some((_, oldest)) = inner.lru.pop_first() else {
                    break;
                };
                if let Some(s) = inner.map.remove(&oldest) {
                    inner.total_unique -= s.summary.unique_species;
                }
            }
        }
        inner.seq += 1;
        let key = (now, inner.seq);
        let inner = &mut *inner;
        let state = inner
            .map
            .entry(session_id.to_string())
            .or_insert_with(|| State {
                summary: SessionSummary {
                    session_id: session_id.to_string(),
                    started_at: wall.clone(),
                    last_seen_at: wall.clone(),
                    requests: 0,
                    windows: 0,
                    unique_species: 0,
                    model_versions: Vec::new(),
                    species: Vec::new(),
                },
                lru_key: key,
                by_code: HashMap::new(),
            });
        inner.lru.remove(&state.lru_key);
        inner.lru.insert(key, session_id.to_string());
        state.lru_key = key;

        let s = &mut state.summary;
        s.last_seen_at.clone_from(&wall);
        s.requests += 1;
        s.windows += id.windows.len() as u64;
        if !s.model_versions.iter().any(|v| v == model_version) {
            s.model_versions.push(model_version.to_string());
        }
        let before = s.unique_species;
        for w in &id.windows {
            for (j, &score) in w.scores.iter().enumerate() {
                if score.partial_cmp(&self.threshold).is_none_or(|o| o.is_lt()) {
                    continue;
                }
                let Some(sp) = id.species.get(j) else {
                    continue;
                };
                match state.by_code.get(&sp.code) {
                    Some(&k) => {
                        let e = &mut s.species[k];
                        e.detections += 1;
                        e.max_score = e.max_score.max(score);
                    }
                    None => {
                        state.by_code.insert(sp.code.clone(), s.species.len());
                        s.species.push(SessionSpecies {
                            code: sp.code.clone(),
                            scientific_name: sp.scientific_name.clone(),
                            common_name: sp.common_name.clone(),
                            class_name: sp.class_name.clone(),
                            first_seen_at: wall.clone(),
                            detections: 1,
                            max_score: score,
                        });
                    }
                }
            }
        }
        s.unique_species = s.species.len();
        inner.total_unique += s.unique_species - before;
        publish(inner);
    }

    /// The summary of `session_id`, unless it never existed or expired.
    pub fn get(&self, session_id: &str) -> Option<SessionSummary> {
        let mut inner = self.lock();
        self.expire(&mut inner, Instant::now());
        inner.map.get(session_id).map(|s| s.summary.clone())
    }

    /// Sessions alive now.
    pub fn len(&self) -> usize {
        let mut inner = self.lock();
        self.expire(&mut inner, Instant::now());
        inner.map.len()
    }

    /// Whether no session is alive.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Mean unique species over the live sessions (0 with none): the gauge's value.
    pub fn mean_unique_species(&self) -> f64 {
        let mut inner = self.lock();
        self.expire(&mut inner, Instant::now());
        mean(&inner)
    }

    /// Drops sessions idle for longer than `idle` (the LRU front is the most idle).
    fn expire(&self, inner: &mut Inner, now: Instant) {
        let mut changed = false;
        while let Some(entry) = inner.lru.first_entry() {
            if now.saturating_duration_since(entry.key().0) <= self.idle {
                break;
            }
            let id = entry.remove();
            if let Some(s) = inner.map.remove(&id) {
                inner.total_unique -= s.summary.unique_species;
            }
            changed = true;
        }
        if changed {
            publish(inner);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Every update leaves the maps consistent before it can panic; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(DEFAULT_THRESHOLD)
    }
}

fn mean(inner: &Inner) -> f64 {
    if inner.map.is_empty() {
        0.0
    } else {
        inner.total_unique as f64 / inner.map.len() as f64
    }
}

fn publish(inner: &Inner) {
    metrics::gauge!("silencio_session_unique_species").set(mean(inner));
}
