//! The public client API: connect (with the handshake), submit images through warm shared-memory segments,
//! and ask for status and stats. Used by the CLI and `examples/`; any program can use it.
//!
//! ```no_run
//! use luna_daemon::client::{Client, ImageRef, JobOptions, Pixels};
//! let mut client = Client::connect(&luna_daemon::paths::default_socket(), "my-tool")?;
//! let pixels = vec![0.5f32; 64 * 64 * 3];
//! let image = ImageRef { width: 64, height: 64, channels: 3, pixels: Pixels::F32(&pixels) };
//! let job = JobOptions::new("/tmp/out");
//! let accepted = client.submit(&job, &[image])?;
//! let status = client.wait(&accepted.job_id, |_| {})?;
//! # Ok::<(), luna_daemon::client::ClientError>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use interprocess::local_socket::{Stream, prelude::*};

use crate::protocol::{
    self, Accepted, BatchQuery, BatchStatus, BlobRef, DaemonStats, Empty, ErrorCode, ErrorReply, ExrColorSpace,
    FrameError, Hello, ImageDescriptor, ImageFormat, JobMetadata, JobStatus, PROTOCOL_NAME, PROTOCOL_VERSION,
    QualityGate, Request, Response, SampleType, Slot, StatusQuery, SubmitJob, Welcome,
};
use crate::shm::{SegmentCreateError, SegmentPool};
use crate::transport::connect_name;

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon answers on the socket.
    #[error("cannot reach luna-daemon at {socket}: {source} (is it running? start it with `luna-daemon serve`)")]
    Connect { socket: PathBuf, source: std::io::Error },
    /// The two sides speak different protocol versions.
    #[error("protocol version mismatch: {0}")]
    VersionMismatch(String),
    /// The daemon refused the request.
    #[error("daemon error: {0}")]
    Daemon(ErrorReply),
    /// The daemon answered with something that does not fit the request.
    #[error("unexpected reply from the daemon: {0}")]
    Unexpected(String),
    /// Reading or writing a frame failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A segment could not be created.
    #[error(transparent)]
    Segment(#[from] SegmentCreateError),
    /// An image does not match its declared size.
    #[error("image {index}: {message}")]
    BadImage { index: usize, message: String },
    /// The socket, the process behind it or the spool directory it announced fails the trust checks
    /// (docs/PROTOCOL.md §3.1): another user may be squatting the socket. Nothing was sent.
    #[error("refusing to use the daemon at {socket}: {reason}")]
    Untrusted { socket: PathBuf, reason: String },
}

impl ClientError {
    /// The daemon's error code, if the daemon refused the request.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Daemon(reply) => Some(reply.code),
            _ => None,
        }
    }
}

/// Pixels in memory, tightly packed rows, channels interleaved.
#[derive(Debug, Clone, Copy)]
pub enum Pixels<'a> {
    /// 8-bit samples.
    U8(&'a [u8]),
    /// 16-bit samples.
    U16(&'a [u16]),
    /// Float samples, nominally 0..1.
    F32(&'a [f32]),
}

impl Pixels<'_> {
    fn dtype(&self) -> SampleType {
        match self {
            Self::U8(_) => SampleType::U8,
            Self::U16(_) => SampleType::U16,
            Self::F32(_) => SampleType::F32,
        }
    }

    fn samples(&self) -> usize {
        match self {
            Self::U8(p) => p.len(),
            Self::U16(p) => p.len(),
            Self::F32(p) => p.len(),
        }
    }

    /// Copies the samples little-endian into `out` (exactly `samples * size` bytes).
    fn write_le(&self, out: &mut [u8]) {
        match self {
            Self::U8(p) => out.copy_from_slice(p),
            Self::U16(p) => {
                out.chunks_exact_mut(2).zip(p.iter()).for_each(|(o, v)| o.copy_from_slice(&v.to_le_bytes()))
            }
            Self::F32(p) => {
                out.chunks_exact_mut(4).zip(p.iter()).for_each(|(o, v)| o.copy_from_slice(&v.to_le_bytes()))
            }
        }
    }
}

/// One image to submit.
#[derive(Debug, Clone, Copy)]
pub struct ImageRef<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1, 3 or 4.
    pub channels: u8,
    /// `width * height * channels` samples.
    pub pixels: Pixels<'a>,
}

/// Where and how to save a job: every per-job option of the protocol, for one slot of images.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOptions {
    /// Absolute output root.
    pub output_dir: String,
    /// Sub-directory template.
    pub save_path: String,
    /// File name template.
    pub filename: String,
    /// The slot's affix (`_<affix>` in names, and the sub-folder when `subdir`); empty for none.
    pub affix: String,
    /// Save under an `<affix>/` sub-folder.
    pub subdir: bool,
    /// Output format.
    pub format: ImageFormat,
    /// Raw model name for templates and metadata.
    pub model_name: String,
    /// The value of `%index%`.
    pub filename_index: u32,
    /// PNG level 0..9.
    pub png_compression: u8,
    /// JPEG / lossy WebP quality.
    pub lossy_quality: u8,
    /// Lossless WebP.
    pub lossless_webp: bool,
    /// Quality gate.
    pub quality_gate: QualityGate,
    /// Gate threshold.
    pub min_quality_threshold: f64,
    /// Embed metadata at all.
    pub embed_metadata: bool,
    /// What to embed.
    pub metadata: Option<JobMetadata>,
    /// Send a CRC-32 of the pixels so the daemon verifies them.
    pub checksum: bool,
    /// The batch group the job joins (see [`Client::batch_status`]); `None` for none.
    pub batch: Option<String>,
    /// Also write a WebP thumbnail of each image (into `_thumbnails/` beside it; its path is in the status).
    pub thumbnails: bool,
    /// The thumbnails' largest side, 16..=1024 pixels.
    pub thumbnail_size: u32,
    /// Add every written image of the batch to `<batch>.zip` in the output root (needs `batch`; every job of
    /// the batch must agree).
    pub zip: bool,
    /// PNG bits per sample: 8 or 16.
    pub png_bit_depth: u8,
    /// EXR bits per sample: 32 (float) or 16 (half).
    pub exr_bit_depth: u8,
    /// The colour space of the submitted samples, for EXR.
    pub exr_input_color_space: ExrColorSpace,
    /// AVIF quality, 1..=100.
    pub avif_quality: u8,
    /// AVIF encoder speed, 1..=10.
    pub avif_speed: u8,
    /// AVIF bits per sample: 10 or 8.
    pub avif_bit_depth: u8,
    /// JPEG XL bits per sample (always lossless): 8 or 16.
    pub jxl_bit_depth: u8,
}

impl JobOptions {
    /// Defaults: no sub-directory, stem `luna`, no affix, PNG level 4, quality 90, no gate, checksums on. A
    /// relative `output_dir` is made absolute against the current directory; an `s3://bucket/prefix` one is
    /// kept as it is.
    pub fn new(output_dir: impl AsRef<Path>) -> Self {
        let dir = output_dir.as_ref();
        let output_dir = match dir.to_str() {
            // An object-storage root (`s3://bucket/prefix`) is sent as it is.
            Some(url) if url.starts_with(crate::s3::S3_SCHEME) => url.to_owned(),
            _ => std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf()).to_string_lossy().into_owned(),
        };
        // The protocol's defaults for the options added with AVIF (one place: protocol/messages.rs).
        let defaults = SubmitJob::new(String::new(), Vec::new());
        Self {
            output_dir,
            save_path: String::new(),
            filename: "luna".to_owned(),
            affix: String::new(),
            subdir: true,
            format: ImageFormat::Png,
            model_name: String::new(),
            filename_index: 0,
            png_compression: 4,
            lossy_quality: 90,
            lossless_webp: false,
            quality_gate: QualityGate::Disabled,
            min_quality_threshold: 0.3,
            embed_metadata: true,
            metadata: None,
            checksum: true,
            batch: None,
            thumbnails: false,
            thumbnail_size: 256,
            zip: false,
            png_bit_depth: 8,
            exr_bit_depth: 32,
            exr_input_color_space: ExrColorSpace::Srgb,
            avif_quality: defaults.avif_quality,
            avif_speed: defaults.avif_speed,
            avif_bit_depth: defaults.avif_bit_depth,
            jxl_bit_depth: 8,
        }
    }
}

/// Metadata larger than this travels through shared memory instead of the frame: the daemon decodes inline
/// metadata completely before it replies, a blob only skims it (the worker decodes it after the reply). The same
/// threshold as the Python client's (`constants.json`, checked by `tests/it/constants.rs`).
pub const INLINE_METADATA_LIMIT: usize = 16 * 1024;

/// Images inside a segment start at multiples of this many bytes.
const IMAGE_ALIGN: u64 = 64;

/// A connection to the daemon, with its own pool of warm segments.
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    welcome: Welcome,
    segments: SegmentPool,
    socket: PathBuf,
    name: String,
}

impl Client {
    /// Connects and performs the handshake. `client_name` shows up in the daemon's logs and stats.
    pub fn connect(socket: &Path, client_name: &str) -> Result<Self, ClientError> {
        let (stream, welcome) = handshake(socket, client_name)?;
        let segments = SegmentPool::new(&welcome.spool_dir, &segment_prefix(client_name));
        Ok(Self { stream, welcome, segments, socket: socket.to_path_buf(), name: client_name.to_owned() })
    }

    /// Replaces a broken connection (the daemon restarted) with a fresh one; warm segments are kept when the
    /// new daemon uses the same spool directory.
    fn reconnect(&mut self) -> Result<(), ClientError> {
        let (stream, welcome) = handshake(&self.socket, &self.name)?;
        if welcome.spool_dir != self.welcome.spool_dir {
            self.segments = SegmentPool::new(&welcome.spool_dir, &segment_prefix(&self.name));
        }
        self.stream = stream;
        self.welcome = welcome;
        Ok(())
    }

    /// What the daemon said in the handshake.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Sends one request and reads its reply. Error replies become [`ClientError::Daemon`] (or
    /// [`ClientError::VersionMismatch`]). A request that is safe to repeat (everything but `submit`) is
    /// retried once over a new connection if the old one broke (for example because the daemon restarted).
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        match exchange(&mut self.stream, request) {
            Err(ClientError::Frame(_)) if !matches!(request, Request::Submit(_)) => {
                self.reconnect()?;
                exchange(&mut self.stream, request)
            }
            other => other,
        }
    }
}

/// Connects to `socket` and performs the handshake.
fn handshake(socket: &Path, client_name: &str) -> Result<(Stream, Welcome), ClientError> {
    let connect_err = |source| ClientError::Connect { socket: socket.into(), source };
    let untrusted = |reason| ClientError::Untrusted { socket: socket.into(), reason };
    trust::check_socket(socket).map_err(untrusted)?;
    let name = connect_name(socket).map_err(connect_err)?;
    let mut stream = Stream::connect(name).map_err(connect_err)?;
    trust::check_server(&stream).map_err(untrusted)?;
    let hello = Hello {
        protocol: PROTOCOL_NAME.to_owned(),
        version: PROTOCOL_VERSION,
        client: client_name.to_owned(),
        pid: Some(std::process::id()),
    };
    match exchange(&mut stream, &Request::Hello(hello))? {
        Response::Welcome(w) if w.version == PROTOCOL_VERSION => {
            trust::check_spool(Path::new(&w.spool_dir)).map_err(untrusted)?;
            Ok((stream, w))
        }
        Response::Welcome(w) => Err(ClientError::VersionMismatch(format!(
            "daemon answered with protocol version {}, this client speaks {PROTOCOL_VERSION}",
            w.version
        ))),
        other => Err(unexpected(other)),
    }
}

/// One request and its reply on `stream`.
fn exchange(stream: &mut Stream, request: &Request) -> Result<Response, ClientError> {
    let body = protocol::encode_message(request)?;
    let sent = protocol::write_frame(stream, &body);
    // If the daemon hung up on us, it may have said why first: prefer its reply to the write error.
    let reply = match (sent, protocol::read_frame(stream)) {
        (_, Ok(reply)) => reply,
        (Err(e), Err(_)) | (Ok(()), Err(e)) => return Err(e.into()),
    };
    match protocol::decode_message::<Response>(&reply)? {
        Response::Error(e) if e.code == ErrorCode::VersionMismatch => Err(ClientError::VersionMismatch(e.message)),
        Response::Error(e) => Err(ClientError::Daemon(e)),
        other => Ok(other),
    }
}

impl Client {
    /// Copies the images (and large metadata) into one warm segment and submits them as one job. Returns
    /// once the daemon has accepted the job (and owns the segment); the save happens in the background.
    pub fn submit(&mut self, options: &JobOptions, images: &[ImageRef<'_>]) -> Result<Accepted, ClientError> {
        let mut offsets = Vec::with_capacity(images.len());
        let mut total = 0u64;
        for (index, image) in images.iter().enumerate() {
            let expected = image.width as usize * image.height as usize * usize::from(image.channels);
            if image.pixels.samples() != expected {
                return Err(ClientError::BadImage {
                    index,
                    message: format!(
                        "{} samples, but {}x{}x{} needs {expected}",
                        image.pixels.samples(),
                        image.width,
                        image.height,
                        image.channels
                    ),
                });
            }
            offsets.push(total);
            total += (expected as u64 * image.pixels.dtype().size()).next_multiple_of(IMAGE_ALIGN);
        }
        let blob = match &options.metadata {
            Some(m) if options.embed_metadata => {
                let bytes = protocol::encode_message(m)?;
                (bytes.len() > INLINE_METADATA_LIMIT).then_some(bytes)
            }
            _ => None,
        };
        let blob_offset = total;
        total += blob.as_ref().map_or(0, |b| b.len() as u64);
        let header = self.welcome.segment_header_len;
        let segment = self.segments.acquire(total)?;
        let name = segment.name().to_owned();
        let data = segment.data_mut().expect("the pool hands out client-owned segments");
        let mut descriptors = Vec::with_capacity(images.len());
        for (image, &start) in images.iter().zip(&offsets) {
            let dtype = image.pixels.dtype();
            let length = image.pixels.samples() as u64 * dtype.size();
            let dst = &mut data[start as usize..(start + length) as usize];
            image.pixels.write_le(dst);
            descriptors.push(ImageDescriptor {
                segment: name.clone(),
                offset: header + start,
                length,
                width: image.width,
                height: image.height,
                channels: image.channels,
                dtype,
                row_stride: u64::from(image.width) * u64::from(image.channels) * dtype.size(),
                crc32: options.checksum.then(|| crc32fast::hash(dst)),
            });
        }
        let metadata_blob = blob.map(|bytes| {
            let dst = &mut data[blob_offset as usize..blob_offset as usize + bytes.len()];
            dst.copy_from_slice(&bytes);
            BlobRef {
                segment: name.clone(),
                offset: header + blob_offset,
                length: bytes.len() as u64,
                crc32: Some(crc32fast::hash(&bytes)),
            }
        });
        let (timestamp_ms, utc_offset_s) = now_local();
        let slots = vec![Slot {
            affix: options.affix.clone(),
            format: options.format,
            subdir: options.subdir,
            images: descriptors,
        }];
        let job = SubmitJob {
            save_path: options.save_path.clone(),
            filename: options.filename.clone(),
            model_name: options.model_name.clone(),
            filename_index: options.filename_index,
            timestamp_ms: Some(timestamp_ms),
            utc_offset_s: Some(utc_offset_s),
            png_compression: options.png_compression,
            lossy_quality: options.lossy_quality,
            lossless_webp: options.lossless_webp,
            quality_gate: options.quality_gate,
            min_quality_threshold: options.min_quality_threshold,
            embed_metadata: options.embed_metadata,
            metadata: if metadata_blob.is_some() { None } else { options.metadata.clone() },
            metadata_blob,
            submit_id: Some(uuid::Uuid::new_v4().simple().to_string()),
            batch: options.batch.clone(),
            thumbnails: options.thumbnails,
            thumbnail_size: options.thumbnail_size,
            zip: options.zip,
            png_bit_depth: options.png_bit_depth,
            exr_bit_depth: options.exr_bit_depth,
            exr_input_color_space: options.exr_input_color_space,
            avif_quality: options.avif_quality,
            avif_speed: options.avif_speed,
            avif_bit_depth: options.avif_bit_depth,
            jxl_bit_depth: options.jxl_bit_depth,
            ..SubmitJob::new(options.output_dir.clone(), slots)
        };
        let request = Request::Submit(Box::new(job));
        // If the connection broke, send the same submission again on a new one: its submit_id makes the daemon
        // answer with the original job if it had already accepted it, so nothing is saved twice.
        let reply = match exchange(&mut self.stream, &request) {
            Err(ClientError::Frame(_)) => {
                self.reconnect()?;
                exchange(&mut self.stream, &request)?
            }
            other => other?,
        };
        match reply {
            Response::Accepted(a) => Ok(a),
            other => Err(unexpected(other)),
        }
    }

    /// A job's per-image status.
    pub fn status(&mut self, job_id: &str) -> Result<JobStatus, ClientError> {
        match self.request(&Request::Status(StatusQuery { job_id: job_id.to_owned() }))? {
            Response::Status(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Polls a job until every image is final and its segments are released, calling `progress` on each poll.
    pub fn wait(&mut self, job_id: &str, mut progress: impl FnMut(&JobStatus)) -> Result<JobStatus, ClientError> {
        let mut delay = Duration::from_millis(2);
        loop {
            let status = self.status(job_id)?;
            progress(&status);
            if status.finished && status.segments_released {
                return Ok(status);
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// A batch group's summary: every job submitted with `batch` as its batch name.
    pub fn batch_status(&mut self, batch: &str) -> Result<BatchStatus, ClientError> {
        match self.request(&Request::BatchStatus(BatchQuery { batch: batch.to_owned() }))? {
            Response::BatchStatus(s) => Ok(*s),
            other => Err(unexpected(other)),
        }
    }

    /// Polls a batch group until every image submitted to it so far is final (and, for an archived batch, in
    /// its archive), calling `progress` on each poll;
    /// gives up after `timeout` (returning the last summary, not finished). A job that joins the batch while
    /// this waits is waited for too.
    pub fn wait_batch(
        &mut self,
        batch: &str,
        timeout: Option<Duration>,
        mut progress: impl FnMut(&BatchStatus),
    ) -> Result<BatchStatus, ClientError> {
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        let mut delay = Duration::from_millis(2);
        loop {
            let status = self.batch_status(batch)?;
            progress(&status);
            if (status.finished && status.archive_pending == 0)
                || deadline.is_some_and(|d| std::time::Instant::now() >= d)
            {
                return Ok(status);
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(100));
        }
    }

    /// Daemon-wide counters.
    pub fn stats(&mut self) -> Result<DaemonStats, ClientError> {
        match self.request(&Request::Stats(Empty {}))? {
            Response::Stats(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Cancels a job's images that are not saved yet; returns how many were cancelled.
    pub fn cancel(&mut self, job_id: &str) -> Result<u32, ClientError> {
        match self.request(&Request::Cancel(StatusQuery { job_id: job_id.to_owned() }))? {
            Response::Cancelled(c) => Ok(c.images_cancelled),
            other => Err(unexpected(other)),
        }
    }

    /// Asks the daemon to finish its queue and exit.
    pub fn stop(&mut self) -> Result<(), ClientError> {
        match self.request(&Request::Stop(Empty {}))? {
            Response::Stopping(_) => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(reply: Response) -> ClientError {
    ClientError::Unexpected(format!("{reply:?}").chars().take(200).collect())
}

fn segment_prefix(client_name: &str) -> String {
    let cleaned: String =
        client_name.chars().filter(|c| c.is_ascii_alphanumeric()).take(16).collect::<String>().to_ascii_lowercase();
    if cleaned.is_empty() { "luna".to_owned() } else { cleaned }
}

/// Now, in ms since the epoch, and this process's local UTC offset in seconds (what `%time%` templates use).
fn now_local() -> (i64, i32) {
    let now = chrono::Local::now();
    (now.timestamp_millis(), now.offset().local_minus_utc())
}

/// The trust checks a client makes before it sends anything that matters (docs/PROTOCOL.md §3.1, "What a
/// client checks"; the node's `trust.py` applies the same rules): the socket's directory belongs to the
/// client's user and is private, the process behind the socket runs as that user, and the announced spool
/// directory is private and ours.
mod trust {
    use std::path::Path;

    #[cfg(unix)]
    fn me() -> u32 {
        crate::paths::user_id()
    }

    /// A real directory owned by `uid` with no group or other permission bits, else why not.
    #[cfg(unix)]
    pub(super) fn private_dir(what: &str, dir: &Path, uid: u32) -> Result<(), String> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(dir).map_err(|e| format!("{what} {}: {e}", dir.display()))?;
        if meta.file_type().is_symlink() || !meta.is_dir() {
            return Err(format!("{what} {} is not a directory (a symlink or another file)", dir.display()));
        }
        if meta.uid() != uid {
            return Err(format!("{what} {} belongs to user id {}, not to you ({uid})", dir.display(), meta.uid()));
        }
        if meta.mode() & 0o077 != 0 {
            return Err(format!(
                "{what} {} is open to other users (mode {:04o}; the daemon makes it 0700)",
                dir.display(),
                meta.mode() & 0o7777
            ));
        }
        Ok(())
    }

    /// The socket's directory is private and ours (then so is the socket: nobody else can create it there).
    pub(super) fn check_socket(socket: &Path) -> Result<(), String> {
        #[cfg(unix)]
        {
            let dir = socket.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            // No socket, nothing to trust yet: connecting then fails with "is it running?".
            if std::fs::symlink_metadata(socket).is_ok() {
                private_dir("the socket directory", dir, me())?;
            }
            Ok(())
        }
        #[cfg(not(unix))]
        {
            // Windows: the pipe's security descriptor admits only its owner.
            let _ = socket;
            Ok(())
        }
    }

    /// The process that accepted the connection runs as our user (kernel peer credentials).
    pub(super) fn check_server(stream: &interprocess::local_socket::Stream) -> Result<(), String> {
        #[cfg(unix)]
        {
            use interprocess::local_socket::traits::StreamCommon;
            let creds = stream.peer_creds().map_err(|e| format!("could not read the daemon's credentials: {e}"))?;
            peer_is(creds.euid(), me())
        }
        #[cfg(not(unix))]
        {
            let _ = stream;
            Ok(())
        }
    }

    #[cfg(unix)]
    pub(super) fn peer_is(peer: Option<u32>, me: u32) -> Result<(), String> {
        match peer {
            Some(uid) if uid == me => Ok(()),
            Some(uid) => Err(format!("the process behind the socket runs as user id {uid}, not as you ({me})")),
            None => Err("the platform did not report the daemon's user id".to_owned()),
        }
    }

    /// The announced spool directory is absolute, private and ours (we are about to put pixels in it).
    pub(super) fn check_spool(spool: &Path) -> Result<(), String> {
        if !spool.is_absolute() {
            return Err(format!("the announced spool directory {:?} is not an absolute path", spool.display()));
        }
        #[cfg(unix)]
        {
            private_dir("the announced spool directory", spool, me())
        }
        #[cfg(not(unix))]
        {
            Ok(())
        }
    }

    #[cfg(all(test, unix))]
    mod tests {
        use super::*;
        use std::os::unix::fs::PermissionsExt;

        #[test]
        fn a_directory_open_to_others_or_a_symlink_is_refused_with_the_reason() {
            let tmp = tempfile::tempdir().unwrap();
            let dir = tmp.path().join("run");
            std::fs::create_dir(&dir).unwrap();
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
            assert_eq!(private_dir("x", &dir, me()), Ok(()));
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            let err = private_dir("the socket directory", &dir, me()).unwrap_err();
            assert!(err.contains("is open to other users (mode 0755"), "{err}");
            let err = private_dir("x", &dir, me() + 1).unwrap_err();
            assert!(err.contains(&format!("belongs to user id {}, not to you ({})", me(), me() + 1)), "{err}");
            std::os::unix::fs::symlink(&dir, tmp.path().join("link")).unwrap();
            assert!(private_dir("x", &tmp.path().join("link"), me()).unwrap_err().contains("not a directory"));
        }

        #[test]
        fn a_daemon_of_another_user_is_refused() {
            assert_eq!(peer_is(Some(1000), 1000), Ok(()));
            assert!(peer_is(Some(0), 1000).unwrap_err().contains("runs as user id 0, not as you (1000)"));
            assert!(peer_is(None, 1000).is_err());
        }
    }
}
