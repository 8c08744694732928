//! Malformed and hostile input: each gets a clear error, nothing is written, and the daemon keeps serving.

use luna_daemon::protocol::{
    self, ErrorCode, ImageDescriptor, ImageFormat, Request, Response, SampleType, Slot, SubmitJob,
};
use luna_daemon::shm::{HEADER_LEN, Segment, SegmentState, SegmentWriter};

use crate::support::{RawConn, TestDaemon, file_names, hello, rgb_u8_4x4};

fn expect_error(reply: Response, code: ErrorCode, needle: &str) -> String {
    match reply {
        Response::Error(e) => {
            assert_eq!(e.code, code, "{e:?}");
            assert_eq!(e.name, code.name());
            assert!(e.message.contains(needle), "message {:?} should mention {needle:?}", e.message);
            e.message
        }
        other => panic!("expected a {code} error, got {other:?}"),
    }
}

/// The daemon still accepts and saves a good job from a fresh client.
fn assert_still_serving(daemon: &TestDaemon) {
    use luna_daemon::client::{ImageRef, JobOptions, Pixels};
    let mut client = daemon.client();
    let pixels = vec![7u8; 4 * 4 * 3];
    let image = ImageRef { width: 4, height: 4, channels: 3, pixels: Pixels::U8(&pixels) };
    let mut options = JobOptions::new(daemon.dir.path().join("still-serving"));
    options.filename = "alive".to_owned();
    let job = client.submit(&options, &[image]).expect("a good job is still accepted");
    let status = client.wait(&job.job_id, |_| {}).unwrap();
    assert!(status.images[0].path.as_deref().unwrap().ends_with("alive.png"));
}

fn job_with(descriptor: ImageDescriptor, output: &std::path::Path) -> Request {
    let slots = vec![Slot { affix: String::new(), format: ImageFormat::Png, subdir: false, images: vec![descriptor] }];
    Request::Submit(Box::new(SubmitJob {
        filename: "hostile".to_owned(),
        ..SubmitJob::new(output.to_string_lossy(), slots)
    }))
}

#[test]
fn a_malformed_frame_gets_an_error_and_the_connection_stays_usable() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    conn.send_frame(b"\xc1\xc1 definitely not msgpack");
    expect_error(conn.read_reply(), ErrorCode::MalformedFrame, "malformed message");
    conn.send_frame(&protocol::encode_message(&serde_json::json!({"type": "launch_missiles"})).unwrap());
    expect_error(conn.read_reply(), ErrorCode::MalformedFrame, "launch_missiles");
    let reply = conn.request(&Request::Stats(Default::default()));
    assert!(matches!(reply, Response::Stats(_)), "{reply:?}");
}

#[test]
fn deeply_nested_msgpack_is_refused_without_crashing() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    // {"type": "submit", "slots": [[[[...100_000 levels...]]]]}: the tagged map is buffered recursively, so
    // without the depth cap this would overflow the connection thread's stack.
    let mut body = vec![0x82, 0xa4];
    body.extend_from_slice(b"type");
    body.push(0xa6);
    body.extend_from_slice(b"submit");
    body.push(0xa5);
    body.extend_from_slice(b"slots");
    body.extend(std::iter::repeat_n(0x91u8, 100_000));
    body.push(0xc0);
    conn.send_frame(&body);
    expect_error(conn.read_reply(), ErrorCode::MalformedFrame, "depth");
    assert_still_serving(&daemon);
}

#[test]
fn a_four_gib_length_prefix_is_refused_before_allocating() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    conn.send_bytes(&[0xff, 0xff, 0xff, 0xff]);
    expect_error(conn.read_reply(), ErrorCode::FrameTooLarge, "4294967295 bytes exceeds the 1048576-byte limit");
    assert!(conn.is_closed(), "the daemon hangs up after an oversized prefix");
    assert_still_serving(&daemon);
}

#[test]
fn an_oversized_prefix_before_the_handshake_is_refused_too() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::connect(&daemon.socket);
    conn.send_bytes(&[0x7f, 0, 0, 0]);
    expect_error(conn.read_reply(), ErrorCode::FrameTooLarge, "exceeds");
    assert_still_serving(&daemon);
}

#[test]
fn a_wrong_protocol_version_is_a_clear_error() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::connect(&daemon.socket);
    let reply = conn.request(&Request::Hello(hello(99)));
    let message = expect_error(reply.clone(), ErrorCode::VersionMismatch, "client speaks protocol version 99");
    assert!(message.contains("speaks version 1"), "{message}");
    let Response::Error(e) = reply else { unreachable!() };
    assert_eq!(e.supported_versions, [1]);
    assert!(conn.is_closed());
    assert_still_serving(&daemon);
}

#[test]
fn a_request_before_the_handshake_is_refused() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::connect(&daemon.socket);
    expect_error(conn.request(&Request::Stats(Default::default())), ErrorCode::HandshakeRequired, "hello");
}

#[test]
fn a_descriptor_reaching_past_its_segment_is_refused_and_nothing_is_written() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    let segment = SegmentWriter::create(&daemon.spool, "past-end", 48).unwrap();
    let mut desc = rgb_u8_4x4(segment.name());
    desc.offset = HEADER_LEN + 8;
    let reply = conn.request(&job_with(desc, &daemon.output));
    expect_error(reply, ErrorCode::OutOfBounds, "bytes 72..120 requested, segment is 112 bytes");
    assert_eq!(segment.state(), SegmentState::Client, "a refused job leaves the segment with the client");
    assert!(file_names(&daemon.output).is_empty());
    assert_still_serving(&daemon);
}

#[test]
fn hostile_descriptor_fields_are_refused_by_name() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    let segment = SegmentWriter::create(&daemon.spool, "fields", 4096).unwrap();
    let base = rgb_u8_4x4(segment.name());
    let cases = [
        (ImageDescriptor { width: 0, ..base.clone() }, "width 0"),
        (ImageDescriptor { channels: 2, ..base.clone() }, "channels 2"),
        (ImageDescriptor { row_stride: 3, ..base.clone() }, "row_stride 3 is smaller than a row"),
        (ImageDescriptor { offset: 0, ..base.clone() }, "overlaps the 64-byte segment header"),
        (ImageDescriptor { row_stride: u64::MAX - 14, ..base.clone() }, "overflows"),
        (ImageDescriptor { length: 47, ..base.clone() }, "length 47"),
        (ImageDescriptor { dtype: SampleType::F32, offset: 66, ..base.clone() }, "multiples of the 4-byte sample"),
    ];
    for (desc, needle) in cases {
        expect_error(conn.request(&job_with(desc, &daemon.output)), ErrorCode::InvalidDescriptor, needle);
    }
    let huge = ImageDescriptor { offset: u64::MAX - 7, ..base };
    expect_error(conn.request(&job_with(huge, &daemon.output)), ErrorCode::OutOfBounds, "reaches past");
    assert!(file_names(&daemon.output).is_empty());
}

#[test]
fn unknown_and_path_like_segment_names_are_refused() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    let reply = conn.request(&job_with(rgb_u8_4x4("no-such-segment"), &daemon.output));
    expect_error(reply, ErrorCode::SegmentNotFound, "segment \"no-such-segment\" does not exist");
    for name in ["../../etc/passwd", "/etc/passwd", "..", "a/b", "C:\\x"] {
        let reply = conn.request(&job_with(rgb_u8_4x4(name), &daemon.output));
        expect_error(reply, ErrorCode::InvalidSegmentName, "invalid segment name");
    }
    assert_still_serving(&daemon);
}

#[cfg(unix)] // symlinks: creating one on Windows needs a privilege ordinary users lack
#[test]
fn a_symlink_or_a_foreign_file_in_the_spool_is_not_a_segment() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    std::os::unix::fs::symlink("/etc/passwd", daemon.spool.join("sneaky")).unwrap();
    let reply = conn.request(&job_with(rgb_u8_4x4("sneaky"), &daemon.output));
    expect_error(reply, ErrorCode::SegmentNotFound, "symbolic link");
    std::fs::write(daemon.spool.join("plain"), vec![0u8; 4096]).unwrap();
    let reply = conn.request(&job_with(rgb_u8_4x4("plain"), &daemon.output));
    expect_error(reply, ErrorCode::SegmentNotFound, "bad magic");
}

/// Issue 11, failure 11: a directory or a socket named as a segment is `segment_not_found`, not `internal`.
#[cfg(unix)] // a Unix socket file in the spool
#[test]
fn a_directory_or_a_socket_named_as_a_segment_is_not_found() {
    let daemon = TestDaemon::start();
    std::fs::create_dir(daemon.spool.join("a-directory")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(daemon.spool.join("a-socket")).unwrap();
    let mut conn = RawConn::handshaken(&daemon.socket);
    for name in ["a-directory", "a-socket"] {
        let reply = conn.request(&job_with(rgb_u8_4x4(name), &daemon.output));
        expect_error(reply, ErrorCode::SegmentNotFound, "not a regular file");
    }
    assert_still_serving(&daemon);
}

#[test]
fn a_segment_still_owned_by_the_daemon_cannot_be_submitted_again() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    let segment = SegmentWriter::create(&daemon.spool, "busy", 48).unwrap();
    Segment::open(&daemon.spool, "busy").unwrap().take_ownership().unwrap();
    let reply = conn.request(&job_with(rgb_u8_4x4(segment.name()), &daemon.output));
    expect_error(reply, ErrorCode::SegmentBusy, "still owned by the daemon");
}

#[test]
fn bad_job_options_are_refused_naming_the_option() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    let segment = SegmentWriter::create(&daemon.spool, "opts", 48).unwrap();
    let Request::Submit(base) = job_with(rgb_u8_4x4(segment.name()), &daemon.output) else { unreachable!() };
    let base = *base;
    let cases = [
        (SubmitJob { output_dir: "relative/dir".to_owned(), ..base.clone() }, "must be an absolute path"),
        (SubmitJob { png_compression: 12, ..base.clone() }, "png_compression 12"),
        (SubmitJob { save_path: "../escape".to_owned(), ..base.clone() }, "'..' would leave"),
        (SubmitJob { filename: "a/../../b".to_owned(), ..base.clone() }, "filename: save_path component \"..\""),
        (SubmitJob { filename: "con".to_owned(), ..base.clone() }, "reserved device name"),
        (SubmitJob { lossy_quality: 0, ..base.clone() }, "lossy_quality 0"),
        (SubmitJob { min_quality_threshold: 1.5, ..base.clone() }, "min_quality_threshold 1.5"),
        (SubmitJob { slots: vec![], ..base.clone() }, "no images"),
    ];
    for (job, needle) in cases {
        expect_error(conn.request(&Request::Submit(Box::new(job))), ErrorCode::InvalidJob, needle);
    }
    assert!(file_names(&daemon.output).is_empty());
}

/// Regression: a client whose acknowledgement was lost (the connection broke) sends the same submission again;
/// with the same `submit_id` the daemon answers with the original job, and the images are saved once.
#[test]
fn a_repeated_submission_with_the_same_submit_id_is_saved_once() {
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    let mut segment = SegmentWriter::create(&daemon.spool, "repeat", 48).unwrap();
    segment.data_mut().unwrap()[..48].fill(200);
    let Request::Submit(mut job) = job_with(rgb_u8_4x4(segment.name()), &daemon.output) else { unreachable!() };
    job.submit_id = Some("7d8a2c0e-once".to_owned());
    let request = Request::Submit(job);
    let Response::Accepted(first) = conn.request(&request) else { panic!("not accepted") };
    let Response::Accepted(again) = conn.request(&request) else { panic!("the repeat must be answered, not refused") };
    assert_eq!(first, again);
    daemon.client().wait(&first.job_id, |_| {}).unwrap();
    assert_eq!(file_names(&daemon.output), ["hostile.png"]);
}

/// Regression: a segment holding only a job's metadata blob was never handed back.
#[test]
fn a_segment_used_only_for_metadata_is_handed_back_too() {
    use luna_daemon::protocol::{BlobRef, JobMetadata};
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    let pixels = SegmentWriter::create(&daemon.spool, "pixels", 48).unwrap();
    let mut meta = SegmentWriter::create(&daemon.spool, "meta", 4096).unwrap();
    let blob =
        protocol::encode_message(&JobMetadata { custom_metadata: Some("hi".into()), ..Default::default() }).unwrap();
    meta.data_mut().unwrap()[..blob.len()].copy_from_slice(&blob);
    let Request::Submit(mut job) = job_with(rgb_u8_4x4(pixels.name()), &daemon.output) else { unreachable!() };
    job.metadata_blob =
        Some(BlobRef { segment: "meta".into(), offset: HEADER_LEN, length: blob.len() as u64, crc32: None });
    let Response::Accepted(accepted) = conn.request(&Request::Submit(job)) else { panic!("not accepted") };
    assert_eq!(meta.state(), SegmentState::Daemon, "the blob's segment is the daemon's while the job runs");
    let status = daemon.client().wait(&accepted.job_id, |_| {}).unwrap();
    assert!(status.segments_released);
    assert_eq!(meta.state(), SegmentState::Client, "and handed back when the job is done");
    assert_eq!(pixels.state(), SegmentState::Client);
}

/// A metadata blob that is not a `JobMetadata` is refused at submission (its structure is checked before the
/// reply even though its values are only built later, by a worker).
#[test]
fn a_malformed_metadata_blob_is_refused() {
    use luna_daemon::protocol::BlobRef;
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    let mut segment = SegmentWriter::create(&daemon.spool, "blobby", 4096).unwrap();
    let garbage = protocol::encode_message(&serde_json::json!({"prompt": 42, "extra_pnginfo_values": "nope"})).unwrap();
    segment.data_mut().unwrap()[48..48 + garbage.len()].copy_from_slice(&garbage);
    let Request::Submit(mut job) = job_with(rgb_u8_4x4(segment.name()), &daemon.output) else { unreachable!() };
    job.metadata_blob =
        Some(BlobRef { segment: "blobby".into(), offset: HEADER_LEN + 48, length: garbage.len() as u64, crc32: None });
    expect_error(conn.request(&Request::Submit(job)), ErrorCode::InvalidDescriptor, "metadata_blob: ");
    assert_eq!(segment.state(), SegmentState::Client);
    assert!(file_names(&daemon.output).is_empty());
}
