//! What people read from the database (`query`, `report`, `demo`), as typed rows: latest totals,
//! a Tweet's hourly series with its coverage, the top Tweets of a period, daily sums per
//! account, the run ledger, failures and usage. The rules of what a value means live here once:
//! a missing hour inside fetched coverage is zero, and a Tweet without collected series counts
//! the growth of its lifetime total. Presentation (tables, charts) is the callers' business.

use std::collections::BTreeMap;

use super::sql::{self, Tx, args, named};

use super::rollup::{day_ceil, day_of};
use super::{Store, StoreError, unknown_value};
use crate::domain::{AccountState, Endpoint, JobKind, Metric, RunStatus, TweetId, TweetStatus};

mod accounts;
mod series;
pub use accounts::{AccountFigures, AccountsQuery};
pub use series::{Bucket, Coverage, SeriesPoint};

/// Which Tweets a read covers, by owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Owner<'a> {
    /// Every Tweet, owned or public.
    #[default]
    Any,
    /// The Tweets of this handle, spelled as stored.
    Is(&'a str),
    /// The Tweets of this handle in any letter case.
    AnyCase(&'a str),
}

impl Owner<'_> {
    /// The two parameters of [`OWNER_FILTER`]: the exact handle, and the lower-cased one.
    fn params(self) -> (Option<String>, Option<String>) {
        match self {
            Owner::Any => (None, None),
            Owner::Is(h) => (Some(h.to_string()), None),
            Owner::AnyCase(h) => (None, Some(h.to_lowercase())),
        }
    }
}

/// The condition on `w.owner` that [`Owner::params`] binds as `:owner` and `:owner_folded`.
const OWNER_FILTER: &str = "(CAST(:owner AS TEXT) IS NULL OR w.owner = :owner) \
     AND (CAST(:owner_folded AS TEXT) IS NULL OR lower(w.owner) = :owner_folded)";

/// A Tweet as the `tweets` table knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TweetInfo {
    pub tweet: TweetId,
    pub owner: Option<String>,
    pub created_at: i64,
}

/// How many Tweets are listed (not removed from the inventory), and how many of them are owned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TweetCounts {
    pub listed: i64,
    pub owned: i64,
}

/// The latest stored lifetime total of one (Tweet, metric).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestTotal {
    pub tweet: TweetId,
    pub owner: Option<String>,
    pub metric: Metric,
    pub value: i64,
    pub observed_at: i64,
    /// When `/totals` last answered for the Tweet in full.
    pub checked_at: Option<i64>,
}

/// What a Tweet's value over a period is made of, for [`Store::top_tweets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopBasis {
    /// The sum of its hourly buckets in the period (zero when none is stored).
    Series,
    /// The growth of its lifetime total: the latest value minus the last one seen at or before
    /// the period's start, or the latest value for a Tweet created in the period. Unknown when
    /// neither is stored.
    Totals,
    /// [`TopBasis::Series`] for Tweets whose series are collected (they have coverage), else
    /// [`TopBasis::Totals`].
    SeriesElseTotals,
}

/// Where a period value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueSource {
    Series,
    Totals,
}

impl ValueSource {
    /// `series` or `totals`.
    pub fn as_str(self) -> &'static str {
        match self {
            ValueSource::Series => "series",
            ValueSource::Totals => "totals",
        }
    }
}

/// Which Tweets rank highest, by what, over which period.
#[derive(Debug, Clone, Copy)]
pub struct TopQuery<'a> {
    pub metric: Metric,
    /// Start of the period, Unix seconds (`i64::MIN`: since ever).
    pub since: i64,
    /// End of the period (exclusive); `None`: up to the latest data.
    pub until: Option<i64>,
    pub owner: Owner<'a>,
    pub limit: usize,
    pub basis: TopBasis,
    /// Leave out Tweets whose value is not above zero.
    pub only_positive: bool,
}

/// One ranked Tweet, with its impressions and engagements over the same period and basis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopTweet {
    pub tweet: TweetId,
    pub owner: Option<String>,
    pub created_at: i64,
    /// The ranked metric's value.
    pub value: i64,
    pub source: ValueSource,
    pub impressions: Option<i64>,
    pub engagements: Option<i64>,
}

/// Which daily sums to read.
#[derive(Debug, Clone, Copy)]
pub struct DailyQuery<'a> {
    pub metric: Metric,
    /// From the UTC day holding this time on (Unix seconds).
    pub since: i64,
    /// Up to the end of the UTC day holding the last second before this time; `None`: every
    /// later day. Days are whole: the rollups hold days, not hours.
    pub until: Option<i64>,
    /// Owned Tweets only; of this owner.
    pub owner: Owner<'a>,
}

/// The sum of one metric's hourly buckets of one account's Tweets over one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DailyPoint {
    pub owner: String,
    /// Days since the Unix epoch.
    pub day: i64,
    pub value: i64,
}

/// One row of the `runs` ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRow {
    pub run_id: i64,
    /// The kinds it worked on, comma-separated as stored.
    pub kinds: String,
    /// Those among `kinds` that only caught up; `None` when none.
    pub catch_up: Option<String>,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub status: RunStatus,
    /// Batches planned; `None` for a cycle that failed before planning.
    pub planned: Option<i64>,
    pub requests: i64,
    pub failed_batches: i64,
    pub not_attempted: i64,
    pub rows_written: i64,
    pub error: Option<String>,
}

/// A batch that failed after its retries, from the `requests` ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedBatch {
    pub run_id: i64,
    pub started_at: i64,
    pub endpoint: Endpoint,
    /// `bearer` or the account handle.
    pub credential: String,
    pub tweet_count: i64,
    pub attempts: i64,
    pub http_status: Option<i64>,
    pub error: Option<String>,
}

/// A Tweet resting after the API refused it (not `active`), still in the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestingTweet {
    pub tweet: TweetId,
    pub owner: Option<String>,
    pub status: TweetStatus,
    pub detail: Option<String>,
    /// When its status was last reported.
    pub checked_at: Option<i64>,
}

/// Requests sent in one calendar month (UTC), and the handles whose tokens they used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthUsage {
    /// `YYYY-MM`.
    pub month: String,
    /// Handles in `handle_usage`, sorted.
    pub handles: Vec<String>,
    /// Per endpoint: requests and HTTP attempts.
    pub endpoints: BTreeMap<Endpoint, (i64, i64)>,
}

/// When a kind last succeeded, and how its last run went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Freshness {
    pub kind: JobKind,
    /// When the last run with status `ok` that ran this kind finished.
    pub last_ok: Option<i64>,
    /// The last run of this kind, whatever its outcome: (started_at, status).
    pub last_run: Option<(i64, RunStatus)>,
}

/// A stored Tweet ID as the domain's; an ID the domain refuses is an error, never skipped.
fn tweet_id(raw: i64) -> sql::Result<TweetId> {
    u64::try_from(raw)
        .ok()
        .and_then(TweetId::new)
        .ok_or_else(|| unknown_value("tweet_id", &raw.to_string()))
}

fn run_status(text: &str) -> sql::Result<RunStatus> {
    RunStatus::parse(text).ok_or_else(|| unknown_value("runs.status", text))
}

fn endpoint(text: &str) -> sql::Result<Endpoint> {
    Endpoint::from_name(text).ok_or_else(|| unknown_value("requests.endpoint", text))
}

/// The columns [`run_row`] reads, in its order.
const RUN_COLUMNS: &str = "run_id, kinds, catch_up, started_at, finished_at, status, planned, \
     requests, failed_batches, not_attempted, rows_written, error";

fn run_row(r: &sql::Row<'_>) -> sql::Result<RunRow> {
    let catch_up: String = r.get(2)?;
    Ok(RunRow {
        run_id: r.get(0)?,
        kinds: r.get(1)?,
        catch_up: (!catch_up.is_empty()).then_some(catch_up),
        started_at: r.get(3)?,
        finished_at: r.get(4)?,
        status: run_status(&r.get::<String>(5)?)?,
        planned: r.get(6)?,
        requests: r.get(7)?,
        failed_batches: r.get(8)?,
        not_attempted: r.get(9)?,
        rows_written: r.get(10)?,
        error: r.get(11)?,
    })
}

/// What [`period_value`] needs of one Tweet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct PeriodInputs {
    created_at: i64,
    /// Whether its series are collected: it has `/historical` or `/28hr` coverage.
    covered: bool,
    /// The sum of its buckets in the period (read for the series bases).
    series: Option<i64>,
    /// Its latest lifetime total in the period, and the last one at or before its start (read
    /// for the totals bases).
    latest: Option<i64>,
    base: Option<i64>,
}

/// A Tweet's value over the period starting at `since`, by `basis` (see [`TopBasis`]).
fn period_value(basis: TopBasis, since: i64, i: &PeriodInputs) -> Option<(i64, ValueSource)> {
    let series = || i.series.map(|v| (v, ValueSource::Series));
    let growth = || {
        match (i.latest, i.base) {
            (Some(latest), _) if i.created_at >= since => Some(latest),
            (Some(latest), Some(base)) => Some(latest - base),
            _ => None,
        }
        .map(|g| (g, ValueSource::Totals))
    };
    match basis {
        TopBasis::Series => series(),
        TopBasis::Totals => growth(),
        TopBasis::SeriesElseTotals if i.covered => series(),
        TopBasis::SeriesElseTotals => growth(),
    }
}

/// Per Tweet of `tweets AS w` (filtered by the caller's WHERE): id, owner, creation and the
/// [`PeriodInputs`] of `:metric` over `[:since, :until)`. Only what `:series` and `:totals` ask
/// for is read. The series sum reads the whole days of the period from `tweet_days` and the
/// hours before the first of them and after the last from `series`; bind them with
/// [`whole_days`].
const PERIOD_COLUMNS: &str = "SELECT w.tweet_id, w.owner, w.created_at, \
       EXISTS (SELECT 1 FROM coverage AS c WHERE c.tweet_id = w.tweet_id) \
       OR EXISTS (SELECT 1 FROM recent_coverage AS r WHERE r.tweet_id = w.tweet_id), \
     CASE WHEN :series THEN CAST((SELECT total(d.value) FROM tweet_days AS d \
       WHERE d.tweet_id = w.tweet_id AND d.metric_id = :metric AND d.day >= :day_from \
       AND (CAST(:day_to AS BIGINT) IS NULL OR d.day < :day_to)) \
     + (SELECT total(s.value) FROM series AS s \
       WHERE s.tweet_id = w.tweet_id AND s.metric_id = :metric AND s.hour >= :since \
       AND s.hour < :day_from AND (CAST(:until AS BIGINT) IS NULL OR s.hour < :until)) \
     + (SELECT total(s.value) FROM series AS s \
       WHERE s.tweet_id = w.tweet_id AND s.metric_id = :metric AND CAST(:day_to AS BIGINT) IS NOT NULL \
       AND s.hour >= max(:day_to, :day_from) AND s.hour >= :since AND s.hour < :until) \
       AS INTEGER) END, \
     CASE WHEN :totals THEN (SELECT value FROM totals AS t \
       WHERE t.tweet_id = w.tweet_id AND t.metric_id = :metric \
       AND (CAST(:until AS BIGINT) IS NULL OR t.observed_at < :until) ORDER BY observed_at DESC LIMIT 1) END, \
     CASE WHEN :totals THEN (SELECT value FROM totals AS t \
       WHERE t.tweet_id = w.tweet_id AND t.metric_id = :metric \
       AND t.observed_at <= :since ORDER BY observed_at DESC LIMIT 1) END \
     FROM tweets AS w";

/// The whole UTC days `[:day_from, :day_to)` inside `[since, until)`, as [`PERIOD_COLUMNS`]
/// binds them.
fn whole_days(since: i64, until: Option<i64>) -> (i64, Option<i64>) {
    (day_ceil(since), until.map(day_of))
}

/// A Tweet with its value over a period, when known.
type Valued = (TweetInfo, Option<(i64, ValueSource)>);

/// Which Tweets [`period_values`] reads.
#[derive(Clone, Copy)]
enum Tweets<'a> {
    Of(Owner<'a>),
    One(TweetId),
}

/// Each Tweet `which` selects, with its value of `metric` over `q`'s period by `q.basis`.
fn period_values(
    conn: &Tx<'_>,
    q: &TopQuery<'_>,
    metric: Metric,
    which: Tweets<'_>,
) -> sql::Result<Vec<Valued>> {
    let series = q.basis != TopBasis::Totals;
    let totals = q.basis != TopBasis::Series;
    match which {
        Tweets::Of(owner) => {
            let (owner, owner_folded) = owner.params();
            let mut stmt =
                conn.prepare_cached(&format!("{PERIOD_COLUMNS} WHERE {OWNER_FILTER}"))?;
            let (day_from, day_to) = whole_days(q.since, q.until);
            let rows = stmt.query(named![
                ":series" => series, ":totals" => totals, ":metric" => metric.id(), ":since" => q.since,
                ":until" => q.until, ":owner" => owner, ":owner_folded" => owner_folded,
                ":day_from" => day_from, ":day_to" => day_to,
            ])?;
            read_period_rows(rows, q)
        }
        Tweets::One(tweet) => {
            let mut stmt =
                conn.prepare_cached(&format!("{PERIOD_COLUMNS} WHERE w.tweet_id = :tweet"))?;
            let (day_from, day_to) = whole_days(q.since, q.until);
            let rows = stmt.query(named![
                ":series" => series, ":totals" => totals, ":metric" => metric.id(), ":since" => q.since,
                ":until" => q.until, ":tweet" => tweet.get() as i64,
                ":day_from" => day_from, ":day_to" => day_to,
            ])?;
            read_period_rows(rows, q)
        }
    }
}

/// The rows of [`PERIOD_COLUMNS`], valued.
fn read_period_rows(mut rows: sql::Rows<'_>, q: &TopQuery<'_>) -> sql::Result<Vec<Valued>> {
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let info = TweetInfo {
            tweet: tweet_id(r.get(0)?)?,
            owner: r.get(1)?,
            created_at: r.get(2)?,
        };
        let inputs = PeriodInputs {
            created_at: info.created_at,
            covered: r.get(3)?,
            series: r.get(4)?,
            latest: r.get(5)?,
            base: r.get(6)?,
        };
        out.push((info, period_value(q.basis, q.since, &inputs)));
    }
    Ok(out)
}

impl Store {
    /// A Tweet as the `tweets` table has it; `None` when it is not there.
    pub fn tweet(&self, tweet: TweetId) -> Result<Option<TweetInfo>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT owner, created_at FROM tweets WHERE tweet_id = ?1")?;
            let mut rows = stmt.query(args![tweet.get() as i64])?;
            rows.next()?
                .map(|r| {
                    Ok(TweetInfo {
                        tweet,
                        owner: r.get(0)?,
                        created_at: r.get(1)?,
                    })
                })
                .transpose()
        })
    }

    /// The handles owning Tweets in the database (removed ones included), sorted; with an
    /// owner, at most that one.
    pub fn owners(&self, owner: Owner<'_>) -> Result<Vec<String>, StoreError> {
        self.read(|conn| {
            let (owner, owner_folded) = owner.params();
            let mut stmt = conn.prepare(&format!(
                "SELECT DISTINCT w.owner FROM tweets AS w WHERE w.owner IS NOT NULL \
                 AND {OWNER_FILTER} ORDER BY w.owner"
            ))?;
            stmt.query_map(
                named![ ":owner" => owner, ":owner_folded" => owner_folded ],
                |r| r.get(0),
            )?
            .collect()
        })
    }

    /// How many Tweets of `owner` the inventory lists, and how many of those are owned.
    pub fn tweet_counts(&self, owner: Owner<'_>) -> Result<TweetCounts, StoreError> {
        self.read(|conn| {
            let (owner, owner_folded) = owner.params();
            conn.query_row(
                &format!(
                    "SELECT count(*), count(w.owner) FROM tweets AS w \
                     WHERE w.removed_at IS NULL AND {OWNER_FILTER}"
                ),
                named![ ":owner" => owner, ":owner_folded" => owner_folded ],
                |r| {
                    Ok(TweetCounts {
                        listed: r.get(0)?,
                        owned: r.get(1)?,
                    })
                },
            )
        })
    }

    /// The latest lifetime total of every (Tweet, metric) of `owner`, by Tweet and metric name.
    pub fn latest_totals(&self, owner: Owner<'_>) -> Result<Vec<LatestTotal>, StoreError> {
        self.read(|conn| {
            let (owner, owner_folded) = owner.params();
            let mut stmt = conn.prepare(&format!(
                "SELECT w.tweet_id, w.owner, w.metric, w.value, w.observed_at, w.checked_at \
                 FROM latest_totals AS w WHERE {OWNER_FILTER} ORDER BY w.tweet_id, w.metric"
            ))?;
            let mut rows =
                stmt.query(named![ ":owner" => owner, ":owner_folded" => owner_folded ])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let metric: String = r.get(2)?;
                out.push(LatestTotal {
                    tweet: tweet_id(r.get(0)?)?,
                    owner: r.get(1)?,
                    metric: metric
                        .parse()
                        .map_err(|_| unknown_value("metrics.name", &metric))?,
                    value: r.get(3)?,
                    observed_at: r.get(4)?,
                    checked_at: r.get(5)?,
                });
            }
            Ok(out)
        })
    }

    /// The Tweets with the highest value of `q.metric` over `q`'s period (ties by Tweet ID), at
    /// most `q.limit`; Tweets whose value is unknown are left out.
    pub fn top_tweets(&self, q: &TopQuery<'_>) -> Result<Vec<TopTweet>, StoreError> {
        self.read(|conn| {
            let mut ranked: Vec<(TweetInfo, (i64, ValueSource))> =
                period_values(conn, q, q.metric, Tweets::Of(q.owner))?
                    .into_iter()
                    .filter_map(|(info, value)| Some((info, value?)))
                    .filter(|(_, (v, _))| !q.only_positive || *v > 0)
                    .collect();
            ranked.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.tweet.cmp(&b.0.tweet)));
            ranked.truncate(q.limit);
            let one = |info: &TweetInfo, metric: Metric| -> sql::Result<Option<i64>> {
                Ok(period_values(conn, q, metric, Tweets::One(info.tweet))?
                    .into_iter()
                    .next()
                    .and_then(|(_, v)| v.map(|(v, _)| v)))
            };
            ranked
                .into_iter()
                .map(|(info, (value, source))| {
                    Ok(TopTweet {
                        impressions: one(&info, Metric::Impressions)?,
                        engagements: one(&info, Metric::Engagements)?,
                        tweet: info.tweet,
                        owner: info.owner,
                        created_at: info.created_at,
                        value,
                        source,
                    })
                })
                .collect()
        })
    }

    /// Per account and UTC day, the sum of `q.metric`'s hourly buckets on the whole days of
    /// `q`'s period, by account and day. Days without a bucket are left out.
    pub fn daily(&self, q: &DailyQuery<'_>) -> Result<Vec<DailyPoint>, StoreError> {
        self.read(|conn| {
            let (owner, owner_folded) = q.owner.params();
            // The rollup of each account's days (schema 0006): one row per day.
            let mut stmt = conn.prepare(&format!(
                "SELECT w.owner, w.day / 86400, w.value FROM account_days AS w \
                 WHERE w.metric_id = :metric AND w.day >= :since \
                 AND (CAST(:until AS BIGINT) IS NULL OR w.day < :until) AND {OWNER_FILTER} \
                 ORDER BY w.owner, w.day"
            ))?;
            stmt.query_map(
                named![
                    ":metric" => q.metric.id(), ":since" => day_of(q.since),
                    ":until" => q.until.map(day_ceil),
                    ":owner" => owner, ":owner_folded" => owner_folded,
                ],
                |r| {
                    Ok(DailyPoint {
                        owner: r.get(0)?,
                        day: r.get(1)?,
                        value: r.get(2)?,
                    })
                },
            )?
            .collect()
        })
    }

    /// The last `last` runs, newest first.
    pub fn runs(&self, last: usize) -> Result<Vec<RunRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs ORDER BY run_id DESC LIMIT ?1"
            ))?;
            let mut rows = stmt.query(args![last as i64])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(run_row(&r)?);
            }
            Ok(out)
        })
    }

    /// The last finished run, when it failed as a whole (the API unreachable, the app's keys
    /// refused, or it could not start).
    pub fn last_run_failed(&self) -> Result<Option<RunRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE status = 'failed' \
                 AND run_id = (SELECT max(run_id) FROM runs WHERE status != 'running')"
            ))?;
            let mut rows = stmt.query(args![])?;
            rows.next()?.map(|r| run_row(&r)).transpose()
        })
    }

    /// The batches of `kind` that failed in the last finished run of it, in the order sent.
    pub fn failed_batches(&self, kind: JobKind) -> Result<Vec<FailedBatch>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT r.run_id, q.started_at, q.endpoint, q.credential, q.tweet_count, \
                 q.attempts, q.http_status, q.error FROM requests AS q JOIN runs AS r USING (run_id) \
                 WHERE q.kind = ?1 AND q.outcome = 'failed' AND r.run_id = ( \
                     SELECT max(run_id) FROM runs WHERE status != 'running' \
                     AND (',' || kinds || ',') LIKE '%,' || ?1 || ',%') \
                 ORDER BY q.seq",
            )?;
            let mut rows = stmt.query(args![kind.name()])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(FailedBatch {
                    run_id: r.get(0)?,
                    started_at: r.get(1)?,
                    endpoint: endpoint(&r.get::<String>(2)?)?,
                    credential: r.get(3)?,
                    tweet_count: r.get(4)?,
                    attempts: r.get(5)?,
                    http_status: r.get(6)?,
                    error: r.get(7)?,
                });
            }
            Ok(out)
        })
    }

    /// The Tweets still listed whose status is not `active`, by when it was reported.
    pub fn resting_tweets(&self) -> Result<Vec<RestingTweet>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT tweet_id, owner, status, status_detail, status_checked_at FROM tweets \
                 WHERE status != 'active' AND removed_at IS NULL \
                 ORDER BY status_checked_at, tweet_id",
            )?;
            let mut rows = stmt.query(args![])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                let status: String = r.get(2)?;
                out.push(RestingTweet {
                    tweet: tweet_id(r.get(0)?)?,
                    owner: r.get(1)?,
                    status: TweetStatus::parse(&status)
                        .ok_or_else(|| unknown_value("tweets.status", &status))?,
                    detail: r.get(3)?,
                    checked_at: r.get(4)?,
                });
            }
            Ok(out)
        })
    }

    /// The configured accounts whose state is not `ok`, by state and handle.
    pub fn troubled_accounts(&self) -> Result<Vec<super::AccountRecord>, StoreError> {
        let mut accounts: Vec<_> = self
            .accounts()?
            .into_iter()
            .filter(|a| a.state != AccountState::Ok)
            .collect();
        accounts.sort_by(|a, b| (a.state.as_str(), &a.handle).cmp(&(b.state.as_str(), &b.handle)));
        Ok(accounts)
    }

    /// Requests and handles per calendar month (UTC), by month; only `month` (`YYYY-MM`) when
    /// given.
    pub fn usage(&self, month: Option<&str>) -> Result<Vec<MonthUsage>, StoreError> {
        self.read(|conn| {
            let mut months: BTreeMap<String, MonthUsage> = BTreeMap::new();
            let mut stmt = conn.prepare(
                "SELECT month, handle FROM handle_usage WHERE (CAST(?1 AS TEXT) IS NULL OR month = ?1) \
                 ORDER BY month, handle",
            )?;
            for row in stmt.query_map(args![month], |r| {
                Ok((r.get::<String>(0)?, r.get::<String>(1)?))
            })? {
                let (m, handle) = row?;
                months.entry(m).or_default().handles.push(handle);
            }
            let mut stmt = conn.prepare(conn.pick(
                "SELECT strftime('%Y-%m', started_at, 'unixepoch') AS month, endpoint, count(*), \
                 sum(attempts) FROM requests GROUP BY 1, 2 HAVING CAST(?1 AS TEXT) IS NULL OR month = ?1",
                "SELECT month, endpoint, count(*), sum(attempts) FROM (SELECT \
                 to_char(to_timestamp(started_at) AT TIME ZONE 'UTC', 'YYYY-MM') AS month, endpoint, \
                 attempts FROM requests) AS r WHERE CAST(?1 AS TEXT) IS NULL OR month = ?1 GROUP BY 1, 2",
            ))?;
            let mut rows = stmt.query(args![month])?;
            while let Some(r) = rows.next()? {
                let m: String = r.get(0)?;
                let endpoint = endpoint(&r.get::<String>(1)?)?;
                months
                    .entry(m)
                    .or_default()
                    .endpoints
                    .insert(endpoint, (r.get(2)?, r.get(3)?));
            }
            Ok(months
                .into_iter()
                .map(|(month, usage)| MonthUsage { month, ..usage })
                .collect())
        })
    }

    /// The last successful run and the last run of any outcome that included `kind`.
    pub fn freshness(&self, kind: JobKind) -> Result<Freshness, StoreError> {
        self.read(|conn| {
            // `kinds` is comma-separated: match whole names only.
            let has_kind = "instr(',' || kinds || ',', ',' || ?1 || ',') > 0";
            let last_ok = conn.query_row(
                &format!(
                    "SELECT max(coalesce(finished_at, started_at)) FROM runs \
                     WHERE status = 'ok' AND {has_kind}"
                ),
                args![kind.name()],
                |r| r.get(0),
            )?;
            let mut stmt = conn.prepare(&format!(
                "SELECT started_at, status FROM runs WHERE {has_kind} \
                 ORDER BY started_at DESC, run_id DESC LIMIT 1"
            ))?;
            let mut rows = stmt.query(args![kind.name()])?;
            let last_run = match rows.next()? {
                Some(r) => Some((r.get(0)?, run_status(&r.get::<String>(1)?)?)),
                None => None,
            };
            Ok(Freshness {
                kind,
                last_ok,
                last_run,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DAY_SECS, HOUR_SECS};

    /// 2026-10-31T00:00:00Z.
    const NOW: i64 = 1_793_404_800;

    fn database() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("r.sqlite")).unwrap();
        (dir, store)
    }

    fn tweet(n: i64) -> TweetId {
        TweetId::new(n as u64).unwrap()
    }

    /// An hour with a stored bucket has its value; one without is zero inside a fetched cell
    /// (counted from the Tweet's creation hour, not the cell's start) or the `/28hr` window,
    /// and unknown outside both.
    #[test]
    fn a_missing_hour_is_zero_inside_coverage_and_unknown_outside() {
        let (_dir, store) = database();
        let created = NOW - 10 * HOUR_SECS + 600;
        store.put_tweet(7, Some("acme"), created);
        let h = |n: i64| NOW - 10 * HOUR_SECS + n * HOUR_SECS;
        // The cell starts a day before the Tweet and was fetched up to hour 4.
        store.put_cell(7, NOW - 2 * DAY_SECS, NOW, h(4));
        store.put_recent(7, h(6), h(8), NOW);
        store.put_bucket(7, Metric::Impressions, h(1), 40, NOW);
        store.put_bucket(7, Metric::Impressions, h(9), 5, NOW);
        let info = store.tweet(tweet(7)).unwrap().unwrap();
        assert_eq!(info.created_at, created);
        let coverage = store.coverage(&info).unwrap();
        assert_eq!(coverage.0, vec![(h(0), h(4)), (h(6), h(8))]);
        assert!(
            !coverage.covers(h(0) - HOUR_SECS),
            "before the Tweet existed"
        );
        let values: Vec<Option<i64>> = store
            .series(&info, &coverage, Metric::Impressions, h(0), h(10))
            .unwrap()
            .into_iter()
            .map(|p| p.value)
            .collect();
        assert_eq!(
            values,
            vec![
                Some(0),
                Some(40),
                Some(0),
                Some(0),
                None,
                None,
                Some(0),
                Some(0),
                None,
                Some(5)
            ]
        );
        assert_eq!(
            store.series_metrics(tweet(7)).unwrap(),
            vec![Metric::Impressions]
        );
        assert_eq!(store.tweet(tweet(8)).unwrap(), None);
    }

    /// Without series, a period's value is the growth of the lifetime total: the latest minus
    /// the last value at or before the start, the latest for a Tweet created in the period, and
    /// unknown without a snapshot at or before the start.
    #[test]
    fn the_growth_of_totals_stands_in_for_missing_series() {
        let since = 1000;
        let old = PeriodInputs {
            created_at: 10,
            latest: Some(90),
            base: Some(60),
            ..PeriodInputs::default()
        };
        let totals = Some((30, ValueSource::Totals));
        assert_eq!(period_value(TopBasis::Totals, since, &old), totals);
        assert_eq!(
            period_value(TopBasis::SeriesElseTotals, since, &old),
            totals
        );
        let new = PeriodInputs {
            created_at: since,
            base: None,
            ..old
        };
        assert_eq!(
            period_value(TopBasis::Totals, since, &new),
            Some((90, ValueSource::Totals))
        );
        let unknown = PeriodInputs { base: None, ..old };
        assert_eq!(period_value(TopBasis::Totals, since, &unknown), None);
        let never = PeriodInputs {
            latest: None,
            ..new
        };
        assert_eq!(period_value(TopBasis::Totals, since, &never), None);
        // A Tweet with coverage counts its buckets, even when its totals grew differently.
        let covered = PeriodInputs {
            covered: true,
            series: Some(12),
            ..old
        };
        assert_eq!(
            period_value(TopBasis::SeriesElseTotals, since, &covered),
            Some((12, ValueSource::Series))
        );
        assert_eq!(
            period_value(TopBasis::Series, since, &old),
            None,
            "series not read"
        );
    }

    /// One ranking serves every caller: a covered Tweet by its buckets in the period, the others
    /// by the growth of their totals; ties by Tweet ID; the owner matched exactly or in any case.
    #[test]
    fn top_tweets_rank_by_series_or_by_the_growth_of_totals() {
        let (_dir, store) = database();
        let since = NOW - DAY_SECS;
        store.put_tweet(1, Some("Acme"), NOW - 3 * DAY_SECS);
        store.put_tweet(2, None, NOW - 3 * DAY_SECS);
        store.put_tweet(3, Some("Acme"), NOW - HOUR_SECS);
        store.put_tweet(4, Some("bob"), NOW - 3 * DAY_SECS);
        // 1: covered; 70 impressions in the period, 500 before it.
        store.put_cell(1, NOW - 30 * DAY_SECS, NOW, NOW);
        store.put_bucket(1, Metric::Impressions, since - HOUR_SECS, 500, NOW);
        store.put_bucket(1, Metric::Impressions, since, 70, NOW);
        store.put_bucket(1, Metric::Engagements, since, 7, NOW);
        store.put_total(1, Metric::Impressions, since - 10, 1);
        store.put_total(1, Metric::Impressions, NOW - 10, 10_000);
        // 2: public, grew 100 → 170 (70: ties with 1).
        store.put_total(2, Metric::Impressions, since - 10, 100);
        store.put_total(2, Metric::Impressions, NOW - 10, 170);
        // 3: created in the period: its latest total.
        store.put_total(3, Metric::Impressions, NOW - 10, 20);
        // 4: no snapshot before the period: unknown.
        store.put_total(4, Metric::Impressions, NOW - 10, 999);
        let query = |owner, basis| TopQuery {
            metric: Metric::Impressions,
            since,
            until: None,
            owner,
            limit: 10,
            basis,
            only_positive: false,
        };
        let ranked = |q: TopQuery<'_>| -> Vec<(i64, i64, &'static str)> {
            store
                .top_tweets(&q)
                .unwrap()
                .into_iter()
                .map(|t| (t.tweet.get() as i64, t.value, t.source.as_str()))
                .collect()
        };
        assert_eq!(
            ranked(query(Owner::Any, TopBasis::SeriesElseTotals)),
            vec![(1, 70, "series"), (2, 70, "totals"), (3, 20, "totals")]
        );
        let top = store
            .top_tweets(&query(Owner::Any, TopBasis::SeriesElseTotals))
            .unwrap();
        assert_eq!(
            (top[0].impressions, top[0].engagements),
            (Some(70), Some(7))
        );
        assert_eq!((top[1].impressions, top[1].engagements), (Some(70), None));
        assert_eq!(
            ranked(query(Owner::AnyCase("acme"), TopBasis::SeriesElseTotals)),
            vec![(1, 70, "series"), (3, 20, "totals")]
        );
        assert_eq!(
            ranked(query(Owner::Is("acme"), TopBasis::SeriesElseTotals)),
            vec![]
        );
        // Series only, positive only, bounded: the hours before `until`.
        let mut q = query(Owner::Is("Acme"), TopBasis::Series);
        q.only_positive = true;
        assert_eq!(ranked(q), vec![(1, 70, "series")]);
        q.until = Some(since);
        assert_eq!(ranked(q), vec![]);
        // Lifetime: the latest total of every Tweet that has one.
        let mut q = query(Owner::Any, TopBasis::Totals);
        q.since = i64::MIN;
        q.limit = 2;
        assert_eq!(ranked(q), vec![(1, 10_000, "totals"), (4, 999, "totals")]);
    }

    /// Daily sums are per owner and UTC day, within the period, public Tweets left out.
    #[test]
    fn daily_sums_are_per_owner_and_utc_day() {
        let (_dir, store) = database();
        let day = NOW / DAY_SECS;
        store.put_tweet(1, Some("acme"), NOW - 3 * DAY_SECS);
        store.put_tweet(2, Some("acme"), NOW - 3 * DAY_SECS);
        store.put_tweet(3, None, NOW - 3 * DAY_SECS);
        store.put_tweet(4, Some("bob"), NOW - 3 * DAY_SECS);
        for (t, hour, v) in [
            (1, NOW - DAY_SECS, 5),
            (2, NOW - HOUR_SECS, 6),
            (1, NOW, 7),
            (3, NOW, 100),
            (4, NOW + HOUR_SECS, 8),
        ] {
            store.put_bucket(t, Metric::Impressions, hour, v, NOW);
        }
        store.put_bucket(1, Metric::Engagements, NOW, 1, NOW);
        let q = DailyQuery {
            metric: Metric::Impressions,
            since: NOW - DAY_SECS,
            until: None,
            owner: Owner::Any,
        };
        let points = |q: DailyQuery<'_>| -> Vec<(String, i64, i64)> {
            store
                .daily(&q)
                .unwrap()
                .into_iter()
                .map(|p| (p.owner, p.day - day, p.value))
                .collect()
        };
        assert_eq!(
            points(q),
            vec![
                ("acme".to_string(), -1, 11),
                ("acme".to_string(), 0, 7),
                ("bob".to_string(), 0, 8)
            ]
        );
        let bounded = DailyQuery {
            until: Some(NOW),
            owner: Owner::Is("acme"),
            ..q
        };
        assert_eq!(points(bounded), vec![("acme".to_string(), -1, 11)]);
    }

    /// Run status is read as the domain's; a spelling this version does not know is an error.
    #[test]
    fn run_status_is_typed_and_an_unknown_one_is_an_error() {
        let (_dir, store) = database();
        store.put_run("totals,hourly", NOW - 100, NOW - 50, "partial");
        let runs = store.runs(5).unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, RunStatus::Partial);
        assert_eq!(runs[0].catch_up, None);
        let fresh = store.freshness(JobKind::Hourly).unwrap();
        assert_eq!(fresh.last_run, Some((NOW - 100, RunStatus::Partial)));
        assert_eq!(fresh.last_ok, None);
        let unknown = run_status("paused").unwrap_err().to_string();
        assert!(
            unknown.contains("runs.status holds \"paused\""),
            "{unknown}"
        );
    }
}
