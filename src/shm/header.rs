//! The 64-byte header at the start of every segment (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `LUNASEG\0` |
//! | 8 | 4 | header version, 1 |
//! | 12 | 1 | state: 0 = the client owns it (free to write), 1 = the daemon owns it |
//! | 13 | 1 | flags: bit 0 = detached (the client is gone; the daemon unlinks it on release) |
//! | 16 | 4 | creator process id |
//! | 24 | 8 | release count, incremented by the daemon each time it hands the segment back |
//!
//! Everything else is reserved and zero. Pixel data starts at or after [`HEADER_LEN`].

/// The magic bytes at offset 0.
pub const MAGIC: [u8; 8] = *b"LUNASEG\0";
/// The header layout version at offset 8.
pub const HEADER_VERSION: u32 = 1;
/// Header size; descriptors must not address bytes before it.
pub const HEADER_LEN: u64 = 64;

pub(crate) const VERSION_OFFSET: usize = 8;
pub(crate) const STATE_OFFSET: usize = 12;
pub(crate) const FLAGS_OFFSET: usize = 13;
pub(crate) const PID_OFFSET: usize = 16;
pub(crate) const RELEASE_COUNT_OFFSET: usize = 24;

/// Bits of the flags byte.
pub mod flags {
    /// The client has gone away: the daemon unlinks the segment instead of handing it back.
    pub const DETACHED: u8 = 1;
}

/// Who may touch a segment's pixel data right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// The client owns it: it may write pixels and submit them.
    Client,
    /// The daemon owns it from acceptance until every file from it is durable.
    Daemon,
    /// A value this build does not know.
    Unknown(u8),
}

impl SegmentState {
    pub(crate) fn from_byte(b: u8) -> Self {
        match b {
            0 => Self::Client,
            1 => Self::Daemon,
            other => Self::Unknown(other),
        }
    }

    pub(crate) fn to_byte(self) -> u8 {
        match self {
            Self::Client => 0,
            Self::Daemon => 1,
            Self::Unknown(b) => b,
        }
    }
}

/// A fresh header for a segment created by `pid`.
pub(crate) fn new_header(pid: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(&MAGIC);
    h[VERSION_OFFSET..VERSION_OFFSET + 4].copy_from_slice(&HEADER_VERSION.to_le_bytes());
    h[PID_OFFSET..PID_OFFSET + 4].copy_from_slice(&pid.to_le_bytes());
    h
}
