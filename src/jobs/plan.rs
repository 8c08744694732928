//! Validating a submission before anything is accepted: every descriptor against its segment's real size,
//! every option, every path part. Either the whole job is valid, or nothing is accepted and the error names
//! the offending image and field.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::encode::{AVIF_QUALITY, AVIF_SPEED, SampleFormat};
use chrono::{DateTime, FixedOffset, Local, Utc};

use super::task::{ImageTask, JobSettings, MetadataSource, SegmentRef, check_metadata_blob};
use crate::output::{self, ModelInfo, TemplateContext};
use crate::protocol::{ErrorCode, ErrorReply, ImageDescriptor, ImageFormat, SampleType, Slot, SubmitJob};
use crate::s3::ObjectRoot;
use crate::shm::{Layout, LayoutError, Segment, SegmentOpenError, SegmentState};

/// Why a submission was refused, with the wire error code it maps to.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct PlanError {
    /// The wire code.
    pub code: ErrorCode,
    /// What was wrong, naming the image and field.
    pub message: String,
}

impl PlanError {
    fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// A validated job, ready to be claimed and queued.
#[derive(Debug)]
pub struct JobPlan {
    /// One task per image, slots in order, then batch order.
    pub tasks: Vec<Arc<ImageTask>>,
    /// The distinct segments the job uses (pixels and metadata), open until their ownership is taken.
    pub segments: Vec<Segment>,
    spool_dir: Arc<Path>,
}

impl JobPlan {
    /// Memory the job holds until it finishes: pixel bytes read from shared memory while saving, plus its
    /// metadata (source and formatted text). What the queue budget counts.
    pub fn held_bytes(&self) -> u64 {
        let pixels = self.tasks.iter().map(|t| t.layout.length).fold(0, u64::saturating_add);
        let metadata = self.tasks.first().map_or(0, |t| t.settings.held_metadata_bytes());
        pixels.saturating_add(metadata)
    }

    /// References to the job's segments (no descriptors).
    pub fn segment_refs(&self) -> Vec<SegmentRef> {
        self.segments.iter().map(|s| SegmentRef::new(Arc::clone(&self.spool_dir), s.name())).collect()
    }
}

/// Most images one job may carry (five slots of large batches fit; the job's `status` reply stays far below
/// the frame cap).
pub const MAX_IMAGES_PER_JOB: usize = 1024;
/// Largest metadata blob accepted from shared memory.
pub const MAX_METADATA_BLOB: u64 = 64 << 20;

fn invalid_job(message: impl Into<String>) -> PlanError {
    PlanError::new(ErrorCode::InvalidJob, message)
}

/// Validates `job` against the segments in `spool_dir`, expands its templates and loads its metadata. Opens
/// each segment once.
pub fn plan_job(job: &SubmitJob, spool_dir: &Path) -> Result<JobPlan, PlanError> {
    crate::fault::hold("submit.validating");
    let mut planner = Planner::new(spool_dir, false);
    let (settings, base) = planner.settings(job)?;
    let mut tasks = Vec::new();
    for (slot_index, slot) in job.slots.iter().enumerate() {
        for batch_index in 0..slot.images.len() {
            tasks.push(Arc::new(planner.image(&settings, &base, slot_index, slot, batch_index, tasks.len())?));
        }
    }
    Ok(JobPlan { tasks, segments: planner.segments.into_values().collect(), spool_dir: planner.spool_dir })
}

/// Re-plans a job found unfinished in the journal after a restart. Its segments are still marked
/// daemon-owned; an image whose segment is gone (a reboot cleared tmpfs) is reported `lost`, never silently
/// dropped. Returns one result per image, in order.
/// Also returns every segment the job uses (including one holding only its metadata).
///
/// `staged[index]` says that the image's encoded bytes wait in a staging file for their upload to an `s3://`
/// root: such an image is recovered whatever became of its segment (a reboot cleared it, or it was handed
/// back), since its worker uploads the staged bytes and never reads the pixels.
pub fn recover_job(job: &SubmitJob, spool_dir: &Path, staged: &[bool]) -> Recovered {
    let mut planner = Planner::new(spool_dir, true);
    let count: usize = job.slots.iter().map(|s| s.images.len()).sum();
    let lost = |e: PlanError| {
        let code = if e.code == ErrorCode::SegmentNotFound { ErrorCode::Lost } else { e.code };
        let message = if code == ErrorCode::Lost {
            format!("lost: the daemon restarted and the image's shared memory is gone or handed back ({})", e.message)
        } else {
            e.message
        };
        ErrorReply::new(code, message)
    };
    let is_staged = |index: usize| staged.get(index).copied().unwrap_or(false);
    let (settings, base, settings_error) = match planner.settings(job) {
        Ok((settings, base)) => (settings, base, None),
        // The metadata blob's segment is gone: staged images carry their metadata already.
        Err(e) if (0..count).any(is_staged) => {
            let reply = lost(e);
            let bare = SubmitJob { metadata_blob: None, metadata: None, ..job.clone() };
            match planner.settings(&bare) {
                Ok((settings, base)) => (settings, base, Some(reply)),
                Err(_) => return ((0..count).map(|_| Err(reply.clone())).collect(), planner.segment_refs()),
            }
        }
        Err(e) => {
            let reply = lost(e);
            return ((0..count).map(|_| Err(reply.clone())).collect(), planner.segment_refs());
        }
    };
    let mut results = Vec::with_capacity(count);
    for (slot_index, slot) in job.slots.iter().enumerate() {
        for batch_index in 0..slot.images.len() {
            let index = results.len();
            let result = match (&settings_error, is_staged(index)) {
                (Some(e), false) => Err(e.clone()),
                (_, staged) => {
                    planner.staged_image = staged;
                    planner.image(&settings, &base, slot_index, slot, batch_index, index).map(Arc::new).map_err(lost)
                }
            };
            results.push(result);
        }
    }
    (results, planner.segment_refs())
}

/// A recovered job: per image its task or why it cannot be saved, and every segment the job uses.
pub type Recovered = (Vec<Result<Arc<ImageTask>, ErrorReply>>, Vec<SegmentRef>);

/// Validation state shared by the images of one job: the segments opened so far.
struct Planner {
    spool_dir: Arc<Path>,
    recovering: bool,
    /// The image being recovered has staged bytes: its segment is not needed.
    staged_image: bool,
    segments: HashMap<String, Segment>,
}

impl Planner {
    fn new(spool_dir: &Path, recovering: bool) -> Self {
        Self { spool_dir: Arc::from(spool_dir), recovering, staged_image: false, segments: HashMap::new() }
    }

    fn segment_refs(&self) -> Vec<SegmentRef> {
        self.segments.keys().map(|name| SegmentRef::new(Arc::clone(&self.spool_dir), name.clone())).collect()
    }

    /// Job-wide checks, template expansion and metadata. Returns the settings and the expanded file stem.
    fn settings(&mut self, job: &SubmitJob) -> Result<(Arc<JobSettings>, String), PlanError> {
        let count: usize = job.slots.iter().map(|s| s.images.len()).sum();
        if count == 0 {
            return Err(invalid_job("the job has no images"));
        }
        if count > MAX_IMAGES_PER_JOB {
            return Err(invalid_job(format!("the job has {count} images; at most {MAX_IMAGES_PER_JOB} are allowed")));
        }
        check_options(job)?;
        let time = job_time(job.timestamp_ms, job.utc_offset_s)?;
        let ctx = TemplateContext { model: ModelInfo::parse(&job.model_name), index: job.filename_index, time };
        let save_timestamp = output::save_timestamp(&time);
        let save_path = output::expand(&job.save_path, &ctx);
        output::check_sub_path(&save_path).map_err(|e| invalid_job(e.to_string()))?;
        let mut filename = output::expand(&job.filename, &ctx);
        if filename.is_empty() {
            filename = format!("{save_timestamp}_{}", ctx.model.name);
        }
        let (name_dir, base) = filename.rsplit_once('/').unwrap_or(("", filename.as_str()));
        output::check_sub_path(name_dir).map_err(|e| invalid_job(format!("filename: {e}")))?;
        output::validate_stem(base).map_err(|e| invalid_job(e.to_string()))?;
        let metadata = if job.embed_metadata { self.load_metadata(job)? } else { None };
        let object_root = ObjectRoot::parse(&job.output_dir).transpose().map_err(invalid_job)?;
        let settings = JobSettings {
            output_root: PathBuf::from(&job.output_dir),
            object_root,
            save_path,
            name_dir: name_dir.to_owned(),
            job: Arc::new(job.clone()),
            metadata,
            metadata_text: std::sync::OnceLock::new(),
            model: ctx.model,
            save_timestamp,
        };
        Ok((Arc::new(settings), base.to_owned()))
    }

    fn check_affix(&self, slot_index: usize, slot: &Slot) -> Result<(), PlanError> {
        if slot.affix.is_empty() {
            return Ok(());
        }
        output::validate_stem(&slot.affix).map_err(|e| invalid_job(format!("slot {slot_index} affix: {e}")))
    }

    /// One image: its segment, its validated layout, its file stem.
    fn image(
        &mut self,
        settings: &Arc<JobSettings>,
        base: &str,
        slot_index: usize,
        slot: &Slot,
        batch_index: usize,
        index: usize,
    ) -> Result<ImageTask, PlanError> {
        self.check_affix(slot_index, slot)?;
        let desc = &slot.images[batch_index];
        let what = format!("image {index}");
        let layout = layout_of(desc);
        let staged = self.staged_image;
        match self.segment(&desc.segment, &what) {
            Ok(segment) => {
                let segment_len = segment.len();
                layout.validate(segment_len).map_err(|e| layout_error(e, &what))?;
            }
            Err(_) if staged => {}
            Err(e) => return Err(e),
        }
        let mut stem = base.to_owned();
        if !slot.affix.is_empty() {
            stem = format!("{stem}_{}", slot.affix);
        }
        if slot.images.len() > 1 {
            stem = format!("{stem}_{batch_index}");
        }
        output::check_file_name_fits(&stem, slot.format.extension())
            .map_err(|e| invalid_job(format!("{what}: {e}")))?;
        let min = crate::encode::JXL_MIN_SIDE;
        if slot.format == ImageFormat::Jxl && (desc.width < min || desc.height < min) {
            return Err(invalid_job(format!(
                "{what}: JPEG XL needs at least {min}x{min} pixels, the image is {}x{} (save it as PNG or WebP)",
                desc.width, desc.height
            )));
        }
        Ok(ImageTask {
            segment: SegmentRef::new(Arc::clone(&self.spool_dir), desc.segment.clone()),
            layout,
            format: sample_format(desc.dtype),
            crc32: desc.crc32,
            settings: Arc::clone(settings),
            image_format: slot.format,
            affix: slot.affix.clone(),
            affix_dir: slot.subdir,
            stem,
            slot: slot_index as u32,
            batch_index: batch_index as u32,
        })
    }

    /// Opens a segment once per job (pixels and metadata may share one).
    fn segment(&mut self, name: &str, what: &str) -> Result<&Segment, PlanError> {
        if !self.segments.contains_key(name) {
            let s = open_segment(&self.spool_dir, name, what, self.recovering)?;
            self.segments.insert(name.to_owned(), s);
        }
        Ok(&self.segments[name])
    }

    /// The job's metadata: the blob in shared memory if given, else the inline value.
    fn load_metadata(&mut self, job: &SubmitJob) -> Result<Option<MetadataSource>, PlanError> {
        let Some(blob) = &job.metadata_blob else { return Ok(job.metadata.as_ref().map(|_| MetadataSource::Inline)) };
        let what = "metadata_blob";
        if blob.length > MAX_METADATA_BLOB {
            return Err(PlanError::new(
                ErrorCode::InvalidDescriptor,
                format!("{what}: {} bytes exceeds the {MAX_METADATA_BLOB}-byte limit", blob.length),
            ));
        }
        let segment = self.segment(&blob.segment, what)?;
        let end = blob.offset.checked_add(blob.length);
        if blob.offset < crate::shm::HEADER_LEN || end.is_none_or(|e| e > segment.len()) {
            return Err(layout_error(
                LayoutError::OutOfBounds {
                    start: blob.offset,
                    end: end.unwrap_or(u64::MAX),
                    segment_len: segment.len(),
                },
                what,
            ));
        }
        let mut bytes = vec![0u8; blob.length as usize];
        segment
            .read_at(blob.offset, &mut bytes)
            .map_err(|e| PlanError::new(ErrorCode::OutOfBounds, format!("{what}: reading the segment failed: {e}")))?;
        if let Some(expected) = blob.crc32 {
            let actual = crc32fast::hash(&bytes);
            if actual != expected {
                return Err(PlanError::new(
                    ErrorCode::ChecksumMismatch,
                    format!("{what}: crc32 {actual:08x} does not match the descriptor's {expected:08x}"),
                ));
            }
        }
        // Checked here (so a malformed blob is refused, not accepted), but without building the values: the
        // full decode of a large workflow takes milliseconds and happens in the worker, after the reply.
        check_metadata_blob(&bytes)
            .map_err(|e| PlanError::new(ErrorCode::InvalidDescriptor, format!("{what}: {e}")))?;
        Ok(Some(MetadataSource::Blob(bytes)))
    }
}

fn check_options(job: &SubmitJob) -> Result<(), PlanError> {
    if job.png_compression > 9 {
        return Err(invalid_job(format!("png_compression {} is outside 0..=9", job.png_compression)));
    }
    if !matches!(job.png_bit_depth, 8 | 16) {
        return Err(invalid_job(format!("png_bit_depth {} is not 8 or 16", job.png_bit_depth)));
    }
    if !matches!(job.exr_bit_depth, 16 | 32) {
        return Err(invalid_job(format!("exr_bit_depth {} is not 16 (half) or 32 (float)", job.exr_bit_depth)));
    }
    if !matches!(job.avif_bit_depth, 8 | 10) {
        return Err(invalid_job(format!("avif_bit_depth {} is not 8 or 10", job.avif_bit_depth)));
    }
    if !AVIF_QUALITY.contains(&job.avif_quality) {
        return Err(invalid_job(format!("avif_quality {} is outside 1..=100", job.avif_quality)));
    }
    if !AVIF_SPEED.contains(&job.avif_speed) {
        return Err(invalid_job(format!("avif_speed {} is outside 1..=10", job.avif_speed)));
    }
    if !matches!(job.jxl_bit_depth, 8 | 16) {
        return Err(invalid_job(format!(
            "jxl_bit_depth {} is not 8 or 16 (JPEG XL is saved losslessly at 8 or 16 bits per sample)",
            job.jxl_bit_depth
        )));
    }
    if !(1..=100).contains(&job.lossy_quality) {
        return Err(invalid_job(format!("lossy_quality {} is outside 1..=100", job.lossy_quality)));
    }
    if !(0.0..=1.0).contains(&job.min_quality_threshold) {
        return Err(invalid_job(format!("min_quality_threshold {} is outside 0..=1", job.min_quality_threshold)));
    }
    if !crate::encode::THUMBNAIL_SIZES.contains(&job.thumbnail_size) {
        let (lo, hi) = (crate::encode::THUMBNAIL_SIZES.start(), crate::encode::THUMBNAIL_SIZES.end());
        return Err(invalid_job(format!("thumbnail_size {} is outside {lo}..={hi}", job.thumbnail_size)));
    }
    if let Some(batch) = &job.batch {
        super::validate_batch_name(batch).map_err(invalid_job)?;
    } else if job.zip {
        return Err(invalid_job("zip needs a batch name: the archive is <batch>.zip"));
    }
    if job.zip && job.output_dir.starts_with(crate::s3::S3_SCHEME) {
        return Err(invalid_job("zip archives are files: they need a directory output root, not an s3:// object root"));
    }
    match ObjectRoot::parse(&job.output_dir) {
        Some(root) => drop(root.map_err(invalid_job)?),
        None if !Path::new(&job.output_dir).is_absolute() => {
            return Err(invalid_job(format!(
                "output_dir {:?} must be an absolute path or an s3://bucket/prefix URL",
                job.output_dir
            )));
        }
        None => {}
    }
    Ok(())
}

/// `job` with the daemon's clock at acceptance as its `timestamp_ms` when the client sent none (and the daemon's
/// UTC offset at that moment when it sent no `utc_offset_s` either). The stamped job is what is planned and
/// journaled, so a job recovered after a restart is named and stamped with the time it was accepted, exactly as
/// it would have been without the restart, not with the time of the recovery.
pub fn with_acceptance_time(job: &SubmitJob) -> Cow<'_, SubmitJob> {
    if job.timestamp_ms.is_some() {
        return Cow::Borrowed(job);
    }
    let now = Local::now();
    Cow::Owned(SubmitJob {
        timestamp_ms: Some(now.timestamp_millis()),
        utc_offset_s: job.utc_offset_s.or(Some(now.offset().local_minus_utc())),
        ..job.clone()
    })
}

/// The node's run time in its own time zone: the client's timestamp and offset, else the daemon's clock and zone.
fn job_time(timestamp_ms: Option<i64>, utc_offset_s: Option<i32>) -> Result<DateTime<FixedOffset>, PlanError> {
    let utc = match timestamp_ms {
        Some(ms) => DateTime::<Utc>::from_timestamp_millis(ms)
            .ok_or_else(|| invalid_job(format!("timestamp_ms {ms} is out of range")))?,
        None => Utc::now(),
    };
    let offset = match utc_offset_s {
        Some(s) => FixedOffset::east_opt(s).ok_or_else(|| invalid_job(format!("utc_offset_s {s} is out of range")))?,
        None => *utc.with_timezone(&Local).offset(),
    };
    Ok(utc.with_timezone(&offset))
}

fn layout_error(e: LayoutError, what: &str) -> PlanError {
    let code = match e {
        LayoutError::Invalid(_) => ErrorCode::InvalidDescriptor,
        LayoutError::OutOfBounds { .. } => ErrorCode::OutOfBounds,
    };
    PlanError::new(code, format!("{what}: {e}"))
}

fn open_segment(spool_dir: &Path, name: &str, what: &str, recovering: bool) -> Result<Segment, PlanError> {
    let segment = Segment::open(spool_dir, name).map_err(|e| {
        let code = match e {
            SegmentOpenError::InvalidName(_) => ErrorCode::InvalidSegmentName,
            SegmentOpenError::NotFound { .. } | SegmentOpenError::NotASegment { .. } => ErrorCode::SegmentNotFound,
            SegmentOpenError::Io { .. } => ErrorCode::Internal,
        };
        PlanError::new(code, format!("{what}: {e}"))
    })?;
    match segment.state() {
        Ok(SegmentState::Client) if !recovering => Ok(segment),
        // An accepted job's segment stays daemon-owned until its `released` record is journaled; one found
        // client-owned was handed back (and may hold another job's pixels since): never read it.
        Ok(SegmentState::Client) => Err(PlanError::new(
            ErrorCode::Lost,
            format!("{what}: segment {name:?} was handed back to its client before the restart"),
        )),
        Ok(SegmentState::Daemon) if recovering => Ok(segment),
        Ok(SegmentState::Daemon) => Err(PlanError::new(
            ErrorCode::SegmentBusy,
            format!(
                "{what}: segment {name:?} is still owned by the daemon for an earlier job; wait until it is \
                 released (header state byte back to 0) before reusing it"
            ),
        )),
        Ok(SegmentState::Unknown(b)) => Err(PlanError::new(
            ErrorCode::InvalidDescriptor,
            format!("{what}: segment {name:?} has unknown state byte {b}"),
        )),
        Err(e) => Err(PlanError::new(ErrorCode::Internal, format!("{what}: reading segment state: {e}"))),
    }
}

fn layout_of(desc: &ImageDescriptor) -> Layout {
    Layout {
        offset: desc.offset,
        length: desc.length,
        width: desc.width,
        height: desc.height,
        channels: desc.channels,
        sample_size: desc.dtype.size(),
        row_stride: desc.row_stride,
    }
}

fn sample_format(dtype: SampleType) -> SampleFormat {
    match dtype {
        SampleType::U8 => SampleFormat::U8,
        SampleType::U16 => SampleFormat::U16,
        SampleType::F32 => SampleFormat::F32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_job_without_a_timestamp_is_stamped_and_a_given_offset_is_kept() {
        let timed = SubmitJob { timestamp_ms: Some(5), ..SubmitJob::new("/out", Vec::new()) };
        assert!(matches!(with_acceptance_time(&timed), Cow::Borrowed(_)));
        let before = Utc::now().timestamp_millis();
        let untimed = SubmitJob { utc_offset_s: Some(3600), ..SubmitJob::new("/out", Vec::new()) };
        let stamped = with_acceptance_time(&untimed);
        let at = stamped.timestamp_ms.expect("stamped");
        assert!(at >= before && at <= Utc::now().timestamp_millis(), "{at}");
        assert_eq!(stamped.utc_offset_s, Some(3600));
        assert_eq!(SubmitJob { timestamp_ms: None, ..stamped.into_owned() }, untimed, "nothing else changes");
        let bare = SubmitJob::new("/out", Vec::new());
        let zoned = with_acceptance_time(&bare);
        assert!(zoned.utc_offset_s.is_some(), "the daemon's zone at acceptance is kept with the time");
    }
}
