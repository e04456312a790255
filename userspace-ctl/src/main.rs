//! `appshotctl`: the command-line tool for appshot.ko.
//!
//! It registers applications (AIDs), links processes to them, runs commands inside them
//! and shows their translation tables, all through the `/dev/appshot` ioctls of the
//! `appshot-uapi` crate. The command line is `cli.rs`; checked argument values,
//! `values.rs`; the device and its ioctls (the only `unsafe` code), `device.rs`; errno
//! meanings per command, `errors.rs`; the commands, `commands.rs`; tables and JSON,
//! `output.rs`.
//!
//! Exit status: 0 on success, 1 when a command fails (one line on stderr,
//! `appshotctl: <what failed>: <why>`), 2 for usage errors (clap's), and for `run` the
//! command's own status, or 126/127 when it cannot be executed. User input never
//! panics the tool.

#![deny(unsafe_code)]

mod cli;
mod commands;
mod device;
mod errors;
mod output;
mod values;

use std::io::{self, Write as _};
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::Cli;
use crate::commands::ExecError;

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
