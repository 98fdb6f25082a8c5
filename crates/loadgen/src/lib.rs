//! silencio-loadgen: a load generator for the identification API (`POST /v1/identify`).
//!
//! Three traffic shapes from the project's plan, each run at several concurrency levels:
//! - `tour`: a tour guide's 5 s clips, back to back;
//! - `power`: 1-minute uploads, back to back;
//! - `mobile`: 5 s clips with exponential think times between them, and a share of uploads
//!   streamed slowly and dropped midway (a phone losing signal).
//!
//! Closed loop: N virtual users, each waits for its answer before the next request. Open
//! loop: Poisson arrivals at `rate` per second whatever the answers, at most N outstanding.
//! Every level starts with a warm-up excluded from the statistics; the server's `/metrics` is
//! scraped after the warm-up and at the end, and the batch-size histogram diffed, so the
//! report shows how the server batched that level's traffic.
#![warn(missing_docs)]

pub mod client;
pub mod clips;
mod error;
pub mod prom;
pub mod report;
mod runner;
pub mod stats;
pub mod wav;

use std::path::PathBuf;
use std::time::Duration;

pub use clips::{Clip, ClipSet};
pub use error::{Error, Result};
pub use report::{LevelReport, Report};
pub use runner::{Progress, run, run_blocking, run_with_progress};
pub use stats::parse_duration;

/// A traffic shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Tour guide: 5 s clips, steady.
    Tour,
    /// Power user: 1-minute uploads.
    Power,
    /// Mobile: think times and uploads aborted midway.
    Mobile,
}

impl Mode {
    /// Every mode, in report order.
    pub const ALL: [Mode; 3] = [Mode::Tour, Mode::Power, Mode::Mobile];

    /// Its name in flags and reports.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tour => "tour",
            Mode::Power => "power",
            Mode::Mobile => "mobile",
        }
    }

    /// `tour`, `power`, `mobile` or `all`.
    pub fn parse_list(s: &str) -> Result<Vec<Mode>> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "all" => out.extend(Mode::ALL),
                "tour" => out.push(Mode::Tour),
                "power" => out.push(Mode::Power),
                "mobile" => out.push(Mode::Mobile),
                other => {
                    return Err(Error::Config(format!(
                        "unknown mode {other:?} (tour, power, mobile, all)"
                    )));
                }
            }
        }
        out.dedup();
        if out.is_empty() {
            return Err(Error::Config("no mode given".into()));
        }
        Ok(out)
    }
}

/// Closed or open loop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoopKind {
    /// Each virtual user waits for its answer (then thinks, in mobile mode).
    Closed,
    /// Poisson arrivals at this many requests per second.
    Open {
        /// Mean arrivals per second.
        rate: f64,
    },
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Server base URL, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// Modes to run, in order.
    pub modes: Vec<Mode>,
    /// Concurrency levels (virtual users, or outstanding cap in open loop).
    pub concurrency: Vec<usize>,
    /// Measured time per level.
    pub duration: Duration,
    /// Time per level before measuring (excluded from the statistics).
    pub warmup: Duration,
    /// Closed or open loop.
    pub loop_kind: LoopKind,
    /// Mobile: mean think time between a user's requests.
    pub think: Duration,
    /// Mobile: share of uploads aborted midway (0..=1).
    pub abort_share: f64,
    /// Own audio files instead of the embedded clips.
    pub clips: Option<PathBuf>,
    /// Seed of every random choice.
    pub seed: u64,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How long to wait for `GET /readyz` to answer 200 before the first level.
    pub wait_ready: Duration,
    /// The server's API key: with it, tour and mobile users tag their requests with a session
    /// (as the guides' app does; the server takes a session only with the key); without it,
    /// they send none.
    pub api_key: Option<String>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080".into(),
            modes: Mode::ALL.to_vec(),
            concurrency: vec![1, 8, 16, 32],
            duration: Duration::from_secs(20),
            warmup: Duration::from_secs(3),
            loop_kind: LoopKind::Closed,
            think: Duration::from_millis(500),
            abort_share: 0.1,
            clips: None,
            seed: 0,
            timeout: Duration::from_secs(30),
            wait_ready: Duration::from_secs(60),
            api_key: None,
        }
    }
}

impl LoadConfig {
    /// Reject settings that cannot give a meaningful run.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| Error::Config(format!("--url {:?}: {e}", self.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return bad(format!("--url {:?} must be http(s)", self.url));
        }
        if self.modes.is_empty() {
            return bad("no mode given".into());
        }
        if self.concurrency.is_empty() || self.concurrency.contains(&0) {
            return bad("concurrency levels must be >= 1".into());
        }
        if self.concurrency.iter().any(|&c| c > 10_000) {
            return bad("concurrency levels above 10000 are not supported".into());
        }
        if self.duration.is_zero() {
            return bad("--duration must be > 0".into());
        }
        if self.timeout.is_zero() {
            return bad("--timeout must be > 0".into());
        }
        if !(0.0..=1.0).contains(&self.abort_share) {
            return bad(format!(
                "--abort-share {} must lie in 0..=1",
                self.abort_share
            ));
        }
        if let LoopKind::Open { rate } = self.loop_kind
            && !(rate.is_finite() && rate > 0.0 && rate <= 100_000.0)
        {
            return bad(format!("--rate {rate} must lie in (0, 100000]"));
        }
        Ok(())
    }

    /// Parse a `1,8,16,32` concurrency list.
    pub fn parse_concurrency(s: &str) -> Result<Vec<usize>> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<usize>()
                    .map_err(|_| Error::Config(format!("bad concurrency {p:?} in {s:?}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_levels_parse() {
        assert_eq!(Mode::parse_list("all").unwrap(), Mode::ALL.to_vec());
        assert_eq!(
            Mode::parse_list("power, mobile").unwrap(),
            vec![Mode::Power, Mode::Mobile]
        );
        assert_eq!(
            Mode::parse_list("walk").unwrap_err().kind(),
            "invalid_config"
        );
        assert_eq!(
            LoadConfig::parse_concurrency("1,8, 16,32").unwrap(),
            vec![1, 8, 16, 32]
        );
        assert!(LoadConfig::parse_concurrency("1,x").is_err());
    }

    #[test]
    fn validation_rejects_unusable_settings() {
        assert!(LoadConfig::default().validate().is_ok());
        let bad = [
            LoadConfig {
                url: "not a url".into(),
                ..Default::default()
            },
            LoadConfig {
                concurrency: vec![1, 0],
                ..Default::default()
            },
            LoadConfig {
                abort_share: 1.5,
                ..Default::default()
            },
            LoadConfig {
                duration: Duration::ZERO,
                ..Default::default()
            },
            LoadConfig {
                loop_kind: LoopKind::Open { rate: f64::NAN },
                ..Default::default()
            },
        ];
        for c in bad {
            assert_eq!(c.validate().unwrap_err().kind(), "invalid_config", "{c:?}");
        }
    }
}
