//! `luna-daemon doctor`: checks the set-up users get wrong and says what to do about each problem.

use std::path::{Path, PathBuf};

use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::protocol::PROTOCOL_VERSION;
use crate::s3::{ObjectRoot, ObjectStore, S3_SCHEME, S3Config};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Fine.
    Ok,
    /// Works, but worth knowing or fixing.
    Warn,
    /// Broken: saving through the daemon will not work like this.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// What was checked.
    pub check: &'static str,
    /// How it came out.
    pub outcome: Outcome,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty when nothing).
    pub hint: String,
}

fn finding(check: &'static str, outcome: Outcome, detail: impl Into<String>, hint: impl Into<String>) -> Finding {
    Finding { check, outcome, detail: detail.into(), hint: hint.into() }
}

/// Below this much free space in the spool, a few large batches no longer fit.
const SPOOL_WARN_BYTES: u64 = 512 << 20;
/// Docker's default `/dev/shm` size: too small for real use.
const SPOOL_FAIL_BYTES: u64 = 64 << 20;

/// Runs every check. `output_dir` and `client_protocol` are checked when given; an `output_dir` of the form
/// `s3://bucket/prefix` is checked as an object-storage root ([`object_root`]).
pub fn run(config: &Config, output_dir: Option<&Path>, client_protocol: Option<u32>) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(dir) = config.socket.parent().filter(|_| cfg!(unix)) {
        findings.push(private_dir("socket directory", dir));
    }
    findings.push(daemon(config));
    findings.push(instance(config));
    findings.push(private_dir("spool directory", &config.spool_dir));
    findings.extend(spool_space(&config.spool_dir));
    findings.push(private_dir("state directory", &config.state_dir));
    match output_dir.and_then(|d| d.to_str()).and_then(ObjectRoot::parse) {
        Some(root) => findings.extend(object_root(config, root)),
        None => findings.extend(output_dir.map(output_writable)),
    }
    if let Some(version) = client_protocol {
        findings.push(if version == PROTOCOL_VERSION {
            finding("client protocol", Outcome::Ok, format!("client and daemon speak protocol {version}"), "")
        } else {
            finding(
                "client protocol",
                Outcome::Fail,
                format!("the client speaks protocol {version}, this daemon speaks {PROTOCOL_VERSION}"),
                "upgrade the older of the two (node pack or daemon) so both speak the same version",
            )
        });
    }
    findings
}

fn private_dir(check: &'static str, dir: &Path) -> Finding {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return finding(
                check,
                Outcome::Ok,
                format!("{} does not exist yet", dir.display()),
                "`serve` creates it (0700)",
            );
        }
        Err(e) => {
            return finding(check, Outcome::Fail, format!("{}: {e}", dir.display()), "check the path and its parents");
        }
    };
    if !meta.is_dir() {
        return finding(
            check,
            Outcome::Fail,
            format!("{} is not a directory", dir.display()),
            "remove it or choose another path",
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = crate::paths::user_id();
        if meta.uid() != me {
            return finding(
                check,
                Outcome::Fail,
                format!("{} belongs to user id {}, not to you ({me})", dir.display(), meta.uid()),
                "use a directory of your own (set XDG_RUNTIME_DIR, --socket, --spool-dir or --state-dir)",
            );
        }
        if meta.mode() & 0o077 != 0 {
            return finding(
                check,
                Outcome::Warn,
                format!("{} is mode {:o}: other users can see into it", dir.display(), meta.mode() & 0o777),
                "`serve` tightens it to 0700; or run `chmod 700` on it",
            );
        }
    }
    #[cfg(windows)]
    if let Some(problem) = windows_private_dir_problem(dir) {
        return problem(check);
    }
    finding(check, Outcome::Ok, format!("{} is private to you", dir.display()), "")
}

fn daemon(config: &Config) -> Finding {
    let check = "daemon";
    match Client::connect(&config.socket, "luna-doctor") {
        Ok(client) => {
            let w = client.welcome();
            finding(
                check,
                Outcome::Ok,
                format!(
                    "luna-daemon {} answers on {} (protocol {}, spool {})",
                    w.daemon_version,
                    config.socket.display(),
                    w.version,
                    w.spool_dir
                ),
                "",
            )
        }
        Err(ClientError::VersionMismatch(message)) => {
            finding(check, Outcome::Fail, message, "run the same version of the daemon and its clients")
        }
        Err(ClientError::Connect { .. }) if config.socket.exists() && cfg!(unix) => finding(
            check,
            Outcome::Warn,
            format!("stale socket {}: a daemon died without removing it", config.socket.display()),
            "start the daemon (`luna-daemon serve`); it detects and replaces the stale socket",
        ),
        Err(ClientError::Connect { .. }) => finding(
            check,
            Outcome::Warn,
            format!("no daemon is running on {}", config.socket.display()),
            "start it with `luna-daemon serve` (the node saves locally meanwhile)",
        ),
        Err(e) => finding(check, Outcome::Fail, e.to_string(), "see the daemon's log (`--log debug`)"),
    }
}

fn instance(config: &Config) -> Finding {
    let check = "instance";
    let lock = config.state_dir.join("daemon.lock");
    let Ok(file) = std::fs::File::options().read(true).write(true).open(&lock) else {
        return finding(check, Outcome::Ok, "no daemon holds this state directory", "");
    };
    match file.try_lock() {
        Ok(()) => finding(check, Outcome::Ok, "no daemon holds this state directory", ""),
        Err(_) => {
            let pid = std::fs::read_to_string(&lock).unwrap_or_default().trim().to_owned();
            let reachable = Client::connect(&config.socket, "luna-doctor").is_ok();
            if reachable {
                finding(check, Outcome::Ok, format!("daemon pid {pid} holds {}", config.state_dir.display()), "")
            } else {
                finding(
                    check,
                    Outcome::Fail,
                    format!(
                        "daemon pid {pid} holds {} but does not answer on {}",
                        config.state_dir.display(),
                        config.socket.display()
                    ),
                    "it was started with another --socket: point clients at that socket, or stop it and restart",
                )
            }
        }
    }
}

#[cfg(unix)]
fn spool_space(spool: &Path) -> Vec<Finding> {
    let check = "spool space";
    let probe: PathBuf =
        std::iter::successors(Some(spool), |p| p.parent()).find(|p| p.exists()).unwrap_or(Path::new("/")).into();
    let mut out = Vec::new();
    #[cfg(target_os = "linux")]
    if let Ok(fs) = nix::sys::statfs::statfs(&probe)
        && fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC
    {
        out.push(finding(
            "spool filesystem",
            Outcome::Warn,
            format!("{} is not on tmpfs: segments are disk-backed", probe.display()),
            "point --spool-dir at a tmpfs such as /dev/shm for shared-memory speed",
        ));
    }
    match nix::sys::statvfs::statvfs(&probe) {
        Ok(vfs) => {
            // The field types differ between platforms (u64 on Linux, u32 on some BSDs).
            #[allow(clippy::unnecessary_cast)]
            let free = vfs.blocks_available() as u64 * vfs.fragment_size() as u64;
            out.push(free_space_finding(&probe, free));
        }
        Err(e) => {
            out.push(finding(check, Outcome::Warn, format!("cannot read free space of {}: {e}", probe.display()), ""))
        }
    }
    out
}

/// Windows: the spool is a folder under %TEMP% (file-backed segments, cached by the system), so only its free
/// space is checked.
#[cfg(windows)]
fn spool_space(spool: &Path) -> Vec<Finding> {
    let probe: PathBuf =
        std::iter::successors(Some(spool), |p| p.parent()).find(|p| p.exists()).unwrap_or(spool).into();
    vec![match crate::platform::free_space(&probe) {
        Ok(free) => free_space_finding(&probe, free),
        Err(e) => {
            finding("spool space", Outcome::Warn, format!("cannot read free space of {}: {e}", probe.display()), "")
        }
    }]
}

fn free_space_finding(probe: &Path, free: u64) -> Finding {
    let mib = free >> 20;
    let (outcome, hint) = if free < SPOOL_FAIL_BYTES {
        (
            Outcome::Fail,
            "too small for even one batch of 1024x1024 images: in Docker use --shm-size=1g, or set --spool-dir to a bigger tmpfs",
        )
    } else if free < SPOOL_WARN_BYTES {
        (Outcome::Warn, "large batches may not fit (Docker's default /dev/shm is 64 MiB: use --shm-size=1g)")
    } else {
        (Outcome::Ok, "")
    };
    finding("spool space", outcome, format!("{mib} MiB free under {}", probe.display()), hint)
}

/// Windows: the directory must be ours and carry the protected owner-only DACL `serve` gives it.
#[cfg(windows)]
fn windows_private_dir_problem(dir: &Path) -> Option<impl FnOnce(&'static str) -> Finding> {
    use crate::platform::{current_user_sid, dacl_sddl_of, is_owner_only_dacl, owner_sid_of};
    let read = || -> std::io::Result<(String, String, String)> {
        Ok((current_user_sid()?, owner_sid_of(dir)?, dacl_sddl_of(dir)?))
    };
    let dir = dir.display().to_string();
    let (outcome, detail, hint) = match read() {
        Err(e) => (Outcome::Warn, format!("cannot read the access rules of {dir}: {e}"), ""),
        Ok((me, owner, _)) if !owner.eq_ignore_ascii_case(&me) => (
            Outcome::Fail,
            format!("{dir} belongs to user {owner}, not to you ({me})"),
            "use a directory of your own (--spool-dir or --state-dir)",
        ),
        Ok((me, _, dacl)) if !is_owner_only_dacl(&dacl, &me) => (
            Outcome::Warn,
            format!("{dir} admits more than you and SYSTEM ({dacl})"),
            "`serve` replaces its access rules with owner-only ones",
        ),
        Ok(_) => return None,
    };
    Some(move |check| finding(check, outcome, detail, hint))
}

fn output_writable(dir: &Path) -> Finding {
    let check = "output directory";
    if let Err(e) = std::fs::create_dir_all(dir) {
        return finding(
            check,
            Outcome::Fail,
            format!("cannot create {}: {e}", dir.display()),
            "fix its permissions or choose another",
        );
    }
    match tempfile::Builder::new().prefix(".luna-doctor-").tempfile_in(dir) {
        Ok(_) => finding(check, Outcome::Ok, format!("{} is writable", dir.display()), ""),
        Err(e) => finding(
            check,
            Outcome::Fail,
            format!("cannot write into {}: {e}", dir.display()),
            "fix its permissions (the daemon runs as you) or choose another output directory",
        ),
    }
}

/// The checks of an `s3://bucket/prefix` output root, in order, each only when the one before passed:
/// `s3 config` (S3 is configured and the root is valid), `s3 endpoint` (it answers), `s3 credentials` (it
/// accepts them), `s3 bucket` (it exists), `s3 conditional create` (a probe object `<prefix>/.luna-doctor-<id>`
/// is created with `If-None-Match: *`, created again, which must answer 412, and deleted).
pub fn object_root(config: &Config, root: Result<ObjectRoot, String>) -> Vec<Finding> {
    let root = match root {
        Ok(root) => root,
        Err(e) => return vec![finding("s3 config", Outcome::Fail, e, "fix the s3://bucket/prefix output root")],
    };
    let Some(s3) = &config.s3 else {
        return vec![finding(
            "s3 config",
            Outcome::Fail,
            format!(
                "{S3_SCHEME}{} is an S3 output root, but no S3 endpoint or credentials are configured",
                root.bucket
            ),
            "set AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_REGION), or s3_endpoint, \
             s3_access_key_id, s3_secret_access_key in the config file, for the daemon and for doctor",
        )];
    };
    let staging = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => return vec![finding("s3 config", Outcome::Fail, format!("cannot make a temp dir: {e}"), "")],
    };
    let store = match ObjectStore::new(s3.clone(), staging.path().join("uploads")) {
        Ok(store) => store,
        Err(e) => {
            return vec![finding("s3 config", Outcome::Fail, e.to_string(), "fix s3_endpoint / AWS_ENDPOINT_URL")];
        }
    };
    let mut out = vec![finding("s3 config", Outcome::Ok, s3_summary(s3, store.endpoint()), "")];
    let endpoint = store.endpoint().to_owned();
    let status = match store.head_bucket_status(&root) {
        Ok(status) => status,
        Err(e) => {
            out.push(finding(
                "s3 endpoint",
                Outcome::Fail,
                format!("cannot reach {endpoint}: {e}"),
                "is the S3 server running and the endpoint right (AWS_ENDPOINT_URL / s3_endpoint)? Images to this \
                 root stay `retrying` until it answers",
            ));
            return out;
        }
    };
    out.push(finding("s3 endpoint", Outcome::Ok, format!("{endpoint} answers"), ""));
    let bucket = format!("{S3_SCHEME}{}", root.bucket);
    match status {
        200 | 404 => out.push(finding("s3 credentials", Outcome::Ok, "the endpoint accepts the credentials", "")),
        401 | 403 => {
            out.push(finding(
                "s3 credentials",
                Outcome::Fail,
                format!("{endpoint} refused the credentials for {bucket} (HTTP {status})"),
                "check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or s3_access_key_id / s3_secret_access_key) and \
                 the region; a bucket policy that forbids HEAD on the bucket also answers this",
            ));
            return out;
        }
        other => {
            out.push(finding(
                "s3 bucket",
                Outcome::Warn,
                format!("HEAD {bucket} answered HTTP {other}"),
                "the endpoint may not be S3-compatible; see its log",
            ));
            return out;
        }
    }
    if status == 404 {
        out.push(finding(
            "s3 bucket",
            Outcome::Fail,
            format!("the bucket {:?} does not exist at {endpoint}", root.bucket),
            "create it (images to this root stay `retrying` until it exists)",
        ));
        return out;
    }
    out.push(finding("s3 bucket", Outcome::Ok, format!("{bucket} exists"), ""));
    out.push(conditional_create(&store, &root));
    out
}

fn s3_summary(s3: &S3Config, endpoint: &str) -> String {
    let signed = if s3.credentials.is_some() { "signed" } else { "unsigned (no credentials)" };
    let style = if s3.path_style { "path-style" } else { "virtual-host-style" };
    format!("endpoint {endpoint}, region {}, {signed}, {style} URLs", s3.region)
}

/// Creates a probe object twice with `If-None-Match: *` (the second must be refused with 412) and deletes it.
fn conditional_create(store: &ObjectStore, root: &ObjectRoot) -> Finding {
    let check = "s3 conditional create";
    let key = root.key("", &format!(".luna-doctor-{}", uuid::Uuid::new_v4().simple()));
    let object = root.path_of(&key);
    let body = b"luna-daemon doctor probe: safe to delete";
    let first = match store.put_if_absent(root, &key, body) {
        Ok((200, _)) => store.put_if_absent(root, &key, body),
        Ok((status, code)) => {
            let code = code.map(|c| format!(" {c}")).unwrap_or_default();
            return finding(
                check,
                Outcome::Fail,
                format!("cannot create {object}: HTTP {status}{code}"),
                "the credentials need s3:PutObject on the bucket and prefix",
            );
        }
        Err(e) => return finding(check, Outcome::Fail, e.to_string(), "see the endpoint's log"),
    };
    let deleted = store.delete(root, &key);
    let left = match deleted {
        Ok(200 | 204) => String::new(),
        Ok(status) => format!("; the probe object {object} could not be deleted (HTTP {status}): delete it by hand"),
        Err(e) => format!("; the probe object {object} could not be deleted ({e}): delete it by hand"),
    };
    match first {
        Ok((412, _)) => finding(
            check,
            Outcome::Ok,
            format!("If-None-Match: * is honoured (a second create of {object} got 412){left}"),
            "",
        ),
        Ok((200, _)) => finding(
            check,
            Outcome::Fail,
            format!("the endpoint ignores If-None-Match: * (a second create of {object} replaced it){left}"),
            "this endpoint cannot guarantee that no object is overwritten: a name collision would replace an \
             image. Use an endpoint with conditional writes (AWS S3, MinIO, Ceph RGW, R2, s3s)",
        ),
        Ok((status, code)) => finding(
            check,
            Outcome::Warn,
            format!(
                "a second create of {object} answered HTTP {status}{}, not 412{left}",
                code.map(|c| format!(" {c}")).unwrap_or_default()
            ),
            "conditional creates could not be confirmed; see the endpoint's log",
        ),
        Err(e) => finding(check, Outcome::Warn, format!("{e}{left}"), "see the endpoint's log"),
    }
}
