//! The daemon's view of a segment: opened by name inside the spool directory, checked, then read with
//! positioned reads (`pread`). Reading instead of mapping means a client that truncates its segment after
//! submitting gets a clean "short read" error for its own job instead of a SIGBUS that would kill the daemon,
//! and the daemon pays no page-fault cost to map each segment.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::header::{self, FLAGS_OFFSET, RELEASE_COUNT_OFFSET, STATE_OFFSET};
use super::{HEADER_LEN, HEADER_VERSION, MAGIC, NameError, SegmentState, flags, validate_name};

/// Why a segment could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SegmentOpenError {
    /// The name is not a plain name.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// No such file in the spool directory.
    #[error("segment {name:?} does not exist in {dir}")]
    NotFound { name: String, dir: PathBuf },
    /// The file exists but is not a usable segment.
    #[error("{name:?} is not a usable segment: {reason}")]
    NotASegment { name: String, reason: String },
    /// Another I/O error.
    #[error("could not open segment {name:?}: {source}")]
    Io { name: String, source: io::Error },
}

/// An open segment, read by the daemon.
#[derive(Debug)]
pub struct Segment {
    name: String,
    path: PathBuf,
    file: File,
    len: u64,
    creator_pid: u32,
}

impl Segment {
    /// Opens `name` inside `spool_dir`, refusing symlinks, non-regular files, files of other users, and files
    /// without a valid header.
    pub fn open(spool_dir: &Path, name: &str) -> Result<Self, SegmentOpenError> {
        validate_name(name)?;
        let path = spool_dir.join(name);
        let file = open_no_follow(&path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => SegmentOpenError::NotFound { name: name.to_owned(), dir: spool_dir.into() },
            _ if is_symlink_refusal(&source) => not_a_segment(name, "it is a symbolic link"),
            // A directory (EISDIR), a socket (ENXIO), a device: the name exists but is no segment.
            _ if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) => {
                not_a_segment(name, "it is not a regular file")
            }
            _ => SegmentOpenError::Io { name: name.to_owned(), source },
        })?;
        let meta = file.metadata().map_err(|source| SegmentOpenError::Io { name: name.to_owned(), source })?;
        if !meta.is_file() {
            return Err(not_a_segment(name, "it is not a regular file"));
        }
        check_owner(&meta).map_err(|reason| not_a_segment(name, &reason))?;
        let len = meta.len();
        if len < HEADER_LEN {
            return Err(not_a_segment(name, &format!("{len} bytes is smaller than the {HEADER_LEN}-byte header")));
        }
        let mut segment = Self { name: name.to_owned(), path, file, len, creator_pid: 0 };
        let mut head = [0u8; HEADER_LEN as usize];
        segment.read_at(0, &mut head).map_err(|source| SegmentOpenError::Io { name: name.to_owned(), source })?;
        if head[..8] != MAGIC {
            return Err(not_a_segment(name, "bad magic (not created by a Luna Daemon client)"));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if version != HEADER_VERSION {
            return Err(not_a_segment(name, &format!("header version {version}, expected {HEADER_VERSION}")));
        }
        segment.creator_pid = u32::from_le_bytes(head[header::PID_OFFSET..][..4].try_into().expect("4 bytes"));
        Ok(segment)
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's size in bytes when it was opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the segment holds nothing beyond its header.
    pub fn is_empty(&self) -> bool {
        self.len <= HEADER_LEN
    }

    /// The process id that created the segment.
    pub fn creator_pid(&self) -> u32 {
        self.creator_pid
    }

    /// Reads exactly `buf.len()` bytes at `offset`. A segment truncated since it was opened gives
    /// `UnexpectedEof`, never a signal.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::read_exact_at(&self.file, buf, offset)
        }
        #[cfg(windows)]
        {
            let mut done = 0;
            while done < buf.len() {
                let n = std::os::windows::fs::FileExt::seek_read(&self.file, &mut buf[done..], offset + done as u64)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                done += n;
            }
            Ok(())
        }
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        #[cfg(unix)]
        {
            std::os::unix::fs::FileExt::write_all_at(&self.file, buf, offset)
        }
        #[cfg(windows)]
        {
            let mut done = 0;
            while done < buf.len() {
                done += std::os::windows::fs::FileExt::seek_write(&self.file, &buf[done..], offset + done as u64)?;
            }
            Ok(())
        }
    }

    /// Who owns the segment now, as its header says.
    pub fn state(&self) -> io::Result<SegmentState> {
        let mut b = [0u8];
        self.read_at(STATE_OFFSET as u64, &mut b)?;
        Ok(SegmentState::from_byte(b[0]))
    }

    /// The header's flags byte.
    pub fn flags(&self) -> io::Result<u8> {
        let mut b = [0u8];
        self.read_at(FLAGS_OFFSET as u64, &mut b)?;
        Ok(b[0])
    }

    /// Records that the daemon owns the segment (a single-byte write, so a reader never sees a torn value).
    pub fn take_ownership(&self) -> io::Result<()> {
        self.write_at(STATE_OFFSET as u64, &[SegmentState::Daemon.to_byte()])
    }

    /// Returns ownership to the client without counting a release (a submission refused after ownership was
    /// taken).
    pub fn give_back(&self) -> io::Result<()> {
        self.write_at(STATE_OFFSET as u64, &[SegmentState::Client.to_byte()])
    }

    /// Hands the segment back: bumps the release count, marks it client-owned and, if the client has
    /// detached or died, unlinks it. Returns whether it was unlinked.
    pub fn release(&self) -> io::Result<bool> {
        let mut count = [0u8; 8];
        self.read_at(RELEASE_COUNT_OFFSET as u64, &mut count)?;
        let next = u64::from_le_bytes(count).wrapping_add(1);
        self.write_at(RELEASE_COUNT_OFFSET as u64, &next.to_le_bytes())?;
        self.write_at(STATE_OFFSET as u64, &[SegmentState::Client.to_byte()])?;
        // State is written before flags are read; a client detaches by setting the flag before it reads the
        // state, so at least one side sees the other's write and unlinks (the janitor is the backstop).
        let orphaned = self.flags()? & flags::DETACHED != 0 || !super::process_alive(self.creator_pid);
        if orphaned {
            match std::fs::remove_file(&self.path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(orphaned)
    }
}

fn not_a_segment(name: &str, reason: &str) -> SegmentOpenError {
    SegmentOpenError::NotASegment { name: name.to_owned(), reason: reason.to_owned() }
}

#[cfg(unix)]
fn open_no_follow(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> io::Result<File> {
    if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
        return Err(io::Error::other("symbolic link"));
    }
    OpenOptions::new().read(true).write(true).open(path)
}

fn is_symlink_refusal(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32)
    }
    #[cfg(not(unix))]
    {
        e.to_string().contains("symbolic link")
    }
}

#[cfg(unix)]
fn check_owner(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!("it belongs to user id {}, not to the daemon's user {me}", meta.uid()));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_owner(_meta: &std::fs::Metadata) -> Result<(), String> {
    // Windows: the spool directory's ACL (owner only) is the boundary.
    Ok(())
}
