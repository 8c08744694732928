//! The daemon's wiring: directories, the single-instance lock, the listener, the job table, the worker pool,
//! signals and graceful shutdown. The only module that sees all the others.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::ipc::{self, BindError, Context, Limits};
use crate::janitor;
use crate::jobs::journal::{JournalError, SYNC_INTERVAL};
use crate::jobs::{self, JobTable, Journal};
use crate::output::OutputDirs;
use crate::paths;
use crate::s3::ObjectStore;
use crate::workers::{Pool, WorkItem};

/// Below the state directory: encoded images waiting for their upload to an `s3://` output root.
pub const UPLOADS_DIR: &str = "uploads";

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
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The S3 configuration cannot work.
    #[error("S3 object storage: {0}")]
    ObjectStore(#[from] crate::s3::S3Error),
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
    let (journal, unfinished) = Journal::open(&config.state_dir)?;
    let table = Arc::new(JobTable::new(config.job_retention, Some(journal)));
    let dirs = Arc::new(OutputDirs::persistent(&config.state_dir).unwrap_or_else(|e| {
        tracing::warn!("could not read the record of output directories (temp files of a killed run stay): {e}");
        OutputDirs::default()
    }));
    raise_fd_limit();
    let listener = ipc::bind(&config.socket)?;
    let objects = match &config.s3 {
        Some(s3) => {
            let store = ObjectStore::new(s3.clone(), config.state_dir.join(UPLOADS_DIR))?;
            tracing::info!(endpoint = store.endpoint(), "S3 object storage configured for s3:// output roots");
            Some(Arc::new(store))
        }
        None => None,
    };
    let pool = Pool::start_with_objects(config.pool, Arc::clone(&table), Arc::clone(&dirs), objects.clone());
    let mut pending_uploads = std::collections::HashSet::new();
    let staged = |job_id: &str, index: usize| objects.as_ref().is_some_and(|s| s.staging_path(job_id, index).is_file());
    for job in jobs::recover(&table, &config.spool_dir, unfinished, &staged) {
        pending_uploads.extend(job.tasks.iter().map(|(index, _)| (job.job_id.clone(), *index)));
        let id: Arc<str> = Arc::from(job.job_id.as_str());
        let items = job.tasks.into_iter().map(|(index, task)| WorkItem {
            job_id: Arc::clone(&id),
            index,
            client: job.client.clone(),
            task,
            attempt: 0,
        });
        pool.push(items.collect());
    }
    if let Some(store) = &objects {
        store.sweep_staging(|job, index| pending_uploads.contains(&(job.to_owned(), index)));
    }
    janitor::reclaim_unowned(&config.spool_dir, &table);
    janitor::sweep_dead_writers(&dirs);
    if let Err(e) = table.compact_journal() {
        tracing::error!("could not compact the journal at start-up: {e}");
    }
    let wake = accept_waker(&listener, &config.socket);
    let limits = Limits {
        queue_budget_bytes: config.queue_budget_bytes,
        max_connections: config.max_connections,
        busy_wait: config.busy_wait,
    };
    let ctx = Arc::new(Context::new(Arc::clone(&table), pool.clone(), config.spool_dir.clone(), limits, wake));
    let signal_ctx = Arc::clone(&ctx);
    ctrlc::set_handler(move || signal_ctx.request_stop()).map_err(|e| DaemonError::Signals(e.to_string()))?;
    let background = spawn_background(config, &ctx, &table, &dirs);
    tracing::info!(
        socket = %config.socket.display(),
        spool = %config.spool_dir.display(),
        state = %config.state_dir.display(),
        workers = format!("{}..{}", config.pool.min_workers, config.pool.max_workers),
        "luna-daemon {} listening (protocol {})",
        env!("CARGO_PKG_VERSION"),
        crate::protocol::PROTOCOL_VERSION
    );
    ipc::serve(listener, Arc::clone(&ctx), &config.socket);
    let pending = pool.stats();
    tracing::info!(queued = pending.queued, busy = pending.busy, "draining the queue before exit");
    pool.drain_and_stop();
    crate::fault::hold("daemon.after_drain");
    for handle in background {
        let _ = handle.join();
    }
    crate::workers::archiver::drain(&table, &dirs);
    table.sync_journal();
    if cfg!(unix) {
        let _ = std::fs::remove_file(&config.socket);
    }
    tracing::info!("luna-daemon stopped");
    Ok(())
}

/// Something that unblocks the accept loop after a stop request, so it sees the stop flag. On Unix the listening
/// socket is shut down (a blocked `accept` returns at once, even if the socket's path was removed meanwhile);
/// elsewhere, and as a second means, the daemon connects to itself.
fn accept_waker(listener: &interprocess::local_socket::Listener, socket: &Path) -> Box<dyn Fn() + Send + Sync> {
    #[cfg(unix)]
    let listening = {
        use std::os::fd::AsFd;
        #[allow(irrefutable_let_patterns)] // one variant on Unix; the enum is cross-platform
        if let interprocess::local_socket::Listener::UdSocket(l) = listener {
            l.as_fd().try_clone_to_owned().ok()
        } else {
            None
        }
    };
    #[cfg(not(unix))]
    let _ = listener;
    let socket = socket.to_path_buf();
    Box::new(move || {
        #[cfg(unix)]
        if let Some(fd) = &listening {
            let _ = nix::sys::socket::shutdown(std::os::fd::AsRawFd::as_raw_fd(fd), nix::sys::socket::Shutdown::Read);
        }
        if let Ok(name) = ipc::connect_name(&socket) {
            let _ = <interprocess::local_socket::Stream as interprocess::local_socket::traits::Stream>::connect(name);
        }
    })
}

/// Raises the soft limit on open files to the hard limit: every connection and every segment in use holds a
/// descriptor, and the default soft limit (often 1024) is below `max_connections`.
fn raise_fd_limit() {
    #[cfg(unix)]
    {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
            && soft < hard
            && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        {
            tracing::warn!("could not raise the open-file limit from {soft} to {hard}: {e}");
        }
    }
}

/// Starts the journal flusher and the janitor; both end when the context is stopping.
fn spawn_background(
    config: &Config,
    ctx: &Arc<Context>,
    table: &Arc<JobTable>,
    dirs: &Arc<OutputDirs>,
) -> Vec<std::thread::JoinHandle<()>> {
    let flusher = {
        let (ctx, table) = (Arc::clone(ctx), Arc::clone(table));
        std::thread::Builder::new().name("luna-journal".into()).spawn(move || {
            while !ctx.stopping() {
                std::thread::sleep(SYNC_INTERVAL);
                table.sync_journal();
            }
        })
    };
    let janitor = {
        let (ctx, table, dirs) = (Arc::clone(ctx), Arc::clone(table), Arc::clone(dirs));
        let (spool, grace, interval) = (config.spool_dir.clone(), config.orphan_grace, config.janitor_interval);
        std::thread::Builder::new()
            .name("luna-janitor".into())
            .spawn(move || janitor::run(spool, table, dirs, grace, interval, || ctx.stopping()))
    };
    let archiver = {
        let (ctx, table, dirs) = (Arc::clone(ctx), Arc::clone(table), Arc::clone(dirs));
        std::thread::Builder::new()
            .name("luna-archiver".into())
            .spawn(move || crate::workers::archiver::run(&table, &dirs, || ctx.stopping()))
    };
    [flusher, janitor, archiver]
        .into_iter()
        .filter_map(|h| h.map_err(|e| tracing::error!("could not start a background thread: {e}")).ok())
        .collect()
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
