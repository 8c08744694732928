//! The wire protocol, version 1: length-prefixed MessagePack frames, the handshake, every request and reply,
//! and the stable error codes. This module is a leaf: it imports nothing else of ours, so a client, the daemon
//! and the tests all speak exactly the same types. `docs/PROTOCOL.md` is the normative description.

mod error_code;
mod frame;
mod messages;

pub use error_code::ErrorCode;
pub use frame::{FrameError, decode_message, encode_message, read_frame, write_frame};
pub use messages::*;

/// The protocol version this build speaks. Independent of the crate version; see the compatibility policy in
/// `docs/PROTOCOL.md`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The protocol name carried in the handshake so that a stray peer is told apart from an old client.
pub const PROTOCOL_NAME: &str = "luna-daemon";

/// Largest frame body either side accepts, checked against the length prefix before a byte is allocated.
/// Pixels and large metadata travel through shared memory, so frames stay small.
pub const MAX_FRAME_LEN: u32 = 1024 * 1024;

/// Deepest MessagePack nesting a decoder accepts. Protocol structures nest at most 5 levels; metadata sent as
/// values (a ComfyUI workflow) adds its own depth, rarely beyond 15.
pub const MAX_NESTING_DEPTH: usize = 64;
