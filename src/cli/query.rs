//! `query`: the questions users ask most, answered from the database opened read-only (it works
//! while a `run` or `daemon` writes: WAL).

use std::collections::{BTreeMap, HashSet};

use anyhow::anyhow;

use super::output::{self, Cell, Rows};
use super::{Cli, Failure, Granularity, Query, QueryArgs};
use crate::config::Config;
use crate::domain::AccountState;
use crate::domain::{DAY_SECS, Endpoint, HOUR_SECS, JobKind, Metric, TweetId, iso_utc};
use crate::store::{Owner, Store, StoreError, TopBasis, TopQuery};
use crate::timespec::parse_time;

/// Runs one query and prints its rows.
pub fn query(cli: &Cli, args: &QueryArgs) -> Result<u8, Failure> {
    let path = super::database_path(cli, args.db.as_deref())?;
    if !path.exists() {
        return Err(Failure::usage(anyhow!(
            "{}: no such database (give --db PATH or a config whose [database] path exists)",
            crate::lock::absolute(&path).display()
        )));
    }
    let store = Store::open_read_only(&path).map_err(Failure::fatal)?;
    let now = chrono::Utc::now().timestamp();
    // Only `failures` needs the config (how long refused Tweets rest); the others read no more
    // than the database path.
    let rest = match args.query {
        Query::Failures => recheck_after(cli),
        _ => DAY_SECS,
    };
    let rows = answer(&store, &args.query, now, rest).map_err(|e| match e {
        QueryError::Usage(e) => Failure::usage(e),
        QueryError::Db(e) => Failure::fatal(e),
    })?;
    rows.print(output::chosen(args.format));
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

/// The rows answering `query` at `now`.
pub fn answer(
    store: &Store,
    query: &Query,
    now: i64,
    recheck_after: i64,
) -> Result<Rows, QueryError> {
    match query {
        Query::Latest { tweets, owner } => {
            check_owner(store, owner.as_deref())?;
            latest(store, tweets, owner.as_deref())
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
            owner,
            limit,
        } => {
            let since = time(since.as_deref().unwrap_or("7d"), now)?;
            check_owner(store, owner.as_deref())?;
            top(
                store,
                metric_named(metric)?,
                since,
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

fn latest(store: &Store, tweets: &[u64], owner: Option<&str>) -> Result<Rows, QueryError> {
    let wanted: HashSet<u64> = tweets.iter().copied().collect();
    let mut rows = Rows::new(&[
        "tweet_id",
        "owner",
        "metric",
        "value",
        "observed_at",
        "checked_at",
    ]);
    let mut found = HashSet::new();
    let filter = owner_filter(owner);
    for total in store.latest_totals(owner_of(filter.as_deref()))? {
        let id = total.tweet.get();
        if !wanted.is_empty() && !wanted.contains(&id) {
            continue;
        }
        found.insert(id);
        rows.push(vec![
            (id as i64).into(),
            total.owner.into(),
            total.metric.as_str().into(),
            total.value.into(),
            iso(Some(total.observed_at)),
            iso(total.checked_at),
        ]);
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|t| !found.contains(*t))
        .map(|t| (*t as i64).to_string())
        .collect();
    if !missing.is_empty() && rows.rows.is_empty() {
        return Err(usage(format!(
            "no totals stored for Tweet {}",
            missing.join(", ")
        )));
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
    let id = info.tweet.get() as i64;
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
    for metric in metrics {
        let points = store.series(&info, &coverage, metric, since, until)?;
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

/// Per Tweet, `metric` over `[since, now)`: the sum of its hourly buckets for Tweets whose
/// series are collected, else the growth of its lifetime total (see [`TopBasis`]).
fn top(
    store: &Store,
    metric: Metric,
    since: i64,
    owner: Option<&str>,
    limit: usize,
) -> Result<Rows, QueryError> {
    let filter = owner_filter(owner);
    let ranked = store.top_tweets(&TopQuery {
        metric,
        since,
        until: None,
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
            (t.tweet.get() as i64).into(),
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
            (t.tweet.get() as i64).into(),
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
