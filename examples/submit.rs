//! A minimal submitter: generates one test image, hands it to a running daemon and waits for the file.
//!
//! ```sh
//! cargo run --release -- serve &                      # start the daemon
//! cargo run --example submit -- /tmp/luna-example     # submit one 512x512 image
//! ```

use luna_daemon::client::{Client, ImageRef, JobOptions, Pixels};
use luna_daemon::protocol::ImageState;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let output_dir = std::env::args().nth(1).unwrap_or_else(|| "luna-example-output".to_owned());

    // Connect (honouring LUNA_DAEMON_SOCKET) and shake hands.
    let socket =
        std::env::var_os("LUNA_DAEMON_SOCKET").map(Into::into).unwrap_or_else(luna_daemon::paths::default_socket);
    let mut client = Client::connect(&socket, "example-submit")?;
    println!("connected to luna-daemon {}", client.welcome().daemon_version);

    // Pixels as ComfyUI has them: float32 RGB in 0..1, row-major.
    let (width, height) = (512, 512);
    let pixels = luna_daemon::synthetic::rgb_f32(width, height, 42);
    let image = ImageRef { width, height, channels: 3, pixels: Pixels::F32(&pixels) };

    // Submit: the pixels are copied into a warm shared-memory segment and the call returns once the
    // daemon has accepted the job.
    let mut options = JobOptions::new(&output_dir);
    options.filename = "example".to_owned();
    let accepted = client.submit(&options, &[image])?;
    println!("submitted job {}", accepted.job_id);

    // Optionally wait for the file.
    let status = client.wait(&accepted.job_id, |_| {})?;
    for image in &status.images {
        match image.state {
            ImageState::Written => println!("wrote {}", image.path.as_deref().unwrap_or("?")),
            _ => println!("image {}: {:?} {:?}", image.index, image.state, image.error),
        }
    }
    Ok(())
}
