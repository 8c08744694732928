//! Stable numeric error codes. Numbers are never reused or renumbered; new codes are only added.

use serde::{Deserialize, Serialize};

/// Why a request failed, as carried in an `error` reply or a failed image's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", from = "u16")]
pub enum ErrorCode {
    /// The frame was not valid MessagePack, or not a known message.
    MalformedFrame,
    /// The length prefix exceeds the frame size cap.
    FrameTooLarge,
    /// The peer speaks a protocol version this side does not.
    VersionMismatch,
    /// A request arrived before a successful handshake.
    HandshakeRequired,
    /// A field of an image descriptor is out of range or inconsistent.
    InvalidDescriptor,
    /// A segment name is not a plain name (path separators, dots, too long, bad characters).
    InvalidSegmentName,
    /// The named segment does not exist in the daemon's spool directory, or is not a segment.
    SegmentNotFound,
    /// A descriptor addresses bytes beyond the end of its segment.
    OutOfBounds,
    /// The segment is still owned by the daemon for an earlier job.
    SegmentBusy,
    /// A job option is invalid (output directory, file name, compression level, format).
    InvalidJob,
    /// No job with that id is known (never submitted, or expired from the table).
    UnknownJob,
    /// The daemon is at its queue budget; save locally or retry later. Never a loss.
    Busy,
    /// The daemon is shutting down and accepts no new work.
    ShuttingDown,
    /// The peer is not allowed to talk to this daemon (another user id).
    PermissionDenied,
    /// The pixels did not match the descriptor's checksum.
    ChecksumMismatch,
    /// Encoding or writing an image failed (disk full, permission denied, ...).
    SaveFailed,
    /// A bug in the daemon; the message says more.
    Internal,
    /// The image's segment was gone when the daemon restarted (e.g. after a reboot): the image is lost.
    Lost,
    /// The job was cancelled before this image was saved.
    Cancelled,
    /// A code this build does not know (sent by a newer peer).
    Unknown(u16),
}

impl ErrorCode {
    /// The code's stable number on the wire.
    pub fn number(self) -> u16 {
        match self {
            Self::MalformedFrame => 1,
            Self::FrameTooLarge => 2,
            Self::VersionMismatch => 3,
            Self::HandshakeRequired => 4,
            Self::InvalidDescriptor => 5,
            Self::InvalidSegmentName => 6,
            Self::SegmentNotFound => 7,
            Self::OutOfBounds => 8,
            Self::SegmentBusy => 9,
            Self::InvalidJob => 10,
            Self::UnknownJob => 11,
            Self::Busy => 12,
            Self::ShuttingDown => 13,
            Self::PermissionDenied => 14,
            Self::ChecksumMismatch => 15,
            Self::SaveFailed => 16,
            Self::Internal => 17,
            Self::Lost => 18,
            Self::Cancelled => 19,
            Self::Unknown(n) => n,
        }
    }

    /// The code's stable snake_case name, as sent in the `name` field of an error.
    pub fn name(self) -> &'static str {
        match self {
            Self::MalformedFrame => "malformed_frame",
            Self::FrameTooLarge => "frame_too_large",
            Self::VersionMismatch => "version_mismatch",
            Self::HandshakeRequired => "handshake_required",
            Self::InvalidDescriptor => "invalid_descriptor",
            Self::InvalidSegmentName => "invalid_segment_name",
            Self::SegmentNotFound => "segment_not_found",
            Self::OutOfBounds => "out_of_bounds",
            Self::SegmentBusy => "segment_busy",
            Self::InvalidJob => "invalid_job",
            Self::UnknownJob => "unknown_job",
            Self::Busy => "busy",
            Self::ShuttingDown => "shutting_down",
            Self::PermissionDenied => "permission_denied",
            Self::ChecksumMismatch => "checksum_mismatch",
            Self::SaveFailed => "save_failed",
            Self::Internal => "internal",
            Self::Lost => "lost",
            Self::Cancelled => "cancelled",
            Self::Unknown(_) => "unknown",
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.number()
    }
}

impl From<u16> for ErrorCode {
    fn from(n: u16) -> Self {
        const KNOWN: [ErrorCode; 19] = [
            ErrorCode::MalformedFrame,
            ErrorCode::FrameTooLarge,
            ErrorCode::VersionMismatch,
            ErrorCode::HandshakeRequired,
            ErrorCode::InvalidDescriptor,
            ErrorCode::InvalidSegmentName,
            ErrorCode::SegmentNotFound,
            ErrorCode::OutOfBounds,
            ErrorCode::SegmentBusy,
            ErrorCode::InvalidJob,
            ErrorCode::UnknownJob,
            ErrorCode::Busy,
            ErrorCode::ShuttingDown,
            ErrorCode::PermissionDenied,
            ErrorCode::ChecksumMismatch,
            ErrorCode::SaveFailed,
            ErrorCode::Internal,
            ErrorCode::Lost,
            ErrorCode::Cancelled,
        ];
        KNOWN.into_iter().find(|c| c.number() == n).unwrap_or(ErrorCode::Unknown(n))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.number())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_unknown_numbers_survive() {
        for n in 1..=19u16 {
            assert_eq!(ErrorCode::from(n).number(), n);
            assert_ne!(ErrorCode::from(n).name(), "unknown");
        }
        assert_eq!(ErrorCode::from(999), ErrorCode::Unknown(999));
    }
}
