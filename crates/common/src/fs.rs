//! Atomic file replacement: a reader sees the old file or the new one, never half of one, and
//! after a crash the new file is either wholly there or not at all. Also the pieces of the
//! stage-then-rename pattern for whole directories (fsynced new files, directory listings).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Replaces `path` with `bytes` atomically, the temp file in `path`'s own directory.
///
/// See [`write_atomic_in`]; the parent directory must exist.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_in(path, parent_dir(path), bytes)
}

/// Replaces `path` with `bytes` atomically through a temp file in `tmp_dir`, which must be on
/// the same file system as `path` (a rename cannot cross file systems).
///
/// Steps: a new temp file, write, fsync the file, rename it over `path`, fsync `path`'s
/// directory (so the rename itself survives a power cut; best effort where a directory cannot
/// be opened). On failure the temp file is removed and `path` is untouched.
///
/// The temp file is named `.{name}.XXXXXX.tmp`: hidden and ending in `.tmp`, so the watched
/// folder ignores it and sweeps it up after a crash. It is created with mode 0666 minus the
/// umask, like `File::create`, so the file that replaces `path` has the usual permissions
/// rather than `tempfile`'s private 0600.
pub fn write_atomic_in(path: &Path, tmp_dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map_or_else(|| "out".into(), |n| n.to_string_lossy().into_owned());
    let prefix = format!(".{name}.");
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    // The temp file deletes itself when dropped, i.e. on every error path below.
    let mut tmp = builder.tempfile_in(tmp_dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The data is durable already; a directory that cannot be opened (not every platform
    // allows it) only leaves the rename's durability to the OS.
    let _ = sync_dir(parent_dir(path));
    Ok(())
}

/// Makes a directory's entries (renames, new files) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Creates `path`, which must not exist yet, with `bytes` and fsyncs it: the files of a staging
/// directory that is renamed into place whole afterwards.
pub fn write_new_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create_new(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// The entries of `dir` as (name, path). Names that are not UTF-8 are skipped: no silencio
/// writer makes them, so they are someone else's.
pub fn list_dir_utf8(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if let Ok(name) = e.file_name().into_string() {
            out.push((name, e.path()));
        }
    }
    Ok(out)
}

/// Copies the tree `src` into `dest` (created). Symlinks are followed: a bundle that links its
/// weights still arrives whole. Not atomic: copy into a staging directory and rename it.
pub fn copy_tree(src: &Path, dest: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dest)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let from = entry.path();
        let to = dest.join(entry.file_name());
        if std::fs::metadata(&from)?.is_dir() {
            copy_tree(&from, &to)?;
        } else {
            std::fs::copy(&from, &to)?;
        }
    }
    Ok(())
}

/// `path`'s directory, `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The names in `dir`, sorted, comma-separated.
    fn listing(dir: &Path) -> String {
        let set: std::collections::BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        set.into_iter().collect::<Vec<_>>().join(",")
    }

    #[test]
    fn replaces_or_fails_leaving_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let (file, busy) = (dir.path().join("a.csv"), dir.path().join("t"));
        for body in [&b"one"[..], b"two!"] {
            write_atomic(&file, body).unwrap();
            assert_eq!(std::fs::read(&file).unwrap(), body);
        }
        // A file cannot be renamed over a non-empty directory: the write fails, the directory
        // stays as it was.
        std::fs::create_dir_all(busy.join("keep")).unwrap();
        assert!(write_atomic(&busy, b"y").is_err());
        assert_eq!(listing(dir.path()), "a.csv,t");
        assert_eq!(listing(&busy), "keep");
    }

    #[test]
    fn the_temp_file_may_live_elsewhere_on_the_same_file_system() {
        let root = tempfile::tempdir().unwrap();
        let (tmp, params) = (root.path().join("tmp"), root.path().join("params"));
        for d in [&tmp, &params] {
            std::fs::create_dir(d).unwrap();
        }
        write_atomic_in(&params.join("lr"), &tmp, b"0.01").unwrap();
        assert_eq!(std::fs::read_to_string(params.join("lr")).unwrap(), "0.01");
        assert_eq!(listing(&tmp), "");
    }

    #[test]
    fn a_new_synced_file_is_never_written_over_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("meta.json");
        write_new_synced(&f, b"{}").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"{}");
        let err = write_new_synced(&f, b"[]").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&f).unwrap(), b"{}");
        let names: Vec<String> = list_dir_utf8(dir.path())
            .unwrap()
            .into_iter()
            .map(|(n, p)| {
                assert_eq!(p, dir.path().join(&n));
                n
            })
            .collect();
        assert_eq!(names, ["meta.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_gets_the_usual_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        write_atomic(&a, b"x").unwrap();
        std::fs::write(&b, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode(&a), mode(&b));
    }
}
