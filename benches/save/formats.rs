//! The formats section: every format the daemon writes, through the public `luna_daemon::encode` API, against
//! what a ComfyUI user without the daemon gets for it at the same settings (scripts/bench_formats.py: Pillow and
//! its plugins for the 8-bit formats, the node's local fallback for 16-bit PNG and EXR), on the generated image
//! and a few photos of the corpus (scripts/bench_corpus.py's formats.json, one of them upscaled in float32).
//! Interleaved as in the corpus section: per image and case, the Pillow process first, then this one; both the
//! median process CPU time of encoding into memory. A case either side cannot run here (a format not built into
//! this version, a missing plugin) is a row that says why, never a failed run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use luna_daemon::encode::{AvifOptions, ExrInput, Format, Pixels, encode, encode_pixels};

use super::corpus::{Pillow, read_npy};
use super::{Json, Opts, median};

/// One format at one setting. `name` is the key shared with scripts/bench_formats.py (its CASES: same settings);
/// `format` is None where this version of the crate has no such encoder; `deep` formats get the samples as
/// loaded (float32 or 8-bit), the others the 8-bit image converted as the daemon does.
struct Case {
    name: &'static str,
    label: &'static str,
    format: Option<Format>,
    deep: bool,
}

fn cases() -> Vec<Case> {
    let case = |name, label, format, deep| Case { name, label, format, deep };
    vec![
        case("jpeg_q90", "JPEG q90", Some(Format::Jpeg { quality: 90 }), false),
        case("webp_q90", "WebP lossy q90", Some(Format::Webp { lossless: false, quality: 90 }), false),
        case("webp_lossless", "WebP lossless", Some(Format::Webp { lossless: true, quality: 90 }), false),
        case("png16_l4", "PNG 16-bit, level 4", Some(Format::Png16 { compression: 4 }), true),
        case("exr32", "EXR 32-bit float", Some(Format::Exr { half: false, input: ExrInput::Srgb }), true),
        case("exr16", "EXR 16-bit half", Some(Format::Exr { half: true, input: ExrInput::Srgb }), true),
        case(
            "avif_q80_s6",
            "AVIF 8-bit q80 speed 6 (4:4:4)",
            Some(Format::Avif(AvifOptions { quality: 80, speed: 6, ten_bit: false })),
            false,
        ),
        case("jxl_lossless", "JPEG XL lossless (8-bit)", Some(Format::Jxl { sixteen: false }), false),
        // No lossy JPEG XL encoder in the daemon (docs/ARCHITECTURE.md says why): a row that says so.
        case("jxl_q90", "JPEG XL lossy q90", None, false),
    ]
}

/// Why our side has no encoder for a case.
const NOT_BUILT: &str = "not in this version of luna_daemon::encode";

/// Repeat at least `min_reps` times, fast encodes until ~150 ms were measured (at most 15 times).
fn more(samples: &[f64], min_reps: usize) -> bool {
    samples.len() < min_reps || (samples.len() < 15 && samples.iter().sum::<f64>() < 150.0)
}

/// CPU time of the whole process in ms (an encoder with helper threads is counted in full); 0 where unavailable.
fn process_cpu_ms() -> f64 {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
        t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
    }
    #[cfg(not(target_os = "linux"))]
    0.0
}

/// The images: the generated one (float32, as submitted by a node) and formats.json of the corpus.
fn images(opts: &Opts) -> Vec<(String, String, PathBuf)> {
    let mut out =
        vec![("generated_1024".to_owned(), "generated (float32)".to_owned(), opts.out.join("image_1024_f32.npy"))];
    if let Some(dir) = &opts.corpus {
        let text = std::fs::read_to_string(dir.join("formats.json")).expect("corpus formats.json");
        let list: Vec<serde_json::Value> = serde_json::from_str(&text).expect("formats.json is a JSON list");
        for item in list {
            let field = |k: &str| item[k].as_str().unwrap_or_else(|| panic!("formats.json: {k}")).to_owned();
            out.push((field("name"), field("class"), dir.join(field("file"))));
        }
    }
    out
}

/// Our median CPU ms and bytes, or why not.
fn ours(case: &Case, pixels: &Pixels, min_reps: usize) -> Result<(f64, usize), String> {
    let format = case.format.ok_or_else(|| NOT_BUILT.to_owned())?;
    let image8 = pixels.image8().into_owned(); // the worker converts while reading the segment: not timed
    let mut buf = Vec::new();
    let run = |buf: &mut Vec<u8>| {
        buf.clear();
        let result = if case.deep {
            encode_pixels(pixels, format, None, &mut *buf)
        } else {
            encode(&image8, format, None, &mut *buf)
        };
        result.map(|_| ()).map_err(|e| format!("encode failed: {e}"))
    };
    run(&mut buf)?; // warm-up
    let mut cpu = Vec::new();
    while more(&cpu, min_reps) {
        let t = process_cpu_ms();
        run(&mut buf)?;
        cpu.push(process_cpu_ms() - t);
    }
    Ok((median(&cpu), buf.len()))
}

pub(crate) fn bench_formats(opts: &Opts) -> Json {
    let mut pillow = Pillow::start(&opts.python);
    let min_reps = if opts.quick { 1 } else { 3 };
    let cases = cases();
    let mut image_rows = Vec::new();
    let mut rows = Vec::new();
    for (name, class, file) in images(opts) {
        let raw = read_npy(&file);
        let mut obj = BTreeMap::new();
        obj.insert("name".to_owned(), Json::Str(name.clone()));
        obj.insert("class".to_owned(), Json::Str(class));
        obj.insert("width".to_owned(), Json::Num(f64::from(raw.width)));
        obj.insert("height".to_owned(), Json::Num(f64::from(raw.height)));
        obj.insert("channels".to_owned(), Json::Num(f64::from(raw.channels)));
        image_rows.push(Json::Obj(obj));
        let pixels = Pixels::Raw(raw);
        for case in &cases {
            // Nothing to compare with where we have no encoder: the Pillow side is not timed then.
            let pil = if case.format.is_some() {
                pillow.ask(&serde_json::json!({"file": file, "case": case.name, "reps": min_reps}))
            } else {
                serde_json::json!({"unavailable": "not measured (nothing to compare with)"})
            };
            let luna = ours(case, &pixels, min_reps);
            let mut row = BTreeMap::new();
            row.insert("image".to_owned(), Json::Str(name.clone()));
            row.insert("case".to_owned(), Json::Str(case.name.to_owned()));
            match &luna {
                Ok((ms, bytes)) => {
                    row.insert("luna_cpu_ms".to_owned(), Json::Num(*ms));
                    row.insert("luna_bytes".to_owned(), Json::Num(*bytes as f64));
                }
                Err(why) => {
                    row.insert("luna_unavailable".to_owned(), Json::Str(why.clone()));
                }
            }
            if let Some(why) = pil["unavailable"].as_str() {
                row.insert("pil_unavailable".to_owned(), Json::Str(why.to_owned()));
            } else {
                row.insert("pil_cpu_ms".to_owned(), Json::Num(pil["cpu_ms"].as_f64().expect("cpu_ms")));
                row.insert("pil_bytes".to_owned(), Json::Num(pil["bytes"].as_f64().expect("bytes")));
                row.insert("pil_impl".to_owned(), Json::Str(pil["impl"].as_str().unwrap_or("?").to_owned()));
            }
            eprintln!("[rust] formats {name} {}: ours {luna:?}, Pillow side {pil}", case.name);
            rows.push(Json::Obj(row));
        }
    }
    let case_rows = cases
        .iter()
        .map(|c| {
            let mut obj = BTreeMap::new();
            obj.insert("name".to_owned(), Json::Str(c.name.to_owned()));
            obj.insert("label".to_owned(), Json::Str(c.label.to_owned()));
            Json::Obj(obj)
        })
        .collect();
    let mut out = BTreeMap::new();
    out.insert("images".to_owned(), Json::Arr(image_rows));
    out.insert("cases".to_owned(), Json::Arr(case_rows));
    out.insert("rows".to_owned(), Json::Arr(rows));
    Json::Obj(out)
}
