//! `luna-daemon doctor`: checks the set-up users get wrong and says what to do about each problem.

use std::path::{Path, PathBuf};

use crate::client::{Client, ClientError};
use crate::config::Config;
use crate::protocol::PROTOCOL_VERSION;

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

/// Runs every check. `output_dir` and `client_protocol` are checked when given.
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
    if let Some(dir) = output_dir {
        findings.push(output_writable(dir));
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
