//! The shared save-semantics vectors (tests/vectors/save_cases.json) run through the real daemon: paths,
//! gate decisions and scores, decoded pixels, and metadata read back the way ComfyUI reads it.

use std::path::{Path, PathBuf};

use luna_daemon::protocol::{
    ErrorCode, ImageDescriptor, ImageFormat, ImageState, JobMetadata, QualityGate, Request, Response, SampleType, Slot,
    SubmitJob,
};
use luna_daemon::shm::{HEADER_LEN, SegmentWriter};
use serde_json::Value;

use crate::readers::{exif_ascii_entries, exif_user_comment, jpeg_exif, png_text, webp_exif};
use crate::support::{RawConn, TestDaemon, file_names};

fn vectors() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/save_cases.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// An image generated from a vector spec: the samples to submit and the u8 pixels expected back.
struct Generated {
    width: u32,
    height: u32,
    channels: u8,
    submit: Submitted,
    expected: Vec<u8>,
}

enum Submitted {
    U8(Vec<u8>),
    F32(Vec<f32>),
}

/// Ports of the generators in tests/vectors/README.md.
fn generate(spec: &Value) -> Generated {
    let (w, h, c) =
        (spec["width"].as_u64().unwrap(), spec["height"].as_u64().unwrap(), spec["channels"].as_u64().unwrap());
    let coords = || (0..h).flat_map(move |y| (0..w).flat_map(move |x| (0..c).map(move |ch| (x, y, ch))));
    let kind = spec["kind"].as_str().unwrap();
    let (submit, expected) = match kind {
        "float_ramp" => {
            let f: Vec<f32> = coords().map(|(x, y, ch)| ((x + 2 * y + 3 * ch) % 97) as f32 / 80.0 - 0.1).collect();
            let e = f.iter().map(|v| (255.0f32 * v).clamp(0.0, 255.0) as u8).collect();
            (Submitted::F32(f), e)
        }
        _ => {
            let u: Vec<u8> = match kind {
                "flat" => vec![spec["value"].as_u64().unwrap() as u8; (w * h * c) as usize],
                "pattern" => coords().map(|(x, y, ch)| ((x * 7 + y * 3 + ch * 50) % 256) as u8).collect(),
                "checker" => coords().map(|(x, y, _)| (((x / 4 + y / 4) % 2) * 255) as u8).collect(),
                "ramp" => coords().map(|(x, _, _)| (x * 255 / (w - 1).max(1)) as u8).collect(),
                "noise" => {
                    let mut state = spec["seed"].as_u64().unwrap();
                    coords()
                        .map(|_| {
                            state = (state * 1_103_515_245 + 12_345) % (1 << 31);
                            ((state >> 16) & 255) as u8
                        })
                        .collect()
                }
                other => panic!("unknown generator {other}"),
            };
            (Submitted::U8(u.clone()), u)
        }
    };
    Generated { width: w as u32, height: h as u32, channels: c as u8, submit, expected }
}

fn str_or(v: &Value, key: &str, default: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or(default).to_owned()
}

fn wire_metadata(v: &Value) -> JobMetadata {
    let pairs = |key: &str| -> Vec<(String, String)> {
        v[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned()))
            .collect()
    };
    JobMetadata {
        prompt: v["prompt"].as_str().map(str::to_owned),
        extra_pnginfo: pairs("extra_pnginfo"),
        generation_metadata: v["generation_metadata"].as_str().map(str::to_owned),
        generation_fields: pairs("generation_fields"),
        custom_metadata: v["custom_metadata"].as_str().map(str::to_owned),
        ..JobMetadata::default()
    }
}

/// The same metadata with the prompt and extra_pnginfo sent as values (the node's raw dicts), which the daemon
/// must format exactly as `json.dumps` did for the expected text.
fn value_metadata(wire: &Value, raw: &Value) -> JobMetadata {
    let to_msgpack = |v: &Value| -> rmpv::Value {
        let bytes = rmp_serde::to_vec(v).unwrap();
        rmpv::decode::read_value(&mut bytes.as_slice()).unwrap()
    };
    let mut meta = wire_metadata(wire);
    if let Some(prompt) = raw.get("prompt").filter(|p| !p.is_null()) {
        meta.prompt = None;
        meta.prompt_value = Some(to_msgpack(prompt));
    }
    if let Some(extra) = raw.get("extra_pnginfo").and_then(Value::as_object) {
        meta.extra_pnginfo.clear();
        meta.extra_pnginfo_values = extra.iter().map(|(k, v)| (k.clone(), to_msgpack(v))).collect();
    }
    meta
}

/// Writes every image of the case into one segment and builds the job the node would send.
fn build_job(
    vectors: &Value,
    job: &Value,
    wire: JobMetadata,
    output: &Path,
    segment: &mut SegmentWriter,
) -> (SubmitJob, Vec<Generated>) {
    let mut generated = Vec::new();
    let mut slots = Vec::new();
    let mut offset = 0usize;
    let data = segment.data_mut().unwrap();
    for slot in job["slots"].as_array().unwrap() {
        let mut images = Vec::new();
        for spec in slot["images"].as_array().unwrap() {
            let g = generate(spec);
            let (bytes, dtype): (Vec<u8>, SampleType) = match &g.submit {
                Submitted::U8(u) => (u.clone(), SampleType::U8),
                Submitted::F32(f) => (f.iter().flat_map(|v| v.to_le_bytes()).collect(), SampleType::F32),
            };
            data[offset..offset + bytes.len()].copy_from_slice(&bytes);
            images.push(ImageDescriptor {
                segment: segment_name(),
                offset: HEADER_LEN + offset as u64,
                length: bytes.len() as u64,
                width: g.width,
                height: g.height,
                channels: g.channels,
                dtype,
                row_stride: bytes.len() as u64 / u64::from(g.height),
                crc32: Some(crc32fast::hash(&bytes)),
            });
            offset = (offset + bytes.len()).next_multiple_of(64);
            generated.push(g);
        }
        let format = match slot["format"].as_str().unwrap() {
            "png" => ImageFormat::Png,
            "webp" => ImageFormat::Webp,
            _ => ImageFormat::Jpeg,
        };
        slots.push(Slot {
            affix: str_or(slot, "affix", ""),
            format,
            subdir: slot["subdir"].as_bool().unwrap(),
            images,
        });
    }
    let gate = match job.get("quality_gate").and_then(Value::as_str).unwrap_or("disabled") {
        "variance" => QualityGate::Variance,
        "edge_density" => QualityGate::EdgeDensity,
        "both" => QualityGate::Both,
        _ => QualityGate::Disabled,
    };
    let submit = SubmitJob {
        save_path: str_or(job, "save_path", ""),
        filename: str_or(job, "filename", "%time:YYYY_mm_dd.HH.MM.SS%_%model_name%"),
        model_name: str_or(job, "model_name", ""),
        filename_index: job.get("filename_index").and_then(Value::as_u64).unwrap_or(0) as u32,
        timestamp_ms: vectors["timestamp_ms"].as_i64(),
        utc_offset_s: vectors["utc_offset_s"].as_i64().map(|v| v as i32),
        lossless_webp: job.get("lossless_webp").and_then(Value::as_bool).unwrap_or(false),
        quality_gate: gate,
        min_quality_threshold: job.get("min_quality_threshold").and_then(Value::as_f64).unwrap_or(0.3),
        embed_metadata: job.get("embed_metadata").and_then(Value::as_bool).unwrap_or(true),
        metadata: Some(wire),
        ..SubmitJob::new(output.to_string_lossy(), slots)
    };
    (submit, generated)
}

fn segment_name() -> String {
    "vectors".to_owned()
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum::<f64>() / a.len() as f64;
    if mse == 0.0 { f64::INFINITY } else { 10.0 * (255.0f64 * 255.0 / mse).log10() }
}

/// Decodes a file into samples with the given channel count (gray WebP decodes as RGB; JPEG drops alpha).
fn decoded(path: &Path, channels: u8) -> Vec<u8> {
    let img = image::open(path).unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
    match channels {
        1 => img.to_luma8().into_raw(),
        3 => img.to_rgb8().into_raw(),
        _ => img.to_rgba8().into_raw(),
    }
}

fn check_pixels(path: &Path, g: &Generated, lossless_webp: bool) {
    let ext = path.extension().unwrap().to_str().unwrap();
    let lossless = ext == "png" || (ext == "webp" && lossless_webp);
    let channels = if ext == "jpg" && g.channels == 4 { 3 } else { g.channels };
    let expected: Vec<u8> = if channels == g.channels {
        g.expected.clone()
    } else {
        g.expected.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect()
    };
    let got = decoded(path, channels);
    if lossless {
        assert!(got == expected, "{} does not decode to the submitted pixels", path.display());
    } else {
        let p = psnr(&got, &expected);
        assert!(p > 28.0, "{}: PSNR {p:.1} dB is too low for quality 90", path.display());
    }
}

fn check_metadata(path: &Path, expected: &Value) {
    let bytes = std::fs::read(path).unwrap();
    match path.extension().unwrap().to_str().unwrap() {
        "png" => {
            let want: Vec<(String, String)> = expected["png_text"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap().to_owned(), p[1].as_str().unwrap().to_owned()))
                .collect();
            assert_eq!(png_text(&bytes), want, "{}", path.display());
        }
        ext => {
            let exif = if ext == "webp" { webp_exif(&bytes) } else { jpeg_exif(&bytes) };
            match expected["exif"].as_object() {
                None => assert!(exif.is_none(), "{} should carry no EXIF", path.display()),
                Some(want) => {
                    let exif = exif.unwrap_or_else(|| panic!("{} has no EXIF", path.display()));
                    let entries = exif_ascii_entries(&exif);
                    let want: std::collections::BTreeMap<String, String> =
                        want.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect();
                    assert_eq!(entries, want, "{}", path.display());
                    assert_eq!(exif_user_comment(&exif).as_deref(), expected["user_comment"].as_str());
                }
            }
        }
    }
}

#[test]
fn every_shared_vector_saves_as_specified() {
    let v = vectors();
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    let cases = v["cases"].as_array().unwrap();
    for (case, as_values) in cases.iter().map(|c| (c, false)).chain(cases.iter().map(|c| (c, true))) {
        let name = case["name"].as_str().unwrap();
        let output = daemon.dir.path().join(if as_values { "values" } else { "text" }).join(name);
        let mut segment = SegmentWriter::create(&daemon.spool, &segment_name(), 1 << 20).unwrap();
        let metadata = if as_values {
            value_metadata(&case["wire_metadata"], &case["job"]["metadata"])
        } else {
            wire_metadata(&case["wire_metadata"])
        };
        let (job, generated) = build_job(&v, &case["job"], metadata, &output, &mut segment);
        let lossless_webp = job.lossless_webp;
        let Response::Accepted(accepted) = conn.request(&Request::Submit(Box::new(job))) else {
            panic!("{name}: not accepted")
        };
        let mut client = daemon.client();
        let status = client.wait(&accepted.job_id, |_| {}).unwrap();
        drop(segment);
        let expected_files: Vec<&str> = case["files"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        let got_files: Vec<String> = status
            .images
            .iter()
            .map(|i| {
                let p = PathBuf::from(i.path.as_deref().unwrap_or_else(|| panic!("{name}: {i:?}")));
                let relative = p.strip_prefix(&output).unwrap().to_string_lossy().into_owned();
                // The vectors spell paths with `/`; the daemon reports native ones (on Windows `\` only: a `/`
                // from a template such as `%model_dir%/x` must not leak into a path shown to the user).
                if cfg!(windows) {
                    assert!(!relative.contains('/'), "{name}: mixed separators in {}", p.display());
                }
                relative.replace(std::path::MAIN_SEPARATOR, "/")
            })
            .collect();
        assert_eq!(got_files, expected_files, "{name}");
        for ((image, want), g) in status.images.iter().zip(case["images"].as_array().unwrap()).zip(&generated) {
            let state = match image.state {
                ImageState::Written => "written",
                ImageState::Discarded => "discarded",
                other => panic!("{name}: image {} is {other:?}: {:?}", image.index, image.error),
            };
            assert_eq!(state, want["state"].as_str().unwrap(), "{name} image {}", image.index);
            match want["scores"].as_object() {
                None => assert!(image.scores.is_none(), "{name}"),
                Some(scores) => {
                    let got = image.scores.unwrap();
                    for (key, value) in scores {
                        let ours = if key == "variance" { got.variance } else { got.edge_density }.unwrap();
                        assert!((ours - value.as_f64().unwrap()).abs() < 1e-9, "{name} {key}: {ours} vs {value}");
                    }
                }
            }
            let sum: u64 = g.expected.iter().map(|&b| u64::from(b)).sum();
            assert_eq!(sum, want["u8_pixels_sha_hint"].as_u64().unwrap(), "{name}: generator port differs");
            let path = Path::new(image.path.as_deref().unwrap());
            check_pixels(path, g, lossless_webp);
            check_metadata(path, want);
        }
    }
}

#[test]
fn every_refused_vector_is_refused_and_writes_nothing() {
    let v = vectors();
    let daemon = TestDaemon::start();
    let mut conn = RawConn::handshaken(&daemon.socket);
    let mut segment = SegmentWriter::create(&daemon.spool, &segment_name(), 1 << 20).unwrap();
    let output = daemon.dir.path().join("refused");
    for case in v["refused"].as_array().unwrap() {
        let mut job = case["job"].clone();
        job["slots"] = serde_json::json!([{"affix": "ORIG", "format": "png", "subdir": true,
            "images": [{"kind": "pattern", "width": 4, "height": 4, "channels": 3}]}]);
        let (submit, _) = build_job(&v, &job, JobMetadata::default(), &output, &mut segment);
        match conn.request(&Request::Submit(Box::new(submit))) {
            Response::Error(e) => {
                assert_eq!(e.code, ErrorCode::InvalidJob, "{job}: {e:?}");
                assert!(e.message.contains("not allowed") || e.message.contains("absolute"), "{job}: {}", e.message);
            }
            other => panic!("{job} was not refused: {other:?}"),
        }
    }
    assert!(file_names(&output).is_empty(), "nothing may be written: {:?}", file_names(&output));
    assert!(!daemon.dir.path().join("x").exists() && !Path::new("/etc/x").exists());
}
