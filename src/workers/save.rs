//! Saving one image: read its rows from the segment (verifying the checksum on the way), convert to 8 bits,
//! encode, and write the file atomically under a name nothing else holds.

use std::path::{Path, PathBuf};

use crate::encode::{
    AvifOptions, EncodeError, ExrInput, Format, Image8, Metadata, Pixels, RawImage, append_samples, convert_row,
    encode_pixels, encode_thumbnail, scores, thumbnail_metadata,
};
use crate::jobs::{ImageTask, THUMBNAIL_DIR};
use crate::output::{self, OutputDirs, OutputError, Written};
use crate::protocol::{ErrorCode, ErrorReply, ExrColorSpace, GateScores, ImageFormat, QualityGate, SubmitJob};
use crate::s3::{ObjectStore, S3Error, Staged, Upload};
use crate::shm::{Segment, SegmentState};

/// Why an image could not be saved.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// The segment could not be read (for example truncated by its client after submitting).
    #[error("reading pixels from segment {segment:?} failed: {source}")]
    Read { segment: String, source: std::io::Error },
    /// The segment could not be opened again, or is not daemon-owned any more (removed or replaced by its
    /// client after submitting).
    #[error("segment {segment:?} is not usable any more: {reason}")]
    Segment { segment: String, reason: String },
    /// The pixels do not match the descriptor's CRC-32.
    #[error(
        "pixels in segment {segment:?} do not match the descriptor's crc32 (expected {expected:08x}, got {actual:08x})"
    )]
    Checksum { segment: String, expected: u32, actual: u32 },
    /// The target directory or file could not be prepared or written.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The encoder failed.
    #[error("encoding failed: {0}")]
    Encode(#[from] EncodeError),
    /// Storing the object (an `s3://` output root) failed.
    #[error(transparent)]
    Object(#[from] S3Error),
}

impl SaveError {
    /// Whether the error may go away by itself (disk full, permission denied, directory removed, a read-only
    /// file system), so the save is retried rather than failed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Output(OutputError::Dir { .. } | OutputError::Write { .. }) | Self::Encode(EncodeError::Io(_))
        ) || matches!(self, Self::Object(e) if e.is_retryable())
    }

    /// The wire form of the error, for `status`.
    pub fn to_reply(&self) -> ErrorReply {
        let code = match self {
            Self::Read { .. } => ErrorCode::OutOfBounds,
            Self::Segment { .. } => ErrorCode::Lost,
            Self::Checksum { .. } => ErrorCode::ChecksumMismatch,
            Self::Output(OutputError::Refused { .. } | OutputError::Escapes { .. }) => ErrorCode::InvalidJob,
            Self::Output(_) | Self::Encode(_) | Self::Object(_) => ErrorCode::SaveFailed,
        };
        ErrorReply::new(code, self.to_string())
    }
}

/// Rows are read from the segment in chunks of about this many bytes.
const READ_CHUNK: u64 = 1 << 20;

/// What happened to a saved image.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    /// Where it landed.
    pub written: Written,
    /// It failed the quality gate and went to `_discarded`.
    pub discarded: bool,
    /// Gate scores, when a gate ran.
    pub scores: Option<GateScores>,
    /// Things the user should know (metadata left out, ...).
    pub notes: Vec<String>,
    /// The thumbnail, when the job asked for one and it was written.
    pub thumbnail: Option<PathBuf>,
    /// The object's URL, for an `s3://` output root (`written.path` is then `s3://bucket/key`).
    pub url: Option<String>,
}

/// Reads, converts, judges, encodes and writes one image.
pub fn save_image(task: &ImageTask, dirs: &OutputDirs) -> Result<Saved, SaveError> {
    let settings = &task.settings;
    let job = &settings.job;
    let (format, metadata, mut notes) = encoding_of(task);
    let pixels = read_pixels(task, &open_segment(task)?, format.wants_raw())?;
    let (scores, passed) = judge_pixels(&pixels, job.quality_gate, job.min_quality_threshold);
    let dir = output::resolve_dir(&settings.output_root, &task.sub_path(!passed))?;
    dirs.record(dir.path());
    let ext = task.image_format.extension();
    let (written, encode_notes) =
        output::write_new_file_in(&dir, &task.stem, ext, |w| encode_pixels(&pixels, format, metadata.as_ref(), w))??;
    notes.extend(encode_notes);
    let thumbnail = if job.thumbnails {
        let sub_path = task.sub_path(!passed);
        match write_thumbnail(task, dirs, &pixels.image8(), &sub_path, &written.path, metadata.as_ref()) {
            Ok(path) => Some(path),
            Err(e) => {
                // The image is saved; a missing preview is worth a note, not a failed or repeated save.
                tracing::warn!("thumbnail of {} not written: {e}", written.path.display());
                notes.push(format!("thumbnail not written: {e}"));
                None
            }
        }
    } else {
        None
    };
    Ok(Saved { written, discarded: !passed, scores, notes, thumbnail, url: None })
}

/// Saves one image of a job whose output root is `s3://bucket/prefix`: the encoded bytes are staged durably in
/// the state directory first (or taken from the staging file an earlier attempt, or a daemon killed before the
/// upload, left), then uploaded with a conditional create; the staging file goes once the upload succeeded.
/// `upload_id` is the same for every attempt at this image, across restarts.
pub fn save_object(
    task: &ImageTask,
    store: Option<&ObjectStore>,
    job_id: &str,
    index: usize,
) -> Result<Saved, SaveError> {
    let root = task.settings.object_root.as_ref().expect("save_object is only called for object roots");
    let store = store.ok_or_else(|| {
        S3Error::Config(format!(
            "the job's output root {} is S3 object storage, but this daemon has no S3 configuration (set \
             AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the config file's s3_* keys and \
             restart it; the image is kept)",
            root.path_of(&root.prefix)
        ))
    })?;
    let staging = store.staging_path(job_id, index);
    let staged = match Staged::load(&staging)? {
        Some(staged) => staged,
        None => {
            let (format, metadata, mut notes) = encoding_of(task);
            let pixels = read_pixels(task, &open_segment(task)?, format.wants_raw())?;
            let job = &task.settings.job;
            let (scores, passed) = judge_pixels(&pixels, job.quality_gate, job.min_quality_threshold);
            let sub_path = task.sub_path(!passed);
            output::check_sub_path(&sub_path)?;
            if job.thumbnails {
                notes.push("thumbnail not written: thumbnails are not made for s3:// output roots".to_owned());
            }
            let mut bytes = Vec::new();
            notes.extend(encode_pixels(&pixels, format, metadata.as_ref(), &mut bytes)?);
            let staged = Staged { sub_path, discarded: !passed, scores, notes, bytes };
            staged.store(&staging)?;
            staged
        }
    };
    let ext = task.image_format.extension();
    let upload_id = format!("{job_id}/{index}");
    let upload = Upload {
        sub_path: &staged.sub_path,
        stem: &task.stem,
        ext,
        content_type: content_type(task.image_format),
        bytes: &staged.bytes,
        id: &upload_id,
    };
    let object = store.put_new(root, &upload)?;
    if let Err(e) = std::fs::remove_file(&staging) {
        tracing::warn!("could not remove the staging file {} after its upload: {e}", staging.display());
    }
    let written = Written { path: object.path.into(), bytes: staged.bytes.len() as u64 };
    Ok(Saved {
        written,
        discarded: staged.discarded,
        scores: staged.scores,
        notes: staged.notes,
        thumbnail: None,
        url: Some(object.url),
    })
}

fn content_type(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "image/png",
        ImageFormat::Webp => "image/webp",
        ImageFormat::Jpeg => "image/jpeg",
        ImageFormat::Exr => "image/x-exr",
        ImageFormat::Avif => "image/avif",
        ImageFormat::Jxl => "image/jxl",
    }
}

/// The encoder settings and the metadata of a task (and a note if its metadata could not be decoded).
fn encoding_of(task: &ImageTask) -> (Format, Option<Metadata>, Vec<String>) {
    let settings = &task.settings;
    let format = encoder_format(task.image_format, &settings.job);
    let mut notes = Vec::new();
    let text = settings.metadata_text().unwrap_or_else(|note| {
        notes.push(note.to_owned());
        None
    });
    let metadata = text.map(|m| Metadata {
        prompt: m.prompt.clone(),
        extra: m.extra_pnginfo.clone(),
        generation_metadata: m.generation_metadata.clone(),
        generation_fields: m.generation_fields.clone(),
        custom_metadata: m.custom_metadata.clone(),
        image_type: task.affix.clone(),
        model_name: settings.model.name.clone(),
        model_path: settings.model.path.clone(),
        save_timestamp: settings.save_timestamp.clone(),
        batch_index: task.batch_index,
    });
    (format, metadata, notes)
}

/// The gate on the 8-bit image (PROTOCOL.md 12.7), whatever precision the output keeps.
fn judge_pixels(pixels: &Pixels, gate: QualityGate, threshold: f64) -> (Option<GateScores>, bool) {
    match pixels {
        Pixels::Eight(image) => judge(image, gate, threshold),
        Pixels::Raw(_) if gate == QualityGate::Disabled => (None, true),
        Pixels::Raw(raw) => judge(&raw.to_image8(), gate, threshold),
    }
}

/// Writes the thumbnail of the image saved at `image_path` (below `sub_path`) into `<sub_path>/_thumbnails/`
/// as `<image file name>.webp`, with the same atomic, never-overwriting rules as the image.
fn write_thumbnail(
    task: &ImageTask,
    dirs: &OutputDirs,
    image: &Image8,
    sub_path: &str,
    image_path: &Path,
    metadata: Option<&Metadata>,
) -> Result<PathBuf, SaveError> {
    crate::fault::hold("worker.before_thumbnail");
    let settings = &task.settings;
    let name = image_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let thumbs = if sub_path.is_empty() { THUMBNAIL_DIR.to_owned() } else { format!("{sub_path}/{THUMBNAIL_DIR}") };
    let dir = output::resolve_dir(&settings.output_root, &thumbs)?;
    dirs.record(dir.path());
    let source = if sub_path.is_empty() { name.clone() } else { format!("{sub_path}/{name}") };
    let meta = metadata.map(|m| thumbnail_metadata(m, &source));
    let size = settings.job.thumbnail_size;
    let (written, _) =
        output::write_new_file_in(&dir, &name, "webp", |w| encode_thumbnail(image, size, meta.as_ref(), w))??;
    Ok(written.path)
}

/// The encoder and its settings for a slot's format under the job's options.
fn encoder_format(format: ImageFormat, job: &SubmitJob) -> Format {
    match format {
        ImageFormat::Png if job.png_bit_depth == 16 => Format::Png16 { compression: job.png_compression },
        ImageFormat::Png => Format::Png { compression: job.png_compression },
        ImageFormat::Webp => Format::Webp { lossless: job.lossless_webp, quality: job.lossy_quality },
        ImageFormat::Jpeg => Format::Jpeg { quality: job.lossy_quality },
        ImageFormat::Jxl => Format::Jxl { sixteen: job.jxl_bit_depth == 16 },
        ImageFormat::Exr => Format::Exr {
            half: job.exr_bit_depth == 16,
            input: match job.exr_input_color_space {
                ExrColorSpace::Srgb => ExrInput::Srgb,
                ExrColorSpace::Linear => ExrInput::Linear,
            },
        },
        ImageFormat::Avif => Format::Avif(AvifOptions {
            quality: job.avif_quality,
            speed: job.avif_speed,
            ten_bit: job.avif_bit_depth == 10,
        }),
    }
}

/// Applies the gate: the scores it computed and whether the image passes.
fn judge(image: &Image8, gate: QualityGate, threshold: f64) -> (Option<GateScores>, bool) {
    if gate == QualityGate::Disabled {
        return (None, true);
    }
    let s = scores(image);
    let (variance, edge) = match gate {
        QualityGate::Variance => (Some(s.variance), None),
        QualityGate::EdgeDensity => (None, Some(s.edge_density)),
        _ => (Some(s.variance), Some(s.edge_density)),
    };
    let passed = variance.is_none_or(|v| v >= threshold) && edge.is_none_or(|e| e >= threshold);
    (Some(GateScores { variance, edge_density: edge }), passed)
}

/// Opens the task's segment for this save only (pending images hold no descriptor) and checks it is still the
/// daemon's: a segment the client removed, replaced or took back is never read.
fn open_segment(task: &ImageTask) -> Result<Segment, SaveError> {
    let name = task.segment.name();
    let unusable = |reason: String| SaveError::Segment { segment: name.to_owned(), reason };
    let segment = task.segment.open().map_err(|e| unusable(e.to_string()))?;
    match segment.state() {
        Ok(SegmentState::Daemon) => Ok(segment),
        Ok(other) => Err(unusable(format!("its header says {other:?}, not daemon-owned"))),
        Err(source) => Err(SaveError::Read { segment: name.to_owned(), source }),
    }
}

/// Reads the image's rows with positioned reads, verifying the CRC-32 over exactly the descriptor's byte range:
/// converted to 8 bits on the way, or (`raw`) kept as submitted for the formats with more precision.
fn read_pixels(task: &ImageTask, segment: &Segment, raw: bool) -> Result<Pixels, SaveError> {
    let l = &task.layout;
    let row_bytes = l.row_bytes() as usize;
    let out_row = l.width as usize * usize::from(l.channels);
    let mut data = vec![0u8; if raw { 0 } else { out_row * l.height as usize }];
    let mut samples = task.format.buffer(if raw { out_row * l.height as usize } else { 0 });
    let rows_per_chunk = (READ_CHUNK / l.row_stride).clamp(1, u64::from(l.height));
    let end = l.offset + l.length;
    let mut hasher = task.crc32.map(|_| crc32fast::Hasher::new());
    let mut buf = Vec::new();
    let mut row = 0u64;
    while row < u64::from(l.height) {
        let last = (row + rows_per_chunk).min(u64::from(l.height));
        let start = l.offset + row * l.row_stride;
        // The final chunk runs to the end of the descriptor's range so the checksum covers every byte of it.
        let stop = if last == u64::from(l.height) { end } else { l.offset + last * l.row_stride };
        let want = if hasher.is_some() { stop - start } else { (last - row - 1) * l.row_stride + row_bytes as u64 };
        buf.resize(want as usize, 0);
        segment
            .read_at(start, &mut buf)
            .map_err(|source| SaveError::Read { segment: task.segment.name().to_owned(), source })?;
        if let Some(h) = hasher.as_mut() {
            h.update(&buf);
        }
        for r in row..last {
            let src = ((r - row) * l.row_stride) as usize;
            if raw {
                append_samples(task.format, &buf[src..src + row_bytes], &mut samples);
            } else {
                let dst = r as usize * out_row;
                convert_row(task.format, &buf[src..src + row_bytes], &mut data[dst..dst + out_row]);
            }
        }
        row = last;
    }
    if let (Some(expected), Some(h)) = (task.crc32, hasher) {
        let actual = h.finalize();
        if actual != expected {
            return Err(SaveError::Checksum { segment: task.segment.name().to_owned(), expected, actual });
        }
    }
    Ok(if raw {
        Pixels::Raw(RawImage { width: l.width, height: l.height, channels: l.channels, samples })
    } else {
        Pixels::Eight(Image8 { width: l.width, height: l.height, channels: l.channels, data })
    })
}

/// The final path as a string for the wire.
pub(crate) fn path_string(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
