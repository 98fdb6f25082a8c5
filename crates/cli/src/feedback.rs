//! `silencio feedback export`: turn what `silencio serve` kept (sampled requests in
//! `<data-dir>/samples/`, the feedback log in `<data-dir>/feedback/`) into a labelling set.
//! Flags only; the work is `silencio_data::labelling::export`.

use std::path::PathBuf;

/// `silencio feedback …`
#[derive(clap::Subcommand)]
pub enum FeedbackCommand {
    /// Write a labelling set: `<out>/audio/<request_id>.<ext>` copies of the sampled audio and
    /// `<out>/manifest.csv` (one row per window: the model's top species and the latest
    /// feedback on that window). Built beside `<out>` and renamed into place; an earlier export
    /// there is replaced, any other non-empty directory is refused.
    Export(ExportArgs),
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
    }
    Ok(())
}
