//! `luna-daemon wait` (for scripts: the exit status says whether everything was written), and the batch-group
//! display `status --batch` and `watch --batch` share.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use luna_daemon::client::Client;
use luna_daemon::protocol::BatchStatus;

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The job id printed by `submit` (or use --batch).
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    job_id: Option<String>,
    /// Wait for every image of this batch group (`submit --batch NAME`) instead of one job.
    #[arg(long, value_name = "NAME")]
    batch: Option<String>,
    /// Give up after this many seconds (exit status 4); default: wait as long as it takes.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Print the final status as JSON instead of a summary.
    #[arg(long)]
    json: bool,
}

pub fn run(args: WaitArgs, socket: &Path) -> anyhow::Result<ExitCode> {
    let timeout = match args.timeout {
        Some(t) if !(t.is_finite() && t >= 0.0) => bail!("--timeout {t} is not a number of seconds"),
        t => t.map(Duration::from_secs_f64),
    };
    let mut client = super::connect(socket)?;
    if let Some(batch) = &args.batch {
        let status = client.wait_batch(batch, timeout, |_| {})?;
        print_batch(&status, args.json)?;
        return Ok(batch_exit_code(&status));
    }
    let job_id = args.job_id.as_deref().expect("clap requires a job id or --batch");
    let status = match timeout {
        None => client.wait(job_id, |_| {})?,
        Some(t) => {
            let deadline = std::time::Instant::now() + t;
            let mut status = client.status(job_id)?;
            while !status.finished && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
                status = client.status(job_id)?;
            }
            status
        }
    };
    super::status::print_status(&status, args.json)?;
    if !status.finished {
        return Ok(ExitCode::from(super::EXIT_UNFINISHED));
    }
    Ok(super::status::exit_code(&status))
}

/// Follows a batch until every image submitted to it so far is final, with a progress bar on a terminal.
pub fn watch_batch(client: &mut Client, batch: &str) -> anyhow::Result<BatchStatus> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} batch {prefix} [{bar:30}] {pos}/{len} images, {msg} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_prefix(batch.to_owned());
    let status = client.wait_batch(batch, None, |s| {
        bar.set_length(s.images);
        bar.set_position(s.written + s.discarded + s.failed);
        let zip = if s.zip { format!(", {} archived", s.archived) } else { String::new() };
        bar.set_message(format!("{} failed, {} retrying, {}{zip}", s.failed, s.retrying, human_bytes(s.bytes)));
    })?;
    bar.finish_and_clear();
    Ok(status)
}

/// The exit status for a batch ([`super::EXIT_STATUS_HELP`]): 4 if it is not finished, 1 if any image failed,
/// 3 if any was discarded, else 0.
pub fn batch_exit_code(status: &BatchStatus) -> ExitCode {
    if !status.finished || status.archive_pending > 0 {
        ExitCode::from(super::EXIT_UNFINISHED)
    } else if status.failed > 0 {
        ExitCode::from(super::EXIT_IMAGE_FAILED)
    } else if status.discarded > 0 {
        ExitCode::from(super::EXIT_DISCARDED)
    } else {
        ExitCode::SUCCESS
    }
}

/// The batch summary: images written, discarded, failed, bytes and the time span.
pub fn print_batch(status: &BatchStatus, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    let state = if status.finished { "finished" } else { "in progress" };
    println!("batch {} ({state}): {} images in {} jobs", status.batch, status.images, status.jobs.len());
    println!(
        "  {} written, {} discarded, {} failed; {} queued, {} encoding, {} retrying",
        status.written, status.discarded, status.failed, status.queued, status.encoding, status.retrying
    );
    println!("  {} ({} bytes)", human_bytes(status.bytes), status.bytes);
    if status.zip {
        let archive = status.archive.as_deref().unwrap_or("(not created yet)");
        println!("  archive {archive}: {} images in it, {} to add", status.archived, status.archive_pending);
        if let Some(e) = &status.archive_error {
            println!("  archive update failing: {e}");
        }
    }
    let first = format_ms(status.first_accepted_ms);
    match status.last_final_ms {
        Some(last) => {
            let span = Duration::from_millis(last.saturating_sub(status.first_accepted_ms).max(0) as u64);
            println!(
                "  first job accepted {first}, last image saved {} ({:.1} s)",
                format_ms(last),
                span.as_secs_f64()
            );
        }
        None => println!("  first job accepted {first}, no image saved yet"),
    }
    Ok(())
}

fn format_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn human_bytes(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
