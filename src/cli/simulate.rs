//! `meridian simulate`: a candidate configuration judged offline against recorded traffic.
//!
//! The traffic comes from a running server (`GET /v1/traffic`, with an operator token) or from
//! a file holding such an answer; the candidate is loaded as `serve` would load it (zones and
//! geo database included), and the record is replayed under the configuration and state it was
//! recorded with and under the candidate. Nothing is sent to the server but the one read.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tracing::error;

use crate::config::Source;
use crate::control::simulate_offline;
use crate::ctl::{fetch_traffic, render_text};
use crate::dns::Loaded;

use super::EXIT_INVALID_CONFIG;

/// `meridian simulate ...`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// The candidate configuration.
    #[arg(long, short)]
    pub config: PathBuf,
    /// A recorded sample (the body of `GET /v1/traffic`, e.g. saved by `curl`); without it,
    /// the sample is fetched from `--server`.
    #[arg(long, value_name = "FILE")]
    pub sample: Option<PathBuf>,
    /// The running server whose recorded traffic to replay.
    #[arg(
        long,
        default_value = "http://127.0.0.1:8053",
        conflicts_with = "sample"
    )]
    pub server: String,
    /// A file holding an operator token (its first line); without it, `MERIDIAN_TOKEN`.
    #[arg(long, value_name = "FILE", conflicts_with = "sample")]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of a report.
    #[arg(long)]
    pub json: bool,
}

/// Runs `meridian simulate`: 0 with the report on stdout; 2 when the candidate is invalid; 1
/// when the sample cannot be read.
pub(super) fn simulate(args: SimulateArgs) -> ExitCode {
    let sample = match &args.sample {
        Some(path) => {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        }
        None => fetch_traffic(&args.server, args.token_file.as_deref()).map_err(|e| e.to_string()),
    };
    let sample = match sample {
        Ok(sample) => sample,
        Err(message) => {
            error!("{message}");
            return ExitCode::FAILURE;
        }
    };
    let source = Source::File(args.config.clone());
    let candidate = match Loaded::load(&source) {
        Ok(candidate) => candidate,
        Err(problems) => {
            error!("{source}: the candidate configuration is invalid:\n{problems}");
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    match simulate_offline(&sample, &candidate) {
        Ok(json) => {
            // A closed pipe (`| head`) is not a failure of the simulation.
            let _ = std::io::stdout()
                .lock()
                .write_all(render_text(&json, args.json).as_bytes());
            ExitCode::SUCCESS
        }
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    }
}
