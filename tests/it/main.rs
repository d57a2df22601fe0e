//! Integration tests: the simulator on 127.0.0.1:0, temporary databases, the real pipeline and
//! the real binary.

mod helpers;

/// `query accounts`, `--until`, `latest --wide`, JSON Tweet IDs, `series` without a series.
mod accounts;
/// An agency's day: due kinds, catch-up, an unreachable API, app keys, accounts, bad inventory.
mod agency;
/// `check` and `check --online`: each credential tried, the database's folder, messages.
mod check;
/// Command-line behaviour: exit codes, error messages, logs, demo.
mod cli;
/// The daemon: schedules, metrics, health, shutdown, the writer lock.
mod daemon;
/// The database before quota: damaged, unwritable or busy, as `check` and `run` find it.
mod database;
/// Faults, rate limits and refused credentials.
mod failures;
mod groupings;
/// Broken and hostile answers: what is stored, what is retried, what is printed.
mod hostile;
/// `/28hr` and `/historical`: sums, coverage, resume after SIGKILL, storage figures.
/// PostgreSQL: identical content, copy, the shard lock, wrong URLs (ignored without a server).
mod postgres;
/// `query` and `plan` against the simulator's own numbers.
mod query;
/// A realistic simulator: late-settling numbers, any answer order, both 403 forms, lookback.
mod realism;
/// `report`: the HTML page, its numbers, its charts in Chromium.
mod report;
mod series;
/// Two shards against one simulator: the unsharded run's work between them, each at its pace.
pub mod shards;
/// `/totals` end to end: credentials, lower bound, numbers, change-only snapshots.
mod totals;
