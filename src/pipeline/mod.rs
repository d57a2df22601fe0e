//! The pipeline: the only place that knows the order of the stages. A cycle reads the
//! inventory, mirrors it into the database, decides which kinds are due (or catch up on what an
//! earlier cycle left undone), plans, sends every job through the client, parses, and stores
//! each batch in its own transaction. `run`, `demo` and the daemon's scheduler call it.
//!
//! This file holds the order alone. Around it: `context` (what every cycle shares), `due` (which
//! kinds run, and how much of each), `plan` (the database's state → jobs), `batch` (sending and
//! storing one job), `fallback` (refused credentials and refused Tweets), `answer` (what an
//! answer or a refusal means: pure), `finish` (recording the cycle), `report` (what it did).

mod answer;
mod batch;
mod context;
mod due;
mod fallback;
mod finish;
mod plan;
mod report;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use crate::domain::system_clock;
pub use context::{Context, PipelineError, account_states};
pub use due::{KindDue, Scope, Selection, human_secs, schedule_tolerance};
pub use plan::{PlanState, backfill_left, load_inventory, plan, shard_entries};
pub use report::{RequestReport, RunReport};

use crate::domain::{BatchOutcome, Handle, JobKind, RunStatus};
use crate::inventory::Inventory;
use crate::metrics::InventoryProblem;
use crate::progress::Progress;
use crate::store::{RunStart, SyncReport};
use batch::BatchContext;
use plan::Planned;

/// [`run_cycle`], bounded after shutdown by the config's `shutdown_grace`: when batches in
/// flight have not finished by then, the cycle is abandoned (they are planned again next run),
/// its run is marked interrupted, and `None` is returned.
pub async fn run_within_grace(
    ctx: &Context,
    selection: &Selection,
    shutdown: &CancellationToken,
) -> Result<Option<RunReport>, PipelineError> {
    let started = Instant::now();
    let grace = ctx.config.runtime.shutdown_grace;
    let expired = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        report = run_cycle(ctx, selection, shutdown) => report.map(Some),
        () = expired => {
            tracing::warn!(grace = ?grace, "Batches still in flight at the end of the shutdown grace: \
                abandoned (they are planned again next run)");
            let now = (ctx.clock)();
            ctx.on_store(move |store| store.close_stale_runs(now)).await?;
            let seconds = started.elapsed().as_secs_f64();
            ctx.metrics
                .cycle_finished(&selection.kinds(), RunStatus::Interrupted, now, seconds);
            Ok(None)
        }
    }
}

/// Runs one cycle of `kinds` in full (as `run --job`, the daemon's triggers and `demo` do).
pub async fn run_once(
    ctx: &Context,
    kinds: &[JobKind],
    shutdown: &CancellationToken,
) -> Result<RunReport, PipelineError> {
    run_cycle(ctx, &Selection::Forced(kinds.to_vec()), shutdown).await
}

/// Runs one cycle of what `selection` picks. When `shutdown` is cancelled no new request is
/// sent; requests in flight finish and are stored, and the run is marked interrupted. A cycle
/// that fails before planning (inventory, database) is recorded in `runs` as failed, unless the
/// database is damaged or cannot be written.
pub async fn run_cycle(
    ctx: &Context,
    selection: &Selection,
    shutdown: &CancellationToken,
) -> Result<RunReport, PipelineError> {
    let started = Instant::now();
    let now = (ctx.clock)();
    let considered = selection.kinds();
    let begun = match begin_cycle(ctx, selection, &considered, now).await {
        Ok(begun) => begun,
        Err(e) => {
            let seconds = started.elapsed().as_secs_f64();
            ctx.metrics
                .cycle_finished(&considered, RunStatus::Failed, (ctx.clock)(), seconds);
            finish::record_failed_cycle(ctx, &considered, now, &e).await;
            return Err(e);
        }
    };
    let Begun {
        inventory,
        inventory_problems,
        sync,
        state,
        dues,
        planned,
        run_id,
    } = begun;
    let Planned {
        scopes,
        jobs,
        skipped,
        backfill_left,
    } = planned;
    let kinds: Vec<JobKind> = scopes.iter().map(|(k, _)| *k).collect();
    let catch_up: Vec<JobKind> = scopes
        .iter()
        .filter(|(_, s)| matches!(s, Scope::CatchUp { .. }))
        .map(|(k, _)| *k)
        .collect();
    let paused_accounts: Vec<Handle> = ctx
        .config
        .accounts
        .iter()
        .filter(|a| !a.enabled)
        .map(|a| a.handle.clone())
        .collect();
    let mut report = RunReport {
        run_id,
        kinds: kinds.clone(),
        catch_up,
        dues,
        inventory: sync,
        inventory_len: inventory.entries.len(),
        inventory_problems,
        skipped,
        planned: 0,
        requests: Vec::new(),
        not_attempted: 0,
        rows_written: 0,
        interrupted: false,
        rejected_accounts: Vec::new(),
        paused_accounts,
        app_refused: None,
        unreachable: None,
        moved: 0,
        backfill_left,
        elapsed: started.elapsed(),
    };
    let Some(run_id) = run_id else {
        tracing::debug!(
            "Nothing due and nothing left undone: {}",
            report
                .dues
                .iter()
                .map(|d| format!("{} {}", d.kind.name(), d.reason(now)))
                .collect::<Vec<_>>()
                .join("; ")
        );
        return Ok(report);
    };
    let kind_names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    let span = tracing::info_span!("run", run_id, kinds = %kind_names.join(","));
    span.in_scope(|| {
        for d in &report.dues {
            tracing::debug!(kind = d.kind.name(), reason = %d.reason(now), "Due?");
        }
        tracing::info!(
            shard = %ctx.config.shard,
            tweets = inventory.entries.len(),
            added = report.inventory.added,
            removed = report.inventory.removed,
            requests = jobs.len(),
            catch_up = %report.catch_up.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
            "Planned"
        )
    });

    report.planned = jobs.len();
    let mut per_kind: BTreeMap<JobKind, usize> = kinds.iter().map(|k| (*k, 0)).collect();
    for job in &jobs {
        *per_kind.entry(job.kind).or_default() += 1;
    }
    ctx.metrics.cycle_started(&per_kind);
    let progress = ctx.progress.map(|every| {
        let limits = kinds
            .iter()
            .map(|k| (*k, ctx.config.limit(k.endpoint())))
            .collect();
        let reporter = Progress::new(Arc::clone(&ctx.metrics), kinds.clone(), limits, started);
        tokio::spawn(reporter.run(every).instrument(span.clone()))
    });
    let batch = Arc::new(BatchContext::new(ctx, run_id, state.tweets, shutdown));
    let sent = batch.send_all(jobs, &span).await;
    if let Some(progress) = progress {
        progress.abort();
    }

    let mut requests = sent.requests;
    requests.sort_by(|a, b| {
        (a.kind, a.endpoint, &a.credential).cmp(&(b.kind, b.endpoint, &b.credential))
    });
    let keys_refused = batch.app_refused.get().is_some();
    let mut rejected = sent.rejected;
    // An account refused while the app's keys were refused too is not the account's fault.
    if keys_refused {
        rejected.clear();
    }
    // The backfill left once this run's backfill batches are stored.
    let backfill_done = requests
        .iter()
        .filter(|r| {
            r.kind == JobKind::Historical
                && !r.refresh
                && matches!(r.outcome, BatchOutcome::Ok | BatchOutcome::Partial)
        })
        .count();
    report.backfill_left = backfill_left.map(|n| n.saturating_sub(backfill_done));
    if let Some(n) = report.backfill_left {
        ctx.metrics.set_backfill_left(n);
    }
    report.skipped.rejected += sent.skipped_tweets;
    report.rows_written = requests.iter().map(|r| r.rows).sum();
    report.requests = requests;
    report.not_attempted = sent.not_attempted;
    report.interrupted = sent.interrupted;
    report.rejected_accounts = rejected.iter().map(|(h, _)| h.clone()).collect();
    report.app_refused = batch
        .app_refused
        .get()
        .or(batch.bearer_refused.get())
        .cloned();
    report.unreachable = batch.breaker.tripped();
    report.moved = batch.moved_count();
    report.elapsed = started.elapsed();
    let news = finish::Learned {
        rejected,
        answered: batch.answered_accounts(),
        keys_refused,
    };
    finish::finish_cycle(ctx, run_id, report, news, sent.fatal, &span).await
}

/// What a cycle knows once it has planned.
struct Begun {
    inventory: Arc<Inventory>,
    inventory_problems: Option<InventoryProblem>,
    sync: SyncReport,
    state: PlanState,
    dues: Vec<KindDue>,
    planned: Planned,
    /// `None`: nothing to do, nothing recorded.
    run_id: Option<i64>,
}

/// Reads the inventory, mirrors it, reads the plan state, decides what is due, plans, and
/// records the run (when there is anything to do). The database work runs off the async
/// threads.
async fn begin_cycle(
    ctx: &Context,
    selection: &Selection,
    considered: &[JobKind],
    now: i64,
) -> Result<Begun, PipelineError> {
    let (inventory, inventory_problems) = ctx.inventory(now)?;
    let mirror = Arc::clone(&inventory);
    let settle_after = ctx.config.historical.settle_after;
    // Before anything is sent, the database must be sound and writable (proven when the context
    // opened it, if that was a moment ago).
    let proven = ctx.take_proof();
    let (sync, state) = ctx
        .on_store(move |store| {
            if !proven {
                store.preflight()?;
            }
            let entries = mirror.entries.iter().map(|e| (e.id, e.owner.as_ref()));
            let sync = store.sync_inventory(entries, now)?;
            Ok((sync, PlanState::read(store, settle_after)?))
        })
        .await?;

    let dues = state.dues(selection, &ctx.config.schedule, now);
    let planned = plan::plan_cycle(&ctx.config, &inventory, &state, &dues, considered, now);
    if let Some(n) = planned.backfill_left {
        ctx.metrics.set_backfill_left(n);
    }
    let run_id = if planned.scopes.is_empty() {
        None
    } else {
        let start = RunStart {
            kinds: planned.scopes.iter().map(|(k, _)| k.name()).collect(),
            catch_up: planned
                .scopes
                .iter()
                .filter(|(_, s)| matches!(s, Scope::CatchUp { .. }))
                .map(|(k, _)| k.name())
                .collect(),
            planned: planned.jobs.len(),
            started_at: now,
        };
        Some(ctx.on_store(move |store| store.begin_run(&start)).await?)
    };
    Ok(Begun {
        inventory,
        inventory_problems,
        sync,
        state,
        dues,
        planned,
        run_id,
    })
}
