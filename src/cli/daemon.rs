//! `daemon`: wires the command line to [`crate::scheduler`]. It reads `--config` and
//! `--metrics-listen`, binds the address, turns the first SIGTERM/SIGINT into the shutdown token
//! and maps the outcome to an exit code; the schedules, cycles, reloads and endpoints are the
//! scheduler's.

use std::net::SocketAddr;

use super::run::{pipeline_failure, progress_interval};
use super::{Cli, DaemonArgs, Failure};
use crate::pipeline;
use crate::scheduler::{ConfigSource, Options, Scheduler, SchedulerError};

/// Runs until the first SIGTERM/SIGINT, then lets running cycles finish within the shutdown
/// grace and exits 0.
pub async fn daemon(cli: &Cli, args: &DaemonArgs) -> Result<u8, Failure> {
    let source = ConfigSource::new(cli.config.clone(), || super::utf8_env().collect());
    let options = Options {
        clock: pipeline::system_clock(),
        progress: progress_interval(),
    };
    let scheduler = Scheduler::open(source, options).map_err(failure)?;
    let shutdown = super::cancel_on_signal(
        "Stopping: no new cycles or requests; batches in flight finish and are stored (a second signal exits now)",
    );
    let listener = match args.metrics_listen {
        Some(addr) => Some(bind(addr).await?),
        None => None,
    };
    scheduler.run(listener, shutdown).await.map_err(failure)?;
    Ok(0)
}

async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, Failure> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        Failure::usage(anyhow::anyhow!(
            "cannot listen on {addr} (--metrics-listen): {e}"
        ))
    })
}

/// The exit code of a daemon that could not start: 2 for the config or a schedule, the
/// pipeline's own for the database (4 when another process writes it), 3 for the scheduler.
fn failure(e: SchedulerError) -> Failure {
    match e {
        SchedulerError::Config(e) => Failure::usage(e),
        SchedulerError::Pipeline(e) => pipeline_failure(e),
        e @ SchedulerError::Schedule(_) => Failure::usage(e),
        e @ SchedulerError::Start(_) => Failure::fatal(e),
    }
}
