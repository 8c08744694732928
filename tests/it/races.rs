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
