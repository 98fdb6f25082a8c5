//! The flat YAML of MLflow's `meta.yaml` files: a mapping of scalar values, written by us with
//! every string double-quoted (JSON string syntax is valid YAML, so no quoting rule can be
//! missed), read back whether PyYAML or we wrote it (plain, single- or double-quoted scalars,
//! long values folded onto indented lines).

use std::collections::BTreeMap;

/// One scalar of a meta.yaml file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Null,
    /// `[]`: MLflow keeps a legacy empty `tags` list in run meta.yaml.
    EmptyList,
}

/// Writes `map` as YAML, keys in order (MLflow writes sorted keys; a BTreeMap keeps that).
pub(crate) fn write(map: &BTreeMap<&str, Value>) -> String {
    let mut out = String::new();
    for (k, v) in map {
        out.push_str(k);
        out.push_str(": ");
        match v {
            Value::Str(s) => out.push_str(&quote(s)),
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Null => out.push_str("null"),
            Value::EmptyList => out.push_str("[]"),
        }
        out.push('\n');
    }
    out
}

fn quote(s: &str) -> String {
    // serde_json only fails on non-string map keys; a &str always serialises.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// Reads a flat mapping. Nested values (lists, maps) come back as their raw text.
pub(crate) fn read(text: &str) -> Result<BTreeMap<String, Value>, String> {
    let mut raw: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') || line == "---" {
            continue;
        }
        if line.starts_with([' ', '\t']) || line.starts_with("- ") {
            match raw.last_mut() {
                Some((_, v)) => {
                    v.push('\n');
                    v.push_str(line.trim());
                }
                None => return Err(format!("line {}: continuation without a key", n + 1)),
            }
            continue;
        }
        let (k, v) = split_key(line).ok_or_else(|| format!("line {}: no 'key: value'", n + 1))?;
        raw.push((k, v.trim().to_string()));
    }
    let mut map = BTreeMap::new();
    for (k, v) in raw {
        let value = scalar(&v).map_err(|e| format!("key {k}: {e}"))?;
        map.insert(k, value);
    }
    Ok(map)
}

fn split_key(line: &str) -> Option<(String, &str)> {
    if let Some(rest) = line.strip_prefix('\'') {
        let end = rest
            .find("': ")
            .or_else(|| rest.strip_suffix("':").map(|r| r.len()))?;
        let key = rest[..end].replace("''", "'");
        return Some((key, rest.get(end + 2..).unwrap_or("")));
    }
    if line.starts_with('"') {
        let end = closing_double_quote(line)?;
        let key: String = serde_json::from_str(&line[..=end]).ok()?;
        let rest = line.get(end + 1..)?.strip_prefix(':')?;
        return Some((key, rest));
    }
    let idx = line
        .find(": ")
        .or_else(|| line.strip_suffix(':').map(|r| r.len()))?;
    Some((line[..idx].to_string(), line.get(idx + 1..).unwrap_or("")))
}

fn closing_double_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

fn scalar(v: &str) -> Result<Value, String> {
    if let Some(body) = v.strip_prefix('\'') {
        let body = body
            .strip_suffix('\'')
            .ok_or("unterminated single-quoted string")?;
        return Ok(Value::Str(body.replace('\n', " ").replace("''", "'")));
    }
    if v.starts_with('"') {
        // Folding: an escaped line break joins without a space, a plain one becomes a space.
        let joined = v.replace("\\\n", "").replace('\n', " ");
        return unescape_double(&joined).map(Value::Str);
    }
    match v {
        "" | "~" | "null" | "Null" | "NULL" => return Ok(Value::Null),
        "[]" => return Ok(Value::EmptyList),
        _ => {}
    }
    if let Ok(i) = v.parse::<i64>() {
        return Ok(Value::Int(i));
    }
    Ok(Value::Str(v.replace('\n', " ")))
}

fn unescape_double(v: &str) -> Result<String, String> {
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or("unterminated double-quoted string")?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let e = chars.next().ok_or("dangling escape")?;
        let hex = |n: usize, chars: &mut std::str::Chars| -> Result<char, String> {
            let h: String = chars.take(n).collect();
            u32::from_str_radix(&h, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or_else(|| format!("bad escape \\{e}{h}"))
        };
        match e {
            '0' => out.push('\0'),
            'a' => out.push('\u{7}'),
            'b' => out.push('\u{8}'),
            't' | '\t' => out.push('\t'),
            'n' => out.push('\n'),
            'v' => out.push('\u{b}'),
            'f' => out.push('\u{c}'),
            'r' => out.push('\r'),
            'e' => out.push('\u{1b}'),
            ' ' => out.push(' '),
            '"' => out.push('"'),
            '/' => out.push('/'),
            '\\' => out.push('\\'),
            'N' => out.push('\u{85}'),
            '_' => out.push('\u{a0}'),
            'L' => out.push('\u{2028}'),
            'P' => out.push('\u{2029}'),
            'x' => out.push(hex(2, &mut chars)?),
            'u' => {
                let c = hex_u16(&mut chars)?;
                // JSON writes non-BMP characters as surrogate pairs.
                if (0xD800..0xDC00).contains(&c) {
                    let rest: String = chars.by_ref().take(2).collect();
                    if rest != "\\u" {
                        return Err("lone surrogate".into());
                    }
                    let lo = hex_u16(&mut chars)?;
                    let cp = 0x10000 + ((c - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3FF);
                    out.push(char::from_u32(cp).ok_or("bad surrogate pair")?);
                } else {
                    out.push(char::from_u32(c).ok_or("bad \\u escape")?);
                }
            }
            'U' => out.push(hex(8, &mut chars)?),
            other => return Err(format!("unknown escape \\{other}")),
        }
    }
    Ok(out)
}

fn hex_u16(chars: &mut std::str::Chars) -> Result<u32, String> {
    let h: String = chars.take(4).collect();
    u32::from_str_radix(&h, 16).map_err(|_| format!("bad escape \\u{h}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut m = BTreeMap::new();
        m.insert("name", Value::Str("exp: 'a' \"b\" é 🐦 \n".into()));
        m.insert("experiment_id", Value::Str("0".into()));
        m.insert("creation_time", Value::Int(1_700_000_000_000));
        m.insert("end_time", Value::Null);
        m.insert("tags", Value::EmptyList);
        let text = write(&m);
        let back = read(&text).unwrap();
        assert_eq!(back["name"], m["name"]);
        assert_eq!(back["experiment_id"], Value::Str("0".into()));
        assert_eq!(back["creation_time"], Value::Int(1_700_000_000_000));
        assert_eq!(back["end_time"], Value::Null);
        assert_eq!(back["tags"], Value::EmptyList);
    }

    #[test]
    fn reads_pyyaml_output() {
        // As PyYAML's safe_dump writes a meta.yaml (MLflow 3.17.2), long values folded.
        let text = concat!(
            "artifact_location: file:///tmp/mlf/mlruns/700045504274420143\n",
            "creation_time: 1795522572588\n",
            "effective_trace_archival_retention: null\n",
            "experiment_id: '700045504274420143'\n",
            "lifecycle_stage: active\n",
            "name: 'it''s a: very long experiment name that PyYAML folds over more than one line\n",
            "  because it is wider than eighty columns'\n",
            "trace_location: null\n",
        );
        let m = read(text).unwrap();
        assert_eq!(
            m["artifact_location"],
            Value::Str("file:///tmp/mlf/mlruns/700045504274420143".into())
        );
        assert_eq!(m["experiment_id"], Value::Str("700045504274420143".into()));
        assert_eq!(
            m["name"],
            Value::Str(
                "it's a: very long experiment name that PyYAML folds over more than one line \
                 because it is wider than eighty columns"
                    .into()
            )
        );
        assert_eq!(m["trace_location"], Value::Null);
    }
}
