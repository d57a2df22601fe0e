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

    /// Row count and integer column sums of `table`.
    pub fn fingerprint(&self, table: &str) -> Result<Fingerprint, StoreError> {
        let columns = self.columns(table)?;
        let rows: i64 = self.count_rows(table)?;
        let mut sums = Vec::new();
        for c in columns {
            let exact = self.read(|tx| {
                let is_int = tx.pick(
                    "SELECT upper(type) = 'INTEGER' FROM pragma_table_info('{table}') WHERE name = '{c}'",
                    "SELECT data_type IN ('bigint', 'integer', 'smallint') FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = '{table}' AND column_name = '{c}'",
                );
                let is_int = is_int.replace("{c}", &c).replace("{table}", table);
                let int: bool = tx.query_row(&is_int, super::sql::args![], |r| r.get(0))?;
                if !int {
                    return Ok(None);
                }
                // Exact sums in 128 bits, summed in pieces that cannot overflow.
                let mut total: i128 = 0;
                tx.prepare(&format!(
                    "SELECT {c} FROM {table} WHERE {c} IS NOT NULL"
                ))?
                .for_each(super::sql::args![], |r| {
                    total += i128::from(r.get::<i64>(0)?);
                    Ok(())
                })?;
                Ok(Some(total))
            })?;
            if let Some(total) = exact {
                sums.push((c, total));
            }
        }
        Ok(Fingerprint { rows, sums })
    }

    fn count_rows(&self, table: &str) -> Result<i64, StoreError> {
        assert!(TABLES.contains(&table), "not a schema table: {table:?}");
        self.read(|tx| {
            tx.query_row(
                &format!("SELECT count(*) FROM {table}"),
                super::sql::args![],
                |r| r.get(0),
            )
        })
    }

    /// Copies every table of `self` into `to` (migrated to the same schema first), skipping
    /// rows `to` has already; `progress` hears of each table as it is done.
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
