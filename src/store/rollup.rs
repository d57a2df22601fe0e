//! The daily rollups (schema 0006): `tweet_days`, the sum of each Tweet's stored hourly buckets
//! per metric and UTC day, and `account_days`, the same summed per owner. Kept up to date in the
//! transaction of every series write, so that they always equal what `series` holds; a Tweet
//! that changes owner moves its days by a trigger of the schema.
//!
//! A series batch replaces the buckets of each answered (Tweet, metric) over a span of hours.
//! A day wholly inside that span now holds exactly the batch's buckets, so its new sum is read
//! from the batch; a day the span only touches keeps buckets from outside it and is summed again
//! from `series`, but only when it had a row before (a day without a row had no bucket, so the
//! batch's buckets are all it holds).

use std::collections::HashMap;

use super::sql::{self, Tx, args};

use crate::domain::{DAY_SECS, Metric, TweetId};

/// The start of the UTC day holding `t`.
pub(crate) fn day_of(t: i64) -> i64 {
    t.div_euclid(DAY_SECS).saturating_mul(DAY_SECS)
}

/// The start of the first UTC day at or after `t`.
pub(crate) fn day_ceil(t: i64) -> i64 {
    day_of(t.saturating_add(DAY_SECS - 1))
}

/// The replaced span and the new buckets of one (Tweet, metric) in a batch.
#[derive(Debug, Default)]
pub(super) struct PairWrite {
    /// Spans of hours `[from, to)` whose buckets the batch replaced (deleted, then inserted
    /// anew); none when it only inserted (an insert of an existing bucket replaces that bucket
    /// alone).
    pub replaced: Vec<(i64, i64)>,
    /// The buckets written, (hour, value), non-zero.
    pub buckets: Vec<(i64, i64)>,
}

/// Brings the rollups of every day the batch's pairs touched up to date. Call after the batch's
/// deletes and inserts, in their transaction.
pub(super) fn after_series_write(
    conn: &Tx<'_>,
    pairs: HashMap<(TweetId, Metric), PairWrite>,
) -> sql::Result<()> {
    let mut owners: HashMap<TweetId, Option<String>> = HashMap::new();
    let mut accounts = AccountChanges::new();
    let mut owner_of = conn.prepare_cached("SELECT owner FROM tweets WHERE tweet_id = ?1")?;
    let mut old_days = conn.prepare_cached(
        "SELECT day, value FROM tweet_days WHERE tweet_id = ?1 AND metric_id = ?2 \
         AND day >= ?3 AND day < ?4",
    )?;
    for ((tweet, metric), mut pair) in pairs {
        // The batch's sums per day, in day order.
        pair.buckets.sort_unstable();
        let mut batch: Vec<(i64, i64)> = Vec::new();
        for &(hour, value) in &pair.buckets {
            let day = day_of(hour);
            match batch.last_mut() {
                Some((d, sum)) if *d == day => *sum = sum.saturating_add(value),
                _ => batch.push((day, value)),
            }
        }
        // The days touched: the replaced span's and the buckets'.
        let mut days: Vec<i64> = batch.iter().map(|&(d, _)| d).collect();
        for &(from, to) in &pair.replaced {
            days.extend((day_of(from)..day_ceil(to)).step_by(DAY_SECS as usize));
        }
        days.sort_unstable();
        days.dedup();
        let (Some(&lo), Some(&hi)) = (days.first(), days.last()) else {
            continue;
        };
        let key = tweet.get() as i64;
        let old: HashMap<i64, i64> = old_days
            .query_map(args![key, metric.id(), lo, hi + DAY_SECS], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<sql::Result<_>>()?;
        let mut changes: Vec<(i64, Option<i64>, Option<i64>)> = Vec::new();
        for day in days {
            let in_batch = batch
                .binary_search_by_key(&day, |&(d, _)| d)
                .ok()
                .map(|i| batch[i].1);
            let before = old.get(&day).copied();
            let whole = pair
                .replaced
                .iter()
                .any(|&(from, to)| from <= day && day + DAY_SECS <= to);
            let after = if before.is_none() || whole {
                in_batch
            } else {
                day_sum(conn, key, metric, day)?
            };
            if before != after {
                changes.push((day, before, after));
            }
        }
        if changes.is_empty() {
            continue;
        }
        let owner = match owners.get(&tweet) {
            Some(o) => o.clone(),
            None => {
                let o: Option<String> = owner_of.query_row(args![key], |r| r.get(0))?;
                owners.insert(tweet, o.clone());
                o
            }
        };
        for (day, before, after) in changes {
            set_day(
                conn,
                key,
                metric,
                day,
                before,
                after,
                owner.as_deref(),
                &mut accounts,
            )?;
        }
    }
    write_accounts(conn, accounts)
}

/// The sum of a (Tweet, metric)'s stored buckets on one day; `None` without any.
fn day_sum(conn: &Tx<'_>, tweet: i64, metric: Metric, day: i64) -> sql::Result<Option<i64>> {
    conn.prepare_cached(
        "SELECT CASE WHEN count(*) > 0 THEN CAST(total(value) AS INTEGER) END FROM series \
         WHERE tweet_id = ?1 AND metric_id = ?2 AND hour >= ?3 AND hour < ?4",
    )?
    .query_row(args![tweet, metric.id(), day, day + DAY_SECS], |r| r.get(0))
}

/// Sums `tweet_days` of a (Tweet, metric) again from `series` over the days `[from, to)`
/// (day-aligned), for test fixtures that put buckets in place.
#[cfg(test)]
pub(crate) fn refresh_days(
    conn: &Tx<'_>,
    tweet: i64,
    metric: Metric,
    from: i64,
    to: i64,
) -> sql::Result<()> {
    let owner: Option<String> = conn.query_row(
        "SELECT owner FROM tweets WHERE tweet_id = ?1",
        args![tweet],
        |r| r.get(0),
    )?;
    let mut accounts = AccountChanges::new();
    let mut day = day_of(from);
    while day < to {
        let before: Option<i64> = conn
            .prepare_cached(
                "SELECT value FROM tweet_days WHERE tweet_id = ?1 AND metric_id = ?2 AND day = ?3",
            )?
            .query_map(args![tweet, metric.id(), day], |r| r.get(0))?
            .next()
            .transpose()?;
        let after = day_sum(conn, tweet, metric, day)?;
        if before != after {
            set_day(
                conn,
                tweet,
                metric,
                day,
                before,
                after,
                owner.as_deref(),
                &mut accounts,
            )?;
        }
        day += DAY_SECS;
    }
    write_accounts(conn, accounts)
}

/// What account rows a batch changes: per (owner, metric id, day), the change of the sum and of
/// the number of Tweets with a row. Summed over the batch's Tweets (mostly one owner's) before
/// they are written: one statement per account day, not per Tweet day.
type AccountChanges = HashMap<(String, i64, i64), (i64, i64)>;

/// One day of a (Tweet, metric) goes from `before` to `after` (`None`: no row): its
/// `tweet_days` row now, its owner's `account_days` row by the difference in `accounts`.
#[allow(clippy::too_many_arguments)]
fn set_day(
    conn: &Tx<'_>,
    tweet: i64,
    metric: Metric,
    day: i64,
    before: Option<i64>,
    after: Option<i64>,
    owner: Option<&str>,
    accounts: &mut AccountChanges,
) -> sql::Result<()> {
    match after {
        Some(value) => conn
            .prepare_cached(
                "INSERT INTO tweet_days (tweet_id, metric_id, day, value) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (tweet_id, metric_id, day) DO UPDATE SET value = excluded.value",
            )?
            .execute(args![tweet, metric.id(), day, value])?,
        None => conn
            .prepare_cached(
                "DELETE FROM tweet_days WHERE tweet_id = ?1 AND metric_id = ?2 AND day = ?3",
            )?
            .execute(args![tweet, metric.id(), day])?,
    };
    if let Some(owner) = owner {
        let change = accounts
            .entry((owner.to_string(), metric.id(), day))
            .or_default();
        change.0 = change
            .0
            .saturating_add(after.unwrap_or(0).saturating_sub(before.unwrap_or(0)));
        change.1 += i64::from(after.is_some()) - i64::from(before.is_some());
    }
    Ok(())
}

/// Adds the batch's changes to `account_days`; a row no Tweet has any more goes.
fn write_accounts(conn: &Tx<'_>, accounts: AccountChanges) -> sql::Result<()> {
    let mut add = conn.prepare_cached(
        "INSERT INTO account_days (owner, metric_id, day, value, tweets) \
         VALUES (?1, ?2, ?3, ?4, max(?5, 1)) \
         ON CONFLICT (metric_id, day, owner) DO UPDATE SET \
         value = CASE WHEN account_days.value BETWEEN -4e18 AND 4e18 \
             AND excluded.value BETWEEN -4e18 AND 4e18 THEN account_days.value + excluded.value \
             ELSE CAST(1.0 * account_days.value + excluded.value AS INTEGER) END, \
         tweets = max(account_days.tweets + ?5, 0) \
         RETURNING tweets",
    )?;
    let mut gone = conn.prepare_cached(
        "DELETE FROM account_days WHERE owner = ?1 AND metric_id = ?2 AND day = ?3",
    )?;
    for ((owner, metric, day), (value, tweets)) in accounts {
        if value == 0 && tweets == 0 {
            continue;
        }
        let left: i64 = add.query_row(args![owner, metric, day, value, tweets], |r| r.get(0))?;
        if left == 0 {
            gone.execute(args![owner, metric, day])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::fixture::id;
    use super::*;
    use crate::domain::{BatchOutcome, Endpoint, Handle, Hour};
    use crate::store::{BatchRecord, RunStart, SeriesWrite, Store};

    /// 2026-10-31T00:00:00Z.
    const T0: i64 = 1_793_404_800;
    const H: i64 = 3600;
    const METRICS: [Metric; 2] = [Metric::Impressions, Metric::Favorites];

    /// What the rollups must hold, summed again from `series` and `tweets`: (tweet, metric,
    /// day, value) and (owner, metric, day, value, tweets).
    type Expected = (Vec<(i64, i64, i64, i64)>, Vec<(String, i64, i64, i64, i64)>);

    fn summed_again(store: &Store) -> Expected {
        let c = &store.sqlite();
        let rows = |sql: &str| -> Vec<Vec<rusqlite::types::Value>> {
            let mut stmt = c.prepare(sql).unwrap();
            let n = stmt.column_count();
            stmt.query_map([], |r| (0..n).map(|i| r.get(i)).collect())
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        let int = |v: &rusqlite::types::Value| match v {
            rusqlite::types::Value::Integer(i) => *i,
            other => panic!("not an integer: {other:?}"),
        };
        let text = |v: &rusqlite::types::Value| match v {
            rusqlite::types::Value::Text(t) => t.clone(),
            other => panic!("not text: {other:?}"),
        };
        let want_days: Vec<_> = rows(
            "SELECT tweet_id, metric_id, hour - hour % 86400 AS day, sum(value) FROM series \
             GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .iter()
        .map(|r| (int(&r[0]), int(&r[1]), int(&r[2]), int(&r[3])))
        .collect();
        let have_days: Vec<_> =
            rows("SELECT tweet_id, metric_id, day, value FROM tweet_days ORDER BY 1, 2, 3")
                .iter()
                .map(|r| (int(&r[0]), int(&r[1]), int(&r[2]), int(&r[3])))
                .collect();
        assert_eq!(have_days, want_days, "tweet_days against series");
        let want_accounts: Vec<_> = rows(
            "SELECT w.owner, s.metric_id, s.hour - s.hour % 86400 AS day, sum(s.value), \
             count(DISTINCT s.tweet_id) FROM series AS s JOIN tweets AS w USING (tweet_id) \
             WHERE w.owner IS NOT NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        )
        .iter()
        .map(|r| (text(&r[0]), int(&r[1]), int(&r[2]), int(&r[3]), int(&r[4])))
        .collect();
        let have_accounts: Vec<_> =
            rows("SELECT owner, metric_id, day, value, tweets FROM account_days ORDER BY 1, 2, 3")
                .iter()
                .map(|r| (text(&r[0]), int(&r[1]), int(&r[2]), int(&r[3]), int(&r[4])))
                .collect();
        assert_eq!(have_accounts, want_accounts, "account_days against series");
        (have_days, have_accounts)
    }

    /// One step of a random history.
    #[derive(Debug, Clone)]
    enum Step {
        /// A series batch over `[start, start + len)` hours (from T0): the (tweet, metric)
        /// pairs answered over a part of it, and buckets (tweet, metric, hour, value).
        Batch {
            historical: bool,
            start: i64,
            len: i64,
            answered: Vec<(u64, usize, i64, i64)>,
            buckets: Vec<(u64, usize, i64, i64)>,
        },
        /// The inventory lists each of the 4 Tweets with this owner (0: public, 1: acme,
        /// 2: bob) or not at all (3).
        Inventory([u8; 4]),
        /// The API says Tweet n belongs to bob.
        Moved(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        let pair = (1..=4u64, 0..2usize);
        let batch = (
            any::<bool>(),
            0..72i64,
            1..60i64,
            prop::collection::vec((pair.clone(), 0..60i64, 0..60i64), 0..6),
            prop::collection::vec((pair, 0..132i64, -3..9i64), 0..40),
        )
            .prop_map(|(historical, start, len, answered, buckets)| Step::Batch {
                historical,
                start,
                len,
                answered: answered
                    .into_iter()
                    .map(|((t, m), a, b)| (t, m, start + a.min(b), start + a.max(b) + 1))
                    .collect(),
                buckets: buckets
                    .into_iter()
                    .map(|((t, m), h, v)| (t, m, h, v))
                    .collect(),
            });
        prop_oneof![
            4 => batch,
            1 => prop::array::uniform4(0..4u8).prop_map(Step::Inventory),
            1 => (1..=4u64).prop_map(Step::Moved),
        ]
    }

    fn record(run_id: i64, seq: i64, endpoint: Endpoint) -> BatchRecord {
        BatchRecord {
            run_id,
            seq,
            kind: "historical",
            endpoint,
            credential: "acme".into(),
            tweet_count: 1,
            attempts: 1,
            http_status: Some(200),
            outcome: BatchOutcome::Ok,
            error: None,
            started_at: T0,
            duration_ms: 1,
        }
    }

    fn apply(store: &mut Store, run: i64, seq: i64, step: &Step) {
        let handles: [Handle; 2] = ["acme".parse().unwrap(), "bob".parse().unwrap()];
        let hour = |n: i64| Hour::floor(T0 + n * H);
        match step {
            Step::Batch {
                historical,
                start,
                len,
                answered,
                buckets,
            } => {
                let source = if *historical {
                    Endpoint::Historical
                } else {
                    Endpoint::Hour28
                };
                // A bucket with a repeated key would be refused by the parser: keep the first.
                let mut seen = std::collections::HashSet::new();
                let data = SeriesWrite {
                    source,
                    fetched_at: T0 + seq,
                    start: hour(*start).secs(),
                    end: hour(start + len).secs(),
                    answered: answered
                        .iter()
                        .map(|&(t, m, a, b)| (id(t), METRICS[m], hour(a).secs(), hour(b).secs()))
                        .collect(),
                    values: buckets
                        .iter()
                        .filter(|&&(t, m, h, _)| seen.insert((t, m, h)))
                        .map(|&(t, m, h, v)| (id(t), METRICS[m], hour(h), v))
                        .collect(),
                    cell: historical.then_some(T0),
                    covered: Vec::new(),
                    status_changes: Vec::new(),
                    handle: None,
                    unsupported: Vec::new(),
                };
                store
                    .write_series_batch(&record(run, seq, source), &data)
                    .unwrap();
            }
            Step::Inventory(owners) => {
                let listed: Vec<(TweetId, Option<&Handle>)> = owners
                    .iter()
                    .enumerate()
                    .filter(|&(_, &o)| o < 3)
                    .map(|(i, &o)| {
                        (
                            id(i as u64 + 1),
                            o.checked_sub(1).map(|o| &handles[o as usize]),
                        )
                    })
                    .collect();
                store.sync_inventory(listed, T0 + seq).unwrap();
            }
            Step::Moved(t) => {
                store
                    .record_batch(
                        &record(run, seq, Endpoint::Totals),
                        &[],
                        &[(id(*t), handles[1].clone())],
                    )
                    .unwrap();
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever batches replace, add or drop, and however Tweets change owner or leave and
        /// rejoin the inventory, the rollups equal the sums of the hourly buckets, and the
        /// store's count of buckets added equals what `series` holds.
        #[test]
        fn rollups_always_equal_the_sums_of_the_hours(steps in prop::collection::vec(step(), 1..14)) {
            let dir = tempfile::tempdir().unwrap();
            let mut store = Store::open(&dir.path().join("r.sqlite")).unwrap();
            let acme: Handle = "acme".parse().unwrap();
            store
                .sync_inventory([(id(1), Some(&acme)), (id(2), Some(&acme)), (id(3), None), (id(4), None)], T0)
                .unwrap();
            let run = store.begin_run(&RunStart::new(&["historical"], T0)).unwrap();
            for (seq, step) in steps.iter().enumerate() {
                apply(&mut store, run, seq as i64 + 1, step);
                summed_again(&store);
                // The running count of buckets added matches the table.
                prop_assert_eq!(store.buckets_added(), store.count("series").unwrap());
            }
        }
    }

    /// The migration builds the rollups of a database an earlier version wrote.
    #[test]
    fn the_migration_builds_the_rollups_of_stored_buckets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.sqlite");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for (_, sql) in &super::super::MIGRATIONS[..5] {
                conn.execute_batch(sql).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
            conn.execute_batch(&format!(
                "INSERT INTO tweets (tweet_id, owner, listed_owner, created_at, first_seen_at) \
                 VALUES (1, 'acme', 'acme', 0, 0), (2, 'acme', 'acme', 0, 0), (3, NULL, NULL, 0, 0);
                 INSERT INTO series VALUES (1, 1, {a}, 5, 1, 0), (1, 1, {b}, 7, 1, 0), \
                 (2, 1, {a}, -2, 0, 0), (3, 1, {a}, 100, 1, 0), (1, 3, {c}, 1, 1, 0);",
                a = T0,
                b = T0 + 23 * H,
                c = T0 + 24 * H,
            ))
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let (days, accounts) = summed_again(&store);
        assert_eq!(days.len(), 4);
        assert_eq!(
            accounts,
            vec![
                ("acme".to_string(), 1, T0, 10, 2),
                ("acme".to_string(), 3, T0 + 86_400, 1, 1)
            ]
        );
    }
}
