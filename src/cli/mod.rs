//! Command-line interface: clap types, logging set-up, and one module per subcommand. The only
//! part of the crate that prints to stdout.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::domain::JobKind;

mod check;
mod daemon;
mod demo;
mod run;

/// engagement-ingest: X Enterprise Engagement API metrics, kept as time series in SQLite.
#[derive(Debug, Parser)]
#[command(name = "engagement-ingest", version, about, long_about = None)]
pub struct Cli {
    /// Config file (TOML). Also read from ENGAGEMENT_CONFIG.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More logging (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Subcommands (design §3).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One full cycle against the built-in simulator with a generated inventory; needs no
    /// credentials and no network.
    Demo(DemoArgs),
    /// One cycle of the given kinds, then exit (CronJob, systemd timer, cron).
    Run(RunArgs),
    /// Long-running: each kind on its [schedule] cron (UTC) until SIGTERM/SIGINT.
    Daemon(DaemonArgs),
    /// Validate config, inventory, credentials and database; exit 2 listing every problem.
    Check,
    /// Create or upgrade the database; refuses a database newer than this binary.
    Migrate,
    /// Serve the Engagement API simulator on loopback.
    Sim(SimArgs),
}

/// `demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Database to write.
    #[arg(long, value_name = "PATH", default_value = "demo.sqlite")]
    pub db: PathBuf,
}

/// `run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kinds to run (repeatable): totals, hourly, historical. Default: all.
    #[arg(long = "job", value_name = "KIND", value_parser = parse_kind)]
    pub jobs: Vec<JobKind>,
    /// Plan and print the requests; send nothing, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// At the end, write the run's metrics in Prometheus text format to this file (for
    /// node_exporter's textfile collector; replaced atomically).
    #[arg(long, value_name = "PATH", conflicts_with = "dry_run")]
    pub metrics_file: Option<PathBuf>,
}

/// `daemon` options.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Serve /metrics (Prometheus text format) and /healthz on this address, e.g.
    /// 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// `sim` options.
#[derive(Debug, Args)]
pub struct SimArgs {
    /// World file (TOML) describing accounts, Tweets, limits and faults.
    #[arg(long, value_name = "PATH")]
    pub world: PathBuf,
    /// Address to listen on (loopback).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8480")]
    pub listen: std::net::SocketAddr,
    /// Write a worker config pointing at this simulator.
    #[arg(long, value_name = "PATH")]
    pub export_config: Option<PathBuf>,
    /// Write the world's Tweets as an inventory CSV.
    #[arg(long, value_name = "PATH")]
    pub export_inventory: Option<PathBuf>,
}

fn parse_kind(s: &str) -> Result<JobKind, String> {
    s.parse()
}

/// A command's failure: the error and the exit code it maps to.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: anyhow::Error,
}

impl Failure {
    /// A usage, config or inventory error (exit 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 2,
            error: error.into(),
        }
    }

    /// Another process holds the database's writer lock (exit 4).
    pub fn locked(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: crate::lock::EXIT_LOCKED,
            error: error.into(),
        }
    }

    /// A fatal error (exit 3).
    pub fn fatal(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 3,
            error: error.into(),
        }
    }
}

/// Sets up tracing on stderr: text or JSON, level from -v/-q, RUST_LOG wins when set.
pub fn init_logging(cli: &Cli) {
    // The scheduler logs its own start-up at info: noise.
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info,tokio_cron_scheduler=warn",
        // Our own debug lines only: library internals at debug are noise (and may echo headers).
        (false, 1) => "info,tokio_cron_scheduler=warn,engagement_ingest=debug",
        (false, _) => "info,tokio_cron_scheduler=warn,engagement_ingest=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// Runs the chosen subcommand and returns its exit code.
pub async fn dispatch(cli: Cli) -> Result<u8, Failure> {
    match &cli.command {
        Command::Demo(args) => demo::demo(args).await,
        Command::Run(args) => run::run(load_config(&cli)?, args).await,
        Command::Daemon(args) => daemon::daemon(&cli, args).await,
        Command::Check => check::check(&cli),
        Command::Migrate => run::migrate(load_config(&cli)?),
        Command::Sim(args) => sim(args).await,
    }
}

/// Loads the config named by `--config` or ENGAGEMENT_CONFIG; problems are exit 2.
pub fn load_config(cli: &Cli) -> Result<Config, Failure> {
    let config = Config::load(cli.config.as_deref(), utf8_env()).map_err(Failure::usage)?;
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    Ok(config)
}

/// The process environment, without variables whose name or value is not UTF-8 (none of ours is;
/// `std::env::vars` would panic on them).
pub fn utf8_env() -> impl Iterator<Item = (String, String)> {
    std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
}

/// A token cancelled by the first SIGINT/SIGTERM; a second signal exits at once (nothing is
/// lost: every stored batch is its own transaction).
pub fn cancel_on_signal(on_first: &'static str) -> tokio_util::sync::CancellationToken {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::warn!("{on_first}");
        token.cancel();
        shutdown_signal().await;
        tracing::warn!("Second signal: exiting now");
        std::process::exit(130);
    });
    shutdown
}

async fn sim(args: &SimArgs) -> Result<u8, Failure> {
    let shutdown = cancel_on_signal("Stopping the simulator");
    crate::sim::serve_cli(
        &args.world,
        args.listen,
        args.export_config.as_deref(),
        args.export_inventory.as_deref(),
        shutdown,
    )
    .await
    .map_err(Failure::usage)?;
    Ok(0)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
