//! The checked-in MessagePack fixtures of protocol version 1 (`tests/fixtures/protocol/`, written by an
//! independent Python implementation of `docs/PROTOCOL.md`) decode to exactly the documented values, with
//! defaults applied for absent fields and unknown fields ignored, and survive an encode/decode round trip.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use luna_daemon::encode::pyjson;
use serde_json::Value;

use luna_daemon::protocol::{
    ClientStats, ErrorCode, ImageDescriptor, ImageFormat, ImageState, QualityGate, Request, Response, SampleType,
    decode_message, encode_message,
};

/// Every fixture file this module checks; a `.msgpack` file in the folder that is not listed here fails
/// `every_fixture_is_checked`.
const FIXTURES: [&str; 31] = [
    "hello",
    "welcome",
    "welcome_features",
    "submit",
    "submit_minimal",
    "submit_blob",
    "submit_metadata_values",
    "status_request",
    "stats_request",
    "stop_request",
    "accepted",
    "status_reply",
    "stats_reply",
    "stopping",
    "error_version_mismatch",
    "error_unknown_job",
    "cancel_request",
    "cancelled",
    "status_retrying",
    "submit_batch",
    "submit_deep",
    "submit_avif",
    "batch_status_request",
    "batch_status_reply",
    "submit_thumbnails",
    "status_thumbnail",
    "submit_s3",
    "status_s3",
    "submit_zip",
    "batch_status_zip",
    "submit_jxl",
];

const JOB_ID: &str = "3f9a1c0b7d2e";
const OUTPUT_DIR: &str = "/home/user/ComfyUI/output";
const SEGMENT: &str = "comfyuinode-4242-0";
const F32_ROW: u64 = 1024 * 3 * 4;
const F32_IMAGE: u64 = F32_ROW * 1024;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/protocol")
}

fn read_fixture(name: &str) -> Vec<u8> {
    let path = fixture_dir().join(format!("{name}.msgpack"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Decodes a request fixture and checks that re-encoding it decodes to the same value.
fn request(name: &str) -> Request {
    let decoded: Request = decode_message(&read_fixture(name))
        .unwrap_or_else(|e| panic!("{name}.msgpack does not decode as a request: {e}"));
    let again: Request = decode_message(&encode_message(&decoded).unwrap()).unwrap();
    assert_eq!(again, decoded, "{name}.msgpack: round trip changed the request");
    decoded
}

/// Decodes a reply fixture and checks that re-encoding it decodes to the same value.
fn response(name: &str) -> Response {
    let decoded: Response = decode_message(&read_fixture(name))
        .unwrap_or_else(|e| panic!("{name}.msgpack does not decode as a reply: {e}"));
    let again: Response = decode_message(&encode_message(&decoded).unwrap()).unwrap();
    assert_eq!(again, decoded, "{name}.msgpack: round trip changed the reply");
    decoded
}

#[allow(clippy::too_many_arguments)]
fn assert_descriptor(
    d: &ImageDescriptor,
    segment: &str,
    offset: u64,
    length: u64,
    (width, height, channels): (u32, u32, u8),
    dtype: SampleType,
    row_stride: u64,
    crc32: Option<u32>,
) {
    assert_eq!(d.segment, segment);
    assert_eq!(d.offset, offset);
    assert_eq!(d.length, length);
    assert_eq!(d.width, width);
    assert_eq!(d.height, height);
    assert_eq!(d.channels, channels);
    assert_eq!(d.dtype, dtype);
    assert_eq!(d.row_stride, row_stride);
    assert_eq!(d.crc32, crc32);
}

#[test]
fn every_fixture_is_checked() {
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".msgpack").map(str::to_owned))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = FIXTURES.iter().map(|s| (*s).to_owned()).collect();
    listed.sort();
    assert_eq!(on_disk, listed);
}

#[test]
fn hello() {
    let Request::Hello(h) = request("hello") else { panic!("not a hello") };
    assert_eq!(h.protocol, "luna-daemon");
    assert_eq!(h.protocol, luna_daemon::protocol::PROTOCOL_NAME);
    assert_eq!(h.version, 1);
    assert_eq!(h.version, luna_daemon::protocol::PROTOCOL_VERSION);
    assert_eq!(h.client, "comfyui-node/0.1.0");
    assert_eq!(h.pid, Some(4242));
}

#[test]
fn welcome() {
    let Response::Welcome(w) = response("welcome") else { panic!("not a welcome") };
    assert_eq!(w.version, 1);
    assert_eq!(w.daemon_version, "0.1.0");
    assert_eq!(w.spool_dir, "/dev/shm/luna-daemon-1000");
    assert_eq!(w.max_frame_len, 1_048_576);
    assert_eq!(w.max_frame_len, luna_daemon::protocol::MAX_FRAME_LEN);
    assert_eq!(w.segment_header_len, 64);
    assert_eq!(w.segment_header_len, luna_daemon::shm::HEADER_LEN);
}

#[test]
fn submit_with_every_field_two_slots_checksums_and_inline_metadata() {
    let Request::Submit(job) = request("submit") else { panic!("not a submit") };
    assert_eq!(job.output_dir, OUTPUT_DIR);
    assert_eq!(job.save_path, "%model_dir%/portraits");
    assert_eq!(job.filename, "%time:YYYY_mm_dd.HH.MM.SS%_%model_name%");
    assert_eq!(job.model_name, "Illustrious/3DCG/foo_v60.safetensors");
    assert_eq!(job.filename_index, 7);
    assert_eq!(job.timestamp_ms, Some(1_764_253_132_123));
    assert_eq!(job.utc_offset_s, Some(-18_000));
    assert_eq!(job.png_compression, 6);
    assert_eq!(job.lossy_quality, 85);
    assert!(job.lossless_webp);
    assert_eq!(job.quality_gate, QualityGate::Both);
    assert_eq!(job.min_quality_threshold, 0.45);
    assert!(job.embed_metadata);
    assert_eq!(job.metadata_blob, None);
    assert_eq!(job.submit_id.as_deref(), Some("7b0e6c1e-4f7a-4d0c-9a53-2f4c8e9d1a66"));

    let meta = job.metadata.as_ref().expect("inline metadata");
    assert_eq!(
        meta.prompt.as_deref(),
        Some(r#"{"3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 30}}}"#)
    );
    assert_eq!(
        meta.extra_pnginfo,
        [
            ("workflow".to_owned(), r#"{"last_node_id": 9, "nodes": []}"#.to_owned()),
            ("comment".to_owned(), r#""made with luna""#.to_owned()),
        ]
    );
    assert_eq!(meta.generation_metadata.as_deref(), Some(r#"{"seed": 42, "steps": 30, "sampler": "euler"}"#));
    let fields: Vec<(&str, &str)> = meta.generation_fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(fields, [("seed", "42"), ("steps", "30"), ("sampler", "euler")]);
    assert_eq!(meta.custom_metadata.as_deref(), Some("portrait series, take 3"));

    assert_eq!(job.slots.len(), 2);
    let orig = &job.slots[0];
    assert_eq!(orig.affix, "ORIG");
    assert_eq!(orig.format, ImageFormat::Png);
    assert!(orig.subdir);
    assert_eq!(orig.images.len(), 2);
    let square = (1024, 1024, 3);
    assert_descriptor(&orig.images[0], SEGMENT, 64, F32_IMAGE, square, SampleType::F32, F32_ROW, Some(0x1D2C_3B4A));
    assert_descriptor(
        &orig.images[1],
        SEGMENT,
        64 + F32_IMAGE,
        F32_IMAGE,
        square,
        SampleType::F32,
        F32_ROW,
        Some(0xFFFF_FFFF),
    );

    let upscaled = &job.slots[1];
    assert_eq!(upscaled.affix, "UPSCALED");
    assert_eq!(upscaled.format, ImageFormat::Webp);
    assert!(!upscaled.subdir);
    assert_eq!(upscaled.images.len(), 1);
    assert_descriptor(
        &upscaled.images[0],
        SEGMENT,
        64 + 2 * F32_IMAGE,
        8256 * 2047 + 2048 * 4,
        (2048, 2048, 4),
        SampleType::U8,
        8256,
        None,
    );
}

#[test]
fn submit_minimal_takes_the_documented_defaults() {
    let Request::Submit(job) = request("submit_minimal") else { panic!("not a submit") };
    assert_eq!(job.output_dir, "/tmp/luna-out");
    assert_eq!(job.save_path, "");
    assert_eq!(job.filename, "luna");
    assert_eq!(job.model_name, "");
    assert_eq!(job.filename_index, 0);
    assert_eq!(job.timestamp_ms, None);
    assert_eq!(job.utc_offset_s, None);
    assert_eq!(job.png_compression, 4);
    assert_eq!(job.lossy_quality, 90);
    assert!(!job.lossless_webp);
    assert_eq!(job.quality_gate, QualityGate::Disabled);
    assert_eq!(job.min_quality_threshold, 0.3);
    assert!(job.embed_metadata);
    assert_eq!(job.metadata, None);
    assert_eq!(job.metadata_blob, None);
    assert_eq!(job.submit_id, None);
    assert_eq!(job.slots.len(), 1);
    let slot = &job.slots[0];
    assert_eq!(slot.affix, "");
    assert_eq!(slot.format, ImageFormat::Png);
    assert!(!slot.subdir);
    assert_eq!(slot.images.len(), 1);
    assert_descriptor(&slot.images[0], "luna-77-0", 64, 24, (2, 1, 3), SampleType::F32, 24, None);
}

#[test]
fn submit_blob_carries_metadata_in_a_segment() {
    let Request::Submit(job) = request("submit_blob") else { panic!("not a submit") };
    assert_eq!(job.output_dir, OUTPUT_DIR);
    assert_eq!(job.save_path, "scans");
    assert_eq!(job.filename, "page");
    assert_eq!(job.png_compression, 9);
    assert!(job.embed_metadata);
    assert_eq!(job.metadata, None);
    let blob = job.metadata_blob.as_ref().expect("metadata_blob");
    assert_eq!(blob.segment, "comfyuinode-4242-1");
    assert_eq!(blob.offset, 64);
    assert_eq!(blob.length, 183_457);
    assert_eq!(blob.crc32, Some(0x0BAD_F00D));
    // Absent fields still take their defaults.
    assert_eq!(job.lossy_quality, 90);
    assert_eq!(job.quality_gate, QualityGate::Disabled);
    assert_eq!(job.slots.len(), 1);
    let slot = &job.slots[0];
    assert_eq!(slot.affix, "FINAL");
    assert_eq!(slot.format, ImageFormat::Png);
    assert!(slot.subdir);
    assert_eq!(slot.images.len(), 1);
    assert_descriptor(
        &slot.images[0],
        SEGMENT,
        128,
        1024 * 767 + 500 * 2,
        (500, 768, 1),
        SampleType::U16,
        1024,
        Some(0),
    );
}

#[test]
fn status_stats_and_stop_requests() {
    let Request::Status(q) = request("status_request") else { panic!("not a status request") };
    assert_eq!(q.job_id, JOB_ID);
    assert!(matches!(request("stats_request"), Request::Stats(_)));
    assert!(matches!(request("stop_request"), Request::Stop(_)));
}

#[test]
fn accepted() {
    let Response::Accepted(a) = response("accepted") else { panic!("not accepted") };
    assert_eq!(a.job_id, JOB_ID);
    assert_eq!(a.images, 3);
}

#[test]
fn status_reply_with_written_discarded_and_failed_images() {
    let Response::Status(s) = response("status_reply") else { panic!("not a status reply") };
    let base = "/home/user/ComfyUI/output/Illustrious/3DCG/portraits";
    let stem = "2025_11_27.09.18.52_foo_v60";
    assert_eq!(s.job_id, JOB_ID);
    assert!(s.finished);
    assert!(s.segments_released);
    assert_eq!(s.images.len(), 3);

    let written = &s.images[0];
    assert_eq!((written.index, written.slot, written.batch_index), (0, 0, 0));
    assert_eq!(written.state, ImageState::Written);
    assert!(written.state.is_final());
    assert_eq!(written.path.as_deref(), Some(format!("{base}/ORIG/{stem}_ORIG_0.png").as_str()));
    assert_eq!(written.bytes, Some(1_834_122));
    assert_eq!(written.error, None);
    let scores = written.scores.expect("scores of the written image");
    assert_eq!(scores.variance, Some(0.8213));
    assert_eq!(scores.edge_density, Some(0.612));
    assert!(written.notes.is_empty());

    let discarded = &s.images[1];
    assert_eq!((discarded.index, discarded.slot, discarded.batch_index), (1, 0, 1));
    assert_eq!(discarded.state, ImageState::Discarded);
    assert_eq!(discarded.path.as_deref(), Some(format!("{base}/_discarded/ORIG/{stem}_ORIG_1_00001.png").as_str()));
    assert_eq!(discarded.bytes, Some(402_311));
    assert_eq!(discarded.error, None);
    let scores = discarded.scores.expect("scores of the discarded image");
    assert_eq!(scores.variance, Some(0.0412));
    assert_eq!(scores.edge_density, None);
    assert_eq!(discarded.notes, ["quality gate variance: score 0.0412 is below the threshold 0.45"]);

    let failed = &s.images[2];
    assert_eq!((failed.index, failed.slot, failed.batch_index), (2, 1, 0));
    assert_eq!(failed.state, ImageState::Failed);
    assert_eq!(failed.path, None);
    assert_eq!(failed.bytes, None);
    assert_eq!(failed.scores, None);
    assert!(failed.notes.is_empty());
    let error = failed.error.as_ref().expect("a failed image carries its error");
    assert_eq!(error.code, ErrorCode::SaveFailed);
    assert_eq!(error.code.number(), 16);
    assert_eq!(error.name, "save_failed");
    assert_eq!(
        error.message,
        format!("could not write {base}/{stem}_UPSCALED.webp: No space left on device (os error 28)")
    );
    assert!(error.supported_versions.is_empty());
}

/// `counts` is `[jobs, images_pending, images_written, images_failed]`.
fn assert_client(c: &ClientStats, client: &str, pid: Option<u32>, counts: [u64; 4]) {
    assert_eq!(c.client, client);
    assert_eq!(c.pid, pid);
    assert_eq!([c.jobs, c.images_pending, c.images_written, c.images_failed], counts);
}

#[test]
fn stats_reply() {
    let Response::Stats(s) = response("stats_reply") else { panic!("not a stats reply") };
    assert_eq!(s.daemon_version, "0.1.0");
    assert_eq!(s.uptime_s, 5231);
    assert_eq!(s.queue_depth, 2);
    assert_eq!(s.bytes_held, 2 * F32_IMAGE);
    assert_eq!(s.workers_alive, 3);
    assert_eq!(s.workers_busy, 2);
    assert_eq!(s.jobs_accepted, 17);
    assert_eq!(s.jobs_done, 14);
    assert_eq!(s.jobs_failed, 1);
    assert_eq!(s.images_written, 40);
    assert_eq!(s.images_failed, 1);
    assert_eq!(s.clients.len(), 2);
    assert_client(&s.clients[0], "comfyui-node/0.1.0", Some(4242), [15, 2, 38, 1]);
    assert_client(&s.clients[1], "luna-cli/0.1.0", None, [2, 0, 2, 0]);
}

#[test]
fn stopping() {
    assert!(matches!(response("stopping"), Response::Stopping(_)));
}

#[test]
fn error_version_mismatch_lists_the_supported_versions() {
    let Response::Error(e) = response("error_version_mismatch") else { panic!("not an error") };
    assert_eq!(e.code, ErrorCode::VersionMismatch);
    assert_eq!(e.code.number(), 3);
    assert_eq!(e.name, "version_mismatch");
    assert_eq!(e.name, e.code.name());
    assert_eq!(
        e.message,
        "client speaks protocol version 2, this daemon (0.1.0) speaks version 1; upgrade the older side"
    );
    assert_eq!(e.supported_versions, [1]);
}

#[test]
fn error_unknown_job() {
    let Response::Error(e) = response("error_unknown_job") else { panic!("not an error") };
    assert_eq!(e.code, ErrorCode::UnknownJob);
    assert_eq!(e.name, "unknown_job");
    assert_eq!(e.message, r#"no job with id "000000000000" (unknown or expired)"#);
    assert!(e.supported_versions.is_empty());
    assert_eq!(e.code.number(), 11);
}

#[test]
fn cancel_request_and_cancelled_reply() {
    let Request::Cancel(q) = request("cancel_request") else { panic!("not a cancel request") };
    assert_eq!(q.job_id, JOB_ID);
    let Response::Cancelled(c) = response("cancelled") else { panic!("not a cancelled reply") };
    assert_eq!(c.job_id, JOB_ID);
    assert_eq!(c.images_cancelled, 2);
}

#[test]
fn status_of_an_unfinished_job_with_a_retrying_image() {
    let Response::Status(s) = response("status_retrying") else { panic!("not a status reply") };
    assert_eq!(s.job_id, JOB_ID);
    assert!(!s.finished);
    assert!(!s.segments_released);
    let states: Vec<ImageState> = s.images.iter().map(|i| i.state).collect();
    assert_eq!(states, [ImageState::Encoding, ImageState::Retrying, ImageState::Queued]);
    assert!(states.iter().all(|state| !state.is_final()));
    for (i, image) in s.images.iter().enumerate() {
        assert_eq!(image.index as usize, i);
        assert_eq!(image.path, None);
        assert_eq!(image.bytes, None);
        assert_eq!(image.scores, None);
    }
    assert_eq!((s.images[1].slot, s.images[1].batch_index), (0, 1));
    assert_eq!((s.images[2].slot, s.images[2].batch_index), (1, 0));
    assert_eq!(s.images[0].error, None);
    assert!(s.images[0].notes.is_empty());
    let error = s.images[1].error.as_ref().expect("a retrying image shows its last error");
    assert_eq!(error.code, ErrorCode::SaveFailed);
    assert_eq!(error.name, "save_failed");
    assert_eq!(
        error.message,
        "could not write /home/user/ComfyUI/output/x_ORIG_1.png: No space left on device (os error 28)"
    );
    assert_eq!(s.images[1].notes, ["attempt 3 failed; retrying in 2.0 s"]);
}

#[test]
fn welcome_with_instance_id_and_features() {
    let Response::Welcome(w) = response("welcome_features") else { panic!("not a welcome") };
    assert_eq!(w.instance_id, "5e0c2a9d7b1f4e83");
    let features = [
        "png",
        "webp",
        "jpeg",
        "templates",
        "quality_gate",
        "metadata_blob",
        "metadata_values",
        "cancel",
        "journal",
        "submit_id",
    ];
    assert_eq!(w.features, features);
    // welcome.msgpack, of the first release, has neither: they default to empty.
    let Response::Welcome(old) = response("welcome") else { panic!("not a welcome") };
    assert_eq!((old.instance_id.as_str(), old.features.len()), ("", 0));
}

#[test]
fn submit_with_metadata_as_values_is_formatted_as_json_dumps() {
    let Request::Submit(job) = request("submit_metadata_values") else { panic!("not a submit") };
    assert_eq!(
        (job.filename.as_str(), job.timestamp_ms, job.utc_offset_s),
        ("values", Some(1_764_253_132_123), Some(3600))
    );
    assert_eq!(job.submit_id.as_deref(), Some("0f8e4c2a-9b7d-4e1f-8a6c-3d5b7e9f1a2c"));
    let meta = job.metadata.as_ref().expect("metadata");
    assert_eq!(meta.prompt, None, "the prompt travels as a value");
    assert!(meta.extra_pnginfo.is_empty(), "extra_pnginfo travels as values");
    assert_eq!(meta.generation_metadata.as_deref(), Some(r#"{"seed": 42}"#));
    assert_eq!(meta.generation_fields, [("seed".to_owned(), "42".to_owned())]);
    // What the daemon embeds: the text Python's json.dumps writes for the same values.
    let text = meta.to_text(pyjson::dumps_msgpack);
    assert_eq!(
        text.prompt.as_deref(),
        Some(r#"{"3": {"class_type": "KSampler", "inputs": {"seed": 42, "cfg": 7.5, "denoise": 1.0}}}"#)
    );
    let workflow = concat!(
        r#"{"last_node_id": 9, "nodes": [{"id": 3, "pos": [10.5, -20.25], "flags": {}, "mode": 0}], "#,
        r#""extra": {"ds": {"scale": 1.1}, "note": "caf\u00e9 \u2713", "group": null, "pinned": false}, "#,
        r#""version": 0.4, "big": 18446744073709551615, "negative": -9007199254740993}"#
    );
    let expected =
        [("workflow".to_owned(), workflow.to_owned()), ("comment".to_owned(), r#""made with luna""#.to_owned())];
    assert_eq!(text.extra_pnginfo, expected);
}

/// Every key path (`submit.slots[].images[].crc32`) of a MessagePack map tree, prefixed by the message type.
fn key_paths(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{prefix}.{key}");
                key_paths(child, &path, out);
                out.insert(path);
            }
        }
        Value::Array(items) => {
            for item in items {
                key_paths(item, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

fn typed_paths(value: &Value) -> BTreeSet<String> {
    let kind = value["type"].as_str().expect("a message with a type").to_owned();
    let mut out = BTreeSet::new();
    key_paths(value, &kind, &mut out);
    out
}

#[test]
fn the_fixtures_cover_every_message_field() {
    // Each fixture decoded into the protocol types and serialised again names every field of every struct it
    // holds (defaults filled in); each such field must be present in some fixture's own bytes.
    let mut in_files = BTreeSet::new();
    let mut in_types = BTreeSet::new();
    for name in FIXTURES {
        let raw: Value = rmp_serde::from_slice(&read_fixture(name)).unwrap();
        in_files.extend(typed_paths(&raw));
        let typed = match decode_message::<Request>(&read_fixture(name)) {
            Ok(request) => serde_json::to_value(&request).unwrap(),
            Err(_) => serde_json::to_value(response(name)).unwrap(),
        };
        in_types.extend(typed_paths(&typed));
    }
    let uncovered: Vec<&String> = in_types.difference(&in_files).collect();
    assert!(uncovered.is_empty(), "message fields no fixture sets: {uncovered:?}");
}

#[test]
fn a_submit_joining_a_batch_group_and_the_batch_status_exchange() {
    let Request::Submit(job) = request("submit_batch") else { panic!("not a submit") };
    assert_eq!(job.batch.as_deref(), Some("night-run_2025.11.27"));
    let Request::Submit(minimal) = request("submit_minimal") else { panic!("not a submit") };
    assert_eq!(minimal.batch, None, "absent: no batch");
    let Request::BatchStatus(q) = request("batch_status_request") else { panic!("not a batch_status request") };
    assert_eq!(q.batch, "night-run_2025.11.27");
    let Response::BatchStatus(b) = response("batch_status_reply") else { panic!("not a batch_status reply") };
    assert_eq!(b.batch, "night-run_2025.11.27");
    assert_eq!(b.jobs, [JOB_ID, "0a1b2c3d4e5f"]);
    assert_eq!((b.images, b.queued, b.encoding, b.retrying), (5, 1, 0, 0));
    assert_eq!((b.written, b.discarded, b.failed, b.bytes), (3, 1, 0, 7_340_032));
    assert_eq!((b.first_accepted_ms, b.last_final_ms), (1_764_201_600_000, Some(1_764_201_641_500)));
    assert!(!b.finished);
}

#[test]
fn a_submit_asking_for_thumbnails_and_a_status_naming_one() {
    let Request::Submit(job) = request("submit_thumbnails") else { panic!("not a submit") };
    assert_eq!((job.thumbnails, job.thumbnail_size), (true, 128));
    let Request::Submit(minimal) = request("submit_minimal") else { panic!("not a submit") };
    assert_eq!((minimal.thumbnails, minimal.thumbnail_size), (false, 256), "the defaults");
    let Response::Status(s) = response("status_thumbnail") else { panic!("not a status reply") };
    let thumbnail = format!("{OUTPUT_DIR}/ORIG/_thumbnails/luna_ORIG.png.webp");
    assert_eq!(s.images[0].thumbnail.as_deref(), Some(thumbnail.as_str()));
    let Response::Status(old) = response("status_reply") else { panic!("not a status reply") };
    assert!(old.images.iter().all(|i| i.thumbnail.is_none()), "absent: none");
}

#[test]
fn a_submit_archiving_its_batch_and_an_archived_batchs_status() {
    let Request::Submit(job) = request("submit_zip") else { panic!("not a submit") };
    assert!(job.zip);
    assert_eq!(job.batch.as_deref(), Some("night-run_2025.11.27"));
    let Request::Submit(minimal) = request("submit_minimal") else { panic!("not a submit") };
    assert!(!minimal.zip, "the default");
    let Response::BatchStatus(b) = response("batch_status_zip") else { panic!("not a batch_status reply") };
    assert!(b.zip && b.finished);
    assert_eq!(b.archive.as_deref(), Some(format!("{OUTPUT_DIR}/night-run_2025.11.27.zip").as_str()));
    assert_eq!((b.archived, b.archive_pending, b.archive_error), (3, 1, None));
    let Response::BatchStatus(old) = response("batch_status_reply") else { panic!("not a batch_status reply") };
    assert_eq!((old.zip, old.archive, old.archived, old.archive_pending), (false, None, 0, 0), "absent: defaults");
}

#[test]
fn a_submit_to_object_storage_and_a_status_naming_the_object() {
    let Request::Submit(job) = request("submit_s3") else { panic!("not a submit") };
    assert_eq!(job.output_dir, "s3://renders/farm1");
    let Response::Status(s) = response("status_s3") else { panic!("not a status reply") };
    assert_eq!(s.images[0].path.as_deref(), Some("s3://renders/farm1/luna_00001.png"));
    assert_eq!(s.images[0].url.as_deref(), Some("http://127.0.0.1:9000/renders/farm1/luna_00001.png"));
    let Response::Status(old) = response("status_reply") else { panic!("not a status reply") };
    assert!(old.images.iter().all(|i| i.url.is_none()), "absent: none");
}

#[test]
fn a_submit_asking_for_16_bit_png_and_half_exr_from_linear_samples() {
    use luna_daemon::protocol::{ExrColorSpace, ImageFormat};
    let Request::Submit(job) = request("submit_deep") else { panic!("not a submit") };
    assert_eq!((job.png_bit_depth, job.exr_bit_depth, job.exr_input_color_space), (16, 16, ExrColorSpace::Linear));
    assert_eq!(job.slots.iter().map(|s| s.format).collect::<Vec<_>>(), [ImageFormat::Png, ImageFormat::Exr]);
    let Request::Submit(minimal) = request("submit_minimal") else { panic!("not a submit") };
    assert_eq!(
        (minimal.png_bit_depth, minimal.exr_bit_depth, minimal.exr_input_color_space),
        (8, 32, ExrColorSpace::Srgb),
        "the defaults"
    );
}

#[test]
fn a_submit_asking_for_avif_at_its_own_quality_speed_and_depth() {
    use luna_daemon::protocol::ImageFormat;
    let Request::Submit(job) = request("submit_avif") else { panic!("not a submit") };
    assert_eq!((job.avif_quality, job.avif_speed, job.avif_bit_depth), (55, 9, 8));
    assert_eq!(
        job.slots.iter().map(|s| (s.format, s.affix.as_str())).collect::<Vec<_>>(),
        [(ImageFormat::Avif, "SMALL")]
    );
    let Request::Submit(minimal) = request("submit_minimal") else { panic!("not a submit") };
    assert_eq!((minimal.avif_quality, minimal.avif_speed, minimal.avif_bit_depth), (80, 6, 10), "the defaults");
}

#[test]
fn a_submit_asking_for_16_bit_jpeg_xl() {
    let Request::Submit(job) = request("submit_jxl") else { panic!("not a submit") };
    assert_eq!(job.jxl_bit_depth, 16);
    assert_eq!((job.slots[0].format, job.slots[0].format.extension()), (ImageFormat::Jxl, "jxl"));
    let Request::Submit(minimal) = request("submit_minimal") else { panic!("not a submit") };
    assert_eq!(minimal.jxl_bit_depth, 8, "the default");
}
