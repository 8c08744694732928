//! Recovery after a restart: every job the journal says was accepted but not finished is re-planned against
//! its segments (still daemon-owned), recorded in the table, and returned for the workers to queue. Images
//! whose segment is gone are reported `lost`; a segment already released is never handed back again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use super::journal::Unfinished;
use super::task::ImageTask;
use super::{ClientKey, JobTable, recover_job};
use crate::protocol::{ErrorCode, ErrorReply, ImageStatus};

/// A recovered job's images still to save.
#[derive(Debug)]
pub struct RecoveredJob {
    /// The job id.
    pub job_id: String,
    /// Who submitted it.
    pub client: ClientKey,
    /// `(index, task)` per image still to save.
    pub tasks: Vec<(usize, Arc<ImageTask>)>,
}

/// Records every unfinished job in `table`, hands back segments nothing needs any more, and returns the work.
///
/// `staged(job_id, index)` says that an image's encoded bytes wait for their upload in a staging file (an `s3://`
/// root): such an image is recovered even if its segment is gone or was handed back.
pub fn recover(
    table: &JobTable,
    spool_dir: &Path,
    unfinished: Vec<Unfinished>,
    staged: &dyn Fn(&str, usize) -> bool,
) -> Vec<RecoveredJob> {
    if unfinished.is_empty() {
        return Vec::new();
    }
    let (mut queued, mut lost) = (0usize, 0usize);
    let mut work = Vec::with_capacity(unfinished.len());
    let jobs = unfinished.len();
    for job in unfinished {
        let count: usize = job.job.slots.iter().map(|s| s.images.len()).sum();
        let staged_images: Vec<bool> = (0..count).map(|i| staged(&job.job_id, i)).collect();
        let (mut tasks, segments) = recover_job(&job.job, spool_dir, &staged_images);
        for (index, task) in tasks.iter_mut().enumerate() {
            if staged_images[index] {
                continue; // its bytes are staged: what became of the segment does not matter
            }
            // Not journaled as done, yet its segment was handed back (an older daemon's crash window): the
            // pixels may be another job's by now, so the image is lost rather than saved wrong.
            if let Ok(t) = task
                && job.released.contains(t.segment.name())
                && !job.done.contains_key(&(index as u32))
            {
                let message = format!(
                    "lost: segment {:?} was handed back before the restart and may hold other pixels now",
                    t.segment.name()
                );
                *task = Err(ErrorReply::new(ErrorCode::Lost, message));
            }
        }
        lost += tasks.iter().enumerate().filter(|(i, t)| t.is_err() && !job.done.contains_key(&(*i as u32))).count();
        let client = ClientKey { name: job.client.clone(), pid: job.pid };
        let done: HashMap<u32, ImageStatus> = job.done.into_iter().collect();
        table
            .insert_recovered(&job.job_id, client.clone(), job.job, (tasks, segments), done, &job.released)
            .hand_back(table);
        let tasks = table.pending_tasks(&job.job_id);
        queued += tasks.len();
        work.push(RecoveredJob { job_id: job.job_id, client, tasks });
    }
    tracing::info!(jobs, images = queued, lost, "recovered unfinished jobs from the journal");
    if lost > 0 {
        tracing::warn!("{lost} accepted images were lost: their shared memory was gone (was the machine rebooted?)");
    }
    work
}
