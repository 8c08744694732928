//! One client connection: peer check, handshake, then request/reply until the client hangs up.
//!
//! Time limits (docs/PROTOCOL.md, "Connections"): the hello must arrive complete within the frame timeout of
//! connecting, and every later frame within the frame timeout of its first byte, so a half-sent frame cannot
//! hold a connection. Between requests an authenticated connection may stay idle as long as it likes, but it
//! is the first to be closed when all slots are taken ([`super::slots`]). A reply must be written within the
//! frame timeout too, so a client that stops reading its replies cannot park the connection's thread: on Unix
//! the socket's send timeout, on Windows (named pipes have none) the slots' watchdog, as for reads.

use std::io::{self, Read};
use std::time::{Duration, Instant};

use interprocess::local_socket::{Stream, prelude::*};

use super::Context;
use super::slots::{Admission, Slot};
use crate::protocol::{
    self, ErrorCode, ErrorReply, FrameError, Hello, PROTOCOL_NAME, PROTOCOL_VERSION, Request, Response,
};

/// How long a frame (the hello counted from connecting) may take to arrive once it has begun.
const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// The frame timeout, which `LUNA_DAEMON_FRAME_TIMEOUT_MS` overrides (tests use a short one).
fn frame_timeout() -> Duration {
    static TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TIMEOUT.get_or_init(|| {
        std::env::var("LUNA_DAEMON_FRAME_TIMEOUT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map_or(FRAME_TIMEOUT, Duration::from_millis)
    })
}

/// Reads from the stream under the time limits: a deadline once a frame has begun; none while idle.
struct Timed<'a> {
    stream: &'a mut Stream,
    slot: &'a Slot,
    deadline: Option<Instant>,
}

impl<'a> Timed<'a> {
    /// For the hello: the deadline runs from now.
    fn handshake(stream: &'a mut Stream, slot: &'a Slot) -> Self {
        Self { stream, slot, deadline: Some(Instant::now() + frame_timeout()) }
    }

    /// For a request: idle (no deadline, evictable) until its first byte.
    fn request(stream: &'a mut Stream, slot: &'a Slot) -> Self {
        slot.set_idle(true);
        Self { stream, slot, deadline: None }
    }
}

impl Read for Timed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let timeout = match self.deadline {
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "the frame was not sent in time"));
                }
                Some(left)
            }
            None => None,
        };
        #[cfg(not(windows))]
        self.stream.set_recv_timeout(timeout)?;
        // Named pipes have no read timeouts (interprocess answers `Unsupported`): the slots' watchdog closes
        // the connection once the deadline has passed, which ends this read.
        #[cfg(windows)]
        {
            let _ = timeout;
            self.slot.set_deadline(self.deadline);
        }
        let n = self.stream.read(buf)?;
        if self.deadline.is_none() && n > 0 {
            self.slot.set_idle(false);
            self.deadline = Some(Instant::now() + frame_timeout());
        }
        Ok(n)
    }
}

/// Windows: once the frame is read (or reading it failed), no deadline applies while the request is handled.
#[cfg(windows)]
impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.slot.set_deadline(None);
    }
}

pub(crate) fn handle_connection(mut stream: Stream, ctx: &Context, slot: Slot, admission: Admission) {
    // A client that stops reading its replies cannot park this thread either (Windows: `send`'s deadline).
    #[cfg(not(windows))]
    let _ = stream.set_send_timeout(Some(frame_timeout()));
    // Refusals are answered after the client's first frame has been read, so the client is not writing into a
    // closed socket and always gets to read why.
    let refusal = if admission == Admission::Full {
        Some(error(ErrorCode::Busy, "too many connections; try again later"))
    } else {
        check_peer(&stream).err().map(|reason| {
            tracing::warn!("refused a connection: {reason}");
            error(ErrorCode::PermissionDenied, reason)
        })
    };
    let Some(client) = handshake(&mut stream, &slot, ctx, refusal) else { return };
    tracing::debug!(client = %client.client, pid = ?client.pid, "client connected");
    loop {
        let frame = protocol::read_frame(&mut Timed::request(&mut stream, &slot));
        let reply = match frame {
            Ok(body) => match protocol::decode_message::<Request>(&body) {
                Ok(request) => ctx.handle(&client, request),
                Err(e) => error(ErrorCode::MalformedFrame, e.to_string()),
            },
            Err(FrameError::Closed) => return,
            Err(e @ FrameError::TooLarge { .. }) => {
                // The oversized body is not read, so the stream cannot be resynchronised: reply and hang up.
                let _ = send(&mut stream, &slot, &error(ErrorCode::FrameTooLarge, e.to_string()));
                return;
            }
            Err(e) => {
                tracing::debug!("connection ended: {e}");
                return;
            }
        };
        let stop_after = matches!(reply, Response::Stopping(_));
        // Idle from before the reply goes out, so a client that has read it finds the connection evictable.
        slot.set_idle(true);
        if send(&mut stream, &slot, &reply).is_err() {
            return;
        }
        if stop_after {
            ctx.request_stop();
            return;
        }
    }
}

/// Reads and answers the handshake (with `refusal` instead of a welcome, if given); returns the client's hello
/// if both sides speak the same version.
fn handshake(stream: &mut Stream, slot: &Slot, ctx: &Context, refusal: Option<Response>) -> Option<Hello> {
    let frame = protocol::read_frame(&mut Timed::handshake(stream, slot));
    let body = match frame {
        Ok(body) => body,
        Err(e @ FrameError::TooLarge { .. }) => {
            let _ = send(stream, slot, &error(ErrorCode::FrameTooLarge, e.to_string()));
            return None;
        }
        Err(_) => return None,
    };
    if let Some(refusal) = refusal {
        let _ = send(stream, slot, &refusal);
        return None;
    }
    let hello = match protocol::decode_message::<Request>(&body) {
        Ok(Request::Hello(hello)) => hello,
        Ok(_) => {
            let _ = send(stream, slot, &error(ErrorCode::HandshakeRequired, "the first message must be a hello"));
            return None;
        }
        Err(e) => {
            let _ = send(stream, slot, &error(ErrorCode::MalformedFrame, format!("bad handshake: {e}")));
            return None;
        }
    };
    if hello.protocol != PROTOCOL_NAME {
        let msg = format!("unknown protocol {:?}; this is a {PROTOCOL_NAME} socket", hello.protocol);
        let _ = send(stream, slot, &error(ErrorCode::VersionMismatch, msg));
        return None;
    }
    if hello.version != PROTOCOL_VERSION {
        let mut reply = ErrorReply::new(
            ErrorCode::VersionMismatch,
            format!(
                "client speaks protocol version {}, this daemon ({}) speaks version {PROTOCOL_VERSION}; \
                 upgrade the older side",
                hello.version,
                env!("CARGO_PKG_VERSION")
            ),
        );
        reply.supported_versions = vec![PROTOCOL_VERSION];
        tracing::warn!(client = %hello.client, "refused handshake: {}", reply.message);
        let _ = send(stream, slot, &Response::Error(reply));
        return None;
    }
    slot.set_idle(true);
    send(stream, slot, &Response::Welcome(ctx.welcome())).ok()?;
    Some(hello)
}

#[cfg(unix)]
fn check_peer(stream: &Stream) -> Result<(), String> {
    let creds = stream.peer_creds().map_err(|e| format!("could not read peer credentials: {e}"))?;
    let me = crate::paths::user_id();
    match creds.euid() {
        Some(uid) if uid == me => Ok(()),
        Some(uid) => Err(format!("peer runs as user id {uid}; only user id {me} may use this daemon")),
        None => Err("the platform did not report the peer's user id".to_owned()),
    }
}

/// Windows: the pipe's DACL already admits only our user and SYSTEM; this checks each client anyway, as the
/// Unix side does, by the user SID of the client process's token.
#[cfg(windows)]
fn check_peer(stream: &Stream) -> Result<(), String> {
    use crate::platform::{check_same_user, current_user_sid, process_user_sid};
    let creds = stream.peer_creds().map_err(|e| format!("could not read the client's process id: {e}"))?;
    let pid = creds.pid().ok_or("the platform did not report the client's process id")?;
    let client = process_user_sid(pid).map_err(|e| format!("could not read the user of client process {pid}: {e}"))?;
    let me = current_user_sid().map_err(|e| format!("could not read this daemon's user: {e}"))?;
    check_same_user(&client, &me)
}

fn error(code: ErrorCode, message: impl Into<String>) -> Response {
    Response::Error(ErrorReply::new(code, message))
}

/// Writes one reply within the frame timeout: on Unix the socket's send timeout bounds every write; named pipes
/// have no write timeouts, so on Windows the slot's deadline makes the watchdog disconnect a client that has not
/// taken the whole reply in time (which fails the write blocked here).
fn send(stream: &mut Stream, slot: &Slot, reply: &Response) -> Result<(), FrameError> {
    let body = protocol::encode_message(reply)?;
    #[cfg(windows)]
    let _deadline = slot.deadline_until_dropped(Instant::now() + frame_timeout());
    #[cfg(not(windows))]
    let _ = slot;
    match protocol::write_frame(stream, &body) {
        // A reply that cannot be framed is replaced by an error saying so, never by silence.
        Err(FrameError::TooLarge { len, max }) => {
            let message = format!("the reply would be {len} bytes, more than the {max}-byte frame limit");
            protocol::write_frame(stream, &protocol::encode_message(&error(ErrorCode::Internal, message))?)
        }
        other => other,
    }
}
