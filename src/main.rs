//! The `meridian` binary: parse the command line and hand over to the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    meridian::cli::run(meridian::cli::Cli::parse())
}
