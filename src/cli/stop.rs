//! `luna-daemon stop`.

use std::path::Path;
use std::process::ExitCode;

pub fn run(socket: &Path) -> anyhow::Result<ExitCode> {
    super::connect(socket)?.stop()?;
    println!("luna-daemon is stopping after finishing its queue");
    Ok(ExitCode::SUCCESS)
}
