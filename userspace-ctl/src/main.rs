//! `appshotctl`'s entry point: parse the command line, run the command (`lib.rs` and the
//! modules it lists), print the error.

#![deny(unsafe_code)]

use std::io::{self, Write as _};
use std::process::ExitCode;

use clap::Parser as _;

use appshotctl::cli::Cli;
use appshotctl::commands::{self, ExecError};

fn main() -> ExitCode {
    // On a usage error clap prints its message and exits with status 2 (0 for --help).
    let cli = Cli::parse();
    let result = match cli.command {
        Some(command) => commands::dispatch(command),
        // `--version` (without arguments clap shows the help instead).
        None => commands::version(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // stderr may be a closed pipe too: never panic over a message.
            let _ = writeln!(io::stderr().lock(), "appshotctl: {error:#}");
            let status = error.downcast_ref::<ExecError>().map_or(1, |e| e.exit_code);
            ExitCode::from(status)
        }
    }
}
