//! `run` (one cycle, or a dry-run plan) and `migrate`.

use anyhow::Context as _;

use super::plan::count;
use super::{Failure, RunArgs};
use crate::config::Config;
use crate::domain::{BatchOutcome, JobKind};
use crate::pipeline::{self, Context, PipelineError, RequestReport, RunReport, Selection};
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
        return super::plan::plan_selection(
            config,
            &selection,
            super::Format::Table,
            super::plan::Detail::Kinds,
        );
    }
    let db = config.database.target();
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
    let before = stored_buckets(&ctx);
    let result = pipeline::run_within_grace(&ctx, &selection, &shutdown).await;
    if let Some(path) = &args.metrics_file {
        // Written whatever happened: a failed run is what the textfile collector should see.
        if let Err(e) = ctx.metrics.write_file(path) {
            tracing::error!(path = %path.display(), error = %e, "Cannot write the metrics file");
        }
    }
    match result.map_err(pipeline_failure)? {
        Some(report) => {
            let buckets = before.zip(stored_buckets(&ctx));
            print_report(&report, buckets);
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
fn record_outside_lock(db: &crate::store::Target, selection: &Selection, error: &str) {
    if !db.exists() {
        return;
    }
    let kinds: Vec<&str> = selection.kinds().iter().map(|k| k.name()).collect();
    let now = chrono::Utc::now().timestamp();
    let written = Store::connect(db).and_then(|mut store| {
        if store.schema_version()? < store.supported_version() {
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

/// The hourly buckets the run's store has added so far (less those it removed), `None` when the
/// store cannot be reached (the figure is left out, nothing else). Counted as batches are written,
/// not by counting `series`, which reads the whole table.
pub fn stored_buckets(ctx: &Context) -> Option<i64> {
    Some(ctx.store.lock().ok()?.buckets_added())
}

/// "N batches {what}", then the first ten of `batches`, each with its Tweets (and attempts),
/// and the API's words or `no_error`.
fn print_batches(what: &str, batches: &[&RequestReport], attempts: bool, no_error: &str) {
    println!("  {} {what}", count(batches.len(), "batch", "batches"));
    for r in batches.iter().take(10) {
        let tried = if attempts {
            format!(", {}", count(r.attempts as usize, "attempt", "attempts"))
        } else {
            String::new()
        };
        println!(
            "    /{} {} ({}{tried}): {}",
            r.endpoint,
            r.credential,
            count(r.tweets, "Tweet", "Tweets"),
            r.error.as_deref().unwrap_or(no_error)
        );
    }
}

/// The short reasons of partial batches, from their error texts: "unavailable Tweets",
/// "unsupported metrics", "Tweets or metrics left out".
fn partial_reasons<'a>(batches: impl Iterator<Item = &'a RequestReport>) -> Vec<&'static str> {
    let mut reasons = Vec::new();
    for r in batches {
        let error = r.error.as_deref().unwrap_or_default();
        let found = [
            ("unavailable", "unavailable Tweets"),
            ("not supported", "unsupported metrics"),
            ("left out", "Tweets or metrics left out"),
        ]
        .into_iter()
        .filter(|(needle, _)| error.contains(needle))
        .map(|(_, reason)| reason)
        .collect::<Vec<_>>();
        let found = if found.is_empty() {
            vec!["some Tweets or metrics refused"]
        } else {
            found
        };
        for reason in found {
            if !reasons.contains(&reason) {
                reasons.push(reason);
            }
        }
    }
    reasons
}

/// "3 requests: 1 ok, 2 partial (unavailable Tweets), 0 failed, 0 retries": every outcome of
/// one endpoint's requests, as the `requests` table has them.
fn outcomes_line(batches: &[&RequestReport]) -> String {
    let of = |o: BatchOutcome| batches.iter().filter(|r| r.outcome == o).count();
    let mut parts = vec![format!("{} ok", of(BatchOutcome::Ok))];
    let partial = of(BatchOutcome::Partial);
    if partial > 0 {
        let reasons = partial_reasons(
            batches
                .iter()
                .copied()
                .filter(|r| r.outcome == BatchOutcome::Partial),
        );
        parts.push(format!("{partial} partial ({})", reasons.join(", ")));
    }
    let refused = of(BatchOutcome::Refused);
    if refused > 0 {
        parts.push(format!(
            "{refused} refused (for Tweets the API named; sent again without them)"
        ));
    }
    parts.push(format!("{} failed", of(BatchOutcome::Failed)));
    let retries: u32 = batches.iter().map(|r| r.attempts.saturating_sub(1)).sum();
    parts.push(count(retries as usize, "retry", "retries"));
    let unauthorized = of(BatchOutcome::Unauthorized);
    if unauthorized > 0 {
        parts.push(format!("{unauthorized} credential refused"));
    }
    let n = batches.len();
    format!(
        "{n:>5} {}: {}",
        if n == 1 { "request" } else { "requests" },
        parts.join(", ")
    )
}

/// Prints what a cycle did: what was due, requests per endpoint and credential kind with their
/// outcomes, buckets and rows, failures, and the conditions a person must see (accounts, app
/// keys, an unreachable API). `buckets`: the store's [`stored_buckets`] before and after
/// the cycle.
pub fn print_report(report: &RunReport, buckets: Option<(i64, i64)>) {
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
        "run {run_id} ({}): {} in the inventory (+{} new, {} removed), {} planned",
        kinds.join(", "),
        count(report.inventory_len, "Tweet", "Tweets"),
        report.inventory.added,
        report.inventory.removed,
        count(report.planned, "request", "requests")
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
    for (endpoint, credential) in report.requests_by_endpoint().into_keys() {
        let batches: Vec<&RequestReport> = report
            .requests
            .iter()
            .filter(|r| r.endpoint == endpoint && r.credential.kind() == credential)
            .collect();
        println!(
            "  /{:<10} {credential:<6} {}",
            endpoint.name(),
            outcomes_line(&batches)
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
            "  /historical: {}, {refresh} refreshing open cells{}",
            count(
                historical.len() - refresh,
                "backfill request",
                "backfill requests"
            ),
            report.backfill_left.map_or(String::new(), |n| format!(
                "; backfill left: {}",
                count(n, "request", "requests")
            ))
        );
    }
    let series: Vec<_> = report
        .requests
        .iter()
        .filter(|r| r.kind != JobKind::Totals)
        .collect();
    if !series.is_empty() {
        // Each answer's non-zero buckets; a bucket two batches answered (the last 28 hours,
        // from /28hr and then /historical) is written twice, so these are writes, not buckets.
        let received: usize = series.iter().map(|r| r.received).sum();
        let written: usize = series.iter().map(|r| r.rows).sum();
        let zero = 100.0 * received.saturating_sub(written) as f64 / received.max(1) as f64;
        let held = match buckets.map(|(before, after)| after - before) {
            Some(added) if added >= 0 => format!(
                "; {} added to the database",
                count(added as usize, "non-zero bucket", "non-zero buckets")
            ),
            Some(removed) => format!(
                "; {} fewer in the database (refetched hours that became zero)",
                count(
                    removed.unsigned_abs() as usize,
                    "non-zero bucket",
                    "non-zero buckets"
                )
            ),
            None => String::new(),
        };
        println!(
            "  {} received ({zero:.1}% zero, not stored){held}",
            count(received, "hourly bucket", "hourly buckets")
        );
    }
    println!(
        "  {} in {:.2}s{}",
        count(report.rows_written, "row write", "row writes"),
        report.elapsed.as_secs_f64(),
        if report.interrupted {
            " (interrupted: the rest is planned again next run)"
        } else {
            ""
        }
    );
    let unsent = match report.not_attempted {
        0 => String::new(),
        n => format!(
            "; {} not attempted (planned again next run)",
            count(n, "batch", "batches")
        ),
    };
    if let Some(why) = &report.unreachable {
        println!("  {why}{unsent}");
    } else if let Some(why) = &report.app_refused {
        println!("  {why}; no account is at fault{unsent}");
    } else if report.not_attempted > 0 {
        println!(
            "  {} not attempted; planned again next run",
            count(report.not_attempted, "batch", "batches")
        );
    }
    if report.moved > 0 {
        println!(
            "  {} to another configured account, says the API; collected under it \
             (update the owner in the inventory)",
            if report.moved == 1 {
                "1 Tweet belongs".to_string()
            } else {
                format!("{} Tweets belong", report.moved)
            }
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
            "  paused (enabled = false): {}; {}, public metrics only",
            names.join(", "),
            count(report.skipped.paused, "Tweet", "Tweets")
        );
    }
    if let Some(p) = &report.inventory_problems {
        println!("  {}", p.summary());
    }
    if report.skipped.resting + report.skipped.over_budget > 0 {
        println!(
            "  skipped: {} resting (unavailable or protected), {} ((Tweet, cell) pairs for /historical) \
             left for the next run by the request budget",
            count(report.skipped.resting, "Tweet", "Tweets"),
            count(report.skipped.over_budget, "Tweet", "Tweets")
        );
    }
    if report.skipped.before_lookback > 0 {
        println!(
            "  /historical: {} {:.1} Tweet-days of history before the API's lookback \
             (historical.lookback), not requested",
            match report.skipped.before_lookback {
                1 => "1 Tweet has".to_string(),
                n => format!("{n} Tweets have"),
            },
            report.skipped.before_lookback_secs as f64 / 86_400.0
        );
    }
    let failed: Vec<_> = report.failed().collect();
    if !failed.is_empty() && report.unreachable.is_none() {
        print_batches(
            "failed after retries; in the `requests` table, planned again next run:",
            &failed,
            true,
            "unknown error",
        );
    }
    let partial: Vec<_> = report
        .requests
        .iter()
        .filter(|r| r.outcome == BatchOutcome::Partial)
        .collect();
    if !partial.is_empty() {
        print_batches(
            "partial: answered and stored, but the API left out what it names (`requests` table, outcome partial):",
            &partial,
            false,
            "no reason given",
        );
        if partial.len() > 10 {
            println!("    and {} more", partial.len() - 10);
        }
    }
}

/// `migrate`: create or upgrade the database.
pub fn migrate(config: Config) -> Result<u8, Failure> {
    let target = config.database.target();
    // PostgreSQL: concurrent migrations wait for each other in the server (see Store::migrate).
    let _lock = match target.sqlite_path() {
        Some(path) => Some(crate::lock::WriterLock::acquire(path).map_err(|e| match e {
            crate::lock::LockError::Held { .. } => Failure::locked(e),
            crate::lock::LockError::Io { .. } => Failure::fatal(e),
        })?),
        None => None,
    };
    let file_existed = target.sqlite_path().map(std::path::Path::exists);
    let mut store = Store::connect(&target).map_err(Failure::fatal)?;
    // A PostgreSQL database exists before its schema: "created" is the schema's first version.
    let existed = match file_existed {
        Some(existed) => existed,
        None => store.schema_version().map_err(Failure::fatal)? > 0,
    };
    let (before, after) = store
        .migrate()
        .context("migrate failed")
        .map_err(Failure::fatal)?;
    let shown = target.display();
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
