//! The command line: `meridian serve`, `meridian check-config`, `meridian state`,
//! `meridian ctl` (the control plane's client, in `ctl.rs`) and `meridian simulate` (a
//! candidate configuration against recorded traffic, in `cli/simulate.rs`).

mod simulate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::app;
use crate::config::Source;
use crate::control::LogLevels;
use crate::ctl::{self, CtlArgs};
use crate::dns::{Loaded, Snapshot};
use crate::state::Clock;
use crate::store::{self, Store};

/// Exit code for an invalid configuration.
pub const EXIT_INVALID_CONFIG: u8 = 2;

/// meridian: a geo-routing authoritative DNS server.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve DNS.
    Serve {
        /// Configuration file; without it, the shipped example (zones/example.yaml, built in).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// DNS listen address (UDP and TCP), replacing the configured ones; repeatable.
        #[arg(long = "dns", value_name = "ADDR")]
        dns: Vec<SocketAddr>,
        /// Control-plane HTTP listen address, replacing the configured one.
        #[arg(long, value_name = "ADDR")]
        control: Option<SocketAddr>,
        /// Directory of the durable state (reports, drains, audit log); without it, state is
        /// kept in memory and lost on restart.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Start drained: `/readyz` fails until an operator undrains (POST /v1/undrain).
        #[arg(long)]
        drained: bool,
        /// When the state file is empty or damaged, keep it aside (renamed
        /// `meridian.redb.bad`) and start with empty state instead of refusing to start.
        #[arg(long, requires = "state_dir")]
        state_reset: bool,
    },
    /// Check, back up or restore a state directory offline (the server must not be using it).
    State {
        /// What to do.
        #[command(subcommand)]
        action: StateAction,
    },
    /// Ask a running server's control plane (token from `MERIDIAN_TOKEN` or `--token-file`).
    Ctl(CtlArgs),
    /// Judge a candidate configuration offline against a server's recorded traffic: where the
    /// queries would go, what moves, which datacenters pass their watermarks.
    Simulate(simulate::SimulateArgs),
    /// Check a configuration, its zone files and geo database; exit 0 if valid, 2 if not.
    CheckConfig {
        /// Configuration file; without it, the shipped example.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

/// `meridian state ...`.
#[derive(Debug, Subcommand)]
pub enum StateAction {
    /// Verify every checksum and value of the state database; exit 0 if sound, 1 if not.
    Check {
        /// The state directory.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// Check the state database and copy it to FILE (which must not exist).
    Backup {
        /// The state directory.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// Where to write the copy.
        file: PathBuf,
    },
    /// Check the backup FILE and make it the state database; the one it replaces is kept aside.
    Restore {
        /// The state directory.
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// The backup to restore.
        file: PathBuf,
    },
}

/// Runs the parsed command line and maps the outcome to an exit code: 0 for success or a clean
/// shutdown, 1 for a runtime failure, 2 for an invalid configuration.
pub fn run(cli: Cli) -> ExitCode {
    let log_levels = init_tracing(cli.log_format);
    match cli.command {
        Command::CheckConfig { config } => check_config(&source_of(config)),
        Command::Serve {
            config,
            dns,
            control,
            state_dir,
            drained,
            state_reset,
        } => serve(
            source_of(config),
            Flags {
                dns,
                control,
                state_dir,
                drained,
                state_reset,
                log_levels,
            },
        ),
        Command::State { action } => state(action),
        Command::Ctl(args) => ctl::run(args),
        Command::Simulate(args) => simulate::simulate(args),
    }
}

/// Runs `meridian state ...`: prints what the database holds, exits 0, or the error and 1.
#[allow(clippy::print_stdout)]
fn state(action: StateAction) -> ExitCode {
    let res = match &action {
        StateAction::Check { state_dir } => store::check(state_dir).map(|summary| {
            print_summary(&summary);
            println!("ok");
        }),
        StateAction::Backup { state_dir, file } => store::backup(state_dir, file).map(|summary| {
            print_summary(&summary);
            println!("backed up to {}", file.display());
        }),
        StateAction::Restore { state_dir, file } => {
            store::restore(state_dir, file).map(|(summary, aside)| {
                print_summary(&summary);
                if let Some(aside) = aside {
                    println!("the previous database is kept as {}", aside.display());
                }
                println!("restored from {}", file.display());
            })
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(%error, "state {}", match action {
                StateAction::Check { .. } => "check failed",
                StateAction::Backup { .. } => "backup failed",
                StateAction::Restore { .. } => "restore failed",
            });
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::print_stdout)]
fn print_summary(summary: &store::Summary) {
    println!("{} ({} bytes)", summary.path.display(), summary.bytes);
    println!(
        "reports {}, drains {}, instance drained {}, audit entries {}, configuration versions {}",
        summary.reports,
        summary.drains,
        summary.instance_drained,
        summary.audit_entries,
        summary.config_versions
    );
    println!(
        "directory: {} buckets, {} pins",
        summary.directory_buckets, summary.pins
    );
}

fn source_of(config: Option<PathBuf>) -> Source {
    config.map_or(Source::Example, Source::File)
}

fn check_config(source: &Source) -> ExitCode {
    let started = std::time::Instant::now();
    match Snapshot::load(source, 0) {
        Ok(snapshot) => {
            let elapsed = started.elapsed();
            let (zones, names) = snapshot.loaded.zones.summary();
            let config = &snapshot.loaded.config;
            #[allow(clippy::print_stdout)]
            {
                println!("{source}: ok");
                println!(
                    "{zones} zone(s) with {names} name(s), {} service(s), {} datacenter(s)",
                    config.services.len(),
                    config.datacenters.len()
                );
                println!("geo database: {}", snapshot.loaded.geo.description());
                for (i, service) in config.services.iter().enumerate() {
                    let id = crate::routing::ServiceId(i as u16);
                    let Some(map) = snapshot.routing.map_report(id) else {
                        continue;
                    };
                    let built = if map.build_time.is_zero() {
                        "shared with an earlier service".to_owned()
                    } else {
                        format!("built in {:.1} ms", map.build_time.as_secs_f64() * 1e3)
                    };
                    println!(
                        "service {} ({}): decision map of {} entries ({} quads, {} cells), {} rankings, {built}",
                        service.id,
                        service.policy.name(),
                        map.stats.quads + map.stats.cells,
                        map.stats.quads,
                        map.stats.cells,
                        map.stats.rankings,
                    );
                }
                println!("checked in {:.2} s", elapsed.as_secs_f64());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{source}: invalid configuration");
            for problem in &error.problems {
                eprintln!("  {problem}");
            }
            ExitCode::from(EXIT_INVALID_CONFIG)
        }
    }
}

/// `serve` flags that override or add to the configuration.
struct Flags {
    dns: Vec<SocketAddr>,
    control: Option<SocketAddr>,
    state_dir: Option<PathBuf>,
    drained: bool,
    state_reset: bool,
    log_levels: Arc<LogLevels>,
}

fn serve(source: Source, flags: Flags) -> ExitCode {
    let loaded = match Loaded::load(&source) {
        Ok(loaded) => loaded,
        Err(error) => {
            error!(source = %source, "invalid configuration, not starting");
            for problem in &error.problems {
                error!("{problem}");
            }
            return ExitCode::from(EXIT_INVALID_CONFIG);
        }
    };
    // Precedence: built-in defaults, then the file, then flags.
    let addrs = if flags.dns.is_empty() {
        loaded.config.server.dns.clone()
    } else {
        flags.dns
    };
    let control = flags.control.unwrap_or(loaded.config.server.control);
    let store = match &flags.state_dir {
        Some(dir) => Store::open_or_reset(dir, flags.state_reset).map(|(store, aside)| {
            if let Some(aside) = aside {
                warn!(
                    kept = %aside.display(),
                    "--state-reset: the state file was damaged; it is kept aside and the server starts with empty state"
                );
            }
            store
        }),
        None => {
            warn!(
                "no --state-dir: reports, drains and the audit log are kept in memory and lost on restart"
            );
            Store::in_memory()
        }
    };
    let store = match store {
        Ok(store) => store,
        Err(error) => {
            error!(%error, "cannot open the state store");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            error!(%error, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async {
        let mut listeners = app::Listeners::bind(&addrs)?;
        listeners.bind_control(control)?;
        let shutdown = CancellationToken::new();
        let state = app::state_channel();
        app::watch_signals(state.0.clone(), shutdown.clone())?;
        let options = app::Options {
            source,
            loaded,
            store,
            clock: Clock::System,
            drained: flags.drained,
            log_levels: Some(flags.log_levels),
        };
        app::run(options, listeners, state, shutdown).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter unless `RUST_LOG` says otherwise: it keeps hickory's per-query `info` lines
/// out, since nothing per query may log above `debug`.
const DEFAULT_LOG_FILTER: &str = "info,hickory_server=warn,hickory_proto=warn,hickory_net=warn";

/// Logs go to stderr. `RUST_LOG` overrides [`DEFAULT_LOG_FILTER`]. The filter sits behind a
/// reload layer, whose handle is returned for `PUT /v1/log`.
///
/// Text logs are coloured only on a terminal, and not even there when `NO_COLOR` is set
/// (no-color.org): a file, a pipe or the journal gets plain text without escape codes.
fn init_tracing(format: LogFormat) -> Arc<LogLevels> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let (default, filter) = match std::env::var("RUST_LOG") {
        Ok(text) => match EnvFilter::try_new(&text) {
            Ok(filter) => (text, filter),
            Err(_) => (
                DEFAULT_LOG_FILTER.to_owned(),
                EnvFilter::new(DEFAULT_LOG_FILTER),
            ),
        },
        Err(_) => (
            DEFAULT_LOG_FILTER.to_owned(),
            EnvFilter::new(DEFAULT_LOG_FILTER),
        ),
    };
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            log_levels(default, handle)
        }
        LogFormat::Json => {
            let builder = builder.json().with_filter_reloading();
            let handle = builder.reload_handle();
            builder.init();
            log_levels(default, handle)
        }
    }
}

/// The control plane's handle on the filter behind `handle`.
fn log_levels<S: 'static>(
    default: String,
    handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>,
) -> Arc<LogLevels> {
    Arc::new(LogLevels::new(
        default,
        Box::new(move |text, apply| {
            let filter = tracing_subscriber::EnvFilter::try_new(text).map_err(|e| e.to_string())?;
            if apply {
                handle.reload(filter).map_err(|e| e.to_string())?;
            }
            Ok(())
        }),
    ))
}
