//! `query`: the questions users ask most, answered from the database opened read-only (it works
//! while a `run` or `daemon` writes: WAL).

use std::collections::{BTreeMap, HashSet};

use anyhow::anyhow;

use super::output::{self, Cell, Rows};
use super::{Cli, Failure, Format, Granularity, Query, QueryArgs};
use crate::config::Config;
use crate::domain::AccountState;
use crate::domain::{DAY_SECS, Endpoint, HOUR_SECS, Hour, JobKind, Metric, TweetId, iso_utc};
use crate::store::{AccountFigures, AccountsQuery, Owner, Store, StoreError, TopBasis, TopQuery};
use crate::timespec::parse_time;

/// Runs one query and prints its rows.
pub fn query(cli: &Cli, args: &QueryArgs) -> Result<u8, Failure> {
    let path = super::database_path(cli, args.db.as_deref())?;
    if !path.exists() {
        return Err(Failure::usage(anyhow!(
            "{}: no such database (give --db PATH or a config whose [database] path exists)",
            path.display()
        )));
    }
    let store = match Store::open_read_only(&path) {
        Err(crate::store::StoreError::TooOld { found: 0, .. }) => {
            return Err(Failure::usage(anyhow!(
                "{}: no such database (it has no schema yet: `run` or `migrate` creates it)",
                path.display()
            )));
        }
        other => other.map_err(Failure::fatal)?,
    };
    let now = chrono::Utc::now().timestamp();
    // Only `failures` needs the config (how long refused Tweets rest); the others read no more
    // than the database path.
    let rest = match args.query {
        Query::Failures => recheck_after(cli),
        _ => DAY_SECS,
    };
    let format = output::chosen(args.format);
    let rows = answer(&store, &args.query, now, rest, format).map_err(|e| match e {
        QueryError::Usage(e) => Failure::usage(e),
        QueryError::Db(e) => Failure::fatal(e),
    })?;
    rows.print(format);
    Ok(0)
}

/// A query's failure: bad arguments (exit 2) or the database (exit 3).
#[derive(Debug)]
pub enum QueryError {
    Usage(anyhow::Error),
    Db(StoreError),
}

impl From<StoreError> for QueryError {
    fn from(e: StoreError) -> QueryError {
        QueryError::Db(e)
    }
}

fn usage(message: String) -> QueryError {
    QueryError::Usage(anyhow!(message))
}

/// How long refused Tweets rest: the config's `[inventory] recheck_after` when a valid config is
/// at hand, else its default (one day).
fn recheck_after(cli: &Cli) -> i64 {
    Config::load(cli.config.as_deref(), super::utf8_env())
        .map(|c| c.inventory.recheck_after.as_secs() as i64)
        .unwrap_or(DAY_SECS)
}

/// The rows answering `query` at `now`, for `format` (a table shows some figures for people).
pub fn answer(
    store: &Store,
    query: &Query,
    now: i64,
    recheck_after: i64,
    format: Format,
) -> Result<Rows, QueryError> {
    match query {
        Query::Accounts {
            since,
            until,
            owners,
        } => {
            let (since, until) = period(since.as_deref(), "30d", until.as_deref(), now)?;
            // From 00:00 UTC of --since's day: whole days are read from the daily rollups.
            let since = since.div_euclid(DAY_SECS) * DAY_SECS;
            for owner in owners {
                check_owner(store, Some(owner))?;
            }
            accounts(store, since, until, now, owners, format)
        }
        Query::Latest {
            tweets,
            owner,
            metrics,
            wide,
        } => {
            check_owner(store, owner.as_deref())?;
            let metrics = metrics
                .iter()
                .map(|m| metric_named(m))
                .collect::<Result<Vec<_>, _>>()?;
            latest(store, tweets, owner.as_deref(), &metrics, *wide)
        }
        Query::Series {
            tweet,
            metrics,
            since,
            until,
            granularity,
        } => {
            let since = since.as_deref().map(|t| time(t, now)).transpose()?;
            let until = until.as_deref().map(|t| time(t, now)).transpose()?;
            series(store, *tweet, metrics, since, until, *granularity, now)
        }
        Query::Top {
            metric,
            since,
            until,
            owner,
            limit,
        } => {
            let (since, until) = period(since.as_deref(), "7d", until.as_deref(), now)?;
            check_owner(store, owner.as_deref())?;
            top(
                store,
                metric_named(metric)?,
                (since, until),
                owner.as_deref(),
                *limit,
            )
        }
        Query::Runs { last } => runs(store, *last),
        Query::Failures => failures(store, recheck_after),
        Query::Usage { month } => usage_by_month(store, month.as_deref()),
    }
}

fn time(text: &str, now: i64) -> Result<i64, QueryError> {
    parse_time(text, now).map_err(usage)
}

/// `--since` (else `default_since`) rounded down to the hour and `--until` (else now) rounded
/// up: the whole hours of the period, `[since, until)`.
fn period(
    since: Option<&str>,
    default_since: &str,
    until: Option<&str>,
    now: i64,
) -> Result<(i64, i64), QueryError> {
    let since = Hour::floor(time(since.unwrap_or(default_since), now)?).secs();
    let until = Hour::ceil(until.map_or(Ok(now), |t| time(t, now))?).secs();
    if until <= since {
        return Err(usage(format!(
            "the period is empty: --since {} is not before --until {}",
            iso_utc(since),
            iso_utc(until)
        )));
    }
    Ok((since, until))
}

fn metric_named(name: &str) -> Result<Metric, QueryError> {
    let wanted = name.trim().to_ascii_lowercase();
    Metric::ALL
        .into_iter()
        .find(|m| m.as_str() == wanted)
        .or_else(|| name.parse().ok())
        .ok_or_else(|| {
            let names: Vec<&str> = Metric::ALL.iter().map(|m| m.as_str()).collect();
            usage(format!(
                "{name:?} is not a metric; use one of {}",
                names.join(", ")
            ))
        })
}

fn owner_filter(owner: Option<&str>) -> Option<String> {
    owner.map(|o| o.trim().trim_start_matches('@').to_ascii_lowercase())
}

/// An `--owner` no Tweet in the database has is a mistake worth saying, not an empty answer.
pub(super) fn check_owner(store: &Store, owner: Option<&str>) -> Result<(), QueryError> {
    let Some(wanted) = owner_filter(owner) else {
        return Ok(());
    };
    let owners = store.owners(Owner::Any)?;
    if owners.iter().any(|o| o.to_ascii_lowercase() == wanted) {
        return Ok(());
    }
    Err(usage(format!(
        "no Tweets of owner {wanted:?} in the database; owners: {}",
        if owners.is_empty() {
            "none (public Tweets only)".to_string()
        } else {
            owners.join(", ")
        }
    )))
}

/// The owner filter of `--owner`: any letter case, as X reads handles.
fn owner_of(filter: Option<&str>) -> Owner<'_> {
    filter.map_or(Owner::Any, Owner::AnyCase)
}

fn iso(t: Option<i64>) -> Cell {
    t.map_or(Cell::Null, |t| Cell::Text(iso_utc(t)))
}

/// The latest lifetime totals: one row per (Tweet, metric), or with `wide` one row per Tweet and
/// a column per metric (the chosen ones, else every one stored, in the API's order).
fn latest(
    store: &Store,
    tweets: &[u64],
    owner: Option<&str>,
    metrics: &[Metric],
    wide: bool,
) -> Result<Rows, QueryError> {
    let wanted: HashSet<u64> = tweets.iter().copied().collect();
    let filter = owner_filter(owner);
    let totals: Vec<_> = store
        .latest_totals(owner_of(filter.as_deref()))?
        .into_iter()
        .filter(|t| wanted.is_empty() || wanted.contains(&t.tweet.get()))
        .filter(|t| metrics.is_empty() || metrics.contains(&t.metric))
        .collect();
    let found: HashSet<u64> = totals.iter().map(|t| t.tweet.get()).collect();
    let mut missing: Vec<u64> = wanted.difference(&found).copied().collect();
    missing.sort_unstable();
    if !missing.is_empty() && totals.is_empty() {
        let ids: Vec<String> = missing.iter().map(u64::to_string).collect();
        let what = if metrics.is_empty() {
            String::new()
        } else {
            let names: Vec<&str> = metrics.iter().map(|m| m.as_str()).collect();
            format!(" of {}", names.join(", "))
        };
        return Err(usage(format!(
            "no totals{what} stored for Tweet {} (is it in the inventory, and has a totals run \
             happened?)",
            ids.join(", ")
        )));
    }
    if !wide {
        let mut rows = Rows::new(&[
            "tweet_id",
            "owner",
            "metric",
            "value",
            "observed_at",
            "checked_at",
        ]);
        for total in totals {
            rows.push(vec![
                total.tweet.into(),
                total.owner.into(),
                total.metric.as_str().into(),
                total.value.into(),
                iso(Some(total.observed_at)),
                iso(total.checked_at),
            ]);
        }
        return Ok(rows);
    }
    let shown: Vec<Metric> = if metrics.is_empty() {
        let stored: HashSet<Metric> = totals.iter().map(|t| t.metric).collect();
        Metric::ALL
            .into_iter()
            .filter(|m| stored.contains(m))
            .collect()
    } else {
        metrics.to_vec()
    };
    let mut columns = vec!["tweet_id", "owner"];
    columns.extend(shown.iter().map(|m| m.as_str()));
    columns.extend(["observed_at", "checked_at"]);
    let mut rows = Rows::new(&columns);
    // `latest_totals` reads by Tweet: each Tweet's totals are together.
    for chunk in totals.chunk_by(|a, b| a.tweet == b.tweet) {
        let first = &chunk[0];
        let mut row: Vec<Cell> = vec![first.tweet.into(), first.owner.clone().into()];
        row.extend(shown.iter().map(|m| {
            chunk
                .iter()
                .find(|t| t.metric == *m)
                .map(|t| t.value)
                .into()
        }));
        row.push(iso(chunk.iter().map(|t| t.observed_at).max()));
        row.push(iso(first.checked_at));
        rows.push(row);
    }
    Ok(rows)
}

fn series(
    store: &Store,
    tweet: u64,
    metric_names: &[String],
    since: Option<i64>,
    until: Option<i64>,
    granularity: Granularity,
    now: i64,
) -> Result<Rows, QueryError> {
    let info = match TweetId::new(tweet) {
        Some(id) => store.tweet(id)?,
        None => None,
    };
    let Some(info) = info else {
        return Err(usage(format!(
            "Tweet {tweet} is not in the database (is it in the inventory, and has a run happened?)"
        )));
    };
    let id = info.tweet;
    let floor = |t: i64| t.div_euclid(HOUR_SECS) * HOUR_SECS;
    let created_hour = floor(info.created_at);
    let since = floor(since.unwrap_or(created_hour)).max(created_hour);
    let until = floor(until.unwrap_or(now) + HOUR_SECS - 1);
    if until <= since {
        return Err(usage(format!(
            "the period is empty: --since {} is not before --until {}",
            iso_utc(since),
            iso_utc(until)
        )));
    }
    let metrics: Vec<Metric> = if metric_names.is_empty() {
        let stored = store.series_metrics(info.tweet)?;
        if stored.is_empty() {
            vec![Metric::Impressions, Metric::Engagements]
        } else {
            stored
        }
    } else {
        metric_names
            .iter()
            .map(|m| metric_named(m))
            .collect::<Result<_, _>>()?
    };
    let coverage = store.coverage(&info)?;
    let mut rows = match granularity {
        Granularity::Hour => Rows::new(&["tweet_id", "metric", "hour", "value"]),
        Granularity::Day => Rows::new(&["tweet_id", "metric", "day", "value", "covered_hours"]),
    };
    // Without a series there is nothing to print but empty hours: say why instead.
    if info.owner.is_none() {
        rows.notice = Some(format!(
            "Tweet {tweet} has no hourly series: public Tweets get /totals only \
             (see `query latest --tweet {tweet}`)"
        ));
        return Ok(rows);
    }
    let mut series = Vec::new();
    for metric in metrics {
        series.push((
            metric,
            store.series(&info, &coverage, metric, since, until)?,
        ));
    }
    if series
        .iter()
        .all(|(_, points)| points.iter().all(|p| p.value.is_none()))
    {
        rows.notice = Some(format!(
            "Tweet {tweet} has no coverage between {} and {}: no /28hr or /historical answer \
             covered those hours yet (`run --job historical` fetches its past)",
            iso_utc(since),
            iso_utc(until)
        ));
        return Ok(rows);
    }
    for (metric, points) in series {
        match granularity {
            Granularity::Hour => {
                for point in points {
                    rows.push(vec![
                        id.into(),
                        metric.as_str().into(),
                        iso_utc(point.hour).into(),
                        point.value.into(),
                    ]);
                }
            }
            Granularity::Day => {
                let mut days: BTreeMap<i64, (Option<i64>, i64)> = BTreeMap::new();
                for point in points {
                    let day = point.hour.div_euclid(DAY_SECS) * DAY_SECS;
                    let entry = days.entry(day).or_insert((None, 0));
                    if let Some(v) = point.value {
                        entry.0 = Some(entry.0.unwrap_or(0) + v);
                        entry.1 += 1;
                    }
                }
                for (day, (sum, covered)) in days {
                    rows.push(vec![
                        id.into(),
                        metric.as_str().into(),
                        iso_utc(day)[..10].to_string().into(),
                        sum.into(),
                        covered.into(),
                    ]);
                }
            }
        }
    }
    Ok(rows)
}

/// Per Tweet, `metric` over `[since, until)`: the sum of its hourly buckets for Tweets whose
/// series are collected, else the growth of its lifetime total (see [`TopBasis`]).
fn top(
    store: &Store,
    metric: Metric,
    (since, until): (i64, i64),
    owner: Option<&str>,
    limit: usize,
) -> Result<Rows, QueryError> {
    let filter = owner_filter(owner);
    let ranked = store.top_tweets(&TopQuery {
        metric,
        since,
        until: Some(until),
        owner: owner_of(filter.as_deref()),
        limit,
        basis: TopBasis::SeriesElseTotals,
        only_positive: false,
    })?;
    let mut rows = Rows::new(&[
        "rank",
        "tweet_id",
        "owner",
        "created_at",
        "metric",
        "value",
        "impressions",
        "engagements",
        "engagement_rate",
        "source",
    ]);
    for (rank, t) in ranked.into_iter().enumerate() {
        let rate = match (t.engagements, t.impressions) {
            (Some(e), Some(i)) if i > 0 => Some(e as f64 / i as f64),
            _ => None,
        };
        rows.push(vec![
            (rank as i64 + 1).into(),
            t.tweet.into(),
            t.owner.into(),
            iso_utc(t.created_at).into(),
            metric.as_str().into(),
            t.value.into(),
            t.impressions.into(),
            t.engagements.into(),
            rate.into(),
            t.source.as_str().into(),
        ]);
    }
    Ok(rows)
}

/// The sums `query accounts` shows, in its column order (quote Tweets come from totals).
const ACCOUNT_SUMS: [Metric; 5] = [
    Metric::Favorites,
    Metric::Retweets,
    Metric::Replies,
    Metric::QuoteTweets,
    Metric::VideoViews,
];

/// Per account, its figures over `[since, until)`. CSV and JSON carry the hours known and the
/// Tweet-hours of the period; a table shows them as coverage and marks the figures of accounts
/// not fully covered, so that a hole never reads as a zero.
fn accounts(
    store: &Store,
    since: i64,
    until: i64,
    now: i64,
    owners: &[String],
    format: Format,
) -> Result<Rows, QueryError> {
    let figures = store.account_figures(&AccountsQuery {
        since,
        until,
        now,
        owners,
    })?;
    let table = format == Format::Table;
    let mut columns = vec![
        "owner",
        "tweets",
        "posted",
        "impressions",
        "engagements",
        "engagement_rate",
    ];
    columns.extend(ACCOUNT_SUMS.iter().map(|m| m.as_str()));
    columns.extend(if table {
        &["coverage"][..]
    } else {
        &["hours_known", "hours"][..]
    });
    let mut rows = Rows::new(&columns);
    let mut partial = 0;
    for a in &figures {
        // No hour known: the sums are unknown, not zero.
        let sum = |m: Metric| -> Cell {
            if a.hours_known == 0 && !a.sums.contains_key(&m) {
                Cell::Null
            } else {
                a.sum(m).into()
            }
        };
        let mark = if a.is_complete() { " " } else { "*" };
        partial += usize::from(!a.is_complete());
        let marked = |cell: Cell| -> Cell {
            if table {
                Cell::Marked(Box::new(cell), mark)
            } else {
                cell
            }
        };
        let mut row: Vec<Cell> = vec![
            a.owner.clone().into(),
            a.tweets_tracked.into(),
            a.tweets_posted.into(),
            marked(sum(Metric::Impressions)),
            marked(sum(Metric::Engagements)),
            marked(a.engagement_rate().into()),
        ];
        for m in ACCOUNT_SUMS {
            row.push(match m {
                Metric::QuoteTweets => a.quote_tweets.into(),
                m => marked(sum(m)),
            });
        }
        if table {
            row.push(coverage_text(a).into());
        } else {
            row.extend([a.hours_known.into(), a.hours.into()]);
        }
        rows.push(row);
    }
    rows.footnotes.push(format!(
        "Period {} to {} (exclusive; from 00:00 UTC of --since's day): sums of the hourly \
         buckets of each account's listed Tweets.",
        iso_utc(since),
        iso_utc(until)
    ));
    rows.footnotes.push(
        "quote_tweets: growth of the /totals counts; empty when a Tweet has no total from \
         before the period."
            .to_string(),
    );
    if partial > 0 {
        let (accounts, have) = if partial == 1 {
            ("account", "has")
        } else {
            ("accounts", "have")
        };
        rows.footnotes.push(format!(
            "* {partial} of {} {accounts} {have} Tweet-hours outside fetched coverage (not \
             fetched yet, or past what the API serves):",
            figures.len()
        ));
        rows.footnotes.push(
            "  their figures count only the hours under coverage; the others are unknown, not \
             zero."
                .to_string(),
        );
    }
    Ok(rows)
}

/// "51/53 (96%)": the Tweet-hours known of those in the period. The percentage is rounded down,
/// so that only full coverage reads 100%.
fn coverage_text(a: &AccountFigures) -> String {
    if a.hours == 0 {
        return "0/0".to_string();
    }
    let pct = a.hours_known * 100 / a.hours;
    format!("{}/{} ({pct}%)", a.hours_known, a.hours)
}

fn runs(store: &Store, last: usize) -> Result<Rows, QueryError> {
    let mut rows = Rows::new(&[
        "run_id",
        "kinds",
        "catch_up",
        "started_at",
        "seconds",
        "status",
        "planned",
        "requests",
        "failed_batches",
        "not_attempted",
        "rows_written",
        "error",
    ]);
    for r in store.runs(last)? {
        rows.push(vec![
            r.run_id.into(),
            r.kinds.into(),
            r.catch_up.into(),
            iso_utc(r.started_at).into(),
            r.finished_at.map(|f| f - r.started_at).into(),
            r.status.as_str().into(),
            r.planned.into(),
            r.requests.into(),
            r.failed_batches.into(),
            r.not_attempted.into(),
            r.rows_written.into(),
            r.error.into(),
        ]);
    }
    Ok(rows)
}

/// The batches that failed in the last finished run of each kind (the next run plans them
/// again), and the Tweets resting after the API refused them (asked again after
/// `recheck_after` seconds).
fn failures(store: &Store, recheck_after: i64) -> Result<Rows, QueryError> {
    let mut rows = Rows::new(&[
        "what",
        "kind",
        "at",
        "run_id",
        "endpoint",
        "credential",
        "tweet_id",
        "tweets",
        "attempts",
        "http_status",
        "detail",
        "retry",
    ]);
    for kind in JobKind::ALL {
        for b in store.failed_batches(kind)? {
            rows.push(vec![
                "batch".into(),
                kind.name().into(),
                iso(Some(b.started_at)),
                b.run_id.into(),
                b.endpoint.name().into(),
                b.credential.into(),
                Cell::Null,
                b.tweet_count.into(),
                b.attempts.into(),
                b.http_status.into(),
                b.error.into(),
                "next run".into(),
            ]);
        }
    }
    // The last run, when it failed as a whole (API unreachable, app keys refused, or it could
    // not start: config, inventory, database, lock).
    if let Some(r) = store.last_run_failed()? {
        rows.push(vec![
            "run".into(),
            r.kinds.into(),
            iso(r.finished_at),
            r.run_id.into(),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            match (r.error, r.not_attempted) {
                (Some(e), 0) => e,
                (Some(e), n) => format!("{e} ({n} batches not attempted)"),
                (None, n) => format!("{n} batches not attempted"),
            }
            .into(),
            "next run".into(),
        ]);
    }
    // Accounts a person must look at: refused tokens, and paused ones.
    for account in store.troubled_accounts()? {
        let state = account.state.as_str();
        let (what, retry) = match account.state {
            AccountState::Refused => (
                format!(
                    "token refused (401){}; re-authorize the account, or set enabled = false",
                    account.detail.map_or(String::new(), |d| format!(": {d}"))
                ),
                Cell::from("next full cycle"),
            ),
            _ => (
                "paused (enabled = false): public metrics only".to_string(),
                Cell::Null,
            ),
        };
        rows.push(vec![
            "account".into(),
            Cell::Null,
            iso(Some(account.since)),
            Cell::Null,
            Cell::Null,
            account.handle.into(),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            format!("{state}: {what}").into(),
            retry,
        ]);
    }
    for t in store.resting_tweets()? {
        let status = t.status.as_str();
        rows.push(vec![
            "tweet".into(),
            Cell::Null,
            iso(t.checked_at),
            Cell::Null,
            Cell::Null,
            t.owner.unwrap_or_else(|| "bearer".into()).into(),
            t.tweet.into(),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            match t.detail {
                Some(d) => format!("{status}: {d}"),
                None => status.to_string(),
            }
            .into(),
            iso(t.checked_at.map(|c| c + recheck_after)),
        ]);
    }
    Ok(rows)
}

fn usage_by_month(store: &Store, month: Option<&str>) -> Result<Rows, QueryError> {
    if let Some(m) = month {
        let ok = m.len() == 7
            && chrono::NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").is_ok();
        if !ok {
            return Err(usage(format!("--month {m:?}: write YYYY-MM, e.g. 2026-11")));
        }
    }
    let mut rows = Rows::new(&[
        "month",
        "unique_handles",
        "handles",
        "totals_requests",
        "28hr_requests",
        "historical_requests",
        "http_attempts",
    ]);
    for m in store.usage(month)? {
        let count = |e: Endpoint| m.endpoints.get(&e).map_or(0, |v| v.0);
        rows.push(vec![
            m.month.clone().into(),
            (m.handles.len() as i64).into(),
            m.handles.join(" ").into(),
            count(Endpoint::Totals).into(),
            count(Endpoint::Hour28).into(),
            count(Endpoint::Historical).into(),
            m.endpoints.values().map(|v| v.1).sum::<i64>().into(),
        ]);
    }
    Ok(rows)
}
