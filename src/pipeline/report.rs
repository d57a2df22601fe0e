//! What a cycle did, for its caller: the run's report and each request's. It describes; it
//! neither prints nor writes.

use std::collections::BTreeMap;
use std::time::Duration;

use super::due::KindDue;
use crate::domain::{BatchOutcome, Credential, Endpoint, Handle, JobKind, RunStatus};
use crate::metrics::InventoryProblem;
use crate::planner::{Job, Skipped};
use crate::store::{BatchRecord, SyncReport};

/// One request as it ended.
#[derive(Debug, Clone)]
pub struct RequestReport {
    pub kind: JobKind,
    pub endpoint: Endpoint,
    pub credential: Credential,
    pub tweets: usize,
    pub attempts: u32,
    /// Rows written: changed snapshots (totals) or non-zero buckets (series).
    pub rows: usize,
    /// Values the answer carried: one per Tweet and metric (totals), or every bucket of the
    /// dense window (series), zeros included.
    pub received: usize,
    pub outcome: BatchOutcome,
    pub error: Option<String>,
    /// The credential itself was refused (401, or no bearer token could be had).
    pub auth_rejected: bool,
    /// `/historical`: only refreshed cells still settling (see [`crate::planner::HistoricalPolicy`]).
    pub refresh: bool,
}

/// What one cycle did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// `None` when nothing was due and nothing was left undone: no run was recorded.
    pub run_id: Option<i64>,
    /// The kinds the cycle worked on.
    pub kinds: Vec<JobKind>,
    /// Those among `kinds` that only caught up on undone work.
    pub catch_up: Vec<JobKind>,
    /// Every kind considered, with whether it was due.
    pub dues: Vec<KindDue>,
    pub inventory: SyncReport,
    pub inventory_len: usize,
    /// Bad inventory lines the cycle worked around (`file:line: reason`), with how.
    pub inventory_problems: Option<InventoryProblem>,
    pub skipped: Skipped,
    pub planned: usize,
    pub requests: Vec<RequestReport>,
    /// Planned batches never sent: the API was unreachable, the app's keys were refused, or
    /// the process was stopping. Planned again next time.
    pub not_attempted: usize,
    pub rows_written: usize,
    pub interrupted: bool,
    /// Accounts whose token the API refused (401) while it accepted the app's keys: their
    /// public metrics were read with the bearer token; a person must re-authorize them.
    pub rejected_accounts: Vec<Handle>,
    /// Accounts paused in the config (`enabled = false`).
    pub paused_accounts: Vec<Handle>,
    /// The app's own credentials were refused: what and why (exit 3).
    pub app_refused: Option<String>,
    /// The API could not be reached: the root cause (exit 3).
    pub unreachable: Option<String>,
    /// Tweets the API attributed to another configured account than the inventory does.
    pub moved: usize,
    /// `/historical` requests the remaining backfill needs (refreshes aside), when planned.
    pub backfill_left: Option<usize>,
    pub elapsed: Duration,
}

impl RunReport {
    /// Batches that failed after retries.
    pub fn failed(&self) -> impl Iterator<Item = &RequestReport> {
        self.requests
            .iter()
            .filter(|r| r.outcome == BatchOutcome::Failed)
    }

    /// `3` when the API could not be reached or refused the app's own credentials; `1` when a
    /// batch failed after retries; else `0`. A refused or paused account is that account's
    /// condition, reported, not a failed job.
    pub fn exit_code(&self) -> u8 {
        if self.unreachable.is_some() || self.app_refused.is_some() {
            3
        } else if self.failed().next().is_some() {
            1
        } else {
            0
        }
    }

    /// The run's status in `runs`.
    pub fn status(&self) -> RunStatus {
        if self.unreachable.is_some() || self.app_refused.is_some() {
            RunStatus::Failed
        } else if self.interrupted {
            RunStatus::Interrupted
        } else if self.failed().next().is_some() {
            RunStatus::Partial
        } else {
            RunStatus::Ok
        }
    }

    /// Request counts by (endpoint, credential kind).
    pub fn requests_by_endpoint(&self) -> BTreeMap<(Endpoint, &'static str), usize> {
        let mut out = BTreeMap::new();
        for r in &self.requests {
            *out.entry((r.endpoint, r.credential.kind())).or_default() += 1;
        }
        out
    }
}

/// The report of `job`, sent as `record` says, with `rows` written.
pub(super) fn request_report(
    job: &Job,
    record: &BatchRecord,
    rows: usize,
    auth_rejected: bool,
) -> RequestReport {
    RequestReport {
        refresh: job.refresh,
        kind: job.kind,
        endpoint: job.endpoint,
        credential: job.credential.clone(),
        tweets: job.tweets.len(),
        attempts: record.attempts,
        rows,
        received: 0,
        outcome: record.outcome,
        error: record.error.clone(),
        auth_rejected,
    }
}
