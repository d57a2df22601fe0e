//! `query`: the questions users ask most, answered from the database opened read-only (it works
//! while a `run` or `daemon` writes: WAL).

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::anyhow;
use rusqlite::{Connection, params};

use super::output::{self, Cell, Rows};
use super::{Cli, Failure, Granularity, Query, QueryArgs};
use crate::config::Config;
use crate::domain::{DAY_SECS, HOUR_SECS, Metric, iso_utc};
use crate::store::Store;
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
    let rows = answer(store.conn(), &args.query, now, rest).map_err(|e| match e {
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
    Db(rusqlite::Error),
}

impl From<rusqlite::Error> for QueryError {
    fn from(e: rusqlite::Error) -> QueryError {
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
    conn: &Connection,
    query: &Query,
    now: i64,
    recheck_after: i64,
) -> Result<Rows, QueryError> {
    match query {
        Query::Latest { tweets, owner } => {
            check_owner(conn, owner.as_deref())?;
            latest(conn, tweets, owner.as_deref())
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
            series(conn, *tweet, metrics, since, until, *granularity, now)
        }
        Query::Top {
            metric,
            since,
            owner,
            limit,
        } => {
            let since = time(since.as_deref().unwrap_or("7d"), now)?;
            check_owner(conn, owner.as_deref())?;
            top(conn, metric_named(metric)?, since, owner.as_deref(), *limit)
        }
        Query::Runs { last } => runs(conn, *last),
        Query::Failures => failures(conn, recheck_after),
        Query::Usage { month } => usage_by_month(conn, month.as_deref()),
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
fn check_owner(conn: &Connection, owner: Option<&str>) -> Result<(), QueryError> {
    let Some(wanted) = owner_filter(owner) else {
        return Ok(());
    };
    let mut stmt =
        conn.prepare("SELECT DISTINCT owner FROM tweets WHERE owner IS NOT NULL ORDER BY owner")?;
    let owners: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
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

fn iso(t: Option<i64>) -> Cell {
    t.map_or(Cell::Null, |t| Cell::Text(iso_utc(t)))
}

fn latest(conn: &Connection, tweets: &[u64], owner: Option<&str>) -> Result<Rows, QueryError> {
    let mut stmt = conn.prepare(
        "SELECT tweet_id, owner, metric, value, observed_at, checked_at FROM latest_totals \
         WHERE (?1 IS NULL OR lower(owner) = ?1) ORDER BY tweet_id, metric",
    )?;
    let wanted: HashSet<i64> = tweets.iter().map(|t| *t as i64).collect();
    let mut rows = Rows::new(&[
        "tweet_id",
        "owner",
        "metric",
        "value",
        "observed_at",
        "checked_at",
    ]);
    let mut found = HashSet::new();
    let mut query = stmt.query(params![owner_filter(owner)])?;
    while let Some(r) = query.next()? {
        let id: i64 = r.get(0)?;
        if !wanted.is_empty() && !wanted.contains(&id) {
            continue;
        }
        found.insert(id);
        rows.push(vec![
            id.into(),
            r.get::<_, Option<String>>(1)?.into(),
            r.get::<_, String>(2)?.into(),
            r.get::<_, i64>(3)?.into(),
            iso(r.get(4)?),
            iso(r.get(5)?),
        ]);
    }
    let missing: Vec<String> = wanted
        .iter()
        .filter(|t| !found.contains(*t))
        .map(|t| t.to_string())
        .collect();
    if !missing.is_empty() && rows.rows.is_empty() {
        return Err(usage(format!(
            "no totals stored for Tweet {}",
            missing.join(", ")
        )));
    }
    Ok(rows)
}

/// Half-open spans of hours known to be complete for one Tweet.
struct Coverage(Vec<(i64, i64)>);

impl Coverage {
    fn read(conn: &Connection, tweet: i64, created_hour: i64) -> rusqlite::Result<Coverage> {
        let mut spans = Vec::new();
        let mut stmt =
            conn.prepare("SELECT cell, fetched_until FROM coverage WHERE tweet_id = ?1")?;
        for span in stmt.query_map([tweet], |r| Ok((r.get(0)?, r.get(1)?)))? {
            let (cell, until): (i64, i64) = span?;
            spans.push((cell.max(created_hour), until));
        }
        let mut stmt = conn.prepare(
            "SELECT fetched_from, fetched_until FROM recent_coverage WHERE tweet_id = ?1",
        )?;
        for span in stmt.query_map([tweet], |r| Ok((r.get(0)?, r.get(1)?)))? {
            spans.push(span?);
        }
        Ok(Coverage(spans))
    }

    fn covers(&self, hour: i64) -> bool {
        self.0.iter().any(|(a, b)| *a <= hour && hour < *b)
    }
}

fn series(
    conn: &Connection,
    tweet: u64,
    metric_names: &[String],
    since: Option<i64>,
    until: Option<i64>,
    granularity: Granularity,
    now: i64,
) -> Result<Rows, QueryError> {
    let id = tweet as i64;
    let created: Option<i64> = conn
        .query_row(
            "SELECT created_at FROM tweets WHERE tweet_id = ?1",
            [id],
            |r| r.get(0),
        )
        .ok();
    let Some(created) = created else {
        return Err(usage(format!(
            "Tweet {tweet} is not in the database (is it in the inventory, and has a run happened?)"
        )));
    };
    let floor = |t: i64| t.div_euclid(HOUR_SECS) * HOUR_SECS;
    let created_hour = floor(created);
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
        let mut stmt = conn.prepare(
            "SELECT DISTINCT metric_id FROM series WHERE tweet_id = ?1 ORDER BY metric_id",
        )?;
        let ids: Vec<i64> = stmt
            .query_map([id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        let stored: Vec<Metric> = ids.into_iter().filter_map(Metric::from_id).collect();
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
    let coverage = Coverage::read(conn, id, created_hour)?;
    let mut stmt = conn.prepare(
        "SELECT hour, value FROM series WHERE tweet_id = ?1 AND metric_id = ?2 \
         AND hour >= ?3 AND hour < ?4",
    )?;
    let mut rows = match granularity {
        Granularity::Hour => Rows::new(&["tweet_id", "metric", "hour", "value"]),
        Granularity::Day => Rows::new(&["tweet_id", "metric", "day", "value", "covered_hours"]),
    };
    for metric in metrics {
        let stored: HashMap<i64, i64> = stmt
            .query_map(params![id, metric.id(), since, until], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?;
        // Per hour: the stored value, zero inside coverage, missing outside it.
        let value = |hour: i64| -> Option<i64> {
            stored
                .get(&hour)
                .copied()
                .or_else(|| coverage.covers(hour).then_some(0))
        };
        match granularity {
            Granularity::Hour => {
                for hour in (since..until).step_by(HOUR_SECS as usize) {
                    rows.push(vec![
                        id.into(),
                        metric.as_str().into(),
                        iso_utc(hour).into(),
                        value(hour).into(),
                    ]);
                }
            }
            Granularity::Day => {
                let mut days: BTreeMap<i64, (Option<i64>, i64)> = BTreeMap::new();
                for hour in (since..until).step_by(HOUR_SECS as usize) {
                    let day = hour.div_euclid(DAY_SECS) * DAY_SECS;
                    let entry = days.entry(day).or_insert((None, 0));
                    if let Some(v) = value(hour) {
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
/// series are collected, else the growth of its lifetime total (latest minus the last value seen
/// at or before `since`, or the latest value for a Tweet created in the period). Tweets for which
/// neither is known are left out.
fn period_values(
    conn: &Connection,
    metric: Metric,
    since: i64,
    owner: Option<&str>,
) -> rusqlite::Result<HashMap<i64, (i64, &'static str)>> {
    let owner = owner_filter(owner);
    let mut out = HashMap::new();
    let mut stmt = conn.prepare(
        "SELECT w.tweet_id, coalesce((SELECT CAST(total(s.value) AS INTEGER) FROM series AS s WHERE s.tweet_id = w.tweet_id \
             AND s.metric_id = ?1 AND s.hour >= ?2), 0) \
         FROM tweets AS w WHERE (?3 IS NULL OR lower(w.owner) = ?3) AND ( \
             EXISTS (SELECT 1 FROM coverage AS c WHERE c.tweet_id = w.tweet_id) \
             OR EXISTS (SELECT 1 FROM recent_coverage AS r WHERE r.tweet_id = w.tweet_id))",
    )?;
    for row in stmt.query_map(params![metric.id(), since, owner], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
    })? {
        let (id, sum) = row?;
        out.insert(id, (sum, "series"));
    }
    let mut stmt = conn.prepare(
        "SELECT w.tweet_id, w.created_at, \
           (SELECT value FROM totals AS t WHERE t.tweet_id = w.tweet_id AND t.metric_id = ?1 \
            ORDER BY observed_at DESC LIMIT 1), \
           (SELECT value FROM totals AS t WHERE t.tweet_id = w.tweet_id AND t.metric_id = ?1 \
            AND t.observed_at <= ?2 ORDER BY observed_at DESC LIMIT 1) \
         FROM tweets AS w WHERE (?3 IS NULL OR lower(w.owner) = ?3)",
    )?;
    for row in stmt.query_map(params![metric.id(), since, owner], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, Option<i64>>(2)?,
            r.get::<_, Option<i64>>(3)?,
        ))
    })? {
        let (id, created, latest, base) = row?;
        if out.contains_key(&id) {
            continue;
        }
        let growth = match (latest, base) {
            (Some(latest), _) if created >= since => Some(latest),
            (Some(latest), Some(base)) => Some(latest - base),
            _ => None,
        };
        if let Some(g) = growth {
            out.insert(id, (g, "totals"));
        }
    }
    Ok(out)
}

fn top(
    conn: &Connection,
    metric: Metric,
    since: i64,
    owner: Option<&str>,
    limit: usize,
) -> Result<Rows, QueryError> {
    let values = period_values(conn, metric, since, owner)?;
    let impressions = period_values(conn, Metric::Impressions, since, owner)?;
    let engagements = period_values(conn, Metric::Engagements, since, owner)?;
    let mut ranked: Vec<(i64, i64, &str)> = values
        .iter()
        .map(|(id, (v, source))| (*id, *v, *source))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked.truncate(limit);
    let mut stmt = conn.prepare("SELECT owner, created_at FROM tweets WHERE tweet_id = ?1")?;
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
    for (rank, (id, value, source)) in ranked.into_iter().enumerate() {
        let (owner, created): (Option<String>, i64) =
            stmt.query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let imp = impressions.get(&id).map(|v| v.0);
        let eng = engagements.get(&id).map(|v| v.0);
        let rate = match (eng, imp) {
            (Some(e), Some(i)) if i > 0 => Some(e as f64 / i as f64),
            _ => None,
        };
        rows.push(vec![
            (rank as i64 + 1).into(),
            id.into(),
            owner.into(),
            iso_utc(created).into(),
            metric.as_str().into(),
            value.into(),
            imp.into(),
            eng.into(),
            rate.into(),
            source.into(),
        ]);
    }
    Ok(rows)
}

fn runs(conn: &Connection, last: usize) -> Result<Rows, QueryError> {
    let mut stmt = conn.prepare(
        "SELECT run_id, kinds, started_at, finished_at, status, requests, failed_batches, \
         rows_written, error, catch_up, planned, not_attempted FROM runs ORDER BY run_id DESC LIMIT ?1",
    )?;
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
    let mut query = stmt.query([last as i64])?;
    while let Some(r) = query.next()? {
        let started: i64 = r.get(2)?;
        let finished: Option<i64> = r.get(3)?;
        let catch_up: String = r.get(9)?;
        rows.push(vec![
            r.get::<_, i64>(0)?.into(),
            r.get::<_, String>(1)?.into(),
            (!catch_up.is_empty()).then_some(catch_up).into(),
            iso_utc(started).into(),
            finished.map(|f| f - started).into(),
            r.get::<_, String>(4)?.into(),
            r.get::<_, Option<i64>>(10)?.into(),
            r.get::<_, i64>(5)?.into(),
            r.get::<_, i64>(6)?.into(),
            r.get::<_, i64>(11)?.into(),
            r.get::<_, i64>(7)?.into(),
            r.get::<_, Option<String>>(8)?.into(),
        ]);
    }
    Ok(rows)
}

/// The batches that failed in the last finished run of each kind (the next run plans them
/// again), and the Tweets resting after the API refused them (asked again after
/// `recheck_after` seconds).
fn failures(conn: &Connection, recheck_after: i64) -> Result<Rows, QueryError> {
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
    let mut batches = conn.prepare(
        "SELECT r.run_id, q.started_at, q.endpoint, q.credential, q.tweet_count, q.attempts, \
         q.http_status, q.error FROM requests AS q JOIN runs AS r USING (run_id) \
         WHERE q.kind = ?1 AND q.outcome = 'failed' AND r.run_id = ( \
             SELECT max(run_id) FROM runs WHERE status != 'running' \
             AND (',' || kinds || ',') LIKE '%,' || ?1 || ',%') \
         ORDER BY q.seq",
    )?;
    for kind in ["totals", "hourly", "historical"] {
        let mut query = batches.query([kind])?;
        while let Some(r) = query.next()? {
            rows.push(vec![
                "batch".into(),
                kind.into(),
                iso(r.get(1)?),
                r.get::<_, i64>(0)?.into(),
                r.get::<_, String>(2)?.into(),
                r.get::<_, String>(3)?.into(),
                Cell::Null,
                r.get::<_, i64>(4)?.into(),
                r.get::<_, i64>(5)?.into(),
                r.get::<_, Option<i64>>(6)?.into(),
                r.get::<_, Option<String>>(7)?.into(),
                "next run".into(),
            ]);
        }
    }
    // The last run, when it failed as a whole (API unreachable, app keys refused, or it could
    // not start: config, inventory, database, lock).
    let mut last = conn.prepare(
        "SELECT run_id, kinds, finished_at, error, not_attempted FROM runs \
         WHERE status = 'failed' AND run_id = (SELECT max(run_id) FROM runs WHERE status != 'running')",
    )?;
    let mut query = last.query([])?;
    while let Some(r) = query.next()? {
        let not_attempted: i64 = r.get(4)?;
        let error: Option<String> = r.get(3)?;
        rows.push(vec![
            "run".into(),
            r.get::<_, String>(1)?.into(),
            iso(r.get(2)?),
            r.get::<_, i64>(0)?.into(),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            match (error, not_attempted) {
                (Some(e), 0) => e,
                (Some(e), n) => format!("{e} ({n} batches not attempted)"),
                (None, n) => format!("{n} batches not attempted"),
            }
            .into(),
            "next run".into(),
        ]);
    }
    // Accounts a person must look at: refused tokens, and paused ones.
    let mut accounts = conn.prepare(
        "SELECT handle, state, detail, since FROM accounts WHERE state != 'ok' ORDER BY state, handle",
    )?;
    let mut query = accounts.query([])?;
    while let Some(r) = query.next()? {
        let state: String = r.get(1)?;
        let detail: Option<String> = r.get(2)?;
        let (what, retry) = match state.as_str() {
            "refused" => (
                format!(
                    "token refused (401){}; re-authorize the account, or set enabled = false",
                    detail.map_or(String::new(), |d| format!(": {d}"))
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
            iso(r.get(3)?),
            Cell::Null,
            Cell::Null,
            r.get::<_, String>(0)?.into(),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            Cell::Null,
            format!("{state}: {what}").into(),
            retry,
        ]);
    }
    let mut tweets = conn.prepare(
        "SELECT tweet_id, owner, status, status_detail, status_checked_at FROM tweets \
         WHERE status != 'active' AND removed_at IS NULL ORDER BY status_checked_at, tweet_id",
    )?;
    let mut query = tweets.query([])?;
    while let Some(r) = query.next()? {
        let checked: Option<i64> = r.get(4)?;
        let status: String = r.get(2)?;
        let detail: Option<String> = r.get(3)?;
        rows.push(vec![
            "tweet".into(),
            Cell::Null,
            iso(checked),
            Cell::Null,
            Cell::Null,
            r.get::<_, Option<String>>(1)?
                .unwrap_or_else(|| "bearer".into())
                .into(),
            r.get::<_, i64>(0)?.into(),
            Cell::Null,
            Cell::Null,
            Cell::Null,
            match detail {
                Some(d) => format!("{status}: {d}"),
                None => status,
            }
            .into(),
            iso(checked.map(|c| c + recheck_after)),
        ]);
    }
    Ok(rows)
}

fn usage_by_month(conn: &Connection, month: Option<&str>) -> Result<Rows, QueryError> {
    if let Some(m) = month {
        let ok = m.len() == 7
            && chrono::NaiveDate::parse_from_str(&format!("{m}-01"), "%Y-%m-%d").is_ok();
        if !ok {
            return Err(usage(format!("--month {m:?}: write YYYY-MM, e.g. 2026-11")));
        }
    }
    /// Per month: the handles, and (requests, attempts) per endpoint.
    type Month = (Vec<String>, BTreeMap<String, (i64, i64)>);
    let mut months: BTreeMap<String, Month> = BTreeMap::new();
    let mut stmt = conn.prepare(
        "SELECT month, handle FROM handle_usage WHERE (?1 IS NULL OR month = ?1) \
         ORDER BY month, handle",
    )?;
    for row in stmt.query_map([month], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })? {
        let (m, handle) = row?;
        months.entry(m).or_default().0.push(handle);
    }
    let mut stmt = conn.prepare(
        "SELECT strftime('%Y-%m', started_at, 'unixepoch') AS month, endpoint, count(*), \
         sum(attempts) FROM requests GROUP BY 1, 2 HAVING ?1 IS NULL OR month = ?1",
    )?;
    for row in stmt.query_map([month], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })? {
        let (m, endpoint, count, attempts) = row?;
        months
            .entry(m)
            .or_default()
            .1
            .insert(endpoint, (count, attempts));
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
    for (m, (handles, endpoints)) in months {
        let count = |e: &str| endpoints.get(e).map_or(0, |v| v.0);
        rows.push(vec![
            m.into(),
            (handles.len() as i64).into(),
            handles.join(" ").into(),
            count("totals").into(),
            count("28hr").into(),
            count("historical").into(),
            endpoints.values().map(|v| v.1).sum::<i64>().into(),
        ]);
    }
    Ok(rows)
}
