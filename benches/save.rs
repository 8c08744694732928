//! The Rust side of `make bench` (see docs/BENCHMARKS.md): encoder speed and size per format and level (every
//! format against Pillow and its plugins in save/formats.rs, PNG on a corpus of real content in save/corpus.rs), the
//! client's submit blocking time against a plain memcpy, worker scaling against a pure-CPU control, daemon
//! memory under a full queue, and an end-to-end "generate then save" loop. Every figure is meant to be read as a
//! ratio against a baseline measured in the same run; nothing here passes or fails.
//!
//! Run through `scripts/bench.py` (which also runs the PIL side and writes the report), or directly:
//! `cargo bench --bench save -- --out DIR [--daemon-bin target/release/luna-daemon] [--quick] [--only png,e2e]`.
//! It writes the test images (`DIR/image_<size>_u8.npy`, `DIR/image_1024_f32.npy`) for the PIL side and its
//! results to `DIR/rust.json`. Uses only the crate's public API and std.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use luna_daemon::client::{Client, ImageRef, JobOptions, Pixels};
use luna_daemon::encode::{Format, Image8, SampleFormat, convert_row, encode};
use luna_daemon::output::write_new_file;
use luna_daemon::protocol::{ErrorCode, ImageFormat};
use luna_daemon::synthetic;

/// The seed of the generated test image (both sides use the same pixels).
const SEED: u64 = 7;
/// Simulated generation work per iteration of the end-to-end loop.
const GENERATE_MS: f64 = 200.0;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test --all-targets` runs bench binaries without `--bench`: do nothing then.
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("benches/save.rs: run it with `make bench` or `cargo bench --bench save -- --out DIR`");
        return;
    }
    let opts = Opts::parse(&args);
    std::fs::create_dir_all(&opts.out).expect("create --out directory");
    let scratch = Scratch::new();
    let mut results = BTreeMap::new();
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    results.insert("nproc".to_owned(), Json::Num(cpus as f64));
    results.insert("quick".to_owned(), Json::Bool(opts.quick));
    write_images(&opts.out);
    if opts.wants("png") {
        results.insert("png".to_owned(), bench_png(&opts, &scratch));
    }
    if opts.wants("corpus") {
        results.insert("corpus".to_owned(), corpus::bench_corpus(&opts));
    }
    if opts.wants("codecs") {
        results.insert("codecs".to_owned(), bench_codecs(&opts, &scratch));
    }
    if opts.wants("formats") {
        results.insert("formats".to_owned(), formats::bench_formats(&opts));
    }
    if opts.wants("submit") {
        results.insert("submit".to_owned(), bench_submit(&opts, &scratch));
    }
    if opts.wants("scaling") {
        results.insert("scaling".to_owned(), bench_scaling(&opts, &scratch, cpus));
    }
    if opts.wants("memory") {
        results.insert("memory".to_owned(), bench_memory(&opts, &scratch));
    }
    if opts.wants("e2e") {
        results.insert("e2e".to_owned(), bench_e2e(&opts, &scratch, 1));
        results.insert("e2e_batch4".to_owned(), bench_e2e(&opts, &scratch, 4));
    }
    results.insert("seconds".to_owned(), Json::Num(started.elapsed().as_secs_f64()));
    let path = opts.out.join("rust.json");
    std::fs::write(&path, Json::Obj(results).to_string()).expect("write rust.json");
    eprintln!("[rust] results in {} ({:.0} s)", path.display(), started.elapsed().as_secs_f64());
}

#[path = "save/corpus.rs"]
mod corpus;
#[path = "save/formats.rs"]
mod formats;

/// Command-line options.
struct Opts {
    out: PathBuf,
    daemon_bin: PathBuf,
    quick: bool,
    only: Option<Vec<String>>,
    /// The corpus directory (scripts/bench_corpus.py) and the Python that runs scripts/bench_pil.py.
    corpus: Option<PathBuf>,
    python: String,
}

impl Opts {
    fn parse(args: &[String]) -> Self {
        let mut opts = Opts {
            out: PathBuf::from("target/bench"),
            daemon_bin: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/luna-daemon"),
            quick: false,
            only: None,
            corpus: None,
            python: "python3".to_owned(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = || it.next().cloned().unwrap_or_else(|| panic!("{arg} needs a value"));
            match arg.as_str() {
                "--out" => opts.out = PathBuf::from(value()),
                "--daemon-bin" => opts.daemon_bin = PathBuf::from(value()),
                "--only" => opts.only = Some(value().split(',').map(str::to_owned).collect()),
                "--quick" => opts.quick = true,
                "--corpus" => opts.corpus = Some(PathBuf::from(value())),
                "--python" => opts.python = value(),
                _ => {} // `--bench` and anything cargo adds
            }
        }
        opts
    }

    fn wants(&self, section: &str) -> bool {
        self.only.as_ref().is_none_or(|only| only.iter().any(|s| s == section))
    }

    /// Repetitions for one measurement at `size`: fewer for big images and in quick mode.
    fn reps(&self, size: u32) -> usize {
        match (self.quick, size > 1024) {
            (false, false) => 7,
            (false, true) => 3,
            (true, false) => 3,
            (true, true) => 1,
        }
    }

    fn sizes(&self) -> &'static [u32] {
        if self.quick { &[1024] } else { &[1024, 2048] }
    }
}

/// Private working directories: files on the regular temp filesystem (where PIL writes too), segments on tmpfs
/// when there is one (as the daemon's default spool is). Removed on drop.
struct Scratch {
    root: PathBuf,
    spool: PathBuf,
}

impl Scratch {
    fn new() -> Self {
        let pid = std::process::id();
        let root = std::env::temp_dir().join(format!("luna-bench-{pid}"));
        let shm = Path::new("/dev/shm");
        let spool = if shm.is_dir() { shm.join(format!("luna-bench-{pid}")) } else { root.join("spool") };
        std::fs::create_dir_all(&root).expect("create scratch dir");
        Self { root, spool }
    }

    /// A fresh, empty directory `name` under the scratch root.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.root.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch subdir");
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
        let _ = std::fs::remove_dir_all(&self.spool);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Test images

pub(crate) fn image_u8(size: u32) -> Image8 {
    Image8 { width: size, height: size, channels: 3, data: synthetic::rgb_u8(size, size, SEED) }
}

/// Writes the test images as `.npy` for the PIL side: u8 at every size, and the 1024x1024 float32 tensor.
fn write_images(out: &Path) {
    for &size in &[1024u32, 2048] {
        let img = image_u8(size);
        write_npy(&out.join(format!("image_{size}_u8.npy")), "|u1", size, &img.data);
    }
    let f32s = synthetic::rgb_f32(1024, 1024, SEED);
    let bytes: Vec<u8> = f32s.iter().flat_map(|v| v.to_le_bytes()).collect();
    write_npy(&out.join("image_1024_f32.npy"), "<f4", 1024, &bytes);
}

/// NPY format 1.0: magic, version, little-endian header length, a Python dict literal padded to 64 bytes.
fn write_npy(path: &Path, descr: &str, size: u32, data: &[u8]) {
    write_npy_shape(path, descr, (size, size, 3), data);
}

pub(crate) fn write_npy_shape(path: &Path, descr: &str, (h, w, c): (u32, u32, u8), data: &[u8]) {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({h}, {w}, {c}), }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.extend(data);
    std::fs::write(path, bytes).expect("write .npy");
}

// ---------------------------------------------------------------------------------------------------------------
// Encoders: PNG levels and the lossy/lossless codecs, encode-only and encode + durable save

fn bench_png(opts: &Opts, scratch: &Scratch) -> Json {
    let mut rows = Vec::new();
    let dir = scratch.dir("png");
    for &size in opts.sizes() {
        let image = image_u8(size);
        for level in 0..=9u8 {
            let row = measure_format(&image, Format::Png { compression: level }, opts.reps(size), &dir);
            eprintln!("[rust] png {size} L{level}: {}", row.summary());
            rows.push(row.to_json(&[("size", Json::Num(f64::from(size))), ("level", Json::Num(f64::from(level)))]));
        }
    }
    Json::Arr(rows)
}

fn bench_codecs(opts: &Opts, scratch: &Scratch) -> Json {
    let cases = [
        ("jpeg_q90", Format::Jpeg { quality: 90 }),
        ("jpeg_q95", Format::Jpeg { quality: 95 }),
        ("webp_q90", Format::Webp { lossless: false, quality: 90 }),
        ("webp_lossless", Format::Webp { lossless: true, quality: 90 }),
    ];
    let mut rows = Vec::new();
    let dir = scratch.dir("codecs");
    for &size in opts.sizes() {
        let image = image_u8(size);
        for (name, format) in cases {
            let row = measure_format(&image, format, opts.reps(size), &dir);
            eprintln!("[rust] {name} {size}: {}", row.summary());
            rows.push(row.to_json(&[("size", Json::Num(f64::from(size))), ("codec", Json::Str(name.to_owned()))]));
        }
    }
    Json::Arr(rows)
}

struct FormatRow {
    encode_ms: f64,
    save_ms: f64,
    save_cpu_ms: f64,
    bytes: usize,
}

impl FormatRow {
    fn summary(&self) -> String {
        format!(
            "encode {:.2} ms, save {:.2} ms (cpu {:.2} ms), {} bytes",
            self.encode_ms, self.save_ms, self.save_cpu_ms, self.bytes
        )
    }

    fn to_json(&self, keys: &[(&str, Json)]) -> Json {
        let mut obj: BTreeMap<String, Json> = keys.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
        obj.insert("encode_ms".into(), Json::Num(self.encode_ms));
        obj.insert("save_ms".into(), Json::Num(self.save_ms));
        obj.insert("save_cpu_ms".into(), Json::Num(self.save_cpu_ms));
        obj.insert("bytes".into(), Json::Num(self.bytes as f64));
        Json::Obj(obj)
    }
}

/// Whether to repeat a measurement again: at least `min_reps` times, and for fast operations until about half a
/// second has been measured (at most `MAX_REPS` times), so that short saves get enough samples on a noisy machine.
fn more(samples_ms: &[f64], min_reps: usize) -> bool {
    const MAX_REPS: usize = 41;
    samples_ms.len() < min_reps || (samples_ms.len() < MAX_REPS && samples_ms.iter().sum::<f64>() < 500.0)
}

/// Median encode time into memory, and median time of what a daemon worker does with the 8-bit image: encode
/// into a hidden temp file, fsync, no-clobber rename, fsync the directory (`output::write_new_file`).
fn measure_format(image: &Image8, format: Format, reps: usize, dir: &Path) -> FormatRow {
    let mut bytes = 0;
    let mut buf = Vec::with_capacity(image.data.len() + (1 << 20));
    // One untimed run warms caches and the allocator.
    encode(image, format, None, &mut buf).expect("encode");
    let mut encode_ms = Vec::new();
    while more(&encode_ms, reps) {
        buf.clear();
        let t = Instant::now();
        encode(image, format, None, &mut buf).expect("encode");
        encode_ms.push(ms(t.elapsed()));
        bytes = buf.len();
    }
    let mut save_ms = Vec::new();
    let mut save_cpu = Vec::new();
    while more(&save_ms, reps) {
        let cpu = thread_cpu_ms();
        let t = Instant::now();
        let (written, _) =
            write_new_file(dir, "bench", "img", |w| encode(image, format, None, w)).expect("output").expect("encode");
        save_ms.push(ms(t.elapsed()));
        save_cpu.push(thread_cpu_ms() - cpu);
        assert_eq!(written.bytes as usize, bytes, "the saved file has the encoded size");
        std::fs::remove_file(&written.path).expect("remove bench file");
    }
    FormatRow { encode_ms: median(&encode_ms), save_ms: median(&save_ms), save_cpu_ms: median(&save_cpu), bytes }
}

// ---------------------------------------------------------------------------------------------------------------
// A daemon of our own, in private directories

struct Daemon {
    child: Child,
    socket: PathBuf,
}

impl Daemon {
    fn start(
        opts: &Opts,
        scratch: &Scratch,
        name: &str,
        workers: (usize, usize),
        budget_mib: u64,
        extra: &[&str],
    ) -> Self {
        let bin = &opts.daemon_bin;
        assert!(bin.is_file(), "{} is missing: build it with `cargo build --release --bin luna-daemon`", bin.display());
        let dir = scratch.dir(&format!("daemon-{name}"));
        let socket = dir.join("d.sock");
        let spool = scratch.spool.join(name);
        let _ = std::fs::remove_dir_all(&spool);
        let child = Command::new(bin)
            .arg("--log=warn")
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--spool-dir")
            .arg(&spool)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg(format!("--min-workers={}", workers.0))
            .arg(format!("--max-workers={}", workers.1))
            .arg(format!("--queue-budget-mib={budget_mib}"))
            .args(extra)
            .env_remove("LUNA_DAEMON_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("start luna-daemon");
        let daemon = Self { child, socket };
        // Poll until it answers (with a deadline), never a fixed sleep.
        let deadline = Instant::now() + Duration::from_secs(20);
        while Client::connect(&daemon.socket, "luna-bench").is_err() {
            assert!(Instant::now() < deadline, "luna-daemon did not come up on {}", daemon.socket.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        daemon
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket, "luna-bench").expect("connect to the bench daemon")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Ask it to finish and exit; kill it if it does not within a few seconds.
        if let Ok(mut client) = Client::connect(&self.socket, "luna-bench") {
            let _ = client.stop();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls a job until every image is final (a short fixed poll interval, so the measured time is close).
fn wait_finished(client: &mut Client, job_id: &str, poll: Duration) {
    loop {
        let status = client.status(job_id).expect("status");
        if status.finished && status.segments_released {
            for image in &status.images {
                assert!(
                    matches!(image.state, luna_daemon::protocol::ImageState::Written),
                    "bench image not written: {image:?}"
                );
            }
            return;
        }
        std::thread::sleep(poll);
    }
}

fn f32_image(pixels: &[f32]) -> ImageRef<'_> {
    ImageRef { width: 1024, height: 1024, channels: 3, pixels: Pixels::F32(pixels) }
}

// ---------------------------------------------------------------------------------------------------------------
// Submit blocking time vs memcpy

fn bench_submit(opts: &Opts, scratch: &Scratch) -> Json {
    let daemon = Daemon::start(opts, scratch, "submit", (2, 4), 4096, &[]);
    let mut client = daemon.client();
    let pixels = synthetic::rgb_f32(1024, 1024, SEED);
    let mut job = JobOptions::new(scratch.dir("submit-out"));
    job.format = ImageFormat::Jpeg;
    let reps = if opts.quick { 10 } else { 30 };
    let mut copy_dst = vec![0f32; pixels.len()];
    let mut out = BTreeMap::new();
    // The very first submit creates and maps the segment (cold); later ones reuse it warm.
    let t = Instant::now();
    let accepted = client.submit(&job, &[f32_image(&pixels)]).expect("submit");
    out.insert("cold_first_submit_ms".to_owned(), Json::Num(ms(t.elapsed())));
    wait_finished(&mut client, &accepted.job_id, Duration::from_millis(2));
    for checksum in [true, false] {
        job.checksum = checksum;
        let (mut submit_ms, mut memcpy_ms) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            // The baseline right before each submit, so both see the same machine state.
            let t = Instant::now();
            copy_dst.copy_from_slice(black_box(&pixels));
            black_box(&mut copy_dst);
            memcpy_ms.push(ms(t.elapsed()));
            let t = Instant::now();
            let accepted = client.submit(&job, &[f32_image(&pixels)]).expect("submit");
            submit_ms.push(ms(t.elapsed()));
            // Steady state: the previous save is done before the next image comes (as with ~200 ms generations).
            wait_finished(&mut client, &accepted.job_id, Duration::from_millis(2));
        }
        let key = if checksum { "with_crc32" } else { "without_crc32" };
        let (s, m) = (median(&submit_ms), median(&memcpy_ms));
        eprintln!("[rust] submit {key}: {s:.2} ms vs memcpy {m:.2} ms ({:.2}x)", s / m);
        let mut row = BTreeMap::new();
        row.insert("submit_ms".to_owned(), Json::Num(s));
        row.insert("memcpy_ms".to_owned(), Json::Num(m));
        row.insert("submit_ms_p90".to_owned(), Json::Num(percentile(&submit_ms, 0.9)));
        row.insert("reps".to_owned(), Json::Num(reps as f64));
        out.insert(key.to_owned(), Json::Obj(row));
    }
    // The fixed part (frame, round trip, the daemon's validation) with an 8x8 image.
    let tiny = vec![0.5f32; 8 * 8 * 3];
    job.checksum = true;
    let mut tiny_ms = Vec::new();
    for _ in 0..reps {
        let t = Instant::now();
        let image = ImageRef { width: 8, height: 8, channels: 3, pixels: Pixels::F32(&tiny) };
        let accepted = client.submit(&job, &[image]).expect("submit");
        tiny_ms.push(ms(t.elapsed()));
        wait_finished(&mut client, &accepted.job_id, Duration::from_millis(2));
    }
    eprintln!("[rust] submit of an 8x8 image (fixed cost): {:.2} ms", median(&tiny_ms));
    out.insert("tiny_submit_ms".to_owned(), Json::Num(median(&tiny_ms)));
    out.insert("bytes".to_owned(), Json::Num((pixels.len() * 4) as f64));
    Json::Obj(out)
}

// ---------------------------------------------------------------------------------------------------------------
// Scaling: images/s with 1..N workers against a pure-CPU control with 1..N threads

struct CpuWork {
    iters_per_ms: f64,
}

/// A fixed amount of integer work (xorshift), the same on every call: the simulated generation and the
/// scaling control.
fn cpu_work(iters: u64) -> u64 {
    let mut x = black_box(0x9E37_79B9_7F4A_7C15u64);
    let mut acc = 0u64;
    for _ in 0..iters {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        acc = acc.wrapping_add(x);
    }
    black_box(acc)
}

fn calibrate_cpu_work() -> CpuWork {
    let iters = 20_000_000;
    cpu_work(iters / 10);
    let best = (0..5)
        .map(|_| {
            let t = Instant::now();
            cpu_work(iters);
            ms(t.elapsed())
        })
        .fold(f64::INFINITY, f64::min);
    CpuWork { iters_per_ms: iters as f64 / best }
}

/// Control throughput (work units per second) with `threads` threads each doing `iters`.
fn control_throughput(threads: usize, iters: u64) -> f64 {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                cpu_work(iters)
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    for h in handles {
        h.join().expect("control thread");
    }
    threads as f64 / t.elapsed().as_secs_f64()
}

fn bench_scaling(opts: &Opts, scratch: &Scratch, cpus: usize) -> Json {
    let pixels = synthetic::rgb_f32(1024, 1024, SEED);
    let rounds = if opts.quick { 2 } else { 3 };
    // PNG level 4 is the default (cheap on the CPU, so the fsyncs of this machine's disk show); lossy WebP is the
    // node's default format and CPU-bound. For PNG, 2N workers on N cores shows whether fsync waits overlap.
    // The same PNG job with its output on tmpfs (no disk waits) tells the disk's share from the daemon's.
    let png_jobs = if opts.quick { 12 } else { 48 };
    let configs = [
        ("png_l4", "PNG level 4", ImageFormat::Png, png_jobs, 2 * cpus, false),
        ("png_l4_tmpfs", "PNG level 4, output on tmpfs", ImageFormat::Png, png_jobs, cpus, true),
        ("webp_q90", "WebP lossy q90", ImageFormat::Webp, if opts.quick { 6 } else { 16 }, cpus, false),
    ];
    let mut out = Vec::new();
    for (key, label, format, per_job, max_workers, on_tmpfs) in configs {
        // Calibrated now, so that a busy machine at start-up does not skew the control.
        let work = calibrate_cpu_work();
        let images: Vec<ImageRef<'_>> = (0..per_job).map(|_| f32_image(&pixels)).collect();
        let control_iters = (work.iters_per_ms * 300.0) as u64;
        let mut rows = Vec::new();
        let counts: Vec<usize> = (1..=cpus).chain((max_workers > cpus).then_some(max_workers)).collect();
        for workers in counts {
            let name = format!("{key}-{workers}");
            let daemon = Daemon::start(opts, scratch, &name, (workers, workers), 8192, &[]);
            let mut client = daemon.client();
            let out_dir =
                if on_tmpfs { scratch.spool.join(format!("{name}-out")) } else { scratch.dir(&format!("{name}-out")) };
            std::fs::create_dir_all(&out_dir).expect("create output dir");
            let mut job = JobOptions::new(out_dir);
            job.format = format;
            job.checksum = false;
            // Warm-up: creates the segment and spins the workers up.
            let accepted = client.submit(&job, &images).expect("submit");
            wait_finished(&mut client, &accepted.job_id, Duration::from_millis(5));
            let threads = workers.min(cpus);
            let (mut daemon_ips, mut control_tps) = (Vec::new(), Vec::new());
            for _ in 0..rounds {
                control_tps.push(control_throughput(threads, control_iters));
                let accepted = client.submit(&job, &images).expect("submit");
                // The copy into the segment is done by now: time only the workers' part.
                let t = Instant::now();
                wait_finished(&mut client, &accepted.job_id, Duration::from_millis(5));
                daemon_ips.push(per_job as f64 / t.elapsed().as_secs_f64());
                control_tps.push(control_throughput(threads, control_iters));
            }
            let (d, c) = (median(&daemon_ips), median(&control_tps));
            eprintln!(
                "[rust] scaling {label}, {workers} workers: {d:.1} images/s, control ({threads} threads) {c:.2}/s"
            );
            let mut row = BTreeMap::new();
            row.insert("workers".to_owned(), Json::Num(workers as f64));
            row.insert("control_threads".to_owned(), Json::Num(threads as f64));
            row.insert("images_per_s".to_owned(), Json::Num(d));
            row.insert("control_per_s".to_owned(), Json::Num(c));
            row.insert("images_per_s_all".to_owned(), Json::Arr(daemon_ips.iter().map(|v| Json::Num(*v)).collect()));
            row.insert("control_per_s_all".to_owned(), Json::Arr(control_tps.iter().map(|v| Json::Num(*v)).collect()));
            rows.push(Json::Obj(row));
        }
        let mut config = BTreeMap::new();
        config.insert("key".to_owned(), Json::Str(key.to_owned()));
        config.insert("format".to_owned(), Json::Str(label.to_owned()));
        config.insert("images_per_job".to_owned(), Json::Num(per_job as f64));
        config.insert("rows".to_owned(), Json::Arr(rows));
        out.push(Json::Obj(config));
    }
    Json::Arr(out)
}

// ---------------------------------------------------------------------------------------------------------------
// Memory: RSS with the queue at its budget

fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn bench_memory(opts: &Opts, scratch: &Scratch) -> Json {
    let budgets: &[u64] = if opts.quick { &[256] } else { &[256, 1024] };
    let attempts = 500u32;
    let pixels = synthetic::rgb_f32(1024, 1024, SEED);
    let mut rows = Vec::new();
    for &budget_mib in budgets {
        let name = format!("memory{budget_mib}");
        let daemon = Daemon::start(opts, scratch, &name, (2, 4), budget_mib, &["--busy-wait-ms=0"]);
        let pid = daemon.pid();
        let mut client = daemon.client();
        let mut job = JobOptions::new(scratch.dir("memory-out"));
        // The slowest level, so that the queue fills faster than the workers drain it.
        job.png_compression = 9;
        job.checksum = false;
        let rss = || proc_status_kib(pid, "VmRSS:").unwrap_or(0);
        let idle_kib = rss();
        let (mut accepted, mut busy, mut max_rss, mut max_held, mut max_depth) = (Vec::new(), 0u32, idle_kib, 0, 0);
        // 500 submissions: the daemon takes what fits its budget and answers `busy` to the rest (at once:
        // --busy-wait-ms=0), so the queue stays full while the workers run.
        for _ in 0..attempts {
            match client.submit(&job, &[f32_image(&pixels)]) {
                Ok(a) => accepted.push(a.job_id),
                Err(e) if e.code() == Some(ErrorCode::Busy) => {
                    busy += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("submit failed: {e}"),
            }
            let stats = client.stats().expect("stats");
            max_held = max_held.max(stats.bytes_held);
            max_depth = max_depth.max(stats.queue_depth);
            max_rss = max_rss.max(rss());
        }
        for id in &accepted {
            loop {
                max_rss = max_rss.max(rss());
                let status = client.status(id).expect("status");
                if status.finished && status.segments_released {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let hwm = proc_status_kib(pid, "VmHWM:").unwrap_or(0);
        let mib = |kib: u64| kib as f64 / 1024.0;
        eprintln!(
            "[rust] memory budget {budget_mib} MiB: {} accepted, {busy} busy, max held {:.0} MiB, max depth {max_depth}, \
             RSS idle {:.1} MiB, peak {:.1} MiB, HWM {:.1} MiB",
            accepted.len(),
            max_held as f64 / f64::from(1u32 << 20),
            mib(idle_kib),
            mib(max_rss),
            mib(hwm)
        );
        let mut row = BTreeMap::new();
        row.insert("budget_mib".to_owned(), Json::Num(budget_mib as f64));
        row.insert("attempts".to_owned(), Json::Num(f64::from(attempts)));
        row.insert("accepted".to_owned(), Json::Num(accepted.len() as f64));
        row.insert("busy".to_owned(), Json::Num(f64::from(busy)));
        row.insert("max_held_mib".to_owned(), Json::Num(max_held as f64 / f64::from(1u32 << 20)));
        row.insert("max_queue_depth".to_owned(), Json::Num(max_depth as f64));
        row.insert("job_mib".to_owned(), Json::Num((pixels.len() * 4) as f64 / f64::from(1u32 << 20)));
        row.insert("idle_rss_mib".to_owned(), Json::Num(mib(idle_kib)));
        row.insert("peak_rss_mib".to_owned(), Json::Num(mib(max_rss)));
        row.insert("hwm_mib".to_owned(), Json::Num(mib(hwm)));
        rows.push(Json::Obj(row));
    }
    Json::Arr(rows)
}

// ---------------------------------------------------------------------------------------------------------------
// End to end: generate (fixed CPU work) then save

/// `batch` images (1024x1024 RGB float32, PNG level 4) saved per simulated generation: blocking, inline, or
/// submitted to the daemon as one job (as the node submits one job per execution).
fn bench_e2e(opts: &Opts, scratch: &Scratch, batch: usize) -> Json {
    // Calibrated now, so that a busy machine at start-up does not shorten the simulated generation.
    let work = calibrate_cpu_work();
    let iterations = if opts.quick { 5 } else { 10 };
    let rounds = match (opts.quick, batch) {
        (true, _) => 1,
        (false, 1) => 3,
        (false, _) => 2,
    };
    let gen_iters = (work.iters_per_ms * GENERATE_MS) as u64;
    let pixels = synthetic::rgb_f32(1024, 1024, SEED);
    let raw: Vec<u8> = pixels.iter().flat_map(|v| v.to_le_bytes()).collect();
    let daemon = Daemon::start(opts, scratch, &format!("e2e{batch}"), (2, 4), 4096, &[]);
    let mut client = daemon.client();
    // With several images per generation the default pool grows past the free core (up to 4 workers on 2
    // cores); a daemon limited to nproc - 1 workers shows what that costs the generation.
    let spare = std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_sub(1).max(1);
    let limited =
        (batch > 1).then(|| Daemon::start(opts, scratch, &format!("e2e{batch}-limited"), (1, spare), 4096, &[]));
    let mut limited_client = limited.as_ref().map(Daemon::client);
    // The same default pool with its workers at the generation's priority (the default before `worker_nice`).
    let same_priority = (batch > 1)
        .then(|| Daemon::start(opts, scratch, &format!("e2e{batch}-nice0"), (2, 4), 4096, &["--worker-nice=0"]));
    let mut same_priority_client = same_priority.as_ref().map(Daemon::client);
    let loops = if limited.is_some() { 5 } else { 3 };
    let daemon_out = scratch.dir(&format!("e2e{batch}-daemon"));
    let blocking_out = scratch.dir(&format!("e2e{batch}-blocking"));
    let images: Vec<ImageRef<'_>> = (0..batch).map(|_| f32_image(&pixels)).collect();
    let job = JobOptions::new(&daemon_out);
    let format = Format::Png { compression: 4 };
    let mut times: [Vec<f64>; 5] = Default::default();
    let mut drain = Vec::new();
    let mut run = |which: usize| -> f64 {
        let t = Instant::now();
        let mut ids = Vec::new();
        for i in 0..iterations {
            cpu_work(gen_iters);
            match which {
                0 => {}
                1 => {
                    for b in 0..batch {
                        // What the daemon does, inline: convert float32 to 8 bits, encode, write durably.
                        let mut data = vec![0u8; pixels.len()];
                        let row = 1024 * 3;
                        for (src, dst) in raw.chunks_exact(row * 4).zip(data.chunks_exact_mut(row)) {
                            convert_row(SampleFormat::F32, src, dst);
                        }
                        let image = Image8 { width: 1024, height: 1024, channels: 3, data };
                        let stem = format!("e2e_{i}_{b}");
                        write_new_file(&blocking_out, &stem, "png", |w| encode(&image, format, None, w))
                            .expect("output")
                            .expect("encode");
                    }
                }
                2 => ids.push(client.submit(&job, &images).expect("submit").job_id),
                3 => {
                    let c = limited_client.as_mut().expect("limited daemon");
                    ids.push(c.submit(&job, &images).expect("submit").job_id);
                }
                _ => {
                    let c = same_priority_client.as_mut().expect("nice 0 daemon");
                    ids.push(c.submit(&job, &images).expect("submit").job_id);
                }
            }
        }
        let elapsed = ms(t.elapsed());
        let t = Instant::now();
        for id in &ids {
            let c = match which {
                3 => limited_client.as_mut().expect("limited daemon"),
                4 => same_priority_client.as_mut().expect("nice 0 daemon"),
                _ => &mut client,
            };
            wait_finished(c, id, Duration::from_millis(1));
        }
        if which == 2 {
            drain.push(ms(t.elapsed()));
        }
        for dir in [&daemon_out, &blocking_out] {
            let _ = std::fs::remove_dir_all(dir);
            std::fs::create_dir_all(dir).expect("recreate output dir");
        }
        elapsed
    };
    // Rotate the order every round so that a slow phase of the shared machine hits every loop alike.
    for round in 0..rounds {
        for k in 0..loops {
            let which = (round + k) % loops;
            times[which].push(run(which));
        }
    }
    let per = |v: &[f64]| median(v) / iterations as f64;
    let [alone, blocking, via_daemon, via_limited, via_nice0] = &times;
    eprintln!(
        "[rust] e2e ({batch} per iteration): generate {:.1} ms, +blocking save {:.1} ms, +daemon {:.1} ms (drain {:.1} ms)",
        per(alone),
        per(blocking),
        per(via_daemon),
        median(&drain)
    );
    let all = |v: &[f64]| Json::Arr(v.iter().map(|t| Json::Num(t / iterations as f64)).collect());
    let mut out = BTreeMap::new();
    out.insert("iterations".to_owned(), Json::Num(iterations as f64));
    out.insert("rounds".to_owned(), Json::Num(rounds as f64));
    out.insert("batch".to_owned(), Json::Num(batch as f64));
    out.insert("generate_ms_target".to_owned(), Json::Num(GENERATE_MS));
    out.insert("generate_alone_ms".to_owned(), Json::Num(per(alone)));
    out.insert("blocking_rust_ms".to_owned(), Json::Num(per(blocking)));
    out.insert("daemon_ms".to_owned(), Json::Num(per(via_daemon)));
    out.insert("generate_alone_ms_all".to_owned(), all(alone));
    out.insert("blocking_rust_ms_all".to_owned(), all(blocking));
    out.insert("daemon_ms_all".to_owned(), all(via_daemon));
    out.insert("daemon_drain_ms".to_owned(), Json::Num(median(&drain)));
    if !via_limited.is_empty() {
        out.insert("daemon_limited_ms".to_owned(), Json::Num(per(via_limited)));
        out.insert("daemon_limited_workers".to_owned(), Json::Num(spare as f64));
        eprintln!("[rust] e2e ({batch} per iteration): daemon with at most {spare} workers {:.1} ms", per(via_limited));
    }
    if !via_nice0.is_empty() {
        out.insert("daemon_nice0_ms".to_owned(), Json::Num(per(via_nice0)));
        eprintln!("[rust] e2e ({batch} per iteration): daemon with workers at nice 0 {:.1} ms", per(via_nice0));
    }
    out.insert("format".to_owned(), Json::Str("png level 4, 1024x1024 RGB float32".to_owned()));
    Json::Obj(out)
}

// ---------------------------------------------------------------------------------------------------------------
// Small helpers: timing, statistics, JSON

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub(crate) fn median(values: &[f64]) -> f64 {
    percentile(values, 0.5)
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q * (v.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
}

/// CPU time of the calling thread in ms (`CLOCK_THREAD_CPUTIME_ID`: nanoseconds, where
/// `/proc/thread-self/schedstat` moves in scheduler ticks on some kernels); 0 where unavailable.
pub(crate) fn thread_cpu_ms() -> f64 {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6
    }
    #[cfg(not(target_os = "linux"))]
    0.0
}

#[derive(Debug, Clone)]
pub(crate) enum Json {
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Json::Bool(b) => write!(f, "{b}"),
            Json::Num(n) if n.is_finite() => write!(f, "{n}"),
            Json::Num(_) => f.write_str("null"),
            Json::Str(s) => {
                let mut out = String::with_capacity(s.len() + 2);
                out.push('"');
                for c in s.chars() {
                    match c {
                        '"' => out.push_str("\\\""),
                        '\\' => out.push_str("\\\\"),
                        c if (c as u32) < 0x20 => {
                            let _ = write!(out, "\\u{:04x}", c as u32);
                        }
                        c => out.push(c),
                    }
                }
                out.push('"');
                f.write_str(&out)
            }
            Json::Arr(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Json::Obj(map) => {
                f.write_str("{")?;
                for (i, (k, v)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {v}", Json::Str(k.clone()))?;
                }
                f.write_str("}")
            }
        }
    }
}
