//! Throughput of each stage of the worker, against the figures issue 7 sets:
//!
//! - inventory: load a 1,000,000-line CSV (target: under 1 s);
//! - planner: a cycle of all kinds for 1,000,000 Tweets over 500 owners (target: under 1 s);
//! - parse: a `/28hr` answer (25 Tweets × 17 metrics × 29 hours) and a `/totals` answer
//!   (250 Tweets), in MB/s and buckets/s (target: at least 300 MB/s);
//! - store: sparse hourly upserts and change-only totals in rows/s, beside a bare rusqlite loop
//!   inserting the same rows into the same schema (target: at least 70% of it).
//!
//! `cargo bench --bench stages` runs them all in a few minutes; `cargo bench --bench stages --
//! parse` runs one group. Inputs are generated here, deterministically; numbers come from the
//! simulator's closed-form data, so answers are as sparse as the simulator's.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rusqlite::{Connection, params};

use engagement_ingest::domain::{
    BatchOutcome, DAY_SECS, Endpoint, HOUR_SECS, Handle, Hour, Metric, TweetId, TweetState,
    TweetStatus,
};
use engagement_ingest::parse::{self, GroupBy};
use engagement_ingest::planner::{
    self, Cell, CellState, HistoricalPolicy, PlanTweet, Refresh, SeriesPolicy, TotalsPolicy,
    TweetStates,
};
use engagement_ingest::store::{BatchRecord, RunStart, SeriesWrite, Store, TotalsWrite};
use engagement_ingest::{inventory, sim};

mod common;
use common::{NOW, SEED, series_body, totals_body, young_tweets};

const OWNERS: usize = 500;
const TWEETS: usize = 1_000_000;
/// Of the 1M Tweets, this share is owned (the rest public).
const OWNED: usize = 800_000;

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

fn handles() -> Vec<Handle> {
    (0..OWNERS)
        .map(|i| format!("acct{i:03}").parse().unwrap())
        .collect()
}

/// A cheap deterministic hash (SplitMix64).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The `i`th of the 1M Tweets: created over the 2 years before NOW; owned ones round-robin over
/// the owners.
fn tweet(i: usize) -> (TweetId, Option<usize>) {
    let h = mix(i as u64);
    let age_ms = (h % (730 * DAY_SECS as u64 * 1000)) as i64;
    let id = TweetId::from_snowflake(NOW * 1000 - age_ms, (i & 0x3f_ffff) as u32);
    (id, (i < OWNED).then_some(i % OWNERS))
}

// ---------------------------------------------------------------------------------------------
// inventory

fn inventory_csv() -> String {
    let owners = handles();
    let mut out = String::with_capacity(TWEETS * 32);
    out.push_str("tweet_id,owner\n");
    for i in 0..TWEETS {
        let (id, owner) = tweet(i);
        match owner {
            Some(o) => writeln!(out, "{id},{}", owners[o]).unwrap(),
            None => writeln!(out, "{id},").unwrap(),
        }
    }
    out
}

fn bench_inventory(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tweets.csv");
    let text = inventory_csv();
    std::fs::write(&path, &text).unwrap();
    let owners = handles();
    let mut g = c.benchmark_group("inventory");
    g.throughput(Throughput::Elements(TWEETS as u64));
    g.bench_function("load_1M_lines", |b| {
        b.iter(|| {
            let inv = inventory::load(black_box(&path), &owners).unwrap();
            assert_eq!(inv.len(), TWEETS);
            inv
        })
    });
    g.throughput(Throughput::Bytes(text.len() as u64));
    g.bench_function("load_1M_lines_bytes", |b| {
        b.iter(|| inventory::load(black_box(&path), &owners).unwrap())
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// planner

struct PlanInput {
    tweets: Vec<(TweetId, Option<usize>)>,
    owners: Vec<Handle>,
    states: TweetStates,
    cells: CellState,
}

/// 1M Tweets over 500 owners with mixed coverage: a third checked by `/totals` before, 1% resting
/// or forbidden, 2% with a refused metric, and every other historical cell already complete.
fn plan_input() -> PlanInput {
    let mut tweets: Vec<_> = (0..TWEETS).map(tweet).collect();
    // In Tweet ID order, as `inventory::load` hands the inventory to the planner.
    tweets.sort_unstable_by_key(|(id, _)| *id);
    let mut states = Vec::new();
    let mut complete = Vec::new();
    for (i, (id, owner)) in tweets.iter().enumerate() {
        let h = mix(i as u64 ^ 0xabcd);
        let status = match h % 100 {
            0 => TweetStatus::Unavailable,
            1 => TweetStatus::Forbidden,
            _ => TweetStatus::Active,
        };
        let checked = h.is_multiple_of(3);
        let unsupported = if h % 50 == 7 {
            1 << Metric::VideoViews.id()
        } else {
            0
        };
        if status != TweetStatus::Active || checked || unsupported != 0 {
            states.push((
                *id,
                TweetState {
                    status,
                    status_checked_at: (status != TweetStatus::Active).then_some(NOW - 3600),
                    totals_checked_at: checked.then_some(NOW - (h % 86_400) as i64),
                    unsupported,
                    hourly_fetched_at: None,
                },
            ));
        }
        if owner.is_some() {
            let mut cell = Cell::of(id.created_at());
            let end = (id.created_at() + 90 * DAY_SECS).min(NOW);
            let mut k = 0;
            while cell.start() < end {
                if cell.end() <= NOW && (k + i) % 2 == 0 {
                    complete.push((*id, cell));
                }
                cell = Cell::of(cell.end());
                k += 1;
            }
        }
    }
    PlanInput {
        tweets,
        owners: handles(),
        states: states.into_iter().collect(),
        cells: CellState {
            complete: complete.into_iter().collect(),
            open: Default::default(),
        },
    }
}

fn plan_all(input: &PlanInput) -> usize {
    let tweets = || {
        input.tweets.iter().map(|(id, o)| PlanTweet {
            id: *id,
            owner: o.map(|o| &input.owners[o]),
        })
    };
    let recheck = planner::RECHECK_AFTER_SECS;
    let totals = TotalsPolicy {
        max_requests: None,
        recheck_after_secs: recheck,
        unconfirmed_since: None,
    };
    let series = |days: i64| SeriesPolicy {
        max_age_secs: days * DAY_SECS,
        metrics: Endpoint::Hour28.metrics(),
        max_requests: None,
        recheck_after_secs: recheck,
        unconfirmed_since: None,
    };
    let history = HistoricalPolicy {
        refresh_after_secs: DAY_SECS,
        settle_after_secs: 2 * DAY_SECS,
        lookback_secs: None,
        refresh: Refresh::Due,
    };
    let (a, _) = planner::plan_totals(tweets(), &input.states, totals, NOW);
    let (b, _) = planner::plan_hourly(tweets(), &input.states, &series(3), NOW);
    let (c, _) = planner::plan_historical(
        tweets(),
        &input.states,
        &input.cells,
        &series(90),
        &history,
        NOW,
    );
    a.len() + b.len() + c.len()
}

fn bench_planner(c: &mut Criterion) {
    let input = plan_input();
    let jobs = plan_all(&input);
    println!(
        "planner: {} Tweets, {} states, {} complete cells -> {jobs} requests",
        input.tweets.len(),
        input.states.len(),
        input.cells.complete.len()
    );
    // Where a plan's time goes, one run of each kind (the benchmark below times them together).
    let timed = |name: &str, plan: &dyn Fn() -> usize| {
        let t = Instant::now();
        let jobs = plan();
        println!("planner: {name} {jobs} requests in {:.0?}", t.elapsed());
    };
    let tweets = || {
        input.tweets.iter().map(|(id, o)| PlanTweet {
            id: *id,
            owner: o.map(|o| &input.owners[o]),
        })
    };
    let policy = |days: i64| SeriesPolicy {
        max_age_secs: days * DAY_SECS,
        metrics: Endpoint::Hour28.metrics(),
        max_requests: None,
        recheck_after_secs: planner::RECHECK_AFTER_SECS,
        unconfirmed_since: None,
    };
    timed("totals", &|| {
        let totals = TotalsPolicy {
            max_requests: None,
            recheck_after_secs: planner::RECHECK_AFTER_SECS,
            unconfirmed_since: None,
        };
        planner::plan_totals(tweets(), &input.states, totals, NOW)
            .0
            .len()
    });
    timed("hourly", &|| {
        planner::plan_hourly(tweets(), &input.states, &policy(3), NOW)
            .0
            .len()
    });
    timed("historical", &|| {
        let history = HistoricalPolicy {
            refresh_after_secs: DAY_SECS,
            settle_after_secs: 2 * DAY_SECS,
            lookback_secs: None,
            refresh: Refresh::Due,
        };
        let (jobs, _) = planner::plan_historical(
            tweets(),
            &input.states,
            &input.cells,
            &policy(90),
            &history,
            NOW,
        );
        jobs.len()
    });
    let mut g = c.benchmark_group("planner");
    g.throughput(Throughput::Elements(TWEETS as u64));
    g.bench_function("cycle_all_kinds_1M_tweets_500_owners", |b| {
        b.iter(|| plan_all(black_box(&input)))
    });
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// parse

const SERIES_GROUP_BY: &[GroupBy] = &[
    GroupBy::TweetId,
    GroupBy::EngagementType,
    GroupBy::Day,
    GroupBy::Hour,
];
const TOTALS_GROUP_BY: &[GroupBy] = &[GroupBy::TweetId, GroupBy::EngagementType];

fn bench_parse(c: &mut Criterion) {
    let metrics = Endpoint::Hour28.metrics();
    let tweets = young_tweets(25, 48, 1);
    let start = Hour::floor(NOW).plus_hours(-29);
    let hr28 = series_body(&tweets, &metrics, start, 29);
    let buckets = (25 * metrics.len() * 29) as u64;
    let parsed = parse::parse(hr28.as_bytes(), &[("by_hour", SERIES_GROUP_BY)]).unwrap();
    assert_eq!(parsed.groupings["by_hour"].len() as u64, buckets);

    let totals_tweets = young_tweets(250, 24 * 30, 100);
    let totals_metrics = Endpoint::Totals.metrics();
    let totals = totals_body(&totals_tweets, &totals_metrics);
    let values = (250 * totals_metrics.len()) as u64;
    println!(
        "parse: /28hr body {} bytes, {buckets} buckets; /totals body {} bytes, {values} values",
        hr28.len(),
        totals.len()
    );

    let cases = [
        ("28hr_25x17x29", &hr28, "by_hour", SERIES_GROUP_BY, buckets),
        ("totals_250", &totals, "by_tweet", TOTALS_GROUP_BY, values),
    ];
    let mut g = c.benchmark_group("parse_bytes");
    for (name, body, grouping, levels, _) in cases {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| parse::parse(black_box(body.as_bytes()), &[(grouping, levels)]).unwrap())
        });
    }
    g.finish();
    let mut g = c.benchmark_group("parse_buckets");
    for (name, body, grouping, levels, n) in cases {
        g.throughput(Throughput::Elements(n));
        g.bench_function(name, |b| {
            b.iter(|| parse::parse(black_box(body.as_bytes()), &[(grouping, levels)]).unwrap())
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// store

/// Tweets of the store benchmarks: `BATCHES` batches of 25 (series) or 250 (totals), fresh ones
/// for every batch so that every write is a first fetch of its window.
const SERIES_TWEETS: usize = 25;
const TOTALS_TWEETS: usize = 250;

/// A `/historical` cell (28 days × 17 metrics) of 25 Tweets born in it, as the pipeline hands it
/// to the store: the answered pairs and the non-zero buckets only.
struct SeriesTemplate {
    start: Hour,
    hours: i64,
    /// (slot, metric, hour offset, value), non-zero only.
    values: Vec<(usize, Metric, i64, i64)>,
    metrics: Vec<Metric>,
}

fn series_template() -> SeriesTemplate {
    let metrics = Endpoint::Historical.metrics();
    let cell = Cell::of(NOW - 40 * DAY_SECS);
    let start = Hour::floor(cell.start());
    let hours = planner::CELL_SECS / HOUR_SECS;
    let tweets: Vec<TweetId> = (0..SERIES_TWEETS)
        .map(|i| TweetId::from_snowflake((cell.start() + i as i64 * 20_000) * 1000, i as u32 + 1))
        .collect();
    let mut values = Vec::new();
    for (slot, t) in tweets.iter().enumerate() {
        for &m in &metrics {
            for h in 0..hours {
                let v = sim::bucket(SEED, *t, m, start.plus_hours(h));
                if v != 0 {
                    values.push((slot, m, h, v));
                }
            }
        }
    }
    SeriesTemplate {
        start,
        hours,
        values,
        metrics,
    }
}

/// Distinct Tweet IDs for batch `n` of a benchmark (slot `k` of it).
fn bench_id(n: usize, k: usize) -> TweetId {
    TweetId::from_snowflake((NOW - 60 * DAY_SECS) * 1000 + (n * 1000 + k) as i64, 1)
}

fn series_write(t: &SeriesTemplate, n: usize) -> SeriesWrite {
    let ids: Vec<TweetId> = (0..SERIES_TWEETS).map(|k| bench_id(n, k)).collect();
    let (start, end) = (t.start.secs(), t.start.plus_hours(t.hours).secs());
    SeriesWrite {
        source: Endpoint::Historical,
        fetched_at: NOW,
        start,
        end,
        answered: ids
            .iter()
            .flat_map(|id| t.metrics.iter().map(move |m| (*id, *m, start, end)))
            .collect(),
        values: t
            .values
            .iter()
            .map(|&(slot, m, h, v)| (ids[slot], m, t.start.plus_hours(h), v))
            .collect(),
        cell: Some(t.start.secs()),
        covered: ids,
        status_changes: Vec::new(),
        handle: Some("acct000".parse().unwrap()),
        unsupported: Vec::new(),
    }
}

fn totals_write(n: usize, observed_at: i64, changed: impl Fn(usize) -> bool) -> TotalsWrite {
    let ids: Vec<TweetId> = (0..TOTALS_TWEETS).map(|k| bench_id(n, k)).collect();
    let metrics = Endpoint::Totals.metrics();
    let mut values = Vec::new();
    for (k, id) in ids.iter().enumerate() {
        for (mi, m) in metrics.iter().enumerate() {
            let bump = i64::from(changed(k * 7 + mi));
            values.push((*id, *m, 100 + (k * 7 + mi) as i64 + bump));
        }
    }
    TotalsWrite {
        observed_at,
        values,
        checked: ids,
        status_changes: Vec::new(),
        handle: Some("acct000".parse().unwrap()),
        unsupported: Vec::new(),
    }
}

fn record(run_id: i64, seq: i64, endpoint: Endpoint, tweets: usize) -> BatchRecord {
    BatchRecord {
        run_id,
        seq,
        kind: "bench",
        endpoint,
        credential: "acct000".into(),
        tweet_count: tweets,
        attempts: 1,
        http_status: Some(200),
        outcome: BatchOutcome::Ok,
        error: None,
        started_at: NOW,
        duration_ms: 1,
    }
}

/// A fresh database with the schema, the Tweets of batches `0..batches` in `tweets`, and a run.
fn fresh_store(dir: &Path, name: &str, batches: usize, per_batch: usize) -> (Store, i64) {
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let mut store = Store::open(&path).unwrap();
    let owner: Handle = "acct000".parse().unwrap();
    let entries: Vec<(TweetId, Option<&Handle>)> = (0..batches)
        .flat_map(|n| (0..per_batch).map(move |k| bench_id(n, k)))
        .map(|id| (id, Some(&owner)))
        .collect();
    store.sync_inventory(entries, NOW).unwrap();
    let run = store.begin_run(&RunStart::new(&["bench"], NOW)).unwrap();
    (store, run)
}

/// The bare limit: the same rows into the same table, one prepared statement, one transaction
/// per batch (as the store commits once per batch).
fn bare_series(conn: &mut Connection, write: &SeriesWrite) -> usize {
    let tx = conn.transaction().unwrap();
    let mut n = 0;
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO series (tweet_id, metric_id, hour, value, source, fetched_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .unwrap();
        for &(id, m, h, v) in &write.values {
            stmt.execute(params![
                id.get() as i64,
                m.id(),
                h.secs(),
                v,
                1, // schema 0003: 1 = /historical
                write.fetched_at
            ])
            .unwrap();
            n += 1;
        }
    }
    tx.commit().unwrap();
    n
}

fn bare_totals(conn: &mut Connection, write: &TotalsWrite) -> usize {
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO totals (tweet_id, metric_id, observed_at, value) VALUES (?1, ?2, ?3, ?4)",
            )
            .unwrap();
        for &(id, m, v) in &write.values {
            stmt.execute(params![id.get() as i64, m.id(), write.observed_at, v])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    write.values.len()
}

/// Rows per second measured by each store benchmark, for the ratio printed at the end.
static RATES: Mutex<Vec<(String, f64)>> = Mutex::new(Vec::new());

/// A database connection that can empty a table.
trait Emptied {
    fn empty(&mut self, table: &str);
}

impl Emptied for Store {
    /// Through a second connection: the store offers no way to empty a table, and the bench's
    /// own SQL stays out of it.
    fn empty(&mut self, table: &str) {
        Connection::open(self.path()).unwrap().empty(table);
    }
}

impl Emptied for Connection {
    fn empty(&mut self, table: &str) {
        self.execute(&format!("DELETE FROM {table}"), []).unwrap();
        if table == "series" {
            // The daily rollups of the emptied buckets go with them.
            self.execute_batch("DELETE FROM tweet_days; DELETE FROM account_days;")
                .unwrap();
        }
    }
}

/// Runs `iters` timed batch writes (`write(target, i, n)` returns rows and time taken), cycling
/// through the `STORE_BATCHES` prepared batches; each time every batch's Tweets were used once,
/// `table` is emptied (untimed). Notes the rate under `name` and returns the time.
fn timed_batches<T: Emptied>(
    iters: u64,
    name: &str,
    target: &mut T,
    table: &str,
    mut write: impl FnMut(&mut T, usize, usize) -> (usize, Duration),
) -> Duration {
    let mut took = Duration::ZERO;
    let mut rows = 0;
    for i in 0..iters as usize {
        let n = i % STORE_BATCHES;
        if i > 0 && n == 0 {
            target.empty(table);
        }
        let (r, t) = write(target, i, n);
        rows += r;
        took += t;
    }
    note_rate(name, rows, took);
    took
}

/// A plain connection to a fresh database with the same schema and Tweets as [`fresh_store`]
/// and the store's pragmas: the bare-insert limit.
fn bare_connection(dir: &Path, name: &str, per_batch: usize) -> Connection {
    let (store, _) = fresh_store(dir, name, STORE_BATCHES, per_batch);
    let path = store.path().to_path_buf();
    drop(store);
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
    )
    .unwrap();
    conn
}

fn note_rate(name: &str, rows: usize, took: Duration) {
    let mut rates = RATES.lock().unwrap();
    rates.retain(|(n, _)| n != name);
    rates.push((name.to_string(), rows as f64 / took.as_secs_f64()));
}

/// The batches a store benchmark writes: enough for criterion's iterations.
const STORE_BATCHES: usize = 160;

fn bench_store(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let template = series_template();
    let rows_per_batch = template.values.len() as u64;
    let dense = SERIES_TWEETS as i64 * template.metrics.len() as i64 * template.hours;
    println!(
        "store: /historical batch of {SERIES_TWEETS} Tweets x {} metrics x {} hours = {dense} \
         buckets, {rows_per_batch} non-zero ({:.1}%)",
        template.metrics.len(),
        template.hours,
        100.0 * rows_per_batch as f64 / dense as f64
    );
    let writes: Vec<SeriesWrite> = (0..STORE_BATCHES)
        .map(|n| series_write(&template, n))
        .collect();

    let mut g = c.benchmark_group("store_series");
    g.throughput(Throughput::Elements(rows_per_batch));
    g.bench_function(BenchmarkId::new("store", "sparse_historical_batch"), |b| {
        b.iter_custom(|iters| {
            let (mut store, run) =
                fresh_store(dir.path(), "s.sqlite", STORE_BATCHES, SERIES_TWEETS);
            timed_batches(
                iters,
                "series_store",
                &mut store,
                "series",
                |store, i, n| {
                    let rec = record(run, i as i64 + 1, Endpoint::Historical, SERIES_TWEETS);
                    let t = Instant::now();
                    let rows = store.write_series_batch(&rec, &writes[n]).unwrap();
                    (rows, t.elapsed())
                },
            )
        })
    });
    g.bench_function(
        BenchmarkId::new("bare_insert", "sparse_historical_batch"),
        |b| {
            b.iter_custom(|iters| {
                let mut conn = bare_connection(dir.path(), "b.sqlite", SERIES_TWEETS);
                timed_batches(iters, "series_bare", &mut conn, "series", |conn, _, n| {
                    let t = Instant::now();
                    let rows = bare_series(conn, &writes[n]);
                    (rows, t.elapsed())
                })
            })
        },
    );
    g.finish();

    let first: Vec<TotalsWrite> = (0..STORE_BATCHES)
        .map(|n| totals_write(n, NOW, |_| false))
        .collect();
    let values_per_batch = (TOTALS_TWEETS * Endpoint::Totals.metrics().len()) as u64;
    let mut g = c.benchmark_group("store_totals");
    g.throughput(Throughput::Elements(values_per_batch));
    g.bench_function(BenchmarkId::new("store", "first_observation"), |b| {
        b.iter_custom(|iters| {
            let (mut store, run) =
                fresh_store(dir.path(), "t.sqlite", STORE_BATCHES, TOTALS_TWEETS);
            timed_batches(
                iters,
                "totals_store",
                &mut store,
                "totals",
                |store, i, n| {
                    let rec = record(run, i as i64 + 1, Endpoint::Totals, TOTALS_TWEETS);
                    let t = Instant::now();
                    let rows = store.write_totals_batch(&rec, &first[n]).unwrap();
                    (rows, t.elapsed())
                },
            )
        })
    });
    g.bench_function(BenchmarkId::new("bare_insert", "first_observation"), |b| {
        b.iter_custom(|iters| {
            let mut conn = bare_connection(dir.path(), "tb.sqlite", TOTALS_TWEETS);
            timed_batches(iters, "totals_bare", &mut conn, "totals", |conn, _, n| {
                let t = Instant::now();
                let rows = bare_totals(conn, &first[n]);
                (rows, t.elapsed())
            })
        })
    });
    // A later check: every value read back, 10% changed and written (values/s, no bare twin:
    // the bare loop cannot know which values changed without the same reads).
    g.bench_function(BenchmarkId::new("store", "recheck_10pct_changed"), |b| {
        b.iter_custom(|iters| {
            let (mut store, run) =
                fresh_store(dir.path(), "t2.sqlite", STORE_BATCHES, TOTALS_TWEETS);
            for (n, w) in first.iter().enumerate() {
                let rec = record(run, n as i64 + 1, Endpoint::Totals, TOTALS_TWEETS);
                store.write_totals_batch(&rec, w).unwrap();
            }
            let mut took = Duration::ZERO;
            for i in 0..iters as usize {
                let n = i % STORE_BATCHES;
                let round = (i / STORE_BATCHES) as i64 + 1;
                let w = totals_write(n, NOW + round, |v| (v + i) % 10 == 0);
                let rec = record(run, (STORE_BATCHES + i) as i64 + 1, Endpoint::Totals, 250);
                let t = Instant::now();
                store.write_totals_batch(&rec, &w).unwrap();
                took += t.elapsed();
            }
            took
        })
    });
    g.finish();

    let rates = RATES.lock().unwrap();
    let rate = |n: &str| rates.iter().find(|(k, _)| k == n).map(|(_, r)| *r);
    for kind in ["series", "totals"] {
        if let (Some(s), Some(b)) = (
            rate(&format!("{kind}_store")),
            rate(&format!("{kind}_bare")),
        ) {
            println!(
                "store {kind}: {s:.0} rows/s through Store, {b:.0} rows/s bare insert: \
                 {:.0}% of the limit (target 70%)",
                100.0 * s / b
            );
        }
    }
}

criterion_group! {
    name = stages;
    config = config();
    targets = bench_inventory, bench_planner, bench_parse, bench_store
}
criterion_main!(stages);
