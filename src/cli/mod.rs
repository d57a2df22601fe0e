//! Command-line interface: the clap types, logging set-up, exit codes ([`Failure`]), loading the
//! config for a command, the signals that stop one, and one module per subcommand, each of which
//! prints its own output. No command's work is done here: that is the library's.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::config::Config;
use crate::domain::JobKind;

mod check;
mod daemon;
mod demo;
mod limits;
mod output;
mod plan;
mod query;
mod report;
mod run;

pub use limits::raise_open_file_limit;

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
    /// The requests the next cycle of each kind would make, their quota and time.
    Plan(PlanArgs),
    /// Answers from the database without writing SQL (read-only).
    Query(QueryArgs),
    /// A self-contained HTML page of charts from the database.
    Report(ReportArgs),
    /// Validate config, inventory, database and its folder, sending nothing; with --online, try
    /// each credential with one request too. Exit 2 listing every problem.
    Check(check::CheckArgs),
    /// Create or upgrade the database; refuses a database newer than this binary.
    Migrate,
    /// Copy a whole database to another (SQLite to PostgreSQL, or back): every table, rows the
    /// destination has already kept (so a stopped copy resumes), verified by row counts and
    /// column sums at the end.
    Copy(CopyArgs),
    /// Serve the Engagement API simulator on loopback.
    #[command(after_help = crate::sim::WORLD_FILE_HELP)]
    Sim(SimArgs),
}

/// `copy` options.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// The database to read: an SQLite file or a postgres:// URL.
    #[arg(long, value_name = "PATH|URL")]
    pub from: PathBuf,
    /// The database to write (created and migrated when needed): a postgres:// URL (password
    /// from PGPASSWORD or the URL) or an SQLite file.
    #[arg(long, value_name = "URL|PATH")]
    pub to: PathBuf,
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

/// Output format of `query` and `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// `plan` options.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Kinds to plan (repeatable): totals, hourly, historical. Default: all.
    #[arg(long = "job", value_name = "KIND", value_parser = parse_kind)]
    pub jobs: Vec<JobKind>,
    /// Output format (default: table). CSV: one row per kind and credential; JSON: every
    /// figure, per kind and credential.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Table: one line per kind (due, requests, Tweets, handles, time at the limits), nothing else.
    #[arg(long, conflicts_with = "by_account")]
    pub summary: bool,
    /// Table: the requests, Tweets and lower bound of each credential (the bearer token and each
    /// account), and the handles each kind touches.
    #[arg(long)]
    pub by_account: bool,
}

/// `query` options.
#[derive(Debug, Args)]
pub struct QueryArgs {
    /// Database to read (default: the config's [database] path).
    #[arg(long, value_name = "PATH", global = true)]
    pub db: Option<PathBuf>,
    /// Output format (default: table on a terminal, CSV otherwise).
    #[arg(long, value_enum, global = true)]
    pub format: Option<Format>,
    #[command(subcommand)]
    pub query: Query,
}

/// The questions `query` answers. Times are a date, RFC 3339, @unix, or an age like 7d; a
/// period runs from --since (rounded down to the hour) to --until (exclusive, rounded up).
#[derive(Debug, Subcommand)]
pub enum Query {
    /// Per account over a period: Tweets, impressions, engagements, engagement rate, favorites,
    /// retweets, replies, quote Tweets, video views, and the hours of data behind them.
    Accounts {
        /// Period start (default 30d), from 00:00 UTC of its day.
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Period end (exclusive; default now).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        /// Only these accounts (repeatable).
        #[arg(long = "owner", value_name = "HANDLE")]
        owners: Vec<String>,
    },
    /// Latest lifetime totals per Tweet and metric, with when they were observed.
    Latest {
        /// Only these Tweets (repeatable).
        #[arg(long = "tweet", value_name = "ID")]
        tweets: Vec<u64>,
        /// Only this account's Tweets.
        #[arg(long, value_name = "HANDLE")]
        owner: Option<String>,
        /// Only these metrics (repeatable).
        #[arg(long = "metric", value_name = "METRIC")]
        metrics: Vec<String>,
        /// One row per Tweet, a column per metric.
        #[arg(long)]
        wide: bool,
    },
    /// One Tweet's time series; zero-filled inside fetched coverage, missing outside it.
    Series {
        #[arg(long = "tweet", value_name = "ID")]
        tweet: u64,
        /// Metrics (repeatable; default all stored).
        #[arg(long = "metric", value_name = "METRIC")]
        metrics: Vec<String>,
        /// From (date, RFC 3339, @unix, or an age like 7d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Until (exclusive; same forms).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[arg(long, value_enum, default_value_t = Granularity::Hour)]
        granularity: Granularity,
    },
    /// Top Tweets by a metric over a period, with engagement rate.
    Top {
        #[arg(long, value_name = "METRIC")]
        metric: String,
        /// Period start (default 7d).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Period end (exclusive; default now).
        #[arg(long, value_name = "TIME")]
        until: Option<String>,
        #[arg(long, value_name = "HANDLE")]
        owner: Option<String>,
        #[arg(long, value_name = "N", default_value_t = 10)]
        limit: usize,
    },
    /// What ran: the last runs with their outcome.
    Runs {
        #[arg(long, value_name = "N", default_value_t = 20)]
        last: usize,
    },
    /// Batches that failed and will be planned again, and Tweets resting after a refusal.
    Failures,
    /// Unique handles queried per billing month, and requests per endpoint.
    Usage {
        /// Only this month (YYYY-MM).
        #[arg(long, value_name = "YYYY-MM")]
        month: Option<String>,
    },
}

/// Series granularity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Granularity {
    Hour,
    Day,
}

/// `report` options.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// HTML file to write.
    #[arg(long, value_name = "FILE.html")]
    pub out: PathBuf,
    /// Period start (default 30d; date, RFC 3339, @unix, or an age like 7d); rounded up to
    /// the hour.
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Period end, exclusive (default now; same forms as --since); rounded down to the hour,
    /// and no later than the last hour that has ended.
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only this account (exit 2, listing the accounts, when no Tweet in the database has it).
    #[arg(long, value_name = "HANDLE")]
    pub owner: Option<String>,
    /// Database to read (default: the config's [database] path).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
}

/// `daemon` options.
#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Serve /metrics (Prometheus text format) and /healthz on this address, e.g.
    /// 127.0.0.1:9464. Served without authentication: a non-loopback address is warned about.
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
        Command::Run(args) => run::run(&cli, args).await,
        Command::Daemon(args) => daemon::daemon(&cli, args).await,
        Command::Plan(args) => plan::plan(load_config(&cli)?, args),
        Command::Query(args) => query::query(&cli, args),
        Command::Report(args) => report::report(&cli, args),
        Command::Check(args) => check::check(&cli, args).await,
        Command::Migrate => run::migrate(load_config(&cli)?),
        Command::Copy(args) => copy(args),
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

/// The database a read-only command reads: `--db`, else `ENGAGEMENT__DATABASE__PATH`, else the
/// `[database] path` of the config (`--config` or ENGAGEMENT_CONFIG; only that key is checked, so
/// a config whose secrets are not at hand still serves), else `engagement.sqlite`.
pub fn database_path(
    cli: &Cli,
    db: Option<&std::path::Path>,
) -> Result<crate::store::Target, Failure> {
    match db {
        Some(db) => crate::store::Target::parse(db, None)
            .map_err(|e| Failure::usage(anyhow::anyhow!("--db: {e}"))),
        None => {
            crate::config::database_path(cli.config.as_deref(), utf8_env()).map_err(Failure::usage)
        }
    }
}

/// `copy`: every table of `--from` into `--to`, then both compared table by table.
fn copy(args: &CopyArgs) -> Result<u8, Failure> {
    use crate::store::{Store, Target};
    let parse = |flag: &str, p: &std::path::Path| {
        Target::parse(p, None).map_err(|e| Failure::usage(anyhow::anyhow!("--{flag}: {e}")))
    };
    let (from, to) = (parse("from", &args.from)?, parse("to", &args.to)?);
    if !from.exists() {
        return Err(Failure::usage(anyhow::anyhow!(
            "--from {from}: no such database"
        )));
    }
    let source = Store::open_read_only(&from).map_err(Failure::fatal)?;
    let mut dest = Store::connect(&to).map_err(Failure::fatal)?;
    dest.lock_shard("copy").map_err(Failure::locked)?;
    dest.migrate().map_err(Failure::fatal)?;
    println!("copying {from} into {to}");
    let started = std::time::Instant::now();
    // One committed state of the source is copied and then compared: a worker writing it
    // meanwhile changes neither.
    let tables = crate::store::copy::TABLES;
    let fingerprints = source
        .snapshot(|source| {
            source.copy_into(&mut dest, |t| {
                println!(
                    "  {:<16} {:>10} rows, {:>10} new",
                    t.table, t.rows, t.inserted
                )
            })?;
            tables
                .iter()
                .map(|t| source.fingerprint(t))
                .collect::<Result<Vec<_>, _>>()
        })
        .map_err(Failure::fatal)?;
    let mut differ = Vec::new();
    for (table, a) in tables.iter().zip(fingerprints) {
        let b = dest.fingerprint(table).map_err(Failure::fatal)?;
        if a != b {
            differ.push(format!("{table}: {a:?} in the source, {b:?} in the copy"));
        }
    }
    if !differ.is_empty() {
        return Err(Failure::fatal(anyhow::anyhow!(
            "the copy differs from its source (rows written to the copy meanwhile?):\n  {}",
            differ.join("\n  ")
        )));
    }
    println!(
        "verified: {} tables, row counts and column sums equal ({:.1} s)",
        crate::store::copy::TABLES.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(0)
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
