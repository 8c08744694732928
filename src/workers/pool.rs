//! The scaling thread pool.

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::queue::{FairQueue, WorkItem};
use super::save::{path_string, save_image, save_object};
use crate::jobs::{ClientKey, JobTable, SavedImage};
use crate::output::OutputDirs;
use crate::protocol::{ErrorCode, ErrorReply};
use crate::s3::ObjectStore;

/// Pool sizing. Defaults are the original daemon's SAVE_POOL_MIN_WORKERS / MAX / IDLE_TIMEOUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Workers kept alive even when idle.
    pub min_workers: usize,
    /// Most workers at once.
    pub max_workers: usize,
    /// How long a worker above `min_workers` waits for work before exiting.
    pub idle_timeout: Duration,
    /// Nice value of the worker threads (Linux; 0 = normal priority), so generation keeps its cores.
    pub worker_nice: i32,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { min_workers: 2, max_workers: 4, idle_timeout: Duration::from_secs(300), worker_nice: 10 }
    }
}

/// A snapshot of the pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Images waiting for a worker.
    pub queued: usize,
    /// Worker threads alive.
    pub alive: usize,
    /// Worker threads saving an image.
    pub busy: usize,
}

#[derive(Debug, Default)]
struct State {
    queue: FairQueue<ClientKey, WorkItem>,
    /// Items waiting for a retry, by due time (and a sequence number to keep keys unique).
    delayed: BTreeMap<(Instant, u64), WorkItem>,
    next_seq: u64,
    alive: usize,
    idle: usize,
    busy: usize,
    stopping: bool,
    next_worker: usize,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    work: Condvar,
    changed: Condvar,
    config: PoolConfig,
    table: Arc<JobTable>,
    dirs: Arc<OutputDirs>,
    objects: Option<Arc<ObjectStore>>,
}

/// First retry delay; doubled per attempt up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
/// Longest wait between retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

fn retry_delay(attempt: u32) -> Duration {
    FIRST_RETRY_DELAY.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(MAX_RETRY_DELAY)
}

/// The worker pool. Cheap to clone; all clones drive the same threads.
#[derive(Debug, Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Starts `min_workers` workers reporting to `table` and recording the directories they write into.
    pub fn start(config: PoolConfig, table: Arc<JobTable>, dirs: Arc<OutputDirs>) -> Self {
        Self::start_with_objects(config, table, dirs, None)
    }

    /// [`Pool::start`], also saving the images of `s3://` output roots through `objects`.
    pub fn start_with_objects(
        config: PoolConfig,
        table: Arc<JobTable>,
        dirs: Arc<OutputDirs>,
        objects: Option<Arc<ObjectStore>>,
    ) -> Self {
        let config = PoolConfig { max_workers: config.max_workers.max(config.min_workers).max(1), ..config };
        let pool = Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                changed: Condvar::new(),
                config,
                table,
                dirs,
                objects,
            }),
        };
        let mut state = pool.shared.state.lock();
        for _ in 0..config.min_workers {
            pool.spawn_worker(&mut state);
        }
        drop(state);
        pool
    }

    /// Queues images and adds workers if the backlog exceeds the idle ones.
    pub fn push(&self, items: Vec<WorkItem>) {
        let mut state = self.shared.state.lock();
        for item in items {
            let client = item.client.clone();
            state.queue.push(&client, item);
        }
        while state.queue.len() > state.idle && state.alive < self.shared.config.max_workers {
            self.spawn_worker(&mut state);
        }
        drop(state);
        self.shared.work.notify_all();
    }

    /// Whether `s3://` output roots can be saved (S3 is configured).
    pub fn has_object_store(&self) -> bool {
        self.shared.objects.is_some()
    }

    /// A snapshot of queue length and worker counts.
    pub fn stats(&self) -> PoolStats {
        let state = self.shared.state.lock();
        PoolStats { queued: state.queue.len() + state.delayed.len(), alive: state.alive, busy: state.busy }
    }

    /// Lets the queue drain, then stops every worker and waits for them.
    pub fn drain_and_stop(&self) {
        let mut state = self.shared.state.lock();
        state.stopping = true;
        self.shared.work.notify_all();
        while state.alive > 0 {
            self.shared.changed.wait(&mut state);
        }
    }

    fn spawn_worker(&self, state: &mut State) {
        let shared = Arc::clone(&self.shared);
        let name = format!("luna-worker-{}", state.next_worker);
        let spawned = std::thread::Builder::new().name(name).spawn(move || worker_loop(&shared));
        match spawned {
            Ok(_) => {
                state.alive += 1;
                state.next_worker += 1;
            }
            Err(e) => tracing::error!("could not start a worker thread: {e}"),
        }
    }
}

fn worker_loop(shared: &Shared) {
    tracing::debug!("worker started");
    super::priority::set_current_thread_nice(shared.config.worker_nice);
    while let Some(item) = next_item(shared) {
        // Crash and race tests hold a worker here to catch a queue in flight (a no-op outside tests).
        crate::fault::hold("worker.before_save");
        let retry = run_item(shared, item);
        let mut state = shared.state.lock();
        state.busy -= 1;
        if let Some(item) = retry {
            let due = Instant::now() + retry_delay(item.attempt);
            let seq = state.next_seq;
            state.next_seq += 1;
            state.delayed.insert((due, seq), item);
        }
        drop(state);
        shared.changed.notify_all();
        shared.work.notify_one();
    }
    tracing::debug!("worker exiting");
}

/// Moves retries that are due into the queue; returns how long until the next one is due.
fn promote_due(state: &mut State) -> Option<Duration> {
    let now = Instant::now();
    while let Some(entry) = state.delayed.first_entry() {
        if entry.key().0 > now {
            return Some(entry.key().0 - now);
        }
        let item = entry.remove();
        let client = item.client.clone();
        state.queue.push(&client, item);
    }
    None
}

/// Waits for work. Returns `None` when this worker should exit: the pool is stopping and the queue is empty,
/// or it idled past the timeout while more than `min_workers` are alive.
fn next_item(shared: &Shared) -> Option<WorkItem> {
    let mut state = shared.state.lock();
    loop {
        let next_retry = promote_due(&mut state);
        if let Some(item) = state.queue.pop() {
            state.busy += 1;
            return Some(item);
        }
        // Stopping: retries still waiting stay in the journal and resume at the next start.
        if state.stopping {
            break;
        }
        state.idle += 1;
        let wait = next_retry.map_or(shared.config.idle_timeout, |d| d.min(shared.config.idle_timeout));
        let timed_out = shared.work.wait_for(&mut state, wait).timed_out();
        state.idle -= 1;
        let idle = state.queue.is_empty() && state.delayed.is_empty();
        if timed_out && idle && state.alive > shared.config.min_workers {
            break;
        }
    }
    state.alive -= 1;
    drop(state);
    shared.changed.notify_all();
    None
}

/// Saves one image and reports it; a panic fails the image, never the daemon. Returns the item back if the
/// save failed with a retryable error (it is then retried with backoff until it succeeds or is cancelled).
fn run_item(shared: &Shared, mut item: WorkItem) -> Option<WorkItem> {
    let table = &shared.table;
    let objects = shared.objects.as_deref();
    let is_object = item.task.settings.object_root.is_some();
    if !table.begin(&item.job_id, item.index) {
        // Cancelled while queued or waiting for a retry: no attempt will upload what an earlier one staged.
        if is_object && let Some(store) = objects {
            let _ = std::fs::remove_file(store.staging_path(&item.job_id, item.index));
        }
        return None;
    }
    let outcome = catch_unwind(AssertUnwindSafe(|| match is_object {
        true => save_object(&item.task, objects, &item.job_id, item.index),
        false => save_image(&item.task, &shared.dirs),
    }));
    if let Ok(Err(e)) = &outcome
        && e.is_retryable()
    {
        item.attempt += 1;
        let delay = retry_delay(item.attempt);
        tracing::warn!(job = %item.job_id, index = item.index, attempt = item.attempt, "save failed, retrying in {delay:?}: {e}");
        table.mark_retrying(&item.job_id, item.index, e.to_reply(), item.attempt, delay);
        return Some(item);
    }
    let outcome = match outcome {
        Ok(Ok(saved)) => {
            let path = path_string(&saved.written.path);
            tracing::debug!(job = %item.job_id, index = item.index, %path, discarded = saved.discarded, "written");
            Ok(SavedImage {
                path,
                bytes: saved.written.bytes,
                discarded: saved.discarded,
                scores: saved.scores,
                notes: saved.notes,
                thumbnail: saved.thumbnail.as_deref().map(path_string),
                url: saved.url,
            })
        }
        Ok(Err(e)) => {
            tracing::warn!(job = %item.job_id, index = item.index, "save failed: {e}");
            Err(e.to_reply())
        }
        Err(_) => Err(ErrorReply::new(ErrorCode::Internal, "the worker panicked while saving this image")),
    };
    if outcome.is_err()
        && is_object
        && let Some(store) = objects
    {
        // A final failure: no attempt will upload the staged bytes.
        let _ = std::fs::remove_file(store.staging_path(&item.job_id, item.index));
    }
    table.finish(&item.job_id, item.index, outcome).hand_back(table);
    None
}
