//! Jobs: turning a submission into a validated plan (`plan`), what a worker gets to save an image (`task`:
//! [`ImageTask`], [`JobSettings`], [`SegmentRef`]), the per-job state machine (`state`: pure, unit-tested),
//! the table `status` and `stats` read ([`JobTable`]), handing segments back ([`Release`]), the [`journal`],
//! and recovery after a restart ([`recover()`]).

mod batch;
pub mod journal;
mod plan;
mod recover;
mod release;
mod state;
mod table;
mod task;

pub use batch::{BatchRecord, MAX_BATCH_NAME, validate_batch_name};
pub use journal::Journal;
pub use plan::{JobPlan, PlanError, Recovered, plan_job, recover_job, with_acceptance_time};
pub use recover::{RecoveredJob, recover};
pub use release::Release;
pub use table::{ArchiveWork, ClientKey, Counters, InsertError, JobTable, SavedImage};
pub use task::{DISCARD_DIR, ImageTask, JobSettings, MetadataSource, SegmentRef, THUMBNAIL_DIR};

/// A fresh job id: 12 lowercase hex digits, random, so ids from different daemon runs do not collide.
pub fn new_job_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..12].to_owned()
}
