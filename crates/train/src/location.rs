//! The location filter's glue to the training data: an [`OccurrenceModel`] learnt from the
//! `primary_label`, `latitude` and `longitude` of a BirdCLEF `train.csv` (which has no dates,
//! so the model ignores the week). Writing it into a bundle is the bundle writer's business.

use std::path::Path;

use silencio_data::TrainRecord;
use silencio_infer::OccurrenceModel;
use silencio_infer::location::{HoldoutReport, OccurrenceConfig, holdout_check};

use crate::Result;

pub use silencio_data::located_points;

/// Learns from parsed `train.csv` rows for the classes `species` (bundle order). Its source
/// says how many rows were located.
pub fn learn_from_rows<C: AsRef<str>>(
    rows: &[TrainRecord],
    species: &[C],
    cfg: OccurrenceConfig,
) -> Result<OccurrenceModel> {
    let points = located_points(rows);
    let located = points.len();
    let model = OccurrenceModel::learn(points, species, cfg)?;
    let source = format!(
        "train.csv: {located} located rows of {} ({})",
        rows.len(),
        model.source()
    );
    Ok(model.with_source(source))
}

/// Reads `train.csv` at `path` and learns from it ([`learn_from_rows`]); rows the reader
/// rejects are counted in the source text.
pub fn learn_from_train_csv<C: AsRef<str>>(
    path: &Path,
    species: &[C],
    cfg: OccurrenceConfig,
) -> Result<OccurrenceModel> {
    let (rows, problems) = silencio_data::read_train_csv(path)?;
    let model = learn_from_rows(&rows, species, cfg)?;
    let source = format!(
        "{}: {}; {} unreadable rows",
        path.display(),
        model.source(),
        problems.len()
    );
    Ok(model.with_source(source))
}

/// [`holdout_check`] on the located rows of a `train.csv`.
pub fn holdout_train_csv<C: AsRef<str>>(
    rows: &[TrainRecord],
    species: &[C],
    k_fold: usize,
    cfg: OccurrenceConfig,
    threshold: f32,
) -> Result<HoldoutReport> {
    Ok(holdout_check(
        &located_points(rows),
        species,
        k_fold,
        cfg,
        threshold,
    )?)
}
