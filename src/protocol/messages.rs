//! Every request and reply of protocol version 1. All structs travel as MessagePack maps with the field names
//! below; an enum is a map whose `type` field names the variant. Unknown fields are ignored, missing optional
//! fields take the documented default.

use serde::{Deserialize, Serialize};

use super::ErrorCode;

/// A client request. The first request on a connection must be [`Request::Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Handshake: which protocol and version the client speaks.
    Hello(Hello),
    /// Submit a job: images already written to shared-memory segments, plus where to save them.
    Submit(Box<SubmitJob>),
    /// Ask for a job's per-image progress.
    Status(StatusQuery),
    /// Ask for daemon-wide counters.
    Stats(Empty),
    /// Ask the daemon to stop accepting work, finish its queue and exit.
    Stop(Empty),
    /// Give up on a job's images that are not saved yet (for example ones retrying on a full disk).
    Cancel(StatusQuery),
    /// Ask for a batch group's summary: every job submitted with this `batch` name.
    BatchStatus(BatchQuery),
}

/// A message with no fields (a map holding only `type`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The handshake request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always `"luna-daemon"`.
    pub protocol: String,
    /// The protocol version the client speaks.
    pub version: u32,
    /// A free-form client name for logs and stats, e.g. `"comfyui-node/0.1.0"`.
    #[serde(default)]
    pub client: String,
    /// The client's process id, for stats and cleanup.
    #[serde(default)]
    pub pid: Option<u32>,
}

/// Sample type of the pixels in shared memory. Multi-byte samples are little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleType {
    /// 8-bit unsigned, taken as is.
    U8,
    /// 16-bit unsigned, 0..65535 mapped to 0..1 then converted like f32.
    U16,
    /// 32-bit IEEE float, nominally 0..1: `clip(255 * x, 0, 255)` truncated, as ComfyUI does.
    F32,
}

impl SampleType {
    /// Bytes per sample.
    pub fn size(self) -> u64 {
        match self {
            Self::U8 => 1,
            Self::U16 => 2,
            Self::F32 => 4,
        }
    }
}

/// Where one image's pixels are: a byte range of a shared-memory segment, row-major, channels interleaved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDescriptor {
    /// The segment's name: a plain file name inside the daemon's spool directory, never a path.
    pub segment: String,
    /// Byte offset of the first pixel from the start of the segment (at or after the segment header).
    pub offset: u64,
    /// Bytes of pixel data starting at `offset`; at least `row_stride * (height - 1) + width * channels * size`.
    pub length: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 (gray), 3 (RGB) or 4 (RGBA).
    pub channels: u8,
    /// Sample type.
    pub dtype: SampleType,
    /// Bytes from the start of one row to the start of the next.
    pub row_stride: u64,
    /// CRC-32 (IEEE, as zlib's `crc32`) of the `length` bytes at `offset`, or absent to skip the check.
    #[serde(default)]
    pub crc32: Option<u32>,
}

/// Output format of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageFormat {
    /// PNG at `png_compression`, metadata as tEXt chunks.
    Png,
    /// WebP, lossy at `lossy_quality` or lossless, metadata as an EXIF chunk.
    Webp,
    /// JPEG at `lossy_quality` (alpha dropped), metadata as EXIF in APP1 (64 KiB limit).
    Jpeg,
    /// OpenEXR, 32-bit float or 16-bit half (`exr_bit_depth`), metadata as string header attributes.
    Exr,
    /// AVIF at `avif_quality` and `avif_speed`, 8 or 10 bits (`avif_bit_depth`), metadata as an Exif item.
    Avif,
    /// JPEG XL, lossless, 8 or 16 bits (`jxl_bit_depth`), metadata as an `Exif` box.
    Jxl,
}

impl ImageFormat {
    /// The file extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Webp => "webp",
            Self::Jpeg => "jpg",
            Self::Exr => "exr",
            Self::Avif => "avif",
            Self::Jxl => "jxl",
        }
    }
}

/// The colour space of the submitted samples, for EXR (which stores linear light).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExrColorSpace {
    /// sRGB-encoded, as ComfyUI's IMAGE: colour channels are linearised (inverse sRGB transfer function).
    #[default]
    Srgb,
    /// Already linear: written unchanged.
    Linear,
}

/// The quality gate applied to every image on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QualityGate {
    /// Every image passes.
    #[default]
    Disabled,
    /// `min(1, var(gray 0..255) / 3000) >= threshold`.
    Variance,
    /// `min(1, mean(mean|dy|, mean|dx|) on 0..1 / 0.05) >= threshold`.
    EdgeDensity,
    /// Both must pass.
    Both,
}

/// One of the node's image inputs: a batch of images saved with the same affix, format and sub-folder choice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// Appended to the file name as `_<affix>` (and used as the sub-folder); empty for none.
    #[serde(default)]
    pub affix: String,
    /// Output format.
    pub format: ImageFormat,
    /// Save under an `<affix>/` sub-folder.
    #[serde(default)]
    pub subdir: bool,
    /// The batch, in order; `_<batch index>` is appended to names when there is more than one.
    pub images: Vec<ImageDescriptor>,
}

/// A byte range of a segment holding a MessagePack-encoded [`JobMetadata`] (for metadata too large for a
/// frame, such as big workflows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// Segment name.
    pub segment: String,
    /// Byte offset (at or after the segment header).
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// CRC-32 of the bytes, or absent.
    #[serde(default)]
    pub crc32: Option<u32>,
}

/// Metadata to embed, already serialised by the client exactly as it should appear (for ComfyUI clients:
/// Python's `json.dumps` of each value), so both save paths write identical text. The two large values (the
/// prompt and the extra_pnginfo entries, typically hundreds of KB) may instead be sent as MessagePack values;
/// the daemon then writes them exactly as Python's `json.dumps` would, off the client's critical path.
///
/// Generic over how the values are held: [`JobMetadata`] builds them; `MetadataFields<serde::de::IgnoredAny>`
/// checks a blob's whole structure without building them (one type for both, so they cannot disagree).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "V: Deserialize<'de>"))]
pub struct MetadataFields<V> {
    /// `json.dumps(prompt)`: the API-format graph.
    #[serde(default)]
    pub prompt: Option<String>,
    /// `(key, json.dumps(value))` for each `extra_pnginfo` key, in order (normally `workflow` first).
    #[serde(default)]
    pub extra_pnginfo: Vec<(String, String)>,
    /// `json.dumps(metadata)` when a metadata dict was given (it overrides `custom_metadata`).
    #[serde(default)]
    pub generation_metadata: Option<String>,
    /// `(key, str(value))` for each key of the metadata dict, in order (written as `gen_<key>`).
    #[serde(default)]
    pub generation_fields: Vec<(String, String)>,
    /// Free text, used when there is no metadata dict.
    #[serde(default)]
    pub custom_metadata: Option<String>,
    /// The prompt as a value (takes precedence over `prompt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_value: Option<V>,
    /// `(key, value)` per extra_pnginfo key as values, in order (when not empty, replaces `extra_pnginfo`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_pnginfo_values: Vec<(String, V)>,
}

impl<V> Default for MetadataFields<V> {
    fn default() -> Self {
        Self {
            prompt: None,
            extra_pnginfo: Vec::new(),
            generation_metadata: None,
            generation_fields: Vec::new(),
            custom_metadata: None,
            prompt_value: None,
            extra_pnginfo_values: Vec::new(),
        }
    }
}

/// Metadata with its values decoded.
pub type JobMetadata = MetadataFields<rmpv::Value>;

impl JobMetadata {
    /// The same metadata with every value turned into its `json.dumps` text, using `dumps`.
    pub fn to_text(&self, dumps: impl Fn(&rmpv::Value) -> String) -> JobMetadata {
        let mut text = self.clone();
        if let Some(value) = text.prompt_value.take() {
            text.prompt = Some(dumps(&value));
        }
        if !text.extra_pnginfo_values.is_empty() {
            text.extra_pnginfo = text.extra_pnginfo_values.drain(..).map(|(k, v)| (k, dumps(&v))).collect();
        }
        text
    }
}

/// A job: the images of one node execution and how to save them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitJob {
    /// Absolute path of the output root; every file lands at or below it.
    pub output_dir: String,
    /// Sub-directory template below `output_dir`; empty for the root.
    #[serde(default)]
    pub save_path: String,
    /// File name template; `_<affix>` and `_<batch index>` are appended.
    #[serde(default = "default_filename")]
    pub filename: String,
    /// Raw model name (`Illustrious/3DCG/foo_v60.safetensors`) for `%model_name%` and friends.
    #[serde(default)]
    pub model_name: String,
    /// The value of `%index%`.
    #[serde(default)]
    pub filename_index: u32,
    /// When the client ran (ms since the Unix epoch); templates use it. The daemon's clock if absent.
    #[serde(default)]
    pub timestamp_ms: Option<i64>,
    /// The client's local-time offset from UTC in seconds at `timestamp_ms`; the daemon's if absent.
    #[serde(default)]
    pub utc_offset_s: Option<i32>,
    /// PNG compression level 0..9 (ComfyUI's `compress_level`).
    #[serde(default = "default_png_compression")]
    pub png_compression: u8,
    /// JPEG and lossy WebP quality, 1..100 (the node offers 70..100).
    #[serde(default = "default_lossy_quality")]
    pub lossy_quality: u8,
    /// WebP lossless instead of lossy.
    #[serde(default)]
    pub lossless_webp: bool,
    /// The quality gate.
    #[serde(default)]
    pub quality_gate: QualityGate,
    /// The gate's threshold, 0..1.
    #[serde(default = "default_threshold")]
    pub min_quality_threshold: f64,
    /// Embed metadata at all (false: `embed_workflow` off or ComfyUI's `--disable-metadata`).
    #[serde(default = "default_true")]
    pub embed_metadata: bool,
    /// Metadata sent inline.
    #[serde(default)]
    pub metadata: Option<JobMetadata>,
    /// Metadata in shared memory (takes precedence over `metadata`).
    #[serde(default)]
    pub metadata_blob: Option<BlobRef>,
    /// The slots, in order (a "no save" slot is simply not sent).
    pub slots: Vec<Slot>,
    /// A client-chosen id unique to this submission (a UUID, say). Sending the same submission again with the
    /// same id (because the reply was lost) returns the original job instead of saving the images twice.
    #[serde(default)]
    pub submit_id: Option<String>,
    /// A client-chosen batch group name shared by many jobs (and node executions): `batch_status` reports them
    /// together, and a restart keeps the group. 1 to 100 characters from `A-Z a-z 0-9 _ - .`, starting with a
    /// letter or digit, not a Windows device name. Nil: no batch.
    #[serde(default)]
    pub batch: Option<String>,
    /// Also write a small WebP thumbnail next to each saved image, in a `_thumbnails/` sub-folder of the
    /// image's folder (feature `thumbnails`); its path is in the image's status.
    #[serde(default)]
    pub thumbnails: bool,
    /// The thumbnails' largest side in pixels, 16..=1024 (aspect kept, never enlarged).
    #[serde(default = "default_thumbnail_size")]
    pub thumbnail_size: u32,
    /// Also add every image written for the job's batch to `<batch>.zip` in the output root (feature `zip`):
    /// needs `batch`, and every job of a batch must agree (its first job decides).
    #[serde(default)]
    pub zip: bool,
    /// Bits per sample of PNG files: 8, or 16 (from the samples as submitted, never from 8 bits).
    #[serde(default = "default_png_bit_depth")]
    pub png_bit_depth: u8,
    /// Bits per sample of EXR files: 32 (float) or 16 (half).
    #[serde(default = "default_exr_bit_depth")]
    pub exr_bit_depth: u8,
    /// The colour space the submitted samples are in, for EXR.
    #[serde(default)]
    pub exr_input_color_space: ExrColorSpace,
    /// AVIF quality, 1..=100 (ravif's scale; 100 is the best).
    #[serde(default = "default_avif_quality")]
    pub avif_quality: u8,
    /// AVIF encoder speed, 1 (slowest, smallest) ..= 10 (fastest).
    #[serde(default = "default_avif_speed")]
    pub avif_speed: u8,
    /// Bits per sample of AVIF files: 10 (from the samples as submitted) or 8 (from the 8-bit image).
    #[serde(default = "default_avif_bit_depth")]
    pub avif_bit_depth: u8,
    /// Bits per sample of JPEG XL files (always lossless): 8, or 16 (from the samples as submitted).
    #[serde(default = "default_jxl_bit_depth")]
    pub jxl_bit_depth: u8,
}

impl SubmitJob {
    /// A job saving `slots` below `output_dir` with every option at its documented default (the same defaults
    /// a decoder applies to missing fields). Set other options with struct update syntax:
    /// `SubmitJob { png_compression: 9, ..SubmitJob::new(dir, slots) }`.
    pub fn new(output_dir: impl Into<String>, slots: Vec<Slot>) -> Self {
        Self {
            output_dir: output_dir.into(),
            save_path: String::new(),
            filename: default_filename(),
            model_name: String::new(),
            filename_index: 0,
            timestamp_ms: None,
            utc_offset_s: None,
            png_compression: default_png_compression(),
            lossy_quality: default_lossy_quality(),
            lossless_webp: false,
            quality_gate: QualityGate::default(),
            min_quality_threshold: default_threshold(),
            embed_metadata: default_true(),
            metadata: None,
            metadata_blob: None,
            slots,
            submit_id: None,
            batch: None,
            thumbnails: false,
            thumbnail_size: default_thumbnail_size(),
            zip: false,
            png_bit_depth: default_png_bit_depth(),
            exr_bit_depth: default_exr_bit_depth(),
            exr_input_color_space: ExrColorSpace::default(),
            avif_quality: default_avif_quality(),
            avif_speed: default_avif_speed(),
            avif_bit_depth: default_avif_bit_depth(),
            jxl_bit_depth: default_jxl_bit_depth(),
        }
    }
}

fn default_avif_quality() -> u8 {
    80
}

fn default_avif_speed() -> u8 {
    6
}

fn default_avif_bit_depth() -> u8 {
    10
}

fn default_png_bit_depth() -> u8 {
    8
}

fn default_jxl_bit_depth() -> u8 {
    8
}

fn default_exr_bit_depth() -> u8 {
    32
}

fn default_filename() -> String {
    "luna".to_owned()
}

fn default_png_compression() -> u8 {
    4
}

fn default_lossy_quality() -> u8 {
    90
}

fn default_threshold() -> f64 {
    0.3
}

fn default_thumbnail_size() -> u32 {
    256
}

fn default_true() -> bool {
    true
}

/// Which job to report on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusQuery {
    /// The id from the `accepted` reply.
    pub job_id: String,
}

/// Which batch group to report on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchQuery {
    /// The `batch` name the jobs were submitted with.
    pub batch: String,
}

/// A batch group's summary: every job submitted with its name, since the daemon first saw it (restarts
/// included), until it expires like a finished job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStatus {
    /// The batch name.
    pub batch: String,
    /// The jobs in the batch, in acceptance order.
    pub jobs: Vec<String>,
    /// Images submitted in the batch, over all its jobs.
    pub images: u64,
    /// Images waiting for a worker.
    pub queued: u64,
    /// Images being encoded right now.
    pub encoding: u64,
    /// Images waiting for a retry after a save error.
    pub retrying: u64,
    /// Images written.
    pub written: u64,
    /// Images the quality gate sent to `_discarded` (saved there).
    pub discarded: u64,
    /// Images failed (including cancelled and lost ones).
    pub failed: u64,
    /// Bytes of the files written and discarded.
    pub bytes: u64,
    /// When the batch's first job was accepted, in milliseconds since the Unix epoch.
    pub first_accepted_ms: i64,
    /// When the batch's last image became final, in milliseconds since the Unix epoch; nil before any did.
    #[serde(default)]
    pub last_final_ms: Option<i64>,
    /// Every image submitted so far is final (a later job may still join the batch).
    pub finished: bool,
    /// The batch is archived (its jobs asked for `zip`).
    #[serde(default)]
    pub zip: bool,
    /// The archive's absolute path, once it exists.
    #[serde(default)]
    pub archive: Option<String>,
    /// Images in the archive.
    #[serde(default)]
    pub archived: u64,
    /// Written images not in the archive yet.
    #[serde(default)]
    pub archive_pending: u64,
    /// Why the last archive update failed (it is retried), while it does.
    #[serde(default)]
    pub archive_error: Option<String>,
}

/// A daemon reply. Exactly one reply answers each request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The handshake succeeded.
    Welcome(Welcome),
    /// The job was accepted: from now on the daemon owns its segments.
    Accepted(Accepted),
    /// A job's progress.
    Status(JobStatus),
    /// Daemon-wide counters.
    Stats(DaemonStats),
    /// The daemon is shutting down after finishing its queue.
    Stopping(Empty),
    /// The job was cancelled: its unsaved images are now `failed` with code `cancelled`.
    Cancelled(CancelReply),
    /// A batch group's summary (only in answer to `batch_status`).
    BatchStatus(Box<BatchStatus>),
    /// The request failed; nothing was accepted.
    Error(ErrorReply),
}

/// The successful handshake reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version both sides now speak.
    pub version: u32,
    /// The daemon's crate version, for humans.
    pub daemon_version: String,
    /// Absolute path of the directory where clients create segments.
    pub spool_dir: String,
    /// The frame size cap in bytes.
    pub max_frame_len: u32,
    /// Size of the segment header in bytes; pixel data starts at or after it.
    pub segment_header_len: u64,
    /// Random id of this daemon process: a client seeing it change knows the daemon restarted.
    #[serde(default)]
    pub instance_id: String,
    /// Optional capabilities this daemon implements (e.g. `webp`, `cancel`, `submit_id`).
    #[serde(default)]
    pub features: Vec<String>,
}

/// The reply to an accepted submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The job's id, for `status`.
    pub job_id: String,
    /// How many images were queued.
    pub images: u32,
}

/// The reply to a cancel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelReply {
    /// The job id.
    pub job_id: String,
    /// How many images were cancelled (queued or retrying ones; an image being encoded still finishes).
    pub images_cancelled: u32,
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// The stable numeric code.
    pub code: ErrorCode,
    /// The code's stable name (redundant with `code`, for humans and logs).
    pub name: String,
    /// What went wrong, in words, naming the offending field or value.
    pub message: String,
    /// For `version_mismatch`: the versions the daemon speaks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supported_versions: Vec<u32>,
}

impl ErrorReply {
    /// An error reply with the name filled in from the code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, name: code.name().to_owned(), message: message.into(), supported_versions: Vec::new() }
    }
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} [{}]", self.message, self.name)
    }
}

/// Where one image is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImageState {
    /// Waiting for a worker.
    Queued,
    /// A worker is converting, encoding and writing it.
    Encoding,
    /// Saving failed with an error that may go away (disk full, permission denied, directory removed); `error`
    /// holds the last one and the save is retried with backoff until it succeeds or the job is cancelled.
    Retrying,
    /// The file is durably on disk at `path`.
    Written,
    /// The image failed the quality gate; it was saved under `_discarded` at `path`, with its `scores`.
    Discarded,
    /// It could not be saved; `error` says why.
    Failed,
}

impl ImageState {
    /// Whether the image will not change state again.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Written | Self::Discarded | Self::Failed)
    }
}

/// Quality-gate scores, each in 0..1 (absent when that check did not run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GateScores {
    /// The variance score.
    #[serde(default)]
    pub variance: Option<f64>,
    /// The edge-density score.
    #[serde(default)]
    pub edge_density: Option<f64>,
}

/// One image's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageStatus {
    /// Position among all the job's images (slots in order, then batch order).
    pub index: u32,
    /// Which slot (0-based position in `slots`).
    pub slot: u32,
    /// Position in the slot's batch.
    pub batch_index: u32,
    /// Current state.
    pub state: ImageState,
    /// Final absolute path, once written.
    #[serde(default)]
    pub path: Option<String>,
    /// File size in bytes, once written.
    #[serde(default)]
    pub bytes: Option<u64>,
    /// Why it failed, when failed.
    #[serde(default)]
    pub error: Option<ErrorReply>,
    /// Gate scores, when a gate ran.
    #[serde(default)]
    pub scores: Option<GateScores>,
    /// Things the user should know about a saved file (e.g. metadata dropped to fit JPEG's 64 KiB APP1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The final absolute path of the image's thumbnail, when the job asked for thumbnails and it was written.
    #[serde(default)]
    pub thumbnail: Option<String>,
    /// The object's HTTP(S) URL at the S3 endpoint, once written to an `s3://` output root (then `path` is
    /// `s3://bucket/key`); absent for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// A job's status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobStatus {
    /// The job id.
    pub job_id: String,
    /// True once every image is written or failed.
    pub finished: bool,
    /// True once the daemon has handed every segment of the job back to the client.
    pub segments_released: bool,
    /// Per image, in submission order.
    pub images: Vec<ImageStatus>,
}

/// Per-client counters in [`DaemonStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientStats {
    /// The client name from its handshake.
    pub client: String,
    /// The client's process id from its handshake, if it sent one.
    pub pid: Option<u32>,
    /// Jobs accepted from this client.
    pub jobs: u64,
    /// Its images waiting or being encoded.
    pub images_pending: u64,
    /// Its images written.
    pub images_written: u64,
    /// Its images failed.
    pub images_failed: u64,
}

/// Daemon-wide counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStats {
    /// The daemon's crate version.
    pub daemon_version: String,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Images waiting for a worker.
    pub queue_depth: u64,
    /// Pixel bytes of images not yet finished (what the queue holds in shared memory).
    pub bytes_held: u64,
    /// Worker threads alive.
    pub workers_alive: u32,
    /// Worker threads encoding right now.
    pub workers_busy: u32,
    /// Jobs accepted since start.
    pub jobs_accepted: u64,
    /// Jobs whose images were all written.
    pub jobs_done: u64,
    /// Jobs with at least one failed image.
    pub jobs_failed: u64,
    /// Images written since start.
    pub images_written: u64,
    /// Images failed since start.
    pub images_failed: u64,
    /// Per client (by client name and pid).
    pub clients: Vec<ClientStats>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `SubmitJob::new` and a decoder filling in missing fields must agree on every default.
    #[test]
    fn the_constructor_and_the_decoder_share_defaults() {
        #[derive(Serialize)]
        struct Minimal {
            output_dir: &'static str,
            slots: Vec<Slot>,
        }
        let bytes = crate::protocol::encode_message(&Minimal { output_dir: "/out", slots: Vec::new() }).unwrap();
        let decoded: SubmitJob = crate::protocol::decode_message(&bytes).unwrap();
        assert_eq!(decoded, SubmitJob::new("/out", Vec::new()));
    }
}
