//! `luna-daemon serve`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use luna_daemon::config::{Config, Settings};

/// Where the daemon's files are; shared by `serve` and `doctor`.
#[derive(Debug, Args)]
pub struct DirArgs {
    /// TOML config file (default: the per-user config file, if it exists).
    #[arg(long, env = "LUNA_DAEMON_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory where clients create shared-memory segments.
    #[arg(long, env = "LUNA_DAEMON_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Directory for the instance lock and the journal.
    #[arg(long, env = "LUNA_DAEMON_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Flags of `serve`. Each overrides its environment variable, which overrides the config file.
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    dirs: DirArgs,
    /// Workers kept alive when idle [default: 2].
    #[arg(long, env = "LUNA_DAEMON_MIN_WORKERS")]
    min_workers: Option<usize>,
    /// Most workers under backlog [default: 4].
    #[arg(long, env = "LUNA_DAEMON_MAX_WORKERS")]
    max_workers: Option<usize>,
    /// Nice value of the worker threads, 0..=19 (Linux; 0 = same priority as generation) [default: 10].
    #[arg(long, env = "LUNA_DAEMON_WORKER_NICE")]
    worker_nice: Option<i32>,
    /// Seconds an extra worker idles before exiting [default: 300].
    #[arg(long, env = "LUNA_DAEMON_IDLE_TIMEOUT")]
    idle_timeout: Option<u64>,
    /// Seconds finished jobs stay queryable [default: 3600].
    #[arg(long, env = "LUNA_DAEMON_JOB_RETENTION")]
    job_retention: Option<u64>,
    /// MiB of pixels unfinished jobs may hold before submits get `busy` [default: 4096].
    #[arg(long, env = "LUNA_DAEMON_QUEUE_BUDGET_MIB")]
    queue_budget_mib: Option<u64>,
    /// Most simultaneous client connections [default: 2048].
    #[arg(long, env = "LUNA_DAEMON_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Milliseconds a submit waits for room under the queue budget before `busy` [default: 500].
    #[arg(long, env = "LUNA_DAEMON_BUSY_WAIT_MS")]
    busy_wait_ms: Option<u64>,
    /// Seconds before the janitor removes segments and temp files of dead processes [default: 600].
    #[arg(long, env = "LUNA_DAEMON_ORPHAN_GRACE")]
    orphan_grace: Option<u64>,
    /// Seconds between janitor sweeps [default: 60].
    #[arg(long, env = "LUNA_DAEMON_JANITOR_INTERVAL")]
    janitor_interval: Option<u64>,
    #[command(flatten)]
    s3: S3Args,
}

/// The S3 settings of `serve` (and `doctor`, which checks what `serve` would use).
#[derive(Debug, Args)]
pub struct S3Args {
    /// S3-compatible endpoint for `s3://bucket/prefix` output roots, e.g. http://127.0.0.1:9000 [default: AWS].
    /// Credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) or the config file.
    #[arg(long, env = "AWS_ENDPOINT_URL")]
    s3_endpoint: Option<String>,
    /// S3 region to sign for [default: us-east-1].
    #[arg(long, env = "AWS_REGION")]
    s3_region: Option<String>,
    /// S3 URL style: path or virtual-host [default: path with --s3-endpoint, virtual-host for AWS].
    #[arg(long, env = "LUNA_DAEMON_S3_URL_STYLE")]
    s3_url_style: Option<String>,
}

pub fn run(args: ServeArgs, socket: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let overrides = Settings {
        socket,
        spool_dir: args.dirs.spool_dir,
        state_dir: args.dirs.state_dir,
        min_workers: args.min_workers,
        max_workers: args.max_workers,
        worker_nice: args.worker_nice,
        idle_timeout_secs: args.idle_timeout,
        job_retention_secs: args.job_retention,
        queue_budget_mib: args.queue_budget_mib,
        max_connections: args.max_connections,
        busy_wait_ms: args.busy_wait_ms,
        orphan_grace_secs: args.orphan_grace,
        janitor_interval_secs: args.janitor_interval,
        ..Settings::default()
    };
    let config = Config::load(args.dirs.config.as_deref(), args.s3.apply(overrides))?;
    luna_daemon::daemon::run(&config)?;
    Ok(ExitCode::SUCCESS)
}

impl S3Args {
    /// `settings` with these flags and the AWS environment variables as the S3 settings.
    pub fn apply(self, settings: Settings) -> Settings {
        Settings {
            s3_endpoint: self.s3_endpoint,
            s3_region: self.s3_region.or_else(|| env("AWS_DEFAULT_REGION")),
            // Secrets only from the environment or the config file, never from flags (visible in `ps`).
            s3_access_key_id: env("AWS_ACCESS_KEY_ID"),
            s3_secret_access_key: env("AWS_SECRET_ACCESS_KEY"),
            s3_session_token: env("AWS_SESSION_TOKEN"),
            s3_url_style: self.s3_url_style,
            ..settings
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
