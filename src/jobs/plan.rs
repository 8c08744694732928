//! Validating a submission before anything is accepted: every descriptor against its segment's real size,
//! every option, every path part. Either the whole job is valid, or nothing is accepted and the error names
//! the offending image and field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::encode::SampleFormat;
use crate::output;
use crate::protocol::{ErrorCode, ImageDescriptor, SampleType, SubmitJob};
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
    /// The output root.
    pub output_root: PathBuf,
    /// The sub-directory below the root (validated, not yet created).
    pub save_path: String,
    /// The file name stem (validated).
    pub stem: String,
    /// PNG compression level 0..9.
    pub png_compression: u8,
}

/// A validated job, ready to be queued.
#[derive(Debug)]
pub struct JobPlan {
    /// One task per image, in submission order.
    pub tasks: Vec<Arc<ImageTask>>,
    /// The distinct segments the job uses.
    pub segments: Vec<Arc<Segment>>,
}

/// Most images one job may carry (a node execution has at most five slots of batches).
pub const MAX_IMAGES_PER_JOB: usize = 4096;

/// Validates `job` against the segments in `spool_dir`. Opens each segment once.
pub fn plan_job(job: &SubmitJob, spool_dir: &Path) -> Result<JobPlan, PlanError> {
    if job.images.is_empty() {
        return Err(PlanError::new(ErrorCode::InvalidJob, "the job has no images"));
    }
    if job.images.len() > MAX_IMAGES_PER_JOB {
        return Err(PlanError::new(
            ErrorCode::InvalidJob,
            format!("the job has {} images; at most {MAX_IMAGES_PER_JOB} are allowed", job.images.len()),
        ));
    }
    if job.format != "png" {
        return Err(PlanError::new(
            ErrorCode::InvalidJob,
            format!("format {:?} is not supported by protocol version 1 (use \"png\")", job.format),
        ));
    }
    if job.png_compression > 9 {
        return Err(PlanError::new(
            ErrorCode::InvalidJob,
            format!("png_compression {} is outside 0..=9", job.png_compression),
        ));
    }
    let output_root = PathBuf::from(&job.output_dir);
    if !output_root.is_absolute() {
        return Err(PlanError::new(
            ErrorCode::InvalidJob,
            format!("output_dir {:?} must be an absolute path", job.output_dir),
        ));
    }
    output::check_sub_path(&job.save_path).map_err(|e| PlanError::new(ErrorCode::InvalidJob, e.to_string()))?;
    output::validate_stem(&job.filename).map_err(|e| PlanError::new(ErrorCode::InvalidJob, e.to_string()))?;

    let mut segments: HashMap<&str, Arc<Segment>> = HashMap::new();
    let mut tasks = Vec::with_capacity(job.images.len());
    let batch = job.images.len() > 1;
    for (index, desc) in job.images.iter().enumerate() {
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
        let stem = if batch { format!("{}_{index}", job.filename) } else { job.filename.clone() };
        tasks.push(Arc::new(ImageTask {
            segment,
            layout,
            format: sample_format(desc.dtype),
            crc32: desc.crc32,
            output_root: output_root.clone(),
            save_path: job.save_path.clone(),
            stem,
            png_compression: job.png_compression,
        }));
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
