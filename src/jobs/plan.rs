//! Validating a submission before anything is accepted: every descriptor against its segment's real size,
//! every option, every path part. Either the whole job is valid, or nothing is accepted and the error names
//! the offending image and field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::encode::SampleFormat;
use crate::output;
use crate::protocol::{ErrorCode, ImageDescriptor, ImageFormat, SampleType, SubmitJob};
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

/// Settings shared by every image of a job.
#[derive(Debug)]
pub struct JobSettings {
    /// The output root.
    pub output_root: PathBuf,
    /// The expanded `save_path` (relative, validated; directories not yet created).
    pub save_path: String,
    /// PNG compression level 0..9.
    pub png_compression: u8,
    /// JPEG / lossy WebP quality.
    pub lossy_quality: u8,
    /// Lossless WebP.
    pub lossless_webp: bool,
}

/// Everything a worker needs to save one image.
#[derive(Debug)]
pub struct ImageTask {
    /// The segment holding the pixels (opened and validated at submission).
    pub segment: Arc<Segment>,
    /// Where the pixels are in it.
    pub layout: Layout,
    /// How to convert them.
    pub format: SampleFormat,
    /// Expected CRC-32 of the pixel bytes, if the client sent one.
    pub crc32: Option<u32>,
    /// Job-wide settings.
    pub settings: Arc<JobSettings>,
    /// Output format.
    pub image_format: ImageFormat,
    /// Sub-folder below the save path (the affix, when the slot asks for one).
    pub subdir: Option<String>,
    /// The final file name stem (validated), before any collision counter.
    pub stem: String,
    /// Slot position.
    pub slot: u32,
    /// Position in the slot's batch.
    pub batch_index: u32,
}

/// A validated job, ready to be queued.
#[derive(Debug)]
pub struct JobPlan {
    /// One task per image, slots in order, then batch order.
    pub tasks: Vec<Arc<ImageTask>>,
    /// The distinct segments the job uses.
    pub segments: Vec<Arc<Segment>>,
}

/// Most images one job may carry.
pub const MAX_IMAGES_PER_JOB: usize = 4096;

fn invalid_job(message: impl Into<String>) -> PlanError {
    PlanError::new(ErrorCode::InvalidJob, message)
}

/// Validates `job` against the segments in `spool_dir`. Opens each segment once.
pub fn plan_job(job: &SubmitJob, spool_dir: &Path) -> Result<JobPlan, PlanError> {
    let count: usize = job.slots.iter().map(|s| s.images.len()).sum();
    if count == 0 {
        return Err(invalid_job("the job has no images"));
    }
    if count > MAX_IMAGES_PER_JOB {
        return Err(invalid_job(format!("the job has {count} images; at most {MAX_IMAGES_PER_JOB} are allowed")));
    }
    if job.png_compression > 9 {
        return Err(invalid_job(format!("png_compression {} is outside 0..=9", job.png_compression)));
    }
    if !(1..=100).contains(&job.lossy_quality) {
        return Err(invalid_job(format!("lossy_quality {} is outside 1..=100", job.lossy_quality)));
    }
    let output_root = PathBuf::from(&job.output_dir);
    if !output_root.is_absolute() {
        return Err(invalid_job(format!("output_dir {:?} must be an absolute path", job.output_dir)));
    }
    output::check_sub_path(&job.save_path).map_err(|e| invalid_job(e.to_string()))?;
    output::validate_stem(&job.filename).map_err(|e| invalid_job(e.to_string()))?;
    let settings = Arc::new(JobSettings {
        output_root,
        save_path: job.save_path.clone(),
        png_compression: job.png_compression,
        lossy_quality: job.lossy_quality,
        lossless_webp: job.lossless_webp,
    });

    let mut segments: HashMap<&str, Arc<Segment>> = HashMap::new();
    let mut tasks = Vec::with_capacity(count);
    for (slot_index, slot) in job.slots.iter().enumerate() {
        if slot.format != ImageFormat::Png {
            return Err(invalid_job(format!("slot {slot_index}: format {:?} is not supported yet", slot.format)));
        }
        let affix = (!slot.affix.is_empty()).then_some(slot.affix.as_str());
        if let Some(affix) = affix {
            output::validate_stem(affix).map_err(|e| invalid_job(format!("slot {slot_index} affix: {e}")))?;
        }
        let batch = slot.images.len() > 1;
        for (batch_index, desc) in slot.images.iter().enumerate() {
            let index = tasks.len();
            let segment = match segments.get(desc.segment.as_str()) {
                Some(s) => Arc::clone(s),
                None => {
                    let s = Arc::new(open_segment(spool_dir, desc, index)?);
                    segments.insert(&desc.segment, Arc::clone(&s));
                    s
                }
            };
            let layout = layout_of(desc);
            layout.validate(segment.len()).map_err(|e| {
                let code = match e {
                    LayoutError::Invalid(_) => ErrorCode::InvalidDescriptor,
                    LayoutError::OutOfBounds { .. } => ErrorCode::OutOfBounds,
                };
                PlanError::new(code, format!("image {index}: {e}"))
            })?;
            let mut stem = job.filename.clone();
            if let Some(affix) = affix {
                stem = format!("{stem}_{affix}");
            }
            if batch {
                stem = format!("{stem}_{batch_index}");
            }
            tasks.push(Arc::new(ImageTask {
                segment,
                layout,
                format: sample_format(desc.dtype),
                crc32: desc.crc32,
                settings: Arc::clone(&settings),
                image_format: slot.format,
                subdir: affix.filter(|_| slot.subdir).map(str::to_owned),
                stem,
                slot: slot_index as u32,
                batch_index: batch_index as u32,
            }));
        }
    }
    Ok(JobPlan { tasks, segments: segments.into_values().collect() })
}

fn open_segment(spool_dir: &Path, desc: &ImageDescriptor, index: usize) -> Result<Segment, PlanError> {
    let segment = Segment::open(spool_dir, &desc.segment).map_err(|e| {
        let code = match e {
            SegmentOpenError::InvalidName(_) => ErrorCode::InvalidSegmentName,
            SegmentOpenError::NotFound { .. } | SegmentOpenError::NotASegment { .. } => ErrorCode::SegmentNotFound,
            SegmentOpenError::Io { .. } => ErrorCode::Internal,
        };
        PlanError::new(code, format!("image {index}: {e}"))
    })?;
    match segment.state() {
        Ok(SegmentState::Client) => Ok(segment),
        Ok(SegmentState::Daemon) => Err(PlanError::new(
            ErrorCode::SegmentBusy,
            format!(
                "image {index}: segment {:?} is still owned by the daemon for an earlier job; wait until it is \
                 released (header state byte back to 0) before reusing it",
                desc.segment
            ),
        )),
        Ok(SegmentState::Unknown(b)) => Err(PlanError::new(
            ErrorCode::InvalidDescriptor,
            format!("image {index}: segment {:?} has unknown state byte {b}", desc.segment),
        )),
        Err(e) => Err(PlanError::new(ErrorCode::Internal, format!("image {index}: reading segment state: {e}"))),
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
