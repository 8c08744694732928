//! One job's state machine, pure (no locks, no I/O): each image goes queued -> encoding (-> retrying ->
//! encoding ...) -> written | discarded | failed; each segment goes in use -> due (nothing left to read from
//! it) -> journaled (its `released` record is written) -> handed back. The table owns the locking and the
//! journal; this module owns the rules.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::task::{ImageTask, SegmentRef};
use crate::protocol::{ErrorReply, ImageState, ImageStatus};

/// Where a segment is on its way back to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentStage {
    /// Images (or the job's metadata, for a re-plan after a crash) still need it.
    InUse,
    /// Nothing needs it any more; its `released` record is not journaled yet (held while the journal fails).
    Due,
    /// Its `released` record is journaled; the hand-back (header state byte 0) is under way.
    Journaled,
    /// Handed back to the client.
    HandedBack,
}

#[derive(Debug)]
struct SegmentEntry {
    segment: SegmentRef,
    pending_images: usize,
    /// The job's metadata blob lives here: a re-plan after a crash reads it again, so it is kept until the
    /// whole job is final.
    holds_metadata: bool,
    stage: SegmentStage,
}

/// What finishing an image changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finished {
    /// The image failed.
    pub failed: bool,
    /// It was the job's last pending image.
    pub job_finished: bool,
    /// Memory no longer held: the image's pixels, plus the job's metadata when the job finished.
    pub bytes_freed: u64,
}

/// A job's images and segments.
#[derive(Debug)]
pub(crate) struct JobState {
    images: Vec<ImageStatus>,
    pixel_bytes: Vec<u64>,
    tasks: Vec<Option<Arc<ImageTask>>>,
    segments: Vec<SegmentEntry>,
    pending_images: usize,
    metadata_bytes: u64,
    any_failed: bool,
}

impl JobState {
    /// A job with `tasks[i]` for each image still to save (`None` for one already final, whose status is in
    /// `finals`). `segments` are every segment the job names; `released` those already journaled as released
    /// (after a restart); `metadata_segment` the one holding its metadata blob.
    pub(crate) fn new(
        tasks: Vec<Option<Arc<ImageTask>>>,
        finals: HashMap<u32, ImageStatus>,
        segments: Vec<SegmentRef>,
        released: &HashSet<String>,
        metadata_segment: Option<&str>,
        metadata_bytes: u64,
    ) -> Self {
        let mut entries: Vec<SegmentEntry> = segments
            .into_iter()
            .map(|segment| SegmentEntry {
                holds_metadata: metadata_segment == Some(segment.name()),
                stage: if released.contains(segment.name()) { SegmentStage::HandedBack } else { SegmentStage::InUse },
                segment,
                pending_images: 0,
            })
            .collect();
        let mut images = Vec::with_capacity(tasks.len());
        let mut pixel_bytes = Vec::with_capacity(tasks.len());
        let mut pending_images = 0;
        let mut any_failed = false;
        for (index, task) in tasks.iter().enumerate() {
            pixel_bytes.push(task.as_ref().map_or(0, |t| t.layout.length));
            if let Some(status) = finals.get(&(index as u32)) {
                any_failed |= status.state == ImageState::Failed;
                images.push(status.clone());
                continue;
            }
            let task = task.as_ref().expect("an image without a final status has a task");
            if let Some(entry) = entries.iter_mut().find(|e| e.segment.name() == task.segment.name()) {
                entry.pending_images += 1;
            }
            pending_images += 1;
            images.push(queued_status(index as u32, task));
        }
        let mut state =
            Self { images, pixel_bytes, tasks, segments: entries, pending_images, metadata_bytes, any_failed };
        for index in 0..state.tasks.len() {
            if state.images[index].state.is_final() {
                state.tasks[index] = None;
            }
        }
        state.mark_due();
        state
    }

    /// Per-image statuses, in order.
    pub(crate) fn images(&self) -> &[ImageStatus] {
        &self.images
    }

    /// Images not final yet.
    pub(crate) fn pending_images(&self) -> usize {
        self.pending_images
    }

    /// Bytes held while the job is unfinished: pending images' pixels plus the metadata.
    pub(crate) fn held_bytes(&self) -> u64 {
        if self.pending_images == 0 {
            return 0;
        }
        let pixels: u64 =
            (0..self.images.len()).filter(|&i| !self.images[i].state.is_final()).map(|i| self.pixel_bytes[i]).sum();
        pixels + self.metadata_bytes
    }

    /// Whether an image failed.
    pub(crate) fn any_failed(&self) -> bool {
        self.any_failed
    }

    /// Whether every segment was handed back.
    pub(crate) fn all_handed_back(&self) -> bool {
        self.segments.iter().all(|s| s.stage == SegmentStage::HandedBack)
    }

    /// Whether a restart would still have something to do (an image to save, a segment to hand back).
    pub(crate) fn needs_recovery(&self) -> bool {
        self.pending_images > 0 || !self.all_handed_back()
    }

    /// Segments not yet handed back.
    pub(crate) fn segments_in_use(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter(|s| s.stage != SegmentStage::HandedBack).map(|s| s.segment.name())
    }

    /// Segments whose `released` record is journaled (for a compacted journal).
    pub(crate) fn journaled_released(&self) -> impl Iterator<Item = &str> {
        self.segments
            .iter()
            .filter(|s| matches!(s.stage, SegmentStage::Journaled | SegmentStage::HandedBack))
            .map(|s| s.segment.name())
    }

    /// Segments nothing needs any more whose `released` record is still to be journaled.
    pub(crate) fn due_segments(&self) -> Vec<SegmentRef> {
        self.segments.iter().filter(|s| s.stage == SegmentStage::Due).map(|s| s.segment.clone()).collect()
    }

    /// Moves a segment to `stage` (forward only).
    pub(crate) fn set_stage(&mut self, name: &str, stage: SegmentStage) {
        if let Some(entry) = self.segments.iter_mut().find(|s| s.segment.name() == name) {
            entry.stage = stage;
        }
    }

    /// The tasks still waiting (to queue a recovered job).
    pub(crate) fn pending_tasks(&self) -> Vec<(usize, Arc<ImageTask>)> {
        self.tasks.iter().enumerate().filter_map(|(i, t)| t.clone().map(|t| (i, t))).collect()
    }

    /// Images waiting for a worker (queued or retrying), which a cancel fails.
    pub(crate) fn cancellable(&self) -> Vec<usize> {
        self.images
            .iter()
            .filter(|i| matches!(i.state, ImageState::Queued | ImageState::Retrying))
            .map(|i| i.index as usize)
            .collect()
    }

    /// Marks an image as being encoded. False if it is not waiting (already final, or another worker has it).
    pub(crate) fn begin(&mut self, index: usize) -> bool {
        match self.images.get_mut(index) {
            Some(image) if matches!(image.state, ImageState::Queued | ImageState::Retrying) => {
                image.state = ImageState::Encoding;
                true
            }
            _ => false,
        }
    }

    /// Records a failed attempt to be retried. False if the image is already final.
    pub(crate) fn retrying(&mut self, index: usize, error: ErrorReply, attempt: u32, next_in: Duration) -> bool {
        match self.images.get_mut(index) {
            Some(image) if !image.state.is_final() => {
                image.state = ImageState::Retrying;
                image.error = Some(error);
                image.notes = vec![format!("attempt {attempt} failed; retrying in {:.1} s", next_in.as_secs_f64())];
                true
            }
            _ => false,
        }
    }

    /// Records an image's final outcome; `None` if it is unknown or already final.
    pub(crate) fn finish(&mut self, index: usize, outcome: Result<super::SavedImage, ErrorReply>) -> Option<Finished> {
        let image = self.images.get_mut(index)?;
        if image.state.is_final() {
            return None;
        }
        let failed = outcome.is_err();
        match outcome {
            Ok(saved) => {
                image.state = if saved.discarded { ImageState::Discarded } else { ImageState::Written };
                image.path = Some(saved.path);
                image.bytes = Some(saved.bytes);
                image.scores = saved.scores;
                image.notes = saved.notes;
                image.thumbnail = saved.thumbnail;
                image.url = saved.url;
                image.error = None;
            }
            Err(error) => {
                image.state = ImageState::Failed;
                image.error = Some(error);
                image.notes.clear();
            }
        }
        self.pending_images -= 1;
        self.any_failed |= failed;
        // The finished image's task (and with it its share of the job's settings) is not needed any more.
        if let Some(task) = self.tasks[index].take()
            && let Some(entry) = self.segments.iter_mut().find(|e| e.segment.name() == task.segment.name())
        {
            entry.pending_images -= 1;
        }
        let job_finished = self.pending_images == 0;
        self.mark_due();
        let bytes_freed = self.pixel_bytes[index] + if job_finished { self.metadata_bytes } else { 0 };
        Some(Finished { failed, job_finished, bytes_freed })
    }

    /// A segment is due once no pending image reads it; the one holding the metadata blob only once the whole
    /// job is final (a re-plan after a crash reads the blob again).
    fn mark_due(&mut self) {
        let job_finished = self.pending_images == 0;
        for entry in &mut self.segments {
            if entry.stage == SegmentStage::InUse
                && entry.pending_images == 0
                && (job_finished || !entry.holds_metadata)
            {
                entry.stage = SegmentStage::Due;
            }
        }
    }
}

fn queued_status(index: u32, task: &ImageTask) -> ImageStatus {
    ImageStatus {
        index,
        slot: task.slot,
        batch_index: task.batch_index,
        state: ImageState::Queued,
        path: None,
        bytes: None,
        error: None,
        scores: None,
        notes: Vec::new(),
        thumbnail: None,
        url: None,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    use super::*;
    use crate::encode::SampleFormat;
    use crate::jobs::SavedImage;
    use crate::jobs::task::JobSettings;
    use crate::output::ModelInfo;
    use crate::protocol::{ErrorCode, ImageFormat};
    use crate::shm::Layout;

    fn seg(name: &str) -> SegmentRef {
        SegmentRef::new(Arc::from(Path::new("/spool")), name)
    }

    fn task(segment: &str, settings: &Arc<JobSettings>) -> Option<Arc<ImageTask>> {
        let layout =
            Layout { offset: 64, length: 100, width: 1, height: 1, channels: 3, sample_size: 1, row_stride: 3 };
        Some(Arc::new(ImageTask {
            segment: seg(segment),
            layout,
            format: SampleFormat::U8,
            crc32: None,
            settings: Arc::clone(settings),
            image_format: ImageFormat::Png,
            affix: String::new(),
            affix_dir: false,
            stem: "x".to_owned(),
            slot: 0,
            batch_index: 0,
        }))
    }

    fn settings() -> Arc<JobSettings> {
        Arc::new(JobSettings {
            output_root: PathBuf::from("/out"),
            object_root: None,
            save_path: String::new(),
            name_dir: String::new(),
            job: Arc::new(crate::protocol::SubmitJob::new("/out", Vec::new())),
            metadata: None,
            metadata_text: OnceLock::new(),
            model: ModelInfo::parse(""),
            save_timestamp: String::new(),
        })
    }

    fn saved() -> Result<SavedImage, ErrorReply> {
        Ok(SavedImage {
            path: "/out/x.png".to_owned(),
            bytes: 1,
            discarded: false,
            scores: None,
            notes: Vec::new(),
            thumbnail: None,
            url: None,
        })
    }

    /// Images `a`, `a`, `b`; metadata in segment `m` (no images), 1000 bytes of it.
    fn job() -> JobState {
        let s = settings();
        let tasks = vec![task("a", &s), task("a", &s), task("b", &s)];
        JobState::new(tasks, HashMap::new(), vec![seg("a"), seg("b"), seg("m")], &HashSet::new(), Some("m"), 1000)
    }

    fn due(state: &JobState) -> Vec<String> {
        let mut names: Vec<String> = state.due_segments().iter().map(|s| s.name().to_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_segment_is_due_once_its_last_image_is_final_and_the_metadata_segment_with_the_job() {
        let mut state = job();
        assert!(due(&state).is_empty());
        assert_eq!(state.held_bytes(), 300 + 1000);
        assert!(state.begin(0));
        let first = state.finish(0, saved()).unwrap();
        assert_eq!(first, Finished { failed: false, job_finished: false, bytes_freed: 100 });
        assert!(due(&state).is_empty(), "image 1 still reads segment a");
        assert!(state.begin(1));
        state.finish(1, Err(ErrorReply::new(ErrorCode::SaveFailed, "x"))).unwrap();
        assert_eq!(due(&state), ["a"]);
        state.set_stage("a", SegmentStage::Journaled);
        assert!(due(&state).is_empty());
        assert!(state.begin(2));
        let last = state.finish(2, saved()).unwrap();
        assert_eq!(last, Finished { failed: false, job_finished: true, bytes_freed: 100 + 1000 });
        assert_eq!(due(&state), ["b", "m"], "the metadata segment is kept until the job is final");
        assert!(state.any_failed());
        assert_eq!(state.held_bytes(), 0);
        assert!(state.needs_recovery(), "segments not handed back yet");
        for name in ["a", "b", "m"] {
            state.set_stage(name, SegmentStage::HandedBack);
        }
        assert!(!state.needs_recovery());
        assert!(state.all_handed_back());
        assert_eq!(state.segments_in_use().count(), 0);
    }

    #[test]
    fn only_a_waiting_image_can_begin_and_a_final_one_never_changes() {
        let mut state = job();
        assert!(state.begin(0));
        assert!(!state.begin(0), "another worker (or a cancel) already has it");
        assert!(state.retrying(0, ErrorReply::new(ErrorCode::SaveFailed, "disk full"), 1, Duration::from_secs(1)));
        assert_eq!(state.cancellable(), [0, 1, 2]);
        assert!(state.begin(0));
        state.finish(0, saved()).unwrap();
        assert!(state.finish(0, saved()).is_none(), "a final image is final");
        assert!(!state.begin(0));
        assert!(!state.retrying(0, ErrorReply::new(ErrorCode::SaveFailed, "late"), 2, Duration::ZERO));
        assert_eq!(state.images()[0].state, ImageState::Written);
        assert_eq!(state.cancellable(), [1, 2]);
        assert_eq!(state.pending_tasks().len(), 2, "a finished image drops its task");
    }

    #[test]
    fn a_recovered_job_never_hands_back_a_segment_journaled_as_released() {
        let s = settings();
        let mut finals = HashMap::new();
        for index in [0u32, 1] {
            let mut status = queued_status(index, task("a", &s).as_ref().unwrap());
            status.state = ImageState::Written;
            finals.insert(index, status);
        }
        let tasks = vec![None, None, task("b", &s)];
        let released: HashSet<String> = ["a".to_owned()].into();
        let state = JobState::new(tasks, finals, vec![seg("a"), seg("b")], &released, None, 0);
        assert!(due(&state).is_empty(), "a is handed back already, b still has an image");
        assert_eq!(state.segments_in_use().collect::<Vec<_>>(), ["b"]);
        assert_eq!(state.journaled_released().collect::<Vec<_>>(), ["a"]);
        assert_eq!(state.pending_images(), 1);
    }
}
