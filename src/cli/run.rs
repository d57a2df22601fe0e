//! `run` (one cycle, or a dry-run plan) and `migrate`.

use anyhow::Context as _;

use super::{Failure, RunArgs};
use crate::config::Config;
use crate::domain::JobKind;
use crate::pipeline::{self, Context, PipelineError, RunReport};
use crate::store::Store;

/// `run`: one cycle of the chosen kinds.
pub async fn run(config: Config, args: &RunArgs) -> Result<u8, Failure> {
    let kinds = if args.jobs.is_empty() {
        JobKind::ALL.to_vec()
    } else {
        args.jobs.clone()
    };
    if args.dry_run {
        return dry_run(config, &kinds);
    }
    let mut ctx = Context::new(config, pipeline::system_clock()).map_err(pipeline_failure)?;
    ctx.progress = progress_interval();
    let shutdown = super::cancel_on_signal(
        "Stopping: no new requests; batches in flight finish and are stored (a second signal exits now)",
    );
    let result = pipeline::run_within_grace(&ctx, &kinds, &shutdown).await;
    if let Some(path) = &args.metrics_file {
        // Written whatever happened: a failed run is what the textfile collector should see.
        if let Err(e) = ctx.metrics.write_file(path) {
            tracing::error!(path = %path.display(), error = %e, "Cannot write the metrics file");
        }
    }
    match result.map_err(pipeline_failure)? {
        Some(report) => {
            print_report(&report);
            Ok(report.exit_code())
        }
        None => {
            println!(
                "interrupted: batches still in flight at the end of the shutdown grace were abandoned \
                 (they are planned again next run)"
            );
            Ok(0)
        }
    }
}

/// How often a cycle logs its progress: every 10 s when stderr is a terminal, never otherwise
/// (logs collected by journald or Kubernetes get the start and end of each run instead).
pub fn progress_interval() -> Option<std::time::Duration> {
    use std::io::IsTerminal;
    std::io::stderr()
        .is_terminal()
        .then_some(std::time::Duration::from_secs(10))
}

/// Maps a pipeline error to its exit code.
pub fn pipeline_failure(e: PipelineError) -> Failure {
    Failure {
        code: e.exit_code(),
        error: e.into(),
    }
}

/// Prints what a cycle did: requests per endpoint and credential kind, rows, failures.
pub fn print_report(report: &RunReport) {
    let kinds: Vec<&str> = report.kinds.iter().map(|k| k.name()).collect();
    println!(
        "run {} ({}): {} Tweets in the inventory (+{} new, {} removed), {} requests planned",
        report.run_id,
        kinds.join(", "),
        report.inventory_len,
        report.inventory.added,
        report.inventory.removed,
        report.planned
    );
    for ((endpoint, credential), n) in report.requests_by_endpoint() {
        let failed = report
            .failed()
            .filter(|r| r.endpoint == endpoint && r.credential.kind() == credential)
            .count();
        let retries: u32 = report
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint && r.credential.kind() == credential)
            .map(|r| r.attempts.saturating_sub(1))
            .sum();
        println!(
            "  /{:<10} {credential:<6} {n:>5} requests  {failed} failed  {retries} retries",
            endpoint.name()
        );
    }
    let series: Vec<_> = report
        .requests
        .iter()
        .filter(|r| r.kind != JobKind::Totals)
        .collect();
    if !series.is_empty() {
        let received: usize = series.iter().map(|r| r.received).sum();
        let stored: usize = series.iter().map(|r| r.rows).sum();
        println!(
            "  {received} hourly buckets received, {stored} non-zero stored ({:.1}% zero, not stored)",
            100.0 * received.saturating_sub(stored) as f64 / received.max(1) as f64
        );
    }
    println!(
        "  {} rows written in {:.2}s{}",
        report.rows_written,
        report.elapsed.as_secs_f64(),
        if report.interrupted {
            " (interrupted: the rest is planned again next run)"
        } else {
            ""
        }
    );
    if report.moved > 0 {
        println!(
            "  {} Tweets belong to another configured account, says the API; they were collected under it \
             (update their owner in the inventory)",
            report.moved
        );
    }
    for account in &report.rejected_accounts {
        println!(
            "  account {account}: the API refused its token (401); its public metrics were read with the \
             bearer token, its impressions and series were not; re-authorize the account"
        );
    }
    if report.skipped.resting + report.skipped.over_budget > 0 {
        println!(
            "  skipped: {} Tweets resting (unavailable or protected), {} left for the next run by the request budget",
            report.skipped.resting, report.skipped.over_budget
        );
    }
    let failed: Vec<_> = report.failed().collect();
    if !failed.is_empty() {
        println!(
            "  {} batches failed after retries; they are in the `requests` table and will be planned again:",
            failed.len()
        );
        for r in failed.iter().take(10) {
            println!(
                "    /{} {} ({} Tweets, {} attempts): {}",
                r.endpoint,
                r.credential,
                r.tweets,
                r.attempts,
                r.error.as_deref().unwrap_or("unknown error")
            );
        }
    }
}

/// `--dry-run`: the plan of the chosen kinds, as `plan` prints it.
fn dry_run(config: Config, kinds: &[JobKind]) -> Result<u8, Failure> {
    let args = super::PlanArgs {
        jobs: kinds.to_vec(),
        format: super::Format::Table,
    };
    super::plan::plan(config, &args)
}

/// `migrate`: create or upgrade the database.
pub fn migrate(config: Config) -> Result<u8, Failure> {
    let path = &config.database.path;
    let _lock = crate::lock::WriterLock::acquire(path).map_err(|e| match e {
        crate::lock::LockError::Held { .. } => Failure::locked(e),
        crate::lock::LockError::Io { .. } => Failure::fatal(e),
    })?;
    let existed = path.exists();
    let mut store = Store::connect(path).map_err(Failure::fatal)?;
    let (before, after) = store
        .migrate()
        .context("migrate failed")
        .map_err(Failure::fatal)?;
    if !existed {
        println!("created {} at schema version {after}", path.display());
    } else if before == after {
        println!("{} is up to date (schema version {after})", path.display());
    } else {
        println!(
            "upgraded {} from schema version {before} to {after}",
            path.display()
        );
    }
    Ok(0)
}
