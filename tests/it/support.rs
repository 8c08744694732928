//! The test fixture: a real daemon process in a temp dir, and raw protocol helpers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use interprocess::local_socket::{Stream, prelude::*};
use luna_daemon::client::Client;
use luna_daemon::ipc::connect_name;
use luna_daemon::protocol::{
    self, Hello, ImageDescriptor, PROTOCOL_NAME, PROTOCOL_VERSION, Request, Response, SampleType,
};

/// The daemon binary built by cargo for these tests.
pub fn daemon_exe() -> &'static str {
    env!("CARGO_BIN_EXE_luna-daemon")
}

/// A daemon process with its own socket, spool and state directories.
pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub spool: PathBuf,
    pub state: PathBuf,
    pub output: PathBuf,
    child: Option<Child>,
}

impl TestDaemon {
    /// Starts a daemon and waits until it answers a handshake.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a daemon with extra `serve` flags.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_with_env(extra, &[])
    }

    /// Starts a daemon with extra `serve` flags and environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let socket = dir.path().join("run").join("luna.sock");
        let spool = dir.path().join("spool");
        let state = dir.path().join("state");
        let output = dir.path().join("out");
        let mut daemon = Self { dir, socket, spool, state, output, child: None };
        daemon.spawn(extra, env);
        daemon
    }

    /// The `serve` command for this daemon's directories.
    pub fn serve_command(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new(daemon_exe());
        cmd.arg("--log")
            .arg("debug")
            .arg("--socket")
            .arg(&self.socket)
            .arg("serve")
            .arg("--spool-dir")
            .arg(&self.spool)
            .args(extra)
            .env_remove("LUNA_DAEMON_CONFIG")
            .env("XDG_CONFIG_HOME", self.dir.path().join("no-config"));
        if !extra.contains(&"--state-dir") {
            cmd.arg("--state-dir").arg(&self.state);
        }
        cmd
    }

    fn spawn(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("daemon.log"))
            .expect("log file");
        let mut cmd = self.serve_command(extra);
        let hooks = self.hooks();
        std::fs::create_dir_all(&hooks.dir).expect("hooks dir");
        cmd.env(luna_daemon::fault::HOOKS_ENV, &hooks.dir);
        cmd.envs(env.iter().copied());
        let child = cmd.stdout(Stdio::null()).stderr(log).spawn().expect("spawn daemon");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Polls until a handshake succeeds (no fixed sleep); panics with the daemon's log if it exits first.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if Client::connect(&self.socket, "probe").is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("try_wait")) {
                panic!("daemon exited early with {status}:\n{}", self.log());
            }
            assert!(Instant::now() < deadline, "daemon did not become ready:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A connected client.
    pub fn client(&self) -> Client {
        Client::connect(&self.socket, "it-test").expect("connect")
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILLs the daemon.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits for the daemon to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.child.take().expect("running").wait().expect("wait")
    }

    /// Starts the daemon again in the same directories.
    pub fn restart(&mut self) {
        self.spawn(&[], &[]);
    }

    /// Starts the daemon again in the same directories, with extra `serve` flags and environment variables.
    #[cfg(unix)] // used by the S3 tests, which are Unix-only (tests/it/main.rs)
    pub fn restart_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) {
        self.spawn(extra, env);
    }

    /// The daemon's resident memory in KiB (Linux: read from `/proc`).
    #[cfg(target_os = "linux")]
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        self.kill();
    }
}

impl TestDaemon {
    /// This daemon's test hooks (`src/fault.rs`): holds and injected failures.
    pub fn hooks(&self) -> Hooks {
        Hooks { dir: self.dir.path().join("hooks") }
    }

    /// Sends SIGTERM.
    #[cfg(unix)]
    pub fn sigterm(&self) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), nix::sys::signal::SIGTERM).unwrap();
    }

    /// Stops the daemon from outside: SIGTERM on Unix (what a service manager sends); on Windows, which has no
    /// SIGTERM, a `stop` request on a connection of its own (what `luna-daemon stop` sends).
    pub fn request_stop(&self) {
        #[cfg(unix)]
        self.sigterm();
        #[cfg(not(unix))]
        Client::connect(&self.socket, "stopper").expect("connect").stop().expect("stop");
    }
}

/// Arms and releases a daemon's fault-injection points (see `src/fault.rs`): the daemon waits at a held point
/// until the test releases it, so a race or crash window is reproduced exactly, never by timing.
pub struct Hooks {
    pub dir: PathBuf,
}

impl Hooks {
    /// Holds every caller reaching `point`.
    pub fn hold(&self, point: &str) {
        self.hold_after(point, 0);
    }

    /// Lets the first `passes` callers of `point` through, then holds the rest.
    pub fn hold_after(&self, point: &str, passes: usize) {
        std::fs::write(self.dir.join(format!("{point}.hold")), passes.to_string()).unwrap();
    }

    /// Holds only the first `callers` reaching `point`; later ones pass.
    pub fn hold_first(&self, point: &str, callers: usize) {
        std::fs::write(self.dir.join(format!("{point}.hold")), format!("first {callers}")).unwrap();
    }

    /// Lets every held caller of `point` go (and later ones pass).
    pub fn release(&self, point: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{point}.hold")));
    }

    /// How many callers have reached `point` while it was armed.
    pub fn reached(&self, point: &str) -> usize {
        std::fs::read_to_string(self.dir.join(format!("{point}.reached"))).map(|r| r.lines().count()).unwrap_or(0)
    }

    /// Waits (polling, with a deadline) until `times` callers have reached `point`.
    pub fn wait_reached(&self, point: &str, times: usize) {
        wait_until(&format!("{point} is reached {times} times"), || self.reached(point) >= times);
    }

    /// Makes the operation at `point` fail until [`Hooks::heal`].
    pub fn fail(&self, point: &str) {
        std::fs::write(self.dir.join(format!("{point}.fail")), b"").unwrap();
    }

    /// Stops injecting failures at `point`.
    pub fn heal(&self, point: &str) {
        let _ = std::fs::remove_file(self.dir.join(format!("{point}.fail")));
    }
}

/// A raw connection for sending hand-made frames.
pub struct RawConn {
    pub stream: Stream,
}

impl RawConn {
    pub fn connect(socket: &Path) -> Self {
        Self { stream: Stream::connect(connect_name(socket).unwrap()).expect("connect") }
    }

    /// Connects and completes the handshake.
    pub fn handshaken(socket: &Path) -> Self {
        let mut conn = Self::connect(socket);
        let reply = conn.request(&Request::Hello(hello(PROTOCOL_VERSION)));
        assert!(matches!(reply, Response::Welcome(_)), "{reply:?}");
        conn
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        use std::io::Write;
        self.stream.write_all(bytes).expect("send");
    }

    pub fn send_frame(&mut self, body: &[u8]) {
        protocol::write_frame(&mut self.stream, body).expect("send frame");
    }

    pub fn read_reply(&mut self) -> Response {
        let body = protocol::read_frame(&mut self.stream).expect("reply frame");
        protocol::decode_message(&body).expect("reply decodes")
    }

    pub fn request(&mut self, request: &Request) -> Response {
        self.send_frame(&protocol::encode_message(request).unwrap());
        self.read_reply()
    }

    /// True once the daemon has closed the connection.
    pub fn is_closed(&mut self) -> bool {
        matches!(protocol::read_frame(&mut self.stream), Err(protocol::FrameError::Closed))
    }

    /// True once the daemon has closed the connection, cleanly or with a reset (it had unread bytes).
    pub fn is_closed_or_reset(&mut self) -> bool {
        match protocol::read_frame(&mut self.stream) {
            Err(protocol::FrameError::Closed) => true,
            Err(protocol::FrameError::Io(e)) => e.kind() == std::io::ErrorKind::ConnectionReset,
            _ => false,
        }
    }
}

/// A 4x4 RGB u8 image at the start of `segment`'s data (for hand-made submissions).
pub fn rgb_u8_4x4(segment: &str) -> ImageDescriptor {
    ImageDescriptor {
        segment: segment.to_owned(),
        offset: luna_daemon::shm::HEADER_LEN,
        length: 48,
        width: 4,
        height: 4,
        channels: 3,
        dtype: SampleType::U8,
        row_stride: 12,
        crc32: None,
    }
}

pub fn hello(version: u32) -> Hello {
    Hello { protocol: PROTOCOL_NAME.to_owned(), version, client: "raw-test".to_owned(), pid: Some(std::process::id()) }
}

/// Reads a little-endian float32 `.npy` file: (shape, data).
pub fn read_npy_f32(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).expect("read npy");
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12),
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len]).unwrap();
    assert!(header.contains("'descr': '<f4'") && header.contains("'fortran_order': False"), "{header}");
    let shape_text = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape: Vec<usize> = shape_text.split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let data = bytes[start + header_len..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (shape, data)
}

/// The shared reference folder of ComfyUI's own files, `../shared/reference/comfyui` next to the repository.
/// Tests that compare against it fail (never pass quietly) when it is missing; on CI (`CI=true`) the message
/// says the CI set-up is broken.
pub fn reference_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/comfyui");
    if !dir.is_dir() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        panic!(
            "the reference files are missing: expected {} (ComfyUI's own saves; see its README){}",
            dir.display(),
            if ci { ". CI must provide them next to the repository" } else { "" }
        );
    }
    dir
}

/// Decodes a PNG into (width, height, channels, pixels) without conversion.
pub fn decode_png(path: &Path) -> (u32, u32, u8, Vec<u8>) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
    let (w, h) = (img.width(), img.height());
    match img {
        image::DynamicImage::ImageLuma8(b) => (w, h, 1, b.into_raw()),
        image::DynamicImage::ImageRgb8(b) => (w, h, 3, b.into_raw()),
        image::DynamicImage::ImageRgba8(b) => (w, h, 4, b.into_raw()),
        other => panic!("unexpected color type {:?}", other.color()),
    }
}

/// Files in `dir` (names), sorted.
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Polls `f` until it returns true, panicking with `what` after a generous deadline (never a fixed sleep).
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files below `dir`, recursively, as paths relative to it with `/` between folders (on every platform), sorted.
pub fn files_below(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push(relative.replace(std::path::MAIN_SEPARATOR, "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
