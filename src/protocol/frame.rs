//! Framing: a 4-byte big-endian length, then that many bytes of MessagePack. The length is checked against
//! [`MAX_FRAME_LEN`](super::MAX_FRAME_LEN) before any buffer is allocated.

use std::io::{self, Read, Write};

use serde::{Serialize, de::DeserializeOwned};

use super::{MAX_FRAME_LEN, MAX_NESTING_DEPTH};

/// What can go wrong reading, writing or decoding a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection cleanly between two frames.
    #[error("connection closed by peer")]
    Closed,
    /// The length prefix announces more than the cap; nothing was allocated.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: u64, max: u32 },
    /// The connection ended in the middle of a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// The body is not a valid MessagePack encoding of a known message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message could not be encoded (a bug: every message type is encodable).
    #[error("could not encode message: {0}")]
    Encode(String),
    /// Any other I/O error on the connection.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
}

/// Reads one frame body. A clean end of stream before the first prefix byte is [`FrameError::Closed`].
pub fn read_frame<R: Read>(reader: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut prefix = [0u8; 4];
    read_prefix(reader, &mut prefix)?;
    let len = u32::from_be_bytes(prefix);
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge { len: len.into(), max: MAX_FRAME_LEN });
    }
    read_body(reader, len as usize)
}

/// The body buffer grows by at most this much beyond the bytes already received, so a peer that announces a
/// large frame and then stalls holds a few KiB, not the announced size.
const BODY_GROWTH: usize = 64 * 1024;

fn read_body<R: Read>(reader: &mut R, len: usize) -> Result<Vec<u8>, FrameError> {
    let mut body = Vec::new();
    while body.len() < len {
        let filled = body.len();
        let step = (len - filled).min(BODY_GROWTH.max(filled));
        body.resize(filled + step, 0);
        match reader.read(&mut body[filled..]) {
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => body.truncate(filled + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => body.truncate(filled),
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(body)
}

fn read_prefix<R: Read>(reader: &mut R, prefix: &mut [u8; 4]) -> Result<(), FrameError> {
    let mut filled = 0;
    while filled < prefix.len() {
        match reader.read(&mut prefix[filled..]) {
            Ok(0) if filled == 0 => return Err(FrameError::Closed),
            Ok(0) => return Err(FrameError::Truncated),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FrameError::Io(e)),
        }
    }
    Ok(())
}

/// Writes one frame (prefix and body) and flushes.
pub fn write_frame<W: Write>(writer: &mut W, body: &[u8]) -> Result<(), FrameError> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&len| len <= MAX_FRAME_LEN)
        .ok_or(FrameError::TooLarge { len: body.len() as u64, max: MAX_FRAME_LEN })?;
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    writer.write_all(&frame)?;
    writer.flush()?;
    Ok(())
}

/// Encodes a message as MessagePack with named fields (maps), so any language can read it.
pub fn encode_message<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    rmp_serde::to_vec_named(message).map_err(|e| FrameError::Encode(e.to_string()))
}

/// Decodes a message, refusing nesting deeper than [`MAX_NESTING_DEPTH`] and trailing bytes.
pub fn decode_message<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    let mut cursor = io::Cursor::new(body);
    let mut de = rmp_serde::Deserializer::new(&mut cursor);
    de.set_max_depth(MAX_NESTING_DEPTH);
    let value = T::deserialize(&mut de).map_err(|e| FrameError::Malformed(e.to_string()))?;
    if cursor.position() != body.len() as u64 {
        return Err(FrameError::Malformed(format!(
            "{} trailing bytes after the message",
            body.len() as u64 - cursor.position()
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_prefix_is_refused_before_allocating() {
        let mut input: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        let err = read_frame(&mut input).unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { len: 0xffff_ffff, .. }), "{err}");
        assert_eq!(err.to_string(), "frame of 4294967295 bytes exceeds the 1048576-byte limit");
    }

    #[test]
    fn clean_close_and_truncation_are_told_apart() {
        let mut empty: &[u8] = &[];
        assert!(matches!(read_frame(&mut empty), Err(FrameError::Closed)));
        let mut half_prefix: &[u8] = &[0, 0];
        assert!(matches!(read_frame(&mut half_prefix), Err(FrameError::Truncated)));
        let mut short_body: &[u8] = &[0, 0, 0, 5, 1, 2];
        assert!(matches!(read_frame(&mut short_body), Err(FrameError::Truncated)));
    }

    /// Issue 11, failure 8: a frame announcing 1 MiB whose sender stalls after a few bytes holds about 64 KiB,
    /// never the announced size.
    #[test]
    fn a_stalled_large_frame_is_not_allocated_up_front() {
        struct Stalling {
            sent: Vec<u8>,
            largest_buffer: usize,
        }
        impl Read for Stalling {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                self.largest_buffer = self.largest_buffer.max(buf.len());
                let n = self.sent.len().min(buf.len());
                buf[..n].copy_from_slice(&self.sent[..n]);
                self.sent.drain(..n);
                Ok(n)
            }
        }
        let mut sent = (1u32 << 20).to_be_bytes().to_vec();
        sent.extend_from_slice(&[0; 10]);
        let mut reader = Stalling { sent, largest_buffer: 0 };
        assert!(matches!(read_frame(&mut reader), Err(FrameError::Truncated)));
        assert!(reader.largest_buffer <= BODY_GROWTH, "offered a {}-byte buffer", reader.largest_buffer);
        // A full frame still arrives whole.
        let mut buf = Vec::new();
        write_frame(&mut buf, &vec![7u8; 300_000]).unwrap();
        assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), vec![7u8; 300_000]);
    }

    #[test]
    fn frames_round_trip() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").unwrap();
        assert_eq!(&buf[..4], &[0, 0, 0, 5]);
        assert_eq!(read_frame(&mut buf.as_slice()).unwrap(), b"hello");
    }

    #[test]
    fn deep_nesting_is_refused() {
        // 10_000 nested one-element arrays: would overflow a stack without the depth cap.
        let mut body = vec![0x91u8; 10_000];
        body.push(0xc0);
        // IgnoredAny walks whatever it is given, so the nesting is really descended.
        let err = decode_message::<serde::de::IgnoredAny>(&body).unwrap_err();
        assert!(err.to_string().contains("depth"), "{err}");
    }
}
