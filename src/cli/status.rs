//! `luna-daemon status` and `luna-daemon watch`, plus the progress display `submit --wait` shares.

use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use luna_daemon::client::Client;
use luna_daemon::protocol::{ImageState, JobStatus};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job id printed by `submit` (or use --batch).
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    job_id: Option<String>,
    /// Show the summary of this batch group (`submit --batch NAME`) instead of one job.
    #[arg(long, value_name = "NAME")]
    batch: Option<String>,
    /// Print JSON instead of lines.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The job id printed by `submit` (or use --batch).
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    job_id: Option<String>,
    /// Follow this batch group (`submit --batch NAME`) until every image submitted to it so far is final.
    #[arg(long, value_name = "NAME")]
    batch: Option<String>,
    /// Print the final status as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_status(args: StatusArgs, socket: &Path) -> anyhow::Result<ExitCode> {
    if let Some(batch) = &args.batch {
        super::wait::print_batch(&super::connect(socket)?.batch_status(batch)?, args.json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let job_id = args.job_id.as_deref().expect("clap requires a job id or --batch");
    let status = super::connect(socket)?.status(job_id)?;
    print_status(&status, args.json)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_watch(args: WatchArgs, socket: &Path) -> anyhow::Result<ExitCode> {
    let mut client = super::connect(socket)?;
    if let Some(batch) = &args.batch {
        let status = super::wait::watch_batch(&mut client, batch)?;
        super::wait::print_batch(&status, args.json)?;
        return Ok(super::wait::batch_exit_code(&status));
    }
    let job_id = args.job_id.as_deref().expect("clap requires a job id or --batch");
    let status = wait_with_progress(&mut client, job_id)?;
    print_status(&status, args.json)?;
    Ok(exit_code(&status))
}

/// Follows a job to the end; a progress bar is drawn only when stderr is a terminal.
pub fn wait_with_progress(client: &mut Client, job_id: &str) -> anyhow::Result<JobStatus> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{spinner} job {msg} [{bar:30}] {pos}/{len} images ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(job_id.to_owned());
    let status = client.wait(job_id, |s| {
        bar.set_length(s.images.len() as u64);
        bar.set_position(s.images.iter().filter(|i| i.state.is_final()).count() as u64);
    })?;
    bar.finish_and_clear();
    Ok(status)
}

/// The exit status of a finished job ([`super::EXIT_STATUS_HELP`]): 1 if any image failed or was cancelled,
/// else 3 if any was discarded by the quality gate (it is saved, under `_discarded/`), else 0.
pub fn exit_code(status: &JobStatus) -> ExitCode {
    let any = |state| status.images.iter().any(|i| i.state == state);
    if status.images.iter().any(|i| !matches!(i.state, ImageState::Written | ImageState::Discarded)) {
        ExitCode::from(super::EXIT_IMAGE_FAILED)
    } else if any(ImageState::Discarded) {
        ExitCode::from(super::EXIT_DISCARDED)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn print_status(status: &JobStatus, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(status)?);
        return Ok(());
    }
    let state = if status.finished { "finished" } else { "in progress" };
    println!("job {} ({state}, {} images)", status.job_id, status.images.len());
    for image in &status.images {
        match image.state {
            ImageState::Written => println!(
                "  #{} written {} ({} bytes)",
                image.index,
                image.path.as_deref().unwrap_or("?"),
                image.bytes.unwrap_or(0)
            ),
            ImageState::Failed => match &image.error {
                Some(e) => println!("  #{} failed: {e}", image.index),
                None => println!("  #{} failed", image.index),
            },
            ImageState::Discarded => {
                let s = image.scores.unwrap_or_default();
                let fmt = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".to_owned());
                println!(
                    "  #{} discarded by the quality gate (variance {}, edge density {}) -> {}",
                    image.index,
                    fmt(s.variance),
                    fmt(s.edge_density),
                    image.path.as_deref().unwrap_or("?")
                );
            }
            ImageState::Retrying => match &image.error {
                Some(e) => println!("  #{} retrying after: {e} ({})", image.index, image.notes.join("; ")),
                None => println!("  #{} retrying", image.index),
            },
            ImageState::Queued => println!("  #{} queued", image.index),
            ImageState::Encoding => println!("  #{} encoding", image.index),
        }
    }
    Ok(())
}
