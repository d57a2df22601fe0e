//! An agency's ordinary day: a CronJob running `run` every 15 minutes against the daemon's
//! schedule, an API that is down, wrong app keys, a revoked or paused account, a bad inventory
//! line, and cycles that fail before they send.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use engagement_ingest::domain::{DAY_SECS, HISTORICAL_EPOCH, JobKind, TweetId};
use engagement_ingest::pipeline::{self, Selection};
use engagement_ingest::planner::CELL_SECS;
use engagement_ingest::sim::World;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    CONSUMER_SECRET, TestApp, set_in_section, text, two_series_metrics, world, world_of,
};

/// A UTC midnight ten days into a 28-day grid cell: no cell starts during the day that follows.
fn quiet_midnight() -> i64 {
    let now = chrono::Utc::now().timestamp();
    let cells = (now - HISTORICAL_EPOCH) / CELL_SECS - 2;
    HISTORICAL_EPOCH + cells * CELL_SECS + 10 * DAY_SECS
}

/// Tweet IDs created `ages` (seconds) before `t0`.
fn ids(t0: i64, ages: impl Iterator<Item = i64>, salt: u32) -> Vec<String> {
    ages.enumerate()
        .map(|(i, age)| TweetId::from_snowflake((t0 - age) * 1000, salt + i as u32).to_string())
        .collect()
}

/// Three accounts (carol optional) and public Tweets whose ages keep clear, for a whole day
/// after `t0`, of every boundary a plan depends on (3 days for `/28hr`, 90 days for
/// impressions and the `/historical` life): a plan made at 00:00 and one made at 00:05 or 03:30
/// of the same day ask for the same Tweets.
fn steady_world(t0: i64) -> World {
    let hour = 3600;
    let list = |salt: u32, young: usize, older: usize| {
        let mut v = ids(
            t0,
            (0..young as i64).map(|i| 12 * hour + i * 2 * hour),
            salt,
        );
        v.extend(ids(
            t0,
            (0..older as i64).map(|i| 5 * DAY_SECS + i * 2 * DAY_SECS + 7 * hour),
            salt + 1000,
        ));
        format!(
            "[{}]",
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    world_of(
        &list(10_000, 8, 30),
        &list(20_000, 5, 28),
        &list(50_000, 30, 35),
        "",
    )
}

/// Requests per (kind, endpoint, credential): count and Tweets, as the ledger has them.
type Sent = BTreeMap<(String, String, String), (i64, i64)>;

fn sent(db: &rusqlite::Connection) -> Sent {
    db.prepare(
        "SELECT kind, endpoint, credential, count(*), sum(tweet_count) FROM requests GROUP BY 1, 2, 3",
    )
    .unwrap()
    .query_map([], |r| {
        Ok(((r.get(0)?, r.get(1)?, r.get(2)?), (r.get(3)?, r.get(4)?)))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Cycles per kind in `runs`, full and catching up.
fn cycles(db: &rusqlite::Connection) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for kind in JobKind::ALL {
        let n: i64 = db
            .query_row(
                "SELECT count(*) FROM runs WHERE (',' || kinds || ',') LIKE '%,' || ?1 || ',%'",
                [kind.name()],
                |r| r.get(0),
            )
            .unwrap();
        out.insert(kind.name().to_string(), n);
    }
    out
}

/// 96 `run`s 15 minutes apart (starting a few seconds early or late, as a CronJob does) over a
/// steady inventory send exactly what the daemon's default `[schedule]` sends in that day, per
/// kind, endpoint and credential; a `run` right after another sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_of_15_minute_runs_sends_what_the_daemon_sends() {
    let t0 = quiet_midnight();
    let cron = TestApp::spawn_at(steady_world(t0), t0).await;
    cron.edit_config(two_series_metrics);
    let daemon = TestApp::spawn_at(steady_world(t0), t0).await;
    daemon.edit_config(two_series_metrics);
    let never = CancellationToken::new();

    // The CronJob: `run` without --job, every 15 minutes, up to 7 s early or late.
    let ctx = cron.context();
    let mut per_run = Vec::new();
    for i in 0..96i64 {
        let offset = [0, -5, 7][(i % 3) as usize];
        cron.clock.set(t0 + i * 900 + offset.max(-i * 900));
        let report = pipeline::run_cycle(&ctx, &Selection::Due, &never)
            .await
            .expect("the cycle runs");
        assert_eq!(report.exit_code(), 0, "run {i}: {report:?}");
        // What was planned is what was sent.
        assert_eq!(report.planned, report.requests.len(), "run {i}");
        per_run.push(report.requests.len());
        if i == 0 {
            // A second run seconds later: nothing is due, nothing was left undone.
            cron.clock.advance(3);
            let again = pipeline::run_cycle(&ctx, &Selection::Due, &never)
                .await
                .unwrap();
            assert!(again.run_id.is_none(), "{again:?}");
            assert!(again.requests.is_empty());
        }
    }

    // The daemon: each kind at its cron firings of the day, planned in full.
    let config = daemon.config();
    let ctx = daemon.context();
    let start = chrono::DateTime::from_timestamp(t0 - 1, 0).unwrap();
    let end = t0 + DAY_SECS - 15 * 60 + 10;
    let mut firings = Vec::new();
    for kind in JobKind::ALL {
        let mut at = start;
        while let Some(next) = config.schedule.of(kind).next_after(at) {
            if next.timestamp() >= end {
                break;
            }
            firings.push((next.timestamp(), kind));
            at = next;
        }
    }
    firings.sort();
    for (at, kind) in firings {
        daemon.clock.set(at);
        let report = pipeline::run_once(&ctx, &[kind], &never).await.unwrap();
        assert_eq!(report.exit_code(), 0, "{kind} at {at}: {report:?}");
    }

    let (cron_db, daemon_db) = (cron.db(), daemon.db());
    let by_cron = sent(&cron_db);
    let by_daemon = sent(&daemon_db);
    println!(
        "a day of 96 runs: {} requests ({:?} per run), the daemon's schedule: {}",
        per_run.iter().sum::<usize>(),
        per_run,
        by_daemon.values().map(|(n, _)| n).sum::<i64>()
    );
    assert_eq!(by_cron, by_daemon);
    assert_eq!(
        cycles(&cron_db),
        BTreeMap::from([
            ("totals".into(), 96),
            ("hourly".into(), 24),
            ("historical".into(), 1)
        ])
    );
    assert_eq!(cycles(&daemon_db), cycles(&cron_db));
    // The simulator saw the same on both sides.
    let stats = |app: &TestApp| {
        let mut m: BTreeMap<(String, String, u16), u64> = BTreeMap::new();
        for r in app.sim().stats().requests {
            *m.entry((r.endpoint, r.credential, r.status)).or_default() += r.count;
        }
        m
    };
    assert_eq!(stats(&cron), stats(&daemon));
}

/// `plan` says what the next `run` sends, and then that nothing is due; the second `run` sends
/// nothing and records no run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_agrees_with_two_runs_in_a_row() {
    let app = TestApp::spawn(world(30, 12, 60, 0)).await;
    app.edit_config(two_series_metrics);
    let planned = |out: &std::process::Output| -> BTreeMap<String, (u64, String)> {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("plan's JSON");
        v["kinds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| {
                (
                    k["kind"].as_str().unwrap().to_string(),
                    (
                        k["requests"].as_u64().unwrap(),
                        k["scope"].as_str().unwrap().to_string(),
                    ),
                )
            })
            .collect()
    };
    let before = app.cli(&["plan", "--format", "json"]).await;
    assert_eq!(before.status.code(), Some(0), "{}", text(&before));
    let before = planned(&before);
    assert!(before.values().all(|(_, scope)| scope == "full"));
    let run = app.cli(&["run"]).await;
    assert_eq!(run.status.code(), Some(0), "{}", text(&run));
    let db = app.db();
    for (kind, (n, _)) in &before {
        let sent: i64 = db
            .query_row(
                "SELECT count(*) FROM requests WHERE kind = ?1",
                [kind],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(sent as u64, *n, "{kind}");
    }
    let after = app.cli(&["plan", "--format", "json"]).await;
    let after_text = text(&after);
    let after = planned(&after);
    assert!(
        after.values().all(|(n, scope)| *n == 0 && scope == "none"),
        "{after_text}"
    );
    let again = app.cli(&["run"]).await;
    let all = text(&again);
    assert_eq!(again.status.code(), Some(0), "{all}");
    assert!(all.contains("nothing due"), "{all}");
    let (runs, requests): (i64, i64) = app
        .db()
        .query_row(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM requests)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(runs, 1);
    assert_eq!(
        requests,
        before.values().map(|(n, _)| *n as i64).sum::<i64>()
    );
    // `--job` forces a kind that is not due.
    let forced = app.cli(&["run", "--job", "totals"]).await;
    assert_eq!(forced.status.code(), Some(0), "{}", text(&forced));
    let runs: i64 = app
        .db()
        .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
        .unwrap();
    assert_eq!(runs, 2);
}

/// Failed batches make their kind catch up at the next `run`, on exactly what failed: the
/// batches that succeeded are not sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_resends_only_what_failed() {
    let t0 = quiet_midnight();
    let mut w = steady_world(t0);
    w.faults.server_error = 0.3;
    let app = TestApp::spawn_at(w, t0).await;
    app.edit_config(|c| {
        two_series_metrics(c).replace(
            "[api]\n",
            "[api]\nretry_attempts = 1\nretry_min_delay = \"1ms\"\n",
        )
    });
    let ctx = app.context();
    let never = CancellationToken::new();
    let first = pipeline::run_cycle(&ctx, &Selection::Due, &never)
        .await
        .unwrap();
    let failed = first.failed().count();
    assert!(failed > 0, "some batches fail at 30% server errors");
    assert_eq!(first.exit_code(), 1);
    let ok_tweets: i64 = first
        .requests
        .iter()
        .filter(|r| r.outcome == engagement_ingest::domain::BatchOutcome::Ok)
        .map(|r| r.tweets as i64)
        .sum();
    assert!(ok_tweets > 0);
    app.sim().set_faults(Default::default()).unwrap();
    app.clock.advance(60);
    let second = pipeline::run_cycle(&ctx, &Selection::Due, &never)
        .await
        .unwrap();
    assert_eq!(second.exit_code(), 0, "{second:?}");
    assert_eq!(second.catch_up.len(), second.kinds.len(), "{second:?}");
    let resent: usize = second.requests.iter().map(|r| r.tweets).sum();
    let failed_tweets: usize = first.failed().map(|r| r.tweets).sum();
    assert_eq!(resent, failed_tweets, "only the failed batches' Tweets");
    app.clock.advance(60);
    let third = pipeline::run_cycle(&ctx, &Selection::Due, &never)
        .await
        .unwrap();
    assert!(third.run_id.is_none(), "converged: {third:?}");
}

/// The API on a closed port: `run` exits 3 within seconds, after at most `api.retry_attempts`
/// connection attempts in all, with one line naming the URL and the OS error; the unsent batches
/// are recorded as not attempted and sent by the next `run` once the API is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_api_stops_the_cycle_with_one_cause() {
    let app = TestApp::spawn(world(200, 120, 2000, 0)).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let good = app.sim.base_url();
    let bad = format!("http://{closed}");
    app.edit_config(|c| c.replace(&good, &bad));
    let metrics = app._dir.path().join("run.prom");
    let started = Instant::now();
    let out = app
        .cli(&["run", "--metrics-file", &metrics.to_string_lossy()])
        .await;
    let elapsed = started.elapsed();
    let all = text(&out);
    println!(
        "closed port: exit {:?} after {elapsed:.1?}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let causes: Vec<&str> = stderr.lines().filter(|l| l.contains("os error")).collect();
    assert_eq!(causes.len(), 1, "one root-cause line:\n{stderr}");
    assert!(causes[0].contains(&bad), "{}", causes[0]);
    assert!(stderr.lines().count() < 12, "{stderr}");
    let db = app.db();
    let (status, planned, not_attempted, error): (String, i64, i64, String) = db
        .query_row(
            "SELECT status, planned, not_attempted, error FROM runs",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    let (batches, attempts): (i64, i64) = db
        .query_row(
            "SELECT count(*), coalesce(sum(attempts), 0) FROM requests",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("cannot be reached"), "{error}");
    assert!(
        attempts <= 5,
        "{attempts} connection attempts (api.retry_attempts = 5)"
    );
    assert!(planned > 20, "{planned}");
    assert_eq!(planned, batches + not_attempted);
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(prom.contains("engagement_api_reachable 0"), "{prom}");
    let failures = app.cli(&["query", "failures", "--format", "csv"]).await;
    assert!(
        String::from_utf8_lossy(&failures.stdout).contains("cannot be reached"),
        "{}",
        text(&failures)
    );

    // The API is back: the next run sends what was planned, and the one after nothing.
    app.edit_config(|c| c.replace(&bad, &good));
    let out = app.cli(&["run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let sent: i64 = app
        .db()
        .query_row(
            "SELECT count(*) FROM requests WHERE run_id = (SELECT max(run_id) FROM runs)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        (sent - planned).abs() <= 2,
        "{sent} sent of {planned} planned"
    );
}

/// A wrong `app.consumer_secret`: one app-level message naming the app's keys, no account told
/// to re-authorize, exit 3; the accounts' recorded conditions stay as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_app_keys_are_the_apps_not_the_accounts() {
    let app = TestApp::spawn(world(40, 20, 50, 0)).await;
    app.edit_config(|c| c.replace(CONSUMER_SECRET, "cs-WRONG-Qx8Zt4Vn1Lp6"));
    let out = app.cli(&["run"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(!all.contains("re-authorize"), "{all}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let app_lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("app.consumer_secret"))
        .collect();
    assert_eq!(app_lines.len(), 1, "{stderr}");
    let accounts: i64 = app
        .db()
        .query_row(
            "SELECT count(*) FROM accounts WHERE state = 'refused'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(accounts, 0);
    let (status, error): (String, String) = app
        .db()
        .query_row("SELECT status, error FROM runs", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("app.consumer_key"), "{error}");
}

/// A world of three accounts, `carol` with `revoked` (the API refuses her token).
fn three_accounts(revoked: bool) -> World {
    let mut w = world(40, 25, 60, 0);
    let mut carol = w.accounts[1].clone();
    carol.handle = "carol".parse().unwrap();
    carol.user_id = 1003;
    carol.access_token = "1003-carol".into();
    carol.access_token_secret = "ts-carol-Zx5Cv8Bn2Mq4".into();
    carol.revoked = revoked;
    w.accounts.push(carol);
    w
}

/// Latest totals and series of one account's Tweets.
fn account_data(db: &rusqlite::Connection, owner: &str) -> (Vec<(i64, String, i64)>, i64) {
    let totals = db
        .prepare("SELECT tweet_id, metric, value FROM latest_totals WHERE owner = ?1 ORDER BY 1, 2")
        .unwrap()
        .query_map([owner], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let series: i64 = db
        .query_row(
            "SELECT count(*) FROM series JOIN tweets USING (tweet_id) WHERE owner = ?1",
            [owner],
            |r| r.get(0),
        )
        .unwrap();
    (totals, series)
}

/// One revoked account of three: the others' data is complete (as in a world where nobody is
/// revoked), the run exits 0, and the account is in the summary, `query failures` and the
/// metrics; `run` catching up later does not ask its token again. Paused with
/// `enabled = false`, the simulator receives no request signed with its token, and its public
/// metrics are still collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_account_is_its_own_condition_and_a_paused_one_sends_nothing() {
    let t0 = chrono::Utc::now().timestamp();
    let revoked = TestApp::spawn_at(three_accounts(true), t0).await;
    let clean = TestApp::spawn_at(three_accounts(false), t0).await;
    for app in [&revoked, &clean] {
        app.edit_config(two_series_metrics);
    }
    let metrics = revoked._dir.path().join("run.prom");
    let out = revoked
        .cli(&["run", "--metrics-file", &metrics.to_string_lossy()])
        .await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains("account carol: the API refused its token"),
        "{all}"
    );
    let out = clean.cli(&["run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    for owner in ["acme", "bob"] {
        assert_eq!(
            account_data(&revoked.db(), owner),
            account_data(&clean.db(), owner),
            "{owner}"
        );
    }
    let (carol_totals, carol_series) = account_data(&revoked.db(), "carol");
    assert!(carol_totals.iter().any(|(_, m, _)| m == "favorites"));
    assert!(!carol_totals.iter().any(|(_, m, _)| m == "impressions"));
    assert_eq!(carol_series, 0);
    let prom = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        prom.contains("engagement_account_state{account=\"carol\",state=\"refused\"} 1"),
        "{prom}"
    );
    assert!(prom.contains("engagement_account_state{account=\"acme\",state=\"ok\"} 1"));
    let failures = revoked.cli(&["query", "failures", "--format", "csv"]).await;
    let failures = String::from_utf8_lossy(&failures.stdout).to_string();
    assert!(
        failures
            .lines()
            .any(|l| l.starts_with("account,") && l.contains("carol") && l.contains("refused")),
        "{failures}"
    );
    let carol_requests = |app: &TestApp| -> u64 {
        app.sim()
            .stats()
            .requests
            .iter()
            .filter(|r| r.credential == "carol")
            .map(|r| r.count)
            .sum()
    };
    assert_eq!(
        carol_requests(&revoked),
        1,
        "one request for the refused token"
    );
    // A `run` that only catches up does not try the refused token again.
    revoked.clock.advance(120);
    let out = revoked.cli(&["run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(carol_requests(&revoked), 1);

    // Paused: nothing is signed with carol's token, her public metrics are still read.
    let paused = TestApp::spawn_at(three_accounts(false), t0).await;
    paused.edit_config(|c| {
        two_series_metrics(c).replace(
            "handle = \"carol\"\n",
            "handle = \"carol\"\nenabled = false\n",
        )
    });
    let out = paused.cli(&["run"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("paused (enabled = false): carol"), "{all}");
    assert_eq!(carol_requests(&paused), 0);
    let (totals, series) = account_data(&paused.db(), "carol");
    assert!(totals.iter().any(|(_, m, _)| m == "favorites"));
    assert!(!totals.iter().any(|(_, m, _)| m == "impressions"));
    assert_eq!(series, 0);
    let plan = paused.cli(&["plan"]).await;
    assert!(text(&plan).contains("paused accounts"), "{}", text(&plan));
    let failures = paused.cli(&["query", "failures", "--format", "csv"]).await;
    assert!(
        String::from_utf8_lossy(&failures.stdout).contains("carol"),
        "{}",
        text(&failures)
    );
}

/// A bad inventory line: `run` sends nothing, exits 2, and the failed cycle is in `runs` with
/// the line; with `on_invalid = "skip"` the valid lines are collected and the bad one reported.
/// A broken config is in `runs` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_that_cannot_start_are_in_runs() {
    let app = TestApp::spawn(world(10, 5, 20, 0)).await;
    app.edit_config(two_series_metrics);
    let out = app.cli(&["migrate"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let mut csv = std::fs::read_to_string(&app.inventory_path).unwrap();
    let lines = csv.lines().count();
    csv.push_str("12ab,acme\n");
    std::fs::write(&app.inventory_path, &csv).unwrap();
    let out = app.cli(&["run"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains(&format!("tweets.csv:{}:", lines + 1)), "{all}");
    assert_eq!(app.sim().stats().requests.len(), 0);
    let last_run = |app: &TestApp| -> (String, String) {
        app.db()
            .query_row(
                "SELECT status, coalesce(error, '') FROM runs ORDER BY run_id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    let (status, error) = last_run(&app);
    assert_eq!(status, "failed");
    assert!(error.contains(&format!(":{}:", lines + 1)), "{error}");
    let runs = app.cli(&["query", "runs", "--format", "csv"]).await;
    assert!(String::from_utf8_lossy(&runs.stdout).contains("failed"));

    app.edit_config(|c| c.replace("[inventory]\n", "[inventory]\non_invalid = \"skip\"\n"));
    let out = app.cli(&["run"]).await;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains(&format!("tweets.csv:{}:", lines + 1)), "{all}");
    let tweets: i64 = app
        .db()
        .query_row("SELECT count(*) FROM tweets", [], |r| r.get(0))
        .unwrap();
    assert_eq!(tweets, 35);
    let (status, error) = last_run(&app);
    assert_eq!(status, "ok");
    assert!(error.contains("valid lines were used"), "{error}");

    app.edit_config(|c| c.replace("[api]\n", "[api]\ntimeout = \"soon\"\n"));
    let out = app.cli(&["run"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let (status, error) = last_run(&app);
    assert_eq!(status, "failed");
    assert!(
        error.contains("config") && error.contains("timeout"),
        "{error}"
    );
}

/// A per-run budget holds per period of the schedule: a `run` every 15 minutes spends no more of
/// `/historical`'s budget in a day than the daemon's one daily cycle, and `plan` agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_run_budget_holds_per_schedule_period() {
    let t0 = quiet_midnight();
    let app = TestApp::spawn_at(steady_world(t0), t0).await;
    app.edit_config(|c| {
        set_in_section(
            &two_series_metrics(c),
            "historical",
            "max_requests_per_run = 2",
        )
    });
    let ctx = app.context();
    let never = CancellationToken::new();
    let mut historical = Vec::new();
    for i in 0..8 {
        app.clock.set(t0 + i * 900);
        let report = pipeline::run_cycle(&ctx, &Selection::Due, &never)
            .await
            .unwrap();
        historical.push(
            report
                .requests
                .iter()
                .filter(|r| r.kind == JobKind::Historical)
                .count(),
        );
        if i == 0 {
            assert!(
                report.skipped.over_budget > 0,
                "a backfill bigger than the budget"
            );
        }
    }
    assert_eq!(historical, [2, 0, 0, 0, 0, 0, 0, 0]);
    // The next day's cycle takes the next slice of the budget.
    app.clock.set(t0 + DAY_SECS + 4 * 3600);
    let next_day = pipeline::run_cycle(&ctx, &Selection::Due, &never)
        .await
        .unwrap();
    let n = next_day
        .requests
        .iter()
        .filter(|r| r.kind == JobKind::Historical)
        .count();
    assert_eq!(n, 2, "{next_day:?}");
}

/// A token endpoint that answers 503 once is retried, not taken for a refusal of the app's
/// keys: the run stores everything and blames nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_endpoint_blip_is_retried_not_blamed() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let t0 = quiet_midnight();
    let app = TestApp::spawn_at(steady_world(t0), t0).await;
    let sim_token = format!("{}/oauth2/token", app.sim.base_url());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let stub = axum::Router::new().fallback(
        move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (counter, sim_token) = (Arc::clone(&counter), sim_token.clone());
            async move {
                if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                    let busy = r#"{"errors":["over capacity"]}"#.to_string();
                    return (axum::http::StatusCode::SERVICE_UNAVAILABLE, busy);
                }
                let answer = reqwest::Client::new()
                    .post(&sim_token)
                    .header("authorization", headers["authorization"].clone())
                    .header(
                        "content-type",
                        "application/x-www-form-urlencoded;charset=UTF-8",
                    )
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let status = axum::http::StatusCode::from_u16(answer.status().as_u16()).unwrap();
                (status, answer.text().await.unwrap())
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, stub).await });
    app.edit_config(|c| {
        let c = two_series_metrics(c).replace("[api]\n", "[api]\nretry_min_delay = \"10ms\"\n");
        let token = format!("token_url = \"http://{addr}/oauth2/token\"");
        c.lines()
            .map(|l| {
                if l.starts_with("token_url") {
                    token.clone()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            + "\n"
    });
    let ctx = app.context();
    let report = pipeline::run_cycle(&ctx, &Selection::Due, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert!(report.app_refused.is_none() && report.unreachable.is_none());
    assert_eq!(report.not_attempted, 0);
    assert_eq!(report.planned, report.requests.len());
    assert!(hits.load(Ordering::SeqCst) >= 2);
}

/// A clock that was days ahead for one run, then set right, does not stall collection: the next
/// run plans every kind in full, and the schedule goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_set_back_does_not_stall_collection() {
    let t0 = quiet_midnight();
    let app = TestApp::spawn_at(steady_world(t0), t0 + 3 * DAY_SECS).await;
    app.edit_config(two_series_metrics);
    let ctx = app.context();
    let never = CancellationToken::new();
    pipeline::run_cycle(&ctx, &Selection::Due, &never)
        .await
        .unwrap();
    let mut full: BTreeMap<&str, usize> = BTreeMap::new();
    for i in 0..8 {
        app.clock.set(t0 + 3600 + i * 900);
        let report = pipeline::run_cycle(&ctx, &Selection::Due, &never)
            .await
            .unwrap();
        assert_eq!(report.exit_code(), 0);
        if i == 0 {
            assert_eq!(report.kinds, JobKind::ALL, "every kind in full at once");
            assert!(report.catch_up.is_empty());
        }
        for kind in report.kinds.iter().filter(|k| !report.catch_up.contains(k)) {
            *full.entry(kind.name()).or_default() += 1;
        }
    }
    assert_eq!(full["totals"], 8, "{full:?}");
    assert!((2..=3).contains(&full["hourly"]), "{full:?}");
    assert_eq!(full["historical"], 1, "{full:?}");
}

/// The daemon keeps the last good inventory when an account is removed from the config (its
/// lines no longer validate): that account's Tweets are then public ones, read with the bearer
/// token, and nothing is sent under a token that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_inventory_follows_the_config_s_accounts() {
    let t0 = quiet_midnight();
    let app = TestApp::spawn_at(steady_world(t0), t0).await;
    app.edit_config(two_series_metrics);
    let ctx = app.context();
    assert_eq!(app.run(&ctx, &[JobKind::Totals]).await.exit_code(), 0);
    app.edit_config(|c| {
        c.split("\n\n")
            .filter(|block| !block.starts_with("[[accounts]]\nhandle = \"bob\""))
            .collect::<Vec<_>>()
            .join("\n\n")
    });
    let ctx = ctx.reconfigured(app.config()).unwrap();
    app.clock.advance(900);
    let report = app.run(&ctx, &[JobKind::Totals, JobKind::Hourly]).await;
    assert_eq!(report.exit_code(), 0, "{report:?}");
    assert_eq!(report.failed().count(), 0);
    assert!(report.inventory_problems.is_some());
    assert!(
        report
            .requests
            .iter()
            .all(|r| r.credential.label() != "bob")
    );
}

/// A `run` refused by the lock leaves a failed row, yet the kinds' own last cycles stay what
/// they were: a restarted process is healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refused_by_the_lock_does_not_fail_the_kinds() {
    let app = TestApp::spawn(world(10, 5, 20, 0)).await;
    app.edit_config(two_series_metrics);
    {
        let ctx = app.context();
        for kind in JobKind::ALL {
            assert_eq!(app.run(&ctx, &[kind]).await.exit_code(), 0);
        }
        let out = app.cli(&["run"]).await;
        assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    }
    let ctx = app.context();
    let now = chrono::DateTime::from_timestamp((app.worker_clock)(), 0).unwrap();
    let health =
        engagement_ingest::metrics::health(&ctx.metrics, &ctx.config.schedule, &JobKind::ALL, now);
    assert!(health.iter().all(|h| h.healthy), "{health:?}");
}
