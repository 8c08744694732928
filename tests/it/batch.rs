//! Issue 16: batch groups (a name shared by many jobs, reported together, surviving a restart), thumbnails and
//! ZIP archives, end to end against real daemon processes.

use std::path::Path;
use std::process::{Command, Output};

use luna_daemon::client::{Client, ImageRef, JobOptions, Pixels};
use luna_daemon::protocol::{ErrorCode, QualityGate};

use crate::support::{TestDaemon, daemon_exe, files_below};

/// A distinct image per (job, index), noisy enough to pass a variance gate.
fn noisy(job: usize, index: usize) -> Vec<u8> {
    (0..32 * 24 * 3).map(|i| ((i * 7919 + job * 31 + index * 13) % 251) as u8).collect()
}

fn submit_to(client: &mut Client, options: &JobOptions, pixels: &[Vec<u8>]) -> String {
    let images: Vec<ImageRef<'_>> =
        pixels.iter().map(|p| ImageRef { width: 32, height: 24, channels: 3, pixels: Pixels::U8(p) }).collect();
    client.submit(options, &images).unwrap().job_id
}

fn batch_options(output: &Path, batch: &str, job: usize) -> JobOptions {
    let mut options = JobOptions::new(output);
    options.filename = format!("job{job}");
    options.batch = Some(batch.to_owned());
    options
}

fn cli(daemon: &TestDaemon, args: &[&str]) -> Output {
    Command::new(daemon_exe()).env("LUNA_DAEMON_SOCKET", &daemon.socket).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Pass: two jobs (one with an image the gate discards) in one batch and a job outside it; the summary counts
/// exactly the batch's images, bytes equal the files' sizes, and the time span is ordered.
#[test]
fn a_batch_groups_jobs_and_its_summary_counts_written_discarded_bytes_and_time() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let first = submit_to(&mut client, &batch_options(&daemon.output, "night", 0), &[noisy(0, 0), noisy(0, 1)]);
    let mut gated = batch_options(&daemon.output, "night", 1);
    gated.quality_gate = QualityGate::Variance;
    gated.min_quality_threshold = 0.05;
    let flat = vec![128u8; 32 * 24 * 3];
    let second = submit_to(&mut client, &gated, &[noisy(1, 0), flat]);
    let mut outside = JobOptions::new(&daemon.output);
    outside.filename = "outside".to_owned();
    submit_to(&mut client, &outside, &[noisy(2, 0)]);

    let summary = client.wait_batch("night", None, |_| {}).unwrap();
    assert_eq!(summary.jobs, [first.clone(), second.clone()]);
    assert_eq!((summary.images, summary.written, summary.discarded, summary.failed), (4, 3, 1, 0));
    assert_eq!((summary.queued, summary.encoding, summary.retrying), (0, 0, 0));
    assert!(summary.finished);
    let mut bytes = 0;
    for job in [&first, &second] {
        bytes += client.status(job).unwrap().images.iter().map(|i| i.bytes.unwrap()).sum::<u64>();
    }
    assert_eq!(summary.bytes, bytes);
    assert!(summary.last_final_ms.unwrap() >= summary.first_accepted_ms);

    let e = client.batch_status("day").unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownJob));
    assert!(e.to_string().contains(r#"no batch named "day""#), "{e}");
}

/// Pass: hostile batch names are refused at submit with `invalid_job` naming the problem, and nothing is
/// accepted (the segment stays the client's: the next submit reuses it).
#[test]
fn hostile_batch_names_are_refused_with_a_clear_error() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let pixels = [noisy(0, 0)];
    let images: Vec<ImageRef<'_>> =
        pixels.iter().map(|p| ImageRef { width: 32, height: 24, channels: 3, pixels: Pixels::U8(p) }).collect();
    for (name, want) in [
        ("../../etc", "contains '/'"),
        ("-rf", "must start with a letter or a digit"),
        ("a/b", "contains '/'"),
        ("CON", "reserved device name"),
        ("", "batch name is empty"),
    ] {
        let e = client.submit(&batch_options(&daemon.output, name, 0), &images).unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidJob), "{name:?}: {e}");
        assert!(e.to_string().contains(want), "{name:?}: {e}");
    }
    assert!(files_below(&daemon.output).is_empty());
    let o = cli(&daemon, &["submit", "--synthetic", "1", "--size", "8x8", "--output-dir", "/tmp/x", "--batch", "a b"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("batch name \"a b\" contains ' '"), "{}", text(&o));
}

/// Pass: a batch whose daemon is SIGKILLed with images in flight reports, after the restart, every image of
/// both jobs exactly once, and the same summary after a second (clean) restart, which reads the compacted
/// journal's batch record instead of the jobs' records.
#[test]
fn a_batch_survives_a_sigkill_and_two_restarts() {
    let mut daemon = TestDaemon::start_with(&["--min-workers", "1", "--max-workers", "1"]);
    daemon.hooks().hold_after("worker.before_save", 2);
    let mut client = daemon.client();
    let a = submit_to(&mut client, &batch_options(&daemon.output, "farm", 0), &[noisy(0, 0), noisy(0, 1), noisy(0, 2)]);
    let b = submit_to(&mut client, &batch_options(&daemon.output, "farm", 1), &[noisy(1, 0), noisy(1, 1)]);
    daemon.hooks().wait_reached("worker.before_save", 3);
    let before = client.batch_status("farm").unwrap();
    assert_eq!((before.images, before.written), (5, 2));
    daemon.kill();
    daemon.hooks().release("worker.before_save");
    daemon.restart();
    let mut client = daemon.client();
    let after = client.wait_batch("farm", None, |_| {}).unwrap();
    assert_eq!(after.jobs, [a, b]);
    assert_eq!((after.images, after.written, after.failed), (5, 5, 0), "{after:?}");
    assert_eq!(after.first_accepted_ms, before.first_accepted_ms);
    client.stop().unwrap();
    daemon.wait_exit();
    daemon.restart();
    let again = daemon.client().batch_status("farm").unwrap();
    assert_eq!(again, after, "the compacted journal keeps the batch");
}

/// Pass: `submit --batch` twice, then `wait --batch` exits 0 with the summary; `status --batch` of an unknown
/// batch exits 2 naming it; `watch --batch` ends with the summary.
#[test]
fn the_cli_submits_waits_and_watches_a_batch() {
    let daemon = TestDaemon::start();
    let out = daemon.output.to_str().unwrap();
    for _ in 0..2 {
        let o = cli(&daemon, &["submit", "--synthetic", "2", "--size", "16x16", "--output-dir", out, "--batch", "b1"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = cli(&daemon, &["wait", "--batch", "b1", "--timeout", "60"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("batch b1 (finished): 4 images in 2 jobs"), "{}", text(&o));
    assert!(text(&o).contains("4 written, 0 discarded, 0 failed"), "{}", text(&o));
    let o = cli(&daemon, &["watch", "--batch", "b1", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((json["images"].as_u64(), json["finished"].as_bool()), (Some(4), Some(true)));
    let o = cli(&daemon, &["status", "--batch", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains(r#"no batch named "nope""#), "{}", text(&o));
}

fn wide(seed: usize) -> Vec<u8> {
    (0..300 * 200 * 3).map(|i| ((i * 7919 + seed * 31) % 251) as u8).collect()
}

/// Pass: with thumbnails on, each written (and discarded) image gets `_thumbnails/<file name>.webp` beside it,
/// at most `thumbnail_size` on its longest side with the aspect kept, its path in the status, carrying a
/// reference to the image but not the workflow the image itself carries; off, nothing is written.
#[test]
fn thumbnails_are_written_beside_each_image_and_named_in_the_status() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let mut options = JobOptions::new(&daemon.output);
    options.filename = "shot".to_owned();
    options.affix = "ORIG".to_owned();
    options.thumbnails = true;
    options.thumbnail_size = 64;
    options.quality_gate = QualityGate::Variance;
    options.min_quality_threshold = 0.05;
    options.metadata = Some(luna_daemon::protocol::JobMetadata {
        prompt: Some("{\"3\": {\"class_type\": \"KSampler\"}}".to_owned()),
        extra_pnginfo: vec![("workflow".to_owned(), "{\"nodes\": [\"secret-workflow\"]}".to_owned())],
        ..Default::default()
    });
    let flat = vec![9u8; 300 * 200 * 3];
    let pixels = [wide(1), flat];
    let images: Vec<ImageRef<'_>> =
        pixels.iter().map(|p| ImageRef { width: 300, height: 200, channels: 3, pixels: Pixels::U8(p) }).collect();
    let job = client.submit(&options, &images).unwrap().job_id;
    let status = client.wait(&job, |_| {}).unwrap();
    // Native paths (`\` on Windows), as the daemon reports them.
    let thumbnail = |dir: &[&str], name: &str| {
        let path = dir.iter().fold(daemon.output.clone(), |p, d| p.join(d)).join("_thumbnails").join(name);
        path.display().to_string()
    };
    let want =
        [thumbnail(&["ORIG"], "shot_ORIG_0.png.webp"), thumbnail(&["_discarded", "ORIG"], "shot_ORIG_1.png.webp")];
    for (image, want) in status.images.iter().zip(&want) {
        assert_eq!(image.thumbnail.as_deref(), Some(want.as_str()), "{image:?}");
        let bytes = std::fs::read(want).unwrap();
        let decoded = image::load_from_memory_with_format(&bytes, image::ImageFormat::WebP).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (64, 43));
        let text = String::from_utf8_lossy(&bytes);
        let path = std::path::Path::new(image.path.as_deref().unwrap());
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(text.contains(&format!("/{name}")) && text.contains("source:"), "a reference to {name}");
        assert!(!text.contains("secret-workflow") && !text.contains("KSampler"), "no workflow, no prompt");
        let full = std::fs::read(image.path.as_deref().unwrap()).unwrap();
        assert!(String::from_utf8_lossy(&full).contains("secret-workflow"), "the image keeps its workflow");
    }
    // Off (the default): no thumbnail, no folder.
    let plain = submit_to(&mut client, &JobOptions::new(daemon.output.join("plain")), &[noisy(0, 0)]);
    let status = client.wait(&plain, |_| {}).unwrap();
    assert_eq!(status.images[0].thumbnail, None);
    assert!(!files_below(&daemon.output.join("plain")).iter().any(|f| f.contains("_thumbnails")));
    // A size out of range is refused before anything is accepted.
    options.thumbnail_size = 8;
    let e = client.submit(&options, &images).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidJob));
    assert!(e.to_string().contains("thumbnail_size 8 is outside 16..=1024"), "{e}");
}

// -- ZIP archives --------------------------------------------------------------------------------------------------

fn zip_options(output: &Path, batch: &str, job: usize) -> JobOptions {
    let mut options = batch_options(output, batch, job);
    options.zip = true;
    options
}

/// The archive's entry names, sorted; panics if it is not a valid ZIP.
fn zip_entries(path: &Path) -> Vec<String> {
    let archive = zip::ZipArchive::new(std::fs::File::open(path).unwrap())
        .unwrap_or_else(|e| panic!("{} is not a valid ZIP: {e}", path.display()));
    let mut names: Vec<String> = archive.file_names().map(|n| n.unwrap().into_owned()).collect();
    names.sort();
    names
}

/// Paths of the written images of `jobs`, relative to `output`, sorted.
fn written(client: &mut Client, output: &Path, jobs: &[&str]) -> Vec<String> {
    let mut names = Vec::new();
    for job in jobs {
        for image in client.status(job).unwrap().images {
            if image.state == luna_daemon::protocol::ImageState::Written {
                let path = image.path.unwrap();
                // Relative to the output root with `/` between folders, as ZIP entry names are on every platform.
                let relative = Path::new(&path).strip_prefix(output).unwrap().to_string_lossy().into_owned();
                names.push(relative.replace(std::path::MAIN_SEPARATOR, "/"));
            }
        }
    }
    names.sort();
    names
}

/// The images below `dir` (relative paths, sorted): what a batch wrote, after a restart forgot its jobs.
fn pngs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = files_below(dir).into_iter().filter(|f| f.ends_with(".png")).collect();
    names.sort();
    names
}

/// Polls until the batch has `n` images written (the workers are not held; only the archiver is).
fn wait_written(client: &mut Client, batch: &str, n: u64) {
    crate::support::wait_until("images written", || client.batch_status(batch).unwrap().written == n);
}

fn temps_in(dir: &Path) -> Vec<String> {
    crate::support::file_names(dir).into_iter().filter(|n| n.starts_with(".luna-")).collect()
}

/// Pass: every written image of a zip batch (not the discarded one) is in the archive exactly once, with its
/// bytes; an existing `<batch>.zip` that is not the batch's is never overwritten; jobs that disagree with the
/// batch about zip, or zip without a batch, are refused with the reason.
#[test]
fn a_zip_batch_archives_every_written_image_once_and_never_overwrites() {
    let daemon = TestDaemon::start();
    std::fs::create_dir_all(&daemon.output).unwrap();
    std::fs::write(daemon.output.join("arch.zip"), b"a user's own file").unwrap();
    let mut client = daemon.client();
    let a = submit_to(&mut client, &zip_options(&daemon.output, "arch", 0), &[noisy(0, 0), noisy(0, 1)]);
    let mut gated = zip_options(&daemon.output, "arch", 1);
    gated.affix = "UP".to_owned();
    gated.quality_gate = QualityGate::Variance;
    gated.min_quality_threshold = 0.05;
    let b = submit_to(&mut client, &gated, &[noisy(1, 0), vec![7u8; 32 * 24 * 3], noisy(1, 2)]);
    let summary = client.wait_batch("arch", None, |_| {}).unwrap();
    let archive = daemon.output.join("arch_00001.zip");
    assert_eq!(summary.archive.as_deref(), Some(archive.to_str().unwrap()));
    assert_eq!((summary.written, summary.discarded, summary.archived, summary.archive_pending), (4, 1, 4, 0));
    let want = written(&mut client, &daemon.output, &[&a, &b]);
    assert_eq!(zip_entries(&archive), want);
    assert!(want.contains(&"UP/job1_UP_2.png".to_owned()), "{want:?}");
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&archive).unwrap()).unwrap();
    let mut inside = Vec::new();
    std::io::Read::read_to_end(&mut zip.by_name("job0_1.png").unwrap(), &mut inside).unwrap();
    assert_eq!(inside, std::fs::read(daemon.output.join("job0_1.png")).unwrap());
    assert_eq!(std::fs::read(daemon.output.join("arch.zip")).unwrap(), b"a user's own file");

    let pixels = [noisy(3, 0)];
    let images: Vec<ImageRef<'_>> =
        pixels.iter().map(|p| ImageRef { width: 32, height: 24, channels: 3, pixels: Pixels::U8(p) }).collect();
    let e = client.submit(&batch_options(&daemon.output, "arch", 3), &images).unwrap_err();
    assert!(e.to_string().contains("batch \"arch\" is archived"), "{e}");
    let e = client.submit(&zip_options(&daemon.output.join("elsewhere"), "arch", 3), &images).unwrap_err();
    assert!(e.to_string().contains("one archive per batch"), "{e}");
    let e = client.submit(&zip_options(&daemon.output, "plain", 3), &images).map(|_| ());
    assert!(e.is_ok());
    let mut no_batch = JobOptions::new(&daemon.output);
    no_batch.zip = true;
    let e = client.submit(&no_batch, &images).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::InvalidJob));
    assert!(e.to_string().contains("zip needs a batch name"), "{e}");
}

/// Pass: the daemon is SIGKILLed while it writes the second version of the archive (the new archive half
/// written in a temp file): the archive on disk is still the complete first version, a valid ZIP; after the
/// restart every written image of the batch is in it exactly once and no temp file is left.
#[test]
fn a_kill_mid_append_leaves_a_valid_archive_and_the_restart_completes_it_exactly_once() {
    let mut daemon = TestDaemon::start();
    let mut client = daemon.client();
    let a = submit_to(&mut client, &zip_options(&daemon.output, "crash", 0), &[noisy(0, 0), noisy(0, 1)]);
    assert_eq!(client.wait_batch("crash", None, |_| {}).unwrap().archived, 2);
    let archive = daemon.output.join("crash.zip");
    let first = zip_entries(&archive);
    assert_eq!(first, written(&mut client, &daemon.output, &[&a]));

    daemon.hooks().hold("archive.writing");
    let b = submit_to(&mut client, &zip_options(&daemon.output, "crash", 1), &[noisy(1, 0), noisy(1, 1), noisy(1, 2)]);
    daemon.hooks().wait_reached("archive.writing", 1);
    wait_written(&mut client, "crash", 5);
    assert_eq!(temps_in(&daemon.output).len(), 1, "the new archive is being written beside the old");
    daemon.kill();
    assert_eq!(zip_entries(&archive), first, "the archive on disk is the old, complete one");
    daemon.hooks().release("archive.writing");

    daemon.restart();
    let mut client = daemon.client();
    let summary = client.wait_batch("crash", None, |_| {}).unwrap();
    assert_eq!((summary.written, summary.archived, summary.archive_pending), (5, 5, 0), "{summary:?}");
    let entries = zip_entries(&archive);
    assert_eq!(entries, pngs(&daemon.output), "each written image exactly once");
    assert_eq!(entries.len(), 5);
    let _ = b;
    assert!(temps_in(&daemon.output).is_empty(), "{:?}", temps_in(&daemon.output));
}

/// Pass: killed after the first archive was renamed into place but before the journal says so, the restarted
/// daemon adopts that archive (its comment names the batch) instead of starting `crash_00001.zip`, and adds
/// nothing twice.
#[test]
fn a_kill_after_the_rename_before_the_journal_adopts_the_archive_and_adds_nothing_twice() {
    let mut daemon = TestDaemon::start();
    daemon.hooks().hold("archive.after_rename");
    let mut client = daemon.client();
    let a = submit_to(&mut client, &zip_options(&daemon.output, "late", 0), &[noisy(0, 0), noisy(0, 1)]);
    daemon.hooks().wait_reached("archive.after_rename", 1);
    wait_written(&mut client, "late", 2);
    let want = written(&mut client, &daemon.output, &[&a]);
    let archive = daemon.output.join("late.zip");
    let before = zip_entries(&archive);
    daemon.kill();
    daemon.hooks().release("archive.after_rename");
    daemon.restart();
    let mut client = daemon.client();
    let summary = client.wait_batch("late", None, |_| {}).unwrap();
    assert_eq!((summary.archived, summary.archive_pending), (2, 0));
    assert_eq!(summary.archive.as_deref(), Some(archive.to_str().unwrap()));
    assert!(!before.is_empty() && before.len() <= want.len());
    assert_eq!(zip_entries(&archive), want);
    let zips: Vec<String> =
        crate::support::file_names(&daemon.output).into_iter().filter(|n| n.ends_with(".zip")).collect();
    assert_eq!(zips, ["late.zip"], "no second archive");
}
