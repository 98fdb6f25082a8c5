//! The consumer: a watched folder in, one BirdCLEF submission CSV per input out, exactly once.
//!
//! One scheduler thread (the caller's) owns the [`Ledger`] and decides what runs; worker
//! threads score files and write outputs. The scheduler learns of files from file-system
//! events and from sweeps of the folder (at start-up and periodically, since events can be
//! missed or overflow). A file is taken only when it is complete: at once when it was renamed
//! into the folder (how careful producers publish), otherwise when its size and modification
//! time have not changed for `settle` (files copied in by other tools). At most
//! `max_in_flight` files are queued or being scored, so memory stays bounded however many
//! files wait.
//!
//! Exactly once across crashes: an output is renamed into place (complete) before its ledger
//! line is appended and fsync'd. A crash between the two leaves an output without a ledger
//! line; on restart the worker finds that output, checks it is a complete submission for this
//! input and this model's species, and adopts it (the ledger line says `recovered`) instead of
//! writing a second one. Temp files a crash left in the output folder are removed at start-up.
//! An exclusive lock on the ledger keeps two consumers off the same output folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{EventKind, ModifyKind, RenameMode};
use notify::{RecursiveMode, Watcher as _};
use sha2::{Digest, Sha256};
use silencio_eval::submission;

use crate::engine::{Engine, Scores};
use crate::ledger::{Ledger, LedgerEntry, Status};
use crate::{Error, Result, is_audio_candidate, sync_dir, unix_now, write_atomic};

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
    /// How long a file not renamed into place must keep its size and mtime to be taken.
    pub settle: Duration,
    /// Wait before retrying a file after a transient failure (server down).
    pub retry_after: Duration,
    /// Turned true from outside for a graceful stop: files in flight finish, nothing else
    /// starts.
    pub stop: Arc<AtomicBool>,
}

impl WatchConfig {
    /// Settings with the defaults: 2 in flight, sweeps every 10 s, 1 s settle, 5 s retry.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        Self {
            input: input.into(),
            output: output.into(),
            quarantine: None,
            max_in_flight: 2,
            once: false,
            sweep_every: Duration::from_secs(10),
            settle: Duration::from_secs(1),
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
        /// Engine description.
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
    engine: Engine,
}

/// A file to score.
#[derive(Debug, Clone)]
struct Job {
    path: PathBuf,
    name: String,
    stem: String,
    /// The ledger's latest entry for this name (content replaced since).
    prev: Option<LedgerEntry>,
    /// Another input already owns this stem's output.
    stem_owner: Option<String>,
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

/// Paths shared by the workers.
#[derive(Debug)]
struct Dirs {
    output: PathBuf,
    quarantine: PathBuf,
}

impl Watcher {
    /// A consumer of `cfg.input` scoring with `engine`.
    pub fn new(cfg: WatchConfig, engine: Engine) -> Result<Self> {
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
            stems: HashMap::new(),
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
    /// stem → input name, for inputs whose output exists.
    stems: HashMap<String, String>,
    stats: Stats,
    started: Instant,
    job_tx: Option<SyncSender<Job>>,
}

impl Scheduler<'_> {
    fn run(&mut self, rx: &Receiver<Msg>, on_event: &mut dyn FnMut(&WatchEvent)) -> Result<()> {
        for e in self.ledger.entries() {
            if e.status == Status::Done {
                self.stems.insert(stem_of(&e.file), e.file.clone());
            }
        }
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
            self.dispatch()?;
            metrics::gauge!("silencio_stream_pending").set(self.pending.len() as f64);
            metrics::gauge!("silencio_stream_in_flight").set(self.in_flight.len() as f64);
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
                    }
                    return Ok(());
                }
                let renamed_to = match ev.kind {
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)) => ev.paths.first(),
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => ev.paths.last(),
                    _ => None,
                };
                for p in &ev.paths {
                    // The watch is not recursive, so every path is an entry of the input
                    // folder; rebuilt from --in so that it matches the sweep's spelling.
                    if let Some(name) = p.file_name() {
                        self.note(self.cfg.input.join(name), Some(p) == renamed_to);
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

    fn note(&mut self, path: PathBuf, renamed: bool) {
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
        p.renamed |= renamed;
    }

    fn sweep(&mut self) {
        let Ok(rd) = std::fs::read_dir(&self.cfg.input) else {
            return;
        };
        for e in rd.flatten() {
            self.note(e.path(), false);
        }
    }

    /// Starts every ready file while there is room.
    fn dispatch(&mut self) -> Result<()> {
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
            let meta = match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => m,
                _ => {
                    drop_list.push(path);
                    continue;
                }
            };
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
            let settled = p.seen == Some(sig) && now.duration_since(p.since) >= self.cfg.settle;
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
            let stem = stem_of(&name);
            let job = Job {
                prev: self.ledger.get(&name).cloned(),
                stem_owner: self.stems.get(&stem).filter(|n| **n != name).cloned(),
                path: path.clone(),
                name,
                stem,
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
                self.ledger.append(entry)?;
                self.stems.insert(job.stem.clone(), job.name.clone());
                self.stats.files += 1;
                self.stats.windows += windows;
                self.stats.audio_s += audio_s;
                if recovered {
                    self.stats.recovered += 1;
                } else {
                    self.stats.busy_s += seconds;
                }
                let status = if recovered { "recovered" } else { "done" };
                metrics::counter!("silencio_stream_files_total", "status" => status).increment(1);
                metrics::counter!("silencio_stream_windows_total").increment(windows as u64);
                metrics::counter!("silencio_stream_audio_seconds_total").increment(audio_s as u64);
                metrics::histogram!("silencio_stream_file_seconds").record(seconds);
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
                self.stats.quarantined += 1;
                metrics::counter!("silencio_stream_files_total", "status" => "quarantined")
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
            Outcome::Retry(message) => {
                metrics::counter!("silencio_stream_retries_total").increment(1);
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
}

fn worker(engine: &Engine, rx: &Mutex<Receiver<Job>>, tx: &Sender<Msg>, dirs: &Dirs) {
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

/// The file's identity as read: bytes, digest, size, mtime.
struct Read {
    bytes: Vec<u8>,
    sha256: String,
    mtime_ns: Option<u128>,
}

fn process(engine: &Engine, job: &Job, dirs: &Dirs) -> Outcome {
    let t = Instant::now();
    let read = match read_input(&job.path) {
        Ok(Some(r)) => r,
        Ok(None) => return Outcome::Vanished,
        Err(e) => {
            // Unreadable (permissions, I/O error): quarantine what can be moved.
            return quarantine(job, dirs, None, &e);
        }
    };
    let entry = |status, output: String| LedgerEntry {
        file: job.name.clone(),
        sha256: read.sha256.clone(),
        size: read.bytes.len() as u64,
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
        return Outcome::Unchanged(LedgerEntry {
            at: unix_now(),
            ..prev.clone()
        });
    }
    if let Some(owner) = &job.stem_owner {
        let e = Error::InvalidOptions(format!(
            "{} would write {}.csv, which input {owner} already wrote",
            job.name, job.stem
        ));
        return quarantine_as(job, dirs, Some(&read), "duplicate_stem", &e.to_string());
    }
    let csv_name = format!("{}.csv", job.stem);
    let csv = dirs.output.join(&csv_name);
    if job.prev.is_none()
        && let Some(windows) = complete_output(&csv, &job.stem, engine)
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
    let scores = crate::ogg::check_complete(&read.bytes)
        .and_then(|()| engine.score(read.bytes.clone(), &job.name))
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
    let scores = match scores {
        Ok(s) => s,
        Err(e) if e.is_bad_input() => return quarantine(job, dirs, Some(&read), &e),
        Err(e @ Error::Server { .. }) => return Outcome::Retry(e.to_string()),
        Err(e) => return Outcome::Fatal(e),
    };
    if let Err(e) = write_csv(&csv, &job.stem, &scores).and_then(|()| sync_dir(&dirs.output)) {
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

fn read_input(path: &Path) -> Result<Option<Read>> {
    let io = |e| Error::io(path, e);
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let mtime_ns = std::fs::metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(unix_ns);
    let sha256 = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Some(Read {
        bytes,
        sha256,
        mtime_ns,
    }))
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
/// engine's species columns (when the engine knows them).
fn complete_output(path: &Path, stem: &str, engine: &Engine) -> Option<usize> {
    if !path.is_file() {
        return None;
    }
    let t = submission::read_submission(path).ok()?;
    let ids_ok = t.row_ids == submission::soundscape_row_ids(stem, t.row_ids.len());
    let species_ok = match engine {
        Engine::Local(c) => t
            .species
            .iter()
            .map(String::as_str)
            .eq(c.species().iter().map(|s| s.code.as_str())),
        Engine::Server(_) => true,
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
    while dirs.quarantine.join(&dest_name).exists() {
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
            size: read.map_or(0, |r| r.bytes.len() as u64),
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

/// Renames, or copies, fsyncs and removes across file systems.
fn move_file(from: &Path, to: &Path) -> Result<()> {
    if std::fs::rename(from, to).is_err() {
        let copy = || -> std::io::Result<()> {
            std::fs::copy(from, to)?;
            std::fs::File::open(to)?.sync_all()?;
            std::fs::remove_file(from)
        };
        copy().map_err(|e| Error::io(from, e))?;
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
        if ours && e.path().is_file() {
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
