//! `luna-daemon stats`.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: StatsArgs, socket: &Path) -> anyhow::Result<ExitCode> {
    let s = super::connect(socket)?.stats()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("luna-daemon {} up {}s", s.daemon_version, s.uptime_s);
    println!("queue depth     {}", s.queue_depth);
    println!("bytes held      {}", s.bytes_held);
    println!("workers         {} alive, {} busy", s.workers_alive, s.workers_busy);
    println!("jobs            {} accepted, {} done, {} failed", s.jobs_accepted, s.jobs_done, s.jobs_failed);
    println!("images          {} written, {} failed", s.images_written, s.images_failed);
    for c in &s.clients {
        let pid = c.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".to_owned());
        println!(
            "client {} (pid {pid}): {} jobs, {} pending, {} written, {} failed",
            c.client, c.jobs, c.images_pending, c.images_written, c.images_failed
        );
    }
    Ok(ExitCode::SUCCESS)
}
