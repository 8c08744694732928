//! The client's side: segments created once, mapped once and reused warm for many jobs. Creating a fresh
//! segment per image would cost 10-15 ms of page faults per 12 MB; a reused one costs only the copy.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use memmap2::MmapMut;

use super::header::{self, FLAGS_OFFSET, STATE_OFFSET};
use super::{HEADER_LEN, NameError, SegmentState, flags, validate_name};

/// Why a segment could not be created or mapped.
#[derive(Debug, thiserror::Error)]
pub enum SegmentCreateError {
    /// The name is not a plain name.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The capacity does not fit this platform's address space.
    #[error("segment capacity of {0} bytes is too large")]
    TooLarge(u64),
    /// Creating, sizing or mapping the file failed.
    #[error("could not create segment {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A segment created and mapped by this process.
#[derive(Debug)]
pub struct SegmentWriter {
    name: String,
    path: PathBuf,
    map: MmapMut,
    capacity: usize,
    _file: File,
}

impl SegmentWriter {
    /// Creates segment `name` in `spool_dir` with room for `capacity` bytes of pixels after the header.
    /// Fails if the name is taken.
    pub fn create(spool_dir: &Path, name: &str, capacity: u64) -> Result<Self, SegmentCreateError> {
        validate_name(name)?;
        let path = spool_dir.join(name);
        let total = capacity.checked_add(HEADER_LEN).ok_or(SegmentCreateError::TooLarge(capacity))?;
        let capacity = usize::try_from(capacity).map_err(|_| SegmentCreateError::TooLarge(capacity))?;
        let io_err = |source| SegmentCreateError::Io { path: path.clone(), source };
        let file = create_owner_only(&path).map_err(io_err)?;
        file.set_len(total).map_err(io_err)?;
        reserve(&file, total).map_err(|source| {
            let _ = std::fs::remove_file(&path);
            SegmentCreateError::Io { path: path.clone(), source }
        })?;
        // SAFETY: the file was just created exclusively by us in an owner-only directory and sized above. Other
        // processes of the same user (the daemon) only read the pixel region and write single header bytes,
        // which this type reads and writes through atomics and raw pointers, never through references that
        // assume exclusivity over the header.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io_err)?;
        map[..HEADER_LEN as usize].copy_from_slice(&header::new_header(std::process::id()));
        Ok(Self { name: name.to_owned(), path, map, capacity, _file: file })
    }

    /// The segment's name, for descriptors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's file path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of pixel room after the header.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn header_byte(&self, offset: usize) -> &AtomicU8 {
        debug_assert!(offset < HEADER_LEN as usize);
        // SAFETY: `offset` is inside the mapped header, which lives as long as `self`; AtomicU8 has the size and
        // alignment of u8, and every access to header bytes goes through atomics, so a concurrent write by the
        // daemon (a single-byte pwrite to the same page) is never a data race on a non-atomic reference.
        unsafe { AtomicU8::from_ptr(self.map.as_ptr().add(offset).cast_mut()) }
    }

    /// Who owns the segment now.
    pub fn state(&self) -> SegmentState {
        SegmentState::from_byte(self.header_byte(STATE_OFFSET).load(Ordering::Acquire))
    }

    /// The pixel region (everything after the header), writable only while the client owns the segment.
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        if self.state() != SegmentState::Client {
            return None;
        }
        let len = self.capacity;
        // SAFETY: the region [HEADER_LEN, HEADER_LEN + capacity) is inside the mapping. While the state byte says
        // the client owns the segment the daemon neither reads nor writes it, and `&mut self` makes this the
        // only reference in this process.
        Some(unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr().add(HEADER_LEN as usize), len) })
    }

    /// Marks the segment detached (the daemon unlinks it on release) and unlinks it now if the daemon does
    /// not own it. Called on drop.
    fn detach(&self) {
        self.header_byte(FLAGS_OFFSET).fetch_or(flags::DETACHED, Ordering::SeqCst);
        if self.state() == SegmentState::Client {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Allocates the segment's pages now, so a full tmpfs is a clean error here rather than a SIGBUS when the
/// pixels are copied in.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn reserve(file: &File, len: u64) -> io::Result<()> {
    let len = i64::try_from(len).map_err(io::Error::other)?;
    nix::fcntl::posix_fallocate(file, 0, len).map_err(io::Error::from)
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn reserve(_file: &File, _len: u64) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
fn create_owner_only(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn create_owner_only(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).create_new(true).open(path)
}

/// A client's set of warm segments: hands out one the daemon has released, or creates a new one.
#[derive(Debug)]
pub struct SegmentPool {
    spool_dir: PathBuf,
    prefix: String,
    next_id: u64,
    segments: Vec<SegmentWriter>,
}

/// New segments are rounded up to this many bytes so that slightly different image sizes share segments.
const SEGMENT_GRANULE: u64 = 1 << 20;

impl SegmentPool {
    /// A pool creating segments named `<prefix>-<pid>-<n>` in `spool_dir`.
    pub fn new(spool_dir: impl Into<PathBuf>, prefix: &str) -> Self {
        Self { spool_dir: spool_dir.into(), prefix: prefix.to_owned(), next_id: 0, segments: Vec::new() }
    }

    /// A segment the client owns with at least `len` bytes of pixel room: the smallest released one that
    /// fits, or a new one.
    pub fn acquire(&mut self, len: u64) -> Result<&mut SegmentWriter, SegmentCreateError> {
        let best = self
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.capacity() as u64 >= len && s.state() == SegmentState::Client)
            .min_by_key(|(_, s)| s.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            return Ok(&mut self.segments[i]);
        }
        let capacity = len.max(1).div_ceil(SEGMENT_GRANULE).saturating_mul(SEGMENT_GRANULE);
        // Names already taken (another pool in this process, or a leftover of a dead process that had our pid)
        // are skipped; creation is exclusive, so two pools never share a segment.
        loop {
            let name = format!("{}-{}-{}", self.prefix, std::process::id(), self.next_id);
            self.next_id += 1;
            match SegmentWriter::create(&self.spool_dir, &name, capacity) {
                Ok(segment) => {
                    self.segments.push(segment);
                    return Ok(self.segments.last_mut().expect("just pushed"));
                }
                Err(SegmentCreateError::Io { source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// How many segments the pool holds (released or not).
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Whether the pool holds no segment.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::Segment;
    use super::*;

    #[test]
    fn daemon_ownership_blocks_writes_and_release_makes_the_segment_warm_again() {
        let dir = tempfile::tempdir().unwrap();
        let mut pool = SegmentPool::new(dir.path(), "t");
        let name = {
            let seg = pool.acquire(100).unwrap();
            seg.data_mut().unwrap()[..3].copy_from_slice(&[1, 2, 3]);
            seg.name().to_owned()
        };
        let daemon_view = Segment::open(dir.path(), &name).unwrap();
        let mut px = [0u8; 3];
        daemon_view.read_at(HEADER_LEN, &mut px).unwrap();
        assert_eq!(px, [1, 2, 3]);
        daemon_view.take_ownership().unwrap();
        assert_eq!(pool.segments[0].state(), SegmentState::Daemon);
        assert!(pool.segments[0].data_mut().is_none());
        // While the daemon owns it, the pool makes a second segment instead of reusing the first.
        let second = pool.acquire(100).unwrap().name().to_owned();
        assert_ne!(second, name);
        assert!(!daemon_view.release().unwrap(), "creator alive and attached: handed back, not unlinked");
        assert_eq!(pool.acquire(100).unwrap().name(), name, "the released segment is reused warm");
        assert_eq!(pool.len(), 2);
    }

    #[test]
    fn a_dropped_client_leaves_nothing_and_a_busy_segment_is_unlinked_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let mut pool = SegmentPool::new(dir.path(), "t");
        let name = pool.acquire(10).unwrap().name().to_owned();
        let idle = pool.acquire(10_000_000).unwrap().name().to_owned();
        let daemon_view = Segment::open(dir.path(), &name).unwrap();
        daemon_view.take_ownership().unwrap();
        drop(pool);
        assert!(!dir.path().join(&idle).exists(), "an idle segment is unlinked when the client goes");
        assert!(dir.path().join(&name).exists(), "a daemon-owned segment survives its client");
        assert!(daemon_view.release().unwrap());
        // Wine keeps a deleted file's name visible while any handle to it is open (here `daemon_view`'s);
        // Linux, and NTFS with the POSIX delete semantics Rust's `remove_file` asks for, drop it at once.
        if crate::platform::wine_version().is_none() {
            assert!(!dir.path().join(&name).exists(), "unlinked on release");
        }
        drop(daemon_view);
        assert!(!dir.path().join(&name).exists(), "gone once the daemon closes it, on every platform");
    }
}
