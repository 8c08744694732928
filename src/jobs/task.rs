//! What a worker gets to save one image: the task, the job-wide settings it shares with the job's other images,
//! and a reference to the segment holding its pixels (opened only while the image is being saved, so pending
//! images hold no file descriptor however many there are).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::encode::SampleFormat;
use crate::output::ModelInfo;
use crate::protocol::{self, ImageFormat, JobMetadata, MetadataFields, SubmitJob};
use crate::shm::{Layout, Segment, SegmentOpenError};

/// A segment by name inside the spool directory. Holds no descriptor: [`SegmentRef::open`] opens (and checks)
/// it when it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SegmentRef {
    spool_dir: Arc<Path>,
    name: String,
}

impl SegmentRef {
    /// The segment `name` in `spool_dir`.
    pub fn new(spool_dir: Arc<Path>, name: impl Into<String>) -> Self {
        Self { spool_dir, name: name.into() }
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Opens the segment (no symlinks, owner and header checked).
    pub fn open(&self) -> Result<Segment, SegmentOpenError> {
        Segment::open(&self.spool_dir, &self.name)
    }
}

/// Where a job's metadata is until a worker needs it.
#[derive(Debug)]
pub enum MetadataSource {
    /// Sent in the submit frame (the job's `metadata`).
    Inline,
    /// The MessagePack bytes of a `metadata_blob`, structure already checked.
    Blob(Vec<u8>),
}

impl MetadataSource {
    /// Bytes this source holds in the daemon's memory (counted against the queue budget, with the text the
    /// workers format from it).
    pub fn held_bytes(&self, job: &SubmitJob) -> u64 {
        match self {
            Self::Blob(bytes) => bytes.len() as u64,
            Self::Inline => {
                job.metadata.as_ref().and_then(|m| protocol::encode_message(m).ok()).map_or(0, |b| b.len() as u64)
            }
        }
    }
}

/// Checks a metadata blob's whole structure without building its values (the same type the full decode uses).
pub fn check_metadata_blob(bytes: &[u8]) -> Result<(), protocol::FrameError> {
    protocol::decode_message::<MetadataFields<serde::de::IgnoredAny>>(bytes).map(|_| ())
}

/// Settings shared by every image of a job.
#[derive(Debug)]
pub struct JobSettings {
    /// The output root (a directory).
    pub output_root: PathBuf,
    /// The object-storage root, when `output_dir` is `s3://bucket/prefix` (then `output_root` is unused).
    pub object_root: Option<crate::s3::ObjectRoot>,
    /// The expanded `save_path` (relative, validated; directories not yet created).
    pub save_path: String,
    /// Directories the expanded file name template asked for (relative, validated), below the affix folder.
    pub name_dir: String,
    /// The job as submitted (and validated): workers read its options (`png_compression`, `lossy_quality`,
    /// `quality_gate`, ...) here, so a new job option needs no copy in between.
    pub job: Arc<SubmitJob>,
    /// Metadata to embed as received, or `None` when metadata is off.
    pub metadata: Option<MetadataSource>,
    /// `metadata` with every value formatted as `json.dumps` text, computed by the first worker that needs it
    /// (large workflows are formatted off the submitting client's critical path, once per job).
    pub metadata_text: OnceLock<Result<Option<JobMetadata>, String>>,
    /// The parsed model.
    pub model: ModelInfo,
    /// `YYYY_mm_dd_HHMMSS` of the node's run (metadata `save_timestamp`).
    pub save_timestamp: String,
}

impl JobSettings {
    /// The metadata to embed, as text: decoded and formatted once, by the first worker that needs it.
    ///
    /// `Err` carries a note for the user when a blob that passed the structure check at submission does not
    /// decode in full: the image is then saved without metadata and the note says so (a saved image is worth
    /// more than a refused one, and nothing is dropped silently).
    pub fn metadata_text(&self) -> Result<Option<&JobMetadata>, &str> {
        let text = self.metadata_text.get_or_init(|| {
            let decoded = match self.metadata.as_ref() {
                None => return Ok(None),
                Some(MetadataSource::Inline) => match &self.job.metadata {
                    Some(m) => std::borrow::Cow::Borrowed(m),
                    None => return Ok(None),
                },
                Some(MetadataSource::Blob(bytes)) => match protocol::decode_message::<JobMetadata>(bytes) {
                    Ok(m) => std::borrow::Cow::Owned(m),
                    Err(e) => {
                        tracing::error!("metadata_blob passed its check but does not decode: {e}");
                        return Err(format!("metadata left out: the job's metadata_blob does not decode ({e})"));
                    }
                },
            };
            Ok(Some(decoded.to_text(crate::encode::pyjson::dumps_msgpack)))
        });
        match text {
            Ok(m) => Ok(m.as_ref()),
            Err(note) => Err(note),
        }
    }

    /// Bytes of metadata the job holds in memory: the source and, once formatted, its text (estimated as the
    /// same size again).
    pub fn held_metadata_bytes(&self) -> u64 {
        self.metadata.as_ref().map_or(0, |m| m.held_bytes(&self.job).saturating_mul(2))
    }
}

/// Everything a worker needs to save one image.
#[derive(Debug)]
pub struct ImageTask {
    /// The segment holding the pixels (validated at submission, opened again by the worker).
    pub segment: SegmentRef,
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
    /// The slot's affix (empty for none).
    pub affix: String,
    /// Save under an `<affix>/` folder.
    pub affix_dir: bool,
    /// The final file name stem (validated), before any collision counter.
    pub stem: String,
    /// Slot position.
    pub slot: u32,
    /// Position in the slot's batch.
    pub batch_index: u32,
}

/// Where images that fail the quality gate go, below the save path.
pub const DISCARD_DIR: &str = "_discarded";
/// Where an image's thumbnail goes, below the image's own folder (`<folder>/_thumbnails/<file name>.webp`).
pub const THUMBNAIL_DIR: &str = "_thumbnails";

impl ImageTask {
    /// The directory below the output root: `save_path[/_discarded][/<affix>][/<name dirs>]`.
    pub fn sub_path(&self, discarded: bool) -> String {
        let mut parts = vec![self.settings.save_path.as_str()];
        if discarded {
            parts.push(DISCARD_DIR);
        }
        if self.affix_dir && !self.affix.is_empty() {
            parts.push(&self.affix);
        }
        parts.push(&self.settings.name_dir);
        parts.into_iter().filter(|p| !p.is_empty()).collect::<Vec<_>>().join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(metadata: Option<MetadataSource>) -> JobSettings {
        JobSettings {
            output_root: PathBuf::from("/out"),
            object_root: None,
            save_path: String::new(),
            name_dir: String::new(),
            job: Arc::new(SubmitJob::new("/out", Vec::new())),
            metadata,
            metadata_text: OnceLock::new(),
            model: ModelInfo::parse(""),
            save_timestamp: String::new(),
        }
    }

    /// Regression (issue 12): a blob that failed the full decode was dropped without a word.
    #[test]
    fn a_blob_that_does_not_decode_gives_a_note_not_silence() {
        // A map whose `prompt` is an integer: neither check accepts it, so build the failure directly.
        let bytes = vec![0x81, 0xa6, b'p', b'r', b'o', b'm', b'p', b't', 0x05];
        assert!(check_metadata_blob(&bytes).is_err(), "the quick check and the full decode agree");
        let s = settings(Some(MetadataSource::Blob(bytes)));
        let note = s.metadata_text().unwrap_err();
        assert!(note.starts_with("metadata left out: the job's metadata_blob does not decode"), "{note}");
    }

    #[test]
    fn a_good_blob_passes_both_checks_and_is_formatted() {
        let meta = JobMetadata { prompt: Some("{}".to_owned()), ..Default::default() };
        let bytes = protocol::encode_message(&meta).unwrap();
        check_metadata_blob(&bytes).unwrap();
        let s = settings(Some(MetadataSource::Blob(bytes)));
        assert_eq!(s.metadata_text().unwrap().unwrap().prompt.as_deref(), Some("{}"));
        assert!(s.held_metadata_bytes() > 0);
        assert_eq!(settings(None).metadata_text().unwrap(), None);
    }
}
