//! The job journal: accepted jobs are appended before the acknowledgement, final image outcomes and segment
//! hand-backs after, so a daemon killed at any point can finish every accepted job on restart.
//!
//! File `<state_dir>/journal.v1`: a sequence of records, each `u32 LE length`, `u32 LE CRC-32 of the body`,
//! then the MessagePack body. Replay stops at the first torn or corrupt record (a crash mid-append) and cuts
//! the file there. The file is rewritten with only the live jobs at start-up and whenever it has grown by
//! [`COMPACT_AT`] since the last rewrite (growth, not size: live records alone may exceed any threshold), so it
//! does not grow without bound and is never rewritten in a loop.
//!
//! Segment hand-back order: a `segment_released` record is appended *before* the segment's header says the
//! client owns it again. A crash between the two leaves a daemon-owned segment no journaled job needs, which
//! start-up reclaims; the opposite order would let recovery release a segment a later job already uses.
//!
//! Compaction writes the snapshot without any lock ([`Journal::write_snapshot`]), then, under the journal's
//! lock, copies the records appended meanwhile, closes the journal, renames the new file over it and reopens it
//! ([`Journal::install`]): Windows cannot replace a file that is open, and appends wait only for that swap.
//!
//! Durability: records are written (`write`) before the acknowledgement, which survives the daemon being
//! killed (SIGKILL, OOM); they are `fdatasync`ed within [`SYNC_INTERVAL`]. A power loss can lose the last
//! moments of records, but it also loses the segments themselves (tmpfs), so nothing more is lost than the
//! pixels already were.

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::protocol::{self, ImageStatus, SubmitJob};

/// The journal is rewritten when it grows past this many bytes.
pub const COMPACT_AT: u64 = 16 << 20;
/// How often the daemon makes appended records durable.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// Largest record accepted on replay (a job with inline metadata stays well below the 1 MiB frame cap).
const MAX_RECORD: u32 = 8 << 20;

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum Record {
    /// A job was accepted (written before the client hears so).
    Accepted {
        /// The job id.
        job_id: String,
        /// Client name.
        client: String,
        /// Client pid.
        pid: Option<u32>,
        /// The job exactly as submitted.
        job: Box<SubmitJob>,
        /// When it was accepted (ms since the Unix epoch; batch groups' time span). Absent in older journals.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_ms: Option<i64>,
    },
    /// An image reached a final state.
    Done {
        /// The job id.
        job_id: String,
        /// The image's final status.
        status: ImageStatus,
        /// When it became final (ms since the Unix epoch; batch groups' time span). Absent in older journals.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at_ms: Option<i64>,
    },
    /// Every image is final and every segment was handed back: the job needs no recovery. (Written by
    /// earlier versions; still read.)
    Released {
        /// The job id.
        job_id: String,
    },
    /// One of the job's segments is about to be handed back (written before its header says so). A job whose
    /// images are all done and whose segments are all released needs no recovery.
    SegmentReleased {
        /// The job id.
        job_id: String,
        /// The segment's name.
        segment: String,
    },
    /// Written images of a batch are in its archive now (appended after the archive's rename).
    Archived {
        /// The batch.
        batch: String,
        /// The archive's file name in the batch's `zip_dir`.
        archive: String,
        /// The images' final paths.
        paths: Vec<String>,
    },
    /// A batch group's counts as of this point (compaction writes one per live batch, after the records of the
    /// unfinished jobs it already counts): replay replaces what earlier records added.
    Batch {
        /// The batch.
        batch: super::batch::BatchRecord,
    },
}

/// A job found unfinished in the journal.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    /// The job id.
    pub job_id: String,
    /// Client name.
    pub client: String,
    /// Client pid.
    pub pid: Option<u32>,
    /// The job as submitted.
    pub job: SubmitJob,
    /// Images already final, by index.
    pub done: BTreeMap<u32, ImageStatus>,
    /// Segments journaled as released, or named by a later accepted job (which can only happen after they
    /// were handed back): recovery never hands these back again.
    pub released: HashSet<String>,
}

/// Why the journal could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("journal {path}: {source}")]
pub struct JournalError {
    /// The journal file.
    pub path: PathBuf,
    /// What failed.
    pub source: io::Error,
}

/// The open journal.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// `None` only during [`Journal::install`]'s swap (closed so the rename works on Windows too).
    file: Option<File>,
    len: u64,
    /// Appends so far (a generation count), and how many of them are known durable.
    appended: u64,
    synced: u64,
    /// Bumped when the file is replaced: a sync of the old file says nothing about the new one.
    epoch: u64,
    /// Size right after the last rewrite (or at open): compaction is due on growth beyond it.
    base_len: u64,
    compact_after: u64,
    /// Batch groups rebuilt by the replay, until the table takes them ([`Journal::take_batches`]).
    replayed_batches: Vec<super::batch::BatchRecord>,
}

/// A handle to `fdatasync` without holding the journal's lock, and what it covers.
#[derive(Debug)]
pub struct SyncTicket {
    file: File,
    epoch: u64,
    generation: u64,
}

impl SyncTicket {
    /// `fdatasync`s the records the ticket covers.
    pub fn sync(&self) -> io::Result<()> {
        crate::fault::fail("journal.sync")?;
        self.file.sync_data()
    }
}

/// Where the journal was when a compaction snapshot was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalMark {
    epoch: u64,
    len: u64,
}

/// A compacted journal written to a temp file next to the journal, not yet installed.
#[derive(Debug)]
pub struct Snapshot {
    temp: tempfile::NamedTempFile,
    len: u64,
}

impl Journal {
    /// Opens (or creates) the journal in `state_dir`, replays it, cuts a torn tail, and returns the jobs that
    /// were accepted but not released, in acceptance order.
    pub fn open(state_dir: &Path) -> Result<(Self, Vec<Unfinished>), JournalError> {
        let path = state_dir.join("journal.v1");
        let err = |source| JournalError { path: path.clone(), source };
        let mut file = open_rw(&path).map_err(err)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(err)?;
        let (records, valid_len) = parse(&bytes);
        if valid_len < bytes.len() {
            tracing::warn!(
                "journal {}: ignoring a torn or corrupt tail of {} bytes (the daemon died mid-write)",
                path.display(),
                bytes.len() - valid_len
            );
            file.set_len(valid_len as u64).map_err(err)?;
        }
        file.seek(SeekFrom::End(0)).map_err(err)?;
        let len = valid_len as u64;
        let replayed_batches = replay_batches(&records);
        let journal = Self {
            path: path.clone(),
            file: Some(file),
            len,
            appended: 0,
            synced: 0,
            epoch: 0,
            base_len: len,
            compact_after: COMPACT_AT,
            replayed_batches,
        };
        Ok((journal, unfinished(records)))
    }

    /// The batch groups the replay rebuilt (once; later calls return nothing).
    pub fn take_batches(&mut self) -> Vec<super::batch::BatchRecord> {
        std::mem::take(&mut self.replayed_batches)
    }

    /// Sets how much growth since the last rewrite makes a compaction due (tests use small values).
    pub fn set_compact_after(&mut self, bytes: u64) {
        self.compact_after = bytes;
    }

    fn file(&mut self) -> io::Result<&mut File> {
        self.file.as_mut().ok_or_else(|| io::Error::other("the journal is closed (a failed rewrite)"))
    }

    /// Appends a record with one `write` (not yet fsynced). A failed append leaves the file as it was.
    pub fn append(&mut self, record: &Record) -> io::Result<()> {
        crate::fault::fail("journal.append")?;
        let framed = frame(record)?;
        let len = self.len;
        let file = self.file()?;
        if let Err(e) = file.write_all(&framed) {
            // Cut a partial record off, or it would hide every later record from the next replay.
            let _ = file.set_len(len);
            let _ = file.seek(SeekFrom::Start(len));
            return Err(e);
        }
        self.len += framed.len() as u64;
        self.appended += 1;
        Ok(())
    }

    /// Makes appended records durable (holding the lock; the daemon uses [`Journal::sync_ticket`]).
    pub fn sync(&mut self) -> io::Result<()> {
        match self.sync_ticket()? {
            Some(ticket) => {
                ticket.sync()?;
                self.mark_synced(&ticket);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// A second handle to sync with if records were appended since the last successful sync, so the caller
    /// can fsync without holding the journal's lock (appends, which acknowledgements wait for, are never
    /// stalled by it). Nothing counts as synced until [`Journal::mark_synced`] after the sync succeeded.
    pub fn sync_ticket(&mut self) -> io::Result<Option<SyncTicket>> {
        if self.synced == self.appended {
            return Ok(None);
        }
        let (epoch, generation) = (self.epoch, self.appended);
        let file = self.file()?.try_clone()?;
        Ok(Some(SyncTicket { file, epoch, generation }))
    }

    /// Records that the sync of `ticket` succeeded.
    pub fn mark_synced(&mut self, ticket: &SyncTicket) {
        if ticket.epoch == self.epoch {
            self.synced = self.synced.max(ticket.generation);
        }
    }

    /// Whether appended records are waiting for a successful sync.
    pub fn has_unsynced(&self) -> bool {
        self.synced != self.appended
    }

    /// Current size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the journal holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the journal has grown enough since the last rewrite to be compacted.
    pub fn compaction_due(&self) -> bool {
        self.len.saturating_sub(self.base_len) > self.compact_after
    }

    /// Where the journal is now; take it together with the snapshot of what it describes.
    pub fn mark(&self) -> JournalMark {
        JournalMark { epoch: self.epoch, len: self.len }
    }

    /// The directory the journal lives in.
    pub fn dir(&self) -> PathBuf {
        self.path.parent().unwrap_or(Path::new(".")).to_path_buf()
    }

    /// Writes `records` to a temp file in `dir` and fsyncs it. Needs no lock.
    pub fn write_snapshot(dir: &Path, records: &[Record]) -> io::Result<Snapshot> {
        crate::fault::fail("journal.rewrite")?;
        let mut temp = tempfile::Builder::new().prefix(".journal-").tempfile_in(dir)?;
        let mut len = 0u64;
        let mut out = io::BufWriter::new(temp.as_file_mut());
        for record in records {
            let framed = frame(record)?;
            out.write_all(&framed)?;
            len += framed.len() as u64;
        }
        out.flush()?;
        drop(out);
        temp.as_file().sync_all()?;
        Ok(Snapshot { temp, len })
    }

    /// Replaces the journal with `snapshot` plus every record appended since `mark`: closes the journal, renames
    /// the snapshot over it and reopens it. The copied tail is not fsynced here: like any fresh append, the
    /// next sync covers it. Call [`sync_dir`] afterwards (without the lock) to make the rename durable.
    pub fn install(&mut self, snapshot: Snapshot, mark: JournalMark) -> io::Result<()> {
        if mark.epoch != self.epoch || mark.len > self.len {
            return Err(io::Error::other("the journal was replaced since the snapshot"));
        }
        let mut tail = Vec::with_capacity((self.len - mark.len) as usize);
        {
            let mut reader = File::open(&self.path)?;
            reader.seek(SeekFrom::Start(mark.len))?;
            reader.take(self.len - mark.len).read_to_end(&mut tail)?;
        }
        let Snapshot { mut temp, len } = snapshot;
        temp.as_file_mut().seek(SeekFrom::End(0))?;
        temp.as_file_mut().write_all(&tail)?;
        // Closed before the rename: Windows refuses to replace a file that is open.
        self.file = None;
        let persisted = temp.persist(&self.path);
        let mut file = open_rw(&self.path)?;
        file.seek(SeekFrom::End(0))?;
        self.file = Some(file);
        persisted.map_err(|e| e.error)?;
        self.len = len + tail.len() as u64;
        self.base_len = self.len;
        self.epoch += 1;
        self.synced = self.appended;
        if !tail.is_empty() {
            self.appended += 1;
        }
        Ok(())
    }

    /// Replaces the journal with `records` at once (start-up and tests): snapshot, install, directory sync.
    pub fn rewrite(&mut self, records: &[Record]) -> io::Result<()> {
        let snapshot = Self::write_snapshot(&self.dir(), records)?;
        self.install(snapshot, self.mark())?;
        sync_dir(&self.dir())
    }
}

/// Makes a rename in `dir` durable (a no-op where directories cannot be opened).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)
}

fn frame(record: &Record) -> io::Result<Vec<u8>> {
    let body = protocol::encode_message(record).map_err(io::Error::other)?;
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend((body.len() as u32).to_le_bytes());
    out.extend(crc32fast::hash(&body).to_le_bytes());
    out.extend(body);
    Ok(out)
}

/// Parses records until the end or the first torn / corrupt one; returns them and the valid prefix length.
fn parse(bytes: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let end = at + 8 + len as usize;
        if len > MAX_RECORD || end > bytes.len() || crc32fast::hash(&bytes[at + 8..end]) != crc {
            break;
        }
        match protocol::decode_message::<Record>(&bytes[at + 8..end]) {
            Ok(record) => records.push(record),
            Err(e) => {
                tracing::warn!("journal record at byte {at} does not decode ({e}); ignoring the rest");
                break;
            }
        }
        at = end;
    }
    (records, at)
}

/// The segments a job names (pixels and metadata blob).
pub fn job_segments(job: &SubmitJob) -> HashSet<String> {
    let pixels = job.slots.iter().flat_map(|s| &s.images).map(|i| i.segment.clone());
    pixels.chain(job.metadata_blob.iter().map(|b| b.segment.clone())).collect()
}

/// Folds records into the jobs still needing work.
fn unfinished(records: Vec<Record>) -> Vec<Unfinished> {
    let mut order = Vec::new();
    let mut jobs: BTreeMap<String, Unfinished> = BTreeMap::new();
    for record in records {
        match record {
            Record::Accepted { job_id, client, pid, mut job, at_ms } => {
                // Accepted without a client timestamp by a daemon that did not stamp it into the job yet: its
                // acceptance time names it, as the daemon accepting it would have (not the recovery's clock).
                if job.timestamp_ms.is_none() {
                    job.timestamp_ms = at_ms;
                }
                // A segment a later job names was handed back before that job was accepted: an earlier job
                // must never release it again, whatever its own records say.
                let named = job_segments(&job);
                for earlier in jobs.values_mut() {
                    earlier.released.extend(job_segments(&earlier.job).intersection(&named).cloned());
                }
                order.push(job_id.clone());
                let done = BTreeMap::new();
                let released = HashSet::new();
                jobs.insert(job_id.clone(), Unfinished { job_id, client, pid, job: *job, done, released });
            }
            Record::Done { job_id, status, .. } => {
                if let Some(job) = jobs.get_mut(&job_id) {
                    job.done.insert(status.index, status);
                }
            }
            Record::SegmentReleased { job_id, segment } => {
                if let Some(job) = jobs.get_mut(&job_id) {
                    job.released.insert(segment);
                }
            }
            Record::Released { job_id } => {
                jobs.remove(&job_id);
            }
            Record::Batch { .. } | Record::Archived { .. } => {}
        }
    }
    order.into_iter().filter_map(|id| jobs.remove(&id)).filter(|job| !job.is_complete()).collect()
}

/// Every batch group as the records leave it: `accepted` and `done` records add to their job's batch, a
/// `batch` record replaces the batch's counts (it was written after the records it already counts).
fn replay_batches(records: &[Record]) -> Vec<super::batch::BatchRecord> {
    let mut batches = super::batch::Batches::default();
    for record in records {
        match record {
            Record::Accepted { job_id, job, at_ms, .. } => {
                if let Some(batch) = &job.batch {
                    let n: usize = job.slots.iter().map(|s| s.images.len()).sum();
                    let at = at_ms.or(job.timestamp_ms).unwrap_or(0);
                    let zip_dir = job.zip.then_some(job.output_dir.as_str());
                    batches.add_job(batch, job_id, n as u64, at, zip_dir);
                }
            }
            Record::Done { job_id, status, at_ms } => {
                batches.add_final(job_id, status, at_ms.unwrap_or_else(super::batch::now_ms))
            }
            Record::Batch { batch } => batches.replace(batch.clone()),
            Record::Archived { batch, archive, paths } => batches.archived(batch, archive, paths),
            Record::SegmentReleased { .. } | Record::Released { .. } => {}
        }
    }
    batches.records().cloned().collect()
}

impl Unfinished {
    /// Every image done and every segment released: nothing left to recover.
    fn is_complete(&self) -> bool {
        let images: usize = self.job.slots.iter().map(|s| s.images.len()).sum();
        self.done.len() >= images && job_segments(&self.job).iter().all(|s| self.released.contains(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ImageDescriptor, ImageFormat, ImageState, SampleType, Slot};

    fn descriptor(segment: &str) -> ImageDescriptor {
        ImageDescriptor {
            segment: segment.to_owned(),
            offset: 64,
            length: 3,
            width: 1,
            height: 1,
            channels: 3,
            dtype: SampleType::U8,
            row_stride: 3,
            crc32: None,
        }
    }

    /// A job of two images in segment `segment`.
    fn job_in(segment: &str) -> SubmitJob {
        let slot = Slot {
            affix: String::new(),
            format: ImageFormat::Png,
            subdir: false,
            images: vec![descriptor(segment), descriptor(segment)],
        };
        SubmitJob {
            filename: "x".to_owned(),
            timestamp_ms: Some(1),
            utc_offset_s: Some(0),
            ..SubmitJob::new("/out", vec![slot])
        }
    }

    fn accepted(id: &str) -> Record {
        accepted_in(id, &format!("seg-{id}"))
    }

    fn accepted_in(id: &str, segment: &str) -> Record {
        let job = Box::new(job_in(segment));
        Record::Accepted { job_id: id.to_owned(), client: "c".to_owned(), pid: Some(1), job, at_ms: None }
    }

    fn done(id: &str, index: u32) -> Record {
        let status = ImageStatus {
            index,
            slot: 0,
            batch_index: index,
            state: ImageState::Written,
            path: Some(format!("/out/x_{index}.png")),
            bytes: Some(10),
            error: None,
            scores: None,
            notes: Vec::new(),
            thumbnail: None,
            url: None,
        };
        Record::Done { job_id: id.to_owned(), status, at_ms: None }
    }

    fn released(id: &str, segment: &str) -> Record {
        Record::SegmentReleased { job_id: id.to_owned(), segment: segment.to_owned() }
    }

    fn replay(records: &[Record]) -> Vec<Unfinished> {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, _) = Journal::open(dir.path()).unwrap();
            for r in records {
                j.append(r).unwrap();
            }
        }
        Journal::open(dir.path()).unwrap().1
    }

    #[test]
    fn replay_returns_unreleased_jobs_with_their_finished_images() {
        let pending = replay(&[
            accepted("a"),
            accepted("b"),
            done("a", 0),
            done("b", 1),
            Record::Released { job_id: "a".into() },
        ]);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].job_id, "b");
        assert_eq!(pending[0].done.keys().copied().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn a_job_with_every_image_done_and_every_segment_released_needs_nothing() {
        let pending = replay(&[accepted("a"), done("a", 0), done("a", 1), released("a", "seg-a")]);
        assert!(pending.is_empty(), "{pending:?}");
        // Done but not released: recovery still has a segment to hand back.
        let pending = replay(&[accepted("a"), done("a", 0), done("a", 1)]);
        assert_eq!(pending.len(), 1);
        assert!(pending[0].released.is_empty());
    }

    /// Regression (issue 11 #1): a job done but not journaled as released, whose segment a later accepted job
    /// names, must not have that segment released again by recovery.
    #[test]
    fn a_segment_a_later_job_names_counts_as_released_for_the_earlier_job() {
        let pending = replay(&[accepted_in("a", "warm"), done("a", 0), done("a", 1), accepted_in("b", "warm")]);
        let ids: Vec<&str> = pending.iter().map(|p| p.job_id.as_str()).collect();
        assert_eq!(ids, ["b"], "a is complete: its segment was handed back before b could name it");
        assert!(pending[0].released.is_empty());
    }

    /// Regression: a job journaled without a client timestamp (by a daemon that did not stamp it into the job)
    /// is recovered with its acceptance time, not the restart's clock; a client's own timestamp wins.
    #[test]
    fn a_job_without_a_timestamp_is_recovered_with_its_acceptance_time() {
        let untimed = |id: &str, at_ms| {
            let job = Box::new(SubmitJob { timestamp_ms: None, ..job_in(&format!("seg-{id}")) });
            Record::Accepted { job_id: id.to_owned(), client: "c".to_owned(), pid: Some(1), job, at_ms }
        };
        let pending = replay(&[untimed("a", Some(1_700_000_000_123)), untimed("b", None), accepted("c")]);
        let times: Vec<Option<i64>> = pending.iter().map(|p| p.job.timestamp_ms).collect();
        assert_eq!(times, [Some(1_700_000_000_123), None, Some(1)]);
    }

    #[test]
    fn a_torn_tail_is_ignored_and_cut() {
        let dir = tempfile::tempdir().unwrap();
        let good_len = {
            let (mut j, _) = Journal::open(dir.path()).unwrap();
            j.append(&accepted("a")).unwrap();
            let len = j.len();
            j.append(&accepted("b")).unwrap();
            len
        };
        let path = dir.path().join("journal.v1");
        let full = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(full - 5).unwrap(); // the second record is torn
        let (j, pending) = Journal::open(dir.path()).unwrap();
        assert_eq!(pending.iter().map(|p| p.job_id.as_str()).collect::<Vec<_>>(), ["a"]);
        assert_eq!(j.len(), good_len);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        // Garbage in place of a record is a corrupt tail too.
        std::fs::write(&path, b"\x05\x00\x00\x00garbagegarbage").unwrap();
        let (_, pending) = Journal::open(dir.path()).unwrap();
        assert!(pending.is_empty());
    }

    #[test]
    fn rewrite_keeps_only_what_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        for i in 0..100 {
            j.append(&accepted(&format!("job{i}"))).unwrap();
        }
        let before = j.len();
        j.rewrite(&[accepted("job99")]).unwrap();
        assert!(j.len() < before / 50);
        j.append(&done("job99", 0)).unwrap();
        drop(j);
        let (_, pending) = Journal::open(dir.path()).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].done.len(), 1);
    }

    /// Compaction snapshots without the lock: records appended between the snapshot and the swap survive it.
    #[test]
    fn records_appended_while_a_snapshot_is_written_survive_the_install() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&accepted("old")).unwrap();
        j.append(&accepted("live")).unwrap();
        let mark = j.mark();
        let snapshot = Journal::write_snapshot(&j.dir(), &[accepted("live")]).unwrap();
        j.append(&done("live", 0)).unwrap();
        j.append(&accepted("late")).unwrap();
        j.install(snapshot, mark).unwrap();
        assert!(j.has_unsynced(), "the copied tail still needs a sync");
        j.append(&done("late", 1)).unwrap();
        drop(j);
        let (_, pending) = Journal::open(dir.path()).unwrap();
        let ids: Vec<&str> = pending.iter().map(|p| p.job_id.as_str()).collect();
        assert_eq!(ids, ["live", "late"]);
        assert_eq!(pending[0].done.len(), 1);
        assert_eq!(pending[1].done.len(), 1);
    }

    /// Regression (issue 11 #10): with live records above the threshold, the journal was rewritten on every
    /// check. Compaction is due on growth since the last rewrite, not on size.
    #[test]
    fn compaction_is_due_on_growth_since_the_last_rewrite_not_on_size() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.set_compact_after(2000);
        let live: Vec<Record> = (0..40).map(|i| accepted(&format!("live{i}"))).collect();
        for r in &live {
            j.append(r).unwrap();
        }
        assert!(j.compaction_due());
        j.rewrite(&live).unwrap();
        assert!(j.len() > 2000, "the live records alone exceed the threshold");
        assert!(!j.compaction_due(), "nothing grew since the rewrite");
        while j.len() < j.base_len + 2000 {
            assert!(!j.compaction_due());
            j.append(&done("live0", 0)).unwrap();
        }
        j.append(&done("live0", 0)).unwrap();
        assert!(j.compaction_due(), "due once it grew by the threshold");
    }

    /// Regression (issue 11 #2): records counted as synced before the fdatasync had succeeded.
    #[test]
    fn records_count_as_synced_only_after_the_sync_succeeded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&accepted("a")).unwrap();
        let ticket = j.sync_ticket().unwrap().expect("unsynced records");
        assert!(j.has_unsynced(), "taking a handle is not syncing");
        assert!(j.sync_ticket().unwrap().is_some(), "a failed sync would be retried with a new ticket");
        ticket.sync().unwrap();
        j.mark_synced(&ticket);
        assert!(!j.has_unsynced());
        assert!(j.sync_ticket().unwrap().is_none());
    }
}
