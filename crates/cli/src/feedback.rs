//! `silencio feedback export`: turn what `silencio serve` kept (sampled requests in
//! `<data-dir>/samples/`, the feedback log in `<data-dir>/feedback/`) into a labelling set.
//! `silencio feedback training-root`: that set's labelled windows as training rows beside the
//! base data. Flags only; the work is `silencio_data::labelling::export` and
//! `silencio_data::feedback_rows::build_root`.

use std::path::PathBuf;

/// `silencio feedback …`
#[derive(clap::Subcommand)]
pub enum FeedbackCommand {
    /// Write a labelling set: `<out>/audio/<request_id>.<ext>` copies of the sampled audio and
    /// `<out>/manifest.csv` (one row per window: the model's top species and the latest
    /// feedback on that window). Built beside `<out>` and renamed into place; an earlier export
    /// there is replaced, any other non-empty directory is refused.
    Export(ExportArgs),
    /// Build a BirdCLEF-layout training root: the base data (linked) plus one 5 s clip and
    /// `train.csv` row per window a listener confirmed or corrected in a labelling set;
    /// windows marked wrong without the right species are listed in
    /// `feedback_negatives.csv`.
    TrainingRoot(TrainingRootArgs),
}

/// Flags of `silencio feedback training-root`.
#[derive(clap::Args)]
pub struct TrainingRootArgs {
    /// The BirdCLEF-layout data the model trained on.
    #[arg(long)]
    pub base: PathBuf,
    /// A labelling set written by `silencio feedback export`.
    #[arg(long)]
    pub export: PathBuf,
    /// The training root to create (must not exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Flags of `silencio feedback export`.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// The data dir of `silencio serve` (holds `samples/` and `feedback/`).
    #[arg(long, env = "SILENCIO_DATA_DIR", default_value = "serve-data")]
    pub data_dir: PathBuf,
    /// Output directory of the labelling set.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn feedback(cmd: FeedbackCommand) -> anyhow::Result<()> {
    match cmd {
        FeedbackCommand::Export(a) => {
            let summary = silencio_data::labelling::export(
                &a.data_dir.join("samples"),
                Some(&a.data_dir.join("feedback")),
                &a.out,
            )?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        FeedbackCommand::TrainingRoot(a) => {
            let summary = silencio_data::feedback_rows::build_root(&a.base, &a.export, &a.out)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
    }
    Ok(())
}
