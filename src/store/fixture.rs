//! Test fixtures: rows put in place as a test needs them, beside the pipeline's writes, and a
//! write lock held from another connection. Compiled for tests only.

use super::sql::args;
use rusqlite::Connection;
use std::path::Path;

use super::Store;
use crate::domain::{Metric, TweetId};

/// A Tweet ID created `n` seconds after 2023-11-14T22:13:20Z.
pub(crate) fn id(n: u64) -> TweetId {
    TweetId::from_snowflake(1_700_000_000_000 + n as i64 * 1000, 1)
}

impl Store {
    /// A Tweet listed for `owner` (or public), created at `created_at`.
    pub(crate) fn put_tweet(&self, tweet: i64, owner: Option<&str>, created_at: i64) {
        self.tx()
            .execute(
                "INSERT INTO tweets (tweet_id, owner, listed_owner, created_at, first_seen_at) \
                 VALUES (?1, ?2, ?2, ?3, ?3)",
                args![tweet, owner, created_at],
            )
            .unwrap();
    }

    /// The Tweet removed from the inventory at `at` (its row and data kept).
    pub(crate) fn put_removed(&self, tweet: i64, at: i64) {
        self.tx()
            .execute(
                "UPDATE tweets SET removed_at = ?2 WHERE tweet_id = ?1",
                args![tweet, at],
            )
            .unwrap();
    }

    /// An hourly bucket, as `/historical` stores it.
    pub(crate) fn put_bucket(&self, tweet: i64, metric: Metric, hour: i64, value: i64, at: i64) {
        self.tx()
            .execute(
                "INSERT INTO series (tweet_id, metric_id, hour, value, source, fetched_at) \
                 VALUES (?1, ?2, ?3, ?4, 1, ?5)",
                args![tweet, metric.id(), hour, value, at],
            )
            .unwrap();
        super::rollup::refresh_days(&self.tx(), tweet, metric, hour, hour + 1).unwrap();
    }

    /// A lifetime total observed at `at`.
    pub(crate) fn put_total(&self, tweet: i64, metric: Metric, at: i64, value: i64) {
        self.tx()
            .execute(
                "INSERT INTO totals (tweet_id, metric_id, observed_at, value) VALUES (?1, ?2, ?3, ?4)",
                args![tweet, metric.id(), at, value],
            )
            .unwrap();
    }

    /// A `/historical` cell fetched at `at`, up to `until`.
    pub(crate) fn put_cell(&self, tweet: i64, cell: i64, at: i64, until: i64) {
        self.tx()
            .execute(
                "INSERT INTO coverage (tweet_id, cell, fetched_at, fetched_until) \
                 VALUES (?1, ?2, ?3, ?4)",
                args![tweet, cell, at, until],
            )
            .unwrap();
    }

    /// A `/28hr` window `[from, until)` fetched at `at`.
    pub(crate) fn put_recent(&self, tweet: i64, from: i64, until: i64, at: i64) {
        self.tx()
            .execute(
                "INSERT INTO recent_coverage (tweet_id, fetched_from, fetched_until, fetched_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                args![tweet, from, until, at],
            )
            .unwrap();
    }

    /// A finished run of `kinds` (comma-separated) with `status`.
    pub(crate) fn put_run(&self, kinds: &str, started_at: i64, finished_at: i64, status: &str) {
        self.tx()
            .execute(
                "INSERT INTO runs (kinds, started_at, finished_at, status) VALUES (?1, ?2, ?3, ?4)",
                args![kinds, started_at, finished_at, status],
            )
            .unwrap();
    }

    /// Begins a write transaction on this connection and leaves it open.
    pub(crate) fn begin_write(&self) {
        self.tx().execute_batch("BEGIN IMMEDIATE").unwrap();
    }

    /// Commits the transaction [`Store::begin_write`] left open.
    pub(crate) fn commit_write(&self) {
        self.tx().execute_batch("COMMIT").unwrap();
    }
}

/// Holds the write lock of `path` from another connection, as sqlite3 or a backup tool
/// would, until the returned sender is dropped or sent to; returns once the lock is held.
pub(crate) fn hold_write_lock(
    path: &Path,
) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let path = path.to_path_buf();
    let holder = std::thread::spawn(move || {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE; UPDATE tweets SET removed_at = removed_at;")
            .unwrap();
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
        conn.execute_batch("COMMIT").unwrap();
    });
    held_rx.recv().unwrap();
    (release_tx, holder)
}
