//! The end of a cycle: its `runs` row, what it learned of the accounts, and the metrics of its
//! kinds; and the row of a cycle that failed before it planned. It records; it sends nothing.

use super::{Context, PipelineError, RunReport, account_states};
use crate::domain::{AccountState, Handle, JobKind, RunStatus};
use crate::store::{RunSummary, Store, StoreError};

/// What a run learned of the accounts.
pub(super) struct Learned {
    /// The accounts whose token was refused, with the API's words.
    pub rejected: Vec<(Handle, String)>,
    /// The accounts whose token answered.
    pub answered: Vec<Handle>,
    /// The app's own keys were refused: then no account's condition is known.
    pub keys_refused: bool,
}

/// Records the cycle `run_id` as `report` says it went (`fatal`: what stopped it), with what it
/// learned of the accounts, and updates the metrics of its kinds.
pub(super) async fn finish_cycle(
    ctx: &Context,
    run_id: i64,
    report: RunReport,
    learned: Learned,
    fatal: Option<PipelineError>,
    span: &tracing::Span,
) -> Result<RunReport, PipelineError> {
    let kinds = &report.kinds;
    let status = match &fatal {
        Some(_) => RunStatus::Failed,
        None => report.status(),
    };
    let mut notes: Vec<String> = Vec::new();
    if let Some(e) = &fatal {
        notes.push(e.to_string());
    }
    notes.extend(report.unreachable.clone());
    notes.extend(report.app_refused.clone());
    for (account, why) in &learned.rejected {
        notes.push(format!("account {account}: token refused (401): {why}"));
    }
    if let Some(p) = &report.inventory_problems {
        notes.push(p.summary());
    }
    notes.extend(ctx.config_problem.clone());
    let failed_kinds: Vec<&'static str> = kinds
        .iter()
        .filter(|k| report.failed().any(|r| r.kind == **k))
        .map(|k| k.name())
        .collect();
    let summary = RunSummary {
        finished_at: (ctx.clock)(),
        status: status.as_str(),
        requests: report.requests.len(),
        failed_batches: report.failed().count(),
        not_attempted: report.not_attempted,
        failed_kinds: failed_kinds.clone(),
        rows_written: report.rows_written,
        error: (!notes.is_empty()).then(|| notes.join("; ")),
    };
    // What this run learned of the accounts: refused, answering, paused; unconfigured forgotten.
    let configured: Vec<(String, bool)> = ctx
        .config
        .accounts
        .iter()
        .map(|a| (a.handle.to_string(), a.enabled))
        .collect();
    let finished_at = summary.finished_at;
    let learned = (!learned.keys_refused).then_some(learned);
    let records = ctx
        .on_store(move |store| {
            store.finish_run(run_id, &summary)?;
            record_accounts(store, &configured, learned.as_ref(), finished_at)?;
            store.accounts()
        })
        .await?;
    ctx.metrics
        .set_accounts(account_states(&ctx.config, &records));
    ctx.metrics.set_unreachable(
        report
            .unreachable
            .as_ref()
            .map(|why| (why.clone(), finished_at)),
    );
    // Each kind by its own batches: one kind's failed batch does not make another's cycle partial.
    for kind in kinds {
        let own = match status {
            RunStatus::Partial if !failed_kinds.contains(&kind.name()) => RunStatus::Ok,
            s => s,
        };
        ctx.metrics
            .cycle_finished(&[*kind], own, finished_at, report.elapsed.as_secs_f64());
    }
    span.in_scope(|| {
        tracing::info!(
            status = status.as_str(),
            requests = report.requests.len(),
            failed = report.failed().count(),
            not_attempted = report.not_attempted,
            rows = report.rows_written,
            seconds = report.elapsed.as_secs_f64(),
            "Run finished"
        )
    });
    match fatal {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

/// Records in `runs` a cycle that failed before it planned anything, when the database can
/// take it.
pub(super) async fn record_failed_cycle(
    ctx: &Context,
    kinds: &[JobKind],
    started_at: i64,
    error: &PipelineError,
) {
    if let PipelineError::Store(e) = error
        && e.forbids_writing()
    {
        tracing::error!("The failed cycle is not recorded in the runs table: {e}");
        return;
    }
    let names: Vec<&'static str> = kinds.iter().map(|k| k.name()).collect();
    let (finished_at, text) = ((ctx.clock)(), error.to_string());
    let written = ctx
        .on_store(move |store| store.record_failed_cycle(&names, started_at, finished_at, &text))
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "Cannot record the failed cycle in the runs table");
    }
}

/// Writes what a run learned of the accounts (`learned` is `None` when the app's own keys were
/// refused: then no account's condition is known).
fn record_accounts(
    store: &mut Store,
    configured: &[(String, bool)],
    learned: Option<&Learned>,
    now: i64,
) -> Result<(), StoreError> {
    let handles: Vec<&str> = configured.iter().map(|(h, _)| h.as_str()).collect();
    store.retain_accounts(&handles)?;
    let records = store.accounts()?;
    for (handle, enabled) in configured {
        if !enabled {
            store.set_account_state(handle, AccountState::Paused, None, now)?;
        } else if records
            .iter()
            .any(|r| &r.handle == handle && r.state == AccountState::Paused)
        {
            // Enabled again: its condition is unknown until its token is used.
            store.forget_account(handle)?;
        }
    }
    if let Some(Learned {
        rejected, answered, ..
    }) = learned
    {
        for (handle, why) in rejected {
            store.set_account_state(handle.as_str(), AccountState::Refused, Some(why), now)?;
        }
        for handle in answered {
            if !rejected.iter().any(|(h, _)| h == handle) {
                store.set_account_state(handle.as_str(), AccountState::Ok, None, now)?;
            }
        }
    }
    Ok(())
}
