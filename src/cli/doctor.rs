//! `luna-daemon doctor`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use luna_daemon::config::{Config, Settings};
use luna_daemon::doctor::{self, Outcome};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    dirs: super::serve::DirArgs,
    #[command(flatten)]
    s3: super::serve::S3Args,
    /// Also check that this output directory is writable, or, for `s3://bucket/prefix`, that the S3 endpoint
    /// answers, accepts the credentials, has the bucket and honours conditional creates.
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Also check a client's protocol version against the daemon's (the node pack passes its own).
    #[arg(long)]
    client_protocol: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: DoctorArgs, socket: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let overrides =
        Settings { socket, spool_dir: args.dirs.spool_dir, state_dir: args.dirs.state_dir, ..Settings::default() };
    let config = Config::load(args.dirs.config.as_deref(), args.s3.apply(overrides))?;
    let findings = doctor::run(&config, args.output_dir.as_deref(), args.client_protocol);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&findings)?);
    } else {
        for f in &findings {
            let mark = match f.outcome {
                Outcome::Ok => "ok  ",
                Outcome::Warn => "WARN",
                Outcome::Fail => "FAIL",
            };
            println!("[{mark}] {}: {}", f.check, f.detail);
            if !f.hint.is_empty() {
                println!("       -> {}", f.hint);
            }
        }
    }
    let failed = findings.iter().any(|f| f.outcome == Outcome::Fail);
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
