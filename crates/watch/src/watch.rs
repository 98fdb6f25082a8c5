//! The consumer: a watched folder in, one BirdCLEF submission CSV per input out, exactly once.
//!
//! One scheduler thread (the caller's) owns the [`Ledger`] and decides what runs; worker
//! threads score files and write outputs. The scheduler learns of files from file-system
//! events and from sweeps of the folder (at start-up and periodically, since events can be
//! missed or overflow). At most `max_in_flight` files are queued or being scored, so memory
//! stays bounded however many files wait.
//!
//! # Which files, and when (the completeness protocol)
//! - Work is keyed by the full file name: `x.ogg` and `x.wav` are two inputs, with two ledger
//!   entries and two outputs, `x.ogg.csv` and `x.wav.csv` (always `<file name>.csv`, whatever
//!   else the folder holds, so the name never depends on arrival order). The CSV's BirdCLEF
//!   row ids are still `<stem>_5`, `<stem>_10`, ….
//! - Only regular files with an audio extension are inputs. Temporary names (a leading `.`,
//!   a trailing `~`, `.part`, `.partial`, `.tmp`, `.crdownload`, `.swp`) are ignored.
//!   Symbolic links and anything else that is not a regular file are skipped (reported once,
//!   never opened, hashed or moved); inputs are opened with `O_NOFOLLOW` and checked to be the
//!   regular file that was looked at, so a name swapped for a link in between is refused too.
//! - A file **renamed into the folder** is complete: it is taken at once. This is how a
//!   producer should publish (write `.x.ogg.part`, then rename it to `x.ogg`).
//! - A file written in place (a copy by a tool that cannot rename) is taken once its size and
//!   modification time have not changed for the **quiet period** (`quiet_period`, default
//!   30 s). It is long because a copy can stall for seconds (a USB or network hiccup, a
//!   paused transfer) and a stalled copy looks complete; field files are minutes long, so
//!   half a minute of latency costs nothing, while taking a half-written file costs a wrong
//!   output or a quarantine.
//! - A file that changes while it is read (size, modification time or inode differ after
//!   scoring from when it was opened) counts for nothing, neither output nor quarantine: it
//!   waits for the quiet period again. So a decode failure that looks like truncation on a
//!   file still being written is retried, not quarantined.
//! - A file that changes after it was scored (size or modification time unlike its ledger
//!   entry, and different SHA-256) is scored again: its output is replaced atomically (temp
//!   file + rename) and a new ledger line records it (the ledger is append-only; the latest
//!   line per file name wins). Same bytes with a new modification time only update the ledger.
//!   New content that cannot be read is quarantined and its earlier output removed.
//! - A file is never read whole into memory: it is hashed as a stream, its duration is taken
//!   from its header (and, for WAV, its size) before anything is decoded, and a recording
//!   over `max_duration_s` is quarantined (`too_long`) without being decoded or hashed; the
//!   decoder itself stops at the same limit.
//!
//! # Exactly once across crashes
//! An output is renamed into place (complete) before its ledger line is appended and
//! fsync'd. A crash between the two leaves an output without a ledger line; on restart the
//! worker finds that output, checks it is a complete submission for this input and this
//! model's species, newer than the input, and adopts it (the ledger line says `recovered`)
//! instead of writing a second one. Temp files a crash left in the output folder are removed
//! at start-up. An exclusive lock on the ledger keeps two consumers off the same output
//! folder. Ledgers written before outputs were named `<file name>.csv` (they named them
//! `<stem>.csv`) load as they are: their inputs stay done; one re-scored later gets the new
//! name and its old output is removed.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read as _, Seek as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};
use silencio_eval::submission;

use crate::ledger::{Ledger, LedgerEntry, Status};
use crate::scorer::{Scorer, Scores};
use crate::{Error, Result, is_audio_candidate, sync_dir, unix_now, write_atomic};

/// How long a file not renamed into the folder must keep its size and modification time to
/// be taken, unless configured (see the module documentation for why so long).
pub const DEFAULT_QUIET_PERIOD: Duration = Duration::from_secs(30);

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The watched folder.
    pub input: PathBuf,
    /// Where CSVs and the ledger go.
    pub output: PathBuf,
    /// Where unreadable inputs go (default `<output>/quarantine`).
    pub quarantine: Option<PathBuf>,
    /// Most files queued or being scored at once.
    pub max_in_flight: usize,
    /// Process what is there (and what arrives meanwhile), then return.
    pub once: bool,
    /// Time between sweeps of the folder.
    pub sweep_every: Duration,
    /// How long a file not renamed into place must keep its size and mtime to be taken (the
    /// quiet period of the completeness protocol).
    pub quiet_period: Duration,
    /// Longest recording accepted, in seconds: longer ones are quarantined (`too_long`),
    /// judged from the header before decoding.
    pub max_duration_s: f64,
    /// Wait before retrying a file after a transient failure (server down).
    pub retry_after: Duration,
    /// Turned true from outside for a graceful stop: files in flight finish, nothing else
    /// starts.
    pub stop: Arc<AtomicBool>,
}

impl WatchConfig {
    /// Settings with the defaults: 2 in flight, sweeps every 10 s, a 30 s quiet period, one
    /// hour at most per recording, 5 s retry.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            quarantine: None,
            max_in_flight: 2,
            once: false,
            sweep_every: Duration::from_secs(10),
            quiet_period: DEFAULT_QUIET_PERIOD,
            max_duration_s: silencio_audio::DecodeOptions::default().max_duration_s,
            retry_after: Duration::from_secs(5),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    fn quarantine_dir(&self) -> PathBuf {
        self.quarantine
            .clone()
            .unwrap_or_else(|| self.output.join("quarantine"))
    }
}

/// Running totals.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Inputs scored (including recovered ones).
    pub files: usize,
    /// Of those, outputs adopted after a crash.
    pub recovered: usize,
    /// Inputs quarantined.
    pub quarantined: usize,
    /// Windows scored.
    pub windows: usize,
    /// Seconds of audio scored.
    pub audio_s: f64,
    /// Worker seconds spent scoring and writing.
    pub busy_s: f64,
    /// Seconds since the consumer started.
    pub elapsed_s: f64,
}

impl Stats {
    /// Inputs scored per minute of wall time.
    pub fn files_per_minute(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            (self.files - self.recovered) as f64 * 60.0 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// Worker time over audio time (below 1: faster than real time).
    pub fn real_time_factor(&self) -> f64 {
        if self.audio_s > 0.0 {
            self.busy_s / self.audio_s
        } else {
            0.0
        }
    }
}

/// What the consumer reports as it goes.
#[derive(Debug, Clone)]
pub enum WatchEvent {
    /// Set up: watching, with this many inputs already recorded in the ledger.
    Started {
        /// Scorer description.
        engine: String,
        /// Ledger lines read.
        ledger_lines: usize,
        /// Temp files a crash had left, removed.
        cleaned: usize,
    },
    /// An input scored (or its output adopted after a crash).
    Done {
        /// Input file name.
        file: String,
        /// The CSV.
        output: PathBuf,
        /// Windows in it.
        windows: usize,
        /// Seconds of audio.
        audio_s: f64,
        /// Seconds spent on it.
        seconds: f64,
        /// Adopted after a crash rather than computed.
        recovered: bool,
        /// Totals so far.
        stats: Stats,
    },
    /// An input moved to quarantine.
    Quarantined {
        /// Input file name.
        file: String,
        /// Error kind.
        kind: String,
        /// Error message.
        message: String,
        /// Totals so far.
        stats: Stats,
    },
    /// A transient failure; the input is tried again later.
    Retrying {
        /// Input file name.
        file: String,
        /// What failed.
        message: String,
    },
    /// Not an input: a symbolic link or something else that is not a regular file. Reported
    /// once per name; never opened, hashed or moved.
    Skipped {
        /// Its name in the input folder.
        file: String,
        /// What it is.
        reason: String,
    },
    /// Stopped (all done with `once`, or asked to stop).
    Stopped {
        /// Final totals.
        stats: Stats,
    },
}

/// The consumer. See the module documentation.
#[derive(Debug)]
pub struct Watcher {
    cfg: WatchConfig,
    engine: Scorer,
}

/// A file to score.
#[derive(Debug, Clone)]
struct Job {
    path: PathBuf,
    name: String,
    /// The ledger's latest entry for this name (content replaced since).
    prev: Option<LedgerEntry>,
}

#[derive(Debug)]
enum Outcome {
    Done {
        entry: LedgerEntry,
        audio_s: f64,
        seconds: f64,
    },
    Quarantined {
        entry: LedgerEntry,
        message: String,
    },
    /// Same content as recorded (only the mtime moved).
    Unchanged(LedgerEntry),
    /// The file changed while it was read: it waits for the quiet period again.
    Changed,
    /// Not a regular file (a name swapped for a link after the scheduler looked).
    Skipped(String),
    Vanished,
    Retry(String),
    Fatal(Error),
}

enum Msg {
    Fs(notify::Result<notify::Event>),
    Finished(Box<(Job, Outcome)>),
}

/// What the scheduler knows of a file it may take.
#[derive(Debug)]
struct Pending {
    renamed: bool,
    seen: Option<(u64, Option<SystemTime>)>,
    since: Instant,
    not_before: Instant,
}

/// Paths and limits shared by the workers.
#[derive(Debug)]
struct Dirs {
    output: PathBuf,
    quarantine: PathBuf,
    max_duration_s: f64,
}

impl Watcher {
    /// A consumer of `cfg.input` scoring with `engine`.
    pub fn new(cfg: WatchConfig, engine: Scorer) -> Result<Self> {
        if cfg.max_duration_s.is_nan() || cfg.max_duration_s <= 0.0 {
            return Err(Error::InvalidOptions("max duration must be > 0".into()));
        }
        if cfg.max_in_flight == 0 {
            return Err(Error::InvalidOptions("max in flight must be >= 1".into()));
        }
        if !cfg.input.is_dir() {
            return Err(Error::InvalidOptions(format!(
                "{} is not a directory",
                cfg.input.display()
            )));
        }
        Ok(Self { cfg, engine })
    }

    /// Runs until all is done (`once`) or `stop` turns true; returns the totals.
    pub fn run(self, on_event: &mut dyn FnMut(&WatchEvent)) -> Result<Stats> {
        let started = Instant::now();
        let Watcher { cfg, engine } = self;
        let quarantine = cfg.quarantine_dir();
        for d in [&cfg.output, &quarantine] {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let canon = |p: &Path| p.canonicalize().map_err(|e| Error::io(p, e));
        if canon(&cfg.input)? == canon(&cfg.output)? || canon(&cfg.input)? == canon(&quarantine)? {
            return Err(Error::InvalidOptions(
                "the input folder must differ from the output and quarantine folders".into(),
            ));
        }
        let mut ledger = Ledger::open(&cfg.output.join("ledger.jsonl"))?;
        // Only now, holding the ledger's lock, are leftovers surely nobody else's.
        let cleaned = clean_temporaries(&cfg.output)? + clean_temporaries(&quarantine)?;
        on_event(&WatchEvent::Started {
            engine: engine.describe(),
            ledger_lines: ledger.lines(),
            cleaned,
        });
        let dirs = Arc::new(Dirs {
            output: cfg.output.clone(),
            quarantine,
            max_duration_s: cfg.max_duration_s,
        });

        let (tx, rx) = std::sync::mpsc::channel::<Msg>();
        let fs_tx = tx.clone();
        let mut fs_watcher = notify::recommended_watcher(move |ev| {
            let _ = fs_tx.send(Msg::Fs(ev));
        })
        .map_err(|source| Error::Watch {
            path: cfg.input.clone(),
            source,
        })?;
        fs_watcher
            .watch(&cfg.input, RecursiveMode::NonRecursive)
            .map_err(|source| Error::Watch {
                path: cfg.input.clone(),
                source,
            })?;

        let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(cfg.max_in_flight);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let workers: Vec<_> = engine
            .into_workers(cfg.max_in_flight)
            .into_iter()
            .enumerate()
            .map(|(i, engine)| {
                let (rx, tx, dirs) = (job_rx.clone(), tx.clone(), dirs.clone());
                std::thread::Builder::new()
                    .name(format!("stream-worker-{i}"))
                    .spawn(move || worker(&engine, &rx, &tx, &dirs))
                    .map_err(|e| Error::Worker(e.to_string()))
            })
            .collect::<Result<_>>()?;
        drop(tx);

        let mut s = Scheduler {
            cfg: &cfg,
            ledger: &mut ledger,
            pending: HashMap::new(),
            in_flight: HashMap::new(),
            skipped: HashSet::new(),
            stats: Stats::default(),
            started,
            job_tx: Some(job_tx),
        };
        let result = s.run(&rx, on_event);
        // Graceful: no new work; what is in flight finishes and is recorded.
        s.job_tx = None;
        let drained = s.drain(&rx, on_event);
        drop(fs_watcher);
        for w in workers {
            if w.join().is_err() {
                return Err(Error::Worker("a worker thread panicked".into()));
            }
        }
        result?;
        drained?;
        s.stats.elapsed_s = started.elapsed().as_secs_f64();
        on_event(&WatchEvent::Stopped {
            stats: s.stats.clone(),
        });
        Ok(s.stats)
    }
}

struct Scheduler<'a> {
    cfg: &'a WatchConfig,
    ledger: &'a mut Ledger,
    pending: HashMap<PathBuf, Pending>,
    in_flight: HashMap<PathBuf, Instant>,
    /// Entries that are not regular files, already reported.
    skipped: HashSet<PathBuf>,
    stats: Stats,
    started: Instant,
    job_tx: Option<SyncSender<Job>>,
}

impl Scheduler<'_> {
    fn run(&mut self, rx: &Receiver<Msg>, on_event: &mut dyn FnMut(&WatchEvent)) -> Result<()> {
        self.sweep();
        let mut last_sweep = Instant::now();
        loop {
            if self.cfg.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => self.handle(m, on_event)?,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Error::Worker("every worker stopped".into()));
                }
            }
            while let Ok(m) = rx.try_recv() {
                self.handle(m, on_event)?;
            }
            if last_sweep.elapsed() >= self.cfg.sweep_every {
                self.sweep();
                last_sweep = Instant::now();
            }
            self.dispatch(on_event)?;
            metrics::gauge!("silencio_watch_pending").set(self.pending.len() as f64);
            metrics::gauge!("silencio_watch_in_flight").set(self.in_flight.len() as f64);
            if self.cfg.once && self.pending.is_empty() && self.in_flight.is_empty() {
                return Ok(());
            }
        }
    }

    /// Waits for the files in flight and records them.
    fn drain(&mut self, rx: &Receiver<Msg>, on_event: &mut dyn FnMut(&WatchEvent)) -> Result<()> {
        let mut first_error = None;
        while !self.in_flight.is_empty() {
            match rx.recv() {
                Ok(Msg::Finished(b)) => {
                    if let Err(e) = self.finished(*b, on_event) {
                        first_error.get_or_insert(e);
                    }
                }
                Ok(Msg::Fs(_)) => {}
                Err(_) => break,
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn handle(&mut self, m: Msg, on_event: &mut dyn FnMut(&WatchEvent)) -> Result<()> {
        match m {
            Msg::Fs(Ok(ev)) => {
                if matches!(ev.kind, EventKind::Remove(_)) {
                    for p in &ev.paths {
                        self.pending.remove(p);
                        self.skipped.remove(p);
                    }
                    return Ok(());
                }
                // Written to: whatever it was renamed from, it is being written now, so it
                // waits for the quiet period.
                let written = matches!(
                    ev.kind,
                    EventKind::Create(_)
                        | EventKind::Modify(ModifyKind::Data(_))
                        | EventKind::Modify(ModifyKind::Any)
                );
                let renamed_to = match ev.kind {
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)) => ev.paths.first(),
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => ev.paths.last(),
                    _ => None,
                };
                for p in &ev.paths {
                    // The watch is not recursive, so every path is an entry of the input
                    // folder; rebuilt from --in so that it matches the sweep's spelling.
                    if let Some(name) = p.file_name() {
                        self.note(self.cfg.input.join(name), Some(p) == renamed_to, written);
                    }
                }
                Ok(())
            }
            // An overflowed or failed watch: the next sweep finds what was missed.
            Msg::Fs(Err(_)) => {
                self.sweep();
                Ok(())
            }
            Msg::Finished(b) => self.finished(*b, on_event),
        }
    }

    fn note(&mut self, path: PathBuf, renamed: bool, written: bool) {
        if !is_audio_candidate(&path) || self.in_flight.contains_key(&path) {
            return;
        }
        let now = Instant::now();
        let p = self.pending.entry(path).or_insert(Pending {
            renamed: false,
            seen: None,
            since: now,
            not_before: now,
        });
        if written {
            p.renamed = false;
        }
        p.renamed |= renamed;
    }

    fn sweep(&mut self) {
        let Ok(rd) = std::fs::read_dir(&self.cfg.input) else {
            return;
        };
        for e in rd.flatten() {
            self.note(e.path(), false, false);
        }
    }

    /// Starts every ready file while there is room.
    fn dispatch(&mut self, on_event: &mut dyn FnMut(&WatchEvent)) -> Result<()> {
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut drop_list = Vec::new();
        let mut paths: Vec<&PathBuf> = self.pending.keys().collect();
        // Oldest names first: field files are named by time.
        paths.sort();
        let paths: Vec<PathBuf> = paths.into_iter().cloned().collect();
        for path in paths {
            if self.in_flight.len() + ready.len() >= self.cfg.max_in_flight {
                break;
            }
            let Some(p) = self.pending.get_mut(&path) else {
                continue;
            };
            // Never followed: a link is looked at as a link.
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(_) => {
                    drop_list.push(path);
                    continue;
                }
            };
            if !meta.file_type().is_file() {
                if self.skipped.insert(path.clone()) {
                    on_event(&WatchEvent::Skipped {
                        file: file_name(&path),
                        reason: not_a_file(&meta.file_type()),
                    });
                }
                drop_list.push(path);
                continue;
            }
            self.skipped.remove(&path);
            let sig = (meta.len(), meta.modified().ok());
            let name = file_name(&path);
            if let Some(e) = self.ledger.get(&name)
                && e.size == sig.0
                && e.mtime_ns.is_some()
                && e.mtime_ns == sig.1.and_then(unix_ns)
            {
                drop_list.push(path);
                continue;
            }
            if now < p.not_before {
                continue;
            }
            let settled =
                p.seen == Some(sig) && now.duration_since(p.since) >= self.cfg.quiet_period;
            if p.seen != Some(sig) {
                p.seen = Some(sig);
                p.since = now;
            }
            if p.renamed || settled {
                ready.push(path);
            }
        }
        for p in drop_list {
            self.pending.remove(&p);
        }
        for path in ready {
            self.pending.remove(&path);
            let name = file_name(&path);
            let job = Job {
                prev: self.ledger.get(&name).cloned(),
                path: path.clone(),
                name,
            };
            let Some(tx) = &self.job_tx else {
                return Ok(());
            };
            tx.send(job)
                .map_err(|_| Error::Worker("every worker stopped".into()))?;
            self.in_flight.insert(path, Instant::now());
        }
        Ok(())
    }

    fn finished(
        &mut self,
        (job, outcome): (Job, Outcome),
        on_event: &mut dyn FnMut(&WatchEvent),
    ) -> Result<()> {
        self.in_flight.remove(&job.path);
        self.stats.elapsed_s = self.started.elapsed().as_secs_f64();
        match outcome {
            Outcome::Done {
                entry,
                audio_s,
                seconds,
            } => {
                let windows = entry.windows.unwrap_or(0);
                let recovered = entry.recovered;
                let output = self.cfg.output.join(&entry.output);
                let new_output = entry.output.clone();
                self.ledger.append(entry)?;
                self.remove_earlier_output(&job, Some(&new_output));
                self.stats.files += 1;
                self.stats.windows += windows;
                self.stats.audio_s += audio_s;
                if recovered {
                    self.stats.recovered += 1;
                } else {
                    self.stats.busy_s += seconds;
                }
                let status = if recovered { "recovered" } else { "done" };
                metrics::counter!("silencio_watch_files_total", "status" => status).increment(1);
                metrics::counter!("silencio_watch_windows_total").increment(windows as u64);
                metrics::counter!("silencio_watch_audio_seconds_total").increment(audio_s as u64);
                metrics::histogram!("silencio_watch_file_seconds").record(seconds);
                on_event(&WatchEvent::Done {
                    file: job.name,
                    output,
                    windows,
                    audio_s,
                    seconds,
                    recovered,
                    stats: self.stats.clone(),
                });
            }
            Outcome::Quarantined { entry, message } => {
                let kind = entry.kind.clone().unwrap_or_default();
                self.ledger.append(entry)?;
                // New content that cannot be read: the scores of the old content go.
                self.remove_earlier_output(&job, None);
                self.stats.quarantined += 1;
                metrics::counter!("silencio_watch_files_total", "status" => "quarantined")
                    .increment(1);
                on_event(&WatchEvent::Quarantined {
                    file: job.name,
                    kind,
                    message,
                    stats: self.stats.clone(),
                });
            }
            Outcome::Unchanged(entry) => self.ledger.append(entry)?,
            Outcome::Vanished => {}
            Outcome::Changed => {
                let now = Instant::now();
                self.pending.insert(
                    job.path,
                    Pending {
                        renamed: false,
                        seen: None,
                        since: now,
                        not_before: now,
                    },
                );
                on_event(&WatchEvent::Retrying {
                    file: job.name,
                    message: "it changed while it was read; waiting for the quiet period".into(),
                });
            }
            Outcome::Skipped(reason) => {
                if self.skipped.insert(job.path) {
                    on_event(&WatchEvent::Skipped {
                        file: job.name,
                        reason,
                    });
                }
            }
            Outcome::Retry(message) => {
                metrics::counter!("silencio_watch_retries_total").increment(1);
                let now = Instant::now();
                self.pending.insert(
                    job.path,
                    Pending {
                        renamed: true,
                        seen: None,
                        since: now,
                        not_before: now + self.cfg.retry_after,
                    },
                );
                on_event(&WatchEvent::Retrying {
                    file: job.name,
                    message,
                });
            }
            Outcome::Fatal(e) => return Err(e),
        }
        Ok(())
    }

    /// Removes the output of `job`'s previous ledger entry when it is not `keep`: a legacy
    /// `<stem>.csv` after a re-score, or the scores of content since replaced by unreadable
    /// bytes. Best effort, after the new ledger line is durable.
    fn remove_earlier_output(&self, job: &Job, keep: Option<&str>) {
        let Some(prev) = &job.prev else {
            return;
        };
        let simple = Path::new(&prev.output).components().count() == 1;
        if prev.status == Status::Done && simple && keep != Some(prev.output.as_str()) {
            let _ = std::fs::remove_file(self.cfg.output.join(&prev.output));
        }
    }
}

fn worker(engine: &Scorer, rx: &Mutex<Receiver<Job>>, tx: &Sender<Msg>, dirs: &Dirs) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else {
            return;
        };
        let outcome = process(engine, &job, dirs);
        if tx.send(Msg::Finished(Box::new((job, outcome)))).is_err() {
            return;
        }
    }
}

/// The file's identity as read: digest (empty when it was not read), size, mtime.
struct Read {
    sha256: String,
    size: u64,
    mtime_ns: Option<u128>,
}

/// What tells a file apart from its next version: size, mtime, and which file it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sig {
    size: u64,
    mtime_ns: Option<u128>,
    dev: u64,
    ino: u64,
}

impl Sig {
    fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            size: m.len(),
            mtime_ns: m.modified().ok().and_then(unix_ns),
            dev: m.dev(),
            ino: m.ino(),
        }
    }
}

/// The output of input `name`: `<name>.csv`, whatever else the folder holds.
pub fn output_name(name: &str) -> String {
    format!("{name}.csv")
}

fn process(engine: &Scorer, job: &Job, dirs: &Dirs) -> Outcome {
    let t = Instant::now();
    let file = match open_input(&job.path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Outcome::Vanished,
        Err(e) => {
            if let Ok(m) = std::fs::symlink_metadata(&job.path)
                && !m.file_type().is_file()
            {
                return Outcome::Skipped(not_a_file(&m.file_type()));
            }
            // Unreadable (permissions, I/O error): quarantine what can be moved.
            return quarantine(job, dirs, None, &Error::io(&job.path, e));
        }
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return quarantine(job, dirs, None, &Error::io(&job.path, e)),
    };
    if !meta.file_type().is_file() {
        return Outcome::Skipped(not_a_file(&meta.file_type()));
    }
    let before = Sig::of(&meta);
    // The name must still be this very file (not a link or another file swapped in).
    match std::fs::symlink_metadata(&job.path) {
        Ok(m) if Sig::of(&m) == before => {}
        Ok(m) if !m.file_type().is_file() => {
            return Outcome::Skipped(not_a_file(&m.file_type()));
        }
        _ => return Outcome::Changed,
    }
    let mut read = Read {
        sha256: String::new(),
        size: before.size,
        mtime_ns: before.mtime_ns,
    };
    // Too long? Judged from the header (and a WAV's size) before anything is decoded.
    if let Some(seconds) = header_duration(&file, before.size)
        && seconds > dirs.max_duration_s + 1.0
    {
        let e = Error::Audio(silencio_audio::Error::TooLong {
            max_s: dirs.max_duration_s,
        });
        let message = format!("{e}: its header says {seconds:.0} s");
        return quarantine_as(job, dirs, Some(&read), &e.quarantine_kind(), &message);
    }
    read.sha256 = match sha256_of(&file) {
        Ok(h) => h,
        Err(e) => return quarantine(job, dirs, Some(&read), &Error::io(&job.path, e)),
    };
    let entry = |status, output: String| LedgerEntry {
        file: job.name.clone(),
        sha256: read.sha256.clone(),
        size: read.size,
        mtime_ns: read.mtime_ns,
        status,
        output,
        windows: None,
        model_version: None,
        kind: None,
        recovered: false,
        at: unix_now(),
    };
    if let Some(prev) = &job.prev
        && prev.sha256 == read.sha256
    {
        // Same bytes, new mtime: recorded, so that the next sweep does not hash it again.
        return Outcome::Unchanged(LedgerEntry {
            size: read.size,
            mtime_ns: read.mtime_ns,
            at: unix_now(),
            ..prev.clone()
        });
    }
    let stem = stem_of(&job.name);
    let csv_name = output_name(&job.name);
    let csv = dirs.output.join(&csv_name);
    if job.prev.is_none()
        && let Some(windows) = complete_output(&csv, &stem, engine, before.mtime_ns)
    {
        // A crash came between this output's rename and its ledger line: adopt it.
        return Outcome::Done {
            entry: LedgerEntry {
                windows: Some(windows),
                recovered: true,
                ..entry(Status::Done, csv_name)
            },
            audio_s: windows as f64 * 5.0,
            seconds: t.elapsed().as_secs_f64(),
        };
    }
    let scores = crate::ogg::check_complete_reader(&mut &file, &job.path)
        .and_then(|()| engine.score_file(&file, &job.path, &job.name))
        .and_then(|s| {
            if s.rows.is_empty() {
                Err(Error::NoWindows(format!(
                    "{:.2} s of audio holds no full window",
                    s.audio_s
                )))
            } else {
                Ok(s)
            }
        });
    // Scores, or a failure, count only for the file as it was opened: one still being
    // written (a stalled copy, cut off in the middle) waits for the quiet period again.
    let now_open = file.metadata().ok().map(|m| Sig::of(&m));
    let now_named = std::fs::symlink_metadata(&job.path)
        .ok()
        .map(|m| Sig::of(&m));
    if now_open != Some(before) || now_named != Some(before) {
        return Outcome::Changed;
    }
    let scores = match scores {
        Ok(s) => s,
        Err(e) if e.is_bad_input() => return quarantine(job, dirs, Some(&read), &e),
        Err(e @ Error::Server { .. }) => return Outcome::Retry(e.to_string()),
        Err(e) => return Outcome::Fatal(e),
    };
    if let Err(e) = write_csv(&csv, &stem, &scores).and_then(|()| sync_dir(&dirs.output)) {
        return Outcome::Fatal(e);
    }
    Outcome::Done {
        entry: LedgerEntry {
            windows: Some(scores.rows.len()),
            model_version: Some(scores.model_version.clone()),
            ..entry(Status::Done, csv_name)
        },
        audio_s: scores.audio_s,
        seconds: t.elapsed().as_secs_f64(),
    }
}

/// `O_NOFOLLOW` (a link is refused, not followed) and `O_NONBLOCK` (a FIFO does not block
/// the open), by platform: std has no names for them and this crate does not link `libc`.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "powerpc64"
    )
))]
const OPEN_FLAGS: i32 = 0o100000 | 0o4000;
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "riscv64",
        target_arch = "loongarch64",
        target_arch = "s390x"
    )
))]
const OPEN_FLAGS: i32 = 0o400000 | 0o4000;
#[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
const OPEN_FLAGS: i32 = 0x0100 | 0x0004;
/// Elsewhere: no flags; the inode check after opening still refuses a swapped-in link.
#[cfg(not(any(
    all(
        target_os = "linux",
        any(
            target_arch = "arm",
            target_arch = "aarch64",
            target_arch = "powerpc64",
            target_arch = "x86",
            target_arch = "x86_64",
            target_arch = "riscv64",
            target_arch = "loongarch64",
            target_arch = "s390x"
        )
    ),
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd"
)))]
const OPEN_FLAGS: i32 = 0;

/// Opens an input for reading without following a link.
fn open_input(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(OPEN_FLAGS)
        .open(path)
}

fn not_a_file(t: &std::fs::FileType) -> String {
    use std::os::unix::fs::FileTypeExt;
    let what = if t.is_symlink() {
        "a symbolic link (never followed)"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    };
    what.to_string()
}

/// SHA-256 of the file, read as a stream (1 MiB at a time).
fn sha256_of(file: &File) -> std::io::Result<String> {
    let mut f = file;
    f.rewind()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// The recording's duration in seconds as its header tells (frames ÷ rate), or for WAV as
/// its size tells (bytes ÷ bytes per second, whichever is longer: a header can lie short),
/// read without decoding; `None` when the header does not say (the decoder's own limit then
/// applies).
fn header_duration(file: &File, size: u64) -> Option<f64> {
    use symphonia::core::formats::probe::Hint;
    use symphonia::core::formats::{FormatOptions, TrackType};
    use symphonia::core::io::MediaSourceStream;
    use symphonia::core::meta::MetadataOptions;

    let mut f = file.try_clone().ok()?;
    f.rewind().ok()?;
    let mss = MediaSourceStream::new(Box::new(f), Default::default());
    // symphonia can panic on hostile headers; a panic here only means "the header does not
    // say", and the decoder (which catches its own) judges the file.
    let format = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        symphonia::default::get_probe().probe(
            &Hint::new(),
            mss,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
    }))
    .ok()?
    .ok()?;
    let container = format.format_info().short_name;
    let track = format.default_track(TrackType::Audio)?;
    let params = track.codec_params.as_ref()?.audio()?;
    let rate = f64::from(params.sample_rate.filter(|&r| r > 0)?);
    let by_frames = track.num_frames.map(|n| n as f64 / rate);
    let by_size = (container == "wave")
        .then(|| {
            let bits = params.bits_per_coded_sample.or(params.bits_per_sample)?;
            let channels = params.channels.as_ref()?.count();
            let bytes_per_s = rate * channels as f64 * f64::from(bits) / 8.0;
            (bytes_per_s > 0.0).then(|| size as f64 / bytes_per_s)
        })
        .flatten();
    match (by_frames, by_size) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Writes the submission rows of one input atomically.
fn write_csv(path: &Path, stem: &str, s: &Scores) -> Result<()> {
    let row_ids = submission::soundscape_row_ids(stem, s.rows.len());
    let data: Vec<f32> = s.rows.iter().flatten().copied().collect();
    let m = silencio_eval::Matrix::new(s.rows.len(), s.species.len(), data)?;
    submission::write_submission(path, &s.species, &row_ids, &m)?;
    Ok(())
}

/// The number of rows of `path` when it is a complete submission for `stem` with the
/// engine's species columns (when the engine knows them), written after the input's last
/// modification.
fn complete_output(
    path: &Path,
    stem: &str,
    engine: &Scorer,
    input_mtime_ns: Option<u128>,
) -> Option<usize> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    // Written before the input's last change: the scores of earlier content.
    let output_mtime = meta.modified().ok().and_then(unix_ns);
    if output_mtime < input_mtime_ns {
        return None;
    }
    let t = submission::read_submission(path).ok()?;
    let ids_ok = t.row_ids == submission::soundscape_row_ids(stem, t.row_ids.len());
    let species_ok = match engine {
        Scorer::Local(c) => t
            .species
            .iter()
            .map(String::as_str)
            .eq(c.species().iter().map(|s| s.code.as_str())),
        Scorer::Server(_) => true,
    };
    (ids_ok && species_ok).then_some(t.row_ids.len())
}

fn quarantine(job: &Job, dirs: &Dirs, read: Option<&Read>, e: &Error) -> Outcome {
    quarantine_as(job, dirs, read, &e.quarantine_kind(), &e.to_string())
}

/// Moves the input to the quarantine folder with `<name>.reason.txt` beside it.
fn quarantine_as(
    job: &Job,
    dirs: &Dirs,
    read: Option<&Read>,
    kind: &str,
    message: &str,
) -> Outcome {
    // Never overwrite an earlier quarantined file of the same name.
    let mut dest_name = job.name.clone();
    let mut n = 1;
    while std::fs::symlink_metadata(dirs.quarantine.join(&dest_name)).is_ok() {
        dest_name = format!("{}.{n}", job.name);
        n += 1;
    }
    let dest = dirs.quarantine.join(&dest_name);
    let reason = format!(
        "file: {}\nkind: {kind}\nmessage: {message}\nsha256: {}\nat_unix_s: {:.3}\n",
        job.name,
        read.map_or("", |r| r.sha256.as_str()),
        unix_now()
    );
    let reason_path = dirs.quarantine.join(format!("{dest_name}.reason.txt"));
    if let Err(e) = write_atomic(&reason_path, reason.as_bytes()) {
        return Outcome::Fatal(e);
    }
    let mut note = String::new();
    if let Err(e) = move_file(&job.path, &dest) {
        // Kept in place; the ledger still records it so it is not tried again.
        note = format!(" (could not be moved: {e})");
    }
    let output = match dest.strip_prefix(&dirs.output) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => dest.display().to_string(),
    };
    Outcome::Quarantined {
        entry: LedgerEntry {
            file: job.name.clone(),
            sha256: read.map_or_else(String::new, |r| r.sha256.clone()),
            size: read.map_or(0, |r| r.size),
            mtime_ns: read.and_then(|r| r.mtime_ns),
            status: Status::Quarantined,
            output,
            windows: None,
            model_version: None,
            kind: Some(kind.to_string()),
            recovered: false,
            at: unix_now(),
        },
        message: format!("{message}{note}"),
    }
}

/// Renames, or across file systems copies (never through a link: the source is opened with
/// `O_NOFOLLOW` and must be a regular file), fsyncs and removes.
fn move_file(from: &Path, to: &Path) -> Result<()> {
    if std::fs::rename(from, to).is_err() {
        let mut src = open_input(from).map_err(|e| Error::io(from, e))?;
        let is_file = src.metadata().map_err(|e| Error::io(from, e))?.is_file();
        if !is_file {
            return Err(Error::io(
                from,
                std::io::Error::other("not a regular file: not copied"),
            ));
        }
        let mut dst = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(to)
            .map_err(|e| Error::io(to, e))?;
        let copied = std::io::copy(&mut src, &mut dst)
            .and_then(|_| dst.sync_all())
            .map_err(|e| Error::io(to, e));
        if let Err(e) = copied {
            let _ = std::fs::remove_file(to);
            return Err(e);
        }
        std::fs::remove_file(from).map_err(|e| Error::io(from, e))?;
    }
    for d in [to.parent(), from.parent()].into_iter().flatten() {
        sync_dir(d)?;
    }
    Ok(())
}

/// Removes the temp files a killed writer left in `dir` (hidden `.*.part` / `.*.tmp`).
fn clean_temporaries(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with('.') && (name.ends_with(".part") || name.ends_with(".tmp"));
        if ours && e.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::remove_file(e.path()).map_err(|err| Error::io(&e.path(), err))?;
            n += 1;
        }
    }
    Ok(n)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

fn stem_of(name: &str) -> String {
    Path::new(name)
        .file_stem()
        .map_or_else(|| name.to_string(), |s| s.to_string_lossy().into_owned())
}

fn unix_ns(t: SystemTime) -> Option<u128> {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_header(rate: u32, data_bytes: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&data_bytes.saturating_add(36).to_le_bytes());
        b.extend_from_slice(b"WAVEfmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&rate.to_le_bytes());
        b.extend_from_slice(&(rate * 2).to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&16u16.to_le_bytes());
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_bytes.to_le_bytes());
        b
    }

    #[test]
    fn inputs_are_opened_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let (real, link) = (tmp.path().join("a.ogg"), tmp.path().join("b.ogg"));
        std::fs::write(&real, b"bytes").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(open_input(&real).unwrap().metadata().unwrap().is_file());
        assert!(
            open_input(&link).is_err(),
            "a link is refused, not followed"
        );
        let t = std::fs::symlink_metadata(&link).unwrap().file_type();
        assert!(not_a_file(&t).starts_with("a symbolic link"));
    }

    #[test]
    fn a_huge_wav_is_judged_by_its_header_and_size_without_reading_it() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("huge.wav");
        // 3 GB sparse: the header tells 46 875 s at 32 kHz 16-bit mono.
        std::fs::write(&p, wav_header(32_000, 3_000_000_000 - 44)).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(3_000_000_000).unwrap();
        let f = open_input(&p).unwrap();
        let s = header_duration(&f, 3_000_000_000).unwrap();
        assert!((s - 46_875.0).abs() < 1.0, "{s}");
        // A header that says (almost) nothing: the size still tells.
        std::fs::write(&p, wav_header(32_000, 64)).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(640_044).unwrap();
        let s = header_duration(&open_input(&p).unwrap(), 640_044).unwrap();
        assert!((s - 10.0).abs() < 0.01, "{s}");
        // Not audio: nothing said.
        std::fs::write(&p, b"not audio").unwrap();
        assert_eq!(header_duration(&open_input(&p).unwrap(), 9), None);
    }

    #[test]
    fn hashing_streams_and_outputs_are_named_by_the_full_file_name() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.ogg");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &bytes).unwrap();
        let want: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(sha256_of(&open_input(&p).unwrap()).unwrap(), want);
        assert_eq!(output_name("x.ogg"), "x.ogg.csv");
        assert_ne!(output_name("x.ogg"), output_name("x.wav"));
        assert_eq!(stem_of("x.ogg"), "x");
    }
}
