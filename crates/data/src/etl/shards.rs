//! Stage 3: windows packed into safetensors shards, each followed by its sidecar; the
//! sidecars of an earlier run are what a resumed run trusts.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::decode::ClipResult;
use super::plan::Plan;
use super::{
    ClipRecord, Cursor, Dtype, EtlEvent, EtlOptions, FORMAT_VERSION, HEADER_SLOT, SHARD_DIR,
    ShardRecord, SkippedClip, WindowRecord, hex,
};
use crate::error::{Error, Result};
use crate::splits::Split;
use crate::store::Store;

/// Packs decoded clips, in plan order, into shards of a fixed number of windows.
pub(super) struct Packer<'a> {
    out: &'a Store,
    opts: &'a EtlOptions,
    plan: &'a Plan,
    /// Where the first batch starts (a resumed run starts inside a clip).
    cursor: Cursor,
    per_shard: usize,
    shard_shape: [usize; 3],
    feature_shape: [usize; 2],
    shard: ShardBuilder,
    done: Vec<ShardSummary>,
    /// Skipped clips not yet given to a shard.
    trailing_skips: Vec<SkippedClip>,
    decoded_audio_s: f64,
    new_windows: usize,
}

/// What packing produced.
pub(super) struct Packed {
    pub shards: Vec<ShardSummary>,
    pub trailing_skips: Vec<SkippedClip>,
    pub feature_shape: [usize; 2],
    pub decoded_audio_s: f64,
    pub new_windows: usize,
}

impl<'a> Packer<'a> {
    /// Continues after the complete shards `done`, at `cursor`.
    pub fn new(
        out: &'a Store,
        opts: &'a EtlOptions,
        plan: &'a Plan,
        done: Vec<ShardSummary>,
        cursor: Cursor,
    ) -> Self {
        let [n_mels, n_frames] = [opts.features.n_mels, opts.features.frames_per_window()];
        let window_bytes = (n_mels * n_frames * opts.dtype.size()) as u64;
        let per_shard = opts.shard_bytes.div_ceil(window_bytes).max(1) as usize;
        let shard_shape = [n_mels * n_frames, window_bytes as usize, per_shard];
        let classes = plan.taxonomy.len();
        Self {
            out,
            opts,
            plan,
            cursor,
            per_shard,
            shard_shape,
            feature_shape: [n_mels, n_frames],
            shard: ShardBuilder::new(done.len(), cursor, shard_shape, classes),
            done,
            trailing_skips: Vec::new(),
            decoded_audio_s: 0.0,
            new_windows: 0,
        }
    }

    /// Packs the decoded clips `plan.clips[first..]`, closing each shard that fills.
    pub fn batch(
        &mut self,
        first: usize,
        results: Vec<ClipResult>,
        progress: &mut dyn FnMut(&EtlEvent),
    ) -> Result<()> {
        let (plan, opts) = (self.plan, self.opts);
        let clips = plan.clips.len();
        let rate = f64::from(opts.features.sample_rate);
        let batch = &plan.clips[first..first + results.len()];
        for (i, (p, res)) in batch.iter().zip(results).enumerate() {
            let pos = first + i;
            let f = match res {
                Ok(f) => f,
                Err((kind, detail)) => {
                    self.trailing_skips.push(SkippedClip {
                        clip: pos,
                        line: p.record.line,
                        filename: p.record.filename.clone(),
                        kind,
                        detail,
                    });
                    progress(&EtlEvent::Clip {
                        done_clips: pos + 1,
                        clips,
                        windows: 0,
                        audio_s: 0.0,
                        skipped: true,
                    });
                    continue;
                }
            };
            let total = f.windows.len();
            let keep = match opts.max_windows_per_clip {
                0 => total,
                cap => total.min(cap),
            };
            let duration_s = f
                .windows
                .last()
                .map_or(0.0, |w| (w.start_sample + w.valid_samples) as f64 / rate);
            self.decoded_audio_s += duration_s;
            let start = if pos == self.cursor.clip {
                self.cursor.window
            } else {
                0
            };
            for w in start..keep {
                let win = &f.windows[w];
                self.shard.push(
                    WindowRecord {
                        clip: pos,
                        window: w,
                        start_s: win.start_s,
                        end_s: win.end_s,
                        valid_s: win.valid_samples as f64 / rate,
                        labels: p.labels.clone(),
                        split: p.split,
                        period: p.period,
                        shard: 0,
                        row: 0,
                        offset: 0,
                    },
                    f.window(w),
                    opts.dtype,
                );
                self.new_windows += 1;
                if w + 1 == keep {
                    self.shard.clips.push(ClipRecord {
                        clip: pos,
                        line: p.record.line,
                        filename: p.record.filename.clone(),
                        primary_label: p.record.primary_label.clone(),
                        split: p.split,
                        period: p.period,
                        duration_s,
                        windows_total: total,
                        windows: keep,
                    });
                }
                // Skips seen so far belong to the shard that is open when they happen.
                self.shard.skipped.append(&mut self.trailing_skips);
                if self.shard.rows() == self.per_shard {
                    let next = if w + 1 == keep {
                        Cursor {
                            clip: pos + 1,
                            window: 0,
                        }
                    } else {
                        Cursor {
                            clip: pos,
                            window: w + 1,
                        }
                    };
                    self.close(next, progress)?;
                }
            }
            progress(&EtlEvent::Clip {
                done_clips: pos + 1,
                clips,
                windows: keep.saturating_sub(start),
                audio_s: duration_s,
                skipped: false,
            });
        }
        Ok(())
    }

    /// Writes the open shard, which ends at `next`, and opens the following one.
    fn close(&mut self, next: Cursor, progress: &mut dyn FnMut(&EtlEvent)) -> Result<()> {
        let fresh = ShardBuilder::new(
            self.shard.index + 1,
            next,
            self.shard_shape,
            self.plan.taxonomy.len(),
        );
        let full = std::mem::replace(&mut self.shard, fresh);
        let sc = full.finish(
            self.out,
            &self.plan.fingerprint,
            next,
            self.opts.dtype,
            self.feature_shape,
        )?;
        progress(&EtlEvent::Shard {
            index: sc.shard.index,
            windows: sc.shard.windows,
            bytes: sc.shard.bytes,
        });
        self.done.push(sc.into());
        Ok(())
    }

    /// Writes the last, partly filled shard.
    pub fn finish(mut self, progress: &mut dyn FnMut(&EtlEvent)) -> Result<Packed> {
        if self.shard.rows() > 0 {
            let end = Cursor {
                clip: self.plan.clips.len(),
                window: 0,
            };
            self.close(end, progress)?;
        }
        Ok(Packed {
            shards: self.done,
            trailing_skips: self.trailing_skips,
            feature_shape: self.feature_shape,
            decoded_audio_s: self.decoded_audio_s,
            new_windows: self.new_windows,
        })
    }
}

/// What a shard's sidecar records: enough to trust and resume from the shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Sidecar {
    pub format: u32,
    pub fingerprint: String,
    pub shard: ShardRecord,
    pub start: Cursor,
    pub end: Cursor,
    pub windows: Vec<WindowRecord>,
    pub clips: Vec<ClipRecord>,
    pub skipped_clips: Vec<SkippedClip>,
}

/// What stays in memory of a written shard: its record, where it ends, and counts. Its
/// windows and clips stay in its sidecar, so memory does not grow with the dataset.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ShardSummary {
    pub shard: ShardRecord,
    pub end: Cursor,
    pub train_windows: usize,
    pub clips: usize,
    pub audio_s: f64,
    pub skipped_clips: Vec<SkippedClip>,
}

impl From<Sidecar> for ShardSummary {
    fn from(sc: Sidecar) -> Self {
        Self {
            train_windows: sc
                .windows
                .iter()
                .filter(|w| w.split == Split::Train)
                .count(),
            clips: sc.clips.len(),
            audio_s: sc.clips.iter().map(|c| c.duration_s).sum(),
            shard: sc.shard,
            end: sc.end,
            skipped_clips: sc.skipped_clips,
        }
    }
}

pub(super) fn conflict(out: &Store) -> Error {
    Error::Conflict(format!(
        "{} holds the output of a different ETL run (other data or options); \
         choose another --out or empty it",
        out.url()
    ))
}

fn shard_name(index: usize) -> String {
    format!("{SHARD_DIR}/shard-{index:05}.safetensors")
}

pub(super) fn sidecar_name(index: usize) -> String {
    format!("{SHARD_DIR}/shard-{index:05}.json")
}

pub(super) fn read_sidecar(out: &Store, index: usize) -> Result<Option<Sidecar>> {
    let Some(body) = out.get(&sidecar_name(index))? else {
        return Ok(None);
    };
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| Error::CorruptOutput(format!("{}: {e}", sidecar_name(index))))
}

/// The complete shards of an earlier run with the same fingerprint, in order. A sidecar
/// whose shard is missing or of the wrong size ends the list (that shard is redone); a
/// sidecar of another run is a conflict.
pub(super) fn load_sidecars(out: &Store, fingerprint: &str) -> Result<Vec<ShardSummary>> {
    let mut done: Vec<ShardSummary> = Vec::new();
    loop {
        let index = done.len();
        let Some(sc) = read_sidecar(out, index)? else {
            break;
        };
        if sc.fingerprint != fingerprint {
            return Err(conflict(out));
        }
        let expected_start = done.last().map(|s| s.end).unwrap_or_default();
        if sc.format != FORMAT_VERSION || sc.shard.index != index || sc.start != expected_start {
            return Err(Error::CorruptOutput(format!(
                "{} does not continue shard {}",
                sidecar_name(index),
                index.wrapping_sub(1)
            )));
        }
        if out.size(&sc.shard.file)? != Some(sc.shard.bytes) {
            break;
        }
        done.push(sc.into());
    }
    // Anything after the last trusted pair is redone; stale later sidecars must not survive.
    for name in out.list(SHARD_DIR)? {
        let index = name
            .rsplit('-')
            .next()
            .and_then(|t| t.split('.').next())
            .and_then(|n| n.parse::<usize>().ok());
        if index.is_some_and(|i| i >= done.len()) {
            out.delete(&name)?;
        }
    }
    Ok(done)
}

/// Windows of the shard being filled.
struct ShardBuilder {
    index: usize,
    start: Cursor,
    window_len: usize,
    n_classes: usize,
    features: Vec<u8>,
    labels: Vec<u8>,
    windows: Vec<WindowRecord>,
    clips: Vec<ClipRecord>,
    skipped: Vec<SkippedClip>,
}

impl ShardBuilder {
    /// `rows`: windows the shard will hold at most, `window_bytes`: stored bytes of one.
    fn new(
        index: usize,
        start: Cursor,
        [window_len, window_bytes, rows]: [usize; 3],
        n_classes: usize,
    ) -> Self {
        // The file is built in place: header slot, then features, then labels; reserving
        // it all at once (pages are only touched as they fill) avoids regrowth copies.
        let mut features = Vec::with_capacity(HEADER_SLOT + rows * window_bytes);
        features.resize(HEADER_SLOT, b' ');
        Self {
            index,
            start,
            window_len,
            n_classes,
            features,
            labels: Vec::new(),
            windows: Vec::new(),
            clips: Vec::new(),
            skipped: Vec::new(),
        }
    }

    fn rows(&self) -> usize {
        self.windows.len()
    }

    fn push(&mut self, mut w: WindowRecord, features: &[f32], dtype: Dtype) {
        debug_assert_eq!(features.len(), self.window_len);
        dtype.encode(features, &mut self.features);
        let mut row = vec![0f32; self.n_classes];
        for &(c, v) in &w.labels {
            row[c] = v;
        }
        for v in row {
            self.labels.extend_from_slice(&v.to_le_bytes());
        }
        w.shard = self.index;
        w.row = self.windows.len();
        self.windows.push(w);
    }

    /// Writes the shard, then its sidecar (the sidecar's presence marks the shard complete).
    fn finish(
        mut self,
        out: &Store,
        fingerprint: &str,
        end: Cursor,
        dtype: Dtype,
        [n_mels, n_frames]: [usize; 2],
    ) -> Result<Sidecar> {
        let n = self.windows.len();
        let features_len = self.features.len() - HEADER_SLOT;
        let labels_end = features_len + self.labels.len();
        // The safetensors header (format: 8-byte little-endian length, JSON, padded with
        // spaces), written into the slot kept in front of the features.
        let header = format!(
            "{{\"__metadata__\":{{\"format\":\"silencio-etl-v{FORMAT_VERSION}\"}},\
             \"features\":{{\"dtype\":\"{}\",\"shape\":[{n},{n_mels},{n_frames}],\
             \"data_offsets\":[0,{features_len}]}},\
             \"labels\":{{\"dtype\":\"F32\",\"shape\":[{n},{}],\
             \"data_offsets\":[{features_len},{labels_end}]}}}}",
            match dtype {
                Dtype::F16 => "F16",
                Dtype::F32 => "F32",
            },
            self.n_classes,
        );
        if header.len() > HEADER_SLOT - 8 {
            return Err(Error::CorruptOutput(format!(
                "shard header of {} bytes exceeds its slot",
                header.len()
            )));
        }
        let mut bytes = std::mem::take(&mut self.features);
        bytes[..8].copy_from_slice(&((HEADER_SLOT - 8) as u64).to_le_bytes());
        bytes[8..8 + header.len()].copy_from_slice(header.as_bytes());
        bytes.extend_from_slice(&std::mem::take(&mut self.labels));
        let base = HEADER_SLOT as u64;
        let window_bytes = (n_mels * n_frames * dtype.size()) as u64;
        for w in &mut self.windows {
            w.offset = base + w.row as u64 * window_bytes;
        }
        let record = ShardRecord {
            index: self.index,
            file: shard_name(self.index),
            sha256: hex(&Sha256::digest(&bytes)),
            bytes: bytes.len() as u64,
            windows: n,
        };
        out.put(&record.file, bytes)?;
        let sc = Sidecar {
            format: FORMAT_VERSION,
            fingerprint: fingerprint.to_string(),
            shard: record,
            start: self.start,
            end,
            windows: self.windows,
            clips: self.clips,
            skipped_clips: self.skipped,
        };
        let body =
            serde_json::to_vec(&sc).map_err(|e| Error::CorruptOutput(format!("sidecar: {e}")))?;
        out.put(&sidecar_name(sc.shard.index), body)?;
        Ok(sc)
    }
}
