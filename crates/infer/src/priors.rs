//! Post-processing learnt on soundscapes: site and hour priors, and temporal smoothing.
//!
//! Following the BirdCLEF+ 2026 winners, two things are known about a soundscape window beyond
//! its audio:
//!
//! * **Where and when.** BirdCLEF soundscapes are named `{recorder}_{YYYYMMDD}_{HHMMSS}.ogg`
//!   ([`RecordingContext`]). A teacher's scores on the unlabelled soundscapes say how often each
//!   class is heard at each recorder and at each hour of the day; [`SitePriors`] keeps those
//!   means and shifts a window's logits towards them.
//! * **Neighbouring windows.** Insects and frogs call for minutes on end, birds in bursts, so a
//!   class's score is smoothed over neighbouring windows of the same recording, widely for the
//!   [`ClassGroup::Continuous`] classes and lightly for [`ClassGroup::Calls`]
//!   ([`TemporalSmoothing`]).
//!
//! Both travel in a bundle as [`PRIORS_FILE`] ([`PostProcess`]), checksummed in `bundle.json`
//! like `location.json`, and the facade ([`crate::Scorer`]) applies them: priors first (when the
//! recording's context is known), then smoothing.
//!
//! ## The prior shift
//!
//! For class `c`, with `p̄` the mean teacher probability over every window, and for a group `g`
//! (one recorder, or one hour) of `n` windows with mean `m`:
//!
//! ```text
//! p̂_g   = clamp((n·m + k·p̄) / (n + k))          k = shrinkage in windows (default 60)
//! shift = strength · [ln(p̂_site / p̄) + ln(p̂_hour / p̄)]
//! p'    = σ(logit(p) + shift)
//! ```
//!
//! `p̄` and `p̂` are clamped to `[1e-4, 1 − 1e-4]` so that a class never heard cannot send a
//! logarithm to −∞. The shrinkage pulls a group's mean towards the global one in proportion to
//! how little was seen of it: with `k = 60` (five 1-minute files of twelve windows) a recorder
//! heard in two files moves half as far as its raw mean says, so it cannot dominate; a recorder
//! or hour the priors never saw contributes 0. Classes the teacher does not score (all zeros)
//! get `p̂ = p̄` and so no shift.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bundle::Species;
use crate::classifier::WindowScores;
use crate::{Error, Result};

/// File name of the post-processing inside a model bundle.
pub const PRIORS_FILE: &str = "priors.json";

/// Layout version of [`PRIORS_FILE`] that this build writes and reads.
pub const PRIORS_FORMAT: u32 = 1;

/// Default shrinkage `k` of [`SitePriors`], in windows: five 1-minute soundscapes of 5 s windows.
pub const DEFAULT_SHRINKAGE_WINDOWS: f64 = 60.0;

/// Default `strength` of the prior shift. Half the log ratio: the site and hour effects overlap
/// (a recorder's files cluster at some hours), so their full sum would count one effect twice,
/// and the teacher's probabilities are not calibrated.
pub const DEFAULT_STRENGTH: f32 = 0.5;

/// Bounds of the mean probabilities in the log ratios.
const MEAN_EPS: f64 = 1e-4;

/// Bounds of a window's score before its logit is taken: a score of exactly 0 or 1 would give
/// an infinite logit that no shift moves.
const SCORE_EPS: f64 = 1e-6;

/// Where and when a recording was made, as far as its name tells.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RecordingContext {
    /// The recorder (site), e.g. `H02`.
    pub recorder: Option<String>,
    /// The hour of the day the recording started, 0..=23.
    pub hour: Option<u8>,
}

impl RecordingContext {
    /// The context of a BirdCLEF soundscape name `{recorder}_{YYYYMMDD}_{HHMMSS}`, with or
    /// without directories and an extension (`train_soundscapes/H02_20230420_074000.ogg`).
    /// Any other name gives no recorder and no hour (never an error): it is simply not a
    /// soundscape whose site is known. An hour above 23 is dropped, the recorder kept.
    pub fn from_file_name(name: &str) -> Self {
        let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
        let stem = match base.rsplit_once('.') {
            Some((stem, _)) if !stem.is_empty() => stem,
            _ => base,
        };
        let parts: Vec<&str> = stem.split('_').collect();
        let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
        match parts.as_slice() {
            [recorder, date, time]
                if !recorder.trim().is_empty() && digits(date, 8) && digits(time, 6) =>
            {
                Self {
                    recorder: Some((*recorder).to_string()),
                    hour: time[..2].parse::<u8>().ok().filter(|h| *h < 24),
                }
            }
            _ => Self::default(),
        }
    }

    /// [`Self::from_file_name`] of a path's last component.
    pub fn from_path(path: &Path) -> Self {
        path.file_name()
            .map(|n| Self::from_file_name(&n.to_string_lossy()))
            .unwrap_or_default()
    }

    /// The hour of day of a timestamp as written (`2024-03-01T07:40:00-05:00` → 7; the clock
    /// time in the text, i.e. local time when the text carries the recorder's offset, as
    /// BirdCLEF's file names do); no recorder. A date without a time, or anything else, tells
    /// nothing.
    pub fn from_timestamp(text: &str) -> Self {
        Self::from_timestamp_after(text, 0.0)
    }

    /// The context `offset_s` seconds after the timestamp `text` (as [`Self::from_timestamp`]
    /// reads it, minutes and seconds too when written): the hour of a later window of a
    /// recording that started then, wrapping past midnight. A live stream's window `i` is at
    /// `offset_s = 5·i`.
    pub fn from_timestamp_after(text: &str, offset_s: f64) -> Self {
        let two = |t: &str| {
            t.get(..2)
                .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<u32>().ok())
        };
        let hour = text
            .split_once(['T', 't', ' '])
            .map(|(_, time)| time)
            .and_then(|time| {
                let h = two(time).filter(|h| *h < 24)?;
                // Minutes and seconds when written as `:MM` and `:SS`; absent ones count 0.
                let m = time
                    .get(2..)
                    .and_then(|r| r.strip_prefix(':'))
                    .and_then(two);
                let sec = time
                    .get(5..)
                    .filter(|_| m.is_some())
                    .and_then(|r| r.strip_prefix(':'))
                    .and_then(two);
                let start = f64::from(h * 3600 + m.unwrap_or(0) * 60 + sec.unwrap_or(0));
                let t = (start + offset_s.max(0.0)).rem_euclid(86_400.0);
                Some((t / 3600.0).floor() as u8 % 24)
            });
        Self {
            recorder: None,
            hour,
        }
    }

    /// Whether the name told anything.
    pub fn is_known(&self) -> bool {
        self.recorder.is_some() || self.hour.is_some()
    }
}

/// Mean teacher probabilities of one group of windows (one recorder, or one hour).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMeans {
    /// Windows in the group.
    pub windows: u64,
    /// Mean probability per class, in [`SitePriors::classes`] order. Stored as f32 (what the
    /// teacher gives), which also survives a JSON round trip exactly.
    pub mean: Vec<f32>,
}

/// Per-site and per-hour class priors learnt from a teacher's scores (see the module docs for
/// the formula).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SitePriors {
    classes: Vec<String>,
    shrinkage_windows: f64,
    global: GroupMeans,
    recorders: BTreeMap<String, GroupMeans>,
    hours: BTreeMap<u8, GroupMeans>,
}

/// Sums of one group while learning.
#[derive(Default)]
struct Sums {
    windows: u64,
    sum: Vec<f64>,
}

impl Sums {
    fn add(&mut self, probs: &[f32]) {
        if self.sum.is_empty() {
            self.sum = vec![0.0; probs.len()];
        }
        self.windows += 1;
        for (s, p) in self.sum.iter_mut().zip(probs) {
            *s += f64::from(*p);
        }
    }

    fn means(self) -> GroupMeans {
        let n = self.windows.max(1) as f64;
        GroupMeans {
            windows: self.windows,
            mean: self.sum.into_iter().map(|s| (s / n) as f32).collect(),
        }
    }
}

fn priors_error(message: impl Into<String>) -> Error {
    Error::Priors {
        message: message.into(),
    }
}

fn clamp_mean(p: f64) -> f64 {
    p.clamp(MEAN_EPS, 1.0 - MEAN_EPS)
}

impl SitePriors {
    /// Learns the means from windows `(context, probabilities in `classes` order)`, with the
    /// default shrinkage [`DEFAULT_SHRINKAGE_WINDOWS`]. Refuses a row of the wrong width, a
    /// probability outside [0, 1] or not finite, and an empty input.
    pub fn learn<I, C, P>(classes: Vec<String>, rows: I) -> Result<Self>
    where
        I: IntoIterator<Item = (C, P)>,
        C: Borrow<RecordingContext>,
        P: AsRef<[f32]>,
    {
        let mut global = Sums::default();
        let mut recorders: BTreeMap<String, Sums> = BTreeMap::new();
        let mut hours: BTreeMap<u8, Sums> = BTreeMap::new();
        for (i, (ctx, probs)) in rows.into_iter().enumerate() {
            let (ctx, probs) = (ctx.borrow(), probs.as_ref());
            if probs.len() != classes.len() {
                return Err(priors_error(format!(
                    "window {i} has {} probabilities for {} classes",
                    probs.len(),
                    classes.len()
                )));
            }
            if let Some(p) = probs.iter().find(|p| !(0.0..=1.0).contains(*p)) {
                return Err(priors_error(format!(
                    "window {i} has probability {p}, outside [0, 1]"
                )));
            }
            global.add(probs);
            if let Some(r) = &ctx.recorder {
                recorders.entry(r.clone()).or_default().add(probs);
            }
            if let Some(h) = ctx.hour {
                hours.entry(h).or_default().add(probs);
            }
        }
        if global.windows == 0 {
            return Err(priors_error("no windows to learn priors from"));
        }
        let priors = Self {
            classes,
            shrinkage_windows: DEFAULT_SHRINKAGE_WINDOWS,
            global: global.means(),
            recorders: recorders.into_iter().map(|(k, s)| (k, s.means())).collect(),
            hours: hours.into_iter().map(|(k, s)| (k, s.means())).collect(),
        };
        priors.validate()?;
        Ok(priors)
    }

    /// The same priors with shrinkage `k` windows (finite, ≥ 0; 0 trusts every group's raw
    /// mean).
    pub fn with_shrinkage(mut self, k: f64) -> Result<Self> {
        self.shrinkage_windows = k;
        self.validate()?;
        Ok(self)
    }

    /// Class codes, in score order.
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// The shrinkage `k`, in windows.
    pub fn shrinkage_windows(&self) -> f64 {
        self.shrinkage_windows
    }

    /// Means over every window.
    pub fn global(&self) -> &GroupMeans {
        &self.global
    }

    /// Means per recorder.
    pub fn recorders(&self) -> &BTreeMap<String, GroupMeans> {
        &self.recorders
    }

    /// Means per hour of the day.
    pub fn hours(&self) -> &BTreeMap<u8, GroupMeans> {
        &self.hours
    }

    /// Every way the priors cannot work (widths, ranges, hours), as one error.
    fn validate(&self) -> Result<()> {
        let c = self.classes.len();
        let mut bad = Vec::new();
        if !(self.shrinkage_windows.is_finite() && self.shrinkage_windows >= 0.0) {
            bad.push(format!(
                "shrinkage {} must be finite and >= 0",
                self.shrinkage_windows
            ));
        }
        let groups = std::iter::once(("all windows".to_string(), &self.global))
            .chain(
                self.recorders
                    .iter()
                    .map(|(r, g)| (format!("recorder {r}"), g)),
            )
            .chain(self.hours.iter().map(|(h, g)| (format!("hour {h}"), g)));
        for (name, g) in groups {
            if g.mean.len() != c {
                bad.push(format!("{name} has {} means for {c} classes", g.mean.len()));
            }
            if g.mean.iter().any(|m| !(0.0..=1.0).contains(m)) {
                bad.push(format!("{name} has a mean outside [0, 1]"));
            }
        }
        if let Some(h) = self.hours.keys().find(|h| **h > 23) {
            bad.push(format!("hour {h} is not an hour of the day"));
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(priors_error(bad.join("; ")))
        }
    }

    /// Per class, `ln(p̂_site/p̄) + ln(p̂_hour/p̄)` for `ctx` (before `strength`); `None` when
    /// the priors know neither its recorder nor its hour.
    pub fn log_ratio(&self, ctx: &RecordingContext) -> Option<Vec<f64>> {
        let site = ctx.recorder.as_ref().and_then(|r| self.recorders.get(r));
        let hour = ctx.hour.and_then(|h| self.hours.get(&h));
        if site.is_none() && hour.is_none() {
            return None;
        }
        let k = self.shrinkage_windows;
        let ratio = |g: Option<&GroupMeans>, c: usize, pbar: f64| match g {
            Some(g) => {
                let n = g.windows as f64;
                let shrunk = (n * f64::from(g.mean[c]) + k * pbar) / (n + k);
                // n + k is 0 only for an empty group with k = 0: nothing known, no shift.
                if shrunk.is_finite() {
                    (clamp_mean(shrunk) / pbar).ln()
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        Some(
            (0..self.classes.len())
                .map(|c| {
                    let pbar = clamp_mean(f64::from(self.global.mean[c]));
                    ratio(site, c, pbar) + ratio(hour, c, pbar)
                })
                .collect(),
        )
    }

    /// Shifts one window's probabilities (in [`Self::classes`] order): `σ(logit(p) + shift)`.
    /// Nothing changes when the context is unknown to the priors or `strength` is 0.
    pub fn apply(&self, ctx: &RecordingContext, strength: f32, scores: &mut [f32]) {
        if let Some(shift) = self.log_ratio(ctx) {
            shift_scores(&shift, f64::from(strength), scores);
        }
    }
}

/// `σ(logit(p) + strength·shift)` for each score whose shift is not 0.
fn shift_scores(shift: &[f64], strength: f64, scores: &mut [f32]) {
    for (p, s) in scores.iter_mut().zip(shift) {
        let s = strength * s;
        if s != 0.0 && p.is_finite() {
            let q = f64::from(*p).clamp(SCORE_EPS, 1.0 - SCORE_EPS);
            let z = (q / (1.0 - q)).ln() + s;
            *p = (1.0 / (1.0 + (-z).exp())) as f32;
        }
    }
}

/// How a class calls over time, which sets how widely its scores are smoothed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassGroup {
    /// Insects and frogs (Insecta, Amphibia): choruses that last minutes.
    Continuous,
    /// Birds, mammals and anything else: calls and songs in bursts.
    Calls,
}

impl ClassGroup {
    /// The group of a taxonomic class name (case-insensitive).
    pub fn of(class_name: &str) -> Self {
        let c = class_name.trim();
        if c.eq_ignore_ascii_case("Insecta") || c.eq_ignore_ascii_case("Amphibia") {
            Self::Continuous
        } else {
            Self::Calls
        }
    }
}

/// Per class group, a kernel over neighbouring windows of one recording: window `i` becomes
/// `Σ_j w[j−i+r]·x[j] / Σ_j w[j−i+r]` over the windows `j` within `r` of it, so edge windows
/// are renormalised over the neighbours they have. Kernels have odd length `2r + 1`, centre in
/// the middle; weights need not sum to 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TemporalSmoothing {
    /// Kernel of [`ClassGroup::Continuous`] classes.
    pub continuous: Vec<f32>,
    /// Kernel of [`ClassGroup::Calls`] classes.
    pub calls: Vec<f32>,
}

impl Default for TemporalSmoothing {
    /// Wide for insects and frogs (±10 s), light for birds (±5 s, 80 % on the window itself).
    fn default() -> Self {
        Self {
            continuous: vec![0.1, 0.2, 0.4, 0.2, 0.1],
            calls: vec![0.1, 0.8, 0.1],
        }
    }
}

impl TemporalSmoothing {
    /// The kernel of `group`.
    pub fn kernel(&self, group: ClassGroup) -> &[f32] {
        match group {
            ClassGroup::Continuous => &self.continuous,
            ClassGroup::Calls => &self.calls,
        }
    }

    /// Checks both kernels: odd length, finite non-negative weights, positive centre.
    pub fn validate(&self) -> Result<()> {
        for (name, k) in [("continuous", &self.continuous), ("calls", &self.calls)] {
            if k.len() % 2 == 0 {
                return Err(priors_error(format!(
                    "{name} kernel has {} taps; it needs an odd number (centre in the middle)",
                    k.len()
                )));
            }
            if k.iter().any(|w| !w.is_finite() || *w < 0.0) || k[k.len() / 2] <= 0.0 {
                return Err(priors_error(format!(
                    "{name} kernel {k:?} needs finite weights >= 0 and a positive centre"
                )));
            }
        }
        Ok(())
    }

    /// Smooths each class of `windows` (in time order) with its group's kernel; `species`
    /// gives the classes, in score order.
    pub fn apply(&self, species: &[Species], windows: &mut [WindowScores]) {
        let original: Vec<Vec<f32>> = windows.iter().map(|w| w.scores.clone()).collect();
        for (c, s) in species.iter().enumerate() {
            let kernel = self.kernel(ClassGroup::of(&s.class_name));
            let r = kernel.len() / 2;
            for (i, w) in windows.iter_mut().enumerate() {
                let (mut num, mut den) = (0.0f64, 0.0f64);
                for (j, row) in original
                    .iter()
                    .enumerate()
                    .skip(i.saturating_sub(r))
                    .take(r + 1 + i.min(r))
                {
                    let (Some(x), Some(wt)) = (row.get(c), kernel.get(j + r - i)) else {
                        continue;
                    };
                    num += f64::from(*wt) * f64::from(*x);
                    den += f64::from(*wt);
                }
                if let Some(v) = w.scores.get_mut(c)
                    && den > 0.0
                {
                    *v = (num / den) as f32;
                }
            }
        }
    }
}

/// What a bundle does to its scores after the model: site/hour priors and temporal smoothing,
/// stored as [`PRIORS_FILE`].
#[derive(Debug, Clone, PartialEq)]
pub struct PostProcess {
    /// Site and hour priors, applied when a recording's context is known.
    pub priors: Option<SitePriors>,
    /// Smoothing over neighbouring windows, always applied.
    pub smoothing: Option<TemporalSmoothing>,
    /// Weight of the prior shift in logits (see the module docs).
    pub strength: f32,
}

/// [`PRIORS_FILE`] as stored.
#[derive(Serialize, Deserialize)]
struct Stored {
    format: u32,
    strength: f32,
    priors: Option<SitePriors>,
    smoothing: Option<TemporalSmoothing>,
}

impl PostProcess {
    /// Priors `priors` at [`DEFAULT_STRENGTH`] with the default [`TemporalSmoothing`].
    pub fn new(priors: Option<SitePriors>) -> Self {
        Self {
            priors,
            smoothing: Some(TemporalSmoothing::default()),
            strength: DEFAULT_STRENGTH,
        }
    }

    /// Checks the parts and that the priors' classes are `species`'s codes in order.
    pub fn validate(&self, species: &[Species]) -> Result<()> {
        if !(self.strength.is_finite() && self.strength >= 0.0) {
            return Err(priors_error(format!(
                "strength {} must be finite and >= 0",
                self.strength
            )));
        }
        if let Some(s) = &self.smoothing {
            s.validate()?;
        }
        if let Some(p) = &self.priors {
            p.validate()?;
            let codes = species.iter().map(|s| s.code.as_str());
            if !p.classes.iter().map(String::as_str).eq(codes) {
                return Err(priors_error(format!(
                    "the priors are over {} classes that are not the model's {} species in order",
                    p.classes.len(),
                    species.len()
                )));
            }
        }
        Ok(())
    }

    /// Applies the priors (for `ctx`) to every window, then the smoothing.
    pub fn apply(&self, species: &[Species], ctx: &RecordingContext, windows: &mut [WindowScores]) {
        self.apply_priors(ctx, windows);
        if let Some(s) = &self.smoothing {
            s.apply(species, windows);
        }
    }

    /// The priors alone (for `ctx`), for windows answered one at a time as they close (a live
    /// stream), where the smoothing's later neighbours do not exist yet.
    pub fn apply_priors(&self, ctx: &RecordingContext, windows: &mut [WindowScores]) {
        if let Some(shift) = self.priors.as_ref().and_then(|p| p.log_ratio(ctx)) {
            for w in windows.iter_mut() {
                shift_scores(&shift, f64::from(self.strength), &mut w.scores);
            }
        }
    }

    /// The JSON of [`PRIORS_FILE`].
    pub fn to_json_bytes(&self) -> Result<Vec<u8>> {
        let stored = Stored {
            format: PRIORS_FORMAT,
            strength: self.strength,
            priors: self.priors.clone(),
            smoothing: self.smoothing.clone(),
        };
        let mut v = serde_json::to_vec_pretty(&stored).map_err(|e| priors_error(e.to_string()))?;
        v.push(b'\n');
        Ok(v)
    }

    /// Parses [`PRIORS_FILE`] and checks it against `species`; `origin` names the source in
    /// errors.
    pub fn from_json_bytes(bytes: &[u8], origin: &str, species: &[Species]) -> Result<Self> {
        let s: Stored =
            serde_json::from_slice(bytes).map_err(|e| priors_error(format!("{origin}: {e}")))?;
        if s.format != PRIORS_FORMAT {
            return Err(priors_error(format!(
                "{origin}: format {} is not supported (this build reads {PRIORS_FORMAT})",
                s.format
            )));
        }
        let p = Self {
            priors: s.priors,
            smoothing: s.smoothing,
            strength: s.strength,
        };
        p.validate(species)
            .map_err(|e| priors_error(format!("{origin}: {e}")))?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_timestamp_gives_its_clock_hour_and_no_recorder() {
        let h = |t: &str| RecordingContext::from_timestamp(t).hour;
        assert_eq!(h("2024-03-01T07:40:00-05:00"), Some(7));
        assert_eq!(h("2024-03-01 23:59:59"), Some(23));
        assert_eq!(h("2024-03-01"), None);
        assert_eq!(h("2024-03-01T24:00:00Z"), None);
        assert_eq!(h("2024-03-01Tx7:00"), None);
        assert_eq!(h("T"), None);
        assert!(
            RecordingContext::from_timestamp("2024-03-01T07:00:00Z")
                .recorder
                .is_none()
        );
    }

    #[test]
    fn later_windows_take_the_hour_they_fall_in() {
        let h = |t: &str, s: f64| RecordingContext::from_timestamp_after(t, s).hour;
        // 06:59:57 + 0 s, + 5 s (window 1 starts at 07:00:02).
        assert_eq!(h("2024-03-01T06:59:57-05:00", 0.0), Some(6));
        assert_eq!(h("2024-03-01T06:59:57-05:00", 5.0), Some(7));
        // Past midnight it wraps; an hour-only time counts from the full hour.
        assert_eq!(h("2024-03-01T23:58:00", 180.0), Some(0));
        assert_eq!(h("2024-03-01T07", 3599.0), Some(7));
        assert_eq!(h("2024-03-01T07", 3600.0), Some(8));
        // Minutes only: 06:30 + 45 min.
        assert_eq!(h("2024-03-01T06:30", 2700.0), Some(7));
        assert_eq!(h("2024-03-01", 10.0), None);
    }

    use super::*;

    fn ctx(recorder: &str, hour: u8) -> RecordingContext {
        RecordingContext {
            recorder: Some(recorder.into()),
            hour: Some(hour),
        }
    }

    fn species(classes: &[&str]) -> Vec<Species> {
        classes
            .iter()
            .enumerate()
            .map(|(i, c)| Species {
                code: format!("sp{i}"),
                scientific_name: String::new(),
                common_name: String::new(),
                class_name: (*c).into(),
            })
            .collect()
    }

    fn windows(rows: &[&[f32]]) -> Vec<WindowScores> {
        rows.iter()
            .enumerate()
            .map(|(i, r)| WindowScores {
                start_s: 5.0 * i as f64,
                end_s: 5.0 * i as f64 + 5.0,
                scores: r.to_vec(),
            })
            .collect()
    }

    #[test]
    fn soundscape_names_give_recorder_and_hour() {
        assert_eq!(
            RecordingContext::from_file_name("H02_20230420_074000.ogg"),
            ctx("H02", 7)
        );
        assert_eq!(
            RecordingContext::from_file_name("train_soundscapes/S13_20240101_235959"),
            ctx("S13", 23)
        );
        assert_eq!(
            RecordingContext::from_path(Path::new("/x/H02_20230420_000000.flac")),
            ctx("H02", 0)
        );
        // Hour 25 is no hour; the recorder is still the recorder.
        assert_eq!(
            RecordingContext::from_file_name("H02_20230420_250000.ogg"),
            RecordingContext {
                recorder: Some("H02".into()),
                hour: None
            }
        );
        for odd in [
            "",
            ".ogg",
            "XC12345.ogg",
            "my_birds.ogg",
            "H02_2023042_074000.ogg",
            "H02_20230420_07400x.ogg",
            "_20230420_074000.ogg",
            "H02_20230420_074000_extra.ogg",
            "H02_20230420_０７4000.ogg",
            "/",
        ] {
            let c = RecordingContext::from_file_name(odd);
            assert_eq!(c, RecordingContext::default(), "{odd:?}");
            assert!(!c.is_known());
        }
    }

    /// Two classes. Recorder A: 2 windows with p0 = 0.5 (hour 6); recorder B: 2 windows with
    /// p0 = 0.1 (hour 18). Class 1 is never heard.
    fn learnt() -> SitePriors {
        let rows = vec![
            (ctx("A", 6), vec![0.5, 0.0]),
            (ctx("A", 6), vec![0.5, 0.0]),
            (ctx("B", 18), vec![0.1, 0.0]),
            (ctx("B", 18), vec![0.1, 0.0]),
        ];
        SitePriors::learn(vec!["a".into(), "b".into()], rows).unwrap()
    }

    #[test]
    fn means_shrink_towards_the_global_mean() {
        let p = learnt().with_shrinkage(2.0).unwrap();
        // Global p̄0 = (0.5+0.5+0.1+0.1)/4 = 0.3; recorder A mean 0.5 over n = 2. (Tolerances
        // allow for 0.1 as an f32.)
        assert!((p.global().mean[0] - 0.3).abs() < 1e-7);
        assert_eq!(p.recorders()["A"].windows, 2);
        // k = 2: p̂_A = (2·0.5 + 2·0.3)/4 = 0.4, and hour 6 is the same windows, so also 0.4:
        // log ratio = 2·ln(0.4/0.3). Class 1: p̄ clamps to 1e-4, p̂ = p̄ → 0.
        let r = p.log_ratio(&ctx("A", 6)).unwrap();
        assert!((r[0] - 2.0 * (0.4f64 / 0.3).ln()).abs() < 1e-6, "{r:?}");
        assert_eq!(r[1], 0.0);
        // Unknown hour: only the site term. Unknown both: nothing.
        let r = p.log_ratio(&ctx("A", 3)).unwrap();
        assert!((r[0] - (0.4f64 / 0.3).ln()).abs() < 1e-6);
        assert!(p.log_ratio(&ctx("Z", 3)).is_none());
        assert!(p.log_ratio(&RecordingContext::default()).is_none());
    }

    #[test]
    fn the_shift_moves_the_logit() {
        let p = learnt().with_shrinkage(0.0).unwrap();
        // k = 0: p̂_B = 0.1 for site and hour; shift = 0.5·2·ln(0.1/0.3) = −ln 3, so the odds
        // of 0.5 (1:1) become 1:3 → 0.25.
        let mut s = [0.5f32, 0.5];
        p.apply(&ctx("B", 18), 0.5, &mut s);
        assert!((s[0] - 0.25).abs() < 1e-6, "{s:?}");
        assert_eq!(s[1], 0.5);
        let mut s = [0.5f32, 0.5];
        p.apply(&ctx("nowhere", 12), 0.5, &mut s);
        assert_eq!(s, [0.5, 0.5]);
    }

    #[test]
    fn bad_rows_are_refused() {
        let classes = vec!["a".to_string()];
        let e = SitePriors::learn(classes.clone(), [(ctx("A", 1), vec![0.1, 0.2])]).unwrap_err();
        assert_eq!(e.kind(), "priors");
        assert!(SitePriors::learn(classes.clone(), [(ctx("A", 1), vec![1.5])]).is_err());
        assert!(SitePriors::learn(classes.clone(), [(ctx("A", 1), vec![f32::NAN])]).is_err());
        let none: Vec<(RecordingContext, Vec<f32>)> = Vec::new();
        assert!(SitePriors::learn(classes, none).is_err());
        assert!(learnt().with_shrinkage(-1.0).is_err());
    }

    #[test]
    fn smoothing_follows_the_class_group_and_renormalises_edges() {
        let s = TemporalSmoothing {
            continuous: vec![0.25, 0.5, 0.25],
            calls: vec![0.1, 0.8, 0.1],
        };
        let sp = species(&["Insecta", "Aves"]);
        let mut w = windows(&[&[1.0, 1.0], &[0.0, 0.0], &[0.0, 0.0]]);
        s.apply(&sp, &mut w);
        // Insect, window 0: (0.5·1 + 0.25·0)/0.75 = 2/3; window 1: 0.25·1 = 0.25; window 2: 0.
        // Bird, window 0: 0.8/0.9 = 8/9; window 1: 0.1; window 2: 0.
        let got: Vec<Vec<f32>> = w.into_iter().map(|w| w.scores).collect();
        let want = [[2.0 / 3.0, 8.0 / 9.0], [0.25, 0.1], [0.0, 0.0]];
        for (g, e) in got.iter().zip(want) {
            for (a, b) in g.iter().zip(e) {
                assert!((a - b).abs() < 1e-6, "{got:?}");
            }
        }
        // A frog smooths like an insect; a lone window is left as it is.
        assert_eq!(ClassGroup::of("amphibia"), ClassGroup::Continuous);
        assert_eq!(ClassGroup::of("Mammalia"), ClassGroup::Calls);
        let mut one = windows(&[&[0.3, 0.7]]);
        s.apply(&sp, &mut one);
        assert_eq!(one[0].scores, vec![0.3, 0.7]);
    }

    #[test]
    fn five_taps_reach_two_windows() {
        let s = TemporalSmoothing::default();
        let sp = species(&["Insecta"]);
        let mut w = windows(&[&[0.0], &[0.0], &[1.0], &[0.0], &[0.0]]);
        s.apply(&sp, &mut w);
        // Kernel [0.1, 0.2, 0.4, 0.2, 0.1]; window 0 sees taps 0.4, 0.2, 0.1 (sum 0.7), with
        // the 1 at distance 2: 0.1/0.7. Window 1 (sum 0.9): 0.2/0.9. Window 2: 0.4.
        let got: Vec<f32> = w.iter().map(|w| w.scores[0]).collect();
        let want = [0.1 / 0.7, 0.2 / 0.9, 0.4, 0.2 / 0.9, 0.1 / 0.7];
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{got:?}");
        }
    }

    #[test]
    fn kernels_are_checked() {
        let mut s = TemporalSmoothing::default();
        assert!(s.validate().is_ok());
        s.calls = vec![0.5, 0.5];
        assert!(s.validate().is_err());
        s.calls = vec![0.1, -0.8, 0.1];
        assert!(s.validate().is_err());
    }

    #[test]
    fn post_process_round_trips_and_checks_classes() {
        let p = PostProcess::new(Some(learnt()));
        let sp = species(&["Aves", "Aves"]);
        let bytes = p.to_json_bytes().unwrap();
        // Codes sp0, sp1 are not a, b: refused.
        assert!(PostProcess::from_json_bytes(&bytes, "x", &sp).is_err());
        let mut named = sp.clone();
        named[0].code = "a".into();
        named[1].code = "b".into();
        assert_eq!(
            PostProcess::from_json_bytes(&bytes, "x", &named).unwrap(),
            p
        );
        let text = String::from_utf8(bytes).unwrap();
        let e = PostProcess::from_json_bytes(
            text.replace("\"format\": 1", "\"format\": 9").as_bytes(),
            "x",
            &named,
        )
        .unwrap_err();
        assert!(e.to_string().contains("format 9"), "{e}");
        // Smoothing only: any species list.
        let s = PostProcess {
            priors: None,
            ..PostProcess::new(None)
        };
        let b = s.to_json_bytes().unwrap();
        assert_eq!(PostProcess::from_json_bytes(&b, "x", &sp).unwrap(), s);
    }
}
