//! The archiver: one thread that adds the written images of archived batch groups to their ZIP archives
//! (`output::update_archive`: a new archive renamed over the old, so the one on disk is always valid), then
//! journals what it added. Images are taken in bulk: while an update runs, the next images pile up and go into
//! the next update together, so the cost of rewriting the archive is shared by every image waiting.
//!
//! Crash safety: the journal lists a batch's written images until an `archived` record says they are in the
//! archive; after a restart the archiver simply adds them again, and the update skips names the archive
//! already holds, so every image is in it exactly once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::jobs::{ArchiveWork, JobTable};
use crate::output::{self, ArchiveItem, OutputDirs};

/// First retry delay after a failed update; doubled per failure up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How often an idle archiver looks for work (it is also woken when an archived batch gets an image).
const IDLE_WAIT: Duration = Duration::from_millis(500);

/// Runs until `stopping()` says so (finishing the update in progress). [`drain`] does what is left.
pub fn run(table: &JobTable, dirs: &OutputDirs, stopping: impl Fn() -> bool) {
    let mut failing: HashMap<String, (Instant, Duration)> = HashMap::new();
    while !stopping() {
        let now = Instant::now();
        let skip: HashSet<String> = failing.iter().filter(|(_, (at, _))| *at > now).map(|(b, _)| b.clone()).collect();
        let Some(work) = table.archive_work(&skip) else {
            table.wait_archive_work(IDLE_WAIT);
            continue;
        };
        match update(table, dirs, &work) {
            Ok(()) => {
                failing.remove(&work.batch);
            }
            Err(e) => {
                let delay = failing.get(&work.batch).map_or(FIRST_RETRY, |(_, d)| (*d * 2).min(MAX_RETRY));
                tracing::warn!(batch = %work.batch, "archive update failed, retrying in {delay:?}: {e}");
                table.archive_failed(&work.batch, format!("{e} (retrying in {:.1} s)", delay.as_secs_f64()));
                failing.insert(work.batch.clone(), (Instant::now() + delay, delay));
            }
        }
    }
}

/// At shutdown, after the workers drained: archives what is left, each batch tried a few times (a batch that
/// still fails stays journaled and is archived by the next start).
pub fn drain(table: &JobTable, dirs: &OutputDirs) {
    let mut given_up: HashSet<String> = HashSet::new();
    let mut failures: HashMap<String, u32> = HashMap::new();
    while let Some(work) = table.archive_work(&given_up) {
        if let Err(e) = update(table, dirs, &work) {
            let n = failures.entry(work.batch.clone()).or_default();
            *n += 1;
            if *n >= 3 {
                tracing::warn!(batch = %work.batch, "archive not updated before exit (the next start does it): {e}");
                given_up.insert(work.batch);
            }
        }
    }
}

/// One update: every pending image of the batch into its archive, then the journal record.
fn update(table: &JobTable, dirs: &OutputDirs, work: &ArchiveWork) -> Result<(), String> {
    let root = PathBuf::from(&work.dir);
    let dir = output::resolve_dir(&root, "").map_err(|e| e.to_string())?;
    dirs.record(dir.path());
    let items: Vec<ArchiveItem> = work
        .paths
        .iter()
        .map(|p| ArchiveItem { entry: output::entry_name(dir.path(), Path::new(p)), file: PathBuf::from(p) })
        .collect();
    let started = Instant::now();
    let done = output::update_archive(&dir, &work.batch, &work.token, work.archive.as_deref(), &items)
        .map_err(|e| e.to_string())?;
    for missing in &done.missing {
        tracing::warn!(batch = %work.batch, "{missing} is gone (removed by hand?): not in the archive");
    }
    tracing::debug!(
        batch = %work.batch, archive = %done.name, added = done.added, present = done.present,
        entries = done.entries, ms = started.elapsed().as_millis() as u64, "archive updated"
    );
    table.archived(&work.batch, &done.name, work.paths.clone());
    Ok(())
}
