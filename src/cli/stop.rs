//! `luna-daemon stop` and `luna-daemon cancel`.

use std::path::Path;
use std::process::ExitCode;

pub fn run(socket: &Path) -> anyhow::Result<ExitCode> {
    super::connect(socket)?.stop()?;
    println!("luna-daemon is stopping after finishing its queue");
    Ok(ExitCode::SUCCESS)
}

/// `luna-daemon cancel JOB`.
pub fn run_cancel(socket: &Path, job_id: &str) -> anyhow::Result<ExitCode> {
    let n = super::connect(socket)?.cancel(job_id)?;
    println!("job {job_id}: {n} unsaved images cancelled");
    Ok(ExitCode::SUCCESS)
}
