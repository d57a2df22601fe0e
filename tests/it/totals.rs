use std::collections::{BTreeMap, HashMap};

use engagement_ingest::domain::{IMPRESSIONS_MAX_AGE_SECS, JobKind, Metric, TweetId};
use engagement_ingest::sim::TweetState;

use crate::helpers::{TestApp, world, world_with};

/// The requests the API needs at the least for the world's inventory: `ceil(n/250)` for the
/// bearer group (public Tweets and owned ones of 90 days or more) and per owner for the rest.
fn lower_bound(app: &TestApp, now: i64) -> BTreeMap<String, u64> {
    let mut groups: BTreeMap<String, u64> = BTreeMap::new();
    for t in app.sim().tweets() {
        let key = match &t.owner {
            Some(owner) if t.id.age_at(now) < IMPRESSIONS_MAX_AGE_SECS => owner.to_string(),
            _ => "bearer".to_string(),
        };
        *groups.entry(key).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|(k, n)| (k, n.div_ceil(250)))
        .collect()
}

/// Requests the simulator answered, by credential (every status), for /totals.
fn seen(app: &TestApp) -> (BTreeMap<String, u64>, Vec<u16>) {
    let stats = app.sim().stats();
    let mut by_credential = BTreeMap::new();
    let mut statuses = Vec::new();
    for r in stats.requests.iter().filter(|r| r.endpoint == "totals") {
        *by_credential.entry(r.credential.clone()).or_default() += r.count;
        statuses.push(r.status);
    }
    (by_credential, statuses)
}

/// One cycle: every request is answered 200 under the credential it needs (the simulator refuses
/// bearer tokens for private metrics and user tokens for other owners' Tweets with 403), the
/// simulator counts exactly the lower bound, and every stored number is the simulator's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totals_cycle_uses_the_right_credentials_the_fewest_requests_and_stores_the_simulators_numbers()
 {
    // 251 and 501 make the lower bound awkward: one more Tweet than a full batch.
    let app = TestApp::spawn(world(300, 40, 501, 4)).await;
    let now = app.sim().now();
    let ctx = app.context();
    let report = app.run(&ctx, &[JobKind::Totals]).await;
    assert_eq!(report.exit_code(), 0, "{report:?}");

    let (by_credential, statuses) = seen(&app);
    assert!(statuses.iter().all(|s| *s == 200), "statuses {statuses:?}");
    assert_eq!(by_credential, lower_bound(&app, now));
    assert_eq!(report.planned as u64, by_credential.values().sum::<u64>());
    assert_eq!(app.sim().stats().unique_handles.len(), 2);

    let db = app.db();
    let mut stmt = db
        .prepare("SELECT tweet_id, owner, metric, value FROM latest_totals")
        .unwrap();
    let rows: Vec<(i64, Option<String>, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let sim_tweets: HashMap<TweetId, _> = app.sim().tweets().iter().map(|t| (t.id, t)).collect();
    let mut per_tweet: HashMap<TweetId, Vec<Metric>> = HashMap::new();
    for (id, owner, metric, value) in &rows {
        let id = TweetId::new(*id as u64).unwrap();
        let metric: Metric = metric.parse().unwrap();
        let t = sim_tweets[&id];
        assert_eq!(
            owner.as_deref(),
            t.owner.as_ref().map(|h| h.as_str()),
            "owner of {id}"
        );
        assert_eq!(*value, app.sim().total(id, metric, now), "{id} {metric}");
        per_tweet.entry(id).or_default().push(metric);
    }
    let mut public_with_data = 0;
    for t in app.sim().tweets() {
        let metrics = per_tweet.get(&t.id).cloned().unwrap_or_default();
        if t.state != TweetState::Active {
            assert!(metrics.is_empty(), "deleted Tweet {} has data", t.id);
            continue;
        }
        let young_owned = t.owner.is_some() && t.id.age_at(now) < IMPRESSIONS_MAX_AGE_SECS;
        assert_eq!(
            metrics.contains(&Metric::Impressions),
            young_owned,
            "impressions of {}",
            t.id
        );
        assert!(metrics.contains(&Metric::Favorites) && metrics.contains(&Metric::QuoteTweets));
        public_with_data += usize::from(t.owner.is_none());
    }
    assert!(public_with_data > 400);

    let unavailable: i64 = db
        .query_row(
            "SELECT count(*) FROM tweets WHERE status = 'unavailable'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let deleted = app
        .sim()
        .tweets()
        .iter()
        .filter(|t| t.state == TweetState::Deleted)
        .count();
    assert_eq!((unavailable, deleted), (4, 4));
    let ledger: i64 = db
        .query_row(
            "SELECT count(*) FROM requests WHERE run_id = ?1",
            [report.run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ledger as usize, report.planned);
}

/// Change-only snapshots: a second run over unchanged numbers writes no rows; once the simulator's
/// clock moves two hours on, the changed values (and only those) are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_with_unchanged_data_writes_no_snapshot_rows() {
    let app = TestApp::spawn(world(30, 20, 50, 0)).await;
    let ctx = app.context();
    let first = app.run(&ctx, &[JobKind::Totals]).await;
    assert!(first.rows_written > 300, "{first:?}");
    let count = |app: &TestApp| -> i64 {
        app.db()
            .query_row("SELECT count(*) FROM totals", [], |r| r.get(0))
            .unwrap()
    };
    let after_first = count(&app);

    let second = app.run(&ctx, &[JobKind::Totals]).await;
    assert_eq!(second.rows_written, 0);
    assert_eq!(count(&app), after_first);
    assert_eq!(second.exit_code(), 0);

    let before = app.sim().now();
    app.clock.advance(2 * 3600);
    let third = app.run(&ctx, &[JobKind::Totals]).await;
    let changed = app
        .sim()
        .tweets()
        .iter()
        .flat_map(|t| Metric::PUBLIC.iter().map(move |m| (t.id, *m)))
        .filter(|(id, m)| {
            app.sim().total(*id, *m, before) != app.sim().total(*id, *m, app.sim().now())
        })
        .count();
    assert!(
        changed > 0,
        "the simulator's numbers should move in two hours"
    );
    assert!(
        third.rows_written >= changed,
        "{} rows for {changed} changed public values",
        third.rows_written
    );
    assert_eq!(count(&app), after_first + third.rows_written as i64);
}

/// Tweets removed from the inventory keep their data and are marked; the next cycle asks only
/// for the Tweets still listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_edits_are_picked_up_at_the_next_cycle() {
    let app = TestApp::spawn(world(10, 0, 20, 0)).await;
    let ctx = app.context();
    app.run(&ctx, &[JobKind::Totals]).await;
    let csv = std::fs::read_to_string(&app.inventory_path).unwrap();
    let kept: Vec<&str> = csv
        .lines()
        .filter(|l| !l.ends_with(',') || l.starts_with("tweet_id"))
        .collect();
    std::fs::write(&app.inventory_path, kept.join("\n")).unwrap();

    let report = app.run(&ctx, &[JobKind::Totals]).await;
    assert_eq!(report.inventory.removed, 20);
    assert_eq!(report.inventory_len, 10);
    assert_eq!(report.requests.iter().map(|r| r.tweets).sum::<usize>(), 10);
    let db = app.db();
    let (removed, with_data): (i64, i64) = db
        .query_row(
            "SELECT count(*), count(DISTINCT t.tweet_id) FROM tweets w JOIN totals t USING (tweet_id) \
             WHERE w.removed_at IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(
        removed > 0 && with_data == 20,
        "removed Tweets keep their snapshots"
    );
}

/// Protected Tweets refuse their whole request (400): the worker marks them, sends the rest again
/// at once, exits 0, and leaves them alone for a day; after that it asks once more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_tweets_are_stripped_marked_and_rested() {
    let app = TestApp::spawn(world_with(20, 0, 30, "protected = 3")).await;
    let ctx = app.context();
    let report = app.run(&ctx, &[JobKind::Totals]).await;
    assert_eq!(report.exit_code(), 0, "{report:?}");
    let protected: Vec<TweetId> = app
        .sim()
        .tweets()
        .iter()
        .filter(|t| t.state == TweetState::Protected)
        .map(|t| t.id)
        .collect();
    let db = app.db();
    let status_of = |id: &TweetId| -> String {
        db.query_row(
            "SELECT status FROM tweets WHERE tweet_id = ?1",
            [id.get() as i64],
            |r| r.get(0),
        )
        .unwrap()
    };
    assert!(protected.iter().all(|id| status_of(id) == "protected"));
    let with_data: i64 = db
        .query_row(
            "SELECT count(DISTINCT tweet_id) FROM latest_totals",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(with_data, 50 - 3, "every other Tweet is stored");
    // A 400 is never retried: the simulator answered exactly as many as the ledger's refused rows.
    let answered_400: u64 = app
        .sim()
        .stats()
        .requests
        .iter()
        .filter(|r| r.status == 400)
        .map(|r| r.count)
        .sum();
    let refused_rows: i64 = db
        .query_row(
            "SELECT count(*) FROM requests WHERE http_status = 400 AND attempts = 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(answered_400, refused_rows as u64);
    let refused = report
        .requests
        .iter()
        .filter(|r| r.outcome == engagement_ingest::domain::BatchOutcome::Refused)
        .count();
    assert!(refused >= 1 && report.failed().count() == 0, "{report:?}");

    // Within the day: not asked; the request count is the lower bound for the 47 others.
    let before = app.sim().stats().count("totals");
    let second = app.run(&ctx, &[JobKind::Totals]).await;
    assert_eq!(second.skipped.resting, 3);
    assert!(
        second
            .requests
            .iter()
            .all(|r| r.outcome != engagement_ingest::domain::BatchOutcome::Refused)
    );
    assert_eq!(
        app.sim().stats().count("totals") - before,
        second.requests.len() as u64
    );

    // A day later they are asked again, refused again, and rest again from then on.
    app.clock.advance(25 * 3600);
    let third = app.run(&ctx, &[JobKind::Totals]).await;
    assert_eq!(third.exit_code(), 0);
    assert_eq!(third.skipped.resting, 0);
    assert!(
        third
            .requests
            .iter()
            .any(|r| r.outcome == engagement_ingest::domain::BatchOutcome::Refused)
    );
    let fourth = app.run(&ctx, &[JobKind::Totals]).await;
    assert_eq!(fourth.skipped.resting, 3);
}

/// Shutdown stops new requests: with one request in flight at a time and a slow simulator,
/// cancelling after the first answer leaves the run `interrupted`, with fewer requests sent than
/// planned and every sent one stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_new_requests_and_marks_the_run_interrupted() {
    let app = TestApp::spawn(world(0, 0, 2500, 0)).await;
    app.edit_config(|t| t.replace("[api]\n", "[api]\nmax_in_flight = 1\n"));
    let mut faults = app.sim().faults();
    faults.latency_ms = 150;
    app.sim().set_faults(faults).unwrap();
    let ctx = app.context();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = {
        let shutdown = shutdown.clone();
        async move { engagement_ingest::pipeline::run_once(&ctx, &[JobKind::Totals], &shutdown).await }
    };
    let handle = tokio::spawn(run);
    // Wait (bounded) until the simulator has answered one batch, then stop.
    for _ in 0..200 {
        if app.sim().stats().count("totals") >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    shutdown.cancel();
    let report = handle.await.unwrap().unwrap();
    assert_eq!(report.planned, 10);
    assert!(report.interrupted);
    assert!(
        !report.requests.is_empty() && report.requests.len() < 10,
        "{} sent",
        report.requests.len()
    );
    assert_eq!(
        app.sim().stats().count("totals"),
        report.requests.len() as u64
    );
    let db = app.db();
    let status: String = db
        .query_row(
            "SELECT status FROM runs WHERE run_id = ?1",
            [report.run_id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(status, "interrupted");
    let stored: i64 = db
        .query_row(
            "SELECT count(*) FROM requests WHERE outcome = 'ok'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored as usize, report.requests.len());
}
