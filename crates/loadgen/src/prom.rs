//! The server's histograms as the load report shows them: the scrape itself is read by
//! `silencio-prom`, shared with the dashboard.

use serde::{Deserialize, Serialize};
pub use silencio_prom::{Exposition, Histogram, parse};

/// Per-bucket (non-cumulative) counts of `h`, for a report.
pub fn summary(h: &Histogram) -> HistogramSummary {
    let mut prev = 0.0;
    let buckets = h
        .buckets
        .iter()
        .map(|&(le, cum)| {
            let b = BucketCount {
                le: format_le(le),
                cumulative: cum.round() as u64,
                count: (cum - prev).max(0.0).round() as u64,
            };
            prev = cum;
            b
        })
        .collect();
    HistogramSummary {
        buckets,
        count: h.count.round() as u64,
        sum: h.sum,
        mean: h.mean(),
    }
}

fn format_le(le: f64) -> String {
    if le == f64::INFINITY {
        "+Inf".into()
    } else if le.fract() == 0.0 && le.abs() < 1e15 {
        format!("{}", le as i64)
    } else {
        format!("{le}")
    }
}

/// One bucket of a histogram in a report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketCount {
    /// Upper bound as Prometheus writes it (`1`, `2`, …, `+Inf`).
    pub le: String,
    /// Observations `<= le`.
    pub cumulative: u64,
    /// Observations in `(previous le, le]`.
    pub count: u64,
}

/// A histogram as reported: per-bucket counts, total count, sum and mean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistogramSummary {
    /// Buckets in increasing `le`.
    pub buckets: Vec<BucketCount>,
    /// Observations (for the batch-size histogram: batches run).
    pub count: u64,
    /// Sum of observations (for batch size: requests batched).
    pub sum: f64,
    /// `sum / count`, when any.
    pub mean: Option<f64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // Written from the format spec, in the shape metrics-exporter-prometheus renders.
    const BEFORE: &str = r#"# HELP silencio_batch_size Requests per inference batch.
# TYPE silencio_batch_size histogram
silencio_batch_size_bucket{le="1"} 5
silencio_batch_size_bucket{le="2"} 7
silencio_batch_size_bucket{le="4"} 7
silencio_batch_size_bucket{le="8"} 8
silencio_batch_size_bucket{le="16"} 8
silencio_batch_size_bucket{le="32"} 8
silencio_batch_size_bucket{le="+Inf"} 8
silencio_batch_size_sum 17
silencio_batch_size_count 8

# TYPE silencio_rejected_total counter
silencio_rejected_total{reason="queue_full"} 3
silencio_http_requests_total{route="/v1/identify",status="200"} 20 1700000000000
silencio_info{path="C:\\models\\v1",note="say \"hi\"\nbye",} 1
"#;

    const AFTER: &str = r#"# TYPE silencio_batch_size histogram
silencio_batch_size_bucket{model_version="m@1",le="1"} 6
silencio_batch_size_bucket{model_version="m@1",le="2"} 9
silencio_batch_size_bucket{model_version="m@1",le="4"} 12
silencio_batch_size_bucket{model_version="m@1",le="8"} 14
silencio_batch_size_bucket{model_version="m@1",le="16"} 14
silencio_batch_size_bucket{model_version="m@1",le="32"} 14
silencio_batch_size_bucket{model_version="m@1",le="+Inf"} 14
silencio_batch_size_sum{model_version="m@1"} 50
silencio_batch_size_count{model_version="m@1"} 14
silencio_rejected_total{reason="queue_full"} 10
silencio_rejected_total{reason="too_large"} 1
"#;

    #[test]
    fn histogram_diff_gives_the_batches_of_one_level() {
        let hist = |text: &str| {
            parse(text)
                .unwrap()
                .histogram("silencio_batch_size", |_| true)
                .unwrap()
        };
        let (before, after) = (hist(BEFORE), hist(AFTER));
        assert_eq!(before.buckets.len(), 7);
        assert_eq!(before.buckets[6].0, f64::INFINITY);
        let d = summary(&after.since(&before));
        let counts: Vec<(&str, u64)> = d.buckets.iter().map(|b| (b.le.as_str(), b.count)).collect();
        // cumulative deltas 1,2,5,6,6,6,6 -> per bucket 1,1,3,1,0,0,0
        assert_eq!(
            counts,
            vec![
                ("1", 1),
                ("2", 1),
                ("4", 3),
                ("8", 1),
                ("16", 0),
                ("32", 0),
                ("+Inf", 0)
            ]
        );
        assert_eq!(d.count, 6);
        assert_eq!(d.sum, 33.0);
        assert_eq!(d.mean, Some(5.5));
        // A restarted server (counts went down): the new scrape is all there is.
        assert_eq!(before.since(&after), before);
        // Not exported at all.
        assert!(
            parse("x 1")
                .unwrap()
                .histogram("silencio_batch_size", |_| true)
                .is_none()
        );
        let r = parse(AFTER)
            .unwrap()
            .sum_by("silencio_rejected_total", "reason");
        assert_eq!(r["queue_full"], 10.0);
        assert_eq!(r["too_large"], 1.0);
    }
}
