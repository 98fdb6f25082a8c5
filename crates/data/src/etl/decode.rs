//! Stage 2: audio in, features out. A producer thread fetches batches of clips and decodes
//! them on the rayon pool while the caller's thread packs the previous batch into shards; the
//! channel holds one batch, so memory stays bounded.

use std::sync::mpsc::SyncSender;

use rayon::prelude::*;
use silencio_audio::{DecodeOptions, Features, LogMel};

use super::plan::Planned;
use crate::store::Store;

/// Encoded audio per batch at most (~25 min of BirdCLEF Vorbis): bounds memory with long clips.
const BATCH_BYTES: usize = 8 << 20;
/// Objects requested at once while filling a batch.
const FETCH_GROUP: usize = 8;

/// One clip's features, or why it was skipped (`kind`, `detail`).
pub(super) type ClipResult = std::result::Result<Features, (String, String)>;

/// Decodes `plan[from..]` in batches of up to `in_flight` clips (or [`BATCH_BYTES`] of encoded
/// audio, whichever comes first: many short clips keep every core busy, long ones bound
/// memory) and sends each batch with the index of its first clip. Stops when the receiver
/// is gone (the consumer failed).
pub(super) fn produce(
    plan: &[Planned],
    audio: &Store,
    lm: &LogMel,
    opts: &DecodeOptions,
    from: usize,
    in_flight: usize,
    tx: SyncSender<(usize, Vec<ClipResult>)>,
) {
    let mut pos = from;
    while pos < plan.len() {
        let first_pos = pos;
        let mut fetched = Vec::new();
        let mut size = 0;
        while pos < plan.len() && fetched.len() < in_flight && size < BATCH_BYTES {
            let take = (plan.len() - pos)
                .min(FETCH_GROUP)
                .min(in_flight - fetched.len());
            let names: Vec<&str> = plan[pos..pos + take]
                .iter()
                .map(|p| p.record.filename.as_str())
                .collect();
            for r in audio.get_many(&names) {
                size += r
                    .as_ref()
                    .ok()
                    .and_then(|b| b.as_ref())
                    .map_or(0, |b| b.len());
                fetched.push(r);
            }
            pos += take;
        }
        let results: Vec<ClipResult> = fetched
            .into_par_iter()
            .map(|bytes| match bytes {
                Ok(Some(b)) => silencio_audio::decode_bytes(Vec::from(b), opts)
                    .and_then(|d| lm.features_on_this_thread(&d.samples))
                    .map_err(|e| (e.kind().to_string(), e.to_string())),
                Ok(None) => Err(("missing".into(), "no such file in train_audio/".into())),
                Err(e) => Err(("unreadable".into(), e.to_string())),
            })
            .collect();
        if tx.send((first_pos, results)).is_err() {
            break;
        }
    }
}
