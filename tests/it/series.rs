use std::collections::{BTreeSet, HashMap};

use engagement_ingest::domain::{DAY_SECS, Hour, JobKind, Metric, TweetId};
use engagement_ingest::planner::{CELL_SECS, Cell};
use engagement_ingest::sim::{self, Sim, TweetState};

use crate::helpers::{TestApp, series, set_in_section, text, world};

/// Coverage rows: (tweet, cell) → (fetched_at, fetched_until).
fn coverage(db: &rusqlite::Connection) -> HashMap<(i64, i64), (i64, i64)> {
    let mut stmt = db
        .prepare("SELECT tweet_id, cell, fetched_at, fetched_until FROM coverage")
        .unwrap();
    stmt.query_map([], |r| Ok(((r.get(0)?, r.get(1)?), (r.get(2)?, r.get(3)?))))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// `demo` needs nothing but the binary: it exits 0 and leaves totals for public and owned Tweets
/// in the database it names, readable through `latest_totals`. And for every owned Tweet whose life lies inside `historical.max_age` (90 days),
/// the hourly buckets of the hours that ended before its totals were checked add up to its
/// latest total, for favorites and impressions; and every stored bucket is the simulator's own
/// number (a simulator started the same day from the same world has the same data).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_hourly_series_add_up_to_the_totals() {
    let dir = tempfile::tempdir().unwrap();
    let (db_path, out) = crate::helpers::demo_in(dir.path()).await;
    let all = text(&out);
    assert!(all.contains("top owned Tweets by impressions"), "{all}");
    let sim = Sim::new(sim::demo_world(7));
    let db = rusqlite::Connection::open(&db_path).unwrap();
    let (public, owned): (i64, i64) = db
        .query_row(
            "SELECT count(DISTINCT CASE WHEN owner IS NULL THEN tweet_id END), \
                    count(DISTINCT CASE WHEN owner IS NOT NULL THEN tweet_id END) FROM latest_totals",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        public > 100 && owned > 100,
        "public {public}, owned {owned}"
    );
    let mut checked_tweets = 0;
    for t in sim
        .tweets()
        .iter()
        .filter(|t| t.owner.is_some() && t.state == TweetState::Active)
    {
        let id = t.id.get() as i64;
        let checked_at: i64 = db
            .query_row(
                "SELECT totals_checked_at FROM tweets WHERE tweet_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        if t.id.age_at(checked_at) >= 90 * DAY_SECS {
            continue;
        }
        checked_tweets += 1;
        for metric in [Metric::Favorites, Metric::Impressions] {
            let total: i64 = db
                .query_row(
                    "SELECT value FROM latest_totals WHERE tweet_id = ?1 AND metric = ?2",
                    rusqlite::params![id, metric.as_str()],
                    |r| r.get(0),
                )
                .unwrap();
            let summed: i64 = db
                .query_row(
                    "SELECT coalesce(sum(value), 0) FROM series WHERE tweet_id = ?1 AND metric_id = ?2 AND hour < ?3",
                    rusqlite::params![id, metric.id(), Hour::floor(checked_at).secs()],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(summed, total, "{} {metric}", t.id);
            assert_eq!(
                total,
                sim.total(t.id, metric, checked_at),
                "{} {metric}",
                t.id
            );
        }
    }
    assert!(checked_tweets > 100, "{checked_tweets} Tweets checked");
    let rows = series(&db);
    assert!(rows.len() > 10_000);
    for (id, metric, hour, value) in rows.iter().step_by(97) {
        let tweet = TweetId::new(*id as u64).unwrap();
        let metric = Metric::from_id(*metric).unwrap();
        assert_ne!(*value, 0, "zero buckets are not stored");
        assert_eq!(
            *value,
            sim.bucket(tweet, metric, Hour::exact(*hour).unwrap()),
            "{tweet} {metric} {hour}"
        );
    }
}

/// A second historical run right after a complete one asks for nothing: the cells still
/// running into the present (or ended less than `refresh_after` ago) are refreshed a day later,
/// not on every run. Deleting coverage rows makes the next run fetch exactly those cells again,
/// as backfill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn historical_reruns_refresh_open_cells_daily_and_backfill_what_is_missing() {
    let app = TestApp::spawn(world(60, 30, 10, 0)).await;
    let ctx = app.context();
    let first = app.run(&ctx, &[JobKind::Historical]).await;
    assert_eq!(first.exit_code(), 0);
    assert!(
        first.requests.iter().all(|r| !r.refresh),
        "a first fetch is backfill"
    );
    let now_cell = Cell::of(app.sim().now()).start();
    let after_first = coverage(&app.db());
    assert!(
        after_first.keys().any(|(_, cell)| *cell != now_cell),
        "cells that have ended"
    );
    // Open cells: those no fetch covered to their end, i.e. the current cell here.
    let open_after_first: BTreeSet<(i64, i64)> = after_first
        .iter()
        .filter(|((_, cell), (_, until))| *until < cell + CELL_SECS)
        .map(|(k, _)| *k)
        .collect();
    assert!(
        !open_after_first.is_empty(),
        "young Tweets leave the current cell open"
    );
    assert!(open_after_first.iter().all(|(_, cell)| *cell == now_cell));
    assert!(
        after_first
            .iter()
            .all(|((_, cell), (_, until))| *cell == now_cell || *until == cell + CELL_SECS)
    );

    app.clock.advance(60);
    let second = app.run(&ctx, &[JobKind::Historical]).await;
    assert_eq!(second.planned, 0, "{second:?}");
    assert_eq!(coverage(&app.db()), after_first);

    // Forget some complete cells: exactly those are fetched next time, as backfill.
    let forgotten: BTreeSet<(i64, i64)> = after_first
        .keys()
        .filter(|(id, cell)| *cell != now_cell && id % 3 == 0)
        .copied()
        .collect();
    assert!(!forgotten.is_empty());
    for (id, cell) in &forgotten {
        app.execute(&format!(
            "DELETE FROM coverage WHERE tweet_id = {id} AND cell = {cell}"
        ));
    }
    app.clock.advance(60);
    let third = app.run(&ctx, &[JobKind::Historical]).await;
    let after_third = coverage(&app.db());
    let refetched: BTreeSet<(i64, i64)> = after_third
        .iter()
        .filter(|(k, at)| after_first.get(k) != Some(*at))
        .map(|(k, _)| *k)
        .collect();
    assert_eq!(refetched, forgotten);
    assert_eq!(third.planned, lower_bound(&app, &forgotten));
    assert!(third.requests.iter().all(|r| !r.refresh));

    // A day later every cell that is not complete yet (fetched to its end at least a day after
    // it ended) is refreshed, and only those, plus any cell the grid opened meanwhile.
    let incomplete: BTreeSet<(i64, i64)> = after_third
        .iter()
        .filter(|((_, cell), (at, until))| {
            *until < cell + CELL_SECS || *at < cell + CELL_SECS + DAY_SECS
        })
        .map(|(k, _)| *k)
        .collect();
    assert!(open_after_first.is_subset(&incomplete));
    app.clock.advance(DAY_SECS);
    let fourth = app.run(&ctx, &[JobKind::Historical]).await;
    let after_fourth = coverage(&app.db());
    let refetched: BTreeSet<(i64, i64)> = after_fourth
        .iter()
        .filter(|(k, at)| after_third.get(k) != Some(*at))
        .map(|(k, _)| *k)
        .collect();
    let new_cell = Cell::of(app.sim().now()).start();
    assert!(refetched.is_superset(&incomplete));
    assert!(
        refetched
            .difference(&incomplete)
            .all(|(_, cell)| *cell == new_cell && new_cell != now_cell),
        "only a newly opened cell besides the refreshed ones"
    );
    assert_eq!(fourth.planned, lower_bound(&app, &refetched));
    let refreshed = fourth.requests.iter().filter(|r| r.refresh).count();
    assert!(refreshed > 0 && refreshed <= fourth.requests.len());
}

/// `ceil(n/25)` per (owner, cell) for the given (tweet, cell) pairs.
fn lower_bound(app: &TestApp, pairs: &BTreeSet<(i64, i64)>) -> usize {
    let mut groups: HashMap<(String, i64), usize> = HashMap::new();
    for (id, cell) in pairs {
        let t = app.sim().tweet(TweetId::new(*id as u64).unwrap()).unwrap();
        *groups
            .entry((t.owner.clone().unwrap().to_string(), *cell))
            .or_default() += 1;
    }
    groups.values().map(|n| n.div_ceil(25)).sum()
}

/// SIGKILL in the middle of a long backfill loses nothing that was stored: running again
/// completes it, and the result equals an uninterrupted backfill; the database is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backfill_resumes_to_the_same_series() {
    // The worker process runs on the real clock and the simulator on a frozen one: if an hour
    // ends meanwhile the two disagree about the last ended hour, so the scenario is run again.
    for attempt in 0..2 {
        let t0 = chrono::Utc::now().timestamp();
        let outcome = killed_backfill(t0).await;
        if Hour::floor(chrono::Utc::now().timestamp()) == Hour::floor(t0) {
            let (resumed, uninterrupted) = outcome;
            assert_eq!(resumed.len(), uninterrupted.len());
            assert!(
                resumed == uninterrupted,
                "the resumed series differ from an uninterrupted run"
            );
            return;
        }
        eprintln!("an hour ended during attempt {attempt}; running the scenario again");
    }
    panic!("two hour boundaries in a row: impossible within two short runs");
}

async fn killed_backfill(
    t0: i64,
) -> (
    BTreeSet<(i64, i64, i64, i64)>,
    BTreeSet<(i64, i64, i64, i64)>,
) {
    // Two metrics keep the answers small; the backfill still needs dozens of requests.
    let two_metrics = |t: String| {
        set_in_section(
            &t,
            "historical",
            "metrics = [\"impressions\", \"favorites\"]",
        )
    };
    let app = TestApp::spawn_at(world(80, 60, 0, 0), t0).await;
    app.edit_config(|t| two_metrics(t.replace("[api]\n", "[api]\nmax_in_flight = 1\n")));
    let mut faults = app.sim().faults();
    faults.latency_ms = 50;
    app.sim().set_faults(faults).unwrap();

    let config = app.config_path.to_string_lossy().into_owned();
    let mut child = crate::helpers::binary()
        .args(["--config", &config, "-q", "run", "--job", "historical"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Kill once ten batches were answered (bounded wait), long before the ~40 it needs.
    for _ in 0..1000 {
        if app.sim().stats().count("historical") >= 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let sent_before_kill = app.sim().stats().count("historical");
    {
        let db = app.db();
        let stored: i64 = db
            .query_row("SELECT count(*) FROM requests", [], |r| r.get(0))
            .unwrap();
        assert!(
            stored > 0 && (stored as u64) <= sent_before_kill,
            "{stored} stored, {sent_before_kill} sent"
        );
        let status: String = db
            .query_row("SELECT status FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(status, "running", "the killed run could not finish its row");
    }

    faults.latency_ms = 0;
    app.sim().set_faults(faults).unwrap();
    let out = app.cli(&["-q", "run", "--job", "historical"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let db = app.db();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let total_sent = app.sim().stats().count("historical");
    assert!(sent_before_kill < total_sent);

    let reference = TestApp::spawn_at(world(80, 60, 0, 0), t0).await;
    reference.edit_config(two_metrics);
    let out = reference.cli(&["-q", "run", "--job", "historical"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // The resumed backfill asked for no cell twice beyond those in flight at the kill and the
    // ones still open.
    let needed = reference.sim().stats().count("historical");
    assert!(
        needed > 20,
        "{needed} requests: too short a backfill to kill in the middle"
    );
    assert!(
        total_sent <= needed + 1 + 10,
        "{total_sent} sent for {needed} needed"
    );
    (series(&db), series(&reference.db()))
}

/// Sparse storage, measured on the demo world: the share of buckets skipped as zero and the
/// bytes each stored bucket costs. Dense storage would keep every bucket received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_storage_figures_for_the_demo_world() {
    let app = TestApp::spawn(sim::demo_world(7)).await;
    let ctx = app.context();
    let report = app.run(&ctx, &[JobKind::Hourly, JobKind::Historical]).await;
    assert_eq!(report.exit_code(), 0);
    let received: usize = report.requests.iter().map(|r| r.received).sum();
    let db = app.db();
    let stored: i64 = db
        .query_row("SELECT count(*) FROM series", [], |r| r.get(0))
        .unwrap();
    let bytes: i64 = db
        .query_row(
            "SELECT sum(pgsize) FROM dbstat WHERE name = 'series'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let skipped = 1.0 - stored as f64 / received as f64;
    println!(
        "demo world: {received} buckets received, {stored} stored, {:.1}% skipped as zero; \
         series table {bytes} bytes = {:.1} bytes per stored bucket ({:.2} per bucket received)",
        100.0 * skipped,
        bytes as f64 / stored as f64,
        bytes as f64 / received as f64
    );
    assert!(
        skipped > 0.5,
        "sparse storage must skip most buckets: {skipped:.3}"
    );
    assert!((bytes as f64 / stored as f64) < 64.0);
}
