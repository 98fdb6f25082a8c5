//! Where datasets are read from and shards written to: a thin, blocking face over
//! `object_store`, so the ETL speaks to a local directory, S3 (or any S3-compatible server) and
//! memory the same way. Every `put` is atomic: a local put writes a staging file, fsyncs and
//! renames; an S3 PUT is atomic by design; so a crash never leaves half an object.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{Error, Result};

/// Size of the parts of a streamed upload (S3 wants ≥ 5 MiB but for the last).
const PART_BYTES: usize = 8 << 20;

/// Gets fetched at once when reading many objects.
const FETCH_CONCURRENCY: usize = 8;

/// A location (`file://`, `s3://`, `memory://` URL or a plain path) opened for blocking use.
#[derive(Debug, Clone)]
pub struct Store {
    url: String,
    inner: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    /// The local root, for the staging-file sweep after a crash.
    local_root: Option<std::path::PathBuf>,
    rt: Arc<tokio::runtime::Runtime>,
}

impl Store {
    /// Opens `location` to read: a plain path or `file://` URL (a directory that must exist),
    /// `s3://bucket/prefix` (credentials, region and endpoint from the usual `AWS_*` environment
    /// variables: `AWS_ENDPOINT` for an S3-compatible server, `AWS_ALLOW_HTTP=true` for plain
    /// HTTP), or `memory://` (a fresh in-memory store).
    pub fn open(location: &str) -> Result<Self> {
        Self::open_with(location, &[], false)
    }

    /// [`Store::open`] for writing: a local directory is created when absent.
    pub fn create(location: &str) -> Result<Self> {
        Self::open_with(location, &[], true)
    }

    /// [`Store::open`] / [`Store::create`] with S3 settings given explicitly (`aws_endpoint`,
    /// `aws_allow_http`, `aws_access_key_id`, …, as object_store names them); they override
    /// the environment.
    pub fn open_with(location: &str, s3_options: &[(&str, &str)], create: bool) -> Result<Self> {
        let bad = |message: String| Error::Store {
            url: location.to_string(),
            message,
        };
        let (inner, prefix, local_root): (Arc<dyn ObjectStore>, ObjPath, _) =
            match location.split_once("://") {
                None | Some(("file", _)) => {
                    let raw = location.strip_prefix("file://").unwrap_or(location);
                    let dir = std::path::PathBuf::from(raw);
                    if create {
                        std::fs::create_dir_all(&dir).map_err(|e| bad(e.to_string()))?;
                    } else if !dir.is_dir() {
                        return Err(Error::Missing(format!("directory {raw}")));
                    }
                    let dir = dir.canonicalize().map_err(|e| bad(e.to_string()))?;
                    let fs = LocalFileSystem::new_with_prefix(&dir)
                        .map_err(|e| bad(e.to_string()))?
                        .with_fsync(true);
                    (Arc::new(fs), ObjPath::default(), Some(dir))
                }
                Some(("s3", rest)) => {
                    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
                    if bucket.is_empty() {
                        return Err(bad("no bucket in s3:// URL".into()));
                    }
                    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
                    for (k, v) in s3_options {
                        let key = k.parse().map_err(|e| bad(format!("S3 option {k}: {e}")))?;
                        b = b.with_config(key, *v);
                    }
                    let s3 = b.build().map_err(|e| bad(e.to_string()))?;
                    (Arc::new(s3), ObjPath::from(key), None)
                }
                Some(("memory", rest)) => (Arc::new(InMemory::new()), ObjPath::from(rest), None),
                Some((scheme, _)) => {
                    return Err(bad(format!(
                        "unsupported scheme {scheme}:// (use a path, file://, s3:// or memory://)"
                    )));
                }
            };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| bad(e.to_string()))?;
        Ok(Self {
            url: location.to_string(),
            inner,
            prefix,
            local_root,
            rt: Arc::new(rt),
        })
    }

    /// The same backing store seen under `sub/` (shares connections and, for memory, data).
    pub fn child(&self, sub: &str) -> Self {
        Self {
            url: format!("{}/{}", self.url.trim_end_matches('/'), sub),
            prefix: self.path(sub),
            local_root: self.local_root.as_ref().map(|r| r.join(sub)),
            ..self.clone()
        }
    }

    /// The location as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, rel: &str) -> ObjPath {
        rel.split('/')
            .filter(|p| !p.is_empty())
            .fold(self.prefix.clone(), |p, part| p.join(part))
    }

    fn err(&self, rel: &str, e: impl std::fmt::Display) -> Error {
        Error::Store {
            url: format!("{}/{}", self.url.trim_end_matches('/'), rel),
            message: e.to_string(),
        }
    }

    /// The object's bytes, or `None` when it does not exist (async, for [`Store::get`] and
    /// [`Store::get_many`]).
    async fn fetch(&self, rel: &str) -> Result<Option<Bytes>> {
        match self.inner.get(&self.path(rel)).await {
            Ok(r) => r.bytes().await.map(Some).map_err(|e| self.err(rel, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// The object's bytes, or `None` when it does not exist.
    pub fn get(&self, rel: &str) -> Result<Option<Bytes>> {
        self.rt.block_on(self.fetch(rel))
    }

    /// Many objects at once (a few requests in flight), in the order asked; each `None` when
    /// missing, or the error for that object alone.
    pub fn get_many(&self, rels: &[&str]) -> Vec<Result<Option<Bytes>>> {
        self.rt.block_on(
            futures_util::stream::iter(rels.iter().map(|rel| self.fetch(rel)))
                .buffered(FETCH_CONCURRENCY)
                .collect(),
        )
    }

    /// Size in bytes, or `None` when the object does not exist.
    pub fn size(&self, rel: &str) -> Result<Option<u64>> {
        let path = self.path(rel);
        self.rt.block_on(async {
            match self.inner.head(&path).await {
                Ok(m) => Ok(Some(m.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(self.err(rel, e)),
            }
        })
    }

    /// Writes the whole object atomically.
    pub fn put(&self, rel: &str, bytes: Vec<u8>) -> Result<()> {
        let path = self.path(rel);
        self.rt
            .block_on(self.inner.put(&path, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.err(rel, e))
    }

    /// Writes an object in parts as it is produced (a multipart upload: S3 parts, or a local
    /// staging file renamed at the end), so a large object never has to sit in memory. The
    /// object appears only when [`PartWriter::finish`] succeeds.
    pub fn put_streamed(&self, rel: &str) -> Result<PartWriter<'_>> {
        let path = self.path(rel);
        let upload = self
            .rt
            .block_on(self.inner.put_multipart(&path))
            .map_err(|e| self.err(rel, e))?;
        Ok(PartWriter {
            store: self,
            rel: rel.to_string(),
            upload: Some(upload),
            buf: Vec::with_capacity(PART_BYTES),
        })
    }

    /// Removes the object (no error when it is absent).
    pub fn delete(&self, rel: &str) -> Result<()> {
        let path = self.path(rel);
        match self.rt.block_on(self.inner.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(rel, e)),
        }
    }

    /// Names (relative to this store, sorted) of the objects under `rel`.
    pub fn list(&self, rel: &str) -> Result<Vec<String>> {
        let base = self.path(rel);
        let prefix_parts = self.prefix.parts().count();
        let metas: Vec<_> = self
            .rt
            .block_on(self.inner.list(Some(&base)).try_collect::<Vec<_>>())
            .map_err(|e| self.err(rel, e))?;
        let mut names: Vec<String> = metas
            .into_iter()
            .map(|m| {
                m.location
                    .parts()
                    .skip(prefix_parts)
                    .map(|p| p.as_ref().to_string())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Removes staging files a killed local writer left under `rel` (`name#123`); object
    /// stores other than the local file system never show half-written objects.
    pub fn sweep_staging(&self, rel: &str) -> Result<usize> {
        let Some(root) = &self.local_root else {
            return Ok(0);
        };
        let dir = root.join(rel);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let staged = name
                .split_once('#')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if staged {
                std::fs::remove_file(e.path()).map_err(|err| self.err(rel, err))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// An object being written in parts; see [`Store::put_streamed`]. Dropped without
/// [`PartWriter::finish`], the upload is aborted and nothing appears.
pub struct PartWriter<'a> {
    store: &'a Store,
    rel: String,
    upload: Option<Box<dyn object_store::MultipartUpload>>,
    buf: Vec<u8>,
}

impl PartWriter<'_> {
    /// Appends bytes.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= PART_BYTES {
            self.send_part()?;
        }
        Ok(())
    }

    fn send_part(&mut self) -> Result<()> {
        let part = std::mem::replace(&mut self.buf, Vec::with_capacity(PART_BYTES));
        let Some(upload) = self.upload.as_mut() else {
            return Err(self.store.err(&self.rel, "upload already finished"));
        };
        let fut = upload.put_part(PutPayload::from(part));
        self.store
            .rt
            .block_on(fut)
            .map_err(|e| self.store.err(&self.rel, e))
    }

    /// Sends the last part and completes the upload.
    pub fn finish(mut self) -> Result<()> {
        if !self.buf.is_empty() {
            self.send_part()?;
        }
        let mut upload = self
            .upload
            .take()
            .ok_or_else(|| self.store.err(&self.rel, "upload already finished"))?;
        self.store
            .rt
            .block_on(upload.complete())
            .map(|_| ())
            .map_err(|e| self.store.err(&self.rel, e))
    }
}

impl std::io::Write for PartWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.write_raw(bytes)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for PartWriter<'_> {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            // Best effort: an unfinished upload must not leave a visible object.
            let _ = self.store.rt.block_on(upload.abort());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_round_trip_list_and_missing() {
        let s = Store::open("memory://").unwrap();
        assert_eq!(s.get("a/b.txt").unwrap(), None);
        s.put("a/b.txt", b"hello".to_vec()).unwrap();
        s.put("a/c.txt", b"x".to_vec()).unwrap();
        s.put("z.txt", b"y".to_vec()).unwrap();
        assert_eq!(s.get("a/b.txt").unwrap().unwrap().as_ref(), b"hello");
        assert_eq!(s.size("a/c.txt").unwrap(), Some(1));
        assert_eq!(s.list("a").unwrap(), vec!["a/b.txt", "a/c.txt"]);
        let sub = s.child("a");
        assert_eq!(sub.get("b.txt").unwrap().unwrap().as_ref(), b"hello");
        assert_eq!(sub.list("").unwrap(), vec!["b.txt", "c.txt"]);
        let many = s.get_many(&["z.txt", "nope", "a/b.txt"]);
        assert_eq!(many[0].as_ref().unwrap().as_deref(), Some(&b"y"[..]));
        assert!(many[1].as_ref().unwrap().is_none());
        s.delete("z.txt").unwrap();
        s.delete("z.txt").unwrap();
        assert_eq!(s.get("z.txt").unwrap(), None);
    }

    #[test]
    fn local_dir_is_created_and_staging_files_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("out");
        assert!(matches!(
            Store::open(root.to_str().unwrap()),
            Err(Error::Missing(_))
        ));
        assert!(!root.exists(), "opening to read must not create");
        let s = Store::create(root.to_str().unwrap()).unwrap();
        s.put("shards/x.bin", vec![1, 2, 3]).unwrap();
        assert_eq!(std::fs::read(root.join("shards/x.bin")).unwrap(), [1, 2, 3]);
        std::fs::write(root.join("shards/x.bin#7"), b"half").unwrap();
        assert_eq!(s.list("shards").unwrap(), vec!["shards/x.bin"]);
        assert_eq!(s.sweep_staging("shards").unwrap(), 1);
        assert!(!root.join("shards/x.bin#7").exists());
        let url = format!("file://{}", root.display());
        let s2 = Store::open(&url).unwrap();
        assert_eq!(s2.get("shards/x.bin").unwrap().unwrap().as_ref(), [1, 2, 3]);
    }

    #[test]
    fn streamed_put_appears_whole_only_when_finished() {
        use std::io::Write;
        for loc in ["memory://", "local"] {
            let tmp = tempfile::tempdir().unwrap();
            let s = if loc == "local" {
                Store::create(tmp.path().to_str().unwrap()).unwrap()
            } else {
                Store::open(loc).unwrap()
            };
            let big: Vec<u8> = (0..PART_BYTES * 2 + 123).map(|i| (i % 251) as u8).collect();
            let mut w = s.put_streamed("m.json").unwrap();
            w.write_all(&big[..PART_BYTES + 7]).unwrap();
            w.write_all(&big[PART_BYTES + 7..]).unwrap();
            assert_eq!(
                s.get("m.json").unwrap(),
                None,
                "{loc}: visible before finish"
            );
            w.finish().unwrap();
            assert_eq!(
                s.get("m.json").unwrap().unwrap().as_ref(),
                &big[..],
                "{loc}"
            );
            let mut dropped = s.put_streamed("n.json").unwrap();
            dropped.write_all(&big).unwrap();
            drop(dropped);
            assert_eq!(
                s.get("n.json").unwrap(),
                None,
                "{loc}: aborted upload visible"
            );
        }
    }

    #[test]
    fn unknown_scheme_is_a_typed_error() {
        let e = Store::open("ftp://host/x").unwrap_err();
        assert!(matches!(e, Error::Store { .. }), "{e}");
    }
}
