//! Default locations and private directories.
//!
//! | what | Linux | macOS | Windows |
//! |---|---|---|---|
//! | socket | `$XDG_RUNTIME_DIR/luna-daemon/luna-daemon.sock`, else `<tmp>/luna-daemon-<uid>/luna-daemon.sock` | `$TMPDIR/luna-daemon-<uid>/luna-daemon.sock` | named pipe `\\.\pipe\luna-daemon-<user>` |
//! | spool (segments) | `/dev/shm/luna-daemon-<uid>` | `<runtime dir>/spool` | `%TEMP%\luna-daemon\spool` |
//! | state | `$XDG_STATE_HOME/luna-daemon` (`~/.local/state/luna-daemon`) | `~/Library/Application Support/luna-daemon` | `%LOCALAPPDATA%\luna-daemon` |
//! | config | `$XDG_CONFIG_HOME/luna-daemon/config.toml` | `~/Library/Application Support/luna-daemon/config.toml` | `%APPDATA%\luna-daemon\config.toml` |

use std::io;
use std::path::{Path, PathBuf};

/// The current user's numeric id (0 on Windows, where identity is a SID: `platform::current_user_sid`).
pub use crate::platform::user_id;

/// A per-user directory for the socket: `$XDG_RUNTIME_DIR/luna-daemon`, else `<tmp>/luna-daemon-<uid>`.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() && dir.is_dir() => dir.join("luna-daemon"),
        _ => std::env::temp_dir().join(format!("luna-daemon-{}", user_id())),
    }
}

/// The default socket path (on Windows, the pipe name).
pub fn default_socket() -> PathBuf {
    #[cfg(windows)]
    {
        let user = std::env::var("USERNAME").unwrap_or_else(|_| "user".to_owned());
        PathBuf::from(format!(r"\\.\pipe\luna-daemon-{user}"))
    }
    #[cfg(not(windows))]
    {
        runtime_dir().join("luna-daemon.sock")
    }
}

/// The default spool directory: on tmpfs where the platform has one, so segments are shared memory.
pub fn default_spool_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if cfg!(target_os = "linux") && shm.is_dir() {
        return shm.join(format!("luna-daemon-{}", user_id()));
    }
    if cfg!(windows) {
        return std::env::temp_dir().join("luna-daemon").join("spool");
    }
    runtime_dir().join("spool")
}

/// The default state directory (lock file, later the journal).
pub fn default_state_dir() -> PathBuf {
    dirs::state_dir()
        .or_else(dirs::data_local_dir)
        .map(|d| d.join("luna-daemon"))
        .unwrap_or_else(|| runtime_dir().join("state"))
}

/// The default config file path (read only if it exists).
pub fn default_config_file() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("luna-daemon").join("config.toml"))
}

/// Creates `dir` (and its parents) if needed and makes sure only the current user can use it: it must be a
/// real directory (not a symlink) owned by us; group and other permission bits are removed.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match create_dir_private(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other(format!("{} exists but is not a directory", dir.display())));
    }
    restrict_existing(dir, &meta)
}

#[cfg(unix)]
fn create_dir_private(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

#[cfg(windows)]
fn create_dir_private(dir: &Path) -> io::Result<()> {
    std::fs::create_dir(dir)?;
    crate::platform::restrict_to_owner(dir)
}

#[cfg(unix)]
fn restrict_existing(dir: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if meta.uid() != user_id() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} belongs to user id {}, not to you ({}); refusing to use it",
                dir.display(),
                meta.uid(),
                user_id()
            ),
        ));
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Windows: the directory must be owned by our user SID, and gets a protected DACL naming only us and SYSTEM
/// (inherited by what is created inside), so the spool and state are not readable through a parent's entries.
#[cfg(windows)]
fn restrict_existing(dir: &Path, _meta: &std::fs::Metadata) -> io::Result<()> {
    use crate::platform::{current_user_sid, owner_sid_of, restrict_to_owner};
    let me = current_user_sid()?;
    let owner = owner_sid_of(dir)?;
    if !owner.eq_ignore_ascii_case(&me) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} belongs to user {owner}, not to you ({me}); refusing to use it", dir.display()),
        ));
    }
    restrict_to_owner(dir)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_loose_directory_is_tightened_to_0700() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_symlink_is_not_accepted_as_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(tmp.path(), tmp.path().join("link")).unwrap();
        assert!(ensure_private_dir(&tmp.path().join("link")).is_err());
    }
}

#[cfg(all(test, windows))]
mod windows_tests {
    use super::*;
    use crate::platform::{current_user_sid, dacl_sddl_of, is_owner_only_dacl};

    /// The twin of `a_loose_directory_is_tightened_to_0700`: a new and an existing directory both end up with
    /// the protected owner-only DACL (no entry inherited from `%TEMP%`), and are owned by us.
    ///
    /// Under Wine only the owner and the calls' success can be checked: Wine accepts the DACL but keeps no ACLs
    /// on files, and reports one made from the Unix mode bits instead (SYSTEM, the owner, and Everyone with
    /// read access, not protected). The DACL itself is checked on real Windows only (docs/WINDOWS.md).
    #[test]
    fn private_dirs_get_a_protected_owner_only_dacl() {
        let tmp = tempfile::tempdir().unwrap();
        let me = current_user_sid().unwrap();
        let acls_kept = crate::platform::wine_version().is_none();
        let owner_only = |dir: &Path| {
            let sddl = dacl_sddl_of(dir).unwrap();
            (is_owner_only_dacl(&sddl, &me), sddl)
        };
        let dir = tmp.path().join("a").join("b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(crate::platform::owner_sid_of(&dir).unwrap(), me);
        let (ok, sddl) = owner_only(&dir);
        assert!(ok || !acls_kept, "{sddl}");
        let existing = tmp.path().join("existing");
        std::fs::create_dir(&existing).unwrap();
        let (ok, sddl) = owner_only(&existing);
        assert!(!ok, "a plain directory inherits its parent's entries: {sddl}");
        ensure_private_dir(&existing).unwrap();
        let (ok, sddl) = owner_only(&existing);
        assert!(ok || !acls_kept, "{sddl}");
    }

    #[test]
    fn a_file_is_not_accepted_as_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        let err = ensure_private_dir(&tmp.path().join("f")).unwrap_err().to_string();
        assert!(err.contains("exists but is not a directory"), "{err}");
    }
}
