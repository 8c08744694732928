//! The scaling thread pool.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::queue::{FairQueue, WorkItem};
use super::save::{path_string, save_image};
use crate::jobs::{ClientKey, JobTable, SavedImage};
use crate::protocol::{ErrorCode, ErrorReply};

/// Pool sizing. Defaults are the original daemon's SAVE_POOL_MIN_WORKERS / MAX / IDLE_TIMEOUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Workers kept alive even when idle.
    pub min_workers: usize,
    /// Most workers at once.
    pub max_workers: usize,
    /// How long a worker above `min_workers` waits for work before exiting.
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { min_workers: 2, max_workers: 4, idle_timeout: Duration::from_secs(300) }
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
}

/// The worker pool. Cheap to clone; all clones drive the same threads.
#[derive(Debug, Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Starts `min_workers` workers reporting to `table`.
    pub fn start(config: PoolConfig, table: Arc<JobTable>) -> Self {
        let config = PoolConfig { max_workers: config.max_workers.max(config.min_workers).max(1), ..config };
        let pool = Self {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                changed: Condvar::new(),
                config,
                table,
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

    /// A snapshot of queue length and worker counts.
    pub fn stats(&self) -> PoolStats {
        let state = self.shared.state.lock();
        PoolStats { queued: state.queue.len(), alive: state.alive, busy: state.busy }
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
    while let Some(item) = next_item(shared) {
        run_item(&shared.table, &item);
        let mut state = shared.state.lock();
        state.busy -= 1;
        drop(state);
        shared.changed.notify_all();
    }
    tracing::debug!("worker exiting");
}

/// Waits for work. Returns `None` when this worker should exit: the pool is stopping and the queue is empty,
/// or it idled past the timeout while more than `min_workers` are alive.
fn next_item(shared: &Shared) -> Option<WorkItem> {
    let mut state = shared.state.lock();
    loop {
        if let Some(item) = state.queue.pop() {
            state.busy += 1;
            return Some(item);
        }
        if state.stopping {
            break;
        }
        state.idle += 1;
        let timed_out = shared.work.wait_for(&mut state, shared.config.idle_timeout).timed_out();
        state.idle -= 1;
        if timed_out && state.queue.is_empty() && state.alive > shared.config.min_workers {
            break;
        }
    }
    state.alive -= 1;
    drop(state);
    shared.changed.notify_all();
    None
}

/// Saves one image and reports it; a panic fails the image, never the daemon.
fn run_item(table: &JobTable, item: &WorkItem) {
    table.mark_encoding(&item.job_id, item.index);
    let outcome = catch_unwind(AssertUnwindSafe(|| save_image(&item.task)));
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
            })
        }
        Ok(Err(e)) => {
            tracing::warn!(job = %item.job_id, index = item.index, "save failed: {e}");
            Err(e.to_reply())
        }
        Err(_) => Err(ErrorReply::new(ErrorCode::Internal, "the worker panicked while saving this image")),
    };
    if let Some(segment) = table.finish(&item.job_id, item.index, outcome) {
        match segment.release() {
            Ok(unlinked) => tracing::debug!(segment = segment.name(), unlinked, "segment released"),
            Err(e) => tracing::warn!(segment = segment.name(), "could not release segment: {e}"),
        }
        table.segment_released(&item.job_id);
    }
}
