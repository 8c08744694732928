//! Shared-memory segments: their names, their header, the daemon's read-only view of them and the client's
//! writable, reusable mapping. A segment is a plain file in a per-user directory on tmpfs (`/dev/shm` on Linux:
//! that *is* POSIX shared memory), so it has a listable name, owner-only permissions and survives either side
//! crashing. Apart from `platform` (OS calls), this module is the only home of `unsafe` code.

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

/// Whether a segment's creator can still reuse or clean up its segment; one definition for the whole crate.
pub use crate::platform::process_alive;
