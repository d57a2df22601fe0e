//! Change-only `/totals` writes: a batch's values are compared with the latest stored ones in
//! one statement, and only the values that differ are written.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::sql::{self, Tx, args};

use super::write::{last_of_each_key, record_answer};
use super::{BatchRecord, Store, StoreError, TotalsWrite};
use crate::domain::{Metric, TweetId};

impl Store {
    /// Writes one answered `/totals` batch, its ledger row and its handle usage in one
    /// transaction. Values equal to the latest stored snapshot are skipped (change-only).
    /// Returns the number of snapshot rows written.
    pub fn write_totals_batch(
        &mut self,
        record: &BatchRecord,
        data: &TotalsWrite,
    ) -> Result<usize, StoreError> {
        self.write(|tx| {
            let mut latest = latest_values(tx, &data.values)?;
            // The values that differ from the latest stored one, in the batch's order.
            let mut rows: Vec<(i64, i64, i64)> = Vec::new();
            for &(id, metric, value) in &data.values {
                let key = (id.get() as i64, metric.id());
                if latest.get(&key) != Some(&value) {
                    rows.push((key.0, key.1, value));
                    // A value named twice is compared with the one just written.
                    latest.insert(key, value);
                }
            }
            let written = rows.len();
            insert_totals(tx, &rows, data.observed_at)?;
            if !data.checked.is_empty() {
                tx.prepare_cached(&format!(
                    "UPDATE tweets SET totals_checked_at = ?2 WHERE tweet_id IN {}",
                    tx.json_ints("?1")
                ))?
                .execute(args![
                    json_ids(data.checked.iter().copied()),
                    data.observed_at
                ])?;
            }
            record_answer(
                tx,
                record,
                written,
                data.observed_at,
                &data.status_changes,
                &data.unsupported,
                data.handle.as_ref(),
            )?;
            Ok(written)
        })
    }
}

/// Inserts (Tweet, metric, value) snapshot rows observed at `observed_at`, a later row of the
/// same pair replacing an earlier one. SQLite takes them one statement each (a prepared
/// statement is a function call there); PostgreSQL in one statement over arrays, rather than a
/// round trip per row.
fn insert_totals(tx: &Tx<'_>, rows: &[(i64, i64, i64)], observed_at: i64) -> sql::Result<()> {
    const UPSERT: &str = "ON CONFLICT (tweet_id, metric_id, observed_at) \
                          DO UPDATE SET value = excluded.value";
    if rows.is_empty() {
        return Ok(());
    }
    if tx.backend() == sql::Backend::Sqlite {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT INTO totals (tweet_id, metric_id, observed_at, value) VALUES (?1, ?2, ?3, ?4) {UPSERT}"
        ))?;
        for &(id, metric, value) in rows {
            insert.execute(args![id, metric, observed_at, value])?;
        }
        return Ok(());
    }
    let unique = last_of_each_key(rows, |&(id, metric, _)| (id, metric));
    let column =
        |f: fn(&(i64, i64, i64)) -> i64| -> Vec<i64> { unique.iter().map(|r| f(r)).collect() };
    tx.execute(
        &format!(
            "INSERT INTO totals (tweet_id, metric_id, observed_at, value) \
             SELECT v.tweet_id, v.metric_id, ?3, v.value FROM unnest(CAST(?1 AS BIGINT[]), \
             CAST(?2 AS BIGINT[]), CAST(?4 AS BIGINT[])) AS v(tweet_id, metric_id, value) {UPSERT}"
        ),
        args![
            column(|r| r.0),
            column(|r| r.1),
            observed_at,
            column(|r| r.2)
        ],
    )?;
    Ok(())
}

/// The latest stored value of every (Tweet, metric) pair `values` names, keyed by (Tweet ID,
/// metric id), in one statement for the whole batch: a seek per Tweet finds those never stored
/// (a first observation costs no more), a seek per metric the others' latest values.
fn latest_values(
    tx: &Tx<'_>,
    values: &[(TweetId, Metric, i64)],
) -> sql::Result<HashMap<(i64, i64), i64>> {
    let mut latest = HashMap::new();
    let metric_ids = values.iter().map(|(_, m, _)| m.id());
    let (Some(low), Some(high)) = (metric_ids.clone().min(), metric_ids.max()) else {
        return Ok(latest);
    };
    let mut tweets: Vec<TweetId> = values.iter().map(|(id, _, _)| *id).collect();
    tweets.sort_unstable();
    tweets.dedup();
    let ids = tx.json_ints("?1");
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT j.value, m.metric_id, (SELECT t.value FROM totals AS t \
         WHERE t.tweet_id = j.value AND t.metric_id = m.metric_id \
         ORDER BY t.observed_at DESC LIMIT 1) \
         FROM {ids} AS j CROSS JOIN metrics AS m \
         WHERE EXISTS (SELECT 1 FROM totals AS e WHERE e.tweet_id = j.value) \
         AND m.metric_id BETWEEN ?2 AND ?3"
    ))?;
    let mut rows = stmt.query(args![json_ids(tweets.into_iter()), low, high])?;
    while let Some(row) = rows.next()? {
        if let Some(value) = row.get::<Option<i64>>(2)? {
            latest.insert((row.get(0)?, row.get(1)?), value);
        }
    }
    Ok(latest)
}

/// Tweet IDs as a JSON array of integers, for `json_each`.
fn json_ids(ids: impl Iterator<Item = TweetId>) -> String {
    let mut out = String::from("[");
    for (i, id) in ids.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{}", id.get());
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::super::RunStart;
    use super::super::fixture::id;
    use super::*;
    use crate::domain::{BatchOutcome, Endpoint};

    fn record(run_id: i64, seq: i64, tweets: usize) -> BatchRecord {
        BatchRecord {
            run_id,
            seq,
            kind: "totals",
            endpoint: Endpoint::Totals,
            credential: "bearer".into(),
            tweet_count: tweets,
            attempts: 1,
            http_status: Some(200),
            outcome: BatchOutcome::Ok,
            error: None,
            started_at: 1_800_000_000,
            duration_ms: 12,
        }
    }

    /// The latest value of each (Tweet, metric) as the `latest_totals` view shows it.
    fn latest(store: &Store) -> HashMap<(i64, String), (i64, i64)> {
        let mut stmt = store
            .sqlite()
            .prepare("SELECT tweet_id, metric, value, observed_at FROM latest_totals")
            .unwrap();
        stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// A full batch of 250 Tweets: all new at first, then only the changed values are written,
    /// compared with the latest snapshot (not an older one, not one observed later than the
    /// batch); a value named twice is compared with the first; every Tweet is marked checked.
    #[test]
    fn a_batch_writes_only_the_values_that_differ_from_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(&dir.path().join("t.sqlite")).unwrap();
        let tweets: Vec<TweetId> = (1..=250).map(id).collect();
        store
            .sync_inventory(tweets.iter().map(|t| (*t, None)), 1)
            .unwrap();
        let run = store.begin_run(&RunStart::new(&["totals"], 1)).unwrap();
        let metrics = [Metric::Favorites, Metric::Replies, Metric::Retweets];
        let batch = |observed_at: i64, value: &dyn Fn(usize, usize) -> i64| TotalsWrite {
            observed_at,
            values: tweets
                .iter()
                .enumerate()
                .flat_map(|(k, t)| {
                    metrics
                        .iter()
                        .enumerate()
                        .map(move |(mi, m)| (*t, *m, value(k, mi)))
                })
                .collect(),
            checked: tweets.clone(),
            ..Default::default()
        };
        let first = batch(100, &|k, mi| (k * 10 + mi) as i64);
        let written = store
            .write_totals_batch(&record(run, 1, 250), &first)
            .unwrap();
        assert_eq!(written, 750);
        // Unchanged: nothing written, every Tweet checked again.
        let same = store
            .write_totals_batch(
                &record(run, 2, 250),
                &batch(200, &|k, mi| (k * 10 + mi) as i64),
            )
            .unwrap();
        assert_eq!(same, 0);
        // Every seventh Tweet's replies change; one Tweet goes back to an older value (still a
        // change from the latest one).
        let changed = |k: usize, mi: usize| {
            let base = (k * 10 + mi) as i64;
            match (k, mi) {
                (3, 0) => base + 1,
                (k, 1) if k % 7 == 0 => base + 5,
                _ => base,
            }
        };
        let written = store
            .write_totals_batch(&record(run, 3, 250), &batch(300, &changed))
            .unwrap();
        assert_eq!(written, 1 + 250_usize.div_ceil(7));
        let back = |k: usize, mi: usize| match (k, mi) {
            (3, 0) => 30,
            _ => changed(k, mi),
        };
        assert_eq!(
            store
                .write_totals_batch(&record(run, 4, 250), &back_batch(&batch(400, &back)))
                .unwrap(),
            2,
            "the older value differs from the latest; the repeated value is compared with it"
        );
        let view = latest(&store);
        assert_eq!(view.len(), 750);
        assert_eq!(view[&(id(4).get() as i64, "favorites".into())], (30, 400));
        assert_eq!(
            view[&(id(8).get() as i64, "replies".into())],
            (7 * 10 + 1 + 5, 300)
        );
        assert_eq!(view[&(id(9).get() as i64, "replies".into())], (81, 100));
        assert_eq!(view[&(id(1).get() as i64, "favorites".into())], (100, 400));
        let checked: i64 = store
            .sqlite()
            .query_row(
                "SELECT count(*) FROM tweets WHERE totals_checked_at = 400",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(checked, 250);
        let rows: Vec<i64> = store
            .sqlite()
            .prepare("SELECT rows FROM requests ORDER BY seq")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows, vec![750, 0, 37, 2]);
    }

    /// `write` with its first value named twice more at the end, changed: one value to write.
    fn back_batch(write: &TotalsWrite) -> TotalsWrite {
        let mut write = write.clone();
        let (t, m, v) = write.values[0];
        write.values.push((t, m, v + 100));
        write.values.push((t, m, v + 100));
        write
    }
}
