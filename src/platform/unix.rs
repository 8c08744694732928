//! Unix: signals for liveness, the effective user id for identity.

use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// The current user's numeric id.
pub fn user_id() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Wine runs Windows programs only; a Unix build is never under it.
pub fn wine_version() -> Option<String> {
    None
}

/// `kill(pid, 0)`: success means the process runs and we may signal it (ours, or we are root); `EPERM` means
/// it belongs to another user, so it is not our creator; `ESRCH` means it is gone.
pub(super) fn user_process_running(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else { return false };
    match kill(Pid::from_raw(pid), None) {
        Ok(()) => true,
        Err(Errno::EPERM | Errno::ESRCH) => false,
        // Anything else (EINVAL cannot happen for signal 0): the safe side is "alive", nothing is unlinked.
        Err(_) => true,
    }
}
