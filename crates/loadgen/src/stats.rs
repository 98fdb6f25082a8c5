//! Latency percentiles, a seeded random source and duration strings.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latency of a set of requests in milliseconds; percentiles are exact (nearest rank on the
/// sorted samples), not estimated from buckets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples.
    pub n: usize,
    /// Mean.
    pub mean_ms: f64,
    /// Smallest.
    pub min_ms: f64,
    /// Median (nearest rank).
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// Nearest-rank percentile of sorted samples: the smallest sample with at least `p` % of the
/// samples at or below it. `None` for no samples.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl LatencySummary {
    /// Summary of samples in ms (NaNs are dropped); `None` when there are none.
    pub fn of(samples_ms: &[f64]) -> Option<Self> {
        let mut s: Vec<f64> = samples_ms.iter().copied().filter(|v| !v.is_nan()).collect();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        Some(Self {
            n,
            mean_ms: s.iter().sum::<f64>() / n.max(1) as f64,
            min_ms: *s.first()?,
            p50_ms: percentile(&s, 50.0)?,
            p95_ms: percentile(&s, 95.0)?,
            p99_ms: percentile(&s, 99.0)?,
            max_ms: *s.last()?,
        })
    }
}

/// SplitMix64 (think times and choices; quality is ample): the workspace's one generator.
pub use silencio_common::SplitMix64 as Rng;

/// Parse `20s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 20s, 500ms, 2m)"))?;
    if !v.is_finite() || v < 0.0 || v * scale > 1e7 {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&s, 50.0), Some(50.0));
        assert_eq!(percentile(&s, 95.0), Some(95.0));
        assert_eq!(percentile(&s, 99.0), Some(99.0));
        assert_eq!(percentile(&s, 100.0), Some(100.0));
        assert_eq!(percentile(&s, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
        // Ten samples: p95 and p99 are both the largest; p50 the 5th.
        let t: Vec<f64> = (1..=10).map(|i| f64::from(i) * 10.0).collect();
        assert_eq!(percentile(&t, 50.0), Some(50.0));
        assert_eq!(percentile(&t, 95.0), Some(100.0));
    }

    #[test]
    fn summary_sorts_and_orders_its_percentiles() {
        let l = LatencySummary::of(&[30.0, 10.0, f64::NAN, 20.0, 1000.0]).unwrap();
        assert_eq!(l.n, 4);
        assert_eq!(l.min_ms, 10.0);
        assert_eq!(l.p50_ms, 20.0);
        assert_eq!(l.max_ms, 1000.0);
        assert_eq!(l.mean_ms, 265.0);
        assert!(l.p50_ms <= l.p95_ms && l.p95_ms <= l.p99_ms && l.p99_ms <= l.max_ms);
        assert!(LatencySummary::of(&[]).is_none());
    }

    #[test]
    fn rng_is_seeded_and_exponential_has_its_mean() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..5).map(|_| r.next_u64()).collect()
        };
        let mut r = Rng::new(7);
        assert_eq!(a, (0..5).map(|_| r.next_u64()).collect::<Vec<_>>());
        let mut r = Rng::new(1);
        let n = 200_000;
        let mean = (0..n).map(|_| r.exponential(500.0)).sum::<f64>() / n as f64;
        assert!((mean - 500.0).abs() < 10.0, "{mean}");
        assert!((0..1000).all(|_| r.index(3) < 3));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
