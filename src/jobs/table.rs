//! The job table: every job's state (the rules live in [`super::state`]), per-client and daemon-wide
//! counters, the journal's health and compaction, and expiry of finished jobs. The lock order is the table,
//! then the journal; the journal's lock is never held while the table's is taken.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::batch::{self, Batches};
use super::journal::{self, Journal, JournalMark, Record};
use super::release::Release;
use super::state::{JobState, SegmentStage};
use super::task::ImageTask;
use super::{JobPlan, Recovered};
use crate::protocol::{
    BatchStatus, ClientStats, ErrorCode, ErrorReply, GateScores, ImageState, ImageStatus, JobStatus, SubmitJob,
};

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
    /// The thumbnail's final path, if one was written.
    pub thumbnail: Option<String>,
    /// The object's URL, for an `s3://` output root.
    pub url: Option<String>,
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
    /// Images a worker is encoding right now.
    pub images_encoding: u64,
    /// Memory held by unfinished jobs: pending images' pixel bytes plus their jobs' metadata.
    pub bytes_held: u64,
}

impl Counters {
    /// Images waiting for a worker (queued or retrying; a cancelled image is final, never counted).
    pub fn images_waiting(&self) -> u64 {
        self.images_pending.saturating_sub(self.images_encoding)
    }
}

/// Why a job could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum InsertError {
    /// The journal cannot be written: the job is not accepted (nothing was recorded).
    #[error("the daemon cannot write its journal ({0}); save locally until its state directory is writable")]
    JournalUnavailable(String),
    /// The job's batch group cannot take another job.
    #[error("{0}")]
    BatchFull(String),
}

impl InsertError {
    /// The wire form.
    pub fn to_reply(&self) -> ErrorReply {
        let code = match self {
            Self::JournalUnavailable(_) => ErrorCode::JournalUnavailable,
            Self::BatchFull(_) => ErrorCode::InvalidJob,
        };
        ErrorReply::new(code, self.to_string())
    }
}

#[derive(Debug)]
struct JobRecord {
    client: ClientKey,
    job: Arc<SubmitJob>,
    state: JobState,
}

#[derive(Debug, Default)]
struct Inner {
    jobs: HashMap<String, JobRecord>,
    /// submit_id -> job id, for jobs still in the table.
    by_submit_id: HashMap<String, String>,
    finished: VecDeque<(Instant, String)>,
    counters: Counters,
    clients: HashMap<ClientKey, ClientStats>,
    /// Why the journal cannot be written, while it cannot. Records are then not appended (a repair rewrites
    /// the journal from the table), segments stay daemon-owned, and no new job is accepted.
    journal_error: Option<String>,
    /// Records left out while the journal failed; a repair only counts if none were left out meanwhile.
    skipped_records: u64,
    /// Batch groups (journaled with their jobs' records).
    batches: Batches,
    /// Why a batch's last archive update failed, while it fails (not journaled).
    archive_errors: HashMap<String, String>,
}

/// A batch's images to add to its archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveWork {
    /// The batch.
    pub batch: String,
    /// The archive's directory (the batch's output root).
    pub dir: String,
    /// The archive comment marking the batch's own archive.
    pub token: String,
    /// The archive's file name, if it exists.
    pub archive: Option<String>,
    /// Final paths of the written images to add.
    pub paths: Vec<String>,
}

/// The table of jobs, shared by connection handlers and workers.
#[derive(Debug)]
pub struct JobTable {
    inner: Mutex<Inner>,
    room: Condvar,
    archive_ready: Condvar,
    retention: Duration,
    journal: Option<Mutex<Journal>>,
    /// One compaction at a time.
    compacting: Mutex<()>,
}

/// At most this many finished jobs are kept, whatever the retention time.
const MAX_FINISHED_JOBS: usize = 10_000;

impl JobTable {
    /// An empty table that keeps finished jobs queryable for `retention`, journaling to `journal` if given.
    pub fn new(retention: Duration, mut journal: Option<Journal>) -> Self {
        let mut batches = Batches::from_records(journal.as_mut().map(Journal::take_batches).unwrap_or_default());
        batches.expire(batch::now_ms(), retention_ms(retention));
        Self {
            inner: Mutex::new(Inner { batches, ..Inner::default() }),
            room: Condvar::new(),
            archive_ready: Condvar::new(),
            retention,
            journal: journal.map(Mutex::new),
            compacting: Mutex::new(()),
        }
    }

    /// Appends `record` unless the journal is failing; a failure marks it failing. Call with the table locked,
    /// so a compaction's snapshot and the journal always agree.
    fn journal_locked(&self, inner: &mut Inner, record: &Record) -> bool {
        let Some(journal) = &self.journal else { return true };
        if inner.journal_error.is_some() {
            inner.skipped_records += 1;
            return false;
        }
        match journal.lock().append(record) {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("could not append to the journal: {e}; accepting no new work until it is writable");
                inner.journal_error = Some(e.to_string());
                inner.skipped_records += 1;
                false
            }
        }
    }

    /// Why the journal cannot be written, if it cannot.
    pub fn journal_error(&self) -> Option<String> {
        self.inner.lock().journal_error.clone()
    }

    /// Journals and records an accepted job with every image queued. Nothing is recorded if the journal
    /// cannot be written (the caller refuses the job).
    pub fn insert(&self, job_id: &str, client: ClientKey, plan: &JobPlan, job: &SubmitJob) -> Result<(), InsertError> {
        let now = batch::now_ms();
        let record = Record::Accepted {
            job_id: job_id.to_owned(),
            client: client.name.clone(),
            pid: client.pid,
            job: Box::new(job.clone()),
            at_ms: Some(now),
        };
        let tasks: Vec<Option<Arc<ImageTask>>> = plan.tasks.iter().cloned().map(Some).collect();
        let metadata_bytes = plan.tasks.first().map_or(0, |t| t.settings.held_metadata_bytes());
        let metadata_segment = job.metadata_blob.as_ref().map(|b| b.segment.as_str());
        let state = JobState::new(
            tasks,
            HashMap::new(),
            plan.segment_refs(),
            &HashSet::new(),
            metadata_segment,
            metadata_bytes,
        );
        let mut inner = self.inner.lock();
        if let Some(e) = &inner.journal_error {
            return Err(InsertError::JournalUnavailable(e.clone()));
        }
        let zip_dir = job.zip.then_some(job.output_dir.as_str());
        if let Some(name) = &job.batch {
            inner.batches.check_join(name, zip_dir).map_err(InsertError::BatchFull)?;
        }
        if !self.journal_locked(&mut inner, &record) {
            let e = inner.journal_error.clone().unwrap_or_default();
            return Err(InsertError::JournalUnavailable(e));
        }
        if let Some(name) = &job.batch {
            inner.batches.add_job(name, job_id, plan.tasks.len() as u64, now, zip_dir);
        }
        let job = plan.tasks.first().map_or_else(|| Arc::new(job.clone()), |t| Arc::clone(&t.settings.job));
        insert_locked(&mut inner, self.retention, job_id, client, job, state);
        Ok(())
    }

    /// Records a job recovered from the journal: `tasks[i]` is `Err` for an image that can no longer be
    /// saved, `done` holds images finished before the crash, `released` the segments journaled as released.
    /// Returns the segments to hand back now (those with nothing left to do).
    pub fn insert_recovered(
        &self,
        job_id: &str,
        client: ClientKey,
        job: SubmitJob,
        (tasks, segments): Recovered,
        done: HashMap<u32, ImageStatus>,
        released: &HashSet<String>,
    ) -> Release {
        let mut finals = done;
        let mut live = Vec::with_capacity(tasks.len());
        let mut lost = Vec::new();
        for (index, task) in tasks.into_iter().enumerate() {
            match task {
                Ok(task) => live.push(Some(task)),
                Err(error) => {
                    live.push(None);
                    if let std::collections::hash_map::Entry::Vacant(e) = finals.entry(index as u32) {
                        let status = failed_status(index as u32, error);
                        lost.push(status.clone());
                        e.insert(status);
                    }
                }
            }
        }
        let metadata_bytes = live.iter().flatten().next().map_or(0, |t| t.settings.held_metadata_bytes());
        let metadata_segment = job.metadata_blob.as_ref().map(|b| b.segment.clone());
        let state = JobState::new(live, finals, segments, released, metadata_segment.as_deref(), metadata_bytes);
        let mut inner = self.inner.lock();
        if let Some(name) = &job.batch {
            // The replay counted the job and its images final before the crash; the lost ones are new finals.
            let now = batch::now_ms();
            let zip_dir = job.zip.then_some(job.output_dir.as_str());
            inner.batches.add_job(name, job_id, state.images().len() as u64, now, zip_dir);
            for status in &lost {
                inner.batches.add_final(job_id, status, now);
            }
        }
        insert_locked(&mut inner, self.retention, job_id, client, Arc::new(job), state);
        self.collect_due(&mut inner, job_id)
    }

    /// Journals `released` for the job's segments that nothing needs any more and returns them to hand back.
    /// While the journal fails they stay due (daemon-owned); the repair hands them back.
    fn collect_due(&self, inner: &mut Inner, job_id: &str) -> Release {
        let mut release = Release::none();
        let due = inner.jobs.get(job_id).map(|j| j.state.due_segments()).unwrap_or_default();
        for segment in due {
            let record = Record::SegmentReleased { job_id: job_id.to_owned(), segment: segment.name().to_owned() };
            if !self.journal_locked(inner, &record) {
                break;
            }
            if let Some(job) = inner.jobs.get_mut(job_id) {
                job.state.set_stage(segment.name(), SegmentStage::Journaled);
            }
            release.push(job_id, segment);
        }
        release
    }

    /// The job (id and image count) a submission with this `submit_id` created, if it is still known.
    pub fn lookup_submit(&self, submit_id: &str) -> Option<(String, u32)> {
        let inner = self.inner.lock();
        let job_id = inner.by_submit_id.get(submit_id)?;
        let job = inner.jobs.get(job_id)?;
        Some((job_id.clone(), job.state.images().len() as u32))
    }

    /// Marks an image as being encoded. Returns false if the image is not waiting (cancelled, or another
    /// worker has it), in which case the worker skips it.
    pub fn begin(&self, job_id: &str, index: usize) -> bool {
        let mut inner = self.inner.lock();
        let started = inner.jobs.get_mut(job_id).is_some_and(|j| j.state.begin(index));
        if started {
            inner.counters.images_encoding += 1;
        }
        started
    }

    /// Records a failed attempt that will be retried; `error` is shown in `status` meanwhile.
    pub fn mark_retrying(&self, job_id: &str, index: usize, error: ErrorReply, attempt: u32, next_in: Duration) {
        let mut inner = self.inner.lock();
        if inner.jobs.get_mut(job_id).is_some_and(|j| j.state.retrying(index, error, attempt, next_in)) {
            inner.counters.images_encoding = inner.counters.images_encoding.saturating_sub(1);
        }
    }

    /// Records an image's final outcome (the image was begun). Returns the segments to hand back: the one whose
    /// last pending image this was, and the job's metadata segment when the job is final.
    pub fn finish(&self, job_id: &str, index: usize, outcome: Result<SavedImage, ErrorReply>) -> Release {
        let release = {
            let mut inner = self.inner.lock();
            let Some(status) = finish_locked(&mut inner, job_id, index, outcome) else { return Release::none() };
            // Journaled before any segment of the job can be handed back: a replay never redoes an image whose
            // segment the client may already be reusing.
            let now = batch::now_ms();
            inner.batches.add_final(job_id, &status, now);
            if status.state == ImageState::Written {
                self.archive_ready.notify_all();
            }
            self.journal_locked(&mut inner, &Record::Done { job_id: job_id.to_owned(), status, at_ms: Some(now) });
            self.collect_due(&mut inner, job_id)
        };
        self.room.notify_all();
        release
    }

    /// Records that a segment was handed back.
    pub fn segment_handed_back(&self, job_id: &str, segment: &str) {
        let mut inner = self.inner.lock();
        if let Some(job) = inner.jobs.get_mut(job_id) {
            job.state.set_stage(segment, SegmentStage::HandedBack);
        }
    }

    /// Cancels every image of the job that is queued or retrying. Returns how many, and the segments to hand
    /// back; `None` if the job is unknown.
    pub fn cancel(&self, job_id: &str) -> Option<(u32, Release)> {
        let indices = self.inner.lock().jobs.get(job_id)?.state.cancellable();
        let mut release = Release::none();
        let mut cancelled = 0;
        for index in indices {
            let error = ErrorReply::new(ErrorCode::Cancelled, "cancelled before it was saved");
            // An image that started encoding in between keeps going; `finish` ignores it if it became final.
            if self.begin(job_id, index) {
                cancelled += 1;
                release.append(self.finish(job_id, index, Err(error)));
            }
        }
        Some((cancelled, release))
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
            finished: job.state.pending_images() == 0,
            segments_released: job.state.all_handed_back(),
            images: job.state.images().to_vec(),
        })
    }

    /// A batch group's summary, if the batch is known: its journaled counts plus, from its jobs still in the
    /// table, how many images are queued, encoding or retrying.
    pub fn batch_status(&self, name: &str) -> Option<BatchStatus> {
        let inner = self.inner.lock();
        let record = inner.batches.get(name)?;
        let (mut queued, mut encoding, mut retrying) = (0, 0, 0);
        for job in record.jobs.iter().filter_map(|id| inner.jobs.get(id)) {
            for image in job.state.images() {
                match image.state {
                    ImageState::Queued => queued += 1,
                    ImageState::Encoding => encoding += 1,
                    ImageState::Retrying => retrying += 1,
                    _ => {}
                }
            }
        }
        Some(BatchStatus {
            batch: record.name.clone(),
            jobs: record.jobs.clone(),
            images: record.images,
            queued,
            encoding,
            retrying,
            written: record.written,
            discarded: record.discarded,
            failed: record.failed,
            bytes: record.bytes,
            first_accepted_ms: record.first_accepted_ms,
            last_final_ms: record.last_final_ms,
            finished: record.pending() == 0,
            zip: record.zip,
            archive: record
                .archive
                .as_ref()
                .map(|a| std::path::Path::new(&record.zip_dir).join(a).to_string_lossy().into_owned()),
            archived: record.archived,
            archive_pending: record.archive_pending.len() as u64,
            archive_error: inner.archive_errors.get(name).cloned(),
        })
    }

    /// A batch with written images waiting for its archive (not one in `skip`): what to archive.
    pub fn archive_work(&self, skip: &HashSet<String>) -> Option<ArchiveWork> {
        let inner = self.inner.lock();
        let b = inner.batches.archive_work(skip)?;
        Some(ArchiveWork {
            batch: b.name.clone(),
            dir: b.zip_dir.clone(),
            token: b.archive_token(),
            archive: b.archive.clone(),
            paths: b.archive_pending.clone(),
        })
    }

    /// Waits up to `timeout` for an image to be written for an archived batch.
    pub fn wait_archive_work(&self, timeout: Duration) {
        let mut inner = self.inner.lock();
        let _ = self.archive_ready.wait_for(&mut inner, timeout);
    }

    /// Journals that `paths` of `batch` are in its archive `archive` (renamed into place) and records it.
    pub fn archived(&self, batch: &str, archive: &str, paths: Vec<String>) {
        let mut inner = self.inner.lock();
        inner.archive_errors.remove(batch);
        inner.batches.archived(batch, archive, &paths);
        let record = Record::Archived { batch: batch.to_owned(), archive: archive.to_owned(), paths };
        self.journal_locked(&mut inner, &record);
    }

    /// Records why the last archive update of `batch` failed (shown in `batch_status` until one succeeds).
    pub fn archive_failed(&self, batch: &str, error: String) {
        self.inner.lock().archive_errors.insert(batch.to_owned(), error);
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

    /// Names of the segments that jobs have not handed back yet.
    pub fn segments_in_use(&self) -> HashSet<String> {
        let inner = self.inner.lock();
        inner.jobs.values().flat_map(|j| j.state.segments_in_use().map(str::to_owned)).collect()
    }

    /// The tasks of a job still waiting (used when queueing a recovered job).
    pub fn pending_tasks(&self, job_id: &str) -> Vec<(usize, Arc<ImageTask>)> {
        let inner = self.inner.lock();
        inner.jobs.get(job_id).map(|j| j.state.pending_tasks()).unwrap_or_default()
    }

    /// The flusher's tick: repairs a failing journal (and then hands back the segments held meanwhile),
    /// compacts it when it has grown enough, and makes appended records durable.
    pub fn sync_journal(&self) {
        let Some(journal) = &self.journal else { return };
        if self.journal_error().is_some() {
            self.repair_journal().hand_back(self);
            return;
        }
        if journal.lock().compaction_due()
            && let Err(e) = self.compact_journal()
        {
            tracing::error!("could not compact the journal: {e}");
        }
        // fsync outside the journal's lock: submits append (and wait for the lock) while the disk works.
        let Ok(ticket) = journal.lock().sync_ticket() else { return };
        let Some(ticket) = ticket else { return };
        match ticket.sync() {
            Ok(()) => journal.lock().mark_synced(&ticket),
            Err(e) => {
                // After a failed fdatasync the kernel may have dropped the dirty pages: only a rewrite from the
                // table makes the journal trustworthy again.
                tracing::error!("could not sync the journal: {e}; accepting no new work until it is writable");
                let mut inner = self.inner.lock();
                inner.journal_error.get_or_insert_with(|| e.to_string());
            }
        }
    }

    /// Rewrites a failing journal from the table; on success new work is accepted again and the segments kept
    /// daemon-owned meanwhile are returned, to hand back.
    fn repair_journal(&self) -> Release {
        let skipped_before = self.inner.lock().skipped_records;
        if let Err(e) = self.compact_journal() {
            tracing::debug!("the journal is still not writable: {e}");
            return Release::none();
        }
        let mut inner = self.inner.lock();
        if inner.skipped_records != skipped_before {
            return Release::none(); // something changed unjournaled meanwhile: the next tick rewrites again
        }
        inner.journal_error = None;
        tracing::info!("the journal is writable again; accepting new work");
        let ids: Vec<String> = inner.jobs.keys().cloned().collect();
        let mut release = Release::none();
        for id in ids {
            release.append(self.collect_due(&mut inner, &id));
        }
        release
    }

    /// Rewrites the journal with only the jobs that still need recovery: the snapshot is taken under the
    /// table's lock, written and fsynced without any lock, then swapped in under the journal's lock.
    pub fn compact_journal(&self) -> std::io::Result<()> {
        let Some(journal) = &self.journal else { return Ok(()) };
        let _one_at_a_time = self.compacting.lock();
        let (records, mark, dir): (Vec<Record>, JournalMark, _) = {
            let inner = self.inner.lock();
            let journal = journal.lock();
            (snapshot(&inner), journal.mark(), journal.dir())
        };
        let snapshot = Journal::write_snapshot(&dir, &records)?;
        let before = {
            let mut journal = journal.lock();
            let before = journal.len();
            journal.install(snapshot, mark)?;
            before
        };
        journal::sync_dir(&dir)?;
        tracing::info!(before, live_records = records.len(), "journal compacted");
        Ok(())
    }

    /// Makes the journal's growth threshold small (tests).
    pub fn set_compact_after(&self, bytes: u64) {
        if let Some(journal) = &self.journal {
            journal.lock().set_compact_after(bytes);
        }
    }
}

/// The records that describe every job still needing recovery.
fn snapshot(inner: &Inner) -> Vec<Record> {
    let mut records = Vec::new();
    for (job_id, job) in &inner.jobs {
        if !job.state.needs_recovery() {
            continue;
        }
        records.push(Record::Accepted {
            job_id: job_id.clone(),
            client: job.client.name.clone(),
            pid: job.client.pid,
            job: Box::new((*job.job).clone()),
            at_ms: None,
        });
        for image in job.state.images().iter().filter(|i| i.state.is_final()) {
            records.push(Record::Done { job_id: job_id.clone(), status: image.clone(), at_ms: None });
        }
        for segment in job.state.journaled_released() {
            records.push(Record::SegmentReleased { job_id: job_id.clone(), segment: segment.to_owned() });
        }
    }
    // After the jobs' records: each batch record replaces what they added on replay (jobs finished and dropped
    // from the snapshot are counted only here).
    records.extend(inner.batches.records().map(|b| Record::Batch { batch: b.clone() }));
    records
}

fn retention_ms(retention: Duration) -> i64 {
    i64::try_from(retention.as_millis()).unwrap_or(i64::MAX)
}

fn insert_locked(
    inner: &mut Inner,
    retention: Duration,
    job_id: &str,
    client: ClientKey,
    job: Arc<SubmitJob>,
    state: JobState,
) {
    expire(inner, retention);
    inner.batches.expire(batch::now_ms(), retention_ms(retention));
    let pending = state.pending_images() as u64;
    inner.counters.jobs_accepted += 1;
    inner.counters.images_pending += pending;
    inner.counters.bytes_held += state.held_bytes();
    let stats = client_stats(inner, &client);
    stats.jobs += 1;
    stats.images_pending += pending;
    if pending == 0 {
        inner.finished.push_back((Instant::now(), job_id.to_owned()));
    }
    if let Some(submit_id) = &job.submit_id {
        inner.by_submit_id.insert(submit_id.clone(), job_id.to_owned());
    }
    inner.jobs.insert(job_id.to_owned(), JobRecord { client, job, state });
}

fn failed_status(index: u32, error: ErrorReply) -> ImageStatus {
    ImageStatus {
        index,
        slot: 0,
        batch_index: 0,
        state: crate::protocol::ImageState::Failed,
        path: None,
        bytes: None,
        error: Some(error),
        scores: None,
        notes: Vec::new(),
        thumbnail: None,
        url: None,
    }
}

/// The state change of [`JobTable::finish`] and its counters, under the lock. Returns the image's final
/// status; `None` if the image is unknown or already final.
fn finish_locked(
    inner: &mut Inner,
    job_id: &str,
    index: usize,
    outcome: Result<SavedImage, ErrorReply>,
) -> Option<ImageStatus> {
    let job = inner.jobs.get_mut(job_id)?;
    let finished = job.state.finish(index, outcome)?;
    let status = job.state.images()[index].clone();
    let job_failed = job.state.any_failed();
    let client = job.client.clone();
    let c = &mut inner.counters;
    c.images_pending -= 1;
    c.images_encoding = c.images_encoding.saturating_sub(1);
    c.bytes_held = c.bytes_held.saturating_sub(finished.bytes_freed);
    if finished.failed {
        c.images_failed += 1
    } else {
        c.images_written += 1
    }
    if finished.job_finished {
        if job_failed {
            c.jobs_failed += 1
        } else {
            c.jobs_done += 1
        }
        inner.finished.push_back((Instant::now(), job_id.to_owned()));
    }
    let stats = client_stats(inner, &client);
    stats.images_pending -= 1;
    if finished.failed {
        stats.images_failed += 1
    } else {
        stats.images_written += 1
    }
    Some(status)
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
            Some(job) if !job.state.all_handed_back() => still_releasing.push((at, id)),
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
