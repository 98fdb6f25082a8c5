//! How long-running commands show progress: an indicatif bar (rate, ETA) on a terminal, one JSON
//! object per line on stdout otherwise (for logs and for programs that follow the run).

use std::io::Write;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use silencio_data::{EtlEvent, EtlOutcome};

/// Progress of `silencio etl`.
pub struct EtlProgress {
    mode: Mode,
    started: Instant,
    /// Clips already covered when this run began (not counted in the rate).
    resumed_clips: usize,
}

enum Mode {
    Bar(ProgressBar),
    Json,
    Quiet,
}

impl EtlProgress {
    /// `mode`: `bar`, `json` or `none`.
    pub fn new(mode: &str) -> Self {
        let mode = match mode {
            "bar" => {
                let bar = ProgressBar::new(0);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:30}] {pos}/{len} clips {per_sec} ETA {eta} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                Mode::Bar(bar)
            }
            "json" => Mode::Json,
            _ => Mode::Quiet,
        };
        Self {
            mode,
            started: Instant::now(),
            resumed_clips: 0,
        }
    }

    /// Shows one event.
    pub fn event(&mut self, e: &EtlEvent) {
        if let EtlEvent::Started { done_clips, .. } = e {
            self.resumed_clips = *done_clips;
        }
        match &self.mode {
            Mode::Bar(bar) => match e {
                EtlEvent::Started {
                    clips,
                    done_clips,
                    resumed_shards,
                } => {
                    bar.set_length(*clips as u64);
                    bar.set_position(*done_clips as u64);
                    bar.reset_eta();
                    if *resumed_shards > 0 {
                        bar.println(format!("resuming after {resumed_shards} complete shard(s)"));
                    }
                }
                EtlEvent::Clip { done_clips, .. } => bar.set_position(*done_clips as u64),
                EtlEvent::Shard { index, .. } => bar.set_message(format!("shard {index} written")),
                EtlEvent::Finished { .. } => bar.finish_and_clear(),
            },
            Mode::Json => {
                let elapsed = self.started.elapsed().as_secs_f64();
                let mut v = serde_json::to_value(e).unwrap_or_default();
                if let (
                    serde_json::Value::Object(m),
                    EtlEvent::Clip {
                        done_clips, clips, ..
                    },
                ) = (&mut v, e)
                {
                    let fresh = done_clips.saturating_sub(self.resumed_clips) as f64;
                    let rate = if elapsed > 0.0 { fresh / elapsed } else { 0.0 };
                    m.insert("clips_per_s".into(), rate.into());
                    let left = clips.saturating_sub(*done_clips) as f64;
                    let eta = if rate > 0.0 { left / rate } else { 0.0 };
                    m.insert("eta_s".into(), eta.into());
                }
                if let serde_json::Value::Object(m) = &mut v {
                    m.insert("elapsed_s".into(), elapsed.into());
                }
                json_line(&v);
            }
            Mode::Quiet => {}
        }
    }

    /// Prints the run's summary (stderr), and as a last JSON line in JSON mode.
    pub fn finish(&self, r: &EtlOutcome, out: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        let t = &r.manifest.totals;
        let per_s = |x: f64| if elapsed > 0.0 { x / elapsed } else { 0.0 };
        if let Mode::Json = self.mode {
            json_line(&serde_json::json!({
                "event": "summary",
                "windows": t.windows,
                "shards": t.shards,
                "clips": t.clips,
                "skipped_clips": t.skipped_clips,
                "unknown_labels": r.manifest.rows.unknown_labels.len(),
                "resumed_shards": r.resumed_shards,
                "new_shards": r.new_shards,
                "already_complete": r.already_complete,
                "elapsed_s": elapsed,
                "decoded_audio_s": r.decoded_audio_s,
                "audio_s_per_s": per_s(r.decoded_audio_s),
                "windows_per_s": per_s(r.new_windows as f64),
            }));
        }
        let rows = &r.manifest.rows;
        let mut s = String::new();
        if r.already_complete {
            s.push_str("already complete: nothing to do\n");
        }
        s.push_str(&format!(
            "{} windows from {} clips in {} shards ({:.1} MB); train {} / valid {} windows\n",
            t.windows,
            t.clips,
            t.shards,
            t.shard_bytes as f64 / 1e6,
            t.train_windows,
            t.valid_windows,
        ));
        if !r.already_complete {
            s.push_str(&format!(
                "this run: {} new shard(s), {} resumed; {:.0} s of audio in {elapsed:.1} s \
                 ({:.0}x real time, {:.1} windows/s)\n",
                r.new_shards,
                r.resumed_shards,
                r.decoded_audio_s,
                per_s(r.decoded_audio_s),
                per_s(r.new_windows as f64),
            ));
        }
        s.push_str(&format!(
            "skipped: {} clip(s), {} malformed row(s), {} unknown label(s), {} duplicate row(s)\n",
            t.skipped_clips,
            rows.malformed_rows.len(),
            rows.unknown_labels.len(),
            rows.duplicate_rows.len(),
        ));
        for c in r.manifest.skipped_clips.iter().take(10) {
            s.push_str(&format!(
                "  line {}: {} [{}] {}\n",
                c.line, c.filename, c.kind, c.detail
            ));
        }
        for u in rows.unknown_labels.iter().take(10) {
            s.push_str(&format!(
                "  line {}: unknown {} label {:?}\n",
                u.line, u.field, u.label
            ));
        }
        s.push_str(&format!(
            "manifest: {}/{}\n",
            out.trim_end_matches('/'),
            silencio_data::etl::MANIFEST
        ));
        eprint!("{s}");
    }
}

fn json_line(v: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed pipe (the reader went away) must not stop the run.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}
