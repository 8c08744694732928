//! Stable numeric error codes. Numbers are never reused or renumbered; new codes are only added.

use serde::{Deserialize, Serialize};

/// Defines [`ErrorCode`] from one table: variant, stable number, stable name and doc. Adding a code is one
/// line here (and one in `constants.json`, which both test suites check against this table).
macro_rules! error_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $number:literal, $name:literal;)*) => {
        /// Why a request failed, as carried in an `error` reply or a failed image's status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(into = "u16", from = "u16")]
        pub enum ErrorCode {
            $($(#[doc = $doc])* $variant,)*
            /// A code this build does not know (sent by a newer peer).
            Unknown(u16),
        }

        impl ErrorCode {
            /// Every code this build knows, in number order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The code's stable number on the wire.
            pub fn number(self) -> u16 {
                match self {
                    $(Self::$variant => $number,)*
                    Self::Unknown(n) => n,
                }
            }

            /// The code's stable snake_case name, as sent in the `name` field of an error.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                    Self::Unknown(_) => "unknown",
                }
            }
        }
    };
}

error_codes! {
    /// The frame was not valid MessagePack, or not a known message.
    MalformedFrame = 1, "malformed_frame";
    /// The length prefix exceeds the frame size cap.
    FrameTooLarge = 2, "frame_too_large";
    /// The peer speaks a protocol version this side does not.
    VersionMismatch = 3, "version_mismatch";
    /// A request arrived before a successful handshake.
    HandshakeRequired = 4, "handshake_required";
    /// A field of an image descriptor is out of range or inconsistent.
    InvalidDescriptor = 5, "invalid_descriptor";
    /// A segment name is not a plain name (path separators, dots, too long, bad characters).
    InvalidSegmentName = 6, "invalid_segment_name";
    /// The named segment does not exist in the daemon's spool directory, or is not a segment.
    SegmentNotFound = 7, "segment_not_found";
    /// A descriptor addresses bytes beyond the end of its segment.
    OutOfBounds = 8, "out_of_bounds";
    /// The segment is still owned by the daemon for an earlier job.
    SegmentBusy = 9, "segment_busy";
    /// A job option is invalid (output directory, file name, compression level, format).
    InvalidJob = 10, "invalid_job";
    /// No job with that id is known (never submitted, or expired from the table).
    UnknownJob = 11, "unknown_job";
    /// The daemon is at its queue budget; save locally or retry later. Never a loss.
    Busy = 12, "busy";
    /// The daemon is shutting down and accepts no new work.
    ShuttingDown = 13, "shutting_down";
    /// The peer is not allowed to talk to this daemon (another user id).
    PermissionDenied = 14, "permission_denied";
    /// The pixels did not match the descriptor's checksum.
    ChecksumMismatch = 15, "checksum_mismatch";
    /// Encoding or writing an image failed (disk full, permission denied, ...).
    SaveFailed = 16, "save_failed";
    /// A bug in the daemon; the message says more.
    Internal = 17, "internal";
    /// The image's segment was gone when the daemon restarted (e.g. after a reboot): the image is lost.
    Lost = 18, "lost";
    /// The job was cancelled before this image was saved.
    Cancelled = 19, "cancelled";
    /// The daemon cannot write its journal (state directory full or failing), so it cannot promise to finish
    /// new work: save locally. Accepted jobs are kept; new work is accepted again once the journal is writable.
    JournalUnavailable = 20, "journal_unavailable";
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.number()
    }
}

impl From<u16> for ErrorCode {
    fn from(n: u16) -> Self {
        ErrorCode::ALL.iter().copied().find(|c| c.number() == n).unwrap_or(ErrorCode::Unknown(n))
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
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            let n = i as u16 + 1;
            assert_eq!(code.number(), n, "numbers are dense and in order");
            assert_eq!(ErrorCode::from(n), *code);
            assert_ne!(code.name(), "unknown");
        }
        let names: std::collections::HashSet<_> = ErrorCode::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len(), "names are unique");
        assert_eq!(ErrorCode::from(999), ErrorCode::Unknown(999));
    }
}
