//! The scaling command: a fixed number of training steps on 1, 2, 4… devices, with the wall
//! time and throughput of each, written as `scaling.csv` and a plot `scaling.svg`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use silencio_data::splits::Split;

use crate::dataset::WindowDataset;
use crate::fit::{self, FitSpec};
use crate::pipeline::{RunOptions, write_atomic};
use crate::{Error, Result, prepare};
use silencio_data::PeriodFilter;

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScalingRow {
    /// Devices used.
    pub devices: usize,
    /// Steps run.
    pub steps: usize,
    /// Windows trained on.
    pub windows: usize,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl ScalingRow {
    /// Training windows per second.
    pub fn throughput(&self) -> f64 {
        self.windows as f64 / self.seconds.max(1e-9)
    }
}

/// Device names for `count` devices of `kind`: `cuda`/`wgpu` number them, `flex` repeats the
/// one CPU device (the data-parallel path then runs as on a multi-GPU node, on one CPU).
pub fn device_names(kind: &str, count: usize) -> Vec<String> {
    match kind {
        "flex" => vec!["flex".to_string(); count],
        k => (0..count).map(|i| format!("{k}:{i}")).collect(),
    }
}

/// Runs the scaling table and writes `out/scaling.csv` and `out/scaling.svg`: for each count `n`,
/// the first `n` of `devices` (see [`device_names`]); `kind` labels the table.
pub fn run(
    opts: RunOptions,
    kind: &str,
    devices: &[String],
    counts: &[usize],
    steps: usize,
    out: &Path,
    log: &mut dyn FnMut(&str),
) -> Result<(Vec<ScalingRow>, String)> {
    let exp = opts.experiment;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let store = Arc::new(prepare::shards(&exp, log)?);
    let [mels, frames] = store.shape();
    let classes = store.classes();
    let train_idx = store.select(Split::Train, exp.data.period);
    // Validation only has to exist here (the table times training): a set too small to hold
    // out any recording validates on training windows.
    let mut valid_idx = store.select(Split::Valid, PeriodFilter::All);
    if valid_idx.is_empty() {
        valid_idx.clone_from(&train_idx);
    }
    valid_idx.truncate(8);
    let mut rows = Vec::new();
    for &n in counts {
        let Some(names) = devices.get(..n).map(<[String]>::to_vec) else {
            return Err(Error::Config {
                path: "scaling".into(),
                message: format!("{n} devices asked for, {} named", devices.len()),
            });
        };
        let devices = names
            .iter()
            .map(|d| silencio_infer::parse_device(d))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut t = exp.train.clone();
        t.epochs = 1;
        t.max_steps_per_epoch = steps;
        t.devices = names;
        // Enough windows for `steps` steps on every device, cycling the split.
        let need = steps * t.batch_size * n;
        let idx: Vec<usize> = train_idx.iter().copied().cycle().take(need).collect();
        let cfg = prepare::model_config(&exp, classes, mels)?;
        let model = cfg.init(&devices[0])?;
        let dir = out.join(format!("run-{n}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let t0 = Instant::now();
        fit::fit(
            FitSpec {
                train: &t,
                dir: &dir,
                resume_epoch: None,
                devices,
                on_epoch: None,
            },
            model,
            &cfg,
            WindowDataset::new(store.clone(), idx, t.secondary_weight, false),
            WindowDataset::new(store.clone(), valid_idx.clone(), 1.0, false),
            [mels, frames],
            Arc::new(Vec::new()),
        )?;
        let row = ScalingRow {
            devices: n,
            steps,
            windows: need,
            seconds: t0.elapsed().as_secs_f64(),
        };
        log(&format!(
            "{n} device(s): {:.1} s, {:.2} windows/s",
            row.seconds,
            row.throughput()
        ));
        rows.push(row);
    }
    let base = rows.first().map_or(1.0, |r| r.throughput());
    let mut csv = String::from("devices,steps,windows,seconds,windows_per_s,speedup\n");
    let mut table = format!(
        "| devices ({kind}) | steps | windows | seconds | windows/s | speed-up |\n|---|---|---|---|---|---|\n"
    );
    for r in &rows {
        let cells = [
            r.devices.to_string(),
            r.steps.to_string(),
            r.windows.to_string(),
            format!("{:.3}", r.seconds),
            format!("{:.3}", r.throughput()),
            format!("{:.3}", r.throughput() / base),
        ];
        let _ = writeln!(csv, "{}", cells.join(","));
        let _ = writeln!(table, "| {} |", cells.join(" | "));
    }
    write_atomic(&out.join("scaling.csv"), csv.as_bytes())?;
    write_atomic(&out.join("scaling.svg"), plot(&rows, kind).as_bytes())?;
    Ok((rows, table))
}

/// Throughput against device count, with the ideal linear line.
fn plot(rows: &[ScalingRow], kind: &str) -> String {
    let (w, h, pad) = (480.0, 320.0, 50.0);
    let max_n = rows.iter().map(|r| r.devices).max().unwrap_or(1) as f64;
    let base = rows.first().map_or(1.0, |r| r.throughput());
    let max_y = rows
        .iter()
        .map(|r| r.throughput())
        .fold(base * max_n, f64::max)
        .max(1e-9);
    let x = |n: f64| pad + (w - 2.0 * pad) * (n / max_n);
    let y = |v: f64| h - pad - (h - 2.0 * pad) * (v / max_y);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"{}\" y=\"20\" text-anchor=\"middle\">training throughput on {kind} (windows/s)</text>\n\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\" stroke-dasharray=\"4\"/>\n",
        w / 2.0,
        h - pad,
        w - pad,
        h - pad,
        h - pad,
        x(0.0),
        y(0.0),
        x(max_n),
        y(base * max_n),
    );
    let pts: Vec<String> = rows
        .iter()
        .map(|r| format!("{:.1},{:.1}", x(r.devices as f64), y(r.throughput())))
        .collect();
    let _ = writeln!(
        s,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>",
        pts.join(" ")
    );
    for r in rows {
        let _ = writeln!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#1f77b4\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} dev: {:.1}</text>",
            x(r.devices as f64),
            y(r.throughput()),
            x(r.devices as f64),
            y(r.throughput()) - 8.0,
            r.devices,
            r.throughput()
        );
    }
    s.push_str("</svg>\n");
    s
}
