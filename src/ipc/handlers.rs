//! Request handlers, one per message, over the shared daemon context.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::jobs::{ClientKey, JobTable, new_job_id, plan_job};
use crate::protocol::{
    Accepted, DaemonStats, Empty, ErrorCode, ErrorReply, Hello, MAX_FRAME_LEN, PROTOCOL_VERSION, Request, Response,
    StatusQuery, SubmitJob, Welcome,
};
use crate::shm::HEADER_LEN;
use crate::workers::{Pool, WorkItem};

/// Everything the handlers share.
pub struct Context {
    /// The job table.
    pub table: Arc<JobTable>,
    /// The worker pool.
    pub pool: Pool,
    /// Where segments live.
    pub spool_dir: PathBuf,
    /// Most pixel bytes held by unfinished jobs.
    pub queue_budget_bytes: u64,
    /// Most simultaneous connections.
    pub max_connections: usize,
    started: Instant,
    stopping: AtomicBool,
    /// Serialises validation and segment hand-over, so two racing submits cannot both take one segment.
    submit_lock: parking_lot::Mutex<()>,
    wake_listener: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("spool_dir", &self.spool_dir).finish_non_exhaustive()
    }
}

impl Context {
    /// A context; `wake_listener` unblocks the accept loop after a stop request (e.g. by connecting to it).
    pub fn new(
        table: Arc<JobTable>,
        pool: Pool,
        spool_dir: PathBuf,
        queue_budget_bytes: u64,
        max_connections: usize,
        wake_listener: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            table,
            pool,
            spool_dir,
            queue_budget_bytes,
            max_connections,
            started: Instant::now(),
            stopping: AtomicBool::new(false),
            submit_lock: parking_lot::Mutex::new(()),
            wake_listener,
        }
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Stops accepting work and wakes the accept loop so it can exit.
    pub fn request_stop(&self) {
        if !self.stopping.swap(true, Ordering::SeqCst) {
            tracing::info!("stop requested: finishing the queue, accepting no new work");
        }
        (self.wake_listener)();
    }

    pub(crate) fn welcome(&self) -> Welcome {
        Welcome {
            version: PROTOCOL_VERSION,
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            spool_dir: self.spool_dir.to_string_lossy().into_owned(),
            max_frame_len: MAX_FRAME_LEN,
            segment_header_len: HEADER_LEN,
        }
    }

    /// Answers one request after the handshake.
    pub(crate) fn handle(&self, client: &Hello, request: Request) -> Response {
        match request {
            Request::Hello(_) => Response::Welcome(self.welcome()),
            Request::Submit(job) => self.submit(client, &job),
            Request::Status(StatusQuery { job_id }) => match self.table.status(&job_id) {
                Some(status) => Response::Status(status),
                None => error(ErrorCode::UnknownJob, format!("no job with id {job_id:?} (unknown or expired)")),
            },
            Request::Stats(Empty {}) => Response::Stats(self.stats()),
            Request::Stop(Empty {}) => Response::Stopping(Empty {}),
        }
    }

    fn submit(&self, hello: &Hello, job: &SubmitJob) -> Response {
        if self.stopping() {
            return error(ErrorCode::ShuttingDown, "the daemon is shutting down; save locally");
        }
        let _serialised = self.submit_lock.lock();
        let plan = match plan_job(job, &self.spool_dir) {
            Ok(plan) => plan,
            Err(e) => return error(e.code, e.message),
        };
        let job_bytes: u64 = plan.tasks.iter().map(|t| t.layout.length).sum();
        let held = self.table.counters().bytes_held;
        if held.saturating_add(job_bytes) > self.queue_budget_bytes && held > 0 {
            return error(
                ErrorCode::Busy,
                format!(
                    "queue budget full ({held} of {} bytes held, job needs {job_bytes}); save locally or retry",
                    self.queue_budget_bytes
                ),
            );
        }
        // Ownership passes to the daemon before the acknowledgement, so the client may exit right after it.
        for segment in &plan.segments {
            if let Err(e) = segment.take_ownership() {
                return error(ErrorCode::Internal, format!("could not take segment {:?}: {e}", segment.name()));
            }
        }
        let job_id = new_job_id();
        let client = ClientKey { name: hello.client.clone(), pid: hello.pid };
        self.table.insert(&job_id, client.clone(), &plan);
        let id: Arc<str> = Arc::from(job_id.as_str());
        let items = plan
            .tasks
            .iter()
            .enumerate()
            .map(|(index, task)| WorkItem {
                job_id: Arc::clone(&id),
                index,
                client: client.clone(),
                task: Arc::clone(task),
            })
            .collect();
        self.pool.push(items);
        tracing::info!(job = %job_id, client = %hello.client, images = plan.tasks.len(), "job accepted");
        Response::Accepted(Accepted { job_id, images: plan.tasks.len() as u32 })
    }

    fn stats(&self) -> DaemonStats {
        let c = self.table.counters();
        let pool = self.pool.stats();
        DaemonStats {
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            queue_depth: pool.queued as u64,
            bytes_held: c.bytes_held,
            workers_alive: pool.alive as u32,
            workers_busy: pool.busy as u32,
            jobs_accepted: c.jobs_accepted,
            jobs_done: c.jobs_done,
            jobs_failed: c.jobs_failed,
            images_written: c.images_written,
            images_failed: c.images_failed,
            clients: self.table.clients(),
        }
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply::new(code, message))
}
