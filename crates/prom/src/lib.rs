//! A small parser for the Prometheus text exposition format (version 0.0.4), enough to read
//! the serving process's `/metrics`: `# TYPE`/`# HELP` lines, samples with quoted, escaped
//! labels, `+Inf`/`-Inf`/`NaN` values and optional timestamps; plus the reductions the
//! dashboard and the load generator need (sums over label sets, histogram differences and
//! quantiles, summary quantiles).

use std::collections::BTreeMap;

use serde::Serialize;

/// A line of exposition text that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("Prometheus text, line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

type Result<T, E = ParseError> = std::result::Result<T, E>;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Metric name as written (`…_bucket`, `…_sum`, `…_count` included).
    pub name: String,
    /// Label pairs, unescaped.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// `# TYPE` of each family (`counter`, `gauge`, `histogram`, `summary`, `untyped`).
    pub types: BTreeMap<String, String>,
    /// Every sample, in file order.
    pub samples: Vec<Sample>,
}

/// A cumulative histogram: `buckets` are `(upper bound, cumulative count)` sorted by bound,
/// the last one `+Inf`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// `(le, cumulative count)`, ascending `le`.
    pub buckets: Vec<(f64, f64)>,
    /// Sum of observed values.
    pub sum: f64,
    /// Number of observations.
    pub count: f64,
}

/// Parses the text format. Malformed lines are errors (with their line number): the input
/// comes from our own server, and silently dropping lines would hide a broken exporter.
pub fn parse(text: &str) -> Result<Exposition> {
    let mut out = Exposition::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let err = |message: &str| ParseError {
            line: i + 1,
            message: message.to_string(),
        };
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.split_whitespace();
            if parts.next() == Some("TYPE") {
                let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                    return Err(err("TYPE line needs a name and a type"));
                };
                out.types.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        out.samples.push(parse_sample(line).map_err(|m| err(&m))?);
    }
    Ok(out)
}

fn parse_sample(line: &str) -> std::result::Result<Sample, String> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .ok_or("a sample needs a value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("missing value")?;
    let value = parse_value(value).ok_or_else(|| format!("invalid value {value:?}"))?;
    // An optional timestamp (ms) may follow; the dashboard uses its own scrape time.
    if let Some(ts) = fields.next()
        && ts.parse::<i64>().is_err()
    {
        return Err(format!("invalid timestamp {ts:?}"));
    }
    if fields.next().is_some() {
        return Err("trailing text after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

/// Labels after the `{`, up to and including the closing `}`; returns them and the rest.
fn parse_labels(mut s: &str) -> std::result::Result<(BTreeMap<String, String>, &str), String> {
    let mut labels = BTreeMap::new();
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("invalid label name {key:?}"));
        }
        s = s[eq + 1..].trim_start();
        s = s.strip_prefix('"').ok_or("label value must be quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err("unterminated escape".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

impl Exposition {
    /// Samples named exactly `name`.
    pub fn series<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// Whether any sample of the family `name` exists (`name`, `name_bucket`, `name_sum`, …).
    pub fn has_family(&self, name: &str) -> bool {
        self.samples.iter().any(|s| {
            s.name == name
                || s.name
                    .strip_prefix(name)
                    .is_some_and(|r| matches!(r, "_bucket" | "_sum" | "_count" | "_total"))
        })
    }

    /// Sum of `name` over every label set; `None` when absent.
    pub fn sum(&self, name: &str) -> Option<f64> {
        let mut it = self.series(name).peekable();
        it.peek()?;
        Some(it.map(|s| s.value).sum())
    }

    /// Sums of `name` grouped by the value of `label` (samples without it are grouped under
    /// an empty string), sorted by label value.
    pub fn sum_by(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for s in self.series(name) {
            let key = s.labels.get(label).cloned().unwrap_or_default();
            *out.entry(key).or_insert(0.0) += s.value;
        }
        out
    }

    /// The histogram `name` (`name_bucket{le}`, `name_sum`, `name_count`) summed over every
    /// label set that `keep` accepts (labels other than `le`); `None` when there is no bucket.
    pub fn histogram(
        &self,
        name: &str,
        keep: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Option<Histogram> {
        let bucket = format!("{name}_bucket");
        let mut by_le: Vec<(f64, f64)> = Vec::new();
        for s in self.series(&bucket).filter(|s| keep(&s.labels)) {
            let Some(le) = s.labels.get("le").and_then(|v| parse_value(v)) else {
                continue;
            };
            match by_le.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += s.value,
                None => by_le.push((le, s.value)),
            }
        }
        if by_le.is_empty() {
            return None;
        }
        by_le.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total = |suffix: &str| -> f64 {
            self.series(&format!("{name}{suffix}"))
                .filter(|s| keep(&s.labels))
                .map(|s| s.value)
                .sum()
        };
        Some(Histogram {
            count: total("_count"),
            sum: total("_sum"),
            buckets: by_le,
        })
    }

    /// For a summary family (`name{quantile="q"}`): the count-weighted mean of quantile `q`
    /// over the label sets `keep` accepts. Quantiles of different series cannot be merged
    /// exactly; weighting by each series' count is the usual approximation.
    pub fn summary_quantile(
        &self,
        name: &str,
        q: f64,
        keep: impl Fn(&BTreeMap<String, String>) -> bool,
    ) -> Option<f64> {
        let count_name = format!("{name}_count");
        let mut num = 0.0;
        let mut den = 0.0;
        for s in self.series(name).filter(|s| keep(&s.labels)) {
            let Some(sq) = s.labels.get("quantile").and_then(|v| parse_value(v)) else {
                continue;
            };
            if (sq - q).abs() > 1e-9 || !s.value.is_finite() {
                continue;
            }
            // The same series' count: every label but `quantile` equal.
            let mut key = s.labels.clone();
            key.remove("quantile");
            let w = self
                .series(&count_name)
                .find(|c| c.labels == key)
                .map(|c| c.value)
                .unwrap_or(1.0);
            num += w * s.value;
            den += w;
        }
        (den > 0.0).then(|| num / den)
    }
}

impl Histogram {
    /// Mean of the observations (`sum / count`), `None` without observations.
    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// Quantile `q` in [0, 1] by linear interpolation inside the bucket that holds it, as
    /// PromQL's `histogram_quantile` does (the first bucket's lower bound is 0; a quantile in
    /// the `+Inf` bucket is the largest finite bound). `None` without observations.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let rank = q * total;
        let mut prev_le = 0.0;
        let mut prev_count = 0.0;
        for &(le, count) in &self.buckets {
            if count >= rank {
                if le.is_infinite() {
                    return Some(prev_le);
                }
                let in_bucket = count - prev_count;
                if in_bucket <= 0.0 {
                    return Some(le);
                }
                return Some(prev_le + (le - prev_le) * (rank - prev_count) / in_bucket);
            }
            prev_le = le;
            prev_count = count;
        }
        Some(prev_le)
    }

    /// Observations per bucket (not cumulative): `(le, count)`.
    pub fn per_bucket(&self) -> Vec<(f64, f64)> {
        let mut prev = 0.0;
        self.buckets
            .iter()
            .map(|&(le, c)| {
                let d = (c - prev).max(0.0);
                prev = c;
                (le, d)
            })
            .collect()
    }

    /// `self − earlier`: the observations between two scrapes of the same counter (a counter
    /// that went down means the server restarted, so `self` alone is the difference).
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        if self.count < earlier.count || self.buckets.len() != earlier.buckets.len() {
            return self.clone();
        }
        Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(&(le, a), &(_, b))| (le, (a - b).max(0.0)))
                .collect(),
            sum: self.sum - earlier.sum,
            count: self.count - earlier.count,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const TEXT: &str = r#"# HELP silencio_http_requests_total Requests.
# TYPE silencio_http_requests_total counter
silencio_http_requests_total{route="/v1/identify",status="200"} 40
silencio_http_requests_total{route="/v1/identify",status="429"} 2 1700000000000
silencio_http_requests_total{route="/healthz",status="200"} 8
# TYPE silencio_queue_depth gauge
silencio_queue_depth 3
# TYPE silencio_http_request_duration_seconds histogram
silencio_http_request_duration_seconds_bucket{route="/v1/identify",status="200",le="0.1"} 10
silencio_http_request_duration_seconds_bucket{route="/v1/identify",status="200",le="0.2"} 30
silencio_http_request_duration_seconds_bucket{route="/v1/identify",status="200",le="+Inf"} 40
silencio_http_request_duration_seconds_sum{route="/v1/identify",status="200"} 6
silencio_http_request_duration_seconds_count{route="/v1/identify",status="200"} 40
silencio_http_request_duration_seconds_bucket{route="/healthz",status="200",le="0.1"} 8
silencio_http_request_duration_seconds_bucket{route="/healthz",status="200",le="0.2"} 8
silencio_http_request_duration_seconds_bucket{route="/healthz",status="200",le="+Inf"} 8
silencio_http_request_duration_seconds_sum{route="/healthz",status="200"} 0.08
silencio_http_request_duration_seconds_count{route="/healthz",status="200"} 8
# TYPE silencio_predictions_total counter
silencio_predictions_total{species="a \"quoted\" \\ name\nx"} 5
silencio_predictions_total{species="grekis",} 7
"#;

    #[test]
    fn parses_samples_labels_escapes_and_types() {
        let e = parse(TEXT).unwrap();
        assert_eq!(e.types["silencio_queue_depth"], "gauge");
        assert_eq!(
            e.types["silencio_http_request_duration_seconds"],
            "histogram"
        );
        assert_eq!(e.sum("silencio_http_requests_total"), Some(50.0));
        assert_eq!(e.sum("silencio_queue_depth"), Some(3.0));
        assert_eq!(e.sum("absent"), None);
        let by = e.sum_by("silencio_predictions_total", "species");
        assert_eq!(by["a \"quoted\" \\ name\nx"], 5.0);
        assert_eq!(by["grekis"], 7.0);
        let by_status = e.sum_by("silencio_http_requests_total", "status");
        assert_eq!(by_status["200"], 48.0);
        assert_eq!(by_status["429"], 2.0);
    }

    #[test]
    fn histogram_merges_label_sets_and_interpolates_quantiles() {
        let e = parse(TEXT).unwrap();
        let all = e
            .histogram("silencio_http_request_duration_seconds", |_| true)
            .unwrap();
        assert_eq!(
            all.buckets,
            vec![(0.1, 18.0), (0.2, 38.0), (f64::INFINITY, 48.0)]
        );
        assert_eq!(all.count, 48.0);
        // Median: rank 24 lies in (0.1, 0.2] holding 20 observations, 6 above its start.
        assert!((all.quantile(0.5).unwrap() - (0.1 + 0.1 * 6.0 / 20.0)).abs() < 1e-12);
        // p99 falls in the +Inf bucket: the largest finite bound.
        assert_eq!(all.quantile(0.99), Some(0.2));
        let identify = e
            .histogram("silencio_http_request_duration_seconds", |l| {
                l.get("route").map(String::as_str) == Some("/v1/identify")
            })
            .unwrap();
        assert_eq!(identify.mean(), Some(6.0 / 40.0));
        // First bucket interpolates from 0.
        assert!((identify.quantile(0.125).unwrap() - 0.05).abs() < 1e-12);
        assert_eq!(
            identify.per_bucket(),
            vec![(0.1, 10.0), (0.2, 20.0), (f64::INFINITY, 10.0)]
        );
    }

    #[test]
    fn histogram_difference_between_scrapes() {
        let a = Histogram {
            buckets: vec![(1.0, 2.0), (f64::INFINITY, 3.0)],
            sum: 2.0,
            count: 3.0,
        };
        let b = Histogram {
            buckets: vec![(1.0, 5.0), (f64::INFINITY, 9.0)],
            sum: 10.0,
            count: 9.0,
        };
        let d = b.since(&a);
        assert_eq!(d.buckets, vec![(1.0, 3.0), (f64::INFINITY, 6.0)]);
        assert_eq!(d.count, 6.0);
        // A restarted server (counts went down): the new scrape is the difference.
        assert_eq!(a.since(&b), a);
    }

    #[test]
    fn summary_quantiles_are_count_weighted() {
        let text = "# TYPE lat summary\n\
            lat{route=\"a\",quantile=\"0.5\"} 1\n\
            lat{route=\"a\",quantile=\"0.95\"} 2\n\
            lat_sum{route=\"a\"} 10\n\
            lat_count{route=\"a\"} 3\n\
            lat{route=\"b\",quantile=\"0.95\"} 6\n\
            lat_count{route=\"b\"} 1\n";
        let e = parse(text).unwrap();
        assert_eq!(e.summary_quantile("lat", 0.95, |_| true), Some(3.0));
        assert_eq!(e.summary_quantile("lat", 0.5, |_| true), Some(1.0));
        assert_eq!(e.summary_quantile("lat", 0.99, |_| true), None);
        assert!(e.histogram("lat", |_| true).is_none());
    }

    #[test]
    fn special_values_and_errors() {
        let e = parse("a +Inf\nb -Inf\nc NaN\nd 1e-3\n").unwrap();
        assert_eq!(e.samples[0].value, f64::INFINITY);
        assert_eq!(e.samples[1].value, f64::NEG_INFINITY);
        assert!(e.samples[2].value.is_nan());
        assert_eq!(e.samples[3].value, 1e-3);
        for (bad, line) in [
            ("ok 1\nno_value\n", 2),
            ("x{a=\"1\" 2\n", 1),
            ("x{a=1} 2\n", 1),
            ("x{a=\"1} 2\n", 1),
            ("x 1 notatime\n", 1),
            ("9x 1\n", 1),
            ("x abc\n", 1),
            ("# TYPE onlyname\n", 1),
        ] {
            match parse(bad) {
                Err(ParseError { line: l, .. }) => assert_eq!(l, line, "{bad:?}"),
                other => panic!("{bad:?} parsed: {other:?}"),
            }
        }
    }

    #[test]
    fn empty_histogram_has_no_quantile() {
        let h = Histogram {
            buckets: vec![(1.0, 0.0), (f64::INFINITY, 0.0)],
            sum: 0.0,
            count: 0.0,
        };
        assert_eq!(h.quantile(0.5), None);
        assert_eq!(h.mean(), None);
    }
}
