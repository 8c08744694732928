//! Batch groups: a client-chosen name shared by many jobs (and node executions), reported together by
//! `batch_status`. Pure bookkeeping (no locks, no I/O): the table owns the lock and journals the changes.
//!
//! A batch's counts survive a restart through the journal: replay rebuilds them from the `accepted` and
//! `done` records of the batch's jobs, and a compacted journal (which drops finished jobs) carries one
//! [`BatchRecord`] per live batch, written *after* the records of the unfinished jobs it describes, so replay
//! replaces what those added instead of counting them twice.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::protocol::{ImageState, ImageStatus};

/// Longest batch name, in characters (all ASCII).
pub const MAX_BATCH_NAME: usize = 100;
/// Most jobs one batch may hold (its `batch_status` reply stays far below the frame cap).
pub const MAX_BATCH_JOBS: usize = 10_000;
/// Batches kept at most; the oldest finished ones are forgotten beyond it.
pub const MAX_BATCHES: usize = 1_000;

/// Checks a batch name: 1 to [`MAX_BATCH_NAME`] characters from `A-Z a-z 0-9 _ - .`, starting with a letter or
/// a digit, and not a Windows device name (`CON`, `nul.x`, ...), so that `<batch>.zip` is a safe file name on
/// every platform. The error says what is wrong.
pub fn validate_batch_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("batch name is empty".to_owned());
    }
    if name.chars().count() > MAX_BATCH_NAME {
        return Err(format!("batch name is too long ({} characters; at most {MAX_BATCH_NAME})", name.chars().count()));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(format!(
            "batch name {name:?} contains {bad:?}; only letters A-Z a-z, digits, '_', '-' and '.' are allowed"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("batch name {name:?} must start with a letter or a digit"));
    }
    let device = name.split('.').next().unwrap_or(name).to_ascii_uppercase();
    let reserved = matches!(device.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || (device.len() == 4
            && (device.starts_with("COM") || device.starts_with("LPT"))
            && device.as_bytes()[3].is_ascii_digit()
            && device.as_bytes()[3] != b'0');
    if reserved {
        return Err(format!("batch name {name:?} is a reserved device name on Windows"));
    }
    Ok(())
}

/// A batch's counts: what the journal carries and `batch_status` reports (with the live per-state counts).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchRecord {
    /// The batch name.
    pub name: String,
    /// Its jobs, in acceptance order.
    pub jobs: Vec<String>,
    /// Images submitted.
    pub images: u64,
    /// Images written.
    pub written: u64,
    /// Images saved under `_discarded`.
    pub discarded: u64,
    /// Images failed.
    pub failed: u64,
    /// Bytes of written and discarded files.
    pub bytes: u64,
    /// When the first job was accepted (ms since the Unix epoch).
    pub first_accepted_ms: i64,
    /// When the last image became final (ms since the Unix epoch).
    #[serde(default)]
    pub last_final_ms: Option<i64>,
    /// Every written image of the batch also goes into a ZIP archive (set by the batch's first job).
    #[serde(default)]
    pub zip: bool,
    /// The archive's directory: the output root of the batch's first job.
    #[serde(default)]
    pub zip_dir: String,
    /// The archive's file name in `zip_dir`, once it exists.
    #[serde(default)]
    pub archive: Option<String>,
    /// Written images (final paths) not yet confirmed in the archive.
    #[serde(default)]
    pub archive_pending: Vec<String>,
    /// Images confirmed in the archive.
    #[serde(default)]
    pub archived: u64,
}

impl BatchRecord {
    fn new(name: &str, now_ms: i64, zip_dir: Option<&str>) -> Self {
        Self {
            name: name.to_owned(),
            first_accepted_ms: now_ms,
            zip: zip_dir.is_some(),
            zip_dir: zip_dir.unwrap_or_default().to_owned(),
            ..Self::default()
        }
    }

    /// The archive comment that marks the batch's own archive: its name and first job id.
    pub fn archive_token(&self) -> String {
        format!("luna-daemon batch {} {}", self.name, self.jobs.first().map_or("", String::as_str))
    }

    /// Images not final yet.
    pub fn pending(&self) -> u64 {
        self.images.saturating_sub(self.written + self.discarded + self.failed)
    }

    fn add_job(&mut self, job_id: &str, images: u64) {
        if !self.jobs.iter().any(|j| j == job_id) {
            self.jobs.push(job_id.to_owned());
            self.images += images;
        }
    }

    fn add_final(&mut self, status: &ImageStatus, now_ms: i64) {
        match status.state {
            ImageState::Written => self.written += 1,
            ImageState::Discarded => self.discarded += 1,
            ImageState::Failed => self.failed += 1,
            _ => return,
        }
        self.bytes += status.bytes.unwrap_or(0);
        if self.zip
            && status.state == ImageState::Written
            && let Some(path) = &status.path
        {
            self.archive_pending.push(path.clone());
        }
        self.last_final_ms = Some(self.last_final_ms.map_or(now_ms, |t| t.max(now_ms)));
    }
}

/// Every known batch, and which batch each of their jobs belongs to.
#[derive(Debug, Default)]
pub struct Batches {
    batches: HashMap<String, BatchRecord>,
    job_batch: HashMap<String, String>,
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Batches {
    /// Batches replayed from the journal.
    pub fn from_records(records: Vec<BatchRecord>) -> Self {
        let mut batches = Self::default();
        for record in records {
            batches.replace(record);
        }
        batches
    }

    /// Installs `record` as the batch's state (a journal snapshot record).
    pub fn replace(&mut self, record: BatchRecord) {
        for job in &record.jobs {
            self.job_batch.insert(job.clone(), record.name.clone());
        }
        self.batches.insert(record.name.clone(), record);
    }

    /// Whether `batch` can take one more job, archived into `zip_dir` (`None`: not archived). A batch is
    /// archived or not as its first job said, into that job's output root; a job that disagrees is refused.
    pub fn check_join(&self, batch: &str, zip_dir: Option<&str>) -> Result<(), String> {
        let Some(b) = self.batches.get(batch) else { return Ok(()) };
        if b.jobs.len() >= MAX_BATCH_JOBS {
            return Err(format!("batch {batch:?} already has {MAX_BATCH_JOBS} jobs; start a new batch name"));
        }
        match (b.zip, zip_dir) {
            (true, None) => Err(format!(
                "batch {batch:?} is archived (its first job asked for zip); send zip with every job of it, or use \
                 another batch name"
            )),
            (false, Some(_)) => Err(format!(
                "batch {batch:?} was started without zip; a later job cannot turn the archive on (use a new batch \
                 name)"
            )),
            (true, Some(dir)) if dir != b.zip_dir => Err(format!(
                "batch {batch:?} is archived into {:?}; this job's output_dir {dir:?} differs (one archive per \
                 batch)",
                b.zip_dir
            )),
            _ => Ok(()),
        }
    }

    /// A job of `images` images joined `batch` (idempotent per job id); `zip_dir` is its output root if it asked
    /// for an archive (it decides for a new batch).
    pub fn add_job(&mut self, batch: &str, job_id: &str, images: u64, now_ms: i64, zip_dir: Option<&str>) {
        self.job_batch.insert(job_id.to_owned(), batch.to_owned());
        self.batches
            .entry(batch.to_owned())
            .or_insert_with(|| BatchRecord::new(batch, now_ms, zip_dir))
            .add_job(job_id, images);
    }

    /// `paths` (taken from `archive_pending`) are in the archive `archive` now.
    pub fn archived(&mut self, batch: &str, archive: &str, paths: &[String]) {
        if let Some(b) = self.batches.get_mut(batch) {
            let done: std::collections::HashSet<&str> = paths.iter().map(String::as_str).collect();
            let before = b.archive_pending.len();
            b.archive_pending.retain(|p| !done.contains(p.as_str()));
            b.archived += (before - b.archive_pending.len()) as u64;
            b.archive = Some(archive.to_owned());
        }
    }

    /// A batch with images waiting for the archive, other than those in `skip`.
    pub fn archive_work(&self, skip: &std::collections::HashSet<String>) -> Option<&BatchRecord> {
        self.batches.values().find(|b| !b.archive_pending.is_empty() && !skip.contains(&b.name))
    }

    /// An image of `job_id` became final (nothing happens for a job in no batch).
    pub fn add_final(&mut self, job_id: &str, status: &ImageStatus, now_ms: i64) {
        if let Some(batch) = self.job_batch.get(job_id)
            && let Some(record) = self.batches.get_mut(batch)
        {
            record.add_final(status, now_ms);
        }
    }

    /// The batch `name`, if known.
    pub fn get(&self, name: &str) -> Option<&BatchRecord> {
        self.batches.get(name)
    }

    /// Every batch (for a journal snapshot).
    pub fn records(&self) -> impl Iterator<Item = &BatchRecord> {
        self.batches.values()
    }

    /// Forgets finished batches whose last image became final more than `retention_ms` ago, and the oldest
    /// finished ones beyond [`MAX_BATCHES`]. A batch with pending images is never forgotten.
    pub fn expire(&mut self, now_ms: i64, retention_ms: i64) {
        let old = |b: &BatchRecord| {
            b.pending() == 0
                && b.archive_pending.is_empty()
                && b.last_final_ms.is_some_and(|t| now_ms - t > retention_ms)
        };
        let mut gone: Vec<String> = self.batches.values().filter(|b| old(b)).map(|b| b.name.clone()).collect();
        if self.batches.len() - gone.len() > MAX_BATCHES {
            let mut finished: Vec<&BatchRecord> =
                self.batches.values().filter(|b| b.pending() == 0 && b.archive_pending.is_empty() && !old(b)).collect();
            finished.sort_by_key(|b| b.last_final_ms);
            let excess = self.batches.len() - gone.len() - MAX_BATCHES;
            gone.extend(finished.into_iter().take(excess).map(|b| b.name.clone()));
        }
        for name in gone {
            if let Some(record) = self.batches.remove(&name) {
                for job in record.jobs {
                    self.job_batch.remove(&job);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: ImageState, bytes: u64) -> ImageStatus {
        ImageStatus {
            index: 0,
            slot: 0,
            batch_index: 0,
            state,
            path: None,
            bytes: Some(bytes),
            error: None,
            scores: None,
            notes: Vec::new(),
            thumbnail: None,
            url: None,
        }
    }

    #[test]
    fn hostile_batch_names_get_clear_errors() {
        for ok in ["a", "render-farm_2025.11.27", "X9", &"b".repeat(100)] {
            validate_batch_name(ok).unwrap();
        }
        let cases = [
            ("", "batch name is empty"),
            ("../up", "contains '/'"),
            (".hidden", "must start with a letter or a digit"),
            ("a/b", "contains '/'"),
            ("a\\b", "contains '\\\\'"),
            ("C:x", "contains ':'"),
            ("tab\there", "contains '\\t'"),
            ("nul\0", "contains '\\0'"),
            ("space here", "contains ' '"),
            ("straße", "contains 'ß'"),
            ("CON", "reserved device name"),
            ("nul.zip", "reserved device name"),
            ("com1", "reserved device name"),
            ("LPT9.x", "reserved device name"),
        ];
        for (name, want) in cases {
            let e = validate_batch_name(name).unwrap_err();
            assert!(e.contains(want), "{name:?}: {e}");
        }
        assert!(validate_batch_name("COM0").is_ok() && validate_batch_name("console").is_ok());
        let e = validate_batch_name(&"b".repeat(101)).unwrap_err();
        assert!(e.contains("too long (101 characters; at most 100)"), "{e}");
    }

    #[test]
    fn counts_add_up_and_a_snapshot_record_replaces_them() {
        let mut b = Batches::default();
        b.add_job("night", "j1", 3, 1000, None);
        b.add_job("night", "j1", 3, 1001, None); // the same job again (replay) changes nothing
        b.add_job("night", "j2", 1, 1002, None);
        b.add_final("j1", &status(ImageState::Written, 10), 2000);
        b.add_final("j1", &status(ImageState::Discarded, 5), 2100);
        b.add_final("j2", &status(ImageState::Failed, 0), 1500);
        b.add_final("other", &status(ImageState::Written, 99), 3000);
        let r = b.get("night").unwrap().clone();
        assert_eq!((r.images, r.written, r.discarded, r.failed, r.bytes), (4, 1, 1, 1, 15));
        assert_eq!((r.first_accepted_ms, r.last_final_ms, r.pending()), (1000, Some(2100), 1));
        assert_eq!(r.jobs, ["j1", "j2"]);
        let mut replayed = Batches::from_records(vec![BatchRecord { written: 0, ..r.clone() }]);
        replayed.replace(r.clone());
        replayed.add_final("j1", &status(ImageState::Written, 1), 4000);
        assert_eq!(replayed.get("night").unwrap().written, 2, "the job's batch is known from the record");
    }

    #[test]
    fn only_finished_batches_expire() {
        let mut b = Batches::default();
        b.add_job("done", "j1", 1, 0, None);
        b.add_final("j1", &status(ImageState::Written, 1), 10);
        b.add_job("open", "j2", 1, 0, None);
        b.expire(10 + 500, 1000);
        assert!(b.get("done").is_some());
        b.expire(10 + 1001, 1000);
        assert!(b.get("done").is_none());
        assert!(b.get("open").is_some(), "pending images: never expires");
        b.add_final("j1", &status(ImageState::Written, 1), 20);
        assert!(b.get("done").is_none(), "the forgotten job counts nowhere");
    }
}
