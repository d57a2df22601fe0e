//! `run` (one cycle, or a dry-run plan) and `migrate`.

use anyhow::Context as _;

use super::{Failure, RunArgs};
use crate::config::Config;
use crate::domain::JobKind;
use crate::pipeline::{self, Context, PipelineError, RunReport, Selection};
use crate::store::Store;

/// `run`: one cycle of the kinds that are due (or of `--job` kinds, forced).
pub async fn run(cli: &super::Cli, args: &RunArgs) -> Result<u8, Failure> {
    let selection = selection(&args.jobs);
    let config = match super::load_config(cli) {
        Ok(config) => config,
        Err(failure) => {
            // A cycle that cannot start is still a cycle: recorded where the database can be found.
            if !args.dry_run
                && let Ok(db) = super::database_path(cli, None)
            {
                record_outside_lock(&db, &selection, &format!("config: {:#}", failure.error));
            }
            return Err(failure);
        }
    };
    if args.dry_run {
        return super::plan::plan_selection(config, &selection, super::Format::Table);
    }
    let db = config.database.path.clone();
    let mut ctx = match Context::new(config, pipeline::system_clock()) {
        Ok(ctx) => ctx,
        Err(e) => {
            if matches!(
                e,
                PipelineError::Locked(crate::lock::LockError::Held { .. })
            ) {
                record_outside_lock(&db, &selection, &e.to_string());
            }
            return Err(pipeline_failure(e));
        }
    };
    ctx.progress = progress_interval();
    let shutdown = super::cancel_on_signal(
        "Stopping: no new requests; batches in flight finish and are stored (a second signal exits now)",
    );
    let result = pipeline::run_within_grace(&ctx, &selection, &shutdown).await;
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

/// `--job` kinds are forced; none means the kinds that are due.
pub fn selection(jobs: &[JobKind]) -> Selection {
    if jobs.is_empty() {
        Selection::Due
    } else {
        Selection::Forced(jobs.to_vec())
    }
}

/// Records a cycle that failed before it could take the writer lock (config, lock), in the
/// database when it exists: one INSERT, which SQLite serialises with the other writer.
fn record_outside_lock(db: &std::path::Path, selection: &Selection, error: &str) {
    if !db.exists() {
        return;
    }
    let kinds: Vec<&str> = selection.kinds().iter().map(|k| k.name()).collect();
    let now = chrono::Utc::now().timestamp();
    let written = Store::connect(db).and_then(|mut store| {
        if store.schema_version()? < crate::store::SCHEMA_VERSION {
            return Ok(()); // an older schema has no room for it; `run` upgrades it once it can
        }
        store
            .record_failed_cycle(&kinds, now, now, error)
            .map(|_| ())
    });
    if let Err(e) = written {
        tracing::warn!(error = %e, "Cannot record the failed cycle in the runs table");
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

/// Prints what a cycle did: what was due, requests per endpoint and credential kind, rows,
/// failures, and the conditions a person must see (accounts, app keys, an unreachable API).
pub fn print_report(report: &RunReport) {
    let now = chrono::Utc::now().timestamp();
    let Some(run_id) = report.run_id else {
        let next: Vec<String> = report
            .dues
            .iter()
            .map(|d| format!("{} {}", d.kind.name(), d.reason(now)))
            .collect();
        println!(
            "nothing due and nothing left undone; nothing sent: {}",
            next.join("; ")
        );
        return;
    };
    let kinds: Vec<String> = report
        .kinds
        .iter()
        .map(|k| {
            if report.catch_up.contains(k) {
                format!("{} (catching up)", k.name())
            } else {
                k.name().to_string()
            }
        })
        .collect();
    println!(
        "run {run_id} ({}): {} Tweets in the inventory (+{} new, {} removed), {} requests planned",
        kinds.join(", "),
        report.inventory_len,
        report.inventory.added,
        report.inventory.removed,
        report.planned
    );
    for d in &report.dues {
        if !report.kinds.contains(&d.kind) {
            println!(
                "  {}: {}; nothing left undone",
                d.kind.name(),
                d.reason(now)
            );
        } else if report.catch_up.contains(&d.kind) {
            println!(
                "  {}: {}; catching up on what its last cycle left undone",
                d.kind.name(),
                d.reason(now)
            );
        }
    }
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
        let refused = report
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint && r.credential.kind() == credential)
            .filter(|r| r.outcome == crate::domain::BatchOutcome::Unauthorized)
            .count();
        println!(
            "  /{:<10} {credential:<6} {n:>5} requests  {failed} failed  {retries} retries{}",
            endpoint.name(),
            if refused > 0 {
                format!("  {refused} credential refused")
            } else {
                String::new()
            }
        );
    }
    let historical: Vec<_> = report
        .requests
        .iter()
        .filter(|r| r.kind == JobKind::Historical)
        .collect();
    if !historical.is_empty() || report.backfill_left.is_some_and(|n| n > 0) {
        let refresh = historical.iter().filter(|r| r.refresh).count();
        println!(
            "  /historical: {} backfill requests, {refresh} refreshing open cells{}",
            historical.len() - refresh,
            report
                .backfill_left
                .map_or(String::new(), |n| format!("; backfill left: {n} requests"))
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
    let unsent = match report.not_attempted {
        0 => String::new(),
        n => format!("; {n} batches not attempted (planned again next run)"),
    };
    if let Some(why) = &report.unreachable {
        println!("  {why}{unsent}");
    } else if let Some(why) = &report.app_refused {
        println!("  {why}; no account is at fault{unsent}");
    } else if report.not_attempted > 0 {
        println!(
            "  {} batches not attempted; they are planned again next run",
            report.not_attempted
        );
    }
    if report.moved > 0 {
        println!(
            "  {} Tweets belong to another configured account, says the API; they were collected under it \
             (update their owner in the inventory)",
            report.moved
        );
    }
    for account in &report.rejected_accounts {
        println!(
            "  account {account}: the API refused its token (401) while it accepts the app's keys; its public \
             metrics were read with the bearer token, its impressions and series were not; re-authorize \
             the account (or pause it: enabled = false)"
        );
    }
    if !report.paused_accounts.is_empty() {
        let names: Vec<&str> = report.paused_accounts.iter().map(|h| h.as_str()).collect();
        println!(
            "  paused (enabled = false): {}; {} Tweets, public metrics only",
            names.join(", "),
            report.skipped.paused
        );
    }
    if let Some(p) = &report.inventory_problems {
        println!("  {}", p.summary());
    }
    if report.skipped.resting + report.skipped.over_budget > 0 {
        println!(
            "  skipped: {} Tweets resting (unavailable or protected), {} left for the next run by the request budget",
            report.skipped.resting, report.skipped.over_budget
        );
    }
    if report.skipped.before_lookback > 0 {
        println!(
            "  /historical: {} Tweets have {:.1} Tweet-days of history before the API's lookback \
             (historical.lookback), not requested",
            report.skipped.before_lookback,
            report.skipped.before_lookback_secs as f64 / 86_400.0
        );
    }
    let failed: Vec<_> = report.failed().collect();
    if !failed.is_empty() && report.unreachable.is_none() {
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
    let shown = crate::lock::absolute(path);
    if !existed {
        println!("created {} at schema version {after}", shown.display());
    } else if before == after {
        println!("{} is up to date (schema version {after})", shown.display());
    } else {
        println!(
            "upgraded {} from schema version {before} to {after}",
            shown.display()
        );
    }
    Ok(0)
}
