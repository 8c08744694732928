//! Shared-memory segments: their names, their header, the daemon's read-only view of them and the client's
//! writable, reusable mapping. A segment is a plain file in a per-user directory on tmpfs (`/dev/shm` on Linux:
//! that *is* POSIX shared memory), so it has a listable name, owner-only permissions and survives either side
//! crashing. This module is a leaf and the only home of `unsafe` code.

mod header;
mod layout;
mod name;
mod reader;
mod writer;

pub use header::{HEADER_LEN, HEADER_VERSION, MAGIC, SegmentState, flags};
pub use layout::{Layout, LayoutError};
pub use name::{NameError, validate_name};
pub use reader::{Segment, SegmentOpenError};
pub use writer::{SegmentCreateError, SegmentPool, SegmentWriter};

/// Whether a process with this id is still alive (used to tell whether a segment's creator can still
/// reuse or clean up its segment). Unknown platforms answer "alive", the safe side: nothing is unlinked.
pub fn process_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        use nix::{errno::Errno, sys::signal::kill, unistd::Pid};
        let Ok(pid) = i32::try_from(pid) else { return false };
        !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}
