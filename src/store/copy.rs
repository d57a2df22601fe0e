//! Copying a whole database to another (`engagement-ingest copy`): SQLite to PostgreSQL when a
//! user moves over, and back (tests read a PostgreSQL database through an SQLite copy). Every
//! table, in an order that keeps references whole, in chunks of one transaction each, each row
//! inserted unless the destination has it already, so a copy that stopped resumes where it
//! was. Verified at the end by row counts and column sums per table.

use super::sql::{Arg, Backend, Row, Tx, Value};
use super::{Store, StoreError};

/// The tables, parents before children.
pub const TABLES: &[&str] = &[
    "metrics",
    "tweets",
    "accounts",
    "runs",
    "requests",
    "handle_usage",
    "totals",
    "series",
    "coverage",
    "recent_coverage",
    "tweet_days",
    "account_days",
];

/// Rows per INSERT statement, and statements per transaction.
const ROWS_PER_STATEMENT: usize = 500;
const STATEMENTS_PER_TRANSACTION: usize = 40;

/// What one table's copy did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCopy {
    pub table: &'static str,
    /// Rows read from the source.
    pub rows: u64,
    /// Rows the destination did not have and now has.
    pub inserted: u64,
}

/// A table's fingerprint: its row count and the sum of each integer column.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    pub rows: i64,
    pub sums: Vec<(String, i128)>,
}

impl Store {
    /// The columns of `table`, in order.
    fn columns(&self, table: &str) -> Result<Vec<String>, StoreError> {
        self.read(|tx| {
            let sql = tx.pick(
                "SELECT name FROM pragma_table_info(?1) ORDER BY cid",
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = ?1 ORDER BY ordinal_position",
            );
            tx.prepare(sql)?
                .query_map(super::sql::args![table], |r| r.get::<String>(0))?
                .collect()
        })
    }

    /// `table`'s primary key columns (the order rows are read in, and the conflict target).
    fn key_columns(&self, table: &str) -> Result<Vec<String>, StoreError> {
        self.read(|tx| {
            let sql = tx.pick(
                "SELECT name FROM pragma_table_info(?1) WHERE pk > 0 ORDER BY pk",
                "SELECT a.attname::text FROM pg_index AS i \
                 JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                 WHERE i.indrelid = to_regclass(?1) AND i.indisprimary \
                 ORDER BY array_position(i.indkey, a.attnum)",
            );
            tx.prepare(sql)?
                .query_map(super::sql::args![table], |r| r.get::<String>(0))?
                .collect()
        })
    }

    /// Row count and integer column sums of `table`, in one scan. Each sum is exact: a column
    /// is summed as its high and its low 32 bits (neither sum can overflow below 2^31 rows),
    /// put together in 128 bits.
    pub fn fingerprint(&self, table: &str) -> Result<Fingerprint, StoreError> {
        assert!(TABLES.contains(&table), "not a schema table: {table:?}");
        let ints = self.read(|tx| {
            let sql = tx.pick(
                "SELECT name FROM pragma_table_info(?1) WHERE upper(type) = 'INTEGER' ORDER BY cid",
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = ?1 \
                 AND data_type IN ('bigint', 'integer', 'smallint') ORDER BY ordinal_position",
            );
            tx.prepare(sql)?
                .query_map(super::sql::args![table], |r| r.get::<String>(0))?
                .collect::<super::sql::Result<Vec<String>>>()
        })?;
        let mut select = String::from("SELECT count(*)");
        for c in &ints {
            select.push_str(&format!(
                ", coalesce(sum(CAST({c} AS BIGINT) >> 32), 0), \
                 coalesce(sum(CAST({c} AS BIGINT) & 4294967295), 0)"
            ));
        }
        select.push_str(&format!(" FROM {table}"));
        self.read(|tx| {
            tx.query_row(&select, super::sql::args![], |r| {
                let mut sums = Vec::with_capacity(ints.len());
                for (i, c) in ints.iter().enumerate() {
                    let high = i128::from(r.get::<i64>(1 + 2 * i)?);
                    let low = i128::from(r.get::<i64>(2 + 2 * i)?);
                    sums.push((c.clone(), (high << 32) + low));
                }
                Ok(Fingerprint {
                    rows: r.get(0)?,
                    sums,
                })
            })
        })
    }

    /// Copies every table of `self` into `to` (migrated to the same schema first), skipping
    /// rows `to` has already; `progress` hears of each table as it is done. Run it inside
    /// [`Store::snapshot`] to copy one committed state of a database that is being written.
    pub fn copy_into(
        &self,
        to: &mut Store,
        mut progress: impl FnMut(&TableCopy),
    ) -> Result<Vec<TableCopy>, StoreError> {
        let mut done = Vec::new();
        for &table in TABLES {
            let columns = self.columns(table)?;
            let key = self.key_columns(table)?;
            let order = if key.is_empty() {
                columns.join(", ")
            } else {
                key.join(", ")
            };
            let mut rows: Vec<Vec<Value>> = Vec::new();
            self.read(|tx| {
                tx.prepare(&format!(
                    "SELECT {} FROM {table} ORDER BY {order}",
                    columns.join(", ")
                ))?
                .for_each(super::sql::args![], |r: &Row<'_>| {
                    let row = (0..columns.len())
                        .map(|i| r.value(i))
                        .collect::<super::sql::Result<Vec<_>>>()?;
                    rows.push(row);
                    Ok(())
                })
            })?;
            let mut inserted = 0u64;
            let per_tx = ROWS_PER_STATEMENT * STATEMENTS_PER_TRANSACTION;
            for chunk in rows.chunks(per_tx) {
                inserted += to.write(|tx| insert_rows(tx, table, &columns, chunk))?;
            }
            if table == "runs" && to.backend() == Backend::Postgres {
                // Ids were copied as they were: the next run's id follows the last.
                to.write(|tx| {
                    tx.execute_batch(
                        "SELECT setval(pg_get_serial_sequence('runs', 'run_id'), \
                         greatest((SELECT max(run_id) FROM runs), 1))",
                    )
                })?;
            }
            let copy = TableCopy {
                table,
                rows: rows.len() as u64,
                inserted,
            };
            progress(&copy);
            done.push(copy);
        }
        Ok(done)
    }
}

/// Inserts `rows` of `table`, those already there left alone; how many were new.
fn insert_rows(
    tx: &Tx<'_>,
    table: &str,
    columns: &[String],
    rows: &[Vec<Value>],
) -> super::sql::Result<u64> {
    let mut inserted = 0u64;
    for piece in rows.chunks(ROWS_PER_STATEMENT) {
        let width = columns.len();
        let mut sql = format!("INSERT INTO {table} ({}) VALUES ", columns.join(", "));
        for (r, _) in piece.iter().enumerate() {
            if r > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for c in 0..width {
                if c > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&format!("?{}", r * width + c + 1));
            }
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT DO NOTHING");
        let args: Vec<Arg<'_>> = piece.iter().flatten().map(Value::as_arg).collect();
        inserted += tx.execute(&sql, &args)? as u64;
    }
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::id;
    use super::*;

    /// A database with three Tweets whose `/totals` values sum past 2^64.
    fn store(dir: &std::path::Path, name: &str) -> Store {
        let mut store = Store::open(&dir.join(name)).unwrap();
        store
            .sync_inventory((1..=3).map(|n| (id(n), None)), 1)
            .unwrap();
        for (n, value) in [(1, i64::MAX), (2, i64::MAX), (3, -5)] {
            store
                .sqlite()
                .execute(
                    "INSERT INTO totals (tweet_id, metric_id, observed_at, value) \
                     VALUES (?1, 1, 100, ?2)",
                    rusqlite::params![id(n).get() as i64, value],
                )
                .unwrap();
        }
        store
    }

    /// Sums are exact past 64 bits, a copy has the source's fingerprint in every table, and
    /// one value changed by one changes it.
    #[test]
    fn fingerprints_are_exact_and_tell_a_changed_value() {
        let dir = tempfile::tempdir().unwrap();
        let source = store(dir.path(), "a.sqlite");
        let totals = source.fingerprint("totals").unwrap();
        assert_eq!(totals.rows, 3);
        let value = totals.sums.iter().find(|(c, _)| c == "value").unwrap().1;
        assert_eq!(value, 2 * i128::from(i64::MAX) - 5);
        let tweets: i128 = (1..=3).map(|n| i128::from(id(n).get() as i64)).sum();
        assert_eq!(
            totals.sums.iter().find(|(c, _)| c == "tweet_id").unwrap().1,
            tweets
        );

        let mut copy = Store::open(&dir.path().join("b.sqlite")).unwrap();
        source.snapshot(|s| s.copy_into(&mut copy, |_| {})).unwrap();
        for table in TABLES {
            assert_eq!(
                source.fingerprint(table).unwrap(),
                copy.fingerprint(table).unwrap(),
                "{table}"
            );
        }
        copy.sqlite()
            .execute("UPDATE totals SET value = value - 1 WHERE value = -5", [])
            .unwrap();
        assert_ne!(totals, copy.fingerprint("totals").unwrap());
    }
}
