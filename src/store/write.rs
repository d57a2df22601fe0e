//! Every write the pipeline makes: the inventory mirror, one transaction per answered or failed
//! batch (its data, coverage, statuses and ledger row), the run ledger and the accounts table.
//! Nothing here decides what to write: the pipeline interprets answers, this only stores them.

use std::collections::HashMap;

use super::sql::{self, Tx, args};

use super::{Store, StoreError, rollup};
use crate::domain::{
    AccountState, BatchOutcome, Endpoint, Handle, Hour, Metric, StatusChange, TweetId,
};

/// A bucket to store: (Tweet, metric, hour, value).
type BucketRow = (i64, i64, i64, i64);

/// PostgreSQL's path of a series write: the spans cleared in one statement and the buckets
/// written in another (arrays through `unnest`), rather than a round trip per row. Returns the
/// rows written and the buckets added less those removed.
fn write_series_rows_bulk(
    tx: &Tx<'_>,
    spans: &[(i64, i64, i64, i64)],
    rows: &[(BucketRow, bool)],
    source: i64,
    fetched_at: i64,
) -> sql::Result<(usize, i64)> {
    let column = |f: fn(&(i64, i64, i64, i64)) -> i64, of: &[(i64, i64, i64, i64)]| -> Vec<i64> {
        of.iter().map(f).collect()
    };
    let mut added = 0i64;
    if !spans.is_empty() {
        added -= tx.execute(
            "DELETE FROM series AS s USING unnest(CAST(?1 AS BIGINT[]), CAST(?2 AS BIGINT[]), \
             CAST(?3 AS BIGINT[]), CAST(?4 AS BIGINT[])) AS c(tweet_id, metric_id, f, t) \
             WHERE s.tweet_id = c.tweet_id AND s.metric_id = c.metric_id \
             AND s.hour >= c.f AND s.hour < c.t",
            args![
                column(|r| r.0, spans),
                column(|r| r.1, spans),
                column(|r| r.2, spans),
                column(|r| r.3, spans)
            ],
        )? as i64;
    }
    if rows.is_empty() {
        return Ok((0, added));
    }
    let unique: Vec<BucketRow> =
        last_of_each_key(rows, |((id, metric, hour, _), _)| (*id, *metric, *hour))
            .into_iter()
            .map(|(r, _)| *r)
            .collect();
    // xmax = 0: the row is new (inserted), not updated.
    let (written, fresh): (i64, i64) = tx.query_row(
        "WITH ins AS (INSERT INTO series (tweet_id, metric_id, hour, value, source, fetched_at) \
         SELECT v.tweet_id, v.metric_id, v.hour, v.value, ?5, ?6 FROM unnest(CAST(?1 AS BIGINT[]), \
         CAST(?2 AS BIGINT[]), CAST(?3 AS BIGINT[]), CAST(?4 AS BIGINT[])) \
         AS v(tweet_id, metric_id, hour, value) \
         ON CONFLICT (tweet_id, metric_id, hour) DO UPDATE SET value = excluded.value, \
         source = excluded.source, fetched_at = excluded.fetched_at RETURNING (xmax = 0) AS fresh) \
         SELECT count(*), count(*) FILTER (WHERE fresh) FROM ins",
        args![
            column(|r| r.0, &unique),
            column(|r| r.1, &unique),
            column(|r| r.2, &unique),
            column(|r| r.3, &unique),
            source,
            fetched_at
        ],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((
        written as usize + (rows.len() - unique.len()),
        added + fresh,
    ))
}

/// The rows that are the last of their key, in order: what one INSERT per row would leave.
/// PostgreSQL's bulk paths write these (one INSERT … ON CONFLICT DO UPDATE may not touch a row
/// twice).
pub(super) fn last_of_each_key<T, K: std::hash::Hash + Eq>(
    rows: &[T],
    key: impl Fn(&T) -> K,
) -> Vec<&T> {
    let last: HashMap<K, usize> = rows.iter().enumerate().map(|(i, r)| (key(r), i)).collect();
    rows.iter()
        .enumerate()
        .filter(|(i, r)| last[&key(r)] == *i)
        .map(|(_, r)| r)
        .collect()
}

/// `series.source`: the endpoint a bucket came from (schema 0003).
fn series_source(endpoint: Endpoint) -> i64 {
    match endpoint {
        Endpoint::Hour28 => 0,
        Endpoint::Historical | Endpoint::Totals => 1,
    }
}

/// How the inventory mirror changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub added: usize,
    pub owner_changed: usize,
    pub removed: usize,
    pub restored: usize,
}

/// One row of the `requests` ledger.
#[derive(Debug, Clone)]
pub struct BatchRecord {
    pub run_id: i64,
    pub seq: i64,
    pub kind: &'static str,
    pub endpoint: Endpoint,
    /// `bearer` or the account handle; never a secret.
    pub credential: String,
    pub tweet_count: usize,
    pub attempts: u32,
    pub http_status: Option<u16>,
    pub outcome: BatchOutcome,
    pub error: Option<String>,
    pub started_at: i64,
    pub duration_ms: i64,
}

/// The data of one answered `/totals` batch.
#[derive(Debug, Clone, Default)]
pub struct TotalsWrite {
    pub observed_at: i64,
    pub values: Vec<(TweetId, Metric, i64)>,
    /// Tweets the answer covered (their `totals_checked_at` is set).
    pub checked: Vec<TweetId>,
    /// Tweets whose status changed, with the API's words.
    pub status_changes: Vec<StatusChange>,
    /// The account whose token was used, counted in `handle_usage`.
    pub handle: Option<Handle>,
    /// Metrics the API refused for a Tweet (`unsupported_*` lists): never asked again.
    pub unsupported: Vec<(TweetId, Metric)>,
}

/// The data of one answered `/28hr` or `/historical` batch.
#[derive(Debug, Clone)]
pub struct SeriesWrite {
    pub source: Endpoint,
    pub fetched_at: i64,
    /// The answer's window `[start, end)`, hour-aligned Unix seconds.
    pub start: i64,
    pub end: i64,
    /// The (Tweet, metric) pairs the answer named, with the hours `[from, to)` it named them
    /// over (within the window): their stored buckets there are replaced.
    pub answered: Vec<(TweetId, Metric, i64, i64)>,
    /// Buckets; zeros are not stored.
    pub values: Vec<(TweetId, Metric, Hour, i64)>,
    /// `/historical`: the grid cell (start) fetched.
    pub cell: Option<i64>,
    /// The Tweets the answer covered: recorded in `coverage` (`/historical`) or
    /// `recent_coverage` (`/28hr`).
    pub covered: Vec<TweetId>,
    pub status_changes: Vec<StatusChange>,
    pub handle: Option<Handle>,
    /// Metrics the API refused for a Tweet (`unsupported_*` lists): never asked again.
    pub unsupported: Vec<(TweetId, Metric)>,
}

/// Summary of a finished run, as stored in `runs`.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub finished_at: i64,
    pub status: &'static str,
    pub requests: usize,
    pub failed_batches: usize,
    /// Planned batches that were never sent (the API unreachable, or the process stopping).
    pub not_attempted: usize,
    /// The kinds with a batch that failed after retries (the run is `partial` for them only).
    pub failed_kinds: Vec<&'static str>,
    pub rows_written: usize,
    pub error: Option<String>,
}

/// How a run is recorded when it starts.
#[derive(Debug, Clone, Default)]
pub struct RunStart<'a> {
    /// Every kind the run works on.
    pub kinds: Vec<&'a str>,
    /// Those among `kinds` that only catch up on work an earlier cycle left undone.
    pub catch_up: Vec<&'a str>,
    /// Batches planned.
    pub planned: usize,
    pub started_at: i64,
}

impl<'a> RunStart<'a> {
    /// A full run of `kinds` with nothing planned yet (tests and benchmarks).
    pub fn new(kinds: &[&'a str], started_at: i64) -> RunStart<'a> {
        RunStart {
            kinds: kinds.to_vec(),
            started_at,
            ..RunStart::default()
        }
    }
}

impl Store {
    /// Mirrors the inventory into `tweets`: new Tweets are added, changed owners updated, Tweets
    /// no longer listed get `removed_at` (their data stays), listed-again ones lose it.
    pub fn sync_inventory<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (TweetId, Option<&'a Handle>)>,
        now: i64,
    ) -> Result<SyncReport, StoreError> {
        self.write(|tx| {
        let mut known: HashMap<i64, (Option<String>, bool)> = HashMap::new();
        {
            let mut stmt =
                tx.prepare("SELECT tweet_id, listed_owner, removed_at IS NOT NULL FROM tweets")?;
            let rows = stmt.query_map(args![], |r| Ok((r.get::<i64>(0)?, (r.get(1)?, r.get(2)?))))?;
            for row in rows {
                let (id, v) = row?;
                known.insert(id, v);
            }
        }
        let mut report = SyncReport::default();
        {
            let mut insert = tx.prepare(
                "INSERT INTO tweets (tweet_id, owner, listed_owner, created_at, first_seen_at) \
                 VALUES (?1, ?2, ?2, ?3, ?4) ON CONFLICT (tweet_id) DO NOTHING",
            )?;
            let mut set_owner = tx.prepare(
                "UPDATE tweets SET owner = ?2, listed_owner = ?2, status = 'active', status_detail = NULL, \
                 status_changed_at = ?3, status_checked_at = NULL WHERE tweet_id = ?1",
            )?;
            let mut restore =
                tx.prepare("UPDATE tweets SET removed_at = NULL WHERE tweet_id = ?1")?;
            for (id, owner) in entries {
                let key = id.get() as i64;
                let owner = owner.map(Handle::as_str);
                match known.remove(&key) {
                    None => {
                        // Another shard sharing the database may have added it meanwhile.
                        report.added += insert.execute(args![key, owner, id.created_at(), now])?;
                    }
                    Some((old_owner, removed)) => {
                        if old_owner.as_deref() != owner {
                            set_owner.execute(args![key, owner, now])?;
                            report.owner_changed += 1;
                        }
                        if removed {
                            restore.execute(args![key])?;
                            report.restored += 1;
                        }
                    }
                }
            }
            let mut remove = tx.prepare("UPDATE tweets SET removed_at = ?2 WHERE tweet_id = ?1")?;
            for (id, (_, removed)) in known {
                if !removed {
                    remove.execute(args![id, now])?;
                    report.removed += 1;
                }
            }
        }
        Ok(report)
        })
    }

    /// Starts a run and returns its id.
    pub fn begin_run(&mut self, start: &RunStart<'_>) -> Result<i64, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "INSERT INTO runs (kinds, catch_up, planned, started_at, shard) \
                 VALUES (?1, ?2, ?3, ?4, ?5) RETURNING run_id",
                args![
                    start.kinds.join(","),
                    start.catch_up.join(","),
                    start.planned as i64,
                    start.started_at,
                    self.shard
                ],
                |r| r.get(0),
            )
        })
    }

    /// Closes a run with its outcome. A database still busy after the busy timeout is waited
    /// for once more before giving up, so that a run is not left `running` by another
    /// connection's long transaction.
    pub fn finish_run(&mut self, run_id: i64, summary: &RunSummary) -> Result<(), StoreError> {
        let update = |conn: &Tx<'_>| {
            conn.execute(
                "UPDATE runs SET finished_at = ?2, status = ?3, requests = ?4, failed_batches = ?5, \
                 rows_written = ?6, error = ?7, not_attempted = ?8, failed_kinds = ?9 WHERE run_id = ?1",
                args![
                    run_id,
                    summary.finished_at,
                    summary.status,
                    summary.requests as i64,
                    summary.failed_batches as i64,
                    summary.rows_written as i64,
                    summary.error,
                    summary.not_attempted as i64,
                    summary.failed_kinds.join(",")
                ],
            )
        };
        match self.read(update) {
            Err(e) if e.is_busy() => {
                tracing::warn!(
                    run_id,
                    error = %e,
                    "Cannot record the end of the run: another connection holds the database's \
                     write lock; waiting once more"
                );
                match self.read(update) {
                    Ok(_) => {
                        tracing::info!(run_id, "Recorded the end of the run at the second try");
                        Ok(())
                    }
                    Err(e) => {
                        tracing::error!(
                            run_id,
                            error = %e,
                            "The end of the run is not recorded: it stays `running` in the runs \
                             table until the next run marks it interrupted"
                        );
                        Err(e)
                    }
                }
            }
            other => other.map(|_| ()),
        }
    }

    /// Records a cycle of `kinds` that failed before it planned anything (config, inventory,
    /// database, lock), so that `runs` shows every cycle. Safe without the writer lock: one
    /// INSERT, serialised by SQLite like any other write. Returns the run id.
    pub fn record_failed_cycle(
        &mut self,
        kinds: &[&str],
        started_at: i64,
        finished_at: i64,
        error: &str,
    ) -> Result<i64, StoreError> {
        self.read(|conn| {
            conn.query_row(
                "INSERT INTO runs (kinds, started_at, finished_at, status, error, shard) \
                 VALUES (?1, ?2, ?3, 'failed', ?4, ?5) RETURNING run_id",
                args![kinds.join(","), started_at, finished_at, error, self.shard],
                |r| r.get(0),
            )
        })
    }

    /// Records what a run found of an account; `since` moves only when the state changes.
    pub fn set_account_state(
        &mut self,
        handle: &str,
        state: AccountState,
        detail: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.read(|conn| {
            conn.execute(
                "INSERT INTO accounts (handle, state, detail, since, checked_at) VALUES (?1, ?2, ?3, ?4, ?4) \
                 ON CONFLICT (handle) DO UPDATE SET \
                 since = CASE WHEN accounts.state <> excluded.state THEN excluded.since \
                     ELSE accounts.since END, \
                 state = excluded.state, detail = excluded.detail, checked_at = excluded.checked_at",
                args![handle, state.as_str(), detail, now],
            )
        })?;
        Ok(())
    }

    /// Forgets what is known of one account.
    pub fn forget_account(&mut self, handle: &str) -> Result<(), StoreError> {
        self.read(|conn| conn.execute("DELETE FROM accounts WHERE handle = ?1", args![handle]))?;
        Ok(())
    }

    /// Forgets accounts no longer configured.
    pub fn retain_accounts(&mut self, handles: &[&str]) -> Result<usize, StoreError> {
        let keep: std::collections::HashSet<&str> = handles.iter().copied().collect();
        let gone: Vec<String> = self
            .accounts()?
            .into_iter()
            .map(|a| a.handle)
            .filter(|h| !keep.contains(h.as_str()))
            .collect();
        for h in &gone {
            self.forget_account(h)?;
        }
        Ok(gone.len())
    }

    /// Marks every run still `running` as interrupted at `now`: called with the writer lock
    /// held, so no other process is running them (a killed process left them so). Returns how
    /// many were marked.
    pub fn close_stale_runs(&mut self, now: i64) -> Result<usize, StoreError> {
        self.read(|conn| {
            conn.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ?1, \
                 error = coalesce(error, 'the process ended before the run finished') \
                 WHERE status = 'running' AND shard = ?2",
                args![now, self.shard],
            )
        })
    }

    /// Records a batch that produced no data (it failed, or was refused as a whole), with the
    /// statuses it revealed and the Tweets the API says belong to another configured account.
    pub fn record_batch(
        &mut self,
        record: &BatchRecord,
        status_changes: &[StatusChange],
        moved: &[(TweetId, Handle)],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            apply_status_changes(tx, status_changes, record.started_at)?;
            {
                let mut stmt =
                    tx.prepare_cached("UPDATE tweets SET owner = ?2 WHERE tweet_id = ?1")?;
                for (id, owner) in moved {
                    stmt.execute(args![id.get() as i64, owner.as_str()])?;
                }
            }
            insert_request(tx, record, 0)?;
            Ok(())
        })
    }

    /// Writes one answered `/28hr` or `/historical` batch, its coverage, its ledger row and its
    /// handle usage in one transaction. The answer is dense over `[start, end)`: stored buckets
    /// of the answered (Tweet, metric) pairs in that window are replaced by the non-zero ones, so
    /// a bucket that turned to zero disappears. Returns the number of bucket rows written.
    pub fn write_series_batch(
        &mut self,
        record: &BatchRecord,
        data: &SeriesWrite,
    ) -> Result<usize, StoreError> {
        let (written, added) = self.write(|tx| {
        let mut written = 0;
        // Buckets added less buckets removed.
        let mut added = 0i64;
        {
            // What each (Tweet, metric) had replaced and written, for the daily rollups.
            let mut pairs: HashMap<(TweetId, Metric), rollup::PairWrite> = HashMap::new();
            let mut spans: Vec<(i64, i64, i64, i64)> = Vec::new();
            for &(id, metric, from, to) in &data.answered {
                let (from, to) = (from.max(data.start), to.min(data.end));
                if from < to {
                    spans.push((id.get() as i64, metric.id(), from, to));
                    pairs
                        .entry((id, metric))
                        .or_default()
                        .replaced
                        .push((from, to));
                }
            }
            let source = series_source(data.source);
            // The buckets to store, in order; (cleared: inside a span just cleared).
            let mut rows: Vec<(BucketRow, bool)> = Vec::new();
            for &(id, metric, hour, value) in &data.values {
                if value != 0 && (data.start..data.end).contains(&hour.secs()) {
                    let cleared = pairs.get(&(id, metric)).is_some_and(|p| {
                        p.replaced
                            .iter()
                            .any(|&(from, to)| (from..to).contains(&hour.secs()))
                    });
                    rows.push(((id.get() as i64, metric.id(), hour.secs(), value), cleared));
                    pairs
                        .entry((id, metric))
                        .or_default()
                        .buckets
                        .push((hour.secs(), value));
                }
            }
            if tx.backend() == sql::Backend::Postgres {
                let (w, a) = write_series_rows_bulk(tx, &spans, &rows, source, data.fetched_at)?;
                written += w;
                added += a;
            } else {
                let mut clear = tx.prepare_cached(
                    "DELETE FROM series WHERE tweet_id = ?1 AND metric_id = ?2 AND hour >= ?3 AND hour < ?4",
                )?;
                for &(id, metric, from, to) in &spans {
                    added -= clear.execute(args![id, metric, from, to])? as i64;
                }
                let mut insert = tx.prepare_cached(
                    "INSERT INTO series (tweet_id, metric_id, hour, value, source, fetched_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (tweet_id, metric_id, hour) \
                     DO UPDATE SET value = excluded.value, source = excluded.source, fetched_at = excluded.fetched_at",
                )?;
                let mut exists = tx.prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM series WHERE tweet_id = ?1 AND metric_id = ?2 AND hour = ?3)",
                )?;
                for &((id, metric, hour, value), cleared) in &rows {
                    // Inside a span just cleared the bucket is new; elsewhere it may replace one.
                    if cleared || !exists.query_row(args![id, metric, hour], |r| r.get::<bool>(0))? {
                        added += 1;
                    }
                    written +=
                        insert.execute(args![id, metric, hour, value, source, data.fetched_at])?;
                }
            }
            rollup::after_series_write(tx, pairs)?;
            if let Some(cell) = data.cell {
                let mut cover = tx.prepare_cached(
                    "INSERT INTO coverage (tweet_id, cell, fetched_at, fetched_until) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (tweet_id, cell) DO UPDATE SET fetched_at = excluded.fetched_at, \
                     fetched_until = excluded.fetched_until",
                )?;
                for id in &data.covered {
                    cover.execute(args![id.get() as i64, cell, data.fetched_at, data.end])?;
                }
            } else {
                let mut cover = tx.prepare_cached(
                    "INSERT INTO recent_coverage (tweet_id, fetched_from, fetched_until, fetched_at) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (tweet_id) DO UPDATE SET \
                     fetched_from = CASE WHEN excluded.fetched_from <= recent_coverage.fetched_until \
                         AND excluded.fetched_until >= recent_coverage.fetched_from \
                         THEN min(recent_coverage.fetched_from, excluded.fetched_from) \
                         ELSE excluded.fetched_from END, \
                     fetched_until = CASE WHEN excluded.fetched_from <= recent_coverage.fetched_until \
                         AND excluded.fetched_until >= recent_coverage.fetched_from \
                         THEN max(recent_coverage.fetched_until, excluded.fetched_until) \
                         ELSE excluded.fetched_until END, \
                     fetched_at = excluded.fetched_at",
                )?;
                for id in &data.covered {
                    cover.execute(args![
                        id.get() as i64,
                        data.start,
                        data.end,
                        data.fetched_at
                    ])?;
                }
            }
        }
        record_answer(
            tx,
            record,
            written,
            data.fetched_at,
            &data.status_changes,
            &data.unsupported,
            data.handle.as_ref(),
        )?;
        Ok((written, added))
        })?;
        self.buckets_added += added;
        Ok(written)
    }

    /// Hourly buckets this handle's series writes added since it was opened, less those they
    /// removed (a bucket replaced counts neither way).
    pub fn buckets_added(&self) -> i64 {
        self.buckets_added
    }
}

/// What every answered batch records beside its data, at `at`: the statuses it revealed, the
/// metrics it refused, the handle whose token it used, and its ledger row with `rows` written.
pub(super) fn record_answer(
    tx: &Tx<'_>,
    record: &BatchRecord,
    rows: usize,
    at: i64,
    status_changes: &[StatusChange],
    unsupported: &[(TweetId, Metric)],
    handle: Option<&Handle>,
) -> sql::Result<()> {
    apply_status_changes(tx, status_changes, at)?;
    note_unsupported(tx, unsupported)?;
    if let Some(handle) = handle {
        note_handle_usage(tx, handle, at)?;
    }
    insert_request(tx, record, rows)
}

fn apply_status_changes(tx: &Tx<'_>, changes: &[StatusChange], now: i64) -> sql::Result<()> {
    // Every report refreshes status_checked_at (what resting periods count from); the change
    // time moves only when the status does. SET reads the old row, so the CASE sees the old status.
    let mut stmt = tx.prepare_cached(
        "UPDATE tweets SET status_changed_at = CASE WHEN status <> ?2 THEN ?4 ELSE status_changed_at END, \
         status = ?2, status_detail = ?3, status_checked_at = ?4 WHERE tweet_id = ?1",
    )?;
    for (id, status, detail) in changes {
        stmt.execute(args![id.get() as i64, status.as_str(), detail, now])?;
    }
    Ok(())
}

fn note_unsupported(tx: &Tx<'_>, refused: &[(TweetId, Metric)]) -> sql::Result<()> {
    let mut stmt = tx.prepare_cached(
        "UPDATE tweets SET unsupported_metrics = unsupported_metrics | (1 << ?2) WHERE tweet_id = ?1",
    )?;
    for (id, metric) in refused {
        stmt.execute(args![id.get() as i64, metric.id()])?;
    }
    Ok(())
}

fn note_handle_usage(tx: &Tx<'_>, handle: &Handle, now: i64) -> sql::Result<()> {
    let month = crate::domain::iso_utc(now)[..7].to_string();
    tx.prepare_cached(
        "INSERT INTO handle_usage (month, handle, requests, first_used_at, last_used_at) \
         VALUES (?1, ?2, 1, ?3, ?3) ON CONFLICT (month, handle) \
         DO UPDATE SET requests = handle_usage.requests + 1, last_used_at = excluded.last_used_at",
    )?
    .execute(args![month, handle.as_str(), now])?;
    Ok(())
}

fn insert_request(tx: &Tx<'_>, r: &BatchRecord, rows: usize) -> sql::Result<()> {
    tx.prepare_cached(
        "INSERT INTO requests (run_id, seq, kind, endpoint, credential, tweet_count, attempts, \
         http_status, outcome, error, rows, started_at, duration_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(args![
        r.run_id,
        r.seq,
        r.kind,
        r.endpoint.name(),
        r.credential,
        r.tweet_count as i64,
        r.attempts,
        r.http_status,
        r.outcome.as_str(),
        r.error,
        rows as i64,
        r.started_at,
        r.duration_ms
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::fixture::{hold_write_lock, id};
    use super::*;

    fn record(run_id: i64, seq: i64) -> BatchRecord {
        BatchRecord {
            run_id,
            seq,
            kind: "totals",
            endpoint: Endpoint::Totals,
            credential: "bearer".into(),
            tweet_count: 2,
            attempts: 1,
            http_status: Some(200),
            outcome: BatchOutcome::Ok,
            error: None,
            started_at: 1_800_000_000,
            duration_ms: 12,
        }
    }

    #[test]
    fn inventory_mirror_adds_removes_and_restores() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("e.sqlite")).unwrap();
        let acme: Handle = "acme".parse().unwrap();
        let r = store
            .sync_inventory([(id(1), Some(&acme)), (id(2), None)], 100)
            .unwrap();
        assert_eq!(
            r,
            SyncReport {
                added: 2,
                ..Default::default()
            }
        );
        let r = store.sync_inventory([(id(2), None)], 200).unwrap();
        assert_eq!(
            r,
            SyncReport {
                removed: 1,
                ..Default::default()
            }
        );
        let removed_at: Option<i64> = store
            .sqlite()
            .query_row(
                "SELECT removed_at FROM tweets WHERE tweet_id = ?1",
                [id(1).get() as i64],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(removed_at, Some(200));
        let r = store
            .sync_inventory([(id(1), None), (id(2), None)], 300)
            .unwrap();
        assert_eq!(
            r,
            SyncReport {
                restored: 1,
                owner_changed: 1,
                ..Default::default()
            }
        );
        assert_eq!(store.count("tweets").unwrap(), 2);
    }

    #[test]
    fn totals_are_change_only_and_the_view_shows_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("e.sqlite")).unwrap();
        store.sync_inventory([(id(1), None)], 1).unwrap();
        let run = store.begin_run(&RunStart::new(&["totals"], 1)).unwrap();
        let write = |observed_at, value| TotalsWrite {
            observed_at,
            values: vec![
                (id(1), Metric::Favorites, value),
                (id(1), Metric::Replies, 3),
            ],
            checked: vec![id(1)],
            ..Default::default()
        };
        assert_eq!(
            store
                .write_totals_batch(&record(run, 1), &write(10, 5))
                .unwrap(),
            2
        );
        assert_eq!(
            store
                .write_totals_batch(&record(run, 2), &write(20, 5))
                .unwrap(),
            0
        );
        assert_eq!(
            store
                .write_totals_batch(&record(run, 3), &write(30, 7))
                .unwrap(),
            1
        );
        assert_eq!(store.count("totals").unwrap(), 3);
        let (value, observed, checked): (i64, i64, i64) = store
            .sqlite()
            .query_row(
                "SELECT value, observed_at, checked_at FROM latest_totals WHERE metric = 'favorites'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((value, observed, checked), (7, 30, 30));
        assert_eq!(store.count("requests").unwrap(), 3);
    }

    /// Series are sparse: zero buckets are not stored, and a bucket that turns to zero when its
    /// window is fetched again is removed; coverage is written with the batch.
    #[test]
    fn series_windows_replace_their_buckets_sparsely() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("e.sqlite")).unwrap();
        let t = id(1);
        store.sync_inventory([(t, None)], 1).unwrap();
        let run = store.begin_run(&RunStart::new(&["historical"], 1)).unwrap();
        let h = |n: i64| Hour::floor(1_700_000_000).plus_hours(n);
        let write = |values: Vec<(i64, i64)>, fetched_at| SeriesWrite {
            source: Endpoint::Historical,
            fetched_at,
            start: h(0).secs(),
            end: h(4).secs(),
            answered: vec![(t, Metric::Favorites, h(0).secs(), h(4).secs())],
            values: values
                .into_iter()
                .map(|(n, v)| (t, Metric::Favorites, h(n), v))
                .collect(),
            cell: Some(1_698_000_000),
            covered: vec![t],
            status_changes: Vec::new(),
            handle: None,
            unsupported: Vec::new(),
        };
        let mut rec = record(run, 1);
        rec.endpoint = Endpoint::Historical;
        let rows = store
            .write_series_batch(&rec, &write(vec![(0, 5), (1, 0), (2, -1), (3, 7)], 10))
            .unwrap();
        assert_eq!(rows, 3);
        rec.seq = 2;
        store
            .write_series_batch(&rec, &write(vec![(0, 5), (1, 2), (2, 0), (3, 0)], 20))
            .unwrap();
        let mut stmt = store
            .sqlite()
            .prepare("SELECT hour, value FROM series ORDER BY hour")
            .unwrap();
        let rows: Vec<(i64, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![(h(0).secs(), 5), (h(1).secs(), 2)]);
        let fetched: i64 = store
            .sqlite()
            .query_row("SELECT fetched_at FROM coverage", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fetched, 20);
    }

    /// A batch answered while another connection holds the write lock waits for it and is
    /// stored: its transaction takes the lock as it begins. (A deferred one reads first and
    /// then cannot wait: it fails at once with "database is locked".)
    #[test]
    fn a_batch_write_waits_for_another_connections_write_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        let mut store = Store::open(&path).unwrap();
        store.sync_inventory([(id(1), None)], 1).unwrap();
        let run = store.begin_run(&RunStart::new(&["totals"], 1)).unwrap();
        let (release, holder) = hold_write_lock(&path);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            release.send(()).unwrap();
        });
        let write = TotalsWrite {
            observed_at: 10,
            values: vec![(id(1), Metric::Favorites, 5)],
            checked: vec![id(1)],
            ..Default::default()
        };
        assert_eq!(
            store.write_totals_batch(&record(run, 1), &write).unwrap(),
            1
        );
        releaser.join().unwrap();
        holder.join().unwrap();
        assert_eq!(store.count("requests").unwrap(), 1);
    }

    /// `finish_run` on a database busy for longer than the busy timeout waits once more, so
    /// the run is closed rather than left `running`.
    #[test]
    fn finish_run_waits_once_more_for_a_busy_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        let mut store = Store::open(&path).unwrap();
        let run = store.begin_run(&RunStart::new(&["totals"], 1)).unwrap();
        let timeout = Duration::from_millis(500);
        store.sqlite().busy_timeout(timeout).unwrap();
        let (release, holder) = hold_write_lock(&path);
        // Held past the first wait, let go during the second.
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(timeout * 3 / 2);
            release.send(()).unwrap();
        });
        let summary = RunSummary {
            finished_at: 2,
            status: "ok",
            requests: 0,
            failed_batches: 0,
            not_attempted: 0,
            failed_kinds: Vec::new(),
            rows_written: 0,
            error: None,
        };
        store.finish_run(run, &summary).unwrap();
        releaser.join().unwrap();
        holder.join().unwrap();
        let status: String = store
            .sqlite()
            .query_row("SELECT status FROM runs WHERE run_id = ?1", [run], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(status, "ok");
    }

    /// A run left `running` (its process killed, or its end not recordable) is closed as
    /// interrupted by the next writer, after waiting for a lock another connection holds.
    #[test]
    fn a_stale_running_run_is_marked_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.sqlite");
        let mut store = Store::open(&path).unwrap();
        let run = store.begin_run(&RunStart::new(&["totals"], 1)).unwrap();
        let (release, holder) = hold_write_lock(&path);
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            release.send(()).unwrap();
        });
        assert_eq!(store.close_stale_runs(5).unwrap(), 1);
        releaser.join().unwrap();
        holder.join().unwrap();
        let (status, finished): (String, i64) = store
            .sqlite()
            .query_row(
                "SELECT status, finished_at FROM runs WHERE run_id = ?1",
                [run],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((status.as_str(), finished), ("interrupted", 5));
    }
}
