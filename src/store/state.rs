//! What the planner reads of the database before a cycle: every known Tweet's state, moved
//! owners, each kind's last cycles, the accounts table and the `/historical` cells fetched. The
//! pipeline turns these into its plan state; nothing here plans.

use std::collections::HashMap;

use super::sql::{self, Optional, Tx, args};

use super::{Store, StoreError, unknown_value};
use crate::domain::{AccountState, Handle, RunStatus, TweetId, TweetState, TweetStatus};

/// A kind's last cycles, as the `runs` table has them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindHistory {
    /// Start of the last run that planned the kind in full (not only catching up).
    pub last_full_start: Option<i64>,
    /// Status and end of the last finished run of the kind (catch-up runs and runs that failed
    /// before planning included).
    pub last_finished: Option<(RunStatus, i64)>,
    /// End of the last run of the kind that stored everything of it.
    pub last_success: Option<i64>,
    /// Requests of the kind sent since its last full cycle started (that one included): what a
    /// per-run budget has spent in this period.
    pub sent_since_full: usize,
}

/// One row of the `accounts` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRecord {
    pub handle: String,
    pub state: AccountState,
    pub detail: Option<String>,
    pub since: i64,
    pub checked_at: i64,
}

/// A `/historical` (Tweet, cell) pair fetched: when, and up to when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchedCell {
    pub tweet: TweetId,
    pub cell: i64,
    pub fetched_at: i64,
    pub fetched_until: i64,
}

/// A fetched `/historical` (Tweet, cell) pair that is not complete (see [`Store::open_cells`]).
pub type OpenCell = FetchedCell;

impl Store {
    /// What the planner needs of every known Tweet: its status, when `/totals` and `/28hr` last
    /// answered for it, and the metrics the API refused for it; by Tweet ID (the planner walks
    /// them alongside the inventory, which is in that order).
    pub fn tweet_states(&self) -> Result<Vec<(TweetId, TweetState)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT w.tweet_id, w.status, w.status_checked_at, w.totals_checked_at, \
                 w.unsupported_metrics, r.fetched_at \
                 FROM tweets AS w LEFT JOIN recent_coverage AS r USING (tweet_id) \
                 WHERE w.removed_at IS NULL AND (w.status <> 'active' \
                 OR w.totals_checked_at IS NOT NULL OR w.unsupported_metrics <> 0 \
                 OR r.fetched_at IS NOT NULL) ORDER BY w.tweet_id",
            )?;
            let rows = stmt.query_map(args![], |r| {
                Ok((
                    r.get::<i64>(0)?,
                    r.get::<String>(1)?,
                    r.get::<Option<i64>>(2)?,
                    r.get::<Option<i64>>(3)?,
                    r.get::<i64>(4)?,
                    r.get::<Option<i64>>(5)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, status, status_checked_at, totals_checked_at, unsupported, hourly) = row?;
                if let Some(id) = TweetId::new(id as u64) {
                    let status = TweetStatus::parse(&status)
                        .ok_or_else(|| unknown_value("tweets.status", &status))?;
                    out.push((
                        id,
                        TweetState {
                            status,
                            status_checked_at,
                            totals_checked_at,
                            unsupported: u32::try_from(unsupported).unwrap_or(0),
                            hourly_fetched_at: hourly,
                        },
                    ));
                }
            }
            Ok(out)
        })
    }

    /// Tweets the API attributes to another configured account than the inventory does.
    pub fn moved_owners(&self) -> Result<HashMap<TweetId, Handle>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT tweet_id, owner FROM tweets WHERE removed_at IS NULL \
             AND owner IS DISTINCT FROM listed_owner AND owner IS NOT NULL",
            )?;
            let rows = stmt.query_map(args![], |r| Ok((r.get::<i64>(0)?, r.get::<String>(1)?)))?;
            let mut out = HashMap::new();
            for row in rows {
                let (id, owner) = row?;
                if let (Some(id), Ok(owner)) = (TweetId::new(id as u64), owner.parse()) {
                    out.insert(id, owner);
                }
            }
            Ok(out)
        })
    }

    /// Per kind: the start of the last run that planned it in full, the last finished run of
    /// it, and the end of its last `ok` run.
    pub fn kind_history(&self, kind: &str) -> Result<KindHistory, StoreError> {
        self.read(|conn| {
            // This shard's runs only: shards sharing a database each keep their own cycles.
            let has = "(',' || kinds || ',') LIKE '%,' || ?1 || ',%' AND shard = ?2";
            let shard = self.shard.as_str();
            // The latest such run, not the latest start: after a clock was set back, the run that
            // started "in the future" is not the last one.
            let full = format!(
                "SELECT run_id, started_at FROM runs WHERE planned IS NOT NULL AND {has} \
             AND (',' || catch_up || ',') NOT LIKE '%,' || ?1 || ',%' ORDER BY run_id DESC LIMIT 1"
            );
            let last_full: Option<(i64, i64)> = conn
                .query_row(&full, args![kind, shard], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            let last_full_start = last_full.map(|(_, started)| started);
            // Cycles refused before planning (another writer held the lock, a bad config) say
            // nothing of how the kind's own last cycle went.
            let last = format!(
                "SELECT status, finished_at, (',' || failed_kinds || ',') LIKE '%,' || ?1 || ',%' \
             FROM runs WHERE status != 'running' AND finished_at IS NOT NULL \
             AND planned IS NOT NULL AND {has} ORDER BY run_id DESC LIMIT 1"
            );
            let last_finished = conn
                .query_row(&last, args![kind, shard], |r| {
                    Ok((r.get::<String>(0)?, r.get::<i64>(1)?, r.get::<bool>(2)?))
                })
                .optional()?
                .map(|(status, at, failed_here)| {
                    // A run is partial when any of its kinds failed a batch; this kind is ok if it
                    // was not one of them.
                    let status = match RunStatus::parse(&status)
                        .ok_or_else(|| unknown_value("runs.status", &status))?
                    {
                        RunStatus::Partial if !failed_here => RunStatus::Ok,
                        s => s,
                    };
                    Ok::<_, sql::SqlError>((status, at))
                })
                .transpose()?;
            let ok = format!(
                "SELECT max(finished_at) FROM runs WHERE {has} AND (status = 'ok' OR \
             (status = 'partial' AND (',' || failed_kinds || ',') NOT LIKE '%,' || ?1 || ',%'))"
            );
            let last_success: Option<i64> =
                conn.query_row(&ok, args![kind, shard], |r| r.get(0))?;
            let sent_since_full = match last_full {
                None => 0,
                Some((run_id, _)) => conn.query_row(
                    "SELECT count(*) FROM requests WHERE kind = ?1 AND run_id >= ?2 \
                     AND run_id IN (SELECT run_id FROM runs WHERE shard = ?3)",
                    args![kind, run_id, shard],
                    |r| r.get::<i64>(0),
                )? as usize,
            };
            Ok(KindHistory {
                last_full_start,
                last_finished,
                last_success,
                sent_since_full,
            })
        })
    }

    /// Every row of the `accounts` table, by handle.
    pub fn accounts(&self) -> Result<Vec<AccountRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT handle, state, detail, since, checked_at FROM accounts ORDER BY handle",
            )?;
            let rows = stmt.query_map(args![], |r| {
                Ok((
                    r.get::<String>(0)?,
                    r.get::<String>(1)?,
                    r.get::<Option<String>>(2)?,
                    r.get::<i64>(3)?,
                    r.get::<i64>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (handle, state, detail, since, checked_at) = row?;
                let state = AccountState::parse(&state)
                    .ok_or_else(|| unknown_value("accounts.state", &state))?;
                out.push(AccountRecord {
                    handle,
                    state,
                    detail,
                    since,
                    checked_at,
                });
            }
            Ok(out)
        })
    }

    /// The (Tweet, cell start) pairs whose `/historical` cell is complete: a fetch reached its
    /// end at least `settle_secs` after the cell ended (so late-settling numbers are in); by
    /// Tweet and cell.
    pub fn complete_cells(
        &self,
        cell_secs: i64,
        settle_secs: i64,
    ) -> Result<Vec<(TweetId, i64)>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT tweet_id, cell FROM coverage \
             WHERE fetched_until >= cell + ?1 AND fetched_at >= cell + ?1 + ?2 \
             ORDER BY tweet_id, cell",
            )?;
            let rows = stmt.query_map(args![cell_secs, settle_secs], |r| {
                Ok((r.get::<i64>(0)?, r.get::<i64>(1)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (id, cell) = row?;
                if let Some(id) = TweetId::new(id as u64) {
                    out.push((id, cell));
                }
            }
            Ok(out)
        })
    }

    /// The `/historical` (Tweet, cell) pairs fetched but not complete (see [`Store::complete_cells`]):
    /// cells that ran into the present when fetched, or ended too recently to have settled; by
    /// Tweet and cell.
    pub fn open_cells(
        &self,
        cell_secs: i64,
        settle_secs: i64,
    ) -> Result<Vec<OpenCell>, StoreError> {
        self.read(|conn| {
            cells(
                conn,
                "SELECT tweet_id, cell, fetched_at, fetched_until FROM coverage \
                 WHERE NOT (fetched_until >= cell + ?1 AND fetched_at >= cell + ?1 + ?2) \
                 ORDER BY tweet_id, cell",
                args![cell_secs, settle_secs],
            )
        })
    }

    /// Every `/historical` (Tweet, cell) pair fetched, complete or not, by Tweet and cell.
    pub fn fetched_cells(&self) -> Result<Vec<FetchedCell>, StoreError> {
        self.read(|conn| {
            cells(
                conn,
                "SELECT tweet_id, cell, fetched_at, fetched_until FROM coverage \
                 ORDER BY tweet_id, cell",
                args![],
            )
        })
    }
}

/// The coverage rows `sql` selects (tweet_id, cell, fetched_at, fetched_until).
fn cells(conn: &Tx<'_>, sql: &str, params: &[sql::Arg<'_>]) -> sql::Result<Vec<FetchedCell>> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(params, |r| {
        Ok((r.get::<i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, cell, fetched_at, fetched_until) = row?;
        if let Some(tweet) = TweetId::new(id as u64) {
            out.push(FetchedCell {
                tweet,
                cell,
                fetched_at,
                fetched_until,
            });
        }
    }
    Ok(out)
}
