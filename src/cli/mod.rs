//! Command-line parsing and one module per subcommand. `anyhow` lives here and in `main.rs` only.

mod doctor;
mod serve;
mod stats;
mod status;
mod stop;
mod submit;
mod wait;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use luna_daemon::client::Client;

/// Exit status when an image of a waited-for job failed or was cancelled.
pub const EXIT_IMAGE_FAILED: u8 = 1;
/// Exit status of a command that could not be carried out (see `main.rs`; clap uses it for usage errors too).
pub const EXIT_ERROR: u8 = 2;
/// Exit status when every image was saved but the quality gate discarded at least one.
pub const EXIT_DISCARDED: u8 = 3;
/// Exit status of `wait --timeout` when the job or batch did not finish in time.
pub const EXIT_UNFINISHED: u8 = 4;

/// The exit statuses, as `--help` shows them (README.md repeats this table).
pub const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  success (with `submit --wait` / `watch` / `wait`: every image written)
  1  `submit --wait` / `watch` / `wait`: at least one image failed or was cancelled
  2  error: bad arguments, no daemon, a refused job, a broken connection, an untrusted socket, an unknown batch
  3  `submit --wait` / `watch` / `wait`: every image saved, at least one discarded by the quality gate (under _discarded/)
  4  `wait --timeout`: not finished in time (the daemon goes on saving)";

/// Luna Daemon: saves ComfyUI images from shared memory, off the generation thread.
#[derive(Debug, Parser)]
#[command(name = "luna-daemon", version, about, propagate_version = true, after_help = EXIT_STATUS_HELP)]
pub struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a tracing directive).
    #[arg(long, global = true, env = "LUNA_DAEMON_LOG", default_value = "info")]
    pub log: String,
    /// The daemon's socket (a pipe name on Windows). Default: see `luna-daemon serve --help`.
    #[arg(long, global = true, env = "LUNA_DAEMON_SOCKET")]
    pub socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (no arguments needed: embedded defaults).
    Serve(serve::ServeArgs),
    /// Submit image files or generated test images.
    #[command(after_help = EXIT_STATUS_HELP)]
    Submit(submit::SubmitArgs),
    /// Show a job's per-image state, or a batch group's summary (--batch).
    Status(status::StatusArgs),
    /// Follow a job (or a batch group) until it finishes, with a progress bar on a terminal (exit status: see `--help`).
    #[command(after_help = EXIT_STATUS_HELP)]
    Watch(status::WatchArgs),
    /// For scripts: wait for a job or a batch group quietly, print its summary; the exit status says how it went.
    #[command(after_help = EXIT_STATUS_HELP)]
    Wait(wait::WaitArgs),
    /// Show daemon-wide counters.
    Stats(stats::StatsArgs),
    /// Ask the daemon to finish its queue and exit.
    Stop,
    /// Check the set-up (directories, permissions, spool space, a running daemon, versions) and explain problems.
    Doctor(doctor::DoctorArgs),
    /// Give up on a job's images that are not saved yet (e.g. ones retrying on a full disk).
    Cancel {
        /// The job id printed by `submit`.
        job_id: String,
    },
}

/// Sends logs to stderr, filtered by `--log` / `LUNA_DAEMON_LOG`.
pub fn init_logging(filter: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: logs that go to a file (auto-start, services) stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .init();
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let socket = cli.socket;
    match cli.command {
        Command::Serve(args) => serve::run(args, socket),
        Command::Submit(args) => submit::run(args, &socket_or_default(socket)),
        Command::Status(args) => status::run_status(args, &socket_or_default(socket)),
        Command::Watch(args) => status::run_watch(args, &socket_or_default(socket)),
        Command::Wait(args) => wait::run(args, &socket_or_default(socket)),
        Command::Stats(args) => stats::run(args, &socket_or_default(socket)),
        Command::Stop => stop::run(&socket_or_default(socket)),
        Command::Doctor(args) => doctor::run(args, socket),
        Command::Cancel { job_id } => stop::run_cancel(&socket_or_default(socket), &job_id),
    }
}

fn socket_or_default(socket: Option<PathBuf>) -> PathBuf {
    socket.unwrap_or_else(luna_daemon::paths::default_socket)
}

/// Connects as the CLI.
fn connect(socket: &std::path::Path) -> anyhow::Result<Client> {
    Ok(Client::connect(socket, concat!("luna-cli/", env!("CARGO_PKG_VERSION")))?)
}
