//! The job journal: accepted jobs are appended before the acknowledgement, final image outcomes and segment
//! hand-backs after, so a daemon killed at any point can finish every accepted job on restart.
//!
//! File `<state_dir>/journal.v1`: a sequence of records, each `u32 LE length`, `u32 LE CRC-32 of the body`,
//! then the MessagePack body. Replay stops at the first torn or corrupt record (a crash mid-append) and cuts
//! the file there. The file is rewritten with only the live jobs at start-up and whenever it grows past
//! [`COMPACT_AT`], so it does not grow without bound.
//!
//! Durability: records are written (`write`) before the acknowledgement, which survives the daemon being
//! killed (SIGKILL, OOM); they are `fdatasync`ed within [`SYNC_INTERVAL`]. A power loss can lose the last
//! moments of records, but it also loses the segments themselves (tmpfs), so nothing more is lost than the
//! pixels already were.

use std::collections::BTreeMap;
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
    },
    /// An image reached a final state.
    Done {
        /// The job id.
        job_id: String,
        /// The image's final status.
        status: ImageStatus,
    },
    /// Every image is final and every segment was handed back: the job needs no recovery.
    Released {
        /// The job id.
        job_id: String,
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
    file: File,
    len: u64,
    dirty: bool,
}

impl Journal {
    /// Opens (or creates) the journal in `state_dir`, replays it, cuts a torn tail, and returns the jobs that
    /// were accepted but not released, in acceptance order.
    pub fn open(state_dir: &Path) -> Result<(Self, Vec<Unfinished>), JournalError> {
        let path = state_dir.join("journal.v1");
        let err = |source| JournalError { path: path.clone(), source };
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(err)?;
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
        let journal = Self { path: path.clone(), file, len: valid_len as u64, dirty: false };
        Ok((journal, unfinished(records)))
    }

    /// Appends a record with one `write` (not yet fsynced).
    pub fn append(&mut self, record: &Record) -> io::Result<()> {
        let framed = frame(record)?;
        if let Err(e) = self.file.write_all(&framed) {
            // Cut a partial record off, or it would hide every later record from the next replay.
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(e);
        }
        self.len += framed.len() as u64;
        self.dirty = true;
        Ok(())
    }

    /// Makes appended records durable.
    pub fn sync(&mut self) -> io::Result<()> {
        match self.take_sync_handle()? {
            Some(handle) => handle.sync_data(),
            None => Ok(()),
        }
    }

    /// A second handle to sync with if records were appended since the last sync, so the caller can fsync
    /// without holding the journal's lock (appends, which acknowledgements wait for, are never stalled by it).
    pub fn take_sync_handle(&mut self) -> io::Result<Option<File>> {
        if !self.dirty {
            return Ok(None);
        }
        self.dirty = false;
        self.file.try_clone().map(Some)
    }

    /// Current size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the journal holds no record.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Replaces the journal with `records` (temp file, fsync, rename, directory fsync).
    pub fn rewrite(&mut self, records: &[Record]) -> io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut temp = tempfile::Builder::new().prefix(".journal-").tempfile_in(dir)?;
        let mut len = 0u64;
        for record in records {
            let framed = frame(record)?;
            temp.write_all(&framed)?;
            len += framed.len() as u64;
        }
        temp.as_file().sync_all()?;
        let file = temp.persist(&self.path).map_err(|e| e.error)?;
        #[cfg(unix)]
        File::open(dir)?.sync_all()?;
        let mut file = file;
        file.seek(SeekFrom::End(0))?;
        self.file = file;
        self.len = len;
        self.dirty = false;
        Ok(())
    }
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

/// Folds records into the jobs still needing work.
fn unfinished(records: Vec<Record>) -> Vec<Unfinished> {
    let mut order = Vec::new();
    let mut jobs: BTreeMap<String, Unfinished> = BTreeMap::new();
    for record in records {
        match record {
            Record::Accepted { job_id, client, pid, job } => {
                order.push(job_id.clone());
                jobs.insert(job_id.clone(), Unfinished { job_id, client, pid, job: *job, done: BTreeMap::new() });
            }
            Record::Done { job_id, status } => {
                if let Some(job) = jobs.get_mut(&job_id) {
                    job.done.insert(status.index, status);
                }
            }
            Record::Released { job_id } => {
                jobs.remove(&job_id);
            }
        }
    }
    order.into_iter().filter_map(|id| jobs.remove(&id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ImageState, QualityGate};

    fn job() -> SubmitJob {
        SubmitJob {
            output_dir: "/out".to_owned(),
            save_path: String::new(),
            filename: "x".to_owned(),
            model_name: String::new(),
            filename_index: 0,
            timestamp_ms: Some(1),
            utc_offset_s: Some(0),
            png_compression: 4,
            lossy_quality: 90,
            lossless_webp: false,
            quality_gate: QualityGate::Disabled,
            min_quality_threshold: 0.3,
            embed_metadata: true,
            metadata: None,
            metadata_blob: None,
            slots: Vec::new(),
            submit_id: None,
        }
    }

    fn accepted(id: &str) -> Record {
        Record::Accepted { job_id: id.to_owned(), client: "c".to_owned(), pid: Some(1), job: Box::new(job()) }
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
        };
        Record::Done { job_id: id.to_owned(), status }
    }

    #[test]
    fn replay_returns_unreleased_jobs_with_their_finished_images() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut j, pending) = Journal::open(dir.path()).unwrap();
            assert!(pending.is_empty());
            for r in [accepted("a"), accepted("b"), done("a", 0), done("b", 1), Record::Released { job_id: "a".into() }]
            {
                j.append(&r).unwrap();
            }
        }
        let (_, pending) = Journal::open(dir.path()).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].job_id, "b");
        assert_eq!(pending[0].done.keys().copied().collect::<Vec<_>>(), [1]);
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
}
