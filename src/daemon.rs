//! The daemon's wiring: directories, the single-instance lock, the listener, the job table, the worker pool,
//! signals and graceful shutdown. The only module that sees all the others.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::ipc::{self, BindError, Context};
use crate::jobs::JobTable;
use crate::paths;
use crate::workers::Pool;

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A directory could not be created or is not private.
    #[error("could not prepare {what} directory {path}: {source}")]
    Dir { what: &'static str, path: PathBuf, source: io::Error },
    /// Another daemon holds the state directory's lock.
    #[error("another luna-daemon (pid {pid}) is already running with state directory {state_dir}")]
    AlreadyRunning { pid: String, state_dir: PathBuf },
    /// The lock file could not be used.
    #[error("could not lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    /// The socket could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// Installing the signal handler failed.
    #[error("could not install the SIGINT/SIGTERM handler: {0}")]
    Signals(String),
}

/// Runs the daemon until it is stopped (`stop` request, SIGINT or SIGTERM); the queue is finished first.
pub fn run(config: &Config) -> Result<(), DaemonError> {
    let dir = |what, path: &Path| {
        paths::ensure_private_dir(path).map_err(|source| DaemonError::Dir { what, path: path.into(), source })
    };
    dir("state", &config.state_dir)?;
    let _lock = lock_instance(&config.state_dir)?;
    dir("spool", &config.spool_dir)?;
    if cfg!(unix)
        && let Some(parent) = config.socket.parent()
    {
        dir("socket", parent)?;
    }
    let listener = ipc::bind(&config.socket)?;
    let table = Arc::new(JobTable::new(config.job_retention));
    let pool = Pool::start(config.pool, Arc::clone(&table));
    let socket = config.socket.clone();
    let wake = Box::new(move || {
        // Connecting unblocks the accept loop, which then sees the stop flag.
        if let Ok(name) = ipc::connect_name(&socket) {
            let _ = <interprocess::local_socket::Stream as interprocess::local_socket::traits::Stream>::connect(name);
        }
    });
    let ctx = Arc::new(Context::new(
        table,
        pool.clone(),
        config.spool_dir.clone(),
        config.queue_budget_bytes,
        config.max_connections,
        wake,
    ));
    let signal_ctx = Arc::clone(&ctx);
    ctrlc::set_handler(move || signal_ctx.request_stop()).map_err(|e| DaemonError::Signals(e.to_string()))?;
    tracing::info!(
        socket = %config.socket.display(),
        spool = %config.spool_dir.display(),
        state = %config.state_dir.display(),
        workers = format!("{}..{}", config.pool.min_workers, config.pool.max_workers),
        "luna-daemon {} listening (protocol {})",
        env!("CARGO_PKG_VERSION"),
        crate::protocol::PROTOCOL_VERSION
    );
    ipc::serve(listener, Arc::clone(&ctx));
    let pending = pool.stats();
    tracing::info!(queued = pending.queued, busy = pending.busy, "draining the queue before exit");
    pool.drain_and_stop();
    if cfg!(unix) {
        let _ = std::fs::remove_file(&config.socket);
    }
    tracing::info!("luna-daemon stopped");
    Ok(())
}

/// Takes the exclusive lock on `<state_dir>/daemon.lock` and writes our pid into it. The lock is released by
/// the OS when the process exits, however it exits, so a killed daemon never blocks the next start.
fn lock_instance(state_dir: &Path) -> Result<File, DaemonError> {
    let path = state_dir.join("daemon.lock");
    let lock_err = |source| DaemonError::Lock { path: path.clone(), source };
    let mut file = File::options().read(true).write(true).create(true).truncate(false).open(&path).map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = if pid.trim().is_empty() { "unknown".to_owned() } else { pid.trim().to_owned() };
            return Err(DaemonError::AlreadyRunning { pid, state_dir: state_dir.into() });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    file.set_len(0).map_err(lock_err)?;
    file.rewind().map_err(lock_err)?;
    writeln!(file, "{}", std::process::id()).map_err(lock_err)?;
    Ok(file)
}
