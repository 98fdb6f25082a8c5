//! `train.csv`: one row per training recording. Malformed rows are reported and skipped, never
//! fatal for the whole file.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One row of `train.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// 1-based line number in the CSV (header is line 1), for reports.
    pub line: u64,
    /// The species heard foremost.
    pub primary_label: String,
    /// Other species audible (parsed from the Python-list string, e.g. `['grekis']`).
    pub secondary_labels: Vec<String>,
    /// Call types (also a Python-list string in the CSV).
    pub call_types: Vec<String>,
    /// `{primary_label}/{id}.ogg`, relative to `train_audio/`.
    pub filename: String,
    /// XC, iNat or CSA.
    pub collection: String,
    /// Quality rating 0–5 (0 = unrated), when parsable.
    pub rating: Option<f64>,
    /// Latitude, when given.
    pub latitude: Option<f64>,
    /// Longitude, when given.
    pub longitude: Option<f64>,
    /// Author of the recording.
    pub author: String,
    /// Licence of the recording.
    pub license: String,
    /// Where the recording came from; rows cut from one source recording share it up to the
    /// `#` fragment (`#t=5,10`). Empty when the column is absent.
    #[serde(default)]
    pub url: String,
}

/// A row that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowProblem {
    /// 1-based CSV line.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
}

pub(crate) fn csv_err(path: &Path, e: csv::Error) -> Error {
    Error::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

pub(crate) fn open_file(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn csv_reader<R: std::io::Read>(r: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new().flexible(true).from_reader(r)
}

/// Column positions by header name.
pub(crate) struct Columns(HashMap<String, usize>);

impl Columns {
    pub(crate) fn new(path: &Path, headers: &csv::StringRecord, required: &[&str]) -> Result<Self> {
        let map: HashMap<String, usize> = headers
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().trim_start_matches('\u{feff}').to_string(), i))
            .collect();
        let missing: Vec<&str> = required
            .iter()
            .copied()
            .filter(|c| !map.contains_key(*c))
            .collect();
        if !missing.is_empty() {
            return Err(Error::Csv {
                path: path.to_path_buf(),
                message: format!("missing column(s): {}", missing.join(", ")),
            });
        }
        Ok(Self(map))
    }

    /// The trimmed field, or "" when the column or the field is absent.
    pub(crate) fn get<'r>(&self, rec: &'r csv::StringRecord, col: &str) -> &'r str {
        self.0
            .get(col)
            .and_then(|&i| rec.get(i))
            .unwrap_or("")
            .trim()
    }
}

/// Parses a Python list-of-strings literal as pandas writes it: `[]`, `['a', 'b']`,
/// `["it's"]`, with backslash escapes. An empty field is an empty list.
pub fn parse_py_list(s: &str) -> std::result::Result<Vec<String>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let inner = s
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| format!("not a list: {s:?}"))?;
    let mut out = Vec::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(quote) = chars.next() else { break };
        if quote != '\'' && quote != '"' {
            return Err(format!("expected a quoted string in {s:?}"));
        }
        let mut item = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some(c) => item.push(c),
                    None => return Err(format!("dangling escape in {s:?}")),
                },
                Some(c) if c == quote => break,
                Some(c) => item.push(c),
                None => return Err(format!("unterminated string in {s:?}")),
            }
        }
        out.push(item);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            Some(',') => continue,
            None => break,
            Some(c) => return Err(format!("unexpected {c:?} in {s:?}")),
        }
    }
    Ok(out)
}

/// Reads `train.csv`: the usable rows, and the rows that were not (with reasons).
pub fn read_train_csv(path: &Path) -> Result<(Vec<TrainRecord>, Vec<RowProblem>)> {
    read_train_csv_from(open_file(path)?, path)
}

/// [`read_train_csv`] from any reader (bytes fetched from an object store); `path` names the
/// source in errors.
pub fn read_train_csv_from<R: std::io::Read>(
    reader: R,
    path: &Path,
) -> Result<(Vec<TrainRecord>, Vec<RowProblem>)> {
    let mut rdr = csv_reader(reader);
    let headers = rdr.headers().map_err(|e| csv_err(path, e))?.clone();
    let cols = Columns::new(path, &headers, &["primary_label", "filename"])?;
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for rec in rdr.records() {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                problems.push(RowProblem {
                    line,
                    reason: format!("unreadable CSV row: {e}"),
                });
                continue;
            }
        };
        let line = rec.position().map_or(0, |p| p.line());
        let primary = cols.get(&rec, "primary_label");
        let filename = cols.get(&rec, "filename");
        if primary.is_empty() || filename.is_empty() {
            problems.push(RowProblem {
                line,
                reason: "empty primary_label or filename".into(),
            });
            continue;
        }
        let list = |c: &str| parse_py_list(cols.get(&rec, c));
        let (secondary, types) = match (list("secondary_labels"), list("type")) {
            (Ok(s), Ok(t)) => (s, t),
            (Err(e), _) | (_, Err(e)) => {
                problems.push(RowProblem { line, reason: e });
                continue;
            }
        };
        let num = |c: &str| {
            cols.get(&rec, c)
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
        };
        rows.push(TrainRecord {
            line,
            primary_label: primary.to_string(),
            secondary_labels: secondary.into_iter().filter(|l| !l.is_empty()).collect(),
            call_types: types,
            filename: filename.to_string(),
            collection: cols.get(&rec, "collection").to_string(),
            rating: num("rating"),
            latitude: num("latitude"),
            longitude: num("longitude"),
            author: cols.get(&rec, "author").to_string(),
            license: cols.get(&rec, "license").to_string(),
            url: cols.get(&rec, "url").to_string(),
        });
    }
    Ok((rows, problems))
}

/// `(primary_label, latitude, longitude)` of the rows that have both coordinates: what the
/// location filter learns each species' range from.
pub fn located_points(rows: &[TrainRecord]) -> Vec<(&str, f64, f64)> {
    rows.iter()
        .filter_map(|r| Some((r.primary_label.as_str(), r.latitude?, r.longitude?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_lists_as_pandas_writes_them() {
        assert_eq!(parse_py_list("[]").unwrap(), Vec::<String>::new());
        assert_eq!(parse_py_list("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_py_list("['grekis']").unwrap(), vec!["grekis"]);
        assert_eq!(
            parse_py_list("['grekis', 'bkmtou1']").unwrap(),
            vec!["grekis", "bkmtou1"]
        );
        assert_eq!(
            parse_py_list(r#"["it's", 'a\'b']"#).unwrap(),
            vec!["it's", "a'b"]
        );
        assert!(parse_py_list("grekis").is_err());
        assert!(parse_py_list("['unterminated]").is_err());
        assert!(parse_py_list("[1, 2]").is_err());
    }
}
