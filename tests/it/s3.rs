//! S3-compatible object storage as an output root, against a real S3 server the tests start themselves:
//! `s3s-fs` (the s3s project's file-system-backed server, `cargo install s3s-fs --version 0.14.1 --features
//! binary --locked`; `.ci/run` installs it). It checks SigV4 signatures and `If-None-Match: *`, and keeps its
//! objects on disk, so it can be stopped and started again mid-batch with nothing lost on its side either.
//! Synchronisation is by fault holds (`s3.before_put`, `s3.after_put`) and polling status, never by sleeping.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use luna_daemon::client::{Client, ImageRef, JobOptions, Pixels};
use luna_daemon::protocol::{ErrorCode, ImageFormat, ImageState, JobStatus};

use crate::support::{TestDaemon, decode_png, file_names, files_below, wait_until};

const ACCESS_KEY: &str = "luna-test-key";
const SECRET_KEY: &str = "luna-test-secret";
const BUCKET: &str = "renders";

/// A running `s3s-fs` on a loopback port, serving the buckets under `data` (a bucket is a directory).
struct S3Server {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl S3Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data").join(BUCKET)).unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut server = Self { dir, port, child: None };
        server.restart();
        server
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again, on the same port and data) and waits until it accepts connections.
    fn restart(&mut self) {
        let exe = std::env::var("LUNA_S3S_FS").unwrap_or_else(|_| "s3s-fs".to_owned());
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("s3.log")).unwrap();
        let child = Command::new(&exe)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(self.data())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not start the S3 test server {exe:?}: {e}. Install it with `cargo install s3s-fs \
                     --version 0.14.1 --features binary --locked` (or name it in LUNA_S3S_FS)"
                )
            });
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "s3s-fs exited with {status}: {}",
                    std::fs::read_to_string(self.dir.path().join("s3.log")).unwrap()
                );
            }
            assert!(Instant::now() < deadline, "s3s-fs did not listen on {addr}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The daemon's environment for this server, with `secret` as the secret key.
    fn env_with_secret(&self, secret: &'static str) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", secret.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
        ]
    }

    /// Object keys in `bucket` (files below its directory, without the server's own metadata files).
    fn keys(&self, bucket: &str) -> Vec<String> {
        files_below(&self.data().join(bucket))
    }

    /// The upload id the daemon attached to the object (user metadata `luna-upload`), read from the metadata
    /// file s3s-fs keeps next to it (named after base64url(bucket) and base64url(key), no padding).
    fn upload_id(&self, bucket: &str, key: &str) -> Option<String> {
        let name =
            format!(".bucket-{}.object-{}.metadata.json", base64url(bucket.as_bytes()), base64url(key.as_bytes()));
        let text = std::fs::read_to_string(self.data().join(name)).ok()?;
        let value: serde_json::Value = serde_json::from_str(&text).ok()?;
        value["user_metadata"]["luna-upload"].as_str().map(str::to_owned)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn start_daemon(server: &S3Server, secret: &'static str, extra: &[&str]) -> TestDaemon {
    let env = server.env_with_secret(secret);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestDaemon::start_with_env(extra, &env)
}

fn restart_daemon(daemon: &mut TestDaemon, server: &S3Server, secret: &'static str, extra: &[&str]) {
    let env = server.env_with_secret(secret);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    daemon.restart_with_env(extra, &env);
}

/// A distinct, recognisable image per (job, index).
fn pixels(job: usize, index: usize) -> Vec<u8> {
    (0..32 * 24 * 3).map(|i| ((i * 5 + job * 37 + index * 11) % 253) as u8).collect()
}

fn submit(client: &mut Client, root: &str, job: usize, count: usize, options: impl FnOnce(&mut JobOptions)) -> String {
    let data: Vec<Vec<u8>> = (0..count).map(|i| pixels(job, i)).collect();
    let images: Vec<ImageRef<'_>> =
        data.iter().map(|p| ImageRef { width: 32, height: 24, channels: 3, pixels: Pixels::U8(p) }).collect();
    let mut o = JobOptions::new(root);
    options(&mut o);
    client.submit(&o, &images).unwrap().job_id
}

/// `%XX` sequences decoded (the URL in status is percent-encoded).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// Every image written, each object decoding to the pixels it came from; returns the keys, in image order.
fn check_written(server: &S3Server, status: &JobStatus, job: usize) -> Vec<String> {
    let prefix = format!("s3://{BUCKET}/");
    status
        .images
        .iter()
        .map(|image| {
            assert_eq!(image.state, ImageState::Written, "{image:?}");
            let path = image.path.as_deref().unwrap();
            let key = path.strip_prefix(&prefix).unwrap_or_else(|| panic!("{path} is not in s3://{BUCKET}/"));
            let url = image.url.as_deref().unwrap();
            assert_eq!(percent_decode(url), format!("{}/{BUCKET}/{key}", server.endpoint()), "the object URL");
            let (_, _, _, data) = decode_png(&server.data().join(BUCKET).join(key));
            assert_eq!(data, pixels(job, image.index as usize), "{key}");
            assert_eq!(image.bytes, Some(std::fs::metadata(server.data().join(BUCKET).join(key)).unwrap().len()));
            key.to_owned()
        })
        .collect()
}

/// Everything in the staging directory.
fn leftovers(daemon: &TestDaemon) -> Vec<String> {
    file_names(&daemon.state.join("uploads"))
}

/// Complete staging files (not a `.tmp` one still being written).
fn staged(daemon: &TestDaemon) -> Vec<String> {
    file_names(&daemon.state.join("uploads")).into_iter().filter(|n| !n.ends_with(".tmp")).collect()
}

/// Pass: images land as objects under the prefix with the file rules (templates, affix folder, batch index);
/// a name already taken, by another writer's object or an earlier job, gets the next counter suffix and the
/// existing object is untouched (conditional create); status reports `s3://` paths and the object URLs.
#[test]
fn uploads_never_overwrite_and_take_the_counter_suffix_like_files() {
    let server = S3Server::start();
    let daemon = start_daemon(&server, SECRET_KEY, &[]);
    assert!(daemon.client().welcome().features.iter().any(|f| f == "s3_output"));
    // Another writer's object under the first name.
    let dir = server.data().join(BUCKET).join("farm/foo_v60/ORIG");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("shot_ORIG_0.png"), b"someone else's").unwrap();
    let mut client = daemon.client();
    let set = |o: &mut JobOptions| {
        o.save_path = "%model_name%".to_owned();
        o.filename = "shot".to_owned();
        o.affix = "ORIG".to_owned();
        o.model_name = "Illustrious/foo_v60.safetensors".to_owned();
    };
    let first = submit(&mut client, &format!("s3://{BUCKET}/farm"), 0, 2, set);
    let first = client.wait(&first, |_| {}).unwrap();
    assert_eq!(
        check_written(&server, &first, 0),
        ["farm/foo_v60/ORIG/shot_ORIG_0_00001.png", "farm/foo_v60/ORIG/shot_ORIG_1.png"]
    );
    let second = submit(&mut client, &format!("s3://{BUCKET}/farm/"), 1, 2, set);
    let second = client.wait(&second, |_| {}).unwrap();
    assert_eq!(
        check_written(&server, &second, 1),
        ["farm/foo_v60/ORIG/shot_ORIG_0_00002.png", "farm/foo_v60/ORIG/shot_ORIG_1_00001.png"]
    );
    assert_eq!(std::fs::read(dir.join("shot_ORIG_0.png")).unwrap(), b"someone else's", "never overwritten");
    // Formats as for files: a WebP gets its extension and content.
    let webp = submit(&mut client, &format!("s3://{BUCKET}"), 2, 1, |o| o.format = ImageFormat::Webp);
    let webp = client.wait(&webp, |_| {}).unwrap();
    assert_eq!(webp.images[0].path.as_deref(), Some("s3://renders/luna.webp"));
    let bytes = std::fs::read(server.data().join(BUCKET).join("luna.webp")).unwrap();
    assert_eq!(&bytes[8..12], b"WEBP");
    // Keys that need percent-encoding in the signed URL: a space, `+`, `%`, `&`, `=` and non-ASCII text.
    let odd = "shot 1+1=2 %20 & été";
    let job = submit(&mut client, &format!("s3://{BUCKET}/odd names"), 3, 1, |o| o.filename = odd.to_owned());
    let status = client.wait(&job, |_| {}).unwrap();
    assert_eq!(check_written(&server, &status, 3), [format!("odd names/{odd}.png")]);
    assert!(leftovers(&daemon).is_empty(), "nothing staged once uploaded: {:?}", leftovers(&daemon));
}

/// Pass: with the server killed mid-batch, the images not yet stored are `retrying` with the endpoint's error
/// and their encoded bytes staged; once it is back, every image is stored exactly once (no counter suffix: no
/// duplicate), each with its own pixels, and nothing stays staged.
#[test]
fn the_server_stopped_and_restarted_mid_batch_loses_and_duplicates_nothing() {
    let mut server = S3Server::start();
    let daemon = start_daemon(&server, SECRET_KEY, &["--min-workers", "1", "--max-workers", "1"]);
    let hooks = daemon.hooks();
    hooks.hold_after("s3.before_put", 3);
    let mut client = daemon.client();
    let job = submit(&mut client, &format!("s3://{BUCKET}/batch"), 0, 8, |_| {});
    hooks.wait_reached("s3.before_put", 4);
    assert_eq!(server.keys(BUCKET).len(), 3, "three stored before the server goes down");
    server.stop();
    hooks.release("s3.before_put");
    wait_until("every pending image is retrying", || {
        let status = client.status(&job).unwrap();
        status.images.iter().filter(|i| i.state == ImageState::Retrying).count() == 5
    });
    let status = client.status(&job).unwrap();
    let retrying = status.images.iter().find(|i| i.state == ImageState::Retrying).unwrap();
    let error = retrying.error.as_ref().unwrap();
    assert_eq!(error.code, ErrorCode::SaveFailed);
    assert!(error.message.contains("unreachable"), "{}", error.message);
    assert!(!status.segments_released, "the pixels stay daemon-owned while uploads are pending");
    assert_eq!(staged(&daemon).len(), 5, "{:?}", staged(&daemon));
    server.restart();
    let status = client.wait(&job, |_| {}).unwrap();
    let keys = check_written(&server, &status, 0);
    let expected: Vec<String> = (0..8).map(|i| format!("batch/luna_{i}.png")).collect();
    assert_eq!(keys, expected);
    assert_eq!(server.keys(BUCKET), {
        let mut sorted = expected.clone();
        sorted.sort();
        sorted
    });
    assert!(leftovers(&daemon).is_empty(), "{:?}", leftovers(&daemon));
}

/// Pass: the daemon is SIGKILLed right after the server stored an object (before the daemon journaled it)
/// and with the other uploads still pending; after a restart every image is stored, and the one stored
/// before the kill is recognised by its upload id instead of being stored a second time.
#[test]
fn a_daemon_killed_with_uploads_pending_uploads_everything_after_restart_once() {
    let server = S3Server::start();
    let one_worker = ["--min-workers", "1", "--max-workers", "1"];
    let mut daemon = start_daemon(&server, SECRET_KEY, &one_worker);
    let hooks = daemon.hooks();
    hooks.hold_after("s3.after_put", 2);
    let mut client = daemon.client();
    let job = submit(&mut client, &format!("s3://{BUCKET}/crash"), 3, 6, |_| {});
    hooks.wait_reached("s3.after_put", 3);
    daemon.kill();
    hooks.release("s3.after_put");
    assert_eq!(server.keys(BUCKET).len(), 3, "the third object is stored, its image not yet journaled");
    drop(client);
    restart_daemon(&mut daemon, &server, SECRET_KEY, &one_worker);
    let status = daemon.client().wait(&job, |_| {}).unwrap();
    let keys = check_written(&server, &status, 3);
    assert_eq!(keys, (0..6).map(|i| format!("crash/luna_{i}.png")).collect::<Vec<_>>(), "no duplicate");
    assert_eq!(server.keys(BUCKET).len(), 6);
    assert_eq!(server.upload_id(BUCKET, "crash/luna_2.png"), Some(format!("{job}/2")));
    assert!(daemon.log().contains("object already stored by an earlier attempt of this upload"));
    assert!(leftovers(&daemon).is_empty(), "{:?}", leftovers(&daemon));
}

/// Pass: with the server down, the daemon stages every image, is killed, and after both come back every
/// image is uploaded from what was staged.
#[test]
fn uploads_staged_while_the_server_was_down_survive_a_daemon_crash() {
    let mut server = S3Server::start();
    let mut daemon = start_daemon(&server, SECRET_KEY, &[]);
    server.stop();
    let mut client = daemon.client();
    let job = submit(&mut client, &format!("s3://{BUCKET}"), 4, 4, |o| o.filename = "down".to_owned());
    wait_until("all four are staged", || staged(&daemon).len() == 4);
    daemon.kill();
    drop(client);
    server.restart();
    restart_daemon(&mut daemon, &server, SECRET_KEY, &[]);
    let status = daemon.client().wait(&job, |_| {}).unwrap();
    assert_eq!(check_written(&server, &status, 4).len(), 4);
    assert_eq!(server.keys(BUCKET), ["down_0.png", "down_1.png", "down_2.png", "down_3.png"]);
    assert!(leftovers(&daemon).is_empty(), "{:?}", leftovers(&daemon));
}

/// Pass: refused credentials and a missing bucket are each a clear error in status (`retrying`, the image
/// kept: staged, its segment held); fixing the cause (the right secret and a restart; creating the bucket)
/// stores it.
#[test]
fn bad_credentials_and_a_missing_bucket_are_clear_errors_and_keep_the_image() {
    let server = S3Server::start();
    let mut daemon = start_daemon(&server, "not-the-secret", &[]);
    let mut client = daemon.client();
    let job = submit(&mut client, &format!("s3://{BUCKET}"), 5, 1, |_| {});
    wait_until("the image is retrying", || client.status(&job).unwrap().images[0].state == ImageState::Retrying);
    let status = client.status(&job).unwrap();
    let message = &status.images[0].error.as_ref().unwrap().message;
    assert!(message.contains("HTTP 403") && message.contains("refused the credentials"), "{message}");
    assert!(!status.segments_released);
    assert_eq!(staged(&daemon).len(), 1);
    assert!(server.keys(BUCKET).is_empty());
    daemon.sigterm();
    assert!(daemon.wait_exit().success());
    drop(client);
    restart_daemon(&mut daemon, &server, SECRET_KEY, &[]);
    let mut client = daemon.client();
    let status = client.wait(&job, |_| {}).unwrap();
    assert_eq!(check_written(&server, &status, 5), ["luna.png"]);

    let missing = submit(&mut client, "s3://no-such-bucket/x", 6, 1, |_| {});
    wait_until("the image is retrying", || client.status(&missing).unwrap().images[0].state == ImageState::Retrying);
    let status = client.status(&missing).unwrap();
    let message = &status.images[0].error.as_ref().unwrap().message;
    assert!(message.contains("NoSuchBucket") && message.contains("does not exist"), "{message}");
    std::fs::create_dir(server.data().join("no-such-bucket")).unwrap();
    let status = client.wait(&missing, |_| {}).unwrap();
    assert_eq!(status.images[0].path.as_deref(), Some("s3://no-such-bucket/x/luna.png"));
    assert_eq!(decode_png(&server.data().join("no-such-bucket/x/luna.png")).3, pixels(6, 0));
}

/// Pass: without S3 configured an `s3://` root is refused at submit (nothing accepted, the client saves
/// locally), and a bad bucket name or an escaping prefix is refused with the reason.
#[test]
fn s3_roots_are_refused_at_submit_when_not_configured_or_invalid() {
    let daemon = TestDaemon::start();
    let mut client = daemon.client();
    assert!(!client.welcome().features.iter().any(|f| f == "s3_output"));
    let image = pixels(0, 0);
    let images = [ImageRef { width: 32, height: 24, channels: 3, pixels: Pixels::U8(&image) }];
    let refused = |client: &mut Client, root: &str| {
        let err = client.submit(&JobOptions::new(root), &images).unwrap_err();
        assert_eq!(err.code(), Some(ErrorCode::InvalidJob), "{err}");
        err.to_string()
    };
    let err = refused(&mut client, "s3://renders/x");
    assert!(err.contains("has no S3 configuration"), "{err}");
    let err = refused(&mut client, "s3://Not_A_Bucket/x");
    assert!(err.contains("is not a valid bucket name"), "{err}");
    let err = refused(&mut client, "s3://renders/../x");
    assert!(err.contains("the key prefix is refused"), "{err}");
}

/// Pass: uploads staged while the server was down survive a reboot that cleared shared memory (the segments
/// and the job's metadata blob are gone): after the restart every image is uploaded from its staged bytes,
/// metadata included, none reported `lost`.
#[test]
fn staged_uploads_survive_a_reboot_that_cleared_shared_memory() {
    let mut server = S3Server::start();
    let mut daemon = start_daemon(&server, SECRET_KEY, &[]);
    server.stop();
    let mut client = daemon.client();
    // Over the inline limit, so the metadata travels in the segment as a blob.
    let prompt = format!("{{\"x\": \"{}\"}}", "a".repeat(20_000));
    let job = submit(&mut client, &format!("s3://{BUCKET}/reboot"), 7, 3, |o| {
        o.metadata = Some(luna_daemon::protocol::JobMetadata { prompt: Some(prompt.clone()), ..Default::default() });
    });
    wait_until("all three are staged", || staged(&daemon).len() == 3);
    daemon.kill();
    drop(client);
    for name in file_names(&daemon.spool) {
        std::fs::remove_file(daemon.spool.join(name)).unwrap(); // as a reboot clears tmpfs
    }
    server.restart();
    restart_daemon(&mut daemon, &server, SECRET_KEY, &[]);
    let status = daemon.client().wait(&job, |_| {}).unwrap();
    assert_eq!(check_written(&server, &status, 7), ["reboot/luna_0.png", "reboot/luna_1.png", "reboot/luna_2.png"]);
    let bytes = std::fs::read(server.data().join(BUCKET).join("reboot/luna_1.png")).unwrap();
    let needle = format!("prompt\0{prompt}");
    assert!(bytes.windows(needle.len()).any(|w| w == needle.as_bytes()), "the staged bytes carry the metadata");
    assert!(leftovers(&daemon).is_empty(), "{:?}", leftovers(&daemon));
}

/// Pass: cancelling an upload that keeps failing ends it as `cancelled`, hands its segment back and removes its
/// staged bytes (when its retry comes due).
#[test]
fn a_cancelled_upload_leaves_no_staged_bytes() {
    let server = S3Server::start();
    let daemon = start_daemon(&server, "not-the-secret", &[]);
    let mut client = daemon.client();
    let job = submit(&mut client, &format!("s3://{BUCKET}"), 8, 1, |_| {});
    wait_until("the image is retrying", || client.status(&job).unwrap().images[0].state == ImageState::Retrying);
    assert_eq!(staged(&daemon).len(), 1);
    assert_eq!(client.cancel(&job).unwrap(), 1);
    let status = client.wait(&job, |_| {}).unwrap();
    assert_eq!(status.images[0].error.as_ref().unwrap().code, ErrorCode::Cancelled);
    wait_until("the staged bytes are gone", || leftovers(&daemon).is_empty());
    assert!(server.keys(BUCKET).is_empty());
}

/// `luna-daemon doctor --json --output-dir <root>` with `env` (and nothing else of the caller's AWS settings):
/// its exit code and findings by check name.
fn doctor(root: &str, env: &[(&str, String)]) -> (i32, BTreeMap<String, (String, String, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(crate::support::daemon_exe());
    command
        .args(["doctor", "--json", "--output-dir", root])
        .arg("--socket")
        .arg(dir.path().join("luna.sock"))
        .arg("--spool-dir")
        .arg(dir.path().join("spool"))
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    for key in ["AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_SESSION_TOKEN"] {
        command.env_remove(key);
    }
    let out = command.envs(env.iter().map(|(k, v)| (*k, v.as_str()))).output().unwrap();
    let findings: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let by_check = findings
        .iter()
        .filter(|f| f["check"].as_str().unwrap().starts_with("s3"))
        .map(|f| {
            let text = |k: &str| f[k].as_str().unwrap().to_owned();
            (text("check"), (text("outcome"), text("detail"), text("hint")))
        })
        .collect();
    (out.status.code().unwrap(), by_check)
}

fn outcomes(findings: &BTreeMap<String, (String, String, String)>) -> Vec<(&str, &str)> {
    let order = ["s3 config", "s3 endpoint", "s3 credentials", "s3 bucket", "s3 conditional create"];
    order.iter().filter_map(|c| findings.get(*c).map(|f| (*c, f.0.as_str()))).collect()
}

/// Pass: `doctor` checks an S3 output root step by step against the real server: all fine (and its probe
/// object deleted again), refused credentials, a missing bucket, the endpoint down, S3 not configured.
#[test]
fn doctor_checks_an_s3_root_endpoint_credentials_bucket_and_conditional_create() {
    let mut server = S3Server::start();
    let root = format!("s3://{BUCKET}/farm");
    let (code, found) = doctor(&root, &server.env_with_secret(SECRET_KEY));
    assert_eq!(
        outcomes(&found),
        [
            ("s3 config", "ok"),
            ("s3 endpoint", "ok"),
            ("s3 credentials", "ok"),
            ("s3 bucket", "ok"),
            ("s3 conditional create", "ok")
        ],
        "{found:?}"
    );
    assert_eq!(code, 0, "{found:?}");
    let create = &found["s3 conditional create"].1;
    assert!(create.starts_with("If-None-Match: * is honoured (a second create of s3://renders/farm/.luna-doctor-"));
    assert!(!create.contains("could not be deleted"), "{create}");
    assert!(server.keys(BUCKET).is_empty(), "the probe object is deleted: {:?}", server.keys(BUCKET));
    assert!(found["s3 config"].1.contains(&server.endpoint()) && found["s3 config"].1.contains("signed"));

    let (code, found) = doctor(&root, &server.env_with_secret("not-the-secret"));
    assert_eq!(code, 1);
    assert_eq!(outcomes(&found), [("s3 config", "ok"), ("s3 endpoint", "ok"), ("s3 credentials", "fail")]);
    let (_, detail, hint) = &found["s3 credentials"];
    assert_eq!(detail, &format!("{}/ refused the credentials for s3://renders (HTTP 403)", server.endpoint()));
    assert!(hint.starts_with("check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"), "{hint}");

    let (code, found) = doctor("s3://no-such-bucket", &server.env_with_secret(SECRET_KEY));
    assert_eq!(code, 1);
    assert_eq!(found["s3 bucket"].0, "fail");
    assert_eq!(found["s3 bucket"].1, format!("the bucket \"no-such-bucket\" does not exist at {}/", server.endpoint()));
    assert!(!found.contains_key("s3 conditional create"));

    server.stop();
    let (code, found) = doctor(&root, &server.env_with_secret(SECRET_KEY));
    assert_eq!(code, 1);
    assert_eq!(outcomes(&found), [("s3 config", "ok"), ("s3 endpoint", "fail")]);
    assert!(found["s3 endpoint"].1.starts_with(&format!("cannot reach {}/: S3 endpoint", server.endpoint())));
    assert!(found["s3 endpoint"].2.starts_with("is the S3 server running"));

    let (code, found) = doctor(&root, &[]);
    assert_eq!(code, 1);
    assert_eq!(
        found["s3 config"],
        (
            "fail".to_owned(),
            "s3://renders is an S3 output root, but no S3 endpoint or credentials are configured".to_owned(),
            "set AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_REGION), or s3_endpoint, \
             s3_access_key_id, s3_secret_access_key in the config file, for the daemon and for doctor"
                .to_owned()
        )
    );
    let (_, found) = doctor("s3://No_Such", &server.env_with_secret(SECRET_KEY));
    assert_eq!(found["s3 config"].0, "fail");
    assert!(found["s3 config"].1.contains("No_Such"), "{:?}", found["s3 config"]);
}

/// Pass: an endpoint that ignores `If-None-Match: *` (here a stand-in that answers 200 to everything, which is
/// what such an endpoint does; s3s-fs honours it) fails the conditional-create check with the reason.
#[test]
fn doctor_fails_an_endpoint_that_ignores_conditional_creates() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    // Not joined: a doctor that stopped early must fail the assertions below, not hang the test.
    std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Read, Write};
        // HEAD bucket, PUT, PUT again, DELETE: four requests, each on its own connection or kept alive.
        let mut served = 0;
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 {
                    break;
                }
                let mut length = 0usize;
                loop {
                    let mut header = String::new();
                    reader.read_line(&mut header).unwrap();
                    if header.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap();
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
                served += 1;
                if served == 4 {
                    return;
                }
            }
        }
    });
    let env = [
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
    ];
    let (code, found) = doctor("s3://renders", &env);
    assert_eq!(code, 1);
    let (outcome, detail, hint) = &found["s3 conditional create"];
    assert_eq!(outcome, "fail");
    assert!(detail.starts_with("the endpoint ignores If-None-Match: * (a second create of s3://renders/.luna-doctor-"));
    assert!(hint.starts_with("this endpoint cannot guarantee that no object is overwritten"), "{hint}");
}
