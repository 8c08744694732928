//! The job table: per-image state, per-client and daemon-wide counters, and expiry of finished jobs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::JobPlan;
use crate::protocol::{ClientStats, ErrorReply, GateScores, ImageState, ImageStatus, JobStatus};
use crate::shm::Segment;

/// Who submitted a job: the handshake's client name and process id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientKey {
    /// Client name from the handshake.
    pub name: String,
    /// Process id from the handshake.
    pub pid: Option<u32>,
}

/// A saved image, as reported to the table.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedImage {
    /// Final path.
    pub path: String,
    /// File size.
    pub bytes: u64,
    /// It failed the quality gate and went to `_discarded`.
    pub discarded: bool,
    /// Gate scores, when a gate ran.
    pub scores: Option<GateScores>,
    /// Notes for the user.
    pub notes: Vec<String>,
}

/// Daemon-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Jobs accepted.
    pub jobs_accepted: u64,
    /// Jobs whose images were all written.
    pub jobs_done: u64,
    /// Jobs with a failed image.
    pub jobs_failed: u64,
    /// Images written (including those the gate sent to `_discarded`).
    pub images_written: u64,
    /// Images failed.
    pub images_failed: u64,
    /// Images queued or encoding.
    pub images_pending: u64,
    /// Pixel bytes of pending images.
    pub bytes_held: u64,
}

#[derive(Debug)]
struct JobRecord {
    client: ClientKey,
    images: Vec<ImageStatus>,
    pixel_bytes: Vec<u64>,
    segment_of: Vec<String>,
    pending_per_segment: HashMap<String, (usize, Arc<Segment>)>,
    unreleased_segments: usize,
    pending_images: usize,
    any_failed: bool,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<String, JobRecord>,
    finished: VecDeque<(Instant, String)>,
    counters: Counters,
    clients: HashMap<ClientKey, ClientStats>,
}

/// The table of jobs, shared by connection handlers and workers.
#[derive(Debug)]
pub struct JobTable {
    inner: Mutex<Inner>,
    retention: Duration,
}

/// At most this many finished jobs are kept, whatever the retention time.
const MAX_FINISHED_JOBS: usize = 10_000;

impl JobTable {
    /// An empty table that keeps finished jobs queryable for `retention`.
    pub fn new(retention: Duration) -> Self {
        Self { inner: Mutex::new(Inner::default()), retention }
    }

    /// Records an accepted job with every image queued.
    pub fn insert(&self, job_id: &str, client: ClientKey, plan: &JobPlan) {
        let mut inner = self.inner.lock();
        expire(&mut inner, self.retention);
        let mut pending_per_segment: HashMap<String, (usize, Arc<Segment>)> = HashMap::new();
        for task in &plan.tasks {
            pending_per_segment.entry(task.segment.name().to_owned()).or_insert((0, Arc::clone(&task.segment))).0 += 1;
        }
        let pixel_bytes: Vec<u64> = plan.tasks.iter().map(|t| t.layout.length).collect();
        let n = plan.tasks.len();
        inner.counters.jobs_accepted += 1;
        inner.counters.images_pending += n as u64;
        inner.counters.bytes_held += pixel_bytes.iter().sum::<u64>();
        let stats = client_stats(&mut inner, &client);
        stats.jobs += 1;
        stats.images_pending += n as u64;
        let record = JobRecord {
            client,
            images: plan
                .tasks
                .iter()
                .enumerate()
                .map(|(index, task)| ImageStatus {
                    index: index as u32,
                    slot: task.slot,
                    batch_index: task.batch_index,
                    state: ImageState::Queued,
                    path: None,
                    bytes: None,
                    error: None,
                    scores: None,
                    notes: Vec::new(),
                })
                .collect(),
            pixel_bytes,
            segment_of: plan.tasks.iter().map(|t| t.segment.name().to_owned()).collect(),
            unreleased_segments: pending_per_segment.len(),
            pending_per_segment,
            pending_images: n,
            any_failed: false,
        };
        inner.jobs.insert(job_id.to_owned(), record);
    }

    /// Marks an image as being encoded.
    pub fn mark_encoding(&self, job_id: &str, index: usize) {
        if let Some(image) = self.inner.lock().jobs.get_mut(job_id).and_then(|j| j.images.get_mut(index)) {
            image.state = ImageState::Encoding;
        }
    }

    /// Records an image's final outcome. Returns the segment to hand back if this was the last pending image
    /// that used it.
    pub fn finish(&self, job_id: &str, index: usize, outcome: Result<SavedImage, ErrorReply>) -> Option<Arc<Segment>> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let job = inner.jobs.get_mut(job_id)?;
        let image = job.images.get_mut(index)?;
        if image.state.is_final() {
            return None;
        }
        let failed = outcome.is_err();
        match outcome {
            Ok(saved) => {
                image.state = if saved.discarded { ImageState::Discarded } else { ImageState::Written };
                image.path = Some(saved.path);
                image.bytes = Some(saved.bytes);
                image.scores = saved.scores;
                image.notes = saved.notes;
            }
            Err(error) => {
                image.state = ImageState::Failed;
                image.error = Some(error);
            }
        }
        job.pending_images -= 1;
        job.any_failed |= failed;
        let job_finished = job.pending_images == 0;
        let job_failed = job.any_failed;
        let bytes = job.pixel_bytes[index];
        let segment_name = job.segment_of[index].clone();
        let release = match job.pending_per_segment.get_mut(&segment_name) {
            Some((pending, _)) if *pending > 1 => {
                *pending -= 1;
                None
            }
            Some(_) => job.pending_per_segment.remove(&segment_name).map(|(_, s)| s),
            None => None,
        };
        let client = job.client.clone();
        let c = &mut inner.counters;
        c.images_pending -= 1;
        c.bytes_held -= bytes;
        if failed {
            c.images_failed += 1
        } else {
            c.images_written += 1
        }
        if job_finished {
            if job_failed {
                c.jobs_failed += 1
            } else {
                c.jobs_done += 1
            }
            inner.finished.push_back((Instant::now(), job_id.to_owned()));
        }
        let stats = client_stats(inner, &client);
        stats.images_pending -= 1;
        if failed {
            stats.images_failed += 1
        } else {
            stats.images_written += 1
        }
        release
    }

    /// Records that one of the job's segments was handed back to its client.
    pub fn segment_released(&self, job_id: &str) {
        if let Some(job) = self.inner.lock().jobs.get_mut(job_id) {
            job.unreleased_segments = job.unreleased_segments.saturating_sub(1);
        }
    }

    /// A job's status, if the job is known.
    pub fn status(&self, job_id: &str) -> Option<JobStatus> {
        let inner = self.inner.lock();
        let job = inner.jobs.get(job_id)?;
        Some(JobStatus {
            job_id: job_id.to_owned(),
            finished: job.pending_images == 0,
            segments_released: job.unreleased_segments == 0,
            images: job.images.clone(),
        })
    }

    /// Daemon-wide counters.
    pub fn counters(&self) -> Counters {
        self.inner.lock().counters
    }

    /// Per-client counters, sorted by client name then pid.
    pub fn clients(&self) -> Vec<ClientStats> {
        let mut clients: Vec<ClientStats> = self.inner.lock().clients.values().cloned().collect();
        clients.sort_by(|a, b| (&a.client, a.pid).cmp(&(&b.client, b.pid)));
        clients
    }
}

fn client_stats<'a>(inner: &'a mut Inner, client: &ClientKey) -> &'a mut ClientStats {
    inner.clients.entry(client.clone()).or_insert_with(|| ClientStats {
        client: client.name.clone(),
        pid: client.pid,
        jobs: 0,
        images_pending: 0,
        images_written: 0,
        images_failed: 0,
    })
}

fn expire(inner: &mut Inner, retention: Duration) {
    let now = Instant::now();
    while let Some((at, id)) = inner.finished.front() {
        let too_old = now.duration_since(*at) > retention;
        if !too_old && inner.finished.len() <= MAX_FINISHED_JOBS {
            break;
        }
        let id = id.clone();
        inner.finished.pop_front();
        inner.jobs.remove(&id);
    }
}
