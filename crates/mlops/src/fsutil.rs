//! File helpers: atomic writes (temp file + rename), appends, directory copies, the clock.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Milliseconds since the Unix epoch (MLflow's timestamps).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))
}

/// Writes `bytes` to `path` atomically ([`silencio_common::fs::write_atomic_in`]), creating
/// its directory: the temp file goes in `tmp_dir` (same file system, and a directory MLflow
/// does not list, so readers never see a half-written param or tag).
pub(crate) fn write_atomic(path: &Path, tmp_dir: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    silencio_common::fs::write_atomic_in(path, tmp_dir, bytes).map_err(|e| Error::io(path, e))
}

/// Appends `text` with one `write` call on an `O_APPEND` file, so concurrent appenders never
/// interleave within it.
pub(crate) fn append(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))
}

/// Copies a file atomically: to a temp file in `tmp_dir`, then renamed to `dest`.
pub(crate) fn copy_file_atomic(src: &Path, dest: &Path, tmp_dir: &Path) -> Result<()> {
    if let Some(parent) = dest.parent() {
        create_dir_all(parent)?;
    }
    let tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(tmp_dir)
        .map_err(|e| Error::io(tmp_dir, e))?;
    std::fs::copy(src, tmp.path()).map_err(|e| Error::io(src, e))?;
    tmp.persist(dest).map_err(|e| Error::io(dest, e.error))?;
    Ok(())
}

/// Copies the tree `src` into `dest` (created), following symlinks
/// ([`silencio_common::fs::copy_tree`]).
pub(crate) fn copy_tree(src: &Path, dest: &Path) -> Result<()> {
    silencio_common::fs::copy_tree(src, dest).map_err(|e| Error::io(src, e))
}

/// Every regular file under `dir`, as (absolute path, path relative to `dir` with `/`).
pub(crate) fn walk_files(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    fn go(base: &Path, dir: &Path, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(dir, e))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            if meta.is_dir() {
                go(base, &path, out)?;
            } else {
                let rel = path
                    .strip_prefix(base)
                    .map_err(|_| Error::Malformed {
                        path: path.clone(),
                        message: "outside the walked directory".into(),
                    })?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                out.push((path, rel));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    go(dir, dir, &mut out)?;
    Ok(out)
}

/// Checks an artifact sub-directory: relative, `/`-separated, no `.`/`..`/empty segments.
pub(crate) fn validate_artifact_path(p: &str) -> Result<()> {
    if p.is_empty() {
        return Ok(());
    }
    if p.starts_with('/') || p.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
        return Err(Error::invalid(
            "artifact path",
            p,
            "must be relative, '/'-separated, without '.', '..' or empty segments",
        ));
    }
    if p.chars().any(|c| c.is_control() || c == '\\') {
        return Err(Error::invalid(
            "artifact path",
            p,
            "must not contain control characters or backslashes",
        ));
    }
    Ok(())
}

/// A `file://` URI for an absolute path (percent-encoding what a URI cannot hold raw).
pub(crate) fn path_to_file_uri(path: &Path) -> String {
    format!("file://{}", encode_path(&path.to_string_lossy()))
}

/// The path of a `file:` URI (`file:///abs`, `file:/abs`, `file:rel`, `file://localhost/abs`).
pub(crate) fn file_uri_to_path(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file:")?;
    let rest = if let Some(r) = rest.strip_prefix("//") {
        // An authority: only empty or localhost is a local path.
        let (auth, path) = r.find('/').map(|i| r.split_at(i)).unwrap_or((r, ""));
        if !(auth.is_empty() || auth == "localhost") {
            return None;
        }
        path
    } else {
        rest
    };
    Some(PathBuf::from(decode_percent(rest)))
}

/// Percent-encodes a `/`-separated path, keeping `/` and RFC 3986 unreserved characters.
pub(crate) fn encode_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn decode_percent(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_uris() {
        assert_eq!(
            file_uri_to_path("file:///tmp/a%20b").unwrap(),
            PathBuf::from("/tmp/a b")
        );
        assert_eq!(
            file_uri_to_path("file:./mlruns").unwrap(),
            PathBuf::from("./mlruns")
        );
        assert_eq!(file_uri_to_path("file:/x").unwrap(), PathBuf::from("/x"));
        assert!(file_uri_to_path("file://host/x").is_none());
        assert_eq!(path_to_file_uri(Path::new("/tmp/a b")), "file:///tmp/a%20b");
        assert_eq!(decode_percent("%4"), "%4");
    }
}
