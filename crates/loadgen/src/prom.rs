//! A small reader of the Prometheus text exposition format (version 0.0.4): enough to scrape
//! the server's `/metrics` before and after a level and diff its batch-size histogram.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One sample line: `name{label="value",…} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (for histograms: with its `_bucket`, `_sum` or `_count` suffix).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parse a whole exposition; comments (`# HELP`, `# TYPE`, others) and blank lines are
/// skipped. A malformed sample line is an error naming its line number.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_line(line).map_err(|e| format!("line {}: {e}: {line:?}", i + 1))?);
    }
    Ok(out)
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map_or(line.len(), |(i, _)| i);
    if name_end == 0 {
        return Err("no metric name".into());
    }
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = parse_labels(r, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_value(fields.next().ok_or("no value")?)?;
    // An optional integer timestamp (ms) may follow; anything more is malformed.
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing text".into());
    }
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Labels after `{`; returns what follows the closing `}`.
fn parse_labels<'a>(mut s: &'a str, out: &mut Vec<(String, String)>) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(r) = s.strip_prefix('}') {
            return Ok(r);
        }
        let key_end = s
            .char_indices()
            .find(|&(i, c)| !is_name_char(c, i == 0) || c == ':')
            .map_or(s.len(), |(i, _)| i);
        if key_end == 0 {
            return Err("bad label name".into());
        }
        let key = s[..key_end].to_string();
        s = s[key_end..].trim_start();
        s = s.strip_prefix('=').ok_or("expected '=' after label name")?;
        s = s.trim_start();
        s = s.strip_prefix('"').ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let close = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    _ => return Err("bad escape in label value".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        out.push((key, value));
        s = s[close + 1..].trim_start();
        if let Some(r) = s.strip_prefix(',') {
            s = r;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after label".into());
        }
    }
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("bad value {v:?}")),
    }
}

/// A cumulative histogram summed over every series of one metric (all label sets but `le`).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// `(le, cumulative count)`, sorted by `le`, `+Inf` last when present.
    pub buckets: Vec<(f64, f64)>,
    /// `_sum`.
    pub sum: f64,
    /// `_count`.
    pub count: f64,
}

impl Histogram {
    /// The histogram `name` in a scrape: `name_bucket{le}`, `name_sum`, `name_count`. `None`
    /// when the scrape has none of them (metric not exported yet).
    pub fn from_samples(samples: &[Sample], name: &str) -> Option<Self> {
        let bucket = format!("{name}_bucket");
        let (sum_name, count_name) = (format!("{name}_sum"), format!("{name}_count"));
        let mut by_le: BTreeMap<LeKey, f64> = BTreeMap::new();
        let (mut sum, mut count, mut seen) = (0.0, 0.0, false);
        for s in samples {
            if s.name == bucket {
                if let Some(le) = s.label("le").and_then(|l| parse_value(l).ok()) {
                    *by_le.entry(LeKey(le)).or_default() += s.value;
                    seen = true;
                }
            } else if s.name == sum_name {
                sum += s.value;
                seen = true;
            } else if s.name == count_name {
                count += s.value;
                seen = true;
            }
        }
        seen.then(|| Self {
            buckets: by_le.into_iter().map(|(k, v)| (k.0, v)).collect(),
            sum,
            count,
        })
    }

    /// What was observed between `before` and `self` (two scrapes of the same server). A
    /// counter reset in between (server restarted: `self.count < before.count`) means
    /// everything in `self` is new.
    pub fn since(&self, before: &Histogram) -> Histogram {
        if self.count < before.count {
            return self.clone();
        }
        let old = |le: f64| {
            before
                .buckets
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, c)| (le, (c - old(le)).max(0.0)))
                .collect(),
            sum: (self.sum - before.sum).max(0.0),
            count: self.count - before.count,
        }
    }

    /// Per-bucket (non-cumulative) counts, for a report.
    pub fn summary(&self) -> HistogramSummary {
        let mut prev = 0.0;
        let buckets = self
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
            count: self.count.round() as u64,
            sum: self.sum,
            mean: (self.count > 0.0).then(|| self.sum / self.count),
        }
    }
}

/// Orders `le` bounds (never NaN once parsed from a histogram; NaN would sort last).
#[derive(Debug, Clone, Copy)]
struct LeKey(f64);
impl PartialEq for LeKey {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for LeKey {}
impl PartialOrd for LeKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for LeKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
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

/// Sum of the samples of `name` grouped by the value of `label` (e.g. a counter by reason).
pub fn sum_by_label(samples: &[Sample], name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in samples.iter().filter(|s| s.name == name) {
        let k = s.label(label).unwrap_or("").to_string();
        *out.entry(k).or_insert(0.0) += s.value;
    }
    out
}

#[cfg(test)]
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
    fn parses_labels_escapes_timestamps_and_special_values() {
        let s = parse(BEFORE).unwrap();
        assert_eq!(s.len(), 12);
        assert_eq!(s[0].name, "silencio_batch_size_bucket");
        assert_eq!(s[0].label("le"), Some("1"));
        assert_eq!(s[6].label("le"), Some("+Inf"));
        let http = &s[10];
        assert_eq!(http.label("status"), Some("200"));
        assert_eq!(http.value, 20.0);
        let info = &s[11];
        assert_eq!(info.label("path"), Some(r"C:\models\v1"));
        assert_eq!(info.label("note"), Some("say \"hi\"\nbye"));
        let odd = parse("a 1\nb +Inf\nc NaN\nd -Inf\ne 1.5e3").unwrap();
        assert_eq!(odd[1].value, f64::INFINITY);
        assert!(odd[2].value.is_nan());
        assert_eq!(odd[4].value, 1500.0);
    }

    #[test]
    fn malformed_lines_are_errors_with_their_line_number() {
        for bad in [
            "x{le=\"1\" 3",
            "x{le=1} 3",
            "x abc",
            "{le=\"1\"} 3",
            "x 1 2 3",
            "x{a=\"\\q\"} 1",
        ] {
            let e = parse(&format!("# ok\n{bad}")).unwrap_err();
            assert!(e.starts_with("line 2:"), "{bad}: {e}");
        }
    }

    #[test]
    fn histogram_diff_gives_the_batches_of_one_level() {
        let before =
            Histogram::from_samples(&parse(BEFORE).unwrap(), "silencio_batch_size").unwrap();
        let after = Histogram::from_samples(&parse(AFTER).unwrap(), "silencio_batch_size").unwrap();
        assert_eq!(before.buckets.len(), 7);
        assert_eq!(before.buckets[6].0, f64::INFINITY);
        let d = after.since(&before).summary();
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
        assert!(Histogram::from_samples(&parse("x 1").unwrap(), "silencio_batch_size").is_none());
        let r = sum_by_label(&parse(AFTER).unwrap(), "silencio_rejected_total", "reason");
        assert_eq!(r["queue_full"], 10.0);
        assert_eq!(r["too_large"], 1.0);
    }
}
