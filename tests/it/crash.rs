//! "An accepted image is never lost": daemon crashes, client crashes, full and read-only disks, cancel,
//! backpressure, the janitor, and hostile clients. Each test states its pass criterion.

use std::path::Path;
use std::process::{Command, Stdio};

use luna_daemon::client::{Client, ImageRef, JobOptions, Pixels};
use luna_daemon::protocol::{ErrorCode, ImageState, JobStatus};

use crate::support::{TestDaemon, daemon_exe, decode_png, file_names, files_below, wait_until};

/// A distinct, recognisable image per (job, index).
fn image_pixels(job: usize, index: usize) -> Vec<u8> {
    (0..32 * 24 * 3).map(|i| ((i * 7 + job * 31 + index * 13) % 251) as u8).collect()
}

fn submit_images(client: &mut Client, output: &Path, job: usize, count: usize) -> String {
    let pixels: Vec<Vec<u8>> = (0..count).map(|i| image_pixels(job, i)).collect();
    let images: Vec<ImageRef<'_>> =
        pixels.iter().map(|p| ImageRef { width: 32, height: 24, channels: 3, pixels: Pixels::U8(p) }).collect();
    let mut options = JobOptions::new(output);
    options.filename = format!("job{job}");
    client.submit(&options, &images).unwrap().job_id
}

fn temp_files(dir: &Path) -> Vec<String> {
    files_below(dir).into_iter().filter(|f| f.rsplit('/').next().unwrap().starts_with(".luna-")).collect()
}

#[cfg(unix)]
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Pass: after SIGKILL with 200 accepted images still queued and a restart, every image's file exists and
/// decodes to its source pixels, at most one duplicate exists (the image in flight), no temp file is left,
/// and the spool is empty once the client is gone.
#[test]
fn sigkill_with_200_queued_images_then_restart_loses_nothing() {
    let mut daemon = TestDaemon::start_with(&["--min-workers", "1", "--max-workers", "1"]);
    // The single worker saves 3 images, then is held before the 4th: the kill lands with 197 in flight.
    daemon.hooks().hold_after("worker.before_save", 3);
    let mut client = daemon.client();
    let jobs: Vec<String> = (0..20).map(|j| submit_images(&mut client, &daemon.output, j, 10)).collect();
    daemon.hooks().wait_reached("worker.before_save", 4);
    daemon.kill();
    let written_before = files_below(&daemon.output).len();
    assert_eq!(written_before, 3, "the queue is in flight at the kill");
    daemon.hooks().release("worker.before_save");
    daemon.restart();
    let mut statuses: Vec<JobStatus> = Vec::new();
    for job in &jobs {
        statuses.push(client.wait(job, |_| {}).unwrap());
    }
    for (j, status) in statuses.iter().enumerate() {
        for image in &status.images {
            assert_eq!(image.state, ImageState::Written, "job {j}: {image:?}");
            let (_, _, _, data) = decode_png(image.path.as_deref().unwrap().as_ref());
            assert_eq!(data, image_pixels(j, image.index as usize), "job {j} image {}", image.index);
        }
    }
    let files = files_below(&daemon.output);
    assert!((200..=201).contains(&files.len()), "{} files: at least once, at most one duplicate", files.len());
    assert!(temp_files(&daemon.output).is_empty(), "{:?}", temp_files(&daemon.output));
    assert!(daemon.log().contains("recovered unfinished jobs from the journal"));
    drop(client);
    assert!(file_names(&daemon.spool).is_empty(), "spool: {:?}", file_names(&daemon.spool));
}

/// Pass: a client process that exits (or is SIGKILLed) right after the acknowledgement loses nothing, and its
/// segments do not outlive the job.
#[test]
fn a_client_killed_right_after_its_acknowledgement_loses_nothing() {
    let daemon = TestDaemon::start();
    // Held before saving, so the daemon still owns the segment when its client dies.
    daemon.hooks().hold("worker.before_save");
    let output = daemon.output.join("killed");
    let mut child = Command::new(daemon_exe())
        .env("LUNA_DAEMON_SOCKET", &daemon.socket)
        .args(["submit", "--synthetic", "3", "--size", "48x32", "--dtype", "u8", "--output-dir"])
        .arg(&output)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let _ = child.kill(); // SIGKILL right after the job id (printed after the acknowledgement)
    let _ = child.wait();
    daemon.hooks().release("worker.before_save");
    let status = daemon.client().wait(line.trim(), |_| {}).unwrap();
    assert!(status.images.iter().all(|i| i.state == ImageState::Written), "{status:?}");
    let expected = luna_daemon::synthetic::rgb_u8(48, 32, 1);
    let (_, _, _, data) = decode_png(&output.join("luna_1.png"));
    assert_eq!(data, expected);
    assert!(
        file_names(&daemon.spool).is_empty(),
        "the dead client's segment is unlinked: {:?}",
        file_names(&daemon.spool)
    );
}

/// Pass: an image whose segment vanished while the daemon was down is reported `lost` through status.
#[test]
fn a_job_whose_segment_is_gone_after_a_restart_is_reported_lost() {
    let mut daemon = TestDaemon::start_with(&["--min-workers", "1", "--max-workers", "1"]);
    daemon.hooks().hold("worker.before_save");
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 0, 2);
    daemon.hooks().wait_reached("worker.before_save", 1);
    daemon.kill();
    daemon.hooks().release("worker.before_save");
    drop(client);
    for name in file_names(&daemon.spool) {
        std::fs::remove_file(daemon.spool.join(name)).unwrap(); // as a reboot clears tmpfs
    }
    daemon.restart();
    let status = daemon.client().wait(&job, |_| {}).unwrap();
    for image in &status.images {
        assert_eq!(image.state, ImageState::Failed);
        let error = image.error.as_ref().unwrap();
        assert_eq!(error.code, ErrorCode::Lost);
        assert!(error.message.contains("shared memory is gone"), "{}", error.message);
    }
}

/// Regression: a job submitted without `timestamp_ms` was re-stamped with the clock of its recovery, so a
/// `%time%` (or `%date%`) template named a recovered image differently from how it would have been named. Pass:
/// killed before the save and restarted seconds later, the image is named with the second it was accepted in.
#[test]
fn a_recovered_job_without_a_timestamp_is_named_with_its_acceptance_time() {
    use crate::support::rgb_u8_4x4;
    use luna_daemon::protocol::{ImageFormat, Request, Response, Slot, SubmitJob};
    use luna_daemon::shm::SegmentWriter;
    let mut daemon = TestDaemon::start();
    daemon.hooks().hold("worker.before_save");
    let mut segment = SegmentWriter::create(&daemon.spool, "untimed", 48).unwrap();
    segment.data_mut().unwrap()[..48].fill(77);
    let slots = vec![Slot {
        affix: String::new(),
        format: ImageFormat::Png,
        subdir: false,
        images: vec![rgb_u8_4x4("untimed")],
    }];
    // No timestamp_ms; UTC, so that the test can name the second without a time-zone library.
    let job = SubmitJob {
        filename: "at_%time:HHMMSS%".to_owned(),
        utc_offset_s: Some(0),
        ..SubmitJob::new(daemon.output.to_string_lossy(), slots)
    };
    let epoch_s = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let before = epoch_s();
    let reply = crate::support::RawConn::handshaken(&daemon.socket).request(&Request::Submit(Box::new(job)));
    let after = epoch_s();
    let Response::Accepted(accepted) = reply else { panic!("not accepted: {reply:?}") };
    daemon.hooks().wait_reached("worker.before_save", 1);
    daemon.kill();
    daemon.hooks().release("worker.before_save");
    // The recovery runs in a later second than the acceptance could have (a clock condition, not a sleep).
    wait_until("the clock has passed the acceptance second", || epoch_s() > after);
    daemon.restart();
    let status = daemon.client().wait(&accepted.job_id, |_| {}).unwrap();
    assert_eq!(status.images[0].state, ImageState::Written, "{:?}", status.images[0]);
    let name = |s: u64| format!("at_{:02}{:02}{:02}.png", s / 3600 % 24, s / 60 % 60, s % 60);
    let expected: Vec<String> = (before..=after).map(name).collect();
    let path = status.images[0].path.clone().unwrap();
    let file = Path::new(&path).file_name().unwrap().to_string_lossy().into_owned();
    assert!(expected.contains(&file), "{file} is not named with its acceptance second ({expected:?})");
}

/// Pass: SIGTERM (Windows: `stop`) with a queue finishes it and exits 0; the next start recovers nothing and serves normally.
#[test]
fn sigterm_with_a_queue_then_restart() {
    let mut daemon = TestDaemon::start_with(&["--min-workers", "1", "--max-workers", "1"]);
    daemon.hooks().hold("worker.before_save");
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 1, 15);
    daemon.hooks().wait_reached("worker.before_save", 1);
    daemon.request_stop();
    wait_until("the stop is requested", || daemon.log().contains("stop requested"));
    assert!(files_below(&daemon.output).is_empty(), "all 15 images are in flight at the SIGTERM");
    daemon.hooks().release("worker.before_save");
    assert!(daemon.wait_exit().success(), "{}", daemon.log());
    assert_eq!(files_below(&daemon.output).len(), 15);
    daemon.restart();
    assert!(!daemon.log().contains("recovered unfinished jobs"), "{}", daemon.log());
    let status = client.status(&job);
    assert!(status.is_err(), "a clean stop leaves nothing to recover");
    submit_images(&mut daemon.client(), &daemon.output, 2, 1);
}

// The tmpfs tests are Unix-only: Windows has no `mount` and no tmpfs to fill or remount read-only.
#[cfg(unix)]
/// Mounts a small tmpfs at `dir`. The tests that need it are `#[ignore]`d (they need root) and run explicitly by
/// CI (`make test-root`); where they run, failing to mount is a failure, never a quiet pass.
fn mount_tmpfs(dir: &Path, options: &str) {
    std::fs::create_dir_all(dir).unwrap();
    assert!(is_root(), "this test mounts a tmpfs and needs root (run it with `make test-root`)");
    let status = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(dir).status();
    assert!(status.is_ok_and(|s| s.success()), "could not mount a tmpfs at {}", dir.display());
}

#[cfg(unix)]
fn umount(dir: &Path) {
    let _ = Command::new("umount").arg(dir).status();
}

fn image_state(client: &mut Client, job: &str) -> luna_daemon::protocol::ImageStatus {
    client.status(job).unwrap().images[0].clone()
}

/// Pass: on a full disk the image is reported `retrying` with the error, the daemon stays up and keeps the
/// segment; once space is freed the image is written.
#[cfg(unix)] // mounts a tmpfs
#[test]
#[ignore = "needs root to mount a tmpfs; CI runs it with `make test-root`"]
fn disk_full_is_retried_until_space_is_freed() {
    let daemon = TestDaemon::start();
    let disk = daemon.dir.path().join("small-disk");
    mount_tmpfs(&disk, "size=256k");
    let filler = disk.join("filler");
    let _ = std::fs::write(&filler, vec![1u8; 256 * 1024]);
    let mut client = daemon.client();
    let pixels = luna_daemon::synthetic::rgb_u8(128, 128, 3);
    let mut options = JobOptions::new(&disk);
    options.png_compression = 0; // ~48 KiB that cannot fit
    let image = ImageRef { width: 128, height: 128, channels: 3, pixels: Pixels::U8(&pixels) };
    let job = client.submit(&options, &[image]).unwrap().job_id;
    wait_until("the image is retrying", || image_state(&mut client, &job).state == ImageState::Retrying);
    let status = image_state(&mut client, &job);
    let error = status.error.unwrap();
    assert_eq!(error.code, ErrorCode::SaveFailed);
    assert!(error.message.contains("No space left on device"), "{}", error.message);
    client.stats().expect("the daemon stays up");
    std::fs::remove_file(&filler).unwrap();
    let status = client.wait(&job, |_| {}).unwrap();
    assert_eq!(status.images[0].state, ImageState::Written);
    let (_, _, _, data) = decode_png(status.images[0].path.as_deref().unwrap().as_ref());
    assert_eq!(data, pixels);
    assert!(temp_files(&disk).is_empty());
    umount(&disk);
}

/// Pass: a read-only output directory is retried; `cancel` then fails the image with `cancelled` and hands the
/// segment back.
#[cfg(unix)] // mounts a tmpfs
#[test]
#[ignore = "needs root to mount a tmpfs; CI runs it with `make test-root`"]
fn a_read_only_output_dir_is_retried_and_can_be_cancelled() {
    let daemon = TestDaemon::start();
    let disk = daemon.dir.path().join("ro-disk");
    mount_tmpfs(&disk, "size=1m,ro");
    let mut client = daemon.client();
    let pixels = vec![5u8; 16 * 16 * 3];
    let image = ImageRef { width: 16, height: 16, channels: 3, pixels: Pixels::U8(&pixels) };
    let job = client.submit(&JobOptions::new(&disk), &[image]).unwrap().job_id;
    wait_until("the image is retrying", || image_state(&mut client, &job).state == ImageState::Retrying);
    let message = image_state(&mut client, &job).error.unwrap().message;
    assert!(message.contains("Read-only file system"), "{message}");
    let cli =
        Command::new(daemon_exe()).env("LUNA_DAEMON_SOCKET", &daemon.socket).args(["cancel", &job]).output().unwrap();
    assert!(String::from_utf8_lossy(&cli.stdout).contains("1 unsaved images cancelled"), "{cli:?}");
    let status = client.wait(&job, |_| {}).unwrap();
    assert_eq!(status.images[0].state, ImageState::Failed);
    assert_eq!(status.images[0].error.as_ref().unwrap().code, ErrorCode::Cancelled);
    assert!(status.segments_released);
    umount(&disk);
}

/// Pass: a read-only directory that becomes writable again gets its image.
#[cfg(unix)] // mounts a tmpfs
#[test]
#[ignore = "needs root to mount a tmpfs; CI runs it with `make test-root`"]
fn a_read_only_output_dir_recovers_when_remounted_writable() {
    let daemon = TestDaemon::start();
    let disk = daemon.dir.path().join("ro-then-rw");
    mount_tmpfs(&disk, "size=1m,ro");
    let mut client = daemon.client();
    let pixels = vec![6u8; 8 * 8 * 3];
    let image = ImageRef { width: 8, height: 8, channels: 3, pixels: Pixels::U8(&pixels) };
    let job = client.submit(&JobOptions::new(&disk), &[image]).unwrap().job_id;
    wait_until("the image is retrying", || image_state(&mut client, &job).state == ImageState::Retrying);
    assert!(Command::new("mount").args(["-o", "remount,rw"]).arg(&disk).status().unwrap().success());
    let status = client.wait(&job, |_| {}).unwrap();
    assert_eq!(status.images[0].state, ImageState::Written);
    umount(&disk);
}

/// Pass: a segment truncated by its client after submitting fails that image cleanly (no SIGBUS); the
/// daemon keeps serving.
// Unix-only attack: Windows refuses to truncate a file that is mapped (error 1224, user-mapped section open).
#[cfg(unix)]
#[test]
fn a_segment_truncated_after_submit_fails_its_image_not_the_daemon() {
    let daemon = TestDaemon::start_with(&["--min-workers", "1", "--max-workers", "1"]);
    daemon.hooks().hold("worker.before_save");
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 0, 1);
    daemon.hooks().wait_reached("worker.before_save", 1);
    for name in file_names(&daemon.spool) {
        std::fs::OpenOptions::new().write(true).open(daemon.spool.join(name)).unwrap().set_len(70).unwrap();
    }
    daemon.hooks().release("worker.before_save");
    let status = client.wait(&job, |_| {}).unwrap();
    let error = status.images[0].error.as_ref().unwrap();
    assert_eq!(error.code, ErrorCode::OutOfBounds);
    assert!(error.message.contains("reading pixels from segment"), "{}", error.message);
    submit_images(&mut daemon.client(), &daemon.output, 1, 1);
}

/// Pass: 1000 idle connections neither stop a real client from being served nor blow up the daemon's memory.
// Linux-only: the memory bound is read from /proc/<pid>/status.
#[cfg(target_os = "linux")]
#[test]
fn a_thousand_idle_connections_do_not_starve_real_clients() {
    let daemon = TestDaemon::start();
    let idle: Vec<crate::support::RawConn> =
        (0..1000).map(|_| crate::support::RawConn::connect(&daemon.socket)).collect();
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 0, 2);
    let status = client.wait(&job, |_| {}).unwrap();
    assert!(status.images.iter().all(|i| i.state == ImageState::Written));
    let rss_mib = daemon.rss_kib() / 1024;
    assert!(rss_mib < 256, "daemon RSS {rss_mib} MiB with 1000 idle connections");
    drop(idle);
}

/// Pass: past the queue budget a submit waits (bounded) and is then refused with `busy`, never queued beyond
/// the budget; once the queue drains, submits are accepted again.
#[test]
fn a_full_queue_budget_answers_busy() {
    let daemon = TestDaemon::start_with(&[
        "--min-workers",
        "1",
        "--max-workers",
        "1",
        "--queue-budget-mib",
        "1",
        "--busy-wait-ms",
        "50",
    ]);
    daemon.hooks().hold("worker.before_save");
    let mut client = daemon.client();
    let big = luna_daemon::synthetic::rgb_f32(384, 384, 1); // 1.7 MiB as f32
    let image = ImageRef { width: 384, height: 384, channels: 3, pixels: Pixels::F32(&big) };
    let first = client.submit(&JobOptions::new(&daemon.output), &[image]).expect("an empty queue always has room");
    let err = client.submit(&JobOptions::new(&daemon.output), &[image]).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Busy), "{err}");
    assert!(err.to_string().contains("queue budget full"), "{err}");
    daemon.hooks().release("worker.before_save");
    client.wait(&first.job_id, |_| {}).unwrap();
    client.submit(&JobOptions::new(&daemon.output), &[image]).expect("accepted once the queue drained");
}

/// Pass: the janitor removes segments of dead clients, junk in the spool and orphaned temp files in output
/// directories, and leaves live clients' segments alone.
#[test]
fn the_janitor_cleans_up_after_dead_processes() {
    let daemon = TestDaemon::start_with(&["--orphan-grace", "0", "--janitor-interval", "1"]);
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 0, 1);
    client.wait(&job, |_| {}).unwrap();
    let live_segment = file_names(&daemon.spool);
    assert_eq!(live_segment.len(), 1);
    // A segment created by a process that has since died.
    let mut dead = Command::new(daemon_exe()).arg("--version").stdout(Stdio::null()).spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let mut header = luna_daemon::shm::MAGIC.to_vec();
    header.extend(1u32.to_le_bytes());
    header.extend([0u8; 4]);
    header.extend(dead_pid.to_le_bytes());
    header.resize(4096, 0);
    std::fs::write(daemon.spool.join("dead-client-seg"), &header).unwrap();
    std::fs::write(daemon.spool.join("junk.bin"), b"junk").unwrap();
    std::fs::write(daemon.output.join(".luna-orphan.tmp"), b"half an image").unwrap();
    wait_until("the janitor has swept", || {
        !daemon.spool.join("dead-client-seg").exists()
            && !daemon.spool.join("junk.bin").exists()
            && !daemon.output.join(".luna-orphan.tmp").exists()
    });
    assert_eq!(file_names(&daemon.spool), live_segment, "the live client's warm segment stays");
}

fn segment_state(daemon: &TestDaemon) -> luna_daemon::shm::SegmentState {
    let names = file_names(&daemon.spool);
    assert_eq!(names.len(), 1, "one segment: {names:?}");
    luna_daemon::shm::Segment::open(&daemon.spool, &names[0]).unwrap().state().unwrap()
}

/// Regression (issue 11 #1): a worker handed segment S back (state byte 0) before journaling `released(A)`;
/// the client reused S for job B; a crash then made recovery release S again though B owned it (B `lost`, or
/// saved from pixels overwritten since). Pass: killed right after A's hand-back with B accepted on S and not
/// saved yet, the restarted daemon saves B with B's pixels.
#[test]
fn a_crash_after_a_hand_back_never_releases_a_segment_a_later_job_uses() {
    // Two workers: the one that saved A stays held after its hand-back while the other takes B.
    let mut daemon = TestDaemon::start_with(&["--min-workers", "2", "--max-workers", "2"]);
    let hooks = daemon.hooks();
    hooks.hold("release.after_hand_back");
    hooks.hold_after("worker.before_save", 1); // A is saved, B waits
    let mut client = daemon.client();
    let a = submit_images(&mut client, &daemon.output, 0, 1);
    hooks.wait_reached("release.after_hand_back", 1);
    let b = submit_images(&mut client, &daemon.output, 1, 1);
    assert_eq!(file_names(&daemon.spool).len(), 1, "B reuses A's warm segment");
    hooks.wait_reached("worker.before_save", 2);
    daemon.kill();
    drop(client); // the client goes away too: a segment released now would be unlinked
    hooks.release("release.after_hand_back");
    hooks.release("worker.before_save");
    daemon.restart();
    let mut client = daemon.client();
    let status = client.wait(&b, |_| {}).unwrap();
    assert_eq!(status.images[0].state, ImageState::Written, "{status:?}\n{}", daemon.log());
    let (_, _, _, data) = decode_png(status.images[0].path.as_deref().unwrap().as_ref());
    assert_eq!(data, image_pixels(1, 0), "B's own pixels");
    assert!(client.status(&a).is_err(), "A was complete: journaled as released before its hand-back");
}

/// Issue 11 #1, the other side of the window: killed between journaling `released` and the hand-back, the
/// segment is daemon-owned with no job; the next start-up hands it back (the client can reuse it) and nothing
/// is saved twice.
#[test]
fn a_crash_between_journaling_released_and_the_hand_back_is_reclaimed_at_start_up() {
    let mut daemon = TestDaemon::start();
    let hooks = daemon.hooks();
    hooks.hold("release.before_hand_back");
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 0, 1);
    hooks.wait_reached("release.before_hand_back", 1);
    daemon.kill();
    hooks.release("release.before_hand_back");
    assert_eq!(segment_state(&daemon), luna_daemon::shm::SegmentState::Daemon);
    daemon.restart();
    assert_eq!(segment_state(&daemon), luna_daemon::shm::SegmentState::Client, "reclaimed at start-up");
    assert!(client.status(&job).is_err(), "the job needed no recovery");
    assert_eq!(files_below(&daemon.output).len(), 1, "saved once");
    let again = submit_images(&mut client, &daemon.output, 1, 1);
    client.wait(&again, |_| {}).unwrap();
    assert_eq!(file_names(&daemon.spool).len(), 1, "the warm segment is reused");
}

/// Regression (issue 11 #2): failed `done` / `released` appends were only logged and the segment handed back
/// anyway. Pass (fault injection, runs everywhere): while appends fail, the saved image's segment stays
/// daemon-owned, new work is refused with `journal_unavailable`; once the journal is writable again, the
/// segment is handed back and work is accepted.
#[test]
fn a_failing_journal_keeps_segments_and_refuses_new_work_until_it_heals() {
    let daemon = TestDaemon::start();
    let hooks = daemon.hooks();
    hooks.hold("worker.before_save");
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 0, 1);
    hooks.wait_reached("worker.before_save", 1);
    hooks.fail("journal.append");
    hooks.fail("journal.rewrite");
    hooks.release("worker.before_save");
    wait_until("the image is written", || client.status(&job).unwrap().finished);
    let status = client.status(&job).unwrap();
    assert_eq!(status.images[0].state, ImageState::Written);
    assert!(!status.segments_released, "its `done` was not journaled: the segment stays daemon-owned");
    assert_eq!(segment_state(&daemon), luna_daemon::shm::SegmentState::Daemon);
    let pixels = image_pixels(9, 0);
    let image = ImageRef { width: 32, height: 24, channels: 3, pixels: Pixels::U8(&pixels) };
    let err = client.submit(&JobOptions::new(&daemon.output), &[image]).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::JournalUnavailable), "{err}");
    assert!(err.to_string().contains("cannot write its journal"), "{err}");
    assert!(err.to_string().contains("save locally"), "{err}");
    hooks.heal("journal.append");
    hooks.heal("journal.rewrite");
    wait_until("the segment is handed back", || client.status(&job).unwrap().segments_released);
    let again = client.submit(&JobOptions::new(&daemon.output), &[image]).expect("accepted again");
    assert_eq!(client.wait(&again.job_id, |_| {}).unwrap().images[0].state, ImageState::Written);
}

/// Issue 11 #2: a failed `fdatasync` must not count records as durable; the daemon refuses new work until a
/// rewrite of the journal succeeds.
#[test]
fn a_failing_journal_sync_refuses_new_work_until_a_rewrite_succeeds() {
    let daemon = TestDaemon::start();
    let hooks = daemon.hooks();
    hooks.fail("journal.sync");
    hooks.fail("journal.rewrite");
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 0, 1);
    let pixels = image_pixels(1, 0);
    let image = ImageRef { width: 32, height: 24, channels: 3, pixels: Pixels::U8(&pixels) };
    let mut refused = None;
    wait_until("new work is refused", || {
        // Not waited for: once the sync has failed, an accepted job's segment is (rightly) held until a rewrite
        // succeeds, which this test only allows at the end.
        if let Err(e) = client.submit(&JobOptions::new(&daemon.output), &[image]) {
            refused = Some(e);
        }
        refused.is_some()
    });
    let err = refused.unwrap();
    assert_eq!(err.code(), Some(ErrorCode::JournalUnavailable), "{err}");
    assert!(err.to_string().contains("injected failure at test hook \"journal.sync\""), "{err}");
    hooks.heal("journal.sync");
    hooks.heal("journal.rewrite");
    client.wait(&job, |_| {}).unwrap();
    wait_until("work is accepted again", || client.submit(&JobOptions::new(&daemon.output), &[image]).is_ok());
}

/// Issue 11 #2 on a real full disk: the state directory on a 64 KiB tmpfs.
#[cfg(unix)] // mounts a tmpfs
#[test]
#[ignore = "needs root to mount a tmpfs; CI runs it with `make test-root`"]
fn a_full_state_dir_refuses_new_work_until_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    mount_tmpfs(&state, "size=64k");
    let daemon = TestDaemon::start_with(&["--state-dir", state.to_str().unwrap()]);
    let filler = state.join("filler");
    let _ = std::fs::write(&filler, vec![1u8; 64 * 1024]);
    let mut client = daemon.client();
    let pixels = image_pixels(0, 0);
    let image = ImageRef { width: 32, height: 24, channels: 3, pixels: Pixels::U8(&pixels) };
    let mut options = JobOptions::new(&daemon.output);
    options.metadata =
        Some(luna_daemon::protocol::JobMetadata { custom_metadata: Some("x".repeat(16 * 1024)), ..Default::default() });
    let mut refused = None;
    wait_until("the full state directory refuses work", || {
        // Not waited for: a job whose `done` hit the full disk keeps its segment until space is freed.
        if let Err(e) = client.submit(&options, &[image]) {
            refused = Some(e);
        }
        refused.is_some()
    });
    let err = refused.unwrap();
    assert_eq!(err.code(), Some(ErrorCode::JournalUnavailable), "{err}");
    assert!(err.to_string().contains("No space left on device"), "{err}");
    std::fs::remove_file(&filler).unwrap();
    let accepted = wait_accepted(&mut client, &options, image);
    assert_eq!(client.wait(&accepted, |_| {}).unwrap().images[0].state, ImageState::Written);
    drop(daemon);
    umount(&state);
}

#[cfg(unix)] // for the tmpfs tests
fn wait_accepted(client: &mut Client, options: &JobOptions, image: ImageRef<'_>) -> String {
    let mut job = None;
    wait_until("work is accepted again", || {
        job = client.submit(options, &[image]).ok().map(|a| a.job_id);
        job.is_some()
    });
    job.unwrap()
}

/// A job whose image retries forever (its save path is a regular file) until cancelled.
fn submit_retrying(client: &mut Client, output: &Path, options: impl FnOnce(&mut JobOptions)) -> String {
    std::fs::create_dir_all(output).unwrap();
    let _ = std::fs::write(output.join("blocker"), b"not a directory");
    let pixels = [1u8, 2, 3];
    let image = ImageRef { width: 1, height: 1, channels: 3, pixels: Pixels::U8(&pixels) };
    let mut opts = JobOptions::new(output);
    opts.save_path = "blocker".to_owned();
    options(&mut opts);
    client.submit(&opts, &[image]).unwrap().job_id
}

/// Regression (issue 11 #8): the queue budget counted only pixel bytes, so retrying jobs with large metadata
/// blobs grew the daemon far past it. Pass: a one-pixel job holding 3 MiB of metadata fills a 4 MiB budget.
#[test]
fn the_queue_budget_counts_metadata_blobs() {
    let daemon = TestDaemon::start_with(&["--queue-budget-mib", "4", "--busy-wait-ms", "50"]);
    let mut client = daemon.client();
    let with_metadata = |o: &mut JobOptions| {
        o.metadata = Some(luna_daemon::protocol::JobMetadata {
            custom_metadata: Some("m".repeat(3 << 20)),
            ..Default::default()
        })
    };
    let first = submit_retrying(&mut client, &daemon.output, with_metadata);
    assert!(client.stats().unwrap().bytes_held >= 3 << 20, "the metadata is held");
    let pixels = [1u8, 2, 3];
    let image = ImageRef { width: 1, height: 1, channels: 3, pixels: Pixels::U8(&pixels) };
    let mut options = JobOptions::new(&daemon.output);
    with_metadata(&mut options);
    let err = client.submit(&options, &[image]).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Busy), "{err}");
    client.cancel(&first).unwrap();
    client.submit(&options, &[image]).expect("room once the first job is cancelled");
}

/// Regression (issue 11 #8): every pending image kept its segment's descriptor open, so many retrying jobs
/// exhausted the descriptor table. Pass: 200 retrying one-pixel jobs (200 segments) add no descriptors.
#[cfg(target_os = "linux")]
#[test]
fn pending_images_hold_no_segment_descriptors() {
    let daemon = TestDaemon::start();
    let open_fds = || std::fs::read_dir(format!("/proc/{}/fd", daemon.pid())).unwrap().count();
    let mut client = daemon.client();
    let first = submit_retrying(&mut client, &daemon.output, |_| {});
    let before = open_fds();
    let jobs: Vec<String> = (0..200).map(|_| submit_retrying(&mut client, &daemon.output, |_| {})).collect();
    assert!(file_names(&daemon.spool).len() >= 200, "each job has its own segment");
    let after = open_fds();
    assert!(after <= before + 8, "descriptors grew from {before} to {after} with 200 pending images");
    for job in jobs.iter().chain([&first]) {
        client.cancel(job).unwrap();
    }
}

/// Regression (issue 11 #11): `stats` counted cancelled images as queued until their retry came due.
#[test]
fn stats_do_not_count_cancelled_images_as_queued() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    let job = submit_retrying(&mut client, &daemon.output, |_| {});
    wait_until("the image is retrying", || image_state(&mut client, &job).state == ImageState::Retrying);
    assert_eq!(client.stats().unwrap().queue_depth, 1);
    client.cancel(&job).unwrap();
    assert_eq!(client.stats().unwrap().queue_depth, 0, "a cancelled image is not queued");
}

/// Issue 11 #2 across a restart: an image saved while its `done` could not be journaled kept its segment, so a
/// restart saves it again from the same pixels (at least once), never reports it `lost`, and never reads a
/// segment the client reused.
#[test]
fn an_image_saved_while_the_journal_failed_is_saved_again_after_a_crash_not_lost() {
    let mut daemon = TestDaemon::start();
    let hooks = daemon.hooks();
    hooks.hold("worker.before_save");
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 3, 1);
    hooks.wait_reached("worker.before_save", 1);
    hooks.fail("journal.append");
    hooks.fail("journal.rewrite");
    hooks.release("worker.before_save");
    wait_until("the image is written", || client.status(&job).unwrap().finished);
    assert_eq!(segment_state(&daemon), luna_daemon::shm::SegmentState::Daemon);
    daemon.kill();
    hooks.heal("journal.append");
    hooks.heal("journal.rewrite");
    daemon.restart();
    let status = client.wait(&job, |_| {}).unwrap();
    assert_eq!(status.images[0].state, ImageState::Written, "{status:?}");
    let (_, _, _, data) = decode_png(status.images[0].path.as_deref().unwrap().as_ref());
    assert_eq!(data, image_pixels(3, 0));
    assert_eq!(files_below(&daemon.output).len(), 2, "saved twice: at least once, never lost");
    assert_eq!(segment_state(&daemon), luna_daemon::shm::SegmentState::Client, "handed back after the restart");
}
