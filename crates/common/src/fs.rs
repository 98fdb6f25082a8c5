//! Atomic file replacement: a reader sees the old file or the new one, never half of one, and
//! after a crash the new file is either wholly there or not at all.

use std::io::Write;
use std::path::Path;

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

    #[test]
    fn replaces_the_file_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.csv");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two!").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two!");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_failed_write_leaves_no_temp_file_and_the_target_intact() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        // Renaming a file over a non-empty directory fails.
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), b"x").unwrap();
        assert!(write_atomic(&target, b"y").is_err());
        assert!(target.join("keep").is_file());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_temp_file_may_live_elsewhere_on_the_same_file_system() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let p = dir.path().join("params").join("lr");
        std::fs::create_dir(p.parent().unwrap()).unwrap();
        write_atomic_in(&p, &tmp, b"0.01").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"0.01");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
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
