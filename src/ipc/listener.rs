//! Binding and accepting.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use interprocess::local_socket::{ListenerOptions, prelude::*};

pub use crate::transport::connect_name;

use super::Context;
use super::connection::handle_connection;
use super::slots::{Closer, Slots};

/// Why the listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another daemon answers on this socket.
    #[error(
        "another luna-daemon is already listening on {0}; stop it with `luna-daemon stop` or pick another --socket"
    )]
    InUse(PathBuf),
    /// Binding failed.
    #[error("could not listen on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Binds the socket. A socket file left by a dead daemon (nobody answers) is replaced; a live one is an error.
/// On Unix the socket file is created with mode 0600 inside the caller's 0700 directory; on Windows the pipe
/// gets a protected DACL admitting only our user and SYSTEM.
///
/// Single instance on Windows does not rest on `FILE_FLAG_FIRST_PIPE_INSTANCE` alone (Wine ignores it): a live
/// daemon is found by connecting first, and the flag's "Access denied" on real Windows means "already running".
pub fn bind(path: &Path) -> Result<interprocess::local_socket::Listener, BindError> {
    let io_err = |source| BindError::Io { path: path.into(), source };
    if cfg!(windows) || path.exists() {
        let name = connect_name(path).map_err(io_err)?;
        if interprocess::local_socket::Stream::connect(name).is_ok() {
            return Err(BindError::InUse(path.into()));
        }
    }
    if cfg!(unix) && path.exists() {
        tracing::info!("replacing stale socket {} left by a daemon that is gone", path.display());
        std::fs::remove_file(path).map_err(io_err)?;
    }
    let name = connect_name(path).map_err(io_err)?;
    let options = ListenerOptions::new().name(name);
    #[cfg(unix)]
    let options = {
        use interprocess::os::unix::local_socket::ListenerOptionsExt;
        options.mode(0o600)
    };
    #[cfg(windows)]
    let options = {
        use interprocess::os::windows::local_socket::ListenerOptionsExt;
        options.security_descriptor(owner_only_pipe_descriptor().map_err(io_err)?)
    };
    options.create_sync().map_err(|source| match source.kind() {
        io::ErrorKind::AddrInUse => BindError::InUse(path.into()),
        // Real Windows refuses a first instance of an existing pipe with ERROR_ACCESS_DENIED.
        io::ErrorKind::PermissionDenied if cfg!(windows) => BindError::InUse(path.into()),
        _ => io_err(source),
    })
}

/// The pipe's security descriptor: our user and SYSTEM only, protected from inherited entries.
#[cfg(windows)]
fn owner_only_pipe_descriptor() -> io::Result<interprocess::os::windows::security_descriptor::SecurityDescriptor> {
    use crate::platform::{current_user_sid, owner_only_sddl};
    let sddl = widestring::U16CString::from_str(owner_only_sddl(&current_user_sid()?, false))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    interprocess::os::windows::security_descriptor::SecurityDescriptor::deserialize(&sddl)
}

/// Accepts connections until the context says stop, one thread per connection, in at most `max_connections`
/// slots (`ipc::slots`: the longest-idle connection makes room). On Unix it also notices when its socket file or the spool directory is removed
/// while it runs (systemd's `RemoveIPC` and the runtime-directory clean-up at logout do this) and creates them
/// again, so new clients can connect and no auto-started replacement is needed.
pub fn serve(listener: interprocess::local_socket::Listener, ctx: Arc<Context>, socket: &Path) {
    let slots = Slots::new(ctx.max_connections);
    #[cfg(unix)]
    unix::accept_loop(listener, &ctx, &slots, socket);
    #[cfg(not(unix))]
    {
        let _ = socket;
        for conn in listener.incoming() {
            if ctx.stopping() {
                break;
            }
            match conn {
                Ok(stream) => spawn_connection(stream, &ctx, &slots),
                Err(e) => accept_failed(&e),
            }
        }
    }
}

/// Out of file descriptors, typically: the connection stays in the backlog, so retrying at once would spin.
fn accept_failed(e: &io::Error) {
    tracing::warn!("accept failed: {e}");
    std::thread::sleep(std::time::Duration::from_millis(100));
}

fn spawn_connection(stream: interprocess::local_socket::Stream, ctx: &Arc<Context>, slots: &Arc<Slots>) {
    let (slot, admission) = slots.admit(Closer::for_stream(&stream));
    let ctx = Arc::clone(ctx);
    let spawned = std::thread::Builder::new()
        .name("luna-conn".to_owned())
        .stack_size(512 * 1024)
        .spawn(move || handle_connection(stream, &ctx, slot, admission));
    if let Err(e) = spawned {
        tracing::error!("could not start a connection thread: {e}");
    }
}

#[cfg(unix)]
mod unix {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;
    use std::sync::Arc;

    use interprocess::local_socket::{Listener, ListenerNonblockingMode, prelude::*};
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

    use super::{Context, Slots, accept_failed, bind, spawn_connection};

    /// How often the socket file and the spool directory are checked for removal.
    const CHECK_EVERY_MS: u16 = 500;

    pub(super) fn accept_loop(mut listener: Listener, ctx: &Arc<Context>, slots: &Arc<Slots>, socket: &Path) {
        let mut bound = identity(socket);
        let mut failed_rebinds = 0u32;
        nonblocking(&listener);
        while !ctx.stopping() {
            let ready = {
                let Listener::UdSocket(l) = &listener;
                let mut fds = [PollFd::new(l.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::from(CHECK_EVERY_MS)).unwrap_or(0) > 0
            };
            if ctx.stopping() {
                break;
            }
            if ready {
                match listener.accept() {
                    Ok(stream) => spawn_connection(stream, ctx, slots),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => accept_failed(&e),
                }
            }
            restore_spool(&ctx.spool_dir);
            if identity(socket) != bound || bound.is_none() {
                match rebind(socket, failed_rebinds == 0) {
                    Some(new) => {
                        nonblocking(&new);
                        let mut old = std::mem::replace(&mut listener, new);
                        // Its path now names the new socket: dropping the old listener must not unlink it.
                        old.do_not_reclaim_name_on_drop();
                        bound = identity(socket);
                        failed_rebinds = 0;
                    }
                    None => failed_rebinds += 1,
                }
            }
        }
    }

    /// Accepting never blocks (readiness comes from `poll`, so a connection aborted in between cannot stall
    /// the loop); accepted streams stay blocking.
    fn nonblocking(listener: &Listener) {
        if let Err(e) = listener.set_nonblocking(ListenerNonblockingMode::Accept) {
            tracing::warn!("could not make the listener non-blocking: {e}");
        }
    }

    /// The socket file's (device, inode), if it exists.
    fn identity(socket: &Path) -> Option<(u64, u64)> {
        std::fs::symlink_metadata(socket).ok().map(|m| (m.dev(), m.ino()))
    }

    /// Binds the socket again (and its private directory); reports failures only when `loud` (the first
    /// attempt), and is retried quietly on every check after that.
    fn rebind(socket: &Path, loud: bool) -> Option<Listener> {
        if loud {
            tracing::warn!(
                "socket {} was removed while running (logout clean-up?): creating it again",
                socket.display()
            );
        }
        let bound = socket
            .parent()
            .map_or(Ok(()), crate::paths::ensure_private_dir)
            .map_err(|e| format!("could not re-create the socket directory: {e}"))
            .and_then(|()| bind(socket).map_err(|e| format!("could not re-create the socket: {e}")));
        match bound {
            Ok(listener) => {
                tracing::info!("listening again on {}", socket.display());
                Some(listener)
            }
            Err(e) if loud => {
                tracing::error!("{e} (retrying every {CHECK_EVERY_MS} ms)");
                None
            }
            Err(_) => None,
        }
    }

    fn restore_spool(spool: &Path) {
        if spool.is_dir() {
            return;
        }
        tracing::warn!("spool directory {} was removed while running: creating it again", spool.display());
        if let Err(e) = crate::paths::ensure_private_dir(spool) {
            tracing::error!("could not re-create the spool directory {}: {e}", spool.display());
        }
    }
}
