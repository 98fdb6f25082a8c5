//! Stage 1: what to do. The usable rows of train.csv, their splits, periods and targets, and
//! the fingerprint that names the run.

use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{EtlOptions, FORMAT_VERSION, RowReport, hex};
use crate::error::{Error, Result};
use crate::splits::{Period, Split, holdout_split, temporal_split};
use crate::store::Store;
use crate::taxonomy::Taxonomy;
use crate::train_csv::{TrainRecord, read_train_csv_from};
use crate::validate::screen_rows;

use crate::feedback_rows::NEGATIVES_FILE;

/// A usable clip with everything fixed before decoding.
pub(super) struct Planned {
    pub record: TrainRecord,
    pub split: Split,
    pub period: Period,
    pub labels: Vec<(usize, f32)>,
}

/// The run decided from the dataset's tables and the options.
pub(super) struct Plan {
    pub taxonomy: Taxonomy,
    /// Rows of train.csv, malformed ones included.
    pub rows_total: usize,
    pub rows: RowReport,
    /// The usable clips, in train.csv order.
    pub clips: Vec<Planned>,
    pub fingerprint: String,
}

/// Reads `taxonomy.csv` and `train.csv` from `data`, screens the rows and fixes each usable
/// clip's split, period and targets.
pub(super) fn plan(data: &Store, opts: &EtlOptions) -> Result<Plan> {
    let taxonomy = Taxonomy::from_reader(
        fetch_required(data, "taxonomy.csv")?.as_ref(),
        Path::new("taxonomy.csv"),
    )?;
    let (records, malformed_rows) = read_train_csv_from(
        fetch_required(data, "train.csv")?.as_ref(),
        Path::new("train.csv"),
    )?;
    let screened = screen_rows(&records, &taxonomy);
    let usable: Vec<TrainRecord> = screened.usable.iter().map(|r| (*r).clone()).collect();
    let rows = RowReport {
        malformed_rows,
        unknown_labels: screened.unknown_labels,
        duplicate_rows: screened.duplicate_rows,
        rating_outliers: screened.rating_outliers,
    };
    let splits = holdout_split(&usable, &taxonomy, opts.holdout(), opts.seed);
    let periods = temporal_split(&usable, opts.initial_fraction);
    let mut clips: Vec<Planned> = usable
        .into_iter()
        .zip(splits)
        .zip(periods)
        .map(|((record, split), period)| Planned {
            labels: targets(&record, &taxonomy, opts.secondary_weight),
            record,
            split,
            period,
        })
        .collect();
    if let Some(bytes) = data.get(NEGATIVES_FILE)? {
        clips.extend(negatives(&bytes, &taxonomy)?);
    }
    let fingerprint = fingerprint(opts, &taxonomy, &clips);
    Ok(Plan {
        rows_total: records.len() + rows.malformed_rows.len(),
        taxonomy,
        rows,
        clips,
        fingerprint,
    })
}

fn fetch_required(data: &Store, name: &str) -> Result<bytes::Bytes> {
    data.get(name)?
        .ok_or_else(|| Error::Missing(format!("{}/{name}", data.url().trim_end_matches('/'))))
}

/// The clips of [`NEGATIVES_FILE`] (`filename,primary_label`: a listener said that species was
/// not there), each with the one label `(species, -1.0)`: known absent, nothing else known.
/// They train only (a window without positive labels cannot be scored), in the newer period
/// (feedback is the newest data). Species not in the taxonomy are skipped.
fn negatives(bytes: &[u8], taxonomy: &Taxonomy) -> Result<Vec<Planned>> {
    #[derive(serde::Deserialize)]
    struct Row {
        filename: String,
        primary_label: String,
    }
    let mut out = Vec::new();
    for (i, row) in csv::Reader::from_reader(bytes)
        .deserialize::<Row>()
        .enumerate()
    {
        let row = row.map_err(|e| Error::Csv {
            path: NEGATIVES_FILE.into(),
            message: e.to_string(),
        })?;
        let Some(c) = taxonomy.index_of(&row.primary_label) else {
            continue;
        };
        out.push(Planned {
            record: TrainRecord {
                line: i as u64 + 2,
                primary_label: row.primary_label,
                secondary_labels: Vec::new(),
                call_types: Vec::new(),
                filename: row.filename,
                collection: crate::feedback_rows::FEEDBACK_DIR.into(),
                rating: None,
                latitude: None,
                longitude: None,
                author: String::new(),
                license: crate::feedback_rows::FEEDBACK_LICENCE.into(),
                url: String::new(),
            },
            split: Split::Train,
            period: Period::Retrain,
            labels: vec![(c, -1.0)],
        });
    }
    Ok(out)
}

/// Multi-hot targets: primary 1.0, each known secondary label `secondary_weight`.
fn targets(r: &TrainRecord, taxonomy: &Taxonomy, secondary_weight: f32) -> Vec<(usize, f32)> {
    let mut t: Vec<(usize, f32)> = Vec::new();
    if let Some(i) = taxonomy.index_of(&r.primary_label) {
        t.push((i, 1.0));
    }
    for s in &r.secondary_labels {
        if let Some(i) = taxonomy.index_of(s)
            && !t.iter().any(|&(j, _)| j == i)
            && secondary_weight > 0.0
        {
            t.push((i, secondary_weight));
        }
    }
    t.sort_by_key(|&(i, _)| i);
    t
}

fn fingerprint(opts: &EtlOptions, taxonomy: &Taxonomy, plan: &[Planned]) -> String {
    #[derive(Serialize)]
    struct Key<'a> {
        format: u32,
        producer: &'a str,
        options: &'a EtlOptions,
        classes: Vec<&'a str>,
        clips: Vec<ClipKey<'a>>,
    }
    #[derive(Serialize)]
    struct ClipKey<'a>(&'a str, &'a [(usize, f32)], Split, Period);
    let key = Key {
        format: FORMAT_VERSION,
        producer: concat!("silencio-data ", env!("CARGO_PKG_VERSION")),
        options: opts,
        classes: taxonomy
            .species()
            .iter()
            .map(|s| s.primary_label.as_str())
            .collect(),
        clips: plan
            .iter()
            .map(|p| ClipKey(p.record.filename.as_str(), &p.labels[..], p.split, p.period))
            .collect(),
    };
    // Serialising plain structs and vectors cannot fail.
    let bytes = serde_json::to_vec(&key).unwrap_or_default();
    hex(&Sha256::digest(&bytes))
}
