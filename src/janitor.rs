//! The janitor: removes what dead processes left behind, so nothing accumulates over a long run: segments of
//! clients that died (at once when the creator is verifiably dead, otherwise after a grace period), junk in
//! the spool directory, and orphaned temp files in output directories the daemon writes to.
//!
//! Temp files: a writer names itself in each temp file (`.luna-<pid>-<instance>-<random>.tmp`) and holds an
//! exclusive `flock` on it until the rename. A temp file is removed only when nobody holds its lock and its
//! writer is gone (its pid is dead, or it is this pid under another instance id, i.e. a previous run), or,
//! for names of an older format, when nobody holds its lock and it is older than the grace period. So a live
//! daemon writing into the same folder is never touched, and a restarted daemon removes what a killed one
//! left at start-up, in every directory the persistent record ([`OutputDirs::persistent`]) lists.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::jobs::JobTable;
use crate::output::{OutputDirs, TempOwner, is_temp_name};
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
            if in_use.contains(&name) {
                continue;
            }
            match sweep_segment(spool_dir, &name, older_than(&entry.path(), grace)) {
                Some(true) => swept.segments += 1,
                Some(false) => swept.returned += 1,
                None => {}
            }
        }
    }
    for dir in dirs.snapshot() {
        swept.temp_files += sweep_temp_files(&dir, Some(grace));
    }
    if swept != Swept::default() {
        tracing::info!(?swept, "janitor cleaned up after dead processes");
    }
    swept
}

/// At start-up: removes the temp files dead writers left in every recorded output directory, whatever their
/// age (see the module docs for what "dead" means).
pub fn sweep_dead_writers(dirs: &OutputDirs) -> usize {
    let removed: usize = dirs.snapshot().iter().map(|dir| sweep_temp_files(dir, None)).sum();
    if removed > 0 {
        tracing::info!(temp_files = removed, "removed temp files left by a daemon that was killed");
    }
    removed
}

/// Removes abandoned temp files in `dir`; with a `grace`, also lock-free ones older than it whose writer is
/// unknown. Returns how many were removed.
pub fn sweep_temp_files(dir: &Path, grace: Option<Duration>) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_temp_name(&name) {
            continue;
        }
        let path = entry.path();
        // Held while deciding and unlinking, so a writer cannot be mid-way.
        let Some(_lock) = lock_if_unwritten(&path) else { continue };
        let gone = TempOwner::from_temp_name(&name).is_some_and(|owner| writer_gone(&owner));
        let expired = grace.is_some_and(|g| older_than(&path, g));
        if (gone || expired) && std::fs::remove_file(&path).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Opens a temp file (never through a symlink) and takes its lock, if no live writer holds it.
fn lock_if_unwritten(path: &Path) -> Option<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits());
    }
    let file = options.open(path).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    file.try_lock().ok()?;
    Some(file)
}

/// Whether the process that named itself in a temp file can no longer finish it.
fn writer_gone(owner: &TempOwner) -> bool {
    let me = TempOwner::current();
    if owner.pid == me.pid {
        // Our pid: ours if the instance matches (kept: a live write holds the lock anyway), else a previous
        // run that had the same pid (a container's fixed pid).
        return owner.instance != me.instance;
    }
    !process_alive(owner.pid)
}

/// Decides about one spool entry no job uses: `Some(true)` unlinked, `Some(false)` handed back to its live
/// client, `None` left alone. A client-owned segment whose creator is dead goes at once; anything else only
/// once `old` (past the grace period).
fn sweep_segment(spool_dir: &Path, name: &str, old: bool) -> Option<bool> {
    // Daemon-owned segments are never touched here: one may be between being taken and its job being
    // recorded. Those left by a crash are handled once at start-up by `reclaim_unowned`.
    let path = spool_dir.join(name);
    if validate_name(name).is_err() {
        // Not a name any client uses: junk in our private directory.
        return (old && std::fs::remove_file(&path).is_ok()).then_some(true);
    }
    match Segment::open(spool_dir, name) {
        Ok(segment) => {
            // A dead creator can neither reuse nor submit it; a live one may still be filling it.
            let alive = process_alive(segment.creator_pid());
            match segment.state().ok()? {
                SegmentState::Client if !alive => std::fs::remove_file(&path).is_ok().then_some(true),
                _ => None,
            }
        }
        Err(SegmentOpenError::NotASegment { .. }) => (old && std::fs::remove_file(&path).is_ok()).then_some(true),
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

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// A pid that is certainly dead: a child that has exited and been reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn temp(dir: &Path, pid: u32, instance: &str) -> PathBuf {
        let path = dir.join(format!(".luna-{pid}-{instance}-0123456789ab.tmp"));
        std::fs::write(&path, b"partial").unwrap();
        path
    }

    /// Issue 11, failure 4: what a killed writer left goes at start-up; what a live writer (another daemon
    /// writing to the same folder) holds stays, as do unlocked files of live processes and unknown ones.
    #[test]
    fn the_start_up_sweep_removes_only_what_dead_writers_left() {
        let dir = tempfile::tempdir().unwrap();
        let me = TempOwner::current();
        let killed = temp(dir.path(), dead_pid(), "deadbeef");
        let previous_run_same_pid = temp(dir.path(), me.pid, "00000000");
        let mine = temp(dir.path(), me.pid, &me.instance);
        // Our parent (the test runner) stands for another live process; pid 1 would not do: it never counts as a
        // live creator.
        let live_elsewhere = temp(dir.path(), std::os::unix::process::parent_id(), "11111111");
        let old_format = dir.path().join(".luna-abcdef.tmp");
        std::fs::write(&old_format, b"x").unwrap();
        // Another live daemon mid-write: its pid looks dead from here (another pid namespace) but it holds
        // the lock.
        let writing = temp(dir.path(), dead_pid(), "22222222");
        let held = std::fs::File::open(&writing).unwrap();
        held.lock().unwrap();

        assert_eq!(sweep_temp_files(dir.path(), None), 2);
        assert!(!killed.exists() && !previous_run_same_pid.exists());
        for kept in [&mine, &live_elsewhere, &old_format, &writing] {
            assert!(kept.exists(), "{} was removed", kept.display());
        }
        // With a grace period (the periodic sweep), old lock-free files of unknown writers go too; the locked
        // one never does.
        assert_eq!(sweep_temp_files(dir.path(), Some(Duration::ZERO)), 3);
        assert!(writing.exists());
        drop(held);
    }
}
