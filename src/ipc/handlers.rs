//! Request handlers, one per message, over the shared daemon context.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::jobs::{ClientKey, JobPlan, JobTable, new_job_id, plan_job, with_acceptance_time};
use crate::protocol::{
    Accepted, BatchQuery, CancelReply, DaemonStats, Empty, ErrorCode, ErrorReply, Hello, MAX_FRAME_LEN, PROTOCOL_NAME,
    PROTOCOL_VERSION, Request, Response, StatusQuery, SubmitJob, Welcome,
};
use crate::shm::{HEADER_LEN, Segment, SegmentState};
use crate::workers::{Pool, WorkItem};

/// Announced in `welcome.features` when the daemon can save to `s3://bucket/prefix` output roots.
pub const S3_FEATURE: &str = "s3_output";

/// What this build of protocol version 1 implements, announced in `welcome` (see docs/PROTOCOL.md).
pub const FEATURES: [&str; 13] = [
    "png",
    "webp",
    "jpeg",
    "templates",
    "quality_gate",
    "metadata_blob",
    "metadata_values",
    "cancel",
    "journal",
    "submit_id",
    "batches",
    "thumbnails",
    "zip",
];

/// Admission limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most pixel bytes held by unfinished jobs.
    pub queue_budget_bytes: u64,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// How long a submit waits for room before `busy`.
    pub busy_wait: Duration,
}

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
    /// How long a submit waits for room under the queue budget before it is refused with `busy`.
    pub busy_wait: Duration,
    started: Instant,
    instance_id: String,
    stopping: AtomicBool,
    /// The short critical section of a submission (claiming its segments, recording and queueing the job),
    /// also taken by a stop request: a job is either queued before the drain begins or refused. Planning
    /// (opening segments, reading metadata) happens before it, without any lock.
    admission: parking_lot::Mutex<()>,
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
        limits: Limits,
        wake_listener: Box<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            table,
            pool,
            spool_dir,
            queue_budget_bytes: limits.queue_budget_bytes,
            max_connections: limits.max_connections,
            busy_wait: limits.busy_wait,
            started: Instant::now(),
            instance_id: uuid::Uuid::new_v4().simple().to_string(),
            stopping: AtomicBool::new(false),
            admission: parking_lot::Mutex::new(()),
            wake_listener,
        }
    }

    /// Whether a stop was requested.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// Stops accepting work and wakes the accept loop so it can exit. Waits for a submission being claimed
    /// right now, so every job acknowledged before the stop is queued before the drain.
    pub fn request_stop(&self) {
        let first = {
            let _admission = self.admission.lock();
            !self.stopping.swap(true, Ordering::SeqCst)
        };
        if first {
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
            instance_id: self.instance_id.clone(),
            features: FEATURES
                .iter()
                .map(|f| (*f).to_owned())
                .chain(self.pool.has_object_store().then(|| S3_FEATURE.to_owned()))
                .collect(),
        }
    }

    /// Answers one request after the handshake. An accepted job is already queued when this returns, so a stop
    /// that follows cannot miss it.
    pub(crate) fn handle(&self, client: &Hello, request: Request) -> Response {
        if let Request::Submit(job) = request {
            return self.submit(client, &job);
        }
        match request {
            Request::Hello(hello) if hello.protocol != PROTOCOL_NAME || hello.version != PROTOCOL_VERSION => error(
                ErrorCode::VersionMismatch,
                format!(
                    "hello for {:?} version {} on a connection speaking {PROTOCOL_NAME} version {PROTOCOL_VERSION}",
                    hello.protocol, hello.version
                ),
            ),
            Request::Hello(_) => Response::Welcome(self.welcome()),
            Request::Submit(_) => unreachable!("handled above"),
            Request::Status(StatusQuery { job_id }) => match self.table.status(&job_id) {
                Some(status) => Response::Status(status),
                None => error(ErrorCode::UnknownJob, format!("no job with id {job_id:?} (unknown or expired)")),
            },
            Request::Stats(Empty {}) => Response::Stats(self.stats()),
            Request::Stop(Empty {}) => Response::Stopping(Empty {}),
            Request::Cancel(StatusQuery { job_id }) => self.cancel(&job_id),
            Request::BatchStatus(BatchQuery { batch }) => match self.table.batch_status(&batch) {
                Some(status) => Response::BatchStatus(Box::new(status)),
                None => error(ErrorCode::UnknownJob, format!("no batch named {batch:?} (unknown or expired)")),
            },
        }
    }

    fn submit(&self, hello: &Hello, job: &SubmitJob) -> Response {
        match self.accept(hello, job) {
            Ok(accepted) => Response::Accepted(accepted),
            Err(reply) => reply,
        }
    }

    /// Validates (without a lock), waits for room, then claims the segments, journals, records and queues the
    /// job in one short critical section; returns the acknowledgement.
    fn accept(&self, hello: &Hello, job: &SubmitJob) -> Result<Accepted, Response> {
        if self.stopping() {
            return Err(shutting_down());
        }
        // A repeated submission is answered before any wait: it needs no room, its job already has it.
        if let Some(accepted) = self.already_accepted(job) {
            return Ok(accepted);
        }
        if let Some(e) = self.table.journal_error() {
            return Err(Response::Error(crate::jobs::InsertError::JournalUnavailable(e).to_reply()));
        }
        // Without a client timestamp the job is stamped now and journaled so: recovery names it the same.
        let stamped = with_acceptance_time(job);
        let job = stamped.as_ref();
        let plan = plan_job(job, &self.spool_dir).map_err(|e| error(e.code, e.message))?;
        if plan.tasks.first().is_some_and(|t| t.settings.object_root.is_some()) && !self.pool.has_object_store() {
            return Err(error(
                ErrorCode::InvalidJob,
                format!(
                    "output_dir {:?} is S3 object storage, but this daemon has no S3 configuration (an endpoint or \
                     credentials: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or the config \
                     file's s3_* keys)",
                    job.output_dir
                ),
            ));
        }
        let needed = plan.held_bytes();
        if !self.table.wait_for_room(needed, self.queue_budget_bytes, self.busy_wait) {
            let held = self.table.counters().bytes_held;
            return Err(error(
                ErrorCode::Busy,
                format!(
                    "queue budget full ({held} of {} bytes held, the job needs {needed}); save locally or retry",
                    self.queue_budget_bytes
                ),
            ));
        }
        let _admission = self.admission.lock();
        if self.stopping() {
            return Err(shutting_down());
        }
        if let Some(accepted) = self.already_accepted(job) {
            return Ok(accepted);
        }
        claim(&plan.segments)?;
        let job_id = new_job_id();
        let client = ClientKey { name: hello.client.clone(), pid: hello.pid };
        // Journaled before the acknowledgement: from here on a crash cannot lose the job.
        if let Err(e) = self.table.insert(&job_id, client.clone(), &plan, job) {
            give_back(&plan.segments);
            return Err(Response::Error(e.to_reply()));
        }
        self.pool.push(work_items(&job_id, &client, &plan));
        // Debug level: a log line per job would sit on the acknowledgement's critical path.
        tracing::debug!(job = %job_id, client = %hello.client, images = plan.tasks.len(), "job accepted");
        Ok(Accepted { job_id, images: plan.tasks.len() as u32 })
    }

    /// The original acknowledgement of a repeated submission (same `submit_id`).
    fn already_accepted(&self, job: &SubmitJob) -> Option<Accepted> {
        let (job_id, images) = self.table.lookup_submit(job.submit_id.as_deref()?)?;
        tracing::info!(job = %job_id, "repeated submission answered with its original job");
        Some(Accepted { job_id, images })
    }

    fn cancel(&self, job_id: &str) -> Response {
        match self.table.cancel(job_id) {
            Some((images_cancelled, release)) => {
                release.hand_back(&self.table);
                tracing::info!(job = job_id, images_cancelled, "job cancelled");
                Response::Cancelled(CancelReply { job_id: job_id.to_owned(), images_cancelled })
            }
            None => error(ErrorCode::UnknownJob, format!("no job with id {job_id:?} (unknown or expired)")),
        }
    }

    fn stats(&self) -> DaemonStats {
        let c = self.table.counters();
        let pool = self.pool.stats();
        DaemonStats {
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            // From the table, not the pool's queue: a cancelled image still in the queue is not waiting.
            queue_depth: c.images_waiting(),
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

/// Takes ownership of the plan's segments, unless one was taken meanwhile (two submissions naming the same
/// segment, planned at once): the later one is refused and nothing is taken.
fn claim(segments: &[Segment]) -> Result<(), Response> {
    for (i, segment) in segments.iter().enumerate() {
        let taken = match segment.state() {
            Ok(SegmentState::Client) => segment
                .take_ownership()
                .map_err(|e| error(ErrorCode::Internal, format!("could not take segment {:?}: {e}", segment.name()))),
            Ok(_) => Err(error(
                ErrorCode::SegmentBusy,
                format!(
                    "segment {:?} is still owned by the daemon for an earlier job; wait until it is released \
                     (header state byte back to 0) before reusing it",
                    segment.name()
                ),
            )),
            Err(e) => Err(error(ErrorCode::Internal, format!("reading segment {:?} state: {e}", segment.name()))),
        };
        if let Err(reply) = taken {
            give_back(&segments[..i]);
            return Err(reply);
        }
    }
    Ok(())
}

fn work_items(job_id: &str, client: &ClientKey, plan: &JobPlan) -> Vec<WorkItem> {
    let id: Arc<str> = Arc::from(job_id);
    let task = |(index, task): (usize, &Arc<crate::jobs::ImageTask>)| WorkItem {
        job_id: Arc::clone(&id),
        index,
        client: client.clone(),
        task: Arc::clone(task),
        attempt: 0,
    };
    plan.tasks.iter().enumerate().map(task).collect()
}

fn shutting_down() -> Response {
    error(ErrorCode::ShuttingDown, "the daemon is shutting down; save locally")
}

/// Returns segments to their client after a refused submission (without unlinking them).
fn give_back(segments: &[Segment]) {
    for segment in segments {
        if let Err(e) = segment.give_back() {
            tracing::warn!(segment = segment.name(), "could not give a segment back: {e}");
        }
    }
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply::new(code, message))
}
