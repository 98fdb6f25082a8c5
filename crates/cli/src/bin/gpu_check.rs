//! `gpu-check`: the prepared GPU run (see `scripts/gpu-check.sh` and `trainer::gpu_check`).
//! Exit status 0 when every phase passed, 1 when one failed, 2 when the report could not be
//! written.

use std::path::PathBuf;

use clap::Parser;
use trainer::gpu_check::{self, CheckOptions, CheckSize};

#[derive(Parser)]
#[command(
    version,
    about = "Checks and times the models on a GPU; writes a JSON report after every phase"
)]
struct Args {
    /// Device: wgpu, wgpu:N, wgpu:cpu, cuda, cuda:N (flex checks the harness on the CPU).
    #[arg(long, default_value = "wgpu")]
    device: String,
    /// Full-size models, or reduced ones for a software adapter (lavapipe).
    #[arg(long, value_enum, default_value = "full")]
    size: CheckSize,
    /// The JSON report.
    #[arg(long, default_value = "gpu-check.json")]
    out: PathBuf,
    /// Scratch directory.
    #[arg(long, default_value = "gpu-check-work")]
    work: PathBuf,
    /// Inference batch sizes (default: 1,16,64; tiny: 1,2).
    #[arg(long, value_delimiter = ',')]
    batch_sizes: Vec<usize>,
    /// Timed training steps per model (default: 10; tiny: 2).
    #[arg(long)]
    train_steps: Option<usize>,
    /// Devices of the scaling table (default: every GPU found).
    #[arg(long, value_delimiter = ',')]
    scaling_devices: Vec<String>,
}

fn main() {
    let a = Args::parse();
    let mut opts = CheckOptions::new(&a.device, a.size, a.out, a.work);
    if !a.batch_sizes.is_empty() {
        opts.batch_sizes = a.batch_sizes;
    }
    if let Some(s) = a.train_steps {
        opts.train_steps = s;
    }
    opts.scaling_devices = a.scaling_devices;
    match gpu_check::run(&opts, &mut |m| println!("{m}")) {
        Ok(report) if report.passed() => {
            println!("gpu-check: every phase passed ({})", opts.out.display())
        }
        Ok(_) => {
            eprintln!("gpu-check: a phase failed (see {})", opts.out.display());
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error[{}]: {e}", e.kind());
            std::process::exit(2);
        }
    }
}
