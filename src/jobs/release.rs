//! Handing segments back to their clients: the one way to do it, so no caller can forget a step.

use super::JobTable;
use super::task::SegmentRef;

/// Segments whose `released` records are journaled and that must now be handed back. Dropping one without
/// calling [`Release::hand_back`] would leave segments daemon-owned until the next restart.
#[must_use = "segments to hand back: call Release::hand_back"]
#[derive(Debug, Default)]
pub struct Release {
    segments: Vec<(String, SegmentRef)>,
}

impl Release {
    /// Nothing to hand back.
    pub fn none() -> Self {
        Self::default()
    }

    pub(crate) fn push(&mut self, job_id: &str, segment: SegmentRef) {
        self.segments.push((job_id.to_owned(), segment));
    }

    pub(crate) fn append(&mut self, mut other: Release) {
        self.segments.append(&mut other.segments);
    }

    /// How many segments.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether there is nothing to hand back.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Hands every segment back to its client (header state byte 0; unlinked if the client is gone) and records
    /// it in `table`. The `released` record was journaled before this, so a crash here leaves a daemon-owned
    /// segment no job needs, which the next start-up reclaims, never a released segment a later job uses.
    pub fn hand_back(self, table: &JobTable) {
        for (job_id, segment) in self.segments {
            crate::fault::hold("release.before_hand_back");
            match segment.open().map_err(|e| e.to_string()).and_then(|s| s.release().map_err(|e| e.to_string())) {
                Ok(unlinked) => tracing::debug!(segment = segment.name(), unlinked, "segment released"),
                Err(e) => tracing::warn!(segment = segment.name(), "could not release segment: {e}"),
            }
            crate::fault::hold("release.after_hand_back");
            table.segment_handed_back(&job_id, segment.name());
        }
    }
}
