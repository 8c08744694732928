//! `comfyui/luna_multi_saver/constants.json` (issue 12.1) is the one place for the facts that the daemon, the
//! Python client and the docs all state. The node pack builds its constants and job options from it; this module
//! checks the Rust code against it, so a change on either side without the other fails here.

use std::collections::BTreeMap;

use luna_daemon::client::INLINE_METADATA_LIMIT;
use luna_daemon::config::{Config, Settings};
use luna_daemon::protocol::{self, ErrorCode, Request, SubmitJob, decode_message};
use luna_daemon::shm::{self, SegmentWriter};
use serde_json::{Value, json};

fn constants() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/comfyui/luna_multi_saver/constants.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn uint(value: &Value) -> u64 {
    value.as_u64().unwrap_or_else(|| panic!("{value} is not an unsigned integer"))
}

#[test]
fn protocol_constants_match() {
    let c = constants();
    let p = &c["protocol"];
    assert_eq!(p["name"], protocol::PROTOCOL_NAME);
    assert_eq!(uint(&p["version"]), u64::from(protocol::PROTOCOL_VERSION));
    assert_eq!(uint(&p["max_frame_len"]), u64::from(protocol::MAX_FRAME_LEN));
    assert_eq!(uint(&p["max_nesting_depth"]), protocol::MAX_NESTING_DEPTH as u64);
    assert_eq!(uint(&c["metadata"]["inline_max_bytes"]), INLINE_METADATA_LIMIT as u64, "the Rust client's threshold");
}

#[test]
fn segment_layout_matches() {
    let c = constants();
    let s = &c["segment"];
    assert_eq!(s["magic"].as_str().unwrap().as_bytes(), shm::MAGIC);
    assert_eq!(uint(&s["header_version"]), u64::from(shm::HEADER_VERSION));
    assert_eq!(uint(&s["header_len"]), shm::HEADER_LEN);
    assert_eq!(uint(&s["flag_detached"]), u64::from(shm::flags::DETACHED));
    let max_name = uint(&s["max_name_len"]) as usize;
    assert!(shm::validate_name(&"a".repeat(max_name)).is_ok());
    assert!(shm::validate_name(&"a".repeat(max_name + 1)).is_err());

    // The offsets the Python client writes and reads, as the Rust writer lays them out in a real segment file.
    let dir = tempfile::tempdir().unwrap();
    let segment = SegmentWriter::create(dir.path(), "constants-1", 64).unwrap();
    let bytes = std::fs::read(segment.path()).unwrap();
    let at = |key: &str| uint(&s[key]) as usize;
    assert_eq!(&bytes[..8], shm::MAGIC);
    assert_eq!(bytes[8..12], shm::HEADER_VERSION.to_le_bytes());
    assert_eq!(bytes[at("pid_offset")..at("pid_offset") + 4], std::process::id().to_le_bytes());
    assert_eq!(bytes[at("state_offset")], 0, "a new segment is client-owned");
    assert_eq!(bytes[at("flags_offset")], 0);
    assert_eq!(bytes[at("release_count_offset")..at("release_count_offset") + 8], [0; 8]);
    drop(segment); // detaching sets the DETACHED bit at flags_offset (and unlinks: the client owned it)
}

#[test]
fn daemon_defaults_match() {
    let c = constants();
    let d = &c["daemon_defaults"];
    let config = Config::from_settings(Settings::default()).unwrap();
    assert_eq!(uint(&d["max_connections"]), config.max_connections as u64);
    assert_eq!(uint(&d["queue_budget_mib"]) << 20, config.queue_budget_bytes);
    assert_eq!(uint(&d["busy_wait_ms"]), config.busy_wait.as_millis() as u64);
    assert_eq!(uint(&d["job_retention_s"]), config.job_retention.as_secs());
    assert_eq!(uint(&d["orphan_grace_s"]), config.orphan_grace.as_secs());
    assert_eq!(uint(&d["janitor_interval_s"]), config.janitor_interval.as_secs());
}

#[test]
fn output_folder_names_and_thumbnail_quality_match() {
    // The local save (comfyui/luna_multi_saver/local_save.py, local_extras.py) writes what the daemon writes.
    let c = constants();
    let o = &c["outputs"];
    assert_eq!(o["discarded_dir"], luna_daemon::jobs::DISCARD_DIR);
    assert_eq!(o["thumbnail_dir"], luna_daemon::jobs::THUMBNAIL_DIR);
    assert_eq!(uint(&o["thumbnail_quality"]), u64::from(luna_daemon::encode::THUMBNAIL_QUALITY));
    let sizes = luna_daemon::encode::THUMBNAIL_SIZES;
    assert_eq!(
        (uint(&o["thumbnail_sizes"][0]), uint(&o["thumbnail_sizes"][1])),
        (u64::from(*sizes.start()), u64::from(*sizes.end()))
    );
}

#[test]
fn error_codes_match_and_none_is_missing() {
    let c = constants();
    let listed: BTreeMap<u16, &str> = c["error_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (uint(&e["code"]) as u16, e["name"].as_str().unwrap()))
        .collect();
    for n in 0..=1000u16 {
        let code = ErrorCode::from(n);
        match listed.get(&n) {
            Some(name) => assert_eq!(code.name(), *name, "code {n}"),
            None => assert_eq!(code, ErrorCode::Unknown(n), "code {n} exists in Rust but not in constants.json"),
        }
    }
}

/// A `submit` with only the required fields and `overrides`, decoded as the daemon decodes a frame.
fn decode_job(overrides: &[(&str, Value)]) -> Result<SubmitJob, String> {
    let mut map = json!({"type": "submit", "output_dir": "/out", "slots": []});
    for (key, value) in overrides {
        map[*key] = value.clone();
    }
    let body = rmp_serde::to_vec_named(&map).unwrap();
    match decode_message::<Request>(&body).map_err(|e| e.to_string())? {
        Request::Submit(job) => Ok(*job),
        other => panic!("not a submit: {other:?}"),
    }
}

/// Every field of `SubmitJob` that is a job option (not the slots, the metadata or the submission id).
fn option_fields(job: &SubmitJob) -> Vec<(String, Value)> {
    let Value::Object(map) = serde_json::to_value(job).unwrap() else { unreachable!() };
    let not_options = ["metadata", "metadata_blob", "slots", "submit_id"];
    map.into_iter().filter(|(k, _)| !not_options.contains(&k.as_str())).collect()
}

#[test]
fn job_options_are_submit_jobs_fields_with_their_defaults() {
    let c = constants();
    let described = c["job_options"].as_array().unwrap();
    let job = decode_job(&[]).unwrap();
    let fields = option_fields(&job);
    let names: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
    let described_names: Vec<&str> = described.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, described_names, "SubmitJob's options and constants.json's job_options, in order");
    for ((name, value), option) in fields.iter().zip(described) {
        match option.get("default") {
            Some(default) => assert_eq!(value, default, "default of {name}"),
            None => assert!(decode_job(&[(name, Value::Null)]).is_err(), "{name} is required"),
        }
    }
}

#[test]
fn job_options_have_their_described_wire_types() {
    let c = constants();
    for option in c["job_options"].as_array().unwrap() {
        let name = option["name"].as_str().unwrap();
        let wire_type = option["type"].as_str().unwrap();
        let (base, nullable) = match wire_type.strip_suffix(" or nil") {
            Some(base) => (base, true),
            None => (wire_type, false),
        };
        assert_eq!(decode_job(&[(name, Value::Null)]).is_ok(), nullable, "{name}: nil accepted iff '{wire_type}'");
        let (fits, too_big): (Value, Value) = match base {
            "u8" => (json!(u8::MAX), json!(u64::from(u8::MAX) + 1)),
            "u32" => (json!(u32::MAX), json!(u64::from(u32::MAX) + 1)),
            "i32" => (json!(i32::MIN), json!(i64::from(i32::MIN) - 1)),
            "i64" => (json!(i64::MIN), json!(i64::MAX as u64 + 1)),
            "f64" => (json!(0.5), json!("0.5")),
            "bool" => (json!(true), json!(1)),
            "str" => (json!("x"), json!(1)),
            "enumerated str" => {
                let values = option["values"].as_array().unwrap();
                for value in values {
                    assert!(decode_job(&[(name, value.clone())]).is_ok(), "{name} = {value}");
                }
                (values[0].clone(), json!("not-a-value"))
            }
            other => panic!("{name}: unknown wire type {other:?} in constants.json"),
        };
        assert!(decode_job(&[(name, fits.clone())]).is_ok(), "{name} = {fits}");
        assert!(decode_job(&[(name, too_big.clone())]).is_err(), "{name} = {too_big} must be refused");
    }
}
