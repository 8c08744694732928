//! Jobs: turning a submission into a validated plan, job ids, the per-image state machine
//! (queued -> encoding -> written | failed), the table `status` and `stats` read, and segment hand-back once
//! every image from a segment is final.

pub mod journal;
mod plan;
mod table;

pub use journal::Journal;
pub use plan::{
    DISCARD_DIR, ImageTask, JobPlan, JobSettings, MetadataSource, PlanError, Recovered, plan_job, recover_job,
};
pub use table::{ClientKey, Counters, JobTable, Release, SavedImage};

/// A fresh job id: 12 lowercase hex digits, random, so ids from different daemon runs do not collide.
pub fn new_job_id() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    id[..12].to_owned()
}
