//! The corpus section: every image of `scripts/bench_corpus.py`'s corpus (plus the generated image as its own
//! class) at PNG levels 0..=9, against Pillow timed interleaved: for each image and level a Pillow process
//! (`scripts/bench_pil.py --serve`) measures its encode first, then this process measures ours, both as the
//! median CPU time of the encoding thread into memory. Every file we write is decoded again and compared with
//! the input pixels (the bench panics on a mismatch).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use luna_daemon::encode::{Format, Image8, RawImage, Samples, encode};

use super::{Json, Opts, median, thread_cpu_ms, write_npy_shape};

struct Entry {
    name: String,
    class: String,
    file: PathBuf,
    image: Image8,
}

/// The PIL side, one request per line on its stdin, one JSON answer per line on its stdout.
pub(crate) struct Pillow {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: BufReader<std::process::ChildStdout>,
}

impl Pillow {
    pub(crate) fn start(python: &str) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_pil.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start scripts/bench_pil.py --serve");
        let input = child.stdin.take().expect("stdin");
        let output = BufReader::new(child.stdout.take().expect("stdout"));
        Self { child, input, output }
    }

    /// One request, one JSON answer.
    pub(crate) fn ask(&mut self, request: &serde_json::Value) -> serde_json::Value {
        writeln!(self.input, "{request}").expect("write to bench_pil.py");
        self.input.flush().expect("flush");
        let mut line = String::new();
        self.output.read_line(&mut line).expect("read from bench_pil.py");
        serde_json::from_str(&line).expect("bench_pil.py answers JSON")
    }

    /// Pillow's median CPU ms and bytes for `file` at `level`.
    fn png(&mut self, file: &Path, level: u8, min_reps: usize) -> (f64, usize) {
        let v = self.ask(&serde_json::json!({"file": file, "level": level, "reps": min_reps}));
        (v["cpu_ms"].as_f64().expect("cpu_ms"), v["bytes"].as_u64().expect("bytes") as usize)
    }
}

impl Drop for Pillow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Repeat at least `min_reps` times, fast encodes until ~150 ms were measured (at most 15 times).
fn more(samples: &[f64], min_reps: usize) -> bool {
    samples.len() < min_reps || (samples.len() < 15 && samples.iter().sum::<f64>() < 150.0)
}

pub(crate) fn bench_corpus(opts: &Opts) -> Json {
    let entries = load(opts);
    let mut pillow = Pillow::start(&opts.python);
    let min_reps = if opts.quick { 1 } else { 3 };
    let mut rows = Vec::new();
    for entry in &entries {
        let image = &entry.image;
        let mut levels = Vec::new();
        let mut buf = Vec::with_capacity(image.data.len() + (1 << 16));
        for level in 0..=9u8 {
            let (pil_ms, pil_bytes) = pillow.png(&entry.file, level, min_reps);
            let format = Format::Png { compression: level };
            buf.clear();
            encode(image, format, None, &mut buf).expect("encode");
            assert_round_trip(entry, level, &buf);
            let mut cpu = Vec::new();
            while more(&cpu, min_reps) {
                buf.clear();
                let t = thread_cpu_ms();
                encode(image, format, None, &mut buf).expect("encode");
                cpu.push(thread_cpu_ms() - t);
            }
            let luna_ms = median(&cpu);
            eprintln!(
                "[rust] corpus {} L{level}: {} vs PIL {pil_bytes} bytes ({:.3}), {luna_ms:.2} vs {pil_ms:.2} ms ({:.1}x)",
                entry.name,
                buf.len(),
                buf.len() as f64 / pil_bytes as f64,
                pil_ms / luna_ms
            );
            let mut row = BTreeMap::new();
            row.insert("level".to_owned(), Json::Num(f64::from(level)));
            row.insert("luna_bytes".to_owned(), Json::Num(buf.len() as f64));
            row.insert("pil_bytes".to_owned(), Json::Num(pil_bytes as f64));
            row.insert("luna_cpu_ms".to_owned(), Json::Num(luna_ms));
            row.insert("pil_cpu_ms".to_owned(), Json::Num(pil_ms));
            levels.push(Json::Obj(row));
        }
        let mut obj = BTreeMap::new();
        obj.insert("name".to_owned(), Json::Str(entry.name.clone()));
        obj.insert("class".to_owned(), Json::Str(entry.class.clone()));
        obj.insert("width".to_owned(), Json::Num(f64::from(image.width)));
        obj.insert("height".to_owned(), Json::Num(f64::from(image.height)));
        obj.insert("channels".to_owned(), Json::Num(f64::from(image.channels)));
        obj.insert("levels".to_owned(), Json::Arr(levels));
        rows.push(Json::Obj(obj));
    }
    Json::Arr(rows)
}

/// Decoded pixels must equal the input at every level.
fn assert_round_trip(entry: &Entry, level: u8, bytes: &[u8]) {
    let decoded = image::load_from_memory_with_format(bytes, image::ImageFormat::Png).expect("decode our PNG");
    let raw = match entry.image.channels {
        1 => decoded.to_luma8().into_raw(),
        3 => decoded.to_rgb8().into_raw(),
        _ => decoded.to_rgba8().into_raw(),
    };
    assert!(raw == entry.image.data, "{} level {level}: decoded pixels differ from the input", entry.name);
}

/// The corpus from `--corpus DIR` (manifest.json), then the generated image at 512, 1024 and 2048.
fn load(opts: &Opts) -> Vec<Entry> {
    let mut entries = Vec::new();
    if let Some(dir) = &opts.corpus {
        let text = std::fs::read_to_string(dir.join("manifest.json")).expect("corpus manifest.json");
        let manifest: Vec<serde_json::Value> = serde_json::from_str(&text).expect("manifest is a JSON list");
        for item in manifest {
            let file = dir.join(item["file"].as_str().expect("file"));
            let image = read_npy_u8(&file);
            let name = item["name"].as_str().expect("name").to_owned();
            entries.push(Entry { name, class: item["class"].as_str().expect("class").to_owned(), file, image });
        }
    }
    let sizes: &[u32] = if opts.quick { &[1024] } else { &[512, 1024, 2048] };
    for &size in sizes {
        let image = super::image_u8(size);
        let file = opts.out.join(format!("generated_{size}.npy"));
        write_npy_shape(&file, "|u1", (size, size, 3), &image.data);
        entries.push(Entry { name: format!("generated_{size}"), class: "generated".to_owned(), file, image });
    }
    entries
}

/// A uint8 `.npy` (version 1.0, C order) of shape (h, w, c) as an image.
fn read_npy_u8(path: &Path) -> Image8 {
    let raw = read_npy(path);
    assert!(matches!(raw.samples, Samples::U8(_)), "{}: want uint8", path.display());
    raw.to_image8()
}

/// A uint8 or little-endian float32 `.npy` (version 1.0, C order) of shape (h, w[, c]) as the samples it holds.
pub(crate) fn read_npy(path: &Path) -> RawImage {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"), "{}: not an .npy 1.0 file", path.display());
    let header_len = usize::from(u16::from_le_bytes([bytes[8], bytes[9]]));
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).expect("ASCII header");
    assert!(header.contains("False"), "{}: want C order: {header}", path.display());
    let shape = &header[header.find("'shape': (").expect("shape") + 10..];
    let dims: Vec<usize> =
        shape[..shape.find(')').expect(")")].split(',').filter_map(|d| d.trim().parse().ok()).collect();
    let (h, w, c) = (dims[0], dims[1], dims.get(2).copied().unwrap_or(1));
    let data = &bytes[10 + header_len..];
    let samples = if header.contains("'|u1'") {
        Samples::U8(data.to_vec())
    } else if header.contains("'<f4'") {
        Samples::F32(data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    } else {
        panic!("{}: want uint8 or little-endian float32: {header}", path.display())
    };
    assert_eq!(samples.len(), h * w * c, "{}: size does not match the shape", path.display());
    RawImage { width: w as u32, height: h as u32, channels: c as u8, samples }
}
