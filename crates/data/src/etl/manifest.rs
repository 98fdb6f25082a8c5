//! Stage 4: the manifest, streamed from the shards' sidecars.

use super::shards::{ShardSummary, read_sidecar, sidecar_name};
use super::{EtlOptions, FORMAT_VERSION, MANIFEST, ManifestHead};
use crate::error::{Error, Result};
use crate::store::Store;
use crate::taxonomy::Taxonomy;

/// Streams `manifest.json` (the [`Manifest`] layout) to the store in parts, reading each
/// shard's windows and clips back from its sidecar, so that no list of every window is ever
/// held in memory. The upload completes (and the object appears) only at the end.
pub(super) fn write_manifest(
    out: &Store,
    mut head: ManifestHead,
    opts: &EtlOptions,
    taxonomy: &Taxonomy,
    feature_shape: [usize; 2],
    shards: Vec<ShardSummary>,
) -> Result<ManifestHead> {
    let trailing = std::mem::take(&mut head.skipped_clips);
    let t = &mut head.totals;
    for s in shards {
        t.windows += s.shard.windows;
        t.train_windows += s.train_windows;
        t.clips += s.clips;
        t.audio_s += s.audio_s;
        t.shard_bytes += s.shard.bytes;
        head.shards.push(s.shard);
        head.skipped_clips.extend(s.skipped_clips);
    }
    head.skipped_clips.extend(trailing);
    t.shards = head.shards.len();
    t.valid_windows = t.windows - t.train_windows;
    t.skipped_clips = head.skipped_clips.len();

    let json = |e: serde_json::Error| Error::CorruptOutput(format!("{MANIFEST}: {e}"));
    let classes: Vec<&str> = taxonomy
        .species()
        .iter()
        .map(|s| s.primary_label.as_str())
        .collect();
    let mut w = out.put_streamed(MANIFEST)?;
    let field = |w: &mut crate::store::PartWriter, name: &str, value: &dyn erased::Json| {
        w.write_raw(format!(",\"{name}\":").as_bytes())?;
        value.write(w).map_err(json)
    };
    w.write_raw(format!("{{\"format\":{FORMAT_VERSION}").as_bytes())?;
    field(&mut w, "fingerprint", &head.fingerprint)?;
    field(&mut w, "options", opts)?;
    field(&mut w, "classes", &classes)?;
    field(&mut w, "feature_shape", &feature_shape)?;
    field(&mut w, "totals", &head.totals)?;
    field(&mut w, "shards", &head.shards)?;
    for list in ["clips", "windows"] {
        w.write_raw(format!(",\"{list}\":[").as_bytes())?;
        let mut first = true;
        for s in &head.shards {
            let sc = read_sidecar(out, s.index)?.ok_or_else(|| {
                Error::CorruptOutput(format!("{} vanished", sidecar_name(s.index)))
            })?;
            let items: Vec<&dyn erased::Json> = if list == "clips" {
                sc.clips.iter().map(|c| c as &dyn erased::Json).collect()
            } else {
                sc.windows.iter().map(|c| c as &dyn erased::Json).collect()
            };
            for item in items {
                if !first {
                    w.write_raw(b",")?;
                }
                first = false;
                item.write(&mut w).map_err(json)?;
            }
        }
        w.write_raw(b"]")?;
    }
    field(&mut w, "skipped_clips", &head.skipped_clips)?;
    field(&mut w, "rows", &head.rows)?;
    w.write_raw(b"}")?;
    w.finish()?;
    Ok(head)
}

/// Serialising through `&dyn` (serde's traits are not object safe).
mod erased {
    /// A value that can write itself as JSON.
    pub trait Json {
        fn write(&self, w: &mut crate::store::PartWriter) -> serde_json::Result<()>;
    }
    impl<T: serde::Serialize + ?Sized> Json for T {
        fn write(&self, w: &mut crate::store::PartWriter) -> serde_json::Result<()> {
            serde_json::to_writer(w, self)
        }
    }
}
