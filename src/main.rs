//! The `luna-daemon` binary: parse arguments, set up logging, dispatch, turn errors into exit codes.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    cli::init_logging(&args.log);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("luna-daemon: error: {e:#}");
            ExitCode::from(cli::EXIT_ERROR)
        }
    }
}
