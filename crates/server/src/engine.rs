//! The batching engine of one loaded model version (text-embeddings-inference's design, see
//! DESIGN.md): requests put their windows' features in a queue and wait on a one-shot reply;
//! whichever replica thread is free closes the next batch — at `max_batch` windows or once its
//! oldest window has waited `max_wait` — and runs it on its own copy of the model.
//!
//! - Two queues: windows of short clips and live streams ([`Priority::High`]) go before those
//!   of long uploads, so a 1-minute upload cannot hold a tour guide's 5 s clip behind it. Not
//!   by absolute priority either way: while both queues wait, every
//!   [`HIGH_PER_LOW`]+1-th window is a long upload's, so each queue keeps a share of the
//!   replicas under any load. (Giving every long window older than 2 s absolute priority kept a
//!   5 s clip waiting 60.8 s behind 16 looping 2-minute uploads.)
//! - One collector at a time: idle replicas queue up on a mutex instead of each closing a
//!   tiny batch, so batches grow with load.
//! - Windows whose request has gone (its reply receiver dropped: the HTTP future was
//!   cancelled) are dropped before inference and counted once per request as
//!   `silencio_rejected_total{reason="client_gone"}`.
//! - A panic in a forward pass is caught: that batch's requests get an error, the thread lives.
//! - Admission (429) is the caller's job ([`crate::state::AppState`]): by the time windows get
//!   here their request holds a permit, so the queue is bounded.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use silencio_audio::{Features, Window};
use silencio_infer::{Classifier, Species};
use tokio::sync::oneshot;

use crate::config::{EngineConfig, ReplicaThreads};
use crate::metrics as m;
use crate::{Error, Result};

/// While both queues wait, this many short-clip windows go per long-upload window: short
/// clips get 3/4 of the replicas, long uploads at least 1/4 (neither starves).
pub const HIGH_PER_LOW: usize = 3;

/// Whether the long-upload queue goes next: when it alone waits, or when both wait and the
/// last [`HIGH_PER_LOW`] windows taken were short ones.
fn low_goes_first(high_waiting: bool, low_waiting: bool, high_streak: usize) -> bool {
    low_waiting && (!high_waiting || high_streak >= HIGH_PER_LOW)
}

/// Which queue a request's windows join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// Short clips and stream windows.
    High,
    /// Long uploads.
    Low,
}

/// Requests with at most this many windows (10 s) are short clips.
pub const SHORT_CLIP_WINDOWS: usize = 2;

impl Priority {
    /// The priority of an upload of `windows` windows.
    pub fn for_windows(windows: usize) -> Self {
        if windows <= SHORT_CLIP_WINDOWS {
            Self::High
        } else {
            Self::Low
        }
    }
}

/// A request's scores, with where its time went.
#[derive(Debug, Clone)]
pub struct Scored {
    /// Probabilities `[window][species]`.
    pub scores: Vec<Vec<f32>>,
    /// From submission to the start of the first batch holding one of its windows.
    pub queue: Duration,
    /// From that start to the end of the last batch holding one of its windows.
    pub inference: Duration,
}

/// Counters of one engine, read by `GET /v1/models`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered with scores.
    pub requests: AtomicU64,
    /// Windows run through the model.
    pub windows: AtomicU64,
    /// Batches run.
    pub batches: AtomicU64,
    /// Requests whose client left before their windows ran.
    pub client_gone: AtomicU64,
}

type Reply = oneshot::Sender<Result<Scored>>;

/// One request in flight.
struct Job {
    state: Mutex<JobState>,
    submitted: Instant,
}

struct JobState {
    tx: Option<Reply>,
    scores: Vec<Vec<f32>>,
    remaining: usize,
    first_batch: Option<Instant>,
    gone_counted: bool,
}

impl Job {
    fn lock(&self) -> MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct Item {
    job: Arc<Job>,
    index: usize,
    features: Arc<Features>,
    window: usize,
    enqueued: Instant,
}

#[derive(Default)]
struct Queues {
    high: VecDeque<Item>,
    low: VecDeque<Item>,
    /// Short-clip windows taken since the last long-upload one.
    high_streak: usize,
    paused: usize,
    shutdown: bool,
}

impl Queues {
    fn len(&self) -> usize {
        self.high.len() + self.low.len()
    }

    fn oldest(&self) -> Option<Instant> {
        match (self.high.front(), self.low.front()) {
            (Some(a), Some(b)) => Some(a.enqueued.min(b.enqueued)),
            (Some(a), None) | (None, Some(a)) => Some(a.enqueued),
            (None, None) => None,
        }
    }

    fn pop(&mut self) -> Option<Item> {
        let (high, low) = (!self.high.is_empty(), !self.low.is_empty());
        if low_goes_first(high, low, self.high_streak) {
            self.high_streak = 0;
            self.low.pop_front()
        } else {
            self.high_streak += usize::from(high);
            self.high.pop_front()
        }
    }
}

struct Shared {
    queues: Mutex<Queues>,
    cv: Condvar,
    /// Held by the one replica that is closing a batch.
    collector: Mutex<()>,
    cfg: EngineConfig,
    model_version: String,
    window_s: f64,
    stats: Arc<Stats>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next batch, or `None` once shut down and drained.
    fn next_batch(&self) -> Option<Vec<Item>> {
        let _collector = self
            .collector
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut q = self.lock();
        loop {
            if q.paused == 0 && q.len() > 0 {
                // Wait for more windows until the batch is full or its oldest window is due;
                // after a shutdown everything left goes at once.
                let due = q.oldest().map(|t| t + self.cfg.max_wait);
                let now = Instant::now();
                let full = q.len() >= self.cfg.max_batch;
                match due {
                    Some(due) if !full && !q.shutdown && now < due => {
                        q = self
                            .cv
                            .wait_timeout(q, due - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                        continue;
                    }
                    _ => {}
                }
                let mut batch = Vec::with_capacity(self.cfg.max_batch.min(q.len()));
                while batch.len() < self.cfg.max_batch {
                    match q.pop() {
                        Some(i) => batch.push(i),
                        None => break,
                    }
                }
                m::queue_depth_sub(batch.len());
                return Some(batch);
            }
            if q.shutdown && q.len() == 0 {
                return None;
            }
            q = self.cv.wait(q).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn push(&self, items: Vec<Item>, priority: Priority) {
        let n = items.len();
        {
            let mut q = self.lock();
            let dest = match priority {
                Priority::High => &mut q.high,
                Priority::Low => &mut q.low,
            };
            dest.extend(items);
        }
        m::queue_depth_add(n);
        self.cv.notify_all();
    }

    /// Drops the windows of requests nobody waits for any more; counts each such request once.
    fn drop_gone(&self, batch: Vec<Item>) -> Vec<Item> {
        batch
            .into_iter()
            .filter(|item| {
                let mut st = item.job.lock();
                let closed = match &st.tx {
                    Some(tx) => tx.is_closed(),
                    // Already answered with an error: its other windows are moot.
                    None => true,
                };
                if closed && st.tx.is_some() && !st.gone_counted {
                    st.gone_counted = true;
                    self.stats.client_gone.fetch_add(1, Ordering::Relaxed);
                    m::rejected("client_gone");
                }
                !closed
            })
            .collect()
    }

    fn run(&self, classifier: &Classifier, batch: Vec<Item>) {
        let batch = self.drop_gone(batch);
        if batch.is_empty() {
            return;
        }
        let started = Instant::now();
        for item in &batch {
            let mut st = item.job.lock();
            st.first_batch.get_or_insert(started);
        }
        let result = catch_unwind(AssertUnwindSafe(|| forward(classifier, &batch)))
            .unwrap_or_else(|panic| {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(model = %self.model_version, %msg, "model thread panicked in a forward pass; the batch fails, the thread lives");
                Err(Error::Internal(format!("inference failed: {msg}")))
            });
        let elapsed = started.elapsed();
        let n = batch.len();
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        m::batch(&self.model_version, n, elapsed, n as f64 * self.window_s);
        match result {
            Ok(scores) => {
                self.stats.windows.fetch_add(n as u64, Ordering::Relaxed);
                let species = classifier.species();
                for (item, s) in batch.into_iter().zip(scores) {
                    record_prediction(species, &s);
                    self.deliver(item, s);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for item in batch {
                    let mut st = item.job.lock();
                    if let Some(tx) = st.tx.take() {
                        let _ = tx.send(Err(Error::Internal(msg.clone())));
                    }
                }
            }
        }
    }

    fn deliver(&self, item: Item, scores: Vec<f32>) {
        let mut st = item.job.lock();
        if st.tx.is_none() {
            return;
        }
        if let Some(slot) = st.scores.get_mut(item.index) {
            *slot = scores;
        }
        st.remaining = st.remaining.saturating_sub(1);
        if st.remaining == 0 {
            let now = Instant::now();
            let first = st.first_batch.unwrap_or(now);
            let scored = Scored {
                scores: std::mem::take(&mut st.scores),
                queue: first.saturating_duration_since(item.job.submitted),
                inference: now.saturating_duration_since(first),
            };
            if let Some(tx) = st.tx.take() {
                // Counted before the reply leaves, so a client that reads /v1/models after its
                // answer sees itself counted.
                self.stats.requests.fetch_add(1, Ordering::SeqCst);
                if tx.send(Ok(scored)).is_err() {
                    self.stats.requests.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }
}

fn record_prediction(species: &[Species], scores: &[f32]) {
    if let Some((j, s)) = silencio_infer::top_k(scores, 1, f32::NEG_INFINITY).first()
        && let Some(sp) = species.get(*j)
    {
        m::prediction(&sp.code, *s);
    }
}

/// One forward pass over the batch's windows.
fn forward(classifier: &Classifier, batch: &[Item]) -> Result<Vec<Vec<f32>>> {
    let Some(first) = batch.first() else {
        return Ok(Vec::new());
    };
    let (n_mels, n_frames) = (first.features.n_mels, first.features.n_frames);
    let mut data = Vec::with_capacity(batch.len() * n_mels * n_frames);
    let mut windows = Vec::with_capacity(batch.len());
    for item in batch {
        let f = &item.features;
        if (f.n_mels, f.n_frames) != (n_mels, n_frames) {
            return Err(Error::Internal(
                "windows of different shapes in one batch".into(),
            ));
        }
        data.extend_from_slice(f.window(item.window));
        windows.push(f.windows[item.window]);
    }
    let feats = Features {
        windows,
        n_mels,
        n_frames,
        data,
    };
    Ok(classifier.predict_features(&feats)?)
}

/// Holds the engine's workers off new batches while alive (maintenance, tests of queueing and
/// cancellation). Windows keep queueing; admission limits still apply.
pub struct PauseGuard {
    shared: Arc<Shared>,
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        self.shared.lock().paused -= 1;
        self.shared.cv.notify_all();
    }
}

/// The replicas and queue of one loaded model version. Dropping it lets the replicas finish
/// what is queued and exit.
pub struct Engine {
    shared: Arc<Shared>,
    /// The replicas' threads under [`ReplicaThreads::Own`] (dropped after the shutdown signal).
    _pool: Option<rayon::ThreadPool>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model_version", &self.shared.model_version)
            .field("cfg", &self.shared.cfg)
            .finish()
    }
}

impl Engine {
    /// Starts `cfg.replicas` threads, each loading the bundle at `dir` and warming it up with
    /// one real forward pass; returns once all are ready (blocking), or the first error.
    pub fn start(
        dir: &Path,
        model_version: &str,
        window_s: f64,
        cfg: &EngineConfig,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            cv: Condvar::new(),
            collector: Mutex::new(()),
            cfg: cfg.clone(),
            model_version: model_version.to_string(),
            window_s,
            stats: Arc::new(Stats::default()),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
        let replicas = cfg.replicas.max(1);
        // `Own`: a pool whose every thread runs one replica's loop for the engine's lifetime
        // (its threads end once the replicas return and the pool is dropped).
        let pool = match cfg.threads {
            ReplicaThreads::Own => Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(replicas)
                    .thread_name(|i| format!("model-{i}"))
                    // A replica's batches already run under `catch_unwind`; anything else
                    // must not abort the server (rayon's default for a panicking job).
                    .panic_handler(|_| tracing::error!("a model thread panicked"))
                    .build()
                    .map_err(|e| Error::Internal(format!("model thread pool: {e}")))?,
            ),
            ReplicaThreads::Shared => None,
        };
        for i in 0..replicas {
            let shared = shared.clone();
            let ready = ready_tx.clone();
            let dir: PathBuf = dir.to_path_buf();
            match &pool {
                Some(pool) => pool.spawn(move || replica(shared, dir, ready)),
                None => {
                    std::thread::Builder::new()
                        .name(format!("model-{i}"))
                        .spawn(move || replica(shared, dir, ready))
                        .map_err(|e| Error::io("spawn a model thread", e))?;
                }
            }
        }
        let engine = Self {
            shared: shared.clone(),
            _pool: pool,
        };
        drop(ready_tx);
        for _ in 0..cfg.replicas.max(1) {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                // Dropping `engine` stops the replicas that did start.
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::Internal("a model thread died while loading".into())),
            }
        }
        Ok(engine)
    }

    /// Queues the windows of `features` and returns where the scores will arrive. The
    /// receiver may be dropped to cancel.
    pub fn submit(
        &self,
        features: Arc<Features>,
        priority: Priority,
    ) -> oneshot::Receiver<Result<Scored>> {
        let (tx, rx) = oneshot::channel();
        let n = features.windows.len();
        let now = Instant::now();
        if n == 0 {
            let _ = tx.send(Ok(Scored {
                scores: Vec::new(),
                queue: Duration::ZERO,
                inference: Duration::ZERO,
            }));
            return rx;
        }
        let job = Arc::new(Job {
            state: Mutex::new(JobState {
                tx: Some(tx),
                scores: vec![Vec::new(); n],
                remaining: n,
                first_batch: None,
                gone_counted: false,
            }),
            submitted: now,
        });
        let items = (0..n)
            .map(|w| Item {
                job: job.clone(),
                index: w,
                features: features.clone(),
                window: w,
                enqueued: now,
            })
            .collect();
        self.shared.push(items, priority);
        rx
    }

    /// Stops workers from starting batches until the guard is dropped.
    pub fn pause(&self) -> PauseGuard {
        self.shared.lock().paused += 1;
        PauseGuard {
            shared: self.shared.clone(),
        }
    }

    /// Windows waiting in this engine's queues.
    pub fn queued(&self) -> usize {
        self.shared.lock().len()
    }

    /// This engine's counters.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.shared.stats
    }

    /// The configuration it runs.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.cfg
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.cv.notify_all();
    }
}

/// One replica thread: load, warm up, report, then run batches until shut down.
fn replica(shared: Arc<Shared>, dir: PathBuf, ready: std::sync::mpsc::Sender<Result<()>>) {
    let loaded = catch_unwind(AssertUnwindSafe(|| load_and_warm(&dir, &shared.cfg)))
        .unwrap_or_else(|_| {
            Err(Error::Internal(
                "model thread panicked while loading".into(),
            ))
        });
    let classifier = match loaded {
        Ok(c) => {
            let _ = ready.send(Ok(()));
            c
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(ready);
    while let Some(batch) = shared.next_batch() {
        shared.run(&classifier, batch);
    }
}

fn load_and_warm(dir: &Path, cfg: &EngineConfig) -> Result<Classifier> {
    let device = silencio_infer::parse_device(&cfg.device)?;
    let classifier = Classifier::load(dir, &device)?.with_batch_size(cfg.max_batch);
    // One real forward pass (the first one allocates and plans): readiness means warm.
    let fc = classifier.features();
    let (n_mels, n_frames) = (fc.n_mels, fc.frames_per_window());
    let len = fc.window.length_samples(fc.sample_rate);
    let warm = Features {
        windows: vec![Window {
            index: 0,
            start_s: 0.0,
            end_s: fc.window.length_s,
            start_sample: 0,
            valid_samples: len,
        }],
        n_mels,
        n_frames,
        data: vec![-100.0; n_mels * n_frames],
    };
    let scores = classifier.predict_features(&warm)?;
    if scores.len() != 1 || scores[0].len() != classifier.species().len() {
        return Err(Error::Internal(
            "warm-up forward pass returned the wrong shape".into(),
        ));
    }
    Ok(classifier)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16's starvation, simulated: one window served per 50 ms (20/s); long uploads
    /// arrive at 48 windows/s (two 2-minute uploads a second: an overload the admission queue
    /// bounds), and a 1-window clip arrives after 10 s, when ~14 s of long windows are queued.
    /// Returns the pops until the clip was served, `None` if never within 100 s.
    fn clip_wait(
        mut low_first: impl FnMut(bool, bool, Instant, Option<Instant>) -> bool,
    ) -> Option<u64> {
        let t0 = Instant::now();
        let (mut high, mut low) = (0usize, VecDeque::<Instant>::new());
        let clip_step = 200;
        for step in 0..2_000u64 {
            let now = t0 + Duration::from_millis(step * 50);
            if step % 10 == 0 {
                low.extend(std::iter::repeat_n(now, 24));
            }
            if step == clip_step {
                high += 1;
            }
            if low_first(high > 0, !low.is_empty(), now, low.front().copied()) {
                low.pop_front();
            } else if high > 0 {
                return Some(step - clip_step + 1);
            }
        }
        None
    }

    #[test]
    fn a_short_clip_is_not_starved_by_sustained_long_uploads() {
        let mut streak = 0;
        let shares = clip_wait(|h, l, _, _| {
            let low = low_goes_first(h, l, streak);
            streak = if low { 0 } else { streak + usize::from(h) };
            low
        });
        assert!(
            shares.is_some_and(|n| n <= HIGH_PER_LOW as u64 + 1),
            "{shares:?}"
        );
        // The rule before: a long window that waited 2 s goes first. The clip is never served.
        let absolute = |h: bool, l: bool, now: Instant, front: Option<Instant>| {
            front.is_some_and(|f| now - f >= Duration::from_secs(2)) || (l && !h)
        };
        assert_eq!(clip_wait(absolute), None);
    }

    #[test]
    fn long_uploads_keep_a_share_under_sustained_short_clips() {
        // Short clips always waiting: every (HIGH_PER_LOW + 1)-th window is a long one.
        let mut streak = 0;
        let mut low_taken = 0;
        for _ in 0..40 {
            if low_goes_first(true, true, streak) {
                low_taken += 1;
                streak = 0;
            } else {
                streak += 1;
            }
        }
        assert_eq!(low_taken, 40 / (HIGH_PER_LOW + 1));
        assert!(low_goes_first(false, true, 0));
        assert!(!low_goes_first(true, false, 9));
        assert!(!low_goes_first(false, false, 0));
    }
}
