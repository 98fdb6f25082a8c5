//! Name rules, as MLflow 3.17 enforces them (`mlflow/utils/validation.py`), so that a bad key
//! fails here with a clear message instead of breaking the file store or a batch on the server.

use crate::{Error, Result};

/// Longest metric, param or tag key MLflow accepts.
pub const MAX_KEY_LEN: usize = 250;
/// Longest param value.
pub const MAX_PARAM_VALUE_LEN: usize = 6000;
/// Longest run tag value.
pub const MAX_TAG_VALUE_LEN: usize = 8000;
/// Longest experiment name.
pub const MAX_EXPERIMENT_NAME_LEN: usize = 500;
/// Longest registered-model alias.
pub const MAX_ALIAS_LEN: usize = 255;

/// Checks a metric, param or tag key: alphanumerics, `_ - . : / space`, and it must be its own
/// normalised path (no leading `/`, no `//`, no `.`/`..` segment, no trailing `/`), because the
/// file store uses keys as file paths.
pub fn validate_key(what: &'static str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::invalid(what, key, "a key name must be provided"));
    }
    if key.chars().count() > MAX_KEY_LEN {
        return Err(Error::invalid(
            what,
            key,
            format!("longer than {MAX_KEY_LEN} characters"),
        ));
    }
    if let Some(c) = key
        .chars()
        .find(|c| !(c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | ':' | '/')))
    {
        return Err(Error::invalid(
            what,
            key,
            format!(
                "character {c:?} not allowed: names may only contain alphanumerics, \
                 underscores, dashes, periods, spaces, colons and slashes"
            ),
        ));
    }
    // posixpath.normpath(key) must equal key and must not start with ".." or "/".
    if key.starts_with('/')
        || key.starts_with("..")
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(Error::invalid(
            what,
            key,
            "names are used as file paths and must not resolve to other names \
             (no leading or trailing '/', no '//', no '.' or '..' segments)",
        ));
    }
    Ok(())
}

/// Checks a run id (`^[a-zA-Z0-9][\w\-]{0,255}$`).
pub fn validate_run_id(run_id: &str) -> Result<()> {
    let mut chars = run_id.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && run_id.len() <= 256
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "run id",
            run_id,
            "must match [a-zA-Z0-9][\\w-]{0,255}",
        ))
    }
}

/// Checks an experiment name (non-empty, at most 500 characters).
pub fn validate_experiment_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid("experiment name", name, "must not be empty"));
    }
    if name.chars().count() > MAX_EXPERIMENT_NAME_LEN {
        return Err(Error::invalid(
            "experiment name",
            name,
            format!("longer than {MAX_EXPERIMENT_NAME_LEN} characters"),
        ));
    }
    Ok(())
}

/// Checks a registered-model alias: alphanumerics, `_`, `-`; not `latest` and not `v<digits>`
/// (MLflow reserves those for version references).
pub fn validate_alias(alias: &str) -> Result<()> {
    if alias.is_empty() || alias.len() > MAX_ALIAS_LEN {
        return Err(Error::invalid(
            "alias",
            alias,
            format!("must be 1 to {MAX_ALIAS_LEN} characters"),
        ));
    }
    if !alias
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(Error::invalid(
            "alias",
            alias,
            "may only contain alphanumerics, underscores and dashes",
        ));
    }
    let lower = alias.to_ascii_lowercase();
    if lower == "latest"
        || (lower.len() > 1
            && lower.starts_with('v')
            && lower[1..].bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(Error::invalid(
            "alias",
            alias,
            "'latest' and 'v<number>' are reserved by MLflow",
        ));
    }
    Ok(())
}

/// Checks a registered-model name for the local registry, where it is stored in a file:
/// non-empty, no `/`, no control characters, not `.` or `..`.
pub fn validate_model_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::invalid(
            "model name",
            name,
            "must not be empty, '.' or '..'",
        ));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err(Error::invalid(
            "model name",
            name,
            "must not contain slashes or control characters",
        ));
    }
    Ok(())
}

pub(crate) fn check_len(what: &'static str, key: &str, value: &str, limit: usize) -> Result<()> {
    let len = value.chars().count();
    if len > limit {
        return Err(Error::TooLong {
            what,
            key: key.to_string(),
            len,
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_mlflow() {
        for ok in [
            "loss",
            "loss/train",
            "val auc",
            "a.b-c_d:e",
            "épocas",
            "a..b",
        ] {
            validate_key("metric key", ok).unwrap();
        }
        for bad in [
            "", "/a", "a/", "a//b", "..", "../a", "a/../b", "./a", ".", "a!", "a\nb", "a\\b", "..a",
        ] {
            assert!(validate_key("metric key", bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_key("k", &"x".repeat(251)).is_err());
    }

    #[test]
    fn aliases_follow_mlflow() {
        for ok in ["production", "staging", "champion-2", "v1x"] {
            validate_alias(ok).unwrap();
        }
        for bad in ["", "latest", "v1", "V12", "a b", "a/b"] {
            assert!(validate_alias(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn run_ids() {
        validate_run_id("0123abcdef").unwrap();
        assert!(validate_run_id("../x").is_err());
        assert!(validate_run_id("").is_err());
    }
}
