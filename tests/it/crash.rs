//! "An accepted image is never lost": daemon crashes, client crashes, full and read-only disks, cancel,
//! backpressure, the janitor, and hostile clients. Each test states its pass criterion.

use std::path::Path;
use std::process::{Command, Stdio};

use luna_daemon::client::{Client, ImageRef, JobOptions, Pixels};
use luna_daemon::protocol::{ErrorCode, ImageState, JobStatus};

use crate::support::{RawConn, TestDaemon, daemon_exe, decode_png, file_names, files_below, wait_until};

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
    let mut daemon = TestDaemon::start_with_env(
        &["--min-workers", "1", "--max-workers", "1"],
        &[("LUNA_DAEMON_TEST_SAVE_DELAY_MS", "25")],
    );
    let mut client = daemon.client();
    let jobs: Vec<String> = (0..20).map(|j| submit_images(&mut client, &daemon.output, j, 10)).collect();
    wait_until("a few images are written", || files_below(&daemon.output).len() >= 3);
    daemon.kill();
    let written_before = files_below(&daemon.output).len();
    assert!(written_before < 200, "the queue must still be in flight at the kill ({written_before} written)");
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
    let daemon = TestDaemon::start_with_env(&[], &[("LUNA_DAEMON_TEST_SAVE_DELAY_MS", "50")]);
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
    let mut daemon = TestDaemon::start_with_env(
        &["--min-workers", "1", "--max-workers", "1"],
        &[("LUNA_DAEMON_TEST_SAVE_DELAY_MS", "2000")],
    );
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 0, 2);
    daemon.kill();
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

/// Pass: SIGTERM with a queue finishes it and exits 0; the next start recovers nothing and serves normally.
#[cfg(unix)]
#[test]
fn sigterm_with_a_queue_then_restart() {
    let mut daemon = TestDaemon::start_with_env(
        &["--min-workers", "1", "--max-workers", "1"],
        &[("LUNA_DAEMON_TEST_SAVE_DELAY_MS", "20")],
    );
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 1, 15);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(daemon.pid() as i32), nix::sys::signal::SIGTERM).unwrap();
    assert!(daemon.wait_exit().success(), "{}", daemon.log());
    assert_eq!(files_below(&daemon.output).len(), 15);
    daemon.restart();
    assert!(!daemon.log().contains("recovered unfinished jobs"), "{}", daemon.log());
    let status = client.status(&job);
    assert!(status.is_err(), "a clean stop leaves nothing to recover");
    submit_images(&mut daemon.client(), &daemon.output, 2, 1);
}

// The tmpfs tests below are Unix-only: Windows has no `mount` and no tmpfs to fill or remount read-only.
#[cfg(unix)]
/// Mounts a small tmpfs at `dir` (root only). Returns false (and the test skips) where mounting is impossible.
fn mount_tmpfs(dir: &Path, options: &str) -> bool {
    std::fs::create_dir_all(dir).unwrap();
    let ok = is_root()
        && Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs at {} (needs root)", dir.display());
    }
    ok
}

#[cfg(unix)]
fn umount(dir: &Path) {
    let _ = Command::new("umount").arg(dir).status();
}

#[cfg(unix)]
fn image_state(client: &mut Client, job: &str) -> luna_daemon::protocol::ImageStatus {
    client.status(job).unwrap().images[0].clone()
}

/// Pass: on a full disk the image is reported `retrying` with the error, the daemon stays up and keeps the
/// segment; once space is freed the image is written.
#[cfg(unix)] // mounts a tmpfs
#[test]
fn disk_full_is_retried_until_space_is_freed() {
    let daemon = TestDaemon::start();
    let disk = daemon.dir.path().join("small-disk");
    if !mount_tmpfs(&disk, "size=256k") {
        return;
    }
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
fn a_read_only_output_dir_is_retried_and_can_be_cancelled() {
    let daemon = TestDaemon::start();
    let disk = daemon.dir.path().join("ro-disk");
    if !mount_tmpfs(&disk, "size=1m,ro") {
        return;
    }
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
fn a_read_only_output_dir_recovers_when_remounted_writable() {
    let daemon = TestDaemon::start();
    let disk = daemon.dir.path().join("ro-then-rw");
    if !mount_tmpfs(&disk, "size=1m,ro") {
        return;
    }
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
    let daemon = TestDaemon::start_with_env(
        &["--min-workers", "1", "--max-workers", "1"],
        &[("LUNA_DAEMON_TEST_SAVE_DELAY_MS", "1500")],
    );
    let mut client = daemon.client();
    let job = submit_images(&mut client, &daemon.output, 0, 1);
    for name in file_names(&daemon.spool) {
        std::fs::OpenOptions::new().write(true).open(daemon.spool.join(name)).unwrap().set_len(70).unwrap();
    }
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
    let idle: Vec<RawConn> = (0..1000).map(|_| RawConn::connect(&daemon.socket)).collect();
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
    let daemon = TestDaemon::start_with_env(
        &["--min-workers", "1", "--max-workers", "1", "--queue-budget-mib", "1", "--busy-wait-ms", "50"],
        &[("LUNA_DAEMON_TEST_SAVE_DELAY_MS", "400")],
    );
    let mut client = daemon.client();
    let big = luna_daemon::synthetic::rgb_f32(384, 384, 1); // 1.7 MiB as f32
    let image = ImageRef { width: 384, height: 384, channels: 3, pixels: Pixels::F32(&big) };
    let first = client.submit(&JobOptions::new(&daemon.output), &[image]).expect("an empty queue always has room");
    let err = client.submit(&JobOptions::new(&daemon.output), &[image]).unwrap_err();
    assert_eq!(err.code(), Some(ErrorCode::Busy), "{err}");
    assert!(err.to_string().contains("queue budget full"), "{err}");
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
