//! Issue 16's costs, short runs (docs/BENCHMARKS.md, "Batch features"): a thumbnail per image against the PNG
//! encode of the same image, and an archive update (the archive copied raw into a new file, fsynced, renamed) by
//! archive size and images per update, against the durable write of one image of the same size in the same run.
//! Nothing here passes or fails. The S3 part (uploads/s against a local s3s-fs) is scripts/bench_s3.py.
//!
//! `cargo bench --bench batch -- --bench [--quick] [--json FILE]`: prints the tables, and with `--json` writes
//! them for scripts/bench.py's report. Uses only the crate's public API, std and serde_json.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use luna_daemon::encode::{Format, Image8, encode, encode_thumbnail};
use luna_daemon::output::{ArchiveItem, OutputDir, update_archive, write_new_file_in};
use luna_daemon::synthetic;
use serde_json::{Value, json};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm-up
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("benches/batch.rs: run it with `cargo bench --bench batch -- --bench`");
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let json_out = args.iter().position(|a| a == "--json").map(|i| PathBuf::from(&args[i + 1]));
    let runs = if quick { 5 } else { 15 };
    let thumbnails = bench_thumbnails(runs);
    let archives = bench_archives(runs, quick);
    if let Some(path) = json_out {
        let result = json!({"quick": quick, "runs": runs, "thumbnails": thumbnails, "archives": archives});
        std::fs::write(&path, format!("{result:#}\n")).expect("write --json");
    }
}

fn bench_thumbnails(runs: usize) -> Value {
    println!("### Thumbnail per image (1024x1024 RGB photo-like synthetic image)\n");
    println!("| thumbnail size | thumbnail ms (median) | thumbnail bytes | PNG level 4 ms | thumbnail / PNG |");
    println!("|---|---|---|---|---|");
    let image = Image8 { width: 1024, height: 1024, channels: 3, data: synthetic::rgb_u8(1024, 1024, 7) };
    let png = time(runs, || {
        let mut out = Vec::new();
        encode(&image, Format::Png { compression: 4 }, None, &mut out).unwrap();
        black_box(out);
    });
    let mut rows = Vec::new();
    for size in [128u32, 256, 512] {
        let mut bytes = 0;
        let t = time(runs, || {
            let mut out = Vec::new();
            encode_thumbnail(&image, size, None, &mut out).unwrap();
            bytes = out.len();
            black_box(out);
        });
        let ratio = t.as_secs_f64() / png.as_secs_f64();
        println!("| {size} | {:.2} | {bytes} | {:.2} | {ratio:.2}x |", ms(t), ms(png));
        rows.push(json!({"size": size, "ms": ms(t), "bytes": bytes, "png_l4_ms": ms(png), "ratio": ratio}));
    }
    Value::Array(rows)
}

fn bench_archives(runs: usize, quick: bool) -> Value {
    println!("\n### ZIP archive update (stored entries of 1 MiB each, on the output directory's file system)\n");
    println!("| entries already in the archive | images added per update | update ms (median) | ms per added image |");
    println!("|---|---|---|---|");
    let root = tempfile_dir();
    let dir = OutputDir::open(&root).unwrap();
    let payload: Vec<u8> = (0..1u64 << 20).map(|i| (i * 7919 % 251) as u8).collect();
    // The baseline: the durable write of one image file of the entries' size (what saving the image cost).
    let mut written = Vec::new();
    let write = time(runs.min(7), || {
        let (w, ()) = write_new_file_in(&dir, "baseline", "png", |out| out.write_all(&payload)).unwrap().unwrap();
        written.push(w.path);
    });
    for path in written {
        std::fs::remove_file(path).unwrap();
    }
    let mut made = 0usize;
    let mut make = |n: usize| -> Vec<ArchiveItem> {
        (0..n)
            .map(|_| {
                made += 1;
                let file = root.join(format!("img_{made:06}.png"));
                std::fs::write(&file, &payload).unwrap();
                ArchiveItem { entry: format!("img_{made:06}.png"), file }
            })
            .collect()
    };
    let sizes: &[usize] = if quick { &[0, 50] } else { &[0, 50, 200] };
    let mut rows = Vec::new();
    for (i, &existing) in sizes.iter().enumerate() {
        for add in [1usize, 10] {
            let name = format!("b{i}_{add}");
            let base = make(existing);
            let mut archive = None;
            if existing > 0 {
                archive = Some(update_archive(&dir, &name, "t", None, &base).unwrap().name);
            }
            let samples: Vec<Duration> = (0..runs.min(7))
                .map(|_| {
                    let items = make(add);
                    let t = Instant::now();
                    let u = update_archive(&dir, &name, "t", archive.as_deref(), &items).unwrap();
                    let e = t.elapsed();
                    archive = Some(u.name);
                    e
                })
                .collect();
            let t = median(samples);
            let per_image = ms(t) / add as f64;
            println!("| {existing} | {add} | {:.2} | {per_image:.2} |", ms(t));
            rows.push(json!({
                "existing": existing,
                "added": add,
                "ms": ms(t),
                "ms_per_image": per_image,
                "write_1mib_ms": ms(write),
                "ratio": per_image / ms(write),
            }));
        }
    }
    println!("\nBaseline: the durable write of one 1 MiB file (`write_new_file_in`): {:.2} ms.", ms(write));
    let _ = std::fs::remove_dir_all(&root);
    Value::Array(rows)
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("luna-bench-batch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
