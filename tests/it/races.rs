//! Several clients saving into the same folder under the same name never overwrite each other.

use std::collections::HashSet;

use luna_daemon::client::{ImageRef, JobOptions, Pixels};
use luna_daemon::protocol::ImageState;

use crate::support::{TestDaemon, decode_png, file_names};

#[test]
fn racing_clients_with_the_same_file_name_never_overwrite() {
    let daemon = TestDaemon::start_with(&["--min-workers", "4", "--max-workers", "4"]);
    let clients = 4u8;
    let jobs_per_client = 5u8;
    let paths: Vec<(u8, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let daemon = &daemon;
                s.spawn(move || {
                    let mut client = daemon.client();
                    let options = JobOptions::new(&daemon.output);
                    let mut written = Vec::new();
                    for j in 0..jobs_per_client {
                        // Each image is one flat value, so its file tells who wrote it.
                        let value = c * 50 + j;
                        let pixels = vec![value; 16 * 16 * 3];
                        let image = ImageRef { width: 16, height: 16, channels: 3, pixels: Pixels::U8(&pixels) };
                        let job = client.submit(&options, &[image]).unwrap();
                        let status = client.wait(&job.job_id, |_| {}).unwrap();
                        assert_eq!(status.images[0].state, ImageState::Written, "{status:?}");
                        written.push((value, status.images[0].path.clone().unwrap()));
                    }
                    written
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let total = usize::from(clients) * usize::from(jobs_per_client);
    let unique: HashSet<&String> = paths.iter().map(|(_, p)| p).collect();
    assert_eq!(unique.len(), total, "two images were reported at the same path");
    assert_eq!(file_names(&daemon.output).len(), total, "{:?}", file_names(&daemon.output));
    for (value, path) in &paths {
        let (_, _, _, data) = decode_png(path.as_ref());
        assert!(data.iter().all(|b| b == value), "{path} holds another client's image");
    }
}

/// Regression (issue 12 #3): one lock serialised every client's submission planning (including reading and
/// checksumming metadata blobs of up to 64 MiB). Pass: while one client's submit is held in validation, another
/// client's submit is accepted and saved.
#[test]
fn a_submit_held_in_validation_does_not_block_another_clients_submit() {
    let daemon = TestDaemon::start();
    let hooks = daemon.hooks();
    hooks.hold_first("submit.validating", 1);
    let pixels = vec![4u8; 8 * 8 * 3];
    let image = ImageRef { width: 8, height: 8, channels: 3, pixels: Pixels::U8(&pixels) };
    let done = std::sync::atomic::AtomicBool::new(false);
    /// Lets the held submit go even when an assertion fails, so the scope's join cannot hang.
    struct ReleaseOnDrop<'a>(&'a crate::support::Hooks);
    impl Drop for ReleaseOnDrop<'_> {
        fn drop(&mut self) {
            self.0.release("submit.validating");
        }
    }
    std::thread::scope(|s| {
        let _release = ReleaseOnDrop(&hooks);
        let slow = s.spawn(|| daemon.client().submit(&JobOptions::new(daemon.output.join("slow")), &[image]));
        hooks.wait_reached("submit.validating", 1);
        let fast = s.spawn(|| {
            let mut client = daemon.client();
            let job = client.submit(&JobOptions::new(daemon.output.join("fast")), &[image]).unwrap();
            let status = client.wait(&job.job_id, |_| {}).unwrap();
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            status
        });
        crate::support::wait_until("the second client is served while the first is held", || {
            done.load(std::sync::atomic::Ordering::SeqCst)
        });
        assert_eq!(fast.join().unwrap().images[0].state, ImageState::Written);
        assert_eq!(hooks.reached("submit.validating"), 2, "the second submit passed the same point");
        hooks.release("submit.validating");
        slow.join().unwrap().expect("the held submit is accepted once released");
    });
}
