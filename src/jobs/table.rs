//! The job table: per-image state, per-client and daemon-wide counters, the journal of accepted jobs, and
//! expiry of finished jobs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::journal::{COMPACT_AT, Journal, Record};
use super::{ImageTask, JobPlan};
use crate::protocol::{ClientStats, ErrorCode, ErrorReply, GateScores, ImageState, ImageStatus, JobStatus, SubmitJob};
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
    /// Jobs accepted (including jobs recovered from the journal).
    pub jobs_accepted: u64,
    /// Jobs whose images were all written.
    pub jobs_done: u64,
    /// Jobs with a failed image.
    pub jobs_failed: u64,
    /// Images written (including those the gate sent to `_discarded`).
    pub images_written: u64,
    /// Images failed.
    pub images_failed: u64,
    /// Images queued, encoding or retrying.
    pub images_pending: u64,
    /// Pixel bytes of pending images.
    pub bytes_held: u64,
}

#[derive(Debug)]
struct JobRecord {
    client: ClientKey,
    job: Arc<SubmitJob>,
    images: Vec<ImageStatus>,
    pixel_bytes: Vec<u64>,
    tasks: Vec<Option<Arc<ImageTask>>>,
    pending_per_segment: HashMap<String, (usize, Arc<Segment>)>,
    /// Segments no image uses (a separate metadata blob): released when the whole job is final.
    extra_segments: Vec<Arc<Segment>>,
    unreleased_segments: usize,
    pending_images: usize,
    any_failed: bool,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<String, JobRecord>,
    /// submit_id -> job id, for jobs still in the table.
    by_submit_id: HashMap<String, String>,
    finished: VecDeque<(Instant, String)>,
    counters: Counters,
    clients: HashMap<ClientKey, ClientStats>,
}

/// The table of jobs, shared by connection handlers and workers.
#[derive(Debug)]
pub struct JobTable {
    inner: Mutex<Inner>,
    room: Condvar,
    retention: Duration,
    journal: Option<Mutex<Journal>>,
}

/// At most this many finished jobs are kept, whatever the retention time.
const MAX_FINISHED_JOBS: usize = 10_000;

/// What [`JobTable::finish`] hands back: segments with nothing left to do (the one whose last pending image
/// just finished and, when the whole job finished, segments only its metadata used).
pub type Release = Vec<Arc<Segment>>;

impl JobTable {
    /// An empty table that keeps finished jobs queryable for `retention`, journaling to `journal` if given.
    pub fn new(retention: Duration, journal: Option<Journal>) -> Self {
        Self { inner: Mutex::new(Inner::default()), room: Condvar::new(), retention, journal: journal.map(Mutex::new) }
    }

    fn journal(&self, record: &Record) -> std::io::Result<()> {
        match &self.journal {
            Some(j) => j.lock().append(record),
            None => Ok(()),
        }
    }

    /// Journals and records an accepted job with every image queued. Nothing is recorded if the journal
    /// cannot be written (the caller refuses the job).
    pub fn insert(&self, job_id: &str, client: ClientKey, plan: &JobPlan, job: &SubmitJob) -> std::io::Result<()> {
        let record = Record::Accepted {
            job_id: job_id.to_owned(),
            client: client.name.clone(),
            pid: client.pid,
            job: Box::new(job.clone()),
        };
        let tasks: Vec<Option<Arc<ImageTask>>> = plan.tasks.iter().cloned().map(Some).collect();
        let extra = extra_segments(&plan.segments, &tasks);
        // The table lock is held from the journal append to the insertion, so a compaction (which snapshots the
        // table under the same lock) can never drop a record whose job it did not see.
        let mut inner = self.inner.lock();
        self.journal(&record)?;
        self.insert_locked(&mut inner, job_id, client, Arc::new(job.clone()), tasks, HashMap::new(), extra);
        Ok(())
    }

    /// Records a job recovered from the journal: `tasks[i]` is `Err` for an image that can no longer be
    /// saved, `done` holds images finished before the crash. Returns the segments to hand back now (those
    /// with nothing left to do).
    pub fn insert_recovered(
        &self,
        job_id: &str,
        client: ClientKey,
        job: SubmitJob,
        (tasks, segments): super::Recovered,
        done: HashMap<u32, ImageStatus>,
    ) -> Vec<Arc<Segment>> {
        let mut finals = done;
        let mut live = Vec::with_capacity(tasks.len());
        for (index, task) in tasks.into_iter().enumerate() {
            match task {
                Ok(task) => live.push(Some(task)),
                Err(error) => {
                    live.push(None);
                    finals.entry(index as u32).or_insert_with(|| failed_status(index as u32, error));
                }
            }
        }
        let extra = extra_segments(&segments, &live);
        // Segments whose images are all final are handed back at once (with the extras, if nothing is left).
        let mut release: Vec<Arc<Segment>> = {
            let mut by_name: HashMap<String, (Arc<Segment>, bool)> = HashMap::new();
            for (index, task) in live.iter().enumerate() {
                if let Some(task) = task {
                    let pending = !finals.contains_key(&(index as u32));
                    by_name.entry(task.segment.name().to_owned()).or_insert((Arc::clone(&task.segment), false)).1 |=
                        pending;
                }
            }
            by_name.into_values().filter(|(_, pending)| !pending).map(|(s, _)| s).collect()
        };
        let nothing_left = (0..live.len()).all(|i| finals.contains_key(&(i as u32)));
        let held_extra = if nothing_left {
            release.extend(extra);
            Vec::new()
        } else {
            extra
        };
        let mut inner = self.inner.lock();
        self.insert_locked(&mut inner, job_id, client, Arc::new(job), live, finals, held_extra);
        release
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_locked(
        &self,
        inner: &mut Inner,
        job_id: &str,
        client: ClientKey,
        job: Arc<SubmitJob>,
        tasks: Vec<Option<Arc<ImageTask>>>,
        finals: HashMap<u32, ImageStatus>,
        extra_segments: Vec<Arc<Segment>>,
    ) {
        expire(inner, self.retention);
        let mut images = Vec::with_capacity(tasks.len());
        let mut pixel_bytes = Vec::with_capacity(tasks.len());
        let mut pending_per_segment: HashMap<String, (usize, Arc<Segment>)> = HashMap::new();
        let mut any_failed = false;
        let (mut pending, mut held) = (0usize, 0u64);
        for (index, task) in tasks.iter().enumerate() {
            let bytes = task.as_ref().map_or(0, |t| t.layout.length);
            pixel_bytes.push(bytes);
            if let Some(status) = finals.get(&(index as u32)) {
                any_failed |= status.state == ImageState::Failed;
                images.push(status.clone());
                continue;
            }
            let task = task.as_ref().expect("an image without a final status has a task");
            pending_per_segment.entry(task.segment.name().to_owned()).or_insert((0, Arc::clone(&task.segment))).0 += 1;
            pending += 1;
            held += bytes;
            images.push(ImageStatus {
                index: index as u32,
                slot: task.slot,
                batch_index: task.batch_index,
                state: ImageState::Queued,
                path: None,
                bytes: None,
                error: None,
                scores: None,
                notes: Vec::new(),
            });
        }
        inner.counters.jobs_accepted += 1;
        inner.counters.images_pending += pending as u64;
        inner.counters.bytes_held += held;
        let stats = client_stats(inner, &client);
        stats.jobs += 1;
        stats.images_pending += pending as u64;
        if pending == 0 {
            inner.finished.push_back((Instant::now(), job_id.to_owned()));
        }
        let record = JobRecord {
            client,
            job,
            images,
            pixel_bytes,
            tasks,
            unreleased_segments: pending_per_segment.len() + extra_segments.len(),
            pending_per_segment,
            extra_segments,
            pending_images: pending,
            any_failed,
        };
        if let Some(submit_id) = &record.job.submit_id {
            inner.by_submit_id.insert(submit_id.clone(), job_id.to_owned());
        }
        inner.jobs.insert(job_id.to_owned(), record);
    }

    /// The job (id and image count) a submission with this `submit_id` created, if it is still known.
    pub fn lookup_submit(&self, submit_id: &str) -> Option<(String, u32)> {
        let inner = self.inner.lock();
        let job_id = inner.by_submit_id.get(submit_id)?;
        let job = inner.jobs.get(job_id)?;
        Some((job_id.clone(), job.images.len() as u32))
    }

    /// Marks an image as being encoded. Returns false if the image is already final (cancelled), in which
    /// case the worker skips it.
    pub fn begin(&self, job_id: &str, index: usize) -> bool {
        let mut inner = self.inner.lock();
        match inner.jobs.get_mut(job_id).and_then(|j| j.images.get_mut(index)) {
            // Only a waiting image can start: one already encoding belongs to a worker (or to a cancel).
            Some(image) if matches!(image.state, ImageState::Queued | ImageState::Retrying) => {
                image.state = ImageState::Encoding;
                true
            }
            _ => false,
        }
    }

    /// Records a failed attempt that will be retried; `error` is shown in `status` meanwhile.
    pub fn mark_retrying(&self, job_id: &str, index: usize, error: ErrorReply, attempt: u32, next_in: Duration) {
        let mut inner = self.inner.lock();
        if let Some(image) = inner.jobs.get_mut(job_id).and_then(|j| j.images.get_mut(index))
            && !image.state.is_final()
        {
            image.state = ImageState::Retrying;
            image.error = Some(error);
            image.notes = vec![format!("attempt {attempt} failed; retrying in {:.1} s", next_in.as_secs_f64())];
        }
    }

    /// Records an image's final outcome. Returns the segment to hand back if this was the last pending image
    /// that used it.
    pub fn finish(&self, job_id: &str, index: usize, outcome: Result<SavedImage, ErrorReply>) -> Release {
        let mut inner = self.inner.lock();
        let Some(release) = finish_locked(&mut inner, job_id, index, outcome) else { return Vec::new() };
        // Journaled under the table lock, before any segment of the job can be handed back: a replay never
        // redoes an image whose segment the client may already be reusing.
        if let Some(status) = inner.jobs.get(job_id).map(|j| j.images[index].clone())
            && let Err(e) = self.journal(&Record::Done { job_id: job_id.to_owned(), status })
        {
            tracing::error!(job = job_id, "could not journal a finished image: {e}");
        }
        drop(inner);
        self.room.notify_all();
        release
    }

    /// Records that one of the job's segments was handed back; journals the job as released when it was the
    /// last one.
    pub fn segment_released(&self, job_id: &str) {
        let released = {
            let mut inner = self.inner.lock();
            match inner.jobs.get_mut(job_id) {
                Some(job) => {
                    job.unreleased_segments = job.unreleased_segments.saturating_sub(1);
                    job.unreleased_segments == 0 && job.pending_images == 0
                }
                None => false,
            }
        };
        if released && let Err(e) = self.journal(&Record::Released { job_id: job_id.to_owned() }) {
            tracing::error!(job = job_id, "could not journal a released job: {e}");
        }
    }

    /// Cancels every image of the job that is queued or retrying. Returns how many, and the segments to hand
    /// back; `None` if the job is unknown.
    pub fn cancel(&self, job_id: &str) -> Option<(u32, Vec<Arc<Segment>>)> {
        let indices: Vec<usize> = {
            let inner = self.inner.lock();
            let job = inner.jobs.get(job_id)?;
            job.images
                .iter()
                .filter(|i| matches!(i.state, ImageState::Queued | ImageState::Retrying))
                .map(|i| i.index as usize)
                .collect()
        };
        let mut releases = Vec::new();
        let mut cancelled = 0;
        for index in indices {
            let error = ErrorReply::new(ErrorCode::Cancelled, "cancelled before it was saved");
            // An image that started encoding in between keeps going; `finish` ignores it if it became final.
            if self.begin(job_id, index) {
                cancelled += 1;
                releases.extend(self.finish(job_id, index, Err(error)));
            }
        }
        Some((cancelled, releases))
    }

    /// Waits up to `timeout` until `extra` more bytes fit under `budget`. An empty queue always has room.
    pub fn wait_for_room(&self, extra: u64, budget: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut inner = self.inner.lock();
        loop {
            let held = inner.counters.bytes_held;
            if held == 0 || held.saturating_add(extra) <= budget {
                return true;
            }
            if self.room.wait_until(&mut inner, deadline).timed_out() {
                return false;
            }
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

    /// Names of the segments that unfinished jobs still use.
    pub fn segments_in_use(&self) -> std::collections::HashSet<String> {
        let inner = self.inner.lock();
        inner
            .jobs
            .values()
            .flat_map(|j| {
                j.pending_per_segment.keys().cloned().chain(j.extra_segments.iter().map(|s| s.name().to_owned()))
            })
            .collect()
    }

    /// The tasks of a job still waiting (used when queueing a recovered job).
    pub fn pending_tasks(&self, job_id: &str) -> Vec<(usize, Arc<ImageTask>)> {
        let inner = self.inner.lock();
        let Some(job) = inner.jobs.get(job_id) else { return Vec::new() };
        job.tasks
            .iter()
            .enumerate()
            .filter(|(i, _)| !job.images[*i].state.is_final())
            .filter_map(|(i, t)| t.clone().map(|t| (i, t)))
            .collect()
    }

    /// Makes journaled records durable and compacts the journal when it has grown past its limit.
    pub fn sync_journal(&self) {
        let Some(journal) = &self.journal else { return };
        let too_big = journal.lock().len() > COMPACT_AT;
        if too_big {
            self.compact_journal();
        }
        // fsync outside the lock: submits append (and wait for the lock) while the disk works.
        let handle = journal.lock().take_sync_handle();
        if let Err(e) = handle.and_then(|h| h.map_or(Ok(()), |h| h.sync_data())) {
            tracing::error!("could not sync the journal: {e}");
        }
    }

    /// Rewrites the journal with only the jobs that still need recovery.
    pub fn compact_journal(&self) {
        let Some(journal) = &self.journal else { return };
        // Hold the table lock so no record is appended between the snapshot and the rewrite.
        let inner = self.inner.lock();
        let mut records = Vec::new();
        for (job_id, job) in &inner.jobs {
            if job.pending_images == 0 && job.unreleased_segments == 0 {
                continue;
            }
            records.push(Record::Accepted {
                job_id: job_id.clone(),
                client: job.client.name.clone(),
                pid: job.client.pid,
                job: Box::new((*job.job).clone()),
            });
            for image in job.images.iter().filter(|i| i.state.is_final()) {
                records.push(Record::Done { job_id: job_id.clone(), status: image.clone() });
            }
        }
        let mut journal = journal.lock();
        let before = journal.len();
        match journal.rewrite(&records) {
            Ok(()) => tracing::info!(before, after = journal.len(), live_jobs = records.len(), "journal compacted"),
            Err(e) => tracing::error!("could not compact the journal: {e}"),
        }
        drop(inner);
    }
}

/// The job's segments that no image uses (a metadata blob in a segment of its own).
fn extra_segments(all: &[Arc<Segment>], tasks: &[Option<Arc<ImageTask>>]) -> Vec<Arc<Segment>> {
    let used: std::collections::HashSet<&str> = tasks.iter().flatten().map(|t| t.segment.name()).collect();
    all.iter().filter(|s| !used.contains(s.name())).cloned().collect()
}

fn failed_status(index: u32, error: ErrorReply) -> ImageStatus {
    ImageStatus {
        index,
        slot: 0,
        batch_index: 0,
        state: ImageState::Failed,
        path: None,
        bytes: None,
        error: Some(error),
        scores: None,
        notes: Vec::new(),
    }
}

/// The state change of [`JobTable::finish`], under the lock. `None` if the image is unknown or already final.
fn finish_locked(
    inner: &mut Inner,
    job_id: &str,
    index: usize,
    outcome: Result<SavedImage, ErrorReply>,
) -> Option<Release> {
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
            image.error = None;
        }
        Err(error) => {
            image.state = ImageState::Failed;
            image.error = Some(error);
            image.notes.clear();
        }
    }
    job.pending_images -= 1;
    job.any_failed |= failed;
    let job_finished = job.pending_images == 0;
    let job_failed = job.any_failed;
    let bytes = job.pixel_bytes[index];
    // The finished image's task (and with it an open handle on its segment) is not needed any more.
    let segment_name = job.tasks[index].take().map(|t| t.segment.name().to_owned()).unwrap_or_default();
    let mut release: Release = match job.pending_per_segment.get_mut(&segment_name) {
        Some((pending, _)) if *pending > 1 => {
            *pending -= 1;
            Vec::new()
        }
        Some(_) => job.pending_per_segment.remove(&segment_name).map(|(_, s)| s).into_iter().collect(),
        None => Vec::new(),
    };
    if job_finished {
        release.append(&mut job.extra_segments);
    }
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
    Some(release)
}

/// Per-client entries kept at most; idle clients (nothing pending) are forgotten beyond it.
const MAX_CLIENT_ENTRIES: usize = 256;

fn client_stats<'a>(inner: &'a mut Inner, client: &ClientKey) -> &'a mut ClientStats {
    if inner.clients.len() >= MAX_CLIENT_ENTRIES && !inner.clients.contains_key(client) {
        inner.clients.retain(|_, c| c.images_pending > 0);
    }
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
    let mut still_releasing = Vec::new();
    while let Some((at, id)) = inner.finished.front() {
        let too_old = now.duration_since(*at) > retention;
        if !too_old && inner.finished.len() <= MAX_FINISHED_JOBS {
            break;
        }
        let (at, id) = (*at, id.clone());
        inner.finished.pop_front();
        match inner.jobs.get(&id) {
            // A finished job whose segments are still being handed back stays until the next expiry.
            Some(job) if job.unreleased_segments > 0 => still_releasing.push((at, id)),
            Some(_) => {
                if let Some(submit_id) = inner.jobs.remove(&id).and_then(|j| j.job.submit_id.clone()) {
                    inner.by_submit_id.remove(&submit_id);
                }
            }
            None => {}
        }
    }
    for entry in still_releasing.into_iter().rev() {
        inner.finished.push_front(entry);
    }
}
