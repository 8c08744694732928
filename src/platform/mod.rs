//! The operating-system calls that differ between Unix and Windows, behind one small interface: process
//! liveness, the current user's identity, owner-only access and user-facing canonical paths. A leaf: it imports
//! nothing of ours, so the rest of the crate never needs a `cfg(windows)` for these facts.

use std::io;
use std::path::{Path, PathBuf};

#[cfg(unix)]
mod unix;
#[cfg(unix)]
pub use unix::*;

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::*;

/// Whether the process with this id still runs as the current user, i.e. can still be a segment's creator.
///
/// Pid 0 is never a creator (on Unix `kill(0, ..)` signals our own process group, on Windows it is the idle
/// process) and pid 1 is init, which never exits: a header naming either is garbled or forged, and counting it
/// as alive would keep its segments forever. A process of another user cannot be a creator either (the spool
/// directory admits only us), so an id now used by someone else's process counts as dead: the creator is gone.
pub fn process_alive(pid: u32) -> bool {
    pid > 1 && user_process_running(pid)
}

/// `canonicalize` for paths shown to users or stored: on Windows without the `\\?\` verbatim prefix
/// (`C:\out`, as the user wrote it) wherever that is lossless, which is what `dunce` decides.
pub fn canonicalize(path: &Path) -> io::Result<PathBuf> {
    dunce::canonicalize(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn we_are_alive_and_pids_0_and_1_never_are() {
        assert!(process_alive(std::process::id()));
        assert!(!process_alive(0), "pid 0 is not a creator");
        assert!(!process_alive(1), "pid 1 (init) never exits, so it must not keep segments forever");
    }

    #[test]
    fn a_process_that_exited_is_dead() {
        let mut child = exiting_child();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!process_alive(pid), "pid {pid} exited and was reaped");
    }

    #[test]
    fn canonical_paths_have_no_verbatim_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let shown = canonicalize(dir.path()).unwrap();
        assert!(!shown.to_string_lossy().starts_with(r"\\?\"), "{}", shown.display());
        assert!(shown.is_absolute());
        assert!(std::fs::metadata(&shown).unwrap().is_dir());
    }

    /// A child process that exits at once, on any platform (our own test binary listing its tests).
    fn exiting_child() -> std::process::Child {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--list", "--format", "terse"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    }
}
