//! Binding and accepting.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use interprocess::local_socket::{ListenerOptions, Name, prelude::*};

use super::Context;
use super::connection::handle_connection;

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

/// The interprocess name for a socket path (a pipe name on Windows).
pub fn connect_name(path: &Path) -> io::Result<Name<'_>> {
    #[cfg(windows)]
    {
        use interprocess::local_socket::GenericNamespaced;
        let name = path.to_string_lossy();
        let short = name.strip_prefix(r"\\.\pipe\").unwrap_or(&name).to_owned();
        short.to_ns_name::<GenericNamespaced>()
    }
    #[cfg(not(windows))]
    {
        use interprocess::local_socket::GenericFilePath;
        path.to_fs_name::<GenericFilePath>()
    }
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

/// Accepts connections until the context says stop, one thread per connection, at most `max_connections`.
pub fn serve(listener: interprocess::local_socket::Listener, ctx: Arc<Context>) {
    let open = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if ctx.stopping() {
            break;
        }
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, typically: the connection stays in the backlog, so retrying at once
                // would spin. Pause, then try again.
                tracing::warn!("accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        let ctx = Arc::clone(&ctx);
        let open_now = Arc::clone(&open);
        let over_limit = open.fetch_add(1, Ordering::SeqCst) >= ctx.max_connections;
        let spawned =
            std::thread::Builder::new().name("luna-conn".to_owned()).stack_size(512 * 1024).spawn(move || {
                handle_connection(stream, &ctx, over_limit);
                open_now.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            open.fetch_sub(1, Ordering::SeqCst);
            tracing::error!("could not start a connection thread: {e}");
        }
    }
}
