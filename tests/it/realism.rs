//! The worker against a realistic simulator (`realistic = true`): numbers that settle late,
//! answers in any order, both 403 forms, partial 200s without `errors`, `/totals` video views
//! that count shared videos, a 365-day `/historical` lookback.

use std::collections::{BTreeMap, BTreeSet};

use engagement_ingest::domain::{
    DAY_SECS, HISTORICAL_EPOCH, HOUR_SECS, Hour, JobKind, Metric, TweetId,
};
use engagement_ingest::pipeline::{self, Selection};
use engagement_ingest::planner::CELL_SECS;
use engagement_ingest::sim::{ForbiddenForm, PartialErrors, TweetOrder, World};
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, set_in_section, text, world_with};

/// The series types these tests ask for: favorites has negative buckets, video views shared
/// videos; four keep the answers small.
const METRICS: &str = r#"metrics = ["impressions", "engagements", "favorites", "video_views"]"#;

/// A realistic world of a few young Tweets (created over the 2 days before the clock starts),
/// one deleted, one moved from acme to bob.
fn realistic_world() -> World {
    let mut w = world_with(
        5,
        4,
        6,
        "spread_days = 2\ndeleted = 1\n[[tweets.reowned]]\nfrom = \"acme\"\nto = \"bob\"\ncount = 1\n",
    );
    w.realistic = true;
    w
}

/// A start 4 days before a grid cell ends, at 00:10 UTC: the Tweets' lives (`max_age = 3d` for
/// both series kinds) end inside that cell, a day before it does.
fn start_before_a_cell_ends() -> (i64, i64) {
    let now = chrono::Utc::now().timestamp();
    let boundary = HISTORICAL_EPOCH + ((now - HISTORICAL_EPOCH) / CELL_SECS - 3) * CELL_SECS;
    (boundary - 4 * DAY_SECS + 600, boundary)
}

async fn realistic_app(world: World, t0: i64) -> TestApp {
    let app = TestApp::spawn_at(world, t0).await;
    app.edit_config(|c| {
        let c = set_in_section(&c, "hourly", METRICS);
        set_in_section(&c, "historical", &format!("{METRICS}\nmax_age = \"3d\""))
    });
    app
}

/// Runs `run` without `--job` (what a 15-minute CronJob does) every `step` seconds until `end`.
async fn run_due_until(app: &TestApp, step: i64, end: i64) -> usize {
    let ctx = app.context();
    let never = CancellationToken::new();
    let mut cycles = 0;
    while app.sim().now() < end {
        app.clock.advance(step);
        let report = pipeline::run_cycle(&ctx, &Selection::Due, &never)
            .await
            .expect("the cycle runs");
        assert_eq!(report.exit_code(), 0, "at {}: {report:?}", app.sim().now());
        cycles += 1;
    }
    cycles
}

type Bucket = (i64, i64, i64);

/// Every stored bucket, by (Tweet, metric id, hour).
fn stored(app: &TestApp) -> BTreeMap<Bucket, i64> {
    crate::helpers::series(&app.db())
        .into_iter()
        .map(|(t, m, h, v)| ((t, m, h), v))
        .collect()
}

/// Owned series metrics by id.
fn metrics() -> Vec<Metric> {
    ["impressions", "engagements", "favorites", "video_views"]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect()
}

/// A worker on the default schedule, run past the settle window, ends with every hour of every
/// final cell equal to what the simulator answers for it now (stored, or absent for a zero), and
/// with `/totals` equal to the simulator's; on the way, numbers fetched before they settled were
/// replaced (the test would pass trivially if nothing had changed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realistic_world_converges_to_the_simulators_numbers() {
    let (t0, boundary) = start_before_a_cell_ends();
    let app = realistic_app(realistic_world(), t0).await;
    assert_eq!(app.sim().realism().settle_hours, 36);
    let config = app.config();
    assert!(config.historical.settle_after.as_secs() as i64 >= 37 * HOUR_SECS);

    // The first day: hours fetched while still settling.
    run_due_until(&app, 1800, t0 + DAY_SECS).await;
    let early = stored(&app);
    assert!(!early.is_empty());
    // Past the cell's end, the settle window and a daily /historical run.
    let end = boundary + 4 * DAY_SECS;
    let cycles = run_due_until(&app, 1800, end).await;
    assert!(cycles > 100, "{cycles}");
    let now = app.sim().now();
    let finals = stored(&app);

    let changed = early
        .iter()
        .filter(|(k, v)| finals.get(k) != Some(v))
        .count();
    assert!(changed > 0, "no bucket fetched early was replaced");

    // Every owned, readable Tweet's cell is final, and each of its hours equals the simulator's.
    let db = app.db();
    let mut final_cells = BTreeSet::new();
    let mut stmt = db
        .prepare("SELECT tweet_id, cell, fetched_at, fetched_until FROM coverage")
        .unwrap();
    for row in stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .unwrap()
    {
        let (tweet, cell, fetched_at, until) = row.unwrap();
        assert!(
            until >= cell + CELL_SECS,
            "{tweet} cell {cell} is not fetched to its end"
        );
        assert!(
            fetched_at >= cell + CELL_SECS + config.historical.settle_after.as_secs() as i64,
            "{tweet} cell {cell} was last fetched at {fetched_at}, before it settled"
        );
        final_cells.insert((tweet, cell));
    }
    let owned_active: Vec<TweetId> = app
        .sim()
        .tweets()
        .iter()
        .filter(|t| t.owner.is_some() && t.state == engagement_ingest::sim::TweetState::Active)
        .map(|t| t.id)
        .collect();
    let mut compared = 0;
    for (tweet, cell) in &final_cells {
        let id = TweetId::new(*tweet as u64).unwrap();
        for metric in metrics() {
            let mut hour = Hour::floor(*cell);
            while hour.secs() < cell + CELL_SECS {
                let want = app.sim().bucket_at(id, metric, hour, now);
                let got = finals
                    .get(&(*tweet, metric.id(), hour.secs()))
                    .copied()
                    .unwrap_or(0);
                assert_eq!(got, want, "{id} {metric} {hour}");
                compared += 1;
                hour = hour.plus_hours(1);
            }
        }
    }
    assert!(compared > 0);
    // Tweets that stayed readable under their owner's token have final cells; stored buckets
    // outside final cells (none expected) would have been missed above.
    let covered: BTreeSet<i64> = final_cells.iter().map(|(t, _)| *t).collect();
    assert!(
        covered.len() + 1 >= owned_active.len(),
        "{covered:?} of {owned_active:?}"
    );
    for (tweet, _, hour) in finals.keys() {
        let cell = HISTORICAL_EPOCH + (hour - HISTORICAL_EPOCH).div_euclid(CELL_SECS) * CELL_SECS;
        assert!(
            final_cells.contains(&(*tweet, cell)),
            "{tweet} {hour} outside final coverage"
        );
    }

    // Refreshes come once a day (and once when a cell can be final), not on every cycle.
    let days = (end - t0) / DAY_SECS + 1;
    for r in app.sim().stats().requests {
        if r.endpoint == "historical" {
            assert!(r.count <= days as u64 + 2, "{r:?} in {days} days");
        }
    }

    // The last cycle read /totals at `now`: the latest values are the simulator's.
    let mut stmt = db
        .prepare("SELECT tweet_id, metric, value FROM latest_totals")
        .unwrap();
    let mut totals = 0;
    for row in stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .unwrap()
    {
        let (tweet, metric, value) = row.unwrap();
        let id = TweetId::new(tweet as u64).unwrap();
        let metric: Metric = metric.parse().unwrap();
        assert_eq!(value, app.sim().total(id, metric, now), "{id} {metric}");
        totals += 1;
    }
    assert!(totals > 0);

    // After 336 cycles of windows replaced as hours settled, the daily rollups still equal the
    // sums of the hourly buckets, per Tweet and per account.
    let differing = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    let per_tweet = "SELECT tweet_id, metric_id, hour - hour % 86400, sum(value) FROM series \
                     GROUP BY 1, 2, 3";
    let per_account = "SELECT w.owner, s.metric_id, s.hour - s.hour % 86400, sum(s.value), \
                       count(DISTINCT s.tweet_id) FROM series AS s JOIN tweets AS w USING (tweet_id) \
                       WHERE w.owner IS NOT NULL GROUP BY 1, 2, 3";
    let days = "SELECT tweet_id, metric_id, day, value FROM tweet_days";
    let accounts = "SELECT owner, metric_id, day, value, tweets FROM account_days";
    assert!(differing(&format!("SELECT count(*) FROM ({days})")) > 0);
    for (a, b) in [
        (per_tweet, days),
        (days, per_tweet),
        (per_account, accounts),
        (accounts, per_account),
    ] {
        assert_eq!(
            differing(&format!("SELECT count(*) FROM ({a} EXCEPT {b})")),
            0,
            "{a} / {b}"
        );
    }
}

/// The tables whose content a cycle decides (timing columns of the ledger aside).
fn content(app: &TestApp) -> Vec<String> {
    let db = app.db();
    let queries = [
        // Not `source`: when /28hr and /historical answer the same hour in one cycle, with the
        // same value, which of the two concurrent writes lands last is a race.
        "SELECT tweet_id, metric_id, hour, value, fetched_at FROM series ORDER BY 1, 2, 3",
        "SELECT tweet_id, metric_id, observed_at, value FROM totals ORDER BY 1, 2, 3",
        "SELECT tweet_id, cell, fetched_at, fetched_until FROM coverage ORDER BY 1, 2",
        "SELECT tweet_id, fetched_from, fetched_until, fetched_at FROM recent_coverage ORDER BY 1",
        "SELECT tweet_id, owner, status, unsupported_metrics FROM tweets ORDER BY 1",
    ];
    let mut out = Vec::new();
    for q in queries {
        let mut stmt = db.prepare(q).unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                let mut line = Vec::new();
                for i in 0..n {
                    line.push(format!("{:?}", r.get_ref(i)?));
                }
                Ok(line.join("|"))
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

/// Answers whose Tweets, types, days, hours and groupings come in any order give the same
/// database as sorted answers: nothing is paired by position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_answers_store_what_sorted_answers_store() {
    let (t0, _) = start_before_a_cell_ends();
    let mut dumps = Vec::new();
    for (order, shuffle) in [(TweetOrder::Sorted, false), (TweetOrder::Shuffled, true)] {
        let mut w = realistic_world();
        // Forms drawn per request would differ with the order requests are sent in.
        w.realism.forbidden_form = Some(ForbiddenForm::Current);
        w.realism.partial_errors = Some(PartialErrors::Never);
        w.realism.tweet_order = Some(order);
        w.realism.shuffle_keys = Some(shuffle);
        let app = realistic_app(w, t0).await;
        run_due_until(&app, 3 * 3600, t0 + 2 * DAY_SECS).await;
        dumps.push(content(&app));
    }
    assert!(dumps[0].len() > 100, "{}", dumps[0].len());
    let (a, b) = (&dumps[0], &dumps[1]);
    let first_difference = a.iter().zip(b).position(|(x, y)| x != y);
    assert_eq!(a.len(), b.len(), "first difference at {first_difference:?}");
    assert_eq!(
        first_difference,
        None,
        "{:?}",
        first_difference.map(|i| (&a[i], &b[i]))
    );
}

/// The current 403 form names the Tweets but not their author: they are marked forbidden and
/// read with the bearer token (public metrics), the rest of the batch is sent again at once,
/// and no refused request is ever repeated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_current_403_form_marks_the_tweets_forbidden_without_repeats() {
    let mut w = world_with(
        30,
        10,
        5,
        "\n[[tweets.reowned]]\nfrom = \"acme\"\nto = \"bob\"\ncount = 3\n",
    );
    w.realism.forbidden_form = Some(ForbiddenForm::Current);
    let app = TestApp::spawn(w).await;
    app.edit_config(crate::helpers::two_series_metrics);
    let moved: Vec<i64> = app
        .sim()
        .tweets()
        .iter()
        .filter(|t| t.is_reowned())
        .map(|t| t.id.get() as i64)
        .collect();
    let ctx = app.context();
    let first = app.run(&ctx, &JobKind::ALL).await;
    assert_eq!(first.exit_code(), 0, "{first:?}");
    assert_eq!(first.moved, 0, "the current form names no author");
    let after_first = app.answered(403);
    assert!(after_first >= 1);
    assert_eq!(app.ledger(403), (after_first, after_first));

    let second = app.run(&ctx, &JobKind::ALL).await;
    assert_eq!(second.exit_code(), 0, "{second:?}");
    assert_eq!(app.answered(403), after_first, "no second 403");
    let db = app.db();
    for id in moved {
        let status: String = db
            .query_row("SELECT status FROM tweets WHERE tweet_id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(status, "forbidden");
        let metrics: BTreeSet<String> = db
            .prepare("SELECT metric FROM latest_totals WHERE tweet_id = ?1")
            .unwrap()
            .query_map([id], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(metrics.contains("favorites"), "{id}: {metrics:?}");
        assert!(!metrics.contains("impressions"), "{id}: {metrics:?}");
        let series: i64 = db
            .query_row(
                "SELECT count(*) FROM series WHERE tweet_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(series, 0);
    }
}

/// Under the 365-day lookback, history before it is not requested (no 400), and `plan` says
/// how much there is; a worker told the API serves back to 2014 is refused for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_before_the_lookback_is_not_requested() {
    let mut w = world_with(12, 0, 0, "spread_days = 500");
    w.realism.lookback_days = Some(365);
    let app = TestApp::spawn(w).await;
    app.edit_config(|c| set_in_section(&c, "historical", r#"metrics = ["impressions"]"#));
    assert!(app.config().historical.lookback.is_some());
    let plan = app.cli(&["plan", "--job", "historical"]).await;
    let out = text(&plan);
    assert!(
        out.contains("Tweet-days of history before it, not requested"),
        "{out}"
    );
    let report = {
        let ctx = app.context();
        app.run(&ctx, &[JobKind::Historical]).await
    };
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert!(report.skipped.before_lookback > 0);
    assert_eq!(app.ledger(400).0, 0);

    app.edit_config(|c| set_in_section(&c, "historical", "lookback = 0"));
    assert_eq!(app.config().historical.lookback, None);
    let ctx = app.context();
    let report = app.run(&ctx, &[JobKind::Historical]).await;
    assert_ne!(
        report.exit_code(),
        0,
        "the simulator refuses what it no longer serves"
    );
    assert!(app.ledger(400).0 > 0);
}
