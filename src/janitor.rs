//! The janitor: removes what dead processes left behind, after a grace period, so nothing accumulates over a
//! long run: segments of clients that died before submitting (or whose job was never acknowledged), junk in
//! the spool directory, and orphaned temp files in output directories the daemon wrote to.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::jobs::JobTable;
use crate::output::{OutputDirs, TEMP_PREFIX, TEMP_SUFFIX};
use crate::shm::{Segment, SegmentOpenError, SegmentState, process_alive, validate_name};

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Segments unlinked.
    pub segments: usize,
    /// Segments handed back to a live client that had them marked daemon-owned with no job.
    pub returned: usize,
    /// Temp files removed.
    pub temp_files: usize,
}

fn older_than(path: &Path, grace: Duration) -> bool {
    let modified = std::fs::symlink_metadata(path).and_then(|m| m.modified());
    modified.is_ok_and(|m| SystemTime::now().duration_since(m).unwrap_or_default() >= grace)
}

/// One pass over the spool directory and the known output directories.
pub fn sweep(spool_dir: &Path, table: &JobTable, dirs: &OutputDirs, grace: Duration) -> Swept {
    let mut swept = Swept::default();
    let in_use = table.segments_in_use();
    if let Ok(entries) = std::fs::read_dir(spool_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if in_use.contains(&name) || !older_than(&path, grace) {
                continue;
            }
            match sweep_segment(spool_dir, &name) {
                Some(true) => swept.segments += 1,
                Some(false) => swept.returned += 1,
                None => {}
            }
        }
    }
    for dir in dirs.snapshot() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(TEMP_PREFIX)
                && name.ends_with(TEMP_SUFFIX)
                && older_than(&entry.path(), grace)
                && std::fs::remove_file(entry.path()).is_ok()
            {
                swept.temp_files += 1;
            }
        }
    }
    if swept != Swept::default() {
        tracing::info!(?swept, "janitor cleaned up after dead processes");
    }
    swept
}

/// Decides about one old spool entry no job uses: `Some(true)` unlinked, `Some(false)` handed back to its
/// live client, `None` left alone.
fn sweep_segment(spool_dir: &Path, name: &str) -> Option<bool> {
    // Daemon-owned segments are never touched here: one may be between being taken and its job being
    // recorded. Those left by a crash are handled once at start-up by `reclaim_unowned`.
    let path = spool_dir.join(name);
    if validate_name(name).is_err() {
        // Not a name any client uses: junk in our private directory.
        return std::fs::remove_file(&path).is_ok().then_some(true);
    }
    match Segment::open(spool_dir, name) {
        Ok(segment) => {
            let alive = process_alive(segment.creator_pid());
            match segment.state().ok()? {
                SegmentState::Client if !alive => std::fs::remove_file(&path).is_ok().then_some(true),
                _ => None,
            }
        }
        Err(SegmentOpenError::NotASegment { .. }) => std::fs::remove_file(&path).is_ok().then_some(true),
        Err(_) => None,
    }
}

/// At start-up, before serving: segments marked daemon-owned that no recovered job uses were taken by a
/// previous daemon that died before journaling their job (so the client never got an acknowledgement and
/// saved locally). They are handed back to a live creator or unlinked.
pub fn reclaim_unowned(spool_dir: &Path, table: &JobTable) -> Swept {
    let mut swept = Swept::default();
    let in_use = table.segments_in_use();
    for entry in std::fs::read_dir(spool_dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if in_use.contains(&name) {
            continue;
        }
        let Ok(segment) = Segment::open(spool_dir, &name) else { continue };
        if segment.state().ok() != Some(SegmentState::Daemon) {
            continue;
        }
        if process_alive(segment.creator_pid()) {
            swept.returned += usize::from(segment.give_back().is_ok());
        } else {
            swept.segments += usize::from(std::fs::remove_file(entry.path()).is_ok());
        }
    }
    if swept != Swept::default() {
        tracing::info!(?swept, "reclaimed segments taken by a daemon that died before journaling their job");
    }
    swept
}

/// Runs [`sweep`] every `interval` until `stop` returns true.
pub fn run(
    spool_dir: PathBuf,
    table: Arc<JobTable>,
    dirs: Arc<OutputDirs>,
    grace: Duration,
    interval: Duration,
    stop: impl Fn() -> bool,
) {
    let tick = Duration::from_millis(100).min(interval);
    let mut waited = Duration::ZERO;
    while !stop() {
        std::thread::sleep(tick);
        waited += tick;
        if waited >= interval {
            waited = Duration::ZERO;
            sweep(&spool_dir, &table, &dirs, grace);
        }
    }
}
