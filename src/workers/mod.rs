//! The worker pool: takes queued images fairly across clients, reads their pixels from shared memory,
//! converts, encodes and writes them, reports to the job table and hands segments back. It scales between
//! `min_workers` and `max_workers` threads: up when the backlog exceeds the idle workers, down after
//! `idle_timeout` without work.

pub mod archiver;
mod pool;
mod priority;
mod queue;
mod save;

pub use pool::{Pool, PoolConfig, PoolStats};
pub use queue::WorkItem;
pub use save::{SaveError, Saved, save_image, save_object};
